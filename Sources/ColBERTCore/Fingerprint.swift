import Crypto
import Foundation

/// SHA-256 helpers for model fingerprints and long LMDB keys.
public enum Fingerprint {
    public struct Hasher {
        private var inner = SHA256()
        public init() {}
        public mutating func update(_ bytes: UnsafeRawBufferPointer) { inner.update(bufferPointer: bytes) }
        public mutating func update(_ data: Data) { inner.update(data: data) }
        public mutating func update(_ string: String) { inner.update(data: Data(string.utf8)) }
        public func finalizeHex() -> String { inner.finalize().map { String(format: "%02x", $0) }.joined() }
        public func finalizeBytes() -> [UInt8] { Array(inner.finalize()) }
    }

    public static func sha256Hex(_ data: Data) -> String {
        var h = Hasher(); h.update(data); return h.finalizeHex()
    }
    public static func sha256(_ bytes: [UInt8]) -> [UInt8] {
        Array(SHA256.hash(data: bytes))
    }
}
