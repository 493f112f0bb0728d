#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../backends/status.h"
#include "axes.h"

#define MAX_VALUES 4096

static int push(struct dy_list *l, const char *s, size_t len)
{
    if (l->count == MAX_VALUES)
        return DY_E_INVALID;
    char **items = realloc(l->items, sizeof(char *) * (size_t)(l->count + 1));
    if (!items)
        return DY_E_NOMEM;
    l->items = items;
    l->items[l->count] = strndup(s, len);
    if (!l->items[l->count])
        return DY_E_NOMEM;
    l->count++;
    return DY_OK;
}

void dy_list_free(struct dy_list *l)
{
    for (int i = 0; i < l->count; i++)
        free(l->items[i]);
    free(l->items);
    l->items = NULL;
    l->count = 0;
}

int dy_parse_int(const char *text, int64_t *out)
{
    if (!text || !*text)
        return 0;
    char *end;
    errno = 0;
    long long v = strtoll(text, &end, 10);
    if (errno || *end)
        return 0;
    *out = v;
    return 1;
}

int dy_split_list(const char *text, struct dy_list *out, char *err, size_t err_len)
{
    memset(out, 0, sizeof *out);
    const char *p = text;
    for (;;) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        if (len == 0) {
            snprintf(err, err_len, "empty item in list \"%s\"", text);
            dy_list_free(out);
            return DY_E_INVALID;
        }
        if (push(out, p, len) != DY_OK) {
            snprintf(err, err_len, "list \"%s\" has too many items", text);
            dy_list_free(out);
            return DY_E_INVALID;
        }
        if (!comma)
            return DY_OK;
        p = comma + 1;
    }
}

/* One item: "a", "a-b", "a-b+s" or "a-b*m". */
static int expand_item(const char *item, int64_t min, struct dy_list *out, char *err, size_t err_len)
{
    char *end;
    errno = 0;
    long long first = strtoll(item, &end, 10);
    if (end == item || errno)
        goto malformed;
    long long last = first, step = 1;
    char op = '+';
    if (*end == '-') {
        const char *p = end + 1;
        last = strtoll(p, &end, 10);
        if (end == p || errno)
            goto malformed;
        if (*end == '+' || *end == '*') {
            op = *end;
            p = end + 1;
            step = strtoll(p, &end, 10);
            if (end == p || errno)
                goto malformed;
        }
    }
    if (*end)
        goto malformed;
    if (first < min || last < first || (op == '+' && step < 1) || (op == '*' && step < 2) ||
        (op == '*' && first < 1)) {
        snprintf(err, err_len, "\"%s\": values must be >= %lld and ranges must increase", item,
                 (long long)min);
        return DY_E_INVALID;
    }
    for (long long v = first; v <= last; v = op == '+' ? v + step : v * step) {
        char buf[32];
        int n = snprintf(buf, sizeof buf, "%lld", v);
        if (push(out, buf, (size_t)n) != DY_OK) {
            snprintf(err, err_len, "\"%s\" expands to more than %d values", item, MAX_VALUES);
            return DY_E_INVALID;
        }
    }
    return DY_OK;
malformed:
    snprintf(err, err_len, "\"%s\" is not an integer or a range (a-b, a-b+step, a-b*factor)", item);
    return DY_E_INVALID;
}

int dy_expand_ints(const char *text, int64_t min, struct dy_list *out, char *err, size_t err_len)
{
    struct dy_list parts;
    int st = dy_split_list(text, &parts, err, err_len);
    memset(out, 0, sizeof *out);
    if (st != DY_OK)
        return st;
    for (int i = 0; i < parts.count && st == DY_OK; i++)
        st = expand_item(parts.items[i], min, out, err, err_len);
    dy_list_free(&parts);
    if (st != DY_OK)
        dy_list_free(out);
    return st;
}
