/* The machine's own sgemm rate, through the same OpenBLAS aedist links, for given shapes: the yardstick the
 * benchmark divides aedist's achieved GFLOP/s by. One thread; denormals flushed as aedist does.
 * Usage: sgemm_rate TA TB M N K [TA TB M N K ...]   (TA/TB: 0 or 1, row-major as aedist calls it)
 * Prints one line per shape: "TA TB M N K GFLOPS", then "total GFLOPS" for all shapes run back to back.
 * By default each shape's rate is the best of 7 short trials (the machine undisturbed). With SGEMM_SECONDS=S it is
 * the mean over S seconds of repeated calls instead: the sustained rate, for two copies run at once. */
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <xmmintrin.h>
#include <pmmintrin.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

int main(int argc, char **argv) {
    _MM_SET_FLUSH_ZERO_MODE(_MM_FLUSH_ZERO_ON);
    _MM_SET_DENORMALS_ZERO_MODE(_MM_DENORMALS_ZERO_ON);
    openblas_set_num_threads(1);
    int shapes = (argc - 1) / 5;
    double total_flops = 0, total_seconds = 0;
    for (int s = 0; s < shapes; s++) {
        int ta = atoi(argv[1 + 5 * s]), tb = atoi(argv[2 + 5 * s]);
        int m = atoi(argv[3 + 5 * s]), n = atoi(argv[4 + 5 * s]), k = atoi(argv[5 + 5 * s]);
        float *a = malloc(sizeof(float) * m * k), *b = malloc(sizeof(float) * k * n), *c = malloc(sizeof(float) * m * n);
        for (long i = 0; i < (long)m * k; i++) a[i] = (float)((i * 7919) % 1000) / 1000.0f - 0.5f;
        for (long i = 0; i < (long)k * n; i++) b[i] = (float)((i * 104729) % 1000) / 1000.0f - 0.5f;
        int lda = ta ? m : k, ldb = tb ? k : n;
        double flops = 2.0 * m * n * k, best = 1e30;
        int reps = (int)(2e8 / flops) + 1;
        const char *sustained = getenv("SGEMM_SECONDS");
        if (sustained) {
            double limit = atof(sustained), start = now(), elapsed = 0;
            long calls = 0;
            while (elapsed < limit) {
                cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, m, n, k,
                            1.0f, a, lda, b, ldb, 0.0f, c, n);
                calls++;
                elapsed = now() - start;
            }
            best = elapsed / calls;
        }
        for (int trial = 0; trial < (sustained ? 0 : 7); trial++) {
            double start = now();
            for (int r = 0; r < reps; r++)
                cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, m, n, k,
                            1.0f, a, lda, b, ldb, 0.0f, c, n);
            double seconds = (now() - start) / reps;
            if (trial > 0 && seconds < best) best = seconds;  /* the first trial warms caches and buffers */
        }
        printf("%d %d %d %d %d %.1f\n", ta, tb, m, n, k, flops / best / 1e9);
        total_flops += flops;
        total_seconds += best;
        free(a); free(b); free(c);
    }
    printf("total %.1f\n", total_flops / total_seconds / 1e9);
    printf("core %s\n", openblas_get_corename());
    return 0;
}
