import AEDistCore
import Foundation
import XCTest

final class TrainingConfigTests: XCTestCase {
    /// A config with every section away from its defaults, optionals both set and cleared.
    private func customized() -> TrainingConfig {
        var config = TrainingConfig()
        config.model.spec = "dense:784-256:tanh-32:linear"
        config.model.activation = .leakyRelu
        config.model.outputActivation = .linear
        config.loss = .mse
        config.data.path = "/data/run 1/mnist.h5"
        config.data.trainDataset = "/x/train"
        config.data.valDataset = nil
        config.data.valFraction = 0.15
        config.data.scale = 1.0 / 255
        config.data.cache = .never
        config.optimizer.kind = .sgd
        config.optimizer.learningRate = 3e-4
        config.optimizer.momentum = 0.9
        config.optimizer.nesterov = true
        config.optimizer.beta1 = 0.8
        config.optimizer.beta2 = 0.95
        config.optimizer.rho = 0.9
        config.optimizer.epsilon = 1e-7
        config.optimizer.weightDecay = 0.01
        config.schedule.epochs = 3
        config.schedule.batchSize = 100
        // Above 2^53: a seed must survive JSON exactly, not via a Double.
        config.schedule.seed = 0xFEDC_BA98_7654_3211
        config.run.checkpointDir = "ckpt"
        config.run.keep = 5
        config.run.checkpointEvery = 250
        return config
    }

    func testCanonicalJSONRoundTrip() throws {
        for config in [TrainingConfig(), customized()] {
            let json = config.canonicalJSON()
            let decoded = try TrainingConfig.fromJSON(json)
            XCTAssertEqual(decoded, config, json)
            XCTAssertEqual(decoded.canonicalJSON(), json, "canonical JSON is a fixed point")
            XCTAssertEqual(try TrainingConfig.fromJSON(config.prettyJSON()), config, "pretty JSON decodes to the same config")
        }
        XCTAssertNotEqual(TrainingConfig().canonicalJSON(), customized().canonicalJSON())
    }

    /// Keys a section leaves out keep their defaults, even inside a section that is present — checked for every
    /// section, since each has its own decoder.
    func testPartialJSONKeepsDefaults() throws {
        var expected = TrainingConfig()
        expected.optimizer.learningRate = 0.01
        XCTAssertEqual(try TrainingConfig.fromJSON(#"{"optimizer": {"lr": 0.01}}"#), expected)
        XCTAssertEqual(try TrainingConfig.fromJSON("{}"), TrainingConfig())

        let partials: [(json: String, change: (inout TrainingConfig) -> Void)] = [
            (#"{"model": {"spec": "dense:10-5"}}"#, { $0.model.spec = "dense:10-5" }),
            (#"{"loss": "mse"}"#, { $0.loss = .mse }),
            (#"{"data": {"path": "a.h5"}}"#, { $0.data.path = "a.h5" }),
            (#"{"optimizer": {"name": "sgd"}}"#, { $0.optimizer.kind = .sgd }),
            (#"{"schedule": {"epochs": 2}}"#, { $0.schedule.epochs = 2 }),
            (#"{"run": {"keep": 1}}"#, { $0.run.keep = 1 }),
        ]
        for (json, change) in partials {
            var expected = TrainingConfig()
            change(&expected)
            XCTAssertEqual(try TrainingConfig.fromJSON(json), expected, json)
        }
    }

    /// An explicit null clears the validation dataset; leaving the key out keeps the default one.
    func testValDatasetNullVersusMissing() throws {
        XCTAssertNil(try TrainingConfig.fromJSON(#"{"data": {"val_dataset": null}}"#).data.valDataset)
        XCTAssertEqual(try TrainingConfig.fromJSON(#"{"data": {"path": "a.h5"}}"#).data.valDataset, "/val/x")
    }

    /// `knownKeys` (which config files are checked against) must name exactly what the JSON form uses.
    func testKnownKeysMatchTheEncodedKeys() throws {
        let json = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(customized().canonicalJSON().utf8)) as? [String: Any])
        XCTAssertEqual(Set(json.keys), Set(TrainingConfig.knownKeys[""] ?? []))
        for (section, value) in json {
            guard let keys = (value as? [String: Any])?.keys else { continue }
            XCTAssertEqual(Set(keys), Set(TrainingConfig.knownKeys[section] ?? []), "section \(section)")
        }
    }

    func testDefaultsValidate() throws {
        XCTAssertNoThrow(try TrainingConfig().validate())
        XCTAssertNoThrow(try customized().validate())
    }

    /// Each rejected config's message names the option a user would change.
    func testValidationErrorsNameTheOption() {
        func expectFailure(_ fragments: [String], _ what: String, _ change: (inout TrainingConfig) -> Void,
                           file: StaticString = #filePath, line: UInt = #line) {
            var config = TrainingConfig()
            change(&config)
            // Labelled by hand: canonicalJSON() traps on the non-finite values some of these cases use.
            assertConfigError(fragments, what, file: file, line: line) { try config.validate() }
        }
        expectFailure(["--loss bce", "sigmoid"], "bce with a linear output") { $0.model.outputActivation = .linear }
        expectFailure(["--batch-size"], "batch size 0") { $0.schedule.batchSize = 0 }
        expectFailure(["--epochs"], "epochs -1") { $0.schedule.epochs = -1 }
        expectFailure(["--lr"], "lr -0.1") { $0.optimizer.learningRate = -0.1 }
        expectFailure(["--lr"], "lr inf") { $0.optimizer.learningRate = .infinity }
        expectFailure(["--lr"], "lr nan") { $0.optimizer.learningRate = .nan }
        expectFailure(["--momentum"], "momentum 1.5") { $0.optimizer.momentum = 1.5 }
        expectFailure(["--nesterov"], "nesterov without momentum") { $0.optimizer.kind = .sgd; $0.optimizer.nesterov = true }
        expectFailure(["--nesterov"], "nesterov with adam") { $0.optimizer.momentum = 0.9; $0.optimizer.nesterov = true }
        expectFailure(["--beta2"], "beta2 1") { $0.optimizer.beta2 = 1 }
        expectFailure(["--rho"], "rho -0.1") { $0.optimizer.rho = -0.1 }
        expectFailure(["--epsilon"], "epsilon 0") { $0.optimizer.epsilon = 0 }
        expectFailure(["--weight-decay"], "weight decay -1") { $0.optimizer.weightDecay = -1 }
        expectFailure(["--val-fraction"], "val fraction 1.5") { $0.data.valFraction = 1.5 }
        expectFailure(["--val-fraction"], "val fraction 0") { $0.data.valFraction = 0 }
        expectFailure(["--scale"], "scale 0") { $0.data.scale = 0 }
        expectFailure(["--keep"], "keep 0") { $0.run.keep = 0 }
        expectFailure(["--checkpoint-every"], "checkpoint every -1") { $0.run.checkpointEvery = -1 }
        expectFailure(["--checkpoint-dir"], "empty checkpoint dir") { $0.run.checkpointDir = "" }
        expectFailure(["--model", "dense:784-abc"], "bad model spec") { $0.model.spec = "dense:784-abc" }
    }

    /// NaN fails every comparison, so a check of one option against another (--min-lr against --lr) must not be
    /// where a NaN is caught: each value is blamed on its own option, first in the message.
    func testEveryBadValueIsBlamedOnItsOwnOption() {
        let cases: [(String, (inout TrainingConfig) -> Void)] = [
            ("--lr", { $0.optimizer.learningRate = .nan }), ("--lr", { $0.optimizer.learningRate = -1 }),
            ("--min-lr", { $0.schedule.minLR = .nan }), ("--beta1", { $0.optimizer.beta1 = .nan }),
            ("--beta2", { $0.optimizer.beta2 = .nan }), ("--momentum", { $0.optimizer.momentum = .nan }),
            ("--rho", { $0.optimizer.rho = .nan }), ("--gamma", { $0.schedule.gamma = .nan }),
            ("--warmup-epochs", { $0.schedule.warmupEpochs = .nan }), ("--clip-norm", { $0.optimizer.clipNorm = .nan }),
            ("--min-delta", { $0.schedule.minDelta = .nan }), ("--beta", { $0.model.beta = .nan }),
            ("--l1-activity", { $0.model.l1Activity = .nan }), ("--sparsity-weight", { $0.model.sparsityWeight = .nan }),
            ("--sparsity-target", { $0.model.sparsityTarget = .nan }), ("--val-fraction", { $0.data.valFraction = .nan }),
            ("--scale", { $0.data.scale = .infinity }), ("--epsilon", { $0.optimizer.epsilon = .nan }),
            ("--weight-decay", { $0.optimizer.weightDecay = -.infinity }),
        ]
        for (flag, change) in cases {
            var config = TrainingConfig()
            change(&config)
            XCTAssertThrowsError(try config.validate(), flag) { error in
                XCTAssertTrue("\(error)".hasPrefix("\(flag) "), "\(flag): \(error)")
            }
        }
    }

    /// Non-finite values that `validate()` lets through: NaN/∞ weight decay turns every parameter into NaN on the
    /// first step, ∞ epsilon silently stops Adam and RMSprop from learning, and any of them makes `canonicalJSON()`
    /// (checkpoints, rank agreement) trap, because JSON has no NaN or ∞. lr, scale and the betas are already checked.
    func testValidationRejectsNonFiniteHyperparameters() {
        for decay in [Double.nan, .infinity] {
            var config = TrainingConfig()
            config.optimizer.weightDecay = decay
            assertConfigError(["--weight-decay"], "weight decay \(decay)") { try config.validate() }
        }
        var config = TrainingConfig()
        config.optimizer.epsilon = .infinity
        assertConfigError(["--epsilon"], "epsilon inf") { try config.validate() }
    }
}
