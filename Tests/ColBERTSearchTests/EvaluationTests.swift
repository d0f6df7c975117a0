import ColBERTCore
import Foundation
import Testing
@testable import ColBERTSearch

@Suite struct EvaluationTests {
    let qrelsText = """
    query-id\tcorpus-id\tscore
    q1\td1\t2
    q1\td2\t1
    q1\td5\t1
    q2\td3\t1
    q3\td9\t0
    q4\td1\t1

    """

    @Test func qrelsAreParsedWithTheHeaderSkipped() throws {
        let q = try Evaluation.parseQrels(qrelsText)
        #expect(q.count == 4)
        #expect(q["q1"] == ["d1": 2, "d2": 1, "d5": 1])
        #expect(q["q3"] == ["d9": 0])
        #expect(throws: Evaluation.ReadError.self) { try Evaluation.parseQrels("a\tb\t1\nc\td\n") }
        #expect(throws: Evaluation.ReadError.self) { try Evaluation.parseQrels("q\td\t1\nq\te\tx\n") }
    }

    /// Judged documents of the evaluated queries only, each once, filtered by the predicate.
    @Test func judgedDocumentsOfTheQueries() throws {
        let q = try Evaluation.parseQrels("query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\td2\t0\nq2\td2\t2\nq3\td9\t1\n")
        #expect(Evaluation.judgedDocuments(of: ["q1", "q2"], in: q) { _ in true } == ["d1", "d2"])
        #expect(Evaluation.judgedDocuments(of: ["q1", "q2", "nope"], in: q) { $0 != "d1" } == ["d2"])
        #expect(Evaluation.judgedDocuments(of: ["q3"], in: q) { $0 == "d1" }.isEmpty)
    }

    @Test func metricsMatchHandComputedValues() throws {
        let qrels = try Evaluation.parseQrels(qrelsText)
        let runs: [String: [(docId: String, score: Double)]] = [
            "q1": [("d2", 0.9), ("d1", 0.8), ("d4", 0.7), ("d3", 0.7)],
            // Tie at 0.5: trec_eval puts "d7" before "d3" (doc id descending).
            "q2": [("d3", 0.5), ("d7", 0.5), ("d8", 0.4)],
            "q3": [("d9", 1.0)],
            "unjudged": [("d1", 1.0)],
        ]
        let m1 = Evaluation.metrics(run: runs["q1"]!, judgements: qrels["q1"]!)
        let idcg1 = 2.0 + 1 / log2(3.0) + 1 / log2(4.0)
        #expect(abs(m1.ndcg10 - (1 + 2 / log2(3.0)) / idcg1) < 1e-12)
        #expect(abs(m1.recall100 - 2.0 / 3) < 1e-12)
        #expect(m1.mrr10 == 1)
        let m2 = Evaluation.metrics(run: runs["q2"]!, judgements: qrels["q2"]!)
        #expect(abs(m2.ndcg10 - 1 / log2(3.0)) < 1e-12)
        #expect(m2.mrr10 == 0.5 && m2.recall100 == 1)
        let m3 = Evaluation.metrics(run: runs["q3"]!, judgements: qrels["q3"]!)
        #expect(m3 == Evaluation.QueryMetrics(ndcg10: 0, recall100: 0, mrr10: 0))

        let s = Evaluation.evaluate(runs: runs, qrels: qrels)
        #expect(s.queries == 4)
        #expect(abs(s.ndcg10 - (m1.ndcg10 + m2.ndcg10) / 4) < 1e-12)
        #expect(abs(s.recall100 - (2.0 / 3 + 1) / 4) < 1e-12)
        #expect(abs(s.mrr10 - 1.5 / 4) < 1e-12)
    }

    @Test func cutoffsAndIdenticalIdsFollowTrecEval() {
        // The only relevant document at rank 11: outside nDCG@10 and MRR@10, inside Recall@100.
        var run: [(docId: String, score: Double)] = (0..<10).map { ("x\($0)", 100 - Double($0)) }
        run.append(("rel", 1))
        let m = Evaluation.metrics(run: run, judgements: ["rel": 3])
        #expect(m.ndcg10 == 0 && m.mrr10 == 0 && m.recall100 == 1)
        // A result whose id equals the query id is kept (BEIR's ignore_identical_ids is off).
        let s = Evaluation.evaluate(runs: ["q7": [("q7", 2), ("a", 1)]], qrels: ["q7": ["q7": 1]])
        #expect(s.mrr10 == 1 && s.ndcg10 == 1)
        // Graded gains: relevance 2 at rank 2 below relevance 1 at rank 1.
        let g = Evaluation.metrics(run: [("a", 2), ("b", 1)], judgements: ["a": 1, "b": 2])
        #expect(abs(g.ndcg10 - (1 + 2 / log2(3.0)) / (2 + 1 / log2(3.0))) < 1e-12)
    }

    @Test func queriesAreReadFromJSONLines() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("colbert-queries-\(UInt64.random(in: 0...UInt64.max)).jsonl").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        try "{\"_id\": \"1\", \"text\": \"alpha\", \"metadata\": {}}\n\n{\"_id\": 2, \"text\": \"b\\u00e9ta\"}\n".write(toFile: path, atomically: true, encoding: .utf8)
        let q = try Evaluation.readQueries(path: path)
        #expect(q == [Evaluation.Query(id: "1", text: "alpha"), Evaluation.Query(id: "2", text: "béta")])
        try "{\"_id\": \"1\"}\n".write(toFile: path, atomically: true, encoding: .utf8)
        #expect(throws: Evaluation.ReadError.self) { try Evaluation.readQueries(path: path) }
        #expect(throws: Evaluation.ReadError.self) { try Evaluation.readQueries(path: path + ".missing") }
    }

    @Test func overlapRecallCountsSharedTopKDocuments() {
        let ref = [1, 2, 3, 4].map { ScoredDocument(docId: $0, score: 1) }
        let cand = [2, 9, 1, 3].map { ScoredDocument(docId: $0, score: 1) }
        #expect(Evaluation.overlapRecall(cand, reference: ref, k: 3) == 2.0 / 3)
        #expect(Evaluation.overlapRecall(cand, reference: ref, k: 4) == 0.75)
        #expect(Evaluation.overlapRecall([], reference: [], k: 10) == 1)
    }
}
