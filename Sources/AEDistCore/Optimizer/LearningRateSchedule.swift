import Foundation

extension ScheduleConfig {
    /// The learning rate at fractional epoch `epoch` (samples seen / samples per epoch) for base rate `base`.
    public func learningRate(base: Double, epoch: Double) -> Double {
        var rate: Double
        switch lrSchedule {
        case .constant: rate = base
        case .step: rate = base * pow(gamma, Double(Int(epoch) / max(stepEpochs, 1)))
        case .cosine:
            let span = max(Double(epochs) - warmupEpochs, 1e-9)
            let progress = min(max((epoch - warmupEpochs) / span, 0), 1)
            rate = minLR + (base - minLR) * 0.5 * (1 + cos(Double.pi * progress))
        }
        if warmupEpochs > 0 && epoch < warmupEpochs { rate *= max(epoch / warmupEpochs, 1e-3) }
        return rate
    }

    /// The scheduled rate for the step after `stepInEpoch` steps of epoch `epochsCompleted + 1`: from the position
    /// in the data, so resumes and rank counts agree.
    public func learningRate(base: Double, epochsCompleted: Int, stepInEpoch: Int, stepsPerEpoch: Int) -> Double {
        learningRate(base: base, epoch: Double(epochsCompleted) + Double(stepInEpoch) / Double(max(stepsPerEpoch, 1)))
    }
}
