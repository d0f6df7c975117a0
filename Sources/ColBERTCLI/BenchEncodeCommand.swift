import ArgumentParser
import ColBERTCore
import ColBERTModel
import Foundation

/// `colbert bench encode`: batch document throughput and single-query latency of the native encoder.
struct BenchEncodeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "encode",
        abstract: "Benchmark the encoder: documents/s and kept tokens/s in batches, single-query latency, peak RSS.")

    @Option(name: .long, help: "PyLate checkpoint directory.")
    var model: String

    @Option(name: .long, help: "BEIR corpus.jsonl (_id, title, text). Default: index/corpus.jsonl.")
    var corpus: String?

    @Option(name: .long, help: "Use at most this many documents.")
    var limit: Int?

    @Option(name: .long, help: "Number of single-query encodes to time.")
    var queries: Int = 200

    @Option(name: .long, help: "OpenBLAS threads (default: all cores).")
    var threads: Int?

    @Option(name: .customLong("batch-size"), help: "Documents per forward pass.")
    var batchSize: Int = ColBERTEncoder.defaultBatchSize

    @Flag(name: .long, help: "Print the figures as one JSON object.")
    var json = false

    init() {}

    func validate() throws {
        if let limit, limit <= 0 { throw ValidationError("--limit must be positive") }
        if let threads, threads <= 0 { throw ValidationError("--threads must be positive") }
        guard queries >= 0 else { throw ValidationError("--queries must not be negative") }
        guard batchSize > 0 else { throw ValidationError("--batch-size must be positive") }
    }

    func run() throws {
        let threadCount = threads ?? ProcessInfo.processInfo.activeProcessorCount
        let loadStart = DispatchTime.now()
        let encoder = try loadColBERTEncoder(modelDirectory: model, threadCount: threadCount)
        let loadSeconds = Self.seconds(since: loadStart)

        let corpusPath = corpus ?? "index/corpus.jsonl"
        guard FileManager.default.fileExists(atPath: corpusPath) else {
            throw CLIError(corpus == nil ? "no --corpus given and the sample corpus index/corpus.jsonl is not here" : "corpus \(corpusPath) not found")
        }
        let documents = try Self.readCorpus(corpusPath, limit: limit)
        guard !documents.isEmpty else { throw CLIError("corpus \(corpusPath) has no documents") }

        // Batch document encoding.
        let docStart = DispatchTime.now()
        let encoded = try encoder.encode(documents, kind: .document, batchSize: batchSize)
        let docSeconds = Self.seconds(since: docStart)
        let keptTokens = encoded.reduce(0) { $0 + $1.count }

        // Single-query latency: BEIR queries next to the corpus when present, else document openings.
        var queryTexts = Self.readQueries(next: corpusPath)
        if queryTexts.isEmpty {
            queryTexts = documents.map { $0.split(separator: " ").prefix(12).joined(separator: " ") }
        }
        var recorder = LatencyRecorder()
        if queries > 0 {
            for i in 0..<min(5, queryTexts.count) { _ = try encoder.encode([queryTexts[i]], kind: .query) }
            for i in 0..<queries {
                let text = queryTexts[i % queryTexts.count]
                let t0 = DispatchTime.now().uptimeNanoseconds
                _ = try encoder.encode([text], kind: .query)
                recorder.record(nanoseconds: DispatchTime.now().uptimeNanoseconds - t0)
            }
        }
        let latency = recorder.summary
        let rssMB = peakRSSBytes().map { Double($0) / 1_048_576 }

        let figures: [(String, String)] = [
            ("model", JSONText.string(model)),
            ("threads", "\(threadCount)"),
            ("load_seconds", String(format: "%.3f", loadSeconds)),
            ("documents", "\(documents.count)"),
            ("kept_tokens", "\(keptTokens)"),
            ("document_seconds", String(format: "%.3f", docSeconds)),
            ("documents_per_second", String(format: "%.1f", Double(documents.count) / docSeconds)),
            ("kept_tokens_per_second", String(format: "%.0f", Double(keptTokens) / docSeconds)),
            ("queries", "\(queries)"),
            ("query_p50_ms", String(format: "%.3f", latency.p50)),
            ("query_p95_ms", String(format: "%.3f", latency.p95)),
            ("query_p99_ms", String(format: "%.3f", latency.p99)),
            ("query_mean_ms", String(format: "%.3f", latency.mean)),
            ("peak_rss_mb", rssMB.map { String(format: "%.1f", $0) } ?? "null"),
        ]
        if json {
            print("{" + figures.map { "\"\($0.0)\":\($0.1)" }.joined(separator: ",") + "}")
        } else {
            let f = Dictionary(uniqueKeysWithValues: figures)
            print("model            \(model) (dim \(encoder.dim), \(threadCount) BLAS threads, loaded in \(f["load_seconds"] ?? "") s)")
            print("documents        \(documents.count) docs, \(keptTokens) kept tokens in \(f["document_seconds"] ?? "") s")
            print("throughput       \(f["documents_per_second"] ?? "") docs/s, \(f["kept_tokens_per_second"] ?? "") kept tokens/s")
            if queries > 0 {
                print("query latency    p50 \(f["query_p50_ms"] ?? "") ms, p95 \(f["query_p95_ms"] ?? "") ms, p99 \(f["query_p99_ms"] ?? "") ms (\(queries) single-query encodes)")
            }
            print("peak RSS         \(f["peak_rss_mb"] ?? "") MB")
        }
    }

    static func seconds(since start: DispatchTime) -> Double {
        Double(DispatchTime.now().uptimeNanoseconds - start.uptimeNanoseconds) / 1e9
    }

    /// BEIR documents as PyLate sees them: `(title + " " + text).strip()` (the strip happens in the encoder).
    static func readCorpus(_ path: String, limit: Int?) throws -> [String] {
        var reader = try JSONLinesReader(path: path)
        var docs: [String] = []
        while let entry = reader.next() {
            if let limit, docs.count >= limit { break }
            guard case .line(let number, let bytes) = entry else { throw CLIError("\(path): an over-long line") }
            if bytes.isEmpty { continue }
            guard let obj = (try? JSONSerialization.jsonObject(with: bytes)) as? [String: Any] else {
                throw CLIError("\(path) line \(number): not a JSON object")
            }
            let title = obj["title"] as? String ?? ""
            let text = obj["text"] as? String ?? ""
            docs.append(title + " " + text) // the encoder applies Python's strip()
        }
        return docs
    }

    static func readQueries(next corpusPath: String) -> [String] {
        let url = URL(fileURLWithPath: corpusPath).deletingLastPathComponent().appendingPathComponent("queries.jsonl")
        guard var reader = try? JSONLinesReader(path: url.path) else { return [] }
        var out: [String] = []
        while let entry = reader.next() {
            guard case .line(_, let bytes) = entry,
                  let obj = (try? JSONSerialization.jsonObject(with: bytes)) as? [String: Any],
                  let text = obj["text"] as? String else { continue }
            out.append(text)
        }
        return out
    }
}
