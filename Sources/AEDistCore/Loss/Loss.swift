import Foundation

/// Reconstruction losses. Each sample's loss is the mean over its values (as Keras's and PyTorch's `mean`
/// reductions give); `evaluate` returns the *sum* over the batch's samples so ranks can all-reduce sums and divide
/// by the global count once. The gradient it writes is d(per-sample loss)/dz of the output layer: the trainer
/// scales by 1/(global batch) after the all-reduce.
public enum Loss {
    public struct Sums: Equatable {
        public var loss: Double = 0
        public var squaredError: Double = 0
        /// Variational models: Σ KL(q(z|x) ‖ N(0, I)) over the samples (its weighted share is inside `loss`).
        public var kl: Double = 0
        public init(loss: Double = 0, squaredError: Double = 0, kl: Double = 0) {
            self.loss = loss
            self.squaredError = squaredError
            self.kl = kl
        }
    }

    /// - Parameters:
    ///   - logits: the output layer's pre-activations z; `output` = f(z).
    ///   - gradient: where dL/dz goes, or nil for evaluation only.
    public static func evaluate(_ kind: LossKind, outputActivation: Activation, logits: UnsafePointer<Float>,
                                output: UnsafePointer<Float>, target: UnsafePointer<Float>, batch: Int, width: Int,
                                gradient: UnsafeMutablePointer<Float>?) -> Sums {
        var sums = Sums()
        let perValue = 1 / Float(width)
        for row in 0..<batch {
            let base = row * width
            var rowLoss: Double = 0
            var rowSquared: Double = 0
            switch kind {
            case .bce:
                // From logits: max(z,0) − z·x + log(1 + e^−|z|) never overflows, and dL/dz = σ(z) − x. The last term
                // is −log σ(|z|) = −log max(y, 1 − y) with y = σ(z) already computed: one logarithm, no exponential.
                for j in 0..<width {
                    let z = logits[base + j], x = target[base + j], y = output[base + j]
                    rowLoss += Double(max(z, 0) - z * x - log(max(y, 1 - y)))
                    let diff = y - x
                    rowSquared += Double(diff * diff)
                    gradient?[base + j] = diff * perValue
                }
            case .mse:
                for j in 0..<width {
                    let y = output[base + j], x = target[base + j]
                    let diff = y - x
                    rowSquared += Double(diff * diff)
                    gradient?[base + j] = 2 * diff * perValue * outputActivation.derivative(output: y)
                }
                rowLoss = rowSquared
            }
            sums.loss += rowLoss / Double(width)
            sums.squaredError += rowSquared / Double(width)
        }
        return sums
    }
}
