import AEDistCore
import XCTest

/// Dropout: inverted scaling in training only, a mask keyed by (seed, epoch, sample, layer), its gradient, and the
/// spec forms.
final class DropoutTests: XCTestCase {
    func context(epoch: Int = 1, first: Int = 0) -> PassContext {
        PassContext(training: true, seed: 5, key: NoiseKey(epoch: epoch, first: first))
    }

    func testTrainingDropsAndScalesAndInferenceIsTheIdentity() {
        let layer = Dropout(name: "encoder.1", inputShape: [1000], rate: 0.25)
        let input = FlatBuffer([Float](repeating: 2, count: 4000))
        let mask = FlatBuffer(count: 4000), output = FlatBuffer(count: 4000), unused = FlatBuffer(count: 1)
        layer.forward(input: input.pointer, batch: 4, parameters: unused.pointer, preActivation: mask.pointer, output: output.pointer,
                      workspace: unused.pointer, context: context())
        let dropped = output.array.filter { $0 == 0 }.count
        XCTAssertEqual(Double(dropped) / 4000, 0.25, accuracy: 0.03, "about a quarter dropped")
        XCTAssertTrue(output.array.allSatisfy { $0 == 0 || abs($0 - 2 / 0.75) < 1e-6 }, "kept values scaled by 1/(1 − rate)")
        layer.forward(input: input.pointer, batch: 4, parameters: unused.pointer, preActivation: mask.pointer, output: output.pointer,
                      workspace: unused.pointer, context: .inference)
        XCTAssertEqual(output.array, input.array, "no dropout outside training")
    }

    /// The same sample gets the same mask wherever its row is (so rank counts do not matter); another epoch,
    /// sample or layer gets another.
    func testTheMaskIsKeyedBySampleEpochAndLayer() {
        let layer = Dropout(name: "encoder.1", inputShape: [64], rate: 0.5)
        func mask(_ context: PassContext, row: Int = 0) -> [Float] {
            let input = FlatBuffer([Float](repeating: 1, count: 64 * (row + 1))), output = FlatBuffer(count: 64 * (row + 1))
            let scratch = FlatBuffer(count: 64 * (row + 1))
            layer.forward(input: input.pointer, batch: row + 1, parameters: scratch.pointer, preActivation: scratch.pointer,
                          output: output.pointer, workspace: scratch.pointer, context: context)
            return Array(output.array.suffix(64))
        }
        XCTAssertEqual(mask(context(first: 7)), mask(context(first: 4), row: 3), "sample 7 as row 0 or as row 3")
        XCTAssertNotEqual(mask(context(first: 7)), mask(context(first: 8)), "another sample")
        XCTAssertNotEqual(mask(context(epoch: 1, first: 7)), mask(context(epoch: 2, first: 7)), "another epoch")
        var otherLayer = context(first: 7)
        otherLayer.layerIndex = 3
        XCTAssertNotEqual(mask(context(first: 7)), mask(otherLayer), "another layer")
    }

    func testGradientsWithTheTrainingMask() throws {
        assertLayerInputGradient(Dropout(name: "d", inputShape: [12], rate: 0.3), batch: 3, context: context())
        let architecture = try AEDistCoreTests.architecture("dense:6-5-drop0.3-3", activation: .tanh, output: .sigmoid)
        let model = Autoencoder(architecture: architecture, maxBatch: 3)
        model.initializeParameters(seed: 2)
        var random = RandomStream(seed: 8)
        let input = (0..<18).map { _ in random.nextUnitFloat() }
        assertModelGradients(model, input: input, batch: 3, loss: .bce, output: .sigmoid, context: context(), label: "dense with dropout")
    }

    func testSpecForms() throws {
        let dense = try AEDistCoreTests.architecture("dense:784-256-drop0.2-32")
        XCTAssertEqual(dense.layers.map { $0.description }, ["encoder.0 784→256 relu", "encoder.1 dropout 0.2 256→256", "encoder.2 256→32 relu",
                                                             "decoder.0 32→256 relu", "decoder.1 dropout 0.2 256→256", "decoder.2 256→784 sigmoid"])
        XCTAssertEqual(dense.encoderDepth, 3)
        XCTAssertEqual(dense.parameterLayout.tensors.map(\.path), ["encoder.0/weight", "encoder.0/bias", "encoder.2/weight", "encoder.2/bias",
                                                                  "decoder.0/weight", "decoder.0/bias", "decoder.2/weight", "decoder.2/bias"])
        let conv = try AEDistCoreTests.architecture("conv:28x28x1/c8-drop0.1-p2/u2-c1")
        XCTAssertTrue(conv.layers[1] is Dropout)
        for (spec, fragment) in [("dense:784-256-drop1.5-32", "'drop1.5' is not a dropout rate in [0, 1)"),
                                 ("conv:28x28x1/c8/c1-drop0.1", "only reshape, flatten, pooling and upsampling may follow it"),
                                 ("dense:784-32/256-784-drop0.1", "comes after the output layer"),
                                 ("conv:28x28x1/c8-drop0.1:relu/c1", "take no activation"),
                                 ("dense:784-256-dropx-32", "'dropx' is not a dropout rate")] {
            XCTAssertThrowsError(try AEDistCoreTests.architecture(spec), spec) { XCTAssertTrue("\($0)".contains(fragment), "\(spec): \($0)") }
        }
    }
}
