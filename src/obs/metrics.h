/* SPDX-License-Identifier: MIT
 *
 * metrics.h: Prometheus metrics. Each worker counts its own requests in its
 * own slab (counters.h); a scrape sums the slabs and renders text format
 * 0.0.4, every family with its HELP and TYPE even before its first sample.
 */
#ifndef AG_OBS_METRICS_H
#define AG_OBS_METRICS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "obs/record.h"
#include "util/buf.h"

#define AG_METRICS_MAX_ROUTES 32
#define AG_METRICS_MAX_MODELS 64
#define AG_METRICS_MAX_KEYS 64 /* client key names with their own series; then "other" */

typedef struct ag_metrics ag_metrics_t;

/** routes: the route paths that label requests (copied); others count as "none". */
int ag_metrics_new(unsigned nworkers, const char *const *routes, size_t nroutes,
                   ag_metrics_t **out);
void ag_metrics_free(ag_metrics_t *m);

/** On worker `w`'s thread. */
void ag_metrics_record(ag_metrics_t *m, unsigned w, const ag_request_record_t *rec);
void ag_metrics_streams(ag_metrics_t *m, unsigned w, int delta);
/** Worker w's queue for `model` grew (+1) or shrank (-1). */
void ag_metrics_queue(ag_metrics_t *m, unsigned w, const char *model, int delta);
/** Retries of a call made off the workers (a scheduled run). */
void ag_metrics_retries(ag_metrics_t *m, const uint8_t *by_reason);
/** A scheduled run of `task` ended with `outcome` (any thread; runs are rare: locked). */
void ag_metrics_task_run(ag_metrics_t *m, const char *task, const char *outcome);
/** Counts a configuration reload: applied, or refused (any thread). */
void ag_metrics_config_reload(ag_metrics_t *m, bool applied);

/** What the scrape reads from elsewhere in the process. */
typedef struct ag_metrics_process {
    uint64_t connections_active;
    uint64_t usage_log_entries, usage_log_dropped;
    uint64_t usage_log_spool_bytes, usage_log_spool_full; /* the spool: bytes now, refusals */
    uint64_t tail_dropped;
    double start_time_s; /* epoch seconds */
} ag_metrics_process_t;

/** Appends the whole exposition to out. Any thread. */
int ag_metrics_render(ag_metrics_t *m, const ag_metrics_process_t *p, ag_buf_t *out);

/** The content type a scrape must carry (Prometheus 3 insists). */
#define AG_METRICS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

#endif
