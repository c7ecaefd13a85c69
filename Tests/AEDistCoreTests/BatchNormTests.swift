import AEDistCore
import XCTest

/// BatchNorm: normalisation by the batch's statistics in training and by the running ones elsewhere (Keras's
/// momentum and ε), its gradients, and micro-batched passes that give the same result as one.
final class BatchNormTests: XCTestCase {
    let training = PassContext(training: true, seed: 1, key: NoiseKey(epoch: 0, first: 0))

    struct Run {
        let layer: BatchNorm
        let parameters: FlatBuffer, state: FlatBuffer, buffers: FlatBuffer, workspace: FlatBuffer
        let output: FlatBuffer, preActivation: FlatBuffer

        init(_ layer: BatchNorm, batch: Int) {
            self.layer = layer
            parameters = FlatBuffer(count: layer.parameterCount)
            layer.initialize(parameters: parameters.pointer, seed: 0, layerIndex: 0)
            state = FlatBuffer(count: layer.stateSize)
            buffers = FlatBuffer(count: layer.bufferCount)
            layer.initializeBuffers(buffers.pointer)
            workspace = FlatBuffer(count: layer.workspaceSize * 2)
            output = FlatBuffer(count: batch * layer.outputSize)
            preActivation = FlatBuffer(count: batch * layer.outputSize)
        }

        func forward(_ input: FlatBuffer, batch: Int, context: PassContext) {
            var context = context
            context.state = state.pointer
            context.buffers = buffers.pointer
            layer.forward(input: input.pointer, batch: batch, parameters: parameters.pointer, preActivation: preActivation.pointer,
                          output: output.pointer, workspace: workspace.pointer, context: context)
        }
    }

    func testTrainingNormalisesEachChannelAndUpdatesTheRunningStatistics() {
        let layer = BatchNorm(name: "encoder.1", inputShape: [2, 2, 3], activation: .linear)
        let batch = 5
        var random = RandomStream(seed: 3)
        let input = FlatBuffer((0..<(batch * 12)).map { i in Float(i % 3) * 2 + 1 + random.nextUnitFloat() * Float(i % 3 + 1) })
        let run = Run(layer, batch: batch)
        run.forward(input, batch: batch, context: training)
        for c in 0..<3 {
            let values = stride(from: c, to: batch * 12, by: 3).map { Double(run.output[$0]) }
            let inputs = stride(from: c, to: batch * 12, by: 3).map { Double(input[$0]) }
            let mean = values.reduce(0, +) / Double(values.count)
            let variance = values.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / Double(values.count)
            let inputMean = inputs.reduce(0, +) / Double(inputs.count)
            let inputVariance = inputs.map { ($0 - inputMean) * ($0 - inputMean) }.reduce(0, +) / Double(inputs.count)
            XCTAssertEqual(mean, 0, accuracy: 1e-5, "channel \(c) mean")
            XCTAssertEqual(variance, inputVariance / (inputVariance + 1e-3), accuracy: 1e-4, "channel \(c) variance (ε = 1e-3)")
            XCTAssertEqual(Double(run.buffers[c]), 0.01 * inputMean, accuracy: 1e-5, "running mean, momentum 0.99")
            XCTAssertEqual(Double(run.buffers[3 + c]), 0.99 + 0.01 * inputVariance, accuracy: 1e-5, "running variance (biased, as Keras)")
        }
        // Elsewhere the running statistics normalise: (x − 0.01·μ)/√(0.99 + 0.01·σ² + ε).
        run.forward(input, batch: batch, context: .inference)
        let expected = (Double(input[0]) - Double(run.buffers[0])) / (Double(run.buffers[3]) + 1e-3).squareRoot()
        XCTAssertEqual(Double(run.output[0]), expected, accuracy: 1e-5)
    }

    func testGradients() throws {
        assertLayerInputGradient(BatchNorm(name: "b", inputShape: [5], activation: .tanh), batch: 4, context: training)
        assertLayerInputGradient(BatchNorm(name: "b", inputShape: [3, 2, 2], activation: .relu), batch: 3, context: training)
        for (spec, output) in [("dense:6-5-bn-3", Activation.sigmoid), ("conv:4x4x1/c3-bn:relu-p2/u2-c2-bn-c1", .linear)] {
            let architecture = try AEDistCoreTests.architecture(spec, activation: .tanh, output: output)
            let model = Autoencoder(architecture: architecture, maxBatch: 4)
            model.initializeParameters(seed: 5)
            // γ and β away from 1 and 0, so their gradients matter.
            for tensor in architecture.parameterLayout.tensors where architecture.layers.first(where: { $0.name == tensor.layer }) is BatchNorm {
                for i in 0..<tensor.count { model.parameters[tensor.offset + i] += Float(i + 1) * 0.1 }
            }
            var random = RandomStream(seed: 9)
            let width = architecture.inputSize
            let input = (0..<(4 * width)).map { _ in random.nextUnitFloat() }
            assertModelGradients(model, input: input, batch: 4, loss: output == .sigmoid ? .bce : .mse, output: output, context: training, label: spec)
        }
    }

    /// Micro-batched (deterministic mode's way: each micro-batch's gradient in its own slot) and whole passes
    /// agree: the statistics are of the whole batch either way.
    func testMicroBatchedPassesMatchOneWholePass() throws {
        let architecture = try AEDistCoreTests.architecture("dense:6-5-bn-drop0.2-3", activation: .tanh, output: .sigmoid)
        let whole = Autoencoder(architecture: architecture, maxBatch: 6)
        let micro = Autoencoder(architecture: architecture, maxBatch: 6, microBatch: 2)
        whole.initializeParameters(seed: 2)
        micro.parameters.copy(from: whole.parameters)
        micro.buffers.copy(from: whole.buffers)
        var random = RandomStream(seed: 4)
        let input = FlatBuffer((0..<36).map { _ in random.nextUnitFloat() })
        let slots = FlatBuffer(count: 3 * whole.parameters.count)
        for (model, gradientSlots) in [(whole, nil), (micro, (slots.pointer, whole.parameters.count))] as [(Autoencoder, (UnsafeMutablePointer<Float>, Int)?)] {
            runGradientPath(model, input: input, batch: 6, loss: .bce, output: .sigmoid, context: training, gradientSlots: gradientSlots)
        }
        assertAllClose((0..<36).map { Double(micro.reconstruction[$0]) }, (0..<36).map { Double(whole.reconstruction[$0]) },
                       absolute: 1e-6, "outputs")
        let summed = (0..<whole.parameters.count).map { i in Double(slots[i] + slots[whole.parameters.count + i] + slots[2 * whole.parameters.count + i]) }
        assertAllClose(summed, whole.gradients.array.map(Double.init), absolute: 1e-6, relative: 1e-5, "gradients summed over micro-batch slots")
        assertAllClose(micro.buffers.array.map(Double.init), whole.buffers.array.map(Double.init), absolute: 1e-7, "running statistics")
    }

    /// A layer that feeds a BatchNorm linearly keeps its bias at zero: its true gradient is zero, and what float
    /// rounding leaves would be amplified by Adam into a drift that depends on the number of ranks.
    func testABiasBeforeBatchNormIsHeldAtZero() throws {
        let architecture = try AEDistCoreTests.architecture("conv:4x4x1/c3:linear-bn:relu/c2-bn-c1", activation: .tanh, output: .linear)
        let model = Autoencoder(architecture: architecture, maxBatch: 3)
        model.initializeParameters(seed: 1)
        var random = RandomStream(seed: 2)
        let input = FlatBuffer((0..<48).map { _ in random.nextUnitFloat() })
        runGradientPath(model, input: input, batch: 3, loss: .mse, output: .linear, context: training)
        func gradient(_ path: String) -> [Float] {
            let tensor = architecture.parameterLayout.tensors.first { $0.path == path }!
            return Array(model.gradients.array[tensor.offset..<(tensor.offset + tensor.count)])
        }
        XCTAssertEqual(gradient("encoder.0/bias"), [0, 0, 0], "linear conv before bn: bias held")
        XCTAssertTrue(gradient("decoder.0/bias").contains { $0 != 0 }, "tanh conv before bn: its bias matters")
        XCTAssertTrue(gradient("encoder.0/weight").contains { $0 != 0 })
    }

    /// A variational model's code layer feeds bn only through the sampled code and the KL term: its bias matters.
    func testTheVariationalCodeLayerKeepsItsBias() throws {
        var config = ModelConfig()
        config.spec = "conv:4x4x1/c2-f-d2/bn-d16-r4x4x1"
        config.variational = true
        config.activation = .tanh
        config.outputActivation = .linear
        let architecture = try ModelArchitecture(config)
        let model = Autoencoder(architecture: architecture, maxBatch: 3)
        model.initializeParameters(seed: 2)
        model.klWeight = 0.1
        var random = RandomStream(seed: 5)
        for i in 0..<model.epsilon.count { model.epsilon[i] = Float(random.nextGaussian()) }
        let input = FlatBuffer((0..<48).map { _ in random.nextUnitFloat() })
        runGradientPath(model, input: input, batch: 3, loss: .mse, output: .linear, context: training)
        let bias = architecture.parameterLayout.tensors.first { $0.path == "encoder.2/bias" }!
        XCTAssertTrue((0..<bias.count).contains { model.gradients[bias.offset + $0] != 0 }, "μ and log σ² biases get gradients")
    }

    func testSpecForms() throws {
        let dense = try AEDistCoreTests.architecture("dense:784-256-bn-drop0.2-32")
        XCTAssertEqual(dense.layers.map { $0.description }, ["encoder.0 784→256 relu", "encoder.1 batchnorm 256→256", "encoder.2 dropout 0.2 256→256",
                                                             "encoder.3 256→32 relu", "decoder.0 32→256 relu", "decoder.1 batchnorm 256→256",
                                                             "decoder.2 dropout 0.2 256→256", "decoder.3 256→784 sigmoid"])
        XCTAssertEqual(dense.parameterLayout.tensors.first { $0.layer == "encoder.1" }?.shape, [256])
        XCTAssertEqual(dense.bufferLayout.tensors.map(\.path), ["encoder.1/running_mean", "encoder.1/running_var",
                                                                 "decoder.1/running_mean", "decoder.1/running_var"])
        let conv = try AEDistCoreTests.architecture("conv:28x28x3/c16s2:linear-bn:relu-drop0.1/t16s2-bn-c3")
        XCTAssertEqual(conv.layers[1].description, "encoder.1 batchnorm 14×14×16→14×14×16 relu")
        XCTAssertEqual(conv.layers[4].activation, .linear, "bn without :act stays linear")
        for (spec, fragment) in [("dense:784-bnx-32", "'bnx' is not a batch normalisation layer"),
                                 ("dense:784-32-bn2", "'bn2' is not a batch normalisation layer")] {
            XCTAssertThrowsError(try AEDistCoreTests.architecture(spec), spec) { XCTAssertTrue("\($0)".contains(fragment), "\(spec): \($0)") }
        }
    }
}
