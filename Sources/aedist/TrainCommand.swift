import AEDistCore
import AEDistIO
import AEDistTraining
import ArgumentParser
import Foundation

/// `aedist train`. Options are optional so that only the flags a user types override the config file.
struct TrainCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "train",
        abstract: "Train an autoencoder data-parallel across the ranks of an MPI job.",
        discussion: """
        Run it under mpirun (or srun): every rank holds a replica, computes its slice of each global batch, and the \
        gradients are summed with one MPI all-reduce per step. Without --data it trains on the embedded MNIST subset.
        Settings come from the defaults, then --config FILE, then the flags given here; --resume continues with the \
        settings its checkpoint stores, which the flags given here change.
        Model specs (--model; docs/models.md has the whole grammar):
          dense:784-256-bn-drop0.2-32   widths from the input to the code, the
              decoder mirrored; 256:tanh sets an activation; bn, dropR after a width
          conv:28x28x1/c32-p2-c32-p2/t32s2-t32s2-c1   input HxWxC/encoder/decoder:
              cF conv (kK kernel, sS stride, v valid), tF transposed conv,
              pN max-pool, uN upsample, bn, dropR, f flatten, dN dense,
              rHxWxC reshape; ':act' after a layer sets its activation
        Examples:
          mpirun -n 8 aedist train
          mpirun -n 4 aedist train --data faces.h5 --train-dataset /train/x --val-fraction 0.1 --model dense:4096-512-64
        """)

    @Option(help: ArgumentHelp("YAML or JSON config file (keys as in a checkpoint's config).", valueName: "file.yaml"))
    var config: String?

    // Every option below sets one value of TrainingConfig: its default is printed from there, and `configFlags`
    // (after the options) says which. Numbers parse unconditionally so that `--lr -1` reaches validation.

    // Data
    @OptionGroup var samples: SampleFile
    @Option(help: .config("Dataset of training samples, N×D or N×H×W×C.", \.data.trainDataset, valueName: "path"))
    var trainDataset: String?
    @Option(help: .config("Dataset of validation samples, or 'none'.", \.data.valDataset, valueName: "path"))
    var valDataset: String?
    @Option(parsing: .unconditional, help: ArgumentHelp("Hold out this fraction of the training rows (the last ones) for validation instead of --val-dataset.", valueName: "fraction"))
    var valFraction: Double?
    @Option(help: .config("Keep samples in memory: auto (if ≤ 2 GiB as float32), always, never.", \.data.cache))
    var cache: DataConfig.CachePolicy?
    @Flag(help: "Images are stored N×C×H×W (PyTorch's order) instead of N×H×W×C.")
    var channelsFirst = false

    // Model and loss
    @Option(help: .config("Model: dense:IN-H1-…-CODE (decoder mirrored; a width may carry an activation, e.g. dense:784-256:tanh-32:linear) or conv:H×W×C/ENCODER/DECODER (see docs/models.md).", \.model.spec, valueName: "spec"))
    var model: String?
    @Option(help: .config("Hidden-layer activation.", \.model.activation))
    var activation: Activation?
    @Option(help: .config("Output activation.", \.model.outputActivation))
    var outputActivation: Activation?
    @Option(help: .config("Loss: bce (binary cross-entropy, from logits; targets in [0, 1]) or mse.", \.loss))
    var loss: LossKind?
    @Option(help: .config("Denoising: corrupt inputs with gaussian:SIGMA (then clipped to [0, 1]) or mask:FRACTION; the target stays the clean sample.", \.model.noise, valueName: "kind:amount"),
            transform: { try Corruption($0) })
    var noise: Corruption?
    @Option(parsing: .unconditional, help: .config("Sparse autoencoder: L1 activity penalty λ·Σ|code| per sample.", \.model.l1Activity, valueName: "lambda"))
    var l1Activity: Double?
    @Option(parsing: .unconditional, help: .config("Sparse autoencoder, KL form: target mean activation ρ of the (sigmoid) code units; 0 is off.", \.model.sparsityTarget, valueName: "rho"))
    var sparsityTarget: Double?
    @Option(parsing: .unconditional, help: .config("Weight of the KL sparsity penalty.", \.model.sparsityWeight, valueName: "weight"))
    var sparsityWeight: Double?
    @Flag(help: "Variational autoencoder: the encoder's last layer gives μ and log σ² of the code (twice its width), the decoder starts from a sample z = μ + σ·ε, and the loss adds β·KL.")
    var variational = false
    @Option(parsing: .unconditional, help: .config("Weight β of the KL term of a variational model, per value of the sample.", \.model.beta))
    var beta: Double?

    // Optimizer
    @Option(help: .config("Optimizer (PyTorch's update rules).", \.optimizer.kind))
    var optimizer: OptimizerConfig.Kind?
    @Option(parsing: .unconditional, help: .config("Learning rate.", \.optimizer.learningRate, valueName: "rate"))
    var lr: Double?
    @Option(parsing: .unconditional, help: .config("Momentum for sgd and rmsprop.", \.optimizer.momentum))
    var momentum: Double?
    @Flag(help: "Nesterov momentum (sgd).")
    var nesterov = false
    @Option(parsing: .unconditional, help: .config("Adam β1.", \.optimizer.beta1))
    var beta1: Double?
    @Option(parsing: .unconditional, help: .config("Adam β2.", \.optimizer.beta2))
    var beta2: Double?
    @Option(parsing: .unconditional, help: .config("RMSprop smoothing constant, PyTorch's alpha.", \.optimizer.rho))
    var rho: Double?
    @Option(parsing: .unconditional, help: .config("Denominator epsilon for adam, adamw, rmsprop.", \.optimizer.epsilon))
    var epsilon: Double?
    @Option(parsing: .unconditional, help: .config("Weight decay: L2 added to the gradient (sgd, adam, rmsprop) or decoupled (adamw).", \.optimizer.weightDecay))
    var weightDecay: Double?
    @Option(parsing: .unconditional, help: .config("Clip the averaged gradient to this global L2 norm; 0 is off.", \.optimizer.clipNorm, valueName: "norm"))
    var clipNorm: Double?
    @Option(help: .config("Learning-rate schedule: constant, step (× --gamma every --step-epochs), cosine (to --min-lr).", \.schedule.lrSchedule))
    var lrSchedule: ScheduleConfig.LearningRateSchedule?
    @Option(parsing: .unconditional, help: .config("Linear learning-rate warm-up over this many epochs.", \.schedule.warmupEpochs, valueName: "epochs"))
    var warmupEpochs: Double?
    @Option(parsing: .unconditional, help: .config("Step schedule: epochs between decays.", \.schedule.stepEpochs, valueName: "n"))
    var stepEpochs: Int?
    @Option(parsing: .unconditional, help: .config("Step schedule: decay factor.", \.schedule.gamma))
    var gamma: Double?
    @Option(parsing: .unconditional, help: .config("Cosine schedule: final learning rate.", \.schedule.minLR))
    var minLr: Double?
    @Option(parsing: .unconditional, help: .config("Stop when the validation loss has not improved for this many epochs; 0 is off.", \.schedule.earlyStoppingPatience, valueName: "epochs"))
    var earlyStoppingPatience: Int?
    @Option(parsing: .unconditional, help: .config("Early stopping: the smallest decrease that counts as an improvement.", \.schedule.minDelta))
    var minDelta: Double?

    // Schedule
    @Option(parsing: .unconditional, help: .config("Epochs to train in all, counting those a resumed checkpoint already did.", \.schedule.epochs, valueName: "n"))
    var epochs: Int?
    @Option(parsing: .unconditional, help: .config("Global batch size, summed over all ranks.", \.schedule.batchSize, valueName: "n"))
    var batchSize: Int?
    @Option(parsing: .unconditional, help: .config("Seed for initialisation and shuffling.", \.schedule.seed, valueName: "n"))
    var seed: UInt64?
    @Flag(help: "Bit-identical parameters whatever the number of ranks, and across any stop and resume: gradients of fixed micro-batches are summed exactly (fixed-point integers); one BLAS thread per rank.")
    var deterministic = false
    @Option(parsing: .unconditional, help: .config("Samples per micro-batch with --deterministic.", \.schedule.microBatch, valueName: "n"))
    var microBatch: Int?
    @Option(parsing: .unconditional, help: .config("Add up the gradients of this many global batches before each optimizer step: one all-reduce per step, an effective batch this many times larger.", \.schedule.accumulation, valueName: "k"))
    var accumulate: Int?

    // Checkpoints
    @Option(help: .config("Folder for checkpoints and metrics.csv.", \.run.checkpointDir, valueName: "dir"))
    var checkpointDir: String?
    @Option(parsing: .unconditional, help: .config("Keep the newest K checkpoints, plus the best.", \.run.keep, valueName: "k"))
    var keep: Int?
    @Option(parsing: .unconditional, help: .config("Also checkpoint every N steps; 0: at epoch ends only.", \.run.checkpointEvery, valueName: "n"))
    var checkpointEvery: Int?
    @Option(parsing: .unconditional, help: .config("Compare a checksum of every replica's parameters every N steps; a mismatch stops the run; 0: only at the end.", \.run.driftCheckEvery, valueName: "n"))
    var driftCheckEvery: Int?
    @Option(help: ArgumentHelp("Continue from a checkpoint: 'auto' (the folder's latest.h5, or start fresh if none) or a file.", valueName: "auto|path"))
    var resume: String?
    @Flag(help: "Also write a checkpoint of the initial parameters (step 0, ckpt-e0000-s0000000.h5) before the first step: to compare gradients with another framework from the same start.")
    var saveInitial = false

    // Batch jobs
    @Option(help: ArgumentHelp("Wall-clock budget (3600, 90m, 12h, HH:MM:SS or Slurm's D-HH:MM:SS): checkpoint and exit with status 75 before it runs out, with a margin measured from the slowest step and checkpoint. SIGTERM, SIGUSR1 and SIGUSR2 do the same at the next step.", valueName: "duration"))
    var timeLimit: String?

    @Option(parsing: .unconditional, help: ArgumentHelp("Abort the job when a collective (e.g. a step's all-reduce) waits longer than this many seconds: a rank died, was stopped, or is stuck in I/O.", valueName: "seconds"))
    var collectiveTimeout: Double = 600

    // Performance
    @Option(help: ArgumentHelp("Write every rank's step phases (data wait, forward, backward, all-reduce, optimizer) as a Chrome-trace timeline to this JSON file, for ui.perfetto.dev or chrome://tracing.", valueName: "file.json"))
    var timeline: String?

    // Machine
    @Option(parsing: .unconditional, help: ArgumentHelp("BLAS threads per rank (default: the rank's CPUs ÷ the ranks on the node sharing them).", valueName: "n"))
    var blasThreads: Int?

    /// Which TrainingConfig value each option sets: one row per option.
    static let configFlags: [ConfigFlag<TrainCommand>] = [
        .init("--data", \.samples.data, \.data.path) { $0 },
        .init("--train-dataset", \.trainDataset, \.data.trainDataset),
        .init("--val-dataset", \.valDataset, \.data.valDataset) { $0 == "none" ? nil : $0 },
        .init("--val-fraction", \.valFraction, \.data.valFraction) { $0 },
        .init("--scale", \.samples.scale, \.data.scale) { $0 },
        .init("--cache", \.cache, \.data.cache),
        .init("--channels-first", \.channelsFirst, \.data.channelsFirst),
        .init("--model", \.model, \.model.spec),
        .init("--activation", \.activation, \.model.activation),
        .init("--output-activation", \.outputActivation, \.model.outputActivation),
        .init("--loss", \.loss, \.loss),
        .init("--noise", \.noise, \.model.noise),
        .init("--l1-activity", \.l1Activity, \.model.l1Activity),
        .init("--sparsity-target", \.sparsityTarget, \.model.sparsityTarget),
        .init("--sparsity-weight", \.sparsityWeight, \.model.sparsityWeight),
        .init("--variational", \.variational, \.model.variational),
        .init("--beta", \.beta, \.model.beta),
        .init("--optimizer", \.optimizer, \.optimizer.kind),
        .init("--lr", \.lr, \.optimizer.learningRate),
        .init("--momentum", \.momentum, \.optimizer.momentum),
        .init("--nesterov", \.nesterov, \.optimizer.nesterov),
        .init("--beta1", \.beta1, \.optimizer.beta1),
        .init("--beta2", \.beta2, \.optimizer.beta2),
        .init("--rho", \.rho, \.optimizer.rho),
        .init("--epsilon", \.epsilon, \.optimizer.epsilon),
        .init("--weight-decay", \.weightDecay, \.optimizer.weightDecay),
        .init("--clip-norm", \.clipNorm, \.optimizer.clipNorm),
        .init("--lr-schedule", \.lrSchedule, \.schedule.lrSchedule),
        .init("--warmup-epochs", \.warmupEpochs, \.schedule.warmupEpochs),
        .init("--step-epochs", \.stepEpochs, \.schedule.stepEpochs),
        .init("--gamma", \.gamma, \.schedule.gamma),
        .init("--min-lr", \.minLr, \.schedule.minLR),
        .init("--early-stopping-patience", \.earlyStoppingPatience, \.schedule.earlyStoppingPatience),
        .init("--min-delta", \.minDelta, \.schedule.minDelta),
        .init("--epochs", \.epochs, \.schedule.epochs),
        .init("--batch-size", \.batchSize, \.schedule.batchSize),
        .init("--seed", \.seed, \.schedule.seed),
        .init("--deterministic", \.deterministic, \.schedule.deterministic),
        .init("--micro-batch", \.microBatch, \.schedule.microBatch),
        .init("--accumulate", \.accumulate, \.schedule.accumulation),
        .init("--checkpoint-dir", \.checkpointDir, \.run.checkpointDir),
        .init("--keep", \.keep, \.run.keep),
        .init("--checkpoint-every", \.checkpointEvery, \.run.checkpointEvery),
        .init("--drift-check-every", \.driftCheckEvery, \.run.driftCheckEvery),
    ]

    /// The run's configuration: defaults, then the config file, then the flags given. Resuming, the checkpoint's
    /// own configuration takes the defaults' and the file's place, so a run continues as it was started and only
    /// the flags given change it (returned, to be said).
    func resolvedConfig() throws -> (config: TrainingConfig, resumedFrom: String?, overrides: [String]) {
        var resolved = try config.map { try ConfigFile.load($0) } ?? TrainingConfig()
        for flag in Self.configFlags { _ = flag.apply(self, &resolved) }
        guard let (path, stored) = Self.storedConfig(resume: ResumeRequest(resume), checkpointDir: resolved.run.checkpointDir) else {
            return (resolved, nil, [])
        }
        var resumed = try config.map { try ConfigFile.load($0, over: stored) } ?? stored
        // The run goes on in the folder its checkpoint was found in (a moved folder included).
        resumed.run.checkpointDir = resolved.run.checkpointDir
        var overrides = stored.differingKeys(from: resumed).map { "\($0) from \(config ?? "")" }
        for flag in Self.configFlags {
            let before = resumed
            if flag.apply(self, &resumed), flag.differs(before, resumed) {
                overrides.append("\(flag.name) \(flag.value(resumed)) (it had \(flag.value(before)))")
            }
        }
        return (resumed, path, overrides)
    }

    /// The configuration stored in the checkpoint a resume continues from, when there is one to read: for `auto`
    /// latest.h5, or past a damaged one the newest checkpoint whose settings read (as the trainer skips it too).
    static func storedConfig(resume: ResumeRequest, checkpointDir: String) -> (String, TrainingConfig)? {
        let candidates: [String]
        switch resume {
        case .none: candidates = []
        case .auto:
            let directory = CheckpointDirectory(path: checkpointDir)
            candidates = [directory.latest].compactMap { $0 } + directory.checkpointFiles.reversed()
        case .path(let file): candidates = [file]
        }
        // A file that cannot be read, or whose settings are unusable, is left to the trainer, which says what is wrong
        // with it (or skips it).
        for path in candidates {
            if let stored = try? Checkpoint.storedConfig(path), (try? stored.validate()) != nil { return (path, stored) }
        }
        return nil
    }

    /// The flags whose values differ between two configurations (for messages that say what to pass).
    static func flagsThatDiffer(_ a: TrainingConfig, _ b: TrainingConfig) -> [String] {
        configFlags.filter { $0.differs(a, b) }.map(\.name)
    }

    func validate() throws {
        do {
            try resolvedConfig().config.validate()
        } catch let error as ConfigError {
            throw ValidationError(error.description)
        }
        if let timeLimit, StopPolicy.parseDuration(timeLimit) == nil {
            throw ValidationError("--time-limit '\(timeLimit)' is not a duration (e.g. 3600, 90m, 12h, 02:30:00, 1-12:00:00)")
        }
        if !(collectiveTimeout > 0) {
            throw ValidationError("--collective-timeout must be a positive number of seconds (got \(collectiveTimeout))")
        }
        if let blasThreads, blasThreads < 1 { throw ValidationError("--blas-threads must be at least 1 (got \(blasThreads))") }
    }

    func run() throws {
        let (configuration, resumedFrom, overrides) = try resolvedConfig()
        // Deterministic mode needs the same BLAS arithmetic on every rank count: one thread.
        try runOnEveryRank(collectiveTimeout: collectiveTimeout,
                           blasThreads: configuration.schedule.deterministic ? 1 : blasThreads) { world, console in
            var session = SessionOptions(resume: ResumeRequest(resume), timeLimit: timeLimit.flatMap(StopPolicy.parseDuration),
                                         startTime: Launch.startTime, mpiStart: Launch.mpiStart, timelinePath: timeline,
                                         fault: FaultInjection.fromEnvironment(), flagsThatDiffer: Self.flagsThatDiffer)
            session.saveInitial = saveInitial
            if let resumedFrom {
                console.line("resuming with the settings stored in \(resumedFrom)" + (overrides.isEmpty ? "" : "; changed on the command line: \(overrides.joined(separator: ", "))"))
            }
            let trainer = try Trainer(config: configuration, communicator: world, session: session, console: console)
            let summary = try trainer.run()
            let checksum = try trainer.verifyReplicasIdentical()
            if let reason = summary.stopReason {
                console.line("stopped early at step \(summary.globalStep) (\(reason)): checkpoint \(summary.lastCheckpoint ?? "written"); continue with --resume auto. Exit status \(StopPolicy.checkpointedExitCode) asks the batch system to re-queue.")
                return StopPolicy.checkpointedExitCode
            }
            let lossName = configuration.loss.rawValue
            var line = "done: \(summary.epochsCompleted) epoch\(summary.epochsCompleted == 1 ? "" : "s"), \(summary.globalStep) step\(summary.globalStep == 1 ? "" : "s")"
            line += String(format: ", train %@ %.4f", lossName, summary.finalTrainLoss)
            if !summary.finalValLoss.isNaN {
                line += String(format: ", val %@ %.4f", lossName, summary.finalValLoss)
                if configuration.loss != .mse { line += String(format: ", val mse %.4f", summary.finalValMSE) }
            }
            line += String(format: ", %.0f samples/s on %d rank%@", summary.samplesPerSecond, world.size, world.size == 1 ? "" : "s")
            line += "; last \(summary.lastCheckpoint ?? "none"), best \(summary.bestCheckpoint ?? "none")"
            console.line(line)
            console.line("replicas identical: parameter checksum \(String(checksum, radix: 16)) on all \(world.size) rank\(world.size == 1 ? "" : "s")")
            return 0
        }
    }
}
