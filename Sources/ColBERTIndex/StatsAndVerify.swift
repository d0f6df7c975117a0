import ColBERTCore
import Foundation

/// What `colbert index stats` reports. JSON keys are snake_case.
public struct IndexStats: Codable, Sendable, Equatable {
    public var formatVersion: Int
    public var documents: Int
    public var tokens: Int
    public var centroids: Int
    public var dim: Int
    public var nbits: Int
    public var modelFingerprint: String
    public var storesText: Bool
    /// Size of `data.mdb` on disk.
    public var fileSizeBytes: Int
    /// Bytes in pages LMDB has handed out (live plus reusable free pages).
    public var usedBytes: Int
    /// `file_size_bytes / tokens`.
    public var bytesPerToken: Double
    /// Bytes of the cluster-major records per token (pages incl. overflow).
    public var clusterBytesPerToken: Double
    /// Bytes of the document-major records per token.
    public var documentBytesPerToken: Double
    public var clusterChunks: Int
    public var emptyClusters: Int
    /// Mean ‖v − decode(encode(v))‖ (decoded vectors L2-normalised), over every token indexed.
    public var meanReconstructionError: Double?
    /// Mean ‖v − centroid(v)‖ of the k-means training sample.
    public var trainingMeanResidualNorm: Double?
    /// Mean residual norm of tokens indexed by the build.
    public var buildMeanResidualNorm: Double?
    /// Mean residual norm of tokens added after the build.
    public var addedMeanResidualNorm: Double?
    public var addedTokens: Int
    /// `added_mean_residual_norm / build_mean_residual_norm` (1 = no drift).
    public var drift: Double?
    /// Set when added data fits the centroids clearly worse than the built data.
    public var hint: String?
    public var buildComplete: Bool
    public var mapSizeBytes: Int
    /// Bytes in the pages of all databases (branch, leaf, overflow); `file_size_bytes` minus this
    /// is free pages and LMDB's own metadata, which `colbert index compact` reclaims.
    public var livePageBytes: Int = 0
    /// Least bytes per token of this format: the packed code plus the 2-byte document id offset
    /// in its cluster chunk (document records add about one byte per distinct centroid).
    public var floorBytesPerToken: Double = 0
    /// Groups of centroids stored for routed centroid scoring (`SearchParameters.groupProbes`);
    /// nil when the index stores none (fewer than 4,096 centroids, or created before groups were
    /// stored: a routed search then groups the centroids on first use).
    public var centroidGroups: Int?

    enum CodingKeys: String, CodingKey {
        case formatVersion = "format_version", documents, tokens, centroids, dim, nbits
        case modelFingerprint = "model_fingerprint", storesText = "stores_text"
        case fileSizeBytes = "file_size_bytes", usedBytes = "used_bytes", bytesPerToken = "bytes_per_token"
        case clusterBytesPerToken = "cluster_bytes_per_token", documentBytesPerToken = "document_bytes_per_token"
        case clusterChunks = "cluster_chunks", emptyClusters = "empty_clusters"
        case meanReconstructionError = "mean_reconstruction_error"
        case trainingMeanResidualNorm = "training_mean_residual_norm"
        case buildMeanResidualNorm = "build_mean_residual_norm"
        case addedMeanResidualNorm = "added_mean_residual_norm", addedTokens = "added_tokens"
        case drift, hint, buildComplete = "build_complete", mapSizeBytes = "map_size_bytes"
        case livePageBytes = "live_page_bytes", floorBytesPerToken = "floor_bytes_per_token"
        case centroidGroups = "centroid_groups"
    }
}

/// One broken invariant found by `verify`.
public struct IndexViolation: Sendable, Equatable, CustomStringConvertible {
    public enum Kind: String, Sendable {
        case metadata, counts, documentRecord, clusterRecord, idMap, storedFields, mismatch
    }
    public var kind: Kind
    public var message: String
    public init(_ kind: Kind, _ message: String) { self.kind = kind; self.message = message }
    public var description: String { "\(kind.rawValue): \(message)" }
}

extension ColBERTIndex {
    /// Drift above which stats suggest a rebuild.
    static let driftHintRatio = 1.25

    public func stats() throws -> IndexStats {
        let fileSize = (try? FileManager.default.attributesOfItem(atPath: path + "/data.mdb")[.size] as? Int) ?? 0
        let usage = env.usage()
        return try env.withReadTransaction { txn in
            let c = try readCounters(txn)
            var training: TrainingSummary?
            if let v = try txn.get(meta, key: Schema.metaKey("training")) {
                training = try JSONRecord.decode(TrainingSummary.self, v, what: "training")
            }
            var complete = true
            if let v = try txn.get(meta, key: Schema.metaKey("build")) {
                complete = try JSONRecord.decode(FileProgress.self, v, what: "build").complete
            }
            let clusters = try clusters(c)
            let cs = try txn.stat(clusters), ds = try txn.stat(docs)
            var nonEmpty = 0
            var lastCentroid: UInt32? = nil
            try txn.scan(clusters) { k, _ in
                let cid = Keys.readU32(k)
                if cid != lastCentroid { nonEmpty += 1; lastCentroid = cid }
                return true
            }
            let tokens = Double(max(c.tokens, 1))
            let indexed = c.builtTokens + c.addedTokens
            let buildMean = c.builtTokens > 0 ? c.builtResidualSum / Double(c.builtTokens) : nil
            let addedMean = c.addedTokens > 0 ? c.addedResidualSum / Double(c.addedTokens) : nil
            let reference = buildMean ?? training?.meanResidualNorm
            var drift: Double?
            if let addedMean, let reference, reference > 0 { drift = addedMean / reference }
            var hint: String?
            if let drift, drift > Self.driftHintRatio {
                hint = String(format: "added documents lie %.0f%% farther from the centroids than the built ones; rebuild the index to retrain them", (drift - 1) * 100)
            }
            var livePages = 0
            for name in Schema.databases { livePages += try txn.stat(env.database(name)).pages }
            var stats = IndexStats(
                formatVersion: config.formatVersion, documents: c.documents, tokens: c.tokens,
                centroids: centroidCount, dim: dim, nbits: nbits, modelFingerprint: modelFingerprint,
                storesText: storesText, fileSizeBytes: fileSize, usedBytes: usage.usedBytes,
                bytesPerToken: Double(fileSize) / tokens,
                clusterBytesPerToken: Double(cs.pages * usage.pageSize) / tokens,
                documentBytesPerToken: Double(ds.pages * usage.pageSize) / tokens,
                clusterChunks: cs.entries, emptyClusters: centroidCount - nonEmpty,
                meanReconstructionError: indexed > 0 ? (c.builtErrorSum + c.addedErrorSum) / Double(indexed) : nil,
                trainingMeanResidualNorm: training?.meanResidualNorm,
                buildMeanResidualNorm: buildMean, addedMeanResidualNorm: addedMean, addedTokens: c.addedTokens,
                drift: drift, hint: hint, buildComplete: complete, mapSizeBytes: env.mapSize)
            stats.livePageBytes = livePages * usage.pageSize
            stats.floorBytesPerToken = Double(codec.bytesPerVector + 2)
            if let v = try centroidGroupsRecord(txn) {
                stats.centroidGroups = decodeCentroidGroups(v).map { $0.centers.count / dim }
            }
            return stats
        }
    }

    /// Checks every invariant of the stored index and returns each violation found (empty: clean).
    /// Document records and clusters are compared per document by token count and an
    /// order-independent hash of its distinct centroids, so memory stays O(documents).
    public func verify(maxViolations: Int = 1000) throws -> [IndexViolation] {
        var out: [IndexViolation] = []
        func report(_ kind: IndexViolation.Kind, _ message: String) {
            if out.count < maxViolations { out.append(IndexViolation(kind, message)) }
        }
        let bpc = codec.bytesPerVector
        try env.withReadTransaction { txn in
            let c = try readCounters(txn)
            guard Schema.clusterTables.indices.contains(c.clusterTable) else {
                report(.metadata, "counters name cluster table \(c.clusterTable)")
                return
            }
            if let v = try centroidGroupsRecord(txn), decodeCentroidGroups(v) == nil {
                report(.metadata, "the centroid groups record is malformed (searches regroup the centroids instead)")
            }
            let clusters = try clusters(c)
            let idle = clusterTables[1 - c.clusterTable]
            let idleChunks = try txn.stat(idle).entries
            if idleChunks != 0 { report(.clusterRecord, "the idle cluster table holds \(idleChunks) chunks") }
            // Per document: token count and distinct-centroid hash from its record, then from the clusters.
            var fromDocs: [UInt32: (Int, UInt64)] = [:]
            var docTokens = 0
            try txn.scan(docs) { k, v in
                guard k.count == 4 else { report(.documentRecord, "key of \(k.count) bytes"); return true }
                let d = Keys.readU32(k)
                if d >= c.nextDocId { report(.documentRecord, "document \(d) is at or above the id bound \(c.nextDocId)") }
                guard let (n, cs) = Schema.decodeDocument(v) else { report(.documentRecord, "document \(d): malformed record"); return true }
                var h: UInt64 = 0
                for cid in cs {
                    if Int(cid) >= centroidCount { report(.documentRecord, "document \(d): centroid \(cid) out of range") }
                    h &+= Self.centroidHash(cid)
                }
                fromDocs[d] = (n, h)
                docTokens += n
                return true
            }
            var fromClusters: [UInt32: (Int, UInt64)] = [:]
            var clusterTokens = 0
            var previous: (UInt32, UInt32)? = nil
            try txn.scan(clusters) { k, v in
                guard k.count == 8 else { report(.clusterRecord, "key of \(k.count) bytes"); return true }
                let cid = Keys.readU32(k)
                if Int(cid) >= centroidCount { report(.clusterRecord, "chunk of centroid \(cid) out of range") }
                guard let view = ClusterChunkLayout.view(v, bytesPerCode: bpc) else { report(.clusterRecord, "cluster \(cid): chunk of \(v.count) bytes does not match its header"); return true }
                if view.count == 0 { report(.clusterRecord, "cluster \(cid): empty chunk") }
                for i in 0..<view.count {
                    let d = view.docId(i)
                    var firstInCluster = true
                    if let (pc, pd) = previous, pc == cid {
                        if d < pd { report(.clusterRecord, "cluster \(cid): document ids not ascending (\(d) after \(pd))") }
                        firstInCluster = d != pd
                    }
                    previous = (cid, d)
                    let e = fromClusters[d] ?? (0, 0)
                    fromClusters[d] = (e.0 + 1, firstInCluster ? e.1 &+ Self.centroidHash(cid) : e.1)
                }
                clusterTokens += view.count
                return true
            }
            if docTokens != c.tokens { report(.counts, "document records hold \(docTokens) tokens, counters say \(c.tokens)") }
            if clusterTokens != c.tokens { report(.counts, "cluster records hold \(clusterTokens) tokens, counters say \(c.tokens)") }
            if fromDocs.count != c.documents { report(.counts, "\(fromDocs.count) document records, counters say \(c.documents)") }
            for (d, (n, h)) in fromDocs {
                let (cn, ch) = fromClusters[d] ?? (0, 0)
                if cn != n { report(.mismatch, "document \(d): \(n) tokens in its record, \(cn) in clusters") }
                else if ch != h { report(.mismatch, "document \(d): its record and the clusters name different centroids") }
            }
            for d in fromClusters.keys where fromDocs[d] == nil { report(.mismatch, "clusters hold tokens of document \(d), which has no record") }

            // Id maps both ways.
            var i2e = 0
            try txn.scan(int2ext) { k, v in
                i2e += 1
                guard k.count == 4 else { report(.idMap, "int2ext key of \(k.count) bytes"); return true }
                let d = Keys.readU32(k)
                let id = String(decoding: v, as: UTF8.self)
                if fromDocs[d] == nil { report(.idMap, "internal id \(d) (\"\(id)\") has no document record") }
                if let e = try txn.get(ext2int, key: Schema.externalKey(id)), e.count >= 4 {
                    if Schema.u32LE(e, 0) != d { report(.idMap, "\"\(id)\" maps to \(Schema.u32LE(e, 0)), but \(d) maps to it") }
                } else {
                    report(.idMap, "\"\(id)\" (internal \(d)) is missing from ext2int")
                }
                return true
            }
            var e2i = 0
            try txn.scan(ext2int) { k, v in
                e2i += 1
                guard v.count >= 4 else { report(.idMap, "truncated ext2int value"); return true }
                let d = Schema.u32LE(v, 0)
                let id = String(decoding: UnsafeRawBufferPointer(rebasing: v[4...]), as: UTF8.self)
                if Schema.externalKey(id) != Array(k) { report(.idMap, "ext2int key does not match its id \"\(id.prefix(64))\"") }
                if let back = try txn.get(int2ext, key: Keys.u32(d)) {
                    if String(decoding: back, as: UTF8.self) != id { report(.idMap, "\"\(id)\" → \(d) → a different id") }
                } else { report(.idMap, "\"\(id)\" → \(d), which has no int2ext entry") }
                return true
            }
            if i2e != c.documents { report(.counts, "int2ext has \(i2e) entries, counters say \(c.documents) documents") }
            if e2i != c.documents { report(.counts, "ext2int has \(e2i) entries, counters say \(c.documents) documents") }
            var st = 0
            try txn.scan(stored) { k, v in
                st += 1
                if k.count == 4 {
                    let d = Keys.readU32(k)
                    if fromDocs[d] == nil { report(.storedFields, "stored fields of \(d), which has no record") }
                    if Schema.decodeStored(v, id: "") == nil { report(.storedFields, "stored fields of \(d) are malformed") }
                }
                return true
            }
            if st != c.documents { report(.counts, "\(st) stored-field records, counters say \(c.documents) documents") }
        }
        return out
    }

    /// FNV-1a over a centroid id: summed per document it is an order-independent set hash.
    static func centroidHash(_ centroid: UInt32) -> UInt64 {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        var c = centroid
        for _ in 0..<4 { h = (h ^ UInt64(c & 0xFF)) &* 0x100_0000_01b3; c >>= 8 }
        // Final avalanche so sums of similar hashes do not cancel.
        h ^= h >> 33; h &*= 0xff51_afd7_ed55_8ccd; h ^= h >> 33
        return h
    }
}
