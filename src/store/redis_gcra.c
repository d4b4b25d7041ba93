/* SPDX-License-Identifier: MIT
 *
 * redis_gcra.c: the GCRA check as one Redis script: read the key's TAT, decide
 * and write it back in one atomic step on the server, on the server's clock.
 */
#include "util/platform.h"

#include "store/redis_gcra.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "util/errors.h"

/* KEYS[1]: the key's TAT in microseconds of the server's clock. ARGV: limit,
 * period in microseconds. The emission interval T is rounded up, as in
 * limiter.c, so the sustained rate is never above the configured one. The key
 * lives only while it holds debt (PX), so idle clients cost no memory.
 * Answer: {allowed, remaining, reset_us, retry_us}. */
static const char gcra_lua[] =
    "local t = redis.call('TIME')\n"
    "local now = tonumber(t[1]) * 1000000 + tonumber(t[2])\n"
    "local limit = tonumber(ARGV[1])\n"
    "local T = math.ceil(tonumber(ARGV[2]) / limit)\n"
    "local burst = T * limit\n"
    "local tat = tonumber(redis.call('GET', KEYS[1]) or '0') or 0\n"
    "if tat < now then tat = now end\n"
    "local new_tat = tat + T\n"
    "if new_tat - burst > now then\n"
    "  return {0, 0, tat - now, new_tat - burst - now}\n"
    "end\n"
    "redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX',\n"
    "           math.ceil((new_tat - now) / 1000) + 1)\n"
    "return {1, math.floor((burst - (new_tat - now)) / T), new_tat - now, 0}\n";

static ag_redis_script_t gcra_script;
static pthread_once_t gcra_once = PTHREAD_ONCE_INIT;

static void gcra_init(void)
{
    ag_redis_script_init(&gcra_script, gcra_lua);
}

int ag_redis_gcra_check(ag_redis_t *r, const char *key, size_t keylen, uint32_t limit,
                        uint32_t period_s, ag_redis_cb cb, void *ctx, ag_redis_cmd_t **out)
{
    if (out)
        *out = NULL;
    if (limit == 0 || period_s == 0)
        return AG_EINVALID;
    pthread_once(&gcra_once, gcra_init);
    char lim[16], per[24];
    snprintf(lim, sizeof(lim), "%u", limit);
    snprintf(per, sizeof(per), "%llu", (unsigned long long)period_s * 1000000ull);
    const char *argv[] = {key, lim, per};
    size_t lens[] = {keylen, strlen(lim), strlen(per)};
    return ag_redis_eval(r, &gcra_script, 1, 3, argv, lens, cb, ctx, out);
}

static uint32_t us_to_s_ceil(int64_t us)
{
    if (us <= 0)
        return 0;
    int64_t s = (us + 999999) / 1000000;
    return s > UINT32_MAX ? UINT32_MAX : (uint32_t)s;
}

int ag_redis_gcra_decode(const ag_resp_t *reply, uint32_t limit, ag_redis_gcra_result_t *out)
{
    memset(out, 0, sizeof(*out));
    if (!reply || reply->type != AG_RESP_ARRAY || reply->len != 4)
        return AG_REDIS_EREPLY;
    for (size_t i = 0; i < 4; i++) {
        if (reply->elems[i].type != AG_RESP_INTEGER || reply->elems[i].integer < 0)
            return AG_REDIS_EREPLY;
    }
    out->allowed = reply->elems[0].integer == 1;
    out->limit = limit;
    int64_t rem = reply->elems[1].integer;
    out->remaining = rem > limit ? limit : (uint32_t)rem;
    out->reset_s = us_to_s_ceil(reply->elems[2].integer);
    if (!out->allowed) {
        out->retry_after_s = us_to_s_ceil(reply->elems[3].integer);
        if (out->retry_after_s == 0)
            out->retry_after_s = 1;
    }
    return 0;
}
