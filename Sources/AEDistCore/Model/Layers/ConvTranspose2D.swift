/// A k×k transposed convolution (Keras's Conv2DTranspose, PyTorch's ConvTranspose2d) with F filters: each input
/// pixel spreads its values, weighted, over a k×k patch of the output, patches `stride` apart. Output size as Keras:
/// "same" in·s, "valid" (in − 1)·s + k. Weights [C, k, k, F] for C input channels (PyTorch's [in, out, k, k] with
/// the kernel axes moved last, channels-last like aedist's convolutions). "valid" is in·s + max(k − s, 0), which is
/// (in − 1)·s + k unless the kernel is smaller than the stride. In a `conv:` spec: `tF` with `kK`, `sS` and
/// `v` as for `cF`.
///
/// It is the adjoint of a convolution from this layer's output shape to its input shape (TensorFlow defines it so),
/// and runs on that convolution's receptive-field traversal: forward is the convolution's backward-data (one GEMM
/// per chunk, then col2im), backward-data is the convolution's forward (im2col, then one GEMM).
public struct ConvTranspose2D: Layer {
    public let name: String
    public let inputShape: [Int]
    public let outputShape: [Int]
    public let activation: Activation
    /// The convolution whose adjoint this layer is: from [outH, outW, F] to [inH, inW, C]; it holds the kernel size,
    /// stride and padding.
    let adjoint: Conv2D
    public var filters: Int { outputShape[2] }
    public var kernel: Int { adjoint.kernel }
    public var stride: Int { adjoint.stride }
    public var samePadding: Bool { adjoint.samePadding }

    public init(name: String, inputShape: [Int], filters: Int, kernel: Int, stride: Int, samePadding: Bool,
                activation: Activation) throws {
        // Keras's deconv_output_length: "valid" adds the kernel's overhang, in·s + max(k − s, 0).
        let (height, width) = samePadding ? (inputShape[0] * stride, inputShape[1] * stride)
            : (inputShape[0] * stride + max(kernel - stride, 0), inputShape[1] * stride + max(kernel - stride, 0))
        self.name = name
        self.inputShape = inputShape
        outputShape = [height, width, filters]
        self.activation = activation
        adjoint = try Conv2D(name: name, inputShape: outputShape, filters: inputShape[2], kernel: kernel, stride: stride,
                             samePadding: samePadding, activation: .linear, allowDirect: false)
        precondition(adjoint.outputShape == inputShape, "a transposed convolution's adjoint maps back to its input")
    }

    public static func parse(_ token: Substring, name: String, inputShape: [Int], activation: Activation) throws -> ConvTranspose2D? {
        guard let arguments = try Conv2D.arguments(of: token, letter: "t", kind: "transposed conv", inputShape: inputShape) else { return nil }
        return try ConvTranspose2D(name: name, inputShape: inputShape, filters: arguments.filters, kernel: arguments.kernel,
                                   stride: arguments.stride, samePadding: arguments.samePadding, activation: activation)
    }

    var inChannels: Int { inputShape[2] }
    var weightCount: Int { inChannels * taps }
    /// Values of one output patch: k·k·F.
    var taps: Int { kernel * kernel * filters }
    /// Input pixels per sample (the adjoint's output positions).
    var inputPositions: Int { inputShape[0] * inputShape[1] }
    var outputPositions: Int { outputShape[0] * outputShape[1] }

    public var parameterShapes: [(name: String, shape: [Int])] { [("weight", [inChannels, kernel, kernel, filters]), ("bias", [filters])] }
    /// Keras and PyTorch count a transposed kernel's fans the other way round from a convolution's.
    public var fan: (in: Int, out: Int) { (kernel * kernel * filters, kernel * kernel * inChannels) }
    /// The adjoint's im2col rows, or the bias gradient's blocked sum (used before them).
    public var workspaceSize: Int { max(adjoint.workspaceSize, BlockedSum.scratchSize(filters)) }

    public var settings: [(key: String, value: String)] { [("filters", "\(filters)"), ("kernel", "\(kernel)"), ("stride", "\(stride)"), ("padding", samePadding ? "same" : "valid")] }
    public var description: String {
        "\(name) transposed conv \(kernel)×\(kernel)×\(filters)\(stride > 1 ? " stride \(stride)" : "")\(samePadding ? "" : " valid") \(shapes) \(activation.rawValue)"
    }

    public func doublingOutputs() -> ConvTranspose2D? {
        try? ConvTranspose2D(name: name, inputShape: inputShape, filters: 2 * filters, kernel: kernel, stride: stride,
                             samePadding: samePadding, activation: .linear)
    }

    /// Per chunk of samples: patches = x · W ([pixels, C] · [C, k·k·F]), added onto the output where they fall.
    public func forward(input: UnsafePointer<Float>, batch: Int, parameters: UnsafePointer<Float>,
                        preActivation: UnsafeMutablePointer<Float>, output: UnsafeMutablePointer<Float>,
                        workspace: UnsafeMutablePointer<Float>, context: PassContext) {
        preActivation.update(repeating: 0, count: batch * outputPositions * filters)
        var first = 0
        while first < batch {
            let count = min(adjoint.samplesPerChunk, batch - first)
            BLAS.gemm(m: count * inputPositions, n: taps, k: inChannels, a: input + first * inputPositions * inChannels, lda: inChannels,
                      b: parameters, ldb: taps, beta: 0, c: workspace, ldc: taps)
            adjoint.col2imAdd(workspace, first: first, count: count, into: preActivation)
            first += count
        }
        applyBiasAndActivation(preActivation: preActivation, output: output, rows: batch * outputPositions, width: filters,
                               bias: parameters + weightCount, activation: activation)
    }

    /// Per chunk: the output gradient's patches (im2col over the adjoint's traversal), then dW += xᵀ · patches and
    /// dx = patches · Wᵀ.
    public func backward(input: UnsafePointer<Float>, preActivation: UnsafePointer<Float>, output: UnsafePointer<Float>, batch: Int,
                         outputGradient dz: UnsafePointer<Float>, parameters: UnsafePointer<Float>,
                         gradients: UnsafeMutablePointer<Float>, inputGradient: UnsafeMutablePointer<Float>?,
                         workspace: UnsafeMutablePointer<Float>, context: PassContext) {
        accumulateBiasGradient(dz, rows: batch * outputPositions, width: filters, into: gradients + weightCount, scratch: workspace)
        var first = 0
        while first < batch {
            let count = min(adjoint.samplesPerChunk, batch - first), rows = count * inputPositions
            let x = input + first * inputPositions * inChannels
            adjoint.im2col(dz, first: first, count: count, into: workspace)
            BLAS.gemm(transposeA: true, m: inChannels, n: taps, k: rows, a: x, lda: inChannels, b: workspace, ldb: taps,
                      beta: 1, c: gradients, ldc: taps)
            if let inputGradient {
                BLAS.gemm(transposeB: true, m: rows, n: inChannels, k: taps, a: workspace, lda: taps, b: parameters, ldb: taps,
                          beta: 0, c: inputGradient + first * inputPositions * inChannels, ldc: inChannels)
            }
            first += count
        }
    }
}
