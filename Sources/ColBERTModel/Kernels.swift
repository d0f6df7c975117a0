/// Element-wise kernels of the BERT forward pass, written over SIMD8 so they vectorise; the
/// matrix work goes to BLAS. All pointers are row-major F32 buffers owned by the caller.
enum Kernels {
    typealias V = SIMD8<Float>

    @inline(__always)
    static func load(_ p: UnsafePointer<Float>) -> V {
        UnsafeRawPointer(p).loadUnaligned(as: V.self)
    }

    @inline(__always)
    static func store(_ v: V, _ p: UnsafeMutablePointer<Float>) {
        UnsafeMutableRawPointer(p).storeBytes(of: v, as: V.self)
    }

    /// e^x for every lane: range reduction to r in [-ln2/2, ln2/2], degree-7 Taylor for e^r
    /// (relative error below 1e-7), then scaling by 2^k through the exponent bits.
    @inline(__always)
    static func exp(_ x: V) -> V {
        let xc = x.clamped(lowerBound: V(repeating: -87.0), upperBound: V(repeating: 88.0))
        // Adding 1.5·2^23 rounds to an integer held in the low mantissa bits.
        let shifter = V(repeating: 12_582_912)
        let kShifted = xc * 1.442_695_04 + shifter
        let k = kShifted - shifter
        var r = xc - k * 0.693_359_375
        r = r + k * 2.121_944_4e-4
        var p = V(repeating: 1.0 / 5040)
        p = p * r + 1.0 / 720
        p = p * r + 1.0 / 120
        p = p * r + 1.0 / 24
        p = p * r + 1.0 / 6
        p = p * r + 0.5
        p = p * r + 1
        p = p * r + 1
        let kInt = unsafeBitCast(kShifted, to: SIMD8<Int32>.self) &- unsafeBitCast(shifter, to: SIMD8<Int32>.self)
        let scale = (kInt &+ 127) &<< 23
        return p * unsafeBitCast(scale, to: V.self)
    }

    /// Scalar e^x with the same algorithm, for loop tails.
    @inline(__always)
    static func exp(_ x: Float) -> Float { exp(V(repeating: x))[0] }

    /// 1 + erf(z) for every lane (Abramowitz & Stegun 7.1.26, absolute error ≤ 1.5e-7). For
    /// z < 0 it is computed as erfc(|z|) directly, so there is no cancellation near -1.
    @inline(__always)
    static func onePlusErf(_ z: V) -> V {
        let a = pointwiseMax(z, -z)
        let t = 1 / (1 + 0.327_591_1 * a)
        var poly = V(repeating: 1.061_405_429)
        poly = poly * t - 1.453_152_027
        poly = poly * t + 1.421_413_741
        poly = poly * t - 0.284_496_736
        poly = poly * t + 0.254_829_592
        poly = poly * t
        let tail = poly * exp(-(a * a)) // erfc(|z|)
        var result = 2 - tail
        result.replace(with: tail, where: z .< 0)
        return result
    }

    /// Exact-form GELU, x · ½ · (1 + erf(x / √2)), applied in place after adding `bias` to each row.
    static func biasGELU(_ x: UnsafeMutablePointer<Float>, rows: Int, width: Int, bias: UnsafePointer<Float>) {
        let vecEnd = width & ~7
        for r in 0..<rows {
            let row = x + r * width
            var j = 0
            while j < vecEnd {
                let v = load(row + j) + load(bias + j)
                store(v * 0.5 * onePlusErf(v * 0.707_106_781_186_547_5), row + j)
                j += 8
            }
            while j < width {
                let v = row[j] + bias[j]
                row[j] = (V(repeating: v) * 0.5 * onePlusErf(V(repeating: v * 0.707_106_781_186_547_5)))[0]
                j += 1
            }
        }
    }

    /// Adds `bias` to each row in place.
    static func addBias(_ x: UnsafeMutablePointer<Float>, rows: Int, width: Int, bias: UnsafePointer<Float>) {
        let vecEnd = width & ~7
        for r in 0..<rows {
            let row = x + r * width
            var j = 0
            while j < vecEnd { store(load(row + j) + load(bias + j), row + j); j += 8 }
            while j < width { row[j] += bias[j]; j += 1 }
        }
    }

    /// residual ← LayerNorm(x + bias + residual) per row, with torch's biased variance.
    static func biasResidualLayerNorm(
        _ x: UnsafePointer<Float>, bias: UnsafePointer<Float>, residual: UnsafeMutablePointer<Float>,
        rows: Int, width: Int, gamma: UnsafePointer<Float>, beta: UnsafePointer<Float>, eps: Float
    ) {
        let vecEnd = width & ~7
        for r in 0..<rows {
            let src = x + r * width
            let row = residual + r * width
            var j = 0
            var acc = V()
            while j < vecEnd {
                let v = load(src + j) + load(bias + j) + load(row + j)
                store(v, row + j)
                acc += v
                j += 8
            }
            var sum = acc.sum()
            while j < width { let v = src[j] + bias[j] + row[j]; row[j] = v; sum += v; j += 1 }
            normalizeRow(row, width: width, sum: sum, gamma: gamma, beta: beta, eps: eps)
        }
    }

    /// LayerNorm of each row in place.
    static func layerNorm(_ x: UnsafeMutablePointer<Float>, rows: Int, width: Int,
                          gamma: UnsafePointer<Float>, beta: UnsafePointer<Float>, eps: Float) {
        let vecEnd = width & ~7
        for r in 0..<rows {
            let row = x + r * width
            var acc = V()
            var j = 0
            while j < vecEnd { acc += load(row + j); j += 8 }
            var sum = acc.sum()
            while j < width { sum += row[j]; j += 1 }
            normalizeRow(row, width: width, sum: sum, gamma: gamma, beta: beta, eps: eps)
        }
    }

    @inline(__always)
    private static func normalizeRow(_ row: UnsafeMutablePointer<Float>, width: Int, sum: Float,
                                     gamma: UnsafePointer<Float>, beta: UnsafePointer<Float>, eps: Float) {
        let vecEnd = width & ~7
        let mean = sum / Float(width)
        var acc = V()
        var j = 0
        while j < vecEnd { let d = load(row + j) - mean; acc += d * d; j += 8 }
        var sq = acc.sum()
        while j < width { let d = row[j] - mean; sq += d * d; j += 1 }
        let inv = 1 / (sq / Float(width) + eps).squareRoot()
        j = 0
        while j < vecEnd {
            store((load(row + j) - mean) * inv * load(gamma + j) + load(beta + j), row + j)
            j += 8
        }
        while j < width { row[j] = (row[j] - mean) * inv * gamma[j] + beta[j]; j += 1 }
    }

    /// Row-wise softmax of a `rows × cols` block, over the columns whose `keyMask` is non-zero;
    /// masked columns get probability 0 (what adding finfo.min before softmax gives in torch).
    static func maskedSoftmax(_ s: UnsafeMutablePointer<Float>, rows: Int, cols: Int,
                              keyMask: UnsafePointer<Float>, allKeys: Bool) {
        let vecEnd = cols & ~7
        for r in 0..<rows {
            let row = s + r * cols
            var mx = -Float.infinity
            if allKeys {
                var m = V(repeating: -.infinity)
                var j = 0
                while j < vecEnd { m = pointwiseMax(m, load(row + j)); j += 8 }
                mx = m.max()
                while j < cols { mx = Swift.max(mx, row[j]); j += 1 }
            } else {
                for j in 0..<cols where keyMask[j] != 0 { mx = Swift.max(mx, row[j]) }
            }
            var acc = V()
            var j = 0
            while j < vecEnd {
                var e = exp(load(row + j) - mx)
                if !allKeys { e = e * load(keyMask + j) }
                store(e, row + j)
                acc += e
                j += 8
            }
            var sum = acc.sum()
            while j < cols {
                let e = keyMask[j] != 0 ? exp(row[j] - mx) : 0
                row[j] = e
                sum += e
                j += 1
            }
            let inv = 1 / sum
            j = 0
            while j < vecEnd { store(load(row + j) * inv, row + j); j += 8 }
            while j < cols { row[j] *= inv; j += 1 }
        }
    }
}
