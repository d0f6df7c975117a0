/* What this CPU can do at best for the encoder's arithmetic, measured without our code in the way:
 * the peak rate of the multiply instructions a reduced-precision path would use, and OpenBLAS's
 * sgemm on the shapes of the default model's Linear layers (MiniLM-L6: hidden 384, intermediate
 * 1536, 6 layers), for one 32-token query and for a batch of documents, on 1 and 2 threads.
 * Every layer has its own weight matrices (42 MB in all), so caches hold what they would hold in
 * a real forward pass. Built and run by tools/bench/cpu-ceiling.
 */
#include <cblas.h>
#include <immintrin.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

/* Twelve independent dependency chains per loop: enough to cover each instruction's latency, so
 * the loops run at the instruction's throughput. */
#define CHAINS(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9) X(10) X(11)
static const long probeIterations = 50000000;

__attribute__((target("avx2,fma"))) static double fmaPerNs(void) {
#define DECLARE_F(i) __m256 a##i = _mm256_set1_ps(i * 0.001f);
    CHAINS(DECLARE_F)
    __m256 x = _mm256_set1_ps(0.999f), y = _mm256_set1_ps(0.0001f);
    double t0 = now();
    for (long n = 0; n < probeIterations; n++) {
#define STEP_F(i) a##i = _mm256_fmadd_ps(a##i, x, y);
        CHAINS(STEP_F)
    }
    double t = now() - t0;
    float sink = 0;
#define SINK_F(i) sink += a##i[0];
    CHAINS(SINK_F)
    if (sink == 12345.f) puts("");
    return probeIterations * 12 / t / 1e9;
}

/* One probe per integer multiply-add: `STEP` applied to twelve independent accumulators. */
#define DECLARE_I(i) __m256i b##i = _mm256_set1_epi32(i + 1);
#define SINK_I(i) sink += _mm256_extract_epi32(b##i, 0);
#define INTEGER_PROBE(name, multiplier, step)                        \
    __attribute__((target("avx2"))) static double name(void) {       \
        CHAINS(DECLARE_I)                                             \
        __m256i q = multiplier;                                       \
        double t0 = now();                                            \
        for (long n = 0; n < probeIterations; n++) { CHAINS(step) }   \
        double t = now() - t0;                                        \
        int sink = 0;                                                 \
        CHAINS(SINK_I)                                                \
        if (sink == 12345) puts("");                                  \
        return probeIterations * 12 / t / 1e9;                       \
    }
#define STEP_W(i) b##i = _mm256_madd_epi16(b##i, q);
#define STEP_U(i) b##i = _mm256_maddubs_epi16(b##i, q);
INTEGER_PROBE(maddwdPerNs, _mm256_set1_epi16(3), STEP_W)
INTEGER_PROBE(maddubswPerNs, _mm256_set1_epi8(3), STEP_U)

static void *fmaThread(void *out) {
    *(double *)out = fmaPerNs();
    return NULL;
}

enum { layers = 6, hidden = 384, inter = 1536 };
static const int shapeK[4] = { hidden, hidden, hidden, inter };     /* inputs  */
static const int shapeN[4] = { 3 * hidden, hidden, inter, hidden }; /* outputs */

static double layerFlopsPerToken(void) {
    double f = 0;
    for (int s = 0; s < 4; s++) f += 2.0 * shapeK[s] * shapeN[s];
    return f;
}

/* Seconds for the 24 Linear GEMMs of a forward pass over `tokens` rows (best of `repeats`). */
static double forwardGemmSeconds(float **weights, float *x, float *y, int tokens, int threads, int repeats) {
    openblas_set_num_threads(threads);
    double best = 1e30;
    for (int r = 0; r < repeats; r++) {
        double t0 = now();
        for (int l = 0; l < layers; l++)
            for (int s = 0; s < 4; s++)
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, tokens, shapeN[s], shapeK[s], 1.0f, x, shapeK[s],
                            weights[l * 4 + s], shapeK[s], 0.0f, y, shapeN[s]);
        double t = now() - t0;
        if (t < best) best = t;
    }
    return best;
}

int main(int argc, char **argv) {
    int batchTokens = argc > 1 ? atoi(argv[1]) : 5000;
    if (batchTokens < 32) batchTokens = 32;

    double fma1 = fmaPerNs();
    double both[2];
    pthread_t th[2];
    for (int i = 0; i < 2; i++) pthread_create(&th[i], NULL, fmaThread, &both[i]);
    for (int i = 0; i < 2; i++) pthread_join(th[i], NULL);
    double wd = maddwdPerNs(), ub = maddubswPerNs();
    printf("F32 FMA (AVX2, 8 lanes)       %6.2f per ns on 1 core = %5.1f GFLOP/s; 2 cores at once: %5.1f GFLOP/s\n",
           fma1, fma1 * 16, (both[0] + both[1]) * 16);
    printf("int16 VPMADDWD (16 MACs)      %6.2f per ns = %5.1f G multiply-adds/s (F32 FMA: %.1f)\n", wd, wd * 16, fma1 * 8);
    printf("int8 VPMADDUBSW (32 MACs)     %6.2f per ns = %5.1f G multiply-adds/s before widening to 32 bits,\n"
           "                              which costs a VPMADDWD per VPMADDUBSW: %.1f G/s\n",
           ub, ub * 32, 32.0 / (1.0 / ub + 1.0 / wd));

    float *weights[layers * 4];
    srand(1);
    for (int i = 0; i < layers * 4; i++) {
        long n = (long)shapeK[i % 4] * shapeN[i % 4];
        weights[i] = malloc(sizeof(float) * n);
        for (long j = 0; j < n; j++) weights[i][j] = (float)rand() / RAND_MAX - 0.5f;
    }
    float *x = malloc(sizeof(float) * (long)batchTokens * inter);
    float *y = malloc(sizeof(float) * (long)batchTokens * inter);
    for (long j = 0; j < (long)batchTokens * inter; j++) x[j] = (float)rand() / RAND_MAX - 0.5f;

    double perToken = layerFlopsPerToken() * layers;
    printf("model Linear layers: %.1f MFLOP per token (6 layers x 4 GEMMs)\n", perToken / 1e6);
    for (int threads = 1; threads <= 2; threads++) {
        double q = forwardGemmSeconds(weights, x, y, 32, threads, 30);
        double b = forwardGemmSeconds(weights, x, y, batchTokens, threads, 3);
        printf("OpenBLAS sgemm, %d thread%s: one 32-token query %6.2f ms (%5.1f GFLOP/s); batch of %d tokens %7.0f tokens/s (%5.1f GFLOP/s)\n",
               threads, threads > 1 ? "s" : " ", q * 1e3, 32 * perToken / q / 1e9, batchTokens, batchTokens / b,
               batchTokens * perToken / b / 1e9);
    }
    return 0;
}
