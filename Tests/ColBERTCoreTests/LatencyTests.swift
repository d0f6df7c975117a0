import Testing
@testable import ColBERTCore

@Suite struct LatencyTests {
    @Test func percentilesOfKnownLatencies() {
        // 1, 2, ..., 100 ms in shuffled order.
        let ms = (1...100).map(Double.init).shuffled()
        let s = LatencySummary(milliseconds: ms)
        #expect(s.count == 100)
        // HdrHistogram at three significant digits: within 0.1% of the exact nearest rank.
        #expect(abs(s.p50 - 50) <= 0.05)
        #expect(abs(s.p95 - 95) <= 0.1)
        #expect(abs(s.p99 - 99) <= 0.1)
        #expect(abs(s.max - 100) <= 0.1)
        #expect(abs(s.mean - 50.5) <= 0.05)
        #expect(LatencySummary(seconds: ms.map { $0 / 1000 }) == s)
    }

    @Test func emptyAndOutOfRangeValues() {
        #expect(LatencySummary(seconds: []).count == 0)
        #expect(LatencySummary(seconds: []).p50 == 0)
        var r = LatencyRecorder()
        r.record(seconds: -1)
        r.record(seconds: .nan)
        r.record(seconds: 1e9)
        #expect(r.count == 3)
        // Clamped to one hour (to the histogram's precision).
        #expect(abs(r.summary.max - 3_600_000) <= 3_600_000 * 0.001)
    }
}
