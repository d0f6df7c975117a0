import ArgumentParser
import ColBERTCore
import ColBERTIndex
import ColBERTSearch
import Foundation

/// `colbert eval`: BEIR metrics of an index on a queries file and qrels.
struct EvalCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "eval",
        abstract: "nDCG@10, Recall@100 and MRR@10 (pytrec_eval definitions), and recall of pruned against exhaustive search.")

    @Option(name: .long, help: "Index directory.") var index: String = "index/default"
    @Option(name: .long, help: "Model directory (default: the one the index was built with).") var model: String?
    @Option(name: .long, help: "BEIR queries file (JSON lines with _id and text).") var queries: String
    @Option(name: .long, help: "BEIR qrels TSV (query-id, corpus-id, score).") var qrels: String
    @Option(name: .short, help: "k for the pruned-vs-exhaustive recall.") var k: Int = 10
    @Flag(name: .long, help: "Evaluate exhaustive MaxSim instead of pruned search.") var exhaustive = false
    @Flag(name: .long, help: "Skip the exhaustive reference run (no recall@k vs exhaustive).") var noReference = false
    @Flag(name: .long, help: "Print one JSON object.") var json = false
    @OptionGroup var tuning: SearchTuningOptions

    func validate() throws {
        guard k >= 1 && k <= 100 else { throw ValidationError("-k must be between 1 and 100") }
    }

    func run() throws {
        let opened = try IndexWithModel.open(index: index, model: model, readOnly: true)
        let judged: Evaluation.Qrels
        do { judged = try Evaluation.readQrels(path: qrels) } catch { throw CLIError("\(error)") }
        // Only queries with judgements count, as BEIR evaluates them.
        let qs = try loadQueries(query: nil, queriesFile: queries).filter { judged[$0.id] != nil }
        guard !qs.isEmpty else { throw CLIError("no query in \(queries) has judgements in \(qrels)") }
        let depth = max(100, k)
        let threads = tuning.threadCount
        let t0 = monotonicSeconds()
        let encoded = try encodeQueries(qs.map(\.text), encoder: opened.encoder)
        let t1 = monotonicSeconds()
        let (summary, overlap, searchSeconds, refSeconds, unknown) = try opened.index.withSnapshot { snap in
            // Judged documents the index does not hold (another corpus, or documents deleted
            // since) can never be found and pull every metric down: say so.
            let unknown = try Evaluation.judgedDocuments(of: qs.map(\.id), in: judged) { try snap.internalId(of: $0) == nil }
            let s0 = monotonicSeconds()
            let primary = exhaustive
                ? try MaxSimSearcher.exhaustiveBatch(queries: encoded, in: snap, k: depth, threads: threads)
                : try MaxSimSearcher.searchBatch(queries: encoded, in: snap, k: depth,
                                                 parameters: tuning.parameters(k: depth, for: snap), threads: threads).results
            let s1 = monotonicSeconds()
            var runs: [String: [(docId: String, score: Double)]] = [:]
            for (q, hits) in zip(qs, primary) {
                runs[q.id] = try hits.map { (docId: try snap.externalId(of: $0.docId) ?? "", score: Double($0.score)) }
            }
            let summary = Evaluation.evaluate(runs: runs, qrels: judged)
            var overlap: Double? = nil
            var refSeconds = 0.0
            if !exhaustive && !noReference {
                // recall@k of the pruned top-k (searched with k's own defaults) against exhaustive top-k.
                let r0 = monotonicSeconds()
                let reference = try MaxSimSearcher.exhaustiveBatch(queries: encoded, in: snap, k: k, threads: threads)
                refSeconds = monotonicSeconds() - r0
                let prunedK = try MaxSimSearcher.searchBatch(queries: encoded, in: snap, k: k,
                                                             parameters: tuning.parameters(k: k, for: snap), threads: threads).results
                var total = 0.0
                for (a, b) in zip(prunedK, reference) { total += Evaluation.overlapRecall(a, reference: b, k: k) }
                overlap = total / Double(max(1, qs.count))
            }
            return (summary, overlap, s1 - s0, refSeconds, unknown)
        }
        if !unknown.isEmpty {
            let judgedCount = Evaluation.judgedDocuments(of: qs.map(\.id), in: judged) { _ in true }.count
            printError("warning: \(unknown.count) of the \(judgedCount) judged documents of these queries are not in the index "
                       + "(e.g. '\(unknown.sorted().first ?? "")'); they count as never retrieved")
        }
        if json {
            var o: [String: Any] = ["ndcg@10": summary.ndcg10, "recall@100": summary.recall100, "mrr@10": summary.mrr10,
                                    "queries": summary.queries, "mode": exhaustive ? "exhaustive" : "pruned",
                                    "encode_seconds": t1 - t0, "search_seconds": searchSeconds]
            if let overlap { o["recall@\(k)_vs_exhaustive"] = overlap; o["exhaustive_seconds"] = refSeconds }
            printJSONLine(o)
        } else {
            print("queries evaluated: \(summary.queries) (\(exhaustive ? "exhaustive" : "pruned") MaxSim)")
            print(String(format: "nDCG@10     %.4f", summary.ndcg10))
            print(String(format: "Recall@100  %.4f", summary.recall100))
            print(String(format: "MRR@10      %.4f", summary.mrr10))
            if let overlap { print(String(format: "recall@%d of pruned vs exhaustive  %.4f", k, overlap)) }
            print(String(format: "encode %.2f s, search %.2f s for %d queries", t1 - t0, searchSeconds, qs.count))
        }
    }
}
