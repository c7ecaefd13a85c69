// The only place aedist sees <cblas.h>, the CPU's floating-point control register and its affinity mask.
#ifndef AEDIST_CBLAS_SHIM_H
#define AEDIST_CBLAS_SHIM_H

/// Row-major C = alpha * op(A) * op(B) + beta * C, op = transpose when the flag is non-zero.
void aedblas_sgemm(int transpose_a, int transpose_b, int m, int n, int k, float alpha, const float *a, int lda,
                   const float *b, int ldb, float beta, float *c, int ldc);
void aedblas_set_threads(int threads);
int aedblas_threads(void);
/// The kernel family OpenBLAS chose for this CPU (e.g. "Haswell", "SkylakeX"; "Prescott" means the slow fallback).
const char *aedblas_corename(void);
/// The CPUs this process may run on (its affinity mask, which taskset, Slurm cpusets and mpirun's binding set),
/// or 0 when unknown; `mask_hash` identifies the set.
int aedblas_allowed_cores(unsigned long long *mask_hash);
/// Flush denormals to zero and treat denormal inputs as zero (FTZ + DAZ) on this thread.
void aedblas_flush_denormals(void);

/// The square root instruction itself. Swift's Float.squareRoot() keeps C's errno path for negative inputs (a
/// branch and a libm call), which stops loops from vectorizing; this builtin is the bare IEEE operation, and Swift
/// inlines it.
static inline float aedmath_sqrtf(float x) { return __builtin_elementwise_sqrt(x); }

#endif
