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
    /// Faults on purpose, for the tests of failure handling (`AEDIST_FAULT` sets it from the command line).
    public var fault: FaultInjection?
    /// The names under which the user set the values two configurations differ in (the command line's flags; the
    /// config file's keys by default), for messages that say what to pass.
    public var flagsThatDiffer: @Sendable (TrainingConfig, TrainingConfig) -> [String]
    /// Write a checkpoint of the initial parameters (step 0) before the first step.
    public var saveInitial = false

    public init(resume: ResumeRequest = .none, timeLimit: TimeInterval? = nil, startTime: Date = Date(), mpiStart: Date? = nil,
                timelinePath: String? = nil, fault: FaultInjection? = nil,
                flagsThatDiffer: @escaping @Sendable (TrainingConfig, TrainingConfig) -> [String] = { $0.differingKeys(from: $1) }) {
        self.resume = resume
        self.timeLimit = timeLimit
        self.startTime = startTime
        self.mpiStart = mpiStart
        self.timelinePath = timelinePath
        self.fault = fault
        self.flagsThatDiffer = flagsThatDiffer
    }
}

/// What a run trains on, agreed by every rank before anything is allocated: the checked configuration and its
/// model, the data sets (fitting the model), the batch schedule and the checkpoint folder.
struct TrainingSetup {
    let config: TrainingConfig
    let architecture: ModelArchitecture
    let trainSet: SampleSet
    let valSet: SampleSet?
    let schedule: BatchSchedule
    let directory: CheckpointDirectory
    /// The most rows of one global batch this rank computes: every buffer is sized for it.
    let maxRowsPerRank: Int

    /// Collective: each step fails on every rank together.
    init(config: TrainingConfig, communicator comm: Communicator) throws {
        self.config = config
        architecture = try comm.together { try config.validate() }
        try Self.checkRanksAgree(config: config, layout: architecture.parameterLayout, communicator: comm)

        let directory = CheckpointDirectory(path: config.run.checkpointDir)
        self.directory = directory
        try comm.together { if comm.isRoot { try directory.prepare() } }

        let (train, validation) = try comm.together { try Self.openData(config.data, loss: config.loss) }
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
        schedule = BatchSchedule(sampleCount: train.rowCount, globalBatchSize: config.schedule.batchSize, seed: config.schedule.seed)
        try Self.checkBatchStatistics(architecture, schedule: schedule)
        maxRowsPerRank = BatchSchedule.maxSliceCount(globalBatchSize: min(config.schedule.batchSize, train.rowCount),
                                                     size: comm.size, microBatch: config.schedule.deterministic ? config.schedule.microBatch : nil)
    }

    /// BatchNorm needs two values per channel in every global batch, or its variance is undefined (PyTorch stops
    /// with "Expected more than 1 value per channel"): refused before training, naming the layer and the batch.
    static func checkBatchStatistics(_ architecture: ModelArchitecture, schedule: BatchSchedule) throws {
        let last = schedule.globalBatch(step: schedule.stepsPerEpoch - 1).count
        let smallest = min(schedule.globalBatchSize, last)
        for layer in architecture.layers where layer.spansTheBatch {
            let perSample = layer.inputSize / max(layer.inputShape.last!, 1)
            guard perSample * smallest < 2 else { continue }
            let which = last < schedule.globalBatchSize
                ? "the last batch of each epoch holds \(schedule.sampleCount) mod \(schedule.globalBatchSize) = \(last) sample"
                : "--batch-size is \(schedule.globalBatchSize)"
            throw RunFailure("\(layer.name) (\(layer.description)) would normalise 1 value per channel in a global batch of 1 sample (\(which)): its batch variance is undefined; choose a --batch-size that leaves at least 2 samples in every batch")
        }
    }

    /// Samples per micro-batch in deterministic mode; nil otherwise.
    var deterministicMicroBatch: Int? { config.schedule.deterministic ? config.schedule.microBatch : nil }

    /// Binary cross-entropy is a loss for targets in [0, 1]; others give it negative "losses" and train on nonsense.
    static func requirement(for loss: LossKind) -> ValueRequirement? {
        switch loss {
        case .bce: return ValueRequirement(range: 0...1, reason: "--loss bce needs targets in [0, 1]",
                                           remedy: "rescale them with --scale (or the dataset's 'scale' attribute), or use --loss mse")
        case .mse: return nil
        }
    }

    static func openData(_ data: DataConfig, loss: LossKind) throws -> (SampleSet, SampleSet?) {
        let requirement = requirement(for: loss)
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
                                      scale: data.scale, cache: data.cache, channelsFirst: data.channelsFirst, requiring: requirement)
            let validation = try SampleSet(file: file, datasetPath: data.trainDataset, rows: (total - held)..<total,
                                           scale: data.scale, cache: data.cache, channelsFirst: data.channelsFirst, requiring: requirement)
            return (train, validation)
        }
        let train = try SampleSet(file: file, datasetPath: data.trainDataset, scale: data.scale, cache: data.cache,
                                  channelsFirst: data.channelsFirst, requiring: requirement)
        let validation = try data.valDataset.map {
            try SampleSet(file: file, datasetPath: $0, scale: data.scale, cache: data.cache, channelsFirst: data.channelsFirst, requiring: requirement)
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

    /// The start-up lines: the model, and the data, ranks and BLAS.
    func describe(ranks: Int) -> [String] {
        let dataName = config.data.path == nil ? "embedded MNIST subset \(config.data.trainDataset)" : trainSet.name
        let validation = valSet.map { config.data.path == nil && config.data.valFraction == nil ? "embedded \(config.data.valDataset ?? "")" : $0.name } ?? "none"
        return ["aedist: \(architecture.description); \(architecture.parameterLayout.totalCount) parameters",
                "data: \(dataName) (\(trainSet.rowCount) samples\(trainSet.isCached ? ", in memory" : ", streamed")), validation: \(validation); \(ranks) rank\(ranks == 1 ? "" : "s"), global batch \(config.schedule.batchSize), \(schedule.stepsPerEpoch) steps/epoch, BLAS \(BLAS.coreName) × \(BLAS.threads) thread\(BLAS.threads == 1 ? "" : "s")\(BLAS.threadChoice)"]
    }
}
