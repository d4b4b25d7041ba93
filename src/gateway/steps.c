/* SPDX-License-Identifier: MIT
 *
 * steps.c: client identity, the rate limit, usage accounting and the upstream
 * call's description, shared by every AI route.
 */
#include "util/platform.h"

#include <string.h>

#include "gateway/steps.h"
#include "http/addr.h"
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

bool gw_step_limit(ag_req_t *req, const gw_route_t *route)
{
    const gw_limit_t *nl = &route->limit;
    gw_step_identify(req, route);
    ag_limit_result_t r;
    /* Monotonic: a wall-clock step (NTP) must not block or free clients. */
    /* Counted per identity (an IPv6 client per prefix); logs keep req->client. */
    char who[AG_ADDR_TEXT];
    ag_addr_identity(req->client, route->gen->ipv6_prefix, who);
    ag_limiter_check(nl->lim, who, strlen(who), ag_mono_us(), &r);
    char num[24];
    ag_req_add_header(req, "RateLimit-Limit", ag_str(num, ag_fmt_u64(num, r.limit)));
    ag_req_add_header(req, "RateLimit-Remaining", ag_str(num, ag_fmt_u64(num, r.remaining)));
    ag_req_add_header(req, "RateLimit-Reset", ag_str(num, ag_fmt_u64(num, r.reset_s)));
    if (r.allowed)
        return true;
    ag_req_add_header(req, "Retry-After", ag_str(num, ag_fmt_u64(num, r.retry_after_s)));
    req->ai.rate_limited = true;
    char word[32], msg[128];
    snprintf(msg, sizeof(msg), "Rate limit exceeded. Max %u requests/%s.", nl->limit,
             ag__gw_period_word(nl->period_s, word, sizeof(word)));
    route->def->proto->respond_error(req, 429, "rate_limit_error", msg);
    return false;
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
