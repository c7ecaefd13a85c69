import Foundation
import XCTest

/// Runs the real `aedist` binary, under real `mpirun` when ranks are given, and the h5py helper script.
enum Harness {
    static let repositoryRoot = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path

    /// scripts/test sets AEDIST_BINARY; otherwise the release, then the debug build.
    static var binary: String {
        if let path = ProcessInfo.processInfo.environment["AEDIST_BINARY"] { return path }
        let release = "\(repositoryRoot)/.build/release/aedist"
        return FileManager.default.fileExists(atPath: release) ? release : "\(repositoryRoot)/.build/debug/aedist"
    }

    static var embeddedData: String {
        let folder = (binary as NSString).deletingLastPathComponent
        return "\(folder)/aedist_AEDistTraining.resources/mnist5k.h5"
    }

    struct Outcome: CustomStringConvertible {
        var status: Int32
        var stdout: String
        var stderr: String
        var timedOut: Bool
        var seconds: Double

        var description: String { "exit \(status)\(timedOut ? " (timed out)" : "") after \(String(format: "%.1f", seconds))s\n--- stdout\n\(stdout)\n--- stderr\n\(stderr)" }

        /// Lines aedist itself printed as errors ("aedist: error: …"; "Error: …" would be the argument parser's own
        /// style, which aedist no longer lets through, so a test counting these lines still sees one).
        var errorLines: [String] {
            stderr.split(separator: "\n").map(String.init).filter { $0.hasPrefix("aedist: error:") || $0.hasPrefix("Error:") }
        }
    }

    /// Environment for every run: Open MPI as root with more ranks than cores; failing jobs end at once; crash
    /// reports from many ranks do not interleave.
    static let environment: [String: String] = {
        var environment = ProcessInfo.processInfo.environment
        environment["OMPI_ALLOW_RUN_AS_ROOT"] = "1"
        environment["OMPI_ALLOW_RUN_AS_ROOT_CONFIRM"] = "1"
        environment["OMPI_MCA_rmaps_base_oversubscribe"] = "1"
        environment["OMPI_MCA_odls_base_sigkill_timeout"] = "0"
        environment["SWIFT_BACKTRACE"] = "enable=no"
        return environment
    }()

    /// Starts a process with output going to files (never pipes: an MPI daemon that inherits a pipe can keep a
    /// reader waiting).
    static func start(_ executable: String, _ arguments: [String], directory: String? = nil) throws -> (Process, String, String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        process.environment = environment
        if let directory { process.currentDirectoryURL = URL(fileURLWithPath: directory) }
        let outPath = temporaryDirectory() + "/stdout", errPath = temporaryDirectory() + "/stderr"
        FileManager.default.createFile(atPath: outPath, contents: nil)
        FileManager.default.createFile(atPath: errPath, contents: nil)
        process.standardOutput = FileHandle(forWritingAtPath: outPath)
        process.standardError = FileHandle(forWritingAtPath: errPath)
        process.standardInput = FileHandle.nullDevice
        try process.run()
        return (process, outPath, errPath)
    }

    static func finish(_ process: Process, _ outPath: String, _ errPath: String, started: Date, timeout: Double) -> Outcome {
        var timedOut = false
        while process.isRunning {
            if Date().timeIntervalSince(started) > timeout {
                timedOut = true
                process.terminate()
                Thread.sleep(forTimeInterval: 3)
                if process.isRunning { kill(process.processIdentifier, SIGKILL) }
                break
            }
            Thread.sleep(forTimeInterval: 0.02)
        }
        process.waitUntilExit()
        let read = { (path: String) in (try? String(contentsOfFile: path, encoding: .utf8)) ?? "" }
        return Outcome(status: process.terminationStatus, stdout: read(outPath), stderr: read(errPath),
                       timedOut: timedOut, seconds: Date().timeIntervalSince(started))
    }

    static func run(_ executable: String, _ arguments: [String], directory: String? = nil, timeout: Double = 180) throws -> Outcome {
        let started = Date()
        let (process, outPath, errPath) = try start(executable, arguments, directory: directory)
        return finish(process, outPath, errPath, started: started, timeout: timeout)
    }

    static var mpirun: String { ["/usr/bin/mpirun", "/usr/local/bin/mpirun"].first { FileManager.default.fileExists(atPath: $0) } ?? "mpirun" }

    /// `mpirun -n ranks aedist …`, or aedist alone when `ranks` is nil.
    static func aedist(ranks: Int?, _ arguments: [String], directory: String? = nil, timeout: Double = 180) throws -> Outcome {
        guard let ranks else { return try run(binary, arguments, directory: directory, timeout: timeout) }
        return try run(mpirun, ["-n", String(ranks), binary] + arguments, directory: directory, timeout: timeout)
    }

    /// The tests' own Python (with h5py and numpy): `scripts/setup --test` makes it in `.venv-test/`, never in the
    /// system interpreter. AEDIST_TEST_PYTHON names another.
    static var pythonInterpreter: String {
        if let chosen = ProcessInfo.processInfo.environment["AEDIST_TEST_PYTHON"], !chosen.isEmpty { return chosen }
        return "\(repositoryRoot)/.venv-test/bin/python"
    }

    /// Runs `python -c script` in the tests' Python.
    static func pythonScript(_ script: String) throws -> Outcome {
        try run(pythonInterpreter, ["-c", script], timeout: 120)
    }

    static func python(_ arguments: [String]) throws -> Outcome {
        try run(pythonInterpreter, ["\(repositoryRoot)/Tests/python/checkpoint_tool.py"] + arguments, timeout: 120)
    }

    static func temporaryDirectory() -> String {
        let path = NSTemporaryDirectory() + "aedist-e2e-" + UUID().uuidString.prefix(8)
        try! FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path
    }

    /// metrics.csv as one dictionary per epoch.
    static func metrics(in directory: String) throws -> [[String: Double]] {
        let text = try String(contentsOfFile: "\(directory)/metrics.csv", encoding: .utf8)
        let lines = text.split(separator: "\n").map { $0.split(separator: ",", omittingEmptySubsequences: false).map(String.init) }
        guard let header = lines.first else { return [] }
        return lines.dropFirst().map { row in
            Dictionary(uniqueKeysWithValues: zip(header, row).map { ($0, Double($1) ?? .nan) })
        }
    }

    static func resolvedLink(_ path: String) -> String? {
        (try? FileManager.default.destinationOfSymbolicLink(atPath: path))
    }
}

extension XCTestCase {
    /// Fails with the whole output unless the run ended by itself with status 0.
    func assertSucceeded(_ outcome: Harness.Outcome, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertFalse(outcome.timedOut, "run hung\n\(outcome)", file: file, line: line)
        XCTAssertEqual(outcome.status, 0, "\(outcome)", file: file, line: line)
    }
}
