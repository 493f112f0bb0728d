/* Single-threaded kernels of the cpu backend, in two versions: AVX2 + FMA +
 * F16C (x86-64-v3) chosen at run time, and portable C; the random generator
 * has an AVX-512 version too. The binary is built for baseline x86-64, so
 * only the functions with a target attribute use those instructions, and
 * only after dy_cpu_kernels_init has seen that the CPU has them. */
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "cpu_internal.h"

#if defined(__x86_64__) || defined(__i386__)
#define DY_CPU_X86 1
#include <immintrin.h>
#define AVX2 __attribute__((target("avx2,fma,f16c")))
#define AVX2_INLINE static inline __attribute__((always_inline, target("avx2,fma,f16c")))
#else
#define DY_CPU_X86 0
#endif

static bool use_avx2, use_avx512;
static pthread_once_t isa_once = PTHREAD_ONCE_INIT;

static void detect_isa(void)
{
#if DY_CPU_X86
    const char *isa = getenv("DYNO_CPU_ISA");
    __builtin_cpu_init();
    use_avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
               __builtin_cpu_supports("f16c") && !(isa && strcmp(isa, "generic") == 0);
    use_avx512 = use_avx2 && __builtin_cpu_supports("avx512f") &&
                 __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512bw") &&
                 __builtin_cpu_supports("avx512vl") && !(isa && strcmp(isa, "avx2") == 0);
#endif
}

/* once: contexts may be created while another one's kernels run */
void dy_cpu_kernels_init(void)
{
    pthread_once(&isa_once, detect_isa);
}

const char *dy_cpu_isa(void)
{
    return use_avx512 ? "avx2+fma+f16c, avx512 random" : use_avx2 ? "avx2+fma+f16c" : "generic";
}

/* ---- the counter-based generator ------------------------------------------
 * One body compiled three times: portable, AVX2 and AVX-512 (whose 64-bit
 * multiplies make it ten times faster than scalar code). The product and
 * the sum are in separate loops, through memory, so that no compiler option
 * or target can fuse them into an FMA: every backend rounds twice. */
#define RANDOM_PIECE 256
#define RANDOM_RANGE_BODY                                                              \
    for (size_t p = begin; p < end; p += RANDOM_PIECE) {                              \
        float scaled[RANDOM_PIECE];                                                   \
        size_t len = end - p < RANDOM_PIECE ? end - p : RANDOM_PIECE;                 \
        for (size_t j = 0; j < len; j++)                                              \
            scaled[j] = scale * dy_random_unit(key, p + j);                           \
        switch (t) {                                                                  \
        case DY_F16:                                                                  \
            for (size_t j = 0; j < len; j++)                                          \
                ((uint16_t *)dst)[p + j] = dy_f32_to_f16(offset + scaled[j]);         \
            break;                                                                    \
        case DY_BF16:                                                                 \
            for (size_t j = 0; j < len; j++)                                          \
                ((uint16_t *)dst)[p + j] = dy_f32_to_bf16(offset + scaled[j]);        \
            break;                                                                    \
        case DY_F32:                                                                  \
            for (size_t j = 0; j < len; j++)                                          \
                ((float *)dst)[p + j] = offset + scaled[j];                           \
            break;                                                                    \
        default:                                                                      \
            for (size_t j = 0; j < len; j++)                                          \
                dy_store_f32(dst, t, p + j, offset + scaled[j]);                      \
            break;                                                                    \
        }                                                                             \
    }

static void random_range_generic(void *dst, enum dy_dtype t, uint64_t key, size_t begin,
                                  size_t end, float scale, float offset)
{
    RANDOM_RANGE_BODY
}

#if DY_CPU_X86
/* no "fma" in either target: nothing to contract into */
__attribute__((target("avx2"))) static void
random_range_avx2(void *dst, enum dy_dtype t, uint64_t key, size_t begin, size_t end,
                  float scale, float offset)
{
    RANDOM_RANGE_BODY
}

__attribute__((target("avx512f,avx512dq,avx512bw,avx512vl"))) static void
random_range_avx512(void *dst, enum dy_dtype t, uint64_t key, size_t begin, size_t end,
                    float scale, float offset)
{
    RANDOM_RANGE_BODY
}
#endif

void dy_cpu_random_range(void *dst, enum dy_dtype t, uint64_t key, size_t begin, size_t end,
                         float scale, float offset)
{
#if DY_CPU_X86
    if (use_avx512)
        random_range_avx512(dst, t, key, begin, end, scale, offset);
    else if (use_avx2)
        random_range_avx2(dst, t, key, begin, end, scale, offset);
    else
#endif
        random_range_generic(dst, t, key, begin, end, scale, offset);
}

/* ---- portable C ---------------------------------------------------------- */

static void load_row_generic(float *dst, const void *src, enum dy_dtype t, size_t n)
{
    if (t == DY_F32) {
        memcpy(dst, src, n * sizeof(float));
        return;
    }
    for (size_t i = 0; i < n; i++)
        dst[i] = dy_load_f32(src, t, i);
}

static void store_row_generic(void *dst, enum dy_dtype t, const float *src, size_t n)
{
    if (t == DY_F32) {
        memcpy(dst, src, n * sizeof(float));
        return;
    }
    for (size_t i = 0; i < n; i++)
        dy_store_f32(dst, t, i, src[i]);
}

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
            load_row_generic(piece, (const char *)v + ((size_t)t * ldv + j0) * esize, vt, len);
            for (int i = 0; i < m; i++) {
                float pt = p[(size_t)i * ldp + t];
                float *orow = o + (size_t)i * ldo + j0;
                for (int j = 0; j < len; j++)
                    orow[j] += pt * piece[j];
            }
        }
    }
}

/* 1 + erf(x / sqrt 2) as erfc(-x / sqrt 2): no cancellation for negative
 * x, where the result is tiny */
static void gelu_generic(float *out, const float *a, int n)
{
    for (int j = 0; j < n; j++)
        out[j] = 0.5f * a[j] * erfcf(-a[j] * (float)M_SQRT1_2);
}

static float exp_sum_generic(float *x, int n, float shift)
{
    float sum = 0.0f;
    for (int i = 0; i < n; i++) {
        x[i] = expf(x[i] - shift);
        sum += x[i];
    }
    return sum;
}

/* ---- AVX2 + FMA + F16C ----------------------------------------------------- */
#if DY_CPU_X86

/* Eight elements of a row of dtype t from element index i, as f32. */
AVX2_INLINE __m256 load8(const void *base, enum dy_dtype t, size_t i)
{
    switch (t) {
    case DY_F16:
        return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)((const uint16_t *)base + i)));
    case DY_BF16: {
        __m128i h = _mm_loadu_si128((const __m128i *)((const uint16_t *)base + i));
        return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
    }
    default:
        return _mm256_loadu_ps((const float *)base + i);
    }
}

/* Rounds to nearest even exactly as dy_f32_to_bf16 and dy_f32_to_f16 do
 * (F16C's rounding mode 0 is IEEE round to nearest even, subnormals kept). */
AVX2_INLINE void store8(void *base, enum dy_dtype t, size_t i, __m256 x)
{
    switch (t) {
    case DY_F16:
        _mm_storeu_si128((__m128i *)((uint16_t *)base + i),
                         _mm256_cvtps_ph(x, _MM_FROUND_TO_NEAREST_INT));
        break;
    case DY_BF16: {
        __m256i u = _mm256_castps_si256(x);
        __m256i hi = _mm256_srli_epi32(u, 16);
        __m256i odd = _mm256_and_si256(hi, _mm256_set1_epi32(1));
        __m256i rounded = _mm256_srli_epi32(
            _mm256_add_epi32(u, _mm256_add_epi32(odd, _mm256_set1_epi32(0x7fff))), 16);
        __m256i abs = _mm256_and_si256(u, _mm256_set1_epi32(0x7fffffff));
        __m256i nan = _mm256_cmpgt_epi32(abs, _mm256_set1_epi32(0x7f800000));
        __m256i quiet = _mm256_or_si256(hi, _mm256_set1_epi32(0x40));
        __m256i r = _mm256_blendv_epi8(rounded, quiet, nan);
        /* packus works per 128-bit lane; gather the two low quadwords */
        r = _mm256_permute4x64_epi64(_mm256_packus_epi32(r, r), 0x08);
        _mm_storeu_si128((__m128i *)((uint16_t *)base + i), _mm256_castsi256_si128(r));
        break;
    }
    default:
        _mm256_storeu_ps((float *)base + i, x);
        break;
    }
}

static AVX2 void load_row_avx2(float *dst, const void *src, enum dy_dtype t, size_t n)
{
    size_t i = 0;
    switch (t) {
    case DY_F16:
        for (; i + 8 <= n; i += 8)
            _mm256_storeu_ps(dst + i, load8(src, DY_F16, i));
        break;
    case DY_BF16:
        for (; i + 8 <= n; i += 8)
            _mm256_storeu_ps(dst + i, load8(src, DY_BF16, i));
        break;
    default:
        break;
    }
    load_row_generic(dst + i, (const char *)src + i * dy_cpu_esize(t), t, n - i);
}

static AVX2 void store_row_avx2(void *dst, enum dy_dtype t, const float *src, size_t n)
{
    size_t i = 0;
    switch (t) {
    case DY_F16:
        for (; i + 8 <= n; i += 8)
            store8(dst, DY_F16, i, _mm256_loadu_ps(src + i));
        break;
    case DY_BF16:
        for (; i + 8 <= n; i += 8)
            store8(dst, DY_BF16, i, _mm256_loadu_ps(src + i));
        break;
    default:
        break;
    }
    store_row_generic((char *)dst + i * dy_cpu_esize(t), t, src + i, n - i);
}

/* The four horizontal sums of a, b, c, d. */
AVX2_INLINE __m128 hsum4(__m256 a, __m256 b, __m256 c, __m256 d)
{
    __m256 abcd = _mm256_hadd_ps(_mm256_hadd_ps(a, b), _mm256_hadd_ps(c, d));
    return _mm_add_ps(_mm256_castps256_ps128(abcd), _mm256_extractf128_ps(abcd, 1));
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
            bv[j] = load8(b, bt, (size_t)j * ldb + kk);
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
        _mm_storeu_ps(sums, hsum4(acc[i][0], nr > 1 ? acc[i][1] : zero,
                                  nr > 2 ? acc[i][2] : zero, zero));
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

static AVX2 void gemm_nt_avx2(int m, int n, int k, const float *a, size_t lda,
                              const void *b, size_t ldb, enum dy_dtype bt,
                              float *c, size_t ldc)
{
    void (*tiles)(int, int, int, const float *, size_t, const void *, size_t, float *, size_t,
                  const char *) =
        bt == DY_F16 ? nt_tiles_f16 : bt == DY_BF16 ? nt_tiles_bf16 : nt_tiles_f32;
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
            acc[i][j] = _mm256_loadu_ps(o + (size_t)i * ldo + 8 * j);
    for (int t = 0; t < k; t++) {
        __m256 vv[2];
        #pragma GCC unroll 4
        for (int j = 0; j < nv; j++)
            vv[j] = load8(v, vt, (size_t)t * ldv + 8 * j);
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
            _mm256_storeu_ps(o + (size_t)i * ldo + 8 * j, acc[i][j]);
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

static AVX2 void gemm_nn_acc_avx2(int m, int n, int k, const float *p, size_t ldp,
                                  const void *v, size_t ldv, enum dy_dtype vt,
                                  float *o, size_t ldo)
{
    void (*tiles)(int, int, int, const float *, size_t, const void *, size_t, float *, size_t) =
        vt == DY_F16 ? nn_tiles_f16 : vt == DY_BF16 ? nn_tiles_bf16 : nn_tiles_f32;
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
}

/* exp(x) as Cephes' expf: x = n ln2 + r, exp(r) by a degree-7 polynomial,
 * 2^n put into the exponent; within 2 ulp over the clamped range. */
AVX2_INLINE __m256 exp8(__m256 x)
{
    x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.3f)), _mm256_set1_ps(88.37f));
    __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                               _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 y = _mm256_set1_ps(1.9875691500e-4f);
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(1.3981999507e-3f));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(8.3334519073e-3f));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(4.1665795894e-2f));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(1.6666665459e-1f));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(5.0000001201e-1f));
    y = _mm256_fmadd_ps(y, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
    __m256i e = _mm256_slli_epi32(
        _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(y, _mm256_castsi256_ps(e));
}

static AVX2 float exp_sum_avx2(float *x, int n, float shift)
{
    __m256 vshift = _mm256_set1_ps(shift);
    __m256 vsum = _mm256_setzero_ps();
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 e = exp8(_mm256_sub_ps(_mm256_loadu_ps(x + i), vshift));
        _mm256_storeu_ps(x + i, e);
        vsum = _mm256_add_ps(vsum, e);
    }
    __m256 zero = _mm256_setzero_ps();
    float sum = _mm_cvtss_f32(hsum4(vsum, zero, zero, zero));
    return sum + exp_sum_generic(x + i, n - i, shift);
}

/* gelu(x) = x / 2 * erfc(-x / sqrt 2), erfc by Numerical Recipes' erfcc
 * (Chebyshev fit, relative error under 1.2e-7 everywhere) on |u| and
 * erfc(-|u|) = 2 - erfc(|u|): a few ulp in f32 where glibc's scalar erfcf
 * costs ten times as much. */
static AVX2 void gelu_avx2(float *out, const float *a, int n)
{
    static const float coef[10] = { -1.26551223f, 1.00002368f, 0.37409196f, 0.09678418f,
                                    -0.18628806f, 0.27886807f, -1.13520398f, 1.48851587f,
                                    -0.82215223f, 0.17087277f };
    __m256 sign = _mm256_set1_ps(-0.0f), one = _mm256_set1_ps(1.0f);
    int j = 0;
    for (; j + 8 <= n; j += 8) {
        __m256 x = _mm256_loadu_ps(a + j);
        __m256 u = _mm256_mul_ps(x, _mm256_set1_ps(-(float)M_SQRT1_2));
        __m256 au = _mm256_andnot_ps(sign, u);
        __m256 t = _mm256_div_ps(one, _mm256_fmadd_ps(_mm256_set1_ps(0.5f), au, one));
        __m256 poly = _mm256_set1_ps(coef[9]);
        for (int c = 8; c >= 0; c--)
            poly = _mm256_fmadd_ps(poly, t, _mm256_set1_ps(coef[c]));
        __m256 e = _mm256_mul_ps(t, exp8(_mm256_fnmadd_ps(au, au, poly)));
        /* u < 0: erfc(u) = 2 - erfc(|u|) */
        __m256 erfc = _mm256_blendv_ps(e, _mm256_sub_ps(_mm256_set1_ps(2.0f), e), u);
        _mm256_storeu_ps(out + j, _mm256_mul_ps(_mm256_mul_ps(_mm256_set1_ps(0.5f), x), erfc));
    }
    gelu_generic(out + j, a + j, n - j);
}

#endif /* DY_CPU_X86 */

/* ---- dispatch ---------------------------------------------------------------- */
#if DY_CPU_X86
#define DISPATCH(call_avx2, call_generic) \
    do {                                  \
        if (use_avx2)                     \
            call_avx2;                    \
        else                              \
            call_generic;                 \
    } while (0)
#else
#define DISPATCH(call_avx2, call_generic) call_generic
#endif

void dy_cpu_load_row(float *dst, const void *src, enum dy_dtype t, size_t n)
{
    DISPATCH(load_row_avx2(dst, src, t, n), load_row_generic(dst, src, t, n));
}

void dy_cpu_store_row(void *dst, enum dy_dtype t, const float *src, size_t n)
{
    DISPATCH(store_row_avx2(dst, t, src, n), store_row_generic(dst, t, src, n));
}

void dy_cpu_gemm_nt(int m, int n, int k, const float *a, size_t lda,
                    const void *b, size_t ldb, enum dy_dtype bt,
                    float *c, size_t ldc)
{
    DISPATCH(gemm_nt_avx2(m, n, k, a, lda, b, ldb, bt, c, ldc),
             gemm_nt_generic(m, n, k, a, lda, b, ldb, bt, c, ldc));
}

void dy_cpu_gemm_nn_acc(int m, int n, int k, const float *p, size_t ldp,
                        const void *v, size_t ldv, enum dy_dtype vt,
                        float *o, size_t ldo)
{
    DISPATCH(gemm_nn_acc_avx2(m, n, k, p, ldp, v, ldv, vt, o, ldo),
             gemm_nn_acc_generic(m, n, k, p, ldp, v, ldv, vt, o, ldo));
}

float dy_cpu_exp_sum(float *x, int n, float shift)
{
    float sum = 0.0f;
    DISPATCH(sum = exp_sum_avx2(x, n, shift), sum = exp_sum_generic(x, n, shift));
    return sum;
}

void dy_cpu_gelu(float *out, const float *a, int n)
{
    DISPATCH(gelu_avx2(out, a, n), gelu_generic(out, a, n));
}

void dy_cpu_scale(float *x, int n, float s)
{
    for (int i = 0; i < n; i++)
        x[i] *= s;
}
