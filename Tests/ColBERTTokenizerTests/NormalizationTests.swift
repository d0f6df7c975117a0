import Foundation
import Testing
@testable import ColBERTTokenizer

/// Behaviour of the BERT-uncased pipeline documented in CONVENTIONS.md §3–§4, on the MiniLM vocab.
@Suite struct NormalizationTests {
    func check(_ text: String, _ tokens: [String], sourceLocation: SourceLocation = #_sourceLocation) {
        guard let t = Fixtures.minilm else { return }
        #expect(t.tokenize(text) == ids(tokens, in: t, sourceLocation: sourceLocation),
                "\(text.debugDescription)", sourceLocation: sourceLocation)
    }

    @Test func accentsAreStrippedAndLowercased() {
        check("Café NAÏVE", ["cafe", "naive"])
        check("İ", ["i"])
        check("Straße", ["st", "##raße"])
        check("Ł", ["ł"])
        check("한", ["ᄒ", "##ᅡ", "##ᆫ"])
    }

    @Test func noCompatibilityNormalization() {
        guard let t = Fixtures.minilm else { return }
        #expect(t.tokenize("Ｆ") == [t.unknownTokenId])
        #expect(t.tokenize("Ⅻ") == [t.unknownTokenId])
        check("ﬁ µ", ["ﬁ", "µ"])
    }

    @Test func cjkIdeographsAreSeparatedButNotKana() {
        guard let t = Fixtures.minilm else { return }
        let cjk = t.tokenize("肺癌是")
        #expect(cjk.count == 3)
        #expect(cjk.allSatisfy { !(t.token(for: $0) ?? "##").hasPrefix("##") })
        // U+2B820 is outside the Rust tokenizers ranges, so it stays glued to its neighbours.
        #expect(t.tokenize("a\u{2B820}b") == [t.unknownTokenId])
        check("a\u{4E00}b", ["a", "\u{4E00}", "b"])
        let kana = t.tokenize("コロナ")
        #expect(kana.dropFirst().allSatisfy { (t.token(for: $0) ?? "").hasPrefix("##") })
    }

    @Test func controlAndFormatCharsAreDeleted() {
        check("and\u{0C}form", ["and", "##form"])
        check("hello\u{200B}world", ["hello", "##world"])
        check("soft\u{AD}ware", ["software"])
        check("a\u{0}b\u{7}c\u{7F}", ["abc"])
        check("\u{FEFF}bom", ["bo", "##m"])
        check("a\u{85}b", ["ab"])
    }

    @Test func whitespaceVariantsSplitWords() {
        check("a\u{A0}b\u{3000}c\u{2028}d\te\r\nf", ["a", "b", "c", "d", "e", "f"])
    }

    @Test func punctuationIsIsolated() {
        check("Wait...what?!", ["wait", ".", ".", ".", "what", "?", "!"])
        check("«quoted»", ["«", "quoted", "»"])
        check("37°c ≥70", ["37", "##°", "##c", "≥", "##70"])
        check("a^b", ["a", "^", "b"])
    }

    @Test func longAndUnsegmentableWordsBecomeUnknown() {
        guard let t = Fixtures.minilm else { return }
        let hundredAndOne = String(repeating: "a", count: 101)
        #expect(t.tokenize(hundredAndOne) == [t.unknownTokenId])
        let hundred = t.tokenize(String(repeating: "a", count: 100))
        #expect(hundred.count > 1 && !hundred.contains(t.unknownTokenId))
        // Accents are stripped before the length check counts chars.
        #expect(t.tokenize(String(repeating: "é", count: 100)) != [t.unknownTokenId])
        #expect(t.tokenize("x Ｆｕｌｌ y") == ids(["x"], in: t) + [t.unknownTokenId] + ids(["y"], in: t))
    }

    @Test func emptyAndBlankTexts() {
        guard let t = Fixtures.minilm else { return }
        #expect(t.tokenize("") == [])
        #expect(t.tokenize(" \t\n ") == [])
        #expect(t.tokenize("\u{200B}") == [])
    }

    @Test func pythonStripMatchesStrIsspace() {
        #expect(pythonStrip("  \t\n x y \u{1C}\u{85}\u{A0}\u{3000}") == "x y")
        #expect(pythonStrip("\u{200B}x\u{FEFF}") == "\u{200B}x\u{FEFF}")
        #expect(pythonStrip("\u{0B}\u{0C}") == "")
        #expect(pythonStrip("") == "")
        #expect(pythonStrip("abc") == "abc")
    }
}

@Suite struct CanonicalDecompositionTests {
    func foundationNFD(_ scalars: [Unicode.Scalar]) -> [Unicode.Scalar] {
        var view = String.UnicodeScalarView()
        view.append(contentsOf: scalars)
        return Array(String(view).decomposedStringWithCanonicalMapping.unicodeScalars)
    }

    @Test func matchesFoundationIncludingOrderingAndHangul() {
        let samples: [[Unicode.Scalar]] = [
            ["a", "\u{301}", "\u{316}"],        // ccc 230 then 220: reordered
            ["\u{1E09}", "\u{323}"],            // ḉ + dot below: decomposed marks reordered
            ["한", "국", "어"],
            ["が", "ﬁ", "Å", "Ω"],              // outside the table, compatibility-only, singletons
            ["\u{2ADC}", "x", "\u{0F73}"],
        ]
        for sample in samples {
            var out: [Unicode.Scalar] = []
            canonicalDecomposition(sample, into: &out)
            #expect(out == foundationNFD(sample), "\(sample)")
        }
        for v in stride(from: UInt32(0xA0), to: 0x3100, by: 7) {
            guard let s = Unicode.Scalar(v) else { continue }
            var out: [Unicode.Scalar] = []
            canonicalDecomposition([s], into: &out)
            #expect(out == foundationNFD([s]), "U+\(String(v, radix: 16))")
        }
    }

    @Test func kanaVoicingMarkIsStripped() {
        guard let t = Fixtures.minilm else { return }
        #expect(t.tokenize("が") == t.tokenize("か"))
        #expect(t.tokenize("ÀÉÎÕÜ") == t.tokenize("aeiou"))
    }
}
