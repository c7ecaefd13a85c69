import Foundation
import XCTest

/// What aedist makes of the machine it lands on, and the scripts' own output.
final class MachineTests: XCTestCase {
    /// A rank confined to one core (taskset, a Slurm cpuset of one core per rank) runs one BLAS thread, not one per
    /// core of the node; the start-up line says how the count was chosen.
    func testBLASThreadsFollowTheRanksCPUSet() throws {
        let folder = Harness.temporaryDirectory()
        let outcome = try Harness.run("/usr/bin/taskset", ["-c", "0", Harness.binary, "train", "--epochs", "1", "--checkpoint-dir", folder])
        assertSucceeded(outcome)
        XCTAssertTrue(outcome.stdout.contains("× 1 thread (1 core in this rank's CPU set, shared by 1 rank)"), outcome.stdout)
        let whole = try Harness.run(Harness.binary, ["train", "--epochs", "1", "--checkpoint-dir", folder + "/whole"])
        assertSucceeded(whole)
        let cores = ProcessInfo.processInfo.activeProcessorCount
        XCTAssertTrue(whole.stdout.contains("× \(cores) thread\(cores == 1 ? "" : "s") (\(cores) core"), whole.stdout)
    }

    /// `--help` prints each option's default from the configuration's own defaults and each choice's values from
    /// its type; a config file decodes over the same defaults.
    func testHelpPrintsDefaultsAndChoicesFromTheTypes() throws {
        let help = try Harness.run(Harness.binary, ["train", "--help"]).stdout
        let flat = help.split(whereSeparator: \.isWhitespace).joined(separator: " ")
        for expected in ["--lr <rate> Learning rate. (default: 0.001)", "(default: dense:784-32)", "(default: adam) (values: sgd, adam, adamw, rmsprop)",
                         "(default: relu) (values: relu, tanh, sigmoid, linear, leaky_relu, elu, gelu, silu)", "(default: /val/x)", "(default: 1e-08)"] {
            XCTAssertTrue(flat.contains(expected), "--help lacks '\(expected)'")
        }
        XCTAssertFalse(flat.contains(") (default:"), "a default written twice")
        let folder = Harness.temporaryDirectory()
        try "model: {noise: \"gaussian:0.3\"}\noptimizer: {lr: 0.002}\nschedule: {epochs: 1}\n".write(toFile: folder + "/run.yaml", atomically: true, encoding: .utf8)
        let run = try Harness.run(Harness.binary, ["train", "--config", folder + "/run.yaml", "--lr", "0.003", "--checkpoint-dir", folder + "/ck"])
        assertSucceeded(run)
        let stored = try Harness.python(["config", folder + "/ck/latest.h5"]).stdout
        for expected in [#""noise": "gaussian:0.3""#, #""lr": 0.003"#, #""epochs": 1"#, #""batch_size": 256"#] {
            XCTAssertTrue(stored.contains(expected), "stored config lacks \(expected): \(stored)")
        }
    }

    /// Every error in one style, the argument parser's included, with the usage hint and exit status 64; counts
    /// of one are singular.
    func testOneErrorStyleAndSingularCounts() throws {
        let bad = try Harness.run(Harness.binary, ["train", "--bogus"])
        XCTAssertEqual(bad.status, 64, bad.description)
        XCTAssertTrue(bad.stderr.hasPrefix("aedist: error: Unknown option '--bogus'"), bad.stderr)
        XCTAssertTrue(bad.stderr.contains("See 'aedist train --help' for more information."), bad.stderr)
        let help = try Harness.run(Harness.binary, ["train", "--help"])
        XCTAssertEqual(help.status, 0)
        XCTAssertTrue(help.stdout.contains("conv:28x28x1/c32-p2-c32-p2/t32s2-t32s2-c1"), "the spec grammar in --help")
        let one = try Harness.run(Harness.binary, ["train", "--epochs", "1", "--checkpoint-dir", Harness.temporaryDirectory()])
        assertSucceeded(one)
        XCTAssertTrue(one.stdout.contains("done: 1 epoch, 16 steps"), one.stdout)
    }

    /// scripts/test's closing line counts test cases by outcome: skipped tests are not passed ones.
    func testTheTestSummaryCountsPassedFailedAndSkippedTests() throws {
        let log = Harness.temporaryDirectory() + "/xctest.log"
        try """
        Test Case 'A.a' passed (0.1 seconds)
        Test Case 'A.b' failed (0.2 seconds)
        Test Case 'A.c' skipped (0.0 seconds)
        Test Case 'A.d' passed (0.1 seconds)
        \t Executed 4 tests, with 1 test skipped and 3 failures (0 unexpected) in 0.4 (0.4) seconds
        """.write(toFile: log, atomically: true, encoding: .utf8)
        let outcome = try Harness.run("\(Harness.repositoryRoot)/scripts/test-summary", [log])
        XCTAssertEqual(outcome.stdout, "tests: 2 passed, 1 failed, 1 skipped\n")
    }
}
