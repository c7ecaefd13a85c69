import AEDistCore
import AEDistIO
import Foundation

/// What a run tells: the start of the timeline, each epoch's line, the step-time breakdown and start-up figures at
/// the end, the summary, and the check that every replica holds the same parameters.
extension Trainer {
    /// Sizes the timeline for the steps ahead and checks, before training, that its file can be written.
    func startTimeline() throws {
        let epochs = config.schedule.epochs
        learningRate = config.schedule.learningRate(base: config.optimizer.learningRate, epochsCompleted: progress.epochsCompleted,
                                                    stepInEpoch: progress.stepInEpoch, stepsPerEpoch: schedule.stepsPerEpoch)
        let plannedSteps = (epochs - progress.epochsCompleted) * schedule.stepsPerEpoch
        // Per step: a data wait and, per micro-batch, a forward and a backward for each accumulated batch; then
        // all-reduce, optimizer and other. Per epoch: validation and checkpoint.
        let microBatches = setup.deterministicMicroBatch.map { (setup.maxRowsPerRank + $0 - 1) / $0 } ?? 1
        let eventsPerStep = config.schedule.accumulation * (1 + 2 * microBatches) + 3
        timeline = StepTimeline(eventCapacity: session.timelinePath == nil ? 0
            : min(plannedSteps * eventsPerStep + 2 * epochs + 16, StepTimeline.maxEvents))
        gradientStep.timeline = timeline
        if let path = session.timelinePath {
            try communicator.together { if communicator.isRoot { try StepTimeline.checkWritable(path) } }
        }
    }

    /// "epoch 3/10  step 48  train bce 0.3012  val bce 0.2950  val mse 0.0712  250000 samples/s  0.25s"
    func epochLine(_ metrics: EpochMetrics, trainKL: Double, validation: EvaluationResult, seconds: Double) -> String {
        let lossName = config.loss.rawValue, klWeight = Double(model.klWeight)
        var line = String(format: "epoch %d/%d  step %d  train %@ %.4f", metrics.epoch, config.schedule.epochs,
                          metrics.globalStep, lossName, metrics.trainLoss)
        if architecture.variational {
            // The loss is reconstruction + (β/D)·KL: show both terms.
            line += String(format: " (recon %.4f + kl %.3f × %.2g)", metrics.trainLoss - klWeight * trainKL, trainKL, klWeight)
        }
        if !validation.loss.isNaN {
            line += String(format: "  val %@ %.4f", lossName, validation.loss)
            if config.loss != .mse { line += String(format: "  val mse %.4f", validation.mse) }
            if gradientStep.corruption != .none { line += String(format: " (noisy inputs: mse %.4f)", validation.noisyMSE) }
            if architecture.variational {
                line += String(format: " (recon %.4f + kl %.3f × %.2g)", validation.loss - klWeight * validation.kl, validation.kl, klWeight)
            }
        }
        return line + String(format: "  %.0f samples/s  %.2fs", metrics.samplesPerSecond, seconds)
    }

    /// Collective: the step-time breakdown (mean over ranks), the time from MPI's start to the end of the first
    /// step, heap allocations per timed step when counted, and the timeline file when asked for.
    func reportTimeline() throws {
        let firstStep = firstStepTimes
        let comm = communicator
        let report = try timeline.breakdown(communicator: comm)
        guard report.steps > 0 else { return }
        let shares = report.shares.map { String(format: "%@ %.1f%%", $0.0.name, 100 * $0.1) }.joined(separator: ", ")
        console.line(String(format: "step time %.3f ms (mean of %d steps × %d rank%@): ", 1000 * report.secondsPerStep, report.steps,
                            comm.size, comm.size == 1 ? "" : "s") + shares)
        // Start-up: from MPI's start to the first step's start and end, on the slowest rank.
        if let mpiStart = session.mpiStart?.timeIntervalSince1970, let firstStep, let end = firstStep.end {
            var seconds = [Double(firstStep.start) * 1e-9 - mpiStart, Double(end) * 1e-9 - mpiStart]
            try comm.allReduceMax(&seconds)
            console.line(String(format: "time to first step: %.3f s from MPI's start to the first step, %.3f s to its end (slowest rank)",
                                seconds[0], seconds[1]))
        }
        var memory = [Double(StepTimeline.peakResidentBytes), Double(StepTimeline.residentPrivateBytes)]
        try comm.allReduceMax(&memory)
        console.line(String(format: "peak memory: %.0f MB resident on the largest rank, %.0f MB of it private (the rest: files mapped read-only, such as a streamed data set's pages, which the kernel shares and reclaims)",
                            memory[0] / 1e6, memory[1] / 1e6))
        if HeapAllocations.counting {
            let steps = Double(max(timeline.stepsTimed, 1))
            var perStep = [Double(timeline.allocationsInTimedSteps) / steps,
                           Double(timeline.allocationsInTimedSteps - timeline.allocationsInAllReduce) / steps]
            try comm.allReduceMax(&perStep)
            console.line(String(format: "heap allocations per step on the training thread: %.2f, of which outside the MPI all-reduce: %.2f (most on any rank, %d timed steps)",
                                perStep[0], perStep[1], report.steps))
        }
        if let path = session.timelinePath {
            var extra: [(name: String, start: Int64, duration: Int64)] = []
            if let start = session.mpiStart, let firstStep {
                let startNanoseconds = Int64(start.timeIntervalSince1970 * 1e9)
                extra.append(("start-up: MPI start to the first step", startNanoseconds, firstStep.start - startNanoseconds))
            }
            let written = try comm.together { try timeline.write(to: path, communicator: comm, extraEvents: extra) }
            let dropped = timeline.eventsDropped > 0 ? " (the first \(timeline.eventCapacity) events of each rank)" : ""
            console.line("timeline: \(written) events of \(comm.size) rank\(comm.size == 1 ? "" : "s") in \(path)\(dropped); open it in ui.perfetto.dev or chrome://tracing")
        }
    }

    func summary(samplesPerSecond: Double, stopReason: String? = nil) -> TrainingSummary {
        TrainingSummary(stopReason: stopReason, epochsCompleted: progress.epochsCompleted, globalStep: progress.globalStep,
                        finalTrainLoss: history.last?.trainLoss ?? .nan, finalValLoss: history.last?.valLoss ?? .nan,
                        finalValMSE: history.last?.valMSE ?? .nan, samplesPerSecond: samplesPerSecond,
                        lastCheckpoint: communicator.isRoot ? directory.latest : nil,
                        bestCheckpoint: communicator.isRoot ? directory.best : nil,
                        parameterChecksum: model.parameters.bitChecksum)
    }

    /// Collective: every replica's parameters must be bit-identical after the same steps. Returns the count of
    /// ranks that agree with rank 0.
    public func verifyReplicasIdentical() throws -> UInt64 {
        let checksums = try communicator.allGather(model.parameters.bitChecksum)
        if let differing = checksums.firstIndex(where: { $0 != checksums[0] }) {
            let drifted = checksums.indices.filter { checksums[$0] != checksums[0] }
            throw RunFailure("replica drift at step \(progress.globalStep): the parameters of rank\(drifted.count == 1 ? "" : "s") \(drifted.map(String.init).joined(separator: ", ")) differ from rank 0's (checksum \(String(checksums[differing], radix: 16)) vs \(String(checksums[0], radix: 16))); the replicas no longer compute the same model, so training stops. \(lastCheckpoint.map { "The last good checkpoint is \($0)." } ?? "")")
        }
        return checksums[0]
    }
}
