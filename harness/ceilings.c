/* The device's own ceilings, measured through the backend's ops so that
 * bw_util and flop_util compare each device with itself. */
#include <stdio.h>

#include "harness.h"

static int time_op_ns(dy_ctx *ctx, void *start, void *end, int (*op)(dy_ctx *, void *),
                      void *arg, uint64_t *ns)
{
    int st;
    if ((st = dy_event_record(ctx, start)) || (st = op(ctx, arg)) ||
        (st = dy_event_record(ctx, end)) || (st = dy_sync(ctx)))
        return st;
    return dy_event_elapsed_ns(ctx, start, end, ns);
}

struct copy_arg {
    dy_buf dst, src;
    size_t bytes;
};

static int do_copy(dy_ctx *ctx, void *p)
{
    struct copy_arg *a = p;
    return dy_buf_copy(ctx, a->dst, a->src, a->bytes);
}

static int do_gemm(dy_ctx *ctx, void *p)
{
    return dy_gemm(ctx, p);
}

static int measure_copy(dy_ctx *ctx, void *e0, void *e1, double *gbps)
{
    struct dy_mem_info mem;
    size_t bytes = (size_t)256 << 20;
    if (dy_mem_info(ctx, &mem) == DY_OK && mem.free_bytes && bytes > mem.free_bytes / 8)
        bytes = (size_t)(mem.free_bytes / 8);
    struct copy_arg a = { 0 };
    int st;
    /* halve the size until two buffers fit */
    for (;;) {
        a.bytes = bytes;
        if ((st = dy_buf_alloc(ctx, bytes, &a.src)) == DY_OK &&
            (st = dy_buf_alloc(ctx, bytes, &a.dst)) == DY_OK)
            break;
        dy_buf_free(ctx, &a.src);
        if (st != DY_E_NOMEM || bytes <= ((size_t)1 << 20))
            goto done;
        bytes /= 2;
    }
    if ((st = dy_buf_fill(ctx, a.src, 1, bytes)) || (st = dy_buf_fill(ctx, a.dst, 0, bytes)))
        goto done;
    uint64_t best = UINT64_MAX;
    for (int rep = 0; rep < 6 && st == DY_OK; rep++) {
        uint64_t ns;
        st = time_op_ns(ctx, e0, e1, do_copy, &a, &ns);
        if (rep > 0 && ns < best) /* the first copy warms pages and caches */
            best = ns;
    }
    if (st == DY_OK)
        *gbps = 2.0 * (double)bytes / (double)(best ? best : 1);
done:
    dy_buf_free(ctx, &a.src);
    dy_buf_free(ctx, &a.dst);
    return st;
}

/* Square GEMMs of doubling size until one takes 100 ms or n reaches 8192. */
static int measure_gemm(dy_ctx *ctx, void *e0, void *e1, enum dy_dtype dtype,
                        double *tflops, int *size)
{
    int st = DY_OK;
    double best_rate = 0.0;
    for (int n = 256; n <= 8192 && st == DY_OK; n *= 2) {
        size_t esize = dy_dtype_size(dtype), elems = (size_t)n * n;
        struct dy_gemm_desc d = {
            .m = n, .n = n, .k = n, .lda = n, .ldb = n, .ldc = n,
            .a_dtype = dtype, .b_dtype = dtype, .c_dtype = DY_F32, .beta = 0.0f,
        };
        struct dy_fill_random_desc fa = { .count = elems, .dtype = dtype, .seed = 1, .stream = 1,
                                          .scale = 1.0f };
        struct dy_fill_random_desc fb = fa;
        fb.stream = 2;
        if ((st = dy_buf_alloc(ctx, elems * esize, &d.a)) ||
            (st = dy_buf_alloc(ctx, elems * esize, &d.b)) ||
            (st = dy_buf_alloc(ctx, elems * sizeof(float), &d.c)))
            goto next;
        fa.dst = d.a;
        fb.dst = d.b;
        if ((st = dy_fill_random(ctx, &fa)) || (st = dy_fill_random(ctx, &fb)))
            goto next;
        uint64_t best = UINT64_MAX, ns = 0;
        for (int rep = 0; rep < 4 && st == DY_OK; rep++) {
            st = time_op_ns(ctx, e0, e1, do_gemm, &d, &ns);
            if (rep > 0 && ns < best)
                best = ns;
        }
        if (st == DY_OK) {
            double rate = 2.0 * n * (double)n * n / (double)(best ? best : 1) / 1e3;
            if (rate > best_rate) {
                best_rate = rate;
                *size = n;
            }
        }
    next:
        /* a size that does not fit ends the search; smaller ones stand */
        if (st == DY_E_NOMEM && best_rate > 0)
            st = DY_OK, n = 16384;
        dy_buf_free(ctx, &d.a);
        dy_buf_free(ctx, &d.b);
        dy_buf_free(ctx, &d.c);
        if (st == DY_OK && ns > 100000000ull)
            break;
    }
    *tflops = best_rate;
    return st;
}

int dy_measure_ceilings(dy_ctx *ctx, struct dy_ceilings *out)
{
    struct dy_device_info info = { 0 };
    const struct dy_backend *be = dy_ctx_backend(ctx);
    if (be->device_info)
        be->device_info(dy_ctx_device(ctx), &info);
    out->copy_gbps = 0.0;
    out->gemm_tflops = 0.0;
    out->gemm_size = 0;
    /* the dtype the workload's matrix work runs in on this device */
    out->gemm_dtype = (info.caps & DY_CAP_BF16) ? DY_BF16 : DY_F32;
    void *e0 = NULL, *e1 = NULL;
    int st;
    if ((st = dy_event_create(ctx, &e0)) || (st = dy_event_create(ctx, &e1)))
        goto done;
    if ((st = measure_copy(ctx, e0, e1, &out->copy_gbps)))
        goto done;
    st = measure_gemm(ctx, e0, e1, out->gemm_dtype, &out->gemm_tflops, &out->gemm_size);
done:
    dy_event_destroy(ctx, e0);
    dy_event_destroy(ctx, e1);
    return st;
}
