/* SPDX-License-Identifier: MIT
 *
 * buf.h: a growable heap byte buffer with a hard cap (curl's dynbuf idea).
 * The buffer owns its bytes; ag_buf_fini() releases them.
 */
#ifndef AG_UTIL_BUF_H
#define AG_UTIL_BUF_H

#include <stdarg.h>
#include <stddef.h>

#include "util/str.h"

typedef struct ag_buf {
    char *data;
    size_t len;
    size_t cap;
    size_t max; /* hard cap on len; 0 means SIZE_MAX */
} ag_buf_t;

void ag_buf_init(ag_buf_t *b, size_t max);
void ag_buf_fini(ag_buf_t *b);
void ag_buf_reset(ag_buf_t *b);

/** Makes room for `extra` more bytes. @return 0, or AG_ETOOBIG past the cap, -ENOMEM. */
int ag_buf_reserve(ag_buf_t *b, size_t extra);
int ag_buf_append(ag_buf_t *b, const void *data, size_t len);
int ag_buf_append_str(ag_buf_t *b, ag_str_t s);
int ag_buf_append_cstr(ag_buf_t *b, const char *s);
int ag_buf_printf(ag_buf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int ag_buf_vprintf(ag_buf_t *b, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));

/** Drops the first n bytes (consumed input). */
void ag_buf_consume(ag_buf_t *b, size_t n);

/** NUL-terminates without counting the NUL in len. @return data or NULL on error. */
const char *ag_buf_cstr(ag_buf_t *b);

#endif
