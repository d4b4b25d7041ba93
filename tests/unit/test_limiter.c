/* SPDX-License-Identifier: MIT
 *
 * test_limiter.c: GCRA semantics on an injected clock, exactness under
 * concurrent bursts, and the memory bound under an address spray.
 */
#include "util/platform.h"

#include <pthread.h>
#include <stdatomic.h>

#include "harness.h"
#include "limit/limiter.h"
#include "util/errors.h"

#define S_US INT64_C(1000000)
/* An arbitrary epoch, far from 0, so that nothing depends on now being small. */
#define T0 (INT64_C(1767225600) * S_US)

static ag_limiter_t *make(uint32_t limit, uint32_t period_s, size_t max_entries)
{
    ag_limiter_config_t cfg = {.limit = limit, .period_s = period_s, .max_entries = max_entries};
    ag_limiter_t *l = NULL;
    int rc = ag_limiter_new(&cfg, &l);
    if (rc != 0) {
        fprintf(stderr, "ag_limiter_new: %s\n", ag_strerror(rc));
        abort();
    }
    return l;
}

static ag_limit_result_t check(ag_limiter_t *l, const char *key, int64_t now)
{
    ag_limit_result_t r;
    memset(&r, 0xA5, sizeof(r)); /* every field must be written */
    ag_limiter_check(l, key, strlen(key), now, &r);
    return r;
}

TEST(siphash128_reference_vectors)
{
    /* veorq/SipHash vectors_sip128: key 00..0f, message 00..(n-1). */
    static const struct {
        size_t len;
        uint8_t out[16];
    } v[] = {
        {0,
         {0xa3, 0x81, 0x7f, 0x04, 0xba, 0x25, 0xa8, 0xe6, 0x6d, 0xf6, 0x72, 0x14, 0xc7, 0x55, 0x02,
          0x93}},
        {1,
         {0xda, 0x87, 0xc1, 0xd8, 0x6b, 0x99, 0xaf, 0x44, 0x34, 0x76, 0x59, 0x11, 0x9b, 0x22, 0xfc,
          0x45}},
        {2,
         {0x81, 0x77, 0x22, 0x8d, 0xa4, 0xa4, 0x5d, 0xc7, 0xfc, 0xa3, 0x8b, 0xde, 0xf6, 0x0a, 0xff,
          0xe4}},
        {3,
         {0x9c, 0x70, 0xb6, 0x0c, 0x52, 0x67, 0xa9, 0x4e, 0x5f, 0x33, 0xb6, 0xb0, 0x29, 0x85, 0xed,
          0x51}},
        {4,
         {0xf8, 0x81, 0x64, 0xc1, 0x2d, 0x9c, 0x8f, 0xaf, 0x7d, 0x0f, 0x6e, 0x7c, 0x7b, 0xcd, 0x55,
          0x79}},
        {15,
         {0x54, 0x93, 0xe9, 0x99, 0x33, 0xb0, 0xa8, 0x11, 0x7e, 0x08, 0xec, 0x0f, 0x97, 0xcf, 0xc3,
          0xd9}},
    };
    uint8_t key[16], msg[16], out[16];
    for (int i = 0; i < 16; i++)
        key[i] = msg[i] = (uint8_t)i;
    for (size_t i = 0; i < AG_ARRAY_LEN(v); i++) {
        ag__limiter_siphash128(key, msg, v[i].len, out);
        ASSERT_MSG_(memcmp(out, v[i].out, 16) == 0, "vector of length %zu", v[i].len);
    }
}

TEST(config_is_validated)
{
    ag_limiter_t *l = (ag_limiter_t *)1;
    ag_limiter_config_t cfg = {.limit = 0, .period_s = 60};
    ASSERT_EQ(ag_limiter_new(&cfg, &l), AG_EINVALID);
    ASSERT(l == NULL);
    cfg = (ag_limiter_config_t){.limit = 20, .period_s = 0};
    ASSERT_EQ(ag_limiter_new(&cfg, &l), AG_EINVALID);
    cfg = (ag_limiter_config_t){.limit = 1000001, .period_s = 1}; /* T < 1 us */
    ASSERT_EQ(ag_limiter_new(&cfg, &l), AG_EINVALID);
    cfg = (ag_limiter_config_t){.limit = 1000000, .period_s = 1, .max_entries = 1};
    ASSERT_EQ(ag_limiter_new(&cfg, &l), 0);
    ASSERT_EQ(ag_limiter_capacity(l), 1);
    ASSERT(check(l, "a", T0).allowed);
    ag_limiter_free(l);
    ag_limiter_free(NULL);
}

TEST(burst_of_exactly_limit_passes)
{
    ag_limiter_t *l = make(20, 60, 0);
    for (uint32_t i = 0; i < 20; i++) {
        ag_limit_result_t r = check(l, "10.0.0.1", T0);
        ASSERT(r.allowed);
        ASSERT_EQ(r.limit, 20);
        ASSERT_EQ(r.remaining, 19 - i);
        ASSERT_EQ(r.reset_s, 3 * (i + 1)); /* each request adds T = 3 s of debt */
        ASSERT_EQ(r.retry_after_s, 0);
    }
    ag_limit_result_t r = check(l, "10.0.0.1", T0);
    ASSERT(!r.allowed);
    ASSERT_EQ(r.limit, 20);
    ASSERT_EQ(r.remaining, 0);
    ASSERT_EQ(r.reset_s, 60);
    ASSERT_EQ(r.retry_after_s, 3);
    ag_limiter_free(l);
}

TEST(next_request_passes_exactly_after_t)
{
    ag_limiter_t *l = make(20, 60, 0);
    const int64_t T = 3 * S_US;
    for (int i = 0; i < 20; i++)
        ASSERT(check(l, "k", T0).allowed);
    /* One every T from then on, to the microsecond; denied ones do not count. */
    for (int64_t n = 1; n <= 50; n++) {
        ag_limit_result_t r = check(l, "k", T0 + n * T - 1);
        ASSERT(!r.allowed);
        ASSERT_EQ(r.retry_after_s, 1); /* 1 us, rounded up */
        r = check(l, "k", T0 + n * T);
        ASSERT(r.allowed);
        ASSERT_EQ(r.remaining, 0);
        ASSERT(!check(l, "k", T0 + n * T).allowed);
    }
    ag_limiter_free(l);

    /* T that is not whole: 7 per 10 s gives T = ceil(10e6 / 7) us = 1428572 us. */
    l = make(7, 10, 0);
    for (int i = 0; i < 7; i++)
        ASSERT(check(l, "k", T0).allowed);
    ag_limit_result_t r = check(l, "k", T0);
    ASSERT(!r.allowed);
    ASSERT_EQ(r.retry_after_s, 2);
    ASSERT(!check(l, "k", T0 + 1428571).allowed);
    ASSERT(check(l, "k", T0 + 1428572).allowed);
    ag_limiter_free(l);
}

TEST(retry_after_is_the_wait_rounded_up)
{
    ag_limiter_t *l = make(20, 60, 0);
    for (int i = 0; i < 20; i++)
        ASSERT(check(l, "k", T0).allowed);
    static const struct {
        int64_t at_us; /* after T0 */
        uint32_t retry;
    } cases[] = {
        {0, 3}, {1, 3}, {S_US / 2, 3}, {S_US, 2}, {S_US + 1, 2}, {2 * S_US, 1}, {3 * S_US - 1, 1},
    };
    for (size_t i = 0; i < AG_ARRAY_LEN(cases); i++) {
        ag_limit_result_t r = check(l, "k", T0 + cases[i].at_us);
        ASSERT(!r.allowed);
        ASSERT_MSG_(r.retry_after_s == cases[i].retry, "at +%" PRId64 " us: retry %u, want %u",
                    cases[i].at_us, r.retry_after_s, cases[i].retry);
        ASSERT(r.retry_after_s >= 1);
    }
    ag_limiter_free(l);

    /* limit 1: the wait is the whole period. */
    l = make(1, 60, 0);
    ASSERT(check(l, "k", T0).allowed);
    ag_limit_result_t r = check(l, "k", T0 + 1);
    ASSERT(!r.allowed);
    ASSERT_EQ(r.retry_after_s, 60);
    ASSERT_EQ(r.reset_s, 60);
    ag_limiter_free(l);
}

TEST(remaining_and_reset_follow_the_debt)
{
    ag_limiter_t *l = make(20, 60, 0);
    ag_limit_result_t r;
    for (int i = 0; i < 10; i++)
        r = check(l, "k", T0);
    ASSERT_EQ(r.remaining, 10);
    ASSERT_EQ(r.reset_s, 30);
    /* 15 s later, 5 T have been paid back: the debt is 15 s, plus 3 s for this one. */
    r = check(l, "k", T0 + 15 * S_US);
    ASSERT(r.allowed);
    ASSERT_EQ(r.remaining, 14);
    ASSERT_EQ(r.reset_s, 18);
    /* 1.5 s later the debt is 16.5 s, 19.5 s with this request: the 40.5 s
     * left hold 13 whole requests, and a part-paid one does not count. */
    r = check(l, "k", T0 + 16 * S_US + S_US / 2);
    ASSERT_EQ(r.remaining, 13);
    ASSERT_EQ(r.reset_s, 20); /* 19.5 s, rounded up */
    /* Long after, the key is as new. */
    r = check(l, "k", T0 + 3600 * S_US);
    ASSERT_EQ(r.remaining, 19);
    ASSERT_EQ(r.reset_s, 3);
    ag_limiter_free(l);
}

TEST(keys_are_independent)
{
    ag_limiter_t *l = make(3, 60, 0);
    for (int i = 0; i < 3; i++)
        ASSERT(check(l, "192.0.2.1", T0).allowed);
    ASSERT(!check(l, "192.0.2.1", T0).allowed);
    ASSERT_EQ(check(l, "192.0.2.10", T0).remaining, 2);
    ASSERT_EQ(check(l, "gen:192.0.2.1", T0).remaining, 2);
    /* Same text, different length (binary keys): distinct keys. */
    ag_limit_result_t r;
    ag_limiter_check(l, "192.0.2.1\0", 10, T0, &r);
    ASSERT(r.allowed && r.remaining == 2);
    ag_limiter_check(l, "", 0, T0, &r);
    ASSERT(r.allowed && r.remaining == 2);
    /* A key longer than anything a slot could hold. */
    char big[4096];
    memset(big, 'x', sizeof(big));
    for (int i = 0; i < 3; i++) {
        ag_limiter_check(l, big, sizeof(big), T0, &r);
        ASSERT(r.allowed);
    }
    ag_limiter_check(l, big, sizeof(big), T0, &r);
    ASSERT(!r.allowed);
    big[4095] = 'y';
    ag_limiter_check(l, big, sizeof(big), T0, &r);
    ASSERT(r.allowed);
    ag_limiter_free(l);
}

/* ---- concurrency ---- */

#define THREADS 8
#define TRIES_PER_THREAD 10
#define CONCURRENT_KEYS 2000

typedef struct {
    ag_limiter_t *l;
    pthread_barrier_t *start;
    atomic_int *allowed; /* per key */
    int64_t now;
} burst_arg_t;

static void *burst_thread(void *p)
{
    burst_arg_t *a = p;
    for (int k = 0; k < CONCURRENT_KEYS; k++) {
        char key[32];
        snprintf(key, sizeof(key), "203.0.113.%d", k);
        /* All threads start on each key together, so that they really do
         * contend for it rather than drift apart over the run. */
        pthread_barrier_wait(a->start);
        for (int i = 0; i < TRIES_PER_THREAD; i++) {
            ag_limit_result_t r;
            ag_limiter_check(a->l, key, strlen(key), a->now, &r);
            if (r.allowed)
                atomic_fetch_add(&a->allowed[k], 1);
        }
    }
    return NULL;
}

TEST(concurrent_burst_lets_exactly_limit_through)
{
    /* 8 threads x 10 tries = 80 attempts per key at one instant; each key must
     * let exactly 20 through, never more (the seed's read-then-write lets all
     * of them through). */
    ag_limiter_t *l = make(20, 60, 0);
    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, THREADS);
    static atomic_int allowed[CONCURRENT_KEYS];
    for (int k = 0; k < CONCURRENT_KEYS; k++)
        atomic_init(&allowed[k], 0);
    burst_arg_t arg = {.l = l, .start = &start, .allowed = allowed, .now = T0};
    pthread_t th[THREADS];
    for (int t = 0; t < THREADS; t++)
        ASSERT_EQ(pthread_create(&th[t], NULL, burst_thread, &arg), 0);
    for (int t = 0; t < THREADS; t++)
        pthread_join(th[t], NULL);
    pthread_barrier_destroy(&start);
    int bad = 0;
    for (int k = 0; k < CONCURRENT_KEYS; k++) {
        if (atomic_load(&allowed[k]) != 20) {
            fprintf(stderr, "  key %d: %d allowed\n", k, atomic_load(&allowed[k]));
            bad++;
        }
    }
    ASSERT_EQ(bad, 0);
    ag_limiter_free(l);
}

/* ---- memory bound ---- */

TEST(spray_of_a_million_addresses_stays_bounded)
{
    ag_limiter_t *l = make(20, 60, 65536);
    size_t mem = ag_limiter_memory_bytes(l);
    ASSERT(ag_limiter_capacity(l) <= 65536);
    ASSERT(ag_limiter_capacity(l) >= 65536 - 256);
    /* A client that used its whole burst, and one that used a quarter. */
    for (int i = 0; i < 20; i++)
        ASSERT(check(l, "victim-full", T0).allowed);
    for (int i = 0; i < 5; i++)
        ASSERT(check(l, "victim-quarter", T0).allowed);

    /* One request from each of a million addresses, at the same instant. */
    for (uint32_t i = 0; i < 1000000; i++) {
        ag_limit_result_t r;
        uint8_t key[8] = {'s',       'p', (uint8_t)(i >> 24), (uint8_t)(i >> 16), (uint8_t)(i >> 8),
                          (uint8_t)i};
        ag_limiter_check(l, key, 6, T0 + 1, &r);
        ASSERT(r.allowed); /* a new key always starts with a full quota */
    }
    ASSERT(ag_limiter_entries(l) <= ag_limiter_capacity(l));
    ASSERT(ag_limiter_active(l, T0 + 1) <= ag_limiter_capacity(l));
    ASSERT_EQ(ag_limiter_memory_bytes(l), mem);

    /* Both clients owe more than any sprayed key (3 s), so they were never the
     * oldest TAT of a full window: their state survived exactly. */
    ag_limit_result_t r = check(l, "victim-full", T0 + 2);
    ASSERT(!r.allowed);
    ASSERT_EQ(r.retry_after_s, 3);
    r = check(l, "victim-quarter", T0 + 2);
    ASSERT(r.allowed);
    ASSERT_EQ(r.remaining, 14);

    /* Once the spray's 3 s have passed, every sprayed entry is idle: only the
     * two clients are still active. */
    ASSERT_EQ(ag_limiter_active(l, T0 + 3 * S_US + 1), 2);
    ag_limiter_free(l);
}

TEST(idle_entries_are_reused)
{
    /* 64 slots, one shard, one probe window of 16. Each round brings 15 new
     * keys (fewer than the window, so no active entry can be evicted) after
     * the previous round's keys went idle: 15000 keys pass through 64 slots,
     * and every one of them is limited exactly. */
    ag_limiter_t *l = make(3, 1, 64);
    ASSERT_EQ(ag_limiter_capacity(l), 64);
    size_t mem = ag_limiter_memory_bytes(l);
    for (int round = 0; round < 1000; round++) {
        int64_t now = T0 + round * 2 * S_US; /* the last round's debt is paid */
        ASSERT_EQ(ag_limiter_active(l, now), 0);
        for (int k = 0; k < 15; k++) {
            char key[32];
            snprintf(key, sizeof(key), "r%d-k%d", round, k);
            for (int i = 0; i < 3; i++)
                ASSERT(check(l, key, now).allowed);
        }
        for (int k = 0; k < 15; k++) {
            char key[32];
            snprintf(key, sizeof(key), "r%d-k%d", round, k);
            ag_limit_result_t r = check(l, key, now);
            ASSERT_MSG_(!r.allowed, "round %d key %d was forgotten", round, k);
        }
        ASSERT_EQ(ag_limiter_active(l, now), 15);
        ASSERT(ag_limiter_entries(l) <= 64);
    }
    ASSERT_EQ(ag_limiter_memory_bytes(l), mem);
    ag_limiter_free(l);
}

TEST(eviction_takes_the_oldest_tat)
{
    /* A window full of active keys: a newcomer replaces the one closest to
     * being rested, not the heavily limited one. */
    ag_limiter_t *l = make(20, 60, 16); /* one shard, one window of 16 */
    ASSERT_EQ(ag_limiter_capacity(l), 16);
    for (int i = 0; i < 20; i++)
        ASSERT(check(l, "heavy", T0).allowed);
    for (int k = 0; k < 15; k++) {
        char key[16];
        snprintf(key, sizeof(key), "light%d", k);
        ASSERT(check(l, key, T0 + k).allowed); /* light0 has the oldest TAT */
    }
    ASSERT_EQ(ag_limiter_active(l, T0 + 100), 16);
    ASSERT(check(l, "newcomer", T0 + 100).allowed);
    ASSERT_EQ(ag_limiter_entries(l), 16);
    ASSERT(!check(l, "heavy", T0 + 100).allowed);
    /* light14 kept its one request of debt (a fresh key would have 19 left);
     * light0, the evicted one, is back with a full quota: the trade-off. */
    ASSERT_EQ(check(l, "light14", T0 + 100).remaining, 18);
    ASSERT_EQ(check(l, "light0", T0 + 100).remaining, 19);
    ag_limiter_free(l);
}

/* clang-format off */
AG_TESTS(
    AG_TEST_ENTRY(siphash128_reference_vectors)
    AG_TEST_ENTRY(config_is_validated)
    AG_TEST_ENTRY(burst_of_exactly_limit_passes)
    AG_TEST_ENTRY(next_request_passes_exactly_after_t)
    AG_TEST_ENTRY(retry_after_is_the_wait_rounded_up)
    AG_TEST_ENTRY(remaining_and_reset_follow_the_debt)
    AG_TEST_ENTRY(keys_are_independent)
    AG_TEST_ENTRY(concurrent_burst_lets_exactly_limit_through)
    AG_TEST_ENTRY(spray_of_a_million_addresses_stays_bounded)
    AG_TEST_ENTRY(idle_entries_are_reused)
    AG_TEST_ENTRY(eviction_takes_the_oldest_tat))
/* clang-format on */
