import CBLAS

/// Matrix products on row-major float32 buffers, through the BLAS. Transposes are flags, never copies.
public enum BLAS {
    /// C[m×n] = alpha · op(A) · op(B) + beta · C, where op(A) is m×k and op(B) is k×n.
    @inline(__always)
    public static func gemm(transposeA: Bool = false, transposeB: Bool = false, m: Int, n: Int, k: Int,
                            alpha: Float = 1, a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, ldb: Int,
                            beta: Float, c: UnsafeMutablePointer<Float>, ldc: Int) {
        aedblas_sgemm(transposeA ? 1 : 0, transposeB ? 1 : 0, Int32(m), Int32(n), Int32(k), alpha, a, Int32(lda),
                      b, Int32(ldb), beta, c, Int32(ldc))
    }

    public static var threads: Int {
        get { Int(aedblas_threads()) }
        set { aedblas_set_threads(Int32(max(1, newValue))) }
    }

    /// How the thread count was chosen, for the start-up line (set by the launcher).
    nonisolated(unsafe) public static var threadChoice = ""

    /// The CPUs this process may run on (its affinity mask) and a hash identifying that set; nil when unknown.
    public static var allowedCores: (count: Int, maskHash: UInt64)? {
        var hash: UInt64 = 0
        let count = Int(aedblas_allowed_cores(&hash))
        return count > 0 ? (count, hash) : nil
    }

    /// The kernel family OpenBLAS picked for this CPU ("Prescott" is its slow generic fallback).
    public static var coreName: String { String(cString: aedblas_corename()) }

    /// Denormals appear once sigmoid outputs saturate and slow every later multiply several-fold; flushing them to
    /// zero changes results by less than float rounding. Per thread: call on every thread that computes.
    public static func flushDenormalsToZero() { aedblas_flush_denormals() }
}
