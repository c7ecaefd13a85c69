import AEDistCore
import XCTest

/// Transposed convolution (tF): Keras's output sizes, the forward pass against a direct loop of its definition,
/// every gradient, and TensorFlow's "same" padding rule for strided convolutions.
final class TransposedConvolutionTests: XCTestCase {
    func testOutputSizesFollowKeras() throws {
        for (input, token, expected) in [([7, 7, 4], "t8s2", [14, 14, 8]), ([7, 7, 4], "t8s2v", [15, 15, 8]),
                                         ([7, 7, 4], "t8k3v", [9, 9, 8]), ([5, 6, 2], "t3k4s3", [15, 18, 3]), ([4, 4, 2], "t1", [4, 4, 1]),
                                         ([5, 5, 2], "t4k2s3v", [15, 15, 4])] {  // the last: kernel < stride, Keras's in·s
            let layer = try XCTUnwrap(try ConvTranspose2D.parse(Substring(token), name: "d", inputShape: input, activation: .linear))
            XCTAssertEqual(layer.outputShape, expected, token)
        }
    }

    /// out[n, iy·s − pad + ky, ix·s − pad + kx, f] += Σ_c x[n, iy, ix, c] · W[c, ky, kx, f], then + b[f]; pad is
    /// TensorFlow's: ⌊max((in − 1)·s + k − out, 0) / 2⌋ for "same", 0 for "valid".
    func testForwardMatchesTheDefinition() throws {
        for (input, token) in [([5, 4, 3], "t2"), ([4, 5, 3], "t6s2"), ([3, 3, 2], "t2k3s2v"), ([4, 4, 2], "t3k4s2"), ([3, 4, 2], "t5k2s3v")] {
            let layer = try XCTUnwrap(try ConvTranspose2D.parse(Substring(token), name: "d", inputShape: input, activation: .linear))
            let (h, w, c) = (input[0], input[1], input[2])
            let (oh, ow, f) = (layer.outputShape[0], layer.outputShape[1], layer.outputShape[2])
            let (k, s) = (layer.kernel, layer.stride)
            let padTop = layer.samePadding ? max((h - 1) * s + k - oh, 0) / 2 : 0, padLeft = layer.samePadding ? max((w - 1) * s + k - ow, 0) / 2 : 0
            var random = RandomStream(seed: 12)
            let batch = 2
            let x = FlatBuffer((0..<(batch * h * w * c)).map { _ in random.nextUnitFloat() - 0.5 })
            let parameters = FlatBuffer((0..<layer.parameterCount).map { _ in random.nextUnitFloat() - 0.5 })
            var expected = [Double](repeating: 0, count: batch * oh * ow * f)
            for n in 0..<batch { for iy in 0..<h { for ix in 0..<w { for ch in 0..<c { for ky in 0..<k { for kx in 0..<k {
                let oy = iy * s - padTop + ky, ox = ix * s - padLeft + kx
                guard oy >= 0, oy < oh, ox >= 0, ox < ow else { continue }
                for filter in 0..<f {
                    expected[((n * oh + oy) * ow + ox) * f + filter] += Double(x[((n * h + iy) * w + ix) * c + ch])
                        * Double(parameters[((ch * k + ky) * k + kx) * f + filter])
                }
            } } } } } }
            for i in expected.indices { expected[i] += Double(parameters[c * k * k * f + i % f]) }
            let z = FlatBuffer(count: expected.count), y = FlatBuffer(count: expected.count), workspace = FlatBuffer(count: layer.workspaceSize)
            layer.forward(input: x.pointer, batch: batch, parameters: parameters.pointer, preActivation: z.pointer, output: y.pointer,
                          workspace: workspace.pointer, context: .inference)
            assertAllClose(y.array.map(Double.init), expected, absolute: 1e-5, relative: 1e-5, "\(token) on \(input) against the definition")
        }
    }

    func testGradients() throws {
        for (input, token) in [([4, 4, 3], "t5s2"), ([3, 3, 2], "t2k3s2v"), ([4, 4, 2], "t3k4s2")] {
            let layer = try XCTUnwrap(try ConvTranspose2D.parse(Substring(token), name: "d", inputShape: input, activation: .tanh))
            assertLayerInputGradient(layer, batch: 2)
        }
        for spec in ["conv:8x8x1/c3s2/t2s2-c1", "conv:6x6x2/c4-p2/t3k3s2v-c2k2v", "conv:4x4x1/c2s2-f-d3/d8-r2x2x2-t1s2"] {
            let architecture = try AEDistCoreTests.architecture(spec, activation: .tanh, output: .linear)
            let model = Autoencoder(architecture: architecture, maxBatch: 3)
            model.initializeParameters(seed: 4)
            var random = RandomStream(seed: 6)
            let input = (0..<(3 * architecture.inputSize)).map { _ in random.nextUnitFloat() }
            assertModelGradients(model, input: input, batch: 3, loss: .mse, output: .linear, label: spec)
        }
    }

    /// TensorFlow's "same" with a stride: out = ⌈in/s⌉ and the odd padding pixel at the bottom/right. A 3×3 sum
    /// over a 6×6 ramp with stride 2 then starts at row and column 0 (no top padding) and the last window overhangs
    /// the bottom/right edge by one.
    func testStridedSamePaddingFollowsTensorFlow() throws {
        let layer = try XCTUnwrap(try Conv2D.parse("c1s2", name: "c", inputShape: [6, 6, 1], activation: .linear))
        XCTAssertEqual(layer.outputShape, [3, 3, 1])
        let x = FlatBuffer((0..<36).map(Float.init))
        let parameters = FlatBuffer([Float](repeating: 1, count: 9) + [0])
        let z = FlatBuffer(count: 9), y = FlatBuffer(count: 9), workspace = FlatBuffer(count: max(layer.workspaceSize, 1))
        layer.forward(input: x.pointer, batch: 1, parameters: parameters.pointer, preActivation: z.pointer, output: y.pointer,
                      workspace: workspace.pointer, context: .inference)
        func window(_ rows: ClosedRange<Int>, _ columns: ClosedRange<Int>) -> Float {
            rows.reduce(0) { sum, r in sum + columns.reduce(0) { $0 + Float(r * 6 + $1) } }
        }
        XCTAssertEqual(y[0], window(0...2, 0...2), "top-left window starts at (0, 0)")
        XCTAssertEqual(y[8], window(4...5, 4...5), "bottom-right window overhangs by one")
        // 5×5 with stride 2: out 3, padding 2 in all, one on each side.
        let odd = try XCTUnwrap(try Conv2D.parse("c1s2", name: "c", inputShape: [5, 5, 1], activation: .linear))
        let x5 = FlatBuffer((0..<25).map(Float.init)), y5 = FlatBuffer(count: 9)
        odd.forward(input: x5.pointer, batch: 1, parameters: parameters.pointer, preActivation: z.pointer, output: y5.pointer,
                    workspace: workspace.pointer, context: .inference)
        XCTAssertEqual(y5[0], [0, 1, 5, 6].map(Float.init).reduce(0, +), "top-left window overhangs the top and left by one")
    }

    /// The examples of Keras's own autoencoders are one spec each.
    func testKerasExamplesAreSpecs() throws {
        let denoising = try AEDistCoreTests.architecture("conv:28x28x1/c32-p2-c32-p2/t32s2-t32s2-c1:sigmoid")
        XCTAssertEqual(denoising.layers.map { $0.outputShape }, [[28, 28, 32], [14, 14, 32], [14, 14, 32], [7, 7, 32],
                                                                 [14, 14, 32], [28, 28, 32], [28, 28, 1]])
        var config = ModelConfig()
        config.spec = "conv:28x28x1/c32s2-c64s2-f-d16-d2/d3136-r7x7x64-t64s2-t32s2-t1"
        config.variational = true
        let vae = try ModelArchitecture(config)
        XCTAssertEqual(vae.codeSize, 2)
        XCTAssertEqual(vae.layers.map { $0.outputShape }, [[14, 14, 32], [7, 7, 64], [3136], [16], [4], [3136], [7, 7, 64],
                                                           [14, 14, 64], [28, 28, 32], [28, 28, 1]])
        for (spec, fragment) in [("conv:28x28x1/c8-p2/t8s3-c1", "ends at 42×42×1"), ("conv:28x28x1/c8/t8x", "'t8x' is not a transposed conv layer"),
                                 ("dense:784-t8-32", "'t8' needs an image (H×W×C) input but gets 784 values")] {
            XCTAssertThrowsError(try AEDistCoreTests.architecture(spec), spec) { XCTAssertTrue("\($0)".contains(fragment), "\(spec): \($0)") }
        }
    }
}
