/* SPDX-License-Identifier: MIT
 *
 * cache.c: the response cache: SHA-256 keys, LMDB entries written off the loop,
 * and answers served from them as JSON, as a Message, or replayed as SSE.
 */
#include "util/platform.h"

#include <errno.h>
#include <string.h>

#include <openssl/evp.h>

#include "gateway/internal.h"
#include "upstream/sse.h"
#include "util/errors.h"
#include "util/fmt.h"
#include "util/json.h"
#include "util/log.h"
#include "util/utf.h"

/* ---- /api/generate: the cache ------------------------------------------------- */

typedef struct ag__gw_cache_fill {
    uv_work_t work;
    ag_gateway_t *gw;
    ag_kv_t *kv;
    int64_t ttl_s;
    char key[8 + 2 * SHA256_DIGEST_LENGTH + 1];
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

/* Stores the answer off the loop thread: an LMDB write may wait on the disk. */
void ag__gw_cache_fill(gw_worker_t *gww, uv_loop_t *loop, const char *key, ag_buf_t *value)
{
    ag_gateway_t *gw = gww->gw;
    if (!gw->cache || value->len == 0)
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
    cf->ttl_s = (gw->cfg->cache_ttl_ms + 999) / 1000;
    snprintf(cf->key, sizeof(cf->key), "%s", key);
    cf->len = value->len;
    memcpy(cf->value, value->data, value->len);
    cf->work.data = cf;
    if (uv_queue_work(loop, &cf->work, cache_fill_work, cache_fill_done) < 0) {
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

void ag__gw_cache_key(const unsigned char *digest, char out[8 + 2 * SHA256_DIGEST_LENGTH + 1])
{
    static const char hex[] = "0123456789abcdef";
    memcpy(out, "gen:v1:", 7);
    for (int i = 0; i < SHA256_DIGEST_LENGTH; i++) {
        out[7 + 2 * i] = hex[digest[i] >> 4];
        out[8 + 2 * i] = hex[digest[i] & 15];
    }
    out[7 + 2 * SHA256_DIGEST_LENGTH] = '\0';
}

/* Answers from the cache, as JSON or (stream_model given) as a replayed event
 * stream. @return true when it did. */
void ag__gw_usage_from_entry(usage_t *u, const cache_entry_t *e)
{
    u->cached = true;
    u->output_units = (uint32_t)e->units;
    u->in = e->in;
    u->out = e->out;
}

bool ag__gw_cache_lookup(gw_worker_t *gww, ag_req_t *req, const char *key,
                         const ag_str_t *stream_model, usage_t *usage)
{
    ag_kv_value_t v;
    if (!gww->gw->cache || ag_kv_get(gww->gw->cache, key, strlen(key), &v) != 0)
        return false;
    bool served = false;
    cache_entry_t e;
    if (ag__gw_parse_entry(&v, &e) && !e.raw) {
        ag__gw_usage_from_entry(usage, &e);
        if (stream_model) {
            ag_buf_t text;
            ag_buf_init(&text, 0);
            long long in, out;
            char stop[64];
            served =
                ag__gw_entry_text(&e, &text, &in, &out, stop) &&
                ag__gw_replay_stream(req, *stream_model,
                                     ag_str(text.data ? text.data : "", text.len), in, out, stop);
            ag_buf_fini(&text);
        } else {
            ag_buf_t b;
            ag_buf_init(&b, 0);
            if (ag_buf_append(&b, e.json, e.jlen - 1) == 0 &&
                ag_buf_append_cstr(&b, ",\"cached\":true}") == 0) {
                ag_req_add_header(req, "x-aigate-cache", AG_STR_LIT("hit"));
                ag_req_respond(req, 200, "application/json", ag_str(b.data, b.len));
                served = true;
            }
            ag_buf_fini(&b);
        }
    }
    if (!served)
        ag_log_warn("request %s: ignoring an unusable cache entry %s", req->id, key);
    ag_kv_value_free(&v);
    return served;
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
    json_t *root = json_loadb(e->json, e->jlen, 0, NULL);
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

/* A cached answer as Anthropic's Message, for a non-streaming /v1/messages. */
bool ag__gw_respond_message(ag_req_t *req, ag_str_t model, const cache_entry_t *e)
{
    if (e->raw) {
        ag_req_add_header(req, "x-aigate-cache", AG_STR_LIT("hit"));
        ag_req_respond(req, 200, "application/json", ag_str(e->json, e->jlen));
        return true;
    }
    ag_buf_t text, b;
    ag_buf_init(&text, 0);
    ag_buf_init(&b, 0);
    long long in, out;
    char stop[64];
    bool ok = ag__gw_entry_text(e, &text, &in, &out, stop);
    int rc = ok ? ag_buf_printf(&b,
                                "{\"id\":\"msg_aigate_%s\",\"type\":\"message\",\"role\":"
                                "\"assistant\",\"model\":",
                                req->id)
                : -1;
    if (rc == 0)
        rc = ag_json_append_string(&b, model);
    if (rc == 0)
        rc = ag_buf_append_cstr(&b, ",\"content\":[{\"type\":\"text\",\"text\":");
    if (rc == 0)
        rc = ag_json_append_string(&b, ag_str(text.data ? text.data : "", text.len));
    if (rc == 0)
        rc = ag_buf_printf(&b,
                           "}],\"stop_reason\":\"%s\",\"stop_sequence\":null,\"usage\":"
                           "{\"input_tokens\":%lld,\"output_tokens\":%lld}}",
                           stop, in, out);
    if (rc == 0) {
        ag_req_add_header(req, "x-aigate-cache", AG_STR_LIT("hit"));
        ag_req_respond(req, 200, "application/json", ag_str(b.data, b.len));
    }
    ag_buf_fini(&text);
    ag_buf_fini(&b);
    return rc == 0;
}
