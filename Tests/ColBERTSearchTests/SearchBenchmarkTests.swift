import ColBERTCore
import Foundation
import Testing
import ColBERTSearch

/// Release-mode speed figures, skipped unless COLBERT_SEARCH_BENCH is set:
/// `COLBERT_SEARCH_BENCH=1 swift test -c release -Xswiftc -enable-testing --filter SearchBenchmark`.
/// COLBERT_SEARCH_BENCH=sweep also sweeps nprobe, re-rank depth and the missing-similarity rule.
@Suite struct SearchBenchmarkTests {
    static let mode = ProcessInfo.processInfo.environment["COLBERT_SEARCH_BENCH"]

    @Test(.enabled(if: mode != nil))
    func syntheticSearchLatency() throws {
        let env = ProcessInfo.processInfo.environment
        let docs = Int(env["COLBERT_SEARCH_BENCH_DOCS"] ?? "") ?? 8000
        let nq = Int(env["COLBERT_SEARCH_BENCH_QUERIES"] ?? "") ?? 200
        var t0 = Date()
        let corpus = SyntheticCorpus(documents: docs, meanTokens: 150, dim: 128, topics: 16384, queries: nq, seed: 42)
        let index = try corpus.makeIndex(nbits: 2)
        print("synthetic index: \(index.documentCount) docs, \(index.tokenCount) tokens, \(index.centroidCount) centroids, 2 bits; built in \(Int(Date().timeIntervalSince(t0)))s")
        BLAS.setThreadCount(1)
        t0 = Date()
        let (first, truth) = try SearchBenchmark.run(queries: corpus.queries, index: index, k: 10,
                                                     parameters: .defaults(k: 10), threads: 1, repeats: 3)
        print(first)
        if Self.mode == "sweep" {
            for missing in [MissingSimilarity.bestUnselected, .lastSelected] {
                for nprobe in [2, 4, 8, 16, 32] {
                    for rerank in [0, 32, 64, 128] {
                        let p = SearchParameters(nprobe: nprobe, rerankDepth: rerank, missingSimilarity: missing)
                        print(try SearchBenchmark.run(queries: corpus.queries, index: index, k: 10, parameters: p,
                                                      threads: 1, reference: truth).report)
                    }
                }
            }
        }
        let two = try SearchBenchmark.run(queries: corpus.queries, index: index, k: 10, parameters: .defaults(k: 10),
                                          threads: 2, batchThreads: 2, repeats: 2, reference: truth).report
        print(two)
        let q = corpus.queries
        for threads in [1, 2] {
            let t = Date()
            let r = try MaxSimSearcher.searchBatch(queries: q, in: index, k: 10, threads: threads)
            let secs = Date().timeIntervalSince(t)
            print("searchBatch threads=\(threads): \(Int(Double(q.count) / secs)) QPS (\(r.results.count) queries)")
        }
        let t = Date()
        _ = try MaxSimSearcher.exhaustiveBatch(queries: Array(q.prefix(20)), in: index, k: 10, threads: 2)
        print("exhaustiveBatch threads=2: \(Int(Date().timeIntervalSince(t) / 20 * 1000)) ms/query")
        print("benchmark time \(Int(Date().timeIntervalSince(t0)))s")
        #expect(first.recallAtK >= 0.99)
    }
}
