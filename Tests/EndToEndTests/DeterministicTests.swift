import Foundation
import XCTest

/// --deterministic: the same bits whatever the number of ranks, and across stop, resume and a change of rank count.
final class DeterministicTests: XCTestCase {
    func checksum(_ outcome: Harness.Outcome) -> String? {
        outcome.stdout.split(separator: "\n").first { $0.hasPrefix("replicas identical") }?
            .split(separator: " ").dropFirst(4).first.map(String.init)
    }

    func testParametersAreBitIdenticalAtOneTwoThreeFourAndEightRanks() throws {
        var checksums: [Int: String] = [:]
        var folders: [Int: String] = [:]
        for ranks in [1, 2, 3, 4, 8] {
            let folder = Harness.temporaryDirectory()
            let outcome = try Harness.aedist(ranks: ranks, ["train", "--deterministic", "--epochs", "2", "--checkpoint-dir", folder])
            assertSucceeded(outcome)
            checksums[ranks] = checksum(outcome)
            folders[ranks] = folder
        }
        XCTAssertNotNil(checksums[1])
        XCTAssertEqual(Set(checksums.values).count, 1, "checksums differ by rank count: \(checksums)")
        let comparison = try Harness.python(["compare", "\(folders[1]!)/latest.h5", "\(folders[8]!)/latest.h5"])
        XCTAssertTrue(comparison.stdout.contains("max_abs_diff 0 bit_identical True"), comparison.stdout)
    }

    /// BatchNorm's statistics under real mpirun: parameters and running statistics the same bits at 1 and 3 ranks.
    func testBatchNormIsBitIdenticalAtOneAndThreeRanks() throws {
        var folders: [String] = []
        for ranks in [1, 3] {
            let folder = Harness.temporaryDirectory()
            assertSucceeded(try Harness.aedist(ranks: ranks, ["train", "--deterministic", "--epochs", "1", "--checkpoint-dir", folder,
                                                              "--model", "conv:28x28x1/c8s2:linear-bn:relu/t8s2-bn-c1"]))
            folders.append(folder)
        }
        let comparison = try Harness.python(["compare", "\(folders[0])/latest.h5", "\(folders[1])/latest.h5"])
        XCTAssertTrue(comparison.stdout.contains("max_abs_diff 0 bit_identical True"), comparison.stdout)
        XCTAssertTrue(try Harness.python(["check", "\(folders[0])/latest.h5"]).stdout.hasPrefix("ok"))
    }

    /// Written by 8 ranks in the middle of an epoch, resumed by 2: the same bits as one rank running straight through.
    func testElasticResumeAcrossRankCountsIsBitIdentical() throws {
        let straight = Harness.temporaryDirectory(), elastic = Harness.temporaryDirectory()
        assertSucceeded(try Harness.aedist(ranks: 1, ["train", "--deterministic", "--epochs", "3", "--checkpoint-dir", straight]))
        assertSucceeded(try Harness.aedist(ranks: 8, ["train", "--deterministic", "--epochs", "1", "--checkpoint-every", "10",
                                                      "--keep", "10", "--checkpoint-dir", elastic]))
        let middle = "\(elastic)/ckpt-e0000-s0000010.h5"
        let resumed = try Harness.aedist(ranks: 2, ["train", "--deterministic", "--epochs", "3", "--resume", middle,
                                                    "--checkpoint-dir", elastic])
        assertSucceeded(resumed)
        XCTAssertTrue(resumed.stdout.contains("step 10, 2560 samples seen"), resumed.stdout)
        let comparison = try Harness.python(["compare", "\(straight)/latest.h5", "\(elastic)/latest.h5"])
        XCTAssertTrue(comparison.stdout.contains("bit_identical True"), comparison.stdout)

        // And the other way: written by 2 ranks at an epoch's end, continued by 8.
        let growing = Harness.temporaryDirectory()
        assertSucceeded(try Harness.aedist(ranks: 2, ["train", "--deterministic", "--epochs", "1", "--checkpoint-dir", growing]))
        assertSucceeded(try Harness.aedist(ranks: 8, ["train", "--deterministic", "--epochs", "3", "--resume", "auto",
                                                      "--checkpoint-dir", growing]))
        let grown = try Harness.python(["compare", "\(straight)/latest.h5", "\(growing)/latest.h5"])
        XCTAssertTrue(grown.stdout.contains("bit_identical True"), grown.stdout)
    }
}
