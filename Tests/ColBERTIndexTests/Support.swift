import ColBERTCore
import Foundation
@testable import ColBERTIndex

/// Deterministic stand-in for the BERT encoder: every word maps to a unit vector near one of
/// `topics` well-separated directions, chosen and perturbed by a hash of the word.
struct SyntheticEncoder: TokenEncoder {
    let dim: Int
    let fingerprint: String
    let topics: Int
    let noise: Float
    private let centers: [Float]

    init(dim: Int = 32, topics: Int = 12, noise: Float = 0.35, fingerprint: String = "synthetic-v1") {
        self.dim = dim
        self.topics = topics
        self.noise = noise
        self.fingerprint = fingerprint
        var rng = SplitMix64(seed: 7)
        var c = (0..<(topics * dim)).map { _ in Float(rng.nextGaussian()) }
        VectorMath.normalizeRows(&c, dim: dim)
        centers = c
    }

    static func hash(_ s: Substring) -> UInt64 {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for b in s.utf8 { h = (h ^ UInt64(b)) &* 0x100_0000_01b3 }
        return h
    }

    func vector(for word: Substring) -> [Float] {
        let h = Self.hash(word)
        var rng = SplitMix64(seed: h)
        let t = Int(h % UInt64(topics))
        var v = (0..<dim).map { centers[t * dim + $0] + noise * Float(rng.nextGaussian()) / Float(dim).squareRoot() }
        VectorMath.normalizeRows(&v, dim: dim)
        return v
    }

    func encode(_ texts: [String], kind: EncodeKind) throws -> [TokenEmbeddings] {
        texts.map { text in
            let words = text.lowercased().split(whereSeparator: { !$0.isLetter && !$0.isNumber })
            var vectors: [Float] = []
            var ids: [Int32] = []
            for w in words { vectors += vector(for: w); ids.append(Int32(truncatingIfNeeded: Self.hash(w) % 30000)) }
            return TokenEmbeddings(tokenIds: ids, vectors: vectors, dim: dim)
        }
    }
}

/// Fails on every call once `limit` documents have been encoded (a stand-in for a crash).
final class FailingEncoder: TokenEncoder, @unchecked Sendable {
    // Only used from the builder's single thread in tests; the lock makes the counter safe anyway.
    let inner: SyntheticEncoder
    let limit: Int
    private let lock = NSLock()
    private var done = 0
    init(_ inner: SyntheticEncoder, failAfter limit: Int) { self.inner = inner; self.limit = limit }
    var dim: Int { inner.dim }
    var fingerprint: String { inner.fingerprint }
    struct Boom: Error {}
    func encode(_ texts: [String], kind: EncodeKind) throws -> [TokenEmbeddings] {
        lock.lock(); defer { lock.unlock() }
        if done + texts.count > limit { throw Boom() }
        done += texts.count
        return try inner.encode(texts, kind: kind)
    }
}

enum Fixtures {
    static let vocabulary = ["protein", "cell", "gene", "virus", "cancer", "brain", "heart", "lung", "drug", "trial",
                             "mouse", "human", "blood", "immune", "response", "signal", "pathway", "receptor", "tumor", "growth",
                             "study", "result", "effect", "risk", "patient", "therapy", "dose", "model", "data", "analysis"]

    static func text(_ i: Int, words: Int = 12, salt: UInt64 = 0) -> String {
        var rng = SplitMix64(seed: UInt64(i) &* 31 &+ salt)
        return (0..<words).map { _ in vocabulary[Int(rng.next() % UInt64(vocabulary.count))] + (rng.next() % 3 == 0 ? "\(rng.next() % 50)" : "") }
            .joined(separator: " ")
    }

    static func documents(_ n: Int, prefix: String = "d", salt: UInt64 = 0) -> [CorpusDocument] {
        (0..<n).map { i in
            CorpusDocument(id: "\(prefix)\(i)", title: "Title \(i)", text: text(i, words: 6 + i % 11, salt: salt),
                           metadataJSON: "{\"n\":\(i)}")
        }
    }

    static func jsonLine(_ d: CorpusDocument) -> String {
        let obj: [String: Any] = ["_id": d.id, "title": d.title, "text": d.text]
        let data = try! JSONSerialization.data(withJSONObject: obj, options: [.sortedKeys])
        return String(decoding: data, as: UTF8.self)
    }

    static func writeCorpus(_ docs: [CorpusDocument], to path: String) throws {
        try (docs.map(jsonLine).joined(separator: "\n") + "\n").write(toFile: path, atomically: true, encoding: .utf8)
    }
}

/// A temporary directory removed when the value is deinitialised.
final class TempDir {
    let path: String
    init() {
        path = NSTemporaryDirectory() + "colbert-index-tests-" + UUID().uuidString
        try? FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }
    deinit { try? FileManager.default.removeItem(atPath: path) }
    func file(_ name: String) -> String { path + "/" + name }
}

func smallOptions(nbits: Int = 2, centroids: Int = 16, batchSize: Int = 25) -> IndexBuildOptions {
    var o = IndexBuildOptions()
    o.nbits = nbits
    o.centroids = centroids
    o.batchSize = batchSize
    o.encodeBatchSize = 8
    o.kmeansIterations = 6
    o.initialMapSize = 1 << 22
    return o
}
