/* Read-only opening of a results database for the dashboard commands. */
#include <stdint.h>
#include <stdio.h>

#include "../backends/status.h"
#include "dashboard.h"

/* 'dyno' in ASCII: results/db.c stamps it into every file it creates. */
#define DY_APPLICATION_ID 0x64796E6F

int dy_rdb_open(const char *path, sqlite3 **out, char *err, size_t err_len)
{
    sqlite3 *conn = NULL;
    sqlite3_stmt *st = NULL;
    int64_t app_id = 0;
    int status = DY_E_DB;

    /* READONLY without CREATE: a mistyped --db is an error, not a new file.
     * NOMUTEX: one thread uses the connection. */
    if (sqlite3_open_v2(path, &conn, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, NULL) !=
        SQLITE_OK) {
        snprintf(err, err_len, "%s: cannot open (%s)", path,
                 conn ? sqlite3_errmsg(conn) : "out of memory");
        goto cleanup;
    }
    if (sqlite3_prepare_v2(conn, "PRAGMA application_id", -1, &st, NULL) != SQLITE_OK ||
        sqlite3_step(st) != SQLITE_ROW) {
        snprintf(err, err_len, "%s: not a dyno database (%s)", path, sqlite3_errmsg(conn));
        goto cleanup;
    }
    app_id = sqlite3_column_int64(st, 0);
    if (app_id != DY_APPLICATION_ID) {
        snprintf(err, err_len, "%s: not a dyno database (application_id 0x%08x)", path,
                 (unsigned)app_id);
        goto cleanup;
    }
    sqlite3_busy_timeout(conn, 10000);
    /* The report reads the points table once per column: mapped pages and
     * a large cache turn every scan after the first into memory reads. */
    sqlite3_exec(conn, "PRAGMA mmap_size = 1073741824; PRAGMA cache_size = -262144", NULL, NULL,
                 NULL);
    *out = conn;
    conn = NULL;
    status = DY_OK;
cleanup:
    sqlite3_finalize(st);
    sqlite3_close(conn);
    return status;
}
