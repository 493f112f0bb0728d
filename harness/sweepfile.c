/* Reading sweep files. The format is small on purpose:
 *
 *   # comment            ; comment
 *   output-len = 32      keys before any section: defaults for every section
 *   [decode]             a section: one cartesian product
 *   model = tiny-llama,llama-3.2-1b
 *   batch = 1-64*2       input_len and input-len are the same key
 */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../backends/status.h"
#include "sweepfile.h"

/* A default given before the first section, replayed into each section. */
struct default_key {
    enum dy_axis axis;
    char *value;
    int line;
};

struct loader {
    const char *path;
    struct dy_sweep_file *file;
    struct default_key *defaults;
    int default_count;
    bool given[DY_AX_COUNT];     /* keys of the current section (or the defaults) */
    int section_line;
    char *err;
    size_t err_len;
};

static char *trim(char *s)
{
    while (isspace((unsigned char)*s))
        s++;
    size_t n = strlen(s);
    while (n > 0 && isspace((unsigned char)s[n - 1]))
        s[--n] = '\0';
    return s;
}

static int fail(struct loader *l, int line, const char *fmt, const char *what)
{
    char msg[768];
    snprintf(msg, sizeof msg, fmt, what);
    snprintf(l->err, l->err_len, "%s:%d: %s", l->path, line, msg);
    return DY_E_INVALID;
}

static struct dy_sweep *current(struct loader *l)
{
    return l->file->count ? &l->file->sections[l->file->count - 1] : NULL;
}

/* Ends the current section: one of model and model-dir names the model, a
 * section's own key winning over a default. */
static int finish_section(struct loader *l)
{
    struct dy_sweep *s = current(l);
    if (!s)
        return DY_OK;
    if (l->given[DY_AX_MODEL] && l->given[DY_AX_MODEL_DIR])
        return fail(l, l->section_line, "%s", "give model or model-dir, not both");
    if (l->given[DY_AX_MODEL])
        dy_list_free(&s->values[DY_AX_MODEL_DIR]);
    else if (s->values[DY_AX_MODEL_DIR].count > 0)
        dy_list_free(&s->values[DY_AX_MODEL]);
    return DY_OK;
}

static int start_section(struct loader *l, const char *name, int line)
{
    struct dy_sweep_file *f = l->file;
    char err[512];
    if (finish_section(l) != DY_OK)
        return DY_E_INVALID;
    struct dy_sweep *sections = realloc(f->sections, sizeof *sections * (size_t)(f->count + 1));
    if (sections)
        f->sections = sections;
    char **names = realloc(f->names, sizeof *names * (size_t)(f->count + 1));
    if (names)
        f->names = names;
    if (!sections || !names)
        return fail(l, line, "%s", "out of memory");
    /* with no arguments, parsing gives every axis its default */
    if (dy_sweep_parse(0, NULL, &f->sections[f->count], err, sizeof err) != DY_OK)
        return fail(l, line, "%s", err);
    f->names[f->count] = strdup(name);
    f->count++;
    if (!f->names[f->count - 1])
        return fail(l, line, "%s", "out of memory");
    struct dy_sweep *s = current(l);
    for (int i = 0; i < l->default_count; i++) {
        struct default_key *d = &l->defaults[i];
        if (dy_sweep_set(s, d->axis, d->value, err, sizeof err) != DY_OK)
            return fail(l, d->line, "%s", err);
    }
    memset(l->given, 0, sizeof l->given);
    l->section_line = line;
    return DY_OK;
}

static int key_value(struct loader *l, char *text, int line)
{
    char *eq = strchr(text, '=');
    if (!eq)
        return fail(l, line, "%s", "expected \"key = value\" or \"[section]\"");
    *eq = '\0';
    char *key = trim(text), *value = trim(eq + 1);
    int axis = dy_axis_lookup(key, strlen(key));
    if (axis < 0)
        return fail(l, line, "unknown key \"%s\" (keys are the axes of `dyno run --help`)", key);
    if (!*value)
        return fail(l, line, "key \"%s\" has no value", key);
    if (l->given[axis])
        return fail(l, line, "key \"%s\" given twice", key);
    l->given[axis] = true;
    char err[512];
    struct dy_sweep *s = current(l);
    if (s) {
        if (dy_sweep_set(s, (enum dy_axis)axis, value, err, sizeof err) != DY_OK)
            return fail(l, line, "%s", err);
        return DY_OK;
    }
    /* a default: checked now, so its error names its own line */
    struct dy_sweep check;
    if (dy_sweep_parse(0, NULL, &check, err, sizeof err) != DY_OK)
        return fail(l, line, "%s", err);
    int st = dy_sweep_set(&check, (enum dy_axis)axis, value, err, sizeof err);
    dy_sweep_free(&check);
    if (st != DY_OK)
        return fail(l, line, "%s", err);
    struct default_key *d = realloc(l->defaults, sizeof *d * (size_t)(l->default_count + 1));
    if (!d)
        return fail(l, line, "%s", "out of memory");
    l->defaults = d;
    d[l->default_count] = (struct default_key){ (enum dy_axis)axis, strdup(value), line };
    if (!d[l->default_count].value)
        return fail(l, line, "%s", "out of memory");
    l->default_count++;
    return DY_OK;
}

static int parse_line(struct loader *l, char *raw, int line)
{
    char *text = trim(raw);
    if (!*text || *text == '#' || *text == ';')
        return DY_OK;
    if (*text != '[')
        return key_value(l, text, line);
    size_t n = strlen(text);
    if (text[n - 1] != ']')
        return fail(l, line, "%s", "a section header is \"[name]\"");
    text[n - 1] = '\0';
    char *name = trim(text + 1);
    if (!*name)
        return fail(l, line, "%s", "a section needs a name");
    return start_section(l, name, line);
}

int dy_sweep_file_load(const char *path, struct dy_sweep_file *out, char *err, size_t err_len)
{
    struct loader l = { .path = path, .file = out, .err = err, .err_len = err_len };
    char *buf = NULL;
    size_t cap = 0;
    int line = 0, st = DY_E_IO;
    memset(out, 0, sizeof *out);
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(err, err_len, "%s: cannot read (%s)", path, strerror(errno));
        return DY_E_IO;
    }
    st = DY_OK;
    while (st == DY_OK && getline(&buf, &cap, f) >= 0)
        st = parse_line(&l, buf, ++line);
    if (st == DY_OK && ferror(f)) {
        snprintf(err, err_len, "%s: cannot read (%s)", path, strerror(errno));
        st = DY_E_IO;
    }
    /* no sections: the defaults are the one sweep */
    if (st == DY_OK && out->count == 0 && l.default_count > 0)
        st = start_section(&l, "default", 1);
    if (st == DY_OK)
        st = finish_section(&l);
    if (st == DY_OK && out->count == 0) {
        snprintf(err, err_len, "%s: no sections and no keys: nothing to run", path);
        st = DY_E_INVALID;
    }
    fclose(f);
    free(buf);
    for (int i = 0; i < l.default_count; i++)
        free(l.defaults[i].value);
    free(l.defaults);
    if (st != DY_OK)
        dy_sweep_file_free(out);
    return st;
}

void dy_sweep_file_free(struct dy_sweep_file *f)
{
    for (int i = 0; i < f->count; i++) {
        dy_sweep_free(&f->sections[i]);
        free(f->names[i]);
    }
    free(f->sections);
    free(f->names);
    memset(f, 0, sizeof *f);
}
