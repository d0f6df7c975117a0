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
    private(set) var scores = Buffer()   // [workers, n, n] for the longest sequence
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

    func prepare(tokens t: Int, maxLength n: Int, config c: BertConfig, denseWidth: Int, workers: Int)
        -> (hidden: UnsafeMutablePointer<Float>, qkv: UnsafeMutablePointer<Float>, context: UnsafeMutablePointer<Float>,
            intermediate: UnsafeMutablePointer<Float>, scores: UnsafeMutablePointer<Float>, output: UnsafeMutablePointer<Float>) {
        let wide = max(c.intermediateSize, denseWidth, c.hiddenSize)
        return (hidden.reserve(t * c.hiddenSize), qkv.reserve(t * 3 * c.hiddenSize), context.reserve(t * max(c.hiddenSize, denseWidth)),
                intermediate.reserve(t * wide), scores.reserve(n * n * max(1, workers)), output.reserve(t * max(denseWidth, 1)))
    }

    deinit {
        hidden.free(); qkv.free(); context.free(); intermediate.free(); scores.free(); output.free()
    }
}

/// BERT encoder plus the ColBERT projection head, run in F32 over packed batches.
struct BertModel: Sendable {
    let weights: BertWeights
    let dense: [DenseWeights]
    /// Worker threads of one forward pass (BLAS itself is expected to run single-threaded).
    var split = WorkSplit(workers: 1)

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
        let buf = ws.prepare(tokens: max(t, 1), maxLength: max(maxLen, 1), config: c, denseWidth: maxDenseWidth, workers: split.workers)
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
            runLayer(layer, batch: batch, x: x, buf: buf, maxLength: max(maxLen, 1))
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
                split.linear(m: k, n: d.outFeatures, k: width, a: src, lda: width, w: w.baseAddress!, ldw: width,
                             c: dst, ldc: d.outFeatures)
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
              intermediate: UnsafeMutablePointer<Float>, scores: UnsafeMutablePointer<Float>, output: UnsafeMutablePointer<Float>),
        maxLength: Int
    ) {
        let c = config
        let t = batch.tokenCount
        let h = c.hiddenSize, inter = c.intermediateSize
        let heads = c.headCount, dh = c.headDim
        let h3 = 3 * h
        let scale = 1 / Float(dh).squareRoot()
        let split = self.split
        let eps = c.layerNormEps

        // Q, K, V for every token in one GEMM; the bias is pre-filled so BLAS accumulates onto it.
        l.qkvBias.withUnsafeBufferPointer { b in
            let qkv = SendableMutablePointer(buf.qkv), bias = SendablePointer(b.baseAddress!)
            split.rows(t, minRows: 64) { r0, r1 in Kernels.fillRows(qkv.p + r0 * h3, rows: r1 - r0, width: h3, with: bias.p) }
        }
        l.qkvWeight.withUnsafeBufferPointer { w in
            split.linear(m: t, n: h3, k: h, a: x, lda: h, w: w.baseAddress!, ldw: h, beta: 1, c: buf.qkv, ldc: h3)
        }

        // Attention, per (sequence, head); each worker has its own scores block.
        batch.keyMask.withUnsafeBufferPointer { maskBuf in
            let mask = SendablePointer(maskBuf.baseAddress!)
            let qkv = SendableMutablePointer(buf.qkv), ctx = SendableMutablePointer(buf.context)
            let scoresBase = SendableMutablePointer(buf.scores)
            let items = batch.sequenceCount * heads
            let parts = items >= 2 && maxLength * maxLength * dh * items >= 1 << 16 ? min(split.workers, items) : 1
            split.run(parts) { p in
                let scores = scoresBase.p + p * maxLength * maxLength
                var item = p
                while item < items {
                    let s = item / heads, hd = item % heads
                    let start = batch.offsets[s]
                    let n = batch.offsets[s + 1] - start
                    let base = qkv.p + start * h3
                    BLAS.sgemm(transB: true, m: n, n: n, k: dh, alpha: scale, a: base + hd * dh, lda: h3,
                               b: base + h + hd * dh, ldb: h3, c: scores, ldc: n)
                    Kernels.maskedSoftmax(scores, rows: n, cols: n, keyMask: mask.p + start, allKeys: batch.allKeys[s])
                    BLAS.sgemm(m: n, n: dh, k: n, a: scores, lda: n, b: base + 2 * h + hd * dh, ldb: h3,
                               c: ctx.p + start * h + hd * dh, ldc: h)
                    item += parts
                }
            }
        }

        // Attention output projection, residual, LayerNorm.
        l.attentionOutWeight.withUnsafeBufferPointer { w in
            split.linear(m: t, n: h, k: h, a: buf.context, lda: h, w: w.baseAddress!, ldw: h, c: buf.qkv, ldc: h)
        }
        residualNorm(buf.qkv, into: x, rows: t, width: h, bias: l.attentionOutBias,
                     gamma: l.attentionNormGamma, beta: l.attentionNormBeta, eps: eps)

        // Feed-forward with exact GELU, residual, LayerNorm.
        l.intermediateBias.withUnsafeBufferPointer { b in
            let out = SendableMutablePointer(buf.intermediate), bias = SendablePointer(b.baseAddress!)
            split.rows(t, minRows: 64) { r0, r1 in Kernels.fillRows(out.p + r0 * inter, rows: r1 - r0, width: inter, with: bias.p) }
        }
        l.intermediateWeight.withUnsafeBufferPointer { w in
            split.linear(m: t, n: inter, k: h, a: x, lda: h, w: w.baseAddress!, ldw: h, beta: 1, c: buf.intermediate, ldc: inter)
        }
        let out = SendableMutablePointer(buf.intermediate)
        split.rows(t, minRows: 16) { r0, r1 in Kernels.gelu(out.p + r0 * inter, count: (r1 - r0) * inter) }
        l.outputWeight.withUnsafeBufferPointer { w in
            split.linear(m: t, n: h, k: inter, a: buf.intermediate, lda: inter, w: w.baseAddress!, ldw: inter, c: buf.qkv, ldc: h)
        }
        residualNorm(buf.qkv, into: x, rows: t, width: h, bias: l.outputBias,
                     gamma: l.outputNormGamma, beta: l.outputNormBeta, eps: eps)
    }

    /// residual ← LayerNorm(src + bias + residual), rows split across workers.
    private func residualNorm(_ src: UnsafeMutablePointer<Float>, into residual: UnsafeMutablePointer<Float>, rows t: Int, width h: Int,
                              bias: [Float], gamma: [Float], beta: [Float], eps: Float) {
        let split = self.split
        bias.withUnsafeBufferPointer { b in
            gamma.withUnsafeBufferPointer { g in
                beta.withUnsafeBufferPointer { be in
                    let s = SendablePointer(src), r = SendableMutablePointer(residual)
                    let b = SendablePointer(b.baseAddress!), g = SendablePointer(g.baseAddress!), be = SendablePointer(be.baseAddress!)
                    split.rows(t, minRows: 16) { r0, r1 in
                        Kernels.biasResidualLayerNorm(s.p + r0 * h, bias: b.p, residual: r.p + r0 * h, rows: r1 - r0, width: h,
                                                      gamma: g.p, beta: be.p, eps: eps)
                    }
                }
            }
        }
    }
}
