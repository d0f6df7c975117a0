import Foundation

/// Reads a file (or standard input) as lines of bytes with 1-based line numbers, without loading
/// the whole file. Lines longer than `maxLineBytes` are reported, not buffered without bound.
public struct JSONLinesReader: Sequence, IteratorProtocol {
    public enum Line {
        case line(number: Int, bytes: Data)
        case tooLong(number: Int, length: Int)
    }

    private let handle: FileHandle
    private let maxLineBytes: Int
    private var buffer = Data()
    private var eof = false
    private var lineNumber = 0
    private var skipping = false
    private var skippedLength = 0

    public enum OpenError: Error, CustomStringConvertible {
        case cannotOpen(String)
        public var description: String {
            switch self { case .cannotOpen(let p): return "cannot open \(p)" }
        }
    }

    /// `path == nil` or `"-"` reads standard input.
    public init(path: String?, maxLineBytes: Int = 64 << 20) throws {
        if let path, path != "-" {
            guard let h = FileHandle(forReadingAtPath: path) else { throw OpenError.cannotOpen(path) }
            handle = h
        } else {
            handle = FileHandle.standardInput
        }
        self.maxLineBytes = maxLineBytes
    }

    public mutating func next() -> Line? {
        while true {
            if let nl = buffer.firstIndex(of: 0x0A) {
                lineNumber += 1
                var line = buffer[buffer.startIndex..<nl]
                buffer = Data(buffer[(nl + 1)...])
                if skipping {
                    skipping = false
                    let length = skippedLength + line.count
                    skippedLength = 0
                    return .tooLong(number: lineNumber, length: length)
                }
                if line.last == 0x0D { line = line.dropLast() }
                return .line(number: lineNumber, bytes: Data(line))
            }
            if eof {
                guard !buffer.isEmpty || skipping else { return nil }
                lineNumber += 1
                if skipping {
                    skipping = false
                    return .tooLong(number: lineNumber, length: skippedLength + buffer.count)
                }
                let line = buffer
                buffer = Data()
                return .line(number: lineNumber, bytes: line)
            }
            if buffer.count > maxLineBytes {
                skipping = true
                skippedLength += buffer.count
                buffer = Data()
            }
            let chunk = handle.readData(ofLength: 1 << 20)
            if chunk.isEmpty { eof = true } else { buffer.append(chunk) }
        }
    }
}
