import AEDistCore

/// What one step's all-reduce carries, in one float32 buffer: [gradients | statistics | code activation sums].
/// Summing it over the ranks gives every rank the global batch's gradient, its loss sums and sample count, whether
/// any rank failed or wants to stop (and why), and for KL sparsity each code unit's activation sum: one collective a
/// step, whatever the model uses. The layout lives here and nowhere else.
final class StepMessage {
    /// The statistics after the gradients, one float each.
    enum Statistic: Int, CaseIterable {
        case lossSum, squaredErrorSum, klSum, sampleCount, failedRanks
        /// Ranks asking to stop, and of those that received a signal: how many and the sum of the signal numbers.
        case ranksWantingToStop, signalRanks, signalSum
    }

    let parameterCount: Int
    let activationUnits: Int
    /// The whole message.
    let buffer: FlatBuffer
    /// The first `parameterCount` floats: the model accumulates its gradients here.
    let gradients: FlatBuffer

    init(parameterCount: Int, activationUnits: Int) {
        self.parameterCount = parameterCount
        self.activationUnits = activationUnits
        buffer = FlatBuffer(count: parameterCount + Statistic.allCases.count + activationUnits)
        gradients = FlatBuffer(viewing: buffer.pointer, count: parameterCount, owner: buffer)
    }

    /// Everything but the gradients: what crosses the network in deterministic mode, where the gradients follow as
    /// an exact sum.
    var statisticsAndSums: UnsafeMutableBufferPointer<Float> {
        UnsafeMutableBufferPointer(start: buffer.pointer + parameterCount, count: buffer.count - parameterCount)
    }

    subscript(_ statistic: Statistic) -> Float {
        get { buffer.pointer[parameterCount + statistic.rawValue] }
        set { buffer.pointer[parameterCount + statistic.rawValue] = newValue }
    }

    /// KL sparsity: per code unit, the sum of its activations over the batch.
    var activationSums: UnsafeMutablePointer<Float> { buffer.pointer + parameterCount + Statistic.allCases.count }

    func clear() { buffer.fill(0) }

    /// Adds one batch's loss sums and sample count.
    func add(_ sums: Loss.Sums, samples: Int) {
        self[.lossSum] += Float(sums.loss)
        self[.squaredErrorSum] += Float(sums.squaredError)
        self[.klSum] += Float(sums.kl)
        self[.sampleCount] += Float(samples)
    }

    func markFailed() { self[.failedRanks] = 1 }

    /// `code` is the stop policy's reason: 0 for none, the time limit, or a signal number.
    func requestStop(code: Int32, isSignal: Bool) {
        guard code != 0 else { return }
        self[.ranksWantingToStop] = 1
        if isSignal {
            self[.signalRanks] = 1
            self[.signalSum] = Float(code)
        }
    }

    // After the all-reduce: the global batch's figures.
    var anyRankFailed: Bool { self[.failedRanks] > 0 }
    var anyRankWantsToStop: Bool { self[.ranksWantingToStop] > 0 }
    var globalSampleCount: Int { Int(self[.sampleCount].rounded()) }
    var lossSum: Double { Double(self[.lossSum]) }
    var klSum: Double { Double(self[.klSum]) }
}
