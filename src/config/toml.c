/* SPDX-License-Identifier: MIT
 *
 * toml.c: the TOML 1.0.0 parser (see toml.h). A single recursive-descent pass
 * over the document builds the tree in an arena owned by the root, so freeing
 * is one call and an error half way leaves nothing to unwind.
 */
#include "util/platform.h"

#include "config/toml.h"
#include "util/hex.h"

#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <string.h>

#include "util/buf.h"
#include "util/errors.h"
#include "util/pool.h"
#include "util/utf.h"

/* Table and array flags. The redefinition rules of TOML come down to who
 * created a table: a [header], a dotted key (value of `gen`), an inline table,
 * or nobody yet (an intermediate of a header path, which a later [header] or
 * dotted key may still claim). */
enum {
    F_ROOT = 1 << 0,
    F_INLINE = 1 << 1, /* inline table: immutable once its '}' is read */
    F_HEADER = 1 << 2, /* defined by [header] or [[header]] */
    F_AOT = 1 << 3,    /* array made by [[header]]; arrays without it are literals */
};

/* Tables with this many keys get a hash index; below it a scan is faster. */
#define INDEX_MIN 8
#define DT_TEXT_MAX 40 /* "9999-12-31T23:59:60.123456789+23:59" and a NUL */
#define TOKEN_SHOW 48  /* at most this much of a bad token is quoted in an error */

typedef struct entry {
    const char *key; /* NUL-terminated copy, in the pool */
    size_t keylen;
    ag_toml_value_t *val;
} entry_t;

typedef struct dt_payload {
    ag_toml_datetime_t dt;
    char text[DT_TEXT_MAX];
} dt_payload_t;

struct ag_toml_value {
    uint8_t type;
    uint8_t flags;
    uint16_t depth;
    /* For tables: the key/value group (document section or inline table) whose
     * dotted keys created or extended it; 0 when no dotted key did. A dotted
     * key may only extend a table of its own group. */
    uint32_t gen;
    uint32_t line, col;
    union {
        struct {
            const char *ptr;
            size_t len;
        } str;
        int64_t i;
        double f;
        bool b;
        dt_payload_t *dt;
        struct {
            ag_toml_value_t **items;
            size_t len, cap;
        } arr;
        struct {
            entry_t *items;
            size_t len, cap;
            uint32_t *index; /* open addressing: entry index + 1, 0 = empty */
            size_t mask;
        } tab;
    } u;
};

/* The root owns the arena that holds the whole tree. */
typedef struct doc {
    ag_pool_t pool;
    ag_toml_value_t root;
} doc_t;

typedef struct keypart {
    const char *ptr; /* into the input (bare, literal) or the pool (basic) */
    size_t len;
    uint32_t line, col;
    bool pooled; /* ptr is already a NUL-terminated pool copy */
} keypart_t;

typedef struct parser {
    const unsigned char *s;
    size_t n;
    size_t pos;
    ag_pool_t *pool;
    ag_toml_error_t *err;
    bool failed;
    /* locate() resumes from here, so positions cost O(n) over a whole parse
     * as long as they are asked for in document order. */
    size_t loc_off;
    uint32_t loc_line, loc_col;
    ag_toml_value_t *root;
    ag_toml_value_t *cur; /* table of the current [section] */
    uint32_t cur_gen;
    uint32_t gen_next;
    /* Key parts of the keys being parsed; an inline table's keys stack on
     * top of the key it is the value of. */
    size_t ktop;
    keypart_t kstack[AG_TOML_MAX_DEPTH + 1];
    ag_buf_t scratch; /* decoded string being built */
} parser_t;

/* ---- errors and positions ------------------------------------------------ */

static void locate(parser_t *p, size_t off, uint32_t *line, uint32_t *col)
{
    if (off > p->n)
        off = p->n;
    if (off < p->loc_off) {
        p->loc_off = 0;
        p->loc_line = 1;
        p->loc_col = 1;
    }
    uint32_t ln = p->loc_line, cl = p->loc_col;
    for (size_t i = p->loc_off; i < off; i++) {
        unsigned char c = p->s[i];
        if (c == '\n') {
            if (ln < UINT32_MAX)
                ln++;
            cl = 1;
        } else if ((c & 0xC0) != 0x80 && cl < UINT32_MAX) {
            cl++;
        }
    }
    p->loc_off = off;
    p->loc_line = ln;
    p->loc_col = cl;
    *line = ln;
    *col = cl;
}

__attribute__((format(printf, 4, 0))) static int failv(parser_t *p, uint32_t line, uint32_t col,
                                                       const char *fmt, va_list ap)
{
    if (!p->failed) {
        p->failed = true;
        p->err->line = line;
        p->err->col = col;
        vsnprintf(p->err->message, sizeof(p->err->message), fmt, ap);
    }
    return -1;
}

__attribute__((format(printf, 4, 5))) static int fail_at(parser_t *p, uint32_t line, uint32_t col,
                                                         const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    failv(p, line, col, fmt, ap);
    va_end(ap);
    return -1;
}

__attribute__((format(printf, 3, 4))) static int fail(parser_t *p, size_t off, const char *fmt, ...)
{
    uint32_t line, col;
    locate(p, off, &line, &col);
    va_list ap;
    va_start(ap, fmt);
    failv(p, line, col, fmt, ap);
    va_end(ap);
    return -1;
}

static int fail_oom(parser_t *p)
{
    return fail_at(p, 0, 0, "out of memory");
}

/* Names the character at off for "expected X, found Y" messages. */
static const char *describe(const parser_t *p, size_t off, char *buf, size_t size)
{
    if (off >= p->n)
        return "end of input";
    unsigned c = p->s[off];
    if (c == '\n' || (c == '\r' && off + 1 < p->n && p->s[off + 1] == '\n'))
        return "end of line";
    if (c == ' ')
        return "space";
    if (c == '\t')
        return "tab";
    if (c > 0x20 && c < 0x7F) {
        snprintf(buf, size, "'%c'", (char)c);
        return buf;
    }
    if (c < 0x80) {
        snprintf(buf, size, "control character U+%04X", c);
        return buf;
    }
    unsigned cp = 0;
    size_t len = ag_utf8_decode(p->s + off, p->n - off, &cp);
    if (len == 0)
        return "invalid UTF-8";
    snprintf(buf, size, "'%.*s' (U+%04X)", (int)len, (const char *)p->s + off, cp);
    return buf;
}

static int fail_expected(parser_t *p, const char *what)
{
    char buf[32];
    return fail(p, p->pos, "expected %s, found %s", what, describe(p, p->pos, buf, sizeof(buf)));
}

static bool is_bare(int c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '-';
}

/* Writes parts[0..count) as a dotted key, quoting parts that are not bare,
 * for messages. Long keys are cut with "...". */
static const char *fmt_key(char *buf, size_t size, const keypart_t *parts, size_t count)
{
    size_t o = 0;
    const size_t limit = size - 4; /* room for "..." and the NUL */
    for (size_t i = 0; i < count && o < limit; i++) {
        const keypart_t *k = &parts[i];
        if (i > 0)
            buf[o++] = '.';
        bool bare = k->len > 0;
        for (size_t j = 0; j < k->len && bare; j++)
            bare = is_bare((unsigned char)k->ptr[j]);
        if (!bare && o < limit)
            buf[o++] = '"';
        for (size_t j = 0; j < k->len && o < limit; j++) {
            unsigned char c = (unsigned char)k->ptr[j];
            if (c < 0x20 || c == 0x7F || c == '"' || c == '\\') {
                int w = snprintf(buf + o, size - o, c < 0x20 || c == 0x7F ? "\\u%04X" : "\\%c", c);
                o += w > 0 ? (size_t)w : 0;
            } else {
                buf[o++] = (char)c;
            }
        }
        if (!bare && o < limit)
            buf[o++] = '"';
    }
    if (o >= limit) {
        o = limit;
        /* Never leave half a UTF-8 sequence before the "...". */
        size_t lead = o;
        while (lead > 0 && ((unsigned char)buf[lead - 1] & 0xC0) == 0x80)
            lead--;
        if (lead > 0 && (unsigned char)buf[lead - 1] >= 0xC0) {
            unsigned char c = (unsigned char)buf[--lead];
            size_t need = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : 2;
            if (o - lead < need)
                o = lead;
        }
        memcpy(buf + o, "...", 3);
        o += 3;
    }
    buf[o] = '\0';
    return buf;
}

static const char *type_article(const ag_toml_value_t *v)
{
    switch ((ag_toml_type_t)v->type) {
    case AG_TOML_STRING:
        return "a string";
    case AG_TOML_INTEGER:
        return "an integer";
    case AG_TOML_FLOAT:
        return "a float";
    case AG_TOML_BOOL:
        return "a boolean";
    case AG_TOML_DATETIME:
        return "a date-time";
    case AG_TOML_DATETIME_LOCAL:
        return "a local date-time";
    case AG_TOML_DATE_LOCAL:
        return "a local date";
    case AG_TOML_TIME_LOCAL:
        return "a local time";
    case AG_TOML_ARRAY:
        return (v->flags & F_AOT) ? "an array of tables" : "an array";
    case AG_TOML_TABLE:
        return (v->flags & F_INLINE) ? "an inline table" : "a table";
    }
    return "a value";
}

/* ---- tree building ------------------------------------------------------- */

static ag_toml_value_t *new_value(parser_t *p, ag_toml_type_t type, uint32_t line, uint32_t col)
{
    ag_toml_value_t *v = ag_pool_alloc(p->pool, sizeof(*v));
    memset(v, 0, sizeof(*v));
    v->type = (uint8_t)type;
    v->line = line;
    v->col = col;
    return v;
}

static int check_depth(parser_t *p, size_t depth, uint32_t line, uint32_t col)
{
    if (depth > AG_TOML_MAX_DEPTH)
        return fail_at(p, line, col, "nesting is deeper than %d levels", AG_TOML_MAX_DEPTH);
    return 0;
}

static uint64_t hash_key(const char *k, size_t n)
{
    /* FNV-1a: keys come from a config file, not from an adversary who could
     * aim collisions at it, and a collision only costs time. */
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)k[i];
        h *= 1099511628211ULL;
    }
    return h;
}

static ag_toml_value_t *table_find(const ag_toml_value_t *t, const char *key, size_t len)
{
    const entry_t *items = t->u.tab.items;
    if (t->u.tab.index) {
        size_t mask = t->u.tab.mask;
        for (size_t h = (size_t)hash_key(key, len) & mask;; h = (h + 1) & mask) {
            uint32_t slot = t->u.tab.index[h];
            if (slot == 0)
                return NULL;
            const entry_t *e = &items[slot - 1];
            if (e->keylen == len && memcmp(e->key, key, len) == 0)
                return e->val;
        }
    }
    for (size_t i = 0; i < t->u.tab.len; i++) {
        if (items[i].keylen == len && memcmp(items[i].key, key, len) == 0)
            return items[i].val;
    }
    return NULL;
}

static void index_insert(ag_toml_value_t *t, size_t i)
{
    const entry_t *e = &t->u.tab.items[i];
    size_t mask = t->u.tab.mask;
    size_t h = (size_t)hash_key(e->key, e->keylen) & mask;
    while (t->u.tab.index[h] != 0)
        h = (h + 1) & mask;
    t->u.tab.index[h] = (uint32_t)(i + 1);
}

/* Adds key -> v to t; the caller has checked that the key is new. */
static int table_put(parser_t *p, ag_toml_value_t *t, const keypart_t *k, ag_toml_value_t *v)
{
    size_t len = t->u.tab.len;
    if (len >= UINT32_MAX - 1)
        return fail_at(p, k->line, k->col, "too many keys in one table");
    if (len == t->u.tab.cap) {
        size_t cap = len ? len * 2 : 4;
        entry_t *items = ag_pool_alloc(p->pool, cap * sizeof(*items));
        if (len)
            memcpy(items, t->u.tab.items, len * sizeof(*items));
        t->u.tab.items = items;
        t->u.tab.cap = cap;
    }
    entry_t *e = &t->u.tab.items[len];
    e->key = k->pooled ? k->ptr : ag_pool_strndup(p->pool, k->ptr, k->len);
    e->keylen = k->len;
    e->val = v;
    t->u.tab.len = ++len;
    if (len < INDEX_MIN)
        return 0;
    /* Keep the load at or under a half so probes stay short and one slot is
     * always free (table_find relies on it to stop). */
    if (t->u.tab.index == NULL || len * 2 > t->u.tab.mask + 1) {
        size_t slots = 16;
        while (slots < len * 4)
            slots *= 2;
        t->u.tab.index = ag_pool_alloc(p->pool, slots * sizeof(uint32_t));
        memset(t->u.tab.index, 0, slots * sizeof(uint32_t));
        t->u.tab.mask = slots - 1;
        for (size_t i = 0; i < len; i++)
            index_insert(t, i);
    } else {
        index_insert(t, len - 1);
    }
    return 0;
}

static void array_push(parser_t *p, ag_toml_value_t *a, ag_toml_value_t *v)
{
    size_t len = a->u.arr.len;
    if (len == a->u.arr.cap) {
        size_t cap = len ? len * 2 : 4;
        ag_toml_value_t **items = ag_pool_alloc(p->pool, cap * sizeof(*items));
        if (len)
            memcpy(items, a->u.arr.items, len * sizeof(*items));
        a->u.arr.items = items;
        a->u.arr.cap = cap;
    }
    a->u.arr.items[len] = v;
    a->u.arr.len = len + 1;
}

static int next_gen(parser_t *p, uint32_t *gen)
{
    /* 2^32 groups need far more input than anyone will feed a config parser,
     * but wrapping would silently weaken the redefinition checks. */
    if (p->gen_next == UINT32_MAX)
        return fail(p, p->pos, "document has too many tables");
    *gen = ++p->gen_next;
    return 0;
}

/* Inserts v at the dotted key k[0..nk) relative to table t, for a key/value
 * line of group gen. */
static int insert_dotted(parser_t *p, ag_toml_value_t *t, const keypart_t *k, size_t nk,
                         ag_toml_value_t *v, uint32_t gen)
{
    char kbuf[128];
    for (size_t i = 0; i + 1 < nk; i++) {
        ag_toml_value_t *c = table_find(t, k[i].ptr, k[i].len);
        if (c == NULL) {
            c = new_value(p, AG_TOML_TABLE, k[i].line, k[i].col);
            c->depth = (uint16_t)(t->depth + 1);
            c->gen = gen;
            if (table_put(p, t, &k[i], c) < 0)
                return -1;
        } else if (c->type != AG_TOML_TABLE) {
            return fail_at(p, k[i].line, k[i].col,
                           "cannot add keys to '%s': it is %s (defined at line %u, column %u)",
                           fmt_key(kbuf, sizeof(kbuf), k, i + 1), type_article(c), c->line, c->col);
        } else if (c->flags & F_INLINE) {
            return fail_at(p, k[i].line, k[i].col,
                           "cannot add keys to '%s': inline tables are immutable "
                           "(defined at line %u, column %u)",
                           fmt_key(kbuf, sizeof(kbuf), k, i + 1), c->line, c->col);
        } else if ((c->flags & F_HEADER) || (c->gen != 0 && c->gen != gen)) {
            return fail_at(p, k[i].line, k[i].col,
                           "cannot add keys to table '%s' with a dotted key here: it was "
                           "defined at line %u, column %u",
                           fmt_key(kbuf, sizeof(kbuf), k, i + 1), c->line, c->col);
        } else {
            c->gen = gen;
        }
        t = c;
    }
    const keypart_t *last = &k[nk - 1];
    const ag_toml_value_t *old = table_find(t, last->ptr, last->len);
    if (old != NULL)
        return fail_at(p, last->line, last->col,
                       "duplicate key '%s' (first defined at line %u, column %u)",
                       fmt_key(kbuf, sizeof(kbuf), k, nk), old->line, old->col);
    return table_put(p, t, last, v);
}

/* ---- lexical helpers ----------------------------------------------------- */

static int peek(const parser_t *p, size_t k)
{
    return p->pos + k < p->n ? p->s[p->pos + k] : -1;
}

static void skip_ws(parser_t *p)
{
    while (p->pos < p->n && (p->s[p->pos] == ' ' || p->s[p->pos] == '\t'))
        p->pos++;
}

static bool is_control(unsigned c)
{
    return (c < 0x20 && c != '\t') || c == 0x7F;
}

/* At '#': skips the comment up to, not including, the end of line. */
static int skip_comment(parser_t *p)
{
    size_t i = p->pos + 1;
    for (; i < p->n; i++) {
        unsigned c = p->s[i];
        if (c == '\n' || (c == '\r' && i + 1 < p->n && p->s[i + 1] == '\n'))
            break;
        if (is_control(c))
            return fail(p, i, "control character U+%04X is not allowed in a comment", c);
    }
    p->pos = i;
    return 0;
}

/* Consumes one LF or CRLF. @return 1 if it did, 0 if none is here, -1 on a
 * lone CR. */
static int eat_newline(parser_t *p)
{
    int c = peek(p, 0);
    if (c == '\n') {
        p->pos++;
        return 1;
    }
    if (c == '\r') {
        if (peek(p, 1) == '\n') {
            p->pos += 2;
            return 1;
        }
        return fail(p, p->pos, "carriage return not followed by a line feed");
    }
    return 0;
}

/* Whitespace, comments and newlines, as allowed between array elements. */
static int skip_blank(parser_t *p)
{
    for (;;) {
        skip_ws(p);
        int c = peek(p, 0);
        if (c == '#') {
            if (skip_comment(p) < 0)
                return -1;
            continue;
        }
        int rc = eat_newline(p);
        if (rc < 0)
            return -1;
        if (rc == 0)
            return 0;
    }
}

/* After a key/value or a header: optional whitespace and comment, then the
 * end of the line or of the input. */
static int expect_eol(parser_t *p)
{
    skip_ws(p);
    if (peek(p, 0) == '#' && skip_comment(p) < 0)
        return -1;
    if (p->pos >= p->n)
        return 0;
    int rc = eat_newline(p);
    if (rc != 0)
        return rc < 0 ? -1 : 0;
    return fail_expected(p, "end of line");
}

/* ---- strings ------------------------------------------------------------- */

static int sappend(parser_t *p, const void *data, size_t len)
{
    if (ag_buf_append(&p->scratch, data, len) < 0)
        return fail_oom(p);
    return 0;
}

static size_t utf8_encode(unsigned cp, char out[4])
{
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* At the backslash of \uXXXX or \UXXXXXXXX. */
static int unicode_escape(parser_t *p, size_t digits)
{
    size_t at = p->pos;
    unsigned cp = 0;
    for (size_t i = 0; i < digits; i++) {
        int h = ag_hex_digit(peek(p, 2 + i));
        if (h < 0)
            return fail(p, at, "\\%c escape needs %zu hexadecimal digits", p->s[at + 1], digits);
        cp = (cp << 4) | (unsigned)h;
    }
    if (cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
        return fail(p, at, "escape \\%c%.*s is not a Unicode scalar value", p->s[at + 1],
                    (int)digits, (const char *)p->s + at + 2);
    char enc[4];
    p->pos += 2 + digits;
    return sappend(p, enc, utf8_encode(cp, enc));
}

/* At the backslash inside a basic string. */
static int escape(parser_t *p, bool ml)
{
    int e = peek(p, 1);
    const char *rep = NULL;
    switch (e) {
    case 'b':
        rep = "\b";
        break;
    case 't':
        rep = "\t";
        break;
    case 'n':
        rep = "\n";
        break;
    case 'f':
        rep = "\f";
        break;
    case 'r':
        rep = "\r";
        break;
    case '"':
        rep = "\"";
        break;
    case '\\':
        rep = "\\";
        break;
    case 'u':
        return unicode_escape(p, 4);
    case 'U':
        return unicode_escape(p, 8);
    default:
        break;
    }
    if (rep) {
        p->pos += 2;
        return sappend(p, rep, 1);
    }
    if (ml && (e == ' ' || e == '\t' || e == '\n' || e == '\r')) {
        /* Line-ending backslash: only whitespace may follow it on its line;
         * it swallows that, the newline, and all blank space after. */
        size_t at = p->pos;
        p->pos++;
        skip_ws(p);
        int c = peek(p, 0);
        if (c != '\n' && !(c == '\r' && peek(p, 1) == '\n'))
            return fail(p, at, "a backslash followed by whitespace must end the line");
        for (;;) {
            skip_ws(p);
            int rc = eat_newline(p);
            if (rc < 0)
                return -1;
            if (rc == 0)
                return 0;
        }
    }
    if (e < 0)
        return fail(p, p->pos, "unterminated string");
    char buf[32];
    return fail(p, p->pos, "invalid escape: backslash followed by %s",
                describe(p, p->pos + 1, buf, sizeof(buf)));
}

/* Lexes a string of either quote kind at p->pos into p->scratch.
 * @param allow_ml  false for keys, which cannot be multi-line */
static int lex_string(parser_t *p, bool allow_ml)
{
    const unsigned char q = p->s[p->pos];
    const bool basic = q == '"';
    const size_t open = p->pos;
    const bool ml = peek(p, 1) == q && peek(p, 2) == q;
    ag_buf_reset(&p->scratch);
    if (ml) {
        if (!allow_ml)
            return fail(p, open, "a multi-line string cannot be a key");
        p->pos += 3;
        /* A newline right after the opening delimiter is trimmed. */
        if (eat_newline(p) < 0)
            return -1;
    } else {
        p->pos++;
    }
    for (;;) {
        /* Copy the run of ordinary bytes in one go. */
        size_t run = p->pos;
        while (run < p->n) {
            unsigned c = p->s[run];
            if (c == q || (basic && c == '\\') || is_control(c))
                break;
            run++;
        }
        if (run > p->pos && sappend(p, p->s + p->pos, run - p->pos) < 0)
            return -1;
        p->pos = run;
        if (p->pos >= p->n)
            return fail(p, open, "unterminated string (it starts here)");
        unsigned c = p->s[p->pos];
        if (c == q) {
            if (!ml) {
                p->pos++;
                return 0;
            }
            size_t nq = 0;
            while (peek(p, nq) == q)
                nq++;
            if (nq < 3) {
                if (sappend(p, p->s + p->pos, nq) < 0)
                    return -1;
                p->pos += nq;
                continue;
            }
            /* Up to two quotes may sit just inside the closing delimiter. */
            if (nq > 5)
                return fail(p, p->pos + 5, "too many quotes at the end of a multi-line string");
            if (sappend(p, p->s + p->pos, nq - 3) < 0)
                return -1;
            p->pos += nq;
            return 0;
        }
        if (c == '\\') {
            if (escape(p, ml) < 0)
                return -1;
            continue;
        }
        if (ml && (c == '\n' || (c == '\r' && peek(p, 1) == '\n'))) {
            p->pos += c == '\r' ? 2 : 1;
            if (sappend(p, "\n", 1) < 0)
                return -1;
            continue;
        }
        if (c == '\n' || (c == '\r' && peek(p, 1) == '\n'))
            return fail(p, p->pos, "string is not closed before the end of the line");
        return fail(p, p->pos, "control character U+%04X must be escaped in a string", c);
    }
}

/* ---- keys ---------------------------------------------------------------- */

/* Parses a (dotted) key and pushes its parts on p->kstack. Leaves p->pos
 * after the whitespace that follows the key. */
static int parse_key(parser_t *p)
{
    for (;;) {
        if (p->ktop >= AG_TOML_MAX_DEPTH + 1)
            return fail(p, p->pos, "key has more than %d parts", AG_TOML_MAX_DEPTH);
        keypart_t *k = &p->kstack[p->ktop];
        locate(p, p->pos, &k->line, &k->col);
        int c = peek(p, 0);
        if (is_bare(c)) {
            size_t start = p->pos;
            while (p->pos < p->n && is_bare(p->s[p->pos]))
                p->pos++;
            k->ptr = (const char *)p->s + start;
            k->len = p->pos - start;
            k->pooled = false;
        } else if (c == '"' || c == '\'') {
            if (lex_string(p, false) < 0)
                return -1;
            k->len = p->scratch.len;
            k->ptr = ag_pool_strndup(p->pool, p->scratch.data, p->scratch.len);
            k->pooled = true;
        } else {
            return fail_expected(p, "a key");
        }
        p->ktop++;
        skip_ws(p);
        if (peek(p, 0) != '.')
            return 0;
        p->pos++;
        skip_ws(p);
    }
}

/* ---- scalars ------------------------------------------------------------- */

static bool is_digit(int c)
{
    return c >= '0' && c <= '9';
}

static bool is_token(int c)
{
    return is_bare(c) || c == '+' || c == '.' || c == ':';
}

static int digit_value(int c, int radix)
{
    int v = ag_hex_digit(c);
    return v >= 0 && v < radix ? v : -1;
}

/* DIGIT *( ["_"] DIGIT ) at t[*i].
 * @return digits consumed, 0 when t[*i] is no digit, -1 when an underscore is
 *         not between two digits */
static int scan_digits(const char *t, size_t len, size_t *i, int radix)
{
    size_t j = *i;
    int count = 0;
    if (j >= len || digit_value((unsigned char)t[j], radix) < 0)
        return 0;
    while (j < len) {
        if (digit_value((unsigned char)t[j], radix) >= 0) {
            j++;
            count = count < INT32_MAX ? count + 1 : count;
        } else if (t[j] == '_') {
            if (j + 1 >= len || digit_value((unsigned char)t[j + 1], radix) < 0) {
                *i = j;
                return -1;
            }
            j++;
        } else {
            break;
        }
    }
    *i = j;
    return count;
}

static const char *digits_why(int rc, const char *where)
{
    return rc < 0 ? "'_' must sit between two digits" : where;
}

static ag_toml_value_t *bad_token(parser_t *p, const char *what, const char *t, size_t len,
                                  const char *why, uint32_t line, uint32_t col)
{
    int show = len > TOKEN_SHOW ? TOKEN_SHOW : (int)len;
    fail_at(p, line, col, "invalid %s '%.*s%s': %s", what, show, t, len > TOKEN_SHOW ? "..." : "",
            why);
    return NULL;
}

static ag_toml_value_t *parse_number(parser_t *p, const char *t, size_t len, uint32_t line,
                                     uint32_t col)
{
    size_t i = 0;
    bool neg = false, sign = false;
    if (t[0] == '+' || t[0] == '-') {
        sign = true;
        neg = t[0] == '-';
        i = 1;
    }
    if (len - i == 3 && (memcmp(t + i, "inf", 3) == 0 || memcmp(t + i, "nan", 3) == 0)) {
        ag_toml_value_t *v = new_value(p, AG_TOML_FLOAT, line, col);
        double f = t[i] == 'i' ? (double)INFINITY : (double)NAN;
        v->u.f = neg ? -f : f;
        return v;
    }
    if (i + 1 < len && t[i] == '0' && (t[i + 1] == 'x' || t[i + 1] == 'o' || t[i + 1] == 'b')) {
        int radix = t[i + 1] == 'x' ? 16 : t[i + 1] == 'o' ? 8 : 2;
        if (sign)
            return bad_token(p, "integer", t, len,
                             "hexadecimal, octal and binary integers take no sign", line, col);
        size_t j = i + 2;
        int rc = scan_digits(t, len, &j, radix);
        if (rc <= 0)
            return bad_token(p, "integer", t, len, digits_why(rc, "expected a digit after prefix"),
                             line, col);
        if (j != len)
            return bad_token(p, "integer", t, len, "invalid digit", line, col);
        uint64_t acc = 0;
        for (size_t k = i + 2; k < len; k++) {
            if (t[k] == '_')
                continue;
            unsigned d = (unsigned)digit_value((unsigned char)t[k], radix);
            if (acc > ((uint64_t)INT64_MAX - d) / (unsigned)radix)
                return bad_token(p, "integer", t, len, "does not fit in 64 bits", line, col);
            acc = acc * (unsigned)radix + d;
        }
        ag_toml_value_t *v = new_value(p, AG_TOML_INTEGER, line, col);
        v->u.i = (int64_t)acc;
        return v;
    }

    const char *what = "integer";
    size_t istart = i;
    int rc = scan_digits(t, len, &i, 10);
    if (rc <= 0)
        return bad_token(p, "number", t, len, digits_why(rc, "expected a digit"), line, col);
    bool is_float = false;
    if (i < len && t[i] == '.') {
        is_float = true;
        i++;
        rc = scan_digits(t, len, &i, 10);
        if (rc <= 0)
            return bad_token(p, "float", t, len, digits_why(rc, "expected a digit after '.'"), line,
                             col);
    }
    if (i < len && (t[i] == 'e' || t[i] == 'E')) {
        is_float = true;
        i++;
        if (i < len && (t[i] == '+' || t[i] == '-'))
            i++;
        rc = scan_digits(t, len, &i, 10);
        if (rc <= 0)
            return bad_token(p, "float", t, len, digits_why(rc, "expected a digit in the exponent"),
                             line, col);
    }
    if (is_float)
        what = "float";
    if (i != len)
        return bad_token(p, is_float ? "float" : "number", t, len, "unexpected character", line,
                         col);
    if (t[istart] == '0' && istart + 1 < len && is_digit(t[istart + 1]))
        return bad_token(p, what, t, len, "leading zeros are not allowed", line, col);
    if (t[istart] == '0' && istart + 1 < len && t[istart + 1] == '_')
        return bad_token(p, what, t, len, "leading zeros are not allowed", line, col);

    if (!is_float) {
        const uint64_t limit = neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;
        uint64_t acc = 0;
        for (size_t k = istart; k < len; k++) {
            if (t[k] == '_')
                continue;
            unsigned d = (unsigned)(t[k] - '0');
            if (acc > (limit - d) / 10)
                return bad_token(p, "integer", t, len, "does not fit in 64 bits", line, col);
            acc = acc * 10 + d;
        }
        ag_toml_value_t *v = new_value(p, AG_TOML_INTEGER, line, col);
        v->u.i = neg ? (acc > (uint64_t)INT64_MAX ? INT64_MIN : -(int64_t)acc) : (int64_t)acc;
        return v;
    }

    /* The syntax is checked, so strtod() sees plain decimal text. */
    ag_buf_reset(&p->scratch);
    for (size_t k = 0; k < len; k++) {
        if (t[k] != '_' && sappend(p, t + k, 1) < 0)
            return NULL;
    }
    const char *z = ag_buf_cstr(&p->scratch);
    if (z == NULL) {
        fail_oom(p);
        return NULL;
    }
    ag_toml_value_t *v = new_value(p, AG_TOML_FLOAT, line, col);
    v->u.f = strtod(z, NULL);
    return v;
}

static bool digits_at(const char *t, size_t len, size_t i, size_t count, int *out)
{
    if (i + count > len)
        return false;
    int v = 0;
    for (size_t k = 0; k < count; k++) {
        if (!is_digit((unsigned char)t[i + k]))
            return false;
        v = v * 10 + (t[i + k] - '0');
    }
    *out = v;
    return true;
}

static int days_in_month(int year, int month)
{
    static const int days[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (month == 2 && year % 4 == 0 && (year % 100 != 0 || year % 400 == 0))
        return 29;
    return days[month - 1];
}

static char *put_num(char *o, int v, int width)
{
    for (int k = width - 1; k >= 0; k--) {
        o[k] = (char)('0' + v % 10);
        v /= 10;
    }
    return o + width;
}

static ag_toml_value_t *parse_datetime(parser_t *p, const char *t, size_t len, uint32_t line,
                                       uint32_t col)
{
    ag_toml_datetime_t dt;
    memset(&dt, 0, sizeof(dt));
    bool has_date = false, has_time = false, has_off = false, zulu = false;
    size_t i = 0, frac = 0, frac_len = 0;
    const char *why = NULL;
    int sign = 1;

    /* No '-' at all: a local time, however malformed. */
    bool need_time = (len >= 3 && t[2] == ':') || memchr(t, '-', len) == NULL;
    if (!need_time) {
        if (!(digits_at(t, len, 0, 4, &dt.year) && len > 4 && t[4] == '-' &&
              digits_at(t, len, 5, 2, &dt.month) && len > 7 && t[7] == '-' &&
              digits_at(t, len, 8, 2, &dt.day)))
            why = "expected a date as YYYY-MM-DD";
        else if (dt.month < 1 || dt.month > 12)
            why = "month out of range";
        else if (dt.day < 1 || dt.day > days_in_month(dt.year, dt.month))
            why = "day out of range for the month";
        has_date = true;
        i = 10;
        if (!why && i < len) {
            if (t[i] == 'T' || t[i] == 't' || t[i] == ' ') {
                i++;
                need_time = true;
            } else {
                why = "unexpected character after the date";
            }
        }
    }
    if (!why && need_time) {
        has_time = true;
        if (!(digits_at(t, len, i, 2, &dt.hour) && i + 2 < len && t[i + 2] == ':' &&
              digits_at(t, len, i + 3, 2, &dt.minute) && i + 5 < len && t[i + 5] == ':' &&
              digits_at(t, len, i + 6, 2, &dt.second)))
            why = "expected a time as HH:MM:SS";
        else if (dt.hour > 23)
            why = "hour out of range";
        else if (dt.minute > 59)
            why = "minute out of range";
        else if (dt.second > 60)
            why = "second out of range";
        i += 8;
        if (!why && i < len && t[i] == '.') {
            frac = ++i;
            while (i < len && is_digit((unsigned char)t[i]))
                i++;
            frac_len = i - frac;
            if (frac_len == 0)
                why = "expected digits after '.'";
            for (size_t k = 0; k < 9; k++)
                dt.nanosecond = dt.nanosecond * 10 + (k < frac_len ? t[frac + k] - '0' : 0);
            if (frac_len > 9)
                frac_len = 9; /* truncated, as the spec asks */
        }
        if (!why && has_date && i < len) {
            int oh = 0, om = 0;
            has_off = true;
            if (t[i] == 'Z' || t[i] == 'z') {
                zulu = true;
                i++;
            } else if ((t[i] == '+' || t[i] == '-') && digits_at(t, len, i + 1, 2, &oh) &&
                       i + 3 < len && t[i + 3] == ':' && digits_at(t, len, i + 4, 2, &om)) {
                sign = t[i] == '-' ? -1 : 1;
                if (oh > 23 || om > 59)
                    why = "offset out of range";
                dt.offset_minutes = sign * (oh * 60 + om);
                i += 6;
            } else {
                why = "expected Z or an offset as +HH:MM";
            }
        }
    }
    if (!why && i != len)
        why = "unexpected trailing characters";
    if (why)
        return bad_token(p, "date-time", t, len, why, line, col);

    ag_toml_type_t type = has_date && has_time
                              ? (has_off ? AG_TOML_DATETIME : AG_TOML_DATETIME_LOCAL)
                              : (has_date ? AG_TOML_DATE_LOCAL : AG_TOML_TIME_LOCAL);
    ag_toml_value_t *v = new_value(p, type, line, col);
    dt_payload_t *pl = ag_pool_alloc(p->pool, sizeof(*pl));
    pl->dt = dt;
    char *o = pl->text;
    if (has_date) {
        o = put_num(o, dt.year, 4);
        *o++ = '-';
        o = put_num(o, dt.month, 2);
        *o++ = '-';
        o = put_num(o, dt.day, 2);
        if (has_time)
            *o++ = 'T';
    }
    if (has_time) {
        o = put_num(o, dt.hour, 2);
        *o++ = ':';
        o = put_num(o, dt.minute, 2);
        *o++ = ':';
        o = put_num(o, dt.second, 2);
        if (frac_len) {
            *o++ = '.';
            memcpy(o, t + frac, frac_len);
            o += frac_len;
        }
    }
    if (has_off) {
        if (zulu) {
            *o++ = 'Z';
        } else {
            int m = dt.offset_minutes < 0 ? -dt.offset_minutes : dt.offset_minutes;
            *o++ = sign < 0 ? '-' : '+';
            o = put_num(o, m / 60, 2);
            *o++ = ':';
            o = put_num(o, m % 60, 2);
        }
    }
    *o = '\0';
    v->u.dt = pl;
    return v;
}

/* Numbers, booleans, inf/nan and dates: reads the maximal run of token bytes
 * and decides from its shape. */
static ag_toml_value_t *parse_token(parser_t *p, uint32_t line, uint32_t col)
{
    size_t start = p->pos, end = p->pos;
    while (end < p->n && is_token(p->s[end]))
        end++;
    const char *t = (const char *)p->s + start;
    /* A space may separate date and time: "1979-05-27 07:32:00". */
    if (end - start == 10 && t[4] == '-' && t[7] == '-' && end + 3 < p->n && p->s[end] == ' ' &&
        is_digit(p->s[end + 1]) && is_digit(p->s[end + 2]) && p->s[end + 3] == ':') {
        end++;
        while (end < p->n && is_token(p->s[end]))
            end++;
    }
    size_t len = end - start;
    p->pos = end;

    if ((len == 4 && memcmp(t, "true", 4) == 0) || (len == 5 && memcmp(t, "false", 5) == 0)) {
        ag_toml_value_t *v = new_value(p, AG_TOML_BOOL, line, col);
        v->u.b = len == 4;
        return v;
    }
    size_t digits = 0;
    while (digits < len && is_digit((unsigned char)t[digits]))
        digits++;
    if (memchr(t, ':', len) != NULL || (digits > 0 && digits < len && t[digits] == '-'))
        return parse_datetime(p, t, len, line, col);
    size_t s0 = (t[0] == '+' || t[0] == '-') ? 1 : 0;
    bool word = s0 < len && ((t[s0] >= 'a' && t[s0] <= 'z') || (t[s0] >= 'A' && t[s0] <= 'Z'));
    if (word &&
        !(len - s0 == 3 && (memcmp(t + s0, "inf", 3) == 0 || memcmp(t + s0, "nan", 3) == 0)))
        return bad_token(p, "value", t, len,
                         "expected true, false, a number, a date or a quoted string", line, col);
    return parse_number(p, t, len, line, col);
}

/* ---- values -------------------------------------------------------------- */

static ag_toml_value_t *parse_value(parser_t *p, size_t depth);
static int parse_keyval(parser_t *p, ag_toml_value_t *table, uint32_t gen);

static ag_toml_value_t *parse_array(parser_t *p, size_t depth, uint32_t line, uint32_t col)
{
    ag_toml_value_t *a = new_value(p, AG_TOML_ARRAY, line, col);
    a->depth = (uint16_t)depth;
    p->pos++;
    for (;;) {
        if (skip_blank(p) < 0)
            return NULL;
        if (p->pos >= p->n) {
            fail(p, p->pos, "unterminated array (opened at line %u, column %u)", line, col);
            return NULL;
        }
        if (p->s[p->pos] == ']') {
            p->pos++;
            return a;
        }
        ag_toml_value_t *v = parse_value(p, depth + 1);
        if (v == NULL)
            return NULL;
        array_push(p, a, v);
        if (skip_blank(p) < 0)
            return NULL;
        int c = peek(p, 0);
        if (c == ',') {
            p->pos++;
        } else if (c == ']') {
            p->pos++;
            return a;
        } else if (c < 0) {
            fail(p, p->pos, "unterminated array (opened at line %u, column %u)", line, col);
            return NULL;
        } else {
            fail_expected(p, "',' or ']' after an array element");
            return NULL;
        }
    }
}

static ag_toml_value_t *parse_inline_table(parser_t *p, size_t depth, uint32_t line, uint32_t col)
{
    ag_toml_value_t *t = new_value(p, AG_TOML_TABLE, line, col);
    t->depth = (uint16_t)depth;
    uint32_t gen = 0;
    if (next_gen(p, &gen) < 0)
        return NULL;
    p->pos++;
    skip_ws(p);
    if (peek(p, 0) == '}') {
        p->pos++;
        t->flags |= F_INLINE;
        return t;
    }
    for (;;) {
        int c = peek(p, 0);
        if (c == '\n' || c == '\r') {
            fail(p, p->pos, "newline is not allowed inside an inline table");
            return NULL;
        }
        if (parse_keyval(p, t, gen) < 0)
            return NULL;
        skip_ws(p);
        c = peek(p, 0);
        if (c == ',') {
            size_t comma = p->pos++;
            skip_ws(p);
            if (peek(p, 0) == '}') {
                fail(p, comma, "trailing comma is not allowed in an inline table");
                return NULL;
            }
            continue;
        }
        if (c == '}') {
            p->pos++;
            t->flags |= F_INLINE;
            return t;
        }
        if (c == '\n' || c == '\r') {
            fail(p, p->pos, "newline is not allowed inside an inline table");
        } else if (c < 0) {
            fail(p, p->pos, "unterminated inline table (opened at line %u, column %u)", line, col);
        } else {
            fail_expected(p, "',' or '}' in an inline table");
        }
        return NULL;
    }
}

/* A value at p->pos, which will sit at the given depth of the tree. */
static ag_toml_value_t *parse_value(parser_t *p, size_t depth)
{
    uint32_t line, col;
    locate(p, p->pos, &line, &col);
    if (check_depth(p, depth, line, col) < 0)
        return NULL;
    int c = peek(p, 0);
    if (c == '"' || c == '\'') {
        if (lex_string(p, true) < 0)
            return NULL;
        ag_toml_value_t *v = new_value(p, AG_TOML_STRING, line, col);
        v->u.str.ptr = ag_pool_strndup(p->pool, p->scratch.data, p->scratch.len);
        v->u.str.len = p->scratch.len;
        return v;
    }
    if (c == '[')
        return parse_array(p, depth, line, col);
    if (c == '{')
        return parse_inline_table(p, depth, line, col);
    if (c >= 0 && is_token(c))
        return parse_token(p, line, col);
    fail_expected(p, "a value");
    return NULL;
}

/* key = value, into table under group gen. */
static int parse_keyval(parser_t *p, ag_toml_value_t *table, uint32_t gen)
{
    size_t kbase = p->ktop;
    if (parse_key(p) < 0)
        return -1;
    size_t nk = p->ktop - kbase;
    if (peek(p, 0) != '=')
        return fail_expected(p, "'=' after the key");
    p->pos++;
    skip_ws(p);
    ag_toml_value_t *v = parse_value(p, table->depth + nk);
    if (v == NULL)
        return -1;
    int rc = insert_dotted(p, table, &p->kstack[kbase], nk, v, gen);
    p->ktop = kbase;
    return rc;
}

/* [a.b.c] or [[a.b.c]]: finds or makes the table and makes it current. */
static int parse_header(parser_t *p)
{
    char kbuf[128];
    uint32_t hline, hcol;
    locate(p, p->pos, &hline, &hcol);
    const bool aot = peek(p, 1) == '[';
    p->pos += aot ? 2 : 1;
    skip_ws(p);
    size_t kbase = p->ktop;
    if (parse_key(p) < 0)
        return -1;
    size_t nk = p->ktop - kbase;
    const char *close =
        aot ? "']]' to close the array-of-tables header" : "']' to close the table header";
    if (peek(p, 0) != ']')
        return fail_expected(p, close);
    p->pos++;
    if (aot) {
        if (peek(p, 0) != ']')
            return fail_expected(p, close);
        p->pos++;
    }
    const keypart_t *k = &p->kstack[kbase];
    ag_toml_value_t *t = p->root;
    for (size_t i = 0; i + 1 < nk; i++) {
        ag_toml_value_t *c = table_find(t, k[i].ptr, k[i].len);
        if (c == NULL) {
            if (check_depth(p, t->depth + 1u, k[i].line, k[i].col) < 0)
                return -1;
            c = new_value(p, AG_TOML_TABLE, k[i].line, k[i].col);
            c->depth = (uint16_t)(t->depth + 1);
            if (table_put(p, t, &k[i], c) < 0)
                return -1;
        } else if (c->type == AG_TOML_ARRAY && (c->flags & F_AOT)) {
            c = c->u.arr.items[c->u.arr.len - 1];
        } else if (c->type != AG_TOML_TABLE || (c->flags & F_INLINE)) {
            return fail_at(p, k[i].line, k[i].col,
                           "cannot define a table inside '%s': it is %s (defined at line %u, "
                           "column %u)",
                           fmt_key(kbuf, sizeof(kbuf), k, i + 1), type_article(c), c->line, c->col);
        }
        t = c;
    }
    const keypart_t *last = &k[nk - 1];
    ag_toml_value_t *c = table_find(t, last->ptr, last->len);
    if (c != NULL) {
        bool ok =
            aot ? (c->type == AG_TOML_ARRAY && (c->flags & F_AOT))
                : (c->type == AG_TOML_TABLE && !(c->flags & (F_INLINE | F_HEADER)) && c->gen == 0);
        if (!ok) {
            if (!aot && c->type == AG_TOML_TABLE && !(c->flags & F_INLINE))
                return fail_at(p, hline, hcol,
                               "table '%s' is already defined (at line %u, column %u)",
                               fmt_key(kbuf, sizeof(kbuf), k, nk), c->line, c->col);
            return fail_at(p, hline, hcol,
                           "cannot redefine '%s' as %s: it is %s (defined at line %u, "
                           "column %u)",
                           fmt_key(kbuf, sizeof(kbuf), k, nk),
                           aot ? "an array of tables" : "a table", type_article(c), c->line,
                           c->col);
        }
    }
    if (aot) {
        ag_toml_value_t *arr = c;
        if (arr == NULL) {
            if (check_depth(p, t->depth + 1u, hline, hcol) < 0)
                return -1;
            arr = new_value(p, AG_TOML_ARRAY, hline, hcol);
            arr->flags = F_AOT;
            arr->depth = (uint16_t)(t->depth + 1);
            if (table_put(p, t, last, arr) < 0)
                return -1;
        }
        if (check_depth(p, arr->depth + 1u, hline, hcol) < 0)
            return -1;
        c = new_value(p, AG_TOML_TABLE, hline, hcol);
        c->flags = F_HEADER;
        c->depth = (uint16_t)(arr->depth + 1);
        array_push(p, arr, c);
    } else if (c == NULL) {
        if (check_depth(p, t->depth + 1u, hline, hcol) < 0)
            return -1;
        c = new_value(p, AG_TOML_TABLE, hline, hcol);
        c->flags = F_HEADER;
        c->depth = (uint16_t)(t->depth + 1);
        if (table_put(p, t, last, c) < 0)
            return -1;
    } else {
        /* An implicit table, made by an earlier header's path, becomes defined here. */
        c->flags |= F_HEADER;
        c->line = hline;
        c->col = hcol;
    }
    p->ktop = kbase;
    p->cur = c;
    return next_gen(p, &p->cur_gen);
}

static int check_utf8(parser_t *p)
{
    size_t i = 0;
    while (i < p->n) {
        if (p->s[i] < 0x80) {
            i++;
            continue;
        }
        unsigned cp;
        size_t len = ag_utf8_decode(p->s + i, p->n - i, &cp);
        if (len == 0)
            return fail(p, i, "invalid UTF-8 byte 0x%02X", p->s[i]);
        i += len;
    }
    return 0;
}

static int parse_document(parser_t *p)
{
    if (check_utf8(p) < 0 || next_gen(p, &p->cur_gen) < 0)
        return -1;
    for (;;) {
        skip_ws(p);
        if (p->pos >= p->n)
            return 0;
        int c = p->s[p->pos];
        int rc = 0;
        if (c == '[')
            rc = parse_header(p);
        else if (c != '#' && c != '\n' && c != '\r')
            rc = parse_keyval(p, p->cur, p->cur_gen);
        if (rc < 0 || expect_eol(p) < 0)
            return -1;
    }
}

/* ---- public API ---------------------------------------------------------- */

ag_toml_value_t *ag_toml_parse(const char *text, size_t len, ag_toml_error_t *err)
{
    ag_toml_error_t dummy;
    if (err == NULL)
        err = &dummy;
    memset(err, 0, sizeof(*err));
    if (text == NULL && len > 0) {
        snprintf(err->message, sizeof(err->message), "no input");
        return NULL;
    }
    doc_t *d = calloc(1, sizeof(*d));
    if (d == NULL) {
        snprintf(err->message, sizeof(err->message), "out of memory");
        return NULL;
    }
    ag_pool_init(&d->pool);
    d->root.type = AG_TOML_TABLE;
    d->root.flags = F_ROOT | F_HEADER;
    d->root.line = 1;
    d->root.col = 1;

    parser_t *p = malloc(sizeof(*p));
    if (p == NULL) {
        free(d);
        snprintf(err->message, sizeof(err->message), "out of memory");
        return NULL;
    }
    memset(p, 0, sizeof(*p));
    p->s = (const unsigned char *)(text ? text : "");
    p->n = len;
    /* The BOM is invisible in editors, so columns on line 1 start after it. */
    if (len >= 3 && memcmp(text, "\xEF\xBB\xBF", 3) == 0) {
        p->s += 3;
        p->n -= 3;
    }
    p->pool = &d->pool;
    p->err = err;
    p->loc_line = 1;
    p->loc_col = 1;
    p->root = &d->root;
    p->cur = &d->root;
    ag_buf_init(&p->scratch, 0);

    int rc = parse_document(p);
    ag_buf_fini(&p->scratch);
    free(p);
    if (rc < 0) {
        ag_pool_fini(&d->pool);
        free(d);
        return NULL;
    }
    return &d->root;
}

void ag_toml_free(ag_toml_value_t *root)
{
    if (root == NULL)
        return;
    AG_ASSERT(root->flags & F_ROOT);
    doc_t *d = (doc_t *)(void *)((char *)root - offsetof(doc_t, root));
    ag_pool_fini(&d->pool);
    free(d);
}

ag_toml_type_t ag_toml_type(const ag_toml_value_t *v)
{
    return (ag_toml_type_t)v->type;
}

const char *ag_toml_type_name(ag_toml_type_t type)
{
    switch (type) {
    case AG_TOML_STRING:
        return "string";
    case AG_TOML_INTEGER:
        return "integer";
    case AG_TOML_FLOAT:
        return "float";
    case AG_TOML_BOOL:
        return "bool";
    case AG_TOML_DATETIME:
        return "datetime";
    case AG_TOML_DATETIME_LOCAL:
        return "datetime-local";
    case AG_TOML_DATE_LOCAL:
        return "date-local";
    case AG_TOML_TIME_LOCAL:
        return "time-local";
    case AG_TOML_ARRAY:
        return "array";
    case AG_TOML_TABLE:
        return "table";
    }
    return "unknown";
}

uint32_t ag_toml_line(const ag_toml_value_t *v)
{
    return v ? v->line : 0;
}

uint32_t ag_toml_col(const ag_toml_value_t *v)
{
    return v ? v->col : 0;
}

size_t ag_toml_table_len(const ag_toml_value_t *t)
{
    return t && t->type == AG_TOML_TABLE ? t->u.tab.len : 0;
}

const ag_toml_value_t *ag_toml_table_at(const ag_toml_value_t *t, size_t i, const char **key,
                                        size_t *keylen)
{
    if (t == NULL || t->type != AG_TOML_TABLE || i >= t->u.tab.len)
        return NULL;
    const entry_t *e = &t->u.tab.items[i];
    if (key)
        *key = e->key;
    if (keylen)
        *keylen = e->keylen;
    return e->val;
}

const ag_toml_value_t *ag_toml_table_getn(const ag_toml_value_t *t, const char *key, size_t keylen)
{
    if (t == NULL || t->type != AG_TOML_TABLE || (key == NULL && keylen > 0))
        return NULL;
    return table_find(t, key ? key : "", keylen);
}

const ag_toml_value_t *ag_toml_table_get(const ag_toml_value_t *t, const char *key)
{
    return key ? ag_toml_table_getn(t, key, strlen(key)) : NULL;
}

size_t ag_toml_array_len(const ag_toml_value_t *a)
{
    return a && a->type == AG_TOML_ARRAY ? a->u.arr.len : 0;
}

const ag_toml_value_t *ag_toml_array_at(const ag_toml_value_t *a, size_t i)
{
    if (a == NULL || a->type != AG_TOML_ARRAY || i >= a->u.arr.len)
        return NULL;
    return a->u.arr.items[i];
}

int ag_toml_get_string(const ag_toml_value_t *v, const char **ptr, size_t *len)
{
    if (v == NULL || v->type != AG_TOML_STRING)
        return AG_EINVALID;
    if (ptr)
        *ptr = v->u.str.ptr;
    if (len)
        *len = v->u.str.len;
    return 0;
}

int ag_toml_get_int(const ag_toml_value_t *v, int64_t *out)
{
    if (v == NULL || v->type != AG_TOML_INTEGER)
        return AG_EINVALID;
    *out = v->u.i;
    return 0;
}

int ag_toml_get_float(const ag_toml_value_t *v, double *out)
{
    if (v == NULL || v->type != AG_TOML_FLOAT)
        return AG_EINVALID;
    *out = v->u.f;
    return 0;
}

int ag_toml_get_bool(const ag_toml_value_t *v, bool *out)
{
    if (v == NULL || v->type != AG_TOML_BOOL)
        return AG_EINVALID;
    *out = v->u.b;
    return 0;
}

int ag_toml_get_datetime(const ag_toml_value_t *v, ag_toml_datetime_t *out, const char **text)
{
    if (v == NULL || v->type < AG_TOML_DATETIME || v->type > AG_TOML_TIME_LOCAL)
        return AG_EINVALID;
    if (out)
        *out = v->u.dt->dt;
    if (text)
        *text = v->u.dt->text;
    return 0;
}
