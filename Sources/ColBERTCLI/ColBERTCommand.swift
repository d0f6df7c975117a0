import ArgumentParser

/// The `colbert` command: build indexes, search, serve, evaluate and benchmark.
public struct ColBERTCommand: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "colbert",
        abstract: "A local ColBERT late-interaction retrieval server.",
        subcommands: [EncodeCommand.self, BenchCommand.self, QueryCommand.self]
    )
    public init() {}
}

/// `colbert bench ...`: benchmarks that print figures.
struct BenchCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench",
        abstract: "Benchmarks: encoder throughput and latency, search latency, server overhead.",
        subcommands: [BenchEncodeCommand.self, BenchServeCommand.self]
    )
}
