import Foundation
import XCTest

/// encode, reconstruct, score and eval: a trained model applied to data, across ranks or alone.
final class UseTests: XCTestCase {
    /// Trains once on digits 0–4 of the embedded subset; the test data set holds all digits, labelled.
    static let prepared: (data: String, checkpoint: String, metrics: String)? = {
        let folder = Harness.temporaryDirectory()
        let data = "\(folder)/digits.h5"
        guard (try? Harness.python(["make-data", "anomaly", data, Harness.embeddedData]))?.status == 0,
              (try? Harness.aedist(ranks: 2, ["train", "--data", data, "--model", "dense:784-64", "--epochs", "15",
                                              "--checkpoint-dir", "\(folder)/run"]))?.status == 0 else { return nil }
        return (data, "\(folder)/run/latest.h5", "\(folder)/run")
    }()

    func prepared() throws -> (data: String, checkpoint: String, metrics: String) {
        try XCTUnwrap(Self.prepared, "could not prepare the data and checkpoint")
    }

    func stats(_ file: String, _ dataset: String) throws -> String {
        let outcome = try Harness.python(["stats", file, dataset])
        assertSucceeded(outcome)
        return outcome.stdout
    }

    func testEncodeAndReconstructGiveTheSameValuesAtAnyRankCount() throws {
        let (data, checkpoint, _) = try prepared()
        let folder = Harness.temporaryDirectory()
        for ranks in [1, 3] {
            assertSucceeded(try Harness.aedist(ranks: ranks, ["encode", checkpoint, "--data", data, "--dataset", "/test/x",
                                                              "--output", "\(folder)/codes\(ranks).h5"]))
            assertSucceeded(try Harness.aedist(ranks: ranks, ["reconstruct", checkpoint, "--data", data, "--dataset", "/test/x",
                                                              "--output", "\(folder)/rec\(ranks).h5"]))
        }
        // Different rank counts run the BLAS on different row counts: equal up to float rounding.
        func sum(_ line: String) -> Double { Double(line.split(separator: " ")[3]) ?? .nan }
        let codes = try stats("\(folder)/codes1.h5", "/codes"), codes3 = try stats("\(folder)/codes3.h5", "/codes")
        XCTAssertTrue(codes.hasPrefix("shape 1000x64 ") && codes3.hasPrefix("shape 1000x64 "), codes + codes3)
        XCTAssertEqual(sum(codes), sum(codes3), accuracy: 1e-6 * abs(sum(codes)))
        let reconstructions = try stats("\(folder)/rec1.h5", "/reconstructions")
        let reconstructions3 = try stats("\(folder)/rec3.h5", "/reconstructions")
        XCTAssertTrue(reconstructions.hasPrefix("shape 1000x28x28x1 ") && reconstructions3.hasPrefix("shape 1000x28x28x1 "))
        XCTAssertEqual(sum(reconstructions), sum(reconstructions3), accuracy: 1e-6 * abs(sum(reconstructions)))
    }

    func testScoreFindsTheUnseenDigits() throws {
        let (data, checkpoint, _) = try prepared()
        let output = Harness.temporaryDirectory() + "/scores.h5"
        let outcome = try Harness.aedist(ranks: 2, ["score", checkpoint, "--data", data, "--dataset", "/test/x", "--reference", "/val/x",
                                                    "--labels", "/test/y", "--anomaly-classes", "5,6,7,8,9", "--output", output])
        assertSucceeded(outcome)
        let aucLine = try XCTUnwrap(outcome.stdout.split(separator: "\n").first { $0.hasPrefix("ROC AUC") })
        let auc = Double(aucLine.split(separator: " ")[2]) ?? 0
        XCTAssertGreaterThan(auc, 0.7, "an autoencoder of digits 0–4 should score 5–9 higher: \(aucLine)")
        XCTAssertTrue(outcome.stdout.contains("(99th percentile of /val/x)"), outcome.stdout)
        XCTAssertTrue(try stats(output, "/scores").hasPrefix("shape 1000 "))
        XCTAssertTrue(try stats(output, "/is_anomaly").hasPrefix("shape 1000 "))
        let csv = try String(contentsOfFile: (output as NSString).deletingPathExtension + ".csv", encoding: .utf8)
        XCTAssertEqual(csv.split(separator: "\n").count, 1001)
        XCTAssertTrue(csv.hasPrefix("index,score,flagged,anomaly\n"), String(csv.prefix(80)))
    }

    func testEvalReproducesTheValidationLossOfTraining() throws {
        let (data, checkpoint, run) = try prepared()
        let outcome = try Harness.aedist(ranks: 2, ["eval", checkpoint, "--data", data, "--dataset", "/val/x"])
        assertSucceeded(outcome)
        let loss = Double(outcome.stdout.split(separator: " ").drop { $0 != "bce" }.dropFirst().first?.dropLast() ?? "") ?? .nan
        let recorded = try Harness.metrics(in: run).last!["val_loss"]!
        XCTAssertEqual(loss, recorded, accuracy: 1e-5, outcome.stdout)
    }

    func testUsesRefuseDataOfTheWrongWidth() throws {
        let (_, checkpoint, _) = try prepared()
        let wide = Harness.temporaryDirectory() + "/wide.h5"
        assertSucceeded(try Harness.python(["make-data", "wide", wide]))
        let outcome = try Harness.aedist(ranks: 2, ["encode", checkpoint, "--data", wide, "--dataset", "/train/x", "--output", "/tmp/never.h5"])
        XCTAssertEqual(outcome.status, 1, "\(outcome)")
        XCTAssertEqual(outcome.errorLines.count, 1, "\(outcome)")
        XCTAssertTrue(outcome.stderr.contains("has samples of 12 values, but the model takes 784 inputs (\(checkpoint))"), outcome.stderr)
        XCTAssertFalse(FileManager.default.fileExists(atPath: "/tmp/never.h5"))
    }
}

/// PNG pictures through libpng: a grid of samples over reconstructions, and loss curves.
final class PictureTests: XCTestCase {
    /// Width and height from a PNG file's header, which must be a PNG's.
    func pngSize(_ path: String) throws -> (Int, Int) {
        let bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
        XCTAssertEqual(Array(bytes.prefix(8)), [137, 80, 78, 71, 13, 10, 26, 10], "not a PNG")
        func word(_ at: Int) -> Int { bytes[at..<(at + 4)].reduce(0) { $0 << 8 | Int($1) } }
        return (word(16), word(20))
    }

    func testReconstructionGridAndLossCurves() throws {
        let folder = Harness.temporaryDirectory()
        assertSucceeded(try Harness.aedist(ranks: 2, ["train", "--epochs", "2", "--checkpoint-dir", folder]))
        let grid = "\(folder)/grid.png", curves = "\(folder)/loss.png"
        assertSucceeded(try Harness.aedist(ranks: 2, ["reconstruct", "\(folder)/latest.h5", "--output", "\(folder)/rec.h5",
                                                      "--png", grid, "--png-count", "8"]))
        // 8 columns and 2 rows of 28×28 images zoomed twice, 2-pixel gaps.
        let (width, height) = try pngSize(grid)
        XCTAssertEqual(width, 2 + 8 * (56 + 2))
        XCTAssertEqual(height, 2 + 2 * (56 + 2))
        let plot = try Harness.aedist(ranks: nil, ["plot", "\(folder)/latest.h5", "--output", curves])
        assertSucceeded(plot)
        XCTAssertTrue(plot.stdout.contains("drew 2 epochs of bce loss"), plot.stdout)
        XCTAssertEqual(try pngSize(curves).0, 640)
    }

    func testPNGOfNonImageDataIsRefused() throws {
        let folder = Harness.temporaryDirectory()
        let data = "\(folder)/floats.h5"
        assertSucceeded(try Harness.python(["make-data", "float64", data]))
        assertSucceeded(try Harness.aedist(ranks: nil, ["train", "--data", data, "--train-dataset", "/features", "--val-dataset", "none",
                                                        "--model", "dense:20-4", "--loss", "mse", "--epochs", "1", "--checkpoint-dir", folder]))
        let outcome = try Harness.aedist(ranks: 2, ["reconstruct", "\(folder)/latest.h5", "--data", data, "--dataset", "/features",
                                                    "--output", "\(folder)/rec.h5", "--png", "\(folder)/grid.png"])
        XCTAssertEqual(outcome.status, 1, "\(outcome)")
        XCTAssertEqual(outcome.errorLines.count, 1, "\(outcome)")
        XCTAssertTrue(outcome.stderr.contains("--png needs images"), outcome.stderr)
    }
}

/// A variational autoencoder, trained data-parallel, generating digits.
final class VariationalUseTests: XCTestCase {
    func testTrainGenerateAndInterpolate() throws {
        let folder = Harness.temporaryDirectory()
        let training = try Harness.aedist(ranks: 2, ["train", "--variational", "--model", "dense:784-256-2", "--epochs", "10",
                                                     "--checkpoint-dir", folder])
        assertSucceeded(training)
        let last = try XCTUnwrap(training.stdout.split(separator: "\n").last { $0.hasPrefix("epoch 10/10") })
        XCTAssertEqual(last.components(separatedBy: "(recon ").count, 3, "train and validation show both terms: \(last)")
        XCTAssertLessThan(try Harness.metrics(in: folder).last!["val_loss"]!, 0.26)
        let output = "\(folder)/generated.h5", png = "\(folder)/generated.png"
        let generate = try Harness.aedist(ranks: 2, ["generate", "\(folder)/latest.h5", "--count", "16", "--output", output,
                                                     "--png", png, "--interpolate", "0,700"])
        assertSucceeded(generate)
        XCTAssertTrue(try Harness.python(["stats", output, "/generated"]).stdout.hasPrefix("shape 16x784 "))
        XCTAssertTrue(try Harness.python(["stats", output, "/interpolation"]).stdout.hasPrefix("shape 10x784 "))
        let bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: png)))
        XCTAssertEqual(Array(bytes.prefix(4)), [137, 80, 78, 71])
        // Reconstruction and encoding use the code's mean: no randomness.
        assertSucceeded(try Harness.aedist(ranks: nil, ["encode", "\(folder)/latest.h5", "--output", "\(folder)/a.h5"]))
        assertSucceeded(try Harness.aedist(ranks: 2, ["encode", "\(folder)/latest.h5", "--output", "\(folder)/b.h5"]))
        let a = try Harness.python(["stats", "\(folder)/a.h5", "/codes"]).stdout, b = try Harness.python(["stats", "\(folder)/b.h5", "/codes"]).stdout
        XCTAssertTrue(a.hasPrefix("shape 1000x2 "), a)
        XCTAssertEqual(Double(a.split(separator: " ")[3])!, Double(b.split(separator: " ")[3])!, accuracy: 1e-3)
    }

    func testGenerateNeedsAVariationalModel() throws {
        let folder = Harness.temporaryDirectory()
        assertSucceeded(try Harness.aedist(ranks: nil, ["train", "--epochs", "1", "--checkpoint-dir", folder]))
        let outcome = try Harness.aedist(ranks: 2, ["generate", "\(folder)/latest.h5", "--output", "\(folder)/g.h5"])
        XCTAssertEqual(outcome.status, 1, "\(outcome)")
        XCTAssertEqual(outcome.errorLines.count, 1, "\(outcome)")
        XCTAssertTrue(outcome.stderr.contains("is not a variational model"), outcome.stderr)
    }
}

/// `aedist gradient`, `train --save-initial` and `inspect --json`'s layer list: what a user needs to check aedist's
/// gradients against another framework from outside.
final class GradientCheckFromOutsideTests: XCTestCase {
    func testGradientsAreTheSameAtOneAndTwoRanksAndNamedLikeTheCheckpoint() throws {
        let folder = Harness.temporaryDirectory()
        let model = "conv:28x28x1/c8s2:linear-bn:relu-drop0.1/t8s2-c1"
        let trained = try Harness.aedist(ranks: 2, ["train", "--model", model, "--epochs", "1", "--save-initial", "--checkpoint-dir", folder])
        assertSucceeded(trained)
        XCTAssertTrue(trained.stdout.contains("initial parameters: \(folder)/ckpt-e0000-s0000000.h5"), trained.stdout)
        for ranks in [1, 2] {
            let outcome = try Harness.aedist(ranks: ranks, ["gradient", folder + "/ckpt-e0000-s0000000.h5", "--dataset", "/val/x",
                                                            "--rows", "300", "--output", folder + "/g\(ranks).h5"])
            assertSucceeded(outcome)
            XCTAssertTrue(outcome.stdout.contains("/val/x: 300 samples, mean bce "), outcome.stdout)
        }
        let script = """
        import h5py, numpy as np
        a, b = h5py.File("\(folder)/g1.h5", "r"), h5py.File("\(folder)/g2.h5", "r")
        c = h5py.File("\(folder)/ckpt-e0000-s0000000.h5", "r")
        names = []
        a["gradients"].visititems(lambda n, o: names.append(n) if isinstance(o, h5py.Dataset) else None)
        assert sorted(names) == sorted(n for n in names if ("parameters/" + n) in c), names
        assert all(a["gradients/" + n].shape == c["parameters/" + n].shape for n in names)
        worst = max(float(np.abs(a["gradients/" + n][()] - b["gradients/" + n][()]).max() / (np.abs(a["gradients/" + n][()]).max() + 1e-12)) for n in names)
        print("rows", a["rows"].shape[0], "loss", float(a["loss"][0]), float(b["loss"][0]), "worst", worst)
        assert a["rows"].shape == (300,) and abs(float(a["loss"][0]) - float(b["loss"][0])) < 1e-5 and worst < 1e-4, worst
        """
        let compared = try Harness.pythonScript(script)
        XCTAssertEqual(compared.status, 0, compared.description)

        let inspected = try Harness.aedist(ranks: nil, ["inspect", folder + "/latest.h5", "--json"])
        assertSucceeded(inspected)
        let json = try JSONSerialization.jsonObject(with: Data(inspected.stdout.utf8)) as! [String: Any]
        let layers = try XCTUnwrap(json["layers"] as? [[String: Any]])
        XCTAssertEqual(layers.map { $0["kind"] as? String }, ["Conv2D", "BatchNorm", "Dropout", "ConvTranspose2D", "Conv2D"])
        XCTAssertEqual(layers[0]["stride"] as? Int, 2)
        XCTAssertEqual(layers[0]["padding"] as? String, "same")
        XCTAssertEqual(layers[3]["output_shape"] as? [Int], [28, 28, 8])
    }
}

/// `--resume` continues with the settings the checkpoint stores: a batch job needs nothing but `--resume auto`, and
/// the flags it does give change those settings, each said.
final class ResumeSettingsTests: XCTestCase {
    func testResumeAutoRestoresTheStoredSettingsAndSaysWhatTheFlagsChange() throws {
        let folder = Harness.temporaryDirectory()
        assertSucceeded(try Harness.aedist(ranks: 2, ["train", "--model", "dense:784-64", "--lr", "0.002", "--batch-size", "128",
                                                      "--epochs", "1", "--checkpoint-dir", folder]))
        let resumed = try Harness.aedist(ranks: 2, ["train", "--resume", "auto", "--checkpoint-dir", folder, "--epochs", "2"])
        assertSucceeded(resumed)
        XCTAssertTrue(resumed.stdout.contains("resuming with the settings stored in \(folder)/ckpt-e0001-s0000032.h5; changed on the command line: --epochs 2 (it had 1)"),
                      resumed.stdout)
        XCTAssertTrue(resumed.stdout.contains("aedist: encoder.0 784→64 relu"), resumed.stdout)
        let stored = try Harness.python(["config", folder + "/latest.h5"]).stdout
        for expected in [#""spec": "dense:784-64""#, #""lr": 0.002"#, #""batch_size": 128"#, #""epochs": 2"#] {
            XCTAssertTrue(stored.contains(expected), "\(expected) in \(stored)")
        }
        XCTAssertEqual(try Harness.metrics(in: folder).map { $0["epoch"]! }, [1, 2])
        // A model option cannot change mid-run: named, as before.
        let refused = try Harness.aedist(ranks: 2, ["train", "--resume", "auto", "--checkpoint-dir", folder, "--epochs", "3", "--activation", "tanh"])
        XCTAssertEqual(refused.status, 1, refused.description)
        XCTAssertTrue(refused.stderr.contains("other model options (--activation)"), refused.stderr)
    }
}
