/* MoE routing on CUDA: the router's softmax and top-k, the stable counting
 * sort of token-expert pairs, and the weighted gather-add of the experts'
 * output rows. The grouped GEMM between them is in cuda_moe_gemm.cu.
 * All three are small next to the expert GEMMs; what matters is that a
 * decode step pays one launch each and no host round trip, and that
 * moe_sort is bit-identical to cpu-ref (integer work only). */
#include <math.h>

#include "cuda_internal.h"

/* ---- softmax_topk: one warp per token ----
 * A lane holds experts lane + i * DY_WARP in registers (all its loads in
 * flight at once) and marks the taken ones in a 32-bit mask; the k rounds
 * of the warp's argmax read no memory, lane j keeps the j-th choice, and
 * the first k lanes write them at once (a decode step's chain of
 * dependent loads and stores was most of this kernel's time). With the
 * warp-shuffle scan below, H200, batch 1 after 1,024 tokens, output tok/s
 * against the previous kernels in the same call: OLMoE-1B-7B 742.8 ->
 * 749.7, Qwen1.5-MoE-A2.7B 402.4 -> 405.6. */
#define TOPK_WARPS 4
#define TOPK_PER_LANE 32
#define TOPK_MAX_EXPERTS (TOPK_PER_LANE * DY_WARP)

/* token t's choices, by one warp */
static __device__ void topk_row(const struct dy_softmax_topk_desc &d, const float *logits, int32_t *ids,
                                float *weights, int t, int lane)
{
    const float *row = logits + (size_t)t * d.stride;
    /* the loops stop after the `per` slots a lane has (two at 64 experts) */
    int per = (d.experts + DY_WARP - 1) / DY_WARP;
    float v[TOPK_PER_LANE], mx = -INFINITY;
#pragma unroll
    for (int i = 0; i < TOPK_PER_LANE; i++) {
        if (i >= per)
            break;
        int e = lane + i * DY_WARP;
        v[i] = e < d.experts ? row[e] : -INFINITY;
        mx = fmaxf(mx, v[i]);
    }
    for (int o = DY_WARP / 2; o > 0; o >>= 1)
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
    float sum = 0.0f;
#pragma unroll
    for (int i = 0; i < TOPK_PER_LANE; i++) {
        if (i >= per)
            break;
        if (lane + i * DY_WARP < d.experts)
            sum += expf(v[i] - mx);
    }
    for (int o = DY_WARP / 2; o > 0; o >>= 1)
        sum += __shfl_xor_sync(0xffffffffu, sum, o);
    unsigned taken = 0;
    float kept = 0.0f, mine_p = 0.0f;
    int mine = 0;
    for (int j = 0; j < d.k; j++) {
        /* the lane's best untaken expert, then the warp's: larger logit,
         * on a tie the lower index (-1: the lane has none left) */
        float best_v = 0.0f;
        int best = -1;
#pragma unroll
        for (int i = 0; i < TOPK_PER_LANE; i++) {
            if (i >= per)
                break;
            int e = lane + i * DY_WARP;
            if (e < d.experts && !(taken >> i & 1u) && (best < 0 || v[i] > best_v)) {
                best_v = v[i];
                best = e;
            }
        }
        for (int o = DY_WARP / 2; o > 0; o >>= 1) {
            float ov = __shfl_xor_sync(0xffffffffu, best_v, o);
            int oi = __shfl_xor_sync(0xffffffffu, best, o);
            if (oi >= 0 && (best < 0 || ov > best_v || (ov == best_v && oi < best))) {
                best_v = ov;
                best = oi;
            }
        }
        if (best % DY_WARP == lane)
            taken |= 1u << (best / DY_WARP);
        float p = expf(best_v - mx) / sum;
        kept += p;
        if (j == lane) {
            mine = best;
            mine_p = p;
        }
        /* choices past the warp's lanes (k > 32) go out as they come */
        if (j >= DY_WARP && lane == 0) {
            ids[(size_t)t * d.k + j] = best;
            weights[(size_t)t * d.k + j] = p;
        }
    }
    if (lane < d.k) {
        ids[(size_t)t * d.k + lane] = mine;
        weights[(size_t)t * d.k + lane] = d.renormalize ? mine_p / kept : mine_p;
    }
    if (d.renormalize && lane == 0)
        for (int j = DY_WARP; j < d.k; j++)
            weights[(size_t)t * d.k + j] /= kept;
}

__global__ void __launch_bounds__(TOPK_WARPS * DY_WARP)
softmax_topk_kernel(struct dy_softmax_topk_desc d, const float *logits, int32_t *ids, float *weights)
{
    DY_GRID_ENTER();
    int t = blockIdx.x * TOPK_WARPS + threadIdx.x / DY_WARP;
    if (t < d.tokens)
        topk_row(d, logits, ids, weights, t, threadIdx.x % DY_WARP);
}


/* ---- moe_sort: a stable counting sort ----
 * Counts are order-free (shared-memory atomics); the order comes from each
 * pair's rank among the equal ids before it in its chunk of SORT_THREADS
 * pairs, chunks taken in order. Up to SORT_ONE_BLOCK_MAX pairs (a decode
 * step of up to 64 sequences at top-8) one block does it all in one launch;
 * more pairs are cut into tiles: per-tile counts, one block scans them into
 * each tile's start per expert, then every tile places its pairs. */
#define SORT_THREADS 256
#define SORT_ONE_BLOCK_MAX 512
#define SORT_TILE 512
#define SORT_MAX_EXPERTS (12 * 1024) /* counts in 48 KB of shared memory */

/* Inclusive prefix sum of one value per thread over the block (whole
 * warps): each warp's by shuffles, then the warps' totals through `scan`
 * (blockDim.x ints), four barriers in all. Every thread gets its own sum,
 * and scan[blockDim.x - 1] is the block's total until the next call. */
static __device__ __forceinline__ int block_inclusive_scan(int v, int *scan)
{
    int lane = threadIdx.x % DY_WARP, warp = threadIdx.x / DY_WARP;
    for (int off = 1; off < DY_WARP; off <<= 1) {
        int up = __shfl_up_sync(0xffffffffu, v, off);
        if (lane >= off)
            v += up;
    }
    __syncthreads(); /* earlier readers of scan are done */
    if (lane == DY_WARP - 1)
        scan[warp] = v;
    __syncthreads();
    for (int w = 0; w < warp; w++)
        v += scan[w];
    __syncthreads(); /* every warp has read the totals */
    if ((int)threadIdx.x == (int)blockDim.x - 1)
        scan[blockDim.x - 1] = v;
    __syncthreads();
    return v;
}

/* data[0..n) becomes its exclusive prefix sum; returns the total. Block-wide. */
static __device__ int block_exclusive_scan_array(int *data, int n, int *scan)
{
    int carry = 0;
    for (int base = 0; base < n; base += blockDim.x) {
        int i = base + threadIdx.x;
        int v = i < n ? data[i] : 0;
        int incl = block_inclusive_scan(v, scan);
        if (i < n)
            data[i] = carry + incl - v;
        carry += scan[blockDim.x - 1];
    }
    __syncthreads();
    return carry;
}

/* Places pairs [begin, end) in order: cursor[e] is expert e's next sorted
 * row for this range. Block-wide; chunk holds blockDim.x ids, 16-byte
 * aligned. */
static __device__ void rank_scatter(const int32_t *ids, int begin, int end, int experts, int *cursor,
                             int *chunk, int32_t *sorted, int32_t *position)
{
    for (int base = begin; base < end; base += blockDim.x) {
        int p = base + threadIdx.x;
        int e = p < end ? ids[p] : -1;
        bool valid = (unsigned)e < (unsigned)experts;
        __syncthreads(); /* the previous chunk's reads and cursor updates are done */
        chunk[threadIdx.x] = valid ? e : -1;
        __syncthreads();
        if (valid) {
            int rank = 0, q = 0;
            for (; q + 4 <= (int)threadIdx.x; q += 4) {
                int4 v = *(const int4 *)(chunk + q);
                rank += (v.x == e) + (v.y == e) + (v.z == e) + (v.w == e);
            }
            for (; q < (int)threadIdx.x; q++)
                rank += chunk[q] == e;
            int r = cursor[e] + rank;
            sorted[r] = p;
            position[p] = r;
        }
        __syncthreads();
        if (valid)
            atomicAdd(&cursor[e], 1);
    }
}

/* The whole sort by one block: cursor holds `experts` ints (dynamic
 * shared memory). */
static __device__ void sort_one_block(const int32_t *ids, int pairs, int experts, int32_t *offsets,
                                      int32_t *sorted, int32_t *position, int *cursor)
{
    __shared__ __align__(16) int chunk[SORT_THREADS];
    __shared__ int scan[SORT_THREADS];
    for (int e = threadIdx.x; e < experts; e += blockDim.x)
        cursor[e] = 0;
    __syncthreads();
    for (int p = threadIdx.x; p < pairs; p += blockDim.x) {
        int e = ids[p];
        if ((unsigned)e < (unsigned)experts)
            atomicAdd(&cursor[e], 1);
    }
    __syncthreads();
    int total = block_exclusive_scan_array(cursor, experts, scan);
    for (int e = threadIdx.x; e <= experts; e += blockDim.x)
        offsets[e] = e < experts ? cursor[e] : total;
    rank_scatter(ids, 0, pairs, experts, cursor, chunk, sorted, position);
}

__global__ void __launch_bounds__(SORT_THREADS)
moe_sort_one_block_kernel(const int32_t *ids, int pairs, int experts, int32_t *offsets,
                          int32_t *sorted, int32_t *position)
{
    DY_GRID_ENTER();
    extern __shared__ int cursor[];
    sort_one_block(ids, pairs, experts, offsets, sorted, position, cursor);
}

/* A decode step's routing in one launch: each warp picks its tokens'
 * experts, then the block sorts the pairs it has just written (its own
 * global stores, visible to it after the barrier). */
#define TOPK_SORT_MAX_TOKENS 16
__global__ void __launch_bounds__(SORT_THREADS)
topk_sort_kernel(struct dy_softmax_topk_desc d, const float *logits, int32_t *ids, float *weights,
                 int32_t *offsets, int32_t *sorted, int32_t *position)
{
    DY_GRID_ENTER();
    extern __shared__ int cursor[];
    for (int t = threadIdx.x / DY_WARP; t < d.tokens; t += SORT_THREADS / DY_WARP)
        topk_row(d, logits, ids, weights, t, threadIdx.x % DY_WARP);
    __syncthreads();
    sort_one_block(ids, d.tokens * d.k, d.experts, offsets, sorted, position, cursor);
}

/* tile_counts is expert-major: [experts][tiles] */
__global__ void __launch_bounds__(SORT_THREADS)
moe_sort_count_kernel(const int32_t *ids, int pairs, int experts, int32_t *tile_counts)
{
    extern __shared__ int hist[];
    int begin = blockIdx.x * SORT_TILE, end = min(pairs, begin + SORT_TILE);
    for (int e = threadIdx.x; e < experts; e += blockDim.x)
        hist[e] = 0;
    __syncthreads();
    for (int p = begin + threadIdx.x; p < end; p += blockDim.x) {
        int e = ids[p];
        if ((unsigned)e < (unsigned)experts)
            atomicAdd(&hist[e], 1);
    }
    __syncthreads();
    for (int e = threadIdx.x; e < experts; e += blockDim.x)
        tile_counts[(size_t)e * gridDim.x + blockIdx.x] = hist[e];
}

/* Turns the counts into each tile's first sorted row per expert. */
__global__ void __launch_bounds__(SORT_THREADS)
moe_sort_scan_kernel(int tiles, int experts, int32_t *tile_counts, int32_t *offsets)
{
    extern __shared__ int start[];
    __shared__ int scan[SORT_THREADS];
    for (int e = threadIdx.x; e < experts; e += blockDim.x) {
        int32_t *tc = tile_counts + (size_t)e * tiles;
        int run = 0;
        /* 16 loads in flight, not one round trip per tile */
        for (int t0 = 0; t0 < tiles; t0 += 16) {
            int v[16];
#pragma unroll
            for (int j = 0; j < 16; j++)
                v[j] = t0 + j < tiles ? tc[t0 + j] : 0;
#pragma unroll
            for (int j = 0; j < 16; j++)
                if (t0 + j < tiles) {
                    tc[t0 + j] = run;
                    run += v[j];
                }
        }
        start[e] = run;
    }
    __syncthreads();
    int total = block_exclusive_scan_array(start, experts, scan);
    for (int e = threadIdx.x; e <= experts; e += blockDim.x)
        offsets[e] = e < experts ? start[e] : total;
    for (int e = threadIdx.x; e < experts; e += blockDim.x) {
        int32_t *tc = tile_counts + (size_t)e * tiles;
        for (int t = 0; t < tiles; t++)
            tc[t] += start[e];
    }
}

__global__ void __launch_bounds__(SORT_THREADS)
moe_sort_scatter_kernel(const int32_t *ids, int pairs, int experts, const int32_t *tile_counts,
                        int32_t *sorted, int32_t *position)
{
    extern __shared__ int cursor[];
    __shared__ __align__(16) int chunk[SORT_THREADS];
    for (int e = threadIdx.x; e < experts; e += blockDim.x)
        cursor[e] = tile_counts[(size_t)e * gridDim.x + blockIdx.x];
    int begin = blockIdx.x * SORT_TILE;
    rank_scatter(ids, begin, min(pairs, begin + SORT_TILE), experts, cursor, chunk, sorted, position);
}

/* ---- one decode token's routing in one block: softmax_topk with the sort
 * The top-k by ranks: each expert's thread counts the experts ahead of it
 * (a larger logit, or an equal one of lower index) in shared memory, so
 * the k choices come out at once instead of in k rounds of a warp's
 * argmax; a chosen expert's sorted row is the number of chosen ones of
 * lower index (one token's experts are distinct). H100, batch 1 after
 * 1,024 tokens, against topk_sort_kernel above in the same build: OLMoE-
 * 1B-7B 1.42 -> 1.37 ms a step. */
#define ROUTE_WARPS 8
#define ROUTE_THREADS (ROUTE_WARPS * DY_WARP)
#define ROUTE_MAX_EXPERTS ROUTE_THREADS

/* Over the block: the max or the sum of one value per thread; every thread
 * gets it. red holds ROUTE_WARPS floats. */
template <bool MAX> static __device__ float route_reduce(float v, float *red)
{
    for (int o = DY_WARP / 2; o > 0; o >>= 1) {
        float w = __shfl_xor_sync(0xffffffffu, v, o);
        v = MAX ? fmaxf(v, w) : v + w;
    }
    __syncthreads();
    if (threadIdx.x % DY_WARP == 0)
        red[threadIdx.x / DY_WARP] = v;
    __syncthreads();
    v = red[0];
    for (int w = 1; w < ROUTE_WARPS; w++)
        v = MAX ? fmaxf(v, red[w]) : v + red[w];
    return v;
}

/* thread e's logit is l (-INFINITY past the experts) */
static __device__ void route_rank(const struct dy_softmax_topk_desc &d, float l, int32_t *ids,
                                  float *weights, int32_t *offsets, int32_t *sorted, int32_t *position)
{
    __shared__ float lg[ROUTE_MAX_EXPERTS], red[ROUTE_WARPS];
    __shared__ int below[ROUTE_WARPS];
    int e = threadIdx.x;
    bool live = e < d.experts;
    lg[e] = l;
    float mx = route_reduce<true>(l, red); /* its barriers publish lg too */
    float p = live ? expf(l - mx) : 0.0f;
    float sum = route_reduce<false>(p, red);
    int rank = 0;
    for (int o = 0; o < d.experts; o++) {
        float v = lg[o];
        rank += v > l || (v == l && o < e);
    }
    bool chosen = live && rank < d.k;
    p /= sum;
    float kept = route_reduce<false>(chosen ? p : 0.0f, red);
    /* the sorted row: chosen experts of lower index, by ballots */
    unsigned long long ballot = __ballot_sync(0xffffffffu, chosen);
    int lane = threadIdx.x % DY_WARP, warp = threadIdx.x / DY_WARP;
    if (lane == 0)
        below[warp] = __popcll(ballot);
    __syncthreads();
    int row = __popcll(ballot & ((1ull << lane) - 1ull));
    for (int w = 0; w < warp; w++)
        row += below[w];
    if (live)
        offsets[e] = row;
    if (e == 0)
        offsets[d.experts] = d.k;
    if (chosen) {
        ids[rank] = e;
        weights[rank] = d.renormalize ? p / kept : p;
        sorted[row] = rank;
        position[rank] = row;
    }
}

__global__ void __launch_bounds__(ROUTE_THREADS)
route_one_kernel(struct dy_softmax_topk_desc d, const float *logits, int32_t *ids, float *weights,
                 int32_t *offsets, int32_t *sorted, int32_t *position)
{
    DY_GRID_ENTER();
    route_rank(d, (int)threadIdx.x < d.experts ? logits[threadIdx.x] : -INFINITY, ids, weights, offsets, sorted,
               position);
}

/* ---- a decode token's post-attention norm, router GEMV and routing in
 * one launch (dy_softmax_topk_desc.router) ----
 * Each block takes ROUTER_EXPERTS experts' rows of the router, loaded into
 * registers before the grid wait (settled weights), with the norm's
 * weight. After it, every block normalises the token's row itself (8 KB
 * of x at OLMoE's 2,048), block 0 stores it as xn for the experts' GEMMs,
 * and each block writes its experts' logits. The last block to count
 * itself done (after a fence) ranks them as route_one_kernel does. Three
 * launches of a decode layer become one. */
#define ROUTER_EXPERTS 4

template <enum dy_dtype WT, int V>
__global__ void __launch_bounds__(ROUTE_THREADS)
route_fused_kernel(struct dy_softmax_topk_desc d, const float *x, const void *nw, const void *w, float *xn,
                   float *logits, int32_t *ids, float *weights, int32_t *offsets, int32_t *sorted,
                   int32_t *position, unsigned *count)
{
    __shared__ float red[ROUTER_EXPERTS + 1][ROUTE_WARPS];
    __shared__ bool last;
    int hidden = d.router.hidden, e0 = blockIdx.x * ROUTER_EXPERTS;
    int lane = threadIdx.x % DY_WARP, warp = threadIdx.x / DY_WARP;
    float wf[ROUTER_EXPERTS][V][8], nf[V][8], xv[V][8];
#pragma unroll
    for (int j = 0; j < V; j++) {
        int c = (threadIdx.x + j * ROUTE_THREADS) * 8;
        bool in = c < hidden;
#pragma unroll
        for (int u = 0; u < ROUTER_EXPERTS; u++) {
            if (in && e0 + u < d.experts)
                dy_cuda_load8<WT>(w, (size_t)(e0 + u) * hidden + c, wf[u][j]);
            else
#pragma unroll
                for (int i = 0; i < 8; i++)
                    wf[u][j][i] = 0.0f;
        }
        if (in)
            dy_cuda_load8<WT>(nw, c, nf[j]);
        else
#pragma unroll
            for (int i = 0; i < 8; i++)
                nf[j][i] = 0.0f;
    }
    DY_GRID_ENTER();
    float sq = 0.0f;
#pragma unroll
    for (int j = 0; j < V; j++) {
        int c = (threadIdx.x + j * ROUTE_THREADS) * 8;
        if (c < hidden)
            dy_cuda_load8<DY_F32>(x, c, xv[j]);
        else
#pragma unroll
            for (int i = 0; i < 8; i++)
                xv[j][i] = 0.0f;
#pragma unroll
        for (int i = 0; i < 8; i++)
            sq += xv[j][i] * xv[j][i];
    }
    for (int o = DY_WARP / 2; o > 0; o >>= 1)
        sq += __shfl_xor_sync(0xffffffffu, sq, o);
    if (lane == 0)
        red[ROUTER_EXPERTS][warp] = sq;
    __syncthreads();
    sq = 0.0f;
#pragma unroll
    for (int k = 0; k < ROUTE_WARPS; k++)
        sq += red[ROUTER_EXPERTS][k];
    float inv = rsqrtf(sq / hidden + d.router.eps), dot[ROUTER_EXPERTS] = {};
#pragma unroll
    for (int j = 0; j < V; j++) {
        int c = (threadIdx.x + j * ROUTE_THREADS) * 8;
#pragma unroll
        for (int i = 0; i < 8; i++) {
            xv[j][i] = xv[j][i] * inv * nf[j][i];
#pragma unroll
            for (int u = 0; u < ROUTER_EXPERTS; u++)
                dot[u] += xv[j][i] * wf[u][j][i];
        }
        if (blockIdx.x == 0 && c < hidden) {
            ((float4 *)xn)[c / 4] = make_float4(xv[j][0], xv[j][1], xv[j][2], xv[j][3]);
            ((float4 *)xn)[c / 4 + 1] = make_float4(xv[j][4], xv[j][5], xv[j][6], xv[j][7]);
        }
    }
#pragma unroll
    for (int u = 0; u < ROUTER_EXPERTS; u++) {
        for (int o = DY_WARP / 2; o > 0; o >>= 1)
            dot[u] += __shfl_xor_sync(0xffffffffu, dot[u], o);
        if (lane == 0)
            red[u][warp] = dot[u];
    }
    __syncthreads();
    if (threadIdx.x < ROUTER_EXPERTS && e0 + (int)threadIdx.x < d.experts) {
        float sum = 0.0f;
        for (int k = 0; k < ROUTE_WARPS; k++)
            sum += red[threadIdx.x][k];
        logits[e0 + threadIdx.x] = sum;
    }
    __threadfence();
    __syncthreads();
    if (threadIdx.x == 0)
        last = atomicAdd(count, 1u) == gridDim.x - 1;
    __syncthreads();
    if (!last)
        return;
    if (threadIdx.x == 0)
        *count = 0; /* for the next call: a later launch */
    /* the other blocks' logits, past this SM's L1 */
    route_rank(d, (int)threadIdx.x < d.experts ? *(volatile const float *)(logits + threadIdx.x) : -INFINITY, ids,
               weights, offsets, sorted, position);
}

/* the router's part in route_fused_kernel where it fits: one token, up to
 * ROUTE_MAX_EXPERTS experts, rows of up to 2 * 8 * ROUTE_THREADS on 16
 * bytes; DY_E_UNSUPPORTED else (dy_softmax_topk composes) */
static int route_fused(struct cuda_ctx *c, const struct dy_softmax_topk_desc *d)
{
    const struct dy_topk_router *r = &d->router;
    int v = (r->hidden / 8 + ROUTE_THREADS - 1) / ROUTE_THREADS;
    int wt = r->weight_dtype == DY_F32 ? 0 : r->weight_dtype == DY_F16 ? 1 : r->weight_dtype == DY_BF16 ? 2 : -1;
    const void *x = dy_cuda_ptr(r->x), *nw = dy_cuda_ptr(r->norm_weight), *w = dy_cuda_ptr(r->w);
    void *xn = dy_cuda_ptr(r->xn);
    if (!c->router_fused || !(c->fuse_moe & FUSE_TOPK_SORT) || d->tokens != 1 || !d->offsets.h ||
        d->experts > ROUTE_MAX_EXPERTS || r->hidden % 8 || v > 2 || wt < 0 ||
        !dy_cuda_aligned16(x) || !dy_cuda_aligned16(nw) || !dy_cuda_aligned16(w) || !dy_cuda_aligned16(xn))
        return DY_E_UNSUPPORTED;
    typedef void (*fn)(struct dy_softmax_topk_desc, const float *, const void *, const void *, float *, float *,
                       int32_t *, float *, int32_t *, int32_t *, int32_t *, unsigned *);
    static const fn kernels[3][2] = {
        { route_fused_kernel<DY_F32, 1>, route_fused_kernel<DY_F32, 2> },
        { route_fused_kernel<DY_F16, 1>, route_fused_kernel<DY_F16, 2> },
        { route_fused_kernel<DY_BF16, 1>, route_fused_kernel<DY_BF16, 2> },
    };
    unsigned blocks = (unsigned)((d->experts + ROUTER_EXPERTS - 1) / ROUTER_EXPERTS);
    dy_launch(c, kernels[wt][v - 1], blocks, ROUTE_THREADS, 0, *d, (const float *)x, nw, w, (float *)xn,
              (float *)dy_cuda_ptr(d->logits), (int32_t *)dy_cuda_ptr(d->ids), (float *)dy_cuda_ptr(d->weights),
              (int32_t *)dy_cuda_ptr(d->offsets), (int32_t *)dy_cuda_ptr(d->sorted),
              (int32_t *)dy_cuda_ptr(d->position), c->route_count);
    return dy_cuda_check_launch(c, "softmax_topk (one token, with the router and the sort)");
}

int dy_cuda_softmax_topk(void *ctx, const struct dy_softmax_topk_desc *d)
{
    struct cuda_ctx *c = (struct cuda_ctx *)ctx;
    if (d->k < 1 || d->k > d->experts || d->tokens < 0) {
        snprintf(c->err, sizeof c->err, "softmax_topk: k %d of %d experts", d->k, d->experts);
        return DY_E_INVALID;
    }
    if (d->experts > TOPK_MAX_EXPERTS) {
        snprintf(c->err, sizeof c->err, "softmax_topk: at most %d experts", TOPK_MAX_EXPERTS);
        return DY_E_UNSUPPORTED;
    }
    if (d->router.x.h)
        return route_fused(c, d);
    if (d->tokens == 1 && d->offsets.h && d->experts <= ROUTE_MAX_EXPERTS && (c->fuse_moe & FUSE_TOPK_SORT)) {
        dy_launch(c, route_one_kernel, 1, ROUTE_THREADS, 0, *d, (const float *)dy_cuda_ptr(d->logits),
                  (int32_t *)dy_cuda_ptr(d->ids), (float *)dy_cuda_ptr(d->weights),
                  (int32_t *)dy_cuda_ptr(d->offsets), (int32_t *)dy_cuda_ptr(d->sorted),
                  (int32_t *)dy_cuda_ptr(d->position));
        return dy_cuda_check_launch(c, "softmax_topk (one token, with the sort)");
    }
    if (d->offsets.h) { /* with the sort: one block, at decode sizes */
        if (d->tokens > TOPK_SORT_MAX_TOKENS || d->tokens * d->k > SORT_ONE_BLOCK_MAX ||
            d->experts > SORT_MAX_EXPERTS || d->tokens == 0 || !(c->fuse_moe & FUSE_TOPK_SORT))
            return DY_E_UNSUPPORTED;
        dy_launch(c, topk_sort_kernel, 1, SORT_THREADS, (size_t)d->experts * sizeof(int), *d,
                  dy_cuda_ptr(d->logits), dy_cuda_ptr(d->ids), dy_cuda_ptr(d->weights), dy_cuda_ptr(d->offsets),
                  dy_cuda_ptr(d->sorted), dy_cuda_ptr(d->position));
        return dy_cuda_check_launch(c, "softmax_topk (with the sort)");
    }
    if (d->tokens == 0)
        return DY_OK;
    unsigned blocks = (unsigned)((d->tokens + TOPK_WARPS - 1) / TOPK_WARPS);
    dy_launch(c, softmax_topk_kernel, blocks, TOPK_WARPS * DY_WARP, 0, *d, dy_cuda_ptr(d->logits), dy_cuda_ptr(d->ids),
              dy_cuda_ptr(d->weights));
    return dy_cuda_check_launch(c, "softmax_topk");
}

int dy_cuda_moe_sort(void *ctx, const struct dy_moe_sort_desc *d)
{
    struct cuda_ctx *c = (struct cuda_ctx *)ctx;
    if (d->experts < 1 || d->pairs < 0) {
        snprintf(c->err, sizeof c->err, "moe_sort: %d pairs over %d experts", d->pairs, d->experts);
        return DY_E_INVALID;
    }
    if (d->experts > SORT_MAX_EXPERTS) {
        snprintf(c->err, sizeof c->err, "moe_sort: at most %d experts", SORT_MAX_EXPERTS);
        return DY_E_UNSUPPORTED;
    }
    const int32_t *ids = (const int32_t *)dy_cuda_ptr(d->ids);
    int32_t *offsets = (int32_t *)dy_cuda_ptr(d->offsets), *sorted = (int32_t *)dy_cuda_ptr(d->sorted);
    int32_t *position = (int32_t *)dy_cuda_ptr(d->position);
    size_t shared = (size_t)d->experts * sizeof(int);
    if (d->pairs <= SORT_ONE_BLOCK_MAX) {
        dy_launch(c, moe_sort_one_block_kernel, 1, SORT_THREADS, shared, ids, d->pairs, d->experts, offsets, sorted,
                  position);
        return dy_cuda_check_launch(c, "moe_sort");
    }
    int tiles = (d->pairs + SORT_TILE - 1) / SORT_TILE;
    int st = dy_cuda_reserve(c, &c->sort_scratch, &c->sort_scratch_size,
                             (size_t)tiles * d->experts * sizeof(int32_t));
    if (st != DY_OK)
        return st;
    int32_t *tile_counts = (int32_t *)c->sort_scratch;
    moe_sort_count_kernel<<<tiles, SORT_THREADS, shared, c->stream>>>(ids, d->pairs, d->experts,
                                                                      tile_counts);
    moe_sort_scan_kernel<<<1, SORT_THREADS, shared, c->stream>>>(tiles, d->experts, tile_counts, offsets);
    moe_sort_scatter_kernel<<<tiles, SORT_THREADS, shared, c->stream>>>(ids, d->pairs, d->experts,
                                                                        tile_counts, sorted, position);
    return dy_cuda_check_launch(c, "moe_sort");
}

/* ---- scatter_add_rows: each token gathers its k rows, in j order ---- */
#define SCATTER_THREADS 256

__global__ void __launch_bounds__(SCATTER_THREADS)
scatter_add_rows_kernel(struct dy_scatter_add_rows_desc d, const float *src, float *dst,
                        const float *weights, const int32_t *position)
{
    DY_GRID_ENTER();
    int t = blockIdx.x, i = blockIdx.y * SCATTER_THREADS + threadIdx.x;
    if (i >= d.cols)
        return;
    float *out = dst + (size_t)t * d.dst_stride + i;
    float acc = *out;
    for (int j = 0; j < d.k; j++) {
        size_t p = (size_t)t * d.k + j;
        acc = fmaf(weights[p], src[(size_t)position[p] * d.src_stride + i], acc);
    }
    *out = acc;
}

int dy_cuda_scatter_add_rows(void *ctx, const struct dy_scatter_add_rows_desc *d)
{
    struct cuda_ctx *c = (struct cuda_ctx *)ctx;
    if (d->tokens < 0 || d->k < 0 || d->cols < 0)
        return DY_E_INVALID;
    if (!d->tokens || !d->cols || !d->k)
        return DY_OK;
    dim3 grid((unsigned)d->tokens, (unsigned)((d->cols + SCATTER_THREADS - 1) / SCATTER_THREADS));
    dy_launch(c, scatter_add_rows_kernel, grid, SCATTER_THREADS, 0, *d, dy_cuda_ptr(d->src), dy_cuda_ptr(d->dst),
              dy_cuda_ptr(d->weights), dy_cuda_ptr(d->position));
    return dy_cuda_check_launch(c, "scatter_add_rows");
}
