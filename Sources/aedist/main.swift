import AEDistTraining
import ArgumentParser
import Foundation

struct AEDist: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "aedist",
        abstract: "Distributed data-parallel autoencoder training (MPI + HDF5 + BLAS).",
        discussion: """
        Typical use:
          mpirun -n 8 aedist train                 train the default dense autoencoder on the embedded MNIST subset
          aedist inspect checkpoints/latest.h5     explain a checkpoint
        """,
        version: AEDistVersion.string,
        subcommands: [TrainCommand.self, InspectCommand.self, EncodeCommand.self, ReconstructCommand.self, ScoreCommand.self,
                      EvalCommand.self, GradientCommand.self, PlotCommand.self, GenerateCommand.self])
}

Launch.prepareBLASLibrary()
Launch.startTime = Date()
setvbuf(stdout, nil, _IOLBF, 0)
do {
    var command = try AEDist.parseAsRoot()
    try command.run()
} catch let status as ExitCode {
    // The command has already said what happened (once, from rank 0); every rank leaves with the same status, the
    // others a moment after rank 0 so that the launcher forwards its message before it tears the job down.
    if status.rawValue != 0 && Launch.rankFromEnvironment != 0 { Thread.sleep(forTimeInterval: 1) }
    Foundation.exit(status.rawValue)
} catch {
    // Every rank parses the same command line; only rank 0 says what is wrong with it. The others wait a moment
    // before exiting, because the launcher tears the job down when the first rank exits with an error, and that
    // must not cut rank 0 off before its message is out.
    if Launch.rankFromEnvironment == 0 {
        // Help and version go out as the parser writes them; errors in aedist's one style, then the usage hint.
        let status = AEDist.exitCode(for: error)
        guard status != .success else { AEDist.exit(withError: error) }
        FileHandle.standardError.write(Data("aedist: error: \(AEDist.message(for: error))\n\(AEDist.usageHint(for: error))".utf8))
        Foundation.exit(status.rawValue)
    }
    Thread.sleep(forTimeInterval: 1)
    Foundation.exit(AEDist.exitCode(for: error).rawValue)
}

extension AEDist {
    /// "See 'aedist train --help' for more information." for the subcommand the error is about.
    static func usageHint(for error: Error) -> String {
        let full = fullMessage(for: error)
        guard let hint = full.split(separator: "\n").last(where: { $0.contains("--help") }) else { return "" }
        return hint.trimmingCharacters(in: .whitespaces) + "\n"
    }
}
