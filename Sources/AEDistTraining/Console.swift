import Foundation

/// Output of a run: only rank 0 prints. On a terminal a progress line is redrawn in place; in a batch log (no TTY)
/// only whole lines appear, one per epoch.
public final class Console {
    public let isRoot: Bool
    public let isTerminal: Bool
    private var lastProgress = Date.distantPast
    private var progressShown = false

    public init(isRoot: Bool, isTerminal: Bool = Console.standardOutputIsTerminal()) {
        self.isRoot = isRoot
        self.isTerminal = isTerminal
    }

    /// Open MPI hands every rank a pseudo-terminal whatever mpirun's own output is, so under mpirun what counts is
    /// the launcher's standard output (the rank's parent process): a terminal, or a batch job's log file.
    public static func standardOutputIsTerminal() -> Bool {
        guard isatty(STDOUT_FILENO) != 0 else { return false }
        guard ProcessInfo.processInfo.environment["OMPI_COMM_WORLD_SIZE"] != nil else { return true }
        guard let target = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(getppid())/fd/1") else { return false }
        return target.hasPrefix("/dev/pts/") || target.hasPrefix("/dev/tty")
    }

    public func line(_ text: String) {
        guard isRoot else { return }
        clearProgress()
        print(text)
        fflush(stdout)
    }

    /// At most ten redraws a second, so a fast loop does not spend its time on the terminal.
    public func progress(_ text: @autoclosure () -> String) {
        guard isRoot, isTerminal else { return }
        let now = Date()
        guard now.timeIntervalSince(lastProgress) >= 0.1 else { return }
        lastProgress = now
        print("\r\u{1B}[K" + text(), terminator: "")
        fflush(stdout)
        progressShown = true
    }

    private func clearProgress() {
        if progressShown {
            print("\r\u{1B}[K", terminator: "")
            progressShown = false
        }
    }

    /// Errors go to standard error, once, from rank 0 (the message is already shared by every rank).
    public func error(_ text: String) {
        guard isRoot else { return }
        clearProgress()
        FileHandle.standardError.write(Data("aedist: error: \(text)\n".utf8))
    }

    public func warning(_ text: String) {
        guard isRoot else { return }
        clearProgress()
        FileHandle.standardError.write(Data("aedist: warning: \(text)\n".utf8))
    }
}
