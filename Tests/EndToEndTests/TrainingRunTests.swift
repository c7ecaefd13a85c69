import Foundation
import XCTest

/// The real binary under real mpirun: training, replicas, rank-count independence, checkpoints, resume.
final class TrainingRunTests: XCTestCase {
    func testLossFallsAndReplicasStayIdenticalAtOneTwoAndFourRanks() throws {
        var curves: [Int: [[String: Double]]] = [:]
        for ranks in [1, 2, 4] {
            let folder = Harness.temporaryDirectory()
            let outcome = try Harness.aedist(ranks: ranks, ["train", "--epochs", "3", "--checkpoint-dir", folder])
            assertSucceeded(outcome)
            XCTAssertTrue(outcome.stdout.contains("replicas identical: parameter checksum"), outcome.stdout)
            XCTAssertTrue(outcome.stdout.contains("on all \(ranks) rank"), outcome.stdout)
            let metrics = try Harness.metrics(in: folder)
            XCTAssertEqual(metrics.count, 3)
            XCTAssertLessThan(metrics[2]["train_loss"]!, metrics[0]["train_loss"]!, "training did not lower the loss at -n \(ranks)")
            XCTAssertLessThan(metrics[2]["val_loss"]!, metrics[0]["val_loss"]!, "validation loss did not fall at -n \(ranks)")
            curves[ranks] = metrics
        }
        // Same global batches whatever the rank count: the curves agree up to float rounding of the sums.
        for epoch in 0..<3 {
            for column in ["train_loss", "val_loss", "val_mse"] {
                let one = curves[1]![epoch][column]!, four = curves[4]![epoch][column]!
                let two = curves[2]![epoch][column]!
                XCTAssertEqual(one, four, accuracy: 2e-4 * one, "\(column) at epoch \(epoch + 1): -n 1 \(one) vs -n 4 \(four)")
                XCTAssertEqual(one, two, accuracy: 2e-4 * one, "\(column) at epoch \(epoch + 1): -n 1 \(one) vs -n 2 \(two)")
            }
        }
    }

    /// The tutorial's 784-32-784 autoencoder, 10 epochs of 16 steps: PyTorch reaches validation BCE ≈ 0.227 with the
    /// same model and hyperparameters on this data.
    func testTenEpochsReachPyTorchsValidationLossAndCheckpointsOpenInOtherReaders() throws {
        let folder = Harness.temporaryDirectory()
        let outcome = try Harness.aedist(ranks: 2, ["train", "--checkpoint-dir", folder])
        assertSucceeded(outcome)
        let metrics = try Harness.metrics(in: folder)
        XCTAssertEqual(metrics.count, 10)
        XCTAssertEqual(metrics.last!["global_step"], 160)
        XCTAssertLessThanOrEqual(metrics.last!["val_loss"]!, 0.227, "validation BCE after 10 epochs")
        XCTAssertTrue(outcome.stdout.contains("done: 10 epochs, 160 steps"), outcome.stdout)

        // Retention: the newest 3 checkpoints (the best is among them here), and links to them.
        let files = try FileManager.default.contentsOfDirectory(atPath: folder).filter { $0.hasPrefix("ckpt-") }.sorted()
        XCTAssertEqual(files, ["ckpt-e0008-s0000128.h5", "ckpt-e0009-s0000144.h5", "ckpt-e0010-s0000160.h5"])
        XCTAssertEqual(Harness.resolvedLink("\(folder)/latest.h5"), "ckpt-e0010-s0000160.h5")
        XCTAssertNotNil(Harness.resolvedLink("\(folder)/best.h5"))

        let h5py = try Harness.python(["check", "\(folder)/latest.h5"])
        assertSucceeded(h5py)
        XCTAssertTrue(h5py.stdout.hasPrefix("ok 12 tensors, optimizer adam"), h5py.stdout)
        let h5dump = try Harness.run("/usr/bin/h5dump", ["-H", "\(folder)/latest.h5"])
        assertSucceeded(h5dump)
        XCTAssertTrue(h5dump.stdout.contains("GROUP \"parameters\""), h5dump.stdout)

        let inspect = try Harness.aedist(ranks: nil, ["inspect", "\(folder)/latest.h5"])
        assertSucceeded(inspect)
        for expected in ["dense:784-32", "encoder.0    784 → 32  relu", "parameters/decoder.0/weight", "epochs_completed 10", "every tensor carries a Fletcher-32 checksum"] {
            XCTAssertTrue(inspect.stdout.contains(expected), "inspect lacks '\(expected)':\n\(inspect.stdout)")
        }
        let json = try Harness.aedist(ranks: nil, ["inspect", "--json", "\(folder)/latest.h5"])
        assertSucceeded(json)
        let object = try JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as! [String: Any]
        XCTAssertEqual(object["parameter_count"] as? Int, 784 * 32 + 32 + 32 * 784 + 784)
        XCTAssertEqual((object["progress"] as? [String: Any])?["global_step"] as? Int, 160)
        XCTAssertEqual((object["metrics"] as? [String: Any]).flatMap { $0["val_loss"] as? [Any] }?.count, 10)
    }

    func testResumedTrainingEqualsUninterruptedTraining() throws {
        let straight = Harness.temporaryDirectory(), interrupted = Harness.temporaryDirectory()
        let common = ["train", "--model", "dense:784-64-16", "--batch-size", "100"]
        assertSucceeded(try Harness.aedist(ranks: 2, common + ["--epochs", "4", "--checkpoint-dir", straight]))
        assertSucceeded(try Harness.aedist(ranks: 2, common + ["--epochs", "2", "--checkpoint-dir", interrupted]))
        let resumed = try Harness.aedist(ranks: 2, common + ["--epochs", "4", "--checkpoint-dir", interrupted, "--resume", "auto"])
        assertSucceeded(resumed)
        XCTAssertTrue(resumed.stdout.contains("resumed from"), resumed.stdout)
        let comparison = try Harness.python(["compare", "\(straight)/latest.h5", "\(interrupted)/latest.h5"])
        assertSucceeded(comparison)
        XCTAssertTrue(comparison.stdout.contains("bit_identical True"), comparison.stdout)
        // The metrics history continues across the resume.
        XCTAssertEqual(try Harness.metrics(in: interrupted).map { $0["epoch"]! }, [1, 2, 3, 4])
    }

    /// A checkpoint taken in the middle of an epoch continues the same sample sequence.
    func testResumeFromMidEpochCheckpointEqualsUninterruptedTraining() throws {
        let straight = Harness.temporaryDirectory(), interrupted = Harness.temporaryDirectory()
        assertSucceeded(try Harness.aedist(ranks: 2, ["train", "--epochs", "2", "--checkpoint-dir", straight]))
        assertSucceeded(try Harness.aedist(ranks: 3, ["train", "--epochs", "1", "--checkpoint-every", "5", "--keep", "10",
                                                      "--checkpoint-dir", interrupted]))
        let middle = "\(interrupted)/ckpt-e0000-s0000010.h5"
        XCTAssertTrue(FileManager.default.fileExists(atPath: middle))
        let resumed = try Harness.aedist(ranks: 2, ["train", "--epochs", "2", "--checkpoint-dir", interrupted, "--resume", middle])
        assertSucceeded(resumed)
        let comparison = try Harness.python(["compare", "\(straight)/latest.h5", "\(interrupted)/latest.h5"])
        // Different rank counts sum in different orders: equal up to float rounding, not bit for bit.
        let difference = Double(comparison.stdout.split(separator: " ")[1]) ?? .infinity
        XCTAssertLessThan(difference, 1e-4, comparison.stdout)
    }

    func testKillingOneRankEndsTheJobAndLeavesALoadableLatestCheckpoint() throws {
        let folder = Harness.temporaryDirectory()
        let started = Date()
        let (process, outPath, errPath) = try Harness.start(Harness.mpirun, ["-n", "2", Harness.binary, "train", "--epochs", "100000",
                                                                            "--checkpoint-dir", folder])
        // Wait for a few checkpoints, then kill one rank the hard way.
        while Date().timeIntervalSince(started) < 120 && (Harness.resolvedLink("\(folder)/latest.h5").map { $0 < "ckpt-e0003" } ?? true) {
            Thread.sleep(forTimeInterval: 0.05)
        }
        let ranks = try Harness.run("/usr/bin/pgrep", ["-f", "aedist train --epochs 100000 --checkpoint-dir \(folder)"])
        let pids = ranks.stdout.split(separator: "\n").compactMap { Int32($0) }.filter { $0 != process.processIdentifier }
        XCTAssertEqual(pids.count, 2, "expected two rank processes: \(ranks.stdout)")
        kill(pids.last!, SIGKILL)
        let outcome = Harness.finish(process, outPath, errPath, started: started, timeout: 60)
        XCTAssertFalse(outcome.timedOut, "the job hung after a rank was killed\n\(outcome)")
        XCTAssertNotEqual(outcome.status, 0, "\(outcome)")
        let check = try Harness.python(["check", "\(folder)/latest.h5"])
        assertSucceeded(check)
        assertSucceeded(try Harness.aedist(ranks: nil, ["inspect", "\(folder)/latest.h5"]))
        let leftovers = try FileManager.default.contentsOfDirectory(atPath: folder).filter { $0.hasSuffix(".h5") && !$0.hasPrefix("ckpt-") && !["latest.h5", "best.h5"].contains($0) }
        XCTAssertEqual(leftovers, [], "only whole checkpoints and links may be visible")
    }

    func testNonFiniteLossStopsTheRunAndKeepsTheLastGoodCheckpoint() throws {
        let folder = Harness.temporaryDirectory()
        let common = ["train", "--loss", "mse", "--output-activation", "linear", "--optimizer", "sgd", "--checkpoint-dir", folder]
        assertSucceeded(try Harness.aedist(ranks: 2, common + ["--epochs", "1", "--lr", "0.01"]))
        let good = Harness.resolvedLink("\(folder)/latest.h5")
        let outcome = try Harness.aedist(ranks: 2, common + ["--epochs", "3", "--resume", "auto", "--lr", "1e6"])
        XCTAssertFalse(outcome.timedOut, "\(outcome)")
        XCTAssertNotEqual(outcome.status, 0, "\(outcome)")
        XCTAssertEqual(outcome.errorLines.count, 1, "\(outcome)")
        XCTAssertTrue(outcome.stderr.contains("the training loss became"), outcome.stderr)
        XCTAssertEqual(Harness.resolvedLink("\(folder)/latest.h5"), good)
        assertSucceeded(try Harness.python(["check", "\(folder)/latest.h5"]))
    }

    func testDataWrittenByH5pyTrains() throws {
        let folder = Harness.temporaryDirectory()
        let floats = "\(folder)/floats.h5", images = "\(folder)/images.h5"
        assertSucceeded(try Harness.python(["make-data", "float64", floats]))
        assertSucceeded(try Harness.python(["make-data", "uint8-images", images]))
        let tabular = try Harness.aedist(ranks: 2, ["train", "--data", floats, "--train-dataset", "/features", "--val-dataset", "/holdout",
                                                    "--model", "dense:20-8", "--loss", "mse", "--batch-size", "32", "--epochs", "3",
                                                    "--checkpoint-dir", "\(folder)/a"])
        assertSucceeded(tabular)
        XCTAssertEqual(try Harness.metrics(in: "\(folder)/a").count, 3)
        // uint8 images without a scale attribute are scaled by 1/255; validation held out of the training rows.
        let pictures = try Harness.aedist(ranks: 2, ["train", "--data", images, "--train-dataset", "images", "--val-fraction", "0.2",
                                                     "--model", "dense:64-16", "--batch-size", "50", "--epochs", "2",
                                                     "--checkpoint-dir", "\(folder)/b"])
        assertSucceeded(pictures)
        XCTAssertTrue(pictures.stdout.contains("(160 samples"), pictures.stdout)
        XCTAssertTrue(pictures.stdout.contains("[160..<200]"), pictures.stdout)
    }
}

/// Training extras people expect from Keras and PyTorch.
final class TrainingExtrasTests: XCTestCase {
    func testWarmupCosineScheduleIsRecordedPerEpoch() throws {
        let folder = Harness.temporaryDirectory()
        assertSucceeded(try Harness.aedist(ranks: 2, ["train", "--epochs", "4", "--lr-schedule", "cosine", "--warmup-epochs", "1",
                                                      "--min-lr", "0.0001", "--checkpoint-dir", folder]))
        let rates = try Harness.metrics(in: folder).map { $0["lr"]! }
        // The rate of each epoch's last step: epoch 1's is warm-up's 15/16 of 1e-3, then cosine towards 1e-4.
        XCTAssertEqual(rates.count, 4)
        XCTAssertEqual(rates[0], 0.001 * 15 / 16, accuracy: 1e-9)
        XCTAssertTrue(zip(rates, rates.dropFirst()).allSatisfy { $0 >= $1 }, "\(rates)")
        XCTAssertLessThan(rates[3], 0.0003, "\(rates)")
    }

    func testEarlyStoppingEndsTheRunAndSurvivesResume() throws {
        let folder = Harness.temporaryDirectory()
        // With min-delta 1, only the first epoch ever counts as an improvement.
        let outcome = try Harness.aedist(ranks: 2, ["train", "--epochs", "10", "--early-stopping-patience", "2", "--min-delta", "1",
                                                    "--checkpoint-dir", folder])
        assertSucceeded(outcome)
        XCTAssertTrue(outcome.stdout.contains("early stopping: the validation loss has not improved for 2 epochs"), outcome.stdout)
        XCTAssertEqual(try Harness.metrics(in: folder).count, 3)
        let resumed = try Harness.aedist(ranks: 2, ["train", "--epochs", "10", "--early-stopping-patience", "2", "--min-delta", "1",
                                                    "--resume", "auto", "--checkpoint-dir", folder])
        assertSucceeded(resumed)
        XCTAssertTrue(resumed.stdout.contains("nothing to train: early stopping"), resumed.stdout)
        XCTAssertEqual(try Harness.metrics(in: folder).count, 3, "a stopped run stays stopped")
    }

    func testGradientClippingLimitsTheUpdate() throws {
        let clipped = Harness.temporaryDirectory(), free = Harness.temporaryDirectory()
        assertSucceeded(try Harness.aedist(ranks: 2, ["train", "--epochs", "2", "--optimizer", "sgd", "--lr", "0.5",
                                                      "--clip-norm", "0.001", "--checkpoint-dir", clipped]))
        assertSucceeded(try Harness.aedist(ranks: 2, ["train", "--epochs", "2", "--optimizer", "sgd", "--lr", "0.5",
                                                      "--checkpoint-dir", free]))
        let a = try Harness.metrics(in: clipped).last!["val_loss"]!, b = try Harness.metrics(in: free).last!["val_loss"]!
        XCTAssertGreaterThan(a, b + 0.01, "clipping to a tiny norm should slow learning: clipped \(a), free \(b)")
    }
}

/// Denoising and sparse autoencoders.
final class AutoencoderVariantTests: XCTestCase {
    func testDenoisingOutputIsCloserToTheCleanInputsThanTheNoisyInputsAre() throws {
        let folder = Harness.temporaryDirectory()
        let outcome = try Harness.aedist(ranks: 2, ["train", "--noise", "gaussian:0.5", "--model", "dense:784-128-64", "--epochs", "5",
                                                    "--checkpoint-dir", folder])
        assertSucceeded(outcome)
        let last = try XCTUnwrap(outcome.stdout.split(separator: "\n").last { $0.hasPrefix("epoch 5/5") })
        let valMSE = try Harness.metrics(in: folder).last!["val_mse"]!
        let noisy = try XCTUnwrap(last.range(of: "noisy inputs: mse ").map { Double(last[$0.upperBound...].prefix(6)) ?? .nan })
        XCTAssertLessThan(valMSE, noisy / 2, "denoised \(valMSE) vs noisy inputs \(noisy)")
        XCTAssertTrue(try Harness.aedist(ranks: nil, ["inspect", "\(folder)/latest.h5"]).stdout.contains("\"noise\" : \"gaussian:0.5\""))
    }

    func testL1ActivityPenaltyMakesTheCodeSparser() throws {
        var codeSums: [Double] = []
        for lambda in ["0", "0.01"] {
            let folder = Harness.temporaryDirectory()
            assertSucceeded(try Harness.aedist(ranks: 2, ["train", "--l1-activity", lambda, "--epochs", "3", "--checkpoint-dir", folder]))
            assertSucceeded(try Harness.aedist(ranks: nil, ["encode", "\(folder)/latest.h5", "--output", "\(folder)/codes.h5"]))
            let stats = try Harness.python(["stats", "\(folder)/codes.h5", "/codes"]).stdout
            codeSums.append(Double(stats.split(separator: " ")[3]) ?? .nan)
        }
        XCTAssertLessThan(codeSums[1], codeSums[0] * 0.7, "Σ|code| without and with the penalty: \(codeSums)")
    }
}

extension TrainingExtrasTests {
    /// Two batches of 128 accumulated are one batch of 256: the same samples (the order depends only on seed and
    /// epoch) and the same mean gradient, up to float rounding.
    func testGradientAccumulationEqualsTheLargerBatch() throws {
        let accumulated = Harness.temporaryDirectory(), large = Harness.temporaryDirectory()
        assertSucceeded(try Harness.aedist(ranks: 2, ["train", "--epochs", "2", "--batch-size", "128", "--accumulate", "2",
                                                      "--checkpoint-dir", accumulated]))
        assertSucceeded(try Harness.aedist(ranks: 2, ["train", "--epochs", "2", "--batch-size", "256", "--checkpoint-dir", large]))
        let comparison = try Harness.python(["compare", "\(accumulated)/latest.h5", "\(large)/latest.h5"])
        let difference = Double(comparison.stdout.split(separator: " ")[1]) ?? .infinity
        XCTAssertLessThan(difference, 1e-4, comparison.stdout)
        let a = try Harness.metrics(in: accumulated), b = try Harness.metrics(in: large)
        XCTAssertEqual(a.last!["val_loss"]!, b.last!["val_loss"]!, accuracy: 1e-4)
        XCTAssertEqual(a.last!["global_step"], 64, "global steps count batches")
        // The optimizer took one step per pair: Adam's step counter says so.
        let inspect = try Harness.aedist(ranks: nil, ["inspect", "--json", "\(accumulated)/latest.h5"])
        let object = try JSONSerialization.jsonObject(with: Data(inspect.stdout.utf8)) as! [String: Any]
        XCTAssertEqual((object["optimizer"] as? [String: Any])?["step"] as? Int, 32)
    }
}

/// The tutorial's convolutional autoencoder, data-parallel.
final class ConvolutionalTrainingTests: XCTestCase {
    static let tutorialModel = "conv:28x28x1/c32-p2-c32-p2/c32-u2-c32-u2-c1"

    /// PyTorch and Keras reach a validation MSE of 0.010–0.012 with this model, BCE and Adam after 10 epochs here.
    func testTutorialModelReachesThePeersValidationMSE() throws {
        let folder = Harness.temporaryDirectory()
        let outcome = try Harness.aedist(ranks: 2, ["train", "--model", Self.tutorialModel, "--checkpoint-dir", folder], timeout: 600)
        assertSucceeded(outcome)
        let last = try XCTUnwrap(try Harness.metrics(in: folder).last)
        XCTAssertEqual(last["epoch"], 10)
        XCTAssertLessThanOrEqual(last["val_mse"]!, 0.012, "validation MSE after 10 epochs")
        XCTAssertFalse(outcome.stderr.contains("collapsed"), outcome.stderr)
        let inspect = try Harness.aedist(ranks: nil, ["inspect", "\(folder)/latest.h5"])
        XCTAssertTrue(inspect.stdout.contains("encoder.0 conv 3×3×32 28×28×1→28×28×32 relu"), inspect.stdout)
        XCTAssertTrue(inspect.stdout.contains("parameters/decoder.4/weight"), inspect.stdout)
        let codes = Harness.temporaryDirectory() + "/codes.h5"
        assertSucceeded(try Harness.aedist(ranks: 2, ["encode", "\(folder)/latest.h5", "--output", codes]))
        XCTAssertTrue(try Harness.python(["stats", codes, "/codes"]).stdout.hasPrefix("shape 1000x1568 "))
    }

    func testACollapsedModelIsReported() throws {
        let folder = Harness.temporaryDirectory()
        // A learning rate this large kills every ReLU of the code: the output no longer depends on the input.
        let outcome = try Harness.aedist(ranks: 2, ["train", "--loss", "mse", "--lr", "1", "--epochs", "3", "--checkpoint-dir", folder])
        assertSucceeded(outcome)
        XCTAssertTrue(outcome.stderr.contains("the model has collapsed to a constant output"), outcome.stderr)
    }
}

extension AutoencoderVariantTests {
    /// The KL sparsity penalty pulls the code units' mean activation to the target ρ.
    func testKLSparsityTargetSetsTheMeanActivation() throws {
        let folder = Harness.temporaryDirectory()
        assertSucceeded(try Harness.aedist(ranks: 2, ["train", "--model", "dense:784-64:sigmoid", "--sparsity-target", "0.05",
                                                      "--sparsity-weight", "3", "--epochs", "10", "--checkpoint-dir", folder]))
        assertSucceeded(try Harness.aedist(ranks: nil, ["encode", "\(folder)/latest.h5", "--output", "\(folder)/codes.h5"]))
        let stats = try Harness.python(["stats", "\(folder)/codes.h5", "/codes"]).stdout
        let mean = (Double(stats.split(separator: " ")[3]) ?? .nan) / (1000 * 64)
        XCTAssertEqual(mean, 0.05, accuracy: 0.02, stats)
        let refused = try Harness.aedist(ranks: nil, ["train", "--model", "dense:784-64", "--sparsity-target", "0.05"])
        XCTAssertEqual(refused.status, 64, "\(refused)")
        XCTAssertTrue(refused.stderr.contains("--sparsity-target needs a sigmoid code"), refused.stderr)
    }
}

extension AutoencoderVariantTests {
    /// The KL sparsity estimate ρ̂ travels in checkpoints: a resumed run continues bit for bit.
    func testKLSparsityResumesExactly() throws {
        let straight = Harness.temporaryDirectory(), split = Harness.temporaryDirectory()
        let common = ["train", "--model", "dense:784-64:sigmoid", "--sparsity-target", "0.05"]
        assertSucceeded(try Harness.aedist(ranks: 2, common + ["--epochs", "4", "--checkpoint-dir", straight]))
        assertSucceeded(try Harness.aedist(ranks: 2, common + ["--epochs", "2", "--checkpoint-dir", split]))
        assertSucceeded(try Harness.aedist(ranks: 2, common + ["--epochs", "4", "--resume", "auto", "--checkpoint-dir", split]))
        let comparison = try Harness.python(["compare", "\(straight)/latest.h5", "\(split)/latest.h5"])
        XCTAssertTrue(comparison.stdout.contains("bit_identical True"), comparison.stdout)
    }

    /// Image models check the image shape, not just the number of values, and spot channels-first data.
    func testConvModelsCheckTheImageShape() throws {
        let folder = Harness.temporaryDirectory()
        let data = "\(folder)/nchw.h5"
        assertSucceeded(try Harness.python(["make-data", "nchw", data, Harness.embeddedData]))
        let model = "conv:28x28x1/c8-p2/u2-c1"
        let wrong = try Harness.aedist(ranks: 2, ["train", "--data", data, "--val-dataset", "none", "--model", model,
                                                  "--epochs", "1", "--checkpoint-dir", folder])
        XCTAssertEqual(wrong.status, 1, "\(wrong)")
        XCTAssertTrue(wrong.stderr.contains("pass --channels-first"), wrong.stderr)
        assertSucceeded(try Harness.aedist(ranks: 2, ["train", "--data", data, "--val-dataset", "none", "--channels-first", "--model", model,
                                                      "--epochs", "1", "--checkpoint-dir", folder]))
    }
}
