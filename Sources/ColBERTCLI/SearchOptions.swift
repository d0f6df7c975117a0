import ArgumentParser
import ColBERTCore
import ColBERTSearch
import Foundation

/// Flags that tune pruned search; unset ones take the searched index's defaults
/// (`SearchParameters.defaults(k:for:)`).
struct SearchTuningOptions: ParsableArguments {
    @Option(name: .long, help: "Clusters probed per query token (default: 32, 48 for k > 100; more where the index's clusters average under 100 tokens).") var nprobe: Int?
    @Option(name: .long, help: "Candidates re-scored exactly (0: approximate scores only).") var rerank: Int?
    @Option(name: .long, help: "Stop the re-rank once later candidates are unlikely to enter the top k: the allowance per query token on top of the largest error seen.") var rerankMargin: Float?
    @Flag(name: .long, help: "Re-rank all --rerank candidates (no early stop).") var rerankAll = false
    @Option(name: .long, help: "Skip probed clusters whose centroid score is below this (default: 0.3, 0.25 for k > 100).") var centroidThreshold: Float?
    @Flag(name: .long, help: "Probe the top --nprobe clusters whatever their centroid scores.") var noCentroidThreshold = false
    @Option(name: .long, help: "Choose the probes among the centroids of each query token's best N groups of 8 centroids (indexes of 4,096 centroids or more): a faster centroid stage for some recall, e.g. N = 4-8x nprobe; 0 (default) scores every centroid.") var groupProbes: Int?
    @Option(name: .long, help: "Worker threads (default: all cores).") var threads: Int?
    @Option(name: .long, help: "Imputation for query tokens with no probed token of a document: bestUnselected, lastSelected or zero.") var missing: String?
    @Flag(name: .long, help: "Score probed tokens by their normalised decompressed vectors (slower, exact per token).") var normalizeScores = false
    @Flag(name: .long, inversion: .prefixedNo, help: "Score probed tokens through 8-bit lookup tables over their codes (fast; --no-fast-scan: exact residual dot products).") var fastScan = true
    @Flag(name: .long, inversion: .prefixedNo, help: "Score every centroid in 8-bit integers and re-score each query token's best nprobe + 9 in F32 (indexes of 2,048 centroids or more; --no-quantized-centroids: every centroid in F32).") var quantizedCentroids = true

    func validate() throws {
        if let nprobe, nprobe < 1 { throw ValidationError("--nprobe must be at least 1") }
        if let groupProbes, groupProbes < 0 { throw ValidationError("--group-probes must not be negative") }
        if let rerank, rerank < 0 { throw ValidationError("--rerank must not be negative") }
        if let rerankMargin, !(rerankMargin.isFinite && rerankMargin >= 0) { throw ValidationError("--rerank-margin must be a finite number >= 0") }
        if rerankAll && rerankMargin != nil { throw ValidationError("give --rerank-margin or --rerank-all, not both") }
        if let threads, threads < 1 { throw ValidationError("--threads must be at least 1") }
        if let centroidThreshold, !centroidThreshold.isFinite { throw ValidationError("--centroid-threshold must be finite") }
        if centroidThreshold != nil && noCentroidThreshold {
            throw ValidationError("give --centroid-threshold or --no-centroid-threshold, not both")
        }
        if let missing, MissingSimilarity(rawValue: missing) == nil {
            throw ValidationError("--missing must be one of: \(MissingSimilarity.allCases.map(\.rawValue).joined(separator: ", "))")
        }
    }

    /// The defaults for `k` on this index (`SearchParameters.defaults(k:for:)`), then the flags.
    func parameters<S: IndexSnapshot>(k: Int, for index: S) -> SearchParameters {
        var p = SearchParameters.defaults(k: k, for: index)
        if let nprobe { p.nprobe = nprobe }
        if let groupProbes { p.groupProbes = groupProbes }
        if let rerank { p.rerankDepth = rerank }
        if let rerankMargin { p.rerankMargin = rerankMargin }
        if rerankAll { p.rerankMargin = nil }
        if let centroidThreshold { p.centroidScoreThreshold = centroidThreshold }
        if noCentroidThreshold { p.centroidScoreThreshold = nil }
        if let missing, let m = MissingSimilarity(rawValue: missing) { p.missingSimilarity = m }
        if normalizeScores { p.normalizeScores = true }
        p.fastScan = fastScan
        p.quantizedCentroidScores = quantizedCentroids
        return p
    }

    var threadCount: Int { threads ?? ProcessInfo.processInfo.activeProcessorCount }
}

/// Query texts from `--query` or a BEIR queries file.
func loadQueries(query: String?, queriesFile: String?, limit: Int? = nil) throws -> [Evaluation.Query] {
    var queries: [Evaluation.Query]
    if let query {
        // As the server does: an empty query would be all [MASK] padding, which matches nothing
        // the user meant.
        guard !query.allSatisfy(\.isWhitespace) else { throw CLIError("the query text is empty") }
        queries = [Evaluation.Query(id: "query", text: query)]
    } else if let queriesFile {
        do { queries = try Evaluation.readQueries(path: queriesFile) } catch { throw CLIError("\(error)") }
    } else {
        throw CLIError("give --query TEXT or --queries FILE")
    }
    if let limit { queries = Array(queries.prefix(limit)) }
    guard !queries.isEmpty else { throw CLIError("no queries to run") }
    return queries
}

/// Encodes query texts in batches (the encoder sorts and packs each batch).
func encodeQueries(_ texts: [String], encoder: any TokenEncoder, batchSize: Int = 64) throws -> [TokenEmbeddings] {
    var out: [TokenEmbeddings] = []
    out.reserveCapacity(texts.count)
    var start = 0
    while start < texts.count {
        let end = min(texts.count, start + batchSize)
        out += try encoder.encode(Array(texts[start..<end]), kind: .query)
        start = end
    }
    return out
}


func monotonicSeconds() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) * 1e-9
}

/// Peak resident set size of this process in bytes (VmHWM), or nil where /proc is missing.
func peakRSSBytes() -> Int? {
    guard let s = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8) else { return nil }
    for line in s.split(separator: "\n") where line.hasPrefix("VmHWM:") {
        let kb = line.split(whereSeparator: { $0 == " " || $0 == "\t" }).compactMap { Int($0) }.first
        return kb.map { $0 * 1024 }
    }
    return nil
}

func printJSONLine(_ object: Any) {
    if let data = try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]),
       let s = String(data: data, encoding: .utf8) {
        print(s)
    }
}
