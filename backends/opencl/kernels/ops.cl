/* Element-wise and row-wise ops. One work-item per element unless a kernel
 * says otherwise; the host rounds global sizes up, so every kernel checks
 * its bounds. */

ulong mix64(ulong z)
{
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ul;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBul;
    return z ^ (z >> 31);
}

/* backend.h's dy_random_unit with the key computed on the host. The
 * product and the sum must round apart to match the host bit for bit, so
 * the product must not be fused into a multiply-add. FP_CONTRACT OFF and
 * volatile do not stop NVIDIA's compiler (ptxas fuses a mul.f32 into a
 * following add); an integer round trip through `opaque_zero`, 0 but
 * unknown to the compiler, stops any. */
__kernel void fill_random(__global uchar *dst, ulong dst_off, ulong count, int dtype,
                          ulong key, float scale, float offset, uint opaque_zero)
{
    size_t i = get_global_id(0);
    if (i >= count)
        return;
    ulong bits = mix64(key + (i + 1) * 0x9E3779B97F4A7C15ul) >> 40;
    float u = (float)((int)(bits << 1) - (1 << 24)) * (1.0f / 16777216.0f);
    float scaled = as_float(as_uint(scale * u) ^ opaque_zero);
    st(BYTES(dst, dst_off), dtype, i, offset + scaled);
}

__kernel void convert(__global const uchar *src, ulong src_off, int src_dtype,
                      __global uchar *dst, ulong dst_off, int dst_dtype, ulong count)
{
    size_t i = get_global_id(0);
    if (i < count)
        st(BYTES(dst, dst_off), dst_dtype, i, ld(CBYTES(src, src_off), src_dtype, i));
}

/* backend.h's enum dy_eltwise_op */
#define ELT_ADD 0
#define ELT_SILU_MUL 1
#define ELT_GELU 2
#define ELT_GATED_ADD 3

__kernel void eltwise(int op, __global const uchar *a, ulong a_off, int a_stride,
                      __global const uchar *b, ulong b_off, int b_stride,
                      __global uchar *out, ulong out_off, int out_stride,
                      int rows, int cols, int dtype)
{
    int i = get_global_id(0), r = get_global_id(1);
    if (i >= cols || r >= rows)
        return;
    float x = ld(CBYTES(a, a_off), dtype, (size_t)r * a_stride + i), y;
    size_t o = (size_t)r * out_stride + i;
    if (op == ELT_GELU) {
        y = 0.5f * x * (1.0f + erf(x * M_SQRT1_2_F));
    } else if (op == ELT_GATED_ADD) {
        /* b holds one gate logit per row */
        float gate = 1.0f / (1.0f + exp(-ld(CBYTES(b, b_off), dtype, (size_t)r * b_stride)));
        y = ld(BYTES(out, out_off), dtype, o) + gate * x;
    } else {
        float other = ld(CBYTES(b, b_off), dtype, (size_t)r * b_stride + i);
        y = op == ELT_ADD ? x + other : x / (1.0f + exp(-x)) * other;
    }
    st(BYTES(out, out_off), dtype, o, y);
}

__kernel void gather_rows(__global const uchar *table, ulong table_off, int table_stride,
                          int table_dtype, __global const int *ids, ulong ids_off,
                          __global uchar *out, ulong out_off, int out_stride, int out_dtype,
                          int rows, int cols)
{
    int i = get_global_id(0), r = get_global_id(1);
    if (i >= cols || r >= rows)
        return;
    int id = ((__global const int *)CBYTES(ids, ids_off))[r];
    st(BYTES(out, out_off), out_dtype, (size_t)r * out_stride + i,
       ld(CBYTES(table, table_off), table_dtype, (size_t)id * table_stride + i));
}

/* One work-item per rotated pair (i, i + head_dim / 2) of one head. */
__kernel void rope(__global uchar *x, ulong x_off, __global const int *positions, ulong pos_off,
                   __global const float *inv_freq, ulong freq_off, int tokens, int heads,
                   int head_dim, int row_stride, int dtype)
{
    int half_dim = head_dim / 2;
    int pair = get_global_id(0), t = get_global_id(1);
    if (pair >= heads * half_dim || t >= tokens)
        return;
    int h = pair / half_dim, i = pair % half_dim;
    int pos = ((__global const int *)CBYTES(positions, pos_off))[t];
    float angle = (float)pos * ((__global const float *)CBYTES(inv_freq, freq_off))[i];
    float c = cos(angle), s = sin(angle);
    __global uchar *row = BYTES(x, x_off);
    size_t base = (size_t)t * row_stride + (size_t)h * head_dim;
    float x0 = ld(row, dtype, base + i), x1 = ld(row, dtype, base + i + half_dim);
    st(row, dtype, base + i, x0 * c - x1 * s);
    st(row, dtype, base + i + half_dim, x1 * c + x0 * s);
}

/* backend.h's enum dy_norm_kind */
#define NORM_LAYER 1

/* float4s of a row each item holds in the register path: rows of up to
 * 32 * WG f32 values (4,096 at WG 128, Llama-3.1-8B's hidden size). */
#define NORM_VECS 8

/* Four weights from a float4 index of a row on 4 elements: one 16-byte
 * load for f32, one 8-byte load for the 16-bit dtypes. f16 goes through a
 * private copy, as ld8_aligned's does. */
float4 ld4_aligned(__global const uchar *p, int t, int i4)
{
    if (t == DT_F32)
        return ((__global const float4 *)p)[i4];
    uint2 w = ((__global const uint2 *)p)[i4];
    if (t == DT_F16) {
        uint bits[2] = { w.x, w.y };
        return vload_half4(0, (const half *)bits);
    }
    return as_float4((uint4)(w.x << 16, w.x & 0xffff0000u, w.y << 16, w.y & 0xffff0000u));
}

/* Four values to a float4 index of a row on 4 elements of a float dtype:
 * one 16-byte store for f32, one 8-byte store for the 16-bit dtypes. */
void st4_aligned(__global uchar *p, int t, int i4, float4 y)
{
    if (t == DT_F32)
        ((__global float4 *)p)[i4] = y;
    else if (t == DT_F16)
        ((__global ushort4 *)p)[i4] = f32x4_to_f16(y);
    else
        ((__global ushort4 *)p)[i4] = f32x4_to_bf16(y);
}

/* norm for an f32 row on 16 bytes, dim a multiple of 4 up to NORM_VECS
 * float4s an item, out a row of any float dtype on 4 elements: the row is
 * read once into registers, all loads of an item issued before the first
 * reduction, where the general loop waits on memory for each element,
 * three times. Each item writes only the values it read, so x may be out. */
void norm_row_vec(__local float *red, int kind, __global const float4 *xr,
                  __global const uchar *w, __global const uchar *bias, int weight_dtype,
                  __global uchar *out, int out_dtype, int dim, float eps)
{
    int lid = get_local_id(0), vecs = dim / 4;
    float4 v[NORM_VECS];
    float sum = 0.0f;
#pragma unroll
    for (int k = 0; k < NORM_VECS; k++) {
        int j = lid + k * WG;
        v[k] = j < vecs ? xr[j] : 0.0f;
        sum += v[k].x + v[k].y + v[k].z + v[k].w;
    }
    float mean = kind == NORM_LAYER ? group_sum(red, sum) / dim : 0.0f;
    float sq = 0.0f;
#pragma unroll
    for (int k = 0; k < NORM_VECS; k++) {
        /* masked: a missing value less the mean is not 0 */
        float4 c = lid + k * WG < vecs ? v[k] - mean : 0.0f;
        sq += c.x * c.x + c.y * c.y + c.z * c.z + c.w * c.w;
    }
    float inv = 1.0f / sqrt(group_sum(red, sq) / dim + eps);
#pragma unroll
    for (int k = 0; k < NORM_VECS; k++) {
        int j = lid + k * WG;
        if (j < vecs) {
            float4 y = (v[k] - mean) * inv * ld4_aligned(w, weight_dtype, j);
            if (bias)
                y += ld4_aligned(bias, weight_dtype, j);
            st4_aligned(out, out_dtype, j, y);
        }
    }
}

/* One work-group per row. LayerNorm takes the mean first and the variance
 * of the centred values after, which loses less than E[x^2] - mean^2.
 * f32 rows on 16 bytes of up to NORM_VECS float4s an item, weights and
 * out on 4 elements, take norm_row_vec; the loops below serve every other
 * row. The choice is made here, not by the host, so that the kernel's
 * arguments are the same for every caller. x may be out where dtype is
 * out_dtype (in place, as OLMoE's q and k norms inside the qkv rows):
 * after the last barrier each item reads only the elements it writes. */
__kernel __attribute__((reqd_work_group_size(WG, 1, 1)))
void norm(int kind, __global const uchar *x, ulong x_off, int x_stride,
          __global const uchar *weight, ulong w_off, __global const uchar *bias, ulong bias_off,
          int weight_dtype, __global uchar *out, ulong out_off, int out_stride, int dim,
          float eps, int dtype, int out_dtype)
{
    __local float red[WG];
    int lid = get_local_id(0);
    __global const uchar *xr = CBYTES(x, x_off), *w = CBYTES(weight, w_off);
    __global const uchar *b = bias ? CBYTES(bias, bias_off) : 0;
    __global uchar *o = BYTES(out, out_off);
    size_t row = (size_t)get_group_id(0) * x_stride;
    size_t orow = (size_t)get_group_id(0) * out_stride;
    size_t w_align = 4 * dtype_size(weight_dtype), o_esize = dtype_size(out_dtype);
    if (dtype == DT_F32 && dim % 4 == 0 && dim <= NORM_VECS * 4 * WG && x_stride % 4 == 0 &&
        out_stride % 4 == 0 && (size_t)xr % 16 == 0 && (size_t)o % (4 * o_esize) == 0 &&
        ((size_t)w | (size_t)b) % w_align == 0) {
        norm_row_vec(red, kind, (__global const float4 *)((__global const float *)xr + row), w, b,
                     weight_dtype, o + orow * o_esize, out_dtype, dim, eps);
        return;
    }
    float mean = 0.0f;
    if (kind == NORM_LAYER) {
        float sum = 0.0f;
        for (int i = lid; i < dim; i += WG)
            sum += ld(xr, dtype, row + i);
        mean = group_sum(red, sum) / dim;
    }
    float sq = 0.0f;
    for (int i = lid; i < dim; i += WG) {
        float v = ld(xr, dtype, row + i) - mean;
        sq += v * v;
    }
    float inv = 1.0f / sqrt(group_sum(red, sq) / dim + eps);
    for (int i = lid; i < dim; i += WG) {
        float v = (ld(xr, dtype, row + i) - mean) * inv * ld(w, weight_dtype, i);
        if (b)
            v += ld(b, weight_dtype, i);
        st(o, out_dtype, orow + i, v);
    }
}

/* The work-group's (value, index) pairs in best_v/best_i into element 0:
 * the larger value, the lower index on ties; INT_MAX marks no candidate. */
static void argmax_tree(__local float *best_v, __local int *best_i, int lid)
{
    barrier(CLK_LOCAL_MEM_FENCE);
    for (int s = WG / 2; s > 0; s >>= 1) {
        if (lid < s) {
            float ov = best_v[lid + s], mv = best_v[lid];
            int oi = best_i[lid + s], mi = best_i[lid];
            if (oi != INT_MAX && (mi == INT_MAX || ov > mv || (ov == mv && oi < mi))) {
                best_v[lid] = ov;
                best_i[lid] = oi;
            }
        }
        barrier(CLK_LOCAL_MEM_FENCE);
    }
}

/* `chunks` work-groups per row, each over its share of the columns: each
 * item keeps the first maximum of its strided part, the tree the first of
 * the group's. One chunk writes the row's answer; more write (value,
 * index) pairs to `part` (the value's bits, then the index) for
 * argmax_merge (a row of one token's 128k logits is too long for one
 * work-group). */
__kernel __attribute__((reqd_work_group_size(WG, 1, 1)))
void argmax(__global const uchar *x, ulong x_off, int stride, int dtype,
            __global int *out, ulong out_off, int cols, int chunks, __global int *part)
{
    __local float best_v[WG];
    __local int best_i[WG];
    int lid = get_local_id(0), g = get_group_id(0), r = g / chunks, k = g % chunks;
    int len = (cols + chunks - 1) / chunks, end = min(cols, (k + 1) * len);
    __global const uchar *xr = CBYTES(x, x_off);
    size_t row = (size_t)r * stride;
    float bv = -INFINITY;
    int bi = INT_MAX;
    for (int i = k * len + lid; i < end; i += WG) {
        float v = ld(xr, dtype, row + i);
        if (bi == INT_MAX || v > bv) {
            bv = v;
            bi = i;
        }
    }
    best_v[lid] = bv;
    best_i[lid] = bi;
    argmax_tree(best_v, best_i, lid);
    if (lid == 0 && chunks == 1) {
        ((__global int *)BYTES(out, out_off))[r] = best_i[0];
    } else if (lid == 0) {
        part[2 * g] = as_int(best_v[0]);
        part[2 * g + 1] = best_i[0];
    }
}

/* One work-group per row: the first maximum over its chunks' pairs */
__kernel __attribute__((reqd_work_group_size(WG, 1, 1)))
void argmax_merge(__global const int *part, int chunks, __global int *out, ulong out_off)
{
    __local float best_v[WG];
    __local int best_i[WG];
    int lid = get_local_id(0), r = get_group_id(0);
    size_t p = 2 * ((size_t)r * chunks + lid);
    best_v[lid] = lid < chunks ? as_float(part[p]) : -INFINITY;
    best_i[lid] = lid < chunks ? part[p + 1] : INT_MAX;
    argmax_tree(best_v, best_i, lid);
    if (lid == 0)
        ((__global int *)BYTES(out, out_off))[r] = best_i[0];
}

/* ---- The span layout, for CPU devices ----
 *
 * PoCL runs a work-group's items one after another on a CPU, so an item
 * per element pays a work-item's overhead for each element and leaves the
 * vector units idle. The `_span` kernels take their item-per-element
 * kernels' arguments, but each item streams SPAN consecutive elements of a
 * row (norm_span a whole row, rope_span a token's row) in float8s, dtype
 * branches once a vector at most. kv.cl's kv_append_span,
 * attention.cl's attention_decode_span and quant.cl's gemv_q_span follow
 * the same rule. The host launches them on CPU devices (kernel_ops.inc's
 * KO_SPANS). */
#define SPAN 1024

float8 eltwise8(int op, float8 x, float8 other, float8 prev, float gate)
{
    if (op == ELT_GELU)
        return 0.5f * x * (1.0f + erf(x * M_SQRT1_2_F));
    if (op == ELT_GATED_ADD)
        return prev + gate * x;
    return op == ELT_ADD ? x + other : x / (1.0f + exp(-x)) * other;
}

/* eltwise, one item per SPAN elements of a row: global (spans, rows) */
__kernel void eltwise_span(int op, __global const uchar *a, ulong a_off, int a_stride,
                           __global const uchar *b, ulong b_off, int b_stride,
                           __global uchar *out, ulong out_off, int out_stride,
                           int rows, int cols, int dtype)
{
    int i0 = get_global_id(0) * SPAN, r = get_global_id(1);
    if (i0 >= cols || r >= rows)
        return;
    int n = min(SPAN, cols - i0);
    __global const uchar *ap = CBYTES(a, a_off), *bp = CBYTES(b, b_off);
    __global uchar *o = BYTES(out, out_off);
    size_t ai = (size_t)r * a_stride + i0, bi = (size_t)r * b_stride + i0;
    size_t oi = (size_t)r * out_stride + i0;
    bool reads_b = op == ELT_ADD || op == ELT_SILU_MUL, reads_out = op == ELT_GATED_ADD;
    /* b holds one gate logit per row */
    float gate = reads_out ? 1.0f / (1.0f + exp(-ld(bp, dtype, (size_t)r * b_stride))) : 0.0f;
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        float8 other = reads_b ? ld8(bp, dtype, bi + i) : 0.0f;
        float8 prev = reads_out ? ld8(o, dtype, oi + i) : 0.0f;
        st8(o, dtype, oi + i, eltwise8(op, ld8(ap, dtype, ai + i), other, prev, gate));
    }
    for (; i < n; i++) {
        float other = reads_b ? ld(bp, dtype, bi + i) : 0.0f;
        float prev = reads_out ? ld(o, dtype, oi + i) : 0.0f;
        st(o, dtype, oi + i, eltwise8(op, ld(ap, dtype, ai + i), other, prev, gate).s0);
    }
}

/* rope, one item per token (global (1, tokens)): each angle's cosine and
 * sine, computed once for eight pairs, turn those pairs of every head. */
__kernel void rope_span(__global uchar *x, ulong x_off, __global const int *positions,
                        ulong pos_off, __global const float *inv_freq, ulong freq_off,
                        int tokens, int heads, int head_dim, int row_stride, int dtype)
{
    int t = get_global_id(1), half_dim = head_dim / 2;
    if (get_global_id(0) > 0 || t >= tokens)
        return;
    float pos = (float)((__global const int *)CBYTES(positions, pos_off))[t];
    __global const float *freq = (__global const float *)CBYTES(inv_freq, freq_off);
    __global uchar *p = BYTES(x, x_off);
    size_t row = (size_t)t * row_stride;
    int i = 0;
    for (; i + 8 <= half_dim; i += 8) {
        float8 angle = pos * vload8(0, freq + i), c = cos(angle), s = sin(angle);
        for (int h = 0; h < heads; h++) {
            size_t base = row + (size_t)h * head_dim + i;
            float8 x0 = ld8(p, dtype, base), x1 = ld8(p, dtype, base + half_dim);
            st8(p, dtype, base, x0 * c - x1 * s);
            st8(p, dtype, base + half_dim, x1 * c + x0 * s);
        }
    }
    for (; i < half_dim; i++) {
        float angle = pos * freq[i], c = cos(angle), s = sin(angle);
        for (int h = 0; h < heads; h++) {
            size_t base = row + (size_t)h * head_dim + i;
            float x0 = ld(p, dtype, base), x1 = ld(p, dtype, base + half_dim);
            st(p, dtype, base, x0 * c - x1 * s);
            st(p, dtype, base + half_dim, x1 * c + x0 * s);
        }
    }
}

/* The sum of a row's dim elements less `mean`, squared where `square`. */
float row_sum(__global const uchar *x, int dtype, size_t row, int dim, float mean, bool square)
{
    float8 acc = 0.0f;
    int i = 0;
    for (; i + 8 <= dim; i += 8) {
        float8 v = ld8(x, dtype, row + i) - mean;
        acc += square ? v * v : v;
    }
    float sum = sum8(acc);
    for (; i < dim; i++) {
        float v = ld(x, dtype, row + i) - mean;
        sum += square ? v * v : v;
    }
    return sum;
}

/* norm, one item per row (global (1, rows), which the host makes a
 * multiple of the work-group: there is no row count to check against):
 * the row is read three times (twice for RMSNorm), from the cache after
 * the first. Each element is read before it is written, so x may be out
 * where dtype is out_dtype. */
__kernel void norm_span(int kind, __global const uchar *x, ulong x_off, int x_stride,
                        __global const uchar *weight, ulong w_off, __global const uchar *bias,
                        ulong bias_off, int weight_dtype, __global uchar *out, ulong out_off,
                        int out_stride, int dim, float eps, int dtype, int out_dtype)
{
    __global const uchar *xr = CBYTES(x, x_off), *w = CBYTES(weight, w_off);
    __global const uchar *b = bias ? CBYTES(bias, bias_off) : 0;
    __global uchar *o = BYTES(out, out_off);
    size_t row = (size_t)get_global_id(1) * x_stride;
    size_t orow = (size_t)get_global_id(1) * out_stride;
    float mean = kind == NORM_LAYER ? row_sum(xr, dtype, row, dim, 0.0f, false) / dim : 0.0f;
    float inv = 1.0f / sqrt(row_sum(xr, dtype, row, dim, mean, true) / dim + eps);
    int i = 0;
    for (; i + 8 <= dim; i += 8) {
        float8 v = (ld8(xr, dtype, row + i) - mean) * inv * ld8(w, weight_dtype, i);
        if (b)
            v += ld8(b, weight_dtype, i);
        st8(o, out_dtype, orow + i, v);
    }
    for (; i < dim; i++) {
        float v = (ld(xr, dtype, row + i) - mean) * inv * ld(w, weight_dtype, i);
        if (b)
            v += ld(b, weight_dtype, i);
        st(o, out_dtype, orow + i, v);
    }
}
