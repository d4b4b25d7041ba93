/* SPDX-License-Identifier: MIT
 *
 * pool.h: the per-request arena. Memory is bump-allocated from chunks and
 * released all at once by ag_pool_clear(); hooks release what is not memory
 * (curl handles, fds). Single-threaded: a pool belongs to one request.
 */
#ifndef AG_UTIL_POOL_H
#define AG_UTIL_POOL_H

#include <stddef.h>

#include "util/str.h"

typedef struct ag_pool_chunk ag_pool_chunk_t;
typedef struct ag_pool_hook ag_pool_hook_t;

/** First chunks of pools that were finished, kept for the next pool to take:
 *  one per thread (a worker), never shared between threads. */
#define AG_POOL_CACHE_SIZE 256
typedef struct ag_pool_cache {
    ag_pool_chunk_t *chunks[AG_POOL_CACHE_SIZE];
    unsigned n;
} ag_pool_cache_t;

typedef struct ag_pool {
    ag_pool_chunk_t *chunks; /* newest first; the last one is kept across clears */
    size_t offset;           /* bytes used in chunks->data */
    ag_pool_chunk_t *large;  /* blocks too big for a chunk, freed on clear */
    ag_pool_hook_t *hooks;   /* run LIFO on clear */
    size_t bytes;            /* total bytes handed out since the last clear */
    ag_pool_cache_t *cache;  /* where ag_pool_fini() parks the first chunk; may be NULL */
} ag_pool_t;

void ag_pool_init(ag_pool_t *pool);

/** Returns `size` bytes aligned to 16, owned by the pool until the next clear.
 *  Aborts on out-of-memory (a request cannot make progress without it). */
void *ag_pool_alloc(ag_pool_t *pool, size_t size);

/** Copies `len` bytes plus a NUL into the pool. */
char *ag_pool_strndup(ag_pool_t *pool, const char *s, size_t len);
ag_str_t ag_pool_strdup_str(ag_pool_t *pool, ag_str_t s);

/** printf into the pool; the result is NUL-terminated. */
char *ag_pool_printf(ag_pool_t *pool, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/** Registers fn(data) to run when the pool is cleared (LIFO). */
void ag_pool_on_clear(ag_pool_t *pool, void (*fn)(void *), void *data);

/** Runs the hooks, frees large blocks and every chunk but one, and resets. */
void ag_pool_clear(ag_pool_t *pool);

/** ag_pool_clear() and gives the last chunk back: to pool->cache when set, else
 *  to malloc. The pool can be used again afterwards. */
void ag_pool_fini(ag_pool_t *pool);

/** Frees the chunks a cache holds. */
void ag_pool_cache_fini(ag_pool_cache_t *cache);

#endif
