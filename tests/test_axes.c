/* CLI axes: lists, llama-bench style ranges, and the cartesian product. */
#include <string.h>

#include "../backends/status.h"
#include "../harness/sweep.h"
#include "dy_test.h"

static bool list_is(const struct dy_list *l, const char *joined)
{
    char buf[512] = "";
    for (int i = 0; i < l->count; i++) {
        if (i)
            strcat(buf, ",");
        strcat(buf, l->items[i]);
    }
    if (strcmp(buf, joined))
        printf("# got %s, want %s\n", buf, joined);
    return !strcmp(buf, joined);
}

static void test_ranges(void)
{
    struct dy_list l;
    char err[256];
    DY_REQUIRE(dy_expand_ints("1,2,4", 1, &l, err, sizeof err) == DY_OK);
    DY_CHECK(list_is(&l, "1,2,4"));
    dy_list_free(&l);
    DY_REQUIRE(dy_expand_ints("1-4", 1, &l, err, sizeof err) == DY_OK);
    DY_CHECK(list_is(&l, "1,2,3,4"));
    dy_list_free(&l);
    DY_REQUIRE(dy_expand_ints("0-10+5", 0, &l, err, sizeof err) == DY_OK);
    DY_CHECK(list_is(&l, "0,5,10"));
    dy_list_free(&l);
    DY_REQUIRE(dy_expand_ints("1-64*4,100", 1, &l, err, sizeof err) == DY_OK);
    DY_CHECK(list_is(&l, "1,4,16,64,100"));
    dy_list_free(&l);
}

static void test_bad_ranges(void)
{
    struct dy_list l;
    char err[256];
    const char *bad[] = { "", "1,,2", "a", "1-", "4-1", "1-8*1", "0-8*2", "1-8+0", "1.5", "-3", "1-99999" };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err[0] = '\0';
        int st = dy_expand_ints(bad[i], 1, &l, err, sizeof err);
        if (st == DY_OK)
            printf("# \"%s\" was accepted\n", bad[i]);
        DY_CHECK(st == DY_E_INVALID && err[0]);
    }
}

static void test_product(void)
{
    struct dy_sweep s;
    char err[256];
    char *argv[] = { "--batch", "1,2", "--input-len=16-32*2", "--weight-dtype", "bf16,f32", "--db", "x.db" };
    DY_REQUIRE(dy_sweep_parse(7, argv, &s, err, sizeof err) == DY_OK);
    DY_CHECK(dy_sweep_count(&s) == 8);
    DY_CHECK(!strcmp(s.db_path, "x.db"));
    const char *v[DY_AX_COUNT];
    dy_sweep_point(&s, 0, v);
    DY_CHECK(!strcmp(v[DY_AX_WEIGHT_DTYPE], "bf16") && !strcmp(v[DY_AX_BATCH], "1") &&
             !strcmp(v[DY_AX_INPUT_LEN], "16"));
    dy_sweep_point(&s, 7, v);
    DY_CHECK(!strcmp(v[DY_AX_WEIGHT_DTYPE], "f32") && !strcmp(v[DY_AX_BATCH], "2") &&
             !strcmp(v[DY_AX_INPUT_LEN], "32"));
    /* the weight dtype changes slowest of these: weights are reused */
    dy_sweep_point(&s, 3, v);
    DY_CHECK(!strcmp(v[DY_AX_WEIGHT_DTYPE], "bf16"));
    DY_CHECK(v[DY_AX_EXPERTS] == NULL && !strcmp(v[DY_AX_MODEL], "tiny-llama"));
    dy_sweep_free(&s);
}

static void test_bad_flags(void)
{
    struct dy_sweep s;
    char err[256];
    char *unknown[] = { "--batchsize", "4" };
    DY_CHECK(dy_sweep_parse(2, unknown, &s, err, sizeof err) == DY_E_INVALID);
    DY_CHECK(strstr(err, "--batchsize") != NULL);
    char *bad_enum[] = { "--weight-dtype", "bf17" };
    DY_CHECK(dy_sweep_parse(2, bad_enum, &s, err, sizeof err) == DY_E_INVALID);
    DY_CHECK(strstr(err, "--weight-dtype") && strstr(err, "bf17"));
    char *missing[] = { "--batch" };
    DY_CHECK(dy_sweep_parse(1, missing, &s, err, sizeof err) == DY_E_INVALID);
    char *zero[] = { "--batch", "0" };
    DY_CHECK(dy_sweep_parse(2, zero, &s, err, sizeof err) == DY_E_INVALID);
    char *routing[] = { "--routing", "zipf:x" };
    DY_CHECK(dy_sweep_parse(2, routing, &s, err, sizeof err) == DY_E_INVALID);
    char *stray[] = { "batch" };
    DY_CHECK(dy_sweep_parse(1, stray, &s, err, sizeof err) == DY_E_INVALID);
}

DY_TESTS(DY_TEST(test_ranges) DY_TEST(test_bad_ranges) DY_TEST(test_product) DY_TEST(test_bad_flags))
