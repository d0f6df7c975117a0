/// Residual compression of token vectors, as in ColBERTv2/PLAID: a vector is stored as its
/// centroid id plus, per dimension, a `nbits`-bit bucket index of the residual `v - centroid`.
///
/// Packing: the codes of one vector take `bytesPerVector = dim * nbits / 8` bytes. Dimension `d`
/// lives in byte `(d * nbits) / 8`; within a byte the lowest dimension takes the highest bits
/// (MSB first), i.e. its bucket is `(byte >> (8 - nbits - (d * nbits) % 8)) & mask`.
public struct ResidualCodec: Sendable, Equatable {
    public let dim: Int
    public let nbits: Int
    /// `2^nbits - 1` increasing thresholds: bucket(x) = number of cutoffs strictly below x.
    public let bucketCutoffs: [Float]
    /// `2^nbits` reconstruction values, one per bucket.
    public let bucketWeights: [Float]

    public var bucketCount: Int { 1 << nbits }
    public var bytesPerVector: Int { dim * nbits / 8 }
    public var dimsPerByte: Int { 8 / nbits }

    public enum CodecError: Error, Equatable, CustomStringConvertible {
        case unsupportedBits(Int)
        case badDimension(dim: Int, nbits: Int)
        case badTables(String)
        public var description: String {
            switch self {
            case .unsupportedBits(let b): return "nbits must be 1, 2 or 4 (got \(b))"
            case .badDimension(let d, let b): return "dimension \(d) is not a positive multiple of \(8 / max(b, 1)) for \(b)-bit codes"
            case .badTables(let m): return "bad codec tables: \(m)"
            }
        }
    }

    public init(dim: Int, nbits: Int, bucketCutoffs: [Float], bucketWeights: [Float]) throws {
        guard [1, 2, 4].contains(nbits) else { throw CodecError.unsupportedBits(nbits) }
        guard dim > 0, (dim * nbits) % 8 == 0 else { throw CodecError.badDimension(dim: dim, nbits: nbits) }
        guard bucketCutoffs.count == (1 << nbits) - 1 else { throw CodecError.badTables("expected \((1 << nbits) - 1) cutoffs, got \(bucketCutoffs.count)") }
        guard bucketWeights.count == 1 << nbits else { throw CodecError.badTables("expected \(1 << nbits) weights, got \(bucketWeights.count)") }
        guard bucketCutoffs.allSatisfy({ $0.isFinite }), bucketWeights.allSatisfy({ $0.isFinite }) else { throw CodecError.badTables("non-finite value") }
        self.dim = dim
        self.nbits = nbits
        self.bucketCutoffs = bucketCutoffs
        self.bucketWeights = bucketWeights
    }

    /// Trains the bucket tables from residual values (any number of vectors, flattened):
    /// cutoffs are the quantiles at i / 2^b, weights the quantiles at (i + 0.5) / 2^b.
    public static func train(dim: Int, nbits: Int, residuals: [Float]) throws -> ResidualCodec {
        guard [1, 2, 4].contains(nbits) else { throw CodecError.unsupportedBits(nbits) }
        guard !residuals.isEmpty else { throw CodecError.badTables("no residuals to train on") }
        let sorted = residuals.filter { $0.isFinite }.sorted()
        guard !sorted.isEmpty else { throw CodecError.badTables("no finite residuals to train on") }
        let buckets = 1 << nbits
        func quantile(_ q: Double) -> Float {
            // Linear interpolation between closest ranks (torch.quantile's default).
            let pos = q * Double(sorted.count - 1)
            let lo = Int(pos.rounded(.down)), hi = min(lo + 1, sorted.count - 1)
            let frac = Float(pos - Double(lo))
            return sorted[lo] + (sorted[hi] - sorted[lo]) * frac
        }
        let cutoffs = (1..<buckets).map { quantile(Double($0) / Double(buckets)) }
        let weights = (0..<buckets).map { quantile((Double($0) + 0.5) / Double(buckets)) }
        return try ResidualCodec(dim: dim, nbits: nbits, bucketCutoffs: cutoffs, bucketWeights: weights)
    }

    @inlinable
    public func bucket(of x: Float) -> Int {
        var b = 0
        for c in bucketCutoffs where c < x { b += 1 }
        return b
    }

    /// Writes the packed codes of `vector - centroid` into `out` (`bytesPerVector` bytes).
    public func encode(vector: UnsafePointer<Float>, centroid: UnsafePointer<Float>, into out: UnsafeMutablePointer<UInt8>) {
        let per = dimsPerByte
        for p in 0..<bytesPerVector {
            var byte: UInt8 = 0
            for j in 0..<per {
                let d = p * per + j
                let b = bucket(of: vector[d] - centroid[d])
                byte |= UInt8(truncatingIfNeeded: b << (8 - nbits * (j + 1)))
            }
            out[p] = byte
        }
    }

    /// For every byte value b, the bucket weights of the `dimsPerByte` dims it packs, at
    /// `b * dimsPerByte`: decoding is then one table row per code byte (`MaxSimKernel`).
    public func expansionTable() -> [Float] {
        let per = dimsPerByte, mask = (1 << nbits) - 1
        var e = [Float](repeating: 0, count: 256 * per)
        for byte in 0..<256 {
            for j in 0..<per { e[byte * per + j] = bucketWeights[(byte >> (8 - nbits * (j + 1))) & mask] }
        }
        return e
    }

    /// Reconstructs `centroid + weights[bucket]` into `out` (`dim` floats), L2-normalised when asked.
    public func decode(codes: UnsafeRawPointer, centroid: UnsafePointer<Float>, into out: UnsafeMutablePointer<Float>, normalize: Bool = true) {
        let per = dimsPerByte
        let mask = (1 << nbits) - 1
        bucketWeights.withUnsafeBufferPointer { w in
            for p in 0..<bytesPerVector {
                let byte = Int(codes.load(fromByteOffset: p, as: UInt8.self))
                for j in 0..<per {
                    let d = p * per + j
                    let b = (byte >> (8 - nbits * (j + 1))) & mask
                    out[d] = centroid[d] + w[b]
                }
            }
        }
        if normalize { VectorMath.normalizeRows(out, rows: 1, dim: dim) }
    }
}
