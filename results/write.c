/* Writing results: runs, devices, and points with their samples, each point
 * in one transaction so a killed sweep loses at most the point in flight. */
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "../backends/status.h"
#include "db_impl.h"

enum column_kind {
    COLUMN_TEXT,         /* empty string stored as NULL */
    COLUMN_TEXT_ALWAYS,  /* stored as given, even empty */
    COLUMN_INT,          /* int64_t; DY_NULL_INT stored as NULL */
    COLUMN_REAL,         /* double; NaN stored as NULL */
};

/* A column of points, named exactly as the struct dy_point field it holds. */
struct point_column {
    const char *name;
    enum column_kind kind;
    size_t offset;
    size_t size;         /* of a text field's buffer, which may lack its NUL */
};

#define POINT_FIELD(f) (((struct dy_point *)0)->f)
/* The _Generic selection has no default, so a field whose type does not
 * match its kind is a compile error rather than a misread column. */
#define COLUMN(f, kind, type, size) \
    { #f, kind, offsetof(struct dy_point, f) + _Generic(POINT_FIELD(f), type: 0), size }
#define TEXT(f) COLUMN(f, COLUMN_TEXT, char *, sizeof POINT_FIELD(f))
#define TEXT_ALWAYS(f) COLUMN(f, COLUMN_TEXT_ALWAYS, char *, sizeof POINT_FIELD(f))
#define INT(f) COLUMN(f, COLUMN_INT, int64_t, 0)
#define REAL(f) COLUMN(f, COLUMN_REAL, double, 0)

/* The one list that maps struct dy_point onto points: the INSERT statement
 * and dy_point_init are both built from it. */
static const struct point_column point_columns[] = {
    TEXT(backend), TEXT(device), TEXT(workload), TEXT(model),
    INT(batch), INT(input_len), INT(output_len),
    INT(experts), INT(top_k), INT(moe_ffn_dim),
    TEXT(routing), TEXT(weight_dtype), TEXT(kv_dtype), TEXT(evict),
    INT(kv_budget), INT(block_size), INT(image_size), INT(patch), INT(seed), INT(layers),
    TEXT(tag),
    TEXT_ALWAYS(status), TEXT(reason), TEXT_ALWAYS(source),
    REAL(ttft_ms), REAL(tpot_ms_p50), REAL(tpot_ms_p90), REAL(tpot_ms_p99), REAL(e2e_ms),
    REAL(output_tok_s), REAL(total_tok_s), REAL(images_s),
    INT(peak_mem_bytes), INT(weight_bytes), INT(kv_bytes),
    REAL(energy_j), REAL(avg_power_w), REAL(bw_util), REAL(flop_util),
    REAL(host_e2e_ms),
    INT(repeat), INT(warmup),
    TEXT(config_key), REAL(e2e_noise), REAL(e2e_ms_p90), REAL(e2e_ms_p99),
    INT(lora_rank), INT(lora_merged),
    REAL(expert_load_max), REAL(expert_load_mean), REAL(expert_imbalance), REAL(experts_touched),
    INT(step_bytes), TEXT(top_k_map), REAL(token_agreement), REAL(kl_mean),
    TEXT(lora_targets), TEXT(lora_rank_map), TEXT(expert_bits),
    TEXT(kv_budget_map),
};
#define POINT_COLUMN_COUNT ((int)(sizeof point_columns / sizeof point_columns[0]))

int dy__point_column_count(void)
{
    return POINT_COLUMN_COUNT;
}

const char *dy__point_column_name(int i)
{
    return point_columns[i].name;
}

#undef COLUMN
#undef TEXT
#undef TEXT_ALWAYS
#undef INT
#undef REAL

/* Field buffers are fixed-size and a caller may have filled one to the brim,
 * so the length is bounded by the buffer, never by a NUL alone. */
static int bind_text(sqlite3_stmt *st, int idx, const char *text, size_t size, int empty_is_null)
{
    size_t len = strnlen(text, size);

    if (!len && empty_is_null)
        return sqlite3_bind_null(st, idx);
    return sqlite3_bind_text(st, idx, text, (int)len, SQLITE_STATIC);
}

static int bind_int(sqlite3_stmt *st, int idx, int64_t value)
{
    return value == DY_NULL_INT ? sqlite3_bind_null(st, idx) : sqlite3_bind_int64(st, idx, value);
}

static int bind_real(sqlite3_stmt *st, int idx, double value)
{
    return isnan(value) ? sqlite3_bind_null(st, idx) : sqlite3_bind_double(st, idx, value);
}

#define BIND_TEXT(st, idx, field) bind_text(st, idx, field, sizeof field, 1)

/* Steps a bound insert once and resets it for the next use. */
static int insert_once(dy_db *db, sqlite3_stmt *st, const char *what)
{
    int status = DY_OK;

    if (sqlite3_step(st) != SQLITE_DONE)
        status = dy__db_fail(db, what);   /* read the message before the reset */
    sqlite3_reset(st);
    return status;
}

static int prepare_point_insert(dy_db *db)
{
    sqlite3_str *sql = sqlite3_str_new(db->conn);
    char *text;
    int rc;

    sqlite3_str_appendall(sql, "INSERT INTO points (run_id, device_id");
    for (int i = 0; i < POINT_COLUMN_COUNT; i++)
        sqlite3_str_appendf(sql, ", %s", point_columns[i].name);
    sqlite3_str_appendall(sql, ", uuid) VALUES (?, ?");
    for (int i = 0; i < POINT_COLUMN_COUNT; i++)
        sqlite3_str_appendall(sql, ", ?");
    sqlite3_str_appendall(sql, ", " DY_NEW_UUID_SQL ")");
    text = sqlite3_str_finish(sql);
    if (!text) {
        snprintf(db->error, sizeof db->error, "%s: out of memory", db->path);
        return DY_E_NOMEM;
    }
    rc = sqlite3_prepare_v2(db->conn, text, -1, &db->insert_point, NULL);
    sqlite3_free(text);
    return rc == SQLITE_OK ? DY_OK : dy__db_fail(db, "cannot prepare the point insert");
}

int dy__db_prepare_writes(dy_db *db)
{
    static const char insert_run[] =
        "INSERT INTO runs (started_at, dyno_version, git_commit, host, os, argv, uuid)"
        " VALUES (coalesce(?, strftime('%Y-%m-%dT%H:%M:%SZ', 'now')), ?, ?, ?, ?, ?, "
        DY_NEW_UUID_SQL ")";
    static const char insert_device[] =
        "INSERT INTO devices (run_id, backend, device_index, name, vendor, driver_version,"
        " runtime_version, mem_total_bytes, compute_units, clock_mhz, copy_gbps, gemm_tflops,"
        " gemm_dtype) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)";
    static const char insert_sample[] =
        "INSERT INTO samples (point_id, phase, rep, step, ns) VALUES (?, ?, ?, ?, ?)";
    static const char find_point[] =
        "SELECT 1 FROM points WHERE config_key = ? AND backend = ? AND device = ?"
        " AND source = 'dyno' AND status IN ('ok', 'oom', 'skipped') LIMIT 1";

    if (sqlite3_prepare_v2(db->conn, insert_run, -1, &db->insert_run, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(db->conn, find_point, -1, &db->find_point, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(db->conn, insert_device, -1, &db->insert_device, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(db->conn, insert_sample, -1, &db->insert_sample, NULL) != SQLITE_OK)
        return dy__db_fail(db, "cannot prepare statements");
    return prepare_point_insert(db);
}

void dy_point_init(struct dy_point *p)
{
    memset(p, 0, sizeof *p);
    for (int i = 0; i < POINT_COLUMN_COUNT; i++) {
        char *field = (char *)p + point_columns[i].offset;
        int64_t null_int = DY_NULL_INT;
        double nan = NAN;

        if (point_columns[i].kind == COLUMN_INT)
            memcpy(field, &null_int, sizeof null_int);
        else if (point_columns[i].kind == COLUMN_REAL)
            memcpy(field, &nan, sizeof nan);
    }
    snprintf(p->source, sizeof p->source, "dyno");
}

int dy_db_begin_run(dy_db *db, const struct dy_run_info *run, int64_t *run_id)
{
    sqlite3_stmt *st = db->insert_run;
    int status;

    BIND_TEXT(st, 1, run->started_at);
    BIND_TEXT(st, 2, run->dyno_version);
    BIND_TEXT(st, 3, run->git_commit);
    BIND_TEXT(st, 4, run->host);
    BIND_TEXT(st, 5, run->os);
    BIND_TEXT(st, 6, run->argv);
    status = insert_once(db, st, "cannot record the run");
    if (status == DY_OK)
        *run_id = sqlite3_last_insert_rowid(db->conn);
    return status;
}

int dy_db_add_device(dy_db *db, int64_t run_id, const struct dy_device_row *dev,
                     int64_t *device_id)
{
    sqlite3_stmt *st = db->insert_device;
    int status;

    sqlite3_bind_int64(st, 1, run_id);
    BIND_TEXT(st, 2, dev->backend);
    sqlite3_bind_int(st, 3, dev->device_index);
    BIND_TEXT(st, 4, dev->name);
    BIND_TEXT(st, 5, dev->vendor);
    BIND_TEXT(st, 6, dev->driver_version);
    BIND_TEXT(st, 7, dev->runtime_version);
    bind_int(st, 8, dev->mem_total_bytes);
    sqlite3_bind_int(st, 9, dev->compute_units);
    sqlite3_bind_int(st, 10, dev->clock_mhz);
    bind_real(st, 11, dev->copy_gbps);
    bind_real(st, 12, dev->gemm_tflops);
    BIND_TEXT(st, 13, dev->gemm_dtype);
    status = insert_once(db, st, "cannot record the device");
    if (status == DY_OK)
        *device_id = sqlite3_last_insert_rowid(db->conn);
    return status;
}

static void bind_point(sqlite3_stmt *st, int64_t run_id, int64_t device_id,
                       const struct dy_point *p)
{
    sqlite3_bind_int64(st, 1, run_id);
    bind_int(st, 2, device_id);
    for (int i = 0; i < POINT_COLUMN_COUNT; i++) {
        const struct point_column *c = &point_columns[i];
        const char *field = (const char *)p + c->offset;
        int idx = i + 3;
        int64_t int_value;
        double real_value;

        switch (c->kind) {
        case COLUMN_TEXT:
        case COLUMN_TEXT_ALWAYS:
            bind_text(st, idx, field, c->size, c->kind == COLUMN_TEXT);
            break;
        case COLUMN_INT:
            memcpy(&int_value, field, sizeof int_value);
            bind_int(st, idx, int_value);
            break;
        case COLUMN_REAL:
            memcpy(&real_value, field, sizeof real_value);
            bind_real(st, idx, real_value);
            break;
        }
    }
}

/* The point and its samples, inside the caller's transaction. */
static int insert_point(dy_db *db, int64_t run_id, int64_t device_id, const struct dy_point *p,
                        const struct dy_sample *samples, int sample_count, int64_t *point_id)
{
    sqlite3_stmt *st = db->insert_sample;
    int status;

    bind_point(db->insert_point, run_id, device_id, p);
    status = insert_once(db, db->insert_point, "cannot record the point");
    if (status != DY_OK)
        return status;
    *point_id = sqlite3_last_insert_rowid(db->conn);

    sqlite3_bind_int64(st, 1, *point_id);
    for (int i = 0; i < sample_count; i++) {
        sqlite3_bind_int(st, 2, samples[i].phase);
        sqlite3_bind_int(st, 3, samples[i].rep);
        sqlite3_bind_int(st, 4, samples[i].step);
        sqlite3_bind_int64(st, 5, samples[i].ns);
        status = insert_once(db, st, "cannot record a sample");
        if (status != DY_OK)
            return status;
    }
    return DY_OK;
}

/* IMMEDIATE takes the write lock now, so a second writer waits in the busy
 * handler here rather than failing halfway through. */
static int begin(dy_db *db, const char *what)
{
    if (sqlite3_exec(db->conn, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK)
        return dy__db_fail(db, what);
    return DY_OK;
}

static int commit_or_rollback(dy_db *db, int status, const char *what)
{
    if (status == DY_OK && sqlite3_exec(db->conn, "COMMIT", NULL, NULL, NULL) != SQLITE_OK)
        status = dy__db_fail(db, what);
    /* Some errors (a full disk) end the transaction by themselves. */
    if (status != DY_OK && !sqlite3_get_autocommit(db->conn))
        sqlite3_exec(db->conn, "ROLLBACK", NULL, NULL, NULL);
    return status;
}

int dy_db_add_point(dy_db *db, int64_t run_id, int64_t device_id,
                    const struct dy_point *p, const struct dy_sample *samples,
                    int sample_count, int64_t *point_id)
{
    int64_t id = 0;
    int status;

    if (sample_count < 0 || (sample_count > 0 && !samples)) {
        snprintf(db->error, sizeof db->error, "%s: %d samples given without an array",
                 db->path, sample_count);
        return DY_E_INVALID;
    }
    status = begin(db, "cannot start the point's transaction");
    if (status != DY_OK)
        return status;
    status = insert_point(db, run_id, device_id, p, samples, sample_count, &id);
    status = commit_or_rollback(db, status, "cannot commit the point");
    if (status == DY_OK)
        *point_id = id;
    return status;
}

int dy_db_add_run_with_points(dy_db *db, const struct dy_run_info *run,
                              const struct dy_point *points, int count, int64_t *run_id)
{
    int64_t id = 0, point_id;
    int status;

    status = begin(db, "cannot start the transaction");
    if (status != DY_OK)
        return status;
    status = dy_db_begin_run(db, run, &id);
    for (int i = 0; i < count && status == DY_OK; i++)
        status = insert_point(db, id, DY_NULL_INT, &points[i], NULL, 0, &point_id);
    status = commit_or_rollback(db, status, "cannot commit");
    if (status == DY_OK)
        *run_id = id;
    return status;
}

int dy_db_point_stored(dy_db *db, const char *config_key, const char *backend,
                       const char *device, int *stored)
{
    sqlite3_stmt *st = db->find_point;
    int status = DY_OK;
    int rc;

    sqlite3_bind_text(st, 1, config_key, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, backend, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, device, -1, SQLITE_STATIC);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW || rc == SQLITE_DONE)
        *stored = rc == SQLITE_ROW;
    else
        status = dy__db_fail(db, "cannot look the point up");
    sqlite3_reset(st);
    return status;
}
