import Foundation

/// A WordPiece tokenizer built from a Hugging Face `tokenizer.json`, producing the same ids as the
/// Rust fast tokenizer (tokenizers 0.22) for BERT-family checkpoints: added tokens are split out
/// first (raw text for `normalized: false`, normalized text for `normalized: true`), then the
/// normalizer, pre-tokenizer and WordPiece model run on the remaining spans.
///
/// Only the model part is implemented: no post-processing, truncation or padding.
public struct WordPieceTokenizer: Sendable {
    /// An entry of `added_tokens`.
    struct AddedToken: Sendable {
        let id: Int32
        let content: String
        let singleWord: Bool
        let lstrip: Bool
        let rstrip: Bool
        let normalized: Bool
    }

    private let vocab: [String: Int32]
    private let addedTokenIds: [String: Int32]
    private let idToToken: [String?]
    private let addedTokens: [AddedToken]
    /// Added tokens matched on the raw text (`normalized: false`); values index `addedTokens`.
    private let rawAddedTrie: ByteTrie?
    /// Added tokens matched on normalized text, keyed by their normalized content.
    private let normalizedAddedTrie: ByteTrie?
    /// Vocabulary entries that may start a word.
    private let wordTrie: ByteTrie
    /// Vocabulary entries with the continuing-subword prefix, keyed without the prefix.
    private let continuationTrie: ByteTrie
    private let normalizer: TextNormalizer
    private let preTokenizer: PreTokenizer
    private let maxInputCharsPerWord: Int

    public let unknownTokenId: Int32
    /// Max id + 1, added tokens included.
    public let vocabularySize: Int

    /// Reads a `tokenizer.json` file.
    public init(contentsOf url: URL) throws {
        let data: Data
        do {
            data = try Data(contentsOf: url)
        } catch {
            throw TokenizerError.unreadableFile(path: url.path, reason: error.localizedDescription)
        }
        try self.init(jsonData: data)
    }

    /// Parses the contents of a `tokenizer.json`.
    public init(jsonData: Data) throws {
        let parsed: Any
        do {
            parsed = try JSONSerialization.jsonObject(with: jsonData, options: [])
        } catch {
            throw TokenizerError.invalidJSON(reason: "not parseable JSON (\(error.localizedDescription))")
        }
        guard let root = parsed as? [String: Any] else {
            throw TokenizerError.invalidJSON(reason: "top level is not an object")
        }
        guard let model = root["model"] as? [String: Any] else {
            throw TokenizerError.invalidJSON(reason: "missing 'model' object")
        }
        let modelType = model["type"] as? String
        let looksLikeWordPiece = model["max_input_chars_per_word"] != nil && model["merges"] == nil
        guard modelType == "WordPiece" || (modelType == nil && looksLikeWordPiece) else {
            throw TokenizerError.unsupportedModel(type: modelType ?? "<missing type>")
        }
        guard let rawVocab = model["vocab"] as? [String: Any] else {
            throw TokenizerError.invalidJSON(reason: "WordPiece model without a 'vocab' object")
        }
        var vocab: [String: Int32] = [:]
        vocab.reserveCapacity(rawVocab.count)
        var maxId: Int32 = -1
        for (token, value) in rawVocab {
            guard let id = Self.intValue(value), id >= 0, id < Int(Int32.max) else {
                throw TokenizerError.invalidVocabulary(reason: "token '\(token)' has id \(value), not a non-negative integer")
            }
            vocab[token] = Int32(id)
            maxId = max(maxId, Int32(id))
        }
        guard !vocab.isEmpty else { throw TokenizerError.invalidVocabulary(reason: "the vocabulary is empty") }

        let unkToken = model["unk_token"] as? String ?? "[UNK]"
        guard let unkId = vocab[unkToken] else { throw TokenizerError.missingUnknownToken(token: unkToken) }
        let prefix = model["continuing_subword_prefix"] as? String ?? "##"
        let maxChars = Self.intValue(model["max_input_chars_per_word"] as Any) ?? 100

        let normalizer = try TextNormalizer.parse(root["normalizer"])
        let preTokenizer = try PreTokenizer.parse(root["pre_tokenizer"])

        var added: [AddedToken] = []
        if let list = root["added_tokens"], !(list is NSNull) {
            guard let items = list as? [Any] else {
                throw TokenizerError.invalidJSON(reason: "'added_tokens' is not a list")
            }
            for item in items {
                guard let object = item as? [String: Any],
                      let id = Self.intValue(object["id"] as Any), id >= 0, id < Int(Int32.max),
                      let content = object["content"] as? String else {
                    throw TokenizerError.invalidJSON(reason: "an 'added_tokens' entry lacks an integer 'id' or a string 'content'")
                }
                added.append(AddedToken(
                    id: Int32(id), content: content,
                    singleWord: object["single_word"] as? Bool ?? false,
                    lstrip: object["lstrip"] as? Bool ?? false,
                    rstrip: object["rstrip"] as? Bool ?? false,
                    normalized: object["normalized"] as? Bool ?? !(object["special"] as? Bool ?? false)))
                maxId = max(maxId, Int32(id))
            }
        }

        // Ids index a dense table; a corrupt file with a huge id must not make us allocate gigabytes.
        let idLimit = max(1 << 24, 4 * (vocab.count + added.count))
        guard Int(maxId) < idLimit else {
            throw TokenizerError.invalidVocabulary(reason: "token id \(maxId) is implausibly large for \(vocab.count) entries")
        }
        var addedIds: [String: Int32] = [:]
        for token in added where addedIds[token.content] == nil { addedIds[token.content] = token.id }
        var names = [String?](repeating: nil, count: Int(maxId) + 1)
        for (token, id) in vocab { names[Int(id)] = token }
        for token in added { names[Int(token.id)] = token.content }

        var rawEntries: [(key: [UInt8], value: Int32)] = []
        var normalizedEntries: [(key: [UInt8], value: Int32)] = []
        for (index, token) in added.enumerated() {
            if token.normalized {
                var key: [UInt8] = []
                let bytes = Array(token.content.utf8)
                bytes.withUnsafeBufferPointer { normalizer.normalize($0, into: &key) }
                normalizedEntries.append((key, Int32(index)))
            } else {
                rawEntries.append((Array(token.content.utf8), Int32(index)))
            }
        }

        var wordEntries: [(key: [UInt8], value: Int32)] = []
        var continuationEntries: [(key: [UInt8], value: Int32)] = []
        wordEntries.reserveCapacity(vocab.count)
        let prefixBytes = Array(prefix.utf8)
        for (token, id) in vocab {
            let bytes = Array(token.utf8)
            wordEntries.append((bytes, id))
            if bytes.count > prefixBytes.count && bytes.starts(with: prefixBytes) {
                continuationEntries.append((Array(bytes[prefixBytes.count...]), id))
            }
        }

        self.vocab = vocab
        self.addedTokenIds = addedIds
        self.idToToken = names
        self.addedTokens = added
        self.rawAddedTrie = rawEntries.isEmpty ? nil : ByteTrie(entries: rawEntries)
        self.normalizedAddedTrie = normalizedEntries.isEmpty ? nil : ByteTrie(entries: normalizedEntries)
        self.wordTrie = ByteTrie(entries: wordEntries)
        self.continuationTrie = prefixBytes.isEmpty ? self.wordTrie : ByteTrie(entries: continuationEntries)
        self.normalizer = normalizer
        self.preTokenizer = preTokenizer
        self.maxInputCharsPerWord = maxChars
        self.unknownTokenId = unkId
        self.vocabularySize = Int(maxId) + 1
    }

    private static func intValue(_ value: Any) -> Int? {
        if let n = value as? Int { return n }
        if let n = value as? NSNumber, let exact = Int(exactly: n.doubleValue) { return exact }
        return nil
    }

    /// The id of a vocabulary or added token (added tokens take precedence, as in HF).
    public func tokenId(for token: String) -> Int32? {
        addedTokenIds[token] ?? vocab[token]
    }

    /// The vocabulary or added token with this id.
    public func token(for id: Int32) -> String? {
        guard id >= 0, Int(id) < idToToken.count else { return nil }
        return idToToken[Int(id)]
    }

    /// Token ids of `text` without special tokens, padding or truncation; added tokens honoured.
    /// The text is used as given: PyLate strips it first, so callers matching PyLate pass
    /// `pythonStrip(text)`.
    public func tokenize(_ text: String) -> [Int32] {
        var output: [Int32] = []
        output.reserveCapacity(text.utf8.count / 3 + 4)
        var normalized: [UInt8] = []
        var words: [Range<Int>] = []
        var source = text
        source.withUTF8 { raw in
            splitAddedTokens(raw, 0..<raw.count, trie: rawAddedTrie) { id, span in
                if let id { output.append(id); return }
                normalized.removeAll(keepingCapacity: true)
                normalizer.normalize(UnsafeBufferPointer(rebasing: raw[span]), into: &normalized)
                normalized.withUnsafeBufferPointer { norm in
                    splitAddedTokens(norm, 0..<norm.count, trie: normalizedAddedTrie) { id, piece in
                        if let id { output.append(id); return }
                        words.removeAll(keepingCapacity: true)
                        preTokenizer.split(norm, piece, into: &words)
                        for word in words { wordPiece(norm, word, into: &output) }
                    }
                }
            }
        }
        return output
    }

    /// Calls `body(id, range)` for each added-token match (id set) and each span between matches
    /// (id nil), left to right; matches are leftmost-longest like HF's Aho-Corasick.
    private func splitAddedTokens(_ b: UnsafeBufferPointer<UInt8>, _ range: Range<Int>, trie: ByteTrie?,
                                  _ body: (Int32?, Range<Int>) -> Void) {
        guard let trie else {
            if !range.isEmpty { body(nil, range) }
            return
        }
        let end = range.upperBound
        var pending = range.lowerBound
        var i = range.lowerBound
        while i < end {
            guard trie.hasKey(startingWith: b[i]) else { i += 1; continue }
            let match = trie.longestMatch(in: b, from: i, to: end)
            guard match.length > 0 else { i += 1; continue }
            let token = addedTokens[Int(match.value)]
            var start = i
            var stop = i + match.length
            if token.singleWord {
                let before = start > range.lowerBound && isWordChar(before: start, in: b, lowerBound: range.lowerBound)
                let after = stop < end && isWordChar(at: stop, in: b)
                if before || after { i = stop; continue }
            }
            if token.lstrip {
                while start > pending {
                    let p = previousScalarStart(b, before: start, lowerBound: pending)
                    guard let s = Unicode.Scalar(decodeScalar(b, at: p).0), s.properties.isWhitespace else { break }
                    start = p
                }
            }
            if token.rstrip {
                while stop < end {
                    let (v, len) = decodeScalar(b, at: stop)
                    guard let s = Unicode.Scalar(v), s.properties.isWhitespace else { break }
                    stop += len
                }
            }
            if pending < start { body(nil, pending..<start) }
            body(token.id, start..<stop)
            pending = stop
            i = stop
        }
        if pending < end { body(nil, pending..<end) }
    }

    private func previousScalarStart(_ b: UnsafeBufferPointer<UInt8>, before i: Int, lowerBound: Int) -> Int {
        var p = i - 1
        while p > lowerBound && b[p] & 0xC0 == 0x80 { p -= 1 }
        return p
    }

    private func isWordChar(before i: Int, in b: UnsafeBufferPointer<UInt8>, lowerBound: Int) -> Bool {
        let p = previousScalarStart(b, before: i, lowerBound: lowerBound)
        guard let s = Unicode.Scalar(decodeScalar(b, at: p).0) else { return false }
        return isRegexWordChar(s)
    }

    private func isWordChar(at i: Int, in b: UnsafeBufferPointer<UInt8>) -> Bool {
        guard let s = Unicode.Scalar(decodeScalar(b, at: i).0) else { return false }
        return isRegexWordChar(s)
    }

    /// Greedy longest-match-first WordPiece of one word; a word without a full segmentation, or
    /// longer than `maxInputCharsPerWord` scalars, becomes a single unknown token.
    @inline(__always)
    private func wordPiece(_ b: UnsafeBufferPointer<UInt8>, _ word: Range<Int>, into output: inout [Int32]) {
        var chars = 0
        for i in word where b[i] & 0xC0 != 0x80 { chars += 1 }
        if chars > maxInputCharsPerWord {
            output.append(unknownTokenId)
            return
        }
        let mark = output.count
        var position = word.lowerBound
        var trie = wordTrie
        while position < word.upperBound {
            let match = trie.longestMatch(in: b, from: position, to: word.upperBound)
            if match.length == 0 {
                output.removeSubrange(mark...)
                output.append(unknownTokenId)
                return
            }
            output.append(match.value)
            position += match.length
            trie = continuationTrie
        }
    }
}
