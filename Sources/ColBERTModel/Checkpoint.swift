import Foundation

/// Errors loading a ColBERT checkpoint directory. Each message says which file and what is wrong.
public enum CheckpointError: Error, Equatable, CustomStringConvertible {
    case notADirectory(String)
    case missingFile(String)
    case badJSON(path: String, detail: String)
    case unsupportedArchitecture(String)
    case unsupported(String)
    case invalid(String)

    public var description: String {
        switch self {
        case .notADirectory(let p): return "model directory \(p) does not exist or is not a directory"
        case .missingFile(let p): return "checkpoint file \(p) is missing"
        case .badJSON(let p, let d): return "checkpoint file \(p) is not valid: \(d)"
        case .unsupportedArchitecture(let m): return "unsupported model architecture: \(m)"
        case .unsupported(let m): return "unsupported checkpoint: \(m)"
        case .invalid(let m): return "invalid checkpoint: \(m)"
        }
    }
}

/// BERT hyperparameters from `config.json`.
public struct BertConfig: Sendable, Equatable {
    public var hiddenSize: Int
    public var layerCount: Int
    public var headCount: Int
    public var intermediateSize: Int
    public var maxPositions: Int
    public var typeVocabSize: Int
    public var vocabSize: Int
    public var layerNormEps: Float

    public var headDim: Int { hiddenSize / headCount }

    public init(hiddenSize: Int, layerCount: Int, headCount: Int, intermediateSize: Int,
                maxPositions: Int, typeVocabSize: Int, vocabSize: Int, layerNormEps: Float) {
        self.hiddenSize = hiddenSize
        self.layerCount = layerCount
        self.headCount = headCount
        self.intermediateSize = intermediateSize
        self.maxPositions = maxPositions
        self.typeVocabSize = typeVocabSize
        self.vocabSize = vocabSize
        self.layerNormEps = layerNormEps
    }

    /// Parses a Hugging Face BERT `config.json` object; anything not BERT is refused.
    static func parse(_ json: [String: Any], path: String) throws -> BertConfig {
        let modelType = json["model_type"] as? String ?? "(none)"
        guard modelType == "bert" else {
            throw CheckpointError.unsupportedArchitecture("\(path) has model_type \"\(modelType)\"; only BERT (model_type \"bert\") encoders are supported")
        }
        func int(_ key: String, default d: Int? = nil) throws -> Int {
            if let v = json[key] as? Int { return v }
            if json[key] == nil || json[key] is NSNull, let d { return d }
            throw CheckpointError.badJSON(path: path, detail: "\(key) is missing or not an integer")
        }
        let act = json["hidden_act"] as? String ?? "gelu"
        guard act == "gelu" || act == "gelu_python" else {
            throw CheckpointError.unsupported("\(path): hidden_act \"\(act)\" (only the exact erf \"gelu\" is implemented)")
        }
        if let pet = json["position_embedding_type"] as? String, pet != "absolute" {
            throw CheckpointError.unsupported("\(path): position_embedding_type \"\(pet)\" (only \"absolute\")")
        }
        let eps: Float
        if let e = json["layer_norm_eps"] as? Double { eps = Float(e) } else { eps = 1e-12 }
        let c = BertConfig(
            hiddenSize: try int("hidden_size"), layerCount: try int("num_hidden_layers"),
            headCount: try int("num_attention_heads"), intermediateSize: try int("intermediate_size"),
            maxPositions: try int("max_position_embeddings"), typeVocabSize: try int("type_vocab_size", default: 2),
            vocabSize: try int("vocab_size"), layerNormEps: eps)
        guard c.hiddenSize > 0, c.layerCount > 0, c.headCount > 0, c.intermediateSize > 0,
              c.maxPositions > 0, c.typeVocabSize > 0, c.vocabSize > 0,
              c.hiddenSize % c.headCount == 0, eps > 0, eps.isFinite else {
            throw CheckpointError.invalid("\(path): inconsistent BERT sizes (hidden \(c.hiddenSize), heads \(c.headCount), layers \(c.layerCount), vocab \(c.vocabSize))")
        }
        return c
    }
}

/// PyLate's encode-time settings (`config_sentence_transformers.json`), before token-id resolution.
struct RawSettings: Equatable {
    var queryPrefix = "[Q] "
    var documentPrefix = "[D] "
    var queryLength = 32
    var documentLength = 180
    var attendToExpansionTokens = false
    var doQueryExpansion = true
    var skiplistWords: [String] = RawSettings.punctuation

    /// Python's `string.punctuation`, PyLate's default skiplist.
    static let punctuation: [String] = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~".map { String($0) }
}

/// Where the pieces of a checkpoint are, as found in its directory.
struct CheckpointLayout {
    var transformerDirectory: URL
    var configURL: URL
    var weightsURL: URL
    var tokenizerURL: URL
    /// `1_Dense`-style folders in module order; empty for the Stanford layout.
    var denseDirectories: [URL]
    /// Stanford layout: `bert.`-prefixed weights and `linear.weight` in the root safetensors.
    var stanford: Bool
    var settings: RawSettings
    var bert: BertConfig
}

enum JSONFile {
    static func object(at url: URL) throws -> [String: Any] {
        guard let any = try value(at: url) as? [String: Any] else {
            throw CheckpointError.badJSON(path: url.path, detail: "expected a JSON object")
        }
        return any
    }

    static func value(at url: URL) throws -> Any {
        guard FileManager.default.fileExists(atPath: url.path) else { throw CheckpointError.missingFile(url.path) }
        let data: Data
        do { data = try Data(contentsOf: url) } catch {
            throw CheckpointError.badJSON(path: url.path, detail: "cannot read: \(error.localizedDescription)")
        }
        do { return try JSONSerialization.jsonObject(with: data, options: [.fragmentsAllowed]) } catch {
            throw CheckpointError.badJSON(path: url.path, detail: "not valid JSON")
        }
    }
}

extension CheckpointLayout {
    /// Reads the directory's module list and settings the way PyLate's loader does.
    static func locate(_ directory: URL) throws -> CheckpointLayout {
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: directory.path, isDirectory: &isDir), isDir.boolValue else {
            throw CheckpointError.notADirectory(directory.path)
        }
        let modulesURL = directory.appendingPathComponent("modules.json")
        if FileManager.default.fileExists(atPath: modulesURL.path) {
            return try locateSentenceTransformers(directory, modulesURL: modulesURL)
        }
        let configURL = directory.appendingPathComponent("config.json")
        guard FileManager.default.fileExists(atPath: configURL.path) else {
            throw CheckpointError.invalid("\(directory.path) has neither modules.json nor config.json; it is not a PyLate or Stanford ColBERT checkpoint")
        }
        let config = try JSONFile.object(at: configURL)
        let arch = (config["architectures"] as? [String])?.first
        guard arch == "HF_ColBERT" else {
            throw CheckpointError.unsupportedArchitecture("\(directory.path) has no modules.json and its config.json architecture is \(arch.map { "\"\($0)\"" } ?? "missing"), not \"HF_ColBERT\"; a bare transformer has no ColBERT projection head")
        }
        return try locateStanford(directory, config: config, configURL: configURL)
    }

    private static func locateSentenceTransformers(_ root: URL, modulesURL: URL) throws -> CheckpointLayout {
        guard let modules = try JSONFile.value(at: modulesURL) as? [[String: Any]] else {
            throw CheckpointError.badJSON(path: modulesURL.path, detail: "expected a list of modules")
        }
        var transformer: URL?
        var dense: [URL] = []
        let sorted = modules.sorted { ($0["idx"] as? Int ?? 0) < ($1["idx"] as? Int ?? 0) }
        for m in sorted {
            guard let type = m["type"] as? String else {
                throw CheckpointError.badJSON(path: modulesURL.path, detail: "a module has no type")
            }
            let path = m["path"] as? String ?? ""
            guard !path.contains(".."), !path.hasPrefix("/") else {
                throw CheckpointError.invalid("\(modulesURL.path): module path \"\(path)\" leaves the checkpoint directory")
            }
            let dir = path.isEmpty ? root : root.appendingPathComponent(path, isDirectory: true)
            let last = type.split(separator: ".").last.map(String.init) ?? type
            switch last {
            case "Transformer":
                guard transformer == nil else { throw CheckpointError.unsupported("\(modulesURL.path) lists more than one Transformer module") }
                guard dense.isEmpty else { throw CheckpointError.unsupported("\(modulesURL.path) has a Dense module before the Transformer") }
                transformer = dir
            case "Dense":
                guard transformer != nil else { throw CheckpointError.unsupported("\(modulesURL.path) has a Dense module before the Transformer") }
                dense.append(dir)
            case "Pooling", "Normalize":
                continue // PyLate drops these: ColBERT keeps one vector per token and normalises itself.
            default:
                throw CheckpointError.unsupported("\(modulesURL.path) lists module type \"\(type)\" (supported: Transformer, Dense; Pooling and Normalize are ignored)")
            }
        }
        guard let transformer else { throw CheckpointError.invalid("\(modulesURL.path) lists no Transformer module") }
        guard !dense.isEmpty else {
            throw CheckpointError.unsupported("\(modulesURL.path) lists no Dense module; PyLate would add a randomly initialised projection, which cannot be reproduced")
        }
        let configURL = transformer.appendingPathComponent("config.json")
        let bert = try BertConfig.parse(try JSONFile.object(at: configURL), path: configURL.path)
        let weightsURL = try weightsFile(in: transformer)
        var tokenizerURL = transformer.appendingPathComponent("tokenizer.json")
        if !FileManager.default.fileExists(atPath: tokenizerURL.path) { tokenizerURL = root.appendingPathComponent("tokenizer.json") }
        guard FileManager.default.fileExists(atPath: tokenizerURL.path) else { throw CheckpointError.missingFile(tokenizerURL.path) }

        var settings = RawSettings()
        let stURL = root.appendingPathComponent("config_sentence_transformers.json")
        if FileManager.default.fileExists(atPath: stURL.path) {
            let st = try JSONFile.object(at: stURL)
            if let mt = st["model_type"] as? String, mt != "ColBERT" {
                throw CheckpointError.unsupported("\(stURL.path) declares model_type \"\(mt)\", not a ColBERT model")
            }
            try settings.apply(sentenceTransformers: st, path: stURL.path)
        }
        return CheckpointLayout(transformerDirectory: transformer, configURL: configURL, weightsURL: weightsURL,
                                tokenizerURL: tokenizerURL, denseDirectories: dense, stanford: false,
                                settings: settings, bert: bert)
    }

    private static func locateStanford(_ root: URL, config: [String: Any], configURL: URL) throws -> CheckpointLayout {
        let bert = try BertConfig.parse(config, path: configURL.path)
        let weightsURL = try weightsFile(in: root)
        let tokenizerURL = root.appendingPathComponent("tokenizer.json")
        guard FileManager.default.fileExists(atPath: tokenizerURL.path) else { throw CheckpointError.missingFile(tokenizerURL.path) }
        var settings = RawSettings()
        // Stanford checkpoints use these prefixes when their metadata does not say otherwise.
        settings.queryPrefix = "[unused0]"
        settings.documentPrefix = "[unused1]"
        let metaURL = root.appendingPathComponent("artifact.metadata")
        if FileManager.default.fileExists(atPath: metaURL.path) {
            let meta = try JSONFile.object(at: metaURL)
            if let s = meta["query_token_id"] as? String { settings.queryPrefix = s }
            if let s = meta["doc_token_id"] as? String { settings.documentPrefix = s }
            if let n = meta["query_maxlen"] as? Int { settings.queryLength = n }
            if let n = meta["doc_maxlen"] as? Int { settings.documentLength = n }
            if let b = meta["attend_to_mask_tokens"] as? Bool { settings.attendToExpansionTokens = b }
        }
        return CheckpointLayout(transformerDirectory: root, configURL: configURL, weightsURL: weightsURL,
                                tokenizerURL: tokenizerURL, denseDirectories: [], stanford: true,
                                settings: settings, bert: bert)
    }

    private static func weightsFile(in dir: URL) throws -> URL {
        let url = dir.appendingPathComponent("model.safetensors")
        if FileManager.default.fileExists(atPath: url.path) { return url }
        if FileManager.default.fileExists(atPath: dir.appendingPathComponent("pytorch_model.bin").path) {
            throw CheckpointError.unsupported("\(dir.path) has only pytorch_model.bin; convert it to model.safetensors")
        }
        throw CheckpointError.missingFile(url.path)
    }
}

extension RawSettings {
    mutating func apply(sentenceTransformers st: [String: Any], path: String) throws {
        func string(_ key: String) throws -> String? {
            guard let v = st[key], !(v is NSNull) else { return nil }
            guard let s = v as? String else { throw CheckpointError.badJSON(path: path, detail: "\(key) is not a string") }
            return s
        }
        func int(_ key: String) throws -> Int? {
            guard let v = st[key], !(v is NSNull) else { return nil }
            guard let i = v as? Int, !(v is Bool) else { throw CheckpointError.badJSON(path: path, detail: "\(key) is not an integer") }
            return i
        }
        func bool(_ key: String) throws -> Bool? {
            guard let v = st[key], !(v is NSNull) else { return nil }
            guard let b = v as? Bool else { throw CheckpointError.badJSON(path: path, detail: "\(key) is not a boolean") }
            return b
        }
        if let s = try string("query_prefix") { queryPrefix = s }
        if let s = try string("document_prefix") { documentPrefix = s }
        if let n = try int("query_length") { queryLength = n }
        if let n = try int("document_length") { documentLength = n }
        if let b = try bool("attend_to_expansion_tokens") { attendToExpansionTokens = b }
        if let b = try bool("do_query_expansion") { doQueryExpansion = b }
        if let v = st["skiplist_words"], !(v is NSNull) {
            guard let words = v as? [String] else { throw CheckpointError.badJSON(path: path, detail: "skiplist_words is not a list of strings") }
            skiplistWords = words
        }
    }
}
