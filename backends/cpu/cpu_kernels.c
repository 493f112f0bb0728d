/* Single-threaded kernels of the cpu backend, in two versions: AVX2 + FMA +
 * F16C (x86-64-v3) chosen at run time, and portable C; the random generator
 * has an AVX-512 version too (as do the quantized GEMV tiles,
 * cpu_qtiles512.c). The binary is built for baseline x86-64, so
 * only the functions with a target attribute use those instructions, and
 * only after dy_cpu_kernels_init has seen that the CPU has them. The matrix
 * tiles are in cpu_tiles.c. */
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "cpu_simd.h"

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

bool dy_cpu_avx2(void)
{
    return use_avx2;
}

bool dy_cpu_avx512(void)
{
    return use_avx512;
}

const char *dy_cpu_isa(void)
{
    return use_avx512 ? "avx2+fma+f16c, avx512 random and quantized GEMV"
           : use_avx2 ? "avx2+fma+f16c" : "generic";
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
    case DY_FP8:
        for (; i + 8 <= n; i += 8)
            _mm256_storeu_ps(dst + i, load8(src, DY_FP8, i));
        break;
    case DY_I8:
        for (; i + 8 <= n; i += 8)
            _mm256_storeu_ps(dst + i, load8(src, DY_I8, i));
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

/* exp(x) as Cephes' expf: x = n ln2 + r, exp(r) by a degree-7 polynomial,
 * 2^n put into the exponent; within 2 ulp over the clamped range. The clamp
 * keeps a NaN (maxps and minps return their second operand when either is
 * one), so that a NaN score poisons its softmax as it does in cpu-ref. */
AVX2_INLINE __m256 exp8(__m256 x)
{
    x = _mm256_min_ps(_mm256_set1_ps(88.37f), _mm256_max_ps(_mm256_set1_ps(-87.3f), x));
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
