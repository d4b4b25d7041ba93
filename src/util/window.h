/* SPDX-License-Identifier: MIT
 *
 * window.h: a time window as operators write it: a positive count and one
 * unit, s, m, h or d ("30s", "15m", "24h", "7d"), at most 100 years. Used by
 * `aigate stats --since`, GET /stats and templates' {{usage:WINDOW}}.
 */
#ifndef AG_UTIL_WINDOW_H
#define AG_UTIL_WINDOW_H

#include <stddef.h>
#include <stdint.h>

#define AG_WINDOW_MAX_S (100LL * 366 * 86400)

/** Parses s[0..len). @return 0 and *seconds, or AG_EINVALID. */
int ag_parse_window(const char *s, size_t len, int64_t *seconds);

#endif
