import AEDistCore
import AEDistIO
import AEDistTraining
import ArgumentParser
import Foundation

struct InspectCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "inspect",
        abstract: "Explain a checkpoint: config, progress, metrics history and every tensor's statistics.",
        discussion: "Works on any HDF5 file in aedist's documented checkpoint layout. Needs no MPI.")

    @Argument(help: "The checkpoint file (.h5), e.g. checkpoints/latest.h5.")
    var file: String

    @Flag(help: "Print JSON for scripts instead of text.")
    var json = false

    @Flag(help: "Check integrity instead: every tensor's Fletcher-32 checksum, shapes against the stored config, finite values, optimizer state present. Exit status 1 when the file is damaged.")
    var verify = false

    func run() throws {
        do {
            if verify {
                let checkpoint = try Checkpoint.verify(file)
                print("ok: \(file) is intact (\(checkpoint.layout.tensors.count) parameter tensors, \(checkpoint.optimizerState.count) optimizer states, epoch \(checkpoint.progress.epochsCompleted), step \(checkpoint.progress.globalStep))")
                return
            }
            let report = try CheckpointReport(path: file)
            print(json ? report.json() : report.text())
        } catch {
            FileHandle.standardError.write(Data("aedist: error: \(userMessage(error))\n".utf8))
            throw ExitCode.failure
        }
    }
}
