/* `dyno devices` and `dyno models`. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../workloads/model.h"
#include "harness.h"

int dy_cmd_devices(int argc, char **argv)
{
    if (argc > 0) {
        fprintf(stderr, "dyno devices: unexpected argument \"%s\"\n", argv[0]);
        return 2;
    }
    const struct dy_backend_entry *list;
    int count;
    dy_registry_list(&list, &count);
    for (int i = 0; i < count; i++) {
        const struct dy_backend *be = list[i].be;
        if (!be) {
            printf("%-11s unavailable: %s\n", list[i].name, list[i].why);
            continue;
        }
        int n = 0;
        be->device_count(&n);
        printf("%-11s %s\n", be->name, be->description);
        for (int d = 0; d < n; d++) {
            struct dy_device_info info;
            if (be->device_info(d, &info) != DY_OK)
                continue;
            printf("  [%d] %s (%s), %d compute units, %.1f GiB, driver %s, runtime %s\n", d,
                   info.name, info.vendor, info.compute_units,
                   info.mem_total_bytes / 1073741824.0, info.driver_version, info.runtime_version);
        }
    }
    printf("default backend (auto): %s\n", dy_best_backend());
    return 0;
}

int dy_cmd_models(int argc, char **argv)
{
    if (argc > 0) {
        fprintf(stderr, "dyno models: unexpected argument \"%s\"\n", argv[0]);
        return 2;
    }
    char **names;
    int count;
    if (dy_preset_list(&names, &count) != DY_OK) {
        fprintf(stderr, "dyno models: no preset directory found (set DYNO_MODELS)\n");
        return 1;
    }
    printf("| model | architecture | params | layers | hidden | heads | kv heads | vocab |\n");
    printf("|---|---|--:|--:|--:|--:|--:|--:|\n");
    int rc = 0;
    for (int i = 0; i < count; i++) {
        char path[1024], err[1024];
        struct dy_model_config cfg;
        if (dy_preset_path(names[i], path, sizeof path) != DY_OK ||
            dy_config_load(path, &cfg, err, sizeof err) != DY_OK) {
            fprintf(stderr, "dyno models: %s\n", err);
            rc = 1;
        } else {
            printf("| %s | %s | %.2fB | %d | %d | %d | %d | %d |\n", names[i], cfg.arch_name,
                   dy_model_param_count(&cfg) / 1e9, cfg.layers, cfg.hidden, cfg.heads,
                   cfg.kv_heads, cfg.vocab);
        }
        free(names[i]);
    }
    free(names);
    return rc;
}
