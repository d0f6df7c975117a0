import CKernels
import ColBERTCore
import Testing

@Suite struct ClusterChunkLayoutTests {
    /// Every chunk of a plan either stays inline in an LMDB leaf page or fills its overflow
    /// pages to within one entry, and keeps its ids within the UInt16 span.
    @Test(arguments: [16, 32, 64])
    func plansFillPagesAndKeepTheSpan(bytesPerCode: Int) {
        var rng = SplitMix64(seed: UInt64(bytesPerCode))
        for n in [0, 1, 2, 58, 59, 60, 118, 119, 120, 500, 951, 952, 5000, 20_000] {
            // Ascending ids with repeats and occasional jumps past the UInt16 span.
            var ids: [UInt32] = []
            var d: UInt32 = UInt32(rng.next() % 1000)
            for _ in 0..<n {
                let r = rng.next() % 100
                d += r < 20 ? 0 : (r < 98 ? UInt32(rng.next() % 40) : 70_000)
                ids.append(d)
            }
            let plan = ClusterChunkLayout.plan(count: n, bytesPerCode: bytesPerCode) { ids[$0] }
            #expect(plan.reduce(0, +) == n)
            let entry = 2 + bytesPerCode
            var at = 0
            for m in plan {
                #expect(m > 0)
                #expect(ids[at + m - 1] - ids[at] <= ClusterChunkLayout.maxSpan)
                let bytes = ClusterChunkLayout.byteCount(count: m, bytesPerCode: bytesPerCode)
                if bytes > ClusterChunkLayout.inlineValueBytes {
                    // Overflow: the value plus LMDB's 16-byte page header leaves less than one entry unused.
                    let pages = (bytes + 16 + 4095) / 4096
                    #expect(pages * 4096 - 16 - bytes < entry)
                }
                at += m
            }
        }
    }

    /// The lower bound over a chunk's 16-bit id offsets (dispatched and portable) equals a linear
    /// count, for lengths around the halving window and the vector width, with repeats, the
    /// extreme values and targets between, at and past the stored ones.
    @Test func lowerBoundMatchesALinearCount() {
        var rng = SplitMix64(seed: 11)
        for n in Array(0...70) + [95, 96, 97, 128, 200, 511, 1000] {
            var values: [UInt16] = []
            var v = Int(rng.next() % 3 == 0 ? 0 : rng.next() % 2000)
            for _ in 0..<n {
                values.append(UInt16(min(v, 65_535)))
                v += rng.next() % 4 == 0 ? 0 : Int(rng.next() % (n > 500 ? 60 : 1500))
            }
            if n > 2, rng.next() % 2 == 0 { values[n - 1] = 65_535 }
            let bytes = values.flatMap { [UInt8($0 & 0xFF), UInt8($0 >> 8)] }
            var targets: Set<UInt32> = [0, 1, 65_535]
            for x in values { targets.formUnion([UInt32(x), UInt32(x) + 1, UInt32(x) &- 1]) }
            for t in targets where t <= 65_535 {
                let want = values.filter { UInt32($0) < t }.count
                bytes.withUnsafeBufferPointer { b in
                    let p = b.baseAddress ?? UnsafePointer(bitPattern: 1)!
                    #expect(ck_lower_bound_u16(p, n, t) == want, "n \(n), target \(t)")
                    #expect(ck_lower_bound_u16_portable(p, n, t) == want, "portable, n \(n), target \(t)")
                }
            }
        }
    }

    @Test func writtenChunksReadBackAndFindDocuments() throws {
        let bpc = 32
        let ids: [UInt32] = [70_000, 70_000, 70_003, 70_010, 70_010, 70_010, 135_535]
        var codes = [UInt8](repeating: 0, count: ids.count * bpc)
        for i in codes.indices { codes[i] = UInt8(truncatingIfNeeded: i * 7) }
        var out = [UInt8](repeating: 0, count: ClusterChunkLayout.byteCount(count: ids.count, bytesPerCode: bpc))
        codes.withUnsafeBytes { cb in
            out.withUnsafeMutableBytes { o in
                ClusterChunkLayout.write(into: o.baseAddress!, count: ids.count, bytesPerCode: bpc,
                                         docId: { ids[$0] }, code: { cb.baseAddress! + $0 * bpc })
            }
        }
        try out.withUnsafeBytes { raw in
            let view = try #require(ClusterChunkLayout.view(raw, bytesPerCode: bpc))
            #expect(view.count == ids.count && view.docBase == 70_000)
            #expect((0..<view.count).map(view.docId) == ids)
            #expect(Array(UnsafeRawBufferPointer(start: view.code(4), count: bpc)) == Array(codes[(4 * bpc)..<(5 * bpc)]))
            #expect(view.entries(of: 70_010) == 3..<6)
            #expect(view.entries(of: 70_000) == 0..<2)
            #expect(view.entries(of: 135_535) == 6..<7)
            #expect(view.entries(of: 70_001).isEmpty)
            #expect(view.entries(of: 69_999).isEmpty)
            #expect(view.entries(of: 200_000).isEmpty)
            // The first entry at or past a document id (a worker's share of a chunk starts there).
            for (doc, want) in [(0, 0), (70_000, 0), (70_001, 2), (70_003, 2), (70_004, 3), (70_010, 3),
                                (70_011, 6), (135_535, 6), (135_536, 7), (200_000, 7)] as [(UInt32, Int)] {
                #expect(view.firstEntry(atLeast: doc) == want, "doc \(doc)")
            }
            // A size that disagrees with the header is refused.
            #expect(ClusterChunkLayout.view(UnsafeRawBufferPointer(rebasing: raw.dropLast()), bytesPerCode: bpc) == nil)
            #expect(ClusterChunkLayout.view(raw, bytesPerCode: 16) == nil)
        }
    }
}
