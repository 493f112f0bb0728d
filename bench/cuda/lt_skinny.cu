/* A decode step's GEMMs at a batch of M rows (Llama-3.1-8B's shapes, bf16
 * weights and A, f32 C as dyno's decode passes them; o and down add into
 * C), the way dyno's CUDA backend calls them (cublasGemmEx, default
 * algorithm) beside each answer of cuBLASLt's heuristic: µs a call over
 * copies of the weights that together pass L2 (as a step walks its
 * layers), and the weights' bytes over that time as a share of the copy
 * bandwidth measured in the same run (bytes read + written).
 *
 * Build here: nvcc -O2 -gencode=arch=compute_90,code=sm_90 bench/cuda/lt_skinny.cu -lcublasLt -lcublas -o lt_skinny
 * Run: lt_skinny [M ...] (default 64) */
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include "cuda_bench.h"

struct shape {
    const char *name;
    int n, k;
    float beta;
};

static const size_t WS = (size_t)32 << 20; /* dyno's LT_WORKSPACE */
static const size_t ROTATE = (size_t)400 << 20; /* weights rotated per shape */

struct problem {
    int m, n, k, copies;
    float beta;
    std::vector<__nv_bfloat16 *> b;
    __nv_bfloat16 *a;
    float *c;
    void *ws;
    cudaEvent_t e0, e1;
};

template <class F> static double time_calls(problem &p, F call)
{
    for (int i = 0; i < p.copies; i++)
        if (!call(i))
            return -1.0;
    int calls = p.copies * ((40 + p.copies - 1) / p.copies);
    return median_us(0, p.e0, p.e1, calls, 7, [&](int i) { call(i % p.copies); });
}

static double copy_gbps()
{
    size_t bytes = (size_t)1 << 30;
    void *src, *dst;
    CK(cudaMalloc(&src, bytes));
    CK(cudaMalloc(&dst, bytes));
    cudaEvent_t e0, e1;
    CK(cudaEventCreate(&e0));
    CK(cudaEventCreate(&e1));
    CK(cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToDevice));
    std::vector<float> t;
    for (int r = 0; r < 5; r++) {
        CK(cudaEventRecord(e0));
        CK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice));
        CK(cudaEventRecord(e1));
        CK(cudaEventSynchronize(e1));
        float ms;
        CK(cudaEventElapsedTime(&ms, e0, e1));
        t.push_back(ms);
    }
    std::sort(t.begin(), t.end());
    cudaFree(src);
    cudaFree(dst);
    return 2.0 * bytes / (t[2] * 1e-3) * 1e-9;
}

static void run_shape(cublasHandle_t blas, cublasLtHandle_t lt, int m, const shape &sh, double copy, double *dyno_us,
                      double *best_us)
{
    problem p = {};
    p.m = m, p.n = sh.n, p.k = sh.k, p.beta = sh.beta;
    size_t wbytes = (size_t)sh.n * sh.k * 2;
    p.copies = (int)std::max<size_t>(1, (ROTATE + wbytes - 1) / wbytes);
    for (int i = 0; i < p.copies; i++) {
        __nv_bfloat16 *b;
        CK(cudaMalloc(&b, wbytes));
        fill_kernel<<<1024, 256>>>(b, (size_t)sh.n * sh.k, 2 + i, 0.1f);
        p.b.push_back(b);
    }
    CK(cudaMalloc(&p.a, (size_t)m * sh.k * 2));
    CK(cudaMalloc(&p.c, (size_t)m * sh.n * 4));
    CK(cudaMemset(p.c, 0, (size_t)m * sh.n * 4));
    CK(cudaMalloc(&p.ws, WS));
    fill_kernel<<<1024, 256>>>(p.a, (size_t)m * sh.k, 1, 0.1f);
    CK(cudaEventCreate(&p.e0));
    CK(cudaEventCreate(&p.e1));
    CK(cudaDeviceSynchronize());
    float alpha = 1.0f, beta = sh.beta;
    /* dyno's call: row-major C = A B^T as column-major C^T = B A^T */
    double us = time_calls(p, [&](int i) {
        return cublasGemmEx(blas, CUBLAS_OP_T, CUBLAS_OP_N, sh.n, m, sh.k, &alpha, p.b[i], CUDA_R_16BF, sh.k, p.a,
                            CUDA_R_16BF, sh.k, &beta, p.c, CUDA_R_32F, sh.n, CUBLAS_COMPUTE_32F,
                            CUBLAS_GEMM_DEFAULT) == CUBLAS_STATUS_SUCCESS;
    });
    printf("| %d | %s | %d x %d | cublasGemmEx (dyno) | %.1f | %.2f |\n", m, sh.name, sh.n, sh.k, us,
           wbytes / us * 1e-3 / copy);
    *dyno_us += us;
    double best = us;

    cublasLtMatmulDesc_t op;
    cublasLtMatrixLayout_t la, lb, lc;
    cublasOperation_t tr = CUBLAS_OP_T, no = CUBLAS_OP_N;
    CK(cublasLtMatmulDescCreate(&op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    CK(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSA, &tr, sizeof tr));
    CK(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSB, &no, sizeof no));
    CK(cublasLtMatrixLayoutCreate(&lb, CUDA_R_16BF, sh.k, sh.n, sh.k));
    CK(cublasLtMatrixLayoutCreate(&la, CUDA_R_16BF, sh.k, m, sh.k));
    CK(cublasLtMatrixLayoutCreate(&lc, CUDA_R_32F, sh.n, m, sh.n));
    cublasLtMatmulPreference_t pref;
    CK(cublasLtMatmulPreferenceCreate(&pref));
    size_t ws = WS;
    CK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws));
    cublasLtMatmulHeuristicResult_t h[16];
    int found = 0;
    CK(cublasLtMatmulAlgoGetHeuristic(lt, op, lb, la, lc, lc, pref, 16, h, &found));
    for (int j = 0; j < found; j++) {
        if (h[j].state != CUBLAS_STATUS_SUCCESS)
            continue;
        double t = time_calls(p, [&](int i) {
            return cublasLtMatmul(lt, op, &alpha, p.b[i], lb, p.a, la, &beta, p.c, lc, p.c, lc, &h[j].algo, p.ws,
                                  WS, 0) == CUBLAS_STATUS_SUCCESS;
        });
        if (t <= 0)
            continue;
        int id = 0, tile = 0, splitk = 0;
        size_t w;
        cublasLtMatmulAlgoConfigGetAttribute(&h[j].algo, CUBLASLT_ALGO_CONFIG_ID, &id, sizeof id, &w);
        cublasLtMatmulAlgoConfigGetAttribute(&h[j].algo, CUBLASLT_ALGO_CONFIG_TILE_ID, &tile, sizeof tile, &w);
        cublasLtMatmulAlgoConfigGetAttribute(&h[j].algo, CUBLASLT_ALGO_CONFIG_SPLITK_NUM, &splitk, sizeof splitk,
                                             &w);
        printf("| %d | %s | %d x %d | Lt answer %d (id %d tile %d splitk %d) | %.1f | %.2f |\n", m, sh.name, sh.n,
               sh.k, j, id, tile, splitk, t, wbytes / t * 1e-3 / copy);
        best = std::min(best, t);
    }
    *best_us += best;
    fflush(stdout);
    cublasLtMatmulPreferenceDestroy(pref);
    cublasLtMatrixLayoutDestroy(la);
    cublasLtMatrixLayoutDestroy(lb);
    cublasLtMatrixLayoutDestroy(lc);
    cublasLtMatmulDescDestroy(op);
    for (auto b : p.b)
        cudaFree(b);
    cudaFree(p.a);
    cudaFree(p.c);
    cudaFree(p.ws);
    cudaEventDestroy(p.e0);
    cudaEventDestroy(p.e1);
}

int main(int argc, char **argv)
{
    std::vector<int> ms;
    for (int i = 1; i < argc; i++)
        ms.push_back(atoi(argv[i]));
    if (ms.empty())
        ms.push_back(64);
    static const shape shapes[] = {
        { "qkv", 6144, 4096, 0.0f }, { "o", 4096, 4096, 1.0f }, { "gate_up", 28672, 4096, 0.0f },
        { "down", 4096, 14336, 1.0f }, { "lm_head", 128256, 4096, 0.0f },
    };
    cublasHandle_t blas;
    cublasLtHandle_t lt;
    CK(cublasCreate(&blas));
    CK(cublasLtCreate(&lt));
    cudaDeviceProp prop;
    CK(cudaGetDeviceProperties(&prop, 0));
    double copy = copy_gbps();
    printf("%s, cuBLASLt %zu, copy %.0f GB/s\n\n| m | shape | n x k | call | us | of copy |\n|---|---|---|---|--:|--:|\n",
           prop.name, cublasLtGetVersion(), copy);
    for (int m : ms) {
        double dyno_layer = 0, best_layer = 0, dyno_head = 0, best_head = 0;
        for (int s = 0; s < 5; s++)
            run_shape(blas, lt, m, shapes[s], copy, s < 4 ? &dyno_layer : &dyno_head, s < 4 ? &best_layer : &best_head);
        printf("\nm = %d, a step's GEMMs (32 layers + LM head): dyno's calls %.3f ms, the fastest answers %.3f ms\n\n",
               m, (32 * dyno_layer + dyno_head) * 1e-3, (32 * best_layer + best_head) * 1e-3);
    }
    cublasLtDestroy(lt);
    cublasDestroy(blas);
    return 0;
}
