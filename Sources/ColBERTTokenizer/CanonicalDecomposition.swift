import Foundation

/// NFD of scalars below U+3000, computed once with Foundation: entry `v` spans
/// `scalars[start[v] ..< start[v + 1]]`. Covers Latin, Greek, Cyrillic and the other scripts that
/// carry most accents; Hangul is decomposed arithmetically; the rest falls back to Foundation.
private struct DecompositionTable: Sendable {
    static let limit: UInt32 = 0x3000
    let start: [Int32]
    let scalars: [Unicode.Scalar]

    static let shared = DecompositionTable()

    private init() {
        var start = [Int32](repeating: 0, count: Int(Self.limit) + 1)
        var scalars: [Unicode.Scalar] = []
        for v in 0..<Self.limit {
            start[Int(v)] = Int32(scalars.count)
            guard let s = Unicode.Scalar(v) else { continue }
            if v < 0xC0 {
                scalars.append(s)
            } else {
                scalars.append(contentsOf: String(Character(s)).decomposedStringWithCanonicalMapping.unicodeScalars)
            }
        }
        start[Int(Self.limit)] = Int32(scalars.count)
        self.start = start
        self.scalars = scalars
    }
}

/// Appends the NFD (canonical decomposition plus canonical ordering) of `input` to `out`.
func canonicalDecomposition(_ input: [Unicode.Scalar], into out: inout [Unicode.Scalar]) {
    let first = out.count
    var needsOrdering = false
    for s in input {
        let v = s.value
        if v < 0xC0 {
            out.append(s)
        } else if v < DecompositionTable.limit {
            let table = DecompositionTable.shared
            let a = Int(table.start[Int(v)]), b = Int(table.start[Int(v) + 1])
            out.append(contentsOf: table.scalars[a..<b])
            needsOrdering = needsOrdering || b - a > 1 || s.properties.canonicalCombiningClass.rawValue != 0
        } else if v >= 0xAC00 && v <= 0xD7A3 {
            // Hangul syllable: L V (T), Unicode §3.12.
            let index = v - 0xAC00
            let l = 0x1100 + index / 588, vowel = 0x1161 + (index % 588) / 28, t = index % 28
            out.append(Unicode.Scalar(l) ?? s)
            out.append(Unicode.Scalar(vowel) ?? s)
            if t != 0 { out.append(Unicode.Scalar(0x11A7 + t) ?? s) }
        } else {
            let decomposed = String(Character(s)).decomposedStringWithCanonicalMapping.unicodeScalars
            out.append(contentsOf: decomposed)
            needsOrdering = true
        }
    }
    guard needsOrdering else { return }
    // Canonical ordering: stable sort of each run of non-starters by combining class.
    var i = first + 1
    while i < out.count {
        let c = out[i].properties.canonicalCombiningClass.rawValue
        if c != 0 {
            var j = i
            while j > first {
                let p = out[j - 1].properties.canonicalCombiningClass.rawValue
                if p <= c || p == 0 { break }
                out.swapAt(j - 1, j)
                j -= 1
            }
        }
        i += 1
    }
}
