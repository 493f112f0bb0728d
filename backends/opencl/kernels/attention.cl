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
void attention_decode(__global const uchar *q, ulong q_off, int q_stride,
                      __global uchar *out, ulong out_off, int out_stride,
                      __global const uchar *k_cache, ulong kc_off,
                      __global const uchar *v_cache, ulong vc_off,
                      __global const uchar *k_scale, ulong ks_off,
                      __global const uchar *v_scale, ulong vs_off,
                      __global const int *block_table, ulong table_off,
                      __global const int *context_lens, ulong lens_off,
                      int heads, int kv_heads, int head_dim, int block_size,
                      int max_blocks_per_seq, float scale, int dtype, int cache_dtype, int vec,
                      int split_len, __global float *partial, __local float *qs)
{
    __local float red[WG], weight[WG], fold[WG * 8];
    __local uint slot_of[WG];
    int lid = get_local_id(0), h = get_group_id(0), b = get_group_id(1);
    int split = get_group_id(2), splits = get_num_groups(2);
    int kvh = h / (heads / kv_heads);
    size_t kv_row = (size_t)kv_heads * head_dim, head_col = (size_t)kvh * head_dim;
    size_t cache_esize = dtype_size(cache_dtype);
    bool scaled = cache_dtype == DT_I8, bytes_wide = cache_esize == 1 && head_dim % 16 == 0;
    __global const float *ks = (__global const float *)CBYTES(k_scale, ks_off);
    __global const float *vs = (__global const float *)CBYTES(v_scale, vs_off);
    __global const int *table = (__global const int *)CBYTES(block_table, table_off) +
                                (size_t)b * max_blocks_per_seq;
    /* the host cannot see the lengths without a round trip: clamp them */
    int len = clamp(((__global const int *)CBYTES(context_lens, lens_off))[b], 0,
                    block_size * max_blocks_per_seq);
    int begin = split * split_len;
    int end = split == splits - 1 ? len : min(len, begin + split_len);
    __global const uchar *kc = CBYTES(k_cache, kc_off), *vc = CBYTES(v_cache, vc_off);
    __global const uchar *qp = CBYTES(q, q_off);
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
    __global uchar *op = BYTES(out, out_off);
    __global float *part = partial + (((size_t)b * heads + h) * splits + split) * (head_dim + 2);
    if (splits > 1 && lid == 0) {
        part[0] = run_max;
        part[1] = run_sum;
    }
    for (int d = lid; d < head_dim; d += WG) {
        float total = 0.0f;
        for (int g = 0; g < groups; g++)
            total += fold[g * head_dim + d];
        if (splits > 1)
            part[2 + d] = total;
        else
            st(op, dtype, (size_t)b * out_stride + (size_t)h * head_dim + d, total / run_sum);
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
