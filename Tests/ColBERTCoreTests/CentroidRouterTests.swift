import CKernels
import Testing
@testable import ColBERTCore

@Suite struct CentroidRouterTests {
    func random(_ n: Int, seed: UInt64) -> [Float] {
        var g = SplitMix64(seed: seed)
        return (0..<n).map { _ in Float(g.nextDouble() * 2 - 1) }
    }

    @Test(arguments: [(1, 1), (2, 4), (3, 7), (5, 16), (4, 35)])
    func halfFloatDotRowsMatchDoubleDotProducts(m: Int, n: Int) {
        let dim = 128
        let q = random(m * dim, seed: 3)
        let rows = random(n * dim, seed: 4).map { Float16($0).bitPattern }
        var fast = [Float](repeating: .nan, count: m * n), portable = fast
        q.withUnsafeBufferPointer { qb in
            rows.withUnsafeBufferPointer { rb in
                let queries: [UnsafePointer<Float>?] = (0..<m).map { qb.baseAddress! + $0 * dim }
                fast.withUnsafeMutableBufferPointer { f in
                    portable.withUnsafeMutableBufferPointer { p in
                        let outF: [UnsafeMutablePointer<Float>?] = (0..<m).map { f.baseAddress! + $0 * n }
                        let outP: [UnsafeMutablePointer<Float>?] = (0..<m).map { p.baseAddress! + $0 * n }
                        ck_dot_rows_f16(queries, Int32(m), rb.baseAddress!, Int32(n), Int32(dim), outF)
                        ck_dot_rows_f16_portable(queries, Int32(m), rb.baseAddress!, Int32(n), Int32(dim), outP)
                    }
                }
            }
        }
        for t in 0..<m {
            for r in 0..<n {
                var want = 0.0
                for d in 0..<dim { want += Double(q[t * dim + d]) * Double(Float(Float16(bitPattern: rows[r * dim + d]))) }
                #expect(abs(Double(fast[t * n + r]) - want) < 1e-4, "token \(t) row \(r)")
                #expect(abs(Double(portable[t * n + r]) - want) < 1e-4, "portable: token \(t) row \(r)")
            }
        }
    }

    @Test func halfFloatBitsConvertExactly() {
        // Normal, subnormal, zero, negative, infinite values and a NaN.
        for h: UInt16 in [0x3C00, 0xBC00, 0x0001, 0x03FF, 0x0000, 0x8000, 0x7BFF, 0x7C00, 0xFC00, 0x3555] {
            #expect(ck_half_to_float(h) == Float(Float16(bitPattern: h)), "\(h)")
        }
        #expect(ck_half_to_float(0x7E00).isNaN)
    }

    @Test func bestUnorderedKeepsTheBestSet() {
        var g = SplitMix64(seed: 5)
        for count in [1, 2, 7, 64, 300, 2048] {
            for distinct in [2, 1000] {
                let s = (0..<count).map { _ in Float(g.next() % UInt64(distinct)) }
                let want = s.indices.sorted { s[$0] > s[$1] || (s[$0] == s[$1] && $0 < $1) }
                for keep in [1, 3, count / 2, count - 1, count, count + 5] where keep >= 1 {
                    var ids = [Int32](repeating: -1, count: max(keep, 1))
                    let scratch = UnsafeMutableRawPointer.allocate(byteCount: count * 8, alignment: 8)
                    defer { scratch.deallocate() }
                    let n = s.withUnsafeBufferPointer { ck_best_unordered($0.baseAddress!, Int32(count), Int32(keep), &ids, scratch) }
                    #expect(Int(n) == min(keep, count))
                    #expect(Set(ids.prefix(Int(n))) == Set(want.prefix(keep).map { Int32($0) }), "count \(count) keep \(keep)")
                }
            }
        }
    }

    @Test func routerHoldsEveryCentroidOnceGroupByGroup() throws {
        let dim = 8, k = 50, groups = 6
        let centroids = random(k * dim, seed: 7)
        var g = SplitMix64(seed: 8)
        // Group 2 stays empty.
        let assignment = (0..<k).map { _ -> UInt32 in let x = UInt32(g.next() % 5); return x >= 2 ? x + 1 : x }
        let router = try centroids.withUnsafeBufferPointer {
            try CentroidRouter(centroids: $0, dim: dim, centers: random(groups * dim, seed: 9), assignment: assignment)
        }
        #expect(router.groupCount == groups && router.centroidCount == k)
        #expect(router.groupStart.first == 0 && router.groupStart.last == k && router.groupStart[2] == router.groupStart[3])
        #expect(router.members.map(Int.init).sorted() == Array(0..<k))
        for grp in 0..<groups {
            for r in router.groupStart[grp]..<router.groupStart[grp + 1] {
                let c = Int(router.members[r])
                #expect(assignment[c] == UInt32(grp))
                #expect(router.row(r) == centroids[(c * dim)..<((c + 1) * dim)].map { Float(Float16($0)) })
            }
        }
    }

    @Test func badGroupingsAreRejected() {
        let centroids = random(4 * 8, seed: 1)
        centroids.withUnsafeBufferPointer { c in
            #expect(throws: CentroidRouter.BuildError.self) {
                try CentroidRouter(centroids: c, dim: 8, centers: random(16, seed: 2), assignment: [0, 1, 2, 0])
            }
            #expect(throws: CentroidRouter.BuildError.self) {
                try CentroidRouter(centroids: c, dim: 8, centers: random(16, seed: 2), assignment: [0, 1])
            }
            #expect(throws: CentroidRouter.BuildError.self) {
                try CentroidRouter(centroids: c, dim: 8, centers: [], assignment: [0, 0, 0, 0])
            }
            #expect(throws: CentroidRouter.BuildError.self) {
                try CentroidRouter(centroids: c, dim: 8, centers: [Float](repeating: .nan, count: 8), assignment: [0, 0, 0, 0])
            }
        }
    }
}
