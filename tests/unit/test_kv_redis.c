/* SPDX-License-Identifier: MIT
 *
 * test_kv_redis.c: the KV store's Redis backend against a real redis-server:
 * round trips shared by two handles, metadata, expiry as Redis TTLs, byte-
 * ordered paged listings (glob characters in a prefix), namespaces kept
 * apart, Redis full, and Redis going away and coming back.
 */
#include "util/platform.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "harness.h"
#include "redis_server.h"
#include "store/kv.h"
#include "store/redis.h"
#include "util/errors.h"

static char url[96];
static int port;
static pid_t redis_pid;

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void pause_ms(long ms)
{
    struct timespec ts = {0, ms * 1000000L};
    nanosleep(&ts, NULL);
}

/* A raw command, for what the test checks behind the store's back. */
static ag_resp_t *raw(int argc, const char *const *argv)
{
    ag_redis_options_t o = {.url = url, .single_attempt = true};
    ag_resp_t *reply = NULL;
    return ag_redis_call(&o, argc, argv, &reply) == 0 ? reply : NULL;
}

/* Polls PING until Redis answers (deadline 5 s). */
static bool redis_up(void)
{
    int64_t deadline = now_ms() + 5000;
    const char *ping[] = {"PING"};
    while (now_ms() < deadline) {
        ag_resp_t *r = raw(1, ping);
        bool ok = r && ag_resp_is(r, AG_RESP_STATUS, "PONG");
        ag_resp_free(r);
        if (ok)
            return true;
        pause_ms(20);
    }
    return false;
}

static void start(void)
{
    if (redis_pid)
        return;
    if (!port)
        port = free_port(NULL);
    snprintf(url, sizeof(url), "redis://127.0.0.1:%d/0", port);
    redis_pid = start_redis(port, NULL);
}

static ag_kv_t *open_ns(const char *binding)
{
    ag_kv_options_t o = {.backend = AG_KV_BACKEND_REDIS, .redis = {.url = url, .timeout_ms = 2000}};
    ag_kv_t *kv = NULL;
    int rc = ag_kv_open_namespace("/nonexistent-data-dir", binding, &o, &kv);
    if (rc < 0)
        fprintf(stderr, "  open %s: %s\n", binding, ag_strerror(rc));
    return kv;
}

static int put_str(ag_kv_t *kv, const char *key, const char *val)
{
    return ag_kv_put(kv, key, strlen(key), val, strlen(val), NULL);
}

TEST(redis_kv_roundtrip_shared_by_two_handles)
{
    start();
    ASSERT(redis_up());
    ag_kv_t *a = open_ns("ROUND"), *b = open_ns("ROUND"), *other = open_ns("ROUND2");
    ASSERT(a && b && other);
    ag_kv_value_t v;
    ASSERT_EQ(ag_kv_get(a, "missing", 7, &v), AG_ENOTFOUND);
    ASSERT_EQ(put_str(a, "greeting", "hello"), 0);
    ASSERT_EQ(ag_kv_get(b, "greeting", 8, &v), 0); /* the other instance sees it */
    ASSERT_MEMEQ(v.data, v.len, "hello");
    ASSERT_EQ(v.data[v.len], '\0');
    ASSERT(v.metadata == NULL);
    ASSERT_EQ(v.expiration, 0);
    ag_kv_value_free(&v);
    ASSERT_EQ(ag_kv_get(other, "greeting", 8, &v), AG_ENOTFOUND);

    /* Binary value, a key holding NUL, an empty value. */
    const char bin[] = {0, 1, 2, 0, (char)0xff, 0};
    ASSERT_EQ(ag_kv_put(b, "k\0x", 3, bin, sizeof(bin), NULL), 0);
    ASSERT_EQ(ag_kv_get(a, "k\0x", 3, &v), 0);
    ASSERT_EQ(v.len, sizeof(bin));
    ASSERT(memcmp(v.data, bin, sizeof(bin)) == 0);
    ag_kv_value_free(&v);
    ASSERT_EQ(ag_kv_get(a, "k", 1, &v), AG_ENOTFOUND);
    ASSERT_EQ(ag_kv_put(a, "empty", 5, NULL, 0, NULL), 0);
    ASSERT_EQ(ag_kv_get(b, "empty", 5, &v), 0);
    ASSERT_EQ(v.len, 0);
    ag_kv_value_free(&v);

    /* The layout the response cache reads with one GET. */
    const char *get[] = {"GET", AG_KV_REDIS_PREFIX "ROUND:greeting"};
    ag_resp_t *r = raw(2, get);
    ASSERT(r && r->type == AG_RESP_BULK);
    ASSERT_MEMEQ(r->str, r->len, "hello");
    ag_resp_free(r);

    ag_kv_stat_t st;
    ASSERT_EQ(ag_kv_stat(a, &st), 0);
    ASSERT_EQ(st.entries, 3);
    ASSERT_EQ(ag_kv_delete(b, "greeting", 8), 0);
    ASSERT_EQ(ag_kv_get(a, "greeting", 8, &v), AG_ENOTFOUND);
    ASSERT_EQ(ag_kv_delete(b, "greeting", 8), 0); /* twice is fine */
    ASSERT_EQ(ag_kv_stat(a, &st), 0);
    ASSERT_EQ(st.entries, 2);
    /* The front end's checks hold on this backend too. */
    ASSERT_EQ(ag_kv_put(a, "..", 2, "x", 1, NULL), AG_KV_EKEY_DOT);
    ASSERT_EQ(ag_kv_get(a, "\xff", 1, &v), AG_KV_EKEY_UTF8);
    ag_kv_close(a);
    ag_kv_close(b);
    ag_kv_close(other);
}

TEST(redis_kv_metadata_and_expiry)
{
    start();
    ASSERT(redis_up());
    ag_kv_t *kv = open_ns("META");
    ASSERT(kv != NULL);
    const char *meta = "{\"owner\":\"ann\",\"n\":[1,2]}";
    int64_t exp = now_ms() / 1000 + 3600;
    ag_kv_put_opts_t o = {.metadata = meta, .metadata_len = strlen(meta), .expiration = exp};
    ASSERT_EQ(ag_kv_put(kv, "doc", 3, "body", 4, &o), 0);
    ag_kv_value_t v;
    ASSERT_EQ(ag_kv_get_with_metadata(kv, "doc", 3, &v), 0);
    ASSERT_MEMEQ(v.data, v.len, "body");
    ASSERT(v.metadata != NULL);
    ASSERT_MEMEQ(v.metadata, v.metadata_len, meta);
    ASSERT_EQ(v.expiration, exp);
    ASSERT_EQ(v.expiration_ms, exp * 1000);
    ag_kv_value_free(&v);
    ASSERT_EQ(ag_kv_get(kv, "doc", 3, &v), 0);
    ASSERT(v.metadata == NULL); /* not asked for */
    ag_kv_value_free(&v);
    /* The metadata expires with its entry, as a Redis TTL. */
    const char *pexp[] = {"PEXPIRETIME", AG_KV_REDIS_META_PREFIX "META:doc"};
    ag_resp_t *r = raw(2, pexp);
    ASSERT(r && r->type == AG_RESP_INTEGER);
    ASSERT_EQ(r->integer, exp * 1000);
    ag_resp_free(r);
    ag_kv_list_result_t l;
    ASSERT_EQ(ag_kv_list(kv, NULL, 0, NULL, 0, &l), 0);
    ASSERT_EQ(l.count, 1);
    ASSERT_MEMEQ(l.keys[0].metadata, l.keys[0].metadata_len, meta);
    ASSERT_EQ(l.keys[0].expiration, exp);
    ag_kv_list_result_free(&l);

    /* Written again without metadata or expiry: both go. */
    ASSERT_EQ(put_str(kv, "doc", "v2"), 0);
    ASSERT_EQ(ag_kv_get_with_metadata(kv, "doc", 3, &v), 0);
    ASSERT(v.metadata == NULL);
    ASSERT_EQ(v.expiration, 0);
    ag_kv_value_free(&v);
    const char *exists[] = {"EXISTS", AG_KV_REDIS_META_PREFIX "META:doc"};
    r = raw(2, exists);
    ASSERT(r && r->type == AG_RESP_INTEGER && r->integer == 0);
    ag_resp_free(r);

    /* A one-second TTL: Redis removes the entry (polled, deadline 5 s). */
    ASSERT_EQ(ag_kv_put(kv, "brief", 5, "x", 1, &(ag_kv_put_opts_t){.expiration_ttl = 1}), 0);
    ASSERT_EQ(ag_kv_get(kv, "brief", 5, &v), 0);
    ASSERT(v.expiration > 0);
    ag_kv_value_free(&v);
    int64_t deadline = now_ms() + 5000;
    int rc = 0;
    while (now_ms() < deadline && (rc = ag_kv_get(kv, "brief", 5, &v)) == 0) {
        ag_kv_value_free(&v);
        pause_ms(50);
    }
    ASSERT_EQ(rc, AG_ENOTFOUND);
    ASSERT_EQ(ag_kv_sweep(kv, 0), 0); /* nothing of ours to sweep */
    ag_kv_close(kv);
}

static int cmp_key(const void *a, const void *b)
{
    const char *const *x = a, *const *y = b;
    return strcmp(*x, *y);
}

TEST(redis_kv_list_in_byte_order_with_pages)
{
    start();
    ASSERT(redis_up());
    ag_kv_t *kv = open_ns("LIST"), *near = open_ns("LIST-2");
    ASSERT(kv && near);
    /* Glob characters in keys and prefixes are taken literally. */
    static const char *odd[] = {"a*b", "a*", "a?c", "a[x]", "a\\d", "ab", "a", "b", "aa"};
    for (size_t i = 0; i < AG_ARRAY_LEN(odd); i++)
        ASSERT_EQ(put_str(kv, odd[i], "v"), 0);
    ASSERT_EQ(put_str(near, "a-near", "v"), 0); /* another namespace sharing a prefix */
    ASSERT_EQ(
        ag_kv_put(kv, "am", 2, "v", 1, &(ag_kv_put_opts_t){.metadata = "1", .metadata_len = 1}), 0);
    ag_kv_list_result_t l;
    ASSERT_EQ(ag_kv_list(kv, "a*", 2, NULL, 0, &l), 0);
    ASSERT_EQ(l.count, 2);
    ASSERT_STREQ(l.keys[0].name, "a*");
    ASSERT_STREQ(l.keys[1].name, "a*b");
    ASSERT(l.list_complete && l.cursor == NULL);
    ag_kv_list_result_free(&l);
    ASSERT_EQ(ag_kv_list(kv, "a[", 2, NULL, 0, &l), 0);
    ASSERT_EQ(l.count, 1);
    ASSERT_STREQ(l.keys[0].name, "a[x]");
    ag_kv_list_result_free(&l);
    ASSERT_EQ(ag_kv_list(kv, "a\\", 2, NULL, 0, &l), 0);
    ASSERT_EQ(l.count, 1);
    ag_kv_list_result_free(&l);
    /* Everything, sorted by bytes (shorter first), none of the neighbour's. */
    ASSERT_EQ(ag_kv_list(kv, NULL, 0, NULL, 0, &l), 0);
    ASSERT_EQ(l.count, AG_ARRAY_LEN(odd) + 1);
    static const char *sorted[] = {"a", "a*", "a*b", "a?c", "a[x]", "a\\d", "aa", "ab", "am", "b"};
    for (size_t i = 0; i < l.count; i++)
        ASSERT_STREQ(l.keys[i].name, sorted[i]);
    ASSERT_MEMEQ(l.keys[8].metadata, l.keys[8].metadata_len, "1");
    ag_kv_list_result_free(&l);
    /* One at a time, by cursor. */
    char *cursor = NULL;
    size_t seen = 0;
    for (int guard = 0; guard < 20; guard++) {
        ASSERT_EQ(ag_kv_list(kv, NULL, 0, cursor, 1, &l), 0);
        free(cursor);
        cursor = l.cursor ? strdup(l.cursor) : NULL;
        if (l.count) {
            ASSERT(seen < AG_ARRAY_LEN(sorted));
            ASSERT_STREQ(l.keys[0].name, sorted[seen]);
            seen++;
        }
        bool done = l.list_complete;
        ag_kv_list_result_free(&l);
        if (done)
            break;
    }
    ASSERT_EQ(seen, AG_ARRAY_LEN(sorted));
    free(cursor);
    ag_kv_close(kv);
    ag_kv_close(near);

    /* 2500 keys, written in scrambled order, come back in pages of 1000. */
    kv = open_ns("PAGES");
    ASSERT(kv != NULL);
    enum { N = 2500 };
    char **names = calloc(N, sizeof(*names));
    ASSERT(names != NULL);
    for (int i = 0; i < N; i++) {
        char k[32];
        snprintf(k, sizeof(k), "k%d", (i * 7919) % N);
        names[i] = strdup(k);
        ASSERT_EQ(put_str(kv, k, "v"), 0);
    }
    qsort(names, N, sizeof(*names), cmp_key);
    size_t got = 0, pages = 0;
    cursor = NULL;
    for (;;) {
        ASSERT_EQ(ag_kv_list(kv, "k", 1, cursor, 0, &l), 0);
        free(cursor);
        cursor = l.cursor ? strdup(l.cursor) : NULL;
        pages++;
        for (size_t i = 0; i < l.count; i++, got++)
            ASSERT_STREQ(l.keys[i].name, names[got]);
        bool done = l.list_complete;
        ag_kv_list_result_free(&l);
        if (done || pages > 5)
            break;
    }
    ASSERT_EQ(got, N);
    ASSERT_EQ(pages, 3);
    free(cursor);
    for (int i = 0; i < N; i++)
        free(names[i]);
    free(names);
    ag_kv_close(kv);
}

TEST(redis_kv_full_redis_is_a_clear_error)
{
    start();
    ASSERT(redis_up());
    ag_kv_t *kv = open_ns("FULL");
    ASSERT(kv != NULL);
    const char *cfg[] = {"CONFIG", "SET", "maxmemory", "1"};
    ag_resp_t *r = raw(4, cfg);
    ASSERT(r && r->type == AG_RESP_STATUS);
    ag_resp_free(r);
    ASSERT_EQ(put_str(kv, "k", "v"), AG_KV_EREDIS_FULL);
    const char *reset[] = {"CONFIG", "SET", "maxmemory", "0"};
    ag_resp_free(raw(4, reset));
    ASSERT_EQ(put_str(kv, "k", "v"), 0);
    ag_kv_close(kv);
}

TEST(redis_kv_down_fails_fast_then_recovers)
{
    start();
    ASSERT(redis_up());
    ag_kv_t *kv = open_ns("DOWN");
    ASSERT(kv != NULL);
    ASSERT_EQ(put_str(kv, "k", "v"), 0);
    stop_redis(redis_pid);
    redis_pid = 0;
    int64_t t0 = now_ms();
    ag_kv_value_t v;
    int rc = ag_kv_get(kv, "k", 1, &v);
    ASSERT(rc == AG_REDIS_EDOWN || rc == AG_REDIS_ETIMEDOUT);
    ASSERT(now_ms() - t0 < 3000); /* within the timeout, not hanging */
    ag_kv_list_result_t l;
    rc = ag_kv_list(kv, NULL, 0, NULL, 0, &l);
    ASSERT(rc == AG_REDIS_EDOWN || rc == AG_REDIS_ETIMEDOUT);
    /* Back (empty: no persistence): the same handle works again. */
    start();
    ASSERT(redis_up());
    ASSERT_EQ(put_str(kv, "k", "again"), 0);
    ASSERT_EQ(ag_kv_get(kv, "k", 1, &v), 0);
    ASSERT_MEMEQ(v.data, v.len, "again");
    ag_kv_value_free(&v);
    ag_kv_close(kv);
}

TEST(redis_kv_open_checks_its_options)
{
    ag_kv_t *kv = NULL;
    ag_kv_options_t o = {.backend = AG_KV_BACKEND_REDIS, .redis = {.url = "redis://127.0.0.1:1"}};
    ASSERT_EQ(ag_kv_open("/tmp/x", &o, &kv), AG_EINVALID); /* no binding */
    o.redis.url = "http://nope";
    ASSERT_EQ(ag_kv_open_namespace("/tmp", "NS", &o, &kv), AG_REDIS_EURL);
    o.redis.url = NULL;
    ASSERT_EQ(ag_kv_open_namespace("/tmp", "NS", &o, &kv), AG_EINVALID);
    o.redis.url = "redis://127.0.0.1:1";
    ASSERT_EQ(ag_kv_open_namespace("/tmp", "bad name", &o, &kv), AG_KV_EBINDING);
    ASSERT(kv == NULL);
    /* Opening never waits for Redis: the first call says it is not there. */
    ASSERT_EQ(ag_kv_open_namespace("/tmp", "NS", &o, &kv), 0);
    ag_kv_value_t v;
    int rc = ag_kv_get(kv, "k", 1, &v);
    ASSERT(rc == AG_REDIS_EDOWN || rc == AG_REDIS_ETIMEDOUT);
    ag_kv_close(kv);
    if (redis_pid) {
        stop_redis(redis_pid);
        redis_pid = 0;
    }
}

AG_TESTS(AG_TEST_ENTRY(redis_kv_roundtrip_shared_by_two_handles)
             AG_TEST_ENTRY(redis_kv_metadata_and_expiry)
                 AG_TEST_ENTRY(redis_kv_list_in_byte_order_with_pages)
                     AG_TEST_ENTRY(redis_kv_full_redis_is_a_clear_error)
                         AG_TEST_ENTRY(redis_kv_down_fails_fast_then_recovers)
                             AG_TEST_ENTRY(redis_kv_open_checks_its_options))
