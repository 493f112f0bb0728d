/* A first ping-pong wgmma GEMM for Hopper, against cuBLASLt's first answer
 * at ViT-L/16 b256's shapes (issue 9). cuBLASLt's epilogue does not run
 * under the next tile's products: at the power cap the GELU costs fc1 6 %
 * and reading C for the residual add costs fc2 4 % (`lt_search
 * vit-l16-epilogues`). Here each of two consumer warpgroups owns every other
 * 128 x 128 tile of a persistent block; they take turns at the main loop
 * (named barriers), so one's epilogue (bias, GELU in the tanh form as
 * cuBLASLt computes it, or C +=) runs while the other multiplies. A
 * producer thread streams 128 x 64 tiles of A and B with TMA into STAGES
 * stages; each k step is eight m64n128k16 wgmmas, one group kept in flight.
 *
 * gemm_pingpong<2> runs pairs of blocks in a cluster that share each B
 * tile by TMA multicast (correct, but far slower so far: see bench/README).
 *
 * C[m, n] = epi(A[m, k] . B[n, k]^T + bias (+ C)), bf16, f32 accumulation,
 * dyno's layouts. For each shape it checks the result against cuBLASLt's
 * (a count of elements off by more than 2 % + 0.02) and times both,
 * interleaved, each sample over SUSTAIN_MS (default 100) ms of calls, so
 * the card sits at its power cap as a whole forward does.
 *
 * Build here: nvcc -O3 -std=c++17 -gencode=arch=compute_90a,code=sm_90a bench/cuda/gemm_pingpong.cu
 *             -lcublasLt -o .carry/gemm_pingpong
 * Run there: .carry/gemm_pingpong */
#include <cuda.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <cublasLt.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "../../backends/cuda/sm90_wgmma.cuh"
#include "cuda_bench.h"

#define BM 128
#define BN 128
#define BK 64
#define STAGES 6
#define THREADS 384 /* a producer and two consumer warpgroups */

/* GELU's tanh form (cuBLASLt's epilogue computes it) */
__device__ __forceinline__ float gelu_tanh(float x)
{
    float u = 0.7978845608028654f * (x + 0.044715f * x * x * x), t;
    asm("tanh.approx.f32 %0, %1;" : "=f"(t) : "f"(u));
    return 0.5f * x * (1.0f + t);
}

struct gemm_maps {
    CUtensorMap a, b;
};

/* the epilogue of one 64-row half: rows r0 and r0 + 8 of the tile's
 * columns c0 .. c0 + 127, rows at or past m not written */
__device__ __forceinline__ void epilogue_half(const float *acc, int r0, int c0, int m, int n,
                                              const __nv_bfloat16 *bias, __nv_bfloat16 *c, bool gelu, bool beta,
                                              int tq)
{
#pragma unroll
    for (int j = 0; j < BN / 8; j++) {
        int col = c0 + j * 8 + 2 * tq;
        float b0 = __bfloat162float(bias[col]), b1 = __bfloat162float(bias[col + 1]);
#pragma unroll
        for (int rr = 0; rr < 2; rr++) {
            int r = r0 + rr * 8;
            if (r >= m)
                continue;
            float x0 = acc[j * 4 + rr * 2] + b0, x1 = acc[j * 4 + rr * 2 + 1] + b1;
            __nv_bfloat162 *p = (__nv_bfloat162 *)(c + (size_t)r * n + col);
            if (beta) {
                __nv_bfloat162 old = *p;
                x0 += __bfloat162float(old.x);
                x1 += __bfloat162float(old.y);
            }
            if (gelu) {
                x0 = gelu_tanh(x0);
                x1 = gelu_tanh(x1);
            }
            *p = __floats2bfloat162_rn(x0, x1);
        }
    }
}

/* box (c0, c1, 0) of the map into shared memory at dst of every block of
 * the cluster in `mask`, completing the barrier at `bar` in each */
__device__ __forceinline__ void tma_load_multicast(unsigned dst, const CUtensorMap *map, int c0, int c1, unsigned bar,
                                                   unsigned short mask)
{
    asm volatile("cp.async.bulk.tensor.3d.shared::cluster.global.mbarrier::complete_tx::bytes.multicast::cluster"
                 " [%0], [%1, {%2, %3, %4}], [%5], %6;\n" ::"r"(dst),
                 "l"((uint64_t)map), "r"(c0), "r"(c1), "r"(0), "r"(bar), "h"(mask)
                 : "memory");
}

/* an arrival on the barrier at the same shared address in block `rank` of
 * the cluster */
__device__ __forceinline__ void mbar_arrive_remote(unsigned bar, unsigned rank)
{
    asm volatile("{\n.reg .b32 ra;\nmapa.shared::cluster.u32 ra, %0, %1;\n"
                 "mbarrier.arrive.release.cluster.shared::cluster.b64 _, [ra];\n}\n" ::"r"(bar),
                 "r"(rank)
                 : "memory");
}

__device__ __forceinline__ void cluster_sync()
{
    asm volatile("barrier.cluster.arrive.release.aligned;\nbarrier.cluster.wait.acquire.aligned;\n" ::: "memory");
}

/* CL blocks a cluster (1 or 2). With 2, the pair takes two row tiles of
 * one column tile at once: each loads its own A tile and half the B tile,
 * which TMA multicasts into both, so B's traffic from L2 halves; a stage
 * is free once the consumers of both blocks have released it (their warps
 * arrive on both blocks' empty barriers). */
template <int CL>
__global__ void __launch_bounds__(THREADS, 1)
gemm_pingpong(const __grid_constant__ gemm_maps maps, int m, int n, int k, const __nv_bfloat16 *bias,
              __nv_bfloat16 *c, int gelu, int beta)
{
    extern __shared__ __align__(1024) unsigned char smem[];
    unsigned base = ((unsigned)__cvta_generic_to_shared(smem) + 1023u) & ~1023u;
    constexpr unsigned SA = BM * BK * 2, STAGE = SA + BN * BK * 2, B_PART = BN / CL * BK * 2;
    __shared__ __align__(8) uint64_t bars[2 * STAGES];
    unsigned full = (unsigned)__cvta_generic_to_shared(bars), empty = full + 8 * STAGES;
    int tid = threadIdx.x, wg = tid / 128;
    unsigned rank = 0;
    if (CL > 1)
        asm("mov.u32 %0, %%cluster_ctarank;" : "=r"(rank));
    int ntiles = n / BN, units = ((m + BM - 1) / BM + CL - 1) / CL * ntiles, ksteps = k / BK;
    int unit0 = (int)blockIdx.x / CL, unit_step = (int)gridDim.x / CL;
    if (tid == 0) {
        for (int i = 0; i < STAGES; i++) {
            mbar_init(full + 8 * i, 1);
            mbar_init(empty + 8 * i, 4 * CL); /* a consumer warp of each block */
        }
        asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
    }
    if (CL > 1)
        cluster_sync();
    else
        __syncthreads();
    if (wg == 0) {
        asm volatile("setmaxnreg.dec.sync.aligned.u32 40;\n");
        if (tid == 0) {
            int step = 0; /* the block's k steps in order, over its tiles */
            for (int u = unit0; u < units; u += unit_step) {
                int tm = u / ntiles * CL + (int)rank, tn = u % ntiles;
                for (int kk = 0; kk < ksteps; kk++, step++) {
                    int s = step % STAGES;
                    if (step >= STAGES)
                        mbar_wait(empty + 8 * s, (step / STAGES - 1) & 1);
                    unsigned sa = base + s * STAGE;
                    mbar_expect(full + 8 * s, STAGE);
                    tma_load(sa, &maps.a, kk * BK, tm * BM, 0, full + 8 * s);
                    if (CL == 1)
                        tma_load(sa + SA, &maps.b, kk * BK, tn * BN, 0, full + 8 * s);
                    else
                        tma_load_multicast(sa + SA + rank * B_PART, &maps.b, kk * BK, tn * BN + (int)rank * (BN / CL),
                                           full + 8 * s, (unsigned short)((1u << CL) - 1));
                }
            }
        }
    } else {
        asm volatile("setmaxnreg.inc.sync.aligned.u32 232;\n");
        int cw = wg - 1, warp = tid / 32 % 4, lane = tid % 32, g = lane / 4, tq = lane % 4;
        float d0[64], d1[64];
        /* a stage's release: each warp once its own products are done */
        auto release = [&](int s) {
            __syncwarp();
            if (lane == 0) {
                mbar_arrive(empty + 8 * s);
                if (CL > 1)
                    mbar_arrive_remote(empty + 8 * s, rank ^ 1u);
            }
        };
        /* warpgroup 0 takes the first turn at the products */
        if (cw == 1)
            named_arrive(1);
        int i = 0;
        for (int u = unit0; u < units; u += unit_step, i++) {
            if ((i & 1) != cw)
                continue;
            int tm = u / ntiles * CL + (int)rank, tn = u % ntiles;
            int step = i * ksteps; /* this tile's first k step in the producer's order */
            named_sync(1 + cw);
            for (int kk = 0; kk < ksteps; kk++, step++) {
                int s = step % STAGES;
                mbar_wait(full + 8 * s, (step / STAGES) & 1);
                unsigned sa = base + s * STAGE, sb = sa + SA;
                wgmma_fence();
#pragma unroll
                for (int k16 = 0; k16 < BK / 16; k16++) {
                    uint64_t bd = sw128_desc(sb + k16 * 32, 0);
                    int acc = kk > 0 || k16 > 0;
                    wgmma_ss_acc<128>(d0, sw128_desc(sa + k16 * 32, 0), bd, acc);
                    wgmma_ss_acc<128>(d1, sw128_desc(sa + 64 * 128 + k16 * 32, 0), bd, acc);
                }
                wgmma_commit();
                if (kk > 0) {
                    wgmma_wait_one();
                    release((step - 1) % STAGES);
                }
            }
            wgmma_wait_all();
            fence_regs<64>(d0);
            fence_regs<64>(d1);
            release((step - 1) % STAGES);
            named_arrive(1 + (cw ^ 1)); /* the other's turn, while this one's epilogue runs */
            int r0 = tm * BM + warp * 16 + g, c0 = tn * BN;
            epilogue_half(d0, r0, c0, m, n, bias, c, gelu, beta, tq);
            epilogue_half(d1, r0 + 64, c0, m, n, bias, c, gelu, beta, tq);
        }
    }
    /* no block leaves while its pair may still write into it */
    if (CL > 1)
        cluster_sync();
}

typedef CUresult (*encoder_fn)(CUtensorMap *, CUtensorMapDataType, cuuint32_t, void *, const cuuint64_t *,
                               const cuuint64_t *, const cuuint32_t *, const cuuint32_t *, CUtensorMapInterleave,
                               CUtensorMapSwizzle, CUtensorMapL2promotion, CUtensorMapFloatOOBfill);

/* rows of `cols` bf16 elements read in boxes of 64 x box_rows (one
 * 128-byte swizzled column block), rows past the end as zeros */
static void make_map(CUtensorMap *map, const void *p, int cols, int rows, int box_rows)
{
    static encoder_fn enc = nullptr;
    if (!enc) {
        void *fn = nullptr;
        cudaDriverEntryPointQueryResult q;
        CK(cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &fn, 12000, cudaEnableDefault, &q));
        enc = (encoder_fn)fn;
    }
    cuuint64_t dim[3] = { (cuuint64_t)cols, (cuuint64_t)rows, 1 };
    cuuint64_t strides[2] = { (cuuint64_t)cols * 2, (cuuint64_t)cols * rows * 2 };
    cuuint32_t box[3] = { 64, (cuuint32_t)box_rows, 1 }, step[3] = { 1, 1, 1 };
    CK(enc(map, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 3, (void *)p, dim, strides, box, step, CU_TENSOR_MAP_INTERLEAVE_NONE,
           CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE));
}

/* cuBLASLt's first answer for the same call, dyno's layouts
 * (column-major C^T[n, m] = B^T . A^T) */
struct lt_call {
    cublasLtHandle_t lt;
    cublasLtMatmulDesc_t op;
    cublasLtMatrixLayout_t la, lb, lc;
    cublasLtMatmulAlgo_t algo;
    void *ws;
};

static const size_t WS = (size_t)32 << 20;

static void lt_setup(lt_call &l, int m, int n, int k, bool gelu, const void *bias)
{
    cublasOperation_t tr = CUBLAS_OP_T, no = CUBLAS_OP_N;
    cublasLtEpilogue_t epi = gelu ? CUBLASLT_EPILOGUE_GELU_BIAS : CUBLASLT_EPILOGUE_BIAS;
    CK(cublasLtMatmulDescCreate(&l.op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    CK(cublasLtMatmulDescSetAttribute(l.op, CUBLASLT_MATMUL_DESC_TRANSA, &tr, sizeof tr));
    CK(cublasLtMatmulDescSetAttribute(l.op, CUBLASLT_MATMUL_DESC_TRANSB, &no, sizeof no));
    CK(cublasLtMatmulDescSetAttribute(l.op, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof epi));
    CK(cublasLtMatmulDescSetAttribute(l.op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof bias));
    CK(cublasLtMatrixLayoutCreate(&l.lb, CUDA_R_16BF, k, n, k));
    CK(cublasLtMatrixLayoutCreate(&l.la, CUDA_R_16BF, k, m, k));
    CK(cublasLtMatrixLayoutCreate(&l.lc, CUDA_R_16BF, n, m, n));
    cublasLtMatmulPreference_t pref;
    CK(cublasLtMatmulPreferenceCreate(&pref));
    size_t ws = WS;
    CK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws));
    cublasLtMatmulHeuristicResult_t h;
    int found = 0;
    CK(cublasLtMatmulAlgoGetHeuristic(l.lt, l.op, l.lb, l.la, l.lc, l.lc, pref, 1, &h, &found));
    if (!found) {
        fprintf(stderr, "gemm_pingpong: cuBLASLt has no answer\n");
        exit(1);
    }
    l.algo = h.algo;
    cublasLtMatmulPreferenceDestroy(pref);
}

static void lt_release(lt_call &l)
{
    cublasLtMatrixLayoutDestroy(l.la);
    cublasLtMatrixLayoutDestroy(l.lb);
    cublasLtMatrixLayoutDestroy(l.lc);
    cublasLtMatmulDescDestroy(l.op);
}

int main()
{
    int m = 256 * 197, sms = 0;
    CK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
    double sustain_ms = getenv("SUSTAIN_MS") ? atof(getenv("SUSTAIN_MS")) : 100.0;
    lt_call l = {};
    CK(cublasLtCreate(&l.lt));
    CK(cudaMalloc(&l.ws, WS));
    const size_t smem = 1024 + (size_t)STAGES * (BM + BN) * BK * 2;
    CK(cudaFuncSetAttribute(gemm_pingpong<1>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
    CK(cudaFuncSetAttribute(gemm_pingpong<2>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
    struct {
        const char *name;
        int n, k;
        bool gelu, beta;
    } shapes[] = { { "fc1+gelu+bias", 4096, 1024, true, false },
                   { "fc2+bias C+=", 1024, 4096, false, true },
                   { "o+bias C+=", 1024, 1024, false, true },
                   { "qkv+bias", 3072, 1024, false, false } };
    cudaEvent_t e0, e1;
    CK(cudaEventCreate(&e0));
    CK(cudaEventCreate(&e1));
    for (auto &sh : shapes) {
        int n = sh.n, k = sh.k;
        size_t cn = (size_t)m * n;
        __nv_bfloat16 *a, *b, *bias, *c_lt, *c_pp, *c0;
        CK(cudaMalloc(&a, (size_t)m * k * 2));
        CK(cudaMalloc(&b, (size_t)n * k * 2));
        CK(cudaMalloc(&bias, n * 2));
        CK(cudaMalloc(&c_lt, cn * 2));
        CK(cudaMalloc(&c_pp, cn * 2));
        CK(cudaMalloc(&c0, cn * 2));
        fill_kernel<<<1024, 256>>>(a, (size_t)m * k, 1, 2.0f);
        fill_kernel<<<1024, 256>>>(b, (size_t)n * k, 2, 0.1f);
        fill_kernel<<<1024, 256>>>(bias, n, 3, 1.0f);
        fill_kernel<<<1024, 256>>>(c0, cn, 4, 1.0f);
        CK(cudaMemcpy(c_lt, c0, cn * 2, cudaMemcpyDeviceToDevice));
        CK(cudaMemcpy(c_pp, c0, cn * 2, cudaMemcpyDeviceToDevice));
        gemm_maps maps, maps2;
        make_map(&maps.a, a, k, m, BM);
        make_map(&maps.b, b, k, n, BN);
        maps2 = maps;
        make_map(&maps2.b, b, k, n, BN / 2);
        lt_setup(l, m, n, k, sh.gelu, bias);
        float alpha = 1.0f, beta = sh.beta ? 1.0f : 0.0f;
        int tiles = (m + BM - 1) / BM * (n / BN), grid = tiles < sms ? tiles : sms;
        auto run_lt = [&](__nv_bfloat16 *c) {
            CK(cublasLtMatmul(l.lt, l.op, &alpha, b, l.lb, a, l.la, &beta, c, l.lc, c, l.lc, &l.algo, l.ws, WS, 0));
        };
        auto run_pp = [&](__nv_bfloat16 *c) {
            gemm_pingpong<1><<<grid, THREADS, smem>>>(maps, m, n, k, bias, c, sh.gelu, sh.beta);
        };
        /* pairs of blocks: B multicast (grid even, at most the SM count) */
        auto run_pp2 = [&](__nv_bfloat16 *c) {
            cudaLaunchConfig_t cfg = {};
            cudaLaunchAttribute attr;
            attr.id = cudaLaunchAttributeClusterDimension;
            attr.val.clusterDim.x = 2;
            attr.val.clusterDim.y = 1;
            attr.val.clusterDim.z = 1;
            cfg.gridDim = dim3((unsigned)(grid & ~1));
            cfg.blockDim = dim3(THREADS);
            cfg.dynamicSmemBytes = smem;
            cfg.attrs = &attr;
            cfg.numAttrs = 1;
            CK(cudaLaunchKernelEx(&cfg, gemm_pingpong<2>, maps2, m, n, k, (const __nv_bfloat16 *)bias, c, (int)sh.gelu,
                                  (int)sh.beta));
        };
        /* µs a call over sustain_ms of calls */
        auto time_us = [&](auto run) {
            float ms;
            CK(cudaEventRecord(e0));
            run(c_lt);
            CK(cudaEventRecord(e1));
            CK(cudaEventSynchronize(e1));
            CK(cudaEventElapsedTime(&ms, e0, e1));
            int calls = std::max(3, (int)(sustain_ms / std::max(ms, 0.01f)));
            CK(cudaEventRecord(e0));
            for (int r = 0; r < calls; r++)
                run(c_lt);
            CK(cudaEventRecord(e1));
            CK(cudaEventSynchronize(e1));
            CK(cudaEventElapsedTime(&ms, e0, e1));
            return ms * 1e3 / calls;
        };
        std::vector<__nv_bfloat16> h_lt(cn), h_pp(cn);
        run_lt(c_lt);
        CK(cudaDeviceSynchronize());
        CK(cudaMemcpy(h_lt.data(), c_lt, cn * 2, cudaMemcpyDeviceToHost));
        /* each kernel: one call from the same C, compared with cuBLASLt's */
        auto check = [&](auto run, const char *name) {
            CK(cudaMemcpy(c_pp, c0, cn * 2, cudaMemcpyDeviceToDevice));
            run(c_pp);
            CK(cudaDeviceSynchronize());
            CK(cudaMemcpy(h_pp.data(), c_pp, cn * 2, cudaMemcpyDeviceToHost));
            double worst = 0.0, largest = 0.0;
            size_t off = 0;
            for (size_t x = 0; x < cn; x++) {
                double u = __bfloat162float(h_lt[x]), v = __bfloat162float(h_pp[x]);
                worst = std::max(worst, fabs(u - v));
                largest = std::max(largest, fabs(u));
                off += fabs(u - v) > 0.02 * (1.0 + fabs(u));
            }
            printf("%-14s %s: max |diff| %.3g of %.3g, %zu elements off\n", sh.name, name, worst, largest, off);
        };
        check(run_pp, "ping-pong");
        check(run_pp2, "ping-pong, pairs");
        double t_lt[3], t_pp[3], t_pp2[3];
        for (int r = 0; r < 3; r++) {
            t_lt[r] = time_us(run_lt);
            t_pp[r] = time_us(run_pp);
            t_pp2[r] = time_us(run_pp2);
        }
        CK(cudaGetLastError());
        double flop = 2.0 * m * n * k;
        printf("%-14s cuBLASLt %7.1f %7.1f %7.1f us, ping-pong %7.1f %7.1f %7.1f (%.2fx), pairs %7.1f %7.1f %7.1f "
               "(%.2fx); last: %.0f, %.0f, %.0f TFLOP/s\n",
               sh.name, t_lt[0], t_lt[1], t_lt[2], t_pp[0], t_pp[1], t_pp[2], t_lt[2] / t_pp[2], t_pp2[0], t_pp2[1],
               t_pp2[2], t_lt[2] / t_pp2[2], flop / t_lt[2] / 1e6, flop / t_pp[2] / 1e6, flop / t_pp2[2] / 1e6);
        fflush(stdout);
        lt_release(l);
        cudaFree(a);
        cudaFree(b);
        cudaFree(bias);
        cudaFree(c_lt);
        cudaFree(c_pp);
        cudaFree(c0);
    }
    cublasLtDestroy(l.lt);
    cudaFree(l.ws);
    return 0;
}
