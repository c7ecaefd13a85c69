import AEDistCore
import AEDistIO
import AEDistTraining
import Foundation
import XCTest

/// The training loop in-process, with the one-rank communicator.
final class TrainerTests: XCTestCase {
    /// Smooth low-rank data in [0, 1]: an autoencoder with a small code can learn it.
    func makeData() throws -> String {
        let path = temporaryFolder() + "/lowrank.h5"
        var random = RandomStream(seed: 7)
        var rows: [Float] = []
        for _ in 0..<240 {
            let a = random.nextUnitFloat(), b = random.nextUnitFloat()
            rows += (0..<16).map { j in 0.5 + 0.25 * a * sin(Float(j) / 3) + 0.2 * b * cos(Float(j) / 5) }
        }
        let file = try HDF5File.create(path)
        try rows.withUnsafeBufferPointer { _ = try file.root.write("x", shape: [240, 16], floats: $0) }
        try file.close()
        return path
    }

    func config(data: String, epochs: Int, folder: String) -> TrainingConfig {
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

    func train(_ config: TrainingConfig, resume: ResumeRequest = .none) throws -> TrainingSummary {
        let trainer = try Trainer(config: config, communicator: SingleProcess(), session: SessionOptions(resume: resume), console: Console(isRoot: false))
        return try trainer.run()
    }

    func testTrainingLowersTheValidationLoss() throws {
        let folder = temporaryFolder()
        let data = try makeData()
        let summary = try train(config(data: data, epochs: 30, folder: folder))
        let metrics = try Checkpoint.read(from: folder + "/latest.h5").metrics
        XCTAssertEqual(metrics.count, 30)
        XCTAssertEqual(summary.globalStep, 30 * 6)  // 180 training rows in batches of 32
        XCTAssertLessThan(metrics.last!.valLoss, 0.5 * metrics.first!.valLoss, "validation MSE \(metrics.first!.valLoss) → \(metrics.last!.valLoss)")
    }

    func testResumingGivesBitIdenticalParameters() throws {
        let data = try makeData()
        let straight = temporaryFolder(), split = temporaryFolder()
        let full = try train(config(data: data, epochs: 6, folder: straight))
        _ = try train(config(data: data, epochs: 3, folder: split))
        let resumed = try train(config(data: data, epochs: 6, folder: split), resume: .auto)
        XCTAssertEqual(resumed.parameterChecksum, full.parameterChecksum)
        XCTAssertEqual(try Checkpoint.read(from: split + "/latest.h5").metrics.map(\.epoch), [1, 2, 3, 4, 5, 6])
    }

    func testModelThatDoesNotFitTheDataIsRefused() throws {
        var bad = config(data: try makeData(), epochs: 1, folder: temporaryFolder())
        bad.model.spec = "dense:20-4"
        XCTAssertThrowsError(try train(bad)) { error in
            XCTAssertTrue("\(error)".contains("16 values, but the model takes 20 inputs"), "\(error)")
        }
    }
}

final class StopPolicyTests: XCTestCase {
    func testDurationsInTheFormsSchedulersAndPeopleWrite() {
        let cases: [(String, Double?)] = [("3600", 3600), ("90s", 90), ("45m", 2700), ("12h", 43200), ("05:30", 330),
                                          ("02:00:05", 7205), ("1-12:00:00", 129_600), ("2-03", 183_600), ("1-00:30", 88200),
                                          ("soon", nil), ("", nil), ("-5", nil), ("1:2:3:4", nil), ("0", nil)]
        for (text, expected) in cases {
            XCTAssertEqual(StopPolicy.parseDuration(text), expected, text)
        }
    }
}
