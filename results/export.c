/* `dyno export`: every point as CSV (libcsv quotes the text) or JSON lines,
 * with the column names of the points table (DESIGN.md section 7). */
#include <csv.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../backends/status.h"
#include "db_impl.h"

static int prepare_select(dy_db *db, sqlite3_stmt **st)
{
    sqlite3_str *sql = sqlite3_str_new(db->conn);
    char *text;
    int rc;

    sqlite3_str_appendall(sql, "SELECT ");
    for (int i = 0; i < dy__point_column_count(); i++)
        sqlite3_str_appendf(sql, "%s%s", i ? ", " : "", dy__point_column_name(i));
    sqlite3_str_appendall(sql, " FROM points ORDER BY id");
    text = sqlite3_str_finish(sql);
    if (!text) {
        snprintf(db->error, sizeof db->error, "%s: out of memory", db->path);
        return DY_E_NOMEM;
    }
    rc = sqlite3_prepare_v2(db->conn, text, -1, st, NULL);
    sqlite3_free(text);
    return rc == SQLITE_OK ? DY_OK : dy__db_fail(db, "cannot read points");
}

/* The shortest of 15 and 17 significant digits that reads back exactly. */
static int write_real(FILE *out, double v)
{
    char text[40];
    snprintf(text, sizeof text, "%.15g", v);
    if (strtod(text, NULL) != v)
        snprintf(text, sizeof text, "%.17g", v);
    return fputs(text, out) == EOF;
}

/* Text quoted by libcsv (always, so commas, quotes and line breaks survive);
 * numbers bare; NULL as an empty field. */
static int csv_value(FILE *out, sqlite3_stmt *st, int col)
{
    switch (sqlite3_column_type(st, col)) {
    case SQLITE_NULL:
        return 0;
    case SQLITE_INTEGER:
        return fprintf(out, "%lld", (long long)sqlite3_column_int64(st, col)) < 0;
    case SQLITE_FLOAT:
        return write_real(out, sqlite3_column_double(st, col));
    default:
        return csv_fwrite(out, sqlite3_column_text(st, col), (size_t)sqlite3_column_bytes(st, col));
    }
}

static json_t *json_value(sqlite3_stmt *st, int col)
{
    switch (sqlite3_column_type(st, col)) {
    case SQLITE_NULL:
        return json_null();
    case SQLITE_INTEGER:
        return json_integer(sqlite3_column_int64(st, col));
    case SQLITE_FLOAT:
        return json_real(sqlite3_column_double(st, col));
    default:
        /* NULL for text that is not UTF-8, which JSON cannot hold */
        return json_stringn((const char *)sqlite3_column_text(st, col),
                            (size_t)sqlite3_column_bytes(st, col));
    }
}

static int export_jsonl_row(dy_db *db, FILE *out, sqlite3_stmt *st, int64_t row)
{
    json_t *obj = json_object();
    int status = DY_OK;

    if (!obj)
        return DY_E_NOMEM;
    for (int i = 0; i < dy__point_column_count() && status == DY_OK; i++) {
        json_t *v = json_value(st, i);
        if (!v) {
            snprintf(db->error, sizeof db->error, "%s: point %lld: column %s is not UTF-8 text",
                     db->path, (long long)row, dy__point_column_name(i));
            status = DY_E_FORMAT;
        } else if (json_object_set_new(obj, dy__point_column_name(i), v) != 0) {
            status = DY_E_NOMEM;
        }
    }
    if (status == DY_OK && (json_dumpf(obj, out, JSON_COMPACT | JSON_PRESERVE_ORDER) != 0 ||
                            fputc('\n', out) == EOF))
        status = DY_E_IO;
    json_decref(obj);
    return status;
}

int dy_db_export(dy_db *db, FILE *out, enum dy_export_format format, int64_t *rows)
{
    sqlite3_stmt *st;
    int status = prepare_select(db, &st);
    int columns = dy__point_column_count();
    int failed = 0;
    int rc;

    *rows = 0;
    if (status != DY_OK)
        return status;
    if (format == DY_EXPORT_CSV) {
        for (int i = 0; i < columns; i++)
            failed |= fprintf(out, "%s%s", i ? "," : "", dy__point_column_name(i)) < 0;
        failed |= fputc('\n', out) == EOF;
    }
    while (!failed && status == DY_OK && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        ++*rows;
        if (format == DY_EXPORT_JSONL) {
            status = export_jsonl_row(db, out, st, *rows);
            continue;
        }
        for (int i = 0; i < columns; i++)
            failed |= (i && fputc(',', out) == EOF) || csv_value(out, st, i) != 0;
        failed |= fputc('\n', out) == EOF;
    }
    if (status == DY_OK && !failed && rc != SQLITE_DONE)
        status = dy__db_fail(db, "cannot read points");
    if (status == DY_OK && failed)
        status = DY_E_IO;
    if (status == DY_E_IO && !db->error[0])
        snprintf(db->error, sizeof db->error, "cannot write the export");
    sqlite3_finalize(st);
    return status;
}
