import Foundation

/// What `ColBERTIndex.compactFile(at:)` did to `data.mdb`.
public struct IndexFileCompaction: Sendable, Equatable {
    public var bytesBefore: Int
    public var bytesAfter: Int
}

extension ColBERTIndex {
    /// Name of the temporary compacted copy, next to `data.mdb`.
    static let compactCopyName = "data.mdb.compact"

    /// Rewrites `data.mdb` without its free pages: LMDB never shrinks its file, so pages freed by
    /// chunk merges (`compact()`), adds and deletes stay in it. Writes a compacted copy of the
    /// last committed state to `data.mdb.compact`, fsyncs it and renames it over `data.mdb`
    /// (atomic: a crash leaves the old or the new complete file; a leftover copy is ignored and
    /// overwritten next time).
    ///
    /// Needs exclusive use: throws `IndexError.inUse` when this process or another one (a
    /// server, a search, a build) has the index open, or when a write lands during the copy.
    @discardableResult
    public static func compactFile(at path: String) throws -> IndexFileCompaction {
        let data = path + "/data.mdb", lockFile = path + "/lock.mdb", copy = path + "/" + compactCopyName
        guard FileManager.default.fileExists(atPath: data) else { throw IndexError.notAnIndex(path) }
        func inUse(_ who: String) -> IndexError {
            .inUse("\(path) is open in \(who); close it (stop servers and searches on it) before compacting the file")
        }
        if EnvironmentRegistry.shared.isOpen(path: path) { throw inUse("this process") }
        let before = fileSize(data)
        // Probe descriptor on lock.mdb, opened before and closed after this process's environment
        // (closing a descriptor of a file drops all of the process's fcntl locks on it).
        let lockFD = try LMDBFiles.openLockFile(lockFile)
        defer { LMDBFiles.close(lockFD) }
        if try LMDBFiles.otherProcessAttached(lockFD: lockFD) { throw inUse("another process") }

        var copied = false
        defer { if copied { unlink(copy) } }  // only reached with the copy still present on failure
        try {
            let index = try ColBERTIndex.open(at: path)
            let txnBefore = index.env.lastTransactionId
            try index.env.copyCompacted(toFile: copy)
            copied = true
            if index.env.lastTransactionId != txnBefore { throw inUse("another process (it wrote during the copy)") }
        }()
        // The environment is closed once the last index object of it is gone.
        if EnvironmentRegistry.shared.isOpen(path: path) { throw inUse("this process") }
        if try LMDBFiles.otherProcessAttached(lockFD: lockFD) { throw inUse("another process") }
        try LMDBFiles.replace(data, with: copy)
        copied = false
        return IndexFileCompaction(bytesBefore: before, bytesAfter: fileSize(data))
    }

    static func fileSize(_ file: String) -> Int {
        (try? FileManager.default.attributesOfItem(atPath: file)[.size] as? Int) ?? 0
    }
}
