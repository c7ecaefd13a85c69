import AEDistCore
import CHDF5
import Foundation

/// A failure reading or writing HDF5, with the file and object it concerns.
public struct HDF5Error: UserFacingError {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// Swift face of libhdf5: files, groups, datasets and attributes as values that close themselves. Reads convert to
/// the requested native type (HDF5 converts uint8, int and float64 data on the fly).
enum HDF5Library {
    static let ready: Void = {
        // HDF5's exit-time cleanup retries closing files whose close already failed (a full disk) and crashes in
        // 1.10; aedist closes what it opens, so it turns that cleanup off.
        H5dont_atexit()
        H5open()
        aedh5_silence_errors()
    }()

    /// HDF5's innermost message for the failure that just happened, as "(reason)" or "".
    static func reason() -> String {
        var buffer = [CChar](repeating: 0, count: 512)
        aedh5_last_error(&buffer, Int32(buffer.count))
        let text = String(cString: buffer)
        return text.isEmpty ? "" : " (\(text))"
    }
}

public final class HDF5File {
    public let path: String
    let id: hid_t
    private var isOpen = true

    private init(path: String, id: hid_t) {
        self.path = path
        self.id = id
    }

    /// Whether this libhdf5 may be called from two threads (Debian's is built thread-safe; some cluster builds not).
    public static var libraryIsThreadSafe: Bool {
        _ = HDF5Library.ready
        var flag: hbool_t = false
        return H5is_library_threadsafe(&flag) >= 0 && flag
    }

    /// Opens an existing file read-only.
    public static func open(_ path: String) throws -> HDF5File {
        _ = HDF5Library.ready
        guard FileManager.default.fileExists(atPath: path) else { throw HDF5Error("\(path): no such file") }
        guard H5Fis_hdf5(path) > 0 else { throw HDF5Error("\(path): not an HDF5 file") }
        let id = H5Fopen(path, aedh5_acc_rdonly(), hid_t(H5P_DEFAULT))
        guard id >= 0 else { throw HDF5Error("\(path): cannot open HDF5 file\(HDF5Library.reason())") }
        return HDF5File(path: path, id: id)
    }

    /// Creates a new file; fails if one exists (callers write to fresh temporary names).
    public static func create(_ path: String) throws -> HDF5File {
        _ = HDF5Library.ready
        let id = H5Fcreate(path, aedh5_acc_excl(), hid_t(H5P_DEFAULT), hid_t(H5P_DEFAULT))
        guard id >= 0 else { throw HDF5Error("\(path): cannot create HDF5 file\(HDF5Library.reason())") }
        return HDF5File(path: path, id: id)
    }

    /// Opens an existing file for writing (one process at a time).
    public static func openForWriting(_ path: String) throws -> HDF5File {
        _ = HDF5Library.ready
        let id = H5Fopen(path, aedh5_acc_rdwr(), hid_t(H5P_DEFAULT))
        guard id >= 0 else { throw HDF5Error("\(path): cannot open HDF5 file for writing\(HDF5Library.reason())") }
        return HDF5File(path: path, id: id)
    }

    public var root: HDF5Group { HDF5Group(file: self, id: id, path: "/", owned: false) }

    /// The file's size in bytes (through symbolic links such as latest.h5).
    public var byteSize: Int {
        var status = stat()
        return stat(path, &status) == 0 ? Int(status.st_size) : 0
    }

    /// Flushes and closes; errors here mean the data may not be on disk.
    public func close() throws {
        guard isOpen else { return }
        isOpen = false
        errno = 0
        let flushed = H5Fflush(id, H5F_SCOPE_GLOBAL)
        let systemError = errno
        let closed = H5Fclose(id)
        if flushed < 0 || closed < 0 {
            let cause = systemError != 0 ? " (\(String(cString: strerror(systemError))))" : HDF5Library.reason()
            throw HDF5Error("\(path): writing the file failed\(cause)")
        }
    }

    deinit { if isOpen { H5Fclose(id) } }
}

/// Something attributes hang on: a group or a dataset.
public class HDF5Object {
    public let file: HDF5File
    let id: hid_t
    public let path: String
    private let owned: Bool

    init(file: HDF5File, id: hid_t, path: String, owned: Bool = true) {
        self.file = file
        self.id = id
        self.path = path
        self.owned = owned
    }

    deinit { if owned { H5Oclose(id) } }

    var location: String { "\(file.path):\(path)" }

    func child(_ name: String) -> String { path == "/" ? "/\(name)" : "\(path)/\(name)" }

    // MARK: attributes

    public var attributeNames: [String] {
        var info = H5O_info_t()
        guard H5Oget_info2(id, &info, UInt32(H5O_INFO_NUM_ATTRS)) >= 0 else { return [] }
        return (0..<Int(info.num_attrs)).compactMap { index in
            let length = H5Aget_name_by_idx(id, ".", H5_INDEX_CRT_ORDER, H5_ITER_INC, hsize_t(index), nil, 0, hid_t(H5P_DEFAULT))
            let lengthByName = length >= 0 ? length :
                H5Aget_name_by_idx(id, ".", H5_INDEX_NAME, H5_ITER_INC, hsize_t(index), nil, 0, hid_t(H5P_DEFAULT))
            guard lengthByName >= 0 else { return nil }
            var buffer = [CChar](repeating: 0, count: Int(lengthByName) + 1)
            let order = length >= 0 ? H5_INDEX_CRT_ORDER : H5_INDEX_NAME
            H5Aget_name_by_idx(id, ".", order, H5_ITER_INC, hsize_t(index), &buffer, buffer.count, hid_t(H5P_DEFAULT))
            return String(cString: buffer)
        }
    }

    public func hasAttribute(_ name: String) -> Bool { H5Aexists(id, name) > 0 }

    private func withAttribute<T>(_ name: String, _ body: (hid_t) throws -> T) throws -> T {
        guard hasAttribute(name) else { throw HDF5Error("\(location): no attribute '\(name)'") }
        let attribute = H5Aopen(id, name, hid_t(H5P_DEFAULT))
        guard attribute >= 0 else { throw HDF5Error("\(location): cannot open attribute '\(name)'\(HDF5Library.reason())") }
        defer { H5Aclose(attribute) }
        return try body(attribute)
    }

    /// A scalar string attribute, fixed or variable length (h5py writes `str` as variable-length UTF-8).
    public func stringAttribute(_ name: String) throws -> String {
        try withAttribute(name) { attribute in
            let type = H5Aget_type(attribute)
            defer { H5Tclose(type) }
            guard H5Tget_class(type) == H5T_STRING else {
                throw HDF5Error("\(location): attribute '\(name)' is not a string")
            }
            if H5Tis_variable_str(type) > 0 {
                let memoryType = aedh5_variable_string()
                defer { H5Tclose(memoryType) }
                var pointer: UnsafeMutablePointer<CChar>? = nil
                guard H5Aread(attribute, memoryType, &pointer) >= 0 else {
                    throw HDF5Error("\(location): cannot read attribute '\(name)'\(HDF5Library.reason())")
                }
                defer { if let pointer { H5free_memory(pointer) } }
                return pointer.map { String(cString: $0) } ?? ""
            }
            let size = H5Tget_size(type)
            var buffer = [CChar](repeating: 0, count: size + 1)
            guard H5Aread(attribute, type, &buffer) >= 0 else {
                throw HDF5Error("\(location): cannot read attribute '\(name)'\(HDF5Library.reason())")
            }
            return String(cString: buffer)
        }
    }

    /// A numeric attribute as Double (first element if it is an array).
    public func numberAttribute(_ name: String) throws -> Double {
        try withAttribute(name) { attribute in
            let type = H5Aget_type(attribute)
            let typeClass = H5Tget_class(type)
            H5Tclose(type)
            guard typeClass == H5T_INTEGER || typeClass == H5T_FLOAT else {
                throw HDF5Error("\(location): attribute '\(name)' is not a number")
            }
            let space = H5Aget_space(attribute)
            let count = max(1, Int(H5Sget_simple_extent_npoints(space)))
            H5Sclose(space)
            var values = [Double](repeating: 0, count: count)
            guard H5Aread(attribute, aedh5_native_double(), &values) >= 0 else {
                throw HDF5Error("\(location): cannot read attribute '\(name)'\(HDF5Library.reason())")
            }
            return values[0]
        }
    }

    public func integerAttribute(_ name: String) throws -> Int64 {
        try withAttribute(name) { attribute in
            var value: Int64 = 0
            guard H5Aread(attribute, aedh5_native_int64(), &value) >= 0 else {
                throw HDF5Error("\(location): attribute '\(name)' is not an integer\(HDF5Library.reason())")
            }
            return value
        }
    }

    private func writeAttribute(_ name: String, fileType: hid_t, memoryType: hid_t, _ value: UnsafeRawPointer) throws {
        if hasAttribute(name) { H5Adelete(id, name) }
        let space = H5Screate(H5S_SCALAR)
        defer { H5Sclose(space) }
        let attribute = H5Acreate2(id, name, fileType, space, hid_t(H5P_DEFAULT), hid_t(H5P_DEFAULT))
        guard attribute >= 0 else { throw HDF5Error("\(location): cannot create attribute '\(name)'\(HDF5Library.reason())") }
        defer { H5Aclose(attribute) }
        guard H5Awrite(attribute, memoryType, value) >= 0 else {
            throw HDF5Error("\(location): cannot write attribute '\(name)'\(HDF5Library.reason())")
        }
    }

    public func setAttribute(_ name: String, _ value: String) throws {
        let type = aedh5_variable_string()
        defer { H5Tclose(type) }
        try value.withCString { cString in
            var pointer: UnsafePointer<CChar>? = cString
            try writeAttribute(name, fileType: type, memoryType: type, &pointer)
        }
    }

    public func setAttribute(_ name: String, _ value: Double) throws {
        var value = value
        try writeAttribute(name, fileType: aedh5_native_double(), memoryType: aedh5_native_double(), &value)
    }

    public func setAttribute(_ name: String, _ value: Int64) throws {
        var value = value
        try writeAttribute(name, fileType: aedh5_std_i64le(), memoryType: aedh5_native_int64(), &value)
    }
}

public final class HDF5Group: HDF5Object {
    public func contains(_ path: String) -> Bool {
        // H5Lexists fails on a missing intermediate group, so walk the path one link at a time.
        var prefix = path.hasPrefix("/") ? "/" : ""
        for component in path.split(separator: "/") {
            prefix += prefix.isEmpty || prefix.hasSuffix("/") ? String(component) : "/\(component)"
            guard H5Lexists(id, prefix, hid_t(H5P_DEFAULT)) > 0 else { return false }
        }
        return true
    }

    private enum Kind { case group, dataset, other }

    private func kind(of path: String) -> Kind {
        let object = H5Oopen(id, path, hid_t(H5P_DEFAULT))
        guard object >= 0 else { return .other }
        defer { H5Oclose(object) }
        switch H5Iget_type(object) {
        case H5I_GROUP: return .group
        case H5I_DATASET: return .dataset
        default: return .other
        }
    }

    public func isGroup(_ path: String) -> Bool { contains(path) && kind(of: path) == .group }
    public func isDataset(_ path: String) -> Bool { contains(path) && kind(of: path) == .dataset }

    public func group(_ path: String) throws -> HDF5Group {
        guard isGroup(path) else { throw HDF5Error("\(file.path): no group '\(path)'") }
        let group = H5Gopen2(id, path, hid_t(H5P_DEFAULT))
        guard group >= 0 else { throw HDF5Error("\(file.path): cannot open group '\(path)'\(HDF5Library.reason())") }
        return HDF5Group(file: file, id: group, path: path.hasPrefix("/") ? path : child(path))
    }

    public func createGroup(_ name: String) throws -> HDF5Group {
        let group = H5Gcreate2(id, name, hid_t(H5P_DEFAULT), hid_t(H5P_DEFAULT), hid_t(H5P_DEFAULT))
        guard group >= 0 else { throw HDF5Error("\(location): cannot create group '\(name)'\(HDF5Library.reason())") }
        return HDF5Group(file: file, id: group, path: child(name))
    }

    /// The names of this group's members, in name order.
    public var memberNames: [String] {
        var info = H5G_info_t()
        guard H5Gget_info(id, &info) >= 0 else { return [] }
        return (0..<Int(info.nlinks)).compactMap { index in
            let length = H5Lget_name_by_idx(id, ".", H5_INDEX_NAME, H5_ITER_INC, hsize_t(index), nil, 0, hid_t(H5P_DEFAULT))
            guard length >= 0 else { return nil }
            var buffer = [CChar](repeating: 0, count: Int(length) + 1)
            H5Lget_name_by_idx(id, ".", H5_INDEX_NAME, H5_ITER_INC, hsize_t(index), &buffer, buffer.count, hid_t(H5P_DEFAULT))
            return String(cString: buffer)
        }
    }

    /// Paths of every dataset below this group (for "did you mean" messages), at most `limit`.
    public func datasetPaths(limit: Int = 20) -> [String] {
        var found: [String] = []
        func walk(_ group: HDF5Group) {
            for name in group.memberNames where found.count < limit {
                let path = group.child(name)
                if group.isDataset(name) { found.append(path) } else if group.isGroup(name), let inner = try? group.group(name) { walk(inner) }
            }
        }
        walk(self)
        return found
    }

    /// Every dataset below this group.
    public func allDatasets() throws -> [HDF5Dataset] {
        var found: [HDF5Dataset] = []
        for name in memberNames {
            if isDataset(name) { found.append(try dataset(name)) } else if isGroup(name) { found += try group(name).allDatasets() }
        }
        return found
    }

    public func dataset(_ path: String) throws -> HDF5Dataset {
        guard isDataset(path) else {
            let known = file.root.datasetPaths()
            let hint = known.isEmpty ? "it holds no datasets" : "it has: \(known.joined(separator: ", "))"
            throw HDF5Error("\(file.path): no dataset '\(path)' (\(hint))")
        }
        let dataset = H5Dopen2(id, path, hid_t(H5P_DEFAULT))
        guard dataset >= 0 else { throw HDF5Error("\(file.path): cannot open dataset '\(path)'\(HDF5Library.reason())") }
        return HDF5Dataset(file: file, id: dataset, path: path.hasPrefix("/") ? path : child(path))
    }

    /// Writes a float32 tensor, chunked with a Fletcher-32 checksum so corruption is detected on read.
    @discardableResult
    public func write(_ name: String, shape: [Int], floats: UnsafeBufferPointer<Float>) throws -> HDF5Dataset {
        try write(name, shape: shape, fileType: aedh5_ieee_f32le(), memoryType: aedh5_native_float(),
                  elementSize: 4, bytes: UnsafeRawPointer(floats.baseAddress))
    }

    @discardableResult
    public func write(_ name: String, doubles: [Double]) throws -> HDF5Dataset {
        try doubles.withUnsafeBytes {
            try write(name, shape: [doubles.count], fileType: aedh5_native_double(), memoryType: aedh5_native_double(),
                      elementSize: 8, bytes: $0.baseAddress)
        }
    }

    @discardableResult
    public func write(_ name: String, integers: [Int64]) throws -> HDF5Dataset {
        try integers.withUnsafeBytes {
            try write(name, shape: [integers.count], fileType: aedh5_std_i64le(), memoryType: aedh5_native_int64(),
                      elementSize: 8, bytes: $0.baseAddress)
        }
    }

    /// A float32 (or float64) dataset of `shape` whose rows are written later with `HDF5Dataset.writeRows`.
    @discardableResult
    public func createDataset(_ name: String, shape: [Int], doublePrecision: Bool = false) throws -> HDF5Dataset {
        try write(name, shape: shape, fileType: doublePrecision ? aedh5_native_double() : aedh5_ieee_f32le(),
                  memoryType: doublePrecision ? aedh5_native_double() : aedh5_native_float(),
                  elementSize: doublePrecision ? 8 : 4, bytes: nil)
    }

    private func write(_ name: String, shape: [Int], fileType: hid_t, memoryType: hid_t, elementSize: Int,
                       bytes: UnsafeRawPointer?) throws -> HDF5Dataset {
        let dims = shape.map { hsize_t($0) }
        let space = H5Screate_simple(Int32(dims.count), dims, nil)
        defer { H5Sclose(space) }
        let properties = aedh5_dataset_create_plist()
        defer { H5Pclose(properties) }
        let count = shape.reduce(1, *)
        if count > 0 {
            // Chunks of at most ~1 MiB along the first dimension; Fletcher-32 needs chunked storage.
            let rowBytes = max(1, shape.dropFirst().reduce(1, *) * elementSize)
            var chunk = dims
            if !chunk.isEmpty { chunk[0] = hsize_t(max(1, min(shape[0], (1 << 20) / rowBytes))) }
            H5Pset_chunk(properties, Int32(chunk.count), chunk)
            H5Pset_fletcher32(properties)
        }
        let dataset = H5Dcreate2(id, name, fileType, space, hid_t(H5P_DEFAULT), properties, hid_t(H5P_DEFAULT))
        guard dataset >= 0 else { throw HDF5Error("\(location): cannot create dataset '\(name)'\(HDF5Library.reason())") }
        let wrapped = HDF5Dataset(file: file, id: dataset, path: child(name))
        if count > 0, let bytes, H5Dwrite(dataset, memoryType, 0, 0, hid_t(H5P_DEFAULT), bytes) < 0 {
            throw HDF5Error("\(location): cannot write dataset '\(name)'\(HDF5Library.reason())")
        }
        return wrapped
    }
}

public final class HDF5Dataset: HDF5Object {
    public enum ElementKind: Equatable, CustomStringConvertible {
        case float(bits: Int)
        case integer(bits: Int, signed: Bool)
        case other(String)

        public var isNumeric: Bool { if case .other = self { return false } else { return true } }

        public var description: String {
            switch self {
            case .float(let bits): return "float\(bits)"
            case .integer(let bits, let signed): return "\(signed ? "int" : "uint")\(bits)"
            case .other(let name): return name
            }
        }
    }

    public let shape: [Int]
    public let elementKind: ElementKind

    override init(file: HDF5File, id: hid_t, path: String, owned: Bool = true) {
        let space = H5Dget_space(id)
        let rank = Int(H5Sget_simple_extent_ndims(space))
        var dims = [hsize_t](repeating: 0, count: max(rank, 0))
        if rank > 0 { H5Sget_simple_extent_dims(space, &dims, nil) }
        H5Sclose(space)
        shape = dims.map { Int($0) }
        let type = H5Dget_type(id)
        let bits = Int(H5Tget_size(type)) * 8
        switch H5Tget_class(type) {
        case H5T_FLOAT: elementKind = .float(bits: bits)
        case H5T_INTEGER: elementKind = .integer(bits: bits, signed: H5Tget_sign(type) == H5T_SGN_2)
        case H5T_STRING: elementKind = .other("string")
        case H5T_COMPOUND: elementKind = .other("compound")
        case H5T_ENUM: elementKind = .other("enum")
        default: elementKind = .other("non-numeric")
        }
        H5Tclose(type)
        super.init(file: file, id: id, path: path, owned: owned)
    }

    public var count: Int { shape.reduce(1) { $0.multipliedReportingOverflow(by: $1).overflow ? .max : $0 * $1 } }

    /// Refuses a dataset that declares far more values than its file could hold uncompressed: a damaged or hostile
    /// file must be rejected before its declared size is allocated.
    /// - Parameter compression: how many times its stored size the data may be (checkpoints are not compressed).
    public func requirePlausibleSize(bytesPerValue: Int = 4, compression: Int = 64) throws {
        let fileBytes = file.byteSize
        let (declared, overflow) = count.multipliedReportingOverflow(by: bytesPerValue)
        guard !overflow, declared <= compression * fileBytes + (1 << 20) else {
            throw HDF5Error("\(location) declares \(shape.map(String.init).joined(separator: "×")) values, far more than the \(fileBytes)-byte file can hold; refusing to read it (damaged or not made by aedist)")
        }
    }

    /// Whether the dataset's storage carries a Fletcher-32 checksum filter.
    public var hasChecksum: Bool {
        let properties = H5Dget_create_plist(id)
        defer { H5Pclose(properties) }
        let filters = H5Pget_nfilters(properties)
        for index in 0..<max(filters, 0) {
            var flags: UInt32 = 0
            var elements = 0
            var configuration: UInt32 = 0
            var name = [CChar](repeating: 0, count: 64)
            if H5Pget_filter2(properties, UInt32(index), &flags, &elements, nil, name.count, &name, &configuration) == H5Z_FILTER_FLETCHER32 {
                return true
            }
        }
        return false
    }

    /// Every element, converted to float32.
    public func readFloats() throws -> [Float] {
        var values = [Float](repeating: 0, count: count)
        try values.withUnsafeMutableBufferPointer { try readAll(into: UnsafeMutableRawPointer($0.baseAddress!), type: aedh5_native_float()) }
        return values
    }

    public func readDoubles() throws -> [Double] {
        var values = [Double](repeating: 0, count: count)
        try values.withUnsafeMutableBufferPointer { try readAll(into: UnsafeMutableRawPointer($0.baseAddress!), type: aedh5_native_double()) }
        return values
    }

    public func readIntegers() throws -> [Int64] {
        var values = [Int64](repeating: 0, count: count)
        try values.withUnsafeMutableBufferPointer { try readAll(into: UnsafeMutableRawPointer($0.baseAddress!), type: aedh5_native_int64()) }
        return values
    }

    private func readAll(into destination: UnsafeMutableRawPointer, type: hid_t) throws {
        guard count > 0 else { return }
        guard H5Dread(id, type, 0, 0, hid_t(H5P_DEFAULT), destination) >= 0 else {
            throw HDF5Error("\(location): reading failed\(HDF5Library.reason())")
        }
    }

    /// Writes consecutive rows starting at `firstRow` from `values` (float32 or float64, converted to the file's type).
    public func writeRows<Value>(at firstRow: Int, count rowCount: Int, from values: UnsafePointer<Value>) throws {
        guard rowCount > 0 else { return }
        let memoryType = Value.self == Double.self ? aedh5_native_double() : aedh5_native_float()
        let fileSpace = H5Dget_space(id)
        defer { H5Sclose(fileSpace) }
        var start = [hsize_t](repeating: 0, count: shape.count)
        var count = shape.map { hsize_t($0) }
        start[0] = hsize_t(firstRow)
        count[0] = hsize_t(rowCount)
        H5Sselect_hyperslab(fileSpace, H5S_SELECT_SET, start, nil, count, nil)
        let memorySpace = H5Screate_simple(Int32(count.count), count, nil)
        defer { H5Sclose(memorySpace) }
        guard H5Dwrite(id, memoryType, memorySpace, fileSpace, hid_t(H5P_DEFAULT), values) >= 0 else {
            throw HDF5Error("\(location): writing rows \(firstRow)..<\(firstRow + rowCount) failed\(HDF5Library.reason())")
        }
    }

    /// Where the values start in the file, when they can be read there directly: one contiguous block (not chunked,
    /// no filters, no external storage), already written, of float32 in this machine's byte order. nil otherwise.
    public var rawFloatOffset: Int? {
        let plist = H5Dget_create_plist(id)
        defer { H5Pclose(plist) }
        guard H5Pget_layout(plist) == H5D_CONTIGUOUS, H5Pget_nfilters(plist) == 0, H5Pget_external_count(plist) == 0 else { return nil }
        let type = H5Dget_type(id)
        defer { H5Tclose(type) }
        guard H5Tequal(type, aedh5_native_float()) > 0 else { return nil }
        let offset = H5Dget_offset(id)
        guard offset != haddr_t.max, offset < haddr_t(Int.max) else { return nil }
        return Int(offset)
    }

    /// Rows `rows` (along the first dimension) as float32, row after row, into `destination`.
    public func readRows(_ rows: Range<Int>, into destination: UnsafeMutablePointer<Float>) throws {
        guard !rows.isEmpty else { return }
        try readRuns([rows], rowCount: rows.count, into: destination)
    }

    /// The given rows (ascending, no repeats) as float32, in that order, into `destination`: one read of a union of
    /// hyperslabs, so a batch of scattered rows is one call.
    public func readRows(sorted rows: UnsafeBufferPointer<Int32>, into destination: UnsafeMutablePointer<Float>) throws {
        guard !rows.isEmpty else { return }
        var runs: [Range<Int>] = []
        var start = Int(rows[0]), end = start + 1
        for row in rows.dropFirst() {
            if Int(row) == end { end += 1 } else { runs.append(start..<end); start = Int(row); end = start + 1 }
        }
        runs.append(start..<end)
        try readRuns(runs, rowCount: rows.count, into: destination)
    }

    private func readRuns(_ runs: [Range<Int>], rowCount: Int, into destination: UnsafeMutablePointer<Float>) throws {
        let fileSpace = H5Dget_space(id)
        defer { H5Sclose(fileSpace) }
        var count = shape.map { hsize_t($0) }
        var start = [hsize_t](repeating: 0, count: shape.count)
        for (index, run) in runs.enumerated() {
            start[0] = hsize_t(run.lowerBound)
            count[0] = hsize_t(run.count)
            H5Sselect_hyperslab(fileSpace, index == 0 ? H5S_SELECT_SET : H5S_SELECT_OR, start, nil, count, nil)
        }
        var memoryShape = shape.map { hsize_t($0) }
        memoryShape[0] = hsize_t(rowCount)
        let memorySpace = H5Screate_simple(Int32(memoryShape.count), memoryShape, nil)
        defer { H5Sclose(memorySpace) }
        guard H5Dread(id, aedh5_native_float(), memorySpace, fileSpace, hid_t(H5P_DEFAULT), destination) >= 0 else {
            throw HDF5Error("\(location): reading rows failed\(HDF5Library.reason())")
        }
    }
}
