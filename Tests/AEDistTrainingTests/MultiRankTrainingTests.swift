import AEDistCore
import AEDistIO
import AEDistTraining
import Foundation
import XCTest

/// The trainer at several ranks inside one process (`InProcessGroup`): what data parallelism promises, checked in
/// seconds. What needs real processes (the watchdog, signals, a killed rank, two hosts) stays in EndToEndTests.
final class MultiRankTrainingTests: XCTestCase {
    /// The ranks are threads of one process, each opening the data with libhdf5.
    override func setUpWithError() throws {
        try XCTSkipUnless(HDF5File.libraryIsThreadSafe, "this libhdf5 is not built thread-safe: in-process ranks cannot share it")
    }

    func metrics(_ folder: String) throws -> [EpochMetrics] { try Checkpoint.read(from: folder + "/latest.h5").metrics }

    /// The global batch, not the number of ranks, decides the sample order and the step: 1, 2, 3 and 4 ranks follow
    /// the same loss curve up to float rounding.
    func testTheLossCurveDoesNotDependOnTheNumberOfRanks() throws {
        try checkTheLossCurveDoesNotDependOnTheNumberOfRanks(spec: "dense:16-8-4")
    }

    /// Dropout masks are keyed per sample, not per rank.
    func testWithDropoutTheLossCurveDoesNotDependOnTheNumberOfRanks() throws {
        try checkTheLossCurveDoesNotDependOnTheNumberOfRanks(spec: "dense:16-8-drop0.3-4")
    }

    /// BatchNorm's statistics are the global batch's (SyncBatchNorm): the same curve at any number of ranks.
    func testWithBatchNormTheLossCurveDoesNotDependOnTheNumberOfRanks() throws {
        try checkTheLossCurveDoesNotDependOnTheNumberOfRanks(spec: "dense:16-8-bn-4")
    }

    func checkTheLossCurveDoesNotDependOnTheNumberOfRanks(spec: String) throws {
        let data = try makeData()
        var curves: [Int: [EpochMetrics]] = [:]
        for ranks in [1, 2, 3, 4] {
            let folder = temporaryFolder()
            var config = smallConfig(data: data, epochs: 4, folder: folder)
            config.model.spec = spec
            let outcomes = trainOnRanks(ranks, config)
            XCTAssertEqual(outcomes.compactMap(\.error), [], "\(ranks) ranks")
            XCTAssertEqual(Set(outcomes.compactMap { $0.summary?.parameterChecksum }).count, 1, "every replica ends the same at \(ranks) ranks")
            curves[ranks] = try metrics(folder)
        }
        for ranks in [2, 3, 4] {
            for (one, many) in zip(curves[1]!, curves[ranks]!) {
                XCTAssertEqual(many.globalStep, one.globalStep)
                XCTAssertEqual(many.trainLoss, one.trainLoss, accuracy: 1e-5 * one.trainLoss, "epoch \(one.epoch) at \(ranks) ranks")
                XCTAssertEqual(many.valLoss, one.valLoss, accuracy: 1e-5 * one.valLoss, "epoch \(one.epoch) at \(ranks) ranks")
            }
        }
        XCTAssertLessThan(curves[1]!.last!.valLoss, curves[1]!.first!.valLoss, "it learns")
    }

    /// --deterministic: the same bits at 1, 3 and 8 ranks (exact fixed-point sums of fixed micro-batches).
    func testDeterministicModeGivesTheSameBitsAtAnyNumberOfRanks() throws {
        let data = try makeData()
        var checksums: [Int: Set<UInt64>] = [:]
        for ranks in [1, 3, 8] {
            var config = smallConfig(data: data, epochs: 2, folder: temporaryFolder())
            config.model.spec = "dense:16-8-bn-drop0.2-4"
            config.schedule.deterministic = true
            config.schedule.microBatch = 4
            let outcomes = trainOnRanks(ranks, config)
            XCTAssertEqual(outcomes.compactMap(\.error), [], "\(ranks) ranks")
            checksums[ranks] = Set(outcomes.compactMap { $0.summary?.parameterChecksum })
        }
        XCTAssertEqual(checksums[1]!.count, 1)
        XCTAssertEqual(checksums[3], checksums[1], "3 ranks")
        XCTAssertEqual(checksums[8], checksums[1], "8 ranks")
    }

    /// A data error on rank 2 alone: every rank stops at that step with rank 2's message, none is left waiting
    /// (with BatchNorm too, whose statistics are collectives inside the forward and backward passes).
    func testAFailureOnOneRankIsAgreedByAll() throws {
        for spec in ["dense:16-8-4", "dense:16-8-bn-4"] {
            var config = smallConfig(data: try makeData(), epochs: 3, folder: temporaryFolder())
            config.model.spec = spec
            let outcomes = trainOnRanks(4, config) { _ in SessionOptions(fault: FaultInjection(kind: .error, rank: 2, step: 5)) }
            XCTAssertEqual(outcomes.compactMap(\.summary).count, 0, spec)
            XCTAssertEqual(Set(outcomes.compactMap(\.error)), ["rank 2: injected fault: a data error on rank 2 at step 5"], spec)
            XCTAssertFalse(FileManager.default.fileExists(atPath: config.run.checkpointDir + "/latest.h5"), "\(spec): no epoch ended")
        }
        let folder = temporaryFolder()
        let outcomes = trainOnRanks(4, smallConfig(data: try makeData(), epochs: 3, folder: folder)) { _ in
            SessionOptions(fault: FaultInjection(kind: .error, rank: 2, step: 5))
        }
        XCTAssertEqual(outcomes.compactMap(\.summary).count, 0)
        XCTAssertEqual(Set(outcomes.compactMap(\.error)), ["rank 2: injected fault: a data error on rank 2 at step 5"])
        // An epoch has 6 steps: none ended before the failure, so no checkpoint was written.
        XCTAssertFalse(FileManager.default.fileExists(atPath: folder + "/latest.h5"))
    }

    /// BatchNorm in deterministic mode: its statistics are summed exactly too, so parameters and running statistics
    /// are the same bits at 1 and 3 ranks and after a mid-epoch stop resumed at 2 ranks.
    func testDeterministicBatchNormIsBitIdenticalAcrossRanksAndResume() throws {
        let data = try makeData()
        func config(_ folder: String) -> TrainingConfig {
            var config = smallConfig(data: data, epochs: 3, folder: folder)
            config.model.spec = "dense:16-8-bn-4"
            config.schedule.deterministic = true
            config.schedule.microBatch = 4
            return config
        }
        func finalState(_ folder: String) throws -> [UInt64] {
            let checkpoint = try Checkpoint.read(from: folder + "/latest.h5")
            XCTAssertEqual(checkpoint.bufferLayout.tensors.count, 4)
            return [checkpoint.parameters.bitChecksum, checkpoint.buffers.bitChecksum]
        }
        let one = temporaryFolder(), three = temporaryFolder(), resumed = temporaryFolder()
        XCTAssertEqual(trainOnRanks(1, config(one)).compactMap(\.error), [])
        XCTAssertEqual(trainOnRanks(3, config(three)).compactMap(\.error), [])
        let stopped = trainOnRanks(3, config(resumed)) { rank in SessionOptions(timeLimit: rank == 0 ? 0.5 : nil) }
        XCTAssertEqual(stopped.compactMap { $0.summary?.globalStep }, [1, 1, 1], "stopped mid-epoch")
        XCTAssertEqual(trainOnRanks(2, config(resumed)) { _ in SessionOptions(resume: .auto) }.compactMap(\.error), [])
        XCTAssertEqual(try finalState(three), try finalState(one))
        XCTAssertEqual(try finalState(resumed), try finalState(one))
    }

    /// One rank asks to stop (its time limit is reached): all ranks stop after the same step, with one checkpoint.
    func testAStopRequestOnOneRankStopsEveryRankAtTheSameStep() throws {
        let folder = temporaryFolder()
        let outcomes = trainOnRanks(3, smallConfig(data: try makeData(), epochs: 3, folder: folder)) { rank in
            // The margin (twice the slowest step, plus a second) is larger than this budget from the first step on.
            SessionOptions(timeLimit: rank == 1 ? 0.5 : nil)
        }
        XCTAssertEqual(outcomes.compactMap(\.error), [])
        let summaries = outcomes.compactMap(\.summary)
        XCTAssertEqual(summaries.count, 3)
        XCTAssertEqual(Set(summaries.map(\.globalStep)), [1], "every rank stopped after the first step")
        XCTAssertEqual(Set(summaries.compactMap(\.stopReason)).count, 1, "one reason, on every rank: \(summaries.map(\.stopReason))")
        XCTAssertEqual(try Checkpoint.read(from: folder + "/latest.h5").progress.globalStep, 1)
    }

    /// A replica whose parameters drift from the others (a flipped bit, say) stops the run at the next check.
    func testDriftOfOneReplicaIsDetected() throws {
        var config = smallConfig(data: try makeData(), epochs: 2, folder: temporaryFolder())
        config.run.driftCheckEvery = 1
        let outcomes = trainOnRanks(3, config) { _ in SessionOptions(fault: FaultInjection(kind: .drift, rank: 1, step: 3)) }
        let errors = Set(outcomes.compactMap(\.error))
        XCTAssertEqual(errors.count, 1, "\(errors)")
        XCTAssertTrue(errors.first?.hasPrefix("replica drift at step 3: the parameters of rank 1 differ from rank 0's") == true, "\(errors)")
    }
}

/// The in-process communicator itself: the same contract as Open MPI's.
final class InProcessCommunicatorTests: XCTestCase {
    func testCollectivesCombineEveryRanksValues() throws {
        let results = InProcessGroup.run(ranks: 3) { world -> [Double] in
            var floats: [Float] = [Float(world.rank), 1]
            try floats.withUnsafeMutableBufferPointer { try world.allReduceSum($0) }
            var maxima = [Double(world.rank) * 2]
            try world.allReduceMax(&maxima)
            var minima: [Int64] = [Int64(10 - world.rank)]
            try minima.withUnsafeMutableBufferPointer { try world.allReduceMin($0) }
            let text = try world.broadcast(world.rank == 2 ? "from two" : "", root: 2)
            let gathered = try world.allGather(UInt64(world.rank * 10))
            XCTAssertEqual(text, "from two")
            XCTAssertEqual(gathered, [0, 10, 20])
            return [Double(floats[0]), Double(floats[1]), maxima[0], Double(minima[0])]
        }
        for result in results { XCTAssertEqual(try result.get(), [3, 3, 4, 8]) }
    }

    /// A rank that never arrives makes the others throw, not hang.
    func testAMissingRankEndsTheCollectiveWithAnError() {
        let results = InProcessGroup.run(ranks: 2, timeout: 0.5) { world -> Int in
            if world.rank == 0 { try world.agreeOnFailure(nil) }
            return world.rank
        }
        XCTAssertThrowsError(try results[0].get()) { XCTAssertTrue("\($0)".contains("not every rank reached"), "\($0)") }
        XCTAssertEqual(try results[1].get(), 1)
    }
}
