import Foundation
import Testing
@testable import ColBERTTokenizer

@Suite struct AddedTokenTests {
    @Test func normalizedAddedTokensMatchCaseInsensitively() {
        guard let t = Fixtures.minilm else { return }
        #expect(t.tokenId(for: "[unused0]") == 1)
        #expect(t.tokenize("[unused0]") == [1])
        #expect(t.tokenize("[UNUSED0]x") == [1] + ids(["x"], in: t))
        #expect(t.tokenize("ab[Unused1]cd") == ids(["ab", "[unused1]", "cd"], in: t))
    }

    @Test func specialTokensMatchCaseSensitivelyOnRawText() {
        guard let t = Fixtures.minilm else { return }
        let mask = t.tokenId(for: "[MASK]")
        #expect(mask != nil)
        #expect(t.tokenize("[MASK]") == [mask ?? -1])
        #expect(t.tokenize("a[CLS]b") == ids(["a", "[CLS]", "b"], in: t))
        #expect(t.tokenize("[mask]") == ids(["[", "mask", "]"], in: t))
        #expect(t.tokenize("[UNK]") == [t.unknownTokenId])
    }

    @Test func prefixTokenWithTrailingSpace() {
        guard let t = Fixtures.tiny else { return }
        let q = t.tokenId(for: "[Q] ")
        #expect(q == 30522)
        #expect(t.tokenize("[Q] what") == [30522] + ids(["what"], in: t))
        #expect(t.tokenize("[q] what") == [30522] + ids(["what"], in: t))
        #expect(t.tokenize("[Q]") == ids(["[", "q", "]"], in: t))
        #expect(t.tokenize("x [D] y") == ids(["x"], in: t) + [30523] + ids(["y"], in: t))
        #expect(t.vocabularySize == 30524)
        #expect(t.token(for: 30523) == "[D] ")
    }

    @Test func stripAndSingleWordOptions() throws {
        let vocab = ["[UNK]", "a", "b", "##b", "ab"]
        let added: [[String: Any]] = [
            ["id": 10, "content": "<x>", "single_word": false, "lstrip": true, "rstrip": true,
             "normalized": false, "special": true],
            ["id": 11, "content": "yo", "single_word": true, "lstrip": false, "rstrip": false,
             "normalized": false, "special": false],
        ]
        let t = try WordPieceTokenizer(jsonData: syntheticTokenizerJSON(vocab: vocab, addedTokens: added))
        #expect(t.tokenize("a  <x>  b") == [1, 10, 2])
        #expect(t.tokenize("a yo b") == [1, 11, 2])
        #expect(t.tokenize("ayo") == [0])           // "ayo" is not split out, and is not in the vocab
        #expect(t.tokenize("ab") == [4])
        #expect(t.vocabularySize == 12)
        #expect(t.token(for: 7) == nil)
    }
}
