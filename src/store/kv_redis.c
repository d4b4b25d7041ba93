/* SPDX-License-Identifier: MIT
 *
 * kv_redis.c: the KV backend on Redis, shared by every instance: an entry is a
 * string whose TTL is its expiry, its metadata a second string beside it, and
 * a listing is a SCAN of the namespace's keys, sorted here into byte order.
 */
#include "util/platform.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "store/kv.h"
#include "store/redis.h"
#include "util/errors.h"

/* Room for either prefix, a binding and a key. */
#define NAME_MAX_LEN (sizeof(AG_KV_REDIS_META_PREFIX) + 64 + 1 + AG_KV_MAX_KEY_LEN)

typedef struct kv_redis {
    ag_kv_t base;
    pthread_mutex_t lock;     /* one caller at a time on the session */
    ag_redis_sync_t *session; /* NULL until a call needs it, and after Redis went away */
    ag_redis_options_t ro;    /* url and password point at the two below */
    char *url;
    char *password;
    char prefix[sizeof(AG_KV_REDIS_PREFIX) + 64 + 1]; /* "aigate:kv:BINDING:" */
    size_t prefix_len;
    char meta_prefix[sizeof(AG_KV_REDIS_META_PREFIX) + 64 + 1];
    size_t meta_prefix_len;
} kv_redis_t;

/* ARGV: value, expiry (epoch ms, "0": none), "1" with metadata, the metadata.
 * One script, so the value and its metadata change together. */
static const char put_lua[] =
    "local function put(k, v)\n"
    "  if ARGV[2] == '0' then return redis.call('SET', k, v) end\n"
    "  return redis.call('SET', k, v, 'PXAT', ARGV[2])\n"
    "end\n"
    "put(KEYS[1], ARGV[1])\n"
    "if ARGV[3] == '1' then put(KEYS[2], ARGV[4]) else redis.call('DEL', KEYS[2]) end\n"
    "return 1\n";
/* {value, expiry in epoch ms or -1, metadata or nil}, or nil when missing. */
static const char get_lua[] = "local v = redis.call('GET', KEYS[1])\n"
                              "if not v then return false end\n"
                              "local m = false\n"
                              "if ARGV[1] == '1' then m = redis.call('GET', KEYS[2]) end\n"
                              "return {v, redis.call('PEXPIRETIME', KEYS[1]), m}\n";
/* For each pair of KEYS (value, metadata): expiry (-2 when gone) and metadata. */
static const char page_lua[] = "local out = {}\n"
                               "for i = 1, #KEYS, 2 do\n"
                               "  out[#out + 1] = redis.call('PEXPIRETIME', KEYS[i])\n"
                               "  out[#out + 1] = redis.call('GET', KEYS[i + 1])\n"
                               "end\n"
                               "return out\n";

static ag_redis_script_t put_script, get_script, page_script;
static pthread_once_t scripts_once = PTHREAD_ONCE_INIT;

static void scripts_init(void)
{
    ag_redis_script_init(&put_script, put_lua);
    ag_redis_script_init(&get_script, get_lua);
    ag_redis_script_init(&page_script, page_lua);
}

/* ---- the session ------------------------------------------------------------------------ */

/* Called with the lock held. */
static int session(kv_redis_t *kr, ag_redis_sync_t **out)
{
    if (kr->session == NULL) {
        int rc = ag_redis_sync_open(&kr->ro, &kr->session);
        if (rc < 0)
            return rc;
    }
    *out = kr->session;
    return 0;
}

/* A session whose client went down would wait out its backoff: the next call
 * connects anew instead. Called with the lock held. */
static void session_check(kv_redis_t *kr)
{
    if (kr->session && ag_redis_sync_broken(kr->session)) {
        ag_redis_sync_close(kr->session);
        kr->session = NULL;
    }
}

/* An error answer as our code: Redis out of memory is a full store. */
static int reply_error(const ag_resp_t *reply)
{
    return ag_resp_error_is(reply, "OOM") ? AG_KV_EREDIS_FULL : AG_REDIS_EREPLY;
}

/* One script (or, with script NULL, one plain command) on the session; an
 * error answer becomes our code. */
static int call(kv_redis_t *kr, const ag_redis_script_t *script, int nkeys, int argc,
                const char *const *argv, const size_t *lens, ag_resp_t **reply)
{
    *reply = NULL;
    pthread_mutex_lock(&kr->lock);
    ag_redis_sync_t *s;
    int rc = session(kr, &s);
    if (rc == 0)
        rc = script ? ag_redis_sync_eval(s, script, nkeys, argc, argv, lens, reply)
                    : ag_redis_sync_command(s, argc, argv, lens, reply);
    session_check(kr);
    pthread_mutex_unlock(&kr->lock);
    if (rc == 0 && (*reply)->type == AG_RESP_ERROR) {
        rc = reply_error(*reply);
        ag_resp_free(*reply);
        *reply = NULL;
    }
    return rc;
}

/* prefix + key, in buf (NAME_MAX_LEN). */
static size_t name_of(char *buf, const char *prefix, size_t prefix_len, const void *key,
                      size_t keylen)
{
    memcpy(buf, prefix, prefix_len);
    memcpy(buf + prefix_len, key, keylen);
    return prefix_len + keylen;
}

static char *dup_bytes(const char *p, size_t n)
{
    char *d = malloc(n + 1);
    if (d) {
        if (n)
            memcpy(d, p, n);
        d[n] = '\0';
    }
    return d;
}

/* ---- get, put, delete ----------------------------------------------------------------- */

static int r_get(ag_kv_t *kv, const void *key, size_t keylen, bool with_metadata,
                 ag_kv_value_t *out)
{
    kv_redis_t *kr = (kv_redis_t *)kv;
    char vname[NAME_MAX_LEN], mname[NAME_MAX_LEN];
    const char *argv[] = {vname, mname, with_metadata ? "1" : "0"};
    size_t lens[] = {name_of(vname, kr->prefix, kr->prefix_len, key, keylen),
                     name_of(mname, kr->meta_prefix, kr->meta_prefix_len, key, keylen), 1};
    ag_resp_t *reply;
    int rc = call(kr, &get_script, 2, 3, argv, lens, &reply);
    if (rc < 0)
        return rc;
    if (reply->type == AG_RESP_NIL) {
        rc = AG_ENOTFOUND;
    } else if (reply->type != AG_RESP_ARRAY || reply->len != 3 ||
               reply->elems[0].type != AG_RESP_BULK || reply->elems[1].type != AG_RESP_INTEGER) {
        rc = AG_REDIS_EREPLY;
    } else {
        const ag_resp_t *m = &reply->elems[2];
        out->data = dup_bytes(reply->elems[0].str, reply->elems[0].len);
        out->len = reply->elems[0].len;
        out->expiration_ms = reply->elems[1].integer > 0 ? reply->elems[1].integer : 0;
        if (m->type == AG_RESP_BULK) {
            out->metadata = dup_bytes(m->str, m->len);
            out->metadata_len = m->len;
        }
        if (!out->data || (m->type == AG_RESP_BULK && !out->metadata)) {
            ag_kv_value_free(out);
            rc = -ENOMEM;
        }
    }
    ag_resp_free(reply);
    return rc;
}

static int r_put(ag_kv_t *kv, const void *key, size_t keylen, const void *val, size_t vallen,
                 int64_t expiration_ms, const char *metadata, size_t metadata_len)
{
    kv_redis_t *kr = (kv_redis_t *)kv;
    char vname[NAME_MAX_LEN], mname[NAME_MAX_LEN], exp[24];
    int explen = snprintf(exp, sizeof(exp), "%lld", (long long)expiration_ms);
    const char *argv[] = {
        vname, mname, val ? val : "", exp, metadata ? "1" : "0", metadata ? metadata : ""};
    size_t lens[] = {name_of(vname, kr->prefix, kr->prefix_len, key, keylen),
                     name_of(mname, kr->meta_prefix, kr->meta_prefix_len, key, keylen),
                     vallen,
                     (size_t)explen,
                     1,
                     metadata ? metadata_len : 0};
    ag_resp_t *reply;
    int rc = call(kr, &put_script, 2, 6, argv, lens, &reply);
    ag_resp_free(reply);
    return rc;
}

static int r_del(ag_kv_t *kv, const void *key, size_t keylen)
{
    kv_redis_t *kr = (kv_redis_t *)kv;
    char vname[NAME_MAX_LEN], mname[NAME_MAX_LEN];
    const char *argv[] = {"DEL", vname, mname};
    size_t lens[] = {3, name_of(vname, kr->prefix, kr->prefix_len, key, keylen),
                     name_of(mname, kr->meta_prefix, kr->meta_prefix_len, key, keylen)};
    ag_resp_t *reply;
    int rc = call(kr, NULL, 0, 3, argv, lens, &reply);
    ag_resp_free(reply);
    return rc;
}

/* ---- listing ---------------------------------------------------------------------------- */

typedef struct name {
    char *p;
    size_t len;
} name_t;

static int cmp_name(const void *a, const void *b)
{
    const name_t *x = a, *y = b;
    size_t n = x->len < y->len ? x->len : y->len;
    int c = n ? memcmp(x->p, y->p, n) : 0;
    return c ? c : (x->len > y->len) - (x->len < y->len);
}

/* The candidates found so far: only the `keep` smallest matter, so past twice
 * that they are sorted and cut, which bounds memory by the page, not by the
 * namespace. SCAN may return a key twice: duplicates go too. */
typedef struct found {
    name_t *v;
    size_t n, cap, keep;
} found_t;

static void found_trim(found_t *f)
{
    qsort(f->v, f->n, sizeof(*f->v), cmp_name);
    size_t w = 0;
    for (size_t i = 0; i < f->n; i++) {
        if (w > 0 && cmp_name(&f->v[w - 1], &f->v[i]) == 0) {
            free(f->v[i].p);
            continue;
        }
        f->v[w++] = f->v[i];
    }
    f->n = w;
    for (size_t i = f->keep; i < f->n; i++)
        free(f->v[i].p);
    if (f->n > f->keep)
        f->n = f->keep;
}

static int found_add(found_t *f, const char *p, size_t len)
{
    if (f->n == f->cap) {
        if (f->n >= 2 * f->keep)
            found_trim(f);
        if (f->n == f->cap) {
            size_t cap = f->cap ? f->cap * 2 : 64;
            name_t *v = realloc(f->v, cap * sizeof(*v));
            if (!v)
                return -ENOMEM;
            f->v = v;
            f->cap = cap;
        }
    }
    char *d = dup_bytes(p, len);
    if (!d)
        return -ENOMEM;
    f->v[f->n++] = (name_t){d, len};
    return 0;
}

static void found_free(found_t *f)
{
    for (size_t i = 0; i < f->n; i++)
        free(f->v[i].p);
    free(f->v);
}

/* MATCH pattern: the namespace's prefix, the caller's prefix with Redis's
 * glob characters escaped, then '*'. In buf (2 * NAME_MAX_LEN). */
static size_t pattern_of(const kv_redis_t *kr, const void *prefix, size_t prefixlen, char *buf)
{
    size_t n = kr->prefix_len;
    memcpy(buf, kr->prefix, n);
    for (size_t i = 0; i < prefixlen; i++) {
        char c = ((const char *)prefix)[i];
        if (c == '*' || c == '?' || c == '[' || c == ']' || c == '\\')
            buf[n++] = '\\';
        buf[n++] = c;
    }
    buf[n++] = '*';
    return n;
}

/* SCANs the namespace's keys with the prefix, after `after`, into f (sorted,
 * unique, at most f->keep). Called with the lock held. `count` (NULL: not
 * wanted) gets every key seen, for stat. */
static int scan(kv_redis_t *kr, ag_redis_sync_t *s, const void *prefix, size_t prefixlen,
                const void *after, size_t afterlen, found_t *f, uint64_t *count)
{
    char pattern[2 * NAME_MAX_LEN];
    size_t plen = pattern_of(kr, prefix, prefixlen, pattern);
    char cursor[32] = "0";
    for (;;) {
        const char *argv[] = {"SCAN", cursor, "MATCH", pattern, "COUNT", "1000"};
        size_t lens[] = {4, strlen(cursor), 5, plen, 5, 4};
        ag_resp_t *reply;
        int rc = ag_redis_sync_command(s, 6, argv, lens, &reply);
        if (rc < 0)
            return rc;
        if (reply->type == AG_RESP_ERROR) {
            rc = reply_error(reply);
        } else if (reply->type != AG_RESP_ARRAY || reply->len != 2 ||
                   reply->elems[0].type != AG_RESP_BULK || reply->elems[0].len >= sizeof(cursor) ||
                   reply->elems[1].type != AG_RESP_ARRAY) {
            rc = AG_REDIS_EREPLY;
        }
        for (size_t i = 0; rc == 0 && i < reply->elems[1].len; i++) {
            const ag_resp_t *k = &reply->elems[1].elems[i];
            if (k->type != AG_RESP_BULK || k->len <= kr->prefix_len ||
                k->len > kr->prefix_len + AG_KV_MAX_KEY_LEN)
                continue; /* not one of ours (too long to be a key we wrote) */
            name_t nm = {(char *)k->str + kr->prefix_len, k->len - kr->prefix_len};
            if (count)
                (*count)++;
            if (after && cmp_name(&nm, &(name_t){(char *)after, afterlen}) <= 0)
                continue;
            if (f)
                rc = found_add(f, nm.p, nm.len);
        }
        if (rc == 0) {
            memcpy(cursor, reply->elems[0].str, reply->elems[0].len);
            cursor[reply->elems[0].len] = '\0';
        }
        ag_resp_free(reply);
        if (rc < 0)
            return rc;
        if (strcmp(cursor, "0") == 0)
            break;
    }
    if (f)
        found_trim(f);
    return 0;
}

/* Fills out->keys from the page's names: their expiry and metadata, in one
 * script; a key that went since the SCAN is left out. */
static int page_details(kv_redis_t *kr, ag_redis_sync_t *s, const found_t *f, size_t n,
                        ag_kv_list_result_t *out)
{
    if (n == 0)
        return 0;
    int rc = -ENOMEM;
    const char **argv = calloc(2 * n, sizeof(*argv));
    size_t *lens = calloc(2 * n, sizeof(*lens));
    char *names = malloc(2 * n * NAME_MAX_LEN);
    out->keys = calloc(n, sizeof(*out->keys));
    ag_resp_t *reply = NULL;
    if (!argv || !lens || !names || !out->keys)
        goto done;
    for (size_t i = 0; i < n; i++) {
        char *v = names + 2 * i * NAME_MAX_LEN, *m = v + NAME_MAX_LEN;
        argv[2 * i] = v;
        lens[2 * i] = name_of(v, kr->prefix, kr->prefix_len, f->v[i].p, f->v[i].len);
        argv[2 * i + 1] = m;
        lens[2 * i + 1] = name_of(m, kr->meta_prefix, kr->meta_prefix_len, f->v[i].p, f->v[i].len);
    }
    rc = ag_redis_sync_eval(s, &page_script, (int)(2 * n), (int)(2 * n), argv, lens, &reply);
    if (rc < 0)
        goto done;
    if (reply->type == AG_RESP_ERROR) {
        rc = reply_error(reply);
        goto done;
    }
    if (reply->type != AG_RESP_ARRAY || reply->len != 2 * n) {
        rc = AG_REDIS_EREPLY;
        goto done;
    }
    rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        const ag_resp_t *e = &reply->elems[2 * i], *m = &reply->elems[2 * i + 1];
        if (e->type != AG_RESP_INTEGER || e->integer == -2)
            continue; /* expired or deleted meanwhile */
        ag_kv_list_key_t *k = &out->keys[out->count];
        k->name = dup_bytes(f->v[i].p, f->v[i].len);
        k->name_len = f->v[i].len;
        k->expiration_ms = e->integer > 0 ? e->integer : 0;
        if (m->type == AG_RESP_BULK) {
            k->metadata = dup_bytes(m->str, m->len);
            k->metadata_len = m->len;
        }
        out->count++;
        if (!k->name || (m->type == AG_RESP_BULK && !k->metadata))
            rc = -ENOMEM;
    }
done:
    ag_resp_free(reply);
    free(argv);
    free(lens);
    free(names);
    return rc;
}

static int r_list(ag_kv_t *kv, const void *prefix, size_t prefixlen, const void *after,
                  size_t afterlen, unsigned limit, ag_kv_list_result_t *out)
{
    kv_redis_t *kr = (kv_redis_t *)kv;
    char last[AG_KV_MAX_KEY_LEN];
    pthread_mutex_lock(&kr->lock);
    ag_redis_sync_t *s;
    int rc = session(kr, &s);
    /* A page whose every key went between the SCAN and the details (expired)
     * would end the listing early: go on after them, a few times. */
    for (int round = 0; rc == 0; round++) {
        /* One more than the page tells whether another page follows. */
        found_t f = {.keep = (size_t)limit + 1};
        rc = scan(kr, s, prefix, prefixlen, after, afterlen, &f, NULL);
        size_t n = f.n < limit ? f.n : limit;
        if (rc == 0)
            rc = page_details(kr, s, &f, n, out);
        out->list_complete = f.n <= limit;
        bool again = rc == 0 && out->count == 0 && !out->list_complete && round < 8;
        if (again) {
            memcpy(last, f.v[n - 1].p, f.v[n - 1].len);
            after = last;
            afterlen = f.v[n - 1].len;
            free(out->keys);
            out->keys = NULL;
        }
        found_free(&f);
        if (!again)
            break;
    }
    session_check(kr);
    pthread_mutex_unlock(&kr->lock);
    return rc;
}

/* ---- the rest of the ops ---------------------------------------------------------------- */

/* Redis expires entries itself. */
static int r_sweep(ag_kv_t *kv, size_t max_keys)
{
    (void)kv;
    (void)max_keys;
    return 0;
}

/* Entries is what a SCAN sees; the sizes are Redis's (INFO memory), not ours. */
static int r_stat(ag_kv_t *kv, ag_kv_stat_t *st)
{
    kv_redis_t *kr = (kv_redis_t *)kv;
    pthread_mutex_lock(&kr->lock);
    ag_redis_sync_t *s;
    int rc = session(kr, &s);
    if (rc == 0)
        rc = scan(kr, s, NULL, 0, NULL, 0, NULL, &st->entries);
    session_check(kr);
    pthread_mutex_unlock(&kr->lock);
    return rc;
}

static void r_close(ag_kv_t *kv)
{
    kv_redis_t *kr = (kv_redis_t *)kv;
    ag_redis_sync_close(kr->session);
    pthread_mutex_destroy(&kr->lock);
    free(kr->url);
    if (kr->password) {
        explicit_bzero(kr->password, strlen(kr->password));
        free(kr->password);
    }
    free(kr);
}

static const ag_kv_ops_t redis_ops = {
    .name = AG_KV_BACKEND_REDIS,
    .get = r_get,
    .put = r_put,
    .del = r_del,
    .list = r_list,
    .sweep = r_sweep,
    .stat = r_stat,
    .close = r_close,
};

int ag_kv_open_redis(const char *dir, const ag_kv_options_t *opts, ag_kv_t **out)
{
    (void)dir;
    *out = NULL;
    const ag_kv_redis_options_t *o = opts ? &opts->redis : NULL;
    if (!o || !o->url || !o->binding || strlen(o->binding) == 0 || strlen(o->binding) > 64)
        return AG_EINVALID;
    ag_redis_url_t u;
    const char *why;
    int rc = ag_redis_url_parse(o->url, &u, &why);
    explicit_bzero(&u, sizeof(u));
    if (rc < 0)
        return rc;
    pthread_once(&scripts_once, scripts_init);
    kv_redis_t *kr = calloc(1, sizeof(*kr));
    if (!kr)
        return -ENOMEM;
    pthread_mutex_init(&kr->lock, NULL);
    kr->url = strdup(o->url);
    kr->password = o->password ? strdup(o->password) : NULL;
    if (!kr->url || (o->password && !kr->password)) {
        r_close(&kr->base);
        return -ENOMEM;
    }
    kr->prefix_len =
        (size_t)snprintf(kr->prefix, sizeof(kr->prefix), "%s%s:", AG_KV_REDIS_PREFIX, o->binding);
    kr->meta_prefix_len = (size_t)snprintf(kr->meta_prefix, sizeof(kr->meta_prefix),
                                           "%s%s:", AG_KV_REDIS_META_PREFIX, o->binding);
    uint32_t t = o->timeout_ms ? o->timeout_ms : 1000;
    kr->ro = (ag_redis_options_t){
        .url = kr->url,
        .password = kr->password,
        .connect_timeout_ms = t,
        .command_timeout_ms = t,
        .single_attempt = true, /* session_check() starts anew; the caller reports */
        .name = "kv",
    };
    ag__kv_init(&kr->base, &redis_ops, opts);
    *out = &kr->base;
    return 0;
}
