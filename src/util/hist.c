/* SPDX-License-Identifier: MIT
 *
 * hist.c: bucket arithmetic of the log-linear histogram.
 */
#include "util/platform.h"

#include <string.h>

#include "util/hist.h"

#define SUB (1u << AG_HIST_SUB_BITS)

void ag_hist_init(ag_hist_t *h)
{
    memset(h, 0, sizeof(*h));
}

/* Values below 2*SUB map to themselves; above, the top SUB_BITS+1 bits pick the bucket. */
unsigned ag_hist_bucket(uint64_t v)
{
    if (v < 2 * SUB)
        return (unsigned)v;
    unsigned msb = 63u - (unsigned)__builtin_clzll(v);
    if (msb >= AG_HIST_MAX_BITS)
        return AG_HIST_BUCKETS - 1;
    unsigned shift = msb - AG_HIST_SUB_BITS;
    unsigned mant = (unsigned)(v >> shift) - SUB; /* 0..SUB-1 */
    return (shift + 1) * SUB + mant;
}

uint64_t ag_hist_bucket_low(unsigned b)
{
    if (b < 2 * SUB)
        return b;
    unsigned shift = b / SUB - 1;
    uint64_t mant = b % SUB + SUB;
    return mant << shift;
}

void ag_hist_add(ag_hist_t *h, uint64_t v)
{
    h->buckets[ag_hist_bucket(v)]++;
    h->count++;
    h->sum += v;
    if (v > h->max)
        h->max = v;
}

void ag_hist_merge(ag_hist_t *into, const ag_hist_t *from)
{
    for (unsigned i = 0; i < AG_HIST_BUCKETS; i++)
        into->buckets[i] += from->buckets[i];
    into->count += from->count;
    into->sum += from->sum;
    if (from->max > into->max)
        into->max = from->max;
}

uint64_t ag_hist_quantile(const ag_hist_t *h, double q)
{
    if (h->count == 0)
        return 0;
    if (q < 0)
        q = 0;
    if (q > 1)
        q = 1;
    /* The rank of the quantile, 1-based, as "nearest rank" defines it. */
    uint64_t rank = (uint64_t)(q * (double)h->count + 0.999999999);
    if (rank == 0)
        rank = 1;
    uint64_t seen = 0;
    for (unsigned b = 0; b < AG_HIST_BUCKETS; b++) {
        seen += h->buckets[b];
        if (seen < rank)
            continue;
        uint64_t lo = ag_hist_bucket_low(b);
        uint64_t hi = b + 1 < AG_HIST_BUCKETS ? ag_hist_bucket_low(b + 1) : lo + 1;
        uint64_t mid = hi - lo <= 1 ? lo : lo + (hi - lo) / 2;
        return mid > h->max ? h->max : mid;
    }
    return h->max;
}
