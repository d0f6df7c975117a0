import ColBERTCore
import Foundation
@testable import ColBERTModel

/// Locations of the reference material; tests skip (with a printed reason) when it is absent.
enum Fixtures {
    static let packageRoot: URL = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    /// `<root>/../shared`, or one level further up for git worktrees under a sibling folder.
    static let shared: URL? = {
        for c in [packageRoot.appendingPathComponent("../shared"), packageRoot.appendingPathComponent("../../shared")] {
            let u = c.standardizedFileURL
            if FileManager.default.fileExists(atPath: u.appendingPathComponent("reference/README.md").path) { return u }
        }
        return nil
    }()

    static func reference(_ name: String) -> URL? {
        guard let shared else {
            print("SKIP: /shared reference folder not found next to \(packageRoot.path)")
            return nil
        }
        return shared.appendingPathComponent("reference/\(name)")
    }

    /// The full minilm-colbert checkpoint: an assembled copy, else fetched into .build/test-models.
    static let minilmCheckpoint: URL? = {
        let candidates = [packageRoot.appendingPathComponent("models/minilm-colbert"),
                          packageRoot.appendingPathComponent(".build/test-models/minilm-colbert")]
        func complete(_ u: URL) -> Bool {
            FileManager.default.fileExists(atPath: u.appendingPathComponent("model.safetensors").path) &&
                FileManager.default.fileExists(atPath: u.appendingPathComponent("1_Dense/model.safetensors").path)
        }
        if let found = candidates.first(where: complete) { return found }
        let tool = packageRoot.appendingPathComponent("tools/fetch-default-model")
        guard FileManager.default.isExecutableFile(atPath: tool.path) else {
            print("SKIP: minilm-colbert weights absent and \(tool.path) not found")
            return nil
        }
        let p = Process()
        p.executableURL = tool
        p.arguments = [candidates[1].path]
        do {
            try p.run()
            p.waitUntilExit()
        } catch {
            print("SKIP: could not run \(tool.path): \(error)")
            return nil
        }
        guard p.terminationStatus == 0, complete(candidates[1]) else {
            print("SKIP: tools/fetch-default-model failed (status \(p.terminationStatus)); minilm parity not checked")
            return nil
        }
        return candidates[1]
    }()

    struct Side: Decodable {
        let input_ids: [Int32]
        let attention_mask: [UInt8]
        let kept_positions: [Int]
        let kept_input_ids: [Int32]
    }
    struct Item: Decodable { let id: String; let query: Side; let document: Side }
    struct Tokens: Decodable { let items: [Item] }
    struct Scores: Decodable { let query_ids: [String]; let document_ids: [String]; let scores: [[Double]] }
    struct Text: Decodable { let id: String; let text: String }

    static func tokens(_ checkpoint: URL) throws -> Tokens {
        try JSONDecoder().decode(Tokens.self, from: Data(contentsOf: checkpoint.appendingPathComponent("outputs/tokens.json")))
    }
    static func scores(_ checkpoint: URL) throws -> Scores {
        try JSONDecoder().decode(Scores.self, from: Data(contentsOf: checkpoint.appendingPathComponent("outputs/scores.json")))
    }
    static func texts(_ checkpoint: URL) throws -> [Text] {
        try String(decoding: Data(contentsOf: checkpoint.appendingPathComponent("outputs/texts.jsonl")), as: UTF8.self)
            .split(separator: "\n").map { try JSONDecoder().decode(Text.self, from: Data($0.utf8)) }
    }
}

/// score(q, d) = Σ_i max_j ⟨q_i, d_j⟩.
func maxSim(_ q: TokenEmbeddings, _ d: TokenEmbeddings) -> Double {
    var total = 0.0
    for i in 0..<q.count {
        var best = -Float.infinity
        for j in 0..<d.count {
            var s: Float = 0
            for k in 0..<q.dim { s += q.vectors[i * q.dim + k] * d.vectors[j * d.dim + k] }
            best = max(best, s)
        }
        total += Double(best)
    }
    return total
}
