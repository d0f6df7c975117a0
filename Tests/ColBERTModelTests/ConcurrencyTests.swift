import ColBERTCore
import Dispatch
import Foundation
import Testing
@testable import ColBERTModel

/// Batching and concurrent calls must not change results.
@Suite struct ConcurrencyTests {
    final class Box: @unchecked Sendable {
        let lock = NSLock()
        var results: [[TokenEmbeddings]] = []
        var errors: [String] = []
    }

    @Test func batchingAndConcurrentCallsGiveTheSameEmbeddings() throws {
        guard let tiny = Fixtures.reference("tiny-colbert") else { return }
        let encoder = try ColBERTEncoder(checkpointDirectory: tiny, tokenizer: try VocabOnlyTokenizer(tiny.appendingPathComponent("tokenizer.json")))
        let items = try Fixtures.tokens(tiny).items
        let inputs = items.map { PreparedInput(inputIds: $0.document.input_ids, attentionMask: $0.document.attention_mask, keptPositions: $0.document.kept_positions) }
        let single = try encoder.encode(prepared: inputs, batchSize: 1)
        let batched = try encoder.encode(prepared: inputs, batchSize: 64)
        #expect(single.count == inputs.count && batched.count == inputs.count)
        var maxDiff: Float = 0
        for (a, b) in zip(single, batched) {
            #expect(a.tokenIds == b.tokenIds)
            for (x, y) in zip(a.vectors, b.vectors) { maxDiff = max(maxDiff, abs(x - y)) }
        }
        #expect(maxDiff < 1e-5)

        let box = Box()
        DispatchQueue.concurrentPerform(iterations: 4) { i in
            do {
                let r = try encoder.encode(prepared: i % 2 == 0 ? inputs : inputs.reversed(), batchSize: 5 + i)
                box.lock.lock(); box.results.append(i % 2 == 0 ? r : r.reversed()); box.lock.unlock()
            } catch {
                box.lock.lock(); box.errors.append("\(error)"); box.lock.unlock()
            }
        }
        #expect(box.errors.isEmpty)
        #expect(box.results.count == 4)
        for r in box.results {
            for (a, b) in zip(r, single) {
                #expect(a.tokenIds == b.tokenIds)
                #expect(zip(a.vectors, b.vectors).allSatisfy { abs($0 - $1) < 1e-5 })
            }
        }
    }

    @Test func rejectsMalformedPreparedInput() throws {
        guard let tiny = Fixtures.reference("tiny-colbert") else { return }
        let encoder = try ColBERTEncoder(checkpointDirectory: tiny, tokenizer: try VocabOnlyTokenizer(tiny.appendingPathComponent("tokenizer.json")))
        let bad = [PreparedInput(inputIds: [101, 102], attentionMask: [1, 1], keptPositions: [0, 5])]
        #expect(throws: (any Error).self) { try encoder.encode(prepared: bad) }
        let outOfVocab = [PreparedInput(inputIds: [101, 999_999, 102], attentionMask: [1, 1, 1], keptPositions: [0])]
        #expect(throws: (any Error).self) { try encoder.encode(prepared: outOfVocab) }
    }
}
