/* The MoE grouped GEMM on CUDA: C[r, :] = A[a_row(r), :] . B_e^T for the
 * rows r of each expert e in the sorted order (backend.h, gemm_grouped).
 *
 * No path reads the offsets back unless it hands the experts to cuBLAS one
 * by one: each block finds its (expert, rows) tile from the offsets on the
 * device, and the grid is sized for the worst case of the host-known
 * rows and experts; blocks past the last tile leave at once.
 *   - gemv: decode steps (up to a row per expert; up to 4 without the
 *     tensor-core path). A block takes up to M rows of one expert and 8
 *     warps' columns; each warp streams 2 or 4 rows of B_e with 16-byte
 *     loads, 8 in flight per lane, A in f32 as given: bandwidth bound,
 *     every touched expert's weights read once per tile.
 *   - mma (CUDA, f16/bf16 weights): A's rows gathered and rounded to the
 *     weights' dtype once, then 64- or 128-row x 128 tiles of C on the
 *     tensor cores (mma.sync m16n8k16, f32 accumulators) fed by a 3-stage
 *     cp.async ring: one pass over the weights per row tile.
 *   - blas (CUDA, f16/bf16, hundreds of rows per expert): the same gathered
 *     A, the offsets read back, one cublasGemmEx per non-empty expert.
 *   - tiled: everything else (f32 weights, rows not 16-byte aligned, the
 *     HIP build past decode): shared-memory tiles of 64 x 64, f32 FMA.
 * DYNO_CUDA_MOE_GEMM=gemv|mma|blas|tiled forces one path where it applies,
 * for benchmarks and for running the conformance cases through each.
 * Quantized experts: cuda_quant_gemm.cu. */
#include <stdlib.h>
#include <string.h>

#include "cuda_internal.h"
#include "cuda_grouped.h"
#include "cuda_tile.h"

struct gg_args {
    const float *a;
    const int32_t *a_rows; /* NULL: row r of A */
    const void *b;
    float *c;
    const int32_t *offsets;
    int rows, experts, n, k, a_row_div, lda, ldc;
    size_t b_expert_stride; /* elements */
    bool a_vec;             /* A's rows are 16-byte aligned */
    bool swiglu;            /* C's first n/2 columns get silu(gate) * up */
};

/* ---- gemv ---- */
#define GV_WARPS 8

/* Output columns (rows of B_e) per warp, C, and k-steps per batch of
 * loads, U: every batch has 8 16-byte loads in flight per lane. Tiles of
 * one or two rows take 4 columns so that an OLMoE decode step's blocks fit
 * the card in one wave. */
template <int M, int BT> struct gv_shape {
    static constexpr int C = M <= 2 ? 4 : 2;
    static constexpr int U = (BT == DY_F32 ? 4 : 8) / C;
};

/* 8 weights of dtype BT: one 16-byte load, two for f32 */
template <int BT> struct braw {
    uint4 v[BT == DY_F32 ? 2 : 1];
};

template <int BT>
__device__ __forceinline__ void bload(braw<BT> &r, const char *row, int k0)
{
    const uint4 *p = (const uint4 *)(row + (size_t)k0 * (BT == DY_F32 ? 4 : 2));
#pragma unroll
    for (int i = 0; i < (BT == DY_F32 ? 2 : 1); i++)
        r.v[i] = p[i];
}

template <int BT>
__device__ __forceinline__ void bunpack(const braw<BT> &r, float *w)
{
    if constexpr (BT == DY_F32) {
        const float *f = (const float *)r.v;
#pragma unroll
        for (int e = 0; e < 8; e++)
            w[e] = f[e];
    } else {
        const uint16_t *h = (const uint16_t *)r.v;
#pragma unroll
        for (int e = 0; e < 8; e++)
            w[e] = BT == DY_BF16 ? dy_bf16_to_f32(h[e]) : __half2float(*(const __half *)&h[e]);
    }
}

__device__ __forceinline__ void load_a8(const float *p, bool vec, float *x)
{
    if (vec) {
        float4 lo = __ldg((const float4 *)p), hi = __ldg((const float4 *)(p + 4));
        x[0] = lo.x; x[1] = lo.y; x[2] = lo.z; x[3] = lo.w;
        x[4] = hi.x; x[5] = hi.y; x[6] = hi.z; x[7] = hi.w;
    } else {
#pragma unroll
        for (int e = 0; e < 8; e++)
            x[e] = __ldg(p + e);
    }
}

/* The first batch of a warp's weight loads: U k-steps of 8 weights a lane
 * for each of its C rows of B */
template <int BT, int U, int C>
__device__ __forceinline__ void gv_preload(braw<BT> (&raw)[U][C], const char *const (&brow)[C], int k)
{
    constexpr int STEP = DY_WARP * 8;
    int lane = threadIdx.x % DY_WARP;
#pragma unroll
    for (int u = 0; u < U; u++)
        if (lane * 8 + u * STEP < k)
#pragma unroll
            for (int c = 0; c < C; c++)
                bload<BT>(raw[u][c], brow[c], lane * 8 + u * STEP);
}

/* The rest of the stream after gv_preload: each batch's U x C loads are
 * all in flight before the first is used; acc[c][i] += the lane's share of
 * B's row c against A's row i (i < nr), summed over k in order. */
template <int M, int BT, int U, int C>
__device__ __forceinline__ void gv_stream(braw<BT> (&raw)[U][C], const char *const (&brow)[C],
                                          const float *const (&arow)[M], int nr, int k, bool a_vec,
                                          float (&acc)[C][M])
{
    constexpr int STEP = DY_WARP * 8;
    for (int k0 = threadIdx.x % DY_WARP * 8; k0 < k; k0 += U * STEP) {
#pragma unroll
        for (int u = 0; u < U; u++) {
            int kk = k0 + u * STEP;
            if (kk >= k)
                break;
            float w[C][8];
#pragma unroll
            for (int c = 0; c < C; c++)
                bunpack<BT>(raw[u][c], w[c]);
#pragma unroll
            for (int i = 0; i < M; i++) {
                if (i >= nr)
                    break;
                float x[8];
                load_a8(arow[i] + kk, a_vec, x);
#pragma unroll
                for (int c = 0; c < C; c++)
#pragma unroll
                    for (int j = 0; j < 8; j++)
                        acc[c][i] = fmaf(w[c][j], x[j], acc[c][i]);
            }
        }
        int next = k0 + U * STEP;
#pragma unroll
        for (int u = 0; u < U; u++)
            if (next + u * STEP < k)
#pragma unroll
                for (int c = 0; c < C; c++)
                    bload<BT>(raw[u][c], brow[c], next + u * STEP);
    }
}

/* M: rows per block (a compile-time bound; the tile's nr <= M are live).
 * VEC: B_e's rows are 16-byte aligned and k % 8 == 0; otherwise one
 * element per lane per step. */
#if DY_HIP
#define GV_BOUNDS(M) __launch_bounds__(GV_WARPS * DY_WARP)
#else
/* one-row tiles at 4 blocks per SM: an OLMoE decode step's 512 blocks
 * run in one wave */
#define GV_BOUNDS(M) __launch_bounds__(GV_WARPS * DY_WARP, (M) == 1 ? 4 : 2)
#endif

template <int M, int BT, bool VEC>
__global__ void GV_BOUNDS(M) grouped_gemv_kernel(struct gg_args g)
{
    DY_GRID_ENTER();
    __shared__ int tile[3];
    int e, r0, end;
    if (!grouped_tile(g.offsets, g.experts, g.rows, M, blockIdx.y, tile, &e, &r0, &end))
        return;
    int nr = min(M, end - r0);
    int warp = threadIdx.x / DY_WARP, lane = threadIdx.x % DY_WARP;
    constexpr int C = gv_shape<M, BT>::C, U = gv_shape<M, BT>::U, ES = BT == DY_F32 ? 4 : 2;
    /* SwiGLU: a warp's first C/2 rows of B are gate columns, the rest the
     * up columns n/2 on, and it writes C/2 columns of C */
    int out_n = g.swiglu ? g.n / 2 : g.n, out_c = g.swiglu ? C / 2 : C;
    int col0 = (blockIdx.x * GV_WARPS + warp) * out_c;
    if (col0 >= out_n)
        return;
    const char *be = (const char *)g.b + (size_t)e * g.b_expert_stride * ES;
    const char *brow[C];
#pragma unroll
    for (int c = 0; c < C; c++) {
        int part = g.swiglu && c >= C / 2, j = part ? c - C / 2 : c;
        brow[c] = be + ((size_t)part * out_n + min(col0 + j, out_n - 1)) * g.k * ES;
    }
    /* A's rows through a_rows cost a dependent load: the first batch of
     * weight loads goes out before it */
    braw<BT> raw[U][C];
    if constexpr (VEC)
        gv_preload<BT, U, C>(raw, brow, g.k);
    const float *arow[M];
#pragma unroll
    for (int i = 0; i < M; i++) {
        int r = r0 + min(i, nr - 1);
        arow[i] = g.a + (size_t)(g.a_rows ? g.a_rows[r] / g.a_row_div : r) * g.lda;
    }
    float acc[C][M];
#pragma unroll
    for (int c = 0; c < C; c++)
#pragma unroll
        for (int i = 0; i < M; i++)
            acc[c][i] = 0.0f;
    if constexpr (VEC) {
        gv_stream<M, BT, U, C>(raw, brow, arow, nr, g.k, g.a_vec, acc);
    } else {
        for (int kk = lane; kk < g.k; kk += DY_WARP) {
            float w[C];
#pragma unroll
            for (int c = 0; c < C; c++)
                w[c] = dy_load_f32(brow[c], (enum dy_dtype)BT, kk);
#pragma unroll
            for (int i = 0; i < M; i++) {
                if (i >= nr)
                    break;
                float x = __ldg(arow[i] + kk);
#pragma unroll
                for (int c = 0; c < C; c++)
                    acc[c][i] = fmaf(w[c], x, acc[c][i]);
            }
        }
    }
    dy_warp_sum(acc);
    if (lane == 0)
#pragma unroll
        for (int i = 0; i < M; i++) {
            if (i >= nr)
                break;
            float *out = g.c + (size_t)(r0 + i) * g.ldc + col0;
            if (g.swiglu) {
#pragma unroll
                for (int c = 0; c < C / 2; c++)
                    if (col0 + c < out_n)
                        out[c] = dy_silu_mul(acc[c][i], acc[c + C / 2][i]);
            } else {
#pragma unroll
                for (int c = 0; c < C; c++)
                    if (col0 + c < g.n)
                        out[c] = acc[c][i];
            }
        }
}

typedef void (*gv_fn)(struct gg_args);
#define GV_BY_DTYPE(M)                                                                           \
    {                                                                                            \
        { grouped_gemv_kernel<M, DY_F32, false>, grouped_gemv_kernel<M, DY_F32, true> },         \
        { grouped_gemv_kernel<M, DY_F16, false>, grouped_gemv_kernel<M, DY_F16, true> },         \
        { grouped_gemv_kernel<M, DY_BF16, false>, grouped_gemv_kernel<M, DY_BF16, true> },       \
    }
/* [log2 M][dtype][VEC] */
static const gv_fn gv_kernels[4][3][2] = { GV_BY_DTYPE(1), GV_BY_DTYPE(2), GV_BY_DTYPE(4),
                                           GV_BY_DTYPE(8) };

static int grouped_gemv(struct cuda_ctx *c, const struct gg_args *g, enum dy_dtype bt, bool vec_b)
{
    /* rows per block: one where the busy experts average one row (a decode
     * step's top-k experts are distinct), else room for about twice the
     * average; an expert with more rows takes more blocks */
    int busy = g->rows < g->experts ? g->rows : g->experts;
    int avg = (g->rows + busy - 1) / busy, log2m = 0;
    if (avg > 1)
        log2m = avg == 2 ? 2 : 3;
    int m = 1 << log2m, cols = GV_WARPS * (m <= 2 ? gv_shape<1, DY_BF16>::C : gv_shape<8, DY_BF16>::C);
    int out_n = g->swiglu ? g->n / 2 : g->n;
    if (g->swiglu)
        cols /= 2;
    dim3 grid((unsigned)((out_n + cols - 1) / cols), (unsigned)tile_slots(g->rows, g->experts, m));
    dy_launch(c, gv_kernels[log2m][bt][vec_b], grid, GV_WARPS * DY_WARP, 0, *g);
    return dy_cuda_check_launch(c, "gemm_grouped (gemv)");
}

/* ---- scatter: a decode step's down projection and the weighted sum of
 * each token's k outputs into the residual, in one kernel ----
 * A block takes SC_C columns for each of `groups` column groups of one
 * token; warp w takes pair j = w % topk of group w / topk (topk <= 8), its
 * expert found from the offsets in shared memory, and streams SC_C rows of
 * that expert's B as the gemv kernel does (the same lanes' order of sums,
 * so the same dots). The dots meet in shared memory and one thread per
 * column adds them into dst in j order, scatter_add_rows' arithmetic. With
 * routes_settled a block finds its pairs and issues its first weight loads
 * before it waits for the kernel before it (the gate/up one, whose tail
 * they overlap). UB k-steps of loads are in flight per lane (halved for
 * f32), MINB blocks an SM. */
#define SC_C 4
/* one token: its k experts are distinct. At 8 tokens some pairs share an
 * expert, which the gemv tiles read once and this kernel once per pair
 * (H100, batch 8 after 1,024 tokens: Qwen1.5-MoE 9.71 -> 10.04 ms a step) */
#define SC_MAX_TOKENS 1

struct sc_args {
    const float *a;
    const void *b;
    const int32_t *offsets, *position;
    const float *weights;
    float *dst;
    int n, k, experts, lda, topk, dst_stride, groups;
    size_t b_expert_stride; /* elements */
    bool settled;
};

template <int BT, int UB, int MINB>
__global__ void __launch_bounds__(GV_WARPS * DY_WARP, MINB) grouped_scatter_kernel(struct sc_args g)
{
    constexpr int U = BT == DY_F32 ? UB / 2 : UB, ES = BT == DY_F32 ? 4 : 2;
    __shared__ float dots[GV_WARPS][GV_WARPS * SC_C]; /* [j][column of the block] */
    extern __shared__ int offs[];                     /* experts + 1 */
    int warp = threadIdx.x / DY_WARP, lane = threadIdx.x % DY_WARP, t = blockIdx.y;
    int j = warp % g.topk, grp = warp / g.topk, cols = g.groups * SC_C;
    bool active = grp < g.groups;
    int col0 = blockIdx.x * cols + grp * SC_C;
    const char *brow[SC_C];
    braw<BT> raw[U][SC_C];
    int r = 0;
    for (int pass = 0; pass < 2; pass++) {
        /* pass 0 before the wait when the routes are settled, else pass 1 */
        if (pass == 1) {
            DY_GRID_WAIT();
            DY_GRID_RELEASE();
        }
        if ((pass == 0) != g.settled)
            continue;
        for (int e = threadIdx.x; e <= g.experts; e += blockDim.x)
            offs[e] = g.offsets[e];
        __syncthreads();
        if (!active)
            continue;
        r = g.position[(size_t)t * g.topk + j];
        int lo = 0, hi = g.experts - 1; /* the expert holding sorted row r */
        while (lo < hi) {
            int mid = (lo + hi + 1) / 2;
            if (offs[mid] <= r)
                lo = mid;
            else
                hi = mid - 1;
        }
        const char *be = (const char *)g.b + (size_t)lo * g.b_expert_stride * ES;
#pragma unroll
        for (int c = 0; c < SC_C; c++)
            brow[c] = be + (size_t)min(col0 + c, g.n - 1) * g.k * ES;
        gv_preload<BT, U, SC_C>(raw, brow, g.k);
    }
    if (active) {
        const float *arow[1] = { g.a + (size_t)r * g.lda };
        float acc[SC_C][1] = {};
        gv_stream<1, BT, U, SC_C>(raw, brow, arow, 1, g.k, true, acc);
        dy_warp_sum(acc);
        if (lane == 0)
#pragma unroll
            for (int c = 0; c < SC_C; c++)
                dots[j][grp * SC_C + c] = acc[c][0];
    }
    __syncthreads();
    int col = blockIdx.x * cols + threadIdx.x;
    if ((int)threadIdx.x < cols && col < g.n) {
        float *out = g.dst + (size_t)t * g.dst_stride + col, sum = *out;
        for (int q = 0; q < g.topk; q++)
            sum = fmaf(g.weights[(size_t)t * g.topk + q], dots[q][threadIdx.x], sum);
        *out = sum;
    }
}

/* DY_E_UNSUPPORTED, having done nothing, outside decode sizes */
static int grouped_scatter(struct cuda_ctx *c, const struct dy_gemm_grouped_desc *d, const struct gg_args *g,
                           bool vec_b)
{
    const struct dy_grouped_scatter *sc = &d->scatter;
    if (sc->tokens > SC_MAX_TOKENS || sc->k > GV_WARPS || !vec_b || !g->a_vec || d->a_rows.h ||
        (d->b_dtype != DY_F32 && d->b_dtype != DY_F16 && d->b_dtype != DY_BF16))
        return DY_E_UNSUPPORTED;
    struct sc_args a;
    a.a = g->a;
    a.b = g->b;
    a.offsets = g->offsets;
    a.position = (const int32_t *)dy_cuda_ptr(sc->position);
    a.weights = (const float *)dy_cuda_ptr(sc->weights);
    a.dst = (float *)dy_cuda_ptr(sc->dst);
    a.n = d->n;
    a.k = d->k;
    a.experts = d->experts;
    a.lda = d->lda;
    a.topk = sc->k;
    a.dst_stride = sc->dst_stride;
    a.groups = GV_WARPS / sc->k;
    a.b_expert_stride = d->b_expert_stride;
    a.settled = d->routes_settled && c->pdl;
    int cols = a.groups * SC_C;
    dim3 grid((unsigned)((d->n + cols - 1) / cols), (unsigned)sc->tokens);
    /* every block resident at once: four k-steps of loads ahead at two
     * blocks an SM where the grid fits that, else two at four (H100, batch
     * 1: OLMoE's 512 blocks 1.361 -> 1.316 ms a step with the second;
     * Qwen1.5-MoE's 256 2.50 with the first, 2.57 with the second).
     * DYNO_CUDA_SCATTER=1|2 forces one. */
    bool v2 = c->scatter_variant ? c->scatter_variant == 2 : grid.x * grid.y > 2u * (unsigned)c->sm_count;
    void (*kernel)(struct sc_args) =
        v2 ? (d->b_dtype == DY_F32   ? grouped_scatter_kernel<DY_F32, 2, 4>
              : d->b_dtype == DY_F16 ? grouped_scatter_kernel<DY_F16, 2, 4>
                                     : grouped_scatter_kernel<DY_BF16, 2, 4>)
           : (d->b_dtype == DY_F32   ? grouped_scatter_kernel<DY_F32, 4, 2>
              : d->b_dtype == DY_F16 ? grouped_scatter_kernel<DY_F16, 4, 2>
                                     : grouped_scatter_kernel<DY_BF16, 4, 2>);
    dy_launch(c, kernel, grid, GV_WARPS * DY_WARP, ((size_t)d->experts + 1) * sizeof(int), a);
    return dy_cuda_check_launch(c, "gemm_grouped (with the scatter)");
}

/* ---- tiled: as cuda_gemm.cu's portable kernel, A's rows gathered ---- */
#define GT_TILE TILE_M
#define GT_K TILE_K
#define GT_THREADS TILE_THREADS

__global__ void __launch_bounds__(GT_THREADS)
grouped_tiled_kernel(struct gg_args g, enum dy_dtype bt)
{
    __shared__ float as[GT_K][GT_TILE + 1], bs[GT_K][GT_TILE + 1];
    __shared__ int tile[3], a_row[GT_TILE];
    int e, r0, end;
    if (!grouped_tile(g.offsets, g.experts, g.rows, GT_TILE, blockIdx.y, tile, &e, &r0, &end))
        return;
    int nr = min(GT_TILE, end - r0);
    for (int i = threadIdx.x; i < GT_TILE; i += blockDim.x)
        a_row[i] = i >= nr ? -1 : g.a_rows ? g.a_rows[r0 + i] / g.a_row_div : r0 + i;
    __syncthreads();
    const void *be = (const char *)g.b + (size_t)e * g.b_expert_stride * dy_dtype_size(bt);
    int tx = threadIdx.x % 16, ty = threadIdx.x / 16, col0 = blockIdx.x * GT_TILE;
    float acc[4][4] = {};
    for (int k0 = 0; k0 < g.k; k0 += GT_K) {
        for (int idx = threadIdx.x; idx < GT_TILE * GT_K; idx += GT_THREADS) {
            int r = idx / GT_K, kk = idx % GT_K, ar = a_row[r];
            bool in_k = k0 + kk < g.k;
            as[kk][r] = in_k && ar >= 0 ? g.a[(size_t)ar * g.lda + k0 + kk] : 0.0f;
            bs[kk][r] = in_k && col0 + r < g.n
                            ? dy_load_f32(be, bt, (size_t)(col0 + r) * g.k + k0 + kk) : 0.0f;
        }
        __syncthreads();
        tile_accumulate(as, bs, acc, tx, ty);
        __syncthreads(); /* the slice is no longer read */
    }
#pragma unroll
    for (int i = 0; i < 4; i++) {
        int r = ty + 16 * i;
#pragma unroll
        for (int j = 0; j < 4; j++) {
            int col = col0 + tx + 16 * j;
            if (r < nr && col < g.n)
                g.c[(size_t)(r0 + r) * g.ldc + col] = acc[i][j];
        }
    }
}

static int grouped_tiled(struct cuda_ctx *c, const struct gg_args *g, enum dy_dtype bt)
{
    dim3 grid((unsigned)((g->n + GT_TILE - 1) / GT_TILE), (unsigned)tile_slots(g->rows, g->experts, GT_TILE));
    grouped_tiled_kernel<<<grid, GT_THREADS, 0, c->stream>>>(*g, bt);
    return dy_cuda_check_launch(c, "gemm_grouped (tiled)");
}

#if !DY_HIP
/* ---- gathered A in the weights' dtype (mma and blas) ---- */
template <bool F16>
__global__ void gather_a16_kernel(struct gg_args g, uint16_t *out)
{
    int chunks = g.k / 8;
    size_t total = (size_t)g.rows * chunks;
    for (size_t idx = blockIdx.x * (size_t)blockDim.x + threadIdx.x; idx < total;
         idx += (size_t)gridDim.x * blockDim.x) {
        int r = (int)(idx / chunks), k0 = (int)(idx % chunks) * 8;
        const float *src = g.a + (size_t)(g.a_rows ? g.a_rows[r] / g.a_row_div : r) * g.lda + k0;
        uint4 packed;
        uint16_t *h = (uint16_t *)&packed;
#pragma unroll
        for (int e = 0; e < 8; e++)
            h[e] = F16 ? dy_f32_to_f16(src[e]) : dy_f32_to_bf16(src[e]);
        *(uint4 *)(out + (size_t)r * g.k + k0) = packed;
    }
}

static int gather_a16(struct cuda_ctx *c, const struct gg_args *g, enum dy_dtype bt, uint16_t **a16)
{
    int st = dy_cuda_reserve(c, &c->scratch, &c->scratch_size, (size_t)g->rows * g->k * 2);
    if (st != DY_OK)
        return st;
    *a16 = (uint16_t *)c->scratch;
    size_t chunks = (size_t)g->rows * (g->k / 8);
    size_t blocks = (chunks + 255) / 256;
    unsigned grid = (unsigned)(blocks < 65535u * 16 ? blocks : 65535u * 16);
    if (bt == DY_F16)
        gather_a16_kernel<true><<<grid, 256, 0, c->stream>>>(*g, *a16);
    else
        gather_a16_kernel<false><<<grid, 256, 0, c->stream>>>(*g, *a16);
    return dy_cuda_check_launch(c, "gemm_grouped (gather)");
}

/* ---- mma: BM x 128 tiles of C, warps of 32 x 64 ----
 * BM = 64 (4 warps) where experts have few rows, as at prefill of a few
 * hundred tokens: the weights are the traffic and half-empty tiles cost
 * only tensor-core time; BM = 128 (8 warps) where they have more, so each
 * B tile in shared memory serves twice the rows. */
#define MM_BN 128
#define MM_BK 64
#define MM_STAGES 3
#define MM_LD (MM_BK + 8) /* padded rows: ldmatrix's 8 row reads hit 8 bank groups */
#define MM_THREADS(BM) ((BM) * 2)
#define MM_SMEM(BM) ((size_t)MM_STAGES * ((BM) + MM_BN) * MM_LD * 2)

static __device__ __forceinline__ unsigned smem_addr(const void *p)
{
    return (unsigned)__cvta_generic_to_shared(p);
}

/* 16 bytes global -> shared, zero-filled when !valid */
static __device__ __forceinline__ void cp_async16(void *dst, const void *src, bool valid)
{
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_addr(dst)), "l"(src),
                 "r"(valid ? 16 : 0));
}

static __device__ __forceinline__ void cp_async_commit()
{
    asm volatile("cp.async.commit_group;\n" ::);
}

template <int N> static __device__ __forceinline__ void cp_async_wait()
{
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

static __device__ __forceinline__ void ldmatrix_x4(uint32_t *r, const uint16_t *p)
{
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(smem_addr(p)));
}

template <bool F16>
static __device__ __forceinline__ void mma16816(float *d, const uint32_t *a, uint32_t b0, uint32_t b1)
{
    if constexpr (F16)
        asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 "
                     "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
                     : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                     : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
    else
        asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
                     "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
                     : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                     : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

/* One k-slice of the tile's A rows [r0, end) and B_e rows [n0, n) into a
 * stage; what lies outside is zero-filled. */
template <int BM>
static __device__ __forceinline__ void mm_load_stage(uint16_t *at, uint16_t *bt, const uint16_t *a16,
                                                     const uint16_t *be, int r0, int end, int n0,
                                                     int n, int k, int k0)
{
    constexpr int CHUNKS = MM_BK / 8;
#pragma unroll
    for (int j = 0; j < BM * CHUNKS / MM_THREADS(BM); j++) {
        int i = threadIdx.x + j * MM_THREADS(BM), r = i / CHUNKS, kk = k0 + (i % CHUNKS) * 8;
        bool ok = r0 + r < end && kk < k;
        cp_async16(at + r * MM_LD + (i % CHUNKS) * 8, ok ? a16 + (size_t)(r0 + r) * k + kk : a16, ok);
    }
#pragma unroll
    for (int j = 0; j < MM_BN * CHUNKS / MM_THREADS(BM); j++) {
        int i = threadIdx.x + j * MM_THREADS(BM), r = i / CHUNKS, kk = k0 + (i % CHUNKS) * 8;
        bool ok = n0 + r < n && kk < k;
        cp_async16(bt + r * MM_LD + (i % CHUNKS) * 8, ok ? be + (size_t)(n0 + r) * k + kk : be, ok);
    }
}

template <bool F16, int BM>
__global__ void __launch_bounds__(MM_THREADS(BM), 2)
grouped_mma_kernel(struct gg_args g, const uint16_t *a16)
{
    extern __shared__ __align__(16) unsigned char smem[];
    __shared__ int tile[3];
    int e, r0, end;
    if (!grouped_tile(g.offsets, g.experts, g.rows, BM, blockIdx.y, tile, &e, &r0, &end))
        return;
    uint16_t *as = (uint16_t *)smem, *bs = as + MM_STAGES * BM * MM_LD;
    const uint16_t *be = (const uint16_t *)g.b + (size_t)e * g.b_expert_stride;
    int n0 = blockIdx.x * MM_BN, k = g.k, k_tiles = (k + MM_BK - 1) / MM_BK;
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32, wm = warp / 2, wn = warp % 2;
    float acc[2][8][4];
#pragma unroll
    for (int mi = 0; mi < 2; mi++)
#pragma unroll
        for (int ni = 0; ni < 8; ni++)
            acc[mi][ni][0] = acc[mi][ni][1] = acc[mi][ni][2] = acc[mi][ni][3] = 0.0f;
#pragma unroll
    for (int s = 0; s < MM_STAGES - 1; s++) {
        if (s < k_tiles)
            mm_load_stage<BM>(as + s * BM * MM_LD, bs + s * MM_BN * MM_LD, a16, be, r0, end, n0, g.n, k,
                              s * MM_BK);
        cp_async_commit();
    }
    for (int kt = 0; kt < k_tiles; kt++) {
        /* slice kt has landed and every warp is done with slice kt - 1,
         * whose stage the next load reuses */
        cp_async_wait<MM_STAGES - 2>();
        __syncthreads();
        int next = kt + MM_STAGES - 1;
        if (next < k_tiles)
            mm_load_stage<BM>(as + (next % MM_STAGES) * BM * MM_LD, bs + (next % MM_STAGES) * MM_BN * MM_LD,
                              a16, be, r0, end, n0, g.n, k, next * MM_BK);
        cp_async_commit();
        const uint16_t *at = as + (kt % MM_STAGES) * BM * MM_LD + wm * 32 * MM_LD;
        const uint16_t *bt = bs + (kt % MM_STAGES) * MM_BN * MM_LD + wn * 64 * MM_LD;
#pragma unroll
        for (int ks = 0; ks < MM_BK / 16; ks++) {
            uint32_t af[2][4], bf[8][2];
#pragma unroll
            for (int mi = 0; mi < 2; mi++)
                ldmatrix_x4(af[mi], at + (mi * 16 + lane % 16) * MM_LD + ks * 16 + (lane / 16) * 8);
#pragma unroll
            for (int nj = 0; nj < 4; nj++) {
                uint32_t r[4];
                ldmatrix_x4(r, bt + (nj * 16 + (lane / 16) * 8 + lane % 8) * MM_LD + ks * 16 +
                                   (lane / 8 % 2) * 8);
                bf[2 * nj][0] = r[0];
                bf[2 * nj][1] = r[1];
                bf[2 * nj + 1][0] = r[2];
                bf[2 * nj + 1][1] = r[3];
            }
#pragma unroll
            for (int mi = 0; mi < 2; mi++)
#pragma unroll
                for (int ni = 0; ni < 8; ni++)
                    mma16816<F16>(acc[mi][ni], af[mi], bf[ni][0], bf[ni][1]);
        }
    }
    cp_async_wait<0>();
    /* lane holds rows g and g + 8, columns 2t and 2t + 1 of each 16 x 8 tile */
    int g8 = lane / 4, t4 = lane % 4;
#pragma unroll
    for (int mi = 0; mi < 2; mi++)
#pragma unroll
        for (int ni = 0; ni < 8; ni++)
#pragma unroll
            for (int h = 0; h < 2; h++) {
                int row = r0 + wm * 32 + mi * 16 + g8 + h * 8, col = n0 + wn * 64 + ni * 8 + 2 * t4;
                if (row >= end)
                    continue;
                float *dst = g.c + (size_t)row * g.ldc + col;
                if (col < g.n)
                    dst[0] = acc[mi][ni][2 * h];
                if (col + 1 < g.n)
                    dst[1] = acc[mi][ni][2 * h + 1];
            }
}

static int grouped_mma(struct cuda_ctx *c, const struct gg_args *g, enum dy_dtype bt)
{
    uint16_t *a16;
    int st = gather_a16(c, g, bt, &a16);
    if (st != DY_OK)
        return st;
    /* more than 48 rows per busy expert: one 128-row tile beats two of 64 */
    int busy = g->rows < g->experts ? g->rows : g->experts, bm = g->rows > 48 * busy ? 128 : 64;
    void (*kernel)(struct gg_args, const uint16_t *) =
        bm == 128 ? (bt == DY_F16 ? grouped_mma_kernel<true, 128> : grouped_mma_kernel<false, 128>)
                  : (bt == DY_F16 ? grouped_mma_kernel<true, 64> : grouped_mma_kernel<false, 64>);
    cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         (int)MM_SMEM(bm));
    if (e != cudaSuccess)
        return dy_cuda_fail(c, e, "cudaFuncSetAttribute(gemm_grouped)");
    dim3 grid((unsigned)((g->n + MM_BN - 1) / MM_BN), (unsigned)tile_slots(g->rows, g->experts, bm));
    kernel<<<grid, MM_THREADS(bm), MM_SMEM(bm), c->stream>>>(*g, a16);
    return dy_cuda_check_launch(c, "gemm_grouped (mma)");
}
#endif

#if DY_GPU_BLAS
static int grouped_blas(struct cuda_ctx *c, const struct gg_args *g, enum dy_dtype bt)
{
    uint16_t *a16;
    int st = gather_a16(c, g, bt, &a16);
    if (st != DY_OK)
        return st;
    int32_t *offsets = (int32_t *)malloc(((size_t)g->experts + 1) * sizeof *offsets);
    if (!offsets)
        return DY_E_NOMEM;
    cudaError_t e = cudaMemcpyAsync(offsets, g->offsets, ((size_t)g->experts + 1) * sizeof *offsets,
                                    cudaMemcpyDeviceToHost, c->stream);
    if (e == cudaSuccess)
        e = cudaStreamSynchronize(c->stream);
    if (e != cudaSuccess) {
        free(offsets);
        return dy_cuda_fail(c, e, "gemm_grouped: reading the offsets");
    }
    cudaDataType_t type = bt == DY_F16 ? CUDA_R_16F : CUDA_R_16BF;
    const float one = 1.0f, zero = 0.0f;
    st = DY_OK;
    for (int x = 0; x < g->experts && st == DY_OK; x++) {
        int r0 = offsets[x] < g->rows ? offsets[x] : g->rows;
        int r1 = offsets[x + 1] < g->rows ? offsets[x + 1] : g->rows;
        if (r1 <= r0)
            continue;
        /* row-major C = A B^T is column-major C^T = B A^T */
        cublasStatus_t s = cublasGemmEx(
            c->blas, CUBLAS_OP_T, CUBLAS_OP_N, g->n, r1 - r0, g->k, &one,
            (const uint16_t *)g->b + (size_t)x * g->b_expert_stride, type, g->k, a16 + (size_t)r0 * g->k,
            type, g->k, &zero, g->c + (size_t)r0 * g->ldc, CUDA_R_32F, g->ldc, CUBLAS_COMPUTE_32F,
            CUBLAS_GEMM_DEFAULT);
        if (s != CUBLAS_STATUS_SUCCESS) {
            snprintf(c->err, sizeof c->err, "cublasGemmEx (expert %d): %s", x, cublasGetStatusString(s));
            st = s == CUBLAS_STATUS_ALLOC_FAILED ? DY_E_NOMEM : DY_E_DEVICE;
        }
    }
    free(offsets);
    return st;
}
#endif

/* Average rows per expert from which one cuBLAS call per expert beats the
 * single mma launch. */
#define BLAS_MIN_ROWS_PER_EXPERT 256

enum gg_path { GG_GEMV, GG_TILED, GG_MMA, GG_BLAS };

static enum gg_path choose_path(const struct dy_gemm_grouped_desc *d, bool vec_b)
{
    bool half = d->b_dtype == DY_F16 || d->b_dtype == DY_BF16;
    bool mma_ok = !DY_HIP && half && vec_b;
    bool blas_ok = DY_GPU_BLAS && half && d->k % 8 == 0;
    const char *force = getenv("DYNO_CUDA_MOE_GEMM");
    if (force) {
        if (!strcmp(force, "gemv"))
            return GG_GEMV;
        if (!strcmp(force, "tiled"))
            return GG_TILED;
        if (!strcmp(force, "mma") && mma_ok)
            return GG_MMA;
        if (!strcmp(force, "blas") && blas_ok)
            return GG_BLAS;
    }
    /* the GEMV streams each busy expert once per tile of up to 8 rows on
     * the CUDA cores; past about a row per expert the tensor cores' one
     * pass over the weights is faster (bench/cuda/moe_ops_bench.c) */
    if (d->rows <= (mma_ok ? 1 : 4) * d->experts)
        return GG_GEMV;
    if (blas_ok && d->rows >= BLAS_MIN_ROWS_PER_EXPERT * d->experts)
        return GG_BLAS;
    return mma_ok ? GG_MMA : GG_TILED;
}

int dy_cuda_gemm_grouped(void *ctx, const struct dy_gemm_grouped_desc *d)
{
    struct cuda_ctx *c = (struct cuda_ctx *)ctx;
    if (d->rows < 0 || d->experts < 1 || d->n <= 0 || d->k <= 0 || (d->a_rows.h && d->a_row_div < 1)) {
        snprintf(c->err, sizeof c->err, "gemm_grouped: rows %d, experts %d, n %d, k %d, a_row_div %d",
                 d->rows, d->experts, d->n, d->k, d->a_row_div);
        return DY_E_INVALID;
    }
    bool fused = d->act != DY_ACT_NONE || d->scatter.dst.h;
    unsigned part = d->scatter.dst.h ? FUSE_SCATTER : FUSE_SWIGLU;
    if (fused && (!(c->fuse_moe & part) || dy_dtype_quantized(d->b_dtype)))
        return DY_E_UNSUPPORTED; /* dy_gemm_grouped composes */
    if (dy_dtype_quantized(d->b_dtype))
        return dy_cuda_gemm_grouped_quant(c, d);
    if (d->b_dtype != DY_F32 && d->b_dtype != DY_F16 && d->b_dtype != DY_BF16) {
        snprintf(c->err, sizeof c->err, "gemm_grouped: B must be f32, f16 or bf16");
        return DY_E_UNSUPPORTED;
    }
    if (d->rows == 0) /* a scatter of no pairs has no tokens */
        return DY_OK;
    struct gg_args g;
    g.a = (const float *)dy_cuda_ptr(d->a);
    g.a_rows = d->a_rows.h ? (const int32_t *)dy_cuda_ptr(d->a_rows) : NULL;
    g.b = dy_cuda_ptr(d->b);
    g.c = (float *)dy_cuda_ptr(d->c);
    g.offsets = (const int32_t *)dy_cuda_ptr(d->offsets);
    g.rows = d->rows;
    g.experts = d->experts;
    g.n = d->n;
    g.k = d->k;
    g.a_row_div = d->a_row_div;
    g.lda = d->lda;
    g.ldc = d->ldc;
    g.b_expert_stride = d->b_expert_stride;
    g.a_vec = d->lda % 4 == 0 && dy_cuda_aligned16(g.a);
    size_t esize = dy_dtype_size(d->b_dtype);
    bool vec_b = d->k % 8 == 0 && dy_cuda_aligned16(g.b) && d->b_expert_stride * esize % 16 == 0;
    g.swiglu = d->act == DY_ACT_SWIGLU;
    enum gg_path path = choose_path(d, vec_b);
    if (d->scatter.dst.h)
        return path == GG_GEMV ? grouped_scatter(c, d, &g, vec_b) : DY_E_UNSUPPORTED;
    if (g.swiglu && path != GG_GEMV)
        return DY_E_UNSUPPORTED;
    switch (path) {
    case GG_GEMV:
        return grouped_gemv(c, &g, d->b_dtype, vec_b);
#if !DY_HIP
    case GG_MMA:
        return grouped_mma(c, &g, d->b_dtype);
#endif
#if DY_GPU_BLAS
    case GG_BLAS:
        return grouped_blas(c, &g, d->b_dtype);
#endif
    default:
        return grouped_tiled(c, &g, d->b_dtype);
    }
}
