/* The paged KV cache: appending tokens' K and V rows in any cache dtype,
 * and the scores that eviction ranks blocks by. Layout and int8 scales as
 * backend.h's dy_kv_append_desc: [num_slots, kv_heads, head_dim], one f32
 * scale per (slot, KV head). */

/* One work-item per element of a token's K (and V) row; fp8 through st(). */
__kernel void kv_append(__global const uchar *k, ulong k_off, __global const uchar *v,
                        ulong v_off, int src_stride, int src_dtype,
                        __global const int *slots, ulong slots_off,
                        __global uchar *k_cache, ulong kc_off, __global uchar *v_cache,
                        ulong vc_off, int cache_dtype, int tokens, int row)
{
    int i = get_global_id(0), t = get_global_id(1);
    if (i >= row || t >= tokens)
        return;
    size_t slot = (size_t)((__global const int *)CBYTES(slots, slots_off))[t];
    size_t src = (size_t)t * src_stride + i, dst = slot * row + i;
    st(BYTES(k_cache, kc_off), cache_dtype, dst, ld(CBYTES(k, k_off), src_dtype, src));
    st(BYTES(v_cache, vc_off), cache_dtype, dst, ld(CBYTES(v, v_off), src_dtype, src));
}

/* kv_append in ops.cl's span layout, for CPU devices: one item per SPAN
 * elements of a token's K and V rows, global (spans, tokens). */
__kernel void kv_append_span(__global const uchar *k, ulong k_off, __global const uchar *v,
                             ulong v_off, int src_stride, int src_dtype,
                             __global const int *slots, ulong slots_off,
                             __global uchar *k_cache, ulong kc_off, __global uchar *v_cache,
                             ulong vc_off, int cache_dtype, int tokens, int row)
{
    int i0 = get_global_id(0) * SPAN, t = get_global_id(1);
    if (i0 >= row || t >= tokens)
        return;
    int n = min(SPAN, row - i0);
    size_t slot = (size_t)((__global const int *)CBYTES(slots, slots_off))[t];
    size_t src = (size_t)t * src_stride + i0, dst = slot * row + i0;
    __global const uchar *kp = CBYTES(k, k_off), *vp = CBYTES(v, v_off);
    __global uchar *kc = BYTES(k_cache, kc_off), *vc = BYTES(v_cache, vc_off);
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        st8(kc, cache_dtype, dst + i, ld8(kp, src_dtype, src + i));
        st8(vc, cache_dtype, dst + i, ld8(vp, src_dtype, src + i));
    }
    for (; i < n; i++) {
        st(kc, cache_dtype, dst + i, ld(kp, src_dtype, src + i));
        st(vc, cache_dtype, dst + i, ld(vp, src_dtype, src + i));
    }
}

/* a / b rounded to nearest, as the host divides. OpenCL's `/` may be 2.5
 * ulp off (NVIDIA's is, short of -cl-fp32-correctly-rounded-divide-sqrt
 * for the whole program); the residual a - q * b is exact in one fma, and
 * adding residual / b to q rounds as the exact quotient does (checked on
 * the host against quotients up to 3 ulp off). An infinite operand leaves
 * no residual to add. */
float div_rn(float a, float b)
{
    float q = a / b;
    float residual = fma(-q, b, a);
    return isfinite(residual) ? fma(residual, 1.0f / b, q) : q;
}

/* One head's row of K or V into an int8 cache: its largest magnitude over
 * the work-group, then the integers and the row's scale. */
void int8_row(__local float *red, __global const uchar *src, int src_dtype, size_t src_i,
              int head_dim, __global char *dst, __global float *scale)
{
    int lid = get_local_id(0);
    float amax = 0.0f;
    for (int e = lid; e < head_dim; e += WG)
        amax = fmax(amax, fabs(ld(src, src_dtype, src_i + e)));
    amax = group_max(red, amax);
    float inv = amax > 0.0f ? div_rn(127.0f, amax) : 0.0f;
    for (int e = lid; e < head_dim; e += WG)
        dst[e] = convert_char_rte(ld(src, src_dtype, src_i + e) * inv);
    if (lid == 0)
        *scale = div_rn(amax, 127.0f);
}

/* The int8 cache: one work-group per (token, KV head), K's row then V's. */
__kernel __attribute__((reqd_work_group_size(WG, 1, 1)))
void kv_append_int8(__global const uchar *k, ulong k_off, __global const uchar *v, ulong v_off,
                    int src_stride, int src_dtype, __global const int *slots, ulong slots_off,
                    __global uchar *k_cache, ulong kc_off, __global uchar *v_cache, ulong vc_off,
                    __global uchar *k_scale, ulong ks_off, __global uchar *v_scale, ulong vs_off,
                    int kv_heads, int head_dim)
{
    __local float red[WG];
    int t = get_group_id(0) / kv_heads, h = get_group_id(0) % kv_heads;
    size_t slot = (size_t)((__global const int *)CBYTES(slots, slots_off))[t];
    size_t src = (size_t)t * src_stride + (size_t)h * head_dim;
    size_t scale_i = slot * kv_heads + h, dst = scale_i * head_dim;
    int8_row(red, CBYTES(k, k_off), src_dtype, src, head_dim,
             (__global char *)BYTES(k_cache, kc_off) + dst,
             (__global float *)BYTES(k_scale, ks_off) + scale_i);
    int8_row(red, CBYTES(v, v_off), src_dtype, src, head_dim,
             (__global char *)BYTES(v_cache, vc_off) + dst,
             (__global float *)BYTES(v_scale, vs_off) + scale_i);
}

/* backend.h's enum dy_kv_score_kind */
#define KV_SCORE_VK_RATIO 1

/* Eviction scores: one work-group per listed block, one item per (token,
 * KV head) row of it (a block's rows lie one after another), the row's
 * norms from wide loads where `vec` (head_dim in eights, the caches on 16
 * bytes); the group sums the rows' scores. V is read for the ratio only. */
__kernel __attribute__((reqd_work_group_size(WG, 1, 1)))
void kv_block_scores(__global const uchar *k_cache, ulong kc_off,
                     __global const uchar *v_cache, ulong vc_off,
                     __global const uchar *k_scale, ulong ks_off,
                     __global const uchar *v_scale, ulong vs_off,
                     __global const int *blocks, ulong blocks_off,
                     __global uchar *scores, ulong scores_off, int block_size, int kv_heads,
                     int head_dim, int kind, int cache_dtype, int vec)
{
    __local float red[WG];
    int lid = get_local_id(0), i = get_group_id(0);
    size_t esize = dtype_size(cache_dtype);
    bool ratio = kind == KV_SCORE_VK_RATIO, scaled = cache_dtype == DT_I8;
    __global const uchar *kc = CBYTES(k_cache, kc_off), *vc = CBYTES(v_cache, vc_off);
    __global const float *ks = (__global const float *)CBYTES(k_scale, ks_off);
    __global const float *vs = (__global const float *)CBYTES(v_scale, vs_off);
    int block = ((__global const int *)CBYTES(blocks, blocks_off))[i];
    size_t first_row = (size_t)block * block_size * kv_heads;
    float sum = 0.0f;
    for (int r = lid; r < block_size * kv_heads; r += WG) {
        size_t row = first_row + r, base = row * head_dim;
        float kk = 0.0f, vv = 0.0f;
        if (vec) {
            for (int d = 0; d < head_dim; d += 8) {
                float8 kx = cache8(kc, base + d, esize, cache_dtype);
                kk += dot8(kx, kx);
                if (ratio) {
                    float8 vx = cache8(vc, base + d, esize, cache_dtype);
                    vv += dot8(vx, vx);
                }
            }
        } else {
            for (int d = 0; d < head_dim; d++) {
                float kx = ld(kc, cache_dtype, base + d);
                kk += kx * kx;
                if (ratio) {
                    float vx = ld(vc, cache_dtype, base + d);
                    vv += vx * vx;
                }
            }
        }
        float knorm = sqrt(kk), vnorm = sqrt(vv);
        if (scaled) {
            knorm *= ks[row];
            vnorm *= ratio ? vs[row] : 1.0f;
        }
        /* a NaN norm counts as the floor too, as the host's comparison does */
        knorm = fmax(knorm, 1e-12f);
        sum += (ratio ? vnorm : 1.0f) / knorm;
    }
    sum = group_sum(red, sum);
    if (lid == 0)
        ((__global float *)BYTES(scores, scores_off))[i] = sum / kv_heads;
}
