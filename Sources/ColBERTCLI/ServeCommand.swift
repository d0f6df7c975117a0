import ArgumentParser
import ColBERTCore
import ColBERTServer
import Foundation

/// `colbert serve`: the line-delimited JSON server over a Unix domain socket.
struct ServeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "Serve an index over a Unix domain socket (line-delimited JSON; see docs/PROTOCOL.md). SIGTERM/SIGINT drain and exit.")

    @Option(name: .long, help: "Index directory.") var index: String = "index/default"
    @Option(name: .long, help: "Model directory (default: the one the index was built with).") var model: String?
    @OptionGroup var server: ServeOptions

    mutating func run() async throws {
        let opened = try IndexWithModel.open(index: index, model: model, readOnly: false)
        let backend = IndexBackend(index: opened.index, encoder: opened.encoder)
        let logger = server.logger
        let documents = try opened.index.stats().documents
        logger.info("serving \(index) (\(documents) documents, model \(opened.modelDirectory)) on \(server.socket)")
        do {
            try await runServer(backend: backend, configuration: server.configuration, logger: logger)
        } catch {
            throw CLIError("\(error)")
        }
        logger.info("server stopped")
    }
}
