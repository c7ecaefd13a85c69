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

    init(model: Autoencoder, config: TrainingConfig, maxRows: Int, deterministicMicroBatch: Int? = nil) {
        self.model = model
        lossKind = config.loss
        seed = config.schedule.seed
        corruption = config.model.noise
        corruptedRows = FlatBuffer(count: corruption == .none ? 1 : maxRows * model.inputSize)
        microBatch = deterministicMicroBatch ?? maxRows
        exactSum = deterministicMicroBatch.map { ExactGradientSum(parameterCount: model.layout.totalCount,
                                                                   maxMicroBatchesPerRank: (maxRows + $0 - 1) / $0) }
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
    /// Training passes (`withGradient`) drop out; evaluation passes do not.
    func lossSums(inputs: UnsafePointer<Float>, targets: UnsafePointer<Float>, count: Int, withGradient: Bool, key: NoiseKey) -> Loss.Sums {
        if architecture.variational {
            let codeSize = architecture.codeSize
            for row in 0..<count {
                var random = RandomStream(seed: seed, RandomStream.Purpose.reparameterization.rawValue,
                                          UInt64(bitPattern: Int64(key.epoch)), UInt64(key.sampleIndex(row)))
                let e = model.epsilon.pointer + row * codeSize
                for i in 0..<codeSize { e[i] = Float(random.nextGaussian()) }
            }
        }
        model.forward(input: inputs, batch: count, context: PassContext(training: withGradient, seed: seed, key: key))
        var sums = Loss.evaluate(lossKind, outputActivation: architecture.outputActivation, logits: model.outputLogits,
                                 output: model.reconstruction, target: targets, batch: count, width: architecture.inputSize,
                                 gradient: withGradient ? model.outputGradient : nil)
        sums.loss += model.codePenaltySum(batch: count)
        if architecture.variational {
            sums.kl = model.klDivergence(batch: count)
            sums.loss += Double(model.klWeight) * sums.kl
        }
        return sums
    }

    /// Forward, loss and backward for one batch's rows, adding the gradients to the model's buffer and the batch's
    /// figures to `message`. Deterministic mode computes each fixed micro-batch's gradient on its own, for the
    /// exact sum.
    func accumulate(rows: UnsafePointer<Float>, count: Int, key: NoiseKey, step: Int, into message: StepMessage) {
        let inputs = inputs(for: rows, count: count, key: key)
        let width = architecture.inputSize
        exactSum?.reset()
        var total = Loss.Sums()
        for start in stride(from: 0, to: count, by: max(microBatch, 1)) {
            let rowsHere = min(microBatch, count - start)
            if exactSum != nil { model.gradients.fill(0) }
            let sums = lossSums(inputs: inputs + start * width, targets: rows + start * width, count: rowsHere,
                                withGradient: true, key: key.skipping(start))
            timeline.mark(.forward, step: step)
            model.backward(input: inputs + start * width, batch: rowsHere,
                           context: PassContext(training: true, seed: seed, key: key.skipping(start)))
            timeline.mark(.backward, step: step)
            exactSum?.store(model.gradients)
            total.loss += sums.loss
            total.squaredError += sums.squaredError
            total.kl += sums.kl
            // The batch's activations feed the next step's sparsity estimate ρ̂ (they travel in the all-reduce).
            model.codePenalty.sparsity?.accumulate(code: model.code, batch: rowsHere, into: message.activationSums)
        }
        message.add(total, samples: count)
    }
}
