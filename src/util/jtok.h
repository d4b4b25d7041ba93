/* SPDX-License-Identifier: MIT
 *
 * jtok.h: a strict, validating, allocation-free JSON tokenizer for the hot paths (a client's
 * request body, an upstream Messages answer). It writes a flat token tape (jsmn's idea) into
 * caller-owned memory; jansson stays for everything that builds or edits JSON.
 * Every function is reentrant and keeps no state: any thread may call it on its own tokens.
 */
#ifndef AG_UTIL_JTOK_H
#define AG_UTIL_JTOK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util/buf.h"
#include "util/str.h"

/** Containers nested deeper than this make ag_jtok_parse() fail with AG_ETOOBIG. */
/* Deeper than JSON.parse goes in practice (V8 takes a million levels); the
 * parser keeps no stack of its own, so the bound is only a sanity limit. */
#define AG_JTOK_MAX_DEPTH 1000000

typedef enum ag_jt_type {
    AG_JT_OBJECT,
    AG_JT_ARRAY,
    AG_JT_STRING,
    AG_JT_NUMBER,
    AG_JT_TRUE,
    AG_JT_FALSE,
    AG_JT_NULL,
} ag_jt_type_t;

typedef struct ag_jtok {
    ag_jt_type_t type;
    /* Byte range [start, end) in the input. Strings: inside the quotes, raw (still escaped).
     * Containers: from the opening bracket to the closing one, inclusive. */
    uint32_t start, end;
    uint32_t size; /* objects: number of keys (duplicates counted); arrays: elements */
    uint32_t next; /* index of the token after this one's whole subtree: skips it in O(1) */
    bool escaped;  /* strings: holds a backslash escape, so the raw bytes differ from the value */
} ag_jtok_t;

/**
 * Tokenizes text[0..len): exactly one JSON value (RFC 8259), with optional whitespace around it.
 * Token 0 is the top-level value; an object's tokens are key, value, key, value... where each key
 * is a STRING token and each value is a whole subtree.
 *
 * Strict like JavaScript's JSON.parse: whitespace is SP, HT, LF, CR only (a leading BOM is an
 * error); strings hold no raw byte < 0x20, only the eight short escapes and \uXXXX, and must be
 * well-formed UTF-8 (no overlongs, no UTF-8-encoded surrogates, nothing above U+10FFFF); \u0000
 * and escaped lone surrogates are accepted, as JSON.parse accepts them; numbers follow the RFC
 * grammar and may be of any size; no comments, no trailing commas; duplicate keys are allowed.
 *
 * @param text        the input; borrowed. Tokens refer to it by offset, so it must outlive them.
 * @param toks        caller-owned room for max_tokens tokens. At most `len` tokens are ever used.
 * @param err_offset  may be NULL; on failure, the offset of the first byte that could not be
 *                    accepted (len when the input ended too early).
 * @return the number of tokens used (> 0); AG_EPROTO for invalid JSON; AG_ETOOBIG when more
 *         than max_tokens tokens are needed, containers nest deeper than AG_JTOK_MAX_DEPTH, or
 *         len >= 4 GiB. Never allocates.
 */
int ag_jtok_parse(const char *text, size_t len, ag_jtok_t *toks, size_t max_tokens,
                  size_t *err_offset);

/* The lookups below take the text and tokens of one successful ag_jtok_parse() and an index that
 * it returned or that another lookup returned; they check the token's type, never the index. */

/**
 * The value stored under `key` in object `obj`: the index of its first token, or -1 when `obj` is
 * -1 or not an object, or has no such key. Compares decoded keys, so "pr\u006fmpt" matches
 * "prompt". With duplicate keys the last one wins, as in JSON.parse. O(number of keys).
 */
int ag_jtok_object_get(const char *text, const ag_jtok_t *toks, int obj, const char *key);
/** ag_jtok_object_get() with an explicit key length, for keys that hold NUL bytes. */
int ag_jtok_object_getn(const char *text, const ag_jtok_t *toks, int obj, const char *key,
                        size_t keylen);

/** Index of element i of array `arr`, or -1 when arr is -1, not an array, or too short. */
int ag_jtok_array_at(const ag_jtok_t *toks, int arr, size_t i);

/** True when `t` is a STRING whose decoded value equals the C string s. */
bool ag_jtok_str_eq(const char *text, const ag_jtok_t *t, const char *s);
/** ag_jtok_str_eq() with an explicit length, for values that hold NUL bytes. */
bool ag_jtok_str_eqn(const char *text, const ag_jtok_t *t, const char *s, size_t n);

/**
 * Appends the decoded value of STRING token `t` to `out` as UTF-8 (not NUL-terminated; it may
 * hold NUL bytes from \u0000). A surrogate pair of escapes becomes one 4-byte character; an
 * escaped lone surrogate (which UTF-8 cannot carry) becomes U+FFFD, which is what a JavaScript
 * string holding it turns into when it is encoded to UTF-8 (TextEncoder, fetch). A caller that
 * must forward such a string unchanged can copy the raw bytes (ag_jtok_raw()) instead: they are
 * already valid JSON string contents.
 * @return 0; AG_EINVALID when t is not a string; or ag_buf_append()'s error (AG_ETOOBIG past the
 *         buffer's cap, -ENOMEM), leaving out->len as it was.
 */
int ag_jtok_str_decode(const char *text, const ag_jtok_t *t, ag_buf_t *out);

/**
 * The length of STRING token `t` in UTF-16 code units, as JavaScript's .length counts it
 * (an emoji is 2; an escaped lone surrogate is 1). Decodes nothing into memory. 0 when t is not
 * a string.
 */
size_t ag_jtok_str_utf16_len(const char *text, const ag_jtok_t *t);

/**
 * The value of NUMBER token `t` when it is written as an integer (no fraction, no exponent: the
 * same rule as jansson's json_is_integer()) and fits int64_t. "-0" is 0.
 * @return 0 and sets *out, or AG_EINVALID (not a number, a fraction or exponent, out of range).
 */
int ag_jtok_int64(const char *text, const ag_jtok_t *t, int64_t *out);

/** The raw bytes of token `t` (for a string: inside the quotes, still escaped); borrowed from
 *  text. */
static inline ag_str_t ag_jtok_raw(const char *text, const ag_jtok_t *t)
{
    return ag_str(text + t->start, t->end - t->start);
}

#endif
