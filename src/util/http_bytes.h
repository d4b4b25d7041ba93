/* SPDX-License-Identifier: MIT
 *
 * http_bytes.h: the byte classes of HTTP/1.1's grammar (RFC 9110 5.6) that
 * more than one parser checks: token characters, field content, OWS.
 */
#ifndef AG_UTIL_HTTP_BYTES_H
#define AG_UTIL_HTTP_BYTES_H

#include <stdbool.h>
#include <string.h>

/* tchar (RFC 9110 5.6.2) by table: the parsers test it on every byte of
 * every header name. */
static const unsigned char ag_http_tchar_table[256] = {
    ['!'] = 1, ['#'] = 1, ['$'] = 1, ['%'] = 1, ['&'] = 1, ['\''] = 1, ['*'] = 1, ['+'] = 1,
    ['-'] = 1, ['.'] = 1, ['0'] = 1, ['1'] = 1, ['2'] = 1, ['3'] = 1,  ['4'] = 1, ['5'] = 1,
    ['6'] = 1, ['7'] = 1, ['8'] = 1, ['9'] = 1, ['A'] = 1, ['B'] = 1,  ['C'] = 1, ['D'] = 1,
    ['E'] = 1, ['F'] = 1, ['G'] = 1, ['H'] = 1, ['I'] = 1, ['J'] = 1,  ['K'] = 1, ['L'] = 1,
    ['M'] = 1, ['N'] = 1, ['O'] = 1, ['P'] = 1, ['Q'] = 1, ['R'] = 1,  ['S'] = 1, ['T'] = 1,
    ['U'] = 1, ['V'] = 1, ['W'] = 1, ['X'] = 1, ['Y'] = 1, ['Z'] = 1,  ['^'] = 1, ['_'] = 1,
    ['`'] = 1, ['a'] = 1, ['b'] = 1, ['c'] = 1, ['d'] = 1, ['e'] = 1,  ['f'] = 1, ['g'] = 1,
    ['h'] = 1, ['i'] = 1, ['j'] = 1, ['k'] = 1, ['l'] = 1, ['m'] = 1,  ['n'] = 1, ['o'] = 1,
    ['p'] = 1, ['q'] = 1, ['r'] = 1, ['s'] = 1, ['t'] = 1, ['u'] = 1,  ['v'] = 1, ['w'] = 1,
    ['x'] = 1, ['y'] = 1, ['z'] = 1, ['|'] = 1, ['~'] = 1,
};

static inline bool ag_http_is_tchar(unsigned char c)
{
    return ag_http_tchar_table[c] != 0;
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
