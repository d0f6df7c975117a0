import ColBERTCore
import Foundation
import Testing
@testable import ColBERTIndex

/// Random unit vectors, a count per document taken from the text's last number: sizes like a
/// real corpus (for measuring bytes per token) without a model.
struct SizedRandomEncoder: TokenEncoder {
    let dim: Int
    let meanTokens: Int
    let fingerprint = "sized-random-v1"

    func encode(_ texts: [String], kind: EncodeKind) throws -> [TokenEmbeddings] {
        texts.map { text in
            let n = UInt64(text.split(separator: " ").last.flatMap { UInt64($0) } ?? 0)
            var rng = SplitMix64(seed: n &+ 99)
            let count = max(4, meanTokens / 2 + Int(rng.next() % UInt64(max(1, meanTokens))))
            var v = (0..<(count * dim)).map { _ in Float(rng.nextGaussian()) }
            VectorMath.normalizeRows(&v, dim: dim)
            return TokenEmbeddings(tokenIds: [Int32](repeating: 0, count: count), vectors: v, dim: dim)
        }
    }
}

@Suite struct FileCompactionTests {
    let encoder = SyntheticEncoder()

    /// Everything search can see in a snapshot, copied out.
    struct Contents: Equatable {
        var documents: [UInt32: [UInt8]] = [:]
        var clusters: [[UInt8]] = []
        var externalIds: [UInt32: String] = [:]
        var stored: [UInt32: StoredDocument] = [:]
        var tokenCount = 0
        var documentCount = 0
        var idBound: UInt32 = 0
    }

    static func contents(_ index: ColBERTIndex) throws -> Contents {
        try index.withSnapshot { s in
            var c = Contents()
            c.tokenCount = s.tokenCount; c.documentCount = s.documentCount; c.idBound = s.documentIdBound
            try s.forEachDocument { id, view in
                var bytes: [UInt8] = []
                for i in 0..<view.count {
                    withUnsafeBytes(of: view.centroidId(i)) { bytes += $0 }
                    bytes += UnsafeRawBufferPointer(start: view.code(i), count: view.bytesPerCode)
                }
                c.documents[id] = bytes
                c.externalIds[id] = try s.externalId(of: id)
                c.stored[id] = try s.document(id)
            }
            for k in 0..<s.centroidCount {
                var bytes: [UInt8] = []
                try s.forEachClusterChunk(k) { view in
                    for i in 0..<view.count {
                        withUnsafeBytes(of: view.docId(i)) { bytes += $0 }
                        bytes += UnsafeRawBufferPointer(start: view.code(i), count: view.bytesPerCode)
                    }
                }
                c.clusters.append(bytes)
            }
            return c
        }
    }

    @Test func compactedFileVerifiesAndKeepsContents() throws {
        let dir = TempDir()
        let path = dir.file("idx")
        try Fixtures.writeCorpus(Fixtures.documents(120), to: dir.file("c.jsonl"))
        var options = smallOptions(batchSize: 10)
        options.compactFileAtEnd = false
        let report = try IndexBuilder(encoder: encoder, options: options).build(corpus: dir.file("c.jsonl"), index: path)
        #expect(report.fileCompaction == nil)
        let expected: Contents
        do {
            // Adds and deletes leave free pages behind.
            let index = try ColBERTIndex.open(at: path)
            try index.add(documents: Fixtures.documents(40, prefix: "x", salt: 5), encoder: encoder)
            try index.delete(externalIds: (0..<50).map { "d\($0)" })
            try index.compact()
            expected = try Self.contents(index)
            #expect(expected.documentCount == 110)
            // Refused while this process has the index open.
            #expect(throws: IndexError.self) { try ColBERTIndex.compactFile(at: path) }
        }
        // A leftover copy from a killed run is overwritten.
        try Data(repeating: 0xAB, count: 10_000).write(to: URL(fileURLWithPath: path + "/" + ColBERTIndex.compactCopyName))
        let r = try ColBERTIndex.compactFile(at: path)
        #expect(r.bytesAfter < r.bytesBefore)
        #expect(!FileManager.default.fileExists(atPath: path + "/" + ColBERTIndex.compactCopyName))
        do {
            let index = try ColBERTIndex.open(at: path)
            #expect(try index.verify().isEmpty)
            #expect(try Self.contents(index) == expected)
            let stats = try index.stats()
            #expect(stats.fileSizeBytes == r.bytesAfter)
            #expect(stats.livePageBytes <= stats.fileSizeBytes)
            #expect(stats.floorBytesPerToken == Double(index.codec.bytesPerVector + 2))
            // Still writable after the swap.
            try index.add(documents: Fixtures.documents(10, prefix: "y", salt: 9), encoder: encoder)
            #expect(try index.verify().isEmpty)
            #expect(try index.stats().documents == 120)
        }
        let reopened = try ColBERTIndex.open(at: path, readOnly: true)
        #expect(try reopened.verify().isEmpty)
    }

    @Test func buildCompactsTheFileAtTheEnd() throws {
        let dir = TempDir()
        try Fixtures.writeCorpus(Fixtures.documents(80), to: dir.file("c.jsonl"))
        let report = try IndexBuilder(encoder: encoder, options: smallOptions(batchSize: 10)).build(corpus: dir.file("c.jsonl"), index: dir.file("idx"))
        let r = try #require(report.fileCompaction)
        #expect(r.bytesAfter < r.bytesBefore)
        let index = try ColBERTIndex.open(at: dir.file("idx"), readOnly: true)
        #expect(try index.verify().isEmpty)
        #expect(try index.stats().documents == 80)
    }

    /// Prints bytes per token of a SciFact-like synthetic build before and after the file
    /// compaction. Slow in debug builds: runs only with COLBERT_INDEX_SIZE_BENCH=<documents>.
    @Test func measureBytesPerToken() throws {
        guard let n = ProcessInfo.processInfo.environment["COLBERT_INDEX_SIZE_BENCH"].flatMap(Int.init), n > 0 else {
            print("skipping size measurement: set COLBERT_INDEX_SIZE_BENCH=<documents> to run it")
            return
        }
        let dir = TempDir()
        let path = dir.file("idx")
        try ((0..<n).map { "{\"_id\":\"doc\($0)\",\"title\":\"\",\"text\":\"synthetic document \($0)\"}" }.joined(separator: "\n") + "\n")
            .write(toFile: dir.file("c.jsonl"), atomically: true, encoding: .utf8)
        var options = IndexBuildOptions()
        options.centroids = 1024
        options.batchSize = 1000
        options.encodeBatchSize = 256
        options.maxSampleTokens = 1 << 16
        options.compactFileAtEnd = false
        let enc = SizedRandomEncoder(dim: 128, meanTokens: 157)
        _ = try IndexBuilder(encoder: enc, options: options).build(corpus: dir.file("c.jsonl"), index: path)
        func show(_ label: String) throws {
            let s = try ColBERTIndex.open(at: path, readOnly: true).stats()
            print(String(format: "%@: %d docs, %d tokens, file %.1f MB, %.1f B/token (clusters %.1f, documents %.1f, live pages %.1f, floor %.0f)",
                         label, s.documents, s.tokens, Double(s.fileSizeBytes) / 1e6, s.bytesPerToken, s.clusterBytesPerToken,
                         s.documentBytesPerToken, Double(s.livePageBytes) / Double(s.tokens), s.floorBytesPerToken))
        }
        try show("after build + compact()")
        try ColBERTIndex.compactFile(at: path)
        try show("after compactFile")
        #expect(try ColBERTIndex.open(at: path, readOnly: true).verify().isEmpty)
    }
}
