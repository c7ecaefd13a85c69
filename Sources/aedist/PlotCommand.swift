import AEDistCore
import AEDistIO
import AEDistTraining
import ArgumentParser
import Foundation

struct PlotCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "plot",
        abstract: "Draw a checkpoint's training and validation loss per epoch to PNG.")

    @Argument(help: "The checkpoint, e.g. checkpoints/latest.h5.")
    var checkpoint: String

    @Option(help: ArgumentHelp("PNG file to write.", valueName: "file.png"))
    var output = "loss.png"

    func run() throws {
        do {
            let stored = try Checkpoint.read(from: checkpoint)
            guard !stored.metrics.isEmpty else { throw RunFailure("\(checkpoint) holds no finished epoch to plot yet") }
            try Pictures.lossCurves(stored.metrics, lossName: stored.config.loss.rawValue).writePNG(to: output)
            print("drew \(stored.metrics.count) epochs of \(stored.config.loss.rawValue) loss to \(output)")
        } catch {
            FileHandle.standardError.write(Data("aedist: error: \(userMessage(error))\n".utf8))
            throw ExitCode.failure
        }
    }
}
