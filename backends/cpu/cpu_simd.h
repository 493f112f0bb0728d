/* Internal to the cpu backend's kernel files (cpu_kernels.c, cpu_tiles.c,
 * cpu_qtiles.c, cpu_qtiles512.c): the AVX2 + FMA + F16C building blocks
 * they share. The binary is built for baseline x86-64, so only functions
 * with these target attributes use those instructions, and only when
 * dy_cpu_avx2() (or dy_cpu_avx512()) says the CPU has them. */
#ifndef DY_CPU_SIMD_H
#define DY_CPU_SIMD_H

#include "cpu_internal.h"

#if defined(__x86_64__) || defined(__i386__)
#define DY_CPU_X86 1
#include <immintrin.h>
#define AVX2 __attribute__((target("avx2,fma,f16c")))
#define AVX2_INLINE static inline __attribute__((always_inline, target("avx2,fma,f16c")))
#define AVX512_TARGET "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma,f16c"
#define AVX512 __attribute__((target(AVX512_TARGET)))
#define AVX512_INLINE static inline __attribute__((always_inline, target(AVX512_TARGET)))
#else
#define DY_CPU_X86 0
#endif

/* Whether the AVX2 versions run: the CPU has AVX2, FMA and F16C, and
 * DYNO_CPU_ISA does not ask for the portable ones (dy_cpu_kernels_init). */
bool dy_cpu_avx2(void);
/* Whether the AVX-512 (F, BW, DQ, VL) versions run: the CPU has them and
 * DYNO_CPU_ISA is neither "generic" nor "avx2". */
bool dy_cpu_avx512(void);

/* ---- int4 weights (cpu_qtiles.c, cpu_qtiles512.c) ---- */

/* Floats of A per packed block of 128 elements: eight rows of 16, then the
 * 16 words' sums (dy_cpu_q4_pack). */
#define DY_CPU_Q4_PACK_BLOCK 144

/* Blocks of 128 elements of k per pass of the quantized GEMV over its
 * tile of W: the pass's columns of A's m rows, at `row_bytes` per block,
 * stay in L1 (half of its 32-48 KiB) while W streams past them. */
static inline int dy_cpu_qgemv_chunk(int m, size_t row_bytes)
{
    size_t blocks = (24u << 10) / ((size_t)m * row_bytes);
    return blocks > 0 ? (int)blocks : 1;
}

/* For `words` words of a row of int4 W from word w0 on (each word's eight
 * elements share a group): s[w] its scale, sz[w] scale * zero. */
void dy_cpu_q4_word_scales(const float *scale, const uint8_t *zero, int group, int w0, int words,
                           float *s, float *sz);

/* AVX-512 GEMV tiles (cpu_qtiles512.c), dy_cpu_avx512() only:
 * tile[i * DY_CPU_TILE_N + j] = A[i, 0:done] . W[j, 0:done] for int4 W
 * with A packed, done = k rounded down to 128, the rest left to the
 * caller; and for fp8 and int8 W the whole dot product, scaled. */
void dy_cpu_q4_tiles_avx512(int nb, const struct dy_cpu_qa *a, const struct dy_cpu_qmat *w,
                            float *tile);
void dy_cpu_q8_gemv_avx512(int nb, const struct dy_cpu_qa *a, const struct dy_cpu_qmat *w,
                           float *tile);

#if DY_CPU_X86

/* Eight fp8 E4M3 values as f32 times 2^-8, exactly. Shifted left by 7,
 * E4M3's exponent and mantissa sit where f16's do, and f16's exponent bias
 * (15 instead of 7) makes the f16 2^-8 of the fp8, subnormals included;
 * F16C converts that without the assists an f32 subnormal would cost.
 * Sign-extending the byte first puts the sign in bit 15 (and in bit 14,
 * masked off). S.1111.111 is NaN: with nan_codes its lanes are set to all
 * ones, an f16 NaN; without, a third fewer instructions, they read as
 * +-480 and the caller puts the NaNs in itself. */
AVX2_INLINE __m256 fp8_load8_scaled(const uint8_t *p, bool nan_codes)
{
    __m128i h = _mm_slli_epi16(_mm_cvtepi8_epi16(_mm_loadl_epi64((const __m128i *)p)), 7);
    __m128i bits = _mm_and_si128(h, _mm_set1_epi16((short)0xbf80));
    if (nan_codes)
        bits = _mm_or_si128(bits, _mm_cmpeq_epi16(_mm_or_si128(h, _mm_set1_epi16((short)0xc07f)),
                                                  _mm_set1_epi16(-1)));
    return _mm256_cvtph_ps(bits);
}

/* Eight elements of a row of dtype t from element index i, as f32 (int8:
 * the integers, as dy_load_f32 has them). */
AVX2_INLINE __m256 load8(const void *base, enum dy_dtype t, size_t i)
{
    switch (t) {
    case DY_F16:
        return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)((const uint16_t *)base + i)));
    case DY_BF16: {
        __m128i h = _mm_loadu_si128((const __m128i *)((const uint16_t *)base + i));
        return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
    }
    case DY_FP8:
        return _mm256_mul_ps(fp8_load8_scaled((const uint8_t *)base + i, true),
                             _mm256_set1_ps(256.0f));
    case DY_I8:
        return _mm256_cvtepi32_ps(
            _mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)((const int8_t *)base + i))));
    default:
        return _mm256_loadu_ps((const float *)base + i);
    }
}

/* The four horizontal sums of a, b, c, d. */
AVX2_INLINE __m128 hsum4(__m256 a, __m256 b, __m256 c, __m256 d)
{
    __m256 abcd = _mm256_hadd_ps(_mm256_hadd_ps(a, b), _mm256_hadd_ps(c, d));
    return _mm_add_ps(_mm256_castps256_ps128(abcd), _mm256_extractf128_ps(abcd, 1));
}

#endif /* DY_CPU_X86 */

#endif
