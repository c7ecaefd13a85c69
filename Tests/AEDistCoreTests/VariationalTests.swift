import AEDistCore
import XCTest

/// The variational autoencoder's backward pass — through z = μ + σ·ε and the KL term — against finite differences.
final class VariationalTests: XCTestCase {
    func testEveryGradientThroughTheReparameterisationAndKL() throws {
        for spec in ["dense:6-4-2", "conv:4x4x1/p2-c2/u2-c1"] {
            var config = ModelConfig()
            config.spec = spec
            config.activation = .tanh
            config.variational = true
            let architecture = try ModelArchitecture(config)
            XCTAssertTrue(architecture.variational)
            let model = Autoencoder(architecture: architecture, maxBatch: 3)
            model.initializeParameters(seed: 2)
            model.klWeight = 0.3
            let width = architecture.inputSize
            var random = RandomStream(seed: 8)
            let input = (0..<(3 * width)).map { _ in random.nextUnitFloat() }
            for i in 0..<(3 * architecture.codeSize) { model.epsilon[i] = Float(random.nextGaussian()) }
            func total() -> Double {
                input.withUnsafeBufferPointer { x in
                    model.forward(input: x.baseAddress!, batch: 3)
                    let sums = Loss.evaluate(.bce, outputActivation: .sigmoid, logits: model.outputLogits, output: model.reconstruction,
                                             target: x.baseAddress!, batch: 3, width: width, gradient: nil)
                    return sums.loss + 0.3 * model.klDivergence(batch: 3)
                }
            }
            model.gradients.fill(0)
            input.withUnsafeBufferPointer { x in
                model.forward(input: x.baseAddress!, batch: 3)
                _ = Loss.evaluate(.bce, outputActivation: .sigmoid, logits: model.outputLogits, output: model.reconstruction,
                                  target: x.baseAddress!, batch: 3, width: width, gradient: model.outputGradient)
                model.backward(input: x.baseAddress!, batch: 3)
            }
            assertGradientsMatchFiniteDifferences(model, label: "\(spec) variational", loss: total)
        }
    }

    func testKLOfTheStandardNormalIsZeroAndTheEncoderDoublesItsCode() throws {
        var config = ModelConfig()
        config.spec = "dense:4-3"
        config.variational = true
        let architecture = try ModelArchitecture(config)
        XCTAssertEqual(architecture.layers[0].outputShape, [6])
        XCTAssertEqual(architecture.layers[0].activation, .linear)
        XCTAssertEqual(architecture.codeSize, 3)
        XCTAssertEqual(architecture.layers[1].inputShape, [3])
        let model = Autoencoder(architecture: architecture, maxBatch: 1)
        model.parameters.fill(0)  // μ = 0, log σ² = 0 for any input
        [Float](repeating: 0.5, count: 4).withUnsafeBufferPointer { model.forward(input: $0.baseAddress!, batch: 1) }
        XCTAssertEqual(model.klDivergence(batch: 1), 0, accuracy: 1e-12)
        config.spec = "conv:4x4x1/p2-c2/u2-c1"
        XCTAssertEqual(try ModelArchitecture(config).layers[1].outputShape, [2, 2, 4], "μ and log σ² channels")
        config.spec = "conv:4x4x1/c2-p2/u2-c1"
        XCTAssertThrowsError(try ModelArchitecture(config)) { XCTAssertTrue("\($0)".contains("must end in a dense or conv layer")) }
    }
}
