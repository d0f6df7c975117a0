import CKernels

/// The centroids grouped by a k-means over the centroids themselves: a second, coarse level above
/// the clusters. A query token's best centroids mostly lie in the groups whose centres score best
/// with it, so a search can score the group centres and then only the centroids of each token's
/// best groups, instead of every centroid (at 16,384 centroids that full product is most of a
/// one-thread search). Immutable after `init`; safe to share across threads.
public final class CentroidRouter: Sendable {
    public let dim: Int
    /// Number of centroids routed (every centroid belongs to exactly one group).
    public let centroidCount: Int
    /// Row-major `groupCount × dim` group centres.
    public let centers: [Float]
    /// Group g's centroids are rows `groupStart[g] ..< groupStart[g + 1]` of `rows` and `members`.
    public let groupStart: [Int]
    /// The centroids reordered group by group (row-major, `dim` wide), so that a group is one
    /// block; as IEEE half floats (bit patterns): the scores of a token's best groups are bound
    /// by reading these rows, and halves read twice as fast (1,024 candidates per token at 16,384
    /// centroids: 1.1 → 0.55 ms; the scores move by ~1e-4, below the fast-scan residual scores'
    /// error, and the re-rank is exact).
    public let rows: [UInt16]
    /// The centroid id of each row of `rows`.
    public let members: [Int32]

    public var groupCount: Int { groupStart.count - 1 }

    /// Row `r` of `rows` as floats.
    public func row(_ r: Int) -> [Float] {
        (0..<dim).map { Float(Float16(bitPattern: rows[r * dim + $0])) }
    }

    /// Indexes with fewer centroids score them all: the full product is already cheap there.
    public static let minimumCentroids = 4096
    /// Centroids per group. Finer groups cover a token's best centroids with fewer candidates: on
    /// SciFact (8,192 centroids, nprobe 32), 1,024 candidates per token kept 0.992 of the
    /// exhaustive top-10 as 128 groups of 8 and 0.980 as 64 groups of 16; with 16,384 centroids,
    /// 1,024 candidates as 16 groups of 64 kept 0.980 (docs/BENCHMARKS.md, `run24`).
    public static let centroidsPerGroup = 8

    public enum BuildError: Error, Equatable, CustomStringConvertible {
        case shape(String)
        public var description: String {
            switch self { case .shape(let m): return "cannot group the centroids: \(m)" }
        }
    }

    /// Groups `centroids` (row-major `K × dim`) by `assignment` (a group id below
    /// `centers.count / dim` per centroid).
    public init(centroids: UnsafeBufferPointer<Float>, dim: Int, centers: [Float], assignment: [UInt32]) throws {
        guard centroids.allSatisfy({ $0.isFinite }), centers.allSatisfy({ $0.isFinite }) else {
            throw BuildError.shape("non-finite value")
        }
        guard dim > 0, centroids.count % dim == 0, centers.count % dim == 0, !centers.isEmpty else {
            throw BuildError.shape("centroids and centres must be K × \(dim) tables")
        }
        let k = centroids.count / dim, groups = centers.count / dim
        guard assignment.count == k else { throw BuildError.shape("\(assignment.count) assignments for \(k) centroids") }
        guard k <= Int(Int32.max) else { throw BuildError.shape("too many centroids") }
        var start = [Int](repeating: 0, count: groups + 1)
        for g in assignment {
            guard Int(g) < groups else { throw BuildError.shape("group \(g) of \(groups)") }
            start[Int(g) + 1] += 1
        }
        for g in 0..<groups { start[g + 1] += start[g] }
        var next = start
        var members = [Int32](repeating: 0, count: k)
        var rows = [UInt16](repeating: 0, count: k * dim)
        for (c, g) in assignment.enumerated() {
            let r = next[Int(g)]
            next[Int(g)] += 1
            members[r] = Int32(c)
            for d in 0..<dim { rows[r * dim + d] = Float16(centroids[c * dim + d]).bitPattern }
        }
        self.dim = dim
        centroidCount = k
        self.centers = centers
        groupStart = start
        self.rows = rows
        self.members = members
    }

    /// Number of groups for `centroids` centroids.
    public static func groupCount(centroids: Int) -> Int { max(1, centroids / centroidsPerGroup) }

    /// Scores of `m` query rows against the centroids of group `g` (all of its rows, in row
    /// order, as half floats): `outs[t][r] = queries[t] · rows[groupStart[g] + r]`.
    public func scoreGroup(_ g: Int, queries: UnsafePointer<UnsafePointer<Float>?>, count m: Int,
                           outs: UnsafePointer<UnsafeMutablePointer<Float>?>) {
        let n = groupStart[g + 1] - groupStart[g]
        guard m > 0, n > 0 else { return }
        rows.withUnsafeBufferPointer { r in
            ck_dot_rows_f16(queries, Int32(m), r.baseAddress! + groupStart[g] * dim, Int32(n), Int32(dim), outs)
        }
    }
}
