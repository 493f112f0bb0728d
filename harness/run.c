/* The point runner: runs one point of a sweep and stores it in SQLite. A
 * point that cannot run becomes a row with its status and reason, and the
 * sweep goes on. sweep_cmd.c drives it for `dyno run` and `dyno sweep`. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#include "../workloads/llm.h"
#include "../workloads/vit.h"
#include "dy_build_config.h"
#include "harness.h"
#include "moe_axes.h"
#include "runner.h"
#include "timing.h"

#define MAX_DEVICES 16

struct device_state {
    char backend[32];
    int index;
    dy_ctx *ctx;                /* NULL when it could not be opened */
    char error[512];
    int64_t db_id;
    struct dy_device_info info;
    struct dy_ceilings ceil;
};

/* The loaded model, kept across points that share it. */
struct model_state {
    char key[1400];
    struct device_state *dev;
    struct dy_model_config cfg;
    struct dy_llm_weights w;      /* as loaded: bf16 under quantized ones */
    struct dy_llm_weights qw;     /* quantized from w for the point's format */
    char qformat[32];             /* qw's --weight-dtype; "" when there is none */
    bool loaded;
};

struct dy_runner {
    dy_db *db;
    int64_t run_id;
    struct device_state devices[MAX_DEVICES];
    int device_count;
    struct model_state model;
    double deadline_ms;          /* of the point in flight; 0: no --point-timeout */
    double timeout_s;
    struct dy_stop_rule rule;    /* min_reps comes from each point's --repeat */
};

/* The weights a point runs with. */
static const struct dy_llm_weights *model_weights(const struct dy_runner *r)
{
    return r->model.qformat[0] ? &r->model.qw : &r->model.w;
}

static void now_iso(char *buf, size_t len)
{
    time_t t = time(NULL);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* True when the backend has a device of its own memory: a GPU, not an
 * OpenCL driver running on the host CPU (PoCL). */
static bool has_accelerator(const struct dy_backend *be)
{
    int count = 0;
    if (!be || be->device_count(&count) != DY_OK)
        return false;
    for (int i = 0; i < count; i++) {
        struct dy_device_info info;
        if (be->device_info(i, &info) == DY_OK && !(info.caps & DY_CAP_UNIFIED))
            return true;
    }
    return false;
}

const char *dy_best_backend(void)
{
    static const char *const preference[] = { "cuda", "hip", "level_zero", "opencl" };
    for (size_t i = 0; i < sizeof preference / sizeof preference[0]; i++)
        if (has_accelerator(dy_registry_find(preference[i], NULL, 0)))
            return preference[i];
    return "cpu";
}

static struct device_state *open_device(struct dy_runner *r, const char *backend, int index)
{
    for (int i = 0; i < r->device_count; i++)
        if (!strcmp(r->devices[i].backend, backend) && r->devices[i].index == index)
            return &r->devices[i];
    if (r->device_count == MAX_DEVICES)
        return NULL;
    struct device_state *d = &r->devices[r->device_count++];
    memset(d, 0, sizeof *d);
    snprintf(d->backend, sizeof d->backend, "%s", backend);
    d->index = index;
    d->db_id = DY_NULL_INT;
    char why[512];
    const struct dy_backend *be = dy_registry_find(backend, why, sizeof why);
    int count = 0;
    if (!be) {
        snprintf(d->error, sizeof d->error, "%s", why);
        return d;
    }
    if (be->device_count(&count) != DY_OK || index >= count) {
        snprintf(d->error, sizeof d->error, "backend %s has no device %d (%d found)", backend,
                 index, count);
        return d;
    }
    be->device_info(index, &d->info);
    int st = dy_ctx_create(be, index, &d->ctx);
    if (st != DY_OK) {
        snprintf(d->error, sizeof d->error, "cannot open %s device %d: %s", backend, index,
                 dy_strerror(st));
        return d;
    }
    dy_progress_clear();
    fprintf(stderr, "dyno: measuring the ceilings of %s:%d (%s)...\n", backend, index, d->info.name);
    if (dy_measure_ceilings(d->ctx, &d->ceil) != DY_OK)
        fprintf(stderr, "dyno: warning: ceilings of %s:%d not measured: %s\n", backend, index,
                dy_ctx_error(d->ctx));
    fprintf(stderr, "dyno: %s:%d copy %.1f GB/s, %s GEMM %.1f GFLOP/s (n=%d)\n", backend, index,
            d->ceil.copy_gbps, dy_dtype_name(d->ceil.gemm_dtype), d->ceil.gemm_tflops * 1e3,
            d->ceil.gemm_size);
    struct dy_device_row row = { .device_index = index, .mem_total_bytes = (int64_t)d->info.mem_total_bytes,
                                 .compute_units = d->info.compute_units, .clock_mhz = d->info.clock_mhz,
                                 .copy_gbps = d->ceil.copy_gbps, .gemm_tflops = d->ceil.gemm_tflops };
    snprintf(row.backend, sizeof row.backend, "%s", backend);
    snprintf(row.name, sizeof row.name, "%s", d->info.name);
    snprintf(row.vendor, sizeof row.vendor, "%s", d->info.vendor);
    snprintf(row.driver_version, sizeof row.driver_version, "%s", d->info.driver_version);
    snprintf(row.runtime_version, sizeof row.runtime_version, "%s", d->info.runtime_version);
    snprintf(row.gemm_dtype, sizeof row.gemm_dtype, "%s", dy_dtype_name(d->ceil.gemm_dtype));
    if (dy_db_add_device(r->db, r->run_id, &row, &d->db_id) != DY_OK)
        fprintf(stderr, "dyno: %s\n", dy_db_error(r->db));
    return d;
}

static void unload_quantized(struct dy_runner *r)
{
    if (r->model.qformat[0])
        dy_llm_weights_free(r->model.dev->ctx, &r->model.qw);
    r->model.qformat[0] = '\0';
}

static void unload_model(struct dy_runner *r)
{
    unload_quantized(r);
    if (r->model.loaded)
        dy_llm_weights_free(r->model.dev->ctx, &r->model.w);
    r->model.loaded = false;
    r->model.key[0] = '\0';
}

static void set_status(struct dy_point *p, const char *status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void set_status(struct dy_point *p, const char *status, const char *fmt, ...)
{
    va_list ap;
    snprintf(p->status, sizeof p->status, "%s", status);
    va_start(ap, fmt);
    vsnprintf(p->reason, sizeof p->reason, fmt, ap);
    va_end(ap);
}

/* --point-timeout: checked between steps, since an op in flight on a device
 * cannot be interrupted safely; the point becomes a failed row. */
static bool past_deadline(struct dy_runner *r, struct dy_point *p)
{
    if (r->deadline_ms <= 0 || now_ms() <= r->deadline_ms)
        return false;
    set_status(p, "failed", "timed out after %g s (--point-timeout)", r->timeout_s);
    return true;
}

static int64_t int_value(const char *v)
{
    int64_t x = DY_NULL_INT;
    if (v)
        dy_parse_int(v, &x);
    return x;
}

static void copy_str(char *dst, size_t len, const char *v)
{
    snprintf(dst, len, "%s", v ? v : "");
}

/* The axes of a point as stored, before anything runs. */
static void point_axes(struct dy_point *p, const char *v[DY_AX_COUNT])
{
    dy_point_init(p);
    copy_str(p->backend, sizeof p->backend, v[DY_AX_BACKEND]);
    copy_str(p->workload, sizeof p->workload, v[DY_AX_WORKLOAD]);
    if (v[DY_AX_MODEL_DIR]) {
        /* a checkpoint is named after its directory */
        char dir[1024];
        snprintf(dir, sizeof dir, "%s", v[DY_AX_MODEL_DIR]);
        size_t len = strlen(dir);
        while (len > 1 && dir[len - 1] == '/')
            dir[--len] = '\0';
        const char *slash = strrchr(dir, '/');
        copy_str(p->model, sizeof p->model, slash ? slash + 1 : dir);
    } else {
        copy_str(p->model, sizeof p->model, v[DY_AX_MODEL]);
    }
    p->batch = int_value(v[DY_AX_BATCH]);
    p->input_len = int_value(v[DY_AX_INPUT_LEN]);
    p->output_len = int_value(v[DY_AX_OUTPUT_LEN]);
    p->experts = int_value(v[DY_AX_EXPERTS]);
    p->top_k = int_value(v[DY_AX_TOP_K]);
    p->moe_ffn_dim = int_value(v[DY_AX_MOE_FFN_DIM]);
    copy_str(p->routing, sizeof p->routing, v[DY_AX_ROUTING]);
    copy_str(p->weight_dtype, sizeof p->weight_dtype, v[DY_AX_WEIGHT_DTYPE]);
    copy_str(p->kv_dtype, sizeof p->kv_dtype, v[DY_AX_KV_DTYPE]);
    copy_str(p->evict, sizeof p->evict, v[DY_AX_EVICT]);
    p->kv_budget = int_value(v[DY_AX_KV_BUDGET]);
    p->block_size = int_value(v[DY_AX_BLOCK_SIZE]);
    p->image_size = int_value(v[DY_AX_IMAGE_SIZE]);
    p->lora_rank = int_value(v[DY_AX_LORA_RANK]);
    p->lora_merged = int_value(v[DY_AX_LORA_MERGED]);
    copy_str(p->lora_targets, sizeof p->lora_targets, v[DY_AX_LORA_TARGETS]);
    p->patch = int_value(v[DY_AX_PATCH]);
    p->seed = int_value(v[DY_AX_SEED]);
    p->layers = int_value(v[DY_AX_LAYERS]);
    copy_str(p->tag, sizeof p->tag, v[DY_AX_TAG]);
    p->warmup = int_value(v[DY_AX_WARMUP]);
    p->repeat = int_value(v[DY_AX_REPEAT]);
    set_status(p, "ok", "%s", "");
}

/* Axis values that no backend supports yet: the point is skipped, saying
 * which issue brings them. */
static bool unsupported(const char *v[DY_AX_COUNT], struct dy_point *p)
{
    static const struct {
        enum dy_axis axis;
        const char *supported; /* comma list; NULL: any value given is unsupported */
        const char *later;
    } rules[] = {
        { DY_AX_WORKLOAD, "llm,moe,moe-layer", "unknown workload" },
        { DY_AX_IMAGE_SIZE, NULL, "--image-size applies to the ViT workload, not implemented yet" },
        { DY_AX_PATCH, NULL, "--patch applies to the ViT workload, not implemented yet" },
        { DY_AX_LORA_RANK, NULL, "--lora-rank applies to the ViT workload" },
        { DY_AX_LORA_MERGED, NULL, "--lora-merged applies to the ViT workload" },
        { DY_AX_LORA_TARGETS, NULL, "--lora-targets applies to the ViT workload" },
        { DY_AX_LORA_RANK_MAP, NULL, "--lora-rank-map applies to the ViT workload" },
    };
    for (size_t i = 0; i < sizeof rules / sizeof rules[0]; i++) {
        const char *val = v[rules[i].axis];
        if (!val)
            continue;
        bool ok = false;
        if (rules[i].supported) {
            char list[64];
            snprintf(list, sizeof list, ",%s,", rules[i].supported);
            char item[40];
            snprintf(item, sizeof item, ",%s,", val);
            ok = strstr(list, item) != NULL;
        }
        if (!ok) {
            set_status(p, "skipped", "--%s %s: %s", dy_axis_flag(rules[i].axis), val, rules[i].later);
            return true;
        }
    }
    return false;
}

/* Loads config and weights unless the previous point left the same ones. */
/* Quantized weights in the point's format from the loaded ones (kept
 * while the points that follow share the format). */
static int ensure_quantized(struct dy_runner *r, struct device_state *dev, const struct dy_llm_format *f,
                            struct dy_point *p)
{
    if (!dy_llm_format_quantized(f)) {
        unload_quantized(r);
        return DY_OK;
    }
    if (!strcmp(r->model.qformat, p->weight_dtype))
        return DY_OK;
    unload_quantized(r);
    if (!dy_ctx_backend(dev->ctx)->dequantize) {
        set_status(p, "skipped", "--weight-dtype %s: the %s backend has no quantized weights",
                   p->weight_dtype, dev->backend);
        return DY_E_UNSUPPORTED;
    }
    char err[512];
    int st = dy_llm_weights_quantize(dev->ctx, &r->model.cfg, &r->model.w, f, &r->model.qw, err, sizeof err);
    if (st != DY_OK) {
        set_status(p, st == DY_E_NOMEM ? "oom" : st == DY_E_UNSUPPORTED ? "skipped" : "failed", "%s", err);
        return st;
    }
    snprintf(r->model.qformat, sizeof r->model.qformat, "%s", p->weight_dtype);
    return DY_OK;
}

static int ensure_model(struct dy_runner *r, struct device_state *dev, const char *v[DY_AX_COUNT],
                        const struct dy_llm_format *format, struct dy_point *p)
{
    char key[sizeof r->model.key];
    bool one_layer = !strcmp(p->workload, "moe-layer");
    enum dy_dtype wdtype = format->dtype;
    snprintf(key, sizeof key, "%s|%d|%s|%s|%s|%s|%s|%s|%s|%d", dev->backend, dev->index,
             v[DY_AX_MODEL_DIR] ? v[DY_AX_MODEL_DIR] : "", v[DY_AX_MODEL],
             dy_dtype_name(wdtype), v[DY_AX_LAYERS] ? v[DY_AX_LAYERS] : "", v[DY_AX_SEED],
             v[DY_AX_EXPERTS] ? v[DY_AX_EXPERTS] : "", v[DY_AX_MOE_FFN_DIM] ? v[DY_AX_MOE_FFN_DIM] : "",
             one_layer);
    if (r->model.loaded && !strcmp(key, r->model.key))
        return ensure_quantized(r, dev, format, p);
    unload_model(r);
    char path[1200], err[1024];
    struct dy_model_config *cfg = &r->model.cfg;
    if (v[DY_AX_MODEL_DIR])
        snprintf(path, sizeof path, "%s/config.json", v[DY_AX_MODEL_DIR]);
    else if (dy_preset_path(v[DY_AX_MODEL], path, sizeof path) != DY_OK) {
        set_status(p, "failed", "unknown model \"%s\" (see `dyno models`)", v[DY_AX_MODEL]);
        return DY_E_INVALID;
    }
    if (dy_config_is_vit(path)) {
        set_status(p, "skipped", "%s is a ViT: it runs with --workload vit", p->model);
        return DY_E_UNSUPPORTED;
    }
    int st = dy_config_load(path, cfg, err, sizeof err);
    if (st != DY_OK) {
        set_status(p, "failed", "%s", err);
        return st;
    }
    if (p->layers != DY_NULL_INT) {
        if (p->layers > cfg->layers) {
            set_status(p, "skipped", "--layers %lld exceeds the model's %d layers",
                       (long long)p->layers, cfg->layers);
            return DY_E_INVALID;
        }
        cfg->layers = (int)p->layers;
    }
    if (!dy_moe_axes_shape(v, cfg, err, sizeof err)) {
        set_status(p, "skipped", "%s", err);
        return DY_E_UNSUPPORTED;
    }
    if (strcmp(p->workload, "llm") && !cfg->experts) {
        set_status(p, "skipped", "%s is a dense model: it runs with --workload llm", cfg->name);
        return DY_E_UNSUPPORTED;
    }
    if (one_layer) /* the MoE block of layer 0 is all a moe-layer point runs */
        cfg->layers = 1;
    uint64_t need = dy_model_param_count(cfg) * dy_dtype_size(wdtype);
    struct dy_mem_info mem;
    if (dy_mem_info(dev->ctx, &mem) == DY_OK && mem.free_bytes && need > mem.free_bytes) {
        set_status(p, "oom", "weights need %.2f GiB, %s:%d has %.2f GiB free", need / 1073741824.0,
                   dev->backend, dev->index, mem.free_bytes / 1073741824.0);
        return DY_E_NOMEM;
    }
    if (v[DY_AX_MODEL_DIR]) {
        struct dy_checkpoint *ck;
        st = dy_checkpoint_open(v[DY_AX_MODEL_DIR], &ck, err, sizeof err);
        if (st == DY_OK) {
            st = dy_llm_weights_load(dev->ctx, cfg, wdtype, ck, &r->model.w, err, sizeof err);
            dy_checkpoint_close(ck);
        }
        if (st != DY_OK) {
            set_status(p, st == DY_E_NOMEM ? "oom" : "failed", "%s", err);
            return st;
        }
    } else {
        int64_t seed = p->seed == DY_NULL_INT ? 0 : p->seed;
        st = dy_llm_weights_random(dev->ctx, cfg, wdtype, (uint64_t)seed, &r->model.w);
        if (st != DY_OK) {
            set_status(p, st == DY_E_NOMEM ? "oom" : "failed", "random weights: %s",
                       dy_ctx_error(dev->ctx));
            return st;
        }
    }
    snprintf(r->model.key, sizeof r->model.key, "%s", key);
    r->model.dev = dev;
    r->model.loaded = true;
    return ensure_quantized(r, dev, format, p);
}

uint64_t dy_fit_prefill_seqs(const struct dy_model_config *cfg, struct dy_llm_options *opt, uint64_t free_bytes)
{
    /* The tenth left is headroom for what dy_llm_state_bytes does not
     * count: backend scratch allocated during the first prefill, such as
     * CUDA's bf16 copy of a GEMM's f32 activations (it grows with the
     * pass's rows) or a quantized matrix dequantized whole for a prefill
     * GEMM. It no longer makes room for the fidelity pass: that runs after
     * the point's decoder is gone, one decoder at a time, and fits its own
     * passes through this function. */
    uint64_t need = dy_llm_state_bytes(cfg, opt);
    while (need > free_bytes * 0.9 && opt->prefill_seqs != 1) {
        opt->prefill_seqs = (opt->prefill_seqs ? opt->prefill_seqs : opt->max_batch) / 2;
        if (opt->prefill_seqs < 1)
            opt->prefill_seqs = 1;
        need = dy_llm_state_bytes(cfg, opt);
    }
    return need;
}

/* Deterministic prompts: the same token ids on every backend for a seed. */
static void make_prompts(int32_t *tokens, size_t count, uint64_t seed, int vocab)
{
    uint64_t key = dy_random_key(seed, 0x70726f6d7074ull /* "prompt" */);
    for (size_t i = 0; i < count; i++)
        tokens[i] = (int32_t)(dy_mix64(key + i) % (uint64_t)vocab);
}

/* Runs warm-ups, then repetitions of prefill + decode until r->rule says
 * enough (timing.c), and fills the metrics. Samples: one prefill and
 * output_len - 1 decode steps per repetition. */
static int measure_llm(struct dy_runner *r, struct device_state *dev, struct dy_point *p,
                       const struct dy_llm_options *options, struct dy_sample **samples_out,
                       int *sample_count)
{
    dy_ctx *ctx = dev->ctx;
    const struct dy_model_config *cfg = &r->model.cfg;
    int batch = (int)p->batch, in = (int)p->input_len, out = (int)p->output_len;
    int warmup = (int)p->warmup, steps = out - 1;
    struct dy_llm_options opt = *options;
    struct dy_stop_rule rule = r->rule;
    struct dy_timings t;
    struct dy_llm *m = NULL;
    int32_t *prompts = malloc(sizeof(int32_t) * (size_t)batch * in);
    void **events = calloc((size_t)steps + 2, sizeof(void *));
    int st = dy_timings_init(&t, steps, (int)p->repeat);
    double timed0 = 0, energy0 = 0;
    bool energy_ok = false;
    rule.min_reps = (int)p->repeat;
    if (!prompts || !events || st != DY_OK) {
        st = DY_E_NOMEM;
        goto done;
    }
    for (int i = 0; i < steps + 2; i++)
        if ((st = dy_event_create(ctx, &events[i])))
            goto done;
    make_prompts(prompts, (size_t)batch * in, (uint64_t)(p->seed == DY_NULL_INT ? 0 : p->seed),
                 cfg->vocab);
    dy_mem_reset_peak(ctx);
    if ((st = dy_llm_create(ctx, cfg, model_weights(r), &opt, &m)))
        goto done;
    uint64_t bytes_first = 0, bytes_last = 0;
    for (int rep = -warmup;; rep++) {
        if (rep == 0) {
            dy_profile_reset(ctx);
            timed0 = now_ms();
            energy_ok = dy_energy_read(ctx, &energy0) == DY_OK;
        }
        double host0 = now_ms();
        if ((st = dy_event_record(ctx, events[0])) || (st = dy_llm_prefill(m, prompts, batch, in)) ||
            (st = dy_event_record(ctx, events[1])))
            goto done;
        if (past_deadline(r, p)) {
            st = DY_E_TIMEOUT;
            goto done;
        }
        bytes_first = dy_llm_decode_bytes(m);
        for (int s = 0; s < steps; s++) {
            if ((st = dy_llm_decode(m)) || (st = dy_event_record(ctx, events[s + 2])))
                goto done;
            if (past_deadline(r, p)) {
                st = DY_E_TIMEOUT;
                goto done;
            }
        }
        bytes_last = dy_llm_decode_bytes(m);
        if ((st = dy_sync(ctx)))
            goto done;
        double host = now_ms() - host0;
        if (rep < 0)
            continue;
        if ((st = dy_timings_reserve(&t, rep + 1)))
            goto done;
        uint64_t ns;
        if ((st = dy_event_elapsed_ns(ctx, events[0], events[1], &ns)))
            goto done;
        t.prefill_ms[rep] = ns / 1e6;
        t.samples[t.sample_count++] = (struct dy_sample){ DY_PHASE_PREFILL, rep, 0, (int64_t)ns };
        double total = ns / 1e6;
        for (int s = 0; s < steps; s++) {
            if ((st = dy_event_elapsed_ns(ctx, events[s + 1], events[s + 2], &ns)))
                goto done;
            t.step_ms[(size_t)rep * steps + s] = ns / 1e6;
            t.samples[t.sample_count++] = (struct dy_sample){ DY_PHASE_DECODE, rep, s, (int64_t)ns };
            total += ns / 1e6;
        }
        t.e2e_ms[rep] = total;
        t.host_ms[rep] = host;
        t.reps = rep + 1;
        if (dy_stop_now(&rule, &t, (now_ms() - timed0) / 1e3, p->reason, sizeof p->reason))
            break;
    }
    int reps = t.reps;
    p->repeat = reps;
    /* the device's energy over the timed repetitions (the queue is drained
     * at the end of each): per repetition, and its mean power */
    double energy1, wall_s = (now_ms() - timed0) / 1e3;
    if (energy_ok && reps > 0 && dy_energy_read(ctx, &energy1) == DY_OK && energy1 > energy0 && wall_s > 0) {
        p->energy_j = (energy1 - energy0) / reps;
        p->avg_power_w = (energy1 - energy0) / wall_s;
    }
    p->e2e_noise = dy_rel_stddev(t.e2e_ms, reps);
    char title[256];
    snprintf(title, sizeof title, "%s batch %d in %d out %d, %d repetitions", p->model, batch, in,
             out, reps);
    dy_profile_print(ctx, title);
    p->ttft_ms = dy_percentile(t.prefill_ms, reps, 50);
    p->e2e_ms = dy_percentile(t.e2e_ms, reps, 50);
    p->e2e_ms_p90 = dy_percentile(t.e2e_ms, reps, 90);
    p->e2e_ms_p99 = dy_percentile(t.e2e_ms, reps, 99);
    p->host_e2e_ms = dy_percentile(t.host_ms, reps, 50);
    if (steps > 0) {
        p->tpot_ms_p50 = dy_percentile(t.step_ms, reps * steps, 50);
        p->tpot_ms_p90 = dy_percentile(t.step_ms, reps * steps, 90);
        p->tpot_ms_p99 = dy_percentile(t.step_ms, reps * steps, 99);
    }
    p->output_tok_s = batch * (double)out / (p->e2e_ms / 1e3);
    p->total_tok_s = batch * (double)(in + out) / (p->e2e_ms / 1e3);
    p->weight_bytes = (int64_t)model_weights(r)->bytes;
    if (model_weights(r)->expert_bits)
        copy_str(p->expert_bits, sizeof p->expert_bits, model_weights(r)->expert_bits);
    p->kv_bytes = (int64_t)dy_llm_kv_bytes(m);
    p->peak_mem_bytes = (int64_t)dy_mem_peak(ctx);
    /* the step reads the weights and the KV rows written so far; an MoE
     * step only the experts its tokens were routed to */
    double step_bytes = (bytes_first + bytes_last) / 2.0;
    if (cfg->experts) {
        struct dy_moe_stats ms;
        if ((st = dy_llm_moe_stats(m, &ms)))
            goto done;
        p->expert_load_max = ms.load_max;
        p->expert_load_mean = ms.load_mean;
        p->expert_imbalance = ms.imbalance;
        if (steps > 0)
            p->experts_touched = ms.experts_touched;
        step_bytes += ms.expert_bytes;
    }
    if (steps > 0) {
        p->step_bytes = (int64_t)step_bytes;
        if (dev->ceil.copy_gbps > 0)
            p->bw_util = step_bytes / (p->tpot_ms_p50 / 1e3) / (dev->ceil.copy_gbps * 1e9);
    }
    if (dev->ceil.gemm_tflops > 0)
        p->flop_util = dy_llm_prefill_flops(cfg, batch, in, &opt) / (p->ttft_ms / 1e3) /
                       (dev->ceil.gemm_tflops * 1e12);
    /* a lossy setting's cost in output, untimed; a reference that does not
     * fit leaves the fidelity columns empty, not the point */
    dy_llm_destroy(m);
    m = NULL;
    dy_fidelity_point(ctx, cfg, &r->model.w, model_weights(r), &opt, prompts, p);
    st = DY_OK;
done:
    /* a timed-out point may still have work queued that uses its buffers */
    if (st == DY_E_TIMEOUT)
        dy_sync(ctx);
    else if (st != DY_OK)
        set_status(p, st == DY_E_NOMEM ? "oom" : "failed", "%s", dy_ctx_error(ctx)[0] ?
                   dy_ctx_error(ctx) : dy_strerror(st));
    dy_llm_destroy(m);
    for (int i = 0; events && i < steps + 2; i++)
        dy_event_destroy(ctx, events[i]);
    free(events);
    free(prompts);
    *samples_out = t.samples;
    *sample_count = st == DY_OK ? t.sample_count : 0;
    t.samples = NULL;
    dy_timings_free(&t);
    return st;
}

enum dy_point_outcome dy_runner_point(dy_runner *r, const char *v[DY_AX_COUNT],
                                      const struct dy_point_options *opt, struct dy_point *p)
{
    struct dy_sample *samples = NULL;
    int sample_count = 0;
    r->deadline_ms = 0;
    point_axes(p, v);
    dy_config_key(v, p->config_key, sizeof p->config_key);
    if (!strcmp(p->backend, "auto"))
        copy_str(p->backend, sizeof p->backend, dy_best_backend());
    struct device_state *dev = open_device(r, p->backend, (int)int_value(v[DY_AX_DEVICE]));
    if (!dev) {
        set_status(p, "failed", "too many devices in one run (at most %d)", MAX_DEVICES);
        goto store;
    }
    copy_str(p->device, sizeof p->device, dev->info.name[0] ? dev->info.name : p->backend);
    int stored_before = 0;
    if (opt->resume && dy_db_point_stored(r->db, p->config_key, p->backend, p->device,
                                          &stored_before) != DY_OK) {
        dy_progress_clear();
        fprintf(stderr, "dyno: %s\n", dy_db_error(r->db));
        return DY_POINT_LOST;
    }
    if (stored_before)
        return DY_POINT_RESUMED;
    /* from here: opening a device and measuring its ceilings is the run's
     * cost, not the point's */
    r->timeout_s = opt->timeout_s;
    r->deadline_ms = opt->timeout_s > 0 ? now_ms() + opt->timeout_s * 1e3 : 0;
    r->rule = opt->rule;
    if (!dev->ctx) {
        set_status(p, "skipped", "%s", dev->error);
        goto store;
    }
    if (!strcmp(p->workload, "vit")) {
        dy_vit_point(dev->ctx, &dev->ceil, v, p, &samples, &sample_count);
        goto store;
    }
    if (unsupported(v, p))
        goto store;
    enum dy_dtype kv_dtype;
    struct dy_llm_format format;
    dy_llm_format_parse(p->weight_dtype, &format); /* checked with the axes */
    dy_dtype_parse(p->kv_dtype, &kv_dtype);
    if (ensure_model(r, dev, v, &format, p) != DY_OK || past_deadline(r, p))
        goto store;
    const struct dy_model_config *cfg = &r->model.cfg;
    bool one_layer = !strcmp(p->workload, "moe-layer");
    if (one_layer) { /* tokens through one block: no sequences, no cache */
        p->output_len = DY_NULL_INT;
        p->block_size = DY_NULL_INT;
        snprintf(p->kv_dtype, sizeof p->kv_dtype, "%s", "");
    }
    if (!one_layer && p->input_len + p->output_len > cfg->max_positions) {
        set_status(p, "skipped", "input_len + output_len = %lld exceeds %s's max_position_embeddings %d",
                   (long long)(p->input_len + p->output_len), cfg->name, cfg->max_positions);
        goto store;
    }
    if (p->batch * p->input_len > INT32_MAX / 4) {
        set_status(p, "skipped", "batch x input_len = %lld tokens is too many for one prefill",
                   (long long)(p->batch * p->input_len));
        goto store;
    }
    struct dy_llm_options llm_opt = {
        .weight_dtype = format.dtype, .kv_dtype = kv_dtype,
        .block_size = one_layer ? 16 : (int)p->block_size,
        .max_batch = (int)p->batch, .max_prompt = (int)p->input_len,
        .max_tokens = (int)(p->input_len + (one_layer ? 1 : p->output_len)),
        .seed = (uint64_t)(p->seed == DY_NULL_INT ? 0 : p->seed),
    };
    if (!dy_evict_parse(p->evict, &llm_opt.evict))
        llm_opt.evict = DY_EVICT_NONE;
    llm_opt.kv_budget = p->kv_budget == DY_NULL_INT ? 0 : (int)p->kv_budget;
    if ((llm_opt.evict != DY_EVICT_NONE) != (p->kv_budget != DY_NULL_INT) && !one_layer) {
        set_status(p, "skipped", llm_opt.evict != DY_EVICT_NONE ? "--evict %s needs --kv-budget"
                   : "--kv-budget needs an --evict policy%s", llm_opt.evict != DY_EVICT_NONE ? p->evict : "");
        goto store;
    }
    int least_blocks = dy_evict_least_blocks(llm_opt.evict);
    if (llm_opt.evict != DY_EVICT_NONE && llm_opt.kv_budget < least_blocks * (int)p->block_size) {
        set_status(p, "skipped", "--evict %s keeps whole blocks: --kv-budget %d is below %d blocks of %lld",
                   p->evict, llm_opt.kv_budget, least_blocks, (long long)p->block_size);
        goto store;
    }
    bool kv_profile = v[DY_AX_KV_BUDGET_ALLOC] && !strcmp(v[DY_AX_KV_BUDGET_ALLOC], "profile");
    if (kv_profile && (one_layer || llm_opt.evict == DY_EVICT_NONE)) {
        set_status(p, "skipped", one_layer ? "--kv-budget-alloc profile: a moe-layer point keeps no KV cache"
                   : "--kv-budget-alloc profile shares an eviction budget between layers: it needs --evict and --kv-budget");
        goto store;
    }
    char why[256];
    int lexi_total, layer_k[256];
    if (!dy_moe_axes_options(v, cfg, &llm_opt, &lexi_total, why, sizeof why)) {
        set_status(p, "skipped", "%s", why);
        goto store;
    }
    if (lexi_total && cfg->layers > (int)(sizeof layer_k / sizeof layer_k[0])) {
        set_status(p, "skipped", "--top-k lexi: at most %d layers", (int)(sizeof layer_k / sizeof layer_k[0]));
        goto store;
    }
    if (lexi_total) {
        if (dy_moe_lexi(dev->ctx, cfg, &r->model.w, lexi_total, llm_opt.seed, layer_k) != DY_OK) {
            set_status(p, "failed", "choosing the per-layer top-k (LExI): %s", dy_ctx_error(dev->ctx));
            goto store;
        }
        llm_opt.layer_top_k = layer_k;
        size_t used = 0;
        for (int i = 0; i < cfg->layers && used < sizeof p->top_k_map; i++)
            used += (size_t)snprintf(p->top_k_map + used, sizeof p->top_k_map - used, "%s%d",
                                     i ? "," : "", layer_k[i]);
    }
    int layer_kv[256];
    if (kv_profile) { /* BaKlaVa: a profile of the layers, then tiered budgets */
        double importance[sizeof layer_kv / sizeof layer_kv[0]];
        if (cfg->layers > (int)(sizeof layer_kv / sizeof layer_kv[0])) {
            set_status(p, "skipped", "--kv-budget-alloc profile: at most %d layers", (int)(sizeof layer_kv / sizeof layer_kv[0]));
            goto store;
        }
        if (dy_kv_profile(dev->ctx, cfg, model_weights(r), llm_opt.seed, importance) != DY_OK ||
            dy_kv_tier_budgets(importance, cfg->layers, llm_opt.kv_budget, llm_opt.block_size, llm_opt.evict,
                               layer_kv) != DY_OK) {
            set_status(p, "failed", "profiling the per-layer KV budgets (BaKlaVa): %s", dy_ctx_error(dev->ctx));
            goto store;
        }
        llm_opt.layer_kv_budget = layer_kv;
        size_t used = 0;
        for (int i = 0; i < cfg->layers && used < sizeof p->kv_budget_map; i++)
            used += (size_t)snprintf(p->kv_budget_map + used, sizeof p->kv_budget_map - used, "%s%d",
                                     i ? "," : "", layer_kv[i]);
    }
    if (cfg->experts) { /* the shape that ran, overrides included */
        p->experts = cfg->experts;
        p->moe_ffn_dim = cfg->moe_ffn;
        p->top_k = lexi_total ? (lexi_total + cfg->layers / 2) / cfg->layers
                   : llm_opt.top_k ? llm_opt.top_k : cfg->top_k;
        copy_str(p->routing, sizeof p->routing, v[DY_AX_ROUTING] ? v[DY_AX_ROUTING] : "model");
    }
    struct dy_mem_info mem;
    uint64_t need = dy_llm_state_bytes(cfg, &llm_opt);
    bool known = dy_mem_info(dev->ctx, &mem) == DY_OK && mem.free_bytes;
    if (!one_layer && known) /* activations too large for one prefill: fewer sequences per pass */
        need = dy_fit_prefill_seqs(cfg, &llm_opt, mem.free_bytes);
    if (known && need > mem.free_bytes) {
        set_status(p, "oom", "KV cache and activations need %.2f GiB, %s:%d has %.2f GiB free",
                   need / 1073741824.0, dev->backend, dev->index, mem.free_bytes / 1073741824.0);
        goto store;
    }
    if (one_layer) {
        if (dy_moe_layer_point(dev->ctx, &dev->ceil, cfg, model_weights(r), &llm_opt, p, &samples,
                               &sample_count) != DY_OK)
            set_status(p, "failed", "%s", dy_ctx_error(dev->ctx));
    } else {
        measure_llm(r, dev, p, &llm_opt, &samples, &sample_count);
    }
store:;
    int64_t point_id;
    bool stored = dy_db_add_point(r->db, r->run_id, dev ? dev->db_id : DY_NULL_INT, p, samples,
                                  sample_count, &point_id) == DY_OK;
    if (!stored) {
        dy_progress_clear();
        fprintf(stderr, "dyno: storing the point failed: %s\n", dy_db_error(r->db));
    }
    free(samples);
    return stored ? DY_POINT_STORED : DY_POINT_LOST;
}

void dy_fill_run_info(struct dy_run_info *run, const char *cmdline)
{
    memset(run, 0, sizeof *run);
    snprintf(run->dyno_version, sizeof run->dyno_version, "%s", DY_VERSION);
    snprintf(run->git_commit, sizeof run->git_commit, "%s", DY_GIT_COMMIT);
    gethostname(run->host, sizeof run->host - 1);
    struct utsname u;
    if (uname(&u) == 0)
        snprintf(run->os, sizeof run->os, "%s %s %s", u.sysname, u.release, u.machine);
    snprintf(run->argv, sizeof run->argv, "%s", cmdline);
    now_iso(run->started_at, sizeof run->started_at);
}

int dy_runner_open(const char *db_path, const char *cmdline, dy_runner **out, char *err,
                   size_t err_len)
{
    dy_runner *r = calloc(1, sizeof *r);
    int st = DY_E_NOMEM;
    *out = NULL;
    if (!r) {
        snprintf(err, err_len, "out of memory");
        return st;
    }
    if ((st = dy_db_open(db_path, &r->db, err, err_len)) != DY_OK)
        goto fail;
    struct dy_run_info run;
    dy_fill_run_info(&run, cmdline);
    if ((st = dy_db_begin_run(r->db, &run, &r->run_id)) != DY_OK) {
        snprintf(err, err_len, "%s", dy_db_error(r->db));
        goto fail;
    }
    *out = r;
    return DY_OK;
fail:
    dy_runner_close(r);
    return st;
}

void dy_runner_close(dy_runner *r)
{
    if (!r)
        return;
    unload_model(r);
    dy_vit_cache_release();
    for (int i = 0; i < r->device_count; i++)
        dy_ctx_destroy(r->devices[i].ctx);
    dy_db_close(r->db);
    free(r);
}
