/* SPDX-License-Identifier: MIT
 *
 * stats.h: analytics over the usage log, for `aigate stats` and the admin
 * listener's GET /stats. It reads the NDJSON objects under logs/YYYY/MM/DD/ of
 * a usage-log bucket (docs/usage-log.md) over a time window, on a few threads,
 * and sums them up in total and per group. Every call blocks on disk reads:
 * run it off the event loops (a thread-pool job). Reentrant: calls share
 * nothing, any thread may make one.
 */
#ifndef AG_OBS_STATS_H
#define AG_OBS_STATS_H

#include <stddef.h>
#include <stdint.h>

#include "store/objstore.h"
#include "util/buf.h"

/** What the groups are made of. */
typedef enum ag_stats_by {
    AG_STATS_BY_NONE = 0, /* totals only: no "groups" */
    AG_STATS_BY_MODEL,    /* the entry's `model` */
    AG_STATS_BY_ROUTE,    /* `route` ("" for lines written before it existed) */
    AG_STATS_BY_STATUS,   /* `status`, as a decimal string: "200" */
    AG_STATS_BY_CLIENT,   /* `client` */
    AG_STATS_BY_KEY,      /* `key`, the API key's name ("" without one) */
    AG_STATS_BY_HOUR,     /* the UTC hour of `timestamp`: "2026-12-02T13:00:00Z" */
} ag_stats_by_t;

/** The most distinct group keys one run keeps; the entries of any further
 *  key are folded into one group, AG_STATS_OTHER. */
#define AG_STATS_MAX_GROUPS 10000
#define AG_STATS_OTHER "(other)"

/**
 * Parses a window length: a positive decimal count and one unit, s, m, h or d
 * ("30s", "15m", "1h", "7d"); nothing else (no spaces, signs, fractions or
 * other units). At most 100 years.
 * @return 0 and *seconds; AG_EINVALID otherwise.
 */
int ag_stats_parse_window(const char *s, int64_t *seconds);

/**
 * Parses a grouping name: model, route, status, client, key or hour. NULL or
 * "" is AG_STATS_BY_NONE. @return 0 and *by; AG_EINVALID for any other name.
 */
int ag_stats_parse_by(const char *s, ag_stats_by_t *by);

/** The name ag_stats_parse_by() takes ("model"...), "" for AG_STATS_BY_NONE. */
const char *ag_stats_by_name(ag_stats_by_t by);

/** A run's question. Zero fields take the defaults where one is named. */
typedef struct ag_stats_query {
    int64_t since_ms; /* epoch ms: entries with since_ms <= timestamp < until_ms */
    int64_t until_ms;
    ag_stats_by_t by;
    unsigned threads;  /* readers: 0 is the online CPUs, at most 4 */
    size_t max_groups; /* 0 is AG_STATS_MAX_GROUPS; at most 1000000 */
} ag_stats_query_t;

/**
 * The figures of a set of entries (all of the window, or one group).
 *
 * - requests: entries whose timestamp is in the window;
 * - errors: those with status >= 500; error_rate = errors / requests (0 when
 *   there are none);
 * - latency and CPU percentiles (p50, p99, in µs) come from ag_hist over
 *   latencyMs * 1000 and cpuMs * 1000, so each is within AG_HIST_REL_ERROR of
 *   the true value; a line without the field (cpuMs before it existed) adds
 *   nothing to that histogram; 0 when it is empty;
 * - upstream_requests: the sum of `attempts`; a line without the field counts
 *   1 when not cached, else 0;
 * - cache_hits: entries with `cached` true;
 * - input_tokens, output_tokens: sums of inputTokens and outputTokens;
 * - cost_nano_usd: the sum of costUsd, in units of 1e-9 USD (the log writes
 *   at most 9 decimals, so the sum is exact and independent of order).
 */
typedef struct ag_stats_summary {
    uint64_t requests;
    uint64_t errors;
    double error_rate;
    uint64_t latency_p50_us, latency_p99_us;
    uint64_t cpu_p50_us, cpu_p99_us;
    uint64_t upstream_requests;
    uint64_t cache_hits;
    int64_t input_tokens;
    int64_t output_tokens;
    int64_t cost_nano_usd;
} ag_stats_summary_t;

/** One group: its key as text (decoded from the log's JSON, NUL-terminated;
 *  key_len excludes the NUL; it may hold NUL bytes of its own) and figures. */
typedef struct ag_stats_group {
    char *key;
    size_t key_len;
    ag_stats_summary_t s;
} ag_stats_group_t;

/** A run's answer. Owned by the caller: release it with ag_stats_result_fini(). */
typedef struct ag_stats_result {
    int64_t since_ms, until_ms;
    ag_stats_by_t by;
    ag_stats_summary_t total;
    /* With a grouping: sorted by key for AG_STATS_BY_HOUR (oldest first), else
     * by requests, most first (ties by key); AG_STATS_OTHER, when used, last. */
    ag_stats_group_t *groups;
    size_t ngroups;
    uint64_t skipped;    /* lines that are not usage entries (malformed), counted, not summed */
    uint64_t objects;    /* objects read */
    uint64_t bytes;      /* NDJSON bytes read (inflated, for gzipped days) */
    char oldest_day[11]; /* "YYYY-MM-DD": the oldest day the log holds; "" when none */
} ag_stats_result_t;

/**
 * Reads the usage log in `bucket` (borrowed for the call; NULL, a missing
 * bucket, reads as empty) over q's window and fills *out.
 *
 * Only the day folders that overlap the window are listed. An object is not
 * read when its first-ms (the earliest entry in it) is at or after until_ms,
 * or when it was put more than 10 minutes before since_ms: every entry is
 * timestamped before its object is put, so such an object holds nothing in
 * the window (the margin covers clocks that differ between writers). Lines
 * are read with large buffered reads and parsed with a scanner that only
 * looks at the fields it sums; lines that do not parse, or lack a valid
 * timestamp, are counted in `skipped`. Memory: one read buffer per thread,
 * and per group a few KiB (groups are capped at q->max_groups).
 *
 * @return 0 and *out (also for an empty window); AG_EINVALID for a NULL q or
 *         out; -ENOMEM; a listing or read error of the store (*out is then
 *         empty).
 */
int ag_stats_collect(ag_objstore_t *bucket, const ag_stats_query_t *q, ag_stats_result_t *out);

/** Frees what a result owns and zeroes it. NULL is a no-op. */
void ag_stats_result_fini(ag_stats_result_t *r);

/**
 * Appends the JSON of platform.md section 3:
 * {"since","until","requests","errors","errorRate","latencyMs":{"p50","p99"},
 *  "cpuMs":{"p50","p99"},"upstreamRequests","cacheHits",
 *  "tokens":{"input","output"},"costUsd","skipped","groups":[{"key",...}]}
 * since/until are ISO 8601 UTC with milliseconds; errorRate has up to 6
 * decimals, ms figures exactly 3, costUsd up to 9; "groups" is there only with
 * a grouping, each group with "key" (a string) and the fields from "requests"
 * to "costUsd". @return 0 or a buffer error.
 */
int ag_stats_json(const ag_stats_result_t *r, ag_buf_t *out);

/** Appends the human table of `aigate stats`: a line with the window, a header
 *  and one row per group (with a grouping) and a total row. Control bytes in
 *  group keys are printed as '?'. @return 0 or a buffer error. */
int ag_stats_text(const ag_stats_result_t *r, ag_buf_t *out);

/** ag_stats_collect() with the default threads and group cap, then
 *  ag_stats_json() into json_out: what GET /stats answers.
 *  @return 0, or the error of either (json_out may then hold a partial text). */
int ag_stats_run(ag_objstore_t *bucket, int64_t since_ms, int64_t until_ms, ag_stats_by_t by,
                 ag_buf_t *json_out);

#endif
