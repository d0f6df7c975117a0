import Foundation

/// One per-text rewriting pass of a Hugging Face normalizer, in pipeline order.
enum NormalizerStep: Sendable, Equatable {
    /// BertNormalizer clean_text: drop NUL, U+FFFD, Cc/Cf/Co except \t \n \r; whitespace becomes ' '.
    case cleanText
    /// BertNormalizer handle_chinese_chars: spaces around CJK ideographs (Rust tokenizers ranges).
    case chineseChars
    case nfd, nfc, nfkd, nfkc
    /// Drop nonspacing marks (Mn). BertNormalizer precedes this with NFD.
    case stripMarks
    /// Unicode lowercase mapping per scalar, without context (like Rust's `char::to_lowercase`).
    case lowercase
}

/// The normalizer of a tokenizer.json, as a list of steps.
struct TextNormalizer: Sendable {
    let steps: [NormalizerStep]
    /// Effect of all steps on each ASCII byte: the output byte, or 0xFF to delete it.
    /// Every step maps ASCII to at most one ASCII byte, so all-ASCII text takes this path.
    private let asciiMap: [UInt8]

    init(steps: [NormalizerStep]) {
        self.steps = steps
        var map = [UInt8](repeating: 0, count: 128)
        for b in 0..<128 {
            var c: UInt8? = UInt8(b)
            for step in steps {
                guard let x = c else { break }
                switch step {
                case .cleanText:
                    if x == 0x09 || x == 0x0A || x == 0x0D || x == 0x20 { c = 0x20 }
                    else if x < 0x20 || x == 0x7F { c = nil }
                case .lowercase:
                    if x >= 0x41 && x <= 0x5A { c = x + 32 }
                case .chineseChars, .nfd, .nfc, .nfkd, .nfkc, .stripMarks:
                    break
                }
            }
            map[b] = c ?? 0xFF
        }
        self.asciiMap = map
    }

    var isIdentity: Bool { steps.isEmpty }

    /// Parses the `normalizer` member of tokenizer.json (`nil` / JSON null means no normalizer).
    static func parse(_ json: Any?) throws -> TextNormalizer {
        var steps: [NormalizerStep] = []
        try collectSteps(json, into: &steps)
        return TextNormalizer(steps: steps)
    }

    private static func collectSteps(_ json: Any?, into steps: inout [NormalizerStep]) throws {
        guard let json, !(json is NSNull) else { return }
        guard let object = json as? [String: Any] else {
            throw TokenizerError.invalidJSON(reason: "'normalizer' must be an object or null")
        }
        let type = object["type"] as? String ?? "<missing type>"
        switch type {
        case "BertNormalizer":
            let clean = object["clean_text"] as? Bool ?? true
            let chinese = object["handle_chinese_chars"] as? Bool ?? true
            let lowercase = object["lowercase"] as? Bool ?? true
            let strip = (object["strip_accents"] as? Bool) ?? lowercase
            if clean { steps.append(.cleanText) }
            if chinese { steps.append(.chineseChars) }
            if strip { steps.append(.nfd); steps.append(.stripMarks) }
            if lowercase { steps.append(.lowercase) }
        case "Lowercase": steps.append(.lowercase)
        case "NFD": steps.append(.nfd)
        case "NFC": steps.append(.nfc)
        case "NFKD": steps.append(.nfkd)
        case "NFKC": steps.append(.nfkc)
        case "StripAccents": steps.append(.stripMarks)
        case "Sequence":
            guard let list = object["normalizers"] as? [Any] else {
                throw TokenizerError.invalidJSON(reason: "Sequence normalizer without a 'normalizers' list")
            }
            for item in list { try collectSteps(item, into: &steps) }
        default:
            throw TokenizerError.unsupportedNormalizer(type: type)
        }
    }

    /// Whether a step composes (NFC, NFKC): composition can join an ASCII base with a following
    /// mark, so such pipelines must see the whole text at once.
    private var composes: Bool { steps.contains(.nfc) || steps.contains(.nfkc) }

    /// Appends the normalized UTF-8 of `input` (valid UTF-8) to `output`.
    ///
    /// Every step is either per scalar or a decomposition, and ASCII scalars are decomposition and
    /// reordering barriers (canonical combining class 0), so ASCII bytes take a table lookup and
    /// only the non-ASCII runs between them go through the scalar pipeline.
    func normalize(_ input: UnsafeBufferPointer<UInt8>, into output: inout [UInt8]) {
        if steps.isEmpty { output.append(contentsOf: input); return }
        var scalars: [Unicode.Scalar] = []
        var scratch: [Unicode.Scalar] = []
        if composes {
            normalizeScalars(input, into: &output, &scalars, &scratch)
            return
        }
        asciiMap.withUnsafeBufferPointer { map in
            let n = input.count
            var i = 0
            while i < n {
                let b = input[i]
                if b < 0x80 {
                    let m = map[Int(b)]
                    if m != 0xFF { output.append(m) }
                    i += 1
                    continue
                }
                var j = i + 1
                while j < n && input[j] >= 0x80 { j += 1 }
                normalizeScalars(UnsafeBufferPointer(rebasing: input[i..<j]), into: &output, &scalars, &scratch)
                i = j
            }
        }
    }

    private func normalizeScalars(_ input: UnsafeBufferPointer<UInt8>, into output: inout [UInt8],
                                  _ scalars: inout [Unicode.Scalar], _ scratch: inout [Unicode.Scalar]) {
        scalars.removeAll(keepingCapacity: true)
        var i = 0
        while i < input.count {
            let (v, len) = decodeScalar(input, at: i)
            scalars.append(Unicode.Scalar(v) ?? "\u{FFFD}")
            i += len
        }
        for step in steps {
            scratch.removeAll(keepingCapacity: true)
            apply(step, scalars, into: &scratch)
            swap(&scalars, &scratch)
        }
        for s in scalars { appendUTF8(s, to: &output) }
    }

    private func apply(_ step: NormalizerStep, _ input: [Unicode.Scalar], into out: inout [Unicode.Scalar]) {
        switch step {
        case .cleanText:
            for s in input {
                let v = s.value
                if v < 0x80 {
                    let m = asciiCleanMap(UInt8(v))
                    if m != 0xFF { out.append(Unicode.Scalar(m)) }
                    continue
                }
                if v == 0xFFFD { continue }
                let p = s.properties
                switch p.generalCategory {
                case .control, .format, .privateUse, .surrogate: continue
                default: break
                }
                out.append(p.isWhitespace ? " " : s)
            }
        case .chineseChars:
            for s in input {
                if isCJKIdeograph(s.value) {
                    out.append(" "); out.append(s); out.append(" ")
                } else {
                    out.append(s)
                }
            }
        case .nfd:
            canonicalDecomposition(input, into: &out)
        case .nfc, .nfkd, .nfkc:
            // ASCII and C1 controls are stable under every normalization form.
            guard input.contains(where: { $0.value >= 0xA0 }) else { out.append(contentsOf: input); return }
            var view = String.UnicodeScalarView()
            view.append(contentsOf: input)
            let string = String(view)
            let normalized: String
            switch step {
            case .nfc: normalized = string.precomposedStringWithCanonicalMapping
            case .nfkd: normalized = string.decomposedStringWithCompatibilityMapping
            default: normalized = string.precomposedStringWithCompatibilityMapping
            }
            out.append(contentsOf: normalized.unicodeScalars)
        case .stripMarks:
            for s in input where s.value < 0x300 || s.properties.generalCategory != .nonspacingMark {
                out.append(s)
            }
        case .lowercase:
            for s in input {
                let v = s.value
                if v < 0x80 {
                    out.append(v >= 0x41 && v <= 0x5A ? Unicode.Scalar(UInt8(v + 32)) : s)
                } else if s.properties.changesWhenLowercased {
                    out.append(contentsOf: s.properties.lowercaseMapping.unicodeScalars)
                } else {
                    out.append(s)
                }
            }
        }
    }

    @inline(__always)
    private func asciiCleanMap(_ x: UInt8) -> UInt8 {
        if x == 0x09 || x == 0x0A || x == 0x0D { return 0x20 }
        if x < 0x20 || x == 0x7F { return 0xFF }
        return x
    }
}

/// CJK Unified Ideographs as listed by Rust tokenizers' `is_chinese_char`.
@inline(__always)
func isCJKIdeograph(_ v: UInt32) -> Bool {
    switch v {
    case 0x4E00...0x9FFF, 0x3400...0x4DBF, 0x20000...0x2A6DF, 0x2A700...0x2B73F,
         0x2B740...0x2B81F, 0x2B920...0x2CEAF, 0xF900...0xFAFF, 0x2F800...0x2FA1F:
        return true
    default:
        return false
    }
}

/// Decodes valid UTF-8 into scalars.
func decodeScalars(_ bytes: UnsafeBufferPointer<UInt8>) -> [Unicode.Scalar] {
    var out: [Unicode.Scalar] = []
    out.reserveCapacity(bytes.count)
    var i = 0
    let n = bytes.count
    while i < n {
        let (v, len) = decodeScalar(bytes, at: i)
        out.append(Unicode.Scalar(v) ?? "\u{FFFD}")
        i += len
    }
    return out
}

/// The scalar value starting at `i` and its UTF-8 length. Input is valid UTF-8 (it comes from a
/// Swift String or from our own encoder); truncated sequences still advance by at least one byte.
@inline(__always)
func decodeScalar(_ b: UnsafeBufferPointer<UInt8>, at i: Int) -> (UInt32, Int) {
    let b0 = UInt32(b[i])
    if b0 < 0x80 { return (b0, 1) }
    let n = b.count
    if b0 < 0xE0 {
        guard i + 1 < n else { return (0xFFFD, 1) }
        return (((b0 & 0x1F) << 6) | (UInt32(b[i + 1]) & 0x3F), 2)
    }
    if b0 < 0xF0 {
        guard i + 2 < n else { return (0xFFFD, n - i) }
        return (((b0 & 0x0F) << 12) | ((UInt32(b[i + 1]) & 0x3F) << 6) | (UInt32(b[i + 2]) & 0x3F), 3)
    }
    guard i + 3 < n else { return (0xFFFD, n - i) }
    return (((b0 & 0x07) << 18) | ((UInt32(b[i + 1]) & 0x3F) << 12)
            | ((UInt32(b[i + 2]) & 0x3F) << 6) | (UInt32(b[i + 3]) & 0x3F), 4)
}

@inline(__always)
func appendUTF8(_ s: Unicode.Scalar, to out: inout [UInt8]) {
    let v = s.value
    if v < 0x80 {
        out.append(UInt8(v))
    } else if v < 0x800 {
        out.append(UInt8(0xC0 | (v >> 6)))
        out.append(UInt8(0x80 | (v & 0x3F)))
    } else if v < 0x10000 {
        out.append(UInt8(0xE0 | (v >> 12)))
        out.append(UInt8(0x80 | ((v >> 6) & 0x3F)))
        out.append(UInt8(0x80 | (v & 0x3F)))
    } else {
        out.append(UInt8(0xF0 | (v >> 18)))
        out.append(UInt8(0x80 | ((v >> 12) & 0x3F)))
        out.append(UInt8(0x80 | ((v >> 6) & 0x3F)))
        out.append(UInt8(0x80 | (v & 0x3F)))
    }
}
