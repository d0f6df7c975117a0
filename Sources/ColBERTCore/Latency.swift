import Histogram

/// Latencies recorded into an HdrHistogram (nanoseconds, three significant digits): every
/// benchmark and the server's `stats` report percentiles the same way.
public struct LatencyRecorder: Sendable {
    /// One hour: anything longer is recorded as one hour.
    static let highest: UInt64 = 3_600_000_000_000
    private var histogram = Histogram<UInt64>(highestTrackableValue: LatencyRecorder.highest,
                                              numberOfSignificantValueDigits: .three)

    public init() {}

    public mutating func record(nanoseconds: UInt64) {
        _ = histogram.record(Swift.max(1, Swift.min(nanoseconds, Self.highest)))
    }

    public mutating func record(seconds: Double) {
        record(nanoseconds: seconds.isFinite && seconds > 0 ? UInt64((seconds * 1e9).rounded()) : 1)
    }

    public mutating func record(milliseconds: Double) { record(seconds: milliseconds / 1000) }

    public mutating func record(_ duration: Duration) { record(seconds: duration.seconds) }

    public var count: Int { Int(histogram.totalCount) }

    public var summary: LatencySummary {
        guard histogram.totalCount > 0 else { return LatencySummary(p50: 0, p95: 0, p99: 0, max: 0, mean: 0, count: 0) }
        func ms(_ ns: UInt64) -> Double { Double(ns) / 1e6 }
        return LatencySummary(p50: ms(histogram.valueAtPercentile(50)), p95: ms(histogram.valueAtPercentile(95)),
                              p99: ms(histogram.valueAtPercentile(99)), max: ms(histogram.max),
                              mean: histogram.mean / 1e6, count: count)
    }
}

extension Duration {
    /// The duration in seconds, as a Double.
    public var seconds: Double { Double(components.seconds) + Double(components.attoseconds) * 1e-18 }
    /// The duration in milliseconds, as a Double.
    public var milliseconds: Double { seconds * 1000 }
}

/// Latency percentiles in milliseconds.
public struct LatencySummary: Codable, Sendable, Equatable {
    public var p50: Double, p95: Double, p99: Double, max: Double, mean: Double
    public var count: Int

    public init(p50: Double, p95: Double, p99: Double, max: Double, mean: Double, count: Int) {
        self.p50 = p50; self.p95 = p95; self.p99 = p99; self.max = max; self.mean = mean; self.count = count
    }

    public init(seconds: [Double]) {
        var r = LatencyRecorder()
        for s in seconds { r.record(seconds: s) }
        self = r.summary
    }

    public init(milliseconds: [Double]) {
        var r = LatencyRecorder()
        for m in milliseconds { r.record(milliseconds: m) }
        self = r.summary
    }

    public var text: String {
        func f(_ x: Double) -> String {
            let v = (x * 1000).rounded() / 1000
            return "\(v)"
        }
        return "p50 \(f(p50))  p95 \(f(p95))  p99 \(f(p99))  max \(f(max))  mean \(f(mean)) ms"
    }
}
