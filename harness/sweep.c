#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../backends/status.h"
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

static int set_axis(struct dy_sweep *s, enum dy_axis a, const char *text, char *err, size_t err_len)
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
    memset(s, 0, sizeof *s);
    snprintf(s->db_path, sizeof s->db_path, "dyno.db");
    for (int a = 0; a < DY_AX_COUNT; a++) {
        if (axes[a].def && set_axis(s, (enum dy_axis)a, axes[a].def, err, err_len) != DY_OK)
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
        if (name_len == 2 && !strncmp(name, "db", 2)) {
            if (!value || !*value) {
                snprintf(err, err_len, "--db needs a file name");
                goto fail;
            }
            snprintf(s->db_path, sizeof s->db_path, "%s", value);
            i += eq ? 0 : 1;
            continue;
        }
        int found = -1;
        for (int a = 0; a < DY_AX_COUNT; a++)
            if (strlen(axes[a].flag) == name_len && !strncmp(axes[a].flag, name, name_len))
                found = a;
        if (found < 0) {
            snprintf(err, err_len, "unknown flag \"--%.*s\" (see `dyno run --help`)", (int)name_len, name);
            goto fail;
        }
        if (!value) {
            snprintf(err, err_len, "--%s needs a value", axes[found].flag);
            goto fail;
        }
        if (set_axis(s, (enum dy_axis)found, value, err, err_len) != DY_OK)
            goto fail;
        i += eq ? 0 : 1;
    }
    return DY_OK;
fail:
    dy_sweep_free(s);
    return DY_E_INVALID;
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

void dy_sweep_usage(FILE *out)
{
    fprintf(out, "Axes take comma lists; integer axes also take ranges a-b, a-b+step, a-b*factor.\n\n");
    for (int a = 0; a < DY_AX_COUNT; a++)
        fprintf(out, "  --%-16s %s%s%s%s%s%s%s\n", axes[a].flag, axes[a].help,
                axes[a].choices ? " [" : "", axes[a].choices ? axes[a].choices : "",
                axes[a].choices ? "]" : "", axes[a].def ? " (default " : "",
                axes[a].def ? axes[a].def : "", axes[a].def ? ")" : "");
    fprintf(out, "  --%-16s %s\n", "db", "results database (default dyno.db)");
}
