import AEDistCore
import XCTest

final class CorruptionTests: XCTestCase {
    func testParsingNamesTheOption() throws {
        XCTAssertEqual(try Corruption("none"), .none)
        XCTAssertEqual(try Corruption("gaussian:0.5"), .gaussian(sigma: 0.5))
        XCTAssertEqual(try Corruption("mask:0.25"), .mask(fraction: 0.25))
        for bad in ["gauss:1", "gaussian", "gaussian:-1", "mask:1.5", "mask:0", "none:3"] {
            XCTAssertThrowsError(try Corruption(bad), bad) { XCTAssertTrue("\($0)".contains("--noise '\(bad)'"), "\($0)") }
        }
    }

    /// The same sample gets the same noise in the same epoch, whichever rank or batch position it lands on.
    func testNoiseIsKeyedBySampleAndEpochOnly() {
        let rows = [Float](repeating: 0.5, count: 8 * 4)
        func corrupted(_ corruption: Corruption, epoch: Int, indices: [Int]) -> [Float] {
            var out = [Float](repeating: 0, count: indices.count * 4)
            rows.withUnsafeBufferPointer { source in
                out.withUnsafeMutableBufferPointer {
                    corruption.apply(to: source.baseAddress!, count: indices.count, width: 4, into: $0.baseAddress!, seed: 7,
                                     epoch: epoch) { indices[$0] }
                }
            }
            return out
        }
        let gaussian = Corruption.gaussian(sigma: 0.3)
        let forward = corrupted(gaussian, epoch: 2, indices: [5, 9])
        let backward = corrupted(gaussian, epoch: 2, indices: [9, 5])
        XCTAssertEqual(Array(forward[0..<4]), Array(backward[4..<8]))
        XCTAssertNotEqual(forward, corrupted(gaussian, epoch: 3, indices: [5, 9]))
        XCTAssertTrue(forward.allSatisfy { (0...1).contains($0) }, "gaussian noise is clipped to [0, 1]")
        XCTAssertNotEqual(forward, Array(rows[0..<8]))
        let masked = corrupted(.mask(fraction: 0.5), epoch: 0, indices: Array(0..<8))
        XCTAssertTrue(masked.allSatisfy { $0 == 0 || $0 == 0.5 })
        XCTAssertTrue(masked.contains(0) && masked.contains(0.5))
    }
}

/// The L1 activity penalty's gradient against finite differences of loss + penalty.
final class SparsityGradientTests: XCTestCase {
    func testL1PenaltyGradientMatchesFiniteDifferences() throws {
        var config = ModelConfig()
        config.spec = "dense:5-3"
        config.activation = .tanh
        let model = Autoencoder(architecture: try ModelArchitecture(config), maxBatch: 2)
        model.initializeParameters(seed: 3)
        model.codePenalty = CodePenalty(l1: 0.05)
        let input: [Float] = [0.1, 0.9, 0.4, 0.7, 0.2, 0.6, 0.3, 0.8, 0.5, 0.05]
        // The encoder's weights and biases: the penalty reaches them only through the code.
        assertModelGradients(model, input: input, batch: 2, loss: .bce, output: .sigmoid, label: "L1 penalty", indices: 0..<(3 * 5 + 3),
                             penalty: { model.codePenaltySum(batch: 2) })
    }
}
