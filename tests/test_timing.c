/* nvbench's stopping rule (harness/timing.c): minimum count AND minimum
 * timed time AND noise target, or the time limit. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "harness/timing.h"
#include "dy_test.h"

/* Appends one repetition of e2e time `ms` (no decode steps). */
static void add_rep(struct dy_timings *t, double ms)
{
    DY_REQUIRE(dy_timings_reserve(t, t->reps + 1) == DY_OK);
    t->prefill_ms[t->reps] = t->e2e_ms[t->reps] = t->host_ms[t->reps] = ms;
    t->reps++;
}

static void test_rel_stddev(void)
{
    double same[] = { 5, 5, 5 }, two[] = { 9, 11 };
    DY_CHECK(isnan(dy_rel_stddev(same, 1)));
    DY_CHECK(dy_rel_stddev(same, 3) == 0);
    DY_CHECK(fabs(dy_rel_stddev(two, 2) - sqrt(2.0) / 10) < 1e-12);
}

static void test_count_only(void)
{
    struct dy_stop_rule rule = { .min_reps = 3 };
    struct dy_timings t;
    char note[128] = "";
    DY_REQUIRE(dy_timings_init(&t, 0, 1) == DY_OK);
    for (int i = 0; i < 2; i++) {
        add_rep(&t, 10 + i);
        DY_CHECK(!dy_stop_now(&rule, &t, 1e6, note, sizeof note));
    }
    add_rep(&t, 30);
    DY_CHECK(dy_stop_now(&rule, &t, 0, note, sizeof note) && !note[0]);
    dy_timings_free(&t);
}

static void test_min_time(void)
{
    struct dy_stop_rule rule = { .min_reps = 2, .min_time_s = 0.05 };
    struct dy_timings t;
    char note[128] = "";
    int reps = 0;
    DY_REQUIRE(dy_timings_init(&t, 4, 2) == DY_OK);
    do {
        add_rep(&t, 10);
        reps++;
    } while (!dy_stop_now(&rule, &t, 0, note, sizeof note) && reps < 100);
    DY_CHECK(reps == 5 && !note[0]);
    DY_CHECK(t.capacity >= 5);
    dy_timings_free(&t);
}

static void test_noise_target_then_time_limit(void)
{
    struct dy_stop_rule rule = { .min_reps = 2, .max_noise = 0.01, .max_time_s = 5 };
    struct dy_timings t;
    char note[128] = "";
    DY_REQUIRE(dy_timings_init(&t, 0, 2) == DY_OK);
    add_rep(&t, 9);
    add_rep(&t, 11);
    DY_CHECK(!dy_stop_now(&rule, &t, 1, note, sizeof note));
    DY_CHECK(dy_stop_now(&rule, &t, 5, note, sizeof note));
    printf("# %s\n", note);
    DY_CHECK(strstr(note, "noise 14.14% above the 1.00% target after 2 repetitions") != NULL);
    dy_timings_free(&t);
    /* quiet samples meet the target at the minimum count */
    DY_REQUIRE(dy_timings_init(&t, 0, 2) == DY_OK);
    note[0] = '\0';
    add_rep(&t, 10);
    add_rep(&t, 10.01);
    DY_CHECK(dy_stop_now(&rule, &t, 0, note, sizeof note) && !note[0]);
    dy_timings_free(&t);
}

static void test_default_time_limit_with_noise(void)
{
    struct dy_stop_rule rule = { .min_reps = 1, .max_noise = 0.001 };
    struct dy_timings t;
    char note[128] = "";
    DY_REQUIRE(dy_timings_init(&t, 0, 1) == DY_OK);
    add_rep(&t, 1);
    add_rep(&t, 2);
    DY_CHECK(!dy_stop_now(&rule, &t, DY_DEFAULT_MAX_TIME_S - 1, note, sizeof note));
    DY_CHECK(dy_stop_now(&rule, &t, DY_DEFAULT_MAX_TIME_S, note, sizeof note) && note[0]);
    dy_timings_free(&t);
}

DY_TESTS(
    DY_TEST(test_rel_stddev)
    DY_TEST(test_count_only)
    DY_TEST(test_min_time)
    DY_TEST(test_noise_target_then_time_limit)
    DY_TEST(test_default_time_limit_with_noise)
)
