import ColBERTCore
import Foundation

/// Errors the CLI reports with a message and a non-zero exit.
public struct CLIError: Error, CustomStringConvertible {
    public let description: String
    public init(_ message: String) { description = message }
}

/// Loads the token encoder of a PyLate checkpoint directory.
/// (Wired to ColBERTModel's `ColBERTEncoder` when that module lands on main.)
func loadTokenEncoder(modelDirectory: String) throws -> any TokenEncoder {
    throw CLIError("the native encoder is not wired into this build yet (model directory: \(modelDirectory))")
}
