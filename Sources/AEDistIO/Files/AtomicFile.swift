import AEDistCore
import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// Every file aedist writes goes through here: written under a temporary name in the same folder, flushed to disk
/// (fsync), renamed over the final name, and the folder's entry flushed too. A reader, a crash or a kill at any
/// moment sees the old file or the whole new one, never a part; a failed write leaves no temporary behind.
public enum AtomicFile {
    /// A temporary name beside `path` (same folder, so the rename stays on one file system), hidden and unique to
    /// this process.
    public static func temporaryPath(for path: String) -> String {
        let url = URL(fileURLWithPath: path)
        return url.deletingLastPathComponent().appendingPathComponent(".\(url.lastPathComponent).tmp-\(getpid())").path
    }

    /// `body` creates the file at the temporary path it is given; then it is committed to `path`.
    public static func write(to path: String, _ body: (String) throws -> Void) throws {
        let temporary = temporaryPath(for: path)
        unlink(temporary)
        do {
            try body(temporary)
            try commit(temporary, to: path)
        } catch {
            unlink(temporary)
            throw error
        }
    }

    public static func write(_ data: Data, to path: String) throws {
        try write(to: path) { temporary in
            do { try data.write(to: URL(fileURLWithPath: temporary)) } catch {
                throw FileWriteError("cannot write \(path): \(error.localizedDescription)")
            }
        }
    }

    /// Points the symbolic link `path` at `target`, replacing any link there in one step.
    public static func link(_ path: String, to target: String) throws {
        let temporary = temporaryPath(for: path)
        unlink(temporary)
        guard symlink(target, temporary) == 0 else { throw FileWriteError("cannot update \(path): \(String(cString: strerror(errno)))") }
        do {
            try rename(temporary, path)
            try sync(folderOf: path)
        } catch {
            unlink(temporary)
            throw error
        }
    }

    /// Flushes a fully written temporary file, renames it to `path` and flushes the folder (for writers that fill
    /// the temporary in several steps, such as every rank in turn).
    public static func commit(_ temporary: String, to path: String) throws {
        try sync(temporary)
        try rename(temporary, path)
        try sync(folderOf: path)
    }

    public static func rename(_ from: String, _ to: String) throws {
        guard Glibc.rename(from, to) == 0 else {
            throw FileWriteError("cannot rename \(from) to \(to): \(String(cString: strerror(errno)))")
        }
    }

    public static func sync(folderOf path: String) throws {
        try sync(URL(fileURLWithPath: path).deletingLastPathComponent().path)
    }

    /// fsync of a file or folder.
    public static func sync(_ path: String) throws {
        let descriptor = open(path, O_RDONLY)
        guard descriptor >= 0 else { throw FileWriteError("cannot open \(path) to sync it: \(String(cString: strerror(errno)))") }
        defer { close(descriptor) }
        guard Glibc.fsync(descriptor) == 0 || errno == EINVAL else {
            throw FileWriteError("cannot sync \(path) to disk: \(String(cString: strerror(errno)))")
        }
    }
}

public struct FileWriteError: UserFacingError {
    public let description: String
    public init(_ description: String) { self.description = description }
}
