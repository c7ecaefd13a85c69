import AEDistCore
import XCTest

/// Convolution, pooling and upsampling: forward against a direct (naive, float64) convolution, and every gradient
/// of a small convolutional autoencoder against finite differences.
final class ConvolutionTests: XCTestCase {
    /// The shared helper, with the smooth defaults these gradient checks want.
    func architecture(_ spec: String, hidden: Activation = .tanh, output: Activation = .linear) throws -> ModelArchitecture {
        try AEDistCoreTests.architecture(spec, activation: hidden, output: output)
    }

    func testTheTutorialsModelIsOneSpec() throws {
        let model = try architecture("conv:28x28x1/c32-p2-c32-p2/c32-u2-c32-u2-c1", hidden: .relu, output: .sigmoid)
        XCTAssertEqual(model.layers.map(\.outputShape), [[28, 28, 32], [14, 14, 32], [14, 14, 32], [7, 7, 32],
                                                        [7, 7, 32], [14, 14, 32], [14, 14, 32], [28, 28, 32], [28, 28, 1]])
        XCTAssertEqual(model.codeSize, 7 * 7 * 32)
        XCTAssertEqual(model.outputActivation, .sigmoid)
        XCTAssertEqual(model.parameterLayout.tensors.map(\.path), ["encoder.0/weight", "encoder.0/bias", "encoder.2/weight", "encoder.2/bias",
                                                                  "decoder.0/weight", "decoder.0/bias", "decoder.2/weight", "decoder.2/bias",
                                                                  "decoder.4/weight", "decoder.4/bias"])
        XCTAssertEqual(model.parameterLayout.tensors[0].shape, [32, 3, 3, 1])
        XCTAssertEqual(model.parameterLayout.totalCount, (9 * 1 * 32 + 32) + 3 * (9 * 32 * 32 + 32) + (9 * 32 + 1))
    }

    func testFlattenDenseAndReshapeBetweenImagesAndVectors() throws {
        let model = try architecture("conv:28x28x1/c16-p2-f-d32/d3136-r14x14x16-u2-c1")
        XCTAssertEqual(model.layers.map(\.outputShape), [[28, 28, 16], [14, 14, 16], [3136], [32], [3136], [14, 14, 16], [28, 28, 16], [28, 28, 1]])
        XCTAssertEqual(model.codeSize, 32)
        XCTAssertEqual(model.parameterLayout.tensors.first { $0.path == "encoder.3/weight" }?.shape, [32, 3136])
        XCTAssertThrowsError(try architecture("conv:28x28x1/c16-d32/d784-r28x28x1-c1")) { XCTAssertTrue("\($0)".contains("flatten first"), "\($0)") }
        XCTAssertThrowsError(try architecture("conv:28x28x1/c16-f-c8/c1")) { XCTAssertTrue("\($0)".contains("reshape first"), "\($0)") }
        XCTAssertThrowsError(try architecture("conv:28x28x1/f-d8/d700-r28x28x1")) { XCTAssertTrue("\($0)".contains("is not a reshape"), "\($0)") }
    }

    func testBadConvSpecsNameTheProblem() {
        for (spec, fragment) in [("conv:28x28/c8/c1", "is not an input shape"), ("conv:28x28x1/c8", "three parts"), ("conv:28x28x1/c8-p2/c8", "ends at 14×14×8"),
                                 ("conv:28x28x1/q8/c1", "unknown layer 'q8'"), ("conv:4x4x1/c8k9v/u1-c1", "does not fit"),
                                 ("conv:28x28x1/p2:relu/u2-c1", "take no activation")] {
            XCTAssertThrowsError(try architecture(spec), spec) { XCTAssertTrue("\($0)".contains(fragment), "\(spec): \($0)") }
        }
    }

    /// Direct convolution in float64: out[n, oy, ox, f] = b[f] + Σ w[f, ky, kx, c] · in[n, oy·s − pad + ky, ox·s − pad + kx, c].
    func testConvolutionForwardMatchesADirectConvolution() throws {
        // Up to four filters a layer convolves directly, from five on through im2col and a GEMM: both, each way.
        for spec in ["conv:5x6x2/c3/c2k1", "conv:8x8x2/c3s2/c2k1-u2", "conv:4x4x2/c3v/u2-c2k1",
                     "conv:5x6x2/c6/c2k1", "conv:8x8x2/c5s2/c2k1-u2", "conv:4x4x2/c7v/u2-c2k1"] {
            let model = Autoencoder(architecture: try architecture(spec, hidden: .linear), maxBatch: 2)
            model.initializeParameters(seed: 4)
            for i in 0..<model.parameters.count { model.parameters[i] += Float(i % 7) * 0.01 }  // non-zero biases too
            guard let layer = model.architecture.layers[0] as? Conv2D else { return XCTFail("\(spec) starts with a convolution") }
            let (filters, kernel, s, same) = (layer.filters, layer.kernel, layer.stride, layer.samePadding)
            let (h, w, c) = (layer.inputShape[0], layer.inputShape[1], layer.inputShape[2])
            let (oh, ow) = (layer.outputShape[0], layer.outputShape[1])
            var random = RandomStream(seed: 9)
            let input = (0..<(2 * h * w * c)).map { _ in random.nextUnitFloat() }
            input.withUnsafeBufferPointer { model.forward(input: $0.baseAddress!, batch: 2) }
            // The model's first layer output is the code of this one-layer encoder.
            let padTop = same ? max((oh - 1) * s + kernel - h, 0) / 2 : 0, padLeft = same ? max((ow - 1) * s + kernel - w, 0) / 2 : 0
            let weight = model.layout.tensors[0], bias = model.layout.tensors[1]
            var worst = 0.0
            for n in 0..<2 { for oy in 0..<oh { for ox in 0..<ow { for f in 0..<filters {
                var sum = Double(model.parameters[bias.offset + f])
                for ky in 0..<kernel { for kx in 0..<kernel { for ch in 0..<c {
                    let iy = oy * s - padTop + ky, ix = ox * s - padLeft + kx
                    guard iy >= 0, iy < h, ix >= 0, ix < w else { continue }
                    sum += Double(model.parameters[weight.offset + ((f * kernel + ky) * kernel + kx) * c + ch]) * Double(input[((n * h + iy) * w + ix) * c + ch])
                } } }
                let actual = Double(model.code[((n * oh + oy) * ow + ox) * filters + f])
                worst = max(worst, abs(actual - sum))
                XCTAssertEqual(actual, sum, accuracy: 1e-5, "\(spec) at n \(n) y \(oy) x \(ox) f \(f)")
            } } } }
            print("\(spec): largest difference from the direct convolution \(worst)")
        }
    }

    func testEveryGradientOfASmallConvolutionalAutoencoder() throws {
        for (spec, lossKind, output) in [("conv:6x6x2/c3-p2/c3-u2-c2", LossKind.mse, Activation.linear),
                                         ("conv:6x6x2/c5-p2/c6-u2-c2", LossKind.mse, Activation.linear),
                                         ("conv:4x4x1/c2-p2-f-d3/d8-r2x2x2-u2-c1", LossKind.mse, Activation.linear),
                                     ("conv:8x8x1/c2s2-p2/u2-c2k1-u2-c1", LossKind.bce, Activation.sigmoid)] {
            let architecture = try architecture(spec, hidden: .tanh, output: output)
            let model = Autoencoder(architecture: architecture, maxBatch: 3)
            model.initializeParameters(seed: 11)
            let width = architecture.inputSize
            var random = RandomStream(seed: 5)
            let input = (0..<(3 * width)).map { _ in random.nextUnitFloat() }
            assertModelGradients(model, input: input, batch: 3, loss: lossKind, output: output, label: spec)
        }
    }
}

extension ConvolutionTests {
    func testDenseModelsWithAnExplicitDecoder() throws {
        let model = try architecture("dense:784-256-32/64-784")
        XCTAssertEqual(model.layers.map(\.outputShape), [[256], [32], [64], [784]])
        XCTAssertEqual(model.encoderDepth, 2)
        XCTAssertEqual(model.layers.last!.activation, .linear)
        XCTAssertThrowsError(try architecture("dense:784-32/64-700")) { XCTAssertTrue("\($0)".contains("ends at 700 values"), "\($0)") }
    }
}
