/* SPDX-License-Identifier: MIT
 *
 * periodic.c: the timer, the thread-pool run, and the teardown that waits for
 * whichever of the two finishes last.
 */
#include "util/platform.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>

#include "cron/periodic.h"

struct ag_periodic {
    uv_timer_t timer;
    uv_work_t run;
    void (*work)(void *ctx);
    void *ctx;
    bool running;            /* a run is on the thread pool */
    bool stopping;           /* ag_periodic_stop() was called */
    bool timer_closed;       /* the timer handle's close completed */
    void (*then)(void *ctx); /* ag_periodic_stop_then(): called as the memory goes */
};

static void maybe_free(ag_periodic_t *p)
{
    if (p->stopping && p->timer_closed && !p->running) {
        if (p->then)
            p->then(p->ctx);
        free(p);
    }
}

static void run_work(uv_work_t *w)
{
    ag_periodic_t *p = w->data;
    p->work(p->ctx);
}

static void run_done(uv_work_t *w, int status)
{
    ag_periodic_t *p = w->data;
    AG_UNUSED(status);
    p->running = false;
    maybe_free(p);
}

int ag_periodic_run_now(ag_periodic_t *p)
{
    if (p->running || p->stopping)
        return 0;
    p->running = true;
    p->run.data = p;
    if (uv_queue_work(p->timer.loop, &p->run, run_work, run_done) < 0) {
        p->running = false;
        return 0;
    }
    return 1;
}

static void on_tick(uv_timer_t *t)
{
    ag_periodic_run_now(t->data);
}

int ag_periodic_start(uv_loop_t *loop, unsigned interval_ms, void (*work)(void *ctx), void *ctx,
                      ag_periodic_t **out)
{
    ag_periodic_t *p = calloc(1, sizeof(*p));
    if (!p)
        return -ENOMEM;
    p->work = work;
    p->ctx = ctx;
    int rc = uv_timer_init(loop, &p->timer);
    if (rc < 0) {
        free(p);
        return rc;
    }
    p->timer.data = p;
    uv_timer_start(&p->timer, on_tick, interval_ms, interval_ms);
    uv_unref((uv_handle_t *)&p->timer);
    *out = p;
    return 0;
}

static void on_timer_closed(uv_handle_t *h)
{
    ag_periodic_t *p = h->data;
    p->timer_closed = true;
    maybe_free(p);
}

void ag_periodic_stop(ag_periodic_t *p)
{
    if (!p || p->stopping)
        return;
    p->stopping = true;
    uv_close((uv_handle_t *)&p->timer, on_timer_closed);
}

void ag_periodic_stop_then(ag_periodic_t *p, void (*then)(void *ctx))
{
    if (!p || p->stopping)
        return;
    p->then = then;
    ag_periodic_stop(p);
}
