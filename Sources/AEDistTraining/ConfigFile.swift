import AEDistCore
import Foundation
import Yams

/// Reads a YAML or JSON config file (the same keys as the `config` a checkpoint stores). Unknown keys are errors,
/// so a typo never silently becomes a default.
public enum ConfigFile {
    public static func load(_ path: String) throws -> TrainingConfig {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
            throw ConfigError("config file \(path) cannot be read (missing or not UTF-8 text)")
        }
        let tree: Any?
        do { tree = try Yams.load(yaml: text) } catch {
            throw ConfigError("config file \(path) is not valid YAML or JSON: \(error)")
        }
        guard let top = tree as? [String: Any] else {
            throw ConfigError("config file \(path) must be a mapping of sections (model, loss, data, optimizer, schedule, run)")
        }
        try checkKeys(top, section: "", path: path)
        do {
            return try TrainingConfig.decode(mergingOverDefaults: top)
        } catch let error as DecodingError {
            throw ConfigError("config file \(path): \(describe(error))")
        } catch let error as ConfigError {
            throw ConfigError("config file \(path): \(error.description)")
        }
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
