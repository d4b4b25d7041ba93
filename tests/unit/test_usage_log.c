/* SPDX-License-Identifier: MIT
 *
 * test_usage_log.c: the usage log against real directory buckets under a
 * temporary folder: the NDJSON fields, flushes by size and age (an injected
 * clock and ag_usage_log_tick() instead of sleeps), object names, the
 * queue-full policies, failing stores, close and kill -9, prices.
 */
#include "util/platform.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stddef.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "harness.h"
#include "store/objstore.h"
#include "store/usage_log.h"
#include "util/errors.h"
#include "util/log.h"

/* ---- fixture: a bucket folder in a temporary folder -------------------- */

typedef struct {
    char dir[64];
    char bucket[96];
    ag_objstore_t *store;
} fixture_t;

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static bool fixture_open(fixture_t *f)
{
    snprintf(f->dir, sizeof(f->dir), "/tmp/ag_test_usage_XXXXXX");
    if (mkdtemp(f->dir) == NULL)
        return false;
    snprintf(f->bucket, sizeof(f->bucket), "%s/logs-bucket", f->dir);
    return ag_objstore_open_fs(f->bucket, &f->store) == 0;
}

static void fixture_close(fixture_t *f)
{
    ag_objstore_close(f->store);
    nftw(f->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* A clock the test moves by hand. */
static _Atomic int64_t fake_now;

static int64_t fake_clock(void *ctx)
{
    (void)ctx;
    return atomic_load(&fake_now);
}

/* 2026-03-04T12:00:00.000Z */
#define T0 1772625600000LL

static ag_usage_log_options_t base_opts(ag_objstore_t *store)
{
    ag_usage_log_options_t o = {0};
    o.store = store;
    o.now_ms = fake_clock;
    o.flush_interval_ms = 1000;
    return o;
}

static ag_usage_entry_t entry(const char *rid)
{
    ag_usage_entry_t e = {0};
    ag_usage_entry_set_str(e.model, sizeof(e.model), "claude-haiku-4-5", 16);
    ag_usage_entry_set_str(e.client, sizeof(e.client), "203.0.113.7", 11);
    ag_usage_entry_set_str(e.request_id, sizeof(e.request_id), rid, strlen(rid));
    e.prompt_length = 12;
    e.output_length = 345;
    e.input_tokens = 20;
    e.output_tokens = 80;
    e.status = 200;
    e.latency_ms = 512;
    return e;
}

/* ---- reading the bucket back ------------------------------------------- */

typedef struct {
    char **keys;
    size_t *sizes;
    size_t *nlines_of; /* lines per object */
    size_t nkeys;
    json_t **lines; /* every line of every object, in key order */
    size_t nlines;
    size_t bad_lines; /* lines that do not parse, or lack the final '\n' */
} dump_t;

static void dump_free(dump_t *d)
{
    for (size_t i = 0; i < d->nkeys; i++)
        free(d->keys[i]);
    for (size_t i = 0; i < d->nlines; i++)
        json_decref(d->lines[i]);
    free(d->keys);
    free(d->sizes);
    free(d->nlines_of);
    free(d->lines);
    memset(d, 0, sizeof(*d));
}

static void *xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n);
    AG_ASSERT(q != NULL);
    return q;
}

static int dump_object(ag_objstore_t *s, const char *key, dump_t *d)
{
    ag_obj_t obj;
    int rc = ag_objstore_get(s, key, strlen(key), &obj);
    if (rc < 0)
        return rc;
    size_t n = 0;
    const char *p = obj.data, *end = obj.data + obj.len;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        if (nl == NULL) {
            d->bad_lines++;
            break;
        }
        json_error_t err;
        json_t *j = json_loadb(p, (size_t)(nl - p), 0, &err);
        if (j == NULL || !json_is_object(j)) {
            d->bad_lines++;
            json_decref(j);
        } else {
            d->lines = xrealloc(d->lines, (d->nlines + 1) * sizeof(*d->lines));
            d->lines[d->nlines++] = j;
            n++;
        }
        p = nl + 1;
    }
    d->keys = xrealloc(d->keys, (d->nkeys + 1) * sizeof(*d->keys));
    d->sizes = xrealloc(d->sizes, (d->nkeys + 1) * sizeof(*d->sizes));
    d->nlines_of = xrealloc(d->nlines_of, (d->nkeys + 1) * sizeof(*d->nlines_of));
    d->keys[d->nkeys] = strdup(key);
    d->sizes[d->nkeys] = obj.len;
    d->nlines_of[d->nkeys] = n;
    d->nkeys++;
    ag_obj_free(&obj);
    return 0;
}

/* Every object under logs/, in key order, with its lines parsed. */
static int dump_store(ag_objstore_t *s, dump_t *d)
{
    memset(d, 0, sizeof(*d));
    char *cursor = NULL;
    for (int page = 0; page < 1000; page++) {
        ag_obj_list_opts_t lo = {.prefix = "logs/", .prefix_len = 5, .cursor = cursor};
        ag_obj_list_result_t r;
        int rc = ag_objstore_list(s, &lo, &r);
        free(cursor);
        cursor = NULL;
        if (rc < 0)
            return rc;
        for (size_t i = 0; i < r.count && rc == 0; i++)
            rc = dump_object(s, r.objects[i].key, d);
        if (rc == 0 && r.truncated)
            cursor = strdup(r.cursor);
        ag_obj_list_result_free(&r);
        if (rc < 0 || cursor == NULL)
            return rc;
    }
    free(cursor);
    return -ELOOP;
}

static const char *jstr(json_t *o, const char *name)
{
    const char *s = json_string_value(json_object_get(o, name));
    return s ? s : "(missing)";
}

static int64_t jint(json_t *o, const char *name)
{
    json_t *v = json_object_get(o, name);
    return json_is_integer(v) ? (int64_t)json_integer_value(v) : -999;
}

/* ---- a store wrapper that can hold or fail puts ------------------------- */

typedef struct {
    ag_objstore_t base;
    ag_objstore_t *inner;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool gate_closed;
    int in_put;
    int fail_rc;         /* nonzero: puts fail with it */
    bool land_then_fail; /* with fail_rc: the put lands, then fails (a lost answer) */
    int puts;
} gate_store_t;

static int gate_put(ag_objstore_t *s, const char *key, size_t keylen, const void *data, size_t len,
                    const char *meta_json, ag_obj_info_t *out)
{
    gate_store_t *g = (gate_store_t *)s;
    pthread_mutex_lock(&g->mu);
    g->in_put++;
    g->puts++;
    pthread_cond_broadcast(&g->cv);
    while (g->gate_closed)
        pthread_cond_wait(&g->cv, &g->mu);
    g->in_put--;
    int rc = g->fail_rc;
    bool land = g->land_then_fail;
    pthread_mutex_unlock(&g->mu);
    if (rc && !land)
        return rc;
    int irc = g->inner->ops->put(g->inner, key, keylen, data, len, meta_json, out);
    return rc ? rc : irc;
}

static int gate_get(ag_objstore_t *s, const char *key, size_t keylen, ag_obj_t *out)
{
    gate_store_t *g = (gate_store_t *)s;
    return g->inner->ops->get(g->inner, key, keylen, out);
}

static int gate_head(ag_objstore_t *s, const char *key, size_t keylen, ag_obj_info_t *out)
{
    gate_store_t *g = (gate_store_t *)s;
    return g->inner->ops->head(g->inner, key, keylen, out);
}

static int gate_del(ag_objstore_t *s, const char *key, size_t keylen)
{
    gate_store_t *g = (gate_store_t *)s;
    return g->inner->ops->del(g->inner, key, keylen);
}

static int gate_list(ag_objstore_t *s, const ag_obj_list_opts_t *opts,
                     const ag_obj_list_after_t *after, ag_obj_list_result_t *out)
{
    gate_store_t *g = (gate_store_t *)s;
    return g->inner->ops->list(g->inner, opts, after, out);
}

static void gate_close_op(ag_objstore_t *s)
{
    (void)s; /* the fixture owns the inner store; the wrapper lives on the stack */
}

static const ag_objstore_ops_t gate_ops = {
    "gate", gate_put, gate_get, gate_head, NULL, gate_del, gate_list, gate_close_op, NULL,
};

static void gate_init(gate_store_t *g, ag_objstore_t *inner)
{
    memset(g, 0, sizeof(*g));
    g->base.ops = &gate_ops;
    g->inner = inner;
    pthread_mutex_init(&g->mu, NULL);
    pthread_cond_init(&g->cv, NULL);
}

static void gate_fini(gate_store_t *g)
{
    pthread_mutex_destroy(&g->mu);
    pthread_cond_destroy(&g->cv);
}

static void gate_set(gate_store_t *g, bool closed, int fail_rc)
{
    pthread_mutex_lock(&g->mu);
    g->gate_closed = closed;
    g->fail_rc = fail_rc;
    pthread_cond_broadcast(&g->cv);
    pthread_mutex_unlock(&g->mu);
}

/* Waits (bounded) until a put is held at the gate. */
static bool gate_wait_held(gate_store_t *g)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += 10;
    pthread_mutex_lock(&g->mu);
    int rc = 0;
    while (g->in_put == 0 && rc != ETIMEDOUT)
        rc = pthread_cond_timedwait(&g->cv, &g->mu, &ts);
    bool held = g->in_put > 0;
    pthread_mutex_unlock(&g->mu);
    return held;
}

/* Waits, bounded by a 10 s deadline, for a counter another thread moves. */
static bool wait_stat(ag_usage_log_t *log, size_t offset, uint64_t want)
{
    for (int i = 0; i < 10000; i++) {
        ag_usage_log_stats_t st;
        ag_usage_log_stats(log, &st);
        uint64_t v;
        memcpy(&v, (const char *)&st + offset, sizeof(v));
        if (v >= want)
            return true;
        struct timespec d = {0, 1000000};
        nanosleep(&d, NULL);
    }
    return false;
}

/* ---- tests ------------------------------------------------------------- */

static const ag_price_t prices[] = {
    {"claude-haiku-4-5", 1.0, 5.0, 0, 0},
    {"claude-sonnet-4-5", 3.0, 15.0, 0, 0},
    {"claude-sonnet-4", 2.0, 10.0, 0, 0},
    {"custom", 1.0, 1.0, 7.0, 0.5},
};

static bool near(double a, double b)
{
    double d = a - b;
    return d < 1e-12 && d > -1e-12;
}

TEST(cost_usd)
{
    size_t n = AG_ARRAY_LEN(prices);
    /* 1M input at $1 + 1M output at $5 */
    ASSERT(near(ag_usage_cost_usd(prices, n, "claude-haiku-4-5", 1000000, 1000000, 0, 0), 6.0));
    /* cache writes at 1.25x input, reads at 0.1x: 3*(1.25) + 3*(0.1) per M */
    ASSERT(near(ag_usage_cost_usd(prices, n, "claude-sonnet-4-5", 0, 0, 1000000, 1000000),
                3.0 * 1.25 + 3.0 * 0.1));
    ASSERT(near(ag_usage_cost_usd(prices, n, "claude-sonnet-4-5", 1000, 2000, 0, 0),
                (1000 * 3.0 + 2000 * 15.0) / 1e6));
    /* explicit cache rates win over the multipliers */
    ASSERT(near(ag_usage_cost_usd(prices, n, "custom", 0, 0, 2000000, 2000000), 14.0 + 1.0));
    /* a dated snapshot takes its alias's price; the longest alias wins */
    ASSERT(near(ag_usage_cost_usd(prices, n, "claude-sonnet-4-5-20250929", 1000000, 0, 0, 0), 3.0));
    ASSERT(near(ag_usage_cost_usd(prices, n, "claude-sonnet-4-20250514", 1000000, 0, 0, 0), 2.0));
    /* "-5" is another model, not a snapshot of claude-sonnet-4 */
    ASSERT(near(ag_usage_cost_usd(prices, n, "claude-sonnet-4-6", 1000000, 0, 0, 0), 0));
    ASSERT(near(ag_usage_cost_usd(prices, n, "claude-haiku-4-5x", 1000000, 0, 0, 0), 0));
    ASSERT(near(ag_usage_cost_usd(prices, n, "unknown", 1000000, 1000000, 0, 0), 0));
    ASSERT(near(ag_usage_cost_usd(prices, n, NULL, 1, 1, 0, 0), 0));
    ASSERT(near(ag_usage_cost_usd(NULL, 0, "claude-haiku-4-5", 1, 1, 0, 0), 0));
    /* negative counts (a broken upstream) cost nothing rather than refund */
    ASSERT(near(ag_usage_cost_usd(prices, n, "claude-haiku-4-5", -5000, 1000000, 0, 0), 5.0));
}

TEST(entry_set_str_truncates_on_characters)
{
    char buf[6];
    ag_usage_entry_set_str(buf, sizeof(buf), "abc", 3);
    ASSERT_STREQ(buf, "abc");
    ag_usage_entry_set_str(buf, sizeof(buf), "abcdefgh", 8);
    ASSERT_STREQ(buf, "abcde");
    /* "abc" + U+20AC (3 bytes): 5 bytes fit, which would cut the euro sign */
    ag_usage_entry_set_str(buf, sizeof(buf), "abc\xe2\x82\xac", 6);
    ASSERT_STREQ(buf, "abc");
    ag_usage_entry_set_str(buf, sizeof(buf), NULL, 4);
    ASSERT_STREQ(buf, "");
}

TEST(entry_fields_round_trip)
{
    fixture_t f;
    ASSERT(fixture_open(&f));
    atomic_store(&fake_now, T0 + 1234);
    ag_usage_log_options_t o = base_opts(f.store);
    o.prices = prices;
    o.nprices = AG_ARRAY_LEN(prices);
    ag_usage_log_t *log;
    ASSERT_EQ(ag_usage_log_open(&o, &log), 0);

    ag_usage_entry_t e = entry("req-1");
    /* quotes, a newline, a control byte, UTF-8 and an invalid byte */
    const char *client = "ev\"il\n\x01 \xc3\xa9\xff";
    ag_usage_entry_set_str(e.client, sizeof(e.client), client, strlen(client));
    e.cache_creation_input_tokens = 1000;
    e.cache_read_input_tokens = 3000;
    e.timestamp_ms = T0 + 42; /* explicit */
    ag_usage_entry_set_str(e.route, sizeof(e.route), "/api/generate", 13);
    ag_usage_entry_set_str(e.key, sizeof(e.key), "team-a", 6);
    e.cpu_us = 1234;
    e.attempts = 2;
    e.queued_ms = 250;
    ag_usage_entry_set_str(e.fallback_from, sizeof(e.fallback_from), "claude-sonnet-4-6", 17);
    ASSERT_EQ(ag_usage_log_append(log, &e), 0);
    ag_usage_entry_t e2 = entry("req-2");
    e2.cached = true;
    e2.stream = true;
    e2.status = 502;
    ag_usage_entry_set_str(e2.outcome, sizeof(e2.outcome), "client_abort", 12);
    ag_usage_entry_set_str(e2.model, sizeof(e2.model), "mystery", 7);
    ASSERT_EQ(ag_usage_log_append(log, &e2), 0); /* timestamp from the clock */
    ASSERT_EQ(ag_usage_log_flush(log), 0);
    ag_usage_log_stats_t st;
    ag_usage_log_stats(log, &st);
    ASSERT_EQ(st.accepted, 2);
    ASSERT_EQ(st.written, 2);
    ASSERT_EQ(st.flushes, 1);
    ASSERT_EQ(st.queued, 0);
    ag_usage_log_free(log);

    dump_t d;
    ASSERT_EQ(dump_store(f.store, &d), 0);
    ASSERT_EQ(d.nkeys, 1);
    ASSERT_EQ(d.bad_lines, 0);
    ASSERT_EQ(d.nlines, 2);
    json_t *a = d.lines[0], *b = d.lines[1];
    ASSERT_STREQ(jstr(a, "timestamp"), "2026-03-04T12:00:00.042Z");
    ASSERT_STREQ(jstr(a, "model"), "claude-haiku-4-5");
    ASSERT_EQ(jint(a, "promptLength"), 12);
    ASSERT_EQ(jint(a, "outputLength"), 345);
    ASSERT_EQ(jint(a, "inputTokens"), 20);
    ASSERT_EQ(jint(a, "outputTokens"), 80);
    ASSERT_EQ(jint(a, "cacheCreationInputTokens"), 1000);
    ASSERT_EQ(jint(a, "cacheReadInputTokens"), 3000);
    ASSERT_EQ(jint(a, "status"), 200);
    ASSERT(json_is_false(json_object_get(a, "cached")));
    ASSERT(json_is_false(json_object_get(a, "stream")));
    ASSERT_EQ(jint(a, "latencyMs"), 512);
    ASSERT_STREQ(jstr(a, "client"), "ev\"il\n\x01 \xc3\xa9\xef\xbf\xbd");
    ASSERT_STREQ(jstr(a, "requestId"), "req-1");
    double want =
        ag_usage_cost_usd(prices, AG_ARRAY_LEN(prices), "claude-haiku-4-5", 20, 80, 1000, 3000);
    ASSERT(want > 0);
    double got = json_number_value(json_object_get(a, "costUsd"));
    ASSERT(got - want < 1e-9 && want - got < 1e-9);
    ASSERT(json_object_get(a, "outcome") == NULL); /* empty outcome is omitted */
    ASSERT_STREQ(jstr(a, "route"), "/api/generate");
    ASSERT(json_real_value(json_object_get(a, "cpuMs")) == 1.234);
    ASSERT_EQ(jint(a, "attempts"), 2);
    ASSERT_EQ(jint(a, "queuedMs"), 250);
    ASSERT_STREQ(jstr(a, "fallbackFrom"), "claude-sonnet-4-6");
    ASSERT_STREQ(jstr(a, "key"), "team-a");

    ASSERT_STREQ(jstr(b, "timestamp"), "2026-03-04T12:00:01.234Z");
    ASSERT(json_is_true(json_object_get(b, "cached")));
    ASSERT(json_is_true(json_object_get(b, "stream")));
    ASSERT_EQ(jint(b, "status"), 502);
    ASSERT_STREQ(jstr(b, "outcome"), "client_abort");
    ASSERT(json_number_value(json_object_get(b, "costUsd")) == 0); /* unknown model */
    /* the new fields' defaults: an empty route, 0 ms, 0 attempts, no key */
    ASSERT_STREQ(jstr(b, "route"), "");
    ASSERT(json_real_value(json_object_get(b, "cpuMs")) == 0);
    ASSERT_EQ(jint(b, "attempts"), 0);
    ASSERT_EQ(jint(b, "queuedMs"), 0);
    ASSERT(json_object_get(b, "fallbackFrom") == NULL);
    ASSERT(json_object_get(b, "key") == NULL);
    ASSERT_EQ(json_object_size(a), 21);
    ASSERT_EQ(json_object_size(b), 21); /* a hit also says what it saved */

    /* byte for byte: the new fields come last, in this order and format */
    ag_obj_t raw;
    ASSERT_EQ(ag_objstore_get(f.store, d.keys[0], strlen(d.keys[0]), &raw), 0);
    ASSERT(strstr(raw.data,
                  ",\"costUsd\":0,\"outcome\":\"client_abort\",\"route\":\"\","
                  "\"cpuMs\":0.000,\"attempts\":0,\"queuedMs\":0,\"savedUsd\":0}\n") != NULL);
    ASSERT(strstr(raw.data, ",\"route\":\"/api/generate\",\"cpuMs\":1.234,\"attempts\":2,"
                            "\"queuedMs\":250,\"fallbackFrom\":\"claude-sonnet-4-6\","
                            "\"key\":\"team-a\"}\n") != NULL);
    ag_obj_free(&raw);

    /* the object says what it is */
    ag_obj_info_t info;
    ASSERT_EQ(ag_objstore_head(f.store, d.keys[0], strlen(d.keys[0]), &info), 0);
    ASSERT_STREQ(info.content_type, "application/x-ndjson");
    ASSERT_EQ(info.ncustom, 1);
    ASSERT_STREQ(info.custom[0].name, "entries");
    ASSERT_STREQ(info.custom[0].value, "2");
    ag_obj_info_free(&info);
    dump_free(&d);
    fixture_close(&f);
}

typedef struct {
    ag_usage_log_t *log;
    int id;
    int n;
    int failures;
} producer_t;

static void *producer(void *arg)
{
    producer_t *p = arg;
    for (int i = 0; i < p->n; i++) {
        char rid[32];
        snprintf(rid, sizeof(rid), "t%d-%d", p->id, i);
        ag_usage_entry_t e = entry(rid);
        e.input_tokens = p->id * 100000 + i; /* lets the reader check values per entry */
        if (ag_usage_log_append(p->log, &e) != 0)
            p->failures++;
    }
    return NULL;
}

static atomic_int flush_callbacks;

static void count_flush(void *ctx, const ag_usage_flush_info_t *info)
{
    (void)ctx;
    if (info->rc == 0)
        atomic_fetch_add(&flush_callbacks, 1);
}

TEST(threads_2000_entries_exactly_once)
{
    enum { THREADS = 4, PER = 500 };
    fixture_t f;
    ASSERT(fixture_open(&f));
    ag_usage_log_options_t o = {0}; /* the real clocks */
    o.store = f.store;
    o.flush_bytes = 16 * 1024;
    o.flush_interval_ms = 5;
    o.on_flush = count_flush;
    o.instance_id = "gw-test";
    o.prices = prices;
    o.nprices = AG_ARRAY_LEN(prices);
    atomic_store(&flush_callbacks, 0);
    ag_usage_log_t *log;
    ASSERT_EQ(ag_usage_log_open(&o, &log), 0);
    pthread_t th[THREADS];
    producer_t p[THREADS];
    for (int i = 0; i < THREADS; i++) {
        p[i] = (producer_t){log, i, PER, 0};
        ASSERT_EQ(pthread_create(&th[i], NULL, producer, &p[i]), 0);
    }
    /* flushes racing the producers must neither lose nor duplicate */
    for (int i = 0; i < 3; i++)
        ASSERT_EQ(ag_usage_log_flush(log), 0);
    for (int i = 0; i < THREADS; i++) {
        pthread_join(th[i], NULL);
        ASSERT_EQ(p[i].failures, 0);
    }
    ag_usage_log_close(log);
    ag_usage_log_stats_t st;
    ag_usage_log_stats(log, &st);
    ASSERT_EQ(st.accepted, THREADS * PER);
    ASSERT_EQ(st.written, THREADS * PER);
    ASSERT_EQ(st.dropped, 0);
    ASSERT_EQ(st.queued, 0);
    ASSERT_EQ(st.lost, 0);
    ASSERT_EQ(st.write_errors, 0);
    ASSERT_EQ(st.retained_bytes, 0);
    ASSERT_EQ(ag_usage_log_append(log, &(ag_usage_entry_t){0}), AG_USAGE_ECLOSED);
    ag_usage_log_free(log);

    dump_t d;
    ASSERT_EQ(dump_store(f.store, &d), 0);
    ASSERT_EQ(d.bad_lines, 0);
    ASSERT_EQ(d.nlines, THREADS * PER);
    ASSERT(d.nkeys >= 2); /* 2000 lines of ~330 bytes do not fit in 16 KiB */
    ASSERT_EQ(st.flushes, d.nkeys);
    ASSERT_EQ(atomic_load(&flush_callbacks), (int)d.nkeys);
    static unsigned char seen[THREADS][PER];
    memset(seen, 0, sizeof(seen));
    for (size_t i = 0; i < d.nlines; i++) {
        const char *rid = jstr(d.lines[i], "requestId");
        ASSERT(rid[0] == 't');
        char *dash;
        long t = strtol(rid + 1, &dash, 10);
        ASSERT(*dash == '-');
        long k = strtol(dash + 1, NULL, 10);
        ASSERT(t >= 0 && t < THREADS && k >= 0 && k < PER);
        ASSERT_EQ(seen[t][k], 0);
        seen[t][k] = 1;
        ASSERT_EQ(jint(d.lines[i], "inputTokens"), t * 100000 + k);
        ASSERT_STREQ(jstr(d.lines[i], "model"), "claude-haiku-4-5");
        ASSERT_EQ(jint(d.lines[i], "status"), 200);
    }
    for (size_t i = 0; i < d.nkeys; i++) {
        ASSERT(strncmp(d.keys[i], "logs/", 5) == 0);
        ASSERT(strstr(d.keys[i], "-gw-test-") != NULL);
        ASSERT(d.sizes[i] <= 16 * 1024);
    }
    dump_free(&d);
    fixture_close(&f);
}

TEST(flush_by_size)
{
    fixture_t f;
    ASSERT(fixture_open(&f));
    atomic_store(&fake_now, T0);
    ag_usage_log_options_t o = base_opts(f.store);
    o.flush_bytes = 4096;
    o.flush_interval_ms = 3600 * 1000; /* age never triggers here */
    ag_usage_log_t *log;
    ASSERT_EQ(ag_usage_log_open(&o, &log), 0);
    enum { N = 100 };
    for (int i = 0; i < N; i++) {
        char rid[32];
        snprintf(rid, sizeof(rid), "s%03d", i);
        ag_usage_entry_t e = entry(rid);
        e.timestamp_ms = T0 + i; /* increasing, so object order is time order */
        ASSERT_EQ(ag_usage_log_append(log, &e), 0);
    }
    ASSERT_EQ(ag_usage_log_tick(log), 0);
    ag_usage_log_stats_t st;
    ag_usage_log_stats(log, &st);
    ASSERT(st.flushes >= 2); /* several full objects went out by size alone */
    ASSERT(st.written < N);  /* the partial tail waits for its age */
    ASSERT(st.written > N / 2);
    ASSERT_EQ(st.queued, N - st.written);
    uint64_t by_size = st.flushes;

    atomic_store(&fake_now, T0 + 3600 * 1000);
    ASSERT_EQ(ag_usage_log_tick(log), 0);
    ag_usage_log_stats(log, &st);
    ASSERT_EQ(st.written, N);
    ASSERT_EQ(st.flushes, by_size + 1);
    ag_usage_log_free(log);

    dump_t d;
    ASSERT_EQ(dump_store(f.store, &d), 0);
    ASSERT_EQ(d.nkeys, by_size + 1);
    ASSERT_EQ(d.nlines, N);
    for (size_t i = 0; i < d.nkeys; i++) {
        ASSERT(d.sizes[i] <= 4096);
        if (i + 1 < d.nkeys)
            ASSERT(d.sizes[i] > 4096 - 512); /* full: the next line did not fit */
    }
    /* key order is time order: the lines come back in append order */
    for (size_t i = 0; i < d.nlines; i++) {
        char rid[32];
        snprintf(rid, sizeof(rid), "s%03zu", i);
        ASSERT_STREQ(jstr(d.lines[i], "requestId"), rid);
    }
    dump_free(&d);
    fixture_close(&f);
}

TEST(flush_by_age)
{
    fixture_t f;
    ASSERT(fixture_open(&f));
    atomic_store(&fake_now, T0);
    ag_usage_log_options_t o = base_opts(f.store);
    ag_usage_log_t *log;
    ASSERT_EQ(ag_usage_log_open(&o, &log), 0);
    for (int i = 0; i < 3; i++) {
        ag_usage_entry_t e = entry("age");
        ASSERT_EQ(ag_usage_log_append(log, &e), 0);
    }
    ag_usage_log_stats_t st;
    ASSERT_EQ(ag_usage_log_tick(log), 0);
    ag_usage_log_stats(log, &st);
    ASSERT_EQ(st.flushes, 0);
    atomic_store(&fake_now, T0 + 999);
    ASSERT_EQ(ag_usage_log_tick(log), 0);
    ag_usage_log_stats(log, &st);
    ASSERT_EQ(st.flushes, 0);
    ASSERT_EQ(st.queued, 3);
    ASSERT(st.retained_bytes > 0); /* serialised, waiting for its age */
    atomic_store(&fake_now, T0 + 1000);
    ASSERT_EQ(ag_usage_log_tick(log), 0);
    ag_usage_log_stats(log, &st);
    ASSERT_EQ(st.flushes, 1);
    ASSERT_EQ(st.written, 3);
    ASSERT_EQ(st.retained_bytes, 0);

    /* the age counts from the append, not from the last flush */
    atomic_store(&fake_now, T0 + 5000);
    ag_usage_entry_t e = entry("age2");
    ASSERT_EQ(ag_usage_log_append(log, &e), 0);
    atomic_store(&fake_now, T0 + 5999);
    ASSERT_EQ(ag_usage_log_tick(log), 0);
    ag_usage_log_stats(log, &st);
    ASSERT_EQ(st.flushes, 1);
    atomic_store(&fake_now, T0 + 6000);
    ASSERT_EQ(ag_usage_log_tick(log), 0);
    ag_usage_log_stats(log, &st);
    ASSERT_EQ(st.flushes, 2);
    ASSERT_EQ(st.written, 4);
    ag_usage_log_free(log);
    fixture_close(&f);
}

TEST(flush_by_age_real_clock)
{
    /* No injected clock: the writer's own timer must put the entry. */
    fixture_t f;
    ASSERT(fixture_open(&f));
    ag_usage_log_options_t o = {0};
    o.store = f.store;
    o.flush_interval_ms = 20;
    ag_usage_log_t *log;
    ASSERT_EQ(ag_usage_log_open(&o, &log), 0);
    ag_usage_entry_t e = entry("timer");
    char lo[64], hi[64];
    ag_format_time_iso(ag_now_us(), lo);
    ASSERT_EQ(ag_usage_log_append(log, &e), 0);
    ag_format_time_iso(ag_now_us(), hi);
    ASSERT(wait_stat(log, offsetof(ag_usage_log_stats_t, written), 1));
    ag_usage_log_free(log);
    dump_t d;
    ASSERT_EQ(dump_store(f.store, &d), 0);
    ASSERT_EQ(d.nlines, 1);
    /* the timestamp came from the wall clock at append (ISO text sorts as time) */
    const char *ts = jstr(d.lines[0], "timestamp");
    ASSERT(strcmp(lo, ts) <= 0 && strcmp(ts, hi) <= 0);
    dump_free(&d);
    fixture_close(&f);
}

static int64_t utc_ms(int y, int mo, int d, int h, int mi, int s, int ms)
{
    struct tm tm = {0};
    tm.tm_year = y - 1900;
    tm.tm_mon = mo - 1;
    tm.tm_mday = d;
    tm.tm_hour = h;
    tm.tm_min = mi;
    tm.tm_sec = s;
    return (int64_t)timegm(&tm) * 1000 + ms;
}

TEST(keys_by_utc_day_and_time)
{
    fixture_t f;
    ASSERT(fixture_open(&f));
    atomic_store(&fake_now, T0);
    ag_usage_log_options_t o = base_opts(f.store);
    o.instance_id = "node.a_1";
    ag_usage_log_t *log;
    ASSERT_EQ(ag_usage_log_open(&o, &log), 0);
    int64_t before = utc_ms(2026, 3, 4, 23, 59, 59, 900);
    int64_t after = utc_ms(2026, 3, 5, 0, 0, 0, 100);
    int64_t late = utc_ms(2026, 3, 4, 23, 59, 59, 950);
    const int64_t ts[] = {late, after, before};
    const char *ids[] = {"late", "after", "before"};
    for (int i = 0; i < 3; i++) {
        ag_usage_entry_t e = entry(ids[i]);
        e.timestamp_ms = ts[i];
        ASSERT_EQ(ag_usage_log_append(log, &e), 0);
    }
    ASSERT_EQ(ag_usage_log_flush(log), 0);
    /* a later batch of the same day sorts after the earlier ones */
    ag_usage_entry_t e = entry("next-day-later");
    e.timestamp_ms = after + 5000;
    ASSERT_EQ(ag_usage_log_append(log, &e), 0);
    ASSERT_EQ(ag_usage_log_flush(log), 0);
    ag_usage_log_free(log);

    dump_t d;
    ASSERT_EQ(dump_store(f.store, &d), 0);
    ASSERT_EQ(d.nkeys, 3);
    ASSERT_EQ(d.nlines, 4);
    char want[64];
    /* the midnight batch was split per UTC day; each object is named after
     * its earliest entry */
    snprintf(want, sizeof(want), "logs/2026/03/04/%013lld-node.a_1-", (long long)before);
    ASSERT(strncmp(d.keys[0], want, strlen(want)) == 0);
    ASSERT(strcmp(d.keys[0] + strlen(d.keys[0]) - 7, ".ndjson") == 0);
    ASSERT_EQ(d.nlines_of[0], 2);
    ASSERT_STREQ(jstr(d.lines[0], "requestId"), "late"); /* append order inside */
    ASSERT_STREQ(jstr(d.lines[0], "timestamp"), "2026-03-04T23:59:59.950Z");
    ASSERT_STREQ(jstr(d.lines[1], "requestId"), "before");
    snprintf(want, sizeof(want), "logs/2026/03/05/%013lld-node.a_1-", (long long)after);
    ASSERT(strncmp(d.keys[1], want, strlen(want)) == 0);
    ASSERT_EQ(d.nlines_of[1], 1);
    ASSERT_STREQ(jstr(d.lines[2], "timestamp"), "2026-03-05T00:00:00.100Z");
    snprintf(want, sizeof(want), "logs/2026/03/05/%013lld-node.a_1-", (long long)(after + 5000));
    ASSERT(strncmp(d.keys[2], want, strlen(want)) == 0);
    dump_free(&d);
    fixture_close(&f);
}

TEST(several_opens_never_collide)
{
    /* The seed's logs/${Date.now()}.json lost entries that shared a
     * millisecond. Two logs with one instance id, one clock, one bucket: */
    fixture_t f;
    ASSERT(fixture_open(&f));
    atomic_store(&fake_now, T0);
    ag_usage_log_options_t o = base_opts(f.store);
    o.instance_id = "same";
    ag_usage_log_t *a, *b;
    ASSERT_EQ(ag_usage_log_open(&o, &a), 0);
    ASSERT_EQ(ag_usage_log_open(&o, &b), 0);
    ag_usage_entry_t e = entry("x");
    ASSERT_EQ(ag_usage_log_append(a, &e), 0);
    ASSERT_EQ(ag_usage_log_append(b, &e), 0);
    ASSERT_EQ(ag_usage_log_flush(a), 0);
    ASSERT_EQ(ag_usage_log_flush(b), 0);
    ag_usage_log_free(a);
    ag_usage_log_free(b);
    dump_t d;
    ASSERT_EQ(dump_store(f.store, &d), 0);
    ASSERT_EQ(d.nkeys, 2);
    ASSERT_EQ(d.nlines, 2);
    dump_free(&d);
    fixture_close(&f);
}

/* Holds the writer inside a put of entry 0, then fills a queue of 2. */
static bool fill_queue_behind_gate(gate_store_t *g, ag_usage_log_t *log)
{
    ag_usage_entry_t e = entry("q0");
    if (ag_usage_log_append(log, &e) != 0 || !gate_wait_held(g))
        return false;
    e = entry("q1");
    if (ag_usage_log_append(log, &e) != 0)
        return false;
    e = entry("q2");
    return ag_usage_log_append(log, &e) == 0;
}

static ag_usage_log_options_t gate_opts(gate_store_t *g)
{
    ag_usage_log_options_t o = base_opts(&g->base);
    o.queue_capacity = 2;
    o.flush_bytes = 1; /* each entry is its own object: the first put starts at once */
    return o;
}

TEST(queue_full_drop)
{
    fixture_t f;
    ASSERT(fixture_open(&f));
    gate_store_t g;
    gate_init(&g, f.store);
    gate_set(&g, true, 0);
    atomic_store(&fake_now, T0);
    ag_usage_log_options_t o = gate_opts(&g); /* AG_USAGE_DROP is the default */
    ag_usage_log_t *log;
    ASSERT_EQ(ag_usage_log_open(&o, &log), 0);
    ASSERT(fill_queue_behind_gate(&g, log));
    ag_usage_entry_t e = entry("q3");
    ASSERT_EQ(ag_usage_log_append(log, &e), AG_EFULL);
    ASSERT_EQ(ag_usage_log_append(log, &e), AG_EFULL);
    ag_usage_log_stats_t st;
    ag_usage_log_stats(log, &st);
    ASSERT_EQ(st.accepted, 3);
    ASSERT_EQ(st.dropped, 2);
    ASSERT_EQ(st.blocked, 0);
    gate_set(&g, false, 0);
    ag_usage_log_close(log);
    ag_usage_log_stats(log, &st);
    ASSERT_EQ(st.written, 3); /* every accepted entry, none of the refused */
    ASSERT_EQ(st.dropped, 2);
    ag_usage_log_free(log);
    dump_t d;
    ASSERT_EQ(dump_store(f.store, &d), 0);
    ASSERT_EQ(d.nlines, 3);
    dump_free(&d);
    gate_fini(&g);
    fixture_close(&f);
}

TEST(queue_full_block_times_out)
{
    fixture_t f;
    ASSERT(fixture_open(&f));
    gate_store_t g;
    gate_init(&g, f.store);
    gate_set(&g, true, 0);
    atomic_store(&fake_now, T0);
    ag_usage_log_options_t o = gate_opts(&g);
    o.queue_full_policy = AG_USAGE_BLOCK;
    o.block_timeout_ms = 30;
    ag_usage_log_t *log;
    ASSERT_EQ(ag_usage_log_open(&o, &log), 0);
    ASSERT(fill_queue_behind_gate(&g, log));
    ag_usage_entry_t e = entry("q3");
    int64_t t0 = ag_mono_us();
    ASSERT_EQ(ag_usage_log_append(log, &e), AG_EFULL);
    ASSERT(ag_mono_us() - t0 >= 25 * 1000); /* it did wait, for about the timeout */
    ag_usage_log_stats_t st;
    ag_usage_log_stats(log, &st);
    ASSERT_EQ(st.blocked, 1);
    ASSERT_EQ(st.dropped, 1);
    ASSERT_EQ(st.accepted, 3);
    gate_set(&g, false, 0);
    ag_usage_log_free(log);
    gate_fini(&g);
    fixture_close(&f);
}

static void *append_one(void *arg)
{
    ag_usage_log_t *log = arg;
    ag_usage_entry_t e = entry("waiter");
    return (void *)(intptr_t)ag_usage_log_append(log, &e);
}

TEST(queue_full_block_waits_for_room)
{
    fixture_t f;
    ASSERT(fixture_open(&f));
    gate_store_t g;
    gate_init(&g, f.store);
    gate_set(&g, true, 0);
    atomic_store(&fake_now, T0);
    ag_usage_log_options_t o = gate_opts(&g);
    o.queue_full_policy = AG_USAGE_BLOCK;
    o.block_timeout_ms = 20000;
    ag_usage_log_t *log;
    ASSERT_EQ(ag_usage_log_open(&o, &log), 0);
    ASSERT(fill_queue_behind_gate(&g, log));
    pthread_t th;
    ASSERT_EQ(pthread_create(&th, NULL, append_one, log), 0);
    ASSERT(wait_stat(log, offsetof(ag_usage_log_stats_t, blocked), 1));
    gate_set(&g, false, 0); /* the writer drains: room for the waiter */
    void *ret;
    pthread_join(th, &ret);
    ASSERT_EQ((intptr_t)ret, 0);
    ag_usage_log_close(log);
    ag_usage_log_stats_t st;
    ag_usage_log_stats(log, &st);
    ASSERT_EQ(st.accepted, 4);
    ASSERT_EQ(st.written, 4);
    ASSERT_EQ(st.blocked, 1);
    ASSERT_EQ(st.dropped, 0);
    ag_usage_log_free(log);
    gate_fini(&g);
    fixture_close(&f);
}

TEST(failing_store_backpressure_then_recovery)
{
    /* While puts fail, the writer keeps at most max_retained bytes; beyond
     * that the queue fills and the policy refuses new entries. Nothing that
     * was accepted is lost once the store recovers. */
    fixture_t f;
    ASSERT(fixture_open(&f));
    gate_store_t g;
    gate_init(&g, f.store);
    gate_set(&g, false, AG_OBJ_EDISK_FULL);
    atomic_store(&fake_now, T0);
    ag_usage_log_options_t o = base_opts(&g.base);
    o.queue_capacity = 4;
    o.max_retained_bytes = 1000; /* about three lines */
    ag_usage_log_t *log;
    ASSERT_EQ(ag_usage_log_open(&o, &log), 0);
    int accepted = 0, refused = 0;
    for (int i = 0; i < 40; i++) {
        char rid[32];
        snprintf(rid, sizeof(rid), "b%02d", i);
        ag_usage_entry_t e = entry(rid);
        int rc = ag_usage_log_append(log, &e);
        if (rc == 0)
            accepted++;
        else if (rc == AG_EFULL)
            refused++;
        atomic_fetch_add(&fake_now, 1000);
        (void)ag_usage_log_tick(log); /* due: seals and tries the put, which fails */
    }
    ag_usage_log_stats_t st;
    ag_usage_log_stats(log, &st);
    ASSERT_EQ(accepted + refused, 40);
    ASSERT(refused > 0);
    ASSERT_EQ(st.dropped, refused);
    ASSERT_EQ(st.accepted, accepted);
    ASSERT_EQ(st.written, 0);
    ASSERT(st.write_errors >= 1);
    ASSERT(st.retained_bytes >= 1000);
    ASSERT(st.retained_bytes < 1000 + 600); /* the cap overshoots by less than one line */
    ASSERT_EQ(st.queued, accepted);
    ASSERT_EQ(ag_usage_log_flush(log), AG_OBJ_EDISK_FULL);

    gate_set(&g, false, 0);
    ASSERT_EQ(ag_usage_log_flush(log), 0);
    ag_usage_log_stats(log, &st);
    ASSERT_EQ(st.written, accepted);
    ASSERT_EQ(st.queued, 0);
    ASSERT_EQ(st.retained_bytes, 0);
    ag_usage_log_free(log);
    dump_t d;
    ASSERT_EQ(dump_store(f.store, &d), 0);
    ASSERT_EQ(d.nlines, accepted);
    /* accepted entries are the first ones, in order, each once */
    for (size_t i = 0; i < d.nlines; i++) {
        char rid[32];
        snprintf(rid, sizeof(rid), "b%02zu", i);
        ASSERT_STREQ(jstr(d.lines[i], "requestId"), rid);
    }
    dump_free(&d);
    gate_fini(&g);
    fixture_close(&f);
}

TEST(write_failure_keeps_and_retries)
{
    /* A real directory bucket whose folder disappeared: puts fail. */
    fixture_t f;
    ASSERT(fixture_open(&f));
    atomic_store(&fake_now, T0);
    ag_usage_log_options_t o = base_opts(f.store);
    ag_usage_log_t *log;
    ASSERT_EQ(ag_usage_log_open(&o, &log), 0);
    ASSERT_EQ(nftw(f.bucket, rm_entry, 16, FTW_DEPTH | FTW_PHYS), 0);
    for (int i = 0; i < 10; i++) {
        char rid[32];
        snprintf(rid, sizeof(rid), "w%d", i);
        ag_usage_entry_t e = entry(rid);
        ASSERT_EQ(ag_usage_log_append(log, &e), 0);
    }
    ASSERT(ag_usage_log_flush(log) < 0);
    atomic_store(&fake_now, T0 + 1000);
    ASSERT(ag_usage_log_tick(log) < 0); /* due by age, fails again */
    ag_usage_log_stats_t st;
    ag_usage_log_stats(log, &st);
    ASSERT_EQ(st.write_errors, 2);
    ASSERT_EQ(st.written, 0);
    ASSERT_EQ(st.queued, 10);

    ASSERT_EQ(mkdir(f.bucket, 0700), 0);
    ASSERT_EQ(ag_usage_log_tick(log), 0); /* the retry is an interval after the failure */
    ag_usage_log_stats(log, &st);
    ASSERT_EQ(st.written, 0);
    atomic_store(&fake_now, T0 + 2000);
    ASSERT_EQ(ag_usage_log_tick(log), 0); /* retried by the writer itself */
    ag_usage_log_stats(log, &st);
    ASSERT_EQ(st.written, 10);
    ASSERT_EQ(st.write_errors, 2);
    ASSERT_EQ(st.flushes, 1);
    ag_usage_log_free(log);
    dump_t d;
    ASSERT_EQ(dump_store(f.store, &d), 0);
    ASSERT_EQ(d.nkeys, 1);
    ASSERT_EQ(d.nlines, 10);
    dump_free(&d);
    fixture_close(&f);
}

TEST(write_failure_file_size_limit)
{
    /* A full disk, by RLIMIT_FSIZE, in a child so the limit stays there. */
    fixture_t f;
    ASSERT(fixture_open(&f));
    fflush(NULL);
    pid_t pid = fork();
    ASSERT(pid >= 0);
    if (pid == 0) {
        int code = 0;
        atomic_store(&fake_now, T0);
        ag_usage_log_options_t o = base_opts(f.store);
        ag_usage_log_t *log;
        if (ag_usage_log_open(&o, &log) != 0)
            _exit(10);
        struct rlimit lim;
        getrlimit(RLIMIT_FSIZE, &lim);
        struct rlimit small = lim;
        small.rlim_cur = 4096;
        setrlimit(RLIMIT_FSIZE, &small);
        for (int i = 0; i < 100; i++) { /* ~33 KB of NDJSON in one object */
            char rid[32];
            snprintf(rid, sizeof(rid), "r%d", i);
            ag_usage_entry_t e = entry(rid);
            if (ag_usage_log_append(log, &e) != 0)
                code = 11;
        }
        if (code == 0 && ag_usage_log_flush(log) != AG_OBJ_EDISK_FULL)
            code = 12;
        setrlimit(RLIMIT_FSIZE, &lim);
        if (code == 0 && ag_usage_log_flush(log) != 0)
            code = 13;
        ag_usage_log_stats_t st;
        ag_usage_log_stats(log, &st);
        if (code == 0 && (st.written != 100 || st.write_errors != 1))
            code = 14;
        ag_usage_log_free(log);
        _exit(code);
    }
    int status;
    ASSERT_EQ(waitpid(pid, &status, 0), pid);
    ASSERT(WIFEXITED(status));
    ASSERT_EQ(WEXITSTATUS(status), 0);
    dump_t d;
    ASSERT_EQ(dump_store(f.store, &d), 0);
    ASSERT_EQ(d.nkeys, 1);
    ASSERT_EQ(d.nlines, 100);
    ASSERT_EQ(d.bad_lines, 0);
    dump_free(&d);
    fixture_close(&f);
}

TEST(close_spills_when_store_keeps_failing)
{
    fixture_t f;
    ASSERT(fixture_open(&f));
    gate_store_t g;
    gate_init(&g, f.store);
    gate_set(&g, false, AG_OBJ_EDISK_FULL);
    atomic_store(&fake_now, T0);
    ag_usage_log_options_t o = base_opts(&g.base);
    o.close_timeout_ms = 30;
    ag_usage_log_t *log;
    ASSERT_EQ(ag_usage_log_open(&o, &log), 0);
    for (int i = 0; i < 3; i++) {
        char rid[32];
        snprintf(rid, sizeof(rid), "spill-%d", i);
        ag_usage_entry_t e = entry(rid);
        ASSERT_EQ(ag_usage_log_append(log, &e), 0);
    }
    /* the server log is stderr: catch it in a file */
    char path[96];
    snprintf(path, sizeof(path), "%s/stderr", f.dir);
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
    ASSERT(fd >= 0);
    fflush(stderr);
    int saved = dup(2);
    dup2(fd, 2);
    ag_usage_log_close(log);
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    char text[16384];
    ssize_t n = pread(fd, text, sizeof(text) - 1, 0);
    close(fd);
    ASSERT(n > 0);
    text[n] = '\0';
    ag_usage_log_stats_t st;
    ag_usage_log_stats(log, &st);
    ASSERT_EQ(st.lost, 3);
    ASSERT_EQ(st.written, 0);
    ASSERT_EQ(st.queued, 0);
    ASSERT(st.write_errors >= 2); /* it did retry before giving up */
    ag_usage_log_free(log);
    int spilled = 0;
    for (const char *p = text; (p = strstr(p, "usage-log unwritten: {")) != NULL; p++) {
        const char *json = p + strlen("usage-log unwritten: ");
        const char *nl = strchr(json, '\n');
        ASSERT(nl != NULL);
        json_error_t err;
        json_t *j = json_loadb(json, (size_t)(nl - json), 0, &err);
        ASSERT(j != NULL);
        char rid[32];
        snprintf(rid, sizeof(rid), "spill-%d", spilled);
        ASSERT_STREQ(jstr(j, "requestId"), rid);
        json_decref(j);
        spilled++;
    }
    ASSERT_EQ(spilled, 3);
    gate_fini(&g);
    fixture_close(&f);
}

/* ---- the spool ---------------------------------------------------------- */

/* Objects in the spool folder. */
static size_t spool_count(const char *dir)
{
    ag_objstore_t *sp;
    if (ag_objstore_open_fs(dir, &sp) < 0)
        return (size_t)-1;
    ag_obj_list_result_t r;
    size_t n = ag_objstore_list(sp, NULL, &r) == 0 ? r.count : (size_t)-1;
    if (n != (size_t)-1)
        ag_obj_list_result_free(&r);
    ag_objstore_close(sp);
    return n;
}

static void append_n(ag_usage_log_t *log, const char *prefix, int from, int to)
{
    for (int i = from; i < to; i++) {
        char rid[32];
        snprintf(rid, sizeof(rid), "%s%d", prefix, i);
        ag_usage_entry_t e = entry(rid);
        ASSERT_EQ(ag_usage_log_append(log, &e), 0);
    }
}

TEST(spool_takes_failed_batches_and_drains_in_order)
{
    fixture_t f;
    ASSERT(fixture_open(&f));
    gate_store_t g;
    gate_init(&g, f.store);
    gate_set(&g, false, -ECONNREFUSED);
    atomic_store(&fake_now, T0);
    char spool[128];
    snprintf(spool, sizeof(spool), "%s/spool", f.dir);
    ag_usage_log_options_t o = base_opts(&g.base);
    o.spool_dir = spool;
    ag_usage_log_t *log;
    ASSERT_EQ(ag_usage_log_open(&o, &log), 0);
    append_n(log, "s", 0, 5);
    /* retried in memory, then spooled after the third failed put */
    for (int i = 0; i < AG_USAGE_SPOOL_AFTER; i++) {
        ag_usage_log_stats_t st;
        ag_usage_log_stats(log, &st);
        ASSERT_EQ(st.spooled, 0);
        ASSERT(ag_usage_log_flush(log) < 0);
    }
    ag_usage_log_stats_t st;
    ag_usage_log_stats(log, &st);
    ASSERT_EQ(st.spooled, 5);
    ASSERT_EQ(st.queued, 5);
    ASSERT_EQ(st.retained_bytes, 0);
    ASSERT(st.spool_bytes > 0);
    ASSERT_EQ(g.puts, AG_USAGE_SPOOL_AFTER);
    ASSERT_EQ(spool_count(spool), 1);

    /* The store is down: the spooled batch is the probe, the new one goes to
     * the spool without a put of its own. */
    append_n(log, "s", 5, 10);
    ASSERT(ag_usage_log_flush(log) < 0);
    ag_usage_log_stats(log, &st);
    ASSERT_EQ(g.puts, AG_USAGE_SPOOL_AFTER + 1);
    ASSERT_EQ(st.spooled, 10);
    ASSERT_EQ(st.written, 0);
    ASSERT_EQ(spool_count(spool), 2);

    /* Back: oldest first, each spool file removed once its put succeeded. */
    gate_set(&g, false, 0);
    ASSERT_EQ(ag_usage_log_flush(log), 0);
    ag_usage_log_stats(log, &st);
    ASSERT_EQ(st.written, 10);
    ASSERT_EQ(st.queued, 0);
    ASSERT_EQ(st.spool_bytes, 0);
    ASSERT_EQ(st.recovered, 0);
    ASSERT_EQ(spool_count(spool), 0);
    ag_usage_log_free(log);
    dump_t d;
    ASSERT_EQ(dump_store(f.store, &d), 0);
    ASSERT_EQ(d.nkeys, 2);
    ASSERT_EQ(d.nlines, 10);
    for (size_t i = 0; i < d.nlines; i++) {
        char rid[32];
        snprintf(rid, sizeof(rid), "s%zu", i);
        ASSERT_STREQ(jstr(d.lines[i], "requestId"), rid);
    }
    dump_free(&d);
    gate_fini(&g);
    fixture_close(&f);
}

TEST(spool_survives_close_and_drains_at_next_open_once)
{
    /* The puts land but their answers are lost: the spool then holds batches
     * the store has too. Draining re-puts them under the same keys, so every
     * entry is in the store exactly once. */
    fixture_t f;
    ASSERT(fixture_open(&f));
    gate_store_t g;
    gate_init(&g, f.store);
    gate_set(&g, false, -ETIMEDOUT);
    g.land_then_fail = true;
    atomic_store(&fake_now, T0);
    char spool[128];
    snprintf(spool, sizeof(spool), "%s/spool", f.dir);
    ag_usage_log_options_t o = base_opts(&g.base);
    o.spool_dir = spool;
    o.close_timeout_ms = 30;
    ag_usage_log_t *log;
    ASSERT_EQ(ag_usage_log_open(&o, &log), 0);
    append_n(log, "c", 0, 3);
    ag_usage_log_close(log); /* one failed put, then the spool at once */
    ag_usage_log_stats_t st;
    ag_usage_log_stats(log, &st);
    ASSERT_EQ(st.lost, 0);
    ASSERT_EQ(st.spooled, 3);
    ASSERT_EQ(st.queued, 3);
    ASSERT_EQ(st.write_errors, 1);
    ag_usage_log_free(log);
    ASSERT_EQ(spool_count(spool), 1);

    gate_set(&g, false, 0);
    g.land_then_fail = false;
    ASSERT_EQ(ag_usage_log_open(&o, &log), 0);
    ASSERT_EQ(ag_usage_log_flush(log), 0);
    ag_usage_log_stats(log, &st);
    ASSERT_EQ(st.recovered, 3);
    ASSERT_EQ(st.written, 0);
    ASSERT_EQ(st.spool_bytes, 0);
    ag_usage_log_free(log);
    ASSERT_EQ(spool_count(spool), 0);
    dump_t d;
    ASSERT_EQ(dump_store(f.store, &d), 0);
    ASSERT_EQ(d.nkeys, 1);
    ASSERT_EQ(d.nlines, 3);
    for (size_t i = 0; i < d.nlines; i++) {
        char rid[32];
        snprintf(rid, sizeof(rid), "c%zu", i);
        ASSERT_STREQ(jstr(d.lines[i], "requestId"), rid);
    }
    dump_free(&d);
    gate_fini(&g);
    fixture_close(&f);
}

/* Cuts the end off the one object file of the spool (in a shard folder);
 * its path goes to path[cap]. */
static bool spool_corrupt_one(const char *dir, char *path, size_t cap)
{
    DIR *top = opendir(dir);
    if (top == NULL)
        return false;
    bool done = false;
    struct dirent *de;
    while (!done && (de = readdir(top)) != NULL) {
        if (de->d_name[0] == '.')
            continue;
        char shard[512];
        snprintf(shard, sizeof(shard), "%s/%s", dir, de->d_name);
        DIR *sd = opendir(shard);
        if (sd == NULL)
            continue;
        struct dirent *fe;
        while (!done && (fe = readdir(sd)) != NULL) {
            if (fe->d_name[0] == '.')
                continue;
            char file[1024];
            snprintf(file, sizeof(file), "%s/%s", shard, fe->d_name);
            struct stat fst;
            /* the header and metadata stay (listings see it), the bytes are short */
            done = stat(file, &fst) == 0 && fst.st_size > 5 && truncate(file, fst.st_size - 5) == 0;
            snprintf(path, cap, "%s", file);
        }
        closedir(sd);
    }
    closedir(top);
    return done;
}

TEST(spool_unreadable_file_stays_and_does_not_block)
{
    fixture_t f;
    ASSERT(fixture_open(&f));
    gate_store_t g;
    gate_init(&g, f.store);
    gate_set(&g, false, -ECONNREFUSED);
    atomic_store(&fake_now, T0);
    char spool[128];
    snprintf(spool, sizeof(spool), "%s/spool", f.dir);
    ag_usage_log_options_t o = base_opts(&g.base);
    o.spool_dir = spool;
    ag_usage_log_t *log;
    ASSERT_EQ(ag_usage_log_open(&o, &log), 0);
    append_n(log, "u", 0, 2);
    for (int i = 0; i < AG_USAGE_SPOOL_AFTER; i++)
        ASSERT(ag_usage_log_flush(log) < 0);
    ASSERT_EQ(spool_count(spool), 1);
    char broken[1024];
    ASSERT(spool_corrupt_one(spool, broken, sizeof(broken)));
    /* The store is back: the broken file is left alone, new batches still
     * reach the store, and flush says so only when they did. */
    gate_set(&g, false, 0);
    append_n(log, "v", 0, 2);
    ASSERT_EQ(ag_usage_log_flush(log), 0);
    ag_usage_log_stats_t st;
    ag_usage_log_stats(log, &st);
    ASSERT_EQ(st.written, 2);
    ASSERT_EQ(st.lost, 0);
    ASSERT_EQ(st.queued, 2); /* u0, u1: still in the broken file, never deleted */
    ag_usage_log_free(log);
    ASSERT_EQ(access(broken, F_OK),
              0); /* the directory backend does not list it; nobody deletes it */
    dump_t d;
    ASSERT_EQ(dump_store(f.store, &d), 0);
    ASSERT_EQ(d.nlines, 2);
    ASSERT_STREQ(jstr(d.lines[0], "requestId"), "v0");
    dump_free(&d);
    gate_fini(&g);
    fixture_close(&f);
}

TEST(spool_full_keeps_batches_in_memory)
{
    fixture_t f;
    ASSERT(fixture_open(&f));
    gate_store_t g;
    gate_init(&g, f.store);
    gate_set(&g, false, -ECONNREFUSED);
    atomic_store(&fake_now, T0);
    char spool[128];
    snprintf(spool, sizeof(spool), "%s/spool", f.dir);
    ag_usage_log_options_t o = base_opts(&g.base);
    o.spool_dir = spool;
    o.spool_max_bytes = 64; /* less than one line */
    ag_usage_log_t *log;
    ASSERT_EQ(ag_usage_log_open(&o, &log), 0);
    append_n(log, "f", 0, 2);
    for (int i = 0; i < AG_USAGE_SPOOL_AFTER; i++)
        ASSERT(ag_usage_log_flush(log) < 0);
    ag_usage_log_stats_t st;
    ag_usage_log_stats(log, &st);
    ASSERT_EQ(st.spool_full, 1);
    ASSERT_EQ(st.spooled, 0);
    ASSERT(st.retained_bytes > 0);
    ASSERT_EQ(st.queued, 2);
    ASSERT_EQ(spool_count(spool), 0);
    gate_set(&g, false, 0);
    ASSERT_EQ(ag_usage_log_flush(log), 0);
    ag_usage_log_stats(log, &st);
    ASSERT_EQ(st.written, 2);
    ASSERT_EQ(st.lost, 0);
    ag_usage_log_free(log);
    gate_fini(&g);
    fixture_close(&f);
}

TEST(kill9_loses_only_the_unflushed_window)
{
    fixture_t f;
    ASSERT(fixture_open(&f));
    int pfd[2];
    ASSERT_EQ(pipe(pfd), 0);
    fflush(NULL);
    pid_t pid = fork();
    ASSERT(pid >= 0);
    if (pid == 0) {
        close(pfd[0]);
        atomic_store(&fake_now, T0);
        ag_usage_log_options_t o = base_opts(f.store);
        ag_usage_log_t *log;
        if (ag_usage_log_open(&o, &log) != 0)
            _exit(10);
        for (int i = 0; i < 150; i++) {
            char rid[32];
            snprintf(rid, sizeof(rid), "k%d", i);
            ag_usage_entry_t e = entry(rid);
            if (ag_usage_log_append(log, &e) != 0)
                _exit(11);
            if (i == 99 && ag_usage_log_flush(log) != 0)
                _exit(12);
        }
        /* 50 entries accepted within the current interval, then kill -9 */
        if (write(pfd[1], "r", 1) != 1)
            _exit(13);
        for (;;)
            pause();
    }
    close(pfd[1]);
    char c;
    ASSERT_EQ(read(pfd[0], &c, 1), 1);
    close(pfd[0]);
    kill(pid, SIGKILL);
    int status;
    ASSERT_EQ(waitpid(pid, &status, 0), pid);
    ASSERT(WIFSIGNALED(status));
    dump_t d;
    ASSERT_EQ(dump_store(f.store, &d), 0);
    ASSERT_EQ(d.bad_lines, 0); /* no torn object: puts are atomic */
    ASSERT_EQ(d.nlines, 100);
    dump_free(&d);
    fixture_close(&f);
}

TEST(set_prices_applies_to_later_entries)
{
    fixture_t f;
    ASSERT(fixture_open(&f));
    atomic_store(&fake_now, T0);
    ag_usage_log_options_t o = base_opts(f.store);
    o.prices = prices;
    o.nprices = AG_ARRAY_LEN(prices);
    ag_usage_log_t *log;
    ASSERT_EQ(ag_usage_log_open(&o, &log), 0);
    ag_usage_entry_t e = entry("p1");
    e.input_tokens = 1000000;
    e.output_tokens = 0;
    ASSERT_EQ(ag_usage_log_append(log, &e), 0);
    ASSERT_EQ(ag_usage_log_flush(log), 0);
    char model[] = "claude-haiku-4-5"; /* the table is copied: this may change */
    ag_price_t np[] = {{model, 2.5, 0, 0, 0}};
    ASSERT_EQ(ag_usage_log_set_prices(log, np, 1), 0);
    model[0] = 'X';
    e = entry("p2");
    e.input_tokens = 1000000;
    e.output_tokens = 0;
    ASSERT_EQ(ag_usage_log_append(log, &e), 0);
    ASSERT_EQ(ag_usage_log_flush(log), 0);
    ASSERT_EQ(ag_usage_log_set_prices(log, NULL, 0), 0); /* no table: no cost */
    ASSERT_EQ(ag_usage_log_append(log, &e), 0);
    ASSERT_EQ(ag_usage_log_flush(log), 0);
    ag_usage_log_free(log);
    dump_t d;
    ASSERT_EQ(dump_store(f.store, &d), 0);
    ASSERT_EQ(d.nlines, 3);
    ASSERT(json_number_value(json_object_get(d.lines[0], "costUsd")) == 1.0);
    ASSERT(json_number_value(json_object_get(d.lines[1], "costUsd")) == 2.5);
    ASSERT(json_number_value(json_object_get(d.lines[2], "costUsd")) == 0);
    dump_free(&d);
    fixture_close(&f);
}

TEST(lifecycle_and_arguments)
{
    fixture_t f;
    ASSERT(fixture_open(&f));
    ag_usage_log_t *log = (ag_usage_log_t *)&log;
    ag_usage_log_options_t o = {0};
    ASSERT_EQ(ag_usage_log_open(&o, &log), AG_EINVALID); /* no store */
    ASSERT(log == NULL);
    o.store = f.store;
    o.instance_id = "bad/id";
    ASSERT_EQ(ag_usage_log_open(&o, &log), AG_EINVALID);
    o.instance_id = "";
    ASSERT_EQ(ag_usage_log_open(&o, &log), AG_EINVALID);
    o.instance_id = NULL;
    o.queue_full_policy = (ag_usage_queue_full_policy_t)7;
    ASSERT_EQ(ag_usage_log_open(&o, &log), AG_EINVALID);
    o.queue_full_policy = AG_USAGE_DROP;
    ASSERT_EQ(ag_usage_log_open(&o, &log), 0);
    ASSERT_EQ(ag_usage_log_append(log, NULL), AG_EINVALID);
    ag_usage_entry_t e = entry("only");
    ASSERT_EQ(ag_usage_log_append(log, &e), 0);
    ag_usage_log_close(log); /* flushes: nothing accepted is left behind */
    ag_usage_log_stats_t st;
    ag_usage_log_stats(log, &st);
    ASSERT_EQ(st.written, 1);
    ASSERT_EQ(ag_usage_log_append(log, &e), AG_USAGE_ECLOSED);
    ASSERT_EQ(ag_usage_log_flush(log), AG_USAGE_ECLOSED);
    ASSERT_EQ(ag_usage_log_tick(log), AG_USAGE_ECLOSED);
    ag_usage_log_close(log); /* idempotent */
    ag_usage_log_stats(log, &st);
    ASSERT_EQ(st.accepted, 1);
    ASSERT_STREQ(ag_strerror(AG_USAGE_ECLOSED), "usage log is closed");
    ag_usage_log_free(log);
    ag_usage_log_free(NULL);
    ag_usage_log_close(NULL);

    /* free without close also writes everything */
    ASSERT_EQ(ag_usage_log_open(&o, &log), 0);
    ASSERT_EQ(ag_usage_log_append(log, &e), 0);
    ag_usage_log_free(log);
    dump_t d;
    ASSERT_EQ(dump_store(f.store, &d), 0);
    ASSERT_EQ(d.nlines, 2);
    dump_free(&d);
    fixture_close(&f);
}

AG_TESTS(
    AG_TEST_ENTRY(cost_usd) AG_TEST_ENTRY(entry_set_str_truncates_on_characters) AG_TEST_ENTRY(
        entry_fields_round_trip) AG_TEST_ENTRY(threads_2000_entries_exactly_once)
        AG_TEST_ENTRY(flush_by_size) AG_TEST_ENTRY(flush_by_age) AG_TEST_ENTRY(
            flush_by_age_real_clock) AG_TEST_ENTRY(keys_by_utc_day_and_time)
            AG_TEST_ENTRY(several_opens_never_collide) AG_TEST_ENTRY(queue_full_drop) AG_TEST_ENTRY(
                queue_full_block_times_out) AG_TEST_ENTRY(queue_full_block_waits_for_room)
                AG_TEST_ENTRY(failing_store_backpressure_then_recovery) AG_TEST_ENTRY(
                    write_failure_keeps_and_retries) AG_TEST_ENTRY(write_failure_file_size_limit)
                    AG_TEST_ENTRY(close_spills_when_store_keeps_failing)
                        AG_TEST_ENTRY(spool_takes_failed_batches_and_drains_in_order)
                            AG_TEST_ENTRY(spool_survives_close_and_drains_at_next_open_once)
                                AG_TEST_ENTRY(spool_full_keeps_batches_in_memory)
                                    AG_TEST_ENTRY(spool_unreadable_file_stays_and_does_not_block)
                                        AG_TEST_ENTRY(kill9_loses_only_the_unflushed_window)
                                            AG_TEST_ENTRY(set_prices_applies_to_later_entries)
                                                AG_TEST_ENTRY(lifecycle_and_arguments))
