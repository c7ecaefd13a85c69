import AEDistCore
import XCTest

/// The Autoencoder's buffer contract beyond the numbers the gradient check covers: backward accumulates, the gradient
/// tail is left alone, and initialisation is a pure function of the seed.
final class AutoencoderTests: XCTestCase {
    private func modelWithInput(gradients: FlatBuffer? = nil) throws -> (Autoencoder, FlatBuffer, batch: Int) {
        let architecture = try architecture("dense:5-4:tanh-3:linear")
        let testCase = GradientCheckCase(architecture, batch: 3, seed: 7)
        let model = Autoencoder(architecture: architecture, maxBatch: 3, gradients: gradients)
        model.parameters.copy(from: FlatBuffer(testCase.parameters))
        return (model, FlatBuffer(testCase.input), 3)
    }

    private func accumulateGradient(_ model: Autoencoder, _ input: FlatBuffer, batch: Int) {
        model.forward(input: input.pointer, batch: batch)
        _ = Loss.evaluate(.bce, outputActivation: .sigmoid, logits: model.outputLogits, output: model.reconstruction,
                          target: input.pointer, batch: batch, width: model.inputSize, gradient: model.outputGradient)
        model.backward(input: input.pointer, batch: batch)
    }

    /// Gradients are accumulated (+=), which is what lets the trainer zero once per step.
    func testBackwardAccumulatesIntoGradients() throws {
        let (model, input, batch) = try modelWithInput()
        model.gradients.fill(0)
        accumulateGradient(model, input, batch: batch)
        let once = model.gradients.array.map(Double.init)
        accumulateGradient(model, input, batch: batch)
        assertAllClose(model.gradients.array, once.map { 2 * $0 }, absolute: 1e-7, relative: 1e-6,
                       "two backward passes give twice the gradient")
    }

    /// The gradients may live inside a larger buffer (the step's all-reduce message, whose statistics follow
    /// them): backward writes the view, and nothing after it.
    func testGradientsInsideALargerBufferLeaveTheRestAlone() throws {
        let parameterCount = try architecture("dense:5-4:tanh-3:linear").parameterLayout.totalCount
        let message = FlatBuffer(count: parameterCount + 3)
        for i in parameterCount..<message.count { message[i] = 42 }
        let (model, input, batch) = try modelWithInput(gradients: FlatBuffer(viewing: message.pointer, count: parameterCount, owner: message))
        let (alone, _, _) = try modelWithInput()
        alone.gradients.fill(0)
        accumulateGradient(model, input, batch: batch)
        accumulateGradient(alone, input, batch: batch)
        XCTAssertEqual(Array(message.array.prefix(parameterCount)), alone.gradients.array, "the view holds the gradients")
        XCTAssertEqual(Array(message.array.suffix(3)), [42, 42, 42])
    }

    /// Each layer reads its tensors where the checkpoint layout puts them, in PyTorch's [out, in] orientation: a
    /// weight set by its layout path shows up in exactly the output PyTorch would put it in.
    func testLayersReadTheirTensorsWhereTheLayoutSaysInPyTorchsOrientation() throws {
        let architecture = try architecture("dense:7-5/7", activation: .linear, output: .linear)
        let model = Autoencoder(architecture: architecture, maxBatch: 1)
        func tensor(_ path: String) -> ParameterLayout.Tensor { architecture.parameterLayout.tensors.first { $0.path == path }! }
        let encoderBias = tensor("encoder.0/bias"), encoderWeight = tensor("encoder.0/weight"), decoderBias = tensor("decoder.0/bias")
        for j in 0..<5 { model.parameters[encoderBias.offset + j] = Float(j + 1) / 10 }
        model.parameters[encoderWeight.offset + 3 * 7 + 6] = 2  // W[out 3, in 6]
        for j in 0..<7 { model.parameters[decoderBias.offset + j] = -Float(j) }
        let input = FlatBuffer([0, 0, 0, 0, 0, 0, 1])
        model.forward(input: input.pointer, batch: 1)
        XCTAssertEqual((0..<5).map { model.code[$0] }, [0.1, 0.2, 0.3, 2.4, 0.5])
        XCTAssertEqual((0..<7).map { model.reconstruction[$0] }, [0, -1, -2, -3, -4, -5, -6], "decoder weights are zero")
    }

    /// Initialisation is a pure function of the seed (every rank, and every resume, builds the same model), biases
    /// start at zero, and weights stay inside the bound their activation's scheme gives.
    func testInitializationIsDeterministicZeroBiasAndBounded() throws {
        let architecture = try architecture("dense:20-8:tanh-4:relu")
        func initialized(_ seed: UInt64, maxBatch: Int = 1) -> FlatBuffer {
            let model = Autoencoder(architecture: architecture, maxBatch: maxBatch)
            model.initializeParameters(seed: seed)
            return model.parameters
        }
        let parameters = initialized(5)
        XCTAssertEqual(parameters.bitChecksum, initialized(5, maxBatch: 64).bitChecksum, "same seed, same parameters")
        XCTAssertNotEqual(parameters.bitChecksum, initialized(6).bitChecksum, "another seed, other parameters")

        let layout = architecture.parameterLayout
        for (index, layer) in architecture.layers.enumerated() {
            let weight = layout.tensors[2 * index], bias = layout.tensors[2 * index + 1]
            let weights = parameters.array[weight.offset..<(weight.offset + weight.count)]
            let bound = layer.activation.initialization.bound(fanIn: layer.inputSize, fanOut: layer.outputSize)
            XCTAssertTrue(weights.allSatisfy { abs($0) <= bound }, "\(layer.name) weights exceed ±\(bound)")
            // Uniform on ±bound: over 32+ draws the largest magnitude comes close to the bound.
            XCTAssertGreaterThan(weights.map(abs).max()!, 0.5 * bound, "\(layer.name) weights suspiciously small")
            XCTAssertTrue(parameters.array[bias.offset..<(bias.offset + bias.count)].allSatisfy { $0 == 0 },
                          "\(layer.name) biases should start at zero")
        }
    }

    /// Each layer draws from its own stream (seed, layer index): a layer's weights do not depend on the layers
    /// after it. With ReLU (He bound √(6/fanIn), independent of fanOut's neighbours) encoder.0 is identical.
    func testEachLayerHasItsOwnRandomStream() throws {
        let shallow = Autoencoder(architecture: try architecture("dense:12-6"), maxBatch: 1)
        let deep = Autoencoder(architecture: try architecture("dense:12-6-3"), maxBatch: 1)
        shallow.initializeParameters(seed: 11)
        deep.initializeParameters(seed: 11)
        XCTAssertEqual(Array(shallow.parameters.array[0..<72]), Array(deep.parameters.array[0..<72]))
    }

    func testWeightInitializationBounds() {
        XCTAssertEqual(Double(WeightInitialization.glorotUniform.bound(fanIn: 784, fanOut: 32)), (6.0 / 816).squareRoot(),
                       accuracy: 1e-7)
        XCTAssertEqual(Double(WeightInitialization.heUniform.bound(fanIn: 784, fanOut: 32)), (6.0 / 784).squareRoot(),
                       accuracy: 1e-7)
        XCTAssertEqual(Activation.relu.initialization, .heUniform)
        XCTAssertEqual(Activation.leakyRelu.initialization, .heUniform)
        for activation in [Activation.tanh, .sigmoid, .linear] { XCTAssertEqual(activation.initialization, .glorotUniform) }
    }
}
