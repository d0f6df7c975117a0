import ColBERTCore
import ColBERTIndex
import Foundation

/// Where an index remembers its model: a small file in the index directory, written by
/// `index build`, so `search`, `eval`, `serve` and `add` need no `--model`. The fingerprint in
/// LMDB stays the authority: a model found here that does not match it is refused.
enum ModelLocation {
    static let fileName = "model-path"

    static func record(modelDirectory: String, forIndex index: String) {
        let absolute = URL(fileURLWithPath: modelDirectory).standardizedFileURL.path
        let file = URL(fileURLWithPath: index).appendingPathComponent(fileName)
        try? Data((absolute + "\n").utf8).write(to: file, options: .atomic)
    }

    static func resolve(index: String, override: String?) throws -> String {
        if let override { return override }
        let file = URL(fileURLWithPath: index).appendingPathComponent(fileName)
        guard let data = try? Data(contentsOf: file),
              let path = String(data: data, encoding: .utf8)?.trimmingCharacters(in: .whitespacesAndNewlines),
              !path.isEmpty else {
            throw CLIError("the index at \(index) does not record its model; pass --model DIR")
        }
        return path
    }
}

/// An opened index together with the encoder of its model, checked against the index's fingerprint.
struct IndexWithModel {
    let index: ColBERTIndex
    let encoder: any TokenEncoder
    let modelDirectory: String

    static func open(index path: String, model: String?, readOnly: Bool) throws -> IndexWithModel {
        guard FileManager.default.fileExists(atPath: path) else { throw CLIError("no index at \(path)") }
        do {
            let index = try ColBERTIndex.open(at: path, readOnly: readOnly)
            let modelDirectory = try ModelLocation.resolve(index: path, override: model)
            let encoder = try loadTokenEncoder(modelDirectory: modelDirectory)
            try index.checkModel(fingerprint: encoder.fingerprint, dim: encoder.dim)
            return IndexWithModel(index: index, encoder: encoder, modelDirectory: modelDirectory)
        } catch let e as CLIError {
            throw e
        } catch {
            throw CLIError("\(error)")
        }
    }
}
