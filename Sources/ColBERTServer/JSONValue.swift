import Foundation

/// A JSON value as the server reads and writes it. Objects keep their key order so responses
/// read naturally (`id`, `ok`, then the payload); lookups are linear, which is fine for the few
/// keys a request has.
public enum JSONValue: Sendable, Equatable {
    case null
    case bool(Bool)
    case number(Double)
    case string(String)
    case array([JSONValue])
    case object([(String, JSONValue)])

    public static func == (lhs: JSONValue, rhs: JSONValue) -> Bool {
        switch (lhs, rhs) {
        case (.null, .null): return true
        case (.bool(let a), .bool(let b)): return a == b
        case (.number(let a), .number(let b)): return a == b
        case (.string(let a), .string(let b)): return a == b
        case (.array(let a), .array(let b)): return a == b
        case (.object(let a), .object(let b)):
            // Objects compare as maps: key order does not matter.
            guard a.count == b.count else { return false }
            for (k, v) in a { guard let w = JSONValue.lookup(b, k), w == v else { return false } }
            return true
        default: return false
        }
    }

    static func lookup(_ pairs: [(String, JSONValue)], _ key: String) -> JSONValue? {
        for (k, v) in pairs where k == key { return v }
        return nil
    }

    /// The member `key` of an object (nil for non-objects or absent keys).
    public subscript(key: String) -> JSONValue? {
        if case .object(let pairs) = self { return JSONValue.lookup(pairs, key) }
        return nil
    }

    public var stringValue: String? { if case .string(let s) = self { return s }; return nil }
    public var doubleValue: Double? { if case .number(let d) = self { return d }; return nil }
    public var boolValue: Bool? { if case .bool(let b) = self { return b }; return nil }
    public var arrayValue: [JSONValue]? { if case .array(let a) = self { return a }; return nil }
    public var objectValue: [(String, JSONValue)]? { if case .object(let o) = self { return o }; return nil }
    public var isNull: Bool { if case .null = self { return true }; return false }
    /// An integral number that fits in `Int` (no fractional part).
    public var intValue: Int? {
        guard case .number(let d) = self, d.isFinite, d.rounded() == d, abs(d) < 9.0e15 else { return nil }
        return Int(d)
    }
}

extension JSONValue: ExpressibleByStringLiteral, ExpressibleByIntegerLiteral, ExpressibleByFloatLiteral,
    ExpressibleByBooleanLiteral, ExpressibleByArrayLiteral, ExpressibleByDictionaryLiteral, ExpressibleByNilLiteral
{
    public init(stringLiteral value: String) { self = .string(value) }
    public init(integerLiteral value: Int) { self = .number(Double(value)) }
    public init(floatLiteral value: Double) { self = .number(value) }
    public init(booleanLiteral value: Bool) { self = .bool(value) }
    public init(arrayLiteral elements: JSONValue...) { self = .array(elements) }
    public init(dictionaryLiteral elements: (String, JSONValue)...) { self = .object(elements) }
    public init(nilLiteral: ()) { self = .null }
}

// MARK: - Parsing

/// Why a byte string is not a JSON value.
public struct JSONParseError: Error, CustomStringConvertible, Sendable {
    public let offset: Int
    public let reason: String
    public var description: String { "\(reason) at byte \(offset)" }
}

extension JSONValue {
    /// Maximum nesting of arrays and objects the parser accepts; deeper input is rejected
    /// instead of recursing further (so no input can exhaust the stack).
    public static let defaultMaxDepth = 64

    /// Parses one JSON text (RFC 8259) from UTF-8 bytes. Invalid UTF-8, raw control bytes (NUL
    /// included), trailing garbage and nesting over `maxDepth` are errors.
    public static func parse(_ bytes: UnsafeRawBufferPointer, maxDepth: Int = defaultMaxDepth) throws -> JSONValue {
        var p = JSONParser(bytes: bytes.bindMemory(to: UInt8.self), maxDepth: maxDepth)
        return try p.parseDocument()
    }

    public static func parse(_ bytes: [UInt8], maxDepth: Int = defaultMaxDepth) throws -> JSONValue {
        try bytes.withUnsafeBytes { try parse($0, maxDepth: maxDepth) }
    }

    public static func parse(_ string: String, maxDepth: Int = defaultMaxDepth) throws -> JSONValue {
        try parse(Array(string.utf8), maxDepth: maxDepth)
    }
}

private struct JSONParser {
    let bytes: UnsafeBufferPointer<UInt8>
    let maxDepth: Int
    var i = 0
    var depth = 0

    init(bytes: UnsafeBufferPointer<UInt8>, maxDepth: Int) {
        self.bytes = bytes
        self.maxDepth = maxDepth
    }

    func fail(_ reason: String) -> JSONParseError { JSONParseError(offset: i, reason: reason) }

    mutating func skipWhitespace() {
        while i < bytes.count {
            let c = bytes[i]
            if c == 0x20 || c == 0x09 || c == 0x0A || c == 0x0D { i += 1 } else { return }
        }
    }

    mutating func parseDocument() throws -> JSONValue {
        skipWhitespace()
        let v = try parseValue()
        skipWhitespace()
        guard i == bytes.count else { throw fail(bytes[i] == 0 ? "NUL byte" : "unexpected data after the JSON value") }
        return v
    }

    mutating func parseValue() throws -> JSONValue {
        guard i < bytes.count else { throw fail("unexpected end of input") }
        switch bytes[i] {
        case UInt8(ascii: "{"): return try parseObject()
        case UInt8(ascii: "["): return try parseArray()
        case UInt8(ascii: "\""): return .string(try parseString())
        case UInt8(ascii: "t"): try expectLiteral("true"); return .bool(true)
        case UInt8(ascii: "f"): try expectLiteral("false"); return .bool(false)
        case UInt8(ascii: "n"): try expectLiteral("null"); return .null
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): return .number(try parseNumber())
        case 0: throw fail("NUL byte")
        default: throw fail("unexpected character")
        }
    }

    mutating func expectLiteral(_ word: StaticString) throws {
        let n = word.utf8CodeUnitCount
        guard i + n <= bytes.count else { throw fail("unexpected end of input") }
        let w = word.utf8Start
        for j in 0..<n where bytes[i + j] != w[j] { throw fail("invalid literal") }
        i += n
    }

    mutating func enter() throws {
        depth += 1
        if depth > maxDepth { throw fail("nesting deeper than \(maxDepth)") }
    }

    mutating func parseArray() throws -> JSONValue {
        try enter()
        i += 1
        var items: [JSONValue] = []
        skipWhitespace()
        if i < bytes.count, bytes[i] == UInt8(ascii: "]") { i += 1; depth -= 1; return .array(items) }
        while true {
            skipWhitespace()
            items.append(try parseValue())
            skipWhitespace()
            guard i < bytes.count else { throw fail("unterminated array") }
            if bytes[i] == UInt8(ascii: ",") { i += 1; continue }
            if bytes[i] == UInt8(ascii: "]") { i += 1; depth -= 1; return .array(items) }
            throw fail("expected ',' or ']' in array")
        }
    }

    mutating func parseObject() throws -> JSONValue {
        try enter()
        i += 1
        var pairs: [(String, JSONValue)] = []
        skipWhitespace()
        if i < bytes.count, bytes[i] == UInt8(ascii: "}") { i += 1; depth -= 1; return .object(pairs) }
        while true {
            skipWhitespace()
            guard i < bytes.count, bytes[i] == UInt8(ascii: "\"") else { throw fail("expected a string key") }
            let key = try parseString()
            skipWhitespace()
            guard i < bytes.count, bytes[i] == UInt8(ascii: ":") else { throw fail("expected ':'") }
            i += 1
            skipWhitespace()
            let value = try parseValue()
            // Duplicate keys: the last one wins, as in most parsers.
            if let idx = pairs.firstIndex(where: { $0.0 == key }) { pairs[idx].1 = value } else { pairs.append((key, value)) }
            skipWhitespace()
            guard i < bytes.count else { throw fail("unterminated object") }
            if bytes[i] == UInt8(ascii: ",") { i += 1; continue }
            if bytes[i] == UInt8(ascii: "}") { i += 1; depth -= 1; return .object(pairs) }
            throw fail("expected ',' or '}' in object")
        }
    }

    func isDigit(_ c: UInt8) -> Bool { c >= UInt8(ascii: "0") && c <= UInt8(ascii: "9") }

    mutating func parseNumber() throws -> Double {
        let start = i
        if bytes[i] == UInt8(ascii: "-") { i += 1 }
        guard i < bytes.count else { throw fail("invalid number") }
        if bytes[i] == UInt8(ascii: "0") {
            i += 1
        } else if isDigit(bytes[i]) {
            while i < bytes.count, isDigit(bytes[i]) { i += 1 }
        } else {
            throw fail("invalid number")
        }
        if i < bytes.count, bytes[i] == UInt8(ascii: ".") {
            i += 1
            let digits = i
            while i < bytes.count, isDigit(bytes[i]) { i += 1 }
            guard i > digits else { throw fail("invalid number") }
        }
        if i < bytes.count, bytes[i] == UInt8(ascii: "e") || bytes[i] == UInt8(ascii: "E") {
            i += 1
            if i < bytes.count, bytes[i] == UInt8(ascii: "+") || bytes[i] == UInt8(ascii: "-") { i += 1 }
            let digits = i
            while i < bytes.count, isDigit(bytes[i]) { i += 1 }
            guard i > digits else { throw fail("invalid number") }
        }
        let d = Self.fastDouble(bytes, start, i) ?? Self.slowDouble(bytes, start, i)
        guard let d else { throw fail("invalid number") }
        guard d.isFinite else { throw fail("number out of range") }
        return d
    }

    /// 10^0 ... 10^k by repeated multiplication: exact as long as 10^k is (each step multiplies
    /// an exact value by 10).
    private static func powersOfTen<F: FloatingPoint & ExpressibleByIntegerLiteral>(through k: Int) -> [F] {
        var powers: [F] = [1]
        for _ in 0..<k { powers.append(powers[powers.count - 1] * 10) }
        return powers
    }

    /// Exact powers of ten up to 10^22 (the largest exactly representable in a Double).
    private static let exactPowers: [Double] = powersOfTen(through: 22)

    /// Clinger's fast path for an already validated number: with at most 15 significant digits
    /// and a decimal exponent within ±22, mantissa and power of ten are exact Doubles, so one
    /// multiplication or division gives the correctly rounded value; up to 19 digits go through
    /// `extendedDouble`. Nil when neither applies.
    /// Pre-encoded query vectors are thousands of such numbers per request.
    @inline(__always)
    static func fastDouble(_ b: UnsafeBufferPointer<UInt8>, _ start: Int, _ end: Int) -> Double? {
        var j = start
        let negative = b[j] == UInt8(ascii: "-")
        if negative { j += 1 }
        var mantissa: UInt64 = 0
        var digits = 0
        var scale = 0
        var seenPoint = false
        while j < end {
            let c = b[j]
            if c == UInt8(ascii: ".") {
                seenPoint = true
            } else if c >= UInt8(ascii: "0") && c <= UInt8(ascii: "9") {
                if mantissa != 0 || c != UInt8(ascii: "0") { digits += 1 }
                if digits > 19 { return nil }
                mantissa = mantissa * 10 + UInt64(c - UInt8(ascii: "0"))
                if seenPoint { scale -= 1 }
            } else {
                break // an exponent
            }
            j += 1
        }
        if j < end {
            j += 1 // 'e' or 'E'
            var expNegative = false
            if b[j] == UInt8(ascii: "+") || b[j] == UInt8(ascii: "-") { expNegative = b[j] == UInt8(ascii: "-"); j += 1 }
            var e = 0
            while j < end {
                e = e * 10 + Int(b[j] - UInt8(ascii: "0"))
                if e > 400 { return nil }
                j += 1
            }
            scale += expNegative ? -e : e
        }
        if mantissa == 0 { return negative ? -0.0 : 0.0 }
        if digits <= 15 && scale >= -22 && scale <= 22 {
            var v = Double(mantissa)
            v = scale < 0 ? v / exactPowers[-scale] : v * exactPowers[scale]
            return negative ? -v : v
        }
        guard let v = extendedDouble(mantissa, scale) else { return nil }
        return negative ? -v : v
    }

    #if arch(x86_64)
    /// Exact powers of ten up to 10^27 in the 64-bit significand of `Float80` (5^27 < 2^64).
    private static let exactPowers80: [Float80] = powersOfTen(through: 27)
    #endif

    /// Up to 19 significant digits with a decimal exponent within ±27: what a float32 printed as
    /// a Python float looks like (17 digits), the common form of pre-encoded query vectors. The
    /// mantissa and the power of ten are exact in `Float80`, so one operation rounds once, to 64
    /// bits; rounding that to a Double gives the correctly rounded value unless it lies within
    /// one unit of the 64-bit result of a midpoint between two Doubles, which goes to `strtod`.
    /// Nil when it does not apply (or on CPUs without `Float80`).
    @inline(__always)
    static func extendedDouble(_ mantissa: UInt64, _ scale: Int) -> Double? {
        #if arch(x86_64)
        guard scale >= -27 && scale <= 27 else { return nil }
        let m = Float80(mantissa)
        let v = scale < 0 ? m / exactPowers80[-scale] : m * exactPowers80[scale]
        // The 11 significand bits below a Double's: 0x400 is a midpoint between two Doubles.
        let low = v.significandBitPattern & 0x7FF
        guard low < 0x3FF || low > 0x401 else { return nil }
        return Double(v)
        #else
        return nil
        #endif
    }

    /// Any other number: the C library's correctly rounded conversion, from a NUL-terminated
    /// copy on the stack (JSON numbers of more than 64 bytes go through a String).
    static func slowDouble(_ b: UnsafeBufferPointer<UInt8>, _ start: Int, _ end: Int) -> Double? {
        let n = end - start
        guard n < 64 else {
            return Double(String(decoding: UnsafeBufferPointer(rebasing: b[start..<end]), as: UTF8.self))
        }
        return withUnsafeTemporaryAllocation(of: CChar.self, capacity: 64) { buf -> Double? in
            let p = buf.baseAddress!
            for k in 0..<n { p[k] = CChar(bitPattern: b[start + k]) }
            p[n] = 0
            var endPtr: UnsafeMutablePointer<CChar>?
            let v = strtod(p, &endPtr)
            guard let endPtr, endPtr - p == n else { return nil }
            return v
        }
    }

    mutating func hex4() throws -> UInt32 {
        guard i + 4 <= bytes.count else { throw fail("truncated \\u escape") }
        var v: UInt32 = 0
        for _ in 0..<4 {
            let c = bytes[i]
            let d: UInt32
            switch c {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): d = UInt32(c - UInt8(ascii: "0"))
            case UInt8(ascii: "a")...UInt8(ascii: "f"): d = UInt32(c - UInt8(ascii: "a") + 10)
            case UInt8(ascii: "A")...UInt8(ascii: "F"): d = UInt32(c - UInt8(ascii: "A") + 10)
            default: throw fail("invalid \\u escape")
            }
            v = v << 4 | d
            i += 1
        }
        return v
    }

    mutating func parseString() throws -> String {
        i += 1  // opening quote
        var out: [UInt8] = []
        var runStart = i
        while true {
            guard i < bytes.count else { throw fail("unterminated string") }
            let c = bytes[i]
            if c == UInt8(ascii: "\"") {
                out.append(contentsOf: UnsafeBufferPointer(rebasing: bytes[runStart..<i]))
                i += 1
                break
            }
            if c < 0x20 { throw fail(c == 0 ? "NUL byte in string" : "unescaped control character in string") }
            if c != UInt8(ascii: "\\") { i += 1; continue }
            out.append(contentsOf: UnsafeBufferPointer(rebasing: bytes[runStart..<i]))
            i += 1
            guard i < bytes.count else { throw fail("unterminated escape") }
            let e = bytes[i]
            i += 1
            switch e {
            case UInt8(ascii: "\""): out.append(0x22)
            case UInt8(ascii: "\\"): out.append(0x5C)
            case UInt8(ascii: "/"): out.append(0x2F)
            case UInt8(ascii: "b"): out.append(0x08)
            case UInt8(ascii: "f"): out.append(0x0C)
            case UInt8(ascii: "n"): out.append(0x0A)
            case UInt8(ascii: "r"): out.append(0x0D)
            case UInt8(ascii: "t"): out.append(0x09)
            case UInt8(ascii: "u"):
                var scalar = try hex4()
                if scalar >= 0xD800 && scalar < 0xDC00 {
                    guard i + 1 < bytes.count, bytes[i] == UInt8(ascii: "\\"), bytes[i + 1] == UInt8(ascii: "u") else {
                        throw fail("unpaired surrogate in \\u escape")
                    }
                    i += 2
                    let low = try hex4()
                    guard low >= 0xDC00 && low < 0xE000 else { throw fail("unpaired surrogate in \\u escape") }
                    scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
                } else if scalar >= 0xDC00 && scalar < 0xE000 {
                    throw fail("unpaired surrogate in \\u escape")
                }
                guard let u = Unicode.Scalar(scalar) else { throw fail("invalid \\u escape") }
                out.append(contentsOf: String(Character(u)).utf8)
            default:
                throw fail("invalid escape")
            }
            runStart = i
        }
        // Invalid UTF-8 is an error, never silently replaced.
        guard let s = String(validating: out, as: UTF8.self) else { throw fail("invalid UTF-8 in string") }
        return s
    }
}

// MARK: - Serialisation

extension JSONValue {
    /// Compact JSON text (no newlines, so it is safe as one protocol line). Non-finite numbers
    /// become null.
    public func serialized() -> String {
        var out: [UInt8] = []
        out.reserveCapacity(64)
        write(into: &out)
        return String(decoding: out, as: UTF8.self)
    }

    /// Appends the compact JSON text as UTF-8 bytes.
    public func write(into out: inout [UInt8]) {
        switch self {
        case .null: out.append(contentsOf: "null".utf8)
        case .bool(let b): out.append(contentsOf: (b ? "true" : "false").utf8)
        case .number(let d): JSONValue.writeNumber(d, into: &out)
        case .string(let s): JSONValue.writeString(s, into: &out)
        case .array(let items):
            out.append(UInt8(ascii: "["))
            for (n, v) in items.enumerated() {
                if n > 0 { out.append(UInt8(ascii: ",")) }
                v.write(into: &out)
            }
            out.append(UInt8(ascii: "]"))
        case .object(let pairs):
            out.append(UInt8(ascii: "{"))
            for (n, (k, v)) in pairs.enumerated() {
                if n > 0 { out.append(UInt8(ascii: ",")) }
                JSONValue.writeString(k, into: &out)
                out.append(UInt8(ascii: ":"))
                v.write(into: &out)
            }
            out.append(UInt8(ascii: "}"))
        }
    }

    static func writeNumber(_ d: Double, into out: inout [UInt8]) {
        guard d.isFinite else { out.append(contentsOf: "null".utf8); return }
        if d.rounded() == d && abs(d) < 1e15 {
            out.append(contentsOf: String(Int64(d)).utf8)
        } else {
            // Values that are exactly a Float (token vectors, scores) print in Float's shortest
            // round-trip form: about half the bytes of the Double form.
            let f = Float(d)
            out.append(contentsOf: (Double(f) == d ? f.description : d.description).utf8)
        }
    }

    private static let hexDigits: [UInt8] = Array("0123456789abcdef".utf8)

    static func writeString(_ s: String, into out: inout [UInt8]) {
        out.append(UInt8(ascii: "\""))
        var s = s
        // Runs without anything to escape are copied whole: a base64 vector string is 22 KB
        // of them, and byte-by-byte appends were a client's largest cost per request.
        s.withUTF8 { bytes in
            var runStart = 0
            for i in 0..<bytes.count {
                let b = bytes[i]
                guard b < 0x20 || b == 0x22 || b == 0x5C else { continue }
                if runStart < i { out.append(contentsOf: UnsafeBufferPointer(rebasing: bytes[runStart..<i])) }
                runStart = i + 1
                switch b {
                case 0x22: out.append(0x5C); out.append(0x22)
                case 0x5C: out.append(0x5C); out.append(0x5C)
                case 0x0A: out.append(0x5C); out.append(UInt8(ascii: "n"))
                case 0x0D: out.append(0x5C); out.append(UInt8(ascii: "r"))
                case 0x09: out.append(0x5C); out.append(UInt8(ascii: "t"))
                default:
                    out.append(contentsOf: "\\u00".utf8)
                    out.append(hexDigits[Int(b >> 4)])
                    out.append(hexDigits[Int(b & 0xF)])
                }
            }
            if runStart < bytes.count { out.append(contentsOf: UnsafeBufferPointer(rebasing: bytes[runStart...])) }
        }
        out.append(UInt8(ascii: "\""))
    }
}

extension JSONValue {
    /// Rows of floats as a JSON array of arrays (the wire form of token vectors).
    public static func matrix(_ values: [Float], dim: Int) -> JSONValue {
        guard dim > 0 else { return .array([]) }
        let rows = values.count / dim
        var out: [JSONValue] = []
        out.reserveCapacity(rows)
        for r in 0..<rows {
            out.append(.array(values[(r * dim)..<((r + 1) * dim)].map { .number(Double($0)) }))
        }
        return .array(out)
    }
}
