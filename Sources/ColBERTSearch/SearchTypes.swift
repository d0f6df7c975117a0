import ColBERTCore

/// One search hit: an internal document id and its MaxSim score.
public struct ScoredDocument: Sendable, Equatable, Hashable {
    public var docId: UInt32
    public var score: Float

    public init(docId: UInt32, score: Float) {
        self.docId = docId
        self.score = score
    }

    /// The result order used everywhere: score descending, then internal id ascending.
    @inlinable
    public static func ranksBefore(_ a: ScoredDocument, _ b: ScoredDocument) -> Bool {
        a.score > b.score || (a.score == b.score && a.docId < b.docId)
    }
}

/// What a query token contributes to a document none of whose tokens lie in the token's probed
/// clusters (WARP's "missing similarity" imputation).
public enum MissingSimilarity: String, Sendable, CaseIterable {
    /// The score of the best centroid that was not probed: an upper estimate of what the
    /// document's nearest token can score (WARP's choice).
    case bestUnselected
    /// The score of the last (worst) probed centroid: a more generous estimate.
    case lastSelected
    /// Zero: documents are only credited with what was actually scored.
    case zero
}

/// Knobs of centroid-pruned MaxSim. All settable per call; `defaults(k:)` is tuned for
/// recall@10 >= 0.99 against exhaustive MaxSim.
public struct SearchParameters: Sendable, Equatable {
    /// Clusters probed per query token (the top `nprobe` centroids by score).
    public var nprobe: Int
    /// When set, a cluster is probed only if its centroid score is at least this (PLAID's
    /// centroid_score_threshold); the top-`nprobe` bound still applies. A query token's clusters
    /// below it are far from it, so what their tokens would add is about what the imputed
    /// (`missingSimilarity`) score adds anyway. The defaults set 0.3 (0.25 for k > 100), well
    /// below PLAID's 0.5 / 0.45 / 0.4: on the default model's SciFact and MED embeddings it
    /// skips under 1% of the probed tokens and keeps recall@10 against exhaustive (0.9923 at
    /// 8,192 centroids, 0.9930 at 16,384) and every metric within 0.001; 0.4 already cost 2–3
    /// points of recall there. Where a query token's far clusters are really far (the clustered
    /// synthetic vectors of `colbert bench synth`), it skips most probes (docs/BENCHMARKS.md,
    /// `run27`). nil probes the top `nprobe` whatever their scores.
    public var centroidScoreThreshold: Float?
    /// Number of top approximate candidates re-scored exactly from their decompressed,
    /// normalised tokens. 0 returns approximate scores; otherwise at least `k` are re-scored,
    /// so every returned score is exact.
    public var rerankDepth: Int
    /// Stops the re-rank early. Candidates are re-scored in blocks (`rerankBlock(startingAt:)`), best
    /// approximate score first; after each block the re-rank ends when the k-th exact score so
    /// far beats the next candidate's approximate score plus the largest amount by which any
    /// re-scored candidate's exact score exceeded its approximate one, plus this margin per query
    /// token. A heuristic bound, not a guarantee: its effect on recall is measured
    /// (docs/BENCHMARKS.md). nil re-scores all `rerankDepth` candidates.
    public var rerankMargin: Float?
    /// Imputation for query tokens whose probed clusters hold no token of a candidate.
    public var missingSimilarity: MissingSimilarity
    /// Divide each token score by the norm of its decompressed vector, so probed tokens score
    /// exactly as in exhaustive MaxSim. Off gives WARP's plain `q · (c + r)`. Costs the centroid
    /// add and the norm in every token's decompression (about 1.5x the scoring time on SciFact)
    /// and did not raise recall enough to shorten the re-rank, hence off by default.
    public var normalizeScores: Bool
    /// Score probed tokens (without `normalizeScores`) through 8-bit lookup tables over their code
    /// nibbles (`FastScanTables`) instead of decompressing them: each token's residual score is
    /// then off by at most a few thousandths, which the exact re-rank absorbs. Used where the
    /// codec allows it (codes of whole 32-byte chunks, e.g. 128 dims at 2 bits); elsewhere the
    /// exact residual dot products are used either way.
    public var fastScan: Bool
    /// Where the index groups its centroids (`IndexSnapshot.centroidRouter`: 4,096 centroids or
    /// more, in groups of 8), the probes are chosen among the centroids of each query token's best
    /// `groupProbes` groups only, instead of among all centroids. 0 (or at least the number of
    /// groups) scores every centroid. Off by default: it trades recall for the centroid stage's
    /// time, and how much depends on the index (SciFact with 16,384 centroids kept 0.992 of the
    /// exhaustive top-10 at 256 of 2,048 groups, 1.5 instead of 2.8 ms; with 11,173 centroids
    /// 0.989 at 176 of 1,396 groups; docs/BENCHMARKS.md, `run24`).
    public var groupProbes: Int
    /// Where the index has 2,048 centroids or more (`IndexSnapshot.quantizedCentroids`), every
    /// centroid is scored in 8-bit integers (twice the float product's speed) and the best
    /// `nprobe + 9` of those scores are re-scored in F32, from which the probes and the imputed
    /// score are taken as before. false scores every centroid in F32.
    public var quantizedCentroidScores: Bool

    public init(nprobe: Int, centroidScoreThreshold: Float? = nil, rerankDepth: Int = 0, rerankMargin: Float? = nil,
                missingSimilarity: MissingSimilarity = .bestUnselected, normalizeScores: Bool = false, fastScan: Bool = true,
                groupProbes: Int = 0, quantizedCentroidScores: Bool = true) {
        self.nprobe = nprobe
        self.centroidScoreThreshold = centroidScoreThreshold
        self.rerankDepth = rerankDepth
        self.rerankMargin = rerankMargin
        self.missingSimilarity = missingSimilarity
        self.normalizeScores = normalizeScores
        self.fastScan = fastScan
        self.groupProbes = groupProbes
        self.quantizedCentroidScores = quantizedCentroidScores
    }

    /// Candidates in the block of an early-stopping re-rank (`rerankMargin`) that starts at
    /// candidate `next`: 16 up to the 32nd, 32 up to the 96th, then 64. Where the approximate order
    /// is already right (1.2M synthetic tokens) the first 16 settle the top 10, half the re-rank's
    /// time, with the same recall; on SciFact the same recall and ~2 fewer candidates re-scored. The
    /// queries that go past 96 there mostly go to the depth, so bigger blocks save them a locate
    /// pass and, on several threads, two hand-offs per block.
    public static func rerankBlock(startingAt next: Int) -> Int { next < 32 ? 16 : (next < 96 ? 32 : 64) }

    /// Defaults for a result count `k` on an index of SciFact's cluster size (searches use
    /// `defaults(k:for:)`, which adapts the probes to the index), measured on SciFact with the
    /// default model (815K tokens, 8,192 centroids, 2 bits; docs/BENCHMARKS.md): on real
    /// embeddings more probes matter (nprobe 4 kept 0.87 of the exhaustive top-10 even with a
    /// re-rank of 128; nprobe 32 with a re-rank of 128 keeps 0.99 of the 300 test queries), and the
    /// exact re-rank fixes the order of the approximate shortlist. On clustered synthetic data re-rank depth matters more than probes. The re-rank
    /// stops early (margin 0.006 per query token): up to 160 candidates, 80 on average on SciFact,
    /// keep 0.992 there, where a fixed 128 kept 0.990 (and 192 at this margin 0.993, with a slower p95).
    public static func defaults(k: Int) -> SearchParameters {
        if k <= 10 {
            return SearchParameters(nprobe: 32, centroidScoreThreshold: 0.3, rerankDepth: 160, rerankMargin: 0.006)
        }
        if k <= 100 {
            return SearchParameters(nprobe: 32, centroidScoreThreshold: 0.3, rerankDepth: max(160, 2 * k), rerankMargin: 0.006)
        }
        return SearchParameters(nprobe: 48, centroidScoreThreshold: 0.25, rerankDepth: 2 * k, rerankMargin: 0.006)
    }

    /// Tokens per cluster of the index `defaults(k:)` was tuned on (SciFact: 815,632 tokens in
    /// 8,192 clusters).
    public static let tunedTokensPerCluster = 100.0

    /// `defaults(k:)` for an index of `tokens` tokens in `centroids` clusters: where its clusters
    /// are smaller than those the defaults were tuned on, more of them are probed, so that each
    /// query token still reaches as many tokens (up to 4x the probes, and never more than there
    /// are clusters). PLAID's centroid count gives 50–100 tokens per cluster to indexes of 1–2.6M
    /// tokens and fewer to small ones: SciFact built with 16,384 centroids (50 per cluster) kept
    /// 0.979 of the exhaustive top-10 at nprobe 32 and 0.993 at 64 (docs/BENCHMARKS.md, `run23`).
    /// Larger clusters keep the tuned probes: fewer would lose recall (SciFact with 4,096
    /// centroids: 0.987 at nprobe 16, 0.994 at 32).
    public static func defaults(k: Int, tokens: Int, centroids: Int) -> SearchParameters {
        var p = defaults(k: k)
        p.nprobe = probes(base: p.nprobe, tokens: tokens, centroids: centroids)
        return p
    }

    /// `defaults(k:tokens:centroids:)` for the index a search reads.
    public static func defaults<S: IndexSnapshot>(k: Int, for index: S) -> SearchParameters {
        defaults(k: k, tokens: index.tokenCount, centroids: index.centroidCount)
    }

    /// `base` probes scaled up to the index's cluster size (see `defaults(k:tokens:centroids:)`).
    static func probes(base: Int, tokens: Int, centroids: Int) -> Int {
        guard tokens > 0, centroids > 0 else { return base }
        let tokensPerCluster = Double(tokens) / Double(centroids)
        let scaled = Int(min((Double(base) * tunedTokensPerCluster / tokensPerCluster).rounded(), Double(4 * base)))
        return max(base, min(scaled, centroids))
    }
}

/// A set of internal document ids a search may return (the server restricts to a subset).
public struct DocumentFilter: Sendable, Equatable {
    @usableFromInline let words: [UInt64]
    /// Number of distinct allowed ids.
    public let count: Int

    public init<C: Sequence>(allowing ids: C) where C.Element == UInt32 {
        var words: [UInt64] = []
        var count = 0
        for id in ids {
            let w = Int(id >> 6)
            if w >= words.count { words.append(contentsOf: repeatElement(0, count: w + 1 - words.count)) }
            let bit = UInt64(1) << UInt64(id & 63)
            if words[w] & bit == 0 { count += 1; words[w] |= bit }
        }
        self.words = words
        self.count = count
    }

    @inlinable
    public func contains(_ id: UInt32) -> Bool {
        let w = Int(id >> 6)
        return w < words.count && words[w] & (UInt64(1) << UInt64(id & 63)) != 0
    }

    /// The allowed ids in increasing order.
    public var ids: [UInt32] {
        var out: [UInt32] = []
        out.reserveCapacity(count)
        for (w, word) in words.enumerated() where word != 0 {
            var x = word
            while x != 0 {
                let b = x.trailingZeroBitCount
                out.append(UInt32(w * 64 + b))
                x &= x - 1
            }
        }
        return out
    }
}

/// Wall-clock time per search stage, in seconds (summed over queries for batches).
public struct SearchTimings: Sendable, Equatable {
    public var centroidScores: Double = 0
    public var selection: Double = 0
    /// Grouping the probes by cluster.
    public var grouping: Double = 0
    public var scoring: Double = 0
    public var reduction: Double = 0
    public var rerank: Double = 0
    public var total: Double = 0
    /// Documents with at least one scored token.
    public var candidates: Int = 0
    /// (Query token, document token) scores taken into the documents' best scores.
    public var scoredTokens: Int = 0
    /// Candidates re-scored exactly.
    public var reranked: Int = 0

    public init() {}

    /// These totals over `queries` searches as per-query means, times in milliseconds.
    public func perQueryMilliseconds(queries: Int) -> SearchTimings {
        let n = Double(max(1, queries))
        var mean = self
        mean.centroidScores *= 1000 / n; mean.selection *= 1000 / n; mean.grouping *= 1000 / n
        mean.scoring *= 1000 / n; mean.reduction *= 1000 / n; mean.rerank *= 1000 / n; mean.total *= 1000 / n
        mean.candidates = Int(Double(candidates) / n)
        mean.scoredTokens = Int(Double(scoredTokens) / n)
        mean.reranked = Int(Double(reranked) / n)
        return mean
    }

    public static func += (a: inout SearchTimings, b: SearchTimings) {
        a.centroidScores += b.centroidScores
        a.selection += b.selection
        a.grouping += b.grouping
        a.scoring += b.scoring
        a.reduction += b.reduction
        a.rerank += b.rerank
        a.total += b.total
        a.candidates += b.candidates
        a.scoredTokens += b.scoredTokens
        a.reranked += b.reranked
    }
}

/// Bad search input.
public enum SearchError: Error, Equatable, CustomStringConvertible {
    case dimensionMismatch(query: Int, index: Int)
    case queryShape(values: Int, tokens: Int, dim: Int)
    case nonFiniteQuery
    case invalidParameter(String)

    public var description: String {
        switch self {
        case .dimensionMismatch(let q, let i):
            return "query dimension \(q) does not match the index dimension \(i)"
        case .queryShape(let v, let t, let d):
            return "query has \(v) values, expected \(t) tokens x \(d) dims = \(t * d)"
        case .nonFiniteQuery:
            return "query contains NaN or infinite values"
        case .invalidParameter(let m):
            return "invalid search parameter: \(m)"
        }
    }
}
