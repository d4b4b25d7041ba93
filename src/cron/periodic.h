/* SPDX-License-Identifier: MIT
 *
 * periodic.h: a job that runs every N milliseconds on a loop's thread pool,
 * never two runs at once, with one teardown that is safe while a run is in
 * progress (the cache sweep uses it; scheduled tasks will).
 */
#ifndef AG_CRON_PERIODIC_H
#define AG_CRON_PERIODIC_H

#include <uv.h>

typedef struct ag_periodic ag_periodic_t;

/** Starts calling work(ctx) off the loop thread every interval_ms (the first
 *  after one interval). A tick that finds the previous run still going is
 *  skipped. The timer does not keep the loop alive. Call on the loop's thread.
 *  @return 0, or a negative code. */
int ag_periodic_start(uv_loop_t *loop, unsigned interval_ms, void (*work)(void *ctx), void *ctx,
                      ag_periodic_t **out);

/** Starts one run now unless one is going. @return 1 if started, 0 if one was running. */
int ag_periodic_run_now(ag_periodic_t *p);

/** Stops on the loop's thread: no run starts after it; a run in progress
 *  finishes (ctx must live until then); the memory goes once both are done.
 *  NULL is a no-op. */
void ag_periodic_stop(ag_periodic_t *p);

/** As ag_periodic_stop(), then then(ctx) once no run can touch ctx any more
 *  (for a ctx that the job owns). */
void ag_periodic_stop_then(ag_periodic_t *p, void (*then)(void *ctx));

#endif
