/* SPDX-License-Identifier: MIT
 *
 * steps.h: the per-request steps every AI route shares, in the order they run:
 * identify the client, apply the route's rate limit, start the usage record,
 * account tokens, and describe the upstream call.
 */
#ifndef AG_GATEWAY_STEPS_H
#define AG_GATEWAY_STEPS_H

#include <stdbool.h>
#include <stdint.h>

#include "gateway/generation.h"
#include "http/server.h"
#include "upstream/client.h"

/** Who the client is (req->client): the peer, or what a trusted proxy says. */
void gw_step_identify(ag_req_t *req, const gw_route_t *route);

/** Logs that Redis failed `what` ("check rate limits"), at most once a second
 *  per worker: when Redis is down every request would say it. */
void gw_redis_warn(gw_worker_t *w, const char *what, int rc, const char *then);

/** Redis could not answer `what` for this request: redis_fail decides. Closed:
 *  the 503 (`msg`, Retry-After: 1) is sent and true returned; open: false,
 *  and the caller applies this instance's own limits. Logged as above. */
bool gw_redis_failed(ag_req_t *req, gw_worker_t *w, const gw_route_t *route, const char *what,
                     int rc, const char *msg);

/** What runs once the rate limit let a request through. */
typedef void (*gw_limit_next_fn)(void *ctx);

/** The route's rate limit for the identified client: on this instance, or on
 *  Redis when the worker has it ([aigate.redis]; its failure is redis_fail's
 *  case). Sets the RateLimit-* headers on whatever response follows, then
 *  calls next(ctx) (at once, or when Redis answers), or sends the 429 (or the
 *  503 of a Redis that cannot answer) instead. Call it last: the request may
 *  be finished when it returns (see server.h). A client that leaves while
 *  Redis is asked cancels the check. */
void gw_step_limit(ag_req_t *req, gw_worker_t *w, const gw_route_t *route, gw_limit_next_fn next,
                   void *ctx);

/** From here on the request gets exactly one usage entry (written from its
 *  record when it finishes). */
void gw_step_usage_begin(ag_req_t *req, const char *model, uint32_t prompt_units, bool stream);

/** What the upstream used, with its cost at the generation's prices. */
void gw_step_tokens(ag_req_t *req, const gw_route_t *route, int64_t in, int64_t out,
                    int64_t cache_write, int64_t cache_read);

/** Cache-Control's say: *no_cache (skip the lookup), *no_store (and the fill). */
void gw_step_cache_control(ag_req_t *req, bool *no_cache, bool *no_store);

/** An upstream call to the generation's /v1/messages with these header lines
 *  (NULL-terminated). A stream gets an idle timeout instead of a total one, so
 *  a long healthy stream is never cut while a stalled one is. */
ag_upstream_request_t gw_upstream_request(const gw_gen_t *gen, const char *const *headers,
                                          ag_str_t body, bool stream);

/** Tells the operator which model a client was refused and how to allow it
 *  (the client gets the route's plain 400). */
void gw_log_model_refused(const ag_req_t *req, const gw_route_t *route, const char *model,
                          size_t len);

/** True when a comma-separated header holds `token` (case-insensitive). */
bool ag__gw_has_token(ag_str_t header, const char *token);
/** "minute", "hour"... or "N seconds" in buf, for the 429 message. */
const char *ag__gw_period_word(unsigned period_s, char *buf, size_t len);

#endif
