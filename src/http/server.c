/* SPDX-License-Identifier: MIT
 *
 * server.c: workers, listeners, connections, timeouts, the response writer
 * and graceful shutdown. One request per connection is handled at a time;
 * pipelined requests wait in the read buffer, so responses stay in order.
 */
#include "util/platform.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdatomic.h>
#include <stddef.h>
#include <string.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "http/addr.h"
#include "http/server.h"
#include "tls/tls.h"
#include "util/errors.h"
#include "util/fmt.h"
#include "util/http_reason.h"
#include "util/json.h"
#include "util/log.h"

#define MAX_HEADERS 100
#define READ_CHUNK 16384
/* Room for the start of a pipelined request beyond the current one. */
#define PIPELINE_SLACK 16384
/* Read buffers of this capacity are kept per worker and lent to connections
 * while they have a request, so an idle keep-alive connection holds none. */
#define BUF_CACHE 256
#define BUF_CACHE_CAP 32768
/* Connections over a cap linger to deliver their 503 (an immediate close with
 * the request unread would send RST and destroy it); past this many at once
 * per worker, a flood gets the plain close. */
#define BUSY_LINGER_MAX 256
#define BUSY_LINGER_MS 1000

/* Open connections per client identity, across workers: striped locks, taken
 * once per accept and once per close, never per request. */
#define CLIENT_STRIPES 64
#define CLIENT_BUCKETS 4096

typedef struct client_slot {
    struct client_slot *next;
    unsigned count;
    char key[AG_ADDR_TEXT];
} client_slot_t;

typedef enum { CONN_HEAD, CONN_BODY, CONN_ACTIVE } conn_state_t;

struct ag_server {
    ag_server_options_t opts;
    char *default_headers; /* owned copy of opts.default_headers */
    size_t default_headers_len;
    char *busy_response; /* the 503 for connections over the cap */
    size_t busy_response_len;
    char host[256];
    int port;
    unsigned nworkers;
    ag_worker_t *workers;
    atomic_uint connections;
    atomic_bool shutting_down;
    atomic_bool cut;       /* a second stop signal: close what the drain still waits for */
    atomic_bool keep_idle; /* a handover's drain: idle connections wait for one more answer */
    int lock_fd;           /* the listen lock, held for the server's life; -1: none */
    bool tls;              /* HTTPS: every worker has a TLS context (ag_server_set_tls swaps it) */
    /* Guards each worker's wakeup against a send after its close: a stop
     * signal may come when some workers have already stopped. */
    uv_mutex_t wake_lock;
    uv_mutex_t client_locks[CLIENT_STRIPES];
    client_slot_t *clients[CLIENT_BUCKETS];
};

struct ag_worker {
    ag_server_t *srv;
    unsigned index;
    uv_loop_t loop;
    /* Its own SO_REUSEPORT socket; after a binary upgrade, the inherited ones
     * (worker i serves i, i + threads, ...), so that none is left unserved. */
    uv_tcp_t *listeners;
    int *listen_fds;
    unsigned nlisteners;
    unsigned listeners_open; /* not yet closed */
    uv_async_t wakeup;
    uv_timer_t drain_timer;
    uv_thread_t thread;
    void *ctx;
    ag_conn_t *conns;
    unsigned nconns;
    uint64_t seq;
    uint32_t id_prefix;
    char *buf_cache[BUF_CACHE]; /* idle connections' read buffers, for reuse */
    unsigned nbuf_cache;
    ag_pool_cache_t pool_cache; /* and their pools' first chunks */
    uv_prepare_t cpu_sample;
    double cpu_scale;    /* thread CPU time per measured µs, smoothed */
    int64_t sample_mono; /* when the thread CPU clock was last read */
    int64_t sample_cpu;
    int64_t measured_us; /* request time measured since then */
    unsigned nbusy;      /* over-cap connections lingering to deliver their 503 */
    /* Where lingering connections' input is read to be dropped. Per worker, not
     * one static buffer: the kernel's writes into it are a data race between
     * threads (TSan reports them), harmless or not. */
    char discard[16384];
    /* HTTPS: the context new connections start on, replaced by a reload
     * under tls_lock (uncontended: taken once per accept by this worker). */
    ag_tls_ctx_t *tls;
    uv_mutex_t tls_lock;
    bool draining;
    bool joined;
    bool stopped;
    bool wakeup_closed; /* under srv->wake_lock */
    int init_rc;
    char date[40];
    uint64_t date_sec;
};

typedef struct stream_write {
    uv_write_t wr;
    ag_conn_t *conn;
    size_t len;
    char data[];
} stream_write_t;

struct ag_conn {
    uv_tcp_t tcp;
    uv_timer_t timer;
    ag_worker_t *w;
    ag_conn_t *prev, *next;
    ag_buf_t in;
    conn_state_t state;
    size_t head_len;
    size_t parsed_len; /* bytes the head parser saw when it last asked for more */
    size_t body_len;   /* Content-Length, or decoded bytes so far when chunked */
    size_t leftover;   /* chunked: pipelined bytes after the body */
    ag_chunked_decoder_t chunked;
    ag_http_header_t *headers; /* MAX_HEADERS entries from the request pool */
    ag_req_t req;
    uv_write_t write_req;
    uv_write_t continue_req;
    uv_buf_t write_bufs[2];
    void (*drain_fn)(ag_req_t *req, void *data);
    void *drain_data;
    size_t queued; /* stream bytes handed to libuv and not yet written */
    int writes_in_flight;
    int closes_pending;
    bool keep_alive;
    bool closing;
    bool reading;
    bool in_process;
    bool response_done; /* the current response is fully written */
    bool continue_sent;
    bool timer_is_header;
    bool peer_eof;
    bool lingering; /* response sent, write side shut, discarding input until EOF */
    bool timing;    /* a CPU segment of this connection's request is being measured */
    int64_t seg_start;
    int64_t body_start_us; /* monotonic: when the head was complete */
    size_t send_mark;      /* write queue size when the send timer was armed */
    bool send_timing;      /* the timer watches write progress */
    bool raw_stream;       /* HTTP/1.0 stream: no chunked coding, the close ends it */
    bool busy;             /* over a cap: 503, linger, close */
    bool gone;             /* a stream write failed: the close (and abort) is due */
    client_slot_t *slot;   /* counted against max_connections_per_client */
    uv_shutdown_t shutdown_req;
    /* HTTPS only (NULL otherwise): the engine, and the idle handle that reads
     * the plaintext it still holds when reading resumes (that data never
     * comes back from the socket). */
    ag_tls_t *tls;
    uv_idle_t *tls_pump;
};

static void conn_close(ag_conn_t *c);
static void conn_process(ag_conn_t *c);
static void conn_finish_request(ag_conn_t *c);
static void worker_maybe_stop(ag_worker_t *w);

/* ---- small helpers ---------------------------------------------------- */

static const char *status_text(int status)
{
    const char *r = ag_http_reason(status);
    return r ? r : "Unknown";
}

/* Views of a head point into the read buffer, which may move (grow) while the
 * head is incomplete; on_alloc re-points only a complete head's. So a head
 * has views only once it parsed: anything the parser left in an incomplete
 * or bad one is dropped here, and nothing (the 408's record, say) can read
 * through a view into a freed buffer. */
static void head_forget(ag_req_t *req)
{
    memset(&req->head, 0, sizeof(req->head));
    req->head.content_length = -1;
}

static void worker_update_date(ag_worker_t *w)
{
    int64_t now = ag_now_us();
    uint64_t sec = (uint64_t)(now / 1000000);
    if (sec == w->date_sec)
        return;
    w->date_sec = sec;
    time_t t = (time_t)sec;
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(w->date, sizeof(w->date), "%a, %d %b %Y %H:%M:%S GMT", &tm);
}

/* ---- CPU time of a request -------------------------------------------------
 * A request's CPU time is the sum of the on-CPU segments of work done for it
 * (parsing and the handler's synchronous part, responses sent later, the
 * upstream's share), each timed with the monotonic clock, scaled by what the
 * worker's thread CPU clock says those segments really cost. Reading the
 * thread CPU clock is a system call, so it is read at most once a millisecond
 * per worker, never per request. */

static int64_t thread_cpu_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static bool seg_begin(ag_conn_t *c)
{
    if (c->timing)
        return false;
    c->timing = true;
    c->seg_start = ag_mono_us();
    return true;
}

static void seg_end(ag_conn_t *c, bool began)
{
    if (!began)
        return;
    int64_t d = ag_mono_us() - c->seg_start;
    c->req._cpu_us += d;
    c->w->measured_us += d;
    c->timing = false;
}

void ag_req_cpu_add(ag_req_t *req, int64_t us)
{
    if (us <= 0)
        return;
    req->_cpu_us += us;
    req->worker->measured_us += us;
}

static void on_cpu_sample(uv_prepare_t *p)
{
    ag_worker_t *w = p->data;
    int64_t now = ag_mono_us();
    if (now - w->sample_mono < 1000)
        return;
    int64_t cpu = thread_cpu_us();
    if (w->measured_us >= 200) {
        double ratio = (double)(cpu - w->sample_cpu) / (double)w->measured_us;
        ratio = ratio < 0.25 ? 0.25 : ratio > 4 ? 4 : ratio;
        w->cpu_scale = 0.8 * w->cpu_scale + 0.2 * ratio;
    }
    w->sample_mono = now;
    w->sample_cpu = cpu;
    w->measured_us = 0;
}

uv_loop_t *ag_worker_loop(ag_worker_t *w)
{
    return &w->loop;
}

void *ag_worker_ctx(ag_worker_t *w)
{
    return w->ctx;
}

unsigned ag_worker_index(const ag_worker_t *w)
{
    return w->index;
}

int ag_server_port(const ag_server_t *srv)
{
    return srv->port;
}

unsigned ag_server_connections(const ag_server_t *srv)
{
    return atomic_load_explicit(&((ag_server_t *)srv)->connections, memory_order_relaxed);
}

ag_str_t ag_req_header(const ag_req_t *req, const char *name)
{
    const ag_http_header_t *h = ag_http_find_header(&req->head, name);
    return h ? h->value : AG_STR_NULL;
}

size_t ag_req_header_all(const ag_req_t *req, const char *name, ag_str_t *out, size_t max)
{
    size_t n = strlen(name), k = 0;
    if (max == 0)
        return 0;
    for (size_t i = 0; i < req->head.num_headers; i++) {
        const ag_http_header_t *h = &req->head.headers[i];
        if (h->name.len != n || strncasecmp(h->name.ptr, name, n) != 0)
            continue;
        if (k == max) {
            memmove(out, out + 1, (max - 1) * sizeof(*out));
            k--;
        }
        out[k++] = h->value;
    }
    return k;
}

/* ---- the record of a finished request ---------------------------------- */

/* The record shows the parser's headers through its own type. */
_Static_assert(sizeof(ag_record_header_t) == sizeof(ag_http_header_t) &&
                   offsetof(ag_record_header_t, value) == offsetof(ag_http_header_t, value),
               "record headers are the parser's headers");

static void request_report(ag_req_t *req)
{
    ag_worker_t *w = req->worker;
    if (!w->srv->opts.hooks.request_done)
        return;
    ag_conn_t *c = req->conn;
    ag_request_record_t rec = {
        .id = req->id,
        .method = req->head.method,
        .path = req->head.path,
        .target = req->head.target,
        .host = req->head.host,
        .headers = (const ag_record_header_t *)req->head.headers,
        .nheaders = req->head.headers ? req->head.num_headers : 0,
        .route = req->route,
        .client = req->client,
        .status = req->_status,
        .bytes_in = c->head_len + c->body_len,
        .bytes_out = req->_bytes_out,
        .start_us = req->start_wall_us,
        .duration_us = ag_mono_us() - req->start_us,
        .cpu_us = (int64_t)((double)(req->_cpu_us + (c->timing ? ag_mono_us() - c->seg_start : 0)) *
                            w->cpu_scale),
        .aborted = req->_aborted,
        .ai = req->ai,
    };
    w->srv->opts.hooks.request_done(w->ctx, &rec);
}

/* ---- writing ------------------------------------------------------------ */

static void conn_set_timer(ag_conn_t *c, unsigned ms, bool header);
static void conn_start_reading(ag_conn_t *c);

static size_t conn_write_queue(ag_conn_t *c)
{
    return uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp);
}

/* A client that stops reading must not hold its slot and its answer forever:
 * with bytes waiting to be written, no progress for send_timeout closes the
 * connection. Progress is the write queue shrinking, which libuv updates on
 * every partial write. */
static void on_send_timer(uv_timer_t *t)
{
    ag_conn_t *c = t->data;
    unsigned ms = c->w->srv->opts.limits.send_timeout_ms;
    size_t q = conn_write_queue(c);
    if (c->closing || c->lingering || c->state != CONN_ACTIVE || (q == 0 && !c->writes_in_flight)) {
        c->send_timing = false;
        return;
    }
    if (q < c->send_mark) {
        c->send_mark = q;
        uv_timer_start(&c->timer, on_send_timer, ms, 0);
        return;
    }
    ag_log_debug("request %s: no write progress for %u ms with %zu bytes queued: closing",
                 c->req.id, ms, q);
    c->send_timing = false;
    conn_close(c);
}

/* After `added` bytes were queued: watch their progress, and stop reading the
 * client's next requests while more than max_queued_bytes wait for it. */
static void conn_queued(ag_conn_t *c, size_t added)
{
    const ag_server_limits_t *lim = &c->w->srv->opts.limits;
    if (c->closing || c->lingering || c->state != CONN_ACTIVE)
        return;
    /* The mark grows with what is added, so the queue is below it exactly
     * when something was written since the timer was armed. */
    if (c->send_timing)
        c->send_mark += added;
    if (lim->send_timeout_ms && !c->send_timing) {
        c->send_timing = true;
        c->send_mark = conn_write_queue(c);
        uv_timer_start(&c->timer, on_send_timer, lim->send_timeout_ms, 0);
    }
    if (c->reading && lim->max_queued_bytes && conn_write_queue(c) > lim->max_queued_bytes) {
        uv_read_stop((uv_stream_t *)&c->tcp);
        c->reading = false;
    }
}

/* After a write completed: read again once the queue is back under the cap. */
static void conn_dequeued(ag_conn_t *c)
{
    const ag_server_limits_t *lim = &c->w->srv->opts.limits;
    if (c->closing || c->lingering || c->reading || c->peer_eof || c->state != CONN_ACTIVE)
        return;
    if (!lim->max_queued_bytes || conn_write_queue(c) <= lim->max_queued_bytes)
        conn_start_reading(c);
}

static void on_response_written(uv_write_t *wr, int status)
{
    ag_conn_t *c = wr->data;
    c->writes_in_flight--;
    if (status < 0) {
        c->keep_alive = false;
        c->req._aborted = true;
    }
    c->response_done = true;
    if (!c->in_process)
        conn_finish_request(c);
}

/* Queues bufs; completes synchronously when the socket takes everything. */
static void conn_write_response(ag_conn_t *c, uv_buf_t *bufs, unsigned nbufs)
{
    if (c->closing) {
        c->response_done = true;
        return;
    }
    if (c->tls) {
        size_t queued = 0;
        c->write_req.data = c;
        int rc = ag_tls_write(c->tls, bufs, nbufs, &c->write_req, on_response_written, &queued);
        if (rc == 1) {
            c->writes_in_flight++;
            conn_queued(c, queued);
            return;
        }
        if (rc < 0)
            c->keep_alive = false;
        c->response_done = true;
        if (!c->in_process)
            conn_finish_request(c);
        return;
    }
    int n = uv_try_write((uv_stream_t *)&c->tcp, bufs, nbufs);
    size_t total = 0;
    for (unsigned i = 0; i < nbufs; i++)
        total += bufs[i].len;
    size_t written = n > 0 ? (size_t)n : 0;
    if (n < 0 && n != UV_EAGAIN) {
        c->keep_alive = false;
        c->response_done = true;
        if (!c->in_process)
            conn_finish_request(c);
        return;
    }
    if (written == total) {
        c->response_done = true;
        if (!c->in_process)
            conn_finish_request(c);
        return;
    }
    unsigned k = 0;
    for (unsigned i = 0; i < nbufs; i++) {
        if (written >= bufs[i].len) {
            written -= bufs[i].len;
            continue;
        }
        c->write_bufs[k] = uv_buf_init(bufs[i].base + written, (unsigned)(bufs[i].len - written));
        written = 0;
        k++;
    }
    c->write_req.data = c;
    c->writes_in_flight++;
    int rc = uv_write(&c->write_req, (uv_stream_t *)&c->tcp, c->write_bufs, k, on_response_written);
    if (rc < 0) {
        c->writes_in_flight--;
        c->keep_alive = false;
        c->response_done = true;
        if (!c->in_process)
            conn_finish_request(c);
        return;
    }
    size_t left = 0;
    for (unsigned i = 0; i < k; i++)
        left += c->write_bufs[i].len;
    conn_queued(c, left);
}

struct ag_req_header {
    struct ag_req_header *next;
    const char *name;
    ag_str_t value;
};

void ag_req_add_header(ag_req_t *req, const char *name, ag_str_t value)
{
    struct ag_req_header *h = ag_pool_alloc(&req->pool, sizeof(*h));
    h->name = ag_pool_strndup(&req->pool, name, strlen(name));
    h->value = ag_pool_strdup_str(&req->pool, value);
    h->next = req->_extra;
    req->_extra = h;
}

/* The fixed parts of a response head, each counted once by head_budget(). */
#define HEAD_STATUS "HTTP/1.1 "
#define HEAD_DATE "\r\nDate: "
#define HEAD_KEEP_ALIVE "\r\nConnection: keep-alive\r\n"
#define HEAD_CLOSE "\r\nConnection: close\r\n"
#define HEAD_REQUEST_ID "x-request-id: "
#define HEAD_CONTENT_TYPE "Content-Type: "
#define HEAD_CHUNKED "Transfer-Encoding: chunked\r\n"
#define HEAD_CONTENT_LENGTH "Content-Length: "
#define LIT_LEN(s) (sizeof(s) - 1)

/* The most bytes build_head() writes: every literal at its longest, every
 * variable part at its bound. An assertion checks the result against it. */
static size_t head_budget(const ag_req_t *req, const char *content_type)
{
    size_t n = LIT_LEN(HEAD_STATUS) + 3 + 1 + 40 /* longest reason phrase */ + LIT_LEN(HEAD_DATE) +
               sizeof(((ag_worker_t *)0)->date) + LIT_LEN(HEAD_KEEP_ALIVE) +
               req->worker->srv->default_headers_len + LIT_LEN(HEAD_REQUEST_ID) + sizeof(req->id) +
               2 + LIT_LEN(HEAD_CONTENT_TYPE) + 2 + LIT_LEN(HEAD_CHUNKED) +
               LIT_LEN(HEAD_CONTENT_LENGTH) + 20 + 2 + 2;
    _Static_assert(LIT_LEN(HEAD_KEEP_ALIVE) >= LIT_LEN(HEAD_CLOSE), "longest connection line");
    if (content_type)
        n += strlen(content_type);
    for (struct ag_req_header *h = req->_extra; h; h = h->next)
        n += strlen(h->name) + 2 + h->value.len + 2;
    return n;
}

/* How the body's end is told: by its length, by the last chunk, or (a stream
 * to an HTTP/1.0 client, which RFC 9112 forbids to send chunked) by the close. */
typedef enum { FRAME_LENGTH, FRAME_CHUNKED, FRAME_CLOSE } framing_t;

/* Builds the status line and headers into the request pool. */
static uv_buf_t build_head(ag_req_t *req, int status, const char *content_type,
                           size_t content_length, framing_t framing)
{
    ag_conn_t *c = req->conn;
    ag_worker_t *w = req->worker;
    worker_update_date(w);
    if (w->draining)
        c->keep_alive = false;
    size_t cap = head_budget(req, content_type);
    char *p = ag_pool_alloc(&req->pool, cap);
    char *q = p;
    /* Built by hand: this runs once per response and printf would dominate it. */
    char num[24];
    AG_PUT_LIT(&q, HEAD_STATUS);
    ag_put(&q, num, ag_fmt_u64(num, (uint64_t)status % 1000));
    *q++ = ' ';
    const char *st = status_text(status);
    ag_put(&q, st, strlen(st));
    AG_PUT_LIT(&q, HEAD_DATE);
    ag_put(&q, w->date, strlen(w->date));
    if (c->keep_alive)
        AG_PUT_LIT(&q, HEAD_KEEP_ALIVE);
    else
        AG_PUT_LIT(&q, HEAD_CLOSE);
    if (!req->no_default_headers)
        ag_put(&q, w->srv->default_headers, w->srv->default_headers_len);
    AG_PUT_LIT(&q, HEAD_REQUEST_ID);
    ag_put(&q, req->id, strlen(req->id));
    AG_PUT_LIT(&q, "\r\n");
    if (content_type) {
        AG_PUT_LIT(&q, HEAD_CONTENT_TYPE);
        ag_put(&q, content_type, strlen(content_type));
        AG_PUT_LIT(&q, "\r\n");
    }
    if (framing == FRAME_CHUNKED) {
        AG_PUT_LIT(&q, HEAD_CHUNKED);
    } else if (framing == FRAME_LENGTH) {
        AG_PUT_LIT(&q, HEAD_CONTENT_LENGTH);
        ag_put(&q, num, ag_fmt_u64(num, content_length));
        AG_PUT_LIT(&q, "\r\n");
    }
    for (struct ag_req_header *h = req->_extra; h; h = h->next) {
        ag_put(&q, h->name, strlen(h->name));
        AG_PUT_LIT(&q, ": ");
        ag_put(&q, h->value.ptr, h->value.len);
        AG_PUT_LIT(&q, "\r\n");
    }
    AG_PUT_LIT(&q, "\r\n");
    size_t len = (size_t)(q - p);
    AG_ASSERT(len <= cap);
    return uv_buf_init(p, (unsigned)len);
}

void ag_req_respond(ag_req_t *req, int status, const char *content_type, ag_str_t body)
{
    AG_ASSERT(!req->_responded);
    req->_responded = true;
    req->_status = status;
    ag_conn_t *c = req->conn;
    bool timed = seg_begin(c);
    uv_buf_t bufs[2];
    bufs[0] = build_head(req, status, content_type, body.len, FRAME_LENGTH);
    unsigned nbufs = 1;
    if (body.len && !req->_head_only) {
        char *copy = ag_pool_alloc(&req->pool, body.len);
        memcpy(copy, body.ptr, body.len);
        bufs[1] = uv_buf_init(copy, (unsigned)body.len);
        nbufs = 2;
    }
    req->_bytes_out = bufs[0].len + (nbufs == 2 ? bufs[1].len : 0);
    conn_write_response(c, bufs, nbufs);
    seg_end(c, timed); /* c outlives the request: it is freed by a close callback */
}

void ag_req_respond_error(ag_req_t *req, int status, const char *msg)
{
    ag_buf_t b;
    ag_buf_init(&b, 4096);
    if (ag_json_error_body(&b, msg) < 0)
        b.len = 0;
    ag_req_respond(req, status, "application/json", ag_str(b.data ? b.data : "", b.len));
    ag_buf_fini(&b);
}

/* ---- streaming responses ------------------------------------------------ */

static void on_stream_written(uv_write_t *wr, int status)
{
    stream_write_t *sw = (stream_write_t *)wr;
    ag_conn_t *c = sw->conn;
    c->writes_in_flight--;
    c->queued -= sw->len;
    free(sw);
    if (c->closing)
        return;
    if (status < 0) {
        conn_close(c);
        return;
    }
    conn_dequeued(c);
    if (c->queued == 0) {
        if (c->req._responded && !c->req._streaming) {
            c->response_done = true;
            if (!c->in_process)
                conn_finish_request(c);
            return;
        }
        if (c->drain_fn)
            c->drain_fn(&c->req, c->drain_data);
    }
}

static void on_gone_timer(uv_timer_t *t)
{
    conn_close(t->data);
}

/* A stream write found the client gone (after a half-close, a write is how a
 * real disconnect shows). The handler hears it the one way it hears of any
 * disconnect, on_abort, but from the loop: not from inside its own write. */
static void conn_gone(ag_conn_t *c)
{
    if (c->closing || c->gone)
        return;
    c->gone = true;
    c->keep_alive = false;
    c->req._aborted = true;
    c->send_timing = false;
    uv_timer_start(&c->timer, on_gone_timer, 0, 0);
}

/* stream_send() over TLS: the engine queues the ciphertext; the entry only
 * counts the stream's bytes until they are written. */
static int stream_send_tls(ag_conn_t *c, uv_buf_t *bufs, size_t total)
{
    stream_write_t *sw = malloc(sizeof(*sw));
    if (!sw)
        return UV_ENOMEM;
    sw->conn = c;
    sw->len = total;
    size_t queued = 0;
    int rc = ag_tls_write(c->tls, bufs, 3, &sw->wr, on_stream_written, &queued);
    if (rc != 1) {
        free(sw);
        if (rc < 0)
            conn_gone(c);
        return 0;
    }
    c->writes_in_flight++;
    c->queued += total;
    conn_queued(c, queued);
    return 0;
}

/* Writes a[0..alen) then b[0..blen) then c, in order after anything queued. */
static int stream_send(ag_conn_t *c, const char *a, size_t alen, const char *b, size_t blen,
                       const char *z, size_t zlen)
{
    if (c->closing)
        return UV_EPIPE;
    if (c->gone)
        return 0; /* dropped: the close is on its way */
    uv_buf_t bufs[3] = {uv_buf_init((char *)a, (unsigned)alen),
                        uv_buf_init((char *)b, (unsigned)blen),
                        uv_buf_init((char *)z, (unsigned)zlen)};
    size_t total = alen + blen + zlen;
    size_t written = 0;
    if (c->tls)
        return stream_send_tls(c, bufs, total);
    if (c->writes_in_flight == 0) {
        int n = uv_try_write((uv_stream_t *)&c->tcp, bufs, 3);
        if (n < 0 && n != UV_EAGAIN) {
            conn_gone(c);
            return 0;
        }
        written = n > 0 ? (size_t)n : 0;
        if (written == total)
            return 0;
    }
    size_t rest = total - written;
    stream_write_t *sw = malloc(sizeof(*sw) + rest);
    if (!sw)
        return UV_ENOMEM;
    size_t off = 0, skip = written;
    for (int i = 0; i < 3; i++) {
        size_t l = bufs[i].len;
        if (skip >= l) {
            skip -= l;
            continue;
        }
        memcpy(sw->data + off, bufs[i].base + skip, l - skip);
        off += l - skip;
        skip = 0;
    }
    sw->conn = c;
    sw->len = rest;
    uv_buf_t one = uv_buf_init(sw->data, (unsigned)rest);
    int rc = uv_write(&sw->wr, (uv_stream_t *)&c->tcp, &one, 1, on_stream_written);
    if (rc < 0) {
        free(sw);
        conn_gone(c);
        return 0;
    }
    c->writes_in_flight++;
    c->queued += rest;
    conn_queued(c, rest);
    return 0;
}

void ag_req_stream_start(ag_req_t *req, int status, const char *content_type)
{
    AG_ASSERT(!req->_responded && !req->_streaming);
    req->_streaming = true;
    req->_status = status;
    ag_conn_t *c = req->conn;
    if (req->head.minor_version == 0) {
        c->raw_stream = true;
        c->keep_alive = false;
    }
    uv_buf_t head =
        build_head(req, status, content_type, 0, c->raw_stream ? FRAME_CLOSE : FRAME_CHUNKED);
    req->_bytes_out += head.len;
    int rc = stream_send(req->conn, head.base, head.len, NULL, 0, NULL, 0);
    if (rc < 0)
        req->conn->keep_alive = false;
}

int ag_req_stream_write(ag_req_t *req, const char *data, size_t len, size_t *queued)
{
    ag_conn_t *c = req->conn;
    AG_ASSERT(req->_streaming);
    if (queued)
        *queued = c->queued;
    if (len == 0)
        return 0;
    int rc;
    if (c->raw_stream) {
        rc = stream_send(c, data, len, NULL, 0, NULL, 0);
    } else {
        char frame[24];
        int n = snprintf(frame, sizeof(frame), "%zx\r\n", len);
        rc = stream_send(c, frame, (size_t)n, data, len, "\r\n", 2);
    }
    if (rc < 0)
        return rc;
    req->_bytes_out += len;
    if (queued)
        *queued = c->queued;
    return 0;
}

void ag_req_stream_end(ag_req_t *req)
{
    ag_conn_t *c = req->conn;
    AG_ASSERT(req->_streaming);
    bool timed = seg_begin(c);
    req->_streaming = false;
    req->_responded = true;
    int rc = c->raw_stream ? 0 : stream_send(c, "0\r\n\r\n", 5, NULL, 0, NULL, 0);
    if (rc < 0)
        c->keep_alive = false;
    if (rc < 0 || c->queued == 0) {
        c->response_done = true;
        if (!c->in_process)
            conn_finish_request(c);
    }
    seg_end(c, timed);
}

void ag_req_on_drain(ag_req_t *req, void (*fn)(ag_req_t *req, void *data), void *data)
{
    req->conn->drain_fn = fn;
    req->conn->drain_data = data;
}

/* ---- connections per client -------------------------------------------- */

static unsigned client_hash(const char *key)
{
    unsigned h = 2166136261u; /* FNV-1a */
    for (; *key; key++)
        h = (h ^ (unsigned char)*key) * 16777619u;
    return h;
}

/* Counts the connection against its client; false when the client is at
 * max_connections_per_client (or memory ran out) and it must be refused. */
static bool client_take(ag_conn_t *c)
{
    ag_server_t *srv = c->w->srv;
    const ag_server_limits_t *lim = &srv->opts.limits;
    if (!lim->max_connections_per_client)
        return true;
    if (srv->opts.client_exempt &&
        srv->opts.client_exempt(srv->opts.client_exempt_ctx, c->req.peer_ip))
        return true;
    char key[AG_ADDR_TEXT];
    ag_addr_identity(c->req.peer_ip, lim->ipv6_prefix, key);
    unsigned h = client_hash(key);
    uv_mutex_t *m = &srv->client_locks[h % CLIENT_STRIPES];
    client_slot_t **head = &srv->clients[h % CLIENT_BUCKETS];
    bool ok = false;
    uv_mutex_lock(m);
    client_slot_t *s = *head;
    while (s && strcmp(s->key, key) != 0)
        s = s->next;
    if (!s && (s = calloc(1, sizeof(*s))) != NULL) {
        memcpy(s->key, key, sizeof(key));
        s->next = *head;
        *head = s;
    }
    if (s && s->count < lim->max_connections_per_client) {
        s->count++;
        c->slot = s;
        ok = true;
    }
    uv_mutex_unlock(m);
    return ok;
}

static void client_release(ag_conn_t *c)
{
    client_slot_t *s = c->slot;
    if (!s)
        return;
    ag_server_t *srv = c->w->srv;
    unsigned h = client_hash(s->key);
    uv_mutex_t *m = &srv->client_locks[h % CLIENT_STRIPES];
    uv_mutex_lock(m);
    if (--s->count == 0) {
        client_slot_t **p = &srv->clients[h % CLIENT_BUCKETS];
        while (*p != s)
            p = &(*p)->next;
        *p = s->next;
        free(s);
    }
    uv_mutex_unlock(m);
    c->slot = NULL;
}

/* ---- connection lifecycle --------------------------------------------- */

static void on_conn_closed(uv_handle_t *h)
{
    ag_conn_t *c = h->data;
    if (--c->closes_pending > 0)
        return;
    ag_worker_t *w = c->w;
    client_release(c);
    if (c->busy)
        w->nbusy--;
    ag_pool_fini(&c->req.pool);
    ag_buf_fini(&c->in);
    ag_tls_free(c->tls);
    if (c->prev)
        c->prev->next = c->next;
    else
        w->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    w->nconns--;
    atomic_fetch_sub(&w->srv->connections, 1);
    free(c);
    worker_maybe_stop(w);
}

static void conn_close(ag_conn_t *c)
{
    if (c->closing)
        return;
    c->closing = true;
    ag_req_t *req = &c->req;
    if (c->state == CONN_ACTIVE && !c->response_done && !c->lingering) {
        /* The handler still owns async work for this request: it must cancel it now,
         * because the request's memory goes away with the connection. */
        req->_aborted = true;
        if (req->on_abort)
            req->on_abort(req);
        if (!req->_responded && !req->_streaming)
            req->_status = 499; /* nginx's "client closed request" */
        request_report(req);
    }
    ag_pool_clear(&req->pool);
    if (c->tls_pump)
        uv_close((uv_handle_t *)c->tls_pump, on_conn_closed);
    uv_close((uv_handle_t *)&c->timer, on_conn_closed);
    uv_close((uv_handle_t *)&c->tcp, on_conn_closed);
}

static void on_timer(uv_timer_t *t)
{
    ag_conn_t *c = t->data;
    if (c->state == CONN_HEAD && c->in.len == 0) {
        conn_close(c); /* idle keep-alive connection */
        return;
    }
    if (c->state == CONN_ACTIVE) {
        return;
    }
    /* A slow client mid-request (slowloris): answer 408 and close. */
    c->keep_alive = false;
    ag_req_t *req = &c->req;
    if (c->head_len == 0)
        head_forget(req); /* a partial head has no views (they would outlive a moved buffer) */
    c->state = CONN_ACTIVE;
    c->response_done = false;
    const ag_server_hooks_t *h = &c->w->srv->opts.hooks;
    if (h->respond_error)
        h->respond_error(h->server_ctx, req, 408, "Request timeout");
    else
        ag_req_respond_error(req, 408, "Request timeout");
    if (c->response_done && !c->in_process)
        conn_finish_request(c);
}

static void conn_set_timer(ag_conn_t *c, unsigned ms, bool header)
{
    c->timer_is_header = header;
    c->send_timing = false;
    uv_timer_start(&c->timer, on_timer, ms, 0);
}

static void req_reset(ag_conn_t *c)
{
    ag_req_t *req = &c->req;
    ag_worker_t *w = c->w;
    char ip[64];
    memcpy(ip, req->peer_ip, sizeof(ip));
    ag_pool_t pool = req->pool;
    memset(req, 0, sizeof(*req));
    req->pool = pool;
    /* The client is the peer again: what a handler resolved for the previous
     * request (a forwarded address) must not become this one's peer. */
    memcpy(req->peer_ip, ip, sizeof(ip));
    memcpy(req->client, ip, sizeof(ip));
    if (c->timing)
        c->seg_start = ag_mono_us(); /* the rest of this segment is the next request's */
    req->conn = c;
    req->worker = w;
    req->start_us = ag_mono_us();
    req->start_wall_us = ag_now_us();
    ag_fmt_hex(req->id, w->id_prefix, 8);
    ag_fmt_hex(req->id + 8, ++w->seq, 8);
    req->id[16] = '\0';
    req->head.content_length = -1;
    c->head_len = 0;
    c->parsed_len = 0;
    c->body_len = 0;
    c->leftover = 0;
    c->raw_stream = false;
    c->gone = false;
    c->continue_sent = false;
    c->drain_fn = NULL;
    c->drain_data = NULL;
}

/* Answers a request that could not be parsed, then closes the connection. */
static void conn_fail(ag_conn_t *c, int status, const char *msg)
{
    if (c->head_len == 0)
        head_forget(&c->req);
    c->keep_alive = false;
    c->state = CONN_ACTIVE;
    c->response_done = false;
    uv_read_stop((uv_stream_t *)&c->tcp);
    c->reading = false;
    const ag_server_hooks_t *h = &c->w->srv->opts.hooks;
    if (h->respond_error)
        h->respond_error(h->server_ctx, &c->req, status, msg);
    else
        ag_req_respond_error(&c->req, status, msg);
}

/* nginx's lingering close: closing a socket with unread input makes the kernel
 * send RST, which can destroy the response before the client reads it. So shut
 * the write side, discard input until EOF, and close then (or after 2 s). */
#define LINGER_MS 2000

static void on_linger_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    AG_UNUSED(suggested);
    ag_worker_t *w = ((ag_conn_t *)h->data)->w;
    *buf = uv_buf_init(w->discard, sizeof(w->discard));
}

static void on_linger_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    AG_UNUSED(buf);
    if (nread < 0)
        conn_close(s->data);
}

static void on_linger_timeout(uv_timer_t *t)
{
    conn_close(t->data);
}

static void on_shutdown(uv_shutdown_t *sr, int status)
{
    ag_conn_t *c = sr->data;
    if (c->closing)
        return;
    if (status < 0) {
        conn_close(c);
        return;
    }
    uv_read_stop((uv_stream_t *)&c->tcp);
    if (uv_read_start((uv_stream_t *)&c->tcp, on_linger_alloc, on_linger_read) < 0)
        conn_close(c);
}

static void conn_linger(ag_conn_t *c, unsigned ms)
{
    c->lingering = true;
    c->state = CONN_ACTIVE; /* nothing more is parsed */
    c->response_done = false;
    c->send_timing = false;
    uv_timer_start(&c->timer, on_linger_timeout, ms, 0);
    if (c->tls)
        ag_tls_shutdown(c->tls); /* close_notify, queued before the FIN */
    c->shutdown_req.data = c;
    if (uv_shutdown(&c->shutdown_req, (uv_stream_t *)&c->tcp, on_shutdown) < 0)
        conn_close(c);
}

/* An idle connection gives its read buffer back to the worker and its pool's
 * chunk back to malloc: idle keep-alive connections then cost ~1 KiB each. */
static void conn_release_buffers(ag_conn_t *c)
{
    ag_worker_t *w = c->w;
    if (c->in.data && c->in.cap == BUF_CACHE_CAP && w->nbuf_cache < BUF_CACHE) {
        w->buf_cache[w->nbuf_cache++] = c->in.data;
        c->in.data = NULL;
        c->in.cap = 0;
    }
    ag_buf_fini(&c->in);
    ag_pool_fini(&c->req.pool);
}

static void request_done(ag_conn_t *c)
{
    ag_req_t *req = &c->req;
    request_report(req);
    ag_pool_clear(&req->pool);
    c->headers = NULL;
    size_t used = c->head_len + c->body_len;
    ag_buf_consume(&c->in, used < c->in.len ? used : c->in.len);
    c->state = CONN_HEAD;
    c->response_done = false;
    if (c->peer_eof || c->req._aborted) {
        conn_close(c);
        return;
    }
    /* In a handover's drain a connection whose answer promised keep-alive (its
     * head went out before the drain began) stays for one more request, which
     * is answered with Connection: close: closing it now would race a request
     * the client is sending, a reset. */
    if (!c->keep_alive || (c->w->draining && !atomic_load(&c->w->srv->keep_idle))) {
        conn_linger(c, LINGER_MS);
        return;
    }
    req_reset(c);
    if (c->in.len > 0) {
        conn_set_timer(c, c->w->srv->opts.limits.header_timeout_ms, true);
        return;
    }
    conn_set_timer(c, c->w->srv->opts.limits.idle_timeout_ms, false);
    conn_release_buffers(c);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);
static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf);

static void on_tls_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf);
static void on_tls_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);
static void on_tls_pump(uv_idle_t *h);

static void conn_start_reading(ag_conn_t *c)
{
    if (c->reading || c->closing)
        return;
    if (!c->tls) {
        if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) == 0)
            c->reading = true;
        return;
    }
    if (uv_read_start((uv_stream_t *)&c->tcp, on_tls_alloc, on_tls_read) == 0)
        c->reading = true;
    if (c->reading && ag_tls_pending(c->tls))
        uv_idle_start(c->tls_pump, on_tls_pump);
}

static void conn_finish_request(ag_conn_t *c)
{
    bool timed = seg_begin(c);
    request_done(c);
    if (!c->closing && !c->lingering) {
        conn_start_reading(c);
        if (c->in.len > 0)
            conn_process(c);
    }
    seg_end(c, timed);
}

static void conn_dispatch(ag_conn_t *c)
{
    ag_req_t *req = &c->req;
    req->body = ag_str(c->in.data + c->head_len, c->body_len);
    req->_head_only = ag_str_eq(req->head.method, AG_STR_LIT("HEAD"));
    c->state = CONN_ACTIVE;
    c->response_done = false;
    uv_timer_stop(&c->timer);
    c->send_timing = false;
    if (c->w->draining)
        c->keep_alive = false;
    c->w->srv->opts.hooks.handle(req);
}

static const char continue_line[] = "HTTP/1.1 100 Continue\r\n\r\n";

static void on_continue_written(uv_write_t *wr, int status)
{
    ag_conn_t *c = wr->data;
    if (status < 0)
        c->keep_alive = false; /* the close that follows reports it */
}

/* The interim 100: what the socket does not take at once is queued, in order
 * before any response, so a client never waits for a line that was cut short. */
static void send_continue(ag_conn_t *c)
{
    uv_buf_t b = uv_buf_init((char *)continue_line, sizeof(continue_line) - 1);
    if (c->tls) {
        c->continue_req.data = c;
        if (ag_tls_write(c->tls, &b, 1, &c->continue_req, on_continue_written, NULL) < 0)
            c->keep_alive = false;
        return;
    }
    int n = uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
    if (n == (int)b.len)
        return;
    if (n < 0 && n != UV_EAGAIN) {
        c->keep_alive = false;
        return;
    }
    size_t done = n > 0 ? (size_t)n : 0;
    b = uv_buf_init((char *)continue_line + done, (unsigned)(b.len - done));
    c->continue_req.data = c;
    if (uv_write(&c->continue_req, (uv_stream_t *)&c->tcp, &b, 1, on_continue_written) < 0)
        c->keep_alive = false;
}

/* The body's clock: body_timeout without a byte, and in all at most
 * body_timeout plus a second per body_min_rate bytes received (Apache's
 * mod_reqtimeout MinRate), and at most body_deadline: a byte per timeout
 * cannot hold a connection for ever. Past the allowance the timer fires at
 * once, with the 408. */
static void conn_body_timer(ag_conn_t *c)
{
    const ag_server_limits_t *lim = &c->w->srv->opts.limits;
    int64_t ms = lim->body_timeout_ms;
    int64_t allowed = -1;
    if (lim->body_min_rate) {
        size_t got = c->in.len > c->head_len ? c->in.len - c->head_len : 0;
        allowed = (int64_t)lim->body_timeout_ms + (int64_t)(got / lim->body_min_rate) * 1000;
    }
    if (lim->body_deadline_ms && (allowed < 0 || allowed > lim->body_deadline_ms))
        allowed = lim->body_deadline_ms;
    if (allowed >= 0) {
        int64_t left = allowed - (ag_mono_us() - c->body_start_us) / 1000;
        if (left < ms)
            ms = left > 0 ? left : 0;
    }
    conn_set_timer(c, (unsigned)ms, false);
}

/* Parses and dispatches as many buffered requests as can complete now. */
static void conn_process(ag_conn_t *c)
{
    const ag_server_limits_t *lim = &c->w->srv->opts.limits;
    c->in_process = true;
    while (!c->closing) {
        if (c->state == CONN_ACTIVE) {
            if (!c->response_done)
                break;
            request_done(c);
            if (c->lingering)
                break;
            if (!c->closing)
                conn_start_reading(c);
            continue;
        }
        if (c->state == CONN_HEAD) {
            if (c->in.len == 0)
                break;
            ag_req_t *req = &c->req;
            if (!c->headers)
                c->headers = ag_pool_alloc(&req->pool, MAX_HEADERS * sizeof(ag_http_header_t));
            /* Incremental: a head trickled in byte by byte is scanned once,
             * not re-parsed from its start on every read. */
            int rc = ag_http_parse_request_head_next(c->in.data, c->in.len, c->parsed_len,
                                                     c->headers, MAX_HEADERS, &req->head);
            if (rc <= 0)
                head_forget(req);
            if (rc == AG_EAGAIN)
                c->parsed_len = c->in.len;
            if (rc == AG_EAGAIN) {
                /* The head clock starts at its first byte and is not reset by
                 * more bytes: a slowloris client cannot keep it alive. */
                if (!c->timer_is_header)
                    conn_set_timer(c, lim->header_timeout_ms, true);
                if (c->in.len >= lim->max_header_bytes)
                    conn_fail(c, 431, "Request header fields too large");
                else
                    break;
                continue;
            }
            if (rc == AG_EHDRTOOBIG || (rc > 0 && (size_t)rc > lim->max_header_bytes)) {
                conn_fail(c, 431, "Request header fields too large");
                continue;
            }
            if (rc < 0) {
                int st = ag_err_http_status(rc);
                conn_fail(c, st,
                          st == 501   ? "Transfer coding not supported"
                          : st == 505 ? "HTTP version not supported"
                                      : "Bad request");
                continue;
            }
            c->head_len = (size_t)rc;
            c->keep_alive = req->head.keep_alive;
            if (req->head.content_length > 0 &&
                (uint64_t)req->head.content_length > lim->max_body_bytes) {
                conn_fail(c, 413, "Request body too large");
                continue;
            }
            if (req->head.chunked) {
                ag_chunked_init(&c->chunked);
                c->body_len = 0;
            } else {
                c->body_len = req->head.content_length > 0 ? (size_t)req->head.content_length : 0;
            }
            c->state = CONN_BODY;
            c->body_start_us = ag_mono_us();
        }
        /* CONN_BODY */
        ag_req_t *req = &c->req;
        bool complete;
        if (req->head.chunked) {
            size_t start = c->head_len + c->body_len;
            size_t n = c->in.len - start;
            int rc = ag_chunked_decode(&c->chunked, c->in.data + start, &n);
            if (rc == AG_EPROTO || (rc < 0 && rc != AG_EAGAIN)) {
                conn_fail(c, 400, "Bad request");
                continue;
            }
            c->body_len += n;
            c->in.len = start + n + (rc >= 0 ? (size_t)rc : 0);
            if (c->body_len > lim->max_body_bytes) {
                conn_fail(c, 413, "Request body too large");
                continue;
            }
            complete = rc >= 0;
        } else {
            complete = c->in.len >= c->head_len + c->body_len;
        }
        if (!complete) {
            conn_body_timer(c);
            if (req->head.expect_continue && !c->continue_sent && req->head.minor_version >= 1) {
                c->continue_sent = true;
                send_continue(c);
            }
            break;
        }
        conn_dispatch(c);
    }
    c->in_process = false;
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    ag_conn_t *c = h->data;
    AG_UNUSED(suggested);
    if (c->state != CONN_ACTIVE) {
        size_t room = c->in.max - c->in.len;
        const char *before = c->in.data;
        if (!c->in.data && c->w->nbuf_cache) {
            c->in.data = c->w->buf_cache[--c->w->nbuf_cache];
            c->in.cap = BUF_CACHE_CAP;
        }
        if (ag_buf_reserve(&c->in, room < READ_CHUNK ? room : READ_CHUNK) < 0) {
            *buf = uv_buf_init(NULL, 0);
            return;
        }
        /* A parsed head's views point into the buffer: when it moved, parse the
         * (unchanged) head bytes again to point them at the new place. */
        if (before && c->in.data != before && c->head_len > 0)
            ag_http_parse_request_head(c->in.data, c->head_len, c->headers, MAX_HEADERS,
                                       &c->req.head);
    }
    /* While a request is active its views point into c->in, so the buffer must
     * not move: read only into the room it already has. */
    size_t room = c->in.cap > c->in.len + 1 ? c->in.cap - c->in.len - 1 : 0;
    if (room > READ_CHUNK * 4)
        room = READ_CHUNK * 4;
    *buf = uv_buf_init(room ? c->in.data + c->in.len : NULL, (unsigned)room);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    ag_conn_t *c = s->data;
    AG_UNUSED(buf);
    if (nread == UV_ENOBUFS || nread == 0) {
        if (nread == UV_ENOBUFS) {
            uv_read_stop(s);
            c->reading = false;
            if (c->state != CONN_ACTIVE)
                conn_fail(c, c->state == CONN_HEAD ? 431 : 413, "Request too large");
        }
        return;
    }
    if (nread < 0) {
        uv_read_stop(s);
        c->reading = false;
        if (c->state == CONN_ACTIVE && nread == UV_EOF && !c->lingering) {
            /* A half-close after a complete request is not a disconnect, before
             * the answer's first byte or after it, streamed or not: answer it,
             * then close. A client that is really gone fails the writes. */
            c->peer_eof = true;
            c->keep_alive = false;
            return;
        }
        conn_close(c);
        return;
    }
    c->in.len += (size_t)nread;
    if (c->state == CONN_ACTIVE)
        return;
    bool timed = seg_begin(c);
    conn_process(c);
    seg_end(c, timed);
}

/* ---- HTTPS: ciphertext from the socket, plaintext into the plain path ---- */

/* Each read is fed to the engine before the next one lands, so the worker's
 * discard buffer (lingering reads use it the same way) holds it. */
static void on_tls_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    AG_UNUSED(suggested);
    ag_worker_t *w = ((ag_conn_t *)h->data)->w;
    *buf = uv_buf_init(w->discard, sizeof(w->discard));
}

/* Plaintext out of the engine, through on_alloc()/on_read() exactly as if the
 * socket had delivered it, while reading is on: the buffer rules, caps and
 * back-pressure stay the plain path's. */
static void tls_pump(ag_conn_t *c)
{
    uv_stream_t *s = (uv_stream_t *)&c->tcp;
    while (c->reading && !c->closing && !c->lingering) {
        uv_buf_t b;
        on_alloc((uv_handle_t *)s, READ_CHUNK, &b);
        /* No room: ask whether a byte waits (len 0 peeks) before saying so. */
        int n = ag_tls_read(c->tls, b.base, b.len);
        if (n == 0)
            return;
        if (n > 0 && b.len == 0) {
            on_read(s, UV_ENOBUFS, &b);
            return;
        }
        on_read(s, n > 0 ? n : n == UV_EOF ? UV_EOF : UV_ECONNRESET, &b);
        if (n < 0)
            return;
    }
}

static void on_tls_pump(uv_idle_t *h)
{
    ag_conn_t *c = h->data;
    uv_idle_stop(h);
    bool timed = seg_begin(c);
    tls_pump(c);
    seg_end(c, timed);
}

/* Plain HTTP on the HTTPS port: a 400 that says so (nginx answers 497), then
 * the lingering close, so the client reads it instead of a reset. */
#define PLAIN_ON_TLS_BODY "{\"error\":\"This port speaks HTTPS: use https:// URLs\"}"
#define AG_XSTR(x) AG_STR_(x)
#define AG_STR_(x) #x
#define PLAIN_ON_TLS_LEN 53
_Static_assert(sizeof(PLAIN_ON_TLS_BODY) - 1 == PLAIN_ON_TLS_LEN, "Content-Length of plain_on_tls");
static const char plain_on_tls[] =
    "HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\nConnection: close\r\n"
    "Content-Length: " AG_XSTR(PLAIN_ON_TLS_LEN) "\r\n\r\n" PLAIN_ON_TLS_BODY;

static void on_tls_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    ag_conn_t *c = s->data;
    if (nread == 0)
        return;
    if (nread < 0) {
        /* What the engine still holds comes first, then the socket's end. */
        if (nread == UV_EOF && c->reading && ag_tls_pending(c->tls))
            tls_pump(c);
        if (!c->closing)
            on_read(s, nread, buf);
        return;
    }
    bool timed = seg_begin(c);
    int rc = ag_tls_feed(c->tls, buf->base, (size_t)nread);
    if (rc == AG_TLS_EPLAIN) {
        uv_buf_t b = uv_buf_init((char *)plain_on_tls, sizeof(plain_on_tls) - 1);
        uv_try_write(s, &b, 1);
        uv_read_stop(s);
        c->reading = false;
        conn_linger(c, LINGER_MS);
    } else if (rc < 0) {
        ag_log_debug("connection from %s: %s", c->req.peer_ip, ag_strerror(rc));
        conn_close(c);
    } else {
        tls_pump(c);
    }
    seg_end(c, timed);
}

static const char busy_body[] = "{\"error\":\"Too many connections\"}";

static void on_connection(uv_stream_t *server, int status)
{
    ag_worker_t *w = server->data;
    if (status < 0 || w->draining)
        return;
    /* HTTPS: the pump handle rides in the same allocation. */
    ag_conn_t *c = calloc(1, sizeof(*c) + (w->srv->tls ? sizeof(uv_idle_t) : 0));
    if (!c)
        return;
    c->w = w;
    uv_tcp_init(&w->loop, &c->tcp);
    uv_timer_init(&w->loop, &c->timer);
    c->tcp.data = c;
    c->timer.data = c;
    c->closes_pending = 2;
    if (w->srv->tls) {
        c->tls_pump = (uv_idle_t *)(c + 1);
        uv_idle_init(&w->loop, c->tls_pump);
        c->tls_pump->data = c;
        c->closes_pending = 3;
    }
    const ag_server_limits_t *lim = &w->srv->opts.limits;
    ag_buf_init(&c->in, lim->max_header_bytes + lim->max_body_bytes + PIPELINE_SLACK);
    ag_pool_init(&c->req.pool);
    c->req.pool.cache = &w->pool_cache;
    c->next = w->conns;
    if (w->conns)
        w->conns->prev = c;
    w->conns = c;
    w->nconns++;
    unsigned n = atomic_fetch_add(&w->srv->connections, 1);
    if (uv_accept(server, (uv_stream_t *)&c->tcp) != 0) {
        conn_close(c);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    struct sockaddr_storage ss;
    int len = sizeof(ss);
    if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &len) == 0) {
        if (ss.ss_family == AF_INET6)
            uv_ip6_name((struct sockaddr_in6 *)&ss, c->req.peer_ip, sizeof(c->req.peer_ip));
        else
            uv_ip4_name((struct sockaddr_in *)&ss, c->req.peer_ip, sizeof(c->req.peer_ip));
    }
    if (w->srv->tls) {
        uv_mutex_lock(&w->tls_lock);
        c->tls = ag_tls_new(w->tls, (uv_stream_t *)&c->tcp);
        uv_mutex_unlock(&w->tls_lock);
        if (!c->tls) {
            conn_close(c);
            return;
        }
    }
    if (n >= lim->max_connections || !client_take(c)) {
        if (c->tls) {
            /* Over a cap before any handshake: no 503 can be said. */
            conn_close(c);
            return;
        }
        /* Over a cap: the 503, then a lingering close, so that the request the
         * client may have sent already does not turn the close into an RST. */
        uv_buf_t b = uv_buf_init(w->srv->busy_response, (unsigned)w->srv->busy_response_len);
        uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
        if (w->nbusy >= BUSY_LINGER_MAX) {
            conn_close(c);
            return;
        }
        c->busy = true;
        w->nbusy++;
        conn_linger(c, BUSY_LINGER_MS);
        return;
    }
    c->keep_alive = true;
    req_reset(c);
    conn_set_timer(c, lim->header_timeout_ms, true);
    conn_start_reading(c);
}

/* ---- workers ------------------------------------------------------------ */

static void on_handle_closed(uv_handle_t *h)
{
    ag_worker_t *w = h->data;
    for (unsigned i = 0; i < w->nlisteners; i++) {
        if (h == (uv_handle_t *)&w->listeners[i])
            w->listeners_open--;
    }
    worker_maybe_stop(w);
}

static void worker_stop_now(ag_worker_t *w)
{
    if (w->stopped)
        return;
    w->stopped = true;
    if (w->srv->opts.hooks.worker_fini)
        w->srv->opts.hooks.worker_fini(w, w->ctx);
    uv_mutex_lock(&w->srv->wake_lock);
    w->wakeup_closed = true;
    uv_close((uv_handle_t *)&w->wakeup, NULL);
    uv_mutex_unlock(&w->srv->wake_lock);
    uv_close((uv_handle_t *)&w->drain_timer, NULL);
    uv_close((uv_handle_t *)&w->cpu_sample, NULL);
}

static void worker_maybe_stop(ag_worker_t *w)
{
    if (w->draining && w->nconns == 0 && w->listeners_open == 0)
        worker_stop_now(w);
}

/* Ends the drain: closes every connection, saying how many requests that cut
 * (their records still go out, marked aborted, so the usage log has them). */
static void drain_close_all(ag_worker_t *w, const char *why)
{
    unsigned active = 0;
    for (ag_conn_t *c = w->conns; c; c = c->next)
        active += c->state == CONN_ACTIVE && !c->response_done && !c->lingering && !c->closing;
    if (w->nconns)
        ag_log_warn("worker %u: %s: closing %u connection(s), %u with a request in flight",
                    w->index, why, w->nconns, active);
    for (ag_conn_t *c = w->conns, *next; c; c = next) {
        next = c->next;
        c->req._cut = true; /* the handler's record says the server ended it */
        conn_close(c);
    }
}

static void on_drain_timeout(uv_timer_t *t)
{
    drain_close_all(t->data, "drain timeout");
}

static void on_wakeup(uv_async_t *a)
{
    ag_worker_t *w = a->data;
    if (!atomic_load(&w->srv->shutting_down))
        return;
    if (w->draining) {
        if (atomic_load(&w->srv->cut))
            drain_close_all(w, "drain cut short");
        return;
    }
    w->draining = true;
    /* After a binary upgrade the socket stays open in the new process, which
     * accepts what is queued on it: closing ours only stops this one accepting. */
    for (unsigned i = 0; i < w->nlisteners; i++)
        uv_close((uv_handle_t *)&w->listeners[i], on_handle_closed);
    for (ag_conn_t *c = w->conns, *next; c; c = next) {
        next = c->next;
        /* After a binary upgrade an idle keep-alive connection stays until its
         * next request, answered with Connection: close (a close now would race
         * a request the client is sending: a reset); it ends at the latest
         * with the idle or the drain timeout. A plain stop closes it now. */
        if (atomic_load(&w->srv->keep_idle))
            continue; /* each answer from now on says close (build_head) */
        if (c->state == CONN_HEAD && c->in.len == 0)
            conn_close(c);
        else
            c->keep_alive = false;
    }
    if (w->srv->opts.hooks.worker_drain)
        w->srv->opts.hooks.worker_drain(w, w->ctx);
    uv_timer_start(&w->drain_timer, on_drain_timeout, w->srv->opts.limits.drain_timeout_ms, 0);
    uv_unref((uv_handle_t *)&w->drain_timer);
    if (atomic_load(&w->srv->cut))
        drain_close_all(w, "drain cut short");
    worker_maybe_stop(w);
}

static void close_walk(uv_handle_t *h, void *arg)
{
    AG_UNUSED(arg);
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

static void worker_main(void *arg)
{
    ag_worker_t *w = arg;
    uv_run(&w->loop, UV_RUN_DEFAULT);
    if (uv_loop_close(&w->loop) == UV_EBUSY) {
        uv_walk(&w->loop, close_walk, NULL);
        uv_run(&w->loop, UV_RUN_DEFAULT);
        uv_loop_close(&w->loop);
    }
    /* Closed connections park their buffers here: free them once none is left. */
    while (w->nbuf_cache)
        free(w->buf_cache[--w->nbuf_cache]);
    ag_pool_cache_fini(&w->pool_cache);
}

/* host:port as a socket address ("localhost" is 127.0.0.1). */
static int host_addr(const char *host, int port, struct sockaddr_storage *ss, socklen_t *sl)
{
    memset(ss, 0, sizeof(*ss));
    if (strcmp(host, "localhost") == 0)
        host = "127.0.0.1";
    int rc = strchr(host, ':') ? uv_ip6_addr(host, port, (struct sockaddr_in6 *)ss)
                               : uv_ip4_addr(host, port, (struct sockaddr_in *)ss);
    *sl = ss->ss_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
    return rc;
}

static int bind_listener(const char *host, int port, int *out_fd)
{
    struct sockaddr_storage ss;
    socklen_t sl;
    int rc = host_addr(host, port, &ss, &sl);
    if (rc < 0)
        return rc;
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
    if (bind(fd, (struct sockaddr *)&ss, sl) < 0) {
        rc = -errno;
        close(fd);
        return rc;
    }
    *out_fd = fd;
    return 0;
}

/* SO_REUSEPORT would let a second server bind an address this one holds and
 * take half its connections. A bind without it fails while anyone listens
 * there (SO_REUSEADDR only forgives TIME_WAIT), so this probe tells. */
static int probe_address(const char *host, int port)
{
    struct sockaddr_storage ss;
    socklen_t sl;
    int rc = host_addr(host, port, &ss, &sl);
    if (rc < 0)
        return rc;
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    rc = bind(fd, (struct sockaddr *)&ss, sl) < 0 ? -errno : 0;
    close(fd);
    return rc;
}

/* The listen lock: <lock_dir>/listen-HOST-PORT.lock, flock()ed for the
 * server's life and holding its pid, so that a second aigate learns who holds
 * the address even when the two raced past the probe. @return the lock's fd,
 * -EADDRINUSE with *holder set, or another negative errno (no lock, go on). */
static int take_listen_lock(const char *dir, const char *host, int port, int *holder)
{
    char path[4096];
    int n = snprintf(path, sizeof(path), "%s/listen-", dir);
    for (const char *p = host; *p && n < (int)sizeof(path) - 32; p++)
        path[n++] = (*p == ':' || *p == '/') ? '_' : *p;
    snprintf(path + n, sizeof(path) - (size_t)n, "-%d.lock", port);
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0)
        return -errno;
    if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
        int err = errno;
        char buf[32] = "";
        ssize_t r = pread(fd, buf, sizeof(buf) - 1, 0);
        buf[r > 0 ? r : 0] = '\0';
        *holder = atoi(buf);
        close(fd);
        return err == EWOULDBLOCK ? -EADDRINUSE : -err;
    }
    char buf[32];
    int len = snprintf(buf, sizeof(buf), "%d\n", (int)getpid());
    if (ftruncate(fd, 0) < 0 || pwrite(fd, buf, (size_t)len, 0) != len)
        ag_log_debug("listen lock %s: cannot write the pid", path);
    return fd;
}

/* Refuses an address another server holds. A binary upgrade's inherited
 * listeners skip this: the new process shares the address on purpose. */
static int claim_address(ag_server_t *srv, int port)
{
    const ag_server_options_t *o = &srv->opts;
    if (port == 0)
        return 0;
    int holder = 0;
    if (o->lock_dir) {
        int fd = take_listen_lock(o->lock_dir, srv->host, port, &holder);
        if (fd == -EADDRINUSE) {
            if (o->holder_pid)
                *o->holder_pid = holder;
            return -EADDRINUSE;
        }
        if (fd >= 0)
            srv->lock_fd = fd;
    }
    int rc = probe_address(srv->host, port);
    if (rc == -EADDRINUSE && o->holder_pid)
        *o->holder_pid = 0;
    return rc == -EADDRINUSE ? rc : 0;
}

/* True when every inherited fd is a listening TCP socket on host and on one
 * port (port, unless it is 0: then any), which *port_out gets. A config whose
 * address changed across the upgrade binds anew instead. */
static bool inherited_match(const char *host, int port, const int *fds, unsigned n, int *port_out)
{
    struct sockaddr_storage want;
    socklen_t wl;
    if (n == 0 || host_addr(host, 0, &want, &wl) < 0)
        return false;
    int got_port = -1;
    for (unsigned i = 0; i < n; i++) {
        struct sockaddr_storage ss;
        socklen_t sl = sizeof(ss);
        int listening = 0, type = 0;
        socklen_t il = sizeof(int);
        if (fds[i] < 0 || getsockname(fds[i], (struct sockaddr *)&ss, &sl) < 0 ||
            ss.ss_family != want.ss_family)
            return false;
        il = sizeof(int);
        if (getsockopt(fds[i], SOL_SOCKET, SO_TYPE, &type, &il) < 0 || type != SOCK_STREAM)
            return false;
        il = sizeof(int);
        if (getsockopt(fds[i], SOL_SOCKET, SO_ACCEPTCONN, &listening, &il) < 0 || !listening)
            return false;
        int p;
        if (ss.ss_family == AF_INET6) {
            const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)&ss;
            const struct sockaddr_in6 *b = (const struct sockaddr_in6 *)&want;
            if (memcmp(&a->sin6_addr, &b->sin6_addr, sizeof(a->sin6_addr)) != 0)
                return false;
            p = ntohs(a->sin6_port);
        } else {
            const struct sockaddr_in *a = (const struct sockaddr_in *)&ss;
            const struct sockaddr_in *b = (const struct sockaddr_in *)&want;
            if (a->sin_addr.s_addr != b->sin_addr.s_addr)
                return false;
            p = ntohs(a->sin_port);
        }
        if ((port != 0 && p != port) || (got_port >= 0 && p != got_port))
            return false;
        got_port = p;
    }
    *port_out = got_port;
    return true;
}

static int socket_port(int fd)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) < 0)
        return -errno;
    if (ss.ss_family == AF_INET6)
        return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    return ntohs(((struct sockaddr_in *)&ss)->sin_port);
}

static void worker_fini_handles(ag_worker_t *w)
{
    uv_walk(&w->loop, close_walk, NULL);
    uv_run(&w->loop, UV_RUN_DEFAULT);
    uv_loop_close(&w->loop);
}

int ag_server_set_tls(ag_server_t *srv, ag_tls_ctx_t *ctx)
{
    if (!srv->tls || !ctx)
        return -EINVAL;
    for (unsigned i = 0; i < srv->nworkers; i++) {
        ag_worker_t *w = &srv->workers[i];
        ag_tls_ctx_t *fresh = ag_tls_ctx_ref(ctx);
        uv_mutex_lock(&w->tls_lock);
        ag_tls_ctx_t *old = w->tls;
        w->tls = fresh;
        uv_mutex_unlock(&w->tls_lock);
        ag_tls_ctx_unref(old); /* open connections' SSLs hold their own */
    }
    return 0;
}

static void server_free(ag_server_t *srv)
{
    if (srv->lock_fd >= 0)
        close(srv->lock_fd);
    for (unsigned i = 0; srv->workers && i < srv->nworkers; i++) {
        ag_tls_ctx_unref(srv->workers[i].tls);
        uv_mutex_destroy(&srv->workers[i].tls_lock);
    }
    for (unsigned i = 0; i < CLIENT_STRIPES; i++)
        uv_mutex_destroy(&srv->client_locks[i]);
    uv_mutex_destroy(&srv->wake_lock);
    for (unsigned i = 0; i < CLIENT_BUCKETS; i++) {
        for (client_slot_t *s = srv->clients[i], *next; s; s = next) {
            next = s->next;
            free(s);
        }
    }
    for (unsigned i = 0; srv->workers && i < srv->nworkers; i++) {
        free(srv->workers[i].listeners);
        free(srv->workers[i].listen_fds);
    }
    free(srv->workers);
    free(srv->default_headers);
    free(srv->busy_response);
    free(srv);
}

/* Worker w's listeners: the inherited fds i, i + nworkers, ... (used[] marks
 * them taken), else one socket of its own on port. */
static int worker_listen(ag_worker_t *w, const int *inherit, unsigned ninherit, bool *used,
                         int port)
{
    ag_server_t *srv = w->srv;
    unsigned n = 0;
    for (unsigned j = w->index; j < ninherit; j += srv->nworkers)
        n++;
    unsigned want = n ? n : 1;
    w->listeners = calloc(want, sizeof(*w->listeners));
    w->listen_fds = calloc(want, sizeof(*w->listen_fds));
    if (!w->listeners || !w->listen_fds)
        return -ENOMEM;
    for (unsigned k = 0; k < want; k++) {
        int fd = -1, rc;
        if (n) {
            unsigned j = w->index + k * srv->nworkers;
            fd = inherit[j];
            used[j] = true;
            rc = 0;
        } else {
            rc = bind_listener(srv->host, port, &fd);
        }
        if (rc < 0)
            return rc;
        w->listen_fds[k] = fd;
        uv_tcp_init(&w->loop, &w->listeners[k]);
        w->listeners[k].data = w;
        w->nlisteners++;
        w->listeners_open++;
        rc = uv_tcp_open(&w->listeners[k], fd);
        if (rc < 0) {
            close(fd); /* not the handle's yet */
            return rc;
        }
        rc = uv_listen((uv_stream_t *)&w->listeners[k], 1024, on_connection);
        if (rc < 0)
            return rc;
    }
    return 0;
}

int ag_server_start(const ag_server_options_t *opts, ag_server_t **out)
{
    ag_server_t *srv = calloc(1, sizeof(*srv));
    if (!srv)
        return -ENOMEM;
    srv->opts = *opts;
    srv->opts.inherit_fds = NULL;
    srv->lock_fd = -1;
    uv_mutex_init(&srv->wake_lock);
    for (unsigned i = 0; i < CLIENT_STRIPES; i++)
        uv_mutex_init(&srv->client_locks[i]);
    snprintf(srv->host, sizeof(srv->host), "%s", opts->host ? opts->host : "127.0.0.1");
    srv->opts.host = srv->host;
    srv->nworkers = opts->threads ? opts->threads : 1;
    srv->workers = calloc(srv->nworkers, sizeof(ag_worker_t));
    srv->default_headers = strdup(opts->default_headers ? opts->default_headers : "");
    /* The inherited fds are ours from here on: used, or closed. */
    unsigned ninherit = opts->inherit_fds ? opts->ninherit : 0;
    bool *used = ninherit ? calloc(ninherit, sizeof(bool)) : NULL;
    if (srv->default_headers) {
        srv->default_headers_len = strlen(srv->default_headers);
        int n = asprintf(&srv->busy_response,
                         "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                         "%sConnection: close\r\nContent-Length: %zu\r\n\r\n%s",
                         srv->default_headers, sizeof(busy_body) - 1, busy_body);
        if (n < 0)
            srv->busy_response = NULL;
        else
            srv->busy_response_len = (size_t)n;
    }
    if (srv->workers) {
        for (unsigned i = 0; i < srv->nworkers; i++) {
            uv_mutex_init(&srv->workers[i].tls_lock);
            srv->workers[i].tls = ag_tls_ctx_ref(opts->tls);
        }
    }
    srv->tls = opts->tls != NULL;
    srv->opts.tls = NULL; /* each worker holds its reference; the caller's is borrowed */
    int port = opts->port;
    int rc = 0;
    if (!srv->workers || !srv->busy_response || (ninherit && !used))
        rc = -ENOMEM;
    if (rc == 0 && ninherit &&
        !inherited_match(srv->host, port, opts->inherit_fds, ninherit, &port)) {
        ag_log_info("listen address %s:%d is not the one handed over: listening anew", srv->host,
                    port);
        for (unsigned j = 0; j < ninherit; j++) {
            close(opts->inherit_fds[j]);
            used[j] = true;
        }
        ninherit = 0;
    }
    /* The old process's listen lock goes with its sockets, so the address
     * stays locked across the upgrade; it now names this process. */
    if (opts->inherit_lock_fd > 0) {
        if (rc == 0 && ninherit) {
            srv->lock_fd = opts->inherit_lock_fd;
            char buf[32];
            int len = snprintf(buf, sizeof(buf), "%d\n", (int)getpid());
            if (ftruncate(srv->lock_fd, 0) < 0 || pwrite(srv->lock_fd, buf, (size_t)len, 0) != len)
                ag_log_debug("listen lock: cannot write the pid");
        } else {
            close(opts->inherit_lock_fd);
        }
    }
    if (rc == 0 && !ninherit)
        rc = claim_address(srv, port);
    if (rc < 0) {
        for (unsigned j = 0; j < ninherit; j++) {
            if (!used[j])
                close(opts->inherit_fds[j]);
        }
        free(used);
        server_free(srv);
        return rc;
    }
    unsigned started = 0;
    uint32_t seed = (uint32_t)ag_now_us() ^ (uint32_t)getpid() * 2654435761u;
    for (unsigned i = 0; i < srv->nworkers; i++) {
        ag_worker_t *w = &srv->workers[i];
        w->srv = srv;
        w->index = i;
        w->id_prefix = seed + i * 0x9e3779b9u;
        rc = uv_loop_init(&w->loop);
        if (rc < 0)
            break;
        rc = worker_listen(w, opts->inherit_fds, ninherit, used, port);
        if (rc == 0 && port == 0) {
            port = socket_port(w->listen_fds[0]);
            if (port < 0)
                rc = port;
        }
        if (rc == 0) {
            uv_async_init(&w->loop, &w->wakeup, on_wakeup);
            w->wakeup.data = w;
            uv_timer_init(&w->loop, &w->drain_timer);
            w->drain_timer.data = w;
            w->cpu_scale = 1.0;
            uv_prepare_init(&w->loop, &w->cpu_sample);
            w->cpu_sample.data = w;
            uv_prepare_start(&w->cpu_sample, on_cpu_sample);
            uv_unref((uv_handle_t *)&w->cpu_sample);
            if (opts->hooks.worker_init)
                rc = opts->hooks.worker_init(w, opts->hooks.server_ctx, &w->ctx);
        }
        if (rc < 0) {
            worker_fini_handles(w);
            break;
        }
        started++;
    }
    for (unsigned j = 0; j < ninherit; j++) {
        if (!used[j])
            close(opts->inherit_fds[j]);
    }
    free(used);
    if (rc < 0) {
        for (unsigned i = 0; i < started; i++) {
            ag_worker_t *w = &srv->workers[i];
            if (opts->hooks.worker_fini)
                opts->hooks.worker_fini(w, w->ctx);
            worker_fini_handles(w);
        }
        server_free(srv);
        return rc;
    }
    srv->port = port;
    for (unsigned i = 0; i < srv->nworkers; i++) {
        rc = uv_thread_create(&srv->workers[i].thread, worker_main, &srv->workers[i]);
        if (rc < 0) {
            /* The threads that run stop as on a shutdown; the rest never ran. */
            ag_log_error("cannot start worker thread %u: %s", i, uv_strerror(rc));
            atomic_store(&srv->shutting_down, true);
            for (unsigned j = 0; j < i; j++)
                uv_async_send(&srv->workers[j].wakeup);
            for (unsigned j = 0; j < i; j++)
                uv_thread_join(&srv->workers[j].thread);
            for (unsigned j = i; j < srv->nworkers; j++) {
                ag_worker_t *w = &srv->workers[j];
                if (opts->hooks.worker_fini)
                    opts->hooks.worker_fini(w, w->ctx);
                worker_fini_handles(w);
            }
            server_free(srv);
            return rc;
        }
    }
    *out = srv;
    return 0;
}

unsigned ag_server_listen_fds(const ag_server_t *srv, int *out, unsigned max)
{
    unsigned n = 0;
    for (unsigned i = 0; i < srv->nworkers; i++) {
        const ag_worker_t *w = &srv->workers[i];
        for (unsigned k = 0; k < w->nlisteners && n < max; k++)
            out[n++] = w->listen_fds[k];
    }
    return n;
}

int ag_server_lock_fd(const ag_server_t *srv)
{
    return srv->lock_fd;
}

void ag_server_cut(ag_server_t *srv)
{
    atomic_store(&srv->cut, true);
    ag_server_shutdown(srv);
}

void ag_server_handover(ag_server_t *srv)
{
    atomic_store(&srv->keep_idle, true);
    ag_server_shutdown(srv);
}

void ag_server_shutdown(ag_server_t *srv)
{
    atomic_store(&srv->shutting_down, true);
    uv_mutex_lock(&srv->wake_lock);
    for (unsigned i = 0; i < srv->nworkers; i++) {
        if (!srv->workers[i].wakeup_closed)
            uv_async_send(&srv->workers[i].wakeup);
    }
    uv_mutex_unlock(&srv->wake_lock);
}

void ag_server_wait(ag_server_t *srv)
{
    for (unsigned i = 0; i < srv->nworkers; i++) {
        if (!srv->workers[i].joined)
            uv_thread_join(&srv->workers[i].thread);
        srv->workers[i].joined = true;
    }
}

void ag_server_free(ag_server_t *srv)
{
    ag_server_wait(srv);
    server_free(srv);
}

void ag_server_wait_and_free(ag_server_t *srv)
{
    ag_server_free(srv);
}
