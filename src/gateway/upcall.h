/* SPDX-License-Identifier: MIT
 *
 * upcall.h: the gateway's side of an upstream call (upstream/call.h): its
 * options from the generation and the worker, and what the answer says about
 * how it was made (x-aigate-retries, x-aigate-model, the usage record), for
 * the request that made the call and for those that shared it.
 */
#ifndef AG_GATEWAY_UPCALL_H
#define AG_GATEWAY_UPCALL_H

#include <stdbool.h>
#include <stdint.h>

#include "gateway/internal.h"
#include "http/server.h"
#include "upstream/call.h"

/* A call's summary, copied so it can travel with a shared answer. */
typedef struct gw_call_info {
    unsigned attempts, retries;
    uint8_t by_reason[AG_RETRY_NREASONS];
    int64_t queued_us;
    char model[128];         /* the model of the last attempt */
    char fallback_from[128]; /* "" unless a fallback answered */
    ag_call_refusal_t refusal;
    unsigned retry_after_s;
} gw_call_info_t;

void gw_call_info_from(gw_call_info_t *out, const ag_call_summary_t *s);

/** Starts the call for `model` on worker w with the route's generation's
 *  policy, fallbacks and the worker's queue. `model` and the request's body
 *  are borrowed until done or cancel. */
int gw_call_start(gw_worker_t *w, const gw_route_t *route, const char *model,
                  const ag_upstream_request_t *req, ag_call_done_cb done, void *ctx,
                  ag_call_t **out);

/** Puts the call's story on the request: the x-aigate-* headers and the
 *  answering model always; attempts, retries and queue time only for the
 *  request that made the call (`made_it`), so a shared call counts once. */
void gw_call_apply(ag_req_t *req, const gw_call_info_t *info, bool made_it);

struct gw_access;

/** The start of every route's answer to its own call: a refusal is answered
 *  (503) and settled at 0 (@return false: the request is done); otherwise
 *  the call's story goes on the request (gw_call_apply), a fallback's answer
 *  clears `kv_key` (optional) so it is not cached, and the upstream's time and
 *  status go in the record. */
bool gw_call_answered(ag_req_t *req, const gw_route_t *route, struct gw_access *acc,
                      const ag_upstream_response_t *resp, const ag_call_summary_t *s, char *kv_key);

/** A refused call: 503 with Retry-After, in the route's error shape. */
void gw_call_refused(ag_req_t *req, const gw_route_t *route, const gw_call_info_t *info);

/** The refusal's message for a body of the seed's shape. */
const char *gw_call_refusal_message(ag_call_refusal_t why);

/** The worker's queue: start and stop. */
int gw_upcall_worker_init(gw_worker_t *w);
void gw_upcall_worker_stop(gw_worker_t *w);

#endif
