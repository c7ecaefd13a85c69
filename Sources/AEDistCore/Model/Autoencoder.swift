import Foundation

/// An autoencoder replica: a list of layers applied in order, with every parameter in one flat buffer and every
/// gradient in another of the same layout. All activation buffers are sized once for `maxBatch` rows; a larger
/// batch is a programming error, not a reallocation.
public final class Autoencoder {
    public let architecture: ModelArchitecture
    public let layout: ParameterLayout
    public var layers: [any Layer] { architecture.layers }
    /// Where each layer's block (weight, then bias) starts in the parameter and gradient buffers.
    public let parameterOffsets: [Int]
    /// Per layer, whether it has parameters and whether it spans the batch (asked once: a kind builds its shape
    /// lists on each call).
    private let layerHasParameters: [Bool]
    private let layerSpansBatch: [Bool]
    /// Per layer, its bias when it feeds a BatchNorm linearly: held at zero (its gradient left out), as PyTorch's
    /// examples set bias=False there. BatchNorm subtracts the mean, so such a bias changes nothing and its
    /// gradient is float rounding alone, which Adam would amplify into a drift that differs with the rank count.
    private let biasHeldAtZero: [Range<Int>?]
    public let parameters: FlatBuffer
    public let gradients: FlatBuffer
    /// State kept with the model but not trained (BatchNorm's running statistics), in its own layout.
    public let bufferLayout: ParameterLayout
    public let buffers: FlatBuffer
    private let bufferOffsets: [Int]
    /// Per layer, what it keeps from forward to backward.
    private let states: [FlatBuffer]
    public let maxBatch: Int
    /// Rows the layers take at a time (all of a batch unless `microBatch` was given): deterministic mode computes
    /// each fixed micro-batch with the same shapes whatever the number of ranks.
    public let microBatch: Int
    /// Sparse autoencoders: the penalties on the code (L1 activity, KL sparsity), whose gradients join the backward
    /// pass where it crosses the code.
    public var codePenalty = CodePenalty()

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

    /// - Parameter gradients: where the gradients accumulate (a view into the step's all-reduce message, say);
    ///   a buffer of its own when nil.
    public init(architecture: ModelArchitecture, maxBatch: Int, gradients: FlatBuffer? = nil, microBatch: Int? = nil) {
        self.architecture = architecture
        self.maxBatch = max(1, maxBatch)
        let layout = architecture.parameterLayout
        self.layout = layout
        var offsets: [Int] = [], offset = 0
        for layer in architecture.layers {
            offsets.append(offset)
            offset += layer.parameterCount
        }
        parameterOffsets = offsets
        layerHasParameters = architecture.layers.map(\.hasParameters)
        layerSpansBatch = architecture.layers.map(\.spansTheBatch)
        biasHeldAtZero = architecture.layers.indices.map { index in
            let layers = architecture.layers
            // Not the code layer of a variational model: its output is sampled (and enters the KL term) first.
            guard index + 1 < layers.count, layers[index + 1].spansTheBatch, layers[index].activation == .linear,
                  !(architecture.variational && index == architecture.encoderDepth - 1),
                  let bias = layout.tensors.first(where: { $0.layer == layers[index].name && $0.name == "bias" }) else { return nil }
            return bias.offset..<(bias.offset + bias.count)
        }
        let layers = architecture.layers
        precondition((gradients?.count ?? layout.totalCount) == layout.totalCount, "the gradient buffer must match the parameters")
        self.microBatch = microBatch ?? Int.max
        let chunks = microBatch.map { (max(1, maxBatch) + $0 - 1) / $0 } ?? 1
        // A layer that spans the batch needs its scratch once per micro-batch, and once more for the totals.
        workspace = FlatBuffer(count: layers.map { $0.spansTheBatch ? $0.workspaceSize * (chunks + 1) : $0.workspaceSize }.max() ?? 1)
        bufferLayout = architecture.bufferLayout
        var bufferStarts: [Int] = [], bufferOffset = 0
        for layer in layers {
            bufferStarts.append(bufferOffset)
            bufferOffset += layer.bufferCount
        }
        bufferOffsets = bufferStarts
        buffers = FlatBuffer(count: bufferOffset)
        states = layers.map { FlatBuffer(count: $0.stateSize) }
        sampledCode = FlatBuffer(count: architecture.variational ? architecture.codeSize * max(1, maxBatch) : 1)
        epsilon = FlatBuffer(count: architecture.variational ? architecture.codeSize * max(1, maxBatch) : 1)
        parameters = FlatBuffer(count: layout.totalCount)
        self.gradients = gradients ?? FlatBuffer(count: layout.totalCount)
        preActivations = layers.map { FlatBuffer(count: $0.outputSize * max(1, maxBatch)) }
        outputs = layers.map { FlatBuffer(count: $0.outputSize * max(1, maxBatch)) }
        let widest = layers.map { max($0.inputSize, $0.outputSize) }.max() ?? 1
        gradientScratch = (FlatBuffer(count: widest * max(1, maxBatch)), FlatBuffer(count: widest * max(1, maxBatch)))
    }

    public var inputSize: Int { architecture.inputSize }

    /// Parameters from the seed, and the buffers' starting values (running statistics 0 and 1).
    public func initializeParameters(seed: UInt64) {
        for (index, layer) in layers.enumerated() {
            layer.initialize(parameters: parameters.pointer + parameterOffsets[index], seed: seed, layerIndex: index)
            layer.initializeBuffers(buffers.pointer + bufferOffsets[index])
        }
    }

    /// The context a layer runs in: its buffers and state, the micro-batch size.
    private func context(_ context: PassContext, layer index: Int) -> PassContext {
        var context = context
        context.layerIndex = index
        context.buffers = buffers.pointer + bufferOffsets[index]
        context.state = states[index].pointer
        context.microBatch = microBatch
        return context
    }

    /// The whole model on `batch` rows; `context` says whether it trains (dropout) and how rows are keyed.
    public func forward(input: UnsafePointer<Float>, batch: Int, context: PassContext = .inference) {
        precondition(batch <= maxBatch, "batch of \(batch) rows exceeds the \(maxBatch) the model was sized for")
        run(layers.indices, input: input, batch: batch, context: context)
    }

    /// The decoder alone, from `batch` codes (e.g. samples of N(0, I) for a variational model).
    public func decode(code: UnsafePointer<Float>, batch: Int) {
        precondition(batch <= maxBatch, "batch of \(batch) rows exceeds the \(maxBatch) the model was sized for")
        run(architecture.encoderDepth..<layers.count, input: code, batch: batch, context: .inference)
    }

    private func run(_ range: Range<Int>, input: UnsafePointer<Float>, batch: Int, context: PassContext) {
        var x = input
        for index in range {
            if index == architecture.encoderDepth && architecture.variational && index != range.lowerBound {
                sample(batch: batch)
                x = UnsafePointer(sampledCode.pointer)
            }
            let layer = layers[index], output = outputs[index].pointer, preActivation = preActivations[index].pointer
            let layerContext = self.context(context, layer: index), weights = parameters.pointer + parameterOffsets[index]
            if layerSpansBatch[index] {
                // Also with no rows: its statistics are a collective every rank joins.
                layer.forward(input: x, batch: batch, parameters: weights, preActivation: preActivation, output: output,
                              workspace: workspace.pointer, context: layerContext)
            } else {
                let (inputSize, outputSize) = (layer.inputSize, layer.outputSize)
                for start in stride(from: 0, to: batch, by: microBatch) {
                    layer.forward(input: x + start * inputSize, batch: min(microBatch, batch - start), parameters: weights,
                                  preActivation: preActivation + start * outputSize, output: output + start * outputSize,
                                  workspace: workspace.pointer, context: layerContext.skipping(start))
                }
            }
            // After the output layer (reshape, pooling, upsampling): the loss reads the last layer's pre-activations
            // as the output's logits, so these layers move the output layer's logits the same way.
            if index > architecture.outputLayerIndex {
                let logits = UnsafePointer(preActivations[index - 1].pointer), (inputSize, outputSize) = (layer.inputSize, layer.outputSize)
                for start in stride(from: 0, to: batch, by: microBatch) {
                    layer.forward(input: logits + start * inputSize, batch: min(microBatch, batch - start), parameters: weights,
                                  preActivation: preActivation + start * outputSize, output: preActivation + start * outputSize,
                                  workspace: workspace.pointer, context: layerContext.skipping(start))
                }
            }
            x = UnsafePointer(output)
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

    /// The code penalties' share of the loss sum over the last forward pass's `batch` rows.
    public func codePenaltySum(batch: Int) -> Double {
        codePenalty.sum(code: code, batch: batch, codeSize: architecture.codeSize)
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

    /// Back-propagates `outputGradient` (dL/dz of the last layer, batch rows) and accumulates into `gradients`, or,
    /// given `gradientSlots`, micro-batch m's gradients into slot m (`stride` floats apart) for an exact sum.
    /// `context` is the forward pass's.
    public func backward(input: UnsafePointer<Float>, batch: Int, context: PassContext = .inference,
                         gradientSlots: (base: UnsafeMutablePointer<Float>, stride: Int)? = nil) {
        let slots = gradientSlots ?? (gradients.pointer, 0)
        var dz = gradientScratch.0.pointer
        var spare = gradientScratch.1.pointer
        for index in layers.indices.reversed() {
            let layer = layers[index]
            let startsFromSample = architecture.variational && index == architecture.encoderDepth
            let layerInput = index == 0 ? input : UnsafePointer(startsFromSample ? sampledCode.pointer : outputs[index - 1].pointer)
            // After the output layer the gradient is one of the logits: a pooling layer routes it by the logits' maxima.
            let trailing = index > architecture.outputLayerIndex
            let kernelInput = trailing ? UnsafePointer(preActivations[index - 1].pointer) : layerInput
            var layerContext = self.context(context, layer: index)
            layerContext.gradientSlotStride = slots.stride
            let weights = parameters.pointer + parameterOffsets[index], inputGradient = index == 0 ? nil : spare
            let preActivation = preActivations[index].pointer, output = trailing ? preActivations[index].pointer : outputs[index].pointer
            if layerSpansBatch[index] {
                layer.backward(input: kernelInput, preActivation: preActivation, output: output, batch: batch, outputGradient: dz,
                               parameters: weights, gradients: slots.base + parameterOffsets[index], inputGradient: inputGradient,
                               workspace: workspace.pointer, context: layerContext)
            } else {
                let (inputSize, outputSize) = (layer.inputSize, layer.outputSize)
                for (chunk, start) in stride(from: 0, to: batch, by: microBatch).enumerated() {
                    layer.backward(input: kernelInput + start * inputSize, preActivation: preActivation + start * outputSize,
                                   output: output + start * outputSize, batch: min(microBatch, batch - start),
                                   outputGradient: dz + start * outputSize, parameters: weights,
                                   gradients: slots.base + chunk * slots.stride + parameterOffsets[index],
                                   inputGradient: inputGradient.map { $0 + start * inputSize }, workspace: workspace.pointer,
                                   context: layerContext.skipping(start))
                    // A code penalty's gradient joins the code layer's, so its bias matters then.
                    let penalised = index == architecture.encoderDepth - 1 && (codePenalty.l1 > 0 || codePenalty.sparsity != nil)
                    if let bias = biasHeldAtZero[index], !penalised {
                        (slots.base + chunk * slots.stride + bias.lowerBound).update(repeating: 0, count: bias.count)
                    }
                }
            }
            if startsFromSample {
                // Through z = μ + σ·ε and the KL term to the encoder's (linear) μ and log σ² outputs, into dz's buffer.
                reparameterizationBackward(codeGradient: spare, into: dz, batch: batch)
                continue
            }
            if index > 0 {
                if index == architecture.encoderDepth {
                    codePenalty.addGradient(code: layerInput, into: spare, batch: batch, codeSize: layer.inputSize)
                }
                // The loss's gradient is already one of the output layer's logits, also through the layers after it.
                if index - 1 != architecture.outputLayerIndex {
                    layers[index - 1].activation.backward(preActivations: preActivations[index - 1].pointer, outputs: layerInput,
                                                          gradient: spare, count: batch * layer.inputSize)
                }
                swap(&dz, &spare)
            }
        }
    }
}
