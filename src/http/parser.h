/* SPDX-License-Identifier: MIT
 *
 * parser.h: strict, zero-copy, incremental HTTP/1.1 request-head parser (the
 * chunked body decoder it pairs with is util/chunked.h). Pure functions over the caller's
 * bytes: no allocation, no I/O, no globals; safe on any thread.
 * docs/http-parser.md lists exactly what is accepted and rejected, and why.
 */
#ifndef AG_HTTP_PARSER_H
#define AG_HTTP_PARSER_H

#include <stdbool.h>
#include <stddef.h>

#include "util/chunked.h"
#include <stdint.h>

#include "util/errors.h"
#include "util/str.h"

/* Codes of this module, declared in util/errors.def with their HTTP statuses:
 * AG_HTTP_ENOTIMPL, a Transfer-Encoding other than plain "chunked" (e.g.
 * "gzip, chunked"): 501; AG_HTTP_EVERSION, a well-formed "HTTP/d.d" that is
 * neither HTTP/1.0 nor HTTP/1.1: 505. */

typedef struct ag_http_header {
    ag_str_t name;  /* token, as sent (case preserved) */
    ag_str_t value; /* leading and trailing SP/HTAB trimmed; may be empty */
} ag_http_header_t;

typedef struct ag_http_request_head {
    ag_str_t method;           /* e.g. "POST"; case-sensitive, as RFC 9110 says */
    ag_str_t target;           /* request-target as sent, e.g. "/api/generate?x=1" */
    ag_str_t path;             /* target up to '?'; for absolute-form, the path part
                                * (empty when the URI has none: treat it as "/");
                                * "*" for OPTIONS * */
    ag_str_t query;            /* after '?', may be empty */
    ag_str_t authority;        /* absolute-form only: "host[:port]" of the target; else empty */
    ag_str_t host;             /* value of the Host header; empty (ptr NULL) when absent */
    int minor_version;         /* 0 or 1 (HTTP/1.0, HTTP/1.1) */
    ag_http_header_t *headers; /* the caller's array passed to the parser */
    size_t num_headers;
    /* derived from the headers, validated: */
    int64_t content_length; /* -1 when absent (and always -1 when chunked) */
    bool chunked;           /* Transfer-Encoding: chunked */
    bool keep_alive;        /* 1.1: on unless Connection: close; 1.0: off unless keep-alive */
    bool expect_continue;   /* Expect: 100-continue (ignored for HTTP/1.0, per RFC 9110) */
} ag_http_request_head_t;

/**
 * Parses the request line and the header section at buf[0..len).
 *
 * Stateless: the caller re-calls with the whole buffer received so far (as
 * with picohttpparser). Bytes are examined strictly left to right and a
 * verdict is reached at the earliest byte that decides it, so every prefix
 * of an input returns either AG_EAGAIN or the same result as the whole input.
 *
 * @param buf          the bytes received so far; borrowed.
 * @param headers      the caller's array of max_headers entries (may be NULL
 *                     when max_headers is 0); filled in order of appearance.
 * @param out          filled on success; unspecified after any other return.
 * @return bytes consumed by the head (> 0, including any skipped leading CRLFs
 *         and the final empty line) when complete: the body or the next
 *         pipelined request starts at buf + rc.
 *         AG_EAGAIN when more bytes are needed. The parser has no size limit of
 *         its own: the caller enforces its head limit by never passing more than
 *         the limit; AG_EAGAIN with len >= limit means 431.
 *         AG_EPROTO (400) on malformed input or ambiguous framing;
 *         AG_EHDRTOOBIG (431) when there are more than max_headers headers;
 *         AG_HTTP_ENOTIMPL (501) for a transfer coding other than chunked;
 *         AG_HTTP_EVERSION (505) for HTTP/x.y other than 1.0 and 1.1.
 *         Each error means: answer, then close the connection.
 * @note Every ag_str_t in *out and headers[] points into buf (an empty view
 *       may have a NULL ptr): valid while buf is, unmodified. Copy into the
 *       request pool to keep longer.
 */
int ag_http_parse_request_head(const char *buf, size_t len, ag_http_header_t *headers,
                               size_t max_headers, ag_http_request_head_t *out);

/**
 * As ag_http_parse_request_head(), with `last_len`, the len of the previous
 * call on the same buffer that returned AG_EAGAIN (0 on the first call). When
 * the bytes added since then cannot hold the end of the head (no CRLFCRLF
 * ends in buf[last_len..len)), it returns AG_EAGAIN at once, without
 * re-parsing: a client that trickles the head byte by byte costs O(len) in
 * total, not O(len^2). The price: errors in an incomplete head are reported
 * only by the first call and once the head is complete (until then such
 * a client just runs into the caller's 431 limit or header timeout).
 */
int ag_http_parse_request_head_next(const char *buf, size_t len, size_t last_len,
                                    ag_http_header_t *headers, size_t max_headers,
                                    ag_http_request_head_t *out);

/** Header lookup, ASCII case-insensitive. @return the first header named
 *  `name` (NUL-terminated), or NULL; points into req->headers. */
const ag_http_header_t *ag_http_find_header(const ag_http_request_head_t *req, const char *name);

#endif
