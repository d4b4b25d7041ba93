/* SPDX-License-Identifier: MIT
 *
 * test_stats.c: the stats engine against a real directory bucket holding
 * usage-log objects of known content (named as the usage log names them, over
 * three day folders, with entries outside the window, malformed lines, lines
 * written before route/cpuMs/attempts/key existed): exact counts, sums and
 * groups against a reference computed here, percentiles within
 * AG_HIST_REL_ERROR of the sorted values, the exact JSON, the group cap,
 * window and grouping names.
 */
#include "util/platform.h"

#include <errno.h>
#include <ftw.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "harness.h"
#include "obs/stats.h"
#include "store/objstore.h"
#include "store/usage_log.h"
#include "util/buf.h"
#include "util/errors.h"
#include "util/hist.h"

/* ---- fixture -------------------------------------------------------------- */

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
    snprintf(f->dir, sizeof(f->dir), "/tmp/ag_test_stats_XXXXXX");
    if (mkdtemp(f->dir) == NULL)
        return false;
    snprintf(f->bucket, sizeof(f->bucket), "%s/usage-logs", f->dir);
    return ag_objstore_open_fs(f->bucket, &f->store) == 0;
}

static void fixture_close(fixture_t *f)
{
    ag_objstore_close(f->store);
    nftw(f->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

#define HOUR 3600000LL
/* 2026-03-04T00:00:00.000Z */
#define D1 1772582400000LL
#define D0 (D1 - 24 * HOUR)
#define D2 (D1 + 24 * HOUR)

static void iso(int64_t ms, char out[64])
{
    time_t s = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&s, &tm);
    snprintf(out, 64, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1,
             tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(ms % 1000));
}

/* Puts `lines` as a usage-log object: logs/YYYY/MM/DD/<first-ms>-<instance>-<seq>.ndjson. */
static int put_object(ag_objstore_t *s, int64_t first_ms, unsigned seq, const char *lines,
                      size_t len)
{
    char ts[64], key[160];
    iso(first_ms, ts);
    snprintf(key, sizeof(key), "logs/%.4s/%.2s/%.2s/%013lld-test0001-5eed5eed-%010u.ndjson", ts,
             ts + 5, ts + 8, (long long)first_ms, seq);
    ag_obj_put_opts_t po = {.content_type = "application/x-ndjson"};
    return ag_objstore_put(s, key, strlen(key), lines, len, &po, NULL);
}

/* ---- the exact JSON of a small log ----------------------------------------- */

static const char tiny[] =
    "{\"timestamp\":\"2026-03-04T12:00:00.000Z\",\"model\":\"m1\",\"inputTokens\":10,"
    "\"outputTokens\":20,\"status\":200,\"cached\":false,\"latencyMs\":0.040,\"client\":\"c1\","
    "\"costUsd\":0.000123,\"route\":\"/api/generate\",\"cpuMs\":0.005,\"attempts\":1}\n"
    "{\"timestamp\":\"2026-03-04T12:30:00.000Z\",\"model\":\"m2\",\"inputTokens\":5,"
    "\"outputTokens\":0,\"status\":502,\"cached\":false,\"latencyMs\":0.010,\"client\":\"c2\","
    "\"costUsd\":0.5,\"route\":\"/v1/messages\",\"cpuMs\":0.007,\"attempts\":2,\"key\":\"k\"}\n"
    "{\"timestamp\":\"2026-03-04T13:10:00.000Z\",\"model\":\"m1\",\"inputTokens\":0,"
    "\"outputTokens\":0,\"status\":200,\"cached\":true,\"latencyMs\":0.020,\"client\":\"c1\","
    "\"costUsd\":0,\"route\":\"/api/generate\",\"cpuMs\":0.003,\"attempts\":0}\n"
    /* outside the window [12:00, 14:00) */
    "{\"timestamp\":\"2026-03-04T14:00:00.000Z\",\"model\":\"m1\",\"status\":200}\n"
    "{\"timestamp\":\"2026-03-04T11:59:59.999Z\",\"model\":\"m1\",\"status\":200}\n";

static const char tiny_json[] =
    "{\"since\":\"2026-03-04T12:00:00.000Z\",\"until\":\"2026-03-04T14:00:00.000Z\","
    "\"requests\":3,\"errors\":1,\"errorRate\":0.333333,\"latencyMs\":{\"p50\":0.020,"
    "\"p99\":0.040},\"cpuMs\":{\"p50\":0.005,\"p99\":0.007},\"upstreamRequests\":3,"
    "\"cacheHits\":1,\"tokens\":{\"input\":15,\"output\":20},\"costUsd\":0.500123,\"skipped\":0";

static const char tiny_hours[] =
    ",\"groups\":[{\"key\":\"2026-03-04T12:00:00Z\",\"requests\":2,\"errors\":1,\"errorRate\":0.5,"
    "\"latencyMs\":{\"p50\":0.010,\"p99\":0.040},\"cpuMs\":{\"p50\":0.005,\"p99\":0.007},"
    "\"upstreamRequests\":3,\"cacheHits\":0,\"tokens\":{\"input\":15,\"output\":20},"
    "\"costUsd\":0.500123},"
    "{\"key\":\"2026-03-04T13:00:00Z\",\"requests\":1,\"errors\":0,\"errorRate\":0,"
    "\"latencyMs\":{\"p50\":0.020,\"p99\":0.020},\"cpuMs\":{\"p50\":0.003,\"p99\":0.003},"
    "\"upstreamRequests\":0,\"cacheHits\":1,\"tokens\":{\"input\":0,\"output\":0},"
    "\"costUsd\":0}]}";

TEST(exact_json)
{
    fixture_t f;
    ASSERT(fixture_open(&f));
    ASSERT_EQ(put_object(f.store, D1 + 12 * HOUR - 1, 0, tiny, strlen(tiny)), 0);
    ag_buf_t out;
    ag_buf_init(&out, 0);
    ASSERT_EQ(ag_stats_run(f.store, D1 + 12 * HOUR, D1 + 14 * HOUR, AG_STATS_BY_NONE, &out), 0);
    char want[2048];
    snprintf(want, sizeof(want), "%s}", tiny_json);
    ASSERT_MEMEQ(out.data, out.len, want);

    ag_buf_reset(&out);
    ASSERT_EQ(ag_stats_run(f.store, D1 + 12 * HOUR, D1 + 14 * HOUR, AG_STATS_BY_HOUR, &out), 0);
    snprintf(want, sizeof(want), "%s%s", tiny_json, tiny_hours);
    ASSERT_MEMEQ(out.data, out.len, want);

    /* by model: most requests first */
    ag_buf_reset(&out);
    ASSERT_EQ(ag_stats_run(f.store, D1 + 12 * HOUR, D1 + 14 * HOUR, AG_STATS_BY_MODEL, &out), 0);
    ASSERT(strstr(ag_buf_cstr(&out), ",\"groups\":[{\"key\":\"m1\",\"requests\":2,") != NULL);
    ASSERT(strstr(out.data, "},{\"key\":\"m2\",\"requests\":1,\"errors\":1,\"errorRate\":1,") !=
           NULL);

    /* the text table: a window line, a header, one row per group, a total */
    ag_stats_query_t q = {
        .since_ms = D1 + 12 * HOUR, .until_ms = D1 + 14 * HOUR, .by = AG_STATS_BY_KEY};
    ag_stats_result_t r;
    ASSERT_EQ(ag_stats_collect(f.store, &q, &r), 0);
    ag_buf_reset(&out);
    ASSERT_EQ(ag_stats_text(&r, &out), 0);
    const char *t = ag_buf_cstr(&out);
    ASSERT(strncmp(t, "usage log from 2026-03-04T12:00:00.000Z to 2026-03-04T14:00:00.000Z\n",
                   68) == 0);
    ASSERT(strstr(t, "\nKEY    REQUESTS  ERROR RATE  P50 MS  P99 MS  CPU P50 MS  CPU P99 MS  "
                     "UPSTREAM  CACHE HITS  TOKENS IN  TOKENS OUT  COST USD\n") != NULL);
    ASSERT(strstr(t, "\n              2       0.00%     0.0     0.0       0.003       0.005  "
                     "       1           1         10          20  0.000123\n") != NULL);
    ASSERT(strstr(t, "\nk             1     100.00%") != NULL);
    ASSERT(strstr(t, "\ntotal         3      33.33%") != NULL);
    ag_stats_result_fini(&r);
    ag_buf_fini(&out);
    fixture_close(&f);
}

/* ---- a generated log, with a reference summed here ------------------------- */

typedef struct ref {
    int64_t ts;
    const char *model, *route, *client, *key;
    int status;
    bool cached;
    bool old;           /* written before route, cpuMs, attempts and key existed */
    bool has_lat;       /* false only for the hand-written minimal line */
    uint32_t lat_ms;    /* latencyMs */
    uint32_t cpu_us;    /* cpuMs * 1000 */
    uint32_t attempts;  /* not written when old */
    int64_t in, out;    /* tokens */
    int64_t cost_nusd;  /* costUsd * 1e9 */
    bool escaped_model; /* written as "claude\u002dhaiku" */
    bool exponent_cost; /* written as 4.2e-7 */
    bool extra_field;   /* with an unknown nested field */
} ref_t;

#define NREF 14000
static ref_t refs[NREF + 8];
static size_t nrefs;

static const char *const models[] = {"claude-haiku", "claude-sonnet-4-5", "claude-opus-4-1",
                                     "claude-haiku-4-5"};
static const char *const routes[] = {"/api/generate", "/v1/messages", "scheduled"};
static const char *const clients[] = {"203.0.113.1",  "203.0.113.2", "203.0.113.3", "198.51.100.7",
                                      "198.51.100.8", "192.0.2.44",  "team-key"};
static const char *const keys[] = {"", "team-a", "team-b"};

static uint64_t rng_state = 0x9E3779B97F4A7C15ULL;
static uint32_t rnd(uint32_t n)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state % n);
}

static void gen_refs(void)
{
    nrefs = 0;
    rng_state = 0x9E3779B97F4A7C15ULL;
    /* from D0 12:00 to D2 12:00, in time order (with jitter inside an object) */
    for (size_t i = 0; i < NREF; i++) {
        ref_t *r = &refs[nrefs++];
        memset(r, 0, sizeof(*r));
        r->ts = D0 + 12 * HOUR + (int64_t)i * (48 * HOUR) / NREF + rnd(5000);
        r->model = models[rnd(100) < 50 ? 0 : rnd(AG_ARRAY_LEN(models))];
        r->route = routes[rnd(AG_ARRAY_LEN(routes))];
        r->client = clients[rnd(AG_ARRAY_LEN(clients))];
        r->key = keys[rnd(AG_ARRAY_LEN(keys))];
        uint32_t st = rnd(100);
        r->status = st < 90 ? 200 : st < 94 ? 500 : st < 97 ? 502 : 400;
        r->cached = r->status == 200 && rnd(100) < 15;
        r->old = rnd(100) < 5;
        r->has_lat = true;
        r->lat_ms = r->cached ? 1 + rnd(5) : 80 + rnd(4000) + (rnd(100) == 0 ? 60000 : 0);
        r->cpu_us = 50 + rnd(3000);
        r->attempts = r->cached ? 0 : 1 + (rnd(10) == 0) + (rnd(30) == 0);
        r->in = r->cached ? 0 : 10 + rnd(2000);
        r->out = r->cached ? 0 : rnd(1000);
        r->cost_nusd = r->cached ? 0 : (int64_t)rnd(5000000);
        r->escaped_model = i % 97 == 0 && r->model == models[0];
        r->exponent_cost = i % 211 == 0 && !r->cached;
        if (r->exponent_cost)
            r->cost_nusd = 420;
        r->extra_field = i % 50 == 0;
    }
}

static void write_ref(ag_buf_t *b, const ref_t *r, unsigned id)
{
    char ts[64], cost[32];
    iso(r->ts, ts);
    if (r->exponent_cost)
        snprintf(cost, sizeof(cost), "4.2e-7");
    else
        snprintf(cost, sizeof(cost), "%lld.%09lld", (long long)(r->cost_nusd / 1000000000),
                 (long long)(r->cost_nusd % 1000000000));
    ag_buf_printf(b,
                  "{\"timestamp\":\"%s\",\"model\":\"%s\",\"promptLength\":12,"
                  "\"outputLength\":345,\"inputTokens\":%lld,\"outputTokens\":%lld,"
                  "\"cacheCreationInputTokens\":0,\"cacheReadInputTokens\":0,\"status\":%d,"
                  "\"cached\":%s,\"stream\":false,\"latencyMs\":%u,\"client\":\"%s\","
                  "\"requestId\":\"req-%u\",\"costUsd\":%s",
                  ts, r->escaped_model ? "claude\\u002dhaiku" : r->model, (long long)r->in,
                  (long long)r->out, r->status, r->cached ? "true" : "false", r->lat_ms, r->client,
                  id, cost);
    if (!r->old) {
        ag_buf_printf(b, ",\"route\":\"%s\",\"cpuMs\":%u.%03u,\"attempts\":%u", r->route,
                      r->cpu_us / 1000, r->cpu_us % 1000, r->attempts);
        if (r->key[0])
            ag_buf_printf(b, ",\"key\":\"%s\"", r->key);
    }
    if (r->extra_field)
        ag_buf_append_cstr(b, ",\"extra\":{\"a\":[1,{\"b\":\"}\\\"]\"}],\"c\":null,\"d\":-1.5e3}");
    ag_buf_append_cstr(b, "}\n");
}

/* Lines that are not entries: each counts once in `skipped`. */
static const char *const malformed[] = {
    "{\"timestamp\":\"2026-03-04T19:00:00.000Z\",\"model\":",
    "not json",
    "{\"model\":\"no timestamp\"}",
    "{\"timestamp\":\"2026-13-04T19:00:00.000Z\"}",
    "{\"timestamp\":\"2026-03-04T19:00:00.000Z\",\"status\":\"200\"}",
    "{\"timestamp\":\"2026-03-04T19:00:00.000Z\"} x",
    "{\"timestamp\":\"2026-02-30T19:00:00.000Z\"}",
    "{\"timestamp\":\"2026-03-04T19:00:00.000Z\",\"cached\":1}",
};

/* Writes the generated log: objects of up to 4000 lines per UTC day (a ~1.3
 * MiB object spans several reads), the malformed lines and two special
 * entries in D1, and objects that must not be read. */
static int write_log(ag_objstore_t *s, size_t *nskipped)
{
    ag_buf_t b;
    ag_buf_init(&b, 0);
    unsigned seq = 0;
    size_t i = 0;
    int rc = 0;
    while (i < nrefs && rc == 0) {
        int64_t day = refs[i].ts / (24 * HOUR);
        int64_t first = refs[i].ts;
        size_t j = i;
        ag_buf_reset(&b);
        for (; j < nrefs && j < i + 4000 && refs[j].ts / (24 * HOUR) == day; j++) {
            if (refs[j].ts < first)
                first = refs[j].ts;
            write_ref(&b, &refs[j], (unsigned)j);
        }
        rc = put_object(s, first, seq++, b.data, b.len);
        i = j;
    }
    /* D1 19:00-20:00: the malformed lines, a blank line, the minimal entry and
     * one with spaces and CRLF. */
    ag_buf_reset(&b);
    for (size_t k = 0; k < AG_ARRAY_LEN(malformed); k++) {
        ag_buf_append_cstr(&b, malformed[k]);
        ag_buf_append_cstr(&b, "\n");
    }
    *nskipped = AG_ARRAY_LEN(malformed);
    ag_buf_append_cstr(&b, "\n   \n");
    ag_buf_append_cstr(&b, "{\"timestamp\":\"2026-03-04T19:30:00Z\"}\n");
    ref_t *m = &refs[nrefs++];
    *m = (ref_t){.ts = D1 + 19 * HOUR + 30 * 60000,
                 .model = "",
                 .route = "",
                 .client = "",
                 .key = "",
                 .old = true};
    ag_buf_append_cstr(&b, "{ \"timestamp\" : \"2026-03-04T20:00:00.000Z\" , \"status\" : 503 ,"
                           " \"cached\" : false , \"latencyMs\" : 7 }\r\n");
    m = &refs[nrefs++];
    *m = (ref_t){.ts = D1 + 20 * HOUR,
                 .model = "",
                 .route = "",
                 .client = "",
                 .key = "",
                 .old = true,
                 .status = 503,
                 .has_lat = true,
                 .lat_ms = 7};
    if (rc == 0)
        rc = put_object(s, D1 + 19 * HOUR, seq++, b.data, b.len);
    /* A last line without its newline still counts. */
    const char *tail = "{\"timestamp\":\"2026-03-05T01:00:00.000Z\",\"status\":200,\"route\":"
                       "\"/api/generate\",\"cpuMs\":0.250,\"attempts\":1,\"latencyMs\":90}";
    m = &refs[nrefs++];
    *m = (ref_t){.ts = D2 + 1 * HOUR,
                 .model = "",
                 .route = "/api/generate",
                 .client = "",
                 .key = "",
                 .status = 200,
                 .has_lat = true,
                 .lat_ms = 90,
                 .cpu_us = 250,
                 .attempts = 1};
    if (rc == 0)
        rc = put_object(s, D2 + 1 * HOUR, seq++, tail, strlen(tail));
    /* Never read: the window starts in D1 (D0's folder is not listed), and in
     * D2 this object's first-ms is past the window's end. Their malformed
     * lines would show in `skipped`. */
    const char *bad = "garbage\n{\"timestamp\":\"2026-03-05T10:00:00.000Z\",\"status\":200}\n";
    if (rc == 0)
        rc = put_object(s, D0 + 23 * HOUR, seq++, bad, strlen(bad));
    if (rc == 0)
        rc = put_object(s, D2 + 10 * HOUR, seq++, bad, strlen(bad));
    /* Keys that are not usage-log objects are ignored. */
    if (rc == 0)
        rc = ag_objstore_put(s, "logs/2026/03/04/README", 22, "x\n", 2, NULL, NULL);
    if (rc == 0)
        rc = ag_objstore_put(s, "other/2026/03/04/x", 18, "garbage\n", 8, NULL, NULL);
    ag_buf_fini(&b);
    return rc;
}

/* The reference figures of the entries in [since, until) that sel() takes. */
typedef struct expect {
    uint64_t requests, errors, upstream, hits;
    int64_t in, out, cost;
    uint64_t *lat, *cpu;
    size_t nlat, ncpu;
} expect_t;

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static void expect_of(int64_t since, int64_t until, bool (*sel)(const ref_t *, const void *),
                      const void *ctx, expect_t *e)
{
    memset(e, 0, sizeof(*e));
    e->lat = calloc(nrefs, sizeof(uint64_t));
    e->cpu = calloc(nrefs, sizeof(uint64_t));
    for (size_t i = 0; i < nrefs; i++) {
        const ref_t *r = &refs[i];
        if (r->ts < since || r->ts >= until || (sel && !sel(r, ctx)))
            continue;
        e->requests++;
        e->errors += r->status >= 500;
        e->upstream += r->old ? !r->cached : r->attempts;
        e->hits += r->cached;
        e->in += r->in;
        e->out += r->out;
        e->cost += r->cost_nusd;
        if (r->has_lat)
            e->lat[e->nlat++] = (uint64_t)r->lat_ms * 1000;
        if (!r->old)
            e->cpu[e->ncpu++] = r->cpu_us;
    }
    qsort(e->lat, e->nlat, sizeof(uint64_t), cmp_u64);
    qsort(e->cpu, e->ncpu, sizeof(uint64_t), cmp_u64);
}

static void expect_free(expect_t *e)
{
    free(e->lat);
    free(e->cpu);
}

/* The nearest-rank quantile of sorted v[0..n), as ag_hist defines the rank. */
static uint64_t true_quantile(const uint64_t *v, size_t n, double q)
{
    if (n == 0)
        return 0;
    size_t rank = (size_t)(q * (double)n + 0.999999999);
    if (rank == 0)
        rank = 1;
    return v[rank - 1];
}

static bool near_quantile(uint64_t got, const uint64_t *v, size_t n, double q)
{
    uint64_t want = true_quantile(v, n, q);
    double d = (double)got - (double)want;
    if (d < 0)
        d = -d;
    if (d > AG_HIST_REL_ERROR * (double)want + 1e-9) {
        fprintf(stderr, "  quantile %.2f: got %llu, true %llu\n", q, (unsigned long long)got,
                (unsigned long long)want);
        return false;
    }
    return true;
}

static bool summary_matches(const ag_stats_summary_t *s, const expect_t *e)
{
    if (s->requests != e->requests || s->errors != e->errors ||
        s->upstream_requests != e->upstream || s->cache_hits != e->hits ||
        s->input_tokens != e->in || s->output_tokens != e->out || s->cost_nano_usd != e->cost) {
        fprintf(stderr,
                "  got req %llu err %llu up %llu hits %llu in %lld out %lld cost %lld\n"
                "  want    %llu     %llu    %llu      %llu    %lld     %lld      %lld\n",
                (unsigned long long)s->requests, (unsigned long long)s->errors,
                (unsigned long long)s->upstream_requests, (unsigned long long)s->cache_hits,
                (long long)s->input_tokens, (long long)s->output_tokens,
                (long long)s->cost_nano_usd, (unsigned long long)e->requests,
                (unsigned long long)e->errors, (unsigned long long)e->upstream,
                (unsigned long long)e->hits, (long long)e->in, (long long)e->out,
                (long long)e->cost);
        return false;
    }
    double rate = e->requests ? (double)e->errors / (double)e->requests : 0;
    if (s->error_rate != rate)
        return false;
    return near_quantile(s->latency_p50_us, e->lat, e->nlat, 0.50) &&
           near_quantile(s->latency_p99_us, e->lat, e->nlat, 0.99) &&
           near_quantile(s->cpu_p50_us, e->cpu, e->ncpu, 0.50) &&
           near_quantile(s->cpu_p99_us, e->cpu, e->ncpu, 0.99);
}

/* Window: D1 18:00 to D2 06:00, so D0's folder is out, D1 and D2 are partly in. */
#define SINCE (D1 + 18 * HOUR)
#define UNTIL (D2 + 6 * HOUR)

static const char *group_field(const ref_t *r, ag_stats_by_t by, char buf[64])
{
    switch (by) {
    case AG_STATS_BY_MODEL:
        return r->model;
    case AG_STATS_BY_ROUTE:
        return r->old ? "" : r->route;
    case AG_STATS_BY_STATUS:
        snprintf(buf, 64, "%d", r->status);
        return buf;
    case AG_STATS_BY_CLIENT:
        return r->client;
    case AG_STATS_BY_KEY:
        return r->old ? "" : r->key;
    case AG_STATS_BY_HOUR: {
        int64_t h = r->ts / HOUR * HOUR;
        time_t s = (time_t)(h / 1000);
        struct tm tm;
        gmtime_r(&s, &tm);
        snprintf(buf, 64, "%04d-%02d-%02dT%02d:00:00Z", tm.tm_year + 1900, tm.tm_mon + 1,
                 tm.tm_mday, tm.tm_hour);
        return buf;
    }
    default:
        return "";
    }
}

typedef struct {
    ag_stats_by_t by;
    const char *key;
} sel_ctx_t;

static bool sel_group(const ref_t *r, const void *ctx)
{
    const sel_ctx_t *c = ctx;
    char buf[64];
    return strcmp(group_field(r, c->by, buf), c->key) == 0;
}

/* The distinct group keys of the window for `by`. */
static size_t distinct_keys(ag_stats_by_t by, char keysout[][64], size_t max)
{
    size_t n = 0;
    for (size_t i = 0; i < nrefs; i++) {
        if (refs[i].ts < SINCE || refs[i].ts >= UNTIL)
            continue;
        char buf[64];
        const char *k = group_field(&refs[i], by, buf);
        size_t j = 0;
        while (j < n && strcmp(keysout[j], k) != 0)
            j++;
        if (j == n && n < max)
            snprintf(keysout[n++], 64, "%s", k);
    }
    return n;
}

TEST(generated_log_totals_and_groups)
{
    fixture_t f;
    ASSERT(fixture_open(&f));
    gen_refs();
    size_t nskipped = 0;
    ASSERT_EQ(write_log(f.store, &nskipped), 0);

    expect_t all;
    expect_of(SINCE, UNTIL, NULL, NULL, &all);
    ASSERT(all.requests > 3000);
    /* the same answer on 1, 2 and 3 reader threads */
    for (unsigned threads = 1; threads <= 3; threads++) {
        ag_stats_query_t q = {.since_ms = SINCE, .until_ms = UNTIL, .threads = threads};
        ag_stats_result_t r;
        ASSERT_EQ(ag_stats_collect(f.store, &q, &r), 0);
        ASSERT(summary_matches(&r.total, &all));
        ASSERT_EQ(r.skipped, nskipped);
        ASSERT_EQ(r.ngroups, 0);
        /* D1's objects from 12:00 on (earlier ones hold only entries before
         * SINCE, but their first-ms cannot show it), D2's up to 06:00 */
        ASSERT(r.objects >= 3);
        ag_stats_result_fini(&r);
    }

    for (ag_stats_by_t by = AG_STATS_BY_MODEL; by <= AG_STATS_BY_HOUR; by++) {
        ag_stats_query_t q = {.since_ms = SINCE, .until_ms = UNTIL, .by = by, .threads = 2};
        ag_stats_result_t r;
        ASSERT_EQ(ag_stats_collect(f.store, &q, &r), 0);
        ASSERT(summary_matches(&r.total, &all));
        static char want_keys[64][64];
        size_t nwant = distinct_keys(by, want_keys, 64);
        if (r.ngroups != nwant)
            fprintf(stderr, "  by %s: %zu groups, want %zu\n", ag_stats_by_name(by), r.ngroups,
                    nwant);
        ASSERT_EQ(r.ngroups, nwant);
        uint64_t sum = 0;
        for (size_t i = 0; i < r.ngroups; i++) {
            const ag_stats_group_t *g = &r.groups[i];
            sel_ctx_t ctx = {by, g->key};
            expect_t e;
            expect_of(SINCE, UNTIL, sel_group, &ctx, &e);
            bool ok = e.requests > 0 && summary_matches(&g->s, &e);
            if (!ok)
                fprintf(stderr, "  by %s, group \"%s\"\n", ag_stats_by_name(by), g->key);
            expect_free(&e);
            ASSERT(ok);
            sum += g->s.requests;
            if (i > 0 && by == AG_STATS_BY_HOUR)
                ASSERT(strcmp(r.groups[i - 1].key, g->key) < 0);
            if (i > 0 && by != AG_STATS_BY_HOUR)
                ASSERT(r.groups[i - 1].s.requests > g->s.requests ||
                       (r.groups[i - 1].s.requests == g->s.requests &&
                        strcmp(r.groups[i - 1].key, g->key) < 0));
        }
        ASSERT_EQ(sum, all.requests);
        if (by == AG_STATS_BY_MODEL) {
            /* "claude\u002dhaiku" is the group "claude-haiku"; the minimal lines are "" */
            ASSERT_EQ(r.ngroups, AG_ARRAY_LEN(models) + 1);
        }
        if (by == AG_STATS_BY_HOUR) {
            ASSERT_EQ(r.ngroups, 12);
            ASSERT_STREQ(r.groups[0].key, "2026-03-04T18:00:00Z");
            ASSERT_STREQ(r.groups[11].key, "2026-03-05T05:00:00Z");
        }
        ag_stats_result_fini(&r);
    }
    expect_free(&all);

    /* The JSON of the same run parses and carries the same figures. */
    ag_buf_t out;
    ag_buf_init(&out, 0);
    ASSERT_EQ(ag_stats_run(f.store, SINCE, UNTIL, AG_STATS_BY_STATUS, &out), 0);
    json_error_t jerr;
    json_t *j = json_loadb(out.data, out.len, 0, &jerr);
    ASSERT(j != NULL);
    ASSERT_EQ(json_integer_value(json_object_get(j, "skipped")), (json_int_t)nskipped);
    json_t *groups = json_object_get(j, "groups");
    ASSERT(json_is_array(groups));
    ASSERT_EQ(json_array_size(groups), 6); /* 200 400 500 502 503 0 */
    ASSERT(json_is_string(json_object_get(json_array_get(groups, 0), "key")));
    ASSERT_STREQ(json_string_value(json_object_get(json_array_get(groups, 0), "key")), "200");
    json_decref(j);
    ag_buf_fini(&out);
    fixture_close(&f);
}

TEST(group_cap_folds_into_other)
{
    fixture_t f;
    ASSERT(fixture_open(&f));
    ag_buf_t b;
    ag_buf_init(&b, 0);
    for (int i = 0; i < 100; i++)
        ag_buf_printf(&b,
                      "{\"timestamp\":\"2026-03-04T12:00:%02d.000Z\",\"client\":\"c%02d\","
                      "\"status\":200,\"latencyMs\":5,\"attempts\":1}\n",
                      i % 60, i % 10);
    ASSERT_EQ(put_object(f.store, D1 + 12 * HOUR, 0, b.data, b.len), 0);
    for (unsigned threads = 1; threads <= 2; threads++) {
        ag_stats_query_t q = {.since_ms = D1,
                              .until_ms = D2,
                              .by = AG_STATS_BY_CLIENT,
                              .threads = threads,
                              .max_groups = 3};
        ag_stats_result_t r;
        ASSERT_EQ(ag_stats_collect(f.store, &q, &r), 0);
        ASSERT_EQ(r.total.requests, 100);
        ASSERT_EQ(r.ngroups, 4);
        ASSERT_STREQ(r.groups[3].key, AG_STATS_OTHER);
        uint64_t sum = 0;
        for (size_t i = 0; i < 3; i++) {
            ASSERT_EQ(r.groups[i].s.requests, 10);
            sum += r.groups[i].s.requests;
        }
        ASSERT_EQ(r.groups[3].s.requests, 70);
        ASSERT_EQ(sum + r.groups[3].s.requests, 100);
        ASSERT_EQ(r.groups[3].s.upstream_requests, 70);
        ag_stats_result_fini(&r);
    }
    ag_buf_fini(&b);
    fixture_close(&f);
}

/* More groups than stay in cache and more lines than one batch of queued
 * histogram records: the sorted path, on two threads, checked group by group. */
TEST(many_groups)
{
    enum { NLINES = 90000, NCLIENTS = 300 };
    fixture_t f;
    ASSERT(fixture_open(&f));
    ag_buf_t b;
    ag_buf_init(&b, 0);
    static uint64_t lat[NCLIENTS][NLINES / NCLIENTS + 1], cpu[NCLIENTS][NLINES / NCLIENTS + 1];
    size_t n[NCLIENTS] = {0};
    unsigned seq = 0;
    for (int i = 0; i < NLINES; i++) {
        int c = (int)((unsigned)i * 2654435761u % NCLIENTS);
        unsigned lat_ms = (unsigned)i * 7919u % 5000u, cpu_us = (unsigned)i * 104729u % 3000u;
        lat[c][n[c]] = (uint64_t)lat_ms * 1000;
        cpu[c][n[c]] = cpu_us;
        n[c]++;
        char ts[64];
        iso(D1 + i * 100LL, ts);
        ag_buf_printf(&b,
                      "{\"timestamp\":\"%s\",\"client\":\"client-%03d\",\"status\":%d,"
                      "\"latencyMs\":%u,\"cpuMs\":%u.%03u,\"attempts\":1}\n",
                      ts, c, i % 10 == 0 ? 500 : 200, lat_ms, cpu_us / 1000, cpu_us % 1000);
        if (b.len > 1000000 || i == NLINES - 1) {
            /* D1 as first-ms: at or before every line of the object */
            ASSERT_EQ(put_object(f.store, D1, seq++, b.data, b.len), 0);
            ag_buf_reset(&b);
        }
    }
    for (int c = 0; c < NCLIENTS; c++) {
        qsort(lat[c], n[c], sizeof(uint64_t), cmp_u64);
        qsort(cpu[c], n[c], sizeof(uint64_t), cmp_u64);
    }
    /* one thread queues more than a batch; two merge their tables */
    for (unsigned threads = 1; threads <= 2; threads++) {
        ag_stats_query_t q = {
            .since_ms = D1, .until_ms = D2, .by = AG_STATS_BY_CLIENT, .threads = threads};
        ag_stats_result_t r;
        ASSERT_EQ(ag_stats_collect(f.store, &q, &r), 0);
        ASSERT_EQ(r.total.requests, NLINES);
        ASSERT_EQ(r.ngroups, NCLIENTS);
        for (size_t i = 0; i < r.ngroups; i++) {
            const ag_stats_group_t *g = &r.groups[i];
            int c = atoi(g->key + 7);
            ASSERT_EQ(g->s.requests, n[c]);
            ASSERT_EQ(g->s.upstream_requests, n[c]);
            ASSERT(near_quantile(g->s.latency_p50_us, lat[c], n[c], 0.5));
            ASSERT(near_quantile(g->s.latency_p99_us, lat[c], n[c], 0.99));
            ASSERT(near_quantile(g->s.cpu_p50_us, cpu[c], n[c], 0.5));
            ASSERT(near_quantile(g->s.cpu_p99_us, cpu[c], n[c], 0.99));
        }
        ag_stats_result_fini(&r);
    }
    ag_buf_fini(&b);
    fixture_close(&f);
}

TEST(long_line_is_skipped)
{
    fixture_t f;
    ASSERT(fixture_open(&f));
    ag_buf_t b;
    ag_buf_init(&b, 0);
    ag_buf_append_cstr(&b, "{\"timestamp\":\"2026-03-04T12:00:00.000Z\",\"status\":200}\n");
    ag_buf_append_cstr(&b, "{\"timestamp\":\"2026-03-04T12:00:01.000Z\",\"pad\":\"");
    for (int i = 0; i < 3 * 1024 * 1024 / 64; i++)
        ag_buf_append_cstr(&b, "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef");
    ag_buf_append_cstr(&b, "\"}\n");
    ag_buf_append_cstr(&b, "{\"timestamp\":\"2026-03-04T12:00:02.000Z\",\"status\":500}\n");
    ASSERT_EQ(put_object(f.store, D1 + 12 * HOUR, 0, b.data, b.len), 0);
    ag_stats_query_t q = {.since_ms = D1, .until_ms = D2};
    ag_stats_result_t r;
    ASSERT_EQ(ag_stats_collect(f.store, &q, &r), 0);
    ASSERT_EQ(r.total.requests, 2);
    ASSERT_EQ(r.total.errors, 1);
    ASSERT_EQ(r.skipped, 1);
    ASSERT_EQ(r.bytes, b.len);
    ag_stats_result_fini(&r);
    ag_buf_fini(&b);
    fixture_close(&f);
}

TEST(empty_and_missing)
{
    /* no bucket at all: zero counts */
    ag_stats_query_t q = {.since_ms = D1, .until_ms = D2, .by = AG_STATS_BY_MODEL};
    ag_stats_result_t r;
    ASSERT_EQ(ag_stats_collect(NULL, &q, &r), 0);
    ASSERT_EQ(r.total.requests, 0);
    ASSERT_EQ(r.ngroups, 0);
    ag_buf_t out;
    ag_buf_init(&out, 0);
    ASSERT_EQ(ag_stats_json(&r, &out), 0);
    ASSERT_MEMEQ(out.data, out.len,
                 "{\"since\":\"2026-03-04T00:00:00.000Z\",\"until\":\"2026-03-05T00:00:00.000Z\","
                 "\"requests\":0,\"errors\":0,\"errorRate\":0,\"latencyMs\":{\"p50\":0.000,"
                 "\"p99\":0.000},\"cpuMs\":{\"p50\":0.000,\"p99\":0.000},\"upstreamRequests\":0,"
                 "\"cacheHits\":0,\"tokens\":{\"input\":0,\"output\":0},\"costUsd\":0,"
                 "\"skipped\":0,\"groups\":[]}");
    ag_stats_result_fini(&r);

    /* an empty bucket, and an empty window */
    fixture_t f;
    ASSERT(fixture_open(&f));
    ASSERT_EQ(ag_stats_collect(f.store, &q, &r), 0);
    ASSERT_EQ(r.total.requests, 0);
    ag_stats_result_fini(&r);
    ASSERT_EQ(put_object(f.store, D1 + 12 * HOUR, 0, tiny, strlen(tiny)), 0);
    q.until_ms = q.since_ms;
    ASSERT_EQ(ag_stats_collect(f.store, &q, &r), 0);
    ASSERT_EQ(r.total.requests, 0);
    ASSERT_EQ(r.objects, 0);
    ag_stats_result_fini(&r);

    /* entries dated after their object was put (more than the margin) are
     * taken as an object that cannot hold the window: not read */
    int64_t now = (int64_t)time(NULL) * 1000;
    int64_t future = (now / (24 * HOUR) + 3) * 24 * HOUR; /* midnight, 2-3 days ahead */
    char line[160], ts[64];
    iso(future + HOUR, ts);
    int n = snprintf(line, sizeof(line), "{\"timestamp\":\"%s\",\"status\":200}\n", ts);
    ASSERT_EQ(put_object(f.store, future + HOUR, 1, line, (size_t)n), 0);
    q = (ag_stats_query_t){.since_ms = future, .until_ms = future + 24 * HOUR};
    ASSERT_EQ(ag_stats_collect(f.store, &q, &r), 0);
    ASSERT_EQ(r.total.requests, 0);
    ASSERT_EQ(r.objects, 0);
    ag_stats_result_fini(&r);
    /* ... while a window that starts before the put reads it */
    q.since_ms = now - HOUR;
    ASSERT_EQ(ag_stats_collect(f.store, &q, &r), 0);
    ASSERT_EQ(r.total.requests, 1);
    ag_stats_result_fini(&r);

    ASSERT_EQ(ag_stats_collect(f.store, NULL, &r), AG_EINVALID);
    ag_buf_fini(&out);
    fixture_close(&f);
}

/* Numbers of every shape the scanner reads (fast path, 8 and more digits, 9
 * decimals and rounding, exponents, signs, at the end of a line) and strings
 * with escapes, as group keys. */
TEST(numbers_and_strings)
{
    static const char lines[] =
        "{\"timestamp\":\"2026-03-04T01:00:00.000Z\",\"inputTokens\":123456789,"
        "\"outputTokens\":9876543210,\"costUsd\":0.123456789,\"client\":\"a\\\"b\",\"status\":200}"
        "\n"
        "{\"timestamp\":\"2026-03-04T01:00:01.000Z\",\"inputTokens\":1,\"outputTokens\":2,"
        "\"costUsd\":1.0000000015,\"client\":\"a\\u0022b\",\"status\":200}\n"
        "{\"timestamp\":\"2026-03-04T01:00:02.000Z\",\"inputTokens\":1E3,\"outputTokens\":-5,"
        "\"costUsd\":2.5e-1,\"client\":\"\\\\\",\"status\":200}\n"
        "{\"timestamp\":\"2026-03-04T01:00:03.000Z\",\"costUsd\":7,"
        "\"client\":\"0123456789abcdef0123\\n\",\"status\":200,\"inputTokens\":12345678}\n"
        "{\"timestamp\":\"2026-03-04T01:00:04.000Z\",\"status\":500,\"inputTokens\":7}\n";
    fixture_t f;
    ASSERT(fixture_open(&f));
    ASSERT_EQ(put_object(f.store, D1 + HOUR, 0, lines, strlen(lines)), 0);
    ag_stats_query_t q = {.since_ms = D1, .until_ms = D2, .by = AG_STATS_BY_CLIENT};
    ag_stats_result_t r;
    ASSERT_EQ(ag_stats_collect(f.store, &q, &r), 0);
    ASSERT_EQ(r.skipped, 0);
    ASSERT_EQ(r.total.requests, 5);
    ASSERT_EQ(r.total.errors, 1);
    ASSERT_EQ(r.total.input_tokens, 123456789LL + 1 + 1000 + 12345678 + 7);
    ASSERT_EQ(r.total.output_tokens, 9876543210LL + 2 - 5);
    ASSERT_EQ(r.total.cost_nano_usd, 123456789LL + 1000000002LL + 250000000LL + 7000000000LL);
    ASSERT_EQ(r.ngroups, 4);
    ASSERT_STREQ(r.groups[0].key, "a\"b"); /* \" and \u0022 are one key */
    ASSERT_EQ(r.groups[0].s.requests, 2);
    ASSERT_EQ(r.groups[0].s.cost_nano_usd, 1123456791LL);
    ASSERT_STREQ(r.groups[1].key, "");
    ASSERT_STREQ(r.groups[2].key, "0123456789abcdef0123\n");
    ASSERT_STREQ(r.groups[3].key, "\\");
    ag_buf_t out;
    ag_buf_init(&out, 0);
    ASSERT_EQ(ag_stats_json(&r, &out), 0);
    ASSERT(strstr(ag_buf_cstr(&out), "\"costUsd\":8.373456791,") != NULL);
    ASSERT(strstr(out.data, "{\"key\":\"a\\\"b\",\"requests\":2,") != NULL);
    ASSERT(strstr(out.data, "{\"key\":\"0123456789abcdef0123\\n\",") != NULL);
    ag_buf_reset(&out);
    ASSERT_EQ(ag_stats_text(&r, &out), 0);
    ASSERT(strstr(ag_buf_cstr(&out), "\n0123456789abcdef0123?  ") != NULL); /* no raw newline */
    ag_buf_fini(&out);
    ag_stats_result_fini(&r);
    fixture_close(&f);
}

TEST(window_and_by_names)
{
    int64_t s = 0;
    ASSERT_EQ(ag_stats_parse_window("30s", &s), 0);
    ASSERT_EQ(s, 30);
    ASSERT_EQ(ag_stats_parse_window("15m", &s), 0);
    ASSERT_EQ(s, 900);
    ASSERT_EQ(ag_stats_parse_window("1h", &s), 0);
    ASSERT_EQ(s, 3600);
    ASSERT_EQ(ag_stats_parse_window("7d", &s), 0);
    ASSERT_EQ(s, 7 * 86400);
    ASSERT_EQ(ag_stats_parse_window("24h", &s), 0);
    ASSERT_EQ(s, 86400);
    ASSERT_EQ(ag_stats_parse_window("36500d", &s), 0);
    static const char *const bad[] = {
        "",       "h",   "1",   "1x", "-1h", "+1h",  "1.5h",
        "1h ",    " 1h", "0h",  "1H", "1hh", "1d2h", "99999999999999999999d",
        "36700d", "1w",  "1ms",
    };
    for (size_t i = 0; i < AG_ARRAY_LEN(bad); i++) {
        if (ag_stats_parse_window(bad[i], &s) != AG_EINVALID)
            fprintf(stderr, "  accepted \"%s\"\n", bad[i]);
        ASSERT_EQ(ag_stats_parse_window(bad[i], &s), AG_EINVALID);
    }
    ASSERT_EQ(ag_stats_parse_window(NULL, &s), AG_EINVALID);

    ag_stats_by_t by = AG_STATS_BY_HOUR;
    ASSERT_EQ(ag_stats_parse_by(NULL, &by), 0);
    ASSERT_EQ(by, AG_STATS_BY_NONE);
    ASSERT_EQ(ag_stats_parse_by("", &by), 0);
    ASSERT_EQ(by, AG_STATS_BY_NONE);
    static const char *const names[] = {"model", "route", "status", "client", "key", "hour"};
    for (size_t i = 0; i < AG_ARRAY_LEN(names); i++) {
        ASSERT_EQ(ag_stats_parse_by(names[i], &by), 0);
        ASSERT_EQ(by, (ag_stats_by_t)(i + 1));
        ASSERT_STREQ(ag_stats_by_name(by), names[i]);
    }
    ASSERT_EQ(ag_stats_parse_by("Model", &by), AG_EINVALID);
    ASSERT_EQ(ag_stats_parse_by("day", &by), AG_EINVALID);
    ASSERT_EQ(ag_stats_parse_by("none", &by), AG_EINVALID);
}

/* ---- closed days: gzipped, still summed; old days gone ---------------------- */

static size_t count_keys(ag_objstore_t *s, const char *prefix, const char *suffix)
{
    ag_obj_list_opts_t lo = {.prefix = prefix, .prefix_len = strlen(prefix)};
    ag_obj_list_result_t r;
    if (ag_objstore_list(s, &lo, &r) < 0)
        return (size_t)-1;
    size_t n = 0;
    for (size_t i = 0; i < r.count; i++) {
        size_t kl = r.objects[i].key_len, sl = strlen(suffix);
        n += kl >= sl && memcmp(r.objects[i].key + kl - sl, suffix, sl) == 0;
    }
    ag_obj_list_result_free(&r);
    return n;
}

TEST(closed_days_are_gzipped_and_still_summed_and_old_days_expire)
{
    fixture_t f;
    ASSERT(fixture_open(&f));
    /* tiny, split over two objects of 2026-03-04; a day 40 days older; "today" */
    const char *cut = strstr(tiny, "\n{\"timestamp\":\"2026-03-04T13:10") + 1;
    ASSERT_EQ(put_object(f.store, D1 + 12 * HOUR - 1, 0, tiny, (size_t)(cut - tiny)), 0);
    ASSERT_EQ(put_object(f.store, D1 + 13 * HOUR, 1, cut, strlen(cut)), 0);
    const char old[] =
        "{\"timestamp\":\"2026-01-23T10:00:00.000Z\",\"model\":\"m1\",\"status\":200}\n";
    ASSERT_EQ(put_object(f.store, D1 - 40 * 24 * HOUR + 10 * HOUR, 0, old, strlen(old)), 0);
    const char today[] =
        "{\"timestamp\":\"2026-03-05T01:00:00.000Z\",\"model\":\"m1\",\"status\":200}\n";
    ASSERT_EQ(put_object(f.store, D2 + HOUR, 0, today, strlen(today)), 0);
    ag_buf_t before, after;
    ag_buf_init(&before, 0);
    ag_buf_init(&after, 0);
    ASSERT_EQ(ag_stats_run(f.store, D1 + 12 * HOUR, D1 + 14 * HOUR, AG_STATS_BY_HOUR, &before), 0);

    /* Half an hour after the day ended it is not closed yet: only the old day
     * is gzipped (no retention yet). */
    ag_usage_days_stats_t st;
    ASSERT_EQ(ag_usage_log_maintain(f.store, D2 + HOUR / 2, 0, true, &st), 0);
    ASSERT_EQ(st.days_compressed, 1u);
    ASSERT_EQ(count_keys(f.store, "logs/2026/03/04/", ".ndjson"), (size_t)2);
    ASSERT_EQ(count_keys(f.store, "logs/2026/01/23/", ".ndjson.gz"), (size_t)1);

    ASSERT_EQ(ag_usage_log_maintain(f.store, D2 + 2 * HOUR, 30, true, &st), 0);
    ASSERT_EQ(st.days_deleted, 1u);
    ASSERT_EQ(st.days_compressed, 1u);
    ASSERT_EQ(st.gz_objects, (uint64_t)1);
    ASSERT_EQ(count_keys(f.store, "logs/2026/03/04/", ".ndjson"), (size_t)0);
    ASSERT_EQ(count_keys(f.store, "logs/2026/03/04/", ".ndjson.gz"), (size_t)1);
    ASSERT_EQ(count_keys(f.store, "logs/2026/01/", ""), (size_t)0);
    ASSERT_EQ(count_keys(f.store, "logs/2026/03/05/", ".ndjson"), (size_t)1); /* today: as is */

    /* The same sums from the gzipped day, to the byte. */
    ASSERT_EQ(ag_stats_run(f.store, D1 + 12 * HOUR, D1 + 14 * HOUR, AG_STATS_BY_HOUR, &after), 0);
    ASSERT_MEMEQ(after.data, after.len, ag_buf_cstr(&before));

    /* A second pass finds nothing to do. */
    ASSERT_EQ(ag_usage_log_maintain(f.store, D2 + 3 * HOUR, 30, true, &st), 0);
    ASSERT_EQ(st.days_compressed + st.days_deleted, 0u);

    /* How far back the log goes, in the text. */
    ag_stats_query_t q = {.since_ms = D1, .until_ms = D2 + 2 * HOUR};
    ag_stats_result_t r;
    ASSERT_EQ(ag_stats_collect(f.store, &q, &r), 0);
    ASSERT_STREQ(r.oldest_day, "2026-03-04");
    ASSERT_EQ(r.total.requests, (uint64_t)6); /* tiny's five and today's one */
    ag_buf_reset(&after);
    ASSERT_EQ(ag_stats_text(&r, &after), 0);
    ASSERT(strstr(ag_buf_cstr(&after), "\nthe usage log goes back to 2026-03-04\n") != NULL);
    ag_stats_result_fini(&r);
    ag_buf_fini(&before);
    ag_buf_fini(&after);
    fixture_close(&f);
}

AG_TESTS(AG_TEST_ENTRY(exact_json) AG_TEST_ENTRY(generated_log_totals_and_groups) AG_TEST_ENTRY(
    group_cap_folds_into_other) AG_TEST_ENTRY(many_groups) AG_TEST_ENTRY(long_line_is_skipped)
             AG_TEST_ENTRY(empty_and_missing) AG_TEST_ENTRY(numbers_and_strings)
                 AG_TEST_ENTRY(window_and_by_names)
                     AG_TEST_ENTRY(closed_days_are_gzipped_and_still_summed_and_old_days_expire))
