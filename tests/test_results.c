/* The results database: what dy_db writes is read back with plain SQLite,
 * files that are not dyno's are refused and left byte for byte as they were,
 * a failed point leaves nothing behind, and concurrent writers all land. */
#include <dirent.h>
#include <math.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "backends/status.h"
#include "results/results.h"
#include "dy_test.h"

#define DYNO_APPLICATION_ID 0x64796E6F

/* A temporary directory holding one database, removed with all it holds. */
struct scratch {
    char dir[256];
    char db[320];
};

static void scratch_make(struct scratch *s)
{
    const char *tmp = getenv("TMPDIR");

    snprintf(s->dir, sizeof s->dir, "%s/dyno-results-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    DY_REQUIRE(mkdtemp(s->dir) != NULL);
    snprintf(s->db, sizeof s->db, "%s/results.db", s->dir);
}

static int scratch_entries(const struct scratch *s)
{
    struct dirent *e;
    int count = 0;
    DIR *d = opendir(s->dir);

    DY_REQUIRE(d != NULL);
    while ((e = readdir(d)))
        count += strcmp(e->d_name, ".") && strcmp(e->d_name, "..");
    closedir(d);
    return count;
}

static void scratch_remove(const struct scratch *s)
{
    char path[600];
    struct dirent *e;
    DIR *d = opendir(s->dir);

    if (!d)
        return;
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        snprintf(path, sizeof path, "%s/%s", s->dir, e->d_name);
        unlink(path);
    }
    closedir(d);
    rmdir(s->dir);
}

static void write_bytes(const char *path, const void *data, size_t len)
{
    FILE *f = fopen(path, "wb");

    DY_REQUIRE(f != NULL);
    DY_REQUIRE(fwrite(data, 1, len, f) == len);
    DY_REQUIRE(fclose(f) == 0);
}

/* The whole file into a fresh buffer the caller frees; test files are small. */
static char *read_bytes(const char *path, size_t *len)
{
    char *data = malloc(1 << 20);
    FILE *f = fopen(path, "rb");

    DY_REQUIRE(data && f);
    *len = fread(data, 1, 1 << 20, f);
    DY_REQUIRE(feof(f));
    fclose(f);
    return data;
}

static int same_bytes(const char *a, size_t a_len, const char *b, size_t b_len)
{
    return a_len == b_len && memcmp(a, b, a_len) == 0;
}

static sqlite3 *raw_open(const char *path)
{
    sqlite3 *conn = NULL;

    DY_REQUIRE(sqlite3_open_v2(path, &conn, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL) ==
               SQLITE_OK);
    return conn;
}

static void raw_exec(sqlite3 *conn, const char *sql)
{
    char *msg = NULL;

    if (sqlite3_exec(conn, sql, NULL, NULL, &msg) != SQLITE_OK)
        printf("# %s: %s\n", sql, msg);
    DY_REQUIRE(msg == NULL);
}

/* The first row of a query, stepped; the caller finalizes. */
static sqlite3_stmt *raw_row(sqlite3 *conn, const char *sql)
{
    sqlite3_stmt *st = NULL;

    if (sqlite3_prepare_v2(conn, sql, -1, &st, NULL) != SQLITE_OK)
        printf("# %s: %s\n", sql, sqlite3_errmsg(conn));
    DY_REQUIRE(st != NULL);
    DY_REQUIRE(sqlite3_step(st) == SQLITE_ROW);
    return st;
}

static int64_t raw_int(sqlite3 *conn, const char *sql)
{
    sqlite3_stmt *st = raw_row(conn, sql);
    int64_t value = sqlite3_column_int64(st, 0);

    sqlite3_finalize(st);
    return value;
}

static int column_is(sqlite3_stmt *st, int col, const char *text)
{
    const char *got = (const char *)sqlite3_column_text(st, col);

    return got && !strcmp(got, text);
}

static int column_is_null(sqlite3_stmt *st, int col)
{
    return sqlite3_column_type(st, col) == SQLITE_NULL;
}

static void fill_run(struct dy_run_info *run, const char *host)
{
    memset(run, 0, sizeof *run);
    snprintf(run->dyno_version, sizeof run->dyno_version, "0.1.0");
    snprintf(run->git_commit, sizeof run->git_commit, "0123456789ab");
    snprintf(run->host, sizeof run->host, "%s", host);
    snprintf(run->os, sizeof run->os, "Linux 6.1");
    snprintf(run->argv, sizeof run->argv, "dyno run --backend cpu-ref");
    snprintf(run->started_at, sizeof run->started_at, "2024-05-01T12:00:00Z");
}

static void fill_device(struct dy_device_row *dev)
{
    memset(dev, 0, sizeof *dev);
    snprintf(dev->backend, sizeof dev->backend, "cpu-ref");
    snprintf(dev->name, sizeof dev->name, "Test CPU");
    snprintf(dev->vendor, sizeof dev->vendor, "dyno");
    dev->mem_total_bytes = INT64_C(64) << 30;
    dev->compute_units = 16;
    dev->clock_mhz = 3000;
    dev->copy_gbps = 42.5;
    dev->gemm_tflops = NAN;
    snprintf(dev->gemm_dtype, sizeof dev->gemm_dtype, "f32");
}

static void fill_point(struct dy_point *p, int64_t batch)
{
    dy_point_init(p);
    snprintf(p->backend, sizeof p->backend, "cpu-ref");
    snprintf(p->device, sizeof p->device, "Test CPU");
    snprintf(p->workload, sizeof p->workload, "llm");
    snprintf(p->model, sizeof p->model, "tiny-llama");
    p->batch = batch;
    p->input_len = 128;
    p->output_len = 32;
    snprintf(p->weight_dtype, sizeof p->weight_dtype, "f32");
    snprintf(p->kv_dtype, sizeof p->kv_dtype, "f16");
    p->seed = 0;
    snprintf(p->status, sizeof p->status, "ok");
    p->ttft_ms = 12.5;
    p->tpot_ms_p50 = 1.25;
    p->e2e_ms = 52.5;
    p->peak_mem_bytes = INT64_C(1) << 40;
    p->repeat = 3;
    p->warmup = 1;
}

/* A database with one run and one device, for the tests that add points. */
static dy_db *open_with_run(const char *path, int64_t *run_id, int64_t *device_id)
{
    char err[512];
    struct dy_run_info run;
    struct dy_device_row dev;
    dy_db *db = NULL;

    fill_run(&run, "testhost");
    fill_device(&dev);
    if (dy_db_open(path, &db, err, sizeof err) != DY_OK)
        printf("# %s\n", err);
    DY_REQUIRE(db != NULL);
    DY_REQUIRE(dy_db_begin_run(db, &run, run_id) == DY_OK);
    DY_REQUIRE(dy_db_add_device(db, *run_id, &dev, device_id) == DY_OK);
    return db;
}

static void test_point_init(void)
{
    struct dy_point p;

    memset(&p, 0x5a, sizeof p);
    dy_point_init(&p);
    DY_CHECK(!strcmp(p.source, "dyno"));
    DY_CHECK(p.backend[0] == 0 && p.tag[0] == 0 && p.status[0] == 0 && p.reason[0] == 0);
    DY_CHECK(p.batch == DY_NULL_INT && p.layers == DY_NULL_INT && p.seed == DY_NULL_INT);
    DY_CHECK(p.kv_bytes == DY_NULL_INT && p.repeat == DY_NULL_INT && p.warmup == DY_NULL_INT);
    DY_CHECK(isnan(p.ttft_ms) && isnan(p.flop_util) && isnan(p.host_e2e_ms));
}

static void test_fresh_db_round_trip(void)
{
    static const struct dy_sample samples[] = {
        { DY_PHASE_PREFILL, 0, 0, 12000000 },
        { DY_PHASE_DECODE, 0, 0, 1250000 },
        { DY_PHASE_DECODE, 0, 1, 1260000 },
        { DY_PHASE_E2E, 0, 0, INT64_C(52500000000) },
    };
    struct scratch s;
    struct dy_point p;
    int64_t run_id, device_id, point_id, count;
    sqlite3_stmt *st;
    sqlite3 *raw;
    dy_db *db;

    scratch_make(&s);
    db = open_with_run(s.db, &run_id, &device_id);
    fill_point(&p, 4);
    DY_REQUIRE(dy_db_add_point(db, run_id, device_id, &p, samples, 4, &point_id) == DY_OK);
    DY_CHECK(dy_db_count_points(db, &count) == DY_OK && count == 1);

    raw = raw_open(s.db);
    DY_CHECK(raw_int(raw, "PRAGMA application_id") == DYNO_APPLICATION_ID);
    st = raw_row(raw, "PRAGMA journal_mode");
    DY_CHECK(column_is(st, 0, "wal"));
    sqlite3_finalize(st);
    st = raw_row(raw, "SELECT (SELECT value FROM meta WHERE key = 'schema_version'),"
                      " (SELECT value FROM meta WHERE key = 'created_by')");
    DY_CHECK(column_is(st, 0, "1"));
    DY_CHECK(column_is(st, 1, "dyno"));
    sqlite3_finalize(st);

    st = raw_row(raw, "SELECT id, started_at, host, argv, git_commit FROM runs");
    DY_CHECK(sqlite3_column_int64(st, 0) == run_id);
    DY_CHECK(column_is(st, 1, "2024-05-01T12:00:00Z"));
    DY_CHECK(column_is(st, 2, "testhost"));
    DY_CHECK(column_is(st, 3, "dyno run --backend cpu-ref"));
    DY_CHECK(column_is(st, 4, "0123456789ab"));
    sqlite3_finalize(st);

    st = raw_row(raw, "SELECT id, run_id, backend, mem_total_bytes, compute_units, copy_gbps,"
                      " gemm_tflops, driver_version, gemm_dtype FROM devices");
    DY_CHECK(sqlite3_column_int64(st, 0) == device_id);
    DY_CHECK(sqlite3_column_int64(st, 1) == run_id);
    DY_CHECK(column_is(st, 2, "cpu-ref"));
    DY_CHECK(sqlite3_column_int64(st, 3) == INT64_C(64) << 30);
    DY_CHECK(sqlite3_column_int(st, 4) == 16);
    DY_CHECK(sqlite3_column_double(st, 5) == 42.5);
    DY_CHECK(column_is_null(st, 6));   /* NaN */
    DY_CHECK(column_is_null(st, 7));   /* empty string */
    DY_CHECK(column_is(st, 8, "f32"));
    sqlite3_finalize(st);

    st = raw_row(raw, "SELECT id, run_id, device_id, backend, model, batch, input_len, seed,"
                      " kv_dtype, status, source, ttft_ms, peak_mem_bytes, warmup,"
                      " experts, routing, tag, reason, tpot_ms_p99, energy_j, kv_bytes, created_at"
                      " FROM points");
    DY_CHECK(sqlite3_column_int64(st, 0) == point_id);
    DY_CHECK(sqlite3_column_int64(st, 1) == run_id);
    DY_CHECK(sqlite3_column_int64(st, 2) == device_id);
    DY_CHECK(column_is(st, 3, "cpu-ref"));
    DY_CHECK(column_is(st, 4, "tiny-llama"));
    DY_CHECK(sqlite3_column_int64(st, 5) == 4);
    DY_CHECK(sqlite3_column_int64(st, 6) == 128);
    DY_CHECK(!column_is_null(st, 7) && sqlite3_column_int64(st, 7) == 0);   /* 0 is a value */
    DY_CHECK(column_is(st, 8, "f16"));
    DY_CHECK(column_is(st, 9, "ok"));
    DY_CHECK(column_is(st, 10, "dyno"));
    DY_CHECK(sqlite3_column_double(st, 11) == 12.5);
    DY_CHECK(sqlite3_column_int64(st, 12) == INT64_C(1) << 40);
    DY_CHECK(sqlite3_column_int64(st, 13) == 1);
    for (int col = 14; col <= 20; col++)   /* DY_NULL_INT, empty text and NaN */
        DY_CHECK(column_is_null(st, col));
    DY_CHECK(sqlite3_column_bytes(st, 21) == (int)strlen("2024-05-01T12:00:00Z"));
    sqlite3_finalize(st);

    DY_CHECK(raw_int(raw, "SELECT count(*) FROM samples") == 4);
    {
        sqlite3_stmt *rows;
        int i = 0;

        DY_REQUIRE(sqlite3_prepare_v2(raw, "SELECT point_id, phase, rep, step, ns FROM samples"
                                           " ORDER BY rowid", -1, &rows, NULL) == SQLITE_OK);
        while (sqlite3_step(rows) == SQLITE_ROW && i < 4) {
            DY_CHECK(sqlite3_column_int64(rows, 0) == point_id);
            DY_CHECK(sqlite3_column_int(rows, 1) == samples[i].phase);
            DY_CHECK(sqlite3_column_int(rows, 2) == samples[i].rep);
            DY_CHECK(sqlite3_column_int(rows, 3) == samples[i].step);
            DY_CHECK(sqlite3_column_int64(rows, 4) == samples[i].ns);
            i++;
        }
        DY_CHECK(i == 4);
        sqlite3_finalize(rows);
    }
    sqlite3_close(raw);
    dy_db_close(db);
    scratch_remove(&s);
}

/* The column names of points are the contract of DESIGN.md section 7. */
static void test_points_columns_are_the_contract(void)
{
    static const char *const expected[] = {
        "id", "run_id", "device_id", "created_at",
        "backend", "device", "workload", "model", "batch", "input_len", "output_len",
        "experts", "top_k", "moe_ffn_dim", "routing", "weight_dtype", "kv_dtype", "evict",
        "kv_budget", "block_size", "image_size", "patch", "seed", "layers", "tag",
        "status", "reason", "source",
        "ttft_ms", "tpot_ms_p50", "tpot_ms_p90", "tpot_ms_p99", "e2e_ms",
        "output_tok_s", "total_tok_s", "images_s", "peak_mem_bytes", "weight_bytes",
        "kv_bytes", "energy_j", "avg_power_w", "bw_util", "flop_util",
        "host_e2e_ms", "repeat", "warmup", "config_key", "uuid", "e2e_noise",
        "e2e_ms_p90", "e2e_ms_p99", "lora_rank", "lora_merged", "expert_load_max",
        "expert_load_mean", "expert_imbalance", "experts_touched", "step_bytes", "top_k_map",
        "token_agreement", "kl_mean", "lora_targets", "lora_rank_map", "expert_bits",
        "kv_budget_map",
    };
    const int count = (int)(sizeof expected / sizeof expected[0]);
    struct scratch s;
    char err[512];
    sqlite3_stmt *st;
    sqlite3 *raw;
    dy_db *db;
    int i = 0;

    scratch_make(&s);
    DY_REQUIRE(dy_db_open(s.db, &db, err, sizeof err) == DY_OK);
    raw = raw_open(s.db);
    DY_REQUIRE(sqlite3_prepare_v2(raw, "SELECT name FROM pragma_table_info('points') ORDER BY cid",
                                  -1, &st, NULL) == SQLITE_OK);
    while (sqlite3_step(st) == SQLITE_ROW) {
        if (i >= count || !column_is(st, 0, expected[i]))
            printf("# column %d is %s\n", i, sqlite3_column_text(st, 0));
        DY_CHECK(i < count && column_is(st, 0, expected[i]));
        i++;
    }
    DY_CHECK(i == count);
    sqlite3_finalize(st);
    sqlite3_close(raw);
    dy_db_close(db);
    scratch_remove(&s);
}

static void test_reopen_keeps_schema_and_rows(void)
{
    struct scratch s;
    struct dy_point p;
    int64_t run_id, device_id, point_id, count, objects;
    char err[512];
    sqlite3 *raw;
    dy_db *db;

    scratch_make(&s);
    db = open_with_run(s.db, &run_id, &device_id);
    fill_point(&p, 1);
    DY_REQUIRE(dy_db_add_point(db, run_id, device_id, &p, NULL, 0, &point_id) == DY_OK);
    dy_db_close(db);
    raw = raw_open(s.db);
    objects = raw_int(raw, "SELECT count(*) FROM sqlite_master");
    sqlite3_close(raw);

    DY_REQUIRE(dy_db_open(s.db, &db, err, sizeof err) == DY_OK);
    DY_CHECK(dy_db_count_points(db, &count) == DY_OK && count == 1);
    fill_point(&p, 2);
    DY_CHECK(dy_db_add_point(db, run_id, device_id, &p, NULL, 0, &point_id) == DY_OK);
    DY_CHECK(dy_db_count_points(db, &count) == DY_OK && count == 2);
    dy_db_close(db);

    raw = raw_open(s.db);
    DY_CHECK(raw_int(raw, "SELECT count(*) FROM sqlite_master") == objects);
    DY_CHECK(raw_int(raw, "SELECT count(*) FROM meta") == 2);
    DY_CHECK(raw_int(raw, "SELECT count(*) FROM runs") == 1);
    sqlite3_close(raw);
    scratch_remove(&s);
}

static void test_empty_file_gets_the_schema(void)
{
    struct scratch s;
    int64_t count;
    char err[512];
    dy_db *db = NULL;

    scratch_make(&s);
    write_bytes(s.db, "", 0);
    if (dy_db_open(s.db, &db, err, sizeof err) != DY_OK)
        printf("# %s\n", err);
    DY_REQUIRE(db != NULL);
    DY_CHECK(dy_db_count_points(db, &count) == DY_OK && count == 0);
    dy_db_close(db);
    scratch_remove(&s);
}

/* dy_db_open must refuse the file at s->db with a message containing
 * `why`, and leave it and its directory exactly as they were. */
static void check_refused_untouched(const struct scratch *s, const char *why)
{
    size_t before_len, after_len;
    char *before, *after;
    char err[512];
    int entries = scratch_entries(s);
    dy_db *db;

    before = read_bytes(s->db, &before_len);
    DY_CHECK(dy_db_open(s->db, &db, err, sizeof err) == DY_E_DB);
    DY_CHECK(db == NULL);
    printf("# refused: %s\n", err);
    DY_CHECK(strstr(err, s->db) == err);   /* names the file */
    DY_CHECK(strstr(err, why) != NULL);
    after = read_bytes(s->db, &after_len);
    DY_CHECK(same_bytes(before, before_len, after, after_len));
    DY_CHECK(scratch_entries(s) == entries);   /* no -wal, -shm or -journal beside it */
    free(before);
    free(after);
}

static void test_refuses_garbage(void)
{
    static const char text[] = "backend,model,ttft_ms\ncpu-ref,tiny,12.5\n";
    char garbage[4096];
    struct scratch s;

    for (size_t i = 0; i < sizeof garbage; i++)
        garbage[i] = (char)(i * 7919 >> 3);
    scratch_make(&s);
    write_bytes(s.db, text, sizeof text - 1);
    check_refused_untouched(&s, "not an SQLite database (file is not a database)");
    write_bytes(s.db, garbage, sizeof garbage);
    check_refused_untouched(&s, "not an SQLite database (file is not a database)");
    scratch_remove(&s);
}

static void test_refuses_foreign_sqlite_db(void)
{
    struct scratch s;
    sqlite3 *raw;

    scratch_make(&s);
    raw = raw_open(s.db);
    /* In WAL mode, where even a read-only SQLite connection would create -shm. */
    raw_exec(raw, "PRAGMA journal_mode = WAL;"
                  " CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT);"
                  " INSERT INTO notes (body) VALUES ('mine')");
    sqlite3_close(raw);
    check_refused_untouched(&s, "not a dyno database (application_id 0x00000000");

    raw = raw_open(s.db);
    DY_CHECK(raw_int(raw, "SELECT count(*) FROM sqlite_master") == 1);
    sqlite3_close(raw);
    scratch_remove(&s);
}

static void test_refuses_dyno_id_without_meta(void)
{
    char sql[128];
    struct scratch s;
    sqlite3 *raw;

    scratch_make(&s);
    raw = raw_open(s.db);
    snprintf(sql, sizeof sql, "PRAGMA application_id = %d; CREATE TABLE other (x)",
             DYNO_APPLICATION_ID);
    raw_exec(raw, sql);
    sqlite3_close(raw);
    check_refused_untouched(&s, "not a dyno database (no such table: meta)");
    scratch_remove(&s);
}

static void test_refuses_newer_schema(void)
{
    struct scratch s;
    char err[512];
    sqlite3 *raw;
    dy_db *db;

    scratch_make(&s);
    DY_REQUIRE(dy_db_open(s.db, &db, err, sizeof err) == DY_OK);
    dy_db_close(db);
    raw = raw_open(s.db);
    raw_exec(raw, "UPDATE meta SET value = '2' WHERE key = 'schema_version'");
    sqlite3_close(raw);
    check_refused_untouched(&s, "schema version 2 is newer");
    scratch_remove(&s);
}

static void test_failed_point_leaves_nothing(void)
{
    static const struct dy_sample good[] = {
        { DY_PHASE_E2E, 0, 0, 1000 }, { DY_PHASE_E2E, 1, 0, 1001 },
    };
    static const struct dy_sample bad_second[] = {
        { DY_PHASE_E2E, 0, 0, 1000 }, { 7, 1, 0, 1001 },
    };
    struct scratch s;
    struct dy_point p;
    int64_t run_id, device_id, point_id = -1, count;
    sqlite3 *raw;
    dy_db *db;

    scratch_make(&s);
    db = open_with_run(s.db, &run_id, &device_id);

    fill_point(&p, 1);
    snprintf(p.status, sizeof p.status, "great");
    DY_CHECK(dy_db_add_point(db, run_id, device_id, &p, good, 2, &point_id) == DY_E_DB);
    printf("# %s\n", dy_db_error(db));
    DY_CHECK(strstr(dy_db_error(db), "CHECK constraint failed") != NULL);

    /* The point row goes in before the bad sample fails: it must go too. */
    fill_point(&p, 1);
    DY_CHECK(dy_db_add_point(db, run_id, device_id, &p, bad_second, 2, &point_id) == DY_E_DB);
    printf("# %s\n", dy_db_error(db));
    DY_CHECK(point_id == -1);
    DY_CHECK(dy_db_count_points(db, &count) == DY_OK && count == 0);

    raw = raw_open(s.db);
    DY_CHECK(raw_int(raw, "SELECT count(*) FROM points") == 0);
    DY_CHECK(raw_int(raw, "SELECT count(*) FROM samples") == 0);
    sqlite3_close(raw);

    /* and the handle is still good for the next point */
    DY_CHECK(dy_db_add_point(db, run_id, device_id, &p, good, 2, &point_id) == DY_OK);
    DY_CHECK(dy_db_count_points(db, &count) == DY_OK && count == 1);
    dy_db_close(db);
    scratch_remove(&s);
}

static void test_point_without_device(void)
{
    struct scratch s;
    struct dy_point p;
    int64_t run_id, device_id, point_id;
    sqlite3 *raw;
    dy_db *db;

    scratch_make(&s);
    db = open_with_run(s.db, &run_id, &device_id);
    fill_point(&p, 1);
    snprintf(p.source, sizeof p.source, "some-study");
    DY_REQUIRE(dy_db_add_point(db, run_id, DY_NULL_INT, &p, NULL, 0, &point_id) == DY_OK);
    raw = raw_open(s.db);
    DY_CHECK(raw_int(raw, "SELECT count(*) FROM points"
                          " WHERE device_id IS NULL AND source = 'some-study'") == 1);
    sqlite3_close(raw);
    /* a device that does not exist is refused by the foreign key */
    DY_CHECK(dy_db_add_point(db, run_id, device_id + 100, &p, NULL, 0, &point_id) == DY_E_DB);
    dy_db_close(db);
    scratch_remove(&s);
}

static void test_two_handles_interleaved(void)
{
    struct scratch s;
    struct dy_point p;
    int64_t run_a, run_b, dev_a, dev_b, point_id, count;
    sqlite3 *raw;
    dy_db *a, *b;

    scratch_make(&s);
    a = open_with_run(s.db, &run_a, &dev_a);
    b = open_with_run(s.db, &run_b, &dev_b);
    DY_CHECK(run_a != run_b);
    for (int i = 0; i < 10; i++) {
        struct dy_sample sample = { DY_PHASE_E2E, 0, 0, 1000 + i };

        fill_point(&p, i + 1);
        DY_CHECK(dy_db_add_point(a, run_a, dev_a, &p, &sample, 1, &point_id) == DY_OK);
        DY_CHECK(dy_db_add_point(b, run_b, dev_b, &p, &sample, 1, &point_id) == DY_OK);
    }
    DY_CHECK(dy_db_count_points(a, &count) == DY_OK && count == 20);
    DY_CHECK(dy_db_count_points(b, &count) == DY_OK && count == 20);
    dy_db_close(a);
    dy_db_close(b);

    raw = raw_open(s.db);
    DY_CHECK(raw_int(raw, "SELECT count(*) = 2 AND min(n) = 10 AND max(n) = 10"
                          " FROM (SELECT count(*) AS n FROM points GROUP BY run_id)") == 1);
    DY_CHECK(raw_int(raw, "SELECT count(*) FROM samples") == 20);
    sqlite3_close(raw);
    scratch_remove(&s);
}

enum { WRITERS = 4, POINTS_PER_WRITER = 25 };

/* One writer process: creates or opens the file, records its points. */
static int writer_process(const char *path, int start_fd)
{
    struct dy_sample samples[8];
    struct dy_point p;
    int64_t run_id, device_id, point_id;
    struct dy_run_info run;
    struct dy_device_row dev;
    char err[512], go;
    dy_db *db;

    /* Wait for the parent, so the writers race to create the file. */
    if (read(start_fd, &go, 1) < 0)
        return 2;
    fill_run(&run, "writer");
    fill_device(&dev);
    if (dy_db_open(path, &db, err, sizeof err) != DY_OK) {
        printf("# writer %d: %s\n", (int)getpid(), err);
        return 1;
    }
    if (dy_db_begin_run(db, &run, &run_id) != DY_OK ||
        dy_db_add_device(db, run_id, &dev, &device_id) != DY_OK)
        goto fail;
    for (int i = 0; i < POINTS_PER_WRITER; i++) {
        for (int k = 0; k < 8; k++)
            samples[k] = (struct dy_sample){ DY_PHASE_DECODE, 0, k, 1000 + k };
        fill_point(&p, i);
        if (dy_db_add_point(db, run_id, device_id, &p, samples, 8, &point_id) != DY_OK)
            goto fail;
    }
    dy_db_close(db);
    return 0;

fail:
    printf("# writer %d: %s\n", (int)getpid(), dy_db_error(db));
    dy_db_close(db);
    return 1;
}

static void test_processes_create_and_write_together(void)
{
    struct scratch s;
    pid_t pids[WRITERS];
    int start[2];
    sqlite3 *raw;

    scratch_make(&s);
    DY_REQUIRE(pipe(start) == 0);
    fflush(stdout);
    for (int i = 0; i < WRITERS; i++) {
        pids[i] = fork();
        DY_REQUIRE(pids[i] >= 0);
        if (pids[i] == 0) {
            close(start[1]);
            int rc = writer_process(s.db, start[0]);
            fflush(stdout);
            _exit(rc);
        }
    }
    close(start[0]);
    close(start[1]);   /* end of file: every writer starts at once */
    for (int i = 0; i < WRITERS; i++) {
        int wstatus = 0;

        DY_CHECK(waitpid(pids[i], &wstatus, 0) == pids[i]);
        DY_CHECK(WIFEXITED(wstatus) && WEXITSTATUS(wstatus) == 0);
    }

    raw = raw_open(s.db);
    DY_CHECK(raw_int(raw, "PRAGMA application_id") == DYNO_APPLICATION_ID);
    DY_CHECK(raw_int(raw, "SELECT count(*) FROM meta") == 2);
    DY_CHECK(raw_int(raw, "SELECT count(*) FROM runs") == WRITERS);
    DY_CHECK(raw_int(raw, "SELECT count(*) FROM points") == WRITERS * POINTS_PER_WRITER);
    DY_CHECK(raw_int(raw, "SELECT count(*) FROM samples") == WRITERS * POINTS_PER_WRITER * 8);
    sqlite3_close(raw);
    scratch_remove(&s);
}

DY_TESTS(
    DY_TEST(test_point_init)
    DY_TEST(test_fresh_db_round_trip)
    DY_TEST(test_points_columns_are_the_contract)
    DY_TEST(test_reopen_keeps_schema_and_rows)
    DY_TEST(test_empty_file_gets_the_schema)
    DY_TEST(test_refuses_garbage)
    DY_TEST(test_refuses_foreign_sqlite_db)
    DY_TEST(test_refuses_dyno_id_without_meta)
    DY_TEST(test_refuses_newer_schema)
    DY_TEST(test_failed_point_leaves_nothing)
    DY_TEST(test_point_without_device)
    DY_TEST(test_two_handles_interleaved)
    DY_TEST(test_processes_create_and_write_together)
)
