/* SPDX-License-Identifier: MIT
 *
 * hist.h: a mergeable log-linear histogram of non-negative integers (say,
 * microseconds): exact below 64, then 32 buckets per power of two, so any
 * percentile it reports is within 1/32 (3.2%) of the true value. Two
 * histograms merge by adding their buckets, so per-worker, per-minute or
 * per-file histograms sum into one without keeping the values.
 */
#ifndef AG_UTIL_HIST_H
#define AG_UTIL_HIST_H

#include <stdint.h>

#define AG_HIST_SUB_BITS 5  /* 32 buckets per power of two */
#define AG_HIST_MAX_BITS 40 /* values up to 2^40 - 1 (12.7 days in µs); larger clamp */
#define AG_HIST_BUCKETS ((AG_HIST_MAX_BITS - AG_HIST_SUB_BITS + 1) << AG_HIST_SUB_BITS)
/** The relative error bound of a reported percentile. */
#define AG_HIST_REL_ERROR (1.0 / (1 << AG_HIST_SUB_BITS))

typedef struct ag_hist {
    uint64_t count;
    uint64_t sum;
    uint64_t max;
    uint64_t buckets[AG_HIST_BUCKETS];
} ag_hist_t;

void ag_hist_init(ag_hist_t *h);
void ag_hist_add(ag_hist_t *h, uint64_t value);
/** into += from. */
void ag_hist_merge(ag_hist_t *into, const ag_hist_t *from);
/** The value at quantile q (0..1): the midpoint of its bucket, never above the
 *  largest value added; 0 for an empty histogram. */
uint64_t ag_hist_quantile(const ag_hist_t *h, double q);

/** The bucket of a value and the smallest value of a bucket (for tests and serialisers). */
unsigned ag_hist_bucket(uint64_t value);
uint64_t ag_hist_bucket_low(unsigned bucket);

#endif
