/* SPDX-License-Identifier: MIT
 *
 * access.h: who may use an AI route and what it may spend (platform.md
 * section 6): the client's key (auth), the key's model list, the per-key and
 * global budgets and per-key rpm/tpm by reservation, and the CORS headers of
 * a route for the request's Origin.
 */
#ifndef AG_GATEWAY_ACCESS_H
#define AG_GATEWAY_ACCESS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "gateway/generation.h"
#include "gateway/steps.h"
#include "http/server.h"
#include "limit/budget.h"
#include "store/redis_budget.h"
#include "store/keys.h"

/* One request's access state, in its pool. Its reservation is settled exactly
 * once: by the route when the request's cost is known, else (the request went
 * away) at the worst case by a pool-clear hook, so no path can leak one. */
typedef struct gw_access {
    ag_budget_t *budget;
    gw_worker_t *w;
    ag_key_record_t *key;         /* the client's key (pool); NULL: none */
    ag_budget_resv_t resv;        /* taken on this instance */
    ag_redis_budget_resv_t rresv; /* or on Redis ([aigate.redis]) */
    ag_redis_cmd_t *rcmd;         /* the reservation being asked for, or NULL */
} gw_access_t;

/** Identifies the client and checks its key (skipped when auth is off).
 *  @return the request's access state (pool-owned); NULL when a 401 (or a 503
 *  for a failing store) was sent in the route's shape: a tail call then. */
gw_access_t *gw_step_auth(ag_req_t *req, gw_worker_t *w, const gw_route_t *route);

/** True when the request's key (if any) may use `model`. */
bool gw_access_model_allowed(const gw_access_t *a, const char *model, size_t len);

/** Reserves the request's worst case (upstream body bytes as input tokens,
 *  max_tokens of output, at the generation's price of `model`; `caching`
 *  prices input as cache writes) against the key's and the global budgets
 *  and the key's rpm and tpm: on this instance, or on Redis when the worker
 *  has it (its failure is redis_fail's case). Call it after a cache miss,
 *  just before the upstream call, and last: next(ctx) runs when the
 *  reservation is taken (at once, or when Redis answers), else the 429 (or
 *  503) is sent. A client that leaves while Redis is asked cancels it. */
void gw_step_reserve(ag_req_t *req, const gw_route_t *route, gw_access_t *a, const char *model,
                     size_t body_len, int64_t max_tokens, bool caching, gw_limit_next_fn next,
                     void *ctx);

/** Settles the reservation with what the request used: its cost (req->ai's,
 *  from gw_step_tokens()) and its tokens. No-op without a reservation or
 *  after the first settle. */
void gw_access_settle(gw_access_t *a, const ag_req_t *req);
/** Settles at a cost of 0: nothing reached the upstream, or another request paid. */
void gw_access_settle_none(gw_access_t *a);
/** Settles at the worst case: the cost is unknown (the client left mid-call). */
void gw_access_settle_worst(gw_access_t *a);
/** Settles a call that got no answer: a timeout may have been billed (the
 *  worst case), a refused or broken connection was not (0). */
void gw_access_settle_failure(gw_access_t *a, int upstream_error);

/** True when `body` asks for prompt caching (a cache_control anywhere). */
bool gw_body_asks_caching(ag_str_t body);

/** The CORS headers for this request on a route (`strict`: only origins
 *  written in cors_origins count; else the seed's default ["*"] applies), or
 *  none. @return true when the origin is allowed (headers added). */
bool gw_cors_apply(ag_req_t *req, const gw_gen_t *gen, bool strict);

/** The server's default headers for its own answers (before any route), from
 *  the config at start: the seed's CORS where "*" applies, else none. Static. */
const char *gw_cors_default_headers(const ag_config_t *cfg);

#endif
