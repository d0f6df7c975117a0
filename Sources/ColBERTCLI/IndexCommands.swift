import ArgumentParser
import ColBERTCore
import ColBERTIndex
import Foundation

/// `colbert index ...`: build, change and inspect an index.
struct IndexCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "index",
        abstract: "Build, change and inspect a compressed token index (one LMDB directory).",
        subcommands: [IndexBuildCommand.self, IndexAddCommand.self, IndexDeleteCommand.self, IndexRegroupCommand.self,
                      IndexStatsCommand.self, IndexVerifyCommand.self, IndexCompactCommand.self, IndexBenchCommand.self]
    )
}

extension OnErrorPolicy: ExpressibleByArgument {}

/// Writes to standard error without buffering surprises.
func printError(_ s: String, terminator: String = "\n") {
    FileHandle.standardError.write(Data((s + terminator).utf8))
}

/// Renders build/add progress: a redrawn bar on a terminal, periodic log lines otherwise.
/// Called from the builder's thread only; the lock keeps it honest if that ever changes.
final class ProgressPrinter: @unchecked Sendable {
    private let lock = NSLock()
    private let isTerminal = isatty(STDERR_FILENO) == 1
    private var lastDraw = Date.distantPast
    private var lastPhase: IndexProgress.Phase?
    private var printedIssues = 0
    private let quiet: Bool

    init(quiet: Bool) { self.quiet = quiet }

    func report(_ p: IndexProgress) {
        lock.lock(); defer { lock.unlock() }
        guard !quiet else { return }
        let now = Date()
        let phaseChanged = p.phase != lastPhase
        if phaseChanged, lastPhase != nil, isTerminal { printError("") }
        let interval = isTerminal ? 0.2 : 10
        guard phaseChanged || now.timeIntervalSince(lastDraw) >= interval || p.phase == .done else { return }
        lastPhase = p.phase
        lastDraw = now
        let elapsed = max(p.elapsedSeconds, 1e-3)
        var line = "\(p.phase.rawValue): \(p.documentsDone)"
        if let total = p.documentsTotal, total > 0 {
            line += "/\(total) docs"
            if isTerminal {
                let width = 24
                let filled = min(width, p.documentsDone * width / total)
                line = "[" + String(repeating: "#", count: filled) + String(repeating: ".", count: width - filled) + "] " + line
            }
        } else {
            line += " docs"
        }
        if p.phase == .indexing || p.phase == .sampling || p.phase == .done {
            let dps = Double(p.documentsDone) / elapsed, tps = Double(p.tokensDone) / elapsed
            line += String(format: "  %.0f docs/s  %.0f tokens/s", dps, tps)
            if let total = p.documentsTotal, dps > 0, p.documentsDone < total {
                let eta = Int(Double(total - p.documentsDone) / dps)
                line += String(format: "  ETA %d:%02d", eta / 60, eta % 60)
            }
        }
        line += String(format: "  %.1fs", p.elapsedSeconds)
        if isTerminal {
            printError("\r\u{1B}[2K" + line, terminator: p.phase == .done ? "\n" : "")
        } else {
            printError(line)
        }
    }

    func issue(_ i: CorpusIssue) {
        lock.lock(); defer { lock.unlock() }
        printedIssues += 1
        guard printedIssues <= 100 else { return }
        if isTerminal { printError("\r\u{1B}[2K", terminator: "") }
        printError("warning: corpus \(i)" + (printedIssues == 100 ? " (further issues are counted, not printed)" : ""))
    }
}

struct BatchOptions: ParsableArguments {
    @Option(name: .long, help: "Documents per write transaction.")
    var batchSize: Int = 1000
    @Option(name: .long, help: "What to do with a bad corpus line: skip (report and go on) or abort (keep committed batches, stop).")
    var onError: OnErrorPolicy = .skip
    @Flag(name: .long, help: "No progress output.")
    var quiet = false
}

func summarize(_ r: IndexBuildReport, verb: String) {
    var s = "\(verb) \(r.documentsIndexed) documents (\(r.tokensIndexed) tokens)"
    if r.documentsReplaced > 0 { s += ", replaced \(r.documentsReplaced)" }
    if r.issueCount > 0 { s += ", skipped \(r.issueCount) bad lines" }
    if let line = r.resumedAfterLine { s += ", resumed after line \(line)" }
    s += String(format: " in %.1f s (encoding %.1f s)", r.seconds, r.encodeSeconds)
    if r.trained, let t = r.training {
        s += String(format: "; trained %d centroids on %d tokens of %d documents in %.1f s", r.centroids, t.sampleTokens, t.sampleDocuments, t.seconds)
    }
    print(s)
    if let note = r.fileCompactionSkipped { printError("note: data.mdb was not compacted: \(note)") }
}

struct IndexBuildCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "build",
        abstract: "Build an index from a BEIR corpus (JSON lines with _id, title, text). Re-running an interrupted build continues it.")

    @Option(name: .long, help: "PyLate checkpoint directory.") var model: String
    @Option(name: .long, help: "Corpus file (JSON lines).") var corpus: String
    @Option(name: .long, help: "Index directory to create.") var index: String
    @Option(name: .long, help: "Bits per dimension of the residual codes: 1, 2 or 4.") var nbits: Int = 2
    @Option(name: .long, help: "Number of centroids (default: PLAID's 2^floor(log2(16·sqrt(tokens)))).") var centroids: Int?
    @Option(name: .long, help: "Seed for sampling and k-means.") var seed: UInt64 = 42
    @Option(name: .long, help: "k-means iterations.") var kmeansIterations: Int = 4
    @Flag(name: .long, help: "Do not store document text and title (metadata is still stored).") var noStoreText = false
    @Option(name: .long, help: ArgumentHelp("Bound on the k-means sample kept in memory, in tokens.", visibility: .hidden))
    var maxSampleTokens: Int = 1 << 21
    @OptionGroup var batch: BatchOptions

    func validate() throws {
        guard [1, 2, 4].contains(nbits) else { throw ValidationError("--nbits must be 1, 2 or 4") }
        guard batch.batchSize > 0 else { throw ValidationError("--batch-size must be positive") }
        if let centroids, centroids <= 0 { throw ValidationError("--centroids must be positive") }
        guard (1...100).contains(kmeansIterations) else { throw ValidationError("--kmeans-iterations must be in 1...100") }
    }

    func run() throws {
        let encoder = try loadTokenEncoder(modelDirectory: model)
        var options = IndexBuildOptions()
        options.nbits = nbits
        options.centroids = centroids
        options.seed = seed
        options.kmeansIterations = kmeansIterations
        options.storeText = !noStoreText
        options.maxSampleTokens = max(1, maxSampleTokens)
        options.batchSize = batch.batchSize
        options.onError = batch.onError
        let printer = ProgressPrinter(quiet: batch.quiet)
        let builder = IndexBuilder(encoder: encoder, options: options,
                                   progress: { printer.report($0) }, onIssue: { printer.issue($0) })
        do {
            let report = try builder.build(corpus: corpus, index: index)
            ModelLocation.record(modelDirectory: model, forIndex: index)
            if report.alreadyComplete {
                print("the index at \(index) is already complete for this corpus; nothing to do")
            } else {
                summarize(report, verb: "indexed")
            }
        } catch {
            throw CLIError("\(error)")
        }
    }
}

struct IndexAddCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "add",
        abstract: "Add documents from a corpus file; an existing id is replaced. Re-running an interrupted add continues it.")

    @Option(name: .long, help: "PyLate checkpoint directory (default: the model the index was built with).") var model: String?
    @Option(name: .long, help: "Corpus file (JSON lines).") var corpus: String
    @Option(name: .long, help: "Index directory.") var index: String
    @OptionGroup var batch: BatchOptions

    func run() throws {
        do {
            let idx = try ColBERTIndex.open(at: index)
            let encoder = try loadTokenEncoder(modelDirectory: try ModelLocation.resolve(index: index, override: model))
            var options = IndexBuildOptions()
            options.batchSize = batch.batchSize
            options.onError = batch.onError
            let printer = ProgressPrinter(quiet: batch.quiet)
            let builder = IndexBuilder(encoder: encoder, options: options,
                                       progress: { printer.report($0) }, onIssue: { printer.issue($0) })
            let report = try builder.add(corpus: corpus, to: idx)
            summarize(report, verb: "added")
            if let hint = try idx.stats().hint { printError("hint: \(hint)") }
        } catch let e as CLIError {
            throw e
        } catch {
            throw CLIError("\(error)")
        }
    }
}

struct IndexDeleteCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "delete", abstract: "Delete documents by external id.")

    @Option(name: .long, help: "Index directory.") var index: String
    @Option(name: .long, help: "File with one document id per line.") var idsFile: String?
    @Option(name: .long, help: "Ids per write transaction.") var batchSize: Int = 10_000
    @Option(name: .long, parsing: .upToNextOption, help: "Document ids.") var ids: [String] = []

    func validate() throws {
        guard !ids.isEmpty || idsFile != nil else { throw ValidationError("give document ids or --ids-file") }
        guard batchSize > 0 else { throw ValidationError("--batch-size must be positive") }
    }

    func run() throws {
        do {
            var all = ids
            if let idsFile {
                guard let data = FileManager.default.contents(atPath: idsFile) else { throw CLIError("cannot read \(idsFile)") }
                guard let text = String(data: data, encoding: .utf8) else { throw CLIError("\(idsFile) is not valid UTF-8") }
                all += text.split(whereSeparator: \.isNewline).map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
            }
            let idx = try ColBERTIndex.open(at: index)
            var deleted = 0
            var start = 0
            while start < all.count {
                let end = min(all.count, start + batchSize)
                deleted += try idx.delete(externalIds: Array(all[start..<end]))
                start = end
            }
            print("deleted \(deleted) of \(all.count) ids (\(all.count - deleted) not found)")
        } catch let e as CLIError {
            throw e
        } catch {
            throw CLIError("\(error)")
        }
    }
}

struct IndexStatsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "stats", abstract: "Print index statistics.")

    @Option(name: .long, help: "Index directory.") var index: String
    @Flag(name: .long, help: "Print JSON.") var json = false

    func run() throws {
        let stats: IndexStats
        do { stats = try ColBERTIndex.open(at: index, readOnly: true).stats() } catch { throw CLIError("\(error)") }
        if json {
            let enc = JSONEncoder()
            enc.outputFormatting = [.prettyPrinted, .sortedKeys]
            print(String(decoding: try enc.encode(stats), as: UTF8.self))
            return
        }
        func f(_ x: Double?) -> String { x.map { String(format: "%.4f", $0) } ?? "-" }
        let rows: [(String, String)] = [
            ("documents", "\(stats.documents)"),
            ("tokens", "\(stats.tokens)"),
            ("centroids", "\(stats.centroids) (\(stats.emptyClusters) empty, \(stats.clusterChunks) chunks)"),
            ("centroid groups", stats.centroidGroups.map { "\($0) stored (for --group-probes)" } ?? (stats.centroids >= CentroidRouter.minimumCentroids ? "none stored (grouped on the first routed search; `colbert index regroup` stores them)" : "none (fewer than \(CentroidRouter.minimumCentroids) centroids)")),
            ("dim / nbits", "\(stats.dim) / \(stats.nbits)"),
            ("file size", String(format: "%.1f MB (%.1f MB in use)", Double(stats.fileSizeBytes) / 1e6, Double(stats.usedBytes) / 1e6)),
            ("bytes per token", String(format: "%.1f (clusters %.1f, documents %.1f; format floor %.0f)", stats.bytesPerToken, stats.clusterBytesPerToken, stats.documentBytesPerToken, stats.floorBytesPerToken)),
            ("free pages", String(format: "%.1f MB (reclaim with `colbert index compact`)", Double(max(0, stats.fileSizeBytes - stats.livePageBytes)) / 1e6)),
            ("model fingerprint", stats.modelFingerprint),
            ("stored text", stats.storesText ? "yes" : "no"),
            ("mean reconstruction error", f(stats.meanReconstructionError)),
            ("residual norm (training / build / added)", "\(f(stats.trainingMeanResidualNorm)) / \(f(stats.buildMeanResidualNorm)) / \(f(stats.addedMeanResidualNorm))"),
            ("drift of added data", stats.drift.map { String(format: "%.3f× over %d tokens", $0, stats.addedTokens) } ?? "-"),
            ("build complete", stats.buildComplete ? "yes" : "no (re-run the build to continue)"),
        ]
        let width = rows.map(\.0.count).max() ?? 0
        for (k, v) in rows { print(k.padding(toLength: width, withPad: " ", startingAt: 0) + "  " + v) }
        if let hint = stats.hint { print("hint: \(hint)") }
    }
}

struct IndexVerifyCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "verify", abstract: "Check every invariant of an index; exits 1 on violations.")

    @Option(name: .long, help: "Index directory.") var index: String

    func run() throws {
        let violations: [IndexViolation]
        do { violations = try ColBERTIndex.open(at: index, readOnly: true).verify() } catch { throw CLIError("\(error)") }
        if violations.isEmpty {
            print("ok: no violations")
            return
        }
        for v in violations { print(v) }
        printError("\(violations.count) violation(s) found")
        throw ExitCode(1)
    }
}

/// Commands that open an index for writing would otherwise create an empty environment at a
/// mistyped path.
func requireIndexFile(_ path: String) throws {
    guard FileManager.default.fileExists(atPath: path + "/data.mdb") else {
        throw CLIError("\(IndexError.notAnIndex(path))")
    }
}

struct IndexCompactCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "compact",
        abstract: "Re-cut cluster chunks to fill their pages and rewrite data.mdb without free pages (after add/delete). Needs exclusive use of the index.")

    @Option(name: .long, help: "Index directory.") var index: String

    func run() throws {
        try requireIndexFile(index)
        do {
            // The chunk rewrite runs first, with the index object released before the file swap.
            try { try ColBERTIndex.open(at: index).compact() }()
            let r = try ColBERTIndex.compactFile(at: index)
            print(String(format: "data.mdb: %.1f MB -> %.1f MB", Double(r.bytesBefore) / 1e6, Double(r.bytesAfter) / 1e6))
        } catch {
            throw CLIError("\(error)")
        }
    }
}

struct IndexRegroupCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "regroup",
        abstract: "Store the centroid groups that --group-probes routes through, in an index created before indexes stored them (or whose record `verify` reports damaged).")

    @Option(name: .long, help: "Index directory.") var index: String

    func run() throws {
        try requireIndexFile(index)
        let groups: Int
        do { groups = try ColBERTIndex.open(at: index).storeCentroidGroups() } catch { throw CLIError("\(error)") }
        if groups == 0 {
            print("fewer than \(CentroidRouter.minimumCentroids) centroids: every search scores them all, nothing to group")
        } else {
            print("stored \(groups) centroid groups")
        }
    }
}

/// Synthetic token vectors for `index bench`: the text's last word is the document number, and
/// its tokens are that document of a fixed `SyntheticVectors` space (no model needed).
struct SyntheticBenchEncoder: TokenEncoder {
    let fingerprint = "synthetic-bench-v1"
    let space: SyntheticVectors
    var dim: Int { space.dim }

    init(dim: Int, topics: Int = 4096, meanTokens: Int) {
        let layout = SyntheticVectors.Layout(meanTokens: meanTokens, minTokens: 4, lengthSpread: max(1, meanTokens),
                                             topicsPerDocument: 8, seedSalt: 1)
        space = SyntheticVectors(dim: dim, topics: topics, seed: 1234, centers: .gaussian,
                                 noise: .gaussian(sigma: 0.6), layout: layout)
    }

    func encode(_ texts: [String], kind: EncodeKind) throws -> [TokenEmbeddings] {
        texts.map { text in
            space.document(text.split(separator: " ").last.flatMap { UInt64($0) } ?? 0).embeddings
        }
    }
}

/// `colbert index bench`: builds an index from synthetic vectors and prints build figures.
struct IndexBenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench",
        abstract: "Build an index from synthetic token vectors (SciFact-sized by default) and print build time, peak RSS and bytes per token.")

    @Option(name: .long, help: "Index directory to create (must not exist).") var index: String
    @Option(name: .long) var documents: Int = 5183
    @Option(name: .long, help: "Mean tokens per document.") var meanTokens: Int = 157
    @Option(name: .long) var dim: Int = 128
    @Option(name: .long) var nbits: Int = 2
    @Option(name: .long) var centroids: Int?
    @Option(name: .long) var batchSize: Int = 1000
    @Option(name: .long) var kmeansIterations: Int = 4
    @Flag(name: .long) var quiet = false

    func validate() throws {
        guard dim >= 1 else { throw ValidationError("--dim must be at least 1") }
    }

    func run() throws {
        let corpus = NSTemporaryDirectory() + "colbert-bench-corpus-\(getpid()).jsonl"
        defer { try? FileManager.default.removeItem(atPath: corpus) }
        var text = ""
        for i in 0..<documents { text += "{\"_id\":\"doc\(i)\",\"title\":\"\",\"text\":\"synthetic document \(i)\"}\n" }
        try text.write(toFile: corpus, atomically: true, encoding: .utf8)
        var options = IndexBuildOptions()
        options.nbits = nbits
        options.centroids = centroids
        options.batchSize = batchSize
        options.kmeansIterations = kmeansIterations
        options.encodeBatchSize = 256
        let printer = ProgressPrinter(quiet: quiet)
        let encoder = SyntheticBenchEncoder(dim: dim, meanTokens: meanTokens)
        let builder = IndexBuilder(encoder: encoder, options: options, progress: { printer.report($0) }, onIssue: { printer.issue($0) })
        let report: IndexBuildReport
        do { report = try builder.build(corpus: corpus, index: index) } catch { throw CLIError("\(error)") }
        let stats = try ColBERTIndex.open(at: index, readOnly: true).stats()
        print(String(format: "documents %d, tokens %d, centroids %d, nbits %d", stats.documents, stats.tokens, stats.centroids, stats.nbits))
        print(String(format: "build %.1f s total, %.1f s encoding, %.1f s excluding encoding (k-means %.1f s)",
                     report.seconds, report.encodeSeconds, report.seconds - report.encodeSeconds, report.training?.seconds ?? 0))
        print(String(format: "peak RSS %.0f MB", Double(peakRSSBytes() ?? 0) / 1_048_576))
        print(String(format: "file %.1f MB, %.1f bytes/token (clusters %.1f, documents %.1f), used %.1f MB",
                     Double(stats.fileSizeBytes) / 1e6, stats.bytesPerToken, stats.clusterBytesPerToken,
                     stats.documentBytesPerToken, Double(stats.usedBytes) / 1e6))
        print(String(format: "mean reconstruction error %.4f", stats.meanReconstructionError ?? .nan))
    }
}
