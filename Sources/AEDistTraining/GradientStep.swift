import AEDistCore
import Foundation

/// Forward, loss and backward for this rank's rows of a batch: the corruption of a denoising model's inputs, the
/// sampled code of a variational one (ε keyed per sample), the loss and the code penalties. Gradients accumulate in
/// the model's gradient buffer (the step message's first part); the sums and counts go into the step message.
/// Validation and `aedist eval` use the same `lossSums` without the backward pass.
final class GradientStep {
    let model: Autoencoder
    let lossKind: LossKind
    let seed: UInt64
    /// Denoising: the corruption, and the corrupted inputs of a batch (the clean rows stay the targets).
    let corruption: Corruption
    private let corruptedRows: FlatBuffer
    /// Deterministic mode: exact sums of fixed micro-batches' gradients.
    let exactSum: ExactGradientSum?
    let microBatch: Int
    /// Marks the forward and backward phases (the trainer's; a fresh one records nothing).
    var timeline = StepTimeline(eventCapacity: 0)
    /// BatchNorm's statistics over the global batch (nil: no layer needs them, or a use of a trained model).
    let statistics: BatchStatistics?

    /// - Parameter communicator: for statistics over the global batch, when the model has layers that need them.
    init(model: Autoencoder, config: TrainingConfig, maxRows: Int, deterministicMicroBatch: Int? = nil,
         communicator: Communicator? = nil, globalBatchSize: Int = 1) {
        self.model = model
        lossKind = config.loss
        seed = config.schedule.seed
        corruption = config.model.noise
        corruptedRows = FlatBuffer(count: corruption == .none ? 1 : maxRows * model.inputSize)
        microBatch = deterministicMicroBatch ?? maxRows
        exactSum = deterministicMicroBatch.map { ExactGradientSum(parameterCount: model.layout.totalCount,
                                                                   maxMicroBatchesPerRank: (maxRows + $0 - 1) / $0) }
        let statisticsWidth = model.layers.filter(\.spansTheBatch).map { 2 * $0.outputShape.last! + 1 }.max()
        statistics = communicator.flatMap { communicator in
            statisticsWidth.map { BatchStatistics(communicator: communicator,
                                                  exactMicroBatches: deterministicMicroBatch.map { (globalBatchSize + $0 - 1) / $0 },
                                                  maxWidth: $0) }
        }
    }

    var architecture: ModelArchitecture { model.architecture }

    /// The model's inputs for `rows`: corrupted copies when denoising (each sample's noise keyed by its index),
    /// otherwise the rows themselves.
    func inputs(for rows: UnsafePointer<Float>, count: Int, key: NoiseKey) -> UnsafePointer<Float> {
        guard corruption != .none else { return rows }
        corruption.apply(to: rows, count: count, width: architecture.inputSize, into: corruptedRows.pointer,
                         seed: seed, epoch: key.epoch) { key.sampleIndex($0) }
        return UnsafePointer(corruptedRows.pointer)
    }

    /// The model on `inputs`, the loss against `targets` (the same rows unless denoising) with the code penalties
    /// and, for a variational model, the code sampled with each sample's own ε and the weighted KL term. Writes
    /// the output layer's gradient when `withGradient`.
    /// Evaluation: the model in inference mode (no dropout, BatchNorm's running statistics), without gradients.
    func lossSums(inputs: UnsafePointer<Float>, targets: UnsafePointer<Float>, count: Int, key: NoiseKey) -> Loss.Sums {
        lossSums(inputs: inputs, targets: targets, count: count, context: PassContext(training: false, seed: seed, key: key))
    }

    /// The model on `inputs`, the loss against `targets` with the code penalties and a variational model's KL; in
    /// a training `context` also the output layer's gradient.
    private func lossSums(inputs: UnsafePointer<Float>, targets: UnsafePointer<Float>, count: Int, context: PassContext) -> Loss.Sums {
        let key = context.key
        if architecture.variational {
            let codeSize = architecture.codeSize
            for row in 0..<count {
                var random = RandomStream(seed: seed, RandomStream.Purpose.reparameterization.rawValue,
                                          UInt64(bitPattern: Int64(key.epoch)), UInt64(key.sampleIndex(row)))
                let e = model.epsilon.pointer + row * codeSize
                for i in 0..<codeSize { e[i] = Float(random.nextGaussian()) }
            }
        }
        model.forward(input: inputs, batch: count, context: context)
        var sums = Loss.evaluate(lossKind, outputActivation: architecture.outputActivation, logits: model.outputLogits,
                                 output: model.reconstruction, target: targets, batch: count, width: architecture.inputSize,
                                 gradient: context.training ? model.outputGradient : nil)
        sums.loss += model.codePenaltySum(batch: count)
        if architecture.variational {
            sums.kl = model.klDivergence(batch: count)
            sums.loss += Double(model.klWeight) * sums.kl
        }
        return sums
    }

    /// Forward, loss and backward for one batch's rows, adding the gradients to the model's buffer and the batch's
    /// figures to `message`. Deterministic mode computes each fixed micro-batch's gradient on its own (the model
    /// runs a micro-batch at a time, each into its own slot), for the exact sum.
    func accumulate(rows: UnsafePointer<Float>, count: Int, key: NoiseKey, step: Int, into message: StepMessage) throws {
        let inputs = inputs(for: rows, count: count, key: key)
        var context = PassContext(training: true, seed: seed, key: key)
        context.statistics = statistics
        let sums = lossSums(inputs: inputs, targets: rows, count: count, context: context)
        timeline.mark(.forward, step: step)
        model.backward(input: inputs, batch: count, context: context,
                       gradientSlots: exactSum?.slots(count: (count + microBatch - 1) / microBatch))
        try statistics?.check()
        timeline.mark(.backward, step: step)
        // The batch's activations feed the next step's sparsity estimate ρ̂ (they travel in the all-reduce).
        model.codePenalty.sparsity?.accumulate(code: model.code, batch: count, into: message.activationSums)
        message.add(sums, samples: count)
    }
}
