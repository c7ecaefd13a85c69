import AEDistCore
import AEDistIO

/// Means over a whole data set: what validation reports each epoch and what `aedist eval` prints, from one pass.
public struct EvaluationResult {
    public var loss: Double
    public var mse: Double
    /// Variational models: KL(q(z|x) ‖ N(0, I)) per sample (its weighted share is inside `loss`).
    public var kl: Double
    /// Denoising: how far the corrupted inputs are from the clean ones (0 without noise).
    public var noisyMSE: Double
    /// The mean over output values of their variance across samples: near 0 when the model answers every input
    /// with the same picture (collapse).
    public var outputSpread: Double

    static let none = EvaluationResult(loss: .nan, mse: .nan, kl: .nan, noisyMSE: .nan, outputSpread: .nan)
}

extension GradientStep {
    /// Collective: every rank evaluates a contiguous share of `set`, `rows.count / inputSize` rows at a time, and
    /// the sums are added up. Denoising models see inputs corrupted with noise fixed per sample (the validation
    /// epoch's) and are scored against the clean samples; a variational model samples its code with ε fixed per
    /// sample the same way, so every evaluation of the same model and data gives the same numbers.
    func evaluate(_ set: SampleSet, rows: FlatBuffer, communicator comm: Communicator) throws -> EvaluationResult {
        let mine = BatchSchedule.slice(of: 0..<set.rowCount, rank: comm.rank, size: comm.size)
        let width = architecture.inputSize
        let rowsPerPass = rows.count / width
        // Loss, squared error, samples, noisy-input error, KL; then per output value its sum and sum of squares.
        let perValue = 5
        var sums = [Double](repeating: 0, count: perValue + 2 * width)
        try comm.together {
            var start = mine.lowerBound
            while start < mine.upperBound {
                let chunk = start..<min(start + rowsPerPass, mine.upperBound)
                try set.read(chunk, into: rows.pointer)
                let key = NoiseKey(epoch: Corruption.validationEpoch, first: chunk.lowerBound)
                let inputs = inputs(for: rows.pointer, count: chunk.count, key: key)
                let chunkSums = lossSums(inputs: inputs, targets: rows.pointer, count: chunk.count, key: key)
                sums[0] += chunkSums.loss
                sums[1] += chunkSums.squaredError
                sums[2] += Double(chunk.count)
                if corruption != .none {
                    for i in 0..<(chunk.count * width) {
                        let difference = Double(inputs[i] - rows[i])
                        sums[3] += difference * difference / Double(width)
                    }
                }
                sums[4] += chunkSums.kl
                for row in 0..<chunk.count {
                    let output = model.reconstruction + row * width
                    for j in 0..<width {
                        let value = Double(output[j])
                        sums[perValue + j] += value
                        sums[perValue + width + j] += value * value
                    }
                }
                start = chunk.upperBound
            }
        }
        try comm.allReduceSum(&sums)
        let count = sums[2]
        var spread = 0.0
        for j in 0..<width {
            let mean = sums[perValue + j] / count
            spread += max(sums[perValue + width + j] / count - mean * mean, 0)
        }
        return EvaluationResult(loss: sums[0] / count, mse: sums[1] / count, kl: sums[4] / count, noisyMSE: sums[3] / count,
                                outputSpread: spread / Double(width))
    }
}
