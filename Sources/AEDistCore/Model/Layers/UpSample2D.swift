/// Nearest-neighbour upsampling by a factor in height and width; the gradient of each input pixel is the sum over
/// its copies. In a `conv:` spec: `uN`.
public struct UpSample2D: Layer {
    public let name: String
    public let inputShape: [Int]
    public let outputShape: [Int]
    public let factor: Int
    let inHeight, inWidth, channels: Int

    init(name: String, inputShape: [Int], factor: Int) {
        self.name = name
        self.inputShape = inputShape
        self.factor = factor
        (inHeight, inWidth, channels) = (inputShape[0], inputShape[1], inputShape[2])
        outputShape = [inHeight * factor, inWidth * factor, channels]
    }

    public static func parse(_ token: Substring, name: String, inputShape: [Int], activation: Activation) throws -> UpSample2D? {
        guard token.first == "u" else { return nil }
        try requireImage(token, inputShape)
        guard let factor = Int(token.dropFirst()), factor > 0, factor <= 1 << 12,
              inputShape[0].multipliedReportingOverflow(by: factor * factor).overflow == false else {
            throw SpecProblem("'\(token)' is not an upsampling layer such as u2")
        }
        return UpSample2D(name: name, inputShape: inputShape, factor: factor)
    }

    public var passesValuesThrough: Bool { true }
    public var settings: [(key: String, value: String)] { [("factor", "\(factor)")] }
    public var description: String { "\(name) upsample \(factor) \(shapes)" }

    public func forward(input: UnsafePointer<Float>, batch: Int, parameters: UnsafePointer<Float>,
                        preActivation: UnsafeMutablePointer<Float>, output: UnsafeMutablePointer<Float>,
                        workspace: UnsafeMutablePointer<Float>, context: PassContext) {
        let outWidth = inWidth * factor
        for n in 0..<batch {
            let x = input + n * inHeight * inWidth * channels, y = output + n * inHeight * factor * outWidth * channels
            for oy in 0..<(inHeight * factor) {
                for ox in 0..<outWidth {
                    let target = y + (oy * outWidth + ox) * channels, source = x + ((oy / factor) * inWidth + ox / factor) * channels
                    for c in 0..<channels { target[c] = source[c] }
                }
            }
        }
    }

    public func backward(input: UnsafePointer<Float>, preActivation: UnsafePointer<Float>, output: UnsafePointer<Float>, batch: Int,
                         outputGradient: UnsafePointer<Float>, parameters: UnsafePointer<Float>,
                         gradients: UnsafeMutablePointer<Float>, inputGradient: UnsafeMutablePointer<Float>?,
                         workspace: UnsafeMutablePointer<Float>, context: PassContext) {
        guard let inputGradient else { return }
        inputGradient.update(repeating: 0, count: batch * inHeight * inWidth * channels)
        let outWidth = inWidth * factor
        for n in 0..<batch {
            let dy = outputGradient + n * inHeight * factor * outWidth * channels, dx = inputGradient + n * inHeight * inWidth * channels
            for oy in 0..<(inHeight * factor) {
                for ox in 0..<outWidth {
                    let source = dy + (oy * outWidth + ox) * channels, target = dx + ((oy / factor) * inWidth + ox / factor) * channels
                    for c in 0..<channels { target[c] += source[c] }
                }
            }
        }
    }
}
