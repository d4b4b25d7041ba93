/* SPDX-License-Identifier: MIT
 *
 * keys_sync.c: client keys shared through Redis. `aigate keys` publishes each
 * record it writes (aigate:keys:records, name -> the record as stored, hex)
 * and bumps aigate:keys:version; every second this job asks for the version
 * and, when it moved, imports the records into this instance's store, so a
 * key made through any instance works on all of them while auth stays a local
 * lookup. Revocations also go by their own mark, checked per request.
 */
#include "util/platform.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "gateway/keys_sync.h"
#include "store/keys.h"
#include "store/redis.h"
#include "util/errors.h"
#include "util/hex.h"
#include "util/log.h"

#define SYNC_INTERVAL_MS 1000

struct gw_keys_sync {
    ag_keys_t *keys;
    ag_redis_options_t opts;
    char *url, *password;
    long long version; /* the last imported; -1: none yet */
    ag_periodic_t *job;
};

static long long version_of(const ag_resp_t *r)
{
    if (!r || r->type != AG_RESP_BULK)
        return 0; /* no version yet: nothing was published */
    return strtoll(r->str, NULL, 10);
}

/* The records as published: pairs of name and hex bytes (ag_redis_call's
 * copies end in a NUL). */
static unsigned import_all(gw_keys_sync_t *s, const ag_resp_t *all)
{
    unsigned stored = 0;
    for (size_t i = 0; all && all->type == AG_RESP_ARRAY && i + 1 < all->len; i += 2) {
        const ag_resp_t *name = &all->elems[i], *hex = &all->elems[i + 1];
        unsigned char rec[AG_KEYS_EXPORT_MAX];
        if (name->type != AG_RESP_BULK || hex->type != AG_RESP_BULK || hex->len % 2 ||
            hex->len / 2 > sizeof(rec) ||
            ag_hex_decode(hex->str, hex->len, rec, sizeof(rec)) != (ssize_t)(hex->len / 2)) {
            ag_log_warn("keys on Redis: a record that is not one is skipped");
            continue;
        }
        int rc = ag_keys_import(s->keys, name->str, rec, hex->len / 2);
        if (rc > 0)
            stored++;
        else if (rc < 0) {
            char shown[96]; /* a name from Redis is escaped: it must not forge a log line */
            ag_log_escape(shown, sizeof(shown), name->str, name->len);
            ag_log_warn("keys on Redis: cannot import key %s: %s", shown, ag_strerror(rc));
        }
    }
    return stored;
}

static void sync_run(void *ctx)
{
    gw_keys_sync_t *s = ctx;
    ag_resp_t *v = NULL, *all = NULL;
    const char *get[] = {"GET", AG_REDIS_KEYS_VERSION};
    if (ag_redis_call(&s->opts, 2, get, &v) < 0)
        return; /* Redis away: the limit checks say so; the next tick tries again */
    long long version = version_of(v);
    ag_resp_free(v);
    if (version == s->version)
        return;
    const char *hgetall[] = {"HGETALL", AG_REDIS_KEYS_RECORDS};
    if (ag_redis_call(&s->opts, 2, hgetall, &all) < 0)
        return;
    unsigned n = import_all(s, all);
    ag_resp_free(all);
    if (n)
        ag_log_info("keys on Redis: %u record%s imported (version %lld)", n, n == 1 ? "" : "s",
                    version);
    s->version = version;
}

int gw_keys_sync_start(uv_loop_t *loop, ag_keys_t *keys, const char *url, const char *password,
                       gw_keys_sync_t **out)
{
    gw_keys_sync_t *s = calloc(1, sizeof(*s));
    if (!s)
        return -ENOMEM;
    s->keys = keys;
    s->version = -1;
    s->url = strdup(url);
    s->password = password ? strdup(password) : NULL;
    if (!s->url || (password && !s->password)) {
        gw_keys_sync_stop(s);
        return -ENOMEM;
    }
    s->opts = (ag_redis_options_t){
        .url = s->url,
        .password = s->password,
        .connect_timeout_ms = 1000,
        .command_timeout_ms = 1000,
        .single_attempt = true, /* one per tick; Redis away is the limit checks' to say */
        .name = "key sync",
    };
    int rc = ag_periodic_start(loop, SYNC_INTERVAL_MS, sync_run, s, &s->job);
    if (rc == 0)
        rc = ag_periodic_run_now(s->job) < 0 ? -ENOMEM : 0;
    if (rc < 0) {
        gw_keys_sync_stop(s);
        return rc;
    }
    *out = s;
    return 0;
}

/* The job may be mid-run: its teardown frees s only after that run. */
static void sync_free(void *ctx)
{
    gw_keys_sync_t *s = ctx;
    free(s->url);
    free(s->password);
    free(s);
}

void gw_keys_sync_stop(gw_keys_sync_t *s)
{
    if (!s)
        return;
    if (!s->job) {
        sync_free(s);
        return;
    }
    ag_periodic_stop_then(s->job, sync_free);
}
