/* SPDX-License-Identifier: MIT
 *
 * fuzz_jtok.c: ag_jtok_parse() on arbitrary bytes. Checks the token tape's invariants, decodes
 * every string, and compares the verdict and the values with jansson's json_loadb(JSON_DECODE_ANY
 * | JSON_ALLOW_NUL), allowing only the differences listed in enum jtok_diff. tests/unit/
 * test_jtok.c includes this file to run the same check on its corpus and generated documents.
 */
#include "util/platform.h"

#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include <jansson.h>

#include "util/buf.h"
#include "util/errors.h"
#include "util/jtok.h"
#include "util/utf.h"

/* Every way jtok and jansson 2.14 may legitimately disagree. jtok follows JSON.parse; jansson
 * was not written for that. */
enum jtok_diff {
    /* An integer literal (no fraction or exponent) outside int64: jansson fails ("too big
     * integer"); JSON.parse and jtok accept it (ag_jtok_int64() then says AG_EINVALID). */
    JTOK_DIFF_INT_RANGE = 1 << 0,
    /* A number whose nearest double is infinite (1e400): jansson fails ("real number
     * overflow"); JSON.parse gives Infinity and jtok accepts it. Underflow (1e-400) is 0 in both.
     */
    JTOK_DIFF_REAL_OVERFLOW = 1 << 1,
    /* An escaped lone surrogate ("\ud800", "\udc00", "\ud800\u0041"): jansson fails ("invalid
     * Unicode"); JSON.parse keeps it, jtok accepts it and decodes it to U+FFFD. */
    JTOK_DIFF_LONE_SURROGATE = 1 << 2,
    /* \u0000 in an object key: jansson fails even with JSON_ALLOW_NUL ("NUL byte in object key
     * not supported"); JSON.parse and jtok accept it. */
    JTOK_DIFF_NUL_KEY = 1 << 3,
    /* Nesting: jansson stops at JSON_PARSER_MAX_DEPTH (2048) levels; jtok, like JSON.parse,
     * goes on (to AG_JTOK_MAX_DEPTH, past what a request body can hold). */
    JTOK_DIFF_DEPTH = 1 << 4,
    /* A NUL byte right after a number or true/false/null ("1\0", "[true\0]"): jansson accepts it,
     * because it loses the NUL it had read ahead and pushed back (stream_unget() leaves the NUL
     * in its one-character buffer, which reads as "empty"). jtok and JSON.parse reject it. */
    JTOK_DIFF_NUL_AFTER_SCALAR = 1 << 5,
};

#define JTOK_CHECK_FAIL(msg)                                                                       \
    do {                                                                                           \
        why = (msg);                                                                               \
        goto out;                                                                                  \
    } while (0)

/* Tape invariants of the subtree at token i. @return its `next`, or 0 on a violation. */
static uint32_t check_subtree(const char *text, size_t len, const ag_jtok_t *toks, uint32_t n,
                              uint32_t i)
{
    const ag_jtok_t *t = &toks[i];
    if (t->start > t->end || t->end > len || t->next <= i || t->next > n)
        return 0;
    switch (t->type) {
    case AG_JT_OBJECT:
    case AG_JT_ARRAY: {
        bool obj = t->type == AG_JT_OBJECT;
        if (t->end - t->start < 2 || text[t->start] != (obj ? '{' : '[') ||
            text[t->end - 1] != (obj ? '}' : ']') || t->escaped)
            return 0;
        uint32_t k = i + 1, prev_end = t->start;
        for (uint32_t c = 0; c < t->size * (obj ? 2u : 1u); c++) {
            if (k >= n || toks[k].start < prev_end)
                return 0;
            if (obj && c % 2 == 0 && toks[k].type != AG_JT_STRING)
                return 0;
            prev_end = toks[k].end;
            k = check_subtree(text, len, toks, n, k);
            if (k == 0)
                return 0;
        }
        if (k != t->next || prev_end > t->end)
            return 0;
        return k;
    }
    case AG_JT_STRING:
        if (t->start == 0 || t->end >= len || text[t->start - 1] != '"' || text[t->end] != '"')
            return 0;
        if (t->escaped != (memchr(text + t->start, '\\', t->end - t->start) != NULL))
            return 0;
        break;
    case AG_JT_NUMBER:
    case AG_JT_TRUE:
    case AG_JT_FALSE:
    case AG_JT_NULL:
        if (t->end == t->start || t->escaped)
            return 0;
        break;
    default:
        return 0;
    }
    if (t->size != 0 || t->next != i + 1)
        return 0;
    return i + 1;
}

static bool number_is_int(const char *text, const ag_jtok_t *t)
{
    for (uint32_t i = t->start; i < t->end; i++)
        if (text[i] == '.' || text[i] == 'e' || text[i] == 'E')
            return false;
    return true;
}

/* strtod() of a number token (C locale), with errno. */
static double number_value(const char *text, const ag_jtok_t *t, int *err)
{
    size_t n = t->end - t->start;
    char *s = malloc(n + 1);
    AG_ASSERT(s != NULL);
    memcpy(s, text + t->start, n);
    s[n] = '\0';
    errno = 0;
    char *end;
    double v = strtod(s, &end);
    *err = errno;
    AG_ASSERT(end == s + n);
    free(s);
    return v;
}

static bool has_lone_surrogate(const char *text, const ag_jtok_t *t)
{
    const char *p = text + t->start, *end = text + t->end;
    while (p < end) {
        if (*p++ != '\\')
            continue;
        if (*p++ != 'u')
            continue;
        unsigned cp = (unsigned)strtoul((char[5]){p[0], p[1], p[2], p[3], 0}, NULL, 16);
        p += 4;
        if (cp < 0xD800 || cp > 0xDFFF)
            continue;
        if (cp >= 0xDC00 || end - p < 6 || p[0] != '\\' || p[1] != 'u')
            return true;
        unsigned lo = (unsigned)strtoul((char[5]){p[2], p[3], p[4], p[5], 0}, NULL, 16);
        if (lo < 0xDC00 || lo > 0xDFFF)
            return true;
        p += 6;
    }
    return false;
}

/* Decodes string token t into b (reset first) and checks the string helpers against it. */
static const char *check_string(const char *text, const ag_jtok_t *t, ag_buf_t *b)
{
    ag_buf_reset(b);
    if (ag_jtok_str_decode(text, t, b) != 0)
        return "str_decode failed";
    if (!ag_utf8_valid(b->data, b->len))
        return "decoded string is not valid UTF-8";
    if (ag_jtok_str_utf16_len(text, t) != ag_utf16_length(b->data, b->len))
        return "str_utf16_len disagrees with the decoded string";
    if (!ag_jtok_str_eqn(text, t, b->data, b->len))
        return "str_eqn(decoded) is false";
    if (b->len > 0 && ag_jtok_str_eqn(text, t, b->data, b->len - 1))
        return "str_eqn(decoded minus a byte) is true";
    /* A buffer capped at exactly the decoded length takes it; one byte less refuses it whole. */
    ag_buf_t tight;
    ag_buf_init(&tight, b->len ? b->len : 1);
    int rc = ag_jtok_str_decode(text, t, &tight);
    bool same = rc == 0 && tight.len == b->len && memcmp(tight.data, b->data, b->len) == 0;
    ag_buf_fini(&tight);
    if (!same)
        return "str_decode into an exactly capped buffer differs";
    if (b->len > 1) {
        ag_buf_init(&tight, b->len - 1);
        rc = ag_jtok_str_decode(text, t, &tight);
        size_t got = tight.len;
        ag_buf_fini(&tight);
        if (rc != AG_ETOOBIG || got != 0)
            return "str_decode into a too small buffer did not fail cleanly";
    }
    return NULL;
}

/* Compares the subtree at token i with jansson's value v. */
static const char *compare(const char *text, const ag_jtok_t *toks, uint32_t i, json_t *v,
                           ag_buf_t *b)
{
    const ag_jtok_t *t = &toks[i];
    switch (t->type) {
    case AG_JT_OBJECT: {
        if (!json_is_object(v))
            return "type differs (object)";
        size_t distinct = 0;
        uint32_t k = i + 1;
        for (uint32_t c = 0; c < t->size; c++) {
            uint32_t vi = k + 1;
            ag_buf_reset(b);
            if (ag_jtok_str_decode(text, &toks[k], b) != 0)
                return "key decode failed";
            int found = ag_jtok_object_getn(text, toks, (int)i, b->data, b->len);
            if (found < 0)
                return "object_getn misses a key that is there";
            if ((uint32_t)found == vi) {
                /* The last occurrence: the one jansson kept. */
                distinct++;
                json_t *jv = json_object_getn(v, b->data, b->len);
                if (!jv)
                    return "jansson lacks a key";
                const char *why = compare(text, toks, vi, jv, b);
                if (why)
                    return why;
            } else if ((uint32_t)found < vi) {
                return "object_getn returned an earlier duplicate";
            }
            k = toks[vi].next;
        }
        if (distinct != json_object_size(v))
            return "number of distinct keys differs";
        return NULL;
    }
    case AG_JT_ARRAY: {
        if (!json_is_array(v) || json_array_size(v) != t->size)
            return "type or size differs (array)";
        for (size_t c = 0; c < t->size; c++) {
            int e = ag_jtok_array_at(toks, (int)i, c);
            if (e < 0)
                return "array_at failed";
            const char *why = compare(text, toks, (uint32_t)e, json_array_get(v, c), b);
            if (why)
                return why;
        }
        if (ag_jtok_array_at(toks, (int)i, t->size) != -1)
            return "array_at past the end";
        return NULL;
    }
    case AG_JT_STRING:
        if (!json_is_string(v))
            return "type differs (string)";
        ag_buf_reset(b);
        if (ag_jtok_str_decode(text, t, b) != 0)
            return "decode failed";
        if (b->len != json_string_length(v) ||
            (b->len && memcmp(b->data, json_string_value(v), b->len) != 0))
            return "decoded string differs";
        return NULL;
    case AG_JT_NUMBER: {
        int64_t iv;
        int err;
        if (number_is_int(text, t)) {
            if (!json_is_integer(v) || ag_jtok_int64(text, t, &iv) != 0 ||
                iv != json_integer_value(v))
                return "integer differs";
        } else {
            if (!json_is_real(v) || ag_jtok_int64(text, t, &iv) != AG_EINVALID)
                return "type differs (real)";
            double d = number_value(text, t, &err);
            if (memcmp(&d, &(double){json_real_value(v)}, sizeof(d)) != 0)
                return "real differs";
        }
        return NULL;
    }
    case AG_JT_TRUE:
        return json_is_true(v) ? NULL : "type differs (true)";
    case AG_JT_FALSE:
        return json_is_false(v) ? NULL : "type differs (false)";
    case AG_JT_NULL:
        return json_is_null(v) ? NULL : "type differs (null)";
    }
    return "bad token type";
}

/* The differences that tokens 0..n of an accepted document can explain for jansson failing. */
static unsigned explain_jansson_failure(const char *text, const ag_jtok_t *toks, uint32_t n,
                                        ag_buf_t *b)
{
    unsigned why = 0;
    /* The deepest nesting: the open containers' ends, innermost last. */
    uint32_t *ends = malloc((n + 1) * sizeof(*ends));
    AG_ASSERT(ends != NULL);
    size_t open = 0, deepest = 0;
    for (uint32_t i = 0; i < n; i++) {
        while (open && ends[open - 1] <= i)
            open--;
        if (toks[i].type == AG_JT_OBJECT || toks[i].type == AG_JT_ARRAY) {
            ends[open++] = toks[i].next;
            deepest = open > deepest ? open : deepest;
        }
    }
    free(ends);
    if (deepest > 2048)
        why |= JTOK_DIFF_DEPTH;
    for (uint32_t i = 0; i < n; i++) {
        const ag_jtok_t *t = &toks[i];
        if (t->type == AG_JT_NUMBER) {
            int64_t iv;
            int err;
            if (number_is_int(text, t)) {
                if (ag_jtok_int64(text, t, &iv) != 0)
                    why |= JTOK_DIFF_INT_RANGE;
            } else if (isinf(number_value(text, t, &err)) && err == ERANGE) {
                why |= JTOK_DIFF_REAL_OVERFLOW;
            }
        } else if (t->type == AG_JT_STRING && t->escaped) {
            if (has_lone_surrogate(text, t))
                why |= JTOK_DIFF_LONE_SURROGATE;
        } else if (t->type == AG_JT_OBJECT) {
            uint32_t k = i + 1;
            for (uint32_t c = 0; c < t->size; c++) {
                ag_buf_reset(b);
                AG_ASSERT(ag_jtok_str_decode(text, &toks[k], b) == 0);
                if (memchr(b->data, '\0', b->len))
                    why |= JTOK_DIFF_NUL_KEY;
                k = toks[k + 1].next;
            }
        }
    }
    return why;
}

/* Whether jansson's error is the kind that one of the differences in `diffs` produces. */
static bool jansson_error_matches(const json_error_t *err, unsigned diffs)
{
    switch (json_error_code(err)) {
    case json_error_numeric_overflow:
        return diffs & (JTOK_DIFF_INT_RANGE | JTOK_DIFF_REAL_OVERFLOW);
    case json_error_null_byte_in_key:
        return diffs & JTOK_DIFF_NUL_KEY;
    case json_error_stack_overflow:
        return diffs & JTOK_DIFF_DEPTH;
    case json_error_invalid_syntax:
        return (diffs & JTOK_DIFF_LONE_SURROGATE) && strncmp(err->text, "invalid Unicode", 15) == 0;
    default:
        return false;
    }
}

/* Checks the tape of an accepted document and decodes every string. */
static const char *check_tape(const char *text, size_t len, const ag_jtok_t *toks, uint32_t n,
                              ag_buf_t *b)
{
    if (check_subtree(text, len, toks, n, 0) != n)
        return "tape invariants violated";
    for (uint32_t i = 0; i < n; i++) {
        if (toks[i].type != AG_JT_STRING)
            continue;
        const char *why = check_string(text, &toks[i], b);
        if (why)
            return why;
    }
    return NULL;
}

/**
 * Parses text[0..len) with jtok and jansson and checks everything above.
 * @return NULL when all holds (*diffs says which documented differences were seen), else what
 *         went wrong (static text).
 */
static const char *jtok_check(const char *text, size_t len, unsigned *diffs)
{
    const char *why = NULL;
    ag_jtok_t *toks = malloc((len + 1) * sizeof(*toks));
    char *stripped = NULL;
    size_t *cuts = NULL;
    json_error_t jerr;
    json_t *j = json_loadb(text, len, JSON_DECODE_ANY | JSON_ALLOW_NUL, &jerr);
    ag_buf_t b;
    ag_buf_init(&b, 0);
    AG_ASSERT(toks != NULL);
    *diffs = 0;

    size_t off = SIZE_MAX;
    int n = ag_jtok_parse(text, len, toks, len + 1, &off);
    if (n > 0) {
        why = check_tape(text, len, toks, (uint32_t)n, &b);
        if (why)
            goto out;
        if (j) {
            why = compare(text, toks, 0, j, &b);
        } else {
            *diffs = explain_jansson_failure(text, toks, (uint32_t)n, &b);
            if (!jansson_error_matches(&jerr, *diffs))
                why = "jansson rejects what jtok accepts";
        }
        /* Fewer tokens than needed is AG_ETOOBIG, never a different success. */
        if (!why && ag_jtok_parse(text, len, toks, (size_t)n - 1, &off) != AG_ETOOBIG)
            why = "one token short did not give AG_ETOOBIG";
    } else if (n == AG_ETOOBIG) {
        size_t opens = 0;
        for (size_t i = 0; i < len; i++)
            opens += text[i] == '[' || text[i] == '{';
        if (opens <= AG_JTOK_MAX_DEPTH)
            JTOK_CHECK_FAIL("AG_ETOOBIG without deep nesting");
        *diffs = JTOK_DIFF_DEPTH;
    } else if (n != AG_EPROTO) {
        JTOK_CHECK_FAIL("unexpected return code");
    } else if (off > len) {
        JTOK_CHECK_FAIL("error offset past the end");
    } else if (j) {
        /* Only jansson's lost NULs may explain this: drop each NUL that jtok stops at, as long as
         * it does, then the result must be accepted, equal jansson's, and every dropped NUL must
         * have followed a number or a literal. */
        stripped = malloc(len + 1);
        cuts = malloc((len + 1) * sizeof(*cuts));
        AG_ASSERT(stripped && cuts);
        memcpy(stripped, text, len);
        size_t slen = len, ncuts = 0;
        while (n == AG_EPROTO && off < slen && stripped[off] == '\0') {
            memmove(stripped + off, stripped + off + 1, slen - off - 1);
            slen--;
            cuts[ncuts++] = off;
            n = ag_jtok_parse(stripped, slen, toks, slen + 1, &off);
        }
        if (n <= 0 || ncuts == 0)
            JTOK_CHECK_FAIL("jtok rejects what jansson accepts");
        for (size_t c = 0; c < ncuts; c++) {
            bool after_scalar = false;
            for (int i = 0; i < n && !after_scalar; i++)
                after_scalar = toks[i].end == cuts[c] && toks[i].type != AG_JT_STRING &&
                               toks[i].type != AG_JT_OBJECT && toks[i].type != AG_JT_ARRAY;
            if (!after_scalar)
                JTOK_CHECK_FAIL("jtok rejects a NUL that jansson accepts elsewhere");
        }
        why = check_tape(stripped, slen, toks, (uint32_t)n, &b);
        if (!why)
            why = compare(stripped, toks, 0, j, &b);
        *diffs = JTOK_DIFF_NUL_AFTER_SCALAR;
    }
out:
    json_decref(j);
    ag_buf_fini(&b);
    free(toks);
    free(stripped);
    free(cuts);
    return why;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    unsigned diffs;
    const char *why = jtok_check((const char *)data, size, &diffs);
    if (why) {
        fprintf(stderr, "fuzz_jtok: %s\n", why);
        abort();
    }
    return 0;
}
