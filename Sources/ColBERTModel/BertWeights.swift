import ColBERTCore
import Foundation

/// One transformer layer's parameters, with Q, K and V fused into one [3H, H] matrix so the
/// projection is a single GEMM over the packed tokens.
struct BertLayerWeights: Sendable {
    var qkvWeight: [Float]      // [3H, H]
    var qkvBias: [Float]        // [3H]
    var attentionOutWeight: [Float] // [H, H]
    var attentionOutBias: [Float]
    var attentionNormGamma: [Float]
    var attentionNormBeta: [Float]
    var intermediateWeight: [Float] // [I, H]
    var intermediateBias: [Float]   // [I]
    var outputWeight: [Float]       // [H, I]
    var outputBias: [Float]
    var outputNormGamma: [Float]
    var outputNormBeta: [Float]
}

/// A linear projection `y = W x (+ b)` after the transformer (PyLate's Dense with Identity activation).
struct DenseWeights: Sendable {
    var inFeatures: Int
    var outFeatures: Int
    var weight: [Float] // [out, in]
    var bias: [Float]?
}

struct BertWeights: Sendable {
    var config: BertConfig
    var wordEmbeddings: [Float]      // [V, H]
    var positionEmbeddings: [Float]  // [P, H]
    var tokenTypeEmbeddings: [Float] // [types, H]
    var embeddingNormGamma: [Float]
    var embeddingNormBeta: [Float]
    var layers: [BertLayerWeights]
}

/// Finds tensors under the naming variants seen in practice: with or without `bert.`, and
/// LayerNorm parameters as `weight`/`bias` or `gamma`/`beta`.
struct TensorResolver {
    let file: SafeTensorsFile

    func candidates(_ name: String) -> [String] {
        var names = [name]
        if name.hasSuffix("LayerNorm.weight") { names.append(String(name.dropLast("weight".count)) + "gamma") }
        if name.hasSuffix("LayerNorm.bias") { names.append(String(name.dropLast("bias".count)) + "beta") }
        return names + names.map { "bert." + $0 }
    }

    func floats(_ name: String, shape: [Int]) throws -> [Float] {
        for c in candidates(name) where file.info(c) != nil {
            return try file.floats(c, shape: shape)
        }
        throw SafeTensorsError.missingTensor(path: file.path, tensor: name)
    }
}

extension BertWeights {
    static func load(config c: BertConfig, from file: SafeTensorsFile) throws -> BertWeights {
        let r = TensorResolver(file: file)
        let h = c.hiddenSize, i = c.intermediateSize
        var layers: [BertLayerWeights] = []
        for l in 0..<c.layerCount {
            let p = "encoder.layer.\(l)."
            let q = try r.floats(p + "attention.self.query.weight", shape: [h, h])
            let k = try r.floats(p + "attention.self.key.weight", shape: [h, h])
            let v = try r.floats(p + "attention.self.value.weight", shape: [h, h])
            let qb = try r.floats(p + "attention.self.query.bias", shape: [h])
            let kb = try r.floats(p + "attention.self.key.bias", shape: [h])
            let vb = try r.floats(p + "attention.self.value.bias", shape: [h])
            layers.append(BertLayerWeights(
                qkvWeight: q + k + v, qkvBias: qb + kb + vb,
                attentionOutWeight: try r.floats(p + "attention.output.dense.weight", shape: [h, h]),
                attentionOutBias: try r.floats(p + "attention.output.dense.bias", shape: [h]),
                attentionNormGamma: try r.floats(p + "attention.output.LayerNorm.weight", shape: [h]),
                attentionNormBeta: try r.floats(p + "attention.output.LayerNorm.bias", shape: [h]),
                intermediateWeight: try r.floats(p + "intermediate.dense.weight", shape: [i, h]),
                intermediateBias: try r.floats(p + "intermediate.dense.bias", shape: [i]),
                outputWeight: try r.floats(p + "output.dense.weight", shape: [h, i]),
                outputBias: try r.floats(p + "output.dense.bias", shape: [h]),
                outputNormGamma: try r.floats(p + "output.LayerNorm.weight", shape: [h]),
                outputNormBeta: try r.floats(p + "output.LayerNorm.bias", shape: [h])))
        }
        return BertWeights(
            config: c,
            wordEmbeddings: try r.floats("embeddings.word_embeddings.weight", shape: [c.vocabSize, h]),
            positionEmbeddings: try r.floats("embeddings.position_embeddings.weight", shape: [c.maxPositions, h]),
            tokenTypeEmbeddings: try r.floats("embeddings.token_type_embeddings.weight", shape: [c.typeVocabSize, h]),
            embeddingNormGamma: try r.floats("embeddings.LayerNorm.weight", shape: [h]),
            embeddingNormBeta: try r.floats("embeddings.LayerNorm.bias", shape: [h]),
            layers: layers)
    }

    /// Feeds every parameter, in a fixed order and independent of tensor naming, to `hasher`.
    func hash(into hasher: inout Fingerprint.Hasher) {
        func add(_ label: String, _ v: [Float]) {
            hasher.update("\(label):\(v.count);")
            v.withUnsafeBytes { hasher.update($0) }
        }
        let c = config
        hasher.update("bert h=\(c.hiddenSize) l=\(c.layerCount) heads=\(c.headCount) i=\(c.intermediateSize) p=\(c.maxPositions) t=\(c.typeVocabSize) v=\(c.vocabSize) eps=\(c.layerNormEps);")
        add("word", wordEmbeddings); add("pos", positionEmbeddings); add("type", tokenTypeEmbeddings)
        add("embln.g", embeddingNormGamma); add("embln.b", embeddingNormBeta)
        for (n, l) in layers.enumerated() {
            add("\(n).qkv", l.qkvWeight); add("\(n).qkvb", l.qkvBias)
            add("\(n).ao", l.attentionOutWeight); add("\(n).aob", l.attentionOutBias)
            add("\(n).aln.g", l.attentionNormGamma); add("\(n).aln.b", l.attentionNormBeta)
            add("\(n).i", l.intermediateWeight); add("\(n).ib", l.intermediateBias)
            add("\(n).o", l.outputWeight); add("\(n).ob", l.outputBias)
            add("\(n).oln.g", l.outputNormGamma); add("\(n).oln.b", l.outputNormBeta)
        }
    }
}

extension DenseWeights {
    /// Loads a PyLate (or sentence-transformers) Dense folder: `config.json` + `model.safetensors`.
    static func load(directory: URL, expectedIn: Int) throws -> DenseWeights {
        let configURL = directory.appendingPathComponent("config.json")
        let config = try JSONFile.object(at: configURL)
        guard let inF = config["in_features"] as? Int, let outF = config["out_features"] as? Int, inF > 0, outF > 0 else {
            throw CheckpointError.badJSON(path: configURL.path, detail: "in_features/out_features missing or not positive integers")
        }
        guard inF == expectedIn else {
            throw CheckpointError.invalid("\(configURL.path): in_features \(inF) does not match the previous layer's width \(expectedIn)")
        }
        let activation = config["activation_function"] as? String ?? "torch.nn.modules.linear.Identity"
        guard activation == "torch.nn.modules.linear.Identity" || activation == "torch.nn.Identity" else {
            throw CheckpointError.unsupported("\(configURL.path): activation_function \"\(activation)\" (only Identity is supported)")
        }
        if let residual = config["use_residual"] as? Bool, residual {
            throw CheckpointError.unsupported("\(configURL.path): use_residual is true (residual Dense heads are not supported)")
        }
        let hasBias = config["bias"] as? Bool ?? true
        let weightsURL = directory.appendingPathComponent("model.safetensors")
        guard FileManager.default.fileExists(atPath: weightsURL.path) else {
            if FileManager.default.fileExists(atPath: directory.appendingPathComponent("pytorch_model.bin").path) {
                throw CheckpointError.unsupported("\(directory.path) has only pytorch_model.bin; convert it to model.safetensors")
            }
            throw CheckpointError.missingFile(weightsURL.path)
        }
        let file = try SafeTensorsFile(url: weightsURL)
        let weight = try file.floats("linear.weight", shape: [outF, inF])
        let bias = hasBias ? try file.floats("linear.bias", shape: [outF]) : nil
        return DenseWeights(inFeatures: inF, outFeatures: outF, weight: weight, bias: bias)
    }

    func hash(into hasher: inout Fingerprint.Hasher) {
        hasher.update("dense \(inFeatures)->\(outFeatures) bias=\(bias != nil);")
        weight.withUnsafeBytes { hasher.update($0) }
        bias?.withUnsafeBytes { hasher.update($0) }
    }
}
