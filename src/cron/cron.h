/* SPDX-License-Identifier: MIT
 *
 * cron.h: Cloudflare Workers cron triggers: the parser (exactly Cloudflare's
 * five-field syntax, Quartz day-of-week numbering, L/W/# extensions) and the
 * next-run calculator the scheduler of [[aigate.tasks]] is built on. All times
 * are UTC epoch seconds; no libc time zone or locale is consulted. Pure
 * functions on a value type: safe from any thread.
 */
#ifndef AG_CRON_CRON_H
#define AG_CRON_CRON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The range of times ag_cron_next() and ag_cron_matches() work on:
 * 0001-01-01T00:00:00Z to 9999-12-31T23:59:59Z (proleptic Gregorian). */
#define AG_CRON_MIN_S INT64_C(-62135596800)
#define AG_CRON_MAX_S INT64_C(253402300799)

/** A compiled expression: a small value (40 bytes), copy it freely; it owns
 *  nothing and needs no cleanup. The fields are private to cron.c. */
typedef struct ag_cron {
    /* private */
    uint64_t _minutes;    /* bit m: minute m (0-59) */
    uint64_t _wday_nth;   /* bit 8*w + n: the n-th (1-5) weekday w of the month (x#n) */
    uint32_t _hours;      /* bit h: hour h (0-23) */
    uint32_t _mdays;      /* bit d: day of month d (1-31) */
    uint32_t _mdays_w;    /* bit n: the weekday nearest day n (nW) */
    uint32_t _mdays_last; /* bit n: n days before the last day (L-n; L is bit 0) */
    uint16_t _months;     /* bit m: month m (1-12) */
    uint8_t _wdays;       /* bit w: weekday w, 0 = Sunday .. 6 = Saturday */
    uint8_t _wdays_last;  /* bit w: the last weekday w of the month (xL) */
    uint8_t _flags;       /* AG__CRON_* below */
} ag_cron_t;

#define AG__CRON_DOM_STAR 1u /* day of month is a bare '*' */
#define AG__CRON_DOW_STAR 2u /* day of week is a bare '*' */
#define AG__CRON_LW 4u       /* day of month holds LW (the last weekday) */

/** Why an expression was rejected. */
typedef struct ag_cron_error {
    const char *message; /* static string, e.g. "minute must be 0-59"; never NULL after a failure */
    unsigned offset;     /* byte offset within the expression of the offending character
                            (== len when something is missing at the end) */
} ag_cron_error_t;

/**
 * Parses a cron expression as Cloudflare Workers does: exactly five fields
 * separated by spaces or tabs (leading and trailing ones are ignored):
 * minute (0-59), hour (0-23), day of month (1-31), month (1-12 or JAN-DEC),
 * day of week (1-7, 1 = Sunday .. 7 = Saturday, or SUN-SAT). Names and the
 * letters L and W are read in any case.
 *
 * Every field takes `*`, lists `a,b`, ranges `a-b` (names too: `MON-FRI`)
 * and steps `*\/n`, `a-b/n`, `a/n` (a to the field's maximum; 1 <= n <= the
 * number of values in the field). Day of month also takes `L` (the last day),
 * `LW` (the last weekday, Monday-Friday), `L-n` (n days before the last day,
 * 0 <= n <= 30) and `nW` (the weekday nearest day n within the month: a
 * Saturday moves to the Friday before, except that 1W moves to Monday the 3rd;
 * a Sunday moves to the Monday after, except on the last day, which moves to
 * the Friday before). Day of week also takes `xL` (the last weekday x of the
 * month), `x#n` (the n-th, 1 <= n <= 5) and a lone `L` (Saturday). Any of
 * these may be an item of a list (`1,15,L`, `2#1,6L`). When neither day field
 * is a bare `*`, a day matches if either field matches it (Vixie's rule, as
 * Cloudflare); when one is a bare `*`, only the other restricts.
 *
 * Rejected, each with its own message: `?`, a sixth or seventh field
 * (seconds, years), fewer than five fields, `@daily`-style macros,
 * out-of-range values, day of week 0, reversed ranges (`5-1`), step 0, empty
 * list items and any other character.
 *
 * @param expr  the expression, borrowed for the call; need not be NUL-terminated.
 * @param out   filled on success; untouched on failure.
 * @param err   filled on failure (may be NULL).
 * @return 0, or AG_EINVALID with *err set.
 */
int ag_cron_parse(const char *expr, size_t len, ag_cron_t *out, ag_cron_error_t *err);

/**
 * The first minute that matches `c` strictly after `after_s`, as epoch
 * seconds (a multiple of 60). It jumps month, day, hour and minute, never
 * minute by minute: a yearly schedule costs 2 to 5 steps, one that never
 * matches at most two a month over the 400 years it looks.
 * @return the time, or -1 when the expression never matches (`0 0 30 2 *`:
 *         the calendar repeats every 400 years, and that is how far it looks),
 *         when the next match would be after AG_CRON_MAX_S, or when `after_s`
 *         is outside [AG_CRON_MIN_S, AG_CRON_MAX_S].
 */
int64_t ag_cron_next(const ag_cron_t *c, int64_t after_s);

/** Whether the minute holding `t_s` (its seconds are ignored) matches `c`.
 *  False outside [AG_CRON_MIN_S, AG_CRON_MAX_S]. */
bool ag_cron_matches(const ag_cron_t *c, int64_t t_s);

/** Writes `t_s` as "YYYY-MM-DDTHH:MM:SSZ" (UTC) and a NUL into buf, which
 *  must hold at least 21 bytes.
 *  @return 20, or -1 (buf untouched) when cap < 21 or t_s is outside
 *          [AG_CRON_MIN_S, AG_CRON_MAX_S]. */
int ag_cron_format_time(int64_t t_s, char *buf, size_t cap);

/* Internal, for tests: ag_cron_next() that also reports how many steps (field
 * jumps) it took in *steps (may be NULL). */
int64_t ag__cron_next_counted(const ag_cron_t *c, int64_t after_s, unsigned *steps);

#endif
