/// Dropout of rate R: in training each value is kept with probability 1 − R and scaled by 1/(1 − R) (inverted
/// dropout, as Keras and PyTorch), else zeroed; in every other pass (validation, the uses of a trained model) the
/// identity. Each sample's mask comes from a stream keyed by (seed, epoch, sample, layer), so it does not depend
/// on the number of ranks or on a resume. In a spec: `dropR`, e.g. `drop0.2`.
public struct Dropout: Layer {
    public let name: String
    public let inputShape: [Int]
    public var outputShape: [Int] { inputShape }
    public let rate: Float

    public init(name: String, inputShape: [Int], rate: Float) {
        self.name = name
        self.inputShape = inputShape
        self.rate = rate
    }

    public var settings: [(key: String, value: String)] { [("rate", "\(rate)")] }
    public var description: String { "\(name) dropout \(rate) \(shapes)" }

    public static func parse(_ token: Substring, name: String, inputShape: [Int], activation: Activation) throws -> Dropout? {
        guard token.hasPrefix("drop") else { return nil }
        guard let rate = Float(token.dropFirst(4)), rate >= 0, rate < 1 else {
            throw SpecProblem("'\(token)' is not a dropout rate in [0, 1), such as drop0.2")
        }
        return Dropout(name: name, inputShape: inputShape, rate: rate)
    }

    /// The mask, as each value's factor (0 or 1/(1 − R)), stays in `preActivation` for the backward pass.
    public func forward(input: UnsafePointer<Float>, batch: Int, parameters: UnsafePointer<Float>,
                        preActivation mask: UnsafeMutablePointer<Float>, output: UnsafeMutablePointer<Float>,
                        workspace: UnsafeMutablePointer<Float>, context: PassContext) {
        let width = outputSize
        guard context.training && rate > 0 else {
            output.update(from: input, count: batch * width)
            mask.update(repeating: 1, count: batch * width)
            return
        }
        let kept = 1 / (1 - rate)
        for row in 0..<batch {
            var random = RandomStream(seed: context.seed, RandomStream.Purpose.dropout.rawValue,
                                      UInt64(bitPattern: Int64(context.key.epoch)), UInt64(context.key.sampleIndex(row)),
                                      UInt64(context.layerIndex))
            let m = mask + row * width, x = input + row * width, y = output + row * width
            for j in 0..<width { m[j] = random.nextUnitFloat() < rate ? 0 : kept }
            for j in 0..<width { y[j] = x[j] * m[j] }
        }
    }

    public func backward(input: UnsafePointer<Float>, preActivation mask: UnsafePointer<Float>, output: UnsafePointer<Float>, batch: Int,
                         outputGradient: UnsafePointer<Float>, parameters: UnsafePointer<Float>,
                         gradients: UnsafeMutablePointer<Float>, inputGradient: UnsafeMutablePointer<Float>?,
                         workspace: UnsafeMutablePointer<Float>, context: PassContext) {
        guard let inputGradient else { return }
        for i in 0..<(batch * inputSize) { inputGradient[i] = outputGradient[i] * mask[i] }
    }
}
