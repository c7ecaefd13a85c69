/// Which samples make each global batch, and which part of it each rank computes.
///
/// The order is a function of (seed, epoch) only, and global batch k is positions [k·B, (k+1)·B) of it — never a
/// function of the number of ranks — so
/// `-n 1`, `-n 2` and `-n 8` see the same global batches, and a run resumed at a different size continues the same
/// sequence. A rank computes a contiguous slice of each global batch; slices differ by at most one sample.
public struct BatchSchedule: Sendable {
    public let sampleCount: Int
    public let globalBatchSize: Int
    public let seed: UInt64
    public let shuffle: Bool

    public init(sampleCount: Int, globalBatchSize: Int, seed: UInt64, shuffle: Bool = true) {
        self.sampleCount = sampleCount
        self.globalBatchSize = globalBatchSize
        self.seed = seed
        self.shuffle = shuffle
    }

    /// The last batch of an epoch holds the remainder (Keras's and PyTorch's default `drop_last=False`).
    public var stepsPerEpoch: Int { (sampleCount + globalBatchSize - 1) / globalBatchSize }

    /// A fresh permutation of 0..<sampleCount for this epoch (Fisher–Yates on the epoch's own random stream).
    public func order(epoch: Int) -> [Int32] {
        var order = [Int32](repeating: 0, count: sampleCount)
        order.withUnsafeMutableBufferPointer { self.order(epoch: epoch, into: $0) }
        return order
    }

    /// The same order written into `order` (sampleCount values): the trainer reuses one buffer for every epoch.
    public func order(epoch: Int, into order: UnsafeMutableBufferPointer<Int32>) {
        for i in 0..<sampleCount { order[i] = Int32(i) }
        guard shuffle, sampleCount > 1 else { return }
        var random = RandomStream(seed: seed, RandomStream.Purpose.shuffle.rawValue, UInt64(epoch))
        for i in stride(from: sampleCount - 1, to: 0, by: -1) {
            let j = Int(random.next() % UInt64(i + 1))
            order.swapAt(i, j)
        }
    }

    /// Positions in the epoch's order that make global batch `step`.
    public func globalBatch(step: Int) -> Range<Int> {
        let start = step * globalBatchSize
        return start..<min(start + globalBatchSize, sampleCount)
    }

    /// This rank's contiguous share of `batch`: the first (count mod size) ranks take one extra sample.
    public static func slice(of batch: Range<Int>, rank: Int, size: Int) -> Range<Int> {
        let base = batch.count / size, extra = batch.count % size
        let start = batch.lowerBound + rank * base + min(rank, extra)
        return start..<(start + base + (rank < extra ? 1 : 0))
    }

    /// This rank's share of `batch` in whole micro-batches of `microBatch` samples (the last may be shorter), so
    /// that every micro-batch is computed whole by one rank whatever the number of ranks.
    public static func slice(of batch: Range<Int>, rank: Int, size: Int, microBatch: Int) -> Range<Int> {
        let micro = slice(of: 0..<((batch.count + microBatch - 1) / microBatch), rank: rank, size: size)
        let start = batch.lowerBound + micro.lowerBound * microBatch
        return start..<min(batch.lowerBound + micro.upperBound * microBatch, batch.upperBound)
    }

    /// The most samples any rank computes in one step: what activation buffers are sized for.
    public static func maxSliceCount(globalBatchSize: Int, size: Int, microBatch: Int? = nil) -> Int {
        guard let microBatch else { return (globalBatchSize + size - 1) / size }
        let micro = (globalBatchSize + microBatch - 1) / microBatch
        return min(globalBatchSize, (micro + size - 1) / size * microBatch)
    }
}
