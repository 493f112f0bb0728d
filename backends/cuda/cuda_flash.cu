/* Causal or bidirectional prefill attention on the tensor cores (WMMA, bf16
 * operands, f32 accumulation), FlashAttention-2 style: a block owns 64 query
 * rows of one head (16 per warp) and walks 64-key tiles of K and V through
 * shared memory with an online softmax, so the scores never reach device
 * memory. Taken when the descriptor allows bf16 operands (compute_dtype),
 * the head dim is 64 or 128 and the rows are 16-byte aligned. */
#include <cuda_bf16.h>
#include <mma.h>

#include "cuda_internal.h"

using namespace nvcuda;

#define FA_ROWS 64  /* query rows per block */
#define FA_KEYS 64  /* keys per tile */
#define FA_WARPS 4

template <int HD> struct fa_layout {
    static constexpr int LD = HD + 8;         /* bf16 tiles: Q, K, V */
    static constexpr int SLD = FA_KEYS + 4;   /* f32 scores */
    static constexpr int PLD = FA_KEYS + 8;   /* bf16 probabilities */
    static constexpr int OLD = HD + 4;        /* f32 output and P.V */
    static constexpr size_t q = 0;
    static constexpr size_t k = q + (size_t)FA_ROWS * LD * 2;
    static constexpr size_t v = k + (size_t)FA_KEYS * LD * 2;
    static constexpr size_t s = v + (size_t)FA_KEYS * LD * 2;
    static constexpr size_t p = s + (size_t)FA_WARPS * 16 * SLD * 4;
    static constexpr size_t o = p + (size_t)FA_WARPS * 16 * PLD * 2;
    static constexpr size_t t = o + (size_t)FA_WARPS * 16 * OLD * 4;
    static constexpr size_t bytes = t + (size_t)FA_WARPS * 16 * OLD * 4;
};

/* rows [row0, row0 + 64) of an f32 matrix into a bf16 tile; rows past
 * `limit` are zero */
template <int HD>
__device__ void load_tile(__nv_bfloat16 *tile, const float *src, size_t stride, int row0, int limit)
{
    constexpr int LD = fa_layout<HD>::LD, VEC = HD / 4;
    for (int idx = threadIdx.x; idx < FA_ROWS * VEC; idx += blockDim.x) {
        int r = idx / VEC, c = (idx % VEC) * 4;
        float4 x = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        if (row0 + r < limit)
            x = *(const float4 *)(src + (size_t)(row0 + r) * stride + c);
        __nv_bfloat16 *dst = tile + r * LD + c;
        dst[0] = __float2bfloat16(x.x);
        dst[1] = __float2bfloat16(x.y);
        dst[2] = __float2bfloat16(x.z);
        dst[3] = __float2bfloat16(x.w);
    }
}

template <int HD>
__global__ void __launch_bounds__(FA_WARPS * 32)
flash_prefill_kernel(struct dy_attention_prefill_desc d, const float *q, const float *k,
                     const float *v, float *out)
{
    using L = fa_layout<HD>;
    extern __shared__ __align__(128) unsigned char smem[];
    __nv_bfloat16 *qs = (__nv_bfloat16 *)(smem + L::q);
    __nv_bfloat16 *ks = (__nv_bfloat16 *)(smem + L::k);
    __nv_bfloat16 *vs = (__nv_bfloat16 *)(smem + L::v);
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    float *ss = (float *)(smem + L::s) + warp * 16 * L::SLD;
    __nv_bfloat16 *ps = (__nv_bfloat16 *)(smem + L::p) + warp * 16 * L::PLD;
    float *os = (float *)(smem + L::o) + warp * 16 * L::OLD;
    float *ts = (float *)(smem + L::t) + warp * 16 * L::OLD;

    int q0 = blockIdx.x * FA_ROWS, h = blockIdx.y, b = blockIdx.z;
    int kvh = h / (d.heads / d.kv_heads);
    size_t seq0 = (size_t)b * d.seq_len;
    load_tile<HD>(qs, q + seq0 * d.q_stride + (size_t)h * HD, d.q_stride, q0, d.seq_len);

    /* lanes 2r and 2r+1 own row r of the warp's 16: columns split in halves */
    int r = lane / 2, half = lane % 2, qi = q0 + warp * 16 + r;
    for (int c = half * (HD / 2); c < (half + 1) * (HD / 2); c++)
        os[r * L::OLD + c] = 0.0f;
    float m = -INFINITY, l = 0.0f;
    const float log2e = 1.4426950408889634f, scale = d.scale * log2e;

    int key_end = d.causal ? min(d.seq_len, q0 + FA_ROWS) : d.seq_len;
    for (int k0 = 0; k0 < key_end; k0 += FA_KEYS) {
        __syncthreads(); /* the previous tile is no longer read */
        const float *kb = k + seq0 * d.kv_stride + (size_t)kvh * HD;
        const float *vb = v + seq0 * d.kv_stride + (size_t)kvh * HD;
        load_tile<HD>(ks, kb, d.kv_stride, k0, d.seq_len);
        load_tile<HD>(vs, vb, d.kv_stride, k0, d.seq_len);
        __syncthreads();

        /* S = Q K^T for this warp's 16 rows */
        for (int nt = 0; nt < FA_KEYS / 16; nt++) {
            wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
            wmma::fill_fragment(acc, 0.0f);
#pragma unroll
            for (int kk = 0; kk < HD / 16; kk++) {
                wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, wmma::row_major> a;
                wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, wmma::col_major> bt;
                wmma::load_matrix_sync(a, qs + warp * 16 * L::LD + kk * 16, L::LD);
                wmma::load_matrix_sync(bt, ks + nt * 16 * L::LD + kk * 16, L::LD);
                wmma::mma_sync(acc, a, bt, acc);
            }
            wmma::store_matrix_sync(ss + nt * 16, acc, L::SLD, wmma::mem_row_major);
        }
        __syncwarp();

        /* online softmax over this tile, in base 2 */
        float tile_max = -INFINITY;
        for (int c = half * 32; c < half * 32 + 32; c++) {
            int key = k0 + c;
            bool masked = key >= d.seq_len || (d.causal && key > qi);
            float x = masked ? -INFINITY : ss[r * L::SLD + c] * scale;
            ss[r * L::SLD + c] = x;
            tile_max = fmaxf(tile_max, x);
        }
        tile_max = fmaxf(tile_max, __shfl_xor_sync(0xffffffffu, tile_max, 1));
        float m_new = fmaxf(m, tile_max);
        float corr = m_new == -INFINITY ? 1.0f : exp2f(m - m_new);
        float sum = 0.0f;
        for (int c = half * 32; c < half * 32 + 32; c++) {
            float x = ss[r * L::SLD + c];
            float p = x == -INFINITY ? 0.0f : exp2f(x - m_new);
            __nv_bfloat16 pb = __float2bfloat16(p);
            ps[r * L::PLD + c] = pb;
            sum += __bfloat162float(pb);
        }
        sum += __shfl_xor_sync(0xffffffffu, sum, 1);
        l = l * corr + sum;
        m = m_new;
        __syncwarp();

        /* T = P V, then O = O * corr + T */
        for (int ot = 0; ot < HD / 16; ot++) {
            wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
            wmma::fill_fragment(acc, 0.0f);
#pragma unroll
            for (int kk = 0; kk < FA_KEYS / 16; kk++) {
                wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, wmma::row_major> a;
                wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, wmma::row_major> bv;
                wmma::load_matrix_sync(a, ps + kk * 16, L::PLD);
                wmma::load_matrix_sync(bv, vs + kk * 16 * L::LD + ot * 16, L::LD);
                wmma::mma_sync(acc, a, bv, acc);
            }
            wmma::store_matrix_sync(ts + ot * 16, acc, L::OLD, wmma::mem_row_major);
        }
        __syncwarp();
        for (int c = half * (HD / 2); c < (half + 1) * (HD / 2); c++)
            os[r * L::OLD + c] = os[r * L::OLD + c] * corr + ts[r * L::OLD + c];
        __syncwarp();
    }
    if (qi < d.seq_len) {
        float inv = 1.0f / l;
        float *dst = out + (seq0 + qi) * d.out_stride + (size_t)h * HD;
        for (int c = half * (HD / 2); c < (half + 1) * (HD / 2); c++)
            dst[c] = os[r * L::OLD + c] * inv;
    }
}

static bool aligned16(const void *p)
{
    return ((uintptr_t)p & 15u) == 0;
}

template <int HD>
static int launch(struct cuda_ctx *c, const struct dy_attention_prefill_desc *d, const float *q,
                  const float *k, const float *v, float *out)
{
    size_t bytes = fa_layout<HD>::bytes;
    cudaError_t e = cudaFuncSetAttribute(flash_prefill_kernel<HD>,
                                         cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes);
    if (e != cudaSuccess)
        return dy_cuda_fail(c, e, "cudaFuncSetAttribute(flash prefill)");
    dim3 grid((unsigned)((d->seq_len + FA_ROWS - 1) / FA_ROWS), (unsigned)d->heads, (unsigned)d->batch);
    flash_prefill_kernel<HD><<<grid, FA_WARPS * 32, bytes, c->stream>>>(*d, q, k, v, out);
    return dy_cuda_check_launch(c, "flash attention prefill");
}

int dy_cuda_flash_prefill(struct cuda_ctx *c, const struct dy_attention_prefill_desc *d)
{
    const float *q = (const float *)dy_cuda_ptr(d->q), *k = (const float *)dy_cuda_ptr(d->k);
    const float *v = (const float *)dy_cuda_ptr(d->v);
    float *out = (float *)dy_cuda_ptr(d->out);
    bool fits = d->compute_dtype == DY_BF16 && d->dtype == DY_F32 &&
                (d->head_dim == 64 || d->head_dim == 128) && d->q_stride % 4 == 0 &&
                d->kv_stride % 4 == 0 && aligned16(q) && aligned16(k) && aligned16(v);
    if (!fits)
        return DY_E_UNSUPPORTED;
    return d->head_dim == 64 ? launch<64>(c, d, q, k, v, out) : launch<128>(c, d, q, k, v, out);
}
