import AEDistCore
import AEDistIO
import Foundation
import XCTest

func temporaryFolder() -> String {
    let path = NSTemporaryDirectory() + "aedist-io-" + UUID().uuidString.prefix(8)
    try! FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    return path
}

final class HDF5RoundTripTests: XCTestCase {
    func testTensorsAttributesAndRowReadsRoundTrip() throws {
        let path = temporaryFolder() + "/round.h5"
        let values = (0..<24).map { Float($0) * 0.5 - 3 }
        let file = try HDF5File.create(path)
        let group = try file.root.createGroup("g")
        try values.withUnsafeBufferPointer { _ = try group.write("x", shape: [6, 2, 2], floats: $0) }
        try group.write("d", doubles: [1.5, .nan, -2])
        try group.write("i", integers: [7, -8, 1 << 40])
        try group.setAttribute("name", "héllo")
        try group.setAttribute("pi", 3.25)
        try group.setAttribute("count", Int64(42))
        try file.close()

        let reopened = try HDF5File.open(path)
        let x = try reopened.root.dataset("/g/x")
        XCTAssertEqual(x.shape, [6, 2, 2])
        XCTAssertEqual(x.elementKind, .float(bits: 32))
        XCTAssertTrue(x.hasChecksum)
        XCTAssertEqual(try x.readFloats(), values)
        let g = try reopened.root.group("g")
        XCTAssertEqual(try g.dataset("i").readIntegers(), [7, -8, 1 << 40])
        let d = try g.dataset("d").readDoubles()
        XCTAssertEqual(d[0], 1.5)
        XCTAssertTrue(d[1].isNaN)
        XCTAssertEqual(try g.stringAttribute("name"), "héllo")
        XCTAssertEqual(try g.numberAttribute("pi"), 3.25)
        XCTAssertEqual(try g.integerAttribute("count"), 42)
        XCTAssertEqual(Set(g.attributeNames), ["name", "pi", "count"])
        XCTAssertEqual(g.memberNames, ["d", "i", "x"])

        // Scattered rows in one read: rows 1, 2 and 5 (two hyperslab runs).
        var rows = [Float](repeating: 0, count: 12)
        try [Int32(1), 2, 5].withUnsafeBufferPointer { indices in
            try rows.withUnsafeMutableBufferPointer { try x.readRows(sorted: indices, into: $0.baseAddress!) }
        }
        XCTAssertEqual(rows, Array(values[4..<12]) + Array(values[20..<24]))
    }

    func testMissingThingsAreNamed() throws {
        let path = temporaryFolder() + "/small.h5"
        let file = try HDF5File.create(path)
        try [Float(1)].withUnsafeBufferPointer { _ = try file.root.write("only", shape: [1, 1], floats: $0) }
        try file.close()
        let reopened = try HDF5File.open(path)
        XCTAssertThrowsError(try reopened.root.dataset("/a/b")) { error in
            XCTAssertTrue("\(error)".contains("no dataset '/a/b'"), "\(error)")
            XCTAssertTrue("\(error)".contains("it has: /only"), "\(error)")
        }
        XCTAssertThrowsError(try reopened.root.stringAttribute("nope")) { XCTAssertTrue("\($0)".contains("no attribute 'nope'")) }
        XCTAssertThrowsError(try HDF5File.create(path)) { XCTAssertTrue("\($0)".contains(path)) }
    }
}

final class SampleSetTests: XCTestCase {
    func makeFile(values: [Float], shape: [Int], scale: Double? = nil) throws -> HDF5File {
        let path = temporaryFolder() + "/samples.h5"
        let file = try HDF5File.create(path)
        let dataset = try values.withUnsafeBufferPointer { try file.root.write("x", shape: shape, floats: $0) }
        if let scale { try dataset.setAttribute("scale", scale) }
        try file.close()
        return try HDF5File.open(path)
    }

    func testCachedAndStreamedReadsAgreeAndApplyTheScale() throws {
        let values = (0..<60).map { Float($0) }
        let file = try makeFile(values: values, shape: [10, 3, 2], scale: 0.5)
        let cached = try SampleSet(file: file, datasetPath: "/x", scale: nil, cache: .always)
        let streamed = try SampleSet(file: file, datasetPath: "/x", scale: nil, cache: .never)
        XCTAssertTrue(cached.isCached)
        XCTAssertFalse(streamed.isCached)
        XCTAssertEqual(cached.rowWidth, 6)
        XCTAssertEqual(cached.scale, 0.5)
        let rows: [Int32] = [0, 3, 4, 9]
        var a = [Float](repeating: 0, count: 24), b = a
        try rows.withUnsafeBufferPointer { indices in
            try a.withUnsafeMutableBufferPointer { try cached.gather(rows: indices, into: $0.baseAddress!) }
            try b.withUnsafeMutableBufferPointer { try streamed.gather(rows: indices, into: $0.baseAddress!) }
        }
        XCTAssertEqual(a, b)
        XCTAssertEqual(Array(a[6..<12]), (18..<24).map { Float($0) * 0.5 })
        // An explicit --scale beats the attribute.
        XCTAssertEqual(try SampleSet(file: file, datasetPath: "/x", scale: 2, cache: .auto).scale, 2)
        // A row range (as --val-fraction uses) reads the right rows either way.
        let tail = try SampleSet(file: file, datasetPath: "/x", rows: 8..<10, scale: 1, cache: .never)
        var last = [Float](repeating: 0, count: 6)
        try last.withUnsafeMutableBufferPointer { try tail.read(1..<2, into: $0.baseAddress!) }
        XCTAssertEqual(last, (54..<60).map { Float($0) })
    }

    func testNonFiniteValuesAreReportedWithTheirRow() throws {
        var values = [Float](repeating: 0.25, count: 20)
        values[13] = .infinity
        let file = try makeFile(values: values, shape: [5, 4])
        XCTAssertThrowsError(try SampleSet(file: file, datasetPath: "/x", scale: nil, cache: .always)) {
            XCTAssertTrue("\($0)".contains("row 3 holds an infinite value at feature 1"), "\($0)")
        }
        let streamed = try SampleSet(file: file, datasetPath: "/x", scale: nil, cache: .never)
        var out = [Float](repeating: 0, count: 8)
        XCTAssertThrowsError(try [Int32(2), 3].withUnsafeBufferPointer { rows in
            try out.withUnsafeMutableBufferPointer { try streamed.gather(rows: rows, into: $0.baseAddress!) }
        }) { XCTAssertTrue("\($0)".contains("row 3"), "\($0)") }
    }

    func testShapeProblemsAreNamed() throws {
        let file = try makeFile(values: [1, 2, 3], shape: [3])
        XCTAssertThrowsError(try SampleSet(file: file, datasetPath: "/x", scale: nil, cache: .auto)) {
            XCTAssertTrue("\($0)".contains("has shape 3; expected samples × features"), "\($0)")
        }
    }
}

/// A small checkpoint whose contents are known, for round trips.
func sampleCheckpoint(step: Int, spec: String = "dense:6-4-2") throws -> Checkpoint {
    var config = TrainingConfig()
    config.model.spec = spec
    let architecture = try ModelArchitecture(config.model)
    let model = Autoencoder(architecture: architecture, maxBatch: 2)
    model.initializeParameters(seed: UInt64(step))
    let optimizer = Optimizer(config: config.optimizer, parameterCount: model.layout.totalCount)
    for (index, state) in optimizer.state.enumerated() { state.buffer.fill(Float(index + 1) / 8) }
    var progress = TrainingProgress()
    progress.epochsCompleted = step / 10
    progress.stepInEpoch = step % 10
    progress.globalStep = step
    progress.samplesSeen = step * 32
    let metrics = (0..<progress.epochsCompleted).map {
        EpochMetrics(epoch: $0 + 1, globalStep: ($0 + 1) * 10, samplesSeen: ($0 + 1) * 320, trainLoss: 0.5, valLoss: .nan,
                     valMSE: .nan, samplesPerSecond: 1000, wallTime: Double($0), learningRate: 1e-3)
    }
    return Checkpoint(config: config, layout: model.layout, parameters: model.parameters, optimizerName: "adam",
                      optimizerStep: step, optimizerState: optimizer.state, progress: progress, metrics: metrics,
                      worldSize: 4, aedistVersion: "test")
}

final class CheckpointTests: XCTestCase {

    func testCheckpointRoundTripsEveryPiece() throws {
        let original = try sampleCheckpoint(step: 23)
        let path = temporaryFolder() + "/c.h5"
        try original.write(to: path)
        let read = try Checkpoint.read(from: path, expectedLayout: original.layout)
        XCTAssertEqual(read.config, original.config)
        XCTAssertEqual(read.parameters.array, original.parameters.array)
        XCTAssertEqual(read.optimizerState.map(\.name), ["exp_avg", "exp_avg_sq"])
        XCTAssertEqual(read.optimizerState.map { $0.buffer.array }, original.optimizerState.map { $0.buffer.array })
        XCTAssertEqual(read.optimizerStep, 23)
        XCTAssertEqual(read.progress, original.progress)
        XCTAssertEqual(read.metrics.count, 2)
        XCTAssertEqual(read.metrics[1].samplesSeen, 640)
        XCTAssertTrue(read.metrics[1].valLoss.isNaN)
        XCTAssertEqual(read.worldSize, 4)
    }

    func testAnotherModelsCheckpointIsRefusedByName() throws {
        let path = temporaryFolder() + "/c.h5"
        try sampleCheckpoint(step: 5).write(to: path)
        let other = try ModelArchitecture({ var m = ModelConfig(); m.spec = "dense:6-3"; return m }()).parameterLayout
        XCTAssertThrowsError(try Checkpoint.read(from: path, expectedLayout: other)) {
            XCTAssertTrue("\($0)".contains("written for model 'dense:6-4-2'"), "\($0)")
        }
    }

    func testADataFileIsNotACheckpoint() throws {
        let path = temporaryFolder() + "/data.h5"
        let file = try HDF5File.create(path)
        _ = try file.root.createGroup("train")
        try file.close()
        XCTAssertThrowsError(try Checkpoint.read(from: path)) {
            XCTAssertTrue("\($0)".contains("is not an aedist checkpoint"), "\($0)")
            XCTAssertTrue("\($0)".contains("groups train"), "\($0)")
        }
    }

    func testDirectoryKeepsNewestAndBestAndLinksAtomically() throws {
        let directory = CheckpointDirectory(path: temporaryFolder() + "/ckpts")
        try directory.prepare()
        var saved: [String] = []
        for step in [10, 20, 30, 40, 50] {
            saved.append(try directory.save(try sampleCheckpoint(step: step), isBest: step == 20, keep: 2))
        }
        XCTAssertEqual(directory.checkpointFiles.map { ($0 as NSString).lastPathComponent },
                       ["ckpt-e0002-s0000020.h5", "ckpt-e0004-s0000040.h5", "ckpt-e0005-s0000050.h5"])
        XCTAssertEqual(directory.latest, saved[4])
        XCTAssertEqual(directory.best, saved[1])
        let hidden = try FileManager.default.contentsOfDirectory(atPath: directory.path).filter { $0.hasPrefix(".") }
        XCTAssertEqual(hidden, [], "temporary files left behind")
    }

    func testFailedSaveLeavesThePreviousCheckpointAndLinkIntact() throws {
        let directory = CheckpointDirectory(path: temporaryFolder() + "/ckpts")
        try directory.prepare()
        let first = try directory.save(try sampleCheckpoint(step: 10), isBest: true, keep: 3)
        let before = try Data(contentsOf: URL(fileURLWithPath: first))
        // A folder squatting on the next checkpoint's name makes the final rename fail.
        try FileManager.default.createDirectory(atPath: directory.path + "/ckpt-e0002-s0000020.h5/x", withIntermediateDirectories: true)
        XCTAssertThrowsError(try directory.save(try sampleCheckpoint(step: 20), isBest: true, keep: 3)) {
            XCTAssertTrue("\($0)".contains("earlier checkpoints are intact"), "\($0)")
        }
        XCTAssertEqual(directory.latest, first)
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: first)), before)
        XCTAssertNoThrow(try Checkpoint.read(from: first))
    }

    func testUnwritableFolderIsReportedBeforeTraining() throws {
        let blocker = temporaryFolder() + "/file"
        FileManager.default.createFile(atPath: blocker, contents: Data())
        XCTAssertThrowsError(try CheckpointDirectory(path: blocker + "/sub").prepare()) {
            XCTAssertTrue("\($0)".contains("cannot create checkpoint folder \(blocker)/sub"), "\($0)")
        }
    }
}

final class EarlierRunTests: XCTestCase {
    func testAFreshRunMovesAnEarlierRunAsideInsteadOfOverwritingIt() throws {
        let directory = CheckpointDirectory(path: temporaryFolder() + "/ckpts")
        try directory.prepare()
        XCTAssertNil(try directory.archiveEarlierRun(), "an empty folder has nothing to move")
        let saved = try directory.save(try sampleCheckpoint(step: 10), isBest: true, keep: 3)
        try directory.writeMetrics([])
        let bytes = try Data(contentsOf: URL(fileURLWithPath: saved))
        let archive = try XCTUnwrap(try directory.archiveEarlierRun())
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: directory.path), [(archive as NSString).lastPathComponent])
        XCTAssertEqual(Set(try FileManager.default.contentsOfDirectory(atPath: archive)),
                       ["ckpt-e0001-s0000010.h5", "latest.h5", "best.h5", "metrics.csv"])
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: archive + "/latest.h5")), bytes)
    }
}

final class ChannelsFirstTests: XCTestCase {
    /// N×C×H×W data read channels-first gives exactly the N×H×W×C rows, cached or streamed.
    func testChannelsFirstRowsComeOutChannelsLast() throws {
        let (n, h, w, c) = (5, 3, 4, 2)
        var lastOrder = [Float](repeating: 0, count: n * h * w * c), firstOrder = lastOrder
        for s in 0..<n { for y in 0..<h { for x in 0..<w { for k in 0..<c {
            let value = Float(s * 1000 + y * 100 + x * 10 + k)
            lastOrder[((s * h + y) * w + x) * c + k] = value
            firstOrder[((s * c + k) * h + y) * w + x] = value
        } } } }
        let path = temporaryFolder() + "/layouts.h5"
        let file = try HDF5File.create(path)
        try lastOrder.withUnsafeBufferPointer { _ = try file.root.write("nhwc", shape: [n, h, w, c], floats: $0) }
        try firstOrder.withUnsafeBufferPointer { _ = try file.root.write("nchw", shape: [n, c, h, w], floats: $0) }
        try file.close()
        let reopened = try HDF5File.open(path)
        let reference = try SampleSet(file: reopened, datasetPath: "/nhwc", scale: 1, cache: .always)
        for policy in [DataConfig.CachePolicy.always, .never] {
            let converted = try SampleSet(file: reopened, datasetPath: "/nchw", scale: 1, cache: policy, channelsFirst: true)
            XCTAssertEqual(converted.sampleShape, [h, w, c])
            var a = [Float](repeating: 0, count: 2 * h * w * c), b = a
            try [Int32(1), 3].withUnsafeBufferPointer { rows in
                try a.withUnsafeMutableBufferPointer { try reference.gather(rows: rows, into: $0.baseAddress!) }
                try b.withUnsafeMutableBufferPointer { try converted.gather(rows: rows, into: $0.baseAddress!) }
            }
            XCTAssertEqual(a, b, "gather, cache \(policy)")
            try a.withUnsafeMutableBufferPointer { try reference.read(2..<4, into: $0.baseAddress!) }
            try b.withUnsafeMutableBufferPointer { try converted.read(2..<4, into: $0.baseAddress!) }
            XCTAssertEqual(a, b, "read, cache \(policy)")
        }
    }

    func testChannelsFirstNeedsImages() throws {
        let path = temporaryFolder() + "/flat.h5"
        let file = try HDF5File.create(path)
        try [Float](repeating: 0, count: 12).withUnsafeBufferPointer { _ = try file.root.write("x", shape: [3, 4], floats: $0) }
        try file.close()
        XCTAssertThrowsError(try SampleSet(file: try HDF5File.open(path), datasetPath: "/x", scale: 1, cache: .never, channelsFirst: true)) {
            XCTAssertTrue("\($0)".contains("channels-first data must be N×C×H×W"), "\($0)")
        }
    }
}
