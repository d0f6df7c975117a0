/// Element-wise kernels of the BERT forward pass. The matrix work goes to BLAS.
///
/// They are plain scalar loops over pointers on purpose: element-wise loops without calls are
/// auto-vectorised in release builds, and unlike SIMD-typed code they stay usable in debug builds
/// (where the parity tests run). Reductions keep four partial sums to break the dependency chain.
enum Kernels {
    /// e^x: range reduction to r in [-ln2/2, ln2/2], degree-7 Taylor series for e^r (relative
    /// error below 1e-7), then scaling by 2^k through the exponent bits. Branch-free, so loops
    /// calling it vectorise.
    @inline(__always)
    static func exp(_ x: Float) -> Float {
        let xc = Swift.min(Swift.max(x, -87), 88)
        // Adding 1.5·2^23 rounds to an integer held in the low mantissa bits.
        let shifter: Float = 12_582_912
        let kShifted = xc * 1.442_695_04 + shifter
        let k = kShifted - shifter
        let r = (xc - k * 0.693_359_375) + k * 2.121_944_4e-4
        var p: Float = 1.0 / 5040
        p = p * r + 1.0 / 720
        p = p * r + 1.0 / 120
        p = p * r + 1.0 / 24
        p = p * r + 1.0 / 6
        p = p * r + 0.5
        p = p * r + 1
        p = p * r + 1
        let kInt = Int32(bitPattern: kShifted.bitPattern) &- Int32(bitPattern: shifter.bitPattern)
        return p * Float(bitPattern: UInt32(bitPattern: (kInt &+ 127) &<< 23))
    }

    /// GELU with the exact (erf) form, x · ½ · (1 + erf(x / √2)). erf uses Abramowitz & Stegun
    /// 7.1.26 (absolute error ≤ 1.5e-7); for x < 0 the term 1 + erf is erfc(|z|), computed
    /// directly, so there is no cancellation.
    @inline(__always)
    static func gelu(_ x: Float) -> Float {
        let z = x * 0.707_106_781_186_547_5
        let a = Swift.max(z, -z)
        let t = 1 / (1 + 0.327_591_1 * a)
        var poly: Float = 1.061_405_429
        poly = poly * t - 1.453_152_027
        poly = poly * t + 1.421_413_741
        poly = poly * t - 0.284_496_736
        poly = poly * t + 0.254_829_592
        let erfcA = poly * t * exp(-(a * a))
        let onePlusErf = z < 0 ? erfcA : 2 - erfcA
        return x * 0.5 * onePlusErf
    }

    /// GELU(x + bias) in place, row by row.
    static func biasGELU(_ x: UnsafeMutablePointer<Float>, rows: Int, width: Int, bias: UnsafePointer<Float>) {
        for r in 0..<rows {
            let row = x + r * width
            for j in 0..<width { row[j] = gelu(row[j] + bias[j]) }
        }
    }

    /// GELU in place over `count` contiguous values.
    static func gelu(_ x: UnsafeMutablePointer<Float>, count: Int) {
        for j in 0..<count { x[j] = gelu(x[j]) }
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

    /// Largest value; `a > b ? a : b` with four partial maxima so the loop compiles to packed max
    /// instructions (Swift.max's NaN handling keeps it scalar).
    @inline(__always)
    static func maximum(_ p: UnsafePointer<Float>, _ n: Int) -> Float {
        var m0 = -Float.infinity, m1 = m0, m2 = m0, m3 = m0
        var j = 0
        while j + 4 <= n {
            m0 = p[j] > m0 ? p[j] : m0; m1 = p[j + 1] > m1 ? p[j + 1] : m1
            m2 = p[j + 2] > m2 ? p[j + 2] : m2; m3 = p[j + 3] > m3 ? p[j + 3] : m3
            j += 4
        }
        while j < n { m0 = p[j] > m0 ? p[j] : m0; j += 1 }
        m0 = m1 > m0 ? m1 : m0; m2 = m3 > m2 ? m3 : m2
        return m2 > m0 ? m2 : m0
    }

    /// Largest value among the columns whose mask is non-zero.
    @inline(__always)
    static func maskedMaximum(_ p: UnsafePointer<Float>, _ n: Int, _ mask: UnsafePointer<Float>) -> Float {
        var m = -Float.infinity
        for j in 0..<n {
            let v = mask[j] != 0 ? p[j] : -Float.infinity
            m = v > m ? v : m
        }
        return m
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
        for r in 0..<rows {
            let row = s + r * cols
            let mx = allKeys ? maximum(row, cols) : maskedMaximum(row, cols, keyMask)
            if allKeys {
                for j in 0..<cols { row[j] = exp(row[j] - mx) }
            } else {
                for j in 0..<cols { row[j] = exp(row[j] - mx) * keyMask[j] }
            }
            let inv = 1 / sum(row, cols)
            for j in 0..<cols { row[j] *= inv }
        }
    }
}
