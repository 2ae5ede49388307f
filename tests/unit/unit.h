/* unit.h — the unit-test harness.
 *
 * A test is a plain `void test_NAME(void)` function in tests/unit/test_*.c; the build collects
 * every one (tests/unit/gen-main.sh) and the runner executes each in its own forked process,
 * so a crash or a failed check ends only that test.  A failed check prints FILE:LINE with the
 * values compared and ends the test as failed.
 */
#ifndef INTENTD_UNIT_H
#define INTENTD_UNIT_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

void unit_fail(const char *file, int line, const char *fmt, ...)
    __attribute__((noreturn, format(printf, 3, 4)));

/* A scratch folder of this test's own (created empty, removed after a pass). */
const char *unit_tmpdir(void);

#define CHECK(cond)                                                                       \
    do {                                                                                  \
        if (!(cond)) unit_fail(__FILE__, __LINE__, "check failed: %s", #cond);           \
    } while (0)

#define CHECK_INT_EQ(a, b)                                                                \
    do {                                                                                  \
        long long a_ = (long long)(a), b_ = (long long)(b);                               \
        if (a_ != b_)                                                                     \
            unit_fail(__FILE__, __LINE__, "%s == %s: %lld != %lld", #a, #b, a_, b_);      \
    } while (0)

#define CHECK_STR_EQ(a, b)                                                                \
    do {                                                                                  \
        const char *a_ = (a), *b_ = (b);                                                  \
        if (!a_ || !b_ || strcmp(a_, b_) != 0)                                            \
            unit_fail(__FILE__, __LINE__, "%s == %s: \"%s\" != \"%s\"", #a, #b,           \
                      a_ ? a_ : "(null)", b_ ? b_ : "(null)");                            \
    } while (0)

/* Substring check, for error messages. */
#define CHECK_STR_HAS(hay, needle)                                                        \
    do {                                                                                  \
        const char *h_ = (hay), *n_ = (needle);                                           \
        if (!h_ || !strstr(h_, n_))                                                       \
            unit_fail(__FILE__, __LINE__, "%s contains \"%s\": got \"%s\"", #hay, n_,     \
                      h_ ? h_ : "(null)");                                                \
    } while (0)

/* |a - b| <= tol (absolute), printing both values and the difference. */
#define CHECK_NEAR(a, b, tol)                                                             \
    do {                                                                                  \
        double a_ = (double)(a), b_ = (double)(b), t_ = (double)(tol);                    \
        if (!(fabs(a_ - b_) <= t_))                                                       \
            unit_fail(__FILE__, __LINE__, "%s ~ %s: %.9g vs %.9g (diff %.3g > %.3g)", #a, \
                      #b, a_, b_, fabs(a_ - b_), t_);                                      \
    } while (0)

#endif
