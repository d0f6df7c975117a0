import Foundation
import Testing
@testable import ColBERTServer

private func corpusDocuments(_ n: Int) -> JSONValue {
    let words = ["protein", "cell", "gene", "virus", "immune", "cancer", "brain", "sleep", "bone", "lung",
                 "insulin", "bacteria", "memory", "heart", "blood", "drug", "trial", "mouse", "human", "dose"]
    var rng = SystemRandomNumberGenerator()
    return .array((0..<n).map { i in
        let text = (0..<12).map { _ in words[Int.random(in: 0..<words.count, using: &rng)] }.joined(separator: " ")
        return .object([("id", .string("doc\(i)")), ("text", .string(text)), ("metadata", ["n": .number(Double(i))])])
    })
}

@Suite struct BenchTests {
    /// The load generator against the fake backend; with COLBERT_SERVER_BENCH=1 it runs longer
    /// and prints server overhead (server round trip minus in-process search of the same backend).
    @Test func serveBenchmarkMeasuresTheServer() async throws {
        let long = ProcessInfo.processInfo.environment["COLBERT_SERVER_BENCH"] == "1"
        let total = long ? 5000 : 300
        let backend = FakeBackend()
        try await withServer(backend: backend, configure: { $0.threads = 2 }) { _, path, backend in
            let c = try await ServerClient.connect(socketPath: path)
            #expect(try await c.send(["op": "add", "documents": corpusDocuments(50)])["ok"] == true)
            await c.close()
            let queries = ["protein cell", "immune virus", "sleep memory brain", "insulin dose"]
            for clients in long ? [1, 4, 16] : [4] {
                let served = try await ServeBenchmark.runSearch(socketPath: path, clients: clients, total: total, queries: queries, k: 10)
                #expect(served.operations == total)
                #expect(served.errors == 0, "\(served.firstError ?? "")")
                #expect(served.latency.p50 <= served.latency.p99)
                // Every search response carries took_ms, so the overhead is known per request.
                #expect(served.overhead?.count == total)
                #expect((served.server?.p50 ?? .infinity) <= served.latency.p50)
                let encoded = try backend.encode(queries, kind: .query)
                let local = try await ServeBenchmark.run(clients: clients, total: total) { _ in
                    { i in _ = try backend.search([encoded[i % encoded.count]], options: SearchOptions(k: 10)) }
                }
                #expect(local.operations == total)
                // The same queries pre-encoded: every search answered, its took_ms known.
                let pre = try await ServeBenchmark.runSearch(socketPath: path, clients: clients, total: total, queries: queries,
                                                             k: 10, preEncoded: true)
                #expect(pre.operations == total && pre.errors == 0, "\(pre.firstError ?? "")")
                #expect(pre.overhead?.count == total)
                if long {
                    print("served   \(clients) clients: \(served.summary)")
                    print("in-proc  \(clients) clients: \(local.summary)")
                    print("overhead p50 \(((served.latency.p50 - local.latency.p50) * 1000).rounded()) µs per request")
                }
            }
        }
    }

    /// A pre-encoded run sends the server's own encoding of each query, so it finds what the
    /// text run finds; an encode failure is an error, not an empty benchmark.
    @Test func preEncodedQueriesAreTheServersEncoding() async throws {
        try await withServer { _, path, _ in
            let c = try await ServerClient.connect(socketPath: path)
            defer { Task { await c.close() } }
            #expect(try await c.send(["op": "add", "documents": corpusDocuments(20)])["ok"] == true)
            let queries = (0..<40).map { "query \($0) protein" }
            let forms = try await ServeBenchmark.encodedQueries(socketPath: path, queries: queries)
            #expect(forms.count == queries.count)
            for (text, form) in zip(queries, forms).prefix(3) {
                let byText = try await c.send(["op": "search", "query": .string(text), "k": 5])
                let byVectors = try await c.send(.object([("op", "search"), ("k", 5)] + form))
                #expect(byVectors["ok"] == true && byVectors["results"] == byText["results"])
            }
        }
        let missing = makeSocketPath()
        defer { removeSocketDirectory(missing) }
        await #expect(throws: (any Error).self) { _ = try await ServeBenchmark.encodedQueries(socketPath: missing, queries: ["x"]) }
    }

    /// COLBERT_SERVER_BENCH=1: pure server overhead — ping and search on an empty index, whose
    /// backend work is a few microseconds — with 1 and 4 clients.
    @Test func serverOverhead() async throws {
        guard ProcessInfo.processInfo.environment["COLBERT_SERVER_BENCH"] == "1" else { return }
        try await withServer(configure: { $0.threads = 2 }) { _, path, backend in
            for clients in [1, 4] {
                let ping = try await ServeBenchmark.run(clients: clients, total: 5000) { _ in
                    let c = try await ServerClient.connect(socketPath: path)
                    return { _ in _ = try await c.send(["op": "ping"]) }
                }
                let search = try await ServeBenchmark.runSearch(socketPath: path, clients: clients, total: 5000, queries: ["a b c"], k: 10)
                let local = try await ServeBenchmark.run(clients: clients, total: 5000) { _ in
                    { _ in _ = try backend.search(try backend.encode(["a b c"], kind: .query), options: SearchOptions(k: 10)) }
                }
                print("empty index, \(clients) clients: ping \(ping.summary)")
                print("empty index, \(clients) clients: search \(search.summary)")
                print("empty index, \(clients) clients: in-process encode+search \(local.summary)")
            }
        }
    }

    /// COLBERT_SERVER_DEMO_SOCKET=/tmp/x.sock keeps a fake-backend server up for
    /// COLBERT_SERVER_DEMO_SECONDS (default 30) to try `colbert query` and `colbert bench serve`.
    @Test func demoServer() async throws {
        guard let path = ProcessInfo.processInfo.environment["COLBERT_SERVER_DEMO_SOCKET"] else { return }
        let seconds = Double(ProcessInfo.processInfo.environment["COLBERT_SERVER_DEMO_SECONDS"] ?? "") ?? 30
        var config = ServerConfiguration(socketPath: path)
        config.threads = 2
        let server = ColBERTServer(backend: FakeBackend(), configuration: config, logger: quietLogger())
        try await server.start()
        let c = try await ServerClient.connect(socketPath: path)
        _ = try await c.send(["op": "add", "documents": corpusDocuments(200)])
        await c.close()
        try await Task.sleep(for: .seconds(seconds))
        await server.stop()
    }
}
