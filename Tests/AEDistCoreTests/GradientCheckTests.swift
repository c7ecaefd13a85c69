import AEDistCore
import XCTest

/// aedist's forward pass, loss and backward pass against the float64 reference (ReferenceAutoencoder): outputs are
/// compared directly, and every parameter's analytic gradient against central finite differences of the reference
/// loss. Small models cover every activation as a hidden layer, both losses, and linear, sigmoid and leaky-ReLU outputs.
final class GradientCheckTests: XCTestCase {
    /// Central differences in float64 with this step are accurate to ~1e-9 here, far below the tolerances.
    static let finiteDifferenceStep = 1e-6
    /// The analytic gradient is float32 arithmetic; this is what it must meet: |analytic − numeric| ≤ abs + rel·|numeric|.
    static let gradientTolerance = (absolute: 1e-4, relative: 1e-3)
    /// Float32 forward pass against float64: a handful of products of O(1) values.
    static let forwardTolerance = (absolute: 1e-5, relative: 1e-5)
    /// Finite differences across a kink (ReLU's at 0) are meaningless; pre-activations this close to one are avoided.
    static let minimumKinkDistance = 1e-3

    func testBCELeakyReluHidden() throws {
        try checkForwardAndGradients("dense:6-4-3", hidden: .leakyRelu, output: .sigmoid, loss: .bce)
    }

    func testBCEPerWidthActivations() throws {
        try checkForwardAndGradients("dense:5-4:tanh-3:linear", output: .sigmoid, loss: .bce)
    }

    func testMSEPerWidthActivationsSigmoidOutput() throws {
        try checkForwardAndGradients("dense:5-4:tanh-3:linear", output: .sigmoid, loss: .mse)
    }

    func testMSETanhHiddenLinearOutput() throws {
        try checkForwardAndGradients("dense:6-4-3", hidden: .tanh, output: .linear, loss: .mse)
    }

    func testMSESigmoidHiddenSigmoidOutput() throws {
        try checkForwardAndGradients("dense:6-4", hidden: .sigmoid, output: .sigmoid, loss: .mse)
    }

    func testBCELinearHidden() throws {
        try checkForwardAndGradients("dense:6-4-3", hidden: .linear, output: .sigmoid, loss: .bce)
    }

    func testBCEReluHidden() throws {
        try checkForwardAndGradients("dense:6-5-3", hidden: .relu, output: .sigmoid, loss: .bce)
    }

    func testMSEReluHiddenLinearOutput() throws {
        try checkForwardAndGradients("dense:6-5-3", hidden: .relu, output: .linear, loss: .mse)
    }

    /// The smooth rectifiers: ELU, GELU (exact) and SiLU, hidden and (with MSE, whose gradient goes through the
    /// output activation's derivative at z) as outputs.
    func testSmoothRectifiersHiddenAndOutput() throws {
        for activation in [Activation.elu, .gelu, .silu] {
            try checkForwardAndGradients("dense:6-4-3", hidden: activation, output: .sigmoid, loss: .bce)
            try checkForwardAndGradients("dense:5-3", hidden: .tanh, output: activation, loss: .mse)
        }
    }

    func testMSELeakyReluOutput() throws {
        try checkForwardAndGradients("dense:5-3", hidden: .tanh, output: .leakyRelu, loss: .mse)
    }

    /// A batch of one sample and a batch that fills the model's row capacity exactly: the edges of the row loops.
    func testBatchOfOneAndFullBatch() throws {
        try checkForwardAndGradients("dense:5-4:tanh-3:linear", output: .sigmoid, loss: .bce, batch: 1, spareRows: 0)
        try checkForwardAndGradients("dense:5-4:tanh-3:linear", output: .sigmoid, loss: .bce, batch: 7, spareRows: 0)
    }

    // MARK: - The check

    /// (a) `forward`'s logits, reconstruction and code against the reference; (b) the trainer's gradient path —
    /// zero the gradients, forward, `Loss.evaluate` writing d(per-sample loss)/dz, backward — which must give the
    /// gradient of the batch *sum* of per-sample losses, against central differences of the reference.
    private func checkForwardAndGradients(_ spec: String, hidden: Activation = .relu, output: Activation, loss: LossKind,
                                          batch: Int = 4, spareRows: Int = 3,
                                          file: StaticString = #filePath, line: UInt = #line) throws {
        let architecture = try architecture(spec, activation: hidden, output: output)
        let testCase = try XCTUnwrap(GradientCheckCase.firstKinkFree(architecture, batch: batch,
                                                                     minimumDistance: Self.minimumKinkDistance),
                                     "no seed gives pre-activations clear of the ReLU kink", file: file, line: line)
        let activations = architecture.layers.map(\.activation.rawValue).joined(separator: ",")
        let label = "\(spec) [\(activations)] \(loss.rawValue) batch=\(batch) seed=\(testCase.seed)"
        let width = architecture.inputSize
        let reference = ReferenceAutoencoder(architecture)
        let parameters64 = testCase.parameters.map(Double.init), input64 = testCase.input.map(Double.init)

        // More rows than the batch, so a row stride taken from the capacity rather than the batch would show.
        let model = Autoencoder(architecture: architecture, maxBatch: batch + spareRows)
        model.parameters.copy(from: FlatBuffer(testCase.parameters))
        let input = FlatBuffer(testCase.input)

        // (a) Forward pass.
        model.forward(input: input.pointer, batch: batch)
        let layers = reference.forward(parameters: parameters64, input: input64, batch: batch)
        let tolerance = Self.forwardTolerance
        assertAllClose(values(model.outputLogits, count: batch * width), layers.last!.z, absolute: tolerance.absolute,
                       relative: tolerance.relative, "\(label): output logits", file: file, line: line)
        assertAllClose(values(model.reconstruction, count: batch * width), layers.last!.y, absolute: tolerance.absolute,
                       relative: tolerance.relative, "\(label): reconstruction", file: file, line: line)
        assertAllClose(values(model.code, count: batch * architecture.codeSize), layers[architecture.encoderDepth - 1].y,
                       absolute: tolerance.absolute, relative: tolerance.relative, "\(label): code", file: file, line: line)

        // (b) Analytic gradient, exactly as the trainer computes it.
        model.gradients.fill(0)
        model.forward(input: input.pointer, batch: batch)
        let sums = Loss.evaluate(loss, outputActivation: output, logits: model.outputLogits, output: model.reconstruction,
                                 target: input.pointer, batch: batch, width: width, gradient: model.outputGradient)
        model.backward(input: input.pointer, batch: batch)
        let analytic = model.gradients.array

        let referenceLoss = reference.lossSum(loss, parameters: parameters64, input: input64, batch: batch)
        assertAllClose([sums.loss], [referenceLoss], absolute: 1e-6, relative: 1e-5, "\(label): loss (batch sum)",
                       file: file, line: line)

        let h = Self.finiteDifferenceStep
        var perturbed = parameters64
        var numeric: [Double] = []
        for i in parameters64.indices {
            perturbed[i] = parameters64[i] + h
            let plus = reference.lossSum(loss, parameters: perturbed, input: input64, batch: batch)
            perturbed[i] = parameters64[i] - h
            let minus = reference.lossSum(loss, parameters: perturbed, input: input64, batch: batch)
            perturbed[i] = parameters64[i]
            numeric.append((plus - minus) / (2 * h))
        }
        let layout = architecture.parameterLayout
        assertAllClose(analytic, numeric, absolute: Self.gradientTolerance.absolute, relative: Self.gradientTolerance.relative,
                       "\(label): gradients", describe: { parameterName($0, in: layout) }, file: file, line: line)
        // Guard against a vacuous pass: if every gradient were tiny, the absolute tolerance would accept anything.
        XCTAssertGreaterThan(numeric.map(abs).max() ?? 0, 1e-2, "\(label): gradients too small to test anything",
                             file: file, line: line)
    }
}

/// One small model's parameters (aedist's initialisation plus random non-zero biases) and a batch of inputs in (0, 1).
struct GradientCheckCase {
    let seed: UInt64
    let parameters: [Float]
    let input: [Float]
    let architecture: ModelArchitecture
    let batch: Int

    init(_ architecture: ModelArchitecture, batch: Int, seed: UInt64) {
        self.architecture = architecture
        self.batch = batch
        self.seed = seed
        let model = Autoencoder(architecture: architecture, maxBatch: 1)
        model.initializeParameters(seed: seed)
        var parameters = model.parameters.array
        // Initialisation leaves biases at zero; random ones make a dropped or doubled bias visible in the forward pass.
        var random = RandomStream(seed: seed, 1000)
        for tensor in architecture.parameterLayout.tensors where tensor.name == "bias" {
            for i in tensor.offset..<(tensor.offset + tensor.count) { parameters[i] = 0.2 * random.nextUnitFloat() - 0.1 }
        }
        self.parameters = parameters
        input = (0..<(batch * architecture.inputSize)).map { _ in 0.02 + 0.96 * random.nextUnitFloat() }
    }

    /// The smallest |z| over the layers whose activation has a kink at 0 (relu, leaky relu), nil if none has.
    var smallestKinkDistance: Double? {
        let layers = ReferenceAutoencoder(architecture).forward(parameters: parameters.map(Double.init),
                                                                 input: input.map(Double.init), batch: batch)
        let kinked = zip(architecture.layers, layers).filter { [.relu, .leakyRelu].contains($0.0.activation) }
        return kinked.flatMap { $0.1.z.map(abs) }.min()
    }

    /// The first seed from 1 whose pre-activations all keep `minimumDistance` from a kink.
    static func firstKinkFree(_ architecture: ModelArchitecture, batch: Int, minimumDistance: Double) -> GradientCheckCase? {
        for seed in UInt64(1)...100 {
            let candidate = GradientCheckCase(architecture, batch: batch, seed: seed)
            if (candidate.smallestKinkDistance ?? .infinity) >= minimumDistance { return candidate }
        }
        return nil
    }
}

/// "encoder.1/weight[2, 0]" for flat parameter index `index`.
func parameterName(_ index: Int, in layout: ParameterLayout) -> String {
    guard let tensor = layout.tensors.first(where: { $0.offset <= index && index < $0.offset + $0.count }) else {
        return "[\(index)] (outside the layout)"
    }
    let local = index - tensor.offset
    return tensor.shape.count == 2 ? "\(tensor.path)[\(local / tensor.shape[1]), \(local % tensor.shape[1])]"
                                   : "\(tensor.path)[\(local)]"
}
