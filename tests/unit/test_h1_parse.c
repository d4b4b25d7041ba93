/* SPDX-License-Identifier: MIT
 *
 * test_h1_parse.c: the native client's response parser (upstream/h1_parse.c):
 * a table of heads (accepted with their framing, or rejected), every prefix of
 * each, and body framing fed whole and byte by byte.
 */
#include "util/platform.h"

#include "harness.h"
#include "upstream/h1_parse.h"

enum { OK = 1 };

static const struct head_case {
    const char *in;
    int want;   /* OK, AG_EPROTO, AG_EHDRTOOBIG */
    int status; /* when OK */
    int64_t cl;
    bool chunked, keep_alive;
} heads[] = {
    {"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", OK, 200, 5, false, true},
    {"HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n", OK, 200, 0, false, true},
    {"HTTP/1.1 200 \r\n\r\n", OK, 200, -1, false, true},
    {"HTTP/1.1 404 Not  Found\r\nConnection: close\r\n\r\n", OK, 404, -1, false, false},
    {"HTTP/1.0 200 OK\r\n\r\n", OK, 200, -1, false, false},
    {"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 1\r\n\r\n", OK, 200, 1, false,
     true},
    {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", OK, 200, -1, true, true},
    {"HTTP/1.1 200 OK\r\nTransfer-Encoding: Chunked \r\n\r\n", OK, 200, -1, true, true},
    {"HTTP/1.1 200 OK\r\nContent-Length: 7, 7\r\n\r\n", OK, 200, 7, false, true},
    {"HTTP/1.1 100 Continue\r\n\r\n", OK, 100, -1, false, true},
    {"HTTP/1.1 529 \xcf\x80 obs-text\r\nx:\r\n\r\n", OK, 529, -1, false, true},
    /* rejected: status line */
    {"HTTP/1.1 20 OK\r\n\r\n", AG_EPROTO, 0, 0, false, false},
    {"HTTP/1.1 2000 OK\r\n\r\n", AG_EPROTO, 0, 0, false, false},
    {"HTTP/1.1 600 OK\r\n\r\n", AG_EPROTO, 0, 0, false, false},
    {"HTTP/1.1 099 OK\r\n\r\n", AG_EPROTO, 0, 0, false, false},
    {"HTTP/2.0 200 OK\r\n\r\n", AG_EPROTO, 0, 0, false, false},
    {"HTTP/1.2 200 OK\r\n\r\n", AG_EPROTO, 0, 0, false, false},
    {"http/1.1 200 OK\r\n\r\n", AG_EPROTO, 0, 0, false, false},
    {"HTTP/1.1  200 OK\r\n\r\n", AG_EPROTO, 0, 0, false, false},
    {"HTTP/1.1 200 OK\n\r\n", AG_EPROTO, 0, 0, false, false},
    {"HTTP/1.1 200 O\x01K\r\n\r\n", AG_EPROTO, 0, 0, false, false},
    {"ICY 200 OK\r\n\r\n", AG_EPROTO, 0, 0, false, false},
    {"\r\nHTTP/1.1 200 OK\r\n\r\n", AG_EPROTO, 0, 0, false, false},
    /* rejected: header lines */
    {"HTTP/1.1 200 OK\r\nA : b\r\n\r\n", AG_EPROTO, 0, 0, false, false},
    {"HTTP/1.1 200 OK\r\nA: b\r\n c\r\n\r\n", AG_EPROTO, 0, 0, false, false},
    {"HTTP/1.1 200 OK\r\nA: b\n\r\n", AG_EPROTO, 0, 0, false, false},
    {"HTTP/1.1 200 OK\r\n: b\r\n\r\n", AG_EPROTO, 0, 0, false, false},
    /* a CR inside a value is kept for the relay to drop the header (bare_cr_in_value) */
    {"HTTP/1.1 200 OK\r\nA: b\r\r\n\r\n", OK, 200, -1, false, true},
    /* rejected: framing */
    {"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n", AG_EPROTO, 0, 0, false,
     false},
    {"HTTP/1.1 200 OK\r\nContent-Length: 5, 6\r\n\r\n", AG_EPROTO, 0, 0, false, false},
    {"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", AG_EPROTO, 0, 0, false, false},
    {"HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\n", AG_EPROTO, 0, 0, false, false},
    {"HTTP/1.1 200 OK\r\nContent-Length: 0x5\r\n\r\n", AG_EPROTO, 0, 0, false, false},
    {"HTTP/1.1 200 OK\r\nContent-Length: \r\n\r\n", AG_EPROTO, 0, 0, false, false},
    {"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n", AG_EPROTO, 0, 0, false,
     false},
    {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n", AG_EPROTO, 0, 0,
     false, false},
    {"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", AG_EPROTO, 0, 0, false, false},
    {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, chunked\r\n\r\n", AG_EPROTO, 0, 0, false,
     false},
    {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
     AG_EPROTO, 0, 0, false, false},
    {"HTTP/1.1 200 OK\r\nTransfer-Encoding: ,chunked\r\n\r\n", AG_EPROTO, 0, 0, false, false},
    {"HTTP/1.1 200 OK\r\nTransfer-Encoding: identity\r\n\r\n", AG_EPROTO, 0, 0, false, false},
    {"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", AG_EPROTO, 0, 0, false, false},
    {"HTTP/1.1 200 OK\r\nConnection: clo se\r\n\r\n", AG_EPROTO, 0, 0, false, false},
    {"HTTP/1.1 200 OK\r\na: 1\r\nb: 2\r\nc: 3\r\nd: 4\r\ne: 5\r\n\r\n", AG_EHDRTOOBIG, 0, 0, false,
     false},
};

/* The value keeps its bare CR whole: the relay sees it and drops the header. */
TEST(bare_cr_in_value)
{
    static const char in[] = "HTTP/1.1 200 OK\r\nRequest-Id: a\rSet-Cookie: x=1\r\nB: c\r\n\r\n";
    ag_h1_header_t h[4];
    ag_h1_response_head_t out;
    int rc = ag_h1_parse_response_head(in, sizeof(in) - 1, h, 4, &out);
    ASSERT_MSG_(rc == (int)sizeof(in) - 1, "rc %d", rc);
    ASSERT_MSG_(out.num_headers == 2, "%zu headers", (size_t)out.num_headers);
    ASSERT_MSG_(ag_str_eq(h[0].value, AG_STR_LIT("a\rSet-Cookie: x=1")), "value %.*s",
                (int)h[0].value.len, h[0].value.ptr);
    ASSERT_MSG_(ag_str_eq(h[1].value, AG_STR_LIT("c")), "second header");
}

TEST(heads_table)
{
    for (size_t i = 0; i < AG_ARRAY_LEN(heads); i++) {
        const struct head_case *c = &heads[i];
        size_t len = strlen(c->in); /* the NUL case is nul_in_value */
        ag_h1_header_t h[4];
        ag_h1_response_head_t out;
        int rc = ag_h1_parse_response_head(c->in, len, h, 4, &out);
        if (c->want == OK) {
            ASSERT_MSG_(rc == (int)len, "case %zu: rc %d, want %zu", i, rc, len);
            ASSERT_MSG_(out.status == c->status, "case %zu: status %d", i, out.status);
            ASSERT_MSG_(out.content_length == c->cl, "case %zu: cl %jd", i,
                        (intmax_t)out.content_length);
            ASSERT_MSG_(out.chunked == c->chunked, "case %zu: chunked", i);
            ASSERT_MSG_(out.keep_alive == c->keep_alive, "case %zu: keep-alive", i);
        } else {
            ASSERT_MSG_(rc == c->want, "case %zu: rc %d, want %d", i, rc, c->want);
        }
        /* Every prefix needs more bytes, or already gives the same verdict. */
        for (size_t k = 0; k < len; k++) {
            int r = ag_h1_parse_response_head(c->in, k, h, 4, &out);
            ASSERT_MSG_(r == AG_EAGAIN || (c->want != OK && r == c->want),
                        "case %zu prefix %zu: rc %d", i, k, r);
        }
    }
}

TEST(nul_in_value)
{
    static const char in[] = "HTTP/1.1 200 OK\r\nA: b\0c\r\n\r\n";
    ag_h1_header_t h[4];
    ag_h1_response_head_t out;
    ASSERT_EQ(ag_h1_parse_response_head(in, sizeof(in) - 1, h, 4, &out), AG_EPROTO);
}

TEST(headers_and_reason)
{
    static const char in[] = "HTTP/1.1 429 Too Many\r\nRetry-After:  3 \r\nx-y:\r\n\r\nBODY";
    ag_h1_header_t h[4];
    ag_h1_response_head_t out;
    int rc = ag_h1_parse_response_head(in, sizeof(in) - 1, h, 4, &out);
    ASSERT_EQ(rc, (int)(sizeof(in) - 1 - 4));
    ASSERT_MEMEQ(out.reason.ptr, out.reason.len, "Too Many");
    ASSERT_EQ(out.num_headers, 2);
    ASSERT_MEMEQ(h[0].name.ptr, h[0].name.len, "Retry-After");
    ASSERT_MEMEQ(h[0].value.ptr, h[0].value.len, "3");
    ASSERT_EQ(h[1].value.len, 0);
}

/* Decodes `wire` as the body of `head`, whole and then one byte at a time. */
static int decode_body(const char *head, const char *wire, size_t wlen, bool eof, char *out,
                       size_t *outlen, size_t *rest, bool bytewise)
{
    ag_h1_header_t h[8];
    ag_h1_response_head_t hd;
    if (ag_h1_parse_response_head(head, strlen(head), h, 8, &hd) < 0)
        return -999;
    ag_h1_body_t b;
    ag_h1_body_init(&b, &hd, false);
    char buf[2048];
    if (wlen > sizeof(buf))
        return -998;
    memcpy(buf, wire, wlen);
    *outlen = 0;
    *rest = 0;
    size_t step = bytewise ? 1 : wlen;
    for (size_t off = 0; off < wlen; off += step) {
        size_t n = off + step <= wlen ? step : wlen - off;
        size_t len = n;
        int rc = ag_h1_body_decode(&b, buf + off, &len);
        memcpy(out + *outlen, buf + off, len);
        *outlen += len;
        if (rc >= 0) {
            *rest = (size_t)rc + (wlen - off - n);
            return 0;
        }
        if (rc != AG_EAGAIN)
            return rc;
    }
    if (ag_h1_body_done(&b))
        return 0;
    if (eof)
        return ag_h1_body_eof(&b);
    return AG_EAGAIN;
}

static const struct body_case {
    const char *head;
    const char *wire;
    bool eof;
    int want;
    const char *body;
    size_t rest;
} bodies[] = {
    {"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", "hello", false, 0, "hello", 0},
    {"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", "helloXY", false, 0, "hello", 2},
    {"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", "hel", true, AG_EPROTO, "hel", 0},
    {"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", "hel", false, AG_EAGAIN, "hel", 0},
    {"HTTP/1.1 200 OK\r\n\r\n", "until close", true, 0, "until close", 0},
    {"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n", "", false, 0, "", 0},
    {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", "5\r\nhello\r\n0\r\n\r\n", false, 0,
     "hello", 0},
    {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
     "5;ext=1\r\nhello\r\n1\r\n!\r\n0\r\nTrailer: x\r\n\r\nNEXT", false, 0, "hello!", 4},
    {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", "00005\r\nhello\r\n0\r\n\r\n", false,
     0, "hello", 0},
    {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", "5 \r\nhello\r\n0\r\n\r\n", false,
     AG_EPROTO, "", 0},
    {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", "5\r\nhello\r\n", true, AG_EPROTO,
     "hello", 0},
    {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", "x\r\n", false, AG_EPROTO, "", 0},
    {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", "-5\r\n", false, AG_EPROTO, "", 0},
    {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", "5\nhello\r\n", false, AG_EPROTO, "",
     0},
    {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", "5\r\nhelloX\r\n", false, AG_EPROTO,
     "hello", 0},
    {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", "5 5\r\n", false, AG_EPROTO, "", 0},
    {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", "10000000000000000\r\n", false,
     AG_EPROTO, "", 0},
    {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", "0\r\nbad trailer\r\n\r\n", false,
     AG_EPROTO, "", 0},
};

TEST(bodies_table)
{
    for (size_t i = 0; i < AG_ARRAY_LEN(bodies); i++) {
        const struct body_case *c = &bodies[i];
        for (int bytewise = 0; bytewise < 2; bytewise++) {
            char out[512];
            size_t outlen, rest;
            int rc = decode_body(c->head, c->wire, strlen(c->wire), c->eof, out, &outlen, &rest,
                                 bytewise);
            ASSERT_MSG_(rc == c->want, "case %zu/%d: rc %d, want %d", i, bytewise, rc, c->want);
            if (rc == 0 || rc == AG_EAGAIN || c->want == AG_EPROTO) {
                /* On an error the decoded prefix is what came before it. */
                if (rc != AG_EPROTO || bytewise) {
                    ASSERT_MSG_(outlen == strlen(c->body) && memcmp(out, c->body, outlen) == 0,
                                "case %zu/%d: body \"%.*s\"", i, bytewise, (int)outlen, out);
                }
            }
            if (rc == 0)
                ASSERT_MSG_(rest == c->rest, "case %zu/%d: rest %zu", i, bytewise, rest);
        }
    }
}

TEST(chunk_line_limit)
{
    static const char head[] = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
    char wire[AG_CHUNK_LINE_MAX + 8];
    memset(wire, '0', sizeof(wire));
    char out[2048];
    size_t outlen, rest;
    ASSERT_EQ(decode_body(head, wire, sizeof(wire), false, out, &outlen, &rest, false), AG_EPROTO);
}

TEST(reuse)
{
    ag_h1_header_t h[4];
    ag_h1_response_head_t hd;
    ag_h1_body_t b;
    static const char a[] = "HTTP/1.1 200 OK\r\n\r\n";
    ASSERT(ag_h1_parse_response_head(a, sizeof(a) - 1, h, 4, &hd) > 0);
    ag_h1_body_init(&b, &hd, false);
    ASSERT(!b.reusable); /* close-delimited */
    static const char c[] = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
    ASSERT(ag_h1_parse_response_head(c, sizeof(c) - 1, h, 4, &hd) > 0);
    ag_h1_body_init(&b, &hd, false);
    ASSERT(b.reusable && ag_h1_body_done(&b));
}

AG_TESTS(AG_TEST_ENTRY(heads_table) AG_TEST_ENTRY(bare_cr_in_value) AG_TEST_ENTRY(nul_in_value)
             AG_TEST_ENTRY(headers_and_reason) AG_TEST_ENTRY(bodies_table)
                 AG_TEST_ENTRY(chunk_line_limit) AG_TEST_ENTRY(reuse))
