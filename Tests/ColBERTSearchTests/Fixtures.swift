import ColBERTCore
@testable import ColBERTSearch

/// Small random data with random data vectors as centroids, and brute-force MaxSim references.
struct Fixture {
    let dim: Int
    let vectors: [Float]
    let lengths: [Int]
    let ids: [UInt32]
    let centroids: [Float]
    let index: InMemoryIndex
    let queries: [TokenEmbeddings]

    init(documents: Int = 40, dim: Int = 16, nbits: Int = 2, centroidCount: Int = 8, queries: Int = 4,
         queryTokens: Int = 5, ids: [UInt32]? = nil, seed: UInt64 = 1) throws {
        var g = SplitMix64(seed: seed)
        self.dim = dim
        var lengths: [Int] = []
        for _ in 0..<documents { lengths.append(2 + Int(g.next() % 10)) }
        let total = lengths.reduce(0, +)
        var v = (0..<(total * dim)).map { _ in Float(g.nextGaussian()) }
        VectorMath.normalizeRows(&v, dim: dim)
        var c: [Float] = []
        for _ in 0..<centroidCount {
            let t = Int(g.next() % UInt64(max(total, 1)))
            c += total > 0 ? Array(v[(t * dim)..<((t + 1) * dim)]) : (0..<dim).map { _ in Float(g.nextGaussian()) }
        }
        // Codec trained on residuals against the nearest centroid.
        var residuals: [Float] = []
        for t in 0..<total {
            var best = 0, bestScore = -Float.infinity
            for k in 0..<centroidCount {
                var s: Float = 0
                for d in 0..<dim { s += v[t * dim + d] * c[k * dim + d] }
                if s > bestScore { bestScore = s; best = k }
            }
            for d in 0..<dim { residuals.append(v[t * dim + d] - c[best * dim + d]) }
        }
        let codec = try ResidualCodec.train(dim: dim, nbits: nbits, residuals: residuals.isEmpty ? [0, 1] : residuals)
        self.vectors = v
        self.lengths = lengths
        self.ids = ids ?? (0..<documents).map { UInt32($0) }
        self.centroids = c
        self.index = try InMemoryIndex(vectors: v, documentLengths: lengths, centroids: c, codec: codec, documentIds: self.ids)
        var qs: [TokenEmbeddings] = []
        for _ in 0..<queries {
            var q = (0..<(queryTokens * dim)).map { _ in Float(g.nextGaussian()) }
            VectorMath.normalizeRows(&q, dim: dim)
            qs.append(TokenEmbeddings(tokenIds: [Int32](repeating: 0, count: queryTokens), vectors: q, dim: dim))
        }
        self.queries = qs
    }

    /// Decompressed tokens (centroid id, vector) of every live document, read through the snapshot.
    func decoded(normalize: Bool) throws -> [(id: UInt32, centroids: [Int], tokens: [[Float]])] {
        var out: [(UInt32, [Int], [[Float]])] = []
        let codec = index.codec
        try index.forEachDocument { id, view in
            var toks: [[Float]] = []
            var cs: [Int] = []
            for j in 0..<view.count {
                let c = Int(view.centroidId(j))
                var o = [Float](repeating: 0, count: dim)
                centroids.withUnsafeBufferPointer { cp in
                    codec.decode(codes: view.code(j), centroid: cp.baseAddress! + c * dim, into: &o, normalize: normalize)
                }
                toks.append(o)
                cs.append(c)
            }
            out.append((id, cs, toks))
        }
        return out
    }

    static func dot(_ a: ArraySlice<Float>, _ b: [Float]) -> Float {
        var s: Float = 0
        for (x, y) in zip(a, b) { s += x * y }
        return s
    }

    /// Brute-force MaxSim of every document, sorted in result order. `probed(i, c)` restricts
    /// query token i to tokens in clusters c it probes, imputing `missing[i]` otherwise (docs
    /// with no probed token at all are dropped).
    func bruteForce(_ q: TokenEmbeddings, normalize: Bool, allowed: Set<UInt32>? = nil,
                    probed: ((Int, Int) -> Bool)? = nil, missing: [Float]? = nil) throws -> [ScoredDocument] {
        var out: [ScoredDocument] = []
        for (id, cs, toks) in try decoded(normalize: normalize) {
            if let a = allowed, !a.contains(id) { continue }
            guard !toks.isEmpty else { continue }
            var total: Float = 0
            var any = false
            for i in 0..<q.count {
                let qi = q.vectors[(i * dim)..<((i + 1) * dim)]
                var m = -Float.infinity
                for (j, t) in toks.enumerated() where probed?(i, cs[j]) ?? true {
                    m = max(m, Fixture.dot(qi, t))
                }
                if m == -Float.infinity { total += missing?[i] ?? 0 } else { total += m; any = true }
            }
            if any { out.append(ScoredDocument(docId: id, score: total)) }
        }
        return out.sorted(by: ScoredDocument.ranksBefore)
    }
}

func sameResults(_ a: [ScoredDocument], _ b: [ScoredDocument], tolerance: Float = 1e-4) -> Bool {
    guard a.count == b.count else { return false }
    // Scores agree pairwise; ids agree except where near-ties may swap.
    for (x, y) in zip(a, b) where abs(x.score - y.score) > tolerance { return false }
    return Set(a.map(\.docId)) == Set(b.map(\.docId))
}
