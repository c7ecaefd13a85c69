import AEDistCore
import Foundation
import Yams

/// Reads a YAML or JSON config file (the same keys as the `config` a checkpoint stores). Unknown keys are errors,
/// so a typo never silently becomes a default.
public enum ConfigFile {
    /// - Parameter base: what the file's keys are merged over (the defaults; a resumed checkpoint's configuration).
    public static func load(_ path: String, over base: TrainingConfig = TrainingConfig()) throws -> TrainingConfig {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
            throw ConfigError("config file \(path) cannot be read (missing or not UTF-8 text)")
        }
        let tree: Any?
        let node: Node?
        do {
            tree = try Yams.load(yaml: text)
            node = try Yams.compose(yaml: text)
        } catch {
            throw ConfigError("config file \(path) is not valid YAML or JSON: \(error)")
        }
        guard let top = tree as? [String: Any], case .mapping(let given)? = node else {
            throw ConfigError("config file \(path) must be a mapping of sections (model, loss, data, optimizer, schedule, run)")
        }
        try checkKeys(top, section: "", path: path)
        do {
            // The file's keys over the defaults, as YAML nodes, so that each value is read as the type of the
            // option it sets ("checkpoint_dir: 2024" is a folder name); the decoding itself is synthesized Codable.
            guard case .mapping(let defaults)? = try Yams.compose(yaml: YAMLEncoder().encode(base)) else {
                throw ConfigError("the default configuration does not encode as a mapping")
            }
            return try YAMLDecoder().decode(TrainingConfig.self, from: Node.mapping(merge(given, over: defaults)))
        } catch let error as DecodingError {
            throw ConfigError("config file \(path): \(describe(error))")
        }
    }

    /// `given`'s keys replace `defaults`'s; sections merge key by key, and an empty section keeps its defaults.
    private static func merge(_ given: Node.Mapping, over defaults: Node.Mapping) -> Node.Mapping {
        var merged = defaults
        for (key, value) in given {
            guard let name = key.string else { continue }
            if case .mapping(let section)? = defaults[name] {
                if case .mapping(let givenSection) = value {
                    merged[name] = .mapping(merge(givenSection, over: section))
                }
                // A section written with nothing under it (YAML null) keeps every default.
                continue
            }
            merged[name] = value
        }
        return merged
    }

    private static func checkKeys(_ mapping: [String: Any], section: String, path: String) throws {
        let known = TrainingConfig.knownKeys[section] ?? []
        for (key, value) in mapping {
            let qualified = section.isEmpty ? key : "\(section).\(key)"
            guard known.contains(key) else {
                throw ConfigError("config file \(path): unknown key '\(qualified)' (known: \(known.sorted().joined(separator: ", ")))")
            }
            if section.isEmpty, let nested = value as? [String: Any] {
                try checkKeys(nested, section: key, path: path)
            }
        }
    }

    private static func describe(_ error: DecodingError) -> String {
        func keyPath(_ context: DecodingError.Context) -> String {
            context.codingPath.map(\.stringValue).joined(separator: ".")
        }
        switch error {
        case .typeMismatch(let type, let context):
            return "key '\(keyPath(context))' should be \(type == String.self ? "text" : "a \(type)".lowercased())"
        case .valueNotFound(_, let context), .keyNotFound(_, let context):
            return "key '\(keyPath(context))' is missing a value"
        case .dataCorrupted(let context):
            return "key '\(keyPath(context))': \(context.debugDescription)"
        @unknown default:
            return "\(error)"
        }
    }
}
