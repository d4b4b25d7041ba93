/* SPDX-License-Identifier: MIT
 *
 * h1_parse.h: the strict, incremental HTTP/1.1 response parser of the native
 * upstream client (h1_client.c): the status line and header section, then the
 * body's framing (Content-Length, chunked with trailers, or up to the close).
 * Pure functions over the caller's bytes: no allocation, no I/O; any thread.
 * As strict as the request parser (src/http/parser.c): whatever two HTTP
 * implementations could frame differently is an error, never a guess.
 */
#ifndef AG_UPSTREAM_H1_PARSE_H
#define AG_UPSTREAM_H1_PARSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util/chunked.h"
#include "util/errors.h"
#include "util/str.h"

typedef struct ag_h1_header {
    ag_str_t name;  /* token, as sent */
    ag_str_t value; /* SP/HTAB trimmed both sides; may be empty */
} ag_h1_header_t;

typedef struct ag_h1_response_head {
    int minor_version; /* 0 or 1 */
    int status;        /* 100..599 */
    ag_str_t reason;   /* may be empty */
    ag_h1_header_t *headers;
    size_t num_headers;
    int64_t content_length; /* -1 when absent */
    bool chunked;           /* Transfer-Encoding: chunked (the only coding accepted) */
    bool keep_alive;        /* the headers allow reuse (1.1 unless close; 1.0 only keep-alive) */
} ag_h1_response_head_t;

/**
 * Parses a status line and header section at buf[0..len). Stateless: call
 * again with all the bytes so far. A verdict comes at the first byte that
 * settles it, so a prefix gives AG_EAGAIN or the whole input's result.
 * @param headers the caller's array of max_headers entries, filled in order.
 * @return the head's length (> 0; the body starts at buf + rc); AG_EAGAIN for
 *         more bytes (the caller bounds the head's size); AG_EPROTO when
 *         malformed or framed ambiguously (Content-Length with
 *         Transfer-Encoding, differing lengths, a coding other than one
 *         "chunked", Transfer-Encoding in HTTP/1.0, obs-fold, bare LF, ...);
 *         AG_EHDRTOOBIG past max_headers.
 * @note The views in *out and headers[] point into buf.
 */
int ag_h1_parse_response_head(const char *buf, size_t len, ag_h1_header_t *headers,
                              size_t max_headers, ag_h1_response_head_t *out);

/* ---- the body's framing ---- */

enum {
    AG_H1_BODY_NONE,    /* 1xx, 204, 304, or an answer to HEAD */
    AG_H1_BODY_LENGTH,  /* Content-Length */
    AG_H1_BODY_CHUNKED, /* Transfer-Encoding: chunked */
    AG_H1_BODY_CLOSE,   /* neither: the body ends when the server closes */
};

/** State of one response body; owned by the caller. */
typedef struct ag_h1_body {
    int kind;      /* AG_H1_BODY_* */
    bool reusable; /* the connection may carry another request after this body */
    /* private */
    ag_chunked_decoder_t chunks; /* AG_H1_BODY_CHUNKED */
    uint64_t _left;              /* AG_H1_BODY_LENGTH: bytes still due */
    int _state;
} ag_h1_body_t;

/** Chooses the framing of the body that follows `head` (RFC 9112 6.3), for
 *  the answer to a request of method other than HEAD when head_request is false. */
void ag_h1_body_init(ag_h1_body_t *b, const ag_h1_response_head_t *head, bool head_request);

/**
 * Decodes the next body bytes in place: buf[0..*len) holds the bytes received
 * since the previous call (each byte passed once, any split).
 * @return AG_EAGAIN when the body goes on (all input consumed; *len is the
 *         decoded bytes, moved to buf[0..*len)); >= 0 when the body ended: the
 *         count of bytes that followed it, moved to buf[*len..*len + rc);
 *         AG_EPROTO on malformed chunk framing (sticky; *len is 0).
 */
int ag_h1_body_decode(ag_h1_body_t *b, char *buf, size_t *len);

/** True once the body is complete. */
bool ag_h1_body_done(const ag_h1_body_t *b);

/** The server closed the connection: 0 when that ends the body properly
 *  (close-delimited, or already complete), AG_EPROTO for an early close. */
int ag_h1_body_eof(ag_h1_body_t *b);

#endif
