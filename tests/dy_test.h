/* A flat registered list of test cases printing TAP, as libuv's test-list.h.
 *
 *   static void test_x(void) { DY_CHECK(1 + 1 == 2); }
 *   DY_TESTS(DY_TEST(test_x))
 *
 * Exit status: 0 when every case passed, 1 otherwise. A case may call
 * DY_SKIP("why") to be reported as skipped. */
#ifndef DY_TEST_H
#define DY_TEST_H

#include <setjmp.h>
#include <stdio.h>
#include <string.h>

struct dy_test_case {
    const char *name;
    void (*fn)(void);
};

static int dy_test_failures_in_case;
static const char *dy_test_skip_reason;
static jmp_buf dy_test_abort;

#define DY_TEST(fn) { #fn, fn },

#define DY_CHECK(cond)                                                         \
    do {                                                                       \
        if (!(cond)) {                                                         \
            printf("# %s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);  \
            dy_test_failures_in_case++;                                        \
        }                                                                      \
    } while (0)

/* Fails the case and leaves it at once. */
#define DY_REQUIRE(cond)                                                       \
    do {                                                                       \
        if (!(cond)) {                                                         \
            printf("# %s:%d: requirement failed: %s\n", __FILE__, __LINE__, #cond); \
            dy_test_failures_in_case++;                                        \
            longjmp(dy_test_abort, 1);                                         \
        }                                                                      \
    } while (0)

#define DY_SKIP(why)                                                           \
    do {                                                                       \
        dy_test_skip_reason = (why);                                           \
        longjmp(dy_test_abort, 1);                                             \
    } while (0)

static inline int dy_test_main(const struct dy_test_case *cases, int count, int argc, char **argv)
{
    volatile int failed = 0;
    printf("1..%d\n", count);
    for (int i = 0; i < count; i++) {
        dy_test_failures_in_case = 0;
        dy_test_skip_reason = NULL;
        if (argc > 1 && !strstr(cases[i].name, argv[1])) {
            printf("ok %d - %s # SKIP filtered out\n", i + 1, cases[i].name);
            continue;
        }
        if (setjmp(dy_test_abort) == 0)
            cases[i].fn();
        fflush(stdout);
        if (dy_test_skip_reason && !dy_test_failures_in_case) {
            printf("ok %d - %s # SKIP %s\n", i + 1, cases[i].name, dy_test_skip_reason);
        } else if (dy_test_failures_in_case) {
            printf("not ok %d - %s\n", i + 1, cases[i].name);
            failed++;
        } else {
            printf("ok %d - %s\n", i + 1, cases[i].name);
        }
        fflush(stdout);
    }
    return failed ? 1 : 0;
}

#define DY_TESTS(...)                                                          \
    int main(int argc, char **argv)                                            \
    {                                                                          \
        static const struct dy_test_case cases[] = { __VA_ARGS__ };            \
        return dy_test_main(cases, (int)(sizeof cases / sizeof cases[0]), argc, argv); \
    }

#endif
