/* SPDX-License-Identifier: MIT
 *
 * h1_parse.c: HTTP/1.1 response heads and body framing for the native upstream
 * client, with the request parser's accept/reject choices; the byte classes and
 * the chunked decoder are the ones util/ gives both.
 */
#include "util/platform.h"

#include "upstream/h1_parse.h"

#include "util/http_bytes.h"

#include <limits.h>
#include <string.h>

static bool next_element(ag_str_t *v, ag_str_t *elem)
{
    if (v->ptr == NULL)
        return false;
    const char *p = v->ptr, *end = v->ptr + v->len;
    const char *comma = memchr(p, ',', v->len);
    const char *e = comma ? comma : end;
    while (p < e && ag_http_is_ows((unsigned char)*p))
        p++;
    const char *q = e;
    while (q > p && ag_http_is_ows((unsigned char)q[-1]))
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
            if (!ag_http_is_tchar((unsigned char)elem.ptr[i]))
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
        while (pos < len && ag_http_is_field(p[pos]))
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
        if (!ag_http_is_tchar(p[pos])) /* obs-fold, bare LF, empty name */
            return AG_EPROTO;
        if (n == max_headers)
            return AG_EHDRTOOBIG;
        start = pos;
        while (pos < len && ag_http_is_tchar(p[pos]))
            pos++;
        if (pos == len)
            return AG_EAGAIN;
        if (p[pos] != ':')
            return AG_EPROTO;
        headers[n].name = ag_str(buf + start, pos - start);
        pos++;
        while (pos < len && ag_http_is_ows(p[pos]))
            pos++;
        start = pos;
        /* A CR that is not a line's end stays in the value: the relay drops
         * such a header whole and logs it (RFC 9112 section 5: reject or
         * replace), rather than failing an answer the client can still get. */
        while (pos < len && (ag_http_is_field(p[pos]) ||
                             (p[pos] == '\r' && pos + 1 < len && p[pos + 1] != '\n')))
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
        while (end > start && ag_http_is_ows(p[end - 1]))
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

/* Chunked bodies are the shared decoder's (b->chunks); these states are the
 * other framings'. */
enum {
    B_DATA, /* the Content-Length body, or the close-delimited one */
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
        ag_chunked_init(&b->chunks);
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
    if (b->kind == AG_H1_BODY_CHUNKED)
        return ag_chunked_done(&b->chunks);
    return b->_state == B_DONE;
}

int ag_h1_body_eof(ag_h1_body_t *b)
{
    if (ag_h1_body_done(b))
        return 0;
    if (b->kind == AG_H1_BODY_CLOSE && b->_state == B_DATA) {
        b->_state = B_DONE;
        return 0;
    }
    b->_state = B_ERROR;
    return AG_EPROTO;
}

int ag_h1_body_decode(ag_h1_body_t *b, char *buf, size_t *len)
{
    size_t n = *len;
    if (b->kind == AG_H1_BODY_CHUNKED && b->_state != B_ERROR) {
        int rc = ag_chunked_decode(&b->chunks, buf, len);
        if (rc >= 0 || rc == AG_EAGAIN)
            return rc;
        b->_state = B_ERROR;
    }
    if (n > INT_MAX || b->_state == B_ERROR) {
        *len = 0;
        return AG_EPROTO;
    }
    if (b->_state == B_DONE) {
        *len = 0;
        return (int)n;
    }
    size_t take = n;
    if (b->kind == AG_H1_BODY_LENGTH) {
        if (b->_left < take)
            take = (size_t)b->_left;
        b->_left -= take;
        if (b->_left == 0)
            b->_state = B_DONE;
    }
    *len = take; /* the body's bytes are already at buf[0..take); what follows stays after them */
    return b->_state == B_DONE ? (int)(n - take) : AG_EAGAIN;
}
