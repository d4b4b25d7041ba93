/* SPDX-License-Identifier: MIT
 *
 * tasks.h: scheduled AI tasks ([[aigate.tasks]]): their schedule, and their
 * runs on a thread of their own (its own loop and upstream client, so a run
 * never shares a loop with client requests): gather the template's values
 * off the loop, call the upstream with retries, deliver every output, and
 * record the run in the usage log, the tail and the metrics.
 */
#ifndef AG_TASKS_TASKS_H
#define AG_TASKS_TASKS_H

#include <stdio.h>

#include "config/config.h"
#include "obs/obs.h"
#include "store/objstore.h"
#include "store/usage_log.h"
#include "util/buf.h"

typedef struct ag_tasks ag_tasks_t;

typedef struct ag_tasks_options {
    const ag_config_t *cfg;    /* borrowed for the tasks' lifetime */
    ag_usage_log_t *usage_log; /* NULL: no usage entries */
    ag_objstore_t *log_bucket; /* for {{usage:WINDOW}}; NULL: empty */
    ag_obs_t *obs;             /* NULL: no tail events or metrics */
    struct ag_rates *rates;    /* the upstream's rate view, shared with the gateway; NULL: none */
    int64_t (*now_ms)(void *ctx); /* wall clock; NULL: the system's */
    void *clock_ctx;
} ag_tasks_options_t;

/** Checks every task (cron expressions, templates, bindings) and prints
 *  problems as file:line:col to errs. @return 0 or AG_EBADCONFIG. */
int ag_tasks_check(const ag_config_t *cfg, FILE *errs);

/** Builds the tasks (after the same checks) and starts their thread.
 *  @return 0, AG_EBADCONFIG or a negative code. *out stays NULL when there is
 *  no task. */
int ag_tasks_start(const ag_tasks_options_t *opts, FILE *errs, ag_tasks_t **out);

/** Stops: no new run starts; runs in progress end (outputs are cancelled
 *  within about a second); joins the thread and frees. NULL is a no-op. */
void ag_tasks_stop(ag_tasks_t *t);

/** Called on the tasks' thread with the run record (JSON) when a run ends. */
typedef void (*ag_task_done_fn)(void *ctx, ag_str_t record);

/** Runs the task `name` now (any thread). @return 0, or AG_ENOTFOUND. */
int ag_tasks_run(ag_tasks_t *t, const char *name, ag_task_done_fn done, void *ctx);

/** Runs every task whose cron expression is `cron` (wrangler's
 *  /__scheduled?cron=...). @return how many runs started. */
int ag_tasks_run_cron(ag_tasks_t *t, const char *cron);

/** [{"name","cron","next":[...3],"last":{...}|null}] (aigate cron list). Any thread. */
int ag_tasks_list_json(ag_tasks_t *t, const ag_config_t *cfg, int64_t now_s, ag_buf_t *out);

#endif
