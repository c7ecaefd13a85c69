import AEDistCore
import Foundation
import XCTest

final class ActivationTests: XCTestCase {
    /// Points clear of ReLU's kink at 0, where a finite difference would straddle it.
    static let probePoints: [Float] = [-4, -2.5, -1.2, -0.4, -0.05, 0.05, 0.3, 0.9, 2.5, 4]

    /// `derivative(z:y:)` uses z or y = f(z), whichever is cheaper; check it against central differences of `apply`.
    func testDerivativeMatchesFiniteDifferencesOfApply() {
        for activation in Activation.allCases {
            var analytic: [Double] = [], numeric: [Double] = []
            for z in Self.probePoints {
                let step: Float = 1e-2
                let above = z + step, below = z - step
                // Divide by the float difference actually taken, not 2·step, which rounding changes.
                numeric.append((Double(activation.apply(above)) - Double(activation.apply(below))) / Double(above - below))
                analytic.append(Double(activation.derivative(z: z, y: activation.apply(z))))
            }
            // Central differences err by step²·f'''/6 ≈ 2e-5 here; float rounding adds ~1e-5.
            assertAllClose(analytic, numeric, absolute: 2e-4, relative: 1e-3, "\(activation.rawValue) derivative")
        }
    }

    func testApplyMatchesReference() {
        for activation in Activation.allCases {
            let actual = Self.probePoints.map { Double(activation.apply($0)) }
            let expected = Self.probePoints.map { referenceActivation(activation, Double($0)) }
            assertAllClose(actual, expected, absolute: 1e-6, relative: 1e-6, "\(activation.rawValue) apply")
        }
    }

    /// The in-place buffer versions must agree with the scalar ones, including at exactly 0 (a dead ReLU passes no
    /// gradient).
    func testBufferFormsAgreeWithScalarForms() {
        let points = Self.probePoints + [0]
        for activation in Activation.allCases {
            let z = FlatBuffer(points), buffer = FlatBuffer(points)
            activation.apply(buffer.pointer, count: buffer.count)
            XCTAssertEqual(buffer.array, points.map(activation.apply), "\(activation.rawValue) apply(values:count:)")

            let gradient = FlatBuffer([Float](repeating: 1.5, count: points.count))
            activation.backward(preActivations: z.pointer, outputs: buffer.pointer, gradient: gradient.pointer, count: gradient.count)
            XCTAssertEqual(gradient.array, zip(points, buffer.array).map { 1.5 * activation.derivative(z: $0, y: $1) },
                           "\(activation.rawValue) backward(preActivations:outputs:gradient:count:)")
        }
    }

    /// The two-branch logistic never overflows and stays symmetric.
    func testLogisticIsStableAtExtremes() {
        for z: Float in [-1000, -100, -20, 0, 20, 100, 1000] {
            let y = logistic(z)
            XCTAssertTrue(y.isFinite && y >= 0 && y <= 1, "logistic(\(z)) = \(y)")
            XCTAssertEqual(y + logistic(-z), 1, accuracy: 1e-6, "logistic(\(z)) + logistic(\(-z))")
        }
        XCTAssertEqual(logistic(0), 0.5)
        XCTAssertEqual(logistic(1000), 1)
        XCTAssertLessThan(logistic(-1000), 1e-37)
    }

    func testRawValuesAreTheSpecSpellings() {
        XCTAssertEqual(Activation(rawValue: "leaky_relu"), .leakyRelu)
        XCTAssertEqual(Set(Activation.allCases.map(\.rawValue)), ["relu", "tanh", "sigmoid", "linear", "leaky_relu", "elu", "gelu", "silu"])
    }
}

final class LossTests: XCTestCase {
    /// Runs `Loss.evaluate` on rows of logits, the output activation applied as the model would.
    private func evaluate(_ kind: LossKind, output activation: Activation, logits: [[Float]], targets: [[Float]])
        -> (sums: Loss.Sums, gradient: [Float]) {
        let width = logits[0].count, batch = logits.count
        let z = FlatBuffer(logits.flatMap { $0 }), x = FlatBuffer(targets.flatMap { $0 })
        let y = FlatBuffer(z.array.map(activation.apply))
        let gradient = FlatBuffer(count: batch * width)
        let sums = Loss.evaluate(kind, outputActivation: activation, logits: z.pointer, output: y.pointer,
                                 target: x.pointer, batch: batch, width: width, gradient: gradient.pointer)
        // Evaluation without a gradient buffer must give the same sums.
        let evaluationOnly = Loss.evaluate(kind, outputActivation: activation, logits: z.pointer, output: y.pointer,
                                           target: x.pointer, batch: batch, width: width, gradient: nil)
        XCTAssertEqual(sums, evaluationOnly)
        return (sums, gradient.array)
    }

    /// Saturated logits: a confident wrong answer costs ≈|z| and a confident right one ≈0, all finite, and the
    /// gradient is exactly (σ(z) − x)/width.
    func testBCEIsStableForSaturatedLogits() {
        for magnitude: Float in [100, 1000] {
            let wrong = evaluate(.bce, output: .sigmoid, logits: [[magnitude, -magnitude]], targets: [[0, 1]])
            XCTAssertTrue(wrong.sums.loss.isFinite)
            XCTAssertEqual(wrong.sums.loss, Double(magnitude), accuracy: 1e-3 * Double(magnitude), "wrong sign, |z| = \(magnitude)")
            XCTAssertEqual(wrong.gradient, [0.5, -0.5], "(σ(z) − x)/width with σ saturated")

            let right = evaluate(.bce, output: .sigmoid, logits: [[magnitude, -magnitude]], targets: [[1, 0]])
            XCTAssertTrue(right.sums.loss.isFinite)
            XCTAssertEqual(right.sums.loss, 0, accuracy: 1e-6, "right sign, |z| = \(magnitude)")
            // σ(−100) − 0 is a denormal, not exactly 0.
            XCTAssertLessThan(right.gradient.map(abs).max()!, 1e-30)
        }
    }

    /// Moderate logits and fractional targets: the logit form equals −[x·log σ + (1−x)·log(1−σ)], per-sample mean,
    /// summed over samples.
    func testBCEMatchesTheTextbookFormula() {
        let logits: [[Float]] = [[-2, 0.5, 1.5], [0.1, -0.7, 3]], targets: [[Float]] = [[0.1, 0.5, 0.9], [1, 0, 0.3]]
        let (sums, gradient) = evaluate(.bce, output: .sigmoid, logits: logits, targets: targets)
        var expectedLoss = 0.0, expectedSquared = 0.0, expectedGradient: [Double] = []
        for (zRow, xRow) in zip(logits, targets) {
            var rowLoss = 0.0, rowSquared = 0.0
            for (z, x) in zip(zRow.map(Double.init), xRow.map(Double.init)) {
                let s = 1 / (1 + exp(-z))
                rowLoss += -(x * log(s) + (1 - x) * log(1 - s))
                rowSquared += (s - x) * (s - x)
                expectedGradient.append((s - x) / 3)
            }
            expectedLoss += rowLoss / 3
            expectedSquared += rowSquared / 3
        }
        assertAllClose([sums.loss, sums.squaredError], [expectedLoss, expectedSquared], absolute: 1e-6, relative: 1e-6,
                       "BCE sums (loss, squared error)")
        assertAllClose(gradient, expectedGradient, absolute: 1e-7, relative: 1e-6, "BCE gradient")
    }

    /// MSE: per-sample mean of (y − x)², and dL/dz = 2(y − x)/width · f'(z) through the output activation.
    func testMSEValuesAndGradientThroughOutputActivation() {
        let logits: [[Float]] = [[0.2, -0.4], [1.0, 0.6]], targets: [[Float]] = [[0.5, 0.1], [0.8, 0.9]]
        for activation in [Activation.linear, .sigmoid] {
            let (sums, gradient) = evaluate(.mse, output: activation, logits: logits, targets: targets)
            var expectedLoss = 0.0, expectedGradient: [Double] = []
            for (zRow, xRow) in zip(logits, targets) {
                var rowLoss = 0.0
                for (z, x) in zip(zRow.map(Double.init), xRow.map(Double.init)) {
                    let y = referenceActivation(activation, z)
                    let slope = activation == .sigmoid ? y * (1 - y) : 1
                    rowLoss += (y - x) * (y - x)
                    expectedGradient.append(2 * (y - x) / 2 * slope)
                }
                expectedLoss += rowLoss / 2
            }
            assertAllClose([sums.loss, sums.squaredError], [expectedLoss, expectedLoss], absolute: 1e-7, relative: 1e-6,
                           "MSE sums, \(activation.rawValue) output")
            assertAllClose(gradient, expectedGradient, absolute: 1e-7, relative: 1e-6, "MSE gradient, \(activation.rawValue) output")
        }
    }
}

/// The vectorizable elementwise functions against libm, over the ranges training meets.
final class FastMathTests: XCTestCase {
    func testExpMatchesLibmToAFewUlps() {
        var worst: Float = 0
        for i in 0...20_000 {
            let x = -80 + Float(i) * 0.008
            worst = max(worst, abs(FastMath.exp(x) - Foundation.exp(x)) / Foundation.exp(x))
        }
        XCTAssertLessThan(worst, 5e-7)
        XCTAssertTrue(FastMath.exp(.nan).isNaN)
        XCTAssertEqual(FastMath.exp(0), 1)
    }

    func testSigmoidAndLogMatchLibm() {
        for i in 0...20_000 {
            let z = -40 + Float(i) * 0.004
            let exact = 1 / (1 + Foundation.exp(-Double(z)))
            XCTAssertEqual(Double(FastMath.sigmoid(z)), exact, accuracy: 1e-7 + 5e-7 * exact, "sigmoid(\(z))")
            let m = 0.5 + Float(i) / 40_000
            XCTAssertEqual(Double(FastMath.logHalfToOne(m)), Foundation.log(Double(m)), accuracy: 1.5e-7, "log(\(m))")
        }
        XCTAssertTrue(FastMath.sigmoid(.nan).isNaN)
        XCTAssertEqual(FastMath.logHalfToOne(1), 0)
    }
}
