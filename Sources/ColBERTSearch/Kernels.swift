import ColBERTCore
import Dispatch
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Bounded selection of the best documents in the result order (score desc, id asc). A binary
/// heap whose root is the worst kept entry, so a full scan costs O(n log k).
struct TopK {
    let capacity: Int
    private(set) var heap: [ScoredDocument] = []

    init(capacity: Int) {
        self.capacity = max(0, capacity)
        heap.reserveCapacity(min(self.capacity, 1 << 16))
    }

    /// True when `a` is worse than `b` (ranks after it).
    @inline(__always) private static func worse(_ a: ScoredDocument, _ b: ScoredDocument) -> Bool {
        ScoredDocument.ranksBefore(b, a)
    }

    /// Whether an entry with this score and id would enter the heap.
    @inline(__always) func admits(_ score: Float, _ id: UInt32) -> Bool {
        if heap.count < capacity { return true }
        guard capacity > 0 else { return false }
        return ScoredDocument.ranksBefore(ScoredDocument(docId: id, score: score), heap[0])
    }

    mutating func insert(_ d: ScoredDocument) {
        guard capacity > 0 else { return }
        if heap.count < capacity {
            heap.append(d)
            var i = heap.count - 1
            while i > 0 {
                let parent = (i - 1) / 2
                if TopK.worse(heap[i], heap[parent]) { heap.swapAt(i, parent); i = parent } else { break }
            }
        } else if ScoredDocument.ranksBefore(d, heap[0]) {
            heap[0] = d
            var i = 0
            let n = heap.count
            while true {
                let l = 2 * i + 1, r = l + 1
                var m = i
                if l < n && TopK.worse(heap[l], heap[m]) { m = l }
                if r < n && TopK.worse(heap[r], heap[m]) { m = r }
                if m == i { break }
                heap.swapAt(i, m)
                i = m
            }
        }
    }

    /// The kept entries in result order.
    func sorted() -> [ScoredDocument] { heap.sorted(by: ScoredDocument.ranksBefore) }
}

/// Runs `body(worker)` for `workers` workers: inline when 1, else on Dispatch's pool, returning
/// when all are done.
///
/// The one place where the search crosses threads. `body` is not `@Sendable` because the
/// workers share read-only inputs (the snapshot, query, tables, raw pointers) and each writes
/// only its own per-worker slot or a disjoint range of an output buffer; every caller keeps to
/// that rule, which is what makes the unchecked hand-over below sound.
func runWorkers(_ workers: Int, _ body: (Int) -> Void) {
    if workers <= 1 {
        body(0)
        return
    }
    withoutActuallyEscaping(body) { escapable in
        let shared = UncheckedSendable(escapable)
        DispatchQueue.concurrentPerform(iterations: workers) { shared.value($0) }
    }
}

private struct UncheckedSendable<T>: @unchecked Sendable {
    let value: T
    init(_ value: T) { self.value = value }
}

@inline(__always) func nowSeconds() -> Double {
    Double(DispatchTime.now().uptimeNanoseconds) * 1e-9
}

/// CPU time of the calling thread, in seconds: a latency figure that other processes on a
/// busy machine do not inflate (as long as the work stays on this thread).
func threadCPUSeconds() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) * 1e-9
}

/// Exact MaxSim of a (stacked) query matrix against one document: decompresses the document's
/// tokens into scratch, then per query row the best dot product over them, each divided by its
/// token's norm (`MaxSimKernel`): the cosine with the normalised decompressed token.
final class ExactScorer {
    let dim: Int
    let codec: ResidualCodec
    private var docVectors: [Float] = []
    private var inverseNorms: [Float] = []
    /// `ResidualCodec.expansionTable()`, built once per scorer.
    private let expand: [Float]

    init(dim: Int, codec: ResidualCodec) {
        self.dim = dim
        self.codec = codec
        expand = codec.expansionTable()
    }

    /// Writes `max_j q_r · d_j` for every query row `r` into `rowMax` (`query.rows` floats);
    /// returns false (and writes nothing) for a document without tokens.
    func rowMaxima(query: PackedRows, document: DocumentView,
                   centroids: UnsafePointer<Float>, rowMax: UnsafeMutablePointer<Float>) -> Bool {
        let n = document.count
        guard n > 0, query.rows > 0 else { return false }
        precondition(document.bytesPerCode * codec.dimsPerByte == dim, "document codes do not match the codec")
        precondition(query.dim == dim, "query rows have \(query.dim) dims, the index \(dim)")
        if docVectors.count < n * dim { docVectors = [Float](repeating: 0, count: n * dim) }
        if inverseNorms.count < n { inverseNorms = [Float](repeating: 0, count: n) }
        // The rows stay unnormalised and the kernel scales each row's dot products instead: one
        // pass less over the decoded vectors.
        expand.withUnsafeBufferPointer { eb in
            docVectors.withUnsafeMutableBufferPointer { dv in
                inverseNorms.withUnsafeMutableBufferPointer { nb in
                    let d = dv.baseAddress!
                    MaxSimKernel.decodeResiduals(codes: document.codes, bytesPerCode: document.bytesPerCode,
                                                 centroidIds: document.centroidIds, centroids: centroids,
                                                 expansion: eb.baseAddress!, dimsPerByte: codec.dimsPerByte,
                                                 count: n, into: d, inverseNorms: nb.baseAddress!)
                    MaxSimKernel.rowMaxima(query, documents: d, count: n, scales: nb.baseAddress!, into: rowMax)
                }
            }
        }
        return true
    }
}
