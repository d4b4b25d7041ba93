/* SPDX-License-Identifier: MIT
 *
 * access_log.h: one JSON line per request on stderr, batched per worker and
 * written in whole lines, so lines of several workers never interleave.
 */
#ifndef AG_OBS_ACCESS_LOG_H
#define AG_OBS_ACCESS_LOG_H

#include "obs/record.h"
#include "util/buf.h"

/** Appends the record's line to `lines` (a worker's batch). */
void ag_access_log_format(ag_buf_t *lines, const ag_request_record_t *rec);

/** Writes the batch to stderr in whole lines, at most 4096 bytes a write, and empties it. */
void ag_access_log_flush(ag_buf_t *lines);

#endif
