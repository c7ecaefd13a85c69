import Foundation

/// Everything that decides how a run trains: model, loss, data, optimizer, schedule and run options. One value,
/// built from defaults, an optional config file and command-line flags (in that order), agreed on by every rank
/// and stored whole in each checkpoint, so a checkpoint alone says how it was made.
public struct TrainingConfig: Codable, Equatable, Sendable {
    public var model = ModelConfig()
    public var loss = LossKind.bce
    public var data = DataConfig()
    public var optimizer = OptimizerConfig()
    public var schedule = ScheduleConfig()
    public var run = RunConfig()

    public init() {}

    enum CodingKeys: String, CodingKey, CaseIterable { case model, loss, data, optimizer, schedule, run }

    /// The keys a config file may use, by section: a misspelt key is an error, not a silent default.
    public static let knownKeys: [String: [String]] = [
        "": CodingKeys.allCases.map(\.rawValue),
        "model": ModelConfig.CodingKeys.allCases.map(\.rawValue),
        "data": DataConfig.CodingKeys.allCases.map(\.rawValue),
        "optimizer": OptimizerConfig.CodingKeys.allCases.map(\.rawValue),
        "schedule": ScheduleConfig.CodingKeys.allCases.map(\.rawValue),
        "run": RunConfig.CodingKeys.allCases.map(\.rawValue),
    ]

    /// Canonical JSON (sorted keys): what checkpoints store and what ranks hash to check they agree.
    public func canonicalJSON() -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return String(decoding: try! encoder.encode(self), as: UTF8.self)
    }

    /// The config-file keys ("model.spec", "optimizer.lr") whose values differ between `other` and this.
    public func differingKeys(from other: TrainingConfig) -> [String] {
        func tree(_ config: TrainingConfig) -> [String: Any] {
            (try? JSONSerialization.jsonObject(with: Data(config.canonicalJSON().utf8))) as? [String: Any] ?? [:]
        }
        func leaves(_ value: Any, _ path: String, into result: inout [String: String]) {
            if let mapping = value as? [String: Any] {
                for (key, child) in mapping { leaves(child, path.isEmpty ? key : "\(path).\(key)", into: &result) }
            } else {
                result[path] = "\(value)"
            }
        }
        var mine: [String: String] = [:], theirs: [String: String] = [:]
        leaves(tree(self), "", into: &mine)
        leaves(tree(other), "", into: &theirs)
        return Set(mine.keys).union(theirs.keys).filter { mine[$0] != theirs[$0] }.sorted()
    }

    public func prettyJSON() -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .prettyPrinted]
        return String(decoding: try! encoder.encode(self), as: UTF8.self)
    }

    public static func fromJSON(_ text: String) throws -> TrainingConfig {
        guard let tree = try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any] else {
            throw ConfigError("a configuration must be a mapping of sections (model, loss, data, optimizer, schedule, run)")
        }
        return try decode(mergingOverDefaults: tree)
    }

    /// A configuration from a parsed config file or stored config (JSON-compatible values), each key it gives
    /// merged over the defaults: a file names only what it changes, and a checkpoint written before an option
    /// existed reads with that option's default. The decoding itself is the compiler's (synthesized Codable).
    public static func decode(mergingOverDefaults tree: [String: Any]) throws -> TrainingConfig {
        func merge(_ base: [String: Any], _ override: [String: Any]) -> [String: Any] {
            var merged = base
            for (key, value) in override {
                if let section = value as? [String: Any], let defaults = base[key] as? [String: Any] {
                    merged[key] = merge(defaults, section)
                } else {
                    merged[key] = value
                }
            }
            return merged
        }
        let defaults = try JSONSerialization.jsonObject(with: Data(TrainingConfig().canonicalJSON().utf8)) as! [String: Any]
        let merged = merge(defaults, tree)
        guard JSONSerialization.isValidJSONObject(merged) else {
            throw ConfigError("a configuration holds values that are not text, numbers, booleans or null")
        }
        return try JSONDecoder().decode(TrainingConfig.self, from: JSONSerialization.data(withJSONObject: merged))
    }

    /// Cross-field checks. Each problem names the option a user would change. Returns the model the spec stands
    /// for: the one place a run parses it.
    @discardableResult
    public func validate() throws -> ModelArchitecture {
        func fail(_ message: String) throws -> Never { throw ConfigError(message) }
        // Options that others are checked against come first, so a bad value is blamed on the option that has it.
        if !(optimizer.learningRate > 0) || !optimizer.learningRate.isFinite {
            try fail("--lr must be a positive number (got \(optimizer.learningRate))")
        }
        let architecture = try ModelArchitecture(model)
        if loss == .bce && architecture.outputActivation != .sigmoid {
            let output = architecture.layers[architecture.outputLayerIndex]
            let fix = output.activation == model.outputActivation
                ? "pass --output-activation sigmoid" : "write ':sigmoid' after \(output.name)'s layer in --model"
            try fail("--loss bce needs a sigmoid output, but the output layer \(output.name) is \(output.activation.rawValue): \(fix), or use --loss mse")
        }
        if !(model.beta >= 0 && model.beta.isFinite) { try fail("--beta must be 0 or more (got \(model.beta))") }
        if !(model.sparsityTarget >= 0 && model.sparsityTarget < 1) { try fail("--sparsity-target must be in (0, 1), or 0 for off (got \(model.sparsityTarget))") }
        if !(model.sparsityWeight >= 0 && model.sparsityWeight.isFinite) { try fail("--sparsity-weight must be 0 or more (got \(model.sparsityWeight))") }
        if model.sparsityTarget > 0 {
            guard architecture.codeLayer.activation == .sigmoid, !model.variational else {
                throw ConfigError("--sparsity-target needs a sigmoid code: give the code layer ':sigmoid' (e.g. dense:784-64:sigmoid) or --activation sigmoid")
            }
            if schedule.deterministic { try fail("--sparsity-target with --deterministic is not supported yet") }
        }
        if model.variational && model.l1Activity > 0 { try fail("--l1-activity does not apply to --variational models (their code is a distribution)") }
        if !(model.l1Activity >= 0 && model.l1Activity.isFinite) { try fail("--l1-activity must be 0 or more (got \(model.l1Activity))") }
        if schedule.batchSize < 1 { try fail("--batch-size must be at least 1 (got \(schedule.batchSize))") }
        if !(schedule.warmupEpochs >= 0 && schedule.warmupEpochs.isFinite) { try fail("--warmup-epochs must be 0 or more (got \(schedule.warmupEpochs))") }
        if schedule.stepEpochs < 1 { try fail("--step-epochs must be at least 1 (got \(schedule.stepEpochs))") }
        if !(schedule.gamma > 0 && schedule.gamma <= 1) { try fail("--gamma must be in (0, 1] (got \(schedule.gamma))") }
        if !(schedule.minLR >= 0 && schedule.minLR <= optimizer.learningRate) { try fail("--min-lr must be between 0 and --lr (got \(schedule.minLR))") }
        if schedule.earlyStoppingPatience < 0 { try fail("--early-stopping-patience must be 0 (off) or more epochs") }
        if !(schedule.minDelta >= 0 && schedule.minDelta.isFinite) { try fail("--min-delta must be 0 or more (got \(schedule.minDelta))") }
        if !(optimizer.clipNorm >= 0 && optimizer.clipNorm.isFinite) { try fail("--clip-norm must be 0 (off) or a positive number (got \(optimizer.clipNorm))") }
        if schedule.earlyStoppingPatience > 0 && data.valDataset == nil && data.valFraction == nil {
            try fail("--early-stopping-patience needs a validation set (--val-dataset or --val-fraction)")
        }
        if schedule.accumulation < 1 { try fail("--accumulate must be at least 1 batch (got \(schedule.accumulation))") }
        if schedule.accumulation > 1 && schedule.deterministic {
            try fail("--accumulate with --deterministic is not supported yet; use a larger --batch-size instead")
        }
        if schedule.microBatch < 1 || schedule.microBatch > 1 << 30 {
            try fail("--micro-batch must be between 1 and \(1 << 30) (got \(schedule.microBatch))")
        }
        if schedule.epochs < 0 { try fail("--epochs must be 0 or more (got \(schedule.epochs))") }
        if !(0..<1).contains(optimizer.momentum) { try fail("--momentum must be in [0, 1) (got \(optimizer.momentum))") }
        if optimizer.nesterov && (optimizer.kind != .sgd || optimizer.momentum == 0) {
            try fail("--nesterov needs --optimizer sgd with --momentum > 0")
        }
        if !(0..<1).contains(optimizer.beta1) { try fail("--beta1 must be in [0, 1) (got \(optimizer.beta1))") }
        if !(0..<1).contains(optimizer.beta2) { try fail("--beta2 must be in [0, 1) (got \(optimizer.beta2))") }
        if !(0..<1).contains(optimizer.rho) { try fail("--rho must be in [0, 1) (got \(optimizer.rho))") }
        if !(optimizer.epsilon > 0 && optimizer.epsilon.isFinite) { try fail("--epsilon must be a positive number (got \(optimizer.epsilon))") }
        if !(optimizer.weightDecay >= 0 && optimizer.weightDecay.isFinite) {
            try fail("--weight-decay must be a number ≥ 0 (got \(optimizer.weightDecay))")
        }
        if let fraction = data.valFraction, !(fraction > 0 && fraction < 1) {
            try fail("--val-fraction must be between 0 and 1 (got \(fraction))")
        }
        if let scale = data.scale, !(scale.isFinite && scale > 0) { try fail("--scale must be a positive number (got \(scale))") }
        if run.keep < 1 { try fail("--keep must be at least 1 (got \(run.keep))") }
        if run.checkpointEvery < 0 { try fail("--checkpoint-every must be 0 (epoch ends only) or more steps") }
        if run.driftCheckEvery < 0 { try fail("--drift-check-every must be 0 (at the end only) or more steps") }
        if run.checkpointDir.isEmpty { try fail("--checkpoint-dir must not be empty") }
        return architecture
    }
}

public struct ConfigError: Error, CustomStringConvertible, Equatable {
    public let description: String
    public init(_ description: String) { self.description = description }
}

public enum LossKind: String, Codable, CaseIterable, Sendable {
    /// Mean squared error over every output value.
    case mse
    /// Binary cross-entropy over every output value, computed from logits (needs a sigmoid output).
    case bce
}

public struct ModelConfig: Codable, Equatable, Sendable {
    /// "dense:784-128-64": encoder widths from the input to the code; the decoder mirrors them. A width may carry its
    /// own activation ("dense:784-256:tanh-32:linear").
    public var spec = "dense:784-32"
    /// Activation of every hidden layer (the code included) unless the spec says otherwise.
    public var activation = Activation.relu
    public var outputActivation = Activation.sigmoid
    /// Denoising: the corruption of training (and validation) inputs; stored as "none", "gaussian:SIGMA" or
    /// "mask:FRACTION".
    public var noise = Corruption.none
    /// Sparse autoencoder: weight λ of the L1 activity penalty λ·Σ|code| added to each sample's loss.
    public var l1Activity = 0.0
    /// Variational autoencoder: the encoder outputs μ and log σ² of the code, which is sampled by
    /// reparameterisation; the loss adds β·KL(q(z|x) ‖ N(0, I)) per value of the sample.
    public var variational = false
    public var beta = 1.0
    /// Sparse autoencoder, KL form: target mean activation ρ of sigmoid code units (0: off), with weight
    /// `sparsityWeight`: adds weight·Σ_j KL(ρ ‖ ρ̂_j) to the loss.
    public var sparsityTarget = 0.0
    public var sparsityWeight = 1.0

    public init() {}

    enum CodingKeys: String, CodingKey, CaseIterable {
        case spec, activation, noise, variational, beta
        case outputActivation = "output_activation", l1Activity = "l1_activity"
        case sparsityTarget = "sparsity_target", sparsityWeight = "sparsity_weight"
    }
}

public struct DataConfig: Codable, Equatable, Sendable {
    /// HDF5 file; nil means the embedded MNIST subset.
    public var path: String?
    public var trainDataset = "/train/x"
    /// nil with `valFraction` nil means: no validation set.
    public var valDataset: String? = "/val/x"
    /// Hold this fraction of the training rows out for validation instead of reading `valDataset`.
    public var valFraction: Double?
    /// Multiplier for integer data; nil means the dataset's `scale` attribute, else 1/255 for uint8.
    public var scale: Double?
    public var cache = CachePolicy.auto
    /// Images stored N×C×H×W (PyTorch's order) rather than N×H×W×C; aedist computes channels-last.
    public var channelsFirst = false

    public init() {}

    public enum CachePolicy: String, Codable, CaseIterable, Sendable {
        /// Keep the rows in memory when they take at most 2 GiB as float32, else read each batch from the file.
        case auto
        case always, never
    }

    enum CodingKeys: String, CodingKey, CaseIterable {
        case path, scale, cache
        case trainDataset = "train_dataset", valDataset = "val_dataset", valFraction = "val_fraction"
        case channelsFirst = "channels_first"
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(path, forKey: .path)
        try c.encode(trainDataset, forKey: .trainDataset)
        try c.encode(valDataset, forKey: .valDataset)
        try c.encode(valFraction, forKey: .valFraction)
        try c.encode(scale, forKey: .scale)
        try c.encode(cache, forKey: .cache)
        try c.encode(channelsFirst, forKey: .channelsFirst)
    }
}

public struct OptimizerConfig: Codable, Equatable, Sendable {
    public enum Kind: String, Codable, CaseIterable, Sendable { case sgd, adam, adamw, rmsprop }

    public var kind = Kind.adam
    public var learningRate = 1e-3
    /// SGD and RMSprop momentum (PyTorch semantics: v = μ·v + g).
    public var momentum = 0.0
    public var nesterov = false
    public var beta1 = 0.9
    public var beta2 = 0.999
    /// RMSprop's smoothing constant (PyTorch's `alpha`, Keras's `rho`).
    public var rho = 0.99
    public var epsilon = 1e-8
    /// L2 penalty added to the gradient (sgd, adam, rmsprop) or decoupled decay (adamw).
    public var weightDecay = 0.0
    /// Rescale the averaged gradient when its global L2 norm exceeds this (0: never), as clip_grad_norm_ does.
    public var clipNorm = 0.0

    public init() {}

    enum CodingKeys: String, CodingKey, CaseIterable {
        case kind = "name", momentum, nesterov, beta1, beta2, rho, epsilon
        case learningRate = "lr", weightDecay = "weight_decay", clipNorm = "clip_norm"
    }
}

public struct ScheduleConfig: Codable, Equatable, Sendable {
    public var epochs = 10
    /// The global batch: summed over all ranks. The sample order depends on it and the seed, never on the ranks.
    public var batchSize = 256
    public var seed: UInt64 = 0
    /// Bit-identical results whatever the number of ranks: gradients of fixed micro-batches summed exactly.
    public var deterministic = false
    /// Samples per micro-batch in deterministic mode.
    public var microBatch = 32
    /// Global batches whose gradients add up before each optimizer step (one all-reduce per step).
    public var accumulation = 1
    public var lrSchedule = LearningRateSchedule.constant
    /// Linear warm-up from (almost) 0 to lr over this many epochs (fractions allowed), as Horovod recommends when
    /// the global batch grows with the ranks; the very first step runs at lr/1000.
    public var warmupEpochs = 0.0
    /// Step decay: multiply the rate by `gamma` every `stepEpochs` epochs.
    public var stepEpochs = 10
    public var gamma = 0.1
    /// Cosine decay ends at this rate.
    public var minLR = 0.0
    /// Stop when the validation loss has not improved by `minDelta` for this many epochs (0: never).
    public var earlyStoppingPatience = 0
    public var minDelta = 0.0

    public init() {}

    public enum LearningRateSchedule: String, Codable, CaseIterable, Sendable { case constant, step, cosine }

    enum CodingKeys: String, CodingKey, CaseIterable {
        case epochs, seed, deterministic, gamma, accumulation
        case batchSize = "batch_size", microBatch = "micro_batch", lrSchedule = "lr_schedule"
        case warmupEpochs = "warmup_epochs", stepEpochs = "step_epochs", minLR = "min_lr"
        case earlyStoppingPatience = "early_stopping_patience", minDelta = "min_delta"
    }
}

public struct RunConfig: Codable, Equatable, Sendable {
    public var checkpointDir = "checkpoints"
    /// How many of the newest checkpoints to keep (the best by validation loss is kept as well).
    public var keep = 3
    /// Also checkpoint every this many steps (0: at the end of each epoch only).
    public var checkpointEvery = 0
    /// Compare a checksum of every replica's parameters every this many steps (0: only at the end).
    public var driftCheckEvery = 100

    public init() {}

    enum CodingKeys: String, CodingKey, CaseIterable {
        case keep
        case checkpointDir = "checkpoint_dir", checkpointEvery = "checkpoint_every", driftCheckEvery = "drift_check_every"
    }
}

/// An error whose description is a complete message for the user (names the file, option or shape at fault).
public protocol UserFacingError: Error, CustomStringConvertible {}

extension ConfigError: UserFacingError {}

/// The message to show for any error: ours say what went wrong; system errors get Foundation's description.
public func userMessage(_ error: Error) -> String {
    (error as? UserFacingError)?.description ?? error.localizedDescription
}
