/* SPDX-License-Identifier: MIT
 *
 * redis_gcra.h: the rate limiter's check on Redis: GCRA (the semantics of
 * limit/limiter.h: a burst of `limit`, then one request every period/limit) as
 * one Lua script per check, timed by the server's TIME, so instances whose
 * clocks differ share one exact limit.
 */
#ifndef AG_STORE_REDIS_GCRA_H
#define AG_STORE_REDIS_GCRA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "store/redis.h"

typedef struct ag_redis_gcra_result {
    bool allowed;
    uint32_t limit;         /* RateLimit-Limit */
    uint32_t remaining;     /* RateLimit-Remaining */
    uint32_t reset_s;       /* until the full quota is back, rounded up */
    uint32_t retry_after_s; /* when denied: >= 1; 0 when allowed */
} ag_redis_gcra_result_t;

/**
 * Counts one request for `key` (borrowed for the call; callers prefix it with
 * a namespace) against `limit` per `period_s`. A denied request is not counted.
 * Same contract as ag_redis_eval(); decode the answer with ag_redis_gcra_decode().
 */
int ag_redis_gcra_check(ag_redis_t *r, const char *key, size_t keylen, uint32_t limit,
                        uint32_t period_s, ag_redis_cb cb, void *ctx, ag_redis_cmd_t **out);

/** The check's answer as a result. @return 0, or AG_REDIS_EREPLY when the
 *  reply is not the script's (an error reply, a wrong shape). */
int ag_redis_gcra_decode(const ag_resp_t *reply, uint32_t limit, ag_redis_gcra_result_t *out);

#endif
