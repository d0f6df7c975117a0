import ArgumentParser
import ColBERTServer
import Foundation

/// `colbert query`: asks a running server, for people (a ranked table) or scripts (`--json`,
/// `--raw` pass-through of JSON lines).
struct QueryCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "query",
        abstract: "Search a running `colbert serve` over its Unix socket.",
        discussion: """
            With a query text: prints rank, id, score and a text snippet. --json prints the server's
            response line instead. --raw forwards JSON request lines from standard input and prints
            each response line (see docs/PROTOCOL.md).
            """
    )

    @Option(name: .long, help: "Path of the server's Unix domain socket.")
    var socket: String

    @Argument(help: "The query text (omit with --raw).")
    var text: String?

    @Option(name: .shortAndLong, help: "Number of results.")
    var k: Int = 10

    @Flag(name: .long, help: "Print the raw JSON response.")
    var json = false

    @Flag(name: .long, help: "Pass-through: JSON request lines from stdin, response lines to stdout.")
    var raw = false

    @Option(name: .long, help: "Search parameters as a JSON object, e.g. '{\"nprobe\": 8}'.")
    var params: String?

    @Option(name: .long, help: "Characters of text to show per result (0: none).")
    var snippet: Int = 80

    @Flag(name: .long, help: "Scores as the mean over query tokens (in [-1, 1]) instead of the MaxSim sum.")
    var meanScores = false

    func validate() throws {
        if raw {
            guard text == nil else { throw ValidationError("--raw reads requests from standard input; give no query text") }
        } else {
            guard let text, !text.isEmpty else { throw ValidationError("give a query text (or --raw)") }
            guard k >= 1 else { throw ValidationError("-k must be at least 1") }
        }
    }

    mutating func run() async throws {
        let client: ServerClient
        do {
            client = try await ServerClient.connect(socketPath: socket)
        } catch {
            throw CLIError("\(error) (is `colbert serve` running?)")
        }
        defer { Task { await client.close() } }
        if raw {
            while let line = readLine(strippingNewline: true) {
                if line.allSatisfy(\.isWhitespace) { continue }
                print(try await client.sendLine(line))
            }
            return
        }
        var request: [(String, JSONValue)] = [
            ("op", "search"), ("id", "query"), ("query", .string(text ?? "")), ("k", .number(Double(k))),
            ("include_text", .bool(snippet > 0 || json)),
        ]
        if meanScores { request.append(("score", "mean")) }
        if let params {
            guard let value = try? JSONValue.parse(params), value.objectValue != nil else {
                throw CLIError("--params must be a JSON object")
            }
            request.append(("params", value))
        }
        var bytes: [UInt8] = []
        JSONValue.object(request).write(into: &bytes)
        let line = try await client.sendLine(String(decoding: bytes, as: UTF8.self))
        if json {
            print(line)
        }
        guard let response = try? JSONValue.parse(line, maxDepth: 1024) else { throw CLIError("unreadable response: \(line.prefix(200))") }
        guard response["ok"]?.boolValue == true else {
            let code = response["error"]?["code"]?.stringValue ?? "?"
            let message = response["error"]?["message"]?.stringValue ?? ""
            throw CLIError("server error \(code): \(message)")
        }
        if json { return }
        let results = response["results"]?.arrayValue ?? []
        if results.isEmpty { print("no results"); return }
        let idWidth = min(40, results.map { ($0["id"]?.stringValue ?? "").count }.max() ?? 2)
        for (rank, r) in results.enumerated() {
            let id = r["id"]?.stringValue ?? "?"
            let score = r["score"]?.doubleValue ?? .nan
            var row = "\(String(rank + 1).leftPad(4))  \(id.padding(toLength: max(idWidth, id.count), withPad: " ", startingAt: 0))  \(String(format: "%8.4f", score))"
            if snippet > 0, let t = r["text"]?.stringValue {
                let flat = t.split(whereSeparator: \.isNewline).joined(separator: " ")
                row += "  " + (flat.count > snippet ? String(flat.prefix(snippet)) + "…" : flat)
            }
            print(row)
        }
    }
}

extension String {
    fileprivate func leftPad(_ n: Int) -> String { count >= n ? self : String(repeating: " ", count: n - count) + self }
}
