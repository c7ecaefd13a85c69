import Foundation
import XCTest

/// The autoencoders of Keras's own examples, as the README writes them, trained on the embedded MNIST subset under
/// real mpirun.
final class KerasExampleTests: XCTestCase {
    /// "Convolutional autoencoder for image denoising": after 10 epochs at 2 ranks its outputs are at least three
    /// times closer to the clean images than the noisy inputs are.
    func testDenoisingModelCleansTheNoise() throws {
        let folder = Harness.temporaryDirectory()
        let outcome = try Harness.aedist(ranks: 2, ["train", "--model", "conv:28x28x1/c32-p2-c32-p2/t32s2-t32s2-c1",
                                                    "--noise", "gaussian:0.5", "--epochs", "10", "--checkpoint-dir", folder])
        assertSucceeded(outcome)
        let last = try XCTUnwrap(outcome.stdout.split(separator: "\n").last { $0.hasPrefix("epoch 10/10") }, outcome.stdout)
        // "… val mse 0.0223 (noisy inputs: mse 0.1158) …"
        let numbers = last.components(separatedBy: "val mse ")[1].split(separator: " ")
        let cleaned = try XCTUnwrap(Double(numbers[0])), noisy = try XCTUnwrap(Double(last.components(separatedBy: "noisy inputs: mse ")[1].prefix { $0 != ")" }))
        XCTAssertLessThan(3 * cleaned, noisy, String(last))
    }

    /// "Variational AutoEncoder": strided convolutions down to a 2-value code and transposed ones back; the epoch
    /// line reports KL per sample, and `generate` draws from it.
    func testConvolutionalVAETrainsAndGenerates() throws {
        let folder = Harness.temporaryDirectory()
        let outcome = try Harness.aedist(ranks: 2, ["train", "--variational", "--model", "conv:28x28x1/c32s2-c64s2-f-d16-d2/d3136-r7x7x64-t64s2-t32s2-t1",
                                                    "--epochs", "2", "--batch-size", "128", "--checkpoint-dir", folder])
        assertSucceeded(outcome)
        XCTAssertTrue(outcome.stdout.contains("transposed conv 3×3×64 stride 2 7×7×64→14×14×64"), outcome.stdout)
        XCTAssertTrue(outcome.stdout.contains("+ kl "), outcome.stdout)
        let metrics = try Harness.metrics(in: folder)
        XCTAssertLessThan(metrics.last!["val_loss"]!, metrics.first!["val_loss"]!, "it learns")
        let generated = try Harness.aedist(ranks: nil, ["generate", folder + "/latest.h5", "--count", "16", "--output", folder + "/gen.h5",
                                                       "--png", folder + "/gen.png"])
        assertSucceeded(generated)
        XCTAssertTrue(FileManager.default.fileExists(atPath: folder + "/gen.png"))
        XCTAssertTrue(try Harness.python(["stats", folder + "/gen.h5", "/generated"]).stdout.hasPrefix("shape 16x28x28x1 "))
    }
}

/// Colour images (N×H×W×3 uint8, or N×3×H×W with --channels-first) train with strided and transposed convolutions,
/// BatchNorm and dropout, and the reconstruction grid is drawn in colour.
final class ColourImageTests: XCTestCase {
    func testColourImagesTrainAndDrawInColour() throws {
        for layout in ["rgb", "rgb-channels-first"] {
            let folder = Harness.temporaryDirectory()
            let data = folder + "/\(layout).h5"
            assertSucceeded(try Harness.python(["make-data", layout, data]))
            let model = "conv:16x16x3/c16s2:linear-bn:relu-drop0.1-c32s2/t32s2-bn-t16s2-c3"
            let outcome = try Harness.aedist(ranks: 2, ["train", "--data", data, "--model", model, "--epochs", "4", "--batch-size", "32",
                                                        "--checkpoint-dir", folder + "/ck"] + (layout == "rgb" ? [] : ["--channels-first"]))
            assertSucceeded(outcome)
            let metrics = try Harness.metrics(in: folder + "/ck")
            XCTAssertLessThan(metrics.last!["val_loss"]!, metrics.first!["val_loss"]!, "\(layout): it learns")
            let png = folder + "/grid.png"
            assertSucceeded(try Harness.aedist(ranks: nil, ["reconstruct", folder + "/ck/latest.h5", "--data", data, "--dataset", "/val/x",
                                                            "--output", folder + "/recon.h5", "--png", png]))
            let header = try Data(contentsOf: URL(fileURLWithPath: png))
            XCTAssertEqual(header[25], 2, "\(layout): the PNG's colour type is RGB")
        }
    }
}
