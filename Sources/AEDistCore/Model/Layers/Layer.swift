/// One kind of layer: its shapes, its parameters and its kernels, forward and backward side by side, in one file
/// per kind. A model is a list of these applied in order (`ModelArchitecture`), with every parameter in one flat
/// buffer: each layer sees its own contiguous block (weight first, then bias) from offset 0.
///
/// Adding a kind: one file with a type conforming to `Layer`, and its name in `ModelArchitecture.specLayerKinds`.
public protocol Layer: Sendable, CustomStringConvertible {
    /// "encoder.0", "decoder.2": the prefix of its tensors in checkpoints.
    var name: String { get }
    /// Per-sample shapes: [D] for vectors, [H, W, C] for images (channels last).
    var inputShape: [Int] { get }
    var outputShape: [Int] { get }
    /// Applied to the pre-activation to give the output (`.linear` for kinds without parameters).
    var activation: Activation { get }
    /// Parameter tensors in buffer order, PyTorch's names ("weight", "bias"); empty when the kind has none.
    var parameterShapes: [(name: String, shape: [Int])] { get }
    /// Inputs and outputs each weight connects, for Glorot/He initialisation (Keras's receptive-field counting).
    var fan: (in: Int, out: Int) { get }
    /// Floats of scratch the kernels need; the model allocates the largest any layer asks for, once.
    var workspaceSize: Int { get }
    /// State that is not trained but kept with the model (BatchNorm's running statistics), PyTorch's buffer names;
    /// checkpoints store it beside the parameters. The layer sees its block as `context.buffers`.
    var bufferShapes: [(name: String, shape: [Int])] { get }
    /// Floats this layer keeps from its forward pass to its backward pass (`context.state`), beside its output.
    var stateSize: Int { get }
    /// What `inspect --json` lists beside the shapes: kernel, stride, padding, rate…
    var settings: [(key: String, value: String)] { get }
    /// Whether the layer only moves or copies values (reshape, flatten, pooling, upsampling): it may follow the
    /// output layer, and the loss then sees the output layer's logits moved the same way.
    var passesValuesThrough: Bool { get }
    /// Whether one call must see the whole batch (BatchNorm's statistics); other kinds may be run a micro-batch at
    /// a time, which deterministic mode does.
    var spansTheBatch: Bool { get }
    /// Whether a spec token without ":act" takes the hidden layers' default activation (a convolution does; a
    /// BatchNorm, which Keras and PyTorch apply before the activation, stays linear).
    static var takesDefaultActivation: Bool { get }

    /// Initial parameters of this layer's block, from the layer's own random stream (seed, layer index).
    func initialize(parameters: UnsafeMutablePointer<Float>, seed: UInt64, layerIndex: Int)
    /// Initial buffers (running statistics).
    func initializeBuffers(_ buffers: UnsafeMutablePointer<Float>)

    /// Parses one layer token of a `conv:` spec ("c32k5s2v", "p2", "f", …) whose input has `inputShape`.
    /// Returns nil when the token belongs to another kind; throws `SpecProblem` when it is this kind's but wrong.
    static func parse(_ token: Substring, name: String, inputShape: [Int], activation: Activation) throws -> Self?

    /// z = x·W + b into `preActivation`, y = f(z) into `output`, for `batch` rows. Kinds without parameters write
    /// `output`, and may keep in `preActivation` (theirs alone, kept until the backward pass) what backward needs.
    func forward(input: UnsafePointer<Float>, batch: Int, parameters: UnsafePointer<Float>,
                 preActivation: UnsafeMutablePointer<Float>, output: UnsafeMutablePointer<Float>,
                 workspace: UnsafeMutablePointer<Float>, context: PassContext)

    /// From dL/dz (`outputGradient`, the gradient at the pre-activation): parameter gradients accumulate (+=) into
    /// `gradients` (this layer's block), and dL/dx overwrites `inputGradient` when it is given.
    func backward(input: UnsafePointer<Float>, preActivation: UnsafePointer<Float>, output: UnsafePointer<Float>, batch: Int,
                  outputGradient: UnsafePointer<Float>, parameters: UnsafePointer<Float>,
                  gradients: UnsafeMutablePointer<Float>, inputGradient: UnsafeMutablePointer<Float>?,
                  workspace: UnsafeMutablePointer<Float>, context: PassContext)

    /// The same layer with twice the outputs and no activation: a variational encoder's last layer, which gives
    /// μ and log σ² side by side on the last axis. nil when this kind cannot end a variational encoder.
    func doublingOutputs() -> Self?
}

/// What a pass knows beyond its buffers: whether it trains (dropout drops only then) and what each row's
/// per-sample randomness is keyed by, so that it is the same at any number of ranks and after any resume.
public struct PassContext {
    public var training: Bool
    public var seed: UInt64
    public var key: NoiseKey
    /// The layer being run, set by the model: each layer draws from a stream of its own.
    public var layerIndex = 0
    /// Set by the model for the layer being run: its buffers (running statistics) and its forward-to-backward state.
    public var buffers: UnsafeMutablePointer<Float>?
    public var state: UnsafeMutablePointer<Float>?
    /// Rows per micro-batch: a layer that spans the batch sums its statistics per micro-batch (in order, so that
    /// deterministic mode can add them up exactly), and writes micro-batch m's parameter gradients at
    /// `gradients + m · gradientSlotStride` (0: all into one).
    public var microBatch = Int.max
    public var gradientSlotStride = 0
    /// Sums a layer's per-micro-batch statistics over the global batch (every rank's micro-batches); nil: this
    /// process's rows are the whole batch.
    public var statistics: BatchStatisticsReducer?

    public init(training: Bool, seed: UInt64, key: NoiseKey) {
        self.training = training
        self.seed = seed
        self.key = key
    }

    /// Using a trained model: no dropout, nothing random.
    public static let inference = PassContext(training: false, seed: 0, key: NoiseKey(epoch: 0, first: 0))

    /// The context of the rows from `offset` on.
    public func skipping(_ offset: Int) -> PassContext {
        var context = self
        context.key = key.skipping(offset)
        return context
    }
}

/// Adds up per-micro-batch statistics (each `width` doubles) over the global batch, on every rank alike: a sum
/// across ranks, or in deterministic mode an exact one in micro-batch order. Collective: every rank calls it the
/// same number of times per step, also a rank whose batch failed (with no rows).
public protocol BatchStatisticsReducer: AnyObject {
    /// `partials`: `chunks` rows of `width` sums, this rank's micro-batches in order; `totals`: `width` sums.
    func reduce(_ partials: UnsafePointer<Double>, chunks: Int, width: Int, into totals: UnsafeMutablePointer<Double>)
}

/// What is wrong with one part of a model spec; `ModelArchitecture` adds the spec and examples to it.
public struct SpecProblem: Error {
    public let reason: String
    public init(_ reason: String) { self.reason = reason }
}

extension Layer {
    public var inputSize: Int { inputShape.reduce(1, *) }
    public var outputSize: Int { outputShape.reduce(1, *) }
    public var parameterCount: Int { parameterShapes.reduce(0) { $0 + $1.shape.reduce(1, *) } }
    public var hasParameters: Bool { !parameterShapes.isEmpty }

    public var parameterShapes: [(name: String, shape: [Int])] { [] }
    public var fan: (in: Int, out: Int) { (inputSize, outputSize) }
    public var workspaceSize: Int { 0 }
    public var bufferShapes: [(name: String, shape: [Int])] { [] }
    public var stateSize: Int { 0 }
    public var spansTheBatch: Bool { false }
    public var passesValuesThrough: Bool { false }
    public var settings: [(key: String, value: String)] { [] }
    public static var takesDefaultActivation: Bool { true }
    public func initializeBuffers(_ buffers: UnsafeMutablePointer<Float>) {}
    public var bufferCount: Int { bufferShapes.reduce(0) { $0 + $1.shape.reduce(1, *) } }
    public var activation: Activation { .linear }
    public func doublingOutputs() -> Self? { nil }

    /// "28×28×1→28×28×32": how the start-up line and `inspect` show shapes.
    var shapes: String {
        "\(inputShape.map(String.init).joined(separator: "×"))→\(outputShape.map(String.init).joined(separator: "×"))"
    }

    /// Weights from the layer's own random stream (seed, layer index), uniform within the bound its activation's
    /// scheme gives; biases and any further tensors start at zero (Keras and PyTorch both leave biases small; zero
    /// keeps the stream independent of the bias count).
    public func initialize(parameters: UnsafeMutablePointer<Float>, seed: UInt64, layerIndex: Int) {
        guard let weight = parameterShapes.first else { return }
        var random = RandomStream(seed: seed, RandomStream.Purpose.initialization.rawValue, UInt64(layerIndex))
        let bound = activation.initialization.bound(fanIn: fan.in, fanOut: fan.out)
        let weightCount = weight.shape.reduce(1, *)
        for i in 0..<weightCount { parameters[i] = (2 * random.nextUnitFloat() - 1) * bound }
        (parameters + weightCount).update(repeating: 0, count: parameterCount - weightCount)
    }

    /// Image kinds take H×W×C inputs.
    static func requireImage(_ token: Substring, _ inputShape: [Int]) throws {
        guard inputShape.count == 3 else {
            throw SpecProblem("'\(token)' needs an image (H×W×C) input but gets \(inputShape.reduce(1, *)) values; reshape first, e.g. r7x7x32")
        }
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
        case .tanh, .leakyRelu, .elu, .gelu, .silu: for j in 0..<width { let v = z[j] + bias[j]; z[j] = v; y[j] = activation.apply(v) }
        }
    }
}

/// db += Σ over rows of dz: the bias gradient of every kind whose bias is added to each row, summed without a long
/// float32 running total (`BlockedSum`). `scratch`: `BlockedSum.scratchSize(width)` floats.
func accumulateBiasGradient(_ dz: UnsafePointer<Float>, rows: Int, width: Int, into biasGradient: UnsafeMutablePointer<Float>,
                            scratch: UnsafeMutablePointer<Float>) {
    let sum = BlockedSum(count: width, scratch: scratch)
    var row = 0
    while row < rows {
        let end = min(row + BlockedSum.blockTerms, rows)
        for r in row..<end {
            let g = dz + r * width
            for j in 0..<width { sum.block[j] += g[j] }
        }
        sum.flush()
        row = end
    }
    sum.finish(into: biasGradient)
}

/// Totals of many float32 terms whose error does not grow with their number. One float32 running total over N terms
/// errs by up to N·ε relative (a conv layer's bias gradient adds batch × pixels terms: 10⁶ and more); here terms go
/// into a float32 block (vector code, as before), and every `blockTerms` terms the block is added into float64
/// totals: the error stays near `blockTerms`·ε whatever N.
struct BlockedSum {
    static let blockTerms = 64
    let count: Int
    /// Float64 totals first (their alignment), then the float32 block.
    let totals: UnsafeMutablePointer<Double>
    let block: UnsafeMutablePointer<Float>

    static func scratchSize(_ count: Int) -> Int { 3 * count }

    /// Starts at zero.
    init(count: Int, scratch: UnsafeMutablePointer<Float>) {
        self.count = count
        totals = UnsafeMutableRawPointer(scratch).bindMemory(to: Double.self, capacity: count)
        block = UnsafeMutableRawPointer(scratch + 2 * count).bindMemory(to: Float.self, capacity: count)
        totals.update(repeating: 0, count: count)
        block.update(repeating: 0, count: count)
    }

    /// Moves the block into the totals.
    func flush() {
        for j in 0..<count {
            totals[j] += Double(block[j])
            block[j] = 0
        }
    }

    /// destination += the totals (after a last flush).
    func finish(into destination: UnsafeMutablePointer<Float>) {
        flush()
        for j in 0..<count { destination[j] = Float(Double(destination[j]) + totals[j]) }
    }
}
