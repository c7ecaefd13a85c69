import AEDistCore
import AEDistIO
import Foundation

/// What `aedist inspect` shows of a checkpoint. Built by walking the file's groups as the documented layout
/// describes them, so it explains any file in that layout, whoever wrote it.
public struct CheckpointReport {
    public struct TensorSummary {
        public var path: String
        public var shape: [Int]
        public var mean, std, min, max: Double
        public var nonFinite: Int
        public var checksummed: Bool
    }

    public var path: String
    /// The file itself when `path` is a link such as latest.h5.
    public var resolvedPath: String
    public var fileBytes: Int
    public var attributes: [(String, String)]
    public var config: TrainingConfig?
    public var configText: String
    public var optimizerName: String
    public var optimizerStep: Int64
    public var progress: [(String, Int64)]
    public var metrics: [String: [Double]]
    public var metricColumns: [String]
    public var tensors: [TensorSummary]

    public init(path: String) throws {
        let file = try HDF5File.open(path)
        let root = file.root
        try Checkpoint.requireFormat(root, path: path)
        self.path = path
        if let target = try? FileManager.default.destinationOfSymbolicLink(atPath: path) {
            resolvedPath = target.hasPrefix("/") ? target : ((path as NSString).deletingLastPathComponent as NSString).appendingPathComponent(target)
        } else {
            resolvedPath = path
        }
        fileBytes = file.byteSize
        attributes = try ["format", "format_version", "aedist_version", "layout_hash", "world_size", "created"].compactMap { name in
            guard root.hasAttribute(name) else { return nil }
            if let text = try? root.stringAttribute(name) { return (name, text) }
            return (name, String(try root.integerAttribute(name)))
        }
        configText = try root.stringAttribute("config")
        config = try? TrainingConfig.fromJSON(configText)

        let optimizer = try root.group("optimizer")
        optimizerName = (try? optimizer.stringAttribute("name")) ?? "?"
        optimizerStep = (try? optimizer.integerAttribute("step")) ?? 0
        let progressGroup = try root.group("progress")
        progress = ["epochs_completed", "step_in_epoch", "global_step", "samples_seen", "seed"].compactMap { name in
            (try? progressGroup.integerAttribute(name)).map { (name, $0) }
        }
        let metricsGroup = try root.group("metrics")
        metricColumns = metricsGroup.memberNames.filter { metricsGroup.isDataset($0) }
        let preferred = ["epoch", "global_step", "samples_seen", "train_loss", "val_loss", "val_mse", "samples_per_sec", "wall_time_s", "lr"]
        metricColumns.sort { (preferred.firstIndex(of: $0) ?? 99, $0) < (preferred.firstIndex(of: $1) ?? 99, $1) }
        var metrics: [String: [Double]] = [:]
        for name in metricColumns {
            let dataset = try metricsGroup.dataset(name)
            try dataset.requirePlausibleSize(bytesPerValue: 8)
            metrics[name] = try dataset.readDoubles()
        }
        self.metrics = metrics

        var tensors: [TensorSummary] = []
        func walk(_ group: HDF5Group, prefix: String) throws {
            for name in group.memberNames {
                let path = "\(prefix)/\(name)"
                if group.isGroup(name) {
                    try walk(try group.group(name), prefix: path)
                } else if group.isDataset(name) {
                    let dataset = try group.dataset(name)
                    try dataset.requirePlausibleSize()
                    guard dataset.elementKind.isNumeric else {
                        throw HDF5Error("\(file.path):/\(path) holds \(dataset.elementKind) values; tensors are numbers")
                    }
                    tensors.append(CheckpointReport.summarize(path: path, shape: dataset.shape,
                                                              values: try dataset.readDoubles(),
                                                              checksummed: dataset.hasChecksum))
                }
            }
        }
        try walk(try root.group("parameters"), prefix: "parameters")
        try walk(optimizer, prefix: "optimizer")
        self.tensors = tensors
    }

    static func summarize(path: String, shape: [Int], values: [Double], checksummed: Bool) -> TensorSummary {
        let finite = values.filter(\.isFinite)
        let mean = finite.isEmpty ? Double.nan : finite.reduce(0, +) / Double(finite.count)
        let variance = finite.isEmpty ? Double.nan : finite.reduce(0) { $0 + ($1 - mean) * ($1 - mean) } / Double(finite.count)
        return TensorSummary(path: path, shape: shape, mean: mean, std: variance.squareRoot(),
                             min: finite.min() ?? .nan, max: finite.max() ?? .nan,
                             nonFinite: values.count - finite.count, checksummed: checksummed)
    }

    public var parameterCount: Int {
        tensors.filter { $0.path.hasPrefix("parameters/") }.reduce(0) { $0 + $1.shape.reduce(1, *) }
    }

    // MARK: text

    public func text() -> String {
        var lines: [String] = []
        let target = resolvedPath == path ? "" : " → \((resolvedPath as NSString).lastPathComponent)"
        lines.append("checkpoint  \(path)\(target)  (\(Self.formatBytes(fileBytes)))")
        for (name, value) in attributes { lines.append("  \(name.padding(toLength: 16, withPad: " ", startingAt: 0)) \(value)") }
        if let config, let architecture = try? ModelArchitecture(config.model) {
            lines.append("")
            lines.append("model       \(config.model.spec)  (\(parameterCount) parameters, loss \(config.loss.rawValue))")
            for layer in architecture.layers {
                if layer is Dense {
                    lines.append("  \(layer.name.padding(toLength: 12, withPad: " ", startingAt: 0)) \(layer.inputSize) → \(layer.outputSize)  \(layer.activation.rawValue)")
                } else {
                    lines.append("  \(layer.description)")
                }
            }
            let o = config.optimizer
            lines.append("optimizer   \(optimizerName)  lr \(o.learningRate)  step \(optimizerStep)" + Self.optimizerDetails(o))
            lines.append("data        \(config.data.path ?? "(embedded MNIST subset)") \(config.data.trainDataset)  global batch \(config.schedule.batchSize)  seed \(config.schedule.seed)")
        } else {
            lines.append("model       (config not readable by this aedist: shown below as stored)")
        }
        lines.append("progress    " + progress.map { "\($0.0) \($0.1)" }.joined(separator: "  "))

        lines.append("")
        lines.append("metrics (one row per epoch)")
        // A damaged file may hold columns of different lengths: show the rows all of them have.
        let rows = metricColumns.map { metrics[$0]!.count }.min() ?? 0
        if rows == 0 {
            lines.append("  (none yet)")
        } else {
            lines.append("  " + metricColumns.map { $0.padding(toLength: max(10, $0.count), withPad: " ", startingAt: 0) }.joined(separator: " "))
            for row in 0..<rows {
                lines.append("  " + metricColumns.map { column in
                    let value = metrics[column]![row]
                    let text = value.isNaN ? "-" : (value == value.rounded() && abs(value) < 1e12 ? String(Int64(value)) : String(format: "%.6g", value))
                    return text.padding(toLength: max(10, column.count), withPad: " ", startingAt: 0)
                }.joined(separator: " "))
            }
        }

        lines.append("")
        lines.append("tensors")
        let width = max(40, (tensors.map(\.path.count).max() ?? 0) + 2)
        lines.append("  " + "path".padding(toLength: width, withPad: " ", startingAt: 0)
                     + "shape".padding(toLength: 12, withPad: " ", startingAt: 0) + "      mean        std        min        max  non-finite")
        for tensor in tensors {
            let shape = tensor.shape.map(String.init).joined(separator: "×")
            lines.append("  " + tensor.path.padding(toLength: width, withPad: " ", startingAt: 0) + shape.padding(toLength: 12, withPad: " ", startingAt: 0)
                         + String(format: "%10.4g %10.4g %10.4g %10.4g  %d", tensor.mean, tensor.std, tensor.min, tensor.max, tensor.nonFinite))
        }
        let unchecked = tensors.filter { !$0.checksummed }.count
        lines.append(unchecked == 0 ? "  every tensor carries a Fletcher-32 checksum" : "  \(unchecked) tensor(s) without a checksum")
        lines.append("")
        lines.append("config")
        lines.append(contentsOf: (config?.prettyJSON() ?? configText).split(separator: "\n").map { "  \($0)" })
        return lines.joined(separator: "\n")
    }

    static func optimizerDetails(_ o: OptimizerConfig) -> String {
        var parts: [String] = []
        switch o.kind {
        case .sgd: parts += ["momentum \(o.momentum)"] + (o.nesterov ? ["nesterov"] : [])
        case .adam, .adamw: parts += ["betas (\(o.beta1), \(o.beta2))", "eps \(o.epsilon)"]
        case .rmsprop: parts += ["rho \(o.rho)", "momentum \(o.momentum)", "eps \(o.epsilon)"]
        }
        if o.weightDecay > 0 { parts.append("weight decay \(o.weightDecay)") }
        return "  " + parts.joined(separator: "  ")
    }

    static func formatBytes(_ bytes: Int) -> String {
        bytes >= 1 << 20 ? String(format: "%.1f MiB", Double(bytes) / 1_048_576) : String(format: "%.1f KiB", Double(bytes) / 1024)
    }

    // MARK: JSON

    public func json() -> String {
        func number(_ value: Double) -> Any { value.isFinite ? value : NSNull() }
        var object: [String: Any] = [
            "path": path,
            "resolved_path": resolvedPath,
            "file_bytes": fileBytes,
            "attributes": Dictionary(uniqueKeysWithValues: attributes),
            "optimizer": ["name": optimizerName, "step": optimizerStep],
            "progress": Dictionary(uniqueKeysWithValues: progress.map { ($0.0, $0.1) }),
            "metrics": metrics.mapValues { $0.map(number) },
            "parameter_count": parameterCount,
            "tensors": tensors.map { tensor -> [String: Any] in
                ["path": tensor.path, "shape": tensor.shape, "mean": number(tensor.mean), "std": number(tensor.std),
                 "min": number(tensor.min), "max": number(tensor.max), "non_finite": tensor.nonFinite,
                 "checksummed": tensor.checksummed]
            },
        ]
        object["config"] = (try? JSONSerialization.jsonObject(with: Data(configText.utf8))) ?? configText
        if let config, let architecture = try? ModelArchitecture(config.model) {
            object["layers"] = architecture.layers.map { layer -> [String: Any] in
                var entry: [String: Any] = ["name": layer.name, "kind": String(describing: type(of: layer)),
                                            "input_shape": layer.inputShape, "output_shape": layer.outputShape,
                                            "activation": layer.activation.rawValue]
                for (key, value) in layer.settings { entry[key] = Int(value).map { $0 as Any } ?? Double(value).map { $0 as Any } ?? value }
                return entry
            }
        }
        let data = try! JSONSerialization.data(withJSONObject: object, options: [.prettyPrinted, .sortedKeys])
        return String(decoding: data, as: UTF8.self)
    }
}
