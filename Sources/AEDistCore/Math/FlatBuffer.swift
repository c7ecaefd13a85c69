/// One contiguous float32 allocation, sized once. Parameters, gradients, optimizer moments and activations each
/// live in one of these, and layers address them by offset, so "all-reduce the gradients" or "step the optimizer"
/// is one call over one buffer.
public final class FlatBuffer: @unchecked Sendable {
    public let count: Int
    public let pointer: UnsafeMutablePointer<Float>
    /// For a view: the buffer that owns the memory (kept alive as long as the view).
    private let owner: FlatBuffer?

    public init(count: Int) {
        self.count = count
        pointer = .allocate(capacity: max(count, 1))
        pointer.initialize(repeating: 0, count: max(count, 1))
        owner = nil
    }

    /// A view of `count` floats inside `owner`'s memory, from `pointer` on: the same memory under two names (the
    /// gradients inside a step's all-reduce message, say).
    public init(viewing pointer: UnsafeMutablePointer<Float>, count: Int, owner: FlatBuffer) {
        precondition(pointer >= owner.pointer && pointer + count <= owner.pointer + owner.count, "a view must lie inside its owner")
        self.count = count
        self.pointer = pointer
        self.owner = owner
    }

    public convenience init(_ values: [Float]) {
        self.init(count: values.count)
        values.withUnsafeBufferPointer { pointer.update(from: $0.baseAddress!, count: values.count) }
    }

    deinit { if owner == nil { pointer.deallocate() } }

    public subscript(index: Int) -> Float {
        get { pointer[index] }
        set { pointer[index] = newValue }
    }

    public var buffer: UnsafeMutableBufferPointer<Float> { UnsafeMutableBufferPointer(start: pointer, count: count) }
    public var array: [Float] { Array(buffer) }

    public func fill(_ value: Float) { pointer.update(repeating: value, count: count) }

    public func copy(from other: FlatBuffer) {
        precondition(other.count == count, "buffer sizes differ")
        pointer.update(from: other.pointer, count: count)
    }

    public func scale(by factor: Float) {
        for i in 0..<count { pointer[i] *= factor }
    }

    /// A 64-bit FNV-1a hash of the exact bit patterns: equal only for bit-identical contents.
    public var bitChecksum: UInt64 {
        var hash = FNV1a()
        for i in 0..<count { hash.add(UInt64(pointer[i].bitPattern)) }
        return hash.value
    }
}

/// The 64-bit FNV-1a hash: cheap, stable across runs and machines, for identities and checksums (not security).
public struct FNV1a {
    public private(set) var value: UInt64 = 0xcbf2_9ce4_8422_2325

    public init() {}

    public init(_ text: String) {
        for byte in text.utf8 { add(UInt64(byte)) }
    }

    public mutating func add(_ word: UInt64) { value = (value ^ word) &* 0x0000_0100_0000_01b3 }
}
