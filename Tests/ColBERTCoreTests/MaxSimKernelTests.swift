import CKernels
import Testing
@testable import ColBERTCore

@Suite struct MaxSimKernelTests {
    func random(_ n: Int, seed: UInt64) -> [Float] {
        var g = SplitMix64(seed: seed)
        return (0..<n).map { _ in Float(g.nextDouble() * 2 - 1) }
    }

    func bruteForceDot(_ q: [Float], _ i: Int, _ d: [Float], _ j: Int, dim: Int) -> Double {
        var s = 0.0
        for k in 0..<dim { s += Double(q[i * dim + k]) * Double(d[j * dim + k]) }
        return s
    }

    /// Every tile edge of the vector path (rows past one and two 16-row blocks, tokens not a
    /// multiple of the 6-token tile) and an odd dimension, against a plain double-precision
    /// loop; the portable loop too.
    @Test(arguments: [8, 12, 128])
    func rowMaximaMatchBruteForce(dim: Int) {
        for rows in [1, 2, 3, 5, 9, 16, 17, 32, 33, 40] {
            for n in [1, 2, 5, 6, 7, 13, 17] {
                let q = random(rows * dim, seed: UInt64(rows * 100 + n))
                let d = random(n * dim, seed: UInt64(rows * 1000 + n + 7))
                var got = [Float](repeating: .nan, count: rows)
                var viaBLAS = [Float](repeating: .nan, count: rows)
                var portable = [Float](repeating: .nan, count: rows)
                q.withUnsafeBufferPointer { qb in
                    let packed = PackedRows(qb.baseAddress!, rows: rows, dim: dim)
                    let unpacked = PackedRows(qb.baseAddress!, rows: rows, dim: dim, vectorPath: false)
                    d.withUnsafeBufferPointer { db in
                        got.withUnsafeMutableBufferPointer { gb in
                            MaxSimKernel.rowMaxima(packed, documents: db.baseAddress!, count: n, into: gb.baseAddress!)
                        }
                        viaBLAS.withUnsafeMutableBufferPointer { gb in
                            MaxSimKernel.rowMaxima(unpacked, documents: db.baseAddress!, count: n, into: gb.baseAddress!)
                        }
                        portable.withUnsafeMutableBufferPointer { pb in
                            ck_maxsim_rows_portable(qb.baseAddress!, Int32(rows), db.baseAddress!, Int32(n), Int32(dim), pb.baseAddress!)
                        }
                    }
                }
                for i in 0..<rows {
                    let best = (0..<n).map { bruteForceDot(q, i, d, $0, dim: dim) }.max() ?? -.infinity
                    #expect(abs(Double(got[i]) - best) < 1e-5, "rows \(rows) n \(n) row \(i): \(got[i]) vs \(best)")
                    #expect(abs(Double(viaBLAS[i]) - best) < 1e-5, "BLAS, rows \(rows) n \(n) row \(i)")
                    #expect(abs(Double(portable[i]) - best) < 1e-5, "portable, rows \(rows) n \(n) row \(i)")
                }
            }
        }
    }

    /// The packed product writes (or adds) every row's dot product with every other row, into
    /// a wider output, and nothing past each row's `count` values; the BLAS path too.
    @Test(arguments: [12, 128])
    func scoresMatchBruteForce(dim: Int) {
        for rows in [1, 7, 16, 20, 32, 35] {
            for n in [1, 4, 6, 11, 50] {
                let q = random(rows * dim, seed: UInt64(rows * 31 + n))
                let d = random(n * dim, seed: UInt64(rows * 77 + n))
                let ldo = n + 3
                for (vectorPath, accumulate) in [(true, false), (false, false), (true, true), (false, true)] {
                    let start: Float = accumulate ? 0.5 : .nan
                    var out = [Float](repeating: .nan, count: rows * ldo)
                    for i in 0..<rows { for j in 0..<n { out[i * ldo + j] = start } }
                    q.withUnsafeBufferPointer { qb in
                        let packed = PackedRows(qb.baseAddress!, rows: rows, dim: dim, vectorPath: vectorPath)
                        d.withUnsafeBufferPointer { db in
                            out.withUnsafeMutableBufferPointer { ob in
                                packed.dotProducts(with: db.baseAddress!, count: n, into: ob.baseAddress!, ldo: ldo,
                                                   accumulate: accumulate)
                            }
                        }
                    }
                    for i in 0..<rows {
                        for j in 0..<n {
                            let want = bruteForceDot(q, i, d, j, dim: dim) + (accumulate ? 0.5 : 0)
                            #expect(abs(Double(out[i * ldo + j]) - want) < 1e-5, "rows \(rows) n \(n) [\(i), \(j)] vector \(vectorPath)")
                        }
                        for j in n..<ldo { #expect(out[i * ldo + j].isNaN, "rows \(rows) n \(n): wrote past the row at \(j)") }
                    }
                }
            }
        }
    }

    /// On the vector path, scoring the rows in parts (the search splits the centroid table between
    /// its workers) gives exactly the scores of one call, so results do not depend on the thread
    /// count; the BLAS path says it does not (the search then does not split).
    @Test func scoresSplitIntoPartsAreIdentical() {
        let dim = 64, rows = 32, n = 100
        let q = random(rows * dim, seed: 41), d = random(n * dim, seed: 43)
        for vectorPath in [true, false] {
            guard vectorPath == false || ck_uses_avx2() != 0 else { continue }
            var whole = [Float](repeating: 0, count: rows * n), parts = whole
            q.withUnsafeBufferPointer { qb in
                let packed = PackedRows(qb.baseAddress!, rows: rows, dim: dim, vectorPath: vectorPath)
                d.withUnsafeBufferPointer { db in
                    whole.withUnsafeMutableBufferPointer { ob in
                        packed.dotProducts(with: db.baseAddress!, count: n, into: ob.baseAddress!, ldo: n)
                    }
                    parts.withUnsafeMutableBufferPointer { ob in
                        for (c0, c1) in [(0, 32), (32, 48), (48, 100)] {
                            packed.dotProducts(with: db.baseAddress! + c0 * dim, count: c1 - c0, into: ob.baseAddress! + c0, ldo: n)
                        }
                    }
                }
            }
            let exact = q.withUnsafeBufferPointer { PackedRows($0.baseAddress!, rows: rows, dim: dim, vectorPath: vectorPath).splitsExactly }
            #expect(exact == vectorPath)
            if exact { #expect(whole == parts) }
        }
    }

    /// Top-k selection equals a full sort by (score desc, index asc), with many ties (scores from
    /// a few distinct values), every count around the 8-wide steps and keep larger than count,
    /// counts that make the buffered selection cut its buffer many times, and keeps above its
    /// limit; the portable loop too.
    @Test func selectTopMatchesSort() {
        var g = SplitMix64(seed: 99)
        for count in [0, 1, 5, 8, 9, 16, 33, 100, 1000, 4103, 16384] {
            for keep in [1, 3, 8, 33, 45, 200, 300] {
                for distinct in [3, 1000] {
                    let s = (0..<count).map { _ in Float(g.next() % UInt64(distinct)) / 7 }
                    let want = s.indices.sorted { s[$0] > s[$1] || (s[$0] == s[$1] && $0 < $1) }.prefix(keep)
                    var scores = [Float](repeating: .nan, count: keep), ids = [Int32](repeating: -1, count: keep)
                    var pScores = scores, pIds = ids
                    let n = s.withUnsafeBufferPointer { sb in
                        scores.withUnsafeMutableBufferPointer { o in
                            ids.withUnsafeMutableBufferPointer { i in
                                TopScores.select(sb.baseAddress ?? UnsafePointer(o.baseAddress!), count: count, keep: keep,
                                                 scores: o.baseAddress!, ids: i.baseAddress!)
                            }
                        }
                    }
                    let pn = s.withUnsafeBufferPointer { sb in
                        pScores.withUnsafeMutableBufferPointer { o in
                            pIds.withUnsafeMutableBufferPointer { i in
                                Int(ck_select_top_portable(sb.baseAddress ?? UnsafePointer(o.baseAddress!), Int32(count), Int32(keep),
                                                           o.baseAddress!, i.baseAddress!))
                            }
                        }
                    }
                    #expect(n == want.count && pn == want.count, "count \(count) keep \(keep)")
                    #expect(Array(ids.prefix(n)) == want.map { Int32($0) }, "count \(count) keep \(keep) distinct \(distinct)")
                    #expect(Array(pIds.prefix(pn)) == want.map { Int32($0) }, "portable, count \(count) keep \(keep)")
                    #expect(Array(scores.prefix(n)) == want.map { s[$0] })
                }
            }
        }
    }

    /// `n` random vectors encoded against `K` random centroids (token j on centroid (3j) % K),
    /// with one byte of padding in front of the centroid ids so that they are not 4-byte aligned.
    struct EncodedTokens {
        let codec: ResidualCodec
        let centroids: [Float]
        let codes: [UInt8]
        let paddedIds: [UInt8]
        let n: Int

        func centroid(of j: Int) -> Int { (j * 3) % (centroids.count / codec.dim) }

        /// `ResidualCodec.decode(normalize:)` of every token, row-major.
        func decodedByCodec(normalize: Bool = true) -> [Float] {
            let dim = codec.dim
            var out = [Float](repeating: 0, count: n * dim), row = [Float](repeating: 0, count: dim)
            for j in 0..<n {
                codes.withUnsafeBytes { cb in
                    centroids.withUnsafeBufferPointer { cent in
                        codec.decode(codes: cb.baseAddress! + j * codec.bytesPerVector, centroid: cent.baseAddress! + centroid(of: j) * dim,
                                     into: &row, normalize: normalize)
                    }
                }
                for d in 0..<dim { out[j * dim + d] = row[d] }
            }
            return out
        }

        /// The rows and inverse norms of `MaxSimKernel.decodeResiduals`, or of the portable loop.
        func decodeResiduals(portable: Bool) -> (rows: [Float], inverseNorms: [Float]) {
            let dim = codec.dim, bpc = codec.bytesPerVector, per = codec.dimsPerByte
            var rows = [Float](repeating: .nan, count: n * dim), inverse = [Float](repeating: .nan, count: n)
            let table = codec.expansionTable()
            codes.withUnsafeBytes { cb in
                paddedIds.withUnsafeBytes { ib in
                    centroids.withUnsafeBufferPointer { cent in
                        table.withUnsafeBufferPointer { tb in
                            rows.withUnsafeMutableBufferPointer { o in
                                inverse.withUnsafeMutableBufferPointer { inv in
                                    if portable {
                                        ck_decode_residuals_portable(cb.baseAddress!.assumingMemoryBound(to: UInt8.self), Int32(bpc),
                                                                     ib.baseAddress!.assumingMemoryBound(to: UInt8.self) + 1,
                                                                     cent.baseAddress!, tb.baseAddress!, Int32(per), Int32(n),
                                                                     o.baseAddress!, inv.baseAddress!)
                                    } else {
                                        MaxSimKernel.decodeResiduals(codes: cb.baseAddress!, bytesPerCode: bpc, centroidIds: ib.baseAddress! + 1,
                                                                     centroids: cent.baseAddress!, expansion: tb.baseAddress!,
                                                                     dimsPerByte: per, count: n, into: o.baseAddress!,
                                                                     inverseNorms: inv.baseAddress!)
                                    }
                                }
                            }
                        }
                    }
                }
            }
            return (rows, inverse)
        }
    }

    func encodedTokens(dim: Int, n: Int, K: Int, nbits: Int) throws -> EncodedTokens {
        let codec = try ResidualCodec.train(dim: dim, nbits: nbits, residuals: random(400 * dim, seed: 3).map { $0 * 0.3 })
        let centroids = random(K * dim, seed: 5), vectors = random(n * dim, seed: 9)
        let bpc = codec.bytesPerVector
        var codes = [UInt8](repeating: 0, count: n * bpc)
        var ids = [UInt8](repeating: 0, count: 1 + 4 * n)
        for j in 0..<n {
            let c = UInt32((j * 3) % K)
            withUnsafeBytes(of: c.littleEndian) { for b in 0..<4 { ids[1 + 4 * j + b] = $0[b] } }
            vectors.withUnsafeBufferPointer { v in
                centroids.withUnsafeBufferPointer { cb in
                    codes.withUnsafeMutableBufferPointer { out in
                        codec.encode(vector: v.baseAddress! + j * dim, centroid: cb.baseAddress! + Int(c) * dim,
                                     into: out.baseAddress! + j * bpc)
                    }
                }
            }
        }
        return EncodedTokens(codec: codec, centroids: centroids, codes: codes, paddedIds: ids, n: n)
    }

    /// The table-driven decoder's rows times their inverse norms give what
    /// `ResidualCodec.decode(normalize: true)` gives, for every code width, with centroid ids read
    /// unaligned; the portable loop too.
    @Test(arguments: [1, 2, 4])
    func decodeResidualsMatchCodec(nbits: Int) throws {
        let dim = 32
        let t = try encodedTokens(dim: dim, n: 9, K: 5, nbits: nbits)
        let want = t.decodedByCodec()
        for portable in [false, true] {
            let (rows, inverse) = t.decodeResiduals(portable: portable)
            for j in 0..<t.n {
                for d in 0..<dim {
                    #expect(abs(rows[j * dim + d] * inverse[j] - want[j * dim + d]) < 1e-6, "portable \(portable), token \(j) dim \(d)")
                }
            }
        }
    }

    /// MaxSim over decoded rows with their inverse norms applied to the dot products equals MaxSim
    /// over the codec's normalised vectors, on the vector path and the BLAS path.
    @Test(arguments: [1, 2, 4])
    func scaledMaxSimMatchesNormalised(nbits: Int) throws {
        let dim = 64
        let t = try encodedTokens(dim: dim, n: 23, K: 7, nbits: nbits)
        let normalised = t.decodedByCodec()
        let (rows, inverse) = t.decodeResiduals(portable: false)
        for queryRows in [1, 5, 16, 33] {
            let q = random(queryRows * dim, seed: UInt64(queryRows))
            var want = [Float](repeating: .nan, count: queryRows)
            var scaled = want, scaledBLAS = want
            q.withUnsafeBufferPointer { qb in
                let packed = PackedRows(qb.baseAddress!, rows: queryRows, dim: dim)
                let unpacked = PackedRows(qb.baseAddress!, rows: queryRows, dim: dim, vectorPath: false)
                normalised.withUnsafeBufferPointer { nb in
                    want.withUnsafeMutableBufferPointer { MaxSimKernel.rowMaxima(unpacked, documents: nb.baseAddress!, count: t.n, into: $0.baseAddress!) }
                }
                rows.withUnsafeBufferPointer { rb in
                    inverse.withUnsafeBufferPointer { ib in
                        scaled.withUnsafeMutableBufferPointer {
                            MaxSimKernel.rowMaxima(packed, documents: rb.baseAddress!, count: t.n, scales: ib.baseAddress!, into: $0.baseAddress!)
                        }
                        scaledBLAS.withUnsafeMutableBufferPointer {
                            MaxSimKernel.rowMaxima(unpacked, documents: rb.baseAddress!, count: t.n, scales: ib.baseAddress!, into: $0.baseAddress!)
                        }
                    }
                }
            }
            for i in 0..<queryRows {
                #expect(abs(scaled[i] - want[i]) < 1e-5, "rows \(queryRows) row \(i): \(scaled[i]) vs \(want[i])")
                #expect(abs(scaledBLAS[i] - want[i]) < 1e-5, "BLAS, rows \(queryRows) row \(i)")
            }
        }
    }

    /// One cluster's tokens scored against a few query rows, decompressing each token once:
    /// equal to the dot products with the codec's decoded vectors (normalised, or plus the
    /// centroid's score) on the vector path and the portable loop, for every code width and for
    /// counts around the kernel's blocks of eight; and a token's score is the same bit for bit
    /// whichever block it is scored in.
    @Test(arguments: [1, 2, 4])
    func clusterScoresMatchDecodedDotProducts(nbits: Int) throws {
        let dim = 64
        let t = try encodedTokens(dim: dim, n: 21, K: 1, nbits: nbits)
        let codec = t.codec, bpc = codec.bytesPerVector
        let queries = random(3 * dim, seed: 17)
        // Every token of the fixture has centroid 0 (K = 1): one cluster.
        let bases = (0..<3).map { i in (0..<dim).reduce(Float(0)) { $0 + queries[i * dim + $1] * t.centroids[$1] } }
        func scores(first: Int, count: Int, rows: [Int], normalize: Bool, portable: Bool) -> [Float] {
            var out = [Float](repeating: .nan, count: rows.count * count)
            queries.withUnsafeBufferPointer { qb in
                let pointers: [UnsafePointer<Float>?] = rows.map { qb.baseAddress! + $0 * dim }
                let rowBases = rows.map { bases[$0] }
                t.codes.withUnsafeBytes { cb in
                    let codes = cb.baseAddress! + first * bpc
                    if portable {
                        ck_cluster_scores_portable(codes.assumingMemoryBound(to: UInt8.self), Int32(bpc), Int32(nbits), Int32(count),
                                                   codec.bucketWeights, t.centroids, pointers, rowBases, Int32(rows.count),
                                                   normalize ? 1 : 0, &out, count)
                    } else {
                        codec.bucketWeights.withUnsafeBufferPointer { w in
                            t.centroids.withUnsafeBufferPointer { cent in
                                pointers.withUnsafeBufferPointer { p in
                                    rowBases.withUnsafeBufferPointer { b in
                                        MaxSimKernel.clusterScores(codes: codes, codec: codec, count: count, weights: w.baseAddress!,
                                                                   centroid: cent.baseAddress!, queries: p.baseAddress!, bases: b.baseAddress!,
                                                                   queryCount: rows.count, normalize: normalize, into: &out, ldo: count)
                                    }
                                }
                            }
                        }
                    }
                }
            }
            return out
        }
        for normalize in [false, true] {
            let decoded = t.decodedByCodec(normalize: normalize)
            for count in [1, 7, 8, 9, 21] {
                for portable in [false, true] {
                    let out = scores(first: 0, count: count, rows: [0, 1, 2], normalize: normalize, portable: portable)
                    for i in 0..<3 {
                        for j in 0..<count {
                            var want: Float = 0
                            for d in 0..<dim { want += queries[i * dim + d] * decoded[j * dim + d] }
                            #expect(abs(out[i * count + j] - want) < (normalize ? 1e-5 : 1e-4),
                                    "nbits \(nbits) normalize \(normalize) portable \(portable) count \(count) row \(i) token \(j)")
                        }
                    }
                    if !portable && count == 21 {
                        // Token 13 alone, for query row 1 alone, against its score inside the second block.
                        let alone = scores(first: 13, count: 1, rows: [1], normalize: normalize, portable: false)
                        #expect(alone[0] == out[count + 13], "position changed the score: \(alone[0]) vs \(out[count + 13])")
                    }
                }
            }
        }
    }

    /// Fast-scan scores: within half a table step per nibble position of the exact residual dot
    /// products plus the centroid score, for every code width at the widths it supports (32, 64
    /// and 128 code bytes) and for counts around its blocks of sixteen; the vector path and the
    /// portable loop give the same floats; a token's score does not depend on its block; and
    /// widths it does not support are refused.
    @Test(arguments: [1, 2, 4])
    func fastScanScoresStayWithinHalfAStepOfExactOnes(nbits: Int) throws {
        for bpc in [32, 64, 128] {
            let dim = bpc * 8 / nbits, n = 37
            let t = try encodedTokens(dim: dim, n: n, K: 1, nbits: nbits)
            let codec = t.codec
            #expect(FastScanTables.supports(codec))
            let queries = random(3 * dim, seed: 23)
            let tables = try #require(FastScanTables(query: queries, rows: 3, codec: codec))
            let centroidScores = (0..<3).map { i in (0..<dim).reduce(Float(0)) { $0 + queries[i * dim + $1] * t.centroids[$1] } }
            let bases = (0..<3).map { centroidScores[$0] + tables.offsets[$0] }
            func scores(first: Int, count: Int, rows: [Int], portable: Bool) -> [Float] {
                var out = [Float](repeating: .nan, count: rows.count * count)
                let pointers: [UnsafePointer<UInt8>?] = rows.map { tables.table($0) }
                let scales = rows.map { tables.scales[$0] }, rowBases = rows.map { bases[$0] }
                t.codes.withUnsafeBytes { cb in
                    let codes = cb.baseAddress! + first * bpc
                    if portable {
                        ck_fastscan_scores_portable(codes.assumingMemoryBound(to: UInt8.self), Int32(bpc), Int32(count), pointers,
                                                    scales, rowBases, Int32(rows.count), &out, count)
                    } else {
                        pointers.withUnsafeBufferPointer { p in
                            MaxSimKernel.fastScanScores(codes: codes, codec: codec, count: count, tables: p.baseAddress!,
                                                        scales: scales, bases: rowBases, queryCount: rows.count, into: &out, ldo: count)
                        }
                    }
                }
                return out
            }
            let decoded = t.decodedByCodec(normalize: false)
            for count in [1, 15, 16, 17, 37] {
                let fast = scores(first: 0, count: count, rows: [0, 1, 2], portable: false)
                #expect(fast == scores(first: 0, count: count, rows: [0, 1, 2], portable: true), "nbits \(nbits) bpc \(bpc) count \(count)")
                for i in 0..<3 {
                    let bound = tables.scales[i] * Float(bpc) + 1e-3
                    for j in 0..<count {
                        var want: Float = 0
                        for d in 0..<dim { want += queries[i * dim + d] * decoded[j * dim + d] }
                        #expect(abs(fast[i * count + j] - want) <= bound,
                                "nbits \(nbits) bpc \(bpc) count \(count) row \(i) token \(j): \(fast[i * count + j]) vs \(want)")
                    }
                }
                if count == 37 {
                    let alone = scores(first: 20, count: 1, rows: [2], portable: false)
                    #expect(alone[0] == fast[2 * count + 20])
                }
            }
        }
        let narrow = try ResidualCodec.train(dim: 64, nbits: nbits, residuals: random(100 * 64, seed: 3))
        #expect(FastScanTables.supports(narrow) == (narrow.bytesPerVector % 32 == 0))
        if !FastScanTables.supports(narrow) { #expect(FastScanTables(query: random(64, seed: 1), rows: 1, codec: narrow) == nil) }
    }
}
