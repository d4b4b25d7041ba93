/* SPDX-License-Identifier: MIT
 *
 * hex.c: hex encoding and decoding (see hex.h).
 */
#include "util/platform.h"

#include "util/hex.h"

#include <stdint.h>
#include <string.h>

#include "util/errors.h"

static const char digits[] = "0123456789abcdef";

int ag_hex_digit(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

bool ag_hex_is_lower(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')))
            return false;
    }
    return true;
}

void ag_hex_encode(const void *p, size_t n, char *out)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[b[i] >> 4];
        out[2 * i + 1] = digits[b[i] & 15];
    }
    out[2 * n] = '\0';
}

char *ag_hex_encode_alloc(const void *p, size_t n)
{
    if (n > (SIZE_MAX - 1) / 2)
        return NULL;
    char *s = malloc(2 * n + 1);
    if (s != NULL)
        ag_hex_encode(p, n, s);
    return s;
}

ssize_t ag_hex_decode(const char *s, size_t len, void *out, size_t cap)
{
    unsigned char *b = out;
    if (len % 2 != 0)
        return AG_EINVALID;
    if (len / 2 > cap)
        return AG_ETOOBIG;
    for (size_t i = 0; i < len / 2; i++) {
        int hi = ag_hex_digit((unsigned char)s[2 * i]),
            lo = ag_hex_digit((unsigned char)s[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return AG_EINVALID;
        b[i] = (unsigned char)(hi << 4 | lo);
    }
    return (ssize_t)(len / 2);
}

bool ag_percent_decode(const char *s, size_t n, char *out, size_t cap, bool plus_is_space)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (c == '+' && plus_is_space) {
            c = ' ';
        } else if (c == '%') {
            int hi = i + 2 < n ? ag_hex_digit(s[i + 1]) : -1;
            int lo = hi >= 0 ? ag_hex_digit(s[i + 2]) : -1;
            if (lo < 0)
                return false;
            c = (char)(hi * 16 + lo);
            i += 2;
        }
        if (c == '\0' || o + 1 >= cap)
            return false;
        out[o++] = c;
    }
    if (cap == 0)
        return false;
    out[o] = '\0';
    return true;
}
