import AEDistCore
import CMPI
import Foundation

public struct MPIError: UserFacingError {
    public let description: String
}

/// The world communicator of Open MPI. Errors come back as Swift errors (the shim sets MPI_ERRORS_RETURN), so the
/// trainer can report them and end every rank itself.
public final class MPICommunicator: Communicator {
    public let rank: Int
    public let size: Int
    public let localSize: Int

    /// MPI_Init can happen once per process; later calls return the same world.
    /// - Parameter collectiveTimeout: seconds a collective may take before the job is aborted (see below).
    public static func world(collectiveTimeout: TimeInterval = 600) throws -> MPICommunicator {
        if let shared = MPICommunicator.shared { return shared }
        if aedmpi_is_initialized() == 0 {
            try check(aedmpi_init(), "MPI_Init")
        }
        let world = MPICommunicator(rank: Int(aedmpi_rank()), size: Int(aedmpi_size()), localSize: Int(aedmpi_local_size()),
                                    collectiveTimeout: collectiveTimeout)
        MPICommunicator.shared = world
        return world
    }

    nonisolated(unsafe) private static var shared: MPICommunicator?

    private init(rank: Int, size: Int, localSize: Int, collectiveTimeout: TimeInterval) {
        self.rank = rank
        self.size = size
        self.localSize = max(1, localSize)
        self.collectiveTimeout = collectiveTimeout
        watchdog = CollectiveWatchdog(rank: rank, size: size, timeout: collectiveTimeout)
        arrivals = .allocate(capacity: size)
        arrivals.initialize(repeating: -1)
        announcedStep = .allocate(capacity: 1)
        noticeRequests = .allocate(capacity: max(size, 1))
        noticeRequests.initialize(repeating: aedmpi_request())
    }

    /// Ends MPI for this process; every rank must call it, after its last collective.
    public static func finalize() {
        if aedmpi_is_initialized() != 0 && aedmpi_is_finalized() == 0 { _ = aedmpi_finalize() }
    }

    /// Tears the whole job down at once, for a failure one rank cannot tell the others about.
    public static func abort(exitCode: Int32) -> Never {
        aedmpi_abort(exitCode)
        Foundation.exit(exitCode)
    }

    private static func check(_ code: Int32, _ operation: String) throws {
        guard code != 0 else { return }
        var buffer = [CChar](repeating: 0, count: 256)
        aedmpi_error_string(code, &buffer, Int32(buffer.count))
        throw MPIError(description: "\(operation) failed: \(String(cString: buffer))")
    }

    // MARK: collectives, under a watchdog
    //
    // Collectives block (MPI's tuned blocking algorithms are the fastest), while a watchdog thread watches the clock:
    // a rank that died, was stopped, or is stuck in I/O must never leave the others waiting forever. Before each
    // step's all-reduce every rank sends rank 0 a one-number arrival notice; MPI's progress engine delivers them
    // while rank 0 waits inside the all-reduce. When a collective outlives the timeout, rank 0's watchdog names
    // the ranks that arrived and the missing ones, and ends the process, which makes mpirun end the job. The other
    // ranks' watchdogs wait a grace period longer, so rank 0's account comes first, in case rank 0 is the one missing.
    // The watchdog makes no MPI call (MPI is initialised for one calling thread).

    /// Seconds a collective may take before the job is aborted.
    public let collectiveTimeout: TimeInterval

    private let watchdog: CollectiveWatchdog
    /// Per rank: the step it announced before entering the step's all-reduce (rank 0 collects them).
    private let arrivals: UnsafeMutableBufferPointer<Int64>
    /// What this rank announces; a send buffer must stay put until the send completes.
    private let announcedStep: UnsafeMutablePointer<Int64>
    /// The arrival notices' MPI requests (rank 0 receives size − 1, the others send one).
    private let noticeRequests: UnsafeMutableBufferPointer<aedmpi_request>

    public func whileRootWorksAlone<T>(_ body: () throws -> T) rethrows -> T {
        watchdog.setPatience(10)
        defer { watchdog.setPatience(1) }
        return try body()
    }

    private func watched(_ operation: String, step: Int? = nil, _ call: () -> Int32) throws {
        watchdog.enter(operation, step: step, arrivals: step == nil ? nil : arrivals)
        let code = call()
        watchdog.leave()
        try Self.check(code, operation)
    }

    public func allReduceGradients(_ values: UnsafeMutableBufferPointer<Float>, step: Int) throws {
        guard let base = values.baseAddress, size > 1 else { return }
        announcedStep.pointee = Int64(step)
        // The requests go in storage allocated once: a step allocates nothing on the heap.
        let notices = noticeRequests.baseAddress!
        let noticeCount = rank == 0 ? size - 1 : 1
        if rank == 0 {
            for source in 1..<size {
                try Self.check(aedmpi_irecv_int64(arrivals.baseAddress! + source, Int32(source), 7, notices + source - 1), "MPI_Irecv")
            }
        } else {
            try Self.check(aedmpi_isend_int64(announcedStep, 0, 7, notices), "MPI_Isend")
        }
        try watched("the gradient all-reduce", step: step) { aedmpi_allreduce_sum_float(base, Int64(values.count)) }
        // Every notice was sent before its rank entered the all-reduce, so these complete at once.
        for index in 0..<noticeCount {
            try watched("an arrival notice", step: step) { aedmpi_wait(notices + index) }
        }
    }

    public func allReduceSum(_ values: UnsafeMutableBufferPointer<Float>) throws {
        guard let base = values.baseAddress, size > 1 else { return }
        try watched("an MPI_Allreduce") { aedmpi_allreduce_sum_float(base, Int64(values.count)) }
    }

    public func allReduceSum(_ values: UnsafeMutableBufferPointer<Double>) throws {
        guard let base = values.baseAddress, size > 1 else { return }
        try watched("an MPI_Allreduce") { aedmpi_allreduce_sum_double(base, Int64(values.count)) }
    }

    public func allReduceMax(_ values: UnsafeMutableBufferPointer<Double>) throws {
        guard let base = values.baseAddress, size > 1 else { return }
        try watched("an MPI_Allreduce") { aedmpi_allreduce_max_double(base, Int64(values.count)) }
    }

    public func allReduceMin(_ values: UnsafeMutableBufferPointer<Int64>) throws {
        guard let base = values.baseAddress, size > 1 else { return }
        try watched("an MPI_Allreduce") { aedmpi_allreduce_min_int64(base, Int64(values.count)) }
    }

    public func allReduceSum(_ values: UnsafeMutableBufferPointer<Int64>) throws {
        guard let base = values.baseAddress, size > 1 else { return }
        try watched("an MPI_Allreduce") { aedmpi_allreduce_sum_int64(base, Int64(values.count)) }
    }

    public func broadcast(_ bytes: UnsafeMutableRawBufferPointer, root: Int) throws {
        guard let base = bytes.baseAddress, size > 1 else { return }
        try watched("an MPI_Bcast") { aedmpi_bcast_bytes(base, Int64(bytes.count), Int32(root)) }
    }

    public func allGather(_ value: UInt64) throws -> [UInt64] {
        guard size > 1 else { return [value] }
        var values = [UInt64](repeating: 0, count: size)
        try watched("an MPI_Allgather") { aedmpi_allgather_uint64(value, &values) }
        return values
    }
}

/// The clock on collectives: a thread that wakes twice a second and ends the process when the collective in
/// flight has outlived the timeout. It reads only plain memory and writes to stderr.
final class CollectiveWatchdog: @unchecked Sendable {
    let rank: Int
    let size: Int
    let timeout: TimeInterval
    /// Multiplies the timeout while rank 0 does I/O alone.
    private var patience: Double = 1
    private let lock = NSLock()
    private var operation = ""
    private var step: Int?
    private var arrivals: UnsafeMutableBufferPointer<Int64>?
    private var since: Date?
    private var lastStep = 0
    private var started = false

    init(rank: Int, size: Int, timeout: TimeInterval) {
        self.rank = rank
        self.size = size
        self.timeout = timeout
    }

    func setPatience(_ factor: Double) {
        lock.lock()
        patience = factor
        lock.unlock()
    }

    func enter(_ operation: String, step: Int?, arrivals: UnsafeMutableBufferPointer<Int64>?) {
        lock.lock()
        self.operation = operation
        self.step = step
        self.arrivals = arrivals
        since = Date()
        if !started {
            started = true
            let thread = Thread { [unowned self] in self.watch() }
            thread.name = "aedist-watchdog"
            thread.start()
        }
        lock.unlock()
    }

    func leave() {
        lock.lock()
        if let step { lastStep = step }
        since = nil
        lock.unlock()
    }

    private func watch() {
        while true {
            Thread.sleep(forTimeInterval: 0.5)
            lock.lock()
            let grace = rank == 0 ? 0 : max(5, timeout / 4)
            let expired = since.map { Date().timeIntervalSince($0) > timeout * patience + grace } ?? false
            let message = expired ? describe() : ""
            lock.unlock()
            if expired {
                FileHandle.standardError.write(Data("aedist: error: \(message); aborting the job (--collective-timeout)\n".utf8))
                _exit(1)
            }
        }
    }

    private func describe() -> String {
        let when = step.map { "of step \($0)" } ?? "after step \(lastStep)"
        var message = "\(operation) \(when) did not complete within \(Int(timeout * patience)) s"
        if rank == 0, let step, let arrivals {
            let arrived = (0..<size).filter { $0 == 0 || arrivals[$0] == Int64(step) }
            let missing = (0..<size).filter { !arrived.contains($0) }
            if missing.isEmpty {
                message += "; every rank arrived, so one stopped responding inside it (a stopped or hung process, or a broken network link)"
            } else {
                message += "; ranks that arrived: \(Self.list(arrived)); missing: \(Self.list(missing)) (dead, stopped, or stuck in I/O)"
            }
        } else if rank != 0 {
            message = "rank \(rank): \(message), and rank 0 did not report it (rank 0 may be the one missing)"
        }
        return message
    }

    private static func list(_ ranks: [Int]) -> String {
        if ranks.isEmpty { return "none" }
        let shown = ranks.prefix(16).map(String.init).joined(separator: ", ")
        return ranks.count > 16 ? "\(shown), … (\(ranks.count) in all)" : shown
    }
}
