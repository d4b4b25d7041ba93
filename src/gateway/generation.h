/* SPDX-License-Identifier: MIT
 *
 * generation.h: everything a request reads from the configuration, built once
 * into an immutable, reference-counted generation (routes with their merged
 * settings and limiters, upstream headers, models, prices, proxies). A request
 * takes the current generation at dispatch and drops it when done, so a new
 * one can be published while old requests finish on theirs.
 */
#ifndef AG_GATEWAY_GENERATION_H
#define AG_GATEWAY_GENERATION_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>

#include "config/config.h"
#include "gateway/client_ip.h"
#include "gateway/internal.h"
#include "gateway/routes.h"
#include "limit/limiter.h"
#include "store/usage_log.h"
#include "upstream/retry.h"

/* A limiter shared by the generations that enforce the same numbers under
 * one name, so a reload that leaves a limit alone keeps its counts. */
typedef struct gw_lim_box {
    atomic_uint refs; /* one per generation's gw_limit that owns it */
    ag_limiter_t *lim;
} gw_lim_box_t;

/* A limiter and the numbers it enforces; routes naming one namespace share it. */
typedef struct gw_limit {
    char *name; /* the namespace: a binding's namespace_id, or "route:PATH" */
    ag_limiter_t *lim;
    gw_lim_box_t *box; /* lim's owner; a reference held unless `shared` */
    bool shared;       /* lim belongs to an earlier route's gw_limit */
    unsigned limit, period_s;
} gw_limit_t;

/* One route of a generation: its descriptor and its merged settings. */
struct gw_route {
    const gw_route_def_t *def;
    const gw_gen_t *gen;
    gw_limit_t limit;
    bool cache;
    char **models; /* allowlist besides default_model; owned */
    size_t nmodels;
};

struct gw_gen {
    atomic_uint refs; /* one per worker holding it, one while it is current */
    unsigned number;  /* 1 for the first; +1 for each published after it */
    char *messages_url;
    char *count_tokens_url;
    char *api_key_header;            /* "x-api-key: ..."; a secret: never logged */
    const char *generate_headers[5]; /* the seed's upstream headers, NULL-terminated */
    ag_trusted_t *trusted;           /* trusted_proxies */
    ag_trusted_t *trusted_cf;        /* trusted_proxies_cf: Cloudflare's edge */
    unsigned ipv6_prefix;            /* bits of an IPv6 client address that make its identity */
    unsigned connect_timeout_ms, timeout_ms, stream_idle_timeout_ms;
    unsigned prompt_max_length, max_tokens;
    char *default_model;
    int64_t cache_ttl_s;
    ag_price_t *prices; /* model names owned */
    size_t nprices;
    ag_retry_policy_t retry;
    unsigned queue_max, queue_timeout_ms;
    ag_config_fallback_t *fallbacks; /* owned copies */
    size_t nfallbacks;
    ag_config_task_route_t *routing; /* owned copies */
    size_t nrouting;
    int auth;              /* ag_auth_mode_t */
    bool redis_fail_open;  /* redis_fail = "open": local limits while Redis cannot answer */
    char **cors_origins;   /* owned copies, NULL-terminated */
    bool cors_origins_set; /* written in the config (else the default, for /api/generate) */
    bool cors_wildcard;    /* the list holds "*" */
    gw_route_t routes[GW_MAX_ROUTES];
    size_t nroutes;
};

/* A worker's hold on one generation. `users` counts that worker's requests
 * (and flight calls) on it; only the worker's thread touches it. */
struct gw_gen_ref {
    gw_gen_ref_t *next; /* the worker's superseded holds still in use */
    gw_gen_t *gen;
    gw_worker_t *worker;
    unsigned users;
};

/** Builds a generation from `cfg`, resolving the upstream key through the
 *  secret store. Problems print as `file:line:col: ...` to errs.
 *  @return 0, or AG_EBADCONFIG / -ENOMEM. */
int gw_gen_new(const ag_config_t *cfg, FILE *errs, gw_gen_t **out);

/** The same, taking over from `prev` (NULL: none) the limiters whose name,
 *  limit and period are unchanged, with their state. */
int gw_gen_new_from(const ag_config_t *cfg, const gw_gen_t *prev, FILE *errs, gw_gen_t **out);

/** Drops one reference; the last one frees the generation. */
void gw_gen_unref(gw_gen_t *gen);

/** The route serving `path` for `method`, or NULL (*path_known says whether the
 *  path exists for another method). */
const gw_route_t *gw_gen_route(const gw_gen_t *gen, ag_str_t method, ag_str_t path,
                               bool *path_known);

/** The model of a request's "task" ([aigate.routing]); default_model for any other. */
const char *gw_gen_task_model(const gw_gen_t *gen, const char *task, size_t len);

/** The fallback chain of `model` (NULL-terminated, *n entries), or NULL. */
const char *const *gw_gen_fallbacks(const gw_gen_t *gen, const char *model, size_t *n);

/** True when the route lets a client ask for `model`. */
bool gw_route_model_allowed(const gw_route_t *r, const char *model, size_t len);

/** On a worker's thread: the current generation, held for one more user. */
gw_gen_ref_t *gw_gen_acquire(gw_worker_t *w);

/** One more user of the generation `gen`, which one of this worker's requests
 *  holds already (a flight's call outliving its request). */
gw_gen_ref_t *gw_gen_hold(gw_worker_t *w, const gw_gen_t *gen);

/** Ends one use; a worker's hold on a superseded generation ends with its last user. */
void gw_gen_release(gw_gen_ref_t *ref);

/** Makes `gen` current (taking over the caller's reference) and drops the
 *  previous one's. Thread-safe; workers move to it at their next request. */
void gw_gen_publish(ag_gateway_t *gw, gw_gen_t *gen);

/** On a worker's thread when it stops: ends its hold. */
void gw_gen_worker_done(gw_worker_t *w);

#endif
