import AEDistCore
import ArgumentParser

extension Activation: ExpressibleByArgument {}
extension LossKind: ExpressibleByArgument {}
extension OptimizerConfig.Kind: ExpressibleByArgument {}
extension DataConfig.CachePolicy: ExpressibleByArgument {}
extension ScheduleConfig.LearningRateSchedule: ExpressibleByArgument {}

/// One command-line flag of a command and the `TrainingConfig` value it sets: the table `resolvedConfig` applies,
/// and that says which flags two configurations differ in.
struct ConfigFlag<Command>: Sendable {
    let name: String
    /// Writes the flag's value into the config when it was given; false when it was not.
    let apply: @Sendable (Command, inout TrainingConfig) -> Bool
    let differs: @Sendable (TrainingConfig, TrainingConfig) -> Bool
    /// The config's value for this flag, as text.
    let value: @Sendable (TrainingConfig) -> String

    /// An option whose value is the config's value.
    init<Value: Equatable & Sendable>(_ name: String, _ option: KeyPath<Command, Value?> & Sendable,
                                      _ key: WritableKeyPath<TrainingConfig, Value> & Sendable) {
        self.init(name, option, key) { $0 }
    }

    /// An option whose value becomes the config's through `convert` (e.g. "none" → no dataset).
    init<Value: Sendable, Stored: Equatable>(_ name: String, _ option: KeyPath<Command, Value?> & Sendable,
                                             _ key: WritableKeyPath<TrainingConfig, Stored> & Sendable,
                                             convert: @escaping @Sendable (Value) -> Stored) {
        self.name = name
        apply = { command, config in
            guard let value = command[keyPath: option] else { return false }
            config[keyPath: key] = convert(value)
            return true
        }
        differs = { $0[keyPath: key] != $1[keyPath: key] }
        value = { config in Self.text(config[keyPath: key]) }
    }

    static func text(_ value: Any) -> String {
        let mirror = Mirror(reflecting: value)
        if mirror.displayStyle == .optional { return mirror.children.first.map { text($0.value) } ?? "none" }
        if let raw = value as? any RawRepresentable { return "\(raw.rawValue)" }
        return "\(value)"
    }

    /// A flag that switches a setting on.
    init(_ name: String, _ flag: KeyPath<Command, Bool> & Sendable, _ key: WritableKeyPath<TrainingConfig, Bool> & Sendable) {
        self.name = name
        apply = { command, config in
            guard command[keyPath: flag] else { return false }
            config[keyPath: key] = true
            return true
        }
        differs = { $0[keyPath: key] != $1[keyPath: key] }
        value = { "\($0[keyPath: key])" }
    }
}

extension ArgumentHelp {
    /// Help for a config option, its default printed from `TrainingConfig()`: the defaults are written once, there.
    static func config<Value>(_ text: String, _ key: KeyPath<TrainingConfig, Value>, valueName: String? = nil) -> ArgumentHelp {
        var shown = ""
        if let value = Self.unwrapped(TrainingConfig()[keyPath: key]) {
            switch value {
            case let number as Double: shown = "\(number)"
            case let raw as any RawRepresentable: shown = "\(raw.rawValue)"
            default: shown = "\(value)"
            }
        }
        return ArgumentHelp(shown.isEmpty ? text : "\(text) (default: \(shown))", valueName: valueName)
    }

    /// nil for an empty optional, else the value inside.
    private static func unwrapped(_ value: Any) -> Any? {
        let mirror = Mirror(reflecting: value)
        guard mirror.displayStyle == .optional else { return value }
        return mirror.children.first.flatMap { unwrapped($0.value) }
    }
}
