import AEDistCore
import XCTest

/// The Autoencoder's buffer contract beyond the numbers the gradient check covers: backward accumulates, the gradient
/// tail is left alone, and initialisation is a pure function of the seed.
final class AutoencoderTests: XCTestCase {
    private func modelWithInput(tail: Int = 0) throws -> (Autoencoder, FlatBuffer, batch: Int) {
        let architecture = try architecture("dense:5-4:tanh-3:linear")
        let testCase = GradientCheckCase(architecture, batch: 3, seed: 7)
        let model = Autoencoder(architecture: architecture, maxBatch: 3, gradientTail: tail)
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

    /// Values that ride along in the gradient all-reduce sit after the gradients; backward must not touch them.
    func testGradientTailIsLeftAlone() throws {
        let (model, input, batch) = try modelWithInput(tail: 3)
        XCTAssertEqual(model.gradients.count, model.layout.totalCount + 3)
        XCTAssertEqual(model.parameters.count, model.layout.totalCount)
        model.gradients.fill(0)
        for i in model.layout.totalCount..<model.gradients.count { model.gradients[i] = 42 }
        accumulateGradient(model, input, batch: batch)
        XCTAssertEqual(Array(model.gradients.array.suffix(3)), [42, 42, 42])
    }

    func testLayersUseTheLayoutOffsets() throws {
        let architecture = try architecture("dense:7-5-2")
        let model = Autoencoder(architecture: architecture, maxBatch: 2)
        let layout = architecture.parameterLayout
        for layer in model.layers {
            XCTAssertEqual(layer.weightOffset, layout.tensors.first { $0.path == "\(layer.spec.name)/weight" }?.offset)
            XCTAssertEqual(layer.biasOffset, layout.tensors.first { $0.path == "\(layer.spec.name)/bias" }?.offset)
        }
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
