#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Errors about the socket path, with messages meant for the person who started the server.
public struct ServerStartError: Error, CustomStringConvertible, Sendable {
    public let description: String
    init(_ message: String) { description = message }
}

/// The file-system side of the Unix socket: length check, stale-socket replacement, mode, and
/// removal on exit of exactly the file this server created.
enum SocketFile {
    /// `sun_path` holds 108 bytes including the terminating NUL.
    static let maxPathBytes = 107

    enum Existing: Equatable {
        case none
        case staleSocket
        case liveSocket
        case notASocket(String)
    }

    static func checkLength(_ path: String) throws {
        let n = path.utf8.count
        guard n > 0 else { throw ServerStartError("the socket path is empty") }
        guard n <= maxPathBytes else {
            throw ServerStartError("socket path is \(n) bytes; Unix sockets allow at most \(maxPathBytes): \(path)")
        }
    }

    /// What is at `path` now. A socket counts as stale when connecting to it is refused.
    static func inspect(_ path: String) throws -> Existing {
        var st = stat()
        if lstat(path, &st) != 0 {
            if errno == ENOENT { return .none }
            throw ServerStartError("cannot inspect \(path): \(String(cString: strerror(errno)))")
        }
        let type = st.st_mode & S_IFMT
        guard type == S_IFSOCK else {
            let what = type == S_IFDIR ? "a directory" : type == S_IFREG ? "a regular file" : type == S_IFLNK ? "a symbolic link" : "not a socket"
            return .notASocket(what)
        }
        switch tryConnect(path) {
        case 0: return .liveSocket
        case ECONNREFUSED: return .staleSocket
        case ENOENT: return .none
        case let e: throw ServerStartError("cannot probe the socket at \(path): \(String(cString: strerror(e)))")
        }
    }

    /// Connects a throwaway client socket; returns 0 on success or the errno.
    static func tryConnect(_ path: String) -> Int32 {
        #if canImport(Darwin)
        let fd = socket(AF_UNIX, SOCK_STREAM, 0)
        #else
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        #endif
        guard fd >= 0 else { return errno }
        defer { close(fd) }
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count <= maxPathBytes else { return ENAMETOOLONG }
        withUnsafeMutableBytes(of: &addr.sun_path) { raw in
            raw.copyBytes(from: bytes)
            raw[bytes.count] = 0
        }
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        return rc == 0 ? 0 : errno
    }

    /// Makes `path` free for binding: replaces a stale socket, refuses anything else.
    static func prepare(_ path: String) throws {
        try checkLength(path)
        switch try inspect(path) {
        case .none: return
        case .staleSocket:
            guard unlink(path) == 0 || errno == ENOENT else {
                throw ServerStartError("cannot remove the stale socket \(path): \(String(cString: strerror(errno)))")
            }
        case .liveSocket:
            throw ServerStartError("another server is already listening on \(path)")
        case .notASocket(let what):
            throw ServerStartError("\(path) exists and is \(what); refusing to replace it (remove it or choose another --socket)")
        }
    }

    struct Identity: Equatable, Sendable {
        let device: UInt64
        let inode: UInt64
    }

    static func identity(_ path: String) -> Identity? {
        var st = stat()
        guard lstat(path, &st) == 0 else { return nil }
        return Identity(device: UInt64(st.st_dev), inode: UInt64(st.st_ino))
    }

    static func setMode(_ path: String, _ mode: UInt16) throws {
        guard chmod(path, mode_t(mode)) == 0 else {
            throw ServerStartError("cannot set mode \(String(mode, radix: 8)) on \(path): \(String(cString: strerror(errno)))")
        }
    }

    /// Removes the socket file only if it is still the one this server bound.
    static func remove(_ path: String, ifIdentity expected: Identity?) {
        guard let expected, identity(path) == expected else { return }
        _ = unlink(path)
    }
}
