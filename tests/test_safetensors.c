/* safetensors checkpoints: files written byte by byte here, then opened,
 * searched, and broken in each way the loader must name. */
#include <ftw.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "dy_test.h"
#include "workloads/model.h"

static char root_dir[] = "/tmp/dyno-test-safetensors-XXXXXX";

static int remove_entry(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
    return remove(path);
}

static void remove_root(void)
{
    nftw(root_dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* A fresh checkpoint directory for each case. */
static void make_dir(const char *name, char *dir, size_t dir_len)
{
    static bool made;
    if (!made) {
        DY_REQUIRE(mkdtemp(root_dir) != NULL);
        atexit(remove_root);
        made = true;
    }
    snprintf(dir, dir_len, "%s/%s", root_dir, name);
    DY_REQUIRE(mkdir(dir, 0700) == 0);
}

static void write_bytes(const char *path, const void *bytes, size_t len)
{
    FILE *f = fopen(path, "wb");
    DY_REQUIRE(f != NULL);
    DY_REQUIRE(fwrite(bytes, 1, len, f) == len);
    fclose(f);
}

/* Header length (little-endian), header, data; `data_len` may be shorter
 * than the header claims, to make truncated files. */
static void write_safetensors(const char *dir, const char *file, const char *header,
                              const void *data, size_t data_len, char *path, size_t path_len)
{
    size_t header_len = strlen(header);
    size_t total = 8 + header_len + data_len;
    unsigned char *buf = malloc(total);
    DY_REQUIRE(buf != NULL);
    for (int i = 0; i < 8; i++)
        buf[i] = (unsigned char)((uint64_t)header_len >> (8 * i));
    memcpy(buf + 8, header, header_len);
    if (data_len)
        memcpy(buf + 8 + header_len, data, data_len);
    snprintf(path, path_len, "%s/%s", dir, file);
    write_bytes(path, buf, total);
    free(buf);
}

static void write_text(const char *dir, const char *file, const char *text)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, file);
    write_bytes(path, text, strlen(text));
}

/* a: F32 [2, 3] = 0..5; b: BF16 [4] = 1, -2, 0.5, 3; c: F16 [2, 2] = 1, 2, -1, 0.25 */
static const char mixed_header[] =
    "{\"__metadata__\":{\"format\":\"pt\"},"
    "\"b\":{\"dtype\":\"BF16\",\"shape\":[4],\"data_offsets\":[24,32]},"
    "\"a\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]},"
    "\"c\":{\"dtype\":\"F16\",\"shape\":[2,2],\"data_offsets\":[32,40]}}  ";

static void mixed_data(unsigned char data[40])
{
    float a[6] = { 0, 1, 2, 3, 4, 5 };
    uint16_t b[4] = { 0x3f80, 0xc000, 0x3f00, 0x4040 };
    uint16_t c[4] = { 0x3c00, 0x4000, 0xbc00, 0x3400 };
    memcpy(data, a, 24);
    memcpy(data + 24, b, 8);
    memcpy(data + 32, c, 8);
}

static struct dy_checkpoint *open_ok(const char *dir)
{
    char err[1024];
    struct dy_checkpoint *ck = NULL;
    int rc = dy_checkpoint_open(dir, &ck, err, sizeof err);
    if (rc != DY_OK)
        printf("# %s\n", err);
    DY_REQUIRE(rc == DY_OK && ck != NULL);
    return ck;
}

static void test_single_file(void)
{
    char dir[1024], path[4096];
    unsigned char data[40];
    mixed_data(data);
    make_dir("single", dir, sizeof dir);
    write_safetensors(dir, "model.safetensors", mixed_header, data, sizeof data, path, sizeof path);

    struct dy_checkpoint *ck = open_ok(dir);
    const struct dy_tensor_view *a = dy_checkpoint_find(ck, "a");
    const struct dy_tensor_view *b = dy_checkpoint_find(ck, "b");
    const struct dy_tensor_view *c = dy_checkpoint_find(ck, "c");
    DY_REQUIRE(a && b && c);
    DY_CHECK(dy_checkpoint_find(ck, "__metadata__") == NULL);
    DY_CHECK(dy_checkpoint_find(ck, "d") == NULL);
    /* the header's length leaves the data misaligned; views must not be */
    DY_CHECK((8 + strlen(mixed_header)) % 4 != 0);
    DY_CHECK((uintptr_t)a->data % 4 == 0 && (uintptr_t)b->data % 2 == 0 && (uintptr_t)c->data % 2 == 0);

    DY_CHECK(strcmp(a->name, "a") == 0 && strcmp(a->file, path) == 0);
    DY_CHECK(a->dtype == DY_F32 && a->ndim == 2 && a->shape[0] == 2 && a->shape[1] == 3);
    DY_CHECK(a->bytes == 24);
    for (int i = 0; i < 6; i++)
        DY_CHECK(dy_load_f32(a->data, DY_F32, (size_t)i) == (float)i);

    DY_CHECK(b->dtype == DY_BF16 && b->ndim == 1 && b->shape[0] == 4 && b->bytes == 8);
    DY_CHECK(dy_load_f32(b->data, DY_BF16, 0) == 1.0f && dy_load_f32(b->data, DY_BF16, 1) == -2.0f);
    DY_CHECK(dy_load_f32(b->data, DY_BF16, 2) == 0.5f && dy_load_f32(b->data, DY_BF16, 3) == 3.0f);

    DY_CHECK(c->dtype == DY_F16 && c->ndim == 2 && c->shape[0] == 2 && c->shape[1] == 2);
    DY_CHECK(dy_load_f32(c->data, DY_F16, 0) == 1.0f && dy_load_f32(c->data, DY_F16, 1) == 2.0f);
    DY_CHECK(dy_load_f32(c->data, DY_F16, 2) == -1.0f && dy_load_f32(c->data, DY_F16, 3) == 0.25f);
    dy_checkpoint_close(ck);
}

/* Without model.safetensors or an index, one *.safetensors of any name. */
static void test_lone_file(void)
{
    char dir[1024], path[4096], err[1024];
    unsigned char data[40];
    struct dy_checkpoint *ck;
    mixed_data(data);

    make_dir("lone", dir, sizeof dir);
    write_safetensors(dir, "consolidated.safetensors", mixed_header, data, sizeof data, path, sizeof path);
    ck = open_ok(dir);
    DY_CHECK(dy_checkpoint_find(ck, "c") != NULL);
    dy_checkpoint_close(ck);

    write_safetensors(dir, "other.safetensors", mixed_header, data, sizeof data, path, sizeof path);
    DY_CHECK(dy_checkpoint_open(dir, &ck, err, sizeof err) == DY_E_FORMAT);
    printf("# %s\n", err);
    DY_CHECK(strstr(err, dir) != NULL && strstr(err, "index") != NULL);

    make_dir("empty", dir, sizeof dir);
    DY_CHECK(dy_checkpoint_open(dir, &ck, err, sizeof err) == DY_E_IO);
    DY_CHECK(ck == NULL && strstr(err, dir) != NULL);
}

static const char shard1_header[] =
    "{\"x\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
    "\"y\":{\"dtype\":\"F16\",\"shape\":[1,1,1,2],\"data_offsets\":[8,12]}}";
static const char shard2_header[] =
    "{\"z\":{\"dtype\":\"BF16\",\"shape\":[3],\"data_offsets\":[0,6]}}";

static void write_shards(const char *dir, char *path1, char *path2, size_t path_len)
{
    float x[2] = { 7.0f, -8.0f };
    uint16_t y[2] = { 0x3c00, 0xc000 };
    uint16_t z[3] = { 0x4000, 0x4080, 0xbf80 };
    unsigned char d1[12];
    memcpy(d1, x, 8);
    memcpy(d1 + 8, y, 4);
    write_safetensors(dir, "model-00001-of-00002.safetensors", shard1_header, d1, sizeof d1, path1, path_len);
    write_safetensors(dir, "model-00002-of-00002.safetensors", shard2_header, z, sizeof z, path2, path_len);
}

static void test_sharded(void)
{
    char dir[1024], path1[4096], path2[4096];
    make_dir("sharded", dir, sizeof dir);
    write_shards(dir, path1, path2, sizeof path1);
    write_text(dir, "model.safetensors.index.json",
               "{\"metadata\":{\"total_size\":18},\"weight_map\":{"
               "\"z\":\"model-00002-of-00002.safetensors\","
               "\"x\":\"model-00001-of-00002.safetensors\","
               "\"y\":\"model-00001-of-00002.safetensors\"}}");

    struct dy_checkpoint *ck = open_ok(dir);
    const struct dy_tensor_view *x = dy_checkpoint_find(ck, "x");
    const struct dy_tensor_view *y = dy_checkpoint_find(ck, "y");
    const struct dy_tensor_view *z = dy_checkpoint_find(ck, "z");
    DY_REQUIRE(x && y && z);
    DY_CHECK(strcmp(x->file, path1) == 0 && strcmp(y->file, path1) == 0);
    DY_CHECK(strcmp(z->file, path2) == 0);
    DY_CHECK(dy_load_f32(x->data, DY_F32, 1) == -8.0f);
    DY_CHECK(y->ndim == 4 && y->shape[3] == 2 && dy_load_f32(y->data, DY_F16, 1) == -2.0f);
    DY_CHECK(z->dtype == DY_BF16 && z->shape[0] == 3 && dy_load_f32(z->data, DY_BF16, 2) == -1.0f);
    dy_checkpoint_close(ck);
}

/* Opens `dir`, expects failure `rc` and a message naming `file` (a path
 * under dir) and each of the NULL-terminated `words`. */
static void expect_failure(const char *dir, int want_rc, const char *file, ...)
{
    char err[1024];
    struct dy_checkpoint *ck = (struct dy_checkpoint *)1;
    int rc = dy_checkpoint_open(dir, &ck, err, sizeof err);
    printf("# %s\n", err);
    DY_CHECK(rc == want_rc);
    DY_CHECK(ck == NULL);
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, file);
    DY_CHECK(strstr(err, path) != NULL);
    va_list ap;
    va_start(ap, file);
    for (const char *w; (w = va_arg(ap, const char *));) {
        if (!strstr(err, w)) {
            printf("# missing \"%s\"\n", w);
            DY_CHECK(false);
        }
    }
    va_end(ap);
}

/* One broken single-file checkpoint. */
static void expect_bad_file(const char *name, const char *header, size_t data_len, ...)
{
    char dir[1024], path[4096], err[1024];
    unsigned char data[64] = { 0 };
    make_dir(name, dir, sizeof dir);
    write_safetensors(dir, "model.safetensors", header, data, data_len, path, sizeof path);
    struct dy_checkpoint *ck = NULL;
    int rc = dy_checkpoint_open(dir, &ck, err, sizeof err);
    printf("# %s: %s\n", name, err);
    DY_CHECK(rc == DY_E_FORMAT && ck == NULL);
    DY_CHECK(strstr(err, path) != NULL);
    va_list ap;
    va_start(ap, data_len);
    for (const char *w; (w = va_arg(ap, const char *));) {
        if (!strstr(err, w)) {
            printf("# missing \"%s\"\n", w);
            DY_CHECK(false);
        }
    }
    va_end(ap);
}

static void test_bad_files(void)
{
    char dir[1024], path[4096];

    make_dir("short", dir, sizeof dir);
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    write_bytes(path, "\x10\0\0\0\0", 5);
    expect_failure(dir, DY_E_FORMAT, "model.safetensors", "shorter than the 8-byte", NULL);

    make_dir("long-header", dir, sizeof dir);
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    write_bytes(path, "\xff\0\0\0\0\0\0\0{}", 10);
    expect_failure(dir, DY_E_FORMAT, "model.safetensors", "header length 255", NULL);

    expect_bad_file("malformed", "{\"a\":{\"dtype\":\"F32\",", 0, "malformed JSON", NULL);
    expect_bad_file("not-object", "[1,2]", 0, "expected a JSON object", NULL);
    expect_bad_file("i64", "{\"a\":{\"dtype\":\"I64\",\"shape\":[1],\"data_offsets\":[0,8]}}", 8,
                    "tensor \"a\"", "unsupported dtype \"I64\"", NULL);
    expect_bad_file("f64", "{\"w\":{\"dtype\":\"F64\",\"shape\":[1],\"data_offsets\":[0,8]}}", 8,
                    "tensor \"w\"", "unsupported dtype \"F64\"", NULL);
    expect_bad_file("no-dtype", "{\"a\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 4,
                    "tensor \"a\"", "\"dtype\"", NULL);
    expect_bad_file("five-dims", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1],\"data_offsets\":[0,4]}}",
                    4, "tensor \"a\"", "\"shape\"", NULL);
    expect_bad_file("negative-dim", "{\"a\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}",
                    4, "tensor \"a\"", "\"shape\"", NULL);
    expect_bad_file("bad-offsets", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,0]}}",
                    4, "tensor \"a\"", "\"data_offsets\"", NULL);
    expect_bad_file("size-mismatch", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,20]}}",
                    20, "tensor \"a\"", "data_offsets [0, 20]", "need 24", NULL);
    expect_bad_file("truncated",
                    "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                    "\"b\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[8,24]}}", 20,
                    "tensor \"b\" data_offsets [8, 24] exceed the file's data section of 20 bytes "
                    "(truncated file?)", NULL);
    expect_bad_file("overlap",
                    "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                    "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", 12,
                    "tensor \"b\"", "overlap", NULL);
    expect_bad_file("trailing", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 12,
                    "data section is 12 bytes", NULL);
    expect_bad_file("metadata", "{\"__metadata__\":[1]}", 0, "\"__metadata__\"", NULL);
}

static void test_bad_index(void)
{
    char dir[1024], path1[4096], path2[4096];

    make_dir("missing-shard", dir, sizeof dir);
    write_shards(dir, path1, path2, sizeof path1);
    remove(path2);
    write_text(dir, "model.safetensors.index.json",
               "{\"weight_map\":{\"x\":\"model-00001-of-00002.safetensors\","
               "\"z\":\"model-00002-of-00002.safetensors\"}}");
    expect_failure(dir, DY_E_IO, "model.safetensors.index.json", "tensor \"z\"",
                   "model-00002-of-00002.safetensors", NULL);

    make_dir("absent-tensor", dir, sizeof dir);
    write_shards(dir, path1, path2, sizeof path1);
    write_text(dir, "model.safetensors.index.json",
               "{\"weight_map\":{\"x\":\"model-00001-of-00002.safetensors\","
               "\"z\":\"model-00001-of-00002.safetensors\"}}");
    expect_failure(dir, DY_E_FORMAT, "model.safetensors.index.json", "tensor \"z\"", "absent",
                   "model-00001-of-00002.safetensors", NULL);

    make_dir("malformed-index", dir, sizeof dir);
    write_shards(dir, path1, path2, sizeof path1);
    write_text(dir, "model.safetensors.index.json", "{\"weight_map\": {\"x\": }");
    expect_failure(dir, DY_E_FORMAT, "model.safetensors.index.json", "malformed JSON", NULL);

    make_dir("no-weight-map", dir, sizeof dir);
    write_text(dir, "model.safetensors.index.json", "{\"metadata\": {}}");
    expect_failure(dir, DY_E_FORMAT, "model.safetensors.index.json", "\"weight_map\"", NULL);

    make_dir("escaping-shard", dir, sizeof dir);
    write_text(dir, "model.safetensors.index.json", "{\"weight_map\": {\"x\": \"../x.safetensors\"}}");
    expect_failure(dir, DY_E_FORMAT, "model.safetensors.index.json", "tensor \"x\"", NULL);

    /* the same tensor in two shards is ambiguous */
    make_dir("duplicate", dir, sizeof dir);
    write_shards(dir, path1, path2, sizeof path1);
    write_safetensors(dir, "model-00002-of-00002.safetensors",
                      "{\"x\":{\"dtype\":\"BF16\",\"shape\":[3],\"data_offsets\":[0,6]},"
                      "\"w\":{\"dtype\":\"BF16\",\"shape\":[1],\"data_offsets\":[6,8]}}",
                      "\0\0\0\0\0\0\0\0", 8, path2, sizeof path2);
    write_text(dir, "model.safetensors.index.json",
               "{\"weight_map\":{\"x\":\"model-00001-of-00002.safetensors\","
               "\"y\":\"model-00001-of-00002.safetensors\","
               "\"w\":\"model-00002-of-00002.safetensors\"}}");
    char err[1024];
    struct dy_checkpoint *ck;
    DY_CHECK(dy_checkpoint_open(dir, &ck, err, sizeof err) == DY_E_FORMAT);
    printf("# %s\n", err);
    DY_CHECK(strstr(err, "tensor \"x\"") != NULL && strstr(err, path2) != NULL);
}

DY_TESTS(
    DY_TEST(test_single_file)
    DY_TEST(test_lone_file)
    DY_TEST(test_sharded)
    DY_TEST(test_bad_files)
    DY_TEST(test_bad_index)
)
