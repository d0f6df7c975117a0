import ColBERTCore
import Foundation

/// What the encoder needs from a tokenizer: ids without special tokens, and vocabulary look-ups.
public protocol ColBERTTokenizing: Sendable {
    /// Token ids of `text` without special tokens; added tokens are matched.
    func tokenize(_ text: String) -> [Int32]
    func tokenId(for token: String) -> Int32?
    var unknownTokenId: Int32 { get }
    /// Python `str.strip()`: what PyLate applies before tokenizing.
    func strip(_ text: String) -> String
}

/// PyLate's encode-time settings with token ids resolved against the tokenizer.
public struct ColBERTSettings: Sendable, Equatable {
    public let queryPrefix: String
    public let documentPrefix: String
    /// nil when the prefix is empty (nothing is inserted).
    public let queryPrefixId: Int32?
    public let documentPrefixId: Int32?
    public let queryLength: Int
    public let documentLength: Int
    public let doQueryExpansion: Bool
    /// Forced false when `doQueryExpansion` is false, as PyLate does.
    public let attendToExpansionTokens: Bool
    public let skiplistWords: [String]
    /// Sorted, unique ids of `skiplistWords` (unknown words map to `[UNK]`, as in PyLate).
    public let skiplistIds: [Int32]
    public let clsId: Int32
    public let sepId: Int32
    /// Query padding id (`[MASK]`).
    public let maskId: Int32

    /// Canonical text of every setting that changes encoder output (part of the fingerprint).
    public var canonicalDescription: String {
        "qp=\(queryPrefixId.map(String.init) ?? "-") dp=\(documentPrefixId.map(String.init) ?? "-") ql=\(queryLength) dl=\(documentLength) " +
            "exp=\(doQueryExpansion) att=\(attendToExpansionTokens) cls=\(clsId) sep=\(sepId) mask=\(maskId) skip=\(skiplistIds.map(String.init).joined(separator: ","))"
    }
}

/// Token ids of one text as fed to the transformer, and which positions form the output.
public struct PreparedInput: Sendable, Equatable {
    public var inputIds: [Int32]
    /// 1 where the position may be attended to.
    public var attentionMask: [UInt8]
    /// Positions of `inputIds` whose rows are returned, in order.
    public var keptPositions: [Int]

    public init(inputIds: [Int32], attentionMask: [UInt8], keptPositions: [Int]) {
        self.inputIds = inputIds
        self.attentionMask = attentionMask
        self.keptPositions = keptPositions
    }
}

/// Errors of an encode call.
public enum EncoderError: Error, Equatable, CustomStringConvertible {
    /// A prepared input whose mask or kept positions do not fit its ids.
    case malformedInput(index: Int)
    public var description: String {
        switch self {
        case .malformedInput(let i): return "prepared input \(i) is malformed: attention mask or kept positions do not match its ids"
        }
    }
}

/// One encoded text with its full transformer input.
public struct EncodedText: Sendable, Equatable {
    public var input: PreparedInput
    public var embeddings: TokenEmbeddings
}

/// The native ColBERT encoder: BERT + Dense in F32 with OpenBLAS, reproducing PyLate's encode rules.
/// Safe to call from several threads at once; each call takes its own scratch workspace.
public final class ColBERTEncoder: TokenEncoder, @unchecked Sendable {
    public let settings: ColBERTSettings
    public let dim: Int
    public let fingerprint: String
    public let bertConfig: BertConfig
    /// Texts per forward pass when none is given.
    public static let defaultBatchSize = 32

    private let model: BertModel
    private let tokenizer: any ColBERTTokenizing
    private let skiplist: Set<Int32>
    // Idle workspaces; a call takes one (or makes one) and gives it back.
    private let poolLock = NSLock()
    private var pool: [Workspace] = []

    /// Loads a checkpoint directory with the given tokenizer (normally the checkpoint's own).
    /// `threadCount` is the number of threads one forward pass uses; when given, OpenBLAS's
    /// (process-wide) thread count is set to 1, since the encoder splits the work itself. nil runs
    /// the forward pass on the calling thread with OpenBLAS's threads unchanged.
    public init(checkpointDirectory: URL, tokenizer: any ColBERTTokenizing, tokenizerFileURL: URL? = nil,
                threadCount: Int? = nil) throws {
        let layout = try CheckpointLayout.locate(checkpointDirectory)
        let weightsFile = try SafeTensorsFile(url: layout.weightsURL)
        let bert = try BertWeights.load(config: layout.bert, from: weightsFile)
        var dense: [DenseWeights] = []
        if layout.stanford {
            let w = try weightsFile.floats("linear.weight")
            guard let info = weightsFile.info("linear.weight"), info.shape.count == 2, info.shape[1] == layout.bert.hiddenSize else {
                throw CheckpointError.invalid("\(layout.weightsURL.path): linear.weight must be [dim, \(layout.bert.hiddenSize)]")
            }
            dense.append(DenseWeights(inFeatures: info.shape[1], outFeatures: info.shape[0], weight: w, bias: nil))
        } else {
            var width = layout.bert.hiddenSize
            for dir in layout.denseDirectories {
                let d = try DenseWeights.load(directory: dir, expectedIn: width)
                dense.append(d)
                width = d.outFeatures
            }
        }
        let settings = try Self.resolve(layout.settings, tokenizer: tokenizer, config: layout.bert)
        self.settings = settings
        self.bertConfig = layout.bert
        var model = BertModel(weights: bert, dense: dense)
        if let threadCount {
            // The forward pass threads its own work; OpenBLAS runs each call on one thread.
            model.split = WorkSplit(workers: max(1, threadCount))
            BLAS.setThreadCount(1)
        }
        self.model = model
        self.dim = model.outputDim
        self.tokenizer = tokenizer
        self.skiplist = Set(settings.skiplistIds)

        var hasher = Fingerprint.Hasher()
        hasher.update("colbert-swift encoder v1;")
        bert.hash(into: &hasher)
        for d in dense { d.hash(into: &hasher) }
        hasher.update(settings.canonicalDescription)
        let tokURL = tokenizerFileURL ?? layout.tokenizerURL
        if let data = try? Data(contentsOf: tokURL, options: .alwaysMapped) { hasher.update(data) }
        self.fingerprint = hasher.finalizeHex()
    }

    static func resolve(_ raw: RawSettings, tokenizer: any ColBERTTokenizing, config: BertConfig) throws -> ColBERTSettings {
        func special(_ s: String) throws -> Int32 {
            guard let id = tokenizer.tokenId(for: s) else { throw CheckpointError.invalid("the tokenizer has no \(s) token") }
            return id
        }
        func prefix(_ p: String, _ which: String) throws -> Int32? {
            if p.isEmpty { return nil }
            guard let id = tokenizer.tokenId(for: p) else {
                throw CheckpointError.invalid("the \(which) prefix \"\(p)\" is not a token of the tokenizer (PyLate adds it when saving; this checkpoint lacks it)")
            }
            return id
        }
        let qp = try prefix(raw.queryPrefix, "query"), dp = try prefix(raw.documentPrefix, "document")
        for (name, len, hasPrefix) in [("query_length", raw.queryLength, qp != nil), ("document_length", raw.documentLength, dp != nil)] {
            let minimum = hasPrefix ? 3 : 2
            guard len >= minimum, len <= config.maxPositions else {
                throw CheckpointError.invalid("\(name) \(len) must be between \(minimum) and max_position_embeddings \(config.maxPositions)")
            }
        }
        let skipIds = Set(raw.skiplistWords.map { tokenizer.tokenId(for: $0) ?? tokenizer.unknownTokenId })
        return ColBERTSettings(
            queryPrefix: raw.queryPrefix, documentPrefix: raw.documentPrefix,
            queryPrefixId: qp, documentPrefixId: dp,
            queryLength: raw.queryLength, documentLength: raw.documentLength,
            doQueryExpansion: raw.doQueryExpansion,
            attendToExpansionTokens: raw.doQueryExpansion && raw.attendToExpansionTokens,
            skiplistWords: raw.skiplistWords, skiplistIds: skipIds.sorted(),
            clsId: try special("[CLS]"), sepId: try special("[SEP]"), maskId: try special("[MASK]"))
    }

    /// The transformer input for `text` (CONVENTIONS §1): strip, tokenize, truncate, `[CLS] P … [SEP]`,
    /// `[MASK]` padding for queries, and the keep mask.
    public func prepare(_ text: String, kind: EncodeKind) -> PreparedInput {
        let s = settings
        let isQuery = kind == .query
        let length = isQuery ? s.queryLength : s.documentLength
        let prefixId = isQuery ? s.queryPrefixId : s.documentPrefixId
        let room = length - 2 - (prefixId == nil ? 0 : 1)
        let tokens = tokenizer.tokenize(tokenizer.strip(text))
        var ids: [Int32] = []
        ids.reserveCapacity(isQuery ? length : min(tokens.count, room) + 3)
        ids.append(s.clsId)
        if let prefixId { ids.append(prefixId) }
        ids.append(contentsOf: tokens.prefix(room))
        ids.append(s.sepId)
        var mask = [UInt8](repeating: 1, count: ids.count)
        var kept: [Int]
        if isQuery {
            if s.doQueryExpansion {
                let real = ids.count
                ids.append(contentsOf: repeatElement(s.maskId, count: length - real))
                mask.append(contentsOf: repeatElement(s.attendToExpansionTokens ? 1 : 0, count: length - real))
            }
            kept = Array(0..<ids.count)
        } else {
            kept = []
            kept.reserveCapacity(ids.count)
            for (i, id) in ids.enumerated() where !skiplist.contains(id) { kept.append(i) }
        }
        return PreparedInput(inputIds: ids, attentionMask: mask, keptPositions: kept)
    }

    public func encode(_ texts: [String], kind: EncodeKind) throws -> [TokenEmbeddings] {
        try encode(texts, kind: kind, batchSize: Self.defaultBatchSize)
    }

    public func encode(_ texts: [String], kind: EncodeKind, batchSize: Int) throws -> [TokenEmbeddings] {
        try encode(prepared: texts.map { prepare($0, kind: kind) }, batchSize: batchSize)
    }

    /// Like `encode`, also returning each text's full transformer input.
    public func encodeDetailed(_ texts: [String], kind: EncodeKind, batchSize: Int = ColBERTEncoder.defaultBatchSize) throws -> [EncodedText] {
        let inputs = texts.map { prepare($0, kind: kind) }
        let out = try encode(prepared: inputs, batchSize: batchSize)
        return zip(inputs, out).map { EncodedText(input: $0, embeddings: $1) }
    }

    /// Runs already prepared inputs: sorted by length, packed `batchSize` at a time, results in input order.
    public func encode(prepared inputs: [PreparedInput], batchSize: Int = ColBERTEncoder.defaultBatchSize) throws -> [TokenEmbeddings] {
        if inputs.isEmpty { return [] }
        for (n, input) in inputs.enumerated() {
            guard !input.inputIds.isEmpty, input.attentionMask.count == input.inputIds.count,
                  input.keptPositions.allSatisfy({ $0 >= 0 && $0 < input.inputIds.count }) else {
                throw EncoderError.malformedInput(index: n)
            }
        }
        let order = inputs.indices.sorted { inputs[$0].inputIds.count > inputs[$1].inputIds.count }
        var results = [TokenEmbeddings?](repeating: nil, count: inputs.count)
        let ws = takeWorkspace()
        defer { giveBack(ws) }
        let step = max(1, batchSize)
        var start = 0
        while start < order.count {
            let chunk = order[start..<min(start + step, order.count)]
            var batch = PackedBatch()
            var keep: [Int] = []
            for i in chunk {
                let base = batch.tokenCount
                batch.append(ids: inputs[i].inputIds, mask: inputs[i].attentionMask)
                for p in inputs[i].keptPositions { keep.append(base + p) }
            }
            let out = try model.forward(batch, keep: keep, workspace: ws)
            var row = 0
            for i in chunk {
                let n = inputs[i].keptPositions.count
                let vectors = Array(UnsafeBufferPointer(start: out + row * dim, count: n * dim))
                let ids = inputs[i].keptPositions.map { inputs[i].inputIds[$0] }
                results[i] = TokenEmbeddings(tokenIds: ids, vectors: vectors, dim: dim)
                row += n
            }
            start += step
        }
        return results.compactMap { $0 }
    }

    private func takeWorkspace() -> Workspace {
        poolLock.lock(); defer { poolLock.unlock() }
        return pool.popLast() ?? Workspace()
    }

    private func giveBack(_ ws: Workspace) {
        poolLock.lock(); defer { poolLock.unlock() }
        if pool.count < 4 { pool.append(ws) }
    }
}
