/// One layer of a model with its place in the flat parameter buffer, and the kernels that compute it.
public struct ModelLayer: Sendable {
    enum Kernel: Sendable {
        case dense(DenseLayer)
        case conv(Conv2DLayer)
        case maxPool(MaxPool2DLayer)
        case upSample(UpSample2DLayer)
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
        }
    }

    public var inputSize: Int { spec.inputSize }
    public var outputSize: Int { spec.outputSize }

    var workspaceSize: Int {
        if case .conv(let conv) = kernel { return conv.workspaceSize }
        return 0
    }

    func forward(input: UnsafePointer<Float>, batch: Int, parameters: UnsafePointer<Float>, preActivation: UnsafeMutablePointer<Float>,
                 output: UnsafeMutablePointer<Float>, workspace: UnsafeMutablePointer<Float>) {
        guard batch > 0 else { return }
        switch kernel {
        case .dense(let layer):
            layer.forward(input: input, batch: batch, parameters: parameters, preActivation: preActivation, output: output)
        case .conv(let layer):
            layer.forward(input: input, batch: batch, parameters: parameters, preActivation: preActivation, output: output,
                          workspace: workspace)
        case .maxPool(let layer):
            layer.forward(input: input, batch: batch, output: output)
            preActivation.update(from: output, count: batch * outputSize)
        case .upSample(let layer):
            layer.forward(input: input, batch: batch, output: output)
            preActivation.update(from: output, count: batch * outputSize)
        }
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
            if let inputGradient { layer.backward(input: input, output: output, batch: batch, outputGradient: dz, inputGradient: inputGradient) }
        case .upSample(let layer):
            if let inputGradient { layer.backward(batch: batch, outputGradient: dz, inputGradient: inputGradient) }
        }
    }

    func initialize(parameters: UnsafeMutablePointer<Float>, seed: UInt64, layerIndex: Int) {
        switch kernel {
        case .dense(let layer): layer.initialize(parameters: parameters, seed: seed, layerIndex: layerIndex)
        case .conv(let layer): layer.initialize(parameters: parameters, seed: seed, layerIndex: layerIndex)
        case .maxPool, .upSample: break
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

    /// Per layer: z (pre-activation) and y = f(z), each maxBatch × outputSize.
    private let preActivations: [FlatBuffer]
    private let outputs: [FlatBuffer]
    /// Two maxBatch × widest buffers that the backward pass ping-pongs between.
    private let gradientScratch: (FlatBuffer, FlatBuffer)
    /// im2col rows for the convolution layers (one chunk of samples at a time).
    private let workspace: FlatBuffer

    /// - Parameter gradientTail: extra floats after the gradients, for values that travel in the same all-reduce.
    public init(architecture: ModelArchitecture, maxBatch: Int, gradientTail: Int = 0) {
        self.architecture = architecture
        self.maxBatch = max(1, maxBatch)
        layout = architecture.parameterLayout
        let layout = self.layout
        let layers = architecture.layers.map { ModelLayer(spec: $0, layout: layout) }
        self.layers = layers
        workspace = FlatBuffer(count: layers.map(\.workspaceSize).max() ?? 1)
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
        var x = input
        for (index, layer) in layers.enumerated() {
            layer.forward(input: x, batch: batch, parameters: parameters.pointer, preActivation: preActivations[index].pointer,
                          output: outputs[index].pointer, workspace: workspace.pointer)
            x = UnsafePointer(outputs[index].pointer)
        }
    }

    /// The last forward pass's output rows (after the output activation) and their pre-activations (logits).
    public var reconstruction: UnsafePointer<Float> { UnsafePointer(outputs.last!.pointer) }
    public var outputLogits: UnsafePointer<Float> { UnsafePointer(preActivations.last!.pointer) }
    /// The code (encoder output) rows of the last forward pass.
    public var code: UnsafePointer<Float> { UnsafePointer(outputs[architecture.encoderDepth - 1].pointer) }

    /// λ·Σ|code| over the last forward pass's `batch` rows: the sparsity penalty's share of the loss sum.
    public func codePenalty(batch: Int) -> Double {
        guard codeL1 > 0 else { return 0 }
        var sum = 0.0
        for i in 0..<(batch * architecture.codeSize) { sum += Double(abs(code[i])) }
        return Double(codeL1) * sum
    }

    /// A buffer the loss writes dL/dz of the output layer into, for `backward`.
    public var outputGradient: UnsafeMutablePointer<Float> { gradientScratch.0.pointer }

    /// Back-propagates `outputGradient` (dL/dz of the last layer, batch rows) and accumulates into `gradients`.
    public func backward(input: UnsafePointer<Float>, batch: Int) {
        var dz = gradientScratch.0.pointer
        var spare = gradientScratch.1.pointer
        for index in layers.indices.reversed() {
            let layer = layers[index]
            let layerInput = index == 0 ? input : UnsafePointer(outputs[index - 1].pointer)
            layer.backward(input: layerInput, output: outputs[index].pointer, batch: batch, preActivationGradient: dz,
                           parameters: parameters.pointer, gradients: gradients.pointer, inputGradient: index == 0 ? nil : spare,
                           workspace: workspace.pointer)
            if index > 0 {
                if index == architecture.encoderDepth && codeL1 > 0 {
                    for i in 0..<(batch * layer.inputSize) where layerInput[i] != 0 { spare[i] += layerInput[i] > 0 ? codeL1 : -codeL1 }
                }
                layers[index - 1].spec.activation.backward(outputs: layerInput, gradient: spare,
                                                           count: batch * layer.inputSize)
                swap(&dz, &spare)
            }
        }
    }
}
