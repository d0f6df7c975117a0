import Foundation
import Testing
@testable import ColBERTServer

@Suite struct JSONValueTests {
    @Test func parsesAndSerialisesRoundTrip() throws {
        let text = #"{"a":[1,-2.5,1e3,true,false,null],"b":"x\"y\\z\n\u00e9\ud83d\ude00","c":{}}"#
        let v = try JSONValue.parse(text)
        #expect(v["a"]?.arrayValue?.count == 6)
        #expect(v["a"]?.arrayValue?[2].intValue == 1000)
        #expect(v["b"]?.stringValue == "x\"y\\z\né😀")
        let again = try JSONValue.parse(v.serialized())
        #expect(again == v)
    }

    /// Strings are written with escapes exactly where JSON needs them, whatever the runs between.
    @Test func stringsAreEscapedExactly() throws {
        #expect(JSONValue.string("").serialized() == #""""#)
        #expect(JSONValue.string("plain").serialized() == #""plain""#)
        #expect(JSONValue.string("\"a\\b\"").serialized() == #""\"a\\b\"""#)
        #expect(JSONValue.string("\n\r\t\u{01}x\u{1F}").serialized() == #""\n\r\t\u0001x\u001f""#)
        #expect(JSONValue.string("é😀/").serialized() == "\"é😀/\"")
        // Against the byte-by-byte rule, on random strings of escapes, ASCII and multi-byte text.
        let pieces = ["a", "Z", "0", "+", "/", "=", "\"", "\\", "\n", "\u{00}", "\u{07}", "é", "😀", " "]
        var g = SystemRandomNumberGenerator()
        for _ in 0..<500 {
            let text = (0..<Int.random(in: 0...40, using: &g)).map { _ in pieces.randomElement(using: &g)! }.joined()
            var expected: [UInt8] = [0x22]
            for b in text.utf8 {
                switch b {
                case 0x22: expected += Array("\\\"".utf8)
                case 0x5C: expected += Array("\\\\".utf8)
                case 0x0A: expected += Array("\\n".utf8)
                case 0x0D: expected += Array("\\r".utf8)
                case 0x09: expected += Array("\\t".utf8)
                case 0..<0x20: expected += Array(String(format: "\\u%04x", b).utf8)
                default: expected.append(b)
                }
            }
            expected.append(0x22)
            #expect(Array(JSONValue.string(text).serialized().utf8) == expected)
            #expect(try JSONValue.parse(JSONValue.string(text).serialized()) == .string(text))
        }
    }

    @Test func numbersParseToTheCorrectlyRoundedDouble() throws {
        // Fast path (≤ 15 digits, small exponents) and the strtod fallback must both agree with
        // Swift's own correctly rounded conversion, bit for bit.
        var texts = ["0", "-0", "1", "-1", "0.5", "1e3", "1E-3", "-2.5e+2", "123456789012345", "1234567890123456",
                     "0.1", "0.2", "0.3", "9007199254740993", "1e22", "1e23", "1e-22", "1e-23", "4.9e-324",
                     "1.7976931348623157e308", "0.000000000000000000000000001", "0e500", "-0.0e-400",
                     "0.018283903598785400", "-0.11893291771411896", "3.0000000000000004", "100000000000000000000000"]
        var g = SystemRandomNumberGenerator()
        for _ in 0..<3000 {
            let f = Float.random(in: -1...1, using: &g)
            texts.append("\(Double(f))")      // what Python prints for a float32 read as a float
            texts.append("\(f)")              // shortest float32 text
            texts.append(String(format: "%.9e", Double(f)))
            // 16 to 19 significant digits across the exponents the Float80 path takes (and past them).
            let d = Double.random(in: 1...10, using: &g) * [1e-30, 1e-27, 1e-12, 1e-3, 1, 1e7, 1e20, 1e27, 1e30].randomElement(using: &g)!
            texts.append(String(format: "%.15e", d))
            texts.append(String(format: "%.18e", d))
            texts.append(String(format: "%.17g", -d))
        }
        // Halfway cases between two Doubles, written out exactly (2^53 + 1, 2^54 + 2, 1 + 2^-53).
        texts += ["9007199254740993", "18014398509481986", "1.00000000000000011102230246251565404", "1.0000000000000001110223"]
        for t in texts {
            let want = Double(t)
            let got = try JSONValue.parse("[\(t)]").arrayValue?.first?.doubleValue
            #expect(got?.bitPattern == want?.bitPattern, "\(t): \(String(describing: got)) vs \(String(describing: want))")
        }
        #expect(throws: JSONParseError.self) { try JSONValue.parse("[1e400]") }
        #expect(throws: JSONParseError.self) { try JSONValue.parse("[01]") }
        #expect(throws: JSONParseError.self) { try JSONValue.parse("[1.]") }
    }

    @Test func keyOrderIsKeptOnOutput() {
        let v: JSONValue = ["id": 1, "ok": true, "z": "last"]
        #expect(v.serialized() == #"{"id":1,"ok":true,"z":"last"}"#)
    }

    @Test func floatsPrintShort() {
        let v = JSONValue.number(Double(Float(0.1)))
        #expect(v.serialized() == "0.1")
        #expect(JSONValue.number(0.1).serialized() == "0.1")
        #expect(JSONValue.number(3).serialized() == "3")
    }

    @Test(arguments: [
        "", "{", "[1,]", "{\"a\" 1}", "tru", "01", "1.", "-", "\"abc", "[1] x", "{'a':1}",
        "\"\\x\"", "\"\\ud800\"", "\"a\u{01}b\"", "NaN", "1e999",
    ])
    func rejectsMalformed(_ text: String) {
        #expect(throws: JSONParseError.self) { try JSONValue.parse(text) }
    }

    @Test func rejectsInvalidUTF8AndNUL() {
        #expect(throws: JSONParseError.self) { try JSONValue.parse([0x22, 0xC3, 0x28, 0x22]) }
        #expect(throws: JSONParseError.self) { try JSONValue.parse([0x22, 0xFF, 0x22]) }
        #expect(throws: JSONParseError.self) { try JSONValue.parse([0x22, 0x61, 0x00, 0x22]) }
        #expect(throws: JSONParseError.self) { try JSONValue.parse([0x7B, 0x7D, 0x00]) }
    }

    @Test func deepNestingIsAnErrorNotACrash() throws {
        let deep = String(repeating: "[", count: 100_000) + String(repeating: "]", count: 100_000)
        #expect(throws: JSONParseError.self) { try JSONValue.parse(deep) }
        let ok = String(repeating: "[", count: 60) + String(repeating: "]", count: 60)
        _ = try JSONValue.parse(ok)
    }
}
