/* SPDX-License-Identifier: MIT
 *
 * route_generate.c: POST /api/generate, the seed's route, and its protocol
 * ({"error": msg} bodies; {"output","usage","cached"} answers). Checks run in
 * the seed's order (validation, limit, cache, upstream), and the upstream body
 * is exactly the seed's, with no field of ours.
 */
#include "util/platform.h"

#include <string.h>

#include "gateway/access.h"
#include "gateway/answer.h"
#include "gateway/cache.h"
#include "gateway/flight.h"
#include "gateway/relay.h"
#include "gateway/steps.h"
#include "gateway/upcall.h"
#include "util/errors.h"
#include "util/fmt.h"
#include "util/json.h"
#include "util/log.h"

/* One /api/generate request, in its pool. */
typedef struct gen_req {
    ag_req_t *req;
    gw_worker_t *w;
    const gw_route_t *route;
    ag_call_t *call;     /* uncoalesced call (no-store) */
    gw_waiter_t *waiter; /* coalesced call */
    gw_access_t *acc;
    ag_str_t body; /* the upstream request body, pool-owned */
    ag_str_t model;
    ag_str_t prompt; /* the decoded prompt, pool-owned */
    bool stream, no_store;
    bool led; /* this request's worker runs the flight's upstream call */
    unsigned char key[SHA256_DIGEST_LENGTH];
    char kv_key[GW_KV_KEY_LEN];
} gen_req_t;

/* ---- the protocol ------------------------------------------------------------- */

static void seed_error(ag_req_t *req, int status, const char *type, const char *msg)
{
    AG_UNUSED(type);
    ag_req_respond_error(req, status, msg);
}

static bool seed_serve_cached(ag_req_t *req, const cache_entry_t *e, const char *model, bool stream)
{
    if (e->raw)
        return false; /* a /v1/messages Message: not this route's entry */
    if (stream)
        return gw_cache_replay_entry(req, e, model);
    ag_buf_t b;
    ag_buf_init(&b, 0);
    bool ok = ag_buf_append(&b, e->json, e->jlen - 1) == 0 &&
              ag_buf_append_cstr(&b, ",\"cached\":true}") == 0;
    if (ok) {
        ag_req_add_header(req, "x-aigate-cache", AG_STR_LIT("hit"));
        ag_req_respond(req, 200, "application/json", ag_str(b.data, b.len));
    }
    ag_buf_fini(&b);
    return ok;
}

const gw_protocol_t gw_proto_seed = {
    .name = "seed",
    .respond_error = seed_error,
    .upstream_failure = MSG_AI_ERROR,
    .passthrough = false,
    .translate_stream = NULL,
    .serve_cached = seed_serve_cached,
};

/* ---- answers ------------------------------------------------------------------ */

static void gen_take_result(gen_req_t *g, const shared_result_t *r)
{
    if (!r)
        return;
    g->req->ai.output_units = r->output_units;
    gw_step_tokens(g->req, g->route, r->input_tokens, r->output_tokens, 0, 0);
}

/* A coalesced answer, on this request's worker. */
static void gen_on_result(void *ctx, const shared_result_t *r)
{
    gen_req_t *g = ctx;
    int64_t t0 = ag_mono_us();
    g->waiter = NULL;
    if (r)
        gw_call_apply(g->req, &r->call, g->led);
    gen_take_result(g, r);
    if (g->led) {
        g->req->ai.upstream_status = r ? r->upstream_status : 0;
        g->req->ai.upstream_us = r ? r->upstream_us : 0;
    }
    /* Each waiter reserved its own worst case; the leader's call is the only
     * one that cost anything. No answer at all: what it cost is unknown. */
    if (!g->led)
        gw_access_settle_none(g->acc);
    else if (r)
        gw_access_settle(g->acc, g->req);
    else
        gw_access_settle_worst(g->acc);
    ag_req_cpu_add(g->req, (r ? r->cpu_share_us : 0) + ag_mono_us() - t0);
    ag__gw_respond_result(g->req, r);
}

/* The leader's answer: the seed's response for every waiter, and the fill. */
static shared_result_t *gen_finish(gw_worker_t *w, const gw_route_t *route, const char *kv_key,
                                   const char *req_id, const ag_upstream_response_t *resp,
                                   bool may_fill)
{
    ag_buf_t value;
    ag_buf_init(&value, 0);
    bool fill = may_fill && route->cache && gw_cache_on(w->gw);
    shared_result_t *r = ag__gw_result_from_upstream(req_id, resp, fill ? &value : NULL);
    if (fill && value.len)
        gw_cache_fill(w, route->gen->cache_ttl_s, kv_key, &value);
    ag_buf_fini(&value);
    return r;
}

static void gen_upstream_done(void *ctx, const ag_upstream_response_t *resp,
                              const ag_call_summary_t *s)
{
    gen_req_t *g = ctx;
    int64_t t0 = ag_mono_us();
    g->call = NULL;
    if (!gw_call_answered(g->req, g->route, g->acc, resp, s, NULL))
        return;
    shared_result_t *r = ag__gw_result_from_upstream(g->req->id, resp, NULL);
    gen_take_result(g, r);
    if (resp->error)
        gw_access_settle_failure(g->acc, resp->error);
    else
        gw_access_settle(g->acc, g->req);
    ag_req_cpu_add(g->req, resp->cpu_us + ag_mono_us() - t0);
    ag__gw_respond_result(g->req, r);
    ag__gw_result_release(r);
}

static void gen_cleanup(void *p)
{
    gen_req_t *g = p;
    /* Normally the call finished already; after an abort it may still be live. */
    ag_call_cancel(g->call);
    g->call = NULL;
    if (g->waiter)
        gw_flight_leave(g->w, g->waiter, g->key);
    g->waiter = NULL;
}

static void gen_abort(ag_req_t *req)
{
    gen_req_t *g = req->handler_data;
    /* A waiter that leaves cost nothing: the leader's call is the flight's.
     * A leader's call (or an uncoalesced one) may have cost anything: the
     * access hook settles it at the worst case. */
    if (g->waiter && !g->led)
        gw_access_settle_none(g->acc);
    gen_cleanup(g);
}

/* ---- the request -------------------------------------------------------------- */

static void gen_reserved(void *ctx);

/* 4. upstream: the cache could not answer. */
static void gen_upstream(void *ctx)
{
    gen_req_t *g = ctx;
    ag_req_t *req = g->req;
    const gw_gen_t *gen = g->route->gen;
    if (!gen->api_key_header) {
        ag_req_respond_error(req, 503, MSG_NO_KEY);
        return;
    }
    gw_step_reserve(req, g->route, g->acc, g->model.ptr, g->body.len + (g->stream ? 14 : 0),
                    gen->max_tokens, false, gen_reserved, g);
}

/* 5. the budgets let it through: the call. */
static void gen_reserved(void *ctx)
{
    gen_req_t *g = ctx;
    ag_req_t *req = g->req;
    const gw_gen_t *gen = g->route->gen;
    bool cached = g->route->cache && gw_cache_on(g->w->gw);
    if (g->stream) {
        /* The same body plus "stream": the cache key stays the non-streaming
         * one, so streamed and plain requests share entries. */
        ag_str_t sbody = ag_str(ag_pool_printf(&req->pool, "%.*s,\"stream\":true}",
                                               (int)(g->body.len - 1), g->body.ptr),
                                g->body.len + 14);
        gw_relay_start(g->w, req, g->route, g->model.ptr, sbody, gen->generate_headers,
                       cached && !g->no_store ? g->kv_key : NULL, g->acc, NULL);
        return;
    }
    req->on_abort = gen_abort;
    if (g->no_store) {
        ag_upstream_request_t u = gw_upstream_request(gen, gen->generate_headers, g->body, false);
        /* The request may be answered, even recycled, before this returns. */
        int rc = gw_call_start(g->w, g->route, g->model.ptr, &u, gen_upstream_done, g, &g->call);
        if (rc < 0) {
            ag_log_error("request %s: cannot start the upstream call: %s", req->id,
                         ag_strerror(rc));
            gw_access_settle_none(g->acc);
            ag_req_respond_error(req, 502, MSG_AI_ERROR);
        }
        return;
    }
    gw_waiter_t *waiter;
    bool lead = gw_flight_join(g->w, g->key, gen_on_result, g, &waiter);
    g->waiter = waiter;
    g->led = lead;
    if (lead)
        gw_flight_fetch(g->w, g->route, g->key, g->kv_key, req->id, g->model.ptr, g->body,
                        gen->generate_headers, gen_finish);
}

static void gen_limited(void *ctx);

void gw_generate_handle(ag_req_t *req, gw_worker_t *w, const gw_route_t *route)
{
    const gw_gen_t *gen = route->gen;
    gen_req_t *g = ag_pool_alloc(&req->pool, sizeof(*g));
    memset(g, 0, sizeof(*g));
    g->req = req;
    g->w = w;
    g->route = route;
    req->handler_data = g;
    ag_pool_on_clear(&req->pool, gen_cleanup, g);
    /* 0. the client's key, before anything is said about the request */
    if (!(g->acc = gw_step_auth(req, w, route)))
        return;

    /* 1. validation, with JavaScript's rules: JSON.parse, then prompt.length in
     *    UTF-16 units. */
    const char *body = req->body.ptr;
    ag_jtok_t stack[64], *toks, *heap;
    int n = ag__gw_jparse(req->body, stack, AG_ARRAY_LEN(stack), &toks, &heap);
    if (heap)
        ag_pool_on_clear(&req->pool, free, heap);
    if (n <= 0) {
        ag_req_respond_error(req, 400, MSG_INVALID_JSON);
        return;
    }
    bool is_object = toks[0].type == AG_JT_OBJECT;
    int jp = is_object ? ag_jtok_object_get(body, toks, 0, "prompt") : -1;
    size_t prompt_units =
        jp >= 0 && toks[jp].type == AG_JT_STRING ? ag_jtok_str_utf16_len(body, &toks[jp]) : 0;
    if (prompt_units == 0 || prompt_units > gen->prompt_max_length) {
        ag_req_respond_error(req, 400, MSG_INVALID_PROMPT);
        return;
    }
    ag_buf_t pbuf;
    ag_buf_init(&pbuf, 0);
    if (ag_jtok_str_decode(body, &toks[jp], &pbuf) < 0) {
        ag_buf_fini(&pbuf);
        ag_req_respond_error(req, 500, MSG_INTERNAL);
        return;
    }
    ag_str_t prompt_text =
        ag_pool_strdup_str(&req->pool, ag_str(pbuf.data ? pbuf.data : "", pbuf.len));
    ag_buf_fini(&pbuf);
    /* The model: an explicit one (allowlisted), else the task's route
     * ([aigate.routing], the seed's pattern 3; routed models are allowed by
     * being routed), else DEFAULT_MODEL. "task" never goes upstream: the
     * upstream body is built from model, max_tokens and prompt alone. */
    ag_str_t model = ag_str_c(gen->default_model);
    int jm = ag_jtok_object_get(body, toks, 0, "model");
    int jt = jm < 0 ? ag_jtok_object_get(body, toks, 0, "task") : -1;
    if (jt >= 0 && toks[jt].type == AG_JT_STRING) {
        ag_buf_t tbuf;
        ag_buf_init(&tbuf, 64);
        if (ag_jtok_str_decode(body, &toks[jt], &tbuf) == 0)
            model = ag_str_c(gw_gen_task_model(gen, tbuf.data ? tbuf.data : "", tbuf.len));
        ag_buf_fini(&tbuf);
    }
    if (jm >= 0) {
        ag_buf_t mbuf;
        ag_buf_init(&mbuf, 512);
        bool ok = toks[jm].type == AG_JT_STRING &&
                  ag_jtok_str_decode(body, &toks[jm], &mbuf) == 0 &&
                  gw_route_model_allowed(route, mbuf.data ? mbuf.data : "", mbuf.len);
        if (ok)
            model = ag_pool_strdup_str(&req->pool, ag_str(mbuf.data, mbuf.len));
        else if (toks[jm].type == AG_JT_STRING)
            gw_log_model_refused(req, route, mbuf.data ? mbuf.data : "", mbuf.len);
        ag_buf_fini(&mbuf);
        if (!ok) {
            ag_req_respond_error(req, 400, MSG_INVALID_MODEL);
            return;
        }
    }
    if (!gw_access_model_allowed(g->acc, model.ptr, model.len)) {
        ag_req_respond_error(req, 400, MSG_INVALID_MODEL);
        return;
    }
    g->model = ag_str(ag_pool_strndup(&req->pool, model.ptr, model.len), model.len);
    /* Streaming is decided by the body alone, never by Accept. */
    int js = ag_jtok_object_get(body, toks, 0, "stream");
    g->stream = js >= 0 && toks[js].type == AG_JT_TRUE;
    gw_step_usage_begin(req, g->model.ptr, (uint32_t)prompt_units, g->stream);

    g->prompt = prompt_text;
    /* 2. rate limit */
    gw_step_limit(req, w, route, gen_limited, g);
}

/* What follows the rate limit. */
static void gen_limited(void *ctx)
{
    gen_req_t *g = ctx;
    ag_req_t *req = g->req;
    gw_worker_t *w = g->w;
    const gw_route_t *route = g->route;
    const gw_gen_t *gen = route->gen;
    /* 3. cache: keyed on the exact upstream body, which holds everything that
     *    changes the answer (model, max_tokens, prompt). */
    g->body = ag__gw_build_upstream_body(&req->pool, g->model, gen->max_tokens, g->prompt);
    if (!g->body.ptr) {
        ag_req_respond_error(req, 500, MSG_INTERNAL);
        return;
    }
    ag__gw_sha256_parts(&g->body, 1, g->key);
    gw_cache_key("gen:v1:", g->key, g->kv_key);
    bool no_cache;
    gw_step_cache_control(req, &no_cache, &g->no_store);
    if (no_cache) {
        req->ai.cache = route->cache ? AG_CACHE_BYPASS : AG_CACHE_NONE;
        gen_upstream(g);
        return;
    }
    gw_cache_lookup(w, req, route, g->kv_key, g->model.ptr, g->stream, gen_upstream, g);
}
