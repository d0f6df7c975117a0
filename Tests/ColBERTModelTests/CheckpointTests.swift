import ColBERTCore
import Foundation
import Testing
@testable import ColBERTModel

/// Loading errors, on modified copies of the tiny reference checkpoint.
@Suite struct CheckpointTests {
    /// Copies tiny-colbert (without outputs/) to a temporary folder and applies `edit`.
    static func tinyCopy(_ edit: (URL) throws -> Void) throws -> URL? {
        guard let tiny = Fixtures.reference("tiny-colbert") else { return nil }
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("tiny-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        for name in try FileManager.default.contentsOfDirectory(atPath: tiny.path) where name != "outputs" {
            try FileManager.default.copyItem(at: tiny.appendingPathComponent(name), to: dir.appendingPathComponent(name))
        }
        try edit(dir)
        return dir
    }

    static func editJSON(_ url: URL, _ change: (inout [String: Any]) -> Void) throws {
        var obj = try JSONSerialization.jsonObject(with: Data(contentsOf: url)) as? [String: Any] ?? [:]
        change(&obj)
        try JSONSerialization.data(withJSONObject: obj).write(to: url)
    }

    static func load(_ dir: URL) throws -> ColBERTEncoder {
        try ColBERTEncoder(checkpointDirectory: dir, tokenizer: try VocabOnlyTokenizer(dir.appendingPathComponent("tokenizer.json")))
    }

    @Test func loadsTinySettings() throws {
        guard let dir = try Self.tinyCopy({ _ in }) else { return }
        defer { try? FileManager.default.removeItem(at: dir) }
        let e = try Self.load(dir)
        #expect(e.dim == 16)
        #expect(e.settings.queryPrefixId == 30522 && e.settings.documentPrefixId == 30523)
        #expect(e.settings.queryLength == 32 && e.settings.documentLength == 180)
        #expect(e.settings.maskId == 103 && e.settings.clsId == 101 && e.settings.sepId == 102)
        let expectedSkip: [Int32] = Array(999...1013) + Array(1024...1036) + Array(1063...1066)
        #expect(e.settings.skiplistIds == expectedSkip)
        #expect(e.fingerprint.count == 64)
        // Same weights and settings give the same fingerprint; a changed setting changes it.
        #expect(try Self.load(dir).fingerprint == e.fingerprint)
        try Self.editJSON(dir.appendingPathComponent("config_sentence_transformers.json")) { $0["query_length"] = 24 }
        let changed = try Self.load(dir)
        #expect(changed.settings.queryLength == 24)
        #expect(changed.fingerprint != e.fingerprint)
    }

    @Test func refusesUnsupportedArchitecture() throws {
        guard let roberta = try Self.tinyCopy({ dir in
            try Self.editJSON(dir.appendingPathComponent("config.json")) { $0["model_type"] = "roberta" }
        }) else { return }
        defer { try? FileManager.default.removeItem(at: roberta) }
        #expect { try Self.load(roberta) } throws: { e in
            if case .unsupportedArchitecture(let m) = e as? CheckpointError { return m.contains("roberta") } else { return false }
        }

        guard let bare = try Self.tinyCopy({ dir in
            try FileManager.default.removeItem(at: dir.appendingPathComponent("modules.json"))
        }) else { return }
        defer { try? FileManager.default.removeItem(at: bare) }
        #expect { try Self.load(bare) } throws: { e in
            if case .unsupportedArchitecture(let m) = e as? CheckpointError { return m.contains("HF_ColBERT") } else { return false }
        }
    }

    @Test func refusesUnsupportedDenseHead() throws {
        guard let dir = try Self.tinyCopy({ dir in
            try Self.editJSON(dir.appendingPathComponent("1_Dense/config.json")) { $0["activation_function"] = "torch.nn.modules.activation.Tanh" }
        }) else { return }
        defer { try? FileManager.default.removeItem(at: dir) }
        #expect { try Self.load(dir) } throws: { e in
            if case .unsupported(let m) = e as? CheckpointError { return m.contains("Tanh") } else { return false }
        }
    }

    @Test func refusesMissingTensorAndWrongShape() throws {
        guard let missing = try Self.tinyCopy({ dir in
            let header = #"{"embeddings.word_embeddings.weight":{"dtype":"F32","shape":[1,1],"data_offsets":[0,4]}}"#
            try SafeTensorsWriter.file(header: header, data: SafeTensorsWriter.f32([0])).write(to: dir.appendingPathComponent("model.safetensors"))
        }) else { return }
        defer { try? FileManager.default.removeItem(at: missing) }
        #expect { try Self.load(missing) } throws: { e in
            if case .missingTensor = e as? SafeTensorsError { return true } else { return false }
        }

        guard let shape = try Self.tinyCopy({ dir in
            try Self.editJSON(dir.appendingPathComponent("config.json")) { $0["intermediate_size"] = 128 }
        }) else { return }
        defer { try? FileManager.default.removeItem(at: shape) }
        #expect { try Self.load(shape) } throws: { e in
            if case .wrongShape(_, let t, _, _) = e as? SafeTensorsError { return t.contains("intermediate") } else { return false }
        }
    }

    @Test func refusesMissingDirectoryAndFiles() throws {
        #expect(throws: CheckpointError.notADirectory("/nonexistent/model")) {
            try ColBERTEncoder(checkpointDirectory: URL(fileURLWithPath: "/nonexistent/model"), tokenizer: VocabOnlyTokenizer(vocab: [:]))
        }
        guard let dir = try Self.tinyCopy({ dir in
            try FileManager.default.removeItem(at: dir.appendingPathComponent("1_Dense/model.safetensors"))
        }) else { return }
        defer { try? FileManager.default.removeItem(at: dir) }
        #expect { try Self.load(dir) } throws: { e in
            if case .missingFile(let p) = e as? CheckpointError { return p.hasSuffix("1_Dense/model.safetensors") } else { return false }
        }
    }
}
