/* `dyno merge`: copies the runs, devices, points and samples of one dyno
 * database into another with new ids. Runs and points carry a random uuid
 * from their first insert, so a row already in the output is recognised
 * however often an input is merged: merging is idempotent. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "../backends/status.h"
#include "db_impl.h"

/* The columns of `table` in the output, less those named in `skip`
 * (", a, b"), as ", a, b, c"; prefix each with `alias.` when given. */
static char *column_list(dy_db *db, const char *table, const char *skip, const char *alias)
{
    sqlite3_stmt *st;
    sqlite3_str *out = sqlite3_str_new(db->conn);
    char pattern[64];

    if (sqlite3_prepare_v2(db->conn, "SELECT name FROM main.pragma_table_info(?) ORDER BY cid",
                           -1, &st, NULL) != SQLITE_OK) {
        sqlite3_free(sqlite3_str_finish(out));
        return NULL;
    }
    sqlite3_bind_text(st, 1, table, -1, SQLITE_STATIC);
    while (sqlite3_step(st) == SQLITE_ROW) {
        const char *name = (const char *)sqlite3_column_text(st, 0);
        snprintf(pattern, sizeof pattern, ", %s,", name);
        if (strstr(skip, pattern))
            continue;
        sqlite3_str_appendf(out, ", %s%s%s", alias ? alias : "", alias ? "." : "", name);
    }
    sqlite3_finalize(st);
    return sqlite3_str_finish(out);
}

static int exec(dy_db *db, const char *sql, int64_t *changes, const char *what)
{
    if (sqlite3_exec(db->conn, sql, NULL, NULL, NULL) != SQLITE_OK)
        return dy__db_fail(db, what);
    if (changes)
        *changes += sqlite3_changes(db->conn);
    return DY_OK;
}

/* Inside the merge's transaction, with the input attached as `src`. */
static int copy_rows(dy_db *db, struct dy_merge_counts *added)
{
    char *runs = column_list(db, "runs", ", id,", NULL);
    char *runs_src = column_list(db, "runs", ", id,", "r");
    char *devs = column_list(db, "devices", ", id, run_id,", NULL);
    char *devs_src = column_list(db, "devices", ", id, run_id,", "d");
    char *points = column_list(db, "points", ", id, run_id, device_id,", NULL);
    char *points_src = column_list(db, "points", ", id, run_id, device_id,", "p");
    char *sql = NULL;
    int status = DY_E_NOMEM;

    if (!runs || !runs_src || !devs || !devs_src || !points || !points_src) {
        snprintf(db->error, sizeof db->error, "%s: cannot read the columns", db->path);
        goto cleanup;
    }
    sql = sqlite3_mprintf(
        "INSERT INTO main.runs (%s) SELECT %s FROM src.runs r"
        " WHERE r.uuid NOT IN (SELECT uuid FROM main.runs WHERE uuid IS NOT NULL) ORDER BY r.id;",
        runs + 2, runs_src + 2);
    if (!sql || (status = exec(db, sql, &added->runs, "cannot copy runs")) != DY_OK)
        goto cleanup;
    sqlite3_free(sql);
    /* a device is one (backend, index) of its run */
    sql = sqlite3_mprintf(
        "INSERT INTO main.devices (run_id%s) SELECT mr.id%s FROM src.devices d"
        " JOIN src.runs sr ON sr.id = d.run_id JOIN main.runs mr ON mr.uuid = sr.uuid"
        " WHERE NOT EXISTS (SELECT 1 FROM main.devices md WHERE md.run_id = mr.id"
        " AND md.backend = d.backend AND md.device_index = d.device_index) ORDER BY d.id;",
        devs, devs_src);
    if (!sql || (status = exec(db, sql, NULL, "cannot copy devices")) != DY_OK)
        goto cleanup;
    sqlite3_free(sql);
    sql = sqlite3_mprintf(
        "CREATE TEMP TABLE merge_points AS SELECT id AS src_id, uuid FROM src.points"
        " WHERE uuid NOT IN (SELECT uuid FROM main.points WHERE uuid IS NOT NULL);"
        "INSERT INTO main.points (run_id, device_id%s) SELECT mr.id,"
        " (SELECT md.id FROM main.devices md JOIN src.devices sd ON sd.id = p.device_id"
        "  WHERE md.run_id = mr.id AND md.backend = sd.backend"
        "  AND md.device_index = sd.device_index)%s"
        " FROM src.points p JOIN temp.merge_points n ON n.src_id = p.id"
        " JOIN src.runs sr ON sr.id = p.run_id JOIN main.runs mr ON mr.uuid = sr.uuid"
        " ORDER BY p.id;",
        points, points_src);
    if (!sql || (status = exec(db, sql, &added->points, "cannot copy points")) != DY_OK)
        goto cleanup;
    status = exec(db,
                  "INSERT INTO main.samples (point_id, phase, rep, step, ns)"
                  " SELECT mp.id, s.phase, s.rep, s.step, s.ns FROM src.samples s"
                  " JOIN temp.merge_points n ON n.src_id = s.point_id"
                  " JOIN main.points mp ON mp.uuid = n.uuid;"
                  "DROP TABLE temp.merge_points;",
                  &added->samples, "cannot copy samples");

cleanup:
    if (status == DY_E_NOMEM && !db->error[0])
        snprintf(db->error, sizeof db->error, "%s: out of memory", db->path);
    sqlite3_free(sql);
    sqlite3_free(runs);
    sqlite3_free(runs_src);
    sqlite3_free(devs);
    sqlite3_free(devs_src);
    sqlite3_free(points);
    sqlite3_free(points_src);
    return status;
}

int dy_db_check_input(const char *path, char *err, size_t err_len)
{
    struct stat sb;
    dy_db *in;

    /* dy_db_open would give a missing or empty file the schema */
    if (stat(path, &sb) != 0) {
        snprintf(err, err_len, "%s: cannot read (%s)", path, strerror(errno));
        return DY_E_IO;
    }
    if (!S_ISREG(sb.st_mode) || sb.st_size == 0) {
        snprintf(err, err_len, "%s: not a dyno database (%s)", path,
                 S_ISREG(sb.st_mode) ? "empty file" : "not a regular file");
        return DY_E_DB;
    }
    /* opening judges the file before writing anything, and gives a file of an
     * older dyno the columns merging needs */
    int status = dy_db_open(path, &in, err, err_len);
    dy_db_close(in);
    return status;
}

int dy_db_merge(dy_db *db, const char *in_path, struct dy_merge_counts *added)
{
    sqlite3_stmt *attach;
    int status;

    memset(added, 0, sizeof *added);
    db->error[0] = '\0';
    if (sqlite3_prepare_v2(db->conn, "ATTACH DATABASE ? AS src", -1, &attach, NULL) != SQLITE_OK)
        return dy__db_fail(db, "cannot attach the input");
    sqlite3_bind_text(attach, 1, in_path, -1, SQLITE_STATIC);
    if (sqlite3_step(attach) != SQLITE_DONE) {
        snprintf(db->error, sizeof db->error, "%s: cannot attach %s: %s", db->path, in_path,
                 sqlite3_errmsg(db->conn));
        sqlite3_finalize(attach);
        return DY_E_DB;
    }
    sqlite3_finalize(attach);
    /* one transaction per input: all of it lands, or none */
    status = exec(db, "BEGIN IMMEDIATE", NULL, "cannot start the merge");
    if (status == DY_OK)
        status = copy_rows(db, added);
    if (status == DY_OK)
        status = exec(db, "COMMIT", NULL, "cannot commit the merge");
    if (status != DY_OK && !sqlite3_get_autocommit(db->conn))
        sqlite3_exec(db->conn, "ROLLBACK", NULL, NULL, NULL);
    sqlite3_exec(db->conn, "DETACH DATABASE src", NULL, NULL, NULL);
    return status;
}
