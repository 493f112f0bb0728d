/* cpu-ref: the naive oracle. Plain loops, double accumulation, no threads;
 * every other backend is tested against it. Never benchmarked as a product. */
#ifndef DY_CPU_REF_H
#define DY_CPU_REF_H

#include "../backend.h"

extern const struct dy_backend dy_backend_cpu_ref;

/* Host pointer of a view (device memory is host memory here). */
static inline void *dy_ref_ptr(dy_buf b)
{
    return (char *)b.h->impl + b.off;
}

int dy_ref_fill_random(void *ctx, const struct dy_fill_random_desc *d);
int dy_ref_gemm(void *ctx, const struct dy_gemm_desc *d);
int dy_ref_norm(void *ctx, const struct dy_norm_desc *d);
int dy_ref_rope(void *ctx, const struct dy_rope_desc *d);
int dy_ref_eltwise(void *ctx, const struct dy_eltwise_desc *d);
int dy_ref_gather_rows(void *ctx, const struct dy_gather_rows_desc *d);
int dy_ref_kv_append(void *ctx, const struct dy_kv_append_desc *d);
int dy_ref_attention_prefill(void *ctx, const struct dy_attention_prefill_desc *d);
int dy_ref_attention_decode(void *ctx, const struct dy_attention_decode_desc *d);
int dy_ref_argmax(void *ctx, const struct dy_argmax_desc *d);
int dy_ref_convert(void *ctx, const struct dy_convert_desc *d);
int dy_ref_softmax_topk(void *ctx, const struct dy_softmax_topk_desc *d);
int dy_ref_moe_sort(void *ctx, const struct dy_moe_sort_desc *d);
int dy_ref_gemm_grouped(void *ctx, const struct dy_gemm_grouped_desc *d);
int dy_ref_scatter_add_rows(void *ctx, const struct dy_scatter_add_rows_desc *d);
int dy_ref_kv_block_scores(void *ctx, const struct dy_kv_block_scores_desc *d);
int dy_ref_dequantize(void *ctx, const struct dy_dequantize_desc *d);

/* Reads element (j, i) of a weight matrix [n, k] of dtype t: quantized
 * through qp (the matrix's own scales), else the value itself (row stride
 * ld). */
struct dy_ref_weights {
    const void *b;
    const float *scale;
    const uint8_t *zero;
    enum dy_dtype dtype;
    int k, ld, group;
};

static inline struct dy_ref_weights dy_ref_weights_of(dy_buf b, enum dy_dtype t, const struct dy_quant *qp,
                                                      int k, int ld)
{
    struct dy_ref_weights w = { dy_ref_ptr(b), NULL, NULL, t, k, ld, qp->group };
    if (dy_dtype_quantized(t)) {
        w.scale = dy_ref_ptr(qp->scale);
        w.zero = qp->zero.h ? dy_ref_ptr(qp->zero) : NULL;
    }
    return w;
}

static inline double dy_ref_weight(const struct dy_ref_weights *w, size_t j, size_t i)
{
    if (dy_dtype_quantized(w->dtype))
        return dy_dequant(w->b, w->dtype, w->scale, w->zero, w->k, w->group, j, i);
    return dy_load_f32(w->b, w->dtype, j * (size_t)w->ld + i);
}

#endif
