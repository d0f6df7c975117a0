import Foundation
import Testing
@testable import ColBERTServer

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Bad clients of every kind: the server answers with the right code or closes the one
/// connection, never crashes, never loses a stored document, never buffers without bound.
@Suite(.serialized) struct FaultTests {
    /// After a fault, a fresh connection must still get answers and the data must be intact.
    private func expectHealthy(_ path: String, documents: Int? = nil, backend: FakeBackend? = nil) async throws {
        let c = try await ServerClient.connect(socketPath: path)
        let r = try await c.send(["op": "ping", "id": "health"])
        #expect(r["ok"] == true)
        if let documents, let backend { #expect(backend.documentCount == documents) }
        await c.close()
    }

    @Test func malformedLinesGetBadJSON() async throws {
        try await withServer { _, path, _ in
            let s = try RawSocket(path: path)
            let lines: [[UInt8]] = [
                Array("not json".utf8), Array("{\"op\":".utf8), Array("}{".utf8), Array("\"just a string\"".utf8),
                Array("123".utf8), Array("null".utf8), [0xFF, 0xFE, 0xFD],
                Array("{\"op\":\"ping\",\"id\":\"".utf8) + [0xC3, 0x28] + Array("\"}".utf8),  // invalid UTF-8
                Array("{\"op\":\"ping\"}".utf8) + [0x00],  // trailing NUL
                Array("{\"op\":\"pi".utf8) + [0x00] + Array("ng\"}".utf8),  // NUL inside a string
                [0x00, 0x00, 0x00],
                Array(String(repeating: "[", count: 100_000).utf8) + Array(String(repeating: "]", count: 100_000).utf8),
                Array(("{\"op\":\"ping\",\"id\":" + String(repeating: "{\"a\":", count: 5000) + "1" + String(repeating: "}", count: 5000) + "}").utf8),
            ]
            for line in lines {
                await s.send(line + [0x0A])
                let r = parse(await s.readLine())
                #expect(errorCode(r) == "bad_json", "line starting \(line.prefix(20))")
                #expect(r?["id"] == .null)
            }
            // The same connection still works.
            await s.send(Array("{\"op\":\"ping\",\"id\":7}\n".utf8))
            #expect(parse(await s.readLine())?["id"] == 7)
            // Blank lines get no response.
            await s.send(Array("\n  \r\n\t\n{\"op\":\"ping\",\"id\":9}\n".utf8))
            #expect(parse(await s.readLine())?["id"] == 9)
            // CRLF line endings are accepted.
            await s.send(Array("{\"op\":\"ping\",\"id\":8}\r\n".utf8))
            #expect(parse(await s.readLine())?["id"] == 8)
        }
    }

    @Test func wrongTypesAndBadKGetBadRequest() async throws {
        try await withServer { _, path, _ in
            let c = try await ServerClient.connect(socketPath: path)
            defer { Task { await c.close() } }
            let requests = [
                #"{"op":"search"}"#, #"{"op":"search","query":""}"#, #"{"op":"search","query":["a"]}"#,
                #"{"op":"search","query":"a","vectors":[[1]]}"#,
                #"{"op":"search","query":"a","k":-1}"#, #"{"op":"search","query":"a","k":0}"#,
                #"{"op":"search","query":"a","k":1001}"#, #"{"op":"search","query":"a","k":1e300}"#,
                #"{"op":"search","query":"a","k":2.5}"#, #"{"op":"search","query":"a","k":"10"}"#,
                #"{"op":"search","query":"a","k":true}"#, #"{"op":"search","query":"a","include_text":"yes"}"#,
                #"{"op":"search","query":"a","params":[1]}"#, #"{"op":"search","query":"a","ids":"d1"}"#,
                #"{"op":"search","vectors":[]}"#, #"{"op":"search","vectors":[["a","b","c","d","e","f","g","h"]]}"#,
                #"{"op":"search","vectors":[[1,2,3,4,5,6,7,8]],"model":5}"#,
                #"{"op":"search_batch"}"#, #"{"op":"search_batch","queries":[]}"#, #"{"op":"search_batch","queries":[5]}"#,
                #"{"op":"search_batch","queries":"a"}"#,
                #"{"op":"add"}"#, #"{"op":"add","documents":{}}"#, #"{"op":"add","documents":[{"id":1,"text":"a"}]}"#,
                #"{"op":"add","documents":[{"id":"","text":"a"}]}"#, #"{"op":"add","documents":[{"id":"a"}]}"#,
                #"{"op":"add","documents":["a"]}"#, #"{"op":"add","documents":[]}"#,
                #"{"op":"delete"}"#, #"{"op":"delete","ids":[1]}"#, #"{"op":"delete","ids":[]}"#,
                #"{"op":"delete","ids":["a","a"]}"#,
                #"{"op":"get","ids":null}"#, #"{"op":"get","ids":["a"],"missing_ok":1}"#,
                #"{"op":"encode"}"#, #"{"op":"encode","texts":[]}"#, #"{"op":"encode","texts":["a"],"kind":"image"}"#,
                #"{"op":"encode","texts":[1]}"#, #"{"op":null}"#, #"{"op":["ping"]}"#,
            ]
            for line in requests {
                let r = parse(try await c.sendLine(line))
                #expect(errorCode(r) == "bad_request", "\(line) -> \(r?.serialized() ?? "nil")")
            }
        }
    }

    @Test func lineLimitIsExact() async throws {
        try await withServer(configure: { $0.limits.maxLineBytes = 1000 }) { _, path, _ in
            let s = try RawSocket(path: path)
            let prefix = "{\"op\":\"ping\",\"id\":\""
            let fill = 1000 - prefix.utf8.count - 2
            let exact = prefix + String(repeating: "x", count: fill) + "\"}"
            #expect(exact.utf8.count == 1000)
            await s.send(Array(exact.utf8) + [0x0A])
            #expect(parse(await s.readLine())?["ok"] == true)
            let over = prefix + String(repeating: "x", count: fill + 1) + "\"}"
            await s.send(Array(over.utf8) + [0x0A])
            #expect(errorCode(parse(await s.readLine())) == "too_large")
            #expect(await s.readLine() == nil)  // closed after too_large
            try await expectHealthy(path)
        }
    }

    @Test func hundredMiBLineIsRejectedWithoutReadingItAll() async throws {
        try await withServer { server, path, _ in
            let s = try RawSocket(path: path, receiveTimeout: 10, sendTimeout: 10)
            // Pipelined before the huge line: must still be answered first.
            await s.send(Array("{\"op\":\"ping\",\"id\":1}\n".utf8))
            let huge = [UInt8](repeating: UInt8(ascii: "a"), count: 100 << 20)
            let (sent, error) = await s.send(huge)
            #expect(sent < 16 << 20, "the server read \(sent) bytes of a line over its 1 MiB limit")
            #expect(error == EPIPE || error == ECONNRESET)
            #expect(parse(await s.readLine())?["id"] == 1)
            let r = parse(await s.readLine())
            #expect(errorCode(r) == "too_large")
            #expect(server.serverStats()["errors"]?["too_large"]?.intValue == 1)
            try await expectHealthy(path)
        }
    }

    @Test func truncatedLinesAreNotExecuted() async throws {
        try await withServer { _, path, backend in
            // Full close in the middle of a line.
            do {
                let s = try RawSocket(path: path)
                await s.send(Array("{\"op\":\"add\",\"documents\":[{\"id\":\"t1\",\"text\":\"half".utf8))
            }
            // Half close: the complete request is answered, the partial one reported, then EOF.
            let s = try RawSocket(path: path)
            await s.send(Array("{\"op\":\"ping\",\"id\":1}\n{\"op\":\"add\",\"documents\":[{\"id\":\"t2\"".utf8))
            s.shutdownWrite()
            let (lines, closed) = await s.readUntilClosed()
            #expect(closed)
            #expect(lines.count == 2)
            #expect(parse(lines.first)?["id"] == 1)
            #expect(errorCode(parse(lines.last)) == "bad_json")
            try await expectHealthy(path, documents: 0, backend: backend)
        }
    }

    @Test func halfClosedClientGetsAllAnswers() async throws {
        try await withServer { _, path, _ in
            let s = try RawSocket(path: path)
            var batch: [UInt8] = []
            for i in 0..<50 { batch += Array("{\"op\":\"search\",\"query\":\"q\",\"id\":\(i)}\n".utf8) }
            await s.send(batch)
            s.shutdownWrite()
            let (lines, closed) = await s.readUntilClosed()
            #expect(closed)
            #expect(lines.compactMap { parse($0)?["id"]?.intValue } == Array(0..<50))
        }
    }

    @Test func clientsThatDisconnectMidRequestLoseNothing() async throws {
        try await withServer { server, path, backend in
            for i in 0..<20 {
                let s = try RawSocket(path: path)
                await s.send(Array("{\"op\":\"add\",\"documents\":[{\"id\":\"k\(i)\",\"text\":\"kept \(i)\"}]}\n".utf8))
                await s.send(Array("{\"op\":\"search\",\"query\":\"kept\",\"params\":{\"delay_ms\":20}}\n".utf8))
                // closed here, before any response is read
            }
            // Every add that was fully received is applied exactly once.
            var count = 0
            for _ in 0..<300 {
                count = backend.documentCount
                if count == 20 && server.serverStats()["queued_requests"]?.intValue == 0 { break }
                try await Task.sleep(for: .milliseconds(10))
            }
            #expect(count == 20)
            try await expectHealthy(path, documents: 20, backend: backend)
        }
    }

    @Test func clientThatNeverReadsIsThrottled() async throws {
        try await withServer { server, path, _ in
            let setup = try await ServerClient.connect(socketPath: path)
            let big = String(repeating: "lorem ipsum ", count: 10_000)  // ~120 KB per get response
            #expect(try await setup.send(["op": "add", "documents": [["id": "big", "text": .string(big)]]])["ok"] == true)

            let s = try RawSocket(path: path, receiveTimeout: 5, sendTimeout: 1)
            let request = Array("{\"op\":\"get\",\"ids\":[\"big\"]}\n".utf8)
            var chunk: [UInt8] = []
            for _ in 0..<100 { chunk += request }
            var sentRequests = 0
            var blocked = false
            for _ in 0..<2000 {
                let (sent, error) = await s.send(chunk)
                sentRequests += sent / request.count
                if error != 0 { blocked = true; break }
            }
            // The server stopped reading: the client could not push 200,000 requests.
            #expect(blocked)
            #expect(sentRequests < 200_000)
            // Its work in progress is bounded by the per-connection limit.
            #expect(server.processor.metrics.admitted <= server.configuration.limits.maxInFlightPerConnection)
            // Others are still served meanwhile.
            #expect(try await setup.send(["op": "ping"])["ok"] == true)
            await setup.close()
        }
    }

    @Test func thousandConcurrentConnections() async throws {
        // 1,000 client + 1,000 server sockets in this process.
        var limit = rlimit()
        getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
        guard limit.rlim_cur >= 2200 else {
            print("skipping: RLIMIT_NOFILE is \(limit.rlim_cur), need 2200 for 1,000 connections")
            return
        }
        try await withServer(configure: { $0.limits.maxConnections = 1100; $0.limits.maxQueuedRequests = 2000 }) { server, path, _ in
            let clients = try await withThrowingTaskGroup(of: ServerClient.self) { g in
                for _ in 0..<1000 {
                    g.addTask {
                        // A full accept backlog answers EAGAIN; clients retry, as real ones would.
                        for _ in 0..<20 {
                            if let c = try? await ServerClient.connect(socketPath: path) { return c }
                            try await Task.sleep(for: .milliseconds(20))
                        }
                        return try await ServerClient.connect(socketPath: path)
                    }
                }
                return try await g.reduce(into: [ServerClient]()) { $0.append($1) }
            }
            #expect(clients.count == 1000)
            let ok = try await withThrowingTaskGroup(of: Bool.self) { g in
                for (n, c) in clients.enumerated() {
                    g.addTask {
                        let r = try await c.send(["op": "search", "id": .number(Double(n)), "query": "hello world", "k": 3])
                        return r["ok"] == true && r["id"]?.intValue == n
                    }
                }
                return try await g.reduce(0) { $0 + ($1 ? 1 : 0) }
            }
            #expect(ok == 1000)
            #expect(server.serverStats()["connections"]?.intValue == 1000)
            for c in clients { await c.close() }
        }
    }

    @Test func idleConnectionsAreClosed() async throws {
        try await withServer(configure: { $0.limits.idleTimeoutSeconds = 0.2 }) { _, path, _ in
            let s = try RawSocket(path: path, receiveTimeout: 5)
            let t0 = ContinuousClock.now
            #expect(await s.readLine() == nil)
            #expect(ContinuousClock.now - t0 < .seconds(3))
        }
    }
}
