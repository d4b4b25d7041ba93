/* SPDX-License-Identifier: MIT
 *
 * upcall.c: upstream calls made for requests: the generation's retry policy
 * and fallbacks, the worker's queue, and the answer's account of itself.
 */
#include "util/platform.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "gateway/access.h"
#include "gateway/generation.h"
#include "gateway/steps.h"
#include "gateway/routes.h"
#include "gateway/upcall.h"
#include "util/fmt.h"

void gw_call_info_from(gw_call_info_t *out, const ag_call_summary_t *s)
{
    memset(out, 0, sizeof(*out));
    out->attempts = s->attempts;
    out->retries = s->retries;
    for (unsigned k = 0; k < AG_RETRY_NREASONS; k++)
        out->by_reason[k] =
            (uint8_t)(s->retries_by_reason[k] > 255 ? 255 : s->retries_by_reason[k]);
    out->queued_us = s->queued_us;
    snprintf(out->model, sizeof(out->model), "%s", s->model ? s->model : "");
    snprintf(out->fallback_from, sizeof(out->fallback_from), "%s",
             s->fallback_from ? s->fallback_from : "");
    out->refusal = s->refusal;
    out->retry_after_s = s->retry_after_s;
}

/* A window spent here is spent for every instance: its reset goes to Redis
 * (the later one wins), where each limit check reads it (steps.c). */
static const char spent_lua[] =
    "local cur = tonumber(redis.call('GET', KEYS[1]) or '0')\n"
    "if tonumber(ARGV[1]) > cur then redis.call('SET', KEYS[1], ARGV[1], 'PXAT', ARGV[1]) end\n"
    "return 0\n";
static ag_redis_script_t spent_script;
static pthread_once_t spent_once = PTHREAD_ONCE_INIT;

static void spent_init(void)
{
    ag_redis_script_init(&spent_script, spent_lua);
}

static void on_spent_stored(void *ctx, int rc, const ag_resp_t *reply)
{
    AG_UNUSED(reply);
    if (rc < 0 && rc != AG_REDIS_ECLOSED)
        gw_redis_warn(ctx, "share the upstream's rate window", rc, "other instances find out");
}

static void share_spent(void *ctx, const char *model, int64_t until_ms)
{
    gw_worker_t *w = ctx;
    if (!w->redis)
        return;
    pthread_once(&spent_once, spent_init);
    char key[200], at[24];
    snprintf(key, sizeof(key), "%s%s", GW_REDIS_SPENT_PREFIX, model);
    snprintf(at, sizeof(at), "%lld", (long long)until_ms);
    const char *argv[] = {key, at};
    if (ag_redis_eval(w->redis, &spent_script, 1, 2, argv, NULL, on_spent_stored, w, NULL) < 0)
        gw_redis_warn(w, "share the upstream's rate window", AG_REDIS_EDOWN,
                      "other instances find out");
}

int gw_call_start(gw_worker_t *w, const gw_route_t *route, const char *model,
                  const ag_upstream_request_t *req, ag_call_done_cb done, void *ctx,
                  ag_call_t **out)
{
    const gw_gen_t *gen = route->gen;
    ag_call_opts_t o = {
        .upstream = w->upstream,
        .queue = w->callq,
        .rates = w->gw->rates,
        .policy = gen->retry,
        .queue_max = gen->queue_max,
        .queue_timeout_ms = gen->queue_timeout_ms,
        .request = *req,
        .model = model,
        .done = done,
        .ctx = ctx,
        .on_spent = w->redis ? share_spent : NULL,
        .spent_ctx = w,
    };
    o.fallbacks = gw_gen_fallbacks(gen, model, &o.nfallbacks);
    return ag_call_start(&o, out);
}

void gw_call_apply(ag_req_t *req, const gw_call_info_t *info, bool made_it)
{
    if (info->attempts == 0)
        return;
    char num[24];
    ag_req_add_header(req, "x-aigate-retries", ag_str(num, ag_fmt_u64(num, info->retries)));
    if (info->model[0]) {
        const char *model = ag_pool_strndup(&req->pool, info->model, strlen(info->model));
        ag_req_add_header(req, "x-aigate-model", ag_str_c(model));
        if (info->fallback_from[0]) {
            req->ai.model = model; /* priced, logged and counted as the model that answered */
            req->ai.fallback_from =
                ag_pool_strndup(&req->pool, info->fallback_from, strlen(info->fallback_from));
        }
    }
    if (!made_it)
        return;
    req->ai.attempts = info->attempts;
    req->ai.retries = info->retries;
    memcpy(req->ai.retries_by_reason, info->by_reason, sizeof(info->by_reason));
    req->ai.queued_us = info->queued_us;
}

const char *gw_call_refusal_message(ag_call_refusal_t why)
{
    return why == AG_CALL_QUEUE_FULL ? "AI service busy: too many requests are waiting"
                                     : "AI service busy: the rate limit did not reset in time";
}

void gw_call_refused(ag_req_t *req, const gw_route_t *route, const gw_call_info_t *info)
{
    char num[24];
    ag_req_add_header(req, "Retry-After",
                      ag_str(num, ag_fmt_u64(num, info->retry_after_s ? info->retry_after_s : 1)));
    req->ai.queued_us = info->queued_us;
    route->def->proto->respond_error(req, 503, "overloaded_error",
                                     gw_call_refusal_message(info->refusal));
}

bool gw_call_answered(ag_req_t *req, const gw_route_t *route, gw_access_t *acc,
                      const ag_upstream_response_t *resp, const ag_call_summary_t *s, char *kv_key)
{
    gw_call_info_t info;
    gw_call_info_from(&info, s);
    if (s->refusal) {
        gw_access_settle_none(acc); /* nothing went upstream */
        gw_call_refused(req, route, &info);
        return false;
    }
    gw_call_apply(req, &info, true);
    if (info.fallback_from[0] && kv_key)
        kv_key[0] = '\0'; /* another model's answer: not cached as this one's */
    req->ai.upstream_us = resp->duration_us;
    req->ai.upstream_status = resp->status;
    return true;
}

static void on_depth(void *ctx, const char *model, int delta, int64_t waited_us)
{
    gw_worker_t *w = ctx;
    AG_UNUSED(waited_us);
    ag_obs_queue(w->gw->obs, w->index, model, delta);
}

int gw_upcall_worker_init(gw_worker_t *w)
{
    return ag_callq_new(w->loop, on_depth, w, &w->callq);
}

void gw_upcall_worker_stop(gw_worker_t *w)
{
    ag_callq_close(w->callq);
    w->callq = NULL;
}
