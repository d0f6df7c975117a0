import ColBERTCore
import Foundation

/// Vectors as one base64 string (RFC 4648, with padding) of their float32 values, little-endian,
/// row after row: the protocol's `vectors_b64`. A 32 × 128 query is 22 KB of text this way
/// against ~53 KB as decimal numbers, decodes without number parsing, and round-trips every
/// float bit for bit.
enum PackedVectors {
    static func encode(_ values: [Float]) -> String {
        var bytes = [UInt8](repeating: 0, count: values.count * 4)
        bytes.withUnsafeMutableBytes { raw in
            for (i, v) in values.enumerated() {
                raw.storeBytes(of: v.bitPattern.littleEndian, toByteOffset: i * 4, as: UInt32.self)
            }
        }
        return Data(bytes).base64EncodedString()
    }

    /// The rows of `text`; `path` names the field in error messages. Not base64, empty or
    /// non-finite values are `bad_request`; a length that is not whole rows of `dim` values is
    /// `model_mismatch`, as a row of the wrong width is in `vectors`; more than `maxRows` rows
    /// is `too_large`.
    static func decode(_ text: String, dim: Int, path: String, maxRows: Int) throws -> TokenEmbeddings {
        guard let data = Data(base64Encoded: text) else {
            throw BackendError(.badRequest, "'\(path)' is not valid base64 (RFC 4648 alphabet, with padding)")
        }
        guard !data.isEmpty else { throw BackendError(.badRequest, "'\(path)' must not be empty") }
        guard data.count % 4 == 0 else {
            throw BackendError(.badRequest, "'\(path)' holds \(data.count) bytes, not a whole number of float32 values")
        }
        let count = data.count / 4
        guard dim > 0, count % dim == 0 else {
            throw BackendError(.modelMismatch, "'\(path)' holds \(count) values, not whole rows of the served model's \(dim) dimensions")
        }
        try RequestFields.checkQueryRows(count / dim, path: path, limit: maxRows)
        let values = try data.withUnsafeBytes { raw -> [Float] in
            try [Float](unsafeUninitializedCapacity: count) { out, initialized in
                for i in 0..<count {
                    let f = Float(bitPattern: UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: i * 4, as: UInt32.self)))
                    guard f.isFinite else {
                        initialized = i
                        throw BackendError(.badRequest, "'\(path)' row \(i / dim) has a value that is not a finite number")
                    }
                    out[i] = f
                }
                initialized = count
            }
        }
        return TokenEmbeddings(tokenIds: [Int32](repeating: 0, count: count / dim), vectors: values, dim: dim)
    }
}
