/* SPDX-License-Identifier: MIT
 *
 * resp.c: the RESP2 reply parser. A first pass scans and checks the bytes and
 * can stop and resume at any element boundary; a second pass, over a reply
 * known to be complete and well-formed, builds the tree in one allocation.
 */
#include "util/platform.h"

#include "store/resp.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "util/errors.h"

void ag_resp_parser_init(ag_resp_parser_t *p, const ag_resp_limits_t *limits)
{
    memset(p, 0, sizeof(*p));
    p->limits = *limits;
}

/* A RESP integer: an optional '-', then digits without leading zeros. */
static int parse_int(const char *s, size_t n, int64_t *out)
{
    size_t i = 0;
    bool neg = false;
    if (n > 0 && s[0] == '-') {
        neg = true;
        i = 1;
    }
    if (i == n || n - i > 19 || (s[i] == '0' && n - i > 1) || (neg && s[i] == '0'))
        return AG_EPROTO;
    uint64_t v = 0;
    for (; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return AG_EPROTO;
        v = v * 10 + (uint64_t)(s[i] - '0');
    }
    if (v > (neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX))
        return AG_EPROTO;
    *out = neg ? (int64_t)(0 - v) : (int64_t)v;
    return 0;
}

/* The line that starts at buf[pos]: its content after the type byte is
 * buf[pos+1 .. pos+1+*clen), and *next is the byte after its CRLF. */
static int line_at(const char *buf, size_t len, size_t pos, size_t *clen, size_t *next)
{
    size_t avail = len - pos;
    size_t scan = avail < AG_RESP_MAX_LINE + 3 ? avail : AG_RESP_MAX_LINE + 3;
    const char *lf = memchr(buf + pos, '\n', scan);
    if (!lf)
        return scan == AG_RESP_MAX_LINE + 3 ? AG_EPROTO : AG_EAGAIN;
    size_t end = (size_t)(lf - buf); /* index of LF */
    if (end < pos + 2 || buf[end - 1] != '\r')
        return AG_EPROTO;
    *clen = end - 1 - (pos + 1);
    if (memchr(buf + pos + 1, '\r', *clen))
        return AG_EPROTO;
    *next = end + 1;
    return 0;
}

/* Checks the element at p->_pos. *complete: it ended an element (a scalar, a
 * nil or an empty array); otherwise it opened an array. */
static int scan_one(ag_resp_parser_t *p, const char *buf, size_t len, bool *complete)
{
    size_t pos = p->_pos, clen, next;
    if (pos >= len)
        return AG_EAGAIN;
    int rc = line_at(buf, len, pos, &clen, &next);
    if (rc < 0)
        return rc;
    const char *c = buf + pos + 1;
    int64_t n = 0;
    if (p->_nodes + 1 > p->limits.max_nodes)
        return AG_ETOOBIG;
    *complete = true;
    switch (buf[pos]) {
    case '+':
    case '-':
        break;
    case ':':
        rc = parse_int(c, clen, &n);
        if (rc < 0)
            return rc;
        break;
    case '$':
        rc = parse_int(c, clen, &n);
        if (rc < 0 || n < -1)
            return AG_EPROTO;
        if (n >= 0) {
            if ((uint64_t)n > p->limits.max_bulk)
                return AG_ETOOBIG;
            if (len - next < (size_t)n + 2)
                return AG_EAGAIN;
            if (buf[next + (size_t)n] != '\r' || buf[next + (size_t)n + 1] != '\n')
                return AG_EPROTO;
            next += (size_t)n + 2;
        }
        break;
    case '*':
        rc = parse_int(c, clen, &n);
        if (rc < 0 || n < -1)
            return AG_EPROTO;
        if (n > 0) {
            if (p->_depth + 1 > AG_RESP_MAX_DEPTH)
                return AG_EPROTO;
            if ((uint64_t)n > p->limits.max_nodes - p->_nodes - 1)
                return AG_ETOOBIG;
            p->_left[++p->_depth] = n;
            *complete = false;
        }
        break;
    default:
        return AG_EPROTO;
    }
    p->_nodes++;
    p->_pos = next;
    return 0;
}

/* Builds the element at buf[*pos] into r; children take slots from *slot on. */
static void build(const char *buf, size_t *pos, ag_resp_t *r, ag_resp_t *slots, size_t *slot)
{
    const char *lf = memchr(buf + *pos, '\n', AG_RESP_MAX_LINE + 3);
    size_t end = (size_t)(lf - buf);
    const char *c = buf + *pos + 1;
    size_t clen = end - 1 - (*pos + 1);
    char type = buf[*pos];
    *pos = end + 1;
    memset(r, 0, sizeof(*r));
    int64_t n = 0;
    if (type == ':' || type == '$' || type == '*')
        parse_int(c, clen, &n);
    switch (type) {
    case '+':
    case '-':
        r->type = type == '+' ? AG_RESP_STATUS : AG_RESP_ERROR;
        r->str = c;
        r->len = clen;
        break;
    case ':':
        r->type = AG_RESP_INTEGER;
        r->integer = n;
        break;
    case '$':
        if (n < 0) {
            r->type = AG_RESP_NIL;
            break;
        }
        r->type = AG_RESP_BULK;
        r->str = buf + *pos;
        r->len = (size_t)n;
        *pos += (size_t)n + 2;
        break;
    default: /* '*' */
        if (n < 0) {
            r->type = AG_RESP_NIL;
            break;
        }
        r->type = AG_RESP_ARRAY;
        r->len = (size_t)n;
        r->elems = n ? slots + *slot : NULL;
        *slot += (size_t)n;
        for (size_t i = 0; i < (size_t)n; i++)
            build(buf, pos, &r->elems[i], slots, slot);
        break;
    }
}

int64_t ag_resp_parse(ag_resp_parser_t *p, const char *buf, size_t len, ag_resp_t **out)
{
    *out = NULL;
    for (;;) {
        bool complete = false;
        int rc = scan_one(p, buf, len, &complete);
        if (rc < 0)
            return rc;
        if (!complete)
            continue;
        /* An element ended: it may end the arrays around it too. */
        while (p->_depth > 0 && --p->_left[p->_depth] == 0)
            p->_depth--;
        if (p->_depth == 0)
            break;
    }
    size_t used = p->_pos, nodes = p->_nodes;
    ag_resp_limits_t limits = p->limits;
    ag_resp_parser_init(p, &limits);
    ag_resp_t *slots = malloc(nodes * sizeof(*slots));
    if (!slots)
        return -ENOMEM;
    size_t pos = 0, slot = 1;
    build(buf, &pos, &slots[0], slots, &slot);
    AG_ASSERT(pos == used && slot == nodes);
    *out = slots;
    return (int64_t)used;
}

void ag_resp_free(ag_resp_t *r)
{
    free(r);
}

static bool has_text(const ag_resp_t *r)
{
    return r->type == AG_RESP_STATUS || r->type == AG_RESP_ERROR || r->type == AG_RESP_BULK;
}

static void dup_measure(const ag_resp_t *r, size_t *nodes, size_t *bytes)
{
    (*nodes)++;
    if (has_text(r))
        *bytes += r->len + 1;
    for (size_t i = 0; r->type == AG_RESP_ARRAY && i < r->len; i++)
        dup_measure(&r->elems[i], nodes, bytes);
}

static void dup_place(const ag_resp_t *r, ag_resp_t *dst, ag_resp_t **nodes, char **text)
{
    *dst = *r;
    if (has_text(r)) {
        memcpy(*text, r->str, r->len);
        (*text)[r->len] = '\0';
        dst->str = *text;
        *text += r->len + 1;
    }
    if (r->type == AG_RESP_ARRAY && r->len) {
        dst->elems = *nodes;
        *nodes += r->len;
        for (size_t i = 0; i < r->len; i++)
            dup_place(&r->elems[i], &dst->elems[i], nodes, text);
    }
}

ag_resp_t *ag_resp_dup(const ag_resp_t *r)
{
    size_t nodes = 0, bytes = 0;
    dup_measure(r, &nodes, &bytes);
    ag_resp_t *block = malloc(nodes * sizeof(*block) + bytes);
    if (!block)
        return NULL;
    ag_resp_t *next = block + 1;
    char *text = (char *)(block + nodes);
    dup_place(r, block, &next, &text);
    return block;
}

bool ag_resp_is(const ag_resp_t *r, ag_resp_type_t type, const char *s)
{
    size_t n = strlen(s);
    return r && r->type == type && r->len == n && memcmp(r->str, s, n) == 0;
}

bool ag_resp_error_is(const ag_resp_t *r, const char *code)
{
    size_t n = strlen(code);
    return r && r->type == AG_RESP_ERROR && r->len >= n && memcmp(r->str, code, n) == 0 &&
           (r->len == n || r->str[n] == ' ');
}
