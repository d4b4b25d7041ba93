/* SPDX-License-Identifier: MIT
 *
 * route_messages.c: POST /v1/messages, Anthropic's Messages API passed through
 * (our key replaces the client's; status, body and anthropic-* headers come
 * back as they are), and its protocol: Anthropic's error shape, Messages and
 * replayed event streams from the cache.
 */
#include "util/platform.h"

#include <string.h>

#include "gateway/access.h"
#include "gateway/answer.h"
#include "gateway/cache.h"
#include "gateway/message.h"
#include "gateway/relay.h"
#include "gateway/steps.h"
#include "gateway/upcall.h"
#include "util/errors.h"
#include "util/json.h"
#include "util/log.h"
#include "util/utf.h"

/* The header lines for /v1/messages, in the request pool: our key, never the
 * client's (its x-api-key or Authorization, an aigate key when auth is on, is
 * consumed here); the client's anthropic-version (ours when absent) and
 * anthropic-beta. */
static const char *const *passthrough_headers(const gw_gen_t *gen, ag_req_t *req)
{
    const char **h = ag_pool_alloc(&req->pool, 6 * sizeof(char *));
    size_t n = 0;
    h[n++] = gen->api_key_header;
    ag_str_t ver = ag_req_header(req, "anthropic-version");
    h[n++] = ver.len ? ag_pool_printf(&req->pool, "anthropic-version: %.*s", (int)ver.len, ver.ptr)
                     : "anthropic-version: " ANTHROPIC_VERSION;
    ag_str_t beta = ag_req_header(req, "anthropic-beta");
    if (beta.len)
        h[n++] = ag_pool_printf(&req->pool, "anthropic-beta: %.*s", (int)beta.len, beta.ptr);
    h[n++] = "content-type: application/json";
    h[n++] = "accept: application/json, text/event-stream";
    h[n] = NULL;
    return h;
}

/* ---- POST /v1/messages: Anthropic's API, passed through ------------------------- */

/* Anthropic's error shape: {"type":"error","error":{"type","message"}}. */
static void messages_error(ag_req_t *req, int status, const char *type, const char *msg)
{
    ag_buf_t b;
    ag_buf_init(&b, 0);
    int rc = ag_buf_printf(&b, "{\"type\":\"error\",\"error\":{\"type\":\"%s\",\"message\":", type);
    if (rc == 0)
        rc = ag_json_append_string(&b, ag_str_c(msg));
    if (rc == 0)
        rc = ag_buf_append_cstr(&b, "}}");
    ag_req_respond(req, status, "application/json", rc == 0 ? ag_str(b.data, b.len) : AG_STR_NULL);
    ag_buf_fini(&b);
}

/* A cached answer is the Message the upstream sent, whole (a stream is cached
 * only when it rebuilds exactly: message.c); it is served as it is, or as the
 * event stream that rebuilds to it. */
static bool messages_serve_cached(ag_req_t *req, const cache_entry_t *e, const char *model,
                                  bool stream)
{
    AG_UNUSED(model);
    if (!e->raw)
        return false; /* not a Message (another route's entry): a miss */
    if (!stream) {
        ag_req_add_header(req, "x-aigate-cache", AG_STR_LIT("hit"));
        ag_req_respond(req, 200, "application/json", ag_str(e->json, e->jlen));
        return true;
    }
    ag_buf_t b;
    ag_buf_init(&b, 0);
    bool ok = gw_msg_to_stream(e->json, e->jlen, &b) == 0;
    if (ok) {
        ag_req_add_header(req, "x-aigate-cache", AG_STR_LIT("hit"));
        ag_req_add_header(req, "Cache-Control", AG_STR_LIT("no-cache"));
        ag_req_respond(req, 200, "text/event-stream; charset=utf-8", ag_str(b.data, b.len));
    }
    ag_buf_fini(&b);
    return ok;
}

const gw_protocol_t gw_proto_anthropic = {
    .name = "anthropic",
    .respond_error = messages_error,
    .upstream_failure = "Upstream connection failed",
    .passthrough = true,
    .translate_stream = NULL,
    .serve_cached = messages_serve_cached,
};

typedef struct msg_req {
    ag_req_t *req;
    gw_worker_t *w;
    const gw_route_t *route;
    ag_call_t *call;
    gw_access_t *acc;
    json_t *root;
    const char *model; /* NULL: the body named none (the upstream will say so) */
    int64_t max_tokens;
    bool stream;
    bool count_tokens;          /* POST /v1/messages/count_tokens: free upstream, never cached */
    char kv_key[GW_KV_KEY_LEN]; /* "" when the answer is not cached */
} msg_req_t;

static void msg_cleanup(void *p)
{
    msg_req_t *m = p;
    ag_call_cancel(m->call);
    m->call = NULL;
    if (m->root)
        json_decref(m->root);
    m->root = NULL;
}

static void msg_abort(ag_req_t *req)
{
    msg_req_t *m = req->handler_data;
    ag_call_cancel(m->call);
    m->call = NULL;
}

static void msg_done(void *ctx, const ag_upstream_response_t *resp, const ag_call_summary_t *s)
{
    msg_req_t *m = ctx;
    ag_req_t *req = m->req;
    int64_t t0 = ag_mono_us();
    m->call = NULL;
    if (!gw_call_answered(req, m->route, m->acc, resp, s, m->kv_key))
        return;
    if (resp->error || resp->status == 0) {
        gw_access_settle_failure(m->acc, resp->error);
        ag__gw_log_upstream_failure(req->id, resp);
        messages_error(req, 502, "api_error", "Upstream connection failed");
        return;
    }
    json_t *root = resp->status == 200 ? json_loadb(resp->body.ptr, resp->body.len, 0, NULL) : NULL;
    if (resp->status < 100 || resp->status > 599 ||
        (resp->status == 200 && !json_is_object(root))) {
        /* Not an answer a client of Anthropic's API can take: say so in its shape. */
        json_decref(root);
        gw_access_settle_failure(m->acc, AG_EUPSTREAM);
        ag_log_warn("request %s: upstream answered %d with %zu bytes that are not a Message",
                    req->id, resp->status, resp->body.len);
        messages_error(req, 502, "api_error", "Upstream sent an invalid response");
        return;
    }
    gw_forward_upstream_headers(req, resp->headers);
    if (resp->status == 200 && !m->count_tokens) {
        json_t *usage = json_object_get(root, "usage");
        ag_buf_t text;
        ag_buf_init(&text, 0);
        ag__gw_join_text_blocks(json_object_get(root, "content"), &text);
        req->ai.output_units = (uint32_t)ag_utf16_length(text.data ? text.data : "", text.len);
        gw_step_tokens(req, m->route, ag__gw_usage_int(usage, "input_tokens"),
                       ag__gw_usage_int(usage, "output_tokens"),
                       ag__gw_usage_int(usage, "cache_creation_input_tokens"),
                       ag__gw_usage_int(usage, "cache_read_input_tokens"));
        ag_buf_fini(&text);
    }
    json_decref(root);
    if (resp->status == 200 && m->kv_key[0]) {
        ag_buf_t v;
        ag_buf_init(&v, 0);
        if (gw_cache_encode_raw(&v, resp->body) == 0)
            gw_cache_fill(m->w, m->route->gen->cache_ttl_s, m->kv_key, &v);
        ag_buf_fini(&v);
    }
    gw_access_settle(m->acc, req);
    ag_req_cpu_add(req, resp->cpu_us + ag_mono_us() - t0);
    ag_req_respond(req, resp->status, gw_upstream_content_type(req, resp->headers), resp->body);
}

/* Upstream: the cache could not answer. */
static void msg_reserved(void *ctx);

static void msg_upstream(void *ctx)
{
    msg_req_t *m = ctx;
    ag_req_t *req = m->req;
    const gw_gen_t *gen = m->route->gen;
    if (!gen->api_key_header) {
        messages_error(req, 503, "api_error", MSG_NO_KEY);
        return;
    }
    /* count_tokens costs nothing upstream: it takes a request of the key's rpm alone. */
    gw_step_reserve(req, m->route, m->acc, m->count_tokens ? NULL : m->model, req->body.len,
                    m->count_tokens ? 0 : m->max_tokens, gw_body_asks_caching(req->body),
                    msg_reserved, m);
}

/* The budgets let it through: the call. */
static void msg_reserved(void *ctx)
{
    msg_req_t *m = ctx;
    ag_req_t *req = m->req;
    const gw_gen_t *gen = m->route->gen;
    const char *const *headers = passthrough_headers(gen, req);
    if (m->stream && !m->count_tokens) {
        json_decref(m->root);
        m->root = NULL;
        gw_relay_start(m->w, req, m->route, m->model, req->body, headers,
                       m->kv_key[0] ? m->kv_key : NULL, m->acc, NULL);
        return;
    }
    ag_upstream_request_t u = gw_upstream_request(gen, headers, req->body, false);
    if (m->count_tokens)
        u.url = gen->count_tokens_url;
    req->on_abort = msg_abort;
    /* The request may be answered, even recycled, before this returns. */
    int rc = gw_call_start(m->w, m->route, m->model, &u, msg_done, m, &m->call);
    if (rc < 0) {
        gw_access_settle_none(m->acc);
        messages_error(req, 502, "api_error", "Upstream connection failed");
    }
}

/* What /v1/messages and count_tokens share: the key, the body, the model.
 * @return the request's state, or NULL when it was answered. */
static msg_req_t *msg_begin(ag_req_t *req, gw_worker_t *w, const gw_route_t *route,
                            bool count_tokens)
{
    msg_req_t *m = ag_pool_alloc(&req->pool, sizeof(*m));
    memset(m, 0, sizeof(*m));
    m->req = req;
    m->w = w;
    m->route = route;
    m->count_tokens = count_tokens;
    req->handler_data = m;
    ag_pool_on_clear(&req->pool, msg_cleanup, m);
    if (!(m->acc = gw_step_auth(req, w, route)))
        return NULL;
    /* Duplicate keys are refused: the upstream might read another duplicate
     * than the one checked here and cached under this key. */
    json_error_t jerr;
    m->root =
        json_loadb(req->body.ptr, req->body.len, JSON_ALLOW_NUL | JSON_REJECT_DUPLICATES, &jerr);
    if (!json_is_object(m->root)) {
        bool dup = strstr(jerr.text, "duplicate") != NULL;
        messages_error(req, 400, "invalid_request_error",
                       dup ? "The request body has a duplicate key."
                           : "The request body is not valid JSON.");
        return NULL;
    }
    json_t *model = json_object_get(m->root, "model");
    if (!json_is_string(model)) {
        /* Checked here, not upstream: an unchecked model would pass the allowlist. */
        messages_error(req, 400, "invalid_request_error",
                       model ? "model: Input should be a valid string" : "model: Field required");
        return NULL;
    }
    {
        const char *mname =
            ag_pool_strndup(&req->pool, json_string_value(model), json_string_length(model));
        req->ai.model = mname; /* the access log names it even when refused */
        m->model = mname;
        if (!gw_route_model_allowed(route, json_string_value(model), json_string_length(model))) {
            gw_log_model_refused(req, route, json_string_value(model), json_string_length(model));
            messages_error(req, 400, "invalid_request_error", "model: not allowed by this gateway");
            return NULL;
        }
        if (!gw_access_model_allowed(m->acc, json_string_value(model), json_string_length(model))) {
            messages_error(req, 403, "permission_error", "model: not allowed for this API key");
            return NULL;
        }
    }
    json_t *mt = json_object_get(m->root, "max_tokens");
    m->max_tokens = json_is_integer(mt) ? json_integer_value(mt) : 0;
    m->stream = !count_tokens && json_is_true(json_object_get(m->root, "stream"));
    gw_step_usage_begin(req, m->model, ag__gw_last_user_units(m->root), m->stream);
    return m;
}

void gw_count_tokens_handle(ag_req_t *req, gw_worker_t *w, const gw_route_t *route)
{
    msg_req_t *m = msg_begin(req, w, route, true);
    if (m)
        gw_step_limit(req, w, route, msg_upstream, m);
}

static void msg_limited(void *ctx);

void gw_messages_handle(ag_req_t *req, gw_worker_t *w, const gw_route_t *route)
{
    msg_req_t *m = msg_begin(req, w, route, false);
    if (m)
        gw_step_limit(req, w, route, msg_limited, m);
}

/* What follows the rate limit: the cache, then the upstream. */
static void msg_limited(void *ctx)
{
    msg_req_t *m = ctx;
    ag_req_t *req = m->req;
    gw_worker_t *w = m->w;
    const gw_route_t *route = m->route;
    const char *mname = m->model;
    /* The cache key covers the request without "stream" (so streamed and plain
     * requests share entries) and the headers that change the answer. */
    ag_str_t ver = ag_req_header(req, "anthropic-version"),
             beta = ag_req_header(req, "anthropic-beta");
    json_object_del(m->root, "stream");
    char *canon = json_dumps(m->root, JSON_COMPACT | JSON_SORT_KEYS);
    unsigned char digest[SHA256_DIGEST_LENGTH];
    const ag_str_t parts[] = {AG_STR_LIT("messages"), ver, beta, ag_str_c(canon)};
    ag__gw_sha256_parts(parts, AG_ARRAY_LEN(parts), digest);
    free(canon);
    /* v2: entries are whole Messages (v1 held streams as their text alone). */
    gw_cache_key("msg:v2:", digest, m->kv_key);
    bool no_cache, no_store;
    gw_step_cache_control(req, &no_cache, &no_store);
    /* Only text answers can be replayed: with tools or thinking, no caching. */
    bool cacheable = route->cache && gw_cache_on(w->gw) && !json_object_get(m->root, "tools") &&
                     !json_object_get(m->root, "thinking") && mname;
    char key[GW_KV_KEY_LEN];
    memcpy(key, m->kv_key, sizeof(key));
    if (!cacheable || no_store)
        m->kv_key[0] = '\0';
    if (!cacheable || no_cache) {
        if (cacheable)
            req->ai.cache = AG_CACHE_BYPASS;
        msg_upstream(m);
        return;
    }
    gw_cache_lookup(w, req, route, key, mname, m->stream, msg_upstream, m);
}
