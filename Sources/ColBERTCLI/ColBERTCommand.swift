import ArgumentParser

/// The `colbert` command: build indexes, search, serve, evaluate and benchmark.
public struct ColBERTCommand: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "colbert",
        abstract: "A local ColBERT late-interaction retrieval server.",
        subcommands: []
    )
    public init() {}
}
