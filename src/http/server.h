/* SPDX-License-Identifier: MIT
 *
 * server.h: the HTTP/1.1 server. N worker threads, each with its own libuv
 * loop and SO_REUSEPORT listener (or, after a binary upgrade, the ones the old
 * process handed over), so no lock sits on the request path. A
 * handler gets an ag_req_t and answers it, at once or later from its loop.
 * The server knows HTTP, not the gateway's policy: headers every response
 * carries (CORS) are handed to it, and each finished request is reported once,
 * as a record (obs/record.h), through the request_done hook.
 */
#ifndef AG_HTTP_SERVER_H
#define AG_HTTP_SERVER_H

#include <stdbool.h>
#include <stdint.h>

#include <uv.h>

#include "http/parser.h"
#include "obs/record.h"
#include "util/buf.h"
#include "util/pool.h"

/* tls/tls.h's context, opaque here: the layers above use it by pointer. */
typedef struct ag_tls_ctx ag_tls_ctx_t;
#include "util/str.h"

typedef struct ag_server ag_server_t;
typedef struct ag_worker ag_worker_t;
typedef struct ag_conn ag_conn_t;
typedef struct ag_req ag_req_t;

typedef struct ag_server_limits {
    size_t max_header_bytes;  /* request line + headers; over it: 431 */
    size_t max_body_bytes;    /* over it: 413 */
    unsigned max_connections; /* over it: 503 and close */
    unsigned header_timeout_ms;
    unsigned idle_timeout_ms;
    unsigned body_timeout_ms;  /* no body byte for this long: 408 */
    unsigned body_deadline_ms; /* the whole body within this; 0: none */
    unsigned body_min_rate;    /* bytes/s: the body may take body_timeout plus one second
                                * per body_min_rate bytes received; 0: no minimum */
    unsigned send_timeout_ms;  /* no write progress for this long: close; 0: none */
    size_t max_queued_bytes;   /* answer bytes queued per connection before reading pauses */
    unsigned max_connections_per_client; /* per client identity (IPv6: per prefix); 0: none */
    unsigned ipv6_prefix;                /* bits of an IPv6 address that make a client */
    unsigned drain_timeout_ms;
} ag_server_limits_t;

/** Called on the worker's loop thread for each complete request. The handler
 *  must eventually call one of the ag_req_respond*() functions exactly once
 *  (or start a stream and end it), from the same thread. */
typedef void (*ag_request_handler)(ag_req_t *req);

/** Per-worker hooks: init runs on the worker thread before it serves, fini
 *  after its loop stopped. Each returns/takes the worker's handler context. */
typedef struct ag_server_hooks {
    int (*worker_init)(ag_worker_t *w, void *server_ctx, void **worker_ctx);
    void (*worker_fini)(ag_worker_t *w, void *worker_ctx);
    void (*worker_drain)(ag_worker_t *w, void *worker_ctx); /* shutdown began */
    ag_request_handler handle;
    /* Exactly once per request that reached a handler or got an error answer
     * from the server, on the worker's thread, after the response was written
     * or the client went away, and before the request's pool is cleared. */
    void (*request_done)(void *worker_ctx, const ag_request_record_t *rec);
    /* The server's own error answers (400, 408, 413, 431...) in the shape the
     * request's path speaks (req->head.path may be empty: the head did not
     * parse). NULL: {"error": msg}. Must answer with ag_req_respond(). */
    void (*respond_error)(void *server_ctx, ag_req_t *req, int status, const char *msg);
    void *server_ctx;
} ag_server_hooks_t;

typedef struct ag_server_options {
    const char *host;
    int port; /* 0: ephemeral */
    unsigned threads;
    ag_server_limits_t limits;
    ag_server_hooks_t hooks;
    /* "Name: value\r\n" lines every response carries, the server's own error
     * answers included (the gateway's CORS headers); copied; NULL for none. */
    const char *default_headers;
    /* Peers whose connections max_connections_per_client does not count (the
     * proxies every client comes through); NULL: none. Any thread. */
    bool (*client_exempt)(void *ctx, const char *peer_ip);
    void *client_exempt_ctx;
    /* Folder of the listen locks (one file per address, holding the pid): a
     * second aigate on an address another holds fails instead of sharing it
     * through SO_REUSEPORT. NULL: no lock (the probe bind still runs).
     * Borrowed during ag_server_start() only. */
    const char *lock_dir;
    int *holder_pid; /* out, may be NULL: on -EADDRINUSE, the other aigate's pid, or 0 */
    /* HTTPS on every connection with this context (the server takes its own
     * reference); NULL: plain HTTP. Whether a server speaks TLS is fixed for
     * its life; the context can be replaced (ag_server_set_tls). */
    ag_tls_ctx_t *tls;
    /* A binary upgrade's handover: the old process's listening sockets,
     * inherited across exec. When they are on host:port (port 0: any), the
     * server listens on them instead of binding (worker i takes i, i +
     * threads, ...; a worker left without binds one more SO_REUSEPORT socket),
     * and the address check above is skipped; otherwise they are closed and
     * the address is bound anew. Owned by the server from the call on, failed
     * or not; the array is borrowed during the call. */
    const int *inherit_fds;
    unsigned ninherit;
    int inherit_lock_fd; /* > 0: the old process's listen lock, kept with its sockets */
} ag_server_options_t;

/** A request. Owned by its connection; the pool dies when the response is done.
 *
 *  Lifetime: a call that ends the response (ag_req_respond(), ag_req_respond_error(),
 *  ag_req_stream_end()) may finish the request before it returns: the record is
 *  delivered, the pool is cleared and the ag_req_t is reused for the connection's
 *  next request. After such a call, touch neither the request nor anything in its
 *  pool. Debug builds poison cleared pool memory, so such a use fails the ASan suite. */
struct ag_req {
    ag_pool_t pool;
    ag_conn_t *conn;
    ag_worker_t *worker;
    ag_http_request_head_t head;
    ag_str_t body;    /* the whole body (Content-Length or de-chunked), in conn memory */
    char id[24];      /* request id, also sent as x-request-id */
    char peer_ip[64]; /* the socket's peer address, text */
    char client[64];  /* who the client is: peer_ip unless the handler knows better */
    int64_t start_us; /* monotonic */
    int64_t start_wall_us;
    const char *route;               /* set by the handler for the record: the route served */
    ag_ai_record_t ai;               /* the handler's slot in the record */
    void *handler_data;              /* the handler's own per-request state */
    void (*on_abort)(ag_req_t *req); /* the client went away before the response ended */
    bool no_default_headers;         /* the handler sends its own (per-route CORS) instead */
    /* private */
    struct ag_req_header *_extra; /* extra response headers, pool-owned */
    int _status;
    size_t _bytes_out;
    int64_t _cpu_us; /* measured CPU segments, before the worker's scale */
    bool _responded;
    bool _streaming;
    bool _head_only;
    bool _aborted;
    bool _cut; /* closed by the server (a drain that ran out or was cut), not the client */
};

/** True when the server, not the client, ended the request (a drain cut). */
static inline bool ag_req_cut_by_server(const ag_req_t *req)
{
    return req->_cut;
}

/** Starts the server: binds and starts the worker threads. The caller then waits
 *  with ag_server_wait(). @return 0 or a negative errno / AG_E* code. */
int ag_server_start(const ag_server_options_t *opts, ag_server_t **out);

/** New connections start on ctx from now on (a reload's certificate); the
 *  open ones keep theirs. The server takes its own reference. Any thread.
 *  @return 0, or -EINVAL when the server was started without TLS. */
int ag_server_set_tls(ag_server_t *srv, ag_tls_ctx_t *ctx);
/** The listening sockets, for a binary upgrade to hand over: up to max fds
 *  into out (they stay the server's, and close when its drain begins).
 *  @return how many. */
unsigned ag_server_listen_fds(const ag_server_t *srv, int *out, unsigned max);

/** The listen lock's fd (held for the server's life), or -1. */
int ag_server_lock_fd(const ag_server_t *srv);

/** The port actually bound (useful with port 0). */
int ag_server_port(const ag_server_t *srv);

/** Open connections now (any thread). */
unsigned ag_server_connections(const ag_server_t *srv);

/** Begins a graceful shutdown: stop accepting, finish in-flight requests (at most
 *  the drain timeout), then the workers stop. Thread-safe, async-signal-unsafe. */
void ag_server_shutdown(ag_server_t *srv);

/** The drain after a binary upgrade handed the listeners over: as
 *  ag_server_shutdown(), but idle keep-alive connections are not closed at
 *  once; each ends after one more answer (Connection: close), or at the idle
 *  or drain timeout. Thread-safe. */
void ag_server_handover(ag_server_t *srv);

/** A second stop: the drain is cut short, every connection still open is
 *  closed now (each request it had is reported, aborted). Thread-safe. */
void ag_server_cut(ag_server_t *srv);

/** Joins the workers (they stop after a shutdown); the server stays readable. */
void ag_server_wait(ag_server_t *srv);
/** Joins the workers if need be and frees the server. */
void ag_server_free(ag_server_t *srv);
void ag_server_wait_and_free(ag_server_t *srv);

uv_loop_t *ag_worker_loop(ag_worker_t *w);
void *ag_worker_ctx(ag_worker_t *w);
unsigned ag_worker_index(const ag_worker_t *w);

/** Adds CPU time spent for the request outside the server's own callbacks
 *  (the handler's upstream callbacks, measured by the handler). */
void ag_req_cpu_add(ag_req_t *req, int64_t us);

/** Header lookup on the request (case-insensitive): the first line named so. */
ag_str_t ag_req_header(const ag_req_t *req, const char *name);

/** Every line of a header, in the order received, into out[0..max): for the
 *  headers that are one list over all their lines (RFC 9110 5.3), such as
 *  X-Forwarded-For. With more than max lines, the last max (a proxy appends
 *  its line after the client's). @return the lines stored. */
size_t ag_req_header_all(const ag_req_t *req, const char *name, ag_str_t *out, size_t max);

/** Extra response header for the next respond call; name and value are copied. */
void ag_req_add_header(ag_req_t *req, const char *name, ag_str_t value);

/** Sends a complete response; body bytes are copied. */
void ag_req_respond(ag_req_t *req, int status, const char *content_type, ag_str_t body);

/** Sends {"error": msg} with the given status. */
void ag_req_respond_error(ag_req_t *req, int status, const char *msg);

/** Streaming (chunked) responses. write returns 0, or a negative code when the client
 *  is gone; the return of ag_req_stream_write is the bytes now queued and not yet
 *  written to the socket, for back-pressure. `drain` is called when the queue empties. */
void ag_req_stream_start(ag_req_t *req, int status, const char *content_type);
int ag_req_stream_write(ag_req_t *req, const char *data, size_t len, size_t *queued);
void ag_req_stream_end(ag_req_t *req);
void ag_req_on_drain(ag_req_t *req, void (*fn)(ag_req_t *req, void *data), void *data);

#endif
