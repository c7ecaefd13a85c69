import AEDistCore
import AEDistIO
import AEDistTraining
import ArgumentParser
import Foundation

/// The file of samples and how to scale them: what training and every use of a trained model take.
struct SampleFile: ParsableArguments {
    @Option(help: ArgumentHelp("HDF5 file with the samples (default: the embedded MNIST subset).", valueName: "file.h5"))
    var data: String?

    @Option(parsing: .unconditional, help: ArgumentHelp("Multiply input values by this (default: the dataset's 'scale' attribute, else 1/255 for uint8, else 1).", valueName: "factor"))
    var scale: Double?
}

/// What every use of a trained model takes: the checkpoint and the samples to apply it to.
struct ModelInput: ParsableArguments {
    @Argument(help: "The trained checkpoint, e.g. checkpoints/best.h5.")
    var checkpoint: String

    @OptionGroup var file: SampleFile
    var data: String? { file.data }
    var scale: Double? { file.scale }

    @Option(help: ArgumentHelp("Dataset of samples, N×D or N×H×W×C.", valueName: "path"))
    var dataset = "/val/x"
}

/// Runs `body` on every rank of the MPI job (or alone) and keeps aedist's error contract: a failure every rank
/// agreed on is printed once by rank 0 and all ranks leave together with status 1; a failure only one rank saw is
/// printed by that rank and tears the job down, so no rank waits forever. `body` returns the exit status.
func runOnEveryRank(collectiveTimeout: TimeInterval = 600, blasThreads: Int? = nil,
                    _ body: (MPICommunicator, Console) throws -> Int32) throws {
    let world: MPICommunicator
    do { world = try MPICommunicator.world(collectiveTimeout: collectiveTimeout) } catch {
        FileHandle.standardError.write(Data("aedist: error: \(userMessage(error))\n".utf8))
        throw ExitCode.failure
    }
    Launch.mpiStart = Date()
    BLAS.flushDenormalsToZero()
    let console = Console(isRoot: world.isRoot)
    let status: Int32
    do {
        try Launch.configureBLASThreads(communicator: world, requested: blasThreads)
        status = try body(world, console)
    } catch let failure as RunFailure {
        console.error(failure.message)
        MPICommunicator.finalize()
        throw ExitCode.failure
    } catch {
        FileHandle.standardError.write(Data("aedist: error: rank \(world.rank): \(userMessage(error))\n".utf8))
        MPICommunicator.abort(exitCode: 1)
    }
    MPICommunicator.finalize()
    if status != 0 { throw ExitCode(status) }
}

struct EncodeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "encode",
        abstract: "Write the latent code of every sample to HDF5 (features for other models).")

    @OptionGroup var input: ModelInput
    @Option(help: ArgumentHelp("HDF5 file to create.", valueName: "file.h5"))
    var output: String
    @Option(help: ArgumentHelp("Dataset name in the output.", valueName: "path"))
    var outputDataset = "/codes"

    func run() throws {
        try runOnEveryRank { world, console in
            let model = try TrainedModel(checkpointPath: input.checkpoint, communicator: world)
            let samples = try model.open(data: input.data, dataset: input.dataset, scale: input.scale)
            try model.write(.codes, of: samples, to: output, name: outputDataset)
            console.line("wrote \(samples.rowCount) codes of \(model.architecture.codeSize) values to \(output):\(outputDataset)")
            return 0
        }
    }
}

struct ReconstructCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "reconstruct",
        abstract: "Write the reconstruction of every sample to HDF5, in the samples' own shape.")

    @OptionGroup var input: ModelInput
    @Option(help: ArgumentHelp("HDF5 file to create.", valueName: "file.h5"))
    var output: String
    @Option(help: ArgumentHelp("Dataset name in the output.", valueName: "path"))
    var outputDataset = "/reconstructions"
    @Option(help: ArgumentHelp("Also draw samples spread over the set (top row) above their reconstructions (bottom row) to this PNG.", valueName: "file.png"))
    var png: String?
    @Option(help: ArgumentHelp("How many samples the PNG shows.", valueName: "n"))
    var pngCount = 10

    func validate() throws {
        guard (1...256).contains(pngCount) else { throw ValidationError("--png-count must be between 1 and 256 (got \(pngCount))") }
    }

    func run() throws {
        try runOnEveryRank { world, console in
            let model = try TrainedModel(checkpointPath: input.checkpoint, communicator: world)
            let samples = try model.open(data: input.data, dataset: input.dataset, scale: input.scale)
            try model.write(.reconstructions, of: samples, to: output, name: outputDataset)
            console.line("wrote \(samples.rowCount) reconstructions to \(output):\(outputDataset)")
            if let png {
                try world.together { if world.isRoot { try model.writeComparisonPNG(of: samples, count: pngCount, to: png) } }
                console.line("drew \(min(pngCount, samples.rowCount, 256)) samples above their reconstructions in \(png)")
            }
            return 0
        }
    }
}

struct GradientCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "gradient",
        abstract: "Write the mean loss and its gradient over some samples, in the checkpoint's names, to compare with another framework.",
        discussion: """
        Computed as one training step computes it (training mode: dropout, BatchNorm on these rows), across the \
        ranks of an MPI job or alone. Example: aedist gradient checkpoints/latest.h5 --dataset /val/x --rows 256 --output g.h5
        """)

    @OptionGroup var input: ModelInput
    @Option(parsing: .unconditional, help: ArgumentHelp("Use the first N samples (default: all).", valueName: "n"))
    var rows: Int?
    @Option(help: ArgumentHelp("HDF5 file to create: /loss, /gradients/<layer>/<weight|bias>, /rows.", valueName: "file.h5"))
    var output: String

    func validate() throws {
        if let rows, rows < 1 { throw ValidationError("--rows must be at least 1 (got \(rows))") }
    }

    func run() throws {
        try runOnEveryRank { world, console in
            let model = try TrainedModel(checkpointPath: input.checkpoint, communicator: world)
            let samples = try model.open(data: input.data, dataset: input.dataset, scale: input.scale)
            let result = try model.gradient(of: samples, rows: rows)
            try world.together { if world.isRoot { try model.writeGradient(result, of: samples, to: output) } }
            console.line(String(format: "%@: %d samples, mean %@ %.6f; gradient of %d parameters to %@", samples.name, result.rows.count,
                                model.config.loss.rawValue, result.loss, result.gradients.count, output))
            return 0
        }
    }
}

struct EvalCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "eval",
        abstract: "Print a checkpoint's losses on any dataset.")

    @OptionGroup var input: ModelInput

    func run() throws {
        try runOnEveryRank { world, console in
            let model = try TrainedModel(checkpointPath: input.checkpoint, communicator: world)
            let samples = try model.open(data: input.data, dataset: input.dataset, scale: input.scale)
            let result = try model.evaluate(samples)
            console.line(String(format: "%@: %d samples, %@ %.6f, mse %.6f", samples.name, samples.rowCount,
                                model.config.loss.rawValue, result.loss, result.mse))
            return 0
        }
    }
}

struct ScoreCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "score",
        abstract: "Anomaly scores: each sample's reconstruction error, to HDF5 and CSV.",
        discussion: """
        With --reference, the threshold is a percentile of the reference (normal) samples' scores and every sample \
        above it is flagged. With --labels, also prints ROC AUC and precision/recall at the threshold.
        Example: aedist score checkpoints/best.h5 --data digits.h5 --dataset /test/x --reference /val/x \
        --labels /test/y --anomaly-classes 5,6,7,8,9 --output scores.h5
        """)

    @OptionGroup var input: ModelInput
    @Option(help: ArgumentHelp("HDF5 file to create, with /scores and, given a threshold, /is_anomaly.", valueName: "file.h5"))
    var output: String
    @Option(help: ArgumentHelp("CSV file to write too (default: the output with .csv).", valueName: "file.csv"))
    var csv: String?
    @Option(help: ArgumentHelp("Dataset of normal samples (in the same file) whose scores set the threshold.", valueName: "path"))
    var reference: String?
    @Option(help: "Percentile of the reference scores used as the threshold.")
    var percentile = 99.0
    @Option(help: ArgumentHelp("Dataset of labels (one per sample) to measure detection against.", valueName: "path"))
    var labels: String?
    @Option(help: ArgumentHelp("Label values that mean 'anomaly', e.g. 5,6,7,8,9 (default: any non-zero label).", valueName: "list"))
    var anomalyClasses: String?

    func validate() throws {
        guard percentile > 0 && percentile < 100 else { throw ValidationError("--percentile must be between 0 and 100 (got \(percentile))") }
        if let anomalyClasses, anomalyClasses.split(separator: ",").contains(where: { Int64($0.trimmingCharacters(in: .whitespaces)) == nil }) {
            throw ValidationError("--anomaly-classes must be a comma-separated list of integers (got '\(anomalyClasses)')")
        }
    }

    func run() throws {
        try runOnEveryRank { world, console in
            let model = try TrainedModel(checkpointPath: input.checkpoint, communicator: world)
            let samples = try model.open(data: input.data, dataset: input.dataset, scale: input.scale)
            let scores = try model.scores(of: samples)
            var threshold: Double?
            if let reference {
                let normal = try model.open(data: input.data, dataset: reference, scale: input.scale)
                threshold = AnomalyReport.percentile(try model.scores(of: normal), percentile)
            }
            let truth: [Bool]? = try labels.map { path in
                try world.together {
                    let values = try HDF5File.open(input.data ?? EmbeddedData.mnistPath ?? "").root.dataset(path).readIntegers()
                    guard values.count == scores.count else {
                        throw RunFailure("\(path) has \(values.count) labels for \(scores.count) samples")
                    }
                    let classes = anomalyClasses.map { Set($0.split(separator: ",").compactMap { Int64($0.trimmingCharacters(in: .whitespaces)) }) }
                    return values.map { classes?.contains($0) ?? ($0 != 0) }
                }
            }
            try world.together {
                guard world.isRoot else { return }
                try model.writeScores(scores, threshold: threshold.map { ($0, percentile) }, truth: truth, to: output, csv: csvPath)
            }
            var line = "scored \(scores.count) samples of \(samples.name): mean error \(String(format: "%.6f", scores.reduce(0, +) / Double(scores.count)))"
            if let threshold {
                line += String(format: "; threshold %.6f (%gth percentile of %@), %d flagged", threshold, percentile, reference ?? "",
                               scores.filter { $0 > threshold }.count)
            }
            console.line(line)
            if let truth {
                var report = String(format: "ROC AUC %.4f (%d anomalies, %d normal)", AnomalyReport.rocAUC(scores: scores, anomalous: truth),
                                    truth.filter { $0 }.count, truth.filter { !$0 }.count)
                if let threshold {
                    let (precision, recall) = AnomalyReport.precisionRecall(scores: scores, anomalous: truth, threshold: threshold)
                    report += String(format: "; at the threshold: precision %.4f, recall %.4f", precision, recall)
                }
                console.line(report)
            }
            console.line("wrote \(output) and \(csvPath)")
            return 0
        }
    }

    var csvPath: String { csv ?? ((output as NSString).deletingPathExtension + ".csv") }
}
