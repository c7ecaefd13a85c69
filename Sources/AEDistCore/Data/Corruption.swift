/// Input corruption for denoising autoencoders: the model sees a corrupted sample and is trained to reconstruct the
/// clean one. The noise of each sample comes from its own random stream, keyed by (seed, epoch, sample index), so
/// it is the same whatever the number of ranks and after any resume.
public enum Corruption: Equatable, Sendable, Codable, CustomStringConvertible {
    case none
    /// Adds N(0, σ²) to every value, then clips to [0, 1] (the Keras tutorial's recipe).
    case gaussian(sigma: Double)
    /// Sets each value to 0 with this probability.
    case mask(fraction: Double)

    /// "none", "gaussian:0.5" or "mask:0.3".
    public init(_ text: String) throws {
        let parts = text.split(separator: ":", maxSplits: 1).map(String.init)
        switch (parts.first, parts.count == 2 ? Double(parts[1]) : nil) {
        case ("none"?, nil) where parts.count == 1: self = .none
        case ("gaussian"?, let sigma?) where sigma > 0 && sigma.isFinite: self = .gaussian(sigma: sigma)
        case ("mask"?, let fraction?) where fraction > 0 && fraction < 1: self = .mask(fraction: fraction)
        default:
            throw ConfigError("invalid --noise '\(text)': expected none, gaussian:SIGMA (σ > 0) or mask:FRACTION (between 0 and 1)")
        }
    }

    /// Stored in configs and checkpoints as its text ("gaussian:0.5").
    public init(from decoder: Decoder) throws {
        let text = try decoder.singleValueContainer().decode(String.self)
        do { try self.init(text) } catch let error as ConfigError {
            throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription: error.description))
        }
    }

    public func encode(to encoder: Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(description)
    }

    public var description: String {
        switch self {
        case .none: return "none"
        case .gaussian(let sigma): return "gaussian:\(sigma)"
        case .mask(let fraction): return "mask:\(fraction)"
        }
    }

    /// Epoch key for validation samples: their noise is fixed, so validation losses compare across epochs.
    public static let validationEpoch = -1

    /// Writes corrupted copies of `count` rows into `destination`; `sampleIndex(row)` names each row's sample.
    public func apply(to rows: UnsafePointer<Float>, count: Int, width: Int, into destination: UnsafeMutablePointer<Float>,
                      seed: UInt64, epoch: Int, sampleIndex: (Int) -> Int) {
        for row in 0..<count {
            let source = rows + row * width, target = destination + row * width
            var random = RandomStream(seed: seed, RandomStream.Purpose.noise.rawValue, UInt64(bitPattern: Int64(epoch)),
                                      UInt64(sampleIndex(row)))
            switch self {
            case .none:
                target.update(from: source, count: width)
            case .gaussian(let sigma):
                for j in 0..<width { target[j] = min(max(source[j] + Float(sigma * random.nextGaussian()), 0), 1) }
            case .mask(let fraction):
                let keep = Float(1 - fraction)
                for j in 0..<width { target[j] = random.nextUnitFloat() < keep ? source[j] : 0 }
            }
        }
    }
}
