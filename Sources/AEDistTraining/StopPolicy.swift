import CSignals
import Foundation

/// When to stop early and checkpoint: a scheduler's signal (SIGTERM, SIGUSR1, SIGUSR2: what Slurm and PBS send
/// before a job's time runs out) or the wall-clock limit coming within reach. Each rank decides locally at a step
/// boundary; the decision travels in the step's all-reduce, so all ranks stop after the same step.
public final class StopPolicy {
    /// Exit status of a run that stopped early with a checkpoint: sysexits' EX_TEMPFAIL, "try again later".
    public static let checkpointedExitCode: Int32 = 75

    let timeLimit: TimeInterval?
    let start: Date
    private(set) var slowestStep: TimeInterval = 0
    /// Until a checkpoint has been timed, assume one takes this long.
    private(set) var slowestCheckpoint: TimeInterval = 1
    private(set) var slowestValidation: TimeInterval = 0

    public init(timeLimit: TimeInterval?, start: Date = Date()) {
        self.timeLimit = timeLimit
        self.start = start
    }

    public static func catchSignals() { aedsig_catch_stop_signals() }

    func recordStep(_ seconds: TimeInterval) { slowestStep = max(slowestStep, seconds) }
    func recordCheckpoint(_ seconds: TimeInterval) { slowestCheckpoint = max(slowestCheckpoint, seconds) }
    func recordValidation(_ seconds: TimeInterval) { slowestValidation = max(slowestValidation, seconds) }

    /// What is needed after this step to stop cleanly: another step (the stop is agreed one all-reduce later at the
    /// worst), an epoch's validation, and a checkpoint, each at its slowest so far, doubled, plus a second.
    var safetyMargin: TimeInterval { 2 * slowestStep + slowestValidation + 2 * slowestCheckpoint + 1 }

    /// Why this rank wants to stop now, as a code that can be summed across ranks: the signal's number, or
    /// `timeLimitCode`; 0 for no reason.
    var reasonCode: Int32 {
        let signal = aedsig_received()
        if signal != 0 { return signal }
        if let timeLimit, Date().timeIntervalSince(start) + safetyMargin >= timeLimit { return Self.timeLimitCode }
        return 0
    }

    static let timeLimitCode: Int32 = 1000

    /// Words for the codes ranks sent: the signal when all that sent one agree (schedulers signal every rank).
    func describe(signalSum: Float, signalRanks: Float) -> String {
        if signalRanks > 0 {
            let average = Int32((signalSum / signalRanks).rounded())
            return "received \(Self.name(ofSignal: average))"
        }
        return String(format: "the --time-limit of %@ is near (%.1f s safety margin)", Self.format(timeLimit ?? 0), safetyMargin)
    }

    static func name(ofSignal signal: Int32) -> String {
        switch signal {
        case SIGTERM: return "SIGTERM"
        case SIGUSR1: return "SIGUSR1"
        case SIGUSR2: return "SIGUSR2"
        default: return "signal \(signal)"
        }
    }

    static func format(_ seconds: TimeInterval) -> String {
        let total = Int(seconds)
        return String(format: "%d:%02d:%02d", total / 3600, total / 60 % 60, total % 60)
    }

    /// "3600", "90s", "45m", "12h", "MM:SS", "HH:MM:SS" or Slurm's "D-HH:MM:SS", in seconds.
    public static func parseDuration(_ text: String) -> TimeInterval? {
        let trimmed = text.trimmingCharacters(in: .whitespaces)
        if let unit = trimmed.last, "smh".contains(unit), let value = Double(trimmed.dropLast()), value > 0 {
            return value * ["s": 1, "m": 60, "h": 3600][String(unit)]!
        }
        var days = 0.0
        var clock = Substring(trimmed)
        if let dash = trimmed.firstIndex(of: "-") {
            guard let d = Double(trimmed[..<dash]) else { return nil }
            days = d
            clock = trimmed[trimmed.index(after: dash)...]
        }
        var parts = clock.split(separator: ":", omittingEmptySubsequences: false).map { Double($0) }
        guard !parts.isEmpty, parts.count <= 3, parts.allSatisfy({ $0 != nil && $0! >= 0 }) else { return nil }
        // After a day count Slurm writes D-HH, D-HH:MM or D-HH:MM:SS: hours come first.
        if days > 0 { while parts.count < 3 { parts.append(0) } }
        var seconds = 0.0
        for part in parts { seconds = seconds * 60 + part! }
        let total = days * 86400 + seconds
        return total > 0 ? total : nil
    }
}
