import ColBERTCore
import Foundation

/// Sequences of one forward pass, packed back to back: sequence `s` covers token rows
/// `offsets[s]..<offsets[s + 1]`. `keyMask[t]` is 1 when token `t` may be attended to.
struct PackedBatch {
    var ids: [Int32] = []
    var keyMask: [Float] = []
    var offsets: [Int] = [0]
    /// Per sequence: every key is attended to (lets the softmax skip the mask).
    var allKeys: [Bool] = []

    var sequenceCount: Int { offsets.count - 1 }
    var tokenCount: Int { ids.count }

    mutating func append(ids seq: [Int32], mask: [UInt8]) {
        ids.append(contentsOf: seq)
        var all = true
        for m in mask { keyMask.append(m != 0 ? 1 : 0); if m == 0 { all = false } }
        offsets.append(ids.count)
        allKeys.append(all)
    }
}

/// Scratch memory of one forward pass; grows to the largest batch seen and is then reused.
final class Workspace {
    private(set) var hidden = Buffer()   // [T, H]
    private(set) var qkv = Buffer()      // [T, 3H]
    private(set) var context = Buffer()  // [T, H]
    private(set) var intermediate = Buffer() // [T, I]; also the Dense ping-pong buffers
    private(set) var scores = Buffer()   // [n, n] for the longest sequence
    private(set) var output = Buffer()   // [T, max dense width]

    struct Buffer {
        private(set) var pointer: UnsafeMutablePointer<Float>?
        private(set) var capacity = 0
        mutating func reserve(_ n: Int) -> UnsafeMutablePointer<Float> {
            if n > capacity || pointer == nil {
                pointer?.deallocate()
                let c = max(n, capacity + capacity / 2, 1)
                pointer = UnsafeMutablePointer<Float>.allocate(capacity: c)
                capacity = c
            }
            return pointer!
        }
        func free() { pointer?.deallocate() }
    }

    func prepare(tokens t: Int, maxLength n: Int, config c: BertConfig, denseWidth: Int)
        -> (hidden: UnsafeMutablePointer<Float>, qkv: UnsafeMutablePointer<Float>, context: UnsafeMutablePointer<Float>,
            intermediate: UnsafeMutablePointer<Float>, scores: UnsafeMutablePointer<Float>, output: UnsafeMutablePointer<Float>) {
        let wide = max(c.intermediateSize, denseWidth, c.hiddenSize)
        return (hidden.reserve(t * c.hiddenSize), qkv.reserve(t * 3 * c.hiddenSize), context.reserve(t * max(c.hiddenSize, denseWidth)),
                intermediate.reserve(t * wide), scores.reserve(n * n), output.reserve(t * max(denseWidth, 1)))
    }

    deinit {
        hidden.free(); qkv.free(); context.free(); intermediate.free(); scores.free(); output.free()
    }
}

/// A row range split of one buffer, handed to worker threads (each touches only its own rows).
struct RowSplit: @unchecked Sendable {
    let base: UnsafeMutablePointer<Float>
    let bias: UnsafePointer<Float>
    let rows: Int, width: Int, parts: Int

    func gelu(part: Int) {
        let r0 = rows * part / parts, r1 = rows * (part + 1) / parts
        Kernels.biasGELU(base + r0 * width, rows: r1 - r0, width: width, bias: bias)
    }
}

let parallelism = max(1, ProcessInfo.processInfo.activeProcessorCount)

/// BERT encoder plus the ColBERT projection head, run in F32 over packed batches.
struct BertModel: Sendable {
    let weights: BertWeights
    let dense: [DenseWeights]

    var config: BertConfig { weights.config }
    var outputDim: Int { dense.last?.outFeatures ?? weights.config.hiddenSize }
    var maxDenseWidth: Int { dense.map(\.outFeatures).max() ?? 0 }

    enum ForwardError: Error, CustomStringConvertible {
        case tokenOutOfRange(Int32, vocab: Int)
        case sequenceTooLong(Int, max: Int)
        var description: String {
            switch self {
            case .tokenOutOfRange(let id, let v): return "token id \(id) is outside the embedding table (\(v) rows); tokenizer and weights disagree"
            case .sequenceTooLong(let n, let m): return "sequence of \(n) tokens exceeds max_position_embeddings \(m)"
            }
        }
    }

    /// Runs the transformer over `batch`, then the Dense layers over the rows listed in `keep`
    /// (indices into the packed tokens), and L2-normalises them. Returns `keep.count × outputDim`
    /// floats at the start of the workspace's output buffer.
    func forward(_ batch: PackedBatch, keep: [Int], workspace ws: Workspace) throws -> UnsafeMutablePointer<Float> {
        let c = config
        let t = batch.tokenCount
        let h = c.hiddenSize
        var maxLen = 0
        for s in 0..<batch.sequenceCount { maxLen = max(maxLen, batch.offsets[s + 1] - batch.offsets[s]) }
        guard maxLen <= c.maxPositions else { throw ForwardError.sequenceTooLong(maxLen, max: c.maxPositions) }
        for id in batch.ids where id < 0 || Int(id) >= c.vocabSize { throw ForwardError.tokenOutOfRange(id, vocab: c.vocabSize) }
        let buf = ws.prepare(tokens: max(t, 1), maxLength: max(maxLen, 1), config: c, denseWidth: maxDenseWidth)
        let x = buf.hidden

        // Embeddings: word + position + token type 0, then LayerNorm.
        weights.wordEmbeddings.withUnsafeBufferPointer { word in
            weights.positionEmbeddings.withUnsafeBufferPointer { pos in
                weights.tokenTypeEmbeddings.withUnsafeBufferPointer { type in
                    for s in 0..<batch.sequenceCount {
                        let start = batch.offsets[s]
                        for p in 0..<(batch.offsets[s + 1] - start) {
                            let row = x + (start + p) * h
                            let w = word.baseAddress! + Int(batch.ids[start + p]) * h
                            let q = pos.baseAddress! + p * h
                            let ty = type.baseAddress!
                            for d in 0..<h { row[d] = w[d] + q[d] + ty[d] }
                        }
                    }
                }
            }
        }
        weights.embeddingNormGamma.withUnsafeBufferPointer { g in
            weights.embeddingNormBeta.withUnsafeBufferPointer { b in
                Kernels.layerNorm(x, rows: t, width: h, gamma: g.baseAddress!, beta: b.baseAddress!, eps: c.layerNormEps)
            }
        }

        for layer in weights.layers {
            runLayer(layer, batch: batch, x: x, buf: buf)
        }

        // Gather kept rows, project through the Dense chain, normalise.
        let k = keep.count
        var src = buf.context
        for (i, row) in keep.enumerated() {
            (src + i * h).update(from: x + row * h, count: h)
        }
        var width = h
        for (n, d) in dense.enumerated() {
            let dst = n == dense.count - 1 ? buf.output : (src == buf.context ? buf.intermediate : buf.context)
            d.weight.withUnsafeBufferPointer { w in
                BLAS.sgemm(transB: true, m: k, n: d.outFeatures, k: width, a: src, lda: width,
                           b: w.baseAddress!, ldb: width, c: dst, ldc: d.outFeatures)
            }
            if let bias = d.bias {
                bias.withUnsafeBufferPointer { Kernels.addBias(dst, rows: k, width: d.outFeatures, bias: $0.baseAddress!) }
            }
            src = dst
            width = d.outFeatures
        }
        if dense.isEmpty { buf.output.update(from: src, count: k * width) }
        VectorMath.normalizeRows(buf.output, rows: k, dim: width)
        return buf.output
    }

    private func runLayer(
        _ l: BertLayerWeights, batch: PackedBatch, x: UnsafeMutablePointer<Float>,
        buf: (hidden: UnsafeMutablePointer<Float>, qkv: UnsafeMutablePointer<Float>, context: UnsafeMutablePointer<Float>,
              intermediate: UnsafeMutablePointer<Float>, scores: UnsafeMutablePointer<Float>, output: UnsafeMutablePointer<Float>)
    ) {
        let c = config
        let t = batch.tokenCount
        let h = c.hiddenSize, inter = c.intermediateSize
        let heads = c.headCount, dh = c.headDim
        let h3 = 3 * h
        let scale = 1 / Float(dh).squareRoot()

        // Q, K, V for every token in one GEMM.
        l.qkvWeight.withUnsafeBufferPointer { w in
            BLAS.sgemm(transB: true, m: t, n: h3, k: h, a: x, lda: h, b: w.baseAddress!, ldb: h, c: buf.qkv, ldc: h3)
        }
        l.qkvBias.withUnsafeBufferPointer { Kernels.addBias(buf.qkv, rows: t, width: h3, bias: $0.baseAddress!) }

        // Attention, per sequence and head.
        batch.keyMask.withUnsafeBufferPointer { maskBuf in
            for s in 0..<batch.sequenceCount {
                let start = batch.offsets[s]
                let n = batch.offsets[s + 1] - start
                let base = buf.qkv + start * h3
                for hd in 0..<heads {
                    let q = base + hd * dh
                    let kk = base + h + hd * dh
                    let v = base + 2 * h + hd * dh
                    BLAS.sgemm(transB: true, m: n, n: n, k: dh, alpha: scale, a: q, lda: h3, b: kk, ldb: h3,
                               c: buf.scores, ldc: n)
                    Kernels.maskedSoftmax(buf.scores, rows: n, cols: n, keyMask: maskBuf.baseAddress! + start,
                                          allKeys: batch.allKeys[s])
                    BLAS.sgemm(m: n, n: dh, k: n, a: buf.scores, lda: n, b: v, ldb: h3,
                               c: buf.context + start * h + hd * dh, ldc: h)
                }
            }
        }

        // Attention output projection, residual, LayerNorm.
        l.attentionOutWeight.withUnsafeBufferPointer { w in
            BLAS.sgemm(transB: true, m: t, n: h, k: h, a: buf.context, lda: h, b: w.baseAddress!, ldb: h, c: buf.qkv, ldc: h)
        }
        l.attentionOutBias.withUnsafeBufferPointer { b in
            l.attentionNormGamma.withUnsafeBufferPointer { g in
                l.attentionNormBeta.withUnsafeBufferPointer { be in
                    Kernels.biasResidualLayerNorm(buf.qkv, bias: b.baseAddress!, residual: x, rows: t, width: h,
                                                  gamma: g.baseAddress!, beta: be.baseAddress!, eps: c.layerNormEps)
                }
            }
        }

        // Feed-forward with exact GELU, residual, LayerNorm.
        l.intermediateWeight.withUnsafeBufferPointer { w in
            BLAS.sgemm(transB: true, m: t, n: inter, k: h, a: x, lda: h, b: w.baseAddress!, ldb: h, c: buf.intermediate, ldc: inter)
        }
        l.intermediateBias.withUnsafeBufferPointer { bias in
            // GELU is the largest element-wise cost; split big batches across cores (BLAS is idle here).
            let workers = t >= 256 ? min(parallelism, t / 128) : 1
            let rows = RowSplit(base: buf.intermediate, bias: bias.baseAddress!, rows: t, width: inter, parts: workers)
            if workers > 1 {
                DispatchQueue.concurrentPerform(iterations: workers) { rows.gelu(part: $0) }
            } else {
                rows.gelu(part: 0)
            }
        }
        l.outputWeight.withUnsafeBufferPointer { w in
            BLAS.sgemm(transB: true, m: t, n: h, k: inter, a: buf.intermediate, lda: inter, b: w.baseAddress!, ldb: inter, c: buf.qkv, ldc: h)
        }
        l.outputBias.withUnsafeBufferPointer { b in
            l.outputNormGamma.withUnsafeBufferPointer { g in
                l.outputNormBeta.withUnsafeBufferPointer { be in
                    Kernels.biasResidualLayerNorm(buf.qkv, bias: b.baseAddress!, residual: x, rows: t, width: h,
                                                  gamma: g.baseAddress!, beta: be.baseAddress!, eps: c.layerNormEps)
                }
            }
        }
    }
}
