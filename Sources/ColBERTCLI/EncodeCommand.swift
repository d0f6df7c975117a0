import ArgumentParser
import ColBERTCore
import ColBERTModel
import Foundation

/// `colbert encode`: JSON lines `{"id", "text"}` in, JSON lines `{"id", "token_ids", "embeddings"}` out.
struct EncodeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "encode",
        abstract: "Encode texts (JSON lines with id and text) into ColBERT token embeddings.",
        discussion: """
            Writes one JSON line per input: {"id": ..., "token_ids": [...], "embeddings": [[...], ...]}, where \
            token_ids[i] is the token of row embeddings[i]. A bad input line is reported with its line number \
            on standard error; the other lines are still encoded and the exit status is non-zero.
            """)

    @Option(name: .long, help: "PyLate checkpoint directory.")
    var model: String

    @Option(name: .long, help: "query or document.")
    var kind: String

    @Option(name: .long, help: "JSON lines input file (default: standard input).")
    var input: String?

    @Option(name: .customLong("batch-size"), help: "Texts per forward pass.")
    var batchSize: Int = 32

    init() {}

    func validate() throws {
        guard EncodeKind(rawValue: kind) != nil else { throw ValidationError("--kind must be query or document (got \(kind))") }
        guard batchSize > 0 else { throw ValidationError("--batch-size must be positive") }
    }

    func run() throws {
        guard let kind = EncodeKind(rawValue: kind) else { throw ValidationError("--kind must be query or document") }
        let encoder = try loadColBERTEncoder(modelDirectory: model)
        var reader: JSONLinesReader
        do { reader = try JSONLinesReader(path: input) } catch { throw CLIError("cannot read input: \(error)") }
        let out = BufferedOutput()
        var failures = 0
        var pending: [(id: String, text: String)] = []

        func flush() throws {
            guard !pending.isEmpty else { return }
            let result = try encoder.encode(pending.map(\.text), kind: kind, batchSize: batchSize)
            for (item, emb) in zip(pending, result) { out.write(Self.line(id: item.id, embeddings: emb)) }
            pending.removeAll(keepingCapacity: true)
        }

        while let entry = reader.next() {
            switch entry {
            case .tooLong(let number, let length):
                failures += 1
                FileHandle.standardError.write(Data("line \(number): line too long (\(length) bytes)\n".utf8))
            case .line(let number, let bytes):
                switch Self.parse(bytes) {
                case .skip: continue
                case .failure(let why):
                    failures += 1
                    FileHandle.standardError.write(Data("line \(number): \(why)\n".utf8))
                case .item(let id, let text):
                    pending.append((id, text))
                    if pending.count >= batchSize { try flush() }
                }
            }
        }
        try flush()
        out.flush()
        if failures > 0 {
            FileHandle.standardError.write(Data("\(failures) input line(s) failed\n".utf8))
            throw ExitCode(1)
        }
    }

    enum Parsed { case skip, failure(String), item(id: String, text: String) }

    /// Parses one input line; `id` comes back already serialised as JSON.
    static func parse(_ bytes: Data) -> Parsed {
        if bytes.allSatisfy({ $0 == 0x20 || $0 == 0x09 || $0 == 0x0D }) { return .skip }
        guard String(validating: bytes, as: UTF8.self) != nil else { return .failure("invalid UTF-8") }
        guard let any = try? JSONSerialization.jsonObject(with: bytes) else { return .failure("invalid JSON") }
        guard let obj = any as? [String: Any] else { return .failure("expected a JSON object") }
        guard let textValue = obj["text"], !(textValue is NSNull) else { return .failure("missing \"text\"") }
        guard let text = textValue as? String else { return .failure("\"text\" is not a string") }
        return .item(id: JSONText.value(obj["id"]), text: text)
    }

    static func line(id: String, embeddings e: TokenEmbeddings) -> String {
        var s = "{\"id\":\(id),\"token_ids\":["
        s.reserveCapacity(32 + e.count * (8 + e.dim * 12))
        s += e.tokenIds.map(String.init).joined(separator: ",")
        s += "],\"embeddings\":["
        for r in 0..<e.count {
            if r > 0 { s += "," }
            s += "["
            for d in 0..<e.dim {
                if d > 0 { s += "," }
                s += e.vectors[r * e.dim + d].description
            }
            s += "]"
        }
        s += "]}\n"
        return s
    }
}

/// Minimal JSON serialisation of a value parsed by JSONSerialization (for echoing ids back).
enum JSONText {
    static func value(_ v: Any?) -> String {
        guard let v, !(v is NSNull) else { return "null" }
        if let s = v as? String { return string(s) }
        if let data = try? JSONSerialization.data(withJSONObject: v, options: [.fragmentsAllowed, .sortedKeys]),
           let s = String(data: data, encoding: .utf8) { return s }
        return "null"
    }

    static func string(_ s: String) -> String {
        var out = "\""
        for u in s.unicodeScalars {
            switch u {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            default:
                if u.value < 0x20 { out += String(format: "\\u%04x", u.value) } else { out.unicodeScalars.append(u) }
            }
        }
        return out + "\""
    }
}

/// Collects output and writes it to standard output in large chunks.
final class BufferedOutput {
    private var buffer = Data()
    func write(_ s: String) {
        buffer.append(contentsOf: s.utf8)
        if buffer.count >= 1 << 20 { flush() }
    }
    func flush() {
        if !buffer.isEmpty { FileHandle.standardOutput.write(buffer); buffer.removeAll(keepingCapacity: true) }
    }
}
