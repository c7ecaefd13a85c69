/// Max over non-overlapping size×size windows ("valid": a ragged edge is dropped, as Keras); the gradient goes to
/// the first maximum of each window. In a `conv:` spec: `pN`.
public struct MaxPool2D: Layer {
    public let name: String
    public let inputShape: [Int]
    public let outputShape: [Int]
    public let size: Int
    let inHeight, inWidth, channels, outHeight, outWidth: Int

    init(name: String, inputShape: [Int], size: Int) {
        self.name = name
        self.inputShape = inputShape
        self.size = size
        (inHeight, inWidth, channels) = (inputShape[0], inputShape[1], inputShape[2])
        (outHeight, outWidth) = (inHeight / size, inWidth / size)
        outputShape = [outHeight, outWidth, channels]
    }

    public static func parse(_ token: Substring, name: String, inputShape: [Int], activation: Activation) throws -> MaxPool2D? {
        guard token.first == "p" else { return nil }
        try requireImage(token, inputShape)
        guard let size = Int(token.dropFirst()), size > 0, inputShape[0] >= size, inputShape[1] >= size else {
            throw SpecProblem("'\(token)' is not a pooling layer that fits its \(inputShape[0])×\(inputShape[1]) input, such as p2")
        }
        return MaxPool2D(name: name, inputShape: inputShape, size: size)
    }

    public var passesValuesThrough: Bool { true }
    public var settings: [(key: String, value: String)] { [("size", "\(size)")] }
    public var description: String { "\(name) maxpool \(size) \(shapes)" }

    public func forward(input: UnsafePointer<Float>, batch: Int, parameters: UnsafePointer<Float>,
                        preActivation: UnsafeMutablePointer<Float>, output: UnsafeMutablePointer<Float>,
                        workspace: UnsafeMutablePointer<Float>, context: PassContext) {
        for n in 0..<batch {
            let x = input + n * inHeight * inWidth * channels, y = output + n * outHeight * outWidth * channels
            for oy in 0..<outHeight {
                for ox in 0..<outWidth {
                    let target = y + (oy * outWidth + ox) * channels, corner = x + (oy * size * inWidth + ox * size) * channels
                    for c in 0..<channels { target[c] = corner[c] }
                    for dy in 0..<size {
                        for dx in 0..<size {
                            let source = x + ((oy * size + dy) * inWidth + ox * size + dx) * channels
                            for c in 0..<channels { target[c] = source[c] > target[c] ? source[c] : target[c] }
                        }
                    }
                }
            }
        }
    }

    /// One float per channel: which channels still wait for their window's first maximum.
    public var workspaceSize: Int { channels }

    public func backward(input: UnsafePointer<Float>, preActivation: UnsafePointer<Float>, output: UnsafePointer<Float>, batch: Int,
                         outputGradient: UnsafePointer<Float>, parameters: UnsafePointer<Float>,
                         gradients: UnsafeMutablePointer<Float>, inputGradient: UnsafeMutablePointer<Float>?,
                         workspace pending: UnsafeMutablePointer<Float>, context: PassContext) {
        guard let inputGradient else { return }
        inputGradient.update(repeating: 0, count: batch * inHeight * inWidth * channels)
        // Window positions in order, all channels at once: `pending` is 1 for a channel until its first maximum has
        // taken the gradient, so the loops are plain vector code instead of a search per channel.
        let channels = self.channels
        for n in 0..<batch {
            let x = input + n * inHeight * inWidth * channels
            let dx = inputGradient + n * inHeight * inWidth * channels
            for oy in 0..<outHeight {
                for ox in 0..<outWidth {
                    let at = (n * outHeight * outWidth + oy * outWidth + ox) * channels
                    let maximum = output + at, gradient = outputGradient + at
                    for c in 0..<channels { pending[c] = 1 }
                    for wy in 0..<size {
                        for wx in 0..<size {
                            let index = ((oy * size + wy) * inWidth + ox * size + wx) * channels
                            let source = x + index, target = dx + index
                            for c in 0..<channels {
                                let takes: Float = source[c] == maximum[c] ? pending[c] : 0
                                target[c] += takes * gradient[c]
                                pending[c] -= takes
                            }
                        }
                    }
                }
            }
        }
    }
}
