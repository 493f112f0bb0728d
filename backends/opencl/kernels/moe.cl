/* MoE (backend.h's MoE section): the router's softmax and top-k, the
 * stable counting sort of token-expert pairs by expert, the grouped GEMM
 * over the sorted rows and the weighted gather-add back to the tokens.
 * Offsets stay on the device: no kernel here needs the host to read them. */

/* ---- softmax_topk ---- */

/* The top-k order: the larger logit first, the lower expert on ties. */
bool topk_before(float v, int e, float other_v, int other_e)
{
    return v > other_v || (v == other_v && e < other_e);
}

/* The first expert of `row` in top-k order after (prev_v, prev_e), or the
 * very first with prev_e < 0; its logit goes to *v. Every item gets both.
 * `best_v` and `best_e` hold WG entries each, free again on return. */
int topk_next(__local float *best_v, __local int *best_e, __global const float *row,
              int experts, float prev_v, int prev_e, float *v)
{
    int lid = get_local_id(0);
    float bv = 0.0f;
    int be = INT_MAX; /* none yet */
    /* an item's experts come in increasing order, so a tie keeps the first */
    for (int e = lid; e < experts; e += WG) {
        float x = row[e];
        if ((prev_e < 0 || topk_before(prev_v, prev_e, x, e)) && (be == INT_MAX || x > bv)) {
            bv = x;
            be = e;
        }
    }
    best_v[lid] = bv;
    best_e[lid] = be;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (int s = WG / 2; s > 0; s >>= 1) {
        if (lid < s) {
            float ov = best_v[lid + s];
            int oe = best_e[lid + s];
            if (oe != INT_MAX &&
                (best_e[lid] == INT_MAX || topk_before(ov, oe, best_v[lid], best_e[lid]))) {
                best_v[lid] = ov;
                best_e[lid] = oe;
            }
        }
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    *v = best_v[0];
    int winner = best_e[0];
    barrier(CLK_LOCAL_MEM_FENCE);
    return winner;
}

/* One work-group per token. The picks go in top-k order, each the best
 * expert after the previous one, so nothing marks experts as taken; the
 * first pick is the maximum that the softmax subtracts. */
__kernel __attribute__((reqd_work_group_size(WG, 1, 1)))
void softmax_topk(__global const uchar *logits, ulong logits_off, int stride, int experts, int k,
                  int renormalize, __global uchar *ids, ulong ids_off, __global uchar *weights,
                  ulong weights_off)
{
    __local float best_v[WG];
    __local int best_e[WG];
    int lid = get_local_id(0);
    size_t t = get_group_id(0);
    __global const float *row = (__global const float *)CBYTES(logits, logits_off) + t * stride;
    __global int *id = (__global int *)BYTES(ids, ids_off) + t * k;
    __global float *w = (__global float *)BYTES(weights, weights_off) + t * k;
    float max;
    int e = topk_next(best_v, best_e, row, experts, 0.0f, -1, &max);
    float sum = 0.0f;
    for (int i = lid; i < experts; i += WG)
        sum += exp(row[i] - max);
    sum = group_sum(best_v, sum);
    float v = max, kept = 0.0f;
    for (int j = 0; j < k; j++) {
        if (j > 0)
            e = topk_next(best_v, best_e, row, experts, v, e, &v);
        if (lid == 0) {
            float p = exp(v - max) / sum;
            id[j] = e;
            w[j] = p;
            kept += p;
        }
    }
    if (renormalize && lid == 0)
        for (int j = 0; j < k; j++)
            w[j] /= kept;
}

/* ---- moe_sort ---- */

/* Exclusive prefix sum of one int per item over the work-group; the total
 * goes to *total. `s` holds WG ints, free again on return. */
int group_scan(__local int *s, int v, int *total)
{
    int lid = get_local_id(0);
    s[lid] = v;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (int d = 1; d < WG; d <<= 1) {
        int add = lid >= d ? s[lid - d] : 0;
        barrier(CLK_LOCAL_MEM_FENCE);
        s[lid] += add;
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    *total = s[WG - 1];
    int inclusive = s[lid];
    barrier(CLK_LOCAL_MEM_FENCE);
    return inclusive - v;
}

/* x[0, n) becomes its exclusive prefix sum, each item taking one
 * contiguous span; returns the total. OpenCL C 1.2 has no generic address
 * space, so the one body is spelled out for local and for global memory. */
#define DEFINE_SCAN(name, space, fence)                                          \
    int name(space int *x, int n, __local int *s)                               \
    {                                                                           \
        int span = (n + WG - 1) / WG;                                           \
        int lo = min(n, (int)get_local_id(0) * span), hi = min(n, lo + span);   \
        int sum = 0;                                                            \
        for (int i = lo; i < hi; i++)                                           \
            sum += x[i];                                                        \
        int total, run = group_scan(s, sum, &total);                            \
        for (int i = lo; i < hi; i++) {                                         \
            int count = x[i];                                                   \
            x[i] = run;                                                         \
            run += count;                                                       \
        }                                                                       \
        barrier(fence);                                                         \
        return total;                                                           \
    }
DEFINE_SCAN(scan_local, __local, CLK_LOCAL_MEM_FENCE)
DEFINE_SCAN(scan_global, __global, CLK_GLOBAL_MEM_FENCE)
#undef DEFINE_SCAN

/* Counts the experts of pairs [begin, end) into hist (local, experts
 * ints, zeroed here). Atomic increments: the counts do not depend on their
 * order. An id outside [0, experts) is skipped, so that it corrupts no
 * memory (backend.h leaves the result undefined). */
void count_pairs(__global const int *ids, int begin, int end, int experts, __local int *hist)
{
    int lid = get_local_id(0);
    for (int e = lid; e < experts; e += WG)
        hist[e] = 0;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (int p = begin + lid; p < end; p += WG) {
        int e = ids[p];
        if (e >= 0 && e < experts)
            atomic_inc(&hist[e]);
    }
    barrier(CLK_LOCAL_MEM_FENCE);
}

/* Places pairs [begin, end): next[e] (local) is the sorted row of expert
 * e's next pair and moves past the pairs placed. Pairs go WG at a time; a
 * pair's row is next[e] plus the number of earlier pairs of its expert in
 * its WG, so pairs keep their order within an expert. `s` holds WG ints. */
void place_pairs(__global const int *ids, int begin, int end, int experts, __local int *next,
                 __local int *s, __global int *sorted, __global int *position)
{
    int lid = get_local_id(0);
    for (int base = begin; base < end; base += WG) {
        int p = base + lid, count = min(WG, end - base);
        int e = p < end ? ids[p] : -1;
        if (e >= experts)
            e = -1;
        s[lid] = e;
        barrier(CLK_LOCAL_MEM_FENCE);
        int rank = 0;
        bool last = true; /* no later pair of e in this WG */
        for (int i = 0; i < count; i++) {
            bool same = s[i] == e;
            rank += same && i < lid;
            last = last && !(same && i > lid);
        }
        if (e >= 0) {
            int r = next[e] + rank;
            sorted[r] = p;
            position[p] = r;
        }
        barrier(CLK_LOCAL_MEM_FENCE);
        if (e >= 0 && last)
            next[e] += rank + 1;
        barrier(CLK_LOCAL_MEM_FENCE);
    }
}

#define INTS(base, off) ((__global int *)BYTES(base, off))
#define CINTS(base, off) ((__global const int *)CBYTES(base, off))

/* Few pairs (decode): one work-group counts, scans and places them all.
 * `next` is experts ints of local memory. */
__kernel __attribute__((reqd_work_group_size(WG, 1, 1)))
void moe_sort_small(__global const uchar *ids, ulong ids_off, int pairs, int experts,
                    __global uchar *offsets, ulong offsets_off, __global uchar *sorted,
                    ulong sorted_off, __global uchar *position, ulong position_off,
                    __local int *next)
{
    __local int s[WG];
    __global int *off = INTS(offsets, offsets_off);
    count_pairs(CINTS(ids, ids_off), 0, pairs, experts, next);
    int total = scan_local(next, experts, s);
    for (int e = get_local_id(0); e < experts; e += WG)
        off[e] = next[e];
    if (get_local_id(0) == 0)
        off[experts] = total;
    place_pairs(CINTS(ids, ids_off), 0, pairs, experts, next, s, INTS(sorted, sorted_off),
                INTS(position, position_off));
}

/* Many pairs, in three launches over chunks of `chunk` pairs, one
 * work-group each. First, chunk g's count of expert e goes to
 * counts[e * chunks + g]. */
__kernel __attribute__((reqd_work_group_size(WG, 1, 1)))
void moe_sort_count(__global const uchar *ids, ulong ids_off, int pairs, int experts, int chunk,
                    __global int *counts, __local int *hist)
{
    int g = get_group_id(0), chunks = get_num_groups(0);
    count_pairs(CINTS(ids, ids_off), g * chunk, min(pairs, g * chunk + chunk), experts, hist);
    for (int e = get_local_id(0); e < experts; e += WG)
        counts[(size_t)e * chunks + g] = hist[e];
}

/* Then one work-group: the exclusive prefix sum of counts, expert-major,
 * is each chunk's first row for each expert; an expert's first chunk's
 * is its offset. */
__kernel __attribute__((reqd_work_group_size(WG, 1, 1)))
void moe_sort_scan(__global int *counts, int chunks, int experts, __global uchar *offsets,
                   ulong offsets_off)
{
    __local int s[WG];
    __global int *off = INTS(offsets, offsets_off);
    int total = scan_global(counts, experts * chunks, s);
    for (int e = get_local_id(0); e < experts; e += WG)
        off[e] = counts[(size_t)e * chunks];
    if (get_local_id(0) == 0)
        off[experts] = total;
}

/* Last, each chunk places its pairs from its first rows. */
__kernel __attribute__((reqd_work_group_size(WG, 1, 1)))
void moe_sort_place(__global const uchar *ids, ulong ids_off, int pairs, int experts, int chunk,
                    __global const int *counts, __global uchar *sorted, ulong sorted_off,
                    __global uchar *position, ulong position_off, __local int *next)
{
    __local int s[WG];
    int g = get_group_id(0), chunks = get_num_groups(0);
    for (int e = get_local_id(0); e < experts; e += WG)
        next[e] = counts[(size_t)e * chunks + g];
    barrier(CLK_LOCAL_MEM_FENCE);
    place_pairs(CINTS(ids, ids_off), g * chunk, min(pairs, g * chunk + chunk), experts, next, s,
                INTS(sorted, sorted_off), INTS(position, position_off));
}

/* ---- gemm_grouped ----
 * Rows offsets[e] .. offsets[e + 1] of C (clipped to `rows`) are expert
 * e's: C[r, :] = A[a_row(r), :] . B_e^T with B_e b_expert_stride elements
 * after B_(e-1), row-major [n, k]. A and C are f32. Quantized B_e has its
 * scales (and zero points) expert_scales after B_(e-1)'s. */

/* The last expert whose first entry in `starts` (offsets or tile starts)
 * is at or before `at`: the one that holds row or tile `at`, since an
 * expert without any starts where the next one does. */
int expert_at(__global const int *starts, int experts, int at)
{
    int lo = 0, hi = experts - 1;
    while (lo < hi) {
        int mid = (lo + hi + 1) / 2;
        if (starts[mid] <= at)
            lo = mid;
        else
            hi = mid - 1;
    }
    return lo;
}

/* Few rows (decode): gemm.cl's GEMV per expert, each weight streamed once,
 * one work-group per block of GEMV_ROWS columns and expert. With by_row
 * (no more rows than experts) the second index is a sorted row, whose
 * group serves the expert that row starts and returns otherwise: a token's
 * few experts get a group each and the idle ones none. Else it is the
 * expert, and an expert without rows returns at once. */
__kernel __attribute__((reqd_work_group_size(WG, 1, 1)))
void gemv_grouped(__global const uchar *a, ulong a_off, int lda, int a_vec,
                  __global const uchar *a_rows, ulong a_rows_off, int a_row_div,
                  __global const uchar *b, ulong b_off, ulong b_expert_stride, int b_dtype,
                  __global uchar *c, ulong c_off, int ldc, __global const uchar *offsets,
                  ulong offsets_off, int rows, int experts, int by_row, int n, int k, int k_vec)
{
    __local float4 red[WG];
    __global const int *off = CINTS(offsets, offsets_off);
    int slot = get_group_id(1);
    int e = by_row ? expert_at(off, experts, slot) : slot;
    int row0 = min(off[e], rows), m = min(off[e + 1], rows) - row0;
    if (m <= 0 || (by_row && row0 != slot))
        return;
    size_t b_esize = b_dtype == DT_F32 ? 4 : 2;
    gemv_rows(red, a, a_off, lda, DT_F32, a_vec, a_rows ? CINTS(a_rows, a_rows_off) : 0,
              a_row_div, row0, b, b_off + (size_t)e * b_expert_stride * b_esize, k, b_dtype, 0,
              0, c, c_off, ldc, DT_F32, 0.0f, m, n, k, k_vec, 0);
}

/* The tiles of the tiled kernel: TILE sorted rows, none across experts.
 * tile_start[e] is expert e's first tile, tile_start[experts] the count.
 * One work-group. */
__kernel __attribute__((reqd_work_group_size(WG, 1, 1)))
void moe_tile_plan(__global const uchar *offsets, ulong offsets_off, int rows, int experts,
                   __global int *tile_start)
{
    __local int s[WG];
    __global const int *off = CINTS(offsets, offsets_off);
    for (int e = get_local_id(0); e < experts; e += WG)
        tile_start[e] = (max(min(off[e + 1], rows) - min(off[e], rows), 0) + TILE - 1) / TILE;
    barrier(CLK_GLOBAL_MEM_FENCE);
    int total = scan_global(tile_start, experts, s);
    if (get_local_id(0) == 0)
        tile_start[experts] = total;
}

/* Many rows: gemm.cl's tiled GEMM with A's rows gathered, one work-group
 * per (block of TILE columns, tile of moe_tile_plan); the launch covers the
 * most tiles there can be, and groups past the real count return.
 * Quantized B is dequantized as its tiles are loaded; scale and zero are
 * NULL for the other dtypes. */
__kernel __attribute__((reqd_work_group_size(TILE, TILE, 1)))
void gemm_grouped_tiled(__global const uchar *a, ulong a_off, int lda,
                        __global const uchar *a_rows, ulong a_rows_off, int a_row_div,
                        __global const uchar *b, ulong b_off, ulong b_expert_stride, int b_dtype,
                        __global const uchar *scale, ulong scale_off, __global const uchar *zero,
                        ulong zero_off, int group, ulong expert_scales,
                        __global uchar *c, ulong c_off, int ldc, __global const uchar *offsets,
                        ulong offsets_off, __global const int *tile_start, int rows, int experts,
                        int n, int k)
{
    __local float as[TILE][TILE + 1], bs[TILE][TILE + 1];
    int tile = get_group_id(1);
    if (tile >= tile_start[experts])
        return;
    size_t e = expert_at(tile_start, experts, tile);
    __global const int *off = CINTS(offsets, offsets_off);
    int tx = get_local_id(0), ty = get_local_id(1), n0 = get_group_id(0) * TILE;
    /* item (tx, ty) loads A's row for sorted row r and stores C's row r */
    int r = min(off[e], rows) + (tile - tile_start[e]) * TILE + ty;
    bool row_in = r < min(off[e + 1], rows);
    __global const int *gather = a_rows ? CINTS(a_rows, a_rows_off) : 0;
    size_t a_at = row_in ? a_row(gather, a_row_div, r) * lda : 0;
    __global const uchar *ap = CBYTES(a, a_off);
    __global const uchar *bp = CBYTES(b, b_off) + dtype_bytes(b_dtype, e * b_expert_stride);
    __global const float *sp = scale ? (__global const float *)CBYTES(scale, scale_off) +
                                           e * expert_scales : 0;
    __global const uchar *zp = zero ? CBYTES(zero, zero_off) + e * expert_scales : 0;
    float acc = 0.0f;
    for (int p0 = 0; p0 < k; p0 += TILE) {
        int p = p0 + tx;
        as[ty][tx] = row_in && p < k ? ld(ap, DT_F32, a_at + p) : 0.0f;
        bs[ty][tx] = n0 + ty < n && p < k ? ldw(bp, b_dtype, sp, zp, k, group, n0 + ty, p) : 0.0f;
        barrier(CLK_LOCAL_MEM_FENCE);
        for (int q = 0; q < TILE; q++)
            acc += as[ty][q] * bs[tx][q];
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    if (row_in && n0 + tx < n)
        st(BYTES(c, c_off), DT_F32, (size_t)r * ldc + n0 + tx, acc);
}

/* ---- scatter_add_rows ---- */

/* One work-item per element of a token's row: its pairs' rows of src,
 * weighted, added in pair order. */
__kernel void scatter_add_rows(__global const uchar *src, ulong src_off, int src_stride,
                               __global uchar *dst, ulong dst_off, int dst_stride,
                               __global const uchar *weights, ulong weights_off,
                               __global const uchar *position, ulong position_off, int tokens,
                               int k, int cols)
{
    int i = get_global_id(0), t = get_global_id(1);
    if (i >= cols || t >= tokens)
        return;
    __global const float *s = (__global const float *)CBYTES(src, src_off);
    __global const float *w = (__global const float *)CBYTES(weights, weights_off);
    __global const int *pos = CINTS(position, position_off);
    __global float *out = (__global float *)BYTES(dst, dst_off) + (size_t)t * dst_stride + i;
    float acc = *out;
    for (int j = 0; j < k; j++) {
        size_t p = (size_t)t * k + j;
        acc += w[p] * s[(size_t)pos[p] * src_stride + i];
    }
    *out = acc;
}
