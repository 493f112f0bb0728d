/* dyno compare: the dashboard's device comparison as a markdown table, for
 * the terminal: "how much faster is B than A on my workload". */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../backends/status.h"
#include "dashboard.h"

#define MAX_VS 32

/* Two points match when every axis but the device, the seed and the tag
 * agrees (NULL matching NULL): the same work measured elsewhere. */
#define MATCH_AXES(X)                                                        \
    X(workload) X(model) X(batch) X(input_len) X(output_len) X(experts)      \
    X(top_k) X(moe_ffn_dim) X(routing) X(weight_dtype) X(kv_dtype) X(evict)  \
    X(kv_budget) X(block_size) X(image_size) X(patch) X(layers) X(lora_rank_map)

/* Axes stored as NULL where the flag was not given, which means the same as
 * its default: a ViT point without --lora-rank is one with --lora-rank 0. */
#define MATCH_DEFAULTED(X) X(lora_rank, "0") X(lora_merged, "0") X(lora_targets, "'attn'")

#define AS_LIST(c) #c ","
#define AS_JOIN(c) " AND b." #c " IS v." #c
#define AS_LIST_DEFAULTED(c, d) "ifnull(" #c ", " d "),"
#define AS_JOIN_DEFAULTED(c, d) " AND ifnull(b." #c ", " d ") = ifnull(v." #c ", " d ")"

/* The newest ok point of each configuration on each device, so repeated
 * runs of one sweep do not multiply the rows. */
static const char compare_sql[] =
    "WITH latest AS (SELECT * FROM points WHERE id IN (SELECT max(id) FROM points"
    " WHERE status = 'ok' GROUP BY " MATCH_AXES(AS_LIST) MATCH_DEFAULTED(AS_LIST_DEFAULTED)
    " backend, device, source))"
    " SELECT b.model, b.workload, b.batch, b.input_len, b.output_len, b.weight_dtype,"
    " b.kv_dtype, b.experts, b.top_k, b.evict,"
    " ifnull(b.total_tok_s, b.images_s), ifnull(v.total_tok_s, v.images_s),"
    " b.ttft_ms, v.ttft_ms, b.tpot_ms_p50, v.tpot_ms_p50,"
    " b.lora_rank, b.lora_targets, b.lora_merged, b.lora_rank_map, b.total_tok_s IS NULL"
    " FROM latest b JOIN latest v ON 1" MATCH_AXES(AS_JOIN) MATCH_DEFAULTED(AS_JOIN_DEFAULTED)
    " WHERE b.backend = ?1 AND b.device = ?2 AND v.backend = ?3 AND v.device = ?4"
    " ORDER BY b.model, b.workload, b.batch, b.input_len, b.output_len, b.weight_dtype,"
    " b.kv_dtype, b.lora_rank_map, b.lora_rank, b.lora_targets, b.lora_merged";

struct dev {
    char *backend, *device;
};

/* A markdown cell from database text: '|' would split the cell and control
 * characters could drive the terminal, so neither reaches the output. */
static void put_cell(const unsigned char *s)
{
    for (; s && *s; s++) {
        if (*s == '|')
            fputs("\\|", stdout);
        else if (*s < 0x20 || *s == 0x7f)
            fputc(' ', stdout);
        else
            fputc(*s, stdout);
    }
}

/* A figure, with UNIT after it where the column's header does not say it. */
static void put_num(sqlite3_stmt *st, int i, const char *unit)
{
    if (sqlite3_column_type(st, i) == SQLITE_NULL)
        fputs(" — |", stdout);
    else
        printf(fabs(sqlite3_column_double(st, i)) >= 1000 ? " %.0f%s |" : " %.4g%s |",
               sqlite3_column_double(st, i), unit);
}

/* Prints "×R" where R > 1 means the compared device is faster; returns R,
 * or NAN when either figure is missing. */
static double put_ratio(sqlite3_stmt *st, int base, int other, int higher_is_better)
{
    double a, b, r;

    if (sqlite3_column_type(st, base) == SQLITE_NULL ||
        sqlite3_column_type(st, other) == SQLITE_NULL ||
        sqlite3_column_double(st, base) <= 0 || sqlite3_column_double(st, other) <= 0) {
        fputs(" — |", stdout);
        return NAN;
    }
    a = sqlite3_column_double(st, base);
    b = sqlite3_column_double(st, other);
    r = higher_is_better ? b / a : a / b;
    printf(" **%.2f×** |", r);
    return r;
}

/* The (backend, device) pairs that SEL names: a backend, a device name, or
 * "backend:device". */
static int find_devices(sqlite3 *conn, const char *sel, struct dev *found, int max, int *n)
{
    sqlite3_stmt *st = NULL;
    int rc;

    *n = 0;
    rc = sqlite3_prepare_v2(conn,
                            "SELECT DISTINCT backend, device FROM points WHERE status = 'ok' AND"
                            " (backend = ?1 OR device = ?1 OR backend || ':' || device = ?1)"
                            " ORDER BY backend, device", -1, &st, NULL);
    if (rc != SQLITE_OK)
        return DY_E_DB;
    sqlite3_bind_text(st, 1, sel, -1, SQLITE_STATIC);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW && *n < max) {
        found[*n].backend = strdup((const char *)sqlite3_column_text(st, 0));
        found[*n].device = strdup((const char *)sqlite3_column_text(st, 1));
        (*n)++;
    }
    sqlite3_finalize(st);
    return DY_OK;
}

/* Every other device with ok points, for a compare without --vs. */
static int all_other_devices(sqlite3 *conn, const struct dev *base, struct dev *found, int max,
                             int *n)
{
    sqlite3_stmt *st = NULL;

    *n = 0;
    if (sqlite3_prepare_v2(conn,
                           "SELECT DISTINCT backend, device FROM points WHERE status = 'ok'"
                           " AND backend IS NOT NULL AND device IS NOT NULL"
                           " AND NOT (backend = ?1 AND device = ?2) ORDER BY backend, device",
                           -1, &st, NULL) != SQLITE_OK)
        return DY_E_DB;
    sqlite3_bind_text(st, 1, base->backend, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, base->device, -1, SQLITE_STATIC);
    while (sqlite3_step(st) == SQLITE_ROW && *n < max) {
        found[*n].backend = strdup((const char *)sqlite3_column_text(st, 0));
        found[*n].device = strdup((const char *)sqlite3_column_text(st, 1));
        (*n)++;
    }
    sqlite3_finalize(st);
    return DY_OK;
}

/* The LoRA adapters of a ViT point, which tell its rows apart: " lora r8
 * attn+mlp merged", " lora map 8/8,0/4 attn+mlp", nothing without any. */
static void put_lora(sqlite3_stmt *st)
{
    const unsigned char *map = sqlite3_column_text(st, 19);

    if (!map && sqlite3_column_int64(st, 16) <= 0)
        return;
    if (map) {
        fputs(" lora map ", stdout);
        put_cell(map);
    } else {
        printf(" lora r%lld", (long long)sqlite3_column_int64(st, 16));
    }
    if (sqlite3_column_type(st, 17) != SQLITE_NULL) {
        fputc(' ', stdout);
        put_cell(sqlite3_column_text(st, 17));
    }
    if (sqlite3_column_int(st, 18) == 1)
        fputs(" merged", stdout);
}

static void put_config(sqlite3_stmt *st)
{
    fputs("| ", stdout);
    put_cell(sqlite3_column_text(st, 0));
    fputs(" | ", stdout);
    put_cell(sqlite3_column_text(st, 1));
    for (int i = 2; i <= 4; i++)
        printf(" | %s", sqlite3_column_type(st, i) == SQLITE_NULL ? "—"
                                                                  : (const char *)sqlite3_column_text(st, i));
    fputs(" | ", stdout);
    put_cell(sqlite3_column_text(st, 5));
    fputc('/', stdout);
    put_cell(sqlite3_column_text(st, 6));
    if (sqlite3_column_type(st, 7) != SQLITE_NULL)
        printf(" e%d k%d", sqlite3_column_int(st, 7), sqlite3_column_int(st, 8));
    if (sqlite3_column_type(st, 9) != SQLITE_NULL && strcmp((const char *)sqlite3_column_text(st, 9), "none")) {
        fputs(" evict ", stdout);
        put_cell(sqlite3_column_text(st, 9));
    }
    put_lora(st);
    fputs(" |", stdout);
}

/* One table: BASE against VS. Returns the number of matching points. */
static int compare_pair(sqlite3_stmt *st, const struct dev *base, const struct dev *vs)
{
    double log_sum = 0, r;
    int rows = 0, ratios = 0;

    sqlite3_reset(st);
    sqlite3_bind_text(st, 1, base->backend, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, base->device, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, vs->backend, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 4, vs->device, -1, SQLITE_STATIC);

    fputs("\n## ", stdout);
    put_cell((const unsigned char *)vs->backend);
    fputc(':', stdout);
    put_cell((const unsigned char *)vs->device);
    fputs(" vs ", stdout);
    put_cell((const unsigned char *)base->backend);
    fputc(':', stdout);
    put_cell((const unsigned char *)base->device);
    fputs("\n\n", stdout);
    while (sqlite3_step(st) == SQLITE_ROW) {
        if (rows++ == 0)
            puts("| model | workload | batch | in | out | weights/kv | base tok/s | tok/s | × |"
                 " base TTFT ms | TTFT ms | × | base tpot p50 ms | tpot p50 ms | × |\n"
                 "|---|---|--:|--:|--:|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|");
        /* a ViT point's throughput is images/s */
        const char *unit = sqlite3_column_int(st, 20) ? " img/s" : "";
        put_config(st);
        put_num(st, 10, unit);
        put_num(st, 11, unit);
        r = put_ratio(st, 10, 11, 1);
        if (isfinite(r)) {
            log_sum += log(r);
            ratios++;
        }
        put_num(st, 12, "");
        put_num(st, 13, "");
        put_ratio(st, 12, 13, 0);
        put_num(st, 14, "");
        put_num(st, 15, "");
        put_ratio(st, 14, 15, 0);
        fputc('\n', stdout);
    }
    if (rows == 0)
        puts("no matching points");
    else if (ratios > 0)
        printf("\n%d matching point(s); throughput geometric mean **%.2f×**\n", rows,
               exp(log_sum / ratios));
    return rows;
}

static void free_devs(struct dev *d, int n)
{
    for (int i = 0; i < n; i++) {
        free(d[i].backend);
        free(d[i].device);
    }
}

static void compare_usage(FILE *f)
{
    fprintf(f, "usage: dyno compare --db FILE --baseline DEVICE [--vs DEVICE...]\n"
               "  DEVICE is a backend, a device name, or BACKEND:DEVICE; without --vs every\n"
               "  other device is compared. × > 1 means faster than the baseline\n"
               "  (throughput: vs/base; latencies: base/vs).\n");
}

int dy_cmd_compare(int argc, char **argv)
{
    const char *db_path = "dyno.db", *baseline = NULL, *vs_sel[MAX_VS];
    struct dev base[2], vs[MAX_VS], found[2];
    int n_base = 0, n_vs = 0, n_sel = 0, n_found, rc = 1;
    char err[1024];
    sqlite3 *conn = NULL;
    sqlite3_stmt *st = NULL;

    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            compare_usage(stdout);
            return 0;
        }
        if (i + 1 < argc && !strcmp(argv[i], "--db")) {
            db_path = argv[++i];
        } else if (i + 1 < argc && !strcmp(argv[i], "--baseline")) {
            baseline = argv[++i];
        } else if (i + 1 < argc && !strcmp(argv[i], "--vs") && n_sel < MAX_VS) {
            vs_sel[n_sel++] = argv[++i];
        } else {
            fprintf(stderr, "dyno compare: unknown or incomplete option \"%s\"\n", argv[i]);
            compare_usage(stderr);
            return 2;
        }
    }
    if (!baseline) {
        fprintf(stderr, "dyno compare: --baseline is required\n");
        compare_usage(stderr);
        return 2;
    }
    if (dy_rdb_open(db_path, &conn, err, sizeof err) != DY_OK) {
        fprintf(stderr, "dyno compare: %s\n", err);
        goto cleanup;
    }
    if (find_devices(conn, baseline, base, 2, &n_base) != DY_OK)
        goto db_error;
    if (n_base != 1) {
        fprintf(stderr, "dyno compare: --baseline \"%s\" %s in %s; name it as BACKEND:DEVICE\n",
                baseline, n_base ? "names more than one device" : "has no ok points", db_path);
        rc = 2;
        goto cleanup;
    }
    if (n_sel == 0 && all_other_devices(conn, &base[0], vs, MAX_VS, &n_vs) != DY_OK)
        goto db_error;
    for (int i = 0; i < n_sel; i++) {
        if (find_devices(conn, vs_sel[i], found, 2, &n_found) != DY_OK)
            goto db_error;
        if (n_found != 1) {
            free_devs(found, n_found);
            fprintf(stderr, "dyno compare: --vs \"%s\" %s in %s; name it as BACKEND:DEVICE\n",
                    vs_sel[i], n_found ? "names more than one device" : "has no ok points",
                    db_path);
            rc = 2;
            goto cleanup;
        }
        vs[n_vs++] = found[0];
    }
    if (sqlite3_prepare_v2(conn, compare_sql, -1, &st, NULL) != SQLITE_OK)
        goto db_error;
    printf("# dyno compare: baseline ");
    put_cell((const unsigned char *)base[0].backend);
    fputc(':', stdout);
    put_cell((const unsigned char *)base[0].device);
    printf(" (× > 1: faster than the baseline)\n");
    for (int i = 0; i < n_vs; i++)
        compare_pair(st, &base[0], &vs[i]);
    if (n_vs == 0)
        puts("\nno other device has ok points");
    rc = 0;
    goto cleanup;
db_error:
    fprintf(stderr, "dyno compare: %s: %s\n", db_path, sqlite3_errmsg(conn));
cleanup:
    sqlite3_finalize(st);
    free_devs(base, n_base);
    free_devs(vs, n_vs);
    sqlite3_close(conn);
    return rc;
}
