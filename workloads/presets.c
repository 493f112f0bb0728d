/* Preset lookup: models/NAME.json in the first preset directory that exists.
 *
 * Search order: $DYNO_MODELS (tests and users who keep their own presets),
 * then paths relative to the executable so that an installed binary
 * (prefix/bin/dyno -> prefix/share/dyno/models) and a build directory
 * inside the source tree (build/dyno, build/tests/test_x -> models/) both
 * work without configuration, and last the source tree the binary was
 * built from. */
#include <dirent.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dy_build_config.h"
#include "model.h"

#ifndef DY_SOURCE_ROOT
#define DY_SOURCE_ROOT "."
#endif

static bool is_dir(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

static int preset_dir(char *dir, size_t dir_len)
{
    static const char *const exe_relative[] = {
        "../share/dyno/models",
        "../models",
        "../../models",
    };
    const char *env = getenv("DYNO_MODELS");
    if (env && *env && is_dir(env) && (size_t)snprintf(dir, dir_len, "%s", env) < dir_len)
        return DY_OK;

    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n > 0) {
        exe[n] = '\0';
        char *slash = strrchr(exe, '/');
        if (slash) {
            *slash = '\0';
            for (size_t i = 0; i < sizeof exe_relative / sizeof exe_relative[0]; i++) {
                if ((size_t)snprintf(dir, dir_len, "%s/%s", exe, exe_relative[i]) < dir_len &&
                    is_dir(dir))
                    return DY_OK;
            }
        }
    }

    if ((size_t)snprintf(dir, dir_len, "%s/models", DY_SOURCE_ROOT) < dir_len && is_dir(dir))
        return DY_OK;
    return DY_E_INVALID;
}

/* A preset name is a file name: refusing separators keeps `--model` from
 * reaching outside the preset directory. */
static bool valid_name(const char *name)
{
    return name && *name && name[0] != '.' && !strchr(name, '/');
}

int dy_preset_path(const char *name, char *path, size_t path_len)
{
    char dir[PATH_MAX];
    struct stat st;

    if (!valid_name(name) || preset_dir(dir, sizeof dir) != DY_OK)
        return DY_E_INVALID;
    if ((size_t)snprintf(path, path_len, "%s/%s.json", dir, name) >= path_len)
        return DY_E_INVALID;
    if (stat(path, &st) != 0 || !S_ISREG(st.st_mode))
        return DY_E_INVALID;
    return DY_OK;
}

static int compare_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

int dy_preset_list(char ***names, int *count)
{
    char dir[PATH_MAX];
    char **list = NULL;
    int n = 0, cap = 0;
    int rc = DY_E_INVALID;

    *names = NULL;
    *count = 0;
    if (preset_dir(dir, sizeof dir) != DY_OK)
        return DY_E_INVALID;
    DIR *d = opendir(dir);
    if (!d)
        return DY_E_INVALID;

    struct dirent *e;
    while ((e = readdir(d))) {
        size_t len = strlen(e->d_name);
        if (e->d_name[0] == '.' || len <= 5 || strcmp(e->d_name + len - 5, ".json") != 0)
            continue;
        if (n == cap) {
            int new_cap = cap ? 2 * cap : 16;
            char **grown = realloc(list, (size_t)new_cap * sizeof *grown);
            if (!grown) {
                rc = DY_E_NOMEM;
                goto out_list;
            }
            list = grown;
            cap = new_cap;
        }
        list[n] = strndup(e->d_name, len - 5);
        if (!list[n]) {
            rc = DY_E_NOMEM;
            goto out_list;
        }
        n++;
    }
    closedir(d);
    if (n > 1)
        qsort(list, (size_t)n, sizeof *list, compare_names);
    *names = list;
    *count = n;
    return DY_OK;

out_list:
    for (int i = 0; i < n; i++)
        free(list[i]);
    free(list);
    closedir(d);
    return rc;
}
