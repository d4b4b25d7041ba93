/* SPDX-License-Identifier: MIT
 *
 * obs.h: observability's entry point. Every finished request's record comes
 * here once, on its worker's thread, and goes to each observer: the access
 * log, the metrics, the minute series and the live tail. State is per worker;
 * the request path takes no lock and does no shared read-modify-write.
 */
#ifndef AG_OBS_OBS_H
#define AG_OBS_OBS_H

#include <stdbool.h>

#include <uv.h>

#include "obs/metrics.h"
#include "obs/record.h"
#include "obs/series.h"
#include "obs/tail.h"

typedef struct ag_obs ag_obs_t;

typedef struct ag_obs_options {
    unsigned nworkers;
    bool access_log;
    bool metrics; /* metrics, series and tail: only worth counting with an admin listener */
    const char *const *routes; /* route paths that label metrics */
    size_t nroutes;
    const char *script_name; /* the config's name, for tail events */
} ag_obs_options_t;

int ag_obs_new(const ag_obs_options_t *opts, ag_obs_t **out);

/** After every worker stopped. NULL is a no-op. */
void ag_obs_free(ag_obs_t *obs);

/** On worker `index`'s thread, before it serves: batched access-log lines are
 *  written just before its loop waits for I/O; its minute is folded into the
 *  series every second. */
int ag_obs_worker_start(ag_obs_t *obs, unsigned index, uv_loop_t *loop);

/** On the worker's thread once it stopped serving: writes what is batched. */
void ag_obs_worker_stop(ag_obs_t *obs, unsigned index);

/** One finished request, on its worker's thread. */
void ag_obs_request_done(ag_obs_t *obs, unsigned index, const ag_request_record_t *rec);

/** A scheduled run ended (any thread): tail event and aigate_task_runs_total. */
void ag_obs_task_run(ag_obs_t *obs, const ag_request_record_t *rec, const char *outcome);

/** A stream started (+1) or ended (-1) on worker `index`. */
void ag_obs_streams(ag_obs_t *obs, unsigned index, int delta);

/** Worker `index`'s upstream queue for `model` grew (+1) or shrank (-1). */
void ag_obs_queue(ag_obs_t *obs, unsigned index, const char *model, int delta);

ag_metrics_t *ag_obs_metrics(ag_obs_t *obs);
ag_series_t *ag_obs_series(ag_obs_t *obs);
ag_tail_t *ag_obs_tail(ag_obs_t *obs);
/** Epoch seconds the observers started (the process, for process_start_time_seconds). */
double ag_obs_start_time(const ag_obs_t *obs);

#endif
