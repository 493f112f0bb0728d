/* CUDA element-wise, row-wise and data-movement ops. Memory-bound and small
 * next to the GEMMs and attention; dtypes are read and written through the
 * shared conversion helpers so results match every other backend. */
#include <math.h>

#include "cuda_internal.h"
#include "cuda_quant.h"

#define THREADS 256

static unsigned blocks_for(size_t n)
{
    size_t b = (n + THREADS - 1) / THREADS;
    return (unsigned)(b < 65535u * 16 ? b : 65535u * 16);
}

__global__ void fill_random_kernel(void *dst, enum dy_dtype t, size_t n, uint64_t key, float scale,
                                   float offset)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        /* separate roundings, as every backend does: no contraction to FMA */
        float v = __fadd_rn(offset, __fmul_rn(scale, dy_random_unit(key, i)));
        dy_cuda_store_f32(dst, t, i, v);
    }
}

int dy_cuda_fill_random(void *ctx, const struct dy_fill_random_desc *d)
{
    struct cuda_ctx *c = (struct cuda_ctx *)ctx;
    if (!d->count)
        return DY_OK;
    fill_random_kernel<<<blocks_for(d->count), THREADS, 0, c->stream>>>(
        dy_cuda_ptr(d->dst), d->dtype, d->count, dy_random_key(d->seed, d->stream), d->scale, d->offset);
    return dy_cuda_check_launch(c, "fill_random");
}

__global__ void convert_kernel(const void *src, enum dy_dtype st, void *dst, enum dy_dtype dt, size_t n)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        dy_cuda_store_f32(dst, dt, i, dy_load_f32(src, st, i));
}

int dy_cuda_convert_raw(struct cuda_ctx *c, const void *src, enum dy_dtype st, void *dst,
                        enum dy_dtype dt, size_t count)
{
    if (!count)
        return DY_OK;
    convert_kernel<<<blocks_for(count), THREADS, 0, c->stream>>>(src, st, dst, dt, count);
    return dy_cuda_check_launch(c, "convert");
}

int dy_cuda_convert(void *ctx, const struct dy_convert_desc *d)
{
    return dy_cuda_convert_raw((struct cuda_ctx *)ctx, dy_cuda_ptr(d->src), d->src_dtype,
                               dy_cuda_ptr(d->dst), d->dst_dtype, d->count);
}

/* Index of an f32, f16 or bf16 dtype in the kernel tables below (their
 * order); -1 for any other. */
static int float_index(enum dy_dtype t)
{
    return t == DY_F32 ? 0 : t == DY_F16 ? 1 : t == DY_BF16 ? 2 : -1;
}

/* Sum over the block; every thread gets the result. `shared` holds one
 * float per warp. */
__device__ float block_sum(float v, float *shared)
{
    for (int o = DY_WARP / 2; o > 0; o >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, o);
    int warp = threadIdx.x / DY_WARP, lane = threadIdx.x % DY_WARP;
    __syncthreads();
    if (lane == 0)
        shared[warp] = v;
    __syncthreads();
    float total = 0.0f;
    for (int w = 0; w < (int)blockDim.x / DY_WARP; w++)
        total += shared[w];
    return total;
}

__global__ void norm_kernel(struct dy_norm_desc d, const void *x, const void *w, const void *bias,
                            void *out)
{
    DY_GRID_ENTER();
    __shared__ float shared[THREADS / DY_WARP];
    size_t xr = (size_t)blockIdx.x * d.x_stride, orow = (size_t)blockIdx.x * d.out_stride;
    float mean = 0.0f;
    if (d.kind == DY_NORM_LAYER) {
        float s = 0.0f;
        for (int i = threadIdx.x; i < d.dim; i += blockDim.x)
            s += dy_load_f32(x, d.dtype, xr + i);
        mean = block_sum(s, shared) / d.dim;
    }
    float sq = 0.0f;
    for (int i = threadIdx.x; i < d.dim; i += blockDim.x) {
        float v = dy_load_f32(x, d.dtype, xr + i) - mean;
        sq += v * v;
    }
    float inv = rsqrtf(block_sum(sq, shared) / d.dim + d.eps);
    for (int i = threadIdx.x; i < d.dim; i += blockDim.x) {
        float v = (dy_load_f32(x, d.dtype, xr + i) - mean) * inv * dy_load_f32(w, d.weight_dtype, i);
        if (bias)
            v += dy_load_f32(bias, d.weight_dtype, i);
        dy_store_f32(out, d.out_dtype, orow + i, v);
    }
}

/* Rows held in registers: one read of x, NORM_VEC vectors of 4 a thread,
 * so a row of up to 16,384 elements costs one round trip to memory where the
 * loop above makes one per element a thread holds, three times over (a
 * batch-1 decode step's norms took about 19 us each on an H100 that way;
 * ViT-L/16's LayerNorms of bf16 rows 390 us instead of about 70). The
 * weights (and bias) are read before waiting for the kernel before. */
#define NORM_VEC 4
#define NORM_MAX_THREADS 1024

template <enum dy_dtype WT> __device__ __forceinline__ float4 load_vec4(const void *p, int i4)
{
    if constexpr (WT == DY_F32) {
        return ((const float4 *)p)[i4];
    } else {
        uint2 raw = ((const uint2 *)p)[i4];
        const uint16_t *h = (const uint16_t *)&raw;
        float f[4];
#pragma unroll
        for (int j = 0; j < 4; j++)
            f[j] = WT == DY_BF16 ? dy_bf16_to_f32(h[j]) : __half2float(*(const __half *)&h[j]);
        return make_float4(f[0], f[1], f[2], f[3]);
    }
}

template <enum dy_dtype OT> __device__ __forceinline__ void store_vec4(void *p, int i4, float4 v)
{
    if constexpr (OT == DY_F32) {
        ((float4 *)p)[i4] = v;
    } else {
        float f[4] = { v.x, v.y, v.z, v.w };
        uint2 raw;
        uint16_t *h = (uint16_t *)&raw;
#pragma unroll
        for (int j = 0; j < 4; j++)
            h[j] = OT == DY_BF16 ? dy_f32_to_bf16(f[j]) : dy_f32_to_f16(f[j]);
        ((uint2 *)p)[i4] = raw;
    }
}

/* 16 bytes of a row (4 f32 or 8 f16/bf16 elements) from element c on */
template <enum dy_dtype T> __device__ __forceinline__ void load16(const void *row, int c, float *f)
{
    if constexpr (T == DY_F32) {
        float4 x = *(const float4 *)((const float *)row + c);
        f[0] = x.x, f[1] = x.y, f[2] = x.z, f[3] = x.w;
    } else {
        dy_cuda_load8<T>(row, (size_t)c, f);
    }
}

template <enum dy_dtype T> __device__ __forceinline__ void store16(void *row, int c, const float *f)
{
    if constexpr (T == DY_F32) {
        *(float4 *)((float *)row + c) = make_float4(f[0], f[1], f[2], f[3]);
    } else {
        uint4 raw;
        uint16_t *h = (uint16_t *)&raw;
#pragma unroll
        for (int e = 0; e < 8; e++)
            h[e] = T == DY_BF16 ? dy_f32_to_bf16(f[e]) : dy_f32_to_f16(f[e]);
        *(uint4 *)((uint16_t *)row + c) = raw;
    }
}

template <bool LAYER, enum dy_dtype XT, enum dy_dtype WT, enum dy_dtype OT>
__global__ void __launch_bounds__(NORM_MAX_THREADS)
norm_rows_kernel(struct dy_norm_desc d, const void *x, const void *w, const void *bias, void *out)
{
    __shared__ float shared[NORM_MAX_THREADS / DY_WARP];
    int n4 = d.dim / 4;
    float4 wv[NORM_VEC], bv[NORM_VEC], xv[NORM_VEC];
#pragma unroll
    for (int v = 0; v < NORM_VEC; v++) {
        int i = threadIdx.x + v * blockDim.x;
        if (i < n4) {
            wv[v] = load_vec4<WT>(w, i);
            bv[v] = bias ? load_vec4<WT>(bias, i) : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        }
    }
    DY_GRID_ENTER();
    const char *xr = (const char *)x + (size_t)blockIdx.x * d.x_stride * (XT == DY_F32 ? 4 : 2);
    float s = 0.0f;
#pragma unroll
    for (int v = 0; v < NORM_VEC; v++) {
        int i = threadIdx.x + v * blockDim.x;
        xv[v] = i < n4 ? load_vec4<XT>(xr, i) : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        s += xv[v].x + xv[v].y + xv[v].z + xv[v].w;
    }
    float mean = LAYER ? block_sum(s, shared) / d.dim : 0.0f;
    float sq = 0.0f;
#pragma unroll
    for (int v = 0; v < NORM_VEC; v++) {
        if ((int)(threadIdx.x + v * blockDim.x) < n4) {
            float a = xv[v].x - mean, b = xv[v].y - mean, c = xv[v].z - mean, e = xv[v].w - mean;
            sq += a * a + b * b + c * c + e * e;
        }
    }
    float inv = rsqrtf(block_sum(sq, shared) / d.dim + d.eps);
    char *orow = (char *)out + (size_t)blockIdx.x * d.out_stride * (OT == DY_F32 ? 4 : 2);
#pragma unroll
    for (int v = 0; v < NORM_VEC; v++) {
        int i = threadIdx.x + v * blockDim.x;
        if (i < n4)
            store_vec4<OT>(orow, i, make_float4((xv[v].x - mean) * inv * wv[v].x + bv[v].x, (xv[v].y - mean) * inv * wv[v].y + bv[v].y,
                                  (xv[v].z - mean) * inv * wv[v].z + bv[v].z, (xv[v].w - mean) * inv * wv[v].w + bv[v].w));
    }
}

/* Rows of 16-bit elements with weights and output of the same type, a
 * warp a row and NORM_WARPS rows a block: each lane holds V 16-byte
 * vectors (8 elements), issues their loads together, and the sums meet by
 * shuffles alone, with no block barrier (ViT-L/16's LayerNorms of 1,024
 * bf16 elements: the kernel above's two block sums over two warps a row
 * kept it at 0.79 of the copy bandwidth). */
#define NORM_WARPS 8

template <int V, bool LAYER, enum dy_dtype T>
__global__ void __launch_bounds__(NORM_WARPS *DY_WARP)
norm_warp_kernel(struct dy_norm_desc d, const void *x, const void *w, const void *bias, void *out)
{
    int lane = threadIdx.x % DY_WARP, row = blockIdx.x * NORM_WARPS + threadIdx.x / DY_WARP;
    DY_GRID_ENTER();
    if (row >= d.rows)
        return;
    const void *xr = (const uint16_t *)x + (size_t)row * d.x_stride;
    float f[V][8], s = 0.0f, sq = 0.0f;
#pragma unroll
    for (int v = 0; v < V; v++)
        load16<T>(xr, (lane + v * DY_WARP) * 8, f[v]);
#pragma unroll
    for (int v = 0; v < V; v++)
#pragma unroll
        for (int j = 0; j < 8; j++)
            s += f[v][j];
    float sums[1][1] = { { s } };
    float mean = 0.0f;
    if (LAYER) {
        dy_warp_sum(sums);
        mean = sums[0][0] / d.dim;
    }
#pragma unroll
    for (int v = 0; v < V; v++)
#pragma unroll
        for (int j = 0; j < 8; j++)
            sq += (f[v][j] - mean) * (f[v][j] - mean);
    sums[0][0] = sq;
    dy_warp_sum(sums);
    float inv = rsqrtf(sums[0][0] / d.dim + d.eps);
    void *orow = (uint16_t *)out + (size_t)row * d.out_stride;
#pragma unroll
    for (int v = 0; v < V; v++) {
        int c = (lane + v * DY_WARP) * 8;
        float wf[8], bf[8] = {}, y[8];
        load16<T>(w, c, wf);
        if (bias)
            load16<T>(bias, c, bf);
#pragma unroll
        for (int j = 0; j < 8; j++)
            y[j] = (f[v][j] - mean) * inv * wf[j] + bf[j];
        store16<T>(orow, c, y);
    }
}

/* the warp-a-row kernel where every operand is f16 or bf16 alike, on 16
 * bytes, and a row is 2 to 6 or 8 vectors a lane; DY_E_UNSUPPORTED else */
static int norm_warp(struct cuda_ctx *c, const struct dy_norm_desc *d, const void *x, const void *w,
                     const void *bias, const void *out)
{
#define NORM_WARP_T(V, T) { norm_warp_kernel<V, false, T>, norm_warp_kernel<V, true, T> }
#define NORM_WARP_V(V) { NORM_WARP_T(V, DY_F16), NORM_WARP_T(V, DY_BF16) }
    typedef void (*fn)(struct dy_norm_desc, const void *, const void *, const void *, void *);
    /* [V - 2, and 5 for V = 8][bf16][layer] */
    static const fn kernels[6][2][2] = { NORM_WARP_V(2), NORM_WARP_V(3), NORM_WARP_V(4),
                                         NORM_WARP_V(5), NORM_WARP_V(6), NORM_WARP_V(8) };
#undef NORM_WARP_V
#undef NORM_WARP_T
    int per = DY_WARP * 8, v = d->dim / per;
    bool half = d->dtype == DY_F16 || d->dtype == DY_BF16;
    bool fits = half && d->weight_dtype == d->dtype && d->out_dtype == d->dtype && d->dim % per == 0 &&
                v >= 2 && v <= 8 && v != 7 && d->x_stride % 8 == 0 && d->out_stride % 8 == 0 &&
                dy_cuda_aligned16(x) && dy_cuda_aligned16(out) && dy_cuda_aligned16(w) &&
                (!bias || dy_cuda_aligned16(bias));
    if (!fits)
        return DY_E_UNSUPPORTED;
    dy_launch(c, kernels[v == 8 ? 5 : v - 2][d->dtype == DY_BF16][d->kind == DY_NORM_LAYER],
              (d->rows + NORM_WARPS - 1) / NORM_WARPS, NORM_WARPS * DY_WARP, 0, *d, x, w, bias, out);
    return dy_cuda_check_launch(c, "norm");
}

typedef void (*norm_rows_fn)(struct dy_norm_desc, const void *, const void *, const void *, void *);

#define NORM_ROWS_OUT(L, XT, WT) \
    { norm_rows_kernel<L, XT, WT, DY_F32>, norm_rows_kernel<L, XT, WT, DY_F16>, norm_rows_kernel<L, XT, WT, DY_BF16> }
#define NORM_ROWS_W(L, XT) \
    { NORM_ROWS_OUT(L, XT, DY_F32), NORM_ROWS_OUT(L, XT, DY_F16), NORM_ROWS_OUT(L, XT, DY_BF16) }
#define NORM_ROWS_X(L) { NORM_ROWS_W(L, DY_F32), NORM_ROWS_W(L, DY_F16), NORM_ROWS_W(L, DY_BF16) }

/* The register-held path when the rows are on 16 bytes (f32) or 8 (f16,
 * bf16) and short enough; DY_E_UNSUPPORTED otherwise. */
static int norm_rows(struct cuda_ctx *c, const struct dy_norm_desc *d)
{
    /* [layer][x dtype][weight dtype][out dtype] */
    static const norm_rows_fn kernels[2][3][3][3] = { NORM_ROWS_X(false), NORM_ROWS_X(true) };
    const void *x = dy_cuda_ptr(d->x), *w = dy_cuda_ptr(d->weight), *out = dy_cuda_ptr(d->out);
    const void *bias = d->bias.h ? dy_cuda_ptr(d->bias) : NULL;
    int n4 = d->dim / 4, xt = float_index(d->dtype), wt = float_index(d->weight_dtype);
    int ot = float_index(d->out_dtype);
    size_t walign = d->weight_dtype == DY_F32 ? 16 : 8, oalign = d->out_dtype == DY_F32 ? 16 : 8;
    size_t xalign = d->dtype == DY_F32 ? 16 : 8;
    bool fits = xt >= 0 && d->dim % 4 == 0 && n4 <= NORM_VEC * NORM_MAX_THREADS &&
                d->x_stride % 4 == 0 && d->out_stride % 4 == 0 && (uintptr_t)x % xalign == 0 &&
                (uintptr_t)out % oalign == 0 && (uintptr_t)w % walign == 0 && (uintptr_t)bias % walign == 0 &&
                wt >= 0 && ot >= 0;
    if (!fits)
        return DY_E_UNSUPPORTED;
    if (c->norm_warp) {
        int st = norm_warp(c, d, x, w, bias, out);
        if (st != DY_E_UNSUPPORTED)
            return st;
    }
    int threads = (n4 + NORM_VEC - 1) / NORM_VEC;
    threads = (threads + DY_WARP - 1) / DY_WARP * DY_WARP;
    dy_launch(c, kernels[d->kind == DY_NORM_LAYER][xt][wt][ot], d->rows, threads, 0, *d, x, w, bias, out);
    return dy_cuda_check_launch(c, "norm");
}

int dy_cuda_norm(void *ctx, const struct dy_norm_desc *d)
{
    struct cuda_ctx *c = (struct cuda_ctx *)ctx;
    if (d->rows <= 0)
        return DY_OK;
    int st = norm_rows(c, d);
    if (st != DY_E_UNSUPPORTED)
        return st;
    dy_launch(c, norm_kernel, d->rows, THREADS, 0, *d, dy_cuda_ptr(d->x), dy_cuda_ptr(d->weight),
              d->bias.h ? dy_cuda_ptr(d->bias) : NULL, dy_cuda_ptr(d->out));
    return dy_cuda_check_launch(c, "norm");
}

#define ROPE_MAX_HALF 256

__global__ void rope_kernel(struct dy_rope_desc d, void *x, const int32_t *pos, const float *inv_freq)
{
    DY_GRID_ENTER();
    int half = d.head_dim / 2;
    size_t n = (size_t)d.tokens * d.heads * half;
    for (size_t idx = blockIdx.x * (size_t)blockDim.x + threadIdx.x; idx < n;
         idx += (size_t)gridDim.x * blockDim.x) {
        int i = (int)(idx % half);
        size_t th = idx / half;
        int h = (int)(th % d.heads), t = (int)(th / d.heads);
        size_t base = (size_t)t * d.row_stride + (size_t)h * d.head_dim;
        float angle = __fmul_rn((float)pos[t], inv_freq[i]);
        float s, co;
        sincosf(angle, &s, &co);
        float x0 = dy_load_f32(x, d.dtype, base + i), x1 = dy_load_f32(x, d.dtype, base + i + half);
        dy_store_f32(x, d.dtype, base + i, x0 * co - x1 * s);
        dy_store_f32(x, d.dtype, base + i + half, x1 * co + x0 * s);
    }
}

/* Many tokens of f32 rows: a block per token at a time, its angles'
 * sines and cosines computed once into shared memory for every head (the
 * kernel above computes them again for each head and divides a 64-bit
 * index per element); the same arithmetic, so the same bits. */
template <enum dy_dtype T>
__global__ void rope_rows_kernel(struct dy_rope_desc d, void *x, const int32_t *pos, const float *inv_freq)
{
    DY_GRID_ENTER();
    __shared__ float sn[ROPE_MAX_HALF], cs[ROPE_MAX_HALF];
    int half = d.head_dim / 2;
    for (int t = blockIdx.x; t < d.tokens; t += gridDim.x) {
        __syncthreads(); /* the last token's angles are no longer read */
        for (int i = threadIdx.x; i < half; i += blockDim.x)
            sincosf(__fmul_rn((float)pos[t], inv_freq[i]), &sn[i], &cs[i]);
        __syncthreads();
        size_t row = (size_t)t * d.row_stride;
        for (int p = threadIdx.x; p < d.heads * half; p += blockDim.x) {
            int h = p / half, i = p - h * half;
            size_t e = row + h * d.head_dim + i;
            float x0 = dy_load_f32(x, T, e), x1 = dy_load_f32(x, T, e + half);
            dy_store_f32(x, T, e, x0 * cs[i] - x1 * sn[i]);
            dy_store_f32(x, T, e + half, x1 * cs[i] + x0 * sn[i]);
        }
    }
}

static int rope_fused(struct cuda_ctx *c, const struct dy_rope_desc *d);

int dy_cuda_rope(void *ctx, const struct dy_rope_desc *d)
{
    struct cuda_ctx *c = (struct cuda_ctx *)ctx;
    size_t n = (size_t)d->tokens * d->heads * (d->head_dim / 2);
    if (!n && !d->append.k_cache.h)
        return DY_OK;
    if (d->norm.q_weight.h || d->append.k_cache.h)
        return d->tokens > 0 ? rope_fused(c, d) : DY_OK;
    static void (*const kernels[3])(struct dy_rope_desc, void *, const int32_t *, const float *) = {
        rope_rows_kernel<DY_F32>, rope_rows_kernel<DY_F16>, rope_rows_kernel<DY_BF16>,
    };
    if (d->tokens >= ROWS_MIN_TOKENS && float_index(d->dtype) >= 0 && d->head_dim / 2 <= ROPE_MAX_HALF) {
        unsigned blocks = (unsigned)(d->tokens < 65535 ? d->tokens : 65535);
        dy_launch(c, kernels[float_index(d->dtype)], blocks, THREADS, 0, *d, dy_cuda_ptr(d->x),
                  (const int32_t *)dy_cuda_ptr(d->positions), (const float *)dy_cuda_ptr(d->inv_freq));
        return dy_cuda_check_launch(c, "rope");
    }
    dy_launch(c, rope_kernel, blocks_for(n), THREADS, 0, *d, dy_cuda_ptr(d->x), dy_cuda_ptr(d->positions),
              dy_cuda_ptr(d->inv_freq));
    return dy_cuda_check_launch(c, "rope");
}

/* The rotation with whole-row q/k norms before it and the KV append after
 * (dy_rope_desc.norm, .append) in one launch, for decode-sized calls: a
 * thread a rotated pair (i, i + head_dim / 2) of the row's first `span`
 * columns, blocks of ROPE_FUSED_THREADS pairs across it, a row of blocks a
 * token. Each block sums the squares of the whole normed span itself, its
 * loads in flight together with its own pair's and the V columns' it
 * copies (a norm a head, Qwen3's: the head's own pairs, by shuffles and
 * one barrier); the norms' weights, the angle and the slot are read before
 * the grid wait. Every value is rounded to T where the composed ops would
 * store it, so the cache gets their K and V. A decode step's three small
 * launches fewer (OLMoE). */
#define ROPE_FUSED_THREADS 256
#define ROPE_FUSED_MAX_TOKENS 64

template <enum dy_dtype T>
__device__ __forceinline__ float round_to(float v)
{
    if constexpr (T == DY_BF16)
        return dy_bf16_to_f32(dy_f32_to_bf16(v));
    else if constexpr (T == DY_F16)
        return dy_f16_to_f32(dy_f32_to_f16(v));
    else
        return v;
}

template <enum dy_dtype T, int NV>
__global__ void __launch_bounds__(ROPE_FUSED_THREADS)
rope_fused_kernel(struct dy_rope_desc d, int span, void *x, const int32_t *pos, const float *inv_freq,
                  const void *qw, const void *kw, const int32_t *slots, void *kc, void *vc)
{
    __shared__ float shared[2][ROPE_FUSED_THREADS / DY_WARP];
    int half = d.head_dim / 2, t = blockIdx.y, qn = qw ? d.norm.q_cols : 0, nn = qw ? qn + d.norm.k_cols : 0;
    int p = blockIdx.x * ROPE_FUSED_THREADS + threadIdx.x, h = p / half, i = p - h * half;
    int e0 = h * d.head_dim + i, e1 = e0 + half;
    bool mine = e0 < span, rot = mine && h < d.heads;
    /* settled before the wait: weights, positions and slots (the host's) */
    float w0 = 1.0f, w1 = 1.0f, sn = 0.0f, cs = 1.0f;
    /* a norm a head: the head's own columns index the weight */
    int g = d.norm.group, i0 = g ? i : e0, i1 = g ? i + half : e1, k0 = g ? i : e0 - qn, k1 = g ? i + half : e1 - qn;
    if (mine && e0 < nn)
        w0 = e0 < qn ? dy_load_f32(qw, d.norm.weight_dtype, i0) : dy_load_f32(kw, d.norm.weight_dtype, k0);
    if (mine && e1 < nn)
        w1 = e1 < qn ? dy_load_f32(qw, d.norm.weight_dtype, i1) : dy_load_f32(kw, d.norm.weight_dtype, k1);
    if (rot)
        sincosf(__fmul_rn((float)pos[t], inv_freq[i]), &sn, &cs);
    int kvd = d.append.kv_heads * d.append.head_dim;
    size_t dst = kc ? (size_t)slots[t] * kvd : 0;
    DY_GRID_ENTER();
    const char *row = (const char *)x + (size_t)t * d.row_stride * dy_dtype_size(T);
    float x0 = mine ? dy_load_f32(row, T, e0) : 0.0f, x1 = mine ? dy_load_f32(row, T, e1) : 0.0f;
    if (qw && g) {
        /* the head's pairs are `half` consecutive threads of the block */
        float sq = mine && e0 < nn ? x0 * x0 + x1 * x1 : 0.0f;
        for (int o = min(half, DY_WARP) / 2; o > 0; o >>= 1)
            sq += __shfl_xor_sync(0xffffffffu, sq, o);
        if (half > DY_WARP) {
            int per = half / DY_WARP, w0i = threadIdx.x / DY_WARP / per * per;
            if (threadIdx.x % DY_WARP == 0)
                shared[0][threadIdx.x / DY_WARP] = sq;
            __syncthreads();
            sq = 0.0f;
            for (int w = 0; w < per; w++)
                sq += shared[0][w0i + w];
        }
        float inv = rsqrtf(sq / g + d.norm.eps);
        if (mine && e0 < nn)
            x0 = round_to<T>(x0 * inv * w0);
        if (mine && e1 < nn)
            x1 = round_to<T>(x1 * inv * w1);
    } else if (qw) {
        float4 v[NV];
#pragma unroll
        for (int j = 0; j < NV; j++) {
            int c4 = threadIdx.x + j * ROPE_FUSED_THREADS;
            v[j] = c4 * 4 < nn ? load_vec4<T>(row, c4) : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        }
        float sq = 0.0f, sk = 0.0f;
#pragma unroll
        for (int j = 0; j < NV; j++) {
            float s2 = v[j].x * v[j].x + v[j].y * v[j].y + v[j].z * v[j].z + v[j].w * v[j].w;
            if ((int)(threadIdx.x + j * ROPE_FUSED_THREADS) * 4 < qn)
                sq += s2;
            else
                sk += s2;
        }
        for (int o = DY_WARP / 2; o > 0; o >>= 1) {
            sq += __shfl_xor_sync(0xffffffffu, sq, o);
            sk += __shfl_xor_sync(0xffffffffu, sk, o);
        }
        if (threadIdx.x % DY_WARP == 0) {
            shared[0][threadIdx.x / DY_WARP] = sq;
            shared[1][threadIdx.x / DY_WARP] = sk;
        }
        __syncthreads();
        sq = sk = 0.0f;
#pragma unroll
        for (int w = 0; w < ROPE_FUSED_THREADS / DY_WARP; w++) {
            sq += shared[0][w];
            sk += shared[1][w];
        }
        float iq = rsqrtf(sq / qn + d.norm.eps), ik = rsqrtf(sk / d.norm.k_cols + d.norm.eps);
        if (mine && e0 < nn)
            x0 = round_to<T>(x0 * (e0 < qn ? iq : ik) * w0);
        if (mine && e1 < nn)
            x1 = round_to<T>(x1 * (e1 < qn ? iq : ik) * w1);
    }
    if (rot) {
        float r0 = x0 * cs - x1 * sn, r1 = x1 * cs + x0 * sn;
        x0 = round_to<T>(r0);
        x1 = round_to<T>(r1);
    }
    if (mine) {
        char *out = (char *)x + (size_t)t * d.row_stride * dy_dtype_size(T);
        dy_store_f32(out, T, e0, x0);
        dy_store_f32(out, T, e1, x1);
    }
    if (!kc)
        return;
    int ak = d.append.k_col, av = d.append.v_col;
    if (mine) {
        if (e0 >= ak && e0 < ak + kvd)
            dy_cuda_store_f32(kc, d.append.cache_dtype, dst + (e0 - ak), x0);
        if (e1 >= ak && e1 < ak + kvd)
            dy_cuda_store_f32(kc, d.append.cache_dtype, dst + (e1 - ak), x1);
        if (e0 >= av && e0 < av + kvd)
            dy_cuda_store_f32(vc, d.append.cache_dtype, dst + (e0 - av), x0);
        if (e1 >= av && e1 < av + kvd)
            dy_cuda_store_f32(vc, d.append.cache_dtype, dst + (e1 - av), x1);
    }
    /* K and V columns past the span: as they are */
    for (int c = p; c < kvd; c += gridDim.x * ROPE_FUSED_THREADS) {
        if (ak + c >= span)
            dy_cuda_store_f32(kc, d.append.cache_dtype, dst + c, dy_load_f32(row, T, ak + c));
        if (av + c >= span)
            dy_cuda_store_f32(vc, d.append.cache_dtype, dst + c, dy_load_f32(row, T, av + c));
    }
}

/* dy_rope_desc.norm and .append in one launch for up to
 * ROPE_FUSED_MAX_TOKENS tokens whose normed columns a block's threads sum in
 * eight 4-element loads each, or whose norms are a head each over rotated
 * heads of a power-of-two half; DY_E_UNSUPPORTED else (dy_rope composes) */
static int rope_fused(struct cuda_ctx *c, const struct dy_rope_desc *d)
{
    typedef void (*fn)(struct dy_rope_desc, int, void *, const int32_t *, const float *, const void *,
                       const void *, const int32_t *, void *, void *);
#define ROPE_FUSED_NV(T) { rope_fused_kernel<T, 1>, rope_fused_kernel<T, 2>, rope_fused_kernel<T, 4>, \
                           rope_fused_kernel<T, 8> }
    static const fn kernels[3][4] = { ROPE_FUSED_NV(DY_F32), ROPE_FUSED_NV(DY_F16), ROPE_FUSED_NV(DY_BF16) };
#undef ROPE_FUSED_NV
    const struct dy_gemm_append *ap = &d->append;
    bool nm = d->norm.q_weight.h, kv = ap->k_cache.h;
    int rotated = d->heads * d->head_dim, normed = nm ? d->norm.q_cols + d->norm.k_cols : 0;
    int span = rotated > normed ? rotated : normed, vecs = (normed / 4 + ROPE_FUSED_THREADS - 1) / ROPE_FUSED_THREADS;
    int nv = vecs <= 1 ? 0 : vecs <= 2 ? 1 : vecs <= 4 ? 2 : 3;
    const void *x = dy_cuda_ptr(d->x);
    /* a norm a head: its pairs one aligned run of a block's threads */
    int half = d->head_dim / 2;
    if (nm && d->norm.group && (d->norm.group != d->head_dim || (half & (half - 1)) || half > ROPE_FUSED_THREADS ||
                                d->heads * d->head_dim < normed))
        return DY_E_UNSUPPORTED;
    if (nm && d->norm.group)
        nv = 0; /* no whole-row sums */
    if (!c->rope_fused || float_index(d->dtype) < 0 || d->head_dim % 2 || span % d->head_dim ||
        span > d->row_stride || d->tokens > ROPE_FUSED_MAX_TOKENS || (vecs > 8 && !(nm && d->norm.group)) ||
        (nm && (d->norm.q_cols % 4 || d->row_stride % 4 || float_index(d->norm.weight_dtype) < 0 ||
                (uintptr_t)x % (d->dtype == DY_F32 ? 16 : 8))) ||
        (kv && !dy_cuda_is_cache_dtype(ap->cache_dtype)))
        return DY_E_UNSUPPORTED;
    int pairs = span / 2;
    dim3 grid((unsigned)((pairs + ROPE_FUSED_THREADS - 1) / ROPE_FUSED_THREADS), (unsigned)d->tokens);
    dy_launch(c, kernels[float_index(d->dtype)][nv], grid, ROPE_FUSED_THREADS, 0, *d, span, dy_cuda_ptr(d->x),
              (const int32_t *)dy_cuda_ptr(d->positions), (const float *)dy_cuda_ptr(d->inv_freq),
              nm ? dy_cuda_ptr(d->norm.q_weight) : NULL, nm ? dy_cuda_ptr(d->norm.k_weight) : NULL,
              kv ? (const int32_t *)dy_cuda_ptr(ap->slots) : NULL, kv ? dy_cuda_ptr(ap->k_cache) : NULL,
              kv ? dy_cuda_ptr(ap->v_cache) : NULL);
    return dy_cuda_check_launch(c, "rope");
}

__global__ void eltwise_kernel(struct dy_eltwise_desc d, const void *a, const void *b, void *out)
{
    DY_GRID_ENTER();
    size_t n = (size_t)d.rows * d.cols;
    for (size_t idx = blockIdx.x * (size_t)blockDim.x + threadIdx.x; idx < n;
         idx += (size_t)gridDim.x * blockDim.x) {
        size_t r = idx / d.cols, i = idx % d.cols;
        float x = dy_load_f32(a, d.dtype, r * d.a_stride + i), y;
        if (d.op == DY_ELT_ADD)
            y = x + dy_load_f32(b, d.dtype, r * d.b_stride + i);
        else if (d.op == DY_ELT_SILU_MUL)
            y = dy_silu_mul(x, dy_load_f32(b, d.dtype, r * d.b_stride + i));
        else if (d.op == DY_ELT_GATED_ADD)
            y = dy_load_f32(out, d.dtype, r * d.out_stride + i) +
                x / (1.0f + expf(-dy_load_f32(b, d.dtype, r * d.b_stride)));
        else
            y = 0.5f * x * (1.0f + erff(x * 0.70710678118654752f));
        dy_store_f32(out, d.dtype, r * d.out_stride + i, y);
    }
}

__device__ __forceinline__ float eltwise_one(enum dy_eltwise_op op, float x, float y, float prev)
{
    if (op == DY_ELT_ADD)
        return x + y;
    if (op == DY_ELT_SILU_MUL)
        return dy_silu_mul(x, y);
    if (op == DY_ELT_GATED_ADD) /* y: the gate's 1 + exp(-b) */
        return prev + x / y;
    return 0.5f * x * (1.0f + erff(x * 0.70710678118654752f));
}

/* Rows whose width and strides are whole 16-byte vectors: one vector of
 * each of two rows a thread (both rows' loads in flight before either is
 * computed on), x over the columns, y striding over the rows (no index
 * division, one op branch per block) */
template <enum dy_eltwise_op OP, enum dy_dtype T>
__global__ void eltwise16_kernel(struct dy_eltwise_desc d, const void *a, const void *b, void *out)
{
    DY_GRID_ENTER();
    constexpr size_t ES = T == DY_F32 ? 4 : 2;
    constexpr int N = 16 / ES;
    int c = (blockIdx.x * blockDim.x + threadIdx.x) * N;
    if (c >= d.cols)
        return;
    for (int r0 = blockIdx.y; r0 < d.rows; r0 += 2 * gridDim.y) {
        /* the second row, or the first again where there is none */
        int rows[2] = { r0, r0 + (int)gridDim.y < d.rows ? r0 + (int)gridDim.y : r0 };
        float x[2][N], y[2][N] = {}, p[2][N] = {};
#pragma unroll
        for (int j = 0; j < 2; j++) {
            size_t r = (size_t)rows[j];
            load16<T>((const char *)a + r * d.a_stride * ES, c, x[j]);
            if (OP == DY_ELT_ADD || OP == DY_ELT_SILU_MUL)
                load16<T>((const char *)b + r * d.b_stride * ES, c, y[j]);
            if (OP == DY_ELT_GATED_ADD) {
                float g = 1.0f + expf(-dy_load_f32(b, T, r * d.b_stride));
#pragma unroll
                for (int e = 0; e < N; e++)
                    y[j][e] = g;
                load16<T>((const char *)out + r * d.out_stride * ES, c, p[j]);
            }
        }
#pragma unroll
        for (int j = 0; j < 2; j++) {
            if (j == 1 && rows[1] == rows[0])
                break;
#pragma unroll
            for (int e = 0; e < N; e++)
                x[j][e] = eltwise_one(OP, x[j][e], y[j][e], p[j][e]);
            store16<T>((char *)out + (size_t)rows[j] * d.out_stride * ES, c, x[j]);
        }
    }
}

static bool eltwise16_fits(const struct dy_eltwise_desc *d, const void *a, const void *b, const void *out)
{
    int n = float_index(d->dtype) < 0 ? 0 : 16 / (int)dy_dtype_size(d->dtype);
    bool b_vec = d->op == DY_ELT_ADD || d->op == DY_ELT_SILU_MUL;
    bool strides = n && d->cols % n == 0 && d->a_stride % n == 0 && d->out_stride % n == 0 &&
                   (!b_vec || d->b_stride % n == 0);
    return strides && ((uintptr_t)a | (uintptr_t)out | (b_vec ? (uintptr_t)b : 0)) % 16 == 0;
}

typedef void (*eltwise16_fn)(struct dy_eltwise_desc, const void *, const void *, void *);
#define ELTWISE16_OPS(T) \
    { eltwise16_kernel<DY_ELT_ADD, T>, eltwise16_kernel<DY_ELT_SILU_MUL, T>, eltwise16_kernel<DY_ELT_GELU, T>, \
      eltwise16_kernel<DY_ELT_GATED_ADD, T> }

int dy_cuda_eltwise(void *ctx, const struct dy_eltwise_desc *d)
{
    struct cuda_ctx *c = (struct cuda_ctx *)ctx;
    size_t n = (size_t)d->rows * d->cols;
    if ((unsigned)d->op > DY_ELT_GATED_ADD || (d->op != DY_ELT_GELU && !d->b.h))
        return DY_E_INVALID;
    if (!n)
        return DY_OK;
    const void *a = dy_cuda_ptr(d->a), *b = d->b.h ? dy_cuda_ptr(d->b) : NULL;
    void *out = dy_cuda_ptr(d->out);
    if (eltwise16_fits(d, a, b, out)) {
        int vecs = d->cols / (16 / (int)dy_dtype_size(d->dtype));
        int pairs = (d->rows + 1) / 2;
        dim3 grid((unsigned)((vecs + THREADS - 1) / THREADS), (unsigned)(pairs < 65535 ? pairs : 65535));
        /* [dtype][op] */
        static const eltwise16_fn kernels[3][4] = { ELTWISE16_OPS(DY_F32), ELTWISE16_OPS(DY_F16),
                                                    ELTWISE16_OPS(DY_BF16) };
        dy_launch(c, kernels[float_index(d->dtype)][d->op], grid, THREADS, 0, *d, a, b, out);
        return dy_cuda_check_launch(c, "eltwise");
    }
    dy_launch(c, eltwise_kernel, blocks_for(n), THREADS, 0, *d, dy_cuda_ptr(d->a),
              d->b.h ? dy_cuda_ptr(d->b) : NULL, dy_cuda_ptr(d->out));
    return dy_cuda_check_launch(c, "eltwise");
}

__global__ void gather_kernel(struct dy_gather_rows_desc d, const void *table, const int32_t *ids,
                              void *out)
{
    DY_GRID_ENTER();
    size_t n = (size_t)d.rows * d.cols;
    for (size_t idx = blockIdx.x * (size_t)blockDim.x + threadIdx.x; idx < n;
         idx += (size_t)gridDim.x * blockDim.x) {
        size_t r = idx / d.cols, i = idx % d.cols;
        dy_store_f32(out, d.out_dtype, r * d.out_stride + i,
                     dy_load_f32(table, d.table_dtype, (size_t)ids[r] * d.table_stride + i));
    }
}

/* rows of whole 16-byte vectors from a table of the output's dtype: a
 * vector a thread (ViT-L/16's token rows: 294 us a batch of 256 images
 * through the loop above, from an f32 table) */
__global__ void gather16_kernel(int rows, int vpr, size_t ts, size_t os, const uint4 *table, const int32_t *ids,
                                uint4 *out)
{
    DY_GRID_ENTER();
    size_t n = (size_t)rows * vpr;
    for (size_t idx = blockIdx.x * (size_t)blockDim.x + threadIdx.x; idx < n;
         idx += (size_t)gridDim.x * blockDim.x) {
        size_t r = idx / vpr, i = idx % vpr;
        out[r * os + i] = table[(size_t)ids[r] * ts + i];
    }
}

int dy_cuda_gather_rows(void *ctx, const struct dy_gather_rows_desc *d)
{
    struct cuda_ctx *c = (struct cuda_ctx *)ctx;
    size_t n = (size_t)d->rows * d->cols, es = dy_dtype_size(d->out_dtype);
    if (!n)
        return DY_OK;
    if (d->table_dtype == d->out_dtype && (d->cols * es) % 16 == 0 && (d->table_stride * es) % 16 == 0 &&
        (d->out_stride * es) % 16 == 0 && dy_cuda_aligned16(dy_cuda_ptr(d->table)) &&
        dy_cuda_aligned16(dy_cuda_ptr(d->out))) {
        int vpr = (int)(d->cols * es / 16);
        dy_launch(c, gather16_kernel, blocks_for((size_t)d->rows * vpr), THREADS, 0, d->rows, vpr,
                  d->table_stride * es / 16, d->out_stride * es / 16, (const uint4 *)dy_cuda_ptr(d->table),
                  (const int32_t *)dy_cuda_ptr(d->ids), (uint4 *)dy_cuda_ptr(d->out));
        return dy_cuda_check_launch(c, "gather_rows");
    }
    dy_launch(c, gather_kernel, blocks_for(n), THREADS, 0, *d, dy_cuda_ptr(d->table), dy_cuda_ptr(d->ids),
              dy_cuda_ptr(d->out));
    return dy_cuda_check_launch(c, "gather_rows");
}

/* Two passes so a single long row (batch-1 logits: 128K values) spreads
 * over many blocks: each block reduces a chunk of a row to (value, index),
 * then one block per row reduces the chunks. The first maximum wins. */
#define ARGMAX_CHUNK 4096

__device__ void argmax_reduce(float *best_v, int *best_i)
{
    for (int s = blockDim.x / 2; s > 0; s >>= 1) {
        if ((int)threadIdx.x < s) {
            float ov = best_v[threadIdx.x + s];
            int oi = best_i[threadIdx.x + s];
            if (ov > best_v[threadIdx.x] || (ov == best_v[threadIdx.x] && oi < best_i[threadIdx.x])) {
                best_v[threadIdx.x] = ov;
                best_i[threadIdx.x] = oi;
            }
        }
        __syncthreads();
    }
}

__global__ void argmax_chunks_kernel(struct dy_argmax_desc d, const void *x, float *part_v,
                                     int *part_i, int chunks)
{
    DY_GRID_ENTER();
    __shared__ float best_v[THREADS];
    __shared__ int best_i[THREADS];
    int row = blockIdx.y, chunk = blockIdx.x;
    int begin = chunk * ARGMAX_CHUNK, end = min(d.cols, begin + ARGMAX_CHUNK);
    size_t base = (size_t)row * d.stride;
    float bv = -INFINITY;
    int bi = 0x7fffffff;
    for (int i = begin + threadIdx.x; i < end; i += blockDim.x) {
        float v = dy_load_f32(x, d.dtype, base + i);
        if (v > bv) {
            bv = v;
            bi = i;
        }
    }
    best_v[threadIdx.x] = bv;
    best_i[threadIdx.x] = bi;
    __syncthreads();
    argmax_reduce(best_v, best_i);
    if (threadIdx.x == 0) {
        part_v[(size_t)row * chunks + chunk] = best_v[0];
        part_i[(size_t)row * chunks + chunk] = best_i[0];
    }
}

__global__ void argmax_final_kernel(const float *part_v, const int *part_i, int chunks, int32_t *out)
{
    DY_GRID_ENTER();
    __shared__ float best_v[THREADS];
    __shared__ int best_i[THREADS];
    int row = blockIdx.x;
    float bv = -INFINITY;
    int bi = 0x7fffffff;
    for (int c = threadIdx.x; c < chunks; c += blockDim.x) {
        float v = part_v[(size_t)row * chunks + c];
        int i = part_i[(size_t)row * chunks + c];
        if (v > bv || (v == bv && i < bi)) {
            bv = v;
            bi = i;
        }
    }
    best_v[threadIdx.x] = bv;
    best_i[threadIdx.x] = bi;
    __syncthreads();
    argmax_reduce(best_v, best_i);
    if (threadIdx.x == 0)
        out[row] = best_i[0] == 0x7fffffff ? 0 : best_i[0];
}

int dy_cuda_argmax(void *ctx, const struct dy_argmax_desc *d)
{
    struct cuda_ctx *c = (struct cuda_ctx *)ctx;
    if (d->rows <= 0 || d->cols <= 0)
        return DY_OK;
    int chunks = (d->cols + ARGMAX_CHUNK - 1) / ARGMAX_CHUNK;
    size_t bytes = (size_t)d->rows * chunks * (sizeof(float) + sizeof(int));
    int st = dy_cuda_reserve(c, &c->argmax_scratch, &c->argmax_scratch_size, bytes);
    if (st != DY_OK)
        return st;
    float *part_v = (float *)c->argmax_scratch;
    int *part_i = (int *)(part_v + (size_t)d->rows * chunks);
    dy_launch(c, argmax_chunks_kernel, dim3((unsigned)chunks, (unsigned)d->rows), THREADS, 0, *d,
              dy_cuda_ptr(d->x), part_v, part_i, chunks);
    dy_launch(c, argmax_final_kernel, d->rows, THREADS, 0, part_v, part_i, chunks, dy_cuda_ptr(d->out));
    return dy_cuda_check_launch(c, "argmax");
}
