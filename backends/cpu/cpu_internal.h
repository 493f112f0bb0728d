/* Internal to the cpu backend: the context, its scratch buffers, and the
 * single-threaded kernels (cpu_kernels.c, cpu_tiles.c) that the OpenMP ops
 * build on. */
#ifndef DY_CPU_INTERNAL_H
#define DY_CPU_INTERNAL_H

#include "backends/backend.h"

/* Device pointer of a buffer view. */
#define DY_CPU_PTR(buf) ((void *)((char *)(buf).h->impl + (buf).off))

/* Growable host scratch owned by a context, reused across ops so that a
 * decode step does not allocate. */
struct dy_cpu_scratch {
    void *ptr;
    size_t bytes;
};

/* A: A's rows converted or gathered; B: f32 panels or tiles of B per
 * thread; C: C's tiles or the grouped GEMM's task list; PACK: A's rows
 * rearranged for the int4 GEMV (dy_cpu_q4_pack). */
enum {
    DY_CPU_SCRATCH_A,
    DY_CPU_SCRATCH_B,
    DY_CPU_SCRATCH_C,
    DY_CPU_SCRATCH_PACK,
    DY_CPU_SCRATCH_COUNT
};

struct dy_cpu_ctx {
    int threads;
    char error[256];
    struct dy_cpu_scratch scratch[DY_CPU_SCRATCH_COUNT];
};

/* Records the failure text and returns `status`, for `return dy_cpu_fail(...)`. */
int dy_cpu_fail(struct dy_cpu_ctx *ctx, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* At least `bytes` of 64-byte aligned scratch in slot `which`, or NULL with
 * the context's error set. Contents are not kept when it grows. */
void *dy_cpu_scratch(struct dy_cpu_ctx *ctx, int which, size_t bytes);
/* 64-byte aligned allocation of at least `bytes` (rounded up as
 * aligned_alloc requires); free() releases it. */
void *dy_cpu_aligned_alloc(size_t bytes);

/* dy_dtype_size(), but 4 where that has 0: the ops reject unknown dtypes
 * before they size anything. */
static inline size_t dy_cpu_esize(enum dy_dtype t)
{
    return t == DY_F16 || t == DY_BF16 ? 2 : t == DY_FP8 || t == DY_I8 ? 1 : 4;
}

static inline bool dy_cpu_float_dtype(enum dy_dtype t)
{
    return t == DY_F32 || t == DY_F16 || t == DY_BF16;
}

/* The dtypes of a KV cache: the float ones, fp8, and int8 with scales. */
static inline bool dy_cpu_kv_dtype(enum dy_dtype t)
{
    return dy_cpu_float_dtype(t) || t == DY_FP8 || t == DY_I8;
}

/* ---- kernels (cpu_kernels.c, cpu_tiles.c): single-threaded, AVX2+FMA+F16C
 * when the CPU has them, portable C otherwise. */

/* Picks the instruction sets once per process. DYNO_CPU_ISA in the
 * environment caps them, to test every version on one machine: "generic"
 * (portable C only) or "avx2" (no AVX-512). */
void dy_cpu_kernels_init(void);
const char *dy_cpu_isa(void);

/* dst[i] = offset + scale * dy_random_unit(key, i) rounded to dtype t, for
 * i in [begin, end): bit-identical with every backend. */
void dy_cpu_random_range(void *dst, enum dy_dtype t, uint64_t key, size_t begin, size_t end,
                         float scale, float offset);

/* dst[i] = (float)src[i] for src of dtype t (int8: the integers). */
void dy_cpu_load_row(float *dst, const void *src, enum dy_dtype t, size_t n);
/* dst[i] = src[i] rounded to dtype t, to nearest even (fp8: saturated). */
void dy_cpu_store_row(void *dst, enum dy_dtype t, const float *src, size_t n);

/* The tiles (cpu_tiles.c). C[m,n] = A[m,k] . B[n,k]^T with A f32 and B of dtype bt (f32, f16, bf16,
 * fp8, or int8 as its integers, the scales left to the caller); B rows are
 * converted in registers, each read once from memory per call while A's
 * rows stay in cache. */
void dy_cpu_gemm_nt(int m, int n, int k, const float *a, size_t lda,
                    const void *b, size_t ldb, enum dy_dtype bt,
                    float *c, size_t ldc);

/* O[m,n] += P[m,k] . V[k,n] with P, O f32 and V of dtype vt (as B above). */
void dy_cpu_gemm_nn_acc(int m, int n, int k, const float *p, size_t ldp,
                        const void *v, size_t ldv, enum dy_dtype vt,
                        float *o, size_t ldo);

/* x[i] = exp(x[i] - shift) in place; returns their sum. */
float dy_cpu_exp_sum(float *x, int n, float shift);

/* out[i] = gelu(a[i]), erf form; out may be a. */
void dy_cpu_gelu(float *out, const float *a, int n);

/* x[i] *= s */
void dy_cpu_scale(float *x, int n, float s);

/* ---- GEMM building blocks (cpu_gemm.c), shared by dense and grouped GEMM */

/* The small-m GEMM's tile: at most DY_CPU_TILE_M rows of A by DY_CPU_TILE_N
 * rows of B (columns of C). */
enum { DY_CPU_TILE_M = 32, DY_CPU_TILE_N = 64 };

/* tile[i * DY_CPU_TILE_N + j] = A[i, 0:k] . B[j, 0:k] for i < m <= DY_CPU_TILE_M,
 * j < nb <= DY_CPU_TILE_N: B read once from memory, converted in registers,
 * in passes over columns of A short enough for its rows to stay in L2. */
void dy_cpu_gemm_tile(int m, int nb, int k, const float *a, size_t lda, const void *b,
                      size_t ldb, enum dy_dtype bt, float *tile);

/* Rows of B per panel converted to f32 for sgemm: a few MiB whatever k. */
int dy_cpu_panel_cols(int k);

/* C[i, j0:j0+nb] = beta * C + tile[i - i0, :] + bias[j0:j0+nb] for rows
 * [i0, i0 + rows), rounded to C's dtype, nb <= DY_CPU_TILE_N. */
void dy_cpu_gemm_epilogue(const struct dy_gemm_desc *d, const float *tile, size_t ldt, int i0,
                          int rows, int j0, int nb);

/* sgemm on panels of B converted (or dequantized) to f32: the regime past
 * the small-m tiles. */
int dy_cpu_gemm_prefill(struct dy_cpu_ctx *ctx, const struct dy_gemm_desc *d);

/* ---- quantized weights (cpu_quant.c, cpu_qtiles.c) ---- */

/* Up to this many rows of A a GEMM with quantized B reads the quantized
 * bytes in registers (dy_cpu_qgemv_tile); past it, B is dequantized to f32
 * tiles or panels first and the float kernels run. */
enum { DY_CPU_QGEMV_M = 8 };

/* A quantized matrix [rows, k] (backend.h's struct dy_quant) as host
 * pointers to its row 0: bytes, scales, zero points (NULL: symmetric). */
struct dy_cpu_qmat {
    const uint8_t *q;
    const float *scale;
    const uint8_t *zero;
    enum dy_dtype dtype;
    int k, group;
};

static inline struct dy_cpu_qmat dy_cpu_qmat_of(dy_buf b, const struct dy_quant *qp,
                                                enum dy_dtype t, int k)
{
    struct dy_cpu_qmat w = { DY_CPU_PTR(b), DY_CPU_PTR(qp->scale),
                             qp->zero.h ? DY_CPU_PTR(qp->zero) : NULL, t, k, qp->group };
    return w;
}

/* The same matrix from row r on (fp8 keeps its one scale). */
static inline struct dy_cpu_qmat dy_cpu_qmat_rows(struct dy_cpu_qmat w, size_t r)
{
    size_t scales = r * dy_quant_row_scales(w.dtype, w.k, w.group);
    w.q += dy_dtype_bytes(w.dtype, r * (size_t)w.k);
    w.scale += scales;
    if (w.zero)
        w.zero += scales;
    return w;
}

/* out[0:i1-i0] = elements [i0, i1) of row `row`, scale * (float)(q - zero)
 * in f32: bit for bit dy_dequant(). i0 is a multiple of 8. */
void dy_cpu_dequant_range(const struct dy_cpu_qmat *w, size_t row, int i0, int i1, float *out);
/* Rows [0, rows) of w as f32, row r at out + r * ldo. */
void dy_cpu_dequant_rows(const struct dy_cpu_qmat *w, int rows, float *out, size_t ldo);

/* m <= DY_CPU_QGEMV_M rows of f32 A as the GEMV takes them: as they are,
 * and for int4 B, when packed is set, also rearranged by dy_cpu_q4_pack. */
struct dy_cpu_qa {
    const float *a;
    size_t lda;
    const float *packed;
    size_t packed_ld;          /* floats from one packed row to the next */
    int m;
};

/* Floats of one packed row of A of length k, for int4 weights in groups of
 * `group`; 0 when the int4 kernel takes A unpacked (no AVX2, or groups
 * that are not whole multiples of 8). */
size_t dy_cpu_q4_packed_floats(int k, int group);
/* Packs rows [0, m) of A into packed, rows packed_ld floats apart. */
void dy_cpu_q4_pack(const float *a, size_t lda, int m, int k, float *packed, size_t packed_ld);

/* tile[i * DY_CPU_TILE_N + j] = A[i, :] . W[j, :] for i < a->m, j < nb <=
 * DY_CPU_TILE_N, with W's scales: each byte of W read once from memory and
 * dequantized in registers, f32 accumulation. */
void dy_cpu_qgemv_tile(int nb, const struct dy_cpu_qa *a, const struct dy_cpu_qmat *w,
                       float *tile);

/* Whether a quantized B (struct dy_quant) has a layout the kernels take:
 * ldb == k, scales present, int4 groups even and dividing k. */
bool dy_cpu_quant_ok(enum dy_dtype t, const struct dy_quant *q, int k, int ldb);

/* The quantized GEMM for m <= DY_CPU_TILE_M (cpu_quant.c); dy_cpu_gemm
 * checks the descriptor first. */
int dy_cpu_gemm_quant_small_m(struct dy_cpu_ctx *ctx, const struct dy_gemm_desc *d);

/* ---- ops, one file per concern ---- */

/* dst = src converted between dtypes, n elements (cpu_ops.c). */
void dy_cpu_convert_row(void *dst, enum dy_dtype dt, const void *src, enum dy_dtype st, size_t n);

int dy_cpu_fill_random(void *ctx, const struct dy_fill_random_desc *d);
int dy_cpu_gemm(void *ctx, const struct dy_gemm_desc *d);
int dy_cpu_norm(void *ctx, const struct dy_norm_desc *d);
int dy_cpu_rope(void *ctx, const struct dy_rope_desc *d);
int dy_cpu_eltwise(void *ctx, const struct dy_eltwise_desc *d);
int dy_cpu_gather_rows(void *ctx, const struct dy_gather_rows_desc *d);
int dy_cpu_kv_append(void *ctx, const struct dy_kv_append_desc *d);
int dy_cpu_attention_prefill(void *ctx, const struct dy_attention_prefill_desc *d);
int dy_cpu_attention_decode(void *ctx, const struct dy_attention_decode_desc *d);
int dy_cpu_argmax(void *ctx, const struct dy_argmax_desc *d);
int dy_cpu_convert(void *ctx, const struct dy_convert_desc *d);
int dy_cpu_softmax_topk(void *ctx, const struct dy_softmax_topk_desc *d);
int dy_cpu_moe_sort(void *ctx, const struct dy_moe_sort_desc *d);
int dy_cpu_gemm_grouped(void *ctx, const struct dy_gemm_grouped_desc *d);
int dy_cpu_scatter_add_rows(void *ctx, const struct dy_scatter_add_rows_desc *d);
int dy_cpu_kv_block_scores(void *ctx, const struct dy_kv_block_scores_desc *d);
int dy_cpu_dequantize(void *ctx, const struct dy_dequantize_desc *d);

#endif
