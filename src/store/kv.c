/* SPDX-License-Identifier: MIT
 *
 * kv.c: the KV front end: Workers KV's key, value, metadata and expiry rules,
 * list cursors, the namespace folders under <data_dir>/kv/, the choice of
 * backend by name, and the asynchronous calls over backends that have none.
 * The backends (kv_lmdb.c) see only arguments that passed these checks.
 */
#include "util/platform.h"

#include "store/kv.h"

#include <errno.h>
#include <limits.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "store/secrets.h"
#include "store/secrets_resolve.h"
#include "util/errors.h"
#include "util/fs.h"
#include "util/hex.h"
#include "util/utf.h"

/* ---- backends -------------------------------------------------------------------------- */

static const struct kv_backend {
    const char *name;
    int (*open)(const char *dir, const ag_kv_options_t *opts, ag_kv_t **out);
} backends[] = {
    {AG_KV_BACKEND_LMDB, ag_kv_open_lmdb},
    {AG_KV_BACKEND_REDIS, ag_kv_open_redis},
};

int ag_kv_open(const char *dir, const ag_kv_options_t *opts, ag_kv_t **out)
{
    *out = NULL;
    const char *name = opts && opts->backend ? opts->backend : AG_KV_BACKEND_LMDB;
    for (size_t i = 0; i < AG_ARRAY_LEN(backends); i++) {
        if (strcmp(backends[i].name, name) == 0)
            return backends[i].open(dir, opts, out);
    }
    return AG_KV_EBACKEND;
}

/* ---- keys, values, cursors ------------------------------------------------------------- */

static int check_key(const void *key, size_t keylen)
{
    if (keylen == 0)
        return AG_KV_EKEY_EMPTY;
    if (keylen > AG_KV_MAX_KEY_LEN)
        return AG_KV_EKEY_TOO_LONG;
    if (key == NULL)
        return AG_EINVALID;
    /* Workers KV refuses these two because they are path segments in its URLs. */
    if ((keylen == 1 && memcmp(key, ".", 1) == 0) || (keylen == 2 && memcmp(key, "..", 2) == 0))
        return AG_KV_EKEY_DOT;
    /* A Workers key is a JS string, so always UTF-8 text; keeping that rule
     * means names can be written into JSON listings unchanged. */
    if (!ag_utf8_valid(key, keylen))
        return AG_KV_EKEY_UTF8;
    return 0;
}

/* Workers KV reports expiry in epoch seconds; a key expiring within a second
 * still reads as expiring at the next one. */
static int64_t ms_to_s_ceil(int64_t ms)
{
    return ms <= 0 ? 0 : (ms + 999) / 1000;
}

/* The cursor is the last key returned, hex-encoded: opaque to callers, and it
 * stays valid across writes, so paging never skips or repeats a key that
 * exists throughout. */
static int cursor_decode(const char *cursor, unsigned char *out, size_t *outlen)
{
    size_t n = strlen(cursor);
    ssize_t got = ag_hex_decode(cursor, n, out, AG_KV_MAX_KEY_LEN);
    if (n == 0 || got < 0)
        return AG_KV_ECURSOR;
    *outlen = (size_t)got;
    return 0;
}

static int get(ag_kv_t *kv, const void *key, size_t keylen, bool with_metadata, ag_kv_value_t *out)
{
    memset(out, 0, sizeof(*out));
    int rc = check_key(key, keylen);
    if (rc < 0)
        return rc;
    rc = kv->ops->get(kv, key, keylen, with_metadata, out);
    if (rc == 0)
        out->expiration = ms_to_s_ceil(out->expiration_ms);
    return rc;
}

int ag_kv_get(ag_kv_t *kv, const void *key, size_t keylen, ag_kv_value_t *out)
{
    return get(kv, key, keylen, false, out);
}

int ag_kv_get_with_metadata(ag_kv_t *kv, const void *key, size_t keylen, ag_kv_value_t *out)
{
    return get(kv, key, keylen, true, out);
}

/* Checks a put's arguments and turns its expiry options into an absolute
 * time (epoch ms, 0 for none). */
static int put_check(ag_kv_t *kv, const void *key, size_t keylen, const void *val, size_t vallen,
                     const ag_kv_put_opts_t *opts, int64_t *expiration_ms)
{
    *expiration_ms = 0;
    int rc = check_key(key, keylen);
    if (rc < 0)
        return rc;
    if (vallen > AG_KV_MAX_VALUE_LEN)
        return AG_KV_EVALUE_TOO_BIG;
    if (val == NULL && vallen > 0)
        return AG_EINVALID;
    if (opts->expiration_ttl != 0 || opts->expiration != 0) {
        int64_t now = kv->now_ms(kv->clock_ctx);
        /* The bounds keep the arithmetic below from overflowing int64. */
        const int64_t max_s = INT64_MAX / 1000 / 2;
        if (opts->expiration_ttl != 0 && opts->expiration != 0)
            return AG_KV_EEXPIRATION;
        if (opts->expiration_ttl != 0) {
            if (opts->expiration_ttl < 1 || opts->expiration_ttl > max_s)
                return AG_KV_EEXPIRATION;
            *expiration_ms = now + opts->expiration_ttl * 1000;
        } else {
            if (opts->expiration < 0 || opts->expiration > max_s || opts->expiration * 1000 <= now)
                return AG_KV_EEXPIRATION;
            *expiration_ms = opts->expiration * 1000;
        }
    }
    if (opts->metadata != NULL) {
        if (opts->metadata_len > AG_KV_MAX_METADATA_LEN)
            return AG_KV_EMETADATA_TOO_BIG;
        json_error_t jerr;
        json_t *j = json_loadb(opts->metadata, opts->metadata_len, JSON_DECODE_ANY, &jerr);
        if (j == NULL)
            return AG_KV_EMETADATA_JSON;
        json_decref(j);
    }
    return 0;
}

static const ag_kv_put_opts_t no_put_opts;

int ag_kv_put(ag_kv_t *kv, const void *key, size_t keylen, const void *val, size_t vallen,
              const ag_kv_put_opts_t *opts)
{
    if (opts == NULL)
        opts = &no_put_opts;
    int64_t expiration_ms;
    int rc = put_check(kv, key, keylen, val, vallen, opts, &expiration_ms);
    if (rc < 0)
        return rc;
    return kv->ops->put(kv, key, keylen, val, vallen, expiration_ms, opts->metadata,
                        opts->metadata != NULL ? opts->metadata_len : 0);
}

int ag_kv_delete(ag_kv_t *kv, const void *key, size_t keylen)
{
    int rc = check_key(key, keylen);
    if (rc < 0)
        return rc;
    return kv->ops->del(kv, key, keylen);
}

int ag_kv_list(ag_kv_t *kv, const void *prefix, size_t prefixlen, const char *cursor,
               unsigned limit, ag_kv_list_result_t *out)
{
    memset(out, 0, sizeof(*out));
    if (limit == 0)
        limit = AG_KV_LIST_MAX_LIMIT;
    if (limit > AG_KV_LIST_MAX_LIMIT)
        return AG_KV_ELIMIT;
    if (prefix == NULL)
        prefixlen = 0;
    if (prefixlen > AG_KV_MAX_KEY_LEN) {
        out->list_complete = true; /* no key can be that long */
        return 0;
    }
    unsigned char after[AG_KV_MAX_KEY_LEN];
    size_t afterlen = 0;
    if (cursor != NULL && cursor[0] != '\0') {
        int rc = cursor_decode(cursor, after, &afterlen);
        if (rc < 0)
            return rc;
    }
    int rc = kv->ops->list(kv, prefix, prefixlen, afterlen ? after : NULL, afterlen, limit, out);
    if (rc < 0) {
        ag_kv_list_result_free(out);
        return rc;
    }
    for (size_t i = 0; i < out->count; i++)
        out->keys[i].expiration = ms_to_s_ceil(out->keys[i].expiration_ms);
    if (!out->list_complete && out->count > 0) {
        const ag_kv_list_key_t *last = &out->keys[out->count - 1];
        out->cursor = ag_hex_encode_alloc(last->name, last->name_len);
        if (out->cursor == NULL) {
            ag_kv_list_result_free(out);
            return -ENOMEM;
        }
    } else {
        out->list_complete = true;
    }
    return 0;
}

void ag_kv_list_result_free(ag_kv_list_result_t *r)
{
    if (r == NULL)
        return;
    for (size_t i = 0; i < r->count; i++) {
        free(r->keys[i].name);
        free(r->keys[i].metadata);
    }
    free(r->keys);
    free(r->cursor);
    memset(r, 0, sizeof(*r));
}

int ag_kv_sweep(ag_kv_t *kv, size_t max_keys)
{
    return kv->ops->sweep(kv, max_keys);
}

int ag_kv_stat(ag_kv_t *kv, ag_kv_stat_t *st)
{
    memset(st, 0, sizeof(*st));
    return kv->ops->stat(kv, st);
}

void ag_kv_close(ag_kv_t *kv)
{
    if (kv != NULL)
        kv->ops->close(kv);
}

/* ---- folders and namespaces ------------------------------------------------------------ */

/* ---- asynchronous calls ---------------------------------------------------------------- */

void ag__kv_get_done(ag_kv_get_cb cb, void *ctx, int rc, ag_kv_value_t *value)
{
    if (rc == 0)
        value->expiration = ms_to_s_ceil(value->expiration_ms);
    cb(ctx, rc, rc == 0 ? value : NULL);
    ag_kv_value_free(value); /* a no-op when the callback took it over */
}

int ag_kv_get_async(ag_kv_t *kv, const void *key, size_t keylen, ag_kv_get_cb cb, void *ctx,
                    ag_kv_op_t **op)
{
    ag_kv_op_t *unused;
    if (op == NULL)
        op = &unused;
    *op = NULL;
    if (cb == NULL)
        return AG_EINVALID;
    int rc = check_key(key, keylen);
    if (rc < 0)
        return rc;
    if (kv->ops->get_async != NULL)
        return kv->ops->get_async(kv, key, keylen, false, cb, ctx, op);
    ag_kv_value_t v;
    memset(&v, 0, sizeof(v));
    rc = kv->ops->get(kv, key, keylen, false, &v);
    ag__kv_get_done(cb, ctx, rc, &v);
    return 0;
}

int ag_kv_put_async(ag_kv_t *kv, const void *key, size_t keylen, const void *val, size_t vallen,
                    const ag_kv_put_opts_t *opts, ag_kv_put_cb cb, void *ctx, ag_kv_op_t **op)
{
    ag_kv_op_t *unused;
    if (op == NULL)
        op = &unused;
    *op = NULL;
    if (cb == NULL)
        return AG_EINVALID;
    if (opts == NULL)
        opts = &no_put_opts;
    int64_t expiration_ms;
    int rc = put_check(kv, key, keylen, val, vallen, opts, &expiration_ms);
    if (rc < 0)
        return rc;
    size_t metadata_len = opts->metadata != NULL ? opts->metadata_len : 0;
    if (kv->ops->put_async != NULL)
        return kv->ops->put_async(kv, key, keylen, val, vallen, expiration_ms, opts->metadata,
                                  metadata_len, cb, ctx, op);
    rc = kv->ops->put(kv, key, keylen, val, vallen, expiration_ms, opts->metadata, metadata_len);
    cb(ctx, rc);
    return 0;
}

void ag_kv_op_cancel(ag_kv_op_t *op)
{
    if (op == NULL)
        return;
    AG_ASSERT(op->kv != NULL && op->kv->ops->cancel != NULL);
    op->kv->ops->cancel(op);
}

/* ---- namespaces ------------------------------------------------------------------------ */

static bool valid_binding(const char *s)
{
    size_t n = strlen(s);
    if (n < 1 || n > 64)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '_' || c == '-';
        if (!ok)
            return false;
    }
    return true;
}

int ag_kv_open_namespace(const char *data_dir, const char *binding, const ag_kv_options_t *opts,
                         ag_kv_t **out)
{
    *out = NULL;
    if (binding == NULL || !valid_binding(binding))
        return AG_KV_EBINDING;
    if (data_dir == NULL)
        data_dir = AG_STORE_DEFAULT_DATA_DIR;
    if (opts && opts->backend && strcmp(opts->backend, AG_KV_BACKEND_REDIS) == 0) {
        ag_kv_options_t o = *opts;
        o.redis.binding = binding;
        char *password = NULL;
        if (o.redis.password == NULL &&
            ag_secrets_resolve(data_dir, "REDIS_PASSWORD", &password) == 0)
            o.redis.password = password;
        int rc = ag_kv_open_redis(NULL, &o, out);
        ag_secrets_value_free(password);
        return rc;
    }
    char path[PATH_MAX];
    int n = snprintf(path, sizeof(path), "%s/kv/%s", data_dir, binding);
    if (n < 0 || (size_t)n >= sizeof(path))
        return -ENAMETOOLONG;
    return ag_kv_open(path, opts, out);
}

int ag_kv_namespace_list(const char *data_dir, char ***names, size_t *count)
{
    *names = NULL;
    *count = 0;
    if (data_dir == NULL)
        data_dir = AG_STORE_DEFAULT_DATA_DIR;
    char path[PATH_MAX];
    int n = snprintf(path, sizeof(path), "%s/kv", data_dir);
    if (n < 0 || (size_t)n >= sizeof(path))
        return -ENAMETOOLONG;
    return ag_fs_list_dirs(path, valid_binding, names, count);
}

void ag_kv_namespace_list_free(char **names, size_t count)
{
    ag_fs_names_free(names, count);
}
