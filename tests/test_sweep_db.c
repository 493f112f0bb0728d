/* The results database as sweeps use it: --resume's lookup, files written
 * before the config_key and uuid columns, all-or-nothing imports. */
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backends/status.h"
#include "results/results.h"
#include "dy_test.h"

static char db_path[300];

static void fresh_path(void)
{
    const char *tmp = getenv("TMPDIR");
    snprintf(db_path, sizeof db_path, "%s/dyno-sweep-db-%d.db", tmp && *tmp ? tmp : "/tmp",
             (int)getpid());
    unlink(db_path);
}

static void remove_db(void)
{
    char side[320];
    unlink(db_path);
    snprintf(side, sizeof side, "%s-wal", db_path);
    unlink(side);
    snprintf(side, sizeof side, "%s-shm", db_path);
    unlink(side);
}

static int64_t raw_int(const char *sql)
{
    sqlite3 *conn;
    sqlite3_stmt *st;
    int64_t v = -1;
    DY_REQUIRE(sqlite3_open(db_path, &conn) == SQLITE_OK);
    if (sqlite3_prepare_v2(conn, sql, -1, &st, NULL) == SQLITE_OK) {
        if (sqlite3_step(st) == SQLITE_ROW)
            v = sqlite3_column_int64(st, 0);
        sqlite3_finalize(st);
    } else {
        printf("# %s: %s\n", sql, sqlite3_errmsg(conn));
    }
    sqlite3_close(conn);
    return v;
}

static void raw_exec(const char *sql)
{
    sqlite3 *conn;
    char *msg = NULL;
    DY_REQUIRE(sqlite3_open(db_path, &conn) == SQLITE_OK);
    if (sqlite3_exec(conn, sql, NULL, NULL, &msg) != SQLITE_OK)
        printf("# %s: %s\n", sql, msg);
    sqlite3_free(msg);
    sqlite3_close(conn);
}

static dy_db *open_db(int64_t *run_id)
{
    struct dy_run_info run;
    char err[512];
    dy_db *db;
    memset(&run, 0, sizeof run);
    snprintf(run.host, sizeof run.host, "test");
    if (dy_db_open(db_path, &db, err, sizeof err) != DY_OK)
        printf("# %s\n", err);
    DY_REQUIRE(db != NULL);
    DY_REQUIRE(dy_db_begin_run(db, &run, run_id) == DY_OK);
    return db;
}

static void make_point(struct dy_point *p, const char *key, const char *status)
{
    dy_point_init(p);
    snprintf(p->backend, sizeof p->backend, "cpu");
    snprintf(p->device, sizeof p->device, "some cpu");
    snprintf(p->config_key, sizeof p->config_key, "%s", key);
    snprintf(p->status, sizeof p->status, "%s", status);
}

static void test_resume_lookup(void)
{
    struct dy_point p;
    int64_t run_id, id;
    int stored = -1;
    fresh_path();
    dy_db *db = open_db(&run_id);
    const char *final_statuses[] = { "ok", "oom", "skipped" };
    for (int i = 0; i < 3; i++) {
        char key[32];
        snprintf(key, sizeof key, "k%d", i);
        make_point(&p, key, final_statuses[i]);
        DY_REQUIRE(dy_db_add_point(db, run_id, DY_NULL_INT, &p, NULL, 0, &id) == DY_OK);
        DY_CHECK(dy_db_point_stored(db, key, "cpu", "some cpu", &stored) == DY_OK && stored);
        DY_CHECK(dy_db_point_stored(db, key, "cpu", "other cpu", &stored) == DY_OK && !stored);
        DY_CHECK(dy_db_point_stored(db, key, "cpu-ref", "some cpu", &stored) == DY_OK && !stored);
    }
    /* failed points are measured again; imported ones are not ours */
    make_point(&p, "k-failed", "failed");
    DY_REQUIRE(dy_db_add_point(db, run_id, DY_NULL_INT, &p, NULL, 0, &id) == DY_OK);
    DY_CHECK(dy_db_point_stored(db, "k-failed", "cpu", "some cpu", &stored) == DY_OK && !stored);
    make_point(&p, "k-study", "ok");
    snprintf(p.source, sizeof p.source, "some-study");
    DY_REQUIRE(dy_db_add_point(db, run_id, DY_NULL_INT, &p, NULL, 0, &id) == DY_OK);
    DY_CHECK(dy_db_point_stored(db, "k-study", "cpu", "some cpu", &stored) == DY_OK && !stored);
    dy_db_close(db);
    DY_CHECK(raw_int("SELECT count(DISTINCT uuid) FROM points") == 5);
    DY_CHECK(raw_int("SELECT count(*) FROM runs WHERE length(uuid) = 32") == 1);
    remove_db();
}

/* A file from before config_key and uuid existed gains them when opened,
 * with a uuid for every row it holds. */
static void test_older_file_upgraded(void)
{
    struct dy_point p;
    int64_t run_id, id;
    fresh_path();
    dy_db *db = open_db(&run_id);
    make_point(&p, "k", "ok");
    DY_REQUIRE(dy_db_add_point(db, run_id, DY_NULL_INT, &p, NULL, 0, &id) == DY_OK);
    dy_db_close(db);
    /* the tables as the first schema had them, without the new columns (in
     * an order SQLite's DROP COLUMN copes with beside the comments) */
    raw_exec("DROP INDEX points_uuid; DROP INDEX points_config_key; DROP INDEX runs_uuid;"
             "ALTER TABLE points DROP COLUMN config_key; ALTER TABLE points DROP COLUMN uuid;"
             "ALTER TABLE points DROP COLUMN e2e_noise; ALTER TABLE runs DROP COLUMN uuid;");
    DY_REQUIRE(raw_int("SELECT count(*) FROM pragma_table_info('points') WHERE name = 'uuid'") == 0);
    db = open_db(&run_id);
    make_point(&p, "k2", "ok");
    DY_CHECK(dy_db_add_point(db, run_id, DY_NULL_INT, &p, NULL, 0, &id) == DY_OK);
    dy_db_close(db);
    DY_CHECK(raw_int("SELECT count(*) FROM points WHERE length(uuid) = 32") == 2);
    DY_CHECK(raw_int("SELECT count(*) FROM runs WHERE length(uuid) = 32") == 2);
    DY_CHECK(raw_int("SELECT count(*) FROM sqlite_master WHERE name = 'points_uuid'") == 1);
    DY_CHECK(raw_int("SELECT count(*) FROM pragma_table_info('points')"
                     " WHERE name IN ('config_key', 'uuid', 'e2e_noise')") == 3);
    DY_CHECK(raw_int("SELECT value FROM meta WHERE key = 'schema_version'") == 1);
    /* a row an older dyno wrote since gets its uuid at the next open */
    raw_exec("INSERT INTO points (run_id, status) VALUES (1, 'ok')");
    DY_CHECK(raw_int("SELECT count(*) FROM points WHERE uuid IS NULL") == 1);
    db = open_db(&run_id);
    dy_db_close(db);
    DY_CHECK(raw_int("SELECT count(*) FROM points WHERE uuid IS NULL") == 0);
    remove_db();
}

static void test_run_with_points_all_or_nothing(void)
{
    struct dy_point points[3];
    struct dy_run_info run;
    int64_t run_id, id;
    fresh_path();
    dy_db *db = open_db(&run_id);
    memset(&run, 0, sizeof run);
    for (int i = 0; i < 3; i++)
        make_point(&points[i], "k", "ok");
    DY_CHECK(dy_db_add_run_with_points(db, &run, points, 3, &id) == DY_OK && id != run_id);
    DY_CHECK(raw_int("SELECT count(*) FROM points WHERE run_id = 2 AND device_id IS NULL") == 3);
    /* the CHECK on status fails the third row: neither run nor rows stay */
    snprintf(points[2].status, sizeof points[2].status, "bogus");
    DY_CHECK(dy_db_add_run_with_points(db, &run, points, 3, &id) == DY_E_DB);
    dy_db_close(db);
    DY_CHECK(raw_int("SELECT count(*) FROM runs") == 2);
    DY_CHECK(raw_int("SELECT count(*) FROM points") == 3);
    remove_db();
}

DY_TESTS(
    DY_TEST(test_resume_lookup)
    DY_TEST(test_older_file_upgraded)
    DY_TEST(test_run_with_points_all_or_nothing)
)
