/* SPDX-License-Identifier: MIT
 *
 * loadgen.c: ag_loadgen, the open-loop HTTP/1.1 load generator that bench/run.sh drives.
 * It owns request scheduling (request i is due at t0 + i/rate and its latency counts from then,
 * so a slow server cannot hide its queueing), the log-linear latency histogram and the helper
 * modes the harness needs: stream (time to the first body byte of event streams, and a check
 * that each one ends as an Anthropic stream should), hold (park N idle keep-alive connections),
 * first-ok (time a process from exec to its first 2xx answer) and free-port. One thread, plain
 * epoll; standalone on purpose so that it measures the gateway without sharing any of its code.
 */
#include "util/platform.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define NS_PER_US 1000ull
#define NS_PER_MS 1000000ull
#define NS_PER_S 1000000000ull

static uint64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * NS_PER_S + (uint64_t)ts.tv_nsec;
}

static int64_t real_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * (int64_t)NS_PER_S + (int64_t)ts.tv_nsec;
}

static void sleep_ns(uint64_t ns)
{
    struct timespec ts = {(time_t)(ns / NS_PER_S), (long)(ns % NS_PER_S)};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR) {
    }
}

/* ---- histogram ------------------------------------------------------------------------------
 * HDR-style log-linear buckets over nanoseconds: values below 256 are exact, and every power of
 * two above is split into 128 linear steps, so any reported value is within 0.8% of the truth.
 * 5248 counters cover up to 2^47 ns (39 hours); larger values are clamped to the last bucket. */

#define HIST_SUB_BITS 8
#define HIST_SUB (1u << HIST_SUB_BITS)
#define HIST_HALF (HIST_SUB / 2)
#define HIST_MAX_MSB 46
#define HIST_LEN (HIST_SUB + (HIST_MAX_MSB - HIST_SUB_BITS + 1) * HIST_HALF)

typedef struct hist {
    uint64_t counts[HIST_LEN];
    uint64_t n, min, max, sum;
} hist_t;

static unsigned hist_index(uint64_t v)
{
    if (v < HIST_SUB)
        return (unsigned)v;
    unsigned msb = 63u - (unsigned)__builtin_clzll(v);
    if (msb > HIST_MAX_MSB) {
        msb = HIST_MAX_MSB;
        v = (2ull << HIST_MAX_MSB) - 1;
    }
    unsigned shift = msb - (HIST_SUB_BITS - 1);
    return HIST_SUB + (shift - 1) * HIST_HALF + (unsigned)((v >> shift) - HIST_HALF);
}

/* Lowest and highest value that land in bucket `idx`. */
static void hist_bounds(unsigned idx, uint64_t *lo, uint64_t *hi)
{
    if (idx < HIST_SUB) {
        *lo = *hi = idx;
        return;
    }
    unsigned k = idx - HIST_SUB;
    unsigned shift = k / HIST_HALF + 1;
    uint64_t sub = k % HIST_HALF + HIST_HALF;
    *lo = sub << shift;
    *hi = *lo + (1ull << shift) - 1;
}

static void hist_record(hist_t *h, uint64_t v)
{
    h->counts[hist_index(v)]++;
    if (h->n == 0 || v < h->min)
        h->min = v;
    if (v > h->max)
        h->max = v;
    h->n++;
    h->sum += v;
}

/* The value at percentile q (0..100]: the highest value of the bucket holding that rank, clamped
 * to the exact extremes, as HdrHistogram reports it. 0 when empty. */
static uint64_t hist_percentile(const hist_t *h, double q)
{
    if (h->n == 0)
        return 0;
    uint64_t rank = (uint64_t)((q / 100.0) * (double)h->n + 0.999999);
    if (rank < 1)
        rank = 1;
    if (rank > h->n)
        rank = h->n;
    uint64_t seen = 0;
    for (unsigned i = 0; i < HIST_LEN; i++) {
        seen += h->counts[i];
        if (seen >= rank) {
            uint64_t lo, hi;
            hist_bounds(i, &lo, &hi);
            if (hi > h->max)
                hi = h->max;
            if (hi < h->min)
                hi = h->min;
            return hi;
        }
    }
    return h->max;
}

/* ---- event-stream check ------------------------------------------------------------------
 * Streams are checked, not stored: the scanner sees each decoded body byte once, keeps only the
 * start of the current line and counts events by name. A stream is complete when its first
 * event is message_start, its last is message_stop and no error event came in between, which
 * is what an Anthropic client needs to rebuild the message. */

typedef struct sse_scan {
    char line[32]; /* the first bytes of the current line: enough for "event: message_start" */
    uint32_t line_len;
    char name[24]; /* the pending event's name, from its "event:" line */
    bool has_name, has_data;
    bool started;    /* the first event was message_start */
    bool stopped;    /* message_stop was seen */
    bool after_stop; /* and something came after it */
    uint32_t events, deltas, error_events;
} sse_scan_t;

static void sse_line(sse_scan_t *x)
{
    uint32_t n = x->line_len < sizeof(x->line) ? x->line_len : (uint32_t)sizeof(x->line);
    if (n > 0 && x->line_len <= sizeof(x->line) && x->line[n - 1] == '\r')
        n--;
    x->line_len = 0;
    if (n == 0) {
        if (!x->has_name && !x->has_data)
            return; /* blank lines between events */
        const char *name = x->has_name ? x->name : "message";
        x->events++;
        if (x->events == 1)
            x->started = strcmp(name, "message_start") == 0;
        if (x->stopped)
            x->after_stop = true;
        if (strcmp(name, "message_stop") == 0)
            x->stopped = true;
        else if (strcmp(name, "content_block_delta") == 0)
            x->deltas++;
        else if (strcmp(name, "error") == 0)
            x->error_events++;
        x->has_name = x->has_data = false;
        return;
    }
    if (n >= 6 && memcmp(x->line, "event:", 6) == 0) {
        size_t off = n > 6 && x->line[6] == ' ' ? 7 : 6;
        size_t len = n - off < sizeof(x->name) - 1 ? n - off : sizeof(x->name) - 1;
        memcpy(x->name, x->line + off, len);
        x->name[len] = '\0';
        x->has_name = true;
    } else if (n >= 5 && memcmp(x->line, "data:", 5) == 0) {
        x->has_data = true;
    }
}

static void sse_feed(sse_scan_t *x, const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (p[i] == '\n') {
            sse_line(x);
            continue;
        }
        if (x->line_len < sizeof(x->line))
            x->line[x->line_len] = p[i];
        if (x->line_len < UINT32_MAX)
            x->line_len++;
    }
}

/* Why the stream is not complete, or NULL when it is. */
static const char *sse_verdict(const sse_scan_t *x)
{
    if (x->events == 0)
        return "no events";
    if (!x->started)
        return "first event is not message_start";
    if (x->error_events)
        return "error event";
    if (!x->stopped)
        return "no message_stop";
    if (x->after_stop)
        return "events after message_stop";
    if (x->line_len || x->has_name || x->has_data)
        return "unterminated event at the end";
    return NULL;
}

/* ---- HTTP/1.1 response parser -----------------------------------------------------------------
 * Incremental over the caller's buffer: resp_parse() consumes what it can and says how many
 * bytes it used; the caller keeps the rest and calls again with more. Bodies are counted, not
 * stored, unless a capture limit is set. */

enum {
    RS_HEAD,
    RS_BODY_LEN,
    RS_CHUNK_SIZE,
    RS_CHUNK_DATA,
    RS_CHUNK_CRLF,
    RS_TRAILER,
    RS_BODY_EOF,
    RS_DONE
};
enum { RESP_ERR = -1, RESP_MORE = 0, RESP_DONE = 1 };

#define RESP_MAX_HEAD (64u * 1024u)
#define RESP_MAX_LINE 4096u

typedef struct resp {
    int state;
    int status;
    bool head_req; /* the request was HEAD: no body whatever the headers say */
    bool chunked;
    bool has_len;
    bool close; /* the server will close after this response */
    uint64_t remaining;
    uint64_t body_len;
    char *body; /* capture of the body, only when capture_max > 0; owned, freed by resp_fini */
    size_t body_have, body_cap, capture_max;
    sse_scan_t *sse; /* sees every body byte when set; borrowed, not reset by resp_reset */
} resp_t;

static void resp_reset(resp_t *r, bool head_req)
{
    r->state = RS_HEAD;
    r->status = 0;
    r->head_req = head_req;
    r->chunked = r->has_len = r->close = false;
    r->remaining = r->body_len = 0;
    r->body_have = 0;
}

static void resp_fini(resp_t *r)
{
    AG_FREE(&r->body);
    r->body_have = r->body_cap = 0;
}

static void resp_capture(resp_t *r, const char *p, size_t n)
{
    r->body_len += n;
    if (r->sse)
        sse_feed(r->sse, p, n);
    if (n == 0 || r->capture_max == 0 || r->body_have >= r->capture_max)
        return;
    if (n > r->capture_max - r->body_have)
        n = r->capture_max - r->body_have;
    if (r->body_have + n > r->body_cap) {
        size_t cap = r->body_cap ? r->body_cap : 1024;
        while (cap < r->body_have + n)
            cap *= 2;
        char *nb = realloc(r->body, cap);
        if (!nb)
            return;
        r->body = nb;
        r->body_cap = cap;
    }
    memcpy(r->body + r->body_have, p, n);
    r->body_have += n;
}

static bool icase_contains(const char *hay, size_t hlen, const char *needle)
{
    size_t nlen = strlen(needle);
    for (size_t i = 0; i + nlen <= hlen; i++)
        if (strncasecmp(hay + i, needle, nlen) == 0)
            return true;
    return false;
}

static bool name_is(const char *name, size_t nlen, const char *want)
{
    return nlen == strlen(want) && strncasecmp(name, want, nlen) == 0;
}

/* Parses the status line and headers in p[0..len), which ends with the blank line. */
static int resp_parse_head(resp_t *r, const char *p, size_t len)
{
    const char *end = p + len;
    const char *eol = memchr(p, '\n', len);
    if (!eol || eol - p < 12 || memcmp(p, "HTTP/1.", 7) != 0 || p[8] != ' ')
        return RESP_ERR;
    if (p[7] != '0' && p[7] != '1')
        return RESP_ERR;
    int status = 0;
    for (int i = 9; i < 12; i++) {
        if (p[i] < '0' || p[i] > '9')
            return RESP_ERR;
        status = status * 10 + (p[i] - '0');
    }
    if (status < 100 || (eol - p > 12 && p[12] != ' ' && p[12] != '\r'))
        return RESP_ERR;
    r->status = status;
    r->close = (p[7] == '0'); /* HTTP/1.0: assume close; good enough for a load generator */
    const char *line = eol + 1;
    while (line < end) {
        eol = memchr(line, '\n', (size_t)(end - line));
        if (!eol)
            return RESP_ERR;
        size_t llen = (size_t)(eol - line);
        if (llen > 0 && line[llen - 1] == '\r')
            llen--;
        if (llen == 0)
            break;
        const char *colon = memchr(line, ':', llen);
        if (!colon || colon == line)
            return RESP_ERR;
        size_t nlen = (size_t)(colon - line);
        const char *v = colon + 1;
        const char *vend = line + llen;
        while (v < vend && (*v == ' ' || *v == '\t'))
            v++;
        while (vend > v && (vend[-1] == ' ' || vend[-1] == '\t'))
            vend--;
        size_t vlen = (size_t)(vend - v);
        if (name_is(line, nlen, "content-length")) {
            if (vlen == 0 || vlen > 18)
                return RESP_ERR;
            uint64_t n = 0;
            for (size_t i = 0; i < vlen; i++) {
                if (v[i] < '0' || v[i] > '9')
                    return RESP_ERR;
                n = n * 10 + (uint64_t)(v[i] - '0');
            }
            if (r->has_len && r->remaining != n)
                return RESP_ERR;
            r->has_len = true;
            r->remaining = n;
        } else if (name_is(line, nlen, "transfer-encoding")) {
            if (icase_contains(v, vlen, "chunked"))
                r->chunked = true;
        } else if (name_is(line, nlen, "connection")) {
            if (icase_contains(v, vlen, "close"))
                r->close = true;
            else if (icase_contains(v, vlen, "keep-alive"))
                r->close = false;
        }
        line = eol + 1;
    }
    return 0;
}

/* Finds the end of the line starting at p (the byte after '\n'); NULL if it is not all there. */
static const char *line_end(const char *p, size_t len)
{
    const char *nl = memchr(p, '\n', len);
    return nl ? nl + 1 : NULL;
}

static int resp_parse(resp_t *r, const char *p, size_t len, size_t *used)
{
    size_t off = 0;
    for (;;) {
        switch (r->state) {
        case RS_HEAD: {
            const char *hend = memmem(p + off, len - off, "\r\n\r\n", 4);
            if (!hend) {
                *used = off;
                return len - off > RESP_MAX_HEAD ? RESP_ERR : RESP_MORE;
            }
            size_t hlen = (size_t)(hend - (p + off)) + 4;
            bool head_req = r->head_req;
            resp_reset(r, head_req);
            if (resp_parse_head(r, p + off, hlen) < 0)
                return RESP_ERR;
            off += hlen;
            if (r->status < 200 && r->status != 101)
                break; /* interim answer (100 Continue): the real one follows */
            if (r->head_req || r->status == 204 || r->status == 304 || r->status == 101)
                r->state = RS_DONE;
            else if (r->chunked)
                r->state = RS_CHUNK_SIZE;
            else if (r->has_len)
                r->state = r->remaining ? RS_BODY_LEN : RS_DONE;
            else {
                r->state = RS_BODY_EOF;
                r->close = true;
            }
            break;
        }
        case RS_BODY_LEN:
        case RS_CHUNK_DATA: {
            size_t n = len - off;
            if (n > r->remaining)
                n = (size_t)r->remaining;
            resp_capture(r, p + off, n);
            off += n;
            r->remaining -= n;
            if (r->remaining) {
                *used = off;
                return RESP_MORE;
            }
            r->state = r->state == RS_BODY_LEN ? RS_DONE : RS_CHUNK_CRLF;
            break;
        }
        case RS_CHUNK_SIZE: {
            const char *le = line_end(p + off, len - off);
            if (!le) {
                *used = off;
                return len - off > RESP_MAX_LINE ? RESP_ERR : RESP_MORE;
            }
            const char *s = p + off;
            uint64_t size = 0;
            int digits = 0;
            for (; s < le; s++, digits++) {
                int d;
                if (*s >= '0' && *s <= '9')
                    d = *s - '0';
                else if (*s >= 'a' && *s <= 'f')
                    d = *s - 'a' + 10;
                else if (*s >= 'A' && *s <= 'F')
                    d = *s - 'A' + 10;
                else
                    break;
                if (digits >= 15)
                    return RESP_ERR;
                size = size * 16 + (uint64_t)d;
            }
            if (digits == 0 || (*s != ';' && *s != '\r' && *s != '\n' && *s != ' '))
                return RESP_ERR;
            off = (size_t)(le - p);
            r->remaining = size;
            r->state = size ? RS_CHUNK_DATA : RS_TRAILER;
            break;
        }
        case RS_CHUNK_CRLF:
            if (len - off < 2) {
                *used = off;
                return RESP_MORE;
            }
            if (p[off] != '\r' || p[off + 1] != '\n')
                return RESP_ERR;
            off += 2;
            r->state = RS_CHUNK_SIZE;
            break;
        case RS_TRAILER: {
            const char *le = line_end(p + off, len - off);
            if (!le) {
                *used = off;
                return len - off > RESP_MAX_LINE ? RESP_ERR : RESP_MORE;
            }
            size_t llen = (size_t)(le - (p + off));
            off += llen;
            if (llen <= 2 && (llen == 1 || p[off - 2] == '\r'))
                r->state = RS_DONE;
            break;
        }
        case RS_BODY_EOF:
            resp_capture(r, p + off, len - off);
            *used = len;
            return RESP_MORE;
        case RS_DONE:
        default:
            *used = off;
            return RESP_DONE;
        }
    }
}

/* The peer closed the connection: that ends a body delimited by close, and nothing else. */
static int resp_eof(resp_t *r)
{
    if (r->state == RS_BODY_EOF) {
        r->state = RS_DONE;
        return RESP_DONE;
    }
    return RESP_ERR;
}

/* ---- target and request ------------------------------------------------------------------- */

typedef struct target {
    char host[256];
    char port[8];
    char path[2048];
    struct sockaddr_storage addr;
    socklen_t addrlen;
} target_t;

/* Splits http://host[:port][/path]. Returns 0, or -1 for anything else (https included). */
static int url_parse(const char *url, target_t *t)
{
    if (strncmp(url, "http://", 7) != 0)
        return -1;
    const char *h = url + 7;
    const char *hend;
    const char *rest;
    if (*h == '[') {
        hend = strchr(h, ']');
        if (!hend)
            return -1;
        h++;
        rest = hend + 1;
    } else {
        hend = h + strcspn(h, ":/");
        rest = hend;
    }
    size_t hlen = (size_t)(hend - h);
    if (hlen == 0 || hlen >= sizeof(t->host))
        return -1;
    memcpy(t->host, h, hlen);
    t->host[hlen] = '\0';
    snprintf(t->port, sizeof(t->port), "%s", "80");
    if (*rest == ':') {
        rest++;
        size_t plen = strspn(rest, "0123456789");
        if (plen == 0 || plen > 5 || (rest[plen] != '\0' && rest[plen] != '/'))
            return -1;
        memcpy(t->port, rest, plen);
        t->port[plen] = '\0';
        rest += plen;
    } else if (*rest != '\0' && *rest != '/') {
        return -1;
    }
    if (*rest == '\0')
        rest = "/";
    if (strlen(rest) >= sizeof(t->path))
        return -1;
    snprintf(t->path, sizeof(t->path), "%s", rest);
    return 0;
}

static int target_resolve(target_t *t)
{
    struct addrinfo hints = {0}, *res = NULL;
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    int rc = getaddrinfo(t->host, t->port, &hints, &res);
    if (rc != 0 || !res)
        return -1;
    memcpy(&t->addr, res->ai_addr, res->ai_addrlen);
    t->addrlen = (socklen_t)res->ai_addrlen;
    freeaddrinfo(res);
    return 0;
}

#define PLACEHOLDER "{{n}}"
#define MAX_HEADERS 64

/* The request as bytes: fixed, or rendered per request when the body carries {{n}}. */
typedef struct reqtpl {
    char *head; /* request line and headers, without Content-Length and the blank line */
    size_t head_len;
    const char *body;
    size_t body_len;
    bool has_body;
    bool unique;
    size_t holes; /* placeholders in the body */
    char *fixed;  /* the whole request when !unique */
    size_t fixed_len;
    size_t max_len; /* bound on a rendered request */
} reqtpl_t;

static size_t count_holes(const char *b, size_t len)
{
    size_t n = 0;
    const char *p = b;
    const char *end = b + len;
    while (p < end) {
        const char *h = memmem(p, (size_t)(end - p), PLACEHOLDER, strlen(PLACEHOLDER));
        if (!h)
            break;
        n++;
        p = h + strlen(PLACEHOLDER);
    }
    return n;
}

/* Writes request number n into out (at least t->max_len bytes); returns its length. */
static size_t reqtpl_render(const reqtpl_t *t, uint64_t n, char *out)
{
    char num[24];
    int numlen = snprintf(num, sizeof(num), "%" PRIu64, n);
    size_t blen = t->body_len;
    if (t->unique)
        blen = t->body_len + t->holes * (size_t)numlen - t->holes * strlen(PLACEHOLDER);
    size_t o = 0;
    memcpy(out, t->head, t->head_len);
    o += t->head_len;
    if (t->has_body)
        o += (size_t)snprintf(out + o, 40, "Content-Length: %zu\r\n", blen);
    memcpy(out + o, "\r\n", 2);
    o += 2;
    if (!t->has_body)
        return o;
    if (!t->unique) {
        memcpy(out + o, t->body, t->body_len);
        return o + t->body_len;
    }
    const char *p = t->body;
    const char *end = t->body + t->body_len;
    while (p < end) {
        const char *h = memmem(p, (size_t)(end - p), PLACEHOLDER, strlen(PLACEHOLDER));
        size_t chunk = h ? (size_t)(h - p) : (size_t)(end - p);
        memcpy(out + o, p, chunk);
        o += chunk;
        if (!h)
            break;
        memcpy(out + o, num, (size_t)numlen);
        o += (size_t)numlen;
        p = h + strlen(PLACEHOLDER);
    }
    return o;
}

static int reqtpl_init(reqtpl_t *t, const target_t *tg, const char *method, const char **headers,
                       int nheaders, const char *body, size_t body_len, bool has_body, bool unique)
{
    memset(t, 0, sizeof(*t));
    bool have_ct = false;
    size_t cap = strlen(method) + strlen(tg->path) + strlen(tg->host) + 64;
    for (int i = 0; i < nheaders; i++) {
        cap += strlen(headers[i]) + 2;
        if (strncasecmp(headers[i], "content-type:", 13) == 0)
            have_ct = true;
    }
    cap += 64;
    t->head = malloc(cap);
    if (!t->head)
        return -1;
    bool v6 = strchr(tg->host, ':') != NULL;
    int o = snprintf(t->head, cap, "%s %s HTTP/1.1\r\nHost: %s%s%s:%s\r\n", method, tg->path,
                     v6 ? "[" : "", tg->host, v6 ? "]" : "", tg->port);
    for (int i = 0; i < nheaders; i++)
        o += snprintf(t->head + o, cap - (size_t)o, "%s\r\n", headers[i]);
    if (has_body && !have_ct)
        o += snprintf(t->head + o, cap - (size_t)o, "Content-Type: application/json\r\n");
    t->head_len = (size_t)o;
    t->body = body;
    t->body_len = body_len;
    t->has_body = has_body;
    t->holes = unique ? count_holes(body, body_len) : 0;
    t->unique = t->holes > 0;
    t->max_len = t->head_len + 40 + 2 + body_len + t->holes * 24;
    if (!t->unique) {
        t->fixed = malloc(t->max_len);
        if (!t->fixed)
            return -1;
        t->fixed_len = reqtpl_render(t, 0, t->fixed);
    }
    return 0;
}

static void reqtpl_fini(reqtpl_t *t)
{
    AG_FREE(&t->head);
    AG_FREE(&t->fixed);
}

/* ---- connections and the event loop ------------------------------------------------------- */

enum { C_CLOSED, C_CONNECTING, C_IDLE, C_BUSY };
enum { MODE_RATE, MODE_STREAM, MODE_HOLD, MODE_FIRST_OK, MODE_FREE_PORT, MODE_SELF_TEST };

#define RBUF_INIT 4096u
#define RBUF_MAX (RESP_MAX_HEAD + 4096u)

typedef struct conn {
    int fd;
    int state;
    uint32_t events; /* what epoll watches now */
    bool has_req;    /* a request is attached: connecting, being written or awaiting its answer */
    bool listed;     /* on the free list */
    bool used;       /* has been connected before: the next connect is a reconnect */
    uint64_t sched_ns;
    uint64_t first_ns; /* stream mode: when the first body byte came; 0 before */
    char
        *wbuf; /* own copy of the request when requests differ; else wptr points at the fixed one */
    const char *wptr;
    size_t wlen, woff;
    char *rbuf;
    size_t rlen, rcap;
    resp_t resp;
    sse_scan_t sse; /* stream mode: the check of the answer being read */
} conn_t;

typedef struct stats {
    uint64_t scheduled, sent, completed, ok, s1xx, s3xx, s4xx, s5xx;
    uint64_t conn_errors, proto_errors, timeouts, peer_closes, reconnects, setup_errors;
    uint64_t max_queue;
    int first_non2xx;
    uint64_t last_done_ns;
    /* stream mode: 2xx answers that were, or were not, a complete event stream */
    uint64_t complete, incomplete, body_bytes;
    uint32_t events_min, events_max, deltas_min, deltas_max;
    const char *first_incomplete;
    hist_t lat;  /* 2xx answers only: an error answered fast must not flatter the percentiles */
    hist_t ttfb; /* stream mode: from the send to the first body byte, 2xx answers only */
    hist_t lag;  /* how late the generator noticed each request was due: its own lateness, not
                  * the wait for a free connection */
} stats_t;

typedef struct lg {
    int mode;
    const char *url;
    target_t tg;
    reqtpl_t req;
    bool head_req;
    double rate, duration, timeout;
    int nconns;
    long hold;
    long streams; /* stream mode: requests in all */
    int open_batch;
    int epfd;
    conn_t *conns;
    int *freelist; /* rate mode: idle or closed connections, ready for the next request */
    int nfree;
    uint64_t inflight;
    stats_t st;
} lg_t;

static volatile sig_atomic_t g_stop;

static void on_signal(int sig)
{
    AG_UNUSED(sig);
    g_stop = 1;
}

static void conn_watch(lg_t *g, conn_t *c, uint32_t events)
{
    if (c->events == events)
        return;
    struct epoll_event ev = {.events = events, .data.u32 = (uint32_t)(c - g->conns)};
    epoll_ctl(g->epfd, EPOLL_CTL_MOD, c->fd, &ev);
    c->events = events;
}

static void conn_release(lg_t *g, conn_t *c)
{
    if (g->freelist && !c->listed && !c->has_req) {
        g->freelist[g->nfree++] = (int)(c - g->conns);
        c->listed = true;
    }
}

static void conn_close(lg_t *g, conn_t *c)
{
    if (c->fd >= 0) {
        close(c->fd); /* also removes it from epoll */
        c->fd = -1;
    }
    c->state = C_CLOSED;
    c->rlen = 0;
    c->events = 0;
    if (g->mode == MODE_HOLD) {
        AG_FREE(&c->rbuf); /* 10,000 parked connections need no read buffers */
        c->rcap = 0;
    }
}

static void conn_detach(lg_t *g, conn_t *c)
{
    if (c->has_req) {
        c->has_req = false;
        g->inflight--;
    }
}

/* The connection broke: the attached request, if any, is a connection error. */
static void conn_fail(lg_t *g, conn_t *c, bool proto)
{
    if (c->has_req) {
        if (proto)
            g->st.proto_errors++;
        else
            g->st.conn_errors++;
    }
    conn_detach(g, c);
    conn_close(g, c);
    conn_release(g, c);
}

static int conn_connect(lg_t *g, conn_t *c)
{
    int fd = socket(g->tg.addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (connect(fd, (struct sockaddr *)&g->tg.addr, g->tg.addrlen) < 0 && errno != EINPROGRESS) {
        int err = -errno;
        close(fd);
        return err;
    }
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.u32 = (uint32_t)(c - g->conns)};
    if (epoll_ctl(g->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
        int err = -errno;
        close(fd);
        return err;
    }
    if (c->used)
        g->st.reconnects++;
    c->used = true;
    c->fd = fd;
    c->events = EPOLLIN | EPOLLOUT;
    c->state = C_CONNECTING;
    c->rlen = 0;
    return 0;
}

static void conn_write(lg_t *g, conn_t *c)
{
    while (c->woff < c->wlen) {
        ssize_t n = send(c->fd, c->wptr + c->woff, c->wlen - c->woff, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                conn_watch(g, c, EPOLLIN | EPOLLOUT);
                return;
            }
            conn_fail(g, c, false);
            return;
        }
        c->woff += (size_t)n;
    }
    conn_watch(g, c, EPOLLIN);
}

/* Attaches request n, due at sched, to connection c and starts sending it. */
static void conn_dispatch(lg_t *g, conn_t *c, uint64_t n, uint64_t sched)
{
    c->listed = false;
    c->has_req = true;
    g->inflight++;
    c->sched_ns = sched;
    if (g->req.unique) {
        if (!c->wbuf) {
            c->wbuf = malloc(g->req.max_len);
            if (!c->wbuf) {
                conn_fail(g, c, false);
                return;
            }
        }
        c->wlen = reqtpl_render(&g->req, n, c->wbuf);
        c->wptr = c->wbuf;
    } else {
        c->wptr = g->req.fixed;
        c->wlen = g->req.fixed_len;
    }
    c->woff = 0;
    resp_reset(&c->resp, g->head_req);
    if (g->mode == MODE_STREAM) {
        c->first_ns = 0;
        memset(&c->sse, 0, sizeof(c->sse));
        c->resp.sse = &c->sse;
    }
    g->st.sent++;
    if (c->state == C_CLOSED) {
        if (conn_connect(g, c) < 0)
            conn_fail(g, c, false);
        return;
    }
    c->state = C_BUSY;
    conn_write(g, c);
}

static void classify(stats_t *st, int status)
{
    if (status >= 200 && status < 300) {
        st->ok++;
        return;
    }
    if (st->first_non2xx == 0)
        st->first_non2xx = status;
    if (status < 200)
        st->s1xx++;
    else if (status < 400)
        st->s3xx++;
    else if (status < 500)
        st->s4xx++;
    else
        st->s5xx++;
}

/* Stream mode: the verdict on a 2xx answer that has ended. */
static void stream_check(stats_t *st, conn_t *c)
{
    const char *why = sse_verdict(&c->sse);
    if (why) {
        st->incomplete++;
        if (!st->first_incomplete)
            st->first_incomplete = why;
    } else {
        st->complete++;
    }
    if (st->complete + st->incomplete == 1 || c->sse.events < st->events_min)
        st->events_min = c->sse.events;
    if (c->sse.events > st->events_max)
        st->events_max = c->sse.events;
    if (st->complete + st->incomplete == 1 || c->sse.deltas < st->deltas_min)
        st->deltas_min = c->sse.deltas;
    if (c->sse.deltas > st->deltas_max)
        st->deltas_max = c->sse.deltas;
    st->body_bytes += c->resp.body_len;
}

static void conn_complete(lg_t *g, conn_t *c, uint64_t now)
{
    stats_t *st = &g->st;
    st->completed++;
    st->last_done_ns = now;
    classify(st, c->resp.status);
    if (c->resp.status >= 200 && c->resp.status < 300) {
        hist_record(&st->lat, now > c->sched_ns ? now - c->sched_ns : 0);
        if (g->mode == MODE_STREAM)
            stream_check(st, c);
    }
    conn_detach(g, c);
    /* One outstanding request per connection: bytes beyond the answer were never asked for. */
    if (c->resp.close || c->rlen > 0 || c->woff < c->wlen) {
        conn_close(g, c);
    } else {
        c->state = C_IDLE;
        if (g->mode == MODE_HOLD) {
            AG_FREE(&c->rbuf);
            c->rcap = 0;
        }
    }
    conn_release(g, c);
}

static void conn_read(lg_t *g, conn_t *c, uint64_t now)
{
    if (c->rlen == c->rcap) {
        size_t cap = c->rcap ? c->rcap * 2 : RBUF_INIT;
        if (cap > RBUF_MAX) {
            conn_fail(g, c, true);
            return;
        }
        char *nb = realloc(c->rbuf, cap);
        if (!nb) {
            conn_fail(g, c, false);
            return;
        }
        c->rbuf = nb;
        c->rcap = cap;
    }
    ssize_t n = recv(c->fd, c->rbuf + c->rlen, c->rcap - c->rlen, 0);
    if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
            return;
        conn_fail(g, c, false);
        return;
    }
    if (n == 0) {
        if (c->has_req) {
            if (resp_eof(&c->resp) == RESP_DONE) {
                c->resp.close = true;
                conn_complete(g, c, now);
            } else {
                conn_fail(g, c, false);
            }
        } else {
            g->st.peer_closes++; /* an idle keep-alive connection timed out on the server */
            conn_close(g, c);
            conn_release(g, c);
        }
        return;
    }
    c->rlen += (size_t)n;
    if (!c->has_req) {
        conn_fail(g, c, true);
        return;
    }
    size_t used = 0;
    int rc = resp_parse(&c->resp, c->rbuf, c->rlen, &used);
    if (used > 0) {
        memmove(c->rbuf, c->rbuf + used, c->rlen - used);
        c->rlen -= used;
    }
    if (g->mode == MODE_STREAM && c->first_ns == 0 && c->resp.body_len > 0) {
        c->first_ns = now;
        if (c->resp.status >= 200 && c->resp.status < 300)
            hist_record(&g->st.ttfb, now - c->sched_ns);
    }
    if (rc == RESP_DONE)
        conn_complete(g, c, now);
    else if (rc == RESP_ERR)
        conn_fail(g, c, true);
}

static void conn_event(lg_t *g, conn_t *c, uint32_t ev, uint64_t now)
{
    if (c->fd < 0)
        return;
    if (c->state == C_CONNECTING) {
        if (!(ev & (EPOLLOUT | EPOLLERR | EPOLLHUP)))
            return;
        int err = 0;
        socklen_t len = sizeof(err);
        if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0 || err != 0) {
            if (!c->has_req)
                g->st.setup_errors++;
            conn_fail(g, c, false);
            return;
        }
        if (c->has_req) {
            c->state = C_BUSY;
            conn_write(g, c);
        } else {
            c->state = C_IDLE;
            conn_watch(g, c, EPOLLIN);
            conn_release(g, c);
        }
        return;
    }
    if ((ev & EPOLLOUT) && c->state == C_BUSY && c->woff < c->wlen) {
        conn_write(g, c);
        if (c->fd < 0)
            return;
    }
    if (ev & (EPOLLIN | EPOLLERR | EPOLLHUP))
        conn_read(g, c, now);
}

/* Waits up to wait_ns for events and handles them. */
static void poll_events(lg_t *g, uint64_t wait_ns)
{
    struct epoll_event evs[512];
    struct timespec ts = {(time_t)(wait_ns / NS_PER_S), (long)(wait_ns % NS_PER_S)};
    int n = epoll_pwait2(g->epfd, evs, (int)AG_ARRAY_LEN(evs), &ts, NULL);
    if (n < 0 && errno == ENOSYS) {
        /* Kernels before 5.11: millisecond resolution, rounded up so we never spin. */
        n = epoll_wait(g->epfd, evs, (int)AG_ARRAY_LEN(evs),
                       (int)((wait_ns + NS_PER_MS - 1) / NS_PER_MS));
    }
    if (n <= 0)
        return;
    uint64_t now = mono_ns();
    for (int i = 0; i < n; i++)
        conn_event(g, &g->conns[evs[i].data.u32], evs[i].events, now);
}

static int lg_open(lg_t *g, size_t nconns)
{
    g->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (g->epfd < 0)
        return -errno;
    g->conns = calloc(nconns, sizeof(conn_t));
    if (!g->conns)
        return -ENOMEM;
    for (size_t i = 0; i < nconns; i++)
        g->conns[i].fd = -1;
    return 0;
}

static void lg_close(lg_t *g, size_t nconns)
{
    for (size_t i = 0; g->conns && i < nconns; i++) {
        conn_t *c = &g->conns[i];
        if (c->fd >= 0)
            close(c->fd);
        free(c->wbuf);
        free(c->rbuf);
        resp_fini(&c->resp);
    }
    AG_FREE(&g->conns);
    AG_FREE(&g->freelist);
    if (g->epfd >= 0)
        close(g->epfd);
    g->epfd = -1;
}

/* ---- output -------------------------------------------------------------------------------- */

static void json_str(FILE *f, const char *s)
{
    fputc('"', f);
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\')
            fprintf(f, "\\%c", ch);
        else if (ch < 0x20)
            fprintf(f, "\\u%04x", ch);
        else
            fputc(ch, f);
    }
    fputc('"', f);
}

static double us(uint64_t ns)
{
    return (double)ns / 1000.0;
}

static void print_latency(FILE *f, const char *prefix, const hist_t *h)
{
    double mean = h->n ? (double)h->sum / (double)h->n : 0.0;
    fprintf(f,
            ",\"%smin_us\":%.1f,\"%sp50_us\":%.1f,\"%sp90_us\":%.1f,\"%sp99_us\":%.1f,"
            "\"%sp999_us\":%.1f,\"%smax_us\":%.1f,\"%smean_us\":%.1f",
            prefix, us(h->n ? h->min : 0), prefix, us(hist_percentile(h, 50)), prefix,
            us(hist_percentile(h, 90)), prefix, us(hist_percentile(h, 99)), prefix,
            us(hist_percentile(h, 99.9)), prefix, us(h->max), prefix, mean / 1000.0);
}

static void print_counts(FILE *f, const stats_t *st)
{
    uint64_t non2xx = st->s1xx + st->s3xx + st->s4xx + st->s5xx;
    fprintf(f,
            ",\"sent\":%" PRIu64 ",\"completed\":%" PRIu64 ",\"ok\":%" PRIu64 ",\"non2xx\":%" PRIu64
            ",\"status_3xx\":%" PRIu64 ",\"status_4xx\":%" PRIu64 ",\"status_5xx\":%" PRIu64
            ",\"first_non2xx\":%d,\"conn_errors\":%" PRIu64 ",\"proto_errors\":%" PRIu64
            ",\"timeouts\":%" PRIu64 ",\"errors\":%" PRIu64 ",\"peer_closes\":%" PRIu64
            ",\"reconnects\":%" PRIu64,
            st->sent, st->completed, st->ok, non2xx, st->s3xx, st->s4xx, st->s5xx, st->first_non2xx,
            st->conn_errors, st->proto_errors, st->timeouts,
            non2xx + st->conn_errors + st->proto_errors + st->timeouts + st->incomplete,
            st->peer_closes, st->reconnects);
}

/* ---- rate mode ------------------------------------------------------------------------------ */

static uint64_t sched_at(const lg_t *g, uint64_t t0, uint64_t i)
{
    return t0 + (uint64_t)((double)i * 1e9 / g->rate);
}

/* How many requests are due by `now`: those with sched_at(i) <= now, at most total. */
static uint64_t due_by(const lg_t *g, uint64_t t0, uint64_t now, uint64_t total)
{
    if (now < t0)
        return 0;
    uint64_t due = (uint64_t)((double)(now - t0) * g->rate / 1e9) + 1;
    if (due > total)
        due = total;
    while (due < total && sched_at(g, t0, due) <= now)
        due++;
    while (due > 0 && sched_at(g, t0, due - 1) > now)
        due--;
    return due;
}

static int run_rate(lg_t *g)
{
    int rc = lg_open(g, (size_t)g->nconns);
    if (rc < 0)
        return rc;
    g->freelist = calloc((size_t)g->nconns, sizeof(int));
    if (!g->freelist)
        return -ENOMEM;
    stats_t *st = &g->st;
    uint64_t timeout_ns = (uint64_t)(g->timeout * 1e9);

    /* Open every connection before the clock starts: the schedule measures requests, not the
     * handshakes of a cold pool. Failures here are retried by the first request that needs one. */
    uint64_t setup_deadline = mono_ns() + timeout_ns;
    int connecting = 0;
    for (int i = 0; i < g->nconns; i++) {
        conn_t *c = &g->conns[i];
        if (conn_connect(g, c) < 0) {
            st->setup_errors++;
            conn_release(g, c);
        } else {
            connecting++;
        }
    }
    while (!g_stop && connecting > 0) {
        uint64_t now = mono_ns();
        if (now >= setup_deadline)
            break;
        poll_events(g, setup_deadline - now);
        connecting = 0;
        for (int i = 0; i < g->nconns; i++)
            connecting += g->conns[i].state == C_CONNECTING;
    }
    for (int i = 0; i < g->nconns; i++) {
        if (g->conns[i].state == C_CONNECTING) {
            st->setup_errors++;
            conn_close(g, &g->conns[i]);
            conn_release(g, &g->conns[i]);
        }
    }

    uint64_t total = (uint64_t)(g->rate * g->duration);
    if (total < 1)
        total = 1;
    uint64_t t0 = mono_ns();
    uint64_t end_sched = t0 + (uint64_t)(g->duration * 1e9);
    uint64_t deadline = end_sched + timeout_ns; /* the hard bound on the whole run */
    uint64_t next_idx = 0;                      /* the oldest request not yet sent */
    uint64_t seen = 0;                          /* requests already known to be due */
    uint64_t next_scan = t0;
    uint64_t due = 0;
    uint64_t now = t0;
    while (!g_stop) {
        now = mono_ns();
        due = due_by(g, t0, now, total);
        for (; seen < due; seen++)
            hist_record(&st->lag, now - sched_at(g, t0, seen));
        /* A request that waited past the timeout in the queue is a timeout, sent or not. */
        while (next_idx < due && now - sched_at(g, t0, next_idx) > timeout_ns) {
            st->timeouts++;
            next_idx++;
        }
        while (next_idx < due && g->nfree > 0) {
            conn_t *c = &g->conns[g->freelist[--g->nfree]];
            conn_dispatch(g, c, next_idx, sched_at(g, t0, next_idx));
            next_idx++;
        }
        if (due - next_idx > st->max_queue)
            st->max_queue = due - next_idx;
        if (now >= next_scan) {
            for (int i = 0; i < g->nconns; i++) {
                conn_t *c = &g->conns[i];
                if (c->has_req && now - c->sched_ns > timeout_ns) {
                    st->timeouts++;
                    conn_detach(g, c);
                    conn_close(g, c);
                    conn_release(g, c);
                }
            }
            next_scan = now + NS_PER_MS;
        }
        if (next_idx >= total && g->inflight == 0)
            break;
        if (now >= deadline)
            break;
        uint64_t wake = deadline;
        if (g->nfree > 0 && next_idx < total && next_idx == due) {
            uint64_t s = sched_at(g, t0, next_idx);
            if (s < wake)
                wake = s;
        }
        if (g->inflight > 0 && next_scan < wake)
            wake = next_scan;
        if (next_idx < due && g->nfree > 0)
            wake = now;
        poll_events(g, wake > now ? wake - now : 0);
    }
    if (!g_stop) {
        /* Past the deadline: whatever is still queued or in flight has timed out. */
        st->timeouts += g->inflight + (due > next_idx ? due - next_idx : 0);
    }
    st->scheduled = g_stop ? due : total;

    double elapsed =
        (double)((st->last_done_ns > end_sched ? st->last_done_ns : end_sched) - t0) / 1e9;
    if (g_stop)
        elapsed = (double)(now - t0) / 1e9;
    if (elapsed <= 0)
        elapsed = 1e-9;
    printf("{\"tool\":\"ag_loadgen\",\"mode\":\"rate\",\"url\":");
    json_str(stdout, g->url);
    printf(",\"rate\":%.1f,\"duration_s\":%.3f,\"connections\":%d,\"timeout_s\":%.3f,"
           "\"scheduled\":%" PRIu64,
           g->rate, g->duration, g->nconns, g->timeout, st->scheduled);
    print_counts(stdout, st);
    printf(",\"setup_errors\":%" PRIu64 ",\"max_queue\":%" PRIu64
           ",\"elapsed_s\":%.3f,\"achieved_rps\":%.1f,\"ok_rps\":%.1f,\"interrupted\":%s",
           st->setup_errors, st->max_queue, elapsed, (double)st->completed / elapsed,
           (double)st->ok / elapsed, g_stop ? "true" : "false");
    print_latency(stdout, "", &st->lat);
    printf(",\"send_lag_p99_us\":%.1f,\"send_lag_max_us\":%.1f}\n",
           us(hist_percentile(&st->lag, 99)), us(st->lag.max));
    fflush(stdout);
    lg_close(g, (size_t)g->nconns);
    return 0;
}

/* ---- stream mode ----------------------------------------------------------------------------
 * N requests over C keep-alive connections, each connection sending its next request as soon as
 * the previous answer has ended (closed loop: this measures time to first byte, not throughput).
 * With C >= N every request goes out at once and all N streams are open together: a
 * "streams_open" line says when every one of them has had its first byte and a "streams_closing"
 * line when the first one has ended, so that the harness can sample the server's memory in
 * between, while all of them are open. */

/* Opens n connections, at most `batch` handshakes at a time, before any request is timed. */
static void open_pool(lg_t *g, size_t n, uint64_t deadline)
{
    size_t opened = 0;
    int connecting = 0;
    while (!g_stop) {
        while (opened < n && connecting < g->open_batch) {
            conn_t *c = &g->conns[opened++];
            if (conn_connect(g, c) < 0) {
                g->st.setup_errors++;
                conn_release(g, c);
            } else {
                connecting++;
            }
        }
        uint64_t now = mono_ns();
        if ((opened == n && connecting == 0) || now >= deadline)
            break;
        if (connecting > 0)
            poll_events(g, deadline - now < 10 * NS_PER_MS ? deadline - now : 10 * NS_PER_MS);
        connecting = 0;
        for (size_t i = 0; i < opened; i++)
            connecting += g->conns[i].state == C_CONNECTING;
    }
    for (size_t i = 0; i < opened; i++) {
        if (g->conns[i].state == C_CONNECTING) {
            g->st.setup_errors++;
            conn_close(g, &g->conns[i]);
            conn_release(g, &g->conns[i]);
        }
    }
    /* Ones never tried (stopped early) still serve: a request reconnects a closed one. */
    for (size_t i = opened; i < n; i++)
        conn_release(g, &g->conns[i]);
}

static int run_stream(lg_t *g)
{
    size_t total = (size_t)g->streams;
    size_t n = (size_t)g->nconns < total ? (size_t)g->nconns : total;
    g->nconns = (int)n; /* what lg_close() must walk, on every path */
    int rc = lg_open(g, n);
    if (rc < 0)
        return rc;
    g->freelist = calloc(n, sizeof(int));
    if (!g->freelist)
        return -ENOMEM;
    stats_t *st = &g->st;
    uint64_t timeout_ns = (uint64_t)(g->timeout * 1e9);
    open_pool(g, n, mono_ns() + timeout_ns);

    uint64_t t0 = mono_ns();
    uint64_t deadline = t0 + (uint64_t)(g->duration * 1e9); /* the hard bound on the whole run */
    uint64_t next_scan = t0, now = t0;
    size_t next = 0;
    bool announced = false, closing = false;
    while (!g_stop) {
        now = mono_ns();
        while (next < total && g->nfree > 0) {
            conn_t *c = &g->conns[g->freelist[--g->nfree]];
            conn_dispatch(g, c, next++, now);
        }
        if (now >= next_scan) {
            size_t waiting = 0, open = 0;
            for (size_t i = 0; i < n; i++) {
                conn_t *c = &g->conns[i];
                if (c->has_req && now - c->sched_ns > timeout_ns) {
                    st->timeouts++;
                    conn_detach(g, c);
                    conn_close(g, c);
                    conn_release(g, c);
                } else if (c->has_req) {
                    waiting += c->first_ns == 0;
                    open += c->first_ns != 0;
                }
            }
            if (!announced && next == total && waiting == 0) {
                announced = true;
                printf("{\"tool\":\"ag_loadgen\",\"mode\":\"streams_open\",\"open\":%zu,"
                       "\"after_ms\":%.1f}\n",
                       open, (double)(now - t0) / 1e6);
                fflush(stdout);
            }
            if (announced && !closing &&
                st->completed + st->conn_errors + st->proto_errors + st->timeouts > 0) {
                closing = true;
                printf("{\"tool\":\"ag_loadgen\",\"mode\":\"streams_closing\",\"after_ms\":%.1f}\n",
                       (double)(now - t0) / 1e6);
                fflush(stdout);
            }
            next_scan = now + 5 * NS_PER_MS;
        }
        if (next >= total && g->inflight == 0)
            break;
        if (now >= deadline)
            break;
        uint64_t wake = next_scan < deadline ? next_scan : deadline;
        poll_events(g, wake > now ? wake - now : 0);
    }
    st->timeouts += g->inflight; /* cut by the deadline or a signal */
    st->scheduled = total;
    double elapsed = (double)(mono_ns() - t0) / 1e9;
    printf("{\"tool\":\"ag_loadgen\",\"mode\":\"stream\",\"url\":");
    json_str(stdout, g->url);
    printf(",\"requests\":%zu,\"connections\":%zu,\"timeout_s\":%.3f", total, n, g->timeout);
    print_counts(stdout, st);
    printf(",\"setup_errors\":%" PRIu64 ",\"streams_complete\":%" PRIu64
           ",\"streams_incomplete\":%" PRIu64 ",\"first_incomplete\":",
           st->setup_errors, st->complete, st->incomplete);
    if (st->first_incomplete)
        json_str(stdout, st->first_incomplete);
    else
        printf("null");
    printf(",\"events_min\":%" PRIu32 ",\"events_max\":%" PRIu32 ",\"deltas_min\":%" PRIu32
           ",\"deltas_max\":%" PRIu32 ",\"body_bytes\":%" PRIu64
           ",\"elapsed_s\":%.3f,\"interrupted\":%s",
           st->events_min, st->events_max, st->deltas_min, st->deltas_max, st->body_bytes, elapsed,
           g_stop ? "true" : "false");
    print_latency(stdout, "ttfb_", &st->ttfb);
    print_latency(stdout, "total_", &st->lat);
    printf("}\n");
    fflush(stdout);
    lg_close(g, n);
    return 0;
}

/* ---- hold mode ------------------------------------------------------------------------------ */

static int run_hold(lg_t *g)
{
    size_t n = (size_t)g->hold;
    int rc = lg_open(g, n);
    if (rc < 0)
        return rc;
    stats_t *st = &g->st;
    uint64_t start = mono_ns();
    uint64_t setup_deadline = start + (uint64_t)(g->timeout * 1e9);
    size_t opened = 0;
    int last_err = 0;
    while (!g_stop) {
        uint64_t now = mono_ns();
        while (opened < n && g->inflight < (uint64_t)g->open_batch) {
            conn_t *c = &g->conns[opened++];
            rc = conn_connect(g, c);
            if (rc < 0) {
                last_err = -rc;
                st->conn_errors++;
                continue;
            }
            c->has_req = true;
            g->inflight++;
            c->sched_ns = now;
            c->wptr = g->req.fixed;
            c->wlen = g->req.fixed_len;
            c->woff = 0;
            resp_reset(&c->resp, g->head_req);
            st->sent++;
        }
        if (opened == n && g->inflight == 0)
            break;
        if (now >= setup_deadline)
            break;
        poll_events(g,
                    setup_deadline - now < 10 * NS_PER_MS ? setup_deadline - now : 10 * NS_PER_MS);
    }
    for (size_t i = 0; i < opened; i++) {
        conn_t *c = &g->conns[i];
        if (c->has_req) {
            st->timeouts++;
            conn_detach(g, c);
            conn_close(g, c);
        }
    }
    size_t open_now = 0;
    for (size_t i = 0; i < opened; i++)
        open_now += g->conns[i].fd >= 0;
    uint64_t ready = mono_ns();
    printf("{\"tool\":\"ag_loadgen\",\"mode\":\"hold\",\"url\":");
    json_str(stdout, g->url);
    printf(",\"target\":%zu,\"open\":%zu", n, open_now);
    print_counts(stdout, st);
    printf(",\"last_errno\":%d,\"setup_ms\":%.1f}\n", last_err, (double)(ready - start) / 1e6);
    fflush(stdout);

    uint64_t hold_end = ready + (uint64_t)(g->duration * 1e9);
    uint64_t closes_before = st->peer_closes;
    while (!g_stop) {
        uint64_t now = mono_ns();
        if (now >= hold_end)
            break;
        poll_events(g, hold_end - now);
    }
    open_now = 0;
    for (size_t i = 0; i < opened; i++)
        open_now += g->conns[i].fd >= 0;
    printf("{\"tool\":\"ag_loadgen\",\"mode\":\"hold_end\",\"open\":%zu,\"closed_by_peer\":%" PRIu64
           ",\"held_s\":%.3f}\n",
           open_now, st->peer_closes - closes_before, (double)(mono_ns() - ready) / 1e9);
    fflush(stdout);
    lg_close(g, n);
    return 0;
}

/* Parses a taskset-style list ("0-3,6") into set. Returns 0, or -1 when malformed. */
static int parse_cpus(const char *s, cpu_set_t *set)
{
    CPU_ZERO(set);
    while (*s) {
        char *end;
        long a = strtol(s, &end, 10);
        long b = a;
        if (end == s || a < 0 || a >= CPU_SETSIZE)
            return -1;
        if (*end == '-') {
            s = end + 1;
            b = strtol(s, &end, 10);
            if (end == s || b < a || b >= CPU_SETSIZE)
                return -1;
        }
        for (long c = a; c <= b; c++)
            CPU_SET((int)c, set);
        if (*end == ',')
            end++;
        else if (*end != '\0')
            return -1;
        s = end;
    }
    return CPU_COUNT(set) > 0 ? 0 : -1;
}

/* ---- first-ok mode -------------------------------------------------------------------------- */

/* One blocking-with-deadline attempt: connect, send, read one answer. Returns 0 with the status
 * in r->status, or a negative errno. */
static int try_once(lg_t *g, uint64_t deadline, resp_t *r)
{
    int fd = socket(g->tg.addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    int rc = 0;
    char buf[16384];
    size_t have = 0;
    if (connect(fd, (struct sockaddr *)&g->tg.addr, g->tg.addrlen) < 0) {
        if (errno != EINPROGRESS) {
            rc = -errno;
            goto done;
        }
        uint64_t now = mono_ns();
        struct pollfd p = {.fd = fd, .events = POLLOUT};
        if (now >= deadline || poll(&p, 1, (int)((deadline - now) / NS_PER_MS) + 1) <= 0) {
            rc = -ETIMEDOUT;
            goto done;
        }
        int err = 0;
        socklen_t len = sizeof(err);
        getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err) {
            rc = -err;
            goto done;
        }
    }
    for (size_t off = 0; off < g->req.fixed_len;) {
        ssize_t n = send(fd, g->req.fixed + off, g->req.fixed_len - off, MSG_NOSIGNAL);
        if (n < 0 && errno != EAGAIN && errno != EINTR) {
            rc = -errno;
            goto done;
        }
        if (n > 0) {
            off += (size_t)n;
            continue;
        }
        uint64_t now = mono_ns();
        struct pollfd p = {.fd = fd, .events = POLLOUT};
        if (now >= deadline || poll(&p, 1, (int)((deadline - now) / NS_PER_MS) + 1) <= 0) {
            rc = -ETIMEDOUT;
            goto done;
        }
    }
    resp_reset(r, g->head_req);
    for (;;) {
        ssize_t n = recv(fd, buf + have, sizeof(buf) - have, 0);
        if (n == 0) {
            rc = resp_eof(r) == RESP_DONE ? 0 : -ECONNRESET;
            goto done;
        }
        if (n < 0) {
            if (errno != EAGAIN && errno != EINTR) {
                rc = -errno;
                goto done;
            }
            uint64_t now = mono_ns();
            struct pollfd p = {.fd = fd, .events = POLLIN};
            if (now >= deadline || poll(&p, 1, (int)((deadline - now) / NS_PER_MS) + 1) <= 0) {
                rc = -ETIMEDOUT;
                goto done;
            }
            continue;
        }
        have += (size_t)n;
        size_t used = 0;
        int prc = resp_parse(r, buf, have, &used);
        memmove(buf, buf + used, have - used);
        have -= used;
        if (prc == RESP_DONE)
            goto done;
        if (prc == RESP_ERR || have == sizeof(buf)) {
            rc = -EPROTO;
            goto done;
        }
    }
done:
    close(fd);
    return rc;
}

static int stop_child(pid_t pid, uint64_t *stop_ns, int *exit_status)
{
    uint64_t t = mono_ns();
    kill(-pid, SIGTERM);
    uint64_t deadline = t + 5 * NS_PER_S;
    int status = 0;
    for (;;) {
        pid_t w = waitpid(pid, &status, WNOHANG);
        if (w == pid)
            break;
        if (w < 0)
            return -errno;
        if (mono_ns() >= deadline) {
            kill(-pid, SIGKILL); /* the whole group: workers of a multi-process server too */
            waitpid(pid, &status, 0);
            break;
        }
        sleep_ns(NS_PER_MS);
    }
    kill(-pid, SIGKILL); /* stragglers left in the group once the leader has gone */
    *stop_ns = mono_ns() - t;
    *exit_status = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    return 0;
}

static int run_first_ok(lg_t *g, char **spawn_argv, const cpu_set_t *spawn_cpus,
                        const char *spawn_log, bool since_set, int64_t since_ns,
                        const char *body_out)
{
    resp_t r;
    memset(&r, 0, sizeof(r));
    r.capture_max = body_out ? (1u << 20) : 0;
    uint64_t start = mono_ns();
    pid_t pid = 0;
    if (spawn_argv) {
        pid = fork();
        if (pid < 0)
            return -errno;
        if (pid == 0) {
            setpgid(0, 0);
            prctl(PR_SET_PDEATHSIG, SIGTERM); /* no orphan if we are killed mid-measurement */
            /* Pinned here rather than through taskset, whose own exec would be timed too. */
            if (spawn_cpus && sched_setaffinity(0, sizeof(*spawn_cpus), spawn_cpus) < 0)
                _exit(126);
            /* Our stdout carries the JSON line: the child's output goes elsewhere. */
            int out = spawn_log ? open(spawn_log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644)
                                : open("/dev/null", O_WRONLY | O_CLOEXEC);
            if (out < 0 || dup2(out, STDOUT_FILENO) < 0 || dup2(out, STDERR_FILENO) < 0)
                _exit(126);
            execvp(spawn_argv[0], spawn_argv);
            _exit(127);
        }
        setpgid(pid, pid);
    }
    uint64_t deadline = start + (uint64_t)(g->timeout * 1e9);
    int attempts = 0, last_rc = 0, last_status = 0;
    bool ok = false, child_died = false;
    int child_status = 0;
    uint64_t elapsed_ns = 0;
    int64_t elapsed_since = 0;
    while (!g_stop && mono_ns() < deadline) {
        if (pid > 0) {
            int status;
            if (waitpid(pid, &status, WNOHANG) == pid) {
                child_died = true;
                child_status = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
                pid = 0;
                break;
            }
        }
        attempts++;
        last_rc = try_once(g, deadline, &r);
        if (last_rc == 0) {
            last_status = r.status;
            if (r.status >= 200 && r.status < 300) {
                elapsed_ns = mono_ns() - start;
                elapsed_since = real_ns() - since_ns;
                ok = true;
                break;
            }
        }
        sleep_ns(100 * NS_PER_US); /* refused until the listener is up: poll, gently */
    }
    uint64_t stop_ns = 0;
    int exit_status = -1;
    if (pid > 0)
        stop_child(pid, &stop_ns, &exit_status);
    if (ok && body_out) {
        FILE *f = fopen(body_out, "wb");
        if (f) {
            if (r.body_have)
                fwrite(r.body, 1, r.body_have, f);
            fclose(f);
        }
    }
    printf("{\"tool\":\"ag_loadgen\",\"mode\":\"first_ok\",\"url\":");
    json_str(stdout, g->url);
    printf(",\"ok\":%s,\"elapsed_us\":%.1f,\"attempts\":%d,\"status\":%d,\"last_errno\":%d,"
           "\"body_bytes\":%" PRIu64,
           ok ? "true" : "false",
           since_set ? (double)elapsed_since / 1000.0 : (double)elapsed_ns / 1000.0, attempts,
           last_status, last_rc < 0 ? -last_rc : 0, r.body_len);
    if (spawn_argv)
        printf(",\"child_died\":%s,\"child_status\":%d,\"stop_us\":%.1f,\"exit_status\":%d",
               child_died ? "true" : "false", child_status, us(stop_ns), exit_status);
    printf("}\n");
    fflush(stdout);
    resp_fini(&r);
    return ok ? 0 : 1;
}

/* ---- free-port mode ------------------------------------------------------------------------- */

/* Prints n distinct ports that were free a moment ago on 127.0.0.1: all are bound at once so
 * they differ; the usual race with other processes remains, and the harness retries. */
static int run_free_port(int n)
{
    int fds[64];
    if (n < 1 || n > (int)AG_ARRAY_LEN(fds))
        return -EINVAL;
    int rc = 0;
    int i;
    for (i = 0; i < n; i++) {
        fds[i] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0};
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        socklen_t len = sizeof(a);
        if (fds[i] < 0 || bind(fds[i], (struct sockaddr *)&a, sizeof(a)) < 0 ||
            getsockname(fds[i], (struct sockaddr *)&a, &len) < 0) {
            rc = -errno;
            i++;
            break;
        }
        printf("%s%u", i ? " " : "", ntohs(a.sin_port));
    }
    printf("\n");
    for (int j = 0; j < i; j++)
        if (fds[j] >= 0)
            close(fds[j]);
    return rc;
}

/* ---- self-test ------------------------------------------------------------------------------ */

static int st_pass, st_fail;

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (cond) {                                                                                \
            st_pass++;                                                                             \
        } else {                                                                                   \
            st_fail++;                                                                             \
            fprintf(stderr, "  %s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);             \
        }                                                                                          \
    } while (0)

/* Feeds `raw` to a fresh parser in pieces of `step` bytes, as a socket would deliver it, and
 * returns the final result; *rest gets the bytes left unconsumed. */
static int feed(const char *raw, size_t step, bool head, resp_t *r, size_t *rest, bool eof)
{
    char buf[8192];
    size_t have = 0, pos = 0, len = strlen(raw);
    resp_reset(r, head);
    int rc = RESP_MORE;
    while (pos < len && rc == RESP_MORE) {
        size_t n = len - pos < step ? len - pos : step;
        memcpy(buf + have, raw + pos, n);
        have += n;
        pos += n;
        size_t used = 0;
        rc = resp_parse(r, buf, have, &used);
        memmove(buf, buf + used, have - used);
        have -= used;
    }
    if (rc == RESP_MORE && eof)
        rc = resp_eof(r);
    *rest = have + (len - pos);
    return rc;
}

static void selftest_parser(void)
{
    static const char *cl = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: b\r\n\r\nhello";
    static const char *chunked = "HTTP/1.1 201 Created\r\ntransfer-encoding: Chunked\r\n\r\n"
                                 "5;ext=1\r\nhello\r\nA\r\n0123456789\r\n0\r\nX-T: 1\r\n\r\n";
    static const char *two = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi"
                             "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
    resp_t r;
    memset(&r, 0, sizeof(r));
    size_t rest;
    for (size_t step = 1; step <= 64; step++) {
        r.capture_max = 64;
        CHECK(feed(cl, step, false, &r, &rest, false) == RESP_DONE);
        CHECK(r.status == 200 && r.body_len == 5 && rest == 0 && !r.close);
        CHECK(r.body_have == 5 && memcmp(r.body, "hello", 5) == 0);
        CHECK(feed(chunked, step, false, &r, &rest, false) == RESP_DONE);
        CHECK(r.status == 201 && r.body_len == 15 && rest == 0);
        CHECK(r.body_have == 15 && memcmp(r.body, "hello0123456789", 15) == 0);
    }
    resp_fini(&r);
    r.capture_max = 0;
    CHECK(feed(two, 1000, false, &r, &rest, false) == RESP_DONE && rest == 38);
    CHECK(feed("HTTP/1.1 204 No Content\r\nContent-Length: 9\r\n\r\n", 7, false, &r, &rest,
               false) == RESP_DONE);
    CHECK(feed("HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n", 7, true, &r, &rest, false) ==
          RESP_DONE);
    CHECK(feed("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx", 3,
               false, &r, &rest, false) == RESP_DONE);
    CHECK(r.status == 200 && r.body_len == 1);
    CHECK(feed("HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nabc", 2, false, &r, &rest, true) ==
          RESP_DONE);
    CHECK(r.close && r.body_len == 3);
    CHECK(feed("HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", 5, false, &r, &rest, false) ==
          RESP_DONE);
    CHECK(r.close);
    CHECK(feed("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", 4, false, &r, &rest, true) ==
          RESP_ERR);
    CHECK(feed("HTTP/1.1 2x0 OK\r\n\r\n", 4, false, &r, &rest, false) == RESP_ERR);
    CHECK(feed("HTTP/2 200 OK\r\n\r\n", 4, false, &r, &rest, false) == RESP_ERR);
    CHECK(feed("HTTP/1.1 200 OK\r\nContent-Length: 1x\r\n\r\n", 4, false, &r, &rest, false) ==
          RESP_ERR);
    CHECK(feed("HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 4, false, &r,
               &rest, false) == RESP_ERR);
    CHECK(feed("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 4, false, &r, &rest,
               false) == RESP_ERR);
    CHECK(feed("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabXY", 4, false, &r,
               &rest, false) == RESP_ERR);
    CHECK(feed("HTTP/1.1 200 OK\r\nNoColonHere\r\n\r\n", 4, false, &r, &rest, false) == RESP_ERR);
    /* An unterminated header block stops being "need more" once it passes the cap. */
    char *big = malloc(RESP_MAX_HEAD + 64);
    if (big) {
        memset(big, 'a', RESP_MAX_HEAD + 63);
        memcpy(big, "HTTP/1.1 200 OK\r\nX: ", 20);
        big[RESP_MAX_HEAD + 63] = '\0';
        resp_reset(&r, false);
        size_t used = 0;
        CHECK(resp_parse(&r, big, strlen(big), &used) == RESP_ERR);
        free(big);
    }
}

/* Feeds `text` to a fresh scanner in pieces of `step` bytes; returns the verdict. */
static const char *sse_run(const char *text, size_t step, sse_scan_t *x)
{
    memset(x, 0, sizeof(*x));
    for (size_t off = 0, len = strlen(text); off < len; off += step)
        sse_feed(x, text + off, len - off < step ? len - off : step);
    return sse_verdict(x);
}

static void selftest_sse(void)
{
    static const char ok[] =
        "event: message_start\ndata: {\"type\":\"message_start\"}\n\n"
        "event: content_block_start\ndata: {}\n\nevent: ping\ndata: {}\n\n"
        "event: content_block_delta\ndata: {\"text\":\"a\"}\n\n"
        "event: content_block_delta\ndata: {\"text\":\" b\"}\n\n"
        "event: content_block_stop\ndata: {}\n\nevent: message_delta\ndata: {}\n\n"
        "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";
    sse_scan_t x;
    for (size_t step = 1; step <= 40; step++) {
        CHECK(sse_run(ok, step, &x) == NULL);
        CHECK(x.events == 8 && x.deltas == 2 && x.error_events == 0);
    }
    CHECK(sse_run("event:message_start\r\ndata: {}\r\n\r\nevent:message_stop\r\ndata: {}\r\n\r\n",
                  3, &x) == NULL);
    CHECK(x.events == 2);
    /* A data line far longer than the scanner keeps does not confuse it. */
    char long_data[600];
    int o = snprintf(long_data, sizeof(long_data), "event: message_start\ndata: ");
    memset(long_data + o, 'x', 400);
    snprintf(long_data + o + 400, sizeof(long_data) - (size_t)o - 400,
             "\n\nevent: message_stop\ndata: {}\n\n");
    CHECK(sse_run(long_data, 7, &x) == NULL && x.events == 2);
    CHECK(sse_run("event: message_start\ndata: {}\n\nevent: content_block_delta\ndata: {}\n\n", 5,
                  &x) != NULL);
    CHECK(!x.stopped && x.deltas == 1);
    CHECK(sse_run("event: ping\ndata: {}\n\nevent: message_stop\ndata: {}\n\n", 5, &x) != NULL);
    CHECK(sse_run("event: message_start\ndata: {}\n\nevent: error\ndata: {}\n\n"
                  "event: message_stop\ndata: {}\n\n",
                  5, &x) != NULL);
    CHECK(x.error_events == 1);
    CHECK(sse_run("event: message_start\ndata: {}\n\nevent: message_stop\ndata: {}\n\n"
                  "event: ping\ndata: {}\n\n",
                  5, &x) != NULL);
    CHECK(sse_run("event: message_start\ndata: {}\n\nevent: message_stop\ndata: {}\n", 5, &x) !=
          NULL);
    CHECK(sse_run("", 1, &x) != NULL);
    /* Through the HTTP parser: the scanner sees the decoded body, not the chunk framing. */
    static const char chunked[] = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                                  "1f\r\nevent: message_start\ndata: {}\n\n\r\n"
                                  "1e\r\nevent: message_stop\ndata: {}\n\n\r\n0\r\n\r\n";
    for (size_t step = 1; step <= 16; step++) {
        resp_t r;
        memset(&r, 0, sizeof(r));
        memset(&x, 0, sizeof(x));
        r.sse = &x;
        size_t rest;
        CHECK(feed(chunked, step, false, &r, &rest, false) == RESP_DONE);
        CHECK(sse_verdict(&x) == NULL && x.events == 2 && r.body_len == 31 + 30);
    }
}

static void selftest_hist(void)
{
    hist_t *h = calloc(1, sizeof(*h));
    if (!h) {
        CHECK(h != NULL);
        return;
    }
    for (uint64_t v = 1; v <= 100000; v++)
        hist_record(h, v);
    CHECK(h->n == 100000 && h->min == 1 && h->max == 100000);
    uint64_t p50 = hist_percentile(h, 50), p99 = hist_percentile(h, 99);
    CHECK(p50 >= 50000 && p50 <= 50000 + 50000 / 128 + 1);
    CHECK(p99 >= 99000 && p99 <= 99000 + 99000 / 128 + 1);
    CHECK(hist_percentile(h, 100) == 100000);
    CHECK(hist_percentile(h, 0.0001) == 1);
    /* Every value lies within its bucket; buckets never go backwards. */
    unsigned prev = 0;
    bool ok = true;
    for (uint64_t v = 1; v < (1ull << 47); v += v / 7 + 1) {
        unsigned idx = hist_index(v);
        uint64_t lo, hi;
        hist_bounds(idx, &lo, &hi);
        if (idx >= HIST_LEN || idx < prev || lo > v || hi < v || (hi - lo) * 128 > v)
            ok = false;
        prev = idx;
    }
    CHECK(ok);
    CHECK(hist_index(UINT64_MAX) == HIST_LEN - 1);
    hist_t *e = calloc(1, sizeof(*e));
    CHECK(e && hist_percentile(e, 99) == 0);
    free(e);
    free(h);
}

static void selftest_request(void)
{
    target_t t;
    CHECK(url_parse("http://127.0.0.1:8080/api/generate?x=1", &t) == 0);
    CHECK(strcmp(t.host, "127.0.0.1") == 0 && strcmp(t.port, "8080") == 0 &&
          strcmp(t.path, "/api/generate?x=1") == 0);
    CHECK(url_parse("http://localhost", &t) == 0 && strcmp(t.port, "80") == 0 &&
          strcmp(t.path, "/") == 0);
    CHECK(url_parse("http://[::1]:9/p", &t) == 0 && strcmp(t.host, "::1") == 0);
    CHECK(url_parse("https://127.0.0.1/", &t) < 0);
    CHECK(url_parse("http://h:99999999/", &t) < 0);
    CHECK(url_parse("http://h:80x/", &t) < 0);

    CHECK(url_parse("http://127.0.0.1:1/g", &t) == 0);
    static const char body[] = "{\"prompt\":\"p {{n}} q {{n}}\"}";
    const char *hdr[] = {"X-A: 1"};
    reqtpl_t q;
    CHECK(reqtpl_init(&q, &t, "POST", hdr, 1, body, strlen(body), true, true) == 0);
    CHECK(q.unique && q.holes == 2);
    char *out = malloc(q.max_len);
    if (out) {
        size_t n = reqtpl_render(&q, 12345, out);
        static const char want[] = "POST /g HTTP/1.1\r\nHost: 127.0.0.1:1\r\nX-A: 1\r\n"
                                   "Content-Type: application/json\r\nContent-Length: 28\r\n\r\n"
                                   "{\"prompt\":\"p 12345 q 12345\"}";
        CHECK(n == strlen(want) && n <= q.max_len && memcmp(out, want, n) == 0);
        free(out);
    }
    reqtpl_fini(&q);
    CHECK(reqtpl_init(&q, &t, "GET", NULL, 0, NULL, 0, false, false) == 0);
    CHECK(q.fixed_len == strlen("GET /g HTTP/1.1\r\nHost: 127.0.0.1:1\r\n\r\n"));
    reqtpl_fini(&q);
}

static void selftest_cpus(void)
{
    cpu_set_t set;
    CHECK(parse_cpus("0-2,5", &set) == 0 && CPU_COUNT(&set) == 4 && CPU_ISSET(5, &set) &&
          !CPU_ISSET(3, &set));
    CHECK(parse_cpus("1", &set) == 0 && CPU_COUNT(&set) == 1 && CPU_ISSET(1, &set));
    CHECK(parse_cpus("", &set) < 0);
    CHECK(parse_cpus("3-1", &set) < 0);
    CHECK(parse_cpus("1,x", &set) < 0);
}

static int run_self_test(void)
{
    selftest_parser();
    selftest_sse();
    selftest_hist();
    selftest_request();
    selftest_cpus();
    printf("%d passed, %d failed\n", st_pass, st_fail);
    return st_fail ? 1 : 0;
}

/* ---- command line ---------------------------------------------------------------------------- */

static void usage(FILE *f)
{
    fprintf(f, "usage: ag_loadgen -u http://HOST:PORT/PATH [options]\n"
               "  rate mode (default): -R RATE -d SECONDS [-c CONNS]\n"
               "  --stream N          N requests for event streams over -c connections (closed\n"
               "                      loop; -c >= N: all at once); time to first body byte,\n"
               "                      total time, and a check of each stream's events; -d is\n"
               "                      the bound on the whole run, -t on each request\n"
               "  --hold N            open N keep-alive connections, one request each, keep them\n"
               "                      open for -d seconds (or until SIGTERM/SIGINT/SIGUSR1)\n"
               "  --first-ok          retry until the first 2xx; print the elapsed time\n"
               "     --spawn -- CMD.. start CMD, time from its exec, then stop it\n"
               "     --since-ns NS    time from NS (CLOCK_REALTIME nanoseconds) instead\n"
               "     --spawn-cpus L   pin CMD to the CPUs in L (taskset syntax: 0-3,6)\n"
               "     --spawn-log F    append CMD's stdout and stderr to F (default /dev/null)\n"
               "     --body-out FILE  write the 2xx body to FILE\n"
               "  --free-port N       print N free ports on 127.0.0.1\n"
               "  --self-test         run the built-in checks\n"
               "options: -m METHOD, -b BODY, -B FILE, -H 'Name: value' (repeatable), -R req/s,\n"
               "  -d seconds (default 10), -c connections (default 64), -t timeout seconds\n"
               "  (default 5), --unique-prompt (replace {{n}} in the body by the request number),\n"
               "  --open-batch N (hold: connections set up at once, default 256)\n");
}

static int read_file(const char *path, char **out, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return -errno;
    size_t cap = 4096, n = 0;
    char *b = malloc(cap);
    while (b) {
        size_t r = fread(b + n, 1, cap - n, f);
        n += r;
        if (r == 0)
            break;
        if (n == cap) {
            if (cap >= (16u << 20)) {
                free(b);
                b = NULL;
                break;
            }
            char *nb = realloc(b, cap * 2);
            if (!nb) {
                free(b);
                b = NULL;
                break;
            }
            b = nb;
            cap *= 2;
        }
    }
    fclose(f);
    if (!b)
        return -ENOMEM;
    *out = b;
    *len = n;
    return 0;
}

static bool parse_double(const char *s, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end != '\0' || v < 0)
        return false;
    *out = v;
    return true;
}

static bool parse_long(const char *s, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end != '\0' || v < 0)
        return false;
    *out = v;
    return true;
}

static void raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

int main(int argc, char **argv)
{
    lg_t g;
    memset(&g, 0, sizeof(g));
    g.epfd = -1;
    g.mode = MODE_RATE;
    g.duration = 10;
    g.timeout = 5;
    g.nconns = 64;
    g.open_batch = 256;
    const char *method = NULL;
    const char *headers[MAX_HEADERS];
    int nheaders = 0;
    const char *body = NULL;
    char *body_file = NULL;
    size_t body_len = 0;
    bool unique = false, since_set = false;
    int64_t since_ns = 0;
    char **spawn_argv = NULL;
    const char *body_out = NULL;
    long free_ports = 0;
    cpu_set_t spawn_cpus;
    bool spawn_cpus_set = false;
    const char *spawn_log = NULL;

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        long l = 0;
        bool takes = true;
        if (strcmp(a, "--") == 0) {
            spawn_argv = argv + i + 1;
            if (!spawn_argv[0]) {
                fprintf(stderr, "ag_loadgen: nothing to spawn after --\n");
                return 2;
            }
            break;
        } else if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            usage(stdout);
            return 0;
        } else if (strcmp(a, "--unique-prompt") == 0) {
            unique = true;
            takes = false;
        } else if (strcmp(a, "--first-ok") == 0) {
            g.mode = MODE_FIRST_OK;
            takes = false;
        } else if (strcmp(a, "--self-test") == 0) {
            g.mode = MODE_SELF_TEST;
            takes = false;
        } else if (strcmp(a, "--spawn") == 0) {
            takes = false; /* the command follows "--" */
        } else if (!v) {
            fprintf(stderr, "ag_loadgen: %s needs a value\n", a);
            return 2;
        } else if (strcmp(a, "-u") == 0) {
            g.url = v;
        } else if (strcmp(a, "-m") == 0) {
            method = v;
        } else if (strcmp(a, "-b") == 0) {
            body = v;
            body_len = strlen(v);
        } else if (strcmp(a, "-B") == 0) {
            if (read_file(v, &body_file, &body_len) < 0) {
                fprintf(stderr, "ag_loadgen: cannot read %s\n", v);
                return 2;
            }
            body = body_file;
        } else if (strcmp(a, "-H") == 0) {
            if (nheaders == MAX_HEADERS || !strchr(v, ':')) {
                fprintf(stderr, "ag_loadgen: bad or too many headers: %s\n", v);
                return 2;
            }
            headers[nheaders++] = v;
        } else if (strcmp(a, "-R") == 0) {
            if (!parse_double(v, &g.rate) || g.rate <= 0 || g.rate > 10e6)
                goto bad;
        } else if (strcmp(a, "-d") == 0) {
            if (!parse_double(v, &g.duration) || g.duration > 86400)
                goto bad;
        } else if (strcmp(a, "-t") == 0) {
            if (!parse_double(v, &g.timeout) || g.timeout <= 0 || g.timeout > 3600)
                goto bad;
        } else if (strcmp(a, "-c") == 0) {
            if (!parse_long(v, &l) || l < 1 || l > 1000000)
                goto bad;
            g.nconns = (int)l;
        } else if (strcmp(a, "--stream") == 0) {
            if (!parse_long(v, &l) || l < 1 || l > 1000000)
                goto bad;
            g.mode = MODE_STREAM;
            g.streams = l;
        } else if (strcmp(a, "--hold") == 0) {
            if (!parse_long(v, &l) || l < 1 || l > 1000000)
                goto bad;
            g.mode = MODE_HOLD;
            g.hold = l;
        } else if (strcmp(a, "--open-batch") == 0) {
            if (!parse_long(v, &l) || l < 1 || l > 100000)
                goto bad;
            g.open_batch = (int)l;
        } else if (strcmp(a, "--since-ns") == 0) {
            if (!parse_long(v, &l))
                goto bad;
            since_ns = l;
            since_set = true;
        } else if (strcmp(a, "--spawn-cpus") == 0) {
            if (parse_cpus(v, &spawn_cpus) < 0)
                goto bad;
            spawn_cpus_set = true;
        } else if (strcmp(a, "--spawn-log") == 0) {
            spawn_log = v;
        } else if (strcmp(a, "--body-out") == 0) {
            body_out = v;
        } else if (strcmp(a, "--free-port") == 0) {
            if (!parse_long(v, &free_ports) || free_ports < 1 || free_ports > 64)
                goto bad;
            g.mode = MODE_FREE_PORT;
        } else {
            fprintf(stderr, "ag_loadgen: unknown option %s\n", a);
            usage(stderr);
            return 2;
        }
        if (takes)
            i++;
        continue;
    bad:
        fprintf(stderr, "ag_loadgen: bad value for %s: %s\n", a, v);
        return 2;
    }

    if (g.mode == MODE_SELF_TEST)
        return run_self_test();
    if (g.mode == MODE_FREE_PORT)
        return run_free_port((int)free_ports) < 0 ? 1 : 0;
    if (!g.url || url_parse(g.url, &g.tg) < 0) {
        fprintf(stderr, "ag_loadgen: -u http://HOST:PORT/PATH is required\n");
        usage(stderr);
        free(body_file);
        return 2;
    }
    if (g.mode == MODE_RATE && g.rate <= 0) {
        fprintf(stderr, "ag_loadgen: -R RATE is required\n");
        free(body_file);
        return 2;
    }
    if (spawn_argv && g.mode != MODE_FIRST_OK) {
        fprintf(stderr, "ag_loadgen: -- CMD only goes with --first-ok\n");
        free(body_file);
        return 2;
    }
    if (target_resolve(&g.tg) < 0) {
        fprintf(stderr, "ag_loadgen: cannot resolve %s\n", g.tg.host);
        free(body_file);
        return 2;
    }
    if (!method)
        method = body ? "POST" : "GET";
    g.head_req = strcmp(method, "HEAD") == 0;
    bool has_body = body != NULL || strcmp(method, "POST") == 0 || strcmp(method, "PUT") == 0;
    if (reqtpl_init(&g.req, &g.tg, method, headers, nheaders, body ? body : "", body_len, has_body,
                    unique && (g.mode == MODE_RATE || g.mode == MODE_STREAM)) < 0) {
        fprintf(stderr, "ag_loadgen: out of memory\n");
        free(body_file);
        return 1;
    }

    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal; /* no SA_RESTART: a blocked epoll_wait must return */
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGUSR1, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    raise_nofile();
    prctl(PR_SET_TIMERSLACK, 1UL); /* wake on the schedule, not up to 50 us after it */

    int rc;
    if (g.mode == MODE_FIRST_OK)
        rc = run_first_ok(&g, spawn_argv, spawn_cpus_set ? &spawn_cpus : NULL, spawn_log, since_set,
                          since_ns, body_out);
    else if (g.mode == MODE_HOLD)
        rc = run_hold(&g);
    else if (g.mode == MODE_STREAM)
        rc = run_stream(&g);
    else
        rc = run_rate(&g);
    if (rc < 0) {
        fprintf(stderr, "ag_loadgen: %s\n", strerror(-rc));
        lg_close(&g, g.mode == MODE_HOLD ? (size_t)g.hold : (size_t)g.nconns);
        rc = 1;
    }
    reqtpl_fini(&g.req);
    free(body_file);
    return rc;
}
