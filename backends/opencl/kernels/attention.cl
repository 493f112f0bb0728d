/* Attention, softmax(q . K^T * scale) . V, with GQA: head h reads KV head
 * h / (heads / kv_heads). Softmax is online (running maximum and sum, the
 * accumulator rescaled when the maximum grows), so keys stream through
 * local memory in tiles and no score matrix is ever stored. */

/* Output elements per work-item: a work-group holds a tile of q_tile rows
 * of head_dim accumulators, q_tile * head_dim <= ACC_MAX * WG (the host
 * picks q_tile). Unrolled loops keep them in registers. */
#define ACC_MAX 16

/* One work-group per (tile of q_tile queries, head, sequence). Per tile of
 * k_tile keys: K and V to local memory, the q_tile x k_tile scores, one
 * item per query row updates its maximum and sum, then every item updates
 * its share of the accumulators. Local memory is passed in by the host,
 * sized for head_dim: q (q_tile x head_dim), k (k_tile x (head_dim + 1),
 * padded so that items reading different keys hit different banks),
 * v (k_tile x head_dim), scores (q_tile x k_tile). */
__kernel __attribute__((reqd_work_group_size(WG, 1, 1)))
void attention_prefill(__global const uchar *q, ulong q_off, int q_stride,
                       __global const uchar *k, ulong k_off, __global const uchar *v, ulong v_off,
                       int kv_stride, __global uchar *out, ulong out_off, int out_stride,
                       int seq_len, int heads, int kv_heads, int head_dim, float scale,
                       int causal, int dtype, int q_tile, int k_tile,
                       __local float *qs, __local float *ks, __local float *vs, __local float *ss)
{
    __local float row_max[WG], row_sum[WG], row_alpha[WG];
    int lid = get_local_id(0);
    int q0 = get_group_id(0) * q_tile, h = get_group_id(1), b = get_group_id(2);
    int kvh = h / (heads / kv_heads), ks_stride = head_dim + 1;
    size_t first_row = (size_t)b * seq_len;
    __global const uchar *qp = CBYTES(q, q_off), *kp = CBYTES(k, k_off), *vp = CBYTES(v, v_off);

    for (int e = lid; e < q_tile * head_dim; e += WG) {
        int r = e / head_dim, d = e % head_dim;
        qs[e] = q0 + r < seq_len
                    ? ld(qp, dtype, (first_row + q0 + r) * q_stride + (size_t)h * head_dim + d)
                    : 0.0f;
    }
    if (lid < q_tile) {
        row_max[lid] = -INFINITY;
        row_sum[lid] = 0.0f;
    }
    float acc[ACC_MAX];
#pragma unroll
    for (int e = 0; e < ACC_MAX; e++)
        acc[e] = 0.0f;

    int k_end = causal ? min(seq_len, q0 + q_tile) : seq_len;
    for (int k0 = 0; k0 < k_end; k0 += k_tile) {
        /* the previous tile's readers are done with ks, vs and ss */
        barrier(CLK_LOCAL_MEM_FENCE);
        for (int e = lid; e < k_tile * head_dim; e += WG) {
            int r = e / head_dim, d = e % head_dim;
            size_t src = (first_row + k0 + r) * kv_stride + (size_t)kvh * head_dim + d;
            bool in = k0 + r < seq_len;
            /* zeros past the end: their weight is 0, and 0 * garbage may be NaN */
            ks[r * ks_stride + d] = in ? ld(kp, dtype, src) : 0.0f;
            vs[e] = in ? ld(vp, dtype, src) : 0.0f;
        }
        barrier(CLK_LOCAL_MEM_FENCE);
        for (int e = lid; e < q_tile * k_tile; e += WG) {
            int r = e / k_tile, j = e % k_tile;
            int key = k0 + j;
            float s = -INFINITY;
            if (key < seq_len && !(causal && key > q0 + r)) {
                float dot = 0.0f;
                for (int d = 0; d < head_dim; d++)
                    dot += qs[r * head_dim + d] * ks[j * ks_stride + d];
                s = dot * scale;
            }
            ss[e] = s;
        }
        barrier(CLK_LOCAL_MEM_FENCE);
        if (lid < q_tile) {
            /* key 0 is in the first tile and visible to every row, so the
             * maximum is finite from then on */
            float old_max = row_max[lid], new_max = old_max;
            for (int j = 0; j < k_tile; j++)
                new_max = fmax(new_max, ss[lid * k_tile + j]);
            float sum = 0.0f;
            for (int j = 0; j < k_tile; j++) {
                float p = exp(ss[lid * k_tile + j] - new_max);
                ss[lid * k_tile + j] = p;
                sum += p;
            }
            float alpha = exp(old_max - new_max);
            row_sum[lid] = row_sum[lid] * alpha + sum;
            row_max[lid] = new_max;
            row_alpha[lid] = alpha;
        }
        barrier(CLK_LOCAL_MEM_FENCE);
#pragma unroll
        for (int e = 0; e < ACC_MAX; e++) {
            int idx = lid + e * WG;
            if (idx < q_tile * head_dim) {
                int r = idx / head_dim, d = idx % head_dim;
                float a = acc[e] * row_alpha[r];
                for (int j = 0; j < k_tile; j++)
                    a += ss[r * k_tile + j] * vs[j * head_dim + d];
                acc[e] = a;
            }
        }
    }
    __global uchar *op = BYTES(out, out_off);
#pragma unroll
    for (int e = 0; e < ACC_MAX; e++) {
        int idx = lid + e * WG;
        if (idx < q_tile * head_dim) {
            int r = idx / head_dim, d = idx % head_dim;
            if (q0 + r < seq_len)
                st(op, dtype, (first_row + q0 + r) * out_stride + (size_t)h * head_dim + d,
                   acc[e] / row_sum[r]);
        }
    }
}

/* The arguments of both decode kernels (attention_decode's comment says
 * what they are). */
#define DECODE_PARAMS                                                                        \
    __global const uchar *q, ulong q_off, int q_stride, __global uchar *out, ulong out_off,   \
        int out_stride, __global const uchar *k_cache, ulong kc_off,                         \
        __global const uchar *v_cache, ulong vc_off, __global const uchar *k_scale,          \
        ulong ks_off, __global const uchar *v_scale, ulong vs_off,                           \
        __global const int *block_table, ulong table_off, __global const int *context_lens,  \
        ulong lens_off, int heads, int kv_heads, int head_dim, int block_size,               \
        int max_blocks_per_seq, float scale, int dtype, int cache_dtype, int vec,            \
        int split_len, __global float *partial, __local float *qs

/* What both make of them: the scales, the caches and q as pointers, and
 * sequence b's split `split` of `splits`: its keys [begin, end) and its
 * row of the block table (decode_split). */
#define DECODE_POINTERS(b, split, splits)                                                    \
    __global const float *ks = (__global const float *)CBYTES(k_scale, ks_off);             \
    __global const float *vs = (__global const float *)CBYTES(v_scale, vs_off);             \
    __global const uchar *kc = CBYTES(k_cache, kc_off), *vc = CBYTES(v_cache, vc_off);      \
    __global const uchar *qp = CBYTES(q, q_off);                                             \
    int begin, end;                                                                          \
    __global const int *table =                                                              \
        decode_split((__global const int *)CBYTES(block_table, table_off),                   \
                     (__global const int *)CBYTES(context_lens, lens_off), b, split, splits, \
                     split_len, block_size, max_blocks_per_seq, &begin, &end)

/* Sequence b's split `split` of `splits` in decode: its keys [*begin,
 * *end) and its row of the block table. The host cannot see the lengths
 * without a round trip: they are clamped. */
__global const int *decode_split(__global const int *block_table,
                                 __global const int *context_lens, int b, int split, int splits,
                                 int split_len, int block_size, int max_blocks_per_seq,
                                 int *begin, int *end)
{
    int len = clamp(context_lens[b], 0, block_size * max_blocks_per_seq);
    *begin = split * split_len;
    *end = split == splits - 1 ? len : min(len, *begin + split_len);
    return block_table + (size_t)b * max_blocks_per_seq;
}

/* One head's end of a decode work-group, once `fold` holds its `groups`
 * sets' accumulators (head_dim floats each) and a barrier has passed: the
 * sets added, then written as the split's partial (maximum, sum,
 * accumulators) or, with one split, divided by the sum into the output
 * from element `o` of op. */
void decode_finish(__local const float *fold, int groups, int head_dim, float run_max,
                   float run_sum, __global float *part, int splits, __global uchar *op,
                   int dtype, size_t o)
{
    int lid = get_local_id(0);
    if (splits > 1 && lid == 0) {
        part[0] = run_max;
        part[1] = run_sum;
    }
    for (int d = lid; d < head_dim; d += WG) {
        float total = 0.0f;
        for (int set = 0; set < groups; set++)
            total += fold[set * head_dim + d];
        if (splits > 1)
            part[2 + d] = total;
        else
            st(op, dtype, o + d, total / run_sum);
    }
}

/* Decode: one work-group per (head, sequence, split of the context); a
 * single sequence has too few heads to fill a GPU, so the context is split
 * and attention_decode_combine merges the splits' softmax states (with one
 * split the result is written directly). Keys go by in chunks of WG, one
 * key per item: its slot through the block table, its score; the group's
 * maximum and sum update the running softmax. Then the chunk's weighted V
 * rows are accumulated by `groups` sets of items, each set taking every
 * groups-th key and each item `width` consecutive dimensions (8 with wide
 * loads when `vec`: K and V on 16 bytes, head_dim a multiple of 8), so
 * loads are wide, coalesced and many in flight; the sets' sums are folded
 * at the end. One-byte caches read K in 16-byte loads where head_dim is a
 * multiple of 16; an int8 cache's K scale multiplies the score and its V
 * scale the key's weight. `qs` holds head_dim floats; `partial` holds per
 * (sequence, head, split) the maximum, the sum and head_dim accumulators. */
__kernel __attribute__((reqd_work_group_size(WG, 1, 1)))
void attention_decode(DECODE_PARAMS)
{
    __local float red[WG], weight[WG], fold[WG * 8];
    __local uint slot_of[WG];
    int lid = get_local_id(0), h = get_group_id(0), b = get_group_id(1);
    int split = get_group_id(2), splits = get_num_groups(2);
    int kvh = h / (heads / kv_heads);
    size_t kv_row = (size_t)kv_heads * head_dim, head_col = (size_t)kvh * head_dim;
    size_t cache_esize = dtype_size(cache_dtype);
    bool scaled = cache_dtype == DT_I8, bytes_wide = cache_esize == 1 && head_dim % 16 == 0;
    DECODE_POINTERS(b, split, splits);
    /* the host keeps head_dim / width <= WG */
    int width = vec ? 8 : 1, lanes = head_dim / width, groups = WG / lanes;
    int group = lid / lanes, d0 = lid % lanes * width;

    for (int d = lid; d < head_dim; d += WG)
        qs[d] = ld(qp, dtype, (size_t)b * q_stride + (size_t)h * head_dim + d);
    barrier(CLK_LOCAL_MEM_FENCE);
    float run_max = -INFINITY, run_sum = 0.0f;
    float8 acc = 0.0f;
    for (int c0 = begin; c0 < end; c0 += WG) {
        int j = c0 + lid;
        float s = -INFINITY, v_mul = 1.0f;
        if (j < end) {
            size_t slot = (size_t)table[j / block_size] * block_size + j % block_size;
            slot_of[lid] = (uint)slot;
            size_t base = slot * kv_row + head_col;
            float dot = 0.0f;
            if (vec) {
                /* four loads in flight: one at a time, latency dominates */
                int d = 0;
                for (; bytes_wide && d + 48 < head_dim; d += 64) {
                    float16 k0 = bytes16(kc + base + d, cache_dtype);
                    float16 k1 = bytes16(kc + base + d + 16, cache_dtype);
                    float16 k2 = bytes16(kc + base + d + 32, cache_dtype);
                    float16 k3 = bytes16(kc + base + d + 48, cache_dtype);
                    dot += dot16(vload16(0, qs + d), k0) + dot16(vload16(0, qs + d + 16), k1) +
                           dot16(vload16(0, qs + d + 32), k2) + dot16(vload16(0, qs + d + 48), k3);
                }
                for (; bytes_wide && d < head_dim; d += 16)
                    dot += dot16(vload16(0, qs + d), bytes16(kc + base + d, cache_dtype));
                for (; d + 24 < head_dim; d += 32) {
                    float8 k0 = cache8(kc, base + d, cache_esize, cache_dtype);
                    float8 k1 = cache8(kc, base + d + 8, cache_esize, cache_dtype);
                    float8 k2 = cache8(kc, base + d + 16, cache_esize, cache_dtype);
                    float8 k3 = cache8(kc, base + d + 24, cache_esize, cache_dtype);
                    dot += dot8(vload8(0, qs + d), k0) + dot8(vload8(0, qs + d + 8), k1) +
                           dot8(vload8(0, qs + d + 16), k2) + dot8(vload8(0, qs + d + 24), k3);
                }
                for (; d < head_dim; d += 8)
                    dot += dot8(vload8(0, qs + d), cache8(kc, base + d, cache_esize, cache_dtype));
            } else {
                for (int d = 0; d < head_dim; d++)
                    dot += qs[d] * ld(kc, cache_dtype, base + d);
            }
            if (scaled) {
                size_t scale_i = slot * kv_heads + kvh;
                dot *= ks[scale_i];
                v_mul = vs[scale_i];
            }
            s = dot * scale;
        }
        /* key c0 is valid, so the chunk's maximum is finite */
        float new_max = fmax(run_max, group_max(red, s));
        float p = j < end ? exp(s - new_max) : 0.0f;
        weight[lid] = p * v_mul;
        float alpha = exp(run_max - new_max);
        run_sum = run_sum * alpha + group_sum(red, p);
        run_max = new_max;
        int chunk = min(WG, end - c0);
        if (group < groups) {
            acc *= alpha;
            int jj = group;
            size_t col = head_col + d0;
            for (; vec && jj + 3 * groups < chunk; jj += 4 * groups) {
                size_t e = cache_esize;
                float8 v0 = cache8(vc, slot_of[jj] * kv_row + col, e, cache_dtype);
                float8 v1 = cache8(vc, slot_of[jj + groups] * kv_row + col, e, cache_dtype);
                float8 v2 = cache8(vc, slot_of[jj + 2 * groups] * kv_row + col, e, cache_dtype);
                float8 v3 = cache8(vc, slot_of[jj + 3 * groups] * kv_row + col, e, cache_dtype);
                acc += weight[jj] * v0 + weight[jj + groups] * v1 + weight[jj + 2 * groups] * v2 +
                       weight[jj + 3 * groups] * v3;
            }
            for (; jj < chunk; jj += groups) {
                size_t v = slot_of[jj] * kv_row + col;
                if (vec)
                    acc += weight[jj] * cache8(vc, v, cache_esize, cache_dtype);
                else
                    acc.s0 += weight[jj] * ld(vc, cache_dtype, v);
            }
        }
        /* everyone is done with weight and slot_of before the next chunk */
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    if (group < groups) {
        if (vec)
            vstore8(acc, 0, fold + group * head_dim + d0);
        else
            fold[group * head_dim + d0] = acc.s0;
    }
    barrier(CLK_LOCAL_MEM_FENCE);
    decode_finish(fold, groups, head_dim, run_max, run_sum,
                  partial + (((size_t)b * heads + h) * splits + split) * (head_dim + 2), splits,
                  BYTES(out, out_off), dtype, (size_t)b * out_stride + (size_t)h * head_dim);
}

/* attention_decode for a GQA group of 2 to GQA_MAX query heads sharing a
 * KV head: one work-group per (KV head, sequence, split) reads each key's
 * K and V rows once for the group's heads, where attention_decode's
 * work-groups, one per query head, read them once per head. An item takes
 * a key of the chunk and its scores against every head's q; the heads'
 * maxima and sums are reduced side by side (one pass of barriers for all
 * of them); then each item of a set accumulates 8 dimensions of every
 * head, V loaded once for them all. Only with `vec` (head_dim in eights,
 * caches on 16 bytes). `qs` holds the group's q, heads * head_dim / kv_heads
 * floats; `partial` and the output as attention_decode's. */
#define GQA_MAX 8
__kernel __attribute__((reqd_work_group_size(WG, 1, 1)))
void attention_decode_gqa(DECODE_PARAMS)
{
    __local float red[WG * GQA_MAX], weight[GQA_MAX * WG], fold[WG * 8];
    __local uint slot_of[WG];
    int lid = get_local_id(0), kvh = get_group_id(0), b = get_group_id(1);
    int split = get_group_id(2), splits = get_num_groups(2);
    int n = heads / kv_heads, h0 = kvh * n;
    size_t kv_row = (size_t)kv_heads * head_dim, head_col = (size_t)kvh * head_dim;
    size_t cache_esize = dtype_size(cache_dtype);
    bool scaled = cache_dtype == DT_I8;
    DECODE_POINTERS(b, split, splits);
    int lanes = head_dim / 8, groups = WG / lanes;
    int group = lid / lanes, d0 = lid % lanes * 8;

    for (int i = lid; i < n * head_dim; i += WG)
        qs[i] = ld(qp, dtype, (size_t)b * q_stride + (size_t)h0 * head_dim + i);
    barrier(CLK_LOCAL_MEM_FENCE);
    float run_max[GQA_MAX], run_sum[GQA_MAX];
    float8 acc[GQA_MAX];
#pragma unroll
    for (int g = 0; g < GQA_MAX; g++) {
        run_max[g] = -INFINITY;
        run_sum[g] = 0.0f;
        acc[g] = 0.0f;
    }
    for (int c0 = begin; c0 < end; c0 += WG) {
        int j = c0 + lid;
        float s[GQA_MAX], v_mul = 1.0f;
#pragma unroll
        for (int g = 0; g < GQA_MAX; g++)
            s[g] = -INFINITY;
        if (j < end) {
            size_t slot = (size_t)table[j / block_size] * block_size + j % block_size;
            slot_of[lid] = (uint)slot;
            size_t base = slot * kv_row + head_col;
            float dot[GQA_MAX];
#pragma unroll
            for (int g = 0; g < GQA_MAX; g++)
                dot[g] = 0.0f;
            for (int d = 0; d < head_dim; d += 8) {
                float8 k = cache8(kc, base + d, cache_esize, cache_dtype);
#pragma unroll
                for (int g = 0; g < GQA_MAX; g++)
                    if (g < n)
                        dot[g] += dot8(vload8(0, qs + g * head_dim + d), k);
            }
            float mul = scale;
            if (scaled) {
                size_t scale_i = slot * kv_heads + kvh;
                mul *= ks[scale_i];
                v_mul = vs[scale_i];
            }
#pragma unroll
            for (int g = 0; g < GQA_MAX; g++)
                if (g < n)
                    s[g] = dot[g] * mul;
        }
        /* every head's maximum over the chunk, side by side (key c0 is
         * valid, so they are finite) */
#pragma unroll
        for (int g = 0; g < GQA_MAX; g++)
            red[g * WG + lid] = s[g];
        barrier(CLK_LOCAL_MEM_FENCE);
        for (int span = WG / 2; span > 0; span >>= 1) {
            if (lid < span)
                for (int g = 0; g < n; g++)
                    red[g * WG + lid] = fmax(red[g * WG + lid], red[g * WG + lid + span]);
            barrier(CLK_LOCAL_MEM_FENCE);
        }
        float p[GQA_MAX], alpha[GQA_MAX];
#pragma unroll
        for (int g = 0; g < GQA_MAX; g++) {
            float new_max = g < n ? fmax(run_max[g], red[g * WG]) : 0.0f;
            p[g] = g < n && j < end ? exp(s[g] - new_max) : 0.0f;
            alpha[g] = g < n ? exp(run_max[g] - new_max) : 1.0f;
            run_max[g] = new_max;
        }
        barrier(CLK_LOCAL_MEM_FENCE);
        /* and their sums */
#pragma unroll
        for (int g = 0; g < GQA_MAX; g++) {
            red[g * WG + lid] = p[g];
            weight[g * WG + lid] = p[g] * v_mul;
        }
        barrier(CLK_LOCAL_MEM_FENCE);
        for (int span = WG / 2; span > 0; span >>= 1) {
            if (lid < span)
                for (int g = 0; g < n; g++)
                    red[g * WG + lid] += red[g * WG + lid + span];
            barrier(CLK_LOCAL_MEM_FENCE);
        }
#pragma unroll
        for (int g = 0; g < GQA_MAX; g++)
            if (g < n)
                run_sum[g] = run_sum[g] * alpha[g] + red[g * WG];
        int chunk = min(WG, end - c0);
        if (group < groups) {
#pragma unroll
            for (int g = 0; g < GQA_MAX; g++)
                if (g < n)
                    acc[g] *= alpha[g];
            size_t col = head_col + d0;
            for (int jj = group; jj < chunk; jj += groups) {
                float8 v = cache8(vc, slot_of[jj] * kv_row + col, cache_esize, cache_dtype);
#pragma unroll
                for (int g = 0; g < GQA_MAX; g++)
                    if (g < n)
                        acc[g] += weight[g * WG + jj] * v;
            }
        }
        /* everyone is done with red, weight and slot_of before the next chunk */
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    /* the heads one after another through `fold` (n is the same for the
     * whole work-group, so every item meets the same barriers) */
#pragma unroll
    for (int g = 0; g < GQA_MAX; g++) {
        if (g < n) {
            int h = h0 + g;
            if (group < groups)
                vstore8(acc[g], 0, fold + group * head_dim + d0);
            barrier(CLK_LOCAL_MEM_FENCE);
            decode_finish(fold, groups, head_dim, run_max[g], run_sum[g],
                          partial + (((size_t)b * heads + h) * splits + split) * (head_dim + 2),
                          splits, BYTES(out, out_off), dtype,
                          (size_t)b * out_stride + (size_t)h * head_dim);
            barrier(CLK_LOCAL_MEM_FENCE);
        }
    }
}

/* Merges the splits of attention_decode: each split's sum and accumulators
 * are relative to its own maximum, so they are rescaled to the largest
 * (an empty split has maximum -inf and weighs 0). One work-group per
 * (head, sequence). */
__kernel __attribute__((reqd_work_group_size(WG, 1, 1)))
void attention_decode_combine(__global const float *partial, int splits, int heads,
                              int head_dim, __global uchar *out, ulong out_off, int out_stride,
                              int dtype)
{
    int lid = get_local_id(0), h = get_group_id(0), b = get_group_id(1);
    __global const float *part = partial + ((size_t)b * heads + h) * splits * (head_dim + 2);
    float max = -INFINITY, sum = 0.0f;
    for (int s = 0; s < splits; s++)
        max = fmax(max, part[s * (head_dim + 2)]);
    for (int s = 0; s < splits; s++)
        sum += exp(part[s * (head_dim + 2)] - max) * part[s * (head_dim + 2) + 1];
    for (int d = lid; d < head_dim; d += WG) {
        float o = 0.0f;
        for (int s = 0; s < splits; s++)
            o += exp(part[s * (head_dim + 2)] - max) * part[s * (head_dim + 2) + 2 + d];
        st(BYTES(out, out_off), dtype, (size_t)b * out_stride + (size_t)h * head_dim + d, o / sum);
    }
}

/* Decode attention in ops.cl's span layout, for CPU devices: one item per
 * (sequence, split), the work-group's only item, takes every head, so that
 * it streams the cache's rows (every KV head of a slot) front to back as a
 * CPU's prefetchers like; an item per head would read 256 bytes of every
 * 2 KiB and wait on memory for each. Keys go in tiles of DECODE_KEYS: while
 * the next tile's rows are prefetched, each key's K against the q of every
 * head of its KV head, up to four heads at a time in registers; the tile's
 * scores one float16 per head for the softmax; then V's rows accumulated
 * sixteen dimensions at a time for those heads. K and V are converted to
 * f32 in registers where they are used, the body compiled once per cache
 * dtype: staging a tile's rows in f32 in local memory (128 KiB at
 * Llama-3-8B's heads, past L1) cost a store and a load more per sixteen
 * values and took a quarter longer. head_dim is a multiple of 16. Takes
 * attention_decode's arguments, with the geometry (global (1, batch,
 * splits)) and `qs`'s size its own: the item's working memory, laid out
 * below, kernel_ops.inc's decode_span_floats floats; writes what
 * attention_decode writes. */
#define DECODE_KEYS 16

/* 16 values of a KV cache of dtype t from element i on, as f32; t is a
 * constant where this is inlined, so no test is left. */
__attribute__((always_inline)) static inline float16 cache16(__global const uchar *cache, int t,
                                                             size_t i)
{
    if (t == DT_F16)
        return vload_half16(0, (__global const half *)cache + i);
    if (t == DT_BF16)
        return as_float16(convert_uint16(vload16(0, (__global const ushort *)cache + i)) << 16);
    if (t == DT_FP8 || t == DT_I8) {
        uchar16 b = vload16(0, cache + i);
        if (t == DT_FP8)
            return (float16)(fp8x4_to_f32(b.s0123), fp8x4_to_f32(b.s4567),
                             fp8x4_to_f32(b.s89ab), fp8x4_to_f32(b.scdef));
        return (float16)(i8x4_to_f32(b.s0123), i8x4_to_f32(b.s4567), i8x4_to_f32(b.s89ab),
                         i8x4_to_f32(b.scdef));
    }
    return vload16(0, (__global const float *)cache + i);
}

float max16(float16 v)
{
    float8 m8 = fmax(v.lo, v.hi);
    float4 m4 = fmax(m8.lo, m8.hi);
    return fmax(fmax(m4.x, m4.y), fmax(m4.z, m4.w));
}

/* Scores of heads h0 to h0 + nh - 1 (nh 1, 2 or 4) against one key's K
 * row (one KV head's, element k of the cache kc of dtype t), times `mul`,
 * to w[head][j]. nh and t are constants where this is inlined, so the
 * heads' sums stay in registers with no test per head; each head sums
 * alternate sixteens apart, so that eight chains of multiply-adds, not
 * four, hide their latency. */
__attribute__((always_inline)) static inline void
decode_scores(__local const float *qh, __global const uchar *kc, int t, size_t k,
              __local float *w, int h0, int nh, int j, int head_dim, float mul)
{
    __local const float *q0 = qh + (size_t)h0 * head_dim, *q1 = q0 + head_dim;
    __local const float *q2 = q1 + head_dim, *q3 = q2 + head_dim;
    float16 d0 = 0.0f, d1 = 0.0f, d2 = 0.0f, d3 = 0.0f;
    float16 e0 = 0.0f, e1 = 0.0f, e2 = 0.0f, e3 = 0.0f;
    int d = 0;
    for (; d + 32 <= head_dim; d += 32) {
        float16 k0 = cache16(kc, t, k + d), k1 = cache16(kc, t, k + d + 16);
        d0 += vload16(0, q0 + d) * k0;
        e0 += vload16(0, q0 + d + 16) * k1;
        if (nh > 1) {
            d1 += vload16(0, q1 + d) * k0;
            e1 += vload16(0, q1 + d + 16) * k1;
        }
        if (nh > 2) {
            d2 += vload16(0, q2 + d) * k0;
            e2 += vload16(0, q2 + d + 16) * k1;
            d3 += vload16(0, q3 + d) * k0;
            e3 += vload16(0, q3 + d + 16) * k1;
        }
    }
    if (d < head_dim) {
        float16 k0 = cache16(kc, t, k + d);
        d0 += vload16(0, q0 + d) * k0;
        if (nh > 1)
            d1 += vload16(0, q1 + d) * k0;
        if (nh > 2) {
            d2 += vload16(0, q2 + d) * k0;
            d3 += vload16(0, q3 + d) * k0;
        }
    }
    __local float *wj = w + h0 * DECODE_KEYS + j;
    wj[0] = sum16(d0 + e0) * mul;
    if (nh > 1)
        wj[DECODE_KEYS] = sum16(d1 + e1) * mul;
    if (nh > 2) {
        wj[2 * DECODE_KEYS] = sum16(d2 + e2) * mul;
        wj[3 * DECODE_KEYS] = sum16(d3 + e3) * mul;
    }
}

/* The tile's weighted V rows (key j's one KV head's at element at[j] + col
 * of the cache vc of dtype t) into the accumulators of heads h0 to
 * h0 + nh - 1, as above: the tile's two halves of keys summed apart. */
__attribute__((always_inline)) static inline void
decode_values(__local float *acc, __global const uchar *vc, int t, const size_t *at, size_t col,
              __local const float *w, int h0, int nh, int head_dim)
{
    __local float *a = acc + (size_t)h0 * head_dim;
    __local const float *w0 = w + h0 * DECODE_KEYS, *w1 = w0 + DECODE_KEYS;
    __local const float *w2 = w1 + DECODE_KEYS, *w3 = w2 + DECODE_KEYS;
    const int halfway = DECODE_KEYS / 2;
    for (int d = 0; d < head_dim; d += 16) {
        float16 a0 = vload16(0, a + d), a1 = 0.0f, a2 = 0.0f, a3 = 0.0f;
        float16 b0 = 0.0f, b1 = 0.0f, b2 = 0.0f, b3 = 0.0f;
        if (nh > 1)
            a1 = vload16(0, a + head_dim + d);
        if (nh > 2) {
            a2 = vload16(0, a + 2 * head_dim + d);
            a3 = vload16(0, a + 3 * head_dim + d);
        }
        for (int j = 0; j < halfway; j++) {
            float16 v0 = cache16(vc, t, at[j] + col + d);
            float16 v1 = cache16(vc, t, at[j + halfway] + col + d);
            a0 += w0[j] * v0;
            b0 += w0[j + halfway] * v1;
            if (nh > 1) {
                a1 += w1[j] * v0;
                b1 += w1[j + halfway] * v1;
            }
            if (nh > 2) {
                a2 += w2[j] * v0;
                b2 += w2[j + halfway] * v1;
                a3 += w3[j] * v0;
                b3 += w3[j + halfway] * v1;
            }
        }
        vstore16(a0 + b0, 0, a + d);
        if (nh > 1)
            vstore16(a1 + b1, 0, a + head_dim + d);
        if (nh > 2) {
            vstore16(a2 + b2, 0, a + 2 * head_dim + d);
            vstore16(a3 + b3, 0, a + 3 * head_dim + d);
        }
    }
}

/* attention_decode_span's keys [begin, end) for a cache of dtype t (a
 * constant where this is inlined) into the running softmax and the
 * accumulators. */
__attribute__((always_inline)) static inline void
decode_span_keys(__global const uchar *kc, __global const uchar *vc, __global const float *ks,
                 __global const float *vs, int t, __global const int *table, int begin, int end,
                 int block_size, int heads, int kv_heads, int head_dim, float scale,
                 __local float *v_mul, __local float *w, __local const float *qh,
                 __local float *acc, __local float *run_max, __local float *run_sum)
{
    int group = heads / kv_heads, row = kv_heads * head_dim;
    bool scaled = t == DT_I8;
    size_t row_bytes = (size_t)row * dtype_size(t);
    /* the h-th head's KV head's heads in fours, then a two and a one: each
     * a constant count */
    int fours = group / 4 * 4, two = group % 4 / 2 * 2;
    /* the tile's slots, and the elements their rows start at */
    size_t slot[DECODE_KEYS], at[DECODE_KEYS];
    for (int c0 = begin; c0 < end; c0 += DECODE_KEYS) {
        int keys = min(DECODE_KEYS, end - c0);
        for (int j = 0; j < keys; j++) {
            int key = c0 + j;
            slot[j] = (size_t)table[key / block_size] * block_size + key % block_size;
            at[j] = slot[j] * row;
        }
        for (int j = 0; j < keys; j++) {
            int key = c0 + j;
            /* the next tile's row, while this one's is computed on */
            if (key + DECODE_KEYS < end) {
                int next = key + DECODE_KEYS;
                size_t slot = (size_t)table[next / block_size] * block_size + next % block_size;
                prefetch_bytes(kc + slot * row_bytes, row_bytes);
                prefetch_bytes(vc + slot * row_bytes, row_bytes);
            }
            for (int kvh = 0; kvh < kv_heads; kvh++) {
                float k_mul = scaled ? ks[slot[j] * kv_heads + kvh] : 1.0f;
                v_mul[kvh * DECODE_KEYS + j] = scaled ? vs[slot[j] * kv_heads + kvh] : 1.0f;
                size_t k = at[j] + (size_t)kvh * head_dim;
                int h0 = kvh * group, h2 = h0 + fours, h1 = h2 + two;
                for (int h = h0; h < h2; h += 4)
                    decode_scores(qh, kc, t, k, w, h, 4, j, head_dim, k_mul * scale);
                if (h1 > h2)
                    decode_scores(qh, kc, t, k, w, h2, 2, j, head_dim, k_mul * scale);
                if (group % 2)
                    decode_scores(qh, kc, t, k, w, h1, 1, j, head_dim, k_mul * scale);
            }
        }
        /* past the end: weight 0 on the first key's V rows, which are
         * finite where the result is */
        for (int j = keys; j < DECODE_KEYS; j++) {
            at[j] = at[0];
            for (int h = 0; h < heads; h++)
                w[h * DECODE_KEYS + j] = -INFINITY;
            for (int kvh = 0; kvh < kv_heads; kvh++)
                v_mul[kvh * DECODE_KEYS + j] = 0.0f;
        }
        /* the tile's first key is valid, so every maximum is finite */
        for (int h = 0; h < heads; h++) {
            __local float *wh = w + h * DECODE_KEYS;
            float16 s = vload16(0, wh);
            float new_max = fmax(run_max[h], max16(s));
            float16 p = exp(s - new_max);
            float alpha = exp(run_max[h] - new_max);
            run_sum[h] = run_sum[h] * alpha + sum8(p.lo + p.hi);
            run_max[h] = new_max;
            vstore16(scaled ? p * vload16(0, v_mul + h / group * DECODE_KEYS) : p, 0, wh);
            for (int d = 0; d < head_dim; d += 8) {
                __local float *a = acc + (size_t)h * head_dim + d;
                vstore8(vload8(0, a) * alpha, 0, a);
            }
        }
        for (int kvh = 0; kvh < kv_heads; kvh++) {
            size_t col = (size_t)kvh * head_dim;
            int h0 = kvh * group, h2 = h0 + fours, h1 = h2 + two;
            for (int h = h0; h < h2; h += 4)
                decode_values(acc, vc, t, at, col, w, h, 4, head_dim);
            if (h1 > h2)
                decode_values(acc, vc, t, at, col, w, h2, 2, head_dim);
            if (group % 2)
                decode_values(acc, vc, t, at, col, w, h1, 1, head_dim);
        }
    }
}

__kernel void attention_decode_span(DECODE_PARAMS)
{
    int b = get_global_id(1), split = get_global_id(2), splits = get_global_size(2);
    /* the working memory: per KV head and key the V scale; per head and
     * key the score, then the weight; per head q, the accumulators, the
     * running maximum and sum */
    __local float *v_mul = qs, *w = v_mul + kv_heads * DECODE_KEYS;
    __local float *qh = w + heads * DECODE_KEYS, *acc = qh + heads * head_dim;
    __local float *run_max = acc + heads * head_dim, *run_sum = run_max + heads;
    DECODE_POINTERS(b, split, splits);
    for (int h = 0; h < heads; h++) {
        run_max[h] = -INFINITY;
        run_sum[h] = 0.0f;
    }
    for (int i = 0; i < heads * head_dim; i += 8) {
        vstore8(ld8(qp, dtype, (size_t)b * q_stride + i), 0, qh + i);
        vstore8((float8)0.0f, 0, acc + i);
    }
#define DECODE_SPAN_KEYS(t)                                                                   \
    decode_span_keys(kc, vc, ks, vs, t, table, begin, end, block_size, heads, kv_heads,       \
                     head_dim, scale, v_mul, w, qh, acc, run_max, run_sum)
    if (cache_dtype == DT_F16)
        DECODE_SPAN_KEYS(DT_F16);
    else if (cache_dtype == DT_BF16)
        DECODE_SPAN_KEYS(DT_BF16);
    else if (cache_dtype == DT_FP8)
        DECODE_SPAN_KEYS(DT_FP8);
    else if (cache_dtype == DT_I8)
        DECODE_SPAN_KEYS(DT_I8);
    else
        DECODE_SPAN_KEYS(DT_F32);
#undef DECODE_SPAN_KEYS
    __global uchar *op = BYTES(out, out_off);
    for (int h = 0; h < heads; h++) {
        __local const float *ah = acc + (size_t)h * head_dim;
        if (splits > 1) {
            __global float *part =
                partial + (((size_t)b * heads + h) * splits + split) * (head_dim + 2);
            part[0] = run_max[h];
            part[1] = run_sum[h];
            for (int d = 0; d < head_dim; d += 8)
                vstore8(vload8(0, ah + d), 0, part + 2 + d);
        } else {
            for (int d = 0; d < head_dim; d += 8)
                st8(op, dtype, (size_t)b * out_stride + (size_t)h * head_dim + d,
                    vload8(0, ah + d) / run_sum[h]);
        }
    }
}
