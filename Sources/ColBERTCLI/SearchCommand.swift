import ArgumentParser
import ColBERTCore
import ColBERTIndex
import ColBERTSearch
import Foundation

/// `colbert search`: ranked results for one query or a BEIR queries file.
struct SearchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "search",
        abstract: "Search an index with query text; prints ranked documents (or JSON lines with --json).")

    @Option(name: .long, help: "Index directory.") var index: String = "index/default"
    @Option(name: .long, help: "Model directory (default: the one the index was built with).") var model: String?
    @Option(name: .long, help: "Query text.") var query: String?
    @Option(name: .long, help: "BEIR queries file (JSON lines with _id and text).") var queries: String?
    @Option(name: .short, help: "Number of results per query.") var k: Int = 10
    @Flag(name: .long, help: "Exact MaxSim against every document (the ground truth; slow on big indexes).") var exhaustive = false
    @Flag(name: .long, help: "One JSON line per query: {\"query_id\", \"results\": [{\"id\", \"score\"}]}.") var json = false
    @OptionGroup var tuning: SearchTuningOptions

    func validate() throws {
        guard (query == nil) != (queries == nil) else { throw ValidationError("give exactly one of --query and --queries") }
        guard k >= 1 && k <= 100_000 else { throw ValidationError("-k must be between 1 and 100000") }
    }

    func run() throws {
        let opened = try IndexWithModel.open(index: index, model: model, readOnly: true)
        let qs = try loadQueries(query: query, queriesFile: queries)
        let encoded = try encodeQueries(qs.map(\.text), encoder: opened.encoder)
        let threads = tuning.threadCount
        try opened.index.withSnapshot { snap in
            let params = tuning.parameters(k: k, for: snap)
            let results: [[ScoredDocument]]
            if exhaustive {
                results = try MaxSimSearcher.exhaustiveBatch(queries: encoded, in: snap, k: k, threads: threads)
            } else if encoded.count == 1 {
                results = [try MaxSimSearcher.search(query: encoded[0], in: snap, k: k, parameters: params, threads: threads)]
            } else {
                results = try MaxSimSearcher.searchBatch(queries: encoded, in: snap, k: k, parameters: params, threads: threads).results
            }
            for (q, hits) in zip(qs, results) {
                if json {
                    var rows: [[String: Any]] = []
                    for h in hits {
                        rows.append(["id": try snap.externalId(of: h.docId) ?? "", "score": Double(h.score)])
                    }
                    printJSONLine(["query_id": query == nil ? q.id : NSNull(), "results": rows] as [String: Any])
                } else {
                    if qs.count > 1 || query == nil { print("query \(q.id): \(q.text)") }
                    for (rank, h) in hits.enumerated() {
                        let doc = try snap.document(h.docId)
                        print(String(format: "%3d  %8.4f  ", rank + 1, h.score) + (doc?.id ?? "?") + "  " + snippet(doc))
                    }
                    if hits.isEmpty { print("  (no results)") }
                }
            }
        }
    }
}

/// One line of a stored document for people: the title, else the start of the text.
func snippet(_ doc: IndexStoredDocument?, width: Int = 90) -> String {
    guard let doc else { return "" }
    let base = (doc.title?.isEmpty == false ? doc.title : doc.text) ?? ""
    let flat = base.replacingOccurrences(of: "\n", with: " ")
    return flat.count > width ? String(flat.prefix(width - 1)) + "…" : flat
}
