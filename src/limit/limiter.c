/* SPDX-License-Identifier: MIT
 *
 * limiter.c: GCRA rate limiter over a fixed, sharded, keyed-hash table
 * (see limiter.h for the semantics, the memory bound and the eviction policy).
 */
#include "util/platform.h"

#include "limit/limiter.h"

#include <errno.h>
#include <pthread.h>
#include <stdalign.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>

#include "util/errors.h"

#define MAX_SHARDS 256
/* Below this many slots per shard, use fewer shards: tiny shards make windows
 * wrap onto themselves and waste the probe window. */
#define MIN_SLOTS_PER_SHARD 64
#define US_PER_S INT64_C(1000000)
/* A slot that never held a key: its TAT is as idle as a TAT can be. */
#define TAT_EMPTY INT64_MIN

typedef struct slot {
    uint64_t h0, h1;     /* 128-bit keyed hash of the key: the key's identity */
    uint64_t tat_biased; /* theoretical arrival time in us, minus INT64_MIN: an all-zero
                            slot is then empty, so the table is a fresh anonymous
                            mapping whose pages stay untouched (no RSS) until clients
                            arrive */
} slot_t;

static inline int64_t slot_tat(const slot_t *e)
{
    return (int64_t)(e->tat_biased + (uint64_t)INT64_MIN);
}

static inline void slot_set_tat(slot_t *e, int64_t tat)
{
    e->tat_biased = (uint64_t)tat - (uint64_t)INT64_MIN;
}

/* One lock per shard; each shard sits on its own cache lines so that threads
 * working on different shards do not bounce a shared line. */
typedef struct shard {
    alignas(64) pthread_mutex_t lock;
    slot_t *slots;
    size_t used; /* slots that ever received a key (they are reused in place, never emptied) */
} shard_t;

struct ag_limiter {
    uint32_t limit;
    int64_t interval_us;  /* T: emission interval, rounded up */
    int64_t tolerance_us; /* limit * T: how far ahead of now a TAT may run */
    uint8_t hash_key[16];
    size_t nshards; /* a power of two */
    size_t shard_slots;
    size_t window;
    shard_t *shards;
    slot_t *slots;      /* one mapping for all shards' slots */
    size_t slots_bytes; /* its length */
};

static inline uint64_t rotl64(uint64_t x, int b)
{
    return (x << b) | (x >> (64 - b));
}

static inline uint64_t load_le64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

static inline void store_le64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

#define SIP_ROUND(v0, v1, v2, v3)                                                                  \
    do {                                                                                           \
        v0 += v1;                                                                                  \
        v1 = rotl64(v1, 13);                                                                       \
        v1 ^= v0;                                                                                  \
        v0 = rotl64(v0, 32);                                                                       \
        v2 += v3;                                                                                  \
        v3 = rotl64(v3, 16);                                                                       \
        v3 ^= v2;                                                                                  \
        v0 += v3;                                                                                  \
        v3 = rotl64(v3, 21);                                                                       \
        v3 ^= v0;                                                                                  \
        v2 += v1;                                                                                  \
        v1 = rotl64(v1, 17);                                                                       \
        v1 ^= v2;                                                                                  \
        v2 = rotl64(v2, 32);                                                                       \
    } while (0)

/* SipHash-2-4, 128-bit output, written from the Aumasson-Bernstein paper. A
 * keyed PRF rather than a plain fast hash because the keys (client addresses)
 * are chosen by whoever we are limiting. */
void ag__limiter_siphash128(const uint8_t key[16], const void *data, size_t len, uint8_t out[16])
{
    const uint8_t *p = data;
    uint64_t k0 = load_le64(key), k1 = load_le64(key + 8);
    uint64_t v0 = k0 ^ UINT64_C(0x736f6d6570736575);
    uint64_t v1 = k1 ^ UINT64_C(0x646f72616e646f6d) ^ 0xee;
    uint64_t v2 = k0 ^ UINT64_C(0x6c7967656e657261);
    uint64_t v3 = k1 ^ UINT64_C(0x7465646279746573);
    size_t full = len & ~(size_t)7;
    for (size_t i = 0; i < full; i += 8) {
        uint64_t m = load_le64(p + i);
        v3 ^= m;
        SIP_ROUND(v0, v1, v2, v3);
        SIP_ROUND(v0, v1, v2, v3);
        v0 ^= m;
    }
    uint64_t last = (uint64_t)len << 56;
    for (size_t i = 0; i < (len & 7); i++)
        last |= (uint64_t)p[full + i] << (8 * i);
    v3 ^= last;
    SIP_ROUND(v0, v1, v2, v3);
    SIP_ROUND(v0, v1, v2, v3);
    v0 ^= last;
    v2 ^= 0xee;
    for (int i = 0; i < 4; i++)
        SIP_ROUND(v0, v1, v2, v3);
    store_le64(out, v0 ^ v1 ^ v2 ^ v3);
    v1 ^= 0xdd;
    for (int i = 0; i < 4; i++)
        SIP_ROUND(v0, v1, v2, v3);
    store_le64(out + 8, v0 ^ v1 ^ v2 ^ v3);
}

int ag_limiter_new(const ag_limiter_config_t *cfg, ag_limiter_t **out)
{
    *out = NULL;
    if (cfg->limit == 0 || cfg->period_s == 0)
        return AG_EINVALID;
    int64_t period_us = (int64_t)cfg->period_s * US_PER_S;
    if ((int64_t)cfg->limit > period_us)
        return AG_EINVALID; /* T would be below 1 us */
    size_t max_entries = cfg->max_entries ? cfg->max_entries : AG_LIMITER_DEFAULT_MAX_ENTRIES;

    ag_limiter_t *l = calloc(1, sizeof(*l));
    if (!l)
        return -ENOMEM;
    l->limit = cfg->limit;
    /* Rounding T up keeps the sustained rate at or below limit/period; the
     * tolerance is then limit*T so that the burst is still exactly `limit`. */
    l->interval_us = (period_us + cfg->limit - 1) / cfg->limit;
    l->tolerance_us = l->interval_us * (int64_t)cfg->limit;

    size_t nshards = MAX_SHARDS;
    while (nshards > 1 && max_entries / nshards < MIN_SLOTS_PER_SHARD)
        nshards /= 2;
    l->nshards = nshards;
    l->shard_slots = max_entries / nshards;
    l->window = l->shard_slots < AG_LIMITER_PROBE_WINDOW ? l->shard_slots : AG_LIMITER_PROBE_WINDOW;

    int rc;
    size_t nslots = l->nshards * l->shard_slots;
    if (nslots > SIZE_MAX / sizeof(slot_t)) {
        rc = AG_EINVALID;
        goto fail;
    }
    l->shards = aligned_alloc(alignof(shard_t), nshards * sizeof(shard_t));
    /* mmap, not calloc: once a freed table has raised glibc's mmap threshold,
     * calloc takes the next one from the heap and zeroes all of it (24 MiB by
     * default, touched at once): every reload that changes a limit then costs
     * that memory and hundreds of milliseconds. A mapping is zero and untouched. */
    l->slots_bytes = nslots * sizeof(slot_t);
    void *m =
        mmap(NULL, l->slots_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    l->slots = m == MAP_FAILED ? NULL : m;
    if (!l->shards || !l->slots) {
        rc = -ENOMEM;
        goto fail;
    }

    ssize_t got = getrandom(l->hash_key, sizeof(l->hash_key), 0);
    if (got != (ssize_t)sizeof(l->hash_key)) {
        rc = got < 0 ? -errno : -EIO;
        goto fail;
    }

    size_t inited;
    for (inited = 0; inited < nshards; inited++) {
        shard_t *s = &l->shards[inited];
        memset(s, 0, sizeof(*s));
        s->slots = l->slots + inited * l->shard_slots;
        rc = -pthread_mutex_init(&s->lock, NULL);
        if (rc < 0)
            break;
    }
    if (inited < nshards) {
        while (inited > 0)
            pthread_mutex_destroy(&l->shards[--inited].lock);
        goto fail;
    }
    *out = l;
    return 0;

fail:
    free(l->shards);
    if (l->slots)
        munmap(l->slots, l->slots_bytes);
    free(l);
    return rc;
}

void ag_limiter_free(ag_limiter_t *l)
{
    if (!l)
        return;
    for (size_t i = 0; i < l->nshards; i++)
        pthread_mutex_destroy(&l->shards[i].lock);
    free(l->shards);
    munmap(l->slots, l->slots_bytes);
    free(l);
}

static uint32_t ceil_seconds(int64_t us)
{
    if (us <= 0)
        return 0;
    int64_t s = (us + US_PER_S - 1) / US_PER_S;
    return s > UINT32_MAX ? UINT32_MAX : (uint32_t)s;
}

/* Finds the key's slot in its window, or the slot it should take: an idle one
 * if any, else the one with the oldest TAT. Called with the shard locked. */
static slot_t *find_slot(const ag_limiter_t *l, shard_t *s, size_t home, uint64_t h0, uint64_t h1,
                         int64_t now_us)
{
    slot_t *idle = NULL, *oldest = NULL;
    size_t i = home;
    for (size_t n = 0; n < l->window; n++) {
        slot_t *e = &s->slots[i];
        if (e->h0 == h0 && e->h1 == h1 && slot_tat(e) != TAT_EMPTY)
            return e;
        if (slot_tat(e) <= now_us) {
            if (!idle)
                idle = e;
        } else if (!oldest || slot_tat(e) < slot_tat(oldest)) {
            oldest = e;
        }
        if (++i == l->shard_slots)
            i = 0;
    }
    return idle ? idle : oldest;
}

void ag_limiter_check(ag_limiter_t *l, const void *key, size_t keylen, int64_t now_us,
                      ag_limit_result_t *out)
{
    uint8_t digest[16];
    ag__limiter_siphash128(l->hash_key, key, keylen, digest);
    uint64_t h0 = load_le64(digest), h1 = load_le64(digest + 8);
    /* Shard from the top bits, home slot from the low 32 bits (multiply-shift
     * maps them onto a size that need not be a power of two). */
    shard_t *s = &l->shards[(h0 >> 56) & (l->nshards - 1)];
    size_t home = (size_t)(((h0 & 0xffffffffu) * (uint64_t)l->shard_slots) >> 32);

    pthread_mutex_lock(&s->lock);
    slot_t *e = find_slot(l, s, home, h0, h1, now_us);
    bool same_key = e->h0 == h0 && e->h1 == h1 && slot_tat(e) != TAT_EMPTY;
    /* A different key's slot (idle or evicted) starts from a clean state. */
    int64_t tat = same_key && slot_tat(e) > now_us ? slot_tat(e) : now_us;
    int64_t new_tat = tat + l->interval_us;
    int64_t ahead = new_tat - now_us; /* debt after this request */
    bool allowed = ahead <= l->tolerance_us;
    if (allowed) {
        if (slot_tat(e) == TAT_EMPTY)
            s->used++;
        e->h0 = h0;
        e->h1 = h1;
        slot_set_tat(e, new_tat);
    }
    pthread_mutex_unlock(&s->lock);

    out->allowed = allowed;
    out->limit = l->limit;
    if (allowed) {
        out->remaining = (uint32_t)((l->tolerance_us - ahead) / l->interval_us);
        out->reset_s = ceil_seconds(ahead);
        out->retry_after_s = 0;
    } else {
        out->remaining = 0;
        out->reset_s = ceil_seconds(tat - now_us);
        uint32_t wait = ceil_seconds(ahead - l->tolerance_us);
        out->retry_after_s = wait ? wait : 1;
    }
}

size_t ag_limiter_entries(const ag_limiter_t *l)
{
    size_t n = 0;
    for (size_t i = 0; i < l->nshards; i++) {
        shard_t *s = &l->shards[i];
        pthread_mutex_lock(&s->lock);
        n += s->used;
        pthread_mutex_unlock(&s->lock);
    }
    return n;
}

size_t ag_limiter_active(const ag_limiter_t *l, int64_t now_us)
{
    size_t n = 0;
    for (size_t i = 0; i < l->nshards; i++) {
        shard_t *s = &l->shards[i];
        pthread_mutex_lock(&s->lock);
        for (size_t j = 0; j < l->shard_slots; j++)
            n += slot_tat(&s->slots[j]) > now_us;
        pthread_mutex_unlock(&s->lock);
    }
    return n;
}

size_t ag_limiter_capacity(const ag_limiter_t *l)
{
    return l->nshards * l->shard_slots;
}

size_t ag_limiter_memory_bytes(const ag_limiter_t *l)
{
    return sizeof(*l) + l->nshards * sizeof(shard_t) + l->nshards * l->shard_slots * sizeof(slot_t);
}
