import ArgumentParser
import ColBERTCore
import ColBERTIndex
import ColBERTSearch
import Foundation

/// Pruned search on an opened snapshot, as both benchmarks report it: latency one query at a
/// time on one thread (pre-encoded queries), QPS at one thread and batched on all threads, and
/// recall@k against exhaustive search.
func measureSearch<S: IndexSnapshot>(queries: [TokenEmbeddings], snapshot: S, k: Int, parameters: SearchParameters,
                                     threads: Int, repeats: Int) throws -> SearchBenchmark.Report {
    BLAS.setThreadCount(1)
    return try SearchBenchmark.run(queries: queries, index: snapshot, k: k, parameters: parameters, threads: 1,
                                   batchThreads: threads, repeats: repeats).report
}

func printSearchReport(_ r: SearchBenchmark.Report, k: Int, parameters p: SearchParameters, json: Bool, extra: [String: Any]) {
    let qpsAll = r.batchQPS ?? r.qps
    if json {
        var o: [String: Any] = ["p50_ms": r.latency.p50, "p95_ms": r.latency.p95, "p99_ms": r.latency.p99,
                                "max_ms": r.latency.max, "mean_ms": r.latency.mean, "cpu_p50_ms": r.cpuP50,
                                "qps": qpsAll, "qps_1_thread": r.qps, "threads": r.batchThreads,
                                "recall@\(k)": r.recallAtK, "exhaustive_ms_per_query": r.exhaustiveMean,
                                "nprobe": p.nprobe, "rerank": p.rerankDepth, "k": k, "reranked": r.stages.reranked]
        if let m = p.rerankMargin { o["rerank_margin"] = m }
        for (key, v) in extra { o[key] = v }
        printJSONLine(o)
    } else {
        for (key, v) in extra.sorted(by: { $0.key < $1.key }) { print("\(key): \(v)") }
        print("search without encoding, 1 thread: \(r.latency.text)  (thread CPU p50 \(String(format: "%.3f", r.cpuP50)))")
        print(String(format: "QPS: %.1f at 1 thread, %.1f at %d threads", r.qps, qpsAll, r.batchThreads))
        let margin = p.rerankMargin.map { String(format: " stopping at margin %g", $0) } ?? ""
        print(String(format: "recall@%d vs exhaustive: %.4f  (nprobe %d, rerank %d%@; exhaustive %.1f ms/query)",
                     k, r.recallAtK, p.nprobe, p.rerankDepth, margin, r.exhaustiveMean))
        print("mean stage ms: \(stageText(r.stages)); \(r.stages.candidates) candidates, \(r.stages.scoredTokens) tokens scored, \(r.stages.reranked) re-ranked")
    }
}

/// Per-stage times of `SearchTimings` already in milliseconds, one line.
func stageText(_ st: SearchTimings) -> String {
    String(format: "centroids %.3f  select %.3f  group %.3f  scoring %.3f  reduce %.3f  rerank %.3f",
           st.centroidScores, st.selection, st.grouping, st.scoring, st.reduction, st.rerank)
}

/// `colbert bench search`: MaxSim latency on a real index.
struct BenchSearchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "search",
        abstract: "Search latency (p50/p95/p99/max) with and without query encoding, QPS at 1 and all threads, recall@k vs exhaustive.")

    @Option(name: .long, help: "Index directory.") var index: String = "index/default"
    @Option(name: .long, help: "Model directory (default: the one the index was built with).") var model: String?
    @Option(name: .long, help: "BEIR queries file (default: index/queries.jsonl).") var queries: String = "index/queries.jsonl"
    @Option(name: .long, help: "Use at most this many queries.") var limit: Int?
    @Option(name: .short, help: "Results per query.") var k: Int = 10
    @Option(name: .long, help: "Timed passes over the queries.") var repeats: Int = 3
    @Flag(name: .long, help: "Print one JSON object.") var json = false
    @OptionGroup var tuning: SearchTuningOptions

    func run() throws {
        let opened = try IndexWithModel.open(index: index, model: model, readOnly: true)
        let qs = try loadQueries(query: nil, queriesFile: queries, limit: limit)
        // End to end, one query at a time: encode + search, as a client of the library sees it.
        let encoded = try encodeQueries(qs.map(\.text), encoder: opened.encoder)
        var endToEnd: [Double] = []
        var encodeOnly: [Double] = []
        try opened.index.withSnapshot { snap in
            let params = tuning.parameters(k: k, for: snap)
            for q in qs.prefix(3) { _ = try opened.encoder.encode([q.text], kind: .query) }
            for q in qs {
                let t0 = monotonicSeconds()
                let e = try opened.encoder.encode([q.text], kind: .query)
                let t1 = monotonicSeconds()
                _ = try MaxSimSearcher.search(query: e[0], in: snap, k: k, parameters: params, threads: 1)
                endToEnd.append(monotonicSeconds() - t0)
                encodeOnly.append(t1 - t0)
            }
            let r = try measureSearch(queries: encoded, snapshot: snap, k: k, parameters: params,
                                      threads: tuning.threadCount, repeats: max(1, repeats))
            // One query at a time with every thread working inside it (a lone query on an idle
            // machine), after the one-thread figures so both see the same warm pages.
            var parallel: [Double] = []
            var parallelStages = SearchTimings()
            let threads = tuning.threadCount
            if threads > 1 {
                for q in encoded {
                    let t0 = monotonicSeconds()
                    let (_, t) = try MaxSimSearcher.searchWithTimings(query: q, in: snap, k: k, parameters: params, threads: threads)
                    parallel.append(monotonicSeconds() - t0)
                    parallelStages += t
                }
            }
            let e2e = LatencySummary(seconds: endToEnd), enc = LatencySummary(seconds: encodeOnly)
            var extra: [String: Any] = ["queries": qs.count, "documents": snap.documentCount, "tokens": snap.tokenCount]
            if json {
                extra["e2e_p50_ms"] = e2e.p50; extra["e2e_p95_ms"] = e2e.p95; extra["e2e_p99_ms"] = e2e.p99
                extra["encode_p50_ms"] = enc.p50
                if !parallel.isEmpty { extra["p50_ms_all_threads"] = LatencySummary(seconds: parallel).p50 }
                if let rss = peakRSSBytes() { extra["peak_rss_mb"] = Double(rss) / 1e6 }
            }
            printSearchReport(r, k: k, parameters: params, json: json, extra: extra)
            if !json {
                if !parallel.isEmpty {
                    print("search without encoding, \(threads) threads inside each query: \(LatencySummary(seconds: parallel).text)")
                    print("  its mean stage ms: " + stageText(parallelStages.perQueryMilliseconds(queries: parallel.count)))
                }
                print("query encoding alone, 1 query: \(enc.text)")
                print("encode + search, 1 query: \(e2e.text)")
                if let rss = peakRSSBytes() { print(String(format: "peak RSS %.0f MB", Double(rss) / 1e6)) }
            }
        }
    }
}

/// `colbert bench synth`: a synthetic index of clustered unit vectors (no encoder), then its
/// search latency and memory, so scaling can be measured at 1M, 10M and 50M tokens.
struct BenchSynthCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "synth",
        abstract: "Write a synthetic index of N clustered tokens (reused if it exists) and measure search latency and memory on it.")

    @Option(name: .long, help: "Total tokens.") var tokens: Int = 1_000_000
    @Option(name: .long, help: "Index directory (default: .build/synth-<tokens>).") var index: String?
    @Option(name: .long, help: "Mean tokens per document.") var meanTokens: Int = 150
    @Option(name: .long) var dim: Int = 128
    @Option(name: .long) var nbits: Int = 2
    @Option(name: .long, help: "Centroids (default: PLAID's size for the token count).") var centroids: Int?
    @Option(name: .long, help: "Synthetic queries.") var queries: Int = 100
    @Option(name: .short, help: "Results per query.") var k: Int = 10
    @Option(name: .long) var seed: UInt64 = 7
    @Flag(name: .long, help: "Only write the index.") var buildOnly = false
    @Flag(name: .long, help: "Print one JSON object.") var json = false
    @OptionGroup var tuning: SearchTuningOptions

    func validate() throws {
        guard tokens >= 1000 else { throw ValidationError("--tokens must be at least 1000") }
        guard meanTokens >= 2, dim >= 8, [1, 2, 4].contains(nbits) else { throw ValidationError("bad --mean-tokens, --dim or --nbits") }
    }

    func run() throws {
        let path = index ?? ".build/synth-\(tokens)"
        let K = centroids ?? KMeans.plaidCentroidCount(tokens: tokens)
        let space = SyntheticVectors.benchSynth(dim: dim, topics: K, meanTokens: meanTokens, seed: seed)
        let t0 = monotonicSeconds()
        var built = false
        if !FileManager.default.fileExists(atPath: path) {
            try buildIndex(path: path, space: space)
            built = true
        }
        let buildSeconds = monotonicSeconds() - t0
        let idx: ColBERTIndex
        do { idx = try ColBERTIndex.open(at: path, readOnly: true) } catch { throw CLIError("\(error)") }
        let stats = try idx.stats()
        if buildOnly {
            print(String(format: "synthetic index at %@: %d documents, %d tokens, %d centroids, %.1f bytes/token%@",
                         path, stats.documents, stats.tokens, stats.centroids, stats.bytesPerToken,
                         built ? String(format: ", written in %.1f s", buildSeconds) : " (existing)"))
            return
        }
        let qs = space.queries(count: queries, documents: stats.documents, seed: seed &+ 99)
        let rssBefore = peakRSSBytes() ?? 0
        try idx.withSnapshot { snap in
            let params = tuning.parameters(k: k, for: snap)
            let r = try measureSearch(queries: qs, snapshot: snap, k: k, parameters: params,
                                      threads: tuning.threadCount, repeats: 2)
            let extra: [String: Any] = ["tokens": stats.tokens, "documents": stats.documents, "centroids": stats.centroids,
                                        "bytes_per_token": stats.bytesPerToken,
                                        "file_mb": Double(stats.fileSizeBytes) / 1e6,
                                        "peak_rss_mb": Double(peakRSSBytes() ?? 0) / 1e6,
                                        "rss_before_search_mb": Double(rssBefore) / 1e6]
            printSearchReport(r, k: k, parameters: params, json: json, extra: extra)
        }
    }

    private func buildIndex(path: String, space: SyntheticVectors) throws {
        // Codec trained on residuals of a sample of synthetic tokens around their own topics.
        var sample: [Float] = []
        var g = SplitMix64(seed: seed &+ 1)
        for _ in 0..<2000 {
            let topic = Int(g.next() % UInt64(space.topics))
            var v = [Float](repeating: 0, count: dim)
            space.token(around: topic, into: &v, rng: &g)
            for d in 0..<dim { sample.append(v[d] - space.centers[topic * dim + d]) }
        }
        let codec = try ResidualCodec.train(dim: dim, nbits: nbits, residuals: sample)
        let config = IndexConfiguration(modelFingerprint: "synthetic-\(dim)d-seed\(seed)", centroids: space.centers,
                                        codec: codec, storeText: false, seed: seed)
        let idx: ColBERTIndex
        do { idx = try ColBERTIndex.create(at: path, configuration: config) } catch { throw CLIError("\(error)") }
        var written = 0, doc = 0
        let start = monotonicSeconds()
        var lastLog = start
        while written < tokens {
            var batch: [(CorpusDocument, TokenEmbeddings)] = []
            var assignments: [UInt32] = []
            var batchTokens = 0
            while batchTokens < 200_000 && written + batchTokens < tokens {
                let (emb, topics) = space.document(UInt64(doc), maxTokens: tokens - written - batchTokens)
                batch.append((CorpusDocument(id: "synth-\(doc)", text: "synthetic"), emb))
                assignments += topics
                batchTokens += emb.count
                doc += 1
            }
            do { try idx.addEncoded(batch, assignments: assignments) } catch { throw CLIError("\(error)") }
            written += batchTokens
            let now = monotonicSeconds()
            if now - lastLog > 10 {
                printError(String(format: "synth: %d/%d tokens, %.0f tokens/s", written, tokens, Double(written) / (now - start)))
                lastLog = now
            }
        }
        do { try idx.compact() } catch { throw CLIError("\(error)") }
    }
}

extension SyntheticVectors {
    /// The space of `bench synth`: uniform centres and noise (cheap enough for 50M tokens); the
    /// topic of every token is known, so the index is written with those assignments.
    static func benchSynth(dim: Int, topics: Int, meanTokens: Int, seed: UInt64) -> SyntheticVectors {
        let layout = Layout(meanTokens: meanTokens, minTokens: 2, lengthSpread: meanTokens + 1,
                            topicsPerDocument: 12, seedSalt: 17)
        return SyntheticVectors(dim: dim, topics: topics, seed: seed, centers: .uniform,
                                noise: .uniform(width: 0.35 * 2 / Float(dim).squareRoot() * 1.7), layout: layout)
    }
}
