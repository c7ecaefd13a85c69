import Foundation

/// N ranks inside one process, one thread each, behind the same `Communicator` protocol as Open MPI: what swift-nio's
/// Embedded channel is to its network. Tests run the real trainer at 1, 2, 3 or 8 ranks in seconds, with rank
/// agreement, failures and stops exercised exactly as under mpirun. Sums combine the ranks' contributions in rank
/// order, so every rank gets the same bits.
public final class InProcessGroup: @unchecked Sendable {
    public let size: Int
    /// A collective that waits longer than this throws instead of hanging the test suite: a rank never came.
    let timeout: TimeInterval
    private let condition = NSCondition()
    private var arrived = 0
    private var generation = 0
    /// Each rank's contribution to the collective in progress.
    private var slots: [UnsafeMutableRawPointer?]
    /// Set once a collective timed out: the group no longer has every rank, so every pending and later
    /// collective throws this instead of combining with a rank that left.
    private var broken: String?

    public init(size: Int, timeout: TimeInterval = 60) {
        precondition(size >= 1)
        self.size = size
        self.timeout = timeout
        slots = Array(repeating: nil, count: size)
    }

    /// Runs `body` on every rank, each on its own thread (with room for deep stacks), and returns each rank's
    /// outcome in rank order once all have finished.
    public static func run<T>(ranks: Int, timeout: TimeInterval = 60,
                              _ body: @escaping @Sendable (InProcessCommunicator) throws -> T) -> [Result<T, Error>] {
        let group = InProcessGroup(size: ranks, timeout: timeout)
        let outcomes = Outcomes<T>(count: ranks)
        let finished = DispatchGroup()
        for rank in 0..<ranks {
            finished.enter()
            let thread = Thread {
                outcomes.set(rank, Result { try body(InProcessCommunicator(rank: rank, group: group)) })
                finished.leave()
            }
            thread.stackSize = 16 << 20
            thread.start()
        }
        finished.wait()
        return outcomes.values.map { $0! }
    }

    private final class Outcomes<T>: @unchecked Sendable {
        private let lock = NSLock()
        private(set) var values: [Result<T, Error>?]
        init(count: Int) { values = Array(repeating: nil, count: count) }
        func set(_ index: Int, _ value: Result<T, Error>) { lock.withLock { values[index] = value } }
    }

    /// Waits until every rank has arrived at this barrier.
    func barrier(rank: Int) throws {
        condition.lock()
        defer { condition.unlock() }
        if let broken { throw CommunicatorTimeout(description: broken) }
        let myGeneration = generation
        arrived += 1
        if arrived == size {
            arrived = 0
            generation += 1
            condition.broadcast()
            return
        }
        let deadline = Date().addingTimeInterval(timeout)
        while generation == myGeneration {
            if let broken { throw CommunicatorTimeout(description: broken) }
            if !condition.wait(until: deadline) && generation == myGeneration {
                broken = "rank \(rank) waited \(timeout) s in a collective that not every rank reached"
                slots = Array(repeating: nil, count: size)
                condition.broadcast()
                throw CommunicatorTimeout(description: broken!)
            }
        }
    }

    /// One collective: each rank offers `contribution`, then `combine` runs on each rank with every rank's offer in
    /// rank order; no rank moves on until all have combined (so offers stay valid while read).
    func collective(rank: Int, contribution: UnsafeMutableRawPointer, combine: ([UnsafeMutableRawPointer]) -> Void) throws {
        condition.lock()
        slots[rank] = contribution
        condition.unlock()
        try barrier(rank: rank)
        condition.lock()
        let offers = slots.compactMap { $0 }
        condition.unlock()
        guard offers.count == size else { throw CommunicatorTimeout(description: "a rank left the collective") }
        combine(offers)
        try barrier(rank: rank)
    }
}

public struct CommunicatorTimeout: UserFacingError {
    public let description: String
}

/// One rank of an `InProcessGroup`.
public final class InProcessCommunicator: Communicator, @unchecked Sendable {
    public let rank: Int
    public var size: Int { group.size }
    public var localSize: Int { group.size }
    let group: InProcessGroup

    init(rank: Int, group: InProcessGroup) {
        self.rank = rank
        self.group = group
    }

    /// Every rank's values combined element-wise in rank order, written back to each rank's buffer.
    private func reduce<Value>(_ values: UnsafeMutableBufferPointer<Value>, _ combine: (Value, Value) -> Value) throws {
        let count = values.count
        let result = UnsafeMutableBufferPointer<Value>.allocate(capacity: max(count, 1))
        defer { result.deallocate() }
        try group.collective(rank: rank, contribution: UnsafeMutableRawPointer(values.baseAddress ?? result.baseAddress!)) { offers in
            let buffers = offers.map { $0.assumingMemoryBound(to: Value.self) }
            for i in 0..<count {
                var total = buffers[0][i]
                for other in buffers.dropFirst() { total = combine(total, other[i]) }
                result[i] = total
            }
        }
        for i in 0..<count { values[i] = result[i] }
    }

    public func allReduceSum(_ values: UnsafeMutableBufferPointer<Float>) throws { try reduce(values, +) }
    public func allReduceSum(_ values: UnsafeMutableBufferPointer<Double>) throws { try reduce(values, +) }
    public func allReduceMax(_ values: UnsafeMutableBufferPointer<Double>) throws { try reduce(values) { $0.isNaN || $1.isNaN ? .nan : max($0, $1) } }
    public func allReduceMin(_ values: UnsafeMutableBufferPointer<Int64>) throws { try reduce(values, min) }
    public func allReduceSum(_ values: UnsafeMutableBufferPointer<Int64>) throws { try reduce(values, &+) }

    public func broadcast(_ bytes: UnsafeMutableRawBufferPointer, root: Int) throws {
        var scratch: UInt8 = 0
        try withUnsafeMutablePointer(to: &scratch) { fallback in
            let mine = bytes.baseAddress ?? UnsafeMutableRawPointer(fallback)
            try group.collective(rank: rank, contribution: mine) { offers in
                if rank != root && bytes.count > 0 { mine.copyMemory(from: offers[root], byteCount: bytes.count) }
            }
        }
    }

    public func allGather(_ value: UInt64) throws -> [UInt64] {
        var mine = value
        var all: [UInt64] = []
        try withUnsafeMutablePointer(to: &mine) { pointer in
            try group.collective(rank: rank, contribution: UnsafeMutableRawPointer(pointer)) { offers in
                all = offers.map { $0.load(as: UInt64.self) }
            }
        }
        return all
    }
}
