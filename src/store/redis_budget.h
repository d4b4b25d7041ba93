/* SPDX-License-Identifier: MIT
 *
 * redis_budget.h: budgets and per-key limits on Redis, for several instances:
 * the semantics of limit/budget.h (a request reserves its worst case, all or
 * nothing, and settles with its real cost) as one Lua script per reservation
 * and one per settle, windows (the UTC day and month) and rates timed by the
 * Redis server's clock.
 */
#ifndef AG_STORE_REDIS_BUDGET_H
#define AG_STORE_REDIS_BUDGET_H

#include <stdbool.h>
#include <stdint.h>

#include "store/redis.h"

/** What one request reserves against. Names are borrowed for the call. */
typedef struct ag_redis_budget_ask {
    const char *key_name;    /* the client key's name; NULL: none (only the global budget) */
    int64_t worst_nano;      /* the worst-case cost, nano-USD, rounded up */
    int64_t global_day_nano; /* the gateway's daily budget; 0: none */
    int64_t key_day_nano;    /* the key's daily budget; 0: none */
    int64_t key_month_nano;  /* the key's monthly budget; 0: none */
    uint32_t rpm, tpm;       /* the key's rates; 0: none */
    uint64_t worst_tokens;   /* counted against tpm */
} ag_redis_budget_ask_t;

/** A reservation taken on Redis; zeroed it is inactive. Holds no pointer. */
typedef struct ag_redis_budget_resv {
    bool active;
    bool global;        /* counted in the global day */
    bool key_usd;       /* counted in the key's day and month */
    int64_t day, month; /* the windows it was taken in (the server's) */
    int64_t worst_nano;
    uint64_t tokens; /* reserved against tpm */
    int64_t tpm_us;  /* microseconds of the tpm schedule per token */
    char key_name[65];
} ag_redis_budget_resv_t;

/** The answer of a reservation. `reason` uses limit/budget.h's numbering
 *  (1 rpm, 2 tpm, 3 daily, 4 monthly, 5 global). */
typedef struct ag_redis_budget_result {
    bool allowed;
    int reason;
    uint32_t retry_after_s;
} ag_redis_budget_result_t;

/** Sends the reservation script. Same contract as ag_redis_eval(); decode the
 *  answer with ag_redis_budget_decode(). */
int ag_redis_budget_reserve(ag_redis_t *r, const ag_redis_budget_ask_t *ask, ag_redis_cb cb,
                            void *ctx, ag_redis_cmd_t **out);

/** The reservation's answer: *res, and *resv filled (active) when allowed.
 *  @return 0, or AG_REDIS_EREPLY for a reply that is not the script's. */
int ag_redis_budget_decode(const ag_resp_t *reply, const ag_redis_budget_ask_t *ask,
                           ag_redis_budget_resv_t *resv, ag_redis_budget_result_t *res);

/** Ends a reservation with what the request used (nano-USD, tokens): the
 *  difference from the worst case is given back. Sent and forgotten: a
 *  failure is logged once a second at most and the worst case stays spent.
 *  The reservation is inactive afterwards. */
void ag_redis_budget_settle(ag_redis_t *r, ag_redis_budget_resv_t *resv, int64_t real_nano,
                            uint64_t real_tokens);

#endif
