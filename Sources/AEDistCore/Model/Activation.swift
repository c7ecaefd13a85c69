import Foundation

/// Elementwise activations y = f(z), with Keras's and PyTorch's definitions (ELU with α = 1; GELU exact, through
/// erf, as both frameworks' default `approximate=False`/`'none'`; SiLU = swish = z·σ(z)). The backward pass has
/// both the pre-activations z and the outputs y at hand; each derivative uses whichever is cheaper.
public enum Activation: String, Codable, CaseIterable, Sendable {
    case relu, tanh, sigmoid, linear
    case leakyRelu = "leaky_relu"
    case elu, gelu, silu

    static let leakySlope: Float = 0.01

    @inline(__always)
    public func apply(_ z: Float) -> Float {
        switch self {
        case .relu: return z > 0 ? z : 0
        case .leakyRelu: return z > 0 ? z : Activation.leakySlope * z
        case .tanh: return Foundation.tanh(z)
        case .sigmoid: return logistic(z)
        case .linear: return z
        case .elu: return z > 0 ? z : FastMath.exp(z) - 1
        case .gelu: return 0.5 * z * (1 + erf(z * Activation.inverseRootTwo))
        case .silu: return z * FastMath.sigmoid(z)
        }
    }

    static let inverseRootTwo: Float = 0.70710678118654752
    static let inverseRootTwoPi: Float = 0.39894228040143268

    /// dy/dz at pre-activation z with output y = apply(z).
    @inline(__always)
    public func derivative(z: Float, y: Float) -> Float {
        switch self {
        case .relu: return y > 0 ? 1 : 0
        case .leakyRelu: return y > 0 ? 1 : Activation.leakySlope
        case .tanh: return 1 - y * y
        case .sigmoid: return y * (1 - y)
        case .linear: return 1
        case .elu: return z > 0 ? 1 : y + 1
        case .gelu: return 0.5 * (1 + erf(z * Activation.inverseRootTwo)) + z * Activation.inverseRootTwoPi * FastMath.exp(-0.5 * z * z)
        case .silu:
            let s = FastMath.sigmoid(z)
            return s * (1 + z * (1 - s))
        }
    }

    /// In place over `count` values.
    public func apply(_ values: UnsafeMutablePointer<Float>, count: Int) {
        switch self {
        case .linear: return
        case .relu: for i in 0..<count where values[i] < 0 { values[i] = 0 }
        case .sigmoid: for i in 0..<count { values[i] = FastMath.sigmoid(values[i]) }
        default: for i in 0..<count { values[i] = apply(values[i]) }
        }
    }

    /// gradient[i] *= f'(z[i]), from the pre-activations z and the outputs y. One loop per kind, so each is a plain
    /// vector loop.
    public func backward(preActivations z: UnsafePointer<Float>, outputs y: UnsafePointer<Float>, gradient: UnsafeMutablePointer<Float>,
                         count: Int) {
        switch self {
        case .linear: return
        case .relu: for i in 0..<count { gradient[i] = y[i] > 0 ? gradient[i] : 0 }
        case .leakyRelu: for i in 0..<count { gradient[i] *= y[i] > 0 ? 1 : Activation.leakySlope }
        case .tanh: for i in 0..<count { gradient[i] *= 1 - y[i] * y[i] }
        case .sigmoid: for i in 0..<count { gradient[i] *= y[i] * (1 - y[i]) }
        case .elu: for i in 0..<count { gradient[i] *= z[i] > 0 ? 1 : y[i] + 1 }
        case .gelu, .silu: for i in 0..<count { gradient[i] *= derivative(z: z[i], y: y[i]) }
        }
    }

    /// Initialisation that keeps activations' variance steady through this kind of layer, as Keras and PyTorch
    /// recommend: He (Kaiming) for the rectifiers and their smooth kin (ELU, GELU, SiLU), Glorot (Xavier) otherwise.
    public var initialization: WeightInitialization {
        switch self {
        case .relu, .leakyRelu, .elu, .gelu, .silu: return .heUniform
        case .tanh, .sigmoid, .linear: return .glorotUniform
        }
    }
}

/// 1 / (1 + e^−z), never overflowing.
@inline(__always)
public func logistic(_ z: Float) -> Float { FastMath.sigmoid(z) }

public enum WeightInitialization: String, Sendable {
    /// U(±√(6 / (fanIn + fanOut))) — Keras's Dense default.
    case glorotUniform
    /// U(±√(6 / fanIn)) — torch.nn.init.kaiming_uniform_ for ReLU.
    case heUniform

    public func bound(fanIn: Int, fanOut: Int) -> Float {
        switch self {
        case .glorotUniform: return Float((6.0 / Double(fanIn + fanOut)).squareRoot())
        case .heUniform: return Float((6.0 / Double(fanIn)).squareRoot())
        }
    }
}
