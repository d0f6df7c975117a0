import CKernels

/// The inner loop of exact MaxSim: per query row, the best dot product over a document's
/// token vectors. One fused pass (AVX2/FMA when the CPU has it, picked at run time) instead of
/// a small GEMM whose packing, zeroing and score matrix cost more than its arithmetic at the
/// sizes of one document.
public enum MaxSimKernel {
    /// `rowMax[i] = max_j query_i · documents_j` for `rows` query rows and `count` document
    /// rows of `dim` floats each (row-major). Does nothing when `rows` or `count` is 0.
    /// Where the C kernel has no vector path (no AVX2, `COLBERT_NO_AVX2` set, or a dim that is
    /// not a multiple of 8) the dot products come from one BLAS GEMM instead.
    public static func rowMaxima(query: UnsafePointer<Float>, rows: Int, documents: UnsafePointer<Float>,
                                 count: Int, dim: Int, into rowMax: UnsafeMutablePointer<Float>) {
        guard rows > 0, count > 0, dim > 0 else { return }
        precondition(rows <= Int(Int32.max) && count <= Int(Int32.max) && dim <= Int(Int32.max))
        if ck_maxsim_rows(query, Int32(rows), documents, Int32(count), Int32(dim), rowMax) != 0 { return }
        withUnsafeTemporaryAllocation(of: Float.self, capacity: rows * count) { scores in
            let s = scores.baseAddress!
            BLAS.sgemm(transB: true, m: rows, n: count, k: dim, a: query, lda: dim, b: documents, ldb: dim, c: s, ldc: count)
            for r in 0..<rows {
                let row = s + r * count
                var m = row[0]
                for j in 1..<count where row[j] > m { m = row[j] }
                rowMax[r] = m
            }
        }
    }

    /// Decompresses and L2-normalises `count` tokens into `out` (`count × dim` floats): row j is
    /// `normalise(centroids[centroidIds[j]] + residual(codes[j]))`, the residual of code byte b
    /// being `expansion[b * dimsPerByte ..< (b + 1) * dimsPerByte]`. `centroidIds` holds
    /// `count` little-endian UInt32 (any alignment), `codes` `count × bytesPerCode` bytes.
    @inlinable
    public static func decodeNormalized(codes: UnsafeRawPointer, bytesPerCode: Int, centroidIds: UnsafeRawPointer,
                                        centroids: UnsafePointer<Float>, expansion: UnsafePointer<Float>,
                                        dimsPerByte: Int, count: Int, into out: UnsafeMutablePointer<Float>) {
        guard count > 0 else { return }
        precondition(count <= Int(Int32.max) && bytesPerCode <= Int(Int32.max) && (1...8).contains(dimsPerByte))
        ck_decode_normalized(codes.assumingMemoryBound(to: UInt8.self), Int32(bytesPerCode),
                             centroidIds.assumingMemoryBound(to: UInt8.self), centroids, expansion,
                             Int32(dimsPerByte), Int32(count), out)
    }
}
