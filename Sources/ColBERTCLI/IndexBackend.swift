import ColBERTCore
import ColBERTIndex
import ColBERTSearch
import ColBERTServer
import Foundation

/// The server's backend over an LMDB index, its model's encoder and the MaxSim searcher.
/// Searches each read one LMDB snapshot (MVCC), so the server's single writer never blocks them.
struct IndexBackend: RetrievalBackend {
    let index: ColBERTIndex
    let encoder: any TokenEncoder
    let startedAt = Date()

    var dim: Int { encoder.dim }
    var modelFingerprint: String { encoder.fingerprint }

    func encode(_ texts: [String], kind: EncodeKind) throws -> [TokenEmbeddings] {
        try encoder.encode(texts, kind: kind)
    }

    func search(_ queries: [TokenEmbeddings], options: SearchOptions) throws -> [[SearchHit]] {
        for q in queries where q.dim != index.dim {
            throw BackendError(.modelMismatch, "query vectors have \(q.dim) dimensions, the index has \(index.dim)")
        }
        return try index.withSnapshot { snap in
            let (params, exhaustive) = try Self.searchParameters(options.parameters,
                                                                 over: .defaults(k: options.k, for: snap))
            var filter: DocumentFilter? = nil
            if let restrict = options.restrictTo {
                var allowed: [UInt32] = []
                for id in restrict { if let i = try snap.internalId(of: id) { allowed.append(i) } }
                if allowed.isEmpty { return queries.map { _ in [] } }
                filter = DocumentFilter(allowing: allowed)
            }
            return try queries.map { q in
                let ranked = exhaustive
                    ? try MaxSimSearcher.exhaustive(query: q, in: snap, k: options.k, allowed: filter, threads: max(1, options.threads))
                    : try MaxSimSearcher.search(query: q, in: snap, k: options.k, parameters: params, allowed: filter,
                                                threads: max(1, options.threads))
                return try ranked.map { hit in
                    guard options.includeText || options.includeMetadata else {
                        return SearchHit(id: try snap.externalId(of: hit.docId) ?? "", score: hit.score)
                    }
                    let doc = try snap.document(hit.docId)
                    return SearchHit(id: doc?.id ?? "", score: hit.score,
                                     text: options.includeText ? doc.flatMap(Self.fullText) : nil,
                                     metadata: options.includeMetadata ? doc.flatMap(Self.metadata) : nil)
                }
            }
        }
    }

    /// A request's `params` over `defaults` (the searched index's, `SearchParameters.defaults(k:for:)`);
    /// whether it asks for exhaustive search.
    static func searchParameters(_ parameters: [String: JSONValue],
                                 over defaults: SearchParameters) throws -> (SearchParameters, exhaustive: Bool) {
        var params = defaults
        var exhaustive = false
        for (name, value) in parameters {
            switch name {
            case "nprobe":
                guard let v = value.intValue, v >= 1, v <= 4096 else { throw BackendError(.badRequest, "params.nprobe must be an integer in 1...4096") }
                params.nprobe = v
            case "rerank":
                guard let v = value.intValue, v >= 0, v <= 100_000 else { throw BackendError(.badRequest, "params.rerank must be an integer in 0...100000") }
                params.rerankDepth = v
            case "rerank_margin":
                if value.isNull { params.rerankMargin = nil; continue }
                guard let v = value.doubleValue, v.isFinite, v >= 0, v <= 1000 else { throw BackendError(.badRequest, "params.rerank_margin must be a number in 0...1000 or null") }
                params.rerankMargin = Float(v)
            case "centroid_score_threshold":
                if value.isNull { params.centroidScoreThreshold = nil; continue }
                guard let v = value.doubleValue, v.isFinite else { throw BackendError(.badRequest, "params.centroid_score_threshold must be a number or null") }
                params.centroidScoreThreshold = Float(v)
            case "group_probes":
                guard let v = value.intValue, v >= 0, v <= 1_000_000 else { throw BackendError(.badRequest, "params.group_probes must be an integer in 0...1000000") }
                params.groupProbes = v
            case "fast_scan":
                guard let v = value.boolValue else { throw BackendError(.badRequest, "params.fast_scan must be a boolean") }
                params.fastScan = v
            case "quantized_centroids":
                guard let v = value.boolValue else { throw BackendError(.badRequest, "params.quantized_centroids must be a boolean") }
                params.quantizedCentroidScores = v
            case "exhaustive":
                guard let v = value.boolValue else { throw BackendError(.badRequest, "params.exhaustive must be a boolean") }
                exhaustive = v
            default:
                throw BackendError(.badRequest, "unknown search parameter '\(name)' (known: nprobe, rerank, rerank_margin, centroid_score_threshold, group_probes, fast_scan, quantized_centroids, exhaustive)")
            }
        }
        return (params, exhaustive)
    }

    func add(_ documents: [DocumentInput]) throws -> AddOutcome {
        var batch: [(CorpusDocument, TokenEmbeddings)] = []
        for d in documents {
            var metadataJSON: String? = nil
            if let m = d.metadata, !m.isNull {
                guard m.objectValue != nil else { throw BackendError(.badRequest, "metadata of '\(d.id)' must be a JSON object") }
                metadataJSON = m.serialized()
            }
            guard !d.id.isEmpty else { throw BackendError(.badRequest, "document ids must not be empty") }
            batch.append((CorpusDocument(id: d.id, text: d.text, metadataJSON: metadataJSON), d.embeddings))
        }
        do {
            let r = try index.addEncoded(batch)
            return AddOutcome(added: r.added, replaced: r.replaced)
        } catch let e as IndexError {
            throw BackendError(.badRequest, "\(e)")
        }
    }

    func delete(ids: [String]) throws -> DeleteOutcome {
        let present = try index.withSnapshot { snap in try ids.filter { try snap.internalId(of: $0) != nil } }
        let missing = ids.filter { !present.contains($0) }
        let deleted = present.isEmpty ? 0 : try index.delete(externalIds: present)
        return DeleteOutcome(deleted: deleted, missing: missing)
    }

    func get(ids: [String], includeText: Bool, includeMetadata: Bool) throws -> [ServerStoredDocument?] {
        try index.documents(externalIds: ids).map { doc in
            doc.map { d in
                ServerStoredDocument(id: d.id, text: includeText ? Self.fullText(d) : nil,
                                             metadata: includeMetadata ? Self.metadata(d) : nil)
            }
        }
    }

    func stats() throws -> JSONValue {
        let s = try index.stats()
        let data = try JSONEncoder().encode(s)
        return try JSONValue.parse([UInt8](data))
    }

    /// What was indexed: `title + " " + text`, or the text alone.
    static func fullText(_ d: IndexStoredDocument) -> String? {
        guard let text = d.text else { return nil }
        if let title = d.title, !title.isEmpty { return title + " " + text }
        return text
    }

    static func metadata(_ d: IndexStoredDocument) -> JSONValue? {
        var pairs: [(String, JSONValue)] = []
        if let title = d.title, !title.isEmpty { pairs.append(("title", .string(title))) }
        if let m = d.metadataJSON, let parsed = try? JSONValue.parse(m), let obj = parsed.objectValue {
            pairs += obj.filter { $0.0 != "title" }
        }
        return pairs.isEmpty ? nil : .object(pairs)
    }
}
