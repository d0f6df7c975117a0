import ColBERTCore
import Foundation
import Testing
@testable import ColBERTIndex

@Suite struct StorageFormatTests {
    let encoder = SyntheticEncoder()

    @Test func documentRecordsRoundTripAndRejectMalformed() throws {
        for centroids in [[], [0], [5, 6, 200, 70_000, 4_000_000_000], Array(stride(from: UInt32(3), to: 65_536, by: 97))] as [[UInt32]] {
            let tokens = centroids.count + 3
            let bytes = Schema.encodeDocument(tokens: centroids.isEmpty ? 0 : tokens, centroids: centroids)
            let back = bytes.withUnsafeBytes { Schema.decodeDocument($0) }
            #expect(back?.tokens == (centroids.isEmpty ? 0 : tokens))
            #expect(back?.centroids == centroids)
        }
        let good = Schema.encodeDocument(tokens: 4, centroids: [1, 300])
        func decodes(_ b: [UInt8]) -> Bool { b.withUnsafeBytes { Schema.decodeDocument($0) } != nil }
        #expect(decodes(good))
        #expect(!decodes(Array(good.dropLast())))  // truncated varint
        #expect(!decodes(good + [0]))  // trailing byte
        #expect(!decodes(Schema.encodeDocument(tokens: 4, centroids: [7, 7])))  // not strictly ascending
        #expect(!decodes(Schema.encodeDocument(tokens: 1, centroids: [1, 2])))  // more centroids than tokens
        #expect(!decodes(Schema.encodeDocument(tokens: 3, centroids: [])))  // tokens without centroids
        #expect(!decodes([1, 0, 0]))
    }

    /// Small adds re-cut a cluster's small last chunk with the new tokens instead of leaving one
    /// chunk per add behind.
    @Test func smallAddsJoinTheLastChunk() throws {
        let dir = TempDir()
        try Fixtures.writeCorpus(Fixtures.documents(40), to: dir.file("c.jsonl"))
        _ = try IndexBuilder(encoder: encoder, options: smallOptions()).build(corpus: dir.file("c.jsonl"), index: dir.file("idx"))
        let index = try ColBERTIndex.open(at: dir.file("idx"))
        let built = try index.withSnapshot { s in try (0..<s.centroidCount).map { try s.chunkCount(ofCluster: $0) } }
        for i in 0..<30 { try index.add(documents: Fixtures.documents(1, prefix: "a\(i)-", salt: UInt64(i)), encoder: encoder) }
        #expect(try index.verify().isEmpty)
        try index.withSnapshot { s in
            // Without joining, each add would leave one more chunk in every cluster it touches.
            for c in 0..<s.centroidCount { #expect(try s.chunkCount(ofCluster: c) <= built[c] + 1) }
            // Every added document reads back whole from its clusters.
            let id = try #require(try s.internalId(of: "a29-0"))
            let n = try s.withDocument(id) { $0?.count ?? -1 }
            #expect(n == (try encoder.encode([Fixtures.documents(1, prefix: "a29-", salt: 29)[0].encodedText], kind: .document)[0].count))
        }
    }

    /// After a build (compaction included), cluster pages hold little beyond the entries.
    @Test func compactedClustersFillTheirPages() throws {
        let dir = TempDir()
        try Fixtures.writeCorpus(Fixtures.documents(2000), to: dir.file("c.jsonl"))
        var options = smallOptions(batchSize: 250)
        options.encodeBatchSize = 250
        _ = try IndexBuilder(encoder: encoder, options: options).build(corpus: dir.file("c.jsonl"), index: dir.file("idx"))
        let stats = try ColBERTIndex.open(at: dir.file("idx"), readOnly: true).stats()
        let floor = Double(ClusterChunkLayout.byteCount(count: 1, bytesPerCode: 8) - ClusterChunkLayout.headerBytes)
        print(String(format: "cluster bytes per token %.2f (entry %.0f), documents %.2f, tokens %d",
                     stats.clusterBytesPerToken, floor, stats.documentBytesPerToken, stats.tokens))
        #expect(stats.clusterBytesPerToken < floor * 1.04)
        // Records of these 13-token documents cost about 22 bytes each beyond their centroids;
        // appended in id order, their pages fill up rather than splitting in half.
        #expect(stats.documentBytesPerToken < 3)
    }
}
