import CBLAS

/// Elementwise functions for the hot loops, written so the compiler vectorizes the loops that call them: no libm
/// calls, no traps, selects instead of branches. Accurate to a few float ulps, which is below the noise of
/// float32 training; NaN in gives NaN out, so a diverging run is still caught.
public enum FastMath {
    /// √x as one instruction (vectorizable, unlike Float.squareRoot()); NaN for x < 0.
    @inline(__always)
    public static func squareRoot(_ x: Float) -> Float { aedmath_sqrtf(x) }

    /// e^x, relative error below 3e-7 (Cephes' polynomial); inputs beyond ±87 saturate to e^±87.
    @inline(__always)
    public static func exp(_ x: Float) -> Float {
        // Comparisons written so NaN passes through unchanged.
        var x = x < -87 ? -87 : x
        x = x > 87 ? 87 : x
        // Round x·log2(e) to the nearest integer n by adding 1.5·2²³: the sum's low mantissa bits hold n.
        let shifted = x * 1.44269504088896341 + 12582912
        let n = shifted - 12582912
        let r = x - n * 0.693359375 + n * 2.12194440e-4
        var p: Float = 1.9875691500e-4
        p = p * r + 1.3981999507e-3
        p = p * r + 8.3334519073e-3
        p = p * r + 4.1665795894e-2
        p = p * r + 1.6666665459e-1
        p = p * r + 5.0000001201e-1
        let expR = p * r * r + r + 1
        let exponent = (Int32(bitPattern: shifted.bitPattern) &- 0x4B40_0000 &+ 127) &<< 23
        return expR * Float(bitPattern: UInt32(bitPattern: exponent))
    }

    /// 1 / (1 + e^−z) without overflow: both halves from e^−|z|.
    @inline(__always)
    public static func sigmoid(_ z: Float) -> Float {
        let e = exp(-abs(z))
        let d = 1 / (1 + e)
        return z >= 0 ? d : e * d
    }

    /// log(m) for m in [0.5, 1] (BCE's −log max(y, 1 − y)): 2·atanh((m − 1)/(m + 1)) by its series, |s| ≤ 1/3,
    /// absolute error below 1e-7 and exact at m = 1.
    @inline(__always)
    public static func logHalfToOne(_ m: Float) -> Float {
        let s = (m - 1) / (m + 1)
        let s2 = s * s
        var p: Float = 1 / 13
        p = p * s2 + 1 / 11
        p = p * s2 + 1 / 9
        p = p * s2 + 1 / 7
        p = p * s2 + 1 / 5
        p = p * s2 + 1 / 3
        p = p * s2 + 1
        return 2 * s * p
    }
}
