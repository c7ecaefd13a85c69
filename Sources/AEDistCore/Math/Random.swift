import Foundation

/// Counter-based randomness: every stream is a pure function of (seed, purpose, indices), so shuffles, weight
/// initialisation and noise are the same whatever the number of ranks and after any resume, with no generator state
/// to save.
public struct RandomStream: RandomNumberGenerator {
    private var state: UInt64

    public init(seed: UInt64, _ path: UInt64...) {
        var mixed = RandomStream.mix(seed ^ 0x6a09_e667_f3bc_c908)
        for component in path { mixed = RandomStream.mix(mixed ^ RandomStream.mix(component &+ 0x9e37_79b9_7f4a_7c15)) }
        state = mixed
    }

    /// SplitMix64's finaliser: a bijective mix with good avalanche, cheap enough for per-step streams.
    @inline(__always)
    static func mix(_ value: UInt64) -> UInt64 {
        var z = value
        z = (z ^ (z >> 30)) &* 0xbf58_476d_1ce4_e5b9
        z = (z ^ (z >> 27)) &* 0x94d0_49bb_1331_11eb
        return z ^ (z >> 31)
    }

    public mutating func next() -> UInt64 {
        state &+= 0x9e37_79b9_7f4a_7c15
        return RandomStream.mix(state)
    }

    /// Uniform in [0, 1) with 24 random bits.
    public mutating func nextUnitFloat() -> Float { Float(next() >> 40) * (1.0 / 16_777_216.0) }

    /// Standard normal by Box–Muller.
    public mutating func nextGaussian() -> Double {
        let u1 = (Double(next() >> 11) + 0.5) * (1.0 / 9_007_199_254_740_992.0)
        let u2 = Double(next() >> 11) * (1.0 / 9_007_199_254_740_992.0)
        return (-2 * log(u1)).squareRoot() * cos(2 * Double.pi * u2)
    }

    /// Purposes, so that streams for different jobs never coincide.
    public enum Purpose: UInt64, CaseIterable {
        case shuffle = 1, initialization = 2, noise = 3, split = 4, reparameterization = 5, dropout = 6
    }
}
