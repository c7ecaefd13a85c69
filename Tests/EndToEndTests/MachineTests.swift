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
