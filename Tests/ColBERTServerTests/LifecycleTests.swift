import Foundation
import Testing
@testable import ColBERTServer

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Binds a socket at `path` and closes it without unlinking: a stale socket file.
private func makeStaleSocket(_ path: String) throws {
    #if canImport(Darwin)
    let fd = socket(AF_UNIX, SOCK_STREAM, 0)
    #else
    let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
    #endif
    let rc = withUnixAddress(path) { bind(fd, $0, $1) }
    close(fd)
    guard rc == 0 else { throw RawSocketError.failed("bind", errno) }
}

private func mode(_ path: String) -> UInt16? {
    var st = stat()
    guard lstat(path, &st) == 0 else { return nil }
    return UInt16(st.st_mode & 0o7777)
}

@Suite struct LifecycleTests {
    @Test func socketHasMode0600AndIsRemovedOnExit() async throws {
        let path = makeSocketPath()
        defer { removeSocketDirectory(path) }
        let server = ColBERTServer(backend: FakeBackend(), configuration: ServerConfiguration(socketPath: path), logger: quietLogger())
        try await server.start()
        #expect(mode(path) == 0o600)
        await server.stop()
        #expect(!FileManager.default.fileExists(atPath: path))
    }

    @Test func customSocketMode() async throws {
        try await withServer(configure: { $0.socketMode = 0o660 }) { _, path, _ in
            #expect(mode(path) == 0o660)
        }
    }

    @Test func staleSocketIsReplaced() async throws {
        let path = makeSocketPath()
        defer { removeSocketDirectory(path) }
        try makeStaleSocket(path)
        #expect(FileManager.default.fileExists(atPath: path))
        let server = ColBERTServer(backend: FakeBackend(), configuration: ServerConfiguration(socketPath: path), logger: quietLogger())
        try await server.start()
        let c = try await ServerClient.connect(socketPath: path)
        #expect(try await c.send(["op": "ping"])["ok"] == true)
        await c.close()
        await server.stop()
    }

    @Test func otherFilesAreLeftAlone() async throws {
        let path = makeSocketPath()
        defer { removeSocketDirectory(path) }
        // A regular file.
        try Data("precious".utf8).write(to: URL(fileURLWithPath: path))
        let s1 = ColBERTServer(backend: FakeBackend(), configuration: ServerConfiguration(socketPath: path), logger: quietLogger())
        await #expect(throws: ServerStartError.self) { try await s1.start() }
        #expect(try String(contentsOfFile: path, encoding: .utf8) == "precious")
        await s1.stop()
        // A directory.
        try FileManager.default.removeItem(atPath: path)
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: false)
        let s2 = ColBERTServer(backend: FakeBackend(), configuration: ServerConfiguration(socketPath: path), logger: quietLogger())
        do {
            try await s2.start()
            Issue.record("a directory at the socket path was accepted")
        } catch let e as ServerStartError {
            #expect(e.description.contains("directory"))
        }
        var isDir: ObjCBool = false
        #expect(FileManager.default.fileExists(atPath: path, isDirectory: &isDir) && isDir.boolValue)
        await s2.stop()
    }

    @Test func liveSocketIsLeftAlone() async throws {
        try await withServer { _, path, _ in
            let second = ColBERTServer(backend: FakeBackend(), configuration: ServerConfiguration(socketPath: path), logger: quietLogger())
            do {
                try await second.start()
                Issue.record("a second server took over a live socket")
            } catch let e as ServerStartError {
                #expect(e.description.contains("already listening"))
            }
            await second.stop()
            // The first server is unaffected and its socket still exists.
            let c = try await ServerClient.connect(socketPath: path)
            #expect(try await c.send(["op": "ping"])["ok"] == true)
            await c.close()
        }
    }

    @Test func overlongPathIsAClearError() async throws {
        let path = "/tmp/" + String(repeating: "x", count: 120)
        let server = ColBERTServer(backend: FakeBackend(), configuration: ServerConfiguration(socketPath: path), logger: quietLogger())
        do {
            try await server.start()
            Issue.record("an over-long path was accepted")
        } catch let e as ServerStartError {
            #expect(e.description.contains("at most 107"))
        }
        await server.stop()
    }

    @Test func shutdownDrainsInFlightRequests() async throws {
        let path = makeSocketPath()
        defer { removeSocketDirectory(path) }
        let server = ColBERTServer(backend: FakeBackend(), configuration: ServerConfiguration(socketPath: path), logger: quietLogger())
        try await server.start()
        let c = try await ServerClient.connect(socketPath: path)
        async let slow = c.send(["op": "search", "id": "slow", "query": "x", "params": ["delay_ms": 300]])
        try await Task.sleep(for: .milliseconds(100))
        server.initiateShutdown()
        let r = try await slow
        #expect(r["ok"] == true && r["id"] == "slow")
        await server.waitUntilStopped()
        #expect(!FileManager.default.fileExists(atPath: path))
        // New connections are refused.
        await #expect(throws: (any Error).self) { _ = try await ServerClient.connect(socketPath: path) }
        await c.close()
        await server.stop()
    }

    @Test func shutdownDeadlineClosesStuckConnections() async throws {
        let path = makeSocketPath()
        defer { removeSocketDirectory(path) }
        var config = ServerConfiguration(socketPath: path)
        config.shutdownDeadlineSeconds = 0.2
        let server = ColBERTServer(backend: FakeBackend(), configuration: config, logger: quietLogger())
        try await server.start()
        let c = try await ServerClient.connect(socketPath: path)
        async let slow = c.send(["op": "search", "query": "x", "params": ["delay_ms": 1500]])
        try await Task.sleep(for: .milliseconds(50))
        let t0 = ContinuousClock.now
        await server.stop()
        #expect(ContinuousClock.now - t0 < .seconds(3))
        do {
            _ = try await slow
            Issue.record("a request past the shutdown deadline was still answered")
        } catch {}
        await c.close()
    }

    @Test func sigtermDrainsAndReturns() async throws {
        let path = makeSocketPath()
        defer { removeSocketDirectory(path) }
        let task = Task {
            try await runServer(backend: FakeBackend(), configuration: ServerConfiguration(socketPath: path), logger: quietLogger())
        }
        var client: ServerClient?
        for _ in 0..<300 where client == nil {
            try await Task.sleep(for: .milliseconds(10))
            client = try? await ServerClient.connect(socketPath: path)
        }
        let c = try #require(client)
        async let slow = c.send(["op": "search", "id": "in-flight", "query": "x", "params": ["delay_ms": 300]])
        try await Task.sleep(for: .milliseconds(100))
        // The ServiceGroup traps SIGTERM (it is ignored by the process and handled as an event).
        kill(getpid(), SIGTERM)
        let r = try await slow
        #expect(r["ok"] == true && r["id"] == "in-flight")
        try await task.value
        #expect(!FileManager.default.fileExists(atPath: path))
        await c.close()
    }

    @Test func runReturnsOnCancellation() async throws {
        let path = makeSocketPath()
        defer { removeSocketDirectory(path) }
        let server = ColBERTServer(backend: FakeBackend(), configuration: ServerConfiguration(socketPath: path), logger: quietLogger())
        let task = Task { try await server.run() }
        var up = false
        for _ in 0..<200 where !up {
            try await Task.sleep(for: .milliseconds(10))
            up = (try? await ServerClient.connect(socketPath: path)) != nil
        }
        #expect(up)
        task.cancel()
        try await task.value
        #expect(!FileManager.default.fileExists(atPath: path))
    }
}
