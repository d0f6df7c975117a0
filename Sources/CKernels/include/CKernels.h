#ifndef CKERNELS_H
#define CKERNELS_H

#include <stdint.h>

/// Hot numeric loops that need instructions above the x86-64 baseline the Swift code is
/// compiled for (AVX2 and FMA), chosen at run time; every kernel has a portable fallback
/// that gives the same result up to float rounding.

/// 1 when the AVX2 + FMA kernels are in use on this CPU, else 0. Setting the environment
/// variable COLBERT_NO_AVX2 (to anything but "" or "0") before the first call forces the portable
/// loops.
int ck_uses_avx2(void);
/// The OpenBLAS core type whose kernels this CPU can run at its widest: "SkylakeX" with AVX-512
/// (F, CD, BW, DQ, VL), "Haswell" with AVX2 and FMA, NULL otherwise (and off x86).
const char *ck_blas_core_for_cpu(void);

/// Rows (a query's, or any few rows) laid out for the two kernels below: blocks of 16 rows, each block dim x 16 floats
/// (value k of the block's row r at 16k + r), rows past the end zero. Floats needed:
/// `ck_packed_query_floats(rows, dim)`.
long ck_packed_query_floats(int rows, int dim);
void ck_pack_query(const float *q, int rows, int dim, float *packed);

/// For every query row i in [0, rows): rowmax[i] = max over j in [0, n) of dot(q_i, d + j*dim),
/// q packed by `ck_pack_query`, d n x dim row-major. Returns 1 when done; 0, writing nothing,
/// when there is no vector path on this CPU: the caller then uses a GEMM, which beats a portable
/// loop (`ck_maxsim_rows_portable`) wherever BLAS has vector kernels.
/// When scale is not NULL, row j's dot products are multiplied by scale[j] first (the inverse
/// norms from `ck_decode_residuals`).
int ck_maxsim_packed(const float *packed, int rows, const float *d, int n, int dim, const float *scale,
                     float *rowmax);

/// out[i * ldo + j] = dot(q_i, d + j*dim) (added to out when accumulate is not 0) for i in
/// [0, rows), j in [0, n): a GEMM against few rows packed once, without BLAS's per-call packing
/// of the (large) d. Returns 0, writing nothing, when there is no vector path on this CPU.
int ck_scores_packed(const float *packed, int rows, const float *d, int n, int dim, float *out, long ldo, int accumulate);

/// Consecutive tokens of one document in one cluster: their packed codes (count x
/// bytes_per_code bytes), the document's place among those being scored, the cluster's centroid.
typedef struct {
    const unsigned char *codes;
    int count;
    int owner;
    unsigned centroid;
} ck_token_run;

/// Whether `ck_maxsim_runs` has a vector path for this code width on this CPU.
int ck_maxsim_runs_available(int bytes_per_code, int per);

/// Exact MaxSim maxima of many documents from their token runs, in any order: for every token t
/// of run r and query row i in [0, rows), rowmax[runs[r].owner * ldr + i] is raised to
/// dot(q_i, v_t) / |v_t|, v_t = centroid + residual decoded as `ck_decode_residuals` does, q
/// packed by `ck_pack_query`. The values equal those of `ck_decode_residuals` then
/// `ck_maxsim_packed` with the inverse norms, document by document. ldr must be at least rows
/// rounded up to 16 (whole 16-row blocks are written; rows past `rows` get 0-products).
/// Returns 0, touching nothing, when `ck_maxsim_runs_available` is 0.
int ck_maxsim_runs(const float *packed, int rows, const ck_token_run *runs, long nruns, int bytes_per_code, int per,
                   const float *centroids, const float *expand, float *rowmax, long ldr);

/// Decompresses n tokens: out row j = centroid + residual, where the centroid is row
/// centroid_ids[j] of `centroids` (n little-endian u32, any alignment) and the residual of code
/// byte b is `expand[b * per ..< (b + 1) * per]` (per = dims per byte); inv_norms[j] = 1 / the
/// row's norm, for a caller that scales dot products instead of normalising vectors. Codes are
/// `bytes_per_code` bytes each, contiguous; dim = bytes_per_code * per.
void ck_decode_residuals(const unsigned char *codes, int bytes_per_code, const unsigned char *centroid_ids,
                         const float *centroids, const float *expand, int per, int n, float *out, float *inv_norms);

/// Scores of n tokens of one cluster against m query rows, decompressing each token once for
/// all of them. The code of token t is bytes_per_code bytes at codes + t * bytes_per_code, one
/// nbits-bit bucket (nbits 1, 2 or 4) per dimension as `ResidualCodec` packs them, and
/// `weights` holds the 2^nbits bucket values. `queries[i]` points at q_i (dim floats). With
/// normalise 0, out[i * ldo + t] = bases[i] + dot(q_i, residual_t) (bases[i] being q_i's score
/// with the centroid); otherwise dot(q_i, centroid + residual_t) / |centroid + residual_t|, the
/// cosine with the normalised decompressed token (bases unused). A token's score does not depend
/// on n or on its position among the n.
void ck_cluster_scores(const unsigned char *codes, int bytes_per_code, int nbits, int n, const float *weights,
                       const float *centroid, const float *const *queries, const float *bases, int m,
                       int normalise, float *out, long ldo);

/// Fast-scan residual scores: the approximate counterpart of `ck_cluster_scores` (normalise 0)
/// for codes of a multiple of 32 bytes, up to CK_FASTSCAN_MAX_BYTES. Per query row, a table
/// gives each nibble position of a code (two per byte) its 16 possible contributions to
/// dot(q, residual), quantised to 0..255 steps of `scale` above the position's smallest one
/// (their sum is `offset`); a token's score is then bases[i] + scale_i * (sum of its 2 *
/// bytes_per_code entries), with bases[i] = q_i's score with the centroid + offset_i. It differs
/// from the exact residual dot product by at most scale_i * bytes_per_code (half a step per
/// position). VPSHUFB looks up one position for 16 tokens at once, from codes transposed in
/// registers, so the codes keep their layout. Both paths give the same floats.
#define CK_FASTSCAN_MAX_BYTES 128
int ck_fastscan_available(int bytes_per_code);
/// Bytes of one query row's table.
long ck_fastscan_table_bytes(int bytes_per_code);
/// Builds q's table (dim = bytes_per_code * 8 / nbits floats; weights as for `ck_cluster_scores`).
void ck_fastscan_tables(const float *q, int bytes_per_code, int nbits, const float *weights, unsigned char *tables,
                        float *scale, float *offset);
/// out[i * ldo + t] for n tokens of one cluster (codes as for `ck_cluster_scores`) and m query
/// rows, tables[i] built by `ck_fastscan_tables`. Writes nothing when the width is not supported.
void ck_fastscan_scores(const unsigned char *codes, int bytes_per_code, int n, const unsigned char *const *tables,
                        const float *scales, const float *bases, int m, float *out, long ldo);

/// The best `keep` of `count` scores in (score desc, index asc) order: their values into
/// `scores_out` and indices into `ids_out` (`keep` entries of room each); returns how many
/// (min(keep, count)). Once `keep` are held, a score enters only when above the worst kept.
int ck_select_top(const float *s, int count, int keep, float *scores_out, int *ids_out);
int ck_select_top_portable(const float *s, int count, int keep, float *scores_out, int *ids_out);

/// Dot products of m query rows with the n row-major rows of one block, stored as IEEE half
/// floats (bit patterns): outs[t][r] = queries[t] · rows[r] (dim values each). For scoring a
/// group of centroids against only the query tokens that chose it, where a full GEMM would score
/// every token. Half floats halve the bytes read, which is what these scores wait on.
void ck_dot_rows_f16(const float *const *queries, int m, const uint16_t *rows, int n, int dim, float *const *outs);
void ck_dot_rows_f16_portable(const float *const *queries, int m, const uint16_t *rows, int n, int dim, float *const *outs);
/// The float value of an IEEE half float's bit pattern.
float ck_half_to_float(uint16_t h);

/// The indices of the best `keep` of `count` finite scores (score desc, then index asc: a total
/// order, so the set is deterministic) into `ids_out`, in no particular order; `scratch` holds `count`
/// 4-byte entries. About 32 vector counting passes, where a sorted top-k costs O(count·keep) once
/// keep is a sizeable part of count. Returns min(keep, count).
int ck_best_unordered(const float *s, int count, int keep, int *ids_out, void *scratch);

/// Lower bound in `n` ascending little-endian 16-bit values at `offsets`: how many are below
/// `target`. Branch-free halving down to a short window, then a vector count over it, since the
/// outcome of each probe is unpredictable and a mispredicted branch costs more than the loads.
long ck_lower_bound_u16(const unsigned char *offsets, long n, unsigned target);
long ck_lower_bound_u16_portable(const unsigned char *offsets, long n, unsigned target);

/// Takes one query token's scores of a cluster chunk's entries into the documents' best scores:
/// for entry t (document `base + offsets[t]`, 16-bit little-endian; skipped unless below
/// `bound`, and, when `filtered`, unless its bit is set in the `word_count` words of `allowed`),
/// `best[doc] = max(best[doc], s[t])`, and `doc` is appended to `touched` when its best was -inf
/// (first seen for this token). Without branches on the data: whether a document is new, and
/// whether its score improves, are unpredictable. Returns the new length of `touched`, which
/// needs one slot beyond the documents it can hold; adds the entries taken to `*taken`.
long ck_take_best(const unsigned char *offsets, uint32_t base, long n, const float *s, uint32_t bound, int filtered,
                  const uint64_t *allowed, long word_count, float *best, uint32_t *touched, long touched_count, long *taken);

/// A hint to fetch the cache line holding p (for reads), ahead of a scattered access.
static inline void ck_prefetch(const void *p) { __builtin_prefetch(p, 0, 3); }

/// A hint that the caller is spinning on a flag another core will set (x86 PAUSE, ARM YIELD):
/// it saves power and leaves the core's pipeline to its sibling while waiting.
static inline void ck_cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__) || defined(__arm__)
    __asm__ __volatile__("yield");
#endif
}

/// Exact-form GELU in place: x * (1 + erf(x / sqrt 2)) / 2, erf by Abramowitz & Stegun 7.1.26
/// (absolute error <= 1.5e-7) with erfc computed directly for negative arguments.
void ck_gelu(float *x, long count);

/// Row-wise softmax in place of a rows x cols block; when key_mask is not NULL, columns whose
/// mask is 0 get probability 0 (and do not count towards the maximum).
void ck_softmax_rows(float *s, int rows, int cols, const float *key_mask);

/// The portable loops behind each kernel, callable directly (tests compare the two paths).
void ck_maxsim_rows_portable(const float *q, int rows, const float *d, int n, int dim, float *rowmax);
void ck_decode_residuals_portable(const unsigned char *codes, int bytes_per_code, const unsigned char *centroid_ids,
                                  const float *centroids, const float *expand, int per, int n, float *out, float *inv_norms);
void ck_cluster_scores_portable(const unsigned char *codes, int bytes_per_code, int nbits, int n, const float *weights,
                                const float *centroid, const float *const *queries, const float *bases, int m,
                                int normalise, float *out, long ldo);
void ck_gelu_portable(float *x, long count);
void ck_fastscan_scores_portable(const unsigned char *codes, int bytes_per_code, int n,
                                 const unsigned char *const *tables, const float *scales, const float *bases, int m,
                                 float *out, long ldo);
void ck_softmax_rows_portable(float *s, int rows, int cols, const float *key_mask);

/// Centroid scores in 8-bit integers, for picking probes (the picked ones are re-scored in F32).
/// Rows (centroids) are packed once: each row scaled to [-127, 127] by its largest magnitude and
/// stored offset by 128, in panels of 8 rows x 4 dims (32 bytes), rows padded to a multiple of 16
/// (`ck_i8_panel_bytes` bytes; `scales` gets one entry per padded row, 0 for padding). `dim` must
/// be a multiple of 4.
long ck_i8_panel_bytes(int count, int dim);
void ck_i8_pack_rows(const float *rows, int count, int dim, uint8_t *panels, float *scales);
/// A query's rows scaled to [-63, 63] each, padded to a multiple of 4 rows (zero rows): `out`
/// holds padded rows x dim bytes, `scales` and `offsets` (128 x the row's sum, which removes the
/// panels' offset) one entry per padded row.
void ck_i8_quantize_rows(const float *rows, int count, int dim, int8_t *out, float *scales, int32_t *offsets);
/// `out[r * ldo + c] ≈ row_r · centroid_c` for the `rows` query rows (`q`, `offsets` and `scales`
/// padded as `ck_i8_quantize_rows` leaves them) and centroids `first ..< first + count` (both
/// multiples of 16, within the packed rows' padding): exact integer sums,
/// scaled back, so every split of the columns gives the same values, on either path. Returns 0,
/// writing nothing, when a shape is not allowed.
int ck_i8_scores(const int8_t *q, const int32_t *offsets, const float *scales, int rows, const uint8_t *panels,
                 const float *row_scales, int first, int count, int dim, float *out, long ldo);
int ck_i8_scores_portable(const int8_t *q, const int32_t *offsets, const float *scales, int rows, const uint8_t *panels,
                          const float *row_scales, int first, int count, int dim, float *out, long ldo);

/// `out[j] = q · rows[ids[j]]` (rows `dim` wide) for j < n: a few chosen rows re-scored in F32.
void ck_dot_ids(const float *q, const float *rows, int dim, const int32_t *ids, int n, float *out);
/// Rows `ids[0..<n]` (n ≤ CK_RESCORE_MAX_CANDIDATES; more are ignored) re-scored in F32 against
/// `q` (`ck_dot_ids`); the best `keep` of them by (score desc, id asc) into `scores_out` and
/// `ids_out`. Returns how many: min(keep, n).
#define CK_RESCORE_MAX_CANDIDATES 256
int ck_rescore_best(const float *q, const float *rows, int dim, const int32_t *ids, int n, int keep,
                    float *scores_out, int32_t *ids_out);
/// Asks for every cache line of rows `ids[0..<n]` (rows `dim` floats wide), ahead of `ck_dot_ids`.
static inline void ck_prefetch_ids(const float *rows, int dim, const int32_t *ids, int n) {
    for (int j = 0; j < n; j++) {
        const char *r = (const char *)(rows + (long)ids[j] * dim);
        for (long o = 0; o < (long)dim * 4; o += 64) __builtin_prefetch(r + o, 0, 3);
    }
}

#endif
