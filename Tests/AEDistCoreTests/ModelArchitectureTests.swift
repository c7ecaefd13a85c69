import AEDistCore
import XCTest

final class ModelArchitectureTests: XCTestCase {
    private typealias Layer = (name: String, input: Int, output: Int, activation: Activation)

    private func assertLayers(_ architecture: ModelArchitecture, _ expected: [Layer],
                              file: StaticString = #filePath, line: UInt = #line) {
        let actual = architecture.layers.map { "\($0.name) \($0.inputSize)→\($0.outputSize) \($0.activation.rawValue)" }
        XCTAssertEqual(actual, expected.map { "\($0.name) \($0.input)→\($0.output) \($0.activation.rawValue)" },
                       file: file, line: line)
    }

    func testSingleCodeLayer() throws {
        let model = try architecture("dense:784-32")
        assertLayers(model, [("encoder.0", 784, 32, .relu), ("decoder.0", 32, 784, .sigmoid)])
        XCTAssertEqual(model.encoderDepth, 1)
        XCTAssertEqual(model.inputSize, 784)
        XCTAssertEqual(model.codeSize, 32)
        XCTAssertEqual(model.outputActivation, .sigmoid)
        XCTAssertEqual(model.description, "encoder.0 784→32 relu, decoder.0 32→784 sigmoid")
    }

    func testDeeperModelHasAMirroredDecoder() throws {
        let model = try architecture("dense:784-128-64")
        assertLayers(model, [("encoder.0", 784, 128, .relu), ("encoder.1", 128, 64, .relu),
                             ("decoder.0", 64, 128, .relu), ("decoder.1", 128, 784, .sigmoid)])
        XCTAssertEqual(model.encoderDepth, 2)
        XCTAssertEqual(model.codeSize, 64)
    }

    /// A decoder hidden layer takes the activation of the encoder layer it mirrors (decoder.0 32→256 mirrors
    /// encoder.0 784→256 tanh); the code layer's own activation (linear) is not reused; the output layer always takes
    /// the output activation.
    func testPerWidthActivations() throws {
        let model = try architecture("dense:784-256:tanh-32:linear", activation: .relu, output: .linear)
        assertLayers(model, [("encoder.0", 784, 256, .tanh), ("encoder.1", 256, 32, .linear),
                             ("decoder.0", 32, 256, .tanh), ("decoder.1", 256, 784, .linear)])
        let mixed = try architecture("dense:100-50-20:sigmoid-10", activation: .leakyRelu)
        assertLayers(mixed, [("encoder.0", 100, 50, .leakyRelu), ("encoder.1", 50, 20, .sigmoid),
                             ("encoder.2", 20, 10, .leakyRelu), ("decoder.0", 10, 20, .sigmoid),
                             ("decoder.1", 20, 50, .leakyRelu), ("decoder.2", 50, 100, .sigmoid)])
    }

    func testParameterLayoutIsContiguousInLayerOrder() throws {
        let model = try architecture("dense:784-128-64")
        let layout = model.parameterLayout
        XCTAssertEqual(layout.tensors.map(\.path), ["encoder.0/weight", "encoder.0/bias", "encoder.1/weight", "encoder.1/bias",
                                                    "decoder.0/weight", "decoder.0/bias", "decoder.1/weight", "decoder.1/bias"])
        XCTAssertEqual(layout.tensors.map(\.shape), [[128, 784], [128], [64, 128], [64], [128, 64], [128], [784, 128], [784]])
        var offset = 0
        for tensor in layout.tensors {
            XCTAssertEqual(tensor.offset, offset, "\(tensor.path) follows the previous tensor")
            offset += tensor.count
        }
        XCTAssertEqual(layout.totalCount, offset)
        XCTAssertEqual(layout.totalCount, 784 * 128 + 128 + 128 * 64 + 64 + 64 * 128 + 128 + 128 * 784 + 784)
        XCTAssertEqual(try architecture("dense:784-32").parameterLayout.totalCount, 2 * 784 * 32 + 32 + 784)
    }

    /// The layout hash is what checkpoints and ranks compare, so it must not drift between builds: it is pinned
    /// here as FNV-1a of "path:shape;…", computed independently.
    func testLayoutHashIsStableAndDistinguishesModels() throws {
        let layout = try architecture("dense:784-32").parameterLayout
        let described = "encoder.0/weight:32x784;encoder.0/bias:32;decoder.0/weight:784x32;decoder.0/bias:784"
        XCTAssertEqual(layout.hash, fnv1a64Hex(described))
        XCTAssertEqual(layout.hash.count, 16)
        XCTAssertEqual(layout.hash, try architecture("dense:784-32").parameterLayout.hash)

        let hashes = try ["dense:784-32", "dense:784-64", "dense:784-128-64", "dense:784-64-128", "dense:100-32"]
            .map { try architecture($0).parameterLayout.hash }
        XCTAssertEqual(Set(hashes).count, hashes.count, "every layout hashes differently: \(hashes)")
    }

    func testInvalidSpecsThrowConfigErrorsNamingTheSpec() {
        for spec in ["conv:3", "dense:784", "dense:784-abc", "dense:784-32:swish", "dense:784:tanh-32", "dense:784--32", "dense:784-0",
                     "dense:784-32:", "dense:", "dense:784-32-", "784-32", ""] {
            assertConfigError(["'\(spec)'"], "spec \"\(spec)\"") { _ = try architecture(spec) }
        }
        assertConfigError(["swish", "leaky_relu"], "unknown activation lists the known ones") {
            _ = try architecture("dense:784-32:swish")
        }
        assertConfigError(["conv"], "unknown model kind") { _ = try architecture("conv:3") }
    }
}

/// 64-bit FNV-1a over UTF-8 bytes as 16 lowercase hex digits.
private func fnv1a64Hex(_ text: String) -> String {
    var hash: UInt64 = 14_695_981_039_346_656_037
    for byte in text.utf8 { hash = (hash ^ UInt64(byte)) &* 1_099_511_628_211 }
    let hex = String(hash, radix: 16)
    return String(repeating: "0", count: 16 - hex.count) + hex
}
