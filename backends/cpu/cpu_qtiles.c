/* Quantized weights' kernels (cpu_internal.h): dequantizing rows to f32,
 * and the GEMV tile that reads fp8, int8 and int4 bytes in registers.
 * AVX-512 (cpu_qtiles512.c) or AVX2 + FMA + F16C chosen at run time,
 * portable C otherwise; the dispatch is here.
 *
 * fp8 and int8 under AVX2 need nothing new: the float tiles (cpu_tiles.c)
 * read them as values and integers, and the scales are applied to the sums.
 * int4 has its own tiles. Its bytes hold eight elements per 32-bit word,
 * element 8w + s in nibble s of word w, so nibble s of a vector of words
 * gives elements 8 apart in one or two instructions. A is rearranged once
 * per call to match (dy_cpu_q4_pack): per block of 128 elements (16 words),
 * eight rows of 16, row s holding elements s, 8 + s, ..., 120 + s, and a
 * ninth holding each word's eight elements summed. AVX2 masks nibble s in
 * place, which makes it 16^s times too large, so its rows are packed times
 * 16^-s (exact); a block of a row of W costs it eight masks, conversions
 * and FMAs per row of A and half block, and zero points come out of the
 * sums afterwards, scale * (sum a*q - zero * sum a). The tiles walk k in
 * passes short enough for A's part to stay in L1. */
#include <string.h>

#include "cpu_simd.h"

/* ---- dequantizing: portable C -------------------------------------------- */

/* Element i of row `row` as dy_dequant() has it. */
static float dequant_one(const struct dy_cpu_qmat *w, size_t row, int i)
{
    return dy_dequant(w->q, w->dtype, w->scale, w->zero, w->k, w->group, row, (size_t)i);
}

static void dequant_range_generic(const struct dy_cpu_qmat *w, size_t row, int i0, int i1,
                                  float *out)
{
    for (int i = i0; i < i1; i++)
        out[i - i0] = dequant_one(w, row, i);
}

/* sum over i in [i0, i1) of a[i] * W[row, i], int4, one group at a time */
static float q4_dot_generic(const float *a, const struct dy_cpu_qmat *w, size_t row, int i0,
                            int i1)
{
    const uint8_t *q = w->q + row * (size_t)(w->k / 2);
    size_t first = row * (size_t)(w->k / w->group);
    float sum = 0.0f;
    for (int g0 = i0; g0 < i1;) {
        int g = g0 / w->group, g1 = (g + 1) * w->group < i1 ? (g + 1) * w->group : i1;
        int zero = w->zero ? w->zero[first + g] : 8;
        float part = 0.0f;
        for (int i = g0; i < g1; i++)
            part += a[i] * (float)(((q[i / 2] >> (4 * (i & 1))) & 15) - zero);
        sum += part * w->scale[first + g];
        g0 = g1;
    }
    return sum;
}

void dy_cpu_q4_word_scales(const float *scale, const uint8_t *zero, int group, int w0, int words,
                           float *s, float *sz)
{
    for (int w = 0; w < words; w++) {
        int g = (w0 + w) * 8 / group;
        s[w] = scale[g];
        sz[w] = scale[g] * (float)(zero ? zero[g] : 8);
    }
}

static void q4_gemv_generic(int nb, const struct dy_cpu_qa *a, const struct dy_cpu_qmat *w,
                            float *tile)
{
    for (int j = 0; j < nb; j++)
        for (int i = 0; i < a->m; i++)
            tile[i * DY_CPU_TILE_N + j] = q4_dot_generic(a->a + (size_t)i * a->lda, w,
                                                         (size_t)j, 0, w->k);
}

/* ---- AVX2 + FMA + F16C ----------------------------------------------------- */
#if DY_CPU_X86

static AVX2 void dequant_range_avx2(const struct dy_cpu_qmat *w, size_t row, int i0, int i1,
                                    float *out)
{
    int i = i0;
    if (w->dtype == DY_FP8) {
        /* load8 gives the value exactly, NaN codes included, so the
         * product with the scale rounds as dy_dequant's does */
        const uint8_t *q = w->q + row * (size_t)w->k;
        __m256 s = _mm256_set1_ps(w->scale[0]);
        for (; i + 8 <= i1; i += 8)
            _mm256_storeu_ps(out + i - i0, _mm256_mul_ps(load8(q, DY_FP8, (size_t)i), s));
    } else if (w->dtype == DY_I8) {
        const int8_t *q = (const int8_t *)w->q + row * (size_t)w->k;
        __m256 s = _mm256_set1_ps(w->scale[row]);
        for (; i + 8 <= i1; i += 8)
            _mm256_storeu_ps(out + i - i0, _mm256_mul_ps(load8(q, DY_I8, (size_t)i), s));
    } else if (w->group % 8 == 0) {
        /* eight nibbles of one word, in order, all in one group */
        const uint8_t *q = w->q + row * (size_t)(w->k / 2);
        size_t first = row * (size_t)(w->k / w->group);
        __m256i shifts = _mm256_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28);
        for (; i + 8 <= i1; i += 8) {
            int32_t word;
            memcpy(&word, q + i / 2, 4);
            size_t g = first + (size_t)(i / w->group);
            __m256i nib = _mm256_and_si256(_mm256_srlv_epi32(_mm256_set1_epi32(word), shifts),
                                           _mm256_set1_epi32(15));
            __m256i centred = _mm256_sub_epi32(nib, _mm256_set1_epi32(w->zero ? w->zero[g] : 8));
            _mm256_storeu_ps(out + i - i0, _mm256_mul_ps(_mm256_cvtepi32_ps(centred),
                                                         _mm256_set1_ps(w->scale[g])));
        }
    }
    dequant_range_generic(w, row, i, i1, out + i - i0);
}

/* Nibble s of each of eight words, as f32 times 16^s (s = 7 shifted down:
 * its top bit is the sign of the word). */
AVX2_INLINE __m256 q4_nibbles(__m256i words, int s)
{
    __m256i x = s == 7 ? _mm256_srli_epi32(words, 28)
                       : _mm256_and_si256(words, _mm256_set1_epi32(15 << (4 * s)));
    return _mm256_cvtepi32_ps(x);
}

/* The scale of each of eight words from word w0 of a row (each word's
 * elements share a group), and scale * zero. */
AVX2_INLINE void q4_word_scales(const float *scale, const uint8_t *zero, int group, int w0,
                                __m256 *s, __m256 *sz)
{
    if (group % 64 == 0) {
        int g = w0 * 8 / group;
        float sg = scale[g];
        *s = _mm256_set1_ps(sg);
        *sz = _mm256_set1_ps(sg * (float)(zero ? zero[g] : 8));
        return;
    }
    float sv[8], szv[8];
    dy_cpu_q4_word_scales(scale, zero, group, w0, 8, sv, szv);
    *s = _mm256_loadu_ps(sv);
    *sz = _mm256_loadu_ps(szv);
}

/* One MR x NR tile over blocks [b0, b0 + blocks) (pa and q point at b0):
 * C[i, j] (+)= the sum over them of A[i, :] . W[j, :]. Each half block's
 * sums go into `part`, then into `total` through its scales; MR, NR
 * constant at each call site, so both live in registers (at most 12 of the
 * 16). */
AVX2_INLINE void q4_tile(int mr, int nr, int b0, int blocks, const float *pa, size_t pld,
                         const uint8_t *q, size_t qld, const float *scale, const uint8_t *zero,
                         size_t sld, int group, float *c, size_t ldc, bool accumulate)
{
    __m256 total[4][4];
    #pragma GCC unroll 4
    for (int i = 0; i < mr; i++)
        #pragma GCC unroll 4
        for (int j = 0; j < nr; j++)
            total[i][j] = _mm256_setzero_ps();
    for (int h = 0; h < 2 * blocks; h++) {
        const float *pb = pa + (size_t)(h / 2) * DY_CPU_Q4_PACK_BLOCK + 8 * (h % 2);
        __m256 part[4][4];
        #pragma GCC unroll 4
        for (int j = 0; j < nr; j++) {
            __m256i words = _mm256_loadu_si256((const __m256i *)(q + j * qld + 32 * (size_t)h));
            if (h % 2 == 0) /* the next tile's rows: see cpu_qtiles512.c */
                _mm_prefetch((const char *)q + (j + nr) * qld + 32 * (size_t)h, _MM_HINT_T0);
            #pragma GCC unroll 8
            for (int s = 0; s < 8; s++) {
                __m256 wv = q4_nibbles(words, s);
                #pragma GCC unroll 4
                for (int i = 0; i < mr; i++) {
                    __m256 av = _mm256_loadu_ps(pb + i * pld + 16 * s);
                    part[i][j] = s ? _mm256_fmadd_ps(av, wv, part[i][j]) : _mm256_mul_ps(av, wv);
                }
            }
        }
        #pragma GCC unroll 4
        for (int j = 0; j < nr; j++) {
            __m256 s, sz;
            q4_word_scales(scale + j * sld, zero ? zero + j * sld : NULL, group, 16 * b0 + 8 * h,
                           &s, &sz);
            #pragma GCC unroll 4
            for (int i = 0; i < mr; i++) {
                total[i][j] = _mm256_fmadd_ps(part[i][j], s, total[i][j]);
                total[i][j] = _mm256_fnmadd_ps(sz, _mm256_loadu_ps(pb + i * pld + 128),
                                               total[i][j]);
            }
        }
    }
    __m256 none = _mm256_setzero_ps();
    #pragma GCC unroll 4
    for (int i = 0; i < mr; i++) {
        float sums[4];
        _mm_storeu_ps(sums, hsum4(total[i][0], nr > 1 ? total[i][1] : none,
                                  nr > 2 ? total[i][2] : none, nr > 3 ? total[i][3] : none));
        #pragma GCC unroll 4
        for (int j = 0; j < nr; j++)
            c[(size_t)i * ldc + j] = (accumulate ? c[(size_t)i * ldc + j] : 0.0f) + sums[j];
    }
}

/* Columns of W per tile for MR rows of A: as many accumulator pairs as the
 * registers hold, and at least four independent chains of FMAs. */
#define Q4_NR(mr) ((mr) == 1 ? 4 : (mr) == 2 ? 3 : (mr) == 3 ? 2 : 1)

#define Q4_TILE_CASE(MR, NR)                                                            \
    case (MR) * 8 + (NR):                                                               \
        q4_tile(MR, NR, b0, blocks, pa, pld, q, qld, scale, zero, sld, group, c, ldc, \
                accumulate);                                                            \
        break;

static AVX2 void q4_tiles(int mr, int nr, int b0, int blocks, const float *pa, size_t pld,
                          const uint8_t *q, size_t qld, const float *scale,
                          const uint8_t *zero, size_t sld, int group, float *c, size_t ldc,
                          bool accumulate)
{
    switch (mr * 8 + nr) {
        Q4_TILE_CASE(1, 1) Q4_TILE_CASE(1, 2) Q4_TILE_CASE(1, 3) Q4_TILE_CASE(1, 4)
        Q4_TILE_CASE(2, 1) Q4_TILE_CASE(2, 2) Q4_TILE_CASE(2, 3)
        Q4_TILE_CASE(3, 1) Q4_TILE_CASE(3, 2)
        Q4_TILE_CASE(4, 1)
    }
}

/* tile = A[:, 0:done] . W[:, 0:done]^T, done = k rounded down to 128 */
static AVX2 void q4_tiles_avx2(int nb, const struct dy_cpu_qa *a, const struct dy_cpu_qmat *w,
                               float *tile)
{
    int k = w->k, blocks = k / 128;
    size_t qld = (size_t)k / 2, sld = (size_t)(k / w->group);
    int chunk = dy_cpu_qgemv_chunk(a->m, DY_CPU_Q4_PACK_BLOCK * sizeof(float));
    /* passes over k, then rows of A: the tile's rows of W come from memory
     * in the first pass over rows and from cache in any other */
    for (int b0 = 0; b0 < blocks; b0 += chunk) {
        int bn = blocks - b0 < chunk ? blocks - b0 : chunk;
        for (int i0 = 0; i0 < a->m; i0 += 4) {
            int mr = a->m - i0 < 4 ? a->m - i0 : 4;
            for (int j0 = 0; j0 < nb; j0 += Q4_NR(mr)) {
                int nr = nb - j0 < Q4_NR(mr) ? nb - j0 : Q4_NR(mr);
                q4_tiles(mr, nr, b0, bn,
                         a->packed + (size_t)i0 * a->packed_ld + (size_t)b0 * DY_CPU_Q4_PACK_BLOCK,
                         a->packed_ld, w->q + j0 * qld + 64 * (size_t)b0, qld,
                         w->scale + j0 * sld, w->zero ? w->zero + j0 * sld : NULL, sld, w->group,
                         tile + i0 * DY_CPU_TILE_N + j0, DY_CPU_TILE_N, b0 > 0);
            }
        }
    }
}

#endif /* DY_CPU_X86 */

/* ---- dispatch ---------------------------------------------------------------- */

void dy_cpu_dequant_range(const struct dy_cpu_qmat *w, size_t row, int i0, int i1, float *out)
{
#if DY_CPU_X86
    if (dy_cpu_avx2()) {
        dequant_range_avx2(w, row, i0, i1, out);
        return;
    }
#endif
    dequant_range_generic(w, row, i0, i1, out);
}

void dy_cpu_dequant_rows(const struct dy_cpu_qmat *w, int rows, float *out, size_t ldo)
{
    for (int r = 0; r < rows; r++)
        dy_cpu_dequant_range(w, (size_t)r, 0, w->k, out + (size_t)r * ldo);
}

size_t dy_cpu_q4_packed_floats(int k, int group)
{
#if DY_CPU_X86
    if (dy_cpu_avx2() && group % 8 == 0 && k >= 128)
        return (size_t)(k / 128) * DY_CPU_Q4_PACK_BLOCK;
#endif
    return 0;
}

void dy_cpu_q4_pack(const float *a, size_t lda, int m, int k, float *packed, size_t packed_ld)
{
    /* AVX2: 16^-s for s < 7, whose nibbles it masks in place; AVX-512
     * shifts each nibble down */
    static const float masked[8] = { 1.0f, 0x1p-4f, 0x1p-8f, 0x1p-12f, 0x1p-16f,
                                      0x1p-20f, 0x1p-24f, 1.0f };
    static const float shifted[8] = { 1.0f, 1.0f, 1.0f, 1.0f, 1.0f, 1.0f, 1.0f, 1.0f };
    const float *unscale = dy_cpu_avx512() ? shifted : masked;
    for (int i = 0; i < m; i++) {
        const float *row = a + (size_t)i * lda;
        for (int b = 0; b < k / 128; b++) {
            const float *x = row + 128 * b;
            float *p = packed + (size_t)i * packed_ld + (size_t)b * DY_CPU_Q4_PACK_BLOCK;
            for (int w = 0; w < 16; w++) {
                float sum = 0.0f;
                for (int s = 0; s < 8; s++) {
                    p[16 * s + w] = x[8 * w + s] * unscale[s];
                    sum += x[8 * w + s];
                }
                p[128 + w] = sum;
            }
        }
    }
}

void dy_cpu_qgemv_tile(int nb, const struct dy_cpu_qa *a, const struct dy_cpu_qmat *w,
                       float *tile)
{
    if (w->dtype != DY_I4) {
#if DY_CPU_X86
        if (dy_cpu_avx512()) {
            dy_cpu_q8_gemv_avx512(nb, a, w, tile);
            return;
        }
#endif
        /* the float tiles read fp8 values and int8 integers; scale the sums */
        dy_cpu_gemm_tile(a->m, nb, w->k, a->a, a->lda, w->q, (size_t)w->k, w->dtype, tile);
        for (int i = 0; i < a->m; i++)
            for (int j = 0; j < nb; j++)
                tile[i * DY_CPU_TILE_N + j] *= w->scale[w->dtype == DY_FP8 ? 0 : j];
        return;
    }
#if DY_CPU_X86
    if (a->packed) {
        int done = w->k / 128 * 128;
        if (dy_cpu_avx512())
            dy_cpu_q4_tiles_avx512(nb, a, w, tile);
        else
            q4_tiles_avx2(nb, a, w, tile);
        if (done < w->k)
            for (int i = 0; i < a->m; i++)
                for (int j = 0; j < nb; j++)
                    tile[i * DY_CPU_TILE_N + j] += q4_dot_generic(a->a + (size_t)i * a->lda, w,
                                                                  (size_t)j, done, w->k);
        return;
    }
#endif
    q4_gemv_generic(nb, a, w, tile);
}
