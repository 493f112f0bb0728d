/* The backend interface: one const struct dy_backend per backend.
 *
 * A backend is a table of function pointers with an ABI version first; a NULL
 * slot means "not supported" and callers record the point as skipped with that
 * reason. Callers never use the table directly: they go through the dy_*
 * wrappers below, which check slots, account memory and keep error text.
 *
 * Buffers are {handle, byte offset} because OpenCL 1.2 has no device pointers.
 * Every call returns a status from status.h; a backend never calls exit().
 *
 * Grow the slot list by appending, and bump DY_BACKEND_ABI when a slot's
 * meaning changes. */
#ifndef DY_BACKEND_H
#define DY_BACKEND_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>

#include "status.h"

#ifdef __cplusplus
extern "C" {
#endif

#define DY_BACKEND_ABI 7

enum dy_dtype {
    DY_F32 = 0,
    DY_F16 = 1,
    DY_BF16 = 2,
    DY_I32 = 3,
    DY_FP8 = 4,      /* E4M3 (OCP "fn": no infinities, max 448), storage only */
    DY_I8 = 5,       /* int8 with scales beside it (KV cache: per token and head;
                      * weights: per output channel) */
    DY_I4 = 6,       /* weights only: 4-bit groups, two per byte, with scales
                      * (and zero points) beside them (struct dy_quant) */
    DY_DTYPE_COUNT
};

const char *dy_dtype_name(enum dy_dtype t);
/* Returns false when the name is not a dtype. */
bool dy_dtype_parse(const char *name, enum dy_dtype *out);

/* A device allocation. The wrapper layer owns this struct; `impl` is the
 * backend's own handle (a pointer on CUDA and the CPU, a cl_mem on OpenCL). */
struct dy_bufh {
    void *impl;
    size_t bytes;
};

/* A view into an allocation: handle plus byte offset. */
typedef struct {
    struct dy_bufh *h;
    size_t off;
} dy_buf;

static inline dy_buf dy_buf_at(dy_buf b, size_t byte_offset)
{
    dy_buf r = { b.h, b.off + byte_offset };
    return r;
}

enum dy_cap {
    DY_CAP_F16 = 1u << 0,    /* native f16 arithmetic */
    DY_CAP_BF16 = 1u << 1,   /* native bf16 arithmetic */
    DY_CAP_GRAPHS = 1u << 2, /* graph capture of op sequences */
    DY_CAP_UNIFIED = 1u << 3 /* device memory is host memory */
};

struct dy_device_info {
    char name[128];
    char vendor[64];
    char driver_version[64];
    char runtime_version[64];
    uint64_t mem_total_bytes;
    uint64_t l2_bytes;       /* last-level cache */
    int compute_units;       /* SMs, CUs, or CPU cores */
    int clock_mhz;
    unsigned caps;           /* enum dy_cap bits */
};

struct dy_mem_info {
    uint64_t free_bytes;
    uint64_t total_bytes;
};

/* ---- op descriptors ---------------------------------------------------
 * Row-major everywhere. Strides are in elements. Unless a field says
 * otherwise, activations are `dtype` and arithmetic accumulates in f32 or
 * wider. */

/* dst[i] = offset + scale * u(seed, stream, i), u uniform in [-1, 1),
 * computed by dy_random_unit() so that every backend produces bit-identical
 * values, then rounded to `dtype` (round to nearest even). */
struct dy_fill_random_desc {
    dy_buf dst;
    size_t count;
    enum dy_dtype dtype;
    uint64_t seed;
    uint64_t stream;  /* one per tensor */
    float scale;
    float offset;
};

/* Quantized weights: B of dtype DY_FP8, DY_I8 or DY_I4 (a matrix [n, k],
 * rows k elements apart: ldb == k) dequantizes as
 *   w[j, i] = scale(j, i) * (q[j, i] - zero(j, i))
 *   fp8:  q is the E4M3 value; one scale for the whole matrix; zero 0.
 *   int8: q in [-127, 127]; one scale per row j (output channel); zero 0.
 *   int4: q in [0, 15]; element i of row j is the low (i even) or high (i
 *         odd) nibble of byte (j * k + i) / 2, so eight values per 32-bit
 *         word; one scale per group of `group` elements along k, at index
 *         j * (k / group) + i / group; zero points (u8) at the same index,
 *         or 8 for every group when zero.h is NULL (symmetric).
 * dy_quant_scales() counts a matrix's scales. A view of rows [r0, r0 + n)
 * starts r0 * dy_quant_row_scales() scales later (fp8: the same scale). */
struct dy_quant {
    dy_buf scale;             /* f32 */
    dy_buf zero;              /* u8, int4 only; h == NULL: symmetric */
    int group;                /* int4: elements per scale, even, divides k */
    enum dy_dtype bias_dtype; /* the bias when B is quantized */
};

/* An activation applied to a GEMM's output (after the bias), so that a
 * backend with a fused epilogue writes C once. A backend that does not set
 * the act's bit in dy_backend.gemm_acts, or that returns DY_E_UNSUPPORTED
 * for a call having done nothing, gets the GEMM and then the element-wise
 * op over C (dy_gemm composes them). */
enum dy_gemm_act {
    DY_ACT_NONE = 0,
    DY_ACT_GELU = 1, /* gelu, erf form; a fused epilogue may compute the
                      * tanh form (cuBLASLt's does), which is within
                      * 4.8e-4 of it: below the rounding of f16/bf16 C */
    DY_ACT_SWIGLU = 2, /* with P = A . B^T + bias of n (even) columns:
                        * C[:, j] = silu(P[:, j]) * P[:, n/2 + j] for
                        * j < n/2; ldc >= n, and C's columns n/2.. are
                        * scratch, left undefined (a gate/up projection
                        * and its SiLU-mul as one op) */
    DY_ACT_ROPE = 3, /* C = A . B^T + bias, then dy_rope over C's first
                      * rope.heads heads of rope.head_dim columns, row r
                      * at position rope.positions[r] (a q/k projection
                      * and its rotation as one op) */
};

/* DY_ACT_ROPE's rotation, as struct dy_rope_desc has it */
struct dy_gemm_rope {
    dy_buf positions; /* i32 [m] */
    dy_buf inv_freq;  /* f32 [head_dim / 2] */
    int heads, head_dim;
};

/* A GEMM's A made as it is read: the RMSNorm of rows of x times weight
 * (struct dy_norm_desc's arithmetic, eps, in f32), so that a decode GEMV
 * normalises the residual stream itself instead of a norm op writing A
 * first. x.h == NULL: no norm. A backend that sets dy_backend.gemm_norm
 * may do it in the GEMM (and then leaves A as it was), or return
 * DY_E_UNSUPPORTED having done nothing; dy_gemm otherwise runs dy_norm of
 * x's m rows into A (a, a_dtype, lda), then the GEMM. So A's content after
 * the call is unspecified: it is the caller's buffer for that case. */
struct dy_gemm_norm {
    dy_buf x, weight;      /* x: m rows of k, x_stride apart; weight: [k] */
    int x_stride;
    float eps;
    enum dy_dtype x_dtype, weight_dtype;
};

/* A decode step's new K and V rows stored into the paged KV cache by the
 * GEMM that projects them (struct dy_kv_append_desc's layout and
 * arithmetic; f32, f16, bf16 and fp8 caches): row r of C's columns
 * k_col .. k_col + kv_heads * head_dim goes to K's slot slots[r], from
 * v_col on to V's, as C holds them after the act (RoPE) and its rounding
 * to c_dtype. k_cache.h == NULL: none. A backend that sets
 * dy_backend.gemm_append may store them itself, or return
 * DY_E_UNSUPPORTED having done nothing; dy_gemm otherwise runs
 * dy_kv_append over C after the GEMM. */
struct dy_gemm_append {
    dy_buf slots;             /* i32 [m] */
    dy_buf k_cache, v_cache;
    int k_col, v_col, kv_heads, head_dim;
    enum dy_dtype cache_dtype;
};

/* C[m,n] = beta * C + A[m,k] . B[n,k]^T (+ bias[n])
 * B is stored as Hugging Face stores weights: [out_features, in_features].
 * A is f32 or B's dtype; C is f32, or B's f16/bf16 (beta 0 or 1: the sum,
 * bias and beta * C formed in f32, then rounded once; reduced-precision
 * activations). Matrix units take operands of one type, so a backend may
 * round an f32 A to B's f16/bf16 before multiplying (the conformance
 * tolerance for such B is that dtype's); accumulation is f32.
 * Quantized B (fp8, int8, int4; see struct dy_quant): A is f32. A backend
 * may dequantize B to bf16 and round A to bf16 to use its matrix units, and
 * with fp8 B it may round A to fp8 with one scale over A (max|A| / 448), as
 * FP8 inference does; decode-sized calls (m <= 8) should read the
 * quantized bytes directly, the point of quantizing. */
struct dy_gemm_desc {
    dy_buf a, b, c, bias;     /* bias.h == NULL: no bias; bias is b_dtype
                               * (bq.bias_dtype when B is quantized) */
    int m, n, k;
    int lda, ldb, ldc;
    enum dy_dtype a_dtype, b_dtype, c_dtype;
    float beta;               /* 0: overwrite C, 1: accumulate into C */
    struct dy_quant bq;       /* B's scales when b_dtype is fp8, int8, int4 */
    enum dy_gemm_act act;     /* C = act(A . B^T + bias); beta 0 only */
    struct dy_gemm_rope rope; /* DY_ACT_ROPE only */
    struct dy_gemm_norm norm; /* A = RMSNorm(norm.x) * norm.weight */
    struct dy_gemm_append append; /* C's K and V columns into the KV cache */
    /* The caller promises that B was not written by the op just before
     * this one (a model's weights), so a backend may read it while that op
     * still runs: ABI 6, the CUDA decode GEMV's loads before its wait. */
    bool b_settled;
};

/* out[r, i] = w[r, i] for rows [0, rows) of a quantized matrix [rows, k]
 * (struct dy_quant), rounded to out_dtype (f32, f16, bf16). */
struct dy_dequantize_desc {
    dy_buf q, out;
    struct dy_quant qp;
    int rows, k, out_stride;
    enum dy_dtype q_dtype, out_dtype;
};

enum dy_norm_kind { DY_NORM_RMS = 0, DY_NORM_LAYER = 1 };

/* out[r,:] = norm(x[r,:]) * weight (+ bias for LayerNorm), computed in f32
 * and rounded once to out_dtype: an f32 residual stream normalised into
 * the f16/bf16 rows the next GEMM reads (reduced-precision activations). */
struct dy_norm_desc {
    enum dy_norm_kind kind;
    dy_buf x, weight, bias, out;
    int rows, dim;
    int x_stride, out_stride;
    float eps;
    enum dy_dtype dtype;        /* x */
    enum dy_dtype weight_dtype; /* weight and bias */
    enum dy_dtype out_dtype;    /* out: f32, f16 or bf16 */
};

/* RMSNorms of the columns [0, q_cols) with q_weight and [q_cols, q_cols +
 * k_cols) with k_weight of each row (struct dy_norm_desc's arithmetic, eps,
 * in f32): each part as one (group 0; weights of q_cols and k_cols), or in
 * groups of `group` columns each with its part's weight of `group` (a norm
 * a head, Qwen3's). q_weight.h == NULL: none. */
struct dy_rope_norm {
    dy_buf q_weight, k_weight;
    int q_cols, k_cols, group;
    float eps;
    enum dy_dtype weight_dtype;
};

/* In-place rotary embedding, rotate-half convention (pairs i and i + d/2), on
 * `heads` heads of `head_dim` in each of `tokens` rows. Angle of pair i at
 * position p: (float)p * inv_freq[i], in f32, as Hugging Face computes it. */
struct dy_rope_desc {
    dy_buf x;
    dy_buf positions;   /* i32 [tokens] */
    dy_buf inv_freq;    /* f32 [head_dim / 2] */
    int tokens, heads, head_dim;
    int row_stride;     /* elements from one token's row to the next */
    enum dy_dtype dtype;
    /* ABI 7, both optional: before the rotation, whole-row q and k norms
     * (OLMoE's) over each token's first columns, in place; after it, the
     * row's K and V columns stored into the KV cache (struct
     * dy_gemm_append's layout; not int8). A backend that sets
     * dy_backend.rope_fused may do all of it in one call, or return
     * DY_E_UNSUPPORTED having done nothing; dy_rope otherwise runs dy_norm
     * of each part, the rotation and dy_kv_append, each rounding to dtype
     * as it stores. */
    struct dy_rope_norm norm;
    struct dy_gemm_append append;
};

enum dy_eltwise_op {
    DY_ELT_ADD = 0,      /* out = a + b */
    DY_ELT_SILU_MUL = 1, /* out = silu(a) * b */
    DY_ELT_GELU = 2,     /* out = gelu(a), erf form; b unused */
    DY_ELT_GATED_ADD = 3 /* out += sigmoid(b[r * b_stride]) * a: b is one value
                          * per row (Qwen2-MoE's shared-expert gate) */
};

struct dy_eltwise_desc {
    enum dy_eltwise_op op;
    dy_buf a, b, out;
    int rows, cols;
    int a_stride, b_stride, out_stride;
    enum dy_dtype dtype;
};

/* out[r,:] = convert(table[ids[r],:]) */
struct dy_gather_rows_desc {
    dy_buf table, ids, out;  /* ids: i32 [rows] */
    int rows, cols;
    int table_stride, out_stride;
    enum dy_dtype table_dtype, out_dtype;
};

/* Paged KV cache: each layer's K and V are [num_slots, kv_heads, head_dim],
 * slot = block_id * block_size + offset in block (vLLM's layout).
 * Cache dtypes: f32, f16, bf16; fp8 (E4M3, the value itself, saturated to
 * +-448, no scale); int8 with one f32 scale per slot and KV head in
 * k_scale / v_scale ([num_slots, kv_heads]): scale = max|x| / 127 over the
 * head's row, q = rint(x * (127 / max|x|)) (0 for an all-zero row), value =
 * q * scale. */
struct dy_kv_append_desc {
    dy_buf k, v;             /* new rows: [tokens, kv_heads * head_dim] */
    int src_stride;          /* elements between token rows of k and v */
    dy_buf slots;            /* i32 [tokens] */
    dy_buf k_cache, v_cache;
    int tokens, kv_heads, head_dim;
    enum dy_dtype src_dtype, cache_dtype;
    dy_buf k_scale, v_scale; /* int8 caches only */
};

/* Attention over `batch` sequences of `seq_len` tokens each, rows laid out
 * sequence after sequence. Heads share KV heads in groups (GQA):
 * kv_head = head / (heads / kv_heads). */
struct dy_attention_prefill_desc {
    dy_buf q, k, v, out;
    int batch, seq_len, heads, kv_heads, head_dim;
    int q_stride, kv_stride, out_stride;
    float scale;
    bool causal;
    enum dy_dtype dtype;
    /* f32: exact. f16/bf16: the backend may round q, k, v and the softmax
     * probabilities to this dtype for its matrix units (the workload passes
     * the weights' dtype); accumulation stays f32. */
    enum dy_dtype compute_dtype;
};

/* One query token per sequence against its paged KV cache. */
struct dy_attention_decode_desc {
    dy_buf q, out;               /* [batch, heads * head_dim] with strides */
    int q_stride, out_stride;
    dy_buf k_cache, v_cache;
    dy_buf block_table;          /* i32 [batch, max_blocks_per_seq] */
    dy_buf context_lens;         /* i32 [batch], the query's token included */
    int batch, heads, kv_heads, head_dim;
    int block_size, max_blocks_per_seq;
    int max_context;             /* host-side bound, to size splits */
    float scale;
    enum dy_dtype dtype, cache_dtype;
    dy_buf k_scale, v_scale;     /* int8 caches only (see dy_kv_append_desc) */
    /* > 0: the op just before this one wrote no cache row but those of
     * each sequence's last fresh_tokens keys (an append), and neither the
     * block table nor the lengths, so a backend may start reading the older
     * rows before that op ends; 0: no such promise */
    int fresh_tokens;
};

/* KV-cache eviction scores, one per listed block of one layer's cache: the
 * sum over the block's block_size tokens of a token score averaged over
 * the KV heads. Inverse key norm: 1 / ||k||; PagedEviction: ||v|| / ||k||
 * (||k|| below 1e-12 counts as 1e-12). */
enum dy_kv_score_kind { DY_KV_SCORE_INV_KEY_NORM = 0, DY_KV_SCORE_VK_RATIO = 1 };

struct dy_kv_block_scores_desc {
    dy_buf k_cache, v_cache;
    dy_buf k_scale, v_scale;     /* int8 caches only */
    dy_buf blocks;               /* i32 [count] */
    dy_buf scores;               /* f32 [count] */
    int count, block_size, kv_heads, head_dim;
    enum dy_kv_score_kind kind;
    enum dy_dtype cache_dtype;
};

/* out[r] = index of the first maximum of x[r, 0:cols] */
struct dy_argmax_desc {
    dy_buf x, out;               /* out: i32 [rows] */
    int rows, cols, stride;
    enum dy_dtype dtype;
};

struct dy_convert_desc {
    dy_buf src, dst;
    size_t count;
    enum dy_dtype src_dtype, dst_dtype;
};

/* ---- MoE ---------------------------------------------------------------
 * A token's k experts are pairs p = token * k + j. The fused path: router
 * GEMM, softmax_topk, moe_sort (pairs grouped by expert), gemm_grouped for
 * gate/up, eltwise SiLU-mul, gemm_grouped for down, scatter_add_rows; a
 * backend may take the sort into softmax_topk, the SiLU-mul and the
 * scatter-add into gemm_grouped (dispatch composes them otherwise). */

/* The router's logits made by softmax_topk itself from the residual stream
 * (ABI 7): xn = RMSNorm(x) * norm_weight (struct dy_norm_desc's arithmetic,
 * f32 rows of `hidden`, also stored for the experts' GEMMs), then logits =
 * xn . w^T (struct dy_gemm_desc's, f32 out, rows `stride` apart). w must be
 * settled (a model's weights, as dy_gemm_desc.b_settled). x.h == NULL: the
 * logits are given. A backend that sets dy_backend.topk_router may do it
 * all in one call, or return DY_E_UNSUPPORTED having done nothing;
 * dy_softmax_topk otherwise runs dy_norm and dy_gemm first. */
struct dy_topk_router {
    dy_buf x, norm_weight, xn, w;
    int hidden;
    float eps;
    enum dy_dtype weight_dtype; /* norm_weight and w */
};

/* For each of `tokens` rows of f32 logits [tokens, experts]: p = softmax(row)
 * in f32; the k experts of largest logit (softmax keeps the order; ties: the
 * lower expert first), in descending order, go to ids[t * k + j] (i32) with
 * their p in weights[t * k + j] (f32). With renormalize the k weights are
 * divided by their sum. */
struct dy_softmax_topk_desc {
    dy_buf logits, ids, weights;
    int tokens, experts, k, stride;
    bool renormalize;
    /* offsets.h set: then the tokens * k pairs grouped by expert as
     * dy_moe_sort does (a backend that does not set dy_backend.topk_sort,
     * or returns DY_E_UNSUPPORTED having done nothing, gets dy_moe_sort
     * after it) */
    dy_buf offsets, sorted, position;
    struct dy_topk_router router; /* ABI 7: the logits made by the op */
};

/* Groups pairs by expert, a stable counting sort of ids[0..pairs):
 * offsets[e] .. offsets[e + 1] (i32 [experts + 1], offsets[0] = 0) are expert
 * e's rows in sorted order, sorted[r] (i32 [pairs]) is the pair at sorted row
 * r, and position[p] (i32 [pairs]) the sorted row of pair p. Pairs keep their
 * order within an expert. ids outside [0, experts) are an error
 * the op need not detect; the workload never makes them. */
struct dy_moe_sort_desc {
    dy_buf ids, offsets, sorted, position;
    int pairs, experts;
};

/* One GEMM per expert over its rows of the sorted order:
 *   C[r, :] = A[a_row(r), :] . B_e[n, k]^T   for offsets[e] <= r < offsets[e + 1]
 * with a_row(r) = a_rows[r] / a_row_div when a_rows.h is set (the sorted
 * pair list and k: each pair reads its token's row), else r. B_e starts
 * b_expert_stride elements after B_(e-1) and is row-major [n, k] (row
 * stride k), stored as dy_gemm's B.
 * A and C are f32; B is b_dtype (f32 A may be rounded to it as in dy_gemm).
 * offsets live on the device. A decode-sized call (rows <= 4 * experts, say)
 * must not wait on them from the host, so a decode step stays free of host
 * round trips; a large call may read them back to plan its launches. */
/* dy_gemm_grouped_desc.scatter: where and how C's rows are summed */
struct dy_grouped_scatter {
    dy_buf dst, weights, position;
    int tokens, k, dst_stride;
};

struct dy_gemm_grouped_desc {
    dy_buf a, a_rows, b, c, offsets;
    int rows, experts, n, k;
    int a_row_div;
    int lda, ldc;
    size_t b_expert_stride;   /* elements; n * k when B is quantized */
    enum dy_dtype b_dtype;
    /* quantized B: each expert is a matrix [n, k] as in dy_gemm, its
     * scales (and zero points) dy_quant_scales() after the previous
     * expert's; bq.bias_dtype unused */
    struct dy_quant bq;
    /* DY_ACT_NONE, or DY_ACT_SWIGLU as dy_gemm has it (C's columns n/2..
     * are then scratch): the gate/up experts and their SiLU-mul as one
     * op. A backend without the act's bit in dy_backend.grouped_acts, or
     * that returns DY_E_UNSUPPORTED having done nothing, gets the GEMM and
     * then dy_eltwise over C. */
    enum dy_gemm_act act;
    /* dst.h set: C's rows added into the tokens' rows of dst as
     * dy_scatter_add_rows does (src = C, cols = n), and C is scratch: the
     * down experts and the weighted sum of each token's k outputs as one
     * op. A backend that does not set dy_backend.grouped_scatter (or
     * returns DY_E_UNSUPPORTED having done nothing) gets the GEMM, then
     * dy_scatter_add_rows. */
    struct dy_grouped_scatter scatter;
    /* The caller promises that offsets, a_rows and the scatter's position
     * and weights were written before the op just before this one began,
     * so a backend may read them, and fetch the experts' weights they
     * select, while that op still runs (a decode step's down projection
     * after the gate/up one). */
    bool routes_settled;
};

/* dst[t, :] += sum over j < k, in order, of weights[t * k + j] *
 * src[position[t * k + j], :]: each token gathers its pairs' rows (no
 * atomics, so the sum is the same on every run). f32 throughout. */
struct dy_scatter_add_rows_desc {
    dy_buf src, dst, weights, position;
    int tokens, k, cols;
    int src_stride, dst_stride;
};

/* ---- the table ---------------------------------------------------------
 * `void *ctx` below is the backend's own context: one device and one
 * in-order queue. Ops are asynchronous with respect to the host unless the
 * backend says otherwise; buf_read waits for prior work. */
struct dy_backend {
    int abi_version;                /* DY_BACKEND_ABI */
    const char *name;               /* "cpu-ref", "cuda", ... */
    const char *description;

    /* discovery */
    int (*probe)(char *why, size_t why_len); /* DY_OK or why it is unusable */
    int (*device_count)(int *count);
    int (*device_info)(int device, struct dy_device_info *info);

    /* context. ctx_create allocates *ctx; ctx_destroy frees it and every
     * resource the backend made for it. */
    int (*ctx_create)(int device, void **ctx);
    void (*ctx_destroy)(void *ctx);
    const char *(*last_error)(void *ctx); /* vendor text of the last failure */

    /* memory */
    int (*buf_alloc)(void *ctx, size_t bytes, void **impl);
    void (*buf_free)(void *ctx, void *impl);
    int (*buf_write)(void *ctx, dy_buf dst, const void *src, size_t bytes);
    int (*buf_read)(void *ctx, dy_buf src, void *dst, size_t bytes);
    int (*buf_copy)(void *ctx, dy_buf dst, dy_buf src, size_t bytes);
    int (*buf_fill)(void *ctx, dy_buf dst, uint8_t byte, size_t bytes);
    int (*mem_info)(void *ctx, struct dy_mem_info *info);

    /* ordering and timing. An event marks the point in the queue where it is
     * recorded; event_elapsed_ns waits for `end`. */
    int (*sync)(void *ctx);
    int (*event_create)(void *ctx, void **event);
    void (*event_destroy)(void *ctx, void *event);
    int (*event_record)(void *ctx, void *event);
    int (*event_elapsed_ns)(void *ctx, void *start, void *end, uint64_t *ns);

    /* ops */
    int (*fill_random)(void *ctx, const struct dy_fill_random_desc *d);
    int (*gemm)(void *ctx, const struct dy_gemm_desc *d);
    int (*norm)(void *ctx, const struct dy_norm_desc *d);
    int (*rope)(void *ctx, const struct dy_rope_desc *d);
    int (*eltwise)(void *ctx, const struct dy_eltwise_desc *d);
    int (*gather_rows)(void *ctx, const struct dy_gather_rows_desc *d);
    int (*kv_append)(void *ctx, const struct dy_kv_append_desc *d);
    int (*attention_prefill)(void *ctx, const struct dy_attention_prefill_desc *d);
    int (*attention_decode)(void *ctx, const struct dy_attention_decode_desc *d);
    int (*argmax)(void *ctx, const struct dy_argmax_desc *d);
    int (*convert)(void *ctx, const struct dy_convert_desc *d);
    /* MoE (may be NULL: MoE points are then skipped as unsupported) */
    int (*softmax_topk)(void *ctx, const struct dy_softmax_topk_desc *d);
    int (*moe_sort)(void *ctx, const struct dy_moe_sort_desc *d);
    int (*gemm_grouped)(void *ctx, const struct dy_gemm_grouped_desc *d);
    int (*scatter_add_rows)(void *ctx, const struct dy_scatter_add_rows_desc *d);
    /* KV eviction (may be NULL: points that score blocks are then skipped) */
    int (*kv_block_scores)(void *ctx, const struct dy_kv_block_scores_desc *d);
    /* graphs (may be NULL: the caller then enqueues ops one by one). Ops
     * enqueued between graph_begin and graph_end are recorded, not run;
     * graph_launch replays them with the same arguments and buffers. An op
     * that would wait on the host, or allocate, fails while recording, so a
     * caller records a sequence it has already run once. */
    int (*graph_begin)(void *ctx);
    int (*graph_end)(void *ctx, void **graph);
    int (*graph_launch)(void *ctx, void *graph);
    void (*graph_destroy)(void *ctx, void *graph);
    /* quantized weights (may be NULL: points with quantized weights are
     * then skipped; gemm and gemm_grouped take quantized B when it is set) */
    int (*dequantize)(void *ctx, const struct dy_dequantize_desc *d);
    /* telemetry (may be NULL, or DY_E_UNSUPPORTED where the device or its
     * driver has no counter): the device's energy counter in joules since
     * some fixed origin; callers take differences */
    int (*energy_read)(void *ctx, double *joules);
    /* bit (1 << act) set where gemm may apply that dy_gemm_act itself */
    unsigned gemm_acts;
    /* gemm may take dy_gemm_desc.norm, .append itself (else dy_gemm
     * composes) */
    bool gemm_norm, gemm_append;
    /* the same for gemm_grouped's act (bits as gemm_acts) and scatter,
     * and softmax_topk's sort */
    unsigned grouped_acts;
    bool grouped_scatter, topk_sort;
    /* rope may take dy_rope_desc.norm and .append itself, softmax_topk
     * dy_softmax_topk_desc.router (ABI 7) */
    bool rope_fused, topk_router;
};

/* A plugin (libdyno-NAME.so) exports this symbol. */
typedef const struct dy_backend *(*dy_backend_entry_fn)(void);
#define DY_BACKEND_ENTRY_SYMBOL "dy_backend_entry"

/* Helpers below are shared by host code and CUDA/HIP device code. */
#if defined(__CUDACC__) || defined(__HIPCC__)
#define DY_INLINE __host__ __device__ static inline
#else
#define DY_INLINE static inline
#endif

/* Bytes per element; 0 for an unknown dtype. */
DY_INLINE size_t dy_dtype_size(enum dy_dtype t)
{
    return t == DY_F32 || t == DY_I32 ? 4 : t == DY_F16 || t == DY_BF16 ? 2
           : t == DY_FP8 || t == DY_I8 ? 1 : 0;
}

DY_INLINE bool dy_dtype_quantized(enum dy_dtype t)
{
    return t == DY_FP8 || t == DY_I8 || t == DY_I4;
}

/* Bytes of `count` elements (int4: two per byte). */
DY_INLINE size_t dy_dtype_bytes(enum dy_dtype t, size_t count)
{
    return t == DY_I4 ? (count + 1) / 2 : count * dy_dtype_size(t);
}

/* Scales of one row of a quantized [n, k] matrix, and of the whole matrix. */
DY_INLINE size_t dy_quant_row_scales(enum dy_dtype t, int k, int group)
{
    return t == DY_I4 ? (size_t)(k / group) : t == DY_I8 ? 1 : 0;
}

DY_INLINE size_t dy_quant_scales(enum dy_dtype t, int n, int k, int group)
{
    return t == DY_FP8 ? 1 : (size_t)n * dy_quant_row_scales(t, k, group);
}

/* ---- the counter-based generator --------------------------------------
 * Header-only so that every backend (and its kernel language) computes the
 * same integer arithmetic. SplitMix64's finaliser over (seed, stream, index). */
DY_INLINE uint64_t dy_mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

DY_INLINE uint64_t dy_random_key(uint64_t seed, uint64_t stream)
{
    return dy_mix64(seed * 0x9E3779B97F4A7C15ull + dy_mix64(stream + 0x632BE59BD9B4E019ull));
}

/* Uniform in [-1, 1): 24 random bits, exact in f32. */
DY_INLINE float dy_random_unit(uint64_t key, uint64_t index)
{
    uint64_t bits = dy_mix64(key + (index + 1) * 0x9E3779B97F4A7C15ull) >> 40;
    return (float)((int32_t)(bits << 1) - (int32_t)(1 << 24)) * (1.0f / 16777216.0f);
}

/* ---- f16 / bf16 bit conversion, exact and identical on every backend ---- */
DY_INLINE float dy_bf16_to_f32(uint16_t h)
{
    union { uint32_t u; float f; } v = { (uint32_t)h << 16 };
    return v.f;
}

DY_INLINE uint16_t dy_f32_to_bf16(float f)
{
    union { float f; uint32_t u; } v = { f };
    if ((v.u & 0x7fffffffu) > 0x7f800000u)
        return (uint16_t)((v.u >> 16) | 0x40); /* quiet NaN */
    v.u += 0x7fffu + ((v.u >> 16) & 1u);
    return (uint16_t)(v.u >> 16);
}

DY_INLINE float dy_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t man = h & 0x3ffu;
    union { uint32_t u; float f; } v;
    if (exp == 0) {
        if (man == 0) {
            v.u = sign;
            return v.f;
        }
        /* subnormal: value = man * 2^-24 */
        v.f = (float)man * (1.0f / 16777216.0f);
        v.u |= sign;
        return v.f;
    }
    if (exp == 31)
        v.u = sign | 0x7f800000u | (man << 13);
    else
        v.u = sign | ((exp + 112u) << 23) | (man << 13);
    return v.f;
}

DY_INLINE uint16_t dy_f32_to_f16(float f)
{
    union { float f; uint32_t u; } v = { f };
    uint32_t sign = (v.u >> 16) & 0x8000u;
    uint32_t abs = v.u & 0x7fffffffu;
    if (abs > 0x7f800000u)
        return (uint16_t)(sign | 0x7e00u);
    if (abs >= 0x477ff000u) /* rounds to >= 65520: infinity */
        return (uint16_t)(sign | 0x7c00u);
    if (abs < 0x38800000u) { /* below the smallest normal half: subnormal */
        union { uint32_t u; float f; } a = { abs };
        /* adding 0.5 puts the half subnormal's bits at the bottom of the
         * float mantissa, rounded to nearest even by the FPU */
        a.f += 0.5f;
        return (uint16_t)(sign | (a.u - 0x3f000000u));
    }
    uint32_t mant_odd = (abs >> 13) & 1u;
    abs += 0xc8000fffu + mant_odd; /* rebias exponent (-112 << 23) and round */
    return (uint16_t)(sign | (abs >> 13));
}

/* ---- fp8 E4M3 (OCP "fn": bias 7, no infinities, 0x7f is NaN) ---- */
DY_INLINE float dy_fp8_to_f32(uint8_t b)
{
    uint32_t sign = (uint32_t)(b & 0x80u) << 24, exp = (b >> 3) & 0xfu, man = b & 7u;
    union { uint32_t u; float f; } v;
    if (exp == 0) { /* subnormal: man * 2^-9 */
        v.f = (float)man * (1.0f / 512.0f);
        v.u |= sign;
        return v.f;
    }
    if (exp == 15 && man == 7) {
        v.u = sign | 0x7fc00000u;
        return v.f;
    }
    v.u = sign | ((exp + 120u) << 23) | (man << 20);
    return v.f;
}

/* Round to nearest even, saturating to +-448 (infinities too); NaN stays NaN. */
DY_INLINE uint8_t dy_f32_to_fp8(float f)
{
    union { float f; uint32_t u; } v = { f };
    uint8_t sign = (uint8_t)((v.u >> 24) & 0x80u);
    uint32_t abs = v.u & 0x7fffffffu;
    if (abs > 0x7f800000u)
        return (uint8_t)(sign | 0x7fu);
    if (abs >= 0x43e00000u) /* 448 */
        return (uint8_t)(sign | 0x7eu);
    if (abs < 0x3c800000u) { /* below 2^-6, the smallest normal: steps of 2^-9 */
        union { uint32_t u; float f; } a = { abs };
        /* a.f * 512 < 8 is exact; adding and taking away 2^23 rounds it to
         * an integer, nearest even; 8 becomes the smallest normal, 0x08 */
        float r = (a.f * 512.0f + 8388608.0f) - 8388608.0f;
        return (uint8_t)(sign | (uint8_t)r);
    }
    abs += 0x7ffffu + ((abs >> 20) & 1u); /* round the 20 dropped bits */
    return (uint8_t)(sign | ((abs - (120u << 23)) >> 20));
}

/* Element i of a buffer of dtype t, as f32 (host-side helper). int8 is the
 * integer itself: its scale lives elsewhere. */
DY_INLINE float dy_load_f32(const void *base, enum dy_dtype t, size_t i)
{
    switch (t) {
    case DY_F16: return dy_f16_to_f32(((const uint16_t *)base)[i]);
    case DY_BF16: return dy_bf16_to_f32(((const uint16_t *)base)[i]);
    case DY_I32: return (float)((const int32_t *)base)[i];
    case DY_FP8: return dy_fp8_to_f32(((const uint8_t *)base)[i]);
    case DY_I8: return (float)((const int8_t *)base)[i];
    default: return ((const float *)base)[i];
    }
}

DY_INLINE void dy_store_f32(void *base, enum dy_dtype t, size_t i, float x)
{
    switch (t) {
    case DY_F16: ((uint16_t *)base)[i] = dy_f32_to_f16(x); break;
    case DY_BF16: ((uint16_t *)base)[i] = dy_f32_to_bf16(x); break;
    case DY_I32: ((int32_t *)base)[i] = (int32_t)x; break;
    case DY_FP8: ((uint8_t *)base)[i] = dy_f32_to_fp8(x); break;
    case DY_I8: ((int8_t *)base)[i] = (int8_t)x; break;
    default: ((float *)base)[i] = x; break;
    }
}

/* Element (j, i) of a quantized [n, k] matrix (struct dy_quant), host-side
 * pointers: q, scale (f32) and zero (u8, or NULL). */
DY_INLINE float dy_dequant(const void *q, enum dy_dtype t, const float *scale,
                           const uint8_t *zero, int k, int group, size_t j, size_t i)
{
    size_t e = j * (size_t)k + i;
    if (t == DY_FP8)
        return scale[0] * dy_fp8_to_f32(((const uint8_t *)q)[e]);
    if (t == DY_I8)
        return scale[j] * (float)((const int8_t *)q)[e];
    size_t g = j * (size_t)(k / group) + i / (size_t)group;
    int nib = (((const uint8_t *)q)[e / 2] >> (4 * (e & 1))) & 15;
    return scale[g] * (float)(nib - (zero ? zero[g] : 8));
}

/* ---- the caller's side: contexts and wrappers (backends/dispatch.c) ---- */

/* A context wraps one backend context, accounts its allocations and keeps
 * the last error. dy_ctx_create allocates it; dy_ctx_destroy frees it and
 * every buffer still allocated through it. */
typedef struct dy_ctx dy_ctx;

int dy_ctx_create(const struct dy_backend *be, int device, dy_ctx **out);
void dy_ctx_destroy(dy_ctx *ctx);
const struct dy_backend *dy_ctx_backend(const dy_ctx *ctx);
int dy_ctx_device(const dy_ctx *ctx);
/* The last failure: our message plus the vendor's text where there is one. */
const char *dy_ctx_error(const dy_ctx *ctx);
/* Bytes allocated now and at most since the last dy_mem_reset_peak. */
uint64_t dy_mem_in_use(const dy_ctx *ctx);
uint64_t dy_mem_peak(const dy_ctx *ctx);
void dy_mem_reset_peak(dy_ctx *ctx);

/* With DYNO_PROFILE_OPS=1 in the environment every op is timed with device
 * events; these restart and print (to stderr) the per-op totals. */
void dy_profile_reset(dy_ctx *ctx);
void dy_profile_print(dy_ctx *ctx, const char *title);

/* Allocates `bytes` on the device; *out is owned by the caller, freed with
 * dy_buf_free (or with the context). */
int dy_buf_alloc(dy_ctx *ctx, size_t bytes, dy_buf *out);
void dy_buf_free(dy_ctx *ctx, dy_buf *buf);
int dy_buf_write(dy_ctx *ctx, dy_buf dst, const void *src, size_t bytes);
int dy_buf_read(dy_ctx *ctx, dy_buf src, void *dst, size_t bytes);
int dy_buf_copy(dy_ctx *ctx, dy_buf dst, dy_buf src, size_t bytes);
int dy_buf_fill(dy_ctx *ctx, dy_buf dst, uint8_t byte, size_t bytes);
int dy_mem_info(dy_ctx *ctx, struct dy_mem_info *info);
/* The device's energy counter (backend slot energy_read), joules from a
 * fixed origin; DY_E_UNSUPPORTED without telemetry. */
int dy_energy_read(dy_ctx *ctx, double *joules);

int dy_sync(dy_ctx *ctx);
int dy_event_create(dy_ctx *ctx, void **event);
void dy_event_destroy(dy_ctx *ctx, void *event);
int dy_event_record(dy_ctx *ctx, void *event);
int dy_event_elapsed_ns(dy_ctx *ctx, void *start, void *end, uint64_t *ns);

int dy_fill_random(dy_ctx *ctx, const struct dy_fill_random_desc *d);
int dy_gemm(dy_ctx *ctx, const struct dy_gemm_desc *d);
int dy_norm(dy_ctx *ctx, const struct dy_norm_desc *d);
int dy_rope(dy_ctx *ctx, const struct dy_rope_desc *d);
int dy_eltwise(dy_ctx *ctx, const struct dy_eltwise_desc *d);
int dy_gather_rows(dy_ctx *ctx, const struct dy_gather_rows_desc *d);
int dy_kv_append(dy_ctx *ctx, const struct dy_kv_append_desc *d);
int dy_attention_prefill(dy_ctx *ctx, const struct dy_attention_prefill_desc *d);
int dy_attention_decode(dy_ctx *ctx, const struct dy_attention_decode_desc *d);
int dy_argmax(dy_ctx *ctx, const struct dy_argmax_desc *d);
int dy_convert(dy_ctx *ctx, const struct dy_convert_desc *d);
int dy_softmax_topk(dy_ctx *ctx, const struct dy_softmax_topk_desc *d);
int dy_moe_sort(dy_ctx *ctx, const struct dy_moe_sort_desc *d);
int dy_gemm_grouped(dy_ctx *ctx, const struct dy_gemm_grouped_desc *d);
int dy_scatter_add_rows(dy_ctx *ctx, const struct dy_scatter_add_rows_desc *d);
int dy_kv_block_scores(dy_ctx *ctx, const struct dy_kv_block_scores_desc *d);
int dy_dequantize(dy_ctx *ctx, const struct dy_dequantize_desc *d);

/* Graphs of ops (backend slots graph_*). dy_graph_available is false when
 * the backend has none, when DYNO_GRAPHS=0, or while DYNO_PROFILE_OPS times
 * each op. */
bool dy_graph_available(const dy_ctx *ctx);
int dy_graph_begin(dy_ctx *ctx);
/* Ends the recording; *graph is the caller's, freed with dy_graph_destroy. */
int dy_graph_end(dy_ctx *ctx, void **graph);
int dy_graph_launch(dy_ctx *ctx, void *graph);
void dy_graph_destroy(dy_ctx *ctx, void *graph);

/* ---- the registry (backends/registry.c) --------------------------------
 * Built-in backends plus plugins found next to the executable, in
 * ../lib/dyno, and in the directories of $DYNO_PLUGIN_PATH. */
struct dy_backend_entry {
    const char *name;
    const struct dy_backend *be; /* NULL when unavailable */
    char why[256];               /* why it is unavailable, or "" */
};

/* Loads plugins once; the returned array lives until process exit. */
int dy_registry_list(const struct dy_backend_entry **entries, int *count);
/* The backend called `name`, or NULL with `why` filled in. */
const struct dy_backend *dy_registry_find(const char *name, char *why, size_t why_len);

#ifdef __cplusplus
}
#endif

#endif
