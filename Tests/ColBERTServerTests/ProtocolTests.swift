import Foundation
import Testing
@testable import ColBERTServer

private let corpus: [(String, String)] = [
    ("d1", "apple banana cherry"),
    ("d2", "dog cat mouse"),
    ("d3", "apple pie recipe"),
    ("d4", "quantum physics lecture"),
]

private func addCorpus(_ client: ServerClient) async throws {
    let docs: [JSONValue] = corpus.map { id, text in
        .object([("id", .string(id)), ("text", .string(text)), ("metadata", ["len": .number(Double(text.count))])])
    }
    let r = try await client.send(["op": "add", "id": "add-1", "documents": .array(docs)])
    #expect(r["ok"] == true)
    #expect(r["added"]?.intValue == corpus.count)
}

@Suite struct ProtocolTests {
    @Test func pingEchoesTheId() async throws {
        try await withServer { _, path, _ in
            let c = try await ServerClient.connect(socketPath: path)
            defer { Task { await c.close() } }
            let r = try await c.send(["op": "ping", "id": "abc"])
            #expect(r["ok"] == true && r["id"] == "abc" && r["pong"] == true)
            let r2 = try await c.send(["op": "ping", "id": 42])
            #expect(r2["id"] == 42)
            let r3 = try await c.send(["op": "ping"])
            #expect(r3["id"] == .null)
        }
    }

    @Test func addSearchGetDeleteStats() async throws {
        try await withServer { _, path, backend in
            let c = try await ServerClient.connect(socketPath: path)
            defer { Task { await c.close() } }
            try await addCorpus(c)

            let s = try await c.send(["op": "search", "id": 1, "query": "apple", "k": 2, "include_text": true, "include_metadata": true])
            let results = try #require(s["results"]?.arrayValue)
            #expect(results.count == 2)
            let ids = Set(results.compactMap { $0["id"]?.stringValue })
            #expect(ids == ["d1", "d3"])
            #expect(results[0]["text"]?.stringValue != nil)
            #expect(results[0]["metadata"]?["len"] != nil)
            let s0 = try #require(results[0]["score"]?.doubleValue)
            let s1 = try #require(results[1]["score"]?.doubleValue)
            #expect(s0 >= s1)

            // Without include flags there is no text or metadata.
            let plain = try await c.send(["op": "search", "query": "apple", "k": 1])
            #expect(plain["results"]?.arrayValue?.first?["text"] == nil)

            // Restriction to a set of ids.
            let restricted = try await c.send(["op": "search", "query": "apple", "k": 5, "ids": ["d2", "d4"]])
            #expect(Set(restricted["results"]?.arrayValue?.compactMap { $0["id"]?.stringValue } ?? []) == ["d2", "d4"])

            // Replacing an existing id.
            let rep = try await c.send(["op": "add", "documents": [["id": "d2", "text": "apple apple"]]])
            #expect(rep["added"]?.intValue == 0 && rep["replaced"]?.intValue == 1)

            let g = try await c.send(["op": "get", "ids": ["d2", "d4"]])
            let docs = try #require(g["documents"]?.arrayValue)
            #expect(docs.map { $0["id"] } == ["d2", "d4"])
            #expect(docs[0]["text"] == "apple apple")
            #expect(docs[1]["metadata"]?["len"]?.intValue == 23)
            #expect(docs[1]["tokens"]?.intValue == 3)

            let gm = try await c.send(["op": "get", "ids": ["d1", "zz"], "missing_ok": true])
            #expect(gm["ok"] == true && gm["missing"] == ["zz"] && gm["documents"]?.arrayValue?.count == 1)

            let d = try await c.send(["op": "delete", "ids": ["d1", "nope"]])
            #expect(d["deleted"]?.intValue == 1 && d["missing"] == ["nope"])
            #expect(backend.documentCount == 3)

            let st = try await c.send(["op": "stats"])
            #expect(st["index"]?["documents"]?.intValue == 3)
            let server = try #require(st["server"])
            #expect(server["uptime_s"]?.doubleValue != nil)
            #expect(server["requests"]?["search"]?.intValue == 3)
            #expect(server["requests"]?["add"]?.intValue == 2)
            #expect(server["latency"]?["search"]?["p50_ms"]?.doubleValue != nil)
            #expect(server["latency"]?["search"]?["p99_ms"]?.doubleValue != nil)
        }
    }

    @Test func searchBatchAndPreEncodedVectors() async throws {
        try await withServer { _, path, _ in
            let c = try await ServerClient.connect(socketPath: path)
            defer { Task { await c.close() } }
            try await addCorpus(c)
            let e = try await c.send(["op": "encode", "texts": ["quantum"], "kind": "query"])
            #expect(e["dim"]?.intValue == 8 && e["model"] == "fake-model-1")
            let vectors = try #require(e["embeddings"]?.arrayValue?.first?["vectors"])
            #expect(vectors.arrayValue?.count == 1)
            #expect(e["embeddings"]?.arrayValue?.first?["token_ids"]?.arrayValue?.count == 1)

            let byVectors = try await c.send(["op": "search", "vectors": vectors, "model": "fake-model-1", "k": 1])
            #expect(byVectors["results"]?.arrayValue?.first?["id"] == "d4")

            let b = try await c.send([
                "op": "search_batch", "id": "b", "k": 1,
                "queries": ["dog", ["query": "apple pie"], ["vectors": vectors]],
            ])
            let lists = try #require(b["results"]?.arrayValue)
            #expect(lists.count == 3)
            #expect(lists[0].arrayValue?.first?["id"] == "d2")
            #expect(lists[1].arrayValue?.first?["id"] == "d3")
            #expect(lists[2].arrayValue?.first?["id"] == "d4")

            let docEnc = try await c.send(["op": "encode", "texts": ["a b c", "d"], "kind": "document"])
            #expect(docEnc["embeddings"]?.arrayValue?.map { $0["vectors"]?.arrayValue?.count } == [3, 1])
        }
    }

    @Test func base64VectorsAreTheSameQueryAsNumbers() async throws {
        try await withServer { _, path, _ in
            let c = try await ServerClient.connect(socketPath: path)
            defer { Task { await c.close() } }
            try await addCorpus(c)
            let texts: JSONValue = ["quantum physics", "apple"]
            let numbers = try #require(try await c.send(["op": "encode", "texts": texts])["embeddings"]?.arrayValue)
            let packed = try #require(try await c.send(["op": "encode", "texts": texts, "format": "base64"])["embeddings"]?.arrayValue)
            #expect(packed.count == 2 && packed.allSatisfy { $0["vectors"] == nil })
            for (n, p) in zip(numbers, packed) {
                #expect(p["token_ids"] == n["token_ids"])
                // The same float32 values, bit for bit.
                let data = try #require(p["vectors_b64"]?.stringValue.flatMap { Data(base64Encoded: $0) })
                let decoded = data.withUnsafeBytes { raw in
                    (0..<data.count / 4).map { Float(bitPattern: UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: $0 * 4, as: UInt32.self))) }
                }
                let expected = (n["vectors"]?.arrayValue ?? []).flatMap { $0.arrayValue ?? [] }.compactMap { $0.doubleValue.map(Float.init) }
                #expect(decoded.count == 16 || decoded.count == 8)
                #expect(decoded.map(\.bitPattern) == expected.map(\.bitPattern))
            }

            let b64 = try #require(packed[0]["vectors_b64"])
            let byNumbers = try await c.send(["op": "search", "vectors": try #require(numbers[0]["vectors"]), "k": 3])
            let byPacked = try await c.send(["op": "search", "vectors_b64": b64, "model": "fake-model-1", "k": 3])
            #expect(byPacked["ok"] == true)
            #expect(byPacked["results"] == byNumbers["results"])
            #expect(byPacked["results"]?.arrayValue?.first?["id"] == "d4")
            let batch = try await c.send(["op": "search_batch", "k": 1, "queries": ["dog", ["vectors_b64": b64]]])
            #expect(batch["results"]?.arrayValue?.map { $0.arrayValue?.first?["id"] } == ["d2", "d4"])

            func code(_ request: JSONValue) async throws -> String? { errorCode(try await c.send(request)) }
            // Not base64, empty, a partial float, a NaN, a number instead of a string.
            #expect(try await code(["op": "search", "vectors_b64": "not base64!"]) == "bad_request")
            #expect(try await code(["op": "search", "vectors_b64": ""]) == "bad_request")
            #expect(try await code(["op": "search", "vectors_b64": "AAAAAAA="]) == "bad_request")
            let nan = Data([UInt8](repeating: 0, count: 28) + [0x00, 0x00, 0xC0, 0x7F]).base64EncodedString()
            #expect(try await code(["op": "search", "vectors_b64": .string(nan)]) == "bad_request")
            #expect(try await code(["op": "search", "vectors_b64": 5]) == "bad_request")
            // Two query forms at once, and an unknown encode format.
            #expect(try await code(["op": "search", "vectors_b64": b64, "query": "x"]) == "bad_request")
            #expect(try await code(["op": "search", "vectors_b64": b64, "vectors": [[1, 0, 0, 0, 0, 0, 0, 0]]]) == "bad_request")
            #expect(try await code(["op": "encode", "texts": ["x"], "format": "npy"]) == "bad_request")
            // Not whole rows of the model's 8 dimensions (3 floats), or another model's vectors.
            let short = Data([UInt8](repeating: 0, count: 12)).base64EncodedString()
            #expect(try await code(["op": "search", "vectors_b64": .string(short)]) == "model_mismatch")
            #expect(try await code(["op": "search", "vectors_b64": b64, "model": "other"]) == "model_mismatch")
            #expect(try await code(["op": "search_batch", "queries": [["vectors_b64": .string(short)]]]) == "model_mismatch")
        }
    }

    @Test func meanScoresAreSumsOverQueryTokens() async throws {
        try await withServer { _, path, _ in
            let c = try await ServerClient.connect(socketPath: path)
            defer { Task { await c.close() } }
            try await addCorpus(c)
            // "apple pie recipe" is three query tokens for the test encoder.
            let sum = try #require(try await c.send(["op": "search", "query": "apple pie recipe", "k": 3])["results"]?.arrayValue)
            let mean = try #require(try await c.send(["op": "search", "query": "apple pie recipe", "k": 3, "score": "mean"])["results"]?.arrayValue)
            #expect(sum.count == 3 && mean.map { $0["id"] } == sum.map { $0["id"] })
            for (s, m) in zip(sum, mean) {
                let sv = try #require(s["score"]?.doubleValue), mv = try #require(m["score"]?.doubleValue)
                #expect(abs(mv - sv / 3) < 1e-6 && mv <= 1 && mv >= -1)
            }
            #expect(try await c.send(["op": "search", "query": "apple pie recipe", "k": 3, "score": "sum"])["results"] == .array(sum))
            // search_batch: each list by its own query's tokens.
            let batch = try #require(try await c.send(["op": "search_batch", "k": 1, "score": "mean", "queries": ["dog", "apple pie recipe"]])["results"]?.arrayValue)
            let dogSum = try #require(try await c.send(["op": "search", "query": "dog", "k": 1])["results"]?.arrayValue?.first?["score"]?.doubleValue)
            #expect(abs((batch[0].arrayValue?.first?["score"]?.doubleValue ?? 0) - dogSum) < 1e-6)
            #expect(abs((batch[1].arrayValue?.first?["score"]?.doubleValue ?? 0) - (sum[0]["score"]?.doubleValue ?? 0) / 3) < 1e-6)
            #expect(errorCode(try await c.send(["op": "search", "query": "dog", "score": "max"])) == "bad_request")
            #expect(errorCode(try await c.send(["op": "search_batch", "queries": ["dog"], "score": 1])) == "bad_request")
        }
    }

    @Test func everyErrorCode() async throws {
        try await withServer(configure: { $0.limits.maxBatch = 4; $0.limits.maxK = 50; $0.limits.maxQueryVectors = 2 }) { _, path, _ in
            let c = try await ServerClient.connect(socketPath: path)
            defer { Task { await c.close() } }
            try await addCorpus(c)
            func code(_ line: String) async throws -> String? { errorCode(parse(try await c.sendLine(line))) }

            // bad_json: syntax, not an object, and the id is unknown (null).
            let bad = parse(try await c.sendLine("{\"op\": \"ping\", "))
            #expect(errorCode(bad) == "bad_json" && bad?["id"] == .null && bad?["ok"] == false)
            #expect(bad?["error"]?["message"]?.stringValue?.isEmpty == false)
            #expect(try await code("[1,2]") == "bad_json")
            // bad_request: missing op, wrong types, out of range.
            #expect(try await code(#"{"id":1}"#) == "bad_request")
            #expect(try await code(#"{"op":5}"#) == "bad_request")
            #expect(try await code(#"{"op":"search","query":5}"#) == "bad_request")
            #expect(try await code(#"{"op":"search","query":" \n"}"#) == "bad_request")
            #expect(try await code(#"{"op":"search_batch","queries":["dog",""]}"#) == "bad_request")
            #expect(try await code(#"{"op":"search","query":"x","k":"ten"}"#) == "bad_request")
            #expect(try await code(#"{"op":"search","query":"x","k":0}"#) == "bad_request")
            #expect(try await code(#"{"op":"search","query":"x","params":{"bogus":1}}"#) == "bad_request")
            #expect(try await code(#"{"op":"add","documents":[{"id":"a","text":"x"},{"id":"a","text":"y"}]}"#) == "bad_request")
            // unknown_op, with the id echoed.
            let u = parse(try await c.sendLine(#"{"op":"frobnicate","id":"u1"}"#))
            #expect(errorCode(u) == "unknown_op" && u?["id"] == "u1")
            // too_large: a list over the batch limit.
            #expect(try await code(#"{"op":"get","ids":["a","b","c","d","e"]}"#) == "too_large")
            // too_large: a pre-encoded query with more rows than allowed, in either form.
            let row = "[1,0,0,0,0,0,0,0]"
            #expect(try await code(#"{"op":"search","vectors":[\#(row),\#(row)]}"#) == nil)
            #expect(try await code(#"{"op":"search","vectors":[\#(row),\#(row),\#(row)]}"#) == "too_large")
            let threeRows = Data(repeating: 0, count: 3 * 8 * 4).base64EncodedString()
            #expect(try await code(#"{"op":"search","vectors_b64":"\#(threeRows)"}"#) == "too_large")
            #expect(try await code(#"{"op":"search_batch","queries":[{"vectors_b64":"\#(threeRows)"}]}"#) == "too_large")
            // not_found
            let nf = parse(try await c.sendLine(#"{"op":"get","id":9,"ids":["d1","missing-doc"]}"#))
            #expect(errorCode(nf) == "not_found" && nf?["id"] == 9)
            #expect(nf?["error"]?["message"]?.stringValue?.contains("missing-doc") == true)
            // model_mismatch: wrong dimension, wrong fingerprint.
            #expect(try await code(#"{"op":"search","vectors":[[1,0,0]]}"#) == "model_mismatch")
            #expect(try await code(#"{"op":"search","vectors":[[1,0,0,0,0,0,0,0]],"model":"other"}"#) == "model_mismatch")
            // internal: a backend failure that is not a BackendError.
            #expect(try await code(#"{"op":"search","query":"x","params":{"fail":true}}"#) == "internal")
            // The connection is still usable after every error.
            #expect(parse(try await c.sendLine(#"{"op":"ping"}"#))?["ok"] == true)
        }
    }

    @Test func overloadedWhenTheQueueIsFull() async throws {
        try await withServer(configure: { $0.limits.maxQueuedRequests = 2 }) { server, path, _ in
            let c = try await ServerClient.connect(socketPath: path)
            defer { Task { await c.close() } }
            // Three slow searches pipelined: two are admitted, one is refused (which one depends
            // on scheduling); ping needs no slot.
            let slow: JSONValue = ["op": "search", "query": "x", "params": ["delay_ms": 300]]
            let responses = try await c.sendPipelined([slow, slow, slow, ["op": "ping"]])
            #expect(responses.prefix(3).filter { $0["ok"] == true }.count == 2)
            #expect(responses.prefix(3).filter { errorCode($0) == "overloaded" }.count == 1)
            #expect(responses[3]["ok"] == true)
            #expect(server.serverStats()["errors"]?["overloaded"]?.intValue == 1)
        }
    }

    @Test func overloadedWhenTooManyConnections() async throws {
        try await withServer(configure: { $0.limits.maxConnections = 2 }) { _, path, _ in
            let a = try await ServerClient.connect(socketPath: path)
            let b = try await ServerClient.connect(socketPath: path)
            #expect(try await a.send(["op": "ping"])["ok"] == true)
            #expect(try await b.send(["op": "ping"])["ok"] == true)
            let raw = try RawSocket(path: path, receiveTimeout: 5)
            let line = parse(await raw.readLine())
            #expect(errorCode(line) == "overloaded")
            #expect(await raw.readLine() == nil)  // closed after the error
            await a.close()
            // A slot frees up once a connection closes.
            var ok = false
            for _ in 0..<100 where !ok {
                try await Task.sleep(for: .milliseconds(10))
                let c = try await ServerClient.connect(socketPath: path)
                ok = (try? await c.send(["op": "ping"]))?["ok"] == true
                await c.close()
            }
            #expect(ok)
            await b.close()
        }
    }

    @Test func pipelinedResponsesKeepRequestOrder() async throws {
        try await withServer { _, path, _ in
            let c = try await ServerClient.connect(socketPath: path)
            defer { Task { await c.close() } }
            try await addCorpus(c)
            // Early requests are slower than later ones; the order must still hold.
            let requests: [JSONValue] = (0..<20).map { i in
                ["op": "search", "id": .number(Double(i)), "query": "apple", "k": 1,
                 "params": ["delay_ms": .number(Double((20 - i) * 2))]]
            }
            let responses = try await c.sendPipelined(requests)
            #expect(responses.map { $0["id"]?.intValue } == (0..<20).map { $0 })
        }
    }

    @Test func concurrentQueriesShareEncodeBatches() async throws {
        let backend = FakeBackend()
        backend.encodeDelay = 0.02
        try await withServer(backend: backend, configure: { $0.threads = 1; $0.microBatchWindowSeconds = 0.005 }) { _, path, backend in
            let clients = try await withThrowingTaskGroup(of: ServerClient.self) { g in
                for _ in 0..<16 { g.addTask { try await ServerClient.connect(socketPath: path) } }
                return try await g.reduce(into: []) { $0.append($1) }
            }
            try await withThrowingTaskGroup(of: Void.self) { g in
                for (n, c) in clients.enumerated() {
                    g.addTask {
                        let r = try await c.send(["op": "search", "query": .string("word\(n)"), "k": 1])
                        #expect(r["ok"] == true)
                    }
                }
                try await g.waitForAll()
            }
            for c in clients { await c.close() }
            let sizes = backend.batchSizes
            #expect(sizes.reduce(0, +) == 16)
            #expect(sizes.count < 16)  // some queries were encoded together
            #expect(sizes.max() ?? 0 > 1)
        }
    }

    @Test func writesAreSerialisedAndDoNotBlockSearches() async throws {
        let backend = FakeBackend()
        backend.writeDelay = 0.1
        try await withServer(backend: backend, configure: { $0.threads = 2 }) { _, path, backend in
            let writers = try await withThrowingTaskGroup(of: ServerClient.self) { g in
                for _ in 0..<4 { g.addTask { try await ServerClient.connect(socketPath: path) } }
                return try await g.reduce(into: []) { $0.append($1) }
            }
            let reader = try await ServerClient.connect(socketPath: path)
            try await withThrowingTaskGroup(of: Void.self) { g in
                for (n, w) in writers.enumerated() {
                    g.addTask {
                        let r = try await w.send(["op": "add", "documents": [["id": .string("w\(n)"), "text": .string("write \(n)")]]])
                        #expect(r["ok"] == true)
                    }
                }
                g.addTask {
                    try await Task.sleep(for: .milliseconds(30))
                    let t0 = ContinuousClock.now
                    let r = try await reader.send(["op": "search", "query": "write", "k": 5])
                    #expect(r["ok"] == true)
                    // Four 100 ms writes queue on the writer; a search does not wait for them.
                    #expect(ContinuousClock.now - t0 < .milliseconds(200))
                }
                try await g.waitForAll()
            }
            #expect(backend.maxConcurrentWriters == 1)
            #expect(backend.documentCount == 4)
            for w in writers { await w.close() }
            await reader.close()
        }
    }

    @Test func failedAddChangesNothing() async throws {
        try await withServer { _, path, backend in
            let c = try await ServerClient.connect(socketPath: path)
            defer { Task { await c.close() } }
            let r = try await c.send(["op": "add", "documents": [["id": "ok", "text": "fine"], ["id": "bad", "text": "poison"]]])
            #expect(errorCode(r) == "internal")
            #expect(backend.documentCount == 0)
            let r2 = try await c.send(["op": "add", "documents": [["id": "x", "text": 5]]])
            #expect(errorCode(r2) == "bad_request")
            #expect(backend.documentCount == 0)
        }
    }
}
