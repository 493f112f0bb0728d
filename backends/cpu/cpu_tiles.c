/* The small matrix products attention is built of, and the cpu GEMM's
 * tiles (cpu_internal.h: dy_cpu_gemm_nt, dy_cpu_gemm_nn_acc):
 * single-threaded, with B or V converted from its dtype in registers.
 * AVX2 + FMA + F16C register tiles chosen at run time, portable C
 * otherwise. */
#include <math.h>

#include "cpu_simd.h"

/* ---- portable C ---------------------------------------------------------- */

/* Dot product of an f32 row with a row of dtype t; the switch is outside the
 * loops so that each loop vectorises. */
static float dot_generic(const float *a, const void *b, enum dy_dtype t, int k)
{
    float sum = 0.0f;
    switch (t) {
    case DY_F16:
        for (int i = 0; i < k; i++)
            sum += a[i] * dy_f16_to_f32(((const uint16_t *)b)[i]);
        break;
    case DY_BF16:
        for (int i = 0; i < k; i++)
            sum += a[i] * dy_bf16_to_f32(((const uint16_t *)b)[i]);
        break;
    case DY_FP8:
        for (int i = 0; i < k; i++)
            sum += a[i] * dy_fp8_to_f32(((const uint8_t *)b)[i]);
        break;
    case DY_I8:
        for (int i = 0; i < k; i++)
            sum += a[i] * (float)((const int8_t *)b)[i];
        break;
    default:
        for (int i = 0; i < k; i++)
            sum += a[i] * ((const float *)b)[i];
        break;
    }
    return sum;
}

static void gemm_nt_generic(int m, int n, int k, const float *a, size_t lda,
                            const void *b, size_t ldb, enum dy_dtype bt,
                            float *c, size_t ldc)
{
    size_t esize = dy_cpu_esize(bt);
    for (int j = 0; j < n; j++) {
        const void *brow = (const char *)b + (size_t)j * ldb * esize;
        for (int i = 0; i < m; i++)
            c[(size_t)i * ldc + j] = dot_generic(a + (size_t)i * lda, brow, bt, k);
    }
}

static void gemm_nn_acc_generic(int m, int n, int k, const float *p, size_t ldp,
                                const void *v, size_t ldv, enum dy_dtype vt,
                                float *o, size_t ldo)
{
    enum { PIECE = 256 };
    float piece[PIECE];
    size_t esize = dy_cpu_esize(vt);
    for (int j0 = 0; j0 < n; j0 += PIECE) {
        int len = n - j0 < PIECE ? n - j0 : PIECE;
        for (int t = 0; t < k; t++) {
            dy_cpu_load_row(piece, (const char *)v + ((size_t)t * ldv + j0) * esize, vt,
                            (size_t)len);
            for (int i = 0; i < m; i++) {
                float pt = p[(size_t)i * ldp + t];
                float *orow = o + (size_t)i * ldo + j0;
                for (int j = 0; j < len; j++)
                    orow[j] += pt * piece[j];
            }
        }
    }
}

/* ---- AVX2 + FMA + F16C ----------------------------------------------------- */
#if DY_CPU_X86

/* Whether rows x cols fp8 values, rows ld apart, hold a NaN code. The
 * tiles read those as numbers and this finds them afterwards, while the
 * values are still in L1: two instructions per 32 values, where keeping
 * the NaNs in every load costs three per 8 (and scanning before the tiles
 * would wait for memory with nothing to overlap). */
static AVX2 bool fp8_any_nan(const uint8_t *p, size_t ld, int rows, int cols)
{
    __m256i most = _mm256_setzero_si256(), magnitude = _mm256_set1_epi8(0x7f);
    bool tail = false;
    for (int r = 0; r < rows; r++) {
        const uint8_t *row = p + (size_t)r * ld;
        int c = 0;
        for (; c + 32 <= cols; c += 32)
            most = _mm256_max_epu8(
                most, _mm256_and_si256(_mm256_loadu_si256((const __m256i *)(row + c)), magnitude));
        for (; c < cols; c++)
            tail |= (row[c] & 0x7f) == 0x7f;
    }
    __m256i nan = _mm256_cmpeq_epi8(most, magnitude);
    return tail || !_mm256_testz_si256(nan, nan);
}

/* The tiles' load8: fp8 comes 2^-8 of its value, a multiply saved on
 * every load, and the tile multiplies its sums by tile_scale() instead
 * (exact: a power of two); its NaN codes come as numbers, and the caller
 * puts the NaNs in afterwards (fp8_poison_rows, fp8_poison_columns). */
AVX2_INLINE __m256 tile_load8(const void *base, enum dy_dtype t, size_t i)
{
    return t == DY_FP8 ? fp8_load8_scaled((const uint8_t *)base + i, false) : load8(base, t, i);
}

AVX2_INLINE float tile_scale(enum dy_dtype t)
{
    return t == DY_FP8 ? 256.0f : 1.0f;
}

/* C[0:m, j] = NaN for each of the n rows j of fp8 B (k values, ldb apart)
 * that holds a NaN code: what a sum over that row would be. */
static AVX2 void fp8_poison_rows(const void *b, size_t ldb, int n, int k, float *c, size_t ldc,
                                 int m)
{
    if (!fp8_any_nan(b, ldb, n, k))
        return;
    for (int j = 0; j < n; j++)
        if (fp8_any_nan((const uint8_t *)b + (size_t)j * ldb, ldb, 1, k))
            for (int i = 0; i < m; i++)
                c[(size_t)i * ldc + j] = NAN;
}

/* O[0:m, j] = NaN for each of the n columns j of fp8 V (k rows, ldv apart)
 * that holds a NaN code: what adding p * NaN makes of it. */
static AVX2 void fp8_poison_columns(const void *v, size_t ldv, int k, int n, float *o,
                                    size_t ldo, int m)
{
    if (!fp8_any_nan(v, ldv, k, n))
        return;
    for (int t = 0; t < k; t++)
        for (int j = 0; j < n; j++)
            if ((((const uint8_t *)v)[(size_t)t * ldv + j] & 0x7f) == 0x7f)
                for (int i = 0; i < m; i++)
                    o[(size_t)i * ldo + j] = NAN;
}

/* One MR x NR tile of C = A . B^T. MR, NR and the dtype are constants at each
 * call site, so the accumulators live in registers (12 + 3 + 1 of the 16).
 * `prefetch`, when not NULL, is the next tile's B, pulled into L2 while this
 * one computes: with several passes of A over a tile the memory would
 * otherwise idle after the first, and a compute-bound m >= 4 run at 60%. */
AVX2_INLINE void nt_tile(int mr, int nr, enum dy_dtype bt, int k,
                         const float *a, size_t lda, const void *b, size_t ldb,
                         float *c, size_t ldc, const char *prefetch)
{
    size_t esize = dy_cpu_esize(bt);
    __m256 acc[4][3];
    #pragma GCC unroll 4
    for (int i = 0; i < mr; i++)
        #pragma GCC unroll 4
        for (int j = 0; j < nr; j++)
            acc[i][j] = _mm256_setzero_ps();
    int kk = 0;
    for (; kk + 8 <= k; kk += 8) {
        __m256 bv[3];
        /* one prefetch per cache line of each of the next tile's rows */
        if (prefetch && (kk * esize) % 64 == 0)
            #pragma GCC unroll 4
            for (int j = 0; j < 3; j++)
                _mm_prefetch(prefetch + ((size_t)j * ldb + kk) * esize, _MM_HINT_T1);
        #pragma GCC unroll 4
        for (int j = 0; j < nr; j++)
            bv[j] = tile_load8(b, bt, (size_t)j * ldb + kk);
        #pragma GCC unroll 4
        for (int i = 0; i < mr; i++) {
            __m256 av = _mm256_loadu_ps(a + (size_t)i * lda + kk);
            #pragma GCC unroll 4
            for (int j = 0; j < nr; j++)
                acc[i][j] = _mm256_fmadd_ps(av, bv[j], acc[i][j]);
        }
    }
    __m256 zero = _mm256_setzero_ps();
    #pragma GCC unroll 4
    for (int i = 0; i < mr; i++) {
        float sums[4];
        _mm_storeu_ps(sums, _mm_mul_ps(hsum4(acc[i][0], nr > 1 ? acc[i][1] : zero,
                                             nr > 2 ? acc[i][2] : zero, zero),
                                       _mm_set1_ps(tile_scale(bt))));
        #pragma GCC unroll 4
        for (int j = 0; j < nr; j++) {
            /* head_dim-sized k leaves no tail, and the call would cost as
             * much as the tile's FMAs */
            if (kk < k)
                sums[j] += dot_generic(a + (size_t)i * lda + kk,
                                       (const char *)b + ((size_t)j * ldb + kk) * esize, bt,
                                       k - kk);
            c[(size_t)i * ldc + j] = sums[j];
        }
    }
}

#define NT_TILE_CASE(MR, NR, BT) \
    case (MR) * 4 + (NR): nt_tile(MR, NR, BT, k, a, lda, b, ldb, c, ldc, prefetch); break;

/* One instantiation per B dtype: the tile shapes the edges of C need. */
#define NT_TILES(NAME, BT)                                                       \
    static AVX2 void NAME(int mr, int nr, int k, const float *a, size_t lda,    \
                          const void *b, size_t ldb, float *c, size_t ldc,      \
                          const char *prefetch)                                 \
    {                                                                           \
        switch (mr * 4 + nr) {                                                  \
            NT_TILE_CASE(1, 1, BT) NT_TILE_CASE(1, 2, BT) NT_TILE_CASE(1, 3, BT) \
            NT_TILE_CASE(2, 1, BT) NT_TILE_CASE(2, 2, BT) NT_TILE_CASE(2, 3, BT) \
            NT_TILE_CASE(3, 1, BT) NT_TILE_CASE(3, 2, BT) NT_TILE_CASE(3, 3, BT) \
            NT_TILE_CASE(4, 1, BT) NT_TILE_CASE(4, 2, BT) NT_TILE_CASE(4, 3, BT) \
        }                                                                       \
    }

NT_TILES(nt_tiles_f32, DY_F32)
NT_TILES(nt_tiles_f16, DY_F16)
NT_TILES(nt_tiles_bf16, DY_BF16)
NT_TILES(nt_tiles_fp8, DY_FP8)
NT_TILES(nt_tiles_i8, DY_I8)

static AVX2 void gemm_nt_avx2(int m, int n, int k, const float *a, size_t lda,
                              const void *b, size_t ldb, enum dy_dtype bt,
                              float *c, size_t ldc)
{
    void (*tiles)(int, int, int, const float *, size_t, const void *, size_t, float *, size_t,
                  const char *) =
        bt == DY_F16 ? nt_tiles_f16 : bt == DY_BF16 ? nt_tiles_bf16 : bt == DY_FP8 ? nt_tiles_fp8
        : bt == DY_I8 ? nt_tiles_i8 : nt_tiles_f32;
    size_t esize = dy_cpu_esize(bt);
    /* B rows outermost: the tile's rows of B stay in L1 while every row of
     * A passes over them, so B comes from memory once. */
    for (int j = 0; j < n; j += 3) {
        int nr = n - j < 3 ? n - j : 3;
        const char *bj = (const char *)b + (size_t)j * ldb * esize;
        /* the next full tile, during the first pass of A only */
        const char *next = n - j >= 6 ? bj + 3 * ldb * esize : NULL;
        for (int i = 0; i < m; i += 4) {
            int mr = m - i < 4 ? m - i : 4;
            tiles(mr, nr, k, a + (size_t)i * lda, lda, bj, ldb, c + (size_t)i * ldc + j, ldc,
                  i == 0 ? next : NULL);
        }
    }
    if (bt == DY_FP8)
        fp8_poison_rows(b, ldb, n, k, c, ldc, m);
}

/* O[0:mr, 0:8*nv] += P[0:mr, 0:k] . V[0:k, 0:8*nv]; constants as in nt_tile. */
AVX2_INLINE void nn_tile(int mr, int nv, enum dy_dtype vt, int k,
                         const float *p, size_t ldp, const void *v, size_t ldv,
                         float *o, size_t ldo)
{
    __m256 acc[4][2];
    #pragma GCC unroll 4
    for (int i = 0; i < mr; i++)
        #pragma GCC unroll 4
        for (int j = 0; j < nv; j++)
            acc[i][j] = _mm256_mul_ps(_mm256_loadu_ps(o + (size_t)i * ldo + 8 * j),
                                      _mm256_set1_ps(1.0f / tile_scale(vt)));
    for (int t = 0; t < k; t++) {
        __m256 vv[2];
        #pragma GCC unroll 4
        for (int j = 0; j < nv; j++)
            vv[j] = tile_load8(v, vt, (size_t)t * ldv + 8 * j);
        #pragma GCC unroll 4
        for (int i = 0; i < mr; i++) {
            __m256 pt = _mm256_broadcast_ss(p + (size_t)i * ldp + t);
            #pragma GCC unroll 4
            for (int j = 0; j < nv; j++)
                acc[i][j] = _mm256_fmadd_ps(pt, vv[j], acc[i][j]);
        }
    }
    #pragma GCC unroll 4
    for (int i = 0; i < mr; i++)
        #pragma GCC unroll 4
        for (int j = 0; j < nv; j++)
            _mm256_storeu_ps(o + (size_t)i * ldo + 8 * j,
                             _mm256_mul_ps(acc[i][j], _mm256_set1_ps(tile_scale(vt))));
}

#define NN_TILE_CASE(MR, NV, VT) \
    case (MR) * 4 + (NV): nn_tile(MR, NV, VT, k, p, ldp, v, ldv, o, ldo); break;

#define NN_TILES(NAME, VT)                                                     \
    static AVX2 void NAME(int mr, int nv, int k, const float *p, size_t ldp,  \
                          const void *v, size_t ldv, float *o, size_t ldo)    \
    {                                                                         \
        switch (mr * 4 + nv) {                                                \
            NN_TILE_CASE(1, 1, VT) NN_TILE_CASE(1, 2, VT)                     \
            NN_TILE_CASE(2, 1, VT) NN_TILE_CASE(2, 2, VT)                     \
            NN_TILE_CASE(3, 1, VT) NN_TILE_CASE(3, 2, VT)                     \
            NN_TILE_CASE(4, 1, VT) NN_TILE_CASE(4, 2, VT)                     \
        }                                                                     \
    }

NN_TILES(nn_tiles_f32, DY_F32)
NN_TILES(nn_tiles_f16, DY_F16)
NN_TILES(nn_tiles_bf16, DY_BF16)
NN_TILES(nn_tiles_fp8, DY_FP8)
NN_TILES(nn_tiles_i8, DY_I8)

static AVX2 void gemm_nn_acc_avx2(int m, int n, int k, const float *p, size_t ldp,
                                  const void *v, size_t ldv, enum dy_dtype vt,
                                  float *o, size_t ldo)
{
    void (*tiles)(int, int, int, const float *, size_t, const void *, size_t, float *, size_t) =
        vt == DY_F16 ? nn_tiles_f16 : vt == DY_BF16 ? nn_tiles_bf16 : vt == DY_FP8 ? nn_tiles_fp8
        : vt == DY_I8 ? nn_tiles_i8 : nn_tiles_f32;
    size_t esize = dy_cpu_esize(vt);
    int n8 = n & ~7;
    for (int i = 0; i < m; i += 4) {
        int mr = m - i < 4 ? m - i : 4;
        const float *pi = p + (size_t)i * ldp;
        float *oi = o + (size_t)i * ldo;
        for (int j = 0; j < n8; j += 16) {
            int nv = n8 - j >= 16 ? 2 : 1;
            tiles(mr, nv, k, pi, ldp, (const char *)v + (size_t)j * esize, ldv, oi + j, ldo);
        }
        if (n8 < n)
            gemm_nn_acc_generic(mr, n - n8, k, pi, ldp, (const char *)v + (size_t)n8 * esize,
                                ldv, vt, oi + n8, ldo);
    }
    if (vt == DY_FP8)
        fp8_poison_columns(v, ldv, k, n8, o, ldo, m);
}

#endif /* DY_CPU_X86 */

/* ---- dispatch ---------------------------------------------------------------- */

void dy_cpu_gemm_nt(int m, int n, int k, const float *a, size_t lda,
                    const void *b, size_t ldb, enum dy_dtype bt,
                    float *c, size_t ldc)
{
#if DY_CPU_X86
    if (dy_cpu_avx2()) {
        gemm_nt_avx2(m, n, k, a, lda, b, ldb, bt, c, ldc);
        return;
    }
#endif
    gemm_nt_generic(m, n, k, a, lda, b, ldb, bt, c, ldc);
}

void dy_cpu_gemm_nn_acc(int m, int n, int k, const float *p, size_t ldp,
                        const void *v, size_t ldv, enum dy_dtype vt,
                        float *o, size_t ldo)
{
#if DY_CPU_X86
    if (dy_cpu_avx2()) {
        gemm_nn_acc_avx2(m, n, k, p, ldp, v, ldv, vt, o, ldo);
        return;
    }
#endif
    gemm_nn_acc_generic(m, n, k, p, ldp, v, ldv, vt, o, ldo);
}
