#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation

/// A read-only memory map of a whole file. The mapping lives as long as the object; all access
/// goes through `bytes`, so the unsafe calls stay in this wrapper.
final class MappedFile: @unchecked Sendable {
    let path: String
    /// The mapped bytes (empty for an empty file).
    let bytes: UnsafeRawBufferPointer
    private let base: UnsafeMutableRawPointer?
    private let length: Int

    enum MapError: Error, CustomStringConvertible {
        case cannotOpen(String, String)
        case cannotMap(String, String)
        var description: String {
            switch self {
            case .cannotOpen(let p, let why): return "cannot open \(p): \(why)"
            case .cannotMap(let p, let why): return "cannot memory-map \(p): \(why)"
            }
        }
    }

    init(path: String) throws {
        self.path = path
        let fd = open(path, O_RDONLY)
        guard fd >= 0 else { throw MapError.cannotOpen(path, String(cString: strerror(errno))) }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw MapError.cannotOpen(path, String(cString: strerror(errno))) }
        guard (st.st_mode & S_IFMT) == S_IFREG else { throw MapError.cannotOpen(path, "not a regular file") }
        length = Int(st.st_size)
        if length == 0 {
            base = nil
            bytes = UnsafeRawBufferPointer(start: nil, count: 0)
            return
        }
        let p = mmap(nil, length, PROT_READ, MAP_PRIVATE, fd, 0)
        guard let p, p != MAP_FAILED else { throw MapError.cannotMap(path, String(cString: strerror(errno))) }
        base = p
        bytes = UnsafeRawBufferPointer(start: p, count: length)
    }

    deinit {
        if let base { munmap(base, length) }
    }
}
