import Foundation

/// Batch normalisation over the last axis (features of a vector, channels of an image, as Keras's
/// BatchNormalization and PyTorch's BatchNorm1d/2d): z = γ·(x − μ)/√(σ² + ε) + β, then the layer's activation
/// (linear unless the spec gives one: `bn:relu`). In training μ and σ² are those of the whole global batch, summed
/// over every rank (as SyncBatchNorm), so 1, 2 or 8 ranks compute the same model; elsewhere (validation and every
/// use of a trained model) the running statistics. Those follow Keras: momentum 0.99 (running = 0.99·running +
/// 0.01·batch), ε = 1e-3, the batch's biased variance; they are the checkpoint's `running_mean` and `running_var`
/// (PyTorch's names; Keras calls them moving_mean and moving_variance). γ and β are the checkpoint's `weight` and
/// `bias`, initialised to 1 and 0. In a spec: `bn`.
public struct BatchNorm: Layer {
    public let name: String
    public let inputShape: [Int]
    public var outputShape: [Int] { inputShape }
    public let activation: Activation
    public static let momentum = 0.99
    public static let epsilon = 1e-3

    public init(name: String, inputShape: [Int], activation: Activation) {
        self.name = name
        self.inputShape = inputShape
        self.activation = activation
    }

    public static func parse(_ token: Substring, name: String, inputShape: [Int], activation: Activation) throws -> BatchNorm? {
        guard token.hasPrefix("bn") else { return nil }
        guard token == "bn" else { throw SpecProblem("'\(token)' is not a batch normalisation layer: write bn (or bn:relu for an activation)") }
        return BatchNorm(name: name, inputShape: inputShape, activation: activation)
    }

    public static var takesDefaultActivation: Bool { false }
    var channels: Int { inputShape.last! }
    /// Values per channel in one sample (H·W for an image, 1 for a vector).
    var positions: Int { inputSize / channels }

    public var settings: [(key: String, value: String)] { [("momentum", "\(Self.momentum)"), ("epsilon", "\(Self.epsilon)")] }
    public var description: String { "\(name) batchnorm \(shapes)\(activation == .linear ? "" : " \(activation.rawValue)")" }
    public var parameterShapes: [(name: String, shape: [Int])] { [("weight", [channels]), ("bias", [channels])] }
    public var bufferShapes: [(name: String, shape: [Int])] { [("running_mean", [channels]), ("running_var", [channels])] }
    /// The batch's mean and 1/√(σ² + ε) per channel, from forward to backward.
    public var stateSize: Int { 2 * channels }
    public var spansTheBatch: Bool { true }
    /// Per micro-batch one row of statistics, 2·channels sums and a count, in doubles (two floats each); the model
    /// gives a layer that spans the batch one more row than the batch has micro-batches (for the totals).
    public var workspaceSize: Int { 2 * statisticsWidth }
    var statisticsWidth: Int { 2 * channels + 1 }

    public func initialize(parameters: UnsafeMutablePointer<Float>, seed: UInt64, layerIndex: Int) {
        parameters.update(repeating: 1, count: channels)
        (parameters + channels).update(repeating: 0, count: channels)
    }

    public func initializeBuffers(_ buffers: UnsafeMutablePointer<Float>) {
        buffers.update(repeating: 0, count: channels)
        (buffers + channels).update(repeating: 1, count: channels)
    }

    /// Adds up the micro-batches' statistics rows over the global batch (the context's reducer), or over these
    /// rows alone.
    private func total(_ partials: UnsafeMutablePointer<Double>, chunks: Int, into totals: UnsafeMutablePointer<Double>,
                       context: PassContext) {
        let width = statisticsWidth
        if let reducer = context.statistics {
            reducer.reduce(partials, chunks: chunks, width: width, into: totals)
            return
        }
        totals.update(repeating: 0, count: width)
        for chunk in 0..<chunks { for i in 0..<width { totals[i] += partials[chunk * width + i] } }
    }

    /// The micro-batches of a `batch` of samples, as ranges of rows (a sample has `positions` rows of channels).
    private func forEachChunk(batch: Int, microBatch: Int, _ body: (_ chunk: Int, _ rows: Range<Int>) -> Void) {
        var chunk = 0
        for start in stride(from: 0, to: batch, by: max(microBatch, 1)) {
            body(chunk, (start * positions)..<((batch - start > microBatch ? start + microBatch : batch) * positions))
            chunk += 1
        }
    }

    private func chunkCount(batch: Int, microBatch: Int) -> Int { batch == 0 ? 0 : (batch - 1) / max(microBatch, 1) + 1 }

    public func forward(input: UnsafePointer<Float>, batch: Int, parameters: UnsafePointer<Float>,
                        preActivation: UnsafeMutablePointer<Float>, output: UnsafeMutablePointer<Float>,
                        workspace: UnsafeMutablePointer<Float>, context: PassContext) {
        let channels = self.channels, rows = batch * positions, width = statisticsWidth
        let mean = context.state!, inverseDeviation = context.state! + channels
        let running = context.buffers!
        if context.training {
            // Σx, Σx² and the count per micro-batch, then over the global batch.
            let totals = UnsafeMutableRawPointer(workspace).assumingMemoryBound(to: Double.self), partials = totals + width
            forEachChunk(batch: batch, microBatch: context.microBatch) { chunk, chunkRows in
                let sums = partials + chunk * width
                sums.update(repeating: 0, count: width)
                for row in chunkRows {
                    let x = input + row * channels
                    for c in 0..<channels {
                        let value = Double(x[c])
                        sums[c] += value
                        sums[channels + c] += value * value
                    }
                }
                sums[2 * channels] = Double(chunkRows.count)
            }
            total(partials, chunks: chunkCount(batch: batch, microBatch: context.microBatch), into: totals, context: context)
            let count = totals[2 * channels]
            if count > 0 {
                for c in 0..<channels {
                    let mu = totals[c] / count, variance = max(totals[channels + c] / count - mu * mu, 0)
                    mean[c] = Float(mu)
                    inverseDeviation[c] = Float(1 / (variance + Self.epsilon).squareRoot())
                    running[c] = Float(Self.momentum * Double(running[c]) + (1 - Self.momentum) * mu)
                    running[channels + c] = Float(Self.momentum * Double(running[channels + c]) + (1 - Self.momentum) * variance)
                }
            }
        } else {
            for c in 0..<channels {
                mean[c] = running[c]
                inverseDeviation[c] = Float(1 / (Double(running[channels + c]) + Self.epsilon).squareRoot())
            }
        }
        let gamma = parameters
        for row in 0..<rows {
            let x = input + row * channels, z = preActivation + row * channels
            for c in 0..<channels { z[c] = (x[c] - mean[c]) * inverseDeviation[c] * gamma[c] }
        }
        applyBiasAndActivation(preActivation: preActivation, output: output, rows: rows, width: channels,
                               bias: parameters + channels, activation: activation)
    }

    /// With g = dL/dz and x̂ = (x − μ)/σ: dβ = Σ g, dγ = Σ g·x̂ (per micro-batch, into its gradient slot), and
    /// dx = γ/(σ·M) · (M·g − Σ g − x̂·Σ g·x̂), the sums over the M values of the global batch.
    public func backward(input: UnsafePointer<Float>, preActivation: UnsafePointer<Float>, output: UnsafePointer<Float>, batch: Int,
                         outputGradient g: UnsafePointer<Float>, parameters: UnsafePointer<Float>,
                         gradients: UnsafeMutablePointer<Float>, inputGradient: UnsafeMutablePointer<Float>?,
                         workspace: UnsafeMutablePointer<Float>, context: PassContext) {
        let channels = self.channels, width = statisticsWidth
        let mean = context.state!, inverseDeviation = context.state! + channels
        let totals = UnsafeMutableRawPointer(workspace).assumingMemoryBound(to: Double.self), partials = totals + width
        forEachChunk(batch: batch, microBatch: context.microBatch) { chunk, chunkRows in
            let sums = partials + chunk * width
            sums.update(repeating: 0, count: width)
            for row in chunkRows {
                let x = input + row * channels, dz = g + row * channels
                for c in 0..<channels {
                    let normalized = Double((x[c] - mean[c]) * inverseDeviation[c])
                    sums[c] += Double(dz[c])
                    sums[channels + c] += Double(dz[c]) * normalized
                }
            }
            sums[2 * channels] = Double(chunkRows.count)
            let slot = gradients + chunk * context.gradientSlotStride
            for c in 0..<channels {
                slot[c] += Float(sums[channels + c])
                slot[channels + c] += Float(sums[c])
            }
        }
        guard let inputGradient else { return }
        total(partials, chunks: chunkCount(batch: batch, microBatch: context.microBatch), into: totals, context: context)
        let count = totals[2 * channels]
        guard count > 0 else { return }
        for row in 0..<(batch * positions) {
            let x = input + row * channels, dz = g + row * channels, dx = inputGradient + row * channels
            for c in 0..<channels {
                let normalized = Double((x[c] - mean[c]) * inverseDeviation[c])
                let scale = Double(parameters[c]) * Double(inverseDeviation[c]) / count
                dx[c] = Float(scale * (count * Double(dz[c]) - totals[c] - normalized * totals[channels + c]))
            }
        }
    }
}
