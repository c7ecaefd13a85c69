import AEDistCore
import Foundation

/// A range the values must lie in after scaling, and what asks for it (binary cross-entropy: targets in [0, 1]).
public struct ValueRequirement: Sendable {
    public let range: ClosedRange<Float>
    /// "--loss bce needs targets in [0, 1]"
    public let reason: String
    /// What the user can change: "rescale with --scale or use --loss mse"
    public let remedy: String

    public init(range: ClosedRange<Float>, reason: String, remedy: String) {
        self.range = range
        self.reason = reason
        self.remedy = remedy
    }
}

/// Rows of an HDF5 dataset (N × D or N × H × W × C, any numeric type) as float32 samples of D values, scaled.
/// Small sets are read once into memory; larger ones are read batch by batch, each rank reading only its own rows.
public final class SampleSet {
    /// "file.h5:/train/x", or with a row range when part of a dataset is used.
    public let name: String
    public let rowCount: Int
    /// Values per sample (the product of every dimension after the first).
    public let rowWidth: Int
    public let sampleShape: [Int]
    public let scale: Float
    public let isCached: Bool

    private let dataset: HDF5Dataset
    private let firstRow: Int
    private let cache: FlatBuffer?
    /// Channels-first images (N×C×H×W) are turned channels-last as they are read; one scratch row per reading
    /// thread (the prefetcher gathers, the trainer reads validation rows).
    private let channelsFirst: Bool
    /// Streaming a contiguous float32 dataset: its rows straight from the file (see DirectRead).
    private let directRead: DirectRead?
    /// Whether `announceRead` does anything: rows read straight from the file (not in memory, not through libhdf5).
    public var canAnnounceReads: Bool { directRead != nil }

    /// Asks the kernel to start reading a row that will be gathered soon (for rows read straight from the file).
    public func announceRead(row: Int) {
        directRead?.announce(byteOffset: (firstRow + row) * rowWidth * MemoryLayout<Float>.size, count: rowWidth * MemoryLayout<Float>.size)
    }

    /// Whether gathering rows calls no libhdf5 function (in memory, or read straight from the file).
    public var gathersWithoutLibrary: Bool { cache != nil || directRead != nil }
    private let gatherScratch: FlatBuffer
    private let readScratch: FlatBuffer
    /// Checked when the rows are loaded (in memory) or read (streamed).
    private let requirement: ValueRequirement?

    public static let cacheLimitBytes = 2 << 30

    /// - Parameters:
    ///   - rows: the part of the dataset to use (nil: all of it).
    ///   - scale: multiplier from the command line; nil means the dataset's `scale` attribute, else 1/255 for
    ///     uint8 data, else 1.
    public init(file: HDF5File, datasetPath: String, rows: Range<Int>? = nil, scale explicitScale: Double?,
                cache policy: DataConfig.CachePolicy, channelsFirst: Bool = false, requiring requirement: ValueRequirement? = nil) throws {
        let dataset = try file.root.dataset(datasetPath)
        let location = "\(file.path):\(datasetPath)"
        guard dataset.elementKind.isNumeric else {
            throw HDF5Error("\(location) holds \(dataset.elementKind) values; aedist needs numbers (float or integer)")
        }
        guard dataset.shape.count >= 2 else {
            throw HDF5Error("\(location) has shape \(Self.describe(dataset.shape)); expected samples × features (N×D or N×H×W×C)")
        }
        // Declared sizes come from the file: check them before multiplying or allocating anything.
        try dataset.requirePlausibleSize(bytesPerValue: 1, compression: 1024)
        let range = rows ?? 0..<dataset.shape[0]
        guard !range.isEmpty else { throw HDF5Error("\(location) is empty (shape \(Self.describe(dataset.shape)))") }
        self.dataset = dataset
        firstRow = range.lowerBound
        rowCount = range.count
        let stored = Array(dataset.shape.dropFirst())
        if channelsFirst {
            guard stored.count == 3 else {
                throw HDF5Error("\(location) has shape \(Self.describe(dataset.shape)); channels-first data must be N×C×H×W")
            }
            sampleShape = [stored[1], stored[2], stored[0]]
        } else {
            sampleShape = stored
        }
        self.channelsFirst = channelsFirst
        self.requirement = requirement
        rowWidth = sampleShape.reduce(1, *)
        gatherScratch = FlatBuffer(count: channelsFirst ? rowWidth : 1)
        readScratch = FlatBuffer(count: channelsFirst ? rowWidth : 1)
        name = rows == nil ? location : "\(location)[\(range.lowerBound)..<\(range.upperBound)]"

        if let explicitScale {
            scale = Float(explicitScale)
        } else if dataset.hasAttribute("scale") {
            let attribute = try dataset.numberAttribute("scale")
            guard attribute.isFinite, attribute > 0 else { throw HDF5Error("\(location): its 'scale' attribute is \(attribute); it must be positive") }
            scale = Float(attribute)
        } else if dataset.elementKind == .integer(bits: 8, signed: false) {
            scale = 1 / 255
        } else {
            scale = 1
        }

        let bytes = rowCount * rowWidth * MemoryLayout<Float>.size
        isCached = policy == .always || (policy == .auto && bytes <= Self.cacheLimitBytes)
        if isCached {
            let cache = FlatBuffer(count: rowCount * rowWidth)
            try dataset.readRows(range, into: cache.pointer)
            if channelsFirst { Self.toChannelsLast(cache.pointer, rows: rowCount, shape: sampleShape, scratch: FlatBuffer(count: rowWidth)) }
            try Self.scaleAndCheck(cache.pointer, count: cache.count, scale: scale, rowWidth: rowWidth,
                                   firstRow: firstRow, location: location, requirement: requirement, wholeSet: true)
            self.cache = cache
            directRead = nil
        } else {
            cache = nil
            let datasetBytes = dataset.shape.reduce(1, *) * MemoryLayout<Float>.size
            directRead = try dataset.rawFloatOffset.map { try DirectRead(path: file.path, offset: $0, byteCount: datasetBytes) }
        }
    }

    /// C×H×W rows → H×W×C rows, in place through a scratch row.
    private func toChannelsLast(_ rows: UnsafeMutablePointer<Float>, rows count: Int, scratch: FlatBuffer) {
        guard channelsFirst else { return }
        Self.toChannelsLast(rows, rows: count, shape: sampleShape, scratch: scratch)
    }

    private static func toChannelsLast(_ rows: UnsafeMutablePointer<Float>, rows count: Int, shape: [Int], scratch: FlatBuffer) {
        let (height, width, channels) = (shape[0], shape[1], shape[2])
        let rowWidth = height * width * channels
        for row in 0..<count {
            let values = rows + row * rowWidth
            scratch.pointer.update(from: values, count: rowWidth)
            for c in 0..<channels {
                for y in 0..<height {
                    for x in 0..<width { values[(y * width + x) * channels + c] = scratch.pointer[(c * height + y) * width + x] }
                }
            }
        }
    }

    static func describe(_ shape: [Int]) -> String { shape.isEmpty ? "scalar" : shape.map(String.init).joined(separator: "×") }

    /// Scales the values in place and checks them: finite, and inside the requirement's range. A whole set loaded
    /// at once is described by its observed range; streamed rows by the first row at fault.
    private static func scaleAndCheck(_ values: UnsafeMutablePointer<Float>, count: Int, scale: Float, rowWidth: Int,
                                      firstRow: Int, location: String, rowNumbers: UnsafeBufferPointer<Int32>? = nil,
                                      requirement: ValueRequirement?, wholeSet: Bool = false) throws {
        // One branch-free comparison per value, so the loop runs as vector code: NaN fails every comparison, and
        // the bounds are the requirement's or else the largest finite floats, which infinities exceed. Which of
        // the two went wrong is worked out only on failure.
        let low = requirement?.range.lowerBound ?? -.greatestFiniteMagnitude
        let high = requirement?.range.upperBound ?? .greatestFiniteMagnitude
        var bad: UInt32 = 0
        for i in 0..<count {
            let v = values[i] * scale
            values[i] = v
            bad |= v >= low && v <= high ? 0 : 1
        }
        guard bad != 0 else { return }
        func place(_ index: Int) -> String {
            let localRow = index / rowWidth
            return "row \(firstRow + (rowNumbers.map { Int($0[localRow]) } ?? localRow)) holds \(values[index]) at feature \(index % rowWidth)"
        }
        if let index = (0..<count).first(where: { !values[$0].isFinite }) {
            let value = values[index]
            let row = place(index).replacingOccurrences(of: " holds \(value) ", with: " holds \(value.isNaN ? "NaN" : "an infinite value") ")
            throw HDF5Error("\(location): \(row); clean the data first")
        }
        guard let requirement else { return }
        let lowest = (0..<count).reduce(Float.infinity) { min($0, values[$1]) }
        let highest = (0..<count).reduce(-Float.infinity) { max($0, values[$1]) }
        let bounds = "[\(requirement.range.lowerBound), \(requirement.range.upperBound)]"
        if wholeSet {
            throw HDF5Error("\(location) holds values from \(lowest) to \(highest)\(scale == 1 ? "" : " (after scaling by \(scale))"), outside \(bounds): \(requirement.reason); \(requirement.remedy)")
        }
        let index = (0..<count).first { !requirement.range.contains(values[$0]) }!
        throw HDF5Error("\(location): \(place(index)), outside \(bounds): \(requirement.reason); \(requirement.remedy)")
    }

    /// The rows at `rows` (ascending positions within this set), in that order, into `destination`.
    public func gather(rows: UnsafeBufferPointer<Int32>, into destination: UnsafeMutablePointer<Float>) throws {
        if let cache {
            for (slot, row) in rows.enumerated() {
                (destination + slot * rowWidth).update(from: cache.pointer + Int(row) * rowWidth, count: rowWidth)
            }
            return
        }
        if let directRead {
            directRead.read(rows: rows, firstRow: firstRow, rowBytes: rowWidth * MemoryLayout<Float>.size, into: destination)
        } else if firstRow == 0 {
            try dataset.readRows(sorted: rows, into: destination)
        } else {
            let shifted = rows.map { $0 + Int32(firstRow) }
            try shifted.withUnsafeBufferPointer { try dataset.readRows(sorted: $0, into: destination) }
        }
        toChannelsLast(destination, rows: rows.count, scratch: gatherScratch)
        try Self.scaleAndCheck(destination, count: rows.count * rowWidth, scale: scale, rowWidth: rowWidth,
                               firstRow: firstRow, location: name, rowNumbers: rows, requirement: requirement)
    }

    /// Consecutive rows `range` of this set into `destination`.
    public func read(_ range: Range<Int>, into destination: UnsafeMutablePointer<Float>) throws {
        if let cache {
            destination.update(from: cache.pointer + range.lowerBound * rowWidth, count: range.count * rowWidth)
            return
        }
        try dataset.readRows((range.lowerBound + firstRow)..<(range.upperBound + firstRow), into: destination)
        toChannelsLast(destination, rows: range.count, scratch: readScratch)
        try Self.scaleAndCheck(destination, count: range.count * rowWidth, scale: scale, rowWidth: rowWidth,
                               firstRow: firstRow + range.lowerBound, location: name, requirement: requirement)
    }
}

/// Reads of a contiguous, unfiltered float32 dataset at the file offset libhdf5 reports (the same bytes HDF5's own
/// contiguous reads fetch), through a read-only memory map of the file: a batch of scattered rows is a memcpy per
/// run of consecutive rows, with no system call, no global library lock (a thread-safe libhdf5 serializes every
/// call) and no hyperslab bookkeeping. The mapped pages are the kernel's page cache, shared and reclaimable, so a
/// file larger than memory streams: pages not touched recently are dropped and read again when needed.
final class DirectRead {
    let path: String
    private let mapping: UnsafeMutableRawPointer
    private let mappedBytes: Int
    /// Where the dataset's first value sits in the mapping.
    private let values: UnsafeRawPointer

    init(path: String, offset: Int, byteCount: Int) throws {
        self.path = path
        let descriptor = open(path, O_RDONLY | O_CLOEXEC)
        guard descriptor >= 0 else { throw HDF5Error("\(path): cannot open for reading (\(String(cString: strerror(errno))))") }
        defer { close(descriptor) }
        var status = stat()
        guard fstat(descriptor, &status) == 0, Int(status.st_size) >= offset + byteCount else {
            throw HDF5Error("\(path): the file is shorter than its dataset (truncated?)")
        }
        let page = DirectRead.pageSize
        let start = offset / page * page
        mappedBytes = offset + byteCount - start
        guard let mapping = mmap(nil, mappedBytes, PROT_READ, MAP_SHARED, descriptor, off_t(start)), mapping != MAP_FAILED else {
            throw HDF5Error("\(path): cannot map the file for reading (\(String(cString: strerror(errno))))")
        }
        // Batches visit rows in random order: read only the pages asked for, not the ones after them.
        madvise(mapping, mappedBytes, MADV_RANDOM)
        self.mapping = mapping
        values = UnsafeRawPointer(mapping) + (offset - start)
    }

    deinit { munmap(mapping, mappedBytes) }

    /// Starts the reads of `count` bytes at `byteOffset` into the dataset without waiting for them.
    func announce(byteOffset: Int, count: Int) {
        let start = UnsafeRawPointer(values) + byteOffset
        let pageStart = UInt(bitPattern: start) & ~UInt(DirectRead.pageSize - 1)
        let length = Int(UInt(bitPattern: start) - pageStart) + count
        madvise(UnsafeMutableRawPointer(bitPattern: pageStart), length, MADV_WILLNEED)
    }

    static let pageSize = Int(sysconf(Int32(_SC_PAGESIZE)))

    /// Rows `rows` (ascending positions after `firstRow`), in that order, into `destination`.
    func read(rows: UnsafeBufferPointer<Int32>, firstRow: Int, rowBytes: Int, into destination: UnsafeMutablePointer<Float>) {
        var index = 0
        while index < rows.count {
            var end = index + 1
            while end < rows.count && rows[end] == rows[end - 1] + 1 { end += 1 }
            (UnsafeMutableRawPointer(destination) + index * rowBytes)
                .copyMemory(from: values + (firstRow + Int(rows[index])) * rowBytes, byteCount: (end - index) * rowBytes)
            index = end
        }
    }
}
