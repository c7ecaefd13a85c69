import AEDistCore
import AEDistIO
import AEDistTraining
import Foundation
import XCTest

func temporaryFolder() -> String {
    let path = NSTemporaryDirectory() + "aedist-training-" + UUID().uuidString.prefix(8)
    try! FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    return path
}

/// Smooth low-rank data in [0, 1] (240 samples of 16 values): an autoencoder with a small code can learn it.
func makeData(rows: Int = 240) throws -> String {
    let path = temporaryFolder() + "/lowrank.h5"
    var random = RandomStream(seed: 7)
    var values: [Float] = []
    for _ in 0..<rows {
        let a = random.nextUnitFloat(), b = random.nextUnitFloat()
        values += (0..<16).map { j in 0.5 + 0.25 * a * sin(Float(j) / 3) + 0.2 * b * cos(Float(j) / 5) }
    }
    let file = try HDF5File.create(path)
    try values.withUnsafeBufferPointer { _ = try file.root.write("x", shape: [rows, 16], floats: $0) }
    try file.close()
    return path
}

/// A small dense model on `makeData()`'s samples, the last quarter held out for validation.
func smallConfig(data: String, epochs: Int, folder: String) -> TrainingConfig {
    var config = TrainingConfig()
    config.data.path = data
    config.data.trainDataset = "/x"
    config.data.valDataset = nil
    config.data.valFraction = 0.25
    config.model.spec = "dense:16-8-4"
    config.model.activation = .tanh
    config.loss = .mse
    config.optimizer.learningRate = 0.01
    config.schedule.batchSize = 32
    config.schedule.epochs = epochs
    config.run.checkpointDir = folder
    return config
}

/// One run of the real trainer on one rank.
func train(_ config: TrainingConfig, resume: ResumeRequest = .none) throws -> TrainingSummary {
    let trainer = try Trainer(config: config, communicator: SingleProcess(), session: SessionOptions(resume: resume), console: Console(isRoot: false))
    return try trainer.run()
}

/// What one rank of an in-process run ended with.
struct RankOutcome: Sendable {
    var summary: TrainingSummary?
    var error: String?
}

/// The real trainer on `ranks` in-process ranks (threads), each with its own session options.
func trainOnRanks(_ ranks: Int, _ config: TrainingConfig, session: @escaping @Sendable (Int) -> SessionOptions = { _ in SessionOptions() })
    -> [RankOutcome] {
    InProcessGroup.run(ranks: ranks) { world -> TrainingSummary in
        let trainer = try Trainer(config: config, communicator: world, session: session(world.rank), console: Console(isRoot: false))
        return try trainer.run()
    }.map { outcome in
        switch outcome {
        case .success(let summary): return RankOutcome(summary: summary)
        case .failure(let error): return RankOutcome(error: userMessage(error))
        }
    }
}

