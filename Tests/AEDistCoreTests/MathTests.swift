import AEDistCore
import XCTest

final class RandomStreamTests: XCTestCase {
    private func draws(_ stream: RandomStream, _ count: Int = 8) -> [UInt64] {
        var stream = stream
        return (0..<count).map { _ in stream.next() }
    }

    /// Streams are pure functions of (seed, path): no state to save, same on every rank and after a resume.
    func testStreamsAreDeterministic() {
        XCTAssertEqual(draws(RandomStream(seed: 7, 1, 2)), draws(RandomStream(seed: 7, 1, 2)))
        XCTAssertEqual(draws(RandomStream(seed: 7)), draws(RandomStream(seed: 7)))
    }

    func testDifferentSeedsAndPathsGiveDifferentStreams() {
        let streams: [(String, RandomStream)] = [
            ("seed 7", RandomStream(seed: 7)),
            ("seed 8", RandomStream(seed: 8)),
            ("seed 7 / 1", RandomStream(seed: 7, 1)),
            ("seed 7 / 2", RandomStream(seed: 7, 2)),
            ("seed 7 / 1 / 2", RandomStream(seed: 7, 1, 2)),
            ("seed 7 / 2 / 1", RandomStream(seed: 7, 2, 1)),
            ("seed 7 / 1 / 0", RandomStream(seed: 7, 1, 0)),
            ("seed 0 / 0", RandomStream(seed: 0, 0)),
            ("seed 0", RandomStream(seed: 0)),
        ]
        for i in streams.indices {
            for j in streams.indices where j > i {
                XCTAssertNotEqual(draws(streams[i].1), draws(streams[j].1), "\(streams[i].0) vs \(streams[j].0)")
            }
        }
    }

    /// Streams for different jobs never coincide: with the same seed and indices, every purpose draws other numbers
    /// (a shuffle that repeated the noise, say, would correlate them).
    func testStreamsOfDifferentPurposesDiffer() {
        for seed: UInt64 in [0, 1, 12345] {
            for index: UInt64 in [0, 7] {
                let firstDraws = RandomStream.Purpose.allCases.map { purpose -> [UInt64] in
                    var stream = RandomStream(seed: seed, purpose.rawValue, index)
                    return (0..<4).map { _ in stream.next() }
                }
                XCTAssertEqual(Set(firstDraws).count, RandomStream.Purpose.allCases.count, "seed \(seed), index \(index): \(firstDraws)")
            }
        }
    }

    func testUnitFloatsAreInTheHalfOpenUnitInterval() {
        var stream = RandomStream(seed: 1, 2)
        let values = (0..<100_000).map { _ in stream.nextUnitFloat() }
        XCTAssertTrue(values.allSatisfy { $0 >= 0 && $0 < 1 }, "outside [0, 1): \(values.filter { !($0 >= 0 && $0 < 1) }.prefix(3))")
        let mean = values.reduce(0.0) { $0 + Double($1) } / Double(values.count)
        // Standard error of the mean is √(1/12/n) ≈ 0.0009.
        XCTAssertEqual(mean, 0.5, accuracy: 0.005)
    }

    func testGaussianHasZeroMeanAndUnitVariance() {
        var stream = RandomStream(seed: 3, RandomStream.Purpose.noise.rawValue)
        let n = 100_000
        let values = (0..<n).map { _ in stream.nextGaussian() }
        XCTAssertTrue(values.allSatisfy(\.isFinite))
        let mean = values.reduce(0, +) / Double(n)
        let variance = values.reduce(0) { $0 + ($1 - mean) * ($1 - mean) } / Double(n - 1)
        print("gaussian over \(n) draws: mean \(mean), variance \(variance)")
        // Standard errors: 0.0032 for the mean, √(2/n) ≈ 0.0045 for the variance; these bounds are ~5σ.
        XCTAssertEqual(mean, 0, accuracy: 0.015)
        XCTAssertEqual(variance, 1, accuracy: 0.025)
    }
}

final class FlatBufferTests: XCTestCase {
    /// The checksum is how ranks and checkpoints prove bit-identical parameters: a one-ulp change anywhere must show.
    func testBitChecksumSeesAOneUlpChange() {
        let values: [Float] = [0.1, -2.5, 3e-8, 1000, 0.75]
        let original = FlatBuffer(values).bitChecksum
        for i in values.indices {
            for changed in [values[i].nextUp, values[i].nextDown] {
                let buffer = FlatBuffer(values)
                buffer[i] = changed
                XCTAssertNotEqual(buffer.bitChecksum, original, "one ulp at index \(i) (\(values[i]) → \(changed))")
            }
        }
    }

    func testBitChecksumIsOfBitsAndOrder() {
        XCTAssertEqual(FlatBuffer([1, 2, 3]).bitChecksum, FlatBuffer([1, 2, 3]).bitChecksum)
        XCTAssertNotEqual(FlatBuffer([1, 2, 3]).bitChecksum, FlatBuffer([2, 1, 3]).bitChecksum, "order matters")
        XCTAssertNotEqual(FlatBuffer([0]).bitChecksum, FlatBuffer([-0.0]).bitChecksum, "+0 and −0 differ in bits")
        XCTAssertNotEqual(FlatBuffer([1, 0]).bitChecksum, FlatBuffer([1]).bitChecksum, "length matters")
    }

    func testBasicOperations() {
        let buffer = FlatBuffer([1, -2, 3])
        XCTAssertEqual(buffer.count, 3)
        XCTAssertEqual(buffer.array, [1, -2, 3])
        buffer.scale(by: 0.5)
        XCTAssertEqual(buffer.array, [0.5, -1, 1.5])
        let copy = FlatBuffer(count: 3)
        XCTAssertEqual(copy.array, [0, 0, 0], "new buffers start at zero")
        copy.copy(from: buffer)
        XCTAssertEqual(copy.bitChecksum, buffer.bitChecksum)
        copy.fill(7)
        XCTAssertEqual(copy.array, [7, 7, 7])
        XCTAssertEqual(buffer.array, [0.5, -1, 1.5], "copies do not share storage")
        XCTAssertEqual(FlatBuffer([]).count, 0)
        XCTAssertEqual(FlatBuffer(count: 0).array, [])
    }
}
