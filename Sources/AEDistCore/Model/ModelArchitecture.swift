/// The resolved shape of an autoencoder: the layer list a model spec stands for.
public struct ModelArchitecture: Equatable, Sendable {
    public struct DenseLayerSpec: Equatable, Sendable {
        public var name: String
        public var inputSize: Int
        public var outputSize: Int
        public var activation: Activation
    }

    public var layers: [DenseLayerSpec]
    /// How many of `layers` make the encoder; the rest decode.
    public var encoderDepth: Int

    public var inputSize: Int { layers.first!.inputSize }
    public var codeSize: Int { layers[encoderDepth - 1].outputSize }
    public var outputActivation: Activation { layers.last!.activation }

    public init(_ config: ModelConfig) throws {
        let spec = config.spec
        func fail(_ why: String) -> ConfigError {
            ConfigError("invalid --model '\(spec)': \(why); expected e.g. dense:784-128-64 or dense:784-256:tanh-32:linear")
        }
        guard spec.hasPrefix("dense:") else {
            let kind = spec.split(separator: ":").first.map(String.init) ?? spec
            throw fail("unknown model kind '\(kind)' (available: dense)")
        }
        var widths: [Int] = []
        var activations: [Activation] = []
        for token in spec.dropFirst("dense:".count).split(separator: "-", omittingEmptySubsequences: false) {
            let parts = token.split(separator: ":", omittingEmptySubsequences: false)
            guard parts.count <= 2, let width = Int(parts[0]), width > 0 else { throw fail("'\(token)' is not a positive width") }
            widths.append(width)
            if parts.count == 2 {
                guard let activation = Activation(rawValue: String(parts[1])) else {
                    throw fail("unknown activation '\(parts[1])' (available: \(Activation.allCases.map(\.rawValue).joined(separator: ", ")))")
                }
                activations.append(activation)
            } else {
                activations.append(config.activation)
            }
        }
        guard widths.count >= 2 else { throw fail("needs at least an input width and a code width") }
        if spec.dropFirst("dense:".count).split(separator: "-").first?.contains(":") == true {
            throw fail("the input width takes no activation (activations belong to the layers after it)")
        }

        var layers: [DenseLayerSpec] = []
        for i in 1..<widths.count {
            layers.append(DenseLayerSpec(name: "encoder.\(i - 1)", inputSize: widths[i - 1], outputSize: widths[i],
                                         activation: activations[i]))
        }
        // The decoder mirrors the encoder; its hidden layers take the activation of the encoder layer they mirror.
        let mirrored = Array(widths.reversed())
        let mirroredActivations = Array(activations.reversed())
        for i in 1..<mirrored.count {
            let isOutput = i == mirrored.count - 1
            layers.append(DenseLayerSpec(name: "decoder.\(i - 1)", inputSize: mirrored[i - 1], outputSize: mirrored[i],
                                         activation: isOutput ? config.outputActivation : mirroredActivations[i]))
        }
        self.layers = layers
        encoderDepth = widths.count - 1
        // A spec may come from an untrusted file: refuse absurd sizes before anything is allocated.
        var total = 0
        for layer in layers {
            let (weights, overflow) = layer.inputSize.multipliedReportingOverflow(by: layer.outputSize)
            guard !overflow, total <= Self.maxParameters - weights - layer.outputSize else {
                throw fail("more than \(Self.maxParameters) parameters (\((Self.maxParameters * 4) >> 30) GiB), aedist's limit")
            }
            total += weights + layer.outputSize
        }
    }

    /// 2³² float32 parameters (16 GiB), far beyond any autoencoder but small enough to fail before allocating.
    public static let maxParameters = 1 << 32

    /// Every parameter tensor in buffer order: the layout that checkpoints store and ranks compare.
    public var parameterLayout: ParameterLayout {
        var tensors: [ParameterLayout.Tensor] = []
        var offset = 0
        for layer in layers {
            tensors.append(.init(layer: layer.name, name: "weight", shape: [layer.outputSize, layer.inputSize], offset: offset))
            offset += layer.outputSize * layer.inputSize
            tensors.append(.init(layer: layer.name, name: "bias", shape: [layer.outputSize], offset: offset))
            offset += layer.outputSize
        }
        return ParameterLayout(tensors: tensors)
    }

    public var description: String {
        layers.map { "\($0.name) \($0.inputSize)→\($0.outputSize) \($0.activation.rawValue)" }.joined(separator: ", ")
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
