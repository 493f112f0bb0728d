/* The backend registry: built-in CPU backends, and GPU backends loaded as
 * plugins (libdyno-NAME.so) so one build runs on machines without a vendor's
 * driver and says why a backend is missing instead of failing to start. */
#include <dirent.h>
#include <dlfcn.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backend.h"
#include "cpu/cpu.h"
#include "cpu_ref/cpu_ref.h"

#define MAX_BACKENDS 32

/* GPU backends that dyno knows of; listed even when their plugin is absent. */
static const char *const known_plugins[] = { "cuda", "hip", "opencl", "level_zero" };

static struct dy_backend_entry entries[MAX_BACKENDS];
static int entry_count;
static pthread_once_t once = PTHREAD_ONCE_INIT;

static struct dy_backend_entry *add_entry(const char *name)
{
    for (int i = 0; i < entry_count; i++)
        if (strcmp(entries[i].name, name) == 0)
            return &entries[i];
    if (entry_count == MAX_BACKENDS)
        return NULL;
    struct dy_backend_entry *e = &entries[entry_count++];
    e->name = strdup(name);
    e->be = NULL;
    e->why[0] = '\0';
    return e;
}

static void add_builtin(const struct dy_backend *be)
{
    struct dy_backend_entry *e = add_entry(be->name);
    if (!e)
        return;
    e->be = be;
    if (be->probe && be->probe(e->why, sizeof e->why) != DY_OK)
        e->be = NULL;
}

/* Loads one plugin file; a failure is recorded as the backend's reason. */
static void load_plugin(const char *path, const char *name)
{
    struct dy_backend_entry *e = add_entry(name);
    if (!e || e->be)
        return;
    void *so = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!so) {
        snprintf(e->why, sizeof e->why, "cannot load %s: %s", path, dlerror());
        return;
    }
    dy_backend_entry_fn entry = (dy_backend_entry_fn)dlsym(so, DY_BACKEND_ENTRY_SYMBOL);
    const struct dy_backend *be = entry ? entry() : NULL;
    if (!be) {
        snprintf(e->why, sizeof e->why, "%s exports no %s", path, DY_BACKEND_ENTRY_SYMBOL);
        dlclose(so);
        return;
    }
    if (be->abi_version != DY_BACKEND_ABI) {
        snprintf(e->why, sizeof e->why, "%s has backend ABI %d, dyno expects %d", path,
                 be->abi_version, DY_BACKEND_ABI);
        dlclose(so);
        return;
    }
    /* the plugin stays loaded: its table is referenced until exit */
    if (be->probe && be->probe(e->why, sizeof e->why) != DY_OK)
        return;
    e->why[0] = '\0';
    e->be = be;
}

static void scan_dir(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct dirent *de;
    while ((de = readdir(d))) {
        const char *n = de->d_name;
        size_t len = strlen(n);
        if (strncmp(n, "libdyno-", 8) != 0 || len < 12 || strcmp(n + len - 3, ".so") != 0)
            continue;
        char name[64];
        snprintf(name, sizeof name, "%.*s", (int)(len - 11), n + 8);
        char path[PATH_MAX];
        snprintf(path, sizeof path, "%s/%s", dir, n);
        load_plugin(path, name);
    }
    closedir(d);
}

static void init_registry(void)
{
    add_builtin(&dy_backend_cpu_ref);
    add_builtin(&dy_backend_cpu);

    const char *env = getenv("DYNO_PLUGIN_PATH");
    if (env && *env) {
        char *copy = strdup(env), *save = NULL;
        for (char *dir = strtok_r(copy, ":", &save); dir; dir = strtok_r(NULL, ":", &save))
            scan_dir(dir);
        free(copy);
    }
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n > 0) {
        exe[n] = '\0';
        char *slash = strrchr(exe, '/');
        if (slash) {
            *slash = '\0';
            char dir[PATH_MAX + 64];
            scan_dir(exe);
            /* a build tree keeps each plugin in backends/NAME/ */
            for (size_t i = 0; i < sizeof known_plugins / sizeof known_plugins[0]; i++) {
                snprintf(dir, sizeof dir, "%s/backends/%s", exe, known_plugins[i]);
                scan_dir(dir);
            }
            snprintf(dir, sizeof dir, "%s/../lib/dyno", exe);
            scan_dir(dir);
        }
    }
    for (size_t i = 0; i < sizeof known_plugins / sizeof known_plugins[0]; i++) {
        struct dy_backend_entry *e = add_entry(known_plugins[i]);
        if (e && !e->be && !e->why[0])
            snprintf(e->why, sizeof e->why,
                     "not built: plugin libdyno-%s.so not found", known_plugins[i]);
    }
}

int dy_registry_list(const struct dy_backend_entry **out, int *count)
{
    pthread_once(&once, init_registry);
    *out = entries;
    *count = entry_count;
    return DY_OK;
}

const struct dy_backend *dy_registry_find(const char *name, char *why, size_t why_len)
{
    const struct dy_backend_entry *list;
    int count;
    dy_registry_list(&list, &count);
    for (int i = 0; i < count; i++) {
        if (strcmp(list[i].name, name) != 0)
            continue;
        if (!list[i].be && why)
            snprintf(why, why_len, "backend %s is unavailable: %s", name, list[i].why);
        return list[i].be;
    }
    if (why) {
        size_t used = (size_t)snprintf(why, why_len, "unknown backend \"%s\" (known:", name);
        for (int i = 0; i < count && used < why_len; i++)
            used += (size_t)snprintf(why + used, why_len - used, " %s", list[i].name);
        if (used < why_len)
            snprintf(why + used, why_len - used, ")");
    }
    return NULL;
}
