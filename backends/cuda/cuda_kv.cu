/* The paged KV cache's own ops: appending rows (f32, f16, bf16, fp8, or
 * int8 with a scale per slot and KV head) and the eviction scores of blocks.
 * Both are small next to attention; they read the cache through the shared
 * conversions so that every backend stores and scores the same values. */
#include <math.h>

#include "cuda_internal.h"
#include "cuda_quant.h"

#define THREADS 256
#define SCORE_WARPS 4

static unsigned blocks_for(size_t n)
{
    size_t b = (n + THREADS - 1) / THREADS;
    return (unsigned)(b < 65535u * 16 ? b : 65535u * 16);
}

__device__ __forceinline__ float warp_max(float v)
{
    for (int o = DY_WARP / 2; o > 0; o >>= 1)
        v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

__device__ __forceinline__ float warp_sum(float v)
{
    for (int o = DY_WARP / 2; o > 0; o >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__global__ void kv_append_kernel(struct dy_kv_append_desc d, const void *k, const void *v,
                                 const int32_t *slots, void *kc, void *vc)
{
    DY_GRID_ENTER();
    size_t row = (size_t)d.kv_heads * d.head_dim, n = (size_t)d.tokens * row;
    for (size_t idx = blockIdx.x * (size_t)blockDim.x + threadIdx.x; idx < n;
         idx += (size_t)gridDim.x * blockDim.x) {
        size_t t = idx / row, i = idx % row;
        size_t dst = (size_t)slots[t] * row + i, src = t * d.src_stride + i;
        dy_cuda_store_f32(kc, d.cache_dtype, dst, dy_load_f32(k, d.src_dtype, src));
        dy_cuda_store_f32(vc, d.cache_dtype, dst, dy_load_f32(v, d.src_dtype, src));
    }
}

/* The same for many tokens of rows 4-aligned (f32, or f16/bf16
 * activations): four elements of K and of V a thread, x over the row, y
 * striding over the tokens (no 64-bit index division per element, which
 * bounded the kernel above at prefill). */
template <enum dy_dtype ST>
__global__ void kv_append_rows_kernel(struct dy_kv_append_desc d, const void *k, const void *v,
                                      const int32_t *slots, void *kc, void *vc)
{
    DY_GRID_ENTER();
    int row = d.kv_heads * d.head_dim, i = (blockIdx.x * blockDim.x + threadIdx.x) * 4;
    if (i >= row)
        return;
    for (int t = blockIdx.y; t < d.tokens; t += gridDim.y) {
        size_t src = (size_t)t * d.src_stride + i, dst = (size_t)slots[t] * row + i;
        float kf[4], vf[4];
        if constexpr (ST == DY_F32) {
            float4 kx = *(const float4 *)((const float *)k + src), vx = *(const float4 *)((const float *)v + src);
            kf[0] = kx.x, kf[1] = kx.y, kf[2] = kx.z, kf[3] = kx.w;
            vf[0] = vx.x, vf[1] = vx.y, vf[2] = vx.z, vf[3] = vx.w;
        } else {
            uint2 kx = *(const uint2 *)((const uint16_t *)k + src), vx = *(const uint2 *)((const uint16_t *)v + src);
#pragma unroll
            for (int e = 0; e < 4; e++) {
                kf[e] = dy_load_f32(&kx, ST, e);
                vf[e] = dy_load_f32(&vx, ST, e);
            }
        }
#pragma unroll
        for (int e = 0; e < 4; e++) {
            dy_cuda_store_f32(kc, d.cache_dtype, dst + e, kf[e]);
            dy_cuda_store_f32(vc, d.cache_dtype, dst + e, vf[e]);
        }
    }
}

/* int8: one warp per (token, KV head, K or V) row; the row's max |x| sets
 * its scale (backend.h's rule, divisions as the reference writes them). */
__global__ void kv_append_int8_kernel(struct dy_kv_append_desc d, const void *k, const void *v,
                                      const int32_t *slots, int8_t *kc, int8_t *vc, float *ks,
                                      float *vs)
{
    DY_GRID_ENTER();
    size_t warp = (blockIdx.x * (size_t)blockDim.x + threadIdx.x) / DY_WARP;
    int lane = threadIdx.x % DY_WARP;
    if (warp >= (size_t)d.tokens * d.kv_heads * 2)
        return;
    bool is_v = warp & 1;
    int head = (int)(warp / 2 % d.kv_heads);
    size_t t = warp / 2 / d.kv_heads, slot = (size_t)slots[t];
    const void *src = is_v ? v : k;
    size_t src_off = t * d.src_stride + (size_t)head * d.head_dim;
    int8_t *dst = (is_v ? vc : kc) + (slot * d.kv_heads + head) * d.head_dim;
    float amax = 0.0f;
    for (int e = lane; e < d.head_dim; e += DY_WARP)
        amax = fmaxf(amax, fabsf(dy_load_f32(src, d.src_dtype, src_off + e)));
    amax = warp_max(amax);
    float inv = amax > 0.0f ? 127.0f / amax : 0.0f;
    for (int e = lane; e < d.head_dim; e += DY_WARP)
        dst[e] = (int8_t)rintf(dy_load_f32(src, d.src_dtype, src_off + e) * inv);
    if (lane == 0)
        (is_v ? vs : ks)[slot * d.kv_heads + head] = amax / 127.0f;
}

int dy_cuda_kv_append(void *ctx, const struct dy_kv_append_desc *d)
{
    struct cuda_ctx *c = (struct cuda_ctx *)ctx;
    if (!dy_cuda_is_activation_dtype(d->src_dtype) || !dy_cuda_is_cache_dtype(d->cache_dtype)) {
        /* dtype codes: the plugin links nothing of dyno's, so not dy_dtype_name */
        snprintf(c->err, sizeof c->err, "kv_append: rows of dtype %d into a cache of dtype %d",
                 (int)d->src_dtype, (int)d->cache_dtype);
        return DY_E_UNSUPPORTED;
    }
    if (d->cache_dtype == DY_I8 && (!d->k_scale.h || !d->v_scale.h)) {
        snprintf(c->err, sizeof c->err, "kv_append: an int8 cache needs k_scale and v_scale");
        return DY_E_INVALID;
    }
    size_t n = (size_t)d->tokens * d->kv_heads * d->head_dim;
    if (!n)
        return DY_OK;
    const void *k = dy_cuda_ptr(d->k), *v = dy_cuda_ptr(d->v);
    const int32_t *slots = (const int32_t *)dy_cuda_ptr(d->slots);
    if (d->cache_dtype == DY_I8) {
        size_t threads = (size_t)d->tokens * d->kv_heads * 2 * DY_WARP;
        dy_launch(c, kv_append_int8_kernel, (unsigned)((threads + THREADS - 1) / THREADS), THREADS, 0, *d, k, v,
                  slots, dy_cuda_ptr(d->k_cache), dy_cuda_ptr(d->v_cache), dy_cuda_ptr(d->k_scale),
                  dy_cuda_ptr(d->v_scale));
    } else if (d->tokens >= ROWS_MIN_TOKENS && (d->kv_heads * d->head_dim) % 4 == 0 && d->src_stride % 4 == 0 &&
               ((uintptr_t)k | (uintptr_t)v) % (d->src_dtype == DY_F32 ? 16 : 8) == 0) {
        int row = d->kv_heads * d->head_dim;
        dim3 grid((unsigned)((row / 4 + THREADS - 1) / THREADS), (unsigned)(d->tokens < 65535 ? d->tokens : 65535));
        void (*kernel)(struct dy_kv_append_desc, const void *, const void *, const int32_t *, void *, void *) =
            d->src_dtype == DY_F32   ? kv_append_rows_kernel<DY_F32>
            : d->src_dtype == DY_F16 ? kv_append_rows_kernel<DY_F16>
                                     : kv_append_rows_kernel<DY_BF16>;
        dy_launch(c, kernel, grid, THREADS, 0, *d, k, v, slots, dy_cuda_ptr(d->k_cache), dy_cuda_ptr(d->v_cache));
    } else {
        dy_launch(c, kv_append_kernel, blocks_for(n), THREADS, 0, *d, k, v, slots, dy_cuda_ptr(d->k_cache),
                  dy_cuda_ptr(d->v_cache));
    }
    return dy_cuda_check_launch(c, "kv_append");
}

/* One block per listed cache block; its warps take (token, KV head) rows in
 * turn, each lane a strided share of the head's elements. */
__global__ void __launch_bounds__(SCORE_WARPS * DY_WARP)
kv_block_scores_kernel(struct dy_kv_block_scores_desc d, const void *kc, const void *vc, const float *ks,
                       const float *vs, const int32_t *blocks, float *scores)
{
    __shared__ float warp_total[SCORE_WARPS];
    int warp = threadIdx.x / DY_WARP, lane = threadIdx.x % DY_WARP;
    size_t row = (size_t)d.kv_heads * d.head_dim, first = (size_t)blocks[blockIdx.x] * d.block_size;
    float total = 0.0f;
    for (int r = warp; r < d.block_size * d.kv_heads; r += SCORE_WARPS) {
        int head = r % d.kv_heads;
        size_t slot = first + r / d.kv_heads, base = slot * row + (size_t)head * d.head_dim;
        float kk = 0.0f, vv = 0.0f;
        for (int e = lane; e < d.head_dim; e += DY_WARP) {
            float kx = dy_load_f32(kc, d.cache_dtype, base + e), vx = dy_load_f32(vc, d.cache_dtype, base + e);
            kk += kx * kx;
            vv += vx * vx;
        }
        kk = warp_sum(kk);
        vv = warp_sum(vv);
        float knorm = sqrtf(kk), vnorm = sqrtf(vv);
        if (ks) {
            knorm *= ks[slot * d.kv_heads + head];
            vnorm *= vs[slot * d.kv_heads + head];
        }
        knorm = fmaxf(knorm, 1e-12f);
        total += d.kind == DY_KV_SCORE_VK_RATIO ? vnorm / knorm : 1.0f / knorm;
    }
    if (lane == 0)
        warp_total[warp] = total;
    __syncthreads();
    if (threadIdx.x == 0) {
        float sum = 0.0f;
        for (int w = 0; w < SCORE_WARPS; w++)
            sum += warp_total[w];
        scores[blockIdx.x] = sum / d.kv_heads; /* the average over KV heads, summed over tokens */
    }
}

int dy_cuda_kv_block_scores(void *ctx, const struct dy_kv_block_scores_desc *d)
{
    struct cuda_ctx *c = (struct cuda_ctx *)ctx;
    if (!dy_cuda_is_cache_dtype(d->cache_dtype)) {
        snprintf(c->err, sizeof c->err, "kv_block_scores: cache of dtype %d", (int)d->cache_dtype);
        return DY_E_UNSUPPORTED;
    }
    if ((unsigned)d->kind > DY_KV_SCORE_VK_RATIO || d->kv_heads <= 0 ||
        (d->cache_dtype == DY_I8 && (!d->k_scale.h || !d->v_scale.h))) {
        snprintf(c->err, sizeof c->err, "kv_block_scores: unknown kind, no KV heads or int8 without scales");
        return DY_E_INVALID;
    }
    if (d->count <= 0)
        return DY_OK;
    bool int8 = d->cache_dtype == DY_I8;
    kv_block_scores_kernel<<<(unsigned)d->count, SCORE_WARPS * DY_WARP, 0, c->stream>>>(
        *d, dy_cuda_ptr(d->k_cache), dy_cuda_ptr(d->v_cache),
        int8 ? (const float *)dy_cuda_ptr(d->k_scale) : NULL, int8 ? (const float *)dy_cuda_ptr(d->v_scale) : NULL,
        (const int32_t *)dy_cuda_ptr(d->blocks), (float *)dy_cuda_ptr(d->scores));
    return dy_cuda_check_launch(c, "kv_block_scores");
}
