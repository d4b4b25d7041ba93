/* SPDX-License-Identifier: MIT
 *
 * utf.c: strict UTF-8 decoding (RFC 3629) and UTF-16 length counting.
 */
#include "util/platform.h"

#include "util/utf.h"

size_t ag_utf8_decode(const unsigned char *s, size_t len, unsigned *cp)
{
    if (len == 0)
        return 0;
    unsigned c = s[0];
    if (c < 0x80) {
        *cp = c;
        return 1;
    }
    size_t n;
    unsigned min;
    if ((c & 0xE0) == 0xC0) {
        n = 2, c &= 0x1F, min = 0x80;
    } else if ((c & 0xF0) == 0xE0) {
        n = 3, c &= 0x0F, min = 0x800;
    } else if ((c & 0xF8) == 0xF0) {
        n = 4, c &= 0x07, min = 0x10000;
    } else {
        return 0;
    }
    if (len < n)
        return 0;
    for (size_t i = 1; i < n; i++) {
        if ((s[i] & 0xC0) != 0x80)
            return 0;
        c = (c << 6) | (s[i] & 0x3F);
    }
    if (c < min || c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF))
        return 0;
    *cp = c;
    return n;
}

bool ag_utf8_valid(const char *s, size_t len)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0;
    while (i < len) {
        if (p[i] < 0x80) {
            i++;
            continue;
        }
        unsigned cp;
        size_t n = ag_utf8_decode(p + i, len - i, &cp);
        if (n == 0)
            return false;
        i += n;
    }
    return true;
}

size_t ag_utf16_length(const char *s, size_t len)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t units = 0, i = 0;
    while (i < len) {
        if (p[i] < 0x80) {
            i++, units++;
            continue;
        }
        unsigned cp;
        size_t n = ag_utf8_decode(p + i, len - i, &cp);
        if (n == 0) {
            i++, units++;
            continue;
        }
        i += n;
        units += cp >= 0x10000 ? 2 : 1;
    }
    return units;
}
