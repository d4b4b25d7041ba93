/* SPDX-License-Identifier: MIT
 *
 * budget.c: reservations against budgets and per-key rates (budget.h): the
 * per-key state table, the check-and-take step, and the LMDB record of spend
 * and outstanding reservations with its recovery on open.
 */
#include "util/platform.h"

#include "limit/budget.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdalign.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>

#include <lmdb.h>

#include "util/errors.h"
#include "util/fs.h"
#include "util/le.h"
#include "util/log.h"

/*
 * Layout of <data_dir>/budget (LMDB, two databases):
 *   spend  "d/DDDDDDDD/NAME" (day number since the epoch, UTC) or
 *          "m/MMMMMM/NAME" (months since January 1970) -> i64 nano-USD (LE);
 *          NAME "*" is the global budget.
 *   resv   NAME, NUL, u32 epoch of the opener, u64 seq (big-endian) ->
 *          i64 day, i64 month, i64 worst nano-USD, u8 flags (TRACK_KEY, GLOBAL).
 * The store's map is fixed (as the key store's), so no process resizes it.
 */
#define MAP_SIZE ((size_t)64 << 20)
#define NSHARDS 64
#define NANO 1e9
#define NS_PER_MIN INT64_C(60000000000)
#define MS_PER_DAY INT64_C(86400000)
#define MAX_USD 1e9
#define F_TRACK_KEY 1
#define F_GLOBAL 2
#define GLOBAL_NAME "*"
/* Spend windows kept after a restart; older ones are dropped on open. */
#define KEEP_DAYS 40
#define KEEP_MONTHS 13

struct ag_budget_entry {
    ag_budget_entry_t *next; /* in its shard */
    pthread_mutex_t lock;
    char name[AG_BUDGET_NAME_MAX + 1];
    int64_t day, month; /* windows the sums are for; -1: not loaded */
    int64_t day_spent, day_resv;
    int64_t month_spent, month_resv;
    int64_t rpm_tat, tpm_tat; /* GCRA theoretical arrival times, ns */
    uint64_t seq;
};

typedef struct shard {
    alignas(64) pthread_mutex_t lock;
    ag_budget_entry_t *head;
} shard_t;

struct ag_budget {
    MDB_env *env;
    MDB_dbi spend, resv;
    uint32_t epoch;
    int64_t (*now_ms)(void *ctx);
    void *clock_ctx;
    _Atomic int64_t global_limit; /* nano-USD; 0: none. Written on reload only. */
    ag_budget_entry_t global;
    shard_t shards[NSHARDS];
};

static int64_t real_now_ms(void *ctx)
{
    AG_UNUSED(ctx);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Amounts: a limit or a real cost to the nearest nano-USD, a worst case up
 * (forgiving a thousandth of a nano-USD of float noise). */
int64_t ag_budget_nano_near(double usd)
{
    if (!(usd > 0))
        return 0;
    return (int64_t)llround((usd < MAX_USD ? usd : MAX_USD) * NANO);
}

int64_t ag_budget_nano_up(double usd)
{
    if (!(usd > 0))
        return 0;
    double n = ceil((usd < MAX_USD ? usd : MAX_USD) * NANO - 1e-3);
    return n > 0 ? (int64_t)n : 0;
}

static int64_t day_of(int64_t ms)
{
    return ms >= 0 ? ms / MS_PER_DAY : -((-ms + MS_PER_DAY - 1) / MS_PER_DAY);
}

static int64_t month_of(int64_t ms)
{
    time_t s = (time_t)(ms / 1000);
    struct tm tm;
    if (gmtime_r(&s, &tm) == NULL)
        return 0;
    return (int64_t)(tm.tm_year - 70) * 12 + tm.tm_mon;
}

static uint32_t secs_up(int64_t ms)
{
    if (ms <= 1000)
        return 1;
    int64_t s = (ms + 999) / 1000;
    return s > UINT32_MAX ? UINT32_MAX : (uint32_t)s;
}

uint32_t ag__budget_day_reset_s(int64_t now_ms)
{
    return secs_up((day_of(now_ms) + 1) * MS_PER_DAY - now_ms);
}

uint32_t ag__budget_month_reset_s(int64_t now_ms)
{
    time_t s = (time_t)(now_ms / 1000);
    struct tm tm;
    if (gmtime_r(&s, &tm) == NULL)
        return 1;
    struct tm next = {
        .tm_year = tm.tm_year + (tm.tm_mon == 11), .tm_mon = (tm.tm_mon + 1) % 12, .tm_mday = 1};
    return secs_up((int64_t)timegm(&next) * 1000 - now_ms);
}

/* ---- the store ----------------------------------------------------------------------- */

static int spend_key(char *buf, size_t cap, bool month, int64_t window, const char *name)
{
    return snprintf(buf, cap, month ? "m/%06lld/%s" : "d/%08lld/%s", (long long)window, name);
}

static int64_t spend_get(ag_budget_t *b, MDB_txn *txn, bool month, int64_t window, const char *name)
{
    char k[AG_BUDGET_NAME_MAX + 32];
    int n = spend_key(k, sizeof(k), month, window, name);
    MDB_val kv = {(size_t)n, k}, v;
    if (mdb_get(txn, b->spend, &kv, &v) != 0 || v.mv_size != 8)
        return 0;
    return (int64_t)ag_le_get(v.mv_data, 8);
}

static int spend_add(ag_budget_t *b, MDB_txn *txn, bool month, int64_t window, const char *name,
                     int64_t add)
{
    if (add == 0)
        return 0;
    char k[AG_BUDGET_NAME_MAX + 32];
    int n = spend_key(k, sizeof(k), month, window, name);
    unsigned char val[8];
    ag_le_put(val, (uint64_t)(spend_get(b, txn, month, window, name) + add), 8);
    MDB_val kv = {(size_t)n, k}, v = {8, val};
    return mdb_put(txn, b->spend, &kv, &v, 0);
}

static size_t resv_key(unsigned char *buf, const char *name, uint32_t epoch, uint64_t seq)
{
    size_t n = strlen(name);
    memcpy(buf, name, n);
    buf[n] = '\0';
    for (int i = 0; i < 4; i++)
        buf[n + 1 + i] = (unsigned char)(epoch >> (24 - 8 * i));
    for (int i = 0; i < 8; i++)
        buf[n + 5 + i] = (unsigned char)(seq >> (56 - 8 * i));
    return n + 13;
}

static int store_fail(const char *what, int rc)
{
    ag_log_error("budget store: cannot %s: %s", what, mdb_strerror(rc));
    return AG_BUDGET_ESTORE;
}

static const char *resv_name(const ag_budget_resv_t *r)
{
    return r->entry ? r->entry->name : GLOBAL_NAME;
}

static int persist_reserve(ag_budget_t *b, const ag_budget_resv_t *r)
{
    unsigned char k[AG_BUDGET_NAME_MAX + 16], v[25];
    size_t klen = resv_key(k, resv_name(r), b->epoch, r->seq);
    ag_le_put(v, (uint64_t)r->day, 8);
    ag_le_put(v + 8, (uint64_t)r->month, 8);
    ag_le_put(v + 16, (uint64_t)r->usd_nano, 8);
    v[24] = (unsigned char)((r->track_key ? F_TRACK_KEY : 0) | (r->global ? F_GLOBAL : 0));
    MDB_txn *txn;
    int rc = mdb_txn_begin(b->env, NULL, 0, &txn);
    if (rc == 0) {
        MDB_val kv = {klen, k}, vv = {sizeof(v), v};
        rc = mdb_put(txn, b->resv, &kv, &vv, 0);
        if (rc == 0)
            rc = mdb_txn_commit(txn);
        else
            mdb_txn_abort(txn);
    }
    return rc == 0 ? 0 : store_fail("record a reservation", rc);
}

/* Adds a settled (or recovered) cost to its windows and drops the record.
 * On failure the record stays, and the next open counts it at its worst case. */
static int persist_settle(ag_budget_t *b, const unsigned char *k, size_t klen, const char *name,
                          int64_t day, int64_t month, unsigned flags, int64_t nano, MDB_txn *txn)
{
    int rc = 0;
    if (flags & F_TRACK_KEY) {
        rc = spend_add(b, txn, false, day, name, nano);
        if (rc == 0)
            rc = spend_add(b, txn, true, month, name, nano);
    }
    if (rc == 0 && (flags & F_GLOBAL))
        rc = spend_add(b, txn, false, day, GLOBAL_NAME, nano);
    if (rc == 0) {
        MDB_val kv = {klen, (void *)k};
        rc = mdb_del(txn, b->resv, &kv, NULL);
        if (rc == MDB_NOTFOUND)
            rc = 0;
    }
    return rc;
}

/* Counts what a crash left outstanding at its worst case; drops old windows.
 * keep_resv (a binary upgrade's new process): the reservations are the old
 * process's, which still settles them, so they stay. */
static int recover(ag_budget_t *b, int64_t now_ms, bool keep_resv)
{
    MDB_txn *txn;
    MDB_cursor *cur = NULL;
    int rc = mdb_txn_begin(b->env, NULL, 0, &txn);
    if (rc != 0)
        return rc;
    if (!keep_resv)
        rc = mdb_cursor_open(txn, b->resv, &cur);
    MDB_val k, v;
    size_t recovered = 0;
    int mrc = rc == 0 && cur ? mdb_cursor_get(cur, &k, &v, MDB_FIRST) : MDB_NOTFOUND;
    for (; rc == 0 && mrc == 0; mrc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        const unsigned char *kp = k.mv_data;
        const unsigned char *nul = memchr(kp, '\0', k.mv_size);
        size_t nlen = nul ? (size_t)(nul - kp) : 0;
        char name[AG_BUDGET_NAME_MAX + 1];
        if (nul && nlen > 0 && nlen <= AG_BUDGET_NAME_MAX && v.mv_size == 25) {
            memcpy(name, kp, nlen);
            name[nlen] = '\0';
            const unsigned char *p = v.mv_data;
            int64_t day = (int64_t)ag_le_get(p, 8), month = (int64_t)ag_le_get(p + 8, 8);
            int64_t worst = (int64_t)ag_le_get(p + 16, 8);
            unsigned flags = p[24];
            /* Not through persist_settle: the cursor deletes its own entry. */
            if (flags & F_TRACK_KEY) {
                rc = spend_add(b, txn, false, day, name, worst);
                if (rc == 0)
                    rc = spend_add(b, txn, true, month, name, worst);
            }
            if (rc == 0 && (flags & F_GLOBAL))
                rc = spend_add(b, txn, false, day, GLOBAL_NAME, worst);
            recovered++;
        }
        if (rc == 0)
            rc = mdb_cursor_del(cur, 0);
    }
    if (rc == 0 && mrc != MDB_NOTFOUND)
        rc = mrc;
    if (cur)
        mdb_cursor_close(cur);
    /* Old windows: keys sort by kind, then window number. */
    cur = NULL;
    if (rc == 0)
        rc = mdb_cursor_open(txn, b->spend, &cur);
    int64_t old_day = day_of(now_ms) - KEEP_DAYS, old_month = month_of(now_ms) - KEEP_MONTHS;
    mrc = rc == 0 ? mdb_cursor_get(cur, &k, &v, MDB_FIRST) : MDB_NOTFOUND;
    for (; rc == 0 && mrc == 0; mrc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        char buf[24];
        size_t n = k.mv_size < sizeof(buf) - 1 ? k.mv_size : sizeof(buf) - 1;
        memcpy(buf, k.mv_data, n);
        buf[n] = '\0';
        long long w;
        char kind;
        if (sscanf(buf, "%c/%lld/", &kind, &w) != 2 || (kind == 'd' && w < old_day) ||
            (kind == 'm' && w < old_month))
            rc = mdb_cursor_del(cur, 0);
    }
    if (rc == 0 && mrc != MDB_NOTFOUND)
        rc = mrc;
    if (cur)
        mdb_cursor_close(cur);
    if (rc == 0)
        rc = mdb_txn_commit(txn);
    else
        mdb_txn_abort(txn);
    if (rc == 0 && recovered)
        ag_log_warn("budget store: %zu reservation%s left by a crash counted at the worst case",
                    recovered, recovered == 1 ? "" : "s");
    return rc;
}

/* ---- per-key state ------------------------------------------------------------------- */

/* Brings e's windows to (day, month), reading what earlier runs spent there.
 * Called with e->lock held; reads the store once per window and key. */
static void roll(ag_budget_t *b, ag_budget_entry_t *e, int64_t day, int64_t month)
{
    if (e->day == day && e->month == month)
        return;
    MDB_txn *txn = NULL;
    if (mdb_txn_begin(b->env, NULL, MDB_RDONLY, &txn) != 0)
        txn = NULL;
    if (e->day != day) {
        e->day = day;
        e->day_spent = txn ? spend_get(b, txn, false, day, e->name) : 0;
        e->day_resv = 0;
    }
    if (e->month != month) {
        e->month = month;
        e->month_spent = txn ? spend_get(b, txn, true, month, e->name) : 0;
        e->month_resv = 0;
    }
    if (txn)
        mdb_txn_abort(txn);
}

static void entry_init(ag_budget_entry_t *e, const char *name)
{
    memset(e, 0, sizeof(*e));
    pthread_mutex_init(&e->lock, NULL);
    snprintf(e->name, sizeof(e->name), "%s", name);
    e->day = e->month = -1;
    e->rpm_tat = e->tpm_tat = INT64_MIN;
}

static uint32_t fnv1a(const char *s)
{
    uint32_t h = 2166136261u;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 16777619u;
    return h;
}

/* The state of key `name`, created on first use. Names are operators' (a key
 * was authenticated first), so the table grows only with the key store. */
static ag_budget_entry_t *entry_get(ag_budget_t *b, const char *name)
{
    shard_t *s = &b->shards[fnv1a(name) % NSHARDS];
    pthread_mutex_lock(&s->lock);
    ag_budget_entry_t *e = s->head;
    while (e != NULL && strcmp(e->name, name) != 0)
        e = e->next;
    if (e == NULL) {
        e = malloc(sizeof(*e));
        if (e != NULL) {
            entry_init(e, name);
            e->next = s->head;
            s->head = e;
        }
    }
    pthread_mutex_unlock(&s->lock);
    return e;
}

static bool name_ok(const char *name)
{
    size_t n = strlen(name);
    return n > 0 && n <= AG_BUDGET_NAME_MAX && strcmp(name, GLOBAL_NAME) != 0;
}

/* ---- opening ------------------------------------------------------------------------- */

int ag_budget_open(const char *data_dir, const ag_budget_options_t *opts, ag_budget_t **out)
{
    *out = NULL;
    if (data_dir == NULL)
        return AG_EINVALID;
    ag_budget_t *b = calloc(1, sizeof(*b));
    if (b == NULL)
        return -ENOMEM;
    b->now_ms = opts && opts->now_ms ? opts->now_ms : real_now_ms;
    b->clock_ctx = opts ? opts->clock_ctx : NULL;
    atomic_init(&b->global_limit, ag_budget_nano_near(opts ? opts->global_daily_usd : 0));
    if (getrandom(&b->epoch, sizeof(b->epoch), 0) != sizeof(b->epoch))
        b->epoch = (uint32_t)real_now_ms(NULL);
    entry_init(&b->global, GLOBAL_NAME);
    for (size_t i = 0; i < NSHARDS; i++)
        pthread_mutex_init(&b->shards[i].lock, NULL);

    size_t n = strlen(data_dir) + sizeof("/" AG_BUDGET_DIR);
    char *dir = malloc(n);
    int rc = dir ? 0 : -ENOMEM;
    if (rc == 0) {
        snprintf(dir, n, "%s/%s", data_dir, AG_BUDGET_DIR);
        rc = ag_fs_mkdir_p(dir, 0700);
    }
    int mrc = 0;
    MDB_txn *txn = NULL;
    if (rc == 0 && (mrc = mdb_env_create(&b->env)) == 0) {
        mdb_env_set_maxdbs(b->env, 2);
        mdb_env_set_mapsize(b->env, MAP_SIZE);
        /* No fsync per commit: a reservation must survive the process, which
         * the page cache gives; a power cut may lose the last ones. */
        mrc = mdb_env_open(b->env, dir, MDB_NOTLS | MDB_NOSYNC, 0600);
        if (mrc == 0) {
            int dead;
            mdb_reader_check(b->env, &dead);
            mrc = mdb_txn_begin(b->env, NULL, 0, &txn);
        }
        if (mrc == 0)
            mrc = mdb_dbi_open(txn, "spend", MDB_CREATE, &b->spend);
        if (mrc == 0)
            mrc = mdb_dbi_open(txn, "resv", MDB_CREATE, &b->resv);
        if (mrc == 0)
            mrc = mdb_txn_commit(txn);
        else if (txn)
            mdb_txn_abort(txn);
        if (mrc == 0)
            mrc = recover(b, b->now_ms(b->clock_ctx), opts && opts->handover);
    }
    if (rc == 0 && mrc != 0) {
        ag_log_error("budget store %s: %s", dir, mdb_strerror(mrc));
        rc = AG_BUDGET_ESTORE;
    }
    free(dir);
    if (rc < 0) {
        ag_budget_close(b);
        return rc;
    }
    *out = b;
    return 0;
}

void ag_budget_close(ag_budget_t *b)
{
    if (b == NULL)
        return;
    if (b->env) {
        mdb_env_sync(b->env, 1);
        mdb_env_close(b->env);
    }
    for (size_t i = 0; i < NSHARDS; i++) {
        for (ag_budget_entry_t *e = b->shards[i].head, *next; e != NULL; e = next) {
            next = e->next;
            pthread_mutex_destroy(&e->lock);
            free(e);
        }
        pthread_mutex_destroy(&b->shards[i].lock);
    }
    pthread_mutex_destroy(&b->global.lock);
    free(b);
}

void ag_budget_set_global(ag_budget_t *b, double daily_usd)
{
    atomic_store_explicit(&b->global_limit, ag_budget_nano_near(daily_usd), memory_order_relaxed);
}

/* ---- reserve and settle -------------------------------------------------------------- */

/* GCRA of `cost` units at `limit` per minute: the new TAT, or *wait_ms > 0 when refused. */
static int64_t gcra(int64_t tat, int64_t now_ns, uint32_t limit, uint64_t cost, int64_t *interval,
                    int64_t *wait_ms)
{
    int64_t t = (NS_PER_MIN + limit - 1) / limit;
    *interval = t;
    *wait_ms = 0;
    if (cost > limit) {
        *wait_ms = 60000; /* never fits: it cannot be served at this limit */
        return tat;
    }
    int64_t base = tat > now_ns ? tat : now_ns;
    int64_t next = base + (int64_t)cost * t;
    int64_t over = next - (int64_t)limit * t - now_ns;
    if (over > 0) {
        *wait_ms = (over + 999999) / 1000000;
        return tat;
    }
    return next;
}

static void refuse(ag_budget_result_t *res, ag_budget_reason_t why, int64_t wait_ms)
{
    uint32_t s = secs_up(wait_ms);
    if (res->allowed || s > res->retry_after_s) {
        res->allowed = false;
        res->reason = why;
        res->retry_after_s = s;
    }
}

int ag_budget_reserve(ag_budget_t *b, const char *name, const ag_budget_limits_t *lim,
                      double worst_usd, uint64_t worst_tokens, ag_budget_resv_t *resv,
                      ag_budget_result_t *res)
{
    static const ag_budget_limits_t none;
    memset(resv, 0, sizeof(*resv));
    *res = (ag_budget_result_t){.allowed = true};
    if (name != NULL && !name_ok(name))
        return AG_EINVALID;
    if (lim == NULL || name == NULL)
        lim = &none;
    int64_t now = b->now_ms(b->clock_ctx);
    int64_t now_ns = now * 1000000;
    int64_t day = day_of(now), month = month_of(now);
    int64_t worst = ag_budget_nano_up(worst_usd);
    int64_t glimit = atomic_load_explicit(&b->global_limit, memory_order_relaxed);
    bool use_global = glimit > 0;
    bool key_budget = lim->daily_usd > 0 || lim->monthly_usd > 0;

    ag_budget_entry_t *e = NULL;
    if (name != NULL && (key_budget || use_global || lim->rpm || lim->tpm)) {
        e = entry_get(b, name);
        if (e == NULL)
            return -ENOMEM;
    }
    if (e == NULL && !use_global)
        return 0; /* nothing applies: nothing to hold */

    bool track_key = e != NULL && (key_budget || use_global);
    int64_t rpm_tat = 0, tpm_tat = 0, tpm_interval = 0, iv, wait;
    if (e != NULL) {
        pthread_mutex_lock(&e->lock);
        if (track_key)
            roll(b, e, day, month);
        if (lim->rpm) {
            rpm_tat = gcra(e->rpm_tat, now_ns, lim->rpm, 1, &iv, &wait);
            if (wait)
                refuse(res, AG_BUDGET_RPM, wait);
        }
        if (lim->tpm && worst_tokens) {
            tpm_tat = gcra(e->tpm_tat, now_ns, lim->tpm, worst_tokens, &tpm_interval, &wait);
            if (wait)
                refuse(res, AG_BUDGET_TPM, wait);
        }
        if (lim->daily_usd > 0 &&
            e->day_spent + e->day_resv + worst > ag_budget_nano_near(lim->daily_usd))
            refuse(res, AG_BUDGET_DAILY, (int64_t)ag__budget_day_reset_s(now) * 1000);
        if (lim->monthly_usd > 0 &&
            e->month_spent + e->month_resv + worst > ag_budget_nano_near(lim->monthly_usd))
            refuse(res, AG_BUDGET_MONTHLY, (int64_t)ag__budget_month_reset_s(now) * 1000);
    }
    ag_budget_entry_t *g = &b->global;
    if (use_global) {
        pthread_mutex_lock(&g->lock);
        roll(b, g, day, month);
        if (g->day_spent + g->day_resv + worst > glimit)
            refuse(res, AG_BUDGET_GLOBAL, (int64_t)ag__budget_day_reset_s(now) * 1000);
    }
    if (res->allowed) {
        if (e != NULL) {
            if (lim->rpm)
                e->rpm_tat = rpm_tat;
            if (lim->tpm && worst_tokens)
                e->tpm_tat = tpm_tat;
            if (track_key) {
                e->day_resv += worst;
                e->month_resv += worst;
            }
        }
        if (use_global)
            g->day_resv += worst;
        ag_budget_entry_t *owner = e ? e : g;
        *resv = (ag_budget_resv_t){.active = true,
                                   .global = use_global,
                                   .track_key = track_key,
                                   .entry = e,
                                   .day = day,
                                   .month = month,
                                   .usd_nano = worst,
                                   .tokens = lim->tpm ? worst_tokens : 0,
                                   .tpm_interval_ns = tpm_interval,
                                   .seq = ++owner->seq};
    }
    if (use_global)
        pthread_mutex_unlock(&g->lock);
    if (e != NULL)
        pthread_mutex_unlock(&e->lock);
    if (!res->allowed || !(track_key || use_global) || worst == 0)
        return 0;
    resv->persisted = true;
    int rc = persist_reserve(b, resv);
    if (rc < 0) {
        /* Not recorded: give everything back and refuse. */
        resv->persisted = false;
        ag_budget_settle(b, resv, 0, 0);
        *res =
            (ag_budget_result_t){.allowed = false, .reason = AG_BUDGET_GLOBAL, .retry_after_s = 1};
    }
    return rc;
}

void ag_budget_settle(ag_budget_t *b, ag_budget_resv_t *resv, double real_usd, uint64_t real_tokens)
{
    if (resv == NULL || !resv->active)
        return;
    resv->active = false;
    int64_t real = ag_budget_nano_near(real_usd);
    ag_budget_entry_t *e = resv->entry;
    if (e != NULL) {
        pthread_mutex_lock(&e->lock);
        if (resv->tokens && resv->tpm_interval_ns) {
            /* Refund the unused part of the worst case (or count the excess). */
            uint64_t used = real_tokens < 2 * resv->tokens ? real_tokens : 2 * resv->tokens;
            e->tpm_tat -= ((int64_t)resv->tokens - (int64_t)used) * resv->tpm_interval_ns;
        }
        if (resv->track_key) {
            if (resv->day == e->day) {
                e->day_resv -= resv->usd_nano;
                e->day_spent += real;
            }
            if (resv->month == e->month) {
                e->month_resv -= resv->usd_nano;
                e->month_spent += real;
            }
        }
        pthread_mutex_unlock(&e->lock);
    }
    if (resv->global) {
        ag_budget_entry_t *g = &b->global;
        pthread_mutex_lock(&g->lock);
        if (resv->day == g->day) {
            g->day_resv -= resv->usd_nano;
            g->day_spent += real;
        }
        pthread_mutex_unlock(&g->lock);
    }
    if (!resv->persisted)
        return;
    unsigned char k[AG_BUDGET_NAME_MAX + 16];
    size_t klen = resv_key(k, resv_name(resv), b->epoch, resv->seq);
    unsigned flags = (resv->track_key ? F_TRACK_KEY : 0) | (resv->global ? F_GLOBAL : 0);
    MDB_txn *txn;
    int rc = mdb_txn_begin(b->env, NULL, 0, &txn);
    if (rc == 0) {
        rc = persist_settle(b, k, klen, resv_name(resv), resv->day, resv->month, flags, real, txn);
        if (rc == 0)
            rc = mdb_txn_commit(txn);
        else
            mdb_txn_abort(txn);
    }
    if (rc != 0)
        store_fail("record a settled cost (counted at its worst case after a restart)", rc);
}

void ag_budget_settle_worst(ag_budget_t *b, ag_budget_resv_t *resv)
{
    if (resv == NULL || !resv->active)
        return;
    ag_budget_settle(b, resv, (double)resv->usd_nano / NANO, resv->tokens);
}

int ag_budget_usage(ag_budget_t *b, const char *name, ag_budget_usage_t *out)
{
    memset(out, 0, sizeof(*out));
    ag_budget_entry_t *e = &b->global;
    if (name != NULL) {
        if (!name_ok(name))
            return AG_EINVALID;
        e = entry_get(b, name);
        if (e == NULL)
            return -ENOMEM;
    }
    int64_t now = b->now_ms(b->clock_ctx);
    pthread_mutex_lock(&e->lock);
    roll(b, e, day_of(now), month_of(now));
    out->day_spent_usd = (double)e->day_spent / NANO;
    out->day_reserved_usd = (double)e->day_resv / NANO;
    out->month_spent_usd = (double)e->month_spent / NANO;
    out->month_reserved_usd = (double)e->month_resv / NANO;
    pthread_mutex_unlock(&e->lock);
    return 0;
}

int64_t ag_budget_global_nano(ag_budget_t *b)
{
    return atomic_load_explicit(&b->global_limit, memory_order_relaxed);
}
