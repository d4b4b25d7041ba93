/* SPDX-License-Identifier: MIT
 *
 * test_periodic.c: periodic jobs run off the loop thread, never overlap, and
 * stop safely while a run is in progress.
 */
#include "util/platform.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <string.h>

#include "cron/periodic.h"

#include "harness.h"

typedef struct job {
    atomic_int runs;
    atomic_int inside;  /* runs in progress */
    atomic_int overlap; /* a run started while another was in progress */
    atomic_bool release;
    uv_thread_t loop_thread;
    atomic_bool on_loop_thread;
} job_t;

static void work(void *ctx)
{
    job_t *j = ctx;
    if (atomic_fetch_add(&j->inside, 1) > 0)
        atomic_store(&j->overlap, 1);
    uv_thread_t self = uv_thread_self();
    if (uv_thread_equal(&self, &j->loop_thread))
        atomic_store(&j->on_loop_thread, true);
    /* Block until the test lets go: ticks keep coming meanwhile. */
    while (!atomic_load(&j->release))
        uv_sleep(1);
    atomic_fetch_sub(&j->inside, 1);
    atomic_fetch_add(&j->runs, 1);
}

typedef struct ctl {
    job_t *job;
    ag_periodic_t *p;
    uv_timer_t t;
    int ticks;
} ctl_t;

/* Drives the test from the loop: lets the blocked run go after several ticks,
 * then stops the job while a second run may be in progress. */
static void on_ctl(uv_timer_t *t)
{
    ctl_t *c = t->data;
    c->ticks++;
    if (c->ticks == 20)
        atomic_store(&c->job->release, true);
    if (c->ticks == 40 || (c->ticks > 20 && atomic_load(&c->job->runs) >= 2)) {
        ag_periodic_stop(c->p);
        uv_close((uv_handle_t *)t, NULL);
    }
}

TEST(runs_never_overlap_and_stop_waits_for_the_run)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    job_t j;
    memset(&j, 0, sizeof(j));
    j.loop_thread = uv_thread_self();
    ctl_t c = {.job = &j};
    ASSERT_EQ(ag_periodic_start(&loop, 2, work, &j, &c.p), 0);
    uv_timer_init(&loop, &c.t);
    c.t.data = &c;
    uv_timer_start(&c.t, on_ctl, 5, 5);
    uv_run(&loop, UV_RUN_DEFAULT); /* returns once the timers closed and runs finished */
    ASSERT(atomic_load(&j.runs) >= 1);
    ASSERT_EQ(atomic_load(&j.overlap), 0);
    ASSERT_EQ(atomic_load(&j.inside), 0);
    ASSERT(!atomic_load(&j.on_loop_thread));
    ASSERT_EQ(uv_loop_close(&loop), 0);
}

TEST(stop_before_any_run)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    job_t j;
    memset(&j, 0, sizeof(j));
    ag_periodic_t *p;
    ASSERT_EQ(ag_periodic_start(&loop, 60000, work, &j, &p), 0);
    ag_periodic_stop(p);
    ag_periodic_stop(NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    ASSERT_EQ(atomic_load(&j.runs), 0);
    ASSERT_EQ(uv_loop_close(&loop), 0);
}

AG_TESTS(AG_TEST_ENTRY(runs_never_overlap_and_stop_waits_for_the_run)
             AG_TEST_ENTRY(stop_before_any_run))
