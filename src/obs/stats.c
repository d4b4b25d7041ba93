/* SPDX-License-Identifier: MIT
 *
 * stats.c: analytics over the usage log (stats.h). The calling thread lists
 * the objects of the window's day folders and queues their keys; a few reader
 * threads take them, read each with large preads and scan its lines with a
 * hand-written scanner that decodes only the fields it sums. Each reader sums
 * into its own totals and group table; they are merged once at the end.
 */
#include "util/platform.h"

#include "obs/stats.h"
#include "util/window.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <string.h>
#include <unistd.h>

#include <zlib.h>

#include "store/usage_log.h"
#include "util/errors.h"
#include "util/fmt.h"
#include "util/fs.h"
#include "util/hist.h"
#include "util/json.h"
#include "util/jtok.h"

#define DAY_MS 86400000LL
#define HOUR_MS 3600000LL
#define MAX_UNTIL_MS 253402300800000LL    /* 10000-01-01: object names have 4-digit years */
#define UPLOAD_MARGIN_MS (10 * 60 * 1000) /* clocks of different writers may differ this much */
#define READ_CHUNK (1u << 20) /* per pread: big enough for few syscalls, small enough for L2/L3 */
#define QUEUE_CAP 2048        /* keys listed ahead of the readers */
#define MAX_THREADS 4
#define MAX_GROUPS_LIMIT 1000000 /* a caller's max_groups is capped here */
#define ARENA_BLOCK (256u << 10)

/* ---- time --------------------------------------------------------------- */

static int64_t floordiv(int64_t a, int64_t b)
{
    int64_t q = a / b;
    return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q;
}

/* Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm). */
static int64_t days_from_civil(int64_t y, unsigned m, unsigned d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    unsigned yoe = (unsigned)(y - era * 400);
    unsigned doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
    unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (int64_t)doe - 719468;
}

static void civil_from_days(int64_t z, int64_t *y, unsigned *m, unsigned *d)
{
    z += 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    unsigned doe = (unsigned)(z - era * 146097);
    unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    unsigned mp = (5 * doy + 2) / 153;
    *d = doy - (153 * mp + 2) / 5 + 1;
    *m = mp < 10 ? mp + 3 : mp - 9;
    *y = (int64_t)yoe + era * 400 + (*m <= 2);
}

static bool is_leap(int64_t y)
{
    return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

static unsigned days_in_month(int64_t y, unsigned m)
{
    static const unsigned char dim[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    return m == 2 && is_leap(y) ? 29 : dim[m - 1];
}

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

/* n decimal digits at s, or -1. */
static int digits(const char *s, unsigned n)
{
    int v = 0;
    for (unsigned i = 0; i < n; i++) {
        if (!is_digit(s[i]))
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    return v;
}

/* "YYYY-MM-DD" -> days since the epoch, or INT64_MIN. */
static int64_t parse_date(const char *s)
{
    int y = digits(s, 4), m = digits(s + 5, 2), d = digits(s + 8, 2);
    if (y < 0 || m < 1 || m > 12 || d < 1 || s[4] != '-' || s[7] != '-' ||
        (unsigned)d > days_in_month(y, (unsigned)m))
        return INT64_MIN;
    return days_from_civil(y, (unsigned)m, (unsigned)d);
}

/* The date of the previous timestamp a reader parsed: lines of one object
 * share it, so the calendar arithmetic runs about once per object. */
typedef struct date_cache {
    char date[10];
    int64_t day; /* INT64_MIN: empty */
} date_cache_t;

/* "YYYY-MM-DDTHH:MM:SS[.fraction]Z" (what toISOString() and the log write)
 * -> epoch ms; false when it is anything else. */
static bool parse_timestamp(const char *s, size_t n, date_cache_t *dc, int64_t *out)
{
    if (n < 20 || s[10] != 'T' || s[13] != ':' || s[16] != ':' || s[n - 1] != 'Z')
        return false;
    int64_t day;
    if (dc->day != INT64_MIN && memcmp(s, dc->date, 10) == 0) {
        day = dc->day;
    } else {
        day = parse_date(s);
        if (day == INT64_MIN)
            return false;
        memcpy(dc->date, s, 10);
        dc->day = day;
    }
    int h = digits(s + 11, 2), mi = digits(s + 14, 2), sec = digits(s + 17, 2);
    if (h < 0 || h > 23 || mi < 0 || mi > 59 || sec < 0 || sec > 59)
        return false;
    int64_t ms = 0;
    size_t i = 19;
    if (s[i] == '.') {
        size_t nd = 0;
        for (i++; i < n - 1; i++, nd++) {
            if (!is_digit(s[i]))
                return false;
            if (nd < 3)
                ms = ms * 10 + (s[i] - '0');
        }
        if (nd == 0)
            return false;
        for (; nd < 3; nd++)
            ms *= 10;
    }
    if (i != n - 1)
        return false;
    *out = day * DAY_MS + (int64_t)((h * 60 + mi) * 60 + sec) * 1000 + ms;
    return true;
}

/* epoch ms -> "YYYY-MM-DDTHH:MM:SS.mmmZ" (with_ms) or "YYYY-MM-DDTHH:00:00Z"-style
 * without the fraction. out holds at least 32 bytes. @return the length. */
static size_t format_iso(int64_t ms, bool with_ms, char *out)
{
    int64_t day = floordiv(ms, DAY_MS), rem = ms - day * DAY_MS;
    int64_t y;
    unsigned mo, d;
    civil_from_days(day, &y, &mo, &d);
    unsigned s = (unsigned)(rem / 1000), frac = (unsigned)(rem % 1000);
    int n;
    if (with_ms)
        n = snprintf(out, 32, "%04lld-%02u-%02uT%02u:%02u:%02u.%03uZ", (long long)y, mo, d,
                     s / 3600, s / 60 % 60, s % 60, frac);
    else
        n = snprintf(out, 32, "%04lld-%02u-%02uT%02u:%02u:%02uZ", (long long)y, mo, d, s / 3600,
                     s / 60 % 60, s % 60);
    return n < 0 ? 0 : (size_t)n;
}

/* ---- window and grouping names ------------------------------------------- */

int ag_stats_parse_window(const char *s, int64_t *seconds)
{
    return s ? ag_parse_window(s, strlen(s), seconds) : AG_EINVALID;
}

static const char *const by_names[] = {"", "model", "route", "status", "client", "key", "hour"};

int ag_stats_parse_by(const char *s, ag_stats_by_t *by)
{
    if (s == NULL || s[0] == '\0') {
        *by = AG_STATS_BY_NONE;
        return 0;
    }
    for (size_t i = 1; i < AG_ARRAY_LEN(by_names); i++) {
        if (strcmp(s, by_names[i]) == 0) {
            *by = (ag_stats_by_t)i;
            return 0;
        }
    }
    return AG_EINVALID;
}

const char *ag_stats_by_name(ag_stats_by_t by)
{
    return (size_t)by < AG_ARRAY_LEN(by_names) ? by_names[by] : "";
}

/* ---- memory: an arena per table ------------------------------------------ */

typedef struct arena_block {
    struct arena_block *next;
    size_t used, cap;
    _Alignas(16) char data[];
} arena_block_t;

typedef struct arena {
    arena_block_t *head;
} arena_t;

/* Zeroed, 16-aligned, freed only with the arena; NULL on out-of-memory. */
static void *arena_alloc(arena_t *a, size_t n)
{
    n = (n + 15) & ~(size_t)15;
    arena_block_t *b = a->head;
    if (b == NULL || b->cap - b->used < n) {
        size_t cap = n > ARENA_BLOCK ? n : ARENA_BLOCK;
        b = calloc(1, sizeof(*b) + cap);
        if (b == NULL)
            return NULL;
        b->cap = cap;
        b->next = a->head;
        a->head = b;
    }
    void *p = b->data + b->used;
    b->used += n;
    return p;
}

static void arena_free(arena_t *a)
{
    for (arena_block_t *b = a->head, *next; b; b = next) {
        next = b->next;
        free(b);
    }
    a->head = NULL;
}

/* ---- per-group histograms ------------------------------------------------ */

/* A group's histogram holds ag_hist's buckets in pages of 32, allocated when
 * first touched: a latency distribution touches a dozen powers of two, so a
 * group costs a few KiB instead of two full 9 KiB histograms, and 10000
 * groups stay in tens of MiB. Only the buckets live here (the group keeps the
 * maximum; the count is their sum); materialised into an ag_hist_t for
 * quantiles. */
#define PAGE_BITS 5
#define PAGE_LEN (1u << PAGE_BITS)
#define NPAGES ((AG_HIST_BUCKETS + PAGE_LEN - 1) / PAGE_LEN)
#define NO_BUCKET 0xFFFFu /* a line without the field: nothing to add */

typedef struct phist {
    uint64_t *page[NPAGES];
} phist_t;

static int phist_add_n(phist_t *h, unsigned bucket, uint64_t n, arena_t *a)
{
    uint64_t **pg = &h->page[bucket >> PAGE_BITS];
    if (*pg == NULL) {
        *pg = arena_alloc(a, PAGE_LEN * sizeof(uint64_t));
        if (*pg == NULL)
            return -ENOMEM;
    }
    (*pg)[bucket & (PAGE_LEN - 1)] += n;
    return 0;
}

static int phist_merge(phist_t *into, const phist_t *from, arena_t *a)
{
    for (unsigned p = 0; p < NPAGES; p++) {
        if (from->page[p] == NULL)
            continue;
        for (unsigned i = 0; i < PAGE_LEN; i++) {
            if (from->page[p][i] == 0)
                continue;
            int rc = phist_add_n(into, p * PAGE_LEN + i, from->page[p][i], a);
            if (rc < 0)
                return rc;
        }
    }
    return 0;
}

static void phist_to_hist(const phist_t *ph, uint64_t max, ag_hist_t *h)
{
    ag_hist_init(h);
    for (unsigned p = 0; p < NPAGES; p++) {
        if (ph->page[p] == NULL)
            continue;
        unsigned n =
            AG_HIST_BUCKETS - p * PAGE_LEN < PAGE_LEN ? AG_HIST_BUCKETS - p * PAGE_LEN : PAGE_LEN;
        memcpy(&h->buckets[p * PAGE_LEN], ph->page[p], n * sizeof(uint64_t));
        for (unsigned i = 0; i < n; i++)
            h->count += ph->page[p][i];
    }
    h->max = max; /* h->sum stays 0: quantiles do not use it */
}

/* ---- sums ---------------------------------------------------------------- */

typedef struct counts {
    uint64_t requests, errors, upstream, hits;
    int64_t in_tok, out_tok, cost_nusd;
} counts_t;

static void counts_merge(counts_t *into, const counts_t *from)
{
    into->requests += from->requests;
    into->errors += from->errors;
    into->upstream += from->upstream;
    into->hits += from->hits;
    into->in_tok += from->in_tok;
    into->out_tok += from->out_tok;
    into->cost_nusd += from->cost_nusd;
}

/* One usage entry as the scanner leaves it. */
typedef struct entry {
    int64_t ts_ms;
    int64_t status;
    int64_t attempts; /* -1: the line has no `attempts` */
    int64_t in_tok, out_tok;
    int64_t cost_nusd;
    int64_t lat_us, cpu_us; /* -1: the field is absent */
    bool cached;
    bool has_ts;
    /* the raw JSON string of the grouping field: inside the quotes, still escaped */
    const char *gk;
    size_t gk_len;
    bool gk_escaped;
} entry_t;

static void counts_add(counts_t *c, const entry_t *e)
{
    c->requests++;
    c->errors += e->status >= 500;
    if (e->attempts >= 0)
        c->upstream += (uint64_t)e->attempts;
    else
        c->upstream += !e->cached;
    c->hits += e->cached;
    c->in_tok += e->in_tok;
    c->out_tok += e->out_tok;
    c->cost_nusd += e->cost_nusd;
}

/* ---- groups: an open-addressing table, bounded --------------------------- */

/* What a line adds to its group is split in two. The sums (and maxima) go
 * straight into the group, a line or two of memory. The histogram buckets are
 * queued as 8-byte records and applied a batch at a time, sorted by group:
 * with a thousand clients, adding to each group's pages as lines come would
 * touch a few cold cache lines per entry; in a sorted batch each group's
 * pages are touched together (this halved `--by client`). */
typedef struct group {
    uint64_t hash;
    uint32_t len;
    uint32_t id; /* index in the table's histograms */
    char *key;   /* bytes (int64 for status and hour), in the table's arena */
    counts_t c;
    uint64_t lat_max, cpu_max;
} group_t;

typedef struct ghist {
    phist_t lat, cpu;
} ghist_t;

typedef struct table {
    group_t **slots;
    size_t cap; /* power of two, or 0 */
    size_t n;   /* groups in slots (the fold group is not) */
    size_t max;
    group_t *other; /* the fold of keys past max, or NULL */
    group_t *last;  /* the previous lookup: neighbouring lines often share a key */
    ghist_t *hists; /* by group id */
    size_t nids, hcap;
    arena_t arena;
} table_t;

static uint64_t hash_bytes(const char *s, size_t n)
{
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)s[i];
        h *= 1099511628211ULL;
    }
    return h ^ (h >> 29);
}

static int table_grow(table_t *t)
{
    size_t ncap = t->cap ? t->cap * 2 : 64;
    group_t **ns = calloc(ncap, sizeof(*ns));
    if (ns == NULL)
        return -ENOMEM;
    for (size_t i = 0; i < t->cap; i++) {
        group_t *g = t->slots[i];
        if (g == NULL)
            continue;
        size_t j = g->hash & (ncap - 1);
        while (ns[j])
            j = (j + 1) & (ncap - 1);
        ns[j] = g;
    }
    free(t->slots);
    t->slots = ns;
    t->cap = ncap;
    return 0;
}

static group_t *group_new(table_t *t, const char *key, size_t len, uint64_t h)
{
    if (t->nids == t->hcap) {
        size_t ncap = t->hcap ? t->hcap * 2 : 16;
        ghist_t *nh = realloc(t->hists, ncap * sizeof(*nh));
        if (nh == NULL)
            return NULL;
        memset(nh + t->hcap, 0, (ncap - t->hcap) * sizeof(*nh));
        t->hists = nh;
        t->hcap = ncap;
    }
    /* the key right after the group: one allocation, usually one cache line */
    group_t *g = arena_alloc(&t->arena, sizeof(*g) + len + 1);
    if (g == NULL)
        return NULL;
    g->key = (char *)(g + 1);
    if (len)
        memcpy(g->key, key, len);
    g->len = (uint32_t)len;
    g->hash = h;
    g->id = (uint32_t)t->nids++;
    return g;
}

/* The group of key, created when new; the fold group once t->max keys exist.
 * NULL on out-of-memory. */
static group_t *table_get(table_t *t, const char *key, size_t len, uint64_t h)
{
    group_t *g = t->last;
    if (g && g->hash == h && g->len == len && memcmp(g->key, key, len) == 0)
        return g;
    if (t->cap) {
        for (size_t i = h & (t->cap - 1);; i = (i + 1) & (t->cap - 1)) {
            g = t->slots[i];
            if (g == NULL)
                break;
            if (g->hash == h && g->len == len && memcmp(g->key, key, len) == 0) {
                t->last = g;
                return g;
            }
        }
    }
    if (t->n >= t->max) {
        if (t->other == NULL)
            t->other = group_new(t, AG_STATS_OTHER, strlen(AG_STATS_OTHER), 0);
        return t->other;
    }
    if ((t->n + 1) * 2 > t->cap && table_grow(t) < 0)
        return NULL;
    g = group_new(t, key, len, h);
    if (g == NULL)
        return NULL;
    size_t i = h & (t->cap - 1);
    while (t->slots[i])
        i = (i + 1) & (t->cap - 1);
    t->slots[i] = g;
    t->n++;
    t->last = g;
    return g;
}

/* into (of table t) += from (of table ft). */
static int group_merge(table_t *t, group_t *into, const table_t *ft, const group_t *from)
{
    counts_merge(&into->c, &from->c);
    if (from->lat_max > into->lat_max)
        into->lat_max = from->lat_max;
    if (from->cpu_max > into->cpu_max)
        into->cpu_max = from->cpu_max;
    int rc = phist_merge(&t->hists[into->id].lat, &ft->hists[from->id].lat, &t->arena);
    if (rc == 0)
        rc = phist_merge(&t->hists[into->id].cpu, &ft->hists[from->id].cpu, &t->arena);
    return rc;
}

static void table_fini(table_t *t)
{
    free(t->slots);
    free(t->hists);
    arena_free(&t->arena);
    memset(t, 0, sizeof(*t));
}

/* A queued histogram record: a group and the buckets of one line. */
typedef struct pend {
    uint32_t id;
    uint16_t lat, cpu; /* NO_BUCKET: absent */
} pend_t;

#define PEND_CAP 65536
#define SORT_MIN_GROUPS 64

/* Applies the queued records, sorted by group (a counting sort: ids are
 * dense). sorted and counts are scratch of PEND_CAP and t->nids + 1. */
static int apply_pending(table_t *t, pend_t *pend, size_t n, pend_t *sorted, uint32_t *counts)
{
    size_t ng = t->nids;
    if (ng <= SORT_MIN_GROUPS) {
        sorted = pend; /* so few groups that their pages stay in cache anyway */
        goto apply;
    }
    memset(counts, 0, (ng + 1) * sizeof(*counts));
    for (size_t i = 0; i < n; i++)
        counts[pend[i].id + 1]++;
    for (size_t g = 1; g <= ng; g++)
        counts[g] += counts[g - 1];
    for (size_t i = 0; i < n; i++)
        sorted[counts[pend[i].id]++] = pend[i];
apply:
    for (size_t i = 0; i < n; i++) {
        ghist_t *gh = &t->hists[sorted[i].id];
        if (sorted[i].lat != NO_BUCKET && phist_add_n(&gh->lat, sorted[i].lat, 1, &t->arena) < 0)
            return -ENOMEM;
        if (sorted[i].cpu != NO_BUCKET && phist_add_n(&gh->cpu, sorted[i].cpu, 1, &t->arena) < 0)
            return -ENOMEM;
    }
    return 0;
}

/* ---- the line scanner ---------------------------------------------------- */

/* Fields the scanner knows; every other key's value is skipped. */
enum field {
    F_OTHER,
    F_TIMESTAMP,
    F_MODEL,
    F_ROUTE,
    F_CLIENT,
    F_KEY,
    F_STATUS,
    F_CACHED,
    F_LATENCY,
    F_CPU,
    F_ATTEMPTS,
    F_IN_TOK,
    F_OUT_TOK,
    F_COST,
};

#define KEY_IS(k, n, lit) ((n) == sizeof(lit) - 1 && memcmp((k), (lit), sizeof(lit) - 1) == 0)

static enum field field_of(const char *k, size_t n)
{
    switch (n) {
    case 3:
        return KEY_IS(k, n, "key") ? F_KEY : F_OTHER;
    case 5:
        if (KEY_IS(k, n, "model"))
            return F_MODEL;
        if (KEY_IS(k, n, "route"))
            return F_ROUTE;
        return KEY_IS(k, n, "cpuMs") ? F_CPU : F_OTHER;
    case 6:
        if (KEY_IS(k, n, "status"))
            return F_STATUS;
        if (KEY_IS(k, n, "cached"))
            return F_CACHED;
        return KEY_IS(k, n, "client") ? F_CLIENT : F_OTHER;
    case 7:
        return KEY_IS(k, n, "costUsd") ? F_COST : F_OTHER;
    case 8:
        return KEY_IS(k, n, "attempts") ? F_ATTEMPTS : F_OTHER;
    case 9:
        if (KEY_IS(k, n, "timestamp"))
            return F_TIMESTAMP;
        return KEY_IS(k, n, "latencyMs") ? F_LATENCY : F_OTHER;
    case 11:
        return KEY_IS(k, n, "inputTokens") ? F_IN_TOK : F_OTHER;
    case 12:
        return KEY_IS(k, n, "outputTokens") ? F_OUT_TOK : F_OTHER;
    default:
        return F_OTHER;
    }
}

static const int64_t pow10s[] = {1,      10,      100,      1000,      10000,
                                 100000, 1000000, 10000000, 100000000, 1000000000};

/* Numbers and keys are read eight bytes at a time (SWAR): no branch per
 * digit, so a field's length does not cost a mispredicted loop exit. */
#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "stats.c reads numbers eight bytes at a time, assuming a little-endian machine"
#endif

static inline uint64_t load64(const char *p)
{
    uint64_t x;
    memcpy(&x, p, sizeof(x));
    return x;
}

static inline uint32_t load32(const char *p)
{
    uint32_t x;
    memcpy(&x, p, sizeof(x));
    return x;
}

/* How many of the 8 bytes in x (in memory order) are leading ASCII digits. A
 * byte is a digit when its high nibble is 3 and stays 3 after adding 6; the
 * carry of a byte >= 0xFA only reaches bytes after it, past the first
 * non-digit. */
static inline unsigned swar_digits(uint64_t x)
{
    const uint64_t hi = 0xF0F0F0F0F0F0F0F0ULL, three = 0x3030303030303030ULL;
    uint64_t nd = ((x & hi) ^ three) | (((x + 0x0606060606060606ULL) & hi) ^ three);
    return nd ? (unsigned)__builtin_ctzll(nd) >> 3 : 8;
}

/* The value of the n (1-8) leading digits of x. */
static inline uint64_t swar_value(uint64_t x, unsigned n)
{
    x -= 0x3030303030303030ULL; /* digit bytes never borrow; later bytes are shifted out */
    x <<= (8 - n) * 8;
    x = (x * 10 + (x >> 8)) & 0x00FF00FF00FF00FFULL;
    x = (x * 100 + (x >> 16)) & 0x0000FFFF0000FFFFULL;
    return (x * 10000 + (x >> 32)) & 0xFFFFFFFFULL;
}

/* The length of the run of digits at p. */
static size_t digit_run(const char *p, const char *end)
{
    size_t n = 0;
    while (end - (p + n) >= 8) {
        unsigned k = swar_digits(load64(p + n));
        n += k;
        if (k < 8)
            return n;
    }
    while (p + n < end && is_digit(p[n]))
        n++;
    return n;
}

/* The value of the n digits at p (n <= 19). */
static uint64_t digits_value(const char *p, size_t n, const char *end)
{
    uint64_t v = 0;
    for (; n >= 8; p += 8, n -= 8)
        v = v * 100000000u + swar_value(load64(p), 8);
    if (n == 0)
        return v;
    if (end - p >= 8)
        return v * (uint64_t)pow10s[n] + swar_value(load64(p), (unsigned)n);
    for (; n > 0; p++, n--)
        v = v * 10 + (uint64_t)(*p - '0');
    return v;
}

static bool is_ws(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

static inline const char *skip_ws(const char *p, const char *end)
{
    if (AG_LIKELY(p < end && (unsigned char)*p > ' '))
        return p; /* the log writes no whitespace */
    while (p < end && is_ws(*p))
        p++;
    return p;
}

/* p is just past an opening quote: the closing quote, or NULL. Sets *esc when
 * the string holds a backslash escape. Eight bytes at a time: the first quote
 * or backslash of a word is the lowest byte that the zero-byte test flags (it
 * can flag a byte wrongly only above a true match). Only a string with a
 * backslash takes the byte loop. */
static const char *scan_string(const char *p, const char *end, bool *esc)
{
    const uint64_t ones = 0x0101010101010101ULL, highs = 0x8080808080808080ULL;
    while (end - p >= 8) {
        uint64_t x = load64(p);
        uint64_t q = x ^ (ones * '"'), b = x ^ (ones * '\\');
        uint64_t hit = (((q - ones) & ~q) | ((b - ones) & ~b)) & highs;
        if (hit) {
            p += __builtin_ctzll(hit) >> 3;
            if (*p == '"')
                return p;
            break; /* a backslash */
        }
        p += 8;
    }
    while (p < end) {
        char c = *p;
        if (c == '"')
            return p;
        if (c == '\\') {
            *esc = true;
            if (end - p < 2)
                return NULL;
            p += 2;
            continue;
        }
        p++;
    }
    return NULL;
}

static inline bool parse_fixed(const char **pp, const char *end, unsigned scale, int64_t *out);

/* Skips any JSON value at p: the byte after it, or NULL. Not a validator:
 * enough to find where a value we do not read ends. */
static const char *skip_value(const char *p, const char *end)
{
    bool esc = false;
    if (*p == '"') {
        const char *q = scan_string(p + 1, end, &esc);
        return q ? q + 1 : NULL;
    }
    if (*p == '{' || *p == '[') {
        size_t depth = 0;
        while (p < end) {
            char c = *p;
            if (c == '"') {
                const char *q = scan_string(p + 1, end, &esc);
                if (q == NULL)
                    return NULL;
                p = q + 1;
                continue;
            }
            if (c == '{' || c == '[') {
                depth++;
            } else if (c == '}' || c == ']') {
                if (--depth == 0)
                    return p + 1;
            }
            p++;
        }
        return NULL;
    }
    if (*p == '-' || is_digit(*p)) {
        int64_t ignored;
        return parse_fixed(&p, end, 0, &ignored) ? p : NULL;
    }
    const char *s = p;
    while (p < end && *p != ',' && *p != '}' && *p != ']' && !is_ws(*p))
        p++;
    return p > s ? p : NULL;
}

/* A JSON number at *pp as a fixed-point integer, value * 10^scale (scale <=
 * 9), rounded half away from zero; clamped to +-INT64_MAX. Advances *pp. The
 * log writes plain decimals, parsed here by hand; an exponent (JavaScript
 * writes 1e-7) takes strtod. */
__attribute__((noinline)) static bool parse_fixed_slow(const char **pp, const char *end,
                                                       unsigned scale, int64_t *out)
{
    const char *p = *pp, *start = p;
    bool neg = p < end && *p == '-';
    p += neg;
    size_t nint = digit_run(p, end);
    if (nint == 0)
        return false;
    bool huge = nint > 18;
    uint64_t ip = huge ? 0 : digits_value(p, nint, end);
    p += nint;
    uint64_t frac = 0;
    bool round_up = false;
    size_t taken = 0;
    if (p < end && *p == '.') {
        p++;
        size_t nfrac = digit_run(p, end);
        if (nfrac == 0)
            return false;
        taken = nfrac < scale ? nfrac : scale;
        if (taken)
            frac = digits_value(p, taken, end);
        round_up = nfrac > scale && p[scale] >= '5';
        p += nfrac;
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
        p++;
        if (p < end && (*p == '+' || *p == '-'))
            p++;
        size_t nexp = digit_run(p, end);
        if (nexp == 0)
            return false;
        p += nexp;
        char tmp[80];
        size_t n = (size_t)(p - start);
        if (n >= sizeof(tmp))
            return false;
        memcpy(tmp, start, n);
        tmp[n] = '\0';
        double d = strtod(tmp, NULL) * (double)pow10s[scale];
        if (!(d == d))
            return false;
        if (d > 9.2e18)
            d = 9.2e18;
        if (d < -9.2e18)
            d = -9.2e18;
        *out = d >= 0 ? (int64_t)(d + 0.5) : -(int64_t)(-d + 0.5);
        *pp = p;
        return true;
    }
    frac *= (uint64_t)pow10s[scale - taken];
    uint64_t v;
    if (huge || ip > ((uint64_t)INT64_MAX - frac - 1) / (uint64_t)pow10s[scale])
        v = (uint64_t)INT64_MAX;
    else
        v = ip * (uint64_t)pow10s[scale] + frac + round_up;
    *out = neg ? -(int64_t)v : (int64_t)v;
    *pp = p;
    return true;
}

/* parse_fixed_slow() for any number; inline here for what the log writes:
 * an integer or a decimal, each part under 8 digits, no sign, no exponent,
 * with 16 bytes to read. */
__attribute__((always_inline)) static inline bool parse_fixed(const char **pp, const char *end,
                                                              unsigned scale, int64_t *out)
{
    const char *p = *pp;
    if (AG_LIKELY(end - p >= 16)) {
        uint64_t x = load64(p);
        unsigned n = swar_digits(x);
        if (n > 0 && n < 8) {
            uint64_t ip = swar_value(x, n) * (uint64_t)pow10s[scale];
            char c = p[n];
            if (c != '.' && c != 'e' && c != 'E') {
                *out = (int64_t)ip;
                *pp = p + n;
                return true;
            }
            uint64_t y = load64(p + n + 1);
            unsigned m = swar_digits(y);
            if (c == '.' && m > 0 && m < 8 && p[n + 1 + m] != 'e' && p[n + 1 + m] != 'E') {
                unsigned take = m < scale ? m : scale;
                uint64_t frac = take ? swar_value(y, take) * (uint64_t)pow10s[scale - take] : 0;
                bool up = m > scale && ((y >> (8 * scale)) & 0xff) >= '5';
                *out = (int64_t)(ip + frac + up);
                *pp = p + n + 1 + m;
                return true;
            }
        }
    }
    return parse_fixed_slow(pp, end, scale, out);
}

static bool parse_bool(const char **pp, const char *end, bool *out)
{
    const char *p = *pp;
    if (end - p >= 4 && memcmp(p, "true", 4) == 0) {
        *out = true;
        *pp = p + 4;
        return true;
    }
    if (end - p >= 5 && memcmp(p, "false", 5) == 0) {
        *out = false;
        *pp = p + 5;
        return true;
    }
    return false;
}

/* A string value at *pp (at its opening quote): its raw contents. */
static bool parse_raw_string(const char **pp, const char *end, const char **s, size_t *n, bool *esc)
{
    const char *p = *pp;
    if (*p != '"')
        return false;
    *esc = false;
    const char *q = scan_string(p + 1, end, esc);
    if (q == NULL)
        return false;
    *s = p + 1;
    *n = (size_t)(q - p - 1);
    *pp = q + 1;
    return true;
}

/* The keys in the order the usage log writes them (docs/usage-log.md), each
 * with its quotes and colon. The scanner expects the next key of this list and
 * checks it with one memcmp() of a known length, instead of scanning the key
 * byte by byte and looking it up; any other key (older or newer lines, other
 * writers) takes the general path. `outcome` and `key` may be missing. */
typedef struct known_key {
    const char *lit;
    unsigned char len;
    unsigned char field; /* enum field */
} known_key_t;

#define KK(lit, f)                                                                                 \
    {                                                                                              \
        lit, sizeof(lit) - 1, f                                                                    \
    }
static const known_key_t log_order[] = {
    KK("\"timestamp\":", F_TIMESTAMP),
    KK("\"model\":", F_MODEL),
    KK("\"promptLength\":", F_OTHER),
    KK("\"outputLength\":", F_OTHER),
    KK("\"inputTokens\":", F_IN_TOK),
    KK("\"outputTokens\":", F_OUT_TOK),
    KK("\"cacheCreationInputTokens\":", F_OTHER),
    KK("\"cacheReadInputTokens\":", F_OTHER),
    KK("\"status\":", F_STATUS),
    KK("\"cached\":", F_CACHED),
    KK("\"stream\":", F_OTHER),
    KK("\"latencyMs\":", F_LATENCY),
    KK("\"client\":", F_CLIENT),
    KK("\"requestId\":", F_OTHER),
    KK("\"costUsd\":", F_COST),
    KK("\"outcome\":", F_OTHER),
    KK("\"route\":", F_ROUTE),
    KK("\"cpuMs\":", F_CPU),
    KK("\"attempts\":", F_ATTEMPTS),
    KK("\"key\":", F_KEY),
};
#undef KK

/* a[0..n) == b[0..n) for 4 <= n, by overlapping 8- (or 4-) byte loads; both
 * must hold n bytes. */
static inline bool key_eq(const char *a, const char *b, size_t n)
{
    if (n < 8)
        return load32(a) == load32(b) && load32(a + n - 4) == load32(b + n - 4);
    for (size_t i = 0; i + 8 < n; i += 8)
        if (load64(a + i) != load64(b + i))
            return false;
    return load64(a + n - 8) == load64(b + n - 8);
}

/* The key at p (its opening quote) when it is log_order[*next] or the one
 * after: its field, with p moved past the colon and *next past the key. */
static bool expect_key(const char **pp, const char *end, size_t *next, enum field *f)
{
    for (size_t i = *next; i < *next + 2 && i < AG_ARRAY_LEN(log_order); i++) {
        const known_key_t *k = &log_order[i];
        if ((size_t)(end - *pp) > k->len && key_eq(*pp, k->lit, k->len)) {
            *pp += k->len;
            *f = (enum field)k->field;
            *next = i + 1;
            return true;
        }
    }
    return false;
}

/* Scans one line [p, end) into *e: true when it is a JSON object with a valid
 * timestamp and known fields of the right types. `gfield` is the field whose
 * raw string the grouping needs (F_OTHER for none). */
static bool scan_line(const char *p, const char *end, enum field gfield, date_cache_t *dc,
                      entry_t *e)
{
    /* field by field: a compound literal compiles to a rep stos, slow at this size */
    e->ts_ms = 0;
    e->status = 0;
    e->attempts = -1;
    e->in_tok = 0;
    e->out_tok = 0;
    e->cost_nusd = 0;
    e->lat_us = -1;
    e->cpu_us = -1;
    e->cached = false;
    e->has_ts = false;
    e->gk = NULL;
    e->gk_len = 0;
    e->gk_escaped = false;
    p = skip_ws(p, end);
    if (p >= end || *p != '{')
        return false;
    p = skip_ws(p + 1, end);
    if (p < end && *p == '}')
        return false; /* {} has no timestamp */
    size_t next = 0;
    for (;;) {
        if (p >= end || *p != '"')
            return false;
        enum field f;
        if (!expect_key(&p, end, &next, &f)) {
            const char *k = p + 1;
            bool kesc = false;
            const char *q = scan_string(k, end, &kesc);
            if (q == NULL)
                return false;
            /* An escaped key is never one we read: the log writes them plainly. */
            f = kesc ? F_OTHER : field_of(k, (size_t)(q - k));
            p = skip_ws(q + 1, end);
            if (p >= end || *p != ':')
                return false;
            p++;
        }
        p = skip_ws(p, end);
        if (p >= end)
            return false;
        bool ok = true;
        const char *s;
        size_t n;
        bool esc;
        switch (f) {
        case F_TIMESTAMP:
            ok = parse_raw_string(&p, end, &s, &n, &esc) && !esc &&
                 parse_timestamp(s, n, dc, &e->ts_ms);
            e->has_ts = ok;
            break;
        case F_MODEL:
        case F_ROUTE:
        case F_CLIENT:
        case F_KEY:
            ok = parse_raw_string(&p, end, &s, &n, &esc);
            if (ok && f == gfield) {
                e->gk = s;
                e->gk_len = n;
                e->gk_escaped = esc;
            }
            break;
        case F_STATUS:
            ok = parse_fixed(&p, end, 0, &e->status);
            break;
        case F_CACHED:
            ok = parse_bool(&p, end, &e->cached);
            break;
        case F_LATENCY:
            ok = parse_fixed(&p, end, 3, &e->lat_us);
            if (ok && e->lat_us < 0)
                e->lat_us = 0;
            break;
        case F_CPU:
            ok = parse_fixed(&p, end, 3, &e->cpu_us);
            if (ok && e->cpu_us < 0)
                e->cpu_us = 0;
            break;
        case F_ATTEMPTS:
            ok = parse_fixed(&p, end, 0, &e->attempts);
            if (ok && e->attempts < 0)
                e->attempts = 0;
            break;
        case F_IN_TOK:
            ok = parse_fixed(&p, end, 0, &e->in_tok);
            break;
        case F_OUT_TOK:
            ok = parse_fixed(&p, end, 0, &e->out_tok);
            break;
        case F_COST:
            ok = parse_fixed(&p, end, 9, &e->cost_nusd);
            break;
        case F_OTHER:
            p = skip_value(p, end);
            ok = p != NULL;
            break;
        }
        if (!ok)
            return false;
        p = skip_ws(p, end);
        if (p >= end)
            return false;
        if (*p == ',') {
            p = skip_ws(p + 1, end);
            continue;
        }
        if (*p != '}')
            return false;
        p = skip_ws(p + 1, end);
        return p == end && e->has_ts;
    }
}

/* ---- one run ------------------------------------------------------------- */

typedef struct run run_t;

typedef struct worker {
    pthread_t thread;
    bool started;
    run_t *run;
    char *buf;
    date_cache_t dc;
    ag_buf_t scratch; /* decoded group keys */
    counts_t c;
    ag_hist_t lat, cpu;
    table_t groups;
    pend_t *pend, *sorted; /* PEND_CAP each, with a grouping */
    uint32_t *counts;      /* max_groups + 2 */
    size_t npend;
    uint64_t skipped, objects, bytes;
} worker_t;

struct run {
    ag_objstore_t *bucket;
    int64_t since, until;
    ag_stats_by_t by;
    enum field gfield;

    pthread_mutex_t mu;
    pthread_cond_t more; /* readers wait for keys */
    pthread_cond_t room; /* the lister waits for room */
    char *queue[QUEUE_CAP];
    size_t head, count;
    bool listed; /* no more keys will come */
    bool stop;   /* an error: everyone quits */
    int err;
};

static void run_fail(run_t *r, int err)
{
    pthread_mutex_lock(&r->mu);
    if (r->err == 0)
        r->err = err;
    r->stop = true;
    pthread_cond_broadcast(&r->more);
    pthread_cond_broadcast(&r->room);
    pthread_mutex_unlock(&r->mu);
}

/* The grouping key of a scanned entry into *key and *len (borrowed from the line,
 * the scratch buffer or *num). @return 0 or -ENOMEM. */
static int group_key(worker_t *w, const entry_t *e, int64_t *num, const char **key, size_t *len)
{
    switch (w->run->by) {
    case AG_STATS_BY_STATUS:
    case AG_STATS_BY_HOUR:
        *num = w->run->by == AG_STATS_BY_STATUS ? e->status : floordiv(e->ts_ms, HOUR_MS);
        *key = (const char *)num;
        *len = sizeof(*num);
        return 0;
    default:
        break;
    }
    if (!e->gk_escaped) {
        *key = e->gk ? e->gk : "";
        *len = e->gk_len;
        return 0;
    }
    /* Rare (the log escapes only quotes, backslashes and control bytes): decode,
     * so that one string has one group however it was escaped. The token is
     * the string with its quotes, which the scanner has seen. */
    ag_jtok_t tok;
    const char *text = e->gk - 1;
    if (ag_jtok_parse(text, e->gk_len + 2, &tok, 1, NULL) != 1 || tok.type != AG_JT_STRING) {
        /* a bad escape or bad UTF-8: the raw text is the key, so that the
         * totals never depend on the grouping */
        *key = e->gk;
        *len = e->gk_len;
        return 0;
    }
    ag_buf_reset(&w->scratch);
    int rc = ag_jtok_str_decode(text, &tok, &w->scratch);
    if (rc < 0)
        return rc;
    *key = w->scratch.len ? w->scratch.data : "";
    *len = w->scratch.len;
    return 0;
}

/* ag_hist_add() with the bucket already known (the queued record needs it too). */
static inline void hist_add_bucket(ag_hist_t *h, unsigned b, uint64_t v)
{
    h->buckets[b]++;
    h->count++;
    h->sum += v;
    if (v > h->max)
        h->max = v;
}

static int flush_pending(worker_t *w)
{
    int rc = apply_pending(&w->groups, w->pend, w->npend, w->sorted, w->counts);
    w->npend = 0;
    return rc;
}

static int add_entry(worker_t *w, const entry_t *e)
{
    group_t *g = NULL;
    if (w->run->by != AG_STATS_BY_NONE) {
        int64_t num;
        const char *key;
        size_t len;
        int rc = group_key(w, e, &num, &key, &len);
        if (rc < 0)
            return rc;
        g = table_get(&w->groups, key, len, hash_bytes(key, len));
        if (g == NULL)
            return -ENOMEM;
    }
    counts_add(&w->c, e);
    unsigned lat_b = NO_BUCKET, cpu_b = NO_BUCKET;
    if (e->lat_us >= 0) {
        lat_b = ag_hist_bucket((uint64_t)e->lat_us);
        hist_add_bucket(&w->lat, lat_b, (uint64_t)e->lat_us);
    }
    if (e->cpu_us >= 0) {
        cpu_b = ag_hist_bucket((uint64_t)e->cpu_us);
        hist_add_bucket(&w->cpu, cpu_b, (uint64_t)e->cpu_us);
    }
    if (g == NULL)
        return 0;
    counts_add(&g->c, e);
    if (e->lat_us > 0 && (uint64_t)e->lat_us > g->lat_max)
        g->lat_max = (uint64_t)e->lat_us;
    if (e->cpu_us > 0 && (uint64_t)e->cpu_us > g->cpu_max)
        g->cpu_max = (uint64_t)e->cpu_us;
    w->pend[w->npend++] = (pend_t){g->id, (uint16_t)lat_b, (uint16_t)cpu_b};
    if (w->npend == PEND_CAP)
        return flush_pending(w);
    return 0;
}

static int do_line(worker_t *w, const char *p, const char *end)
{
    if (skip_ws(p, end) == end)
        return 0; /* blank lines are not entries, nor malformed ones */
    entry_t e;
    if (!scan_line(p, end, w->run->gfield, &w->dc, &e)) {
        w->skipped++;
        return 0;
    }
    if (e.ts_ms < w->run->since || e.ts_ms >= w->run->until)
        return 0;
    return add_entry(w, &e);
}

/* Scans the complete lines of buf[0..len) (and, when `last`, the unterminated
 * rest). *discard: the buffer starts inside a line too long to keep, which is
 * dropped up to its newline. @return bytes consumed, or a negative error. */
static ssize_t scan_lines(worker_t *w, const char *buf, size_t len, bool last, bool *discard)
{
    const char *p = buf, *end = buf + len;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        if (*discard) {
            if (nl == NULL)
                return (ssize_t)len;
            *discard = false;
            p = nl + 1;
            continue;
        }
        if (nl == NULL) {
            if (!last)
                break;
            nl = end;
        }
        int rc = do_line(w, p, nl);
        if (rc < 0)
            return rc;
        p = nl < end ? nl + 1 : end;
    }
    return p - buf;
}

/* A gzipped object (a closed day, store/usage_log_days.c): inflated through
 * w->buf in chunks, so memory stays one buffer whatever the day's size. Input
 * comes from fd at [off, off + size), or from mem when fd < 0. */
static int scan_gz(worker_t *w, int fd, uint64_t off, uint64_t size, const char *mem)
{
    enum { IN_CHUNK = 256 * 1024 };
    unsigned char *in = fd >= 0 ? malloc(IN_CHUNK) : NULL;
    if (fd >= 0 && !in)
        return -ENOMEM;
    z_stream z = {0};
    if (inflateInit2(&z, 15 + 32) != Z_OK) {
        free(in);
        return -ENOMEM;
    }
    int rc = 0;
    uint64_t pos = 0;
    size_t have = 0;
    bool discard = false;
    for (;;) {
        if (z.avail_in == 0 && pos < size) {
            size_t want = size - pos < IN_CHUNK ? (size_t)(size - pos) : IN_CHUNK;
            if (fd >= 0) {
                ssize_t n = ag_fs_pread_all(fd, in, want, off + pos);
                if (n < 0) {
                    rc = (int)n;
                    break;
                }
                if (n == 0)
                    size = pos; /* shorter than its header said: read what is there */
                z.next_in = in;
                z.avail_in = (uInt)n;
                pos += (uint64_t)n;
            } else {
                z.next_in = (Bytef *)(uintptr_t)(mem + pos);
                z.avail_in = (uInt)want;
                pos += want;
            }
        }
        z.next_out = (Bytef *)w->buf + have;
        z.avail_out = (uInt)(READ_CHUNK - have);
        int zrc = inflate(&z, Z_NO_FLUSH);
        size_t got = READ_CHUNK - have - z.avail_out;
        have += got;
        w->bytes += got;
        bool stream_end = zrc == Z_STREAM_END;
        bool bad = zrc != Z_OK && zrc != Z_STREAM_END && zrc != Z_BUF_ERROR;
        if (stream_end && (z.avail_in > 0 || pos < size)) {
            inflateReset(&z); /* gzip members may follow one another (cat a.gz b.gz) */
            stream_end = false;
        }
        bool exhausted = z.avail_in == 0 && pos >= size && got == 0;
        bool last = stream_end || bad || exhausted;
        if (bad)
            w->skipped++; /* corrupt: what came before it counts */
        ssize_t used = scan_lines(w, w->buf, have, last, &discard);
        if (used < 0) {
            rc = (int)used;
            break;
        }
        memmove(w->buf, w->buf + used, have - (size_t)used);
        have -= (size_t)used;
        if (have == READ_CHUNK) {
            w->skipped++; /* one line fills the buffer: not an entry the log writes */
            discard = true;
            have = 0;
        }
        if (last)
            break;
    }
    inflateEnd(&z);
    free(in);
    w->objects++;
    return rc;
}

static bool is_gz(const char *key, size_t keylen)
{
    return keylen > 3 && memcmp(key + keylen - 3, ".gz", 3) == 0;
}

static int scan_object(worker_t *w, const char *key)
{
    size_t keylen = strlen(key);
    ag_obj_info_t info;
    int fd = -1;
    uint64_t off = 0;
    int rc = ag_objstore_open_read(w->run->bucket, key, keylen, &info, &fd, &off);
    if (rc == AG_ENOTFOUND)
        return 0; /* deleted since the listing */
    if (rc == -ENOTSUP) {
        /* A backend without files: the whole object at once. */
        ag_obj_t obj;
        rc = ag_objstore_get(w->run->bucket, key, keylen, &obj);
        if (rc == AG_ENOTFOUND)
            return 0;
        if (rc < 0)
            return rc;
        if (is_gz(key, keylen)) {
            rc = scan_gz(w, -1, 0, obj.len, obj.data);
            ag_obj_free(&obj);
            return rc;
        }
        bool discard = false;
        ssize_t n = scan_lines(w, obj.data, obj.len, true, &discard);
        w->objects++;
        w->bytes += obj.len;
        ag_obj_free(&obj);
        return n < 0 ? (int)n : 0;
    }
    if (rc < 0)
        return rc;
    uint64_t size = info.size;
    ag_obj_info_free(&info);
#ifdef POSIX_FADV_SEQUENTIAL
    posix_fadvise(fd, (off_t)off, (off_t)size, POSIX_FADV_SEQUENTIAL);
#endif
    if (is_gz(key, keylen)) {
        rc = scan_gz(w, fd, off, size, NULL);
        close(fd);
        return rc;
    }
    size_t have = 0;
    uint64_t pos = 0;
    bool discard = false;
    while (pos < size) {
        size_t want = READ_CHUNK - have;
        if (want > size - pos)
            want = (size_t)(size - pos);
        ssize_t n = ag_fs_pread_all(fd, w->buf + have, want, off + pos);
        if (n < 0) {
            rc = (int)n;
            break;
        }
        pos += (uint64_t)n;
        have += (size_t)n;
        bool last = (size_t)n < want || pos >= size;
        ssize_t used = scan_lines(w, w->buf, have, last, &discard);
        if (used < 0) {
            rc = (int)used;
            break;
        }
        memmove(w->buf, w->buf + used, have - (size_t)used);
        have -= (size_t)used;
        if (have == READ_CHUNK) {
            /* one line fills the buffer: not an entry the log writes */
            w->skipped++;
            discard = true;
            have = 0;
        }
        if ((size_t)n < want)
            break; /* shorter than its header said: read what is there */
    }
    close(fd);
    w->objects++;
    w->bytes += pos;
    return rc;
}

static void *worker_main(void *arg)
{
    worker_t *w = arg;
    run_t *r = w->run;
    for (;;) {
        pthread_mutex_lock(&r->mu);
        while (r->count == 0 && !r->listed && !r->stop)
            pthread_cond_wait(&r->more, &r->mu);
        if (r->stop || r->count == 0) {
            pthread_mutex_unlock(&r->mu);
            break;
        }
        char *key = r->queue[r->head];
        r->head = (r->head + 1) % QUEUE_CAP;
        r->count--;
        pthread_cond_signal(&r->room);
        pthread_mutex_unlock(&r->mu);
        int rc = scan_object(w, key);
        free(key);
        if (rc < 0) {
            run_fail(r, rc);
            return NULL;
        }
    }
    if (w->npend > 0) {
        int rc = flush_pending(w);
        if (rc < 0)
            run_fail(r, rc);
    }
    return NULL;
}

static int enqueue(run_t *r, const char *key)
{
    char *k = strdup(key);
    if (k == NULL)
        return -ENOMEM;
    pthread_mutex_lock(&r->mu);
    while (r->count == QUEUE_CAP && !r->stop)
        pthread_cond_wait(&r->room, &r->mu);
    if (r->stop) {
        pthread_mutex_unlock(&r->mu);
        free(k);
        return 1;
    }
    r->queue[(r->head + r->count) % QUEUE_CAP] = k;
    r->count++;
    pthread_cond_signal(&r->more);
    pthread_mutex_unlock(&r->mu);
    return 0;
}

/* "logs/YYYY/MM/DD/" of a day into out[17]. */
static void day_folder(int64_t day, char out[17])
{
    int64_t y;
    unsigned m, d;
    civil_from_days(day, &y, &m, &d);
    snprintf(out, 17, "logs/%04d/%02u/%02u/", (int)y, m, d);
}

/* A usage-log object name, logs/YYYY/MM/DD/<13-digit first-ms>-...: its day
 * and first-ms. false for any other key. */
static bool parse_object_key(const char *k, size_t n, int64_t *day, int64_t *first_ms)
{
    if (n < 30 || memcmp(k, "logs/", 5) != 0 || k[9] != '/' || k[12] != '/' || k[15] != '/' ||
        k[29] != '-')
        return false;
    char date[10] = {k[5], k[6], k[7], k[8], '-', k[10], k[11], '-', k[13], k[14]};
    *day = parse_date(date);
    if (*day == INT64_MIN)
        return false;
    int64_t v = 0;
    for (size_t i = 16; i < 29; i++) {
        if (!is_digit(k[i]))
            return false;
        v = v * 10 + (k[i] - '0');
    }
    *first_ms = v;
    return true;
}

/* Lists the objects of the window's day folders, in key order, and queues
 * those that can hold entries of the window. @return 0 or an error. */
static int list_window(run_t *r)
{
    int64_t first_day = floordiv(r->since, DAY_MS), last_day = floordiv(r->until - 1, DAY_MS);
    char lo[17], hi[17];
    day_folder(first_day, lo);
    day_folder(last_day, hi);
    size_t plen = 0;
    while (plen < 16 && lo[plen] == hi[plen])
        plen++;
    char *cursor = NULL;
    int rc = 0;
    bool done = false;
    while (!done) {
        ag_obj_list_opts_t lo_opts = {
            .prefix = lo,
            .prefix_len = plen,
            .cursor = cursor,
            .start_after = cursor ? NULL : lo,
            .start_after_len = cursor ? 0 : 16,
        };
        ag_obj_list_result_t page;
        rc = ag_objstore_list(r->bucket, &lo_opts, &page);
        AG_FREE(&cursor);
        if (rc < 0)
            break;
        for (size_t i = 0; i < page.count && !done; i++) {
            const ag_obj_info_t *o = &page.objects[i];
            int64_t day, first_ms;
            if (!parse_object_key(o->key, o->key_len, &day, &first_ms) || day < first_day)
                continue;
            if (day > last_day) {
                done = true;
                break;
            }
            if (first_ms >= r->until) {
                if (day == last_day)
                    done = true; /* names sort by first-ms inside a folder */
                continue;
            }
            if (o->uploaded_ms + UPLOAD_MARGIN_MS < r->since)
                continue;
            rc = enqueue(r, o->key);
            if (rc != 0)
                done = true;
        }
        if (!done && page.truncated) {
            cursor = strdup(page.cursor);
            if (cursor == NULL)
                rc = -ENOMEM;
        }
        ag_obj_list_result_free(&page);
        if (cursor == NULL)
            break;
    }
    free(cursor);
    return rc < 0 ? rc : 0;
}

/* ---- results ------------------------------------------------------------- */

static void summarize(const counts_t *c, const ag_hist_t *lat, const ag_hist_t *cpu,
                      ag_stats_summary_t *s)
{
    *s = (ag_stats_summary_t){
        .requests = c->requests,
        .errors = c->errors,
        .error_rate = c->requests ? (double)c->errors / (double)c->requests : 0,
        .latency_p50_us = ag_hist_quantile(lat, 0.50),
        .latency_p99_us = ag_hist_quantile(lat, 0.99),
        .cpu_p50_us = ag_hist_quantile(cpu, 0.50),
        .cpu_p99_us = ag_hist_quantile(cpu, 0.99),
        .upstream_requests = c->upstream,
        .cache_hits = c->hits,
        .input_tokens = c->in_tok,
        .output_tokens = c->out_tok,
        .cost_nano_usd = c->cost_nusd,
    };
}

static int group_to_result(ag_stats_by_t by, const table_t *t, const group_t *g, bool other,
                           ag_hist_t *tmp, ag_stats_group_t *out)
{
    char num[40];
    const char *k = g->key;
    size_t n = g->len;
    if (!other && (by == AG_STATS_BY_STATUS || by == AG_STATS_BY_HOUR)) {
        int64_t v;
        memcpy(&v, g->key, sizeof(v));
        if (by == AG_STATS_BY_STATUS)
            n = (size_t)snprintf(num, sizeof(num), "%lld", (long long)v);
        else
            n = format_iso(v * HOUR_MS, false, num);
        k = num;
    }
    out->key = malloc(n + 1);
    if (out->key == NULL)
        return -ENOMEM;
    if (n)
        memcpy(out->key, k, n);
    out->key[n] = '\0';
    out->key_len = n;
    ag_hist_t *lat = tmp, *cpu = tmp + 1;
    phist_to_hist(&t->hists[g->id].lat, g->lat_max, lat);
    phist_to_hist(&t->hists[g->id].cpu, g->cpu_max, cpu);
    summarize(&g->c, lat, cpu, &out->s);
    return 0;
}

static int key_cmp(const ag_stats_group_t *a, const ag_stats_group_t *b)
{
    size_t n = a->key_len < b->key_len ? a->key_len : b->key_len;
    int c = n ? memcmp(a->key, b->key, n) : 0;
    if (c)
        return c;
    return a->key_len < b->key_len ? -1 : a->key_len > b->key_len;
}

static int cmp_by_key(const void *x, const void *y)
{
    return key_cmp(x, y);
}

static int cmp_by_requests(const void *x, const void *y)
{
    const ag_stats_group_t *a = x, *b = y;
    if (a->s.requests != b->s.requests)
        return a->s.requests > b->s.requests ? -1 : 1;
    return key_cmp(a, b);
}

/* Merges every reader's table into the first, then makes the result's groups. */
static int build_groups(const ag_stats_query_t *q, worker_t *ws, unsigned nw,
                        ag_stats_result_t *out)
{
    table_t *t = &ws[0].groups;
    for (unsigned i = 1; i < nw; i++) {
        table_t *from = &ws[i].groups;
        for (size_t s = 0; s <= from->cap; s++) {
            const group_t *g = s < from->cap ? from->slots[s] : from->other;
            if (g == NULL)
                continue;
            group_t *into;
            if (g == from->other) {
                if (t->other == NULL)
                    t->other = group_new(t, AG_STATS_OTHER, strlen(AG_STATS_OTHER), 0);
                into = t->other;
            } else {
                t->last = NULL;
                into = table_get(t, g->key, g->len, g->hash);
            }
            if (into == NULL || group_merge(t, into, from, g) < 0)
                return -ENOMEM;
        }
    }
    size_t n = t->n + (t->other != NULL);
    if (n == 0)
        return 0;
    out->groups = calloc(n, sizeof(*out->groups));
    ag_hist_t *tmp = malloc(2 * sizeof(ag_hist_t));
    if (out->groups == NULL || tmp == NULL) {
        free(tmp);
        return -ENOMEM;
    }
    int rc = 0;
    for (size_t s = 0; s < t->cap && rc == 0; s++) {
        if (t->slots[s])
            rc = group_to_result(q->by, t, t->slots[s], false, tmp, &out->groups[out->ngroups++]);
    }
    size_t sorted = out->ngroups;
    if (rc == 0 && t->other)
        rc = group_to_result(q->by, t, t->other, true, tmp, &out->groups[out->ngroups++]);
    free(tmp);
    if (rc < 0)
        return rc;
    qsort(out->groups, sorted, sizeof(*out->groups),
          q->by == AG_STATS_BY_HOUR ? cmp_by_key : cmp_by_requests);
    return 0;
}

static unsigned default_threads(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    if (n < 1)
        return 1;
    return n > MAX_THREADS ? MAX_THREADS : (unsigned)n;
}

static enum field group_field(ag_stats_by_t by)
{
    switch (by) {
    case AG_STATS_BY_MODEL:
        return F_MODEL;
    case AG_STATS_BY_ROUTE:
        return F_ROUTE;
    case AG_STATS_BY_CLIENT:
        return F_CLIENT;
    case AG_STATS_BY_KEY:
        return F_KEY;
    default:
        return F_OTHER;
    }
}

int ag_stats_collect(ag_objstore_t *bucket, const ag_stats_query_t *q, ag_stats_result_t *out)
{
    if (q == NULL || out == NULL || (unsigned)q->by >= AG_ARRAY_LEN(by_names))
        return AG_EINVALID;
    *out = (ag_stats_result_t){.since_ms = q->since_ms, .until_ms = q->until_ms, .by = q->by};
    int64_t since = q->since_ms < 0 ? 0 : q->since_ms;
    int64_t until = q->until_ms > MAX_UNTIL_MS ? MAX_UNTIL_MS : q->until_ms;
    unsigned nw = q->threads ? q->threads : default_threads();
    if (nw > MAX_THREADS)
        nw = MAX_THREADS;

    worker_t *ws = calloc(nw, sizeof(*ws));
    run_t *r = calloc(1, sizeof(*r));
    int rc = -ENOMEM;
    if (ws == NULL || r == NULL)
        goto done_alloc;
    r->bucket = bucket;
    r->since = since;
    r->until = until;
    r->by = q->by;
    r->gfield = group_field(q->by);
    pthread_mutex_init(&r->mu, NULL);
    pthread_cond_init(&r->more, NULL);
    pthread_cond_init(&r->room, NULL);
    for (unsigned i = 0; i < nw; i++) {
        worker_t *w = &ws[i];
        w->run = r;
        w->dc.day = INT64_MIN;
        w->groups.max = q->max_groups ? q->max_groups : AG_STATS_MAX_GROUPS;
        if (w->groups.max > MAX_GROUPS_LIMIT)
            w->groups.max = MAX_GROUPS_LIMIT;
        ag_buf_init(&w->scratch, 0);
        ag_hist_init(&w->lat);
        ag_hist_init(&w->cpu);
    }
    rc = 0;
    if (bucket == NULL || since >= until)
        goto summed; /* nothing to read: zero counts */
    for (unsigned i = 0; i < nw; i++) {
        worker_t *w = &ws[i];
        w->buf = malloc(READ_CHUNK);
        if (q->by != AG_STATS_BY_NONE) {
            w->pend = malloc(PEND_CAP * sizeof(*w->pend));
            w->sorted = malloc(PEND_CAP * sizeof(*w->sorted));
            w->counts = malloc((w->groups.max + 2) * sizeof(*w->counts));
        }
        if (w->buf == NULL ||
            (q->by != AG_STATS_BY_NONE && (!w->pend || !w->sorted || !w->counts))) {
            rc = -ENOMEM;
            goto joined;
        }
    }
    /* Readers take no signals: those belong to the caller's loop. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    for (unsigned i = 0; i < nw; i++) {
        int prc = pthread_create(&ws[i].thread, NULL, worker_main, &ws[i]);
        if (prc != 0) {
            rc = -prc;
            break;
        }
        ws[i].started = true;
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc == 0)
        rc = list_window(r);
    if (rc < 0)
        run_fail(r, rc);
    pthread_mutex_lock(&r->mu);
    r->listed = true;
    pthread_cond_broadcast(&r->more);
    pthread_mutex_unlock(&r->mu);
joined:
    for (unsigned i = 0; i < nw; i++) {
        if (ws[i].started)
            pthread_join(ws[i].thread, NULL);
    }
    if (rc == 0)
        rc = r->err;
    while (r->count > 0) { /* left by a failed run */
        free(r->queue[r->head]);
        r->head = (r->head + 1) % QUEUE_CAP;
        r->count--;
    }
    if (rc < 0)
        goto done;
summed:
    for (unsigned i = 1; i < nw; i++) {
        counts_merge(&ws[0].c, &ws[i].c);
        ag_hist_merge(&ws[0].lat, &ws[i].lat);
        ag_hist_merge(&ws[0].cpu, &ws[i].cpu);
        ws[0].skipped += ws[i].skipped;
        ws[0].objects += ws[i].objects;
        ws[0].bytes += ws[i].bytes;
    }
    summarize(&ws[0].c, &ws[0].lat, &ws[0].cpu, &out->total);
    out->skipped = ws[0].skipped;
    out->objects = ws[0].objects;
    out->bytes = ws[0].bytes;
    if (bucket && ag_usage_log_oldest_day(bucket, out->oldest_day) < 0)
        out->oldest_day[0] = '\0'; /* only a hint: the sums stand */
    if (q->by != AG_STATS_BY_NONE)
        rc = build_groups(q, ws, nw, out);
done:
    pthread_mutex_destroy(&r->mu);
    pthread_cond_destroy(&r->more);
    pthread_cond_destroy(&r->room);
    for (unsigned i = 0; i < nw; i++) {
        free(ws[i].buf);
        free(ws[i].pend);
        free(ws[i].sorted);
        free(ws[i].counts);
        ag_buf_fini(&ws[i].scratch);
        table_fini(&ws[i].groups);
    }
done_alloc:
    free(ws);
    free(r);
    if (rc < 0) {
        ag_stats_result_fini(out);
        *out = (ag_stats_result_t){.since_ms = q->since_ms, .until_ms = q->until_ms, .by = q->by};
    }
    return rc;
}

void ag_stats_result_fini(ag_stats_result_t *r)
{
    if (r == NULL)
        return;
    for (size_t i = 0; i < r->ngroups; i++)
        free(r->groups[i].key);
    free(r->groups);
    memset(r, 0, sizeof(*r));
}

/* ---- JSON ---------------------------------------------------------------- */

static void put(ag_buf_t *b, const char *s, size_t n, int *rc)
{
    if (*rc == 0)
        *rc = ag_buf_append(b, s, n);
}

#define PUT_LIT(b, lit, rc) put((b), (lit), sizeof(lit) - 1, (rc))

static void put_u64(ag_buf_t *b, uint64_t v, int *rc)
{
    char num[24];
    put(b, num, ag_fmt_u64(num, v), rc);
}

static void put_i64(ag_buf_t *b, int64_t v, int *rc)
{
    if (v < 0) {
        PUT_LIT(b, "-", rc);
        put_u64(b, v == INT64_MIN ? (uint64_t)INT64_MAX + 1 : (uint64_t)-v, rc);
    } else {
        put_u64(b, (uint64_t)v, rc);
    }
}

/* A fixed-point value (v / 10^scale) with `keep` of its decimals always
 * written (3 for ms), the others only while not trailing zeros. */
static void put_fixed(ag_buf_t *b, int64_t v, unsigned scale, unsigned keep, int *rc)
{
    uint64_t mag = v < 0 ? (v == INT64_MIN ? (uint64_t)INT64_MAX + 1 : (uint64_t)-v) : (uint64_t)v;
    if (v < 0)
        PUT_LIT(b, "-", rc);
    uint64_t p = (uint64_t)pow10s[scale];
    put_u64(b, mag / p, rc);
    uint64_t frac = mag % p;
    char d[10];
    d[0] = '.';
    for (unsigned i = scale; i >= 1; i--) {
        d[i] = (char)('0' + frac % 10);
        frac /= 10;
    }
    size_t n = scale + 1;
    while (n > keep + 1 && d[n - 1] == '0')
        n--;
    if (n > 1)
        put(b, d, n, rc);
}

static void put_ms(ag_buf_t *b, uint64_t us, int *rc)
{
    put_fixed(b, (int64_t)(us > (uint64_t)INT64_MAX ? INT64_MAX : us), 3, 3, rc);
}

static void put_summary(ag_buf_t *b, const ag_stats_summary_t *s, int *rc)
{
    PUT_LIT(b, "\"requests\":", rc);
    put_u64(b, s->requests, rc);
    PUT_LIT(b, ",\"errors\":", rc);
    put_u64(b, s->errors, rc);
    PUT_LIT(b, ",\"errorRate\":", rc);
    put_fixed(b, (int64_t)(s->error_rate * 1e6 + 0.5), 6, 0, rc);
    PUT_LIT(b, ",\"latencyMs\":{\"p50\":", rc);
    put_ms(b, s->latency_p50_us, rc);
    PUT_LIT(b, ",\"p99\":", rc);
    put_ms(b, s->latency_p99_us, rc);
    PUT_LIT(b, "},\"cpuMs\":{\"p50\":", rc);
    put_ms(b, s->cpu_p50_us, rc);
    PUT_LIT(b, ",\"p99\":", rc);
    put_ms(b, s->cpu_p99_us, rc);
    PUT_LIT(b, "},\"upstreamRequests\":", rc);
    put_u64(b, s->upstream_requests, rc);
    PUT_LIT(b, ",\"cacheHits\":", rc);
    put_u64(b, s->cache_hits, rc);
    PUT_LIT(b, ",\"tokens\":{\"input\":", rc);
    put_i64(b, s->input_tokens, rc);
    PUT_LIT(b, ",\"output\":", rc);
    put_i64(b, s->output_tokens, rc);
    PUT_LIT(b, "},\"costUsd\":", rc);
    put_fixed(b, s->cost_nano_usd, 9, 0, rc);
}

int ag_stats_json(const ag_stats_result_t *r, ag_buf_t *out)
{
    int rc = 0;
    char ts[32];
    PUT_LIT(out, "{\"since\":\"", &rc);
    put(out, ts, format_iso(r->since_ms, true, ts), &rc);
    PUT_LIT(out, "\",\"until\":\"", &rc);
    put(out, ts, format_iso(r->until_ms, true, ts), &rc);
    PUT_LIT(out, "\",", &rc);
    put_summary(out, &r->total, &rc);
    PUT_LIT(out, ",\"skipped\":", &rc);
    put_u64(out, r->skipped, &rc);
    if (r->by != AG_STATS_BY_NONE) {
        PUT_LIT(out, ",\"groups\":[", &rc);
        for (size_t i = 0; i < r->ngroups; i++) {
            const ag_stats_group_t *g = &r->groups[i];
            if (i)
                PUT_LIT(out, ",", &rc);
            PUT_LIT(out, "{\"key\":", &rc);
            if (rc == 0)
                rc = ag_json_append_string(out, ag_str(g->key, g->key_len));
            PUT_LIT(out, ",", &rc);
            put_summary(out, &g->s, &rc);
            PUT_LIT(out, "}", &rc);
        }
        PUT_LIT(out, "]", &rc);
    }
    PUT_LIT(out, "}", &rc);
    return rc;
}

int ag_stats_run(ag_objstore_t *bucket, int64_t since_ms, int64_t until_ms, ag_stats_by_t by,
                 ag_buf_t *json_out)
{
    ag_stats_query_t q = {.since_ms = since_ms, .until_ms = until_ms, .by = by};
    ag_stats_result_t r;
    int rc = ag_stats_collect(bucket, &q, &r);
    if (rc == 0)
        rc = ag_stats_json(&r, json_out);
    ag_stats_result_fini(&r);
    return rc;
}

/* ---- the human table ----------------------------------------------------- */

#define NCOLS 12
#define CELL 48

typedef struct row {
    char cell[NCOLS][CELL];
} row_t;

static void fmt_count(char *out, uint64_t v)
{
    snprintf(out, CELL, "%llu", (unsigned long long)v);
}

static void fmt_row(row_t *row, const char *name, size_t name_len, const ag_stats_summary_t *s)
{
    /* the name, with control bytes shown as '?' (a model name is client input) */
    size_t n = name_len < CELL - 1 ? name_len : CELL - 1;
    while (n > 0 && n < name_len && ((unsigned char)name[n] & 0xC0) == 0x80)
        n--; /* cut on a character boundary */
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)name[i];
        row->cell[0][i] = c < 0x20 || c == 0x7f ? '?' : (char)c;
    }
    row->cell[0][n] = '\0';
    fmt_count(row->cell[1], s->requests);
    snprintf(row->cell[2], CELL, "%.2f%%", s->error_rate * 100);
    snprintf(row->cell[3], CELL, "%.1f", (double)s->latency_p50_us / 1000);
    snprintf(row->cell[4], CELL, "%.1f", (double)s->latency_p99_us / 1000);
    snprintf(row->cell[5], CELL, "%.3f", (double)s->cpu_p50_us / 1000);
    snprintf(row->cell[6], CELL, "%.3f", (double)s->cpu_p99_us / 1000);
    fmt_count(row->cell[7], s->upstream_requests);
    fmt_count(row->cell[8], s->cache_hits);
    snprintf(row->cell[9], CELL, "%lld", (long long)s->input_tokens);
    snprintf(row->cell[10], CELL, "%lld", (long long)s->output_tokens);
    snprintf(row->cell[11], CELL, "%.6f", (double)s->cost_nano_usd / 1e9);
}

int ag_stats_text(const ag_stats_result_t *r, ag_buf_t *out)
{
    static const char *const heads[NCOLS] = {"",           "REQUESTS",   "ERROR RATE", "P50 MS",
                                             "P99 MS",     "CPU P50 MS", "CPU P99 MS", "UPSTREAM",
                                             "CACHE HITS", "TOKENS IN",  "TOKENS OUT", "COST USD"};
    bool grouped = r->by != AG_STATS_BY_NONE;
    size_t nrows = 2 + (grouped ? r->ngroups : 0);
    row_t *rows = calloc(nrows, sizeof(*rows));
    if (rows == NULL)
        return -ENOMEM;
    for (unsigned c = 0; c < NCOLS; c++)
        snprintf(rows[0].cell[c], CELL, "%s", heads[c]);
    if (grouped) {
        const char *by = ag_stats_by_name(r->by);
        for (size_t i = 0; by[i] && i < CELL - 1; i++)
            rows[0].cell[0][i] = (char)(by[i] >= 'a' && by[i] <= 'z' ? by[i] - 32 : by[i]);
        for (size_t i = 0; i < r->ngroups; i++)
            fmt_row(&rows[1 + i], r->groups[i].key, r->groups[i].key_len, &r->groups[i].s);
    }
    fmt_row(&rows[nrows - 1], "total", 5, &r->total);

    size_t width[NCOLS] = {0};
    for (size_t i = 0; i < nrows; i++)
        for (unsigned c = 0; c < NCOLS; c++) {
            size_t l = strlen(rows[i].cell[c]);
            if (l > width[c])
                width[c] = l;
        }

    int rc = 0;
    char since[32], until[32];
    format_iso(r->since_ms, true, since);
    format_iso(r->until_ms, true, until);
    if (ag_buf_printf(out, "usage log from %s to %s\n", since, until) < 0)
        rc = -ENOMEM;
    for (size_t i = 0; i < nrows && rc == 0; i++) {
        for (unsigned c = 0; c < NCOLS && rc == 0; c++) {
            const char *cell = rows[i].cell[c];
            int w = (int)width[c];
            if (c == 0)
                rc = ag_buf_printf(out, "%-*s", w, cell);
            else
                rc = ag_buf_printf(out, "  %*s", w, cell);
        }
        if (rc == 0)
            rc = ag_buf_append(out, "\n", 1);
    }
    if (rc == 0 && r->skipped)
        rc = ag_buf_printf(out, "(%llu malformed line%s skipped)\n", (unsigned long long)r->skipped,
                           r->skipped == 1 ? "" : "s");
    /* Older days may be gone (usage_log_retention_days): say what there is. */
    if (rc == 0)
        rc = r->oldest_day[0] ? ag_buf_printf(out, "the usage log goes back to %s\n", r->oldest_day)
                              : ag_buf_printf(out, "the usage log is empty\n");
    free(rows);
    return rc < 0 ? rc : 0;
}
