import ColBERTSearch
import ColBERTServer
import Testing
@testable import ColBERTCLI

/// The server's `params` of a search request, as the index backend reads them.
@Suite struct SearchParameterRequestTests {
    @Test func requestParametersOverrideTheDefaults() throws {
        let (none, exhaustiveByDefault) = try IndexBackend.searchParameters([:], over: .defaults(k: 10))
        #expect(none == SearchParameters.defaults(k: 10) && !exhaustiveByDefault)
        let (p, exhaustive) = try IndexBackend.searchParameters(
            ["nprobe": 8, "rerank": 64, "rerank_margin": 0.02, "centroid_score_threshold": 0.4, "fast_scan": false,
             "group_probes": 64, "quantized_centroids": false, "exhaustive": true], over: .defaults(k: 10))
        #expect(p.nprobe == 8 && p.rerankDepth == 64 && p.rerankMargin == 0.02 && p.centroidScoreThreshold == 0.4 && !p.fastScan)
        #expect(p.groupProbes == 64 && none.groupProbes == 0)
        #expect(!p.quantizedCentroidScores && none.quantizedCentroidScores)
        #expect(exhaustive)
        let (full, _) = try IndexBackend.searchParameters(["rerank_margin": .null], over: .defaults(k: 10))
        #expect(full.rerankMargin == nil)
        // Over an index's own defaults: what the request does not set stays theirs.
        let own = SearchParameters.defaults(k: 10, tokens: 815_632, centroids: 16_384)
        let (over, _) = try IndexBackend.searchParameters(["rerank": 64], over: own)
        #expect(over.nprobe == own.nprobe && over.nprobe == 64 && over.rerankDepth == 64)
    }

    @Test(arguments: [["nprobe": 0], ["rerank": -1], ["rerank_margin": -0.5], ["rerank_margin": "x"],
                      ["centroid_score_threshold": "high"], ["fast_scan": "no"], ["group_probes": -1], ["group_probes": 1.5], ["quantized_centroids": 0], ["exhaustive": 1], ["bogus": 1]] as [[String: JSONValue]])
    func badParametersAreBadRequests(_ params: [String: JSONValue]) {
        #expect(throws: BackendError.self) { try IndexBackend.searchParameters(params, over: .defaults(k: 10)) }
    }
}

/// `--query` text, as `colbert search`, `eval` and `bench search` read it.
@Suite struct QueryArgumentTests {
    @Test func blankQueryTextIsAnError() throws {
        for blank in ["", "  ", "\t\n"] {
            #expect(throws: CLIError.self) { try loadQueries(query: blank, queriesFile: nil) }
        }
        let q = try loadQueries(query: " insulin ", queriesFile: nil)
        #expect(q.map(\.text) == [" insulin "])
    }
}
