/* SPDX-License-Identifier: MIT
 *
 * chunked.h: the in-place chunked transfer-coding decoder (RFC 9112 7.1) that
 * the request parser and the upstream client share. Pure: no allocation, no I/O.
 */
#ifndef AG_UTIL_CHUNKED_H
#define AG_UTIL_CHUNKED_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define AG_CHUNK_LINE_MAX 1024     /* default max_chunk_line */
#define AG_CHUNK_TRAILERS_MAX 8192 /* default max_trailer_bytes */

/** Decoder state. Owned by the caller (one per request body); init with
 *  ag_chunked_init(), then set the public limits if the defaults don't
 *  suit. Not thread-safe: one body, one thread at a time. */
typedef struct ag_chunked_decoder {
    /* public: bytes allowed in one chunk-size line, hex digits and extensions
     * included, CRLF excluded. */
    size_t max_chunk_line;
    /* public: bytes allowed in the whole trailer section (the lines after the
     * last chunk, CRLFs and final empty line included). */
    size_t max_trailer_bytes;
    /* private */
    uint64_t _bytes_left; /* data bytes still due in the current chunk */
    size_t _count;        /* bytes of the current chunk line / trailer section so far */
    int _state;
} ag_chunked_decoder_t;

/** Initialises `d` for a new body, with the default limits. */
void ag_chunked_init(ag_chunked_decoder_t *d);

/**
 * Decodes the next bytes of a chunked body in place.
 *
 * Pass only bytes not passed before: on each call buf[0..*len) holds the bytes
 * received since the previous call. Each byte is examined once, whatever the
 * split, and the results do not depend on how the body was split.
 *
 * @param len  in: bytes at buf; must be <= INT_MAX. out: the decoded body bytes
 *             (chunk data), moved to buf[0..*len).
 * @return AG_EAGAIN while the body is not complete: every input byte was
 *         consumed (decoded, or remembered as framing).
 *         >= 0 when the last chunk and the trailer section ended: the return is
 *         the number of bytes that followed the body in this input (the start
 *         of a pipelined request, say). They are moved to sit right after the
 *         decoded data: at buf[*len .. *len + rc), where the next request head
 *         starts at buf + *len. Once done, a further call decodes nothing: it
 *         leaves the bytes in place, sets *len to 0 and returns their count.
 *         AG_EPROTO on malformed input, or a chunk line / trailer section over
 *         its limit; sticky: every later call returns AG_EPROTO. AG_EINVALID
 *         when *len > INT_MAX. After an error *len is 0 and buf's contents are
 *         unspecified.
 * @note On completion the body's wire bytes in this input were
 *       (input *len) - rc; the decoder never reads or writes past buf[input *len).
 */
int ag_chunked_decode(ag_chunked_decoder_t *d, char *buf, size_t *len);

/** True while the decoder is inside chunk data (more body bytes are due, as
 *  opposed to framing); for choosing a body vs. an idle timeout. */
bool ag_chunked_in_data(const ag_chunked_decoder_t *d);

/** True once the body ended (ag_chunked_decode() returned >= 0). */
bool ag_chunked_done(const ag_chunked_decoder_t *d);

#endif
