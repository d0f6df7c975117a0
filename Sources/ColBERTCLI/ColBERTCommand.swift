import ArgumentParser

/// The `colbert` command: build indexes, search, serve, evaluate and benchmark.
public struct ColBERTCommand: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "colbert",
        abstract: "A local ColBERT late-interaction retrieval server.",
        subcommands: [EncodeCommand.self, IndexCommand.self, SearchCommand.self, EvalCommand.self, ServeCommand.self,
                      QueryCommand.self, BenchCommand.self]
    )
    public init() {}
}

/// `colbert bench ...`: benchmarks that print figures.
struct BenchCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench",
        abstract: "Benchmarks: encoder throughput and latency, search latency, server overhead.",
        subcommands: [BenchEncodeCommand.self, BenchSearchCommand.self, BenchSynthCommand.self, BenchServeCommand.self]
    )
}
