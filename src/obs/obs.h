/* SPDX-License-Identifier: MIT
 *
 * obs.h: observability's entry point. Every finished request's record comes
 * here once, on its worker's thread, and goes to each subscriber (the access
 * log; metrics and tail later). State is per worker: no lock, no shared atomic.
 */
#ifndef AG_OBS_OBS_H
#define AG_OBS_OBS_H

#include <stdbool.h>

#include <uv.h>

#include "obs/record.h"

typedef struct ag_obs ag_obs_t;

typedef struct ag_obs_options {
    unsigned nworkers;
    bool access_log;
} ag_obs_options_t;

int ag_obs_new(const ag_obs_options_t *opts, ag_obs_t **out);

/** After every worker stopped. NULL is a no-op. */
void ag_obs_free(ag_obs_t *obs);

/** On worker `index`'s thread, before it serves: batches are written just
 *  before its loop waits for I/O, so a burst costs one write. */
int ag_obs_worker_start(ag_obs_t *obs, unsigned index, uv_loop_t *loop);

/** On the worker's thread once it stopped serving: writes what is batched. */
void ag_obs_worker_stop(ag_obs_t *obs, unsigned index);

/** One finished request, on its worker's thread. */
void ag_obs_request_done(ag_obs_t *obs, unsigned index, const ag_request_record_t *rec);

#endif
