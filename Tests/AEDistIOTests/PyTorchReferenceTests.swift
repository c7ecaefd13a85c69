import AEDistCore
import AEDistIO
import Foundation
import XCTest

/// aedist against PyTorch, in the spirit of karpathy/llm.c's test_gpt2.c: one training step of the `dense:784-32`
/// autoencoder (ReLU code, sigmoid output, BCE from logits, Adam) on 64 MNIST images, compared tensor by tensor with
/// what PyTorch computed from the same parameters. The reference is Tests/Reference/dense-784-32.h5, written by
/// scripts/make-reference-dense.py (run `.venv-reference/bin/python scripts/make-reference-dense.py` to remake it).
///
/// Every comparison prints the largest difference, so a passing run shows the headroom and a failing one how far off.
final class PyTorchReferenceTests: XCTestCase {
    static let referencePath = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Tests/Reference/dense-784-32.h5").path

    /// Per tensor: max |aedist − PyTorch| ≤ relative · max |PyTorch| + absoluteFloor (the floor for all-zero tensors).
    static let relative = 1e-5
    static let absoluteFloor = 1e-7

    static let batchSize = 64
    static let layerPaths = ["encoder.0/weight", "encoder.0/bias", "decoder.0/weight", "decoder.0/bias"]

    func testOneTrainingStepMatchesPyTorch() throws {
        let reference = try HDF5File.open(Self.referencePath)
        defer { _ = try? reference.close() }
        func read(_ path: String) throws -> (values: [Float], shape: [Int]) {
            let dataset = try reference.root.dataset(path)
            return (try dataset.readFloats(), dataset.shape)
        }
        let madeBy = (try? reference.root.stringAttribute("made_by")) ?? "?"
        let torchVersion = (try? reference.root.stringAttribute("torch_version")) ?? "?"
        print("PyTorch reference \(Self.referencePath) (made by \(madeBy), torch \(torchVersion))")

        var config = ModelConfig()
        config.spec = "dense:784-32"
        config.activation = .relu
        config.outputActivation = .sigmoid
        let model = Autoencoder(architecture: try ModelArchitecture(config), maxBatch: Self.batchSize)
        let batchSize = Self.batchSize, width = model.inputSize, codeSize = model.architecture.codeSize
        XCTAssertEqual(width, 784)
        XCTAssertEqual(codeSize, 32)
        XCTAssertEqual(model.layout.tensors.map(\.path), Self.layerPaths, "the layout the reference is written for")

        // The batch, and the initial parameters copied into the flat buffer at each tensor's offset.
        let batch = try read("/batch")
        XCTAssertEqual(batch.shape, [batchSize, width])
        guard batch.values.count == batchSize * width else { return XCTFail("/batch has \(batch.values.count) values") }
        let input = FlatBuffer(batch.values)
        model.parameters.fill(0)
        for tensor in model.layout.tensors {
            let initial = try read("/parameters/\(tensor.path)")
            XCTAssertEqual(initial.shape, tensor.shape, "/parameters/\(tensor.path)")
            guard initial.values.count == tensor.count else {
                return XCTFail("/parameters/\(tensor.path) has \(initial.values.count) values, the layout \(tensor.count)")
            }
            initial.values.withUnsafeBufferPointer {
                (model.parameters.pointer + tensor.offset).update(from: $0.baseAddress!, count: tensor.count)
            }
        }

        // Forward: the code (after ReLU), the output logits and the sigmoid output.
        model.gradients.fill(0)
        model.forward(input: input.pointer, batch: batchSize)
        try compare(model.code, count: batchSize * codeSize, with: read("/code"), "code")
        try compare(model.outputLogits, count: batchSize * width, with: read("/logits"), "logits")
        try compare(model.reconstruction, count: batchSize * width, with: read("/output"), "output")

        // The loss: Loss.evaluate sums each sample's mean over its values; PyTorch's is the mean over all values.
        let sums = Loss.evaluate(.bce, outputActivation: .sigmoid, logits: model.outputLogits, output: model.reconstruction,
                                 target: input.pointer, batch: batchSize, width: width, gradient: model.outputGradient)
        let expectedLoss = try reference.root.dataset("/loss").readDoubles()
        XCTAssertEqual(expectedLoss.count, 1, "/loss")
        print("loss: aedist \(sums.loss / Double(batchSize)), PyTorch \(expectedLoss.first ?? .nan)")
        assertMatches([sums.loss / Double(batchSize)], expectedLoss, shape: [1], "loss")

        // Backward: aedist accumulates the gradient of the loss *sum* over samples; PyTorch's is of the mean.
        model.backward(input: input.pointer, batch: batchSize)
        let scale = 1 / Float(batchSize)
        for tensor in model.layout.tensors {
            let gradient = UnsafeBufferPointer(start: UnsafePointer(model.gradients.pointer + tensor.offset), count: tensor.count)
                .map { $0 * scale }
            try compare(gradient, with: read("/gradients/\(tensor.path)"), "gradient \(tensor.path)")
        }

        // One Adam step, with the 1/batch scale applied inside the step as the trainer does.
        var optimizerConfig = OptimizerConfig()
        optimizerConfig.kind = .adam
        optimizerConfig.learningRate = 1e-3
        optimizerConfig.beta1 = 0.9
        optimizerConfig.beta2 = 0.999
        optimizerConfig.epsilon = 1e-8
        optimizerConfig.weightDecay = 0
        let optimizer = Optimizer(config: optimizerConfig, parameterCount: model.parameters.count)
        optimizer.step(parameters: model.parameters, gradients: model.gradients, learningRate: 1e-3, gradientScale: scale)
        for tensor in model.layout.tensors {
            try compare(model.parameters.pointer + tensor.offset, count: tensor.count, with: read("/after_adam/\(tensor.path)"),
                        "after Adam \(tensor.path)")
        }
    }

    // MARK: comparisons

    private func compare(_ actual: UnsafePointer<Float>, count: Int, with expected: (values: [Float], shape: [Int]), _ label: String,
                         file: StaticString = #filePath, line: UInt = #line) {
        compare(Array(UnsafeBufferPointer(start: actual, count: count)), with: expected, label, file: file, line: line)
    }

    private func compare(_ actual: [Float], with expected: (values: [Float], shape: [Int]), _ label: String,
                         file: StaticString = #filePath, line: UInt = #line) {
        assertMatches(actual.map(Double.init), expected.values.map(Double.init), shape: expected.shape, label, file: file, line: line)
    }

    /// Prints the largest absolute difference and that difference relative to the reference's largest magnitude, and
    /// fails when it exceeds `relative · max|reference| + absoluteFloor`. NaN or infinity anywhere fails.
    private func assertMatches(_ actual: [Double], _ expected: [Double], shape: [Int], _ label: String,
                               file: StaticString = #filePath, line: UInt = #line) {
        guard actual.count == expected.count, !expected.isEmpty else {
            return XCTFail("\(label): \(actual.count) values, the reference has \(expected.count)", file: file, line: line)
        }
        var largest = 0.0, worst = 0, magnitude = 0.0
        var nonFinite: Int?
        for i in expected.indices {
            magnitude = max(magnitude, abs(expected[i]))
            let difference = abs(actual[i] - expected[i])
            if !difference.isFinite {
                if nonFinite == nil { nonFinite = i }
            } else if difference > largest {
                largest = difference
                worst = i
            }
        }
        let tolerance = Self.relative * magnitude + Self.absoluteFloor
        let relativeDifference = magnitude > 0 ? largest / magnitude : largest
        let passed = nonFinite == nil && largest <= tolerance
        let name = label + String(repeating: " ", count: max(0, 30 - label.count))
        print("\(passed ? "OK" : "NOT OK") \(name) max |Δ| \(String(format: "%.3e", largest)) at \(position(worst, in: shape)), "
              + "relative to max |ref| \(String(format: "%.3e", magnitude)): \(String(format: "%.3e", relativeDifference)) "
              + "(tolerance \(String(format: "%.0e", Self.relative)))")
        if let i = nonFinite {
            XCTFail("\(label): \(position(i, in: shape)) is \(actual[i]), PyTorch has \(expected[i])", file: file, line: line)
        } else if !passed {
            XCTFail("\(label): \(position(worst, in: shape)) is \(actual[worst]), PyTorch has \(expected[worst]) "
                    + "(|Δ| \(largest) > tolerance \(tolerance) = \(Self.relative) · max |ref| \(magnitude) + \(Self.absoluteFloor))",
                    file: file, line: line)
        }
    }

    /// A flat index as "[row, column]" for the tensor's shape.
    private func position(_ index: Int, in shape: [Int]) -> String {
        var rest = index, indices: [Int] = []
        for dimension in shape.reversed() where dimension > 0 {
            indices.append(rest % dimension)
            rest /= dimension
        }
        return "[" + indices.reversed().map(String.init).joined(separator: ", ") + "]"
    }
}
