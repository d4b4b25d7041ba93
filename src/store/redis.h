/* SPDX-License-Identifier: MIT
 *
 * redis.h: our Redis client, one per event loop (libuv): nonblocking connect
 * over TCP or a Unix socket, AUTH and SELECT on connect, pipelined commands
 * with callbacks, connect and command timeouts, reconnect with backoff, and
 * scripts called by SHA (sent again with EVAL on NOSCRIPT). Debian 12's hiredis
 * (0.14.1) has no timeouts and its libuv adapter drops poll errors, hence ours.
 *
 * Loop affinity: every function but ag_redis_is_up() is called on the loop's
 * thread, and every callback runs there.
 */
#ifndef AG_STORE_REDIS_H
#define AG_STORE_REDIS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "store/resp.h"

typedef struct ag_redis ag_redis_t;
typedef struct ag_redis_cmd ag_redis_cmd_t;

/* A client key's name after this is revoked on every instance (`aigate keys
 * revoke` sets it; the gateway checks it with each request's rate limit). */
#define AG_REDIS_REVOKED_PREFIX "aigate:keys:revoked:"
/* Client keys as `aigate keys` publishes them: name -> the record as stored
 * (ag_keys_export(), hex), and a version bumped with each (gateway/keys_sync.c). */
#define AG_REDIS_KEYS_RECORDS "aigate:keys:records"
#define AG_REDIS_KEYS_VERSION "aigate:keys:version"

/* The largest reply we take (a cached response is at most 25 MiB). */
#define AG_REDIS_MAX_REPLY ((size_t)26 << 20)

/** A parsed Redis URL: redis://[[USER]:PASSWORD@]HOST[:PORT][/DB] (HOST may be
 *  [IPv6]), or unix://[[USER]:PASSWORD@]/PATH[?db=N]. */
typedef struct ag_redis_url {
    char host[256]; /* empty for a Unix socket */
    int port;       /* 6379 when not given */
    char path[108]; /* the socket, for unix:// */
    char user[128]; /* ACL user; empty for the default user */
    char password[256];
    int db; /* 0..15 by default configs; any 0..INT_MAX accepted */
} ag_redis_url_t;

/** Parses url. @return 0, or AG_REDIS_EURL with *err saying why (static text,
 *  never the password). */
int ag_redis_url_parse(const char *url, ag_redis_url_t *out, const char **err);

typedef struct ag_redis_options {
    const char *url;             /* borrowed for ag_redis_new() */
    const char *password;        /* used when the URL has none (the secret REDIS_PASSWORD); NULL */
    uint32_t connect_timeout_ms; /* connect + AUTH + SELECT; 0: 1000 */
    uint32_t command_timeout_ms; /* from write to reply; 0: 1000 */
    uint32_t backoff_min_ms;     /* first reconnect delay; 0: 50 */
    uint32_t backoff_max_ms;     /* doubling up to this; 0: 2000 */
    size_t max_pending;          /* commands in flight or queued; 0: 65536 */
    bool single_attempt;         /* one connection: no reconnect, and no log line when it
                                  * fails (the caller reports the code it gets); for
                                  * ag_redis_call() and the sessions below */
    const char *name;            /* for log lines ("worker 0"); borrowed, must outlive the client */
} ag_redis_options_t;

/**
 * Completion of a command. rc 0: `reply` is Redis's answer, which may be an
 * error reply (AG_RESP_ERROR: the caller decides); it and its strings are
 * valid only during the callback. rc < 0 (reply NULL): AG_REDIS_EDOWN (the
 * connection failed before the answer), AG_REDIS_ETIMEDOUT, AG_REDIS_ECLOSED
 * (ag_redis_close()).
 */
typedef void (*ag_redis_cb)(void *ctx, int rc, const ag_resp_t *reply);

/** A Lua script, known by its SHA-1; init once, use from any loop's client. */
typedef struct ag_redis_script {
    const char *source; /* borrowed: a string literal */
    char sha1[41];
} ag_redis_script_t;

void ag_redis_script_init(ag_redis_script_t *s, const char *source);

/**
 * Creates a client on `loop` and starts connecting.
 * @return 0 and *out; AG_REDIS_EURL for a bad URL; -ENOMEM.
 * @note Close with ag_redis_close(); the loop must run afterwards for the
 *       client's handles to close and its memory to go.
 */
int ag_redis_new(uv_loop_t *loop, const ag_redis_options_t *opts, ag_redis_t **out);

/** Fails every pending command with AG_REDIS_ECLOSED (their callbacks run
 *  now), closes the connection and frees the client once its handles closed.
 *  NULL is a no-op. Not from inside one of its callbacks. */
void ag_redis_close(ag_redis_t *r);

/** Connected and past AUTH/SELECT. Any thread may ask (a relaxed load). */
bool ag_redis_is_up(const ag_redis_t *r);

/**
 * Sends a command: argv[0..argc) with their lengths (NULL lens: strlen). Copied
 * before the call returns. While a connection is being made, commands wait for
 * it; while Redis is down (between attempts), they fail at once.
 * @return 0: cb will run exactly once (unless cancelled), never before this
 *         returns; AG_REDIS_EDOWN (Redis down: no connection being made),
 *         AG_REDIS_EFULL (max_pending), AG_EINVALID, -ENOMEM: cb never runs.
 * @param out  the pending command, for ag_redis_cancel(); may be NULL. Valid
 *             until its callback starts or it is cancelled.
 */
int ag_redis_command(ag_redis_t *r, int argc, const char *const *argv, const size_t *lens,
                     ag_redis_cb cb, void *ctx, ag_redis_cmd_t **out);

/** EVALSHA script nkeys args...: argv holds the keys then the other arguments.
 *  On NOSCRIPT the same call goes again as EVAL (which loads the script), so
 *  the callback sees the script's answer. Same contract as ag_redis_command(). */
int ag_redis_eval(ag_redis_t *r, const ag_redis_script_t *script, int nkeys, int argc,
                  const char *const *argv, const size_t *lens, ag_redis_cb cb, void *ctx,
                  ag_redis_cmd_t **out);

/** Sends one command on a loop and a connection of its own and waits for the
 *  answer: for a command line or a job on the thread pool, never on an event
 *  loop's thread. @return 0 with *reply (the caller's: ag_resp_free(); an
 *  ERROR answer too), or a negative code with *reply NULL. */
int ag_redis_call(const ag_redis_options_t *opts, int argc, const char *const *argv,
                  ag_resp_t **reply);

/** A blocking session: a loop and a connection of the caller's own, for
 *  several commands in a row (a listing's SCAN pages) on one connection. The
 *  same rules as ag_redis_call(): never on an event loop's thread; one thread
 *  at a time. */
typedef struct ag_redis_sync ag_redis_sync_t;

/** @return 0 and *out (connecting starts; the first command waits for it);
 *  AG_REDIS_EURL; -ENOMEM. Close with ag_redis_sync_close(). */
int ag_redis_sync_open(const ag_redis_options_t *opts, ag_redis_sync_t **out);
/** ag_redis_call()'s answer, on the session's connection; lens NULL: strlen. */
int ag_redis_sync_command(ag_redis_sync_t *s, int argc, const char *const *argv, const size_t *lens,
                          ag_resp_t **reply);
/** ag_redis_eval(), waited for. */
int ag_redis_sync_eval(ag_redis_sync_t *s, const ag_redis_script_t *script, int nkeys, int argc,
                       const char *const *argv, const size_t *lens, ag_resp_t **reply);
/** True once a command found Redis down or timed out: the client waits for a
 *  backoff before it tries again, so a caller that would rather try now opens
 *  a new session. */
bool ag_redis_sync_broken(const ag_redis_sync_t *s);
/** NULL is a no-op. */
void ag_redis_sync_close(ag_redis_sync_t *s);

/** Forgets a pending command: its callback will not run. The command may
 *  still reach Redis. NULL is a no-op. Never after its callback started. */
void ag_redis_cancel(ag_redis_cmd_t *c);

/** Commands waiting for an answer or for the connection (tests, metrics). */
size_t ag_redis_pending(const ag_redis_t *r);

#endif
