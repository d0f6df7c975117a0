import CLMDB
import Foundation

/// An LMDB return code turned into a Swift error, with the operation that failed.
public struct LMDBError: Error, CustomStringConvertible, Equatable {
    public let code: Int32
    public let operation: String

    public var isMapFull: Bool { code == MDB_MAP_FULL }
    public var isDiskFull: Bool { code == ENOSPC }

    public var description: String {
        let reason = String(cString: mdb_strerror(code))
        if code == MDB_MAP_FULL {
            return "\(operation): the index's memory map is full and could not grow further (\(reason))"
        }
        if code == ENOSPC {
            return "\(operation): no space left on device; the index is unchanged since the last committed batch"
        }
        return "\(operation): \(reason) (code \(code))"
    }

    @inline(__always)
    static func check(_ rc: Int32, _ operation: @autoclosure () -> String) throws {
        if rc != 0 { throw LMDBError(code: rc, operation: operation()) }
    }
}

/// A named database handle of one environment.
struct LMDBDatabase: Sendable, Hashable {
    let dbi: MDB_dbi
    let name: String
}

/// A read-write rwlock used so that `mdb_env_set_mapsize` runs only when this process has no
/// live transaction (LMDB's precondition for growing the map).
private final class RWLock: @unchecked Sendable {
    // The pthread lock is heap-allocated once and never moved, as pthread requires.
    private let lock = UnsafeMutablePointer<pthread_rwlock_t>.allocate(capacity: 1)
    init() { pthread_rwlock_init(lock, nil) }
    deinit { pthread_rwlock_destroy(lock); lock.deallocate() }
    func readLock() { pthread_rwlock_rdlock(lock) }
    func writeLock() { pthread_rwlock_wrlock(lock) }
    func unlock() { pthread_rwlock_unlock(lock) }
}

/// One LMDB environment (a directory with `data.mdb` and `lock.mdb`).
///
/// Safe to share across threads: LMDB's environment is thread-safe, read transactions are opened
/// with `MDB_NOTLS` so they are not tied to a thread-local reader slot, writers inside this
/// process are serialised by `writerLock` (LMDB serialises writers across processes), and
/// `resizeLock` keeps map growth away from live transactions. Hence `@unchecked Sendable`.
final class LMDBEnvironment: @unchecked Sendable {
    private let env: OpaquePointer
    let path: String
    let readOnly: Bool
    private let writerLock = NSLock()
    private let resizeLock = RWLock()
    private let sizeLock = NSLock()
    private var _mapSize: Int
    /// Upper bound for automatic map growth.
    let maxMapSize: Int
    private(set) var databases: [String: LMDBDatabase] = [:]

    /// Opens (creating the directory when allowed) an environment with the given named databases.
    init(path: String, databases names: [String], mapSize: Int, maxMapSize: Int = 1 << 40, readOnly: Bool) throws {
        self.path = path
        self.readOnly = readOnly
        self.maxMapSize = maxMapSize
        var e: OpaquePointer?
        try LMDBError.check(mdb_env_create(&e), "mdb_env_create")
        guard let e else { throw LMDBError(code: EINVAL, operation: "mdb_env_create") }
        env = e
        var ok = false
        defer { if !ok { mdb_env_close(e) } }
        try LMDBError.check(mdb_env_set_maxdbs(e, MDB_dbi(max(names.count, 1) + 2)), "mdb_env_set_maxdbs")
        try LMDBError.check(mdb_env_set_maxreaders(e, 512), "mdb_env_set_maxreaders")
        // A map smaller than the data file would be refused; start from whichever is larger.
        let fileSize = (try? FileManager.default.attributesOfItem(atPath: path + "/data.mdb")[.size] as? Int) ?? 0
        let pageRounded = Self.roundToPages(max(mapSize, fileSize + fileSize / 2))
        try LMDBError.check(mdb_env_set_mapsize(e, pageRounded), "mdb_env_set_mapsize")
        let flags = UInt32(MDB_NOTLS) | (readOnly ? UInt32(MDB_RDONLY) : 0)
        try LMDBError.check(mdb_env_open(e, path, flags, 0o644), "opening index at \(path)")
        var dead: Int32 = 0
        _ = mdb_reader_check(e, &dead)  // clears reader slots of crashed processes
        var info = MDB_envinfo()
        mdb_env_info(e, &info)
        _mapSize = Int(info.me_mapsize)

        // Handles opened in a committed transaction stay valid for the environment's lifetime.
        var txn: OpaquePointer?
        try LMDBError.check(mdb_txn_begin(e, nil, readOnly ? UInt32(MDB_RDONLY) : 0, &txn), "mdb_txn_begin")
        guard let txn else { throw LMDBError(code: EINVAL, operation: "mdb_txn_begin") }
        for name in names {
            var dbi: MDB_dbi = 0
            let rc = mdb_dbi_open(txn, name, readOnly ? 0 : UInt32(MDB_CREATE), &dbi)
            // Read-only, a database an older format lacks is left out; the caller checks the format.
            if rc == MDB_NOTFOUND && readOnly && name != names.first { continue }
            if rc != 0 { mdb_txn_abort(txn); throw LMDBError(code: rc, operation: "opening database \(name)") }
            databases[name] = LMDBDatabase(dbi: dbi, name: name)
        }
        let rc = mdb_txn_commit(txn)
        try LMDBError.check(rc, "opening databases")
        ok = true
    }

    deinit { mdb_env_close(env) }

    static func roundToPages(_ n: Int) -> Int {
        let page = 4096
        return max(page * 16, (n + page - 1) / page * page)
    }

    var mapSize: Int { sizeLock.lock(); defer { sizeLock.unlock() }; return _mapSize }

    func database(_ name: String) -> LMDBDatabase {
        guard let db = databases[name] else { preconditionFailure("database \(name) was not opened") }
        return db
    }

    func hasDatabase(_ name: String) -> Bool { databases[name] != nil }

    /// How many times this process has remapped the file (growing the map, or adopting another
    /// process's growth): a remap may move the map, so views read before it are stale even for the
    /// same transaction id. (LMDB's `me_mapaddr` is not the map's address: it is set only for
    /// fixed maps.) Constant while a transaction of this environment is open.
    var mapGeneration: Int { sizeLock.lock(); defer { sizeLock.unlock() }; return _mapGeneration }
    private var _mapGeneration = 0

    /// Runs `body` in a read transaction: a consistent snapshot, values read in place from the map.
    func withReadTransaction<R>(_ body: (LMDBTransaction) throws -> R) throws -> R {
        resizeLock.readLock()
        defer { resizeLock.unlock() }
        var attempts = 0
        while true {
            var txn: OpaquePointer?
            let rc = mdb_txn_begin(env, nil, UInt32(MDB_RDONLY), &txn)
            if rc == MDB_MAP_RESIZED, attempts < 3 {
                // Another process grew the map: adopt its size (needs no live transaction here).
                resizeLock.unlock()
                adoptGrownMap()
                resizeLock.readLock()
                attempts += 1
                continue
            }
            try LMDBError.check(rc, "beginning a read transaction")
            guard let txn else { throw LMDBError(code: EINVAL, operation: "mdb_txn_begin") }
            defer { mdb_txn_abort(txn) }
            return try body(LMDBTransaction(txn: txn, writable: false))
        }
    }

    /// Runs `body` in a write transaction and commits it. When the map is full, the transaction is
    /// aborted, the map doubled and `body` run again from scratch, so `body` must not have effects
    /// outside the transaction. Writers of this process are serialised.
    func withWriteTransaction<R>(_ body: (LMDBTransaction) throws -> R) throws -> R {
        precondition(!readOnly, "write transaction on a read-only environment")
        writerLock.lock()
        defer { writerLock.unlock() }
        while true {
            do {
                return try attemptWrite(body)
            } catch let error as LMDBError where error.isMapFull || error.code == MDB_MAP_RESIZED {
                if error.code == MDB_MAP_RESIZED { adoptGrownMap(); continue }
                let current = mapSize
                guard current < maxMapSize else { throw error }
                try grow(to: min(maxMapSize, current * 2))
            }
        }
    }

    private func attemptWrite<R>(_ body: (LMDBTransaction) throws -> R) throws -> R {
        resizeLock.readLock()
        defer { resizeLock.unlock() }
        var txn: OpaquePointer?
        try LMDBError.check(mdb_txn_begin(env, nil, 0, &txn), "beginning a write transaction")
        guard let txn else { throw LMDBError(code: EINVAL, operation: "mdb_txn_begin") }
        let result: R
        do {
            result = try body(LMDBTransaction(txn: txn, writable: true))
        } catch {
            mdb_txn_abort(txn)
            throw error
        }
        // mdb_txn_commit frees the transaction whatever it returns.
        try LMDBError.check(mdb_txn_commit(txn), "committing a write transaction")
        return result
    }

    private func grow(to newSize: Int) throws {
        resizeLock.writeLock()
        defer { resizeLock.unlock() }
        let size = Self.roundToPages(newSize)
        let rc = mdb_env_set_mapsize(env, size)
        var info = MDB_envinfo()
        mdb_env_info(env, &info)
        sizeLock.lock(); _mapSize = Int(info.me_mapsize); _mapGeneration += 1; sizeLock.unlock()
        try LMDBError.check(rc, "growing the index map to \(size) bytes")
    }

    private func adoptGrownMap() {
        resizeLock.writeLock()
        defer { resizeLock.unlock() }
        _ = mdb_env_set_mapsize(env, 0)
        var info = MDB_envinfo()
        mdb_env_info(env, &info)
        sizeLock.lock(); _mapSize = Int(info.me_mapsize); _mapGeneration += 1; sizeLock.unlock()
    }

    /// Page size and the highest page in use (the part of the file holding live or free pages).
    func usage() -> (pageSize: Int, usedBytes: Int) {
        var st = MDB_stat()
        mdb_env_stat(env, &st)
        var info = MDB_envinfo()
        mdb_env_info(env, &info)
        return (Int(st.ms_psize), (Int(info.me_last_pgno) + 1) * Int(st.ms_psize))
    }

    func sync() throws { try LMDBError.check(mdb_env_sync(env, 1), "mdb_env_sync") }

    /// Id of the last committed write transaction (changes with every commit).
    var lastTransactionId: Int {
        var info = MDB_envinfo()
        mdb_env_info(env, &info)
        return Int(info.me_last_txnid)
    }

    /// Writes a compacted copy of the current snapshot (live pages only, renumbered; free pages
    /// dropped) to the new file `file` and fsyncs it. On failure the partial file is removed.
    func copyCompacted(toFile file: String) throws {
        let fd = open(file, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw LMDBError(code: errno, operation: "creating \(file)") }
        var ok = false
        defer {
            close(fd)
            if !ok { unlink(file) }
        }
        try LMDBError.check(mdb_env_copyfd2(env, fd, UInt32(MDB_CP_COMPACT)), "writing a compacted copy to \(file)")
        guard fsync(fd) == 0 else { throw LMDBError(code: errno, operation: "fsync of \(file)") }
        ok = true
    }
}

/// File-level helpers for replacing an environment's data file while no one uses it.
enum LMDBFiles {
    /// Whether a process other than this one has the environment whose lock file is open as
    /// `lockFD` attached: every process with the environment open holds LMDB's shared fcntl lock
    /// on byte 0 of `lock.mdb`, which conflicts with the exclusive lock probed here. The probe
    /// acquires nothing. Keep `lockFD` open while this process has the environment open
    /// (closing any descriptor of the file drops all of this process's fcntl locks on it).
    static func otherProcessAttached(lockFD: Int32) throws -> Bool {
        var probe = flock()
        probe.l_type = Int16(F_WRLCK)
        probe.l_whence = Int16(SEEK_SET)
        probe.l_start = 0
        probe.l_len = 1
        guard fcntl(lockFD, F_GETLK, &probe) == 0 else { throw LMDBError(code: errno, operation: "probing the index lock file") }
        return probe.l_type != Int16(F_UNLCK)
    }

    static func openLockFile(_ file: String) throws -> Int32 {
        let fd = open(file, O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw LMDBError(code: errno, operation: "opening \(file)") }
        return fd
    }

    static func close(_ fd: Int32) { _ = Glibc.close(fd) }

    /// Atomically replaces `target` by `source` (same directory) and makes the rename durable.
    static func replace(_ target: String, with source: String) throws {
        guard rename(source, target) == 0 else { throw LMDBError(code: errno, operation: "renaming \(source) to \(target)") }
        let dir = (target as NSString).deletingLastPathComponent
        let dfd = open(dir.isEmpty ? "." : dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard dfd >= 0 else { throw LMDBError(code: errno, operation: "opening \(dir) to sync it") }
        defer { close(dfd) }
        guard fsync(dfd) == 0 else { throw LMDBError(code: errno, operation: "fsync of \(dir)") }
    }
}

/// Storage statistics of one named database.
struct LMDBDatabaseStat {
    var entries: Int
    var pages: Int
    var overflowPages: Int
}

/// A transaction handle, valid only inside the `withReadTransaction` / `withWriteTransaction`
/// closure that provided it. Values returned by `get` and cursors point into the map and are
/// valid until the transaction ends (or, in a write transaction, until the next write).
struct LMDBTransaction {
    fileprivate let txn: OpaquePointer
    let writable: Bool

    func get(_ db: LMDBDatabase, key: UnsafeRawBufferPointer) throws -> UnsafeRawBufferPointer? {
        var k = MDB_val(mv_size: key.count, mv_data: UnsafeMutableRawPointer(mutating: key.baseAddress))
        var v = MDB_val()
        let rc = mdb_get(txn, db.dbi, &k, &v)
        if rc == MDB_NOTFOUND { return nil }
        try LMDBError.check(rc, "reading from \(db.name)")
        return UnsafeRawBufferPointer(start: v.mv_data, count: v.mv_size)
    }

    func get(_ db: LMDBDatabase, key: [UInt8]) throws -> UnsafeRawBufferPointer? {
        try key.withUnsafeBytes { try get(db, key: $0) }
    }

    /// Id of this transaction's snapshot (the last committed write transaction it sees).
    var id: Int { Int(mdb_txn_id(txn)) }

    /// Writes `value` under `key`. `append`: the key sorts after every key of `db` (checked by
    /// LMDB); pages then fill up completely instead of splitting in half.
    func put(_ db: LMDBDatabase, key: [UInt8], value: UnsafeRawBufferPointer, append: Bool = false) throws {
        try key.withUnsafeBytes { kb in
            var k = MDB_val(mv_size: kb.count, mv_data: UnsafeMutableRawPointer(mutating: kb.baseAddress))
            var v = MDB_val(mv_size: value.count, mv_data: UnsafeMutableRawPointer(mutating: value.baseAddress))
            try LMDBError.check(mdb_put(txn, db.dbi, &k, &v, append ? UInt32(MDB_APPEND) : 0), "writing to \(db.name)")
        }
    }

    func put(_ db: LMDBDatabase, key: [UInt8], value: [UInt8], append: Bool = false) throws {
        try value.withUnsafeBytes { try put(db, key: key, value: $0, append: append) }
    }

    /// Reserves `size` bytes for the value of `key` and lets `fill` write them in place.
    func put(_ db: LMDBDatabase, key: [UInt8], reserving size: Int, append: Bool = false,
             _ fill: (UnsafeMutableRawBufferPointer) throws -> Void) throws {
        try key.withUnsafeBytes { kb in
            var k = MDB_val(mv_size: kb.count, mv_data: UnsafeMutableRawPointer(mutating: kb.baseAddress))
            var v = MDB_val(mv_size: size, mv_data: nil)
            let flags = UInt32(MDB_RESERVE) | (append ? UInt32(MDB_APPEND) : 0)
            try LMDBError.check(mdb_put(txn, db.dbi, &k, &v, flags), "writing to \(db.name)")
            try fill(UnsafeMutableRawBufferPointer(start: v.mv_data, count: size))
        }
    }

    /// Deletes `key`; returns false when it was absent.
    @discardableResult
    func delete(_ db: LMDBDatabase, key: [UInt8]) throws -> Bool {
        try key.withUnsafeBytes { kb in
            var k = MDB_val(mv_size: kb.count, mv_data: UnsafeMutableRawPointer(mutating: kb.baseAddress))
            let rc = mdb_del(txn, db.dbi, &k, nil)
            if rc == MDB_NOTFOUND { return false }
            try LMDBError.check(rc, "deleting from \(db.name)")
            return true
        }
    }

    /// Removes every entry of `db` (keeps the database).
    func clear(_ db: LMDBDatabase) throws {
        try LMDBError.check(mdb_drop(txn, db.dbi, 0), "clearing \(db.name)")
    }

    func stat(_ db: LMDBDatabase) throws -> LMDBDatabaseStat {
        var st = MDB_stat()
        try LMDBError.check(mdb_stat(txn, db.dbi, &st), "mdb_stat \(db.name)")
        return LMDBDatabaseStat(entries: Int(st.ms_entries),
                                pages: Int(st.ms_branch_pages + st.ms_leaf_pages + st.ms_overflow_pages),
                                overflowPages: Int(st.ms_overflow_pages))
    }

    /// The entry with the greatest key below `key`, copied out (nil when there is none).
    func last(_ db: LMDBDatabase, before key: [UInt8]) throws -> (key: [UInt8], value: [UInt8])? {
        var cursor: OpaquePointer?
        try LMDBError.check(mdb_cursor_open(txn, db.dbi, &cursor), "opening a cursor on \(db.name)")
        guard let cursor else { return nil }
        defer { mdb_cursor_close(cursor) }
        var k = MDB_val(), v = MDB_val()
        var rc = key.withUnsafeBytes { kb in
            k = MDB_val(mv_size: kb.count, mv_data: UnsafeMutableRawPointer(mutating: kb.baseAddress))
            return mdb_cursor_get(cursor, &k, &v, MDB_SET_RANGE)
        }
        if rc == 0 { rc = mdb_cursor_get(cursor, &k, &v, MDB_PREV) }
        else if rc == MDB_NOTFOUND { rc = mdb_cursor_get(cursor, &k, &v, MDB_LAST) }
        if rc == MDB_NOTFOUND { return nil }
        try LMDBError.check(rc, "seeking in \(db.name)")
        return (Array(UnsafeRawBufferPointer(start: k.mv_data, count: k.mv_size)),
                Array(UnsafeRawBufferPointer(start: v.mv_data, count: v.mv_size)))
    }

    /// Visits entries in key order starting at the first key `>= from` (or the first key);
    /// `body` returns false to stop. Keys and values are valid only during the call.
    func scan(_ db: LMDBDatabase, from: [UInt8]? = nil,
              _ body: (UnsafeRawBufferPointer, UnsafeRawBufferPointer) throws -> Bool) throws {
        var cursor: OpaquePointer?
        try LMDBError.check(mdb_cursor_open(txn, db.dbi, &cursor), "opening a cursor on \(db.name)")
        guard let cursor else { return }
        defer { mdb_cursor_close(cursor) }
        var k = MDB_val(), v = MDB_val()
        var rc: Int32
        if let from {
            rc = from.withUnsafeBytes { fb in
                k = MDB_val(mv_size: fb.count, mv_data: UnsafeMutableRawPointer(mutating: fb.baseAddress))
                return mdb_cursor_get(cursor, &k, &v, MDB_SET_RANGE)
            }
        } else {
            rc = mdb_cursor_get(cursor, &k, &v, MDB_FIRST)
        }
        while rc == 0 {
            let more = try body(UnsafeRawBufferPointer(start: k.mv_data, count: k.mv_size),
                                UnsafeRawBufferPointer(start: v.mv_data, count: v.mv_size))
            if !more { return }
            rc = mdb_cursor_get(cursor, &k, &v, MDB_NEXT)
        }
        if rc != MDB_NOTFOUND { try LMDBError.check(rc, "scanning \(db.name)") }
    }
}

/// Big-endian key encoding: big-endian integers sort numerically under LMDB's byte order.
enum Keys {
    @inline(__always) static func u32(_ x: UInt32) -> [UInt8] {
        [UInt8(truncatingIfNeeded: x >> 24), UInt8(truncatingIfNeeded: x >> 16),
         UInt8(truncatingIfNeeded: x >> 8), UInt8(truncatingIfNeeded: x)]
    }
    @inline(__always) static func u32u32(_ a: UInt32, _ b: UInt32) -> [UInt8] { u32(a) + u32(b) }
    @inline(__always) static func readU32(_ p: UnsafeRawBufferPointer, at offset: Int = 0) -> UInt32 {
        var x: UInt32 = 0
        for i in 0..<4 { x = x << 8 | UInt32(p[offset + i]) }
        return x
    }
}
