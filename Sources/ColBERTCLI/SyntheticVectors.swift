import ColBERTCore

/// Deterministic clustered unit vectors for the benchmarks (no model needed): `topics` random unit
/// directions from a seed; each document's tokens are unit vectors near a few of them.
///
/// Document `n` is drawn from its own generator seeded by `n`, so any document can be made alone
/// and again later: `index bench` makes one per document text, `bench synth` makes them in order
/// for its index and again for its queries (an index written earlier matches the queries of a
/// later run with the same seed).
struct SyntheticVectors: Sendable {
    /// How the raw coordinates of the topic centres are drawn (before normalisation).
    enum CenterDistribution: Sendable {
        /// Standard normal: directions uniform on the sphere.
        case gaussian
        /// Uniform in [-1, 1): cheaper, slightly biased towards the cube's corners.
        case uniform
    }

    /// How a token strays from its topic, per coordinate, before normalisation.
    enum Noise: Sendable {
        /// Normal with standard deviation `sigma / √dim`, so the noise's norm is about `sigma`.
        case gaussian(sigma: Float)
        /// Uniform in [-width/2, width/2): cheap enough for tens of millions of tokens.
        case uniform(width: Float)
    }

    /// Shape of a document: `max(minTokens, meanTokens / 2 + r % lengthSpread)` tokens, each drawn
    /// around one of `topicsPerDocument` topics picked for that document.
    struct Layout: Sendable {
        var meanTokens: Int
        var minTokens: Int
        var lengthSpread: Int
        var topicsPerDocument: Int
        /// Mixed into each document's seed, so two layouts do not draw the same documents.
        var seedSalt: UInt64
    }

    let dim: Int
    let topics: Int
    /// Row-major `topics × dim` unit vectors.
    let centers: [Float]
    let noise: Noise
    let layout: Layout

    init(dim: Int, topics: Int, seed: UInt64, centers distribution: CenterDistribution, noise: Noise, layout: Layout) {
        precondition(dim >= 1 && topics >= 1 && layout.minTokens >= 1 && layout.lengthSpread >= 1 && layout.topicsPerDocument >= 1)
        self.dim = dim
        self.topics = topics
        self.noise = noise
        self.layout = layout
        var g = SplitMix64(seed: seed)
        var c: [Float]
        switch distribution {
        case .gaussian: c = (0..<(topics * dim)).map { _ in Float(g.nextGaussian()) }
        case .uniform: c = (0..<(topics * dim)).map { _ in Float(g.nextDouble() * 2 - 1) }
        }
        VectorMath.normalizeRows(&c, dim: dim)
        centers = c
    }

    /// Writes a unit vector near `topic` into `v[0..<dim]`.
    func token(around topic: Int, into v: UnsafeMutablePointer<Float>, rng: inout SplitMix64) {
        let base = topic * dim
        // The switch stays outside the coordinate loop: this is the inner loop of a 50M-token build.
        switch noise {
        case .gaussian(let sigma):
            let rootDim = Float(dim).squareRoot()
            for d in 0..<dim { v[d] = centers[base + d] + sigma * Float(rng.nextGaussian()) / rootDim }
        case .uniform(let width):
            for d in 0..<dim { v[d] = centers[base + d] + width * Float(rng.nextDouble() - 0.5) }
        }
        VectorMath.normalizeRows(v, rows: 1, dim: dim)
    }

    /// A unit vector near `topic` in `v` (which must hold `dim` floats).
    func token(around topic: Int, into v: inout [Float], rng: inout SplitMix64) {
        precondition(v.count >= dim)
        v.withUnsafeMutableBufferPointer { buf in
            if let p = buf.baseAddress { token(around: topic, into: p, rng: &rng) }
        }
    }

    /// Document `n` (at most `maxTokens` tokens) and the topic each of its tokens was drawn around.
    func document(_ n: UInt64, maxTokens: Int = .max) -> (embeddings: TokenEmbeddings, topics: [UInt32]) {
        var g = SplitMix64(seed: n &* 0x9E37_79B9_7F4A_7C15 &+ layout.seedSalt)
        let drawn = layout.meanTokens / 2 + Int(g.next() % UInt64(layout.lengthSpread))
        let count = min(maxTokens, max(layout.minTokens, drawn))
        let k = layout.topicsPerDocument
        let docTopics = (0..<k).map { _ in Int(g.next() % UInt64(topics)) }
        var all = [Float](repeating: 0, count: count * dim)
        var ids = [UInt32](repeating: 0, count: count)
        all.withUnsafeMutableBufferPointer { buf in
            guard let base = buf.baseAddress else { return }
            for t in 0..<count {
                let topic = docTopics[Int(g.next() % UInt64(k))]
                token(around: topic, into: base + t * dim, rng: &g)
                ids[t] = UInt32(topic)
            }
        }
        return (TokenEmbeddings(tokenIds: [Int32](repeating: 0, count: count), vectors: all, dim: dim), ids)
    }

    /// `count` queries of `queryTokens` tokens, each a noisy copy (uniform, `width`) of tokens of
    /// one random document among the first `documents`.
    func queries(count: Int, documents: Int, queryTokens: Int = 32, width: Float = 0.05,
                 seed: UInt64) -> [TokenEmbeddings] {
        var g = SplitMix64(seed: seed)
        return (0..<count).map { _ in
            let (doc, _) = document(g.next() % UInt64(max(1, documents)))
            var q = [Float](repeating: 0, count: queryTokens * dim)
            for r in 0..<queryTokens {
                let t = Int(g.next() % UInt64(max(1, doc.count)))
                for x in 0..<dim { q[r * dim + x] = doc.vectors[t * dim + x] + width * Float(g.nextDouble() - 0.5) }
            }
            VectorMath.normalizeRows(&q, dim: dim)
            return TokenEmbeddings(tokenIds: [Int32](repeating: 0, count: queryTokens), vectors: q, dim: dim)
        }
    }
}
