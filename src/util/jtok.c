/* SPDX-License-Identifier: MIT
 *
 * jtok.c: the strict JSON tokenizer behind jtok.h: one pass, no allocation, an explicit stack
 * instead of recursion, and string lookups/decoding that read the raw token bytes in place.
 */
#include "util/platform.h"

#include "util/jtok.h"

#include <limits.h>
#include <string.h>

#include "util/errors.h"
#include "util/utf.h"

/* clang-format off */
/* 1 for a string byte that needs no attention: printable ASCII other than '"' and '\\'. */
static const unsigned char plain_byte[256] = {
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, /* 0x00 */
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, /* 0x10 */
    1, 1, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, /* 0x20 */
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, /* 0x30 */
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, /* 0x40 */
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 1, 1, 1, /* 0x50 */
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, /* 0x60 */
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, /* 0x70 */
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, /* 0x80 */
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, /* 0x90 */
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, /* 0xa0 */
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, /* 0xb0 */
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, /* 0xc0 */
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, /* 0xd0 */
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, /* 0xe0 */
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, /* 0xf0 */
};

/* Hex digit values; XX (0xff) for anything else. */
#define XX 0xff
static const unsigned char hex_val[256] = {
    XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, /* 0x00 */
    XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, /* 0x10 */
    XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, /* 0x20 */
     0,  1,  2,  3,  4,  5,  6,  7,  8,  9, XX, XX, XX, XX, XX, XX, /* 0x30 */
    XX, 10, 11, 12, 13, 14, 15, XX, XX, XX, XX, XX, XX, XX, XX, XX, /* 0x40 */
    XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, /* 0x50 */
    XX, 10, 11, 12, 13, 14, 15, XX, XX, XX, XX, XX, XX, XX, XX, XX, /* 0x60 */
    XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, /* 0x70 */
    XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, /* 0x80 */
    XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, /* 0x90 */
    XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, /* 0xa0 */
    XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, /* 0xb0 */
    XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, /* 0xc0 */
    XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, /* 0xd0 */
    XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, /* 0xe0 */
    XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, XX, /* 0xf0 */
};
#undef XX
/* clang-format on */

static inline bool is_ws(unsigned char c)
{
    return c == ' ' || c == '\n' || c == '\r' || c == '\t';
}

static inline bool is_digit(unsigned char c)
{
    return (unsigned)(c - '0') < 10;
}

/* True when one of the 8 bytes in x is '"', '\\', < 0x20 or >= 0x80. Each subtraction borrows
 * across bytes only out of a byte that is itself a hit, and any byte >= 0x80 is a hit through the
 * final `| x`, so the answer is exact (only the position would be blurred, and is not used). */
static inline bool swar_special(uint64_t x)
{
    const uint64_t ones = 0x0101010101010101ull;
    uint64_t q = x ^ (ones * '"');
    uint64_t b = x ^ (ones * '\\');
    return (((q - ones) | (b - ones) | (x - ones * 0x20) | x) & (ones * 0x80)) != 0;
}

/* Scans a string body starting just after the opening quote. On success *pp points at the
 * closing quote; on failure at the first byte that is not acceptable (end if truncated). */
static bool scan_string(const unsigned char **pp, const unsigned char *end, bool *escaped)
{
    const unsigned char *p = *pp;
    for (;;) {
        /* Most bytes of real documents are plain ASCII: step over them 8 at a time. */
        while (end - p >= 8) {
            uint64_t x;
            memcpy(&x, p, 8);
            if (swar_special(x))
                break;
            p += 8;
        }
        while (p < end && plain_byte[*p])
            p++;
        if (p == end)
            break;
        unsigned char c = *p;
        if (c == '"') {
            *pp = p;
            return true;
        }
        if (c == '\\') {
            *escaped = true;
            p++;
            if (p == end)
                break;
            switch (*p) {
            case '"':
            case '\\':
            case '/':
            case 'b':
            case 'f':
            case 'n':
            case 'r':
            case 't':
                p++;
                continue;
            case 'u':
                for (int i = 0; i < 4; i++) {
                    p++;
                    if (p == end || hex_val[*p] == 0xFF)
                        goto fail;
                }
                p++;
                continue;
            default:
                goto fail;
            }
        }
        if (c < 0x20)
            break;
        /* c >= 0x80: the strict decoder rejects overlongs, surrogates, > U+10FFFF, truncation. */
        unsigned cp;
        size_t n = ag_utf8_decode(p, (size_t)(end - p), &cp);
        if (n == 0)
            break;
        p += n;
    }
fail:
    *pp = p;
    return false;
}

/* Scans a number at *pp (a '-' or a digit) by the RFC 8259 grammar. */
static bool scan_number(const unsigned char **pp, const unsigned char *end)
{
    const unsigned char *p = *pp;
    if (*p == '-')
        p++;
    if (p == end)
        goto fail;
    if (*p == '0') {
        p++;
    } else if (is_digit(*p)) {
        do
            p++;
        while (p < end && is_digit(*p));
    } else {
        goto fail;
    }
    if (p < end && *p == '.') {
        p++;
        if (p == end || !is_digit(*p))
            goto fail;
        do
            p++;
        while (p < end && is_digit(*p));
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
        p++;
        if (p < end && (*p == '+' || *p == '-'))
            p++;
        if (p == end || !is_digit(*p))
            goto fail;
        do
            p++;
        while (p < end && is_digit(*p));
    }
    /* A digit right after "0" or "-0" ("01") is caught by the caller: it cannot follow a value. */
    *pp = p;
    return true;
fail:
    *pp = p;
    return false;
}

int ag_jtok_parse(const char *text, size_t len, ag_jtok_t *toks, size_t max_tokens,
                  size_t *err_offset)
{
    if (!text || (!toks && max_tokens)) {
        if (err_offset)
            *err_offset = 0;
        return !text && len == 0 ? AG_EPROTO : AG_EINVALID;
    }
    /* Offsets and `next` are uint32_t; the returned count is an int. */
    if (len > UINT32_MAX) {
        if (err_offset)
            *err_offset = 0;
        return AG_ETOOBIG;
    }
    const unsigned char *const base = (const unsigned char *)text;
    const unsigned char *p = base;
    const unsigned char *end = base + len;
    if (max_tokens > INT_MAX)
        max_tokens = INT_MAX;

    /* The open containers form a list through their tokens: while a container
     * is open, its `next` holds its parent's index + 1 (0: none), so nesting
     * costs no stack, only the tokens the input needs anyway. */
    uint32_t open = 0; /* the innermost open container's index + 1 */
    size_t depth = 0, n = 0;
    int rc = AG_EPROTO;
    ag_jtok_t *t;
    ag_jtok_t *top;

#define SKIP_WS()                                                                                  \
    while (p < end && is_ws(*p))                                                                   \
    p++
#define NEW_TOKEN(ty)                                                                              \
    do {                                                                                           \
        if (n == max_tokens) {                                                                     \
            rc = AG_ETOOBIG;                                                                       \
            goto fail;                                                                             \
        }                                                                                          \
        t = &toks[n++];                                                                            \
        t->type = (ty);                                                                            \
        t->start = (uint32_t)(p - base);                                                           \
        t->size = 0;                                                                               \
        t->next = (uint32_t)n;                                                                     \
        t->escaped = false;                                                                        \
    } while (0)

value:
    SKIP_WS();
    if (p == end)
        goto fail;
    switch (*p) {
    case '{':
    case '[': {
        if (depth == AG_JTOK_MAX_DEPTH) {
            rc = AG_ETOOBIG;
            goto fail;
        }
        bool is_obj = *p == '{';
        NEW_TOKEN(is_obj ? AG_JT_OBJECT : AG_JT_ARRAY);
        t->next = open;
        open = (uint32_t)n; /* (n - 1) + 1 */
        depth++;
        p++;
        SKIP_WS();
        if (p == end)
            goto fail;
        if (*p == (is_obj ? '}' : ']'))
            goto close;
        if (is_obj)
            goto key;
        t->size = 1;
        goto value;
    }
    case '"':
        p++;
        NEW_TOKEN(AG_JT_STRING);
        if (!scan_string(&p, end, &t->escaped))
            goto fail;
        t->end = (uint32_t)(p - base);
        p++;
        goto after;
    case '-':
    case '0':
    case '1':
    case '2':
    case '3':
    case '4':
    case '5':
    case '6':
    case '7':
    case '8':
    case '9':
        NEW_TOKEN(AG_JT_NUMBER);
        if (!scan_number(&p, end))
            goto fail;
        t->end = (uint32_t)(p - base);
        goto after;
    case 't':
    case 'f':
    case 'n': {
        static const char *const words[] = {"true", "false", "null"};
        static const ag_jt_type_t types[] = {AG_JT_TRUE, AG_JT_FALSE, AG_JT_NULL};
        int w = *p == 't' ? 0 : *p == 'f' ? 1 : 2;
        NEW_TOKEN(types[w]);
        for (const char *c = words[w]; *c; c++, p++) {
            if (p == end || *p != (unsigned char)*c)
                goto fail;
        }
        t->end = (uint32_t)(p - base);
        goto after;
    }
    default:
        goto fail;
    }

key:
    /* p < end, at the first byte after '{' or ',' and its whitespace. */
    if (*p != '"')
        goto fail;
    toks[open - 1].size++;
    p++;
    NEW_TOKEN(AG_JT_STRING);
    if (!scan_string(&p, end, &t->escaped))
        goto fail;
    t->end = (uint32_t)(p - base);
    p++;
    SKIP_WS();
    if (p == end || *p != ':')
        goto fail;
    p++;
    goto value;

after:
    if (depth == 0)
        goto done;
    SKIP_WS();
    if (p == end)
        goto fail;
    top = &toks[open - 1];
    if (*p == ',') {
        p++;
        SKIP_WS();
        if (p == end)
            goto fail;
        if (top->type == AG_JT_OBJECT)
            goto key;
        top->size++;
        goto value;
    }
    if (*p == (top->type == AG_JT_OBJECT ? '}' : ']'))
        goto close;
    goto fail;

close:
    top = &toks[open - 1];
    open = top->next;
    depth--;
    p++;
    top->end = (uint32_t)(p - base);
    top->next = (uint32_t)n;
    goto after;

done:
    SKIP_WS();
    if (p != end)
        goto fail;
    return (int)n;

fail:
    if (err_offset)
        *err_offset = (size_t)(p - base);
    return rc;
#undef SKIP_WS
#undef NEW_TOKEN
}

/* ---- string values ---- */

static unsigned hex4(const unsigned char *p)
{
    return (unsigned)hex_val[p[0]] << 12 | (unsigned)hex_val[p[1]] << 8 |
           (unsigned)hex_val[p[2]] << 4 | hex_val[p[3]];
}

static size_t utf8_put(unsigned cp, unsigned char *o)
{
    if (cp < 0x80) {
        o[0] = (unsigned char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (unsigned char)(0xC0 | cp >> 6);
        o[1] = (unsigned char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (unsigned char)(0xE0 | cp >> 12);
        o[1] = (unsigned char)(0x80 | (cp >> 6 & 0x3F));
        o[2] = (unsigned char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (unsigned char)(0xF0 | cp >> 18);
    o[1] = (unsigned char)(0x80 | (cp >> 12 & 0x3F));
    o[2] = (unsigned char)(0x80 | (cp >> 6 & 0x3F));
    o[3] = (unsigned char)(0x80 | (cp & 0x3F));
    return 4;
}

/* Decodes the escape at *pp (which points at a backslash of a token that ag_jtok_parse()
 * accepted) into o[0..4), advances *pp past it and returns the number of bytes written. */
static size_t decode_escape(const unsigned char **pp, const unsigned char *end, unsigned char *o)
{
    const unsigned char *p = *pp;
    unsigned char c = p[1];
    *pp = p + 2;
    switch (c) {
    case 'b':
        o[0] = '\b';
        return 1;
    case 'f':
        o[0] = '\f';
        return 1;
    case 'n':
        o[0] = '\n';
        return 1;
    case 'r':
        o[0] = '\r';
        return 1;
    case 't':
        o[0] = '\t';
        return 1;
    case 'u':
        break;
    default: /* '"', '\\', '/' stand for themselves */
        o[0] = c;
        return 1;
    }
    unsigned cp = hex4(p + 2);
    *pp = p + 6;
    if (cp >= 0xD800 && cp <= 0xDFFF) {
        unsigned lo;
        if (cp <= 0xDBFF && end - p >= 12 && p[6] == '\\' && p[7] == 'u' &&
            (lo = hex4(p + 8)) >= 0xDC00 && lo <= 0xDFFF) {
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            *pp = p + 12;
        } else {
            cp = 0xFFFD; /* a lone surrogate: see ag_jtok_str_decode() in jtok.h */
        }
    }
    return utf8_put(cp, o);
}

/* Walks the decoded value of a string token as runs of raw bytes and decoded escapes. */
#define FOR_EACH_PIECE(text, t, piece, piece_len, BODY)                                            \
    do {                                                                                           \
        const unsigned char *p_ = (const unsigned char *)(text) + (t)->start;                      \
        const unsigned char *end_ = (const unsigned char *)(text) + (t)->end;                      \
        unsigned char esc_[4];                                                                     \
        while (p_ < end_) {                                                                        \
            const unsigned char *piece;                                                            \
            size_t piece_len;                                                                      \
            if (*p_ != '\\') {                                                                     \
                const unsigned char *q_ =                                                          \
                    (t)->escaped ? memchr(p_, '\\', (size_t)(end_ - p_)) : NULL;                   \
                piece = p_;                                                                        \
                piece_len = (size_t)((q_ ? q_ : end_) - p_);                                       \
                p_ += piece_len;                                                                   \
            } else {                                                                               \
                piece = esc_;                                                                      \
                piece_len = decode_escape(&p_, end_, esc_);                                        \
            }                                                                                      \
            BODY                                                                                   \
        }                                                                                          \
    } while (0)

bool ag_jtok_str_eqn(const char *text, const ag_jtok_t *t, const char *s, size_t n)
{
    if (t->type != AG_JT_STRING)
        return false;
    if (!t->escaped)
        return t->end - t->start == n && memcmp(text + t->start, s, n) == 0;
    size_t i = 0;
    FOR_EACH_PIECE(text, t, piece, piece_len, {
        if (piece_len > n - i || memcmp(piece, s + i, piece_len) != 0)
            return false;
        i += piece_len;
    });
    return i == n;
}

bool ag_jtok_str_eq(const char *text, const ag_jtok_t *t, const char *s)
{
    return ag_jtok_str_eqn(text, t, s, strlen(s));
}

/* The decoded length in bytes, for a buffer whose cap is too tight for the raw length. */
static size_t decoded_len(const char *text, const ag_jtok_t *t)
{
    size_t total = 0;
    FOR_EACH_PIECE(text, t, piece, piece_len, {
        (void)piece;
        total += piece_len;
    });
    return total;
}

int ag_jtok_str_decode(const char *text, const ag_jtok_t *t, ag_buf_t *out)
{
    if (t->type != AG_JT_STRING)
        return AG_EINVALID;
    size_t raw = t->end - t->start;
    if (!t->escaped)
        return ag_buf_append(out, text + t->start, raw);
    /* Decoding never grows a string (the longest output, 4 bytes, comes from a 12-byte pair), so
     * the raw length is enough room; only a nearly full capped buffer needs the exact figure. */
    int rc = ag_buf_reserve(out, raw);
    if (rc == AG_ETOOBIG)
        rc = ag_buf_reserve(out, decoded_len(text, t));
    if (rc < 0)
        return rc;
    char *o = out->data + out->len;
    FOR_EACH_PIECE(text, t, piece, piece_len, {
        memcpy(o, piece, piece_len);
        o += piece_len;
    });
    out->len = (size_t)(o - out->data);
    return 0;
}

size_t ag_jtok_str_utf16_len(const char *text, const ag_jtok_t *t)
{
    if (t->type != AG_JT_STRING)
        return 0;
    const unsigned char *p = (const unsigned char *)text + t->start;
    const unsigned char *end = (const unsigned char *)text + t->end;
    size_t units = 0;
    if (!t->escaped) {
        /* Valid UTF-8: one unit per lead byte, one more for each 4-byte (astral) character. */
        for (; p < end; p++)
            units += ((*p & 0xC0) != 0x80) + (*p >= 0xF0);
        return units;
    }
    while (p < end) {
        unsigned char c = *p;
        if (c == '\\') {
            /* Each escape is one unit; a pair is two escapes and two units, as in JS. */
            p += end - p > 1 && p[1] == 'u' ? 6 : 2;
            units++;
        } else {
            p++;
            units += ((c & 0xC0) != 0x80) + (c >= 0xF0);
        }
    }
    return units;
}

/* ---- lookups ---- */

int ag_jtok_object_getn(const char *text, const ag_jtok_t *toks, int obj, const char *key,
                        size_t keylen)
{
    if (obj < 0 || toks[obj].type != AG_JT_OBJECT)
        return -1;
    int found = -1;
    uint32_t k = (uint32_t)obj + 1;
    for (uint32_t i = 0; i < toks[obj].size; i++) {
        if (ag_jtok_str_eqn(text, &toks[k], key, keylen))
            found = (int)k + 1;
        k = toks[k + 1].next;
    }
    return found;
}

int ag_jtok_object_get(const char *text, const ag_jtok_t *toks, int obj, const char *key)
{
    return ag_jtok_object_getn(text, toks, obj, key, strlen(key));
}

int ag_jtok_array_at(const ag_jtok_t *toks, int arr, size_t i)
{
    if (arr < 0 || toks[arr].type != AG_JT_ARRAY || i >= toks[arr].size)
        return -1;
    uint32_t k = (uint32_t)arr + 1;
    while (i--)
        k = toks[k].next;
    return (int)k;
}

/* ---- numbers ---- */

int ag_jtok_int64(const char *text, const ag_jtok_t *t, int64_t *out)
{
    if (t->type != AG_JT_NUMBER)
        return AG_EINVALID;
    const char *p = text + t->start;
    const char *end = text + t->end;
    bool neg = *p == '-';
    if (neg)
        p++;
    /* Accumulate on the negative side, which holds INT64_MIN. */
    int64_t v = 0;
    for (; p < end; p++) {
        if (!is_digit((unsigned char)*p))
            return AG_EINVALID;
        int d = *p - '0';
        if (v < (INT64_MIN + d) / 10)
            return AG_EINVALID;
        v = v * 10 - d;
    }
    if (!neg) {
        if (v == INT64_MIN)
            return AG_EINVALID;
        v = -v;
    }
    *out = v;
    return 0;
}
