import Foundation
import Testing
@testable import ColBERTTokenizer

@Suite struct ConfigurationTests {
    let vocab = ["[UNK]", "un", "##aff", "##able", "hello", "world", "!", "héllo"]

    @Test func greedyLongestMatchWithContinuationPrefix() throws {
        let t = try WordPieceTokenizer(jsonData: syntheticTokenizerJSON(vocab: vocab))
        #expect(t.tokenize("unaffable hello!") == [1, 2, 3, 4, 6])
        #expect(t.tokenize("unaffablex") == [0])
        #expect(t.tokenize("héllo") == [7])   // no normalizer: accents kept
        #expect(t.unknownTokenId == 0)
    }

    @Test func maxInputCharsPerWordIsHonoured() throws {
        let t = try WordPieceTokenizer(jsonData: syntheticTokenizerJSON(
            vocab: vocab, model: ["max_input_chars_per_word": 4]))
        #expect(t.tokenize("hello") == [0])
    }

    @Test func sequenceNormalizerAndWhitespacePreTokenizer() throws {
        let normalizer: [String: Any] = ["type": "Sequence", "normalizers": [
            ["type": "NFD"], ["type": "StripAccents"], ["type": "Lowercase"]]]
        let t = try WordPieceTokenizer(jsonData: syntheticTokenizerJSON(
            vocab: vocab, normalizer: normalizer, preTokenizer: ["type": "Whitespace"]))
        #expect(t.tokenize("HÉLLO world!!") == [4, 5, 0])   // "!!" is one non-word run
        let split = try WordPieceTokenizer(jsonData: syntheticTokenizerJSON(
            vocab: vocab, preTokenizer: ["type": "WhitespaceSplit"]))
        #expect(split.tokenize("hello world!") == [4, 0])
    }

    @Test func compatibilityNormalizer() throws {
        let normalizer: [String: Any] = ["type": "Sequence", "normalizers": [["type": "NFKC"], ["type": "Lowercase"]]]
        let t = try WordPieceTokenizer(jsonData: syntheticTokenizerJSON(vocab: vocab, normalizer: normalizer))
        #expect(t.tokenize("ＨＥＬＬＯ\u{A0}ｗｏｒｌｄ") == [4, 5])
        #expect(t.tokenize("he\u{301}llo") == [7])   // NFKC composes e + U+0301 into é
    }

    @Test func badInputsThrowClearErrors() throws {
        func error(_ data: Data) -> TokenizerError? {
            do { _ = try WordPieceTokenizer(jsonData: data); return nil } catch { return error as? TokenizerError }
        }
        #expect(error(Data("not json".utf8))?.description.contains("not valid") == true)
        #expect(error(Data("[1,2]".utf8))?.description.contains("top level") == true)
        let bpe = try JSONSerialization.data(withJSONObject: ["model": ["type": "BPE", "vocab": [:], "merges": []]])
        #expect(error(bpe)?.description.contains("BPE") == true)
        let noUnk = try syntheticTokenizerJSON(vocab: ["a", "b"])
        #expect(error(noUnk)?.description.contains("[UNK]") == true)
        let badNorm = try syntheticTokenizerJSON(vocab: vocab, normalizer: ["type": "Precompiled"])
        #expect(error(badNorm)?.description.contains("Precompiled") == true)
        let badPre = try syntheticTokenizerJSON(vocab: vocab, preTokenizer: ["type": "ByteLevel"])
        #expect(error(badPre)?.description.contains("ByteLevel") == true)
        let hugeId = try syntheticTokenizerJSON(vocab: vocab, addedTokens: [["id": 2_000_000_000, "content": "x"]])
        #expect(error(hugeId)?.description.contains("implausibly large") == true)
        let badAdded = try syntheticTokenizerJSON(vocab: vocab, addedTokens: [["content": "x"]])
        #expect(error(badAdded) != nil)
        do {
            _ = try WordPieceTokenizer(contentsOf: URL(fileURLWithPath: "/nonexistent/tokenizer.json"))
            Issue.record("expected an error")
        } catch let e as TokenizerError {
            #expect(e.description.contains("/nonexistent/tokenizer.json"))
        }
    }
}
