import AEDistCore
import AEDistIO
import AEDistTraining
import ArgumentParser
import Foundation

extension Activation: ExpressibleByArgument {}
extension LossKind: ExpressibleByArgument {}
extension OptimizerConfig.Kind: ExpressibleByArgument {}
extension DataConfig.CachePolicy: ExpressibleByArgument {}
extension ScheduleConfig.LearningRateSchedule: ExpressibleByArgument {}

/// `aedist train`. Options are optional so that only the flags a user types override the config file; the help
/// text names each default.
struct TrainCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "train",
        abstract: "Train an autoencoder data-parallel across the ranks of an MPI job.",
        discussion: """
        Run it under mpirun (or srun): every rank holds a replica, computes its slice of each global batch, and the \
        gradients are summed with one MPI all-reduce per step. Without --data it trains on the embedded MNIST subset.
        Settings come from the defaults, then --config FILE, then the flags given here.
        Examples:
          mpirun -n 8 aedist train
          mpirun -n 4 aedist train --data faces.h5 --train-dataset /train/x --val-fraction 0.1 --model dense:4096-512-64
        """)

    @Option(help: ArgumentHelp("YAML or JSON config file (keys as in a checkpoint's config).", valueName: "file.yaml"))
    var config: String?

    // Data
    @Option(help: ArgumentHelp("HDF5 file with the samples (default: the embedded MNIST subset).", valueName: "file.h5"))
    var data: String?
    @Option(help: ArgumentHelp("Dataset of training samples, N×D or N×H×W×C (default: /train/x).", valueName: "path"))
    var trainDataset: String?
    @Option(help: ArgumentHelp("Dataset of validation samples, or 'none' (default: /val/x).", valueName: "path"))
    var valDataset: String?
    @Option(help: ArgumentHelp("Hold out this fraction of the training rows (the last ones) for validation instead of --val-dataset.", valueName: "fraction"))
    var valFraction: Double?
    @Option(help: ArgumentHelp("Multiply input values by this (default: the dataset's 'scale' attribute, else 1/255 for uint8, else 1).", valueName: "factor"))
    var scale: Double?
    @Option(help: "Keep samples in memory: auto (if ≤ 2 GiB), always, never (default: auto).")
    var cache: DataConfig.CachePolicy?
    @Flag(help: "Images are stored N×C×H×W (PyTorch's order) instead of N×H×W×C.")
    var channelsFirst = false

    // Model and loss
    @Option(help: ArgumentHelp("Model: dense:IN-H1-…-CODE, decoder mirrored; a width may carry an activation, e.g. dense:784-256:tanh-32:linear (default: dense:784-32).", valueName: "spec"))
    var model: String?
    @Option(help: "Hidden-layer activation: relu, leaky_relu, tanh, sigmoid, linear (default: relu).")
    var activation: Activation?
    @Option(help: "Output activation (default: sigmoid).")
    var outputActivation: Activation?
    @Option(help: "Loss: bce (binary cross-entropy, from logits) or mse (default: bce).")
    var loss: LossKind?
    @Option(help: ArgumentHelp("Denoising: corrupt inputs with gaussian:SIGMA (then clipped to [0, 1]) or mask:FRACTION; the target stays the clean sample (default: none).", valueName: "kind:amount"))
    var noise: String?
    @Option(help: ArgumentHelp("Sparse autoencoder: L1 activity penalty λ·Σ|code| per sample (default: 0).", valueName: "lambda"))
    var l1Activity: Double?
    @Option(help: ArgumentHelp("Sparse autoencoder, KL form: target mean activation ρ of the (sigmoid) code units (default: 0, off).", valueName: "rho"))
    var sparsityTarget: Double?
    @Option(help: ArgumentHelp("Weight of the KL sparsity penalty (default: 1).", valueName: "weight"))
    var sparsityWeight: Double?
    @Flag(help: "Variational autoencoder: the encoder's last layer gives μ and log σ² of the code (twice its width), the decoder starts from a sample z = μ + σ·ε, and the loss adds β·KL.")
    var variational = false
    @Option(help: "Weight β of the KL term of a variational model, per value of the sample (default: 1).")
    var beta: Double?

    // Optimizer
    @Option(help: "Optimizer: sgd, adam, adamw, rmsprop (default: adam).")
    var optimizer: OptimizerConfig.Kind?
    @Option(help: ArgumentHelp("Learning rate (default: 0.001).", valueName: "rate"))
    var lr: Double?
    @Option(help: "Momentum for sgd and rmsprop (default: 0).")
    var momentum: Double?
    @Flag(help: "Nesterov momentum (sgd).")
    var nesterov = false
    @Option(help: "Adam β1 (default: 0.9).")
    var beta1: Double?
    @Option(help: "Adam β2 (default: 0.999).")
    var beta2: Double?
    @Option(help: "RMSprop smoothing constant, PyTorch's alpha (default: 0.99).")
    var rho: Double?
    @Option(help: "Denominator epsilon for adam, adamw, rmsprop (default: 1e-8).")
    var epsilon: Double?
    @Option(help: "Weight decay: L2 added to the gradient (sgd, adam, rmsprop) or decoupled (adamw) (default: 0).")
    var weightDecay: Double?
    @Option(help: ArgumentHelp("Clip the averaged gradient to this global L2 norm (default: 0, off).", valueName: "norm"))
    var clipNorm: Double?
    @Option(help: "Learning-rate schedule: constant, step (× --gamma every --step-epochs), cosine (to --min-lr) (default: constant).")
    var lrSchedule: ScheduleConfig.LearningRateSchedule?
    @Option(help: ArgumentHelp("Linear learning-rate warm-up over this many epochs (default: 0).", valueName: "epochs"))
    var warmupEpochs: Double?
    @Option(help: ArgumentHelp("Step schedule: epochs between decays (default: 10).", valueName: "n"))
    var stepEpochs: Int?
    @Option(help: "Step schedule: decay factor (default: 0.1).")
    var gamma: Double?
    @Option(help: "Cosine schedule: final learning rate (default: 0).")
    var minLr: Double?
    @Option(help: ArgumentHelp("Stop when the validation loss has not improved for this many epochs (default: 0, off).", valueName: "epochs"))
    var earlyStoppingPatience: Int?
    @Option(help: "Early stopping: the smallest decrease that counts as an improvement (default: 0).")
    var minDelta: Double?

    // Schedule
    @Option(help: ArgumentHelp("Epochs to train in all, counting those a resumed checkpoint already did (default: 10).", valueName: "n"))
    var epochs: Int?
    @Option(help: ArgumentHelp("Global batch size, summed over all ranks (default: 256).", valueName: "n"))
    var batchSize: Int?
    @Option(help: ArgumentHelp("Seed for initialisation and shuffling (default: 0).", valueName: "n"))
    var seed: UInt64?
    @Flag(help: "Bit-identical parameters whatever the number of ranks, and across any stop and resume: gradients of fixed micro-batches are summed exactly (fixed-point integers); one BLAS thread per rank.")
    var deterministic = false
    @Option(help: ArgumentHelp("Samples per micro-batch with --deterministic (default: 32).", valueName: "n"))
    var microBatch: Int?
    @Option(help: ArgumentHelp("Add up the gradients of this many global batches before each optimizer step: one all-reduce per step, an effective batch this many times larger (default: 1).", valueName: "k"))
    var accumulate: Int?

    // Checkpoints
    @Option(help: ArgumentHelp("Folder for checkpoints and metrics.csv (default: checkpoints).", valueName: "dir"))
    var checkpointDir: String?
    @Option(help: ArgumentHelp("Keep the newest K checkpoints, plus the best (default: 3).", valueName: "k"))
    var keep: Int?
    @Option(help: ArgumentHelp("Also checkpoint every N steps (default: 0, at epoch ends only).", valueName: "n"))
    var checkpointEvery: Int?
    @Option(help: ArgumentHelp("Compare a checksum of every replica's parameters every N steps; a mismatch stops the run (default: 100; 0: only at the end).", valueName: "n"))
    var driftCheckEvery: Int?
    @Option(help: ArgumentHelp("Continue from a checkpoint: 'auto' (the folder's latest.h5, or start fresh if none) or a file.", valueName: "auto|path"))
    var resume: String?

    // Batch jobs
    @Option(help: ArgumentHelp("Wall-clock budget (3600, 90m, 12h, HH:MM:SS or Slurm's D-HH:MM:SS): checkpoint and exit with status 75 before it runs out, with a margin measured from the slowest step and checkpoint. SIGTERM, SIGUSR1 and SIGUSR2 do the same at the next step.", valueName: "duration"))
    var timeLimit: String?

    @Option(help: ArgumentHelp("Abort the job when a collective (e.g. a step's all-reduce) waits longer than this many seconds: a rank died, was stopped, or is stuck in I/O (default: 600).", valueName: "seconds"))
    var collectiveTimeout: Double?

    // Performance
    @Option(help: ArgumentHelp("Write every rank's step phases (data wait, forward, backward, all-reduce, optimizer) as a Chrome-trace timeline to this JSON file, for ui.perfetto.dev or chrome://tracing.", valueName: "file.json"))
    var timeline: String?

    // Machine
    @Option(help: ArgumentHelp("BLAS threads per rank (default: cores on the node / ranks on the node).", valueName: "n"))
    var blasThreads: Int?

    /// The run's configuration: defaults, then the config file, then the flags given.
    func resolvedConfig() throws -> TrainingConfig {
        var c = try config.map(ConfigFile.load) ?? TrainingConfig()
        if let data { c.data.path = data }
        if let trainDataset { c.data.trainDataset = trainDataset }
        if let valDataset { c.data.valDataset = valDataset == "none" ? nil : valDataset }
        if let valFraction { c.data.valFraction = valFraction }
        if let scale { c.data.scale = scale }
        if let cache { c.data.cache = cache }
        if channelsFirst { c.data.channelsFirst = true }
        if let model { c.model.spec = model }
        if let activation { c.model.activation = activation }
        if let outputActivation { c.model.outputActivation = outputActivation }
        if let loss { c.loss = loss }
        if let noise { c.model.noise = noise }
        if let l1Activity { c.model.l1Activity = l1Activity }
        if variational { c.model.variational = true }
        if let sparsityTarget { c.model.sparsityTarget = sparsityTarget }
        if let sparsityWeight { c.model.sparsityWeight = sparsityWeight }
        if let beta { c.model.beta = beta }
        if let optimizer { c.optimizer.kind = optimizer }
        if let lr { c.optimizer.learningRate = lr }
        if let momentum { c.optimizer.momentum = momentum }
        if nesterov { c.optimizer.nesterov = true }
        if let beta1 { c.optimizer.beta1 = beta1 }
        if let beta2 { c.optimizer.beta2 = beta2 }
        if let rho { c.optimizer.rho = rho }
        if let epsilon { c.optimizer.epsilon = epsilon }
        if let weightDecay { c.optimizer.weightDecay = weightDecay }
        if let clipNorm { c.optimizer.clipNorm = clipNorm }
        if let lrSchedule { c.schedule.lrSchedule = lrSchedule }
        if let warmupEpochs { c.schedule.warmupEpochs = warmupEpochs }
        if let stepEpochs { c.schedule.stepEpochs = stepEpochs }
        if let gamma { c.schedule.gamma = gamma }
        if let minLr { c.schedule.minLR = minLr }
        if let earlyStoppingPatience { c.schedule.earlyStoppingPatience = earlyStoppingPatience }
        if let minDelta { c.schedule.minDelta = minDelta }
        if let epochs { c.schedule.epochs = epochs }
        if let batchSize { c.schedule.batchSize = batchSize }
        if let seed { c.schedule.seed = seed }
        if deterministic { c.schedule.deterministic = true }
        if let microBatch { c.schedule.microBatch = microBatch }
        if let accumulate { c.schedule.accumulation = accumulate }
        if let checkpointDir { c.run.checkpointDir = checkpointDir }
        if let keep { c.run.keep = keep }
        if let checkpointEvery { c.run.checkpointEvery = checkpointEvery }
        if let driftCheckEvery { c.run.driftCheckEvery = driftCheckEvery }
        return c
    }

    func validate() throws {
        do {
            try resolvedConfig().validate()
        } catch let error as ConfigError {
            throw ValidationError(error.description)
        }
        if let timeLimit, StopPolicy.parseDuration(timeLimit) == nil {
            throw ValidationError("--time-limit '\(timeLimit)' is not a duration (e.g. 3600, 90m, 12h, 02:30:00, 1-12:00:00)")
        }
        if let collectiveTimeout, !(collectiveTimeout > 0) {
            throw ValidationError("--collective-timeout must be a positive number of seconds (got \(collectiveTimeout))")
        }
        if let blasThreads, blasThreads < 1 { throw ValidationError("--blas-threads must be at least 1 (got \(blasThreads))") }
    }

    func run() throws {
        let configuration = try resolvedConfig()
        // Deterministic mode needs the same BLAS arithmetic on every rank count: one thread.
        try runOnEveryRank(collectiveTimeout: collectiveTimeout ?? 600,
                           blasThreads: configuration.schedule.deterministic ? 1 : blasThreads) { world, console in
            let session = SessionOptions(resume: ResumeRequest(resume), timeLimit: timeLimit.flatMap(StopPolicy.parseDuration),
                                         startTime: Launch.startTime, mpiStart: Launch.mpiStart, timelinePath: timeline,
                                         fault: FaultInjection.fromEnvironment())
            let trainer = try Trainer(config: configuration, communicator: world, session: session, console: console)
            let summary = try trainer.run()
            let checksum = try trainer.verifyReplicasIdentical()
            if let reason = summary.stopReason {
                console.line("stopped early at step \(summary.globalStep) (\(reason)): checkpoint \(summary.lastCheckpoint ?? "written"); continue with --resume auto. Exit status \(StopPolicy.checkpointedExitCode) asks the batch system to re-queue.")
                return StopPolicy.checkpointedExitCode
            }
            let lossName = configuration.loss.rawValue
            var line = "done: \(summary.epochsCompleted) epochs, \(summary.globalStep) steps"
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
