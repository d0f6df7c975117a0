import Foundation
import Testing
@testable import ColBERTTokenizer

/// Rebuilds PyLate's input_ids for every fixture text and compares them with tokens.json.
@Suite struct FixtureParityTests {
    struct Meta {
        let queryPrefix: String, documentPrefix: String
        let queryPrefixId: Int32, documentPrefixId: Int32
        let queryLength: Int, documentLength: Int
        let padId: Int32
    }

    static func meta(_ checkpoint: String) throws -> Meta {
        let url = referenceDirectory().appendingPathComponent("\(checkpoint)/outputs/meta.json")
        let object = try #require(try jsonObject(at: url) as? [String: Any])
        func int(_ key: String) throws -> Int { try #require(object[key] as? Int, "meta.json lacks \(key)") }
        return Meta(
            queryPrefix: try #require(object["query_prefix"] as? String),
            documentPrefix: try #require(object["document_prefix"] as? String),
            queryPrefixId: Int32(try int("query_prefix_id")),
            documentPrefixId: Int32(try int("document_prefix_id")),
            queryLength: try int("query_length"),
            documentLength: try int("document_length"),
            padId: Int32(try int("pad_token_id_used")))
    }

    /// PyLate's rule: strip, tokenize, keep L-3 ids, `[CLS] P ids [SEP]`, queries padded with [MASK].
    static func pylateIds(_ tokenizer: WordPieceTokenizer, text: String, prefixId: Int32, length: Int,
                          pad: Int32?) -> [Int32] {
        let cls = tokenizer.tokenId(for: "[CLS]") ?? -1, sep = tokenizer.tokenId(for: "[SEP]") ?? -1
        let body = tokenizer.tokenize(pythonStrip(text)).prefix(length - 3)
        var ids: [Int32] = [cls, prefixId] + body + [sep]
        if let pad { while ids.count < length { ids.append(pad) } }
        return ids
    }

    @Test(arguments: ["minilm-colbert", "tiny-colbert"])
    func inputIdsMatchPyLate(checkpoint: String) throws {
        guard let tokenizer = checkpoint == "tiny-colbert" ? Fixtures.tiny : Fixtures.minilm else { return }
        let outputs = referenceDirectory().appendingPathComponent("\(checkpoint)/outputs")
        let meta = try Self.meta(checkpoint)
        #expect(tokenizer.tokenId(for: meta.queryPrefix) == meta.queryPrefixId)
        #expect(tokenizer.tokenId(for: meta.documentPrefix) == meta.documentPrefixId)
        #expect(tokenizer.tokenId(for: "[MASK]") == meta.padId)

        let textsData = try String(contentsOf: outputs.appendingPathComponent("texts.jsonl"), encoding: .utf8)
        var texts: [String: String] = [:]
        for line in textsData.split(separator: "\n") where !line.isEmpty {
            let object = try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
            texts[try #require(object["id"] as? String)] = try #require(object["text"] as? String)
        }
        let tokens = try #require(try jsonObject(at: outputs.appendingPathComponent("tokens.json")) as? [String: Any])
        let items = try #require(tokens["items"] as? [[String: Any]])
        #expect(items.count == texts.count)
        #expect(items.count >= 40)
        for item in items {
            let id = try #require(item["id"] as? String)
            let text = try #require(texts[id], "no text for \(id)")
            for (kind, prefixId, length, pad) in [
                ("query", meta.queryPrefixId, meta.queryLength, Optional(meta.padId)),
                ("document", meta.documentPrefixId, meta.documentLength, nil),
            ] {
                let entry = try #require(item[kind] as? [String: Any])
                let expected = try #require(entry["input_ids"] as? [Int]).map { Int32($0) }
                let actual = Self.pylateIds(tokenizer, text: text, prefixId: prefixId, length: length, pad: pad)
                #expect(actual == expected, "\(checkpoint) \(id) \(kind): \(text.debugDescription)")
            }
        }
    }
}
