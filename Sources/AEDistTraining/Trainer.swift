import AEDistCore
import AEDistIO
import Foundation

public struct TrainingSummary: Sendable {
    /// Set when the run stopped early with a checkpoint (signal or time limit): why.
    public var stopReason: String?
    public var epochsCompleted: Int
    public var globalStep: Int
    public var finalTrainLoss: Double
    public var finalValLoss: Double
    public var finalValMSE: Double
    public var samplesPerSecond: Double
    public var lastCheckpoint: String?
    public var bestCheckpoint: String?
    public var parameterChecksum: UInt64
}

/// Data-parallel training of one autoencoder replica per rank. A step, as in llm.c's loop: the next batch →
/// forward, loss and backward (`GradientStep`) → one all-reduce of the step message (`StepMessage`) → the same
/// optimizer step on every rank → bookkeeping (progress, drift check, checkpoint or stop). Each epoch ends with
/// validation, the metrics and an atomic checkpoint. Set-up is in TrainingSetup.swift, resuming in Resume.swift,
/// the closing report in RunReport.swift.
public final class Trainer {
    public let config: TrainingConfig
    let communicator: Communicator
    let console: Console
    let session: SessionOptions
    let stopPolicy: StopPolicy

    let setup: TrainingSetup
    var architecture: ModelArchitecture { setup.architecture }
    var schedule: BatchSchedule { setup.schedule }
    var directory: CheckpointDirectory { setup.directory }
    let model: Autoencoder
    let message: StepMessage
    let gradientStep: GradientStep
    let optimizer: Optimizer
    /// Rows for validation passes (the prefetcher owns the training rows).
    let validationRows: FlatBuffer

    /// Per-phase step times (and the timeline's events), set up when the run starts.
    var timeline = StepTimeline(eventCapacity: 0)
    var progress = TrainingProgress()
    var history: [EpochMetrics] = []
    var lastCheckpoint: String?
    /// Training time of earlier runs that this one resumes.
    var priorWallTime: Double = 0
    /// Why the run stops early (a signal or the time limit), once every rank has agreed on it.
    var stopReason: String?
    /// When the epoch in progress started in this run, and the training seconds it had before (a resumed one).
    var epochStart = Date()
    var epochSecondsBefore = 0.0
    var learningRate = 0.0
    /// The step the epoch in progress started from in this run (for the progress line's rate and ETA).
    var epochFirstStep = 0
    var firstStepTimes: (start: Int64, end: Int64?)?

    public init(config: TrainingConfig, communicator: Communicator, session: SessionOptions = SessionOptions(),
                console: Console) throws {
        self.config = config
        self.communicator = communicator
        self.console = console
        self.session = session
        stopPolicy = StopPolicy(timeLimit: session.timeLimit, start: session.startTime)
        setup = try TrainingSetup(config: config, communicator: communicator)

        let architecture = setup.architecture, rows = setup.maxRowsPerRank
        let sparsity = config.model.sparsityTarget > 0
            ? KLSparsity(target: config.model.sparsityTarget, weight: config.model.sparsityWeight, units: architecture.codeSize) : nil
        message = StepMessage(parameterCount: architecture.parameterLayout.totalCount, activationUnits: sparsity?.units ?? 0)
        model = Autoencoder(architecture: architecture, maxBatch: rows, gradients: message.gradients, microBatch: setup.deterministicMicroBatch)
        model.codePenalty = CodePenalty(l1: Float(config.model.l1Activity), sparsity: sparsity)
        model.klWeight = Float(config.model.beta / Double(architecture.inputSize))
        gradientStep = GradientStep(model: model, config: config, maxRows: rows, deterministicMicroBatch: setup.deterministicMicroBatch,
                                    communicator: communicator, globalBatchSize: config.schedule.batchSize)
        optimizer = Optimizer(config: config.optimizer, parameterCount: model.layout.totalCount)
        validationRows = FlatBuffer(count: rows * architecture.inputSize)

        try restoreOrInitialize()
    }

    // MARK: the loop

    public func run() throws -> TrainingSummary {
        let epochs = config.schedule.epochs
        for line in setup.describe(ranks: communicator.size) { console.line(line) }
        if progress.epochsCompleted >= epochs {
            console.line("nothing to train: \(lastCheckpoint ?? "the checkpoint") is at epoch \(progress.epochsCompleted) and --epochs is \(epochs)")
            return summary(samplesPerSecond: history.last?.samplesPerSecond ?? 0)
        }
        if progress.stepInEpoch == 0, let reason = earlyStoppingReason() {
            console.line("nothing to train: \(reason)")
            return summary(samplesPerSecond: history.last?.samplesPerSecond ?? 0)
        }
        StopPolicy.catchSignals()
        if session.saveInitial && progress.globalStep == 0 {
            try saveCheckpoint(isBest: false)
            console.line("initial parameters: \(lastCheckpoint ?? "written")")
        }
        try startTimeline()
        let prefetcher = BatchPrefetcher(source: setup.trainSet, schedule: schedule, rank: communicator.rank, size: communicator.size,
                                         maxRows: setup.maxRowsPerRank, startEpoch: progress.epochsCompleted,
                                         startStep: progress.stepInEpoch, endEpoch: epochs, microBatch: setup.deterministicMicroBatch)
        defer { prefetcher.stop() }
        var epochRates: [Double] = []
        let firstEpoch = progress.epochsCompleted

        while progress.epochsCompleted < epochs {
            epochStart = Date()
            epochSecondsBefore = progress.epochSeconds
            epochFirstStep = progress.stepInEpoch
            while progress.stepInEpoch < schedule.stepsPerEpoch {
                // One optimizer step over `accumulation` consecutive global batches (fewer at an epoch's end):
                // their gradients add up locally and cross the network once.
                let batches = progress.stepInEpoch..<min(progress.stepInEpoch + config.schedule.accumulation, schedule.stepsPerEpoch)
                // The first epoch this run trains pays for page faults and BLAS buffers once: it is not timed
                // (unless it is the only one).
                timeline.startStep(timed: progress.epochsCompleted > firstEpoch || epochs - firstEpoch == 1)
                if firstStepTimes == nil { firstStepTimes = (StepTimeline.now(), nil) }
                try trainStep(batches: batches, from: prefetcher)
                if try stopsMidEpoch() {
                    try reportTimeline()
                    return summary(samplesPerSecond: Double(progress.epochSamples) / max(progress.epochSeconds, 1e-9), stopReason: stopReason)
                }
            }
            let rate = try finishEpoch()
            epochRates.append(rate)
            if let stopReason, progress.epochsCompleted < epochs {
                try reportTimeline()
                return summary(samplesPerSecond: rate, stopReason: stopReason)
            }
            if let reason = earlyStoppingReason() {
                console.line(reason)
                break
            }
        }
        // The first epoch pays for warm-up (page faults, BLAS buffers): report the median of the rest.
        let steady = epochRates.count > 1 ? Array(epochRates.dropFirst()) : epochRates
        try reportTimeline()
        return summary(samplesPerSecond: steady.sorted()[steady.count / 2])
    }

    /// One optimizer step, in five calls: next batches → forward, loss, backward → all-reduce → optimizer → bookkeeping.
    func trainStep(batches: Range<Int>, from prefetcher: BatchPrefetcher) throws {
        let stepStart = Date()
        message.clear()
        let localError = accumulateGradients(of: batches.count, from: prefetcher)
        try allReduce(steps: batches.count, localError: localError)
        try optimizerStep(batches: batches)
        try bookkeeping(steps: batches, started: stepStart)
    }

    /// Reads each of the step's batches and adds its gradients and figures to the step message. An error (bad data
    /// on this rank) is kept, not thrown: every rank must still reach the all-reduce, which tells all of them.
    func accumulateGradients(of batches: Int, from prefetcher: BatchPrefetcher) -> Error? {
        let step = progress.globalStep + 1
        var failure: Error?
        for offset in 0..<batches {
            var batch: BatchPrefetcher.Batch?
            if failure == nil {
                do {
                    try session.fault?.apply(rank: communicator.rank, step: step + offset, parameters: model.parameters)
                    batch = try prefetcher.next()
                } catch {
                    failure = error
                }
            }
            timeline.mark(.dataWait, step: step)
            do {
                if let batch {
                    gradientStep.statistics?.firstMicroBatch = batch.globalOffset / gradientStep.microBatch
                    try gradientStep.accumulate(rows: batch.rows, count: batch.count, key: NoiseKey(epoch: batch.epoch, indices: batch.sampleIndices),
                                                step: step, into: message)
                } else if gradientStep.statistics != nil {
                    // The other ranks' passes gather BatchNorm statistics from every rank: join them with no rows.
                    try gradientStep.accumulate(rows: validationRows.pointer, count: 0, key: NoiseKey(epoch: 0, first: 0), step: step, into: message)
                }
            } catch {
                if failure == nil { failure = error }
            }
        }
        if failure != nil { message.markFailed() }
        return failure
    }

    /// The step's one all-reduce: gradients and statistics together; in deterministic mode only the statistics,
    /// and the gradients follow as an exact sum. A failure on any rank is agreed on and thrown on every rank.
    func allReduce(steps: Int, localError: Error?) throws {
        let stopCode = stopPolicy.reasonCode
        message.requestStop(code: stopCode, isSignal: stopCode != StopPolicy.timeLimitCode)
        let step = progress.globalStep + steps
        try communicator.allReduceGradients(gradientStep.exactSum == nil ? message.buffer.buffer : message.statisticsAndSums, step: step)
        if message.anyRankFailed { try communicator.agreeOnFailure(localError) }
        if let exactSum = gradientStep.exactSum {
            let microBatches = (message.globalSampleCount + gradientStep.microBatch - 1) / gradientStep.microBatch
            try exactSum.reduce(into: message.gradients, totalMicroBatches: microBatches, step: step, communicator: communicator)
        }
        timeline.mark(.allReduce, step: step)
    }

    /// The same update on every rank, from the global batch's summed gradient.
    func optimizerStep(batches: Range<Int>) throws {
        let globalCount = message.globalSampleCount
        let stepLoss = message.lossSum / Double(max(globalCount, 1))
        guard stepLoss.isFinite else {
            throw RunFailure("the training loss became \(stepLoss) at epoch \(progress.epochsCompleted + 1), step \(batches.upperBound) (global step \(progress.globalStep + batches.count)); try a smaller --lr. \(lastCheckpoint.map { "The last good checkpoint is \($0)." } ?? "No checkpoint was written.")")
        }
        model.codePenalty.sparsity?.update(activationSums: message.activationSums, samples: globalCount)
        // The sum becomes a mean inside the optimizer's pass, unless clipping needs the mean first.
        var scale = 1 / Float(max(globalCount, 1))
        if config.optimizer.clipNorm > 0 {
            message.gradients.scale(by: scale)
            scale = 1
            clipGradientNorm(message.gradients, count: message.gradients.count, to: Float(config.optimizer.clipNorm))
        }
        learningRate = config.schedule.learningRate(base: config.optimizer.learningRate, epochsCompleted: progress.epochsCompleted,
                                                    stepInEpoch: progress.stepInEpoch, stepsPerEpoch: schedule.stepsPerEpoch)
        optimizer.step(parameters: model.parameters, gradients: message.gradients, learningRate: learningRate, gradientScale: scale)
        timeline.mark(.optimizer, step: progress.globalStep + batches.count)
    }

    /// Progress, the drift check, and a mid-epoch checkpoint when one is due or the ranks agreed to stop.
    func bookkeeping(steps batches: Range<Int>, started: Date) throws {
        progress.globalStep += batches.count
        progress.stepInEpoch = batches.upperBound
        progress.samplesSeen += message.globalSampleCount
        progress.epochLossSum += message.lossSum
        progress.epochKLSum += message.klSum
        progress.epochSamples += message.globalSampleCount
        if crossedMultiple(of: config.run.driftCheckEvery, steps: batches.count) {
            _ = try verifyReplicasIdentical()
        }
        stopPolicy.recordStep(Date().timeIntervalSince(started))
        if message.anyRankWantsToStop && stopReason == nil {
            stopReason = stopPolicy.describe(signalSum: message[.signalSum], signalRanks: message[.signalRanks])
        }
        let midEpoch = progress.stepInEpoch < schedule.stepsPerEpoch
        if midEpoch, stopReason != nil || crossedMultiple(of: config.run.checkpointEvery, steps: batches.count) {
            progress.epochSeconds = epochSecondsBefore + Date().timeIntervalSince(epochStart)
            try saveCheckpoint(isBest: false)
        }
        showProgress()
        timeline.mark(.other, step: progress.globalStep)
        timeline.endStep()
        if firstStepTimes?.end == nil { firstStepTimes?.end = StepTimeline.now() }
    }

    /// Whether the ranks agreed to stop and the epoch is not over (its end checkpoints anyway).
    func stopsMidEpoch() throws -> Bool {
        stopReason != nil && progress.stepInEpoch < schedule.stepsPerEpoch
    }

    func showProgress() {
        let elapsed = Date().timeIntervalSince(epochStart)
        let step = progress.stepInEpoch
        let remaining = Double(schedule.stepsPerEpoch - step) * elapsed / Double(max(step - epochFirstStep, 1))
        console.progress(String(format: "epoch %d/%d  step %d/%d  %@ %.4f  %.0f samples/s  ETA %.0fs", progress.epochsCompleted + 1,
                                config.schedule.epochs, step, schedule.stepsPerEpoch, config.loss.rawValue,
                                progress.epochLossSum / Double(max(progress.epochSamples, 1)),
                                Double(progress.epochSamples) / max(elapsed, 1e-9), remaining))
    }

    /// Validation, the epoch's metrics row and checkpoint, and its line. Returns the epoch's samples per second.
    func finishEpoch() throws -> Double {
        let trainSeconds = epochSecondsBefore + Date().timeIntervalSince(epochStart)
        let rate = Double(progress.epochSamples) / max(trainSeconds, 1e-9)
        let validationStart = Date()
        timeline.resume()
        let validation = try setup.valSet.map { try gradientStep.evaluate($0, rows: validationRows, communicator: communicator) } ?? .none
        timeline.mark(.validation, step: progress.globalStep)
        stopPolicy.recordValidation(Date().timeIntervalSince(validationStart))
        let trainLoss = progress.epochLossSum / Double(max(progress.epochSamples, 1))
        let trainKL = progress.epochKLSum / Double(max(progress.epochSamples, 1))
        progress.epochsCompleted += 1
        progress.stepInEpoch = 0
        progress.epochLossSum = 0
        progress.epochSamples = 0
        progress.epochKLSum = 0
        progress.epochSeconds = 0
        let metrics = EpochMetrics(epoch: progress.epochsCompleted, globalStep: progress.globalStep, samplesSeen: progress.samplesSeen,
                                   trainLoss: trainLoss, valLoss: validation.loss, valMSE: validation.mse, samplesPerSecond: rate,
                                   wallTime: priorWallTime + trainSeconds, learningRate: learningRate)
        let bestValLoss = history.map(\.valLoss).filter { !$0.isNaN }.min() ?? .infinity
        priorWallTime = metrics.wallTime
        history.append(metrics)
        timeline.resume()
        try saveCheckpoint(isBest: !validation.loss.isNaN && validation.loss < bestValLoss)
        try communicator.together { if communicator.isRoot { try directory.writeMetrics(history) } }
        timeline.mark(.checkpoint, step: progress.globalStep)
        console.line(epochLine(metrics, trainKL: trainKL, validation: validation, seconds: trainSeconds))
        if validation.outputSpread < 1e-6 {
            console.warning(String(format: "the reconstructions are the same for every validation sample (variance across samples %.2g): the model has collapsed to a constant output. The tutorial's convolutional model does this with --loss mse in Keras and PyTorch too; try --loss bce, another --lr or --seed.", validation.outputSpread))
        }
        return rate
    }

    /// Whether the last `steps` steps passed a multiple of `interval` (0: never).
    func crossedMultiple(of interval: Int, steps: Int) -> Bool {
        interval > 0 && progress.globalStep / interval != (progress.globalStep - steps) / interval
    }

    /// Early stopping from the metrics history alone (so it survives resumes): the epochs since the best
    /// validation loss, counting only improvements larger than --min-delta.
    func earlyStoppingReason() -> String? {
        let patience = config.schedule.earlyStoppingPatience
        guard patience > 0, history.count > patience else { return nil }
        var best = Double.infinity, bestEpoch = 0
        for metrics in history where metrics.valLoss < best - config.schedule.minDelta {
            best = metrics.valLoss
            bestEpoch = metrics.epoch
        }
        guard history.last!.epoch - bestEpoch >= patience else { return nil }
        return "early stopping: the validation loss has not improved for \(patience) epochs (best \(String(format: "%.4f", best)) at epoch \(bestEpoch))"
    }

    func saveCheckpoint(isBest: Bool) throws {
        progress.sparsityEstimate = model.codePenalty.sparsity?.estimate ?? []
        let started = Date()
        defer { stopPolicy.recordCheckpoint(Date().timeIntervalSince(started)) }
        let comm = communicator
        let path: String? = try comm.whileRootWorksAlone { try comm.together {
            guard comm.isRoot else { return nil }
            let checkpoint = Checkpoint(config: config, layout: model.layout, parameters: model.parameters,
                                        optimizerName: config.optimizer.kind.rawValue, optimizerStep: optimizer.stepCount,
                                        optimizerState: optimizer.state, progress: progress, metrics: history,
                                        worldSize: comm.size, aedistVersion: AEDistVersion.string,
                                        bufferLayout: model.bufferLayout, buffers: model.buffers)
            return try directory.save(checkpoint, isBest: isBest, keep: config.run.keep)
        } }
        lastCheckpoint = path ?? CheckpointDirectory.fileName(for: progress)
    }
}
