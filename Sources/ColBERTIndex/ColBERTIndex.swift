import ColBERTCore
import Foundation
import Synchronization

/// Everything needed to create an index: the trained centroids and codec plus fixed settings.
public struct IndexConfiguration: Sendable {
    public var modelFingerprint: String
    /// Row-major `K × dim` unit centroids.
    public var centroids: [Float]
    public var codec: ResidualCodec
    public var storeText: Bool
    public var seed: UInt64
    public var training: TrainingSummary?
    /// Initial LMDB map size; the map grows by itself when it fills up.
    public var initialMapSize: Int
    public var maxMapSize: Int

    public var dim: Int { codec.dim }
    public var nbits: Int { codec.nbits }
    public var centroidCount: Int { codec.dim > 0 ? centroids.count / codec.dim : 0 }

    public init(modelFingerprint: String, centroids: [Float], codec: ResidualCodec, storeText: Bool = true,
                seed: UInt64 = 0, training: TrainingSummary? = nil,
                initialMapSize: Int = 1 << 30, maxMapSize: Int = 1 << 40) {
        self.modelFingerprint = modelFingerprint
        self.centroids = centroids
        self.codec = codec
        self.storeText = storeText
        self.seed = seed
        self.training = training
        self.initialMapSize = initialMapSize
        self.maxMapSize = maxMapSize
    }
}

/// Outcome of one add/replace/delete batch.
public struct BatchResult: Sendable, Equatable {
    public var added: Int = 0
    public var replaced: Int = 0
    public var deleted: Int = 0
    public var tokens: Int = 0
}

/// Where indexed tokens came from: statistics keep builds and later adds apart to measure drift.
enum TokenOrigin { case build, add }

/// A compressed ColBERT token index stored in one LMDB environment (a directory).
///
/// Thread safety: the LMDB environment is shared (see `LMDBEnvironment`), all other stored
/// properties are immutable after `init` (centroids are copied once into an aligned buffer that
/// lives as long as the index). Writers are serialised by the environment. Hence `@unchecked Sendable`.
public final class ColBERTIndex: @unchecked Sendable {
    public let path: String
    public let codec: ResidualCodec
    public let modelFingerprint: String
    public let storesText: Bool
    public let centroidCount: Int
    public var dim: Int { codec.dim }
    public var nbits: Int { codec.nbits }
    public var isReadOnly: Bool { env.readOnly }

    let env: LMDBEnvironment
    let config: ConfigRecord
    let centroidStorage: UnsafeMutableBufferPointer<Float>
    let meta, docs, ext2int, int2ext, stored: LMDBDatabase
    /// The two cluster databases; `Counters.clusterTable` says which one is in use.
    let clusterTables: [LMDBDatabase]
    /// Chunk directory of the latest snapshot a search used (see `ClusterDirectory`).
    let directoryCache = Mutex<ClusterDirectory?>(nil)
    /// The grouped centroids, built on first use (writers never need them).
    private let routerCache = Mutex<CentroidRouter??>(nil)
    private let quantizedCache = Mutex<QuantizedCentroids??>(nil)

    /// Row-major `K × dim` centroids, aligned; valid as long as the index object lives.
    public var centroids: UnsafeBufferPointer<Float> { UnsafeBufferPointer(centroidStorage) }

    private init(env: LMDBEnvironment) throws {
        self.env = env
        path = env.path
        let meta = env.database("meta")
        let (config, codec, centroidValues) = try env.withReadTransaction { txn -> (ConfigRecord, ResidualCodec, [Float]) in
            guard let c = try txn.get(meta, key: Schema.metaKey("config")) else { throw IndexError.notAnIndex(env.path) }
            let config = try JSONRecord.decode(ConfigRecord.self, c, what: "config")
            guard config.formatVersion == Schema.formatVersion else {
                throw IndexError.unsupportedFormat(found: config.formatVersion, supported: Schema.formatVersion)
            }
            guard Schema.databases.allSatisfy(env.hasDatabase) else { throw IndexError.corrupt("named databases are missing") }
            guard let cb = try txn.get(meta, key: Schema.metaKey("codec")) else { throw IndexError.corrupt("codec tables missing") }
            let tables = Schema.readFloatsLE(cb)
            let nCut = (1 << config.nbits) - 1
            guard tables.count == nCut + (1 << config.nbits) else { throw IndexError.corrupt("codec tables have the wrong size") }
            let codec: ResidualCodec
            do {
                codec = try ResidualCodec(dim: config.dim, nbits: config.nbits,
                                          bucketCutoffs: Array(tables[0..<nCut]), bucketWeights: Array(tables[nCut...]))
            } catch { throw IndexError.corrupt("\(error)") }
            guard let cv = try txn.get(meta, key: Schema.metaKey("centroids")) else { throw IndexError.corrupt("centroids missing") }
            let values = Schema.readFloatsLE(cv)
            guard values.count == config.centroidCount * config.dim, config.centroidCount > 0 else {
                throw IndexError.corrupt("centroid table has \(values.count) floats, expected \(config.centroidCount) × \(config.dim)")
            }
            return (config, codec, values)
        }
        self.meta = meta
        docs = env.database("docs"); ext2int = env.database("ext2int")
        int2ext = env.database("int2ext"); stored = env.database("stored")
        clusterTables = Schema.clusterTables.map(env.database)
        self.config = config
        self.codec = codec
        modelFingerprint = config.modelFingerprint
        storesText = config.storeText
        centroidCount = config.centroidCount
        centroidStorage = .allocate(capacity: centroidValues.count)
        _ = centroidStorage.initialize(from: centroidValues)
    }

    deinit { centroidStorage.deallocate() }

    /// The centroids grouped for routed centroid scoring (see `CentroidRouter`), nil below
    /// `CentroidRouter.minimumCentroids`: from the groups the index stored when it was created,
    /// or, for an index created before it stored them (or whose record is damaged, which `verify`
    /// reports), computed on first use (1.4 s at 16,384 centroids). Kept while the index is open.
    public var centroidRouter: CentroidRouter? {
        routerCache.withLock { cached in
            if let cached { return cached }
            let groups = storedCentroidGroups() ?? Self.groupCentroids(centroids, count: centroidCount, dim: dim, allCores: false)
            let built = groups.flatMap {
                try? CentroidRouter(centroids: centroids, dim: dim, centers: $0.centers, assignment: $0.assignment)
            }
            cached = .some(built)
            return built
        }
    }

    /// The centroids in 8-bit integers for choosing probes (`QuantizedCentroids`; nil below its
    /// minimum size), packed on first use (~10 ms at 16,384 centroids) and kept while the index is
    /// open.
    public var quantizedCentroids: QuantizedCentroids? {
        quantizedCache.withLock { cached in
            if let cached { return cached }
            let built = QuantizedCentroids(centroids: centroids, dim: dim)
            cached = .some(built)
            return built
        }
    }

    /// Groups the centroids and stores the groups (`colbert index regroup`): for an index created
    /// before it stored them, or whose record `verify` reports damaged. Returns the number of
    /// groups (0 below `CentroidRouter.minimumCentroids`: nothing to store). Searches already
    /// running keep the groups they have; the next opening reads the stored ones.
    public func storeCentroidGroups() throws -> Int {
        guard let groups = Self.groupCentroids(centroids, count: centroidCount, dim: dim, allCores: true) else { return 0 }
        try env.withWriteTransaction { txn in try Self.putCentroidGroups(groups, dim: dim, meta: meta, txn: txn) }
        return groups.centers.count / dim
    }

    /// The stored centroid groups, nil when absent or malformed.
    func storedCentroidGroups() -> (centers: [Float], assignment: [UInt32])? {
        try? env.withReadTransaction { txn in try centroidGroupsRecord(txn).flatMap(decodeCentroidGroups) }
    }

    /// The stored centroid groups' record as `txn` sees it; nil when absent, and always below
    /// `CentroidRouter.minimumCentroids` (such indexes never route).
    func centroidGroupsRecord(_ txn: LMDBTransaction) throws -> UnsafeRawBufferPointer? {
        guard centroidCount >= CentroidRouter.minimumCentroids else { return nil }
        return try txn.get(meta, key: Schema.metaKey("centroid_groups"))
    }

    /// The groups in a record of `centroidGroupsRecord`, nil when it is malformed.
    func decodeCentroidGroups(_ record: UnsafeRawBufferPointer) -> (centers: [Float], assignment: [UInt32])? {
        Schema.decodeCentroidGroups(record, centroids: centroidCount, dim: dim)
    }

    static func putCentroidGroups(_ groups: (centers: [Float], assignment: [UInt32]), dim: Int, meta: LMDBDatabase,
                                  txn: LMDBTransaction) throws {
        try txn.put(meta, key: Schema.metaKey("centroid_groups"),
                    value: Schema.encodeCentroidGroups(centers: groups.centers, assignment: groups.assignment, dim: dim))
    }

    /// k-means over the centroids into `CentroidRouter.groupCount(centroids:)` groups
    /// (deterministic), nil below `CentroidRouter.minimumCentroids`. `allCores: false` leaves
    /// OpenBLAS's thread count alone, for use beside searches.
    static func groupCentroids(_ centroids: UnsafeBufferPointer<Float>, count k: Int, dim: Int,
                               allCores: Bool) -> (centers: [Float], assignment: [UInt32])? {
        guard k >= CentroidRouter.minimumCentroids, let base = centroids.baseAddress else { return nil }
        let groups = CentroidRouter.groupCount(centroids: k)
        let centers = KMeans.train(points: centroids, count: k, dim: dim, k: groups, iterations: 8, seed: 0x5EED_C0A2_5E00,
                                   allCores: allCores)
        var assignment = [UInt32](repeating: 0, count: k)
        var scores = [Float](repeating: 0, count: k)
        centers.withUnsafeBufferPointer { c in
            KMeans.assign(points: base, count: k, dim: dim, centroids: c.baseAddress!, k: groups, ids: &assignment, scores: &scores)
        }
        return (centers, assignment)
    }

    static func openEnvironment(at path: String, readOnly: Bool, mapSize: Int, maxMapSize: Int = 1 << 40) throws -> LMDBEnvironment {
        var isDir: ObjCBool = false
        if !FileManager.default.fileExists(atPath: path, isDirectory: &isDir) {
            guard !readOnly else { throw IndexError.notAnIndex(path) }
            try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        } else if !isDir.boolValue {
            throw IndexError.notAnIndex(path)
        }
        if readOnly, !FileManager.default.fileExists(atPath: path + "/data.mdb") { throw IndexError.notAnIndex(path) }
        return try EnvironmentRegistry.shared.open(path: path, readOnly: readOnly) {
            do {
                return try LMDBEnvironment(path: path, databases: Schema.databases, mapSize: mapSize,
                                           maxMapSize: maxMapSize, readOnly: readOnly)
            } catch let e as LMDBError where e.code == -30798 /* MDB_NOTFOUND */ {
                throw IndexError.notAnIndex(path)
            }
        }
    }

    /// Whether a live document has this external id (cheaper than a full snapshot).
    public func contains(externalId: String) throws -> Bool {
        try env.withReadTransaction { txn in
            guard let v = try txn.get(ext2int, key: Schema.externalKey(externalId)), v.count >= 4 else { return false }
            return String(decoding: UnsafeRawBufferPointer(rebasing: v[4...]), as: UTF8.self) == externalId
        }
    }

    /// Opens an existing index.
    public static func open(at path: String, readOnly: Bool = false, mapSize: Int = 1 << 30) throws -> ColBERTIndex {
        try ColBERTIndex(env: try openEnvironment(at: path, readOnly: readOnly, mapSize: mapSize))
    }

    /// Creates a new, empty index in `path` (a directory). Refuses a directory that already holds an index.
    public static func create(at path: String, configuration: IndexConfiguration) throws -> ColBERTIndex {
        try create(at: path, configuration: configuration, extraMeta: [:])
    }

    /// Creates the index in one transaction that also clears leftovers of an interrupted, never
    /// trained build and writes `extraMeta` (e.g. build progress).
    static func create(at path: String, configuration c: IndexConfiguration, extraMeta: [String: [UInt8]]) throws -> ColBERTIndex {
        guard c.centroidCount > 0, c.centroids.count == c.centroidCount * c.dim else {
            throw IndexError.invalidOption("centroids must be a non-empty K × \(c.dim) table")
        }
        guard c.centroidCount <= Int(UInt32.max) else { throw IndexError.invalidOption("too many centroids") }
        let env = try openEnvironment(at: path, readOnly: false, mapSize: c.initialMapSize, maxMapSize: c.maxMapSize)
        // Grouped once here, so that searches need not (see `centroidRouter`).
        let groups = c.centroids.withUnsafeBufferPointer {
            groupCentroids($0, count: c.centroidCount, dim: c.dim, allCores: true)
        }
        let config = ConfigRecord(formatVersion: Schema.formatVersion, dim: c.dim, nbits: c.nbits,
                                  centroidCount: c.centroidCount, modelFingerprint: c.modelFingerprint,
                                  storeText: c.storeText, seed: c.seed)
        try env.withWriteTransaction { txn in
            let meta = env.database("meta")
            if try txn.get(meta, key: Schema.metaKey("config")) != nil {
                throw IndexError.alreadyExists("\(path) already holds an index; add to it, or remove it to rebuild")
            }
            for name in Schema.databases { try txn.clear(env.database(name)) }
            try txn.put(meta, key: Schema.metaKey("config"), value: try JSONRecord.encode(config))
            try txn.put(meta, key: Schema.metaKey("centroids"), value: Schema.floatsLE(c.centroids))
            try txn.put(meta, key: Schema.metaKey("codec"), value: Schema.floatsLE(c.codec.bucketCutoffs + c.codec.bucketWeights))
            if let groups { try putCentroidGroups(groups, dim: c.dim, meta: meta, txn: txn) }
            try txn.put(meta, key: Schema.metaKey("counters"), value: try JSONRecord.encode(Counters()))
            if let t = c.training { try txn.put(meta, key: Schema.metaKey("training"), value: try JSONRecord.encode(t)) }
            for (k, v) in extraMeta { try txn.put(meta, key: Schema.metaKey(k), value: v) }
        }
        return try ColBERTIndex(env: env)
    }

    /// Throws `IndexError.modelMismatch` unless `fingerprint` is the one the index was built with.
    public func checkModel(fingerprint: String, dim: Int? = nil) throws {
        guard fingerprint == modelFingerprint else { throw IndexError.modelMismatch(index: modelFingerprint, encoder: fingerprint) }
        if let dim, dim != self.dim { throw IndexError.dimensionMismatch(index: self.dim, encoder: dim) }
    }

    /// The cluster database in use according to `counters`.
    func clusters(_ counters: Counters) throws -> LMDBDatabase {
        guard clusterTables.indices.contains(counters.clusterTable) else { throw IndexError.corrupt("counters name cluster table \(counters.clusterTable)") }
        return clusterTables[counters.clusterTable]
    }

    /// Runs `body` with a consistent read snapshot. Views handed out by the snapshot point into
    /// the memory map and are valid only inside `body`. Do not write to the index inside `body`.
    public func withSnapshot<R>(_ body: (IndexReadSnapshot) throws -> R) throws -> R {
        try env.withReadTransaction { txn in
            let counters = try readCounters(txn)
            // LMDB refreshes a named database's root on its first use in a transaction (a write
            // to the transaction); searches read one snapshot from several threads, so touch
            // every database here, on one thread, before handing the snapshot out.
            for db in clusterTables + [docs, ext2int, int2ext, stored] {
                _ = try txn.get(db, key: Keys.u32(0))
            }
            return try body(IndexReadSnapshot(index: self, txn: txn, counters: counters))
        }
    }

    // MARK: Adding and deleting

    /// Encodes and adds documents in one transaction; an existing id is replaced.
    @discardableResult
    public func add(documents: [CorpusDocument], encoder: any TokenEncoder) throws -> BatchResult {
        try checkModel(fingerprint: encoder.fingerprint, dim: encoder.dim)
        let embeddings: [TokenEmbeddings]
        do { embeddings = try encoder.encode(documents.map(\.encodedText), kind: .document) } catch {
            throw IndexError.encoderFailed("\(error)")
        }
        guard embeddings.count == documents.count else { throw IndexError.encoderFailed("returned \(embeddings.count) results for \(documents.count) texts") }
        return try addEncoded(Array(zip(documents, embeddings)))
    }

    /// Adds already encoded documents in one transaction; an existing id is replaced.
    @discardableResult
    public func addEncoded(_ documents: [(CorpusDocument, TokenEmbeddings)]) throws -> BatchResult {
        let prepared = try prepare(documents, assignments: nil)
        return try writeBatch(prepared, deleting: [], origin: .add, progress: nil)
    }

    /// Adds encoded documents whose tokens' centroids are already known (one id per token, in
    /// document order), skipping the assignment GEMM: for synthetic benchmark indexes, whose
    /// size would make exact assignment the whole cost.
    @discardableResult
    public func addEncoded(_ documents: [(CorpusDocument, TokenEmbeddings)], assignments: [UInt32]) throws -> BatchResult {
        let prepared = try prepare(documents, assignments: assignments)
        return try writeBatch(prepared, deleting: [], origin: .add, progress: nil)
    }

    /// Deletes documents by external id in one transaction; returns how many existed.
    @discardableResult
    public func delete(externalIds: [String]) throws -> Int {
        try writeBatch([], deleting: externalIds, origin: .add, progress: nil).deleted
    }

    /// Stored fields of documents by external id (nil for unknown ids).
    public func documents(externalIds: [String]) throws -> [StoredDocument?] {
        try withSnapshot { s in try externalIds.map { id in try s.internalId(of: id).flatMap { try s.document($0) } } }
    }

    // MARK: Internals shared with the builder

    func readCounters(_ txn: LMDBTransaction) throws -> Counters {
        guard let v = try txn.get(meta, key: Schema.metaKey("counters")) else { throw IndexError.corrupt("counters missing") }
        return try JSONRecord.decode(Counters.self, v, what: "counters")
    }

    func readProgress(_ key: String) throws -> FileProgress? {
        try env.withReadTransaction { txn in
            guard let v = try txn.get(meta, key: Schema.metaKey(key)) else { return nil }
            return try JSONRecord.decode(FileProgress.self, v, what: key)
        }
    }

    func writeProgress(_ key: String, _ progress: FileProgress) throws {
        try env.withWriteTransaction { txn in try txn.put(meta, key: Schema.metaKey(key), value: try JSONRecord.encode(progress)) }
    }

    /// A document ready to be written: centroid ids and packed codes, computed outside any transaction.
    struct PreparedDocument {
        var document: CorpusDocument
        var count: Int
        var centroidIds: [UInt32]
        var codes: [UInt8]
        var residualSum: Double
        var errorSum: Double
    }

    /// Assigns every token to its nearest centroid (one GEMM over the batch) and compresses it.
    func prepare(_ documents: [(CorpusDocument, TokenEmbeddings)], assignments: [UInt32]? = nil) throws -> [PreparedDocument] {
        var total = 0
        for (doc, emb) in documents {
            guard emb.dim == dim else { throw IndexError.dimensionMismatch(index: dim, encoder: emb.dim) }
            guard !doc.id.isEmpty else { throw IndexError.invalidId("empty id") }
            guard doc.id.utf8.count <= CorpusParser.maxIdBytes else { throw IndexError.invalidId("longer than \(CorpusParser.maxIdBytes) bytes") }
            total += emb.count
        }
        if let assignments {
            guard assignments.count == total else { throw IndexError.invalidOption("expected \(total) centroid assignments, got \(assignments.count)") }
            guard assignments.allSatisfy({ Int($0) < centroidCount }) else { throw IndexError.invalidOption("centroid assignment out of range") }
        }
        var flat = [Float](); flat.reserveCapacity(total * dim)
        for (_, emb) in documents { flat.append(contentsOf: emb.vectors) }
        var ids = [UInt32](repeating: 0, count: total)
        var scores = [Float](repeating: 0, count: total)
        let bpc = codec.bytesPerVector
        var out = [PreparedDocument](); out.reserveCapacity(documents.count)
        let scratch = UnsafeMutablePointer<Float>.allocate(capacity: dim)
        defer { scratch.deallocate() }
        flat.withUnsafeBufferPointer { fp in
            guard let base = fp.baseAddress else {
                for (doc, _) in documents { out.append(PreparedDocument(document: doc, count: 0, centroidIds: [], codes: [], residualSum: 0, errorSum: 0)) }
                return
            }
            if let assignments {
                ids = assignments
                for t in 0..<total {
                    scores[t] = VectorMath.dot(base + t * dim, centroidStorage.baseAddress! + Int(ids[t]) * dim, dim)
                }
            } else {
                KMeans.assign(points: base, count: total, dim: dim, centroids: centroidStorage.baseAddress!, k: centroidCount,
                              ids: &ids, scores: &scores)
            }
            var row = 0
            for (doc, emb) in documents {
                let n = emb.count
                var codes = [UInt8](repeating: 0, count: n * bpc)
                var residual = 0.0, error = 0.0
                codes.withUnsafeMutableBufferPointer { cp in
                    for t in 0..<n {
                        let v = base + (row + t) * dim
                        let c = centroidStorage.baseAddress! + Int(ids[row + t]) * dim
                        codec.encode(vector: v, centroid: c, into: cp.baseAddress! + t * bpc)
                        residual += Double(max(0, 2 - 2 * scores[row + t])).squareRoot()
                        codec.decode(codes: UnsafeRawPointer(cp.baseAddress! + t * bpc), centroid: c, into: scratch)
                        var e: Float = 0
                        for d in 0..<dim { let x = v[d] - scratch[d]; e += x * x }
                        error += Double(e.squareRoot())
                    }
                }
                out.append(PreparedDocument(document: doc, count: n, centroidIds: Array(ids[row..<(row + n)]),
                                            codes: codes, residualSum: residual, errorSum: error))
                row += n
            }
        }
        return out
    }

    /// Applies one batch in one write transaction: deletions, replacements, inserts, cluster
    /// appends, counters and (optionally) file progress. Re-runnable from scratch on map growth.
    func writeBatch(_ prepared: [PreparedDocument], deleting: [String], origin: TokenOrigin,
                    progress: (key: String, value: FileProgress)?) throws -> BatchResult {
        guard !env.readOnly else { throw IndexError.readOnly }
        var seen = Set<String>()
        for p in prepared where !seen.insert(p.document.id).inserted { throw IndexError.duplicateId(p.document.id) }
        let progressBytes = try progress.map { try JSONRecord.encode($0.value) }
        return try env.withWriteTransaction { txn in
            var counters = try readCounters(txn)
            var result = BatchResult()
            var removals: [UInt32: [UInt32]] = [:]

            let clusters = try clusters(counters)
            func removeDocument(_ d: UInt32) throws {
                let key = Keys.u32(d)
                if let rec = try txn.get(docs, key: key) {
                    guard let (n, cs) = Schema.decodeDocument(rec) else { throw IndexError.corrupt("document record \(d) is malformed") }
                    for c in cs { removals[c, default: []].append(d) }
                    counters.tokens -= n
                }
                counters.documents -= 1
                try txn.delete(docs, key: key)
                try txn.delete(int2ext, key: key)
                try txn.delete(stored, key: key)
            }
            func lookup(_ id: String) throws -> UInt32? {
                guard let v = try txn.get(ext2int, key: Schema.externalKey(id)), v.count >= 4 else { return nil }
                guard String(decoding: UnsafeRawBufferPointer(rebasing: v[4...]), as: UTF8.self) == id else {
                    throw IndexError.corrupt("external id hash collision for \"\(id.prefix(64))…\"")
                }
                return Schema.u32LE(v, 0)
            }

            for id in deleting {
                guard let d = try lookup(id) else { continue }
                try removeDocument(d)
                try txn.delete(ext2int, key: Schema.externalKey(id))
                result.deleted += 1
            }
            for p in prepared {
                if let d = try lookup(p.document.id) { try removeDocument(d); result.replaced += 1 }
            }
            for (c, ids) in removals { try removeFromCluster(txn, clusters, centroid: c, docIds: Set(ids)) }

            // Inserts: fresh internal ids in increasing order keep every cluster sorted by doc id.
            guard UInt64(counters.nextDocId) + UInt64(prepared.count) < UInt64(UInt32.max) else {
                throw IndexError.invalidOption("internal document ids exhausted; rebuild the index")
            }
            var internalIds = [UInt32](); internalIds.reserveCapacity(prepared.count)
            for p in prepared {
                let d = counters.nextDocId
                counters.nextDocId += 1
                internalIds.append(d)
                // Fresh ids sort after every existing key: appending packs the pages full.
                let key = Keys.u32(d)
                try txn.put(docs, key: key, value: Schema.encodeDocument(tokens: p.count, centroids: Array(Set(p.centroidIds)).sorted()),
                            append: true)
                let idBytes = Array(p.document.id.utf8)
                var ev = Keys.u32(0); Schema.storeU32LEArray(&ev, d); ev.append(contentsOf: idBytes)
                try txn.put(ext2int, key: Schema.externalKey(p.document.id), value: ev)
                try txn.put(int2ext, key: key, value: idBytes, append: true)
                try txn.put(stored, key: key, value: Schema.encodeStored(p.document, storeText: storesText), append: true)
                counters.documents += 1
                counters.tokens += p.count
                switch origin {
                case .build:
                    counters.builtTokens += p.count; counters.builtResidualSum += p.residualSum; counters.builtErrorSum += p.errorSum
                case .add:
                    counters.addedTokens += p.count; counters.addedResidualSum += p.residualSum; counters.addedErrorSum += p.errorSum
                }
                result.added += 1
                result.tokens += p.count
            }
            try appendToClusters(txn, clusters, prepared, internalIds: internalIds, mergeTail: origin == .add, counters: &counters)
            try txn.put(meta, key: Schema.metaKey("counters"), value: try JSONRecord.encode(counters))
            if let progress, let progressBytes { try txn.put(meta, key: Schema.metaKey(progress.key), value: progressBytes) }
            return result
        }
    }

    private func removeFromCluster(_ txn: LMDBTransaction, _ clusters: LMDBDatabase, centroid c: UInt32, docIds: Set<UInt32>) throws {
        let bpc = codec.bytesPerVector
        var rewrites: [([UInt8], [UInt8]?)] = []
        let prefix = Keys.u32(c)
        try txn.scan(clusters, from: Keys.u32u32(c, 0)) { k, v in
            guard k.count == 8, k[0] == prefix[0], k[1] == prefix[1], k[2] == prefix[2], k[3] == prefix[3] else { return false }
            guard let view = ClusterChunkLayout.view(v, bytesPerCode: bpc) else { throw IndexError.corrupt("cluster \(c) chunk has a bad size") }
            var keep: [Int] = []
            for i in 0..<view.count where !docIds.contains(view.docId(i)) { keep.append(i) }
            guard keep.count != view.count else { return true }
            if keep.isEmpty { rewrites.append((Array(k), nil)); return true }
            var out = [UInt8](repeating: 0, count: ClusterChunkLayout.byteCount(count: keep.count, bytesPerCode: bpc))
            out.withUnsafeMutableBytes { o in
                ClusterChunkLayout.write(into: o.baseAddress!, count: keep.count, bytesPerCode: bpc,
                                         docId: { view.docId(keep[$0]) }, code: { view.code(keep[$0]) })
            }
            rewrites.append((Array(k), out))
            return true
        }
        for (k, v) in rewrites {
            if let v { try txn.put(clusters, key: k, value: v) } else { try txn.delete(clusters, key: k) }
        }
    }

    /// Appends the batch's tokens to their clusters as new chunks cut by `ClusterChunkLayout.plan`.
    /// With `mergeTail` (adds), a cluster's last chunk is re-cut together with the new tokens
    /// when it is small (stored inline), so small adds do not leave a trail of tiny chunks; a
    /// build skips this and leaves the layout to the final `compact()`.
    private func appendToClusters(_ txn: LMDBTransaction, _ clusters: LMDBDatabase, _ prepared: [PreparedDocument],
                                  internalIds: [UInt32], mergeTail: Bool, counters: inout Counters) throws {
        let bpc = codec.bytesPerVector
        let k = centroidCount
        // Counting sort of (doc, token) by centroid; docs in id order keep each cluster ascending.
        var sizes = [Int](repeating: 0, count: k + 1)
        for p in prepared { for c in p.centroidIds { sizes[Int(c) + 1] += 1 } }
        for i in 0..<k { sizes[i + 1] += sizes[i] }
        let total = sizes[k]
        guard total > 0 else { return }
        var cursor = sizes
        var refDoc = [Int32](repeating: 0, count: total)
        var refTok = [Int32](repeating: 0, count: total)
        for (pi, p) in prepared.enumerated() {
            for (t, c) in p.centroidIds.enumerated() {
                let slot = cursor[Int(c)]; cursor[Int(c)] += 1
                refDoc[slot] = Int32(pi); refTok[slot] = Int32(t)
            }
        }
        var tailIds: [UInt32] = [], tailCodes: [UInt8] = []
        for c in 0..<k where sizes[c + 1] > sizes[c] {
            let lo = sizes[c], n = sizes[c + 1] - lo
            // The cluster's last chunk joins the new tokens when it is small.
            tailIds.removeAll(keepingCapacity: true); tailCodes.removeAll(keepingCapacity: true)
            var firstKey: [UInt8]? = nil
            if mergeTail, let last = try txn.last(clusters, before: Keys.u32u32(UInt32(c) &+ 1, 0)),
               last.key.count == 8, Array(last.key.prefix(4)) == Keys.u32(UInt32(c)),
               last.value.count <= ClusterChunkLayout.inlineValueBytes {
                try last.value.withUnsafeBytes { try appendEntries(of: $0, centroid: c, ids: &tailIds, codes: &tailCodes) }
                try txn.delete(clusters, key: last.key)
                firstKey = last.key
            }
            for j in lo..<(lo + n) {
                let pi = Int(refDoc[j]), t = Int(refTok[j])
                tailIds.append(internalIds[pi])
                prepared[pi].codes.withUnsafeBytes { tailCodes.append(contentsOf: UnsafeRawBufferPointer(rebasing: $0[(t * bpc)..<((t + 1) * bpc)])) }
            }
            let plan = ClusterChunkLayout.plan(count: tailIds.count, bytesPerCode: bpc) { tailIds[$0] }
            try putChunks(txn, clusters, plan: plan, ids: tailIds, codes: tailCodes, append: false) { _ in
                if let f = firstKey { firstKey = nil; return f }
                guard counters.nextChunkSeq < UInt64(UInt32.max) else {
                    throw IndexError.invalidOption("cluster chunk numbers are used up; run `colbert index compact`")
                }
                defer { counters.nextChunkSeq += 1 }
                return Keys.u32u32(UInt32(c), UInt32(counters.nextChunkSeq))
            }
        }
    }

    /// Appends the ids and codes of the chunk stored in `value` to `ids` and `codes`.
    private func appendEntries(of value: UnsafeRawBufferPointer, centroid c: Int, ids: inout [UInt32], codes: inout [UInt8]) throws {
        let bpc = codec.bytesPerVector
        guard let view = ClusterChunkLayout.view(value, bytesPerCode: bpc) else { throw IndexError.corrupt("cluster \(c) chunk has a bad size") }
        for i in 0..<view.count {
            ids.append(view.docId(i))
            codes.append(contentsOf: UnsafeRawBufferPointer(start: view.code(i), count: bpc))
        }
    }

    /// Writes one cluster's entries (`ids` with their packed `codes`) as chunks of the sizes in
    /// `plan`, chunk j under `key(j)`.
    private func putChunks(_ txn: LMDBTransaction, _ db: LMDBDatabase, plan: [Int], ids: [UInt32], codes: [UInt8],
                           append: Bool, key: (Int) throws -> [UInt8]) throws {
        let bpc = codec.bytesPerVector
        var at = 0
        try codes.withUnsafeBytes { cb in
            for (j, m) in plan.enumerated() {
                let from = at
                try txn.put(db, key: try key(j), reserving: ClusterChunkLayout.byteCount(count: m, bytesPerCode: bpc), append: append) { buf in
                    ClusterChunkLayout.write(into: buf.baseAddress!, count: m, bytesPerCode: bpc,
                                             docId: { ids[from + $0] }, code: { cb.baseAddress! + (from + $0) * bpc })
                }
                at += m
            }
        }
    }

    /// Rewrites every cluster into the other cluster database, chunks cut afresh by
    /// `ClusterChunkLayout.plan` to fill whole pages (leaf pages too, appending in key order),
    /// then switches to it: one transaction, so an interruption leaves the index as it was. Memory is bounded
    /// by the largest cluster. The old database's pages become free pages of the file
    /// (`compactFile` gives them back).
    public func compact() throws {
        guard !env.readOnly else { throw IndexError.readOnly }
        let bpc = codec.bytesPerVector
        try env.withWriteTransaction { txn in
            var counters = try readCounters(txn)
            let source = try clusters(counters)
            let targetTable = 1 - counters.clusterTable
            let target = clusterTables[targetTable]
            try txn.clear(target)
            var ids: [UInt32] = [], codes: [UInt8] = []
            var current: UInt32? = nil
            var maxChunks: UInt64 = 0
            var packing: ClusterChunkLayout.LeafPacking? = ClusterChunkLayout.LeafPacking()
            func flush() throws {
                guard let c = current, !ids.isEmpty else { return }
                let plan = ClusterChunkLayout.plan(count: ids.count, bytesPerCode: bpc, docId: { ids[$0] }, packing: &packing)
                maxChunks = max(maxChunks, UInt64(plan.count))
                try putChunks(txn, target, plan: plan, ids: ids, codes: codes, append: true) { Keys.u32u32(c, UInt32($0)) }
                ids.removeAll(keepingCapacity: true); codes.removeAll(keepingCapacity: true)
            }
            try txn.scan(source) { k, v in
                guard k.count == 8 else { throw IndexError.corrupt("cluster key of \(k.count) bytes") }
                let c = Keys.readU32(k)
                guard Int(c) < centroidCount else { throw IndexError.corrupt("chunk of centroid \(c) out of range") }
                if c != current { try flush(); current = c }
                try appendEntries(of: v, centroid: Int(c), ids: &ids, codes: &codes)
                return true
            }
            try flush()
            try txn.clear(source)
            counters.clusterTable = targetTable
            // Every chunk now has a sequence number below maxChunks.
            counters.nextChunkSeq = maxChunks
            try txn.put(meta, key: Schema.metaKey("counters"), value: try JSONRecord.encode(counters))
        }
    }
}

extension Schema {
    static func storeU32LEArray(_ a: inout [UInt8], _ v: UInt32) {
        a.withUnsafeMutableBytes { storeU32LE($0.baseAddress!, 0, v) }
    }
}

/// LMDB must not open one environment twice in a process (closing one handle drops the other's
/// file locks), so every `ColBERTIndex` of a directory shares one environment while any is alive.
final class EnvironmentRegistry: @unchecked Sendable {
    // All access to `entries` happens under `lock`.
    static let shared = EnvironmentRegistry()
    private let lock = NSLock()
    private final class Weak { weak var env: LMDBEnvironment?; init(_ e: LMDBEnvironment) { env = e } }
    private var entries: [String: Weak] = [:]

    static func key(_ path: String) -> String {
        URL(fileURLWithPath: path).resolvingSymlinksInPath().standardizedFileURL.path
    }

    /// Whether this process has the environment of `path` open.
    func isOpen(path: String) -> Bool {
        lock.lock(); defer { lock.unlock() }
        return entries[Self.key(path)]?.env != nil
    }

    func open(path: String, readOnly: Bool, _ make: () throws -> LMDBEnvironment) throws -> LMDBEnvironment {
        let key = Self.key(path)
        lock.lock(); defer { lock.unlock() }
        if let env = entries[key]?.env {
            if readOnly || !env.readOnly { return env }
            throw IndexError.invalidOption("\(path) is already open read-only in this process")
        }
        let env = try make()
        entries[key] = Weak(env)
        return env
    }
}
