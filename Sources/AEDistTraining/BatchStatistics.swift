import AEDistCore

/// Sums of per-micro-batch statistics (BatchNorm's) over the global batch, on every rank alike: one small
/// all-reduce per call. In deterministic mode the sum must not depend on how micro-batches are spread over ranks:
/// each rank writes its micro-batches' rows into a table of the whole global batch, zero elsewhere; a sum of one
/// value and zeros is exact in any order, so after the all-reduce every rank holds the same table and adds its rows
/// in micro-batch order. Communication errors are kept and thrown after the pass (a layer cannot throw).
final class BatchStatistics: BatchStatisticsReducer {
    let communicator: Communicator
    /// Deterministic mode: room for the whole global batch's micro-batches × the widest statistics row.
    private let table: UnsafeMutableBufferPointer<Double>
    private let exact: Bool
    /// Set per batch: where this rank's micro-batches start in the global batch.
    var firstMicroBatch = 0
    /// The most micro-batches a global batch has: every rank sends a table this long (the last batch of an epoch,
    /// shorter, leaves rows of zeros), so the collective's size never depends on which batch a rank holds.
    private let globalMicroBatches: Int
    private(set) var failure: Error?

    init(communicator: Communicator, exactMicroBatches: Int?, maxWidth: Int) {
        self.communicator = communicator
        exact = exactMicroBatches != nil
        globalMicroBatches = max(1, exactMicroBatches ?? 1)
        table = .allocate(capacity: globalMicroBatches * maxWidth)
    }

    deinit { table.deallocate() }

    func reduce(_ partials: UnsafePointer<Double>, chunks: Int, width: Int, into totals: UnsafeMutablePointer<Double>) {
        do {
            if exact {
                let rows = UnsafeMutableBufferPointer(rebasing: table[0..<(globalMicroBatches * width)])
                rows.update(repeating: 0)
                for chunk in 0..<chunks {
                    (rows.baseAddress! + (firstMicroBatch + chunk) * width).update(from: partials + chunk * width, count: width)
                }
                try communicator.allReduceSum(rows)
                totals.update(repeating: 0, count: width)
                for row in 0..<globalMicroBatches { for i in 0..<width { totals[i] += rows[row * width + i] } }
            } else {
                totals.update(repeating: 0, count: width)
                for chunk in 0..<chunks { for i in 0..<width { totals[i] += partials[chunk * width + i] } }
                try communicator.allReduceSum(UnsafeMutableBufferPointer(start: totals, count: width))
            }
        } catch {
            if failure == nil { failure = error }
            totals.update(repeating: .nan, count: width)
        }
    }

    /// The first communication error since the last call, thrown.
    func check() throws {
        if let failure {
            self.failure = nil
            throw failure
        }
    }
}
