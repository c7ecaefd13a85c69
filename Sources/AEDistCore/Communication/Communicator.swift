/// What training needs from the other ranks. The real implementation is MPI (AEDistIO); `SingleProcess` is the
/// one-rank stand-in that unit tests use.
public protocol Communicator: AnyObject {
    var rank: Int { get }
    var size: Int { get }
    /// Ranks sharing this node's cores (to size BLAS thread pools).
    var localSize: Int { get }
    func allReduceSum(_ values: UnsafeMutableBufferPointer<Float>) throws
    func allReduceSum(_ values: UnsafeMutableBufferPointer<Double>) throws
    func allReduceMax(_ values: UnsafeMutableBufferPointer<Double>) throws
    func allReduceMin(_ values: UnsafeMutableBufferPointer<Int64>) throws
    /// Integer sums are exact, so their result does not depend on the order ranks are combined in.
    func allReduceSum(_ values: UnsafeMutableBufferPointer<Int64>) throws
    func broadcast(_ bytes: UnsafeMutableRawBufferPointer, root: Int) throws
    func allGather(_ value: UInt64) throws -> [UInt64]
    /// The step's all-reduce (sum) of the gradient buffer. Implementations may note which ranks arrived, to say
    /// who is missing when it never completes.
    func allReduceGradients(_ values: UnsafeMutableBufferPointer<Float>, step: Int) throws
    /// Runs `body`, in which the other ranks wait for rank 0's own I/O (writing or checking checkpoints): a
    /// collective watchdog should allow it far longer than a step.
    func whileRootWorksAlone<T>(_ body: () throws -> T) rethrows -> T
}

extension Communicator {
    public var isRoot: Bool { rank == 0 }

    public func allReduceGradients(_ values: UnsafeMutableBufferPointer<Float>, step: Int) throws {
        try allReduceSum(values)
    }

    public func whileRootWorksAlone<T>(_ body: () throws -> T) rethrows -> T { try body() }

    public func allReduceSum(_ values: inout [Double]) throws {
        try values.withUnsafeMutableBufferPointer { try allReduceSum($0) }
    }

    public func allReduceMax(_ values: inout [Double]) throws {
        try values.withUnsafeMutableBufferPointer { try allReduceMax($0) }
    }

    public func broadcast(_ buffer: FlatBuffer, root: Int = 0) throws {
        try broadcast(UnsafeMutableRawBufferPointer(buffer.buffer), root: root)
    }

    /// Rank 0's string, on every rank.
    public func broadcast(_ text: String, root: Int = 0) throws -> String {
        var length = [Int64(rank == root ? text.utf8.count : 0)]
        try length.withUnsafeMutableBytes { try broadcast($0, root: root) }
        var bytes = rank == root ? Array(text.utf8) : [UInt8](repeating: 0, count: Int(length[0]))
        try bytes.withUnsafeMutableBytes { try broadcast($0, root: root) }
        return String(decoding: bytes, as: UTF8.self)
    }
}

/// A world of one rank: every collective is the identity.
public final class SingleProcess: Communicator {
    public init() {}
    public var rank: Int { 0 }
    public var size: Int { 1 }
    public var localSize: Int { 1 }
    public func allReduceSum(_ values: UnsafeMutableBufferPointer<Float>) throws {}
    public func allReduceSum(_ values: UnsafeMutableBufferPointer<Double>) throws {}
    public func allReduceMax(_ values: UnsafeMutableBufferPointer<Double>) throws {}
    public func allReduceMin(_ values: UnsafeMutableBufferPointer<Int64>) throws {}
    public func allReduceSum(_ values: UnsafeMutableBufferPointer<Int64>) throws {}
    public func broadcast(_ bytes: UnsafeMutableRawBufferPointer, root: Int) throws {}
    public func allGather(_ value: UInt64) throws -> [UInt64] { [value] }
}
