/* SPDX-License-Identifier: MIT
 *
 * sse_upstream.c: ag_sse_upstream, the streaming upstream of bench scenario S4. It answers
 * POST /v1/messages with "stream": true by Anthropic's event sequence, paced by a timer (one
 * text_delta per word, a fixed delay between deltas), so that a thousand streams can stay open
 * for seconds while costing the machine almost nothing. One thread, epoll and a min-heap of due
 * times; standalone like ag_loadgen. tests/fake-upstream/fake-anthropic.js stays the reference
 * for the wire format: this one keeps its event order and prompt tags and drops its checks and
 * faults, for speed.
 */
#include "util/platform.h"

#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define NS_PER_MS 1000000ull
#define NS_PER_S 1000000000ull

#define RBUF_INIT 4096u
#define RBUF_CAP (64u * 1024u) /* one request, head and body, must fit */
/* Past this many unsent bytes a stream stops producing events until the socket drains, as the
 * Node fake waits for 'drain': a slow reader costs memory up to this bound, not more. */
#define OUT_HIGH (64u * 1024u)
#define OUT_MAX (4u << 20)
#define MAX_WORDS 1000000u
#define MAX_JSON_WORDS 50000u /* a non-streamed reply is built whole */
#define INPUT_TOKENS 10       /* fixed: nothing here depends on the prompt's length */

static uint64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * NS_PER_S + (uint64_t)ts.tv_nsec;
}

typedef struct conn {
    int fd;
    uint32_t events; /* what epoll watches now */
    char *rbuf;
    size_t rlen, rcap;
    char *out;
    size_t olen, ooff, ocap;
    bool close_after; /* Connection: close, HTTP/1.0 or an error answer */
    bool continued;   /* 100 Continue already sent for the request being read */
    bool streaming;
    int heap_idx; /* position in the timer heap, -1 when not waiting for a due time */
    uint32_t words, next_word;
    uint64_t due_ns, delay_ns;
    uint64_t msg_no;
    char model[64];
} conn_t;

typedef struct stats {
    uint64_t requests, streams, streams_completed, streams_aborted, messages, errors;
    uint64_t connections, open_connections, max_open_connections;
    uint64_t active_streams, max_active_streams, events;
} stats_t;

typedef struct srv {
    int epfd, lfd;
    const char *api_key;
    uint32_t default_words;
    uint64_t default_delay_ns;
    conn_t **heap;
    size_t heap_len, heap_cap;
    stats_t st;
} srv_t;

static volatile sig_atomic_t g_stop;

static void on_signal(int sig)
{
    AG_UNUSED(sig);
    g_stop = 1;
}

/* ---- timer heap: streams waiting for their next delta, earliest due first ---------------- */

static void heap_swap(srv_t *s, size_t a, size_t b)
{
    conn_t *t = s->heap[a];
    s->heap[a] = s->heap[b];
    s->heap[b] = t;
    s->heap[a]->heap_idx = (int)a;
    s->heap[b]->heap_idx = (int)b;
}

static void heap_up(srv_t *s, size_t i)
{
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (s->heap[p]->due_ns <= s->heap[i]->due_ns)
            break;
        heap_swap(s, p, i);
        i = p;
    }
}

static void heap_down(srv_t *s, size_t i)
{
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < s->heap_len && s->heap[l]->due_ns < s->heap[m]->due_ns)
            m = l;
        if (r < s->heap_len && s->heap[r]->due_ns < s->heap[m]->due_ns)
            m = r;
        if (m == i)
            return;
        heap_swap(s, i, m);
        i = m;
    }
}

static int heap_push(srv_t *s, conn_t *c)
{
    if (s->heap_len == s->heap_cap) {
        size_t cap = s->heap_cap ? s->heap_cap * 2 : 1024;
        conn_t **nh = realloc(s->heap, cap * sizeof(*nh));
        if (!nh)
            return -ENOMEM;
        s->heap = nh;
        s->heap_cap = cap;
    }
    s->heap[s->heap_len] = c;
    c->heap_idx = (int)s->heap_len;
    s->heap_len++;
    heap_up(s, (size_t)c->heap_idx);
    return 0;
}

static void heap_remove(srv_t *s, conn_t *c)
{
    if (c->heap_idx < 0)
        return;
    size_t i = (size_t)c->heap_idx;
    s->heap_len--;
    if (i != s->heap_len) {
        heap_swap(s, i, s->heap_len);
        heap_down(s, i);
        heap_up(s, i);
    }
    c->heap_idx = -1;
}

/* ---- connections ------------------------------------------------------------------------ */

static void conn_watch(srv_t *s, conn_t *c, uint32_t events)
{
    if (c->events == events)
        return;
    struct epoll_event ev = {.events = events, .data.ptr = c};
    epoll_ctl(s->epfd, EPOLL_CTL_MOD, c->fd, &ev);
    c->events = events;
}

static void conn_close(srv_t *s, conn_t *c)
{
    heap_remove(s, c);
    if (c->streaming) {
        s->st.streams_aborted++;
        s->st.active_streams--;
    }
    close(c->fd); /* also leaves epoll */
    s->st.open_connections--;
    free(c->rbuf);
    free(c->out);
    free(c);
}

static size_t pending(const conn_t *c)
{
    return c->olen - c->ooff;
}

static int out_append(conn_t *c, const char *p, size_t n)
{
    if (c->olen + n > c->ocap && c->ooff > 0) {
        memmove(c->out, c->out + c->ooff, c->olen - c->ooff);
        c->olen -= c->ooff;
        c->ooff = 0;
    }
    if (c->olen + n > c->ocap) {
        size_t cap = c->ocap ? c->ocap : 4096;
        while (cap < c->olen + n)
            cap *= 2;
        if (cap > OUT_MAX)
            return -ENOBUFS;
        char *nb = realloc(c->out, cap);
        if (!nb)
            return -ENOMEM;
        c->out = nb;
        c->ocap = cap;
    }
    memcpy(c->out + c->olen, p, n);
    c->olen += n;
    return 0;
}

static int out_printf(conn_t *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int out_printf(conn_t *c, const char *fmt, ...)
{
    char tmp[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof(tmp))
        return -ENOBUFS;
    return out_append(c, tmp, (size_t)n);
}

/* Sends what is queued. Returns 0, or -1 when the connection failed and was closed. */
static int conn_flush(srv_t *s, conn_t *c)
{
    while (c->ooff < c->olen) {
        ssize_t n = send(c->fd, c->out + c->ooff, c->olen - c->ooff, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                conn_watch(s, c, EPOLLIN | EPOLLOUT);
                return 0;
            }
            conn_close(s, c);
            return -1;
        }
        c->ooff += (size_t)n;
    }
    c->olen = c->ooff = 0;
    conn_watch(s, c, EPOLLIN);
    return 0;
}

/* ---- answers ------------------------------------------------------------------------------ */

static int respond(srv_t *s, conn_t *c, int status, const char *reason, const char *ctype,
                   const char *body, size_t len)
{
    if (status >= 400)
        s->st.errors++;
    int rc = out_printf(c,
                        "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                        "request-id: req_bench_%" PRIu64 "\r\n%s\r\n",
                        status, reason, ctype, len, s->st.requests,
                        c->close_after ? "Connection: close\r\n" : "");
    return rc < 0 ? rc : out_append(c, body, len);
}

static int respond_error(srv_t *s, conn_t *c, int status, const char *reason, const char *type,
                         const char *msg)
{
    char body[512];
    int n =
        snprintf(body, sizeof(body),
                 "{\"type\":\"error\",\"error\":{\"type\":\"%s\",\"message\":\"%s\"}}", type, msg);
    return respond(s, c, status, reason, "application/json", body, (size_t)n);
}

/* One SSE event as one HTTP chunk: "event: NAME\ndata: DATA\n\n". */
static int emit(srv_t *s, conn_t *c, const char *name, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int emit(srv_t *s, conn_t *c, const char *name, const char *fmt, ...)
{
    char data[768];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(data, sizeof(data), fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof(data))
        return -ENOBUFS;
    size_t ev_len = strlen("event: ") + strlen(name) + strlen("\ndata: ") + (size_t)n + 2;
    s->st.events++;
    return out_printf(c, "%zx\r\nevent: %s\ndata: %s\n\n\r\n", ev_len, name, data);
}

/* Emits what is due of the stream on c: the next delta when its time has come, or, with no
 * delay, as many as the output bound allows; then the closing events. Returns true when it
 * emitted anything. Leaves c in the heap when the next delta is not due yet. */
static bool stream_pump(srv_t *s, conn_t *c, uint64_t now, int *err)
{
    bool emitted = false;
    *err = 0;
    while (c->streaming) {
        if (pending(c) >= OUT_HIGH)
            return emitted; /* resumed once the socket drains */
        if (c->next_word < c->words) {
            if (c->next_word > 0 && c->delay_ns > 0 && now < c->due_ns) {
                *err = heap_push(s, c);
                return emitted;
            }
            *err = emit(s, c, "content_block_delta",
                        "{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":"
                        "\"text_delta\",\"text\":\"%sw%" PRIu32 "\"}}",
                        c->next_word ? " " : "", c->next_word + 1);
            c->next_word++;
            /* From the previous due time, not from now: a stream lasts (words-1) x delay
             * whatever the wake-up jitter, and a late one catches up. */
            c->due_ns += c->delay_ns;
            emitted = true;
            if (*err < 0)
                return emitted;
            continue;
        }
        *err = emit(s, c, "content_block_stop", "{\"type\":\"content_block_stop\",\"index\":0}");
        if (*err == 0)
            *err = emit(s, c, "message_delta",
                        "{\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\","
                        "\"stop_sequence\":null},\"usage\":{\"input_tokens\":%d,"
                        "\"cache_creation_input_tokens\":0,\"cache_read_input_tokens\":0,"
                        "\"output_tokens\":%" PRIu32 "}}",
                        INPUT_TOKENS, c->words);
        if (*err == 0)
            *err = emit(s, c, "message_stop", "{\"type\":\"message_stop\"}");
        if (*err == 0)
            *err = out_append(c, "0\r\n\r\n", 5);
        c->streaming = false;
        s->st.active_streams--;
        s->st.streams_completed++;
        return true;
    }
    return emitted;
}

/* The value of tag "[[NAME:N]]" anywhere in the body, or -1. */
static long body_tag(const char *body, size_t len, const char *name)
{
    char pat[32];
    int n = snprintf(pat, sizeof(pat), "[[%s:", name);
    const char *p = memmem(body, len, pat, (size_t)n);
    if (!p)
        return -1;
    p += n;
    const char *end = body + len;
    long v = 0;
    int digits = 0;
    while (p < end && *p >= '0' && *p <= '9' && digits < 9) {
        v = v * 10 + (*p++ - '0');
        digits++;
    }
    return digits && p + 1 < end && p[0] == ']' && p[1] == ']' ? v : -1;
}

/* True when the JSON body has "stream": true at any depth; the bodies here are ours. */
static bool body_streams(const char *body, size_t len)
{
    const char *end = body + len;
    const char *p = body;
    while (p < end) {
        const char *k = memmem(p, (size_t)(end - p), "\"stream\"", 8);
        if (!k)
            return false;
        p = k + 8;
        while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
            p++;
        if (p < end && *p == ':') {
            p++;
            while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
                p++;
            return end - p >= 4 && memcmp(p, "true", 4) == 0;
        }
    }
    return false;
}

/* The request's "model", when it is a plain identifier; a fixed name otherwise. */
static void body_model(const char *body, size_t len, char out[64])
{
    snprintf(out, 64, "claude-bench");
    const char *end = body + len;
    const char *k = memmem(body, len, "\"model\"", 7);
    if (!k)
        return;
    const char *p = k + 7;
    while (p < end && (*p == ' ' || *p == ':'))
        p++;
    if (p >= end || *p != '"')
        return;
    p++;
    size_t n = 0;
    while (p + n < end && p[n] != '"' && n < 63) {
        char ch = p[n];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == '-' || ch == '.' || ch == '_' || ch == ':'))
            return;
        n++;
    }
    if (n == 0 || p + n >= end || p[n] != '"')
        return;
    memcpy(out, p, n);
    out[n] = '\0';
}

static int stream_start(srv_t *s, conn_t *c, const char *body, size_t len, uint64_t now)
{
    long w = body_tag(body, len, "words");
    long d = body_tag(body, len, "delay");
    c->words = w >= 0 ? (uint32_t)(w > (long)MAX_WORDS ? MAX_WORDS : w) : s->default_words;
    c->delay_ns = d >= 0 ? (uint64_t)d * NS_PER_MS : s->default_delay_ns;
    c->next_word = 0;
    c->due_ns = now;
    c->msg_no = ++s->st.streams;
    c->streaming = true;
    if (++s->st.active_streams > s->st.max_active_streams)
        s->st.max_active_streams = s->st.active_streams;
    int rc = out_printf(c,
                        "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream; charset=utf-8\r\n"
                        "Cache-Control: no-cache\r\nrequest-id: req_bench_%" PRIu64 "\r\n"
                        "Transfer-Encoding: chunked\r\n%s\r\n",
                        s->st.requests, c->close_after ? "Connection: close\r\n" : "");
    if (rc == 0)
        rc = emit(s, c, "message_start",
                  "{\"type\":\"message_start\",\"message\":{\"id\":\"msg_bench_%" PRIu64 "\","
                  "\"type\":\"message\",\"role\":\"assistant\",\"model\":\"%s\",\"content\":[],"
                  "\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{\"input_tokens\":%d,"
                  "\"cache_creation_input_tokens\":0,\"cache_read_input_tokens\":0,"
                  "\"output_tokens\":1}}}",
                  c->msg_no, c->model, INPUT_TOKENS);
    if (rc == 0)
        rc = emit(s, c, "content_block_start",
                  "{\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":"
                  "\"text\",\"text\":\"\"}}");
    if (rc == 0)
        rc = emit(s, c, "ping", "{\"type\": \"ping\"}");
    return rc;
}

static int message_reply(srv_t *s, conn_t *c, const char *body, size_t len)
{
    long w = body_tag(body, len, "words");
    uint32_t words =
        w >= 0 ? (uint32_t)(w > (long)MAX_JSON_WORDS ? MAX_JSON_WORDS : w) : s->default_words;
    s->st.messages++;
    size_t cap = 512 + (size_t)words * 12;
    char *b = malloc(cap);
    if (!b)
        return -ENOMEM;
    size_t o = (size_t)snprintf(b, cap,
                                "{\"id\":\"msg_bench_%" PRIu64 "\",\"type\":\"message\",\"role\":"
                                "\"assistant\",\"model\":\"%s\",\"content\":[{\"type\":\"text\","
                                "\"text\":\"",
                                s->st.requests, c->model);
    for (uint32_t i = 0; i < words; i++)
        o += (size_t)snprintf(b + o, cap - o, "%sw%" PRIu32, i ? " " : "", i + 1);
    o += (size_t)snprintf(b + o, cap - o,
                          "\"}],\"stop_reason\":\"end_turn\",\"stop_sequence\":null,\"usage\":"
                          "{\"input_tokens\":%d,\"cache_creation_input_tokens\":0,"
                          "\"cache_read_input_tokens\":0,\"output_tokens\":%" PRIu32 "}}",
                          INPUT_TOKENS, words);
    int rc = respond(s, c, 200, "OK", "application/json", b, o);
    free(b);
    return rc;
}

static int stats_reply(srv_t *s, conn_t *c)
{
    char b[1024];
    const stats_t *t = &s->st;
    int n =
        snprintf(b, sizeof(b),
                 "{\"requests\":%" PRIu64 ",\"streams\":%" PRIu64 ",\"streams_completed\":%" PRIu64
                 ",\"streams_aborted\":%" PRIu64 ",\"active_streams\":%" PRIu64
                 ",\"max_active_streams\":%" PRIu64 ",\"messages\":%" PRIu64 ",\"errors\":%" PRIu64
                 ",\"events\":%" PRIu64 ",\"connections\":%" PRIu64 ",\"open_connections\":%" PRIu64
                 ",\"max_open_connections\":%" PRIu64 "}",
                 t->requests, t->streams, t->streams_completed, t->streams_aborted,
                 t->active_streams, t->max_active_streams, t->messages, t->errors, t->events,
                 t->connections, t->open_connections, t->max_open_connections);
    return respond(s, c, 200, "OK", "application/json", b, (size_t)n);
}

static bool hname(const char *line, size_t nlen, const char *want)
{
    return nlen == strlen(want) && strncasecmp(line, want, nlen) == 0;
}

/* Serves the request at the start of c->rbuf if it is all there. Returns 1 when it consumed
 * one, 0 when more bytes are needed, negative when the connection must go. */
static int serve_one(srv_t *s, conn_t *c, uint64_t now)
{
    const char *hend = c->rlen ? memmem(c->rbuf, c->rlen, "\r\n\r\n", 4) : NULL;
    if (!hend) {
        if (c->rlen < RBUF_CAP)
            return 0;
        c->close_after = true;
        return respond_error(s, c, 431, "Request Header Fields Too Large", "invalid_request_error",
                             "request head too large") < 0
                   ? -1
                   : 1;
    }
    size_t head_len = (size_t)(hend - c->rbuf) + 4;
    const char *p = c->rbuf, *end = c->rbuf + head_len - 2;
    const char *eol = memmem(p, (size_t)(end - p), "\r\n", 2);
    const char *sp1 = eol ? memchr(p, ' ', (size_t)(eol - p)) : NULL;
    const char *sp2 = sp1 ? memchr(sp1 + 1, ' ', (size_t)(eol - sp1 - 1)) : NULL;
    if (!sp2 || eol - sp2 != 9 || memcmp(sp2 + 1, "HTTP/1.", 7) != 0)
        return -1;
    const char *method = p, *path = sp1 + 1;
    size_t method_len = (size_t)(sp1 - p), path_len = (size_t)(sp2 - sp1 - 1);
    if (sp2[8] == '0')
        c->close_after = true;
    uint64_t clen = 0;
    bool chunked = false, expect = false, has_key = false, key_ok = !s->api_key;
    for (const char *line = eol + 2; line < end;) {
        const char *le = memmem(line, (size_t)(end - line), "\r\n", 2);
        if (!le)
            le = end;
        const char *colon = memchr(line, ':', (size_t)(le - line));
        if (colon) {
            size_t nlen = (size_t)(colon - line);
            const char *v = colon + 1;
            while (v < le && (*v == ' ' || *v == '\t'))
                v++;
            size_t vlen = (size_t)(le - v);
            while (vlen && (v[vlen - 1] == ' ' || v[vlen - 1] == '\t'))
                vlen--;
            if (hname(line, nlen, "content-length")) {
                clen = 0;
                for (size_t i = 0; i < vlen && i < 12; i++)
                    clen = v[i] >= '0' && v[i] <= '9' ? clen * 10 + (uint64_t)(v[i] - '0')
                                                      : UINT64_MAX / 2;
            } else if (hname(line, nlen, "transfer-encoding")) {
                chunked = true;
            } else if (hname(line, nlen, "expect")) {
                expect = vlen == 12 && strncasecmp(v, "100-continue", 12) == 0;
            } else if (hname(line, nlen, "connection")) {
                if (vlen == 5 && strncasecmp(v, "close", 5) == 0)
                    c->close_after = true;
            } else if (hname(line, nlen, "x-api-key") ||
                       (hname(line, nlen, "authorization") && vlen > 7 &&
                        strncasecmp(v, "Bearer ", 7) == 0)) {
                if (hname(line, nlen, "authorization")) {
                    v += 7;
                    vlen -= 7;
                }
                has_key = vlen > 0;
                if (s->api_key)
                    key_ok = vlen == strlen(s->api_key) && memcmp(v, s->api_key, vlen) == 0;
            }
        }
        line = le + 2;
    }
    if (chunked || clen > RBUF_CAP - head_len) {
        c->close_after = true;
        return (chunked ? respond_error(s, c, 411, "Length Required", "invalid_request_error",
                                        "send a Content-Length")
                        : respond_error(s, c, 413, "Payload Too Large", "request_too_large",
                                        "request too large")) < 0
                   ? -1
                   : 1;
    }
    if (c->rlen < head_len + clen) {
        if (expect && !c->continued) {
            c->continued = true;
            if (out_append(c, "HTTP/1.1 100 Continue\r\n\r\n", 25) < 0)
                return -1;
        }
        return 0;
    }
    c->continued = false;
    const char *body = c->rbuf + head_len;
    size_t blen = (size_t)clen;
    s->st.requests++;
    int rc;
    bool post = method_len == 4 && memcmp(method, "POST", 4) == 0;
    bool get = method_len == 3 && memcmp(method, "GET", 3) == 0;
    if (get && path_len == 6 && memcmp(path, "/stats", 6) == 0) {
        rc = stats_reply(s, c);
    } else if (get && path_len == 8 && memcmp(path, "/_health", 8) == 0) {
        rc = respond(s, c, 200, "OK", "application/json", "{\"ok\":true}", 11);
    } else if (post && path_len == 12 && memcmp(path, "/v1/messages", 12) == 0) {
        body_model(body, blen, c->model);
        if (!has_key)
            rc = respond_error(s, c, 401, "Unauthorized", "authentication_error",
                               "x-api-key header is required");
        else if (!key_ok)
            rc = respond_error(s, c, 401, "Unauthorized", "authentication_error",
                               "invalid x-api-key");
        else if (body_streams(body, blen))
            rc = stream_start(s, c, body, blen, now);
        else
            rc = message_reply(s, c, body, blen);
    } else {
        rc = respond_error(s, c, 404, "Not Found", "not_found_error", "Not found");
    }
    size_t used = head_len + blen;
    memmove(c->rbuf, c->rbuf + used, c->rlen - used);
    c->rlen -= used;
    return rc < 0 ? rc : 1;
}

/* Moves c along as far as it can go now: the stream's due events, then the next request once
 * a response is out. Closes c on failure; c may be freed on return. */
static void conn_service(srv_t *s, conn_t *c, uint64_t now)
{
    for (unsigned round = 0; round < 4096; round++) {
        bool progressed = false;
        int rc = 0;
        if (c->streaming) {
            if (c->heap_idx < 0)
                progressed = stream_pump(s, c, now, &rc);
        } else if (!c->close_after && pending(c) == 0) {
            rc = serve_one(s, c, now);
            progressed = rc > 0;
        }
        if (rc < 0) {
            conn_close(s, c);
            return;
        }
        if (conn_flush(s, c) < 0)
            return;
        if (pending(c) > 0)
            return; /* EPOLLOUT brings us back */
        if (c->close_after && !c->streaming) {
            conn_close(s, c);
            return;
        }
        if (!progressed)
            return;
    }
}

/* Returns false when c was closed (and freed). */
static bool conn_readable(srv_t *s, conn_t *c)
{
    if (c->rlen == c->rcap) {
        if (c->rcap >= RBUF_CAP) {
            /* Full while a stream is on (a client that will not wait), or a request that
             * serve_one already refused: either way this connection is done. */
            conn_close(s, c);
            return false;
        }
        size_t cap = c->rcap ? c->rcap * 2 : RBUF_INIT;
        char *nb = realloc(c->rbuf, cap);
        if (!nb) {
            conn_close(s, c);
            return false;
        }
        c->rbuf = nb;
        c->rcap = cap;
    }
    ssize_t n = recv(c->fd, c->rbuf + c->rlen, c->rcap - c->rlen, 0);
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
        conn_close(s, c);
        return false;
    }
    if (n > 0)
        c->rlen += (size_t)n;
    return true;
}

static void accept_all(srv_t *s)
{
    for (;;) {
        int fd = accept4(s->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0)
            return; /* EAGAIN, or out of fds: the rest waits in the backlog */
        int one = 1;
        /* Every event must leave at once: Nagle would hold a delta behind the previous one. */
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        conn_t *c = calloc(1, sizeof(*c));
        if (!c) {
            close(fd);
            continue;
        }
        c->fd = fd;
        c->heap_idx = -1;
        c->events = EPOLLIN;
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
        if (epoll_ctl(s->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
            close(fd);
            free(c);
            continue;
        }
        s->st.connections++;
        if (++s->st.open_connections > s->st.max_open_connections)
            s->st.max_open_connections = s->st.open_connections;
    }
}

static int srv_listen(srv_t *s, const char *host, int port)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    if (inet_pton(AF_INET, host, &a.sin_addr) != 1)
        return -EINVAL;
    s->lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (s->lfd < 0)
        return -errno;
    int one = 1;
    setsockopt(s->lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    socklen_t len = sizeof(a);
    if (bind(s->lfd, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(s->lfd, 4096) < 0 ||
        getsockname(s->lfd, (struct sockaddr *)&a, &len) < 0)
        return -errno;
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
    if (epoll_ctl(s->epfd, EPOLL_CTL_ADD, s->lfd, &ev) < 0)
        return -errno;
    printf("ag_sse_upstream: listening on %s:%u\n", host, ntohs(a.sin_port));
    fflush(stdout);
    return 0;
}

static void srv_run(srv_t *s)
{
    struct epoll_event evs[256];
    while (!g_stop) {
        uint64_t now = mono_ns();
        while (s->heap_len > 0 && s->heap[0]->due_ns <= now) {
            conn_t *c = s->heap[0];
            heap_remove(s, c);
            conn_service(s, c, now);
        }
        uint64_t wait_ns = s->heap_len ? s->heap[0]->due_ns - now : NS_PER_S;
        struct timespec ts = {(time_t)(wait_ns / NS_PER_S), (long)(wait_ns % NS_PER_S)};
        int n = epoll_pwait2(s->epfd, evs, (int)AG_ARRAY_LEN(evs), &ts, NULL);
        if (n < 0 && errno == ENOSYS)
            n = epoll_wait(s->epfd, evs, (int)AG_ARRAY_LEN(evs),
                           (int)((wait_ns + NS_PER_MS - 1) / NS_PER_MS));
        if (n <= 0)
            continue;
        now = mono_ns();
        for (int i = 0; i < n; i++) {
            conn_t *c = evs[i].data.ptr;
            if (!c) {
                accept_all(s);
                continue;
            }
            /* An earlier event of this batch cannot have freed c: each connection is
             * reported once per epoll_wait and only touches itself. */
            if ((evs[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP)) && !conn_readable(s, c))
                continue;
            conn_service(s, c, now);
        }
    }
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: ag_sse_upstream --port N [--host 127.0.0.1] [--token-delay-ms MS]\n"
            "                       [--words N] [--api-key KEY]\n"
            "POST /v1/messages: \"stream\": true gets Anthropic's event sequence with one\n"
            "text_delta per word (w1 w2 ... wN) and MS between deltas; otherwise a Message.\n"
            "Prompt tags anywhere in the body override per request: [[words:N]] [[delay:MS]].\n"
            "Any non-empty x-api-key is accepted unless --api-key is given. GET /stats: counters.\n"
            "--port 0 picks a free port; the listening line on stdout names it.\n");
}

static bool parse_uint(const char *v, long max, long *out)
{
    char *end;
    errno = 0;
    long n = v ? strtol(v, &end, 10) : -1;
    if (!v || errno || end == v || *end || n < 0 || n > max)
        return false;
    *out = n;
    return true;
}

int main(int argc, char **argv)
{
    srv_t s;
    memset(&s, 0, sizeof(s));
    s.epfd = s.lfd = -1;
    s.default_words = 16;
    const char *host = "127.0.0.1";
    long port = -1, v = 0;
    for (int i = 1; i < argc; i += 2) { /* every option takes a value */
        const char *a = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            usage(stdout);
            return 0;
        } else if (strcmp(a, "--port") == 0 && parse_uint(val, 65535, &port)) {
        } else if (strcmp(a, "--host") == 0 && val) {
            host = val;
        } else if (strcmp(a, "--token-delay-ms") == 0 && parse_uint(val, 600000, &v)) {
            s.default_delay_ns = (uint64_t)v * NS_PER_MS;
        } else if (strcmp(a, "--words") == 0 && parse_uint(val, MAX_WORDS, &v)) {
            s.default_words = (uint32_t)v;
        } else if (strcmp(a, "--api-key") == 0 && val && *val) {
            s.api_key = val;
        } else {
            fprintf(stderr, "ag_sse_upstream: bad argument: %s %s\n", a, val ? val : "");
            usage(stderr);
            return 2;
        }
    }
    if (port < 0) {
        usage(stderr);
        return 2;
    }
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max; /* a thousand streams through a proxy need two thousand fds */
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal; /* no SA_RESTART: epoll_wait must return */
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    s.epfd = epoll_create1(EPOLL_CLOEXEC);
    int rc = s.epfd < 0 ? -errno : srv_listen(&s, host, (int)port);
    if (rc < 0) {
        fprintf(stderr, "ag_sse_upstream: cannot listen on %s:%ld: %s\n", host, port,
                strerror(-rc));
        return 1;
    }
    srv_run(&s);
    printf("ag_sse_upstream: stopped: %" PRIu64 " requests, %" PRIu64 " streams (%" PRIu64
           " completed, %" PRIu64 " aborted), max %" PRIu64 " at once\n",
           s.st.requests, s.st.streams, s.st.streams_completed, s.st.streams_aborted,
           s.st.max_active_streams);
    /* Connections still open are the kernel's to close at exit. */
    free(s.heap);
    close(s.lfd);
    close(s.epfd);
    return 0;
}
