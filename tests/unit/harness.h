/* SPDX-License-Identifier: MIT
 *
 * harness.h: the tiny unit-test harness. A test file defines TEST(name)
 * functions and lists them in AG_TESTS(...); main() runs them all and prints
 * the plain "N passed, N failed" summary line that CI reads.
 */
#ifndef AG_TESTS_HARNESS_H
#define AG_TESTS_HARNESS_H

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int ag_test_failed_asserts;

#define TEST(name) static void name(void)

#define ASSERT_MSG_(cond, ...)                                                                     \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "  %s:%d: ", __FILE__, __LINE__);                                      \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fputc('\n', stderr);                                                                   \
            ag_test_failed_asserts++;                                                              \
            return;                                                                                \
        }                                                                                          \
    } while (0)

#define ASSERT(cond) ASSERT_MSG_((cond), "assertion failed: %s", #cond)
#define ASSERT_EQ(a, b)                                                                            \
    ASSERT_MSG_((intmax_t)(a) == (intmax_t)(b), "%s == %s: %jd != %jd", #a, #b, (intmax_t)(a),     \
                (intmax_t)(b))
#define ASSERT_STREQ(a, b)                                                                         \
    ASSERT_MSG_(strcmp((a), (b)) == 0, "%s == %s: \"%s\" != \"%s\"", #a, #b, (a), (b))
#define ASSERT_MEMEQ(a, alen, b)                                                                   \
    ASSERT_MSG_((alen) == strlen(b) && memcmp((a), (b), (alen)) == 0, "%s: \"%.*s\" != \"%s\"",    \
                #a, (int)(alen), (a), (b))

typedef struct {
    const char *name;
    void (*fn)(void);
} ag_test_case_t;

#define AG_TEST_ENTRY(fn) {#fn, fn},
#define AG_TESTS(...)                                                                              \
    int main(int argc, char **argv)                                                                \
    {                                                                                              \
        static const ag_test_case_t cases[] = {__VA_ARGS__};                                       \
        int passed = 0, failed = 0;                                                                \
        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {                            \
            if (argc > 1 && strcmp(argv[1], cases[i].name) != 0)                                   \
                continue;                                                                          \
            int before = ag_test_failed_asserts;                                                   \
            cases[i].fn();                                                                         \
            if (ag_test_failed_asserts == before) {                                                \
                passed++;                                                                          \
                printf("ok   %s\n", cases[i].name);                                                \
            } else {                                                                               \
                failed++;                                                                          \
                printf("FAIL %s\n", cases[i].name);                                                \
            }                                                                                      \
        }                                                                                          \
        printf("%d passed, %d failed\n", passed, failed);                                          \
        return failed ? 1 : 0;                                                                     \
    }

#endif
