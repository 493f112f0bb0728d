/* The results database connection: opening a file (and refusing one that is
 * not dyno's without writing to it), the schema of a new file, closing. */
#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../backends/status.h"
#include "db_impl.h"

/* 'dyno' in ASCII, in the header of every file dyno creates. */
#define DY_APPLICATION_ID 0x64796E6F
/* The newest schema this code understands: the meta row of schema.sql. */
#define DY_SCHEMA_VERSION 1
/* How long a second dyno process writing the same file waits for its turn;
 * a point is one short transaction, so this is generous. */
#define DY_BUSY_TIMEOUT_MS 10000
#define WAL_RETRY_MS 5

/* SQLite's file header (https://www.sqlite.org/fileformat.html#the_database_header). */
#define SQLITE_HEADER_SIZE 100
#define SQLITE_HEADER_MAGIC "SQLite format 3" /* 16 bytes with its NUL */
#define SQLITE_HEADER_APP_ID_OFFSET 68

enum file_kind {
    FILE_NEW,       /* missing or empty: gets the schema */
    FILE_DYNO,      /* an SQLite file carrying dyno's application_id */
};

static void set_err(char *err, size_t err_len, const char *fmt, ...)
{
    va_list ap;

    if (!err || !err_len)
        return;
    va_start(ap, fmt);
    vsnprintf(err, err_len, fmt, ap);
    va_end(ap);
}

static int refuse_foreign(const char *path, uint32_t app_id, char *err, size_t err_len)
{
    set_err(err, err_len, "%s: not a dyno database (application_id 0x%08x, dyno's is 0x%08x)",
            path, app_id, (uint32_t)DY_APPLICATION_ID);
    return DY_E_DB;
}

/* Fails dy_db_open with "PATH: what (sqlite's message)". */
static int open_fail(dy_db *db, const char *what, char *err, size_t err_len)
{
    set_err(err, err_len, "%s: %s (%s)", db->path, what, sqlite3_errmsg(db->conn));
    return DY_E_DB;
}

/* Judges a file by its header bytes alone, so that a file which is not
 * dyno's is refused before SQLite has touched it: a read-write SQLite
 * connection could roll back a hot journal in it or create -wal and -shm
 * files beside it. */
static int classify_file(const char *path, enum file_kind *kind, char *err, size_t err_len)
{
    unsigned char header[SQLITE_HEADER_SIZE];
    const unsigned char *id;
    uint32_t app_id;
    size_t got;
    FILE *f;

    f = fopen(path, "rb");
    if (!f) {
        if (errno == ENOENT) {
            *kind = FILE_NEW;
            return DY_OK;
        }
        set_err(err, err_len, "%s: cannot read (%s)", path, strerror(errno));
        return DY_E_IO;
    }
    got = fread(header, 1, sizeof header, f);
    if (ferror(f)) {
        set_err(err, err_len, "%s: cannot read (%s)", path, strerror(errno));
        fclose(f);
        return DY_E_IO;
    }
    fclose(f);

    /* SQLite itself takes an empty file for an empty database. */
    if (got == 0) {
        *kind = FILE_NEW;
        return DY_OK;
    }
    if (got < sizeof header ||
        memcmp(header, SQLITE_HEADER_MAGIC, sizeof SQLITE_HEADER_MAGIC) != 0) {
        set_err(err, err_len, "%s: not an SQLite database (%s)", path,
                sqlite3_errstr(SQLITE_NOTADB));
        return DY_E_DB;
    }
    id = header + SQLITE_HEADER_APP_ID_OFFSET;
    app_id = (uint32_t)id[0] << 24 | (uint32_t)id[1] << 16 | (uint32_t)id[2] << 8 | id[3];
    if (app_id != DY_APPLICATION_ID)
        return refuse_foreign(path, app_id, err, err_len);
    *kind = FILE_DYNO;
    return DY_OK;
}

static int query_int(sqlite3 *conn, const char *sql, int64_t *value)
{
    sqlite3_stmt *st;
    int rc;

    rc = sqlite3_prepare_v2(conn, sql, -1, &st, NULL);
    if (rc != SQLITE_OK)
        return rc;
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        *value = sqlite3_column_int64(st, 0);
        rc = SQLITE_OK;
    }
    sqlite3_finalize(st);
    return rc;
}

/* Gives a file that was empty when classify_file looked at it the schema and
 * dyno's application_id, in one transaction. Meanwhile another dyno process
 * may have created it (nothing left to do) or something else may have
 * written it (refused, and left as it is). */
static int install_schema(dy_db *db, char *err, size_t err_len)
{
    char set_app_id[64];
    int64_t app_id = 0, objects = 0;
    int status;

    if (sqlite3_exec(db->conn, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK)
        return open_fail(db, "cannot start creating the schema", err, err_len);
    if (query_int(db->conn, "PRAGMA application_id", &app_id) != SQLITE_OK ||
        query_int(db->conn, "SELECT count(*) FROM sqlite_master", &objects) != SQLITE_OK) {
        status = open_fail(db, "cannot read the file", err, err_len);
        goto rollback;
    }
    if (app_id != DY_APPLICATION_ID) {
        if (app_id != 0 || objects != 0) {
            status = refuse_foreign(db->path, (uint32_t)app_id, err, err_len);
            goto rollback;
        }
        snprintf(set_app_id, sizeof set_app_id, "PRAGMA application_id = %d", DY_APPLICATION_ID);
        if (sqlite3_exec(db->conn, dy_schema_sql, NULL, NULL, NULL) != SQLITE_OK ||
            sqlite3_exec(db->conn, set_app_id, NULL, NULL, NULL) != SQLITE_OK) {
            status = open_fail(db, "cannot create the schema", err, err_len);
            goto rollback;
        }
    }
    if (sqlite3_exec(db->conn, "COMMIT", NULL, NULL, NULL) != SQLITE_OK) {
        status = open_fail(db, "cannot commit the schema", err, err_len);
        goto rollback;
    }
    return DY_OK;

rollback:
    sqlite3_exec(db->conn, "ROLLBACK", NULL, NULL, NULL);
    return status;
}

static int check_schema_version(dy_db *db, char *err, size_t err_len)
{
    const char *text = NULL;
    sqlite3_stmt *st;
    char *end;
    long version = 0;
    int status = DY_OK;
    int rc;

    rc = sqlite3_prepare_v2(db->conn, "SELECT value FROM meta WHERE key = 'schema_version'",
                            -1, &st, NULL);
    /* The statement is fixed, so a plain SQL error means the table is missing. */
    if (rc == SQLITE_ERROR) {
        set_err(err, err_len, "%s: not a dyno database (%s)", db->path, sqlite3_errmsg(db->conn));
        return DY_E_DB;
    }
    if (rc != SQLITE_OK)
        return open_fail(db, "cannot read the schema version", err, err_len);

    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        text = (const char *)sqlite3_column_text(st, 0);
        if (text)
            version = strtol(text, &end, 10);
        if (!text || end == text || *end)
            version = 0;
    } else if (rc != SQLITE_DONE) {
        status = open_fail(db, "cannot read the schema version", err, err_len);
        goto finalize;
    }
    if (version < 1) {
        set_err(err, err_len, "%s: not a dyno database (no valid schema_version in meta)",
                db->path);
        status = DY_E_DB;
    } else if (version > DY_SCHEMA_VERSION) {
        set_err(err, err_len,
                "%s: schema version %ld is newer than this dyno's (%d); use a newer dyno",
                db->path, version, DY_SCHEMA_VERSION);
        status = DY_E_DB;
    }

finalize:
    sqlite3_finalize(st);
    return status;
}

/* Columns added to schema.sql since its first version, in that order. A
 * file written before gets them the first time a dyno that knows them opens
 * it. Columns are only ever added, so an older dyno still reads and writes
 * the file: no schema_version bump is needed. */
static const char *const added_columns[][3] = {
    { "runs", "uuid", "TEXT" },
    { "points", "config_key", "TEXT" },
    { "points", "uuid", "TEXT" },
    { "points", "e2e_noise", "REAL" },
    { "points", "e2e_ms_p90", "REAL" },
    { "points", "e2e_ms_p99", "REAL" },
    { "points", "lora_rank", "INTEGER" },
    { "points", "lora_merged", "INTEGER" },
    { "points", "expert_load_max", "REAL" },
    { "points", "expert_load_mean", "REAL" },
    { "points", "expert_imbalance", "REAL" },
    { "points", "experts_touched", "REAL" },
    { "points", "step_bytes", "INTEGER" },
    { "points", "top_k_map", "TEXT" },
    { "points", "token_agreement", "REAL" },
    { "points", "kl_mean", "REAL" },
    { "points", "lora_targets", "TEXT" },
    { "points", "lora_rank_map", "TEXT" },
    { "points", "expert_bits", "TEXT" },
    { "points", "kv_budget_map", "TEXT" },
};
#define ADDED_COLUMN_COUNT (sizeof added_columns / sizeof added_columns[0])

static int count_missing_columns(sqlite3 *conn, int64_t *missing)
{
    char sql[160];
    int64_t present = 0;

    *missing = 0;
    for (size_t i = 0; i < ADDED_COLUMN_COUNT; i++) {
        snprintf(sql, sizeof sql, "SELECT count(*) FROM pragma_table_info('%s') WHERE name = '%s'",
                 added_columns[i][0], added_columns[i][1]);
        if (query_int(conn, sql, &present) != SQLITE_OK)
            return SQLITE_ERROR;
        *missing += !present;
    }
    return SQLITE_OK;
}

/* Adds the missing columns, and gives rows without a uuid (written before,
 * or by an older dyno since) one, which `dyno merge` needs. */
static int upgrade_file(dy_db *db, char *err, size_t err_len)
{
    static const char fill_uuids[] =
        "UPDATE runs SET uuid = " DY_NEW_UUID_SQL " WHERE uuid IS NULL;"
        "UPDATE points SET uuid = " DY_NEW_UUID_SQL " WHERE uuid IS NULL;";
    /* both lookups use the uuid indexes */
    static const char lacks_uuids[] =
        "SELECT EXISTS (SELECT 1 FROM runs WHERE uuid IS NULL)"
        " OR EXISTS (SELECT 1 FROM points WHERE uuid IS NULL)";
    char sql[160];
    int64_t missing = 0, lacking = 0, present = 0;
    int status;

    if (count_missing_columns(db->conn, &missing) != SQLITE_OK ||
        (!missing && query_int(db->conn, lacks_uuids, &lacking) != SQLITE_OK))
        return open_fail(db, "cannot read the schema", err, err_len);
    if (!missing && !lacking)
        return DY_OK;
    /* Another dyno may be upgrading the same file: look again under the lock. */
    if (sqlite3_exec(db->conn, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK)
        return open_fail(db, "cannot start upgrading the file", err, err_len);
    for (size_t i = 0; i < ADDED_COLUMN_COUNT; i++) {
        snprintf(sql, sizeof sql, "SELECT count(*) FROM pragma_table_info('%s') WHERE name = '%s'",
                 added_columns[i][0], added_columns[i][1]);
        if (query_int(db->conn, sql, &present) != SQLITE_OK)
            goto fail;
        snprintf(sql, sizeof sql, "ALTER TABLE %s ADD COLUMN %s %s", added_columns[i][0],
                 added_columns[i][1], added_columns[i][2]);
        if (!present && sqlite3_exec(db->conn, sql, NULL, NULL, NULL) != SQLITE_OK)
            goto fail;
    }
    /* schema.sql again, for the indexes on the new columns */
    if (sqlite3_exec(db->conn, dy_schema_sql, NULL, NULL, NULL) != SQLITE_OK ||
        sqlite3_exec(db->conn, fill_uuids, NULL, NULL, NULL) != SQLITE_OK)
        goto fail;
    if (sqlite3_exec(db->conn, "COMMIT", NULL, NULL, NULL) != SQLITE_OK)
        goto fail;
    return DY_OK;

fail:
    status = open_fail(db, "cannot upgrade the file", err, err_len);
    sqlite3_exec(db->conn, "ROLLBACK", NULL, NULL, NULL);
    return status;
}

/* Switching to WAL upgrades a read lock to a write lock, and when another
 * connection holds a write lock SQLite answers BUSY at once instead of calling
 * the busy handler (waiting there could deadlock). That happens while dyno
 * processes create a new file side by side, so wait for them here. */
static int enable_wal(dy_db *db)
{
    int waited_ms = 0;
    int rc;

    for (;;) {
        rc = sqlite3_exec(db->conn, "PRAGMA journal_mode = WAL", NULL, NULL, NULL);
        if (rc != SQLITE_BUSY || waited_ms >= DY_BUSY_TIMEOUT_MS)
            return rc;
        waited_ms += sqlite3_sleep(WAL_RETRY_MS);
    }
}

int dy_db_open(const char *path, dy_db **out, char *err, size_t err_len)
{
    enum file_kind kind;
    dy_db *db;
    int flags;
    int status;

    *out = NULL;
    set_err(err, err_len, "%s", "");
    status = classify_file(path, &kind, err, err_len);
    if (status != DY_OK)
        return status;

    db = calloc(1, sizeof *db + strlen(path) + 1);
    if (!db) {
        set_err(err, err_len, "%s: %s", path, strerror(ENOMEM));
        return DY_E_NOMEM;
    }
    strcpy(db->path, path);

    /* Without CREATE, a dyno file removed since classify_file looked is an
     * error rather than silently a new, empty database. */
    flags = SQLITE_OPEN_READWRITE | (kind == FILE_NEW ? SQLITE_OPEN_CREATE : 0);
    if (sqlite3_open_v2(path, &db->conn, flags, NULL) != SQLITE_OK) {
        status = open_fail(db, "cannot open", err, err_len);
        goto close_db;
    }
    sqlite3_busy_timeout(db->conn, DY_BUSY_TIMEOUT_MS);
    if (kind == FILE_NEW) {
        status = install_schema(db, err, err_len);
        if (status != DY_OK)
            goto close_db;
    }
    status = check_schema_version(db, err, err_len);
    if (status != DY_OK)
        goto close_db;

    /* Only now that the file is known to be dyno's may anything be written.
     * WAL lets `dyno report` read beside a running sweep, and with
     * synchronous=NORMAL a killed sweep still loses at most the point in
     * flight (only a power cut can lose more). */
    if (enable_wal(db) != SQLITE_OK ||
        sqlite3_exec(db->conn, "PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON",
                     NULL, NULL, NULL) != SQLITE_OK) {
        status = open_fail(db, "cannot configure the connection", err, err_len);
        goto close_db;
    }
    status = upgrade_file(db, err, err_len);
    if (status != DY_OK)
        goto close_db;
    if (sqlite3_prepare_v2(db->conn, "SELECT count(*) FROM points", -1, &db->count_points,
                           NULL) != SQLITE_OK) {
        status = open_fail(db, "cannot prepare statements", err, err_len);
        goto close_db;
    }
    status = dy__db_prepare_writes(db);
    if (status != DY_OK) {
        set_err(err, err_len, "%s", db->error);
        goto close_db;
    }
    *out = db;
    return DY_OK;

close_db:
    dy_db_close(db);
    return status;
}

void dy_db_close(dy_db *db)
{
    if (!db)
        return;
    sqlite3_finalize(db->insert_run);
    sqlite3_finalize(db->insert_device);
    sqlite3_finalize(db->insert_point);
    sqlite3_finalize(db->insert_sample);
    sqlite3_finalize(db->count_points);
    sqlite3_finalize(db->find_point);
    /* Every statement is finalized, so this closes; as the last connection
     * it also checkpoints the WAL back into the file. */
    sqlite3_close(db->conn);
    free(db);
}

const char *dy_db_error(const dy_db *db)
{
    return db->error;
}

int dy__db_fail(dy_db *db, const char *what)
{
    snprintf(db->error, sizeof db->error, "%s: %s: %s", db->path, what, sqlite3_errmsg(db->conn));
    return DY_E_DB;
}

int dy_db_count_points(dy_db *db, int64_t *count)
{
    int status = DY_OK;

    if (sqlite3_step(db->count_points) == SQLITE_ROW)
        *count = sqlite3_column_int64(db->count_points, 0);
    else
        status = dy__db_fail(db, "cannot count points");
    sqlite3_reset(db->count_points);
    return status;
}
