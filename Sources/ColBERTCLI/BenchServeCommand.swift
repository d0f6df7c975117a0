import ArgumentParser
import ColBERTCore
import ColBERTServer
import Foundation

/// `colbert bench serve`: client-side QPS and latency percentiles of a running server.
struct BenchServeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "Load a running server with concurrent search clients; report QPS and p50/p95/p99."
    )

    @Option(name: .long, help: "Path of the server's Unix domain socket.")
    var socket: String

    @Option(name: .long, help: "Concurrent client connections (each sends one request at a time).")
    var clients: Int = 4

    @Option(name: .long, help: "Total number of search requests.")
    var queries: Int = 1000

    @Option(name: .long, help: "Query texts: a BEIR queries.jsonl (uses \"text\") or one query per line.")
    var queriesFile: String?

    @Option(name: .shortAndLong, help: "Results per query.")
    var k: Int = 10

    @Option(name: .long, help: "Warm-up requests before timing (not counted).")
    var warmup: Int = 20

    @Flag(name: .long, help: "Send the queries pre-encoded (vectors_b64, encoded once by the server before timing), so took_ms is the search alone.")
    var preEncoded = false

    @Flag(name: .long, help: "Print the figures as one JSON object.")
    var json = false

    static let builtinQueries = [
        "what causes inflammation in the lungs", "effects of vitamin d on bone density",
        "protein folding and misfolding diseases", "gene expression in cancer cells",
        "treatment of type 2 diabetes", "antibiotic resistance in bacteria",
        "sleep deprivation and memory", "immune response to viral infection",
    ]

    func validate() throws {
        guard clients >= 1 else { throw ValidationError("--clients must be at least 1") }
        guard queries >= 1 else { throw ValidationError("--queries must be at least 1") }
        guard k >= 1 else { throw ValidationError("-k must be at least 1") }
    }

    func loadQueries() throws -> [String] {
        guard let queriesFile else { return Self.builtinQueries }
        var texts: [String] = []
        for line in try JSONLinesReader(path: queriesFile, maxLineBytes: 1 << 20) {
            guard case .line(_, let bytes) = line, !bytes.isEmpty else { continue }
            if let v = try? JSONValue.parse(Array(bytes)), let t = v["text"]?.stringValue {
                texts.append(t)
            } else {
                texts.append(String(decoding: bytes, as: UTF8.self))
            }
        }
        guard !texts.isEmpty else { throw CLIError("no queries in \(queriesFile)") }
        return texts
    }

    mutating func run() async throws {
        let texts = try loadQueries()
        // Encoded once for the warm-up and the timed run alike.
        let forms = preEncoded ? try await ServeBenchmark.encodedQueries(socketPath: socket, queries: texts)
                               : ServeBenchmark.textQueries(texts)
        if warmup > 0 {
            _ = try await ServeBenchmark.runSearch(socketPath: socket, clients: 1, total: warmup, queries: forms, k: k)
        }
        let result = try await ServeBenchmark.runSearch(socketPath: socket, clients: clients, total: queries, queries: forms, k: k)
        if json {
            var pairs = result.json.objectValue ?? []
            pairs.insert(("clients", .number(Double(clients))), at: 0)
            pairs.insert(("k", .number(Double(k))), at: 1)
            pairs.insert(("pre_encoded", .bool(preEncoded)), at: 2)
            print(JSONValue.object(pairs).serialized())
        } else {
            print("bench serve: \(clients) clients, k=\(k)\(preEncoded ? ", pre-encoded" : ""): " + result.summary)
        }
        if result.errors > 0 && result.errors == result.operations {
            throw CLIError("every request failed: \(result.firstError ?? "?")")
        }
    }
}
