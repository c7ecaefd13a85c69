#define _GNU_SOURCE
#include "cblas_shim.h"
#include <sched.h>
#include <stdint.h>
#include <cblas.h>
#if defined(__x86_64__) || defined(__i386__)
#include <xmmintrin.h>
#include <pmmintrin.h>
#endif

void aedblas_sgemm(int transpose_a, int transpose_b, int m, int n, int k, float alpha, const float *a, int lda,
                   const float *b, int ldb, float beta, float *c, int ldc) {
    cblas_sgemm(CblasRowMajor, transpose_a ? CblasTrans : CblasNoTrans, transpose_b ? CblasTrans : CblasNoTrans,
                m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}
void aedblas_set_threads(int threads) { openblas_set_num_threads(threads); }
int aedblas_threads(void) { return openblas_get_num_threads(); }
const char *aedblas_corename(void) { return openblas_get_corename(); }
void aedblas_flush_denormals(void) {
#if defined(__x86_64__) || defined(__i386__)
    _MM_SET_FLUSH_ZERO_MODE(_MM_FLUSH_ZERO_ON);
    _MM_SET_DENORMALS_ZERO_MODE(_MM_DENORMALS_ZERO_ON);
#endif
}

int aedblas_allowed_cores(unsigned long long *mask_hash) {
    cpu_set_t set;
    CPU_ZERO(&set);
    if (sched_getaffinity(0, sizeof set, &set) != 0) return 0;
    // FNV-1a over the CPU numbers in the set: equal for processes that share the same CPUs.
    unsigned long long hash = 0xcbf29ce484222325ULL;
    for (int cpu = 0; cpu < CPU_SETSIZE; cpu++) {
        if (CPU_ISSET(cpu, &set)) hash = (hash ^ (unsigned long long)cpu) * 0x100000001b3ULL;
    }
    if (mask_hash) *mask_hash = hash;
    return CPU_COUNT(&set);
}
