import ColBERTCore
import Testing
@testable import ColBERTModel

/// The split GEMM must equal one BLAS call on every path: many rows (row blocks through BLAS),
/// a few rows packed once (W's rows split between workers, with one to four 16-row blocks, or one
/// worker), with and without accumulating into C.
@Suite struct WorkSplitTests {
    func check(m: Int, n: Int, k: Int, beta: Float, workers: Int = 3) {
        var rng = SplitMix64(seed: UInt64(m * 7919 + n))
        func random(_ count: Int) -> [Float] { (0..<count).map { _ in Float(rng.next() % 2001) / 1000 - 1 } }
        let a = random(m * k), w = random(n * k), start = random(m * n)
        var expected = start, got = start
        a.withUnsafeBufferPointer { pa in
            w.withUnsafeBufferPointer { pw in
                expected.withUnsafeMutableBufferPointer { pc in
                    BLAS.sgemm(transB: true, m: m, n: n, k: k, a: pa.baseAddress!, lda: k, b: pw.baseAddress!, ldb: k,
                               beta: beta, c: pc.baseAddress!, ldc: n)
                }
                got.withUnsafeMutableBufferPointer { pc in
                    WorkSplit(workers: workers).linear(m: m, n: n, k: k, a: pa.baseAddress!, lda: k, w: pw.baseAddress!, ldw: k,
                                                 beta: beta, c: pc.baseAddress!, ldc: n)
                }
            }
        }
        var maxDiff: Float = 0
        for (x, y) in zip(expected, got) { maxDiff = max(maxDiff, abs(x - y)) }
        #expect(maxDiff <= 1e-4, "m \(m) n \(n) k \(k): max diff \(maxDiff)")
    }

    @Test func rowBlocks() { check(m: 400, n: 50, k: 64, beta: 1) }
    @Test func columnBlocks() { check(m: 20, n: 150, k: 96, beta: 0) }
    @Test func columnBlocksAccumulate() { check(m: 20, n: 150, k: 96, beta: 1) }
    @Test func fewRowBlocks() { check(m: 50, n: 100, k: 64, beta: 1) }
    @Test func fewRowBlocksOverwrite() { check(m: 64, n: 90, k: 72, beta: 0) }
    @Test func oneWorkerFewRows() { check(m: 32, n: 150, k: 96, beta: 1, workers: 1) }
    @Test func oneWorkerManyRows() { check(m: 70, n: 150, k: 96, beta: 0, workers: 1) }

    @Test func rowsCoverEveryIndexOnce() {
        let hits = UnsafeMutablePointer<Float>.allocate(capacity: 101)
        defer { hits.deallocate() }
        hits.initialize(repeating: 0, count: 101)
        let p = SendableMutablePointer(hits)
        WorkSplit(workers: 3).rows(101, minRows: 8) { r0, r1 in for r in r0..<r1 { p.p[r] += 1 } }
        #expect((0..<101).allSatisfy { hits[$0] == 1 })
    }
}
