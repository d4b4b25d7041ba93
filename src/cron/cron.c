/* SPDX-License-Identifier: MIT
 *
 * cron.c: Cloudflare's cron syntax compiled to bit sets (one per field, plus
 * the L/W/# forms of the day fields), and the next-run search that jumps
 * field by field over a civil calendar of our own (no gmtime, no TZ).
 */
#include "cron/cron.h"

#include <limits.h>
#include <stdio.h>

#include "util/errors.h"

/* ---- civil calendar (proleptic Gregorian, H. Hinnant's algorithms) ---- */

static int64_t floor_div(int64_t a, int64_t b)
{
    int64_t q = a / b;
    return q - (a % b < 0);
}

static int64_t days_from_civil(int64_t y, unsigned m, unsigned d)
{
    y -= m <= 2;
    const int64_t era = floor_div(y, 400);
    const unsigned yoe = (unsigned)(y - era * 400);
    const unsigned doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
    const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (int64_t)doe - 719468;
}

static void civil_from_days(int64_t z, int64_t *y, unsigned *m, unsigned *d)
{
    z += 719468;
    const int64_t era = floor_div(z, 146097);
    const unsigned doe = (unsigned)(z - era * 146097);
    const unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    const unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    const unsigned mp = (5 * doy + 2) / 153;
    *d = doy - (153 * mp + 2) / 5 + 1;
    *m = mp < 10 ? mp + 3 : mp - 9;
    *y = era * 400 + (int64_t)yoe + (*m <= 2);
}

static unsigned days_in_month(int64_t y, unsigned m)
{
    static const unsigned char days[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (m == 2 && y % 4 == 0 && (y % 100 != 0 || y % 400 == 0))
        return 29;
    return days[m - 1];
}

/* 0 = Sunday .. 6 = Saturday; day 0 (1970-01-01) was a Thursday. */
static unsigned weekday(int64_t days)
{
    return (unsigned)(days - floor_div(days + 4, 7) * 7 + 4);
}

/* The lowest set bit of mask at or above `from`, or 64 when there is none. */
static unsigned next_bit(uint64_t mask, unsigned from)
{
    if (from >= 64)
        return 64;
    mask >>= from;
    return mask ? from + (unsigned)__builtin_ctzll(mask) : 64;
}

/* ---- parser ---- */

enum { F_MINUTE, F_HOUR, F_MDAY, F_MONTH, F_WDAY, F_COUNT };

static const char *const month_names[] = {"JAN", "FEB", "MAR", "APR", "MAY", "JUN",
                                          "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"};
static const char *const wday_names[] = {"SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"};

static const struct field_desc {
    unsigned min, max;
    const char *range_msg;    /* a value outside [min, max] */
    const char *name_msg;     /* an unknown name, or letters in a numeric field */
    const char *const *names; /* names[i] is min + i, or NULL */
} fields[F_COUNT] = {
    {0, 59, "minute must be 0-59", "minute takes numbers only (0-59)", NULL},
    {0, 23, "hour must be 0-23", "hour takes numbers only (0-23)", NULL},
    {1, 31, "day of month must be 1-31", "day of month takes 1-31, L, LW, L-n or nW (no names)",
     NULL},
    {1, 12, "month must be 1-12 or JAN-DEC", "unknown month name (want JAN-DEC)", month_names},
    {1, 7, "day of week must be 1-7 (1 = Sunday) or SUN-SAT", "unknown day name (want SUN-SAT)",
     wday_names},
};

static const char msg_wday_zero[] =
    "day of week 0 is not valid: days run 1-7 with 1 = Sunday and 7 = Saturday";
static const char msg_unexpected[] = "unexpected character";
static const char msg_question[] = "'?' is not supported (Cloudflare rejects it): use *";
static const char msg_empty_item[] = "empty list item";

typedef struct parser {
    const char *s;
    size_t pos;
    size_t end; /* the end of the field being parsed */
    ag_cron_error_t *err;
} parser_t;

/* Everything one expression compiles to, in wide masks while parsing. */
typedef struct acc {
    uint64_t bits[F_COUNT]; /* plain values, bit v for value v (day of week: 1-7) */
    uint64_t wday_nth;
    uint32_t mdays_w, mdays_last;
    uint8_t wdays_last;
    uint8_t flags;
} acc_t;

static int fail(parser_t *p, size_t offset, const char *message)
{
    if (p->err) {
        p->err->message = message;
        p->err->offset = offset > UINT_MAX ? UINT_MAX : (unsigned)offset;
    }
    return AG_EINVALID;
}

static char upper(char c)
{
    return c >= 'a' && c <= 'z' ? (char)(c - 'a' + 'A') : c;
}

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

static bool is_alpha(char c)
{
    return upper(c) >= 'A' && upper(c) <= 'Z';
}

static bool at(const parser_t *p, char c)
{
    return p->pos < p->end && upper(p->s[p->pos]) == c;
}

static bool at_item_end(const parser_t *p)
{
    return p->pos == p->end || p->s[p->pos] == ',';
}

/* The message for whatever stands at p->pos where it does not belong. */
static int unexpected(parser_t *p, const char *missing)
{
    if (at_item_end(p))
        return fail(p, p->pos, missing);
    return fail(p, p->pos, p->s[p->pos] == '?' ? msg_question : msg_unexpected);
}

/* Reads decimal digits (saturating, so that a long run is just out of range).
 * @return the number of digits read. */
static size_t number(parser_t *p, unsigned *v)
{
    size_t start = p->pos;
    unsigned n = 0;
    while (p->pos < p->end && is_digit(p->s[p->pos])) {
        n = n * 10 + (unsigned)(p->s[p->pos] - '0');
        if (n > 9999)
            n = 9999;
        p->pos++;
    }
    *v = n;
    return p->pos - start;
}

/* A number or a name of field f, range-checked. */
static int value(parser_t *p, int f, unsigned *v)
{
    const struct field_desc *fd = &fields[f];
    size_t start = p->pos;
    if (p->pos < p->end && is_digit(p->s[p->pos])) {
        number(p, v);
        if (f == F_WDAY && *v == 0)
            return fail(p, start, msg_wday_zero);
        if (*v < fd->min || *v > fd->max)
            return fail(p, start, fd->range_msg);
        return 0;
    }
    if (p->pos < p->end && is_alpha(p->s[p->pos])) {
        if (fd->names != NULL && p->end - p->pos >= 3) {
            for (unsigned i = 0; i <= fd->max - fd->min; i++) {
                const char *nm = fd->names[i];
                if (upper(p->s[p->pos]) == nm[0] && upper(p->s[p->pos + 1]) == nm[1] &&
                    upper(p->s[p->pos + 2]) == nm[2]) {
                    *v = fd->min + i;
                    p->pos += 3;
                    return 0;
                }
            }
        }
        return fail(p, start, fd->name_msg);
    }
    return unexpected(p, fd->names ? "expected a number or a name" : "expected a number");
}

/* `*`, `a`, `a-b`, each with an optional `/n`; leaves p->pos after it. *single
 * says it was one value with no range or step (the L/W/# forms may follow),
 * *set holds its values. */
static int range(parser_t *p, int f, uint64_t *set, bool *single, unsigned *first)
{
    const struct field_desc *fd = &fields[f];
    size_t start = p->pos;
    unsigned lo, hi;
    bool star = false, is_range = false;
    int rc;
    if (at(p, '*')) {
        lo = fd->min;
        hi = fd->max;
        star = true;
        p->pos++;
    } else {
        rc = value(p, f, &lo);
        if (rc < 0)
            return rc;
        hi = lo;
        if (at(p, '-')) {
            p->pos++;
            rc = value(p, f, &hi);
            if (rc < 0)
                return rc;
            if (hi < lo)
                return fail(p, start, "reversed range: its start is after its end");
            is_range = true;
        }
    }
    *single = !star && !is_range;
    unsigned step = 1;
    if (at(p, '/')) {
        p->pos++;
        size_t sstart = p->pos;
        if (number(p, &step) == 0)
            return unexpected(p, "expected a step after '/'");
        if (step == 0)
            return fail(p, sstart, "step must be at least 1");
        if (step > fd->max - fd->min + 1)
            return fail(p, sstart, "step is larger than the field's range");
        if (*single)
            hi = fd->max; /* a/n: from a to the field's maximum */
        *single = false;
    }
    *first = lo;
    for (unsigned v = lo; v <= hi; v += step)
        *set |= (uint64_t)1 << v;
    return 0;
}

/* One item of the day-of-month field: a range, L, LW, L-n or nW. */
static int mday_item(parser_t *p, acc_t *a)
{
    if (at(p, 'L')) {
        p->pos++;
        if (at(p, 'W')) {
            p->pos++;
            a->flags |= AG__CRON_LW;
        } else if (at(p, '-')) {
            p->pos++;
            size_t nstart = p->pos;
            unsigned n;
            if (number(p, &n) == 0)
                return unexpected(p, "expected a number after L-");
            if (n > 30)
                return fail(p, nstart, "L-n takes n from 0 to 30");
            a->mdays_last |= (uint32_t)1 << n;
        } else {
            a->mdays_last |= 1;
        }
        return 0;
    }
    uint64_t set = 0;
    bool single;
    unsigned v;
    int rc = range(p, F_MDAY, &set, &single, &v);
    if (rc < 0)
        return rc;
    if (at(p, 'W')) {
        if (!single)
            return fail(p, p->pos, "W follows a single day of month (nW)");
        p->pos++;
        a->mdays_w |= (uint32_t)1 << v;
        return 0;
    }
    a->bits[F_MDAY] |= set;
    return 0;
}

/* One item of the day-of-week field: a range, a lone L, xL or x#n. */
static int wday_item(parser_t *p, acc_t *a)
{
    if (at(p, 'L')) {
        p->pos++;
        a->bits[F_WDAY] |= (uint64_t)1 << 7; /* a lone L is Saturday */
        return 0;
    }
    uint64_t set = 0;
    bool single;
    unsigned v;
    int rc = range(p, F_WDAY, &set, &single, &v);
    if (rc < 0)
        return rc;
    if (at(p, 'L') || at(p, '#')) {
        if (!single)
            return fail(p, p->pos, "L and # follow a single day of week (xL, x#n)");
        if (at(p, 'L')) {
            p->pos++;
            a->wdays_last |= (uint8_t)(1u << (v - 1));
            return 0;
        }
        p->pos++;
        size_t nstart = p->pos;
        unsigned n;
        if (number(p, &n) == 0)
            return unexpected(p, "expected a number after #");
        if (n < 1 || n > 5)
            return fail(p, nstart, "x#n takes n from 1 to 5");
        a->wday_nth |= (uint64_t)1 << (8 * (v - 1) + n);
        return 0;
    }
    a->bits[F_WDAY] |= set;
    return 0;
}

/* A comma-separated list of items, the whole of [p->pos, p->end). */
static int field(parser_t *p, int f, acc_t *a)
{
    for (;;) {
        if (at_item_end(p))
            return fail(p, p->pos, msg_empty_item);
        int rc;
        if (f == F_MDAY) {
            rc = mday_item(p, a);
        } else if (f == F_WDAY) {
            rc = wday_item(p, a);
        } else {
            bool single;
            unsigned v;
            rc = range(p, f, &a->bits[f], &single, &v);
        }
        if (rc < 0)
            return rc;
        if (!at_item_end(p))
            return unexpected(p, msg_unexpected);
        if (p->pos == p->end)
            return 0;
        p->pos++; /* the comma */
    }
}

static bool is_space(char c)
{
    return c == ' ' || c == '\t';
}

int ag_cron_parse(const char *expr, size_t len, ag_cron_t *out, ag_cron_error_t *err)
{
    static const char *const too_few[F_COUNT] = {
        "empty expression: want five fields (minute hour day-of-month month day-of-week)",
        "only one field: want five (minute hour day-of-month month day-of-week)",
        "only two fields: want five (minute hour day-of-month month day-of-week)",
        "only three fields: want five (minute hour day-of-month month day-of-week)",
        "only four fields: want five (minute hour day-of-month month day-of-week)",
    };
    parser_t p = {.s = expr, .pos = 0, .end = len, .err = err};
    size_t start[F_COUNT], end[F_COUNT];
    unsigned n = 0;
    size_t i = 0;
    while (i < len && is_space(expr[i]))
        i++;
    if (i < len && expr[i] == '@')
        return fail(&p, i, "macros such as @daily are not supported: write the five fields");
    while (i < len) {
        if (is_space(expr[i])) {
            i++;
            continue;
        }
        if (n == F_COUNT)
            return fail(&p, i,
                        "a sixth field: Cloudflare takes exactly five (minute hour "
                        "day-of-month month day-of-week), no seconds or years");
        start[n] = i;
        while (i < len && !is_space(expr[i]))
            i++;
        end[n++] = i;
    }
    if (n < F_COUNT)
        return fail(&p, len, too_few[n]);

    acc_t a = {0};
    for (int f = 0; f < F_COUNT; f++) {
        p.pos = start[f];
        p.end = end[f];
        int rc = field(&p, f, &a);
        if (rc < 0)
            return rc;
    }
    if (end[F_MDAY] - start[F_MDAY] == 1 && expr[start[F_MDAY]] == '*')
        a.flags |= AG__CRON_DOM_STAR;
    if (end[F_WDAY] - start[F_WDAY] == 1 && expr[start[F_WDAY]] == '*')
        a.flags |= AG__CRON_DOW_STAR;

    *out = (ag_cron_t){
        ._minutes = a.bits[F_MINUTE],
        ._wday_nth = a.wday_nth,
        ._hours = (uint32_t)a.bits[F_HOUR],
        ._mdays = (uint32_t)a.bits[F_MDAY],
        ._mdays_w = a.mdays_w,
        ._mdays_last = a.mdays_last,
        ._months = (uint16_t)a.bits[F_MONTH],
        ._wdays = (uint8_t)(a.bits[F_WDAY] >> 1), /* 1-7 -> bits 0-6 */
        ._wdays_last = a.wdays_last,
        ._flags = a.flags,
    };
    return 0;
}

/* ---- matching ---- */

/* The days of the month (bit d for day d) that the expression's day-of-month
 * L/W forms and plain days pick, given its length and the weekday of its 1st. */
static uint32_t mday_set(const ag_cron_t *c, unsigned last, unsigned w1)
{
    uint32_t set = c->_mdays;
    for (uint32_t b = c->_mdays_last; b != 0; b &= b - 1) {
        unsigned n = (unsigned)__builtin_ctz(b);
        if (n < last)
            set |= (uint32_t)1 << (last - n);
    }
    if (c->_flags & AG__CRON_LW) {
        unsigned w = (w1 + last - 1) % 7;
        set |= (uint32_t)1 << (w == 6 ? last - 1 : w == 0 ? last - 2 : last);
    }
    for (uint32_t b = c->_mdays_w; b != 0; b &= b - 1) {
        unsigned n = (unsigned)__builtin_ctz(b), d = n;
        if (n > last)
            continue; /* no day n this month, so no weekday nearest it */
        unsigned w = (w1 + n - 1) % 7;
        if (w == 6)
            d = n == 1 ? 3 : n - 1; /* Saturday: Friday before, unless that is last month */
        else if (w == 0)
            d = n == last ? n - 2 : n + 1; /* Sunday: Monday after, unless next month */
        set |= (uint32_t)1 << d;
    }
    return set;
}

/* The same for the day-of-week field: plain weekdays, xL and x#n. */
static uint32_t wday_set(const ag_cron_t *c, unsigned last, unsigned w1)
{
    uint32_t set = 0;
    for (unsigned w = 0; w < 7; w++) {
        unsigned first = 1 + (w + 7 - w1) % 7;
        if (c->_wdays >> w & 1)
            for (unsigned d = first; d <= last; d += 7)
                set |= (uint32_t)1 << d;
        if (c->_wdays_last >> w & 1)
            set |= (uint32_t)1 << (first + 7 * ((last - first) / 7));
        for (uint32_t b = (uint32_t)(c->_wday_nth >> (8 * w)) & 0x3e; b != 0; b &= b - 1) {
            unsigned d = first + 7 * ((unsigned)__builtin_ctz(b) - 1);
            if (d <= last)
                set |= (uint32_t)1 << d;
        }
    }
    return set;
}

/* The matching days of month m of year y, bit d for day d. Both day fields
 * restricted: either may match; one a bare '*': only the other counts. */
static uint32_t day_set(const ag_cron_t *c, int64_t y, unsigned m)
{
    unsigned last = days_in_month(y, m);
    uint32_t valid = (uint32_t)(((uint64_t)1 << (last + 1)) - 2);
    bool dom_star = c->_flags & AG__CRON_DOM_STAR, dow_star = c->_flags & AG__CRON_DOW_STAR;
    if (dom_star && dow_star)
        return valid;
    unsigned w1 = weekday(days_from_civil(y, m, 1));
    uint32_t set = 0;
    if (!dom_star)
        set |= mday_set(c, last, w1);
    if (!dow_star)
        set |= wday_set(c, last, w1);
    return set & valid;
}

static bool in_range(int64_t t_s)
{
    return t_s >= AG_CRON_MIN_S && t_s <= AG_CRON_MAX_S;
}

int64_t ag__cron_next_counted(const ag_cron_t *c, int64_t after_s, unsigned *steps)
{
    unsigned n = 0;
    int64_t found = -1;
    if (!in_range(after_s) || c->_minutes == 0 || c->_hours == 0 || c->_months == 0)
        goto done;
    int64_t t = floor_div(after_s, 60) + 1; /* the first candidate, in minutes */
    int64_t day = floor_div(t, 1440);
    unsigned mod = (unsigned)(t - day * 1440), h = mod / 60, mi = mod % 60, mo, d;
    int64_t y;
    civil_from_days(day, &y, &mo, &d);
    /* The calendar repeats every 400 years (146097 days, whole weeks): a
     * schedule with no match in that span has none at all. */
    const int64_t y_end = y + 400 < 9999 ? y + 400 : 9999;
    uint32_t days = 0;
    bool have_days = false;
    while (y <= y_end) {
        n++;
        if (!(c->_months >> mo & 1)) {
            unsigned m2 = next_bit(c->_months, mo + 1);
            if (m2 > 12) {
                y++;
                m2 = next_bit(c->_months, 1);
            }
            mo = m2;
            d = 1, h = 0, mi = 0;
            have_days = false;
            continue;
        }
        if (!have_days) {
            days = day_set(c, y, mo);
            have_days = true;
        }
        unsigned d2 = next_bit(days, d);
        if (d2 > 31) {
            if (++mo > 12) {
                mo = 1;
                y++;
            }
            d = 1, h = 0, mi = 0;
            have_days = false;
            continue;
        }
        if (d2 != d) {
            d = d2;
            h = 0, mi = 0;
        }
        unsigned h2 = next_bit(c->_hours, h);
        if (h2 > 23) {
            d++;
            h = 0, mi = 0;
            continue;
        }
        if (h2 != h) {
            h = h2;
            mi = 0;
        }
        unsigned m2 = next_bit(c->_minutes, mi);
        if (m2 > 59) {
            h++;
            mi = 0;
            continue;
        }
        found = ((days_from_civil(y, mo, d) * 24 + h) * 60 + m2) * 60;
        if (found > AG_CRON_MAX_S)
            found = -1;
        break;
    }
done:
    if (steps)
        *steps = n;
    return found;
}

int64_t ag_cron_next(const ag_cron_t *c, int64_t after_s)
{
    return ag__cron_next_counted(c, after_s, NULL);
}

bool ag_cron_matches(const ag_cron_t *c, int64_t t_s)
{
    if (!in_range(t_s))
        return false;
    int64_t t = floor_div(t_s, 60), day = floor_div(t, 1440), y;
    unsigned mod = (unsigned)(t - day * 1440), mo, d;
    civil_from_days(day, &y, &mo, &d);
    return (c->_months >> mo & 1) && (day_set(c, y, mo) >> d & 1) &&
           (c->_hours >> (mod / 60) & 1) && (c->_minutes >> (mod % 60) & 1);
}

int ag_cron_format_time(int64_t t_s, char *buf, size_t cap)
{
    if (cap < 21 || !in_range(t_s))
        return -1;
    int64_t day = floor_div(t_s, 86400), y;
    unsigned sec = (unsigned)(t_s - day * 86400), mo, d;
    civil_from_days(day, &y, &mo, &d);
    snprintf(buf, cap, "%04u-%02u-%02uT%02u:%02u:%02uZ", (unsigned)y, mo, d, sec / 3600,
             sec / 60 % 60, sec % 60);
    return 20;
}
