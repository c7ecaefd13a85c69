import AEDistCore
import AEDistIO
import Foundation

/// Reads this rank's slice of each coming global batch on a background thread, one batch ahead of compute, into
/// two buffers allocated once. The sequence of (epoch, step) is fixed in advance, so the reader never waits on
/// the trainer to know what comes next.
final class BatchPrefetcher {
    struct Batch {
        let rows: UnsafePointer<Float>
        let count: Int
        /// The sample index of each row, and the epoch: what per-sample noise is keyed by.
        let sampleIndices: UnsafePointer<Int32>
        let epoch: Int
        /// Where this rank's rows start within the global batch, and the global batch's size.
        let globalOffset: Int
        let globalCount: Int
    }

    /// One slot's outcome. Each box is touched by one thread at a time, in turns the semaphores enforce.
    private final class Outcome: @unchecked Sendable {
        var value: Result<Int, Error> = .success(0)
        var epoch = 0
        var step = 0
    }

    /// The fixed sequence of (epoch, step) to read, with the current epoch's sample order.
    private struct Positions {
        let schedule: BatchSchedule
        var epoch: Int
        var step: Int
        let endEpoch: Int
        /// One buffer, refilled at each epoch (so reading batches allocates nothing).
        let order: UnsafeMutableBufferPointer<Int32>
        var orderEpoch = -1

        init(schedule: BatchSchedule, epoch: Int, step: Int, endEpoch: Int) {
            self.schedule = schedule
            self.epoch = epoch
            self.step = step
            self.endEpoch = endEpoch
            order = .allocate(capacity: schedule.sampleCount)
        }

        mutating func next() -> (order: UnsafeMutableBufferPointer<Int32>, epoch: Int, step: Int)? {
            if step >= schedule.stepsPerEpoch {
                epoch += 1
                step = 0
            }
            guard epoch < endEpoch else { return nil }
            if orderEpoch != epoch {
                schedule.order(epoch: epoch, into: order)
                orderEpoch = epoch
            }
            defer { step += 1 }
            return (order, epoch, step)
        }
    }

    private let source: SampleSet
    private let schedule: BatchSchedule
    private let rank: Int
    private let size: Int
    private let microBatch: Int?
    private let slots: [FlatBuffer]
    private let rowIndices: [UnsafeMutableBufferPointer<Int32>]
    private let outcomes = [Outcome(), Outcome()]
    private var positions: Positions
    /// Reading happens on a background thread unless the HDF5 library cannot be called from two threads.
    private let inBackground: Bool

    /// Starts at 0 and is signalled twice in init: libdispatch traps when a semaphore is freed below its initial value.
    private let free = DispatchSemaphore(value: 0)
    private let ready = DispatchSemaphore(value: 0)
    private let finished = DispatchSemaphore(value: 0)
    private let lock = NSLock()
    private var cancelled = false
    private var consumed = 0
    private var holdsSlot = false

    /// Prefetches steps from (`startEpoch`, `startStep`) up to the end of epoch `endEpoch - 1`.
    /// - Parameter microBatch: in deterministic mode, the rank's share is whole micro-batches, each sorted on its own.
    init(source: SampleSet, schedule: BatchSchedule, rank: Int, size: Int, maxRows: Int, startEpoch: Int,
         startStep: Int, endEpoch: Int, microBatch: Int? = nil) {
        self.source = source
        self.microBatch = microBatch
        self.schedule = schedule
        self.rank = rank
        self.size = size
        positions = Positions(schedule: schedule, epoch: startEpoch, step: startStep, endEpoch: endEpoch)
        slots = [FlatBuffer(count: maxRows * source.rowWidth), FlatBuffer(count: maxRows * source.rowWidth)]
        rowIndices = [.allocate(capacity: maxRows), .allocate(capacity: maxRows)]
        // Cached rows are a memory gather of a few hundred KB: quicker done by the training thread itself than
        // handed over by another thread, which on a node with a rank per core has to be scheduled first. Reading
        // the file is what a background thread hides; through libhdf5 that needs a thread-safe build.
        inBackground = !source.isCached && (source.gathersWithoutLibrary || HDF5File.libraryIsThreadSafe)
        guard inBackground else { return }
        free.signal()
        free.signal()
        let thread = Thread { [unowned self] in
            self.produce()
            self.finished.signal()
        }
        thread.name = "aedist-prefetch"
        thread.start()
    }

    deinit {
        stop()
        rowIndices.forEach { $0.deallocate() }
        positions.order.deallocate()
    }

    private var isCancelled: Bool {
        lock.lock()
        defer { lock.unlock() }
        return cancelled
    }

    private func produce() {
        var produced = 0
        while let (order, epoch, step) = positions.next() {
            free.wait()
            if isCancelled { return }
            let slot = produced % 2
            outcomes[slot].value = Result { try fill(slot: slot, order: order, step: step) }
            outcomes[slot].epoch = epoch
            outcomes[slot].step = step
            produced += 1
            ready.signal()
            if case .failure = outcomes[slot].value { return }
        }
    }

    /// Gathers this rank's rows of global batch `step`, in ascending row order: the order within a slice does not
    /// change the summed gradient's meaning, and ascending rows make one HDF5 read of few hyperslabs.
    private func fill(slot: Int, order: UnsafeMutableBufferPointer<Int32>, step: Int) throws -> Int {
        let mine = slice(step: step)
        if source.canAnnounceReads && readsHitDisk() {
            // Streaming from disk: tell the kernel which rows come a few steps from now, so their reads are in
            // flight together (a disk serves many requests at once far faster than one after another). Only
            // while reads miss the page cache: for a file already in memory the hints would cost a system call a row.
            let ahead = step + Self.readAheadSteps
            if ahead < schedule.stepsPerEpoch {
                for position in slice(step: ahead) { source.announceRead(row: Int(order[position])) }
            }
        }
        let indices = UnsafeMutableBufferPointer(rebasing: rowIndices[slot][0..<mine.count])
        for (target, position) in mine.enumerated() { indices[target] = order[position] }
        let sortedRun = microBatch ?? max(mine.count, 1)
        for start in stride(from: 0, to: mine.count, by: sortedRun) {
            var run = UnsafeMutableBufferPointer(rebasing: indices[start..<min(start + sortedRun, mine.count)])
            heapSort(run)
            try source.gather(rows: UnsafeBufferPointer(run), into: slots[slot].pointer + start * source.rowWidth)
        }
        return mine.count
    }

    /// How far ahead of the batch being read the prefetcher announces rows to the kernel.
    static let readAheadSteps = 8
    private var majorFaultsSeen = -1
    private var batchesRead = 0
    private var announcingUntilBatch = 0

    /// Whether this thread waited for the disk (a major page fault) in the last 64 batches: the file's pages are not
    /// all in memory. (A window, not the last batch alone: a batch whose rows were announced in time does not fault,
    /// and the announcements must go on for that.)
    private func readsHitDisk() -> Bool {
        var usage = rusage()
        getrusage(__rusage_who_t(1), &usage)  // RUSAGE_THREAD
        batchesRead += 1
        if usage.ru_majflt != majorFaultsSeen { announcingUntilBatch = batchesRead + 64 }
        majorFaultsSeen = usage.ru_majflt
        return batchesRead < announcingUntilBatch
    }

    /// This rank's positions in the epoch's order for global batch `step`.
    private func slice(step: Int) -> Range<Int> {
        let batch = schedule.globalBatch(step: step)
        return microBatch.map { BatchSchedule.slice(of: batch, rank: rank, size: size, microBatch: $0) }
            ?? BatchSchedule.slice(of: batch, rank: rank, size: size)
    }

    /// The next batch; the one returned before is given back to the reader.
    func next() throws -> Batch {
        guard inBackground else {
            guard let (order, epoch, step) = positions.next() else { throw RunFailure("no batch left to read (internal error)") }
            let count = try fill(slot: 0, order: order, step: step)
            return batch(slot: 0, count: count, epoch: epoch, step: step)
        }
        if holdsSlot { free.signal() }
        ready.wait()
        holdsSlot = true
        let slot = consumed % 2
        consumed += 1
        let count = try outcomes[slot].value.get()
        return batch(slot: slot, count: count, epoch: outcomes[slot].epoch, step: outcomes[slot].step)
    }

    private func batch(slot: Int, count: Int, epoch: Int, step: Int) -> Batch {
        let global = schedule.globalBatch(step: step)
        return Batch(rows: UnsafePointer(slots[slot].pointer), count: count, sampleIndices: UnsafePointer(rowIndices[slot].baseAddress!),
                     epoch: epoch, globalOffset: slice(step: step).lowerBound - global.lowerBound, globalCount: global.count)
    }

    func stop() {
        lock.lock()
        let alreadyCancelled = cancelled
        cancelled = true
        lock.unlock()
        guard !alreadyCancelled, inBackground else { return }
        free.signal()
        free.signal()
        finished.wait()
    }
}

/// In place and without allocating (the standard library's sort may allocate a merge buffer), so reading a batch
/// on the training thread allocates nothing.
func heapSort(_ values: UnsafeMutableBufferPointer<Int32>) {
    func siftDown(_ start: Int, _ end: Int) {
        var root = start
        while 2 * root + 1 < end {
            var child = 2 * root + 1
            if child + 1 < end && values[child] < values[child + 1] { child += 1 }
            guard values[root] < values[child] else { return }
            values.swapAt(root, child)
            root = child
        }
    }
    let count = values.count
    for start in stride(from: count / 2 - 1, through: 0, by: -1) { siftDown(start, count) }
    for end in stride(from: count - 1, to: 0, by: -1) {
        values.swapAt(0, end)
        siftDown(0, end)
    }
}
