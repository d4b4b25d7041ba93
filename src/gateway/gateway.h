/* SPDX-License-Identifier: MIT
 *
 * gateway.h: aigate's routes as server hooks. The gateway holds what lives as
 * long as the process (stores, the usage log, observers, request coalescing);
 * what requests read from the config lives in generations that can be replaced
 * while it serves. Each worker gets its own upstream client.
 */
#ifndef AG_GATEWAY_GATEWAY_H
#define AG_GATEWAY_GATEWAY_H

#include <stdio.h>

#include "config/config.h"
#include "http/server.h"

typedef struct ag_gateway ag_gateway_t;

/** Builds the gateway and its first generation from `cfg` (read during the
 *  call only; cfg->threads workers). Problems print to errs.
 *  @return 0, or AG_EBADCONFIG / a negative code. */
int ag_gateway_new(const ag_config_t *cfg, FILE *errs, ag_gateway_t **out);
void ag_gateway_free(ag_gateway_t *gw);

/** Before ag_gateway_new(): this process is a binary upgrade's new one, and
 *  the old one still serves on the same stores (see ag_budget_options_t). */
void ag_gateway_set_handover(bool on);

/** Validates `cfg` the way ag_gateway_new() would, opening nothing. */
int ag_gateway_check_config(const ag_config_t *cfg, FILE *errs);

/** Builds a new generation from `cfg` and makes it current: requests that
 *  started before finish on theirs. Restart-only keys are not applied.
 *  @return the new generation's number (> 0), or AG_EBADCONFIG. */
int ag_gateway_apply(ag_gateway_t *gw, const ag_config_t *cfg, FILE *errs);

/** The routes served (static strings), up to cap of them. @return how many there are. */
size_t ag_gateway_routes(const char **methods, const char **paths, size_t cap);

/** The current generation's number (1 for the first). */
unsigned ag_gateway_generation(ag_gateway_t *gw);

/** The server hooks that run this gateway on every worker. */
ag_server_hooks_t ag_gateway_hooks(ag_gateway_t *gw);

/** What the admin listener reads: the observers, the usage log and its bucket
 *  (NULL when the log is off). Owned by the gateway. */
struct ag_obs *ag_gateway_obs(ag_gateway_t *gw);
struct ag_usage_log *ag_gateway_usage_log(ag_gateway_t *gw);
struct ag_objstore *ag_gateway_log_bucket(ag_gateway_t *gw);
/** The upstream's rate-limit view, which scheduled tasks share. */
struct ag_rates *ag_gateway_rates(ag_gateway_t *gw);

/** Redis as the workers see it, for /readyz. */
typedef enum ag_gateway_redis {
    AG_GATEWAY_REDIS_NONE,      /* no [aigate.redis] */
    AG_GATEWAY_REDIS_UP,        /* every worker is connected */
    AG_GATEWAY_REDIS_DOWN,      /* some worker is not, and limits fail closed */
    AG_GATEWAY_REDIS_DOWN_OPEN, /* some worker is not; redis_fail = "open" serves anyway */
} ag_gateway_redis_t;

/** Any thread. */
ag_gateway_redis_t ag_gateway_redis_state(ag_gateway_t *gw);

/** Headers every response carries, for the server (ag_server_options_t). */
const char *ag_gateway_default_headers(const ag_gateway_t *gw);

#endif
