import ColBERTCore

/// Clustered unit vectors standing in for ColBERT embeddings, for the search tests (an in-memory
/// corpus with its lengths and topics; the CLI's benchmarks use their own `SyntheticVectors`):
/// `topics` random unit directions; each document draws its tokens around a few of them; each
/// query is a noisy copy of tokens of one random document. Deterministic for a seed.
public struct SyntheticCorpus: Sendable {
    public let dim: Int
    /// Row-major token vectors of all documents, in document order.
    public let vectors: [Float]
    public let documentLengths: [Int]
    /// The topic directions (row-major `topics × dim`); good centroids for this data.
    public let topics: [Float]
    /// The topic each token was drawn around (its nearest topic with overwhelming probability).
    public let tokenTopics: [Int32]
    public let queries: [TokenEmbeddings]
    /// The document each query was drawn from.
    public let queryDocuments: [Int]

    public init(documents: Int, meanTokens: Int, dim: Int = 128, topics: Int, topicsPerDocument: Int = 24,
                tokenNoise: Float = 0.08, queries: Int, queryTokens: Int = 32, queryNoise: Float = 0.05,
                seed: UInt64) {
        precondition(documents >= 1 && meanTokens >= 1 && dim >= 1 && topics >= 1 && queries >= 0)
        var g = SplitMix64(seed: seed)
        self.dim = dim
        var t = [Float](repeating: 0, count: topics * dim)
        for i in 0..<t.count { t[i] = Float(g.nextGaussian()) }
        VectorMath.normalizeRows(&t, dim: dim)
        self.topics = t

        var lengths: [Int] = []
        lengths.reserveCapacity(documents)
        for _ in 0..<documents {
            // Uniform in [meanTokens / 2, 3 * meanTokens / 2].
            let lo = max(1, meanTokens / 2)
            lengths.append(lo + Int(g.next() % UInt64(meanTokens + 1)))
        }
        let total = lengths.reduce(0, +)
        var v = [Float](repeating: 0, count: total * dim)
        var tokenTopics = [Int32](repeating: 0, count: total)
        var pos = 0
        var docTopics = [Int](repeating: 0, count: topicsPerDocument)
        for n in lengths {
            for j in 0..<topicsPerDocument { docTopics[j] = Int(g.next() % UInt64(topics)) }
            for _ in 0..<n {
                let topic = docTopics[Int(g.next() % UInt64(topicsPerDocument))]
                tokenTopics[pos] = Int32(topic)
                for d in 0..<dim { v[pos * dim + d] = t[topic * dim + d] + tokenNoise * Float(g.nextGaussian()) }
                pos += 1
            }
        }
        VectorMath.normalizeRows(&v, dim: dim)
        self.vectors = v
        self.documentLengths = lengths
        self.tokenTopics = tokenTopics

        var starts = [Int](repeating: 0, count: documents + 1)
        for i in 0..<documents { starts[i + 1] = starts[i] + lengths[i] }
        var qs: [TokenEmbeddings] = []
        var qd: [Int] = []
        for _ in 0..<queries {
            let doc = Int(g.next() % UInt64(documents))
            var q = [Float](repeating: 0, count: queryTokens * dim)
            for r in 0..<queryTokens {
                let tok = starts[doc] + Int(g.next() % UInt64(lengths[doc]))
                for d in 0..<dim { q[r * dim + d] = v[tok * dim + d] + queryNoise * Float(g.nextGaussian()) }
            }
            VectorMath.normalizeRows(&q, dim: dim)
            qs.append(TokenEmbeddings(tokenIds: [Int32](repeating: 0, count: queryTokens), vectors: q, dim: dim))
            qd.append(doc)
        }
        self.queries = qs
        self.queryDocuments = qd
    }

    /// An in-memory index with the topics as centroids, each token assigned to its topic, and
    /// a codec trained on the residuals of (up to) `trainingTokens` tokens.
    public func makeIndex(nbits: Int, trainingTokens: Int = 50_000) throws -> InMemoryIndex {
        let total = documentLengths.reduce(0, +)
        let n = min(total, trainingTokens)
        var residuals = [Float](repeating: 0, count: max(1, n) * dim)
        if n > 0 {
            let step = max(1, total / n)
            for i in 0..<n {
                let tok = min(total - 1, i * step)
                let c = Int(tokenTopics[tok])
                for d in 0..<dim { residuals[i * dim + d] = vectors[tok * dim + d] - topics[c * dim + d] }
            }
        }
        let codec = try ResidualCodec.train(dim: dim, nbits: nbits, residuals: residuals)
        return try InMemoryIndex(vectors: vectors, documentLengths: documentLengths, centroids: topics,
                                 codec: codec, assignments: tokenTopics)
    }
}
