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
    }

    private let source: SampleSet
    private let schedule: BatchSchedule
    private let rank: Int
    private let size: Int
    private let microBatch: Int?
    private let slots: [FlatBuffer]
    private let rowIndices: [UnsafeMutableBufferPointer<Int32>]
    private var results: [Result<Int, Error>] = [.success(0), .success(0)]

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
        slots = [FlatBuffer(count: maxRows * source.rowWidth), FlatBuffer(count: maxRows * source.rowWidth)]
        rowIndices = [.allocate(capacity: maxRows), .allocate(capacity: maxRows)]
        free.signal()
        free.signal()
        let thread = Thread { [unowned self] in
            self.produce(startEpoch: startEpoch, startStep: startStep, endEpoch: endEpoch)
            self.finished.signal()
        }
        thread.name = "aedist-prefetch"
        thread.start()
    }

    deinit {
        stop()
        rowIndices.forEach { $0.deallocate() }
    }

    private var isCancelled: Bool {
        lock.lock()
        defer { lock.unlock() }
        return cancelled
    }

    private func produce(startEpoch: Int, startStep: Int, endEpoch: Int) {
        var produced = 0
        for epoch in startEpoch..<max(startEpoch, endEpoch) {
            let order = schedule.order(epoch: epoch)
            for step in (epoch == startEpoch ? startStep : 0)..<schedule.stepsPerEpoch {
                free.wait()
                if isCancelled { return }
                let slot = produced % 2
                results[slot] = Result { try fill(slot: slot, order: order, step: step) }
                produced += 1
                ready.signal()
                if case .failure = results[slot] { return }
            }
        }
    }

    /// Gathers this rank's rows of global batch `step`, in ascending row order: the order within a slice does not
    /// change the summed gradient's meaning, and ascending rows make one HDF5 read of few hyperslabs.
    private func fill(slot: Int, order: [Int32], step: Int) throws -> Int {
        let batch = schedule.globalBatch(step: step)
        let mine = microBatch.map { BatchSchedule.slice(of: batch, rank: rank, size: size, microBatch: $0) }
            ?? BatchSchedule.slice(of: batch, rank: rank, size: size)
        let indices = UnsafeMutableBufferPointer(rebasing: rowIndices[slot][0..<mine.count])
        for (target, position) in mine.enumerated() { indices[target] = order[position] }
        let sortedRun = microBatch ?? max(mine.count, 1)
        for start in stride(from: 0, to: mine.count, by: sortedRun) {
            var run = UnsafeMutableBufferPointer(rebasing: indices[start..<min(start + sortedRun, mine.count)])
            run.sort()
            try source.gather(rows: UnsafeBufferPointer(run), into: slots[slot].pointer + start * source.rowWidth)
        }
        return mine.count
    }

    /// The next batch; the one returned before is given back to the reader.
    func next() throws -> Batch {
        if holdsSlot { free.signal() }
        ready.wait()
        holdsSlot = true
        let slot = consumed % 2
        consumed += 1
        let count = try results[slot].get()
        return Batch(rows: UnsafePointer(slots[slot].pointer), count: count)
    }

    func stop() {
        lock.lock()
        let alreadyCancelled = cancelled
        cancelled = true
        lock.unlock()
        guard !alreadyCancelled else { return }
        free.signal()
        free.signal()
        finished.wait()
    }
}
