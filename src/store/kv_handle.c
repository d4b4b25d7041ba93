/* SPDX-License-Identifier: MIT
 *
 * kv_handle.c: what the KV front end and its back ends share: a handle's
 * initialisation (ops and clock) and the release of a value. Its own file so
 * that back ends call down to it, never up into the front end.
 */
#include "util/platform.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "store/kv.h"

static int64_t default_now_ms(void *ctx)
{
    (void)ctx;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void ag__kv_init(ag_kv_t *kv, const ag_kv_ops_t *ops, const ag_kv_options_t *opts)
{
    kv->ops = ops;
    kv->now_ms = opts && opts->now_ms ? opts->now_ms : default_now_ms;
    kv->clock_ctx = opts && opts->now_ms ? opts->clock_ctx : NULL;
}

void ag_kv_value_free(ag_kv_value_t *v)
{
    if (v == NULL)
        return;
    free(v->data);
    free(v->metadata);
    memset(v, 0, sizeof(*v));
}
