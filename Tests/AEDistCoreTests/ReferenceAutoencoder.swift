import AEDistCore
import Foundation

/// A deliberately naive float64 dense autoencoder and its losses: plain loops, no BLAS, and nothing taken from
/// AEDistCore except the layer shapes, activation choices and parameter offsets. It shares no arithmetic with aedist,
/// so a mistake in aedist's forward pass, backward pass or loss cannot cancel against the same mistake here.
///
/// Semantics mirrored: z = x·Wᵀ + b with W stored [out × in] row-major at the "<layer>/weight" offset of the layout
/// and b at "<layer>/bias"; y = f(z); each sample's loss is the mean over its features, and `lossSum` adds the
/// samples up (what `Loss.evaluate` returns).
struct ReferenceAutoencoder {
    let architecture: ModelArchitecture
    let layout: ParameterLayout

    init(_ architecture: ModelArchitecture) {
        self.architecture = architecture
        layout = architecture.parameterLayout
    }

    struct LayerValues {
        /// Pre-activations, [batch × outputSize].
        var z: [Double]
        /// Outputs f(z), [batch × outputSize].
        var y: [Double]
    }

    /// Every layer's pre-activations and outputs, in layer order.
    func forward(parameters: [Double], input: [Double], batch: Int) -> [LayerValues] {
        precondition(parameters.count == layout.totalCount && input.count == batch * architecture.inputSize)
        var x = input
        var result: [LayerValues] = []
        for layer in architecture.layers {
            let weight = tensor("\(layer.name)/weight"), bias = tensor("\(layer.name)/bias")
            precondition(weight.shape == [layer.outputSize, layer.inputSize] && bias.shape == [layer.outputSize])
            let n = layer.inputSize, m = layer.outputSize
            var z = [Double](repeating: 0, count: batch * m)
            for row in 0..<batch {
                for o in 0..<m {
                    var sum = parameters[bias.offset + o]
                    for i in 0..<n { sum += x[row * n + i] * parameters[weight.offset + o * n + i] }
                    z[row * m + o] = sum
                }
            }
            let y = z.map { referenceActivation(layer.activation, $0) }
            result.append(LayerValues(z: z, y: y))
            x = y
        }
        return result
    }

    /// Σ over the batch of each sample's loss (the mean over its features), with the input as the target.
    func lossSum(_ kind: LossKind, parameters: [Double], input: [Double], batch: Int) -> Double {
        let last = forward(parameters: parameters, input: input, batch: batch).last!
        let width = architecture.inputSize
        var total = 0.0
        for row in 0..<batch {
            var sampleSum = 0.0
            for j in 0..<width {
                let z = last.z[row * width + j], y = last.y[row * width + j], x = input[row * width + j]
                switch kind {
                case .bce: sampleSum += referenceBCE(logit: z, target: x)
                case .mse: sampleSum += (y - x) * (y - x)
                }
            }
            total += sampleSum / Double(width)
        }
        return total
    }

    private func tensor(_ path: String) -> ParameterLayout.Tensor {
        guard let tensor = layout.tensors.first(where: { $0.path == path }) else { fatalError("no tensor \(path) in layout") }
        return tensor
    }
}

/// Binary cross-entropy of target x against σ(z), in the overflow-free form max(z,0) − z·x + log(1 + e^−|z|).
func referenceBCE(logit z: Double, target x: Double) -> Double {
    max(z, 0) - z * x + Foundation.log(1 + Foundation.exp(-abs(z)))
}

func referenceActivation(_ activation: Activation, _ z: Double) -> Double {
    switch activation {
    case .relu: return max(z, 0)
    case .leakyRelu: return z > 0 ? z : 0.01 * z  // PyTorch's default negative slope
    case .tanh: return Foundation.tanh(z)
    case .sigmoid: return 1 / (1 + Foundation.exp(-z))
    case .linear: return z
    case .elu: return z > 0 ? z : Foundation.exp(z) - 1  // α = 1, Keras's and PyTorch's default
    case .gelu: return 0.5 * z * (1 + Foundation.erf(z / 2.0.squareRoot()))  // exact, both frameworks' default
    case .silu: return z / (1 + Foundation.exp(-z))
    }
}
