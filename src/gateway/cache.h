/* SPDX-License-Identifier: MIT
 *
 * cache.h: the response cache in one place: the key (SHA-256 over what changes
 * the answer), the entry's encoding and decoding, fills written off the loop,
 * lookups through the KV store's asynchronous interface, and the replay of an
 * entry as Anthropic's event stream.
 *
 * An entry is "UNITS IN OUT STOP\n" then JSON: the seed's {"output","usage"}
 * (UNITS is the output's UTF-16 length), or, with STOP "raw", Anthropic's
 * whole Message as /v1/messages answered it.
 */
#ifndef AG_GATEWAY_CACHE_H
#define AG_GATEWAY_CACHE_H

#include <stdbool.h>

#include "gateway/internal.h"
#include "gateway/routes.h"
#include "http/server.h"
#include "upstream/sse.h"
#include "util/buf.h"

struct gw_cache_entry {
    unsigned long units; /* the output's UTF-16 length */
    long long in, out;
    char stop[64];
    bool raw;         /* json is Anthropic's whole Message (a /v1/messages fill) */
    const char *json; /* {"output","usage"} or the Message; points into the value */
    size_t jlen;
};
typedef struct gw_cache_entry cache_entry_t;

void ag__gw_sha256_parts(const ag_str_t *parts, size_t n, unsigned char out[SHA256_DIGEST_LENGTH]);
/** Frees the calling thread's digest context (worker shutdown). */
void ag__gw_sha256_thread_done(void);
/** The KV key: `prefix` ("gen:v1:", "msg:v1:") then the digest in hex. */
void gw_cache_key(const char *prefix, const unsigned char *digest, char out[GW_KV_KEY_LEN]);

/** Decodes an entry; e points into v. */
bool ag__gw_parse_entry(const ag_kv_value_t *v, cache_entry_t *e);
/** The text, token counts and stop reason of an entry. Fails for a Message
 *  with blocks other than text (a tool call cannot be replayed as text). */
bool ag__gw_entry_text(const cache_entry_t *e, ag_buf_t *text, long long *in, long long *out,
                       char stop[64]);
/** The entry of a complete stream, as a text entry. */
int gw_cache_encode_stream(ag_buf_t *v, const ag_anthropic_stream_t *a);
/** The entry of a /v1/messages answer: the Message as it came. */
int gw_cache_encode_raw(ag_buf_t *v, ag_str_t message);

/** Stores value under key on the thread pool (copied); bounded backlog. */
void gw_cache_fill(gw_worker_t *w, int64_t ttl_s, const char *key, const ag_buf_t *value);

/** Called when the cache cannot answer (no entry, an unusable one, or no cache). */
typedef void (*gw_cache_miss_fn)(void *ctx);

/** Looks `key` up and answers from it through the route's protocol, or calls
 *  miss(ctx). Either may happen before it returns, so it is a tail call: the
 *  caller touches neither the request nor ctx after it. A lookup still pending
 *  when the request goes away is cancelled. */
void gw_cache_lookup(gw_worker_t *w, ag_req_t *req, const gw_route_t *route, const char *key,
                     const char *model, bool stream, gw_cache_miss_fn miss, void *ctx);

/** Replays text as Anthropic's event stream, so a streaming client served from
 *  the cache sees the sequence a live one does. */
bool ag__gw_replay_stream(ag_req_t *req, ag_str_t model, ag_str_t text, long long in, long long out,
                          const char *stop);

/** Replays an entry's text as a stream (Messages with non-text blocks cannot be).
 *  @return false when nothing was sent. */
bool gw_cache_replay_entry(ag_req_t *req, const cache_entry_t *e, const char *model);

/** Reclaims space of expired entries, a bounded batch (off the loop thread). */
void gw_cache_sweep(void *gateway);

#endif
