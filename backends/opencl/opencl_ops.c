/* The OpenCL backend's ops other than GEMM, and GEMM with quantized B:
 * kernel_ops.inc, kernel_quant.inc and kernel_moe.inc over OpenCL's
 * launch. */
#include "opencl_internal.h"

#define KO_FN(name) dy_ocl_##name
#define KO_CTX struct dy_ocl_ctx
#define KO_MEM cl_mem
#define KO_MEM_OF dy_ocl_mem
#define KO_OFF dy_ocl_off
#define KO_KERNEL(name) DY_OCL_K_##name
#define KO_LAUNCH dy_ocl_launch
#define KO_ARGS DY_OCL_ARGS
#define KO_ARG DY_OCL_ARG
#define KO_LOCAL DY_OCL_LOCAL
#define KO_WG DY_OCL_WG
#define KO_FAILF dy_ocl_failf
#define KO_DTYPE_NAME dy_ocl_dtype_name
#define KO_SCRATCH dy_ocl_scratch
#define KO_GEMV_LANES(c) ((c)->gemv_lanes)
#define KO_GEMV_OLD(c) ((c)->gemv_old)
#define KO_GEMV1_GPU(c, d) dy_ocl_gemv1_fits(c, d)
#define KO_SPANS(c) ((c)->spans)

#include "kernel_ops.inc"
#include "kernel_quant.inc"
#include "kernel_moe.inc"

/* kernels/layer.cl's decode_layer: a dense layer's decode step at one
 * sequence as one launch, where every GEMV is one gemv1_gpu takes (f32 A
 * and C, one dtype of B), attention reads an f32 q that is not int8
 * scaled, and the kernel's arguments fit the device; else
 * DY_E_UNSUPPORTED, and dy_decode_layer runs the ops one by one. */
static bool layer_gemv_fits(const struct dy_ocl_ctx *c, const struct dy_gemm_desc *g, enum dy_dtype b_dtype)
{
    return dy_ocl_gemv1_fits(c, g) && g->m == 1 && g->a_dtype == DY_F32 && g->c_dtype == DY_F32 &&
           g->b_dtype == b_dtype && g->ldb == g->k;
}

/* Work-groups of gemv1_gpu for g, as dy_ocl_gemv launches it */
static int32_t gemv1_groups(const struct dy_gemm_desc *g)
{
    int swiglu_half = g->act == DY_ACT_SWIGLU ? g->n / 2 : 0;
    int rope_cols = g->act == DY_ACT_ROPE ? g->rope.heads * g->rope.head_dim : 0;
    return swiglu_half ? (swiglu_half + GEMV_ROWS / 2 - 1) / (GEMV_ROWS / 2)
                       : rope_cols / GEMV_ROWS + (g->n - rope_cols + GEMV_ROWS - 1) / GEMV_ROWS;
}

int dy_ocl_decode_layer(void *ctx, const struct dy_decode_layer_desc *d)
{
    struct dy_ocl_ctx *c = ctx;
    const struct dy_attention_decode_desc *at = &d->attention;
    const struct dy_gemm_desc *qkv = &d->qkv, *o = &d->o, *gu = &d->gate_up, *down = &d->down;
    enum dy_dtype wt = qkv->b_dtype;
    const struct dy_gemm_norm *n1 = &qkv->norm, *n2 = &gu->norm;
    if (!c->layer || !layer_gemv_fits(c, qkv, wt) || !layer_gemv_fits(c, o, wt) || !layer_gemv_fits(c, gu, wt) ||
        !layer_gemv_fits(c, down, wt) || qkv->act == DY_ACT_SWIGLU || o->act != DY_ACT_NONE ||
        gu->act == DY_ACT_ROPE || down->act != DY_ACT_NONE || o->norm.x.h || down->norm.x.h ||
        o->append.k_cache.h || gu->append.k_cache.h || down->append.k_cache.h ||
        (n1->x.h && n2->x.h && (n1->weight_dtype != n2->weight_dtype || n1->eps != n2->eps)) ||
        (n1->x.h && n1->x_dtype != DY_F32) || (n2->x.h && n2->x_dtype != DY_F32))
        return DY_E_UNSUPPORTED;
    if (at->batch != 1 || at->heads < 1 || at->kv_heads < 1 || at->heads % at->kv_heads || at->dtype != DY_F32 ||
        !is_cache_dtype(at->cache_dtype) || at->cache_dtype == DY_I8 || at->block_size < 1 ||
        at->max_blocks_per_seq < 1)
        return DY_E_UNSUPPORTED;
    int32_t vec = at->head_dim % 8 == 0 && at->k_cache.off % 16 == 0 && at->v_cache.off % 16 == 0;
    if (at->head_dim < 1 || at->head_dim > (vec ? 8 : 1) * DY_OCL_WG)
        return DY_E_UNSUPPORTED;
    int32_t split_len, splits = decode_splits(c, at, at->heads, 8, &split_len);
    cl_mem partial = NULL;
    size_t partial_bytes = (size_t)at->heads * splits * (at->head_dim + 2) * sizeof(float);
    int st;
    if (splits > 1 && (st = dy_ocl_scratch(c, partial_bytes, &partial)) != DY_OK)
        return st;
    if (!c->layer_count) {
        cl_int zeros[7] = { 0 }, err;
        c->layer_count = clCreateBuffer(c->context, CL_MEM_READ_WRITE | CL_MEM_COPY_HOST_PTR, sizeof zeros,
                                        zeros, &err);
        if (!c->layer_count)
            return dy_ocl_fail(c, err, "clCreateBuffer(decode_layer counts)");
    }
    int32_t n_qkv = gemv1_groups(qkv), n_o = gemv1_groups(o), n_gu = gemv1_groups(gu), n_down = gemv1_groups(down);
    size_t groups = (size_t)n_qkv + (size_t)at->heads * splits + (splits > 1 ? at->heads : 0) + n_o + n_gu + n_down;
    size_t global = groups * DY_OCL_WG, local = DY_OCL_WG;
    /* a GEMV phase's arguments (LAYER_GEMV): A is the norm's x where
     * there is a norm, as dy_ocl_gemv passes it */
#define LAYER_GEMV_ARGS(g)                                                                                        \
    DY_OCL_ARG(g##_a), DY_OCL_ARG(g##_a_off), DY_OCL_ARG(g##_b), DY_OCL_ARG(g##_b_off), DY_OCL_ARG(g##_bias),   \
        DY_OCL_ARG(g##_bias_off), DY_OCL_ARG(g##_c), DY_OCL_ARG(g##_c_off), DY_OCL_ARG(g##_norm),               \
        DY_OCL_ARG(g##_norm_off), DY_OCL_ARG(g->beta), DY_OCL_ARG(g->n), DY_OCL_ARG(g->k)
#define LAYER_GEMV_VARS(g)                                                                                        \
    cl_mem g##_a = dy_ocl_mem(g->norm.x.h ? g->norm.x : g->a), g##_b = dy_ocl_mem(g->b),                          \
           g##_bias = dy_ocl_mem(g->bias), g##_c = dy_ocl_mem(g->c), g##_norm = dy_ocl_mem(g->norm.weight);       \
    uint64_t g##_a_off = dy_ocl_off(g->norm.x.h ? g->norm.x : g->a), g##_b_off = dy_ocl_off(g->b),                \
             g##_bias_off = dy_ocl_off(g->bias), g##_c_off = dy_ocl_off(g->c),                                     \
             g##_norm_off = dy_ocl_off(g->norm.weight)
    LAYER_GEMV_VARS(qkv);
    LAYER_GEMV_VARS(o);
    LAYER_GEMV_VARS(gu);
    LAYER_GEMV_VARS(down);
    const struct dy_gemm_norm *nrm = n1->x.h ? n1 : n2;
    int32_t w_dtype = wt, norm_dtype = nrm->weight_dtype;
    float eps = nrm->eps;
    cl_mem pos = dy_ocl_mem(qkv->rope.positions), freq = dy_ocl_mem(qkv->rope.inv_freq);
    uint64_t pos_off = dy_ocl_off(qkv->rope.positions), freq_off = dy_ocl_off(qkv->rope.inv_freq);
    int32_t rope_cols = qkv->act == DY_ACT_ROPE ? qkv->rope.heads * qkv->rope.head_dim : 0;
    int32_t rope_half = qkv->act == DY_ACT_ROPE ? qkv->rope.head_dim / 2 : 0;
    const struct dy_gemm_append *ap = &qkv->append;
    cl_mem slots = dy_ocl_mem(ap->slots), kc = dy_ocl_mem(ap->k_cache), vc = dy_ocl_mem(ap->v_cache);
    uint64_t slots_off = dy_ocl_off(ap->slots), kc_off = dy_ocl_off(ap->k_cache), vc_off = dy_ocl_off(ap->v_cache);
    int32_t cache_dtype = at->cache_dtype, kv_dim = ap->k_cache.h ? ap->kv_heads * ap->head_dim : 0;
    int32_t swiglu_half = gu->act == DY_ACT_SWIGLU ? gu->n / 2 : 0;
    cl_mem q = dy_ocl_mem(at->q), out = dy_ocl_mem(at->out), akc = dy_ocl_mem(at->k_cache);
    cl_mem avc = dy_ocl_mem(at->v_cache), table = dy_ocl_mem(at->block_table), lens = dy_ocl_mem(at->context_lens);
    uint64_t q_off = dy_ocl_off(at->q), out_off = dy_ocl_off(at->out), akc_off = dy_ocl_off(at->k_cache);
    uint64_t avc_off = dy_ocl_off(at->v_cache), table_off = dy_ocl_off(at->block_table);
    uint64_t lens_off = dy_ocl_off(at->context_lens);
    /* the append's cache dtype is the attention's where there is an append */
    if (kv_dim && ap->cache_dtype != at->cache_dtype)
        return DY_E_UNSUPPORTED;
    return dy_ocl_launch(
        c, DY_OCL_K_decode_layer, 1, &global, &local,
        DY_OCL_ARGS(LAYER_GEMV_ARGS(qkv), LAYER_GEMV_ARGS(o), LAYER_GEMV_ARGS(gu), LAYER_GEMV_ARGS(down),
                    DY_OCL_ARG(w_dtype), DY_OCL_ARG(norm_dtype), DY_OCL_ARG(eps), DY_OCL_ARG(pos), DY_OCL_ARG(pos_off),
                    DY_OCL_ARG(freq), DY_OCL_ARG(freq_off), DY_OCL_ARG(rope_cols), DY_OCL_ARG(rope_half),
                    DY_OCL_ARG(slots), DY_OCL_ARG(slots_off), DY_OCL_ARG(kc), DY_OCL_ARG(kc_off), DY_OCL_ARG(vc),
                    DY_OCL_ARG(vc_off), DY_OCL_ARG(cache_dtype), DY_OCL_ARG(ap->k_col), DY_OCL_ARG(ap->v_col),
                    DY_OCL_ARG(kv_dim), DY_OCL_ARG(swiglu_half), DY_OCL_ARG(q), DY_OCL_ARG(q_off),
                    DY_OCL_ARG(out), DY_OCL_ARG(out_off), DY_OCL_ARG(akc), DY_OCL_ARG(akc_off), DY_OCL_ARG(avc),
                    DY_OCL_ARG(avc_off), DY_OCL_ARG(table), DY_OCL_ARG(table_off), DY_OCL_ARG(lens),
                    DY_OCL_ARG(lens_off), DY_OCL_ARG(at->heads), DY_OCL_ARG(at->kv_heads),
                    DY_OCL_ARG(at->head_dim), DY_OCL_ARG(at->block_size), DY_OCL_ARG(at->max_blocks_per_seq),
                    DY_OCL_ARG(at->scale), DY_OCL_ARG(vec), DY_OCL_ARG(split_len), DY_OCL_ARG(splits),
                    DY_OCL_ARG(partial), DY_OCL_ARG(c->layer_count), DY_OCL_ARG(n_qkv), DY_OCL_ARG(n_o),
                    DY_OCL_ARG(n_gu), DY_OCL_ARG(n_down), DY_OCL_LOCAL((size_t)at->head_dim * sizeof(float))));
#undef LAYER_GEMV_ARGS
#undef LAYER_GEMV_VARS
}
