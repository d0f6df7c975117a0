import ColBERTCore
import ColBERTModel
import Foundation

/// Errors the CLI reports with a message and a non-zero exit.
public struct CLIError: Error, CustomStringConvertible {
    public let description: String
    public init(_ message: String) { description = message }
}

/// Loads the token encoder of a PyLate checkpoint directory.
func loadTokenEncoder(modelDirectory: String) throws -> any TokenEncoder {
    try loadColBERTEncoder(modelDirectory: modelDirectory)
}

/// Loads the concrete native encoder; `threadCount` sets OpenBLAS's thread count (default: all cores).
func loadColBERTEncoder(modelDirectory: String, threadCount: Int? = nil) throws -> ColBERTEncoder {
    do {
        return try ColBERTEncoder(checkpointDirectory: URL(fileURLWithPath: modelDirectory),
                                  threadCount: threadCount ?? ProcessInfo.processInfo.activeProcessorCount)
    } catch {
        throw CLIError("cannot load model \(modelDirectory): \(error)")
    }
}
