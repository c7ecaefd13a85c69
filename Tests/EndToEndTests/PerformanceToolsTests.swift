import Foundation
import XCTest

/// The tools that show where training time goes: the step-time breakdown, the Chrome-trace timeline, and the
/// heap-allocation count of a steady-state step.
final class PerformanceToolsTests: XCTestCase {
    func testTimelineHoldsEveryRanksStepPhasesInOrder() throws {
        let folder = Harness.temporaryDirectory()
        let timeline = folder + "/timeline.json"
        let outcome = try Harness.aedist(ranks: 2, ["train", "--epochs", "2", "--checkpoint-dir", folder + "/ck", "--timeline", timeline])
        assertSucceeded(outcome)
        XCTAssertTrue(outcome.stdout.contains("timeline: "), outcome.description)

        // The breakdown's shares cover the whole step.
        let breakdown = try XCTUnwrap(outcome.stdout.split(separator: "\n").first { $0.hasPrefix("step time ") }, outcome.description)
        let shares = breakdown.split(separator: ":").last!.split(separator: ",").map { Double($0.split(separator: " ").last!.dropLast())! }
        XCTAssertEqual(shares.count, 6, String(breakdown))
        XCTAssertEqual(shares.reduce(0, +), 100, accuracy: 0.5, String(breakdown))
        XCTAssertTrue(outcome.stdout.contains("time to first step: "), outcome.description)

        let json = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: timeline))) as! [String: Any]
        let events = (json["traceEvents"] as! [[String: Any]]).filter { $0["ph"] as? String == "X" && $0["cat"] as? String == "step" }
        let stepsPerEpoch = 4000 / 256 + 1
        for rank in 0..<2 {
            let mine = events.filter { $0["pid"] as? Int == rank }.sorted { ($0["ts"] as! Double) < ($1["ts"] as! Double) }
            for phase in ["data wait", "forward", "backward", "all-reduce", "optimizer", "other"] {
                XCTAssertEqual(mine.filter { $0["name"] as? String == phase }.count, 2 * stepsPerEpoch, "rank \(rank) \(phase)")
            }
            // One thread's phases follow one another: none starts before the previous one ended.
            for (earlier, later) in zip(mine, mine.dropFirst()) {
                let end = (earlier["ts"] as! Double) + (earlier["dur"] as! Double)
                XCTAssertLessThanOrEqual(end, (later["ts"] as! Double) + 0.01, "rank \(rank): \(earlier) overlaps \(later)")
            }
        }
    }

    func testATimelineThatCannotBeWrittenIsRefusedBeforeTraining() throws {
        let folder = Harness.temporaryDirectory()
        let outcome = try Harness.aedist(ranks: 2, ["train", "--epochs", "1", "--checkpoint-dir", folder + "/ck",
                                                    "--timeline", folder + "/missing/timeline.json"])
        XCTAssertNotEqual(outcome.status, 0, outcome.description)
        XCTAssertEqual(outcome.errorLines.count, 1, outcome.description)
        XCTAssertTrue(outcome.errorLines.first?.contains("--timeline \(folder)/missing/timeline.json") == true, outcome.description)
        XCTAssertFalse(outcome.stdout.contains("epoch 1/1"), outcome.description)
    }

    /// With the counter library preloaded, aedist counts the training thread's heap allocations in steady-state
    /// steps: none in aedist's own code. At two ranks Open MPI's MPI_Allreduce allocates inside the call (its
    /// algorithm's temporary buffers, not aedist's to change), which the report counts apart. One BLAS thread:
    /// OpenBLAS's threaded GEMM allocates its work queue on every call.
    func testSteadyStateStepsAllocateNothing() throws {
        let folder = Harness.temporaryDirectory()
        let counter = (Harness.binary as NSString).deletingLastPathComponent + "/libAEDistHeapCounter.so"
        XCTAssertTrue(FileManager.default.fileExists(atPath: counter), "build the package first: \(counter) is missing")
        for (ranks, model) in [(1, ["--model", "dense:784-64-32"]), (1, ["--model", "conv:28x28x1/c8-p2/c8-u2-c1", "--noise", "mask:0.2"]),
                               (1, ["--model", "dense:784-64-drop0.2-32:gelu", "--activation", "silu"]),
                               (1, ["--model", "conv:28x28x1/c8s2:linear-bn:relu/t8s2-bn-c1"]),
                               (2, ["--model", "dense:784-64-32"])] {
            let outcome = try Harness.run(Harness.mpirun, ["-n", String(ranks), "-x", "LD_PRELOAD=\(counter)", Harness.binary, "train",
                                                          "--epochs", "2", "--blas-threads", "1", "--drift-check-every", "0",
                                                          "--checkpoint-dir", folder + "/ck-\(ranks)-\(model[1].hashValue)"] + model)
            assertSucceeded(outcome)
            let line = try XCTUnwrap(outcome.stdout.split(separator: "\n").first { $0.hasPrefix("heap allocations per step") }, outcome.description)
            XCTAssertTrue(line.contains("outside the MPI all-reduce: 0.00 "), String(line))
            if ranks == 1 { XCTAssertTrue(line.contains("training thread: 0.00, "), String(line)) }
        }
    }

    /// Streaming a contiguous float32 dataset reads rows straight from the file (memory-mapped at libhdf5's offset):
    /// it must train exactly as the same data held in memory does, at any rank count.
    func testStreamingAContiguousFileTrainsExactlyAsInMemory() throws {
        let folder = Harness.temporaryDirectory()
        let data = folder + "/contiguous.h5"
        let script = """
        import h5py, numpy as np
        rng = np.random.default_rng(5)
        with h5py.File("\(data)", "w") as f:
            f["train/x"] = rng.random((1000, 784), dtype=np.float32)
            f["val/x"] = rng.random((200, 784), dtype=np.float32)
            assert f["train/x"].id.get_offset() is not None  # contiguous: the direct path is the one tested
        """
        let made = try Harness.pythonScript(script)
        XCTAssertEqual(made.status, 0, made.description)
        var lines: [String] = []
        for cache in ["never", "always"] {
            let outcome = try Harness.aedist(ranks: 2, ["train", "--data", data, "--cache", cache, "--epochs", "2", "--batch-size", "64",
                                                        "--checkpoint-dir", folder + "/ck-" + cache])
            assertSucceeded(outcome)
            XCTAssertTrue(outcome.stdout.contains(cache == "never" ? "streamed" : "in memory"), outcome.description)
            lines.append(contentsOf: outcome.stdout.split(separator: "\n").filter { $0.hasPrefix("replicas identical") }.map(String.init))
        }
        XCTAssertEqual(lines.count, 2)
        XCTAssertEqual(lines.first, lines.last, "streamed and in-memory training should end with the same parameters")
    }
}
