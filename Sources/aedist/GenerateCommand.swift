import AEDistCore
import AEDistIO
import AEDistTraining
import ArgumentParser
import Foundation

struct GenerateCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "generate",
        abstract: "Decode random codes z ~ N(0, I) of a variational model (and a latent interpolation) to HDF5 and PNG.")

    @Argument(help: "A checkpoint of a model trained with --variational.")
    var checkpoint: String
    @Option(help: "How many samples to generate.")
    var count = 64
    @Option(help: "Seed of the random codes.")
    var seed: UInt64 = 0
    @Option(help: ArgumentHelp("HDF5 file to create, with /generated (and /interpolation).", valueName: "file.h5"))
    var output: String
    @Option(help: ArgumentHelp("Also draw the samples as a grid to this PNG (image models).", valueName: "file.png"))
    var png: String?
    @Option(help: ArgumentHelp("Interpolate between the codes of these two samples of --dataset, e.g. 0,500.", valueName: "a,b"))
    var interpolate: String?
    @Option(help: ArgumentHelp("HDF5 file of the samples to interpolate between (default: the embedded MNIST subset).", valueName: "file.h5"))
    var data: String?
    @Option(help: ArgumentHelp("Dataset of those samples.", valueName: "path"))
    var dataset = "/val/x"
    @Option(help: "Steps of the interpolation.")
    var steps = 10

    func validate() throws {
        guard count > 0 && count <= 100_000 else { throw ValidationError("--count must be between 1 and 100000 (got \(count))") }
        guard steps >= 2 && steps <= 1000 else { throw ValidationError("--steps must be between 2 and 1000 (got \(steps))") }
        if let interpolate, interpolate.split(separator: ",").compactMap({ Int($0) }).count != 2 {
            throw ValidationError("--interpolate takes two sample numbers such as 0,500 (got '\(interpolate)')")
        }
    }

    func run() throws {
        try runOnEveryRank { world, console in
            let model = try TrainedModel(checkpointPath: checkpoint, communicator: world)
            let generated = try world.together { try model.generate(count: count, seed: seed) }
            let path: [[Float]]? = try interpolate.map { text in
                let ends = text.split(separator: ",").compactMap { Int($0) }
                let samples = try model.open(data: data, dataset: dataset, scale: nil)
                return try world.together { try model.interpolate(samples, from: ends[0], to: ends[1], steps: steps) }
            }
            try world.together { if world.isRoot { try model.writeGenerated(generated, interpolation: path, to: output, png: png) } }
            console.line("wrote \(count) generated samples\(path == nil ? "" : " and a \(steps)-step interpolation") to \(output)\(png.map { " and \($0)" } ?? "")")
            return 0
        }
    }
}
