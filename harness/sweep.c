#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../backends/status.h"
#include "harness.h"
#include "sweep.h"

enum kind { INT, STR, ENUM };

static const struct {
    const char *flag;
    enum kind kind;
    int64_t min;
    const char *choices;
    const char *def;
    const char *help;
} axes[DY_AX_COUNT] = {
#define DY_AXIS_SPEC(id, flag, kind, min, choices, def, help) { flag, kind, min, choices, def, help },
    DY_AXES(DY_AXIS_SPEC)
#undef DY_AXIS_SPEC
};

const char *dy_axis_flag(enum dy_axis a)
{
    return axes[a].flag;
}

static bool in_choices(const char *choices, const char *v)
{
    size_t len = strlen(v);
    for (const char *p = choices; p && *p;) {
        const char *comma = strchr(p, ',');
        size_t n = comma ? (size_t)(comma - p) : strlen(p);
        if (n == len && strncmp(p, v, n) == 0)
            return true;
        p = comma ? comma + 1 : NULL;
    }
    return false;
}

/* Values that are neither enums nor integers but have a shape. */
static bool valid_special(enum dy_axis a, const char *v, char *why, size_t why_len)
{
    char *end;
    if (a == DY_AX_ROUTING) {
        if (!strcmp(v, "model") || !strcmp(v, "uniform"))
            return true;
        if (!strncmp(v, "zipf:", 5) && strtod(v + 5, &end) > 0 && !*end)
            return true;
        snprintf(why, why_len, "expected model, uniform or zipf:S with S > 0");
        return false;
    }
    if (a == DY_AX_WEIGHT_DTYPE) {
        struct dy_llm_format f;
        if (dy_llm_format_parse(v, &f))
            return true;
        snprintf(why, why_len, "unknown value \"%s\" (expected f32, f16, bf16, fp8, int8, int4, "
                 "int4-asym or mopeq:BITS with 2 <= BITS <= 4)", v);
        return false;
    }
    if (a == DY_AX_TOP_K) {
        if (!strncmp(v, "lexi:", 5) && strtol(v + 5, &end, 10) > 0 && !*end)
            return true;
        if (strtol(v, &end, 10) > 0 && !*end)
            return true;
        snprintf(why, why_len, "expected a positive integer or lexi:TOTAL");
        return false;
    }
    return true;
}

int dy_axis_lookup(const char *name, size_t len)
{
    for (int a = 0; a < DY_AX_COUNT; a++) {
        const char *flag = axes[a].flag;
        if (strlen(flag) != len)
            continue;
        size_t i = 0;
        while (i < len && (name[i] == flag[i] || (name[i] == '_' && flag[i] == '-')))
            i++;
        if (i == len)
            return a;
    }
    return -1;
}

int dy_parse_shard(const char *text, int *index, int *count)
{
    char *end;
    long i = strtol(text, &end, 10);
    if (end == text || *end != '/')
        return DY_E_INVALID;
    const char *n_text = end + 1;
    long n = strtol(n_text, &end, 10);
    if (end == n_text || *end || i < 0 || n < 1 || i >= n || n > 1000000)
        return DY_E_INVALID;
    *index = (int)i;
    *count = (int)n;
    return DY_OK;
}

int dy_sweep_set(struct dy_sweep *s, enum dy_axis a, const char *text, char *err, size_t err_len)
{
    char why[256];
    struct dy_list l;
    int st;
    if (axes[a].kind == INT) {
        st = dy_expand_ints(text, axes[a].min, &l, why, sizeof why);
    } else {
        st = dy_split_list(text, &l, why, sizeof why);
        for (int i = 0; st == DY_OK && i < l.count; i++) {
            if (axes[a].kind == ENUM && !in_choices(axes[a].choices, l.items[i])) {
                snprintf(why, sizeof why, "unknown value \"%s\" (choose from %s)", l.items[i],
                         axes[a].choices);
                st = DY_E_INVALID;
            } else if (!valid_special(a, l.items[i], why, sizeof why)) {
                st = DY_E_INVALID;
            }
        }
        if (st != DY_OK)
            dy_list_free(&l);
    }
    if (st != DY_OK) {
        snprintf(err, err_len, "--%s: %s", axes[a].flag, why);
        return st;
    }
    dy_list_free(&s->values[a]);
    s->values[a] = l;
    s->given[a] = true;
    return DY_OK;
}

int dy_sweep_parse(int argc, char **argv, struct dy_sweep *s, char *err, size_t err_len)
{
#define IS_OPTION(opt) (name_len == strlen(opt) && !strncmp(name, opt, name_len))
    memset(s, 0, sizeof *s);
    snprintf(s->db_path, sizeof s->db_path, "dyno.db");
    for (int a = 0; a < DY_AX_COUNT; a++) {
        if (axes[a].def && dy_sweep_set(s, (enum dy_axis)a, axes[a].def, err, err_len) != DY_OK)
            return DY_E_INVALID;
        s->given[a] = false;
    }
    for (int i = 0; i < argc; i++) {
        const char *arg = argv[i];
        if (strncmp(arg, "--", 2) != 0) {
            snprintf(err, err_len, "unexpected argument \"%s\" (axes are flags: --batch 1,8)", arg);
            goto fail;
        }
        const char *name = arg + 2, *eq = strchr(name, '=');
        size_t name_len = eq ? (size_t)(eq - name) : strlen(name);
        const char *value = eq ? eq + 1 : (i + 1 < argc ? argv[i + 1] : NULL);
        if (IS_OPTION("resume") || IS_OPTION("dry-run")) {
            if (eq) {
                snprintf(err, err_len, "--%.*s takes no value", (int)name_len, name);
                goto fail;
            }
            *(IS_OPTION("resume") ? &s->resume : &s->dry_run) = true;
            continue;
        }
        double *number = IS_OPTION("point-timeout") ? &s->point_timeout_s
                         : IS_OPTION("min-time")    ? &s->min_time_s
                         : IS_OPTION("max-noise")   ? &s->max_noise_pct
                         : IS_OPTION("max-time")    ? &s->max_time_s
                                                    : NULL;
        if (IS_OPTION("db") || IS_OPTION("shard") || number) {
            if (!value || !*value) {
                snprintf(err, err_len, "--%.*s needs a value", (int)name_len, name);
                goto fail;
            }
            char *end;
            if (IS_OPTION("db")) {
                snprintf(s->db_path, sizeof s->db_path, "%s", value);
                s->db_given = true;
            } else if (IS_OPTION("shard")) {
                if (dy_parse_shard(value, &s->shard_index, &s->shard_count) != DY_OK) {
                    snprintf(err, err_len, "--shard \"%s\": expected I/N with 0 <= I < N", value);
                    goto fail;
                }
            } else if ((*number = strtod(value, &end)) <= 0 || *end || !isfinite(*number)) {
                snprintf(err, err_len, "--%.*s \"%s\": expected a number > 0", (int)name_len, name,
                         value);
                goto fail;
            }
            i += eq ? 0 : 1;
            continue;
        }
        int found = dy_axis_lookup(name, name_len);
        if (found < 0 || strncmp(axes[found].flag, name, name_len)) {
            snprintf(err, err_len, "unknown flag \"--%.*s\" (see `dyno run --help`)", (int)name_len, name);
            goto fail;
        }
        if (!value) {
            snprintf(err, err_len, "--%s needs a value", axes[found].flag);
            goto fail;
        }
        if (dy_sweep_set(s, (enum dy_axis)found, value, err, err_len) != DY_OK)
            goto fail;
        i += eq ? 0 : 1;
    }
    return DY_OK;
fail:
    dy_sweep_free(s);
    return DY_E_INVALID;
#undef IS_OPTION
}

void dy_sweep_free(struct dy_sweep *s)
{
    for (int a = 0; a < DY_AX_COUNT; a++)
        dy_list_free(&s->values[a]);
}

uint64_t dy_sweep_count(const struct dy_sweep *s)
{
    uint64_t n = 1;
    for (int a = 0; a < DY_AX_COUNT; a++)
        if (s->values[a].count > 0)
            n *= (uint64_t)s->values[a].count;
    return n;
}

void dy_sweep_point(const struct dy_sweep *s, uint64_t i, const char *values[DY_AX_COUNT])
{
    for (int a = DY_AX_COUNT - 1; a >= 0; a--) {
        int n = s->values[a].count;
        if (n == 0) {
            values[a] = NULL;
            continue;
        }
        values[a] = s->values[a].items[i % (uint64_t)n];
        i /= (uint64_t)n;
    }
}

void dy_config_key(const char *values[DY_AX_COUNT], char *out, size_t len)
{
    size_t used = 0;
    out[0] = '\0';
    for (int a = 0; a < DY_AX_COUNT && used < len; a++) {
        const char *v = values[a];
        if (!v)
            continue;
        if (a == DY_AX_BACKEND && !strcmp(v, "auto"))
            v = dy_best_backend();
        int n = snprintf(out + used, len - used, "%s%s=%s", used ? ";" : "",
                         dy_axis_flag((enum dy_axis)a), v);
        used += n > 0 ? (size_t)n : 0;
    }
}

void dy_sweep_usage(FILE *out)
{
    fprintf(out, "Axes take comma lists; integer axes also take ranges a-b, a-b+step, a-b*factor.\n\n");
    for (int a = 0; a < DY_AX_COUNT; a++)
        fprintf(out, "  --%-16s %s%s%s%s%s%s%s\n", axes[a].flag, axes[a].help,
                axes[a].choices ? " [" : "", axes[a].choices ? axes[a].choices : "",
                axes[a].choices ? "]" : "", axes[a].def ? " (default " : "",
                axes[a].def ? axes[a].def : "", axes[a].def ? ")" : "");
    fprintf(out, "\nOptions:\n");
    fprintf(out, "  --%-16s %s\n", "db FILE", "results database (default dyno.db; dyno.shardI.db when sharded)");
    fprintf(out, "  --%-16s %s\n", "resume", "skip points stored with status ok, oom or skipped");
    fprintf(out, "  --%-16s %s\n", "point-timeout S", "a point running longer is stored as failed");
    fprintf(out, "  --%-16s %s\n", "shard I/N", "run every N-th point from I (0-based); default from");
    fprintf(out, "  %-18s %s\n", "", "SLURM_ARRAY_TASK_ID/COUNT or MPI rank/size variables");
    fprintf(out, "  --%-16s %s\n", "dry-run", "print the points, one per line, and run nothing");
    fprintf(out, "\nRepetitions (nvbench's stopping rule): after the warm-ups, repeat until\n"
                 "--repeat times AND --min-time AND --max-noise are met, or --max-time passed:\n");
    fprintf(out, "  --%-16s %s\n", "min-time S", "timed device time (sum of e2e) of at least S seconds");
    fprintf(out, "  --%-16s %s\n", "max-noise PCT", "relative standard deviation of e2e at most PCT %");
    fprintf(out, "  --%-16s %s\n", "max-time S", "stop repeating after S seconds (60 with --max-noise)");
}
