/* SPDX-License-Identifier: MIT
 *
 * cache.c: the response cache: SHA-256 keys, the entry codec, fills written
 * off the loop (or pipelined to Redis), asynchronous lookups in the local
 * store or on Redis, and the SSE replay of an entry.
 */
#include "util/platform.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "gateway/answer.h"
#include "gateway/cache.h"
#include "gateway/generation.h"
#include "gateway/steps.h"
#include "util/errors.h"
#include "util/hex.h"
#include "util/json.h"
#include "util/log.h"
#include "util/utf.h"

/* ---- fills ---------------------------------------------------------------------- */

typedef struct cache_fill {
    uv_work_t work;
    ag_gateway_t *gw;
    ag_kv_t *kv;
    int64_t ttl_s;
    char key[GW_KV_KEY_LEN];
    size_t len;
    char value[];
} cache_fill_t;

static void cache_fill_work(uv_work_t *w)
{
    cache_fill_t *cf = w->data;
    ag_kv_put_opts_t o = {.expiration_ttl = cf->ttl_s};
    int rc = ag_kv_put(cf->kv, cf->key, strlen(cf->key), cf->value, cf->len, &o);
    if (rc < 0)
        ag_log_warn("cache fill failed: %s", ag_strerror(rc));
}

static void cache_fill_done(uv_work_t *w, int status)
{
    cache_fill_t *cf = w->data;
    AG_UNUSED(status);
    atomic_fetch_sub(&cf->gw->fills_pending, 1);
    free(cf);
}

#define MAX_PENDING_FILLS 4096

static void on_redis_fill(void *ctx, int rc, const ag_resp_t *reply)
{
    gw_worker_t *w = ctx;
    if (rc == 0 && reply->type == AG_RESP_ERROR)
        rc = AG_REDIS_EREPLY;
    if (rc < 0 && rc != AG_REDIS_ECLOSED)
        gw_redis_warn(w, "store a cached answer", rc, "it is not cached");
}

/* SET with the TTL as Redis's own: the command is copied when sent, and
 * pipelined with the rest of the loop's. A Redis that is down drops it. */
static void cache_fill_redis(gw_worker_t *w, int64_t ttl_s, const char *key, const ag_buf_t *value)
{
    char *rkey = NULL, ttl[24];
    if (asprintf(&rkey, "%s%s", w->gw->cache_redis, key) < 0)
        return;
    snprintf(ttl, sizeof(ttl), "%lld", (long long)(ttl_s > 0 ? ttl_s : 1));
    const char *argv[] = {"SET", rkey, value->data, "EX", ttl};
    size_t lens[] = {3, strlen(rkey), value->len, 2, strlen(ttl)};
    int rc = ag_redis_command(w->redis, 5, argv, lens, on_redis_fill, w, NULL);
    free(rkey);
    if (rc < 0)
        gw_redis_warn(w, "store a cached answer", rc, "it is not cached");
}

/* Stores the answer off the loop thread: an LMDB write may wait on the disk. */
void gw_cache_fill(gw_worker_t *w, int64_t ttl_s, const char *key, const ag_buf_t *value)
{
    ag_gateway_t *gw = w->gw;
    if (value->len == 0)
        return;
    if (gw->cache_redis && w->redis) {
        cache_fill_redis(w, ttl_s, key, value);
        return;
    }
    if (!gw->cache)
        return;
    /* Memory stays bounded when fills come faster than the disk takes them:
     * past the bound a fill is skipped (a later request fills instead). */
    if (atomic_load(&gw->fills_pending) >= MAX_PENDING_FILLS) {
        if (atomic_fetch_add(&gw->fills_skipped, 1) % 10000 == 0)
            ag_log_warn("cache fills are behind the disk: skipped %llu so far",
                        (unsigned long long)atomic_load(&gw->fills_skipped));
        return;
    }
    cache_fill_t *cf = malloc(sizeof(*cf) + value->len);
    if (!cf)
        return;
    atomic_fetch_add(&gw->fills_pending, 1);
    cf->gw = gw;
    cf->kv = gw->cache;
    cf->ttl_s = ttl_s;
    snprintf(cf->key, sizeof(cf->key), "%s", key);
    cf->len = value->len;
    memcpy(cf->value, value->data, value->len);
    cf->work.data = cf;
    if (uv_queue_work(w->loop, &cf->work, cache_fill_work, cache_fill_done) < 0) {
        atomic_fetch_sub(&gw->fills_pending, 1);
        free(cf);
    }
}

static EVP_MD *sha256_md;                    /* fetched once, kept for the process */
static _Thread_local EVP_MD_CTX *sha256_ctx; /* per thread; freed by ag__gw_sha256_thread_done() */

void ag__gw_sha256_thread_done(void)
{
    EVP_MD_CTX_free(sha256_ctx);
    sha256_ctx = NULL;
}

static void sha256_fetch(void)
{
    sha256_md = EVP_MD_fetch(NULL, "SHA256", NULL);
}

/* SHA-256 over the parts, each followed by a NUL so that no two splits collide. */
void ag__gw_sha256_parts(const ag_str_t *parts, size_t n, unsigned char out[SHA256_DIGEST_LENGTH])
{
    /* OpenSSL 3 looks the algorithm up on every implicit fetch; fetch it once
     * and keep a context per thread. */
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, sha256_fetch);
    if (!sha256_ctx)
        sha256_ctx = EVP_MD_CTX_new();
    EVP_MD_CTX *ctx = sha256_ctx;
    AG_ASSERT(ctx != NULL && sha256_md != NULL);
    EVP_DigestInit_ex(ctx, sha256_md, NULL);
    for (size_t i = 0; i < n; i++) {
        EVP_DigestUpdate(ctx, parts[i].ptr ? parts[i].ptr : "", parts[i].len);
        EVP_DigestUpdate(ctx, "", 1);
    }
    EVP_DigestFinal_ex(ctx, out, NULL);
}

void gw_cache_key(const char *prefix, const unsigned char *digest, char out[GW_KV_KEY_LEN])
{
    AG_ASSERT(strlen(prefix) == 7);
    memcpy(out, prefix, 7);
    ag_hex_encode(digest, SHA256_DIGEST_LENGTH, out + 7);
}

/* ---- lookups --------------------------------------------------------------------- */

typedef struct lookup {
    gw_worker_t *w;
    ag_req_t *req;
    const gw_route_t *route;
    const char *model;
    bool stream;
    gw_cache_miss_fn miss;
    void *ctx;
    ag_kv_op_t *op;       /* pending get, or NULL */
    ag_redis_cmd_t *rcmd; /* pending GET (or claim) on Redis, or NULL */
    /* Coalescing across instances: the flight key, this request's claim on
     * it, the wait while another instance fetches, and its end. */
    char *cache_key, *flight_key; /* on Redis */
    bool claimed;
    uv_timer_t *poll; /* malloc'd: it outlives the pool until closed */
    uint64_t wait_until;
    char key[GW_KV_KEY_LEN];
} lookup_t;

static void release_claim(gw_worker_t *w, const char *flight_key);

static void on_poll_closed(uv_handle_t *h)
{
    free(h);
}

static void lookup_cancel(void *p)
{
    lookup_t *l = p;
    ag_kv_op_cancel(l->op);
    l->op = NULL;
    ag_redis_cancel(l->rcmd);
    l->rcmd = NULL;
    if (l->poll) {
        uv_close((uv_handle_t *)l->poll, on_poll_closed);
        l->poll = NULL;
    }
    /* The answer is stored (the fill went first on this loop's connection) or
     * it never will be: other instances' waiters may go on either way. */
    if (l->claimed)
        release_claim(l->w, l->flight_key);
    l->claimed = false;
}

/* Serves the entry through the route's protocol. @return true when it did. */
static bool serve_entry(lookup_t *l, const ag_kv_value_t *v)
{
    ag_req_t *req = l->req;
    cache_entry_t e;
    if (!ag__gw_parse_entry(v, &e))
        return false;
    req->ai.cache = AG_CACHE_HIT;
    long long in = e.in, out = e.out;
    unsigned long units = e.units;
    if (e.raw) {
        /* A Message keeps its figures inside: read them for the usage entry. */
        ag_buf_t text;
        ag_buf_init(&text, 0);
        char stop[64];
        if (ag__gw_entry_text(&e, &text, &in, &out, stop))
            units = ag_utf16_length(text.data ? text.data : "", text.len);
        ag_buf_fini(&text);
    }
    req->ai.output_units = (uint32_t)units;
    gw_step_tokens(req, l->route, in, out, 0, 0);
    return l->route->def->proto->serve_cached(req, &e, l->model, l->stream);
}

static void on_cache_value(void *ctx, int rc, ag_kv_value_t *v)
{
    lookup_t *l = ctx;
    l->op = NULL;
    if (rc == 0) {
        bool served = serve_entry(l, v);
        if (served)
            return; /* the request may be finished: l is gone with its pool */
        /* Nothing was sent: the request and l are still alive. */
        ag_log_warn("request %s: ignoring an unusable cache entry %s", l->req->id, l->key);
        l->req->ai.cache = AG_CACHE_MISS;
        l->req->ai.output_units = 0;
        gw_step_tokens(l->req, l->route, 0, 0, 0, 0);
    } else if (rc != AG_ENOTFOUND) {
        ag_log_warn("request %s: cache lookup failed: %s", l->req->id, ag_strerror(rc));
    }
    l->miss(l->ctx);
}

/* The GET's answer as the KV store would give it. A Redis that cannot answer
 * is a miss: the request goes upstream rather than wait or fail. */
static void on_redis_cache_value(void *ctx, int rc, const ag_resp_t *reply)
{
    lookup_t *l = ctx;
    l->rcmd = NULL;
    if (rc == 0 && reply->type == AG_RESP_NIL) {
        on_cache_value(l, AG_ENOTFOUND, NULL);
        return;
    }
    if (rc == 0 && reply->type != AG_RESP_BULK)
        rc = AG_REDIS_EREPLY;
    if (rc < 0) {
        gw_redis_warn(l->w, "look up the cache", rc, "requests go upstream");
        on_cache_value(l, AG_ENOTFOUND, NULL);
        return;
    }
    /* The entry codec reads a NUL-terminated value, as the KV store keeps it. */
    ag_kv_value_t v = {.data = malloc(reply->len + 1), .len = reply->len};
    if (!v.data) {
        on_cache_value(l, -ENOMEM, NULL);
        return;
    }
    memcpy(v.data, reply->str, reply->len);
    v.data[reply->len] = '\0';
    on_cache_value(l, 0, &v); /* l may be gone now: v is ours */
    free(v.data);
}

/* ---- coalescing across instances --------------------------------------------------
 * On a miss, the lookup also claims the entry's fetch for this instance, in the
 * same round trip: {1, value} a hit; {2, 1} claimed now, {2, 0} this instance's
 * already (its local flight coalesces), {3} another instance fetches: wait for
 * the entry, asking again every POLL_MS, until it comes, the claim goes (that
 * fetch failed or was not cacheable, or its instance died: claim it then) or
 * the deadline passes. */
static const char claim_lua[] =
    "local v = redis.call('GET', KEYS[1])\n"
    "if v then return {1, v} end\n"
    "if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then return {2, 1} end\n"
    "if redis.call('GET', KEYS[2]) == ARGV[1] then return {2, 0} end\n"
    "return {3}\n";
static const char release_lua[] =
    "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end\n"
    "return 0\n";
static const char renew_lua[] = "if redis.call('GET', KEYS[1]) == ARGV[1] then return "
                                "redis.call('PEXPIRE', KEYS[1], ARGV[2]) end\n"
                                "return 0\n";
static ag_redis_script_t claim_script, release_script, renew_script;
static pthread_once_t scripts_once = PTHREAD_ONCE_INIT;

#define POLL_MS 25
/* A claim lives CLAIM_TTL_MS and its request renews it every CLAIM_RENEW_MS:
 * an instance that dies holding one keeps the others waiting seconds, not
 * the upstream deadline. */
#define CLAIM_TTL_MS 5000
#define CLAIM_RENEW_MS 2000

static void scripts_init(void)
{
    ag_redis_script_init(&claim_script, claim_lua);
    ag_redis_script_init(&release_script, release_lua);
    ag_redis_script_init(&renew_script, renew_lua);
}

static void on_released(void *ctx, int rc, const ag_resp_t *reply)
{
    AG_UNUSED(reply);
    if (rc < 0 && rc != AG_REDIS_ECLOSED)
        gw_redis_warn(ctx, "release a claim on a cached answer", rc,
                      "other instances wait for its expiry");
}

/* Fire and forget: queued after this loop's fill of the same entry. */
static void release_claim(gw_worker_t *w, const char *flight_key)
{
    if (!w->redis)
        return;
    const char *argv[] = {flight_key, w->gw->instance_id};
    if (ag_redis_eval(w->redis, &release_script, 1, 2, argv, NULL, on_released, w, NULL) < 0)
        gw_redis_warn(w, "release a claim on a cached answer", AG_REDIS_EDOWN,
                      "other instances wait for its expiry");
}

static void claim_send(lookup_t *l);

static void on_poll(uv_timer_t *t)
{
    claim_send(t->data);
}

static void on_renewed(void *ctx, int rc, const ag_resp_t *reply)
{
    AG_UNUSED(reply);
    if (rc < 0 && rc != AG_REDIS_ECLOSED)
        gw_redis_warn(ctx, "renew a claim on a cached answer", rc,
                      "other instances may fetch it too");
}

/* The claimant's heartbeat, for as long as its request lives. */
static void on_renew(uv_timer_t *t)
{
    lookup_t *l = t->data;
    if (!l->claimed || !l->w->redis)
        return;
    char ttl[16];
    snprintf(ttl, sizeof(ttl), "%d", CLAIM_TTL_MS);
    const char *argv[] = {l->flight_key, l->w->gw->instance_id, ttl};
    (void)ag_redis_eval(l->w->redis, &renew_script, 1, 3, argv, NULL, on_renewed, l->w, NULL);
}

/* The lookup's timer: the wait's polls, then the claim's renewals. */
static uv_timer_t *lookup_timer(lookup_t *l)
{
    if (!l->poll && (l->poll = malloc(sizeof(*l->poll))) != NULL) {
        uv_timer_init(l->w->loop, l->poll);
        l->poll->data = l;
    }
    return l->poll;
}

static void on_claim(void *ctx, int rc, const ag_resp_t *reply)
{
    lookup_t *l = ctx;
    l->rcmd = NULL;
    int64_t verdict = 0;
    if (rc == 0 && reply->type == AG_RESP_ARRAY && reply->len >= 1 &&
        reply->elems[0].type == AG_RESP_INTEGER)
        verdict = reply->elems[0].integer;
    if (verdict == 1 && reply->len == 2 && reply->elems[1].type == AG_RESP_BULK) {
        on_redis_cache_value(l, 0, &reply->elems[1]);
        return;
    }
    if (verdict == 3 && uv_now(l->w->loop) < l->wait_until && lookup_timer(l)) {
        uv_timer_start(l->poll, on_poll, POLL_MS, 0);
        return;
    }
    if (verdict == 2 && reply->len == 2 && reply->elems[1].type == AG_RESP_INTEGER)
        l->claimed = reply->elems[1].integer == 1;
    if (l->claimed && lookup_timer(l))
        uv_timer_start(l->poll, on_renew, CLAIM_RENEW_MS, CLAIM_RENEW_MS);
    else if (verdict == 0)
        gw_redis_warn(l->w, "look up the cache", rc < 0 ? rc : AG_REDIS_EREPLY,
                      "requests go upstream");
    /* Claimed, this instance's, waited long enough, or Redis could not say:
     * the request goes on to its own (or its local flight's) fetch. */
    l->miss(l->ctx);
}

static void claim_send(lookup_t *l)
{
    char ttl[16];
    snprintf(ttl, sizeof(ttl), "%d", CLAIM_TTL_MS);
    const char *argv[] = {l->cache_key, l->flight_key, l->w->gw->instance_id, ttl};
    int rc = ag_redis_eval(l->w->redis, &claim_script, 2, 4, argv, NULL, on_claim, l, &l->rcmd);
    if (rc < 0) {
        l->rcmd = NULL;
        gw_redis_warn(l->w, "look up the cache", rc, "requests go upstream");
        l->miss(l->ctx);
    }
}

static void cache_lookup_redis(lookup_t *l, gw_cache_miss_fn miss, void *ctx)
{
    if (l->w->gw->flight_redis) {
        pthread_once(&scripts_once, scripts_init);
        /* Made once: a wait asks again every POLL_MS, from the same pool. */
        l->cache_key = ag_pool_printf(&l->req->pool, "%s%s", l->w->gw->cache_redis, l->key);
        l->flight_key = ag_pool_printf(&l->req->pool, "%s%s", l->w->gw->flight_redis, l->key);
        l->wait_until = uv_now(l->w->loop) + l->route->gen->retry.deadline_ms;
        claim_send(l);
        return;
    }
    char *rkey = ag_pool_printf(&l->req->pool, "%s%s", l->w->gw->cache_redis, l->key);
    const char *argv[] = {"GET", rkey};
    int rc = ag_redis_command(l->w->redis, 2, argv, NULL, on_redis_cache_value, l, &l->rcmd);
    if (rc < 0) {
        l->rcmd = NULL;
        gw_redis_warn(l->w, "look up the cache", rc, "requests go upstream");
        miss(ctx);
    }
}

void gw_cache_lookup(gw_worker_t *w, ag_req_t *req, const gw_route_t *route, const char *key,
                     const char *model, bool stream, gw_cache_miss_fn miss, void *ctx)
{
    ag_kv_t *kv = w->gw->cache;
    bool on_redis = w->gw->cache_redis && w->redis;
    if ((!kv && !on_redis) || !route->cache) {
        miss(ctx);
        return;
    }
    req->ai.cache = AG_CACHE_MISS;
    lookup_t *l = ag_pool_alloc(&req->pool, sizeof(*l));
    memset(l, 0, sizeof(*l));
    l->w = w;
    l->req = req;
    l->route = route;
    l->model = model;
    l->stream = stream;
    l->miss = miss;
    l->ctx = ctx;
    size_t klen = strlen(key);
    AG_ASSERT(klen < sizeof(l->key));
    memcpy(l->key, key, klen + 1);
    ag_pool_on_clear(&req->pool, lookup_cancel, l);
    if (on_redis) {
        cache_lookup_redis(l, miss, ctx);
        return;
    }
    ag_kv_op_t *op = NULL;
    int rc = ag_kv_get_async(kv, l->key, klen, on_cache_value, l, &op);
    if (rc < 0) {
        ag_log_warn("request %s: cache lookup failed: %s", req->id, ag_strerror(rc));
        miss(ctx);
        return;
    }
    /* Completed inline (LMDB): the request may already be finished. Otherwise
     * it is alive until the callback runs, and must be able to cancel it. */
    if (op)
        l->op = op;
}

/* A cache entry: "in out stop\n" (three fields after a UTF-16 length) then JSON. */
bool ag__gw_parse_entry(const ag_kv_value_t *v, cache_entry_t *e)
{
    const char *nl = memchr(v->data, '\n', v->len);
    if (!nl || v->len - (size_t)(nl + 1 - v->data) < 2 || v->data[v->len - 1] != '}')
        return false;
    char *p = v->data, *end;
    e->units = strtoul(p, &end, 10);
    if (end == p)
        return false;
    e->in = strtoll(end, &p, 10);
    e->out = strtoll(p, &end, 10);
    if (end == p)
        return false;
    while (*end == ' ')
        end++;
    size_t slen = (size_t)(nl - end);
    if (slen == 0 || slen >= sizeof(e->stop))
        return false;
    memcpy(e->stop, end, slen);
    e->stop[slen] = '\0';
    e->raw = strcmp(e->stop, "raw") == 0;
    /* The entry may have been written by hand (aigate kv key put): the stop
     * reason goes into replayed JSON, so only a plain word passes. */
    if (!e->raw)
        memmove(e->stop, ag__gw_safe_stop(e->stop), strlen(ag__gw_safe_stop(e->stop)) + 1);
    e->json = nl + 1;
    e->jlen = v->len - (size_t)(nl + 1 - v->data);
    return true;
}

/* The text, token counts and stop reason of an entry. Fails for a Message with
 * blocks other than text (a tool call cannot be replayed as text). */
bool ag__gw_entry_text(const cache_entry_t *e, ag_buf_t *text, long long *in, long long *out,
                       char stop[64])
{
    json_t *root = json_loadb(e->json, e->jlen, JSON_ALLOW_NUL, NULL);
    bool ok = false;
    if (!e->raw) {
        json_t *t = json_object_get(root, "output");
        ok = json_is_string(t) &&
             ag_buf_append(text, json_string_value(t), json_string_length(t)) == 0;
        *in = e->in;
        *out = e->out;
        snprintf(stop, 64, "%s", e->stop);
    } else {
        json_t *content = json_object_get(root, "content"), *block;
        size_t i;
        ok = json_is_array(content);
        json_array_foreach(content, i, block)
        {
            const char *type = json_string_value(json_object_get(block, "type"));
            if (!type || strcmp(type, "text") != 0)
                ok = false;
        }
        ok = ok && ag__gw_join_text_blocks(content, text) == 0;
        json_t *usage = json_object_get(root, "usage");
        *in = ag__gw_usage_int(usage, "input_tokens");
        *out = ag__gw_usage_int(usage, "output_tokens");
        const char *sr = json_string_value(json_object_get(root, "stop_reason"));
        snprintf(stop, 64, "%s", ag__gw_safe_stop(sr));
    }
    json_decref(root);
    return ok;
}

/* Replays a cached answer as Anthropic's event stream, so a streaming client
 * served from the cache sees the same event sequence as a live one. */
bool ag__gw_replay_stream(ag_req_t *req, ag_str_t model, ag_str_t text, long long in, long long out,
                          const char *stop)
{
    ag_buf_t b;
    ag_buf_init(&b, 0);
    int rc = ag_buf_printf(&b,
                           "event: message_start\ndata: {\"type\":\"message_start\",\"message\":"
                           "{\"id\":\"msg_aigate_%s\",\"type\":\"message\",\"role\":\"assistant\","
                           "\"model\":",
                           req->id);
    if (rc == 0)
        rc = ag_json_append_string(&b, model);
    if (rc == 0)
        rc = ag_buf_printf(
            &b,
            ",\"content\":[],\"stop_reason\":null,\"stop_sequence\":null,\"usage\":"
            "{\"input_tokens\":%lld,\"output_tokens\":1}}}\n\n"
            "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,"
            "\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n"
            "event: ping\ndata: {\"type\": \"ping\"}\n\n"
            "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,"
            "\"delta\":{\"type\":\"text_delta\",\"text\":",
            in);
    if (rc == 0)
        rc = ag_json_append_string(&b, text);
    if (rc == 0)
        rc =
            ag_buf_printf(&b,
                          "}}\n\nevent: content_block_stop\ndata: {\"type\":\"content_block_stop\","
                          "\"index\":0}\n\nevent: message_delta\ndata: {\"type\":\"message_delta\","
                          "\"delta\":{\"stop_reason\":\"%s\",\"stop_sequence\":null},\"usage\":"
                          "{\"output_tokens\":%lld}}\n\nevent: message_stop\ndata: "
                          "{\"type\":\"message_stop\"}\n\n",
                          stop, out);
    if (rc == 0) {
        ag_req_add_header(req, "x-aigate-cache", AG_STR_LIT("hit"));
        ag_req_add_header(req, "Cache-Control", AG_STR_LIT("no-cache"));
        ag_req_respond(req, 200, "text/event-stream; charset=utf-8", ag_str(b.data, b.len));
    }
    ag_buf_fini(&b);
    return rc == 0;
}

/* ---- encoding ------------------------------------------------------------------ */

int gw_cache_encode_stream(ag_buf_t *v, const ag_anthropic_stream_t *a)
{
    const char *stop = a->stop_reason.len ? ag_buf_cstr((ag_buf_t *)&a->stop_reason) : "end_turn";
    ag_str_t text = ag_str(a->text.data ? a->text.data : "", a->text.len);
    int rc = ag_buf_printf(
        v, "%u %lld %lld %s\n{\"output\":", (unsigned)ag_utf16_length(text.ptr, text.len),
        (long long)a->usage.input_tokens, (long long)a->usage.output_tokens,
        ag__gw_safe_stop(stop));
    if (rc == 0)
        rc = ag_json_append_string(v, text);
    if (rc == 0)
        rc = ag_buf_printf(
            v,
            ",\"usage\":{\"input_tokens\":%lld,\"cache_creation_input_tokens\":%lld,"
            "\"cache_read_input_tokens\":%lld,\"output_tokens\":%lld}}",
            (long long)a->usage.input_tokens, (long long)a->usage.cache_creation_input_tokens,
            (long long)a->usage.cache_read_input_tokens, (long long)a->usage.output_tokens);
    return rc;
}

int gw_cache_encode_raw(ag_buf_t *v, ag_str_t message)
{
    int rc = ag_buf_append_cstr(v, "0 0 0 raw\n");
    return rc == 0 ? ag_buf_append_str(v, message) : rc;
}

/* ---- sweeping --------------------------------------------------------------------- */

/* Expired entries are invisible at once (the store checks on read); this
 * gives their space back, a bounded batch at a time. */
#define SWEEP_BATCH 10000

void gw_cache_sweep(void *gateway)
{
    ag_gateway_t *gw = gateway;
    int n = ag_kv_sweep(gw->cache, SWEEP_BATCH);
    if (n > 0)
        ag_log_debug("cache sweep: %d expired entries reclaimed", n);
}

bool gw_cache_replay_entry(ag_req_t *req, const cache_entry_t *e, const char *model)
{
    ag_buf_t text;
    ag_buf_init(&text, 0);
    long long in, out;
    char stop[64];
    bool ok = ag__gw_entry_text(e, &text, &in, &out, stop) &&
              ag__gw_replay_stream(req, ag_str_c(model),
                                   ag_str(text.data ? text.data : "", text.len), in, out, stop);
    ag_buf_fini(&text);
    return ok;
}
