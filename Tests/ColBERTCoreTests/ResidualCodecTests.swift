import Testing
@testable import ColBERTCore

@Suite struct ResidualCodecTests {
    func randomUnit(_ n: Int, dim: Int, seed: UInt64) -> [Float] {
        var g = SplitMix64(seed: seed)
        var v = (0..<(n * dim)).map { _ in Float(g.nextDouble() * 2 - 1) }
        VectorMath.normalizeRows(&v, dim: dim)
        return v
    }

    @Test(arguments: [1, 2, 4])
    func roundTripErrorShrinksWithBits(nbits: Int) throws {
        let dim = 32, n = 200
        let v = randomUnit(n, dim: dim, seed: 7)
        let centroid = [Float](repeating: 0, count: dim)
        let codec = try ResidualCodec.train(dim: dim, nbits: nbits, residuals: v)
        var codes = [UInt8](repeating: 0, count: codec.bytesPerVector)
        var out = [Float](repeating: 0, count: dim)
        var maxErr: Float = 0
        for i in 0..<n {
            v.withUnsafeBufferPointer { vp in
                centroid.withUnsafeBufferPointer { cp in
                    codec.encode(vector: vp.baseAddress! + i * dim, centroid: cp.baseAddress!, into: &codes)
                    codes.withUnsafeBytes { cb in
                        codec.decode(codes: cb.baseAddress!, centroid: cp.baseAddress!, into: &out, normalize: false)
                    }
                }
            }
            for d in 0..<dim { maxErr = max(maxErr, abs(out[d] - v[i * dim + d])) }
        }
        // Each value is reconstructed by its bucket's weight; error bounded by bucket width.
        let bound: Float = nbits == 1 ? 0.8 : (nbits == 2 ? 0.45 : 0.2)
        #expect(maxErr < bound)
    }

    @Test func rejectsBadParameters() {
        #expect(throws: ResidualCodec.CodecError.self) { try ResidualCodec.train(dim: 16, nbits: 3, residuals: [0.1]) }
        #expect(throws: ResidualCodec.CodecError.self) { try ResidualCodec(dim: 12, nbits: 1, bucketCutoffs: [0], bucketWeights: [0, 1]) }
    }
}
