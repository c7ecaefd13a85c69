import AEDistCore
import XCTest

final class BatchScheduleTests: XCTestCase {
    func testOrderIsAPermutation() {
        for sampleCount in [0, 1, 2, 7, 256, 4000] {
            let order = BatchSchedule(sampleCount: sampleCount, globalBatchSize: 256, seed: 3).order(epoch: 2)
            XCTAssertEqual(order.sorted(), Array(0..<Int32(sampleCount)), "\(sampleCount) samples")
        }
    }

    func testOrderDependsOnlyOnSeedAndEpoch() {
        let schedule = BatchSchedule(sampleCount: 1000, globalBatchSize: 64, seed: 42)
        let order = schedule.order(epoch: 3)
        XCTAssertEqual(order, schedule.order(epoch: 3), "same epoch twice")
        XCTAssertEqual(order, BatchSchedule(sampleCount: 1000, globalBatchSize: 64, seed: 42).order(epoch: 3),
                       "a second schedule (another rank, or a resumed run) sees the same order")
        XCTAssertNotEqual(order, schedule.order(epoch: 4), "each epoch reshuffles")
        XCTAssertNotEqual(order, BatchSchedule(sampleCount: 1000, globalBatchSize: 64, seed: 43).order(epoch: 3),
                          "another seed, another order")
        XCTAssertNotEqual(order, Array(0..<1000), "shuffled, not the identity")
    }

    func testWithoutShuffleTheOrderIsTheIdentity() {
        let schedule = BatchSchedule(sampleCount: 10, globalBatchSize: 4, seed: 42, shuffle: false)
        XCTAssertEqual(schedule.order(epoch: 5), Array(0..<10))
    }

    /// The last batch of an epoch holds the remainder (drop_last = false).
    func testStepsPerEpochAndGlobalBatches() {
        let cases: [(samples: Int, batch: Int, steps: Int, last: Int)] = [
            (4000, 256, 16, 160), (4096, 256, 16, 256), (1, 256, 1, 1), (10, 4, 3, 2), (7, 7, 1, 7),
        ]
        for (samples, batch, steps, last) in cases {
            let schedule = BatchSchedule(sampleCount: samples, globalBatchSize: batch, seed: 0)
            XCTAssertEqual(schedule.stepsPerEpoch, steps, "\(samples) samples in batches of \(batch)")
            let batches = (0..<schedule.stepsPerEpoch).map(schedule.globalBatch(step:))
            XCTAssertEqual(batches.first?.lowerBound, 0)
            XCTAssertEqual(batches.last?.upperBound, samples, "the epoch covers every sample")
            XCTAssertEqual(batches.last?.count, last, "last batch of \(samples) samples in batches of \(batch)")
            XCTAssertTrue(batches.dropLast().allSatisfy { $0.count == batch })
            XCTAssertTrue(zip(batches, batches.dropFirst()).allSatisfy { $0.upperBound == $1.lowerBound }, "batches tile the epoch")
        }
        XCTAssertEqual(BatchSchedule(sampleCount: 0, globalBatchSize: 256, seed: 0).stepsPerEpoch, 0)
    }

    /// For every world size 1…8 and every global batch — including uneven ones and batches smaller than the number
    /// of ranks — the rank slices are contiguous, disjoint, in rank order, cover the batch exactly, differ in size
    /// by at most one, and never exceed `maxSliceCount` (what activation buffers are sized for).
    func testRankSlicesPartitionEveryGlobalBatch() {
        for (samples, batchSize) in [(4000, 256), (10, 4), (5, 3), (3, 8), (1, 1), (17, 16)] {
            let schedule = BatchSchedule(sampleCount: samples, globalBatchSize: batchSize, seed: 1)
            for size in 1...8 {
                let maxSlice = BatchSchedule.maxSliceCount(globalBatchSize: batchSize, size: size)
                for step in 0..<schedule.stepsPerEpoch {
                    let batch = schedule.globalBatch(step: step)
                    let slices = (0..<size).map { BatchSchedule.slice(of: batch, rank: $0, size: size) }
                    let context = "\(samples) samples, batch \(batchSize), step \(step), \(size) ranks: \(slices)"
                    XCTAssertEqual(slices.first?.lowerBound, batch.lowerBound, context)
                    XCTAssertEqual(slices.last?.upperBound, batch.upperBound, context)
                    XCTAssertTrue(zip(slices, slices.dropFirst()).allSatisfy { $0.upperBound == $1.lowerBound },
                                  "contiguous and disjoint: \(context)")
                    XCTAssertEqual(slices.map(\.count).reduce(0, +), batch.count, context)
                    let counts = slices.map(\.count)
                    XCTAssertLessThanOrEqual(counts.max()! - counts.min()!, 1, "balanced: \(context)")
                    XCTAssertLessThanOrEqual(counts.max()!, maxSlice, "within maxSliceCount \(maxSlice): \(context)")
                }
            }
        }
    }

    /// The key property: the sequence of global batches depends only on (seed, epoch), never on the number of ranks.
    /// Each rank builds its own schedule (as separate processes do); concatenating the samples every rank computes,
    /// in rank order, gives the same index sequence for every world size.
    func testGlobalBatchSequenceIsIndependentOfRankCount() {
        let samples = 4000, batchSize = 256, seed: UInt64 = 9
        for epoch in [0, 1, 5] {
            var sequences: [Int: [[Int32]]] = [:]
            for size in 1...8 {
                let ranks = (0..<size).map { _ in BatchSchedule(sampleCount: samples, globalBatchSize: batchSize, seed: seed) }
                let orders = ranks.map { $0.order(epoch: epoch) }
                sequences[size] = (0..<ranks[0].stepsPerEpoch).map { step in
                    (0..<size).flatMap { rank -> [Int32] in
                        let slice = BatchSchedule.slice(of: ranks[rank].globalBatch(step: step), rank: rank, size: size)
                        // A slice outside the epoch is a failure to report, not an out-of-bounds trap that ends the run.
                        guard slice.clamped(to: orders[rank].indices) == slice else {
                            XCTFail("rank \(rank) of \(size), step \(step): slice \(slice) outside the epoch")
                            return []
                        }
                        return Array(orders[rank][slice])
                    }
                }
            }
            for size in 2...8 {
                XCTAssertEqual(sequences[size], sequences[1], "epoch \(epoch): \(size) ranks see other global batches than 1")
            }
            XCTAssertEqual(sequences[1]?.flatMap { $0 }.sorted(), Array(0..<Int32(samples)), "every sample once per epoch")
        }
    }

    func testMaxSliceCount() {
        XCTAssertEqual(BatchSchedule.maxSliceCount(globalBatchSize: 256, size: 1), 256)
        XCTAssertEqual(BatchSchedule.maxSliceCount(globalBatchSize: 256, size: 3), 86)
        XCTAssertEqual(BatchSchedule.maxSliceCount(globalBatchSize: 256, size: 8), 32)
        XCTAssertEqual(BatchSchedule.maxSliceCount(globalBatchSize: 3, size: 8), 1)
    }
}
