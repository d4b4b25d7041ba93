/* SPDX-License-Identifier: MIT
 *
 * series.h: the last hour, minute by minute, for the dashboard: requests by
 * status class, error rate, latency and CPU percentiles, cache hit ratio,
 * retries, and tokens and cost by model. Workers count into a minute of their
 * own and fold it into the shared hour at most once a second, so the request
 * path takes no lock; the hour is locked only by those folds and by readers.
 */
#ifndef AG_OBS_SERIES_H
#define AG_OBS_SERIES_H

#include <stdint.h>

#include "obs/record.h"
#include "util/buf.h"

#define AG_SERIES_MINUTES 60

typedef struct ag_series ag_series_t;

/** start_s: when the server started (epoch s): idle minutes since are zeros. */
int ag_series_new(unsigned nworkers, int64_t start_s, ag_series_t **out);
void ag_series_free(ag_series_t *s);

/** On worker w's thread: count a finished request at now_s (epoch seconds). */
void ag_series_record(ag_series_t *s, unsigned w, const ag_request_record_t *rec, int64_t now_s);

/** On worker w's thread: fold what it counted into the hour (a 1 s timer calls it). */
void ag_series_flush(ag_series_t *s, unsigned w);

/** The last `minutes` minutes up to now_s as JSON (docs/architecture.md). Any thread. */
int ag_series_json(ag_series_t *s, unsigned minutes, int64_t now_s, ag_buf_t *out);

#endif
