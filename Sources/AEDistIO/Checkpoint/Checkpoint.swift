import AEDistCore
import Foundation

/// Everything a checkpoint holds. The HDF5 layout (documented in README.md):
///
///     /                      attrs format="aedist-checkpoint", format_version, aedist_version, config (JSON),
///                            layout_hash, world_size, created
///     /parameters/<layer>/weight, bias              float32, [out, in] and [out]
///     /optimizer             attrs name, step; /optimizer/<state>/<layer>/<weight|bias> float32
///     /progress              attrs epochs_completed, step_in_epoch, global_step, samples_seen, seed, rng
///     /metrics/<column>      one value per finished epoch (epoch, global_step, … as in metrics.csv)
public struct Checkpoint {
    public static let formatName = "aedist-checkpoint"
    public static let formatVersion: Int64 = 1

    public var config: TrainingConfig
    public var layout: ParameterLayout
    public var parameters: FlatBuffer
    public var optimizerName: String
    public var optimizerStep: Int
    public var optimizerState: [(name: String, buffer: FlatBuffer)]
    public var progress: TrainingProgress
    public var metrics: [EpochMetrics]
    public var worldSize: Int
    public var aedistVersion: String
    /// State kept with the model but not trained (BatchNorm's running statistics), in `bufferLayout`: stored under
    /// /buffers/<layer>/<name>. Empty for models without such layers.
    public var bufferLayout: ParameterLayout
    public var buffers: FlatBuffer

    public init(config: TrainingConfig, layout: ParameterLayout, parameters: FlatBuffer, optimizerName: String,
                optimizerStep: Int, optimizerState: [(name: String, buffer: FlatBuffer)], progress: TrainingProgress,
                metrics: [EpochMetrics], worldSize: Int, aedistVersion: String,
                bufferLayout: ParameterLayout = ParameterLayout(tensors: []), buffers: FlatBuffer = FlatBuffer(count: 0)) {
        self.bufferLayout = bufferLayout
        self.buffers = buffers
        self.config = config
        self.layout = layout
        self.parameters = parameters
        self.optimizerName = optimizerName
        self.optimizerStep = optimizerStep
        self.optimizerState = optimizerState
        self.progress = progress
        self.metrics = metrics
        self.worldSize = worldSize
        self.aedistVersion = aedistVersion
    }

    // MARK: writing

    /// Writes the whole checkpoint into a new file at `path` (which must not exist yet).
    public func write(to path: String) throws {
        let file = try HDF5File.create(path)
        let root = file.root
        try root.setAttribute("format", Self.formatName)
        try root.setAttribute("format_version", Self.formatVersion)
        try root.setAttribute("aedist_version", aedistVersion)
        try root.setAttribute("config", config.prettyJSON())
        try root.setAttribute("layout_hash", layout.hash)
        try root.setAttribute("world_size", Int64(worldSize))
        try root.setAttribute("created", ISO8601DateFormatter().string(from: Date()))

        try Self.writeTensors(parameters, layout: layout, into: root.createGroup("parameters"))
        if !bufferLayout.tensors.isEmpty { try Self.writeTensors(buffers, layout: bufferLayout, into: root.createGroup("buffers")) }

        let optimizer = try root.createGroup("optimizer")
        try optimizer.setAttribute("name", optimizerName)
        try optimizer.setAttribute("step", Int64(optimizerStep))
        for (name, buffer) in optimizerState {
            try Self.writeTensors(buffer, layout: layout, into: optimizer.createGroup(name))
        }

        let progressGroup = try root.createGroup("progress")
        try progressGroup.setAttribute("epochs_completed", Int64(progress.epochsCompleted))
        try progressGroup.setAttribute("step_in_epoch", Int64(progress.stepInEpoch))
        try progressGroup.setAttribute("global_step", Int64(progress.globalStep))
        try progressGroup.setAttribute("samples_seen", Int64(progress.samplesSeen))
        try progressGroup.setAttribute("epoch_loss_sum", progress.epochLossSum)
        try progressGroup.setAttribute("epoch_samples", Int64(progress.epochSamples))
        try progressGroup.setAttribute("epoch_seconds", progress.epochSeconds)
        try progressGroup.setAttribute("epoch_kl_sum", progress.epochKLSum)
        if !progress.sparsityEstimate.isEmpty { try progressGroup.write("sparsity_estimate", doubles: progress.sparsityEstimate) }
        try progressGroup.setAttribute("seed", Int64(bitPattern: config.schedule.seed))
        // Every random stream is a pure function of the seed, its purpose and an index (the epoch for shuffling,
        // the layer for initialisation): there is no generator state to save, only this name of the scheme.
        try progressGroup.setAttribute("rng", "splitmix64-counter(seed, purpose, epoch|layer)")

        let metricsGroup = try root.createGroup("metrics")
        try metricsGroup.write("epoch", integers: metrics.map { Int64($0.epoch) })
        try metricsGroup.write("global_step", integers: metrics.map { Int64($0.globalStep) })
        try metricsGroup.write("samples_seen", integers: metrics.map { Int64($0.samplesSeen) })
        try metricsGroup.write("train_loss", doubles: metrics.map(\.trainLoss))
        try metricsGroup.write("val_loss", doubles: metrics.map(\.valLoss))
        try metricsGroup.write("val_mse", doubles: metrics.map(\.valMSE))
        try metricsGroup.write("samples_per_sec", doubles: metrics.map(\.samplesPerSecond))
        try metricsGroup.write("wall_time_s", doubles: metrics.map(\.wallTime))
        try metricsGroup.write("lr", doubles: metrics.map(\.learningRate))
        try file.close()
    }

    private static func writeTensors(_ buffer: FlatBuffer, layout: ParameterLayout, into group: HDF5Group) throws {
        var layerGroups: [String: HDF5Group] = [:]
        for tensor in layout.tensors {
            let layerGroup = try layerGroups[tensor.layer] ?? group.createGroup(tensor.layer)
            layerGroups[tensor.layer] = layerGroup
            try layerGroup.write(tensor.name, shape: tensor.shape,
                                 floats: UnsafeBufferPointer(start: buffer.pointer + tensor.offset, count: tensor.count))
        }
    }

    // MARK: reading

    /// Only the configuration a checkpoint stores (what a resumed run starts from).
    public static func storedConfig(_ path: String) throws -> TrainingConfig {
        let root = try HDF5File.open(path).root
        try requireFormat(root, path: path)
        return try TrainingConfig.fromJSON(try root.stringAttribute("config"))
    }

    /// Reads a checkpoint whose model must have `expectedLayout` (the one this run builds). Every missing piece or
    /// mismatch is reported by name.
    public static func read(from path: String, expectedLayout: ParameterLayout? = nil) throws -> Checkpoint {
        let file = try HDF5File.open(path)
        let root = file.root
        try requireFormat(root, path: path)
        let configText = try root.stringAttribute("config")
        let config: TrainingConfig
        do { config = try TrainingConfig.fromJSON(configText) } catch {
            throw HDF5Error("\(path): its 'config' attribute is not a valid aedist configuration (\(error))")
        }
        let layout: ParameterLayout, bufferLayout: ParameterLayout
        do {
            let architecture = try ModelArchitecture(config.model)
            (layout, bufferLayout) = (architecture.parameterLayout, architecture.bufferLayout)
        } catch {
            throw HDF5Error("\(path): its config describes an unusable model: \(userMessage(error))")
        }
        let fileBytes = file.byteSize
        guard layout.totalCount * 4 <= fileBytes else {
            throw HDF5Error("\(path): its config describes \(layout.totalCount) parameters, more than its \(fileBytes) bytes can hold; the file is damaged or not made by aedist")
        }
        let storedHash = try root.stringAttribute("layout_hash")
        guard storedHash == layout.hash else {
            throw HDF5Error("\(path): its layout_hash \(storedHash) does not match its own config's model (\(layout.hash)); the file is inconsistent")
        }
        if let expectedLayout, expectedLayout != layout {
            throw HDF5Error("\(path) was written for model '\(config.model.spec)' (layout \(layout.hash)), but this run builds a different model (layout \(expectedLayout.hash)); pass the same --model, or a new --checkpoint-dir")
        }
        let parameters = try readTensors(root.group("parameters"), layout: layout)
        let buffers = bufferLayout.tensors.isEmpty ? FlatBuffer(count: 0) : try readTensors(root.group("buffers"), layout: bufferLayout)
        let optimizer = try root.group("optimizer")
        let optimizerName = try optimizer.stringAttribute("name")
        let optimizerStep = Int(try optimizer.integerAttribute("step"))
        let optimizerState = try optimizer.memberNames.map { name in (name: name, buffer: try readTensors(optimizer.group(name), layout: layout)) }

        let progressGroup = try root.group("progress")
        var progress = TrainingProgress()
        progress.epochsCompleted = Int(try progressGroup.integerAttribute("epochs_completed"))
        progress.stepInEpoch = Int(try progressGroup.integerAttribute("step_in_epoch"))
        progress.globalStep = Int(try progressGroup.integerAttribute("global_step"))
        progress.samplesSeen = Int(try progressGroup.integerAttribute("samples_seen"))
        if progressGroup.hasAttribute("epoch_samples") {
            progress.epochLossSum = try progressGroup.numberAttribute("epoch_loss_sum")
            progress.epochSamples = Int(try progressGroup.integerAttribute("epoch_samples"))
            progress.epochSeconds = try progressGroup.numberAttribute("epoch_seconds")
        }
        if progressGroup.hasAttribute("epoch_kl_sum") { progress.epochKLSum = try progressGroup.numberAttribute("epoch_kl_sum") }
        if progressGroup.isDataset("sparsity_estimate") {
            let dataset = try progressGroup.dataset("sparsity_estimate")
            try dataset.requirePlausibleSize(bytesPerValue: 8)
            progress.sparsityEstimate = try dataset.readDoubles()
        }
        guard progress.epochsCompleted >= 0, progress.stepInEpoch >= 0, progress.globalStep >= 0, progress.samplesSeen >= 0,
              progress.epochSamples >= 0, progress.epochLossSum.isFinite, progress.epochSeconds.isFinite else {
            throw HDF5Error("\(path): /progress holds impossible values (epochs \(progress.epochsCompleted), step \(progress.stepInEpoch), global step \(progress.globalStep))")
        }

        let metricsGroup = try root.group("metrics")
        func column(_ name: String) throws -> [Double] {
            let dataset = try metricsGroup.dataset(name)
            try dataset.requirePlausibleSize(bytesPerValue: 8)
            return try dataset.readDoubles()
        }
        let epochs = try column("epoch")
        let columns = try ["global_step", "samples_seen", "train_loss", "val_loss", "val_mse", "samples_per_sec", "wall_time_s", "lr"].map(column)
        guard columns.allSatisfy({ $0.count == epochs.count }) else { throw HDF5Error("\(path): metrics columns differ in length") }
        let counters = [epochs, columns[0], columns[1]].joined()
        guard counters.allSatisfy({ $0.isFinite && $0 >= 0 && $0 < 1e15 }) else {
            throw HDF5Error("\(path): /metrics holds impossible epoch, step or sample counts")
        }
        let metrics = epochs.indices.map { i in
            EpochMetrics(epoch: Int(epochs[i]), globalStep: Int(columns[0][i]), samplesSeen: Int(columns[1][i]),
                         trainLoss: columns[2][i], valLoss: columns[3][i], valMSE: columns[4][i],
                         samplesPerSecond: columns[5][i], wallTime: columns[6][i], learningRate: columns[7][i])
        }
        return Checkpoint(config: config, layout: layout, parameters: parameters, optimizerName: optimizerName,
                          optimizerStep: optimizerStep, optimizerState: optimizerState, progress: progress,
                          metrics: metrics, worldSize: Int(try root.integerAttribute("world_size")),
                          aedistVersion: try root.stringAttribute("aedist_version"), bufferLayout: bufferLayout, buffers: buffers)
    }

    /// Reads every tensor (HDF5 checks each one's Fletcher-32 checksum on the way) and checks the file's internal
    /// consistency: shapes against its own config, finite values, the optimizer state its optimizer needs, metrics
    /// columns of one length. Throws the first problem, naming it.
    @discardableResult
    public static func verify(_ path: String) throws -> Checkpoint {
        let checkpoint: Checkpoint
        do { checkpoint = try read(from: path) } catch let error as HDF5Error {
            throw HDF5Error(error.description.contains("Fletcher32") || error.description.contains("checksum")
                            ? "\(error.description) — the file is corrupt" : error.description)
        }
        for tensor in checkpoint.layout.tensors {
            let values = UnsafeBufferPointer(start: checkpoint.parameters.pointer + tensor.offset, count: tensor.count)
            if let bad = values.firstIndex(where: { !$0.isFinite }) {
                throw HDF5Error("\(path): parameters/\(tensor.path) holds a non-finite value (\(values[bad])) at index \(bad)")
            }
        }
        for tensor in checkpoint.bufferLayout.tensors {
            let values = UnsafeBufferPointer(start: checkpoint.buffers.pointer + tensor.offset, count: tensor.count)
            if let bad = values.firstIndex(where: { !$0.isFinite }) {
                throw HDF5Error("\(path): buffers/\(tensor.path) holds a non-finite value (\(values[bad])) at index \(bad)")
            }
        }
        let config = checkpoint.config.optimizer
        guard checkpoint.optimizerName == config.kind.rawValue else {
            throw HDF5Error("\(path): /optimizer says '\(checkpoint.optimizerName)' but its config says '\(config.kind.rawValue)'")
        }
        let stored = Set(checkpoint.optimizerState.map(\.name))
        for name in Optimizer.stateNames(config) where !stored.contains(name) {
            throw HDF5Error("\(path): optimizer state '\(name)' is missing (\(config.kind.rawValue) needs \(Optimizer.stateNames(config).joined(separator: ", ")))")
        }
        for (name, buffer) in checkpoint.optimizerState where buffer.buffer.contains(where: { !$0.isFinite }) {
            throw HDF5Error("\(path): optimizer state '\(name)' holds non-finite values")
        }
        let file = try HDF5File.open(path)
        for group in ["parameters", "optimizer", "buffers"] where file.root.isGroup(group) {
            for dataset in try file.root.group(group).allDatasets() where !dataset.hasChecksum {
                throw HDF5Error("\(path): \(dataset.path) carries no Fletcher-32 checksum, so its integrity cannot be checked")
            }
        }
        return checkpoint
    }

    /// Fails with what is missing when `root` is not an aedist checkpoint.
    public static func requireFormat(_ root: HDF5Group, path: String) throws {
        guard root.hasAttribute("format"), (try? root.stringAttribute("format")) == formatName else {
            let has = root.memberNames.isEmpty ? "no groups" : "groups \(root.memberNames.joined(separator: ", "))"
            throw HDF5Error("\(path) is not an aedist checkpoint: its root has no attribute format=\"\(formatName)\" (it has \(has))")
        }
        let missing = ["format_version", "config", "layout_hash", "world_size", "aedist_version"].filter { !root.hasAttribute($0) }
            + ["parameters", "optimizer", "progress", "metrics"].filter { !root.isGroup($0) }
        guard missing.isEmpty else {
            throw HDF5Error("\(path) is an incomplete aedist checkpoint: missing \(missing.joined(separator: ", "))")
        }
        let version = try root.integerAttribute("format_version")
        guard version <= formatVersion else {
            throw HDF5Error("\(path) uses checkpoint format version \(version); this aedist reads up to \(formatVersion)")
        }
    }

    private static func readTensors(_ group: HDF5Group, layout: ParameterLayout) throws -> FlatBuffer {
        let buffer = FlatBuffer(count: layout.totalCount)
        for tensor in layout.tensors {
            let dataset = try group.dataset(tensor.path)
            guard dataset.elementKind.isNumeric else {
                throw HDF5Error("\(group.location)/\(tensor.path) holds \(dataset.elementKind) values; parameters are float32")
            }
            guard dataset.shape == tensor.shape else {
                throw HDF5Error("\(group.location)/\(tensor.path) has shape \(SampleSet.describe(dataset.shape)); the model needs \(SampleSet.describe(tensor.shape))")
            }
            try dataset.readRows(0..<tensor.shape[0], into: buffer.pointer + tensor.offset)
        }
        return buffer
    }
}
