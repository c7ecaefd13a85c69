/// A fully connected layer y = f(x·Wᵀ + b) over a batch of rows, with W stored [out × in] as PyTorch does.
/// Forward and backward sit side by side; both read W from the flat parameter buffer and backward accumulates
/// (+=) into the flat gradient buffer at the same offsets.
public struct DenseLayer: Sendable {
    public let spec: LayerSpec
    public let weightOffset: Int
    public let biasOffset: Int

    public var inputSize: Int { spec.inputSize }
    public var outputSize: Int { spec.outputSize }

    /// z = x·Wᵀ + b into `preActivation`, then y = f(z) into `output` (which may be the same buffer).
    public func forward(input: UnsafePointer<Float>, batch: Int, parameters: UnsafePointer<Float>,
                        preActivation: UnsafeMutablePointer<Float>, output: UnsafeMutablePointer<Float>) {
        guard batch > 0 else { return }
        BLAS.gemm(transposeB: true, m: batch, n: outputSize, k: inputSize, a: input, lda: inputSize,
                  b: parameters + weightOffset, ldb: inputSize, beta: 0, c: preActivation, ldc: outputSize)
        applyBiasAndActivation(preActivation: preActivation, output: output, rows: batch, width: outputSize,
                               bias: parameters + biasOffset, activation: spec.activation)
    }

    /// Given dL/dz for this layer's rows: dW += dzᵀ·x, db += Σ dz, and (when `inputGradient` is given)
    /// dL/dx = dz·W, overwriting it.
    public func backward(input: UnsafePointer<Float>, batch: Int, preActivationGradient dz: UnsafePointer<Float>,
                         parameters: UnsafePointer<Float>, gradients: UnsafeMutablePointer<Float>,
                         inputGradient: UnsafeMutablePointer<Float>?) {
        guard batch > 0 else { return }
        BLAS.gemm(transposeA: true, m: outputSize, n: inputSize, k: batch, a: dz, lda: outputSize, b: input,
                  ldb: inputSize, beta: 1, c: gradients + weightOffset, ldc: inputSize)
        let biasGradient = gradients + biasOffset
        for row in 0..<batch {
            let g = dz + row * outputSize
            for j in 0..<outputSize { biasGradient[j] += g[j] }
        }
        if let inputGradient {
            BLAS.gemm(m: batch, n: inputSize, k: outputSize, a: dz, lda: outputSize, b: parameters + weightOffset,
                      ldb: inputSize, beta: 0, c: inputGradient, ldc: inputSize)
        }
    }

    /// Fills this layer's weights from the layer's own random stream; biases start at zero (Keras and PyTorch both
    /// leave them small; zero keeps the stream independent of the bias count).
    public func initialize(parameters: UnsafeMutablePointer<Float>, seed: UInt64, layerIndex: Int) {
        var random = RandomStream(seed: seed, RandomStream.Purpose.initialization.rawValue, UInt64(layerIndex))
        let bound = spec.activation.initialization.bound(fanIn: spec.fan.in, fanOut: spec.fan.out)
        let weights = parameters + weightOffset
        for i in 0..<(inputSize * outputSize) { weights[i] = (2 * random.nextUnitFloat() - 1) * bound }
        (parameters + biasOffset).update(repeating: 0, count: outputSize)
    }
}

/// z += bias and y = f(z) in one pass over the freshly written (cache-warm) rows of a GEMM's result.
func applyBiasAndActivation(preActivation z: UnsafeMutablePointer<Float>, output y: UnsafeMutablePointer<Float>, rows: Int,
                            width: Int, bias: UnsafePointer<Float>, activation: Activation) {
    for row in 0..<rows {
        let z = z + row * width, y = y + row * width
        switch activation {
        case .relu: for j in 0..<width { let v = z[j] + bias[j]; z[j] = v; y[j] = v > 0 ? v : 0 }
        case .linear: for j in 0..<width { let v = z[j] + bias[j]; z[j] = v; y[j] = v }
        case .sigmoid: for j in 0..<width { let v = z[j] + bias[j]; z[j] = v; y[j] = FastMath.sigmoid(v) }
        default: for j in 0..<width { let v = z[j] + bias[j]; z[j] = v; y[j] = activation.apply(v) }
        }
    }
}
