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

/* One command on a loop of its own (the job runs on the thread pool). */
typedef struct exchange {
    bool done;
    int rc;
    ag_resp_t *reply; /* a deep copy: the client's buffer goes with it */
} exchange_t;

static ag_resp_t *resp_copy(const ag_resp_t *r)
{
    ag_resp_t *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    *c = *r;
    c->str = NULL;
    c->elems = NULL;
    if (r->type == AG_RESP_BULK || r->type == AG_RESP_STATUS || r->type == AG_RESP_ERROR) {
        char *s = malloc(r->len + 1);
        if (!s) {
            free(c);
            return NULL;
        }
        memcpy(s, r->str, r->len);
        s[r->len] = '\0';
        c->str = s;
    } else if (r->type == AG_RESP_ARRAY && r->len) {
        c->elems = calloc(r->len, sizeof(*c->elems));
        for (size_t i = 0; c->elems && i < r->len; i++) {
            ag_resp_t *e = resp_copy(&r->elems[i]);
            if (!e)
                break;
            c->elems[i] = *e;
            free(e);
        }
    }
    return c;
}

static void resp_free_inner(ag_resp_t *r)
{
    if (r->type == AG_RESP_ARRAY && r->elems) {
        for (size_t i = 0; i < r->len; i++)
            resp_free_inner(&r->elems[i]);
        free(r->elems);
    }
    free((char *)r->str);
}

static void on_reply(void *ctx, int rc, const ag_resp_t *reply)
{
    exchange_t *x = ctx;
    x->done = true;
    x->rc = rc;
    if (rc == 0 && !(x->reply = resp_copy(reply)))
        x->rc = -ENOMEM;
}

static int ask(const gw_keys_sync_t *s, int argc, const char *const *argv, ag_resp_t **out)
{
    uv_loop_t loop;
    int rc = uv_loop_init(&loop);
    if (rc < 0)
        return rc;
    ag_redis_t *r = NULL;
    exchange_t x = {.rc = AG_REDIS_EDOWN};
    rc = ag_redis_new(&loop, &s->opts, &r);
    if (rc == 0)
        rc = ag_redis_command(r, argc, argv, NULL, on_reply, &x, NULL);
    if (rc == 0) {
        while (!x.done && uv_run(&loop, UV_RUN_ONCE))
            ;
        rc = x.done ? x.rc : AG_REDIS_EDOWN;
    }
    ag_redis_close(r);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
    if (rc < 0 && x.reply) {
        resp_free_inner(x.reply);
        free(x.reply);
        x.reply = NULL;
    }
    *out = x.reply;
    return rc;
}

static void reply_free(ag_resp_t *r)
{
    if (r) {
        resp_free_inner(r);
        free(r);
    }
}

static long long version_of(const ag_resp_t *r)
{
    if (!r || r->type != AG_RESP_BULK)
        return 0; /* no version yet: nothing was published */
    return strtoll(r->str, NULL, 10);
}

/* The records as published: pairs of name and hex bytes. */
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
        else if (rc < 0)
            ag_log_warn("keys on Redis: cannot import key %s: %s", name->str, ag_strerror(rc));
    }
    return stored;
}

static void sync_run(void *ctx)
{
    gw_keys_sync_t *s = ctx;
    ag_resp_t *v = NULL, *all = NULL;
    const char *get[] = {"GET", AG_REDIS_KEYS_VERSION};
    if (ask(s, 2, get, &v) < 0)
        return; /* Redis away: the limit checks say so; the next tick tries again */
    long long version = version_of(v);
    reply_free(v);
    if (version == s->version)
        return;
    const char *hgetall[] = {"HGETALL", AG_REDIS_KEYS_RECORDS};
    if (ask(s, 2, hgetall, &all) < 0)
        return;
    unsigned n = import_all(s, all);
    reply_free(all);
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
        .backoff_min_ms = 60000, /* one attempt per tick */
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
