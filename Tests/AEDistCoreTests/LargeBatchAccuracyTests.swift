import AEDistCore
import XCTest

/// Gradients that sum over every row and pixel of a large local batch: a conv layer's bias gradient adds
/// batch × pixels terms (3 million here), and a running float32 total over them errs by about 1e-3 relative. They
/// must stay within 1e-5 of a float64 sum of the very same terms, whatever the rows per rank.
final class LargeBatchAccuracyTests: XCTestCase {
    func testConvGradientsOverThousandsOfRowsMatchAFloat64Sum() throws {
        // decoder.0 is a one-filter (direct-kernel) convolution whose input is the code, so its terms are at hand.
        let architecture = try AEDistCoreTests.architecture("conv:28x28x1/c4-c1:tanh/c1", activation: .relu, output: .sigmoid)
        let batch = 4000, width = architecture.inputSize
        let model = Autoencoder(architecture: architecture, maxBatch: batch)
        model.initializeParameters(seed: 3)
        var random = RandomStream(seed: 8)
        let input = FlatBuffer((0..<(batch * width)).map { _ in random.nextUnitFloat() })
        model.gradients.fill(0)
        model.forward(input: input.pointer, batch: batch)
        _ = Loss.evaluate(.bce, outputActivation: .sigmoid, logits: model.outputLogits, output: model.reconstruction,
                          target: input.pointer, batch: batch, width: width, gradient: model.outputGradient)
        let dz = Array(UnsafeBufferPointer(start: model.outputGradient, count: batch * width))
        let code = Array(UnsafeBufferPointer(start: model.code, count: batch * width))
        model.backward(input: input.pointer, batch: batch)

        // float64: db = Σ dz; dW[ky, kx] = Σ dz(n, y, x) · code(n, y + ky − 1, x + kx − 1) ("same" 3×3, one channel).
        var bias = 0.0, weights = [Double](repeating: 0, count: 9)
        for n in 0..<batch {
            for y in 0..<28 {
                for x in 0..<28 {
                    let g = Double(dz[(n * 28 + y) * 28 + x])
                    bias += g
                    for ky in 0..<3 {
                        for kx in 0..<3 {
                            let iy = y + ky - 1, ix = x + kx - 1
                            guard iy >= 0, iy < 28, ix >= 0, ix < 28 else { continue }
                            weights[ky * 3 + kx] += g * Double(code[(n * 28 + iy) * 28 + ix])
                        }
                    }
                }
            }
        }
        let layout = architecture.parameterLayout
        func gradient(_ path: String) -> [Double] {
            let tensor = layout.tensors.first { $0.path == path }!
            return (0..<tensor.count).map { Double(model.gradients[tensor.offset + $0]) }
        }
        for (name, actual, expected) in [("decoder.0/bias", gradient("decoder.0/bias"), [bias]),
                                         ("decoder.0/weight", gradient("decoder.0/weight"), weights)] {
            let scale = expected.map(abs).max()!
            let worst = zip(actual, expected).map { abs($0 - $1) }.max()!
            print("\(name): largest difference \(worst), relative to the tensor's largest gradient \(worst / scale)")
            XCTAssertLessThanOrEqual(worst / scale, 1e-5, name)
        }
    }
}

/// The output layer is the last one with parameters; reshape, flatten, pooling and upsampling may follow it, and
/// the loss then sees its logits moved the same way.
final class OutputLayerTests: XCTestCase {
    func testTheOutputActivationReachesThroughShapeOnlyLayers() throws {
        var config = TrainingConfig()
        config.model.spec = "conv:28x28x1/c8-f-d32/d784-r28x28x1"
        let architecture = try config.validate()
        XCTAssertEqual(architecture.outputActivation, .sigmoid, "the default output activation goes to d784")
        XCTAssertEqual(architecture.layers[architecture.outputLayerIndex].name, "decoder.0")
        config.model.spec = "conv:28x28x1/c8-f-d32/d784:relu-r28x28x1"
        XCTAssertThrowsError(try config.validate()) {
            XCTAssertTrue("\($0)".contains("the output layer decoder.0 is relu: write ':sigmoid' after decoder.0's layer in --model, or use --loss mse"), "\($0)")
        }
        config.model.spec = "dense:784-32"
        config.model.outputActivation = .linear
        XCTAssertThrowsError(try config.validate()) { XCTAssertTrue("\($0)".contains("pass --output-activation sigmoid"), "\($0)") }
        config.model.spec = "conv:28x28x1/c8/c1-drop0.1"
        config.model.outputActivation = .sigmoid
        XCTAssertThrowsError(try config.validate()) { XCTAssertTrue("\($0)".contains("only reshape, flatten, pooling and upsampling may follow it"), "\($0)") }
    }

    /// BCE from the logits through a reshape and through an upsampling: every gradient against finite differences.
    func testGradientsThroughShapeOnlyLayersAfterTheOutput() throws {
        for spec in ["conv:4x4x1/c2-f-d3/d16-r4x4x1", "conv:4x4x1/c2-p2/c1-u2"] {
            let architecture = try AEDistCoreTests.architecture(spec, activation: .tanh, output: .sigmoid)
            XCTAssertEqual(architecture.outputActivation, .sigmoid, spec)
            let model = Autoencoder(architecture: architecture, maxBatch: 3)
            model.initializeParameters(seed: 7)
            var random = RandomStream(seed: 1)
            let input = (0..<48).map { _ in random.nextUnitFloat() }
            assertModelGradients(model, input: input, batch: 3, loss: .bce, output: .sigmoid, label: spec)
            // The reconstruction is σ of the logits the loss sees.
            for i in 0..<48 { XCTAssertEqual(model.reconstruction[i], FastMath.sigmoid(model.outputLogits[i]), accuracy: 1e-6) }
        }
    }
}
