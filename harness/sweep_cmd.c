/* `dyno run` and `dyno sweep`: the points of one or more sweeps (a sweep
 * file's sections), this shard's share of them, run in order with progress,
 * each stored as it finishes, and a markdown summary at the end. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../workloads/llm.h"
#include "../workloads/vit.h"
#include "harness.h"
#include "progress.h"
#include "runner.h"
#include "sweepfile.h"

static void fmt_num(char *buf, size_t len, double v, const char *fmt)
{
    if (isnan(v))
        snprintf(buf, len, "-");
    else
        snprintf(buf, len, fmt, v);
}

/* An integer axis, "-" where the point stores none (NULL). */
static void fmt_int(char *buf, size_t len, int64_t v)
{
    if (v == DY_NULL_INT)
        snprintf(buf, len, "-");
    else
        snprintf(buf, len, "%lld", (long long)v);
}

static void status_text(const struct dy_point *p, char *status, size_t len)
{
    if (p->reason[0])
        snprintf(status, len, "%s: %s", p->status, p->reason);
    else
        snprintf(status, len, "%s", p->status);
    for (char *c = status; *c; c++)
        if (*c == '|' || *c == '\n')
            *c = ' ';
}

/* The ViT points' own table: batches of images, not tokens. */
static void print_image_summary(const struct dy_point *done, int done_count, FILE *out)
{
    fprintf(out, "\n| backend | device | model | batch | image px | weights | status | "
                 "latency p50 ms | latency p99 ms | images/s | flop util |\n");
    fprintf(out, "|---|---|---|--:|--:|---|---|--:|--:|--:|--:|\n");
    for (int i = 0; i < done_count; i++) {
        const struct dy_point *p = &done[i];
        if (strcmp(p->workload, "vit"))
            continue;
        char size[32], p50[32], p99[32], ips[32], fl[32], status[600];
        /* a point skipped before its model's default size was read has none */
        fmt_int(size, sizeof size, p->image_size);
        fmt_num(p50, sizeof p50, p->e2e_ms, "%.2f");
        fmt_num(p99, sizeof p99, p->e2e_ms_p99, "%.2f");
        fmt_num(ips, sizeof ips, p->images_s, "%.1f");
        fmt_num(fl, sizeof fl, p->flop_util * 100, "%.0f%%");
        status_text(p, status, sizeof status);
        fprintf(out, "| %s | %s | %s | %lld | %s | %s | %s | %s | %s | %s | %s |\n", p->backend,
                p->device, p->model, (long long)p->batch, size, p->weight_dtype, status, p50, p99,
                ips, fl);
    }
}

/* The moe-layer points' table: one MoE block over a batch of tokens. */
static void print_moe_layer_summary(const struct dy_point *done, int done_count, FILE *out)
{
    fprintf(out, "\n| backend | device | model | tokens | experts | top-k | expert ffn | routing | "
                 "weights | status | ms per layer | tok/s | imbalance | bw util | flop util |\n");
    fprintf(out, "|---|---|---|--:|--:|--:|--:|---|---|---|--:|--:|--:|--:|--:|\n");
    for (int i = 0; i < done_count; i++) {
        const struct dy_point *p = &done[i];
        if (strcmp(p->workload, "moe-layer"))
            continue;
        char ms[32], tok[32], imb[32], bw[32], fl[32], status[600];
        fmt_num(ms, sizeof ms, p->e2e_ms, "%.3f");
        fmt_num(tok, sizeof tok, p->total_tok_s, "%.0f");
        fmt_num(imb, sizeof imb, p->expert_imbalance, "%.2f");
        fmt_num(bw, sizeof bw, p->bw_util * 100, "%.0f%%");
        fmt_num(fl, sizeof fl, p->flop_util * 100, "%.0f%%");
        status_text(p, status, sizeof status);
        fprintf(out, "| %s | %s | %s | %lld | %lld | %lld | %lld | %s | %s | %s | %s | %s | %s | %s | %s |\n",
                p->backend, p->device, p->model, (long long)(p->batch * p->input_len),
                (long long)p->experts, (long long)p->top_k, (long long)p->moe_ffn_dim, p->routing,
                p->weight_dtype, status, ms, tok, imb, bw, fl);
    }
}

/* The LLM and MoE points' table: prefill and decode of token sequences. */
static void print_token_summary(const struct dy_point *done, int done_count, FILE *out)
{
    fprintf(out, "\n| backend | device | model | batch | in | out | weights | kv | status | "
                 "ttft ms | tpot p50 ms | tpot p99 ms | out tok/s | total tok/s | bw util | flop util |\n");
    fprintf(out, "|---|---|---|--:|--:|--:|---|---|---|--:|--:|--:|--:|--:|--:|--:|\n");
    for (int i = 0; i < done_count; i++) {
        const struct dy_point *p = &done[i];
        char ttft[32], p50[32], p99[32], otok[32], ttok[32], bw[32], fl[32];
        if (!strcmp(p->workload, "vit") || !strcmp(p->workload, "moe-layer"))
            continue;
        fmt_num(ttft, sizeof ttft, p->ttft_ms, "%.2f");
        fmt_num(p50, sizeof p50, p->tpot_ms_p50, "%.2f");
        fmt_num(p99, sizeof p99, p->tpot_ms_p99, "%.2f");
        fmt_num(otok, sizeof otok, p->output_tok_s, "%.1f");
        fmt_num(ttok, sizeof ttok, p->total_tok_s, "%.1f");
        fmt_num(bw, sizeof bw, p->bw_util * 100, "%.0f%%");
        fmt_num(fl, sizeof fl, p->flop_util * 100, "%.0f%%");
        char status[600];
        status_text(p, status, sizeof status);
        fprintf(out, "| %s | %s | %s | %lld | %lld | %lld | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n",
                p->backend, p->device, p->model, (long long)p->batch, (long long)p->input_len,
                (long long)p->output_len, p->weight_dtype, p->kv_dtype, status, ttft, p50, p99,
                otok, ttok, bw, fl);
    }
}

/* The markdown summary of every point of this run: a table for each kind
 * of workload present. */
static void print_summary(const struct dy_point *done, int done_count, FILE *out)
{
    int images = 0, layers = 0;
    for (int i = 0; i < done_count; i++) {
        images += !strcmp(done[i].workload, "vit");
        layers += !strcmp(done[i].workload, "moe-layer");
    }
    if (images + layers < done_count)
        print_token_summary(done, done_count, out);
    if (layers)
        print_moe_layer_summary(done, done_count, out);
    if (images)
        print_image_summary(done, done_count, out);
}

int dy_sweep_validate(const struct dy_sweep *s, char *err, size_t err_len)
{
    const struct dy_list *backends = &s->values[DY_AX_BACKEND];
    for (int i = 0; i < backends->count; i++) {
        const char *name = backends->items[i];
        char why[512];
        if (strcmp(name, "auto") && !dy_registry_find(name, why, sizeof why) &&
            !strncmp(why, "unknown", 7)) {
            snprintf(err, err_len, "--backend: %s", why);
            return DY_E_INVALID;
        }
    }
    char path[1200], msg[1024];
    struct dy_model_config cfg;
    const struct dy_list *dirs = &s->values[DY_AX_MODEL_DIR];
    for (int i = 0; i < dirs->count; i++) {
        struct dy_checkpoint *ck;
        snprintf(path, sizeof path, "%s/config.json", dirs->items[i]);
        struct dy_vit_config vit;
        bool is_vit = dy_config_is_vit(path);
        if ((is_vit ? dy_vit_config_load(path, &vit, msg, sizeof msg)
                    : dy_config_load(path, &cfg, msg, sizeof msg)) != DY_OK ||
            dy_checkpoint_open(dirs->items[i], &ck, msg, sizeof msg) != DY_OK) {
            snprintf(err, err_len, "--model-dir: %s", msg);
            return DY_E_INVALID;
        }
        /* a missing or misshapen tensor is bad input, not a failed point */
        int st = is_vit ? DY_OK : dy_llm_checkpoint_check(&cfg, ck, msg, sizeof msg);
        dy_checkpoint_close(ck);
        if (st != DY_OK) {
            snprintf(err, err_len, "--model-dir %s: %s", dirs->items[i], msg);
            return DY_E_INVALID;
        }
    }
    const struct dy_list *models = &s->values[DY_AX_MODEL];
    for (int i = 0; i < models->count && dirs->count == 0; i++) {
        if (dy_preset_path(models->items[i], path, sizeof path) != DY_OK) {
            snprintf(err, err_len, "--model: unknown model \"%s\" (see `dyno models`)", models->items[i]);
            return DY_E_INVALID;
        }
        struct dy_vit_config vit;
        if ((dy_config_is_vit(path) ? dy_vit_config_load(path, &vit, msg, sizeof msg)
                                    : dy_config_load(path, &cfg, msg, sizeof msg)) != DY_OK) {
            snprintf(err, err_len, "--model: %s", msg);
            return DY_E_INVALID;
        }
    }
    return DY_OK;
}


/* Which share of the points this process runs: --shard, else a Slurm array
 * task, else an MPI rank. *source names where it came from; count 1 means
 * every point. */
static int resolve_shard(const struct dy_sweep *opt, int *index, int *count, char *source,
                         size_t source_len, char *err, size_t err_len)
{
    static const char *const mpi[][2] = {
        { "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE" },   /* Open MPI */
        { "PMI_RANK", "PMI_SIZE" },                           /* MPICH, Intel MPI, srun --mpi=pmi2 */
        { "MV2_COMM_WORLD_RANK", "MV2_COMM_WORLD_SIZE" },     /* MVAPICH */
    };
    *index = 0;
    *count = 1;
    if (opt->shard_count > 0) {
        *index = opt->shard_index;
        *count = opt->shard_count;
        snprintf(source, source_len, "--shard");
        return DY_OK;
    }
    int64_t id, first = 0, last, step = 1, n;
    const char *task = getenv("SLURM_ARRAY_TASK_ID");
    if (task) {
        /* tasks of --array=A-B:S are A, A+S, ...: the shard is their ordinal */
        const char *min = getenv("SLURM_ARRAY_TASK_MIN"), *max = getenv("SLURM_ARRAY_TASK_MAX");
        const char *stp = getenv("SLURM_ARRAY_TASK_STEP"), *cnt = getenv("SLURM_ARRAY_TASK_COUNT");
        if (!dy_parse_int(task, &id) || (min && !dy_parse_int(min, &first)) ||
            (stp && !dy_parse_int(stp, &step)) || step < 1) {
            snprintf(err, err_len, "SLURM_ARRAY_TASK_ID/MIN/STEP are not integers");
            return DY_E_INVALID;
        }
        if (!(cnt && dy_parse_int(cnt, &n)) && max && dy_parse_int(max, &last))
            n = (last - first) / step + 1;
        else if (!cnt)
            n = 0;
        if (n < 1 || (id - first) % step || (id - first) / step < 0 || (id - first) / step >= n) {
            snprintf(err, err_len, "SLURM_ARRAY_TASK_ID %s does not fit SLURM_ARRAY_TASK_MIN/STEP/"
                                   "COUNT (or MAX); give --shard I/N", task);
            return DY_E_INVALID;
        }
        *index = (int)((id - first) / step);
        *count = (int)n;
        snprintf(source, source_len, "SLURM_ARRAY_TASK_ID=%s", task);
        return DY_OK;
    }
    for (size_t i = 0; i < sizeof mpi / sizeof mpi[0]; i++) {
        const char *rank = getenv(mpi[i][0]), *size = getenv(mpi[i][1]);
        if (!rank || !size)
            continue;
        if (!dy_parse_int(rank, &id) || !dy_parse_int(size, &n) || n < 1 || id < 0 || id >= n) {
            snprintf(err, err_len, "%s=%s and %s=%s are not a rank and a size", mpi[i][0], rank,
                     mpi[i][1], size);
            return DY_E_INVALID;
        }
        *index = (int)id;
        *count = (int)n;
        snprintf(source, source_len, "%s=%s, %s=%s", mpi[i][0], rank, mpi[i][1], size);
        return DY_OK;
    }
    return DY_OK;
}

/* "dyno.db" -> "dyno.shard3.db": each shard writes its own file, since
 * SQLite on a cluster's network file system must not be shared. */
static void shard_db_path(char *path, size_t len, int index)
{
    char base[1024];
    snprintf(base, sizeof base, "%s", path);
    size_t n = strlen(base);
    const char *slash = strrchr(base, '/');
    if (n > 3 && !strcmp(base + n - 3, ".db") && (!slash || slash < base + n - 3)) {
        base[n - 3] = '\0';
        snprintf(path, len, "%s.shard%d.db", base, index);
    } else {
        snprintf(path, len, "%s.shard%d", base, index);
    }
}

static void point_label(const char *section, const char *values[DY_AX_COUNT], char *out,
                        size_t len)
{
    const char *backend = values[DY_AX_BACKEND];
    const char *model = values[DY_AX_MODEL_DIR] ? values[DY_AX_MODEL_DIR] : values[DY_AX_MODEL];
    snprintf(out, len, "%s%s%s%s %s batch %s in %s out %s", section ? "[" : "",
             section ? section : "", section ? "] " : "",
             !strcmp(backend, "auto") ? dy_best_backend() : backend, model ? model : "-",
             values[DY_AX_BATCH], values[DY_AX_INPUT_LEN], values[DY_AX_OUTPUT_LEN]);
}

/* Runs this shard's points of every section in order. opt carries the
 * options (database, --resume, --dry-run, --point-timeout, --shard). */
static int run_sweeps(const char *cmd, const struct dy_sweep *sections, char *const *names,
                      int section_count, const struct dy_sweep *opt, const char *cmdline)
{
    char db_path[1100], source[256] = "", err[1024], label[512];
    int shard, shards, rc = 1;
    if (resolve_shard(opt, &shard, &shards, source, sizeof source, err, sizeof err) != DY_OK) {
        fprintf(stderr, "dyno %s: %s\n", cmd, err);
        return 2;
    }
    snprintf(db_path, sizeof db_path, "%s", opt->db_path);
    if (shards > 1) {
        shard_db_path(db_path, sizeof db_path, shard);
        fprintf(stderr, "dyno: shard %d/%d (from %s): points %d, %d, %d, ... into %s\n", shard,
                shards, source, shard, shard + shards, shard + 2 * shards, db_path);
    }
    /* this shard's points: those whose index over all sections is shard mod shards */
    uint64_t grand = 0;
    for (int s = 0; s < section_count; s++)
        grand += dy_sweep_count(&sections[s]);
    uint64_t total = grand / (uint64_t)shards + ((uint64_t)shard < grand % (uint64_t)shards);
    if (opt->dry_run) {
        uint64_t g = 0;
        for (int s = 0; s < section_count; s++) {
            uint64_t n = dy_sweep_count(&sections[s]);
            for (uint64_t i = 0; i < n; i++, g++) {
                const char *values[DY_AX_COUNT];
                char key[768];
                if (g % (uint64_t)shards != (uint64_t)shard)
                    continue;
                dy_sweep_point(&sections[s], i, values);
                dy_config_key(values, key, sizeof key);
                printf("%s%s%s%s\n", names ? "[" : "", names ? names[s] : "", names ? "] " : "", key);
            }
        }
        printf("%llu point(s)\n", (unsigned long long)total);
        return 0;
    }
    for (int s = 0; s < section_count; s++) {
        if (dy_sweep_validate(&sections[s], err, sizeof err) != DY_OK) {
            fprintf(stderr, "dyno %s: %s%s%s%s\n", cmd, names ? "[" : "", names ? names[s] : "",
                    names ? "] " : "", err);
            return 2;
        }
    }
    dy_runner *runner = NULL;
    struct dy_point *done = calloc(total ? total : 1, sizeof *done);
    int done_count = 0, stored = 0, resumed = 0;
    if (!done || dy_runner_open(db_path, cmdline, &runner, err, sizeof err) != DY_OK) {
        fprintf(stderr, "dyno %s: %s\n", cmd, done ? err : "out of memory");
        goto cleanup;
    }
    struct dy_point_options point_opt = {
        .resume = opt->resume, .timeout_s = opt->point_timeout_s,
        .rule = { .min_time_s = opt->min_time_s, .max_noise = opt->max_noise_pct / 100,
                  .max_time_s = opt->max_time_s },
    };
    dy_progress_start(total);
    uint64_t g = 0, ran = 0;
    for (int s = 0; s < section_count; s++) {
        uint64_t n = dy_sweep_count(&sections[s]);
        for (uint64_t i = 0; i < n; i++, g++) {
            const char *values[DY_AX_COUNT];
            if (g % (uint64_t)shards != (uint64_t)shard)
                continue;
            dy_sweep_point(&sections[s], i, values);
            point_label(names ? names[s] : NULL, values, label, sizeof label);
            struct dy_point *p = &done[done_count];
            double t0 = dy_progress_begin(ran, label);
            enum dy_point_outcome out = dy_runner_point(runner, values, &point_opt, p);
            ran++;
            dy_progress_end(ran, label, p, out, t0);
            if (out == DY_POINT_RESUMED) {
                resumed++;
                continue;
            }
            stored += out == DY_POINT_STORED;
            done_count++;
        }
    }
    dy_progress_finish();
    print_summary(done, done_count, stdout);
    printf("\n%d of %d point(s) stored in %s", stored, done_count, db_path);
    if (resumed)
        printf("; %d stored before, not run again (--resume)", resumed);
    printf("\n");
    rc = stored == done_count ? 0 : 1;
cleanup:
    dy_runner_close(runner);
    free(done);
    return rc;
}

static bool wants_help(int argc, char **argv)
{
    for (int i = 0; i < argc; i++)
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h"))
            return true;
    return false;
}

/* --model-dir replaces --model; both given is an error. */
static int settle_model(struct dy_sweep *s, char *err, size_t err_len)
{
    if (s->values[DY_AX_MODEL_DIR].count == 0)
        return DY_OK;
    if (s->given[DY_AX_MODEL]) {
        snprintf(err, err_len, "give --model or --model-dir, not both");
        return DY_E_INVALID;
    }
    dy_list_free(&s->values[DY_AX_MODEL]);
    return DY_OK;
}

int dy_cmd_run(int argc, char **argv, const char *cmdline)
{
    if (wants_help(argc, argv)) {
        printf("usage: dyno run [axes] [options]\n\n");
        dy_sweep_usage(stdout);
        return 0;
    }
    struct dy_sweep sweep;
    char err[1024];
    if (dy_sweep_parse(argc, argv, &sweep, err, sizeof err) != DY_OK) {
        fprintf(stderr, "dyno run: %s\n", err);
        return 2;
    }
    int rc = 2;
    if (settle_model(&sweep, err, sizeof err) != DY_OK)
        fprintf(stderr, "dyno run: %s\n", err);
    else
        rc = run_sweeps("run", &sweep, NULL, 1, &sweep, cmdline);
    dy_sweep_free(&sweep);
    return rc;
}

int dy_cmd_sweep(int argc, char **argv, const char *cmdline)
{
    if (wants_help(argc, argv) || argc < 1 || !strncmp(argv[0], "--", 2)) {
        fprintf(argc < 1 || !wants_help(argc, argv) ? stderr : stdout,
                "usage: dyno sweep FILE [options of `dyno run --help`: --db FILE, --resume, ...]\n\n"
                "FILE is INI: each [section] a block of axis keys as `dyno run --help` lists them\n"
                "(batch = 1-64*2, model = a,b); keys before the first section apply to all.\n");
        return wants_help(argc, argv) ? 0 : 2;
    }
    struct dy_sweep opt;
    struct dy_sweep_file file;
    char err[1024];
    if (dy_sweep_parse(argc - 1, argv + 1, &opt, err, sizeof err) != DY_OK) {
        fprintf(stderr, "dyno sweep: %s\n", err);
        return 2;
    }
    int rc = 2;
    for (int a = 0; a < DY_AX_COUNT; a++) {
        if (opt.given[a]) {
            fprintf(stderr, "dyno sweep: --%s: axes go in the sweep file\n",
                    dy_axis_flag((enum dy_axis)a));
            goto cleanup;
        }
    }
    if (dy_sweep_file_load(argv[0], &file, err, sizeof err) != DY_OK) {
        fprintf(stderr, "dyno sweep: %s\n", err);
        goto cleanup;
    }
    rc = run_sweeps("sweep", file.sections, file.names, file.count, &opt, cmdline);
    dy_sweep_file_free(&file);
cleanup:
    dy_sweep_free(&opt);
    return rc;
}
