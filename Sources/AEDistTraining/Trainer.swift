import AEDistCore
import AEDistIO
import Foundation

/// How `aedist train` was asked to start.
public enum ResumeRequest: Equatable, Sendable {
    /// Start fresh.
    case none
    /// Continue from the checkpoint folder's `latest.h5` if there is one, else start fresh.
    case auto
    case path(String)

    public init(_ text: String?) {
        switch text {
        case nil, "", "none"?: self = .none
        case "auto"?: self = .auto
        case let path?: self = .path(path)
        }
    }
}

/// Choices for one invocation that do not change what is trained (so they are not part of the stored config).
public struct SessionOptions {
    public var resume: ResumeRequest = .none
    /// Wall-clock seconds this run may take before it checkpoints and stops (exit status 75).
    public var timeLimit: TimeInterval?
    /// What the time limit counts from: the process's start.
    public var startTime: Date
    /// When MPI had started on this rank: the time to the first step is counted from here.
    public var mpiStart: Date?
    /// Where to write the step-phase timeline of all ranks (Chrome-trace JSON), if anywhere.
    public var timelinePath: String?

    public init(resume: ResumeRequest = .none, timeLimit: TimeInterval? = nil, startTime: Date = Date(), mpiStart: Date? = nil,
                timelinePath: String? = nil) {
        self.resume = resume
        self.timeLimit = timeLimit
        self.startTime = startTime
        self.mpiStart = mpiStart
        self.timelinePath = timelinePath
    }
}

public struct TrainingSummary {
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

/// Data-parallel training of one autoencoder replica per rank:
/// read batch slice → forward → loss → backward → one all-reduce of the gradient buffer → identical optimizer step,
/// with validation, metrics and an atomic checkpoint at each epoch's end.
public final class Trainer {
    public let config: TrainingConfig
    let communicator: Communicator
    let console: Console
    let resume: ResumeRequest
    let session: SessionOptions
    let stopPolicy: StopPolicy
    let fault = FaultInjection.fromEnvironment()

    let architecture: ModelArchitecture
    let model: Autoencoder
    let optimizer: Optimizer
    let trainSet: SampleSet
    let valSet: SampleSet?
    let schedule: BatchSchedule
    let directory: CheckpointDirectory
    let maxRowsPerRank: Int
    /// Rows for validation forward passes (the prefetcher owns the training rows).
    let validationRows: FlatBuffer
    /// KL sparsity's running state (nil when off).
    let sparsity: KLSparsity?
    /// Mean KL per validation sample at the last validation (variational models).
    var lastValidationKL = Double.nan
    /// Set in deterministic mode: exact sums of fixed micro-batches' gradients.
    let exactSum: ExactGradientSum?
    /// Denoising: the corruption, and the corrupted inputs of a batch (the clean rows stay the targets).
    let corruption: Corruption
    let corruptedRows: FlatBuffer

    /// Per-phase step times (and the timeline's events), set up when the run starts.
    var timeline = StepTimeline(eventCapacity: 0)
    var progress = TrainingProgress()
    var history: [EpochMetrics] = []
    var lastCheckpoint: String?
    /// Training time of earlier runs that this one resumes.
    var priorWallTime: Double = 0

    /// Slots appended to the gradient buffer so one all-reduce per step also sums the step's statistics.
    enum StepSlot: Int, CaseIterable {
        case lossSum, squaredErrorSum, klSum, sampleCount, failedRanks
        /// Ranks asking to stop, and of those that received a signal: how many and the sum of the signal numbers.
        case ranksWantingToStop, signalRanks, signalSum
    }

    public init(config: TrainingConfig, communicator: Communicator, session: SessionOptions = SessionOptions(),
                console: Console) throws {
        self.config = config
        self.communicator = communicator
        self.console = console
        resume = session.resume
        self.session = session
        stopPolicy = StopPolicy(timeLimit: session.timeLimit, start: session.startTime)
        let comm = communicator

        architecture = try comm.together {
            try config.validate()
            return try ModelArchitecture(config.model)
        }
        try Trainer.checkRanksAgree(config: config, layout: architecture.parameterLayout, communicator: comm)

        let directory = CheckpointDirectory(path: config.run.checkpointDir)
        self.directory = directory
        try comm.together { if comm.isRoot { try directory.prepare() } }

        let (train, validation) = try comm.together { try Trainer.openData(config.data) }
        trainSet = train
        valSet = validation
        let architecture = self.architecture
        try comm.together {
            for set in [train, validation].compactMap({ $0 }) {
                if let mismatch = architecture.mismatch(sampleShape: set.sampleShape) {
                    throw RunFailure("\(set.name) has samples of \(mismatch) (model '\(config.model.spec)'); change --model or --train-dataset")
                }
            }
            if train.rowCount < comm.size {
                throw RunFailure("\(train.name) has \(train.rowCount) samples, fewer than the \(comm.size) ranks; use fewer ranks or more data")
            }
        }

        schedule = BatchSchedule(sampleCount: train.rowCount, globalBatchSize: config.schedule.batchSize,
                                 seed: config.schedule.seed)
        let microBatch = config.schedule.deterministic ? config.schedule.microBatch : nil
        maxRowsPerRank = BatchSchedule.maxSliceCount(globalBatchSize: min(config.schedule.batchSize, train.rowCount),
                                                     size: comm.size, microBatch: microBatch)
        // After the step's statistics: for KL sparsity, the sum of each code unit's activations over the batch.
        let sparsityUnits = config.model.sparsityTarget > 0 ? architecture.codeSize : 0
        model = Autoencoder(architecture: architecture, maxBatch: maxRowsPerRank, gradientTail: StepSlot.allCases.count + sparsityUnits)
        sparsity = sparsityUnits > 0 ? KLSparsity(target: config.model.sparsityTarget, weight: config.model.sparsityWeight, units: sparsityUnits) : nil
        model.codeSparsityGradient = sparsity?.unitGradient.pointer
        optimizer = Optimizer(config: config.optimizer, parameterCount: model.layout.totalCount)
        validationRows = FlatBuffer(count: maxRowsPerRank * architecture.inputSize)
        corruption = try Corruption(config.model.noise)
        corruptedRows = FlatBuffer(count: corruption == .none ? 1 : maxRowsPerRank * architecture.inputSize)
        model.codeL1 = Float(config.model.l1Activity)
        model.klWeight = Float(config.model.beta / Double(architecture.inputSize))
        let parameterCount = model.layout.totalCount, rows = maxRowsPerRank
        exactSum = microBatch.map { ExactGradientSum(parameterCount: parameterCount,
                                                     maxMicroBatchesPerRank: (rows + $0 - 1) / $0) }

        try restoreOrInitialize()
    }

    static func openData(_ data: DataConfig) throws -> (SampleSet, SampleSet?) {
        guard let path = data.path ?? EmbeddedData.mnistPath else {
            throw RunFailure("the embedded MNIST subset is missing from this build; pass --data FILE.h5")
        }
        let file = try HDF5File.open(path)
        if let fraction = data.valFraction {
            let whole = try file.root.dataset(data.trainDataset)
            let total = whole.shape.first ?? 0
            // Like Keras's validation_split: the last rows, before any shuffling.
            let held = Int((Double(total) * fraction).rounded())
            guard held >= 1, held < total else {
                throw RunFailure("--val-fraction \(fraction) of \(total) samples in \(path):\(data.trainDataset) leaves no training or no validation rows")
            }
            let train = try SampleSet(file: file, datasetPath: data.trainDataset, rows: 0..<(total - held),
                                      scale: data.scale, cache: data.cache, channelsFirst: data.channelsFirst)
            let validation = try SampleSet(file: file, datasetPath: data.trainDataset, rows: (total - held)..<total,
                                           scale: data.scale, cache: data.cache, channelsFirst: data.channelsFirst)
            return (train, validation)
        }
        let train = try SampleSet(file: file, datasetPath: data.trainDataset, scale: data.scale, cache: data.cache,
                                  channelsFirst: data.channelsFirst)
        let validation = try data.valDataset.map {
            try SampleSet(file: file, datasetPath: $0, scale: data.scale, cache: data.cache, channelsFirst: data.channelsFirst)
        }
        return (train, validation)
    }

    /// Every rank must build the same model from the same configuration; a mismatch (different config files or
    /// binaries on different nodes) would otherwise train silently wrong.
    static func checkRanksAgree(config: TrainingConfig, layout: ParameterLayout, communicator: Communicator) throws {
        let all = try communicator.allGather(FNV1a(config.canonicalJSON() + layout.hash).value)
        if let differing = all.firstIndex(where: { $0 != all[0] }) {
            throw RunFailure("ranks disagree on the configuration (rank 0 has \(String(all[0], radix: 16)), rank \(differing) has \(String(all[differing], radix: 16))); every rank must run the same aedist with the same options and config file")
        }
    }

    private func restoreOrInitialize() throws {
        let comm = communicator
        let checkpointPath: String?
        switch resume {
        case .none: checkpointPath = nil
        case .auto:
            // Rank 0 picks the newest checkpoint that passes verification; every rank then reads that one.
            let chosen = try comm.whileRootWorksAlone { try comm.together { comm.isRoot ? try newestIntactCheckpoint() ?? "" : "" } }
            let agreed = try comm.broadcast(chosen)
            checkpointPath = agreed.isEmpty ? nil : agreed
        case .path(let path): checkpointPath = path
        }
        if let checkpointPath {
            let checkpoint = try comm.together { try Checkpoint.read(from: checkpointPath, expectedLayout: model.layout) }
            model.parameters.copy(from: checkpoint.parameters)
            try comm.together {
                guard checkpoint.config.model == config.model else {
                    let stored = checkpoint.config.model, asked = config.model
                    let differing = [("--model", stored.spec != asked.spec), ("--activation", stored.activation != asked.activation),
                                     ("--output-activation", stored.outputActivation != asked.outputActivation),
                                     ("--noise", stored.noise != asked.noise), ("--l1-activity", stored.l1Activity != asked.l1Activity),
                                     ("--variational", stored.variational != asked.variational), ("--beta", stored.beta != asked.beta),
                                     ("--sparsity-target", stored.sparsityTarget != asked.sparsityTarget),
                                     ("--sparsity-weight", stored.sparsityWeight != asked.sparsityWeight)].filter(\.1).map(\.0)
                    throw RunFailure("\(checkpointPath) was trained as \(try ModelArchitecture(stored).description) with other model options (\(differing.joined(separator: ", "))) than this run's \(architecture.description); pass the options it was trained with (aedist inspect shows them), or a new --checkpoint-dir")
                }
                guard checkpoint.optimizerName == config.optimizer.kind.rawValue else {
                    throw RunFailure("\(checkpointPath) holds \(checkpoint.optimizerName) state, but this run uses --optimizer \(config.optimizer.kind.rawValue)")
                }
                for (name, buffer) in optimizer.state {
                    guard let stored = checkpoint.optimizerState.first(where: { $0.name == name }) else {
                        throw RunFailure("\(checkpointPath) has no optimizer state '\(name)' (it has: \(checkpoint.optimizerState.map(\.name).joined(separator: ", ")))")
                    }
                    buffer.copy(from: stored.buffer)
                }
            }
            optimizer.stepCount = checkpoint.optimizerStep
            progress = checkpoint.progress
            history = checkpoint.metrics
            sparsity?.restore(progress.sparsityEstimate)
            priorWallTime = history.last?.wallTime ?? 0
            lastCheckpoint = checkpointPath
            let sameBatches = checkpoint.config.schedule.batchSize == config.schedule.batchSize
                && checkpoint.config.schedule.seed == config.schedule.seed && checkpoint.config.data.path == config.data.path
                && checkpoint.config.data.trainDataset == config.data.trainDataset
                && checkpoint.config.data.valFraction == config.data.valFraction
            if progress.stepInEpoch > 0 && (!sameBatches || progress.stepInEpoch > schedule.stepsPerEpoch) {
                throw RunFailure("\(checkpointPath) stopped in the middle of epoch \(progress.epochsCompleted + 1) (after its step \(progress.stepInEpoch)); continuing it needs the same --batch-size, --seed and training data it used (batch \(checkpoint.config.schedule.batchSize), seed \(checkpoint.config.schedule.seed)), or resume from an epoch-end checkpoint instead")
            }
            if !sameBatches {
                console.warning("resuming with a different --batch-size, --seed or training data than \(checkpointPath) was trained with: the sample order will not continue the original run's")
            }
            if case .path = resume {
                // Resuming from anything but the folder's own latest checkpoint starts a new line of checkpoints
                // there: the ones it holds move aside, whole, rather than be mixed with, renamed over or pruned.
                let resolved = { (path: String) in (path as NSString).resolvingSymlinksInPath }
                let archived = try comm.together { () -> String? in
                    guard comm.isRoot, directory.latest.map(resolved) != resolved(checkpointPath) else { return nil }
                    return try directory.archiveEarlierRun()
                }
                if let archived { console.line("moved the checkpoints already in \(directory.path) to \(archived) before continuing from \(checkpointPath)") }
            }
            console.line("resumed from \(checkpointPath): epoch \(progress.epochsCompleted), step \(progress.globalStep), \(progress.samplesSeen) samples seen")
        } else {
            if resume == .auto { console.line("no checkpoint in \(directory.path) yet: starting fresh") }
            let archived = try comm.together { comm.isRoot ? try directory.archiveEarlierRun() : nil }
            if let archived {
                console.line("\(directory.path) held an earlier run's checkpoints: moved them to \(archived) (use --resume auto to continue a run instead)")
            }
            if comm.isRoot { model.initializeParameters(seed: config.schedule.seed) }
        }
        // Rank 0's state is the truth: broadcasting it makes every replica start bit-identical.
        try comm.broadcast(model.parameters)
        for (_, buffer) in optimizer.state { try comm.broadcast(buffer) }
        try comm.together { if comm.isRoot { try directory.rewriteMetrics(history) } }
    }

    /// `latest.h5`'s target, or when that is damaged (truncated, failed checksum, inconsistent) the newest
    /// checkpoint that is intact, saying what was skipped. nil when the folder holds no checkpoint.
    private func newestIntactCheckpoint() throws -> String? {
        var candidates = directory.checkpointFiles.reversed().map { $0 }
        if let latest = directory.latest {
            candidates.removeAll { $0 == latest }
            candidates.insert(latest, at: 0)
        }
        guard !candidates.isEmpty else { return nil }
        for candidate in candidates {
            do {
                try Checkpoint.verify(candidate)
                return candidate
            } catch {
                console.warning("skipping damaged checkpoint \(candidate): \(userMessage(error))")
            }
        }
        throw RunFailure("no intact checkpoint in \(directory.path) (all \(candidates.count) failed verification); move them aside to start fresh")
    }

    // MARK: the loop

    public func run() throws -> TrainingSummary {
        let comm = communicator
        let epochs = config.schedule.epochs
        let lossName = config.loss.rawValue
        console.line("aedist: \(architecture.description); \(model.layout.totalCount) parameters")
        let dataName = config.data.path == nil ? "embedded MNIST subset \(config.data.trainDataset)" : trainSet.name
        console.line("data: \(dataName) (\(trainSet.rowCount) samples\(trainSet.isCached ? ", in memory" : ", streamed")), validation: \(valSet.map { config.data.path == nil && config.data.valFraction == nil ? "embedded \(config.data.valDataset ?? "")" : $0.name } ?? "none"); \(comm.size) rank\(comm.size == 1 ? "" : "s"), global batch \(config.schedule.batchSize), \(schedule.stepsPerEpoch) steps/epoch, BLAS \(BLAS.coreName) × \(BLAS.threads) thread\(BLAS.threads == 1 ? "" : "s")")
        if progress.epochsCompleted >= epochs {
            console.line("nothing to train: \(lastCheckpoint ?? "the checkpoint") is at epoch \(progress.epochsCompleted) and --epochs is \(epochs)")
            return summary(samplesPerSecond: history.last?.samplesPerSecond ?? 0)
        }
        if progress.stepInEpoch == 0, let reason = earlyStoppingReason() {
            console.line("nothing to train: \(reason)")
            return summary(samplesPerSecond: history.last?.samplesPerSecond ?? 0)
        }
        StopPolicy.catchSignals()
        var stopReason: String?

        let prefetcher = BatchPrefetcher(source: trainSet, schedule: schedule, rank: comm.rank, size: comm.size,
                                         maxRows: maxRowsPerRank, startEpoch: progress.epochsCompleted,
                                         startStep: progress.stepInEpoch, endEpoch: epochs,
                                         microBatch: exactSum == nil ? nil : config.schedule.microBatch)
        defer { prefetcher.stop() }
        let parameterCount = model.layout.totalCount
        let gradients = model.gradients
        let tail = gradients.pointer + parameterCount
        var bestValLoss = history.map(\.valLoss).filter { !$0.isNaN }.min() ?? .infinity
        var learningRate = currentLearningRate()
        var epochRates: [Double] = []
        let firstEpoch = progress.epochsCompleted
        let plannedSteps = (epochs - firstEpoch) * schedule.stepsPerEpoch
        // Per step: a data wait and, per micro-batch, a forward and a backward for each accumulated batch; then
        // all-reduce, optimizer and other. Per epoch: validation and checkpoint.
        let microBatches = exactSum == nil ? 1 : (maxRowsPerRank + config.schedule.microBatch - 1) / config.schedule.microBatch
        let eventsPerStep = config.schedule.accumulation * (1 + 2 * microBatches) + 3
        timeline = StepTimeline(eventCapacity: session.timelinePath == nil ? 0
            : min(plannedSteps * eventsPerStep + 2 * epochs + 16, StepTimeline.maxEvents))
        if let path = session.timelinePath {
            try comm.together { if comm.isRoot { try StepTimeline.checkWritable(path) } }
        }
        var firstStepTimes: (start: Int64, end: Int64?)?

        while progress.epochsCompleted < epochs {
            let epoch = progress.epochsCompleted
            let epochStart = Date()
            // A resumed mid-epoch checkpoint carries the epoch's loss, samples and time so far.
            var epochLoss = progress.epochLossSum, epochSamples = progress.epochSamples, epochKL = progress.epochKLSum
            let epochSecondsBefore = progress.epochSeconds
            let firstStep = progress.stepInEpoch
            var nextStep = progress.stepInEpoch
            while nextStep < schedule.stepsPerEpoch {
                // One optimizer step over `accumulation` consecutive global batches (fewer at an epoch's end):
                // their gradients add up locally and cross the network once.
                let group = nextStep..<min(nextStep + config.schedule.accumulation, schedule.stepsPerEpoch)
                nextStep = group.upperBound
                let step = group.upperBound - 1
                let stepStart = Date()
                // The first epoch this run trains pays for page faults and BLAS buffers once: it is not timed
                // (unless it is the only one).
                timeline.startStep(timed: epoch > firstEpoch || epochs - firstEpoch == 1)
                if firstStepTimes == nil { firstStepTimes = (StepTimeline.now(), nil) }
                gradients.fill(0)
                var localError: Error?
                do {
                    for offset in 0..<group.count {
                        try fault?.apply(rank: comm.rank, step: progress.globalStep + 1 + offset, parameters: model.parameters)
                        let batch = try prefetcher.next()
                        timeline.mark(.dataWait, step: progress.globalStep + 1)
                        let key = NoiseKey(epoch: batch.epoch, indices: batch.sampleIndices)
                        let inputs = corrupt(batch.rows, count: batch.count, key: key)
                        let sums = exactSum == nil ? computeGradients(inputs: inputs, targets: batch.rows, count: batch.count, key: key)
                            : computeMicroBatchGradients(inputs: inputs, targets: batch.rows, count: batch.count, key: key)
                        tail[StepSlot.klSum.rawValue] += Float(sums.kl)
                        tail[StepSlot.lossSum.rawValue] += Float(sums.loss)
                        tail[StepSlot.squaredErrorSum.rawValue] += Float(sums.squaredError)
                        tail[StepSlot.sampleCount.rawValue] += Float(batch.count)
                    }
                } catch {
                    localError = error
                    tail[StepSlot.failedRanks.rawValue] = 1
                }
                let stopCode = stopPolicy.reasonCode
                if stopCode != 0 {
                    tail[StepSlot.ranksWantingToStop.rawValue] = 1
                    if stopCode != StopPolicy.timeLimitCode {
                        tail[StepSlot.signalRanks.rawValue] = 1
                        tail[StepSlot.signalSum.rawValue] = Float(stopCode)
                    }
                }
                // One all-reduce carries the gradients and the step's statistics; in deterministic mode it carries
                // only the statistics and the gradients follow as an exact sum.
                let reduced = exactSum == nil ? gradients.buffer
                    : UnsafeMutableBufferPointer(start: tail, count: gradients.count - parameterCount)
                try comm.allReduceGradients(reduced, step: progress.globalStep + group.count)
                if tail[StepSlot.failedRanks.rawValue] > 0 {
                    try comm.agreeOnFailure(localError)
                }
                let globalCount = Int(tail[StepSlot.sampleCount.rawValue].rounded())
                if let exactSum {
                    let microBatches = (globalCount + config.schedule.microBatch - 1) / config.schedule.microBatch
                    try exactSum.reduce(into: gradients, totalMicroBatches: microBatches, step: progress.globalStep + group.count,
                                        communicator: comm)
                }
                timeline.mark(.allReduce, step: progress.globalStep + group.count)
                let stepLoss = Double(tail[StepSlot.lossSum.rawValue]) / Double(max(globalCount, 1))
                guard stepLoss.isFinite else {
                    throw RunFailure("the training loss became \(stepLoss) at epoch \(epoch + 1), step \(step + 1) (global step \(progress.globalStep + group.count)); try a smaller --lr. \(lastCheckpoint.map { "The last good checkpoint is \($0)." } ?? "No checkpoint was written.")")
                }
                // The sum becomes a mean inside the optimizer's pass, unless clipping needs the mean first.
                var scale = 1 / Float(max(globalCount, 1))
                sparsity?.update(activationSums: tail + StepSlot.allCases.count, samples: globalCount)
                if config.optimizer.clipNorm > 0 {
                    for i in 0..<parameterCount { gradients.pointer[i] *= scale }
                    scale = 1
                    clipGradientNorm(gradients, count: parameterCount, to: Float(config.optimizer.clipNorm))
                }
                learningRate = currentLearningRate()
                optimizer.step(parameters: model.parameters, gradients: gradients, learningRate: learningRate, gradientScale: scale)
                timeline.mark(.optimizer, step: progress.globalStep + group.count)

                progress.globalStep += group.count
                progress.stepInEpoch = group.upperBound
                progress.samplesSeen += globalCount
                epochLoss += Double(tail[StepSlot.lossSum.rawValue])
                epochKL += Double(tail[StepSlot.klSum.rawValue])
                epochSamples += globalCount
                let elapsed = Date().timeIntervalSince(epochStart)
                let remaining = Double(schedule.stepsPerEpoch - step - 1) * elapsed / Double(step + 1 - firstStep)
                console.progress(String(format: "epoch %d/%d  step %d/%d  %@ %.4f  %.0f samples/s  ETA %.0fs", epoch + 1, epochs,
                                        step + 1, schedule.stepsPerEpoch, lossName, epochLoss / Double(max(epochSamples, 1)),
                                        Double(epochSamples) / max(elapsed, 1e-9), remaining))
                if crossedMultiple(of: config.run.driftCheckEvery, steps: group.count) {
                    _ = try verifyReplicasIdentical()
                }
                stopPolicy.recordStep(Date().timeIntervalSince(stepStart))
                if tail[StepSlot.ranksWantingToStop.rawValue] > 0 && stopReason == nil {
                    stopReason = stopPolicy.describe(signalSum: tail[StepSlot.signalSum.rawValue],
                                                     signalRanks: tail[StepSlot.signalRanks.rawValue])
                }
                let midEpoch = progress.stepInEpoch < schedule.stepsPerEpoch
                if midEpoch, stopReason != nil || crossedMultiple(of: config.run.checkpointEvery, steps: group.count) {
                    progress.epochLossSum = epochLoss
                    progress.epochSamples = epochSamples
                    progress.epochKLSum = epochKL
                    progress.epochSeconds = epochSecondsBefore + Date().timeIntervalSince(epochStart)
                    try saveCheckpoint(isBest: false)
                }
                timeline.mark(.other, step: progress.globalStep)
                timeline.endStep()
                if firstStepTimes?.end == nil { firstStepTimes?.end = StepTimeline.now() }
                if midEpoch, let stopReason {
                    try reportTimeline(firstStep: firstStepTimes)
                    return summary(samplesPerSecond: Double(epochSamples) / max(progress.epochSeconds, 1e-9), stopReason: stopReason)
                }
            }
            let trainSeconds = epochSecondsBefore + Date().timeIntervalSince(epochStart)
            let rate = Double(epochSamples) / max(trainSeconds, 1e-9)
            epochRates.append(rate)
            let validationStart = Date()
            timeline.resume()
            let validation = try validate()
            timeline.mark(.validation, step: progress.globalStep)
            stopPolicy.recordValidation(Date().timeIntervalSince(validationStart))
            progress.epochsCompleted += 1
            progress.stepInEpoch = 0
            progress.epochLossSum = 0
            progress.epochSamples = 0
            progress.epochKLSum = 0
            progress.epochSeconds = 0
            let metrics = EpochMetrics(epoch: progress.epochsCompleted, globalStep: progress.globalStep,
                                       samplesSeen: progress.samplesSeen,
                                       trainLoss: epochLoss / Double(max(epochSamples, 1)), valLoss: validation.loss,
                                       valMSE: validation.mse, samplesPerSecond: rate,
                                       wallTime: priorWallTime + trainSeconds, learningRate: learningRate)
            priorWallTime = metrics.wallTime
            history.append(metrics)
            let isBest = !validation.loss.isNaN && validation.loss < bestValLoss
            if isBest { bestValLoss = validation.loss }
            timeline.resume()
            try saveCheckpoint(isBest: isBest)
            try comm.together { if comm.isRoot { try directory.appendMetrics(metrics) } }
            timeline.mark(.checkpoint, step: progress.globalStep)
            var line = String(format: "epoch %d/%d  step %d  train %@ %.4f", progress.epochsCompleted, epochs,
                              progress.globalStep, lossName, metrics.trainLoss)
            if architecture.variational {
                // The loss is reconstruction + (β/D)·KL: show both terms.
                let kl = epochKL / Double(max(epochSamples, 1))
                line += String(format: " (recon %.4f + kl %.3f × %.2g)", metrics.trainLoss - Double(model.klWeight) * kl, kl, Double(model.klWeight))
            }
            if !validation.loss.isNaN {
                line += String(format: "  val %@ %.4f", lossName, validation.loss)
                if config.loss != .mse { line += String(format: "  val mse %.4f", validation.mse) }
                if corruption != .none { line += String(format: " (noisy inputs: mse %.4f)", validation.noisyMSE) }
                if architecture.variational {
                    line += String(format: " (recon %.4f + kl %.3f × %.2g)", validation.loss - Double(model.klWeight) * lastValidationKL,
                                   lastValidationKL, Double(model.klWeight))
                }
            }
            line += String(format: "  %.0f samples/s  %.2fs", rate, trainSeconds)
            console.line(line)
            if validation.outputSpread < 1e-6 {
                console.warning(String(format: "the reconstructions are the same for every validation sample (variance across samples %.2g): the model has collapsed to a constant output. The tutorial's convolutional model does this with --loss mse in Keras and PyTorch too; try --loss bce, another --lr or --seed.", validation.outputSpread))
            }
            if let stopReason, progress.epochsCompleted < epochs {
                try reportTimeline(firstStep: firstStepTimes)
                return summary(samplesPerSecond: rate, stopReason: stopReason)
            }
            if let reason = earlyStoppingReason() {
                console.line(reason)
                break
            }
        }
        // The first epoch pays for warm-up (page faults, BLAS buffers): report the median of the rest.
        let steady = epochRates.count > 1 ? Array(epochRates.dropFirst()) : epochRates
        try reportTimeline(firstStep: firstStepTimes)
        return summary(samplesPerSecond: steady.sorted()[steady.count / 2])
    }

    /// Whether the last `steps` steps passed a multiple of `interval` (0: never).
    func crossedMultiple(of interval: Int, steps: Int) -> Bool {
        interval > 0 && progress.globalStep / interval != (progress.globalStep - steps) / interval
    }

    /// The scheduled rate for the next step, from the position in the data (so resumes and rank counts agree).
    func currentLearningRate() -> Double {
        let epoch = Double(progress.epochsCompleted) + Double(progress.stepInEpoch) / Double(max(schedule.stepsPerEpoch, 1))
        return config.schedule.learningRate(base: config.optimizer.learningRate, epoch: epoch)
    }

    /// Every rank holds the same averaged gradient, so each computes the same norm and the same scale.
    func clipGradientNorm(_ gradients: FlatBuffer, count: Int, to limit: Float) {
        var squares: Double = 0
        for i in 0..<count { squares += Double(gradients[i]) * Double(gradients[i]) }
        let norm = Float(squares.squareRoot())
        guard norm > limit else { return }
        let factor = limit / norm
        for i in 0..<count { gradients.pointer[i] *= factor }
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

    /// What per-sample noise (denoising, and a variational model's ε) is keyed by: the epoch and each row's sample.
    /// Plain values, not a closure: a stored closure would cost a heap allocation every step.
    struct NoiseKey {
        let epoch: Int
        /// Row r is sample indices[r] when given, else sample first + r.
        var indices: UnsafePointer<Int32>?
        var first = 0

        init(epoch: Int, indices: UnsafePointer<Int32>) {
            self.epoch = epoch
            self.indices = indices
        }

        init(epoch: Int, first: Int) {
            self.epoch = epoch
            self.first = first
        }

        @inline(__always)
        func sampleIndex(_ row: Int) -> Int { indices.map { Int($0[first + row]) } ?? first + row }

        /// The key of the rows from `offset` on.
        func skipping(_ offset: Int) -> NoiseKey {
            var key = self
            key.first += offset
            return key
        }
    }

    /// Forward, loss and backward for this rank's rows; gradients accumulate into the model's buffer.
    /// Denoising: corrupted copies of `rows` (each sample's noise keyed by its index); otherwise the rows themselves.
    func corrupt(_ rows: UnsafePointer<Float>, count: Int, key: NoiseKey) -> UnsafePointer<Float> {
        guard corruption != .none else { return rows }
        corruption.apply(to: rows, count: count, width: architecture.inputSize, into: corruptedRows.pointer,
                         seed: config.schedule.seed, epoch: key.epoch) { key.sampleIndex($0) }
        return UnsafePointer(corruptedRows.pointer)
    }

    /// The model on `inputs`, the loss against `targets` (the same rows unless denoising), the sparsity penalty and,
    /// for a variational model, the code sampled with each sample's own ε and the weighted KL term.
    func evaluate(inputs: UnsafePointer<Float>, targets: UnsafePointer<Float>, count: Int, withGradient: Bool, key: NoiseKey) -> Loss.Sums {
        if architecture.variational {
            let codeSize = architecture.codeSize
            for row in 0..<count {
                var random = RandomStream(seed: config.schedule.seed, RandomStream.Purpose.reparameterization.rawValue,
                                          UInt64(bitPattern: Int64(key.epoch)), UInt64(key.sampleIndex(row)))
                let e = model.epsilon.pointer + row * codeSize
                for i in 0..<codeSize { e[i] = Float(random.nextGaussian()) }
            }
        }
        model.forward(input: inputs, batch: count)
        var sums = Loss.evaluate(config.loss, outputActivation: architecture.outputActivation, logits: model.outputLogits,
                                 output: model.reconstruction, target: targets, batch: count, width: architecture.inputSize,
                                 gradient: withGradient ? model.outputGradient : nil)
        sums.loss += model.codePenalty(batch: count)
        if let sparsity {
            sums.loss += sparsity.penalty * Double(count)
            if withGradient {
                // The batch's activations feed the next step's estimate ρ̂ (they travel in the step's all-reduce).
                let sums = model.gradients.pointer + model.layout.totalCount + StepSlot.allCases.count
                for row in 0..<count { for j in 0..<sparsity.units { sums[j] += model.code[row * sparsity.units + j] } }
            }
        }
        if architecture.variational {
            sums.kl = model.klDivergence(batch: count)
            sums.loss += Double(model.klWeight) * sums.kl
        }
        return sums
    }

    func computeGradients(inputs: UnsafePointer<Float>, targets: UnsafePointer<Float>, count: Int, key: NoiseKey) -> Loss.Sums {
        guard count > 0 else { return Loss.Sums() }
        let sums = evaluate(inputs: inputs, targets: targets, count: count, withGradient: true, key: key)
        timeline.mark(.forward, step: progress.globalStep + 1)
        model.backward(input: inputs, batch: count)
        timeline.mark(.backward, step: progress.globalStep + 1)
        return sums
    }

    /// Collective: the step-time breakdown (mean over ranks), the time from MPI's start to the end of the first
    /// step, heap allocations per timed step when counted, and the timeline file when asked for.
    func reportTimeline(firstStep: (start: Int64, end: Int64?)?) throws {
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

    /// Deterministic mode: each micro-batch's gradient on its own, kept for the exact sum.
    func computeMicroBatchGradients(inputs: UnsafePointer<Float>, targets: UnsafePointer<Float>, count: Int, key: NoiseKey) -> Loss.Sums {
        guard let exactSum else { return computeGradients(inputs: inputs, targets: targets, count: count, key: key) }
        exactSum.reset()
        var total = Loss.Sums()
        let microBatch = config.schedule.microBatch
        for start in stride(from: 0, to: count, by: microBatch) {
            model.gradients.pointer.update(repeating: 0, count: exactSum.parameterCount)
            let offset = start * architecture.inputSize
            let sums = computeGradients(inputs: inputs + offset, targets: targets + offset, count: min(microBatch, count - start),
                                        key: key.skipping(start))
            exactSum.store(model.gradients)
            total.loss += sums.loss
            total.squaredError += sums.squaredError
            total.kl += sums.kl
        }
        return total
    }

    /// Mean loss and MSE over the whole validation set, each rank evaluating a contiguous share.
    /// Denoising models see validation inputs corrupted with noise fixed per sample and are scored against the
    /// clean samples; `noisyMSE` is how far those inputs are from the clean ones (0 without noise).
    /// `outputSpread` is the mean over output values of their variance across samples: near 0 when the model
    /// answers every input with the same picture (collapse).
    func validate() throws -> (loss: Double, mse: Double, noisyMSE: Double, outputSpread: Double) {
        guard let valSet else { return (.nan, .nan, .nan, .nan) }
        let comm = communicator
        let mine = BatchSchedule.slice(of: 0..<valSet.rowCount, rank: comm.rank, size: comm.size)
        let width = architecture.inputSize
        // Loss, squared error, samples, noisy-input error; then per output value its sum and sum of squares.
        var sums = [Double](repeating: 0, count: 4 + 2 * width)
        var validationKL = 0.0
        try comm.together {
            var start = mine.lowerBound
            while start < mine.upperBound {
                let chunk = start..<min(start + maxRowsPerRank, mine.upperBound)
                try valSet.read(chunk, into: validationRows.pointer)
                let key = NoiseKey(epoch: Corruption.validationEpoch, first: chunk.lowerBound)
                let inputs = corrupt(validationRows.pointer, count: chunk.count, key: key)
                let chunkSums = evaluate(inputs: inputs, targets: validationRows.pointer, count: chunk.count, withGradient: false, key: key)
                validationKL += chunkSums.kl
                sums[0] += chunkSums.loss
                sums[1] += chunkSums.squaredError
                sums[2] += Double(chunk.count)
                if corruption != .none {
                    for i in 0..<(chunk.count * width) {
                        let difference = Double(inputs[i] - validationRows[i])
                        sums[3] += difference * difference / Double(width)
                    }
                }
                for row in 0..<chunk.count {
                    let output = model.reconstruction + row * width
                    for j in 0..<width {
                        let value = Double(output[j])
                        sums[4 + j] += value
                        sums[4 + width + j] += value * value
                    }
                }
                start = chunk.upperBound
            }
        }
        sums.append(validationKL)
        try comm.allReduceSum(&sums)
        lastValidationKL = sums.last! / sums[2]
        let count = sums[2]
        var spread = 0.0
        for j in 0..<width {
            let mean = sums[4 + j] / count
            spread += max(sums[4 + width + j] / count - mean * mean, 0)
        }
        return (sums[0] / count, sums[1] / count, sums[3] / count, spread / Double(width))
    }

    func saveCheckpoint(isBest: Bool) throws {
        progress.sparsityEstimate = sparsity?.estimate ?? []
        let started = Date()
        defer { stopPolicy.recordCheckpoint(Date().timeIntervalSince(started)) }
        let comm = communicator
        let path: String? = try comm.whileRootWorksAlone { try comm.together {
            guard comm.isRoot else { return nil }
            let checkpoint = Checkpoint(config: config, layout: model.layout, parameters: model.parameters,
                                        optimizerName: config.optimizer.kind.rawValue, optimizerStep: optimizer.stepCount,
                                        optimizerState: optimizer.state, progress: progress, metrics: history,
                                        worldSize: comm.size, aedistVersion: AEDistVersion.string)
            return try directory.save(checkpoint, isBest: isBest, keep: config.run.keep)
        } }
        lastCheckpoint = path ?? CheckpointDirectory.fileName(for: progress)
    }

    private func summary(samplesPerSecond: Double, stopReason: String? = nil) -> TrainingSummary {
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
