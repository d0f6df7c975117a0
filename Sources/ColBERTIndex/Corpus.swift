import ColBERTCore
import Foundation

/// One document of a BEIR-style corpus.
public struct CorpusDocument: Sendable, Equatable {
    public var id: String
    public var title: String
    public var text: String
    /// The remaining fields of the corpus line, as a JSON object text (nil when there are none).
    public var metadataJSON: String?

    public init(id: String, title: String = "", text: String, metadataJSON: String? = nil) {
        self.id = id
        self.title = title
        self.text = text
        self.metadataJSON = metadataJSON
    }

    /// What the encoder sees: `(title + " " + text).strip()`, as BEIR/PyLate build it.
    public var encodedText: String {
        (title + " " + text).trimmingCharacters(in: .whitespacesAndNewlines)
    }
}

/// A corpus line that could not be indexed.
public struct CorpusIssue: Sendable, Equatable, CustomStringConvertible {
    public var line: Int
    public var reason: String
    public init(line: Int, reason: String) { self.line = line; self.reason = reason }
    public var description: String { "line \(line): \(reason)" }
}

/// What to do with a bad corpus line.
public enum OnErrorPolicy: String, Sendable, CaseIterable {
    /// Report the line and go on.
    case skip
    /// Stop; batches committed before the bad line stay in the index.
    case abort
}

struct LineError: Error { var reason: String }

extension Result where Failure == LineError {
    static func fail(_ reason: String) -> Result { .failure(LineError(reason: reason)) }
}

enum CorpusParser {
    static let maxIdBytes = 4096

    /// Parses one BEIR line: `_id` (or `id`), optional `title`, `text`; other fields become metadata.
    static func parse(_ bytes: Data) -> Result<CorpusDocument, LineError> {
        guard String(validating: bytes, as: UTF8.self) != nil else { return .fail("invalid UTF-8") }
        let object: Any
        do {
            object = try JSONSerialization.jsonObject(with: bytes, options: [])
        } catch {
            return .fail("invalid JSON")
        }
        guard let dict = object as? [String: Any] else { return .fail("not a JSON object") }
        let rawId = dict["_id"] ?? dict["id"]
        let id: String
        switch rawId {
        case let s as String: id = s
        case nil, is NSNull: return .fail("missing id (\"_id\" or \"id\")")
        default:
            guard let n = rawId as? Int else { return .fail("id must be a string or an integer") }
            id = String(n)
        }
        guard !id.isEmpty else { return .fail("empty id") }
        guard id.utf8.count <= maxIdBytes else { return .fail("id longer than \(maxIdBytes) bytes") }
        func field(_ name: String) -> Result<String, LineError> {
            switch dict[name] {
            case nil, is NSNull: return .success("")
            case let s as String: return .success(s)
            default: return .fail("\"\(name)\" must be a string")
            }
        }
        let title: String, text: String
        switch field("title") { case .success(let s): title = s; case .failure(let m): return .failure(m) }
        switch field("text") { case .success(let s): text = s; case .failure(let m): return .failure(m) }
        var rest = dict
        for key in ["_id", "id", "title", "text"] { rest.removeValue(forKey: key) }
        var metadata: String?
        if !rest.isEmpty, let data = try? JSONSerialization.data(withJSONObject: rest, options: [.sortedKeys]) {
            metadata = String(decoding: data, as: UTF8.self)
        }
        let doc = CorpusDocument(id: id, title: title, text: text, metadataJSON: metadata)
        guard !doc.encodedText.isEmpty else { return .fail("empty text") }
        return .success(doc)
    }

    /// Identifies a corpus file well enough to resume a build on it: path, size and a hash of its head.
    static func identity(path: String) throws -> String {
        guard let handle = FileHandle(forReadingAtPath: path) else { throw IndexError.cannotReadCorpus(path) }
        defer { try? handle.close() }
        let size = (try? FileManager.default.attributesOfItem(atPath: path)[.size] as? Int) ?? -1
        let head = handle.readData(ofLength: 1 << 20)
        let absolute = URL(fileURLWithPath: path).standardizedFileURL.path
        return "\(absolute)|\(size)|\(Fingerprint.sha256Hex(head))"
    }
}
