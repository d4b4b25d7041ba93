/* SPDX-License-Identifier: MIT
 *
 * internal.h: what the gateway's files share (gateway.c: lifecycle, routing,
 * /api/generate; answer.c: Anthropic's answers; cache.c: the response cache;
 * stream.c: the streaming relay and /v1/messages). Not a public API.
 */
#ifndef AG_GATEWAY_INTERNAL_H
#define AG_GATEWAY_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>
#include <openssl/sha.h>
#include <uv.h>

#include "gateway/client_ip.h"
#include "gateway/gateway.h"
#include "limit/limiter.h"
#include "store/kv.h"
#include "store/objstore.h"
#include "store/usage_log.h"
#include "upstream/client.h"
#include "util/buf.h"
#include "util/jtok.h"

#define ANTHROPIC_VERSION "2023-06-01"

#define FLIGHT_SHARDS 64
#define MAX_WORKERS 256

typedef struct gen_req gen_req_t;
typedef struct gw_worker gw_worker_t;

/* An answer shared by every request that waited on one upstream call. */
typedef struct shared_result {
    atomic_int refs;
    int status;
    uint32_t output_units;
    int64_t input_tokens, output_tokens;
    int64_t upstream_us; /* how long the upstream call took */
    size_t len;
    char body[]; /* the full response body */
} shared_result_t;

/* A request waiting on an in-flight upstream call, possibly on another worker. */
typedef struct waiter {
    struct waiter *next;
    unsigned worker;
    gen_req_t *g;         /* valid while !cancelled; touched only by `worker`'s thread */
    shared_result_t *res; /* set by the delivering thread */
    bool cancelled;
} waiter_t;

/* One upstream call for a cache key; its waiters share the answer. */
typedef struct flight {
    struct flight *next;
    unsigned char key[SHA256_DIGEST_LENGTH];
    waiter_t *waiters;
} flight_t;

typedef struct flight_shard {
    pthread_mutex_t lock;
    flight_t *head;
} flight_shard_t;

/* Cross-thread delivery: a locked list per worker, drained by an async handle. */
typedef struct mailbox {
    pthread_mutex_t lock;
    waiter_t *items;
    uv_async_t *async; /* NULL once the worker has stopped */
} mailbox_t;

typedef struct named_limiter {
    char *name; /* the namespace: a binding's namespace_id, or the route */
    ag_limiter_t *lim;
    bool shared; /* lim belongs to another route's limiter */
    unsigned limit, period_s;
} named_limiter_t;

struct ag_gateway {
    const ag_config_t *cfg;
    char *messages_url;
    char *api_key_header;            /* "x-api-key: ..."; a secret: never logged */
    const char *generate_headers[5]; /* the seed's upstream headers, NULL-terminated */
    ag_trusted_t *trusted;
    named_limiter_t generate_limit;
    named_limiter_t messages_limit;
    ag_kv_t *cache;
    ag_objstore_t *log_bucket;
    atomic_uint fills_pending; /* cache fills queued on the thread pool */
    atomic_ullong fills_skipped;
    ag_usage_log_t *usage_log;
    flight_shard_t flights[FLIGHT_SHARDS];
    mailbox_t mailboxes[MAX_WORKERS];
};

/* The upstream call behind a flight, owned by the worker that started it. */
typedef struct fetch {
    struct fetch *prev, *next;
    gw_worker_t *gww;
    unsigned char key[SHA256_DIGEST_LENGTH];
    char kv_key[8 + 2 * SHA256_DIGEST_LENGTH + 1];
    char *body; /* upstream request body */
    size_t body_len;
    bool fill; /* store the answer in the cache */
    ag_upstream_xfer_t *xfer;
} fetch_t;

struct gw_worker {
    ag_gateway_t *gw;
    ag_upstream_t *upstream;
    unsigned index;
    uv_loop_t *loop;
    uv_async_t mail;
    uv_timer_t sweep; /* worker 0 only: reclaims expired cache entries */
    uv_work_t sweep_work;
    bool sweeping;
    bool closed;
    fetch_t *fetches;
};

/* What the usage log records of one AI request; filled as the request goes. */
typedef struct usage {
    ag_req_t *req;
    ag_usage_log_t *log; /* NULL: not logged (failed validation, or logging off) */
    uint32_t prompt_units, output_units;
    int64_t in, out, cache_create, cache_read;
    bool cached, stream;
    const char *outcome; /* streams: ok, clientDisconnected, upstreamError */
} usage_t;

struct gen_req {
    usage_t usage;
    ag_req_t *req;
    gw_worker_t *gw;
    ag_upstream_xfer_t *xfer; /* uncoalesced call (no-store) */
    waiter_t *waiter;         /* coalesced call */
    json_t *root;
    ag_str_t body; /* the upstream request body, pool-owned */
    unsigned char key[SHA256_DIGEST_LENGTH];
};

/* The seed's error strings, word for word. */
#define MSG_INVALID_JSON "Invalid JSON"
#define MSG_INVALID_PROMPT "Invalid prompt"
#define MSG_INVALID_MODEL "Invalid model"
#define MSG_AI_ERROR "AI service error"
#define MSG_INTERNAL "Internal error"
#define MSG_NO_KEY "Upstream not configured: set ANTHROPIC_API_KEY"

typedef struct cache_entry {
    unsigned long units; /* the output's UTF-16 length */
    long long in, out;
    char stop[64];
    bool raw;         /* json is Anthropic's whole Message (a /v1/messages fill) */
    const char *json; /* {"output","usage"} or the Message; points into the value */
    size_t jlen;
} cache_entry_t;

typedef enum { RELAY_GENERATE, RELAY_MESSAGES } relay_kind_t;

/* ---- gateway.c: requests --------------------------------------------------- */

/** Starts the request's usage entry, written when its pool is cleared. */
void ag__gw_usage_begin(usage_t *u, gw_worker_t *gww, ag_req_t *req, uint32_t prompt_units,
                        bool stream);
/** The route's rate limit; sends the 429 itself. @return true to go on. */
bool ag__gw_check_rate_limit(gw_worker_t *gww, ag_req_t *req, named_limiter_t *nl, bool anthropic);
/** An upstream call to {upstream}/v1/messages; streams get an idle timeout, not a total one. */
ag_upstream_request_t ag__gw_upstream_request(ag_gateway_t *gw, const char *const *headers,
                                              ag_str_t body, bool stream);
/** The seed's upstream body, in the pool. */
ag_str_t ag__gw_build_upstream_body(ag_pool_t *pool, ag_str_t model, unsigned max_tokens,
                                    ag_str_t prompt);
/** True when a comma-separated header holds `token` (case-insensitive). */
bool ag__gw_has_token(ag_str_t header, const char *token);
/** "minute", "hour"... or "N seconds" in buf, for the 429 message. */
const char *ag__gw_period_word(unsigned period_s, char *buf, size_t len);

/* ---- answer.c: upstream answers ---------------------------------------------- */

/** Results are refcounted and shared between waiters on any thread. */
shared_result_t *ag__gw_result_new(int status, ag_str_t body, uint32_t units, int64_t in,
                                   int64_t out);
shared_result_t *ag__gw_result_error(int status, const char *msg);
void ag__gw_result_release(shared_result_t *r);
void ag__gw_respond_result(ag_req_t *req, const shared_result_t *r);
/** The seed's response from an upstream answer; never NULL unless out of memory.
 *  cache_value (optional) gets the cache entry on success. */
shared_result_t *ag__gw_result_from_upstream(const char *id, const ag_upstream_response_t *resp,
                                             ag_buf_t *cache_value);
int ag__gw_jparse(ag_str_t text, ag_jtok_t *stack, size_t nstack, ag_jtok_t **toks,
                  ag_jtok_t **heap);
int ag__gw_join_text_blocks(json_t *content, ag_buf_t *out);
void ag__gw_log_upstream_failure(const char *id, const ag_upstream_response_t *resp);
/** A stop reason safe to store and replay, else "end_turn". */
const char *ag__gw_safe_stop(const char *stop);
int64_t ag__gw_usage_int(json_t *usage, const char *name);

/* ---- cache.c: the response cache ---------------------------------------------- */

void ag__gw_sha256_parts(const ag_str_t *parts, size_t n, unsigned char out[SHA256_DIGEST_LENGTH]);
/** Frees the calling thread's digest context (worker shutdown). */
void ag__gw_sha256_thread_done(void);
void ag__gw_cache_key(const unsigned char *digest, char out[8 + 2 * SHA256_DIGEST_LENGTH + 1]);
/** Stores value under key on the thread pool (value is copied); bounded backlog. */
void ag__gw_cache_fill(gw_worker_t *gww, uv_loop_t *loop, const char *key, ag_buf_t *value);
/** Answers from the cache (as JSON, or replayed SSE when stream_model is given).
 *  @return true when it answered. */
bool ag__gw_cache_lookup(gw_worker_t *gww, ag_req_t *req, const char *key,
                         const ag_str_t *stream_model, usage_t *usage);
bool ag__gw_parse_entry(const ag_kv_value_t *v, cache_entry_t *e);
bool ag__gw_entry_text(const cache_entry_t *e, ag_buf_t *text, long long *in, long long *out,
                       char stop[64]);
void ag__gw_usage_from_entry(usage_t *u, const cache_entry_t *e);
bool ag__gw_replay_stream(ag_req_t *req, ag_str_t model, ag_str_t text, long long in, long long out,
                          const char *stop);
bool ag__gw_respond_message(ag_req_t *req, ag_str_t model, const cache_entry_t *e);

/* ---- stream.c: streaming relay and /v1/messages ----------------------------------- */

void ag__gw_relay_start(gw_worker_t *gww, ag_req_t *req, relay_kind_t kind, ag_str_t body,
                        const char *const *headers, const char *kv_key, usage_t *usage);
/** Sends Anthropic's error shape: {"type":"error","error":{"type","message"}}. */
void ag__gw_messages_error(ag_req_t *req, int status, const char *type, const char *msg);
void ag__gw_handle_messages(ag_req_t *req, gw_worker_t *gww);

#endif
