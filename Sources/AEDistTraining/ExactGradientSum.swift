import AEDistCore
import Foundation

/// Order-independent gradient sums for `--deterministic`: floating-point addition is not associative, so the usual
/// all-reduce gives results that depend on how many ranks took part. Here each fixed micro-batch's gradient is
/// computed whole by one rank (same rows, same BLAS shapes, one BLAS thread), converted to 64-bit fixed point with
/// one scale all ranks agree on (from a max-reduction), and summed as integers, which is exact. The result is the
/// same bits at 1, 2, 3 or 8 ranks. Cost: one stored gradient per local micro-batch and two more small
/// collectives a step.
final class ExactGradientSum {
    let parameterCount: Int
    private let microBatchGradients: FlatBuffer
    private let fixedPoint: UnsafeMutableBufferPointer<Int64>
    private let capacity: Int
    private(set) var storedCount = 0

    init(parameterCount: Int, maxMicroBatchesPerRank: Int) {
        self.parameterCount = parameterCount
        capacity = max(1, maxMicroBatchesPerRank)
        microBatchGradients = FlatBuffer(count: parameterCount * capacity)
        fixedPoint = .allocate(capacity: max(parameterCount, 1))
    }

    deinit { fixedPoint.deallocate() }

    func reset() { storedCount = 0 }

    /// Zeroed room for `count` micro-batches' gradients, `parameterCount` floats apart, for the model's backward
    /// pass to fill.
    func slots(count: Int) -> (base: UnsafeMutablePointer<Float>, stride: Int) {
        precondition(count <= capacity, "more micro-batches than the step was sized for")
        microBatchGradients.pointer.update(repeating: 0, count: count * parameterCount)
        storedCount = count
        return (microBatchGradients.pointer, parameterCount)
    }

    /// Sums every rank's stored micro-batch gradients exactly into the first `parameterCount` values of `gradients`.
    func reduce(into gradients: FlatBuffer, totalMicroBatches: Int, step: Int, communicator: Communicator) throws {
        let stored = microBatchGradients.pointer
        var largest = 0.0
        for i in 0..<(storedCount * parameterCount) {
            let magnitude = Double(abs(stored[i]))
            if !(magnitude <= largest) { largest = magnitude.isNaN ? .infinity : magnitude }
        }
        var agreed = [largest]
        try communicator.allReduceMax(&agreed)
        guard agreed[0].isFinite else {
            throw RunFailure("a gradient became non-finite at step \(step); try a smaller --lr")
        }
        guard agreed[0] > 0 else {
            gradients.pointer.update(repeating: 0, count: parameterCount)
            return
        }
        // |Σ| ≤ largest · micro-batches < 2^62 after scaling: integer sums cannot overflow.
        let exponent = Int((agreed[0] * Double(max(totalMicroBatches, 1))).exponent) + 1
        let scale = Double(sign: .plus, exponent: 62 - exponent, significand: 1)
        fixedPoint.update(repeating: 0)
        for slot in 0..<storedCount {
            let values = stored + slot * parameterCount
            for i in 0..<parameterCount { fixedPoint[i] &+= Int64((Double(values[i]) * scale).rounded()) }
        }
        try communicator.allReduceSum(fixedPoint)
        for i in 0..<parameterCount { gradients.pointer[i] = Float(Double(fixedPoint[i]) / scale) }
    }
}
