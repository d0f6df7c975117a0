import CKernels

/// Element-wise kernels of the BERT forward pass. The matrix work goes to BLAS.
///
/// The ones with a transcendental function (GELU, softmax) are C kernels with an AVX2 path
/// (`CKernels`); the rest are plain loops over pointers, auto-vectorised in release builds.
/// Reductions keep four partial sums to break the dependency chain.
enum Kernels {
    /// Exact-form GELU in place over `count` contiguous values (`ck_gelu`: erf by Abramowitz &
    /// Stegun 7.1.26, absolute error ≤ 1.5e-7; AVX2 when the CPU has it).
    static func gelu(_ x: UnsafeMutablePointer<Float>, count: Int) {
        ck_gelu(x, count)
    }

    /// Copies `bias` into each row (the starting value of a GEMM run with beta = 1).
    static func fillRows(_ x: UnsafeMutablePointer<Float>, rows: Int, width: Int, with bias: UnsafePointer<Float>) {
        for r in 0..<rows { (x + r * width).update(from: bias, count: width) }
    }

    /// Adds `bias` to each row in place.
    static func addBias(_ x: UnsafeMutablePointer<Float>, rows: Int, width: Int, bias: UnsafePointer<Float>) {
        for r in 0..<rows {
            let row = x + r * width
            for j in 0..<width { row[j] += bias[j] }
        }
    }

    @inline(__always)
    static func sum(_ p: UnsafePointer<Float>, _ n: Int) -> Float {
        var s0: Float = 0, s1: Float = 0, s2: Float = 0, s3: Float = 0
        var j = 0
        while j + 4 <= n { s0 += p[j]; s1 += p[j + 1]; s2 += p[j + 2]; s3 += p[j + 3]; j += 4 }
        while j < n { s0 += p[j]; j += 1 }
        return (s0 + s1) + (s2 + s3)
    }

    /// residual ← LayerNorm(x + bias + residual) per row, with torch's biased variance.
    static func biasResidualLayerNorm(
        _ x: UnsafePointer<Float>, bias: UnsafePointer<Float>, residual: UnsafeMutablePointer<Float>,
        rows: Int, width: Int, gamma: UnsafePointer<Float>, beta: UnsafePointer<Float>, eps: Float
    ) {
        for r in 0..<rows {
            let src = x + r * width
            let row = residual + r * width
            for j in 0..<width { row[j] += src[j] + bias[j] }
            normalizeRow(row, width: width, gamma: gamma, beta: beta, eps: eps)
        }
    }

    /// LayerNorm of each row in place.
    static func layerNorm(_ x: UnsafeMutablePointer<Float>, rows: Int, width: Int,
                          gamma: UnsafePointer<Float>, beta: UnsafePointer<Float>, eps: Float) {
        for r in 0..<rows { normalizeRow(x + r * width, width: width, gamma: gamma, beta: beta, eps: eps) }
    }

    @inline(__always)
    private static func normalizeRow(_ row: UnsafeMutablePointer<Float>, width: Int,
                                     gamma: UnsafePointer<Float>, beta: UnsafePointer<Float>, eps: Float) {
        let mean = sum(row, width) / Float(width)
        var s0: Float = 0, s1: Float = 0, s2: Float = 0, s3: Float = 0
        var j = 0
        while j + 4 <= width {
            let d0 = row[j] - mean, d1 = row[j + 1] - mean, d2 = row[j + 2] - mean, d3 = row[j + 3] - mean
            s0 += d0 * d0; s1 += d1 * d1; s2 += d2 * d2; s3 += d3 * d3
            j += 4
        }
        while j < width { let d = row[j] - mean; s0 += d * d; j += 1 }
        let variance = ((s0 + s1) + (s2 + s3)) / Float(width)
        let inv = 1 / (variance + eps).squareRoot()
        for j in 0..<width { row[j] = (row[j] - mean) * inv * gamma[j] + beta[j] }
    }

    /// Row-wise softmax of a `rows × cols` block over the columns whose `keyMask` is 1; masked
    /// columns get probability 0 (what adding finfo.min before the softmax gives in torch).
    static func maskedSoftmax(_ s: UnsafeMutablePointer<Float>, rows: Int, cols: Int,
                              keyMask: UnsafePointer<Float>, allKeys: Bool) {
        precondition(rows <= Int(Int32.max) && cols <= Int(Int32.max))
        ck_softmax_rows(s, Int32(rows), Int32(cols), allKeys ? nil : keyMask)
    }
}
