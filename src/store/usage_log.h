/* SPDX-License-Identifier: MIT
 *
 * usage_log.h: the usage log. Request handlers append one fixed-size entry per
 * /api/generate request (a copy under a mutex, no I/O); one background writer
 * thread turns them into NDJSON objects under logs/YYYY/MM/DD/ in an object
 * store bucket, flushed by size or age. docs/usage-log.md has the format and
 * the durability guarantees.
 */
#ifndef AG_STORE_USAGE_LOG_H
#define AG_STORE_USAGE_LOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "store/objstore.h"

/* AG_USAGE_ECLOSED (util/errors.def): the log is closing or closed, and the
 * entry was not accepted. ag_strerror() gives the message. */

/** One usage entry. Zero-initialise it (`ag_usage_entry_t e = {0};`), then set
 *  what you know: zero/empty means "0" for numbers and "" for strings, except
 *  where a field says it is omitted. New fields are only ever added with a zero
 *  value that keeps today's output, so zero-initialising callers stay correct.
 *  Strings are NUL-terminated UTF-8 (invalid bytes are written as U+FFFD);
 *  fill them with ag_usage_entry_set_str() to truncate safely. */
typedef struct ag_usage_entry {
    int64_t timestamp_ms; /* epoch ms; <= 0: the log's clock at append */
    char model[128];      /* the model requested (the seed logs this one) */
    char client[64];      /* client IP or API key name */
    char request_id[40];
    char outcome[24];       /* streams: "complete", "client_abort", ...; "" omits the field */
    uint32_t prompt_length; /* UTF-16 units, as the seed's prompt.length */
    uint32_t output_length; /* UTF-16 units, as the seed's output.length */
    int64_t input_tokens;   /* Anthropic usage.input_tokens (excludes cache tokens) */
    int64_t output_tokens;
    int64_t cache_creation_input_tokens;
    int64_t cache_read_input_tokens;
    int status; /* HTTP status sent to the client */
    bool cached;
    bool stream;
    uint32_t latency_ms; /* request received -> response finished */
    /* Added after the seed's and the first fields; written at the end of the line. */
    char route[64];    /* the route: "/api/generate", "/v1/messages", "scheduled" */
    uint32_t cpu_us;   /* CPU time aigate spent on the request, in µs (written as ms) */
    uint32_t attempts; /* upstream calls made (retries and fallbacks count); 0 for a cache hit */
    char key[64];      /* the client API key's name; "" omits the field */
    /* scheduled runs only (route "scheduled"); "" / 0 omit them */
    char task[64];
    char cron[64];
    int64_t scheduled_ms;
    char outputs[256];       /* "r2:ok,kv:ok,webhook:failed(503)..." */
    uint32_t queued_ms;      /* time waiting for the upstream's rate window */
    char fallback_from[128]; /* the model asked for, when a fallback answered; "" omits it */
} ag_usage_entry_t;

/** Copies s[0..len) into the fixed field dst[cap], truncated at a UTF-8
 *  character boundary, NUL-terminated. Use it as
 *  `ag_usage_entry_set_str(e.model, sizeof(e.model), p, n)`. */
void ag_usage_entry_set_str(char *dst, size_t cap, const char *s, size_t len);

/** A price row: USD per million tokens. Cache rates of 0 mean Anthropic's
 *  multipliers of the input rate: 1.25x for cache writes, 0.1x for reads. */
typedef struct ag_price {
    const char *model;
    double input_per_mtok;
    double output_per_mtok;
    double cache_write_per_mtok; /* 0: 1.25 * input_per_mtok */
    double cache_read_per_mtok;  /* 0: 0.1 * input_per_mtok */
} ag_price_t;

/** Estimated cost in USD. The row is the one whose model equals `model`, else
 *  the longest row that `model` extends with "-" (so "claude-haiku-4-5" prices
 *  "claude-haiku-4-5-20251001"). Unknown model or NULL: 0. Negative token
 *  counts count as 0. Pure function, thread-safe. */
double ag_usage_cost_usd(const ag_price_t *prices, size_t n, const char *model, int64_t in_tok,
                         int64_t out_tok, int64_t cache_write_tok, int64_t cache_read_tok);

/** The most a request can cost, which budgets reserve before it goes upstream
 *  (platform.md section 6): every byte of the upstream body counted as an input
 *  token (no tokenizer yields more tokens than bytes), priced at the higher of
 *  the input and cache-write rates when the request asks for caching, and
 *  max_tokens output tokens. Unknown model or NULL: 0, as ag_usage_cost_usd()
 *  (whose real cost is then 0 too). Pure function, thread-safe. */
double ag_usage_worst_case_usd(const ag_price_t *prices, size_t n, const char *model,
                               size_t body_bytes, int64_t max_tokens, bool caching);

typedef enum ag_usage_queue_full_policy {
    /* Default. A full queue rejects the entry at once with AG_EFULL and counts
     * it in `dropped`: a stalled store must not stall the event loops. */
    AG_USAGE_DROP = 0,
    /* The caller waits up to block_timeout_ms for room (counted in `blocked`),
     * then gets AG_EFULL (counted in `dropped`). Blocks the calling thread. */
    AG_USAGE_BLOCK = 1,
} ag_usage_queue_full_policy_t;

/** What on_flush reports: one put of one object. Borrowed for the call. */
typedef struct ag_usage_flush_info {
    const char *key;
    size_t entries;
    size_t bytes;
    int rc; /* 0, or the put's error (the object stays queued for a retry) */
} ag_usage_flush_info_t;

/** Options; zero means the default. Everything is copied or borrowed only for
 *  ag_usage_log_open(), except `store` and `clock_ctx`/`flush_ctx`. */
typedef struct ag_usage_log_options {
    ag_objstore_t *store;       /* borrowed; must outlive the log (until ag_usage_log_free) */
    size_t queue_capacity;      /* entries waiting for the writer; 65536 */
    size_t flush_bytes;         /* object size that triggers a put; 1 MiB */
    unsigned flush_interval_ms; /* max age of an entry before its put starts; 1000 */
    size_t max_retained_bytes;  /* NDJSON kept while puts fail; 64 MiB (then the queue fills) */
    ag_usage_queue_full_policy_t queue_full_policy; /* AG_USAGE_DROP */
    unsigned block_timeout_ms;                      /* AG_USAGE_BLOCK's wait; 1000 */
    unsigned close_timeout_ms; /* how long close retries a failing store; 10000 */
    const ag_price_t *prices;  /* copied */
    size_t nprices;
    /* Optional clock (epoch ms) for timestamps and ages; must be thread-safe.
     * Default: the wall clock for timestamps, a monotonic clock for ages. */
    int64_t (*now_ms)(void *ctx);
    void *clock_ctx;
    /* Called on the writer thread after every put attempt of a batch from
     * memory (not for batches drained from the spool), without locks held.
     * It must not call ag_usage_log_flush/tick/close (they wait for the writer). */
    void (*on_flush)(void *ctx, const ag_usage_flush_info_t *info);
    void *flush_ctx;
    /* Goes into object names: 1-48 of [A-Za-z0-9._-]. A random suffix per open
     * is always added, so restarts and several processes never collide. NULL:
     * random only. */
    const char *instance_id;
    /* Closed days: days older than retention_days are deleted (0: kept
     * forever), and with compress_days each closed day's objects are gzipped;
     * both by a thread of the log, at open and every hour (ag_usage_log_maintain()). */
    unsigned retention_days;
    bool compress_days;
    /* The local spool (docs/usage-log.md, "The spool"): a folder (created,
     * mode 0700) where a batch goes when its put has failed
     * AG_USAGE_SPOOL_AFTER times (at once while closing, and without a try
     * while the store is known to be down), durably, under its object key;
     * drained into the store oldest first when it accepts puts again, also
     * what an earlier run left there. At most spool_max_bytes of NDJSON (0:
     * 1 GiB); when full, batches stay in memory as without a spool. NULL: no
     * spool. Copied. */
    const char *spool_dir;
    uint64_t spool_max_bytes;
} ag_usage_log_options_t;

/** Failed puts of one batch after which it goes to the spool. */
#define AG_USAGE_SPOOL_AFTER 3

typedef struct ag_usage_log ag_usage_log_t;

/** What one pass over the closed days did. */
typedef struct ag_usage_days_stats {
    unsigned days_deleted;    /* day folders past the retention */
    unsigned days_compressed; /* closed days whose NDJSON objects were gzipped */
    uint64_t gz_objects;      /* .ndjson.gz objects written */
    uint64_t objects_deleted; /* objects deleted (expired, or gzipped into another) */
} ag_usage_days_stats_t;

/** Deletes the day folders of the log in `store` that are retention_days or
 *  more before now_ms's UTC day (0: none), and with `compress` gzips each
 *  closed day (ended an hour or more before now_ms): its .ndjson objects go
 *  into logs/YYYY/MM/DD/<first-ms>-gz-<hash>.ndjson.gz objects of at most 32
 *  MiB (content-encoding gzip), each stored before its sources are deleted, so
 *  a crash leaves duplicates to redo, never a loss; two processes that compact
 *  the same day write the same names. Safe beside writers: they only write
 *  the current day. st may be NULL. @return 0 or the first store error. */
int ag_usage_log_maintain(ag_objstore_t *store, int64_t now_ms, unsigned retention_days,
                          bool compress, ag_usage_days_stats_t *st);

/** How far back the log in `store` goes: its oldest day folder as "YYYY-MM-DD"
 *  in out[11], "" when there is none. @return 0 or a store error. */
int ag_usage_log_oldest_day(ag_objstore_t *store, char out[11]);

typedef struct ag_usage_log_stats {
    uint64_t accepted;       /* appends that returned 0 */
    uint64_t written;        /* entries in objects the store has acknowledged */
    uint64_t dropped;        /* appends refused with AG_EFULL (never accepted) */
    uint64_t blocked;        /* appends that had to wait (AG_USAGE_BLOCK) */
    uint64_t flushes;        /* objects written */
    uint64_t write_errors;   /* failed put attempts (each is retried) */
    uint64_t lost;           /* accepted entries close gave up on (spilled to the server log) */
    uint64_t queued;         /* accepted, not yet written: waiting, in batches or retried */
    uint64_t retained_bytes; /* NDJSON in memory waiting for a put */
    /* The spool (zero without one). Spooled entries are still `queued`; once
     * drained they count in `written`, or in `recovered` when an earlier run
     * spooled them. */
    uint64_t spooled;     /* entries this log wrote to the spool */
    uint64_t recovered;   /* entries of earlier runs drained from the spool into the store */
    uint64_t spool_bytes; /* NDJSON bytes in the spool now */
    uint64_t spool_full;  /* times the full spool refused a batch (kept in memory) */
} ag_usage_log_stats_t;

/** Creates the log and starts its writer thread (signals blocked in it).
 *  @return 0 and *out; AG_EINVALID for a NULL store or a bad instance_id;
 *  -ENOMEM; -errno from pthread_create; the spool folder's error. */
int ag_usage_log_open(const ag_usage_log_options_t *opts, ag_usage_log_t **out);

/** Accepts a copy of *e. Thread-safe; O(1) under one mutex; never does I/O and
 *  never waits, except under AG_USAGE_BLOCK with a full queue.
 *  @return 0 when accepted (it will be written, or spilled to the server log
 *  if close gives up on a failing store); AG_EFULL when the queue is full
 *  (counted in `dropped`); AG_USAGE_ECLOSED once close has begun;
 *  AG_EINVALID for NULL. */
int ag_usage_log_append(ag_usage_log_t *log, const ag_usage_entry_t *e);

/** Blocks until every entry accepted before the call is in the store (the
 *  spool drained too). @return 0; the put error when the store refused (the
 *  entries stay queued, in memory or the spool, and are retried);
 *  AG_USAGE_ECLOSED after close. Any thread but the writer's (on_flush). */
int ag_usage_log_flush(ag_usage_log_t *log);

/** Runs one writer pass at the current clock and waits for it: writes what is
 *  due by size or age, retries failed puts that are due. For injected clocks
 *  (tests, and anyone who moved the clock): with the default clock the writer
 *  wakes by itself. @return 0 or the first put error of the pass. */
int ag_usage_log_tick(ag_usage_log_t *log);

/** Replaces the price table (copied) for entries serialised from now on (a
 *  config reload). @return 0 or -ENOMEM (the old table stays). */
int ag_usage_log_set_prices(ag_usage_log_t *log, const ag_price_t *prices, size_t n);

/** Stops accepting entries, writes everything accepted, and joins the writer.
 *  With a spool, what the store refuses goes to the spool at once (drained by
 *  the next open). If the store (and the spool) keep failing for
 *  close_timeout_ms, the unwritten entries go
 *  to the server log (stderr) as `usage-log unwritten: {json}` lines and are
 *  counted in `lost`. Idempotent; the log stays allocated (appends return
 *  AG_USAGE_ECLOSED, stats still work) until ag_usage_log_free(). Not from
 *  on_flush. */
void ag_usage_log_close(ag_usage_log_t *log);

/** Closes the log if needed and frees it. NULL is a no-op. No other thread
 *  may use the log during or after the call. */
void ag_usage_log_free(ag_usage_log_t *log);

/** A consistent snapshot of the counters. Thread-safe. */
void ag_usage_log_stats(ag_usage_log_t *log, ag_usage_log_stats_t *out);

#endif
