import ColBERTCore
import Foundation

/// BEIR-style evaluation: qrels and queries readers, and the metrics exactly as pytrec_eval
/// (trec_eval) computes them.
public enum Evaluation {
    public enum ReadError: Error, Equatable, CustomStringConvertible {
        case cannotRead(String)
        case malformedLine(path: String, line: Int, reason: String)
        public var description: String {
            switch self {
            case .cannotRead(let p): return "cannot read \(p)"
            case .malformedLine(let p, let l, let r): return "\(p):\(l): \(r)"
            }
        }
    }

    /// Relevance judgements: query id → document id → graded relevance.
    public typealias Qrels = [String: [String: Int]]

    /// Parses a BEIR qrels TSV (`query-id`, `corpus-id`, `score`, tab-separated). A first line
    /// whose score column is not an integer is taken as the header. Later duplicates of a pair
    /// overwrite earlier ones (as pytrec_eval's dict would).
    public static func parseQrels(_ text: String, source: String = "qrels") throws -> Qrels {
        var qrels: Qrels = [:]
        var lineNo = 0
        for raw in text.split(separator: "\n", omittingEmptySubsequences: false) {
            lineNo += 1
            let line = raw.hasSuffix("\r") ? raw.dropLast() : raw
            if line.trimmingCharacters(in: .whitespaces).isEmpty { continue }
            let f = line.split(separator: "\t", omittingEmptySubsequences: false)
            guard f.count >= 3 else {
                throw ReadError.malformedLine(path: source, line: lineNo, reason: "expected 3 tab-separated fields, got \(f.count)")
            }
            let scoreText = f[2].trimmingCharacters(in: .whitespaces)
            guard let score = Int(scoreText) ?? Double(scoreText).flatMap({ $0 == $0.rounded() ? Int(exactly: $0) : nil }) else {
                if lineNo == 1 { continue }  // header
                throw ReadError.malformedLine(path: source, line: lineNo, reason: "score '\(scoreText)' is not an integer")
            }
            let qid = String(f[0]), did = String(f[1])
            guard !qid.isEmpty, !did.isEmpty else {
                throw ReadError.malformedLine(path: source, line: lineNo, reason: "empty query or document id")
            }
            qrels[qid, default: [:]][did] = score
        }
        return qrels
    }

    public static func readQrels(path: String) throws -> Qrels {
        guard let data = FileManager.default.contents(atPath: path) else { throw ReadError.cannotRead(path) }
        return try parseQrels(String(decoding: data, as: UTF8.self), source: path)
    }

    /// One BEIR query.
    public struct Query: Sendable, Equatable {
        public var id: String
        public var text: String
        public init(id: String, text: String) { self.id = id; self.text = text }
    }

    /// Reads BEIR `queries.jsonl`: one object per line with `_id` (string or number) and `text`.
    public static func readQueries(path: String) throws -> [Query] {
        var out: [Query] = []
        var reader: JSONLinesReader
        do { reader = try JSONLinesReader(path: path) } catch { throw ReadError.cannotRead(path) }
        while let item = reader.next() {
            switch item {
            case .tooLong(let n, let len):
                throw ReadError.malformedLine(path: path, line: n, reason: "line of \(len) bytes is too long")
            case .line(let n, let bytes):
                if bytes.allSatisfy({ $0 == 0x20 || $0 == 0x09 || $0 == 0x0D }) { continue }
                out.append(try parseQuery(bytes, path: path, line: n))
            }
        }
        return out
    }

    static func parseQuery(_ bytes: Data, path: String, line: Int) throws -> Query {
        guard let obj = try? JSONSerialization.jsonObject(with: bytes), let dict = obj as? [String: Any] else {
            throw ReadError.malformedLine(path: path, line: line, reason: "not a JSON object")
        }
        let id: String
        if let s = dict["_id"] as? String { id = s }
        else if let n = dict["_id"] as? NSNumber { id = n.stringValue }
        else { throw ReadError.malformedLine(path: path, line: line, reason: "missing string \"_id\"") }
        guard let text = dict["text"] as? String else {
            throw ReadError.malformedLine(path: path, line: line, reason: "missing string \"text\"")
        }
        return Query(id: id, text: text)
    }

    /// The distinct documents judged for `queries` in `qrels` that satisfy `where` (e.g. "the
    /// index does not hold it").
    public static func judgedDocuments(of queries: [String], in qrels: Qrels,
                                       where keep: (String) throws -> Bool) rethrows -> Set<String> {
        var found = Set<String>()
        for q in queries {
            for doc in (qrels[q] ?? [:]).keys where !found.contains(doc) {
                if try keep(doc) { found.insert(doc) }
            }
        }
        return found
    }

    /// Per-query metric values.
    public struct QueryMetrics: Sendable, Equatable {
        public var ndcg10: Double
        public var recall100: Double
        public var mrr10: Double
    }

    /// Mean metrics and how many queries they average.
    public struct Summary: Sendable, Equatable {
        public var ndcg10: Double
        public var recall100: Double
        public var mrr10: Double
        public var queries: Int
    }

    /// Orders a run as trec_eval does before computing anything: score descending, ties by
    /// document id DESCENDING (byte-wise, strcmp). Our own result lists break ties by internal id
    /// ascending; re-sorting here makes the metrics match pytrec_eval on the same run.
    public static func trecOrder(_ run: [(docId: String, score: Double)]) -> [(docId: String, score: Double)] {
        run.sorted { a, b in
            if a.score != b.score { return a.score > b.score }
            return b.docId.utf8.lexicographicallyPrecedes(a.docId.utf8)
        }
    }

    /// nDCG@10, Recall@100 and MRR@10 of one query's run against its judgements, as trec_eval's
    /// `ndcg_cut_10`, `recall_100` and `recip_rank` cut at rank 10. A document is relevant when its
    /// relevance is >= 1; gains are the relevance values; discount log2(rank + 1).
    public static func metrics(run: [(docId: String, score: Double)], judgements: [String: Int]) -> QueryMetrics {
        // trec_eval keeps one entry per document id (the run is a dict in pytrec_eval).
        var seen = Set<String>()
        let ranked = trecOrder(run).filter { seen.insert($0.docId).inserted }
        var dcg = 0.0, rr = 0.0
        var found100 = 0
        for (rank0, entry) in ranked.enumerated() {
            let rel = judgements[entry.docId] ?? 0
            if rank0 < 10 {
                if rel > 0 { dcg += Double(rel) / log2(Double(rank0 + 2)) }
                if rel > 0 && rr == 0 { rr = 1 / Double(rank0 + 1) }
            }
            if rank0 < 100 && rel > 0 { found100 += 1 }
        }
        let ideal = judgements.values.filter { $0 > 0 }.sorted(by: >)
        var idcg = 0.0
        for (rank0, rel) in ideal.prefix(10).enumerated() { idcg += Double(rel) / log2(Double(rank0 + 2)) }
        let numRel = ideal.count
        return QueryMetrics(ndcg10: idcg > 0 ? dcg / idcg : 0,
                            recall100: numRel > 0 ? Double(found100) / Double(numRel) : 0,
                            mrr10: rr)
    }

    /// Means over the queries that have judgements; a judged query missing from `runs` counts
    /// as an empty run (all metrics 0). Queries without judgements are ignored.
    public static func evaluate(runs: [String: [(docId: String, score: Double)]], qrels: Qrels) -> Summary {
        var n = 0, ndcg = 0.0, recall = 0.0, mrr = 0.0
        for qid in qrels.keys.sorted() {
            let m = metrics(run: runs[qid] ?? [], judgements: qrels[qid] ?? [:])
            n += 1
            ndcg += m.ndcg10
            recall += m.recall100
            mrr += m.mrr10
        }
        guard n > 0 else { return Summary(ndcg10: 0, recall100: 0, mrr10: 0, queries: 0) }
        let d = Double(n)
        return Summary(ndcg10: ndcg / d, recall100: recall / d, mrr10: mrr / d, queries: n)
    }

    /// Fraction of the reference top-k (e.g. exhaustive) found in the candidate top-k
    /// (e.g. pruned). 1 when the reference is empty.
    public static func overlapRecall(_ candidate: [ScoredDocument], reference: [ScoredDocument], k: Int) -> Double {
        let ref = reference.prefix(k).map(\.docId)
        guard !ref.isEmpty else { return 1 }
        let got = Set(candidate.prefix(k).map(\.docId))
        return Double(ref.filter { got.contains($0) }.count) / Double(ref.count)
    }
}
