/* SPDX-License-Identifier: MIT
 *
 * test_schedule.c: when tasks are due, driven by an injected clock: runs at
 * the right instants, no overlap, clock jumps forward and back, a reload.
 */
#include "util/platform.h"

#include <string.h>

#include "cron/schedule.h"

#include "harness.h"

/* 2026-12-07T08:59:30Z, a Monday. */
#define MONDAY_0859_30 1796633970LL

static ag_schedule_entry_t entry(const char *expr)
{
    ag_schedule_entry_t e;
    memset(&e, 0, sizeof(e));
    ag_cron_error_t err;
    AG_ASSERT(ag_cron_parse(expr, strlen(expr), &e.cron, &err) == 0);
    return e;
}

TEST(runs_happen_at_their_instants)
{
    ag_schedule_entry_t es[] = {entry("0 9 * * MON"), entry("*/15 * * * *")};
    ag_schedule_t s = {es, 2, 0};
    ag_schedule_start(&s, MONDAY_0859_30);
    ASSERT_EQ(es[0].next_s, MONDAY_0859_30 + 30);
    ASSERT_EQ(es[1].next_s, MONDAY_0859_30 + 30);
    ASSERT_EQ(ag_schedule_next(&s), MONDAY_0859_30 + 30);
    ASSERT_EQ(ag_schedule_sleep_ms(&s, MONDAY_0859_30 * 1000), 30000);
    size_t due[4];
    int64_t at[4];
    ASSERT_EQ(ag_schedule_due(&s, MONDAY_0859_30 + 29, due, at, 4), 0u); /* not yet */
    ASSERT_EQ(ag_schedule_due(&s, MONDAY_0859_30 + 30, due, at, 4), 2u);
    ASSERT_EQ(at[0], MONDAY_0859_30 + 30);
    ASSERT_EQ(es[0].next_s, MONDAY_0859_30 + 30 + 7 * 86400); /* next Monday */
    ASSERT_EQ(es[1].next_s, MONDAY_0859_30 + 30 + 900);
    ASSERT_EQ(es[0].skipped + es[1].skipped, 0u);
    /* The sleep is capped at a minute, so a moved wall clock is seen. */
    ASSERT_EQ(ag_schedule_sleep_ms(&s, (MONDAY_0859_30 + 30) * 1000), 60000);
}

TEST(a_run_still_going_is_not_started_again)
{
    ag_schedule_entry_t es[] = {entry("* * * * *")};
    ag_schedule_t s = {es, 1, 0};
    int64_t t0 = MONDAY_0859_30 + 30;
    ag_schedule_start(&s, t0 - 1);
    size_t due[2];
    int64_t at[2];
    ASSERT_EQ(ag_schedule_due(&s, t0, due, at, 2), 1u);
    ASSERT(es[0].running);
    ASSERT_EQ(ag_schedule_due(&s, t0 + 60, due, at, 2), 0u); /* still running: skipped */
    ASSERT_EQ(es[0].skipped, 1u);
    ag_schedule_done(&s, 0);
    ASSERT_EQ(ag_schedule_due(&s, t0 + 120, due, at, 2), 1u);
    ASSERT_EQ(at[0], t0 + 120);
    ASSERT_EQ(es[0].runs, 2u);
}

TEST(a_clock_that_jumps_forward_runs_once_and_counts_the_rest)
{
    ag_schedule_entry_t es[] = {entry("*/5 * * * *")};
    ag_schedule_t s = {es, 1, 0};
    int64_t t0 = MONDAY_0859_30 + 30; /* 09:00 */
    ag_schedule_start(&s, t0 - 10);
    size_t due[2];
    int64_t at[2];
    /* An NTP step of an hour: 09:00 ... 10:00 were due; one run, at 10:00. */
    ASSERT_EQ(ag_schedule_due(&s, t0 + 3600, due, at, 2), 1u);
    ASSERT_EQ(at[0], t0 + 3600);
    ASSERT_EQ(es[0].skipped, 12u);
    ASSERT_EQ(es[0].next_s, t0 + 3600 + 300);
}

TEST(a_clock_that_jumps_back_reruns_nothing)
{
    ag_schedule_entry_t es[] = {entry("0 * * * *")};
    ag_schedule_t s = {es, 1, 0};
    int64_t t0 = MONDAY_0859_30 + 30; /* 09:00 */
    ag_schedule_start(&s, t0 - 10);
    size_t due[2];
    int64_t at[2];
    ASSERT_EQ(ag_schedule_due(&s, t0, due, at, 2), 1u);
    ag_schedule_done(&s, 0);
    /* Back by 30 minutes: 09:00 must not run a second time; 10:00 still will. */
    ASSERT_EQ(ag_schedule_due(&s, t0 - 1800, due, at, 2), 0u);
    ASSERT_EQ(ag_schedule_due(&s, t0 + 1, due, at, 2), 0u);
    ASSERT_EQ(ag_schedule_due(&s, t0 + 3600, due, at, 2), 1u);
    ASSERT_EQ(es[0].runs, 2u);
    ASSERT_EQ(es[0].skipped, 0u);
}

TEST(a_reload_starts_the_new_schedule_from_now)
{
    ag_schedule_entry_t old[] = {entry("0 9 * * MON")};
    ag_schedule_t s = {old, 1, 0};
    ag_schedule_start(&s, MONDAY_0859_30);
    ag_schedule_entry_t fresh[] = {entry("30 9 * * *")};
    ag_schedule_t s2 = {fresh, 1, 0};
    ag_schedule_start(&s2, MONDAY_0859_30 + 10);
    ASSERT_EQ(ag_schedule_next(&s2), MONDAY_0859_30 + 30 + 1800);
    size_t due[2];
    int64_t at[2];
    ASSERT_EQ(ag_schedule_due(&s2, MONDAY_0859_30 + 30, due, at, 2), 0u); /* 09:00 is gone */
}

TEST(never_is_never_due)
{
    ag_schedule_entry_t es[] = {entry("0 0 31 2 *")};
    ag_schedule_t s = {es, 1, 0};
    ag_schedule_start(&s, MONDAY_0859_30);
    ASSERT_EQ(ag_schedule_next(&s), -1);
    size_t due[1];
    int64_t at[1];
    ASSERT_EQ(ag_schedule_due(&s, MONDAY_0859_30 + 86400 * 400, due, at, 1), 0u);
    ASSERT_EQ(ag_schedule_sleep_ms(&s, MONDAY_0859_30 * 1000), 60000);
}

AG_TESTS(AG_TEST_ENTRY(runs_happen_at_their_instants)
             AG_TEST_ENTRY(a_run_still_going_is_not_started_again)
                 AG_TEST_ENTRY(a_clock_that_jumps_forward_runs_once_and_counts_the_rest)
                     AG_TEST_ENTRY(a_clock_that_jumps_back_reruns_nothing)
                         AG_TEST_ENTRY(a_reload_starts_the_new_schedule_from_now)
                             AG_TEST_ENTRY(never_is_never_due))
