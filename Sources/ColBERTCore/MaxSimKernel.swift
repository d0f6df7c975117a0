import CKernels

/// Part `part` of `parts` nearly equal shares of `0..<count`, each starting at a multiple of 16
/// (the packed kernels' block) and the last running to `count`; empty when the share rounds away.
@inlinable
public func blockAlignedShare(part: Int, of parts: Int, count: Int) -> Range<Int> {
    let start = (count * part / parts) & ~15
    let end = part == parts - 1 ? count : (count * (part + 1) / parts) & ~15
    return start..<max(start, end)
}

/// A few rows (a query's token vectors, or the activations of one query in the encoder) laid
/// out once for the AVX2 kernels that multiply them against many other rows: blocks of 16 rows,
/// each stored dimension-major, so a kernel reads 16 rows' values of one dimension with two
/// vector loads (see `ck_pack_query`). Without the vector path the row-major rows are kept
/// instead, for the BLAS fallback.
public struct PackedRows: Sendable {
    public let rows: Int
    public let dim: Int
    @usableFromInline let rowMajor: [Float]
    /// Empty when the CPU has no vector path (the kernels then fall back to BLAS).
    @usableFromInline let packed: [Float]

    /// Whether the kernels run the vector path. Only then does a score not depend on how the
    /// other rows are split between calls (BLAS rounds the tail of a call differently).
    public var splitsExactly: Bool { !packed.isEmpty }

    /// Packs `rows × dim` row-major floats.
    public init(_ query: UnsafePointer<Float>, rows: Int, dim: Int) {
        self.init(query, rows: rows, dim: dim, vectorPath: ck_uses_avx2() != 0)
    }

    /// `vectorPath: false` keeps only the row-major rows, so the kernels take the BLAS path
    /// (tests cover both paths on any CPU this way).
    init(_ query: UnsafePointer<Float>, rows: Int, dim: Int, vectorPath: Bool) {
        precondition(rows >= 0 && dim >= 0 && rows <= Int(Int32.max) && dim <= Int(Int32.max))
        self.rows = rows
        self.dim = dim
        // The packed kernels decline (and the BLAS fallback runs) where the CPU has no AVX2.
        guard rows > 0, dim > 0, vectorPath, ck_uses_avx2() != 0 else {
            rowMajor = Array(UnsafeBufferPointer(start: query, count: rows * dim))
            packed = []
            return
        }
        // The vector path never reads the row-major copy (the encoder packs a 196 KB FFN input
        // per query and layer, so the copy is not free).
        rowMajor = []
        let count = ck_packed_query_floats(Int32(rows), Int32(dim))
        packed = [Float](unsafeUninitializedCapacity: count) { buffer, initialized in
            ck_pack_query(query, Int32(rows), Int32(dim), buffer.baseAddress!)
            initialized = count
        }
    }

    public init(_ query: [Float], rows: Int, dim: Int) {
        precondition(query.count == rows * dim, "query holds \(query.count) values, expected \(rows * dim)")
        self = query.withUnsafeBufferPointer { b in
            guard let base = b.baseAddress else { return PackedRows(emptyWithDim: dim) }
            return PackedRows(base, rows: rows, dim: dim)
        }
    }

    private init(emptyWithDim dim: Int) {
        rows = 0
        self.dim = dim
        rowMajor = []
        packed = []
    }
}

/// The inner loops of exact MaxSim: query rows against a document's decompressed tokens, through
/// an AVX2/FMA kernel (picked at run time) that takes the query packed once, or one BLAS GEMM
/// where the CPU has no vector path (or `COLBERT_NO_AVX2` is set).
public enum MaxSimKernel {
    /// `rowMax[i] = max_j query_i · documents_j` over `count` document rows (row-major). Does
    /// nothing when the query has no rows or `count` is 0.
    /// With `scales`, `rowMax[i] = max_j scales[j] · (query_i · documents_j)`: MaxSim over rows
    /// from `decodeResiduals`, their inverse norms applied to the dot products.
    public static func rowMaxima(_ query: PackedRows, documents: UnsafePointer<Float>, count: Int,
                                 scales: UnsafePointer<Float>? = nil, into rowMax: UnsafeMutablePointer<Float>) {
        let rows = query.rows, dim = query.dim
        guard rows > 0, count > 0, dim > 0 else { return }
        precondition(count <= Int(Int32.max))
        let done = query.packed.withUnsafeBufferPointer { p in
            p.isEmpty ? false : ck_maxsim_packed(p.baseAddress!, Int32(rows), documents, Int32(count), Int32(dim),
                                                 scales, rowMax) != 0
        }
        if done { return }
        withUnsafeTemporaryAllocation(of: Float.self, capacity: rows * count) { scores in
            let s = scores.baseAddress!
            query.rowMajor.withUnsafeBufferPointer { q in
                BLAS.sgemm(transB: true, m: rows, n: count, k: dim, a: q.baseAddress!, lda: dim, b: documents, ldb: dim, c: s, ldc: count)
            }
            for r in 0..<rows {
                let row = s + r * count
                if let scales { for j in 0..<count { row[j] *= scales[j] } }
                var m = row[0]
                for j in 1..<count where row[j] > m { m = row[j] }
                rowMax[r] = m
            }
        }
    }

    /// Whether `maxSimOfRuns` has a vector path for this codec on this CPU.
    public static func canScoreRuns(codec: ResidualCodec, query: PackedRows) -> Bool {
        query.splitsExactly && codec.bytesPerVector * codec.dimsPerByte == query.dim
            && ck_maxsim_runs_available(Int32(codec.bytesPerVector), Int32(codec.dimsPerByte)) != 0
    }

    /// Raises `rowMax[owner * stride + i]` to every token's normalised score with query row i,
    /// for the runs given, each token decompressed once: the same values as `decodeResiduals`
    /// then `rowMaxima(..., scales:)` per document. `stride` must be at least `query.rows`
    /// rounded up to 16. Only where `canScoreRuns` holds.
    public static func maxSimOfRuns(_ query: PackedRows, runs: UnsafeBufferPointer<ck_token_run>, codec: ResidualCodec,
                                    centroids: UnsafePointer<Float>, expansion: UnsafePointer<Float>,
                                    rowMax: UnsafeMutablePointer<Float>, stride: Int) {
        precondition(canScoreRuns(codec: codec, query: query), "no runs kernel for this codec on this CPU")
        precondition(stride >= (query.rows + 15) / 16 * 16)
        guard let first = runs.baseAddress, !runs.isEmpty else { return }
        query.packed.withUnsafeBufferPointer { p in
            _ = ck_maxsim_runs(p.baseAddress!, Int32(query.rows), first, runs.count, Int32(codec.bytesPerVector),
                               Int32(codec.dimsPerByte), centroids, expansion, rowMax, stride)
        }
    }

    /// Decompresses `count` tokens into `out` (`count × dim` floats): row j is
    /// `centroids[centroidIds[j]] + residual(codes[j])`, the residual of code byte b being
    /// `expansion[b * dimsPerByte ..< (b + 1) * dimsPerByte]`, and `inverseNorms[j]` is 1 / the
    /// row's norm: `rowMaxima(..., scales: inverseNorms)` then scores the normalised tokens.
    /// `centroidIds` holds `count` little-endian UInt32 (any alignment), `codes` `count ×
    /// bytesPerCode` bytes.
    @inlinable
    public static func decodeResiduals(codes: UnsafeRawPointer, bytesPerCode: Int, centroidIds: UnsafeRawPointer,
                                       centroids: UnsafePointer<Float>, expansion: UnsafePointer<Float>,
                                       dimsPerByte: Int, count: Int, into out: UnsafeMutablePointer<Float>,
                                       inverseNorms: UnsafeMutablePointer<Float>) {
        guard count > 0 else { return }
        precondition(count <= Int(Int32.max) && bytesPerCode <= Int(Int32.max) && (1...8).contains(dimsPerByte))
        ck_decode_residuals(codes.assumingMemoryBound(to: UInt8.self), Int32(bytesPerCode),
                            centroidIds.assumingMemoryBound(to: UInt8.self), centroids, expansion,
                            Int32(dimsPerByte), Int32(count), out, inverseNorms)
    }

    /// Scores of one cluster's `count` tokens against several query rows, each token decompressed
    /// once for all of them: `out[i * ldo + t] = bases[i] + queries[i] · residual(codes[t])`, with
    /// `bases[i]` the query row's score with the centroid; with `normalize`,
    /// `queries[i] · v / ‖v‖` for `v = centroid + residual(codes[t])` (bases unused). A token's
    /// score depends only on its code and the query row, not on `count` or its place.
    @inlinable
    public static func clusterScores(codes: UnsafeRawPointer, codec: ResidualCodec, count: Int, weights: UnsafePointer<Float>,
                                     centroid: UnsafePointer<Float>, queries: UnsafePointer<UnsafePointer<Float>?>,
                                     bases: UnsafePointer<Float>, queryCount: Int, normalize: Bool,
                                     into out: UnsafeMutablePointer<Float>, ldo: Int) {
        guard count > 0, queryCount > 0 else { return }
        precondition(count <= Int(Int32.max) && queryCount <= Int(Int32.max) && ldo >= count
                     && [1, 2, 4].contains(codec.nbits) && codec.bytesPerVector <= Int(Int32.max))
        ck_cluster_scores(codes.assumingMemoryBound(to: UInt8.self), Int32(codec.bytesPerVector), Int32(codec.nbits), Int32(count),
                          weights, centroid, queries, bases, Int32(queryCount), normalize ? 1 : 0, out, ldo)
    }
}

/// A query's fast-scan tables (`ck_fastscan_tables`): per query row, the 8-bit contributions of
/// every code nibble to its dot product with a residual, a step and an offset. Approximate
/// residual scores through them cost a few byte shuffles per token instead of a decompression.
public final class FastScanTables: @unchecked Sendable {
    // @unchecked: written only in init; the tables' memory is fixed, so the pointers handed out
    // stay valid as long as the object lives.
    public let rows: Int
    /// Bytes of one row's table.
    public let stride: Int
    /// Per row: the size of one table step, and the sum of the positions' smallest entries
    /// (add it to the row's centroid score).
    public let scales: [Float]
    public let offsets: [Float]
    private let storage: UnsafeMutablePointer<UInt8>

    /// Whether codes of this codec can be scored by fast-scan: whole 32-byte chunks, up to 128
    /// bytes (128 to 512 dims at 2 bits, 64 to 256 at 4, 256 to 1,024 at 1).
    public static func supports(_ codec: ResidualCodec) -> Bool {
        ck_fastscan_available(Int32(codec.bytesPerVector)) != 0
    }

    /// `query` holds `rows` rows of `codec.dim` floats. nil when the codec is not supported.
    public init?(query: UnsafePointer<Float>, rows: Int, codec: ResidualCodec) {
        guard Self.supports(codec), rows >= 0, codec.bucketWeights.count == codec.bucketCount else { return nil }
        let bpc = Int32(codec.bytesPerVector)
        self.rows = rows
        let stride = ck_fastscan_table_bytes(bpc)
        let storage = UnsafeMutablePointer<UInt8>.allocate(capacity: max(1, rows * stride))
        var scales = [Float](repeating: 0, count: rows), offsets = [Float](repeating: 0, count: rows)
        codec.bucketWeights.withUnsafeBufferPointer { w in
            for i in 0..<rows {
                ck_fastscan_tables(query + i * codec.dim, bpc, Int32(codec.nbits), w.baseAddress!,
                                   storage + i * stride, &scales[i], &offsets[i])
            }
        }
        self.stride = stride
        self.storage = storage
        self.scales = scales
        self.offsets = offsets
    }

    deinit { storage.deallocate() }

    /// Row i's table; valid while `self` lives.
    public func table(_ i: Int) -> UnsafePointer<UInt8> {
        precondition(i >= 0 && i < rows)
        return UnsafePointer(storage + i * stride)
    }
}

extension MaxSimKernel {
    /// Approximate scores of one cluster's `count` tokens against several query rows through their
    /// fast-scan tables: `out[i * ldo + t] = bases[i] + scales[i] * Σ table entries`, within
    /// `scales[i] * bytesPerVector` of `clusterScores`' exact residual dot product when `bases[i]`
    /// is the centroid score plus the row's table offset. `tables[i]` points at row i's table.
    @inlinable
    public static func fastScanScores(codes: UnsafeRawPointer, codec: ResidualCodec, count: Int,
                                      tables: UnsafePointer<UnsafePointer<UInt8>?>, scales: UnsafePointer<Float>,
                                      bases: UnsafePointer<Float>, queryCount: Int,
                                      into out: UnsafeMutablePointer<Float>, ldo: Int) {
        guard count > 0, queryCount > 0 else { return }
        precondition(count <= Int(Int32.max) && queryCount <= Int(Int32.max) && ldo >= count
                     && FastScanTables.supports(codec))
        ck_fastscan_scores(codes.assumingMemoryBound(to: UInt8.self), Int32(codec.bytesPerVector), Int32(count),
                           tables, scales, bases, Int32(queryCount), out, ldo)
    }
}

extension PackedRows {
    /// `out[i * ldo + j] = self_i · others_j` (or `+=` when `accumulate`) for `count` rows of
    /// `dim` floats (row-major): a query's scores against every centroid, or a Linear layer
    /// `A · Wᵀ` for few rows of A.
    public func dotProducts(with others: UnsafePointer<Float>, count: Int, into out: UnsafeMutablePointer<Float>,
                            ldo: Int, accumulate: Bool = false) {
        guard rows > 0, count > 0, dim > 0 else { return }
        precondition(count <= Int(Int32.max) && ldo >= count)
        let done = packed.withUnsafeBufferPointer { p in
            p.isEmpty ? false : ck_scores_packed(p.baseAddress!, Int32(rows), others, Int32(count), Int32(dim),
                                                 out, ldo, accumulate ? 1 : 0) != 0
        }
        if done { return }
        rowMajor.withUnsafeBufferPointer { q in
            BLAS.sgemm(transB: true, m: rows, n: count, k: dim, a: q.baseAddress!, lda: dim, b: others, ldb: dim,
                       beta: accumulate ? 1 : 0, c: out, ldc: ldo)
        }
    }
}

/// Bounded top-k selection over a row of scores (a query token's centroid scores).
public enum TopScores {
    /// The best `keep` of `count` scores in (score desc, index asc) order, their values into
    /// `scores` and indices into `ids` (`keep` entries of room each); returns how many. Once
    /// `keep` are held, a score enters only when above the worst kept one.
    @inlinable
    public static func select(_ s: UnsafePointer<Float>, count: Int, keep: Int,
                              scores: UnsafeMutablePointer<Float>, ids: UnsafeMutablePointer<Int32>) -> Int {
        guard keep > 0, count > 0 else { return 0 }
        precondition(count <= Int(Int32.max) && keep <= Int(Int32.max))
        return Int(ck_select_top(s, Int32(count), Int32(keep), scores, ids))
    }
}
