/* SPDX-License-Identifier: MIT
 *
 * keys_sync.h: client keys shared through Redis (keys_sync.c): the job that
 * imports what `aigate keys` publishes (store/redis.h names the keys).
 */
#ifndef AG_GATEWAY_KEYS_SYNC_H
#define AG_GATEWAY_KEYS_SYNC_H

#include <uv.h>

#include "cron/periodic.h"
#include "store/keys.h"

typedef struct gw_keys_sync gw_keys_sync_t;

/** Starts importing on loop's thread pool: at once, then every second.
 *  @return 0 or a negative code. */
int gw_keys_sync_start(uv_loop_t *loop, ag_keys_t *keys, const char *url, const char *password,
                       gw_keys_sync_t **out);

/** Stops on the loop's thread (a run in progress finishes first). NULL: no-op. */
void gw_keys_sync_stop(gw_keys_sync_t *s);

#endif
