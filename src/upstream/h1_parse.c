/* SPDX-License-Identifier: MIT
 *
 * h1_parse.c: HTTP/1.1 response heads and body framing for the native upstream
 * client. The upstream layer may not use http/, so the byte rules of the request
 * parser are restated here, with the same accept/reject choices.
 */
#include "util/platform.h"

#include "upstream/h1_parse.h"

#include <limits.h>
#include <string.h>

static bool is_tchar(unsigned char c)
{
    if ((c >= '0' && c <= '9') || ((c | 0x20) >= 'a' && (c | 0x20) <= 'z'))
        return true;
    return c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

/* field-content: HTAB, SP, VCHAR, obs-text; never CR, LF, NUL, other CTLs or DEL */
static bool is_field(unsigned char c)
{
    return c == '\t' || (c >= 0x20 && c != 0x7f);
}

static bool is_ows(unsigned char c)
{
    return c == ' ' || c == '\t';
}

/* Splits the next comma-separated element off *v, OWS trimmed. */
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
    *v = comma ? ag_str(comma + 1, (size_t)(end - comma - 1)) : AG_STR_NULL;
    return true;
}

struct head_state {
    bool te_seen;
    bool te_bad; /* not exactly one "chunked" and nothing else */
    bool conn_close;
    bool conn_keep_alive;
};

static int on_content_length(ag_str_t v, ag_h1_response_head_t *out)
{
    ag_str_t elem;
    bool any = false;
    while (next_element(&v, &elem)) {
        if (elem.len == 0)
            return AG_EPROTO;
        int64_t n = 0;
        for (size_t i = 0; i < elem.len; i++) {
            unsigned d = (unsigned char)elem.ptr[i] - (unsigned)'0';
            if (d > 9 || n > (INT64_MAX - (int64_t)d) / 10)
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

/* We send no TE header, so a server may only use chunked (RFC 9112 7.4):
 * anything else would be bytes we cannot decode. */
static void on_transfer_encoding(ag_str_t v, struct head_state *st)
{
    ag_str_t elem;
    unsigned n = 0;
    if (st->te_seen)
        st->te_bad = true; /* a second line: chunked twice, or another coding */
    st->te_seen = true;
    while (next_element(&v, &elem)) {
        if (!ag_str_eq_lit_ci(elem, "chunked"))
            st->te_bad = true;
        n++;
    }
    if (n != 1)
        st->te_bad = true;
}

static int on_connection(ag_str_t v, struct head_state *st)
{
    ag_str_t elem;
    while (next_element(&v, &elem)) {
        for (size_t i = 0; i < elem.len; i++)
            if (!is_tchar((unsigned char)elem.ptr[i]))
                return AG_EPROTO;
        if (ag_str_eq_lit_ci(elem, "close"))
            st->conn_close = true;
        else if (ag_str_eq_lit_ci(elem, "keep-alive"))
            st->conn_keep_alive = true;
    }
    return 0;
}

static int on_header(const ag_h1_header_t *h, ag_h1_response_head_t *out, struct head_state *st)
{
    switch (h->name.len) {
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

/* "HTTP/1.x SP ddd" then SP reason CRLF, or CRLF at once (an empty reason
 * without its SP: common, and it cannot change the framing). */
static int parse_status_line(const unsigned char *p, size_t len, ag_h1_response_head_t *out)
{
    static const char pattern[] = "HTTP/1.9 999"; /* '9': any digit */
    size_t i;
    for (i = 0; i < 12 && i < len; i++) {
        bool ok = pattern[i] == '9' ? (p[i] >= '0' && p[i] <= '9') : p[i] == pattern[i];
        if (!ok)
            return AG_EPROTO;
        if (i == 7 && p[7] > '1')
            return AG_EPROTO; /* HTTP/1.2 and up: not a version we speak */
        if (i == 9 && (p[9] < '1' || p[9] > '5'))
            return AG_EPROTO;
    }
    if (len < 12)
        return AG_EAGAIN;
    out->minor_version = p[7] - '0';
    out->status = (p[9] - '0') * 100 + (p[10] - '0') * 10 + (p[11] - '0');
    size_t pos = 12;
    if (pos == len)
        return AG_EAGAIN;
    if (p[pos] == ' ') {
        pos++;
        size_t start = pos;
        while (pos < len && is_field(p[pos]))
            pos++;
        out->reason = ag_str((const char *)p + start, pos - start);
    } else {
        out->reason = ag_str((const char *)p + pos, 0);
    }
    if (pos == len)
        return AG_EAGAIN;
    if (p[pos] != '\r')
        return AG_EPROTO;
    if (pos + 1 == len)
        return AG_EAGAIN;
    if (p[pos + 1] != '\n')
        return AG_EPROTO;
    return (int)(pos + 2);
}

int ag_h1_parse_response_head(const char *buf, size_t len, ag_h1_header_t *headers,
                              size_t max_headers, ag_h1_response_head_t *out)
{
    const unsigned char *p = (const unsigned char *)buf;
    struct head_state st = {0};
    size_t pos, start, n = 0;

    memset(out, 0, sizeof(*out));
    out->content_length = -1;
    out->headers = headers;
    if (len > INT_MAX)
        return AG_EHDRTOOBIG;
    int rc = parse_status_line(p, len, out);
    if (rc < 0)
        return rc;
    pos = (size_t)rc;
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
        if (!is_tchar(p[pos])) /* obs-fold, bare LF, empty name */
            return AG_EPROTO;
        if (n == max_headers)
            return AG_EHDRTOOBIG;
        start = pos;
        while (pos < len && is_tchar(p[pos]))
            pos++;
        if (pos == len)
            return AG_EAGAIN;
        if (p[pos] != ':')
            return AG_EPROTO;
        headers[n].name = ag_str(buf + start, pos - start);
        pos++;
        while (pos < len && is_ows(p[pos]))
            pos++;
        start = pos;
        while (pos < len && is_field(p[pos]))
            pos++;
        if (pos == len)
            return AG_EAGAIN;
        if (p[pos] != '\r')
            return AG_EPROTO;
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
    if (st.te_seen) {
        if (st.te_bad || out->minor_version == 0 || out->content_length >= 0)
            return AG_EPROTO;
        out->chunked = true;
    }
    out->keep_alive =
        out->minor_version == 1 ? !st.conn_close : st.conn_keep_alive && !st.conn_close;
    return (int)pos;
}

/* ---- body framing ---- */

enum {
    B_SIZE_FIRST, /* first hex digit of a chunk size */
    B_SIZE,
    B_SIZE_BWS, /* whitespace after the size: only ';' may follow */
    B_EXT,
    B_SIZE_LF,
    B_DATA, /* chunk data, or the Content-Length body, or the close-delimited one */
    B_DATA_CR,
    B_DATA_LF,
    B_TRAILER_START,
    B_TRAILER_NAME,
    B_TRAILER_VALUE,
    B_TRAILER_LF,
    B_END_LF,
    B_DONE,
    B_ERROR,
};

void ag_h1_body_init(ag_h1_body_t *b, const ag_h1_response_head_t *head, bool head_request)
{
    memset(b, 0, sizeof(*b));
    b->reusable = head->keep_alive;
    if (head_request || head->status < 200 || head->status == 204 || head->status == 304) {
        b->kind = AG_H1_BODY_NONE;
        b->_state = B_DONE;
    } else if (head->chunked) {
        b->kind = AG_H1_BODY_CHUNKED;
        b->_state = B_SIZE_FIRST;
    } else if (head->content_length >= 0) {
        b->kind = AG_H1_BODY_LENGTH;
        b->_left = (uint64_t)head->content_length;
        b->_state = b->_left ? B_DATA : B_DONE;
    } else {
        b->kind = AG_H1_BODY_CLOSE;
        b->reusable = false;
        b->_state = B_DATA;
    }
}

bool ag_h1_body_done(const ag_h1_body_t *b)
{
    return b->_state == B_DONE;
}

int ag_h1_body_eof(ag_h1_body_t *b)
{
    if (b->_state == B_DONE)
        return 0;
    if (b->kind == AG_H1_BODY_CLOSE && b->_state == B_DATA) {
        b->_state = B_DONE;
        return 0;
    }
    b->_state = B_ERROR;
    return AG_EPROTO;
}

static int hex_value(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c |= 0x20;
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* One byte of chunk framing (everything but data). @return 0 or AG_EPROTO. */
static int chunk_step(ag_h1_body_t *b, unsigned char c)
{
    int h;
    switch (b->_state) {
    case B_SIZE_FIRST:
    case B_SIZE:
        h = hex_value(c);
        if (h < 0 && b->_state == B_SIZE_FIRST)
            return AG_EPROTO;
        if (c == '\r') {
            b->_state = B_SIZE_LF;
            return 0;
        }
        if (++b->_count > AG_H1_CHUNK_LINE_MAX)
            return AG_EPROTO;
        if (h >= 0) {
            if (b->_left >> 60)
                return AG_EPROTO; /* a 17th significant digit */
            b->_left = (b->_left << 4) | (uint64_t)h;
            b->_state = B_SIZE;
        } else if (c == ';') {
            b->_state = B_EXT;
        } else if (is_ows(c)) {
            b->_state = B_SIZE_BWS;
        } else {
            return AG_EPROTO;
        }
        return 0;
    case B_SIZE_BWS:
        if (++b->_count > AG_H1_CHUNK_LINE_MAX)
            return AG_EPROTO;
        if (c == ';')
            b->_state = B_EXT;
        else if (!is_ows(c))
            return AG_EPROTO;
        return 0;
    case B_EXT:
        if (c == '\r') {
            b->_state = B_SIZE_LF;
            return 0;
        }
        return ++b->_count > AG_H1_CHUNK_LINE_MAX || !is_field(c) ? AG_EPROTO : 0;
    case B_SIZE_LF:
        if (c != '\n')
            return AG_EPROTO;
        b->_count = 0;
        b->_state = b->_left ? B_DATA : B_TRAILER_START;
        return 0;
    case B_DATA_CR:
        if (c != '\r')
            return AG_EPROTO;
        b->_state = B_DATA_LF;
        return 0;
    case B_DATA_LF:
        if (c != '\n')
            return AG_EPROTO;
        b->_count = 0;
        b->_state = B_SIZE_FIRST;
        return 0;
    default:
        break;
    }
    if (++b->_count > AG_H1_TRAILERS_MAX)
        return AG_EPROTO;
    switch (b->_state) {
    case B_TRAILER_START:
        if (c == '\r')
            b->_state = B_END_LF;
        else if (is_tchar(c))
            b->_state = B_TRAILER_NAME;
        else
            return AG_EPROTO;
        return 0;
    case B_TRAILER_NAME:
        if (c == ':')
            b->_state = B_TRAILER_VALUE;
        else if (!is_tchar(c))
            return AG_EPROTO;
        return 0;
    case B_TRAILER_VALUE:
        if (c == '\r')
            b->_state = B_TRAILER_LF;
        else if (!is_field(c))
            return AG_EPROTO;
        return 0;
    case B_TRAILER_LF:
        if (c != '\n')
            return AG_EPROTO;
        b->_state = B_TRAILER_START;
        return 0;
    case B_END_LF:
        if (c != '\n')
            return AG_EPROTO;
        b->_state = B_DONE;
        return 0;
    default:
        return AG_EPROTO;
    }
}

int ag_h1_body_decode(ag_h1_body_t *b, char *buf, size_t *len)
{
    size_t n = *len, src = 0, dst = 0;
    if (n > INT_MAX || b->_state == B_ERROR) {
        *len = 0;
        return AG_EPROTO;
    }
    while (src < n) {
        if (b->_state == B_DONE) {
            size_t rest = n - src;
            if (rest && dst != src)
                memmove(buf + dst, buf + src, rest);
            *len = dst;
            return (int)rest;
        }
        if (b->_state == B_DATA) {
            size_t take = n - src;
            if (b->kind != AG_H1_BODY_CLOSE && b->_left < take)
                take = (size_t)b->_left;
            if (dst != src)
                memmove(buf + dst, buf + src, take);
            dst += take;
            src += take;
            if (b->kind == AG_H1_BODY_CLOSE)
                continue;
            b->_left -= take;
            if (b->_left == 0)
                b->_state = b->kind == AG_H1_BODY_CHUNKED ? B_DATA_CR : B_DONE;
            continue;
        }
        if (chunk_step(b, (unsigned char)buf[src++]) < 0) {
            b->_state = B_ERROR;
            *len = 0;
            return AG_EPROTO;
        }
    }
    *len = dst;
    return b->_state == B_DONE ? 0 : AG_EAGAIN;
}
