/* SPDX-License-Identifier: MIT
 *
 * redis.c: the Redis client of one event loop. Commands are encoded when they
 * are issued, queued in the order they are written (replies come back in that
 * order), flushed together before the loop next polls (pipelining), and failed
 * all at once, each exactly once, when the connection breaks or a reply is late.
 */
#include "util/platform.h"

#include "store/redis.h"

#include <errno.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/sha.h>

#include "util/buf.h"
#include "util/errors.h"
#include "util/hex.h"
#include "util/log.h"

enum { ST_DOWN, ST_RESOLVING, ST_CONNECTING, ST_UP, ST_CLOSING };

struct ag_redis_cmd {
    ag_redis_cmd_t *next;
    ag_redis_t *r;
    ag_redis_cb cb; /* NULL once cancelled (the answer is still read and dropped) */
    void *ctx;
    char *wire; /* the encoded command, until it is written */
    size_t wire_len;
    const ag_redis_script_t *script; /* EVALSHA: sent again as EVAL on NOSCRIPT */
    char *args;                      /* its encoded "numkeys keys... args..." */
    size_t args_len;
    int argc;            /* of args */
    bool retried;        /* sent again as EVAL already */
    bool handshake;      /* AUTH/SELECT: an error answer fails the connection */
    int64_t deadline_ms; /* the answer is late after this (loop time) */
};

typedef struct conn {
    union {
        uv_handle_t handle;
        uv_stream_t stream;
        uv_tcp_t tcp;
        uv_pipe_t pipe;
    } h;
    uv_connect_t connect;
    ag_redis_t *r;
} conn_t;

typedef struct wreq {
    uv_write_t req;
    conn_t *conn;
    size_t len;
    char data[];
} wreq_t;

typedef struct resolve {
    uv_getaddrinfo_t req;
    ag_redis_t *r; /* NULL when the client no longer waits for it */
} resolve_t;

struct ag_redis {
    uv_loop_t *loop;
    ag_redis_url_t url;
    uint32_t connect_timeout_ms, command_timeout_ms, backoff_min_ms, backoff_max_ms;
    bool single_attempt;
    size_t max_pending;
    const char *name;
    int state;
    atomic_bool up;
    conn_t *conn;       /* the current connection, or NULL */
    resolve_t *resolve; /* the name lookup in progress, or NULL */
    uv_timer_t retry;   /* connect timeout, then the backoff before the next attempt */
    uv_timer_t tick;    /* command timeouts, while anything is pending */
    uv_prepare_t flush; /* writes what was queued, before the loop polls */
    bool flush_on;
    bool writable;       /* connected: commands are written as they come */
    uint32_t seed;       /* for the backoff's jitter */
    unsigned handles;    /* open handles and requests; freed when 0 while closing */
    uint32_t backoff_ms; /* the next reconnect delay */
    unsigned failures;   /* consecutive failed attempts, for quieter logs */
    ag_redis_cmd_t *head, *tail, *unsent; /* the queue; unsent: the first not yet written */
    size_t npending;
    ag_buf_t in; /* bytes read and not yet parsed */
    size_t in_off;
    ag_resp_parser_t parser;
};

static void on_tick(uv_timer_t *t);
static void on_flush(uv_prepare_t *p);

/* ---- URL ------------------------------------------------------------------------------ */

static bool parse_uint(const char *s, size_t n, long max, long *out)
{
    if (n == 0 || n > 10)
        return false;
    long v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        v = v * 10 + (s[i] - '0');
    }
    if (v > max)
        return false;
    *out = v;
    return true;
}

int ag_redis_url_parse(const char *url, ag_redis_url_t *out, const char **err)
{
    memset(out, 0, sizeof(*out));
    out->port = 6379;
    *err = NULL;
    bool unix_sock = false;
    const char *p;
    if (strncmp(url, "redis://", 8) == 0) {
        p = url + 8;
    } else if (strncmp(url, "unix://", 7) == 0) {
        p = url + 7;
        unix_sock = true;
    } else {
        *err = strncmp(url, "rediss://", 9) == 0
                   ? "rediss:// (TLS) is not supported: use redis:// or unix://"
                   : "a Redis URL starts with redis:// or unix://";
        return AG_REDIS_EURL;
    }
    /* userinfo: up to the last '@' before the path */
    const char *end = p + strlen(p);
    const char *slash = unix_sock ? NULL : strchr(p, '/');
    const char *auth_end = slash ? slash : end;
    const char *at = NULL;
    for (const char *q = p; q < auth_end; q++) {
        if (*q == '@')
            at = q;
        if (unix_sock && *q == '/' && !at)
            break;
    }
    if (at) {
        const char *colon = memchr(p, ':', (size_t)(at - p));
        const char *uend = colon ? colon : at;
        if (!ag_percent_decode(p, (size_t)(uend - p), out->user, sizeof(out->user), false) ||
            (colon && !ag_percent_decode(colon + 1, (size_t)(at - colon - 1), out->password,
                                         sizeof(out->password), false))) {
            *err = "the user or password in the Redis URL is malformed or too long";
            return AG_REDIS_EURL;
        }
        p = at + 1;
    }
    if (unix_sock) {
        const char *q = strchr(p, '?');
        size_t plen = q ? (size_t)(q - p) : strlen(p);
        if (plen == 0 || p[0] != '/' || plen >= sizeof(out->path)) {
            *err = "unix:// wants an absolute socket path (unix:///run/redis.sock)";
            return AG_REDIS_EURL;
        }
        memcpy(out->path, p, plen);
        out->path[plen] = '\0';
        while (q && *q) {
            q++;
            const char *amp = strchr(q, '&');
            size_t n = amp ? (size_t)(amp - q) : strlen(q);
            long v;
            if (n > 3 && memcmp(q, "db=", 3) == 0 && parse_uint(q + 3, n - 3, INT_MAX, &v)) {
                out->db = (int)v;
            } else if (n > 9 && memcmp(q, "password=", 9) == 0 &&
                       ag_percent_decode(q + 9, n - 9, out->password, sizeof(out->password),
                                         false)) {
            } else {
                *err = "unix:// takes ?db=N and &password=X only";
                return AG_REDIS_EURL;
            }
            q = amp;
        }
        out->port = 0;
        return 0;
    }
    const char *hend = slash ? slash : end;
    const char *portp = NULL;
    if (*p == '[') {
        const char *rb = memchr(p, ']', (size_t)(hend - p));
        if (!rb || rb == p + 1) {
            *err = "an IPv6 host in a Redis URL is written [ADDRESS]";
            return AG_REDIS_EURL;
        }
        if ((size_t)(rb - p - 1) >= sizeof(out->host)) {
            *err = "the Redis host is too long";
            return AG_REDIS_EURL;
        }
        memcpy(out->host, p + 1, (size_t)(rb - p - 1));
        if (rb + 1 < hend) {
            if (rb[1] != ':') {
                *err = "the Redis URL has bytes after its [IPv6] host";
                return AG_REDIS_EURL;
            }
            portp = rb + 2;
        }
    } else {
        const char *colon = memchr(p, ':', (size_t)(hend - p));
        const char *he = colon ? colon : hend;
        if (he == p || (size_t)(he - p) >= sizeof(out->host)) {
            *err = "the Redis URL names no host (redis://HOST:PORT/DB)";
            return AG_REDIS_EURL;
        }
        memcpy(out->host, p, (size_t)(he - p));
        if (colon)
            portp = colon + 1;
    }
    if (portp) {
        long v;
        if (!parse_uint(portp, (size_t)(hend - portp), 65535, &v) || v == 0) {
            *err = "the Redis port must be 1-65535";
            return AG_REDIS_EURL;
        }
        out->port = (int)v;
    }
    if (slash && slash[1]) {
        long v;
        if (!parse_uint(slash + 1, strlen(slash + 1), INT_MAX, &v)) {
            *err = "the Redis database (after the /) must be a number";
            return AG_REDIS_EURL;
        }
        out->db = (int)v;
    }
    return 0;
}

/* ---- encoding ---------------------------------------------------------------------------- */

static int encode_arg(ag_buf_t *b, const char *s, size_t n)
{
    int rc = ag_buf_printf(b, "$%zu\r\n", n);
    if (rc == 0)
        rc = ag_buf_append(b, s, n);
    if (rc == 0)
        rc = ag_buf_append(b, "\r\n", 2);
    return rc;
}

void ag_redis_script_init(ag_redis_script_t *s, const char *source)
{
    unsigned char md[SHA_DIGEST_LENGTH];
    SHA1((const unsigned char *)source, strlen(source), md);
    s->source = source;
    for (int i = 0; i < SHA_DIGEST_LENGTH; i++)
        snprintf(s->sha1 + 2 * i, 3, "%02x", md[i]);
}

/* ---- the queue --------------------------------------------------------------------------- */

static void cmd_free(ag_redis_cmd_t *c)
{
    free(c->wire);
    free(c->args);
    free(c);
}

static void flush_start(ag_redis_t *r)
{
    if (!r->flush_on && r->writable) {
        uv_prepare_start(&r->flush, on_flush);
        r->flush_on = true;
    }
}

static void enqueue(ag_redis_t *r, ag_redis_cmd_t *c)
{
    c->next = NULL;
    if (r->tail)
        r->tail->next = c;
    else
        r->head = c;
    r->tail = c;
    if (!r->unsent)
        r->unsent = c;
    r->npending++;
    if (!uv_is_active((uv_handle_t *)&r->tick)) {
        uint32_t every = r->command_timeout_ms / 4 ? r->command_timeout_ms / 4 : 1;
        uv_timer_start(&r->tick, on_tick, every, every);
    }
    flush_start(r);
}

static void fail_conn(ag_redis_t *r, int rc, const char *why);

/* Takes the queue and fails each command once. A callback may cancel a later
 * command of the list (it only loses its cb) or issue new ones (they see the
 * new state), so the list is detached first. */
static void fail_all(ag_redis_t *r, int rc)
{
    ag_redis_cmd_t *c = r->head;
    r->head = r->tail = r->unsent = NULL;
    r->npending = 0;
    while (c) {
        ag_redis_cmd_t *next = c->next;
        ag_redis_cb cb = c->cb;
        c->cb = NULL;
        if (cb)
            cb(c->ctx, rc, NULL);
        cmd_free(c);
        c = next;
    }
}

static int new_cmd(ag_redis_t *r, ag_redis_cb cb, void *ctx, ag_redis_cmd_t **out)
{
    *out = NULL;
    if (!r || !cb)
        return AG_EINVALID;
    if (r->state == ST_DOWN || r->state == ST_CLOSING)
        return r->state == ST_DOWN ? AG_REDIS_EDOWN : AG_REDIS_ECLOSED;
    if (r->npending >= r->max_pending)
        return AG_REDIS_EFULL;
    ag_redis_cmd_t *c = calloc(1, sizeof(*c));
    if (!c)
        return -ENOMEM;
    c->r = r;
    c->cb = cb;
    c->ctx = ctx;
    c->deadline_ms = (int64_t)uv_now(r->loop) + r->command_timeout_ms;
    /* A command that waits for the connection has the connect timeout too. */
    if (r->state != ST_UP)
        c->deadline_ms += r->connect_timeout_ms;
    *out = c;
    return 0;
}

int ag_redis_command(ag_redis_t *r, int argc, const char *const *argv, const size_t *lens,
                     ag_redis_cb cb, void *ctx, ag_redis_cmd_t **out)
{
    if (out)
        *out = NULL;
    if (argc < 1 || !argv)
        return AG_EINVALID;
    ag_redis_cmd_t *c;
    int rc = new_cmd(r, cb, ctx, &c);
    if (rc < 0)
        return rc;
    ag_buf_t b;
    ag_buf_init(&b, 0);
    rc = ag_buf_printf(&b, "*%d\r\n", argc);
    for (int i = 0; i < argc && rc == 0; i++)
        rc = encode_arg(&b, argv[i], lens ? lens[i] : strlen(argv[i]));
    if (rc < 0) {
        ag_buf_fini(&b);
        free(c);
        return -ENOMEM;
    }
    c->wire = b.data;
    c->wire_len = b.len;
    enqueue(r, c);
    if (out)
        *out = c;
    return 0;
}

/* "*N\r\n$4\r\nEVAL\r\n$len\r\nsource\r\n" (or EVALSHA and the SHA) then the arguments. */
static int encode_eval(ag_redis_cmd_t *c, bool by_sha)
{
    ag_buf_t b;
    ag_buf_init(&b, 0);
    const char *what = by_sha ? c->script->sha1 : c->script->source;
    int rc = ag_buf_printf(&b, "*%d\r\n", c->argc + 2);
    if (rc == 0)
        rc = by_sha ? encode_arg(&b, "EVALSHA", 7) : encode_arg(&b, "EVAL", 4);
    if (rc == 0)
        rc = encode_arg(&b, what, strlen(what));
    if (rc == 0)
        rc = ag_buf_append(&b, c->args, c->args_len);
    if (rc < 0) {
        ag_buf_fini(&b);
        return -ENOMEM;
    }
    free(c->wire);
    c->wire = b.data;
    c->wire_len = b.len;
    return 0;
}

int ag_redis_eval(ag_redis_t *r, const ag_redis_script_t *script, int nkeys, int argc,
                  const char *const *argv, const size_t *lens, ag_redis_cb cb, void *ctx,
                  ag_redis_cmd_t **out)
{
    if (out)
        *out = NULL;
    if (!script || nkeys < 0 || nkeys > argc || argc < 0 || (argc > 0 && !argv))
        return AG_EINVALID;
    ag_redis_cmd_t *c;
    int rc = new_cmd(r, cb, ctx, &c);
    if (rc < 0)
        return rc;
    ag_buf_t b;
    ag_buf_init(&b, 0);
    char num[16];
    int nl = snprintf(num, sizeof(num), "%d", nkeys);
    rc = encode_arg(&b, num, (size_t)nl);
    for (int i = 0; i < argc && rc == 0; i++)
        rc = encode_arg(&b, argv[i], lens ? lens[i] : strlen(argv[i]));
    c->script = script;
    c->args = b.data;
    c->args_len = b.len;
    c->argc = argc + 1;
    if (rc == 0)
        rc = encode_eval(c, true);
    if (rc < 0) {
        cmd_free(c);
        return -ENOMEM;
    }
    enqueue(r, c);
    if (out)
        *out = c;
    return 0;
}

void ag_redis_cancel(ag_redis_cmd_t *c)
{
    if (c)
        c->cb = NULL;
}

size_t ag_redis_pending(const ag_redis_t *r)
{
    return r ? r->npending : 0;
}

bool ag_redis_is_up(const ag_redis_t *r)
{
    return r && atomic_load_explicit(&r->up, memory_order_relaxed);
}

/* ---- handles ----------------------------------------------------------------------------- */

static void maybe_free(ag_redis_t *r)
{
    if (r->state == ST_CLOSING && r->handles == 0) {
        ag_buf_fini(&r->in);
        free(r);
    }
}

static void on_handle_closed(uv_handle_t *h)
{
    ag_redis_t *r = h->data;
    r->handles--;
    maybe_free(r);
}

static void on_conn_closed(uv_handle_t *h)
{
    conn_t *conn = h->data;
    ag_redis_t *r = conn->r;
    free(conn);
    r->handles--;
    maybe_free(r);
}

static void drop_conn(ag_redis_t *r)
{
    if (r->conn) {
        uv_close(&r->conn->h.handle, on_conn_closed);
        r->conn = NULL;
    }
    if (r->resolve) {
        r->resolve->r = NULL; /* its callback frees it; the cancel may come too late */
        uv_cancel((uv_req_t *)&r->resolve->req);
        r->resolve = NULL;
    }
    if (r->flush_on) {
        uv_prepare_stop(&r->flush);
        r->flush_on = false;
    }
    r->writable = false;
    ag_buf_reset(&r->in);
    r->in_off = 0;
    ag_resp_limits_t lim = r->parser.limits; /* init zeroes the struct it is read from */
    ag_resp_parser_init(&r->parser, &lim);
}

/* ---- connecting -------------------------------------------------------------------------- */

static void start_connect(ag_redis_t *r);

static void on_retry(uv_timer_t *t)
{
    ag_redis_t *r = t->data;
    if (r->state == ST_DOWN)
        start_connect(r);
    else if (r->state == ST_RESOLVING || r->state == ST_CONNECTING)
        fail_conn(r, AG_REDIS_ETIMEDOUT, "connect timed out");
}

static void fail_conn(ag_redis_t *r, int rc, const char *why)
{
    bool was_up = r->state == ST_UP;
    drop_conn(r);
    r->state = ST_DOWN;
    atomic_store_explicit(&r->up, false, memory_order_relaxed);
    r->failures++;
    uv_timer_stop(&r->tick);
    if (r->single_attempt) {
        /* The caller reports the failure it is given, and connects anew. */
        uv_timer_stop(&r->retry);
        fail_all(r, rc == AG_REDIS_ETIMEDOUT ? rc : AG_REDIS_EDOWN);
        return;
    }
    char where[300];
    if (r->url.path[0])
        snprintf(where, sizeof(where), "%s", r->url.path);
    else
        snprintf(where, sizeof(where), "%s:%d", r->url.host, r->url.port);
    /* Loud on the first failure, then once per 64 attempts. */
    if (was_up || r->failures == 1 || r->failures % 64 == 0)
        ag_log_warn("%s: redis %s: %s (%s); reconnecting in %u ms", r->name, where, why,
                    ag_strerror(rc), r->backoff_ms);
    uv_timer_start(&r->retry, on_retry, r->backoff_ms, 0);
    /* Exponential, with a random eighth so instances do not reconnect in step. */
    uint32_t next = r->backoff_ms * 2;
    next = next > r->backoff_max_ms ? r->backoff_max_ms : next;
    r->seed = r->seed * 1103515245u + 12345u;
    r->backoff_ms = next - (r->seed >> 8) % (next / 8 + 1);
    if (r->backoff_ms < r->backoff_min_ms)
        r->backoff_ms = r->backoff_min_ms;
    fail_all(r, rc == AG_REDIS_ETIMEDOUT ? rc : AG_REDIS_EDOWN);
}

static void on_handshake(void *ctx, int rc, const ag_resp_t *reply)
{
    ag_redis_t *r = ctx;
    AG_UNUSED(rc);
    AG_UNUSED(reply);
    AG_UNUSED(r);
}

static void become_up(ag_redis_t *r)
{
    r->state = ST_UP;
    uv_timer_stop(&r->retry);
    if (r->failures > 0)
        ag_log_info("%s: redis connected again after %u failed attempts", r->name, r->failures);
    r->failures = 0;
    r->backoff_ms = r->backoff_min_ms;
    atomic_store_explicit(&r->up, true, memory_order_relaxed);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    conn_t *conn = h->data;
    ag_redis_t *r = conn->r;
    AG_UNUSED(suggested);
    if (ag_buf_reserve(&r->in, 65536) < 0) {
        buf->base = NULL;
        buf->len = 0;
        return;
    }
    buf->base = r->in.data + r->in.len;
    buf->len = r->in.cap - r->in.len;
}

/* One answer for the head of the queue. @return false when the connection failed. */
static bool dispatch(ag_redis_t *r, const ag_resp_t *reply)
{
    ag_redis_cmd_t *c = r->head;
    if (!c || c == r->unsent) {
        fail_conn(r, AG_EPROTO, "an answer to no command");
        return false;
    }
    r->head = c->next;
    if (!r->head)
        r->tail = NULL;
    r->npending--;
    if (c->handshake) {
        bool ok = reply->type != AG_RESP_ERROR;
        bool last = !r->head || !r->head->handshake;
        cmd_free(c);
        if (!ok) {
            fail_conn(r, AG_REDIS_EAUTH, "AUTH or SELECT was refused");
            return false;
        }
        if (last && r->state == ST_CONNECTING)
            become_up(r);
        return true;
    }
    if (c->script && !c->retried && ag_resp_error_is(reply, "NOSCRIPT")) {
        /* Not in this server's script cache (a restart, SCRIPT FLUSH): EVAL
         * sends the source and caches it, so the next EVALSHA finds it. */
        c->retried = true;
        if (encode_eval(c, false) == 0) {
            enqueue(r, c);
            return true;
        }
    }
    ag_redis_cb cb = c->cb;
    c->cb = NULL;
    if (cb)
        cb(c->ctx, 0, reply);
    cmd_free(c);
    return r->state == ST_UP || r->state == ST_CONNECTING;
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    conn_t *conn = s->data;
    ag_redis_t *r = conn->r;
    AG_UNUSED(buf);
    if (conn != r->conn)
        return;
    if (nread < 0) {
        fail_conn(r, AG_REDIS_EDOWN,
                  nread == UV_EOF ? "the server closed the connection" : uv_strerror((int)nread));
        return;
    }
    if (nread == 0)
        return;
    r->in.len += (size_t)nread;
    for (;;) {
        ag_resp_t *reply = NULL;
        int64_t n =
            ag_resp_parse(&r->parser, r->in.data + r->in_off, r->in.len - r->in_off, &reply);
        if (n == AG_EAGAIN)
            break;
        if (n < 0) {
            fail_conn(r, (int)n, "a malformed or oversized answer");
            return;
        }
        r->in_off += (size_t)n;
        bool alive = dispatch(r, reply);
        ag_resp_free(reply);
        if (!alive || r->conn != conn)
            return;
    }
    /* The parser's position is relative to in_off, so moving the unparsed
     * bytes to the front keeps it right. */
    if (r->in_off == r->in.len) {
        ag_buf_reset(&r->in);
        r->in_off = 0;
    } else if (r->in_off > 0) {
        ag_buf_consume(&r->in, r->in_off);
        r->in_off = 0;
    }
}

static void on_write(uv_write_t *req, int status)
{
    wreq_t *w = (wreq_t *)req;
    conn_t *conn = w->conn;
    ag_redis_t *r = conn->r;
    free(w);
    r->handles--;
    if (status < 0 && conn == r->conn)
        fail_conn(r, AG_REDIS_EDOWN, uv_strerror(status));
    else
        maybe_free(r);
}

/* Writes every command not yet written, in one write. */
static void on_flush(uv_prepare_t *p)
{
    ag_redis_t *r = p->data;
    uv_prepare_stop(&r->flush);
    r->flush_on = false;
    if (!r->writable || !r->unsent)
        return;
    size_t len = 0;
    for (ag_redis_cmd_t *c = r->unsent; c; c = c->next)
        len += c->wire_len;
    wreq_t *w = malloc(sizeof(*w) + len);
    if (!w) {
        fail_conn(r, -ENOMEM, "out of memory");
        return;
    }
    w->conn = r->conn;
    w->len = 0;
    for (ag_redis_cmd_t *c = r->unsent; c; c = c->next) {
        memcpy(w->data + w->len, c->wire, c->wire_len);
        w->len += c->wire_len;
        AG_FREE(&c->wire);
        c->wire_len = 0;
    }
    r->unsent = NULL;
    uv_buf_t b = uv_buf_init(w->data, (unsigned)w->len);
    int rc = uv_write(&w->req, &r->conn->h.stream, &b, 1, on_write);
    if (rc < 0) {
        free(w);
        fail_conn(r, AG_REDIS_EDOWN, uv_strerror(rc));
        return;
    }
    r->handles++;
}

/* AUTH and SELECT go first, ahead of commands that waited for the connection. */
static int queue_handshake(ag_redis_t *r)
{
    const char *argv[3];
    size_t lens[3];
    char db[16];
    ag_redis_cmd_t *first = NULL, *last = NULL;
    for (int step = 0; step < 2; step++) {
        int argc = 0;
        if (step == 0 && r->url.password[0]) {
            argv[argc++] = "AUTH";
            if (r->url.user[0])
                argv[argc++] = r->url.user;
            argv[argc++] = r->url.password;
        } else if (step == 1 && r->url.db != 0) {
            snprintf(db, sizeof(db), "%d", r->url.db);
            argv[argc++] = "SELECT";
            argv[argc++] = db;
        }
        if (argc == 0)
            continue;
        ag_buf_t b;
        ag_buf_init(&b, 0);
        int rc = ag_buf_printf(&b, "*%d\r\n", argc);
        for (int i = 0; i < argc && rc == 0; i++) {
            lens[i] = strlen(argv[i]);
            rc = encode_arg(&b, argv[i], lens[i]);
        }
        ag_redis_cmd_t *c = calloc(1, sizeof(*c));
        if (rc < 0 || !c) {
            ag_buf_fini(&b);
            free(c);
            while (first) {
                ag_redis_cmd_t *n = first->next;
                cmd_free(first);
                first = n;
            }
            return -ENOMEM;
        }
        c->r = r;
        c->cb = on_handshake;
        c->ctx = r;
        c->handshake = true;
        c->wire = b.data;
        c->wire_len = b.len;
        c->deadline_ms = (int64_t)uv_now(r->loop) + r->connect_timeout_ms;
        if (last)
            last->next = c;
        else
            first = c;
        last = c;
        r->npending++;
    }
    if (!first)
        return 0;
    last->next = r->head;
    if (!r->head)
        r->tail = last;
    r->head = first;
    r->unsent = first;
    return 1;
}

static void on_connect(uv_connect_t *req, int status)
{
    conn_t *conn = req->data;
    ag_redis_t *r = conn->r;
    if (conn != r->conn)
        return;
    if (status < 0) {
        fail_conn(r, AG_REDIS_EDOWN, uv_strerror(status));
        return;
    }
    if (r->url.port)
        uv_tcp_nodelay(&conn->h.tcp, 1);
    int rc = uv_read_start(&conn->h.stream, on_alloc, on_read);
    if (rc < 0) {
        fail_conn(r, AG_REDIS_EDOWN, uv_strerror(rc));
        return;
    }
    rc = queue_handshake(r);
    if (rc < 0) {
        fail_conn(r, -ENOMEM, "out of memory");
        return;
    }
    if (rc == 0)
        become_up(r);
    r->writable = true;
    flush_start(r);
    if (!uv_is_active((uv_handle_t *)&r->tick) && r->head) {
        uint32_t every = r->command_timeout_ms / 4 ? r->command_timeout_ms / 4 : 1;
        uv_timer_start(&r->tick, on_tick, every, every);
    }
}

static void connect_addr(ag_redis_t *r, const struct sockaddr *sa)
{
    conn_t *conn = calloc(1, sizeof(*conn));
    if (!conn) {
        fail_conn(r, -ENOMEM, "out of memory");
        return;
    }
    conn->r = r;
    int rc = r->url.path[0] ? uv_pipe_init(r->loop, &conn->h.pipe, 0)
                            : uv_tcp_init(r->loop, &conn->h.tcp);
    if (rc < 0) {
        free(conn);
        fail_conn(r, AG_REDIS_EDOWN, uv_strerror(rc));
        return;
    }
    conn->h.handle.data = conn;
    conn->connect.data = conn;
    r->handles++;
    r->conn = conn;
    r->state = ST_CONNECTING;
    if (r->url.path[0]) {
        uv_pipe_connect(&conn->connect, &conn->h.pipe, r->url.path, on_connect);
        return;
    }
    rc = uv_tcp_connect(&conn->connect, &conn->h.tcp, sa, on_connect);
    if (rc < 0)
        fail_conn(r, AG_REDIS_EDOWN, uv_strerror(rc));
}

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    resolve_t *rs = (resolve_t *)req;
    ag_redis_t *r = rs->r;
    if (!r) { /* given up on: the client may be closing */
        uv_freeaddrinfo(res);
        ag_redis_t *owner = req->data;
        free(rs);
        owner->handles--;
        maybe_free(owner);
        return;
    }
    r->resolve = NULL;
    r->handles--;
    free(rs);
    if (status < 0 || !res) {
        uv_freeaddrinfo(res);
        fail_conn(r, AG_REDIS_EDOWN, "the host name does not resolve");
        return;
    }
    connect_addr(r, res->ai_addr);
    uv_freeaddrinfo(res);
}

static void start_connect(ag_redis_t *r)
{
    uv_timer_start(&r->retry, on_retry, r->connect_timeout_ms, 0);
    if (r->url.path[0]) {
        connect_addr(r, NULL);
        return;
    }
    struct sockaddr_storage ss;
    char port[8];
    snprintf(port, sizeof(port), "%d", r->url.port);
    if (uv_ip4_addr(r->url.host, r->url.port, (struct sockaddr_in *)&ss) == 0 ||
        uv_ip6_addr(r->url.host, r->url.port, (struct sockaddr_in6 *)&ss) == 0) {
        connect_addr(r, (struct sockaddr *)&ss);
        return;
    }
    resolve_t *rs = calloc(1, sizeof(*rs));
    if (!rs) {
        fail_conn(r, -ENOMEM, "out of memory");
        return;
    }
    rs->r = r;
    rs->req.data = r;
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    int rc = uv_getaddrinfo(r->loop, &rs->req, on_resolved, r->url.host, port, &hints);
    if (rc < 0) {
        free(rs);
        fail_conn(r, AG_REDIS_EDOWN, uv_strerror(rc));
        return;
    }
    r->handles++;
    r->resolve = rs;
    r->state = ST_RESOLVING;
}

static void on_tick(uv_timer_t *t)
{
    ag_redis_t *r = t->data;
    if (!r->head) {
        uv_timer_stop(&r->tick);
        return;
    }
    if ((int64_t)uv_now(r->loop) > r->head->deadline_ms) {
        if (r->state == ST_UP)
            fail_conn(r, AG_REDIS_ETIMEDOUT, "a command was not answered in time");
        /* while connecting, the connect timeout ends it */
    }
}

/* ---- lifecycle ---------------------------------------------------------------------------- */

int ag_redis_new(uv_loop_t *loop, const ag_redis_options_t *o, ag_redis_t **out)
{
    *out = NULL;
    ag_redis_t *r = calloc(1, sizeof(*r));
    if (!r)
        return -ENOMEM;
    const char *err;
    int rc = ag_redis_url_parse(o->url, &r->url, &err);
    if (rc < 0) {
        free(r);
        return rc;
    }
    if (!r->url.password[0] && o->password && strlen(o->password) < sizeof(r->url.password))
        snprintf(r->url.password, sizeof(r->url.password), "%s", o->password);
    r->loop = loop;
    r->connect_timeout_ms = o->connect_timeout_ms ? o->connect_timeout_ms : 1000;
    r->command_timeout_ms = o->command_timeout_ms ? o->command_timeout_ms : 1000;
    r->single_attempt = o->single_attempt;
    r->backoff_min_ms = o->backoff_min_ms ? o->backoff_min_ms : 50;
    r->backoff_max_ms = o->backoff_max_ms ? o->backoff_max_ms : 2000;
    if (r->backoff_max_ms < r->backoff_min_ms)
        r->backoff_max_ms = r->backoff_min_ms;
    r->backoff_ms = r->backoff_min_ms;
    r->seed = (uint32_t)(uintptr_t)r ^ (uint32_t)uv_hrtime();
    r->max_pending = o->max_pending ? o->max_pending : 65536;
    r->name = o->name ? o->name : "redis";
    ag_buf_init(&r->in, AG_REDIS_MAX_REPLY + 65536);
    ag_resp_limits_t lim = {.max_bulk = AG_REDIS_MAX_REPLY, .max_nodes = 1u << 20};
    ag_resp_parser_init(&r->parser, &lim);
    uv_timer_init(loop, &r->retry);
    uv_timer_init(loop, &r->tick);
    uv_prepare_init(loop, &r->flush);
    r->retry.data = r->tick.data = r->flush.data = r;
    r->handles = 3;
    r->state = ST_DOWN;
    start_connect(r);
    *out = r;
    return 0;
}

void ag_redis_close(ag_redis_t *r)
{
    if (!r || r->state == ST_CLOSING)
        return;
    drop_conn(r);
    r->state = ST_CLOSING;
    atomic_store_explicit(&r->up, false, memory_order_relaxed);
    fail_all(r, AG_REDIS_ECLOSED);
    uv_close((uv_handle_t *)&r->retry, on_handle_closed);
    uv_close((uv_handle_t *)&r->tick, on_handle_closed);
    uv_close((uv_handle_t *)&r->flush, on_handle_closed);
}

/* ---- one blocking command --------------------------------------------------------- */

typedef struct call_wait {
    bool done;
    int rc;
    ag_resp_t *reply;
} call_wait_t;

static void on_call_reply(void *ctx, int rc, const ag_resp_t *reply)
{
    call_wait_t *w = ctx;
    w->done = true;
    w->rc = rc;
    if (rc == 0 && !(w->reply = ag_resp_dup(reply)))
        w->rc = -ENOMEM;
}

/* A loop and a client of the caller's own: each command runs the loop until
 * its answer, so the caller blocks as it would on a socket of its own. */
struct ag_redis_sync {
    uv_loop_t loop;
    ag_redis_t *r;
    bool broken; /* a command found Redis down: no other goes on this client */
};

int ag_redis_sync_open(const ag_redis_options_t *opts, ag_redis_sync_t **out)
{
    *out = NULL;
    ag_redis_sync_t *s = calloc(1, sizeof(*s));
    if (!s)
        return -ENOMEM;
    int rc = uv_loop_init(&s->loop);
    if (rc < 0) {
        free(s);
        return rc;
    }
    rc = ag_redis_new(&s->loop, opts, &s->r);
    if (rc < 0) {
        ag_redis_sync_close(s);
        return rc;
    }
    *out = s;
    return 0;
}

void ag_redis_sync_close(ag_redis_sync_t *s)
{
    if (!s)
        return;
    ag_redis_close(s->r);
    uv_run(&s->loop, UV_RUN_DEFAULT);
    uv_loop_close(&s->loop);
    free(s);
}

bool ag_redis_sync_broken(const ag_redis_sync_t *s)
{
    return s->broken;
}

static int sync_wait(ag_redis_sync_t *s, int rc, call_wait_t *w, ag_resp_t **reply)
{
    if (rc == 0) {
        while (!w->done && uv_run(&s->loop, UV_RUN_ONCE))
            ;
        rc = w->done ? w->rc : AG_REDIS_EDOWN;
    }
    if (rc == AG_REDIS_EDOWN || rc == AG_REDIS_ETIMEDOUT)
        s->broken = true;
    if (rc < 0) {
        ag_resp_free(w->reply);
        return rc;
    }
    *reply = w->reply;
    return 0;
}

int ag_redis_sync_command(ag_redis_sync_t *s, int argc, const char *const *argv, const size_t *lens,
                          ag_resp_t **reply)
{
    *reply = NULL;
    call_wait_t w = {.rc = AG_REDIS_EDOWN};
    int rc = ag_redis_command(s->r, argc, argv, lens, on_call_reply, &w, NULL);
    return sync_wait(s, rc, &w, reply);
}

int ag_redis_sync_eval(ag_redis_sync_t *s, const ag_redis_script_t *script, int nkeys, int argc,
                       const char *const *argv, const size_t *lens, ag_resp_t **reply)
{
    *reply = NULL;
    call_wait_t w = {.rc = AG_REDIS_EDOWN};
    int rc = ag_redis_eval(s->r, script, nkeys, argc, argv, lens, on_call_reply, &w, NULL);
    return sync_wait(s, rc, &w, reply);
}

int ag_redis_call(const ag_redis_options_t *opts, int argc, const char *const *argv,
                  ag_resp_t **reply)
{
    *reply = NULL;
    ag_redis_sync_t *s;
    int rc = ag_redis_sync_open(opts, &s);
    if (rc == 0)
        rc = ag_redis_sync_command(s, argc, argv, NULL, reply);
    ag_redis_sync_close(s);
    return rc;
}
