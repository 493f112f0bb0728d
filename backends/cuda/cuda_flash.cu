/* Causal or bidirectional prefill attention on the tensor cores (mma.sync,
 * bf16 operands, f32 accumulation), FlashAttention-2 style. A block of 8
 * warps owns 128 query rows: 16 per warp, and when query heads share a KV
 * head (GQA) up to 4 of those heads at once, so each K/V tile brought into
 * shared memory serves all of them. The block walks 64-key tiles of K and V
 * with an online softmax held in registers, so scores never reach memory.
 * Q, K and V arrive as f32 or as bf16 (reduced-precision activations;
 * the output has their dtype): each thread loads its share of the next
 * tile into registers while the warps multiply the current one, then
 * stores it (rounded to bf16 from f32) into the other half of a double
 * buffer; fragments come out of shared memory through ldmatrix (.trans for
 * V). Taken when the descriptor allows bf16 operands (compute_dtype), the
 * head dim is 64 or 128 (64: two blocks an SM) and the rows are 16-byte
 * aligned. On Hopper, bf16 rows go to the wgmma kernel of
 * cuda_flash_sm90.cu first. CUDA only: the inline PTX has no HIP spelling,
 * so the HIP build declines and the exact kernel in cuda_attention.cu runs. */
#include "cuda_internal.h"

#if DY_HIP
int dy_cuda_flash_prefill(struct cuda_ctx *c, const struct dy_attention_prefill_desc *d)
{
    return DY_E_UNSUPPORTED;
}
#else
#include <cuda_bf16.h>

#define FA_WARPS 8
#define FA_THREADS (FA_WARPS * 32)
#define FA_KEYS 64      /* keys per tile */
#define FA_MAX_HEADS 4  /* query heads of one KV head per block */

/* Shared-memory tiles: bf16 rows padded by 8 elements, so the eight 16-byte
 * rows an ldmatrix reads fall in different banks. */
template <int HD> struct fa_layout {
    static constexpr int LD = HD + 8;
    static constexpr int TILE = FA_KEYS * LD;                 /* elements */
    static constexpr size_t bytes = (size_t)2 * 2 * TILE * 2; /* K, V x 2 stages */
};

/* Global-memory operands: f32 read a float4 at a time, bf16 eight at a time */
template <typename T> struct fa_io {
    typedef float4 vec;
    static constexpr int E = 4;
};
template <> struct fa_io<__nv_bfloat16> {
    typedef uint4 vec;
    static constexpr int E = 8;
};
/* 16-byte loads per thread for one K or V tile */
template <int HD, typename T> __host__ __device__ constexpr int fa_loads()
{
    return FA_KEYS * HD / fa_io<T>::E / FA_THREADS;
}

__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi)
{
    __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    return *(uint32_t *)&v;
}

/* d += a . b for one m16n8k16 tile: bf16 operands, f32 accumulators */
__device__ __forceinline__ void mma16816(float *d, const uint32_t *a, uint32_t b0, uint32_t b1)
{
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
                 "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

/* four 8x8 bf16 matrices; lane l gives the address of row l % 8 of matrix l / 8 */
__device__ __forceinline__ void ldsm4(uint32_t *r, const __nv_bfloat16 *p)
{
    unsigned a = (unsigned)__cvta_generic_to_shared(p);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(a));
}

__device__ __forceinline__ void ldsm4_t(uint32_t *r, const __nv_bfloat16 *p)
{
    unsigned a = (unsigned)__cvta_generic_to_shared(p);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(a));
}

__device__ __forceinline__ float4 keep_if(bool in, float4 x)
{
    return make_float4(in ? x.x : 0.0f, in ? x.y : 0.0f, in ? x.z : 0.0f, in ? x.w : 0.0f);
}

__device__ __forceinline__ uint4 keep_if(bool in, uint4 x)
{
    return make_uint4(in ? x.x : 0u, in ? x.y : 0u, in ? x.z : 0u, in ? x.w : 0u);
}

/* this thread's share of keys [k0, k0 + 64) of a matrix; rows past
 * `limit` read as zero (their scores are masked, and 0 * V stays 0) */
template <int HD, typename T>
__device__ __forceinline__ void fetch_tile(typename fa_io<T>::vec *regs, const T *src, size_t stride, int k0,
                                           int limit)
{
    constexpr int E = fa_io<T>::E, VEC = HD / E;
#pragma unroll
    for (int i = 0; i < fa_loads<HD, T>(); i++) {
        int idx = threadIdx.x + i * FA_THREADS, r = idx / VEC, c = (idx % VEC) * E;
        /* rows past the end read the last row (no branch) and become zeros */
        typename fa_io<T>::vec x =
            __ldg((const typename fa_io<T>::vec *)(src + (size_t)min(k0 + r, limit - 1) * stride + c));
        regs[i] = keep_if(k0 + r < limit, x);
    }
}

__device__ __forceinline__ void store_vec(__nv_bfloat16 *p, float4 x)
{
    *(uint2 *)p = make_uint2(pack_bf16(x.x, x.y), pack_bf16(x.z, x.w));
}

__device__ __forceinline__ void store_vec(__nv_bfloat16 *p, uint4 x)
{
    *(uint4 *)p = x;
}

template <int HD, typename T>
__device__ __forceinline__ void store_tile(__nv_bfloat16 *tile, const typename fa_io<T>::vec *regs)
{
    constexpr int E = fa_io<T>::E, VEC = HD / E, LD = fa_layout<HD>::LD;
#pragma unroll
    for (int i = 0; i < fa_loads<HD, T>(); i++) {
        int idx = threadIdx.x + i * FA_THREADS, r = idx / VEC, c = (idx % VEC) * E;
        store_vec(tile + r * LD + c, regs[i]);
    }
}

/* two consecutive elements of Q as a bf16 pair (zero when !in) */
__device__ __forceinline__ uint32_t load_pair(const float *p, bool in)
{
    float2 x = in ? *(const float2 *)p : make_float2(0.0f, 0.0f);
    return pack_bf16(x.x, x.y);
}

__device__ __forceinline__ uint32_t load_pair(const __nv_bfloat16 *p, bool in)
{
    return in ? *(const uint32_t *)p : 0u;
}

__device__ __forceinline__ void store_pair(float *p, float a, float b)
{
    *(float2 *)p = make_float2(a, b);
}

__device__ __forceinline__ void store_pair(__nv_bfloat16 *p, float a, float b)
{
    *(uint32_t *)p = pack_bf16(a, b);
}

/* FlashAttention-2 order with everything in registers: lane l of a warp
 * holds rows g = l/4 and g + 8 of its 16, columns 2(l%4) and 2(l%4)+1 of
 * every accumulator tile (the mma.sync m16n8 layout). The score tile's
 * layout is the A operand's, so probabilities feed P.V without shared
 * memory. `hpb` query heads share the block, 128 / hpb rows each. */
template <int HD, typename T>
__global__ void __launch_bounds__(FA_THREADS, HD == 64 ? 2 : 1)
flash_prefill_kernel(struct dy_attention_prefill_desc d, int hpb, const T *q, const T *k, const T *v, T *out)
{
    constexpr int LD = fa_layout<HD>::LD, TILE = fa_layout<HD>::TILE, NT = FA_KEYS / 8, OT = HD / 8;
    extern __shared__ __align__(16) unsigned char smem[];
    __nv_bfloat16 *ks = (__nv_bfloat16 *)smem, *vs = ks + 2 * TILE;
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
    int group = d.heads / d.kv_heads, wph = FA_WARPS / hpb, rows = wph * 16;
    int blocks_x = gridDim.x;
    /* causal: the longest rows first, so the short ones fill the tail */
    int q0 = (d.causal ? blocks_x - 1 - (int)blockIdx.x : (int)blockIdx.x) * rows;
    int kvh = blockIdx.y / (group / hpb);
    int h = kvh * group + (blockIdx.y % (group / hpb)) * hpb + warp / wph;
    int b = blockIdx.z;
    size_t seq0 = (size_t)b * d.seq_len;
    int wrow = q0 + (warp % wph) * 16, row0 = wrow + g, row1 = row0 + 8;

    float o[OT][4];
#pragma unroll
    for (int j = 0; j < OT; j++)
        o[j][0] = o[j][1] = o[j][2] = o[j][3] = 0.0f;
    float m0 = -INFINITY, m1 = -INFINITY, l0 = 0.0f, l1 = 0.0f;
    const float scale = d.scale * 1.4426950408889634f; /* base 2 */
    int key_end = d.causal ? min(d.seq_len, q0 + rows) : d.seq_len;
    int warp_last = min(wrow + 15, d.seq_len - 1);
    const T *kb = k + seq0 * d.kv_stride + (size_t)kvh * HD;
    const T *vb = v + seq0 * d.kv_stride + (size_t)kvh * HD;
    /* the first tiles' loads and the Q rows' go out together */
    typename fa_io<T>::vec pre[fa_loads<HD, T>()], pre_v[fa_loads<HD, T>()];
    fetch_tile<HD>(pre, kb, d.kv_stride, 0, d.seq_len);
    fetch_tile<HD>(pre_v, vb, d.kv_stride, 0, d.seq_len);
    /* the warp's Q rows as A fragments, one per 16 of the head dim */
    uint32_t qa[HD / 16][4];
    {
        const T *qr0 = q + (seq0 + row0) * d.q_stride + (size_t)h * HD + 2 * t;
        const T *qr1 = qr0 + (size_t)8 * d.q_stride;
        bool in0 = row0 < d.seq_len, in1 = row1 < d.seq_len;
#pragma unroll
        for (int c = 0; c < HD / 16; c++) {
            qa[c][0] = load_pair(qr0 + c * 16, in0);
            qa[c][1] = load_pair(qr1 + c * 16, in1);
            qa[c][2] = load_pair(qr0 + c * 16 + 8, in0);
            qa[c][3] = load_pair(qr1 + c * 16 + 8, in1);
        }
    }
    store_tile<HD, T>(ks, pre);
    store_tile<HD, T>(vs, pre_v);
    __syncthreads();
    /* ldmatrix row addresses: matrix lane / 8, row lane % 8 */
    int mi = lane / 8, mr = lane % 8;
    for (int k0 = 0, stage = 0; k0 < key_end; k0 += FA_KEYS, stage ^= 1) {
        const __nv_bfloat16 *kt = ks + stage * TILE, *vt = vs + stage * TILE;
        bool next = k0 + FA_KEYS < key_end;
        /* a warp whose rows all precede the tile (causal), or all lie
         * past the sequence's end (bidirectional: a short sequence's last
         * block, as a ViT's 197 tokens), only helps load */
        bool live = d.causal ? k0 <= warp_last : wrow < d.seq_len;
        if (next)
            fetch_tile<HD>(pre, kb, d.kv_stride, k0 + FA_KEYS, d.seq_len);
        float s[NT][4];
        if (live) {
#pragma unroll
            for (int n = 0; n < NT; n++)
                s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.0f;
            /* key tiles innermost: consecutive mma.syncs feed different
             * accumulators instead of waiting on one another */
#pragma unroll
            for (int c = 0; c < HD / 16; c += 2)
#pragma unroll
                for (int n = 0; n < NT; n++) {
                    uint32_t kf[4];
                    ldsm4(kf, kt + (n * 8 + mr) * LD + c * 16 + mi * 8);
                    mma16816(s[n], qa[c], kf[0], kf[1]);
                    mma16816(s[n], qa[c + 1], kf[2], kf[3]);
                }
        }
        if (next)
            store_tile<HD, T>(ks + (stage ^ 1) * TILE, pre);
        if (next)
            fetch_tile<HD>(pre, vb, d.kv_stride, k0 + FA_KEYS, d.seq_len);
        if (live) {
            /* mask (only where the tile crosses the diagonal or the end) */
            if (k0 + FA_KEYS > d.seq_len || (d.causal && k0 + FA_KEYS - 1 > wrow)) {
#pragma unroll
                for (int n = 0; n < NT; n++)
#pragma unroll
                    for (int e = 0; e < 4; e++) {
                        int key = k0 + n * 8 + 2 * t + (e & 1), row = e < 2 ? row0 : row1;
                        if (key >= d.seq_len || (d.causal && key > row))
                            s[n][e] = -INFINITY;
                    }
            }
            /* the rows' running maxima, in log2 units of the scaled score
             * (the scale is positive, so the raw maximum is the one) */
            float mx0 = -INFINITY, mx1 = -INFINITY;
#pragma unroll
            for (int n = 0; n < NT; n++) {
                mx0 = fmaxf(mx0, fmaxf(s[n][0], s[n][1]));
                mx1 = fmaxf(mx1, fmaxf(s[n][2], s[n][3]));
            }
            mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 1));
            mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 2));
            mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 1));
            mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 2));
            /* every row has a key in a live warp's first tile (key 0), so
             * the new maxima are finite and exp2(-inf - n) is 0 */
            float n0 = fmaxf(m0, mx0 * scale), n1 = fmaxf(m1, mx1 * scale);
            float c0 = exp2f(m0 - n0), c1 = exp2f(m1 - n1);
            float sum0 = 0.0f, sum1 = 0.0f;
            uint32_t pa[NT / 2][4];
#pragma unroll
            for (int n = 0; n < NT; n++) {
                float p0 = exp2f(fmaf(s[n][0], scale, -n0)), p1 = exp2f(fmaf(s[n][1], scale, -n0));
                float p2 = exp2f(fmaf(s[n][2], scale, -n1)), p3 = exp2f(fmaf(s[n][3], scale, -n1));
                /* round once: the sums and P.V see the same probabilities */
                uint32_t lo = pack_bf16(p0, p1), hi = pack_bf16(p2, p3);
                sum0 += __uint_as_float(lo << 16) + __uint_as_float(lo & 0xffff0000u);
                sum1 += __uint_as_float(hi << 16) + __uint_as_float(hi & 0xffff0000u);
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
            /* rescale only when some row's maximum grew (after the first
             * tiles it seldom does) */
            if (__any_sync(0xffffffffu, c0 != 1.0f || c1 != 1.0f)) {
#pragma unroll
                for (int j = 0; j < OT; j++) {
                    o[j][0] *= c0;
                    o[j][1] *= c0;
                    o[j][2] *= c1;
                    o[j][3] *= c1;
                }
            }
            /* O += P V: V's B fragments are pairs along the key, read
             * transposed: matrices (keys +0/+8) x (dims j, j + 1) */
#pragma unroll
            for (int kk = 0; kk < NT / 2; kk++)
#pragma unroll
                for (int j = 0; j < OT; j += 2) {
                    uint32_t vf[4];
                    ldsm4_t(vf, vt + (kk * 16 + (mi & 1) * 8 + mr) * LD + (j + (mi >> 1)) * 8);
                    mma16816(o[j], pa[kk], vf[0], vf[1]);
                    mma16816(o[j + 1], pa[kk], vf[2], vf[3]);
                }
        }
        if (next)
            store_tile<HD, T>(vs + (stage ^ 1) * TILE, pre);
        __syncthreads();
    }
    float inv0 = l0 > 0.0f ? 1.0f / l0 : 0.0f, inv1 = l1 > 0.0f ? 1.0f / l1 : 0.0f;
#pragma unroll
    for (int j = 0; j < OT; j++) {
        int c = j * 8 + 2 * t;
        if (row0 < d.seq_len)
            store_pair(out + (seq0 + row0) * d.out_stride + (size_t)h * HD + c, o[j][0] * inv0, o[j][1] * inv0);
        if (row1 < d.seq_len)
            store_pair(out + (seq0 + row1) * d.out_stride + (size_t)h * HD + c, o[j][2] * inv1, o[j][3] * inv1);
    }
}

template <int HD, typename T>
static int launch(struct cuda_ctx *c, const struct dy_attention_prefill_desc *d)
{
    const T *q = (const T *)dy_cuda_ptr(d->q), *k = (const T *)dy_cuda_ptr(d->k);
    const T *v = (const T *)dy_cuda_ptr(d->v);
    T *out = (T *)dy_cuda_ptr(d->out);
    size_t bytes = fa_layout<HD>::bytes;
    cudaError_t e = cudaFuncSetAttribute(flash_prefill_kernel<HD, T>,
                                         cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes);
    if (e != cudaSuccess)
        return dy_cuda_fail(c, e, "cudaFuncSetAttribute(flash prefill)");
    int group = d->heads / d->kv_heads, hpb = 1;
    while (hpb * 2 <= FA_MAX_HEADS && group % (hpb * 2) == 0)
        hpb *= 2;
    int rows = FA_WARPS / hpb * 16;
    dim3 grid((unsigned)((d->seq_len + rows - 1) / rows), (unsigned)(d->kv_heads * (group / hpb)),
              (unsigned)d->batch);
    flash_prefill_kernel<HD, T><<<grid, FA_THREADS, bytes, c->stream>>>(*d, hpb, q, k, v, out);
    return dy_cuda_check_launch(c, "flash attention prefill");
}

int dy_cuda_flash_prefill(struct cuda_ctx *c, const struct dy_attention_prefill_desc *d)
{
    const void *q = dy_cuda_ptr(d->q), *k = dy_cuda_ptr(d->k), *v = dy_cuda_ptr(d->v), *out = dy_cuda_ptr(d->out);
    /* 16-byte rows: 4 f32 or 8 bf16 elements */
    int vec = d->dtype == DY_BF16 ? 8 : 4;
    bool fits = d->compute_dtype == DY_BF16 && (d->dtype == DY_F32 || d->dtype == DY_BF16) &&
                (d->head_dim == 64 || d->head_dim == 128) && d->heads % d->kv_heads == 0 &&
                d->q_stride % 2 == 0 && d->kv_stride % vec == 0 && d->out_stride % 2 == 0 &&
                dy_cuda_aligned16(q) && dy_cuda_aligned16(k) && dy_cuda_aligned16(v) && dy_cuda_aligned16(out);
    if (!fits)
        return DY_E_UNSUPPORTED;
#if !DY_NO_SM90A
    int st = dy_cuda_flash_wgmma(c, d);
    if (st != DY_E_UNSUPPORTED)
        return st;
#endif
    if (d->dtype == DY_BF16)
        return d->head_dim == 64 ? launch<64, __nv_bfloat16>(c, d) : launch<128, __nv_bfloat16>(c, d);
    return d->head_dim == 64 ? launch<64, float>(c, d) : launch<128, float>(c, d);
}
#endif
