/* Causal or bidirectional prefill attention on the tensor cores (mma.sync,
 * bf16 operands, f32 accumulation), FlashAttention-2 style: a block owns 64
 * query rows of one head (16 per warp) and walks 64-key tiles of K and V
 * through shared memory with an online softmax held in registers, so the
 * scores never reach memory. Taken when the descriptor allows bf16 operands
 * (compute_dtype), the head dim is 64 or 128 and the rows are 16-byte
 * aligned. CUDA only: the inline mma.sync has no HIP spelling, so the HIP
 * build declines and the exact kernel in cuda_attention.cu runs. */
#include "cuda_internal.h"

#if DY_HIP
int dy_cuda_flash_prefill(struct cuda_ctx *c, const struct dy_attention_prefill_desc *d)
{
    return DY_E_UNSUPPORTED;
}
#else
#include <cuda_bf16.h>

#define FA_ROWS 64  /* query rows per block */
#define FA_KEYS 64  /* keys per tile */
#define FA_WARPS 4

/* Shared-memory tiles: bf16 rows padded by 8 elements so that the 32-bit
 * fragment loads of a warp spread over the banks. */
template <int HD> struct fa_layout {
    static constexpr int LD = HD + 8;
    static constexpr size_t bytes = (size_t)(FA_ROWS + 2 * FA_KEYS) * LD * 2;
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
        __nv_bfloat162 *dst = (__nv_bfloat162 *)(tile + r * LD + c);
        dst[0] = __floats2bfloat162_rn(x.x, x.y);
        dst[1] = __floats2bfloat162_rn(x.z, x.w);
    }
}

__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi)
{
    __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    return *(uint32_t *)&v;
}

__device__ __forceinline__ uint32_t ld32(const __nv_bfloat16 *p)
{
    return *(const uint32_t *)p;
}

/* d += a . b for one m16n8k16 tile: bf16 operands, f32 accumulators */
__device__ __forceinline__ void mma16816(float *d, const uint32_t *a, uint32_t b0, uint32_t b1)
{
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
                 "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

/* FlashAttention-2 order with everything in registers: each warp owns 16
 * query rows; lane l holds rows g = l/4 and g + 8 of every accumulator tile,
 * columns 2(l%4) and 2(l%4)+1 (the mma.sync m16n8 layout). The score tile's
 * layout is the A operand's, so probabilities feed P.V without shared memory. */
template <int HD>
__global__ void __launch_bounds__(FA_WARPS * 32)
flash_prefill_kernel(struct dy_attention_prefill_desc d, const float *q, const float *k,
                     const float *v, float *out)
{
    constexpr int LD = fa_layout<HD>::LD, NT = FA_KEYS / 8, OT = HD / 8;
    extern __shared__ __align__(16) unsigned char smem[];
    __nv_bfloat16 *qs = (__nv_bfloat16 *)smem, *ks = qs + FA_ROWS * LD, *vs = ks + FA_KEYS * LD;
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
    int q0 = blockIdx.x * FA_ROWS, h = blockIdx.y, b = blockIdx.z;
    int kvh = h / (d.heads / d.kv_heads);
    size_t seq0 = (size_t)b * d.seq_len;
    load_tile<HD>(qs, q + seq0 * d.q_stride + (size_t)h * HD, d.q_stride, q0, d.seq_len);
    __syncthreads();
    /* the warp's Q rows as A fragments, one per 16 of the head dim */
    uint32_t qa[HD / 16][4];
    const __nv_bfloat16 *qw = qs + warp * 16 * LD;
#pragma unroll
    for (int ks16 = 0; ks16 < HD / 16; ks16++) {
        int c = ks16 * 16 + 2 * t;
        qa[ks16][0] = ld32(qw + g * LD + c);
        qa[ks16][1] = ld32(qw + (g + 8) * LD + c);
        qa[ks16][2] = ld32(qw + g * LD + c + 8);
        qa[ks16][3] = ld32(qw + (g + 8) * LD + c + 8);
    }
    float o[OT][4];
#pragma unroll
    for (int j = 0; j < OT; j++)
        o[j][0] = o[j][1] = o[j][2] = o[j][3] = 0.0f;
    float m0 = -INFINITY, m1 = -INFINITY, l0 = 0.0f, l1 = 0.0f;
    const float scale = d.scale * 1.4426950408889634f; /* base 2 */
    int row0 = q0 + warp * 16 + g, row1 = row0 + 8;
    int key_end = d.causal ? min(d.seq_len, q0 + FA_ROWS) : d.seq_len;
    for (int k0 = 0; k0 < key_end; k0 += FA_KEYS) {
        __syncthreads();
        load_tile<HD>(ks, k + seq0 * d.kv_stride + (size_t)kvh * HD, d.kv_stride, k0, d.seq_len);
        load_tile<HD>(vs, v + seq0 * d.kv_stride + (size_t)kvh * HD, d.kv_stride, k0, d.seq_len);
        __syncthreads();
        float s[NT][4];
#pragma unroll
        for (int n = 0; n < NT; n++) {
            s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.0f;
            const __nv_bfloat16 *kr = ks + (n * 8 + g) * LD + 2 * t;
#pragma unroll
            for (int ks16 = 0; ks16 < HD / 16; ks16++)
                mma16816(s[n], qa[ks16], ld32(kr + ks16 * 16), ld32(kr + ks16 * 16 + 8));
        }
        /* mask, scale, and the rows' running maxima */
        float mx0 = -INFINITY, mx1 = -INFINITY;
#pragma unroll
        for (int n = 0; n < NT; n++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                int key = k0 + n * 8 + 2 * t + (e & 1), row = e < 2 ? row0 : row1;
                bool masked = key >= d.seq_len || (d.causal && key > row);
                float x = masked ? -INFINITY : s[n][e] * scale;
                s[n][e] = x;
                if (e < 2)
                    mx0 = fmaxf(mx0, x);
                else
                    mx1 = fmaxf(mx1, x);
            }
        mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 1));
        mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 2));
        mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 1));
        mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 2));
        float n0 = fmaxf(m0, mx0), n1 = fmaxf(m1, mx1);
        float c0 = n0 == -INFINITY ? 1.0f : exp2f(m0 - n0), c1 = n1 == -INFINITY ? 1.0f : exp2f(m1 - n1);
        float sum0 = 0.0f, sum1 = 0.0f;
        uint32_t pa[NT / 2][4];
#pragma unroll
        for (int n = 0; n < NT; n++) {
            float p[4];
#pragma unroll
            for (int e = 0; e < 4; e++) {
                float ref = e < 2 ? n0 : n1;
                p[e] = s[n][e] == -INFINITY ? 0.0f : exp2f(s[n][e] - ref);
            }
            /* round once: the sums and P.V see the same probabilities */
            uint32_t lo = pack_bf16(p[0], p[1]), hi = pack_bf16(p[2], p[3]);
            __nv_bfloat162 blo = *(__nv_bfloat162 *)&lo, bhi = *(__nv_bfloat162 *)&hi;
            sum0 += __low2float(blo) + __high2float(blo);
            sum1 += __low2float(bhi) + __high2float(bhi);
            pa[n / 2][(n & 1) * 2 + 0] = lo;
            pa[n / 2][(n & 1) * 2 + 1] = hi;
        }
        sum0 += __shfl_xor_sync(0xffffffffu, sum0, 1);
        sum0 += __shfl_xor_sync(0xffffffffu, sum0, 2);
        sum1 += __shfl_xor_sync(0xffffffffu, sum1, 1);
        sum1 += __shfl_xor_sync(0xffffffffu, sum1, 2);
        l0 = l0 * c0 + sum0;
        l1 = l1 * c1 + sum1;
        m0 = n0;
        m1 = n1;
#pragma unroll
        for (int j = 0; j < OT; j++) {
            o[j][0] *= c0;
            o[j][1] *= c0;
            o[j][2] *= c1;
            o[j][3] *= c1;
        }
        /* O += P V: B fragments are V[key][dim] pairs along the key */
#pragma unroll
        for (int kk = 0; kk < NT / 2; kk++) {
            const __nv_bfloat16 *vr = vs + (kk * 16 + 2 * t) * LD + g;
#pragma unroll
            for (int j = 0; j < OT; j++) {
                const __nv_bfloat16 *vc = vr + j * 8;
                __nv_bfloat162 b0 = __halves2bfloat162(vc[0], vc[LD]);
                __nv_bfloat162 b1 = __halves2bfloat162(vc[8 * LD], vc[9 * LD]);
                mma16816(o[j], pa[kk], *(uint32_t *)&b0, *(uint32_t *)&b1);
            }
        }
    }
    float inv0 = 1.0f / l0, inv1 = 1.0f / l1;
#pragma unroll
    for (int j = 0; j < OT; j++) {
        int c = j * 8 + 2 * t;
        if (row0 < d.seq_len) {
            float *dst = out + (seq0 + row0) * d.out_stride + (size_t)h * HD + c;
            dst[0] = o[j][0] * inv0;
            dst[1] = o[j][1] * inv0;
        }
        if (row1 < d.seq_len) {
            float *dst = out + (seq0 + row1) * d.out_stride + (size_t)h * HD + c;
            dst[0] = o[j][2] * inv1;
            dst[1] = o[j][3] * inv1;
        }
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
#endif
