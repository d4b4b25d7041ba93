/* SPDX-License-Identifier: MIT
 *
 * test_cron.c: the cron parser and next-run search (src/cron/cron.c), by hand:
 * what the croner oracle (tests/integration/m_cron_oracle.test.js) cannot
 * decide: L-n, a lone L in day of week, nW at month ends, LW, either-day
 * matching; every rejection with its offset; and the search's step count.
 */
#include "util/platform.h"

#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "cron/cron.h"
#include "util/errors.h"

#include "harness.h"

/* Epoch seconds of a UTC civil time, counted the slow way (independent of cron.c). */
static int64_t utc(int y, int mo, int d, int h, int mi)
{
    static const int mdays[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    int64_t days = 0;
    for (int yy = 1970; yy < y; yy++)
        days += (yy % 4 == 0 && (yy % 100 != 0 || yy % 400 == 0)) ? 366 : 365;
    for (int m = 1; m < mo; m++)
        days += mdays[m - 1] + (m == 2 && y % 4 == 0 && (y % 100 != 0 || y % 400 == 0));
    days += d - 1;
    return ((days * 24 + h) * 60 + mi) * 60;
}

#define D(y, mo, d) utc(y, mo, d, 0, 0)

static bool parse(const char *expr, ag_cron_t *c)
{
    ag_cron_error_t err = {NULL, 0};
    int rc = ag_cron_parse(expr, strlen(expr), c, &err);
    if (rc != 0)
        fprintf(stderr, "  \"%s\": rejected at %u: %s\n", expr, err.offset, err.message);
    return rc == 0;
}

/* The next n runs of expr after start are want[0..n-1] (-1: no further run). */
static bool runs(const char *expr, int64_t start, const int64_t *want, size_t n)
{
    ag_cron_t c;
    if (!parse(expr, &c))
        return false;
    int64_t t = start;
    for (size_t i = 0; i < n; i++) {
        int64_t got = ag_cron_next(&c, t);
        if (got != want[i]) {
            char g[32] = "-1", w[32] = "-1";
            ag_cron_format_time(got, g, sizeof(g));
            ag_cron_format_time(want[i], w, sizeof(w));
            fprintf(stderr, "  \"%s\": run %zu is %s, want %s\n", expr, i + 1, g, w);
            return false;
        }
        if (got == -1)
            return true;
        if (!ag_cron_matches(&c, got)) {
            fprintf(stderr, "  \"%s\": run %zu does not match\n", expr, i + 1);
            return false;
        }
        t = got;
    }
    return true;
}

#define RUNS(expr, start, ...)                                                                     \
    do {                                                                                           \
        const int64_t want_[] = {__VA_ARGS__};                                                     \
        ASSERT(runs((expr), (start), want_, AG_ARRAY_LEN(want_)));                                 \
    } while (0)

TEST(accepts)
{
    static const char *const ok[] = {
        "* * * * *",
        "  0 9 * * MON  ",
        "0\t9\t*\t*\tmon",
        "0 0 1,15,L jan-mar,OCT *",
        "0-30/15 8-18 1-7 * 2#1,6L",
        "5/20 */6 1/10 FEB/3 SUN/2",
        "0 0 LW,L-3,15W,L * 1L,SAT#5,L,1-7/3",
        "0 0 l * 6l",
        "0 0 15w * *",
        "0 0 L-0 * *",
        "0 0 L-30 * *",
        "*/60 */24 */31 */12 */7",
        "05 007 01 01 01",
        "59 23 31 12 7",
        "0 0 1-1 1-1 1-1",
        "0 0 * jan-dec sun-sat",
    };
    for (size_t i = 0; i < AG_ARRAY_LEN(ok); i++) {
        ag_cron_t c;
        ASSERT(parse(ok[i], &c));
    }
    ASSERT_EQ(sizeof(ag_cron_t), 40); /* as cron.h says: a small value */
}

TEST(rejections)
{
    static const struct {
        const char *expr;
        unsigned offset;
        const char *message; /* a part of it */
    } bad[] = {
        {"", 0, "empty expression"},
        {"   ", 3, "empty expression"},
        {"*", 1, "only one field"},
        {"* * * *", 7, "only four fields"},
        {"0 0 0 * * *", 10, "a sixth field"},
        {"0 0 0 * * * 2024", 10, "a sixth field"},
        {"0 0 1 * * garbage", 10, "a sixth field"},
        {"@daily", 0, "macros"},
        {"  @hourly", 2, "macros"},
        {"0 0 ? * *", 4, "'?'"},
        {"0 0 * * ?", 8, "'?'"},
        {"0 0 1 * MON?", 11, "'?'"},
        {"60 * * * *", 0, "minute must be 0-59"},
        {"0 24 * * *", 2, "hour must be 0-23"},
        {"0 0 32 * *", 4, "day of month must be 1-31"},
        {"0 0 0 * *", 4, "day of month must be 1-31"},
        {"0 0 * 13 *", 6, "month must be 1-12"},
        {"0 0 * 0 *", 6, "month must be 1-12"},
        {"0 0 * * 8", 8, "day of week must be 1-7"},
        {"0 0 * * 0", 8, "day of week 0 is not valid"},
        {"0 0 * * 0-5", 8, "day of week 0 is not valid"},
        {"0 0 * * 1,0", 10, "day of week 0 is not valid"},
        {"0 0 * * 0L", 8, "day of week 0 is not valid"},
        {"0 0 * * 0#1", 8, "day of week 0 is not valid"},
        {"99999999999999999999 * * * *", 0, "minute must be 0-59"},
        {"5-1 * * * *", 0, "reversed range"},
        {"0 0 * * FRI-MON", 8, "reversed range"},
        {"0 0 * DEC-JAN *", 6, "reversed range"},
        {"0 0 * * 7-1", 8, "reversed range"},
        {"*/0 * * * *", 2, "step must be at least 1"},
        {"0 0 1-5/0 * *", 8, "step must be at least 1"},
        {"*/61 * * * *", 2, "step is larger"},
        {"0 */25 * * *", 4, "step is larger"},
        {"0 0 * * 1/8", 10, "step is larger"},
        {"*/ * * * *", 2, "expected a step"},
        {"*/x * * * *", 2, "unexpected character"},
        {"1,,2 * * * *", 2, "empty list item"},
        {",1 * * * *", 0, "empty list item"},
        {"1, * * * *", 2, "empty list item"},
        {"0 0 * * MON,", 12, "empty list item"},
        {"-1 * * * *", 0, "unexpected character"},
        {"1- * * * *", 2, "expected a number"},
        {"1-2-3 * * * *", 3, "unexpected character"},
        {"** * * * *", 1, "unexpected character"},
        {"a * * * *", 0, "minute takes numbers only"},
        {"L * * * *", 0, "minute takes numbers only"},
        {"0 0 W * *", 4, "day of month takes 1-31"},
        {"0 0 * * MONDAY", 11, "unexpected character"},
        {"0 0 * FOO *", 6, "unknown month name"},
        {"0 0 * JA *", 6, "unknown month name"},
        {"0 0 * * FOO", 8, "unknown day name"},
        {"0 0 * JAN#2 *", 9, "unexpected character"},
        {"0 0 * JANL *", 9, "unexpected character"},
        {"0 0 L-31 * *", 6, "L-n takes n from 0 to 30"},
        {"0 0 L- * *", 6, "expected a number after L-"},
        {"0 0 L/2 * *", 5, "unexpected character"},
        {"0 0 L-2/2 * *", 7, "unexpected character"},
        {"0 0 LW3 * *", 6, "unexpected character"},
        {"0 0 1-5W * *", 7, "W follows a single day"},
        {"0 0 */2W * *", 7, "W follows a single day"},
        {"0 0 32W * *", 4, "day of month must be 1-31"},
        {"0 0 0W * *", 4, "day of month must be 1-31"},
        {"0 0 15WW * *", 7, "unexpected character"},
        {"0 0 * * 2#6", 10, "x#n takes n from 1 to 5"},
        {"0 0 * * 2#0", 10, "x#n takes n from 1 to 5"},
        {"0 0 * * 2#", 10, "expected a number after #"},
        {"0 0 * * 2#1#2", 11, "unexpected character"},
        {"0 0 * * 1-3L", 11, "L and # follow a single day"},
        {"0 0 * * */2#1", 11, "L and # follow a single day"},
        {"0 0 * * LW", 9, "unexpected character"},
        {"0 0 * * L2", 9, "unexpected character"},
        {"0 0 * * 6LL", 10, "unexpected character"},
        {"0\n0 * * * *", 1, "unexpected character"},
        {"0 0 * * *\n", 9, "unexpected character"},
        {"0 0 1W * 5W", 10, "unexpected character"},
        /* croner's extensions, not Cloudflare's */
        {"/5 * * * *", 0, "unexpected character"},
        {"0 0 * * 1#L", 10, "unexpected character"},
        {"0 0 1 * +MON", 8, "unexpected character"},
        {"0 0 * * 1-3#2", 11, "L and # follow a single day"},
    };
    for (size_t i = 0; i < AG_ARRAY_LEN(bad); i++) {
        ag_cron_t c;
        memset(&c, 0xa5, sizeof(c));
        ag_cron_t before = c;
        ag_cron_error_t err = {NULL, 9999};
        int rc = ag_cron_parse(bad[i].expr, strlen(bad[i].expr), &c, &err);
        ASSERT_MSG_(rc == AG_EINVALID, "\"%s\" accepted (rc %d)", bad[i].expr, rc);
        ASSERT_MSG_(err.message != NULL && strstr(err.message, bad[i].message) != NULL,
                    "\"%s\": message \"%s\", want \"%s\"", bad[i].expr,
                    err.message ? err.message : "(null)", bad[i].message);
        ASSERT_MSG_(err.offset == bad[i].offset, "\"%s\" (%s): offset %u, want %u", bad[i].expr,
                    err.message, err.offset, bad[i].offset);
        ASSERT(memcmp(&c, &before, sizeof(c)) == 0); /* *out untouched */
    }
    /* The length bounds the expression: what follows is not read. */
    ag_cron_t c;
    ag_cron_error_t err;
    ASSERT_EQ(ag_cron_parse("0 0 * * * *", 9, &c, &err), 0);
    ASSERT_EQ(ag_cron_parse("0 0 * * 1", 8, &c, &err), AG_EINVALID);
    ASSERT_EQ(err.offset, 8);
    ASSERT(ag_cron_parse("0 0 ? * *", 9, &c, NULL) == AG_EINVALID); /* err may be NULL */
}

/* L-n: n days before the last day; a month too short for it has no such day. */
TEST(last_day_offset)
{
    RUNS("0 0 L * *", D(2024, 1, 1), D(2024, 1, 31), D(2024, 2, 29), D(2024, 3, 31),
         D(2024, 4, 30));
    RUNS("0 0 L-0 * *", D(2023, 1, 31), D(2023, 2, 28), D(2023, 3, 31));
    RUNS("0 0 L-3 * *", D(2024, 1, 1), D(2024, 1, 28), D(2024, 2, 26), D(2024, 3, 28),
         D(2024, 4, 27));
    RUNS("0 0 L-3 * *", D(2023, 2, 1), D(2023, 2, 25), D(2023, 3, 28));
    RUNS("0 0 L-30 * *", D(2024, 1, 1), D(2024, 3, 1), D(2024, 5, 1), D(2024, 7, 1), D(2024, 8, 1),
         D(2024, 10, 1), D(2024, 12, 1), D(2025, 1, 1));
    /* Feb 1 is L-28 only in a leap year. */
    RUNS("0 0 L-28 2 *", D(2024, 3, 1), D(2028, 2, 1), D(2032, 2, 1));
    RUNS("0 0 L-1,L * *", D(2024, 2, 1), D(2024, 2, 28), D(2024, 2, 29), D(2024, 3, 30),
         D(2024, 3, 31));
    RUNS("30 12 L-1 2 *", D(2025, 1, 1), utc(2025, 2, 27, 12, 30), utc(2026, 2, 27, 12, 30),
         utc(2027, 2, 27, 12, 30), utc(2028, 2, 28, 12, 30));
}

/* Quartz: a lone L in day of week is 7, Saturday (every Saturday, not the last one). */
TEST(lone_l_is_saturday)
{
    RUNS("0 0 * * L", D(2024, 1, 1), D(2024, 1, 6), D(2024, 1, 13), D(2024, 1, 20), D(2024, 1, 27),
         D(2024, 2, 3));
    RUNS("0 0 * * l,1", D(2024, 1, 1), D(2024, 1, 6), D(2024, 1, 7), D(2024, 1, 13));
    /* 7L is the last Saturday; L7 is no form at all (rejections). */
    RUNS("0 0 * * 7L", D(2024, 1, 1), D(2024, 1, 27), D(2024, 2, 24), D(2024, 3, 30));
}

/* nW: Saturday -> Friday before, Sunday -> Monday after, never leaving the month. */
TEST(nearest_weekday)
{
    /* 2024-06-01 is a Saturday: Monday the 3rd, not Friday May 31. 2025-06-01 is a
     * Sunday: Monday the 2nd. 2026-06-01 is a Monday. */
    RUNS("0 0 1W 6 *", D(2024, 1, 1), D(2024, 6, 3), D(2025, 6, 2), D(2026, 6, 1));
    /* 2024-06-15 is a Saturday: Friday the 14th; 2024-09-15 a Sunday: Monday the 16th. */
    RUNS("0 0 15W 6,9 *", D(2024, 1, 1), D(2024, 6, 14), D(2024, 9, 16), D(2025, 6, 16),
         D(2025, 9, 15));
    /* The last day on a Sunday goes back to Friday (2024-06-30 -> 28, 2024-03-31 -> 29);
     * on a Saturday to Friday (2024-08-31 -> 30). */
    RUNS("0 0 30W 6 *", D(2024, 1, 1), D(2024, 6, 28), D(2025, 6, 30));
    RUNS("0 0 31W 3,8 *", D(2024, 1, 1), D(2024, 3, 29), D(2024, 8, 30), D(2025, 3, 31),
         D(2025, 8, 29));
    /* A month without day n has no weekday nearest it (April, June: no 31st). */
    RUNS("0 0 31W 4-7 *", D(2024, 4, 1), D(2024, 5, 31), D(2024, 7, 31), D(2025, 5, 30));
    RUNS("0 0 29W 2 *", D(2025, 1, 1), D(2028, 2, 29), D(2032, 2, 27));
    /* A weekday is its own nearest; the moved day is not also day n. */
    RUNS("0 0 15W * *", D(2024, 6, 1), D(2024, 6, 14), D(2024, 7, 15), D(2024, 8, 15));
    /* The same day picked by several items counts once: in 2024 1W, 2W (a Sunday) and 3W
     * are all Monday the 3rd. */
    RUNS("0 0 1W,2W,3W 6 *", D(2024, 1, 1), D(2024, 6, 3), D(2025, 6, 2), D(2025, 6, 3),
         D(2026, 6, 1), D(2026, 6, 2));
}

/* LW: the last Monday-Friday of the month. */
TEST(last_weekday)
{
    RUNS("59 23 LW * *", D(2024, 2, 1), utc(2024, 2, 29, 23, 59), utc(2024, 3, 29, 23, 59),
         utc(2024, 4, 30, 23, 59), utc(2024, 5, 31, 23, 59), utc(2024, 6, 28, 23, 59),
         utc(2024, 7, 31, 23, 59), utc(2024, 8, 30, 23, 59));
    /* LW as one item of a list (croner rejects this; Cloudflare's syntax does not). */
    RUNS("0 0 1,LW * *", D(2024, 3, 1), D(2024, 3, 29), D(2024, 4, 1), D(2024, 4, 30),
         D(2024, 5, 1));
    RUNS("0 0 LW 11 *", D(2024, 1, 1), D(2024, 11, 29), D(2025, 11, 28));
    RUNS("0 0 LW 2 *", D(2025, 1, 1), D(2025, 2, 28), D(2026, 2, 27), D(2027, 2, 26),
         D(2028, 2, 29));
}

TEST(nth_and_last_weekday)
{
    /* 2#1: the first Monday; 6#3: the third Friday; 1L: the last Sunday. */
    RUNS("0 0 * * 2#1", D(2024, 1, 1), D(2024, 2, 5), D(2024, 3, 4), D(2024, 4, 1));
    RUNS("0 0 * * FRI#3", D(2024, 1, 1), D(2024, 1, 19), D(2024, 2, 16), D(2024, 3, 15));
    RUNS("0 0 * * 1L", D(2024, 1, 1), D(2024, 1, 28), D(2024, 2, 25), D(2024, 3, 31));
    /* A fifth Thursday in February only in a leap year whose Feb 1 is a Thursday. */
    RUNS("0 0 * 2 5#5", D(2024, 1, 1), D(2024, 2, 29), D(2052, 2, 29), D(2080, 2, 29),
         D(2120, 2, 29));
}

/* Both day fields restricted: a day matches if either does. */
TEST(either_day)
{
    /* 2024-01-01 is a Monday. */
    RUNS("0 0 1 * MON", D(2024, 1, 1), D(2024, 1, 8), D(2024, 1, 15), D(2024, 1, 22),
         D(2024, 1, 29), D(2024, 2, 1), D(2024, 2, 5));
    /* Only a bare * leaves a field out: * / 1 and 1-31 restrict (to every day). */
    RUNS("0 0 */1 * MON", D(2024, 1, 1), D(2024, 1, 2), D(2024, 1, 3));
    RUNS("0 0 1-31 * MON", D(2024, 1, 1), D(2024, 1, 2), D(2024, 1, 3));
    RUNS("0 0 13 * */7", D(2024, 1, 1), D(2024, 1, 7), D(2024, 1, 13), D(2024, 1, 14));
    RUNS("0 0 13 * 1-7", D(2024, 1, 1), D(2024, 1, 2), D(2024, 1, 3));
    /* One bare *: only the other field. */
    RUNS("0 0 1 * *", D(2024, 1, 1), D(2024, 2, 1), D(2024, 3, 1));
    RUNS("0 0 * * 2", D(2024, 1, 1), D(2024, 1, 8), D(2024, 1, 15));
    /* Feb 30 never comes, but Mondays of February do. */
    RUNS("0 0 30 2 MON", D(2024, 1, 1), D(2024, 2, 5), D(2024, 2, 12), D(2024, 2, 19),
         D(2024, 2, 26), D(2025, 2, 3));
    /* The L/W/# forms on both sides. */
    RUNS("0 0 L * 2#1", D(2024, 1, 1), D(2024, 1, 31), D(2024, 2, 5), D(2024, 2, 29), D(2024, 3, 4),
         D(2024, 3, 31));
    RUNS("0 0 15W * 7L", D(2024, 6, 1), D(2024, 6, 14), D(2024, 6, 29), D(2024, 7, 15),
         D(2024, 7, 27));
    RUNS("0 0 LW * L", D(2024, 8, 24), D(2024, 8, 30), D(2024, 8, 31), D(2024, 9, 7));
}

TEST(leap_days_and_year_ends)
{
    RUNS("0 0 29 2 *", D(2024, 2, 29), D(2028, 2, 29), D(2032, 2, 29));
    RUNS("0 0 29 2 *", utc(2024, 2, 28, 23, 59), D(2024, 2, 29));
    /* 2100 is not a leap year, 2000 was. */
    RUNS("0 0 29 2 *", D(2096, 3, 1), D(2104, 2, 29));
    RUNS("0 0 29 2 *", D(1997, 1, 1), D(2000, 2, 29), D(2004, 2, 29));
    RUNS("0 0 L 2 *", D(2099, 12, 31), D(2100, 2, 28), D(2101, 2, 28), D(2102, 2, 28),
         D(2103, 2, 28), D(2104, 2, 29));
    RUNS("* * * * *", utc(2024, 12, 31, 23, 59), D(2025, 1, 1), utc(2025, 1, 1, 0, 1));
    RUNS("59 23 31 12 *", utc(2024, 12, 31, 23, 59), utc(2025, 12, 31, 23, 59));
    RUNS("59 23 31 12 *", utc(2024, 12, 31, 23, 58), utc(2024, 12, 31, 23, 59));
    RUNS("0 0 1 1 *", utc(2024, 12, 31, 23, 59) + 59, D(2025, 1, 1), D(2026, 1, 1));
}

/* Strictly after: a matching minute is skipped, seconds round up to the next minute. */
TEST(strictly_after)
{
    RUNS("*/15 * * * *", utc(2024, 5, 5, 10, 15), utc(2024, 5, 5, 10, 30));
    RUNS("*/15 * * * *", utc(2024, 5, 5, 10, 14) + 59, utc(2024, 5, 5, 10, 15));
    RUNS("*/15 * * * *", utc(2024, 5, 5, 10, 15) + 1, utc(2024, 5, 5, 10, 30));
    RUNS("5/20 * * * *", utc(2024, 5, 5, 10, 0), utc(2024, 5, 5, 10, 5), utc(2024, 5, 5, 10, 25),
         utc(2024, 5, 5, 10, 45), utc(2024, 5, 5, 11, 5));
    /* Before 1970 too. */
    RUNS("0 12 * * *", -86400 * 365, -86400 * 365 + 12 * 3600);
}

TEST(never_and_bounds)
{
    RUNS("0 0 30 2 *", D(2024, 1, 1), -1);
    RUNS("0 0 31 2,4,6,9,11 *", D(2024, 1, 1), -1);
    RUNS("0 0 L-29 2 *", D(2024, 1, 1), -1);
    /* The last minute there is, and nothing after it. */
    RUNS("59 23 31 12 *", utc(9999, 12, 31, 23, 58), AG_CRON_MAX_S - 59, -1);
    RUNS("* * * * *", AG_CRON_MAX_S, -1);
    RUNS("* * * * *", AG_CRON_MAX_S + 1, -1);
    RUNS("* * * * *", AG_CRON_MIN_S - 1, -1);
    RUNS("* * * * *", AG_CRON_MIN_S, AG_CRON_MIN_S + 60);
    RUNS("* * * * *", INT64_MAX, -1);
    RUNS("* * * * *", INT64_MIN, -1);
    ag_cron_t c;
    ASSERT(parse("* * * * *", &c));
    ASSERT(ag_cron_matches(&c, AG_CRON_MIN_S));
    ASSERT(ag_cron_matches(&c, AG_CRON_MAX_S));
    ASSERT(!ag_cron_matches(&c, AG_CRON_MAX_S + 1));
    ASSERT(!ag_cron_matches(&c, AG_CRON_MIN_S - 1));
}

TEST(matches)
{
    ag_cron_t c;
    ASSERT(parse("30 9 * * MON-FRI", &c));
    ASSERT(ag_cron_matches(&c, utc(2024, 1, 1, 9, 30)));      /* a Monday */
    ASSERT(ag_cron_matches(&c, utc(2024, 1, 1, 9, 30) + 59)); /* seconds ignored */
    ASSERT(!ag_cron_matches(&c, utc(2024, 1, 1, 9, 31)));
    ASSERT(!ag_cron_matches(&c, utc(2024, 1, 6, 9, 30))); /* a Saturday */
    ASSERT(parse("0 0 LW * *", &c));
    ASSERT(ag_cron_matches(&c, D(2024, 3, 29)));
    ASSERT(!ag_cron_matches(&c, D(2024, 3, 31)));
}

TEST(format_time)
{
    char buf[32];
    ASSERT_EQ(ag_cron_format_time(utc(2026, 12, 7, 9, 0), buf, sizeof(buf)), 20);
    ASSERT_STREQ(buf, "2026-12-07T09:00:00Z");
    ASSERT_EQ(ag_cron_format_time(0, buf, sizeof(buf)), 20);
    ASSERT_STREQ(buf, "1970-01-01T00:00:00Z");
    ASSERT_EQ(ag_cron_format_time(-1, buf, sizeof(buf)), 20);
    ASSERT_STREQ(buf, "1969-12-31T23:59:59Z");
    ASSERT_EQ(ag_cron_format_time(AG_CRON_MAX_S, buf, sizeof(buf)), 20);
    ASSERT_STREQ(buf, "9999-12-31T23:59:59Z");
    ASSERT_EQ(ag_cron_format_time(AG_CRON_MIN_S, buf, sizeof(buf)), 20);
    ASSERT_STREQ(buf, "0001-01-01T00:00:00Z");
    ASSERT_EQ(ag_cron_format_time(AG_CRON_MAX_S + 1, buf, sizeof(buf)), -1);
    ASSERT_EQ(ag_cron_format_time(0, buf, 20), -1);
}

/* The search jumps field by field: pin its step counts (one step is one jump of
 * month, day, hour or minute), so a change that scans minute by minute fails. */
static unsigned steps_of(const char *expr, int64_t after, int64_t *next)
{
    ag_cron_t c;
    unsigned steps = 0;
    if (!parse(expr, &c))
        return 0;
    *next = ag__cron_next_counted(&c, after, &steps);
    return steps;
}

TEST(step_counts)
{
    int64_t next;
    /* Yearly from mid-year: jump to January, then day, hour and minute hold. */
    ASSERT_EQ(steps_of("0 0 1 1 *", utc(2024, 6, 15, 10, 17), &next), 2);
    ASSERT_EQ(next, D(2025, 1, 1));
    /* Yearly from its own minute: minute, hour, day, month overflow, then January. */
    ASSERT_EQ(steps_of("0 0 1 1 *", D(2024, 1, 1), &next), 5);
    ASSERT_EQ(next, D(2025, 1, 1));
    ASSERT_EQ(steps_of("59 23 31 12 *", utc(2025, 1, 1, 0, 0), &next), 2);
    ASSERT_EQ(next, utc(2025, 12, 31, 23, 59));
    ASSERT_EQ(steps_of("* * * * *", D(2024, 1, 1), &next), 1);
    /* Feb 29 across the skipped leap day of 2100: two steps a year. */
    ASSERT_EQ(steps_of("0 0 29 2 *", D(2096, 3, 1), &next), 16);
    ASSERT_EQ(next, D(2104, 2, 29));
    /* Never: bounded by the 400-year cycle, at most two steps per month. */
    unsigned never = steps_of("0 0 31 2,4,6,9,11 *", D(2024, 1, 1), &next);
    ASSERT_EQ(next, -1);
    ASSERT(never > 400 && never <= 401 * 24);
    never = steps_of("0 0 30 2 *", D(2024, 1, 1), &next);
    ASSERT_EQ(next, -1);
    ASSERT(never > 400 && never <= 401 * 3);
}

AG_TESTS(AG_TEST_ENTRY(accepts) AG_TEST_ENTRY(rejections) AG_TEST_ENTRY(last_day_offset)
             AG_TEST_ENTRY(lone_l_is_saturday) AG_TEST_ENTRY(nearest_weekday)
                 AG_TEST_ENTRY(last_weekday) AG_TEST_ENTRY(nth_and_last_weekday)
                     AG_TEST_ENTRY(either_day) AG_TEST_ENTRY(leap_days_and_year_ends)
                         AG_TEST_ENTRY(strictly_after) AG_TEST_ENTRY(never_and_bounds)
                             AG_TEST_ENTRY(matches) AG_TEST_ENTRY(format_time)
                                 AG_TEST_ENTRY(step_counts))
