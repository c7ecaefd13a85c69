/// A k×k convolution with F filters on NHWC rows (each sample H×W×C values, channels fastest, as Keras and HDF5
/// images store them); weights [F, k, k, C]. In a `conv:` spec: `cF` with `kK` (kernel, default 3), `sS` (stride)
/// and `v` (valid padding; "same" otherwise, TensorFlow's rule: out = ⌈in/s⌉, the odd padding pixel at the
/// bottom/right). Computed as im2col + one GEMM per chunk of samples, with the im2col workspace allocated once by
/// the model and rebuilt in the backward pass rather than kept: memory stays at one chunk's worth whatever the batch.
public struct Conv2D: Layer {
    public let name: String
    public let inputShape: [Int]
    public let outputShape: [Int]
    public let activation: Activation
    public let filters, kernel, stride: Int
    public let samePadding: Bool
    let inHeight, inWidth, inChannels, outHeight, outWidth, padTop, padLeft: Int

    /// - Parameter allowDirect: whether a layer of up to four filters may convolve without im2col (a transposed
    ///   convolution's adjoint uses only the im2col traversal).
    public init(name: String, inputShape: [Int], filters: Int, kernel: Int, stride: Int, samePadding: Bool,
                activation: Activation, allowDirect: Bool = true) throws {
        let (height, width) = samePadding ? ((inputShape[0] + stride - 1) / stride, (inputShape[1] + stride - 1) / stride)
            : ((inputShape[0] - kernel) / stride + 1, (inputShape[1] - kernel) / stride + 1)
        guard height > 0, width > 0, samePadding || (inputShape[0] >= kernel && inputShape[1] >= kernel) else {
            throw SpecProblem("a \(kernel)×\(kernel) convolution does not fit its \(inputShape[0])×\(inputShape[1]) input")
        }
        self.name = name
        self.inputShape = inputShape
        outputShape = [height, width, filters]
        self.activation = activation
        (self.filters, self.kernel, self.stride, self.samePadding) = (filters, kernel, stride, samePadding)
        (inHeight, inWidth, inChannels) = (inputShape[0], inputShape[1], inputShape[2])
        (outHeight, outWidth) = (height, width)
        padTop = samePadding ? max((outHeight - 1) * stride + kernel - inHeight, 0) / 2 : 0
        padLeft = samePadding ? max((outWidth - 1) * stride + kernel - inWidth, 0) / 2 : 0
        isDirect = allowDirect && filters <= 4
    }

    public static func parse(_ token: Substring, name: String, inputShape: [Int], activation: Activation) throws -> Conv2D? {
        guard let arguments = try arguments(of: token, letter: "c", kind: "conv", inputShape: inputShape) else { return nil }
        do {
            return try Conv2D(name: name, inputShape: inputShape, filters: arguments.filters, kernel: arguments.kernel,
                              stride: arguments.stride, samePadding: arguments.samePadding, activation: activation)
        } catch {
            throw SpecProblem("'\(token)' does not fit its \(inputShape[0])×\(inputShape[1]) input")
        }
    }

    /// The arguments of a convolution token, `cF` or `tF` with `kK`, `sS` and `v`; nil when `token` does not start
    /// with `letter`.
    static func arguments(of token: Substring, letter: Character, kind: String, inputShape: [Int]) throws
        -> (filters: Int, kernel: Int, stride: Int, samePadding: Bool)? {
        guard token.first == letter, token.dropFirst().first?.isNumber == true else { return nil }
        try requireImage(token, inputShape)
        let rest = token.dropFirst()
        func number(after prefix: Character, default value: Int) -> Int? {
            guard let start = rest.firstIndex(of: prefix) else { return value }
            return Int(rest[rest.index(after: start)...].prefix { $0.isNumber })
        }
        guard let filters = Int(rest.prefix { $0.isNumber }), filters > 0, filters <= ModelArchitecture.maxValuesPerSample,
              let kernel = number(after: "k", default: 3), kernel > 0, kernel <= 1 << 12,
              let stride = number(after: "s", default: 1), stride > 0, stride <= 1 << 12,
              rest.allSatisfy({ $0.isNumber || "ksv".contains($0) }) else {
            throw SpecProblem("'\(token)' is not a \(kind) layer such as \(letter)32, \(letter)32k5 or \(letter)16k3s2v")
        }
        return (filters, kernel, stride, !rest.contains("v"))
    }

    public var parameterShapes: [(name: String, shape: [Int])] { [("weight", [filters, kernel, kernel, inChannels]), ("bias", [filters])] }
    public var fan: (in: Int, out: Int) { (kernel * kernel * inChannels, kernel * kernel * filters) }

    public var settings: [(key: String, value: String)] { [("filters", "\(filters)"), ("kernel", "\(kernel)"), ("stride", "\(stride)"), ("padding", samePadding ? "same" : "valid")] }
    public var description: String {
        "\(name) conv \(kernel)×\(kernel)×\(filters)\(stride > 1 ? " stride \(stride)" : "")\(samePadding ? "" : " valid") \(shapes) \(activation.rawValue)"
    }

    public func doublingOutputs() -> Conv2D? {
        try? Conv2D(name: name, inputShape: inputShape, filters: 2 * filters, kernel: kernel, stride: stride,
                    samePadding: samePadding, activation: .linear)
    }

    var weightCount: Int { filters * columns }

    var columns: Int { kernel * kernel * inChannels }
    var positions: Int { outHeight * outWidth }
    /// Samples per im2col chunk: about 4096 rows of columns per GEMM.
    var samplesPerChunk: Int { max(1, 4096 / positions) }
    /// im2col rows, or for a direct layer the weight gradient's blocked sum; either way room for the bias
    /// gradient's blocked sum, used before them.
    public var workspaceSize: Int {
        max(isDirect ? BlockedSum.scratchSize(weightCount) : samplesPerChunk * positions * columns, BlockedSum.scratchSize(filters))
    }
    /// A layer with few filters (an image decoder's last layer, one per colour channel) computes directly: im2col
    /// would copy k·k·C values per pixel to feed a GEMM only a few columns wide, more memory traffic than arithmetic.
    let isDirect: Bool

    /// Visits each output pixel of samples `first..<first+count` with its row index (n, oy, ox) from 0, and hands
    /// it a way to visit the pixel's kernel taps: each tap's column, where (ky, kx) starts in an im2col row and in a
    /// filter's weights, and the input pixel's offset (nil where the kernel overhangs the padding). One traversal for
    /// im2col, col2im and the direct kernels, which keep per-pixel sums across the taps.
    @inline(__always)
    private func forEachPixel(first: Int, count: Int,
                              _ visit: (_ row: Int, _ taps: ((_ column: Int, _ pixel: Int?) -> Void) -> Void) -> Void) {
        var row = 0
        for n in first..<(first + count) {
            let sample = n * inHeight * inWidth * inChannels
            for oy in 0..<outHeight {
                for ox in 0..<outWidth {
                    visit(row) { tap in
                        for ky in 0..<kernel {
                            let iy = oy * stride - padTop + ky
                            for kx in 0..<kernel {
                                let ix = ox * stride - padLeft + kx
                                let inside = iy >= 0 && iy < inHeight && ix >= 0 && ix < inWidth
                                tap((ky * kernel + kx) * inChannels, inside ? sample + (iy * inWidth + ix) * inChannels : nil)
                            }
                        }
                    }
                    row += 1
                }
            }
        }
    }

    /// Rows of receptive fields for samples `first..<first+count`: row (n, oy, ox), columns (ky, kx, c).
    func im2col(_ input: UnsafePointer<Float>, first: Int, count: Int, into cols: UnsafeMutablePointer<Float>) {
        let columns = self.columns, channels = inChannels
        forEachPixel(first: first, count: count) { row, taps in
            taps { column, pixel in
                // Inline loops, not memcpy: a run is one to a few dozen floats, too short to pay for a call.
                let target = cols + row * columns + column
                if let pixel {
                    let source = input + pixel
                    for c in 0..<channels { target[c] = source[c] }
                } else {
                    for c in 0..<channels { target[c] = 0 }
                }
            }
        }
    }

    /// Adds each row of receptive-field gradients back onto the input pixels it came from.
    func col2imAdd(_ cols: UnsafePointer<Float>, first: Int, count: Int, into inputGradient: UnsafeMutablePointer<Float>) {
        let columns = self.columns, channels = inChannels
        forEachPixel(first: first, count: count) { row, taps in
            taps { column, pixel in
                guard let pixel else { return }
                let source = cols + row * columns + column, target = inputGradient + pixel
                for c in 0..<channels { target[c] += source[c] }
            }
        }
    }

    public func forward(input: UnsafePointer<Float>, batch: Int, parameters: UnsafePointer<Float>,
                        preActivation: UnsafeMutablePointer<Float>, output: UnsafeMutablePointer<Float>,
                        workspace: UnsafeMutablePointer<Float>, context: PassContext) {
        let weights = parameters, bias = parameters + weightCount
        if isDirect {
            directForward(input: input, batch: batch, weights: weights, into: preActivation)
            applyBiasAndActivation(preActivation: preActivation, output: output, rows: batch * positions, width: filters,
                                   bias: bias, activation: activation)
            return
        }
        var first = 0
        while first < batch {
            let count = min(samplesPerChunk, batch - first)
            im2col(input, first: first, count: count, into: workspace)
            let rows = count * positions
            BLAS.gemm(transposeB: true, m: rows, n: filters, k: columns, a: workspace, lda: columns,
                      b: weights, ldb: columns, beta: 0, c: preActivation + first * positions * filters, ldc: filters)
            first += count
        }
        applyBiasAndActivation(preActivation: preActivation, output: output, rows: batch * positions, width: filters,
                               bias: bias, activation: activation)
    }

    public func backward(input: UnsafePointer<Float>, preActivation: UnsafePointer<Float>, output: UnsafePointer<Float>, batch: Int,
                         outputGradient dz: UnsafePointer<Float>, parameters: UnsafePointer<Float>,
                         gradients: UnsafeMutablePointer<Float>, inputGradient: UnsafeMutablePointer<Float>?,
                         workspace: UnsafeMutablePointer<Float>, context: PassContext) {
        let weights = parameters, weightGradient = gradients
        accumulateBiasGradient(dz, rows: batch * positions, width: filters, into: gradients + weightCount, scratch: workspace)
        inputGradient?.update(repeating: 0, count: batch * inHeight * inWidth * inChannels)
        if isDirect {
            directBackward(input: input, batch: batch, preActivationGradient: dz, weights: weights,
                           weightGradient: weightGradient, inputGradient: inputGradient, scratch: workspace)
            return
        }
        var first = 0
        while first < batch {
            let count = min(samplesPerChunk, batch - first)
            let rows = count * positions
            let chunkGradient = dz + first * positions * filters
            im2col(input, first: first, count: count, into: workspace)
            // dW[F × K] += dZᵀ · cols
            BLAS.gemm(transposeA: true, m: filters, n: columns, k: rows, a: chunkGradient, lda: filters, b: workspace,
                      ldb: columns, beta: 1, c: weightGradient, ldc: columns)
            if let inputGradient {
                // dcols = dZ · W, then scattered back onto the input pixels.
                BLAS.gemm(m: rows, n: columns, k: filters, a: chunkGradient, lda: filters, b: weights,
                          ldb: columns, beta: 0, c: workspace, ldc: columns)
                col2imAdd(workspace, first: first, count: count, into: inputGradient)
            }
            first += count
        }
    }

    /// z[n, pixel, f] = Σ over the receptive field of W[f, ky, kx, c] · x[n, iy, ix, c], in eight-lane partial sums
    /// kept across the whole field: no im2col.
    private func directForward(input: UnsafePointer<Float>, batch: Int, weights: UnsafePointer<Float>,
                               into z: UnsafeMutablePointer<Float>) {
        let channels = inChannels, filters = self.filters, columns = self.columns
        forEachPixel(first: 0, count: batch) { output, taps in
            for f in 0..<filters {
                var lanes = SIMD8<Float>()
                var rest: Float = 0
                taps { weight, pixel in
                    guard let pixel else { return }
                    let w = weights + f * columns + weight, x = input + pixel
                    var c = 0
                    while c + 8 <= channels {
                        lanes += UnsafeRawPointer(w + c).loadUnaligned(as: SIMD8<Float>.self) * UnsafeRawPointer(x + c).loadUnaligned(as: SIMD8<Float>.self)
                        c += 8
                    }
                    while c < channels {
                        rest += w[c] * x[c]
                        c += 1
                    }
                }
                z[output * filters + f] = lanes.sum() + rest
            }
        }
    }

    /// dW[f, ky, kx, c] += dz · x and dx[n, iy, ix, c] += dz · W[f, ky, kx, c], over every receptive field.
    private func directBackward(input: UnsafePointer<Float>, batch: Int, preActivationGradient dz: UnsafePointer<Float>,
                                weights: UnsafePointer<Float>, weightGradient: UnsafeMutablePointer<Float>,
                                inputGradient: UnsafeMutablePointer<Float>?, scratch: UnsafeMutablePointer<Float>) {
        let channels = inChannels, filters = self.filters, columns = self.columns
        // dW gathers a term from every output pixel of the batch: blocked, like the bias gradient, in longer blocks
        // (a flush costs the whole weight tensor; 1,024 pixels keep the error near 1e-7, far inside 1e-5).
        let sum = BlockedSum(count: weightCount, scratch: scratch)
        forEachPixel(first: 0, count: batch) { output, taps in
            if output & 1023 == 0 && output > 0 { sum.flush() }
            for f in 0..<filters {
                let g = dz[output * filters + f]
                guard g != 0 else { continue }
                taps { weight, pixel in
                    guard let pixel else { return }
                    let dw = sum.block + f * columns + weight, x = input + pixel
                    for c in 0..<channels { dw[c] += g * x[c] }
                    if let inputGradient {
                        let w = weights + f * columns + weight, dx = inputGradient + pixel
                        for c in 0..<channels { dx[c] += g * w[c] }
                    }
                }
            }
        }
        sum.finish(into: weightGradient)
    }
}
