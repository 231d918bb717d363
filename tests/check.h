/* check.h — the smallest test harness that does the job: CHECK macros that
 * report file:line and keep going, RUN() to run a test function, and
 * check_done() as main's return value (non-zero when anything failed). */
#ifndef STRATA_CHECK_H
#define STRATA_CHECK_H

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

static int check_failures;
static int check_count;

#define CHECK(cond)                                                                  \
    do {                                                                             \
        check_count++;                                                               \
        if (!(cond)) {                                                               \
            check_failures++;                                                        \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);  \
        }                                                                            \
    } while (0)

#define CHECK_INT(a, b)                                                                      \
    do {                                                                                     \
        long long check_a_ = (long long)(a), check_b_ = (long long)(b);                      \
        check_count++;                                                                       \
        if (check_a_ != check_b_) {                                                          \
            check_failures++;                                                                \
            fprintf(stderr, "%s:%d: CHECK failed: %s == %s (%lld != %lld)\n", __FILE__,      \
                    __LINE__, #a, #b, check_a_, check_b_);                                   \
        }                                                                                    \
    } while (0)

#define CHECK_STR(a, b)                                                                      \
    do {                                                                                     \
        const char *check_a_ = (a), *check_b_ = (b);                                         \
        check_count++;                                                                       \
        if (!check_a_ || !check_b_ || strcmp(check_a_, check_b_) != 0) {                     \
            check_failures++;                                                                \
            fprintf(stderr, "%s:%d: CHECK failed: %s == %s (\"%s\" != \"%s\")\n", __FILE__,  \
                    __LINE__, #a, #b, check_a_ ? check_a_ : "(null)",                        \
                    check_b_ ? check_b_ : "(null)");                                         \
        }                                                                                    \
    } while (0)

/* A view compared with a C string. */
#define CHECK_STRV(view, cstr)                                                               \
    do {                                                                                     \
        struct str check_v_ = (view);                                                        \
        const char *check_c_ = (cstr);                                                       \
        check_count++;                                                                       \
        if (check_v_.n != strlen(check_c_) || memcmp(check_v_.p, check_c_, check_v_.n)) {    \
            check_failures++;                                                                \
            fprintf(stderr, "%s:%d: CHECK failed: %s == \"%s\" (got \"%.*s\")\n", __FILE__,  \
                    __LINE__, #view, check_c_, (int)check_v_.n, check_v_.p);                 \
        }                                                                                    \
    } while (0)

#define RUN(fn)                                                                              \
    do {                                                                                     \
        int check_before_ = check_failures;                                                  \
        fn();                                                                                \
        fprintf(stderr, "%s %s\n", check_failures == check_before_ ? "ok  " : "FAIL", #fn);  \
    } while (0)

static inline int check_done(void)
{
    fprintf(stderr, "%d checks, %d failed\n", check_count, check_failures);
    return check_failures ? 1 : 0;
}

#endif
