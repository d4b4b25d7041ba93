/* SPDX-License-Identifier: MIT
 *
 * http_bytes.h: the byte classes of HTTP/1.1's grammar (RFC 9110 5.6) that
 * more than one parser checks: token characters, field content, OWS.
 */
#ifndef AG_UTIL_HTTP_BYTES_H
#define AG_UTIL_HTTP_BYTES_H

#include <stdbool.h>
#include <string.h>

static inline bool ag_http_is_tchar(unsigned char c)
{
    if ((c >= '0' && c <= '9') || ((c | 0x20) >= 'a' && (c | 0x20) <= 'z'))
        return true;
    return c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

/* field-content: HTAB, SP, VCHAR, obs-text; never CR, LF, NUL, other CTLs or DEL */
static inline bool ag_http_is_field(unsigned char c)
{
    return c == '\t' || (c >= 0x20 && c != 0x7f);
}

static inline bool ag_http_is_ows(unsigned char c)
{
    return c == ' ' || c == '\t';
}

#endif
