/* SPDX-License-Identifier: MIT
 *
 * chunked.c: the in-place decoder of HTTP/1.1's chunked transfer coding, one
 * for both directions: request bodies (http/) and upstream answers (upstream/).
 */
#include "util/platform.h"

#include <limits.h>
#include <string.h>

#include "util/chunked.h"
#include "util/errors.h"
#include "util/hex.h"
#include "util/http_bytes.h"

/* ---- chunked transfer coding (RFC 9112 7.1) ---- */

enum {
    CH_SIZE_FIRST, /* expecting the first hex digit of a chunk size */
    CH_SIZE,       /* more hex digits, or what ends the size */
    CH_SIZE_BWS,   /* whitespace after the size: only ';' may follow */
    CH_EXT,        /* chunk extensions, up to CR */
    CH_SIZE_LF,    /* CR seen at the end of the chunk-size line */
    CH_DATA,
    CH_DATA_CR, /* CRLF after chunk data */
    CH_DATA_LF,
    CH_TRAILER_START, /* start of a trailer line, or of the final CRLF */
    CH_TRAILER_NAME,
    CH_TRAILER_VALUE,
    CH_TRAILER_LF,
    CH_END_LF, /* CR of the final empty line seen */
    CH_DONE,
    CH_ERROR,
};

void ag_chunked_init(ag_chunked_decoder_t *d)
{
    memset(d, 0, sizeof(*d));
    d->max_chunk_line = AG_CHUNK_LINE_MAX;
    d->max_trailer_bytes = AG_CHUNK_TRAILERS_MAX;
    d->_state = CH_SIZE_FIRST;
}

bool ag_chunked_in_data(const ag_chunked_decoder_t *d)
{
    return d->_state == CH_DATA;
}

bool ag_chunked_done(const ag_chunked_decoder_t *d)
{
    return d->_state == CH_DONE;
}

/* One framing byte; the caller handles CH_DATA in bulk. @return 0 or AG_EPROTO. */
static int chunked_step(ag_chunked_decoder_t *d, unsigned char c)
{
    int h;

    switch (d->_state) {
    case CH_SIZE_FIRST:
    case CH_SIZE:
        h = ag_hex_digit(c);
        if (h < 0 && d->_state == CH_SIZE_FIRST)
            return AG_EPROTO;
        if (c == '\r') { /* the CRLF does not count against the limit */
            d->_state = CH_SIZE_LF;
            return 0;
        }
        if (++d->_count > d->max_chunk_line)
            return AG_EPROTO;
        if (h >= 0) {
            /* Leading zeros are free; a 17th significant digit would overflow. */
            if (d->_bytes_left >> 60)
                return AG_EPROTO;
            d->_bytes_left = (d->_bytes_left << 4) | (uint64_t)h;
            d->_state = CH_SIZE;
        } else if (c == ';') {
            d->_state = CH_EXT;
        } else if (ag_http_is_ows(c)) {
            d->_state = CH_SIZE_BWS;
        } else {
            return AG_EPROTO;
        }
        return 0;
    case CH_SIZE_BWS:
        if (++d->_count > d->max_chunk_line)
            return AG_EPROTO;
        if (c == ';')
            d->_state = CH_EXT;
        else if (!ag_http_is_ows(c))
            return AG_EPROTO;
        return 0;
    case CH_EXT:
        /* Extensions are ignored, so only their bytes are checked: never a
         * bare CR or LF, which is what lets two parsers end the line at
         * different places. */
        if (c == '\r') {
            d->_state = CH_SIZE_LF;
            return 0;
        }
        if (++d->_count > d->max_chunk_line || !ag_http_is_field(c))
            return AG_EPROTO;
        return 0;
    case CH_SIZE_LF:
        if (c != '\n')
            return AG_EPROTO;
        d->_count = 0;
        d->_state = d->_bytes_left ? CH_DATA : CH_TRAILER_START;
        return 0;
    case CH_DATA_CR:
        if (c != '\r')
            return AG_EPROTO;
        d->_state = CH_DATA_LF;
        return 0;
    case CH_DATA_LF:
        if (c != '\n')
            return AG_EPROTO;
        d->_count = 0;
        d->_state = CH_SIZE_FIRST;
        return 0;
    default:
        break;
    }

    /* Trailer section: field lines as in the head, parsed for syntax only
     * and discarded; _count bounds the whole section. */
    if (++d->_count > d->max_trailer_bytes)
        return AG_EPROTO;
    switch (d->_state) {
    case CH_TRAILER_START:
        if (c == '\r')
            d->_state = CH_END_LF;
        else if (ag_http_is_tchar(c))
            d->_state = CH_TRAILER_NAME;
        else
            return AG_EPROTO;
        return 0;
    case CH_TRAILER_NAME:
        if (c == ':')
            d->_state = CH_TRAILER_VALUE;
        else if (!ag_http_is_tchar(c))
            return AG_EPROTO;
        return 0;
    case CH_TRAILER_VALUE:
        if (c == '\r')
            d->_state = CH_TRAILER_LF;
        else if (!ag_http_is_field(c))
            return AG_EPROTO;
        return 0;
    case CH_TRAILER_LF:
        if (c != '\n')
            return AG_EPROTO;
        d->_state = CH_TRAILER_START;
        return 0;
    case CH_END_LF:
        if (c != '\n')
            return AG_EPROTO;
        d->_state = CH_DONE;
        return 0;
    default:
        return AG_EPROTO; /* not reached: CH_DATA, CH_DONE, CH_ERROR handled by the caller */
    }
}

int ag_chunked_decode(ag_chunked_decoder_t *d, char *buf, size_t *len)
{
    size_t n = *len, src = 0, dst = 0;

    if (n > INT_MAX)
        return AG_EINVALID;
    if (d->_state == CH_ERROR)
        return AG_EPROTO;
    if (d->_state == CH_DONE) {
        *len = 0;
        return (int)n;
    }
    while (src < n) {
        if (d->_state == CH_DATA) {
            size_t take = n - src;
            if (d->_bytes_left < take)
                take = (size_t)d->_bytes_left;
            if (dst != src)
                memmove(buf + dst, buf + src, take);
            dst += take;
            src += take;
            d->_bytes_left -= take;
            if (d->_bytes_left == 0)
                d->_state = CH_DATA_CR;
            continue;
        }
        if (chunked_step(d, (unsigned char)buf[src++]) < 0) {
            d->_state = CH_ERROR;
            *len = 0;
            return AG_EPROTO;
        }
        if (d->_state == CH_DONE) {
            size_t rest = n - src;
            if (rest && dst != src)
                memmove(buf + dst, buf + src, rest);
            *len = dst;
            return (int)rest;
        }
    }
    *len = dst;
    return AG_EAGAIN;
}
