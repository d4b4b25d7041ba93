/* SPDX-License-Identifier: MIT
 *
 * kv.h: the KV store (the Workers KV equivalent) behind one interface, one
 * store per [[kv_namespaces]] binding. The front end (kv.c) checks arguments
 * and limits, encodes cursors, names and lists namespaces and picks the
 * backend by name; the embedded backend is LMDB (kv_lmdb.c), the shared one
 * Redis (kv_redis.c), which every instance on that Redis sees alike.
 */
#ifndef AG_STORE_KV_H
#define AG_STORE_KV_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util/errors.h"

/* Workers KV limits, enforced by every backend with the errors below. */
#define AG_KV_MAX_KEY_LEN 512
#define AG_KV_MAX_VALUE_LEN (25u * 1024 * 1024)
#define AG_KV_MAX_METADATA_LEN 1024
#define AG_KV_LIST_MAX_LIMIT 1000
#define AG_KV_DEFAULT_MAP_SIZE ((size_t)1 << 30)
/* Where stores live when the config names no data folder. */
#ifndef AG_STORE_DEFAULT_DATA_DIR
#define AG_STORE_DEFAULT_DATA_DIR "./.aigate" /* also in objstore.h */
#endif

/* The errors of this module, AG_KV_E*, are declared in util/errors.def with
 * their messages and HTTP statuses: use ag_strerror() and ag_err_http_status(). */

typedef struct ag_kv ag_kv_t;

/** Options of the LMDB backend, read by it alone. */
typedef struct ag_kv_lmdb_options {
    /** Map size in bytes, the most the store can hold; 0 means
     *  AG_KV_DEFAULT_MAP_SIZE. When another process has the store open with a
     *  larger map, the larger size is adopted. */
    size_t map_size;
    /** Skip the fsync at each commit (MDB_NOSYNC): a process crash loses
     *  nothing, a machine crash may lose the last commits. For caches, whose
     *  entries can always be fetched again. Applies to the first open of the
     *  folder in this process. */
    bool no_sync;
    /** An evicting store (a cache) when > 0: the store keeps within max_bytes
     *  on disk (it is the map size; map_size is ignored). Past 7/8 of it, or
     *  when a put finds the store full, the entries that expire soonest (those
     *  without an expiry last) are deleted, down to 3/4. A put that still does
     *  not fit is dropped: it returns AG_KV_DROPPED, and a warning with the
     *  count of drops is logged at most once a minute. Applies to the first
     *  open of the folder in this process. */
    size_t max_bytes;
} ag_kv_lmdb_options_t;

/** ag_kv_put()'s answer when an evicting store dropped the entry (a success
 *  for a cache: the entry is a miss later; not an error, so callers that
 *  check for rc < 0 log nothing per put). */
#define AG_KV_DROPPED 1

/** The name of the embedded backend, the default. */
#define AG_KV_BACKEND_LMDB "lmdb"

/** The backend that keeps a namespace on Redis, shared by every instance. */
#define AG_KV_BACKEND_REDIS "redis"
/* On Redis, the entry KEY of binding B is the string AG_KV_REDIS_PREFIX "B:KEY"
 * (its value as is, so the response cache reads it with one GET), its metadata
 * AG_KV_REDIS_META_PREFIX "B:KEY" (only when it has some); both expire with
 * the entry, as Redis TTLs. */
#define AG_KV_REDIS_PREFIX "aigate:kv:"
#define AG_KV_REDIS_META_PREFIX "aigate:kvmeta:"

/** Options of the Redis backend, read by it alone (copied at the open). */
typedef struct ag_kv_redis_options {
    const char *url;      /* [aigate.redis] url (store/redis.h's forms) */
    const char *password; /* used when the URL has none; NULL: ag_kv_open_namespace()
                           * reads the secret REDIS_PASSWORD of its data_dir */
    uint32_t timeout_ms;  /* a connect, and each command; 0: 1000 */
    const char *binding;  /* the namespace; ag_kv_open_namespace() sets it */
} ag_kv_redis_options_t;

/** Options of an open; a zeroed struct (or NULL) means the defaults. */
typedef struct ag_kv_options {
    /** The backend by name: NULL means AG_KV_BACKEND_LMDB; AG_KV_BACKEND_REDIS.
     *  Any other name fails the open with AG_KV_EBACKEND. Borrowed for the open. */
    const char *backend;
    /** Wall clock in epoch milliseconds; NULL means CLOCK_REALTIME. Tests inject
     *  one to move time without sleeping. Called from any thread. */
    int64_t (*now_ms)(void *ctx);
    void *clock_ctx;
    /** Read only when the backend is LMDB. */
    ag_kv_lmdb_options_t lmdb;
    /** Read only when the backend is Redis. */
    ag_kv_redis_options_t redis;
} ag_kv_options_t;

/** A value read from the store. Every pointer is owned by the struct and
 *  released by ag_kv_value_free(). */
typedef struct ag_kv_value {
    char *data; /* value bytes, followed by a NUL that len does not count */
    size_t len;
    char *metadata; /* JSON text + NUL, or NULL when none or not asked for */
    size_t metadata_len;
    int64_t expiration_ms; /* epoch ms, 0 when the key never expires */
    int64_t expiration;    /* the same in epoch seconds (rounded up), as Workers KV reports */
} ag_kv_value_t;

typedef struct ag_kv_put_opts {
    /** Seconds from now until the key expires; 0 for none. Workers KV wants
     *  >= 60; we accept >= 1 (useful for caches and tests). */
    int64_t expiration_ttl;
    /** Absolute expiry in epoch seconds; 0 for none; must be in the future.
     *  Setting both this and expiration_ttl is refused (AG_KV_EEXPIRATION). */
    int64_t expiration;
    /** Metadata as JSON text (any JSON value, <= 1024 bytes); NULL for none.
     *  Borrowed for the call. */
    const char *metadata;
    size_t metadata_len;
} ag_kv_put_opts_t;

typedef struct ag_kv_list_key {
    char *name; /* key bytes + NUL (a key may itself contain NUL: use name_len) */
    size_t name_len;
    int64_t expiration_ms; /* 0 when none */
    int64_t expiration;    /* epoch seconds, rounded up; 0 when none */
    char *metadata;        /* JSON text + NUL, or NULL */
    size_t metadata_len;
} ag_kv_list_key_t;

/** A page of keys; everything is owned by the struct and released by
 *  ag_kv_list_result_free(). */
typedef struct ag_kv_list_result {
    ag_kv_list_key_t *keys; /* sorted by key bytes (memcmp, shorter first) */
    size_t count;
    bool list_complete; /* no live key with the prefix follows this page */
    char *cursor;       /* NUL-terminated, pass to the next call; NULL when complete */
} ag_kv_list_result_t;

typedef struct ag_kv_stat {
    uint64_t entries;    /* stored keys, including expired ones not yet swept */
    uint64_t map_size;   /* bytes the store may grow to */
    uint64_t used_bytes; /* high-water mark of the data file */
} ag_kv_stat_t;

/** Opens (creating if missing) the store kept at the folder `dir` with the
 *  backend opts->backend. `opts` may be NULL; it is read only during the call.
 *  @return 0 and *out; AG_KV_EBACKEND for an unknown backend; or what the
 *  backend's open returns (see ag_kv_open_lmdb()). */
int ag_kv_open(const char *dir, const ag_kv_options_t *opts, ag_kv_t **out);

/** Opens (creating if missing, with parents, mode 0700) the LMDB store in the
 *  folder `dir`, whatever opts->backend says. `opts` may be NULL; it is copied.
 *  Opening the same folder twice in one process shares one LMDB environment
 *  (LMDB forbids two), so that is safe (the map size of the first open holds);
 *  other processes may open it at the same time (the CLI while the server
 *  runs), as LMDB's lock file coordinates them. Do not use a handle in a child
 *  after fork(): the child opens its own.
 *  @return 0 and *out, or a negative errno / AG_KV_E* code. */
int ag_kv_open_lmdb(const char *dir, const ag_kv_options_t *opts, ag_kv_t **out);

/** Opens the namespace opts->redis.binding on the Redis of opts->redis.url,
 *  whatever opts->backend says; `dir` is not used. Connects at the first call,
 *  so an open never waits for Redis. Every call below blocks on its answer (up
 *  to the timeout) and must not run on an event loop's thread; Redis's TTLs
 *  expire entries (the clock option is not used), sweep deletes nothing, and a
 *  listing SCANs the database (time in proportion to its size: for commands
 *  and tasks, not for a request's path). Redis down: AG_REDIS_EDOWN or
 *  AG_REDIS_ETIMEDOUT, and the next call connects again.
 *  @return 0 and *out; AG_EINVALID without a url or binding; AG_REDIS_EURL. */
int ag_kv_open_redis(const char *dir, const ag_kv_options_t *opts, ag_kv_t **out);

/** Opens the store of a [[kv_namespaces]] binding, <data_dir>/kv/<binding>/,
 *  with ag_kv_open(). data_dir NULL means AG_STORE_DEFAULT_DATA_DIR. A binding
 *  is [A-Za-z0-9_-]{1,64}, else AG_KV_EBINDING. On Redis, the binding names
 *  the namespace and the password comes from the URL or the secret
 *  REDIS_PASSWORD. */
int ag_kv_open_namespace(const char *data_dir, const char *binding, const ag_kv_options_t *opts,
                         ag_kv_t **out);

/** Lists the namespace folders under <data_dir>/kv/ (those with a valid binding
 *  name), sorted. *names is an array of *count malloc'd strings, released by
 *  ag_kv_namespace_list_free(). A missing kv/ folder gives 0 names. */
int ag_kv_namespace_list(const char *data_dir, char ***names, size_t *count);
void ag_kv_namespace_list_free(char **names, size_t count);

/** Closes the handle; the environment closes with its last handle. NULL is a
 *  no-op. No other call on kv may be running or follow, and every asynchronous
 *  operation on it must have completed or been cancelled. */
void ag_kv_close(ag_kv_t *kv);

/* Every call below is thread-safe: the server may call them from several
 * event-loop threads on one handle. They block on disk I/O (a put waits for
 * fsync), so loop threads should use them for small values or hand them to a
 * worker. Keys and values are borrowed for the call. */

/** Reads `key`. @return 0 and fills *out (free with ag_kv_value_free());
 *  AG_ENOTFOUND when missing or expired; AG_KV_E* for an invalid key. */
int ag_kv_get(ag_kv_t *kv, const void *key, size_t keylen, ag_kv_value_t *out);

/** Same, and also fills out->metadata. */
int ag_kv_get_with_metadata(ag_kv_t *kv, const void *key, size_t keylen, ag_kv_value_t *out);

/** Releases what *v owns and zeroes it; safe on a zeroed or freed value. */
void ag_kv_value_free(ag_kv_value_t *v);

/** Writes `key` (replacing any value, metadata and expiry). opts may be NULL.
 *  @return 0; AG_KV_DROPPED from an evicting store that had no room even after
 *  evicting; AG_KV_E* for a limit or bad option; AG_KV_EMAP_FULL or
 *  AG_KV_EDISK_FULL when there is no room (the store stays readable and
 *  unchanged). Space that deletes free becomes reusable a couple of write
 *  transactions later, as LMDB keeps the previous snapshot intact. */
int ag_kv_put(ag_kv_t *kv, const void *key, size_t keylen, const void *val, size_t vallen,
              const ag_kv_put_opts_t *opts);

/** Deletes `key`. @return 0, also when it did not exist (as Workers KV). */
int ag_kv_delete(ag_kv_t *kv, const void *key, size_t keylen);

/** Lists live keys starting with `prefix` (NULL/0 for all), in byte order,
 *  after `cursor` (a previous result's cursor, or NULL to start), at most
 *  `limit` (0 means 1000; more than 1000 is AG_KV_ELIMIT) keys.
 *  @return 0 and fills *out (free with ag_kv_list_result_free()). */
int ag_kv_list(ag_kv_t *kv, const void *prefix, size_t prefixlen, const char *cursor,
               unsigned limit, ag_kv_list_result_t *out);

void ag_kv_list_result_free(ag_kv_list_result_t *r);

/** Deletes expired keys; the server calls it from a timer. With max_keys 0
 *  it sweeps the whole store; otherwise it examines at most max_keys entries
 *  per call, going on where the previous call stopped and wrapping around, so
 *  that one call never holds the write lock long.
 *  @return how many keys it deleted, or a negative error. */
int ag_kv_sweep(ag_kv_t *kv, size_t max_keys);

/** Sizes of the store, for /metrics and `aigate kv` commands. */
int ag_kv_stat(ag_kv_t *kv, ag_kv_stat_t *st);

/*
 * Asynchronous get and put, for backends that talk to a server (Redis) and
 * must not stall an event loop while they wait. The contract, libuv's:
 *
 *  - The call checks its arguments as the synchronous call does. When it
 *    fails (a bad key, a limit, a bad option, a NULL callback) it returns the
 *    negative code, sets *op to NULL and NEVER calls the callback.
 *  - When it returns 0, the callback is called exactly once, with the result,
 *    unless ag_kv_op_cancel() was called first.
 *  - A backend may complete inline: then the callback has run before the call
 *    returns, and *op is NULL. LMDB does so: it has no asynchronous ops, and
 *    the front end runs the synchronous call and then the callback, on the
 *    calling thread (so the call blocks like ag_kv_get()/ag_kv_put()).
 *  - Otherwise *op is a handle to the pending operation, valid until its
 *    callback starts or it is cancelled, and the callback runs later on the
 *    backend's event-loop thread (the one the caller used).
 *  - key, val and opts are borrowed only for the call: a backend that
 *    completes later copies what it needs.
 *  - op may be NULL when the caller will never cancel.
 */
typedef struct ag_kv_op ag_kv_op_t;

/** Completion of ag_kv_get_async(). rc is 0, AG_ENOTFOUND (missing or
 *  expired) or another negative code. On 0, `value` is the value (as
 *  ag_kv_get() fills it, without metadata); else it is NULL. The value stays
 *  the store's and is released when the callback returns; to keep it, take it
 *  over: copy the struct and zero *value (`mine = *value; *value =
 *  (ag_kv_value_t){0};`), then release `mine` with ag_kv_value_free(). */
typedef void (*ag_kv_get_cb)(void *ctx, int rc, ag_kv_value_t *value);

/** Completion of ag_kv_put_async(): rc as ag_kv_put() returns it. */
typedef void (*ag_kv_put_cb)(void *ctx, int rc);

/** ag_kv_get() with a callback; see the contract above.
 *  @return 0 (cb will run, or has run), or the synchronous failure of
 *  ag_kv_get() (AG_KV_E* for a bad key) or AG_EINVALID for a NULL cb. */
int ag_kv_get_async(ag_kv_t *kv, const void *key, size_t keylen, ag_kv_get_cb cb, void *ctx,
                    ag_kv_op_t **op);

/** ag_kv_put() with a callback; see the contract above. The checks of
 *  ag_kv_put() (key, value size, expiry, metadata) fail synchronously.
 *  @return 0 (cb will run, or has run), or that failure; AG_EINVALID for a
 *  NULL cb. */
int ag_kv_put_async(ag_kv_t *kv, const void *key, size_t keylen, const void *val, size_t vallen,
                    const ag_kv_put_opts_t *opts, ag_kv_put_cb cb, void *ctx, ag_kv_op_t **op);

/** Cancels a pending operation: its callback will not run, and op is invalid
 *  afterwards. A cancelled put may still have been written, or not. NULL (what
 *  an inline completion leaves in *op) is a no-op. Call it on the thread that
 *  started the operation, and never after its callback started. */
void ag_kv_op_cancel(ag_kv_op_t *op);

/* Backend interface. A backend embeds ag_kv_t first in its handle, fills it
 * with ag__kv_init() and an ops table. The public functions above check keys,
 * values, options and limits, decode cursors and encode them, before and after
 * they call it, so a backend sees only valid arguments and fills only what it
 * stores (expiration_ms; the front end derives expiration in seconds). */
typedef struct ag_kv_ops {
    const char *name;
    int (*get)(ag_kv_t *kv, const void *key, size_t keylen, bool with_metadata, ag_kv_value_t *out);
    /* expiration_ms is absolute (epoch ms) or 0; metadata may be NULL. */
    int (*put)(ag_kv_t *kv, const void *key, size_t keylen, const void *val, size_t vallen,
               int64_t expiration_ms, const char *metadata, size_t metadata_len);
    int (*del)(ag_kv_t *kv, const void *key, size_t keylen);
    /* after/afterlen: the decoded cursor (list keys strictly after it), or NULL.
     * The backend sets list_complete; the front end makes the cursor. */
    int (*list)(ag_kv_t *kv, const void *prefix, size_t prefixlen, const void *after,
                size_t afterlen, unsigned limit, ag_kv_list_result_t *out);
    int (*sweep)(ag_kv_t *kv, size_t max_keys);
    int (*stat)(ag_kv_t *kv, ag_kv_stat_t *st);
    void (*close)(ag_kv_t *kv);
    /* Optional (NULL: the front end runs get/put and calls back inline). They
     * follow the contract of ag_kv_get_async(); op is never NULL, and they set
     * *op to a handle that embeds ag_kv_op_t first, or to NULL when they
     * completed inline. A get completes through ag__kv_get_done(). With
     * either, cancel is required. */
    int (*get_async)(ag_kv_t *kv, const void *key, size_t keylen, bool with_metadata,
                     ag_kv_get_cb cb, void *ctx, ag_kv_op_t **op);
    int (*put_async)(ag_kv_t *kv, const void *key, size_t keylen, const void *val, size_t vallen,
                     int64_t expiration_ms, const char *metadata, size_t metadata_len,
                     ag_kv_put_cb cb, void *ctx, ag_kv_op_t **op);
    /* Forgets a pending op: its callback must not run; releases the handle. */
    void (*cancel)(ag_kv_op_t *op);
} ag_kv_ops_t;

struct ag_kv {
    const ag_kv_ops_t *ops;
    int64_t (*now_ms)(void *ctx); /* never NULL: ag__kv_init() sets a default */
    void *clock_ctx;
};

/** The head of a backend's pending-operation handle. */
struct ag_kv_op {
    ag_kv_t *kv; /* whose ops->cancel forgets it */
};

/** For backends: sets kv's ops and its clock from opts (NULL: the defaults). */
void ag__kv_init(ag_kv_t *kv, const ag_kv_ops_t *ops, const ag_kv_options_t *opts);

/** For backends: completes a get as ag_kv_get_cb says: fills value->expiration
 *  from expiration_ms, calls cb with value (NULL unless rc is 0), then releases
 *  what the callback did not take over. value may be NULL when rc < 0. */
void ag__kv_get_done(ag_kv_get_cb cb, void *ctx, int rc, ag_kv_value_t *value);

#endif
