/* The OpenCL backend's ops other than GEMM: argument marshalling and launch
 * geometry for the kernels of kernels/ops.cl and kernels/attention.cl. */
#include "opencl_internal.h"

/* Element-wise kernels: this many items along a row per work-group. */
#define ROW_LOCAL 64
/* Per-item accumulators of the prefill kernel (kernels/attention.cl's
 * ACC_MAX). */
#define PREFILL_ACC 16
/* Largest tile of keys the prefill kernel takes per step. */
#define PREFILL_MAX_K_TILE 64

static const size_t row_local[2] = { ROW_LOCAL, 1 };
static const size_t group_local[1] = { DY_OCL_WG };

static bool is_float_dtype(enum dy_dtype t)
{
    return t == DY_F32 || t == DY_F16 || t == DY_BF16;
}

static int bad_dtype(struct dy_ocl_ctx *c, const char *op, enum dy_dtype t)
{
    return dy_ocl_failf(c, DY_E_UNSUPPORTED, "%s: dtype %s is not supported", op,
                        dy_ocl_dtype_name(t));
}

int dy_ocl_fill_random(void *ctx, const struct dy_fill_random_desc *d)
{
    struct dy_ocl_ctx *c = ctx;
    if (!is_float_dtype(d->dtype))
        return bad_dtype(c, "fill_random", d->dtype);
    cl_mem dst = dy_ocl_mem(d->dst);
    cl_ulong dst_off = dy_ocl_off(d->dst), count = d->count;
    cl_ulong key = dy_random_key(d->seed, d->stream);
    cl_int dtype = d->dtype;
    cl_uint opaque_zero = 0; /* see the kernel */
    size_t global = d->count;
    return dy_ocl_launch(c, DY_OCL_K_fill_random, 1, &global, group_local,
                         DY_OCL_ARGS(DY_OCL_ARG(dst), DY_OCL_ARG(dst_off), DY_OCL_ARG(count),
                                     DY_OCL_ARG(dtype), DY_OCL_ARG(key), DY_OCL_ARG(d->scale),
                                     DY_OCL_ARG(d->offset), DY_OCL_ARG(opaque_zero)));
}

int dy_ocl_convert(void *ctx, const struct dy_convert_desc *d)
{
    struct dy_ocl_ctx *c = ctx;
    if (!is_float_dtype(d->src_dtype) || !is_float_dtype(d->dst_dtype))
        return bad_dtype(c, "convert", is_float_dtype(d->src_dtype) ? d->dst_dtype : d->src_dtype);
    cl_mem src = dy_ocl_mem(d->src), dst = dy_ocl_mem(d->dst);
    cl_ulong src_off = dy_ocl_off(d->src), dst_off = dy_ocl_off(d->dst), count = d->count;
    cl_int src_dtype = d->src_dtype, dst_dtype = d->dst_dtype;
    size_t global = d->count;
    return dy_ocl_launch(c, DY_OCL_K_convert, 1, &global, group_local,
                         DY_OCL_ARGS(DY_OCL_ARG(src), DY_OCL_ARG(src_off), DY_OCL_ARG(src_dtype),
                                     DY_OCL_ARG(dst), DY_OCL_ARG(dst_off), DY_OCL_ARG(dst_dtype),
                                     DY_OCL_ARG(count)));
}

int dy_ocl_eltwise(void *ctx, const struct dy_eltwise_desc *d)
{
    struct dy_ocl_ctx *c = ctx;
    if (!is_float_dtype(d->dtype))
        return bad_dtype(c, "eltwise", d->dtype);
    if (d->op < DY_ELT_ADD || d->op > DY_ELT_GELU)
        return dy_ocl_failf(c, DY_E_INVALID, "eltwise: unknown op %d", (int)d->op);
    if (d->op != DY_ELT_GELU && !d->b.h)
        return dy_ocl_failf(c, DY_E_INVALID, "eltwise: op %d needs b", (int)d->op);
    cl_mem a = dy_ocl_mem(d->a), b = dy_ocl_mem(d->b), out = dy_ocl_mem(d->out);
    cl_ulong a_off = dy_ocl_off(d->a), b_off = dy_ocl_off(d->b), out_off = dy_ocl_off(d->out);
    cl_int op = d->op, dtype = d->dtype;
    size_t global[2] = { (size_t)d->cols, (size_t)d->rows };
    return dy_ocl_launch(c, DY_OCL_K_eltwise, 2, global, row_local,
                         DY_OCL_ARGS(DY_OCL_ARG(op), DY_OCL_ARG(a), DY_OCL_ARG(a_off),
                                     DY_OCL_ARG(d->a_stride), DY_OCL_ARG(b), DY_OCL_ARG(b_off),
                                     DY_OCL_ARG(d->b_stride), DY_OCL_ARG(out), DY_OCL_ARG(out_off),
                                     DY_OCL_ARG(d->out_stride), DY_OCL_ARG(d->rows),
                                     DY_OCL_ARG(d->cols), DY_OCL_ARG(dtype)));
}

int dy_ocl_gather_rows(void *ctx, const struct dy_gather_rows_desc *d)
{
    struct dy_ocl_ctx *c = ctx;
    if (!is_float_dtype(d->table_dtype) || !is_float_dtype(d->out_dtype))
        return bad_dtype(c, "gather_rows",
                         is_float_dtype(d->table_dtype) ? d->out_dtype : d->table_dtype);
    cl_mem table = dy_ocl_mem(d->table), ids = dy_ocl_mem(d->ids), out = dy_ocl_mem(d->out);
    cl_ulong table_off = dy_ocl_off(d->table), ids_off = dy_ocl_off(d->ids);
    cl_ulong out_off = dy_ocl_off(d->out);
    cl_int table_dtype = d->table_dtype, out_dtype = d->out_dtype;
    size_t global[2] = { (size_t)d->cols, (size_t)d->rows };
    return dy_ocl_launch(c, DY_OCL_K_gather_rows, 2, global, row_local,
                         DY_OCL_ARGS(DY_OCL_ARG(table), DY_OCL_ARG(table_off),
                                     DY_OCL_ARG(d->table_stride), DY_OCL_ARG(table_dtype),
                                     DY_OCL_ARG(ids), DY_OCL_ARG(ids_off), DY_OCL_ARG(out),
                                     DY_OCL_ARG(out_off), DY_OCL_ARG(d->out_stride),
                                     DY_OCL_ARG(out_dtype), DY_OCL_ARG(d->rows),
                                     DY_OCL_ARG(d->cols)));
}

int dy_ocl_kv_append(void *ctx, const struct dy_kv_append_desc *d)
{
    struct dy_ocl_ctx *c = ctx;
    if (!is_float_dtype(d->src_dtype) || !is_float_dtype(d->cache_dtype))
        return bad_dtype(c, "kv_append",
                         is_float_dtype(d->src_dtype) ? d->cache_dtype : d->src_dtype);
    cl_mem k = dy_ocl_mem(d->k), v = dy_ocl_mem(d->v), slots = dy_ocl_mem(d->slots);
    cl_mem kc = dy_ocl_mem(d->k_cache), vc = dy_ocl_mem(d->v_cache);
    cl_ulong k_off = dy_ocl_off(d->k), v_off = dy_ocl_off(d->v), slots_off = dy_ocl_off(d->slots);
    cl_ulong kc_off = dy_ocl_off(d->k_cache), vc_off = dy_ocl_off(d->v_cache);
    cl_int src_dtype = d->src_dtype, cache_dtype = d->cache_dtype;
    cl_int row = d->kv_heads * d->head_dim;
    size_t global[2] = { (size_t)row, (size_t)d->tokens };
    return dy_ocl_launch(c, DY_OCL_K_kv_append, 2, global, row_local,
                         DY_OCL_ARGS(DY_OCL_ARG(k), DY_OCL_ARG(k_off), DY_OCL_ARG(v),
                                     DY_OCL_ARG(v_off), DY_OCL_ARG(d->src_stride),
                                     DY_OCL_ARG(src_dtype), DY_OCL_ARG(slots),
                                     DY_OCL_ARG(slots_off), DY_OCL_ARG(kc), DY_OCL_ARG(kc_off),
                                     DY_OCL_ARG(vc), DY_OCL_ARG(vc_off), DY_OCL_ARG(cache_dtype),
                                     DY_OCL_ARG(d->tokens), DY_OCL_ARG(row)));
}

int dy_ocl_rope(void *ctx, const struct dy_rope_desc *d)
{
    struct dy_ocl_ctx *c = ctx;
    if (!is_float_dtype(d->dtype))
        return bad_dtype(c, "rope", d->dtype);
    if (d->head_dim % 2)
        return dy_ocl_failf(c, DY_E_INVALID, "rope: odd head_dim %d", d->head_dim);
    cl_mem x = dy_ocl_mem(d->x), pos = dy_ocl_mem(d->positions), freq = dy_ocl_mem(d->inv_freq);
    cl_ulong x_off = dy_ocl_off(d->x), pos_off = dy_ocl_off(d->positions);
    cl_ulong freq_off = dy_ocl_off(d->inv_freq);
    cl_int dtype = d->dtype;
    size_t global[2] = { (size_t)d->heads * (size_t)(d->head_dim / 2), (size_t)d->tokens };
    return dy_ocl_launch(c, DY_OCL_K_rope, 2, global, row_local,
                         DY_OCL_ARGS(DY_OCL_ARG(x), DY_OCL_ARG(x_off), DY_OCL_ARG(pos),
                                     DY_OCL_ARG(pos_off), DY_OCL_ARG(freq), DY_OCL_ARG(freq_off),
                                     DY_OCL_ARG(d->tokens), DY_OCL_ARG(d->heads),
                                     DY_OCL_ARG(d->head_dim), DY_OCL_ARG(d->row_stride),
                                     DY_OCL_ARG(dtype)));
}

int dy_ocl_norm(void *ctx, const struct dy_norm_desc *d)
{
    struct dy_ocl_ctx *c = ctx;
    if (!is_float_dtype(d->dtype) || !is_float_dtype(d->weight_dtype))
        return bad_dtype(c, "norm", is_float_dtype(d->dtype) ? d->weight_dtype : d->dtype);
    if (d->kind != DY_NORM_RMS && d->kind != DY_NORM_LAYER)
        return dy_ocl_failf(c, DY_E_INVALID, "norm: unknown kind %d", (int)d->kind);
    cl_mem x = dy_ocl_mem(d->x), w = dy_ocl_mem(d->weight), out = dy_ocl_mem(d->out);
    /* RMSNorm has no bias whatever the descriptor holds */
    cl_mem bias = d->kind == DY_NORM_LAYER ? dy_ocl_mem(d->bias) : NULL;
    cl_ulong x_off = dy_ocl_off(d->x), w_off = dy_ocl_off(d->weight);
    cl_ulong bias_off = dy_ocl_off(d->bias), out_off = dy_ocl_off(d->out);
    cl_int kind = d->kind, wt = d->weight_dtype, dtype = d->dtype;
    size_t global = (size_t)d->rows * DY_OCL_WG;
    return dy_ocl_launch(c, DY_OCL_K_norm, 1, &global, group_local,
                         DY_OCL_ARGS(DY_OCL_ARG(kind), DY_OCL_ARG(x), DY_OCL_ARG(x_off),
                                     DY_OCL_ARG(d->x_stride), DY_OCL_ARG(w), DY_OCL_ARG(w_off),
                                     DY_OCL_ARG(bias), DY_OCL_ARG(bias_off), DY_OCL_ARG(wt),
                                     DY_OCL_ARG(out), DY_OCL_ARG(out_off),
                                     DY_OCL_ARG(d->out_stride), DY_OCL_ARG(d->dim),
                                     DY_OCL_ARG(d->eps), DY_OCL_ARG(dtype)));
}

int dy_ocl_argmax(void *ctx, const struct dy_argmax_desc *d)
{
    struct dy_ocl_ctx *c = ctx;
    if (!is_float_dtype(d->dtype))
        return bad_dtype(c, "argmax", d->dtype);
    cl_mem x = dy_ocl_mem(d->x), out = dy_ocl_mem(d->out);
    cl_ulong x_off = dy_ocl_off(d->x), out_off = dy_ocl_off(d->out);
    cl_int dtype = d->dtype;
    size_t global = (size_t)d->rows * DY_OCL_WG;
    return dy_ocl_launch(c, DY_OCL_K_argmax, 1, &global, group_local,
                         DY_OCL_ARGS(DY_OCL_ARG(x), DY_OCL_ARG(x_off), DY_OCL_ARG(d->stride),
                                     DY_OCL_ARG(dtype), DY_OCL_ARG(out), DY_OCL_ARG(out_off),
                                     DY_OCL_ARG(d->cols)));
}

static int check_heads(struct dy_ocl_ctx *c, const char *op, int heads, int kv_heads)
{
    if (kv_heads < 1 || heads % kv_heads)
        return dy_ocl_failf(c, DY_E_INVALID, "%s: %d heads do not group over %d KV heads", op,
                            heads, kv_heads);
    return DY_OK;
}

/* The query tile fills the work-group's accumulators (at most 64 rows: the
 * per-row softmax runs on one item per row); the key tile is the largest
 * power of two up to PREFILL_MAX_K_TILE whose K, V and scores fit in local
 * memory beside Q and the kernel's own arrays. */
static bool prefill_tiles(const struct dy_ocl_ctx *c, int head_dim, int *q_tile, int *k_tile)
{
    int q = PREFILL_ACC * DY_OCL_WG / head_dim;
    if (q > 64)
        q = 64;
    *q_tile = q;
    if (q < 1)
        return false;
    size_t fixed = (size_t)3 * DY_OCL_WG * sizeof(float) + (size_t)q * head_dim * sizeof(float);
    for (int k = PREFILL_MAX_K_TILE; k >= 1; k /= 2) {
        size_t per_tile = (size_t)k * (2 * head_dim + 1 + q) * sizeof(float);
        if (fixed + per_tile <= c->local_mem) {
            *k_tile = k;
            return true;
        }
    }
    return false;
}

int dy_ocl_attention_prefill(void *ctx, const struct dy_attention_prefill_desc *d)
{
    struct dy_ocl_ctx *c = ctx;
    int st = check_heads(c, "attention_prefill", d->heads, d->kv_heads);
    if (st != DY_OK)
        return st;
    if (!is_float_dtype(d->dtype))
        return bad_dtype(c, "attention_prefill", d->dtype);
    int q_tile, k_tile;
    if (d->head_dim < 1 || !prefill_tiles(c, d->head_dim, &q_tile, &k_tile))
        return dy_ocl_failf(c, DY_E_UNSUPPORTED,
                            "attention_prefill: head_dim %d does not fit %llu bytes of local "
                            "memory",
                            d->head_dim, (unsigned long long)c->local_mem);
    cl_mem q = dy_ocl_mem(d->q), k = dy_ocl_mem(d->k), v = dy_ocl_mem(d->v);
    cl_mem out = dy_ocl_mem(d->out);
    cl_ulong q_off = dy_ocl_off(d->q), k_off = dy_ocl_off(d->k), v_off = dy_ocl_off(d->v);
    cl_ulong out_off = dy_ocl_off(d->out);
    cl_int causal = d->causal, dtype = d->dtype;
    size_t hd = (size_t)d->head_dim, f = sizeof(float);
    size_t q_tiles = ((size_t)d->seq_len + (size_t)q_tile - 1) / (size_t)q_tile;
    size_t global[3] = { q_tiles * DY_OCL_WG, (size_t)d->heads, (size_t)d->batch };
    const size_t local[3] = { DY_OCL_WG, 1, 1 };
    return dy_ocl_launch(c, DY_OCL_K_attention_prefill, 3, global, local,
                         DY_OCL_ARGS(DY_OCL_ARG(q), DY_OCL_ARG(q_off), DY_OCL_ARG(d->q_stride),
                                     DY_OCL_ARG(k), DY_OCL_ARG(k_off), DY_OCL_ARG(v),
                                     DY_OCL_ARG(v_off), DY_OCL_ARG(d->kv_stride), DY_OCL_ARG(out),
                                     DY_OCL_ARG(out_off), DY_OCL_ARG(d->out_stride),
                                     DY_OCL_ARG(d->seq_len), DY_OCL_ARG(d->heads),
                                     DY_OCL_ARG(d->kv_heads), DY_OCL_ARG(d->head_dim),
                                     DY_OCL_ARG(d->scale), DY_OCL_ARG(causal), DY_OCL_ARG(dtype),
                                     DY_OCL_ARG(q_tile), DY_OCL_ARG(k_tile),
                                     DY_OCL_LOCAL((size_t)q_tile * hd * f),
                                     DY_OCL_LOCAL((size_t)k_tile * (hd + 1) * f),
                                     DY_OCL_LOCAL((size_t)k_tile * hd * f),
                                     DY_OCL_LOCAL((size_t)q_tile * (size_t)k_tile * f)));
}

/* Splits of the context per (sequence, head) in decode: enough work-groups
 * for eight per compute unit (the kernel waits on memory, so it wants many
 * in flight), each split at least one chunk of keys. The last split takes
 * whatever lies past the others, so a max_context below a real length
 * costs speed, never keys. */
static int decode_splits(const struct dy_ocl_ctx *c, const struct dy_attention_decode_desc *d,
                         int *split_len)
{
    int bound = d->block_size * d->max_blocks_per_seq;
    int context = d->max_context > 0 && d->max_context < bound ? d->max_context : bound;
    int chunks = (context + DY_OCL_WG - 1) / DY_OCL_WG;
    int groups = d->batch * d->heads;
    int splits = (8 * c->compute_units + groups - 1) / groups;
    if (splits > chunks)
        splits = chunks;
    if (splits < 1)
        splits = 1;
    *split_len = (chunks + splits - 1) / splits * DY_OCL_WG;
    return (context + *split_len - 1) / *split_len;
}

int dy_ocl_attention_decode(void *ctx, const struct dy_attention_decode_desc *d)
{
    struct dy_ocl_ctx *c = ctx;
    int st = check_heads(c, "attention_decode", d->heads, d->kv_heads);
    if (st != DY_OK)
        return st;
    if (!is_float_dtype(d->dtype) || !is_float_dtype(d->cache_dtype))
        return bad_dtype(c, "attention_decode",
                         is_float_dtype(d->dtype) ? d->cache_dtype : d->dtype);
    /* wide loads need head_dim in eights and K and V on 16 bytes; one item
     * takes 8 dimensions with them, one without */
    cl_int vec = d->head_dim % 8 == 0 && d->k_cache.off % 16 == 0 && d->v_cache.off % 16 == 0;
    if (d->head_dim < 1 || d->head_dim > (vec ? 8 : 1) * DY_OCL_WG)
        return dy_ocl_failf(c, DY_E_UNSUPPORTED,
                            "attention_decode: head_dim %d above %d (%d with head_dim in "
                            "eights and the caches on 16 bytes)",
                            d->head_dim, DY_OCL_WG, 8 * DY_OCL_WG);
    if (d->block_size < 1 || d->max_blocks_per_seq < 1)
        return dy_ocl_failf(c, DY_E_INVALID,
                            "attention_decode: block_size %d, %d blocks per sequence",
                            d->block_size, d->max_blocks_per_seq);
    if (d->batch < 1 || d->heads < 1)
        return DY_OK;
    cl_int split_len, splits = decode_splits(c, d, &split_len);
    cl_mem partial = NULL;
    size_t partial_bytes = (size_t)d->batch * d->heads * splits * (d->head_dim + 2) * sizeof(float);
    if (splits > 1 && (st = dy_ocl_scratch(c, partial_bytes, &partial)) != DY_OK)
        return st;
    cl_mem q = dy_ocl_mem(d->q), out = dy_ocl_mem(d->out);
    cl_mem kc = dy_ocl_mem(d->k_cache), vc = dy_ocl_mem(d->v_cache);
    cl_mem table = dy_ocl_mem(d->block_table), lens = dy_ocl_mem(d->context_lens);
    cl_ulong q_off = dy_ocl_off(d->q), out_off = dy_ocl_off(d->out);
    cl_ulong kc_off = dy_ocl_off(d->k_cache), vc_off = dy_ocl_off(d->v_cache);
    cl_ulong table_off = dy_ocl_off(d->block_table), lens_off = dy_ocl_off(d->context_lens);
    cl_int dtype = d->dtype, cache_dtype = d->cache_dtype;
    size_t global[3] = { (size_t)d->heads * DY_OCL_WG, (size_t)d->batch, (size_t)splits };
    const size_t local[3] = { DY_OCL_WG, 1, 1 };
    st = dy_ocl_launch(c, DY_OCL_K_attention_decode, 3, global, local,
                       DY_OCL_ARGS(DY_OCL_ARG(q), DY_OCL_ARG(q_off), DY_OCL_ARG(d->q_stride),
                                   DY_OCL_ARG(out), DY_OCL_ARG(out_off), DY_OCL_ARG(d->out_stride),
                                   DY_OCL_ARG(kc), DY_OCL_ARG(kc_off), DY_OCL_ARG(vc),
                                   DY_OCL_ARG(vc_off), DY_OCL_ARG(table), DY_OCL_ARG(table_off),
                                   DY_OCL_ARG(lens), DY_OCL_ARG(lens_off), DY_OCL_ARG(d->heads),
                                   DY_OCL_ARG(d->kv_heads), DY_OCL_ARG(d->head_dim),
                                   DY_OCL_ARG(d->block_size), DY_OCL_ARG(d->max_blocks_per_seq),
                                   DY_OCL_ARG(d->scale), DY_OCL_ARG(dtype), DY_OCL_ARG(cache_dtype),
                                   DY_OCL_ARG(vec), DY_OCL_ARG(split_len), DY_OCL_ARG(partial),
                                   DY_OCL_LOCAL((size_t)d->head_dim * sizeof(float))));
    if (st != DY_OK || splits == 1)
        return st;
    return dy_ocl_launch(c, DY_OCL_K_attention_decode_combine, 2, global, local,
                         DY_OCL_ARGS(DY_OCL_ARG(partial), DY_OCL_ARG(splits),
                                     DY_OCL_ARG(d->heads), DY_OCL_ARG(d->head_dim), DY_OCL_ARG(out),
                                     DY_OCL_ARG(out_off), DY_OCL_ARG(d->out_stride),
                                     DY_OCL_ARG(dtype)));
}
