import Foundation

/// One splitting pass of a Hugging Face pre-tokenizer.
enum PreTokenizerStep: Sendable, Equatable {
    /// Split on White_Space (removed) and isolate every punctuation char (ASCII punctuation or P*).
    case bert
    /// `\w+|[^\w\s]+` with Unicode `\w` (Alphabetic, marks, Nd, Pc, Join_Control).
    case whitespace
    /// Split on White_Space only.
    case whitespaceSplit
}

/// Character class of an ASCII byte for the pre-tokenizers (a function rather than a global
/// table, so the hot loop pays no lazy-initialisation check).
/// bit 0: White_Space, bit 1: BERT punctuation, bit 2: regex \w.
@inline(__always)
private func asciiClass(_ b: UInt8) -> UInt8 {
    switch b {
    case 0x30...0x39, 0x41...0x5A, 0x61...0x7A, 0x5F: return b == 0x5F ? 6 : 4
    case 0x09...0x0D, 0x20: return 1
    case 33...47, 58...64, 91...96, 123...126: return 2
    default: return 0
    }
}

@inline(__always)
func isUnicodePunctuation(_ s: Unicode.Scalar) -> Bool {
    switch s.properties.generalCategory {
    case .connectorPunctuation, .dashPunctuation, .openPunctuation, .closePunctuation,
         .initialPunctuation, .finalPunctuation, .otherPunctuation:
        return true
    default:
        return false
    }
}

@inline(__always)
func isRegexWordChar(_ s: Unicode.Scalar) -> Bool {
    let p = s.properties
    if p.isAlphabetic || p.isJoinControl { return true }
    switch p.generalCategory {
    case .nonspacingMark, .spacingMark, .enclosingMark, .decimalNumber, .connectorPunctuation:
        return true
    default:
        return false
    }
}

/// The pre-tokenizer of a tokenizer.json, as successive splitting passes.
struct PreTokenizer: Sendable {
    let steps: [PreTokenizerStep]

    static func parse(_ json: Any?) throws -> PreTokenizer {
        var steps: [PreTokenizerStep] = []
        try collectSteps(json, into: &steps)
        return PreTokenizer(steps: steps)
    }

    private static func collectSteps(_ json: Any?, into steps: inout [PreTokenizerStep]) throws {
        guard let json, !(json is NSNull) else { return }
        guard let object = json as? [String: Any] else {
            throw TokenizerError.invalidJSON(reason: "'pre_tokenizer' must be an object or null")
        }
        let type = object["type"] as? String ?? "<missing type>"
        switch type {
        case "BertPreTokenizer": steps.append(.bert)
        case "Whitespace": steps.append(.whitespace)
        case "WhitespaceSplit": steps.append(.whitespaceSplit)
        case "Sequence":
            guard let list = object["pretokenizers"] as? [Any] else {
                throw TokenizerError.invalidJSON(reason: "Sequence pre_tokenizer without a 'pretokenizers' list")
            }
            for item in list { try collectSteps(item, into: &steps) }
        default:
            throw TokenizerError.unsupportedPreTokenizer(type: type)
        }
    }

    /// Splits `bytes[range]` into words, appending their byte ranges to `words`.
    func split(_ bytes: UnsafeBufferPointer<UInt8>, _ range: Range<Int>, into words: inout [Range<Int>]) {
        guard let first = steps.first else {
            if !range.isEmpty { words.append(range) }
            return
        }
        if steps.count == 1 {
            Self.apply(first, bytes, range, into: &words)
            return
        }
        var current: [Range<Int>] = [range]
        var next: [Range<Int>] = []
        for step in steps {
            next.removeAll(keepingCapacity: true)
            for r in current { Self.apply(step, bytes, r, into: &next) }
            swap(&current, &next)
        }
        words.append(contentsOf: current)
    }

    private static func apply(_ step: PreTokenizerStep, _ b: UnsafeBufferPointer<UInt8>, _ range: Range<Int>,
                              into words: inout [Range<Int>]) {
        // Word start, or -1 when between words.
        var start = -1
        // For `.whitespace`: whether the current run is made of \w chars.
        var runIsWord = false
        var i = range.lowerBound
        let end = range.upperBound
        while i < end {
            let byte = b[i]
            let len: Int
            var space = false, punct = false, word = false
            if byte < 0x80 {
                len = 1
                let c = asciiClass(byte)
                space = c & 1 != 0
                punct = c & 2 != 0
                word = c & 4 != 0
            } else {
                let (v, l) = decodeScalar(b, at: i)
                len = l
                let s = Unicode.Scalar(v) ?? "\u{FFFD}"
                space = s.properties.isWhitespace
                if !space {
                    switch step {
                    case .bert: punct = isUnicodePunctuation(s)
                    case .whitespace: word = isRegexWordChar(s)
                    case .whitespaceSplit: break
                    }
                }
            }
            switch step {
            case .bert:
                if space || punct {
                    if start >= 0 { words.append(start..<i); start = -1 }
                    if punct { words.append(i..<(i + len)) }
                } else if start < 0 {
                    start = i
                }
            case .whitespaceSplit:
                if space {
                    if start >= 0 { words.append(start..<i); start = -1 }
                } else if start < 0 {
                    start = i
                }
            case .whitespace:
                if space {
                    if start >= 0 { words.append(start..<i); start = -1 }
                } else if start < 0 {
                    start = i; runIsWord = word
                } else if word != runIsWord {
                    words.append(start..<i); start = i; runIsWord = word
                }
            }
            i += len
        }
        if start >= 0 && start < end { words.append(start..<end) }
    }
}
