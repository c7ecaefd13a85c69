import AEDistCore
import AEDistIO
import Foundation

/// What people train autoencoders for, applied to any HDF5 data set with a trained checkpoint: codes (encode),
/// reconstructions, anomaly scores, and losses (eval). Every rank takes a contiguous share of the rows.
public final class TrainedModel {
    public let checkpointPath: String
    public let config: TrainingConfig
    public let architecture: ModelArchitecture
    let model: Autoencoder
    let communicator: Communicator
    static let rowsPerPass = 256

    public init(checkpointPath: String, communicator: Communicator) throws {
        let checkpoint = try communicator.together { try Checkpoint.read(from: checkpointPath) }
        self.checkpointPath = checkpointPath
        self.communicator = communicator
        config = checkpoint.config
        architecture = try ModelArchitecture(checkpoint.config.model)
        model = Autoencoder(architecture: architecture, maxBatch: Self.rowsPerPass)
        model.parameters.copy(from: checkpoint.parameters)
        model.buffers.copy(from: checkpoint.buffers)
        // The loss as training computed it, for `evaluate`: the KL weight and the code penalties at their state.
        model.klWeight = Float(config.model.beta / Double(architecture.inputSize))
        let sparsity = config.model.sparsityTarget > 0
            ? KLSparsity(target: config.model.sparsityTarget, weight: config.model.sparsityWeight, units: architecture.codeSize) : nil
        sparsity?.restore(checkpoint.progress.sparsityEstimate)
        model.codePenalty = CodePenalty(l1: Float(config.model.l1Activity), sparsity: sparsity)
        // A trained variational model encodes to its mean and reconstructs from it.
        model.sampleCode = false
    }

    /// The samples at `path`:`dataset` (default: the embedded MNIST subset), which must fit the model's input.
    public func open(data path: String?, dataset: String, scale: Double?) throws -> SampleSet {
        try communicator.together {
            guard let file = path ?? EmbeddedData.mnistPath else { throw RunFailure("the embedded data set is missing; pass --data FILE.h5") }
            let set = try SampleSet(file: try HDF5File.open(file), datasetPath: dataset, scale: scale, cache: .never,
                                    channelsFirst: config.data.channelsFirst)
            if let mismatch = architecture.mismatch(sampleShape: set.sampleShape) {
                throw RunFailure("\(set.name) has samples of \(mismatch) (\(checkpointPath))")
            }
            return set
        }
    }

    /// This rank's rows of `set`, through the model `rowsPerPass` at a time; `body` sees each pass's row range,
    /// inputs and the model (whose outputs hold that pass).
    func forEachPass(over set: SampleSet, _ body: (Range<Int>, UnsafePointer<Float>) throws -> Void) throws {
        let mine = BatchSchedule.slice(of: 0..<set.rowCount, rank: communicator.rank, size: communicator.size)
        let inputs = FlatBuffer(count: Self.rowsPerPass * set.rowWidth)
        try communicator.together {
            var start = mine.lowerBound
            while start < mine.upperBound {
                let rows = start..<min(start + Self.rowsPerPass, mine.upperBound)
                try set.read(rows, into: inputs.pointer)
                model.forward(input: inputs.pointer, batch: rows.count)
                try body(rows, inputs.pointer)
                start = rows.upperBound
            }
        }
    }

    /// `count` samples spread evenly over the set (data sets are often sorted by class) above their
    /// reconstructions, as a PNG picture (this rank only; no collective).
    public func writeComparisonPNG(of set: SampleSet, count: Int, to path: String) throws {
        let shape = set.sampleShape
        guard shape.count == 2 || (shape.count == 3 && [1, 3].contains(shape[2])) else {
            throw RunFailure("--png needs images (samples of shape H×W, H×W×1 or H×W×3); \(set.name) has samples of shape \(shape.map(String.init).joined(separator: "×"))")
        }
        let rows = min(count, set.rowCount, Self.rowsPerPass)
        let width = set.rowWidth
        let inputs = FlatBuffer(count: rows * width)
        for index in 0..<rows {
            let row = index * set.rowCount / rows
            try set.read(row..<(row + 1), into: inputs.pointer + index * width)
        }
        model.forward(input: inputs.pointer, batch: rows)
        let originals = (0..<rows).map { Array(UnsafeBufferPointer(start: inputs.pointer + $0 * width, count: width)) }
        let reconstructions = (0..<rows).map { Array(UnsafeBufferPointer(start: model.reconstruction + $0 * width, count: width)) }
        try Pictures.grid([originals, reconstructions], shape: shape.count == 2 ? shape + [1] : shape).writePNG(to: path)
    }

    /// Decodes `count` samples of N(0, I) (rows 0..<count of a seeded stream), and, given two samples, the path
    /// between their codes: what a variational model generates. Returns the decoded rows.
    public func generate(count: Int, seed: UInt64) throws -> [[Float]] {
        guard architecture.variational else {
            throw RunFailure("\(checkpointPath) is not a variational model (train with --variational to generate from random codes)")
        }
        var random = RandomStream(seed: seed, RandomStream.Purpose.reparameterization.rawValue)
        let codes = (0..<(count * architecture.codeSize)).map { _ in Float(random.nextGaussian()) }
        return decode(codes, count: count)
    }

    /// Codes μ(a) … μ(b) in `steps` even steps, decoded: a latent interpolation between two samples.
    public func interpolate(_ set: SampleSet, from a: Int, to b: Int, steps: Int) throws -> [[Float]] {
        for row in [a, b] where !(0..<set.rowCount).contains(row) {
            throw RunFailure("sample \(row) is not in \(set.name) (it has \(set.rowCount))")
        }
        let width = set.rowWidth, codeSize = architecture.codeSize
        let inputs = FlatBuffer(count: 2 * width)
        try set.read(a..<(a + 1), into: inputs.pointer)
        try set.read(b..<(b + 1), into: inputs.pointer + width)
        model.forward(input: inputs.pointer, batch: 2)
        let ends = Array(UnsafeBufferPointer(start: model.code, count: 2 * codeSize))
        var codes: [Float] = []
        for step in 0..<steps {
            let t = Float(step) / Float(max(steps - 1, 1))
            codes += (0..<codeSize).map { (1 - t) * ends[$0] + t * ends[codeSize + $0] }
        }
        return decode(codes, count: steps)
    }

    private func decode(_ codes: [Float], count: Int) -> [[Float]] {
        var rows: [[Float]] = []
        var start = 0
        while start < count {
            let pass = min(Self.rowsPerPass, count - start)
            codes.withUnsafeBufferPointer { model.decode(code: $0.baseAddress! + start * architecture.codeSize, batch: pass) }
            for row in 0..<pass {
                rows.append(Array(UnsafeBufferPointer(start: model.reconstruction + row * architecture.inputSize, count: architecture.inputSize)))
            }
            start += pass
        }
        return rows
    }

    /// Per-sample reconstruction error (mean squared error over the sample's values), on every rank.
    public func scores(of set: SampleSet) throws -> [Double] {
        var scores = [Double](repeating: 0, count: set.rowCount)
        let width = architecture.inputSize
        try forEachPass(over: set) { rows, inputs in
            for (offset, row) in rows.enumerated() {
                var sum = 0.0
                for j in 0..<width {
                    let difference = Double(model.reconstruction[offset * width + j] - inputs[offset * width + j])
                    sum += difference * difference
                }
                scores[row] = sum / Double(width)
            }
        }
        // Each rank filled its own rows and left zeros elsewhere: a sum gathers them.
        try communicator.allReduceSum(&scores)
        return scores
    }

    /// The losses over `set` from the same pass as training's validation (noise and a variational model's ε fixed
    /// per sample), so a checkpoint's validation loss is reproduced exactly.
    public func evaluate(_ set: SampleSet) throws -> EvaluationResult {
        model.sampleCode = true
        defer { model.sampleCode = false }
        let pass = GradientStep(model: model, config: config, maxRows: Self.rowsPerPass)
        return try pass.evaluate(set, rows: FlatBuffer(count: Self.rowsPerPass * architecture.inputSize), communicator: communicator)
    }

    public enum Output { case codes, reconstructions }

    /// Writes the codes or reconstructions of every row of `set` to `/name` in a new HDF5 file at `path`. Ranks
    /// write their rows in turn into a temporary file that rank 0 renames into place once all are written.
    public func write(_ output: Output, of set: SampleSet, to path: String, name: String) throws {
        let comm = communicator
        let width = output == .codes ? architecture.codeSize : architecture.inputSize
        let shape = [set.rowCount] + (output == .codes ? [width] : set.sampleShape)
        let mine = BatchSchedule.slice(of: 0..<set.rowCount, rank: comm.rank, size: comm.size)
        var results = [Float](repeating: 0, count: mine.count * width)
        try forEachPass(over: set) { rows, _ in
            let source = output == .codes ? model.code : model.reconstruction
            results.withUnsafeMutableBufferPointer {
                ($0.baseAddress! + (rows.lowerBound - mine.lowerBound) * width).update(from: source, count: rows.count * width)
            }
        }
        let temporary = try comm.broadcast(comm.isRoot ? AtomicFile.temporaryPath(for: path) : "")
        defer { if comm.isRoot { unlink(temporary) } }
        try comm.together {
            guard comm.isRoot else { return }
            unlink(temporary)
            let file = try HDF5File.create(temporary)
            let dataset = try file.root.createDataset(name, shape: shape)
            try dataset.setAttribute("checkpoint", checkpointPath)
            try dataset.setAttribute("source", set.name)
            try dataset.setAttribute("model", config.model.spec)
            try file.close()
        }
        for turn in 0..<comm.size {
            try comm.together {
                guard comm.rank == turn, !mine.isEmpty else { return }
                let file = try HDF5File.openForWriting(temporary)
                try results.withUnsafeBufferPointer {
                    try file.root.dataset(name).writeRows(at: mine.lowerBound, count: mine.count, from: $0.baseAddress!)
                }
                try file.close()
            }
        }
        try comm.together { if comm.isRoot { try AtomicFile.commit(temporary, to: path) } }
    }
}

extension TrainedModel {
    /// Anomaly scores to `output` (HDF5: /scores, and /is_anomaly given a threshold) and to `csv`, each atomically.
    public func writeScores(_ scores: [Double], threshold: (value: Double, percentile: Double)?, truth: [Bool]?,
                            to output: String, csv: String) throws {
        try AtomicFile.write(to: output) { temporary in
            let file = try HDF5File.create(temporary)
            let dataset = try file.root.write("scores", doubles: scores)
            try dataset.setAttribute("checkpoint", checkpointPath)
            try dataset.setAttribute("meaning", "mean squared reconstruction error per sample")
            if let threshold {
                try dataset.setAttribute("threshold", threshold.value)
                try dataset.setAttribute("percentile", threshold.percentile)
                try file.root.write("is_anomaly", integers: scores.map { $0 > threshold.value ? 1 : 0 })
            }
            try file.close()
        }
        var lines = ["index,score" + (threshold == nil ? "" : ",flagged") + (truth == nil ? "" : ",anomaly")]
        for (index, score) in scores.enumerated() {
            var line = "\(index),\(String(format: "%.8g", score))"
            if let threshold { line += score > threshold.value ? ",1" : ",0" }
            if let truth { line += truth[index] ? ",1" : ",0" }
            lines.append(line)
        }
        try AtomicFile.write(Data((lines.joined(separator: "\n") + "\n").utf8), to: csv)
    }

    /// Generated samples (/generated) and a latent interpolation (/interpolation) to `output`, and when asked a PNG
    /// grid of both (a dense model of square images, 784 = 28×28, draws them as grey squares).
    public func writeGenerated(_ generated: [[Float]], interpolation: [[Float]]?, to output: String, png: String?) throws {
        let shape = architecture.inputShape
        try AtomicFile.write(to: output) { temporary in
            let file = try HDF5File.create(temporary)
            for (name, rows) in [("generated", generated), ("interpolation", interpolation ?? [])] where !rows.isEmpty {
                let values = rows.flatMap { $0 }
                try values.withUnsafeBufferPointer { _ = try file.root.write(name, shape: [rows.count] + shape, floats: $0) }
            }
            try file.close()
        }
        guard let png else { return }
        let side = Int(Double(shape.reduce(1, *)).squareRoot().rounded())
        let picture = shape.count == 3 || shape.count == 2 ? shape : side * side == shape[0] ? [side, side, 1] : []
        guard !picture.isEmpty else { throw RunFailure("--png needs images; this model makes samples of \(shape[0]) values, not a square") }
        let columns = Int(Double(generated.count).squareRoot().rounded(.up))
        var grid = stride(from: 0, to: generated.count, by: columns).map { Array(generated[$0..<min($0 + columns, generated.count)]) }
        if let interpolation { grid.append(interpolation) }
        try Pictures.grid(grid, shape: picture.count == 2 ? picture + [1] : picture).writePNG(to: png)
    }
}

/// Anomaly detection from reconstruction error: a threshold from a percentile of normal data's scores, and with
/// labels, ROC AUC and precision/recall at that threshold.
public enum AnomalyReport {
    /// The `percentile` (0–100) of `values`, linearly interpolated as numpy's default.
    public static func percentile(_ values: [Double], _ percentile: Double) -> Double {
        let sorted = values.sorted()
        guard !sorted.isEmpty else { return .nan }
        let position = percentile / 100 * Double(sorted.count - 1)
        let low = Int(position.rounded(.down)), high = min(low + 1, sorted.count - 1)
        return sorted[low] + (sorted[high] - sorted[low]) * (position - Double(low))
    }

    /// Area under the ROC curve: the chance a random anomaly scores above a random normal sample (ties count half).
    public static func rocAUC(scores: [Double], anomalous: [Bool]) -> Double {
        let positives = anomalous.filter { $0 }.count, negatives = anomalous.count - positives
        guard positives > 0, negatives > 0 else { return .nan }
        let order = scores.indices.sorted { scores[$0] < scores[$1] }
        var rankSum = 0.0
        var i = 0
        while i < order.count {
            var j = i
            while j + 1 < order.count && scores[order[j + 1]] == scores[order[i]] { j += 1 }
            let averageRank = Double(i + j) / 2 + 1
            for k in i...j where anomalous[order[k]] { rankSum += averageRank }
            i = j + 1
        }
        return (rankSum - Double(positives * (positives + 1)) / 2) / (Double(positives) * Double(negatives))
    }

    public static func precisionRecall(scores: [Double], anomalous: [Bool], threshold: Double) -> (precision: Double, recall: Double) {
        var truePositives = 0, flagged = 0, positives = 0
        for (score, isAnomaly) in zip(scores, anomalous) {
            let flag = score > threshold
            if flag { flagged += 1 }
            if isAnomaly { positives += 1 }
            if flag && isAnomaly { truePositives += 1 }
        }
        return (flagged == 0 ? .nan : Double(truePositives) / Double(flagged),
                positives == 0 ? .nan : Double(truePositives) / Double(positives))
    }
}

extension TrainedModel {
    /// The mean loss and its mean gradient over the first `rows` samples of `set` (all when nil), computed as one
    /// training step computes them: training mode (dropout masks of epoch 0, BatchNorm on these rows' statistics
    /// over every rank), each rank a contiguous share, summed with one all-reduce. Collective. For comparing
    /// aedist's gradients with another framework's on the same weights and rows.
    public func gradient(of set: SampleSet, rows: Int?) throws -> (loss: Double, gradients: FlatBuffer, rows: Range<Int>) {
        let comm = communicator
        let all = 0..<min(rows ?? set.rowCount, set.rowCount)
        let mine = BatchSchedule.slice(of: all, rank: comm.rank, size: comm.size)
        let message = StepMessage(parameterCount: architecture.parameterLayout.totalCount,
                                  activationUnits: model.codePenalty.sparsity?.units ?? 0)
        let replica = Autoencoder(architecture: architecture, maxBatch: max(mine.count, 1), gradients: message.gradients)
        replica.parameters.copy(from: model.parameters)
        replica.buffers.copy(from: model.buffers)
        replica.klWeight = model.klWeight
        replica.codePenalty = model.codePenalty
        let step = GradientStep(model: replica, config: config, maxRows: max(mine.count, 1), communicator: comm, globalBatchSize: all.count)
        let inputs = FlatBuffer(count: max(mine.count, 1) * architecture.inputSize)
        try comm.together { try set.read(mine, into: inputs.pointer) }
        try step.accumulate(rows: inputs.pointer, count: mine.count, key: NoiseKey(epoch: 0, first: mine.lowerBound), step: 0, into: message)
        try comm.allReduceSum(message.buffer.buffer)
        message.gradients.scale(by: 1 / Float(max(all.count, 1)))
        return (message.lossSum / Double(max(all.count, 1)), message.gradients, all)
    }

    /// `gradient(of:rows:)` to an HDF5 file: /loss, /gradients/<layer>/<weight|bias> (the checkpoint's names and
    /// shapes), /rows (the sample indices used).
    public func writeGradient(_ result: (loss: Double, gradients: FlatBuffer, rows: Range<Int>), of set: SampleSet, to path: String) throws {
        try AtomicFile.write(to: path) { temporary in
            let file = try HDF5File.create(temporary)
            let loss = try file.root.write("loss", doubles: [result.loss])
            try loss.setAttribute("meaning", "mean over the rows of each sample's \(config.loss.rawValue) loss (its mean over the sample's values, plus the model's penalties)")
            try file.root.write("rows", integers: result.rows.map(Int64.init))
            let group = try file.root.createGroup("gradients")
            try group.setAttribute("meaning", "d(mean loss)/d(parameter), training mode (dropout of epoch 0, BatchNorm on these rows)")
            try group.setAttribute("checkpoint", checkpointPath)
            try group.setAttribute("source", set.name)
            var layerGroups: [String: HDF5Group] = [:]
            for tensor in architecture.parameterLayout.tensors {
                let layerGroup = try layerGroups[tensor.layer] ?? group.createGroup(tensor.layer)
                layerGroups[tensor.layer] = layerGroup
                _ = try layerGroup.write(tensor.name, shape: tensor.shape,
                                         floats: UnsafeBufferPointer(start: result.gradients.pointer + tensor.offset, count: tensor.count))
            }
            try file.close()
        }
    }
}
