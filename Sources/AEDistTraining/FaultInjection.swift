import AEDistCore
import Foundation

/// Faults on purpose, for the end-to-end tests of failure handling: `AEDIST_FAULT=KIND@RANK:STEP` makes rank RANK
/// misbehave at global step STEP. Kinds: `error` (a data error on that rank only), `drift` (its parameters silently
/// diverge from the other replicas), `crash` (the process dies). Unset in normal use; it costs one comparison a step.
struct FaultInjection {
    enum Kind: String { case error, drift, crash }

    let kind: Kind
    let rank: Int
    let step: Int

    static func fromEnvironment() -> FaultInjection? {
        guard let text = ProcessInfo.processInfo.environment["AEDIST_FAULT"] else { return nil }
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
    func apply(rank: Int, step: Int, parameters: FlatBuffer) throws {
        guard rank == self.rank, step == self.step else { return }
        switch kind {
        case .error: throw InjectedError(description: "injected fault: a data error on rank \(rank) at step \(step)")
        case .drift: parameters[0] = parameters[0].nextUp
        case .crash: _exit(3)
        }
    }
}
