/* SPDX-License-Identifier: MIT
 *
 * counters.h: single-writer counters. Each worker writes only its own; the
 * scraper reads everyone's. A relaxed load-add-store is a plain add on the
 * hardware (no lock prefix, no line bouncing) and still a well-defined read
 * for the other thread.
 */
#ifndef AG_OBS_COUNTERS_H
#define AG_OBS_COUNTERS_H

#include <stdatomic.h>
#include <stdint.h>

typedef _Atomic uint64_t ag_ctr_t;
typedef _Atomic int64_t ag_gauge_t;
typedef _Atomic double ag_fctr_t;

static inline void ag_ctr_add(ag_ctr_t *c, uint64_t n)
{
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + n,
                          memory_order_relaxed);
}

static inline uint64_t ag_ctr_get(ag_ctr_t *c)
{
    return atomic_load_explicit(c, memory_order_relaxed);
}

static inline void ag_gauge_add(ag_gauge_t *g, int64_t n)
{
    atomic_store_explicit(g, atomic_load_explicit(g, memory_order_relaxed) + n,
                          memory_order_relaxed);
}

static inline int64_t ag_gauge_get(ag_gauge_t *g)
{
    return atomic_load_explicit(g, memory_order_relaxed);
}

static inline void ag_fctr_add(ag_fctr_t *c, double n)
{
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + n,
                          memory_order_relaxed);
}

static inline double ag_fctr_get(ag_fctr_t *c)
{
    return atomic_load_explicit(c, memory_order_relaxed);
}

#endif
