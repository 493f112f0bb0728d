/* GEMM pieces: C[m,n] = beta * C + A[m,k] . B[n,k]^T (+ bias[n]).
 * B (the weight) is [out, in] as Hugging Face stores it. */

float epilogue(float acc, __global const uchar *bias, int bias_dtype, int j,
               __global const uchar *c, int c_dtype, size_t ci, float beta)
{
    if (bias)
        acc += ld(bias, bias_dtype, j);
    if (beta != 0.0f)
        acc += beta * ld(c, c_dtype, ci);
    return acc;
}

/* Items per row of B (a warp on NVIDIA) and rows of B per work-group. */
#define GEMV_LANES 32
#define GEMV_ROWS (WG / GEMV_LANES)

/* Eight elements of A from i on: wide loads when the host says the rows
 * are f32 on 16 bytes. */
float8 ld8_a(__global const uchar *a, int a_dtype, int a_vec, size_t i)
{
    return a_vec ? ld8_aligned(a + i * 4, DT_F32) : ld8(a, a_dtype, i);
}

/* A row of A, from element ai on, against four loaded pieces of B, each
 * `step` elements after the last. */
float dot_row(__global const uchar *a, int a_dtype, int a_vec, size_t ai, int step, float8 w0,
              float8 w1, float8 w2, float8 w3)
{
    return dot8(ld8_a(a, a_dtype, a_vec, ai), w0) + dot8(ld8_a(a, a_dtype, a_vec, ai + step), w1) +
           dot8(ld8_a(a, a_dtype, a_vec, ai + 2 * step), w2) +
           dot8(ld8_a(a, a_dtype, a_vec, ai + 3 * step), w3);
}

/* Row r of A: a_rows[r] / a_row_div where rows are gathered (MoE's sorted
 * pairs, k to a token), else r. */
static inline size_t a_row(__global const int *a_rows, int a_row_div, int r)
{
    return a_rows ? (size_t)(a_rows[r] / a_row_div) : (size_t)r;
}

/* Few rows of A (decode): memory-bound on B, which is streamed from memory
 * once. GEMV_LANES items own one row j of B and stride k eight elements at
 * a time, four loads in flight. Rows of A go four at a time, their sums in
 * a float4 (registers, whatever the compiler unrolls), which a tree in
 * local memory adds up; further passes over B for more than four rows hit
 * the cache. `k_vec` elements go through aligned wide loads (0 when rows of
 * B are not on 16 bytes), the rest element by element. Inlined with m = 1
 * (gemv1: one sequence decoding), the tests on m fold away.
 *
 * Row i < m is row row0 + i of C and row a_row(a_rows, a_row_div, row0 + i)
 * of A: the grouped GEMV (moe.cl) gathers its rows; plain GEMV passes no
 * a_rows and row0 0, which folds to rows 0..m.
 *
 * swiglu_half > 0 (DY_ACT_SWIGLU, n = 2 swiglu_half): a work-group's first
 * GEMV_ROWS / 2 rows of B are gate rows j, the others their up rows
 * swiglu_half + j, and column j of C gets silu(gate) * up. */
static inline void gemv_rows(__local float4 *red, __global const uchar *a, ulong a_off, int lda,
                             int a_dtype, int a_vec, __global const int *a_rows, int a_row_div,
                             int row0, __global const uchar *b, ulong b_off, int ldb,
                             int b_dtype, __global const uchar *bias, ulong bias_off,
                             __global uchar *c, ulong c_off, int ldc, int c_dtype, float beta,
                             int m, int n, int k, int k_vec, int swiglu_half)
{
    int lid = get_local_id(0), lane = lid % GEMV_LANES, slot = lid / GEMV_LANES;
    int j = get_group_id(0) * GEMV_ROWS + slot, row;
    if (swiglu_half) {
        j = get_group_id(0) * (GEMV_ROWS / 2) + slot % (GEMV_ROWS / 2);
        row = (slot < GEMV_ROWS / 2 ? 0 : swiglu_half) + min(j, swiglu_half - 1);
    } else {
        /* items past the last row compute row n - 1 again: they must reach
         * the barriers, and their sums are never stored */
        row = min(j, n - 1);
    }
    __global const uchar *ap = CBYTES(a, a_off);
    size_t b_esize = b_dtype == DT_F32 ? 4 : 2;
    __global const uchar *brow = CBYTES(b, b_off) + (size_t)row * ldb * b_esize;
    const int step = GEMV_LANES * 8;
    for (int r0 = 0; r0 < m; r0 += 4) {
        /* element offsets of the pass's rows of A (a row past m repeats
         * the first; it is never read) */
        size_t a0 = a_row(a_rows, a_row_div, row0 + r0) * lda;
        size_t a1 = r0 + 1 < m ? a_row(a_rows, a_row_div, row0 + r0 + 1) * lda : a0;
        size_t a2 = r0 + 2 < m ? a_row(a_rows, a_row_div, row0 + r0 + 2) * lda : a0;
        size_t a3 = r0 + 3 < m ? a_row(a_rows, a_row_div, row0 + r0 + 3) * lda : a0;
        float4 acc = 0.0f;
        int p = lane * 8;
        for (; p + 3 * step < k_vec; p += 4 * step) {
            float8 w0 = ld8_aligned(brow + (size_t)p * b_esize, b_dtype);
            float8 w1 = ld8_aligned(brow + (size_t)(p + step) * b_esize, b_dtype);
            float8 w2 = ld8_aligned(brow + (size_t)(p + 2 * step) * b_esize, b_dtype);
            float8 w3 = ld8_aligned(brow + (size_t)(p + 3 * step) * b_esize, b_dtype);
            acc.s0 += dot_row(ap, a_dtype, a_vec, a0 + p, step, w0, w1, w2, w3);
            if (r0 + 1 < m)
                acc.s1 += dot_row(ap, a_dtype, a_vec, a1 + p, step, w0, w1, w2, w3);
            if (r0 + 2 < m)
                acc.s2 += dot_row(ap, a_dtype, a_vec, a2 + p, step, w0, w1, w2, w3);
            if (r0 + 3 < m)
                acc.s3 += dot_row(ap, a_dtype, a_vec, a3 + p, step, w0, w1, w2, w3);
        }
        for (; p < k_vec; p += step) {
            float8 w = ld8_aligned(brow + (size_t)p * b_esize, b_dtype);
            acc.s0 += dot8(ld8_a(ap, a_dtype, a_vec, a0 + p), w);
            if (r0 + 1 < m)
                acc.s1 += dot8(ld8_a(ap, a_dtype, a_vec, a1 + p), w);
            if (r0 + 2 < m)
                acc.s2 += dot8(ld8_a(ap, a_dtype, a_vec, a2 + p), w);
            if (r0 + 3 < m)
                acc.s3 += dot8(ld8_a(ap, a_dtype, a_vec, a3 + p), w);
        }
        for (p = k_vec + lane; p < k; p += GEMV_LANES) {
            float w = ld(brow, b_dtype, p);
            acc += w * (float4)(ld(ap, a_dtype, a0 + p),
                                r0 + 1 < m ? ld(ap, a_dtype, a1 + p) : 0.0f,
                                r0 + 2 < m ? ld(ap, a_dtype, a2 + p) : 0.0f,
                                r0 + 3 < m ? ld(ap, a_dtype, a3 + p) : 0.0f);
        }
        red[lid] = acc;
        barrier(CLK_LOCAL_MEM_FENCE);
        for (int s = GEMV_LANES / 2; s > 0; s >>= 1) {
            if (lane < s)
                red[lid] += red[lid + s];
            barrier(CLK_LOCAL_MEM_FENCE);
        }
        /* lane i of the row stores row r0 + i of C (SwiGLU: of a gate
         * row, with its up row's sum GEMV_ROWS / 2 rows on) */
        if (swiglu_half && slot < GEMV_ROWS / 2 && j < swiglu_half && lane < 4 && r0 + lane < m) {
            float g = lane_of(red[lid - lane], lane);
            float u = lane_of(red[lid - lane + GEMV_ROWS / 2 * GEMV_LANES], lane);
            if (bias) {
                g += ld(CBYTES(bias, bias_off), b_dtype, j);
                u += ld(CBYTES(bias, bias_off), b_dtype, swiglu_half + j);
            }
            st(BYTES(c, c_off), c_dtype, (size_t)(row0 + r0 + lane) * ldc + j, g / (1.0f + exp(-g)) * u);
        }
        if (!swiglu_half && j < n && lane < 4 && r0 + lane < m) {
            float sum = lane_of(red[lid - lane], lane);
            size_t ci = (size_t)(row0 + r0 + lane) * ldc + j;
            __global uchar *cp = BYTES(c, c_off);
            st(cp, c_dtype, ci, epilogue(sum, bias ? CBYTES(bias, bias_off) : 0, b_dtype, j, cp,
                                         c_dtype, ci, beta));
        }
        /* the next pass overwrites red */
        barrier(CLK_LOCAL_MEM_FENCE);
    }
}

#define GEMV_PARAMS                                                                        \
    __global const uchar *a, ulong a_off, int lda, int a_dtype, int a_vec,                 \
        __global const uchar *b, ulong b_off, int ldb, int b_dtype,                        \
        __global const uchar *bias, ulong bias_off, __global uchar *c, ulong c_off, int ldc, \
        int c_dtype, float beta, int m, int n, int k, int k_vec

/* The GEMV as it was before gemv_lanes (issue 4), kept while the two are
 * compared on NVIDIA's OpenCL: the host runs these with DYNO_OCL_GEMV=old. */
__kernel __attribute__((reqd_work_group_size(WG, 1, 1)))
void gemv_old(GEMV_PARAMS, int swiglu_half)
{
    __local float4 red[WG];
    gemv_rows(red, a, a_off, lda, a_dtype, a_vec, 0, 1, 0, b, b_off, ldb, b_dtype, bias,
              bias_off, c, c_off, ldc, c_dtype, beta, m, n, k, k_vec, swiglu_half);
}

__kernel __attribute__((reqd_work_group_size(WG, 1, 1)))
void gemv1_old(GEMV_PARAMS, int swiglu_half)
{
    __local float4 red[WG];
    gemv_rows(red, a, a_off, lda, a_dtype, a_vec, 0, 1, 0, b, b_off, ldb, b_dtype, bias,
              bias_off, c, c_off, ldc, c_dtype, beta, 1, n, k, k_vec, swiglu_half);
}

/* 16-byte loads of B in flight per item of gemv1_gpu */
#define GEMV1_LOADS 8

/* gemv1_gpu's KV append: column j of C's one row, as stored (read back by
 * the item that stored it), into the K or V cache row of slot slots[0]
 * when j is one of their columns (dy_gemm_desc.append) */
void gemv1_append(__global const uchar *cp, int c_dtype, int j, __global const int *slots,
                  ulong slots_off, __global uchar *k_cache, ulong kc_off, __global uchar *v_cache,
                  ulong vc_off, int cache_dtype, int k_col, int v_col, int kv_dim)
{
    bool is_k = j >= k_col && j < k_col + kv_dim, is_v = j >= v_col && j < v_col + kv_dim;
    if (!is_k && !is_v)
        return;
    size_t slot = (size_t)((__global const int *)CBYTES(slots, slots_off))[0];
    __global uchar *cache = is_k ? BYTES(k_cache, kc_off) : BYTES(v_cache, vc_off);
    st(cache, cache_dtype, slot * kv_dim + (size_t)(j - (is_k ? k_col : v_col)), ld(cp, c_dtype, j));
}

/* The column of C that slot s (a row of B) of gemv1_gpu's work-group grp
 * feeds: with a pair (RoPE's first rope_cols / GEMV_ROWS work-groups, or
 * SwiGLU) the first column of pair s % (GEMV_ROWS / 2), which the slot
 * below GEMV_ROWS / 2 writes from both sums */
int gemv1_col(int grp, int s, int rope_cols, int rope_half, int swiglu_half)
{
    int pair = GEMV_ROWS / 2, rope_groups = rope_cols / GEMV_ROWS;
    if (grp < rope_groups) {
        int h0 = grp * pair;
        return h0 / rope_half * 2 * rope_half + h0 % rope_half + s % pair;
    }
    if (swiglu_half)
        return grp * pair + s % pair;
    return rope_cols + (grp - rope_groups) * GEMV_ROWS + s;
}

/* The GPU decode GEMV at one row of A: C[j] = A . B[j, :] with A f32 on
 * 16 bytes, B's rows f16/bf16 on 16 bytes (k a multiple of 8). As
 * gemv_rows, GEMV_LANES items own a row of B, but each issues all
 * GEMV1_LOADS 16-byte loads of a pass (kept as raw words) before using the
 * first, and their sums meet in local memory after one barrier. It takes
 * the ops around a decode GEMV so that a step launches fewer kernels:
 *  - norm_w: A is the RMSNorm of a times norm_w (dy_gemm_desc.norm): the
 *    dot runs over a * norm_w with a's squares summed beside it, and the
 *    sum is scaled by rsqrt(mean + eps) at the end (every row of B covers
 *    all of a, so no pass of its own);
 *  - swiglu_half > 0: a work-group's first GEMV_ROWS / 2 rows of B are gate
 *    rows j, the others their up rows swiglu_half + j, and C[j] gets
 *    silu(gate) * up (DY_ACT_SWIGLU);
 *  - rope_cols > 0: the first rope_cols / GEMV_ROWS work-groups take
 *    GEMV_ROWS / 2 columns j of a head's first half and their partners
 *    j + rope_half, written rotated by the row's position (DY_ACT_ROPE,
 *    the arithmetic of ops.cl's rope); the others the columns from
 *    rope_cols on;
 *  - kv_dim > 0: the columns from k_col and v_col on also go to the KV
 *    cache's row slots[0] (dy_gemm_desc.append). */
__kernel __attribute__((reqd_work_group_size(WG, 1, 1)))
void gemv1_gpu(__global const uchar *a, ulong a_off, __global const uchar *b, ulong b_off,
               int ldb, int b_dtype, __global const uchar *bias, ulong bias_off,
               __global uchar *c, ulong c_off, int c_dtype, float beta, int n, int k,
               int swiglu_half, __global const uchar *norm_w, ulong norm_off, int norm_dtype,
               float eps, __global const int *rope_pos, ulong pos_off,
               __global const float *inv_freq, ulong freq_off, int rope_cols, int rope_half,
               __global const int *slots, ulong slots_off, __global uchar *k_cache, ulong kc_off,
               __global uchar *v_cache, ulong vc_off, int cache_dtype, int k_col, int v_col,
               int kv_dim)
{
    /* float4s, so that lane 0 of a row reads its row's sums 16 bytes at a
     * time */
    __local float4 red4[WG / 4], ss4[WG / 4];
    __local float tot[GEMV_ROWS + 1]; /* the rows' sums, the norm's scale */
    __local float *red = (__local float *)red4, *red_ss = (__local float *)ss4;
    const int pair = GEMV_ROWS / 2; /* pairs a work-group holds */
    int lid = get_local_id(0), lane = lid % GEMV_LANES, slot = lid / GEMV_LANES;
    int grp = get_group_id(0), rope_groups = rope_cols / GEMV_ROWS;
    bool rope = grp < rope_groups;
    int j = gemv1_col(grp, slot, rope_cols, rope_half, swiglu_half), row;
    if (rope)
        row = j + (slot < pair ? 0 : rope_half);
    else if (swiglu_half)
        row = (slot < pair ? 0 : swiglu_half) + min(j, swiglu_half - 1);
    else /* items past the last row compute row n - 1 again: they reach the
          * barriers, and their sums are never stored */
        row = min(j, n - 1);
    __global const float *ap = (__global const float *)CBYTES(a, a_off);
    __global const uchar *brow = CBYTES(b, b_off) + (size_t)row * ldb * 2;
    __global const uchar *gw = norm_w ? CBYTES(norm_w, norm_off) : 0;
    size_t g_esize = norm_dtype == DT_F32 ? 4 : 2;
    const int step = GEMV_LANES * 8;
    float acc = 0.0f, ss = 0.0f;
    for (int p0 = lane * 8; p0 < k; p0 += GEMV1_LOADS * step) {
        uint4 raw[GEMV1_LOADS];
#pragma unroll
        for (int u = 0; u < GEMV1_LOADS; u++)
            if (p0 + u * step < k)
                raw[u] = *(__global const uint4 *)(brow + (size_t)(p0 + u * step) * 2);
#pragma unroll
        for (int u = 0; u < GEMV1_LOADS; u++) {
            int p = p0 + u * step;
            if (p < k) {
                __global const float4 *x4 = (__global const float4 *)(ap + p);
                float8 x = (float8)(x4[0], x4[1]);
                if (gw) {
                    if (slot == 0)
                        ss += dot8(x, x);
                    x *= ld8_aligned(gw + (size_t)p * g_esize, norm_dtype);
                }
                acc += dot8(x, unpack8(raw[u], b_dtype));
            }
        }
    }
    red[lid] = acc;
    red_ss[lid] = ss;
    barrier(CLK_LOCAL_MEM_FENCE);
    if (lane == 0) {
        __local const float4 *r4 = (__local const float4 *)(red + lid);
        __local const float4 *s4 = (__local const float4 *)(red_ss + lid);
        float4 t = 0.0f, u = 0.0f;
        for (int i = 0; i < GEMV_LANES / 4; i++) {
            t += r4[i];
            u += s4[i];
        }
        tot[slot] = t.x + t.y + t.z + t.w;
        if (slot == 0)
            tot[GEMV_ROWS] = rsqrt((u.x + u.y + u.z + u.w) / (float)k + eps);
    }
    barrier(CLK_LOCAL_MEM_FENCE);
    if (lid >= GEMV_ROWS)
        return;
    /* the first GEMV_ROWS items store: item i row slot i's column (with a
     * pair, items below `pair` their pair's) */
    slot = lid;
    float scale = gw ? tot[GEMV_ROWS] : 1.0f;
    __global uchar *cp = BYTES(c, c_off);
    __global const uchar *bp = bias ? CBYTES(bias, bias_off) : 0;
    if (rope || swiglu_half) {
        if (slot >= pair)
            return;
        int ja = gemv1_col(grp, slot, rope_cols, rope_half, swiglu_half);
        int jb = ja + (rope ? rope_half : swiglu_half);
        if (!rope && ja >= swiglu_half)
            return;
        float x0 = tot[slot] * scale, x1 = tot[slot + pair] * scale;
        if (bp) {
            x0 += ld(bp, b_dtype, ja);
            x1 += ld(bp, b_dtype, jb);
        }
        if (swiglu_half) {
            st(cp, c_dtype, ja, x0 / (1.0f + exp(-x0)) * x1);
            return;
        }
        int pos = ((__global const int *)CBYTES(rope_pos, pos_off))[0];
        float angle = (float)pos * ((__global const float *)CBYTES(inv_freq, freq_off))[ja % rope_half];
        float cs = cos(angle), sn = sin(angle);
        st(cp, c_dtype, ja, x0 * cs - x1 * sn);
        st(cp, c_dtype, jb, x1 * cs + x0 * sn);
        if (kv_dim) {
            gemv1_append(cp, c_dtype, ja, slots, slots_off, k_cache, kc_off, v_cache, vc_off,
                         cache_dtype, k_col, v_col, kv_dim);
            gemv1_append(cp, c_dtype, jb, slots, slots_off, k_cache, kc_off, v_cache, vc_off,
                         cache_dtype, k_col, v_col, kv_dim);
        }
        return;
    }
    j = gemv1_col(grp, slot, rope_cols, rope_half, swiglu_half);
    if (j >= n)
        return;
    st(cp, c_dtype, j, epilogue(tot[slot] * scale, bp, b_dtype, j, cp, c_dtype, j, beta));
    if (kv_dim)
        gemv1_append(cp, c_dtype, j, slots, slots_off, k_cache, kc_off, v_cache, vc_off, cache_dtype,
                     k_col, v_col, kv_dim);
}

/* Rows of A per pass of gemv_lanes over B: their sums are one float8. */
#define GEMV_PASS 8

/* The decode GEMV, C[i, j] = A[i, :] . B[j, :] for few rows i of A:
 * memory-bound on B, which is streamed from memory once. `lanes` items
 * own one row j of B (WG / lanes rows per work-group) and stride k eight
 * elements (one 16-byte load of f16/bf16) at a time, four loads in flight:
 * 32 lanes on GPUs, where neighbouring items read neighbouring 16 bytes;
 * 1 on CPUs (PoCL), where each item then walks its row from start to end
 * with vector instructions, as a CPU's prefetchers and caches want. Up to
 * GEMV_PASS rows of A per pass over B, each in a float8 of products summed
 * across once per pass (not a dot() per load: on CPUs each is a chain of
 * shuffles); the pass's sums meet in local memory after one barrier, and
 * lane r of the row adds up row r's. A pass past the first reads B again
 * from the cache. `k_vec` elements go through aligned wide loads (0 when
 * rows of B are not on 16 bytes), the rest element by element. Inlined
 * with m = 1 (gemv1), the tests on m fold away. */
static inline void gemv_lanes(__local float8 *red, __global const uchar *a, ulong a_off, int lda,
                              int a_dtype, int a_vec, __global const uchar *b, ulong b_off,
                              int ldb, int b_dtype, __global const uchar *bias, ulong bias_off,
                              __global uchar *c, ulong c_off, int ldc, int c_dtype, float beta,
                              int m, int n, int k, int k_vec, int lanes)
{
    int lid = get_local_id(0), lane = lid % lanes;
    int j = get_group_id(0) * (WG / lanes) + lid / lanes;
    /* items past the last row compute row n - 1 again: they must reach the
     * barriers, and their sums are never stored */
    int row = min(j, n - 1);
    __global const uchar *ap = CBYTES(a, a_off);
    size_t b_esize = b_dtype == DT_F32 ? 4 : 2;
    __global const uchar *brow = CBYTES(b, b_off) + (size_t)row * ldb * b_esize;
    const int step = lanes * 8;
    for (int r0 = 0; r0 < m; r0 += GEMV_PASS) {
        int live = min(m - r0, GEMV_PASS);
        size_t ar[GEMV_PASS];
        float8 acc[GEMV_PASS];
#pragma unroll
        for (int r = 0; r < GEMV_PASS; r++) {
            /* a row past m repeats the first; it is never read */
            ar[r] = (size_t)(r < live ? r0 + r : r0) * lda;
            acc[r] = 0.0f;
        }
        int p = lane * 8;
        for (; p + 3 * step < k_vec; p += 4 * step) {
            float8 w0 = ld8_aligned(brow + (size_t)p * b_esize, b_dtype);
            float8 w1 = ld8_aligned(brow + (size_t)(p + step) * b_esize, b_dtype);
            float8 w2 = ld8_aligned(brow + (size_t)(p + 2 * step) * b_esize, b_dtype);
            float8 w3 = ld8_aligned(brow + (size_t)(p + 3 * step) * b_esize, b_dtype);
#pragma unroll
            for (int r = 0; r < GEMV_PASS; r++)
                if (r < live)
                    acc[r] += ld8_a(ap, a_dtype, a_vec, ar[r] + p) * w0 +
                              ld8_a(ap, a_dtype, a_vec, ar[r] + p + step) * w1 +
                              ld8_a(ap, a_dtype, a_vec, ar[r] + p + 2 * step) * w2 +
                              ld8_a(ap, a_dtype, a_vec, ar[r] + p + 3 * step) * w3;
        }
        for (; p < k_vec; p += step) {
            float8 w = ld8_aligned(brow + (size_t)p * b_esize, b_dtype);
#pragma unroll
            for (int r = 0; r < GEMV_PASS; r++)
                if (r < live)
                    acc[r] += ld8_a(ap, a_dtype, a_vec, ar[r] + p) * w;
        }
        for (p = k_vec + lane; p < k; p += lanes) {
            float w = ld(brow, b_dtype, p);
#pragma unroll
            for (int r = 0; r < GEMV_PASS; r++)
                if (r < live)
                    acc[r].s0 += w * ld(ap, a_dtype, ar[r] + p);
        }
        /* rows past `live` summed nothing: 0 */
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
            st(cp, c_dtype, ci, epilogue(sum, bias ? CBYTES(bias, bias_off) : 0, b_dtype, j, cp,
                                         c_dtype, ci, beta));
        }
        /* the next pass overwrites red */
        barrier(CLK_LOCAL_MEM_FENCE);
    }
}

#define GEMV_LANES_CALL(rows_of_a)                                                           \
    gemv_lanes(red, a, a_off, lda, a_dtype, a_vec, b, b_off, ldb, b_dtype, bias, bias_off, c, \
               c_off, ldc, c_dtype, beta, rows_of_a, n, k, k_vec, lanes)

__kernel __attribute__((reqd_work_group_size(WG, 1, 1)))
void gemv(GEMV_PARAMS, int lanes)
{
    __local float8 red[WG];
    GEMV_LANES_CALL(m);
}

__kernel __attribute__((reqd_work_group_size(WG, 1, 1)))
void gemv1(GEMV_PARAMS, int lanes)
{
    __local float8 red[WG];
    GEMV_LANES_CALL(1);
}

#define TILE 16

/* Any dtypes, any shape: 16 x 16 tiles of A and B in local memory, one
 * output per item. The fallback where CLBlast is absent or A and C are not
 * f32; CLBlast does the f32 work where it can. */
__kernel __attribute__((reqd_work_group_size(TILE, TILE, 1)))
void gemm_tiled(__global const uchar *a, ulong a_off, int lda, int a_dtype,
                __global const uchar *b, ulong b_off, int ldb, int b_dtype,
                __global const uchar *bias, ulong bias_off, __global uchar *c, ulong c_off,
                int ldc, int c_dtype, float beta, int m, int n, int k)
{
    /* one column of padding keeps the transposed read of Bs conflict-free */
    __local float as[TILE][TILE + 1], bs[TILE][TILE + 1];
    int tx = get_local_id(0), ty = get_local_id(1);
    int m0 = get_group_id(1) * TILE, n0 = get_group_id(0) * TILE;
    __global const uchar *ap = CBYTES(a, a_off), *bp = CBYTES(b, b_off);
    float acc = 0.0f;
    for (int p0 = 0; p0 < k; p0 += TILE) {
        int p = p0 + tx;
        as[ty][tx] = m0 + ty < m && p < k ? ld(ap, a_dtype, (size_t)(m0 + ty) * lda + p) : 0.0f;
        bs[ty][tx] = n0 + ty < n && p < k ? ld(bp, b_dtype, (size_t)(n0 + ty) * ldb + p) : 0.0f;
        barrier(CLK_LOCAL_MEM_FENCE);
        for (int q = 0; q < TILE; q++)
            acc += as[ty][q] * bs[tx][q];
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    int i = m0 + ty, j = n0 + tx;
    if (i < m && j < n) {
        size_t ci = (size_t)i * ldc + j;
        __global uchar *cp = BYTES(c, c_off);
        st(cp, c_dtype, ci, epilogue(acc, bias ? CBYTES(bias, bias_off) : 0, b_dtype, j, cp,
                                     c_dtype, ci, beta));
    }
}

/* C = beta * C + bias before CLBlast adds A . B^T with beta 1. With beta 0
 * C is not read: it may hold anything, NaN included. */
__kernel void gemm_bias_beta(__global uchar *c, ulong c_off, int ldc,
                             __global const uchar *bias, ulong bias_off, int bias_dtype,
                             float beta, int m, int n)
{
    int j = get_global_id(0), i = get_global_id(1);
    if (i >= m || j >= n)
        return;
    __global uchar *cp = BYTES(c, c_off);
    size_t ci = (size_t)i * ldc + j;
    float v = ld(CBYTES(bias, bias_off), bias_dtype, j);
    if (beta != 0.0f)
        v += beta * ld(cp, DT_F32, ci);
    st(cp, DT_F32, ci, v);
}

/* Rows [row0, row0 + rows) of B as dense f32 for CLBlast. */
__kernel void rows_to_f32(__global const uchar *src, ulong src_off, int ld_src, int src_dtype,
                          __global float *dst, int row0, int rows, int k)
{
    int i = get_global_id(0), r = get_global_id(1);
    if (i < k && r < rows)
        dst[(size_t)r * k + i] =
            ld(CBYTES(src, src_off), src_dtype, (size_t)(row0 + r) * ld_src + i);
}
