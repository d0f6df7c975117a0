import Foundation

/// Why a `tokenizer.json` could not be turned into a `WordPieceTokenizer`.
public enum TokenizerError: Error, CustomStringConvertible, Sendable {
    case unreadableFile(path: String, reason: String)
    case invalidJSON(reason: String)
    case unsupportedModel(type: String)
    case unsupportedNormalizer(type: String)
    case unsupportedPreTokenizer(type: String)
    case missingUnknownToken(token: String)
    case invalidVocabulary(reason: String)

    public var description: String {
        switch self {
        case .unreadableFile(let path, let reason):
            return "cannot read tokenizer file '\(path)': \(reason)"
        case .invalidJSON(let reason):
            return "tokenizer.json is not valid: \(reason)"
        case .unsupportedModel(let type):
            return "unsupported tokenizer model type '\(type)' (only WordPiece is supported)"
        case .unsupportedNormalizer(let type):
            return "unsupported tokenizer normalizer '\(type)' (supported: BertNormalizer, Lowercase, NFD, NFC, NFKD, NFKC, StripAccents, Sequence, null)"
        case .unsupportedPreTokenizer(let type):
            return "unsupported tokenizer pre_tokenizer '\(type)' (supported: BertPreTokenizer, Whitespace, WhitespaceSplit, Sequence, null)"
        case .missingUnknownToken(let token):
            return "the WordPiece unknown token '\(token)' is not in the vocabulary"
        case .invalidVocabulary(let reason):
            return "invalid tokenizer vocabulary: \(reason)"
        }
    }
}
