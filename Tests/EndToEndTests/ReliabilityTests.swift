import Foundation
import XCTest

/// What makes a week of cluster time safe: damaged checkpoints are found and skipped, preemption checkpoints and
/// asks to be re-queued, and no failure leaves ranks waiting forever.
final class ReliabilityTests: XCTestCase {
    func trainThreeEpochs() throws -> String {
        let folder = Harness.temporaryDirectory()
        assertSucceeded(try Harness.aedist(ranks: 2, ["train", "--epochs", "3", "--checkpoint-dir", folder]))
        return folder
    }

    func testFlippedByteIsDetectedAndResumeFallsBackToTheNewestIntactCheckpoint() throws {
        let folder = try trainThreeEpochs()
        let latest = "\(folder)/ckpt-e0003-s0000048.h5"
        assertSucceeded(try Harness.aedist(ranks: nil, ["inspect", "--verify", latest]))
        assertSucceeded(try Harness.python(["flip", latest, "parameters/decoder.0/weight"]))
        let verify = try Harness.aedist(ranks: nil, ["inspect", "--verify", latest])
        XCTAssertEqual(verify.status, 1, "\(verify)")
        XCTAssertTrue(verify.stderr.contains("parameters/decoder.0/weight"), verify.stderr)
        XCTAssertTrue(verify.stderr.contains("Fletcher32"), verify.stderr)

        let resumed = try Harness.aedist(ranks: 2, ["train", "--epochs", "4", "--resume", "auto", "--checkpoint-dir", folder])
        assertSucceeded(resumed)
        XCTAssertTrue(resumed.stderr.contains("skipping damaged checkpoint \(latest)"), resumed.stderr)
        XCTAssertTrue(resumed.stdout.contains("resumed from \(folder)/ckpt-e0002-s0000032.h5"), resumed.stdout)
        XCTAssertEqual(try Harness.metrics(in: folder).map { $0["epoch"]! }, [1, 2, 3, 4])
    }

    func testTruncatedLatestIsSkipped() throws {
        let folder = try trainThreeEpochs()
        let latest = "\(folder)/ckpt-e0003-s0000048.h5"
        let handle = try XCTUnwrap(FileHandle(forWritingAtPath: latest))
        try handle.truncate(atOffset: 100_000)
        try handle.close()
        let verify = try Harness.aedist(ranks: nil, ["inspect", "--verify", latest])
        XCTAssertEqual(verify.status, 1, "\(verify)")
        XCTAssertTrue(verify.stderr.contains("truncated"), verify.stderr)
        let resumed = try Harness.aedist(ranks: 2, ["train", "--epochs", "3", "--resume", "auto", "--checkpoint-dir", folder])
        assertSucceeded(resumed)
        XCTAssertTrue(resumed.stdout.contains("resumed from \(folder)/ckpt-e0002-s0000032.h5"), resumed.stdout)
    }

    func testNoIntactCheckpointIsAnErrorNotAFreshStart() throws {
        let folder = try trainThreeEpochs()
        for file in try FileManager.default.contentsOfDirectory(atPath: folder) where file.hasPrefix("ckpt-") {
            try Data("garbage".utf8).write(to: URL(fileURLWithPath: "\(folder)/\(file)"))
        }
        let outcome = try Harness.aedist(ranks: 2, ["train", "--epochs", "4", "--resume", "auto", "--checkpoint-dir", folder], timeout: 60)
        XCTAssertNotEqual(outcome.status, 0, "\(outcome)")
        XCTAssertEqual(outcome.errorLines.count, 1, "\(outcome)")
        XCTAssertTrue(outcome.stderr.contains("no intact checkpoint"), outcome.stderr)
    }
}
