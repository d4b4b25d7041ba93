/* SPDX-License-Identifier: MIT
 *
 * limiter.h: the in-process rate limiter (GCRA, one timestamp per key) that
 * every event-loop thread shares. Fixed memory, sharded locks, keyed hashing.
 *
 * Semantics. `limit` requests per `period_s` seconds per key, enforced as the
 * Generic Cell Rate Algorithm with emission interval T = period/limit and a
 * burst of `limit`: a fresh (or fully rested) key may make exactly `limit`
 * requests at once and then one more every T. This is a smooth limit, not the
 * seed's fixed wall-clock window: there is no window edge at which a client
 * can make 2*limit requests in a moment, and a client that waits T gets one
 * request back instead of waiting for the next minute. T is kept in whole
 * microseconds, rounded up (20 per 60 s gives exactly 3 s; 7 per 10 s gives
 * 1428572 us), so the sustained rate is never above the configured one.
 *
 * State per key is its TAT (theoretical arrival time). An entry whose TAT is
 * not after `now` holds no information (the key has its full quota back), so
 * it counts as free and is reused in place: nothing needs a sweeper thread.
 *
 * Memory. The table is allocated once by ag_limiter_new() and never grows:
 * at most cfg->max_entries slots of 24 bytes, split into up to 256 shards,
 * each with its own mutex. A key lives in a probe window of
 * AG_LIMITER_PROBE_WINDOW slots inside its shard. Keys are never stored: each
 * is replaced by its 128-bit SipHash-2-4 under a per-process random key
 * (getrandom), so any key length costs the same, an attacker cannot aim keys
 * at one shard or window, and two keys share state only on a 128-bit
 * collision.
 *
 * Eviction, and what survives a spray of addresses. A new key takes a free
 * (idle) slot in its window if there is one. If all slots in the window are
 * active, the entry with the oldest TAT (the least remaining debt, i.e. the
 * key closest to having its full quota back anyway) is evicted. Trade-off:
 * if an attacker keeps a whole window full of *active* entries, the stalest
 * active entry is forgotten early and that client gets its quota back before
 * its time, at most its remaining debt (which is no more than that of any
 * other entry in the window). The guarantee:
 *   - a key's state is kept exactly while fewer than AG_LIMITER_PROBE_WINDOW
 *     active keys compete for its window (always true below that load);
 *   - beyond that, an entry is evicted only in favour of a new key while
 *     every other entry in its window has at least as much debt, so a client
 *     that has used more of its quota than the spraying keys is not forgotten.
 * The alternative (refusing new keys while the window is full) would let a
 * spray lock innocent clients out; we prefer to fail open on the stalest.
 */
#ifndef AG_LIMIT_LIMITER_H
#define AG_LIMIT_LIMITER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Slots searched for a key inside its shard; see the eviction note above. */
#define AG_LIMITER_PROBE_WINDOW 16
/* max_entries used when the config leaves it 0. */
#define AG_LIMITER_DEFAULT_MAX_ENTRIES ((size_t)1 << 20)

typedef struct ag_limiter ag_limiter_t;

typedef struct ag_limiter_config {
    uint32_t limit;     /* requests per period, >= 1 */
    uint32_t period_s;  /* seconds, >= 1 */
    size_t max_entries; /* memory bound in slots (24 bytes each); 0: the default */
} ag_limiter_config_t;

typedef struct ag_limit_result {
    bool allowed;
    uint32_t limit;         /* the configured limit (RateLimit-Limit) */
    uint32_t remaining;     /* requests still allowed right now (RateLimit-Remaining) */
    uint32_t reset_s;       /* seconds until the full quota is back, rounded up (RateLimit-Reset) */
    uint32_t retry_after_s; /* when denied: the exact wait, rounded up, >= 1; 0 when allowed */
} ag_limit_result_t;

/**
 * Creates a limiter and allocates its whole table.
 * @return 0 and sets *out; AG_EINVALID when limit or period_s is 0 or the limit is
 *         above one request per microsecond; -ENOMEM; -errno from getrandom.
 * @note The caller owns *out and releases it with ag_limiter_free().
 */
int ag_limiter_new(const ag_limiter_config_t *cfg, ag_limiter_t **out);

/** Frees the limiter. NULL is a no-op. No other thread may be using it. */
void ag_limiter_free(ag_limiter_t *l);

/**
 * Counts one request for `key` at time `now_us` and says whether it may pass.
 * The check and the update are one step under the key's shard lock, so
 * concurrent callers can never together pass more than the limit.
 * @param key     arbitrary bytes, borrowed for the call (e.g. the client IP text,
 *                optionally prefixed by a namespace to separate routes)
 * @param now_us  the caller's clock in microseconds; any monotonic or wall clock,
 *                as long as every caller of one limiter uses the same one
 * @param out     filled in on every call
 * @note Thread-safe: callable from any thread at the same time.
 *       A denied request is not counted (it does not extend the wait).
 */
void ag_limiter_check(ag_limiter_t *l, const void *key, size_t keylen, int64_t now_us,
                      ag_limit_result_t *out);

/** Slots that hold a key (active or idle, not yet reused). Never above the capacity.
 *  Takes every shard lock in turn: for tests and metrics, not the hot path. */
size_t ag_limiter_entries(const ag_limiter_t *l);

/** Slots whose key is still limited at `now_us` (TAT after now). Same cost as above. */
size_t ag_limiter_active(const ag_limiter_t *l, int64_t now_us);

/** Number of slots: the table's fixed capacity (<= max_entries). */
size_t ag_limiter_capacity(const ag_limiter_t *l);

/** Bytes the limiter holds; constant from ag_limiter_new() to ag_limiter_free(). */
size_t ag_limiter_memory_bytes(const ag_limiter_t *l);

/* internal, exposed for the unit tests: SipHash-2-4 with a 128-bit output. */
void ag__limiter_siphash128(const uint8_t key[16], const void *data, size_t len, uint8_t out[16]);

#endif
