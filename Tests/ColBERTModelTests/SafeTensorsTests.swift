import Foundation
import Testing
@testable import ColBERTModel

/// Writes safetensors files by hand, so every header field can be broken on purpose.
enum SafeTensorsWriter {
    static func file(header: String, data: [UInt8], declaredLength: UInt64? = nil) -> Data {
        var out = Data()
        let h = Data(header.utf8)
        var n = (declaredLength ?? UInt64(h.count)).littleEndian
        withUnsafeBytes(of: &n) { out.append(contentsOf: $0) }
        out.append(h)
        out.append(contentsOf: data)
        return out
    }

    static func f32(_ v: [Float]) -> [UInt8] { v.flatMap { withUnsafeBytes(of: $0.bitPattern.littleEndian, Array.init) } }

    static func temp(_ data: Data) throws -> URL {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("st-\(UUID().uuidString).safetensors")
        try data.write(to: url)
        return url
    }
}

@Suite struct SafeTensorsTests {
    @Test func readsF32F16BF16() throws {
        let values: [Float] = [1, -2.5, 0.333_333_34, 65504]
        // F16: 1.0 = 0x3C00, -2.5 = 0xC100, 0.33325195 = 0x3555, 65504 = 0x7BFF; then a subnormal 2^-24 = 0x0001.
        let f16: [UInt16] = [0x3C00, 0xC100, 0x3555, 0x7BFF, 0x0001]
        let bf16: [UInt16] = [0x3F80, 0xC020] // 1.0, -2.5
        var data = SafeTensorsWriter.f32(values)
        for h in f16 { data += withUnsafeBytes(of: h.littleEndian, Array.init) }
        for h in bf16 { data += withUnsafeBytes(of: h.littleEndian, Array.init) }
        let header = """
            {"__metadata__":{"format":"pt"},"a":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]},\
            "h":{"dtype":"F16","shape":[5],"data_offsets":[16,26]},"b":{"dtype":"BF16","shape":[2],"data_offsets":[26,30]}}
            """
        let url = try SafeTensorsWriter.temp(SafeTensorsWriter.file(header: header, data: data))
        defer { try? FileManager.default.removeItem(at: url) }
        let f = try SafeTensorsFile(url: url)
        #expect(f.metadata["format"] == "pt")
        #expect(try f.floats("a", shape: [2, 2]) == values)
        #expect(try f.floats("h") == [1, -2.5, 0.333_251_95, 65504, Float(sign: .plus, exponent: -24, significand: 1)])
        #expect(try f.floats("b") == [1, -2.5])
        #expect(f.tensorNames == ["a", "b", "h"])
    }

    @Test func refusesBrokenFiles() throws {
        let good = #"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#
        // Data section cut short.
        let truncatedData = try SafeTensorsWriter.temp(SafeTensorsWriter.file(header: good, data: [0, 0, 0, 0]))
        // Header length pointing past the end of the file.
        let truncatedHeader = try SafeTensorsWriter.temp(SafeTensorsWriter.file(header: good, data: [], declaredLength: 4096))
        let tiny = try SafeTensorsWriter.temp(Data([1, 2, 3]))
        let notJSON = try SafeTensorsWriter.temp(SafeTensorsWriter.file(header: "{not json", data: []))
        let badOffsets = try SafeTensorsWriter.temp(SafeTensorsWriter.file(
            header: #"{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#, data: SafeTensorsWriter.f32([1, 2])))
        defer { for u in [truncatedData, truncatedHeader, tiny, notJSON, badOffsets] { try? FileManager.default.removeItem(at: u) } }

        #expect { try SafeTensorsFile(url: truncatedData) } throws: { e in
            if case .truncated = e as? SafeTensorsError { return true } else { return false }
        }
        #expect { try SafeTensorsFile(url: truncatedHeader) } throws: { e in
            if case .truncated = e as? SafeTensorsError { return true } else { return false }
        }
        #expect { try SafeTensorsFile(url: tiny) } throws: { e in
            if case .truncated = e as? SafeTensorsError { return true } else { return false }
        }
        #expect { try SafeTensorsFile(url: notJSON) } throws: { e in
            if case .badHeader = e as? SafeTensorsError { return true } else { return false }
        }
        #expect { try SafeTensorsFile(url: badOffsets) } throws: { e in
            if case .badHeader = e as? SafeTensorsError { return true } else { return false }
        }
        #expect { try SafeTensorsFile(path: "/nonexistent/x.safetensors") } throws: { e in
            if case .cannotOpen = e as? SafeTensorsError { return true } else { return false }
        }
    }

    @Test func reportsMissingWrongShapeAndUnsupportedDType() throws {
        let header = #"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"ids":{"dtype":"I64","shape":[1],"data_offsets":[8,16]}}"#
        let url = try SafeTensorsWriter.temp(SafeTensorsWriter.file(header: header, data: SafeTensorsWriter.f32([1, 2]) + [UInt8](repeating: 0, count: 8)))
        defer { try? FileManager.default.removeItem(at: url) }
        let f = try SafeTensorsFile(url: url) // an I64 tensor alone does not make the file unreadable
        #expect(throws: SafeTensorsError.missingTensor(path: url.path, tensor: "b")) { try f.floats("b") }
        #expect(throws: SafeTensorsError.wrongShape(path: url.path, tensor: "a", expected: [3], found: [2])) { try f.floats("a", shape: [3]) }
        #expect(throws: SafeTensorsError.unsupportedDType(path: url.path, tensor: "ids", dtype: "I64")) { try f.floats("ids") }
        #expect(try f.floats("a") == [1, 2])
    }
}
