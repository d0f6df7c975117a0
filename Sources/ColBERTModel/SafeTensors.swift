import Foundation

/// Errors reading a safetensors file. Every case names the file or tensor involved.
public enum SafeTensorsError: Error, Equatable, CustomStringConvertible {
    case cannotOpen(path: String, reason: String)
    case truncated(path: String, detail: String)
    case badHeader(path: String, detail: String)
    case unsupportedDType(path: String, tensor: String, dtype: String)
    case missingTensor(path: String, tensor: String)
    case wrongShape(path: String, tensor: String, expected: [Int], found: [Int])

    public var description: String {
        switch self {
        case .cannotOpen(let p, let r): return "cannot read safetensors file \(p): \(r)"
        case .truncated(let p, let d): return "safetensors file \(p) is truncated: \(d)"
        case .badHeader(let p, let d): return "safetensors file \(p) has a bad header: \(d)"
        case .unsupportedDType(let p, let t, let d): return "tensor \(t) in \(p) has unsupported dtype \(d) (supported: F32, F16, BF16)"
        case .missingTensor(let p, let t): return "tensor \(t) is missing from \(p)"
        case .wrongShape(let p, let t, let e, let f): return "tensor \(t) in \(p) has shape \(f), expected \(e)"
        }
    }
}

/// A memory-mapped safetensors file: 8-byte little-endian header length, a JSON header mapping
/// tensor names to dtype, shape and byte range, then the raw little-endian tensor bytes.
public final class SafeTensorsFile: @unchecked Sendable {
    public struct TensorInfo: Sendable, Equatable {
        public let dtype: String
        public let shape: [Int]
        /// Byte range relative to the start of the data section.
        public let begin: Int
        public let end: Int
        public var elementCount: Int { shape.reduce(1, *) }
    }

    public let path: String
    /// The `__metadata__` string map, if present.
    public let metadata: [String: String]
    private let tensors: [String: TensorInfo]
    private let file: MappedFile
    private let dataStart: Int

    /// Largest header accepted; real headers are a few hundred KB at most.
    static let maxHeaderBytes = 100 << 20

    public convenience init(url: URL) throws {
        try self.init(path: url.path)
    }

    public init(path: String) throws {
        self.path = path
        do { file = try MappedFile(path: path) } catch { throw SafeTensorsError.cannotOpen(path: path, reason: "\(error)") }
        let bytes = file.bytes
        guard bytes.count >= 8 else {
            throw SafeTensorsError.truncated(path: path, detail: "\(bytes.count) bytes, shorter than the 8-byte header length")
        }
        let headerLength = UInt64(littleEndian: bytes.loadUnaligned(fromByteOffset: 0, as: UInt64.self))
        guard headerLength <= UInt64(Self.maxHeaderBytes) else {
            throw SafeTensorsError.badHeader(path: path, detail: "header length \(headerLength) is implausibly large")
        }
        let n = Int(headerLength)
        guard 8 + n <= bytes.count else {
            throw SafeTensorsError.truncated(path: path, detail: "header needs \(n) bytes but only \(bytes.count - 8) follow")
        }
        let headerData = Data(bytes[8..<(8 + n)])
        let json: Any
        do { json = try JSONSerialization.jsonObject(with: headerData) } catch {
            throw SafeTensorsError.badHeader(path: path, detail: "not valid JSON")
        }
        guard let dict = json as? [String: Any] else {
            throw SafeTensorsError.badHeader(path: path, detail: "header is not a JSON object")
        }
        dataStart = 8 + n
        let dataLength = bytes.count - dataStart
        var parsed: [String: TensorInfo] = [:]
        var meta: [String: String] = [:]
        for (name, value) in dict {
            if name == "__metadata__" {
                if let m = value as? [String: Any] {
                    for (k, v) in m { if let s = v as? String { meta[k] = s } }
                }
                continue
            }
            guard let entry = value as? [String: Any],
                  let dtype = entry["dtype"] as? String,
                  let shapeAny = entry["shape"] as? [Any],
                  let offsetsAny = entry["data_offsets"] as? [Any], offsetsAny.count == 2 else {
                throw SafeTensorsError.badHeader(path: path, detail: "entry \(name) lacks dtype, shape or data_offsets")
            }
            let shape = try shapeAny.map { v -> Int in
                guard let i = Self.intValue(v), i >= 0 else {
                    throw SafeTensorsError.badHeader(path: path, detail: "entry \(name) has a bad shape")
                }
                return i
            }
            guard let begin = Self.intValue(offsetsAny[0]), let end = Self.intValue(offsetsAny[1]),
                  begin >= 0, end >= begin else {
                throw SafeTensorsError.badHeader(path: path, detail: "entry \(name) has bad data_offsets")
            }
            guard end <= dataLength else {
                throw SafeTensorsError.truncated(path: path, detail: "tensor \(name) ends at byte \(end) of the data section, which has \(dataLength) bytes")
            }
            var count = 1
            for d in shape {
                let (p, o) = count.multipliedReportingOverflow(by: d)
                guard !o else { throw SafeTensorsError.badHeader(path: path, detail: "entry \(name) has an overflowing shape") }
                count = p
            }
            if let size = Self.elementSize(dtype), count * size != end - begin {
                throw SafeTensorsError.badHeader(path: path, detail: "entry \(name): shape \(shape) of \(dtype) needs \(count * size) bytes, data_offsets span \(end - begin)")
            }
            parsed[name] = TensorInfo(dtype: dtype, shape: shape, begin: begin, end: end)
        }
        tensors = parsed
        metadata = meta
    }

    private static func intValue(_ v: Any) -> Int? {
        // NSNumber bridging to Int is exact: 1.5 does not convert.
        v as? Int
    }

    static func elementSize(_ dtype: String) -> Int? {
        switch dtype {
        case "F64", "I64", "U64": return 8
        case "F32", "I32", "U32": return 4
        case "F16", "BF16", "I16", "U16": return 2
        case "I8", "U8", "BOOL", "F8_E4M3", "F8_E5M2": return 1
        default: return nil
        }
    }

    public var tensorNames: [String] { tensors.keys.sorted() }

    public func info(_ name: String) -> TensorInfo? { tensors[name] }

    /// The tensor converted to F32 (F32, F16 and BF16 are accepted), checked against `shape` if given.
    public func floats(_ name: String, shape expected: [Int]? = nil) throws -> [Float] {
        guard let t = tensors[name] else { throw SafeTensorsError.missingTensor(path: path, tensor: name) }
        if let expected, expected != t.shape {
            throw SafeTensorsError.wrongShape(path: path, tensor: name, expected: expected, found: t.shape)
        }
        let count = t.elementCount
        let raw = UnsafeRawBufferPointer(rebasing: file.bytes[(dataStart + t.begin)..<(dataStart + t.end)])
        switch t.dtype {
        case "F32":
            return [Float](unsafeUninitializedCapacity: count) { out, initialized in
                #if _endian(little)
                if let dst = out.baseAddress, let src = raw.baseAddress {
                    UnsafeMutableRawPointer(dst).copyMemory(from: src, byteCount: count * 4)
                }
                #else
                for i in 0..<count {
                    out[i] = Float(bitPattern: UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: i * 4, as: UInt32.self)))
                }
                #endif
                initialized = count
            }
        case "F16":
            return [Float](unsafeUninitializedCapacity: count) { out, initialized in
                for i in 0..<count {
                    out[i] = Self.halfToFloat(UInt16(littleEndian: raw.loadUnaligned(fromByteOffset: i * 2, as: UInt16.self)))
                }
                initialized = count
            }
        case "BF16":
            return [Float](unsafeUninitializedCapacity: count) { out, initialized in
                for i in 0..<count {
                    let h = UInt16(littleEndian: raw.loadUnaligned(fromByteOffset: i * 2, as: UInt16.self))
                    out[i] = Float(bitPattern: UInt32(h) << 16)
                }
                initialized = count
            }
        default:
            throw SafeTensorsError.unsupportedDType(path: path, tensor: name, dtype: t.dtype)
        }
    }

    /// IEEE 754 binary16 to binary32, including subnormals, infinities and NaN.
    static func halfToFloat(_ h: UInt16) -> Float {
        let sign = UInt32(h & 0x8000) << 16
        let exponent = Int((h >> 10) & 0x1F)
        var mantissa = UInt32(h & 0x3FF)
        if exponent == 0x1F {
            return Float(bitPattern: sign | 0x7F80_0000 | (mantissa << 13))
        }
        if exponent == 0 {
            if mantissa == 0 { return Float(bitPattern: sign) }
            // Subnormal: renormalise.
            var e = -1
            repeat { mantissa <<= 1; e += 1 } while mantissa & 0x400 == 0
            mantissa &= 0x3FF
            let exp32 = UInt32(127 - 15 - e)
            return Float(bitPattern: sign | (exp32 << 23) | (mantissa << 13))
        }
        let exp32 = UInt32(exponent - 15 + 127)
        return Float(bitPattern: sign | (exp32 << 23) | (mantissa << 13))
    }
}
