/* SPDX-License-Identifier: MIT
 *
 * budget.h: client budgets and per-key limits, enforced by reservation so
 * that they never overshoot (platform.md section 6): per-key daily and monthly
 * USD (UTC windows), a global daily USD budget, and per-key requests and
 * tokens per minute.
 *
 * A request reserves its worst case before it goes upstream; every constraint
 * that applies must fit, or nothing is taken and the request is refused with
 * the wait until the window that refused it resets. Its end settles the
 * reservation with the real cost, which frees the difference. The check and
 * the taking are one step under the key's own lock (and then the global
 * budget's, always in that order), so concurrent requests can never together
 * pass a budget. Keys do not share a lock; the global budget is one lock
 * because it is one number, taken only when it is set.
 *
 * Durability. Spend per key and window, and each reservation while it is
 * outstanding, are written to LMDB in <data_dir>/budget before reserve()
 * returns and when settle() runs (no fsync: a killed process loses nothing,
 * a power cut may lose the last writes). Opening the store turns reservations
 * that a crash left outstanding into spend at their worst case, since what
 * they cost is unknown. Requests and tokens per minute live in memory only: a
 * restart gives a key its minute back.
 *
 * Requests and tokens per minute are the per-client limiter's GCRA
 * (limiter.h) per key: a burst of `rpm` requests (`tpm` tokens), then one
 * every minute/rpm; a token reservation is refunded on settle, so tpm counts
 * real tokens while keeping the in-flight worst case out of reach of a burst.
 *
 * Amounts are held in nano-USD (int64): a worst case is rounded up, a real
 * cost to the nearest, so exact budgets compare exactly.
 */
#ifndef AG_LIMIT_BUDGET_H
#define AG_LIMIT_BUDGET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/** The store's folder under data_dir. */
#define AG_BUDGET_DIR "budget"
/** Longest key name (store/keys.h: AG_KEYS_NAME_MAX). */
#define AG_BUDGET_NAME_MAX 64

typedef struct ag_budget ag_budget_t;
typedef struct ag_budget_entry ag_budget_entry_t;

typedef struct ag_budget_options {
    double global_daily_usd; /* 0: no global budget */
    /* The wall clock in epoch ms (UTC windows); NULL: the real one. */
    int64_t (*now_ms)(void *ctx);
    void *clock_ctx;
    /* Opened by a binary upgrade's new process while the old one still
     * serves: outstanding reservations are the old one's, not a crash's, and
     * are left for it to settle. */
    bool handover;
} ag_budget_options_t;

/** A key's limits (the gateway copies them from the key's record); 0: none. */
typedef struct ag_budget_limits {
    uint32_t rpm, tpm;
    double daily_usd, monthly_usd;
} ag_budget_limits_t;

/** What refused a request. */
typedef enum {
    AG_BUDGET_OK = 0,
    AG_BUDGET_RPM,
    AG_BUDGET_TPM,
    AG_BUDGET_DAILY,
    AG_BUDGET_MONTHLY,
    AG_BUDGET_GLOBAL,
} ag_budget_reason_t;

typedef struct ag_budget_result {
    bool allowed;
    ag_budget_reason_t reason; /* the constraint that refused, latest reset first */
    uint32_t retry_after_s;    /* refused: seconds until that window resets, >= 1 */
} ag_budget_result_t;

/** One outstanding reservation. The caller owns the storage (e.g. in the
 *  request's pool) and passes it to exactly one settle; it holds no pointer
 *  the caller must free. Zero-initialised it is inactive. */
typedef struct ag_budget_resv {
    bool active;
    bool global;              /* counted against the global budget too */
    bool track_key;           /* counted in the key's day and month */
    bool persisted;           /* has a record in the store */
    ag_budget_entry_t *entry; /* the key's state, or NULL (no key) */
    int64_t day, month;       /* windows it was taken in */
    int64_t usd_nano;         /* worst case reserved */
    uint64_t tokens;          /* worst-case tokens reserved (tpm) */
    uint64_t seq;             /* its record: name + seq */
    int64_t tpm_interval_ns;  /* to refund tokens */
} ag_budget_resv_t;

/**
 * Opens (creating) the store in <data_dir>/budget and recovers it: every
 * reservation left outstanding is counted as spend at its worst case and
 * removed; windows older than a month (days) or a year (months) are dropped.
 * @return 0 and *out, AG_BUDGET_ESTORE, -ENOMEM. Close with ag_budget_close().
 */
int ag_budget_open(const char *data_dir, const ag_budget_options_t *opts, ag_budget_t **out);

/** Closes the store. No reservation may be outstanding in another thread. NULL is a no-op. */
void ag_budget_close(ag_budget_t *b);

/** Sets the global daily budget (config reload); 0: none. Thread-safe. */
void ag_budget_set_global(ag_budget_t *b, double daily_usd);

/**
 * Reserves a request's worst case for key `name` (NULL: a request without a
 * key, which only the global budget applies to) under `lim` (NULL: none).
 * Counts one request against rpm. All or nothing: refused, nothing is taken.
 * @param worst_usd     the worst-case cost (ag_usage_worst_case_usd())
 * @param worst_tokens  upstream body bytes + max_tokens
 * @param resv          filled in and active when allowed; inactive otherwise
 * @return 0 with *res saying whether it was allowed; AG_BUDGET_ESTORE when the
 *         reservation could not be recorded (nothing taken: refuse the request,
 *         503); AG_EINVALID for a bad name.
 * @note Thread-safe; the lock taken is the key's (and the global budget's).
 */
int ag_budget_reserve(ag_budget_t *b, const char *name, const ag_budget_limits_t *lim,
                      double worst_usd, uint64_t worst_tokens, ag_budget_resv_t *resv,
                      ag_budget_result_t *res);

/**
 * Ends a reservation with what the request really used: the worst case is
 * released and real_usd / real_tokens counted instead. Call it exactly once
 * per allowed reservation, also when the request failed (what it used, often
 * 0), was cancelled, or streamed partially (the usage seen so far; when
 * nothing is known after the upstream call began, ag_budget_settle_worst()).
 * An inactive reservation is ignored, so a cleanup hook may call it again.
 */
void ag_budget_settle(ag_budget_t *b, ag_budget_resv_t *resv, double real_usd,
                      uint64_t real_tokens);

/** Settles at the worst case: for a request whose cost cannot be known. */
void ag_budget_settle_worst(ag_budget_t *b, ag_budget_resv_t *resv);

/** What a key has spent in the current windows (settled, plus reserved). For
 *  `aigate keys show`, tests and metrics; NULL name: the global day. */
typedef struct ag_budget_usage {
    double day_spent_usd, day_reserved_usd;
    double month_spent_usd, month_reserved_usd;
} ag_budget_usage_t;
int ag_budget_usage(ag_budget_t *b, const char *name, ag_budget_usage_t *out);

/** US dollars as the store's nano-USD: to the nearest (real costs, limits), or
 *  rounded up (worst cases), as every budget compares them. */
int64_t ag_budget_nano_near(double usd);
int64_t ag_budget_nano_up(double usd);

/** The global daily budget in nano-USD; 0: none. Any thread. */
int64_t ag_budget_global_nano(ag_budget_t *b);

/** Seconds from now_ms to the next UTC midnight / first of next month, >= 1. */
uint32_t ag__budget_day_reset_s(int64_t now_ms);
uint32_t ag__budget_month_reset_s(int64_t now_ms);

#endif
