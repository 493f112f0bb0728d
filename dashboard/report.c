/* dyno report: writes one HTML file that opens from disk with no network.
 * The page is dashboard/template.html with its markers replaced by the
 * stylesheet, the vendored chart library, the data as JSON and the app, all
 * embedded into dyno at build time so the command works from any directory. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../backends/status.h"
#include "dashboard.h"
#include "dy_build_config.h"

/* Generated from the files of the same names by tools/embed.py. */
extern const char dy_report_template[];
extern const char dy_report_style[];
extern const char dy_report_app[];
extern const char dy_vendor_d3[];
extern const char dy_vendor_plot[];

enum col_kind { COL_TEXT, COL_NUM };

/* The columns of `points` the page reads, sent column by column: a column
 * repeats one kind of value, so this is far smaller than one object per
 * point (100,000 points must stay under 15 MB). */
static const struct {
    const char *name;
    enum col_kind kind;
} point_cols[] = {
    { "run_id", COL_NUM }, { "backend", COL_TEXT }, { "device", COL_TEXT },
    { "workload", COL_TEXT }, { "model", COL_TEXT }, { "batch", COL_NUM },
    { "input_len", COL_NUM }, { "output_len", COL_NUM }, { "experts", COL_NUM },
    { "top_k", COL_NUM }, { "moe_ffn_dim", COL_NUM }, { "routing", COL_TEXT },
    { "weight_dtype", COL_TEXT }, { "kv_dtype", COL_TEXT }, { "evict", COL_TEXT },
    { "kv_budget", COL_NUM }, { "block_size", COL_NUM }, { "image_size", COL_NUM },
    { "patch", COL_NUM }, { "layers", COL_NUM }, { "tag", COL_TEXT },
    { "status", COL_TEXT }, { "reason", COL_TEXT }, { "source", COL_TEXT },
    { "ttft_ms", COL_NUM }, { "tpot_ms_p50", COL_NUM }, { "tpot_ms_p90", COL_NUM },
    { "tpot_ms_p99", COL_NUM }, { "e2e_ms", COL_NUM }, { "output_tok_s", COL_NUM },
    { "total_tok_s", COL_NUM }, { "images_s", COL_NUM }, { "peak_mem_bytes", COL_NUM },
    { "weight_bytes", COL_NUM }, { "kv_bytes", COL_NUM }, { "energy_j", COL_NUM },
    { "avg_power_w", COL_NUM }, { "bw_util", COL_NUM }, { "flop_util", COL_NUM },
    { "expert_imbalance", COL_NUM }, { "experts_touched", COL_NUM },
    { "token_agreement", COL_NUM }, { "kl_mean", COL_NUM }, { "lora_rank", COL_NUM },
    { "lora_merged", COL_NUM }, { "lora_targets", COL_TEXT }, { "lora_rank_map", COL_TEXT },
    /* per-layer maps: few distinct values, so the dictionaries stay short */
    { "kv_budget_map", COL_TEXT }, { "expert_bits", COL_TEXT },
};

/* The hot writers below use the _unlocked stdio calls: the output is one
 * thread's, and the lock per character was a tenth of the run time. */

/* A JSON string that is safe inside an HTML <script> element: '<', '>' and
 * '&' as \u escapes (no "</script>" or "<!--" can appear), U+2028/U+2029 as
 * escapes too (line terminators to older JavaScript parsers). */
static void put_json_string(FILE *out, const unsigned char *s)
{
    putc_unlocked('"', out);
    for (; *s; s++) {
        if (*s == '"' || *s == '\\') {
            putc_unlocked('\\', out);
            putc_unlocked(*s, out);
        } else if (*s < 0x20 || *s == '<' || *s == '>' || *s == '&') {
            fprintf(out, "\\u%04x", *s);
        } else if (s[0] == 0xE2 && s[1] == 0x80 && (s[2] == 0xA8 || s[2] == 0xA9)) {
            fputs(s[2] == 0xA8 ? "\\u2028" : "\\u2029", out);
            s += 2;
        } else {
            putc_unlocked(*s, out);
        }
    }
    putc_unlocked('"', out);
}

/* Four significant digits are more than any timing here resolves; the
 * exponent is written without '+' and leading zeros to save bytes. */
static void put_real(FILE *out, double v)
{
    char buf[40], *e, *src, *dst;

    if (!isfinite(v)) {
        fputs_unlocked("null", out);
        return;
    }
    snprintf(buf, sizeof buf, "%.4g", v);
    e = strchr(buf, 'e');
    if (e) {
        src = dst = e + 1;
        if (*src == '+')
            src++;
        else if (*src == '-')
            *dst++ = *src++;
        while (*src == '0' && src[1])
            src++;
        memmove(dst, src, strlen(src) + 1);
    }
    fputs_unlocked(buf, out);
}

/* One column value as JSON. Integers beyond ten million are byte counts,
 * shown rounded anyway, so they take the short real form. */
static void put_value(FILE *out, sqlite3_stmt *st, int i)
{
    sqlite3_int64 n;

    switch (sqlite3_column_type(st, i)) {
    case SQLITE_NULL:
        fputs_unlocked("null", out);
        break;
    case SQLITE_INTEGER:
        n = sqlite3_column_int64(st, i);
        if (n > 10000000 || n < -10000000)
            put_real(out, (double)n);
        else
            fprintf(out, "%lld", (long long)n);
        break;
    case SQLITE_FLOAT:
        put_real(out, sqlite3_column_double(st, i));
        break;
    default:
        put_json_string(out, sqlite3_column_text(st, i));
        break;
    }
}

static int prepare(sqlite3 *conn, const char *sql, sqlite3_stmt **st, char *err, size_t err_len)
{
    if (sqlite3_prepare_v2(conn, sql, -1, st, NULL) == SQLITE_OK)
        return DY_OK;
    snprintf(err, err_len, "cannot read the database (%s)", sqlite3_errmsg(conn));
    return DY_E_DB;
}

/* Every row of SQL as {"cols":[...],"rows":[[...],...]}. */
static int put_table(FILE *out, sqlite3 *conn, const char *sql, char *err, size_t err_len)
{
    sqlite3_stmt *st = NULL;
    int status, rc, ncol, first = 1;

    status = prepare(conn, sql, &st, err, err_len);
    if (status != DY_OK)
        return status;
    ncol = sqlite3_column_count(st);
    fputs("{\"cols\":[", out);
    for (int i = 0; i < ncol; i++) {
        if (i)
            fputc(',', out);
        put_json_string(out, (const unsigned char *)sqlite3_column_name(st, i));
    }
    fputs("],\"rows\":[", out);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        fputs(first ? "[" : ",[", out);
        first = 0;
        for (int i = 0; i < ncol; i++) {
            if (i)
                fputc(',', out);
            put_value(out, st, i);
        }
        fputc(']', out);
    }
    fputs("]}", out);
    if (rc != SQLITE_DONE) {
        snprintf(err, err_len, "cannot read the database (%s)", sqlite3_errmsg(conn));
        status = DY_E_DB;
    }
    sqlite3_finalize(st);
    return status;
}

/* Every value of one column, in point order, as a JSON array. */
static int put_column_values(FILE *out, sqlite3 *conn, const char *sql, char *err,
                             size_t err_len)
{
    sqlite3_stmt *st = NULL;
    int status, rc, first = 1;

    status = prepare(conn, sql, &st, err, err_len);
    if (status != DY_OK)
        return status;
    fputc('[', out);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (!first)
            putc_unlocked(',', out);
        first = 0;
        put_value(out, st, 0);
    }
    fputc(']', out);
    if (rc != SQLITE_DONE) {
        snprintf(err, err_len, "cannot read the database (%s)", sqlite3_errmsg(conn));
        status = DY_E_DB;
    }
    sqlite3_finalize(st);
    return status;
}

/* A column that is NULL everywhere (MoE axes before MoE runs, say) is sent
 * as null; a text column as a sorted dictionary and one index per point,
 * since a few distinct names repeat over thousands of points. */
static int put_point_column(FILE *out, sqlite3 *conn, int c, char *err, size_t err_len)
{
    const char *name = point_cols[c].name;
    sqlite3_stmt *st = NULL;
    char sql[256];
    int status;

    /* names come from point_cols above, never from input */
    snprintf(sql, sizeof sql, "SELECT count(\"%s\") FROM points", name);
    status = prepare(conn, sql, &st, err, err_len);
    if (status != DY_OK)
        return status;
    if (sqlite3_step(st) != SQLITE_ROW) {
        snprintf(err, err_len, "cannot read the database (%s)", sqlite3_errmsg(conn));
        sqlite3_finalize(st);
        return DY_E_DB;
    }
    int empty = sqlite3_column_int64(st, 0) == 0;
    sqlite3_finalize(st);

    put_json_string(out, (const unsigned char *)name);
    fputc(':', out);
    if (empty) {
        fputs("null", out);
        return DY_OK;
    }
    if (point_cols[c].kind == COL_NUM) {
        snprintf(sql, sizeof sql, "SELECT \"%s\" FROM points ORDER BY id", name);
        return put_column_values(out, conn, sql, err, err_len);
    }
    /* DISTINCT ... ORDER BY and dense_rank() sort the same way (NULL
     * first, then by bytes), so index i names the i-th dictionary entry. */
    fputs("{\"dict\":", out);
    snprintf(sql, sizeof sql, "SELECT DISTINCT \"%s\" FROM points ORDER BY 1", name);
    status = put_column_values(out, conn, sql, err, err_len);
    if (status != DY_OK)
        return status;
    fputs(",\"idx\":", out);
    snprintf(sql, sizeof sql,
             "SELECT dense_rank() OVER (ORDER BY \"%s\") - 1 FROM points ORDER BY id", name);
    status = put_column_values(out, conn, sql, err, err_len);
    fputc('}', out);
    return status;
}

static int put_data(FILE *out, sqlite3 *conn, const char *db_path, char *err, size_t err_len)
{
    char stamp[32];
    time_t now = time(NULL);
    struct tm tm;
    int status;

    strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%SZ", gmtime_r(&now, &tm));
    fputs("{\"generated_at\":", out);
    put_json_string(out, (const unsigned char *)stamp);
    fputs(",\"dyno_version\":", out);
    put_json_string(out, (const unsigned char *)DY_VERSION " (" DY_GIT_COMMIT ")");
    fputs(",\"db\":", out);
    put_json_string(out, (const unsigned char *)db_path);
    fputs(",\"runs\":", out);
    status = put_table(out, conn,
                       "SELECT id, started_at, host, git_commit, dyno_version FROM runs "
                       "ORDER BY id", err, err_len);
    if (status != DY_OK)
        return status;
    fputs(",\"devices\":", out);
    status = put_table(out, conn,
                       "SELECT backend, name, vendor, mem_total_bytes, copy_gbps, gemm_tflops, "
                       "gemm_dtype, max(run_id) AS run_id FROM devices "
                       "GROUP BY backend, name ORDER BY backend, name", err, err_len);
    if (status != DY_OK)
        return status;
    fputs(",\"points\":{", out);
    for (size_t c = 0; c < sizeof point_cols / sizeof point_cols[0]; c++) {
        if (c)
            fputc(',', out);
        status = put_point_column(out, conn, (int)c, err, err_len);
        if (status != DY_OK)
            return status;
    }
    fputs("}}", out);
    return DY_OK;
}

/* Copies the template to OUT, replacing each <!--dy:NAME--> marker. */
static int put_page(FILE *out, sqlite3 *conn, const char *db_path, char *err, size_t err_len)
{
    static const struct {
        const char *name;
        const char *text;   /* NULL: the data */
    } parts[] = {
        { "style", dy_report_style }, { "d3", dy_vendor_d3 },
        { "plot", dy_vendor_plot }, { "app", dy_report_app }, { "data", NULL },
    };
    const char *t = dy_report_template, *mark;
    int status;

    while ((mark = strstr(t, "<!--dy:")) != NULL) {
        const char *name = mark + strlen("<!--dy:");
        const char *end = strstr(name, "-->");
        size_t i, n = sizeof parts / sizeof parts[0];

        if (!end)
            break;
        fwrite(t, 1, (size_t)(mark - t), out);
        for (i = 0; i < n; i++)
            if (strlen(parts[i].name) == (size_t)(end - name) &&
                !strncmp(parts[i].name, name, (size_t)(end - name)))
                break;
        if (i == n) {
            snprintf(err, err_len, "the embedded template names an unknown part");
            return DY_E_FORMAT;
        }
        if (parts[i].text) {
            fputs(parts[i].text, out);
        } else {
            status = put_data(out, conn, db_path, err, err_len);
            if (status != DY_OK)
                return status;
        }
        t = end + strlen("-->");
    }
    fputs(t, out);
    return DY_OK;
}

static void report_usage(FILE *f)
{
    fprintf(f, "usage: dyno report [--db FILE] [-o FILE.html]\n"
               "  --db FILE     results database (default dyno.db)\n"
               "  -o FILE.html  the page to write (default dyno-report.html)\n");
}

int dy_cmd_report(int argc, char **argv)
{
    const char *db_path = "dyno.db", *out_path = "dyno-report.html";
    char err[1024] = "", *tmp_path = NULL;
    sqlite3 *conn = NULL;
    FILE *out = NULL;
    int status, rc = 1;

    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            report_usage(stdout);
            return 0;
        }
        if ((!strcmp(argv[i], "--db") || !strcmp(argv[i], "-o")) && i + 1 < argc) {
            if (!strcmp(argv[i], "--db"))
                db_path = argv[++i];
            else
                out_path = argv[++i];
            continue;
        }
        fprintf(stderr, "dyno report: unknown or incomplete option \"%s\"\n", argv[i]);
        report_usage(stderr);
        return 2;
    }

    if (dy_rdb_open(db_path, &conn, err, sizeof err) != DY_OK) {
        fprintf(stderr, "dyno report: %s\n", err);
        goto cleanup;
    }
    /* Written beside the target and renamed over it, so a failure never
     * leaves half a page where the last good one was. */
    tmp_path = malloc(strlen(out_path) + 8);
    if (!tmp_path)
        goto cleanup;
    sprintf(tmp_path, "%s.tmp", out_path);
    out = fopen(tmp_path, "wb");
    if (!out) {
        perror(tmp_path);
        goto cleanup;
    }
    /* one transaction: every column is read from the same snapshot */
    sqlite3_exec(conn, "BEGIN", NULL, NULL, NULL);
    status = put_page(out, conn, db_path, err, sizeof err);
    sqlite3_exec(conn, "COMMIT", NULL, NULL, NULL);
    if (status != DY_OK) {
        fprintf(stderr, "dyno report: %s: %s\n", db_path, err);
        goto cleanup;
    }
    if (ferror(out) | fclose(out)) {
        out = NULL;
        perror(tmp_path);
        goto cleanup;
    }
    out = NULL;
    if (rename(tmp_path, out_path) != 0) {
        perror(out_path);
        goto cleanup;
    }
    printf("wrote %s\n", out_path);
    rc = 0;
cleanup:
    if (out)
        fclose(out);
    if (rc != 0 && tmp_path)
        remove(tmp_path);
    free(tmp_path);
    sqlite3_close(conn);
    return rc;
}
