import AEDistCore
import Foundation
import XCTest

/// Each optimizer against update rules worked by hand in float64 (PyTorch's semantics, as Optimizer.swift states),
/// for a two-parameter vector over three steps with fixed gradients. The arithmetic below is written out step by
/// step rather than looped, so it reads as the textbook rule and shares nothing with the implementation.
final class OptimizerTests: XCTestCase {
    static let start = Pair(0.5, -1.0)
    /// Gradients for steps 1, 2, 3: signs change so momentum and averages are exercised in both directions, and
    /// every value is exact in float32, so the hand computation starts from exactly what the optimizer sees.
    static let (g1, g2, g3) = (Pair(0.125, -0.25), Pair(-0.375, 0.5), Pair(0.25, 0.0625))
    /// A float32 step on O(1) values against float64: a few ulps after three steps.
    static let tolerance = 2e-6

    func testSGD() {
        // Learning rates differ per step: the schedule's value must be the one used.
        let (lr1, lr2, lr3) = (0.1, 0.05, 0.2)
        let p1 = Self.start - lr1 * Self.g1
        let p2 = p1 - lr2 * Self.g2
        let p3 = p2 - lr3 * Self.g3
        let optimizer = run(sgd(), learningRates: [lr1, lr2, lr3], expect: [p1, p2, p3], "sgd")
        XCTAssertTrue(optimizer.state.isEmpty, "plain SGD keeps no state")
    }

    func testSGDWithWeightDecay() {
        // L2 penalty added to the gradient: g + λ·p.
        let lr = 0.1, wd = 0.1
        let p1 = Self.start - lr * (Self.g1 + wd * Self.start)
        let p2 = p1 - lr * (Self.g2 + wd * p1)
        let p3 = p2 - lr * (Self.g3 + wd * p2)
        run(sgd(weightDecay: wd), learningRates: [lr, lr, lr], expect: [p1, p2, p3], "sgd weight decay")
    }

    func testSGDWithMomentum() {
        // PyTorch: v ← μ·v + g (v starts at g), p ← p − lr·v.
        let lr = 0.1, mu = 0.9
        let v1 = Self.g1
        let p1 = Self.start - lr * v1
        let v2 = mu * v1 + Self.g2
        let p2 = p1 - lr * v2
        let v3 = mu * v2 + Self.g3
        let p3 = p2 - lr * v3
        let optimizer = run(sgd(momentum: mu), learningRates: [lr, lr, lr], expect: [p1, p2, p3], "sgd momentum")
        assertState(optimizer, "momentum_buffer", v3)
    }

    func testSGDWithMomentumAndWeightDecay() {
        // The decay joins the gradient before it enters the momentum buffer.
        let lr = 0.1, mu = 0.9, wd = 0.05
        let d1 = Self.g1 + wd * Self.start
        let v1 = d1
        let p1 = Self.start - lr * v1
        let d2 = Self.g2 + wd * p1
        let v2 = mu * v1 + d2
        let p2 = p1 - lr * v2
        let d3 = Self.g3 + wd * p2
        let v3 = mu * v2 + d3
        let p3 = p2 - lr * v3
        run(sgd(momentum: mu, weightDecay: wd), learningRates: [lr, lr, lr], expect: [p1, p2, p3], "sgd momentum + decay")
    }

    func testSGDWithNesterovMomentum() {
        // PyTorch's Nesterov: v ← μ·v + g, p ← p − lr·(g + μ·v).
        let lr = 0.1, mu = 0.9
        let v1 = Self.g1
        let p1 = Self.start - lr * (Self.g1 + mu * v1)
        let v2 = mu * v1 + Self.g2
        let p2 = p1 - lr * (Self.g2 + mu * v2)
        let v3 = mu * v2 + Self.g3
        let p3 = p2 - lr * (Self.g3 + mu * v3)
        var config = sgd(momentum: mu)
        config.nesterov = true
        let optimizer = run(config, learningRates: [lr, lr, lr], expect: [p1, p2, p3], "sgd nesterov")
        assertState(optimizer, "momentum_buffer", v3)
    }

    func testAdamWithBiasCorrection() {
        // Kingma & Ba with ε outside the root (as PyTorch): m̂ = m/(1−β₁ᵗ), v̂ = v/(1−β₂ᵗ), p ← p − lr·m̂/(√v̂ + ε).
        let lr = 0.01, b1 = 0.9, b2 = 0.999, eps = 1e-8
        let m1 = (1 - b1) * Self.g1
        let v1 = (1 - b2) * Self.g1 * Self.g1
        let p1 = Self.start - lr * (m1 / (1 - b1)) / (sqrt(v1 / (1 - b2)) + eps)
        let m2 = b1 * m1 + (1 - b1) * Self.g2
        let v2 = b2 * v1 + (1 - b2) * Self.g2 * Self.g2
        let p2 = p1 - lr * (m2 / (1 - b1 * b1)) / (sqrt(v2 / (1 - b2 * b2)) + eps)
        let m3 = b1 * m2 + (1 - b1) * Self.g3
        let v3 = b2 * v2 + (1 - b2) * Self.g3 * Self.g3
        let p3 = p2 - lr * (m3 / (1 - b1 * b1 * b1)) / (sqrt(v3 / (1 - b2 * b2 * b2)) + eps)
        let optimizer = run(adam(.adam), learningRates: [lr, lr, lr], expect: [p1, p2, p3], "adam")
        // With bias correction the first step moves each parameter by ≈ lr, whatever the gradient's scale.
        XCTAssertEqual(abs(p1.a - Self.start.a), lr, accuracy: 1e-6)
        assertState(optimizer, "exp_avg", m3)
        assertState(optimizer, "exp_avg_sq", v3)
        XCTAssertEqual(optimizer.stepCount, 3)
    }

    func testAdamWithL2WeightDecay() {
        // Adam's weight_decay is an L2 term added to the gradient before the moments. A large ε makes its placement
        // count: PyTorch adds it to √v̂ (bias-corrected), not to √v as TensorFlow's ε̂ does.
        let lr = 0.01, b1 = 0.9, b2 = 0.999, eps = 1e-2, wd = 0.1
        let d1 = Self.g1 + wd * Self.start
        let m1 = (1 - b1) * d1
        let v1 = (1 - b2) * d1 * d1
        let p1 = Self.start - lr * (m1 / (1 - b1)) / (sqrt(v1 / (1 - b2)) + eps)
        let d2 = Self.g2 + wd * p1
        let m2 = b1 * m1 + (1 - b1) * d2
        let v2 = b2 * v1 + (1 - b2) * d2 * d2
        let p2 = p1 - lr * (m2 / (1 - b1 * b1)) / (sqrt(v2 / (1 - b2 * b2)) + eps)
        run(adam(.adam, weightDecay: wd, epsilon: eps), learningRates: [lr, lr], expect: [p1, p2], "adam L2 decay")
    }

    func testAdamWDecouplesWeightDecay() {
        // AdamW: p ← p·(1 − lr·λ) first, then the Adam step on the raw gradient (large ε as in the L2 test).
        let lr = 0.01, b1 = 0.9, b2 = 0.999, eps = 1e-2, wd = 0.1
        let m1 = (1 - b1) * Self.g1
        let v1 = (1 - b2) * Self.g1 * Self.g1
        let p1 = (1 - lr * wd) * Self.start - lr * (m1 / (1 - b1)) / (sqrt(v1 / (1 - b2)) + eps)
        let m2 = b1 * m1 + (1 - b1) * Self.g2
        let v2 = b2 * v1 + (1 - b2) * Self.g2 * Self.g2
        let p2 = (1 - lr * wd) * p1 - lr * (m2 / (1 - b1 * b1)) / (sqrt(v2 / (1 - b2 * b2)) + eps)
        let m3 = b1 * m2 + (1 - b1) * Self.g3
        let v3 = b2 * v2 + (1 - b2) * Self.g3 * Self.g3
        let p3 = (1 - lr * wd) * p2 - lr * (m3 / (1 - b1 * b1 * b1)) / (sqrt(v3 / (1 - b2 * b2 * b2)) + eps)
        let optimizer = run(adam(.adamw, weightDecay: wd, epsilon: eps), learningRates: [lr, lr, lr], expect: [p1, p2, p3], "adamw")
        // The moments saw the raw gradients only.
        assertState(optimizer, "exp_avg", m3)
        assertState(optimizer, "exp_avg_sq", v3)
    }

    func testRMSprop() {
        // PyTorch: s ← ρ·s + (1−ρ)·g², p ← p − lr·g/(√s + ε). A large ε makes its place (outside the root) count.
        let lr = 0.01, rho = 0.9, eps = 1e-2
        let s1 = (1 - rho) * Self.g1 * Self.g1
        let p1 = Self.start - lr * Self.g1 / (sqrt(s1) + eps)
        let s2 = rho * s1 + (1 - rho) * Self.g2 * Self.g2
        let p2 = p1 - lr * Self.g2 / (sqrt(s2) + eps)
        let s3 = rho * s2 + (1 - rho) * Self.g3 * Self.g3
        let p3 = p2 - lr * Self.g3 / (sqrt(s3) + eps)
        let optimizer = run(rmsprop(rho: rho, epsilon: eps), learningRates: [lr, lr, lr], expect: [p1, p2, p3], "rmsprop")
        assertState(optimizer, "square_avg", s3)
    }

    func testRMSpropWithMomentum() {
        // PyTorch: b ← μ·b + g/(√s + ε), p ← p − lr·b.
        let lr = 0.01, rho = 0.9, eps = 1e-2, mu = 0.5
        let s1 = (1 - rho) * Self.g1 * Self.g1
        let b1 = Self.g1 / (sqrt(s1) + eps)
        let p1 = Self.start - lr * b1
        let s2 = rho * s1 + (1 - rho) * Self.g2 * Self.g2
        let b2 = mu * b1 + Self.g2 / (sqrt(s2) + eps)
        let p2 = p1 - lr * b2
        let s3 = rho * s2 + (1 - rho) * Self.g3 * Self.g3
        let b3 = mu * b2 + Self.g3 / (sqrt(s3) + eps)
        let p3 = p2 - lr * b3
        let optimizer = run(rmsprop(rho: rho, momentum: mu, epsilon: eps), learningRates: [lr, lr, lr], expect: [p1, p2, p3],
                            "rmsprop momentum")
        assertState(optimizer, "square_avg", s3)
        assertState(optimizer, "momentum_buffer", b3)
    }

    func testStateNames() {
        XCTAssertEqual(Optimizer.stateNames(sgd()), [])
        XCTAssertEqual(Optimizer.stateNames(sgd(momentum: 0.9)), ["momentum_buffer"])
        XCTAssertEqual(Optimizer.stateNames(adam(.adam)), ["exp_avg", "exp_avg_sq"])
        XCTAssertEqual(Optimizer.stateNames(adam(.adamw)), ["exp_avg", "exp_avg_sq"])
        XCTAssertEqual(Optimizer.stateNames(rmsprop(rho: 0.99)), ["square_avg"])
        XCTAssertEqual(Optimizer.stateNames(rmsprop(rho: 0.99, momentum: 0.9)), ["square_avg", "momentum_buffer"])

        let optimizer = Optimizer(config: adam(.adam), parameterCount: 5)
        XCTAssertEqual(optimizer.state.map(\.name), ["exp_avg", "exp_avg_sq"])
        XCTAssertTrue(optimizer.state.allSatisfy { $0.buffer.count == 5 && $0.buffer.array.allSatisfy { $0 == 0 } },
                      "state buffers are parameter-sized and start at zero")
        XCTAssertNil(optimizer.stateBuffer("momentum_buffer"))
        XCTAssertEqual(optimizer.stepCount, 0)
    }

    // MARK: - Helpers

    /// Steps `config` from `start` with g1, g2, g3 (as many as `learningRates`), comparing the parameters after
    /// every step with `expect`. The gradient buffer is one longer than the parameters, as the trainer's is, and the
    /// extra value is huge: it must be ignored.
    @discardableResult
    private func run(_ config: OptimizerConfig, learningRates: [Double], expect expected: [Pair], _ label: String,
                     file: StaticString = #filePath, line: UInt = #line) -> Optimizer {
        let gradients = [Self.g1, Self.g2, Self.g3]
        let parameters = FlatBuffer(Self.start.floats)
        let optimizer = Optimizer(config: config, parameterCount: parameters.count)
        for (step, learningRate) in learningRates.enumerated() {
            let gradient = FlatBuffer(gradients[step].floats + [1e6])
            optimizer.step(parameters: parameters, gradients: gradient, learningRate: learningRate)
            assertAllClose(parameters.array, expected[step].doubles, absolute: Self.tolerance,
                           "\(label): parameters after step \(step + 1)", file: file, line: line)
        }
        XCTAssertEqual(optimizer.stepCount, learningRates.count, file: file, line: line)
        return optimizer
    }

    private func assertState(_ optimizer: Optimizer, _ name: String, _ expected: Pair,
                             file: StaticString = #filePath, line: UInt = #line) {
        guard let buffer = optimizer.stateBuffer(name) else {
            return XCTFail("no state buffer named \(name)", file: file, line: line)
        }
        assertAllClose(buffer.array, expected.doubles, absolute: Self.tolerance, relative: 1e-6, "state \(name)",
                       file: file, line: line)
    }

    private func sgd(momentum: Double = 0, weightDecay: Double = 0) -> OptimizerConfig {
        var config = OptimizerConfig()
        config.kind = .sgd
        config.momentum = momentum
        config.weightDecay = weightDecay
        return config
    }

    private func adam(_ kind: OptimizerConfig.Kind, weightDecay: Double = 0, epsilon: Double = 1e-8) -> OptimizerConfig {
        var config = OptimizerConfig()
        config.kind = kind
        config.beta1 = 0.9
        config.beta2 = 0.999
        config.epsilon = epsilon
        config.weightDecay = weightDecay
        return config
    }

    private func rmsprop(rho: Double, momentum: Double = 0, epsilon: Double = 1e-8) -> OptimizerConfig {
        var config = OptimizerConfig()
        config.kind = .rmsprop
        config.rho = rho
        config.momentum = momentum
        config.epsilon = epsilon
        return config
    }
}

/// Two parameters' worth of float64 arithmetic, so the hand computations read like the update rules.
struct Pair {
    var a, b: Double
    init(_ a: Double, _ b: Double) { self.a = a; self.b = b }
    var floats: [Float] { [Float(a), Float(b)] }
    var doubles: [Double] { [a, b] }

    static func + (x: Pair, y: Pair) -> Pair { Pair(x.a + y.a, x.b + y.b) }
    static func - (x: Pair, y: Pair) -> Pair { Pair(x.a - y.a, x.b - y.b) }
    static func * (x: Pair, y: Pair) -> Pair { Pair(x.a * y.a, x.b * y.b) }
    static func / (x: Pair, y: Pair) -> Pair { Pair(x.a / y.a, x.b / y.b) }
    static func * (s: Double, x: Pair) -> Pair { Pair(s * x.a, s * x.b) }
    static func / (x: Pair, s: Double) -> Pair { Pair(x.a / s, x.b / s) }
    static func + (x: Pair, s: Double) -> Pair { Pair(x.a + s, x.b + s) }
}

func sqrt(_ x: Pair) -> Pair { Pair(x.a.squareRoot(), x.b.squareRoot()) }
