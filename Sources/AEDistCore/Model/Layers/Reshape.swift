/// Flatten (`f`) or reshape (`rH×W×C`): the same values in the same (row-major, channels-last) order, another shape.
public struct Reshape: Layer {
    public let name: String
    public let inputShape: [Int]
    public let outputShape: [Int]

    public var passesValuesThrough: Bool { true }
    public var description: String { "\(name) \(outputShape.count == 1 ? "flatten" : "reshape") \(shapes)" }

    public static func parse(_ token: Substring, name: String, inputShape: [Int], activation: Activation) throws -> Reshape? {
        let values = inputShape.reduce(1, *)
        switch token.first {
        case "f":
            guard token.count == 1 else { throw SpecProblem("'\(token)': flatten takes no argument (f)") }
            return Reshape(name: name, inputShape: inputShape, outputShape: [values])
        case "r":
            let dimensions = token.dropFirst().split(separator: "x").compactMap { Int($0) }
            let count = dimensions.reduce(1) { $0.multipliedReportingOverflow(by: $1).overflow ? Int.max : $0 * $1 }
            guard dimensions.count == 3, dimensions.allSatisfy({ $0 > 0 }), count == values else {
                throw SpecProblem("'\(token)' is not a reshape of \(values) values into H×W×C, such as r7x7x32")
            }
            return Reshape(name: name, inputShape: inputShape, outputShape: dimensions)
        default:
            return nil
        }
    }

    public func forward(input: UnsafePointer<Float>, batch: Int, parameters: UnsafePointer<Float>,
                        preActivation: UnsafeMutablePointer<Float>, output: UnsafeMutablePointer<Float>,
                        workspace: UnsafeMutablePointer<Float>, context: PassContext) {
        output.update(from: input, count: batch * outputSize)
    }

    public func backward(input: UnsafePointer<Float>, preActivation: UnsafePointer<Float>, output: UnsafePointer<Float>, batch: Int,
                         outputGradient: UnsafePointer<Float>, parameters: UnsafePointer<Float>,
                         gradients: UnsafeMutablePointer<Float>, inputGradient: UnsafeMutablePointer<Float>?,
                         workspace: UnsafeMutablePointer<Float>, context: PassContext) {
        inputGradient?.update(from: outputGradient, count: batch * inputSize)
    }
}
