/* SPDX-License-Identifier: MIT
 *
 * internal.h: what every file of the gateway shares: the gateway itself (state
 * that lives as long as the process: stores, flights, mailboxes, the usage log)
 * and its per-worker part. Not a public API; each concern has its own header.
 */
#ifndef AG_GATEWAY_INTERNAL_H
#define AG_GATEWAY_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>

#include <openssl/sha.h>
#include <uv.h>

#include "cron/periodic.h"
#include "gateway/gateway.h"
#include "limit/budget.h"
#include "obs/obs.h"
#include "store/keys.h"
#include "store/redis.h"
#include "store/kv.h"
#include "store/objstore.h"
#include "store/usage_log.h"
#include "upstream/call.h"
#include "upstream/client.h"
#include "upstream/rates.h"

#define ANTHROPIC_VERSION "2023-06-01"
#define MAX_WORKERS 256
#define FLIGHT_SHARDS 64
/* "gen:v1:" or "msg:v1:" then the SHA-256 in hex. */
#define GW_KV_KEY_LEN (7 + 2 * SHA256_DIGEST_LENGTH + 1)

/* On Redis: a model's spent upstream window, its reset (wall ms) as the value. */
#define GW_REDIS_SPENT_PREFIX "aigate:upstream:spent:"

typedef struct gw_worker gw_worker_t;
typedef struct gw_gen gw_gen_t;
typedef struct gw_gen_ref gw_gen_ref_t;
typedef struct gw_route gw_route_t;
typedef struct gw_waiter gw_waiter_t;
typedef struct gw_fetch gw_fetch_t;

/* The seed's error strings, word for word. */
#define MSG_INVALID_JSON "Invalid JSON"
#define MSG_INVALID_PROMPT "Invalid prompt"
#define MSG_INVALID_MODEL "Invalid model"
#define MSG_AI_ERROR "AI service error"
#define MSG_INTERNAL "Internal error"
#define MSG_NO_KEY "Upstream not configured: set ANTHROPIC_API_KEY"

typedef struct gw_flight gw_flight_t;
typedef struct flight_shard {
    pthread_mutex_t lock;
    gw_flight_t *head;
} flight_shard_t;

/* Cross-thread delivery: a locked list per worker, drained by an async handle. */
typedef struct mailbox {
    pthread_mutex_t lock;
    gw_waiter_t *items;
    uv_async_t *async; /* NULL once the worker has stopped */
} mailbox_t;

struct ag_gateway {
    _Atomic(gw_gen_t *) current; /* the generation new requests take */
    pthread_mutex_t gen_lock;    /* held only to swap `current`, count a worker in, or
                                  * read or change redis_clients */
    unsigned nworkers;
    ag_kv_t *cache;    /* the local cache store; NULL: none (off, or on Redis) */
    char *cache_redis; /* the cache on Redis: its key prefix ("aigate:cache:BINDING:"); NULL: not */
    char *flight_redis;   /* with it, the claims on fetching an entry: "aigate:flight:BINDING:" */
    char instance_id[33]; /* random, per process: whose claim a flight key holds */
    ag_objstore_t *log_bucket;
    ag_usage_log_t *usage_log;
    ag_obs_t *obs;
    ag_rates_t *rates;    /* the upstream's rate-limit view, shared by every worker */
    ag_keys_t *keys;      /* client API keys (<data_dir>/keys) */
    ag_budget_t *budget;  /* budgets and per-key limits (<data_dir>/budget) */
    char *redis_url;      /* [aigate.redis] url, or NULL */
    char *redis_password; /* the secret REDIS_PASSWORD, when the URL has none */
    unsigned redis_timeout_ms;
    ag_redis_t *redis_clients[MAX_WORKERS]; /* each worker's, under gen_lock (for /readyz) */
    const char *default_headers;            /* the server's own answers' (static) */
    atomic_uint fills_pending;              /* cache fills queued on the thread pool */
    atomic_ullong fills_skipped;
    flight_shard_t flights[FLIGHT_SHARDS];
    mailbox_t mailboxes[MAX_WORKERS];
};

struct gw_worker {
    ag_gateway_t *gw;
    ag_upstream_t *upstream;
    ag_callq_t *callq; /* upstream calls waiting on this worker: backoffs, rate windows */
    unsigned index;
    uv_loop_t *loop;
    uv_async_t mail;
    gw_gen_ref_t *gen;              /* this worker's hold on the current generation */
    gw_gen_ref_t *old_gens;         /* holds on superseded ones that requests still use */
    gw_fetch_t *fetches;            /* upstream calls this worker leads for a flight */
    ag_periodic_t *sweep;           /* worker 0: reclaims expired cache entries */
    struct gw_keys_sync *keys_sync; /* worker 0 with Redis: imports the keys published there */
    ag_keys_reader_t *keys;         /* this thread's key-store reader */
    ag_redis_t *redis;              /* [aigate.redis]: this loop's client; NULL without */
    char redis_name[24];            /* its name in log lines */
    int64_t redis_logged_us;        /* when a Redis failure was last logged (once a second) */
};

/** A cache is open for the process: on this instance or on Redis. */
static inline bool gw_cache_on(const ag_gateway_t *gw)
{
    return gw->cache || gw->cache_redis;
}

#endif
