import ColBERTCore
import Foundation
import Testing
@testable import ColBERTModel

/// Compares the encoder with PyLate's outputs for both reference checkpoints.
@Suite struct ParityTests {
    struct Result { var maxDiff: Float; var maxScoreDiff: Double }

    /// Forward pass from the fixtures' input ids; checks embeddings and the MaxSim matrix.
    /// `threads` nil runs the forward pass on the calling thread; 2 exercises the split work.
    func checkForward(checkpoint: URL, outputs: URL, threads: Int? = nil) throws -> Result {
        let tokURL = checkpoint.appendingPathComponent("tokenizer.json")
        let encoder = try ColBERTEncoder(checkpointDirectory: checkpoint, tokenizer: try VocabOnlyTokenizer(tokURL), threadCount: threads)
        let tokens = try Fixtures.tokens(outputs)
        let reference = try SafeTensorsFile(url: outputs.appendingPathComponent("outputs/embeddings.safetensors"))
        var maxDiff: Float = 0
        var queries: [String: TokenEmbeddings] = [:], documents: [String: TokenEmbeddings] = [:]
        for kind in EncodeKind.allCases {
            let sides = tokens.items.map { kind == .query ? $0.query : $0.document }
            let inputs = sides.map { PreparedInput(inputIds: $0.input_ids, attentionMask: $0.attention_mask, keptPositions: $0.kept_positions) }
            let out = try encoder.encode(prepared: inputs, batchSize: 8)
            for (item, (side, emb)) in zip(tokens.items, zip(sides, out)) {
                #expect(emb.tokenIds == side.kept_input_ids, "kept ids of \(kind) \(item.id)")
                let name = "\(kind.rawValue)/\(item.id)"
                let ref = try reference.floats(name, shape: [side.kept_positions.count, encoder.dim])
                #expect(ref.count == emb.vectors.count, "row count of \(name)")
                for (a, b) in zip(ref, emb.vectors) { maxDiff = max(maxDiff, abs(a - b)) }
                if kind == .query { queries[item.id] = emb } else { documents[item.id] = emb }
            }
        }
        let scores = try Fixtures.scores(outputs)
        var maxScoreDiff = 0.0
        for (qi, q) in scores.query_ids.enumerated() {
            for (di, d) in scores.document_ids.enumerated() {
                guard let qe = queries[q], let de = documents[d] else { Issue.record("missing \(q) or \(d)"); continue }
                maxScoreDiff = max(maxScoreDiff, abs(maxSim(qe, de) - scores.scores[qi][di]))
            }
        }
        return Result(maxDiff: maxDiff, maxScoreDiff: maxScoreDiff)
    }

    @Test func tinyForwardMatchesPyLate() throws {
        guard let tiny = Fixtures.reference("tiny-colbert") else { return }
        for threads in [nil, 2] {
            let r = try checkForward(checkpoint: tiny, outputs: tiny, threads: threads)
            print("tiny-colbert (threads \(threads.map(String.init) ?? "-")): max abs embedding diff \(r.maxDiff), max score diff \(r.maxScoreDiff)")
            #expect(r.maxDiff <= 1e-4)
            #expect(r.maxScoreDiff <= 1e-3)
        }
    }

    @Test func minilmForwardMatchesPyLate() throws {
        guard let ref = Fixtures.reference("minilm-colbert") else { return }
        guard let model = Fixtures.minilmCheckpoint else { return }
        let r = try checkForward(checkpoint: model, outputs: ref, threads: 2)
        print("minilm-colbert: max abs embedding diff \(r.maxDiff), max score diff \(r.maxScoreDiff)")
        #expect(r.maxDiff <= 1e-4)
        #expect(r.maxScoreDiff <= 1e-3)
    }
}
