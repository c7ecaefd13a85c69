import Foundation

/// One layer of a model with its place in the flat parameter buffer, and the kernels that compute it.
public struct ModelLayer: Sendable {
    enum Kernel: Sendable {
        case dense(DenseLayer)
        case conv(Conv2DLayer)
        case maxPool(MaxPool2DLayer)
        case upSample(UpSample2DLayer)
        case reshape
    }

    public let spec: LayerSpec
    /// Offsets of the layer's weight and bias in the parameter buffer (-1 for layers without parameters).
    public let weightOffset: Int
    public let biasOffset: Int
    let kernel: Kernel

    init(spec: LayerSpec, layout: ParameterLayout) {
        self.spec = spec
        weightOffset = layout.tensors.first { $0.layer == spec.name && $0.name == "weight" }?.offset ?? -1
        biasOffset = layout.tensors.first { $0.layer == spec.name && $0.name == "bias" }?.offset ?? -1
        switch spec.kind {
        case .dense: kernel = .dense(DenseLayer(spec: spec, weightOffset: weightOffset, biasOffset: biasOffset))
        case .conv: kernel = .conv(Conv2DLayer(spec: spec, weightOffset: weightOffset, biasOffset: biasOffset))
        case .maxPool: kernel = .maxPool(MaxPool2DLayer(spec: spec))
        case .upSample: kernel = .upSample(UpSample2DLayer(spec: spec))
        case .reshape: kernel = .reshape
        }
    }

    public var inputSize: Int { spec.inputSize }
    public var outputSize: Int { spec.outputSize }

    var workspaceSize: Int {
        switch kernel {
        case .conv(let conv): return conv.workspaceSize
        case .maxPool(let pool): return pool.workspaceSize
        default: return 0
        }
    }

    /// Layers without parameters have no pre-activation of their own; theirs is a copy of the output, made only
    /// when `isLast` (the loss reads the last layer's as logits).
    func forward(input: UnsafePointer<Float>, batch: Int, parameters: UnsafePointer<Float>, preActivation: UnsafeMutablePointer<Float>,
                 output: UnsafeMutablePointer<Float>, workspace: UnsafeMutablePointer<Float>, isLast: Bool) {
        guard batch > 0 else { return }
        switch kernel {
        case .dense(let layer):
            layer.forward(input: input, batch: batch, parameters: parameters, preActivation: preActivation, output: output)
        case .conv(let layer):
            layer.forward(input: input, batch: batch, parameters: parameters, preActivation: preActivation, output: output,
                          workspace: workspace)
        case .maxPool(let layer):
            layer.forward(input: input, batch: batch, output: output)
        case .upSample(let layer):
            layer.forward(input: input, batch: batch, output: output)
        case .reshape:
            output.update(from: input, count: batch * outputSize)
        }
        if isLast && weightOffset < 0 { preActivation.update(from: output, count: batch * outputSize) }
    }

    /// From dL/dz of this layer: parameter gradients (+=) and, when asked, dL/d(input) (overwritten).
    func backward(input: UnsafePointer<Float>, output: UnsafePointer<Float>, batch: Int, preActivationGradient dz: UnsafePointer<Float>,
                  parameters: UnsafePointer<Float>, gradients: UnsafeMutablePointer<Float>,
                  inputGradient: UnsafeMutablePointer<Float>?, workspace: UnsafeMutablePointer<Float>) {
        guard batch > 0 else { return }
        switch kernel {
        case .dense(let layer):
            layer.backward(input: input, batch: batch, preActivationGradient: dz, parameters: parameters, gradients: gradients,
                           inputGradient: inputGradient)
        case .conv(let layer):
            layer.backward(input: input, batch: batch, preActivationGradient: dz, parameters: parameters, gradients: gradients,
                           inputGradient: inputGradient, workspace: workspace)
        case .maxPool(let layer):
            if let inputGradient {
                layer.backward(input: input, output: output, batch: batch, outputGradient: dz, inputGradient: inputGradient, workspace: workspace)
            }
        case .upSample(let layer):
            if let inputGradient { layer.backward(batch: batch, outputGradient: dz, inputGradient: inputGradient) }
        case .reshape:
            inputGradient?.update(from: dz, count: batch * inputSize)
        }
    }

    func initialize(parameters: UnsafeMutablePointer<Float>, seed: UInt64, layerIndex: Int) {
        switch kernel {
        case .dense(let layer): layer.initialize(parameters: parameters, seed: seed, layerIndex: layerIndex)
        case .conv(let layer): layer.initialize(parameters: parameters, seed: seed, layerIndex: layerIndex)
        case .maxPool, .upSample, .reshape: break
        }
    }
}

/// An autoencoder replica: a list of layers applied in order, with every parameter in one flat buffer and every
/// gradient in another of the same layout. All activation buffers are sized once for `maxBatch` rows; a larger
/// batch is a programming error, not a reallocation.
public final class Autoencoder {
    public let architecture: ModelArchitecture
    public let layout: ParameterLayout
    public let layers: [ModelLayer]
    public let parameters: FlatBuffer
    public let gradients: FlatBuffer
    public let maxBatch: Int
    /// Weight of the L1 activity penalty on the code (sparse autoencoders); its gradient λ·sign(code) joins the
    /// backward pass where it crosses the code.
    public var codeL1: Float = 0
    /// KL sparsity: per code unit, d(penalty)/d(activation) for each sample, set by the trainer from ρ and ρ̂.
    public var codeSparsityGradient: UnsafeMutablePointer<Float>?

    /// Per layer: z (pre-activation) and y = f(z), each maxBatch × outputSize.
    private let preActivations: [FlatBuffer]
    private let outputs: [FlatBuffer]
    /// Two maxBatch × widest buffers that the backward pass ping-pongs between.
    private let gradientScratch: (FlatBuffer, FlatBuffer)
    /// im2col rows for the convolution layers (one chunk of samples at a time).
    private let workspace: FlatBuffer
    /// Variational models: the sampled code z = μ + σ·ε the decoder starts from, and the ε the caller provides
    /// (`sampleCode` false: z = μ, for encoding and reconstruction).
    private let sampledCode: FlatBuffer
    public let epsilon: FlatBuffer
    public var sampleCode = true
    /// β / (values per sample): the weight of KL in the per-sample loss, whose reconstruction part is a mean.
    public var klWeight: Float = 0

    /// - Parameter gradientTail: extra floats after the gradients, for values that travel in the same all-reduce.
    public init(architecture: ModelArchitecture, maxBatch: Int, gradientTail: Int = 0) {
        self.architecture = architecture
        self.maxBatch = max(1, maxBatch)
        layout = architecture.parameterLayout
        let layout = self.layout
        let layers = architecture.layers.map { ModelLayer(spec: $0, layout: layout) }
        self.layers = layers
        workspace = FlatBuffer(count: layers.map(\.workspaceSize).max() ?? 1)
        sampledCode = FlatBuffer(count: architecture.variational ? architecture.codeSize * max(1, maxBatch) : 1)
        epsilon = FlatBuffer(count: architecture.variational ? architecture.codeSize * max(1, maxBatch) : 1)
        parameters = FlatBuffer(count: layout.totalCount)
        gradients = FlatBuffer(count: layout.totalCount + gradientTail)
        preActivations = layers.map { FlatBuffer(count: $0.outputSize * max(1, maxBatch)) }
        outputs = layers.map { FlatBuffer(count: $0.outputSize * max(1, maxBatch)) }
        let widest = layers.map { max($0.inputSize, $0.outputSize) }.max() ?? 1
        gradientScratch = (FlatBuffer(count: widest * max(1, maxBatch)), FlatBuffer(count: widest * max(1, maxBatch)))
    }

    public var inputSize: Int { architecture.inputSize }

    public func initializeParameters(seed: UInt64) {
        for (index, layer) in layers.enumerated() {
            layer.initialize(parameters: parameters.pointer, seed: seed, layerIndex: index)
        }
    }

    public func forward(input: UnsafePointer<Float>, batch: Int) {
        precondition(batch <= maxBatch, "batch of \(batch) rows exceeds the \(maxBatch) the model was sized for")
        run(layers.indices, input: input, batch: batch)
    }

    /// The decoder alone, from `batch` codes (e.g. samples of N(0, I) for a variational model).
    public func decode(code: UnsafePointer<Float>, batch: Int) {
        precondition(batch <= maxBatch, "batch of \(batch) rows exceeds the \(maxBatch) the model was sized for")
        run(architecture.encoderDepth..<layers.count, input: code, batch: batch)
    }

    private func run(_ range: Range<Int>, input: UnsafePointer<Float>, batch: Int) {
        var x = input
        for index in range {
            if index == architecture.encoderDepth && architecture.variational && index != range.lowerBound {
                sample(batch: batch)
                x = UnsafePointer(sampledCode.pointer)
            }
            layers[index].forward(input: x, batch: batch, parameters: parameters.pointer, preActivation: preActivations[index].pointer,
                                  output: outputs[index].pointer, workspace: workspace.pointer, isLast: index == layers.count - 1)
            x = UnsafePointer(outputs[index].pointer)
        }
    }

    /// Where each code value's μ and log σ² sit in the encoder's output: the last axis holds μ then log σ².
    @inline(__always)
    private func codeIndices(_ i: Int) -> (mean: Int, logVariance: Int) {
        let channels = architecture.codeShape.last!
        let position = i / channels, channel = i % channels
        return (position * 2 * channels + channel, position * 2 * channels + channels + channel)
    }

    /// z = μ + exp(½ log σ²)·ε (or μ when not sampling).
    private func sample(batch: Int) {
        let encoded = outputs[architecture.encoderDepth - 1].pointer, codeSize = architecture.codeSize
        for row in 0..<batch {
            let y = encoded + row * 2 * codeSize, z = sampledCode.pointer + row * codeSize, e = epsilon.pointer + row * codeSize
            for i in 0..<codeSize {
                let (m, v) = codeIndices(i)
                z[i] = sampleCode ? y[m] + exp(0.5 * y[v]) * e[i] : y[m]
            }
        }
    }

    /// Σ over the batch of KL(N(μ, σ²) ‖ N(0, I)) = −½ Σ (1 + log σ² − μ² − σ²), from the last forward pass.
    public func klDivergence(batch: Int) -> Double {
        guard architecture.variational else { return 0 }
        let encoded = outputs[architecture.encoderDepth - 1].pointer, codeSize = architecture.codeSize
        var sum = 0.0
        for row in 0..<batch {
            let y = encoded + row * 2 * codeSize
            for i in 0..<codeSize {
                let (m, v) = codeIndices(i)
                let mean = Double(y[m]), logVariance = Double(y[v])
                sum += -0.5 * (1 + logVariance - mean * mean - Foundation.exp(logVariance))
            }
        }
        return sum
    }

    /// The last forward pass's output rows (after the output activation) and their pre-activations (logits).
    public var reconstruction: UnsafePointer<Float> { UnsafePointer(outputs.last!.pointer) }
    public var outputLogits: UnsafePointer<Float> { UnsafePointer(preActivations.last!.pointer) }
    /// The code rows of the last forward pass (for a variational model: the sampled z, or μ when not sampling).
    public var code: UnsafePointer<Float> {
        UnsafePointer(architecture.variational ? sampledCode.pointer : outputs[architecture.encoderDepth - 1].pointer)
    }

    /// λ·Σ|code| over the last forward pass's `batch` rows: the sparsity penalty's share of the loss sum.
    public func codePenalty(batch: Int) -> Double {
        guard codeL1 > 0 else { return 0 }
        var sum = 0.0
        for i in 0..<(batch * architecture.codeSize) { sum += Double(abs(code[i])) }
        return Double(codeL1) * sum
    }

    /// dμ = dz + w·μ and d(log σ²) = dz·½σε + w·½(σ² − 1), with w the KL weight.
    private func reparameterizationBackward(codeGradient: UnsafePointer<Float>, into encoderGradient: UnsafeMutablePointer<Float>,
                                            batch: Int) {
        let encoded = outputs[architecture.encoderDepth - 1].pointer, codeSize = architecture.codeSize
        for row in 0..<batch {
            let y = encoded + row * 2 * codeSize, g = encoderGradient + row * 2 * codeSize
            let dz = codeGradient + row * codeSize, e = epsilon.pointer + row * codeSize
            for i in 0..<codeSize {
                let (m, v) = codeIndices(i)
                let sigma = exp(0.5 * y[v])
                g[m] = dz[i] + klWeight * y[m]
                g[v] = (sampleCode ? dz[i] * 0.5 * sigma * e[i] : 0) + klWeight * 0.5 * (sigma * sigma - 1)
            }
        }
    }

    /// A buffer the loss writes dL/dz of the output layer into, for `backward`.
    public var outputGradient: UnsafeMutablePointer<Float> { gradientScratch.0.pointer }

    /// Back-propagates `outputGradient` (dL/dz of the last layer, batch rows) and accumulates into `gradients`.
    public func backward(input: UnsafePointer<Float>, batch: Int) {
        var dz = gradientScratch.0.pointer
        var spare = gradientScratch.1.pointer
        for index in layers.indices.reversed() {
            let layer = layers[index]
            let startsFromSample = architecture.variational && index == architecture.encoderDepth
            let layerInput = index == 0 ? input : UnsafePointer(startsFromSample ? sampledCode.pointer : outputs[index - 1].pointer)
            layer.backward(input: layerInput, output: outputs[index].pointer, batch: batch, preActivationGradient: dz,
                           parameters: parameters.pointer, gradients: gradients.pointer, inputGradient: index == 0 ? nil : spare,
                           workspace: workspace.pointer)
            if startsFromSample {
                // Through z = μ + σ·ε and the KL term to the encoder's (linear) μ and log σ² outputs, into dz's buffer.
                reparameterizationBackward(codeGradient: spare, into: dz, batch: batch)
                continue
            }
            if index > 0 {
                if index == architecture.encoderDepth && codeL1 > 0 {
                    for i in 0..<(batch * layer.inputSize) where layerInput[i] != 0 { spare[i] += layerInput[i] > 0 ? codeL1 : -codeL1 }
                }
                if index == architecture.encoderDepth, let unitGradient = codeSparsityGradient {
                    let units = layer.inputSize
                    for row in 0..<batch { for j in 0..<units { spare[row * units + j] += unitGradient[j] } }
                }
                layers[index - 1].spec.activation.backward(outputs: layerInput, gradient: spare,
                                                           count: batch * layer.inputSize)
                swap(&dz, &spare)
            }
        }
    }
}
