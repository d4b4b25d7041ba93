/* SPDX-License-Identifier: MIT
 *
 * gateway.h: aigate's routes (the seed's POST /api/generate and ours) as
 * server hooks. The gateway is shared read-only state; each worker gets its
 * own upstream client.
 */
#ifndef AG_GATEWAY_GATEWAY_H
#define AG_GATEWAY_GATEWAY_H

#include "config/config.h"
#include "http/server.h"

typedef struct ag_gateway ag_gateway_t;

/** Builds the gateway over `cfg` (borrowed; must outlive the gateway). */
int ag_gateway_new(const ag_config_t *cfg, ag_gateway_t **out);
void ag_gateway_free(ag_gateway_t *gw);

/** The server hooks that run this gateway on every worker. */
ag_server_hooks_t ag_gateway_hooks(ag_gateway_t *gw);

#endif
