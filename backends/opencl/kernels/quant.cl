/* Quantized weights (backend.h's struct dy_quant): fp8 with one scale per
 * matrix, int8 with one per row, int4 with one per group of `group`
 * elements along a row and u8 zero points (or 8). Element (j, i) is
 * common.cl's ldw. After gemm.cl and moe.cl, whose GEMV pieces and
 * expert_at the kernels here reuse. */

/* out[r, i] = B[r, i] for rows [0, rows), rounded to out_dtype: the f32
 * value is the host's bit for bit (ldw), and st rounds as backend.h. */
__kernel void dequantize(__global const uchar *q, ulong q_off, int q_dtype,
                         __global const uchar *scale, ulong scale_off,
                         __global const uchar *zero, ulong zero_off, int group,
                         __global uchar *out, ulong out_off, int out_stride, int out_dtype,
                         int rows, int k)
{
    int i = get_global_id(0), r = get_global_id(1);
    if (i >= k || r >= rows)
        return;
    float w = ldw(CBYTES(q, q_off), q_dtype, (__global const float *)CBYTES(scale, scale_off),
                  zero ? CBYTES(zero, zero_off) : 0, k, group, r, i);
    st(BYTES(out, out_off), out_dtype, (size_t)r * out_stride + i, w);
}

/* Weights per item and load in the GEMV: 16 bytes of fp8 or int8, 8 of
 * int4. */
#define QCHUNK 16
#define QSTEP (GEMV_LANES * QCHUNK)

/* Eight nibbles of w, the lowest first, less `bias` - 2^23: each through
 * the bits of 2^23 + nibble (as i8x4_to_f32), so that the zero point's
 * subtraction is the conversion's. */
float8 nibbles8(uint w, float bias)
{
    uint8 n = ((uint8)w >> (uint8)(0, 4, 8, 12, 16, 20, 24, 28)) & 15u;
    return as_float8(n | 0x4b000000u) - bias;
}

/* The QCHUNK weights of a row from element p on (a multiple of QCHUNK; the
 * row on 16 bytes, 8 for int4, and an int4 group a multiple of QCHUNK), as
 * q - zero (fp8: the value); their scale goes to *s. srow and zrow are the
 * row's scales and zero points (fp8: the matrix's one scale). */
float16 ldq16(__global const uchar *brow, int t, int p, __global const float *srow,
              __global const uchar *zrow, int group, float *s)
{
    if (t == DT_I4) {
        int g = p / group;
        *s = srow[g];
        float bias = 8388608.0f + (float)(zrow ? zrow[g] : 8);
        uint2 w = *(__global const uint2 *)(brow + p / 2);
        return (float16)(nibbles8(w.x, bias), nibbles8(w.y, bias));
    }
    *s = srow[0];
    return bytes16(brow + p, t);
}

float16 ld16_a(__global const uchar *a, int a_vec, size_t i)
{
    return (float16)(ld8_a(a, DT_F32, a_vec, i), ld8_a(a, DT_F32, a_vec, i + 8));
}

/* The dot products of `w` with up to four rows of A (element offsets a0 to
 * a3, `live` of them real) from element p on. */
float4 dot16_rows(__global const uchar *a, int a_vec, size_t a0, size_t a1, size_t a2, size_t a3,
                  int live, int p, float16 w)
{
    return (float4)(dot16(ld16_a(a, a_vec, a0 + p), w),
                    live > 1 ? dot16(ld16_a(a, a_vec, a1 + p), w) : 0.0f,
                    live > 2 ? dot16(ld16_a(a, a_vec, a2 + p), w) : 0.0f,
                    live > 3 ? dot16(ld16_a(a, a_vec, a3 + p), w) : 0.0f);
}

/* gemm.cl's gemv_rows over quantized B (q, scale, zero: the matrix's, or
 * an expert's): GEMV_LANES items own row j of B and read its bytes QCHUNK
 * weights at a time, two loads in flight, each chunk's dot products scaled
 * once (one scale covers a chunk); `k_vec` weights go that way (0 when the
 * rows are not aligned for it), the rest element by element. A and C are
 * f32; bias is bias_dtype. Rows of A and C as in gemv_rows. */
static inline void gemv_q_rows(__local float4 *red, __global const uchar *a, ulong a_off, int lda,
                               int a_vec, __global const int *a_rows, int a_row_div, int row0,
                               __global const uchar *q, int q_dtype, __global const float *scale,
                               __global const uchar *zero, int group,
                               __global const uchar *bias, int bias_dtype, __global uchar *c,
                               ulong c_off, int ldc, float beta, int m, int n, int k, int k_vec)
{
    int lid = get_local_id(0), lane = lid % GEMV_LANES;
    int j = get_group_id(0) * GEMV_ROWS + lid / GEMV_LANES;
    /* items past the last row compute row n - 1 again (gemv_rows says why) */
    int row = min(j, n - 1);
    __global const uchar *ap = CBYTES(a, a_off);
    int row_scales = q_dtype == DT_I4 ? k / group : q_dtype == DT_I8 ? 1 : 0;
    __global const uchar *brow = q + dtype_bytes(q_dtype, (size_t)row * k);
    __global const float *srow = scale + (size_t)row * row_scales;
    __global const uchar *zrow = zero ? zero + (size_t)row * row_scales : 0;
    for (int r0 = 0; r0 < m; r0 += 4) {
        int live = m - r0;
        size_t a0 = a_row(a_rows, a_row_div, row0 + r0) * lda;
        size_t a1 = live > 1 ? a_row(a_rows, a_row_div, row0 + r0 + 1) * lda : a0;
        size_t a2 = live > 2 ? a_row(a_rows, a_row_div, row0 + r0 + 2) * lda : a0;
        size_t a3 = live > 3 ? a_row(a_rows, a_row_div, row0 + r0 + 3) * lda : a0;
        float4 acc = 0.0f;
        int p = lane * QCHUNK;
        for (; p + QSTEP < k_vec; p += 2 * QSTEP) {
            float s0, s1;
            float16 w0 = ldq16(brow, q_dtype, p, srow, zrow, group, &s0);
            float16 w1 = ldq16(brow, q_dtype, p + QSTEP, srow, zrow, group, &s1);
            acc += s0 * dot16_rows(ap, a_vec, a0, a1, a2, a3, live, p, w0) +
                   s1 * dot16_rows(ap, a_vec, a0, a1, a2, a3, live, p + QSTEP, w1);
        }
        for (; p < k_vec; p += QSTEP) {
            float s;
            float16 w = ldq16(brow, q_dtype, p, srow, zrow, group, &s);
            acc += s * dot16_rows(ap, a_vec, a0, a1, a2, a3, live, p, w);
        }
        for (p = k_vec + lane; p < k; p += GEMV_LANES) {
            float w = ldw(q, q_dtype, scale, zero, k, group, row, p);
            acc += w * (float4)(ld(ap, DT_F32, a0 + p), live > 1 ? ld(ap, DT_F32, a1 + p) : 0.0f,
                                live > 2 ? ld(ap, DT_F32, a2 + p) : 0.0f,
                                live > 3 ? ld(ap, DT_F32, a3 + p) : 0.0f);
        }
        red[lid] = acc;
        barrier(CLK_LOCAL_MEM_FENCE);
        for (int s = GEMV_LANES / 2; s > 0; s >>= 1) {
            if (lane < s)
                red[lid] += red[lid + s];
            barrier(CLK_LOCAL_MEM_FENCE);
        }
        if (j < n && lane < 4 && lane < live) {
            float sum = lane_of(red[lid - lane], lane);
            size_t ci = (size_t)(row0 + r0 + lane) * ldc + j;
            __global uchar *cp = BYTES(c, c_off);
            st(cp, DT_F32, ci, epilogue(sum, bias, bias_dtype, j, cp, DT_F32, ci, beta));
        }
        barrier(CLK_LOCAL_MEM_FENCE);
    }
}

#define GEMV_Q_PARAMS                                                                       \
    __global const uchar *a, ulong a_off, int lda, int a_vec, __global const uchar *b,      \
        ulong b_off, int b_dtype, __global const uchar *scale, ulong scale_off,             \
        __global const uchar *zero, ulong zero_off, int group, __global const uchar *bias,  \
        ulong bias_off, int bias_dtype, __global uchar *c, ulong c_off, int ldc, float beta, \
        int m, int n, int k, int k_vec

#define GEMV_Q_CALL(rows_of_a)                                                              \
    gemv_q_rows(red, a, a_off, lda, a_vec, 0, 1, 0, CBYTES(b, b_off), b_dtype,              \
                (__global const float *)CBYTES(scale, scale_off),                           \
                zero ? CBYTES(zero, zero_off) : 0, group, bias ? CBYTES(bias, bias_off) : 0, \
                bias_dtype, c, c_off, ldc, beta, rows_of_a, n, k, k_vec)

/* The dense GEMV over quantized B as it was before gemv_q_lanes, kept
 * while the two are compared (gemm.cl's gemv_old says why). */
__kernel __attribute__((reqd_work_group_size(WG, 1, 1)))
void gemv_q_old(GEMV_Q_PARAMS)
{
    __local float4 red[WG];
    GEMV_Q_CALL(m);
}

__kernel __attribute__((reqd_work_group_size(WG, 1, 1)))
void gemv_q1_old(GEMV_Q_PARAMS)
{
    __local float4 red[WG];
    GEMV_Q_CALL(1);
}

/* The products of sixteen weights with sixteen elements of A, folded to
 * eight lanes (summed across once per pass, gemv_lanes says why). */
float8 mul16(float16 x, float16 w)
{
    return x.lo * w.lo + x.hi * w.hi;
}

/* gemm.cl's gemv_lanes over quantized B (q, scale, zero: the matrix's):
 * `lanes` items own row j of B and read its bytes QCHUNK weights at a
 * time, two chunks in flight, each chunk's products scaled once (one scale
 * covers a chunk); `k_vec` weights go that way (0 when the rows are not
 * aligned for it), the rest element by element. A and C are f32; bias is
 * bias_dtype. */
static inline void gemv_q_lanes(__local float8 *red, __global const uchar *a, ulong a_off, int lda,
                                int a_vec, __global const uchar *q, int q_dtype,
                                __global const float *scale, __global const uchar *zero,
                                int group, __global const uchar *bias, int bias_dtype,
                                __global uchar *c, ulong c_off, int ldc, float beta, int m, int n,
                                int k, int k_vec, int lanes)
{
    int lid = get_local_id(0), lane = lid % lanes;
    int j = get_group_id(0) * (WG / lanes) + lid / lanes;
    /* items past the last row compute row n - 1 again (gemv_lanes says why) */
    int row = min(j, n - 1);
    __global const uchar *ap = CBYTES(a, a_off);
    int row_scales = q_dtype == DT_I4 ? k / group : q_dtype == DT_I8 ? 1 : 0;
    __global const uchar *brow = q + dtype_bytes(q_dtype, (size_t)row * k);
    __global const float *srow = scale + (size_t)row * row_scales;
    __global const uchar *zrow = zero ? zero + (size_t)row * row_scales : 0;
    const int step = lanes * QCHUNK;
    for (int r0 = 0; r0 < m; r0 += GEMV_PASS) {
        int live = min(m - r0, GEMV_PASS);
        size_t ar[GEMV_PASS];
        float8 acc[GEMV_PASS];
#pragma unroll
        for (int r = 0; r < GEMV_PASS; r++) {
            ar[r] = (size_t)(r < live ? r0 + r : r0) * lda;
            acc[r] = 0.0f;
        }
        int p = lane * QCHUNK;
        for (; p + step < k_vec; p += 2 * step) {
            float s0, s1;
            float16 w0 = ldq16(brow, q_dtype, p, srow, zrow, group, &s0);
            float16 w1 = ldq16(brow, q_dtype, p + step, srow, zrow, group, &s1);
#pragma unroll
            for (int r = 0; r < GEMV_PASS; r++)
                if (r < live)
                    acc[r] += s0 * mul16(ld16_a(ap, a_vec, ar[r] + p), w0) +
                              s1 * mul16(ld16_a(ap, a_vec, ar[r] + p + step), w1);
        }
        for (; p < k_vec; p += step) {
            float s;
            float16 w = ldq16(brow, q_dtype, p, srow, zrow, group, &s);
#pragma unroll
            for (int r = 0; r < GEMV_PASS; r++)
                if (r < live)
                    acc[r] += s * mul16(ld16_a(ap, a_vec, ar[r] + p), w);
        }
        for (p = k_vec + lane; p < k; p += lanes) {
            float w = ldw(q, q_dtype, scale, zero, k, group, row, p);
#pragma unroll
            for (int r = 0; r < GEMV_PASS; r++)
                if (r < live)
                    acc[r].s0 += w * ld(ap, DT_F32, ar[r] + p);
        }
        /* the sums meet as in gemv_lanes (a function of their own there
         * breaks the SPIR-V module: spirv-val rejects its entry points) */
        red[lid] = (float8)(sum8(acc[0]), sum8(acc[1]), sum8(acc[2]), sum8(acc[3]), sum8(acc[4]),
                            sum8(acc[5]), sum8(acc[6]), sum8(acc[7]));
        barrier(CLK_LOCAL_MEM_FENCE);
        __local const float *parts = (__local const float *)(red + (lid - lane));
        for (int r = lane; r < live && j < n; r += lanes) {
            float sum = 0.0f;
            for (int l = 0; l < lanes; l++)
                sum += parts[l * 8 + r];
            size_t ci = (size_t)(r0 + r) * ldc + j;
            __global uchar *cp = BYTES(c, c_off);
            st(cp, DT_F32, ci, epilogue(sum, bias, bias_dtype, j, cp, DT_F32, ci, beta));
        }
        barrier(CLK_LOCAL_MEM_FENCE);
    }
}

#define GEMV_Q_LANES_CALL(rows_of_a)                                                          \
    gemv_q_lanes(red, a, a_off, lda, a_vec, CBYTES(b, b_off), b_dtype,                        \
                 (__global const float *)CBYTES(scale, scale_off),                            \
                 zero ? CBYTES(zero, zero_off) : 0, group, bias ? CBYTES(bias, bias_off) : 0, \
                 bias_dtype, c, c_off, ldc, beta, rows_of_a, n, k, k_vec, lanes)

/* The dense GEMV over quantized B; gemv_q1 for one row of A (as gemv1). */
__kernel __attribute__((reqd_work_group_size(WG, 1, 1)))
void gemv_q(GEMV_Q_PARAMS, int lanes)
{
    __local float8 red[WG];
    GEMV_Q_LANES_CALL(m);
}

__kernel __attribute__((reqd_work_group_size(WG, 1, 1)))
void gemv_q1(GEMV_Q_PARAMS, int lanes)
{
    __local float8 red[WG];
    GEMV_Q_LANES_CALL(1);
}

/* The dense GEMV over quantized B in ops.cl's span layout, for CPU
 * devices: gemv_q's arguments and geometry (`lanes` 1), but each item
 * streams its row of B with one loop per dtype, sixteen weights a step
 * converted with a CPU's own conversions (int8) or sixteen-wide integer
 * code (fp8); int4 a group at a time, its scale and zero point read once.
 * fp8 and int8 rows have one scale, applied to the sum; int4's scale each
 * group's sum. Up to QPASS rows of A share each step's weights. */
#define QPASS 4

/* nibbles8 of w.x, then of w.y, in one sixteen-wide shift. */
float16 nibbles16(uint2 w, float bias)
{
    uint16 n = ((uint16)((uint8)w.x, (uint8)w.y) >>
                (uint16)(0, 4, 8, 12, 16, 20, 24, 28, 0, 4, 8, 12, 16, 20, 24, 28)) & 15u;
    return as_float16(n | 0x4b000000u) - bias;
}

/* Sixteen fp8 or int8 weights as f32 (int8 without its scale). */
float16 q8x16_to_f32(uchar16 b, bool fp8)
{
    return fp8 ? fp8x16_to_f32(b) : convert_float16(as_char16(b));
}

/* The sums of an fp8 or int8 row (k_vec weights, a multiple of 16) with
 * `live` rows of A into acc and acc2, two multiply-add chains a row. fp8
 * is a constant where this is inlined: no dtype test in the loop. */
__attribute__((always_inline)) static inline void
gemv_q8_span(float16 *acc, float16 *acc2, __global const float *const *ar, int live,
             __global const uchar *brow, int k_vec, bool fp8)
{
    int p = 0;
    for (; p + 32 <= k_vec; p += 32) {
        float16 w0 = q8x16_to_f32(vload16(0, brow + p), fp8);
        float16 w1 = q8x16_to_f32(vload16(0, brow + p + 16), fp8);
#pragma unroll
        for (int r = 0; r < QPASS; r++) {
            if (r < live) {
                acc[r] += vload16(0, ar[r] + p) * w0;
                acc2[r] += vload16(0, ar[r] + p + 16) * w1;
            }
        }
    }
    if (p < k_vec) {
        float16 w0 = q8x16_to_f32(vload16(0, brow + p), fp8);
#pragma unroll
        for (int r = 0; r < QPASS; r++)
            if (r < live)
                acc[r] += vload16(0, ar[r] + p) * w0;
    }
}

static inline void gemv_q_span_rows(__global const uchar *a, ulong a_off, int lda,
                                    __global const uchar *q, int q_dtype,
                                    __global const float *scale, __global const uchar *zero,
                                    int group, __global const uchar *bias, int bias_dtype,
                                    __global uchar *c, ulong c_off, int ldc, float beta, int m,
                                    int n, int k, int k_vec)
{
    int j = get_global_id(0);
    if (j >= n)
        return;
    __global const float *ap = (__global const float *)CBYTES(a, a_off);
    int row_scales = q_dtype == DT_I4 ? k / group : q_dtype == DT_I8 ? 1 : 0;
    __global const uchar *brow = q + dtype_bytes(q_dtype, (size_t)j * k);
    __global const float *srow = scale + (size_t)j * row_scales;
    __global const uchar *zrow = zero ? zero + (size_t)j * row_scales : 0;
    for (int r0 = 0; r0 < m; r0 += QPASS) {
        int live = min(m - r0, QPASS);
        __global const float *ar[QPASS];
        float16 acc[QPASS];
#pragma unroll
        for (int r = 0; r < QPASS; r++) {
            ar[r] = ap + (size_t)(r < live ? r0 + r : r0) * lda;
            acc[r] = 0.0f;
        }
        /* two sums a row, added apart, so that two multiply-add chains,
         * not one, wait on their latency */
        float16 acc2[QPASS];
#pragma unroll
        for (int r = 0; r < QPASS; r++)
            acc2[r] = 0.0f;
        if (q_dtype == DT_I4) {
            for (int g0 = 0; g0 < k_vec; g0 += group) {
                float zero_point = (float)(zrow ? zrow[g0 / group] : 8);
                float16 lo_sums[QPASS], hi_sums[QPASS];
#pragma unroll
                for (int r = 0; r < QPASS; r++)
                    lo_sums[r] = hi_sums[r] = 0.0f;
                int p = g0;
                /* 32 weights from 16 bytes: the low nibbles are the even
                 * elements, the high ones the odd */
                for (; p + 32 <= g0 + group; p += 32) {
                    uchar16 b = vload16(0, brow + p / 2);
                    float16 lo = convert_float16(b & (uchar)15) - zero_point;
                    float16 hi = convert_float16(b >> (uchar)4) - zero_point;
#pragma unroll
                    for (int r = 0; r < QPASS; r++) {
                        if (r < live) {
                            float16 x0 = vload16(0, ar[r] + p), x1 = vload16(0, ar[r] + p + 16);
                            lo_sums[r] += (float16)(x0.even, x1.even) * lo;
                            hi_sums[r] += (float16)(x0.odd, x1.odd) * hi;
                        }
                    }
                }
                if (p < g0 + group) {
                    float16 w16 = nibbles16(vload2(0, (__global const uint *)(brow + p / 2)),
                                            8388608.0f + zero_point);
#pragma unroll
                    for (int r = 0; r < QPASS; r++)
                        if (r < live)
                            lo_sums[r] += vload16(0, ar[r] + p) * w16;
                }
                float s = srow[g0 / group];
#pragma unroll
                for (int r = 0; r < QPASS; r++) {
                    acc[r] += s * lo_sums[r];
                    acc2[r] += s * hi_sums[r];
                }
            }
        } else if (q_dtype == DT_FP8) {
            gemv_q8_span(acc, acc2, ar, live, brow, k_vec, true);
        } else {
            gemv_q8_span(acc, acc2, ar, live, brow, k_vec, false);
        }
        float row_scale = q_dtype == DT_I4 ? 1.0f : srow[0];
        /* unrolled, as every loop over acc and ar: an array indexed by a
         * variable stays in memory, and its zeroing becomes a copy from a
         * constant that the SPIR-V module cannot list */
#pragma unroll
        for (int r = 0; r < QPASS; r++) {
            if (r < live) {
                float sum = sum16(acc[r] + acc2[r]) * row_scale;
                for (int p = k_vec; p < k; p++)
                    sum += ldw(q, q_dtype, scale, zero, k, group, j, p) * ar[r][p];
                size_t ci = (size_t)(r0 + r) * ldc + j;
                __global uchar *cp = BYTES(c, c_off);
                st(cp, DT_F32, ci, epilogue(sum, bias, bias_dtype, j, cp, DT_F32, ci, beta));
            }
        }
    }
}

#define GEMV_Q_SPAN_CALL(rows_of_a)                                                           \
    gemv_q_span_rows(a, a_off, lda, CBYTES(b, b_off), b_dtype,                                \
                     (__global const float *)CBYTES(scale, scale_off),                        \
                     zero ? CBYTES(zero, zero_off) : 0, group, bias ? CBYTES(bias, bias_off) : 0, \
                     bias_dtype, c, c_off, ldc, beta, rows_of_a, n, k, k_vec)

__kernel void gemv_q_span(GEMV_Q_PARAMS, int lanes)
{
    GEMV_Q_SPAN_CALL(m);
}

__kernel void gemv_q1_span(GEMV_Q_PARAMS, int lanes)
{
    GEMV_Q_SPAN_CALL(1);
}

/* moe.cl's gemv_grouped over quantized experts: expert e's bytes start
 * e * expert_bytes after the first's, its scales and zero points
 * e * expert_scales after theirs. */
__kernel __attribute__((reqd_work_group_size(WG, 1, 1)))
void gemv_grouped_q(__global const uchar *a, ulong a_off, int lda, int a_vec,
                    __global const uchar *a_rows, ulong a_rows_off, int a_row_div,
                    __global const uchar *b, ulong b_off, int b_dtype, __global const uchar *scale,
                    ulong scale_off, __global const uchar *zero, ulong zero_off, int group,
                    ulong expert_bytes, ulong expert_scales, __global uchar *c, ulong c_off,
                    int ldc, __global const uchar *offsets, ulong offsets_off, int rows,
                    int experts, int by_row, int n, int k, int k_vec)
{
    __local float4 red[WG];
    __global const int *off = CINTS(offsets, offsets_off);
    int slot = get_group_id(1);
    int e = by_row ? expert_at(off, experts, slot) : slot;
    int row0 = min(off[e], rows), m = min(off[e + 1], rows) - row0;
    if (m <= 0 || (by_row && row0 != slot))
        return;
    __global const float *sp = (__global const float *)CBYTES(scale, scale_off) +
                               (size_t)e * expert_scales;
    __global const uchar *zp = zero ? CBYTES(zero, zero_off) + (size_t)e * expert_scales : 0;
    gemv_q_rows(red, a, a_off, lda, a_vec, a_rows ? CINTS(a_rows, a_rows_off) : 0, a_row_div,
                row0, CBYTES(b, b_off) + (size_t)e * expert_bytes, b_dtype, sp, zp, group, 0,
                DT_F32, c, c_off, ldc, 0.0f, m, n, k, k_vec);
}
