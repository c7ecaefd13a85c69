import AEDistCore
import AEDistIO
import CHeapAllocations
import Foundation

/// Where the training time goes. Every rank reads the clock at each phase boundary of every step and adds the
/// interval to that phase's total; with `--timeline FILE` it also keeps each interval as an event, in storage
/// reserved before the first step, and the events of all ranks end up in one Chrome-trace JSON file (open it in
/// chrome://tracing or ui.perfetto.dev), like Horovod's timeline. Recording allocates nothing.
final class StepTimeline {
    enum Phase: Int, CaseIterable {
        /// Waiting for the prefetch thread's batch; forward includes input corruption and the loss; optimizer
        /// includes averaging and clipping; other is the step's bookkeeping (statistics, progress line, drift
        /// checks, mid-epoch checkpoints).
        case dataWait, forward, backward, allReduce, optimizer, other
        /// Outside steps: the epoch-end validation and checkpoint.
        case validation, checkpoint

        var name: String {
            ["data wait", "forward", "backward", "all-reduce", "optimizer", "other", "validation", "checkpoint"][rawValue]
        }
        static let stepPhases: [Phase] = [.dataWait, .forward, .backward, .allReduce, .optimizer, .other]
    }

    /// At most this many events per rank (24 bytes each) are kept for the timeline.
    static let maxEvents = 2_000_000

    /// This process's peak resident memory so far (getrusage's ru_maxrss).
    static var peakResidentBytes: Int {
        var usage = rusage()
        getrusage(__rusage_who_t(RUSAGE_SELF.rawValue), &usage)
        return usage.ru_maxrss * 1024
    }

    /// Resident memory of this process that is its own (anonymous), not pages of files it maps: /proc's RssAnon.
    static var residentPrivateBytes: Int {
        guard let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8),
              let line = status.split(separator: "\n").first(where: { $0.hasPrefix("RssAnon:") }),
              let kilobytes = Int(line.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first ?? "") else { return 0 }
        return kilobytes * 1024
    }

    /// Fails now, rather than after training, when the timeline file cannot be written.
    static func checkWritable(_ path: String) throws {
        let probe = path + ".tmp"
        guard FileManager.default.createFile(atPath: probe, contents: nil) else {
            throw RunFailure("--timeline \(path): cannot create a file there (\(String(cString: strerror(errno))))")
        }
        unlink(probe)
    }

    struct Event {
        var phase: Int32
        var step: Int32
        var start: Int64
        var duration: Int64
    }

    /// Seconds per phase, summed over the steps timed (steps of the first epoch this run trains are left out:
    /// they pay for page faults and BLAS buffers, once).
    private(set) var totals = [Double](repeating: 0, count: Phase.allCases.count)
    private(set) var stepsTimed = 0
    private var counting = false
    private var last: Int64 = 0
    private let events: UnsafeMutableBufferPointer<Event>
    private var eventCount = 0
    private(set) var eventsDropped = 0
    /// Heap allocations on the training thread, when the process runs with the allocation counter preloaded.
    private(set) var allocationsInTimedSteps: UInt64 = 0
    /// Of those, the ones made inside the all-reduce phase (that is, by the MPI library).
    private(set) var allocationsInAllReduce: UInt64 = 0
    private var allocationsAtStepStart: UInt64 = 0
    private var allocationsAtLastMark: UInt64 = 0
    private let countsAllocations = HeapAllocations.counting

    /// - Parameter eventCapacity: events to keep for the timeline (0: no timeline).
    init(eventCapacity: Int) {
        events = .allocate(capacity: max(eventCapacity, 1))
        if eventCapacity == 0 { eventsDropped = -1 }
    }

    deinit { events.deallocate() }

    var recordsEvents: Bool { eventsDropped >= 0 }
    var eventCapacity: Int { events.count }

    /// Wall-clock nanoseconds: comparable between ranks on one node (and across nodes as far as their clocks agree).
    @inline(__always)
    static func now() -> Int64 {
        var time = timespec()
        clock_gettime(CLOCK_REALTIME, &time)
        return Int64(time.tv_sec) * 1_000_000_000 + Int64(time.tv_nsec)
    }

    /// Starts a step; `timed` says whether it counts towards the totals.
    @inline(__always)
    func startStep(timed: Bool) {
        counting = timed
        last = StepTimeline.now()
        if timed && countsAllocations {
            allocationsAtStepStart = HeapAllocations.onThisThread
            allocationsAtLastMark = allocationsAtStepStart
        }
    }

    /// Closes the interval since the last mark as `phase`.
    @inline(__always)
    func mark(_ phase: Phase, step: Int) {
        let time = StepTimeline.now()
        if counting && countsAllocations {
            let allocations = HeapAllocations.onThisThread
            if phase == .allReduce { allocationsInAllReduce &+= allocations &- allocationsAtLastMark }
            allocationsAtLastMark = allocations
        }
        if counting || phase.rawValue >= Phase.validation.rawValue { totals[phase.rawValue] += Double(time - last) * 1e-9 }
        if recordsEvents {
            if eventCount < events.count {
                events[eventCount] = Event(phase: Int32(phase.rawValue), step: Int32(truncatingIfNeeded: step), start: last,
                                           duration: time - last)
                eventCount += 1
            } else {
                eventsDropped += 1
            }
        }
        last = time
    }

    @inline(__always)
    func endStep() {
        guard counting else { return }
        stepsTimed += 1
        if countsAllocations { allocationsInTimedSteps &+= HeapAllocations.onThisThread &- allocationsAtStepStart }
    }

    /// Restarts the clock without recording (after work that belongs to no phase).
    func resume() { last = StepTimeline.now() }

    /// Collective: the mean over ranks of each phase's share of step time, and the mean step time in seconds.
    func breakdown(communicator: Communicator) throws -> (shares: [(Phase, Double)], secondsPerStep: Double, steps: Int) {
        var sums = Phase.stepPhases.map { totals[$0.rawValue] } + [Double(stepsTimed)]
        try communicator.allReduceSum(&sums)
        let stepSeconds = sums.dropLast().reduce(0, +)
        let steps = Int(sums.last! / Double(communicator.size))
        let shares = Phase.stepPhases.enumerated().map { ($1, stepSeconds > 0 ? sums[$0] / stepSeconds : 0) }
        return (shares, stepSeconds / Double(communicator.size) / Double(max(steps, 1)), steps)
    }

    /// Collective: every rank's events, written by rank 0 as Chrome-trace JSON (one process row per rank; times
    /// in microseconds from the earliest event). Returns the number of events written (on rank 0).
    func write(to path: String, communicator: Communicator, extraEvents: [(name: String, start: Int64, duration: Int64)]) throws -> Int {
        // Each rank's events travel as raw bytes, one rank's broadcast at a time: small, and only at the end.
        var earliest = Int64.max
        var perRank: [[Event]] = []
        for rank in 0..<communicator.size {
            var count = [Int64(rank == communicator.rank ? eventCount : 0)]
            try count.withUnsafeMutableBytes { try communicator.broadcast($0, root: rank) }
            var received = [Event](repeating: Event(phase: 0, step: 0, start: 0, duration: 0), count: Int(count[0]))
            if rank == communicator.rank { for i in 0..<eventCount { received[i] = events[i] } }
            try received.withUnsafeMutableBytes { try communicator.broadcast($0, root: rank) }
            perRank.append(received)
            earliest = min(earliest, received.first?.start ?? .max)
        }
        guard communicator.isRoot else { return 0 }
        earliest = min(earliest, extraEvents.map(\.start).min() ?? .max)
        if earliest == .max { earliest = 0 }
        var lines: [String] = []
        for (rank, rankEvents) in perRank.enumerated() {
            lines.append(#"{"name":"process_name","ph":"M","pid":\#(rank),"args":{"name":"rank \#(rank)"}}"#)
            for event in rankEvents {
                let phase = Phase(rawValue: Int(event.phase))!
                lines.append(String(format: #"{"name":"%@","cat":"step","ph":"X","pid":%d,"tid":0,"ts":%.3f,"dur":%.3f,"args":{"step":%d}}"#,
                                    phase.name, rank, Double(event.start - earliest) / 1000, Double(event.duration) / 1000, Int(event.step)))
            }
        }
        for extra in extraEvents {
            lines.append(String(format: #"{"name":"%@","cat":"run","ph":"X","pid":0,"tid":1,"ts":%.3f,"dur":%.3f}"#,
                                extra.name, Double(extra.start - earliest) / 1000, Double(extra.duration) / 1000))
        }
        let json = "{\"displayTimeUnit\":\"ms\",\"traceEvents\":[\n" + lines.joined(separator: ",\n") + "\n]}\n"
        do { try AtomicFile.write(Data(json.utf8), to: path) } catch {
            throw RunFailure("cannot write the timeline \(path): \(userMessage(error))")
        }
        return perRank.reduce(0) { $0 + $1.count }
    }
}

/// The heap-allocation counter of a preloaded libAEDistHeapCounter.so (how the benchmark and the tests check that
/// a steady-state step allocates nothing); without it, counting is off.
enum HeapAllocations {
    static var counting: Bool { aedheap_counting() != 0 }
    @inline(__always)
    static var onThisThread: UInt64 { UInt64(aedheap_thread_allocations()) }
}
