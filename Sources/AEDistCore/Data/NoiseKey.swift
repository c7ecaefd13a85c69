/// What per-sample randomness (denoising noise, a variational model's ε) is keyed by: the epoch and each row's
/// sample index, so it is the same at any number of ranks and after any resume. Plain values, not a closure: a
/// stored closure would cost a heap allocation every step.
public struct NoiseKey {
    public let epoch: Int
    /// Row r is sample indices[first + r] when given, else sample first + r.
    var indices: UnsafePointer<Int32>?
    var first = 0

    public init(epoch: Int, indices: UnsafePointer<Int32>) {
        self.epoch = epoch
        self.indices = indices
    }

    public init(epoch: Int, first: Int) {
        self.epoch = epoch
        self.first = first
    }

    @inline(__always)
    public func sampleIndex(_ row: Int) -> Int { indices.map { Int($0[first + row]) } ?? first + row }

    /// The key of the rows from `offset` on.
    public func skipping(_ offset: Int) -> NoiseKey {
        var key = self
        key.first += offset
        return key
    }
}
