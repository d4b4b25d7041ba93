/* SPDX-License-Identifier: MIT
 *
 * parser.c: the HTTP/1.1 request-head parser and the chunked body decoder.
 * Both reject anything two HTTP implementations could frame differently
 * (request smuggling); docs/http-parser.md is the accept/reject list.
 */
#include "util/platform.h"

#include "http/parser.h"

#include <limits.h>
#include <string.h>
#include <strings.h>

/* Byte classes, one bit each. A table rather than range tests because the
 * header-value loop is the hot path and a lookup there is one load. */
enum {
    C_TOKEN = 1,  /* tchar (RFC 9110 5.6.2): ALPHA DIGIT !#$%&'*+-.^_`|~ */
    C_FIELD = 2,  /* field-content bytes: HTAB SP VCHAR obs-text (not DEL) */
    C_TARGET = 4, /* request-target bytes: VCHAR except '#' (no fragment) */
    C_HOST = 8,   /* Host / authority: unreserved sub-delims ':' '%' '[' ']' */
};

/* clang-format off */
static const unsigned char byte_class[256] = {
    0,  0,  0,  0,  0,  0,  0,  0,  0,  2,  0,  0,  0,  0,  0,  0,  /* 0x00 */
    0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  /* 0x10 */
    2,  15, 6,  3,  15, 15, 15, 15, 14, 14, 15, 15, 14, 15, 15, 6,  /* 0x20  !"#$%&'()*+,-./ */
    15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 14, 14, 6,  14, 6,  6,  /* 0x30 0-9:;<=>? */
    6,  15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, /* 0x40 @A-O */
    15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 14, 6,  14, 7,  15, /* 0x50 P-Z[\]^_ */
    7,  15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, /* 0x60 `a-o */
    15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 6,  7,  6,  15, 0,  /* 0x70 p-z{|}~ DEL */
    2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  /* 0x80 obs-text */
    2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  /* 0x90 obs-text */
    2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  /* 0xA0 obs-text */
    2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  /* 0xB0 obs-text */
    2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  /* 0xC0 obs-text */
    2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  /* 0xD0 obs-text */
    2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  /* 0xE0 obs-text */
    2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  /* 0xF0 obs-text */
};
/* clang-format on */

static inline bool is_class(unsigned char c, unsigned cls)
{
    return (byte_class[c] & cls) != 0;
}

static inline bool is_ows(unsigned char c)
{
    return c == ' ' || c == '\t';
}

/* ---- list helpers for header values ---- */

/* Splits the next element of a comma-separated list (RFC 9110 5.6.1) off
 * *v, with OWS trimmed. @return false once *v is exhausted. An element may be
 * empty ("a,,b"); callers decide whether that is allowed. */
static bool next_element(ag_str_t *v, ag_str_t *elem)
{
    if (v->ptr == NULL)
        return false;
    const char *p = v->ptr, *end = v->ptr + v->len;
    const char *comma = memchr(p, ',', v->len);
    const char *e = comma ? comma : end;
    while (p < e && is_ows((unsigned char)*p))
        p++;
    const char *q = e;
    while (q > p && is_ows((unsigned char)q[-1]))
        q--;
    *elem = ag_str(p, (size_t)(q - p));
    if (comma)
        *v = ag_str(comma + 1, (size_t)(end - comma - 1));
    else
        *v = AG_STR_NULL;
    return true;
}

static bool all_class(ag_str_t s, unsigned cls)
{
    for (size_t i = 0; i < s.len; i++)
        if (!is_class((unsigned char)s.ptr[i], cls))
            return false;
    return true;
}

/* ---- request head ---- */

/* What the header lines said so far about framing and the connection; folded
 * into ag_http_request_head_t once the head is complete. */
struct head_state {
    unsigned host_count;
    unsigned te_chunked; /* how many "chunked" codings */
    bool te_seen;
    bool te_bad;          /* a list element that is empty or not a token */
    bool te_last_chunked; /* the last coding so far is "chunked" */
    bool te_other;        /* a coding other than chunked */
    bool conn_close;
    bool conn_keep_alive;
};

/* Content-Length: 1*DIGIT, or a list of identical ones (RFC 9110 8.6 lets a
 * recipient accept "42, 42"). Any sign, space inside, empty element or
 * disagreement with an earlier Content-Length is a framing ambiguity. */
static int on_content_length(ag_str_t v, ag_http_request_head_t *out)
{
    ag_str_t elem;
    bool any = false;
    while (next_element(&v, &elem)) {
        if (elem.len == 0)
            return AG_EPROTO;
        int64_t n = 0;
        for (size_t i = 0; i < elem.len; i++) {
            unsigned d = (unsigned char)elem.ptr[i] - (unsigned)'0';
            if (d > 9)
                return AG_EPROTO;
            if (n > (INT64_MAX - (int64_t)d) / 10)
                return AG_EPROTO;
            n = n * 10 + (int64_t)d;
        }
        if (out->content_length >= 0 && out->content_length != n)
            return AG_EPROTO;
        out->content_length = n;
        any = true;
    }
    return any ? 0 : AG_EPROTO;
}

/* Transfer-Encoding lines add up to one list (RFC 9110 5.3); only the
 * verdict on the whole list is taken, at the end of the head. */
static void on_transfer_encoding(ag_str_t v, struct head_state *st)
{
    ag_str_t elem;
    st->te_seen = true;
    if (v.len == 0) {
        st->te_bad = true;
        return;
    }
    while (next_element(&v, &elem)) {
        /* Rejecting empty elements, unlike RFC 9110's lenient list rule:
         * ",chunked" is the kind of input that two parsers disagree on. */
        if (elem.len == 0 || !all_class(elem, C_TOKEN)) {
            st->te_bad = true;
            return;
        }
        if (ag_str_eq_lit_ci(elem, "chunked")) {
            st->te_chunked++;
            st->te_last_chunked = true;
        } else {
            st->te_other = true;
            st->te_last_chunked = false;
        }
    }
}

static int on_connection(ag_str_t v, struct head_state *st)
{
    ag_str_t elem;
    while (next_element(&v, &elem)) {
        if (elem.len == 0)
            continue; /* RFC 9110 5.6.1: empty list elements are ignored */
        if (!all_class(elem, C_TOKEN))
            return AG_EPROTO;
        if (ag_str_eq_lit_ci(elem, "close"))
            st->conn_close = true;
        else if (ag_str_eq_lit_ci(elem, "keep-alive"))
            st->conn_keep_alive = true;
    }
    return 0;
}

/* Looks at the headers that decide framing and connection handling. Dispatch
 * on the name's length first: most headers match none and cost one switch. */
static int on_header(const ag_http_header_t *h, ag_http_request_head_t *out, struct head_state *st)
{
    switch (h->name.len) {
    case 4:
        if (ag_str_eq_lit_ci(h->name, "host")) {
            if (!all_class(h->value, C_HOST))
                return AG_EPROTO;
            st->host_count++;
            out->host = h->value;
        }
        break;
    case 6:
        if (ag_str_eq_lit_ci(h->name, "expect") && ag_str_eq_lit_ci(h->value, "100-continue"))
            out->expect_continue = true;
        break;
    case 10:
        if (ag_str_eq_lit_ci(h->name, "connection"))
            return on_connection(h->value, st);
        break;
    case 14:
        if (ag_str_eq_lit_ci(h->name, "content-length"))
            return on_content_length(h->value, out);
        break;
    case 17:
        if (ag_str_eq_lit_ci(h->name, "transfer-encoding"))
            on_transfer_encoding(h->value, st);
        break;
    default:
        break;
    }
    return 0;
}

/* Splits a request-target (already checked byte by byte) into path and query,
 * and accepts only the forms an origin server takes (RFC 9112 3.2). */
static int split_target(const char *t, size_t n, ag_http_request_head_t *out)
{
    const char *end = t + n, *path;

    out->target = ag_str(t, n);
    out->authority = AG_STR_NULL;
    if (t[0] == '/') {
        path = t;
    } else if (n == 1 && t[0] == '*') {
        /* asterisk-form exists for OPTIONS only */
        if (!ag_str_eq(out->method, AG_STR_LIT("OPTIONS")))
            return AG_EPROTO;
        out->path = out->target;
        out->query = ag_str(end, 0);
        return 0;
    } else {
        size_t skip;
        if (n >= 7 && strncasecmp(t, "http://", 7) == 0)
            skip = 7;
        else if (n >= 8 && strncasecmp(t, "https://", 8) == 0)
            skip = 8;
        else
            return AG_EPROTO; /* authority-form (CONNECT) or garbage */
        const char *a = t + skip, *e = a;
        /* No userinfo ('@' is not a host byte): deprecated, and a classic
         * way to make two parsers see different hosts. */
        while (e < end && *e != '/' && *e != '?') {
            if (!is_class((unsigned char)*e, C_HOST))
                return AG_EPROTO;
            e++;
        }
        if (e == a)
            return AG_EPROTO;
        out->authority = ag_str(a, (size_t)(e - a));
        path = e;
    }
    const char *qm = memchr(path, '?', (size_t)(end - path));
    if (qm) {
        out->path = ag_str(path, (size_t)(qm - path));
        out->query = ag_str(qm + 1, (size_t)(end - qm - 1));
    } else {
        out->path = ag_str(path, (size_t)(end - path));
        out->query = ag_str(end, 0);
    }
    return 0;
}

/* HTTP-version then CRLF. A verdict comes at the first byte that settles it,
 * so the result on a prefix never contradicts the result on the whole. */
static int parse_version(const unsigned char *p, size_t avail, int *minor)
{
    static const char pattern[] = "HTTP/9.9"; /* '9': any digit */
    size_t i;
    for (i = 0; i < 8 && i < avail; i++) {
        bool ok = pattern[i] == '9' ? (p[i] >= '0' && p[i] <= '9') : p[i] == pattern[i];
        if (!ok)
            return AG_EPROTO;
    }
    if (avail < 10) {
        if (avail == 9 && p[8] != '\r')
            return AG_EPROTO;
        return AG_EAGAIN;
    }
    if (p[8] != '\r' || p[9] != '\n')
        return AG_EPROTO;
    if (p[5] != '1' || (p[7] != '0' && p[7] != '1'))
        return AG_HTTP_EVERSION;
    *minor = p[7] - '0';
    return 10;
}

/* Once the whole head is in: the checks that need every header. */
static int finish_head(ag_http_request_head_t *out, const struct head_state *st)
{
    /* RFC 9112 3.2: 400 for a 1.1 request without Host, or with several. */
    if (st->host_count > 1 || (st->host_count == 0 && out->minor_version == 1))
        return AG_EPROTO;
    if (st->te_seen) {
        /* RFC 9112 6.1: 1.0 framing with TE is faulty; TE with
         * Content-Length is the smuggling classic; chunked must be last
         * and only once. */
        if (st->te_bad || out->minor_version == 0 || out->content_length >= 0)
            return AG_EPROTO;
        if (!st->te_last_chunked || st->te_chunked != 1)
            return AG_EPROTO;
        if (st->te_other)
            return AG_HTTP_ENOTIMPL;
        out->chunked = true;
    }
    if (out->minor_version == 1) {
        out->keep_alive = !st->conn_close;
    } else {
        out->keep_alive = st->conn_keep_alive && !st->conn_close;
        out->expect_continue = false; /* RFC 9110 10.1.1: ignored in 1.0 */
    }
    return 0;
}

int ag_http_parse_request_head(const char *buf, size_t len, ag_http_header_t *headers,
                               size_t max_headers, ag_http_request_head_t *out)
{
    const unsigned char *p = (const unsigned char *)buf;
    struct head_state st = {0};
    size_t pos = 0, start, n = 0;
    int rc;

    memset(out, 0, sizeof(*out));
    out->content_length = -1;
    out->headers = headers;

    /* RFC 9112 2.2: ignore empty lines before the request line. */
    for (;;) {
        if (pos == len)
            return AG_EAGAIN;
        if (p[pos] != '\r')
            break;
        if (pos + 1 == len)
            return AG_EAGAIN;
        if (p[pos + 1] != '\n')
            return AG_EPROTO;
        pos += 2;
    }

    /* method SP request-target SP HTTP-version CRLF, single spaces only */
    start = pos;
    while (pos < len && is_class(p[pos], C_TOKEN))
        pos++;
    if (pos == len)
        return AG_EAGAIN;
    if (p[pos] != ' ' || pos == start)
        return AG_EPROTO;
    out->method = ag_str(buf + start, pos - start);
    pos++;

    start = pos;
    while (pos < len && is_class(p[pos], C_TARGET))
        pos++;
    if (pos == len)
        return AG_EAGAIN;
    if (p[pos] != ' ' || pos == start)
        return AG_EPROTO;
    rc = split_target(buf + start, pos - start, out);
    if (rc < 0)
        return rc;
    pos++;

    rc = parse_version(p + pos, len - pos, &out->minor_version);
    if (rc < 0)
        return rc;
    pos += (size_t)rc;

    for (;;) {
        if (pos == len)
            return AG_EAGAIN;
        if (p[pos] == '\r') {
            if (pos + 1 == len)
                return AG_EAGAIN;
            if (p[pos + 1] != '\n')
                return AG_EPROTO;
            pos += 2;
            break;
        }
        /* Not a token byte: obs-fold (SP/HTAB), a bare LF, an empty name. */
        if (!is_class(p[pos], C_TOKEN))
            return AG_EPROTO;
        if (n == max_headers)
            return AG_EHDRTOOBIG;

        start = pos;
        while (pos < len && is_class(p[pos], C_TOKEN))
            pos++;
        if (pos == len)
            return AG_EAGAIN;
        if (p[pos] != ':') /* includes whitespace before the colon */
            return AG_EPROTO;
        headers[n].name = ag_str(buf + start, pos - start);
        pos++;

        while (pos < len && is_ows(p[pos]))
            pos++;
        start = pos;
        while (pos < len && is_class(p[pos], C_FIELD))
            pos++;
        if (pos == len)
            return AG_EAGAIN;
        if (p[pos] != '\r')
            return AG_EPROTO; /* NUL, bare LF, other CTLs, DEL */
        if (pos + 1 == len)
            return AG_EAGAIN;
        if (p[pos + 1] != '\n')
            return AG_EPROTO;
        size_t end = pos;
        while (end > start && is_ows(p[end - 1]))
            end--;
        headers[n].value = ag_str(buf + start, end - start);
        pos += 2;

        rc = on_header(&headers[n], out, &st);
        if (rc < 0)
            return rc;
        n++;
    }

    out->num_headers = n;
    rc = finish_head(out, &st);
    if (rc < 0)
        return rc;
    /* Heads past INT_MAX cannot be reported; the caller's limit is far lower. */
    return pos > INT_MAX ? AG_EHDRTOOBIG : (int)pos;
}

int ag_http_parse_request_head_next(const char *buf, size_t len, size_t last_len,
                                    ag_http_header_t *headers, size_t max_headers,
                                    ag_http_request_head_t *out)
{
    if (last_len > 0 && last_len <= len) {
        /* The head ends in CRLF CRLF; a match that ends in the new bytes
         * starts at most 3 bytes before them. No new bytes: still AG_EAGAIN. */
        size_t from = last_len > 3 ? last_len - 3 : 0;
        const char *s = buf + from, *end = buf + len;
        bool found = false;
        while (!found && s < end) {
            s = memchr(s, '\r', (size_t)(end - s));
            if (s == NULL)
                break;
            found = end - s >= 4 && memcmp(s, "\r\n\r\n", 4) == 0;
            s++;
        }
        if (!found)
            return AG_EAGAIN;
    }
    return ag_http_parse_request_head(buf, len, headers, max_headers, out);
}

const ag_http_header_t *ag_http_find_header(const ag_http_request_head_t *req, const char *name)
{
    size_t n = strlen(name);
    for (size_t i = 0; i < req->num_headers; i++) {
        const ag_http_header_t *h = &req->headers[i];
        if (h->name.len == n && strncasecmp(h->name.ptr, name, n) == 0)
            return h;
    }
    return NULL;
}
