import CKernels

/// The centroid table in 8-bit integers (one scale per centroid), for choosing a query's probes:
/// scoring every centroid is the largest stage of a one-thread search at 16,384 centroids, and
/// integer multiply-adds (AVX2 `vpmaddubsw`) do twice the work of float FMAs per cycle. Scores
/// come out within ~0.006 of the float ones (rms ~0.001 on unit vectors), so a search takes a few
/// more candidates than it needs from them and re-scores those in F32 (`ck_rescore_best`).
/// Immutable after `init`; safe to share across threads.
public final class QuantizedCentroids: @unchecked Sendable {
    // @unchecked: the buffers are written only in `init` and freed in `deinit`.
    public let centroidCount: Int
    public let dim: Int
    /// `centroidCount` rounded up to 16, the kernel's step.
    public let paddedCount: Int
    private let panels: UnsafeMutableRawBufferPointer
    private let scales: UnsafeMutableBufferPointer<Float>

    /// Indexes below this many centroids score them in F32: the product is already cheap there.
    public static let minimumCentroids = 2048
    /// Candidates taken from the integer scores beyond those a search keeps, before they are
    /// re-scored in F32: on unit vectors the scores' errors (max ~0.006) move a centroid by a few
    /// places at most, so the float best `keep` lie within the integer best `keep + 8`.
    public static let extraCandidates = 8
    /// Most candidates re-scored per token (`ck_rescore_best`); searches keeping more score every
    /// centroid in F32.
    public static let maximumCandidates = Int(CK_RESCORE_MAX_CANDIDATES)

    /// nil when the table cannot be packed (`dim` not a multiple of 4, non-finite values, or
    /// fewer than `minimumCentroids` rows).
    public init?(centroids: UnsafeBufferPointer<Float>, dim: Int) {
        guard dim > 0, dim % 4 == 0, centroids.count % dim == 0, let base = centroids.baseAddress else { return nil }
        let k = centroids.count / dim
        guard k >= Self.minimumCentroids, k <= Int(Int32.max) - 16, centroids.allSatisfy({ $0.isFinite }) else { return nil }
        centroidCount = k
        self.dim = dim
        paddedCount = (k + 15) / 16 * 16
        panels = .allocate(byteCount: Int(ck_i8_panel_bytes(Int32(k), Int32(dim))), alignment: 64)
        scales = .allocate(capacity: paddedCount)
        ck_i8_pack_rows(base, Int32(k), Int32(dim), panels.baseAddress!.assumingMemoryBound(to: UInt8.self), scales.baseAddress!)
    }

    deinit {
        panels.deallocate()
        scales.deallocate()
    }

    /// A query quantized for `scores`: rows padded to a multiple of 4.
    public struct Query {
        public let rows: Int
        let values: [Int8]
        let scales: [Float]
        let offsets: [Int32]

        /// `query` is row-major `rows × dim`, finite.
        public init(_ query: UnsafePointer<Float>, rows: Int, dim: Int) {
            self.rows = rows
            let padded = (rows + 3) / 4 * 4
            var values = [Int8](repeating: 0, count: padded * dim)
            var scales = [Float](repeating: 0, count: padded)
            var offsets = [Int32](repeating: 0, count: padded)
            values.withUnsafeMutableBufferPointer { v in
                scales.withUnsafeMutableBufferPointer { s in
                    offsets.withUnsafeMutableBufferPointer { o in
                        ck_i8_quantize_rows(query, Int32(rows), Int32(dim), v.baseAddress!, s.baseAddress!, o.baseAddress!)
                    }
                }
            }
            self.values = values
            self.scales = scales
            self.offsets = offsets
        }
    }

    /// Approximate scores of `query`'s rows against centroids `columns` (bounds multiples of 16,
    /// within `paddedCount`): `out[r * ldo + c]` for c in `columns`. The same values for any split
    /// of the columns (integer sums).
    public func scores(_ query: Query, columns: Range<Int>, into out: UnsafeMutablePointer<Float>, ldo: Int) {
        scores(query, columns: columns, into: out, ldo: ldo, vectorPath: true)
    }

    /// `vectorPath: false` runs the portable loop (tests compare the two on any CPU this way).
    func scores(_ query: Query, columns: Range<Int>, into out: UnsafeMutablePointer<Float>, ldo: Int, vectorPath: Bool) {
        precondition(columns.lowerBound % 16 == 0 && columns.upperBound % 16 == 0 && columns.upperBound <= paddedCount)
        precondition(query.values.count == (query.rows + 3) / 4 * 4 * dim && ldo >= columns.upperBound)
        guard query.rows > 0, !columns.isEmpty else { return }
        query.values.withUnsafeBufferPointer { v in
            query.scales.withUnsafeBufferPointer { s in
                query.offsets.withUnsafeBufferPointer { o in
                    let kernel = vectorPath ? ck_i8_scores : ck_i8_scores_portable
                    _ = kernel(v.baseAddress!, o.baseAddress!, s.baseAddress!, Int32(query.rows),
                               panels.baseAddress!.assumingMemoryBound(to: UInt8.self), scales.baseAddress!,
                               Int32(columns.lowerBound), Int32(columns.count), Int32(dim), out, ldo)
                }
            }
        }
    }
}
