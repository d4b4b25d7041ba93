/* SPDX-License-Identifier: MIT
 *
 * client.c: libcurl's multi-socket API on a libuv loop. curl tells us which
 * sockets to watch and when to wake it; we never block the loop.
 */
#include "util/platform.h"

#include <errno.h>
#include <string.h>
#include <strings.h>

#include <curl/curl.h>

#include "upstream/client.h"
#include "upstream/h1_client.h"
#include "util/buf.h"
#include "util/errors.h"
#include "util/log.h"

#define MAX_HEADER_BYTES 65536
#define EASY_CACHE 64

typedef struct sock_ctx {
    uv_poll_t poll;
    curl_socket_t fd;
    ag_upstream_t *u;
    struct sock_ctx *prev, *next;
} sock_ctx_t;

struct ag_upstream_xfer {
    bool native; /* first, false: h1_client.c's transfers start with a true one */
    ag_upstream_t *u;
    CURL *easy;
    struct curl_slist *headers;
    ag_buf_t body;
    ag_buf_t resp_headers;
    ag_upstream_done_cb done;
    void *ctx;
    int (*on_data)(void *ctx, int status, ag_str_t headers, const char *data, size_t len);
    int64_t start_us;
    int64_t cpu_us; /* our share of the loop's time in libcurl for this transfer */
    bool touched;   /* libcurl handed it bytes in the current socket action */
    bool paused;
    bool aborted_by_callback;
    bool overflow;
    uv_timer_t *idle; /* idle_timeout_ms: no byte for this long ends the transfer */
    unsigned idle_ms;
    ag_upstream_xfer_t *prev, *next;
};

struct ag_upstream {
    uv_loop_t *loop;
    ag_h1_client_t *h1; /* the native client, for http:// (upstream_client = "native") */
    CURLM *multi;
    uv_timer_t timer;
    CURL *easy_cache[EASY_CACHE];
    unsigned neasy;
    ag_upstream_xfer_t *xfers;
    sock_ctx_t *socks;
    unsigned active;
    bool closing;
    int closes_pending;
    ag_upstream_xfer_t *touched[16]; /* transfers that got bytes in this socket action */
    unsigned ntouched;
};

/* Splits the time of one socket action among the transfers it moved, so each
 * request's CPU figure includes its part of libcurl's work. */
static void account_action(ag_upstream_t *u, int64_t t0)
{
    if (u->ntouched == 0)
        return;
    int64_t share = (ag_mono_us() - t0) / u->ntouched;
    for (unsigned i = 0; i < u->ntouched; i++) {
        u->touched[i]->cpu_us += share;
        u->touched[i]->touched = false;
    }
    u->ntouched = 0;
}

static void mark_touched(ag_upstream_xfer_t *x)
{
    ag_upstream_t *u = x->u;
    if (x->touched || u->ntouched == AG_ARRAY_LEN(u->touched))
        return;
    x->touched = true;
    u->touched[u->ntouched++] = x;
}

/* Set once before any worker starts (RESTART key), read by every loop after. */
static bool use_native = false;

void ag_upstream_set_native(bool native)
{
    use_native = native;
}

static char *ca_file_path; /* NULL: libcurl's (the system) bundle */

int ag_upstream_set_ca_file(const char *ca_file, char *err, size_t errlen)
{
    free(ca_file_path);
    ca_file_path = ca_file && *ca_file ? strdup(ca_file) : NULL;
    return ag__h1_tls_init(ca_file_path, err, errlen);
}

int ag_upstream_global_init(void)
{
    /* With the native client, libcurl is loaded at its first use, if any
     * (util/curl_lazy.c); with "curl", now, so a missing one stops the start. */
    if (use_native)
        return 0;
    return curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK ? 0 : AG_EUPSTREAM;
}

void ag_upstream_warm_tls(const char *upstream_url)
{
    if (use_native && upstream_url && strncasecmp(upstream_url, "https://", 8) == 0)
        ag__h1_tls_warm();
}

void ag_upstream_global_cleanup(void)
{
    ag__h1_tls_warm_join();
    curl_global_cleanup();
}

unsigned ag_upstream_active(const ag_upstream_t *u)
{
    return u->active + ag__h1_active(u->h1);
}

static void check_multi_info(ag_upstream_t *u);

static void on_poll(uv_poll_t *p, int status, int events)
{
    sock_ctx_t *sc = p->data;
    ag_upstream_t *u = sc->u;
    int flags = 0;
    if (status < 0)
        flags = CURL_CSELECT_ERR;
    if (events & UV_READABLE)
        flags |= CURL_CSELECT_IN;
    if (events & UV_WRITABLE)
        flags |= CURL_CSELECT_OUT;
    int running;
    int64_t t0 = ag_mono_us();
    curl_multi_socket_action(u->multi, sc->fd, flags, &running);
    account_action(u, t0);
    check_multi_info(u);
}

static void on_poll_closed(uv_handle_t *h)
{
    free(h->data);
}

static void sock_release(ag_upstream_t *u, sock_ctx_t *sc)
{
    if (sc->prev)
        sc->prev->next = sc->next;
    else
        u->socks = sc->next;
    if (sc->next)
        sc->next->prev = sc->prev;
    uv_poll_stop(&sc->poll);
    uv_close((uv_handle_t *)&sc->poll, on_poll_closed);
}

static int socket_cb(CURL *easy, curl_socket_t s, int what, void *userp, void *socketp)
{
    ag_upstream_t *u = userp;
    sock_ctx_t *sc = socketp;
    AG_UNUSED(easy);
    if (what == CURL_POLL_REMOVE) {
        if (sc) {
            sock_release(u, sc);
            curl_multi_assign(u->multi, s, NULL);
        }
        return 0;
    }
    if (!sc) {
        sc = calloc(1, sizeof(*sc));
        if (!sc)
            return -1;
        sc->fd = s;
        sc->u = u;
        if (uv_poll_init_socket(u->loop, &sc->poll, s) < 0) {
            free(sc);
            return -1;
        }
        sc->poll.data = sc;
        sc->next = u->socks;
        if (u->socks)
            u->socks->prev = sc;
        u->socks = sc;
        curl_multi_assign(u->multi, s, sc);
    }
    int events = 0;
    if (what & CURL_POLL_IN)
        events |= UV_READABLE;
    if (what & CURL_POLL_OUT)
        events |= UV_WRITABLE;
    uv_poll_start(&sc->poll, events, on_poll);
    return 0;
}

static void on_timeout(uv_timer_t *t)
{
    ag_upstream_t *u = t->data;
    int running;
    int64_t t0 = ag_mono_us();
    curl_multi_socket_action(u->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    account_action(u, t0);
    check_multi_info(u);
}

static int timer_cb(CURLM *multi, long timeout_ms, void *userp)
{
    ag_upstream_t *u = userp;
    AG_UNUSED(multi);
    if (u->closing)
        return 0;
    if (timeout_ms < 0)
        uv_timer_stop(&u->timer);
    else
        uv_timer_start(&u->timer, on_timeout, (uint64_t)timeout_ms, 0);
    return 0;
}

/* The libcurl multi handle: at the first transfer the native client
 * declines (so libcurl is loaded only then), or at start with "curl". */
static int multi_open(ag_upstream_t *u)
{
    if (u->multi)
        return 0;
    u->multi = curl_multi_init();
    if (!u->multi)
        return -ENOMEM;
    curl_multi_setopt(u->multi, CURLMOPT_SOCKETFUNCTION, socket_cb);
    curl_multi_setopt(u->multi, CURLMOPT_SOCKETDATA, u);
    curl_multi_setopt(u->multi, CURLMOPT_TIMERFUNCTION, timer_cb);
    curl_multi_setopt(u->multi, CURLMOPT_TIMERDATA, u);
    curl_multi_setopt(u->multi, CURLMOPT_PIPELINING, CURLPIPE_MULTIPLEX);
    curl_multi_setopt(u->multi, CURLMOPT_MAXCONNECTS, 512L);
    return 0;
}

int ag_upstream_new(uv_loop_t *loop, ag_upstream_t **out)
{
    ag_upstream_t *u = calloc(1, sizeof(*u));
    if (!u)
        return -ENOMEM;
    u->loop = loop;
    if (use_native && ag__h1_client_new(loop, &u->h1) < 0) {
        free(u);
        return -ENOMEM;
    }
    if (!use_native && multi_open(u) < 0) {
        free(u);
        return -ENOMEM;
    }
    uv_timer_init(loop, &u->timer);
    u->timer.data = u;
    *out = u;
    return 0;
}

static void xfer_unlink(ag_upstream_xfer_t *x)
{
    ag_upstream_t *u = x->u;
    if (x->prev)
        x->prev->next = x->next;
    else
        u->xfers = x->next;
    if (x->next)
        x->next->prev = x->prev;
    u->active--;
}

static void on_idle_closed(uv_handle_t *h)
{
    free(h);
}

static void xfer_free(ag_upstream_xfer_t *x)
{
    ag_upstream_t *u = x->u;
    for (unsigned i = 0; i < u->ntouched; i++) {
        if (u->touched[i] == x)
            u->touched[i--] = u->touched[--u->ntouched];
    }
    if (x->idle) {
        uv_timer_stop(x->idle);
        uv_close((uv_handle_t *)x->idle, on_idle_closed);
        x->idle = NULL;
    }
    curl_multi_remove_handle(u->multi, x->easy);
    curl_easy_setopt(x->easy, CURLOPT_HTTPHEADER, NULL);
    curl_slist_free_all(x->headers);
    if (!u->closing && u->neasy < EASY_CACHE) {
        curl_easy_reset(x->easy);
        u->easy_cache[u->neasy++] = x->easy;
    } else {
        curl_easy_cleanup(x->easy);
    }
    ag_buf_fini(&x->body);
    ag_buf_fini(&x->resp_headers);
    free(x);
}

static void on_timer_closed(uv_handle_t *h)
{
    ag_upstream_t *u = h->data;
    for (unsigned i = 0; i < u->neasy; i++)
        curl_easy_cleanup(u->easy_cache[i]);
    free(u);
}

void ag_upstream_close(ag_upstream_t *u)
{
    if (!u)
        return;
    u->closing = true;
    ag__h1_client_close(u->h1);
    u->h1 = NULL;
    while (u->xfers) {
        ag_upstream_xfer_t *x = u->xfers;
        xfer_unlink(x);
        xfer_free(x);
    }
    /* Cleaning up the multi handle closes its pooled connections; any poll
     * curl did not remove on the way is closed here, the timer last. */
    uv_timer_stop(&u->timer);
    if (u->multi)
        curl_multi_cleanup(u->multi);
    u->multi = NULL;
    while (u->socks)
        sock_release(u, u->socks);
    uv_close((uv_handle_t *)&u->timer, on_timer_closed);
}

static void on_idle(uv_timer_t *t);

/* Any byte from upstream (a ping too) shows the transfer is alive. */
static void xfer_alive(ag_upstream_xfer_t *x)
{
    mark_touched(x);
    if (x->idle)
        uv_timer_start(x->idle, on_idle, x->idle_ms, 0);
}

static size_t header_cb(char *data, size_t size, size_t n, void *userp)
{
    ag_upstream_xfer_t *x = userp;
    size_t len = size * n;
    xfer_alive(x);
    /* A new status line (after 100 Continue, say) starts a new header block. */
    if (len > 5 && memcmp(data, "HTTP/", 5) == 0)
        ag_buf_reset(&x->resp_headers);
    if (ag_buf_append(&x->resp_headers, data, len) < 0)
        return 0;
    return len;
}

static size_t write_cb(char *data, size_t size, size_t n, void *userp)
{
    ag_upstream_xfer_t *x = userp;
    size_t len = size * n;
    xfer_alive(x);
    if (x->on_data) {
        long status = 0;
        curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &status);
        if (status >= 200 && status < 300) {
            ag_str_t hdrs =
                ag_str(x->resp_headers.data ? x->resp_headers.data : "", x->resp_headers.len);
            int rc = x->on_data(x->ctx, (int)status, hdrs, data, len);
            if (rc == AG_EAGAIN) {
                /* Paused for a slow client: the upstream is not idle, we are. */
                x->paused = true;
                if (x->idle)
                    uv_timer_stop(x->idle);
                return CURL_WRITEFUNC_PAUSE;
            }
            if (rc != 0) {
                x->aborted_by_callback = true;
                return 0;
            }
            return len;
        }
    }
    if (ag_buf_append(&x->body, data, len) < 0) {
        x->overflow = true;
        return 0;
    }
    return len;
}

int ag_upstream_start(ag_upstream_t *u, const ag_upstream_request_t *req, ag_upstream_done_cb done,
                      void *ctx, ag_upstream_xfer_t **out)
{
    if (u->closing)
        return AG_EUPSTREAM;
    if (u->h1) {
        int hrc = ag__h1_start(u->h1, req, done, ctx, out);
        if (hrc != AG_EDECLINED)
            return hrc;
    }
    if (multi_open(u) < 0)
        return AG_EUPSTREAM;
    ag_upstream_xfer_t *x = calloc(1, sizeof(*x));
    if (!x)
        return -ENOMEM;
    x->u = u;
    x->easy = u->neasy ? u->easy_cache[--u->neasy] : curl_easy_init();
    if (!x->easy) {
        free(x);
        return -ENOMEM;
    }
    ag_buf_init(&x->body, req->max_response_bytes ? req->max_response_bytes : 16u << 20);
    ag_buf_init(&x->resp_headers, MAX_HEADER_BYTES);
    x->done = done;
    x->ctx = ctx;
    x->on_data = req->on_data;
    x->start_us = ag_mono_us();
    /* curl would add "Expect: 100-continue" to larger POSTs, costing a round trip. */
    for (size_t i = 0; i <= req->nheaders; i++) {
        struct curl_slist *h =
            curl_slist_append(x->headers, i < req->nheaders ? req->headers[i] : "Expect:");
        if (!h) {
            /* Out of memory: a call without its key or version would only fail upstream. */
            curl_slist_free_all(x->headers);
            curl_easy_cleanup(x->easy);
            ag_buf_fini(&x->body);
            ag_buf_fini(&x->resp_headers);
            free(x);
            return -ENOMEM;
        }
        x->headers = h;
    }
    CURL *e = x->easy;
    curl_easy_setopt(e, CURLOPT_URL, req->url);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, x->headers);
    if (req->body) {
        curl_easy_setopt(e, CURLOPT_POST, 1L);
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, req->body);
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)req->body_len);
    }
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, write_cb);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, x);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, header_cb);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, x);
    curl_easy_setopt(e, CURLOPT_PRIVATE, x);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_2TLS);
    /* Waiting for a connection to multiplex pays only over HTTP/2, which needs
     * TLS here: over HTTP/1.1 it makes a request wait for another to finish. */
    curl_easy_setopt(e, CURLOPT_PIPEWAIT, strncmp(req->url, "https:", 6) == 0 ? 1L : 0L);
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 1L);
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 2L);
    if (ca_file_path)
        curl_easy_setopt(e, CURLOPT_CAINFO, ca_file_path);
    curl_easy_setopt(e, CURLOPT_TCP_NODELAY, 1L);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    if (req->connect_timeout_ms)
        curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)req->connect_timeout_ms);
    if (req->timeout_ms)
        curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)req->timeout_ms);
    /* Our own timer rather than CURLOPT_LOW_SPEED_*: curl averages the speed
     * over seconds, so a stall right after a burst goes unnoticed for long. */
    if (req->idle_timeout_ms) {
        x->idle = malloc(sizeof(*x->idle));
        if (x->idle) {
            uv_timer_init(u->loop, x->idle);
            x->idle->data = x;
            x->idle_ms = req->idle_timeout_ms;
            uv_timer_start(x->idle, on_idle, x->idle_ms, 0);
        }
    }
    CURLMcode mc = curl_multi_add_handle(u->multi, e);
    if (mc != CURLM_OK) {
        curl_slist_free_all(x->headers);
        curl_easy_cleanup(e);
        ag_buf_fini(&x->body);
        ag_buf_fini(&x->resp_headers);
        free(x);
        return AG_EUPSTREAM;
    }
    x->next = u->xfers;
    if (u->xfers)
        u->xfers->prev = x;
    u->xfers = x;
    u->active++;
    if (out)
        *out = x;
    return 0;
}

void ag_upstream_cancel(ag_upstream_xfer_t *x)
{
    if (!x)
        return;
    if (x->native) {
        ag__h1_cancel(x);
        return;
    }
    xfer_unlink(x);
    xfer_free(x);
}

void ag_upstream_resume(ag_upstream_xfer_t *x)
{
    if (x && x->native) {
        ag__h1_resume(x);
        return;
    }
    if (x && x->paused) {
        x->paused = false;
        if (x->idle)
            uv_timer_start(x->idle, on_idle, x->idle_ms, 0);
        curl_easy_pause(x->easy, CURLPAUSE_CONT);
    }
}

static void on_idle(uv_timer_t *t)
{
    ag_upstream_xfer_t *x = t->data;
    ag_upstream_response_t resp = {0};
    long status = 0;
    curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &status);
    resp.status = (int)status;
    resp.error = AG_EUPSTREAM_TIMEOUT;
    resp.error_text = "no data from upstream within the idle timeout";
    resp.body = ag_str(x->body.data ? x->body.data : "", x->body.len);
    resp.headers = ag_str(x->resp_headers.data ? x->resp_headers.data : "", x->resp_headers.len);
    resp.duration_us = ag_mono_us() - x->start_us;
    resp.cpu_us = x->cpu_us;
    xfer_unlink(x);
    curl_multi_remove_handle(x->u->multi, x->easy);
    x->done(x->ctx, &resp);
    xfer_free(x);
}

static void check_multi_info(ag_upstream_t *u)
{
    CURLMsg *msg;
    int left;
    while ((msg = curl_multi_info_read(u->multi, &left)) != NULL) {
        if (msg->msg != CURLMSG_DONE)
            continue;
        ag_upstream_xfer_t *x = NULL;
        curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&x);
        if (!x)
            continue;
        CURLcode cc = msg->data.result;
        ag_upstream_response_t resp = {0};
        long status = 0;
        curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &status);
        resp.status = cc == CURLE_OK ? (int)status : 0;
        if (cc != CURLE_OK) {
            resp.error = (cc == CURLE_OPERATION_TIMEDOUT) ? AG_EUPSTREAM_TIMEOUT : AG_EUPSTREAM;
            resp.error_text = x->overflow ? "response too large" : curl_easy_strerror(cc);
            resp.status = (int)status; /* what arrived before the failure, if anything */
        }
        resp.body = ag_str(x->body.data ? x->body.data : "", x->body.len);
        resp.headers =
            ag_str(x->resp_headers.data ? x->resp_headers.data : "", x->resp_headers.len);
        resp.duration_us = ag_mono_us() - x->start_us;
        resp.cpu_us = x->cpu_us;
        xfer_unlink(x);
        ag_upstream_done_cb done = x->done;
        void *ctx = x->ctx;
        /* The callback may start new transfers; the finished one is freed after it. */
        curl_multi_remove_handle(u->multi, x->easy);
        done(ctx, &resp);
        xfer_free(x);
    }
}

ag_str_t ag_upstream_header(ag_str_t headers, const char *name)
{
    size_t nlen = strlen(name);
    const char *p = headers.ptr, *end = headers.ptr + headers.len;
    while (p < end) {
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        const char *line_end = eol ? eol : end;
        if ((size_t)(line_end - p) > nlen && p[nlen] == ':' && strncasecmp(p, name, nlen) == 0) {
            const char *v = p + nlen + 1;
            while (v < line_end && (*v == ' ' || *v == '\t'))
                v++;
            const char *ve = line_end;
            while (ve > v && (ve[-1] == '\r' || ve[-1] == ' ' || ve[-1] == '\t'))
                ve--;
            return ag_str(v, (size_t)(ve - v));
        }
        p = eol ? eol + 1 : end;
    }
    return AG_STR_NULL;
}
