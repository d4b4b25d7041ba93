/* SPDX-License-Identifier: MIT
 *
 * pool.c: per-request bump arena (see pool.h). Chunks start at 4 KiB and
 * double up to 64 KiB; blocks over a quarter of a chunk go to their own malloc.
 */
#include "util/platform.h"

#include <stdarg.h>
#include <stdint.h>
#include <string.h>

#include "util/pool.h"

/* Cleared memory is poisoned in debug builds, so a request touched after it
 * was finished (see server.h) reads garbage, and under ASan faults at once. */
#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#define POISON(p, n) ASAN_POISON_MEMORY_REGION((p), (n))
#define UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION((p), (n))
#else
#define POISON(p, n) ((void)(p), (void)(n))
#define UNPOISON(p, n) ((void)(p), (void)(n))
#endif
#ifndef NDEBUG
#define SCRIBBLE(p, n) memset((p), 0xA5, (n))
#else
#define SCRIBBLE(p, n) ((void)(p), (void)(n))
#endif

#define POOL_ALIGN 16
#define POOL_FIRST_CHUNK 4096
#define POOL_MAX_CHUNK 65536

struct ag_pool_chunk {
    ag_pool_chunk_t *next;
    size_t size;
    _Alignas(16) unsigned char data[];
};

struct ag_pool_hook {
    ag_pool_hook_t *next;
    void (*fn)(void *);
    void *data;
};

static void *xmalloc(size_t n)
{
    void *p = malloc(n);
    AG_ASSERT(p != NULL);
    return p;
}

void ag_pool_init(ag_pool_t *pool)
{
    memset(pool, 0, sizeof(*pool));
}

static size_t align_up(size_t n)
{
    return (n + POOL_ALIGN - 1) & ~(size_t)(POOL_ALIGN - 1);
}

void *ag_pool_alloc(ag_pool_t *pool, size_t size)
{
    size = align_up(size ? size : 1);
    pool->bytes += size;
    if (pool->chunks && pool->offset + size <= pool->chunks->size) {
        void *p = pool->chunks->data + pool->offset;
        pool->offset += size;
        UNPOISON(p, size);
        return p;
    }
    size_t next_size = pool->chunks ? pool->chunks->size * 2 : POOL_FIRST_CHUNK;
    if (next_size > POOL_MAX_CHUNK)
        next_size = POOL_MAX_CHUNK;
    if (size > next_size / 4) {
        ag_pool_chunk_t *blk = xmalloc(sizeof(*blk) + size);
        blk->size = size;
        blk->next = pool->large;
        pool->large = blk;
        return blk->data;
    }
    ag_pool_chunk_t *c;
    if (!pool->chunks && pool->cache && pool->cache->n > 0)
        c = pool->cache->chunks[--pool->cache->n]; /* always POOL_FIRST_CHUNK bytes */
    else
        c = xmalloc(sizeof(*c) + next_size);
    UNPOISON(c, sizeof(*c));
    c->size = next_size;
    c->next = pool->chunks;
    pool->chunks = c;
    pool->offset = size;
    POISON(c->data + size, next_size - size);
    UNPOISON(c->data, size);
    return c->data;
}

char *ag_pool_strndup(ag_pool_t *pool, const char *s, size_t len)
{
    char *p = ag_pool_alloc(pool, len + 1);
    if (len)
        memcpy(p, s, len);
    p[len] = '\0';
    return p;
}

ag_str_t ag_pool_strdup_str(ag_pool_t *pool, ag_str_t s)
{
    return ag_str(ag_pool_strndup(pool, s.ptr, s.len), s.len);
}

char *ag_pool_printf(ag_pool_t *pool, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    AG_ASSERT(n >= 0);
    char *p = ag_pool_alloc(pool, (size_t)n + 1);
    va_start(ap, fmt);
    vsnprintf(p, (size_t)n + 1, fmt, ap);
    va_end(ap);
    return p;
}

void ag_pool_on_clear(ag_pool_t *pool, void (*fn)(void *), void *data)
{
    ag_pool_hook_t *h = ag_pool_alloc(pool, sizeof(*h));
    h->fn = fn;
    h->data = data;
    h->next = pool->hooks;
    pool->hooks = h;
}

void ag_pool_clear(ag_pool_t *pool)
{
    /* Hooks live in the pool, so run them all before releasing any chunk. */
    while (pool->hooks) {
        ag_pool_hook_t *h = pool->hooks;
        pool->hooks = h->next;
        h->fn(h->data);
    }
    while (pool->large) {
        ag_pool_chunk_t *b = pool->large;
        pool->large = b->next;
        free(b);
    }
    /* Keep the oldest (smallest) chunk: most requests fit in it. */
    while (pool->chunks && pool->chunks->next) {
        ag_pool_chunk_t *c = pool->chunks;
        pool->chunks = c->next;
        UNPOISON(c->data, c->size);
        free(c);
    }
    if (pool->chunks) {
        UNPOISON(pool->chunks->data, pool->chunks->size);
        SCRIBBLE(pool->chunks->data, pool->chunks->size);
        POISON(pool->chunks->data, pool->chunks->size);
    }
    pool->offset = 0;
    pool->bytes = 0;
}

void ag_pool_fini(ag_pool_t *pool)
{
    ag_pool_clear(pool);
    ag_pool_cache_t *cache = pool->cache;
    if (pool->chunks && pool->chunks->size == POOL_FIRST_CHUNK && cache &&
        cache->n < AG_POOL_CACHE_SIZE)
        cache->chunks[cache->n++] = pool->chunks;
    else if (pool->chunks) {
        UNPOISON(pool->chunks->data, pool->chunks->size);
        free(pool->chunks);
    }
    pool->chunks = NULL;
}

void ag_pool_cache_fini(ag_pool_cache_t *cache)
{
    while (cache->n) {
        ag_pool_chunk_t *c = cache->chunks[--cache->n];
        UNPOISON(c->data, c->size);
        free(c);
    }
}
