/* SPDX-License-Identifier: MIT
 *
 * str.h: ag_str_t, a borrowed (pointer, length) view of bytes. A view never
 * owns its bytes: its comment at each use says who does and for how long.
 */
#ifndef AG_UTIL_STR_H
#define AG_UTIL_STR_H

#include <stdbool.h>
#include <stddef.h>
#include <string.h>
#include <strings.h>

typedef struct ag_str {
    const char *ptr;
    size_t len;
} ag_str_t;

#define AG_STR_LIT(s) ((ag_str_t){(s), sizeof(s) - 1})
#define AG_STR_NULL ((ag_str_t){NULL, 0})

static inline ag_str_t ag_str(const char *ptr, size_t len)
{
    return (ag_str_t){ptr, len};
}

static inline ag_str_t ag_str_c(const char *cstr)
{
    return (ag_str_t){cstr, cstr ? strlen(cstr) : 0};
}

static inline bool ag_str_eq(ag_str_t a, ag_str_t b)
{
    return a.len == b.len && (a.len == 0 || memcmp(a.ptr, b.ptr, a.len) == 0);
}

static inline bool ag_str_eq_lit_ci(ag_str_t a, const char *lit)
{
    size_t n = strlen(lit);
    return a.len == n && strncasecmp(a.ptr, lit, n) == 0;
}

#endif
