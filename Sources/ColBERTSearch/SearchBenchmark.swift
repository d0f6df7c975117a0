import ColBERTCore

/// Latency and recall of pruned search against exhaustive MaxSim on any snapshot: used by
/// `colbert bench synth` and the release-mode benchmark test.
public enum SearchBenchmark {
    public struct Report: Sendable, CustomStringConvertible {
        public var queries: Int
        public var k: Int
        public var threads: Int
        public var parameters: SearchParameters
        /// Per-query latency of pruned search (each query on `threads` threads).
        public var latency: LatencySummary
        /// Median CPU time of the searching thread per query, milliseconds (meaningful at
        /// threads = 1; robust to other load on the machine).
        public var cpuP50: Double
        /// Queries per second of the timed one-query-at-a-time loop.
        public var qps: Double
        /// Queries per second of `searchBatch` on `batchThreads` threads, when measured.
        public var batchQPS: Double?
        public var batchThreads: Int
        /// Mean per-stage time, milliseconds (counts are per query too).
        public var stages: SearchTimings
        /// Mean recall@k of pruned against exhaustive top-k.
        public var recallAtK: Double
        /// Mean exhaustive latency per query, milliseconds (0 when not measured).
        public var exhaustiveMean: Double

        public var description: String {
            func f(_ x: Double) -> String { String(Int((x * 1000).rounded())) .paddedMillis }
            let s = stages
            var text = """
            pruned k=\(k) nprobe=\(parameters.nprobe) threshold=\(parameters.centroidScoreThreshold.map { "\($0)" } ?? "none") \
            rerank=\(parameters.rerankDepth) margin=\(parameters.rerankMargin.map { "\($0)" } ?? "none") missing=\(parameters.missingSimilarity.rawValue) threads=\(threads) queries=\(queries)
              latency ms: \(latency.text); thread CPU p50 \(f(cpuP50))
              stages ms: centroids \(f(s.centroidScores)) select \(f(s.selection)) group \(f(s.grouping)) \
            scoring \(f(s.scoring)) reduce \(f(s.reduction)) rerank \(f(s.rerank)); \
            candidates \(s.candidates) tokens scored \(s.scoredTokens) re-ranked \(s.reranked)
              recall@\(k) vs exhaustive: \(String(Int((recallAtK * 10000).rounded())).paddedFraction) \
            exhaustive mean ms: \(f(exhaustiveMean))
            """
            if let batchQPS { text += "\n  QPS: \(Int(qps.rounded())) one query at a time, \(Int(batchQPS.rounded())) batched on \(batchThreads) threads" }
            return text
        }
    }

    /// Runs every query once to warm up, then `repeats` times timed, one query at a time on
    /// `threads` threads; with `batchThreads`, also times `searchBatch` over all queries
    /// `repeats` times. Ground truth comes from `reference` when given (e.g. computed once for
    /// several settings), else from exhaustive search of each query.
    public static func run<S: IndexSnapshot>(
        queries: [TokenEmbeddings], index: S, k: Int, parameters: SearchParameters, threads: Int = 1,
        batchThreads: Int? = nil, repeats: Int = 1, reference: [[ScoredDocument]]? = nil
    ) throws -> (report: Report, reference: [[ScoredDocument]]) {
        var truth = reference ?? []
        var exhaustiveTime = 0.0
        if reference == nil {
            let t0 = nowSeconds()
            truth = try MaxSimSearcher.exhaustiveBatch(queries: queries, in: index, k: k, threads: max(threads, batchThreads ?? 1))
            exhaustiveTime = (nowSeconds() - t0) / Double(max(1, queries.count))
        }
        var latency = LatencyRecorder()
        var cpu: [Double] = []
        var stages = SearchTimings()
        var recall = 0.0
        for q in queries { _ = try MaxSimSearcher.search(query: q, in: index, k: k, parameters: parameters, threads: threads) }
        let loopStart = nowSeconds()
        for _ in 0..<max(1, repeats) {
            for (i, q) in queries.enumerated() {
                let t0 = nowSeconds(), c0 = threadCPUSeconds()
                let (r, t) = try MaxSimSearcher.searchWithTimings(query: q, in: index, k: k,
                                                                  parameters: parameters, threads: threads)
                latency.record(seconds: nowSeconds() - t0)
                cpu.append(threadCPUSeconds() - c0)
                stages += t
                recall += Evaluation.overlapRecall(r, reference: truth[i], k: k)
            }
        }
        let loopSeconds = nowSeconds() - loopStart
        let n = Double(max(1, latency.count))
        var batchQPS: Double?
        if let batchThreads {
            let b0 = nowSeconds()
            for _ in 0..<max(1, repeats) {
                _ = try MaxSimSearcher.searchBatch(queries: queries, in: index, k: k, parameters: parameters, threads: batchThreads)
            }
            batchQPS = Double(queries.count * max(1, repeats)) / max(1e-9, nowSeconds() - b0)
        }
        let mean = stages.perQueryMilliseconds(queries: Int(n))
        let report = Report(queries: queries.count, k: k, threads: threads, parameters: parameters,
                            latency: latency.summary,
                            cpuP50: cpu.isEmpty ? 0 : cpu.sorted()[cpu.count / 2] * 1000,
                            qps: n / max(1e-9, loopSeconds), batchQPS: batchQPS, batchThreads: batchThreads ?? threads,
                            stages: mean, recallAtK: recall / n, exhaustiveMean: exhaustiveTime * 1000)
        return (report, truth)
    }
}

private extension String {
    /// "1234" (microseconds) as "1.234".
    var paddedMillis: String {
        let digits = Array(self.count < 4 ? String(repeating: "0", count: 4 - count) + self : self)
        return String(digits.dropLast(3)) + "." + String(digits.suffix(3))
    }
    /// "9912" (basis points) as "0.9912".
    var paddedFraction: String {
        let digits = Array(self.count < 5 ? String(repeating: "0", count: 5 - count) + self : self)
        return String(digits.dropLast(4)) + "." + String(digits.suffix(4))
    }
}
