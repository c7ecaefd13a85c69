import Foundation

/// SGD (momentum, Nesterov), Adam, AdamW and RMSprop with PyTorch's update rules. Every state tensor is a flat
/// buffer with the parameters' layout, and a step is one loop over the whole buffer.
public final class Optimizer {
    public let config: OptimizerConfig
    /// Named state buffers ("momentum_buffer"; "exp_avg", "exp_avg_sq"; "square_avg"), as PyTorch names them.
    public let state: [(name: String, buffer: FlatBuffer)]
    /// Steps taken so far (Adam's bias correction needs it; checkpoints store it).
    public var stepCount: Int = 0

    public init(config: OptimizerConfig, parameterCount: Int) {
        self.config = config
        state = Optimizer.stateNames(config).map { ($0, FlatBuffer(count: parameterCount)) }
    }

    public static func stateNames(_ config: OptimizerConfig) -> [String] {
        switch config.kind {
        case .sgd: return config.momentum > 0 ? ["momentum_buffer"] : []
        case .adam, .adamw: return ["exp_avg", "exp_avg_sq"]
        case .rmsprop: return config.momentum > 0 ? ["square_avg", "momentum_buffer"] : ["square_avg"]
        }
    }

    public func stateBuffer(_ name: String) -> FlatBuffer? { state.first { $0.name == name }?.buffer }

    /// p ← p − update(g · gradientScale), with `learningRate` for this step (schedules decide it). `gradients` may
    /// be longer than `parameters`; only the first `parameters.count` values are gradients. The scale lets the
    /// trainer turn the all-reduced sum into a mean within this same pass over memory.
    public func step(parameters: FlatBuffer, gradients: FlatBuffer, learningRate: Double, gradientScale: Float = 1) {
        precondition(gradients.count >= parameters.count)
        stepCount += 1
        let p = parameters.pointer, g = gradients.pointer, n = parameters.count
        let lr = Float(learningRate), wd = Float(config.weightDecay), mu = Float(config.momentum)
        let eps = Float(config.epsilon), scale = gradientScale
        // Each case is one loop over the buffer with its choices hoisted out.
        switch config.kind {
        case .sgd:
            if mu == 0 {
                for i in 0..<n { p[i] -= lr * (g[i] * scale + wd * p[i]) }
            } else {
                let v = state[0].buffer.pointer
                // Nesterov steps along grad + μ·v, plain momentum along v.
                let gradientWeight: Float = config.nesterov ? 1 : 0, velocityWeight: Float = config.nesterov ? mu : 1
                for i in 0..<n {
                    let grad = g[i] * scale + wd * p[i]
                    let velocity = mu * v[i] + grad
                    v[i] = velocity
                    p[i] -= lr * (gradientWeight * grad + velocityWeight * velocity)
                }
            }
        case .adam, .adamw:
            let m = state[0].buffer.pointer, v = state[1].buffer.pointer
            let b1 = Float(config.beta1), b2 = Float(config.beta2)
            let correction1 = 1 - pow(config.beta1, Double(stepCount))
            let correction2 = 1 - pow(config.beta2, Double(stepCount))
            let stepSize = Float(learningRate / correction1)
            let inverseRootCorrection2 = Float(1 / correction2.squareRoot())
            // AdamW shrinks the weights directly; Adam adds the decay to the gradient.
            let shrink = config.kind == .adamw ? 1 - lr * wd : 1, coupled = config.kind == .adamw ? 0 : wd
            for i in 0..<n {
                let weight = p[i]
                let grad = g[i] * scale + coupled * weight
                let mean = b1 * m[i] + (1 - b1) * grad
                let square = b2 * v[i] + (1 - b2) * grad * grad
                m[i] = mean
                v[i] = square
                p[i] = shrink * weight - stepSize * mean / (FastMath.squareRoot(square) * inverseRootCorrection2 + eps)
            }
        case .rmsprop:
            let square = state[0].buffer.pointer
            let rho = Float(config.rho)
            if mu > 0 {
                let buffer = state[1].buffer.pointer
                for i in 0..<n {
                    let grad = g[i] * scale + wd * p[i]
                    let average = rho * square[i] + (1 - rho) * grad * grad
                    square[i] = average
                    let velocity = mu * buffer[i] + grad / (FastMath.squareRoot(average) + eps)
                    buffer[i] = velocity
                    p[i] -= lr * velocity
                }
            } else {
                for i in 0..<n {
                    let grad = g[i] * scale + wd * p[i]
                    let average = rho * square[i] + (1 - rho) * grad * grad
                    square[i] = average
                    p[i] -= lr * grad / (FastMath.squareRoot(average) + eps)
                }
            }
        }
    }
}
