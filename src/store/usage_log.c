/* SPDX-License-Identifier: MIT
 *
 * usage_log.c: the usage log (usage_log.h). Appenders copy entries into a
 * bounded array under one mutex; the writer thread swaps that array for its
 * own, serialises the entries to NDJSON in per-UTC-day batches, and puts each
 * batch into the object store as one object, retrying failed puts.
 */
#include "util/platform.h"

#include "store/usage_log.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "store/usage_log_spool.h"
#include "util/buf.h"
#include "util/errors.h"
#include "util/fmt.h"
#include "util/hex.h"
#include "util/json.h"
#include "util/log.h"

/* The date part of a timestamp, formatted once per second (writer thread only). */
typedef struct line_clock {
    int64_t second;  /* epoch second of `prefix`, or INT64_MIN */
    char prefix[32]; /* "YYYY-MM-DDTHH:MM:SS." */
} line_clock_t;

#define DEFAULT_CAPACITY 65536
#define DEFAULT_FLUSH_BYTES (1u << 20)
#define DEFAULT_INTERVAL_MS 1000
#define DEFAULT_RETAINED (64u << 20)
#define DEFAULT_BLOCK_MS 1000
#define DEFAULT_CLOSE_MS 10000
#define WARN_EVERY_US (10 * 1000000LL) /* a failing disk must not flood the server log */
#define MAX_OPEN_BATCHES 8             /* distinct UTC days in flight; more only with odd clocks */
#define MAX_TIMESTAMP_MS                                                                           \
    253402300799999LL /* 9999-12-31T23:59:59.999Z: keeps names 4-digit years                       \
                       */
#define DAY_MS 86400000LL
#define KEY_MAX 192
#define SPILL_PREFIX "usage-log unwritten: "
#define DEFAULT_SPOOL_MAX (1ull << 30)
#define SPOOL_PAGE 100 /* spooled batches drained per pass: new batches are not held up long */
/* How often the spool is looked at while it seems empty: another process
 * sharing it (a reload's old log, closing) may have left batches there. */
#define SPOOL_RESCAN_MS 60000

/* A batch: the NDJSON of entries of one UTC day. Open batches grow; sealed
 * ones have their key fixed and wait, in order, for their put: a retry writes
 * the very same bytes under the very same key, so a put that failed after all
 * (e.g. only the directory fsync did) cannot duplicate entries. */
typedef struct batch {
    struct batch *next;
    int64_t day;          /* UTC days since the epoch, of every entry inside */
    int64_t min_ts;       /* earliest entry timestamp: names the object */
    int64_t first_accept; /* age clock of its oldest entry */
    int64_t next_try;     /* sealed: age clock at which the put is (re)tried */
    unsigned attempts;    /* sealed: failed puts so far */
    size_t n;
    ag_buf_t buf;
    char key[KEY_MAX];
} batch_t;

struct ag_usage_log {
    pthread_mutex_t mu;
    pthread_cond_t wake; /* the writer waits here */
    pthread_cond_t done; /* blocked appenders, flush, tick and close wait here */

    /* Under mu. */
    ag_usage_entry_t *pending; /* capacity slots */
    size_t npending;
    int64_t pending_first; /* age clock when pending went from empty to non-empty */
    bool writer_idle;      /* in an untimed wait: the first append must wake it */
    bool closing;
    bool full_signalled; /* the writer was told the queue is full since it last took */
    bool writer_exited;
    uint64_t flush_req, flush_done, tick_req, tick_done;
    int flush_rc, tick_rc;
    ag_usage_log_stats_t st; /* queued is derived in ag_usage_log_stats() */

    /* Set at open, read-only afterwards. */
    ag_objstore_t *store;
    size_t capacity, flush_bytes, max_retained, wake_threshold;
    unsigned interval_ms, block_timeout_ms, close_timeout_ms;
    ag_usage_queue_full_policy_t policy;
    int64_t (*now_ms)(void *ctx);
    void *clock_ctx;
    void (*on_flush)(void *ctx, const ag_usage_flush_info_t *info);
    void *flush_ctx;
    char instance[80];
    pthread_t thread;
    /* Closed days (usage_log_days.c), on a thread of their own: a day's gzip
     * must not hold up the writer. */
    unsigned retention_days;
    bool compress_days, maint_started;
    pthread_t maint;
    pthread_cond_t maint_wake; /* under mu: closing */

    /* Serialisation reads the table under prices_mu; a reload swaps it. */
    pthread_mutex_t prices_mu;
    ag_price_t *prices;
    size_t nprices;

    /* Writer thread only. */
    ag_usage_entry_t *taken; /* capacity slots, swapped with pending */
    size_t ntaken, taken_pos;
    int64_t taken_first;
    batch_t *open;
    size_t nopen;
    batch_t *sealed, **sealed_tail;
    size_t retained; /* NDJSON bytes in open and sealed batches */
    uint64_t seq;
    ag_buf_t line;
    line_clock_t clock;
    int64_t warn_put_us, warn_drop_us;
    uint64_t errs_unreported, dropped_reported;
    bool failing;
    /* The spool (usage_log_spool.c), NULL without one. */
    ag__usage_spool_t *spool;
    int64_t spool_next_try; /* age clock of the next drain */
    int64_t warn_spool_us;
    bool spooling; /* batches went to the spool since the store last took one */
    char own[84];  /* "-<instance>-": what this open's keys hold */
};

/* ---- entries and prices ------------------------------------------------ */

void ag_usage_entry_set_str(char *dst, size_t cap, const char *s, size_t len)
{
    if (cap == 0)
        return;
    if (s == NULL)
        len = 0;
    if (len >= cap) {
        len = cap - 1;
        /* back off over continuation bytes so no character is cut in half */
        while (len > 0 && ((unsigned char)s[len] & 0xC0) == 0x80)
            len--;
    }
    if (len)
        memcpy(dst, s, len);
    dst[len] = '\0';
}

static bool is_dated_suffix(const char *s)
{
    /* "-20251001": Anthropic's snapshot ids extend the alias this way */
    if (*s++ != '-')
        return false;
    size_t digits = 0;
    for (; *s; s++, digits++)
        if (*s < '0' || *s > '9')
            return false;
    return digits == 8;
}

static const ag_price_t *price_find(const ag_price_t *prices, size_t n, const char *model)
{
    if (model == NULL)
        return NULL;
    const ag_price_t *best = NULL;
    size_t best_len = 0;
    for (size_t i = 0; i < n; i++) {
        if (prices[i].model == NULL)
            continue;
        size_t l = strlen(prices[i].model);
        if (strncmp(model, prices[i].model, l) != 0)
            continue;
        if (model[l] == '\0')
            return &prices[i];
        if (l > best_len && is_dated_suffix(model + l)) {
            best = &prices[i];
            best_len = l;
        }
    }
    return best;
}

double ag_usage_cost_usd(const ag_price_t *prices, size_t n, const char *model, int64_t in_tok,
                         int64_t out_tok, int64_t cache_write_tok, int64_t cache_read_tok)
{
    const ag_price_t *p = price_find(prices, n, model);
    if (p == NULL)
        return 0;
    double in = in_tok > 0 ? (double)in_tok : 0;
    double out = out_tok > 0 ? (double)out_tok : 0;
    double cw = cache_write_tok > 0 ? (double)cache_write_tok : 0;
    double cr = cache_read_tok > 0 ? (double)cache_read_tok : 0;
    double cw_rate =
        p->cache_write_per_mtok > 0 ? p->cache_write_per_mtok : 1.25 * p->input_per_mtok;
    double cr_rate = p->cache_read_per_mtok > 0 ? p->cache_read_per_mtok : 0.1 * p->input_per_mtok;
    double usd =
        (in * p->input_per_mtok + out * p->output_per_mtok + cw * cw_rate + cr * cr_rate) / 1e6;
    return isfinite(usd) ? usd : 0;
}

double ag_usage_worst_case_usd(const ag_price_t *prices, size_t n, const char *model,
                               size_t body_bytes, int64_t max_tokens, bool caching)
{
    const ag_price_t *p = price_find(prices, n, model);
    if (p == NULL)
        return 0;
    double cw_rate =
        p->cache_write_per_mtok > 0 ? p->cache_write_per_mtok : 1.25 * p->input_per_mtok;
    double in_rate = caching && cw_rate > p->input_per_mtok ? cw_rate : p->input_per_mtok;
    double out = max_tokens > 0 ? (double)max_tokens : 0;
    double usd = ((double)body_bytes * in_rate + out * p->output_per_mtok) / 1e6;
    return isfinite(usd) ? usd : 0;
}

static void prices_free(ag_price_t *prices, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free((char *)prices[i].model);
    free(prices);
}

static int prices_copy(const ag_price_t *src, size_t n, ag_price_t **out)
{
    *out = NULL;
    if (n == 0 || src == NULL)
        return 0;
    ag_price_t *p = calloc(n, sizeof(*p));
    if (p == NULL)
        return -ENOMEM;
    for (size_t i = 0; i < n; i++) {
        p[i] = src[i];
        p[i].model = src[i].model ? strdup(src[i].model) : NULL;
        if (src[i].model && p[i].model == NULL) {
            prices_free(p, i);
            return -ENOMEM;
        }
    }
    *out = p;
    return 0;
}

/* The writer formats up to ~100k lines a second on a core the event loops
 * need too, so this avoids printf: a cached date per second, numbers by hand. */
static void put_int(ag_buf_t *b, int64_t v, int *rc)
{
    char num[24];
    size_t n = 0;
    if (*rc)
        return;
    if (v < 0) {
        num[n++] = '-';
        v = v == INT64_MIN ? INT64_MAX : -v; /* off by one at INT64_MIN: never a count */
    }
    n += ag_fmt_u64(num + n, (uint64_t)v);
    *rc = ag_buf_append(b, num, n);
}

static void put_lit(ag_buf_t *b, const char *s, int *rc)
{
    if (*rc == 0)
        *rc = ag_buf_append_cstr(b, s);
}

static void put_str(ag_buf_t *b, const char *s, size_t cap, int *rc)
{
    if (*rc == 0)
        *rc = ag_json_append_string(b, ag_str(s, strnlen(s, cap)));
}

/* USD with up to 9 decimals and no trailing zeros, as "%.9f" then trimmed. */
static void put_usd(ag_buf_t *b, double cost, int *rc)
{
    if (!(isfinite(cost) && cost > 0) || cost >= 1e9) {
        put_lit(b, cost >= 1e9 && isfinite(cost) ? "999999999" : "0", rc);
        return;
    }
    uint64_t nano = (uint64_t)llround(cost * 1e9);
    put_int(b, (int64_t)(nano / 1000000000u), rc);
    uint64_t frac = nano % 1000000000u;
    if (frac == 0 || *rc)
        return;
    char digits[10];
    digits[0] = '.';
    for (int i = 9; i >= 1; i--) {
        digits[i] = (char)('0' + frac % 10);
        frac /= 10;
    }
    size_t n = 10;
    while (n > 1 && digits[n - 1] == '0')
        n--;
    *rc = ag_buf_append(b, digits, n);
}

/* Microseconds as milliseconds with exactly 3 decimals: 1234 -> "1.234". */
static void put_ms3(ag_buf_t *b, uint32_t us, int *rc)
{
    put_int(b, us / 1000, rc);
    char frac[4] = {'.', (char)('0' + us / 100 % 10), (char)('0' + us / 10 % 10),
                    (char)('0' + us % 10)};
    if (*rc == 0)
        *rc = ag_buf_append(b, frac, sizeof(frac));
}

/* Appends one NDJSON line. Fields keep the seed's names and order first. */
static int entry_to_json(ag_buf_t *b, const ag_usage_entry_t *e, double cost, line_clock_t *clk)
{
    int rc = 0;
    int64_t sec = e->timestamp_ms / 1000, ms = e->timestamp_ms % 1000;
    if (ms < 0) {
        sec -= 1;
        ms += 1000;
    }
    if (sec != clk->second) {
        char ts[64];
        ag_format_time_iso(sec * 1000000, ts); /* "YYYY-MM-DDTHH:MM:SS.000Z" */
        size_t plen = strlen(ts) - 4;          /* keep up to the dot */
        if (plen >= sizeof(clk->prefix))
            return AG_EINVALID;
        memcpy(clk->prefix, ts, plen);
        clk->prefix[plen] = '\0';
        clk->second = sec;
    }
    char frac[5] = {(char)('0' + ms / 100), (char)('0' + ms / 10 % 10), (char)('0' + ms % 10), 'Z',
                    '\0'};
    put_lit(b, "{\"timestamp\":\"", &rc);
    put_lit(b, clk->prefix, &rc);
    put_lit(b, frac, &rc);
    put_lit(b, "\",\"model\":", &rc);
    put_str(b, e->model, sizeof(e->model), &rc);
    put_lit(b, ",\"promptLength\":", &rc);
    put_int(b, e->prompt_length, &rc);
    put_lit(b, ",\"outputLength\":", &rc);
    put_int(b, e->output_length, &rc);
    put_lit(b, ",\"inputTokens\":", &rc);
    put_int(b, e->input_tokens, &rc);
    put_lit(b, ",\"outputTokens\":", &rc);
    put_int(b, e->output_tokens, &rc);
    put_lit(b, ",\"cacheCreationInputTokens\":", &rc);
    put_int(b, e->cache_creation_input_tokens, &rc);
    put_lit(b, ",\"cacheReadInputTokens\":", &rc);
    put_int(b, e->cache_read_input_tokens, &rc);
    put_lit(b, ",\"status\":", &rc);
    put_int(b, e->status, &rc);
    put_lit(b, e->cached ? ",\"cached\":true" : ",\"cached\":false", &rc);
    put_lit(b, e->stream ? ",\"stream\":true" : ",\"stream\":false", &rc);
    put_lit(b, ",\"latencyMs\":", &rc);
    put_int(b, e->latency_ms, &rc);
    put_lit(b, ",\"client\":", &rc);
    put_str(b, e->client, sizeof(e->client), &rc);
    put_lit(b, ",\"requestId\":", &rc);
    put_str(b, e->request_id, sizeof(e->request_id), &rc);
    put_lit(b, ",\"costUsd\":", &rc);
    put_usd(b, e->cached ? 0 : cost, &rc);
    if (strnlen(e->outcome, sizeof(e->outcome)) > 0) {
        put_lit(b, ",\"outcome\":", &rc);
        put_str(b, e->outcome, sizeof(e->outcome), &rc);
    }
    put_lit(b, ",\"route\":", &rc);
    put_str(b, e->route, sizeof(e->route), &rc);
    put_lit(b, ",\"cpuMs\":", &rc);
    put_ms3(b, e->cpu_us, &rc);
    put_lit(b, ",\"attempts\":", &rc);
    put_int(b, e->attempts, &rc);
    put_lit(b, ",\"queuedMs\":", &rc);
    put_int(b, e->queued_ms, &rc);
    if (strnlen(e->fallback_from, sizeof(e->fallback_from)) > 0) {
        put_lit(b, ",\"fallbackFrom\":", &rc);
        put_str(b, e->fallback_from, sizeof(e->fallback_from), &rc);
    }
    if (strnlen(e->key, sizeof(e->key)) > 0) {
        put_lit(b, ",\"key\":", &rc);
        put_str(b, e->key, sizeof(e->key), &rc);
    }
    if (e->cached) {
        put_lit(b, ",\"savedUsd\":", &rc);
        put_usd(b, cost, &rc);
    }
    if (strnlen(e->task, sizeof(e->task)) > 0) {
        put_lit(b, ",\"task\":", &rc);
        put_str(b, e->task, sizeof(e->task), &rc);
        put_lit(b, ",\"cron\":", &rc);
        put_str(b, e->cron, sizeof(e->cron), &rc);
        put_lit(b, ",\"scheduledTime\":", &rc);
        put_int(b, e->scheduled_ms, &rc);
        put_lit(b, ",\"outputs\":", &rc);
        put_str(b, e->outputs, sizeof(e->outputs), &rc);
    }
    put_lit(b, "}\n", &rc);
    return rc;
}

/* ---- clocks and waits -------------------------------------------------- */

static int64_t wall_ms(const ag_usage_log_t *log)
{
    return log->now_ms ? log->now_ms(log->clock_ctx) : ag_now_us() / 1000;
}

/* Ages use a monotonic clock: a wall clock stepped back must not hold entries. */
static int64_t age_ms(const ag_usage_log_t *log)
{
    return log->now_ms ? log->now_ms(log->clock_ctx) : ag_mono_us() / 1000;
}

static void deadline_in(struct timespec *ts, int64_t ms)
{
    clock_gettime(CLOCK_MONOTONIC, ts);
    ts->tv_sec += (time_t)(ms / 1000);
    ts->tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts->tv_nsec >= 1000000000L) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000L;
    }
}

static void wait_ms(pthread_cond_t *cv, pthread_mutex_t *mu, int64_t ms)
{
    struct timespec ts;
    deadline_in(&ts, ms);
    pthread_cond_timedwait(cv, mu, &ts);
}

/* ---- append side ------------------------------------------------------- */

int ag_usage_log_append(ag_usage_log_t *log, const ag_usage_entry_t *e)
{
    if (log == NULL || e == NULL)
        return AG_EINVALID;
    pthread_mutex_lock(&log->mu);
    if (log->closing) {
        pthread_mutex_unlock(&log->mu);
        return AG_USAGE_ECLOSED;
    }
    if (log->npending == log->capacity) {
        if (!log->full_signalled) {
            /* once: a flood of refused appends must not spin a writer that
             * cannot take (its store is failing) */
            log->full_signalled = true;
            pthread_cond_signal(&log->wake);
        }
        if (log->policy == AG_USAGE_BLOCK) {
            log->st.blocked++;
            struct timespec ts;
            deadline_in(&ts, log->block_timeout_ms);
            while (log->npending == log->capacity && !log->closing)
                if (pthread_cond_timedwait(&log->done, &log->mu, &ts) == ETIMEDOUT)
                    break;
            if (log->closing) {
                pthread_mutex_unlock(&log->mu);
                return AG_USAGE_ECLOSED;
            }
        }
        if (log->npending == log->capacity) {
            log->st.dropped++;
            pthread_mutex_unlock(&log->mu);
            return AG_EFULL;
        }
    }
    ag_usage_entry_t *slot = &log->pending[log->npending++];
    *slot = *e;
    if (slot->timestamp_ms <= 0)
        slot->timestamp_ms = wall_ms(log);
    if (slot->timestamp_ms > MAX_TIMESTAMP_MS)
        slot->timestamp_ms = MAX_TIMESTAMP_MS;
    if (log->npending == 1)
        log->pending_first = age_ms(log);
    log->st.accepted++;
    /* Wake the writer only when it needs to know: it sleeps untimed with
     * nothing to do, or an object's worth is waiting. Otherwise its own
     * deadline comes first, and the append costs no syscall. */
    if ((log->npending == 1 && log->writer_idle) || log->npending == log->wake_threshold)
        pthread_cond_signal(&log->wake);
    pthread_mutex_unlock(&log->mu);
    return 0;
}

/* ---- writer ------------------------------------------------------------ */

static bool taken_left(const ag_usage_log_t *log)
{
    return log->taken_pos < log->ntaken;
}

static bool under_cap(const ag_usage_log_t *log)
{
    return log->retained < log->max_retained;
}

static int64_t min64(int64_t a, int64_t b)
{
    return a < b ? a : b;
}

/* The age-clock time of the writer's next due work; INT64_MAX for none. Under mu. */
static int64_t next_deadline(const ag_usage_log_t *log)
{
    int64_t dl = INT64_MAX;
    int64_t iv = log->interval_ms;
    if (log->sealed)
        dl = log->sealed->next_try;
    if (log->spool)
        dl = min64(dl, log->spool_next_try);
    for (const batch_t *b = log->open; b; b = b->next)
        dl = min64(dl, b->first_accept + iv);
    if (under_cap(log)) {
        if (taken_left(log))
            dl = min64(dl, log->taken_first + iv);
        else if (log->npending > 0)
            dl = min64(dl, log->pending_first + iv);
    }
    return dl;
}

static void report_put(ag_usage_log_t *log, const batch_t *b, int rc)
{
    int64_t now = ag_mono_us();
    if (rc < 0) {
        log->errs_unreported++;
        if (!log->failing || now - log->warn_put_us >= WARN_EVERY_US) {
            ag_log_warn("usage log: put %s failed: %s (%" PRIu64
                        " failed puts since the last warning; %zu bytes kept for retry)",
                        b->key, ag_strerror(rc), log->errs_unreported, log->retained);
            log->warn_put_us = now;
            log->errs_unreported = 0;
        }
        log->failing = true;
    } else if (log->failing) {
        ag_log_info("usage log: the store accepts writes again (%s)", b->key);
        log->failing = false;
        log->errs_unreported = 0;
    }
    if (log->on_flush) {
        ag_usage_flush_info_t info = {b->key, b->n, b->buf.len, rc};
        log->on_flush(log->flush_ctx, &info);
    }
}

static void report_drops(ag_usage_log_t *log, uint64_t dropped, bool now_or_never)
{
    if (dropped == log->dropped_reported)
        return;
    int64_t now = ag_mono_us();
    if (!now_or_never && log->warn_drop_us != 0 && now - log->warn_drop_us < WARN_EVERY_US)
        return;
    ag_log_warn("usage log: queue full (%zu entries): %" PRIu64 " appends refused since the last "
                "warning",
                log->capacity, dropped - log->dropped_reported);
    log->dropped_reported = dropped;
    log->warn_drop_us = now;
}

static void batch_free(batch_t *b)
{
    ag_buf_fini(&b->buf);
    free(b);
}

static void seal(ag_usage_log_t *log, batch_t *b, int64_t now)
{
    /* unlink from the open list */
    for (batch_t **pp = &log->open; *pp; pp = &(*pp)->next) {
        if (*pp == b) {
            *pp = b->next;
            break;
        }
    }
    log->nopen--;
    time_t secs = (time_t)(b->day * 86400);
    struct tm tm;
    gmtime_r(&secs, &tm);
    /* Zero-padded so that byte order (how listings sort) is time order. */
    snprintf(b->key, sizeof(b->key), "logs/%04d/%02d/%02d/%013" PRId64 "-%s-%010" PRIu64 ".ndjson",
             tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, b->min_ts, log->instance, log->seq++);
    b->next_try = now;
    b->next = NULL;
    *log->sealed_tail = b;
    log->sealed_tail = &b->next;
}

static void seal_open(ag_usage_log_t *log, bool all, int64_t now)
{
    batch_t *b = log->open;
    while (b) {
        batch_t *next = b->next;
        if (all || now - b->first_accept >= (int64_t)log->interval_ms)
            seal(log, b, now);
        b = next;
    }
}

/* Adds log->line (the NDJSON of an entry with timestamp ts) to its day's batch. */
static int add_line(ag_usage_log_t *log, int64_t ts, int64_t now)
{
    int64_t day = ts / DAY_MS;
    batch_t *b = log->open;
    while (b && b->day != day)
        b = b->next;
    if (b && b->buf.len + log->line.len > log->flush_bytes) {
        seal(log, b, now);
        b = NULL;
    }
    if (b == NULL) {
        if (log->nopen >= MAX_OPEN_BATCHES)
            seal_open(log, true, now);
        b = calloc(1, sizeof(*b));
        if (b == NULL)
            return -ENOMEM;
        ag_buf_init(&b->buf, 0);
        b->day = day;
        b->min_ts = ts;
        b->first_accept = log->taken_first;
        b->next = log->open;
        log->open = b;
        log->nopen++;
    }
    int rc = ag_buf_append(&b->buf, log->line.data, log->line.len);
    if (rc < 0)
        return rc;
    b->n++;
    b->min_ts = min64(b->min_ts, ts);
    log->retained += log->line.len;
    if (b->buf.len >= log->flush_bytes)
        seal(log, b, now);
    return 0;
}

static int serialize_taken(ag_usage_log_t *log, bool force, int64_t now)
{
    int rc = 0;
    pthread_mutex_lock(&log->prices_mu);
    while (taken_left(log) && (force || under_cap(log))) {
        const ag_usage_entry_t *e = &log->taken[log->taken_pos];
        /* A cache hit used nothing upstream: it costs 0, and says what it saved. */
        double cost = ag_usage_cost_usd(log->prices, log->nprices, e->model, e->input_tokens,
                                        e->output_tokens, e->cache_creation_input_tokens,
                                        e->cache_read_input_tokens);
        ag_buf_reset(&log->line);
        rc = entry_to_json(&log->line, e, cost, &log->clock);
        if (rc == 0)
            rc = add_line(log, e->timestamp_ms, now);
        if (rc < 0) {
            /* out of memory: the entry stays taken and is tried again an
             * interval later, not in a tight loop */
            log->taken_first = now;
            break;
        }
        log->taken_pos++;
    }
    pthread_mutex_unlock(&log->prices_mu);
    return rc;
}

static void pop_sealed(ag_usage_log_t *log)
{
    batch_t *b = log->sealed;
    log->sealed = b->next;
    if (log->sealed == NULL)
        log->sealed_tail = &log->sealed;
    log->retained -= b->buf.len;
    batch_free(b);
}

static void publish_spool_stats(ag_usage_log_t *log)
{
    pthread_mutex_lock(&log->mu);
    log->st.spool_bytes = ag__usage_spool_bytes(log->spool);
    log->st.retained_bytes = log->retained;
    pthread_mutex_unlock(&log->mu);
}

/* The head sealed batch into the spool. Loud when the spool cannot take it:
 * the batch then stays in memory, under max_retained, as without a spool. */
static int spool_head(ag_usage_log_t *log, int64_t now_ms)
{
    batch_t *b = log->sealed;
    int rc = ag__usage_spool_put(log->spool, b->key, b->buf.data, b->buf.len, b->n);
    if (rc < 0) {
        int64_t now = ag_mono_us();
        pthread_mutex_lock(&log->mu);
        if (rc == AG_EFULL)
            log->st.spool_full++;
        pthread_mutex_unlock(&log->mu);
        if (log->warn_spool_us == 0 || now - log->warn_spool_us >= WARN_EVERY_US) {
            if (rc == AG_EFULL)
                ag_log_error("usage log: the spool %s is full (%" PRIu64 " of %" PRIu64
                             " bytes, usage_log_spool_max): %s (%zu entries) stays in memory; "
                             "once %zu bytes wait there, new entries are refused and counted "
                             "as dropped",
                             ag__usage_spool_dir(log->spool), ag__usage_spool_bytes(log->spool),
                             ag__usage_spool_max(log->spool), b->key, b->n, log->max_retained);
            else
                ag_log_error("usage log: cannot write %s to the spool %s: %s (kept in memory)",
                             b->key, ag__usage_spool_dir(log->spool), ag_strerror(rc));
            log->warn_spool_us = now;
        }
        return rc;
    }
    if (!log->spooling)
        ag_log_warn("usage log: the store refuses puts: batches go to the spool %s until it "
                    "accepts them again",
                    ag__usage_spool_dir(log->spool));
    log->spooling = true;
    log->warn_spool_us = 0; /* the next refusal is news again */
    log->spool_next_try = min64(log->spool_next_try, now_ms + log->interval_ms); /* the probe */
    pthread_mutex_lock(&log->mu);
    log->st.spooled += b->n;
    pthread_mutex_unlock(&log->mu);
    pop_sealed(log);
    publish_spool_stats(log);
    return 0;
}

/* Spooled batches into the store, oldest first: one page, or (forced) all of
 * them. @return 0, or the failed put's error (the store is down). */
static int drain_spool(ag_usage_log_t *log, bool force, int64_t now)
{
    int rc = 0;
    ag__usage_spool_drained_t d = {0};
    size_t objects = 0;
    uint64_t entries = 0;
    for (;;) {
        rc = ag__usage_spool_drain(log->spool, log->store, log->own, SPOOL_PAGE, &d);
        objects += d.objects;
        entries += d.own_entries + d.other_entries;
        pthread_mutex_lock(&log->mu);
        log->st.written += d.own_entries;
        log->st.recovered += d.other_entries;
        log->st.flushes += d.objects;
        log->st.spool_bytes = ag__usage_spool_bytes(log->spool);
        if (rc < 0)
            log->st.write_errors++;
        pthread_mutex_unlock(&log->mu);
        if (d.unreadable)
            ag_log_error("usage log: %zu files of the spool %s cannot be read (%s): they stay "
                         "there, undelivered; look at them by hand",
                         d.unreadable, ag__usage_spool_dir(log->spool),
                         ag_strerror(d.unreadable_rc));
        if (rc < 0 || !d.more || !force)
            break;
    }
    if (rc < 0) {
        log->spool_next_try = now + log->interval_ms;
        log->errs_unreported++;
        int64_t t = ag_mono_us();
        if (!log->failing || t - log->warn_put_us >= WARN_EVERY_US) {
            ag_log_warn("usage log: the store still refuses puts: %s (%" PRIu64
                        " failed puts since the last warning; %" PRIu64
                        " bytes wait in the spool %s)",
                        ag_strerror(rc), log->errs_unreported, ag__usage_spool_bytes(log->spool),
                        ag__usage_spool_dir(log->spool));
            log->warn_put_us = t;
            log->errs_unreported = 0;
        }
        log->failing = true;
        return rc;
    }
    log->spool_next_try = d.more ? now : now + SPOOL_RESCAN_MS;
    if (objects > 0 && log->failing) {
        ag_log_info("usage log: the store accepts writes again");
        log->failing = false;
        log->errs_unreported = 0;
    }
    if (!d.more && (objects > 0 || log->spooling)) {
        ag_log_info("usage log: the spool is drained (%zu batches, %" PRIu64
                    " entries put into the store)",
                    objects, entries);
        log->spooling = false;
    }
    return 0;
}

/* Puts what is due. With a spool, the spool drains first (its oldest batch
 * is also the probe of a store that is down), and a batch goes to the spool
 * after AG_USAGE_SPOOL_AFTER failed puts, at once while closing, and without
 * a try while the store is known to be down. */
static int put_sealed(ag_usage_log_t *log, bool force, bool closing, int64_t now)
{
    int first_rc = 0;
    bool down = false;
    if (log->spool && !closing && (force || log->spool_next_try <= now)) {
        first_rc = drain_spool(log, force, now);
        down = first_rc < 0;
    } else if (log->spool && log->failing && ag__usage_spool_files(log->spool) > 0) {
        down = true; /* the last drain failed and the next is not due: no put would do better */
    }
    while (log->sealed && (force || log->sealed->next_try <= now)) {
        batch_t *b = log->sealed;
        if (down) {
            int src = spool_head(log, now);
            if (src == 0)
                continue;
            b->next_try = now + log->interval_ms; /* in memory, tried again later */
            return first_rc < 0 ? first_rc : src;
        }
        char count[24];
        snprintf(count, sizeof(count), "%zu", b->n);
        ag_obj_meta_pair_t meta = {"entries", count};
        ag_obj_put_opts_t po = {
            .content_type = "application/x-ndjson", .custom = &meta, .ncustom = 1};
        int rc =
            ag_objstore_put(log->store, b->key, strlen(b->key), b->buf.data, b->buf.len, &po, NULL);
        pthread_mutex_lock(&log->mu);
        if (rc < 0) {
            log->st.write_errors++;
        } else {
            log->st.written += b->n;
            log->st.flushes++;
            log->st.retained_bytes = log->retained - b->buf.len;
        }
        pthread_mutex_unlock(&log->mu);
        if (rc < 0) {
            b->attempts++;
            b->next_try = now + log->interval_ms;
            report_put(log, b, rc);
            if (first_rc == 0)
                first_rc = rc;
            if (log->spool && (closing || b->attempts >= AG_USAGE_SPOOL_AFTER) &&
                spool_head(log, now) == 0) {
                down = true; /* the batches behind it are not tried either */
                continue;
            }
            return first_rc;
        }
        report_put(log, b, 0);
        pop_sealed(log);
    }
    return first_rc;
}

/* One pass. Forced (flush, close): everything accepted before the pass began
 * is put, cap or not. Else only what is due by size or age. At most two
 * rounds, so that a flush returns under a steady stream of appends: the
 * second take sees every entry appended before the pass started. */
static int writer_pass(ag_usage_log_t *log, bool force, bool closing)
{
    int first_rc = 0;
    for (int round = 0; round < 2; round++) {
        pthread_mutex_lock(&log->mu);
        bool took = false;
        if (!taken_left(log) && log->npending > 0 && (force || under_cap(log))) {
            ag_usage_entry_t *t = log->taken;
            log->taken = log->pending;
            log->pending = t;
            log->ntaken = log->npending;
            log->taken_pos = 0;
            log->taken_first = log->pending_first;
            log->npending = 0;
            log->full_signalled = false;
            took = true;
            pthread_cond_broadcast(&log->done); /* room for blocked appenders */
        }
        uint64_t dropped = log->st.dropped;
        pthread_mutex_unlock(&log->mu);
        report_drops(log, dropped, false);
        if (round > 0 && !took)
            break;

        int64_t now = age_ms(log);
        int rc = serialize_taken(log, force, now);
        seal_open(log, force, now);
        int prc = put_sealed(log, force, closing, now);
        if (first_rc == 0)
            first_rc = rc < 0 ? rc : prc;
        if (first_rc < 0)
            break;
    }
    pthread_mutex_lock(&log->mu);
    log->st.retained_bytes = log->retained;
    pthread_mutex_unlock(&log->mu);
    return first_rc;
}

/* Close could not write: the lines go to the server log rather than nowhere. */
static void spill(batch_t *list, ag_buf_t *out, uint64_t *lost)
{
    for (batch_t *b = list; b; b = b->next) {
        const char *p = b->buf.data, *end = b->buf.data + b->buf.len;
        while (p && p < end) {
            const char *nl = memchr(p, '\n', (size_t)(end - p));
            size_t len = nl ? (size_t)(nl - p) + 1 : (size_t)(end - p);
            ag_buf_reset(out);
            if (ag_buf_append_cstr(out, SPILL_PREFIX) == 0 && ag_buf_append(out, p, len) == 0)
                ag_log_raw(out->data, out->len);
            p += len;
        }
        *lost += b->n;
    }
}

static void give_up(ag_usage_log_t *log)
{
    ag_buf_t out;
    ag_buf_init(&out, 0);
    uint64_t lost = 0;
    spill(log->sealed, &out, &lost);
    spill(log->open, &out, &lost);
    /* Entries never serialised (only after out-of-memory): counted, not printed. */
    lost += log->ntaken - log->taken_pos;
    log->taken_pos = log->ntaken;
    ag_buf_fini(&out);
    for (batch_t *b = log->sealed, *next; b; b = next) {
        next = b->next;
        batch_free(b);
    }
    for (batch_t *b = log->open, *next; b; b = next) {
        next = b->next;
        batch_free(b);
    }
    log->sealed = NULL;
    log->sealed_tail = &log->sealed;
    log->open = NULL;
    log->nopen = 0;
    log->retained = 0;
    pthread_mutex_lock(&log->mu);
    lost += log->npending;
    log->npending = 0;
    log->st.lost += lost;
    log->st.retained_bytes = 0;
    pthread_mutex_unlock(&log->mu);
    ag_log_error("usage log: the store kept failing for %u ms at close: %" PRIu64
                 " entries were not written (copied to this log as '" SPILL_PREFIX "' lines)",
                 log->close_timeout_ms, lost);
}

static void *writer_main(void *arg)
{
    ag_usage_log_t *log = arg;
    int64_t close_deadline_us = 0;
    int64_t backoff_ms = 10;
    pthread_mutex_lock(&log->mu);
    for (;;) {
        for (;;) {
            if (log->closing || log->flush_req != log->flush_done ||
                log->tick_req != log->tick_done)
                break;
            if (log->npending >= log->wake_threshold && !taken_left(log) && under_cap(log))
                break;
            int64_t dl = next_deadline(log);
            if (dl == INT64_MAX) {
                log->writer_idle = true;
                pthread_cond_wait(&log->wake, &log->mu);
                log->writer_idle = false;
                continue;
            }
            int64_t now = age_ms(log);
            if (dl <= now)
                break;
            /* Capped, so that an injected clock that jumped is noticed too. */
            wait_ms(&log->wake, &log->mu, min64(dl - now, log->interval_ms));
        }
        uint64_t ftarget = log->flush_req, ttarget = log->tick_req;
        bool stopping = log->closing;
        bool force = stopping || ftarget != log->flush_done;
        pthread_mutex_unlock(&log->mu);

        int rc = writer_pass(log, force, stopping);

        pthread_mutex_lock(&log->mu);
        if (ftarget != log->flush_done) {
            log->flush_done = ftarget;
            log->flush_rc = rc;
        }
        if (ttarget != log->tick_done) {
            log->tick_done = ttarget;
            log->tick_rc = rc;
        }
        pthread_cond_broadcast(&log->done);
        if (!stopping)
            continue;
        if (log->npending == 0 && !taken_left(log) && log->open == NULL && log->sealed == NULL)
            break;
        int64_t now_us = ag_mono_us();
        if (close_deadline_us == 0)
            close_deadline_us = now_us + (int64_t)log->close_timeout_ms * 1000;
        if (now_us >= close_deadline_us) {
            pthread_mutex_unlock(&log->mu);
            give_up(log);
            pthread_mutex_lock(&log->mu);
            break;
        }
        wait_ms(&log->wake, &log->mu, min64(backoff_ms, (close_deadline_us - now_us) / 1000 + 1));
        backoff_ms = min64(backoff_ms * 2, 1000);
    }
    uint64_t dropped = log->st.dropped;
    pthread_mutex_unlock(&log->mu);
    report_drops(log, dropped, true); /* the last count, however recent the previous */
    pthread_mutex_lock(&log->mu);
    log->writer_exited = true;
    pthread_cond_broadcast(&log->done);
    pthread_mutex_unlock(&log->mu);
    return NULL;
}

/* ---- closed days ------------------------------------------------------- */

#define MAINT_INTERVAL_MS 3600000

static void *maint_main(void *arg)
{
    ag_usage_log_t *log = arg;
    pthread_mutex_lock(&log->mu);
    while (!log->closing) {
        pthread_mutex_unlock(&log->mu);
        ag_usage_days_stats_t st;
        int rc = ag_usage_log_maintain(log->store, wall_ms(log), log->retention_days,
                                       log->compress_days, &st);
        if (rc < 0)
            ag_log_warn("usage log: cannot tidy closed days: %s", ag_strerror(rc));
        else if (st.days_deleted || st.days_compressed)
            ag_log_info("usage log: %u day%s past the %u-day retention deleted, %u closed day%s "
                        "gzipped",
                        st.days_deleted, st.days_deleted == 1 ? "" : "s", log->retention_days,
                        st.days_compressed, st.days_compressed == 1 ? "" : "s");
        pthread_mutex_lock(&log->mu);
        if (!log->closing)
            wait_ms(&log->maint_wake, &log->mu, MAINT_INTERVAL_MS);
    }
    pthread_mutex_unlock(&log->mu);
    return NULL;
}

/* ---- lifecycle --------------------------------------------------------- */

static bool instance_ok(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 48)
        return false;
    for (; *s; s++) {
        char c = *s;
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-'))
            return false;
    }
    return true;
}

static void random_hex(char *out, size_t nbytes)
{
    unsigned char r[16];
    if (nbytes > sizeof(r))
        nbytes = sizeof(r);
    if (getrandom(r, nbytes, 0) != (ssize_t)nbytes) {
        /* no entropy source: time and pid still keep processes apart */
        uint64_t x = (uint64_t)ag_now_us() ^ ((uint64_t)getpid() << 40) ^ (uint64_t)ag_mono_us();
        for (size_t i = 0; i < nbytes; i++) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            r[i] = (unsigned char)x;
        }
    }
    ag_hex_encode(r, nbytes, out);
}

static void log_destroy(ag_usage_log_t *log)
{
    pthread_mutex_destroy(&log->mu);
    pthread_mutex_destroy(&log->prices_mu);
    pthread_cond_destroy(&log->wake);
    pthread_cond_destroy(&log->done);
    pthread_cond_destroy(&log->maint_wake);
    free(log->pending);
    free(log->taken);
    ag__usage_spool_free(log->spool);
    prices_free(log->prices, log->nprices);
    ag_buf_fini(&log->line);
    free(log);
}

int ag_usage_log_open(const ag_usage_log_options_t *opts, ag_usage_log_t **out)
{
    *out = NULL;
    if (opts == NULL || opts->store == NULL)
        return AG_EINVALID;
    if (opts->instance_id && !instance_ok(opts->instance_id))
        return AG_EINVALID;
    if (opts->queue_full_policy != AG_USAGE_DROP && opts->queue_full_policy != AG_USAGE_BLOCK)
        return AG_EINVALID;
    ag_usage_log_t *log = calloc(1, sizeof(*log));
    if (log == NULL)
        return -ENOMEM;
    log->store = opts->store;
    log->capacity = opts->queue_capacity ? opts->queue_capacity : DEFAULT_CAPACITY;
    log->flush_bytes = opts->flush_bytes ? opts->flush_bytes : DEFAULT_FLUSH_BYTES;
    log->interval_ms = opts->flush_interval_ms ? opts->flush_interval_ms : DEFAULT_INTERVAL_MS;
    log->max_retained = opts->max_retained_bytes ? opts->max_retained_bytes : DEFAULT_RETAINED;
    log->policy = opts->queue_full_policy;
    log->block_timeout_ms = opts->block_timeout_ms ? opts->block_timeout_ms : DEFAULT_BLOCK_MS;
    log->close_timeout_ms = opts->close_timeout_ms ? opts->close_timeout_ms : DEFAULT_CLOSE_MS;
    log->now_ms = opts->now_ms;
    log->clock_ctx = opts->clock_ctx;
    log->on_flush = opts->on_flush;
    log->flush_ctx = opts->flush_ctx;
    /* Wake the writer a little before an object's worth (lines run ~300-400
     * bytes) is waiting, and long before the queue is full. */
    size_t thr = log->flush_bytes / 512;
    size_t half = log->capacity / 2;
    log->wake_threshold = thr < 1 ? 1 : thr;
    if (log->wake_threshold > half)
        log->wake_threshold = half < 1 ? 1 : half;
    char rnd[33];
    if (opts->instance_id) {
        random_hex(rnd, 4);
        snprintf(log->instance, sizeof(log->instance), "%s-%s", opts->instance_id, rnd);
    } else {
        random_hex(rnd, 8);
        snprintf(log->instance, sizeof(log->instance), "%s", rnd);
    }
    snprintf(log->own, sizeof(log->own), "-%s-", log->instance);
    ag_buf_init(&log->line, 0);
    log->clock.second = INT64_MIN;
    log->sealed_tail = &log->sealed;

    int rc = -ENOMEM;
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_mutex_init(&log->mu, NULL);
    pthread_mutex_init(&log->prices_mu, NULL);
    pthread_cond_init(&log->wake, &ca);
    pthread_cond_init(&log->done, &ca);
    pthread_cond_init(&log->maint_wake, &ca);
    pthread_condattr_destroy(&ca);
    log->retention_days = opts->retention_days;
    log->compress_days = opts->compress_days;
    /* Both arrays are reserved whole; pages are touched only as far as the
     * queue ever fills, so the memory in use follows the peak, not the cap. */
    if (log->capacity > SIZE_MAX / sizeof(ag_usage_entry_t))
        goto fail;
    log->pending = malloc(log->capacity * sizeof(ag_usage_entry_t));
    log->taken = malloc(log->capacity * sizeof(ag_usage_entry_t));
    if (log->pending == NULL || log->taken == NULL)
        goto fail;
    rc = prices_copy(opts->prices, opts->nprices, &log->prices);
    if (rc < 0)
        goto fail;
    log->nprices = log->prices ? opts->nprices : 0;
    if (opts->spool_dir) {
        /* What an earlier run spooled is drained by the first pass. */
        rc = ag__usage_spool_open(opts->spool_dir,
                                  opts->spool_max_bytes ? opts->spool_max_bytes : DEFAULT_SPOOL_MAX,
                                  &log->spool);
        if (rc < 0)
            goto fail;
        log->st.spool_bytes = ag__usage_spool_bytes(log->spool);
        log->spool_next_try = INT64_MIN;
        if (ag__usage_spool_files(log->spool) > 0)
            ag_log_info("usage log: %" PRIu64 " batches (%" PRIu64
                        " bytes) wait in the spool %s: they are put into the store first",
                        ag__usage_spool_files(log->spool), ag__usage_spool_bytes(log->spool),
                        opts->spool_dir);
    }

    /* The writer takes no signals: SIGTERM and friends belong to the main
     * loop, and a blocked SIGXFSZ turns a file-size limit into EFBIG. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int prc = pthread_create(&log->thread, NULL, writer_main, log);
    if (prc == 0 && (log->retention_days || log->compress_days)) {
        int mrc = pthread_create(&log->maint, NULL, maint_main, log);
        log->maint_started = mrc == 0;
        if (mrc != 0)
            ag_log_warn("usage log: cannot start the closed-days thread: %s", strerror(mrc));
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (prc != 0) {
        rc = -prc;
        goto fail;
    }
    *out = log;
    return 0;
fail:
    log_destroy(log);
    return rc;
}

static int wait_pass(ag_usage_log_t *log, uint64_t *req, const uint64_t *done, const int *rcp)
{
    pthread_mutex_lock(&log->mu);
    if (log->closing) {
        pthread_mutex_unlock(&log->mu);
        return AG_USAGE_ECLOSED;
    }
    uint64_t target = ++*req;
    pthread_cond_signal(&log->wake);
    while (*done < target && !log->writer_exited)
        pthread_cond_wait(&log->done, &log->mu);
    int rc = *done >= target ? *rcp : AG_USAGE_ECLOSED;
    pthread_mutex_unlock(&log->mu);
    return rc;
}

int ag_usage_log_flush(ag_usage_log_t *log)
{
    return wait_pass(log, &log->flush_req, &log->flush_done, &log->flush_rc);
}

int ag_usage_log_tick(ag_usage_log_t *log)
{
    return wait_pass(log, &log->tick_req, &log->tick_done, &log->tick_rc);
}

int ag_usage_log_set_prices(ag_usage_log_t *log, const ag_price_t *prices, size_t n)
{
    ag_price_t *copy;
    int rc = prices_copy(prices, n, &copy);
    if (rc < 0)
        return rc;
    pthread_mutex_lock(&log->prices_mu);
    ag_price_t *old = log->prices;
    size_t nold = log->nprices;
    log->prices = copy;
    log->nprices = copy ? n : 0;
    pthread_mutex_unlock(&log->prices_mu);
    prices_free(old, nold);
    return 0;
}

void ag_usage_log_close(ag_usage_log_t *log)
{
    if (log == NULL)
        return;
    pthread_mutex_lock(&log->mu);
    if (log->closing) {
        /* a second closer waits for the first */
        while (!log->writer_exited)
            pthread_cond_wait(&log->done, &log->mu);
        pthread_mutex_unlock(&log->mu);
        return;
    }
    log->closing = true;
    pthread_cond_signal(&log->wake);
    pthread_cond_signal(&log->maint_wake);
    pthread_cond_broadcast(&log->done); /* blocked appenders give up */
    pthread_mutex_unlock(&log->mu);
    pthread_join(log->thread, NULL);
    if (log->maint_started)
        pthread_join(log->maint, NULL); /* a pass in progress finishes first */
}

void ag_usage_log_free(ag_usage_log_t *log)
{
    if (log == NULL)
        return;
    ag_usage_log_close(log);
    log_destroy(log);
}

void ag_usage_log_stats(ag_usage_log_t *log, ag_usage_log_stats_t *out)
{
    pthread_mutex_lock(&log->mu);
    *out = log->st;
    out->queued = out->accepted - out->written - out->lost;
    pthread_mutex_unlock(&log->mu);
}
