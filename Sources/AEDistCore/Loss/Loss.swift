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
        // Per row, in chunks: one elementwise pass writes each value's loss and squared error to scratch (a plain
        // loop the compiler vectorizes), then eight-lane vector sums add them up. A float reduction written as one
        // loop would stay scalar, since its additions may not be reordered.
        let chunk = 64  // 768 bytes of scratch: small enough to live on the stack
        withUnsafeTemporaryAllocation(of: Float.self, capacity: 3 * chunk) { scratch in
            let lossTerms = scratch.baseAddress!, squaredTerms = lossTerms + chunk, unusedGradient = lossTerms + 2 * chunk
            for row in 0..<batch {
                var lossLanes = SIMD8<Float>(), squaredLanes = SIMD8<Float>()
                for start in stride(from: 0, to: width, by: chunk) {
                    let base = row * width + start, count = min(chunk, width - start)
                    let z = logits + base, y = output + base, x = target + base
                    let g = gradient.map { $0 + base } ?? unusedGradient
                    switch kind {
                    case .bce:
                        // From logits: max(z,0) − z·x + log(1 + e^−|z|) never overflows, and dL/dz = σ(z) − x. The
                        // last term is −log σ(|z|) = −log max(y, 1 − y), from y = σ(z) already computed.
                        for j in 0..<count {
                            let diff = y[j] - x[j]
                            g[j] = diff * perValue
                            lossTerms[j] = max(z[j], 0) - z[j] * x[j] - FastMath.logHalfToOne(max(y[j], 1 - y[j]))
                            squaredTerms[j] = diff * diff
                        }
                    case .mse:
                        for j in 0..<count {
                            let diff = y[j] - x[j]
                            g[j] = 2 * diff * perValue
                            squaredTerms[j] = diff * diff
                        }
                        // Through the output activation in its own per-kind loop, so both loops stay vector code.
                        if gradient != nil { outputActivation.backward(preActivations: z, outputs: y, gradient: g, count: count) }
                    }
                    let padded = (count + 7) / 8 * 8
                    for j in count..<padded { lossTerms[j] = 0; squaredTerms[j] = 0 }
                    for j in stride(from: 0, to: padded, by: 8) {
                        if kind == .bce { lossLanes += UnsafeRawPointer(lossTerms + j).loadUnaligned(as: SIMD8<Float>.self) }
                        squaredLanes += UnsafeRawPointer(squaredTerms + j).loadUnaligned(as: SIMD8<Float>.self)
                    }
                }
                let squared = squaredLanes.doubleSum()
                sums.loss += (kind == .bce ? lossLanes.doubleSum() : squared) / Double(width)
                sums.squaredError += squared / Double(width)
            }
        }
        return sums
    }
}

extension SIMD8<Float> {
    /// The lanes' sum in double precision, in a fixed order (the standard library's `sum()` stays in float).
    func doubleSum() -> Double {
        var total = 0.0
        for i in 0..<8 { total += Double(self[i]) }
        return total
    }
}
