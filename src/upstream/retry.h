/* SPDX-License-Identifier: MIT
 *
 * retry.h: when an upstream answer deserves another attempt, and how long to
 * wait first: the upstream's own word (x-should-retry, retry-after-ms,
 * retry-after) before exponential backoff with full jitter. Pure functions.
 */
#ifndef AG_UPSTREAM_RETRY_H
#define AG_UPSTREAM_RETRY_H

#include <stdbool.h>
#include <stdint.h>

#include "upstream/client.h"
#include "util/retry_reason.h"
#include "util/str.h"

typedef struct ag_retry_policy {
    unsigned retries;     /* attempts after the first (upstream_retries) */
    unsigned base_ms;     /* first backoff ceiling (upstream_retry_base) */
    unsigned max_ms;      /* backoff ceiling (upstream_retry_max) */
    unsigned max_wait_ms; /* the longest retry-after obeyed (upstream_retry_max_wait) */
    unsigned deadline_ms; /* one client request's whole budget (upstream_deadline) */
} ag_retry_policy_t;

typedef struct ag_retry_decision {
    ag_retry_reason_t reason; /* why the answer failed in a retryable way; NONE: it did not */
    bool retry;               /* make another attempt after delay_ms */
    int64_t delay_ms;
    const char *why_not; /* reason != NONE && !retry: what stopped it, for the log */
} ag_retry_decision_t;

/** Classifies an answer; NONE for a success or an answer no retry can change. */
ag_retry_reason_t ag_retry_classify(const ag_upstream_response_t *resp);

/** Decides on the answer of an attempt. `retries_done` counts the retries
 *  already made for this model; `remaining_ms` is what is left of the
 *  deadline; `random` any 64 random bits; `now_ms` the wall clock (for a
 *  retry-after given as a date). */
ag_retry_decision_t ag_retry_decide(const ag_retry_policy_t *p, const ag_upstream_response_t *resp,
                                    unsigned retries_done, int64_t remaining_ms, uint64_t random,
                                    int64_t now_ms);

/** The wait the upstream asked for (retry-after-ms first, then retry-after
 *  as seconds or an HTTP date), in ms; -1 when it asked for none. */
int64_t ag_retry_after_ms(ag_str_t headers, int64_t now_ms);

/** Full jitter: uniform in [0, min(max_ms, base_ms * 2^retries_done)]. */
int64_t ag_retry_backoff_ms(const ag_retry_policy_t *p, unsigned retries_done, uint64_t random);

/** RFC 3339 ("2026-12-02T04:10:00Z", fractions and offsets too) to epoch ms.
 *  @return 0, or -1 when `s` is not one. */
int ag_parse_rfc3339_ms(ag_str_t s, int64_t *out_ms);

/** A 64-bit generator for jitter (xorshift64*); *state must not be 0. */
uint64_t ag_retry_random(uint64_t *state);

#endif
