/* SPDX-License-Identifier: MIT
 *
 * stream.c: the streaming relay (back-pressure, idle cut, cache fill from a
 * complete stream) and POST /v1/messages, Anthropic's API passed through.
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

/* ---- streaming relay (/api/generate with "stream": true, /v1/messages) ---------- */

/* Past this many bytes queued for a slow client, the upstream transfer is
 * paused; memory per stream stays near this bound whatever the client does. */
#define STREAM_HIGH_WATER (256 * 1024)

typedef struct relay {
    ag_req_t *req;
    gw_worker_t *gww;
    ag_upstream_xfer_t *xfer;
    ag_sse_parser_t sse;
    ag_anthropic_stream_t acc;
    relay_kind_t kind;
    usage_t *usage;
    bool started;
    bool paused;
    char kv_key[8 + 2 * SHA256_DIGEST_LENGTH + 1]; /* "" when the stream is not cached */
} relay_t;

static void relay_cleanup(void *p)
{
    relay_t *r = p;
    ag_upstream_cancel(r->xfer);
    r->xfer = NULL;
    ag_sse_parser_fini(&r->sse);
    ag_anthropic_stream_fini(&r->acc);
}

/* Copies what the stream said into the usage entry. */
static void relay_account(relay_t *r, const char *outcome)
{
    usage_t *u = r->usage;
    const ag_anthropic_stream_t *a = &r->acc;
    u->outcome = outcome;
    u->output_units = (uint32_t)ag_utf16_length(a->text.data ? a->text.data : "", a->text.len);
    u->in = a->usage.input_tokens;
    u->out = a->usage.output_tokens;
    u->cache_create = a->usage.cache_creation_input_tokens;
    u->cache_read = a->usage.cache_read_input_tokens;
}

static void relay_abort(ag_req_t *req)
{
    relay_t *r = req->handler_data;
    relay_account(r, "clientDisconnected");
    /* The client left: stop the upstream call at once, it costs tokens. */
    ag_upstream_cancel(r->xfer);
    r->xfer = NULL;
}

static void relay_drained(ag_req_t *req, void *data)
{
    relay_t *r = data;
    AG_UNUSED(req);
    if (r->paused && r->xfer) {
        r->paused = false;
        ag_upstream_resume(r->xfer);
    }
}

/* Response headers of Anthropic's that a client of /v1/messages should see. */
static void forward_upstream_headers(ag_req_t *req, ag_str_t headers)
{
    const char *p = headers.ptr, *end = headers.ptr + headers.len;
    while (p < end) {
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        const char *le = eol ? eol : end;
        const char *colon = memchr(p, ':', (size_t)(le - p));
        if (colon) {
            size_t nlen = (size_t)(colon - p);
            bool fwd = (nlen > 10 && strncasecmp(p, "anthropic-", 10) == 0) ||
                       (nlen == 10 && strncasecmp(p, "request-id", 10) == 0) ||
                       (nlen == 11 && strncasecmp(p, "retry-after", 11) == 0) ||
                       (nlen == 14 && strncasecmp(p, "x-should-retry", 14) == 0);
            if (fwd) {
                const char *v = colon + 1, *ve = le;
                while (v < ve && (*v == ' ' || *v == '\t'))
                    v++;
                while (ve > v && (ve[-1] == '\r' || ve[-1] == ' '))
                    ve--;
                char *name = ag_pool_strndup(&req->pool, p, nlen);
                ag_req_add_header(req, name, ag_str(v, (size_t)(ve - v)));
            }
        }
        p = eol ? eol + 1 : end;
    }
}

static int relay_on_data(void *ctx, int status, ag_str_t headers, const char *data, size_t len)
{
    relay_t *r = ctx;
    ag_req_t *req = r->req;
    if (!r->started) {
        r->started = true;
        if (r->kind == RELAY_MESSAGES)
            forward_upstream_headers(req, headers);
        ag_req_add_header(req, "Cache-Control", AG_STR_LIT("no-cache"));
        ag_req_stream_start(req, status, "text/event-stream; charset=utf-8");
        ag_req_on_drain(req, relay_drained, r);
    }
    size_t queued = 0;
    ag_req_stream_write(req, NULL, 0, &queued);
    if (queued >= STREAM_HIGH_WATER) {
        r->paused = true;
        return AG_EAGAIN; /* curl hands these same bytes again on resume */
    }
    if (ag_req_stream_write(req, data, len, &queued) < 0)
        return -1;
    if (ag_sse_parser_feed(&r->sse, data, len) != 0)
        r->kv_key[0] = '\0'; /* unparsable: relay it, but never cache it */
    return 0;
}

static const char stream_error_event[] =
    "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"api_error\",\"message\":"
    "\"Upstream connection failed\"}}\n\n";

static void relay_done(void *ctx, const ag_upstream_response_t *resp)
{
    relay_t *r = ctx;
    ag_req_t *req = r->req;
    r->xfer = NULL;
    req->upstream_us = resp->duration_us;
    if (!r->started) {
        /* Nothing relayed yet: answer as the non-streaming path would. */
        r->usage->outcome = "upstreamError";
        if (r->kind == RELAY_MESSAGES && !resp->error && resp->status >= 400) {
            forward_upstream_headers(req, resp->headers);
            ag_str_t ct = ag_upstream_header(resp->headers, "content-type");
            ag_req_respond(req, resp->status,
                           ct.len ? ag_pool_strndup(&req->pool, ct.ptr, ct.len)
                                  : "application/json",
                           resp->body);
            return;
        }
        ag__gw_log_upstream_failure(req->id, resp);
        if (r->kind == RELAY_MESSAGES)
            ag__gw_messages_error(req, 502, "api_error", "Upstream connection failed");
        else
            ag_req_respond_error(req, 502, MSG_AI_ERROR);
        return;
    }
    relay_account(r,
                  resp->error || !ag_anthropic_stream_complete(&r->acc) ? "upstreamError" : "ok");
    if (resp->error) {
        /* Mid-stream failure: tell the client in the stream's own terms, then end. */
        ag__gw_log_upstream_failure(req->id, resp);
        ag_req_stream_write(req, stream_error_event, sizeof(stream_error_event) - 1, NULL);
    } else if (r->kv_key[0] && ag_anthropic_stream_complete(&r->acc) && !r->acc.text_truncated) {
        const ag_anthropic_stream_t *a = &r->acc;
        ag_buf_t v;
        ag_buf_init(&v, 0);
        const char *stop =
            a->stop_reason.len ? ag_buf_cstr((ag_buf_t *)&a->stop_reason) : "end_turn";
        int rc =
            ag_buf_printf(&v, "%u %lld %lld %s\n{\"output\":",
                          (unsigned)ag_utf16_length(a->text.data ? a->text.data : "", a->text.len),
                          (long long)a->usage.input_tokens, (long long)a->usage.output_tokens,
                          ag__gw_safe_stop(stop));
        if (rc == 0)
            rc = ag_json_append_string(&v, ag_str(a->text.data ? a->text.data : "", a->text.len));
        if (rc == 0)
            rc = ag_buf_printf(
                &v,
                ",\"usage\":{\"input_tokens\":%lld,\"cache_creation_input_tokens\":%lld,"
                "\"cache_read_input_tokens\":%lld,\"output_tokens\":%lld}}",
                (long long)a->usage.input_tokens, (long long)a->usage.cache_creation_input_tokens,
                (long long)a->usage.cache_read_input_tokens, (long long)a->usage.output_tokens);
        if (rc == 0)
            ag__gw_cache_fill(r->gww, r->gww->loop, r->kv_key, &v);
        ag_buf_fini(&v);
    }
    ag_req_stream_end(req);
}

void ag__gw_relay_start(gw_worker_t *gww, ag_req_t *req, relay_kind_t kind, ag_str_t body,
                        const char *const *headers, const char *kv_key, usage_t *usage)
{
    ag_gateway_t *gw = gww->gw;
    relay_t *r = ag_pool_alloc(&req->pool, sizeof(*r));
    memset(r, 0, sizeof(*r));
    r->usage = usage;
    r->req = req;
    r->gww = gww;
    r->kind = kind;
    if (kv_key)
        snprintf(r->kv_key, sizeof(r->kv_key), "%s", kv_key);
    ag_sse_parser_init(&r->sse, 0, ag_anthropic_stream_sse_cb, &r->acc);
    ag_anthropic_stream_init(&r->acc, 4u << 20);
    req->handler_data = r;
    ag_pool_on_clear(&req->pool, relay_cleanup, r);
    ag_upstream_request_t u = ag__gw_upstream_request(gw, headers, body, true);
    u.on_data = relay_on_data;
    int rc = ag_upstream_start(gww->upstream, &u, relay_done, r, &r->xfer);
    if (rc < 0) {
        ag_log_error("request %s: cannot start the upstream call: %s", req->id, ag_strerror(rc));
        if (kind == RELAY_MESSAGES)
            ag__gw_messages_error(req, 502, "api_error", "Upstream connection failed");
        else
            ag_req_respond_error(req, 502, MSG_AI_ERROR);
        return;
    }
    req->on_abort = relay_abort;
}

/* The header lines for /v1/messages, in the request pool: our key, never the
 * client's; the client's anthropic-version (ours when absent) and anthropic-beta. */
static const char *const *passthrough_headers(ag_gateway_t *gw, ag_req_t *req)
{
    const char **h = ag_pool_alloc(&req->pool, 6 * sizeof(char *));
    size_t n = 0;
    h[n++] = gw->api_key_header;
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

void ag__gw_messages_error(ag_req_t *req, int status, const char *type, const char *msg)
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

typedef struct msg_req {
    usage_t usage;
    ag_req_t *req;
    gw_worker_t *gww;
    ag_upstream_xfer_t *xfer;
    json_t *root;
    char kv_key[8 + 2 * SHA256_DIGEST_LENGTH + 1];
} msg_req_t;

static void msg_cleanup(void *p)
{
    msg_req_t *m = p;
    ag_upstream_cancel(m->xfer);
    m->xfer = NULL;
    if (m->root)
        json_decref(m->root);
    m->root = NULL;
}

static void msg_abort(ag_req_t *req)
{
    msg_req_t *m = req->handler_data;
    ag_upstream_cancel(m->xfer);
    m->xfer = NULL;
}

static void msg_done(void *ctx, const ag_upstream_response_t *resp)
{
    msg_req_t *m = ctx;
    ag_req_t *req = m->req;
    m->xfer = NULL;
    req->upstream_us = resp->duration_us;
    if (resp->error || resp->status == 0) {
        ag__gw_log_upstream_failure(req->id, resp);
        ag__gw_messages_error(req, 502, "api_error", "Upstream connection failed");
        return;
    }
    forward_upstream_headers(req, resp->headers);
    ag_str_t ct = ag_upstream_header(resp->headers, "content-type");
    if (resp->status == 200) {
        json_t *root = json_loadb(resp->body.ptr, resp->body.len, 0, NULL);
        json_t *usage = json_object_get(root, "usage");
        ag_buf_t text;
        ag_buf_init(&text, 0);
        ag__gw_join_text_blocks(json_object_get(root, "content"), &text);
        m->usage.output_units = (uint32_t)ag_utf16_length(text.data ? text.data : "", text.len);
        m->usage.in = ag__gw_usage_int(usage, "input_tokens");
        m->usage.out = ag__gw_usage_int(usage, "output_tokens");
        m->usage.cache_create = ag__gw_usage_int(usage, "cache_creation_input_tokens");
        m->usage.cache_read = ag__gw_usage_int(usage, "cache_read_input_tokens");
        ag_buf_fini(&text);
        json_decref(root);
    }
    if (resp->status == 200 && m->kv_key[0] && m->gww->gw->cache) {
        ag_buf_t v;
        ag_buf_init(&v, 0);
        if (ag_buf_append_cstr(&v, "0 0 0 raw\n") == 0 && ag_buf_append_str(&v, resp->body) == 0)
            ag__gw_cache_fill(m->gww, m->gww->loop, m->kv_key, &v);
        ag_buf_fini(&v);
    }
    ag_req_respond(req, resp->status,
                   ct.len ? ag_pool_strndup(&req->pool, ct.ptr, ct.len) : "application/json",
                   resp->body);
}

/* The UTF-16 length of the last user turn's text, the seed's promptLength. */
static uint32_t last_user_units(json_t *root)
{
    json_t *msgs = json_object_get(root, "messages");
    size_t n = json_array_size(msgs);
    json_t *last = n ? json_array_get(msgs, n - 1) : NULL;
    json_t *content = json_object_get(last, "content");
    if (json_is_string(content))
        return (uint32_t)ag_utf16_length(json_string_value(content), json_string_length(content));
    ag_buf_t text;
    ag_buf_init(&text, 0);
    ag__gw_join_text_blocks(content, &text);
    uint32_t units = (uint32_t)ag_utf16_length(text.data ? text.data : "", text.len);
    ag_buf_fini(&text);
    return units;
}

void ag__gw_handle_messages(ag_req_t *req, gw_worker_t *gww)
{
    ag_gateway_t *gw = gww->gw;
    msg_req_t *m = ag_pool_alloc(&req->pool, sizeof(*m));
    memset(m, 0, sizeof(*m));
    m->req = req;
    m->gww = gww;
    req->handler_data = m;
    ag_pool_on_clear(&req->pool, msg_cleanup, m);
    m->root = json_loadb(req->body.ptr, req->body.len, JSON_ALLOW_NUL, NULL);
    if (!json_is_object(m->root)) {
        ag__gw_messages_error(req, 400, "invalid_request_error",
                              "The request body is not valid JSON.");
        return;
    }
    json_t *model = json_object_get(m->root, "model");
    if (json_is_string(model)) {
        req->log_model =
            ag_pool_strndup(&req->pool, json_string_value(model), json_string_length(model));
        if (!ag_config_model_allowed(gw->cfg, json_string_value(model),
                                     json_string_length(model))) {
            ag__gw_messages_error(req, 400, "invalid_request_error",
                                  "model: not allowed by this gateway");
            return;
        }
    }
    bool stream = json_is_true(json_object_get(m->root, "stream"));
    ag__gw_usage_begin(&m->usage, gww, req, last_user_units(m->root), stream);
    if (!ag__gw_check_rate_limit(gww, req, &gw->messages_limit, true))
        return;
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
    ag__gw_cache_key(digest, m->kv_key);
    memcpy(m->kv_key, "msg:v1:", 7);
    ag_str_t cc = ag_req_header(req, "Cache-Control");
    bool no_store = ag__gw_has_token(cc, "no-store");
    bool no_cache = no_store || ag__gw_has_token(cc, "no-cache");
    /* Only text answers can be replayed: with tools or thinking, no caching. */
    bool cacheable = gw->cache && !json_object_get(m->root, "tools") &&
                     !json_object_get(m->root, "thinking") && req->log_model;
    if (cacheable && !no_cache) {
        ag_kv_value_t v;
        if (ag_kv_get(gw->cache, m->kv_key, strlen(m->kv_key), &v) == 0) {
            cache_entry_t e;
            bool served = false;
            ag_str_t mname = ag_str_c(req->log_model);
            if (ag__gw_parse_entry(&v, &e)) {
                ag__gw_usage_from_entry(&m->usage, &e);
                if (stream) {
                    ag_buf_t text;
                    ag_buf_init(&text, 0);
                    long long in, out;
                    char stop[64];
                    served = ag__gw_entry_text(&e, &text, &in, &out, stop) &&
                             ag__gw_replay_stream(req, mname,
                                                  ag_str(text.data ? text.data : "", text.len), in,
                                                  out, stop);
                    ag_buf_fini(&text);
                } else {
                    served = ag__gw_respond_message(req, mname, &e);
                }
            }
            ag_kv_value_free(&v);
            if (served)
                return;
        }
    }
    if (!gw->api_key_header) {
        ag__gw_messages_error(req, 503, "api_error", MSG_NO_KEY);
        return;
    }
    if (!cacheable || no_store)
        m->kv_key[0] = '\0';
    const char *const *headers = passthrough_headers(gw, req);
    if (stream) {
        json_decref(m->root);
        m->root = NULL;
        ag__gw_relay_start(gww, req, RELAY_MESSAGES, req->body, headers,
                           m->kv_key[0] ? m->kv_key : NULL, &m->usage);
        return;
    }
    ag_upstream_request_t u = ag__gw_upstream_request(gw, headers, req->body, false);
    int rc = ag_upstream_start(gww->upstream, &u, msg_done, m, &m->xfer);
    if (rc < 0) {
        ag__gw_messages_error(req, 502, "api_error", "Upstream connection failed");
        return;
    }
    req->on_abort = msg_abort;
}
