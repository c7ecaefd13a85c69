/// The resolved shape of an autoencoder: the layer list a model spec stands for. A spec is parsed once, here.
public struct ModelArchitecture: Sendable {
    public var layers: [any Layer]
    /// How many of `layers` make the encoder; the rest decode.
    public var encoderDepth: Int

    /// The encoder's last layer gives μ and log σ² (the last axis holds both, μ first), and the decoder starts from a
    /// sample of the code.
    public var variational = false

    /// The kinds a `conv:` spec's tokens can name, each parsing its own tokens. A new kind adds itself here.
    static let specLayerKinds: [any Layer.Type] = [Conv2D.self, ConvTranspose2D.self, MaxPool2D.self, UpSample2D.self, Dropout.self,
                                                   BatchNorm.self, Dense.self, Reshape.self]
    static let tokenHelp = "cF = conv, tF = transposed conv, pN = max-pool, uN = upsample, bn = batch normalisation, dropR = dropout, f = flatten, dN = dense, rHxWxC = reshape"

    public var inputSize: Int { layers.first!.inputSize }
    public var inputShape: [Int] { layers.first!.inputShape }
    /// Values of the code the decoder starts from (half the encoder's output when variational).
    public var codeSize: Int { layers[encoderDepth].inputSize }
    public var codeShape: [Int] { layers[encoderDepth].inputShape }
    /// The last layer with parameters: its activation is the model's output activation, and only layers that pass
    /// values through unchanged (reshape, flatten, pooling, upsampling) may follow it.
    public private(set) var outputLayerIndex = 0
    public var outputActivation: Activation { layers[outputLayerIndex].activation }
    /// The layer whose output is the code (for a variational model: μ and log σ²).
    public var codeLayer: any Layer { layers[encoderDepth - 1] }

    static let examples = "e.g. dense:784-128-64, dense:784-256:tanh-32:linear, or conv:28x28x1/c32-p2-c32-p2/c32-u2-c32-u2-c1"

    public init(_ config: ModelConfig) throws {
        let spec = config.spec
        func fail(_ why: String) -> ConfigError {
            ConfigError("invalid --model '\(spec)': \(why); expected \(Self.examples)")
        }
        do {
            if spec.hasPrefix("dense:") {
                (layers, encoderDepth) = try Self.parseDense(spec.dropFirst("dense:".count), config: config)
            } else if spec.hasPrefix("conv:") {
                (layers, encoderDepth) = try Self.parseConv(spec.dropFirst("conv:".count), config: config)
            } else {
                let kind = spec.split(separator: ":").first.map(String.init) ?? spec
                throw SpecProblem("unknown model kind '\(kind)' (available: dense, conv)")
            }
            if config.variational {
                guard let doubled = layers[encoderDepth - 1].doublingOutputs() else {
                    throw SpecProblem("a variational encoder must end in a dense or conv layer")
                }
                layers[encoderDepth - 1] = doubled
                variational = true
            }
            try Self.checkSizes(layers)
            guard let output = layers.lastIndex(where: \.hasParameters) else { throw SpecProblem("no layer has parameters") }
            if let after = layers[(output + 1)...].first(where: { !$0.passesValuesThrough }) {
                throw SpecProblem("\(after.name) (\(after.description)) comes after the output layer \(layers[output].name); only reshape, flatten, pooling and upsampling may follow it")
            }
            outputLayerIndex = output
        } catch let problem as SpecProblem {
            throw fail(problem.reason)
        }
    }

    /// The first kind that recognises `token` parses it (each kind checks its own prefix, in list order), with
    /// the activation the token gives, else the default if that kind takes one.
    static func parseLayer(_ token: Substring, name: String, inputShape: [Int], explicit: Activation?,
                           default defaultActivation: Activation) throws -> (any Layer)? {
        for kind in specLayerKinds {
            let activation = explicit ?? (kind.takesDefaultActivation ? defaultActivation : .linear)
            if let layer = try kind.parse(token, name: name, inputShape: inputShape, activation: activation) { return layer }
        }
        return nil
    }

    static func activation(_ name: Substring) throws -> Activation {
        guard let activation = Activation(rawValue: String(name)) else {
            throw SpecProblem("unknown activation '\(name)' (available: \(Activation.allCases.map(\.rawValue).joined(separator: ", ")))")
        }
        return activation
    }

    /// "784-128-64": encoder widths from the input to the code, the decoder mirrored; or with an explicit decoder
    /// after a '/': "784-256-32/64-784" (the decoder's widths after the code, ending at the input's). Between widths,
    /// layers without a width of their own ("drop0.2") act on the width before them; a mirrored decoder repeats
    /// those of the hidden widths after the same widths.
    private static func parseDense(_ spec: Substring, config: ModelConfig) throws -> ([any Layer], Int) {
        typealias Width = (width: Int, activation: Activation?, after: [Substring])
        func widths(_ part: Substring) throws -> [Width] {
            var result: [Width] = []
            for token in part.split(separator: "-", omittingEmptySubsequences: false) {
                if let first = token.first, !first.isNumber, !result.isEmpty {
                    result[result.count - 1].after.append(token)
                    continue
                }
                let parts = token.split(separator: ":", omittingEmptySubsequences: false)
                guard parts.count <= 2, let width = Int(parts[0]), width > 0, width <= maxValuesPerSample else {
                    throw SpecProblem("'\(token)' is not a positive width (at most \(maxValuesPerSample)) or a layer such as drop0.2")
                }
                result.append((width, parts.count == 2 ? try activation(parts[1]) : nil, []))
            }
            return result
        }
        let halves = spec.split(separator: "/", omittingEmptySubsequences: false)
        guard halves.count <= 2 else { throw SpecProblem("at most one '/' (between the encoder's and the decoder's widths)") }
        let encoder = try widths(halves[0])
        guard encoder.count >= 2 else { throw SpecProblem("needs at least an input width and a code width") }
        guard encoder[0].activation == nil else {
            throw SpecProblem("the input width takes no activation (activations belong to the layers after it)")
        }
        var layers: [any Layer] = []
        var part = "encoder", index = 0
        func append(_ layer: any Layer) {
            layers.append(layer)
            index += 1
        }
        func appendTokens(_ tokens: [Substring], width: Int) throws {
            for token in tokens {
                let name = "\(part).\(index)"
                let pieces = token.split(separator: ":", maxSplits: 1)
                let explicit = pieces.count == 2 ? try activation(pieces[1]) : nil
                guard let body = pieces.first,
                      let layer = try parseLayer(body, name: name, inputShape: [width], explicit: explicit, default: .linear),
                      !(layer is Dense), layer.outputShape == [width] else {
                    throw SpecProblem("'\(token)' is not a layer that acts on a width, such as bn or drop0.2")
                }
                if !layer.hasParameters && explicit != nil { throw SpecProblem("'\(token)': dropout takes no activation") }
                append(layer)
            }
        }
        try appendTokens(encoder[0].after, width: encoder[0].width)
        for i in 1..<encoder.count {
            append(Dense(name: "encoder.\(index)", inputs: encoder[i - 1].width, outputs: encoder[i].width,
                         activation: encoder[i].activation ?? config.activation))
            try appendTokens(encoder[i].after, width: encoder[i].width)
        }
        let encoderDepth = layers.count
        // Without a '/', the decoder mirrors the encoder; its hidden layers take the activation (and the layers
        // after them) of the encoder width they mirror.
        let decoder: [Width] = halves.count == 2 ? try widths(halves[1])
            : encoder.reversed().dropFirst().map { ($0.width, $0.activation, $0.after) }
        part = "decoder"
        index = 0
        var previous = encoder.last!.width
        for (position, layer) in decoder.enumerated() {
            let isOutput = position == decoder.count - 1
            let chosen = isOutput && halves.count == 1 ? config.outputActivation
                : layer.activation ?? (isOutput ? config.outputActivation : config.activation)
            append(Dense(name: "decoder.\(index)", inputs: previous, outputs: layer.width, activation: chosen))
            if isOutput && halves.count == 2, let extra = layer.after.first {
                throw SpecProblem("'\(extra)' comes after the output layer; the decoder must end in its output width")
            }
            if !isOutput { try appendTokens(layer.after, width: layer.width) }
            previous = layer.width
        }
        guard previous == encoder[0].width else {
            throw SpecProblem("the decoder ends at \(previous) values, not at the input's \(encoder[0].width)")
        }
        return (layers, encoderDepth)
    }

    /// "28x28x1/c32-p2-c32-p2/c32-u2-c32-u2-c1": input H×W×C, then the encoder's and the decoder's layers, each
    /// token parsed by its kind; ":act" after a layer sets its activation. The last layer takes the output activation.
    private static func parseConv(_ spec: Substring, config: ModelConfig) throws -> ([any Layer], Int) {
        let sections = spec.split(separator: "/", omittingEmptySubsequences: false)
        guard sections.count == 3 else { throw SpecProblem("needs three parts separated by '/': input shape, encoder layers, decoder layers") }
        let dimensions = sections[0].split(separator: "x").compactMap { Int($0) }
        guard dimensions.count == 3, dimensions.allSatisfy({ $0 > 0 && $0 <= 1 << 20 }),
              dimensions.reduce(1, { $0.multipliedReportingOverflow(by: $1).overflow ? Int.max : $0 * $1 }) <= maxValuesPerSample else {
            throw SpecProblem("'\(sections[0])' is not an input shape H×W×C such as 28x28x1")
        }
        var shape = dimensions
        var layers: [any Layer] = []
        var encoderDepth = 0
        // Per layer, its token and whether it wrote its activation: the output layer takes the default output
        // activation even when reshaping, pooling or upsampling layers follow it.
        var parsed: [(body: Substring, explicit: Bool)] = []
        let encoderTokens = sections[1].split(separator: "-"), decoderTokens = sections[2].split(separator: "-")
        guard !encoderTokens.isEmpty, !decoderTokens.isEmpty else { throw SpecProblem("the encoder and the decoder need at least one layer each") }
        for (part, tokens) in [("encoder", encoderTokens), ("decoder", decoderTokens)] {
            for (index, token) in tokens.enumerated() {
                let pieces = token.split(separator: ":", maxSplits: 1)
                guard let body = pieces.first else { throw SpecProblem("empty layer '\(token)'") }
                let isLast = part == "decoder" && index == tokens.count - 1
                let explicit = pieces.count == 2 ? try activation(pieces[1]) : nil
                let name = "\(part).\(index)"
                guard let layer = try parseLayer(body, name: name, inputShape: shape, explicit: explicit,
                                                 default: isLast ? config.outputActivation : config.activation) else {
                    throw SpecProblem("unknown layer '\(token)' (\(tokenHelp))")
                }
                if !layer.hasParameters && pieces.count == 2 {
                    throw SpecProblem("'\(token)': pooling, upsampling, dropout and reshaping take no activation")
                }
                parsed.append((body, explicit != nil))
                // Checked at once: the next token's kind computes with this output shape.
                try checkOutputSize(layer)
                layers.append(layer)
                shape = layer.outputShape
            }
            if part == "encoder" { encoderDepth = layers.count }
        }
        guard shape == dimensions else {
            throw SpecProblem("the decoder ends at \(shape.map(String.init).joined(separator: "×")), not at the input's \(dimensions.map(String.init).joined(separator: "×"))")
        }
        if let output = layers.lastIndex(where: \.hasParameters), output != layers.count - 1, !parsed[output].explicit, output >= encoderDepth,
           let layer = try parseLayer(parsed[output].body, name: layers[output].name, inputShape: layers[output].inputShape,
                                      explicit: nil, default: config.outputActivation) {
            layers[output] = layer
        }
        return (layers, encoderDepth)
    }

    private static func checkOutputSize(_ layer: any Layer) throws {
        let output = layer.outputShape
        // Images are bounded per side too, so that the kinds' index arithmetic cannot overflow.
        guard output.allSatisfy({ $0 > 0 && (output.count == 1 || $0 <= 1 << 20) }),
              output.reduce(1, { $0.multipliedReportingOverflow(by: $1).overflow ? Int.max : $0 * $1 }) <= maxValuesPerSample else {
            throw SpecProblem("\(layer.name) makes \(output.map(String.init).joined(separator: "×")) values per sample, more than aedist's limit of \(maxValuesPerSample)")
        }
    }

    /// A spec may come from an untrusted file: refuse absurd sizes before anything is allocated.
    private static func checkSizes(_ layers: [any Layer]) throws {
        var total = 0
        let tooMany = SpecProblem("more than \(maxParameters) parameters (\((maxParameters * 4) >> 30) GiB), aedist's limit")
        for layer in layers {
            try checkOutputSize(layer)
            for (_, shape) in layer.parameterShapes {
                var count = 1
                for dimension in shape {
                    let (product, overflow) = count.multipliedReportingOverflow(by: dimension)
                    guard !overflow else { throw tooMany }
                    count = product
                }
                guard total <= maxParameters - count else { throw tooMany }
                total += count
            }
        }
    }

    /// 2³² float32 parameters (16 GiB), far beyond any autoencoder but small enough to fail before allocating.
    public static let maxParameters = 1 << 32
    /// Values one sample may have at any layer (2²⁸: a 16k × 16k × 1 image).
    public static let maxValuesPerSample = 1 << 28

    /// Every parameter tensor in buffer order: the layout that checkpoints store and ranks compare.
    public var parameterLayout: ParameterLayout { layout { $0.parameterShapes } }

    /// Every buffer tensor (state kept but not trained, such as running statistics) in buffer order.
    public var bufferLayout: ParameterLayout { layout { $0.bufferShapes } }

    /// The tensors `shapes` names for each layer, back to back in layer order.
    private func layout(_ shapes: (any Layer) -> [(name: String, shape: [Int])]) -> ParameterLayout {
        var tensors: [ParameterLayout.Tensor] = []
        var offset = 0
        for layer in layers {
            for (name, shape) in shapes(layer) {
                tensors.append(.init(layer: layer.name, name: name, shape: shape, offset: offset))
                offset += shape.reduce(1, *)
            }
        }
        return ParameterLayout(tensors: tensors)
    }

    /// Why samples of `shape` do not fit this model's input, or nil when they do. Dense models take any shape with
    /// the right number of values (flattened); image models need the image shape itself ([H, W] for one channel).
    public func mismatch(sampleShape shape: [Int]) -> String? {
        let count = shape.reduce(1, *)
        if inputShape.count == 1 {
            return count == inputSize ? nil : "\(count) values, but the model takes \(inputSize) inputs"
        }
        if shape == inputShape || (shape.count == 2 && shape + [1] == inputShape) { return nil }
        let described = shape.map(String.init).joined(separator: "×"), expected = inputShape.map(String.init).joined(separator: "×")
        if shape.count == 3 && [shape[1], shape[2], shape[0]] == inputShape {
            return "shape \(described), but the model takes \(expected) images; for channels-first (N×C×H×W) data pass --channels-first"
        }
        return "shape \(described), but the model takes \(expected) images"
    }

    public var description: String { layers.map(\.description).joined(separator: ", ") }
}

/// Names, shapes and offsets of the tensors inside the flat parameter buffer.
public struct ParameterLayout: Equatable, Sendable {
    public struct Tensor: Equatable, Sendable {
        public var layer: String
        public var name: String
        public var shape: [Int]
        public var offset: Int
        public var count: Int { shape.reduce(1, *) }
        /// "encoder.0/weight": the tensor's path below a checkpoint's parameter group.
        public var path: String { "\(layer)/\(name)" }
    }

    public var tensors: [Tensor]
    public init(tensors: [Tensor]) { self.tensors = tensors }
    public var totalCount: Int { tensors.last.map { $0.offset + $0.count } ?? 0 }

    /// Identifies the layout (names, shapes, order) so ranks and checkpoints can tell they speak of the same model.
    public var hash: String {
        let hash = FNV1a(tensors.map { "\($0.path):\($0.shape.map(String.init).joined(separator: "x"))" }.joined(separator: ";"))
        return String(hash.value, radix: 16).leftPadded(to: 16)
    }
}

extension String {
    func leftPadded(to width: Int) -> String { String(repeating: "0", count: max(0, width - count)) + self }
}
