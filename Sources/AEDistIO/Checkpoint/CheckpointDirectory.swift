import AEDistCore
import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// The checkpoint folder: `ckpt-eEEEE-sSSSSSSS.h5` files, the `latest.h5` and `best.h5` links, and `metrics.csv`.
/// Every change is atomic (`AtomicFile`), so a crash or kill at any moment leaves the previous checkpoint and links
/// intact.
public struct CheckpointDirectory {
    public let path: String
    public static let latestName = "latest.h5"
    public static let bestName = "best.h5"
    public static let metricsName = "metrics.csv"

    public init(path: String) { self.path = path }

    func file(_ name: String) -> String { (path as NSString).appendingPathComponent(name) }

    /// Creates the folder if needed and proves it is writable, before any training time is spent.
    public func prepare() throws {
        do {
            try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        } catch {
            throw CheckpointError("cannot create checkpoint folder \(path): \(Self.reason(error))")
        }
        let probe = file(".write-test-\(getpid())")
        guard FileManager.default.createFile(atPath: probe, contents: Data("ok".utf8)) else {
            throw CheckpointError("checkpoint folder \(path) is not writable (\(String(cString: strerror(errno))))")
        }
        try? FileManager.default.removeItem(atPath: probe)
    }

    /// A fresh run in a folder that holds an earlier run's checkpoints must not overwrite or prune them: they move,
    /// whole, into a subfolder named after the time of the earlier run's newest checkpoint. Returns that subfolder.
    public func archiveEarlierRun() throws -> String? {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []
        let belonging = names.filter {
            ($0.hasPrefix("ckpt-") && $0.hasSuffix(".h5")) || [Self.latestName, Self.bestName, Self.metricsName].contains($0)
        }
        guard belonging.contains(where: { $0.hasPrefix("ckpt-") }) else { return nil }
        let newest = latest ?? checkpointFiles.last!
        let modified = (try? FileManager.default.attributesOfItem(atPath: newest))?[.modificationDate] as? Date ?? Date()
        let formatter = DateFormatter()
        formatter.dateFormat = "yyyyMMdd-HHmmss"
        formatter.timeZone = TimeZone(identifier: "UTC")
        var archive = file("earlier-run-\(formatter.string(from: modified))")
        var suffix = 2
        while FileManager.default.fileExists(atPath: archive) {
            archive = file("earlier-run-\(formatter.string(from: modified))-\(suffix)")
            suffix += 1
        }
        do {
            try FileManager.default.createDirectory(atPath: archive, withIntermediateDirectories: false)
            for name in belonging { try AtomicFile.rename(file(name), (archive as NSString).appendingPathComponent(name)) }
            try AtomicFile.sync(path)
        } catch {
            throw CheckpointError("cannot move the earlier run's checkpoints in \(path) aside: \(Self.reason(error)); pass --resume auto to continue that run, or a new --checkpoint-dir")
        }
        return archive
    }

    public static func fileName(for progress: TrainingProgress) -> String {
        String(format: "ckpt-e%04d-s%07d.h5", progress.epochsCompleted, progress.globalStep)
    }

    /// The file `latest.h5` points to, if any.
    public var latest: String? { resolve(Self.latestName) }
    public var best: String? { resolve(Self.bestName) }

    private func resolve(_ link: String) -> String? {
        guard let target = try? FileManager.default.destinationOfSymbolicLink(atPath: file(link)) else { return nil }
        let full = target.hasPrefix("/") ? target : file(target)
        return FileManager.default.fileExists(atPath: full) ? full : nil
    }

    /// Writes `checkpoint` atomically, points `latest.h5` (and `best.h5` when `isBest`) at it, then removes all but
    /// the newest `keep` checkpoints and the best one. Returns the new file's path.
    @discardableResult
    public func save(_ checkpoint: Checkpoint, isBest: Bool, keep: Int) throws -> String {
        let name = Self.fileName(for: checkpoint.progress)
        let final = file(name)
        do {
            try AtomicFile.write(to: final) { try checkpoint.write(to: $0) }
        } catch {
            throw CheckpointError("cannot write checkpoint \(final): \(Self.reason(error)); earlier checkpoints are intact")
        }
        try AtomicFile.link(file(Self.latestName), to: name)
        if isBest { try AtomicFile.link(file(Self.bestName), to: name) }
        prune(keep: keep)
        return final
    }

    /// Checkpoint files, oldest first (names sort by epoch then step).
    public var checkpointFiles: [String] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []
        return names.filter { $0.hasPrefix("ckpt-") && $0.hasSuffix(".h5") }.sorted().map(file)
    }

    private func prune(keep: Int) {
        let protected = Set([latest, best].compactMap { $0 })
        let files = checkpointFiles
        for old in files.dropLast(keep) where !protected.contains(old) {
            try? FileManager.default.removeItem(atPath: old)
        }
    }

    // MARK: metrics.csv

    /// Replaces metrics.csv with `history`, whole: on start and resume (so it never holds rows past the
    /// checkpoint) and at each epoch's end.
    public func writeMetrics(_ history: [EpochMetrics]) throws {
        let text = ([EpochMetrics.csvHeader] + history.map(\.csvLine)).joined(separator: "\n") + "\n"
        do { try AtomicFile.write(Data(text.utf8), to: file(Self.metricsName)) } catch {
            throw CheckpointError("cannot write \(file(Self.metricsName)): \(Self.reason(error))")
        }
    }

    static func reason(_ error: Error) -> String { userMessage(error) }
}

public struct CheckpointError: UserFacingError {
    public let description: String
    public init(_ description: String) { self.description = description }
}
