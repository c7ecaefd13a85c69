import Foundation

/// Where a run stands: enough to continue the exact sample sequence at any number of ranks.
public struct TrainingProgress: Equatable, Sendable {
    public var epochsCompleted = 0
    /// Steps already taken in the epoch after `epochsCompleted` (0 at an epoch boundary).
    public var stepInEpoch = 0
    public var globalStep = 0
    /// Global samples consumed; with the seed and batch size it fixes where the sample order continues.
    public var samplesSeen = 0
    /// Of the epoch in progress (mid-epoch checkpoints): loss sum, samples and seconds so far, so its metrics row
    /// covers the whole epoch after a resume.
    public var epochLossSum = 0.0
    public var epochSamples = 0
    public var epochSeconds = 0.0
    public var epochKLSum = 0.0
    /// KL sparsity: the running estimate ρ̂ of each code unit's mean activation (empty when not used).
    public var sparsityEstimate: [Double] = []
    public init() {}
}

/// One row per finished epoch.
public struct EpochMetrics: Equatable, Sendable {
    public var epoch: Int
    public var globalStep: Int
    public var samplesSeen: Int
    public var trainLoss: Double
    /// NaN where there is no validation set.
    public var valLoss: Double
    public var valMSE: Double
    public var samplesPerSecond: Double
    /// Seconds of training since the run first started, summed over resumes.
    public var wallTime: Double
    public var learningRate: Double

    public init(epoch: Int, globalStep: Int, samplesSeen: Int, trainLoss: Double, valLoss: Double, valMSE: Double,
                samplesPerSecond: Double, wallTime: Double, learningRate: Double) {
        self.epoch = epoch
        self.globalStep = globalStep
        self.samplesSeen = samplesSeen
        self.trainLoss = trainLoss
        self.valLoss = valLoss
        self.valMSE = valMSE
        self.samplesPerSecond = samplesPerSecond
        self.wallTime = wallTime
        self.learningRate = learningRate
    }

    public static let csvHeader = "epoch,global_step,samples_seen,train_loss,val_loss,val_mse,samples_per_sec,wall_time_s,lr"

    public var csvLine: String {
        func number(_ value: Double) -> String { value.isNaN ? "" : String(format: "%.6g", value) }
        return "\(epoch),\(globalStep),\(samplesSeen),\(number(trainLoss)),\(number(valLoss)),\(number(valMSE)),"
            + "\(String(format: "%.1f", samplesPerSecond)),\(String(format: "%.3f", wallTime)),\(number(learningRate))"
    }
}
