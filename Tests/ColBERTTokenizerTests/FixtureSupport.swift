import Foundation
import Testing
@testable import ColBERTTokenizer

/// `<package root>/../shared/reference`, or one level further up when the package is a git
/// worktree in a sibling folder; found from this file's path.
func referenceDirectory() -> URL {
    let packageRoot = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent()   // ColBERTTokenizerTests
        .deletingLastPathComponent()   // Tests
        .deletingLastPathComponent()
    let candidates = [
        packageRoot.appendingPathComponent("../shared/reference").standardizedFileURL,
        packageRoot.appendingPathComponent("../../shared/reference").standardizedFileURL,
    ]
    return candidates.first { FileManager.default.fileExists(atPath: $0.path) } ?? candidates[0]
}

/// The tokenizer.json of a fixture checkpoint, or nil (with a printed reason) when absent.
func fixtureTokenizerURL(_ checkpoint: String) -> URL? {
    let url = referenceDirectory().appendingPathComponent(checkpoint).appendingPathComponent("tokenizer.json")
    guard FileManager.default.fileExists(atPath: url.path) else {
        print("skipping: fixture \(url.path) is missing")
        return nil
    }
    return url
}

/// Fixture tokenizers are loaded once per process; loading parses a 700 kB JSON file.
enum Fixtures {
    static let minilm: WordPieceTokenizer? = load("minilm-colbert")
    static let tiny: WordPieceTokenizer? = load("tiny-colbert")

    private static func load(_ checkpoint: String) -> WordPieceTokenizer? {
        guard let url = fixtureTokenizerURL(checkpoint) else { return nil }
        do {
            return try WordPieceTokenizer(contentsOf: url)
        } catch {
            Issue.record("cannot load \(url.path): \(error)")
            return nil
        }
    }
}

func jsonObject(at url: URL) throws -> Any {
    try JSONSerialization.jsonObject(with: Data(contentsOf: url))
}

/// Ids of `tokens` in the tokenizer's vocab; a token missing from the vocab fails the test.
func ids(_ tokens: [String], in tokenizer: WordPieceTokenizer,
         sourceLocation: SourceLocation = #_sourceLocation) -> [Int32] {
    tokens.map { token in
        let id = tokenizer.tokenId(for: token)
        #expect(id != nil, "token \(token) is not in the vocab", sourceLocation: sourceLocation)
        return id ?? -1
    }
}

/// A small WordPiece tokenizer.json for unit tests.
func syntheticTokenizerJSON(vocab: [String], addedTokens: [[String: Any]] = [],
                            normalizer: Any = NSNull(), preTokenizer: Any = ["type": "BertPreTokenizer"],
                            model: [String: Any] = [:]) throws -> Data {
    var vocabObject: [String: Int] = [:]
    for (i, token) in vocab.enumerated() { vocabObject[token] = i }
    var modelObject: [String: Any] = [
        "type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##",
        "max_input_chars_per_word": 100, "vocab": vocabObject,
    ]
    for (k, v) in model { modelObject[k] = v }
    let root: [String: Any] = [
        "version": "1.0", "added_tokens": addedTokens, "normalizer": normalizer,
        "pre_tokenizer": preTokenizer, "model": modelObject,
    ]
    return try JSONSerialization.data(withJSONObject: root)
}
