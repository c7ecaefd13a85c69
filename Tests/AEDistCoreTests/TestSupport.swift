import AEDistCore
import XCTest

// Shared helpers for the AEDistCore tests: tolerant comparisons that always report the largest difference (as
// llm.c's test_gpt2.c does), so a passing run shows how much headroom there is and a failing one shows how far off.

/// The worst element of a comparison.
struct Discrepancy {
    /// Largest |actual − expected| over all elements.
    var largestDifference = 0.0
    var largestDifferenceIndex = -1
    /// Largest |actual − expected| / tolerance; above 1 means the comparison failed.
    var worstRatio = 0.0
    var worstIndex = -1
}

/// Compares element-wise with |actual − expected| ≤ absolute + relative·|expected|, prints the largest difference
/// under `label`, and fails naming the worst element. NaN anywhere fails.
@discardableResult
func assertAllClose(_ actual: [Double], _ expected: [Double], absolute: Double, relative: Double = 0, _ label: String,
                    describe: (Int) -> String = { "[\($0)]" },
                    file: StaticString = #filePath, line: UInt = #line) -> Discrepancy {
    guard actual.count == expected.count else {
        XCTFail("\(label): \(actual.count) values, expected \(expected.count)", file: file, line: line)
        return Discrepancy()
    }
    var result = Discrepancy()
    for i in actual.indices {
        let difference = abs(actual[i] - expected[i])
        let ratio = difference / (absolute + relative * abs(expected[i]))
        // `!(x <= y)` rather than `x > y` so that NaN counts as a failure.
        if !(difference <= result.largestDifference) { result.largestDifference = difference; result.largestDifferenceIndex = i }
        if !(ratio <= result.worstRatio) { result.worstRatio = ratio; result.worstIndex = i }
    }
    let verdict = result.worstRatio <= 1 ? "OK" : "NOT OK"
    print("\(verdict) \(label): max |Δ| = \(result.largestDifference) over \(actual.count) values")
    if !(result.worstRatio <= 1) {
        let i = result.worstIndex
        XCTFail("\(label): \(describe(i)) is \(actual[i]), expected \(expected[i]) (|Δ| = \(abs(actual[i] - expected[i])), "
                + "tolerance \(absolute) + \(relative)·|expected|; largest |Δ| overall \(result.largestDifference))",
                file: file, line: line)
    }
    return result
}

@discardableResult
func assertAllClose(_ actual: [Float], _ expected: [Double], absolute: Double, relative: Double = 0, _ label: String,
                    describe: (Int) -> String = { "[\($0)]" },
                    file: StaticString = #filePath, line: UInt = #line) -> Discrepancy {
    assertAllClose(actual.map(Double.init), expected, absolute: absolute, relative: relative, label,
                   describe: describe, file: file, line: line)
}

/// `count` floats read from a pointer the model or the loss hands out.
func values(_ pointer: UnsafePointer<Float>, count: Int) -> [Float] {
    Array(UnsafeBufferPointer(start: pointer, count: count))
}

func architecture(_ spec: String, activation: Activation = .relu, output: Activation = .sigmoid) throws -> ModelArchitecture {
    var config = ModelConfig()
    config.spec = spec
    config.activation = activation
    config.outputActivation = output
    return try ModelArchitecture(config)
}

/// Asserts that `body` throws a ConfigError whose message contains every one of `fragments`.
func assertConfigError(_ fragments: [String], _ context: String, file: StaticString = #filePath, line: UInt = #line,
                       _ body: () throws -> Void) {
    do {
        try body()
        XCTFail("\(context): expected a ConfigError mentioning \(fragments), but nothing was thrown", file: file, line: line)
    } catch let error as ConfigError {
        for fragment in fragments where !error.description.contains(fragment) {
            XCTFail("\(context): error \"\(error.description)\" does not mention \"\(fragment)\"", file: file, line: line)
        }
    } catch {
        XCTFail("\(context): expected a ConfigError, got \(type(of: error)): \(error)", file: file, line: line)
    }
}

/// Central differences of `loss` over the parameters at `indices` against `model.gradients` (which the caller has
/// filled), with a tolerance of 2e-3 + 2% — float32 forward passes. Returns the largest difference.
@discardableResult
func assertGradientsMatchFiniteDifferences(_ model: Autoencoder, indices: Range<Int>? = nil, label: String,
                                           loss: () -> Double, file: StaticString = #filePath, line: UInt = #line) -> Double {
    var worst = 0.0
    // Small steps: a larger one can move a pooling window's maximum to another pixel.
    let step: Float = 1e-3
    for index in indices ?? 0..<model.parameters.count {
        let saved = model.parameters[index]
        model.parameters[index] = saved + step
        let up = loss()
        model.parameters[index] = saved - step
        let down = loss()
        model.parameters[index] = saved
        let numeric = (up - down) / Double(2 * step)
        worst = max(worst, abs(numeric - Double(model.gradients[index])))
        XCTAssertEqual(Double(model.gradients[index]), numeric, accuracy: 2e-3 + 2e-2 * abs(numeric), "\(label) parameter \(index)",
                       file: file, line: line)
    }
    print("\(label): largest gradient difference \(worst) over \((indices ?? 0..<model.parameters.count).count) parameters")
    return worst
}

/// One layer alone: dL/d(input) from `backward` against central differences of L = Σ g·y, for random inputs,
/// parameters and output weights g (the layer's activation included). Returns the largest difference.
@discardableResult
func assertLayerInputGradient(_ layer: any Layer, batch: Int, context: PassContext = .inference, seed: UInt64 = 3,
                              file: StaticString = #filePath, line: UInt = #line) -> Double {
    var random = RandomStream(seed: seed)
    let input = FlatBuffer((0..<(batch * layer.inputSize)).map { _ in random.nextUnitFloat() * 2 - 1 })
    let parameters = FlatBuffer((0..<max(layer.parameterCount, 1)).map { _ in random.nextUnitFloat() - 0.5 })
    let weights = (0..<(batch * layer.outputSize)).map { _ in Double(random.nextUnitFloat() * 2 - 1) }
    let preActivation = FlatBuffer(count: batch * layer.outputSize), output = FlatBuffer(count: batch * layer.outputSize)
    let workspace = FlatBuffer(count: max(layer.workspaceSize * 2, 1))
    let state = FlatBuffer(count: max(layer.stateSize, 1)), buffers = FlatBuffer(count: max(layer.bufferCount, 1))
    layer.initializeBuffers(buffers.pointer)
    var context = context
    context.state = state.pointer
    context.buffers = buffers.pointer
    func loss() -> Double {
        layer.forward(input: input.pointer, batch: batch, parameters: parameters.pointer, preActivation: preActivation.pointer,
                      output: output.pointer, workspace: workspace.pointer, context: context)
        return zip(output.array, weights).reduce(0) { $0 + Double($1.0) * $1.1 }
    }
    _ = loss()
    let gradient = FlatBuffer(weights.map(Float.init))
    layer.activation.backward(preActivations: preActivation.pointer, outputs: output.pointer, gradient: gradient.pointer, count: gradient.count)
    let parameterGradients = FlatBuffer(count: max(layer.parameterCount, 1)), inputGradient = FlatBuffer(count: input.count)
    layer.backward(input: input.pointer, preActivation: preActivation.pointer, output: output.pointer, batch: batch,
                   outputGradient: gradient.pointer, parameters: parameters.pointer, gradients: parameterGradients.pointer,
                   inputGradient: inputGradient.pointer, workspace: workspace.pointer, context: context)
    var worst = 0.0
    let step: Float = 1e-2
    for index in 0..<input.count {
        let saved = input[index]
        input[index] = saved + step
        let up = loss()
        input[index] = saved - step
        let down = loss()
        input[index] = saved
        let numeric = (up - down) / Double(2 * step)
        worst = max(worst, abs(numeric - Double(inputGradient[index])))
        XCTAssertEqual(Double(inputGradient[index]), numeric, accuracy: 2e-3 + 2e-2 * abs(numeric), "\(layer.name) input \(index)",
                       file: file, line: line)
    }
    print("\(layer.description): largest input-gradient difference \(worst) over \(input.count) inputs")
    return worst
}

/// The trainer's gradient path on `input` as its own target (zero the gradients, forward, the loss writing
/// d(per-sample loss)/dz, backward), then every parameter's gradient (or those at `indices`) against central
/// differences of the loss sum plus `penalty` (a sparse model's code penalty, say).
func assertModelGradients(_ model: Autoencoder, input: [Float], batch: Int, loss: LossKind, output: Activation,
                          context: PassContext = .inference, label: String, indices: Range<Int>? = nil,
                          penalty: () -> Double = { 0 }, file: StaticString = #filePath, line: UInt = #line) {
    let width = model.inputSize
    func pass(gradient: UnsafeMutablePointer<Float>?) -> Double {
        input.withUnsafeBufferPointer { x in
            model.forward(input: x.baseAddress!, batch: batch, context: context)
            return Loss.evaluate(loss, outputActivation: output, logits: model.outputLogits, output: model.reconstruction,
                                 target: x.baseAddress!, batch: batch, width: width, gradient: gradient).loss + penalty()
        }
    }
    model.gradients.fill(0)
    _ = pass(gradient: model.outputGradient)
    input.withUnsafeBufferPointer { model.backward(input: $0.baseAddress!, batch: batch, context: context) }
    assertGradientsMatchFiniteDifferences(model, indices: indices, label: label, loss: { pass(gradient: nil) }, file: file, line: line)
}

/// The trainer's gradient path once, gradients from zero: forward, the loss writing d(per-sample loss)/dz, backward
/// (into `gradientSlots` when given, a micro-batch each).
func runGradientPath(_ model: Autoencoder, input: FlatBuffer, batch: Int, loss: LossKind, output: Activation,
                     context: PassContext, gradientSlots: (UnsafeMutablePointer<Float>, Int)? = nil) {
    model.gradients.fill(0)
    model.forward(input: input.pointer, batch: batch, context: context)
    _ = Loss.evaluate(loss, outputActivation: output, logits: model.outputLogits, output: model.reconstruction,
                      target: input.pointer, batch: batch, width: model.inputSize, gradient: model.outputGradient)
    model.backward(input: input.pointer, batch: batch, context: context, gradientSlots: gradientSlots)
}
