/* SPDX-License-Identifier: MIT
 *
 * call.h: one logical upstream call, the single completion path of every
 * route and scheduled task: attempts with retries and backoff, waits in the
 * loop's queue while the model's rate window is spent, and fallback models,
 * all inside one deadline. The caller sees one answer (or a refusal).
 */
#ifndef AG_UPSTREAM_CALL_H
#define AG_UPSTREAM_CALL_H

#include <stdbool.h>
#include <stdint.h>

#include <uv.h>

#include "upstream/client.h"
#include "upstream/rates.h"
#include "upstream/retry.h"

typedef struct ag_call ag_call_t;
typedef struct ag_callq ag_callq_t;

/* Why a call ended without an upstream answer of its own. */
typedef enum ag_call_refusal {
    AG_CALL_ANSWERED = 0,
    AG_CALL_QUEUE_FULL,    /* queue_max calls already wait for this model */
    AG_CALL_QUEUE_TIMEOUT, /* the window would not reset within queue_timeout */
} ag_call_refusal_t;

/* What happened on the way to the answer. */
typedef struct ag_call_summary {
    unsigned attempts; /* upstream calls made, fallbacks included */
    unsigned retries;  /* attempts made again after a failure */
    unsigned retries_by_reason[AG_RETRY_NREASONS];
    int64_t queued_us;         /* time held by the rate view */
    const char *model;         /* the model of the last attempt */
    const char *fallback_from; /* the first model, when another one answered; else NULL */
    ag_call_refusal_t refusal;
    unsigned retry_after_s; /* a refusal: when to come back */
    const char *why_final;  /* a failed answer that was not retried: why (static) */
} ag_call_summary_t;

typedef void (*ag_call_done_cb)(void *ctx, const ag_upstream_response_t *resp,
                                const ag_call_summary_t *summary);

typedef struct ag_call_opts {
    ag_upstream_t *upstream;
    ag_callq_t *queue; /* this loop's queue; NULL: never held */
    ag_rates_t *rates; /* the shared rate view; NULL: none */
    ag_retry_policy_t policy;
    unsigned queue_max;
    unsigned queue_timeout_ms;
    /* The request for `model`; its header lines and body are borrowed until
     * done or cancel (every attempt reads them).
     * on_data, when set, streams; a stream is never retried once on_data has
     * run (its first byte went to the client). */
    ag_upstream_request_t request;
    const char *model; /* borrowed until done or cancel */
    /* Tried in order when the model's retries end on a 529 or 5xx. */
    const char *const *fallbacks;
    size_t nfallbacks;
    ag_call_done_cb done;
    void *ctx;
    /* An answer spent the model's window until until_ms (wall clock): for
     * whoever shares the view (other instances); may be NULL. */
    void (*on_spent)(void *spent_ctx, const char *model, int64_t until_ms);
    void *spent_ctx;
} ag_call_opts_t;

/** Starts the call. `done` runs exactly once, on the loop, unless the call is
 *  cancelled first; it may run before this returns (a refusal). */
int ag_call_start(const ag_call_opts_t *opts, ag_call_t **out);

/** Ends the call at once: the attempt in flight, a backoff or a place in the
 *  queue. `done` does not run. NULL is a no-op. */
void ag_call_cancel(ag_call_t *c);

/** What the call has done so far (valid until done or cancel). */
const ag_call_summary_t *ag_call_summary(const ag_call_t *c);

/** Resumes a stream paused by on_data returning AG_EAGAIN. */
void ag_call_resume(ag_call_t *c);

/** Called when a call enters (+1) or leaves (-1) the queue; waited_us on leaving. */
typedef void (*ag_callq_depth_cb)(void *ctx, const char *model, int delta, int64_t waited_us);

/** The loop's queue: its held and sleeping calls and one timer. */
int ag_callq_new(uv_loop_t *loop, ag_callq_depth_cb on_depth, void *ctx, ag_callq_t **out);

/** Closes the queue: calls still in it end with an error. Its memory is
 *  freed once the timer has closed on the loop. */
void ag_callq_close(ag_callq_t *q);

/** The body of a request for another model: the JSON object `body` with its
 *  "model" member replaced. @return a malloc'ed copy, or NULL. */
char *ag_call_body_with_model(const char *body, size_t len, const char *model, size_t *out_len);

#endif
