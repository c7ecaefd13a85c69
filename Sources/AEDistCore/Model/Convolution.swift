/// Image layers on NHWC rows (each sample H×W×C values, channels fastest, as Keras and HDF5 images store them).
/// Convolution is im2col + one GEMM per chunk of samples, with the im2col workspace allocated once by the model and
/// rebuilt in the backward pass rather than kept: memory stays at one chunk's worth whatever the batch.
public struct Conv2DLayer: Sendable {
    public let spec: LayerSpec
    public let weightOffset: Int
    public let biasOffset: Int
    let inHeight, inWidth, inChannels, outHeight, outWidth, filters, kernel, stride, padTop, padLeft: Int

    init(spec: LayerSpec, weightOffset: Int, biasOffset: Int) {
        guard case .conv(let filters, let kernel, let stride, let same) = spec.kind else { preconditionFailure("not a conv layer") }
        self.spec = spec
        self.weightOffset = weightOffset
        self.biasOffset = biasOffset
        (inHeight, inWidth, inChannels) = (spec.inputShape[0], spec.inputShape[1], spec.inputShape[2])
        (outHeight, outWidth) = (spec.outputShape[0], spec.outputShape[1])
        (self.filters, self.kernel, self.stride) = (filters, kernel, stride)
        // "same" pads so that out = ceil(in / stride), the extra pixel (if odd) at the bottom/right, as TensorFlow.
        padTop = same ? max((outHeight - 1) * stride + kernel - inHeight, 0) / 2 : 0
        padLeft = same ? max((outWidth - 1) * stride + kernel - inWidth, 0) / 2 : 0
    }

    var columns: Int { kernel * kernel * inChannels }
    var positions: Int { outHeight * outWidth }
    /// Samples per im2col chunk: about 4096 rows of columns per GEMM.
    var samplesPerChunk: Int { max(1, 4096 / positions) }
    var workspaceSize: Int { isDirect ? 0 : samplesPerChunk * positions * columns }
    /// A layer with few filters (an image decoder's last layer, one per colour channel) computes directly: im2col
    /// would copy k·k·C values per pixel to feed a GEMM only a few columns wide, more memory traffic than arithmetic.
    var isDirect: Bool { filters <= 4 }

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
    private func im2col(_ input: UnsafePointer<Float>, first: Int, count: Int, into cols: UnsafeMutablePointer<Float>) {
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
    private func col2imAdd(_ cols: UnsafePointer<Float>, first: Int, count: Int, into inputGradient: UnsafeMutablePointer<Float>) {
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
                        workspace: UnsafeMutablePointer<Float>) {
        if isDirect {
            directForward(input: input, batch: batch, weights: parameters + weightOffset, into: preActivation)
            applyBiasAndActivation(preActivation: preActivation, output: output, rows: batch * positions, width: filters,
                                   bias: parameters + biasOffset, activation: spec.activation)
            return
        }
        var first = 0
        while first < batch {
            let count = min(samplesPerChunk, batch - first)
            im2col(input, first: first, count: count, into: workspace)
            let rows = count * positions
            BLAS.gemm(transposeB: true, m: rows, n: filters, k: columns, a: workspace, lda: columns,
                      b: parameters + weightOffset, ldb: columns, beta: 0, c: preActivation + first * positions * filters, ldc: filters)
            first += count
        }
        applyBiasAndActivation(preActivation: preActivation, output: output, rows: batch * positions, width: filters,
                               bias: parameters + biasOffset, activation: spec.activation)
    }

    public func backward(input: UnsafePointer<Float>, batch: Int, preActivationGradient dz: UnsafePointer<Float>,
                         parameters: UnsafePointer<Float>, gradients: UnsafeMutablePointer<Float>,
                         inputGradient: UnsafeMutablePointer<Float>?, workspace: UnsafeMutablePointer<Float>) {
        let biasGradient = gradients + biasOffset
        for row in 0..<(batch * positions) {
            let g = dz + row * filters
            for f in 0..<filters { biasGradient[f] += g[f] }
        }
        inputGradient?.update(repeating: 0, count: batch * inHeight * inWidth * inChannels)
        if isDirect {
            directBackward(input: input, batch: batch, preActivationGradient: dz, weights: parameters + weightOffset,
                           weightGradient: gradients + weightOffset, inputGradient: inputGradient)
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
                      ldb: columns, beta: 1, c: gradients + weightOffset, ldc: columns)
            if let inputGradient {
                // dcols = dZ · W, then scattered back onto the input pixels.
                BLAS.gemm(m: rows, n: columns, k: filters, a: chunkGradient, lda: filters, b: parameters + weightOffset,
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
                                inputGradient: UnsafeMutablePointer<Float>?) {
        let channels = inChannels, filters = self.filters, columns = self.columns
        forEachPixel(first: 0, count: batch) { output, taps in
            for f in 0..<filters {
                let g = dz[output * filters + f]
                guard g != 0 else { continue }
                taps { weight, pixel in
                    guard let pixel else { return }
                    let dw = weightGradient + f * columns + weight, x = input + pixel
                    for c in 0..<channels { dw[c] += g * x[c] }
                    if let inputGradient {
                        let w = weights + f * columns + weight, dx = inputGradient + pixel
                        for c in 0..<channels { dx[c] += g * w[c] }
                    }
                }
            }
        }
    }

    public func initialize(parameters: UnsafeMutablePointer<Float>, seed: UInt64, layerIndex: Int) {
        var random = RandomStream(seed: seed, RandomStream.Purpose.initialization.rawValue, UInt64(layerIndex))
        let bound = spec.activation.initialization.bound(fanIn: spec.fan.in, fanOut: spec.fan.out)
        for i in 0..<(filters * columns) { parameters[weightOffset + i] = (2 * random.nextUnitFloat() - 1) * bound }
        (parameters + biasOffset).update(repeating: 0, count: filters)
    }
}

/// Max over non-overlapping size×size windows; the gradient goes to the first maximum of each window.
public struct MaxPool2DLayer: Sendable {
    public let spec: LayerSpec
    let size, inHeight, inWidth, channels, outHeight, outWidth: Int

    init(spec: LayerSpec) {
        guard case .maxPool(let size) = spec.kind else { preconditionFailure("not a pooling layer") }
        self.spec = spec
        self.size = size
        (inHeight, inWidth, channels) = (spec.inputShape[0], spec.inputShape[1], spec.inputShape[2])
        (outHeight, outWidth) = (spec.outputShape[0], spec.outputShape[1])
    }

    public func forward(input: UnsafePointer<Float>, batch: Int, output: UnsafeMutablePointer<Float>) {
        for n in 0..<batch {
            let x = input + n * inHeight * inWidth * channels, y = output + n * outHeight * outWidth * channels
            for oy in 0..<outHeight {
                for ox in 0..<outWidth {
                    let target = y + (oy * outWidth + ox) * channels, corner = x + (oy * size * inWidth + ox * size) * channels
                    for c in 0..<channels { target[c] = corner[c] }
                    for dy in 0..<size {
                        for dx in 0..<size {
                            let source = x + ((oy * size + dy) * inWidth + ox * size + dx) * channels
                            for c in 0..<channels { target[c] = source[c] > target[c] ? source[c] : target[c] }
                        }
                    }
                }
            }
        }
    }

    /// Floats of workspace the backward pass needs.
    var workspaceSize: Int { channels }

    public func backward(input: UnsafePointer<Float>, output: UnsafePointer<Float>, batch: Int, outputGradient: UnsafePointer<Float>,
                         inputGradient: UnsafeMutablePointer<Float>, workspace pending: UnsafeMutablePointer<Float>) {
        inputGradient.update(repeating: 0, count: batch * inHeight * inWidth * channels)
        // Window positions in order, all channels at once: `pending` is 1 for a channel until its first maximum has
        // taken the gradient, so the loops are plain vector code instead of a search per channel.
        let channels = self.channels
        for n in 0..<batch {
            let x = input + n * inHeight * inWidth * channels
            let dx = inputGradient + n * inHeight * inWidth * channels
            for oy in 0..<outHeight {
                for ox in 0..<outWidth {
                    let at = (n * outHeight * outWidth + oy * outWidth + ox) * channels
                    let maximum = output + at, gradient = outputGradient + at
                    for c in 0..<channels { pending[c] = 1 }
                    for wy in 0..<size {
                        for wx in 0..<size {
                            let index = ((oy * size + wy) * inWidth + ox * size + wx) * channels
                            let source = x + index, target = dx + index
                            for c in 0..<channels {
                                let takes: Float = source[c] == maximum[c] ? pending[c] : 0
                                target[c] += takes * gradient[c]
                                pending[c] -= takes
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Nearest-neighbour upsampling; the gradient of each input pixel is the sum over its copies.
public struct UpSample2DLayer: Sendable {
    public let spec: LayerSpec
    let factor, inHeight, inWidth, channels: Int

    init(spec: LayerSpec) {
        guard case .upSample(let factor) = spec.kind else { preconditionFailure("not an upsampling layer") }
        self.spec = spec
        self.factor = factor
        (inHeight, inWidth, channels) = (spec.inputShape[0], spec.inputShape[1], spec.inputShape[2])
    }

    public func forward(input: UnsafePointer<Float>, batch: Int, output: UnsafeMutablePointer<Float>) {
        let outWidth = inWidth * factor
        for n in 0..<batch {
            let x = input + n * inHeight * inWidth * channels, y = output + n * inHeight * factor * outWidth * channels
            for oy in 0..<(inHeight * factor) {
                for ox in 0..<outWidth {
                    let target = y + (oy * outWidth + ox) * channels, source = x + ((oy / factor) * inWidth + ox / factor) * channels
                    for c in 0..<channels { target[c] = source[c] }
                }
            }
        }
    }

    public func backward(batch: Int, outputGradient: UnsafePointer<Float>, inputGradient: UnsafeMutablePointer<Float>) {
        inputGradient.update(repeating: 0, count: batch * inHeight * inWidth * channels)
        let outWidth = inWidth * factor
        for n in 0..<batch {
            let dy = outputGradient + n * inHeight * factor * outWidth * channels, dx = inputGradient + n * inHeight * inWidth * channels
            for oy in 0..<(inHeight * factor) {
                for ox in 0..<outWidth {
                    let source = dy + (oy * outWidth + ox) * channels, target = dx + ((oy / factor) * inWidth + ox / factor) * channels
                    for c in 0..<channels { target[c] += source[c] }
                }
            }
        }
    }
}
