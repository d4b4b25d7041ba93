/* SPDX-License-Identifier: MIT
 *
 * relay.c: the streaming relay (back-pressure, idle cut, cache fill from a
 * complete stream), for any route, through its protocol table.
 */
#include "util/platform.h"

#include <errno.h>
#include <string.h>

#include "gateway/access.h"
#include "gateway/answer.h"
#include "gateway/cache.h"
#include "gateway/message.h"
#include "gateway/relay.h"
#include "gateway/steps.h"
#include "gateway/upcall.h"
#include "upstream/sse.h"
#include "util/errors.h"
#include "util/log.h"
#include "util/utf.h"

/* Past this many bytes queued for a slow client, the upstream transfer is
 * paused; memory per stream stays near this bound whatever the client does. */
#define STREAM_HIGH_WATER (256 * 1024)

typedef struct relay {
    ag_req_t *req;
    gw_worker_t *w;
    const gw_route_t *route;
    ag_call_t *call;
    ag_sse_parser_t sse;
    ag_anthropic_stream_t acc;
    gw_msg_build_t build; /* passthrough routes: the Message the stream rebuilds to */
    bool building;
    ag_buf_t translated; /* the protocol's translation of a chunk */
    gw_access_t *access; /* the reservation the stream settles */
    void *proto_state;   /* the protocol's translator */
    bool started;
    bool paused;
    bool client_gone;           /* a write to the client failed: its side ended the stream */
    bool counted;               /* in aigate_streams_active */
    char kv_key[GW_KV_KEY_LEN]; /* "" when the stream is not cached */
} relay_t;

static void relay_cleanup(void *p)
{
    relay_t *r = p;
    ag_call_cancel(r->call);
    r->call = NULL;
    ag_sse_parser_fini(&r->sse);
    ag_anthropic_stream_fini(&r->acc);
    gw_msg_build_fini(&r->build);
    ag_buf_fini(&r->translated);
    if (r->counted)
        ag_obs_streams(r->w->gw->obs, r->w->index, -1);
    r->counted = false;
}

/* Copies what the stream said into the request's record. */
static void relay_account(relay_t *r, const char *outcome)
{
    ag_req_t *req = r->req;
    const ag_anthropic_stream_t *a = &r->acc;
    req->ai.outcome = outcome;
    req->ai.output_units = (uint32_t)ag_utf16_length(a->text.data ? a->text.data : "", a->text.len);
    gw_step_tokens(req, r->route, a->usage.input_tokens, a->usage.output_tokens,
                   a->usage.cache_creation_input_tokens, a->usage.cache_read_input_tokens);
    /* However the stream ended, it cost what it showed so far. */
    gw_access_settle(r->access, req);
}

static void relay_abort(ag_req_t *req)
{
    relay_t *r = req->handler_data;
    /* Whose doing: a drain that ran out (or was cut) is the server's. */
    relay_account(r, ag_req_cut_by_server(req) ? "serverStopped" : "clientDisconnected");
    /* The client left: stop the upstream call at once, it costs tokens. */
    ag_call_cancel(r->call);
    r->call = NULL;
}

static void relay_drained(ag_req_t *req, void *data)
{
    relay_t *r = data;
    AG_UNUSED(req);
    if (r->paused && r->call) {
        r->paused = false;
        ag_call_resume(r->call);
    }
}

bool gw_header_value_safe(ag_str_t v)
{
    for (size_t i = 0; i < v.len; i++) {
        if (v.ptr[i] == '\r' || v.ptr[i] == '\n' || v.ptr[i] == '\0')
            return false;
    }
    return true;
}

const char *gw_upstream_content_type(ag_req_t *req, ag_str_t headers)
{
    ag_str_t ct = ag_upstream_header(headers, "content-type");
    if (!ct.len || !gw_header_value_safe(ct))
        return "application/json";
    return ag_pool_strndup(&req->pool, ct.ptr, ct.len);
}

void gw_forward_upstream_headers(ag_req_t *req, ag_str_t headers)
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
                if (ve > v && ve[-1] == '\r')
                    ve--; /* the line's own CR; any other CR, LF or NUL is an injection */
                while (ve > v && ve[-1] == ' ')
                    ve--;
                ag_str_t value = ag_str(v, (size_t)(ve - v));
                if (gw_header_value_safe(value)) {
                    char *name = ag_pool_strndup(&req->pool, p, nlen);
                    ag_req_add_header(req, name, value);
                } else {
                    char shown[80];
                    ag_log_escape(shown, sizeof(shown), p, nlen);
                    ag_log_warn("request %s: upstream header %s dropped: its value holds a CR, LF "
                                "or NUL",
                                req->id, shown);
                }
            }
        }
        p = eol ? eol + 1 : end;
    }
}

static int relay_on_data(void *ctx, int status, ag_str_t headers, const char *data, size_t len)
{
    relay_t *r = ctx;
    ag_req_t *req = r->req;
    const gw_protocol_t *proto = r->route->def->proto;
    if (!r->started) {
        r->started = true;
        gw_call_info_t info;
        gw_call_info_from(&info, ag_call_summary(r->call));
        gw_call_apply(req, &info, true);
        if (info.fallback_from[0])
            r->kv_key[0] = '\0'; /* another model's answer: not cached as this one's */
        if (proto->passthrough)
            gw_forward_upstream_headers(req, headers);
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
    if (proto->translate_stream) {
        r->translated.len = 0;
        if (proto->translate_stream(r->proto_state, data, len, &r->translated) < 0)
            return -1;
        if (ag_req_stream_write(req, r->translated.data, r->translated.len, &queued) < 0) {
            r->client_gone = true;
            return -1;
        }
    } else if (ag_req_stream_write(req, data, len, &queued) < 0) {
        r->client_gone = true; /* the client's side failed, not the upstream's */
        return -1;
    }
    if (ag_sse_parser_feed(&r->sse, data, len) != 0)
        r->kv_key[0] = '\0'; /* unparsable: relay it, but never cache it */
    return 0;
}

static int relay_on_event(void *ctx, const ag_sse_event_t *ev)
{
    relay_t *r = ctx;
    if (r->building)
        gw_msg_build_event(&r->build, ev);
    return ag_anthropic_stream_sse_cb(&r->acc, ev);
}

/* What a complete stream leaves in the cache: the Message it rebuilds to
 * (passthrough routes, only when exact), or the seed's text entry. */
static int relay_cache_value(relay_t *r, ag_buf_t *v)
{
    if (!r->route->def->proto->passthrough)
        return r->acc.text_truncated ? -1 : gw_cache_encode_stream(v, &r->acc);
    ag_buf_t m;
    ag_buf_init(&m, 0);
    int rc = gw_msg_build_result(&r->build, &m);
    if (rc == 0)
        rc = gw_cache_encode_raw(v, ag_str(m.data, m.len));
    ag_buf_fini(&m);
    return rc;
}

static const char stream_error_event[] =
    "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"api_error\",\"message\":"
    "\"Upstream connection failed\"}}\n\n";

static void relay_done(void *ctx, const ag_upstream_response_t *resp, const ag_call_summary_t *s)
{
    relay_t *r = ctx;
    ag_req_t *req = r->req;
    const gw_protocol_t *proto = r->route->def->proto;
    r->call = NULL;
    req->ai.upstream_us = resp->duration_us;
    req->ai.upstream_status = resp->status;
    ag_req_cpu_add(req, resp->cpu_us);
    if (!r->started) {
        /* Nothing relayed yet: answer as the non-streaming path would. */
        gw_call_info_t info;
        gw_call_info_from(&info, s);
        req->ai.outcome = "upstreamError";
        /* Nothing was streamed: an error answer costs nothing. */
        gw_access_settle_failure(r->access, resp->error);
        if (s->refusal) {
            gw_call_refused(req, r->route, &info);
            return;
        }
        gw_call_apply(req, &info, true);
        if (!proto->passthrough && proto->respond_upstream_error && !resp->error &&
            resp->status >= 400) {
            proto->respond_upstream_error(req, resp->status, resp->body);
            return;
        }
        if (proto->passthrough && !resp->error && resp->status >= 400) {
            gw_forward_upstream_headers(req, resp->headers);
            ag_req_respond(req, resp->status, gw_upstream_content_type(req, resp->headers),
                           resp->body);
            return;
        }
        ag__gw_log_upstream_failure(req->id, resp);
        proto->respond_error(req, 502, "api_error", proto->upstream_failure);
        return;
    }
    if (r->client_gone) {
        relay_account(r, "clientDisconnected");
        ag_req_stream_end(req);
        return;
    }
    relay_account(r,
                  resp->error || !ag_anthropic_stream_complete(&r->acc) ? "upstreamError" : "ok");
    if (resp->error)
        ag__gw_log_upstream_failure(req->id, resp);
    if (proto->finish_stream) {
        /* The protocol's own end: its error when the upstream failed or stopped short. */
        r->translated.len = 0;
        if (proto->finish_stream(r->proto_state, resp->error != 0, &r->translated) == 0 &&
            r->translated.len)
            ag_req_stream_write(req, r->translated.data, r->translated.len, NULL);
    } else if (resp->error) {
        /* Mid-stream failure: tell the client in the stream's own terms, then end. */
        ag_req_stream_write(req, stream_error_event, sizeof(stream_error_event) - 1, NULL);
    }
    if (!resp->error && r->kv_key[0] && ag_anthropic_stream_complete(&r->acc)) {
        ag_buf_t v;
        ag_buf_init(&v, 0);
        if (relay_cache_value(r, &v) == 0)
            gw_cache_fill(r->w, r->route->gen->cache_ttl_s, r->kv_key, &v);
        ag_buf_fini(&v);
    }
    ag_req_stream_end(req);
}

void gw_relay_start(gw_worker_t *w, ag_req_t *req, const gw_route_t *route, const char *model,
                    ag_str_t body, const char *const *headers, const char *kv_key, gw_access_t *acc,
                    void *proto_state)
{
    relay_t *r = ag_pool_alloc(&req->pool, sizeof(*r));
    memset(r, 0, sizeof(*r));
    r->req = req;
    r->w = w;
    r->route = route;
    r->access = acc;
    r->proto_state = proto_state;
    if (kv_key)
        snprintf(r->kv_key, sizeof(r->kv_key), "%s", kv_key);
    ag_sse_parser_init(&r->sse, 0, relay_on_event, r);
    ag_anthropic_stream_init(&r->acc, 4u << 20);
    gw_msg_build_init(&r->build, 4u << 20);
    r->building = kv_key && route->def->proto->passthrough;
    ag_buf_init(&r->translated, 0);
    req->handler_data = r;
    ag_pool_on_clear(&req->pool, relay_cleanup, r);
    ag_upstream_request_t u = gw_upstream_request(route->gen, headers, body, true);
    u.on_data = relay_on_data;
    req->on_abort = relay_abort;
    r->counted = true;
    ag_obs_streams(w->gw->obs, w->index, +1);
    /* The request may be answered, even recycled, before this returns. */
    int rc = gw_call_start(w, route, model, &u, relay_done, r, &r->call);
    if (rc < 0) {
        ag_log_error("request %s: cannot start the upstream call: %s", req->id, ag_strerror(rc));
        gw_access_settle_none(acc);
        route->def->proto->respond_error(req, 502, "api_error",
                                         route->def->proto->upstream_failure);
    }
}
