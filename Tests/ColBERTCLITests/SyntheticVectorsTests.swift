import ColBERTCore
import Testing
@testable import ColBERTCLI

/// The shared generator behind `index bench` and `bench synth`.
@Suite struct SyntheticVectorsTests {
    static func norm(_ v: ArraySlice<Float>) -> Float { v.reduce(0) { $0 + $1 * $1 }.squareRoot() }

    static func dot(_ a: ArraySlice<Float>, _ b: ArraySlice<Float>) -> Float { zip(a, b).reduce(0) { $0 + $1.0 * $1.1 } }

    @Test(arguments: [SyntheticVectors.benchSynth(dim: 32, topics: 50, meanTokens: 40, seed: 7),
                      SyntheticBenchEncoder(dim: 32, topics: 50, meanTokens: 40).space])
    func tokensAreUnitVectorsNearestTheirTopic(space: SyntheticVectors) {
        let dim = space.dim
        var nearest = 0, total = 0
        for n: UInt64 in [0, 1, 99] {
            let (doc, topics) = space.document(n)
            #expect(doc.count == topics.count && doc.count >= space.layout.minTokens)
            #expect(Set(topics).count <= space.layout.topicsPerDocument)
            for t in 0..<doc.count {
                let v = doc.vectors[(t * dim)..<((t + 1) * dim)]
                #expect(abs(Self.norm(v) - 1) < 1e-4)
                let scores = (0..<space.topics).map { Self.dot(v, space.centers[($0 * dim)..<(($0 + 1) * dim)]) }
                if scores.indices.max(by: { scores[$0] < scores[$1] }) == Int(topics[t]) { nearest += 1 }
                total += 1
            }
        }
        #expect(Double(nearest) / Double(total) > 0.95)
    }

    @Test func documentsDependOnlyOnTheirNumberAndSeed() {
        let a = SyntheticVectors.benchSynth(dim: 16, topics: 20, meanTokens: 30, seed: 7)
        let b = SyntheticVectors.benchSynth(dim: 16, topics: 20, meanTokens: 30, seed: 7)
        let other = SyntheticVectors.benchSynth(dim: 16, topics: 20, meanTokens: 30, seed: 8)
        _ = a.document(3)
        #expect(a.document(5).embeddings.vectors == b.document(5).embeddings.vectors)
        #expect(a.document(5).embeddings.vectors != a.document(6).embeddings.vectors)
        #expect(a.centers != other.centers)
        let capped = a.document(5, maxTokens: 3)
        #expect(capped.embeddings.count == 3)
        #expect(Array(capped.embeddings.vectors) == Array(a.document(5).embeddings.vectors.prefix(3 * 16)))
        #expect(a.queries(count: 4, documents: 10, seed: 1).map(\.vectors) == b.queries(count: 4, documents: 10, seed: 1).map(\.vectors))
    }

    @Test func encoderReadsTheDocumentNumberFromTheText() throws {
        let encoder = SyntheticBenchEncoder(dim: 16, topics: 30, meanTokens: 20)
        let out = try encoder.encode(["synthetic document 12", "synthetic document 13", "synthetic document 12"], kind: .document)
        #expect(out[0].vectors == out[2].vectors)
        #expect(out[0].vectors != out[1].vectors)
        #expect(out[0].vectors == encoder.space.document(12).embeddings.vectors)
        #expect(out.allSatisfy { $0.dim == 16 && $0.count >= 4 })
    }
}
