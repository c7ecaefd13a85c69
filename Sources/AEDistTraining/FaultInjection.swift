import AEDistCore
import Foundation

/// Faults on purpose, for the tests of failure handling: rank `rank` misbehaves at global step `step`. Kinds:
/// `error` (a data error on that rank only), `drift` (its parameters silently diverge from the other replicas),
/// `crash` (the process dies). A parameter of the trainer (`SessionOptions.fault`); on the command line the
/// environment variable `AEDIST_FAULT=KIND@RANK:STEP` sets it. Unset in normal use; it costs one comparison a step.
public struct FaultInjection: Sendable {
    public enum Kind: String, Sendable { case error, drift, crash }

    public let kind: Kind
    public let rank: Int
    public let step: Int

    public init(kind: Kind, rank: Int, step: Int) {
        self.kind = kind
        self.rank = rank
        self.step = step
    }

    public static func fromEnvironment() -> FaultInjection? {
        ProcessInfo.processInfo.environment["AEDIST_FAULT"].flatMap(parse)
    }

    /// "KIND@RANK:STEP", e.g. "error@2:5".
    public static func parse(_ text: String) -> FaultInjection? {
        let parts = text.split(whereSeparator: { $0 == "@" || $0 == ":" }).map(String.init)
        guard parts.count == 3, let kind = Kind(rawValue: parts[0]), let rank = Int(parts[1]), let step = Int(parts[2]) else {
            return nil
        }
        return FaultInjection(kind: kind, rank: rank, step: step)
    }

    struct InjectedError: UserFacingError {
        let description: String
    }

    /// Called at each step on each rank, before the step's all-reduce.
    public func apply(rank: Int, step: Int, parameters: FlatBuffer) throws {
        guard rank == self.rank, step == self.step else { return }
        switch kind {
        case .error: throw InjectedError(description: "injected fault: a data error on rank \(rank) at step \(step)")
        case .drift: parameters[0] = parameters[0].nextUp
        case .crash: _exit(3)
        }
    }
}
