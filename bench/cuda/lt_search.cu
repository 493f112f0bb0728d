/* How far cuBLASLt's first heuristic answer is from the best configuration it
 * can run, for the GEMMs of a workload: for each shape it times
 *   1. the heuristic's answers (best fit, up to 32),
 *   2. each algorithm id's own answers (search limited by algo id),
 *   3. for the three fastest ids so far, every tile x CTA swizzle x cluster
 *      shape that cublasLtMatmulAlgoCheck accepts at the id's best stages,
 *      then every stages count at the best of those,
 * then re-times the heuristic's first answer against the five fastest,
 * interleaved, and prints each one's configuration. Shapes as dyno's CUDA
 * GEMM calls them (C[m, n] = A[m, k] . B[n, k]^T + bias, bf16, f32
 * accumulation, the epilogue and beta of the call).
 *
 * Build here: nvcc -O2 -gencode=arch=compute_90,code=sm_90 bench/cuda/lt_search.cu -lcublasLt -o lt_search
 * Run: lt_search [vit-l16|vit-l16-epilogues|llama-8b] [BATCH]; LT_SUSTAIN_MS=200
 * times each sample over 200 ms of calls instead of 3 calls; LT_FIRST=1 times
 * the first answer alone (no search), e.g. for vit-l16-epilogues: fc1 with
 * GELU and bias, bias alone or neither, fc2 and o with C read or not. */
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include <cublasLt.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include "cuda_bench.h"

struct shape {
    const char *name;
    int m, n, k;
    cublasLtEpilogue_t epi;
    float beta;
};

struct cand {
    cublasLtMatmulAlgo_t algo;
    size_t ws;
    double us;
    const char *from;
};

static const size_t WS = (size_t)32 << 20; /* dyno's LT_WORKSPACE */

struct problem {
    cublasLtHandle_t lt;
    cublasLtMatmulDesc_t op;
    cublasLtMatrixLayout_t la, lb, lc;
    __nv_bfloat16 *a, *b, *c, *bias;
    void *ws;
    float beta;
    cudaStream_t s;
    cudaEvent_t e0, e1;
};

static bool run(problem &p, const cublasLtMatmulAlgo_t &algo)
{
    float alpha = 1.0f;
    return cublasLtMatmul(p.lt, p.op, &alpha, p.b, p.lb, p.a, p.la, &p.beta, p.c, p.lc, p.c, p.lc, &algo, p.ws, WS,
                          p.s) == CUBLAS_STATUS_SUCCESS;
}

/* calls a sample: 3, or enough for SUSTAIN_MS milliseconds (the
 * environment's LT_SUSTAIN_MS), so the card reaches its power cap as a
 * whole forward pass does */
static int calls_for(problem &p, const cublasLtMatmulAlgo_t &algo)
{
    static double sustain_ms = -1.0;
    if (sustain_ms < 0.0)
        sustain_ms = getenv("LT_SUSTAIN_MS") ? atof(getenv("LT_SUSTAIN_MS")) : 0.0;
    if (sustain_ms <= 0.0)
        return 3;
    float ms = 0.0f;
    CK(cudaEventRecord(p.e0, p.s));
    run(p, algo);
    CK(cudaEventRecord(p.e1, p.s));
    CK(cudaEventSynchronize(p.e1));
    CK(cudaEventElapsedTime(&ms, p.e0, p.e1));
    int n = (int)(sustain_ms / (ms > 0.01f ? ms : 0.01f));
    return n < 3 ? 3 : n;
}

/* median microseconds a call over `reps` samples; < 0 if it fails */
static double time_algo(problem &p, const cublasLtMatmulAlgo_t &algo, int reps)
{
    if (!run(p, algo) || !run(p, algo))
        return -1.0;
    return median_us(p.s, p.e0, p.e1, calls_for(p, algo), reps, [&](int) { run(p, algo); });
}

static int cfg(const cublasLtMatmulAlgo_t &a, cublasLtMatmulAlgoConfigAttributes_t at)
{
    uint32_t v = 0; /* every attribute printed fits 32 bits; ids are int32, the rest uint32/uint16 */
    size_t w = 0;
    cublasLtMatmulAlgoConfigGetAttribute(&a, at, &v, sizeof v, &w);
    if (w == 2)
        v &= 0xffff;
    return (int)v;
}

static void describe(const cublasLtMatmulAlgo_t &a, char *out, size_t n)
{
    snprintf(out, n, "id %d tile %d stages %d splitk %d red %d swz %d custom %d inner %d cluster %d",
             cfg(a, CUBLASLT_ALGO_CONFIG_ID), cfg(a, CUBLASLT_ALGO_CONFIG_TILE_ID),
             cfg(a, CUBLASLT_ALGO_CONFIG_STAGES_ID), cfg(a, CUBLASLT_ALGO_CONFIG_SPLITK_NUM),
             cfg(a, CUBLASLT_ALGO_CONFIG_REDUCTION_SCHEME), cfg(a, CUBLASLT_ALGO_CONFIG_CTA_SWIZZLING),
             cfg(a, CUBLASLT_ALGO_CONFIG_CUSTOM_OPTION), cfg(a, CUBLASLT_ALGO_CONFIG_INNER_SHAPE_ID),
             cfg(a, CUBLASLT_ALGO_CONFIG_CLUSTER_SHAPE_ID));
}

static bool same(const cublasLtMatmulAlgo_t &x, const cublasLtMatmulAlgo_t &y)
{
    return !memcmp(&x, &y, sizeof x);
}

static void add(problem &p, std::vector<cand> &all, const cublasLtMatmulAlgo_t &algo, size_t ws, const char *from)
{
    if (ws > WS)
        return;
    for (auto &c : all)
        if (same(c.algo, algo))
            return;
    double us = time_algo(p, algo, 5);
    if (us > 0)
        all.push_back({ algo, ws, us, from });
}

static void search(cublasLtHandle_t lt, const shape &sh)
{
    problem p = {};
    p.lt = lt;
    p.beta = sh.beta;
    CK(cudaStreamCreate(&p.s));
    CK(cudaEventCreate(&p.e0));
    CK(cudaEventCreate(&p.e1));
    size_t an = (size_t)sh.m * sh.k, bn = (size_t)sh.n * sh.k, cn = (size_t)sh.m * sh.n;
    CK(cudaMalloc(&p.a, an * 2));
    CK(cudaMalloc(&p.b, bn * 2));
    CK(cudaMalloc(&p.c, cn * 2));
    CK(cudaMalloc(&p.bias, sh.n * 2));
    CK(cudaMalloc(&p.ws, WS));
    fill_kernel<<<1024, 256>>>(p.a, an, 1, 0.1f);
    fill_kernel<<<1024, 256>>>(p.b, bn, 2, 0.1f);
    fill_kernel<<<1024, 256>>>(p.c, cn, 3, 0.1f);
    fill_kernel<<<1024, 256>>>(p.bias, sh.n, 4, 0.1f);
    CK(cudaDeviceSynchronize());

    /* the layouts of dy_cuda_lt_begin: column-major C^T[n, m] = B^T . A^T */
    cublasOperation_t tr = CUBLAS_OP_T, no = CUBLAS_OP_N;
    CK(cublasLtMatmulDescCreate(&p.op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    CK(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_TRANSA, &tr, sizeof tr));
    CK(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_TRANSB, &no, sizeof no));
    CK(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_EPILOGUE, &sh.epi, sizeof sh.epi));
    if (sh.epi != CUBLASLT_EPILOGUE_DEFAULT)
        CK(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &p.bias, sizeof p.bias));
    CK(cublasLtMatrixLayoutCreate(&p.lb, CUDA_R_16BF, sh.k, sh.n, sh.k));
    CK(cublasLtMatrixLayoutCreate(&p.la, CUDA_R_16BF, sh.k, sh.m, sh.k));
    CK(cublasLtMatrixLayoutCreate(&p.lc, CUDA_R_16BF, sh.n, sh.m, sh.n));
    cublasLtMatmulPreference_t pref;
    CK(cublasLtMatmulPreferenceCreate(&pref));
    size_t ws = WS;
    CK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws));
    auto release = [&]() {
        cublasLtMatmulPreferenceDestroy(pref);
        cublasLtMatrixLayoutDestroy(p.la);
        cublasLtMatrixLayoutDestroy(p.lb);
        cublasLtMatrixLayoutDestroy(p.lc);
        cublasLtMatmulDescDestroy(p.op);
        cudaFree(p.a);
        cudaFree(p.b);
        cudaFree(p.c);
        cudaFree(p.bias);
        cudaFree(p.ws);
        cudaEventDestroy(p.e0);
        cudaEventDestroy(p.e1);
        cudaStreamDestroy(p.s);
    };

    std::vector<cand> all;
    cublasLtMatmulHeuristicResult_t h[32];
    int found = 0;
    CK(cublasLtMatmulAlgoGetHeuristic(lt, p.op, p.lb, p.la, p.lc, p.lc, pref, 32, h, &found));
    if (!found) {
        printf("%s: no heuristic answer\n", sh.name);
        release();
        return;
    }
    cublasLtMatmulAlgo_t first = h[0].algo;
    if (getenv("LT_FIRST")) { /* the first answer alone, as dyno runs it */
        char d[128];
        describe(first, d, sizeof d);
        double us = time_algo(p, first, 5);
        printf("%-14s m %6d n %5d k %5d  first answer %9.1f us  %6.1f TFLOP/s  (%s)\n", sh.name, sh.m, sh.n, sh.k,
               us, 2.0 * sh.m * sh.n * sh.k / us / 1e6, d);
        fflush(stdout);
        release();
        return;
    }
    for (int i = 0; i < found; i++)
        if (h[i].state == CUBLAS_STATUS_SUCCESS)
            add(p, all, h[i].algo, h[i].workspaceSize, "heuristic");
    int n_heur = (int)all.size();

    int ids[256], nid = 0;
    CK(cublasLtMatmulAlgoGetIds(lt, CUBLAS_COMPUTE_32F, CUDA_R_32F, CUDA_R_16BF, CUDA_R_16BF, CUDA_R_16BF,
                                CUDA_R_16BF, 256, ids, &nid));
    uint32_t mode = CUBLASLT_SEARCH_LIMITED_BY_ALGO_ID;
    CK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_SEARCH_MODE, &mode, sizeof mode));
    for (int i = 0; i < nid; i++) {
        cublasLtMatmulHeuristicResult_t hi[16];
        int fi = 0;
        if (cublasLtMatmulAlgoInit(lt, CUBLAS_COMPUTE_32F, CUDA_R_32F, CUDA_R_16BF, CUDA_R_16BF, CUDA_R_16BF,
                                   CUDA_R_16BF, ids[i], &hi[0].algo) != CUBLAS_STATUS_SUCCESS)
            continue;
        if (cublasLtMatmulAlgoGetHeuristic(lt, p.op, p.lb, p.la, p.lc, p.lc, pref, 16, hi, &fi) !=
            CUBLAS_STATUS_SUCCESS)
            continue;
        for (int j = 0; j < fi; j++)
            if (hi[j].state == CUBLAS_STATUS_SUCCESS)
                add(p, all, hi[j].algo, hi[j].workspaceSize, "by-id");
    }
    int n_byid = (int)all.size() - n_heur;

    /* configurations of the three fastest ids */
    auto by_time = [](const cand &x, const cand &y) { return x.us < y.us; };
    /* the fastest candidate of algorithm id `id` so far (one exists) */
    auto fastest_of = [&](int id) {
        const cand *best = NULL;
        for (auto &c : all)
            if (cfg(c.algo, CUBLASLT_ALGO_CONFIG_ID) == id && (!best || c.us < best->us))
                best = &c;
        return best->algo;
    };
    std::sort(all.begin(), all.end(), by_time);
    std::vector<int> top_ids;
    for (auto &c : all) {
        int id = cfg(c.algo, CUBLASLT_ALGO_CONFIG_ID);
        if (std::find(top_ids.begin(), top_ids.end(), id) == top_ids.end())
            top_ids.push_back(id);
        if (top_ids.size() == 3)
            break;
    }
    int checked = 0;
    for (int id : top_ids) {
        cublasLtMatmulAlgo_t base;
        CK(cublasLtMatmulAlgoInit(lt, CUBLAS_COMPUTE_32F, CUDA_R_32F, CUDA_R_16BF, CUDA_R_16BF, CUDA_R_16BF,
                                  CUDA_R_16BF, id, &base));
        uint32_t tiles[128], stages[128];
        size_t w = 0;
        int nt = 0, ns = 0;
        if (cublasLtMatmulAlgoCapGetAttribute(&base, CUBLASLT_ALGO_CAP_TILE_IDS, tiles, sizeof tiles, &w) ==
            CUBLAS_STATUS_SUCCESS)
            nt = (int)(w / sizeof tiles[0]);
        if (cublasLtMatmulAlgoCapGetAttribute(&base, CUBLASLT_ALGO_CAP_STAGES_IDS, stages, sizeof stages, &w) ==
            CUBLAS_STATUS_SUCCESS)
            ns = (int)(w / sizeof stages[0]);
        int swz_ok = 0;
        CK(cublasLtMatmulAlgoCapGetAttribute(&base, CUBLASLT_ALGO_CAP_CTA_SWIZZLING_SUPPORT, &swz_ok,
                                             sizeof swz_ok, &w));
        /* this id's fastest answer so far sets the stages of the first
         * pass (tile x swizzle x cluster) and the rest of the second
         * (stages at the first pass's best) */
        cublasLtMatmulAlgo_t seed = fastest_of(id);
        const uint16_t clusters[] = { CUBLASLT_CLUSTER_SHAPE_AUTO, CUBLASLT_CLUSTER_SHAPE_1x1x1,
                                      CUBLASLT_CLUSTER_SHAPE_2x1x1, CUBLASLT_CLUSTER_SHAPE_1x2x1,
                                      CUBLASLT_CLUSTER_SHAPE_2x2x1 };
        auto try_cfg = [&](cublasLtMatmulAlgo_t a) {
            cublasLtMatmulHeuristicResult_t r;
            if (cublasLtMatmulAlgoCheck(lt, p.op, p.lb, p.la, p.lc, p.lc, &a, &r) != CUBLAS_STATUS_SUCCESS)
                return;
            checked++;
            add(p, all, a, r.workspaceSize, "config");
        };
        for (int ti = 0; ti < nt; ti++)
            for (uint32_t swz = 0; swz <= (swz_ok ? 1u : 0u); swz++)
                for (uint16_t cl : clusters) {
                    cublasLtMatmulAlgo_t a = seed;
                    cublasLtMatmulAlgoConfigSetAttribute(&a, CUBLASLT_ALGO_CONFIG_TILE_ID, &tiles[ti],
                                                         sizeof tiles[ti]);
                    cublasLtMatmulAlgoConfigSetAttribute(&a, CUBLASLT_ALGO_CONFIG_CTA_SWIZZLING, &swz, sizeof swz);
                    cublasLtMatmulAlgoConfigSetAttribute(&a, CUBLASLT_ALGO_CONFIG_CLUSTER_SHAPE_ID, &cl, sizeof cl);
                    try_cfg(a);
                }
        seed = fastest_of(id);
        for (int si = 0; si < ns; si++) {
            cublasLtMatmulAlgo_t a = seed;
            cublasLtMatmulAlgoConfigSetAttribute(&a, CUBLASLT_ALGO_CONFIG_STAGES_ID, &stages[si], sizeof stages[si]);
            try_cfg(a);
        }
    }
    std::sort(all.begin(), all.end(), by_time);

    /* the first answer against the five fastest, interleaved, 7 rounds */
    int top = std::min<int>(5, (int)all.size());
    std::vector<std::vector<double>> t(top + 1);
    for (int r = 0; r < 7; r++) {
        t[0].push_back(time_algo(p, first, 5));
        for (int i = 0; i < top; i++)
            t[i + 1].push_back(time_algo(p, all[i].algo, 5));
    }
    double flop = 2.0 * sh.m * sh.n * sh.k;
    auto med = [](std::vector<double> v) {
        std::sort(v.begin(), v.end());
        return v[v.size() / 2];
    };
    double us0 = med(t[0]);
    char d[256];
    describe(first, d, sizeof d);
    printf("\n%s: m %d n %d k %d beta %g epilogue %d; timed %d heuristic, %d by-id, %d configurations (%d checked)\n",
           sh.name, sh.m, sh.n, sh.k, sh.beta, (int)sh.epi, n_heur, n_byid, (int)all.size() - n_heur - n_byid,
           checked);
    printf("  first answer %8.1f us %6.1f TFLOP/s  %s\n", us0, flop / us0 * 1e-6, d);
    for (int i = 0; i < top; i++) {
        double us = med(t[i + 1]);
        describe(all[i].algo, d, sizeof d);
        printf("  #%d %-9s %8.1f us %6.1f TFLOP/s  %.3fx  %s\n", i + 1, all[i].from, us, flop / us * 1e-6,
               us0 / us, d);
    }
    fflush(stdout);
    release();
}

int main(int argc, char **argv)
{
    const char *which = argc > 1 ? argv[1] : "vit-l16";
    int batch = argc > 2 ? atoi(argv[2]) : 0;
    std::vector<shape> shapes;
    if (!strcmp(which, "vit-l16")) {
        int m = (batch ? batch : 256) * 197;
        shapes = { { "qkv", m, 3072, 1024, CUBLASLT_EPILOGUE_BIAS, 0.0f },
                   { "o", m, 1024, 1024, CUBLASLT_EPILOGUE_BIAS, 1.0f },
                   { "fc1+gelu", m, 4096, 1024, CUBLASLT_EPILOGUE_GELU_BIAS, 0.0f },
                   { "fc2", m, 1024, 4096, CUBLASLT_EPILOGUE_BIAS, 1.0f } };
    } else if (!strcmp(which, "vit-l16-epilogues")) {
        /* what each epilogue and a read C cost at ViT-L/16's shapes */
        int m = (batch ? batch : 256) * 197;
        shapes = { { "fc1+gelu+bias", m, 4096, 1024, CUBLASLT_EPILOGUE_GELU_BIAS, 0.0f },
                   { "fc1+bias", m, 4096, 1024, CUBLASLT_EPILOGUE_BIAS, 0.0f },
                   { "fc1", m, 4096, 1024, CUBLASLT_EPILOGUE_DEFAULT, 0.0f },
                   { "fc2+bias C+=", m, 1024, 4096, CUBLASLT_EPILOGUE_BIAS, 1.0f },
                   { "fc2+bias", m, 1024, 4096, CUBLASLT_EPILOGUE_BIAS, 0.0f },
                   { "o+bias C+=", m, 1024, 1024, CUBLASLT_EPILOGUE_BIAS, 1.0f },
                   { "o+bias", m, 1024, 1024, CUBLASLT_EPILOGUE_BIAS, 0.0f },
                   { "qkv+bias", m, 3072, 1024, CUBLASLT_EPILOGUE_BIAS, 0.0f } };
    } else if (!strcmp(which, "llama-8b")) {
        int m = (batch ? batch : 16) * 1024;
        shapes = { { "qkv", m, 6144, 4096, CUBLASLT_EPILOGUE_DEFAULT, 0.0f },
                   { "o", m, 4096, 4096, CUBLASLT_EPILOGUE_DEFAULT, 1.0f },
                   { "gate_up", m, 28672, 4096, CUBLASLT_EPILOGUE_DEFAULT, 0.0f },
                   { "down", m, 4096, 14336, CUBLASLT_EPILOGUE_DEFAULT, 1.0f } };
    } else {
        fprintf(stderr, "usage: lt_search [vit-l16|vit-l16-epilogues|llama-8b] [BATCH]\n");
        return 2;
    }
    shapes.push_back({ "square 8192", 8192, 8192, 8192, CUBLASLT_EPILOGUE_DEFAULT, 0.0f });
    cublasLtHandle_t lt;
    CK(cublasLtCreate(&lt));
    cudaDeviceProp prop;
    CK(cudaGetDeviceProperties(&prop, 0));
    printf("%s, cuBLASLt %zu\n", prop.name, cublasLtGetVersion());
    for (auto &s : shapes)
        search(lt, s);
    cublasLtDestroy(lt);
    return 0;
}
