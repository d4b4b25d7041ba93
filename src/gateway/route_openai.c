/* SPDX-License-Identifier: MIT
 *
 * route_openai.c: OpenAI's API in front of Anthropic's: POST /v1/chat/completions
 * (translated both ways by openai.c; plain, streamed, cached) and its protocol
 * (OpenAI's error shape, chunk streams, cache hits as completions), and
 * GET /v1/models in OpenAI's or Anthropic's shape.
 */
#include "util/platform.h"

#include <string.h>
#include <time.h>

#include "gateway/access.h"
#include "gateway/answer.h"
#include "gateway/cache.h"
#include "gateway/openai.h"
#include "gateway/relay.h"
#include "gateway/steps.h"
#include "gateway/upcall.h"
#include "util/errors.h"
#include "util/json.h"
#include "util/log.h"
#include "util/utf.h"

/* One /v1/chat/completions request, in its pool. */
typedef struct oai_req {
    ag_req_t *req;
    gw_worker_t *w;
    const gw_route_t *route;
    ag_call_t *call;
    gw_access_t *acc;
    ag_buf_t body; /* the upstream (Anthropic) body */
    gw_openai_request_t info;
    gw_openai_stream_t st; /* the stream's translator */
    bool st_live;
    const char *model;
    json_t *root;               /* the upstream body parsed, until the cache key is made */
    char kv_key[GW_KV_KEY_LEN]; /* "" when the answer is not cached */
} oai_req_t;

static void respond_buf(ag_req_t *req, int status, int rc, ag_buf_t *b)
{
    if (rc == 0)
        ag_req_respond(req, status, "application/json", ag_str(b->data, b->len));
    else
        ag_req_respond(req, 500, "application/json", AG_STR_NULL);
    ag_buf_fini(b);
}

/* ---- the protocol ------------------------------------------------------------- */

static void openai_error(ag_req_t *req, int status, const char *type, const char *msg)
{
    ag_buf_t b;
    ag_buf_init(&b, 0);
    int st = status;
    int rc = gw_openai_error_from_type(&b, status, type, msg, &st);
    respond_buf(req, st, rc, &b);
}

static void openai_upstream_error(ag_req_t *req, int status, ag_str_t body)
{
    ag_buf_t b;
    ag_buf_init(&b, 0);
    int st = status;
    int rc = gw_openai_error_from_anthropic(&b, status, body.ptr, body.len, &st);
    respond_buf(req, st, rc, &b);
}

static int openai_translate(void *state, const char *data, size_t len, ag_buf_t *out)
{
    return gw_openai_stream_feed(state, data, len, out);
}

static int openai_finish(void *state, bool failed, ag_buf_t *out)
{
    AG_UNUSED(failed); /* a stream that stopped short is a failure too */
    return gw_openai_stream_finish(state, NULL, out);
}

static bool openai_serve_cached(ag_req_t *req, const cache_entry_t *e, const char *model,
                                bool stream)
{
    const oai_req_t *m = req->handler_data;
    ag_buf_t text, b;
    ag_buf_init(&text, 0);
    ag_buf_init(&b, 0);
    long long in, out;
    char stop[64];
    bool ok = ag__gw_entry_text(e, &text, &in, &out, stop);
    char id[48];
    snprintf(id, sizeof(id), "msg_aigate_%s", req->id);
    gw_openai_text_answer_t a = {
        .id = id,
        .model = model,
        .text = text.data ? text.data : "",
        .text_len = text.len,
        .stop_reason = stop,
        .input_tokens = in,
        .output_tokens = out,
    };
    int rc = !ok      ? -1
             : stream ? gw_openai_stream_from_text(&a, time(NULL), m->info.include_usage, &b)
                      : gw_openai_completion_from_text(&a, time(NULL), &b);
    ag_buf_fini(&text);
    if (rc != 0) {
        ag_buf_fini(&b);
        return false;
    }
    ag_req_add_header(req, "x-aigate-cache", AG_STR_LIT("hit"));
    if (stream) {
        ag_req_add_header(req, "Cache-Control", AG_STR_LIT("no-cache"));
        ag_req_stream_start(req, 200, "text/event-stream; charset=utf-8");
        ag_req_stream_write(req, b.data, b.len, NULL);
        ag_buf_fini(&b);
        ag_req_stream_end(req);
        return true;
    }
    ag_req_respond(req, 200, "application/json", ag_str(b.data, b.len));
    ag_buf_fini(&b);
    return true;
}

const gw_protocol_t gw_proto_openai = {
    .name = "openai",
    .respond_error = openai_error,
    .upstream_failure = "Upstream connection failed",
    .passthrough = false,
    .translate_stream = openai_translate,
    .serve_cached = openai_serve_cached,
    .finish_stream = openai_finish,
    .respond_upstream_error = openai_upstream_error,
};

/* ---- POST /v1/chat/completions ------------------------------------------------ */

static void oai_cleanup(void *p)
{
    oai_req_t *m = p;
    ag_call_cancel(m->call);
    m->call = NULL;
    ag_buf_fini(&m->body);
    if (m->root)
        json_decref(m->root);
    m->root = NULL;
    if (m->st_live)
        gw_openai_stream_fini(&m->st);
    m->st_live = false;
}

static void oai_abort(ag_req_t *req)
{
    oai_req_t *m = req->handler_data;
    ag_call_cancel(m->call);
    m->call = NULL;
}

static void oai_done(void *ctx, const ag_upstream_response_t *resp, const ag_call_summary_t *s)
{
    oai_req_t *m = ctx;
    ag_req_t *req = m->req;
    int64_t t0 = ag_mono_us();
    m->call = NULL;
    if (!gw_call_answered(req, m->route, m->acc, resp, s, m->kv_key))
        return;
    ag_req_cpu_add(req, resp->cpu_us);
    if (resp->error || resp->status == 0) {
        gw_access_settle_failure(m->acc, resp->error);
        ag__gw_log_upstream_failure(req->id, resp);
        openai_error(req, 502, "api_error", "Upstream connection failed");
        return;
    }
    ag_str_t ra = ag_upstream_header(resp->headers, "retry-after");
    if (ra.len)
        ag_req_add_header(req, "Retry-After", ra);
    if (resp->status != 200) {
        gw_access_settle(m->acc, req);
        ag_req_cpu_add(req, ag_mono_us() - t0);
        openai_upstream_error(req, resp->status, resp->body);
        return;
    }
    json_t *root = json_loadb(resp->body.ptr, resp->body.len, 0, NULL);
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
    json_decref(root);
    gw_access_settle(m->acc, req);
    ag_buf_t b;
    ag_buf_init(&b, 0);
    int rc =
        gw_openai_response_from_anthropic(resp->body.ptr, resp->body.len, time(NULL), m->model, &b);
    if (rc == 0 && m->kv_key[0]) {
        ag_buf_t v;
        ag_buf_init(&v, 0);
        if (gw_cache_encode_raw(&v, resp->body) == 0)
            gw_cache_fill(m->w, m->route->gen->cache_ttl_s, m->kv_key, &v);
        ag_buf_fini(&v);
    }
    ag_req_cpu_add(req, ag_mono_us() - t0);
    if (rc == AG_EPROTO) {
        ag_buf_fini(&b);
        ag_log_warn("request %s: the upstream's 200 is not a Message", req->id);
        openai_error(req, 502, "api_error", "Upstream connection failed");
        return;
    }
    respond_buf(req, 200, rc, &b);
}

static void oai_reserved(void *ctx);

/* Upstream: the cache could not answer. */
static void oai_upstream(void *ctx)
{
    oai_req_t *m = ctx;
    ag_req_t *req = m->req;
    const gw_gen_t *gen = m->route->gen;
    if (!gen->api_key_header) {
        openai_error(req, 503, "api_error", MSG_NO_KEY);
        return;
    }
    ag_str_t body = ag_str(m->body.data, m->body.len);
    gw_step_reserve(req, m->route, m->acc, m->model, body.len, m->info.max_tokens,
                    gw_body_asks_caching(body), oai_reserved, m);
}

/* The budgets let it through: the call. */
static void oai_reserved(void *ctx)
{
    oai_req_t *m = ctx;
    ag_req_t *req = m->req;
    const gw_gen_t *gen = m->route->gen;
    ag_str_t body = ag_str(m->body.data, m->body.len);
    if (m->info.stream) {
        gw_openai_stream_init(&m->st, time(NULL), m->info.include_usage, m->model);
        m->st_live = true;
        gw_relay_start(m->w, req, m->route, m->model, body, gen->generate_headers,
                       m->kv_key[0] ? m->kv_key : NULL, m->acc, &m->st);
        return;
    }
    ag_upstream_request_t u = gw_upstream_request(gen, gen->generate_headers, body, false);
    req->on_abort = oai_abort;
    /* The request may be answered, even recycled, before this returns. */
    int rc = gw_call_start(m->w, m->route, m->model, &u, oai_done, m, &m->call);
    if (rc < 0) {
        gw_access_settle_none(m->acc);
        openai_error(req, 502, "api_error", "Upstream connection failed");
    }
}

static void oai_limited(void *ctx);

void gw_chat_handle(ag_req_t *req, gw_worker_t *w, const gw_route_t *route)
{
    const gw_gen_t *gen = route->gen;
    oai_req_t *m = ag_pool_alloc(&req->pool, sizeof(*m));
    memset(m, 0, sizeof(*m));
    m->req = req;
    m->w = w;
    m->route = route;
    ag_buf_init(&m->body, 0);
    req->handler_data = m;
    ag_pool_on_clear(&req->pool, oai_cleanup, m);
    if (!(m->acc = gw_step_auth(req, w, route)))
        return;
    gw_openai_error_t err;
    int rc = gw_openai_request_to_anthropic(req->body.ptr, req->body.len, NULL, gen->max_tokens,
                                            &m->body, &m->info, &err);
    if (rc == AG_EINVALID) {
        ag_buf_t b;
        ag_buf_init(&b, 0);
        int brc = gw_openai_error_body(&b, err.message, err.type, err.param, err.code);
        respond_buf(req, err.status ? err.status : 400, brc, &b);
        return;
    }
    if (rc < 0) {
        openai_error(req, 500, "api_error", MSG_INTERNAL);
        return;
    }
    m->model = ag_pool_strndup(&req->pool, m->info.model, strlen(m->info.model));
    req->ai.model = m->model;
    size_t mlen = strlen(m->model);
    if (!gw_route_model_allowed(route, m->model, mlen)) {
        ag_buf_t b;
        ag_buf_init(&b, 0);
        int brc = gw_openai_error_body(&b, "model: not allowed by this gateway",
                                       "invalid_request_error", "model", "model_not_found");
        respond_buf(req, 400, brc, &b);
        return;
    }
    if (!gw_access_model_allowed(m->acc, m->model, mlen)) {
        openai_error(req, 403, "permission_error", "model: not allowed for this API key");
        return;
    }
    m->root = json_loadb(m->body.data, m->body.len, 0, NULL);
    gw_step_usage_begin(req, m->model, ag__gw_last_user_units(m->root), m->info.stream);
    gw_step_limit(req, w, route, oai_limited, m);
}

/* What follows the rate limit: the cache, then the upstream. */
static void oai_limited(void *ctx)
{
    oai_req_t *m = ctx;
    ag_req_t *req = m->req;
    gw_worker_t *w = m->w;
    const gw_route_t *route = m->route;
    json_t *root = m->root;
    m->root = NULL;
    /* Keyed on the upstream body without "stream" (streamed and plain requests
     * share entries); the translation is deterministic, so equal requests are
     * equal bodies. */
    json_object_del(root, "stream");
    char *canon = json_dumps(root, JSON_COMPACT | JSON_SORT_KEYS);
    bool cacheable = canon && route->cache && gw_cache_on(w->gw) && !m->info.has_tools &&
                     !json_object_get(root, "thinking");
    json_decref(root);
    if (canon) {
        unsigned char digest[SHA256_DIGEST_LENGTH];
        const ag_str_t parts[] = {AG_STR_LIT("chat"), ag_str_c(canon)};
        ag__gw_sha256_parts(parts, AG_ARRAY_LEN(parts), digest);
        gw_cache_key("oai:v1:", digest, m->kv_key);
        free(canon);
    }
    bool no_cache, no_store;
    gw_step_cache_control(req, &no_cache, &no_store);
    char key[GW_KV_KEY_LEN];
    memcpy(key, m->kv_key, sizeof(key));
    if (!cacheable || no_store)
        m->kv_key[0] = '\0';
    if (!cacheable || no_cache) {
        if (cacheable)
            req->ai.cache = AG_CACHE_BYPASS;
        oai_upstream(m);
        return;
    }
    gw_cache_lookup(w, req, route, key, m->model, m->info.stream, oai_upstream, m);
}

/* ---- GET /v1/models -------------------------------------------------------------- */

static bool wants_anthropic(const ag_req_t *req)
{
    return ag_req_header(req, "anthropic-version").len > 0;
}

/* Errors in the shape of the list the client asked for. */
static void models_error(ag_req_t *req, int status, const char *type, const char *msg)
{
    if (!wants_anthropic(req)) {
        openai_error(req, status, type, msg);
        return;
    }
    ag_buf_t b;
    ag_buf_init(&b, 0);
    int rc = ag_buf_printf(&b, "{\"type\":\"error\",\"error\":{\"type\":\"%s\",\"message\":", type);
    if (rc == 0)
        rc = ag_json_append_string(&b, ag_str_c(msg));
    if (rc == 0)
        rc = ag_buf_append_cstr(&b, "}}");
    respond_buf(req, status, rc, &b);
}

/* A model list is made here, never fetched: nothing of it is cached. */
static bool models_serve_cached(ag_req_t *req, const cache_entry_t *e, const char *model,
                                bool stream)
{
    AG_UNUSED(req);
    AG_UNUSED(e);
    AG_UNUSED(model);
    AG_UNUSED(stream);
    return false;
}

const gw_protocol_t gw_proto_models = {
    .name = "models",
    .respond_error = models_error,
    .upstream_failure = "Upstream connection failed",
    .serve_cached = models_serve_cached,
};

static void add_model(const char **ids, size_t *n, size_t cap, const gw_access_t *a, const char *id)
{
    if (!id || !*id || *n == cap || !gw_access_model_allowed(a, id, strlen(id)))
        return;
    for (size_t i = 0; i < *n; i++) {
        if (strcmp(ids[i], id) == 0)
            return;
    }
    ids[(*n)++] = id;
}

typedef struct models_req {
    ag_req_t *req;
    const gw_route_t *route;
    const gw_access_t *acc;
} models_req_t;

static void models_limited(void *ctx);

void gw_models_handle(ag_req_t *req, gw_worker_t *w, const gw_route_t *route)
{
    gw_access_t *a = gw_step_auth(req, w, route);
    if (!a)
        return;
    models_req_t *mr = ag_pool_alloc(&req->pool, sizeof(*mr));
    *mr = (models_req_t){req, route, a};
    gw_step_limit(req, w, route, models_limited, mr);
}

/* What follows the rate limit: the list. */
static void models_limited(void *ctx)
{
    models_req_t *mr = ctx;
    ag_req_t *req = mr->req;
    const gw_gen_t *gen = mr->route->gen;
    const gw_access_t *a = mr->acc;
    /* What a client may ask for: DEFAULT_MODEL, every route's allowlist, the
     * routed tasks' models; those of the key's list alone when it has one. */
    size_t cap = 1 + gen->nrouting;
    for (size_t i = 0; i < gen->nroutes; i++)
        cap += gen->routes[i].nmodels;
    const char **ids = ag_pool_alloc(&req->pool, cap * sizeof(*ids));
    size_t n = 0;
    add_model(ids, &n, cap, a, gen->default_model);
    for (size_t i = 0; i < gen->nroutes; i++) {
        for (size_t k = 0; k < gen->routes[i].nmodels; k++)
            add_model(ids, &n, cap, a, gen->routes[i].models[k]);
    }
    for (size_t i = 0; i < gen->nrouting; i++)
        add_model(ids, &n, cap, a, gen->routing[i].model);
    ag_buf_t b;
    ag_buf_init(&b, 0);
    int rc = wants_anthropic(req)
                 ? gw_anthropic_models_body(&b, ids, n, "2025-01-01T00:00:00Z")
                 : gw_openai_models_body(&b, ids, n, 1735689600); /* the same instant */
    respond_buf(req, 200, rc, &b);
}
