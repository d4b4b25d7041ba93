/* SPDX-License-Identifier: MIT
 *
 * template.h: the template language of scheduled tasks' prompts and output keys
 * (docs/platform.md section 4). Parsing compiles the text once, at config load,
 * with errors that carry a position; the caller then walks the placeholders, looks
 * up the kv/r2/usage/fetch values off the loop, and renders. Time variables are
 * computed by the renderer from the scheduled time.
 *
 * Syntax:
 * - `{{NAME}}` or `{{NAME:ARG}}`; names are case-sensitive:
 *     {{date}}              the scheduled time, UTC, YYYY-MM-DD
 *     {{datetime}}          the scheduled time, UTC, YYYY-MM-DDTHH:MM:SSZ
 *     {{scheduledTime}}     the scheduled time, ms since the epoch (decimal)
 *     {{kv:BINDING:KEY}}    a KV value; KEY is everything after the second ':'
 *     {{r2:BINDING:KEY}}    an R2 object's body
 *     {{usage:WINDOW}}      usage stats of a window: a positive count and one unit,
 *                           s, m, h or d (30m, 24h, 7d), at most 100 years
 *     {{fetch:URL}}         the body of an http:// or https:// URL
 * - Spaces and tabs around the name and around each argument are trimmed
 *   (`{{ kv : CACHE : a key }}` is binding "CACHE", key "a key"). A placeholder
 *   ends at the first `}}` and must be on one line. Nesting is not supported.
 * - Escapes: `\{{` is a literal `{{` (the backslash is dropped); `\\{{` is one
 *   literal backslash followed by a placeholder (as in Handlebars). Every other
 *   backslash, and every lone `{` or `}`, is plain text; so is a `}}` outside a
 *   placeholder. In a run of three or more `{`, the last two open the placeholder
 *   (`{{{date}}}` renders `{2026-12-07}`).
 *
 * Threads: a parsed template is immutable; any thread may render it, several at
 * once. Parsing touches no global state. Nothing here blocks or does I/O.
 */
#ifndef AG_CRON_TEMPLATE_H
#define AG_CRON_TEMPLATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util/buf.h"
#include "util/str.h"

/** Longest template text accepted, in bytes. */
#define AG_TEMPLATE_MAX_SIZE (64 * 1024)
/** Most placeholders in one template. */
#define AG_TEMPLATE_MAX_VARS 256
/** Most bytes one render appends (values included). */
#define AG_TEMPLATE_MAX_OUTPUT (1024 * 1024)

typedef enum ag_template_kind {
    AG_TEMPLATE_DATE,           /* {{date}} */
    AG_TEMPLATE_DATETIME,       /* {{datetime}} */
    AG_TEMPLATE_SCHEDULED_TIME, /* {{scheduledTime}} */
    AG_TEMPLATE_KV,             /* {{kv:BINDING:KEY}} */
    AG_TEMPLATE_R2,             /* {{r2:BINDING:KEY}} */
    AG_TEMPLATE_USAGE,          /* {{usage:WINDOW}} */
    AG_TEMPLATE_FETCH,          /* {{fetch:URL}} */
} ag_template_kind_t;

/** One placeholder. Every ag_str_t points into the template, is NUL-terminated
 *  (the NUL is not counted in len) and lives as long as the template. */
typedef struct ag_template_var {
    ag_template_kind_t kind;
    ag_str_t binding;      /* kv, r2: the binding name; empty otherwise */
    ag_str_t arg;          /* kv, r2: the key; fetch: the URL; usage: the window as
                              written ("7d"); empty for the time variables */
    int64_t window_s;      /* usage: the window in seconds; 0 otherwise */
    ag_str_t text;         /* the placeholder as written, braces included, e.g.
                              "{{ kv:CACHE:k }}": for run records and messages */
    size_t offset;         /* byte offset of its "{{" in the parsed text */
    size_t binding_offset; /* kv, r2: byte offset of the binding; offset otherwise */
    size_t arg_offset;     /* byte offset of arg; offset for the time variables */
} ag_template_var_t;

typedef struct ag_template ag_template_t;

/** Why a parse failed. offset is the byte offset into the text of the offending
 *  character (for the size limit: AG_TEMPLATE_MAX_SIZE); line and col are 1-based
 *  and point at the same character, col counting code points. line and col are
 *  0 only for "out of memory". message is NUL-terminated, without position or
 *  trailing newline. */
typedef struct ag_template_error {
    size_t offset;
    uint32_t line;
    uint32_t col;
    char message[160];
} ag_template_error_t;

/**
 * Compiles a template.
 * @param text  the template's bytes, need not be NUL-terminated; borrowed for the
 *              call only (the template copies what it keeps). NULL only with len 0.
 * @param out   set to the template on success, to NULL otherwise.
 * @param err   may be NULL; filled in on failure.
 * @return 0; AG_EINVALID for a syntax error (unknown variable, unterminated `{{`,
 *         empty name, nested `{{`, an argument given to a time variable, kv/r2
 *         without binding or key, a bad binding, a bad window, a URL that is not
 *         http(s)); AG_ETOOBIG past AG_TEMPLATE_MAX_SIZE bytes or
 *         AG_TEMPLATE_MAX_VARS placeholders; -ENOMEM.
 *         Parsing stops at the first error.
 */
int ag_template_parse(const char *text, size_t len, ag_template_t **out, ag_template_error_t *err);

/** Frees a template; NULL is a no-op. Every pointer obtained from it dies with it. */
void ag_template_free(ag_template_t *t);

/** The number of placeholders, in the order they appear. */
size_t ag_template_count(const ag_template_t *t);

/** Placeholder i (i < ag_template_count(t)); owned by t. */
const ag_template_var_t *ag_template_var(const ag_template_t *t, size_t i);

/** True when every placeholder is a time variable (date, datetime, scheduledTime),
 *  or there is none: rendering needs no looked-up values. */
bool ag_template_is_time_only(const ag_template_t *t);

/** The name of a kind as written in templates ("date", "scheduledTime", "kv"...);
 *  "?" for a value outside the enum. Static storage. */
const char *ag_template_kind_name(ag_template_kind_t kind);

/** The 1-based line and column (in code points) of a byte offset into the text t
 *  was parsed from (an offset past the end is clamped to the end). For a caller
 *  that turns a placeholder's offsets into file:line:col. */
void ag_template_locate(const ag_template_t *t, size_t offset, uint32_t *line, uint32_t *col);

/**
 * Renders t for one scheduled time, appending to out.
 * @param scheduled_ms  ms since the epoch (UTC): date, datetime and scheduledTime
 *                      come from it (civil-calendar arithmetic; no time zone, no
 *                      libc time functions). Years outside 0-9999 are written with
 *                      as many digits as they need, negative ones with a '-'.
 * @param values   values[i] is the looked-up value of placeholder i, inserted
 *                 verbatim (no escaping). AG_STR_NULL (ptr NULL) means missing: the
 *                 placeholder renders empty and is reported; a value that is present
 *                 and empty has a non-NULL ptr and len 0. The entries of time
 *                 variables are not read; an index >= nvalues is missing; values may
 *                 be NULL (every kv/r2/usage/fetch placeholder is missing). Borrowed
 *                 for the call only.
 * @param out      appended to; left as it was on failure.
 * @param missing  NULL, or ag_template_count(t) flags: on success missing[i] is
 *                 true exactly when placeholder i rendered empty for want of a value.
 * @return the number of missing placeholders (>= 0); AG_ETOOBIG when the output
 *         would pass AG_TEMPLATE_MAX_OUTPUT bytes or out's own cap; -ENOMEM;
 *         AG_EINVALID for a NULL t or out.
 */
int ag_template_render(const ag_template_t *t, int64_t scheduled_ms, const ag_str_t *values,
                       size_t nvalues, ag_buf_t *out, bool *missing);

#endif
