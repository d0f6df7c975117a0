import Foundation
@testable import ColBERTModel

/// Vocabulary look-ups from tokenizer.json without a tokenizer: for forward-pass tests that take
/// input ids from the fixtures.
struct VocabOnlyTokenizer: ColBERTTokenizing {
    let vocab: [String: Int32]
    init(vocab: [String: Int32]) { self.vocab = vocab }
    init(_ url: URL) throws {
        let json = try JSONSerialization.jsonObject(with: Data(contentsOf: url)) as? [String: Any] ?? [:]
        var v: [String: Int32] = [:]
        if let model = json["model"] as? [String: Any], let m = model["vocab"] as? [String: Int] {
            for (k, id) in m { v[k] = Int32(id) }
        }
        for t in json["added_tokens"] as? [[String: Any]] ?? [] {
            if let c = t["content"] as? String, let id = t["id"] as? Int { v[c] = Int32(id) }
        }
        vocab = v
    }
    func tokenize(_ text: String) -> [Int32] { [] }
    func tokenId(for token: String) -> Int32? { vocab[token] }
    var unknownTokenId: Int32 { vocab["[UNK]"] ?? 100 }
    func strip(_ text: String) -> String { text }
}
