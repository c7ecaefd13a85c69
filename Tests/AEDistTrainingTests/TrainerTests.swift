import AEDistCore
import AEDistIO
import AEDistTraining
import Foundation
import XCTest

/// The training loop in-process, with the one-rank communicator.
final class TrainerTests: XCTestCase {
    func testTrainingLowersTheValidationLoss() throws {
        let folder = temporaryFolder()
        let data = try makeData()
        let summary = try train(smallConfig(data: data, epochs: 30, folder: folder))
        let metrics = try Checkpoint.read(from: folder + "/latest.h5").metrics
        XCTAssertEqual(metrics.count, 30)
        XCTAssertEqual(summary.globalStep, 30 * 6)  // 180 training rows in batches of 32
        XCTAssertLessThan(metrics.last!.valLoss, 0.5 * metrics.first!.valLoss, "validation MSE \(metrics.first!.valLoss) → \(metrics.last!.valLoss)")
    }

    func testResumingGivesBitIdenticalParameters() throws {
        let data = try makeData()
        let straight = temporaryFolder(), split = temporaryFolder()
        let full = try train(smallConfig(data: data, epochs: 6, folder: straight))
        _ = try train(smallConfig(data: data, epochs: 3, folder: split))
        let resumed = try train(smallConfig(data: data, epochs: 6, folder: split), resume: .auto)
        XCTAssertEqual(resumed.parameterChecksum, full.parameterChecksum)
        XCTAssertEqual(try Checkpoint.read(from: split + "/latest.h5").metrics.map(\.epoch), [1, 2, 3, 4, 5, 6])
    }

    func testModelThatDoesNotFitTheDataIsRefused() throws {
        var bad = smallConfig(data: try makeData(), epochs: 1, folder: temporaryFolder())
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

/// `aedist eval` and validation are one pass: on the validation set, eval gives the loss the checkpoint recorded,
/// also where noise, ε and penalties enter it.
final class EvaluationTests: XCTestCase {
    func testEvalReproducesTheRecordedValidationLossOfEveryKindOfModel() throws {
        let data = try makeData()
        for variant in ["plain", "variational", "denoising", "sparse", "batchnorm and dropout"] {
            let folder = temporaryFolder()
            var config = smallConfig(data: data, epochs: 2, folder: folder)
            config.data.valFraction = nil
            config.data.valDataset = "/x"
            switch variant {
            case "variational": config.model.variational = true
            case "denoising": config.model.noise = .gaussian(sigma: 0.1)
            case "sparse": config.model.spec = "dense:16-8-4:sigmoid"; config.model.sparsityTarget = 0.1; config.model.l1Activity = 0.01
            case "batchnorm and dropout": config.model.spec = "dense:16-8-bn-drop0.3-4"
            default: break
            }
            _ = try train(config)
            let recorded = try Checkpoint.read(from: folder + "/latest.h5").metrics.last!.valLoss
            let model = try TrainedModel(checkpointPath: folder + "/latest.h5", communicator: SingleProcess())
            let evaluated = try model.evaluate(try model.open(data: data, dataset: "/x", scale: nil)).loss
            // Validation passes hold a step's rows, eval passes 256: BLAS rounds other row blocks differently.
            XCTAssertEqual(evaluated, recorded, accuracy: 1e-6 * abs(recorded), variant)
        }
    }
}

/// Binary cross-entropy on targets outside [0, 1] gives negative "losses" and trains on nonsense: refused, naming
/// the dataset, what was seen and the fixes; streamed data at the first batch that holds such a row.
final class TargetRangeTests: XCTestCase {
    func makeWideData() throws -> String {
        let path = temporaryFolder() + "/wide.h5"
        let values = (0..<(64 * 16)).map { Float($0 % 50) / 10 }  // 0 … 4.9
        let file = try HDF5File.create(path)
        try values.withUnsafeBufferPointer { _ = try file.root.write("x", shape: [64, 16], floats: $0) }
        try file.close()
        return path
    }

    func testBCEOnTargetsOutsideTheUnitIntervalIsRefused() throws {
        let data = try makeWideData()
        for cache in [DataConfig.CachePolicy.always, .never] {
            var config = smallConfig(data: data, epochs: 1, folder: temporaryFolder())
            config.loss = .bce
            config.model.outputActivation = .sigmoid
            config.data.cache = cache
            XCTAssertThrowsError(try train(config), "\(cache)") { error in
                let message = "\(error)"
                XCTAssertTrue(message.hasPrefix("\(data):/x"), message)
                XCTAssertTrue(message.contains(cache == .always ? "holds values from 0.0 to 4.9" : "row "), message)
                for fix in ["--loss bce needs targets in [0, 1]", "--scale", "--loss mse"] { XCTAssertTrue(message.contains(fix), message) }
            }
            config.data.scale = 0.2
            XCTAssertNoThrow(try train(config), "scaled into [0, 1]")
            config.data.scale = nil
            config.loss = .mse
            XCTAssertNoThrow(try train(config), "mse takes any targets")
        }
    }
}

/// Config files: each value read as the type of the option it sets, over the defaults.
final class ConfigFileTests: XCTestCase {
    func load(_ yaml: String) throws -> TrainingConfig {
        let path = temporaryFolder() + "/run.yaml"
        try yaml.write(toFile: path, atomically: true, encoding: .utf8)
        return try ConfigFile.load(path)
    }

    func testValuesAreReadAsTheTypeOfTheirOption() throws {
        let config = try load("""
            run: {checkpoint_dir: 2024, keep: 5}
            data: {val_dataset: null, train_dataset: 1}
            model: {noise: "mask:0.25"}
            optimizer: {epsilon: 1.0e-7, lr: 0.01}
            schedule:
            """)
        var expected = TrainingConfig()
        expected.run.checkpointDir = "2024"
        expected.run.keep = 5
        expected.data.valDataset = nil
        expected.data.trainDataset = "1"
        expected.model.noise = .mask(fraction: 0.25)
        expected.optimizer.epsilon = 1e-7
        expected.optimizer.learningRate = 0.01
        XCTAssertEqual(config, expected)
    }

    func testBadValuesNameTheirKey() {
        for (yaml, fragment) in [("optimizer: {lr: fast}", "optimizer.lr"), ("model: {noise: \"salt:1\"}", "invalid --noise 'salt:1'"),
                                 ("run: {kept: 3}", "unknown key 'run.kept'")] {
            XCTAssertThrowsError(try load(yaml), yaml) { XCTAssertTrue("\($0)".contains(fragment), "\(yaml): \($0)") }
        }
    }
}

/// BatchNorm over one value per channel has no variance: refused before training, naming the layer and the batch.
final class BatchNormInputTests: XCTestCase {
    func testABatchOfOneValuePerChannelIsRefused() throws {
        var config = smallConfig(data: try makeData(), epochs: 1, folder: temporaryFolder())
        config.model.spec = "dense:16-8-bn-4"
        config.schedule.batchSize = 179  // 180 training rows: the last batch of each epoch holds 1 sample
        XCTAssertThrowsError(try train(config)) { error in
            for fragment in ["encoder.1", "1 value per channel", "180 mod 179 = 1 sample", "--batch-size"] {
                XCTAssertTrue("\(error)".contains(fragment), "\(error)")
            }
        }
        config.model.spec = "dense:16-8-bn-4"
        config.schedule.batchSize = 90
        XCTAssertNoThrow(try train(config), "two samples per batch and more are fine")
    }
}
