import ColBERTCore
import ColBERTTokenizer
import Foundation
import Testing
@testable import ColBERTModel

/// End to end from text: the checkpoint's own tokenizer, PyLate's input rules, the forward pass.
@Suite struct TokenizedParityTests {
    func check(checkpoint: URL, outputs: URL) throws {
        let encoder = try ColBERTEncoder(checkpointDirectory: checkpoint)
        let texts = try Fixtures.texts(outputs)
        let items = Dictionary(uniqueKeysWithValues: try Fixtures.tokens(outputs).items.map { ($0.id, $0) })
        let reference = try SafeTensorsFile(url: outputs.appendingPathComponent("outputs/embeddings.safetensors"))
        var maxDiff: Float = 0
        for kind in EncodeKind.allCases {
            let encoded = try encoder.encodeDetailed(texts.map(\.text), kind: kind, batchSize: 16)
            for (text, e) in zip(texts, encoded) {
                guard let item = items[text.id] else { Issue.record("no tokens for \(text.id)"); continue }
                let side = kind == .query ? item.query : item.document
                #expect(e.input.inputIds == side.input_ids, "input ids of \(kind) \(text.id)")
                #expect(e.input.attentionMask == side.attention_mask, "attention mask of \(kind) \(text.id)")
                #expect(e.input.keptPositions == side.kept_positions, "kept positions of \(kind) \(text.id)")
                #expect(e.embeddings.tokenIds == side.kept_input_ids, "kept ids of \(kind) \(text.id)")
                let ref = try reference.floats("\(kind.rawValue)/\(text.id)")
                guard ref.count == e.embeddings.vectors.count else { Issue.record("row count of \(kind) \(text.id)"); continue }
                for (a, b) in zip(ref, e.embeddings.vectors) { maxDiff = max(maxDiff, abs(a - b)) }
            }
        }
        print("\(checkpoint.lastPathComponent) from text: max abs embedding diff \(maxDiff)")
        #expect(maxDiff <= 1e-4)
    }

    @Test func tinyFromText() throws {
        guard let tiny = Fixtures.reference("tiny-colbert") else { return }
        try check(checkpoint: tiny, outputs: tiny)
    }

    @Test func minilmFromText() throws {
        guard let ref = Fixtures.reference("minilm-colbert"), let model = Fixtures.minilmCheckpoint else { return }
        let encoder = try ColBERTEncoder(checkpointDirectory: model)
        #expect(encoder.settings.queryPrefixId == 1 && encoder.settings.documentPrefixId == 2)
        #expect(encoder.dim == 128)
        try check(checkpoint: model, outputs: ref)
    }
}
