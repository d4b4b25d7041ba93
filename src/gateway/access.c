/* SPDX-License-Identifier: MIT
 *
 * access.c: the client's key, its model list, budgets and per-key limits by
 * reservation, and per-route CORS, as every AI route applies them.
 */
#include "util/platform.h"

#include <string.h>

#include "gateway/access.h"
#include "gateway/steps.h"
#include "util/errors.h"
#include "util/fmt.h"
#include "util/log.h"

#define MSG_BAD_KEY "Invalid API key"
#define MSG_BUDGET "Budget exceeded"

static void access_cleanup(void *p)
{
    /* The request ended without its route settling: the client left while
     * the call ran, so what it cost is unknown. */
    gw_access_settle_worst(p);
}

gw_access_t *gw_step_auth(ag_req_t *req, gw_worker_t *w, const gw_route_t *route)
{
    gw_access_t *a = ag_pool_alloc(&req->pool, sizeof(*a));
    memset(a, 0, sizeof(*a));
    a->budget = w->gw->budget;
    a->w = w;
    ag_pool_on_clear(&req->pool, access_cleanup, a);
    gw_step_identify(req, route);
    int mode = route->gen->auth;
    if (mode == AG_AUTH_OFF)
        return a;
    ag_str_t key;
    if (!ag_keys_from_headers(ag_req_header(req, "Authorization"), ag_req_header(req, "x-api-key"),
                              &key)) {
        if (mode == AG_AUTH_OPTIONAL)
            return a;
        route->def->proto->respond_error(req, 401, "authentication_error", MSG_BAD_KEY);
        return NULL;
    }
    /* The record only when a key is presented: keyless requests stay small. */
    ag_key_record_t *rec = ag_pool_alloc(&req->pool, sizeof(*rec));
    int rc = w->keys ? ag_keys_lookup(w->keys, key.ptr, key.len, ag_now_us() / 1000, rec)
                     : AG_KEYS_ECORRUPT;
    if (rc == AG_KEYS_EINVALID || rc == AG_KEYS_EREVOKED || rc == AG_KEYS_EEXPIRED) {
        route->def->proto->respond_error(req, 401, "authentication_error", MSG_BAD_KEY);
        return NULL;
    }
    if (rc != 0) {
        /* The store cannot say: fail closed, and never name the key. */
        ag_log_error("request %s: the key store failed: %s", req->id, ag_strerror(rc));
        route->def->proto->respond_error(req, 503, "api_error", "Key store unavailable");
        return NULL;
    }
    a->key = rec;
    req->ai.key_name = rec->name;
    return a;
}

bool gw_access_model_allowed(const gw_access_t *a, const char *model, size_t len)
{
    return !a->key || ag_keys_model_allowed(a->key, model, len);
}

/* The refusal of a reservation, in the route's shape. */
static void reserve_refused(ag_req_t *req, const gw_route_t *route, const ag_key_limits_t *kl,
                            int reason, uint32_t retry_after_s)
{
    char num[24], msg[128];
    ag_req_add_header(req, "Retry-After", ag_str(num, ag_fmt_u64(num, retry_after_s)));
    if (reason == AG_BUDGET_RPM)
        snprintf(msg, sizeof(msg), "Rate limit exceeded. Max %u requests/minute for this key.",
                 kl->rpm);
    else if (reason == AG_BUDGET_TPM)
        snprintf(msg, sizeof(msg), "Rate limit exceeded. Max %u tokens/minute for this key.",
                 kl->tpm);
    else
        snprintf(msg, sizeof(msg), "%s", MSG_BUDGET);
    route->def->proto->respond_error(req, 429, "rate_limit_error", msg);
}

/* What a reservation asks for, for either store. */
typedef struct reserve_ask {
    ag_req_t *req;
    const gw_route_t *route;
    gw_access_t *a;
    const ag_key_limits_t *kl;
    double worst_usd;
    uint64_t worst_tokens;
    gw_limit_next_fn next;
    void *ctx;
    ag_redis_budget_ask_t rask;
} reserve_ask_t;

static void reserve_local(reserve_ask_t *q)
{
    ag_req_t *req = q->req;
    gw_access_t *a = q->a;
    const ag_key_limits_t *kl = q->kl;
    ag_budget_limits_t lim = {kl->rpm, kl->tpm, kl->daily_usd, kl->monthly_usd};
    ag_budget_result_t res;
    int rc = ag_budget_reserve(a->budget, a->key ? a->key->name : NULL, a->key ? &lim : NULL,
                               q->worst_usd, q->worst_tokens, &a->resv, &res);
    if (rc < 0) {
        ag_log_error("request %s: cannot reserve its budget: %s", req->id, ag_strerror(rc));
        q->route->def->proto->respond_error(req, 503, "api_error", "Budget store unavailable");
        return;
    }
    if (!res.allowed) {
        reserve_refused(req, q->route, kl, res.reason, res.retry_after_s);
        return;
    }
    q->next(q->ctx);
}

static void reserve_redis_failed(reserve_ask_t *q, int rc)
{
    if (!gw_redis_failed(q->req, q->a->w, q->route, "reserve budgets", rc,
                         "Budget store unavailable"))
        reserve_local(q);
}

static void on_redis_reserve(void *ctx, int rc, const ag_resp_t *reply)
{
    reserve_ask_t *q = ctx;
    q->a->rcmd = NULL;
    ag_redis_budget_result_t res;
    if (rc == 0)
        rc = ag_redis_budget_decode(reply, &q->rask, &q->a->rresv, &res);
    if (rc < 0) {
        reserve_redis_failed(q, rc);
        return;
    }
    if (!res.allowed) {
        reserve_refused(q->req, q->route, q->kl, res.reason, res.retry_after_s);
        return;
    }
    q->next(q->ctx);
}

static void reserve_cancel(void *p)
{
    gw_access_t *a = p;
    ag_redis_cancel(a->rcmd); /* the client left while Redis was asked */
    a->rcmd = NULL;
}

void gw_step_reserve(ag_req_t *req, const gw_route_t *route, gw_access_t *a, const char *model,
                     size_t body_len, int64_t max_tokens, bool caching, gw_limit_next_fn next,
                     void *ctx)
{
    const gw_gen_t *gen = route->gen;
    if (max_tokens < 0)
        max_tokens = 0;
    static const ag_key_limits_t none;
    reserve_ask_t *q = ag_pool_alloc(&req->pool, sizeof(*q));
    *q = (reserve_ask_t){
        .req = req,
        .route = route,
        .a = a,
        .kl = a->key ? &a->key->limits : &none,
        .worst_usd = ag_usage_worst_case_usd(gen->prices, gen->nprices, model, body_len, max_tokens,
                                             caching),
        .worst_tokens = body_len + (uint64_t)max_tokens,
        .next = next,
        .ctx = ctx,
    };
    gw_worker_t *w = a->w;
    if (!w || !w->redis) {
        reserve_local(q);
        return;
    }
    const ag_key_limits_t *kl = q->kl;
    int64_t global = ag_budget_global_nano(a->budget);
    bool key_applies = a->key && (kl->rpm || kl->tpm || kl->daily_usd > 0 || kl->monthly_usd > 0);
    if (!key_applies && global <= 0) {
        next(ctx); /* nothing applies: nothing to hold */
        return;
    }
    q->rask = (ag_redis_budget_ask_t){
        .key_name = key_applies ? a->key->name : NULL,
        .worst_nano = ag_budget_nano_up(q->worst_usd),
        .global_day_nano = global,
        .key_day_nano = ag_budget_nano_near(kl->daily_usd),
        .key_month_nano = ag_budget_nano_near(kl->monthly_usd),
        .rpm = kl->rpm,
        .tpm = kl->tpm,
        .worst_tokens = q->worst_tokens,
    };
    ag_pool_on_clear(&req->pool, reserve_cancel, a);
    int rc = ag_redis_budget_reserve(w->redis, &q->rask, on_redis_reserve, q, &a->rcmd);
    if (rc < 0) {
        a->rcmd = NULL;
        reserve_redis_failed(q, rc);
    }
}

static uint64_t nonneg(int64_t v)
{
    return v > 0 ? (uint64_t)v : 0;
}

/* A reservation on Redis ends with a settle script; a worker whose client
 * has closed leaves its worst case spent. */
static void settle_redis(gw_access_t *a, double usd, uint64_t tokens)
{
    if (a->w && a->w->redis)
        ag_redis_budget_settle(a->w->redis, &a->rresv, ag_budget_nano_near(usd), tokens);
    a->rresv.active = false;
}

void gw_access_settle(gw_access_t *a, const ag_req_t *req)
{
    if (!a || !(a->resv.active || a->rresv.active))
        return;
    const ag_ai_record_t *ai = &req->ai;
    uint64_t tokens = nonneg(ai->input_tokens) + nonneg(ai->output_tokens) +
                      nonneg(ai->cache_write_tokens) + nonneg(ai->cache_read_tokens);
    double usd = ai->cost_usd > 0 ? ai->cost_usd : 0;
    if (a->rresv.active)
        settle_redis(a, usd, tokens);
    else
        ag_budget_settle(a->budget, &a->resv, usd, tokens);
}

void gw_access_settle_none(gw_access_t *a)
{
    if (a && a->rresv.active)
        settle_redis(a, 0, 0);
    else if (a && a->resv.active)
        ag_budget_settle(a->budget, &a->resv, 0, 0);
}

void gw_access_settle_worst(gw_access_t *a)
{
    if (a && a->rresv.active)
        a->rresv.active = false; /* the worst case stays spent */
    else if (a && a->resv.active)
        ag_budget_settle_worst(a->budget, &a->resv);
}

void gw_access_settle_failure(gw_access_t *a, int upstream_error)
{
    if (upstream_error == AG_EUPSTREAM_TIMEOUT)
        gw_access_settle_worst(a);
    else
        gw_access_settle_none(a);
}

bool gw_body_asks_caching(ag_str_t body)
{
    static const char needle[] = "\"cache_control\"";
    return body.len >= sizeof(needle) - 1 &&
           memmem(body.ptr, body.len, needle, sizeof(needle) - 1) != NULL;
}

/* ---- CORS ------------------------------------------------------------------------ */

#define EXPOSE                                                                                     \
    "x-request-id, x-aigate-cache, Retry-After, RateLimit-Limit, RateLimit-Remaining, "            \
    "RateLimit-Reset"

/* The seed's lines, for the server's own answers where "*" applies. */
static const char seed_cors_lines[] = "Access-Control-Allow-Origin: *\r\n"
                                      "Access-Control-Expose-Headers: " EXPOSE "\r\n";

bool gw_cors_apply(ag_req_t *req, const gw_gen_t *gen, bool strict)
{
    /* This request's CORS depends on its route and Origin: the server's
     * fixed lines would say "*" where the route must not. */
    req->no_default_headers = true;
    if (!gen->cors_origins || (strict && !gen->cors_origins_set))
        return false;
    if (gen->cors_wildcard) {
        ag_req_add_header(req, "Access-Control-Allow-Origin", AG_STR_LIT("*"));
    } else {
        ag_str_t origin = ag_req_header(req, "Origin");
        if (!ag_config_cors_allowed(gen->cors_origins, gen->cors_origins_set, !strict, origin.ptr,
                                    origin.len))
            return false;
        ag_req_add_header(req, "Access-Control-Allow-Origin", origin);
        ag_req_add_header(req, "Vary", AG_STR_LIT("Origin"));
    }
    ag_req_add_header(req, "Access-Control-Expose-Headers", AG_STR_LIT(EXPOSE));
    return true;
}

const char *gw_cors_default_headers(const ag_config_t *cfg)
{
    /* The server's own answers (a malformed request, a full server) come
     * before any route: they carry the seed's "*" where it applies, and no
     * CORS at all where only listed origins may have it. */
    if (ag_config_cors_allowed(cfg->cors_origins, cfg->cors_origins_set, true, "*", 1))
        return seed_cors_lines;
    return "";
}
