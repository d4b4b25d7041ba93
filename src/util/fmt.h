/* SPDX-License-Identifier: MIT
 *
 * fmt.h: number formatting for hot paths, where printf's parsing of a
 * format string costs more than the work itself.
 */
#ifndef AG_UTIL_FMT_H
#define AG_UTIL_FMT_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

/** Writes v in decimal at out (at most 20 bytes, no NUL). @return bytes written. */
static inline size_t ag_fmt_u64(char *out, uint64_t v)
{
    char tmp[20];
    size_t n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    for (size_t i = 0; i < n; i++)
        out[i] = tmp[n - 1 - i];
    return n;
}

/** Writes v as exactly `width` lowercase hex digits (no NUL). */
static inline void ag_fmt_hex(char *out, uint64_t v, unsigned width)
{
    static const char digits[] = "0123456789abcdef";
    for (unsigned i = width; i > 0; i--) {
        out[i - 1] = digits[v & 15];
        v >>= 4;
    }
}

/** Appends n bytes at *q and advances it. */
static inline void ag_put(char **q, const char *s, size_t n)
{
    memcpy(*q, s, n);
    *q += n;
}

#define AG_PUT_LIT(q, lit) ag_put((q), (lit), sizeof(lit) - 1)

#endif
