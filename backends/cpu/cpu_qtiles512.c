/* The quantized GEMV tiles in AVX-512 (F, BW, DQ, VL), taken when the CPU
 * has it and DYNO_CPU_ISA does not cap it: sixteen elements per instruction
 * where the AVX2 tiles (cpu_qtiles.c) take eight, on the same int4 layout.
 * Dequantizing in registers costs instructions per element, not per byte,
 * so at m = 1 the AVX2 tiles run out of instructions before a core runs out
 * of memory bandwidth. One Zen 5 core, weights in cache, m = 1: int4, fp8,
 * int8 at 20-25, 14, 23 G elements/s with AVX2 and 45, 30, 63 with these,
 * where it reads some 30 GB/s from memory. (An Intel Xeon, two 512-bit
 * ports per core, gains less: 14, 9, 15 -> 16, 11, 21.) */
#include <math.h>

#include "cpu_simd.h"

#if DY_CPU_X86

/* Each tile prefetches the same columns of the next tile's rows of W as it
 * reads its own: rows of a few KiB, several at once, are streams too short
 * for the hardware prefetchers to run ahead of (at m = 1 from memory, one
 * Zen 5 core: int8 22 -> 31 GB/s, fp8 18 -> 27, int4 18 -> 24). Prefetches
 * past the matrix are harmless.
 *
 * Rows of A per tile are 1, 2, 4 or 8, at most `most` (m = 3 takes a tile
 * of 2, then one of 1 over the same rows of W, from cache); columns of W
 * per tile as many as keep at least six chains of FMAs in the 32
 * registers. int4 tiles take at most 4 rows: at 8 (one row of W per tile)
 * the lookups are no longer the cost and the sums at the end of each pass
 * over k are (61 against 48 GMAC/s at m = 8 on Zen 5). */
#define NR(mr) ((mr) == 1 ? 6 : (mr) == 2 ? 4 : (mr) == 4 ? 2 : 1)

static int rows_per_tile(int left, int most)
{
    left = left < most ? left : most;
    return left >= 8 ? 8 : left >= 4 ? 4 : left >= 2 ? 2 : 1;
}

/* ---- int4 --------------------------------------------------------------
 * A 16-entry table lookup (vpermps reads the low four bits of each index)
 * turns nibble s of 16 words into f32 in one instruction, after a shift:
 * through a table of scale * (n - zero), rebuilt per block, into the
 * weights themselves, as dy_dequant() rounds them, when a block lies in one
 * group; through 0..15, with the scales and zero points applied to the
 * sums per word afterwards, when it does not. A is packed unscaled. */

/* Nibble s of each of 16 words, through `table`. */
AVX512_INLINE __m512 q4_lookup(__m512i words, int s, __m512 table)
{
    return _mm512_permutexvar_ps(s ? _mm512_srli_epi32(words, 4 * s) : words, table);
}

AVX512_INLINE __m512 q4_iota(void)
{
    return _mm512_setr_ps(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
}

/* One MR x NR tile over blocks [b0, b0 + blocks) (pa and q point at b0)
 * whose groups are multiples of 128 elements: C[i, j] (+)= the sum over
 * them of A[i, :] . W[j, :]. */
AVX512_INLINE void q4_lut_tile(int mr, int nr, int b0, int blocks, const float *pa, size_t pld,
                               const uint8_t *q, size_t qld, const float *scale,
                               const uint8_t *zero, size_t sld, int group, float *c, size_t ldc,
                               bool accumulate)
{
    __m512 acc[4][6];
    #pragma GCC unroll 4
    for (int i = 0; i < mr; i++)
        #pragma GCC unroll 6
        for (int j = 0; j < nr; j++)
            acc[i][j] = _mm512_setzero_ps();
    for (int b = 0; b < blocks; b++) {
        const float *pb = pa + (size_t)b * DY_CPU_Q4_PACK_BLOCK;
        int g = (b0 + b) * 128 / group;
        #pragma GCC unroll 6
        for (int j = 0; j < nr; j++) {
            float z = (float)(zero ? zero[j * sld + g] : 8);
            __m512 table = _mm512_mul_ps(_mm512_sub_ps(q4_iota(), _mm512_set1_ps(z)),
                                         _mm512_set1_ps(scale[j * sld + g]));
            __m512i words = _mm512_loadu_si512(q + j * qld + 64 * (size_t)b);
            _mm_prefetch((const char *)q + (j + nr) * qld + 64 * (size_t)b, _MM_HINT_T0);
            #pragma GCC unroll 8
            for (int s = 0; s < 8; s++) {
                __m512 wv = q4_lookup(words, s, table);
                #pragma GCC unroll 4
                for (int i = 0; i < mr; i++)
                    acc[i][j] = _mm512_fmadd_ps(_mm512_loadu_ps(pb + i * pld + 16 * s), wv,
                                                acc[i][j]);
            }
        }
    }
    #pragma GCC unroll 4
    for (int i = 0; i < mr; i++)
        #pragma GCC unroll 6
        for (int j = 0; j < nr; j++)
            c[(size_t)i * ldc + j] = (accumulate ? c[(size_t)i * ldc + j] : 0.0f) +
                                     _mm512_reduce_add_ps(acc[i][j]);
}

/* The scale of each word of block b of a row, and scale * zero. */
AVX512_INLINE void q4_block_scales(const float *scale, const uint8_t *zero, int group, int b,
                                   __m512 *s, __m512 *sz)
{
    if (group % 128 == 0) {
        int g = b * 128 / group;
        *s = _mm512_set1_ps(scale[g]);
        *sz = _mm512_set1_ps(scale[g] * (float)(zero ? zero[g] : 8));
        return;
    }
    float sv[16], szv[16];
    dy_cpu_q4_word_scales(scale, zero, group, 16 * b, 16, sv, szv);
    *s = _mm512_loadu_ps(sv);
    *sz = _mm512_loadu_ps(szv);
}

/* As the AVX2 q4_tile, a whole block (16 words) per vector: for groups
 * that end inside a block. */
AVX512_INLINE void q4_tile(int mr, int nr, int b0, int blocks, const float *pa, size_t pld,
                           const uint8_t *q, size_t qld, const float *scale,
                           const uint8_t *zero, size_t sld, int group, float *c, size_t ldc,
                           bool accumulate)
{
    __m512 total[4][6];
    #pragma GCC unroll 4
    for (int i = 0; i < mr; i++)
        #pragma GCC unroll 6
        for (int j = 0; j < nr; j++)
            total[i][j] = _mm512_setzero_ps();
    for (int b = 0; b < blocks; b++) {
        const float *pb = pa + (size_t)b * DY_CPU_Q4_PACK_BLOCK;
        __m512 part[4][6];
        #pragma GCC unroll 6
        for (int j = 0; j < nr; j++) {
            __m512i words = _mm512_loadu_si512(q + j * qld + 64 * (size_t)b);
            _mm_prefetch((const char *)q + (j + nr) * qld + 64 * (size_t)b, _MM_HINT_T0);
            #pragma GCC unroll 8
            for (int s = 0; s < 8; s++) {
                __m512 wv = q4_lookup(words, s, q4_iota());
                #pragma GCC unroll 4
                for (int i = 0; i < mr; i++) {
                    __m512 av = _mm512_loadu_ps(pb + i * pld + 16 * s);
                    part[i][j] = s ? _mm512_fmadd_ps(av, wv, part[i][j]) : _mm512_mul_ps(av, wv);
                }
            }
        }
        #pragma GCC unroll 6
        for (int j = 0; j < nr; j++) {
            __m512 s, sz;
            q4_block_scales(scale + j * sld, zero ? zero + j * sld : NULL, group, b0 + b, &s,
                            &sz);
            #pragma GCC unroll 4
            for (int i = 0; i < mr; i++) {
                total[i][j] = _mm512_fmadd_ps(part[i][j], s, total[i][j]);
                total[i][j] = _mm512_fnmadd_ps(sz, _mm512_loadu_ps(pb + i * pld + 128),
                                               total[i][j]);
            }
        }
    }
    #pragma GCC unroll 4
    for (int i = 0; i < mr; i++)
        #pragma GCC unroll 6
        for (int j = 0; j < nr; j++)
            c[(size_t)i * ldc + j] = (accumulate ? c[(size_t)i * ldc + j] : 0.0f) +
                                     _mm512_reduce_add_ps(total[i][j]);
}

#define Q4_CASE(MR, NR_)                                                                  \
    case (MR) * 8 + (NR_):                                                                \
        if (group % 128 == 0)                                                             \
            q4_lut_tile(MR, NR_, b0, blocks, pa, pld, q, qld, scale, zero, sld, group, c, \
                        ldc, accumulate);                                                 \
        else                                                                              \
            q4_tile(MR, NR_, b0, blocks, pa, pld, q, qld, scale, zero, sld, group, c, ldc,  \
                    accumulate);                                                          \
        break;

static AVX512 void q4_tiles(int mr, int nr, int b0, int blocks, const float *pa, size_t pld,
                            const uint8_t *q, size_t qld, const float *scale,
                            const uint8_t *zero, size_t sld, int group, float *c, size_t ldc,
                            bool accumulate)
{
    switch (mr * 8 + nr) {
        Q4_CASE(1, 1) Q4_CASE(1, 2) Q4_CASE(1, 3) Q4_CASE(1, 4) Q4_CASE(1, 5) Q4_CASE(1, 6)
        Q4_CASE(2, 1) Q4_CASE(2, 2) Q4_CASE(2, 3) Q4_CASE(2, 4)
        Q4_CASE(4, 1) Q4_CASE(4, 2)
    }
}

void dy_cpu_q4_tiles_avx512(int nb, const struct dy_cpu_qa *a, const struct dy_cpu_qmat *w,
                            float *tile)
{
    int blocks = w->k / 128;
    size_t qld = (size_t)w->k / 2, sld = (size_t)(w->k / w->group);
    int chunk = dy_cpu_qgemv_chunk(a->m, DY_CPU_Q4_PACK_BLOCK * sizeof(float));
    for (int b0 = 0; b0 < blocks; b0 += chunk) {
        int bn = blocks - b0 < chunk ? blocks - b0 : chunk;
        for (int i0 = 0; i0 < a->m;) {
            int mr = rows_per_tile(a->m - i0, 4);
            for (int j0 = 0; j0 < nb; j0 += NR(mr)) {
                int nr = nb - j0 < NR(mr) ? nb - j0 : NR(mr);
                q4_tiles(mr, nr, b0, bn,
                         a->packed + (size_t)i0 * a->packed_ld + (size_t)b0 * DY_CPU_Q4_PACK_BLOCK,
                         a->packed_ld, w->q + j0 * qld + 64 * (size_t)b0, qld,
                         w->scale + j0 * sld, w->zero ? w->zero + j0 * sld : NULL, sld, w->group,
                         tile + i0 * DY_CPU_TILE_N + j0, DY_CPU_TILE_N, b0 > 0);
            }
            i0 += mr;
        }
    }
}

/* ---- fp8 and int8 ------------------------------------------------------- */

/* 32 elements of fp8 (as f32 times 2^-8, cpu_simd.h's fp8_load8_scaled
 * sixteen at a time, NaN codes as numbers) or int8 (the integers). */
AVX512_INLINE void q8_load32(const uint8_t *p, enum dy_dtype t, __m512 *lo, __m512 *hi)
{
    if (t == DY_I8) {
        *lo = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)p)));
        *hi = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)p + 1)));
        return;
    }
    __m512i h = _mm512_slli_epi16(_mm512_cvtepi8_epi16(_mm256_loadu_si256((const __m256i *)p)), 7);
    h = _mm512_and_si512(h, _mm512_set1_epi16((short)0xbf80));
    *lo = _mm512_cvtph_ps(_mm512_castsi512_si256(h));
    *hi = _mm512_cvtph_ps(_mm512_extracti64x4_epi64(h, 1));
}

/* C[i, j] (+)= A[i, 0:32 * steps] . W[j, 0:32 * steps] in q8_load32's
 * units. */
AVX512_INLINE void q8_tile(int mr, int nr, enum dy_dtype t, int steps, const float *a, size_t lda,
                           const uint8_t *q, size_t qld, float *c, size_t ldc, bool accumulate)
{
    __m512 acc[8][6];
    #pragma GCC unroll 8
    for (int i = 0; i < mr; i++)
        #pragma GCC unroll 6
        for (int j = 0; j < nr; j++)
            acc[i][j] = _mm512_setzero_ps();
    for (int p = 0; p < 32 * steps; p += 32) {
        #pragma GCC unroll 6
        for (int j = 0; j < nr; j++) {
            __m512 lo, hi;
            q8_load32(q + j * qld + p, t, &lo, &hi);
            if (p % 64 == 0)
                _mm_prefetch((const char *)q + (j + nr) * qld + p, _MM_HINT_T0);
            #pragma GCC unroll 8
            for (int i = 0; i < mr; i++) {
                acc[i][j] = _mm512_fmadd_ps(_mm512_loadu_ps(a + i * lda + p), lo, acc[i][j]);
                acc[i][j] = _mm512_fmadd_ps(_mm512_loadu_ps(a + i * lda + p + 16), hi, acc[i][j]);
            }
        }
    }
    #pragma GCC unroll 8
    for (int i = 0; i < mr; i++)
        #pragma GCC unroll 6
        for (int j = 0; j < nr; j++)
            c[(size_t)i * ldc + j] = (accumulate ? c[(size_t)i * ldc + j] : 0.0f) +
                                     _mm512_reduce_add_ps(acc[i][j]);
}

#define Q8_CASE(MR, NR_, T) \
    case (MR) * 8 + (NR_): q8_tile(MR, NR_, T, steps, a, lda, q, qld, c, ldc, accumulate); break;

#define Q8_TILES(NAME, T)                                                                  \
    static AVX512 void NAME(int mr, int nr, int steps, const float *a, size_t lda,        \
                            const uint8_t *q, size_t qld, float *c, size_t ldc,           \
                            bool accumulate)                                               \
    {                                                                                      \
        switch (mr * 8 + nr) {                                                             \
            Q8_CASE(1, 1, T) Q8_CASE(1, 2, T) Q8_CASE(1, 3, T) Q8_CASE(1, 4, T)           \
            Q8_CASE(1, 5, T) Q8_CASE(1, 6, T)                                             \
            Q8_CASE(2, 1, T) Q8_CASE(2, 2, T) Q8_CASE(2, 3, T) Q8_CASE(2, 4, T)           \
            Q8_CASE(4, 1, T) Q8_CASE(4, 2, T)                                             \
            Q8_CASE(8, 1, T)                                                               \
        }                                                                                  \
    }

Q8_TILES(q8_tiles_i8, DY_I8)
Q8_TILES(q8_tiles_fp8, DY_FP8)

/* Whether row p of k fp8 values holds a NaN code (S.1111.111). */
static AVX512 bool fp8_row_nan(const uint8_t *p, int k)
{
    __m512i magnitude = _mm512_set1_epi8(0x7f);
    __mmask64 nan = 0;
    int i = 0;
    for (; i + 64 <= k; i += 64)
        nan |= _mm512_cmpeq_epi8_mask(_mm512_and_si512(_mm512_loadu_si512(p + i), magnitude),
                                      magnitude);
    for (; i < k; i++)
        nan |= (p[i] & 0x7f) == 0x7f;
    return nan != 0;
}

void dy_cpu_q8_gemv_avx512(int nb, const struct dy_cpu_qa *a, const struct dy_cpu_qmat *w,
                           float *tile)
{
    int k = w->k, steps = k / 32, done = 32 * steps;
    bool fp8 = w->dtype == DY_FP8;
    /* in passes over k of whole 128s, so that A's part stays in L1 */
    int chunk = 4 * dy_cpu_qgemv_chunk(a->m, 128 * sizeof(float));
    if (steps == 0)
        for (int i = 0; i < a->m; i++)
            for (int j = 0; j < nb; j++)
                tile[i * DY_CPU_TILE_N + j] = 0.0f;
    for (int s0 = 0; s0 < steps; s0 += chunk) {
        int sn = steps - s0 < chunk ? steps - s0 : chunk;
        for (int i0 = 0; i0 < a->m;) {
            int mr = rows_per_tile(a->m - i0, 8);
            for (int j0 = 0; j0 < nb; j0 += NR(mr)) {
                int nr = nb - j0 < NR(mr) ? nb - j0 : NR(mr);
                (fp8 ? q8_tiles_fp8 : q8_tiles_i8)(
                    mr, nr, sn, a->a + (size_t)i0 * a->lda + 32 * (size_t)s0, a->lda,
                    w->q + (size_t)j0 * k + 32 * (size_t)s0, (size_t)k,
                    tile + i0 * DY_CPU_TILE_N + j0, DY_CPU_TILE_N, s0 > 0);
            }
            i0 += mr;
        }
    }
    /* the tail past the last 32, the units, the scales, and fp8's NaNs */
    for (int j = 0; j < nb; j++) {
        const uint8_t *row = w->q + (size_t)j * k;
        float scale = w->scale[fp8 ? 0 : j];
        bool nan = fp8 && fp8_row_nan(row, k);
        for (int i = 0; i < a->m; i++) {
            const float *ai = a->a + (size_t)i * a->lda;
            float tail = 0.0f;
            for (int p = done; p < k; p++)
                tail += ai[p] * (fp8 ? dy_fp8_to_f32(row[p]) : (float)(int8_t)row[p]);
            float *c = &tile[i * DY_CPU_TILE_N + j];
            *c = nan ? NAN : (*c * (fp8 ? 256.0f : 1.0f) + tail) * scale;
        }
    }
}

#endif /* DY_CPU_X86 */
