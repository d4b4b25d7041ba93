/* SPDX-License-Identifier: MIT
 *
 * brlock.c: the big-reader lock of brlock.h.
 */
#include "util/platform.h"

#include <stdatomic.h>

#include "util/brlock.h"

_Static_assert(sizeof(pthread_rwlock_t) < 128, "ag_brlock_slot_t pads a lock to 128 bytes");

int ag_brlock_init(ag_brlock_t *b)
{
    for (unsigned i = 0; i < AG_BRLOCK_SLOTS; i++) {
        int rc = pthread_rwlock_init(&b->slot[i].lock, NULL);
        if (rc != 0) {
            while (i-- > 0)
                pthread_rwlock_destroy(&b->slot[i].lock);
            return rc;
        }
    }
    return 0;
}

void ag_brlock_destroy(ag_brlock_t *b)
{
    for (unsigned i = 0; i < AG_BRLOCK_SLOTS; i++)
        pthread_rwlock_destroy(&b->slot[i].lock);
}

unsigned ag_brlock_slot(void)
{
    static atomic_uint next; /* touched once per thread */
    static _Thread_local unsigned mine;
    static _Thread_local int assigned;
    if (!assigned) {
        mine = atomic_fetch_add_explicit(&next, 1, memory_order_relaxed) % AG_BRLOCK_SLOTS;
        assigned = 1;
    }
    return mine;
}

void ag_brlock_rdlock(ag_brlock_t *b)
{
    pthread_rwlock_rdlock(&b->slot[ag_brlock_slot()].lock);
}

void ag_brlock_rdunlock(ag_brlock_t *b)
{
    pthread_rwlock_unlock(&b->slot[ag_brlock_slot()].lock);
}

void ag_brlock_wrlock(ag_brlock_t *b)
{
    for (unsigned i = 0; i < AG_BRLOCK_SLOTS; i++)
        pthread_rwlock_wrlock(&b->slot[i].lock);
}

void ag_brlock_wrunlock(ag_brlock_t *b)
{
    for (unsigned i = AG_BRLOCK_SLOTS; i-- > 0;)
        pthread_rwlock_unlock(&b->slot[i].lock);
}
