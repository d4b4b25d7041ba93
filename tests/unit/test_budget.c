/* SPDX-License-Identifier: MIT
 *
 * test_budget.c: budgets and per-key rates by reservation, on real LMDB files
 * and an injected clock: exact fits, settles that free budget, UTC day and
 * month windows and their resets, the global budget, rpm and tpm as GCRA with
 * refunds, 8 threads that together never pass a budget, and restarts (a clean
 * one, and a process killed with reservations outstanding).
 */
#include "util/platform.h"

#include <ftw.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"
#include "limit/budget.h"
#include "util/errors.h"

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static char *make_tmpdir(void)
{
    char tmpl[] = "/tmp/ag_test_budget_XXXXXX";
    char *d = mkdtemp(tmpl);
    return d ? strdup(d) : NULL;
}

static void rm_rf(char *dir)
{
    if (dir != NULL)
        nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    free(dir);
}

/* 2025-03-31T12:00:00Z: half a day before both a day and a month end. */
#define T0 INT64_C(1743422400000)
static _Atomic int64_t fake_now;
static int64_t fake_clock(void *ctx)
{
    (void)ctx;
    return atomic_load(&fake_now);
}

static ag_budget_t *open_at(const char *dir, double global)
{
    ag_budget_options_t o = {.global_daily_usd = global, .now_ms = fake_clock};
    ag_budget_t *b = NULL;
    int rc = ag_budget_open(dir, &o, &b);
    if (rc < 0)
        fprintf(stderr, "  open %s: %s\n", dir, ag_strerror(rc));
    return b;
}

static bool close_to(double a, double b)
{
    return a - b < 1e-9 && b - a < 1e-9;
}

TEST(reset_times)
{
    ASSERT_EQ(ag__budget_day_reset_s(T0), 12 * 3600);
    ASSERT_EQ(ag__budget_month_reset_s(T0), 12 * 3600);
    /* 2025-12-15T00:00:00Z: the month resets on 2026-01-01. */
    int64_t dec15 = INT64_C(1765756800000);
    ASSERT_EQ(ag__budget_month_reset_s(dec15), 17 * 86400);
    ASSERT_EQ(ag__budget_day_reset_s(dec15), 86400);
    ASSERT_EQ(ag__budget_day_reset_s(dec15 + 86400000 - 1), 1);
}

TEST(daily_budget_fits_exactly_and_settles)
{
    char *dir = make_tmpdir();
    atomic_store(&fake_now, T0);
    ag_budget_t *b = open_at(dir, 0);
    ASSERT(b != NULL);
    ag_budget_limits_t lim = {.daily_usd = 1.0};
    ag_budget_resv_t r[12];
    ag_budget_result_t res;
    for (int i = 0; i < 10; i++) {
        ASSERT_EQ(ag_budget_reserve(b, "k", &lim, 0.1, 0, &r[i], &res), 0);
        ASSERT(res.allowed);
        ASSERT(r[i].active);
    }
    ASSERT_EQ(ag_budget_reserve(b, "k", &lim, 0.1, 0, &r[10], &res), 0);
    ASSERT(!res.allowed);
    ASSERT(!r[10].active);
    ASSERT_EQ(res.reason, AG_BUDGET_DAILY);
    ASSERT_EQ(res.retry_after_s, 12 * 3600);
    /* Settling below the worst case frees the difference, exactly. */
    ag_budget_settle(b, &r[0], 0.05, 0);
    ag_budget_settle(b, &r[0], 0.05, 0); /* a second settle is ignored */
    ASSERT_EQ(ag_budget_reserve(b, "k", &lim, 0.1, 0, &r[10], &res), 0);
    ASSERT(!res.allowed);
    ag_budget_settle(b, &r[1], 0.05, 0);
    ASSERT_EQ(ag_budget_reserve(b, "k", &lim, 0.1, 0, &r[10], &res), 0);
    ASSERT(res.allowed);
    ag_budget_usage_t u;
    ASSERT_EQ(ag_budget_usage(b, "k", &u), 0);
    ASSERT(close_to(u.day_spent_usd, 0.1));
    ASSERT(close_to(u.day_reserved_usd, 0.9));
    /* Another key has its own budget. */
    ASSERT_EQ(ag_budget_reserve(b, "other", &lim, 0.1, 0, &r[11], &res), 0);
    ASSERT(res.allowed);
    ag_budget_settle(b, &r[11], 0, 0);
    /* The next UTC day starts from zero; reservations of the old day still settle. */
    atomic_store(&fake_now, T0 + 12 * 3600 * 1000);
    ASSERT_EQ(ag_budget_usage(b, "k", &u), 0);
    ASSERT(close_to(u.day_spent_usd, 0) && close_to(u.day_reserved_usd, 0));
    for (int i = 2; i <= 10; i++)
        ag_budget_settle(b, &r[i], 0.1, 0);
    ASSERT_EQ(ag_budget_usage(b, "k", &u), 0);
    ASSERT(close_to(u.day_spent_usd, 0));
    ag_budget_close(b);
    rm_rf(dir);
}

TEST(monthly_and_global_budgets)
{
    char *dir = make_tmpdir();
    atomic_store(&fake_now, T0 - 10 * 86400000LL); /* 2025-03-21 */
    ag_budget_t *b = open_at(dir, 0.5);
    ASSERT(b != NULL);
    ag_budget_limits_t lim = {.daily_usd = 10, .monthly_usd = 0.3};
    ag_budget_resv_t r;
    ag_budget_result_t res;
    for (int d = 0; d < 3; d++) {
        atomic_store(&fake_now, T0 - (10 - d) * 86400000LL);
        ASSERT_EQ(ag_budget_reserve(b, "m", &lim, 0.1, 0, &r, &res), 0);
        ASSERT(res.allowed);
        ag_budget_settle(b, &r, 0.1, 0);
    }
    ASSERT_EQ(ag_budget_reserve(b, "m", &lim, 0.01, 0, &r, &res), 0);
    ASSERT(!res.allowed);
    ASSERT_EQ(res.reason, AG_BUDGET_MONTHLY);
    ASSERT_EQ(res.retry_after_s, ag__budget_month_reset_s(atomic_load(&fake_now)));
    /* The global budget counts every key and keyless requests: $0.4 left today. */
    ASSERT_EQ(ag_budget_reserve(b, NULL, NULL, 0.35, 0, &r, &res), 0);
    ASSERT(res.allowed);
    ag_budget_resv_t r2;
    ASSERT_EQ(ag_budget_reserve(b, "free", NULL, 0.1, 0, &r2, &res), 0);
    ASSERT(!res.allowed);
    ASSERT_EQ(res.reason, AG_BUDGET_GLOBAL);
    ASSERT_EQ(res.retry_after_s, ag__budget_day_reset_s(atomic_load(&fake_now)));
    ag_budget_settle(b, &r, 0.25, 0);
    ASSERT_EQ(ag_budget_reserve(b, "free", NULL, 0.1, 0, &r2, &res), 0);
    ASSERT(res.allowed);
    ag_budget_settle(b, &r2, 0.1, 0);
    ag_budget_usage_t u;
    ASSERT_EQ(ag_budget_usage(b, NULL, &u), 0);
    ASSERT(close_to(u.day_spent_usd, 0.45));
    /* Lifting the global budget lets it through; without limits nothing is held. */
    ag_budget_set_global(b, 0);
    ASSERT_EQ(ag_budget_reserve(b, "free", NULL, 5, 0, &r2, &res), 0);
    ASSERT(res.allowed);
    ASSERT(!r2.active);
    ag_budget_close(b);
    rm_rf(dir);
}

TEST(rpm_and_tpm)
{
    char *dir = make_tmpdir();
    atomic_store(&fake_now, T0);
    ag_budget_t *b = open_at(dir, 0);
    ASSERT(b != NULL);
    ag_budget_limits_t lim = {.rpm = 3};
    ag_budget_resv_t r;
    ag_budget_result_t res;
    for (int i = 0; i < 3; i++) {
        ASSERT_EQ(ag_budget_reserve(b, "r", &lim, 0, 0, &r, &res), 0);
        ASSERT(res.allowed);
        ag_budget_settle(b, &r, 0, 0);
    }
    ASSERT_EQ(ag_budget_reserve(b, "r", &lim, 0, 0, &r, &res), 0);
    ASSERT(!res.allowed);
    ASSERT_EQ(res.reason, AG_BUDGET_RPM);
    ASSERT_EQ(res.retry_after_s, 20);
    atomic_store(&fake_now, T0 + 19999);
    ASSERT_EQ(ag_budget_reserve(b, "r", &lim, 0, 0, &r, &res), 0);
    ASSERT(!res.allowed);
    ASSERT_EQ(res.retry_after_s, 1);
    atomic_store(&fake_now, T0 + 20000);
    ASSERT_EQ(ag_budget_reserve(b, "r", &lim, 0, 0, &r, &res), 0);
    ASSERT(res.allowed);
    ag_budget_settle(b, &r, 0, 0);

    /* tpm: the worst case is held while in flight, the unused part refunded. */
    ag_budget_limits_t tl = {.tpm = 1000};
    ag_budget_resv_t a, c;
    ASSERT_EQ(ag_budget_reserve(b, "t", &tl, 0, 600, &a, &res), 0);
    ASSERT(res.allowed);
    ASSERT_EQ(ag_budget_reserve(b, "t", &tl, 0, 600, &c, &res), 0);
    ASSERT(!res.allowed);
    ASSERT_EQ(res.reason, AG_BUDGET_TPM);
    ASSERT_EQ(res.retry_after_s, 12); /* 200 tokens at 1000 a minute */
    ag_budget_settle(b, &a, 0, 100);
    ASSERT_EQ(ag_budget_reserve(b, "t", &tl, 0, 600, &c, &res), 0);
    ASSERT(res.allowed);
    ASSERT_EQ(ag_budget_reserve(b, "t", &tl, 0, 301, &a, &res), 0);
    ASSERT(!res.allowed);
    ASSERT_EQ(ag_budget_reserve(b, "t", &tl, 0, 300, &a, &res), 0);
    ASSERT(res.allowed);
    ag_budget_settle(b, &a, 0, 300);
    ag_budget_settle(b, &c, 0, 600);
    /* More than a minute's worth can never pass. */
    atomic_store(&fake_now, T0 + 3600000);
    ASSERT_EQ(ag_budget_reserve(b, "t", &tl, 0, 1001, &a, &res), 0);
    ASSERT(!res.allowed);
    ASSERT_EQ(res.reason, AG_BUDGET_TPM);
    /* All or nothing: a refusal by the budget does not count against rpm. */
    ag_budget_limits_t both = {.rpm = 1, .daily_usd = 0.1};
    ASSERT_EQ(ag_budget_reserve(b, "both", &both, 0.2, 0, &a, &res), 0);
    ASSERT(!res.allowed);
    ASSERT_EQ(res.reason, AG_BUDGET_DAILY);
    ASSERT_EQ(ag_budget_reserve(b, "both", &both, 0.1, 0, &a, &res), 0);
    ASSERT(res.allowed);
    ag_budget_settle(b, &a, 0.1, 0);
    ag_budget_close(b);
    rm_rf(dir);
}

#define THREADS 8
#define ATTEMPTS 400

typedef struct race {
    ag_budget_t *b;
    const char *name; /* NULL: a key of the thread's own */
    ag_budget_limits_t lim;
    pthread_barrier_t *start;
    int ok;
    ag_budget_resv_t resv[ATTEMPTS];
} race_t;

static void *race_thread(void *p)
{
    race_t *a = p;
    char own[16];
    snprintf(own, sizeof(own), "t%p", p);
    pthread_barrier_wait(a->start);
    for (int i = 0; i < ATTEMPTS; i++) {
        ag_budget_result_t res;
        if (ag_budget_reserve(a->b, a->name ? a->name : own, &a->lim, 0.01, 10, &a->resv[a->ok],
                              &res) == 0 &&
            res.allowed)
            a->ok++;
    }
    return NULL;
}

static int race(ag_budget_t *b, const char *name, ag_budget_limits_t lim, race_t *args)
{
    pthread_t th[THREADS];
    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, THREADS);
    for (int i = 0; i < THREADS; i++) {
        args[i].b = b;
        args[i].name = name;
        args[i].lim = lim;
        args[i].start = &start;
        args[i].ok = 0;
        pthread_create(&th[i], NULL, race_thread, &args[i]);
    }
    int total = 0;
    for (int i = 0; i < THREADS; i++) {
        pthread_join(th[i], NULL);
        total += args[i].ok;
    }
    pthread_barrier_destroy(&start);
    return total;
}

/* 8 threads x 400 reservations of $0.01 against budgets that fit exactly 100:
 * a key's own (one key, all threads), and the global one (a key per thread). */
TEST(concurrent_reservations_never_overshoot)
{
    char *dir = make_tmpdir();
    atomic_store(&fake_now, T0);
    ag_budget_t *b = open_at(dir, 0);
    ASSERT(b != NULL);
    static race_t args[THREADS];
    int total = race(b, "shared", (ag_budget_limits_t){.daily_usd = 1.0}, args);
    ASSERT_EQ(total, 100);
    /* Settled at half, the other half of the budget comes back: 100 more. */
    for (int i = 0; i < THREADS; i++)
        for (int j = 0; j < args[i].ok; j++)
            ag_budget_settle(b, &args[i].resv[j], 0.005, 0);
    total = race(b, "shared", (ag_budget_limits_t){.daily_usd = 1.0}, args);
    ASSERT_EQ(total, 50);
    ag_budget_usage_t u;
    ASSERT_EQ(ag_budget_usage(b, "shared", &u), 0);
    ASSERT(close_to(u.day_spent_usd + u.day_reserved_usd, 1.0));
    for (int i = 0; i < THREADS; i++)
        for (int j = 0; j < args[i].ok; j++)
            ag_budget_settle(b, &args[i].resv[j], 0.01, 0);

    /* The global budget counts from when it is set: 200 fit. */
    ag_budget_set_global(b, 2.0);
    total = race(b, NULL, (ag_budget_limits_t){0}, args);
    ASSERT_EQ(total, 200);
    /* And a tpm that fits 100 worst cases of 10 tokens. */
    ag_budget_set_global(b, 0);
    total = race(b, "tok", (ag_budget_limits_t){.tpm = 1000}, args);
    ASSERT_EQ(total, 100);
    ag_budget_close(b);
    rm_rf(dir);
}

TEST(restart_keeps_spend_and_counts_crashed_reservations)
{
    char *dir = make_tmpdir();
    atomic_store(&fake_now, T0);
    ag_budget_t *b = open_at(dir, 5.0);
    ASSERT(b != NULL);
    ag_budget_limits_t lim = {.daily_usd = 1.0, .monthly_usd = 3.0};
    ag_budget_resv_t r;
    ag_budget_result_t res;
    ASSERT_EQ(ag_budget_reserve(b, "k", &lim, 0.2, 0, &r, &res), 0);
    ASSERT(res.allowed);
    ag_budget_settle(b, &r, 0.15, 0);
    ag_budget_close(b);

    /* A process that reserves twice, settles nothing, and is killed. */
    pid_t pid = fork();
    ASSERT(pid >= 0);
    if (pid == 0) {
        ag_budget_t *cb = open_at(dir, 5.0);
        ag_budget_resv_t cr[2];
        ag_budget_result_t cres;
        if (cb == NULL || ag_budget_reserve(cb, "k", &lim, 0.3, 0, &cr[0], &cres) != 0 ||
            !cres.allowed || ag_budget_reserve(cb, NULL, NULL, 0.25, 0, &cr[1], &cres) != 0 ||
            !cres.allowed)
            _exit(1);
        kill(getpid(), SIGKILL);
        _exit(2);
    }
    int st;
    ASSERT_EQ(waitpid(pid, &st, 0), pid);
    ASSERT(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);

    b = open_at(dir, 5.0);
    ASSERT(b != NULL);
    ag_budget_usage_t u;
    ASSERT_EQ(ag_budget_usage(b, "k", &u), 0);
    ASSERT(close_to(u.day_spent_usd, 0.45));
    ASSERT(close_to(u.month_spent_usd, 0.45));
    ASSERT(close_to(u.day_reserved_usd, 0));
    ASSERT_EQ(ag_budget_usage(b, NULL, &u), 0);
    ASSERT(close_to(u.day_spent_usd, 0.7));
    /* What is left today is exactly $0.55. */
    ASSERT_EQ(ag_budget_reserve(b, "k", &lim, 0.56, 0, &r, &res), 0);
    ASSERT(!res.allowed);
    ASSERT_EQ(ag_budget_reserve(b, "k", &lim, 0.55, 0, &r, &res), 0);
    ASSERT(res.allowed);
    ag_budget_settle(b, &r, 0.55, 0);
    ag_budget_close(b);

    /* The recovered reservations were counted once, not at every open. */
    b = open_at(dir, 5.0);
    ASSERT(b != NULL);
    ASSERT_EQ(ag_budget_usage(b, "k", &u), 0);
    ASSERT(close_to(u.day_spent_usd, 1.0));
    ASSERT_EQ(ag_budget_usage(b, NULL, &u), 0);
    ASSERT(close_to(u.day_spent_usd, 1.25));
    /* A month later the day and month are fresh. */
    atomic_store(&fake_now, T0 + 31LL * 86400000);
    ASSERT_EQ(ag_budget_usage(b, "k", &u), 0);
    ASSERT(close_to(u.day_spent_usd, 0) && close_to(u.month_spent_usd, 0));
    ag_budget_close(b);
    rm_rf(dir);
}

TEST(bad_names)
{
    char *dir = make_tmpdir();
    ag_budget_t *b = open_at(dir, 0);
    ASSERT(b != NULL);
    ag_budget_resv_t r;
    ag_budget_result_t res;
    ag_budget_limits_t lim = {.rpm = 1};
    ASSERT_EQ(ag_budget_reserve(b, "", &lim, 0, 0, &r, &res), AG_EINVALID);
    ASSERT_EQ(ag_budget_reserve(b, "*", &lim, 0, 0, &r, &res), AG_EINVALID);
    ASSERT(!r.active);
    ag_budget_close(b);
    rm_rf(dir);
}

AG_TESTS(AG_TEST_ENTRY(reset_times) AG_TEST_ENTRY(daily_budget_fits_exactly_and_settles)
             AG_TEST_ENTRY(monthly_and_global_budgets) AG_TEST_ENTRY(rpm_and_tpm)
                 AG_TEST_ENTRY(concurrent_reservations_never_overshoot)
                     AG_TEST_ENTRY(restart_keeps_spend_and_counts_crashed_reservations)
                         AG_TEST_ENTRY(bad_names))
