import Foundation
import Testing
@testable import ColBERTTokenizer

@Suite struct ConcurrencyTests {
    /// One tokenizer value shared by concurrent tasks gives the serial results (the NFD table is
    /// initialised lazily on first use, possibly from several tasks at once).
    @Test func concurrentTokenizationMatchesSerial() async throws {
        guard let tokenizer = Fixtures.minilm else { return }
        let texts = (0..<64).map { i in
            "Ünïcödé \(i) café 한국어 が ÀÉÎ naïve résumé \(i * 7) BRCA1 [unused0] x\u{200B}y 肺癌 —"
        }
        let serial = texts.map { tokenizer.tokenize($0) }
        let concurrent = await withTaskGroup(of: (Int, [Int32]).self) { group in
            for (i, text) in texts.enumerated() { group.addTask { (i, tokenizer.tokenize(text)) } }
            var results = [[Int32]](repeating: [], count: texts.count)
            for await (i, ids) in group { results[i] = ids }
            return results
        }
        #expect(concurrent == serial)
        #expect(serial.allSatisfy { $0.count > 20 && $0.contains(1) })
    }
}
