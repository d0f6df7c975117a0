/// The per-token output of the encoder for one text: `count` rows of `dim` L2-normalised floats.
public struct TokenEmbeddings: Sendable, Equatable {
    /// Token id of each row (for documents after skiplist removal; for queries every row).
    public var tokenIds: [Int32]
    /// Row-major `count × dim` values.
    public var vectors: [Float]
    public let dim: Int

    public var count: Int { dim == 0 ? 0 : vectors.count / dim }

    public init(tokenIds: [Int32], vectors: [Float], dim: Int) {
        precondition(dim > 0 && vectors.count == tokenIds.count * dim, "TokenEmbeddings: shape mismatch")
        self.tokenIds = tokenIds
        self.vectors = vectors
        self.dim = dim
    }

    /// Row `i` as a fresh array (not for hot loops).
    public func row(_ i: Int) -> [Float] { Array(vectors[(i * dim)..<((i + 1) * dim)]) }
}

/// Whether a text is encoded as a query or as a document (PyLate's two code paths).
public enum EncodeKind: String, Sendable, CaseIterable {
    case query
    case document
}

/// Anything that turns texts into ColBERT token embeddings. The index and server depend on this,
/// not on the concrete BERT model, so they can be tested with synthetic encoders.
public protocol TokenEncoder: Sendable {
    /// Output dimension of every token vector.
    var dim: Int { get }
    /// Identifies the weights and encode-time settings: an index built with one fingerprint
    /// refuses encoders with another.
    var fingerprint: String { get }
    /// Encodes a batch of texts. The result has one entry per input, in input order.
    func encode(_ texts: [String], kind: EncodeKind) throws -> [TokenEmbeddings]
}
