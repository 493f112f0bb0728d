/* dyno: one transformer-inference workload on every vendor's hardware. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dy_build_config.h"
#include "harness.h"
#include "../dashboard/dashboard.h"

static void usage(FILE *out)
{
    fprintf(out,
            "dyno %s (%s): a dynamometer for accelerators\n\n"
            "usage:\n"
            "  dyno devices                     backends, devices, and why any is unavailable\n"
            "  dyno models                      model presets\n"
            "  dyno run [axes] [--db FILE]      one point or the cartesian product of the axes\n"
            "  dyno sweep FILE [--db FILE]      a sweep file (INI; each section a block of axes)\n"
            "      both take --resume, --dry-run, --point-timeout S, --shard I/N,\n"
            "      --min-time S, --max-noise PCT, --max-time S (see `dyno run --help`)\n"
            "  dyno merge A.db B.db ... -o OUT.db   combine databases (shards), idempotent\n"
            "  dyno export [--db FILE] --csv OUT | --jsonl OUT   the points, columns as stored\n"
            "  dyno import FILE.csv [--db FILE]  LLM-Inference-Bench results as points\n"
            "  dyno generate --model NAME|--model-dir DIR --prompt 1,2,3 --max-new-tokens N\n"
            "                                   greedy token ids (correctness)\n"
            "  dyno encode --model NAME|--model-dir DIR --pixels FILE [-o OUT]\n"
            "                                   ViT last hidden state (correctness)\n"
            "  dyno report [--db FILE] [-o FILE.html]   one self-contained HTML dashboard\n"
            "  dyno compare --db FILE --baseline DEVICE [--vs DEVICE...]\n"
            "                                   matching points side by side, as markdown\n"
            "  dyno version\n\n"
            "`dyno run --help` lists the axes.\n",
            DY_VERSION, DY_GIT_COMMIT);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "--help") || !strcmp(cmd, "-h") || !strcmp(cmd, "help")) {
        usage(stdout);
        return 0;
    }
    if (!strcmp(cmd, "version") || !strcmp(cmd, "--version")) {
        printf("dyno %s (%s)\n", DY_VERSION, DY_GIT_COMMIT);
        return 0;
    }
    if (!strcmp(cmd, "devices"))
        return dy_cmd_devices(argc - 2, argv + 2);
    if (!strcmp(cmd, "models"))
        return dy_cmd_models(argc - 2, argv + 2);
    if (!strcmp(cmd, "encode"))
        return dy_cmd_encode(argc - 2, argv + 2);
    if (!strcmp(cmd, "generate"))
        return dy_cmd_generate(argc - 2, argv + 2);
    if (!strcmp(cmd, "report"))
        return dy_cmd_report(argc - 2, argv + 2);
    if (!strcmp(cmd, "compare"))
        return dy_cmd_compare(argc - 2, argv + 2);
    if (!strcmp(cmd, "merge"))
        return dy_cmd_merge(argc - 2, argv + 2);
    if (!strcmp(cmd, "export"))
        return dy_cmd_export(argc - 2, argv + 2);
    if (!strcmp(cmd, "run") || !strcmp(cmd, "sweep") || !strcmp(cmd, "import")) {
        /* the command line as typed, stored with the run */
        size_t len = 0;
        for (int i = 0; i < argc; i++)
            len += strlen(argv[i]) + 1;
        char *cmdline = calloc(len + 1, 1);
        if (!cmdline)
            return 1;
        for (int i = 0; i < argc; i++) {
            strcat(cmdline, argv[i]);
            if (i + 1 < argc)
                strcat(cmdline, " ");
        }
        int rc = (!strcmp(cmd, "run") ? dy_cmd_run : !strcmp(cmd, "sweep") ? dy_cmd_sweep
                                                                             : dy_cmd_import)(
            argc - 2, argv + 2, cmdline);
        free(cmdline);
        return rc;
    }
    fprintf(stderr, "dyno: unknown command \"%s\"\n\n", cmd);
    usage(stderr);
    return 2;
}
