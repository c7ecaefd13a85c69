import Foundation
import XCTest

/// Bad input gets one clear error naming the problem, a non-zero exit, every rank ends, nothing written is damaged.
final class BadInputTests: XCTestCase {
    static var dataFolder = Harness.temporaryDirectory()

    /// Runs at 2 ranks and checks the error contract; returns the outcome for further checks.
    @discardableResult
    func expectError(_ arguments: [String], ranks: Int? = 2, mentioning fragments: [String],
                     file: StaticString = #filePath, line: UInt = #line) throws -> Harness.Outcome {
        let outcome = try Harness.aedist(ranks: ranks, arguments, timeout: 60)
        XCTAssertFalse(outcome.timedOut, "hung instead of failing\n\(outcome)", file: file, line: line)
        XCTAssertNotEqual(outcome.status, 0, "\(outcome)", file: file, line: line)
        XCTAssertEqual(outcome.errorLines.count, 1, "expected exactly one error line\n\(outcome)", file: file, line: line)
        let message = outcome.errorLines.first ?? ""
        for fragment in fragments {
            XCTAssertTrue(message.contains(fragment), "error should mention '\(fragment)': \(message)", file: file, line: line)
        }
        for trace in ["Fatal error", "Stack dump", "backtrace", "Current stack trace"] {
            XCTAssertFalse(outcome.stderr.contains(trace), "stack trace printed\n\(outcome)", file: file, line: line)
        }
        return outcome
    }

    func data(_ kind: String) throws -> String {
        let path = "\(Self.dataFolder)/\(kind).h5"
        if !FileManager.default.fileExists(atPath: path) { assertSucceeded(try Harness.python(["make-data", kind, path])) }
        return path
    }

    var scratch: [String] { ["--checkpoint-dir", Harness.temporaryDirectory()] }

    func testMissingDataFile() throws {
        try expectError(["train", "--data", "/no/such/file.h5"] + scratch, mentioning: ["/no/such/file.h5", "no such file"])
    }

    func testDataFileThatIsNotHDF5() throws {
        let path = "\(Self.dataFolder)/text.h5"
        try "hello".write(toFile: path, atomically: true, encoding: .utf8)
        try expectError(["train", "--data", path] + scratch, mentioning: [path, "not an HDF5 file"])
    }

    func testMissingDatasetListsWhatTheFileHas() throws {
        try expectError(["train", "--train-dataset", "/train/images"] + scratch, mentioning: ["/train/images", "it has: /train/x"])
    }

    func testSampleWidthThatDoesNotFitTheModel() throws {
        try expectError(["train", "--data", try data("wide"), "--val-dataset", "none"] + scratch, mentioning: ["12 values", "784 inputs", "--model"])
    }

    func testNonNumericDataset() throws {
        try expectError(["train", "--data", try data("strings"), "--model", "dense:1-1", "--val-dataset", "none"] + scratch,
                        mentioning: ["/train/x", "string"])
    }

    func testNaNInTheData() throws {
        try expectError(["train", "--data", try data("nan"), "--model", "dense:10-4", "--val-dataset", "none"] + scratch,
                        mentioning: ["row 17", "NaN"])
    }

    func testEmptyDataset() throws {
        try expectError(["train", "--data", try data("empty"), "--model", "dense:10-4", "--val-dataset", "none"] + scratch,
                        mentioning: ["/train/x", "empty"])
    }

    func testFewerSamplesThanRanks() throws {
        try expectError(["train", "--data", try data("tiny"), "--model", "dense:10-4", "--val-dataset", "none"] + scratch,
                        ranks: 4, mentioning: ["3 samples", "4 ranks"])
    }

    func testInvalidOptionValues() throws {
        try expectError(["train", "--lr=-1"], mentioning: ["--lr"])
        // A negative number is a value, not a missing one; NaN is blamed on the option it was given to.
        try expectError(["train", "--lr", "-1"], mentioning: ["--lr must be a positive number (got -1.0)"])
        try expectError(["train", "--lr", "nan"], mentioning: ["--lr must be a positive number (got nan)"])
        try expectError(["train", "--epochs", "-2"], mentioning: ["--epochs must be 0 or more (got -2)"])
        try expectError(["train", "--batch-size", "0"], mentioning: ["--batch-size"])
        try expectError(["train", "--model", "dense:784-abc"], mentioning: ["dense:784-abc"])
        try expectError(["train", "--optimizer", "adagrad"], mentioning: ["adagrad"])
        try expectError(["train", "--loss", "bce", "--output-activation", "linear"], mentioning: ["bce", "sigmoid"])
    }

    func testUnknownConfigFileKey() throws {
        let path = "\(Self.dataFolder)/config.yaml"
        try "optimizer:\n  name: adam\n  learning_rate: 0.01\n".write(toFile: path, atomically: true, encoding: .utf8)
        try expectError(["train", "--config", path], mentioning: [path, "optimizer.learning_rate"])
    }

    func testUnwritableCheckpointFolder() throws {
        let blocker = "\(Self.dataFolder)/a-file"
        FileManager.default.createFile(atPath: blocker, contents: Data("x".utf8))
        try expectError(["train", "--checkpoint-dir", "\(blocker)/checkpoints"], mentioning: ["\(blocker)/checkpoints"])
    }

    func testResumingACheckpointOfAnotherModelChangesNothing() throws {
        let folder = Harness.temporaryDirectory()
        assertSucceeded(try Harness.aedist(ranks: 2, ["train", "--epochs", "1", "--checkpoint-dir", folder]))
        let before = try FileManager.default.contentsOfDirectory(atPath: folder).sorted()
        let latest = try Data(contentsOf: URL(fileURLWithPath: "\(folder)/latest.h5"))
        try expectError(["train", "--model", "dense:784-64", "--resume", "auto", "--checkpoint-dir", folder],
                        mentioning: ["dense:784-32", "--model"])
        // The same parameter layout, other model options: the message names the flags that differ.
        try expectError(["train", "--activation", "tanh", "--noise", "mask:0.2", "--resume", "auto", "--checkpoint-dir", folder],
                        mentioning: ["other model options (--activation, --noise)"])
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: folder).sorted(), before)
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: "\(folder)/latest.h5")), latest)
    }

    /// Ranks started with different options (mpirun's MPMD form) must refuse to train together.
    func testRanksWithDifferentConfigurationsRefuseToStart() throws {
        let folder = Harness.temporaryDirectory()
        let common = ["train", "--epochs", "1", "--checkpoint-dir", folder]
        let outcome = try Harness.run(Harness.mpirun, ["-n", "1", Harness.binary] + common + ["--lr", "0.001", ":",
                                                       "-n", "1", Harness.binary] + common + ["--lr", "0.002"], timeout: 60)
        XCTAssertFalse(outcome.timedOut, "\(outcome)")
        XCTAssertNotEqual(outcome.status, 0, "\(outcome)")
        XCTAssertEqual(outcome.errorLines.count, 1, "\(outcome)")
        XCTAssertTrue(outcome.stderr.contains("ranks disagree on the configuration"), outcome.stderr)
        XCTAssertFalse(FileManager.default.fileExists(atPath: "\(folder)/latest.h5"))
    }

    func testResumeFromMissingCheckpoint() throws {
        try expectError(["train", "--resume", "/no/such/checkpoint.h5"] + scratch, mentioning: ["/no/such/checkpoint.h5"])
    }

    func testInspectExplainsWhatIsMissing() throws {
        try expectError(["inspect", Harness.embeddedData], ranks: nil, mentioning: ["not an aedist checkpoint", "format"])
        try expectError(["inspect", "/no/such/file.h5"], ranks: nil, mentioning: ["/no/such/file.h5"])
    }
}
