/* SPDX-License-Identifier: MIT
 *
 * template.c: parsing and rendering of task templates (see template.h). A parse
 * makes one allocation: the struct, the placeholders, the literal runs between
 * them (already unescaped) and a string pool holding a copy of the source and
 * every argument, NUL-terminated.
 */
#include "util/platform.h"

#include "cron/template.h"
#include "util/window.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <string.h>

#include "util/errors.h"

/* Longest usage window, as `aigate stats` takes it (obs/stats.c). */

struct ag_template {
    size_t nvars;
    ag_template_var_t *vars;
    ag_str_t *lits; /* nvars + 1 runs: lits[i] comes before vars[i], lits[nvars] last */
    const char *src;
    size_t srclen;
    bool time_only;
};

static const struct {
    const char *name;
    ag_template_kind_t kind;
} kinds[] = {
    {"date", AG_TEMPLATE_DATE},
    {"datetime", AG_TEMPLATE_DATETIME},
    {"scheduledTime", AG_TEMPLATE_SCHEDULED_TIME},
    {"kv", AG_TEMPLATE_KV},
    {"r2", AG_TEMPLATE_R2},
    {"usage", AG_TEMPLATE_USAGE},
    {"fetch", AG_TEMPLATE_FETCH},
};

const char *ag_template_kind_name(ag_template_kind_t kind)
{
    for (size_t i = 0; i < AG_ARRAY_LEN(kinds); i++)
        if (kinds[i].kind == kind)
            return kinds[i].name;
    return "?";
}

static bool is_time_kind(ag_template_kind_t k)
{
    return k == AG_TEMPLATE_DATE || k == AG_TEMPLATE_DATETIME || k == AG_TEMPLATE_SCHEDULED_TIME;
}

static bool is_blank(char c)
{
    return c == ' ' || c == '\t';
}

static void locate(const char *text, size_t len, size_t offset, uint32_t *line, uint32_t *col)
{
    uint32_t l = 1, c = 1;
    if (offset > len)
        offset = len;
    for (size_t i = 0; i < offset; i++) {
        unsigned char b = (unsigned char)text[i];
        if (b == '\n') {
            l++;
            c = 1;
        } else if ((b & 0xC0) != 0x80) { /* not a UTF-8 continuation byte */
            c++;
        }
    }
    *line = l;
    *col = c;
}

void ag_template_locate(const ag_template_t *t, size_t offset, uint32_t *line, uint32_t *col)
{
    locate(t->src, t->srclen, offset, line, col);
}

/* ---- parsing ---- */

typedef struct parser {
    const char *text;
    size_t len;
    ag_template_error_t *err;
    char *pool; /* next free byte of the string pool */
} parser_t;

__attribute__((format(printf, 4, 5))) static int fail(parser_t *p, int code, size_t offset,
                                                      const char *fmt, ...)
{
    if (p->err) {
        p->err->offset = offset;
        locate(p->text, p->len, offset, &p->err->line, &p->err->col);
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(p->err->message, sizeof(p->err->message), fmt, ap);
        va_end(ap);
    }
    return code;
}

/* Copies text[from, to) into the pool, NUL-terminated. */
static ag_str_t intern(parser_t *p, size_t from, size_t to)
{
    ag_str_t s = {p->pool, to - from};
    memcpy(p->pool, p->text + from, s.len);
    p->pool[s.len] = '\0';
    p->pool += s.len + 1;
    return s;
}

/* Trims blanks off [*from, *to). */
static void trim(const char *text, size_t *from, size_t *to)
{
    while (*from < *to && is_blank(text[*from]))
        (*from)++;
    while (*to > *from && is_blank(text[*to - 1]))
        (*to)--;
}

/* Names quoted in messages are cut to this many bytes. */
#define QUOTE_MAX 40

static int parse_window(parser_t *p, size_t from, size_t to, int64_t *out)
{
    const char *s = p->text;
    if (ag_parse_window(s + from, to - from, out) < 0)
        return fail(p, AG_EINVALID, from,
                    "bad usage window \"%.*s\": want a positive count and one unit, s, m, h or d "
                    "(30m, 24h, 7d), at most 100 years",
                    (int)(to - from < QUOTE_MAX ? to - from : QUOTE_MAX), s + from);
    return 0;
}

static bool has_prefix_ci(const char *s, size_t len, const char *lit)
{
    size_t n = strlen(lit);
    return len >= n && strncasecmp(s, lit, n) == 0;
}

static int check_url(parser_t *p, size_t from, size_t to)
{
    const char *s = p->text + from;
    size_t n = to - from;
    size_t scheme = has_prefix_ci(s, n, "http://") ? 7 : has_prefix_ci(s, n, "https://") ? 8 : 0;
    if (scheme == 0 || scheme == n || s[scheme] == '/' || s[scheme] == '?' || s[scheme] == '#')
        return fail(p, AG_EINVALID, from, "fetch needs an http:// or https:// URL with a host");
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c <= 0x20 || c == 0x7f)
            return fail(p, AG_EINVALID, from + i, "the URL contains a space or control character");
    }
    return 0;
}

static int check_binding(parser_t *p, size_t from, size_t to)
{
    for (size_t i = from; i < to; i++) {
        unsigned char c = (unsigned char)p->text[i];
        if (c <= 0x20 || c == 0x7f)
            return fail(p, AG_EINVALID, i,
                        "the binding name contains a space or control character");
    }
    return 0;
}

/* Parses the placeholder whose "{{" is at open and whose "}}" is at close. */
static int parse_var(parser_t *p, size_t open, size_t close, ag_template_var_t *v)
{
    const char *s = p->text;
    size_t from = open + 2, to = close;
    trim(s, &from, &to);
    const char *colon = memchr(s + from, ':', to - from);
    size_t name_end = colon ? (size_t)(colon - s) : to;
    size_t nfrom = from, nto = name_end;
    trim(s, &nfrom, &nto);
    if (nfrom == nto)
        return fail(p, AG_EINVALID, open, "empty variable name in \"{{...}}\"");
    size_t k = 0;
    while (k < AG_ARRAY_LEN(kinds) && !(strlen(kinds[k].name) == nto - nfrom &&
                                        memcmp(kinds[k].name, s + nfrom, nto - nfrom) == 0))
        k++;
    if (k == AG_ARRAY_LEN(kinds))
        return fail(p, AG_EINVALID, nfrom,
                    "unknown variable \"%.*s\" (known: date, datetime, scheduledTime, kv, r2, "
                    "usage, fetch)",
                    (int)(nto - nfrom < QUOTE_MAX ? nto - nfrom : QUOTE_MAX), s + nfrom);

    memset(v, 0, sizeof(*v));
    v->kind = kinds[k].kind;
    v->offset = v->binding_offset = v->arg_offset = open;
    v->binding = v->arg = ag_str("", 0);
    if (is_time_kind(v->kind)) {
        if (colon)
            return fail(p, AG_EINVALID, name_end, "{{%s}} takes no argument", kinds[k].name);
        return 0;
    }

    /* The argument: everything after the first ':' (kv/r2: binding ':' key). */
    size_t afrom = colon ? name_end + 1 : to, ato = to;
    trim(s, &afrom, &ato);
    if (v->kind == AG_TEMPLATE_USAGE || v->kind == AG_TEMPLATE_FETCH) {
        bool usage = v->kind == AG_TEMPLATE_USAGE;
        if (afrom == ato)
            return fail(p, AG_EINVALID, afrom,
                        usage ? "usage needs a window: {{usage:7d}}"
                              : "fetch needs a URL: {{fetch:https://...}}");
        int rc = usage ? parse_window(p, afrom, ato, &v->window_s) : check_url(p, afrom, ato);
        if (rc < 0)
            return rc;
        v->arg_offset = afrom;
        v->arg = intern(p, afrom, ato);
        return 0;
    }

    const char *colon2 = memchr(s + afrom, ':', ato - afrom);
    size_t bfrom = afrom, bto = colon2 ? (size_t)(colon2 - s) : ato;
    trim(s, &bfrom, &bto);
    if (bfrom == bto || !colon2)
        return fail(p, AG_EINVALID, bfrom == bto ? bfrom : ato,
                    "%s needs a binding and a key: {{%s:BINDING:KEY}}", kinds[k].name,
                    kinds[k].name);
    int rc = check_binding(p, bfrom, bto);
    if (rc < 0)
        return rc;
    size_t kfrom = (size_t)(colon2 - s) + 1, kto = ato;
    trim(s, &kfrom, &kto);
    if (kfrom == kto)
        return fail(p, AG_EINVALID, kfrom, "%s needs a key after the binding: {{%s:BINDING:KEY}}",
                    kinds[k].name, kinds[k].name);
    v->binding_offset = bfrom;
    v->arg_offset = kfrom;
    v->binding = intern(p, bfrom, bto);
    v->arg = intern(p, kfrom, kto);
    return 0;
}

/* Finds the "}}" that closes the "{{" at open. @return 0 and *close, or an error. */
static int find_close(parser_t *p, size_t open, size_t *close)
{
    const char *s = p->text;
    for (size_t k = open + 2; k < p->len; k++) {
        if (s[k] == '\n' || s[k] == '\r')
            break;
        if (k + 1 < p->len && s[k] == '}' && s[k + 1] == '}') {
            *close = k;
            return 0;
        }
        if (k + 1 < p->len && s[k] == '{' && s[k + 1] == '{')
            return fail(p, AG_EINVALID, k, "nested \"{{\" inside a placeholder is not supported");
    }
    return fail(p, AG_EINVALID, open,
                "unterminated \"{{\": a placeholder ends with \"}}\" on the same line (write a "
                "literal \"{{\" as \"\\{{\")");
}

static bool opens_at(const char *s, size_t len, size_t i)
{
    return i + 1 < len && s[i] == '{' && s[i + 1] == '{';
}

int ag_template_parse(const char *text, size_t len, ag_template_t **out, ag_template_error_t *err)
{
    parser_t p = {.text = text, .len = len, .err = err};
    *out = NULL;
    if (text == NULL && len > 0)
        return fail(&p, AG_EINVALID, 0, "no template text");
    if (len > AG_TEMPLATE_MAX_SIZE) {
        p.len = AG_TEMPLATE_MAX_SIZE; /* locate() need not walk past the limit */
        return fail(&p, AG_ETOOBIG, AG_TEMPLATE_MAX_SIZE, "template is larger than %d KiB",
                    AG_TEMPLATE_MAX_SIZE / 1024);
    }

    /* Upper bound on placeholders: one per "{{" (runs overlap, so this overcounts). */
    size_t nmax = 0;
    for (size_t i = 0; i + 1 < len && nmax < AG_TEMPLATE_MAX_VARS; i++)
        if (opens_at(text, len, i))
            nmax++;
    /* Pool: the source copy (len + 1); the literal runs and the arguments come from
     * disjoint parts of the source, so together they need at most len bytes; the
     * placeholders' texts at most len more; and three NULs a placeholder. */
    size_t pool_size = 3 * len + 1 + 3 * nmax;
    size_t size = sizeof(ag_template_t) + nmax * sizeof(ag_template_var_t) +
                  (nmax + 1) * sizeof(ag_str_t) + pool_size;
    char *mem = malloc(size);
    if (mem == NULL) {
        if (err) {
            memset(err, 0, sizeof(*err));
            snprintf(err->message, sizeof(err->message), "out of memory");
        }
        return -ENOMEM;
    }
    ag_template_t *t = (ag_template_t *)mem;
    t->nvars = 0;
    t->vars = (ag_template_var_t *)(mem + sizeof(*t));
    t->lits = (ag_str_t *)(t->vars + nmax);
    char *src = (char *)(t->lits + nmax + 1);
    if (len)
        memcpy(src, text, len);
    src[len] = '\0';
    t->src = src;
    t->srclen = len;
    t->time_only = true;
    p.pool = src + len + 1;

    char *lit = p.pool; /* the literal run being written */
    int rc = 0;
    size_t i = 0;
    while (i < len) {
        char c = text[i];
        if (c == '\\' && opens_at(text, len, i + 1)) { /* \{{ : a literal "{{" */
            *p.pool++ = '{';
            *p.pool++ = '{';
            i += 3;
            continue;
        }
        if (c == '\\' && i + 1 < len && text[i + 1] == '\\' && opens_at(text, len, i + 2)) {
            *p.pool++ = '\\'; /* \\{{ : one backslash, then a placeholder */
            i += 2;
            continue;
        }
        if (!opens_at(text, len, i) || opens_at(text, len, i + 1)) {
            *p.pool++ = c; /* text, or a '{' before the two that open */
            i++;
            continue;
        }
        if (t->nvars == AG_TEMPLATE_MAX_VARS) {
            rc = fail(&p, AG_ETOOBIG, i, "more than %d placeholders", AG_TEMPLATE_MAX_VARS);
            goto fail;
        }
        size_t close = 0;
        rc = find_close(&p, i, &close);
        if (rc < 0)
            goto fail;
        t->lits[t->nvars] = ag_str(lit, (size_t)(p.pool - lit));
        ag_template_var_t *v = &t->vars[t->nvars];
        rc = parse_var(&p, i, close, v);
        if (rc < 0)
            goto fail;
        v->text = intern(&p, i, close + 2);
        if (!is_time_kind(v->kind))
            t->time_only = false;
        t->nvars++;
        i = close + 2;
        lit = p.pool;
    }
    t->lits[t->nvars] = ag_str(lit, (size_t)(p.pool - lit));
    AG_ASSERT((size_t)(p.pool - src) <= pool_size);
    *out = t;
    return 0;

fail:
    free(mem);
    return rc;
}

void ag_template_free(ag_template_t *t)
{
    free(t);
}

size_t ag_template_count(const ag_template_t *t)
{
    return t->nvars;
}

const ag_template_var_t *ag_template_var(const ag_template_t *t, size_t i)
{
    AG_ASSERT(i < t->nvars);
    return &t->vars[i];
}

bool ag_template_is_time_only(const ag_template_t *t)
{
    return t->time_only;
}

/* ---- rendering ---- */

/* The proleptic Gregorian date of a day number (days since 1970-01-01), after
 * Howard Hinnant's civil_from_days: eras of 400 years (146097 days), with years
 * starting on March 1 so that the leap day is the last of its year. */
static void civil_from_days(int64_t z, int64_t *y, unsigned *m, unsigned *d)
{
    z += 719468; /* days from 0000-03-01 to 1970-01-01 */
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    unsigned doe = (unsigned)(z - era * 146097);                          /* [0, 146096] */
    unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365; /* [0, 399] */
    unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);               /* [0, 365] */
    unsigned mp = (5 * doy + 2) / 153;                                    /* [0, 11], 0 = March */
    *d = doy - (153 * mp + 2) / 5 + 1;
    *m = mp < 10 ? mp + 3 : mp - 9;
    *y = (int64_t)yoe + era * 400 + (*m <= 2);
}

static int64_t floor_div(int64_t a, int64_t b)
{
    int64_t q = a / b;
    return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q;
}

/* The three time variables of one scheduled time. */
typedef struct times {
    char date[32], datetime[48], ms[24];
    size_t date_len, datetime_len, ms_len;
} times_t;

static size_t put_year(char *out, size_t cap, int64_t y)
{
    /* Four digits within 0-9999 (ISO 8601); beyond, as many as it takes. */
    int n = y < 0 ? snprintf(out, cap, "-%04" PRIu64, (uint64_t)0 - (uint64_t)y)
                  : snprintf(out, cap, "%04" PRId64, y);
    return (size_t)n;
}

static void make_times(int64_t ms, times_t *tm)
{
    int64_t secs = floor_div(ms, 1000);
    int64_t days = floor_div(secs, 86400);
    int64_t sod = secs - days * 86400;
    int64_t y;
    unsigned mo, d;
    civil_from_days(days, &y, &mo, &d);
    size_t n = put_year(tm->date, sizeof(tm->date), y);
    n += (size_t)snprintf(tm->date + n, sizeof(tm->date) - n, "-%02u-%02u", mo, d);
    tm->date_len = n;
    memcpy(tm->datetime, tm->date, n);
    n += (size_t)snprintf(tm->datetime + n, sizeof(tm->datetime) - n, "T%02u:%02u:%02uZ",
                          (unsigned)(sod / 3600), (unsigned)(sod / 60 % 60), (unsigned)(sod % 60));
    tm->datetime_len = n;
    tm->ms_len = (size_t)snprintf(tm->ms, sizeof(tm->ms), "%" PRId64, ms);
}

int ag_template_render(const ag_template_t *t, int64_t scheduled_ms, const ag_str_t *values,
                       size_t nvalues, ag_buf_t *out, bool *missing)
{
    if (t == NULL || out == NULL)
        return AG_EINVALID;
    times_t tm;
    make_times(scheduled_ms, &tm);

    /* First the size, so that a render either appends everything or nothing. */
    size_t total = 0;
    int nmissing = 0;
    for (size_t i = 0; i <= t->nvars; i++) {
        total += t->lits[i].len; /* the literals together are at most 64 KiB */
        if (total > AG_TEMPLATE_MAX_OUTPUT)
            return AG_ETOOBIG;
        if (i == t->nvars)
            break;
        ag_str_t v = AG_STR_NULL;
        switch (t->vars[i].kind) {
        case AG_TEMPLATE_DATE:
            v = ag_str(tm.date, tm.date_len);
            break;
        case AG_TEMPLATE_DATETIME:
            v = ag_str(tm.datetime, tm.datetime_len);
            break;
        case AG_TEMPLATE_SCHEDULED_TIME:
            v = ag_str(tm.ms, tm.ms_len);
            break;
        default:
            if (values != NULL && i < nvalues)
                v = values[i];
            break;
        }
        if (missing)
            missing[i] = v.ptr == NULL;
        if (v.ptr == NULL) {
            nmissing++;
            continue;
        }
        if (v.len > AG_TEMPLATE_MAX_OUTPUT - total)
            return AG_ETOOBIG;
        total += v.len;
    }
    int rc = ag_buf_reserve(out, total);
    if (rc < 0)
        return rc;

    for (size_t i = 0; i <= t->nvars; i++) {
        ag_buf_append_str(out, t->lits[i]); /* cannot fail: reserved */
        if (i == t->nvars)
            break;
        switch (t->vars[i].kind) {
        case AG_TEMPLATE_DATE:
            ag_buf_append(out, tm.date, tm.date_len);
            break;
        case AG_TEMPLATE_DATETIME:
            ag_buf_append(out, tm.datetime, tm.datetime_len);
            break;
        case AG_TEMPLATE_SCHEDULED_TIME:
            ag_buf_append(out, tm.ms, tm.ms_len);
            break;
        default:
            if (values != NULL && i < nvalues && values[i].ptr != NULL)
                ag_buf_append_str(out, values[i]);
            break;
        }
    }
    return nmissing;
}
