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

/// Preemption: a scheduler's signal or the time limit stops every rank at the same step boundary with a checkpoint
/// and exit status 75; `--resume auto` continues as if nothing happened.
final class PreemptionTests: XCTestCase {
    /// Small batches make enough steps to interrupt; the sample order is the same whatever happens.
    let slowRun = ["train", "--batch-size", "8", "--epochs", "4"]

    func startAndWaitForFirstCheckpoint(_ folder: String) throws -> (Process, String, String, Date) {
        let started = Date()
        let (process, out, err) = try Harness.start(Harness.mpirun, ["-n", "2", Harness.binary] + slowRun + ["--checkpoint-dir", folder])
        while Harness.resolvedLink("\(folder)/latest.h5") == nil && process.isRunning && Date().timeIntervalSince(started) < 60 {
            Thread.sleep(forTimeInterval: 0.02)
        }
        return (process, out, err, started)
    }

    func testSIGUSR1ToMpirunCheckpointsAndTheResumedRunEqualsAnUninterruptedOne() throws {
        let straight = Harness.temporaryDirectory(), interrupted = Harness.temporaryDirectory()
        assertSucceeded(try Harness.aedist(ranks: 2, slowRun + ["--checkpoint-dir", straight]))

        let (process, out, err, started) = try startAndWaitForFirstCheckpoint(interrupted)
        XCTAssertTrue(process.isRunning, "finished before it could be interrupted")
        kill(process.processIdentifier, SIGUSR1)
        let stopped = Harness.finish(process, out, err, started: started, timeout: 60)
        XCTAssertEqual(stopped.status, 75, "\(stopped)")
        XCTAssertTrue(stopped.stdout.contains("stopped early at step"), stopped.stdout)
        XCTAssertTrue(stopped.stdout.contains("received SIGUSR1"), stopped.stdout)
        XCTAssertEqual(stopped.errorLines, [], "\(stopped)")

        let resumed = try Harness.aedist(ranks: 2, slowRun + ["--checkpoint-dir", interrupted, "--resume", "auto"])
        assertSucceeded(resumed)
        let comparison = try Harness.python(["compare", "\(straight)/latest.h5", "\(interrupted)/latest.h5"])
        XCTAssertTrue(comparison.stdout.contains("bit_identical True"), comparison.stdout)
        // The interrupted epoch's metrics row covers the whole epoch, not just the part after the resume.
        let a = try Harness.metrics(in: straight), b = try Harness.metrics(in: interrupted)
        XCTAssertEqual(a.map { $0["epoch"]! }, b.map { $0["epoch"]! })
        for (x, y) in zip(a, b) {
            XCTAssertEqual(x["train_loss"]!, y["train_loss"]!, accuracy: 1e-6 * x["train_loss"]!, "epoch \(x["epoch"]!)")
        }
    }

    func testResumingMidEpochWithAnotherBatchSizeIsRefused() throws {
        let folder = Harness.temporaryDirectory()
        assertSucceeded(try Harness.aedist(ranks: 2, ["train", "--epochs", "1", "--batch-size", "64", "--checkpoint-every", "40",
                                                      "--keep", "5", "--checkpoint-dir", folder]))
        let middle = "\(folder)/ckpt-e0000-s0000040.h5"
        // Without --batch-size the resume would continue with the checkpoint's 64; asked for another, it refuses.
        let outcome = try Harness.aedist(ranks: 2, ["train", "--epochs", "2", "--resume", middle, "--batch-size", "128",
                                                    "--checkpoint-dir", folder], timeout: 60)
        XCTAssertEqual(outcome.status, 1, "\(outcome)")
        XCTAssertEqual(outcome.errorLines.count, 1, "\(outcome)")
        XCTAssertTrue(outcome.stderr.contains("stopped in the middle of epoch 1"), outcome.stderr)
        XCTAssertTrue(outcome.stderr.contains("batch 64"), outcome.stderr)
        XCTAssertTrue(FileManager.default.fileExists(atPath: middle), "a refused resume must not move anything")
    }

    func testResumingFromAnOlderCheckpointMovesTheNewerOnesAside() throws {
        let folder = Harness.temporaryDirectory()
        assertSucceeded(try Harness.aedist(ranks: 2, ["train", "--epochs", "3", "--checkpoint-dir", folder]))
        let older = "\(folder)/ckpt-e0001-s0000016.h5"
        let resumed = try Harness.aedist(ranks: 2, ["train", "--epochs", "2", "--resume", older, "--checkpoint-dir", folder])
        assertSucceeded(resumed)
        XCTAssertTrue(resumed.stdout.contains("moved the checkpoints already in \(folder) to \(folder)/earlier-run-"), resumed.stdout)
        let archive = try XCTUnwrap(try FileManager.default.contentsOfDirectory(atPath: folder).first { $0.hasPrefix("earlier-run-") })
        XCTAssertEqual(Set(try FileManager.default.contentsOfDirectory(atPath: "\(folder)/\(archive)").filter { $0.hasPrefix("ckpt-") }),
                       ["ckpt-e0001-s0000016.h5", "ckpt-e0002-s0000032.h5", "ckpt-e0003-s0000048.h5"])
        XCTAssertEqual(try Harness.metrics(in: folder).map { $0["epoch"]! }, [1, 2])
        XCTAssertEqual(Harness.resolvedLink("\(folder)/latest.h5"), "ckpt-e0002-s0000032.h5")
    }

    /// srun and slurmstepd signal the ranks themselves, not a launcher.
    func testSIGTERMToEveryRankCheckpoints() throws {
        let folder = Harness.temporaryDirectory()
        let (process, out, err, started) = try startAndWaitForFirstCheckpoint(folder)
        let ranks = try Harness.run("/usr/bin/pgrep", ["-f", "\(Harness.binary) train .*--checkpoint-dir \(folder)"])
        let pids = ranks.stdout.split(separator: "\n").compactMap { Int32($0) }.filter { $0 != process.processIdentifier }
        XCTAssertEqual(pids.count, 2, ranks.stdout)
        pids.forEach { kill($0, SIGTERM) }
        let stopped = Harness.finish(process, out, err, started: started, timeout: 60)
        XCTAssertEqual(stopped.status, 75, "\(stopped)")
        XCTAssertTrue(stopped.stdout.contains("received SIGTERM"), stopped.stdout)
        assertSucceeded(try Harness.aedist(ranks: nil, ["inspect", "--verify", "\(folder)/latest.h5"]))
    }

    func testTimeLimitStopsInTimeWithACheckpoint() throws {
        let folder = Harness.temporaryDirectory()
        let outcome = try Harness.aedist(ranks: 2, ["train", "--batch-size", "8", "--epochs", "1000", "--time-limit", "6",
                                                    "--checkpoint-dir", folder], timeout: 60)
        XCTAssertEqual(outcome.status, 75, "\(outcome)")
        XCTAssertLessThan(outcome.seconds, 6.5, "overran its time limit")
        XCTAssertTrue(outcome.stdout.contains("--time-limit of 0:00:06 is near"), outcome.stdout)
        assertSucceeded(try Harness.aedist(ranks: nil, ["inspect", "--verify", "\(folder)/latest.h5"]))
        let resumed = try Harness.aedist(ranks: 2, ["train", "--batch-size", "8", "--epochs", "1000", "--time-limit", "5",
                                                    "--resume", "auto", "--checkpoint-dir", folder], timeout: 60)
        XCTAssertEqual(resumed.status, 75, "\(resumed)")
        XCTAssertTrue(resumed.stdout.contains("resumed from"), resumed.stdout)
    }

    func testBadTimeLimitIsRefused() throws {
        let outcome = try Harness.aedist(ranks: nil, ["train", "--time-limit", "soon"])
        XCTAssertEqual(outcome.status, 64, "\(outcome)")
        XCTAssertTrue(outcome.stderr.contains("--time-limit 'soon' is not a duration"), outcome.stderr)
    }
}

/// The batch-job templates, run by bash as the scheduler would, with stand-ins for the scheduler's commands.
final class BatchTemplateTests: XCTestCase {
    func testSlurmTemplatePassesSIGUSR1OnAndRequeuesTheJob() throws {
        let folder = Harness.temporaryDirectory()
        let bin = "\(folder)/bin"
        try FileManager.default.createDirectory(atPath: bin, withIntermediateDirectories: true)
        let log = "\(folder)/scheduler.log"
        for (name, body) in [("squeue", "echo 1:00:00"), ("scontrol", "echo \"scontrol $*\" >> \(log)")] {
            try "#!/bin/sh\n\(body)\n".write(toFile: "\(bin)/\(name)", atomically: true, encoding: .utf8)
            chmod("\(bin)/\(name)", 0o755)
        }
        let checkpoints = "\(folder)/checkpoints"
        let script = "export PATH=\(bin):$PATH SLURM_JOB_ID=4242 SLURM_JOB_NAME=test AEDIST=\(Harness.binary) MPI_GRACE_SECONDS=1 "
            + "ARGS='--batch-size 8 --epochs 1000' CHECKPOINTS=\(checkpoints); exec bash \(Harness.repositoryRoot)/scripts/slurm/aedist.sbatch"
        let started = Date()
        let (process, out, err) = try Harness.start("/bin/bash", ["-c", script])
        while Harness.resolvedLink("\(checkpoints)/latest.h5") == nil && process.isRunning && Date().timeIntervalSince(started) < 60 {
            Thread.sleep(forTimeInterval: 0.02)
        }
        kill(process.processIdentifier, SIGUSR1)
        let outcome = Harness.finish(process, out, err, started: started, timeout: 60)
        XCTAssertEqual(outcome.status, 75, "\(outcome)")
        XCTAssertTrue(outcome.stdout.contains("received SIGUSR1"), outcome.stdout)
        XCTAssertEqual(try String(contentsOfFile: log, encoding: .utf8), "scontrol requeue 4242\n")
    }
}

extension BatchTemplateTests {
    func testPBSTemplateStopsOnItsWalltimeAndSubmitsTheContinuation() throws {
        let folder = Harness.temporaryDirectory()
        let bin = "\(folder)/bin"
        try FileManager.default.createDirectory(atPath: bin, withIntermediateDirectories: true)
        let log = "\(folder)/scheduler.log"
        try "#!/bin/sh\necho \"qsub $*\" >> \(log)\n".write(toFile: "\(bin)/qsub", atomically: true, encoding: .utf8)
        chmod("\(bin)/qsub", 0o755)
        let checkpoints = "\(folder)/checkpoints"
        let script = "export PATH=\(bin):$PATH PBS_O_WORKDIR=\(Harness.repositoryRoot) AEDIST=\(Harness.binary) MPI_GRACE_SECONDS=1 "
            + "ARGS='--batch-size 8 --epochs 1000' CHECKPOINTS=\(checkpoints) WALLTIME=0:00:06; "
            + "exec bash \(Harness.repositoryRoot)/scripts/pbs/aedist.pbs"
        let outcome = try Harness.run("/bin/bash", ["-c", script], timeout: 60)
        XCTAssertEqual(outcome.status, 75, "\(outcome)")
        XCTAssertTrue(outcome.stdout.contains("--time-limit of 0:00:06 is near"), outcome.stdout)
        let submitted = try String(contentsOfFile: log, encoding: .utf8)
        XCTAssertTrue(submitted.hasPrefix("qsub -v AEDIST,ARGS,CHECKPOINTS,WALLTIME,JOB_SCRIPT \(Harness.repositoryRoot)/scripts/pbs/aedist.pbs"), submitted)
        assertSucceeded(try Harness.aedist(ranks: nil, ["inspect", "--verify", "\(checkpoints)/latest.h5"]))
    }
}

/// A rank that stops answering must not leave the others waiting forever.
final class WatchdogTests: XCTestCase {
    func testStoppedRankIsNamedAndTheJobEnds() throws {
        let folder = Harness.temporaryDirectory()
        let started = Date()
        let (process, out, err) = try Harness.start(Harness.mpirun, ["-n", "3", Harness.binary, "train", "--epochs", "100000",
                                                                    "--collective-timeout", "3", "--checkpoint-dir", folder])
        while Harness.resolvedLink("\(folder)/latest.h5") == nil && process.isRunning && Date().timeIntervalSince(started) < 60 {
            Thread.sleep(forTimeInterval: 0.02)
        }
        let ranks = try Harness.run("/usr/bin/pgrep", ["-f", "\(Harness.binary) train .*--checkpoint-dir \(folder)"])
        let pids = ranks.stdout.split(separator: "\n").compactMap { Int32($0) }.filter { $0 != process.processIdentifier }
        XCTAssertEqual(pids.count, 3, ranks.stdout)
        let stoppedAt = Date()
        kill(pids.last!, SIGSTOP)
        let outcome = Harness.finish(process, out, err, started: started, timeout: 60)
        defer { pids.forEach { kill($0, SIGKILL) } }
        XCTAssertFalse(outcome.timedOut, "the job hung on a stopped rank\n\(outcome)")
        XCTAssertNotEqual(outcome.status, 0, "\(outcome)")
        XCTAssertLessThan(Date().timeIntervalSince(stoppedAt), 20, "took too long to notice")
        XCTAssertEqual(outcome.errorLines.count, 1, "\(outcome)")
        let message = outcome.errorLines.first ?? ""
        XCTAssertTrue(message.contains("did not complete within 3 s"), message)
        XCTAssertTrue(message.contains("of step") || message.contains("after step"), message)
        XCTAssertTrue(message.contains("missing: 2") || message.contains("every rank arrived") || message.contains("an MPI_"), message)
        assertSucceeded(try Harness.aedist(ranks: nil, ["inspect", "--verify", "\(folder)/latest.h5"]))
    }
}

/// Faults injected on one rank (AEDIST_FAULT, passed to the ranks with mpirun -x).
final class FaultTests: XCTestCase {
    func runWithFault(_ fault: String, _ arguments: [String]) throws -> Harness.Outcome {
        var environment = Harness.environment
        environment["AEDIST_FAULT"] = fault
        let process = Process()
        process.executableURL = URL(fileURLWithPath: Harness.mpirun)
        process.arguments = ["-x", "AEDIST_FAULT", "-n", "3", Harness.binary] + arguments
        process.environment = environment
        let folder = Harness.temporaryDirectory()
        FileManager.default.createFile(atPath: "\(folder)/out", contents: nil)
        FileManager.default.createFile(atPath: "\(folder)/err", contents: nil)
        process.standardOutput = FileHandle(forWritingAtPath: "\(folder)/out")
        process.standardError = FileHandle(forWritingAtPath: "\(folder)/err")
        let started = Date()
        try process.run()
        return Harness.finish(process, "\(folder)/out", "\(folder)/err", started: started, timeout: 60)
    }

    func testAnErrorOnOneRankStopsEveryRankWithThatRanksMessage() throws {
        let folder = Harness.temporaryDirectory()
        let outcome = try runWithFault("error@1:20", ["train", "--epochs", "3", "--checkpoint-dir", folder])
        XCTAssertFalse(outcome.timedOut, "\(outcome)")
        XCTAssertEqual(outcome.status, 1, "\(outcome)")
        XCTAssertEqual(outcome.errorLines, ["aedist: error: rank 1: injected fault: a data error on rank 1 at step 20"], "\(outcome)")
        XCTAssertEqual(Harness.resolvedLink("\(folder)/latest.h5"), "ckpt-e0001-s0000016.h5")
    }

    func testReplicaDriftIsCaughtAtTheNextCheck() throws {
        let folder = Harness.temporaryDirectory()
        let outcome = try runWithFault("drift@2:20", ["train", "--epochs", "3", "--drift-check-every", "5", "--checkpoint-dir", folder])
        XCTAssertEqual(outcome.status, 1, "\(outcome)")
        XCTAssertEqual(outcome.errorLines.count, 1, "\(outcome)")
        XCTAssertTrue(outcome.stderr.contains("replica drift at step 20: the parameters of rank 2 differ"), outcome.stderr)
    }

    func testACrashedRankEndsTheJob() throws {
        let folder = Harness.temporaryDirectory()
        let outcome = try runWithFault("crash@1:20", ["train", "--epochs", "3", "--checkpoint-dir", folder])
        XCTAssertFalse(outcome.timedOut, "\(outcome)")
        XCTAssertNotEqual(outcome.status, 0, "\(outcome)")
        assertSucceeded(try Harness.aedist(ranks: nil, ["inspect", "--verify", "\(folder)/latest.h5"]))
    }
}

/// Files aedist did not write, or that were damaged on purpose, are refused with a message before any large
/// allocation; nothing in a checkpoint is ever executed.
final class UntrustedFileTests: XCTestCase {
    func tampered(_ kind: String) throws -> String {
        let folder = Harness.temporaryDirectory()
        assertSucceeded(try Harness.aedist(ranks: nil, ["train", "--epochs", "1", "--checkpoint-dir", folder]))
        let path = "\(folder)/latest.h5"
        assertSucceeded(try Harness.python(["tamper", kind, path]))
        return path
    }

    func expectRefusal(_ path: String, mentioning fragment: String, file: StaticString = #filePath, line: UInt = #line) throws {
        for arguments in [["inspect", "--verify", path], ["train", "--resume", path, "--checkpoint-dir", Harness.temporaryDirectory()]] {
            let outcome = try Harness.aedist(ranks: nil, arguments, timeout: 30)
            XCTAssertEqual(outcome.status, 1, "\(arguments)\n\(outcome)", file: file, line: line)
            XCTAssertEqual(outcome.errorLines.count, 1, "\(outcome)", file: file, line: line)
            XCTAssertTrue(outcome.stderr.contains(fragment), "expected '\(fragment)'\n\(outcome)", file: file, line: line)
            XCTAssertLessThan(outcome.seconds, 10, file: file, line: line)
        }
    }

    func testTensorDeclaringTenBillionValues() throws {
        let path = try tampered("huge-tensor")
        try expectRefusal(path, mentioning: "100000×100000")
        let inspect = try Harness.aedist(ranks: nil, ["inspect", path], timeout: 30)
        XCTAssertEqual(inspect.status, 1, "\(inspect)")
        XCTAssertTrue(inspect.stderr.contains("refusing to read it"), inspect.stderr)
    }

    func testConfigDescribingAnAbsurdModel() throws {
        try expectRefusal(try tampered("huge-model"), mentioning: "more than 4294967296 parameters (16 GiB)")
    }

    func testStringsWhereFloatsBelong() throws {
        try expectRefusal(try tampered("string-tensor"), mentioning: "parameters/encoder.0/bias holds string values")
    }

    func testMissingOptimizerGroup() throws {
        try expectRefusal(try tampered("missing-optimizer"), mentioning: "incomplete aedist checkpoint: missing optimizer")
    }
}

/// A full disk during a checkpoint stops training with a message and leaves the earlier checkpoints intact.
final class DiskFullTests: XCTestCase {
    func testFullDiskDuringACheckpointKeepsTheEarlierOne() throws {
        let folder = Harness.temporaryDirectory() + "/small-disk"
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        // Room for one checkpoint of this model (≈ 670 KiB with Adam's state) and not for a second.
        let mount = try Harness.run("/bin/mount", ["-t", "tmpfs", "-o", "size=1000k", "tmpfs", folder])
        guard mount.status == 0 else {
            throw XCTSkip("cannot mount a small tmpfs here (needs root): \(mount.stderr)")
        }
        defer { _ = try? Harness.run("/bin/umount", [folder]) }
        let outcome = try Harness.aedist(ranks: 2, ["train", "--epochs", "3", "--keep", "5", "--checkpoint-dir", folder], timeout: 60)
        XCTAssertFalse(outcome.timedOut, "\(outcome)")
        XCTAssertEqual(outcome.status, 1, "\(outcome)")
        XCTAssertEqual(outcome.errorLines.count, 1, "\(outcome)")
        let message = outcome.errorLines.first ?? ""
        XCTAssertTrue(message.contains("cannot write checkpoint \(folder)/ckpt-e0002-s0000032.h5"), message)
        XCTAssertTrue(message.contains("earlier checkpoints are intact"), message)
        XCTAssertEqual(Harness.resolvedLink("\(folder)/latest.h5"), "ckpt-e0001-s0000016.h5")
        assertSucceeded(try Harness.aedist(ranks: nil, ["inspect", "--verify", "\(folder)/latest.h5"]))
        let leftovers = try FileManager.default.contentsOfDirectory(atPath: folder).filter { $0.hasPrefix(".") }
        XCTAssertEqual(leftovers, [], "a partial temporary file was left on the full disk")
    }
}
