/// A fully connected layer y = f(x·Wᵀ + b) over a batch of rows, with W stored [out × in] as PyTorch does.
/// In a `conv:` spec: `dN` (after `f` flattens an image).
public struct Dense: Layer {
    public let name: String
    public let inputShape: [Int]
    public let outputShape: [Int]
    public let activation: Activation

    public init(name: String, inputs: Int, outputs: Int, activation: Activation) {
        self.name = name
        inputShape = [inputs]
        outputShape = [outputs]
        self.activation = activation
    }

    public var parameterShapes: [(name: String, shape: [Int])] { [("weight", [outputSize, inputSize]), ("bias", [outputSize])] }
    /// The bias gradient's blocked sum.
    public var workspaceSize: Int { BlockedSum.scratchSize(outputSize) }
    public var description: String { "\(name) \(inputSize)→\(outputSize) \(activation.rawValue)" }

    public static func parse(_ token: Substring, name: String, inputShape: [Int], activation: Activation) throws -> Dense? {
        guard token.first == "d" else { return nil }
        guard inputShape.count == 1 else { throw SpecProblem("'\(token)' needs a flat input; flatten first with f") }
        guard let width = Int(token.dropFirst()), width > 0, width <= ModelArchitecture.maxValuesPerSample else {
            throw SpecProblem("'\(token)' is not a dense layer such as d64")
        }
        return Dense(name: name, inputs: inputShape[0], outputs: width, activation: activation)
    }

    public func doublingOutputs() -> Dense? { Dense(name: name, inputs: inputSize, outputs: 2 * outputSize, activation: .linear) }

    public func forward(input: UnsafePointer<Float>, batch: Int, parameters: UnsafePointer<Float>,
                        preActivation: UnsafeMutablePointer<Float>, output: UnsafeMutablePointer<Float>,
                        workspace: UnsafeMutablePointer<Float>, context: PassContext) {
        BLAS.gemm(transposeB: true, m: batch, n: outputSize, k: inputSize, a: input, lda: inputSize,
                  b: parameters, ldb: inputSize, beta: 0, c: preActivation, ldc: outputSize)
        applyBiasAndActivation(preActivation: preActivation, output: output, rows: batch, width: outputSize,
                               bias: parameters + inputSize * outputSize, activation: activation)
    }

    /// dW += dzᵀ·x, db += Σ dz, and dL/dx = dz·W.
    public func backward(input: UnsafePointer<Float>, preActivation: UnsafePointer<Float>, output: UnsafePointer<Float>, batch: Int,
                         outputGradient dz: UnsafePointer<Float>, parameters: UnsafePointer<Float>,
                         gradients: UnsafeMutablePointer<Float>, inputGradient: UnsafeMutablePointer<Float>?,
                         workspace: UnsafeMutablePointer<Float>, context: PassContext) {
        BLAS.gemm(transposeA: true, m: outputSize, n: inputSize, k: batch, a: dz, lda: outputSize, b: input,
                  ldb: inputSize, beta: 1, c: gradients, ldc: inputSize)
        accumulateBiasGradient(dz, rows: batch, width: outputSize, into: gradients + inputSize * outputSize, scratch: workspace)
        if let inputGradient {
            BLAS.gemm(m: batch, n: inputSize, k: outputSize, a: dz, lda: outputSize, b: parameters,
                      ldb: inputSize, beta: 0, c: inputGradient, ldc: inputSize)
        }
    }
}
