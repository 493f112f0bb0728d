/* Commands that move results between files: `dyno merge`, `dyno export`,
 * `dyno import`. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "runner.h"

#define EXPORT_USAGE "usage: dyno export [--db FILE] --csv OUT | --jsonl OUT   (OUT - is stdout)\n"
#define IMPORT_USAGE                                                                       \
    "usage: dyno import FILE.csv [--db FILE]\n"                                             \
    "FILE.csv as LLM-Inference-Bench publishes: Hardware,Num of Hardware,Framework,Model,\n" \
    "Input Output Length,Batch Size,Latency,Throughput (KV Cache Dtype, avg_power too)\n"

int dy_cmd_export(int argc, char **argv)
{
    const char *db_path = "dyno.db", *out_path = NULL;
    enum dy_export_format format = DY_EXPORT_CSV;
    char err[1024];
    int64_t rows = 0;
    dy_db *db = NULL;
    FILE *out = NULL;
    int rc = 1;

    for (int i = 0; i < argc; i++) {
        bool csv = !strcmp(argv[i], "--csv"), jsonl = !strcmp(argv[i], "--jsonl");
        if ((csv || jsonl || !strcmp(argv[i], "--db")) && i + 1 == argc) {
            fprintf(stderr, "dyno export: %s needs a file name\n", argv[i]);
            return 2;
        }
        if (csv || jsonl) {
            if (out_path) {
                fprintf(stderr, "dyno export: give one of --csv and --jsonl, once\n");
                return 2;
            }
            format = csv ? DY_EXPORT_CSV : DY_EXPORT_JSONL;
            out_path = argv[++i];
        } else if (!strcmp(argv[i], "--db")) {
            db_path = argv[++i];
        } else if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            printf(EXPORT_USAGE);
            return 0;
        } else {
            fprintf(stderr, "dyno export: unknown argument \"%s\"\n" EXPORT_USAGE, argv[i]);
            return 2;
        }
    }
    if (!out_path) {
        fprintf(stderr, EXPORT_USAGE);
        return 2;
    }
    if (dy_db_check_input(db_path, err, sizeof err) != DY_OK ||
        dy_db_open(db_path, &db, err, sizeof err) != DY_OK) {
        fprintf(stderr, "dyno export: %s\n", err);
        return 1;
    }
    out = strcmp(out_path, "-") ? fopen(out_path, "w") : stdout;
    if (!out) {
        fprintf(stderr, "dyno export: %s: cannot write (%s)\n", out_path, strerror(errno));
        goto cleanup;
    }
    int st = dy_db_export(db, out, format, &rows);
    if ((out != stdout ? fclose(out) : fflush(out)) != 0 && st == DY_OK) {
        fprintf(stderr, "dyno export: %s: cannot write (%s)\n", out_path, strerror(errno));
        goto cleanup;
    }
    if (st != DY_OK) {
        fprintf(stderr, "dyno export: %s\n", dy_db_error(db));
        goto cleanup;
    }
    fprintf(stderr, "dyno export: %lld point(s) written to %s\n", (long long)rows, out_path);
    rc = 0;
cleanup:
    dy_db_close(db);
    return rc;
}

int dy_cmd_import(int argc, char **argv, const char *cmdline)
{
    const char *db_path = "dyno.db", *csv_path = NULL;
    struct dy_point *points = NULL;
    struct dy_run_info run;
    char err[1024];
    int count = 0, rc = 1;
    int64_t run_id;
    dy_db *db = NULL;

    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--db") && i + 1 < argc) {
            db_path = argv[++i];
        } else if (argv[i][0] != '-' && !csv_path) {
            csv_path = argv[i];
        } else if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            printf(IMPORT_USAGE);
            return 0;
        } else {
            fprintf(stderr, "dyno import: unexpected argument \"%s\"\n" IMPORT_USAGE, argv[i]);
            return 2;
        }
    }
    if (!csv_path) {
        fprintf(stderr, IMPORT_USAGE);
        return 2;
    }
    /* every row is read and checked before the database is opened */
    if (dy_import_llm_inference_bench(csv_path, &points, &count, err, sizeof err) != DY_OK) {
        fprintf(stderr, "dyno import: %s; nothing imported\n", err);
        return 1;
    }
    if (dy_db_open(db_path, &db, err, sizeof err) != DY_OK) {
        fprintf(stderr, "dyno import: %s\n", err);
        goto cleanup;
    }
    dy_fill_run_info(&run, cmdline);
    if (dy_db_add_run_with_points(db, &run, points, count, &run_id) != DY_OK) {
        fprintf(stderr, "dyno import: %s; nothing imported\n", dy_db_error(db));
        goto cleanup;
    }
    printf("%d point(s) imported from %s into %s\n", count, csv_path, db_path);
    rc = 0;
cleanup:
    dy_db_close(db);
    free(points);
    return rc;
}

int dy_cmd_merge(int argc, char **argv)
{
    const char *out_path = NULL;
    char err[1024];
    int inputs = 0, rc = 1;
    dy_db *out = NULL;

    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "-o") || !strcmp(argv[i], "--output")) {
            if (i + 1 == argc) {
                fprintf(stderr, "dyno merge: %s needs a file name\n", argv[i]);
                return 2;
            }
            out_path = argv[++i];
        } else if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            printf("usage: dyno merge A.db B.db ... -o OUT.db\n");
            return 0;
        } else if (!strncmp(argv[i], "-", 1)) {
            fprintf(stderr, "dyno merge: unknown option \"%s\"\n", argv[i]);
            return 2;
        } else {
            inputs++;
        }
    }
    if (!out_path || inputs == 0) {
        fprintf(stderr, "usage: dyno merge A.db B.db ... -o OUT.db\n");
        return 2;
    }
    /* every input is judged before anything is written */
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "-o") || !strcmp(argv[i], "--output")) {
            i++;
            continue;
        }
        if (dy_db_check_input(argv[i], err, sizeof err) != DY_OK) {
            fprintf(stderr, "dyno merge: %s\n", err);
            return 1;
        }
    }
    if (dy_db_open(out_path, &out, err, sizeof err) != DY_OK) {
        fprintf(stderr, "dyno merge: %s\n", err);
        return 1;
    }
    for (int i = 0; i < argc; i++) {
        struct dy_merge_counts added;
        if (!strcmp(argv[i], "-o") || !strcmp(argv[i], "--output")) {
            i++;
            continue;
        }
        if (dy_db_merge(out, argv[i], &added) != DY_OK) {
            fprintf(stderr, "dyno merge: %s\n", dy_db_error(out));
            goto cleanup;
        }
        printf("%s: %lld run(s), %lld point(s), %lld sample(s) added\n", argv[i],
               (long long)added.runs, (long long)added.points, (long long)added.samples);
    }
    rc = 0;
cleanup:
    dy_db_close(out);
    return rc;
}
