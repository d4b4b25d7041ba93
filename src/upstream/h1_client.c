/* SPDX-License-Identifier: MIT
 *
 * h1_client.c: the native HTTP/1.1 client on a worker's libuv loop, as nginx,
 * h2o and HAProxy proxy: uv_tcp connections (TLS for https:// through
 * tls/tls.c's engine, verified, sessions resumed per origin), a keep-alive
 * pool per origin, the request in one write, the response through h1_parse.c,
 * back-pressure by uv_read_stop. It exists because libcurl cost more than half
 * of a proxied request's instructions (issue 15).
 */
#include "util/platform.h"

#include "upstream/h1_client.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "tls/tls.h"
#include "upstream/h1_parse.h"
#include "util/buf.h"
#include "util/errors.h"
#include "util/log.h"

#define READ_BUF 65536 /* also the largest response head */
#define MAX_RESP_HEADERS 128
#define DNS_TTL_MS 30000
#define SWEEP_MS 1000
#define ORIGIN_SESSIONS 8
#define ORIGIN_ADDRS 4

typedef struct conn conn_t;
typedef struct origin origin_t;
typedef struct h1_xfer h1_xfer_t;

enum { C_RESOLVING, C_CONNECTING, C_IDLE, C_BUSY, C_CLOSING };

struct origin {
    char *host;     /* to resolve: no brackets */
    char *hostport; /* the Host header: as in the URL */
    int port;
    bool https;
    void *sessions[ORIGIN_SESSIONS]; /* TLS sessions to resume (tls.h), newest last */
    unsigned nsessions;
    struct sockaddr_storage addrs[ORIGIN_ADDRS]; /* the resolver's order */
    unsigned naddrs;
    unsigned good;       /* the address the last connection reached */
    uint64_t addr_until; /* loop ms; 0: not resolved */
    conn_t *idle;        /* most recently used first */
    unsigned nidle;
    origin_t *next;
};

struct conn {
    uv_tcp_t tcp;
    ag_h1_client_t *c;
    origin_t *o;
    h1_xfer_t *x;  /* the transfer it carries; NULL when idle */
    ag_tls_t *tls; /* https://: the engine; the handshake runs in C_CONNECTING */
    int state;
    unsigned addr_i; /* into o->addrs */
    bool tcp_open;   /* tcp was initialised: close it, not free it */
    bool writing;    /* the request's uv_write has not completed */
    unsigned served;
    uint64_t idle_since;
    char *rbuf;
    size_t rlen;
    uv_connect_t connect_req;
    uv_write_t write_req;
    struct resolve *resolving;
    conn_t *prev, *next; /* in o->idle */
};

typedef struct resolve {
    uv_getaddrinfo_t req;
    conn_t *conn; /* NULL once the connection gave up */
} resolve_t;

struct h1_xfer {
    bool native; /* first: true (see h1_client.h) */
    ag_h1_client_t *c;
    origin_t *o;
    conn_t *conn;
    ag_upstream_done_cb done;
    void *ctx;
    int (*on_data)(void *ctx, int status, ag_str_t headers, const char *data, size_t len);
    ag_buf_t req; /* request line and headers */
    const char *body;
    size_t body_len;
    ag_buf_t head; /* the response head, raw, handed on as the headers */
    ag_buf_t resp_body;
    ag_h1_body_t framing;
    int status;
    size_t head_scan; /* bytes of rbuf already searched for the head's end */
    bool head_done;
    bool streaming;
    bool got_byte;
    bool paused;
    bool pending_done; /* the body ended within the bytes held while paused */
    bool in_callback;
    bool cancelled; /* while in_callback: free once it returns */
    bool kick;      /* in c->kicks */
    bool starting;  /* inside ag__h1_start: an end now is deferred to the loop */
    bool deferred;  /* ended while starting: on_kick calls done */
    int def_error;
    const char *def_text;
    size_t pending; /* decoded bytes at conn->rbuf held while paused */
    int64_t start_us;
    int64_t cpu_us;
    char why[288];                       /* a TLS failure's cause, for error_text */
    uint64_t connect_end, end, idle_end; /* loop ms deadlines; 0: none */
    unsigned idle_ms;
    uv_timer_t *timer;
    h1_xfer_t *prev, *next;
    h1_xfer_t *kick_next;
};

struct ag_h1_client {
    uv_loop_t *loop;
    origin_t *origins;
    h1_xfer_t *xfers;
    h1_xfer_t *kicks; /* resumed transfers with bytes held: delivered from kick_timer */
    unsigned active;
    unsigned handles; /* open handles; memory goes when closing and none is left */
    bool closing;
    bool proxy_env; /* a proxy is configured in the environment: curl honours it */
    bool proxy_env_https;
    char *cipher;    /* ciphertext as read, fed to the engine at once: one per loop */
    h1_xfer_t *io_x; /* the transfer the current read works for, and since when */
    int64_t io_t0;
    uv_timer_t kick_timer;
    uv_timer_t sweep;
};

static void client_unref(ag_h1_client_t *c)
{
    if (--c->handles == 0 && c->closing) {
        while (c->origins) {
            origin_t *o = c->origins;
            c->origins = o->next;
            while (o->nsessions)
                ag_tls_session_free(o->sessions[--o->nsessions]);
            free(o->host);
            free(o->hostport);
            free(o);
        }
        free(c->cipher);
        free(c);
    }
}

static void client_handle_closed(uv_handle_t *h)
{
    client_unref(h->data);
}

/* ---- connections ---- */

static void conn_closed(uv_handle_t *h)
{
    conn_t *k = h->data;
    ag_h1_client_t *c = k->c;
    ag_tls_free(k->tls); /* its queued writes were called back before this */
    free(k->rbuf);
    free(k);
    client_unref(c);
}

static void idle_unlink(conn_t *k)
{
    origin_t *o = k->o;
    if (k->prev)
        k->prev->next = k->next;
    else
        o->idle = k->next;
    if (k->next)
        k->next->prev = k->prev;
    k->prev = k->next = NULL;
    o->nidle--;
}

/* The sessions the server issued on a connection, kept for the next
 * connections (the oldest dropped past ORIGIN_SESSIONS). */
static void sessions_keep(origin_t *o, ag_tls_t *tls)
{
    void *s;
    while ((s = ag_tls_session_take(tls))) {
        if (o->nsessions == ORIGIN_SESSIONS) {
            ag_tls_session_free(o->sessions[0]);
            memmove(o->sessions, o->sessions + 1, --o->nsessions * sizeof(o->sessions[0]));
        }
        o->sessions[o->nsessions++] = s;
    }
}

static void conn_close(conn_t *k)
{
    if (k->state == C_CLOSING)
        return;
    if (k->state == C_IDLE)
        idle_unlink(k);
    k->state = C_CLOSING;
    k->x = NULL;
    if (k->resolving) {
        k->resolving->conn = NULL;
        k->resolving = NULL;
    }
    if (k->tcp_open) {
        if (k->tls) {
            sessions_keep(k->o, k->tls); /* an answer with Connection: close leaves one too */
            ag_tls_shutdown(k->tls);     /* close_notify, as nginx sends */
        }
        uv_close((uv_handle_t *)&k->tcp, conn_closed);
    } else {
        free(k->rbuf);
        free(k);
    }
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    conn_t *k = h->data;
    AG_UNUSED(suggested);
    if (k->tls) {
        buf->base = k->c->cipher;
        buf->len = READ_BUF;
        return;
    }
    buf->base = k->rbuf + k->rlen;
    buf->len = READ_BUF - k->rlen;
}

/* The session a new connection resumes, newest first: a TLS 1.3 ticket
 * leaves the origin (used once, RFC 8446 C.4) while another is left; the
 * last one stays, as curl keeps it, since servers send no new ticket on a
 * resumed connection; a TLS 1.2 session stays. The caller frees *owned after
 * the engine took its own reference. */
static void *session_pick(origin_t *o, void **owned)
{
    *owned = NULL;
    if (!o->nsessions)
        return NULL;
    void *s = o->sessions[o->nsessions - 1];
    if (o->nsessions > 1 && ag_tls_session_single_use(s)) {
        o->nsessions--;
        *owned = s;
    }
    return s;
}

/* Back in the pool, still read: a byte or an EOF there means the server
 * closed it or broke the protocol, and it is dropped at once, before any
 * request is put on it (health by read-readiness, no poll per request). */
static void conn_release(conn_t *k)
{
    ag_h1_client_t *c = k->c;
    origin_t *o = k->o;
    k->x = NULL;
    if (k->tls)
        sessions_keep(o, k->tls);
    if (c->closing || k->writing || k->rlen || (k->tls && ag_tls_pending(k->tls)) ||
        o->nidle >= AG_H1_POOL_IDLE_MAX) {
        conn_close(k);
        return;
    }
    k->state = C_IDLE;
    k->idle_since = uv_now(c->loop);
    k->next = o->idle;
    if (o->idle)
        o->idle->prev = k;
    o->idle = k;
    o->nidle++;
    uv_read_start((uv_stream_t *)&k->tcp, on_alloc, on_read);
}

static void on_sweep(uv_timer_t *t)
{
    ag_h1_client_t *c = t->data;
    uint64_t now = uv_now(c->loop);
    for (origin_t *o = c->origins; o; o = o->next) {
        conn_t *k = o->idle;
        while (k) {
            conn_t *next = k->next;
            if (now - k->idle_since >= AG_H1_POOL_IDLE_MS)
                conn_close(k);
            k = next;
        }
    }
}

/* ---- transfers ---- */

static void on_timer_closed(uv_handle_t *h)
{
    free(h);
}

static void xfer_free(h1_xfer_t *x)
{
    ag_h1_client_t *c = x->c;
    if (x->prev)
        x->prev->next = x->next;
    else
        c->xfers = x->next;
    if (x->next)
        x->next->prev = x->prev;
    c->active--;
    if (c->io_x == x)
        c->io_x = NULL;
    if (x->kick) {
        for (h1_xfer_t **pp = &c->kicks; *pp; pp = &(*pp)->kick_next) {
            if (*pp == x) {
                *pp = x->kick_next;
                break;
            }
        }
    }
    if (x->timer) {
        uv_timer_stop(x->timer);
        uv_close((uv_handle_t *)x->timer, on_timer_closed);
    }
    ag_buf_fini(&x->req);
    ag_buf_fini(&x->head);
    ag_buf_fini(&x->resp_body);
    free(x);
}

static void on_xfer_timer(uv_timer_t *t);
static void on_kick(uv_timer_t *t);

static void xfer_arm(h1_xfer_t *x)
{
    uint64_t next = 0;
    uint64_t cand[3] = {x->conn && x->conn->state <= C_CONNECTING ? x->connect_end : 0, x->end,
                        x->paused ? 0 : x->idle_end};
    for (int i = 0; i < 3; i++)
        if (cand[i] && (!next || cand[i] < next))
            next = cand[i];
    if (!x->timer || x->deferred)
        return;
    if (!next) {
        uv_timer_stop(x->timer);
        return;
    }
    uint64_t now = uv_now(x->c->loop);
    uv_timer_start(x->timer, on_xfer_timer, next > now ? next - now : 0, 0);
}

/* Ends the transfer: the connection goes back to the pool or is closed first,
 * so that `done` may start another transfer on it. */
static void kick(h1_xfer_t *x)
{
    if (!x->kick) {
        x->kick = true;
        x->kick_next = x->c->kicks;
        x->c->kicks = x;
    }
    uv_timer_start(&x->c->kick_timer, on_kick, 0, 0);
}

static void xfer_finish(h1_xfer_t *x, int error, const char *error_text)
{
    ag_h1_client_t *c = x->c;
    if (x->starting) {
        /* A callback never runs inside the call that started its transfer. */
        x->deferred = true;
        x->def_error = error;
        x->def_text = error_text;
        if (x->conn) {
            conn_close(x->conn);
            x->conn = NULL;
        }
        uv_timer_stop(x->timer);
        kick(x);
        return;
    }
    if (c->io_x == x) {
        x->cpu_us += ag_mono_us() - c->io_t0;
        c->io_x = NULL;
    }
    conn_t *k = x->conn;
    x->conn = NULL;
    if (k) {
        if (!error && x->framing.reusable && ag_h1_body_done(&x->framing))
            conn_release(k);
        else
            conn_close(k);
    }
    ag_upstream_response_t resp = {
        .status = x->status,
        .error = error,
        .error_text = error_text,
        .body = ag_str(x->resp_body.data ? x->resp_body.data : "", x->resp_body.len),
        .headers = ag_str(x->head.data ? x->head.data : "", x->head.len),
        .duration_us = ag_mono_us() - x->start_us,
        .cpu_us = x->cpu_us,
    };
    x->done(x->ctx, &resp);
    xfer_free(x);
}

static ssize_t conn_peek(conn_t *k);

static void on_xfer_timer(uv_timer_t *t)
{
    h1_xfer_t *x = t->data;
    uint64_t now = uv_now(x->c->loop);
    const char *why;
    if (x->deferred)
        return;
    if (x->end && now >= x->end)
        why = "upstream timed out";
    else if (x->connect_end && now >= x->connect_end && x->conn && x->conn->state <= C_CONNECTING)
        why = "connecting to upstream timed out";
    else if (x->idle_end && !x->paused && now >= x->idle_end && x->conn && conn_peek(x->conn) > 0) {
        /* Bytes wait that this loop has not read yet (it ran late: timers come
         * before reads in an iteration): the upstream was not idle. */
        x->idle_end = now + x->idle_ms;
        xfer_arm(x);
        return;
    } else if (x->idle_end && !x->paused && now >= x->idle_end)
        why = "no data from upstream within the idle timeout";
    else {
        xfer_arm(x);
        return;
    }
    xfer_finish(x, AG_EUPSTREAM_TIMEOUT, why);
}

static void xfer_alive(h1_xfer_t *x)
{
    x->got_byte = true;
    if (x->idle_ms) {
        x->idle_end = uv_now(x->c->loop) + x->idle_ms;
        xfer_arm(x);
    }
}

static void conn_attach(h1_xfer_t *x, conn_t *k);
static int conn_new(h1_xfer_t *x);
static int conn_alloc(h1_xfer_t *x, unsigned addr_i);

/* What waits unread on the socket, without taking it: > 0 bytes, 0 the
 * server's close, < 0 nothing yet (EAGAIN) or an error (a reset). */
static ssize_t conn_peek(conn_t *k)
{
    uv_os_fd_t fd;
    if (uv_fileno((const uv_handle_t *)&k->tcp, &fd) < 0)
        return -1;
    char b;
    return recv(fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
}

/* A pooled connection is still good when it has nothing to read: a close from
 * the server (a FIN, a reset) or stray bytes the loop has not yet seen would
 * fail the request after it was sent, so such a connection is dropped before
 * any byte goes out, and the next one (or a new one) is used. */
static bool conn_alive(conn_t *k)
{
    return conn_peek(k) < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) &&
           !(k->tls && ag_tls_pending(k->tls));
}

/* The most recently used live connection of the pool, unlinked; NULL: none. */
static conn_t *pool_take(origin_t *o)
{
    while (o->idle) {
        conn_t *k = o->idle;
        idle_unlink(k);
        if (conn_alive(k))
            return k;
        conn_close(k);
    }
    return NULL;
}

/* Once a byte of the request may have gone out, a failure is the caller's to
 * retry (or not): it counts the attempt, and a POST is not ours to repeat. */
static void xfer_fail_io(h1_xfer_t *x, const char *text)
{
    xfer_finish(x, AG_EUPSTREAM, text);
}

/* Calls on_data; @return 0 to go on, 1 when the transfer was cancelled inside,
 * AG_EAGAIN when paused, or another value to abort. */
static int deliver(h1_xfer_t *x, const char *data, size_t len)
{
    x->in_callback = true;
    int rc = x->on_data(x->ctx, x->status, ag_str(x->head.data, x->head.len), data, len);
    x->in_callback = false;
    if (x->cancelled) {
        xfer_free(x);
        return 1;
    }
    return rc;
}

static void xfer_body_end(h1_xfer_t *x)
{
    xfer_finish(x, 0, NULL);
}

/* Hands decoded body bytes on: to on_data when streaming, else to the buffer.
 * @return 0 to go on, 1 when the transfer ended or paused. */
static int body_bytes(h1_xfer_t *x, char *data, size_t len, bool body_done)
{
    if (len == 0)
        return 0;
    if (!x->streaming) {
        if (ag_buf_append(&x->resp_body, data, len) < 0) {
            xfer_finish(x, AG_EUPSTREAM, "response too large");
            return 1;
        }
        return 0;
    }
    int rc = deliver(x, data, len);
    if (rc == 1)
        return 1;
    if (rc == AG_EAGAIN) {
        /* The client is slow: keep these bytes (the caller wants them again on
         * resume), read no more, and do not count the wait as idle. */
        conn_t *k = x->conn;
        if (data != k->rbuf)
            memmove(k->rbuf, data, len);
        k->rlen = 0;
        x->pending = len;
        x->pending_done = body_done;
        x->paused = true;
        uv_read_stop((uv_stream_t *)&k->tcp);
        xfer_arm(x);
        return 1;
    }
    if (rc != 0) {
        xfer_finish(x, AG_EUPSTREAM, "the response was refused by its consumer");
        return 1;
    }
    return 0;
}

/* Finds the end of the head in rbuf, parsing only when CRLFCRLF is in. */
static int head_parse(h1_xfer_t *x, conn_t *k, ag_h1_response_head_t *rh, ag_h1_header_t *hdrs)
{
    size_t from = x->head_scan > 3 ? x->head_scan - 3 : 0;
    bool found = from < k->rlen && memmem(k->rbuf + from, k->rlen - from, "\r\n\r\n", 4);
    x->head_scan = k->rlen;
    if (!found && k->rlen >= 1) {
        /* An early verdict on a bad status line or header, without the end. */
        int rc = ag_h1_parse_response_head(k->rbuf, k->rlen, hdrs, MAX_RESP_HEADERS, rh);
        return rc == AG_EAGAIN || rc > 0 ? AG_EAGAIN : rc;
    }
    return ag_h1_parse_response_head(k->rbuf, k->rlen, hdrs, MAX_RESP_HEADERS, rh);
}

/* Works through the bytes at k->rbuf[0..rlen). */
static void conn_input(h1_xfer_t *x, conn_t *k)
{
    while (!x->head_done) {
        ag_h1_response_head_t rh;
        ag_h1_header_t hdrs[MAX_RESP_HEADERS];
        int rc = head_parse(x, k, &rh, hdrs);
        if (rc == AG_EAGAIN) {
            if (k->rlen == READ_BUF) {
                xfer_finish(x, AG_EUPSTREAM, "upstream response head too large");
                return;
            }
            return;
        }
        if (rc < 0) {
            xfer_finish(x, AG_EUPSTREAM,
                        rc == AG_EHDRTOOBIG ? "upstream response has too many headers"
                                            : "malformed upstream response head");
            return;
        }
        size_t n = (size_t)rc;
        if (rh.status < 200) {
            if (rh.status != 100 && rh.status != 103) {
                xfer_finish(x, AG_EUPSTREAM, "unexpected interim response from upstream");
                return;
            }
            memmove(k->rbuf, k->rbuf + n, k->rlen - n);
            k->rlen -= n;
            x->head_scan = 0;
            continue;
        }
        x->status = rh.status;
        if (ag_buf_append(&x->head, k->rbuf, n) < 0) {
            xfer_finish(x, AG_EUPSTREAM, "out of memory");
            return;
        }
        ag_h1_body_init(&x->framing, &rh, false);
        x->head_done = true;
        x->streaming = x->on_data && rh.status >= 200 && rh.status < 300;
        memmove(k->rbuf, k->rbuf + n, k->rlen - n);
        k->rlen -= n;
    }
    if (k->rlen == 0 && !ag_h1_body_done(&x->framing))
        return;
    size_t len = k->rlen;
    int rc = ag_h1_body_decode(&x->framing, k->rbuf, &len);
    if (rc == AG_EPROTO) {
        k->rlen = 0;
        xfer_finish(x, AG_EUPSTREAM, "malformed upstream response body framing");
        return;
    }
    if (rc > 0)
        x->framing.reusable = false; /* bytes after the answer: we never pipeline */
    k->rlen = 0;
    if (body_bytes(x, k->rbuf, len, rc >= 0))
        return;
    if (rc >= 0)
        xfer_body_end(x);
}

/* The connection ended (err: UV_EOF or the read's error) while x was on it. */
static void conn_eof(h1_xfer_t *x, conn_t *k, int err)
{
    uv_read_stop((uv_stream_t *)&k->tcp);
    if (x->head_done && ag_h1_body_eof(&x->framing) == 0) {
        x->framing.reusable = false; /* close-delimited: it ended with the connection */
        xfer_body_end(x);
    } else if (x->head_done) {
        xfer_finish(x, AG_EUPSTREAM, "upstream closed the connection before the body ended");
    } else {
        xfer_fail_io(x, err == UV_EOF ? "upstream closed the connection without answering"
                                      : uv_strerror(err));
    }
}

static void conn_send(h1_xfer_t *x, conn_t *k);

/* Plaintext out of the engine, through the parser, for as long as the same
 * answer is being read and its consumer takes it (a pause leaves the rest in
 * the engine until on_kick). */
static void tls_drain(conn_t *k)
{
    unsigned served = k->served;
    while (k->state == C_BUSY && k->served == served && k->x && !k->x->paused &&
           k->rlen < READ_BUF) {
        h1_xfer_t *x = k->x;
        int n = ag_tls_read(k->tls, k->rbuf + k->rlen, READ_BUF - k->rlen);
        if (n == 0)
            return;
        if (n == UV_EOF) {
            conn_eof(x, k, UV_EOF);
            return;
        }
        if (n < 0) {
            xfer_finish(x, AG_EUPSTREAM, "upstream TLS protocol error");
            return;
        }
        k->rlen += (size_t)n;
        conn_input(x, k);
    }
}

/* Ciphertext read for x: the handshake advanced (the request goes once it is
 * done), then the plaintext drained. */
static void tls_input(h1_xfer_t *x, conn_t *k, const char *data, size_t len)
{
    if (ag_tls_feed(k->tls, data, len) < 0) {
        ag_tls_failure(k->tls, x->why, sizeof(x->why));
        xfer_fail_io(x, x->why);
        return;
    }
    if (k->state == C_CONNECTING) {
        if (!ag_tls_established(k->tls))
            return;
        conn_send(x, k);
        if (x->conn != k)
            return;
        xfer_arm(x); /* the connect deadline is over */
    }
    tls_drain(k);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    conn_t *k = s->data;
    if (nread == 0)
        return;
    h1_xfer_t *x = k->x;
    if (!x || (k->state != C_BUSY && !(k->tls && k->state == C_CONNECTING))) {
        conn_close(k); /* idle: the server closed it, or sent what nobody asked for */
        return;
    }
    ag_h1_client_t *c = k->c;
    c->io_x = x;
    c->io_t0 = ag_mono_us();
    if (nread < 0 && k->state == C_CONNECTING) {
        snprintf(x->why, sizeof(x->why), "upstream closed the connection in the TLS handshake: %s",
                 uv_strerror((int)nread));
        xfer_fail_io(x, x->why);
    } else if (nread < 0) {
        conn_eof(x, k, (int)nread);
    } else if (k->tls) {
        xfer_alive(x);
        tls_input(x, k, buf->base, (size_t)nread);
    } else {
        xfer_alive(x);
        k->rlen += (size_t)nread;
        conn_input(x, k);
    }
    if (c->io_x) {
        c->io_x->cpu_us += ag_mono_us() - c->io_t0;
        c->io_x = NULL;
    }
}

static void on_write(uv_write_t *w, int status)
{
    conn_t *k = w->data;
    k->writing = false;
    if (k->state == C_CLOSING)
        return;
    h1_xfer_t *x = k->x;
    if (status < 0 && x)
        xfer_fail_io(x, uv_strerror(status));
}

/* Puts the request on the connection: the head and the body in one write. */
static void conn_send(h1_xfer_t *x, conn_t *k)
{
    uv_buf_t bufs[2] = {uv_buf_init(x->req.data, (unsigned)x->req.len),
                        uv_buf_init((char *)(x->body ? x->body : ""), (unsigned)x->body_len)};
    k->state = C_BUSY;
    k->writing = true;
    k->write_req.data = k;
    x->head_scan = 0;
    unsigned nbufs = x->body_len ? 2 : 1;
    int rc = k->tls ? ag_tls_write(k->tls, bufs, nbufs, &k->write_req, on_write, NULL)
                    : uv_write(&k->write_req, (uv_stream_t *)&k->tcp, bufs, nbufs, on_write);
    if (rc < 0) {
        k->writing = false;
        xfer_fail_io(x, k->tls ? "upstream TLS write failed" : uv_strerror(rc));
        return;
    }
    if (k->tls && rc == 0)
        k->writing = false; /* the socket took it all: no callback comes */
    k->served++;
    rc = uv_read_start((uv_stream_t *)&k->tcp, on_alloc, on_read);
    if (rc < 0 && rc != UV_EALREADY)
        xfer_fail_io(x, uv_strerror(rc));
}

static void conn_attach(h1_xfer_t *x, conn_t *k)
{
    x->conn = k;
    k->x = x;
    xfer_arm(x);
}

/* The client context, built once for the process: at start by
 * ag__h1_tls_init when upstream_ca_file is set; else on a thread of its own
 * started with the server when the upstream is https:// (loading the system
 * store takes 25-50 ms here, which neither the start nor a loop should wait
 * for); else on the first https:// transfer. */
static pthread_once_t tls_once = PTHREAD_ONCE_INIT;
static ag_tls_ctx_t *tls_ctx;
static char tls_ctx_error[256];
static char *tls_ca_file;

static void tls_ctx_build(void)
{
    if (ag_tls_client_ctx_new(tls_ca_file, &tls_ctx, tls_ctx_error, sizeof(tls_ctx_error)) < 0)
        ag_log(AG_LOG_ERROR, "upstream TLS: %s", tls_ctx_error);
}

static pthread_t tls_warmer;
static bool tls_warming;

static void *tls_warm_main(void *arg)
{
    AG_UNUSED(arg);
    pthread_once(&tls_once, tls_ctx_build);
    return NULL;
}

void ag__h1_tls_warm(void)
{
    if (!tls_warming)
        tls_warming = pthread_create(&tls_warmer, NULL, tls_warm_main, NULL) == 0;
}

void ag__h1_tls_warm_join(void)
{
    if (tls_warming)
        pthread_join(tls_warmer, NULL);
    tls_warming = false;
}

int ag__h1_tls_init(const char *ca_file, char *err, size_t errlen)
{
    free(tls_ca_file);
    tls_ca_file = ca_file && *ca_file ? strdup(ca_file) : NULL;
    if (!tls_ca_file)
        return 0;
    pthread_once(&tls_once, tls_ctx_build);
    if (!tls_ctx) {
        snprintf(err, errlen, "%s", tls_ctx_error);
        return AG_EBADCONFIG;
    }
    return 0;
}

/* Connected to an https:// origin: the engine made, the ClientHello sent,
 * the answer read by on_read (the connect deadline covers the handshake). */
static void tls_start(h1_xfer_t *x, conn_t *k)
{
    pthread_once(&tls_once, tls_ctx_build);
    if (!tls_ctx) {
        snprintf(x->why, sizeof(x->why), "upstream TLS: %s", tls_ctx_error);
        xfer_fail_io(x, x->why);
        return;
    }
    ag_h1_client_t *c = k->c;
    if (!c->cipher)
        c->cipher = malloc(READ_BUF);
    void *owned;
    void *session = session_pick(k->o, &owned);
    k->tls =
        c->cipher ? ag_tls_client_new(tls_ctx, (uv_stream_t *)&k->tcp, k->o->host, session) : NULL;
    ag_tls_session_free(owned);
    if (!k->tls) {
        xfer_fail_io(x, "out of memory");
        return;
    }
    int rc = uv_read_start((uv_stream_t *)&k->tcp, on_alloc, on_read);
    if (rc == 0)
        rc = ag_tls_feed(k->tls, NULL, 0);
    if (rc < 0) {
        ag_tls_failure(k->tls, x->why, sizeof(x->why));
        xfer_fail_io(x, x->why);
    }
}

static void on_connect(uv_connect_t *req, int status)
{
    conn_t *k = req->data;
    if (k->state == C_CLOSING)
        return;
    h1_xfer_t *x = k->x;
    if (status < 0) {
        unsigned next = k->addr_i + 1;
        if (x && next < k->o->naddrs) {
            /* Refused or unreachable (an IPv6 address without a route): the
             * next address, within the same connect deadline, as curl does. */
            x->conn = NULL;
            k->x = NULL;
            conn_close(k);
            if (conn_alloc(x, next) == 0)
                return;
        }
        if (x)
            xfer_finish(x, AG_EUPSTREAM, uv_strerror(status));
        else
            conn_close(k);
        return;
    }
    k->o->good = k->addr_i;
    uv_tcp_nodelay(&k->tcp, 1);
    if (!x) {
        conn_close(k);
        return;
    }
    if (k->o->https) {
        tls_start(x, k);
        return;
    }
    conn_send(x, k);
    if (x->conn == k)
        xfer_arm(x); /* the connect deadline is over */
}

static void conn_connect(conn_t *k)
{
    ag_h1_client_t *c = k->c;
    h1_xfer_t *x = k->x;
    k->state = C_CONNECTING;
    int rc = uv_tcp_init(c->loop, &k->tcp);
    if (rc == 0) {
        k->tcp.data = k;
        k->tcp_open = true;
        c->handles++;
        k->connect_req.data = k;
        rc = uv_tcp_connect(&k->connect_req, &k->tcp,
                            (const struct sockaddr *)&k->o->addrs[k->addr_i], on_connect);
    }
    if (rc < 0 && x)
        xfer_finish(x, AG_EUPSTREAM, uv_strerror(rc));
}

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    resolve_t *r = req->data;
    conn_t *k = r->conn;
    free(r);
    if (!k) {
        uv_freeaddrinfo(res);
        return;
    }
    k->resolving = NULL;
    h1_xfer_t *x = k->x;
    if (status < 0 || !res) {
        uv_freeaddrinfo(res);
        if (x)
            xfer_finish(x, AG_EUPSTREAM, "could not resolve the upstream host");
        else
            conn_close(k);
        return;
    }
    origin_t *o = k->o;
    o->naddrs = 0;
    o->good = 0;
    for (struct addrinfo *a = res; a && o->naddrs < ORIGIN_ADDRS; a = a->ai_next) {
        if ((a->ai_family != AF_INET && a->ai_family != AF_INET6) ||
            a->ai_addrlen > sizeof(o->addrs[0]))
            continue;
        struct sockaddr_storage *ss = &o->addrs[o->naddrs++];
        memcpy(ss, a->ai_addr, a->ai_addrlen);
        /* sin_port and sin6_port share their place */
        ((struct sockaddr_in *)ss)->sin_port = htons((uint16_t)o->port);
    }
    uv_freeaddrinfo(res);
    if (!o->naddrs) {
        if (x)
            xfer_finish(x, AG_EUPSTREAM, "could not resolve the upstream host");
        else
            conn_close(k);
        return;
    }
    o->addr_until = uv_now(k->c->loop) + DNS_TTL_MS;
    conn_connect(k);
}

/* A connection for x to o->addrs[addr_i], or to be resolved first (state
 * C_RESOLVING). @return the connection, or NULL when memory ran out. */
static conn_t *conn_make(h1_xfer_t *x, unsigned addr_i)
{
    conn_t *k = calloc(1, sizeof(*k));
    if (!k)
        return NULL;
    k->rbuf = malloc(READ_BUF);
    if (!k->rbuf) {
        free(k);
        return NULL;
    }
    k->c = x->c;
    k->o = x->o;
    k->addr_i = addr_i;
    k->state = C_RESOLVING;
    conn_attach(x, k);
    return k;
}

/* A new connection for x to a known address. @return 0 or -ENOMEM. */
static int conn_alloc(h1_xfer_t *x, unsigned addr_i)
{
    conn_t *k = conn_make(x, addr_i);
    if (!k)
        return -ENOMEM;
    conn_connect(k);
    return 0;
}

/* A new connection for x: resolved (numeric hosts at once), then connected. */
static int conn_new(h1_xfer_t *x)
{
    ag_h1_client_t *c = x->c;
    origin_t *o = x->o;
    if (o->addr_until && uv_now(c->loop) < o->addr_until)
        return conn_alloc(x, o->good < o->naddrs ? o->good : 0);
    conn_t *k = conn_make(x, 0);
    if (!k)
        return -ENOMEM;
    resolve_t *r = calloc(1, sizeof(*r));
    if (!r) {
        x->conn = NULL;
        conn_close(k);
        return -ENOMEM;
    }
    r->conn = k;
    r->req.data = r;
    k->resolving = r;
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    int rc = uv_getaddrinfo(c->loop, &r->req, on_resolved, o->host, NULL, &hints);
    if (rc < 0) {
        free(r);
        k->resolving = NULL;
        x->conn = NULL;
        conn_close(k);
        return rc;
    }
    return 0;
}

/* ---- origins and URLs ---- */

typedef struct url_parts {
    const char *host;
    size_t host_len; /* without brackets */
    const char *hostport;
    size_t hostport_len;
    int port;
    const char *path; /* "/..." or "" (then "/") */
    bool https;
} url_parts_t;

static int url_split(const char *url, url_parts_t *u)
{
    u->https = strncasecmp(url, "https://", 8) == 0;
    if (!u->https && strncasecmp(url, "http://", 7) != 0)
        return AG_EDECLINED;
    const char *a = url + (u->https ? 8 : 7), *e = a;
    while (*e && *e != '/' && *e != '?' && *e != '#')
        e++;
    if (e == a || memchr(a, '@', (size_t)(e - a)))
        return AG_EDECLINED;
    u->hostport = a;
    u->hostport_len = (size_t)(e - a);
    u->path = e;
    const char *colon = NULL;
    if (*a == '[') {
        const char *rb = memchr(a, ']', (size_t)(e - a));
        if (!rb)
            return AG_EDECLINED;
        u->host = a + 1;
        u->host_len = (size_t)(rb - a - 1);
        if (rb + 1 < e) {
            if (rb[1] != ':')
                return AG_EDECLINED;
            colon = rb + 1;
        }
    } else {
        colon = memchr(a, ':', (size_t)(e - a));
        u->host = a;
        u->host_len = (size_t)((colon ? colon : e) - a);
    }
    if (u->host_len == 0 || u->host_len > 253)
        return AG_EDECLINED;
    u->port = u->https ? 443 : 80;
    if (colon) {
        int p = 0;
        if (colon + 1 == e)
            return AG_EDECLINED;
        for (const char *q = colon + 1; q < e; q++) {
            if (*q < '0' || *q > '9' || p > 65535)
                return AG_EDECLINED;
            p = p * 10 + (*q - '0');
        }
        if (p == 0 || p > 65535)
            return AG_EDECLINED;
        u->port = p;
    }
    for (const char *q = e; *q; q++) {
        unsigned char ch = (unsigned char)*q;
        if (ch <= 0x20 || ch >= 0x7f || ch == '#')
            return AG_EDECLINED; /* curl would reject or encode it: let it say which */
    }
    return 0;
}

static origin_t *origin_get(ag_h1_client_t *c, const url_parts_t *u)
{
    for (origin_t *o = c->origins; o; o = o->next) {
        if (o->port == u->port && o->https == u->https && strlen(o->host) == u->host_len &&
            strncasecmp(o->host, u->host, u->host_len) == 0 &&
            strlen(o->hostport) == u->hostport_len &&
            memcmp(o->hostport, u->hostport, u->hostport_len) == 0)
            return o;
    }
    origin_t *o = calloc(1, sizeof(*o));
    if (!o)
        return NULL;
    o->host = strndup(u->host, u->host_len);
    o->hostport = strndup(u->hostport, u->hostport_len);
    if (!o->host || !o->hostport) {
        free(o->host);
        free(o->hostport);
        free(o);
        return NULL;
    }
    o->port = u->port;
    o->https = u->https;
    char ip[64];
    if (u->host_len < sizeof(ip)) {
        memcpy(ip, u->host, u->host_len);
        ip[u->host_len] = '\0';
        struct sockaddr_in *s4 = (struct sockaddr_in *)&o->addrs[0];
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&o->addrs[0];
        if (uv_ip4_addr(ip, u->port, s4) == 0 || uv_ip6_addr(ip, u->port, s6) == 0) {
            o->naddrs = 1;
            o->addr_until = UINT64_MAX; /* a literal address never expires */
        }
    }
    o->next = c->origins;
    c->origins = o;
    return o;
}

/* The caller's header lines, with curl's conventions: "Name:" with nothing
 * after it drops the header (callers use it against curl's defaults), and
 * "Name;" sends it empty. Framing headers are ours alone. */
static int append_header(ag_buf_t *b, const char *line)
{
    const char *colon = strchr(line, ':');
    size_t n = strlen(line);
    if (!colon) {
        if (n > 1 && line[n - 1] == ';') {
            ag_buf_append(b, line, n - 1);
            return ag_buf_append(b, ":\r\n", 3);
        }
        return 0;
    }
    const char *v = colon + 1;
    while (*v == ' ' || *v == '\t')
        v++;
    if (*v == '\0')
        return 0;
    ag_str_t name = ag_str(line, (size_t)(colon - line));
    if (ag_str_eq_lit_ci(name, "host") || ag_str_eq_lit_ci(name, "content-length") ||
        ag_str_eq_lit_ci(name, "transfer-encoding") || ag_str_eq_lit_ci(name, "connection"))
        return 0;
    for (size_t i = 0; i < n; i++)
        if (line[i] == '\r' || line[i] == '\n')
            return AG_EINVALID; /* never a header split into two */
    ag_buf_append(b, line, n);
    return ag_buf_append(b, "\r\n", 2);
}

static int build_request(h1_xfer_t *x, const ag_upstream_request_t *req, const url_parts_t *u)
{
    ag_buf_t *b = &x->req;
    const char *path = *u->path ? u->path : "/";
    bool query_only = *path == '?';
    int rc = ag_buf_printf(b, "%s %s%s HTTP/1.1\r\nHost: %s\r\n", req->body ? "POST" : "GET",
                           query_only ? "/" : "", path, x->o->hostport);
    for (size_t i = 0; rc == 0 && i < req->nheaders; i++)
        rc = append_header(b, req->headers[i]);
    if (rc == 0 && req->body)
        rc = ag_buf_printf(b, "Content-Length: %zu\r\n", req->body_len);
    if (rc == 0)
        rc = ag_buf_append(b, "\r\n", 2);
    return rc;
}

/* ---- the interface ---- */

int ag__h1_client_new(uv_loop_t *loop, ag_h1_client_t **out)
{
    ag_h1_client_t *c = calloc(1, sizeof(*c));
    if (!c)
        return -ENOMEM;
    c->loop = loop;
    /* curl takes these from the environment; with one set, curl keeps the
     * transfers (lower case http_proxy only, as curl, against httpoxy). */
    c->proxy_env = getenv("all_proxy") || getenv("ALL_PROXY");
    c->proxy_env_https = c->proxy_env || getenv("https_proxy") || getenv("HTTPS_PROXY");
    c->proxy_env = c->proxy_env || getenv("http_proxy");
    uv_timer_init(loop, &c->kick_timer);
    c->kick_timer.data = c;
    uv_timer_init(loop, &c->sweep);
    c->sweep.data = c;
    c->handles = 2;
    uv_timer_start(&c->sweep, on_sweep, SWEEP_MS, SWEEP_MS);
    uv_unref((uv_handle_t *)&c->sweep);
    *out = c;
    return 0;
}

void ag__h1_client_close(ag_h1_client_t *c)
{
    if (!c)
        return;
    c->closing = true;
    while (c->xfers) {
        h1_xfer_t *x = c->xfers;
        if (x->conn)
            conn_close(x->conn);
        x->conn = NULL;
        xfer_free(x);
    }
    for (origin_t *o = c->origins; o; o = o->next)
        while (o->idle)
            conn_close(o->idle);
    uv_timer_stop(&c->kick_timer);
    uv_timer_stop(&c->sweep);
    uv_close((uv_handle_t *)&c->kick_timer, client_handle_closed);
    uv_close((uv_handle_t *)&c->sweep, client_handle_closed);
}

unsigned ag__h1_active(const ag_h1_client_t *c)
{
    return c ? c->active : 0;
}

int ag__h1_start(ag_h1_client_t *c, const ag_upstream_request_t *req, ag_upstream_done_cb done,
                 void *ctx, ag_upstream_xfer_t **out)
{
    url_parts_t u;
    if (url_split(req->url, &u) < 0 || (u.https ? c->proxy_env_https : c->proxy_env))
        return AG_EDECLINED;
    if (c->closing)
        return AG_EUPSTREAM;
    h1_xfer_t *x = calloc(1, sizeof(*x));
    if (!x)
        return -ENOMEM;
    x->native = true;
    x->c = c;
    x->done = done;
    x->ctx = ctx;
    x->on_data = req->on_data;
    x->body = req->body;
    x->body_len = req->body_len;
    x->start_us = ag_mono_us();
    ag_buf_init(&x->req, 1u << 20);
    ag_buf_init(&x->head, READ_BUF);
    ag_buf_init(&x->resp_body, req->max_response_bytes ? req->max_response_bytes : 16u << 20);
    x->o = origin_get(c, &u);
    int rc = x->o ? build_request(x, req, &u) : -ENOMEM;
    if (rc == 0) {
        x->timer = malloc(sizeof(*x->timer));
        rc = x->timer ? 0 : -ENOMEM;
    }
    if (rc < 0) {
        free(x->timer);
        ag_buf_fini(&x->req);
        ag_buf_fini(&x->head);
        ag_buf_fini(&x->resp_body);
        free(x);
        return rc;
    }
    uv_timer_init(c->loop, x->timer);
    x->timer->data = x;
    uint64_t now = uv_now(c->loop);
    if (req->connect_timeout_ms)
        x->connect_end = now + req->connect_timeout_ms;
    if (req->timeout_ms)
        x->end = now + req->timeout_ms;
    x->idle_ms = req->idle_timeout_ms;
    if (x->idle_ms)
        x->idle_end = now + x->idle_ms;
    x->next = c->xfers;
    if (c->xfers)
        c->xfers->prev = x;
    c->xfers = x;
    c->active++;
    x->starting = true;
    conn_t *k = pool_take(x->o);
    if (k) {
        k->state = C_BUSY;
        conn_attach(x, k);
        conn_send(x, k);
    } else {
        rc = conn_new(x);
        if (rc < 0) {
            xfer_free(x);
            return rc;
        }
    }
    x->starting = false;
    if (out)
        *out = (ag_upstream_xfer_t *)x;
    return 0;
}

void ag__h1_cancel(ag_upstream_xfer_t *ux)
{
    h1_xfer_t *x = (h1_xfer_t *)ux;
    if (x->in_callback) {
        x->cancelled = true;
        return;
    }
    if (x->conn)
        x->conn->x = NULL;
    conn_t *k = x->conn;
    x->conn = NULL;
    if (k)
        conn_close(k); /* mid-answer: not reusable */
    xfer_free(x);
}

/* Resumed transfers get their held bytes from the loop, not inside resume:
 * the caller resumes from its own write callback and may not expect the
 * stream (or its end) to come back into it there. */
static void on_kick(uv_timer_t *t)
{
    ag_h1_client_t *c = t->data;
    /* One at a time from the list itself: a callback may cancel any of them. */
    while (c->kicks) {
        h1_xfer_t *x = c->kicks;
        c->kicks = x->kick_next;
        x->kick = false;
        x->kick_next = NULL;
        if (x->deferred) {
            x->deferred = false;
            xfer_finish(x, x->def_error, x->def_text);
            continue;
        }
        if (x->paused || !x->conn)
            continue; /* paused again meanwhile */
        conn_t *k = x->conn;
        size_t len = x->pending;
        bool body_done = x->pending_done;
        x->pending = 0;
        c->io_x = x;
        c->io_t0 = ag_mono_us();
        if (body_bytes(x, k->rbuf, len, body_done) == 0) {
            if (body_done) {
                xfer_body_end(x);
            } else {
                uv_read_start((uv_stream_t *)&k->tcp, on_alloc, on_read);
                if (k->tls)
                    tls_drain(k); /* records read before the pause */
            }
        }
        if (c->io_x) {
            c->io_x->cpu_us += ag_mono_us() - c->io_t0;
            c->io_x = NULL;
        }
    }
}

void ag__h1_resume(ag_upstream_xfer_t *ux)
{
    h1_xfer_t *x = (h1_xfer_t *)ux;
    if (!x->paused)
        return;
    x->paused = false;
    if (x->idle_ms)
        x->idle_end = uv_now(x->c->loop) + x->idle_ms;
    xfer_arm(x);
    kick(x);
}
