/* SPDX-License-Identifier: MIT
 *
 * steps.c: client identity, the rate limit, usage accounting and the upstream
 * call's description, shared by every AI route.
 */
#include "util/platform.h"

#include <string.h>

#include "gateway/steps.h"
#include "http/addr.h"
#include "store/redis_gcra.h"
#include "upstream/rates.h"
#include "util/fmt.h"
#include "util/log.h"

void gw_step_identify(ag_req_t *req, const gw_route_t *route)
{
    char client[64];
    ag_str_t xff[16], fwd[16];
    ag_forwarded_t f = {
        .cf_connecting_ip = ag_req_header(req, "CF-Connecting-IP"),
        .xff = xff,
        .nxff = ag_req_header_all(req, "X-Forwarded-For", xff, AG_ARRAY_LEN(xff)),
        .fwd = fwd,
        .nfwd = ag_req_header_all(req, "Forwarded", fwd, AG_ARRAY_LEN(fwd)),
    };
    ag_client_resolve(route->gen->trusted, route->gen->trusted_cf, req->peer_ip, &f, client);
    memcpy(req->client, client, sizeof(client));
}

/* The check's answer on the response: RateLimit-*, and the 429 when refused.
 * @return true when the request may go on. */
static bool limit_answer(ag_req_t *req, const gw_route_t *route, const ag_limit_result_t *r)
{
    const gw_limit_t *nl = &route->limit;
    char num[24];
    ag_req_add_header(req, "RateLimit-Limit", ag_str(num, ag_fmt_u64(num, r->limit)));
    ag_req_add_header(req, "RateLimit-Remaining", ag_str(num, ag_fmt_u64(num, r->remaining)));
    ag_req_add_header(req, "RateLimit-Reset", ag_str(num, ag_fmt_u64(num, r->reset_s)));
    if (r->allowed)
        return true;
    ag_req_add_header(req, "Retry-After", ag_str(num, ag_fmt_u64(num, r->retry_after_s)));
    req->ai.rate_limited = true;
    char word[32], msg[128];
    snprintf(msg, sizeof(msg), "Rate limit exceeded. Max %u requests/%s.", nl->limit,
             ag__gw_period_word(nl->period_s, word, sizeof(word)));
    route->def->proto->respond_error(req, 429, "rate_limit_error", msg);
    return false;
}

/* Counted per identity (an IPv6 client per prefix); logs keep req->client. */
static void limit_identity(const ag_req_t *req, const gw_route_t *route, char who[AG_ADDR_TEXT])
{
    ag_addr_identity(req->client, route->gen->ipv6_prefix, who);
}

static void limit_local(ag_req_t *req, const gw_route_t *route, gw_limit_next_fn next, void *ctx)
{
    char who[AG_ADDR_TEXT];
    limit_identity(req, route, who);
    ag_limit_result_t r;
    /* Monotonic: a wall-clock step (NTP) must not block or free clients. */
    ag_limiter_check(route->limit.lim, who, strlen(who), ag_mono_us(), &r);
    if (limit_answer(req, route, &r))
        next(ctx);
}

void gw_redis_warn(gw_worker_t *w, const char *what, int rc, const char *then)
{
    int64_t now = ag_mono_us();
    if (now - w->redis_logged_us < 1000000)
        return;
    w->redis_logged_us = now;
    ag_log_warn("worker %u: Redis cannot %s (%s): %s", w->index, what, ag_strerror(rc), then);
}

/* A check waiting for Redis; in the request's pool. With a client key, the
 * key's revocation mark is asked for in the same round trip (pipelined: its
 * answer comes first, the connection keeps the order). */
typedef struct limit_wait {
    ag_req_t *req;
    gw_worker_t *w;
    const gw_route_t *route;
    gw_limit_next_fn next;
    void *ctx;
    ag_redis_cmd_t *cmd;      /* the GCRA check; NULL once answered */
    ag_redis_cmd_t *revcmd;   /* the revocation mark; NULL once answered or not asked */
    ag_redis_cmd_t *spentcmd; /* the model's shared upstream window; likewise */
    bool revoked;
    int failed; /* the first failure's code, or 0 */
} limit_wait_t;

static void limit_wait_cancel(void *p)
{
    limit_wait_t *lw = p;
    ag_redis_cancel(lw->cmd); /* the client left while Redis was asked */
    lw->cmd = NULL;
    ag_redis_cancel(lw->revcmd);
    lw->revcmd = NULL;
    ag_redis_cancel(lw->spentcmd);
    lw->spentcmd = NULL;
}

/* Another instance's answer spent the model's window: this one holds its
 * requests for the reset too (call.c queues them) instead of sending them to
 * fail. Only a hint: a failure here changes nothing. */
static void on_redis_spent(void *ctx, int rc, const ag_resp_t *reply)
{
    limit_wait_t *lw = ctx;
    lw->spentcmd = NULL;
    if (rc < 0 || reply->type != AG_RESP_BULK || reply->len == 0 || reply->len > 18)
        return;
    int64_t until = 0;
    for (size_t i = 0; i < reply->len; i++) {
        if (reply->str[i] < '0' || reply->str[i] > '9')
            return;
        until = until * 10 + (reply->str[i] - '0');
    }
    ag_rates_spend(ag_rates_model(lw->w->gw->rates, lw->req->ai.model), until, ag_now_us() / 1000);
}

static void on_redis_revoked(void *ctx, int rc, const ag_resp_t *reply)
{
    limit_wait_t *lw = ctx;
    lw->revcmd = NULL;
    if (rc == 0 && reply->type != AG_RESP_INTEGER)
        rc = AG_REDIS_EREPLY;
    if (rc < 0)
        lw->failed = rc; /* the check's answer (or failure) decides what is sent */
    else
        lw->revoked = reply->integer == 1;
}

bool gw_redis_failed(ag_req_t *req, gw_worker_t *w, const gw_route_t *route, const char *what,
                     int rc, const char *msg)
{
    bool open = route->gen->redis_fail_open;
    gw_redis_warn(w, what, rc,
                  open ? "this instance's own limits apply"
                       : "requests get 503 (redis_fail = \"closed\")");
    if (open)
        return false;
    ag_req_add_header(req, "Retry-After", AG_STR_LIT("1"));
    route->def->proto->respond_error(req, 503, "api_error", msg);
    return true;
}

static void limit_redis_failed(limit_wait_t *lw, int rc)
{
    if (!gw_redis_failed(lw->req, lw->w, lw->route, "check rate limits", rc,
                         "Rate limiter unavailable"))
        limit_local(lw->req, lw->route, lw->next, lw->ctx);
}

static void on_redis_limit(void *ctx, int rc, const ag_resp_t *reply)
{
    limit_wait_t *lw = ctx;
    lw->cmd = NULL;
    ag_redis_gcra_result_t g;
    if (rc == 0)
        rc = ag_redis_gcra_decode(reply, lw->route->limit.limit, &g);
    if (rc == 0 && lw->failed)
        rc = lw->failed;
    if (rc < 0) {
        limit_redis_failed(lw, rc);
        return;
    }
    if (lw->revoked) {
        /* Revoked through another instance (`aigate keys revoke` with Redis). */
        ag_log_info("request %s: key %s is revoked (on Redis)", lw->req->id, lw->req->ai.key_name);
        lw->route->def->proto->respond_error(lw->req, 401, "authentication_error",
                                             "Invalid API key");
        return;
    }
    ag_limit_result_t r = {g.allowed, g.limit, g.remaining, g.reset_s, g.retry_after_s};
    if (limit_answer(lw->req, lw->route, &r))
        lw->next(lw->ctx);
}

void gw_step_limit(ag_req_t *req, gw_worker_t *w, const gw_route_t *route, gw_limit_next_fn next,
                   void *ctx)
{
    gw_step_identify(req, route);
    if (!w->redis) {
        limit_local(req, route, next, ctx);
        return;
    }
    /* On Redis every instance shares the count: one script per check, timed
     * by the server's clock. The key names the limiter and its numbers, as the
     * local limiter's identity does (new numbers start fresh counts). */
    const gw_limit_t *nl = &route->limit;
    char who[AG_ADDR_TEXT];
    limit_identity(req, route, who);
    char *key =
        ag_pool_printf(&req->pool, "aigate:rl:%s:%u/%u:%s", nl->name, nl->limit, nl->period_s, who);
    limit_wait_t *lw = ag_pool_alloc(&req->pool, sizeof(*lw));
    *lw = (limit_wait_t){.req = req, .w = w, .route = route, .next = next, .ctx = ctx};
    ag_pool_on_clear(&req->pool, limit_wait_cancel, lw);
    int rc = 0;
    if (req->ai.key_name) {
        const char *argv[] = {"EXISTS", ag_pool_printf(&req->pool, "%s%s", AG_REDIS_REVOKED_PREFIX,
                                                       req->ai.key_name)};
        rc = ag_redis_command(w->redis, 2, argv, NULL, on_redis_revoked, lw, &lw->revcmd);
    }
    if (rc == 0 && req->ai.model) {
        const char *argv[] = {
            "GET", ag_pool_printf(&req->pool, "%s%s", GW_REDIS_SPENT_PREFIX, req->ai.model)};
        rc = ag_redis_command(w->redis, 2, argv, NULL, on_redis_spent, lw, &lw->spentcmd);
    }
    if (rc == 0)
        rc = ag_redis_gcra_check(w->redis, key, strlen(key), nl->limit, nl->period_s,
                                 on_redis_limit, lw, &lw->cmd);
    if (rc < 0) {
        ag_redis_cancel(lw->revcmd);
        lw->revcmd = NULL;
        ag_redis_cancel(lw->spentcmd);
        lw->spentcmd = NULL;
        lw->cmd = NULL;
        limit_redis_failed(lw, rc);
    }
}

void gw_step_usage_begin(ag_req_t *req, const char *model, uint32_t prompt_units, bool stream)
{
    req->ai.usage = true;
    req->ai.model = model;
    req->ai.prompt_units = prompt_units;
    req->ai.stream = stream;
}

void gw_step_tokens(ag_req_t *req, const gw_route_t *route, int64_t in, int64_t out,
                    int64_t cache_write, int64_t cache_read)
{
    ag_ai_record_t *ai = &req->ai;
    ai->input_tokens = in;
    ai->output_tokens = out;
    ai->cache_write_tokens = cache_write;
    ai->cache_read_tokens = cache_read;
    double cost = ai->model ? ag_usage_cost_usd(route->gen->prices, route->gen->nprices, ai->model,
                                                in, out, cache_write, cache_read)
                            : 0;
    /* A cache hit used nothing upstream: it costs nothing, and saved that much. */
    ai->cost_usd = ai->cache == AG_CACHE_HIT ? 0 : cost;
    ai->saved_usd = ai->cache == AG_CACHE_HIT ? cost : 0;
}

void gw_step_cache_control(ag_req_t *req, bool *no_cache, bool *no_store)
{
    ag_str_t cc = ag_req_header(req, "Cache-Control");
    *no_store = ag__gw_has_token(cc, "no-store");
    *no_cache = *no_store || ag__gw_has_token(cc, "no-cache");
}

ag_upstream_request_t gw_upstream_request(const gw_gen_t *gen, const char *const *headers,
                                          ag_str_t body, bool stream)
{
    ag_upstream_request_t u = {
        .url = gen->messages_url,
        .headers = headers,
        .body = body.ptr,
        .body_len = body.len,
        .connect_timeout_ms = gen->connect_timeout_ms,
        .timeout_ms = stream ? 0 : gen->timeout_ms,
        .idle_timeout_ms = stream ? gen->stream_idle_timeout_ms : 0,
    };
    while (headers[u.nheaders])
        u.nheaders++;
    return u;
}

bool ag__gw_has_token(ag_str_t header, const char *token)
{
    size_t tlen = strlen(token);
    for (size_t i = 0; i + tlen <= header.len; i++) {
        if (strncasecmp(header.ptr + i, token, tlen) != 0)
            continue;
        bool left = i == 0 || header.ptr[i - 1] == ',' || header.ptr[i - 1] == ' ';
        bool right = i + tlen == header.len || header.ptr[i + tlen] == ',' ||
                     header.ptr[i + tlen] == ' ' || header.ptr[i + tlen] == ';';
        if (left && right)
            return true;
    }
    return false;
}

const char *ag__gw_period_word(unsigned period_s, char *buf, size_t len)
{
    switch (period_s) {
    case 1:
        return "second";
    case 60:
        return "minute";
    case 3600:
        return "hour";
    case 86400:
        return "day";
    default:
        snprintf(buf, len, "%u seconds", period_s);
        return buf;
    }
}

void gw_log_model_refused(const ag_req_t *req, const gw_route_t *route, const char *model,
                          size_t len)
{
    char shown[160];
    ag_log_escape(shown, sizeof(shown), model, len);
    ag_log_warn("request %s: model \"%s\" refused on %s: allow it in [aigate] models (or the "
                "route's models), make it DEFAULT_MODEL, or route a task to it in "
                "[aigate.routing]",
                req->id, shown, route->def->path);
}
