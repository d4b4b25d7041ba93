/* SPDX-License-Identifier: MIT
 *
 * test_http_parser.c: the request-head parser (accept/reject table, the
 * smuggling cases, incremental equivalence) and the chunked decoder (every
 * split, extensions, trailers, pipelined leftovers, malformed framing).
 */
#include "util/platform.h"

#include <stdint.h>
#include <string.h>

#include "harness.h"
#include "http/parser.h"

#define MAXH 16

/* Parses a copy of s[0..n) in an exactly sized heap block, so that ASan
 * catches any read past len. */
static int parse_exact(const char *s, size_t n, ag_http_header_t *hdrs, size_t maxh,
                       ag_http_request_head_t *out)
{
    char *copy = malloc(n ? n : 1);
    memcpy(copy, s, n);
    int rc = ag_http_parse_request_head(copy, n, hdrs, maxh, out);
    free(copy);
    return rc;
}

/* Every prefix gives AG_EAGAIN or the whole input's result, and once a prefix
 * has a verdict, every longer one has the same. @return the first prefix
 * length that breaks this, or -1. */
static long check_prefixes(const char *s, size_t n)
{
    ag_http_header_t hdrs[MAXH];
    ag_http_request_head_t head;
    int full = parse_exact(s, n, hdrs, MAXH, &head);
    bool decided = false;
    for (size_t k = 0; k <= n; k++) {
        int rc = parse_exact(s, k, hdrs, MAXH, &head);
        if (rc == AG_EAGAIN) {
            if (decided)
                return (long)k;
            continue;
        }
        if (rc != full)
            return (long)k;
        if (!decided && full > 0 && (size_t)full != k)
            return (long)k; /* completes exactly at its last byte */
        decided = true;
    }
    return -1;
}

/* A server that re-calls with last_len, one byte at a time, reaches the same
 * verdict as one call on the whole input (or is still waiting when the input
 * has no CRLFCRLF at all). */
static bool check_next_hint(const char *s, size_t n)
{
    ag_http_header_t hdrs[MAXH];
    ag_http_request_head_t head;
    int full = ag_http_parse_request_head(s, n, hdrs, MAXH, &head);
    int rc = AG_EAGAIN;
    size_t last = 0;
    for (size_t k = 1; k <= n && rc == AG_EAGAIN; k++) {
        rc = ag_http_parse_request_head_next(s, k, last, hdrs, MAXH, &head);
        last = k;
    }
    if (rc != AG_EAGAIN)
        return rc == full;
    return full == AG_EAGAIN || memmem(s, n, "\r\n\r\n", 4) == NULL;
}

typedef struct {
    const char *req;
    size_t len;
    int expect; /* 0: valid, consumes all of it; else the error */
} head_case_t;

#define C(s, e)                                                                                    \
    {                                                                                              \
        s, sizeof(s) - 1, e                                                                        \
    }
#define OK 0

static const head_case_t head_cases[] = {
    /* valid */
    C("GET / HTTP/1.1\r\nHost: a\r\n\r\n", OK),
    C("GET /api/generate?x=1 HTTP/1.1\r\nHost: a\r\n\r\n", OK),
    C("POST /api/generate HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n", OK),
    C("HEAD /x HTTP/1.1\r\nHost: a\r\n\r\n", OK),
    C("OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n", OK),
    C("GET http://example.com:8080/p?q HTTP/1.1\r\nHost: example.com:8080\r\n\r\n", OK),
    C("GET HTTPS://example.com HTTP/1.1\r\nHost: example.com\r\n\r\n", OK),
    C("GET / HTTP/1.0\r\n\r\n", OK),
    C("\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", OK),
    C("GET / HTTP/1.1\r\nHost: a\r\nX-Empty:\r\nX-Ows: \t v \t \r\n\r\n", OK),
    C("GET / HTTP/1.1\r\nHost: a\r\nX-Obs: caf\xc3\xa9\x80\xff\r\n\r\n", OK),
    C("GET / HTTP/1.1\r\nHost: a\r\nX-Tab: a\tb\r\n\r\n", OK),
    C("GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n", OK),
    C("GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 005 ,5\r\n\r\n", OK),
    C("GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 9223372036854775807\r\n\r\n", OK),
    C("GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n", OK),
    C("GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: CHUNKED \r\n\r\n", OK),
    C("GET / HTTP/1.1\r\nHost: a\r\nConnection: , Keep-Alive,,Upgrade\r\n\r\n", OK),
    C("GET / HTTP/1.1\r\nHost:\r\n\r\n", OK),
    C("GET / HTTP/1.1\r\nHost: [::1]:8787\r\n\r\n", OK),
    C("GET /a%20b/~c!$&'()*+,;=:@[]{}|^`\"<>\\ HTTP/1.1\r\nHost: a\r\n\r\n", OK),
    C("M-SEARCH.x!#$%&'*+^_`|~ / HTTP/1.1\r\nHost: a\r\n\r\n", OK),

    /* request line */
    C("GET  / HTTP/1.1\r\nHost: a\r\n\r\n", AG_EPROTO),
    C("GET /  HTTP/1.1\r\nHost: a\r\n\r\n", AG_EPROTO),
    C("GET\t/ HTTP/1.1\r\nHost: a\r\n\r\n", AG_EPROTO),
    C(" GET / HTTP/1.1\r\nHost: a\r\n\r\n", AG_EPROTO),
    C("GET / HTTP/1.1 \r\nHost: a\r\n\r\n", AG_EPROTO),
    C("GET / http/1.1\r\nHost: a\r\n\r\n", AG_EPROTO),
    C("GET / HTTP/11\r\nHost: a\r\n\r\n", AG_EPROTO),
    C("GET / HTTP/1.10\r\nHost: a\r\n\r\n", AG_EPROTO),
    C("GET / HTTP/1.1x\r\nHost: a\r\n\r\n", AG_EPROTO),
    C("GET / HTTP/2.0\r\nHost: a\r\n\r\n", AG_HTTP_EVERSION),
    C("GET / HTTP/1.2\r\nHost: a\r\n\r\n", AG_HTTP_EVERSION),
    C("GET / HTTP/0.9\r\n\r\n", AG_HTTP_EVERSION),
    C("GET /\r\n\r\n", AG_EPROTO),
    C("GET\r\n\r\n", AG_EPROTO),
    C("G(T / HTTP/1.1\r\nHost: a\r\n\r\n", AG_EPROTO),
    C("GET/ / HTTP/1.1\r\nHost: a\r\n\r\n", AG_EPROTO),
    C("GET /a\x01 HTTP/1.1\r\nHost: a\r\n\r\n", AG_EPROTO),
    C("GET /a\x7f HTTP/1.1\r\nHost: a\r\n\r\n", AG_EPROTO),
    C("GET /caf\xc3\xa9 HTTP/1.1\r\nHost: a\r\n\r\n", AG_EPROTO),
    C("GET /a#frag HTTP/1.1\r\nHost: a\r\n\r\n", AG_EPROTO),
    C("GET abc HTTP/1.1\r\nHost: a\r\n\r\n", AG_EPROTO),
    C("GET * HTTP/1.1\r\nHost: a\r\n\r\n", AG_EPROTO),
    C("OPTIONS *x HTTP/1.1\r\nHost: a\r\n\r\n", AG_EPROTO),
    C("CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n", AG_EPROTO),
    C("GET http:///x HTTP/1.1\r\nHost: a\r\n\r\n", AG_EPROTO),
    C("GET http://user@evil/x HTTP/1.1\r\nHost: a\r\n\r\n", AG_EPROTO),
    C("GET ftp://a/x HTTP/1.1\r\nHost: a\r\n\r\n", AG_EPROTO),

    /* line endings */
    C("GET / HTTP/1.1\nHost: a\n\n", AG_EPROTO),
    C("GET / HTTP/1.1\r\nHost: a\n\r\n", AG_EPROTO),
    C("GET / HTTP/1.1\r\nHost: a\r\n\n", AG_EPROTO),
    C("GET / HTTP/1.1\rHost: a\r\n\r\n", AG_EPROTO),
    C("GET / HTTP/1.1\r\nHost: a\rX: b\r\n\r\n", AG_EPROTO),
    C("GET / HTTP/1.1\r\nHost: a\r\n\r\r", AG_EPROTO),
    C("\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", AG_EPROTO),
    C("\r\rGET / HTTP/1.1\r\nHost: a\r\n\r\n", AG_EPROTO),

    /* header syntax */
    C("GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n", AG_EPROTO),
    C("GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n\tb\r\n\r\n", AG_EPROTO),
    C("GET / HTTP/1.1\r\n Host: a\r\n\r\n", AG_EPROTO),
    C("GET / HTTP/1.1\r\nHost : a\r\n\r\n", AG_EPROTO),
    C("GET / HTTP/1.1\r\nHost\t: a\r\n\r\n", AG_EPROTO),
    C("GET / HTTP/1.1\r\nHost: a\r\n: x\r\n\r\n", AG_EPROTO),
    C("GET / HTTP/1.1\r\nHost: a\r\nX(y): x\r\n\r\n", AG_EPROTO),
    C("GET / HTTP/1.1\r\nHost: a\r\nNoColon\r\n\r\n", AG_EPROTO),
    C("GET / HTTP/1.1\r\nHost: a\r\nX: a\0b\r\n\r\n", AG_EPROTO),
    C("GET / HTTP/1.1\r\nHost: a\r\nX: a\x01\r\n\r\n", AG_EPROTO),
    C("GET / HTTP/1.1\r\nHost: a\r\nX: a\x7f\r\n\r\n", AG_EPROTO),
    C("GET / HTTP/1.1\r\nHost: a\r\nX: a\x1b[0m\r\n\r\n", AG_EPROTO),

    /* Host */
    C("GET / HTTP/1.1\r\n\r\n", AG_EPROTO),
    C("GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n", AG_EPROTO),
    C("GET / HTTP/1.1\r\nHost: a b\r\n\r\n", AG_EPROTO),
    C("GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", AG_EPROTO),
    C("GET / HTTP/1.1\r\nHost: user@a\r\n\r\n", AG_EPROTO),

    /* Content-Length */
    C("GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n", AG_EPROTO),
    C("GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 6\r\n\r\n", AG_EPROTO),
    C("GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 5,\r\n\r\n", AG_EPROTO),
    C("GET / HTTP/1.1\r\nHost: a\r\nContent-Length: ,5\r\n\r\n", AG_EPROTO),
    C("GET / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\n", AG_EPROTO),
    C("GET / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n", AG_EPROTO),
    C("GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 5 5\r\n\r\n", AG_EPROTO),
    C("GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x5\r\n\r\n", AG_EPROTO),
    C("GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 5.0\r\n\r\n", AG_EPROTO),
    C("GET / HTTP/1.1\r\nHost: a\r\nContent-Length:\r\n\r\n", AG_EPROTO),
    C("GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 9223372036854775808\r\n\r\n", AG_EPROTO),
    C("GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999999\r\n\r\n", AG_EPROTO),

    /* Transfer-Encoding */
    C("GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
      AG_EPROTO),
    C("GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
      AG_EPROTO),
    C("GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", AG_EPROTO),
    C("GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", AG_EPROTO),
    C("GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity\r\n\r\n", AG_EPROTO),
    C("GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n", AG_EPROTO),
    C("GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: "
      "chunked\r\n\r\n",
      AG_EPROTO),
    C("GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: "
      "gzip\r\n\r\n",
      AG_EPROTO),
    C("GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked,\r\n\r\n", AG_EPROTO),
    C("GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: ,chunked\r\n\r\n", AG_EPROTO),
    C("GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked;q=1\r\n\r\n", AG_EPROTO),
    C("GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: \"chunked\"\r\n\r\n", AG_EPROTO),
    C("GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n", AG_EPROTO),
    C("GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\r\n\r\n", AG_EPROTO),
    C("GET / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", AG_EPROTO),
    C("GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", AG_HTTP_ENOTIMPL),
    C("GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: "
      "chunked\r\n\r\n",
      AG_HTTP_ENOTIMPL),

    /* Connection */
    C("GET / HTTP/1.1\r\nHost: a\r\nConnection: close;x\r\n\r\n", AG_EPROTO),
};

TEST(head_table)
{
    ag_http_header_t hdrs[MAXH];
    ag_http_request_head_t head;
    for (size_t i = 0; i < AG_ARRAY_LEN(head_cases); i++) {
        const head_case_t *c = &head_cases[i];
        int rc = parse_exact(c->req, c->len, hdrs, MAXH, &head);
        int want = c->expect == OK ? (int)c->len : c->expect;
        ASSERT_MSG_(rc == want, "case %zu \"%.*s\": rc %d, want %d", i, (int)c->len, c->req, rc,
                    want);
    }
}

TEST(head_incremental_equivalence)
{
    for (size_t i = 0; i < AG_ARRAY_LEN(head_cases); i++) {
        const head_case_t *c = &head_cases[i];
        long bad = check_prefixes(c->req, c->len);
        ASSERT_MSG_(bad < 0, "case %zu: prefix of %ld bytes breaks equivalence", i, bad);
        ASSERT_MSG_(check_next_hint(c->req, c->len), "case %zu: last_len variant differs", i);
    }
}

/* Byte-by-byte results are field-for-field those of the whole buffer. */
TEST(head_incremental_same_fields)
{
    static const char req[] = "\r\nPOST http://h:1/p/q?a=b HTTP/1.1\r\nHost: h:1\r\n"
                              "Content-Length: 12\r\nConnection: close\r\nX-A:  v  \r\n\r\nBODY";
    size_t n = sizeof(req) - 1;
    ag_http_header_t h1[MAXH], h2[MAXH];
    ag_http_request_head_t a, b;
    int full = ag_http_parse_request_head(req, n, h1, MAXH, &a);
    ASSERT_EQ(full, (int)(n - 4));
    int rc = AG_EAGAIN;
    size_t k = 0, last = 0;
    while (rc == AG_EAGAIN && k < n) {
        k++;
        rc = ag_http_parse_request_head_next(req, k, last, h2, MAXH, &b);
        last = k;
    }
    ASSERT_EQ(rc, full);
    ASSERT_EQ(k, (size_t)full);
    ASSERT(ag_str_eq(a.method, b.method) && a.method.ptr == b.method.ptr);
    ASSERT(a.path.ptr == b.path.ptr && a.path.len == b.path.len);
    ASSERT(a.query.ptr == b.query.ptr && a.query.len == b.query.len);
    ASSERT(a.authority.ptr == b.authority.ptr && a.authority.len == b.authority.len);
    ASSERT_EQ(a.num_headers, b.num_headers);
    for (size_t i = 0; i < a.num_headers; i++) {
        ASSERT(h1[i].name.ptr == h2[i].name.ptr && h1[i].name.len == h2[i].name.len);
        ASSERT(h1[i].value.ptr == h2[i].value.ptr && h1[i].value.len == h2[i].value.len);
    }
    ASSERT_EQ(a.content_length, b.content_length);
    ASSERT_EQ(a.keep_alive, b.keep_alive);
}

static bool inside(ag_str_t s, const char *buf, size_t len)
{
    if (s.len == 0 && s.ptr == NULL)
        return true;
    return s.ptr >= buf && s.ptr <= buf + len && s.len <= (size_t)(buf + len - s.ptr);
}

TEST(head_fields)
{
    static const char req[] = "POST /api/generate?x=1&y HTTP/1.1\r\n"
                              "Host: localhost:8787\r\n"
                              "Content-Type: application/json\r\n"
                              "Content-Length: 17\r\n"
                              "X-Trim: \t spaced  out \t\r\n"
                              "\r\n"
                              "{\"prompt\":\"hi\"}";
    ag_http_header_t hdrs[MAXH];
    ag_http_request_head_t h;
    int rc = ag_http_parse_request_head(req, sizeof(req) - 1, hdrs, MAXH, &h);
    ASSERT(rc > 0);
    ASSERT_STREQ(req + rc, "{\"prompt\":\"hi\"}");
    ASSERT_MEMEQ(h.method.ptr, h.method.len, "POST");
    ASSERT_MEMEQ(h.target.ptr, h.target.len, "/api/generate?x=1&y");
    ASSERT_MEMEQ(h.path.ptr, h.path.len, "/api/generate");
    ASSERT_MEMEQ(h.query.ptr, h.query.len, "x=1&y");
    ASSERT_MEMEQ(h.host.ptr, h.host.len, "localhost:8787");
    ASSERT_EQ(h.authority.len, 0);
    ASSERT_EQ(h.minor_version, 1);
    ASSERT_EQ(h.num_headers, 4);
    ASSERT(h.headers == hdrs);
    ASSERT_MEMEQ(hdrs[1].name.ptr, hdrs[1].name.len, "Content-Type");
    ASSERT_MEMEQ(hdrs[1].value.ptr, hdrs[1].value.len, "application/json");
    ASSERT_MEMEQ(hdrs[3].value.ptr, hdrs[3].value.len, "spaced  out");
    ASSERT_EQ(h.content_length, 17);
    ASSERT(!h.chunked);
    ASSERT(h.keep_alive);
    ASSERT(!h.expect_continue);
    /* zero-copy: every view lies in the input */
    ag_str_t views[] = {h.method, h.target, h.path, h.query, h.authority, h.host};
    for (size_t i = 0; i < AG_ARRAY_LEN(views); i++)
        ASSERT(inside(views[i], req, (size_t)rc));
    for (size_t i = 0; i < h.num_headers; i++)
        ASSERT(inside(hdrs[i].name, req, (size_t)rc) && inside(hdrs[i].value, req, (size_t)rc));
}

TEST(head_query_forms)
{
    ag_http_header_t hdrs[MAXH];
    ag_http_request_head_t h;
    static const char a[] = "GET /a? HTTP/1.1\r\nHost: x\r\n\r\n";
    ASSERT(ag_http_parse_request_head(a, sizeof(a) - 1, hdrs, MAXH, &h) > 0);
    ASSERT_MEMEQ(h.path.ptr, h.path.len, "/a");
    ASSERT_EQ(h.query.len, 0);
    ASSERT(h.query.ptr == h.path.ptr + 3);
    static const char b[] = "GET /a?b?c=/d HTTP/1.1\r\nHost: x\r\n\r\n";
    ASSERT(ag_http_parse_request_head(b, sizeof(b) - 1, hdrs, MAXH, &h) > 0);
    ASSERT_MEMEQ(h.path.ptr, h.path.len, "/a");
    ASSERT_MEMEQ(h.query.ptr, h.query.len, "b?c=/d");
    static const char c[] = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    ASSERT(ag_http_parse_request_head(c, sizeof(c) - 1, hdrs, MAXH, &h) > 0);
    ASSERT_MEMEQ(h.path.ptr, h.path.len, "/");
    ASSERT_EQ(h.query.len, 0);
}

TEST(head_absolute_form)
{
    ag_http_header_t hdrs[MAXH];
    ag_http_request_head_t h;
    static const char a[] = "GET http://example.com:8080/v1/x?q=1 HTTP/1.1\r\nHost: y\r\n\r\n";
    ASSERT(ag_http_parse_request_head(a, sizeof(a) - 1, hdrs, MAXH, &h) > 0);
    ASSERT_MEMEQ(h.target.ptr, h.target.len, "http://example.com:8080/v1/x?q=1");
    ASSERT_MEMEQ(h.authority.ptr, h.authority.len, "example.com:8080");
    ASSERT_MEMEQ(h.path.ptr, h.path.len, "/v1/x");
    ASSERT_MEMEQ(h.query.ptr, h.query.len, "q=1");
    ASSERT_MEMEQ(h.host.ptr, h.host.len, "y");
    static const char b[] = "OPTIONS https://[::1]:9?z HTTP/1.1\r\nHost: y\r\n\r\n";
    ASSERT(ag_http_parse_request_head(b, sizeof(b) - 1, hdrs, MAXH, &h) > 0);
    ASSERT_MEMEQ(h.authority.ptr, h.authority.len, "[::1]:9");
    ASSERT_EQ(h.path.len, 0); /* no path: the caller treats it as "/" */
    ASSERT_MEMEQ(h.query.ptr, h.query.len, "z");
}

TEST(head_options_star_and_head)
{
    ag_http_header_t hdrs[MAXH];
    ag_http_request_head_t h;
    static const char a[] = "OPTIONS * HTTP/1.1\r\nHost: y\r\n\r\n";
    ASSERT(ag_http_parse_request_head(a, sizeof(a) - 1, hdrs, MAXH, &h) > 0);
    ASSERT_MEMEQ(h.method.ptr, h.method.len, "OPTIONS");
    ASSERT_MEMEQ(h.path.ptr, h.path.len, "*");
    ASSERT_EQ(h.query.len, 0);
    /* methods are case-sensitive: "options" is another method, with no '*' */
    static const char b[] = "options * HTTP/1.1\r\nHost: y\r\n\r\n";
    ASSERT_EQ(ag_http_parse_request_head(b, sizeof(b) - 1, hdrs, MAXH, &h), AG_EPROTO);
    static const char c[] = "HEAD /x HTTP/1.1\r\nHost: y\r\n\r\n";
    ASSERT(ag_http_parse_request_head(c, sizeof(c) - 1, hdrs, MAXH, &h) > 0);
    ASSERT_MEMEQ(h.method.ptr, h.method.len, "HEAD");
}

typedef struct {
    const char *req;
    int minor;
    bool keep_alive;
} ka_case_t;

TEST(head_keep_alive_rules)
{
    static const ka_case_t cases[] = {
        {"GET / HTTP/1.1\r\nHost: a\r\n\r\n", 1, true},
        {"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", 1, false},
        {"GET / HTTP/1.1\r\nHost: a\r\nConnection: CLOSE\r\n\r\n", 1, false},
        {"GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, Close\r\n\r\n", 1, false},
        {"GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive\r\nConnection: close\r\n\r\n", 1,
         false},
        {"GET / HTTP/1.1\r\nHost: a\r\nConnection: closed\r\n\r\n", 1, true},
        {"GET / HTTP/1.0\r\n\r\n", 0, false},
        {"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", 0, true},
        {"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", 0, true},
        {"GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n", 0, false},
        {"GET / HTTP/1.0\r\nX-Connection: keep-alive\r\n\r\n", 0, false},
    };
    ag_http_header_t hdrs[MAXH];
    ag_http_request_head_t h;
    for (size_t i = 0; i < AG_ARRAY_LEN(cases); i++) {
        size_t n = strlen(cases[i].req);
        int rc = ag_http_parse_request_head(cases[i].req, n, hdrs, MAXH, &h);
        ASSERT_MSG_(rc == (int)n, "case %zu: rc %d", i, rc);
        ASSERT_MSG_(h.minor_version == cases[i].minor, "case %zu: minor %d", i, h.minor_version);
        ASSERT_MSG_(h.keep_alive == cases[i].keep_alive, "case %zu: keep_alive %d", i,
                    h.keep_alive);
    }
}

TEST(head_framing_fields)
{
    ag_http_header_t hdrs[MAXH];
    ag_http_request_head_t h;
    static const char a[] = "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n";
    ASSERT(ag_http_parse_request_head(a, sizeof(a) - 1, hdrs, MAXH, &h) > 0);
    ASSERT(h.chunked);
    ASSERT_EQ(h.content_length, -1);
    static const char b[] = "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n";
    ASSERT(ag_http_parse_request_head(b, sizeof(b) - 1, hdrs, MAXH, &h) > 0);
    ASSERT(!h.chunked);
    ASSERT_EQ(h.content_length, 0);
    static const char c[] = "POST / HTTP/1.1\r\nHost: a\r\n\r\n";
    ASSERT(ag_http_parse_request_head(c, sizeof(c) - 1, hdrs, MAXH, &h) > 0);
    ASSERT_EQ(h.content_length, -1);
    static const char d[] = "POST / HTTP/1.1\r\nHost: a\r\ncontent-length: 007, 7\r\n\r\n";
    ASSERT(ag_http_parse_request_head(d, sizeof(d) - 1, hdrs, MAXH, &h) > 0);
    ASSERT_EQ(h.content_length, 7);
    static const char e[] =
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 9223372036854775807\r\n\r\n";
    ASSERT(ag_http_parse_request_head(e, sizeof(e) - 1, hdrs, MAXH, &h) > 0);
    ASSERT_EQ(h.content_length, INT64_MAX);
}

TEST(head_expect)
{
    ag_http_header_t hdrs[MAXH];
    ag_http_request_head_t h;
    static const char a[] = "POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-Continue\r\n\r\n";
    ASSERT(ag_http_parse_request_head(a, sizeof(a) - 1, hdrs, MAXH, &h) > 0);
    ASSERT(h.expect_continue);
    static const char b[] = "POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue-x\r\n\r\n";
    ASSERT(ag_http_parse_request_head(b, sizeof(b) - 1, hdrs, MAXH, &h) > 0);
    ASSERT(!h.expect_continue);
    static const char c[] = "POST / HTTP/1.0\r\nExpect: 100-continue\r\n\r\n";
    ASSERT(ag_http_parse_request_head(c, sizeof(c) - 1, hdrs, MAXH, &h) > 0);
    ASSERT(!h.expect_continue); /* RFC 9110: a 1.0 client never waits for 100 */
    static const char d[] = "POST / HTTP/1.1\r\nHost: a\r\n\r\n";
    ASSERT(ag_http_parse_request_head(d, sizeof(d) - 1, hdrs, MAXH, &h) > 0);
    ASSERT(!h.expect_continue);
}

TEST(head_find_header_case_insensitive)
{
    static const char req[] = "GET / HTTP/1.1\r\nHost: a\r\nx-API-key: k1\r\nAuthorization: "
                              "Bearer t\r\nX-Api-Key: k2\r\n\r\n";
    ag_http_header_t hdrs[MAXH];
    ag_http_request_head_t h;
    ASSERT(ag_http_parse_request_head(req, sizeof(req) - 1, hdrs, MAXH, &h) > 0);
    const ag_http_header_t *k = ag_http_find_header(&h, "X-Api-Key");
    ASSERT(k != NULL);
    ASSERT_MEMEQ(k->value.ptr, k->value.len, "k1"); /* the first one */
    k = ag_http_find_header(&h, "AUTHORIZATION");
    ASSERT(k != NULL);
    ASSERT_MEMEQ(k->value.ptr, k->value.len, "Bearer t");
    ASSERT(ag_http_find_header(&h, "x-api-ke") == NULL);
    ASSERT(ag_http_find_header(&h, "x-api-keys") == NULL);
    ASSERT(ag_http_find_header(&h, "") == NULL);
}

TEST(head_max_headers)
{
    static const char req[] = "GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 2\r\n\r\n";
    size_t n = sizeof(req) - 1;
    ag_http_header_t hdrs[3];
    ag_http_request_head_t h;
    ASSERT_EQ(ag_http_parse_request_head(req, n, hdrs, 3, &h), (int)n);
    ASSERT_EQ(h.num_headers, 3);
    ASSERT_EQ(ag_http_parse_request_head(req, n, hdrs, 2, &h), AG_EHDRTOOBIG);
    ASSERT_EQ(ag_http_parse_request_head(req, n, NULL, 0, &h), AG_EHDRTOOBIG);
    ASSERT_EQ(ag_err_http_status(AG_EHDRTOOBIG), 431);
    /* the verdict comes as the extra header begins, not after it */
    ASSERT_EQ(ag_http_parse_request_head(req, 32, hdrs, 2, &h), AG_EHDRTOOBIG);
    ASSERT_EQ(ag_http_parse_request_head(req, 31, hdrs, 2, &h), AG_EAGAIN);
    static const char none[] = "GET / HTTP/1.0\r\n\r\n";
    ASSERT_EQ(ag_http_parse_request_head(none, sizeof(none) - 1, NULL, 0, &h),
              (int)sizeof(none) - 1);
    ASSERT_EQ(h.num_headers, 0);
}

TEST(head_pipelined)
{
    static const char reqs[] = "GET /one HTTP/1.1\r\nHost: a\r\n\r\n"
                               "POST /two HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc"
                               "GET /three HTTP/1.1\r\nHost: a\r\n\r\n"
                               "GET /four HTT";
    ag_http_header_t hdrs[MAXH];
    ag_http_request_head_t h;
    const char *p = reqs, *end = reqs + sizeof(reqs) - 1;
    static const char *const paths[] = {"/one", "/two", "/three"};
    for (size_t i = 0; i < 3; i++) {
        int rc = ag_http_parse_request_head(p, (size_t)(end - p), hdrs, MAXH, &h);
        ASSERT_MSG_(rc > 0, "request %zu: rc %d", i, rc);
        ASSERT_MEMEQ(h.path.ptr, h.path.len, paths[i]);
        p += rc + (h.content_length > 0 ? h.content_length : 0);
    }
    ASSERT_EQ(ag_http_parse_request_head(p, (size_t)(end - p), hdrs, MAXH, &h), AG_EAGAIN);
}

/* Each byte value in each position, against the rule the docs state. */
TEST(head_byte_classes)
{
    ag_http_header_t hdrs[MAXH];
    ag_http_request_head_t h;
    char buf[128];
    for (int c = 0; c < 256; c++) {
        bool alnum = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
        bool tchar = alnum || (c && strchr("!#$%&'*+-.^_`|~", c));
        bool vchar = c > 0x20 && c < 0x7f;
        int n, rc;

        /* in a header name */
        n = snprintf(buf, sizeof(buf), "GET / HTTP/1.1\r\nHost: a\r\nX%cY: v\r\n\r\n", 'Z');
        buf[26] = (char)c;
        rc = ag_http_parse_request_head(buf, (size_t)n, hdrs, MAXH, &h);
        /* ':' splits "X:Y: v" into name X and value "Y: v", which is fine */
        ASSERT_MSG_((rc == n) == (tchar || c == ':'), "name byte 0x%02x: rc %d", c, rc);

        /* in a header value */
        n = snprintf(buf, sizeof(buf), "GET / HTTP/1.1\r\nHost: a\r\nX: a%cb\r\n\r\n", 'Z');
        buf[29] = (char)c;
        rc = ag_http_parse_request_head(buf, (size_t)n, hdrs, MAXH, &h);
        bool field = c == '\t' || c == ' ' || vchar || c >= 0x80;
        ASSERT_MSG_((rc == n) == field, "value byte 0x%02x: rc %d", c, rc);

        /* in the request-target */
        n = snprintf(buf, sizeof(buf), "GET /a%cb HTTP/1.1\r\nHost: a\r\n\r\n", 'Z');
        buf[6] = (char)c;
        rc = ag_http_parse_request_head(buf, (size_t)n, hdrs, MAXH, &h);
        ASSERT_MSG_((rc == n) == (vchar && c != '#'), "target byte 0x%02x: rc %d", c, rc);

        /* in the method */
        n = snprintf(buf, sizeof(buf), "G%cT / HTTP/1.1\r\nHost: a\r\n\r\n", 'Z');
        buf[1] = (char)c;
        rc = ag_http_parse_request_head(buf, (size_t)n, hdrs, MAXH, &h);
        ASSERT_MSG_((rc == n) == tchar, "method byte 0x%02x: rc %d", c, rc);
    }
}

TEST(head_next_hint_skips_reparse)
{
    /* An invalid request line is still found by the first call... */
    ag_http_header_t hdrs[MAXH];
    ag_http_request_head_t h;
    static const char bad[] = "GET /\x01 HTTP/1.1\r\n";
    ASSERT_EQ(ag_http_parse_request_head_next(bad, sizeof(bad) - 1, 0, hdrs, MAXH, &h), AG_EPROTO);
    /* ...but later calls look only for the end of the head. */
    ASSERT_EQ(ag_http_parse_request_head_next(bad, sizeof(bad) - 1, 3, hdrs, MAXH, &h), AG_EAGAIN);
    /* no new bytes since last time: nothing can have completed */
    ASSERT_EQ(ag_http_parse_request_head_next(bad, 10, 10, hdrs, MAXH, &h), AG_EAGAIN);
    /* CRLFCRLF straddling last_len is found. */
    static const char ok[] = "GET / HTTP/1.1\r\nHost: a\r\n\r\n";
    size_t n = sizeof(ok) - 1;
    for (size_t last = 1; last < n; last++)
        ASSERT_MSG_(ag_http_parse_request_head_next(ok, n, last, hdrs, MAXH, &h) == (int)n,
                    "last_len %zu", last);
}

TEST(head_error_codes)
{
    ASSERT_EQ(ag_err_http_status(AG_EPROTO), 400);
    ASSERT_EQ(ag_err_http_status(AG_HTTP_ENOTIMPL), 501);
    ASSERT_EQ(ag_err_http_status(AG_HTTP_EVERSION), 505);
    ASSERT_STREQ(ag_strerror(AG_HTTP_EVERSION), "HTTP version not supported");
    ASSERT_STREQ(ag_strerror(AG_EPROTO), "malformed input");
    /* declared in errors.def, where a value used twice does not compile */
    ASSERT_STREQ(ag_strerror(AG_HTTP_ENOTIMPL), "unsupported transfer coding");
}

/* ---- chunked ---- */

typedef struct {
    int rc;
    char body[1024];
    size_t body_len;
    char rest[1024]; /* bytes after the body: the leftover plus unfed pieces */
    size_t rest_len;
} dec_result_t;

/* Feeds in[0..n) in pieces ending at bounds[0] < bounds[1] < ... = n, each in
 * an exactly sized heap block, and collects what the server would see. */
static void decode_pieces(const char *in, size_t n, const size_t *bounds, size_t nb,
                          size_t max_line, dec_result_t *r)
{
    ag_chunked_decoder_t d;
    ag_chunked_init(&d);
    if (max_line)
        d.max_chunk_line = max_line;
    memset(r, 0, sizeof(*r));
    r->rc = AG_EAGAIN;
    size_t from = 0;
    for (size_t i = 0; i < nb && r->rc == AG_EAGAIN; i++) {
        size_t plen = bounds[i] - from;
        char *piece = malloc(plen ? plen : 1);
        memcpy(piece, in + from, plen);
        size_t len = plen;
        r->rc = ag_chunked_decode(&d, piece, &len);
        if (r->rc != AG_EPROTO) {
            AG_ASSERT(len <= plen && r->body_len + len <= sizeof(r->body));
            memcpy(r->body + r->body_len, piece, len);
            r->body_len += len;
        }
        if (r->rc >= 0) {
            AG_ASSERT(len + (size_t)r->rc <= plen);
            memcpy(r->rest, piece + len, (size_t)r->rc);
            r->rest_len = (size_t)r->rc;
            memcpy(r->rest + r->rest_len, in + bounds[i], n - bounds[i]);
            r->rest_len += n - bounds[i];
        }
        free(piece);
        from = bounds[i];
    }
}

static void decode_whole(const char *in, size_t n, dec_result_t *r)
{
    size_t b = n;
    decode_pieces(in, n, &b, 1, 0, r);
}

static bool same_result(const dec_result_t *a, const dec_result_t *b)
{
    if (b->rc == AG_EPROTO) /* what was decoded before the error may differ */
        return a->rc == AG_EPROTO;
    return a->rc == (b->rc >= 0 ? a->rc : b->rc) && (a->rc >= 0) == (b->rc >= 0) &&
           a->body_len == b->body_len && memcmp(a->body, b->body, a->body_len) == 0 &&
           a->rest_len == b->rest_len && memcmp(a->rest, b->rest, a->rest_len) == 0;
}

/* Whole, two pieces split at every position, three pieces at every pair of
 * positions, and byte by byte: all give the same body and leftover. The
 * rc value of a completed decode legitimately differs (leftover counted in
 * the last piece only), so completion is compared as "rc >= 0". */
static long check_splits(const char *in, size_t n, dec_result_t *whole)
{
    dec_result_t r;
    size_t bounds[1024];
    decode_whole(in, n, whole);
    for (size_t i = 0; i <= n; i++) {
        size_t b2[2] = {i, n};
        decode_pieces(in, n, b2, 2, 0, &r);
        if (!same_result(&r, whole))
            return (long)i;
    }
    for (size_t i = 0; i <= n && n <= 128; i++) {
        for (size_t j = i; j <= n; j++) {
            size_t b3[3] = {i, j, n};
            decode_pieces(in, n, b3, 3, 0, &r);
            if (!same_result(&r, whole))
                return (long)(i * 1000 + j);
        }
    }
    AG_ASSERT(n <= AG_ARRAY_LEN(bounds));
    for (size_t i = 0; i < n; i++)
        bounds[i] = i + 1;
    decode_pieces(in, n, bounds, n, 0, &r);
    if (!same_result(&r, whole))
        return -2;
    return -1;
}

typedef struct {
    const char *in;
    size_t len;
    int expect;       /* AG_EAGAIN, AG_EPROTO, or 0: complete */
    const char *body; /* when complete: the decoded body */
    const char *rest; /* when complete: the bytes after it */
} chunk_case_t;

#define K(s, e, body, rest)                                                                        \
    {                                                                                              \
        s, sizeof(s) - 1, e, body, rest                                                            \
    }

static const chunk_case_t chunk_cases[] = {
    K("5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n", 0, "hello world", ""),
    K("0\r\n\r\n", 0, "", ""),
    K("A\r\n0123456789\r\na\r\nabcdefghij\r\n0\r\n\r\n", 0, "0123456789abcdefghij", ""),
    K("000000000000000000005\r\nhello\r\n0000\r\n\r\n", 0, "hello", ""),
    K("5\r\nhello\r\n0\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", 0, "hello",
      "GET / HTTP/1.1\r\nHost: a\r\n\r\n"),
    K("3;name=val;q=\"a b;c\"\r\nabc\r\n0;last\r\n\r\nX", 0, "abc", "X"),
    K("3 ;x\r\nabc\r\n0\t \t;y=\"\xc3\xa9\"\r\n\r\n", 0, "abc", ""),
    K("3\r\nabc\r\n0\r\nX-Trailer: 1\r\nY:\r\nZ: a\tb \r\n\r\nPOST", 0, "abc", "POST"),
    K("2\r\n\r\n\r\n0\r\n\r\n", 0, "\r\n", ""),
    K("5\r\nhello\r\n", AG_EAGAIN, NULL, NULL),
    K("5\r\nhello\r\n0\r\n", AG_EAGAIN, NULL, NULL),
    K("5\r\nhello\r\n0\r\nX: 1\r\n", AG_EAGAIN, NULL, NULL),
    K("ffffffffffffffff\r\nabc", AG_EAGAIN, NULL, NULL),

    /* bad sizes */
    K("g\r\nabc\r\n0\r\n\r\n", AG_EPROTO, NULL, NULL),
    K("\r\nabc\r\n0\r\n\r\n", AG_EPROTO, NULL, NULL),
    K("-1\r\nabc\r\n0\r\n\r\n", AG_EPROTO, NULL, NULL),
    K("+1\r\na\r\n0\r\n\r\n", AG_EPROTO, NULL, NULL),
    K("0x5\r\nhello\r\n0\r\n\r\n", AG_EPROTO, NULL, NULL),
    K(" 5\r\nhello\r\n0\r\n\r\n", AG_EPROTO, NULL, NULL),
    K("5 \r\nhello\r\n0\r\n\r\n", AG_EPROTO, NULL, NULL),
    K("5 x\r\nhello\r\n0\r\n\r\n", AG_EPROTO, NULL, NULL),
    K("10000000000000000\r\n", AG_EPROTO, NULL, NULL),
    K("fffffffffffffffff\r\n", AG_EPROTO, NULL, NULL),
    K("5\r\nhello\r\n0g\r\n\r\n", AG_EPROTO, NULL, NULL),

    /* line endings */
    K("5\nhello\r\n0\r\n\r\n", AG_EPROTO, NULL, NULL),
    K("5\rhello\r\n0\r\n\r\n", AG_EPROTO, NULL, NULL),
    K("5\r\nhello\n0\r\n\r\n", AG_EPROTO, NULL, NULL),
    K("5\r\nhelloX\r\n0\r\n\r\n", AG_EPROTO, NULL, NULL),
    K("5\r\nhello\rX0\r\n\r\n", AG_EPROTO, NULL, NULL),
    K("5\r\nhello world\r\n0\r\n\r\n", AG_EPROTO, NULL, NULL),
    K("5;a\nhello\r\n0\r\n\r\n", AG_EPROTO, NULL, NULL),
    K("5;a\rb\r\nhello\r\n0\r\n\r\n", AG_EPROTO, NULL, NULL),
    K("5;a\x01\r\nhello\r\n0\r\n\r\n", AG_EPROTO, NULL, NULL),
    K("5;a\0\r\nhello\r\n0\r\n\r\n", AG_EPROTO, NULL, NULL),
    K("0\r\n\n", AG_EPROTO, NULL, NULL),
    K("0\r\n\rX", AG_EPROTO, NULL, NULL),

    /* trailers */
    K("0\r\n X: 1\r\n\r\n", AG_EPROTO, NULL, NULL),
    K("0\r\nX : 1\r\n\r\n", AG_EPROTO, NULL, NULL),
    K("0\r\nNoColon\r\n\r\n", AG_EPROTO, NULL, NULL),
    K("0\r\n: v\r\n\r\n", AG_EPROTO, NULL, NULL),
    K("0\r\nX: a\nY: b\r\n\r\n", AG_EPROTO, NULL, NULL),
    K("0\r\nX: a\0\r\n\r\n", AG_EPROTO, NULL, NULL),
    K("0\r\nX: a\r\n b\r\n\r\n", AG_EPROTO, NULL, NULL),
};

TEST(chunked_table)
{
    for (size_t i = 0; i < AG_ARRAY_LEN(chunk_cases); i++) {
        const chunk_case_t *c = &chunk_cases[i];
        dec_result_t r;
        decode_whole(c->in, c->len, &r);
        if (c->expect == 0) {
            ASSERT_MSG_(r.rc >= 0, "case %zu: rc %d", i, r.rc);
            ASSERT_MSG_(r.body_len == strlen(c->body) && memcmp(r.body, c->body, r.body_len) == 0,
                        "case %zu: body \"%.*s\"", i, (int)r.body_len, r.body);
            ASSERT_MSG_(r.rest_len == strlen(c->rest) && (size_t)r.rc == r.rest_len &&
                            memcmp(r.rest, c->rest, r.rest_len) == 0,
                        "case %zu: rest \"%.*s\"", i, (int)r.rest_len, r.rest);
        } else {
            ASSERT_MSG_(r.rc == c->expect, "case %zu: rc %d, want %d", i, r.rc, c->expect);
        }
    }
}

TEST(chunked_every_split)
{
    for (size_t i = 0; i < AG_ARRAY_LEN(chunk_cases); i++) {
        dec_result_t whole;
        long bad = check_splits(chunk_cases[i].in, chunk_cases[i].len, &whole);
        ASSERT_MSG_(bad == -1, "case %zu: split %ld differs", i, bad);
    }
}

/* The leftover lands right after the decoded data, in the caller's buffer. */
TEST(chunked_leftover_position)
{
    char buf[] = "4\r\nWiki\r\n5\r\npedia\r\n0\r\nT: x\r\n\r\nGET /next HTTP/1.1\r\n";
    size_t len = sizeof(buf) - 1;
    ag_chunked_decoder_t d;
    ag_chunked_init(&d);
    ASSERT(!ag_chunked_done(&d));
    int rc = ag_chunked_decode(&d, buf, &len);
    ASSERT_EQ(rc, (int)strlen("GET /next HTTP/1.1\r\n"));
    ASSERT_EQ(len, 9);
    ASSERT(memcmp(buf, "Wikipedia", 9) == 0);
    ASSERT(memcmp(buf + len, "GET /next HTTP/1.1\r\n", (size_t)rc) == 0);
    ASSERT(ag_chunked_done(&d));
    /* once done, more input is all leftover, left where it is */
    char more[] = "abc";
    size_t mlen = 3;
    ASSERT_EQ(ag_chunked_decode(&d, more, &mlen), 3);
    ASSERT_EQ(mlen, 0);
    ASSERT_MEMEQ(more, 3, "abc");
}

TEST(chunked_error_is_sticky)
{
    ag_chunked_decoder_t d;
    ag_chunked_init(&d);
    char a[] = "5\r\nhelloX";
    size_t len = sizeof(a) - 1;
    ASSERT_EQ(ag_chunked_decode(&d, a, &len), AG_EPROTO);
    ASSERT_EQ(len, 0);
    char b[] = "0\r\n\r\n";
    len = sizeof(b) - 1;
    ASSERT_EQ(ag_chunked_decode(&d, b, &len), AG_EPROTO);
}

TEST(chunked_in_data_flag)
{
    ag_chunked_decoder_t d;
    ag_chunked_init(&d);
    ASSERT(!ag_chunked_in_data(&d));
    char a[] = "5\r\nhe";
    size_t len = sizeof(a) - 1;
    ASSERT_EQ(ag_chunked_decode(&d, a, &len), AG_EAGAIN);
    ASSERT_EQ(len, 2);
    ASSERT(ag_chunked_in_data(&d));
    char b[] = "llo\r\n";
    len = sizeof(b) - 1;
    ASSERT_EQ(ag_chunked_decode(&d, b, &len), AG_EAGAIN);
    ASSERT_EQ(len, 3);
    ASSERT(!ag_chunked_in_data(&d));
    size_t zero = 0;
    ASSERT_EQ(ag_chunked_decode(&d, b, &zero), AG_EAGAIN);
    ASSERT_EQ(zero, 0);
}

TEST(chunked_line_limit)
{
    /* max_chunk_line counts size digits and extensions, not the CRLF */
    static const char ok[] = "5;ab\r\nhello\r\n0\r\n\r\n";
    static const char over[] = "5;abc\r\nhello\r\n0\r\n\r\n";
    static const char zeros[] = "000005\r\nhello\r\n0\r\n\r\n";
    size_t b1 = sizeof(ok) - 1, b2 = sizeof(over) - 1, b3 = sizeof(zeros) - 1;
    dec_result_t r;
    decode_pieces(ok, b1, &b1, 1, 4, &r);
    ASSERT_EQ(r.rc, 0);
    decode_pieces(over, b2, &b2, 1, 4, &r);
    ASSERT_EQ(r.rc, AG_EPROTO);
    decode_pieces(zeros, b3, &b3, 1, 4, &r);
    ASSERT_EQ(r.rc, AG_EPROTO);
    /* the default bound stops an endless extension */
    ag_chunked_decoder_t d;
    ag_chunked_init(&d);
    char buf[256];
    memset(buf, 'x', sizeof(buf));
    buf[0] = '1';
    buf[1] = ';';
    int rc = AG_EAGAIN;
    for (int i = 0; i < 64 && rc == AG_EAGAIN; i++) {
        size_t len = sizeof(buf);
        rc = ag_chunked_decode(&d, buf, &len);
        buf[0] = 'x';
        buf[1] = 'x';
    }
    ASSERT_EQ(rc, AG_EPROTO);
}

TEST(chunked_trailer_limit)
{
    ag_chunked_decoder_t d;
    ag_chunked_init(&d);
    d.max_trailer_bytes = 10;
    char ok[] = "0\r\nX: 123\r\n\r\n"; /* 8 + 2 = 10 trailer bytes */
    size_t len = sizeof(ok) - 1;
    ASSERT_EQ(ag_chunked_decode(&d, ok, &len), 0);
    ag_chunked_init(&d);
    d.max_trailer_bytes = 10;
    char over[] = "0\r\nX: 1234\r\n\r\n";
    len = sizeof(over) - 1;
    ASSERT_EQ(ag_chunked_decode(&d, over, &len), AG_EPROTO);
    /* endless trailers stop at the default bound */
    ag_chunked_init(&d);
    char first[] = "0\r\n";
    len = 3;
    ASSERT_EQ(ag_chunked_decode(&d, first, &len), AG_EAGAIN);
    int rc = AG_EAGAIN;
    for (int i = 0; i < 10000 && rc == AG_EAGAIN; i++) {
        char line[] = "X-Trailer: 0123456789\r\n";
        len = sizeof(line) - 1;
        rc = ag_chunked_decode(&d, line, &len);
    }
    ASSERT_EQ(rc, AG_EPROTO);
}

/* The server's whole path: head, chunked body, then the pipelined request
 * found at buf + decoded length. */
TEST(chunked_after_head_pipelined)
{
    char buf[] = "POST /api/generate HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
                 "7\r\n{\"a\":1}\r\n0\r\n\r\n"
                 "GET /health HTTP/1.1\r\nHost: a\r\n\r\n";
    size_t total = sizeof(buf) - 1;
    ag_http_header_t hdrs[MAXH];
    ag_http_request_head_t h;
    int rc = ag_http_parse_request_head(buf, total, hdrs, MAXH, &h);
    ASSERT(rc > 0);
    ASSERT(h.chunked);
    ag_chunked_decoder_t d;
    ag_chunked_init(&d);
    char *body = buf + rc;
    size_t len = total - (size_t)rc;
    int left = ag_chunked_decode(&d, body, &len);
    ASSERT(left > 0);
    ASSERT_MEMEQ(body, len, "{\"a\":1}");
    const char *next = body + len;
    int rc2 = ag_http_parse_request_head(next, (size_t)left, hdrs, MAXH, &h);
    ASSERT_EQ(rc2, left);
    ASSERT_MEMEQ(h.path.ptr, h.path.len, "/health");
}

/* clang-format off */
AG_TESTS(
    AG_TEST_ENTRY(head_table)
    AG_TEST_ENTRY(head_incremental_equivalence)
    AG_TEST_ENTRY(head_incremental_same_fields)
    AG_TEST_ENTRY(head_fields)
    AG_TEST_ENTRY(head_query_forms)
    AG_TEST_ENTRY(head_absolute_form)
    AG_TEST_ENTRY(head_options_star_and_head)
    AG_TEST_ENTRY(head_keep_alive_rules)
    AG_TEST_ENTRY(head_framing_fields)
    AG_TEST_ENTRY(head_expect)
    AG_TEST_ENTRY(head_find_header_case_insensitive)
    AG_TEST_ENTRY(head_max_headers)
    AG_TEST_ENTRY(head_pipelined)
    AG_TEST_ENTRY(head_byte_classes)
    AG_TEST_ENTRY(head_next_hint_skips_reparse)
    AG_TEST_ENTRY(head_error_codes)
    AG_TEST_ENTRY(chunked_table)
    AG_TEST_ENTRY(chunked_every_split)
    AG_TEST_ENTRY(chunked_leftover_position)
    AG_TEST_ENTRY(chunked_error_is_sticky)
    AG_TEST_ENTRY(chunked_in_data_flag)
    AG_TEST_ENTRY(chunked_line_limit)
    AG_TEST_ENTRY(chunked_trailer_limit)
    AG_TEST_ENTRY(chunked_after_head_pipelined)
)
/* clang-format on */
