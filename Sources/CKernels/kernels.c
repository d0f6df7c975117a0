#include "CKernels.h"
#include <math.h>
#include <string.h>
#include <stdint.h>
#include <stdlib.h>

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#define CK_X86 1
#endif

void ck_maxsim_rows_portable(const float *q, int rows, const float *d, int n, int dim, float *rowmax) {
    for (int i = 0; i < rows; i++) {
        const float *qi = q + (long)i * dim;
        float best = -INFINITY;
        for (int j = 0; j < n; j++) {
            const float *dj = d + (long)j * dim;
            float s0 = 0, s1 = 0, s2 = 0, s3 = 0;
            int k = 0;
            for (; k + 4 <= dim; k += 4) {
                s0 += qi[k] * dj[k];
                s1 += qi[k + 1] * dj[k + 1];
                s2 += qi[k + 2] * dj[k + 2];
                s3 += qi[k + 3] * dj[k + 3];
            }
            for (; k < dim; k++) s0 += qi[k] * dj[k];
            float s = (s0 + s1) + (s2 + s3);
            if (s > best) best = s;
        }
        rowmax[i] = best;
    }
}

static inline uint32_t load_u32le(const unsigned char *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* 1 / sqrt(squared_norm), the norm floored at 1e-12 (a zero vector scores 0, not NaN). */
static inline float inverse_of_norm(float squared_norm) {
    float norm = sqrtf(squared_norm);
    return 1.0f / (norm > 1e-12f ? norm : 1e-12f);
}

void ck_decode_residuals_portable(const unsigned char *codes, int bpc, const unsigned char *ids,
                                  const float *centroids, const float *expand, int per, int n, float *out, float *inv_norms) {
    int dim = bpc * per;
    for (int j = 0; j < n; j++) {
        const unsigned char *b = codes + (long)j * bpc;
        const float *c = centroids + (long)load_u32le(ids + 4 * (long)j) * dim;
        float *o = out + (long)j * dim;
        float s0 = 0, s1 = 0;
        for (int p = 0; p < bpc; p++) {
            const float *e = expand + (int)b[p] * per;
            for (int k = 0; k < per; k++) {
                float v = c[p * per + k] + e[k];
                o[p * per + k] = v;
                if (k & 1) s1 += v * v; else s0 += v * v;
            }
        }
        inv_norms[j] = inverse_of_norm(s0 + s1);
    }
}

#ifdef CK_X86
#ifndef CK_DECODE_AHEAD
#define CK_DECODE_AHEAD 4
#endif
/* `inverse_of_norm` of the squared norm whose halves are summed lane-wise in acc0 and acc1. */
__attribute__((target("avx2,fma"), always_inline))
static inline float inverse_norm(__m256 acc0, __m256 acc1) {
    __m256 acc = _mm256_add_ps(acc0, acc1);
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
    s = _mm_hadd_ps(s, s);
    s = _mm_hadd_ps(s, s);
    return inverse_of_norm(_mm_cvtss_f32(s));
}

/* One token of 2-bit or 1-bit codes (4 or 8 dims per byte): centroid c plus the residual of
   code b into o, eight dims per step from one or two rows of `expand`; returns the inverse norm. */
__attribute__((target("avx2,fma"), always_inline))
static inline float decode_token_avx2(const unsigned char *b, int bpc, const float *c, const float *expand, int per,
                                      float *o) {
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    if (per == 4) {
        for (int p = 0; p < bpc; p += 2) {
            __m256 e = _mm256_set_m128(_mm_loadu_ps(expand + 4 * (int)b[p + 1]), _mm_loadu_ps(expand + 4 * (int)b[p]));
            __m256 v = _mm256_add_ps(_mm256_loadu_ps(c + 4 * p), e);
            _mm256_storeu_ps(o + 4 * p, v);
            if (p & 2) acc1 = _mm256_fmadd_ps(v, v, acc1); else acc0 = _mm256_fmadd_ps(v, v, acc0);
        }
    } else {
        for (int p = 0; p < bpc; p++) {
            __m256 v = _mm256_add_ps(_mm256_loadu_ps(c + 8 * p), _mm256_loadu_ps(expand + 8 * (int)b[p]));
            _mm256_storeu_ps(o + 8 * p, v);
            if (p & 1) acc1 = _mm256_fmadd_ps(v, v, acc1); else acc0 = _mm256_fmadd_ps(v, v, acc0);
        }
    }
    return inverse_norm(acc0, acc1);
}

/// 2-bit and 1-bit codes (4 or 8 dims per byte): eight dims per step from one or two table rows.
__attribute__((target("avx2,fma")))
static void decode_avx2(const unsigned char *codes, int bpc, const unsigned char *ids,
                        const float *centroids, const float *expand, int per, int n, float *out, float *inv_norms) {
    int dim = bpc * per;
    for (int j = 1; j < CK_DECODE_AHEAD && j < n; j++) {
        const char *row = (const char *)(centroids + (long)load_u32le(ids + 4 * (long)j) * dim);
        for (int o = 0; o < dim * 4; o += 64) _mm_prefetch(row + o, _MM_HINT_T0);
    }
    for (int j = 0; j < n; j++) {
        const unsigned char *b = codes + (long)j * bpc;
        uint32_t cid = load_u32le(ids + 4 * (long)j);
        const float *c = centroids + (long)cid * dim;
        if (j + CK_DECODE_AHEAD < n) {
            // The centroid row of a token a few ahead, unless it is the one before it (tokens
            // come grouped by centroid): scattered rows of a table larger than L2 are the slow
            // part here, and one token's decoding is shorter than a miss.
            uint32_t next = load_u32le(ids + 4 * (long)(j + CK_DECODE_AHEAD));
            if (next != load_u32le(ids + 4 * (long)(j + CK_DECODE_AHEAD - 1))) {
                const char *row = (const char *)(centroids + (long)next * dim);
                for (int o = 0; o < dim * 4; o += 64) _mm_prefetch(row + o, _MM_HINT_T0);
            }
        }
        inv_norms[j] = decode_token_avx2(b, bpc, c, expand, per, out + (long)j * dim);
    }
}

/// One tile: 16 query rows (a packed block, dim x 16 floats) against 6 document rows. acc[2t]
/// and acc[2t + 1] get the dot products of token t with rows 0-7 and 8-15. Twelve accumulators,
/// two block loads and six broadcasts per dim: the FMAs, not the loads, set the pace, and no
/// horizontal sums are needed.
__attribute__((target("avx2,fma"), always_inline))
static inline void tile16x6(const float *p, const float *const *d, int dim, __m256 *acc) {
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0;
    __m256 a6 = a0, a7 = a0, a8 = a0, a9 = a0, a10 = a0, a11 = a0;
    const float *d0 = d[0], *d1 = d[1], *d2 = d[2], *d3 = d[3], *d4 = d[4], *d5 = d[5];
    for (int k = 0; k < dim; k++) {
        __m256 b0 = _mm256_loadu_ps(p + 16 * k), b1 = _mm256_loadu_ps(p + 16 * k + 8);
        __m256 x = _mm256_broadcast_ss(d0 + k);
        a0 = _mm256_fmadd_ps(x, b0, a0); a1 = _mm256_fmadd_ps(x, b1, a1);
        x = _mm256_broadcast_ss(d1 + k);
        a2 = _mm256_fmadd_ps(x, b0, a2); a3 = _mm256_fmadd_ps(x, b1, a3);
        x = _mm256_broadcast_ss(d2 + k);
        a4 = _mm256_fmadd_ps(x, b0, a4); a5 = _mm256_fmadd_ps(x, b1, a5);
        x = _mm256_broadcast_ss(d3 + k);
        a6 = _mm256_fmadd_ps(x, b0, a6); a7 = _mm256_fmadd_ps(x, b1, a7);
        x = _mm256_broadcast_ss(d4 + k);
        a8 = _mm256_fmadd_ps(x, b0, a8); a9 = _mm256_fmadd_ps(x, b1, a9);
        x = _mm256_broadcast_ss(d5 + k);
        a10 = _mm256_fmadd_ps(x, b0, a10); a11 = _mm256_fmadd_ps(x, b1, a11);
    }
    acc[0] = a0; acc[1] = a1; acc[2] = a2; acc[3] = a3; acc[4] = a4; acc[5] = a5;
    acc[6] = a6; acc[7] = a7; acc[8] = a8; acc[9] = a9; acc[10] = a10; acc[11] = a11;
}

/// The six document rows of the tile starting at token j; past the end, the last row repeats
/// (harmless for a maximum, and not stored by the score kernel).
static inline void tile_rows(const float *d, int j, int n, int dim, const float **rows) {
    for (int t = 0; t < 6; t++) rows[t] = d + (long)(j + t < n ? j + t : n - 1) * dim;
}

/* Both kernels walk the document rows once per group of two 16-row blocks (32 query rows, a
   16 KiB packed query that stays in L1) and give each 6-row tile to both blocks while it is in
   L1: a query of 32 rows reads the rows (e.g. 4 MiB of centroids) from memory once. */
enum { CK_GROUP = 2 };

__attribute__((target("avx2,fma")))
static void maxsim_packed_avx2(const float *packed, int rows, const float *d, int n, int dim, const float *scale,
                               float *rowmax) {
    int blocks = (rows + 15) / 16;
    for (int g = 0; g < blocks; g += CK_GROUP) {
        int gb = blocks - g < CK_GROUP ? blocks - g : CK_GROUP;
        float run[CK_GROUP][16];
        for (int b = 0; b < gb; b++) for (int r = 0; r < 16; r++) run[b][r] = -INFINITY;
        __m256 acc[12];
        const float *tr[6];
        for (int j = 0; j < n; j += 6) {
            tile_rows(d, j, n, dim, tr);
            for (int b = 0; b < gb; b++) {
                tile16x6(packed + (long)(g + b) * dim * 16, tr, dim, acc);
                if (scale)
                    for (int t = 0; t < 6; t++) {
                        __m256 f = _mm256_set1_ps(scale[j + t < n ? j + t : n - 1]);
                        acc[2 * t] = _mm256_mul_ps(acc[2 * t], f);
                        acc[2 * t + 1] = _mm256_mul_ps(acc[2 * t + 1], f);
                    }
                __m256 m0 = _mm256_max_ps(_mm256_max_ps(acc[0], acc[2]), _mm256_max_ps(acc[4], acc[6]));
                __m256 m1 = _mm256_max_ps(_mm256_max_ps(acc[1], acc[3]), _mm256_max_ps(acc[5], acc[7]));
                m0 = _mm256_max_ps(m0, _mm256_max_ps(acc[8], acc[10]));
                m1 = _mm256_max_ps(m1, _mm256_max_ps(acc[9], acc[11]));
                _mm256_storeu_ps(run[b], _mm256_max_ps(_mm256_loadu_ps(run[b]), m0));
                _mm256_storeu_ps(run[b] + 8, _mm256_max_ps(_mm256_loadu_ps(run[b] + 8), m1));
            }
        }
        for (int b = 0; b < gb; b++)
            for (int r = 0; r < 16 && (g + b) * 16 + r < rows; r++) rowmax[(g + b) * 16 + r] = run[b][r];
    }
}

/* out[r] = lane r of every in[c], i.e. the 8 x 8 block transposed. */
__attribute__((target("avx2,fma"), always_inline))
static inline void transpose8x8(const __m256 *in, __m256 *out) {
    __m256 t0 = _mm256_unpacklo_ps(in[0], in[1]), t1 = _mm256_unpackhi_ps(in[0], in[1]);
    __m256 t2 = _mm256_unpacklo_ps(in[2], in[3]), t3 = _mm256_unpackhi_ps(in[2], in[3]);
    __m256 t4 = _mm256_unpacklo_ps(in[4], in[5]), t5 = _mm256_unpackhi_ps(in[4], in[5]);
    __m256 t6 = _mm256_unpacklo_ps(in[6], in[7]), t7 = _mm256_unpackhi_ps(in[6], in[7]);
    __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE);
    __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE);
    __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xEE);
    __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xEE);
    out[0] = _mm256_permute2f128_ps(u0, u4, 0x20);
    out[1] = _mm256_permute2f128_ps(u1, u5, 0x20);
    out[2] = _mm256_permute2f128_ps(u2, u6, 0x20);
    out[3] = _mm256_permute2f128_ps(u3, u7, 0x20);
    out[4] = _mm256_permute2f128_ps(u0, u4, 0x31);
    out[5] = _mm256_permute2f128_ps(u1, u5, 0x31);
    out[6] = _mm256_permute2f128_ps(u2, u6, 0x31);
    out[7] = _mm256_permute2f128_ps(u3, u7, 0x31);
}

#ifndef CK_SHORT_ROW
#define CK_SHORT_ROW 256
#endif

__attribute__((target("avx2,fma")))
static void scores_packed_avx2(const float *packed, int rows, const float *d, int n, int dim, float *out, long ldo,
                               int accumulate) {
    int blocks = (rows + 15) / 16;
    for (int g = 0; g < blocks; g += CK_GROUP) {
        int gb = blocks - g < CK_GROUP ? blocks - g : CK_GROUP;
        __m256 acc[12];
        float tile[6][16];
        const float *tr[6];
        for (int j = 0; j < n; j += 6) {
            tile_rows(d, j, n, dim, tr);
            int cols = n - j < 6 ? n - j : 6;
            /* The first two lines of the next tile's rows: each row is a new stream for the
               hardware prefetcher, which would otherwise start it with a miss (a query's Linear
               layers read 42 MB of weights from memory: +10% in a one-thread probe; 4 or 8
               lines did no better). */
            if (dim <= CK_SHORT_ROW) {
                /* Short rows (a centroid table, read once per query from memory): the whole
                   rows of the tile after next, which are contiguous. */
                if (j + 18 <= n) {
                    const char *rows = (const char *)(d + (long)(j + 12) * dim);
                    for (long o = 0; o < 6L * dim * 4; o += 64) _mm_prefetch(rows + o, _MM_HINT_T0);
                }
            } else if (j + 12 <= n)
                for (int t = 0; t < 6; t++) {
                    const char *row = (const char *)(d + (long)(j + 6 + t) * dim);
                    _mm_prefetch(row, _MM_HINT_T0);
                    _mm_prefetch(row + 64, _MM_HINT_T0);
                }
            for (int b = 0; b < gb; b++) {
                int block = g + b;
                int live = rows - block * 16 < 16 ? rows - block * 16 : 16;
                tile16x6(packed + (long)block * dim * 16, tr, dim, acc);
                if (j + 8 <= n) {
                    /* Rows out of the 6 column vectors by 8 x 8 transposes (two zero columns), one
                       8-wide store per row. Lanes 6 and 7 land on the next tile's columns, inside
                       this call's range: they get 0 (or += 0) and the next tile writes them. */
                    for (int h = 0; h < 2; h++) {
                        const __m256 z = _mm256_setzero_ps();
                        __m256 cols[8] = { acc[h], acc[h + 2], acc[h + 4], acc[h + 6], acc[h + 8], acc[h + 10], z, z };
                        __m256 rowv[8];
                        transpose8x8(cols, rowv);
                        int rows8 = live - 8 * h < 8 ? live - 8 * h : 8;
                        float *o = out + (long)(block * 16 + 8 * h) * ldo + j;
                        for (int r = 0; r < rows8; r++) {
                            __m256 v = accumulate ? _mm256_add_ps(_mm256_loadu_ps(o + (long)r * ldo), rowv[r]) : rowv[r];
                            _mm256_storeu_ps(o + (long)r * ldo, v);
                        }
                    }
                    continue;
                }
                for (int t = 0; t < 6; t++) {
                    _mm256_storeu_ps(tile[t], acc[2 * t]);
                    _mm256_storeu_ps(tile[t] + 8, acc[2 * t + 1]);
                }
                for (int r = 0; r < live; r++) {
                    float *o = out + (long)(block * 16 + r) * ldo + j;
                    if (accumulate) for (int t = 0; t < cols; t++) o[t] += tile[t][r];
                    else for (int t = 0; t < cols; t++) o[t] = tile[t][r];
                }
            }
        }
    }
}

/* Tokens decoded per call of the tile loop in maxsim_runs_avx2: seven 6-row tiles, at most
   43 KB at 256 dims, beside the 16 KB packed query. */
#define CK_RUN_BLOCK 42
#define CK_RUN_MAX_DIM 256
#ifndef CK_RUN_ROWS_AHEAD
#define CK_RUN_ROWS_AHEAD 8
#endif

/* The tiles of maxsim_packed_avx2 over a block of decoded tokens that belong to different
   documents: each token's 16-row columns are scaled by its inverse norm and raised into its
   owner's row of maxima. The same products, scaling and maxima as document by document. */
__attribute__((target("avx2,fma")))
static void maxsim_block_scatter(const float *packed, int rows, const float *d, int n, int dim, const float *scale,
                                 const int *owner, float *rowmax, long ldr) {
    int blocks = (rows + 15) / 16;
    __m256 acc[12];
    const float *tr[6];
    for (int j = 0; j < n; j += 6) {
        tile_rows(d, j, n, dim, tr);
        int cols = n - j < 6 ? n - j : 6;
        for (int b = 0; b < blocks; b++) {
            tile16x6(packed + (long)b * dim * 16, tr, dim, acc);
            for (int t = 0; t < cols; t++) {
                __m256 f = _mm256_set1_ps(scale[j + t]);
                float *m = rowmax + (long)owner[j + t] * ldr + 16 * b;
                _mm256_storeu_ps(m, _mm256_max_ps(_mm256_loadu_ps(m), _mm256_mul_ps(acc[2 * t], f)));
                _mm256_storeu_ps(m + 8, _mm256_max_ps(_mm256_loadu_ps(m + 8), _mm256_mul_ps(acc[2 * t + 1], f)));
            }
        }
    }
}

__attribute__((target("avx2,fma")))
static void maxsim_runs_avx2(const float *packed, int rows, const ck_token_run *runs, long nruns, int bpc, int per,
                             const float *centroids, const float *expand, float *rowmax, long ldr) {
    const int dim = bpc * per;
    float block[CK_RUN_BLOCK * CK_RUN_MAX_DIM] __attribute__((aligned(32)));
    float inv[CK_RUN_BLOCK];
    int owner[CK_RUN_BLOCK];
    int filled = 0;
    for (long r = 0; r < nruns; r++) {
        /* Runs come in centroid order, so the centroid rows are read forward; their codes lie
           in many places of the map. */
        if (r + 8 < nruns) {
            const unsigned char *ahead = runs[r + 8].codes;
            _mm_prefetch((const char *)ahead, _MM_HINT_T0);
            _mm_prefetch((const char *)ahead + (long)runs[r + 8].count * bpc - 1, _MM_HINT_T0);
        }
        /* Centroid rows are read forward but with gaps, which the hardware prefetcher does not
           follow: a new row is asked for a few runs ahead. */
        if (r + CK_RUN_ROWS_AHEAD < nruns && runs[r + CK_RUN_ROWS_AHEAD].centroid != runs[r + CK_RUN_ROWS_AHEAD - 1].centroid) {
            const char *row = (const char *)(centroids + (long)runs[r + CK_RUN_ROWS_AHEAD].centroid * dim);
            for (int o = 0; o < dim * 4; o += 64) _mm_prefetch(row + o, _MM_HINT_T0);
        }
        const ck_token_run run = runs[r];
        const float *c = centroids + (long)run.centroid * dim;
        for (int t = 0; t < run.count; t++) {
            inv[filled] = decode_token_avx2(run.codes + (long)t * bpc, bpc, c, expand, per, block + (long)filled * dim);
            owner[filled] = run.owner;
            if (++filled == CK_RUN_BLOCK) {
                maxsim_block_scatter(packed, rows, block, filled, dim, inv, owner, rowmax, ldr);
                filled = 0;
            }
        }
    }
    if (filled > 0) maxsim_block_scatter(packed, rows, block, filled, dim, inv, owner, rowmax, ldr);
}

static int avx2_state = -1;

int ck_uses_avx2(void) {
    int s = __atomic_load_n(&avx2_state, __ATOMIC_RELAXED);
    if (s < 0) {
        __builtin_cpu_init();
        const char *off = getenv("COLBERT_NO_AVX2");
        int disabled = off != NULL && off[0] != '\0' && strcmp(off, "0") != 0;
        s = !disabled && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") ? 1 : 0;
        __atomic_store_n(&avx2_state, s, __ATOMIC_RELAXED);
    }
    return s;
}

const char *ck_blas_core_for_cpu(void) {
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512cd") &&
        __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq") &&
        __builtin_cpu_supports("avx512vl")) return "SkylakeX";
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return "Haswell";
    return NULL;
}
#else
int ck_uses_avx2(void) { return 0; }
const char *ck_blas_core_for_cpu(void) { return NULL; }
#endif

#ifdef CK_X86
/* Whether decode_token_avx2 handles this code width (and the CPU runs it). */
static int decode_avx2_fits(int bytes_per_code, int per) {
    return ((per == 4 && bytes_per_code % 2 == 0) || per == 8) && ck_uses_avx2();
}
#endif

int ck_maxsim_runs_available(int bytes_per_code, int per) {
#ifdef CK_X86
    return bytes_per_code * per <= CK_RUN_MAX_DIM && decode_avx2_fits(bytes_per_code, per);
#else
    (void)bytes_per_code; (void)per;
    return 0;
#endif
}

int ck_maxsim_runs(const float *packed, int rows, const ck_token_run *runs, long nruns, int bytes_per_code, int per,
                   const float *centroids, const float *expand, float *rowmax, long ldr) {
    if (!ck_maxsim_runs_available(bytes_per_code, per)) return 0;
#ifdef CK_X86
    if (rows > 0) maxsim_runs_avx2(packed, rows, runs, nruns, bytes_per_code, per, centroids, expand, rowmax, ldr);
#else
    (void)packed; (void)rows; (void)runs; (void)nruns; (void)centroids; (void)expand; (void)rowmax; (void)ldr;
#endif
    return 1;
}

void ck_decode_residuals(const unsigned char *codes, int bytes_per_code, const unsigned char *centroid_ids,
                         const float *centroids, const float *expand, int per, int n, float *out, float *inv_norms) {
    if (n <= 0 || bytes_per_code <= 0) return;
#ifdef CK_X86
    if (decode_avx2_fits(bytes_per_code, per)) {
        decode_avx2(codes, bytes_per_code, centroid_ids, centroids, expand, per, n, out, inv_norms);
        return;
    }
#endif
    ck_decode_residuals_portable(codes, bytes_per_code, centroid_ids, centroids, expand, per, n, out, inv_norms);
}

/* Residual value of dimension d: its bucket sits in byte d * nbits / 8, lowest dimension in the
   highest bits. */
static inline float residual_at(const unsigned char *b, int nbits, const float *weights, int d) {
    int bit = d * nbits;
    return weights[(b[bit >> 3] >> (8 - nbits - (bit & 7))) & ((1 << nbits) - 1)];
}

void ck_cluster_scores_portable(const unsigned char *codes, int bpc, int nbits, int n, const float *weights,
                                const float *centroid, const float *const *queries, const float *bases, int m,
                                int normalise, float *out, long ldo) {
    int dim = bpc * 8 / nbits;
    for (int t = 0; t < n; t++) {
        const unsigned char *b = codes + (long)t * bpc;
        float inv = 1;
        if (normalise) {
            float s0 = 0, s1 = 0;
            for (int d = 0; d < dim; d++) {
                float v = centroid[d] + residual_at(b, nbits, weights, d);
                if (d & 1) s1 += v * v; else s0 += v * v;
            }
            inv = inverse_of_norm(s0 + s1);
        }
        for (int i = 0; i < m; i++) {
            const float *q = queries[i];
            float s0 = 0, s1 = 0;
            for (int d = 0; d < dim; d++) {
                float r = residual_at(b, nbits, weights, d);
                float v = (normalise ? centroid[d] + r : r) * q[d];
                if (d & 1) s1 += v; else s0 += v;
            }
            out[(long)i * ldo + t] = normalise ? (s0 + s1) * inv : bases[i] + (s0 + s1);
        }
    }
}

#ifdef CK_X86
#define CK_CLUSTER_MAX_DIM 256
/* One token's residual (plus the centroid, and its squared norm into acc0/acc1, when NORM) into
   o, eight dims per step. Whole 16-byte chunks of the code are read in place; a shorter last
   chunk is copied to `spare` first so nothing past the code is read. */
__attribute__((target("avx2,fma"), always_inline))
static inline void decode_steps(const unsigned char *b, int bpc, const int NB, const int NORM, unsigned char *spare,
                                const __m256i *ctrl, __m256i shifts, __m256i mask, __m256 wlo, __m256 whi,
                                const float *centroid, float *o, __m256 *acc0, __m256 *acc1) {
    int step = 0;
    for (int c16 = 0; c16 < bpc; c16 += 16) {
        __m128i chunk;
        int here;
        if (bpc - c16 >= 16) {
            chunk = _mm_loadu_si128((const __m128i *)(b + c16));
            here = 16 / NB;
        } else {
            memcpy(spare, b + c16, (size_t)(bpc - c16));
            chunk = _mm_loadu_si128((const __m128i *)spare);
            here = (bpc - c16) / NB;
        }
        __m256i src = _mm256_broadcastsi128_si256(chunk);
        for (int s = 0; s < here; s++, step++) {
            __m256i idx = _mm256_and_si256(_mm256_srlv_epi32(_mm256_shuffle_epi8(src, ctrl[s]), shifts), mask);
            __m256 x = _mm256_permutevar8x32_ps(wlo, idx);
            if (NB == 4)
                x = _mm256_blendv_ps(x, _mm256_permutevar8x32_ps(whi, idx), _mm256_castsi256_ps(_mm256_slli_epi32(idx, 28)));
            if (NORM) {
                x = _mm256_add_ps(x, _mm256_loadu_ps(centroid + 8 * step));
                if (step & 1) *acc1 = _mm256_fmadd_ps(x, x, *acc1); else *acc0 = _mm256_fmadd_ps(x, x, *acc0);
            }
            _mm256_store_ps(o + 8 * step, x);
        }
    }
}

/* Eight tokens at a time: decompressed into an 8-row block that stays in L1, then each query
   row's dot products with the eight, by eight accumulators reduced together into one vector.
   A token's eight dims per step come from its code bytes without a table in memory: PSHUFB puts
   the step's bytes in every lane, a per-lane shift and mask give each lane's bucket, VPERMPS
   picks the bucket's weight. Rows past the end are zero, so every token's sum takes the same
   instructions wherever it sits in a block. */
__attribute__((target("avx2,fma")))
static void cluster_scores_avx2(const unsigned char *codes, int bpc, int nbits, int n, const float *weights,
                                const float *centroid, const float *const *queries, const float *bases, int m,
                                int normalise, float *out, long ldo) {
    const int per = 8 / nbits, dim = bpc * per, bps = nbits; /* bytes per 8-dim step */
    float block[8 * CK_CLUSTER_MAX_DIM] __attribute__((aligned(32)));
    float inv[8] __attribute__((aligned(32)));
    unsigned char spare[16] = { 0 }; /* a code's last chunk when shorter than 16 bytes */
    int shift[8];
    for (int j = 0; j < 8; j++) shift[j] = 8 * (j / per) + 8 - nbits * (j % per + 1);
    const __m256i shifts = _mm256_loadu_si256((const __m256i *)shift);
    const __m256i mask = _mm256_set1_epi32((1 << nbits) - 1);
    float w16[16] = { 0 };
    for (int j = 0; j < (1 << nbits); j++) w16[j] = weights[j];
    const __m256 wlo = _mm256_loadu_ps(w16), whi = _mm256_loadu_ps(w16 + 8);
    /* ctrl[s]: the bytes of step s of a 16-byte chunk into the low bytes of every 32-bit lane. */
    __m256i ctrl[16];
    for (int s = 0; s < 16 / bps; s++) {
        unsigned char c[32];
        for (int k = 0; k < 32; k++) c[k] = (k & 3) < bps ? (unsigned char)(s * bps + (k & 3)) : 0x80;
        ctrl[s] = _mm256_loadu_si256((const __m256i *)c);
    }
    const long total = (long)n * bpc;
    for (long o = 0; o < 16 * (long)bpc && o < total; o += 64) _mm_prefetch((const char *)codes + o, _MM_HINT_T0);
    for (int t0 = 0; t0 < n; t0 += 8) {
        int live = n - t0 < 8 ? n - t0 : 8;
        /* The block after next: a cluster's codes are one short stream each, which the hardware
           prefetcher picks up too late (the loads of each block's first token stalled). */
        for (long o = (long)(t0 + 16) * bpc; o < (long)(t0 + 24) * bpc && o < total; o += 64)
            _mm_prefetch((const char *)codes + o, _MM_HINT_T0);
        for (int r = 0; r < 8; r++) {
            float *o = block + r * dim;
            if (r >= live) {
                memset(o, 0, sizeof(float) * (size_t)dim);
                inv[r] = 0;
                continue;
            }
            const unsigned char *b = codes + (long)(t0 + r) * bpc;
            __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
            /* Specialised for the code width and the mode, so that the common case (2 bits, 32
               bytes) runs as straight-line code. */
            if (nbits == 2 && !normalise)
                decode_steps(b, bpc, 2, 0, spare, ctrl, shifts, mask, wlo, whi, centroid, o, &acc0, &acc1);
            else if (nbits == 2)
                decode_steps(b, bpc, 2, 1, spare, ctrl, shifts, mask, wlo, whi, centroid, o, &acc0, &acc1);
            else if (nbits == 1 && !normalise)
                decode_steps(b, bpc, 1, 0, spare, ctrl, shifts, mask, wlo, whi, centroid, o, &acc0, &acc1);
            else if (nbits == 1)
                decode_steps(b, bpc, 1, 1, spare, ctrl, shifts, mask, wlo, whi, centroid, o, &acc0, &acc1);
            else if (!normalise)
                decode_steps(b, bpc, 4, 0, spare, ctrl, shifts, mask, wlo, whi, centroid, o, &acc0, &acc1);
            else
                decode_steps(b, bpc, 4, 1, spare, ctrl, shifts, mask, wlo, whi, centroid, o, &acc0, &acc1);
            if (normalise) inv[r] = inverse_norm(acc0, acc1);
        }
        __m256 scale = _mm256_load_ps(inv);
        for (int i = 0; i < m; i++) {
            const float *q = queries[i];
            __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0;
            for (int k = 0; k < dim; k += 8) {
                __m256 qk = _mm256_loadu_ps(q + k);
                a0 = _mm256_fmadd_ps(_mm256_load_ps(block + k), qk, a0);
                a1 = _mm256_fmadd_ps(_mm256_load_ps(block + dim + k), qk, a1);
                a2 = _mm256_fmadd_ps(_mm256_load_ps(block + 2 * dim + k), qk, a2);
                a3 = _mm256_fmadd_ps(_mm256_load_ps(block + 3 * dim + k), qk, a3);
                a4 = _mm256_fmadd_ps(_mm256_load_ps(block + 4 * dim + k), qk, a4);
                a5 = _mm256_fmadd_ps(_mm256_load_ps(block + 5 * dim + k), qk, a5);
                a6 = _mm256_fmadd_ps(_mm256_load_ps(block + 6 * dim + k), qk, a6);
                a7 = _mm256_fmadd_ps(_mm256_load_ps(block + 7 * dim + k), qk, a7);
            }
            /* Lane r of the result is the sum of a_r's eight lanes. */
            __m256 h01 = _mm256_hadd_ps(a0, a1), h23 = _mm256_hadd_ps(a2, a3);
            __m256 h45 = _mm256_hadd_ps(a4, a5), h67 = _mm256_hadd_ps(a6, a7);
            __m256 q03 = _mm256_hadd_ps(h01, h23), q47 = _mm256_hadd_ps(h45, h67);
            __m256 sums = _mm256_add_ps(_mm256_permute2f128_ps(q03, q47, 0x20), _mm256_permute2f128_ps(q03, q47, 0x31));
            sums = normalise ? _mm256_mul_ps(sums, scale) : _mm256_add_ps(_mm256_set1_ps(bases[i]), sums);
            float *o = out + (long)i * ldo + t0;
            if (live == 8) {
                _mm256_storeu_ps(o, sums);
            } else {
                float tmp[8];
                _mm256_storeu_ps(tmp, sums);
                for (int r = 0; r < live; r++) o[r] = tmp[r];
            }
        }
    }
}
#endif

void ck_cluster_scores(const unsigned char *codes, int bytes_per_code, int nbits, int n, const float *weights,
                       const float *centroid, const float *const *queries, const float *bases, int m,
                       int normalise, float *out, long ldo) {
    if (n <= 0 || m <= 0 || bytes_per_code <= 0 || !(nbits == 1 || nbits == 2 || nbits == 4)) return;
#ifdef CK_X86
    int dim = bytes_per_code * 8 / nbits;
    if (bytes_per_code % nbits == 0 && dim <= CK_CLUSTER_MAX_DIM && ck_uses_avx2()) {
        cluster_scores_avx2(codes, bytes_per_code, nbits, n, weights, centroid, queries, bases, m, normalise, out, ldo);
        return;
    }
#endif
    ck_cluster_scores_portable(codes, bytes_per_code, nbits, n, weights, centroid, queries, bases, m, normalise, out, ldo);
}



/* ---- Fast-scan residual scores (8-bit lookup tables over code nibbles) ---- */

int ck_fastscan_available(int bytes_per_code) {
    return bytes_per_code > 0 && bytes_per_code % 32 == 0 && bytes_per_code <= CK_FASTSCAN_MAX_BYTES;
}

long ck_fastscan_table_bytes(int bytes_per_code) { return (long)bytes_per_code * 32; }

/* Where the 16 entries of nibble h (0: high, 1: low) of code byte `byte` sit in a table: chunk
   of 32 code bytes, then the byte's place in its 16-byte half, then h, then the half. One 32-byte
   row is what the AVX2 loop hands to VPSHUFB: the same nibble of bytes b and b + 16. */
static inline long fastscan_entry(int byte, int h) {
    int chunk = byte / 32, in = byte % 32;
    return (((long)chunk * 16 + in % 16) * 2 + h) * 32 + (in / 16) * 16;
}

void ck_fastscan_tables(const float *q, int bytes_per_code, int nbits, const float *weights, unsigned char *tables,
                        float *scale, float *offset) {
    const int per = 4 / nbits;          /* dims per nibble */
    const int nibbles = 2 * bytes_per_code;
    const int buckets = 1 << nbits;
    float entry[2 * CK_FASTSCAN_MAX_BYTES * 16], lowest[2 * CK_FASTSCAN_MAX_BYTES];
    float range = 0;
    for (int p = 0; p < nibbles; p++) {
        /* prod[j][k]: dim j of the nibble times bucket k's value. */
        float prod[4][16];
        for (int j = 0; j < per; j++)
            for (int k = 0; k < buckets; k++) prod[j][k] = q[p * per + j] * weights[k];
        float *e = entry + 16 * p, lo = INFINITY, hi = -INFINITY;
        if (nbits == 2) {
            /* The common case in a form the compiler vectorises: high bits pick dim 0's bucket. */
            for (int a = 0; a < 4; a++)
                for (int b = 0; b < 4; b++) e[4 * a + b] = prod[0][a] + prod[1][b];
        } else {
            for (int v = 0; v < 16; v++) {
                float s = 0;
                for (int j = 0; j < per; j++) s += prod[j][(v >> (4 - nbits * (j + 1))) & (buckets - 1)];
                e[v] = s;
            }
        }
        for (int v = 0; v < 16; v++) {
            lo = e[v] < lo ? e[v] : lo;
            hi = e[v] > hi ? e[v] : hi;
        }
        lowest[p] = lo;
        if (hi - lo > range) range = hi - lo;
    }
    /* 255 steps (one byte). With 127, which would let the two nibbles of a byte be added as
       bytes, SciFact's recall@10 against exhaustive fell from 0.9923 to 0.9917. */
    float step = range > 0 ? range / 255 : 1, inv = 1 / step;
    double base = 0;
    for (int p = 0; p < nibbles; p++) {
        unsigned char *t = tables + fastscan_entry(p / 2, p % 2);
        for (int v = 0; v < 16; v++) {
            /* Clamped as a float: converting one out of int range (or NaN) would be undefined. */
            float u = (entry[16 * p + v] - lowest[p]) * inv + 0.5f;
            t[v] = (unsigned char)(u >= 255 ? 255 : u > 0 ? (int)u : 0);
        }
        base += lowest[p];
    }
    *scale = step;
    *offset = (float)base;
}

void ck_fastscan_scores_portable(const unsigned char *codes, int bytes_per_code, int n,
                                 const unsigned char *const *tables, const float *scales, const float *bases, int m,
                                 float *out, long ldo) {
    for (int t = 0; t < n; t++) {
        const unsigned char *b = codes + (long)t * bytes_per_code;
        for (int i = 0; i < m; i++) {
            const unsigned char *tq = tables[i];
            unsigned sum = 0;
            for (int k = 0; k < bytes_per_code; k++)
                sum += tq[fastscan_entry(k, 0) + (b[k] >> 4)] + tq[fastscan_entry(k, 1) + (b[k] & 15)];
            out[(long)i * ldo + t] = fmaf(scales[i], (float)sum, bases[i]);
        }
    }
}

#ifdef CK_X86
/* Sixteen tokens at a time. Their codes are transposed in registers (four rounds of unpacks
   within each 128-bit half), so that one vector holds code byte b of all sixteen tokens in its
   low half and byte b + 16 in its high half; each nibble position is then one VPSHUFB into its
   table for all sixteen tokens. The looked-up bytes of even and odd tokens are summed in one pair
   of sixteen-bit accumulators: `all` adds them as words (even + 256 * odd), `odd` the high bytes,
   and all - 256 * odd is the even tokens' sum modulo 2^16, which is exact because no sum reaches
   2^16 (255 * 2 * 128 bytes at most). */
__attribute__((target("avx2,fma")))
static void fastscan_scores_avx2(const unsigned char *codes, int bpc, int n, const unsigned char *const *tables,
                                 const float *scales, const float *bases, int m, float *out, long ldo) {
    const int chunks = bpc / 32;
    const __m256i low4 = _mm256_set1_epi8(0x0F);
    unsigned char tail[16 * CK_FASTSCAN_MAX_BYTES] __attribute__((aligned(32)));
    __m256i nib[2 * 16 * (CK_FASTSCAN_MAX_BYTES / 32)]; /* per chunk and byte: high nibbles, low nibbles */
    for (int t0 = 0; t0 < n; t0 += 16) {
        int live = n - t0 < 16 ? n - t0 : 16;
        const unsigned char *src = codes + (long)t0 * bpc;
        if (live < 16) {
            memset(tail, 0, (size_t)16 * (size_t)bpc);
            memcpy(tail, src, (size_t)live * (size_t)bpc);
            src = tail;
        } else {
            /* The block after next (see cluster_scores_avx2). */
            long ahead = (long)(t0 + 32) * bpc, end = (long)n * bpc;
            for (long o = ahead; o < ahead + 16L * bpc && o < end; o += 64) _mm_prefetch((const char *)codes + o, _MM_HINT_T0);
        }
        for (int c = 0; c < chunks; c++) {
            __m256i r[16], a[16];
            for (int t = 0; t < 16; t++) r[t] = _mm256_loadu_si256((const __m256i *)(src + (long)t * bpc + 32 * c));
            for (int k = 0; k < 8; k++) {
                a[k] = _mm256_unpacklo_epi8(r[2 * k], r[2 * k + 1]);     /* token pair k, bytes 0-7 */
                a[8 + k] = _mm256_unpackhi_epi8(r[2 * k], r[2 * k + 1]); /* token pair k, bytes 8-15 */
            }
            for (int h = 0; h < 2; h++)
                for (int k = 0; k < 4; k++) {
                    r[8 * h + k] = _mm256_unpacklo_epi16(a[8 * h + 2 * k], a[8 * h + 2 * k + 1]);     /* quad k, bytes 8h + 0-3 */
                    r[8 * h + 4 + k] = _mm256_unpackhi_epi16(a[8 * h + 2 * k], a[8 * h + 2 * k + 1]); /* quad k, bytes 8h + 4-7 */
                }
            for (int j = 0; j < 4; j++)
                for (int k = 0; k < 2; k++) {
                    a[4 * j + k] = _mm256_unpacklo_epi32(r[4 * j + 2 * k], r[4 * j + 2 * k + 1]);     /* octet k, bytes 4j, 4j + 1 */
                    a[4 * j + 2 + k] = _mm256_unpackhi_epi32(r[4 * j + 2 * k], r[4 * j + 2 * k + 1]); /* octet k, bytes 4j + 2, 4j + 3 */
                }
            __m256i *nb = nib + 32 * c;
            for (int i = 0; i < 8; i++) {
                __m256i b0 = _mm256_unpacklo_epi64(a[2 * i], a[2 * i + 1]); /* byte 2i of the 16 tokens */
                __m256i b1 = _mm256_unpackhi_epi64(a[2 * i], a[2 * i + 1]); /* byte 2i + 1 */
                nb[4 * i] = _mm256_and_si256(_mm256_srli_epi16(b0, 4), low4);
                nb[4 * i + 1] = _mm256_and_si256(b0, low4);
                nb[4 * i + 2] = _mm256_and_si256(_mm256_srli_epi16(b1, 4), low4);
                nb[4 * i + 3] = _mm256_and_si256(b1, low4);
            }
        }
        for (int i = 0; i < m; i++) {
            const __m256i *tq = (const __m256i *)tables[i];
            __m256i all = _mm256_setzero_si256(), odd = all;
            for (int s = 0; s < 16 * chunks; s++) {
                __m256i x = _mm256_shuffle_epi8(_mm256_loadu_si256(tq + 2 * s), nib[2 * s]);
                __m256i y = _mm256_shuffle_epi8(_mm256_loadu_si256(tq + 2 * s + 1), nib[2 * s + 1]);
                all = _mm256_add_epi16(all, _mm256_add_epi16(x, y));
                odd = _mm256_add_epi16(odd, _mm256_add_epi16(_mm256_srli_epi16(x, 8), _mm256_srli_epi16(y, 8)));
            }
            __m256i even = _mm256_sub_epi16(all, _mm256_slli_epi16(odd, 8));
            /* Each half holds its bytes' part of the sums: add the halves. */
            __m128i e = _mm_add_epi16(_mm256_castsi256_si128(even), _mm256_extracti128_si256(even, 1));
            __m128i o = _mm_add_epi16(_mm256_castsi256_si128(odd), _mm256_extracti128_si256(odd, 1));
            __m256 sc = _mm256_set1_ps(scales[i]), bs = _mm256_set1_ps(bases[i]);
            __m256 s0 = _mm256_fmadd_ps(sc, _mm256_cvtepi32_ps(_mm256_cvtepu16_epi32(_mm_unpacklo_epi16(e, o))), bs);
            __m256 s1 = _mm256_fmadd_ps(sc, _mm256_cvtepi32_ps(_mm256_cvtepu16_epi32(_mm_unpackhi_epi16(e, o))), bs);
            float *dst = out + (long)i * ldo + t0;
            if (live == 16) {
                _mm256_storeu_ps(dst, s0);
                _mm256_storeu_ps(dst + 8, s1);
            } else {
                float tmp[16];
                _mm256_storeu_ps(tmp, s0);
                _mm256_storeu_ps(tmp + 8, s1);
                for (int r = 0; r < live; r++) dst[r] = tmp[r];
            }
        }
    }
}
#endif

void ck_fastscan_scores(const unsigned char *codes, int bytes_per_code, int n, const unsigned char *const *tables,
                        const float *scales, const float *bases, int m, float *out, long ldo) {
    if (n <= 0 || m <= 0 || !ck_fastscan_available(bytes_per_code)) return;
#ifdef CK_X86
    if (ck_uses_avx2()) {
        fastscan_scores_avx2(codes, bytes_per_code, n, tables, scales, bases, m, out, ldo);
        return;
    }
#endif
    ck_fastscan_scores_portable(codes, bytes_per_code, n, tables, scales, bases, m, out, ldo);
}


float ck_half_to_float(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1F, man = h & 0x3FF, bits;
    if (exp == 0x1F) {
        bits = sign | 0x7F800000u | (man << 13);
    } else if (exp != 0) {
        bits = sign | ((exp + 112) << 23) | (man << 13);
    } else if (man == 0) {
        bits = sign;
    } else {
        /* Subnormal: shift the mantissa up to an implicit leading one. */
        int e = -1;
        do { man <<= 1; e++; } while ((man & 0x400) == 0);
        bits = sign | ((uint32_t)(112 - e) << 23) | ((man & 0x3FF) << 13);
    }
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

void ck_dot_rows_f16_portable(const float *const *queries, int m, const uint16_t *rows, int n, int dim, float *const *outs) {
    for (int t = 0; t < m; t++) {
        const float *q = queries[t];
        for (int r = 0; r < n; r++) {
            const uint16_t *row = rows + (long)r * dim;
            float acc = 0;
            for (int d = 0; d < dim; d++) acc += q[d] * ck_half_to_float(row[d]);
            outs[t][r] = acc;
        }
    }
}

#ifdef CK_X86
static int f16c_state = -1;

static int uses_f16c(void) {
    int s = __atomic_load_n(&f16c_state, __ATOMIC_RELAXED);
    if (s < 0) {
        __builtin_cpu_init();
        s = ck_uses_avx2() && __builtin_cpu_supports("f16c") ? 1 : 0;
        __atomic_store_n(&f16c_state, s, __ATOMIC_RELAXED);
    }
    return s;
}

/* The four lane sums of a, b, c, d. */
__attribute__((target("avx2,fma"), always_inline))
static inline __m128 hsum4(__m256 a, __m256 b, __m256 c, __m256 d) {
    __m256 ab = _mm256_hadd_ps(a, b), cd = _mm256_hadd_ps(c, d);
    __m256 abcd = _mm256_hadd_ps(ab, cd);
    return _mm_add_ps(_mm256_castps256_ps128(abcd), _mm256_extractf128_ps(abcd, 1));
}

__attribute__((target("avx2,fma,f16c"), always_inline))
static inline __m256 load_half8(const uint16_t *p) { return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p)); }

/* Two query rows by four block rows per step: each widened row feeds two FMAs. */
__attribute__((target("avx2,fma,f16c")))
static void dot_rows_f16_avx2(const float *const *queries, int m, const uint16_t *rows, int n, int dim, float *const *outs) {
    int t = 0;
    for (; t + 2 <= m; t += 2) {
        const float *q0 = queries[t], *q1 = queries[t + 1];
        float *o0 = outs[t], *o1 = outs[t + 1];
        int r = 0;
        for (; r + 4 <= n; r += 4) {
            const uint16_t *r0 = rows + (long)r * dim, *r1 = r0 + dim, *r2 = r1 + dim, *r3 = r2 + dim;
            __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, b0 = a0, b1 = a0, b2 = a0, b3 = a0;
            for (int d = 0; d < dim; d += 8) {
                __m256 x0 = _mm256_loadu_ps(q0 + d), x1 = _mm256_loadu_ps(q1 + d);
                __m256 y = load_half8(r0 + d);
                a0 = _mm256_fmadd_ps(x0, y, a0); b0 = _mm256_fmadd_ps(x1, y, b0);
                y = load_half8(r1 + d);
                a1 = _mm256_fmadd_ps(x0, y, a1); b1 = _mm256_fmadd_ps(x1, y, b1);
                y = load_half8(r2 + d);
                a2 = _mm256_fmadd_ps(x0, y, a2); b2 = _mm256_fmadd_ps(x1, y, b2);
                y = load_half8(r3 + d);
                a3 = _mm256_fmadd_ps(x0, y, a3); b3 = _mm256_fmadd_ps(x1, y, b3);
            }
            _mm_storeu_ps(o0 + r, hsum4(a0, a1, a2, a3));
            _mm_storeu_ps(o1 + r, hsum4(b0, b1, b2, b3));
        }
        for (; r < n; r++) {
            const uint16_t *row = rows + (long)r * dim;
            __m256 a = _mm256_setzero_ps(), b = a, z = a;
            for (int d = 0; d < dim; d += 8) {
                __m256 y = load_half8(row + d);
                a = _mm256_fmadd_ps(_mm256_loadu_ps(q0 + d), y, a);
                b = _mm256_fmadd_ps(_mm256_loadu_ps(q1 + d), y, b);
            }
            __m128 s = hsum4(a, b, z, z);
            o0[r] = _mm_cvtss_f32(s);
            o1[r] = _mm_cvtss_f32(_mm_shuffle_ps(s, s, 1));
        }
    }
    for (; t < m; t++) {
        const float *q0 = queries[t];
        float *o0 = outs[t];
        int r = 0;
        for (; r + 4 <= n; r += 4) {
            const uint16_t *r0 = rows + (long)r * dim, *r1 = r0 + dim, *r2 = r1 + dim, *r3 = r2 + dim;
            __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
            for (int d = 0; d < dim; d += 8) {
                __m256 x0 = _mm256_loadu_ps(q0 + d);
                a0 = _mm256_fmadd_ps(x0, load_half8(r0 + d), a0);
                a1 = _mm256_fmadd_ps(x0, load_half8(r1 + d), a1);
                a2 = _mm256_fmadd_ps(x0, load_half8(r2 + d), a2);
                a3 = _mm256_fmadd_ps(x0, load_half8(r3 + d), a3);
            }
            _mm_storeu_ps(o0 + r, hsum4(a0, a1, a2, a3));
        }
        for (; r < n; r++) {
            const uint16_t *row = rows + (long)r * dim;
            __m256 a = _mm256_setzero_ps(), z = a;
            for (int d = 0; d < dim; d += 8) a = _mm256_fmadd_ps(_mm256_loadu_ps(q0 + d), load_half8(row + d), a);
            o0[r] = _mm_cvtss_f32(hsum4(a, z, z, z));
        }
    }
}
#endif

void ck_dot_rows_f16(const float *const *queries, int m, const uint16_t *rows, int n, int dim, float *const *outs) {
    if (m <= 0 || n <= 0) return;
#ifdef CK_X86
    if (dim % 8 == 0 && uses_f16c()) { dot_rows_f16_avx2(queries, m, rows, n, dim, outs); return; }
#endif
    ck_dot_rows_f16_portable(queries, m, rows, n, dim, outs);
}

/* A signed integer with the order of the float (finite values). */
static inline int32_t ordered_key(float f) {
    if (f == 0) f = 0; /* -0 ties with +0, as the comparison does */
    int32_t i;
    memcpy(&i, &f, sizeof i);
    return i < 0 ? i ^ 0x7FFFFFFF : i;
}

static long count_at_least_portable(const int32_t *k, int count, int32_t t) {
    long n = 0;
    for (int i = 0; i < count; i++) n += k[i] >= t;
    return n;
}

#ifdef CK_X86
__attribute__((target("avx2")))
static long count_at_least_avx2(const int32_t *k, int count, int32_t t) {
    /* k >= t  <=>  k > t - 1 (t is never INT32_MIN here). */
    __m256i below = _mm256_set1_epi32(t - 1), acc = _mm256_setzero_si256();
    int i = 0;
    for (; i + 8 <= count; i += 8) {
        /* Each match adds -1 to its lane. */
        acc = _mm256_add_epi32(acc, _mm256_cmpgt_epi32(_mm256_loadu_si256((const __m256i *)(k + i)), below));
    }
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(acc), _mm256_extracti128_si256(acc, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4E));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xB1));
    long n = -(long)_mm_cvtsi128_si32(s);
    for (; i < count; i++) n += k[i] >= t;
    return n;
}
#endif

int ck_best_unordered(const float *s, int count, int keep, int *ids_out, void *scratch) {
    if (keep <= 0 || count <= 0) return 0;
    if (keep > count) keep = count;
    int32_t *k = (int32_t *)scratch;
    int32_t lo = INT32_MAX, hi = INT32_MIN;
    for (int i = 0; i < count; i++) {
        k[i] = ordered_key(s[i]);
        if (k[i] < lo) lo = k[i];
        if (k[i] > hi) hi = k[i];
    }
    /* The keep-th largest key: the largest t with at least keep keys >= t, by bisection over
       the keys' range (a fixed number of branch-free counting passes, where a quickselect's
       comparisons are unpredictable branches). */
#ifdef CK_X86
    int vec = ck_uses_avx2();
#endif
    while (lo < hi) {
        int32_t mid = (int32_t)(((int64_t)lo + (int64_t)hi + 1) >> 1);
        long n;
#ifdef CK_X86
        n = vec ? count_at_least_avx2(k, count, mid) : count_at_least_portable(k, count, mid);
#else
        n = count_at_least_portable(k, count, mid);
#endif
        if (n >= keep) lo = mid; else hi = mid - 1;
    }
    /* Every key above the threshold, then ties at it by index. */
    int n = 0;
    for (int i = 0; i < count; i++) if (k[i] > lo) ids_out[n++] = i;
    for (int i = 0; i < count && n < keep; i++) if (k[i] == lo) ids_out[n++] = i;
    return n;
}

/* Inserts v (index c) into the n kept entries, after every entry >= v so that equal scores keep
   the lower index first; drops the worst when full. Returns the new count. */
static inline int select_insert(float v, int c, int n, int keep, float *sc, int *id) {
    int pos = n < keep ? n : keep - 1;
    while (pos > 0 && sc[pos - 1] < v) {
        sc[pos] = sc[pos - 1];
        id[pos] = id[pos - 1];
        pos--;
    }
    sc[pos] = v;
    id[pos] = c;
    return n < keep ? n + 1 : n;
}

int ck_select_top_portable(const float *s, int count, int keep, float *sc, int *id) {
    if (keep <= 0) return 0;
    int n = 0;
    for (int c = 0; c < count; c++) {
        float v = s[c];
        if (n == keep && !(v > sc[keep - 1])) continue;
        n = select_insert(v, c, n, keep, sc, id);
    }
    return n;
}

#ifdef CK_X86
/* Once the list is full nearly every score is below the cut-off: eight are compared at once
   and skipped together. */
__attribute__((target("avx2,fma")))
static int select_top_avx2(const float *s, int count, int keep, float *sc, int *id) {
    int n = 0, c = 0;
    while (c < count && n < keep) { n = select_insert(s[c], c, n, keep, sc, id); c++; }
    float cutoff = sc[keep - 1];
    __m256 cut = _mm256_set1_ps(cutoff);
    for (; c + 8 <= count; c += 8) {
        int above = _mm256_movemask_ps(_mm256_cmp_ps(_mm256_loadu_ps(s + c), cut, _CMP_GT_OQ));
        while (above) {
            int j = __builtin_ctz(above);
            above &= above - 1;
            if (s[c + j] > cutoff) {
                select_insert(s[c + j], c + j, n, keep, sc, id);
                cutoff = sc[keep - 1];
            }
        }
        cut = _mm256_set1_ps(cutoff);
    }
    for (; c < count; c++) {
        if (s[c] > cutoff) { select_insert(s[c], c, n, keep, sc, id); cutoff = sc[keep - 1]; }
    }
    return n;
}
#endif

/* A score and its index, ordered by (score desc, index asc). */
typedef struct { float v; int i; } ck_scored;

static inline int ranks_before(ck_scored a, ck_scored b) { return a.v > b.v || (a.v == b.v && a.i < b.i); }

/* Moves the best `keep` of p[0..n) to p[0..keep), in no particular order (a quickselect:
   everything left of `lo` ranks before everything from `lo` on, everything right of `hi` after
   everything up to `hi`). */
static void move_best_first(ck_scored *p, int n, int keep) {
    int lo = 0, hi = n - 1;
    while (lo < hi) {
        int mid = lo + (hi - lo) / 2;
        /* The median of three as pivot, parked at hi. */
        if (ranks_before(p[mid], p[lo])) { ck_scored t = p[mid]; p[mid] = p[lo]; p[lo] = t; }
        if (ranks_before(p[hi], p[lo])) { ck_scored t = p[hi]; p[hi] = p[lo]; p[lo] = t; }
        if (ranks_before(p[mid], p[hi])) { ck_scored t = p[mid]; p[mid] = p[hi]; p[hi] = t; }
        ck_scored pivot = p[hi];
        int store = lo;
        for (int k = lo; k < hi; k++) {
            if (ranks_before(p[k], pivot)) { ck_scored t = p[k]; p[k] = p[store]; p[store] = t; store++; }
        }
        p[hi] = p[store];
        p[store] = pivot;
        if (store == keep - 1 || store == keep) return;
        if (store < keep) lo = store + 1; else hi = store - 1;
    }
}

/* p[0..n) into result order, (score desc, index asc): insertion, for a few dozen entries. */
static void sort_in_result_order(ck_scored *p, int n) {
    for (int k = 1; k < n; k++) {
        ck_scored x = p[k];
        int j = k;
        while (j > 0 && ranks_before(x, p[j - 1])) { p[j] = p[j - 1]; j--; }
        p[j] = x;
    }
}

/* Buffer of the buffered selection: room for 4 keep candidates (at least 64) and one 8-wide step. */
enum { CK_SELECT_MAX_KEEP = 256, CK_SELECT_BUFFER = 4 * CK_SELECT_MAX_KEEP + 8 };

#ifdef CK_X86
/* The best `keep` of the scores above `floor`, in result order; returns how many there are
   (fewer than `keep` when fewer scores are above the floor). Candidates go to a buffer unsorted;
   a full buffer is cut to its best `keep` (quickselect), whose worst score becomes the cut-off.
   A later score equal to the cut-off ranks after every kept one (higher index), so `>` is exact. */
__attribute__((target("avx2,fma")))
static int select_above_avx2(const float *s, int count, int keep, float floor, float *sc, int *id) {
    ck_scored buf[CK_SELECT_BUFFER];
    const int cap = 4 * keep < 64 ? 64 : 4 * keep;
    int n = 0;
    float cutoff = floor;
    __m256 cut = _mm256_set1_ps(cutoff);
    int c = 0;
    for (; c + 8 <= count; c += 8) {
        int above = _mm256_movemask_ps(_mm256_cmp_ps(_mm256_loadu_ps(s + c), cut, _CMP_GT_OQ));
        while (above) {
            int j = __builtin_ctz(above);
            above &= above - 1;
            buf[n].v = s[c + j];
            buf[n].i = c + j;
            n++;
        }
        if (n > cap) {
            move_best_first(buf, n, keep);
            n = keep;
            cutoff = buf[0].v;
            for (int k = 1; k < n; k++) if (buf[k].v < cutoff) cutoff = buf[k].v;
            cut = _mm256_set1_ps(cutoff);
        }
    }
    for (; c < count; c++) {
        if (s[c] > cutoff) { buf[n].v = s[c]; buf[n].i = c; n++; }
    }
    if (n > keep) { move_best_first(buf, n, keep); n = keep; }
    sort_in_result_order(buf, n);
    for (int k = 0; k < n; k++) { sc[k] = buf[k].v; id[k] = buf[k].i; }
    return n;
}

/* Sorted insertion into a short list of the best scores so far (descending). */
static inline void insert_descending(float v, float *best, int *n, int cap) {
    if (*n == cap && !(v > best[cap - 1])) return;
    int pos = *n < cap ? (*n)++ : cap - 1;
    while (pos > 0 && best[pos - 1] < v) { best[pos] = best[pos - 1]; pos--; }
    best[pos] = v;
}

/* The floor starts the scan high: the j-th best of a strided sample, with j chosen so that about
   four times `keep` scores lie above it. Most scores then fail one vector compare, and the buffer
   is cut once or twice instead of four times from a cold start. Should fewer than `keep` scores
   lie above it (a few queries in a hundred), the insertion-based selection runs instead. */
__attribute__((target("avx2,fma")))
static int select_top_buffered_avx2(const float *s, int count, int keep, float *sc, int *id) {
    enum { SAMPLES = 256, MAX_J = 64 };
    float floor = -INFINITY;
    if (count >= 16 * SAMPLES && keep <= count / 64) {
        const int stride = count / SAMPLES;
        int j = (int)(4.0 * keep * SAMPLES / count + 0.5);
        if (j < 1) j = 1;
        if (j > MAX_J) j = MAX_J;
        float best[MAX_J];
        int n = 0;
        for (int k = 0; k < SAMPLES; k++) insert_descending(s[(long)k * stride], best, &n, j);
        if (n == j) floor = best[j - 1];
        /* Just below the sample's score, so that the scan's `>` keeps it and its equals. */
        floor = nextafterf(floor, -INFINITY);
    }
    if (floor == -INFINITY) return select_top_avx2(s, count, keep, sc, id);
    int n = select_above_avx2(s, count, keep, floor, sc, id);
    return n < keep ? select_top_avx2(s, count, keep, sc, id) : n;
}
#endif

int ck_select_top(const float *s, int count, int keep, float *sc, int *id) {
    if (keep <= 0) return 0;
#ifdef CK_X86
    if (ck_uses_avx2()) {
        if (keep <= CK_SELECT_MAX_KEEP) return select_top_buffered_avx2(s, count, keep, sc, id);
        return select_top_avx2(s, count, keep, sc, id);
    }
#endif
    return ck_select_top_portable(s, count, keep, sc, id);
}

static inline unsigned u16le(const unsigned char *p, long i) {
    return (unsigned)p[2 * i] | ((unsigned)p[2 * i + 1] << 8);
}

/* Halves [0, n) to a window of at most 32 that holds the lower bound; returns its start. */
static inline long lower_bound_window(const unsigned char *p, long *n, unsigned target) {
    long base = 0, m = *n;
    while (m > 32) {
        long half = m / 2;
        base = u16le(p, base + half - 1) < target ? base + half : base;
        m -= half;
    }
    *n = m;
    return base;
}

/* ck_take_best's loop; `filtered` is a constant at each call, so the unfiltered loop carries no
   test of the filter. */
__attribute__((always_inline))
static inline long take_best(const unsigned char *offsets, uint32_t base, long n, const float *s, uint32_t bound,
                             const int filtered, const uint64_t *allowed, long word_count, float *best, uint32_t *touched,
                             long touched_count, long *taken) {
    long tc = touched_count, kept = 0;
    for (long t = 0; t < n; t++) {
        const uint32_t doc = base + u16le(offsets, t);
        if (doc >= bound) continue; /* never for a consistent index: predicted */
        if (filtered && ((long)(doc >> 6) >= word_count || !((allowed[doc >> 6] >> (doc & 63)) & 1))) continue;
        const float old = best[doc], v = s[t];
        touched[tc] = doc;
        tc += old == -INFINITY;
        best[doc] = v > old ? v : old;
        kept++;
    }
    *taken += kept;
    return tc;
}

long ck_take_best(const unsigned char *offsets, uint32_t base, long n, const float *s, uint32_t bound, int filtered,
                  const uint64_t *allowed, long word_count, float *best, uint32_t *touched, long touched_count, long *taken) {
    if (filtered) return take_best(offsets, base, n, s, bound, 1, allowed, word_count, best, touched, touched_count, taken);
    return take_best(offsets, base, n, s, bound, 0, NULL, 0, best, touched, touched_count, taken);
}

long ck_lower_bound_u16_portable(const unsigned char *p, long n, unsigned target) {
    long base = lower_bound_window(p, &n, target), below = 0;
    for (long i = 0; i < n; i++) below += u16le(p, base + i) < target;
    return base + below;
}

#ifdef CK_X86
__attribute__((target("avx2")))
static long lower_bound_u16_avx2(const unsigned char *p, long n, unsigned target) {
    if (target == 0) return 0;
    long base = lower_bound_window(p, &n, target), below = 0, i = 0;
    const unsigned char *w = p + 2 * base;
    __m256i t1 = _mm256_set1_epi16((short)(target - 1));
    for (; i + 16 <= n; i += 16) {
        __m256i x = _mm256_loadu_si256((const __m256i *)(w + 2 * i));
        __m256i at_most = _mm256_cmpeq_epi16(_mm256_min_epu16(x, t1), x);
        below += __builtin_popcount((unsigned)_mm256_movemask_epi8(at_most)) / 2;
    }
    for (; i < n; i++) below += u16le(w, i) < target;
    return base + below;
}
#endif

long ck_lower_bound_u16(const unsigned char *p, long n, unsigned target) {
#ifdef CK_X86
    if (ck_uses_avx2()) return lower_bound_u16_avx2(p, n, target);
#endif
    return ck_lower_bound_u16_portable(p, n, target);
}

long ck_packed_query_floats(int rows, int dim) { return (long)((rows + 15) / 16) * 16 * dim; }

#ifdef CK_X86
/* 8 x 8 transposes: rows r0..r0+7 (zeros past `rows`), dims k..k+7 of each, to 8 runs of 8. */
__attribute__((target("avx2,fma")))
static void pack_query_avx2(const float *q, int rows, int dim, float *packed) {
    const __m256 zero = _mm256_setzero_ps();
    int dim8 = dim & ~7;
    for (int b = 0; b * 16 < rows; b++) {
        float *p = packed + (long)b * dim * 16;
        for (int h = 0; h < 2; h++) {
            int r0 = b * 16 + h * 8;
            const float *src[8];
            int live[8];
            for (int r = 0; r < 8; r++) { live[r] = r0 + r < rows; src[r] = q + (long)(live[r] ? r0 + r : 0) * dim; }
            for (int k = 0; k < dim8; k += 8) {
                __m256 a[8], t[8];
                for (int r = 0; r < 8; r++) a[r] = live[r] ? _mm256_loadu_ps(src[r] + k) : zero;
                transpose8x8(a, t);
                float *o = p + (long)k * 16 + h * 8;
                for (int kk = 0; kk < 8; kk++) _mm256_storeu_ps(o + kk * 16, t[kk]);
            }
            for (int k = dim8; k < dim; k++)
                for (int r = 0; r < 8; r++) p[16 * k + h * 8 + r] = live[r] ? src[r][k] : 0.0f;
        }
    }
}
#endif

void ck_pack_query(const float *q, int rows, int dim, float *packed) {
#ifdef CK_X86
    if (ck_uses_avx2()) {
        pack_query_avx2(q, rows, dim, packed);
        return;
    }
#endif
    for (int b = 0; b * 16 < rows; b++) {
        float *p = packed + (long)b * dim * 16;
        for (int k = 0; k < dim; k++)
            for (int r = 0; r < 16; r++) {
                int row = b * 16 + r;
                p[16 * k + r] = row < rows ? q[(long)row * dim + k] : 0.0f;
            }
    }
}

int ck_maxsim_packed(const float *packed, int rows, const float *d, int n, int dim, const float *scale,
                     float *rowmax) {
    if (rows <= 0 || n <= 0) return 1;
#ifdef CK_X86
    if (ck_uses_avx2()) {
        maxsim_packed_avx2(packed, rows, d, n, dim, scale, rowmax);
        return 1;
    }
#endif
    return 0;
}

int ck_scores_packed(const float *packed, int rows, const float *d, int n, int dim, float *out, long ldo, int accumulate) {
    if (rows <= 0 || n <= 0) return 1;
#ifdef CK_X86
    if (ck_uses_avx2()) {
        scores_packed_avx2(packed, rows, d, n, dim, out, ldo, accumulate);
        return 1;
    }
#endif
    return 0;
}

/* e^x: range reduction to r in [-ln2/2, ln2/2], degree-7 Taylor series (relative error below
   1e-7), scaling by 2^k through the exponent bits. Inputs are clamped to [-87, 88]. */
static inline float exp_portable(float x) {
    float xc = x < -87.0f ? -87.0f : (x > 88.0f ? 88.0f : x);
    const float shifter = 12582912.0f; /* 1.5 * 2^23: adding it rounds to an integer */
    float ks = xc * 1.44269504f + shifter;
    float k = ks - shifter;
    float r = (xc - k * 0.693359375f) + k * 2.1219444e-4f;
    float p = 1.0f / 5040;
    p = p * r + 1.0f / 720; p = p * r + 1.0f / 120; p = p * r + 1.0f / 24;
    p = p * r + 1.0f / 6; p = p * r + 0.5f; p = p * r + 1; p = p * r + 1;
    union { float f; int32_t i; } a = { ks }, b = { shifter }, scale;
    scale.i = (a.i - b.i + 127) << 23;
    return p * scale.f;
}

static inline float gelu_portable(float x) {
    float z = x * 0.70710678118654752f;
    float a = z < 0 ? -z : z;
    float t = 1.0f / (1.0f + 0.3275911f * a);
    float poly = 1.061405429f;
    poly = poly * t - 1.453152027f; poly = poly * t + 1.421413741f;
    poly = poly * t - 0.284496736f; poly = poly * t + 0.254829592f;
    float erfc_a = poly * t * exp_portable(-(a * a));
    float one_plus_erf = z < 0 ? erfc_a : 2 - erfc_a;
    return x * 0.5f * one_plus_erf;
}

void ck_softmax_rows_portable(float *s, int rows, int cols, const float *mask) {
    for (int r = 0; r < rows; r++) {
        float *row = s + (long)r * cols;
        float mx = -INFINITY;
        for (int j = 0; j < cols; j++) if ((!mask || mask[j] != 0) && row[j] > mx) mx = row[j];
        /* The exponentials in their own loop and four partial sums, so both vectorise. */
        if (mask) {
            for (int j = 0; j < cols; j++) row[j] = exp_portable(row[j] - mx) * mask[j];
        } else {
            for (int j = 0; j < cols; j++) row[j] = exp_portable(row[j] - mx);
        }
        float s0 = 0, s1 = 0, s2 = 0, s3 = 0;
        int j = 0;
        for (; j + 4 <= cols; j += 4) { s0 += row[j]; s1 += row[j + 1]; s2 += row[j + 2]; s3 += row[j + 3]; }
        for (; j < cols; j++) s0 += row[j];
        float inv = 1.0f / ((s0 + s1) + (s2 + s3));
        for (j = 0; j < cols; j++) row[j] *= inv;
    }
}

#ifdef CK_X86
__attribute__((target("avx2,fma")))
static inline __m256 exp_avx2(__m256 x) {
    __m256 xc = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.0f)), _mm256_set1_ps(88.0f));
    const __m256 shifter = _mm256_set1_ps(12582912.0f);
    __m256 ks = _mm256_fmadd_ps(xc, _mm256_set1_ps(1.44269504f), shifter);
    __m256 k = _mm256_sub_ps(ks, shifter);
    __m256 r = _mm256_fmadd_ps(k, _mm256_set1_ps(2.1219444e-4f), _mm256_fnmadd_ps(k, _mm256_set1_ps(0.693359375f), xc));
    __m256 p = _mm256_set1_ps(1.0f / 5040);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 720));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 120));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 24));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 6));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    __m256i e = _mm256_sub_epi32(_mm256_castps_si256(ks), _mm256_castps_si256(shifter));
    e = _mm256_slli_epi32(_mm256_add_epi32(e, _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

__attribute__((target("avx2,fma")))
static void gelu_avx2(float *x, long count) {
    const __m256 sign = _mm256_set1_ps(-0.0f);
    long i = 0;
    for (; i + 8 <= count; i += 8) {
        __m256 v = _mm256_loadu_ps(x + i);
        __m256 z = _mm256_mul_ps(v, _mm256_set1_ps(0.70710678118654752f));
        __m256 a = _mm256_andnot_ps(sign, z);
        __m256 t = _mm256_div_ps(_mm256_set1_ps(1.0f), _mm256_fmadd_ps(a, _mm256_set1_ps(0.3275911f), _mm256_set1_ps(1.0f)));
        __m256 poly = _mm256_set1_ps(1.061405429f);
        poly = _mm256_fmadd_ps(poly, t, _mm256_set1_ps(-1.453152027f));
        poly = _mm256_fmadd_ps(poly, t, _mm256_set1_ps(1.421413741f));
        poly = _mm256_fmadd_ps(poly, t, _mm256_set1_ps(-0.284496736f));
        poly = _mm256_fmadd_ps(poly, t, _mm256_set1_ps(0.254829592f));
        __m256 erfc_a = _mm256_mul_ps(_mm256_mul_ps(poly, t), exp_avx2(_mm256_xor_ps(_mm256_mul_ps(a, a), sign)));
        __m256 neg = _mm256_cmp_ps(z, _mm256_setzero_ps(), _CMP_LT_OQ);
        __m256 one_plus_erf = _mm256_blendv_ps(_mm256_sub_ps(_mm256_set1_ps(2.0f), erfc_a), erfc_a, neg);
        _mm256_storeu_ps(x + i, _mm256_mul_ps(_mm256_mul_ps(v, _mm256_set1_ps(0.5f)), one_plus_erf));
    }
    for (; i < count; i++) x[i] = gelu_portable(x[i]);
}

__attribute__((target("avx2,fma")))
static void softmax_avx2(float *s, int rows, int cols, const float *mask) {
    for (int r = 0; r < rows; r++) {
        float *row = s + (long)r * cols;
        float mx = -INFINITY;
        int j = 0;
        __m256 vmx = _mm256_set1_ps(-INFINITY);
        if (!mask) {
            for (; j + 8 <= cols; j += 8) vmx = _mm256_max_ps(vmx, _mm256_loadu_ps(row + j));
        }
        float m8[8];
        _mm256_storeu_ps(m8, vmx);
        for (int q = 0; q < 8; q++) if (m8[q] > mx) mx = m8[q];
        for (; j < cols; j++) if ((!mask || mask[j] != 0) && row[j] > mx) mx = row[j];
        __m256 vm = _mm256_set1_ps(mx), vsum = _mm256_setzero_ps();
        j = 0;
        for (; j + 8 <= cols; j += 8) {
            __m256 e = exp_avx2(_mm256_sub_ps(_mm256_loadu_ps(row + j), vm));
            if (mask) e = _mm256_mul_ps(e, _mm256_loadu_ps(mask + j));
            _mm256_storeu_ps(row + j, e);
            vsum = _mm256_add_ps(vsum, e);
        }
        _mm256_storeu_ps(m8, vsum);
        float sum = ((m8[0] + m8[1]) + (m8[2] + m8[3])) + ((m8[4] + m8[5]) + (m8[6] + m8[7]));
        for (; j < cols; j++) {
            float e = exp_portable(row[j] - mx);
            if (mask) e *= mask[j];
            row[j] = e;
            sum += e;
        }
        __m256 inv = _mm256_set1_ps(1.0f / sum);
        j = 0;
        for (; j + 8 <= cols; j += 8) _mm256_storeu_ps(row + j, _mm256_mul_ps(_mm256_loadu_ps(row + j), inv));
        float invs = 1.0f / sum;
        for (; j < cols; j++) row[j] *= invs;
    }
}
#endif

void ck_gelu_portable(float *x, long count) {
    for (long i = 0; i < count; i++) x[i] = gelu_portable(x[i]);
}

void ck_gelu(float *x, long count) {
    if (count <= 0) return;
#ifdef CK_X86
    if (ck_uses_avx2()) { gelu_avx2(x, count); return; }
#endif
    ck_gelu_portable(x, count);
}

void ck_softmax_rows(float *s, int rows, int cols, const float *key_mask) {
    if (rows <= 0 || cols <= 0) return;
#ifdef CK_X86
    if (ck_uses_avx2()) { softmax_avx2(s, rows, cols, key_mask); return; }
#endif
    ck_softmax_rows_portable(s, rows, cols, key_mask);
}

/* ---- Centroid scores in 8-bit integers ---------------------------------------------------- */

long ck_i8_panel_bytes(int count, int dim) { return (long)((count + 15) / 16) * 16 * dim; }

void ck_i8_pack_rows(const float *rows, int count, int dim, uint8_t *panels, float *scales) {
    const int padded = (count + 15) / 16 * 16, quads = dim / 4;
    for (int c = 0; c < padded; c++) {
        float m = 0;
        if (c < count) for (int k = 0; k < dim; k++) { float a = fabsf(rows[(long)c * dim + k]); if (a > m) m = a; }
        const float s = m / 127.0f;
        scales[c] = s;
        uint8_t *panel = panels + (long)(c / 8) * quads * 32 + (c % 8) * 4;
        for (int k = 0; k < dim; k++) {
            long v = c < count && s > 0 ? lrintf(rows[(long)c * dim + k] / s) : 0;
            if (v > 127) v = 127;
            if (v < -127) v = -127;
            panel[(long)(k / 4) * 32 + k % 4] = (uint8_t)(v + 128);
        }
    }
}

void ck_i8_quantize_rows(const float *rows, int count, int dim, int8_t *out, float *scales, int32_t *offsets) {
    const int padded = (count + 3) / 4 * 4;
    for (int r = 0; r < padded; r++) {
        float m = 0;
        if (r < count) for (int k = 0; k < dim; k++) { float a = fabsf(rows[(long)r * dim + k]); if (a > m) m = a; }
        const float s = m / 63.0f;
        int32_t sum = 0;
        for (int k = 0; k < dim; k++) {
            long v = r < count && s > 0 ? lrintf(rows[(long)r * dim + k] / s) : 0;
            if (v > 63) v = 63;
            if (v < -63) v = -63;
            out[(long)r * dim + k] = (int8_t)v;
            sum += (int32_t)v;
        }
        scales[r] = s;
        offsets[r] = 128 * sum;
    }
}

static void i8_scores_portable(const int8_t *q, const int32_t *offsets, const float *qs, int rows, const uint8_t *panels,
                               const float *cs, int first, int count, int dim, float *out, long ldo) {
    const int quads = dim / 4;
    for (int c = first; c < first + count; c++) {
        const uint8_t *panel = panels + (long)(c / 8) * quads * 32 + (c % 8) * 4;
        for (int r = 0; r < rows; r++) {
            int32_t acc = 0;
            for (int k = 0; k < dim; k++) acc += (int32_t)q[(long)r * dim + k] * (int32_t)panel[(long)(k / 4) * 32 + k % 4];
            out[(long)r * ldo + c] = (float)(acc - offsets[r]) * (qs[r] * cs[c]);
        }
    }
}

#ifdef CK_X86
/* A 4-row x 16-column tile per step: two 8-centroid panels (32 bytes per 4 dims: 8 centroids x 4
   unsigned bytes) against each row's 4 signed bytes broadcast. The query's 7 bits keep each pair
   sum of vpmaddubsw (at most 2 x 63 x 255) below the 16-bit limit, so nothing saturates and the
   integer sums are exact: any split of the columns gives the same scores. */
/* One query row's 4 bytes (broadcast) against both panels' 4 dims, into the row's two accumulators. */
__attribute__((target("avx2,fma"), always_inline))
static inline void i8_row_step(const int8_t *q4, __m256i b0, __m256i b1, __m256i ones, __m256i *a0, __m256i *a1) {
    int32_t w;
    memcpy(&w, q4, 4);
    const __m256i x = _mm256_set1_epi32(w);
    *a0 = _mm256_add_epi32(*a0, _mm256_madd_epi16(_mm256_maddubs_epi16(b0, x), ones));
    *a1 = _mm256_add_epi32(*a1, _mm256_madd_epi16(_mm256_maddubs_epi16(b1, x), ones));
}

__attribute__((target("avx2,fma")))
static void i8_scores_avx2(const int8_t *q, const int32_t *offsets, const float *qs, int rows, const uint8_t *panels,
                           const float *cs, int first, int count, int dim, float *out, long ldo) {
    const int quads = dim / 4;
    const __m256i ones = _mm256_set1_epi16(1);
    for (int c = first; c < first + count; c += 16) {
        const uint8_t *p0 = panels + (long)(c / 8) * quads * 32, *p1 = p0 + (long)quads * 32;
        const __m256 s0 = _mm256_loadu_ps(cs + c), s1 = _mm256_loadu_ps(cs + c + 8);
        for (int r = 0; r < rows; r += 4) {
            __m256i a00 = _mm256_setzero_si256(), a01 = a00, a10 = a00, a11 = a00, a20 = a00, a21 = a00, a30 = a00, a31 = a00;
            const int8_t *q0 = q + (long)r * dim, *q1 = q0 + dim, *q2 = q1 + dim, *q3 = q2 + dim;
            for (int t = 0; t < quads; t++) {
                const __m256i b0 = _mm256_loadu_si256((const __m256i *)(p0 + t * 32));
                const __m256i b1 = _mm256_loadu_si256((const __m256i *)(p1 + t * 32));
                i8_row_step(q0 + 4 * t, b0, b1, ones, &a00, &a01);
                i8_row_step(q1 + 4 * t, b0, b1, ones, &a10, &a11);
                i8_row_step(q2 + 4 * t, b0, b1, ones, &a20, &a21);
                i8_row_step(q3 + 4 * t, b0, b1, ones, &a30, &a31);
            }
            const __m256i acc[8] = { a00, a01, a10, a11, a20, a21, a30, a31 };
            for (int i = 0; i < 4 && r + i < rows; i++) {
                const __m256i off = _mm256_set1_epi32(offsets[r + i]);
                const __m256 f = _mm256_set1_ps(qs[r + i]);
                float *o = out + (long)(r + i) * ldo + c;
                _mm256_storeu_ps(o, _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(acc[2 * i], off)), _mm256_mul_ps(f, s0)));
                _mm256_storeu_ps(o + 8, _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(acc[2 * i + 1], off)), _mm256_mul_ps(f, s1)));
            }
        }
    }
}
#endif

int ck_i8_scores_portable(const int8_t *q, const int32_t *offsets, const float *scales, int rows, const uint8_t *panels,
                          const float *row_scales, int first, int count, int dim, float *out, long ldo) {
    if (rows <= 0 || count <= 0 || dim % 4 != 0 || first % 16 != 0 || count % 16 != 0) return 0;
    i8_scores_portable(q, offsets, scales, rows, panels, row_scales, first, count, dim, out, ldo);
    return 1;
}

int ck_i8_scores(const int8_t *q, const int32_t *offsets, const float *scales, int rows, const uint8_t *panels,
                 const float *row_scales, int first, int count, int dim, float *out, long ldo) {
    if (rows <= 0 || count <= 0 || dim % 4 != 0 || first % 16 != 0 || count % 16 != 0) return 0;
#ifdef CK_X86
    if (ck_uses_avx2()) {
        i8_scores_avx2(q, offsets, scales, rows, panels, row_scales, first, count, dim, out, ldo);
        return 1;
    }
#endif
    i8_scores_portable(q, offsets, scales, rows, panels, row_scales, first, count, dim, out, ldo);
    return 1;
}

#ifdef CK_X86
__attribute__((target("avx2,fma")))
static void dot_ids_avx2(const float *q, const float *rows, int dim, const int32_t *ids, int n, float *out) {
    for (int j = 0; j < n; j++) {
        const float *r = rows + (long)ids[j] * dim;
        __m256 a0 = _mm256_setzero_ps(), a1 = a0;
        int k = 0;
        for (; k + 16 <= dim; k += 16) {
            a0 = _mm256_fmadd_ps(_mm256_loadu_ps(q + k), _mm256_loadu_ps(r + k), a0);
            a1 = _mm256_fmadd_ps(_mm256_loadu_ps(q + k + 8), _mm256_loadu_ps(r + k + 8), a1);
        }
        float lanes[8];
        _mm256_storeu_ps(lanes, _mm256_add_ps(a0, a1));
        float s = ((lanes[0] + lanes[1]) + (lanes[2] + lanes[3])) + ((lanes[4] + lanes[5]) + (lanes[6] + lanes[7]));
        for (; k < dim; k++) s += q[k] * r[k];
        out[j] = s;
    }
}
#endif

void ck_dot_ids(const float *q, const float *rows, int dim, const int32_t *ids, int n, float *out) {
#ifdef CK_X86
    if (ck_uses_avx2()) { dot_ids_avx2(q, rows, dim, ids, n, out); return; }
#endif
    for (int j = 0; j < n; j++) {
        const float *r = rows + (long)ids[j] * dim;
        float s = 0;
        for (int k = 0; k < dim; k++) s += q[k] * r[k];
        out[j] = s;
    }
}

int ck_rescore_best(const float *q, const float *rows, int dim, const int32_t *ids, int n, int keep,
                    float *scores_out, int32_t *ids_out) {
    if (n <= 0 || keep <= 0) return 0;
    if (n > CK_RESCORE_MAX_CANDIDATES) n = CK_RESCORE_MAX_CANDIDATES;
    float exact[CK_RESCORE_MAX_CANDIDATES];
    ck_scored cand[CK_RESCORE_MAX_CANDIDATES];
    ck_dot_ids(q, rows, dim, ids, n, exact);
    for (int j = 0; j < n; j++) { cand[j].v = exact[j]; cand[j].i = ids[j]; }
    sort_in_result_order(cand, n);
    int kept = keep < n ? keep : n;
    for (int j = 0; j < kept; j++) { scores_out[j] = cand[j].v; ids_out[j] = cand[j].i; }
    return kept;
}
