/* safetensors checkpoints: memory-mapped, headers validated against the file
 * sizes before any tensor is handed out.
 *
 * Format: 8-byte little-endian header length N, N bytes of JSON mapping each
 * tensor name to {"dtype", "shape", "data_offsets": [begin, end]} (offsets
 * relative to the data section after the header), then the data section.
 * The validation follows the reference implementation: offsets must tile the
 * data section exactly, so a truncated or padded-out file is caught here and
 * not as garbage weights later. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "model.h"

#define INDEX_NAME "model.safetensors.index.json"
#define SINGLE_NAME "model.safetensors"

struct shard {
    char *path;
    const unsigned char *map;
    size_t size;
};

/* The view comes first so that a pointer to an entry is one to its view. */
struct entry {
    struct dy_tensor_view view;
    void *aligned_copy; /* owned; the view's data when the file's was misaligned */
};

struct dy_checkpoint {
    struct shard *shards;
    int shard_count;
    struct entry *tensors; /* sorted by name once open */
    int tensor_count;
    int tensor_cap;
};

struct errbuf {
    char *text;
    size_t len;
};

static int fail(const struct errbuf *e, int rc, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int fail(const struct errbuf *e, int rc, const char *fmt, ...)
{
    if (e->text && e->len) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(e->text, e->len, fmt, ap);
        va_end(ap);
    }
    return rc;
}

static const struct {
    const char *name;
    enum dy_dtype dtype;
} dtypes[] = { { "F32", DY_F32 }, { "F16", DY_F16 }, { "BF16", DY_BF16 } };

static size_t dtype_bytes(enum dy_dtype t)
{
    return t == DY_F32 ? 4 : 2;
}

static int map_shard(struct shard *s, const struct errbuf *e)
{
    struct stat st;
    int fd = open(s->path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return fail(e, DY_E_IO, "%s: cannot open: %s", s->path, strerror(errno));
    if (fstat(fd, &st) != 0) {
        int rc = fail(e, DY_E_IO, "%s: cannot stat: %s", s->path, strerror(errno));
        close(fd);
        return rc;
    }
    /* checked before mmap, which refuses empty files */
    if (st.st_size < 8) {
        close(fd);
        return fail(e, DY_E_FORMAT, "%s: file is %lld bytes, shorter than the 8-byte header length",
                    s->path, (long long)st.st_size);
    }
    void *map = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (map == MAP_FAILED)
        return fail(e, DY_E_IO, "%s: cannot map: %s", s->path, strerror(errno));
    s->map = map;
    s->size = (size_t)st.st_size;
    return DY_OK;
}

static int add_tensor(struct dy_checkpoint *ck, const char *name, struct dy_tensor_view **out)
{
    if (ck->tensor_count == ck->tensor_cap) {
        int cap = ck->tensor_cap ? 2 * ck->tensor_cap : 64;
        struct entry *grown = realloc(ck->tensors, (size_t)cap * sizeof *grown);
        if (!grown)
            return DY_E_NOMEM;
        ck->tensors = grown;
        ck->tensor_cap = cap;
    }
    struct entry *t = &ck->tensors[ck->tensor_count];
    memset(t, 0, sizeof *t);
    t->view.name = strdup(name);
    if (!t->view.name)
        return DY_E_NOMEM;
    ck->tensor_count++;
    *out = &t->view;
    return DY_OK;
}

/* Fills `t` from one header entry; `data` is the start of the data section. */
static int parse_entry(const struct shard *s, const char *name, json_t *entry,
                       const unsigned char *data, size_t data_size,
                       struct dy_tensor_view *t, const struct errbuf *e)
{
    if (!json_is_object(entry))
        return fail(e, DY_E_FORMAT, "%s: tensor \"%s\": expected an object", s->path, name);

    json_t *dtype = json_object_get(entry, "dtype");
    if (!json_is_string(dtype))
        return fail(e, DY_E_FORMAT, "%s: tensor \"%s\" field \"dtype\": expected a string",
                    s->path, name);
    size_t d = 0;
    while (d < sizeof dtypes / sizeof dtypes[0] && strcmp(json_string_value(dtype), dtypes[d].name))
        d++;
    if (d == sizeof dtypes / sizeof dtypes[0])
        return fail(e, DY_E_FORMAT, "%s: tensor \"%s\" field \"dtype\": unsupported dtype \"%s\" "
                    "(supported: F32, F16, BF16)", s->path, name, json_string_value(dtype));
    t->dtype = dtypes[d].dtype;

    json_t *shape = json_object_get(entry, "shape");
    if (!json_is_array(shape) || json_array_size(shape) > 4)
        return fail(e, DY_E_FORMAT, "%s: tensor \"%s\" field \"shape\": expected an array of at "
                    "most 4 dimensions", s->path, name);
    uint64_t need = dtype_bytes(t->dtype);
    t->ndim = (int)json_array_size(shape);
    for (int i = 0; i < t->ndim; i++) {
        json_t *dim = json_array_get(shape, (size_t)i);
        if (!json_is_integer(dim) || json_integer_value(dim) < 0)
            return fail(e, DY_E_FORMAT, "%s: tensor \"%s\" field \"shape\": expected non-negative "
                        "integers", s->path, name);
        t->shape[i] = json_integer_value(dim);
        if (t->shape[i] && need > UINT64_MAX / (uint64_t)t->shape[i])
            return fail(e, DY_E_FORMAT, "%s: tensor \"%s\" field \"shape\": size overflows",
                        s->path, name);
        need *= (uint64_t)t->shape[i];
    }

    json_t *offsets = json_object_get(entry, "data_offsets");
    json_t *jb = json_array_get(offsets, 0), *je = json_array_get(offsets, 1);
    if (json_array_size(offsets) != 2 || !json_is_integer(jb) || !json_is_integer(je) ||
        json_integer_value(jb) < 0 || json_integer_value(je) < json_integer_value(jb))
        return fail(e, DY_E_FORMAT, "%s: tensor \"%s\" field \"data_offsets\": expected [begin, end] "
                    "with 0 <= begin <= end", s->path, name);
    uint64_t begin = (uint64_t)json_integer_value(jb), end = (uint64_t)json_integer_value(je);
    if (end - begin != need)
        return fail(e, DY_E_FORMAT, "%s: tensor \"%s\" data_offsets [%llu, %llu] hold %llu bytes "
                    "but dtype %s and shape of %d dims need %llu", s->path, name,
                    (unsigned long long)begin, (unsigned long long)end,
                    (unsigned long long)(end - begin), dtypes[d].name, t->ndim,
                    (unsigned long long)need);
    if (end > data_size)
        return fail(e, DY_E_FORMAT, "%s: tensor \"%s\" data_offsets [%llu, %llu] exceed the file's "
                    "data section of %zu bytes (truncated file?)", s->path, name,
                    (unsigned long long)begin, (unsigned long long)end, data_size);
    t->data = data + begin;
    t->bytes = (size_t)need;
    t->file = s->path;
    return DY_OK;
}

static int compare_by_offset(const void *a, const void *b)
{
    const struct dy_tensor_view *x = *(const struct dy_tensor_view *const *)a;
    const struct dy_tensor_view *y = *(const struct dy_tensor_view *const *)b;
    if (x->data != y->data)
        return (const char *)x->data < (const char *)y->data ? -1 : 1;
    return (x->bytes > y->bytes) - (x->bytes < y->bytes);
}

/* The tensors of one shard must tile its data section: no overlap (two
 * names for one set of bytes), no holes, nothing after the last. */
static int check_tiling(const struct shard *s, const struct entry *tensors, int count,
                        const unsigned char *data, size_t data_size, const struct errbuf *e)
{
    const struct dy_tensor_view **order = malloc((size_t)(count ? count : 1) * sizeof *order);
    if (!order)
        return fail(e, DY_E_NOMEM, "%s: out of memory", s->path);
    for (int i = 0; i < count; i++)
        order[i] = &tensors[i].view;
    qsort(order, (size_t)count, sizeof *order, compare_by_offset);

    int rc = DY_OK;
    size_t covered = 0;
    for (int i = 0; i < count; i++) {
        size_t begin = (size_t)((const unsigned char *)order[i]->data - data);
        if (begin != covered) {
            rc = fail(e, DY_E_FORMAT, "%s: tensor \"%s\" data_offsets [%zu, %zu] %s the previous "
                      "tensor, which ends at %zu", s->path, order[i]->name, begin,
                      begin + order[i]->bytes, begin < covered ? "overlap" : "leave a gap after",
                      covered);
            goto out_order;
        }
        covered = begin + order[i]->bytes;
    }
    if (covered != data_size)
        rc = fail(e, DY_E_FORMAT, "%s: the data section is %zu bytes but its tensors cover only %zu",
                  s->path, data_size, covered);
out_order:
    free(order);
    return rc;
}

/* The format does not promise alignment (older writers did not pad the
 * header), and callers read elements with typed loads: copy the rare
 * misaligned tensor out of the mapping. */
static int align_tensors(struct entry *tensors, int count, const struct shard *s,
                         const struct errbuf *e)
{
    for (int i = 0; i < count; i++) {
        struct dy_tensor_view *t = &tensors[i].view;
        if ((uintptr_t)t->data % dtype_bytes(t->dtype) == 0)
            continue;
        tensors[i].aligned_copy = malloc(t->bytes);
        if (!tensors[i].aligned_copy)
            return fail(e, DY_E_NOMEM, "%s: tensor \"%s\": out of memory", s->path, t->name);
        memcpy(tensors[i].aligned_copy, t->data, t->bytes);
        t->data = tensors[i].aligned_copy;
    }
    return DY_OK;
}

static int parse_shard(struct dy_checkpoint *ck, const struct shard *s, const struct errbuf *e)
{
    uint64_t header_len = 0;
    for (int i = 7; i >= 0; i--)
        header_len = header_len << 8 | s->map[i];
    if (header_len > s->size - 8)
        return fail(e, DY_E_FORMAT, "%s: header length %llu exceeds the file size of %zu bytes",
                    s->path, (unsigned long long)header_len, s->size);

    json_error_t jerr;
    json_t *root = json_loadb((const char *)s->map + 8, (size_t)header_len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root)
        return fail(e, DY_E_FORMAT, "%s: malformed JSON header at line %d column %d: %s",
                    s->path, jerr.line, jerr.column, jerr.text);

    int rc = DY_OK;
    const unsigned char *data = s->map + 8 + header_len;
    size_t data_size = s->size - 8 - (size_t)header_len;
    int first = ck->tensor_count;
    const char *name;
    json_t *entry;

    if (!json_is_object(root)) {
        rc = fail(e, DY_E_FORMAT, "%s: header: expected a JSON object", s->path);
        goto out_root;
    }
    json_object_foreach(root, name, entry) {
        if (strcmp(name, "__metadata__") == 0) {
            if (!json_is_object(entry)) {
                rc = fail(e, DY_E_FORMAT, "%s: field \"__metadata__\": expected an object", s->path);
                goto out_root;
            }
            continue;
        }
        struct dy_tensor_view *t;
        if ((rc = add_tensor(ck, name, &t))) {
            fail(e, rc, "%s: out of memory", s->path);
            goto out_root;
        }
        if ((rc = parse_entry(s, name, entry, data, data_size, t, e)))
            goto out_root;
    }
    if ((rc = check_tiling(s, ck->tensors + first, ck->tensor_count - first, data, data_size, e)))
        goto out_root;
    rc = align_tensors(ck->tensors + first, ck->tensor_count - first, s, e);
out_root:
    json_decref(root);
    return rc;
}

/* Maps and parses dir/file_name unless it is open already; *shard_index is
 * its position in ck->shards. */
static int open_shard(struct dy_checkpoint *ck, const char *dir, const char *file_name,
                      int *shard_index, const struct errbuf *e)
{
    char *path;
    if (asprintf(&path, "%s/%s", dir, file_name) < 0)
        return fail(e, DY_E_NOMEM, "%s: out of memory", dir);
    for (int i = 0; i < ck->shard_count; i++) {
        if (strcmp(ck->shards[i].path, path) == 0) {
            free(path);
            *shard_index = i;
            return DY_OK;
        }
    }
    struct shard *grown = realloc(ck->shards, (size_t)(ck->shard_count + 1) * sizeof *grown);
    if (!grown) {
        free(path);
        return fail(e, DY_E_NOMEM, "%s: out of memory", dir);
    }
    ck->shards = grown;
    struct shard *s = &ck->shards[ck->shard_count++];
    memset(s, 0, sizeof *s);
    s->path = path;
    *shard_index = ck->shard_count - 1;
    int rc = map_shard(s, e);
    return rc ? rc : parse_shard(ck, s, e);
}

static const struct dy_tensor_view *find_linear(const struct dy_checkpoint *ck, const char *name)
{
    for (int i = 0; i < ck->tensor_count; i++) {
        if (strcmp(ck->tensors[i].view.name, name) == 0)
            return &ck->tensors[i].view;
    }
    return NULL;
}

static int open_index(struct dy_checkpoint *ck, const char *dir, const char *index_path,
                      const struct errbuf *e)
{
    json_error_t jerr;
    json_t *root = json_load_file(index_path, JSON_REJECT_DUPLICATES, &jerr);
    if (!root)
        return fail(e, DY_E_FORMAT, "%s: malformed JSON at line %d column %d: %s",
                    index_path, jerr.line, jerr.column, jerr.text);

    int rc = DY_OK;
    json_t *map = json_object_get(root, "weight_map");
    const char *name;
    json_t *file;
    if (!json_is_object(map)) {
        rc = fail(e, DY_E_FORMAT, "%s: field \"weight_map\": expected an object", index_path);
        goto out_root;
    }
    json_object_foreach(map, name, file) {
        /* shard names stay inside the checkpoint directory */
        if (!json_is_string(file) || !*json_string_value(file) || strchr(json_string_value(file), '/')) {
            rc = fail(e, DY_E_FORMAT, "%s: field \"weight_map\": tensor \"%s\": expected a shard "
                      "file name", index_path, name);
            goto out_root;
        }
        int shard;
        if ((rc = open_shard(ck, dir, json_string_value(file), &shard, e))) {
            /* say which entry of the index led to a shard that is missing */
            if (rc == DY_E_IO && e->text && e->len) {
                char *cause = strdup(e->text);
                fail(e, rc, "%s: field \"weight_map\": tensor \"%s\" is in shard \"%s\": %s",
                     index_path, name, json_string_value(file), cause ? cause : "cannot be opened");
                free(cause);
            }
            goto out_root;
        }
    }
    /* checked after every shard is open, so a tensor listed under the wrong
     * shard is reported as absent from that shard, not as missing */
    json_object_foreach(map, name, file) {
        const struct dy_tensor_view *t = find_linear(ck, name);
        char *want;
        if (asprintf(&want, "%s/%s", dir, json_string_value(file)) < 0) {
            rc = fail(e, DY_E_NOMEM, "%s: out of memory", index_path);
            goto out_root;
        }
        bool present = t && strcmp(t->file, want) == 0;
        free(want);
        if (!present) {
            rc = fail(e, DY_E_FORMAT, "%s: field \"weight_map\": tensor \"%s\" is absent from its "
                      "shard %s/%s", index_path, name, dir, json_string_value(file));
            goto out_root;
        }
    }
out_root:
    json_decref(root);
    return rc;
}

/* Without model.safetensors or an index, a directory with exactly one
 * *.safetensors file is unambiguous. */
static int find_single(const char *dir, char **file_name, const struct errbuf *e)
{
    DIR *d = opendir(dir);
    if (!d)
        return fail(e, DY_E_IO, "%s: cannot open directory: %s", dir, strerror(errno));
    int found = 0, rc = DY_OK;
    struct dirent *ent;
    *file_name = NULL;
    while ((ent = readdir(d))) {
        size_t len = strlen(ent->d_name);
        if (len <= 12 || strcmp(ent->d_name + len - 12, ".safetensors") != 0)
            continue;
        if (++found == 1 && !(*file_name = strdup(ent->d_name))) {
            rc = fail(e, DY_E_NOMEM, "%s: out of memory", dir);
            goto out_dir;
        }
    }
    if (found == 0)
        rc = fail(e, DY_E_IO, "%s: no " SINGLE_NAME ", " INDEX_NAME " or other *.safetensors file", dir);
    else if (found > 1)
        rc = fail(e, DY_E_FORMAT, "%s: %d *.safetensors files and no " INDEX_NAME " to say which "
                  "tensor is where", dir, found);
out_dir:
    closedir(d);
    if (rc) {
        free(*file_name);
        *file_name = NULL;
    }
    return rc;
}

static int compare_by_name(const void *a, const void *b)
{
    return strcmp(((const struct entry *)a)->view.name, ((const struct entry *)b)->view.name);
}

int dy_checkpoint_open(const char *dir, struct dy_checkpoint **out, char *err, size_t err_len)
{
    struct errbuf e = { err, err_len };
    struct dy_checkpoint *ck = calloc(1, sizeof *ck);
    char *index_path = NULL, *single = NULL;
    int rc, shard;

    *out = NULL;
    if (err && err_len)
        err[0] = '\0';
    if (!ck)
        return fail(&e, DY_E_NOMEM, "%s: out of memory", dir);
    if (asprintf(&index_path, "%s/" INDEX_NAME, dir) < 0) {
        index_path = NULL;
        rc = fail(&e, DY_E_NOMEM, "%s: out of memory", dir);
        goto out_ck;
    }

    if (access(index_path, F_OK) == 0) {
        rc = open_index(ck, dir, index_path, &e);
    } else {
        char *single_path;
        if (asprintf(&single_path, "%s/" SINGLE_NAME, dir) < 0) {
            rc = fail(&e, DY_E_NOMEM, "%s: out of memory", dir);
            goto out_ck;
        }
        bool has_single = access(single_path, F_OK) == 0;
        free(single_path);
        rc = has_single ? DY_OK : find_single(dir, &single, &e);
        if (!rc)
            rc = open_shard(ck, dir, single ? single : SINGLE_NAME, &shard, &e);
    }
    if (rc)
        goto out_ck;

    if (ck->tensor_count > 1)
        qsort(ck->tensors, (size_t)ck->tensor_count, sizeof *ck->tensors, compare_by_name);
    for (int i = 1; i < ck->tensor_count; i++) {
        const struct dy_tensor_view *prev = &ck->tensors[i - 1].view, *t = &ck->tensors[i].view;
        if (strcmp(prev->name, t->name) == 0) {
            rc = fail(&e, DY_E_FORMAT, "%s: tensor \"%s\" appears in both %s and %s", dir,
                      t->name, prev->file, t->file);
            goto out_ck;
        }
    }
    *out = ck;
    ck = NULL;
out_ck:
    dy_checkpoint_close(ck);
    free(single);
    free(index_path);
    return rc;
}

void dy_checkpoint_close(struct dy_checkpoint *ck)
{
    if (!ck)
        return;
    for (int i = 0; i < ck->tensor_count; i++) {
        free((char *)ck->tensors[i].view.name);
        free(ck->tensors[i].aligned_copy);
    }
    for (int i = 0; i < ck->shard_count; i++) {
        if (ck->shards[i].map)
            munmap((void *)ck->shards[i].map, ck->shards[i].size);
        free(ck->shards[i].path);
    }
    free(ck->tensors);
    free(ck->shards);
    free(ck);
}

const struct dy_tensor_view *dy_checkpoint_find(const struct dy_checkpoint *ck, const char *name)
{
    struct entry key = { .view.name = name };
    if (!ck || !ck->tensor_count)
        return NULL;
    const struct entry *found = bsearch(&key, ck->tensors, (size_t)ck->tensor_count, sizeof key,
                                        compare_by_name);
    return found ? &found->view : NULL;
}
