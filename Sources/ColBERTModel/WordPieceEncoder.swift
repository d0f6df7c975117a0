import ColBERTTokenizer
import Foundation

extension WordPieceTokenizer: ColBERTTokenizing {
    public func strip(_ text: String) -> String { pythonStrip(text) }
}

extension ColBERTEncoder {
    /// Loads a PyLate (or Stanford ColBERT) checkpoint directory with its own `tokenizer.json`.
    /// `threadCount` sets OpenBLAS's process-wide thread count; nil leaves it unchanged.
    public convenience init(checkpointDirectory: URL, threadCount: Int? = nil) throws {
        let layout = try CheckpointLayout.locate(checkpointDirectory)
        let tokenizer: WordPieceTokenizer
        do { tokenizer = try WordPieceTokenizer(contentsOf: layout.tokenizerURL) } catch {
            throw CheckpointError.invalid("\(layout.tokenizerURL.path): \(error)")
        }
        try self.init(checkpointDirectory: checkpointDirectory, tokenizer: tokenizer,
                      tokenizerFileURL: layout.tokenizerURL, threadCount: threadCount)
    }
}
