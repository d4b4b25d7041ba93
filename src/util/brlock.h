/* SPDX-License-Identifier: MIT
 *
 * brlock.h: a big-reader lock. A reader takes the read lock of its thread's
 * own slot, so readers on different threads write no shared memory (no
 * cache line moves between cores per read); the rare writer takes every slot.
 */
#ifndef AG_UTIL_BRLOCK_H
#define AG_UTIL_BRLOCK_H

#include <pthread.h>

#define AG_BRLOCK_SLOTS 16

/* 128 bytes a slot: two slots' locks never share a 64-byte line, however the
 * array is aligned (a calloc'd struct is aligned to 16 only). */
typedef struct ag_brlock_slot {
    pthread_rwlock_t lock;
    char pad[128 - sizeof(pthread_rwlock_t)];
} ag_brlock_slot_t;

typedef struct ag_brlock {
    ag_brlock_slot_t slot[AG_BRLOCK_SLOTS];
} ag_brlock_t;

/** @return 0 or an errno value. */
int ag_brlock_init(ag_brlock_t *b);
void ag_brlock_destroy(ag_brlock_t *b);

/** The calling thread's slot, fixed for the thread's life (threads past
 *  AG_BRLOCK_SLOTS share slots, which stays correct). */
unsigned ag_brlock_slot(void);

/** Shared, on the calling thread's slot; recursive like a pthread read lock. */
void ag_brlock_rdlock(ag_brlock_t *b);
void ag_brlock_rdunlock(ag_brlock_t *b);

/** Exclusive: every slot, in order. */
void ag_brlock_wrlock(ag_brlock_t *b);
void ag_brlock_wrunlock(ag_brlock_t *b);

#endif
