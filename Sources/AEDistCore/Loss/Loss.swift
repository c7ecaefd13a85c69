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
            let z = logits + row * width, y = output + row * width, x = target + row * width
            let g = gradient.map { $0 + row * width }
            // Eight running sums per row (blocks of eight values, one lane each) let the loop run as vector adds.
            var lossLanes = SIMD8<Float>(), squaredLanes = SIMD8<Float>()
            switch kind {
            case .bce:
                // From logits: max(z,0) − z·x + log(1 + e^−|z|) never overflows, and dL/dz = σ(z) − x. The last term
                // is −log σ(|z|) = −log max(y, 1 − y) with y = σ(z) already computed: no exponential.
                func value(_ j: Int) -> (loss: Float, squared: Float) {
                    let diff = y[j] - x[j]
                    g?[j] = diff * perValue
                    return (max(z[j], 0) - z[j] * x[j] - FastMath.logHalfToOne(max(y[j], 1 - y[j])), diff * diff)
                }
                accumulate(width: width, into: &lossLanes, &squaredLanes, value)
            case .mse:
                func value(_ j: Int) -> (loss: Float, squared: Float) {
                    let diff = y[j] - x[j]
                    g?[j] = 2 * diff * perValue * outputActivation.derivative(output: y[j])
                    return (diff * diff, diff * diff)
                }
                accumulate(width: width, into: &lossLanes, &squaredLanes, value)
            }
            sums.loss += lossLanes.sum() / Double(width)
            sums.squaredError += squaredLanes.sum() / Double(width)
        }
        return sums
    }

    /// Adds `value(j)` for j in 0..<width into lane j mod 8 of the two sums; blocks of eight make the lanes constant.
    @inline(__always)
    private static func accumulate(width: Int, into loss: inout SIMD8<Float>, _ squared: inout SIMD8<Float>,
                                   _ value: (Int) -> (loss: Float, squared: Float)) {
        var j = 0
        while j + 8 <= width {
            for lane in 0..<8 {
                let v = value(j + lane)
                loss[lane] += v.loss
                squared[lane] += v.squared
            }
            j += 8
        }
        while j < width {
            let v = value(j)
            loss[0] += v.loss
            squared[0] += v.squared
            j += 1
        }
    }
}

extension SIMD8<Float> {
    /// The lanes' sum in double precision, in a fixed order.
    func sum() -> Double {
        var total = 0.0
        for i in 0..<8 { total += Double(self[i]) }
        return total
    }
}
