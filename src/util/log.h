/* SPDX-License-Identifier: MIT
 *
 * log.h: the server log on stderr. Each call writes one whole line with one
 * write(2), so lines from several threads never interleave.
 */
#ifndef AG_UTIL_LOG_H
#define AG_UTIL_LOG_H

#include <stdint.h>

typedef enum { AG_LOG_DEBUG, AG_LOG_INFO, AG_LOG_WARN, AG_LOG_ERROR } ag_log_level_t;

extern ag_log_level_t ag_log_min_level;

void ag_log(ag_log_level_t level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/** Writes `len` bytes as they are (a preformatted line ending in '\n'). */
void ag_log_raw(const char *line, size_t len);

/** Copies s[0..n) into out[cap] for a log line: control bytes, DEL and
 *  backslash become \xNN, so text from outside cannot forge a line; cut
 *  (with "...") to fit; always NUL-terminated. @return the length written. */
size_t ag_log_escape(char *out, size_t cap, const char *s, size_t n);

#define ag_log_debug(...) ag_log(AG_LOG_DEBUG, __VA_ARGS__)
#define ag_log_info(...) ag_log(AG_LOG_INFO, __VA_ARGS__)
#define ag_log_warn(...) ag_log(AG_LOG_WARN, __VA_ARGS__)
#define ag_log_error(...) ag_log(AG_LOG_ERROR, __VA_ARGS__)

/** Wall-clock time in microseconds since the epoch, and monotonic microseconds. */
int64_t ag_now_us(void);
int64_t ag_mono_us(void);

/** Formats `us` (epoch microseconds) as RFC 3339 UTC with milliseconds into out[64]. */
void ag_format_time_iso(int64_t us, char out[64]);

#endif
