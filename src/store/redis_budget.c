/* SPDX-License-Identifier: MIT
 *
 * redis_budget.c: the reservation and the settle of a budget as Redis scripts:
 * every window checked and taken in one atomic step on the server.
 */
#include "util/platform.h"

#include "store/redis_budget.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "util/errors.h"
#include "util/log.h"

/* KEYS[1]: "aigate:budget:global", KEYS[2]: "aigate:budget:key:NAME" (or the
 * same global name when there is no key). ARGV: worst, global day limit, key
 * day limit, key month limit (nano-USD; 0: none), rpm, tpm, worst tokens.
 * The UTC day and month come from the server's TIME (civil-from-days), so
 * instances whose clocks differ share the same windows. Rates are GCRA, as
 * limit/budget.c's: a burst of the limit, then one every minute/limit.
 * Answer: {allowed, reason, retry_after_s, day, month, tpm_us}. */
static const char reserve_lua[] =
    "local t = redis.call('TIME')\n"
    "local now = tonumber(t[1])\n"
    "local now_us = now * 1000000 + tonumber(t[2])\n"
    "local day = math.floor(now / 86400)\n"
    "local z = day + 719468\n"
    "local era = math.floor(z / 146097)\n"
    "local doe = z - era * 146097\n"
    "local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524) -\n"
    "                        math.floor(doe / 146096)) / 365)\n"
    "local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))\n"
    "local mp = math.floor((5 * doy + 2) / 153)\n"
    "local m = mp < 10 and mp + 3 or mp - 9\n"
    "local y = yoe + era * 400 + (m <= 2 and 1 or 0)\n"
    "local month = y * 12 + m - 1\n"
    "local ny, nm = y, m + 1\n"
    "if nm > 12 then ny, nm = ny + 1, 1 end\n"
    "local yy = nm <= 2 and ny - 1 or ny\n"
    "local era2 = math.floor(yy / 400)\n"
    "local yoe2 = yy - era2 * 400\n"
    "local mp2 = nm > 2 and nm - 3 or nm + 9\n"
    "local doe2 = yoe2 * 365 + math.floor(yoe2 / 4) - math.floor(yoe2 / 100) +\n"
    "             math.floor((153 * mp2 + 2) / 5)\n"
    "local month_reset = (era2 * 146097 + doe2 - 719468) * 86400 - now\n"
    "local day_reset = (day + 1) * 86400 - now\n"
    "local worst = tonumber(ARGV[1])\n"
    "local glim, kday, kmon = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])\n"
    "local rpm, tpm, ntok = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])\n"
    "local reason, wait = 0, 0\n"
    "local function refuse(r, w) if w >= wait then reason, wait = r, w end end\n"
    "local function spent(k) return tonumber(redis.call('GET', k) or '0') or 0 end\n"
    "local function gcra(k, limit, n)\n"
    "  local T = math.ceil(60000000 / limit)\n"
    "  local tat = tonumber(redis.call('GET', k) or '0') or 0\n"
    "  if tat < now_us then tat = now_us end\n"
    "  local new = tat + n * T\n"
    "  if new - T * limit > now_us then return nil, math.ceil((new - T * limit - now_us) / "
    "1000000), T end\n"
    "  return new, 0, T\n"
    "end\n"
    "local gday = KEYS[1] .. ':day:' .. day\n"
    "local kd = KEYS[2] .. ':day:' .. day\n"
    "local km = KEYS[2] .. ':month:' .. month\n"
    "local rpm_tat, tpm_tat, tpm_us, w\n"
    "if rpm > 0 then\n"
    "  rpm_tat, w = gcra(KEYS[2] .. ':rpm', rpm, 1)\n"
    "  if not rpm_tat then refuse(1, w) end\n"
    "end\n"
    "if tpm > 0 and ntok > 0 then\n"
    "  tpm_tat, w, tpm_us = gcra(KEYS[2] .. ':tpm', tpm, ntok)\n"
    "  if not tpm_tat then refuse(2, w) end\n"
    "end\n"
    "if kday > 0 and spent(kd) + worst > kday then refuse(3, day_reset) end\n"
    "if kmon > 0 and spent(km) + worst > kmon then refuse(4, month_reset) end\n"
    "if glim > 0 and spent(gday) + worst > glim then refuse(5, day_reset) end\n"
    "if reason > 0 then return {0, reason, math.max(wait, 1), day, month, 0} end\n"
    "if rpm_tat then\n"
    "  redis.call('SET', KEYS[2] .. ':rpm', string.format('%d', rpm_tat), 'PX',\n"
    "             math.ceil((rpm_tat - now_us) / 1000) + 1)\n"
    "end\n"
    "if tpm_tat then\n"
    "  redis.call('SET', KEYS[2] .. ':tpm', string.format('%d', tpm_tat), 'PX',\n"
    "             math.ceil((tpm_tat - now_us) / 1000) + 1)\n"
    "end\n"
    "if glim > 0 then\n"
    "  redis.call('INCRBY', gday, ARGV[1])\n"
    "  redis.call('EXPIRE', gday, 2 * 86400)\n"
    "end\n"
    "if kday > 0 or kmon > 0 then\n"
    "  redis.call('INCRBY', kd, ARGV[1])\n"
    "  redis.call('EXPIRE', kd, 2 * 86400)\n"
    "  redis.call('INCRBY', km, ARGV[1])\n"
    "  redis.call('EXPIRE', km, 40 * 86400)\n"
    "end\n"
    "return {1, 0, 0, day, month, tpm_us or 0}\n";

/* KEYS as above. ARGV: day, month, the difference (real - worst, nano-USD),
 * global (0/1), key windows (0/1), microseconds to give back to the tpm
 * schedule. A window that expired meanwhile is not brought back. */
static const char settle_lua[] =
    "local d = tonumber(ARGV[3])\n"
    "local function give(k)\n"
    "  if redis.call('EXISTS', k) == 1 then redis.call('INCRBY', k, ARGV[3]) end\n"
    "end\n"
    "if d ~= 0 and ARGV[4] == '1' then give(KEYS[1] .. ':day:' .. ARGV[1]) end\n"
    "if d ~= 0 and ARGV[5] == '1' then\n"
    "  give(KEYS[2] .. ':day:' .. ARGV[1])\n"
    "  give(KEYS[2] .. ':month:' .. ARGV[2])\n"
    "end\n"
    "local back = tonumber(ARGV[6])\n"
    "if back > 0 then\n"
    "  local k = KEYS[2] .. ':tpm'\n"
    "  local tat = tonumber(redis.call('GET', k) or '')\n"
    "  if tat then redis.call('SET', k, string.format('%d', tat - back), 'KEEPTTL') end\n"
    "end\n"
    "return 1\n";

static ag_redis_script_t reserve_script, settle_script;
static pthread_once_t scripts_once = PTHREAD_ONCE_INIT;

static void scripts_init(void)
{
    ag_redis_script_init(&reserve_script, reserve_lua);
    ag_redis_script_init(&settle_script, settle_lua);
}

static void key_names(const char *key_name, char global[32], char key[96])
{
    snprintf(global, 32, "aigate:budget:global");
    if (key_name)
        snprintf(key, 96, "aigate:budget:key:%s", key_name);
    else
        snprintf(key, 96, "%s", global);
}

int ag_redis_budget_reserve(ag_redis_t *r, const ag_redis_budget_ask_t *ask, ag_redis_cb cb,
                            void *ctx, ag_redis_cmd_t **out)
{
    if (out)
        *out = NULL;
    if (ask->key_name && strlen(ask->key_name) > 64)
        return AG_EINVALID;
    pthread_once(&scripts_once, scripts_init);
    char g[32], k[96], a[7][24];
    key_names(ask->key_name, g, k);
    snprintf(a[0], sizeof(a[0]), "%lld", (long long)ask->worst_nano);
    snprintf(a[1], sizeof(a[1]), "%lld", (long long)ask->global_day_nano);
    snprintf(a[2], sizeof(a[2]), "%lld", (long long)(ask->key_name ? ask->key_day_nano : 0));
    snprintf(a[3], sizeof(a[3]), "%lld", (long long)(ask->key_name ? ask->key_month_nano : 0));
    snprintf(a[4], sizeof(a[4]), "%u", ask->key_name ? ask->rpm : 0);
    snprintf(a[5], sizeof(a[5]), "%u", ask->key_name ? ask->tpm : 0);
    snprintf(a[6], sizeof(a[6]), "%llu", (unsigned long long)ask->worst_tokens);
    const char *argv[] = {g, k, a[0], a[1], a[2], a[3], a[4], a[5], a[6]};
    return ag_redis_eval(r, &reserve_script, 2, 9, argv, NULL, cb, ctx, out);
}

int ag_redis_budget_decode(const ag_resp_t *reply, const ag_redis_budget_ask_t *ask,
                           ag_redis_budget_resv_t *resv, ag_redis_budget_result_t *res)
{
    memset(resv, 0, sizeof(*resv));
    memset(res, 0, sizeof(*res));
    if (!reply || reply->type != AG_RESP_ARRAY || reply->len != 6)
        return AG_REDIS_EREPLY;
    for (size_t i = 0; i < 6; i++) {
        if (reply->elems[i].type != AG_RESP_INTEGER || reply->elems[i].integer < 0)
            return AG_REDIS_EREPLY;
    }
    const ag_resp_t *e = reply->elems;
    res->allowed = e[0].integer == 1;
    res->reason = (int)e[1].integer;
    res->retry_after_s = e[2].integer > UINT32_MAX ? UINT32_MAX : (uint32_t)e[2].integer;
    if (!res->allowed) {
        if (res->reason < 1 || res->reason > 5)
            return AG_REDIS_EREPLY;
        if (res->retry_after_s == 0)
            res->retry_after_s = 1;
        return 0;
    }
    bool key = ask->key_name != NULL;
    *resv = (ag_redis_budget_resv_t){
        .active = true,
        .global = ask->global_day_nano > 0,
        .key_usd = key && (ask->key_day_nano > 0 || ask->key_month_nano > 0),
        .day = e[3].integer,
        .month = e[4].integer,
        .worst_nano = ask->worst_nano,
        .tokens = key && ask->tpm ? ask->worst_tokens : 0,
        .tpm_us = e[5].integer,
    };
    if (key)
        snprintf(resv->key_name, sizeof(resv->key_name), "%s", ask->key_name);
    return 0;
}

static void on_settled(void *ctx, int rc, const ag_resp_t *reply)
{
    static _Thread_local int64_t logged_us; /* once a second per loop, not per request */
    AG_UNUSED(ctx);
    if (rc == 0 && reply->type == AG_RESP_ERROR)
        rc = AG_REDIS_EREPLY;
    if (rc >= 0 || rc == AG_REDIS_ECLOSED || ag_mono_us() - logged_us < 1000000)
        return;
    logged_us = ag_mono_us();
    /* The worst case stays spent: a budget may then refuse early, never overshoot. */
    {
        ag_log_warn("a budget settle on Redis failed (%s): its worst case stays spent",
                    ag_strerror(rc));
    }
}

void ag_redis_budget_settle(ag_redis_t *r, ag_redis_budget_resv_t *resv, int64_t real_nano,
                            uint64_t real_tokens)
{
    if (!resv->active)
        return;
    resv->active = false;
    int64_t diff = real_nano - resv->worst_nano;
    uint64_t back_tokens = resv->tokens > real_tokens ? resv->tokens - real_tokens : 0;
    int64_t back_us = (int64_t)back_tokens * resv->tpm_us;
    if (diff == 0 && back_us == 0)
        return;
    if (!(resv->global || resv->key_usd) && back_us == 0)
        return;
    pthread_once(&scripts_once, scripts_init);
    char g[32], k[96], a[6][24];
    key_names(resv->key_name[0] ? resv->key_name : NULL, g, k);
    snprintf(a[0], sizeof(a[0]), "%lld", (long long)resv->day);
    snprintf(a[1], sizeof(a[1]), "%lld", (long long)resv->month);
    snprintf(a[2], sizeof(a[2]), "%lld", (long long)diff);
    snprintf(a[3], sizeof(a[3]), "%d", resv->global ? 1 : 0);
    snprintf(a[4], sizeof(a[4]), "%d", resv->key_usd ? 1 : 0);
    snprintf(a[5], sizeof(a[5]), "%lld", (long long)back_us);
    const char *argv[] = {g, k, a[0], a[1], a[2], a[3], a[4], a[5]};
    int rc = ag_redis_eval(r, &settle_script, 2, 8, argv, NULL, on_settled, NULL, NULL);
    if (rc < 0)
        on_settled(NULL, rc, NULL);
}
