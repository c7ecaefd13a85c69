/// One layer of a model: what it computes and the per-sample shapes it maps between ([D], or [H, W, C] for images).
public struct LayerSpec: Equatable, Sendable {
    public enum Kind: Equatable, Sendable {
        case dense
        /// k×k convolution with `filters` outputs, NHWC; "same" padding keeps H×W at stride 1 (as Keras).
        case conv(filters: Int, kernel: Int, stride: Int, samePadding: Bool)
        /// Max over non-overlapping size×size windows ("valid": a ragged edge is dropped, as Keras).
        case maxPool(size: Int)
        /// Nearest-neighbour upsampling by `factor` in height and width.
        case upSample(factor: Int)
        /// Flatten or reshape: the same values in the same (row-major, channels-last) order, another shape.
        case reshape
    }

    public var name: String
    public var kind: Kind
    public var inputShape: [Int]
    public var outputShape: [Int]
    public var activation: Activation

    public var inputSize: Int { inputShape.reduce(1, *) }
    public var outputSize: Int { outputShape.reduce(1, *) }

    /// Parameter tensors in buffer order: PyTorch's orientation for dense ([out, in]); [filters, k, k, in] for conv.
    public var parameterShapes: [(name: String, shape: [Int])] {
        switch kind {
        case .dense: return [("weight", [outputSize, inputSize]), ("bias", [outputSize])]
        case .conv(let filters, let kernel, _, _): return [("weight", [filters, kernel, kernel, inputShape[2]]), ("bias", [filters])]
        case .maxPool, .upSample, .reshape: return []
        }
    }

    /// Inputs and outputs each weight connects, for Glorot/He initialisation (Keras's receptive-field counting).
    public var fan: (in: Int, out: Int) {
        switch kind {
        case .conv(let filters, let kernel, _, _): return (kernel * kernel * inputShape[2], kernel * kernel * filters)
        default: return (inputSize, outputSize)
        }
    }

    public var description: String {
        let shapes = "\(inputShape.map(String.init).joined(separator: "×"))→\(outputShape.map(String.init).joined(separator: "×"))"
        switch kind {
        case .dense: return "\(name) \(shapes) \(activation.rawValue)"
        case .conv(let filters, let kernel, let stride, let same):
            return "\(name) conv \(kernel)×\(kernel)×\(filters)\(stride > 1 ? " stride \(stride)" : "")\(same ? "" : " valid") \(shapes) \(activation.rawValue)"
        case .maxPool(let size): return "\(name) maxpool \(size) \(shapes)"
        case .upSample(let factor): return "\(name) upsample \(factor) \(shapes)"
        case .reshape: return "\(name) \(outputShape.count == 1 ? "flatten" : "reshape") \(shapes)"
        }
    }
}

/// The resolved shape of an autoencoder: the layer list a model spec stands for.
public struct ModelArchitecture: Equatable, Sendable {
    public var layers: [LayerSpec]
    /// How many of `layers` make the encoder; the rest decode.
    public var encoderDepth: Int

    /// The encoder's last layer gives μ and log σ² (the last axis holds both, μ first), and the decoder starts from a
    /// sample of the code.
    public var variational = false

    public var inputSize: Int { layers.first!.inputSize }
    public var inputShape: [Int] { layers.first!.inputShape }
    /// Values of the code the decoder starts from (half the encoder's output when variational).
    public var codeSize: Int { layers[encoderDepth].inputSize }
    public var codeShape: [Int] { layers[encoderDepth].inputShape }
    public var outputActivation: Activation { layers.last!.activation }

    static let examples = "e.g. dense:784-128-64, dense:784-256:tanh-32:linear, or conv:28x28x1/c32-p2-c32-p2/c32-u2-c32-u2-c1"

    public init(_ config: ModelConfig) throws {
        let spec = config.spec
        func fail(_ why: String) -> ConfigError {
            ConfigError("invalid --model '\(spec)': \(why); expected \(Self.examples)")
        }
        func activation(_ name: Substring) throws -> Activation {
            guard let activation = Activation(rawValue: String(name)) else {
                throw fail("unknown activation '\(name)' (available: \(Activation.allCases.map(\.rawValue).joined(separator: ", ")))")
            }
            return activation
        }
        if spec.hasPrefix("dense:") {
            try self.init(dense: spec, config: config, fail: fail, activation: activation)
        } else if spec.hasPrefix("conv:") {
            try self.init(conv: spec, config: config, fail: fail, activation: activation)
        } else {
            let kind = spec.split(separator: ":").first.map(String.init) ?? spec
            throw fail("unknown model kind '\(kind)' (available: dense, conv)")
        }
        if config.variational {
            // The code layer also gives log σ² beside μ: twice the outputs, no activation.
            let last = encoderDepth - 1
            var layer = layers[last]
            switch layer.kind {
            case .dense: layer.outputShape = [2 * layer.outputSize]
            case .conv(let filters, let kernel, let stride, let same):
                layer.kind = .conv(filters: 2 * filters, kernel: kernel, stride: stride, samePadding: same)
                layer.outputShape[2] *= 2
            case .maxPool, .upSample, .reshape: throw fail("a variational encoder must end in a dense or conv layer")
            }
            layer.activation = .linear
            layers[last] = layer
            variational = true
        }
        // A spec may come from an untrusted file: refuse absurd sizes before anything is allocated.
        var total = 0
        for layer in layers {
            for (_, shape) in layer.parameterShapes {
                var count = 1
                for dimension in shape {
                    let (product, overflow) = count.multipliedReportingOverflow(by: dimension)
                    guard !overflow else { throw fail("more than \(Self.maxParameters) parameters (\((Self.maxParameters * 4) >> 30) GiB), aedist's limit") }
                    count = product
                }
                guard total <= Self.maxParameters - count else {
                    throw fail("more than \(Self.maxParameters) parameters (\((Self.maxParameters * 4) >> 30) GiB), aedist's limit")
                }
                total += count
            }
        }
    }

    /// "dense:784-128-64": encoder widths from the input to the code, the decoder mirrored; or with an explicit
    /// decoder after a '/': "dense:784-256-32/64-784" (the decoder's widths after the code, ending at the input's).
    private init(dense spec: String, config: ModelConfig, fail: (String) -> ConfigError, activation: (Substring) throws -> Activation) throws {
        var widths: [Int] = []
        var activations: [Activation] = []
        let halves = spec.dropFirst("dense:".count).split(separator: "/", omittingEmptySubsequences: false)
        guard halves.count <= 2 else { throw fail("at most one '/' (between the encoder's and the decoder's widths)") }
        for token in halves[0].split(separator: "-", omittingEmptySubsequences: false) {
            let parts = token.split(separator: ":", omittingEmptySubsequences: false)
            guard parts.count <= 2, let width = Int(parts[0]), width > 0, width <= Self.maxValuesPerSample else {
                throw fail("'\(token)' is not a positive width (at most \(Self.maxValuesPerSample))")
            }
            widths.append(width)
            activations.append(parts.count == 2 ? try activation(parts[1]) : config.activation)
        }
        guard widths.count >= 2 else { throw fail("needs at least an input width and a code width") }
        if spec.dropFirst("dense:".count).split(separator: "-").first?.contains(":") == true {
            throw fail("the input width takes no activation (activations belong to the layers after it)")
        }
        var layers: [LayerSpec] = []
        for i in 1..<widths.count {
            layers.append(LayerSpec(name: "encoder.\(i - 1)", kind: .dense, inputShape: [widths[i - 1]], outputShape: [widths[i]],
                                    activation: activations[i]))
        }
        encoderDepth = widths.count - 1
        if halves.count == 2 {
            var previous = widths.last!
            let tokens = halves[1].split(separator: "-", omittingEmptySubsequences: false)
            for (index, token) in tokens.enumerated() {
                let parts = token.split(separator: ":", omittingEmptySubsequences: false)
                guard parts.count <= 2, let width = Int(parts[0]), width > 0, width <= Self.maxValuesPerSample else {
                    throw fail("'\(token)' is not a positive width (at most \(Self.maxValuesPerSample))")
                }
                let isOutput = index == tokens.count - 1
                let chosen = parts.count == 2 ? try activation(parts[1]) : (isOutput ? config.outputActivation : config.activation)
                layers.append(LayerSpec(name: "decoder.\(index)", kind: .dense, inputShape: [previous], outputShape: [width], activation: chosen))
                previous = width
            }
            guard previous == widths[0] else { throw fail("the decoder ends at \(previous) values, not at the input's \(widths[0])") }
            self.layers = layers
            return
        }
        // The decoder mirrors the encoder; its hidden layers take the activation of the encoder layer they mirror.
        let mirrored = Array(widths.reversed())
        let mirroredActivations = Array(activations.reversed())
        for i in 1..<mirrored.count {
            let isOutput = i == mirrored.count - 1
            layers.append(LayerSpec(name: "decoder.\(i - 1)", kind: .dense, inputShape: [mirrored[i - 1]], outputShape: [mirrored[i]],
                                    activation: isOutput ? config.outputActivation : mirroredActivations[i]))
        }
        self.layers = layers
    }

    /// "conv:28x28x1/c32-p2-c32-p2/c32-u2-c32-u2-c1": input H×W×C, then the encoder's and the decoder's layers.
    /// cF = F filters (options: kK kernel, default 3; sS stride; v for valid padding), pN = max-pool N, uN = upsample N;
    /// ":act" after a layer sets its activation. The last layer takes the output activation.
    private init(conv spec: String, config: ModelConfig, fail: (String) -> ConfigError, activation: (Substring) throws -> Activation) throws {
        let sections = spec.dropFirst("conv:".count).split(separator: "/", omittingEmptySubsequences: false)
        guard sections.count == 3 else { throw fail("needs three parts separated by '/': input shape, encoder layers, decoder layers") }
        let dimensions = sections[0].split(separator: "x").compactMap { Int($0) }
        guard dimensions.count == 3, dimensions.allSatisfy({ $0 > 0 && $0 <= 1 << 20 }),
              dimensions.reduce(1, { $0.multipliedReportingOverflow(by: $1).overflow ? Int.max : $0 * $1 }) <= Self.maxValuesPerSample else { throw fail("'\(sections[0])' is not an input shape H×W×C such as 28x28x1") }
        var shape = dimensions
        var layers: [LayerSpec] = []
        var encoderDepth = 0
        let encoderTokens = sections[1].split(separator: "-"), decoderTokens = sections[2].split(separator: "-")
        guard !encoderTokens.isEmpty, !decoderTokens.isEmpty else { throw fail("the encoder and the decoder need at least one layer each") }
        for (part, tokens) in [("encoder", encoderTokens), ("decoder", decoderTokens)] {
            for (index, token) in tokens.enumerated() {
                let pieces = token.split(separator: ":", maxSplits: 1)
                guard let body = pieces.first else { throw fail("empty layer '\(token)'") }
                let isLast = part == "decoder" && index == tokens.count - 1
                let chosen = pieces.count == 2 ? try activation(pieces[1]) : (isLast ? config.outputActivation : config.activation)
                guard let letter = body.first, let rest = Optional(body.dropFirst()) else { throw fail("empty layer") }
                func number(after prefix: Character, in text: Substring, default value: Int?) -> Int? {
                    guard let start = text.firstIndex(of: prefix) else { return value }
                    return Int(text[text.index(after: start)...].prefix { $0.isNumber })
                }
                let kind: LayerSpec.Kind
                var output: [Int]
                if "cpu".contains(letter) && shape.count != 3 {
                    throw fail("'\(token)' needs an image (H×W×C) input but gets \(shape[0]) values; reshape first, e.g. r7x7x32")
                }
                switch letter {
                case "f":
                    guard rest.isEmpty else { throw fail("'\(token)': flatten takes no argument (f)") }
                    kind = .reshape
                    output = [shape.reduce(1, *)]
                case "d":
                    guard shape.count == 1 else { throw fail("'\(token)' needs a flat input; flatten first with f") }
                    guard let width = Int(rest), width > 0, width <= Self.maxValuesPerSample else { throw fail("'\(token)' is not a dense layer such as d64") }
                    kind = .dense
                    output = [width]
                case "r":
                    let dimensions = rest.split(separator: "x").compactMap { Int($0) }
                    let count = dimensions.reduce(1) { $0.multipliedReportingOverflow(by: $1).overflow ? Int.max : $0 * $1 }
                    guard dimensions.count == 3, dimensions.allSatisfy({ $0 > 0 }), count == shape.reduce(1, *) else {
                        throw fail("'\(token)' is not a reshape of \(shape.reduce(1, *)) values into H×W×C, such as r7x7x32")
                    }
                    kind = .reshape
                    output = dimensions
                case "c":
                    guard let filters = Int(rest.prefix { $0.isNumber }), filters > 0,
                          let kernel = number(after: "k", in: rest, default: 3), kernel > 0,
                          let stride = number(after: "s", in: rest, default: 1), stride > 0 else { throw fail("'\(token)' is not a conv layer such as c32, c32k5 or c16k3s2v") }
                    let same = !rest.contains("v")
                    let (height, width) = same ? ((shape[0] + stride - 1) / stride, (shape[1] + stride - 1) / stride)
                        : ((shape[0] - kernel) / stride + 1, (shape[1] - kernel) / stride + 1)
                    guard height > 0, width > 0, same || (shape[0] >= kernel && shape[1] >= kernel) else {
                        throw fail("'\(token)' does not fit its \(shape[0])×\(shape[1]) input")
                    }
                    kind = .conv(filters: filters, kernel: kernel, stride: stride, samePadding: same)
                    output = [height, width, filters]
                case "p":
                    guard let size = Int(rest), size > 0, shape[0] >= size, shape[1] >= size else { throw fail("'\(token)' is not a pooling layer that fits its \(shape[0])×\(shape[1]) input, such as p2") }
                    kind = .maxPool(size: size)
                    output = [shape[0] / size, shape[1] / size, shape[2]]
                case "u":
                    guard let factor = Int(rest), factor > 0, factor <= 1 << 12,
                          shape[0].multipliedReportingOverflow(by: factor * factor).overflow == false else {
                        throw fail("'\(token)' is not an upsampling layer such as u2")
                    }
                    kind = .upSample(factor: factor)
                    output = [shape[0] * factor, shape[1] * factor, shape[2]]
                default:
                    throw fail("unknown layer '\(token)' (c = conv, p = max-pool, u = upsample, f = flatten, dN = dense, rHxWxC = reshape)")
                }
                let isParameterless: Bool
                switch kind {
                case .conv, .dense: isParameterless = false
                default: isParameterless = true
                }
                if isParameterless && pieces.count == 2 { throw fail("'\(token)': pooling, upsampling and reshaping take no activation") }
                // Specs may come from untrusted files: bound every activation before anything is allocated.
                guard output.allSatisfy({ $0 > 0 && $0 <= 1 << 20 }),
                      output.reduce(1, { $0.multipliedReportingOverflow(by: $1).overflow ? Int.max : $0 * $1 }) <= Self.maxValuesPerSample else {
                    throw fail("'\(token)' makes \(output.map(String.init).joined(separator: "×")) values per sample, more than aedist's limit of \(Self.maxValuesPerSample)")
                }
                layers.append(LayerSpec(name: "\(part).\(index)", kind: kind, inputShape: shape, outputShape: output,
                                        activation: isParameterless ? .linear : chosen))
                shape = output
            }
            if part == "encoder" { encoderDepth = layers.count }
        }
        guard shape == dimensions else {
            throw fail("the decoder ends at \(shape.map(String.init).joined(separator: "×")), not at the input's \(dimensions.map(String.init).joined(separator: "×"))")
        }
        self.layers = layers
        self.encoderDepth = encoderDepth
    }

    /// 2³² float32 parameters (16 GiB), far beyond any autoencoder but small enough to fail before allocating.
    public static let maxParameters = 1 << 32
    /// Values one sample may have at any layer (2²⁸: a 16k × 16k × 1 image).
    public static let maxValuesPerSample = 1 << 28

    /// Every parameter tensor in buffer order: the layout that checkpoints store and ranks compare.
    public var parameterLayout: ParameterLayout {
        var tensors: [ParameterLayout.Tensor] = []
        var offset = 0
        for layer in layers {
            for (name, shape) in layer.parameterShapes {
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
        if case .dense = layers[0].kind {
            return count == inputSize ? nil : "\(count) values, but the model takes \(inputSize) inputs"
        }
        if shape == inputShape || (shape.count == 2 && shape + [1] == inputShape) { return nil }
        let described = shape.map(String.init).joined(separator: "×"), expected = inputShape.map(String.init).joined(separator: "×")
        if shape.count == 3 && [shape[1], shape[2], shape[0]] == inputShape {
            return "shape \(described), but the model takes \(expected) images; for channels-first (N×C×H×W) data pass --channels-first"
        }
        return "shape \(described), but the model takes \(expected) images"
    }

    public var description: String {
        layers.map { layer in
            if case .dense = layer.kind { return "\(layer.name) \(layer.inputSize)→\(layer.outputSize) \(layer.activation.rawValue)" }
            return layer.description
        }.joined(separator: ", ")
    }
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
