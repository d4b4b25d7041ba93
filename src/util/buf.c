/* SPDX-License-Identifier: MIT
 *
 * buf.c: capped growable buffer (see buf.h).
 */
#include "util/platform.h"

#include <errno.h>
#include <stdint.h>
#include <string.h>

#include "util/buf.h"
#include "util/errors.h"

void ag_buf_init(ag_buf_t *b, size_t max)
{
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
    b->max = max ? max : SIZE_MAX;
}

void ag_buf_fini(ag_buf_t *b)
{
    AG_FREE(&b->data);
    b->len = b->cap = 0;
}

void ag_buf_reset(ag_buf_t *b)
{
    b->len = 0;
}

int ag_buf_reserve(ag_buf_t *b, size_t extra)
{
    if (extra > b->max - b->len)
        return AG_ETOOBIG;
    size_t need = b->len + extra + 1; /* room for a terminating NUL */
    if (need <= b->cap)
        return 0;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < need)
        cap = cap > SIZE_MAX / 2 ? need : cap * 2;
    char *p = realloc(b->data, cap);
    if (!p)
        return -ENOMEM;
    b->data = p;
    b->cap = cap;
    return 0;
}

int ag_buf_append(ag_buf_t *b, const void *data, size_t len)
{
    int rc = ag_buf_reserve(b, len);
    if (rc < 0)
        return rc;
    if (len)
        memcpy(b->data + b->len, data, len);
    b->len += len;
    return 0;
}

int ag_buf_append_str(ag_buf_t *b, ag_str_t s)
{
    return ag_buf_append(b, s.ptr, s.len);
}

int ag_buf_append_cstr(ag_buf_t *b, const char *s)
{
    return ag_buf_append(b, s, strlen(s));
}

int ag_buf_vprintf(ag_buf_t *b, const char *fmt, va_list ap)
{
    va_list ap2;
    va_copy(ap2, ap);
    int n = vsnprintf(NULL, 0, fmt, ap2);
    va_end(ap2);
    if (n < 0)
        return -EINVAL;
    int rc = ag_buf_reserve(b, (size_t)n);
    if (rc < 0)
        return rc;
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    b->len += (size_t)n;
    return 0;
}

int ag_buf_printf(ag_buf_t *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = ag_buf_vprintf(b, fmt, ap);
    va_end(ap);
    return rc;
}

void ag_buf_consume(ag_buf_t *b, size_t n)
{
    if (n >= b->len) {
        b->len = 0;
        return;
    }
    memmove(b->data, b->data + n, b->len - n);
    b->len -= n;
}

const char *ag_buf_cstr(ag_buf_t *b)
{
    if (ag_buf_reserve(b, 0) < 0)
        return NULL;
    b->data[b->len] = '\0';
    return b->data;
}
