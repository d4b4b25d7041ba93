/* SPDX-License-Identifier: MIT
 *
 * test_jtok.c: the strict JSON tokenizer (util/jtok.c): accepted and rejected documents, the
 * lookups and string helpers, the limits, and a differential check against jansson on the fuzz
 * corpus and on generated documents (the checker is fuzz/fuzz_jtok.c's, included below).
 */
#include "util/platform.h"

#include <dirent.h>
#include <stdint.h>
#include <string.h>

#include "../../fuzz/fuzz_jtok.c"
#include "harness.h"
#include "util/errors.h"
#include "util/jtok.h"

#define MAXTOK 512
/* A literal and its length, which may count NUL bytes inside it. */
#define DOC(lit) lit, sizeof(lit) - 1

/* The tape as text: one letter per token (o a s n t f z), then its size for containers, e.g.
 * {"a":[1,2]} is "o1 s a2 n n". */
static void render(const ag_jtok_t *toks, int n, char *out, size_t cap)
{
    size_t w = 0;
    out[0] = '\0';
    for (int i = 0; i < n && w + 16 < cap; i++) {
        static const char letters[] = "oasntfz";
        if (toks[i].type == AG_JT_OBJECT || toks[i].type == AG_JT_ARRAY)
            w += (size_t)snprintf(out + w, cap - w, "%s%c%u", i ? " " : "", letters[toks[i].type],
                                  toks[i].size);
        else
            w += (size_t)snprintf(out + w, cap - w, "%s%c", i ? " " : "", letters[toks[i].type]);
    }
}

static int parse(const char *s, size_t len, ag_jtok_t *toks, size_t *off)
{
    return ag_jtok_parse(s, len, toks, MAXTOK, off);
}

TEST(test_valid_documents)
{
    static const struct {
        const char *json;
        const char *tape;
    } cases[] = {
        {"{}", "o0"},
        {"[]", "a0"},
        {" \t\r\n[ ] \n", "a0"},
        {"\"\"", "s"},
        {"0", "n"},
        {"-0", "n"},
        {"-0.0e-0", "n"},
        {"123.456E+78", "n"},
        {"1e5", "n"},
        {"true", "t"},
        {"false", "f"},
        {"null", "z"},
        {"[1,\"a\",true,false,null,{},[]]", "a7 n s t f z o0 a0"},
        {"{\"a\":[1,2]}", "o1 s a2 n n"},
        {"{\"a\":1,\"a\":2}", "o2 s n s n"},
        {"{\"a\":{\"b\":{}},\"c\":[[],[[]]]}", "o2 s o1 s o0 s a2 a0 a1 a0"},
        {"[\"\\\"\\\\\\/\\b\\f\\n\\r\\t\\u00e9\\uD83D\\uDE00\"]", "a1 s"},
        {"\"\\u0000\"", "s"},
        {"\"\\ud800\"", "s"}, /* lone surrogates: JSON.parse accepts them */
        {"\"h\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80\"", "s"}, /* 2, 3 and 4-byte UTF-8 */
        {"\"\x7f\"", "s"}, /* DEL is not a control character in JSON */
        {"[ 1 , 2 ]", "a2 n n"},
        {"{ \"k\" : \"v\" }", "o1 s s"},
    };
    ag_jtok_t toks[MAXTOK];
    char got[512];
    for (size_t i = 0; i < AG_ARRAY_LEN(cases); i++) {
        size_t off = 0;
        int n = parse(cases[i].json, strlen(cases[i].json), toks, &off);
        ASSERT_MSG_(n > 0, "%s: rc %d at %zu", cases[i].json, n, off);
        render(toks, n, got, sizeof(got));
        ASSERT_MSG_(strcmp(got, cases[i].tape) == 0, "%s: tape %s, want %s", cases[i].json, got,
                    cases[i].tape);
        ASSERT_EQ(toks[0].next, n);
    }
}

TEST(test_token_ranges)
{
    const char *s = "{\"k\\n\":[10,\"x\"],\"z\":null}";
    ag_jtok_t toks[MAXTOK];
    int n = parse(s, strlen(s), toks, NULL);
    ASSERT_EQ(n, 7);
    ASSERT_EQ(toks[0].start, 0);
    ASSERT_EQ(toks[0].end, strlen(s));
    ASSERT_EQ(toks[1].type, AG_JT_STRING);
    ASSERT(toks[1].escaped);
    ag_str_t raw = ag_jtok_raw(s, &toks[1]);
    ASSERT_MEMEQ(raw.ptr, raw.len, "k\\n");
    ASSERT_EQ(toks[2].type, AG_JT_ARRAY);
    raw = ag_jtok_raw(s, &toks[2]);
    ASSERT_MEMEQ(raw.ptr, raw.len, "[10,\"x\"]");
    ASSERT_EQ(toks[2].next, 5); /* skips 10 and "x" */
    raw = ag_jtok_raw(s, &toks[3]);
    ASSERT_MEMEQ(raw.ptr, raw.len, "10");
    ASSERT(!toks[4].escaped);
    raw = ag_jtok_raw(s, &toks[6]);
    ASSERT_MEMEQ(raw.ptr, raw.len, "null");
}

TEST(test_invalid_documents)
{
    static const struct {
        const char *json;
        size_t len;
        size_t off;
    } cases[] = {
        {DOC(""), 0},
        {DOC(" "), 1},
        {DOC("["), 1},
        {DOC("[1,]"), 3},
        {DOC("{\"a\":1,}"), 7},
        {DOC("{,}"), 1},
        {DOC("[,1]"), 1},
        {DOC("[1 2]"), 3},
        {DOC("{\"a\" 1}"), 5},
        {DOC("{\"a\":}"), 5},
        {DOC("{1:2}"), 1},
        {DOC("{'a':1}"), 1},
        {DOC("[1]]"), 3},
        {DOC("[1}"), 2},
        {DOC("{\"a\":1]"), 6},
        {DOC("1 2"), 2},
        {DOC("01"), 1},
        {DOC("-01"), 2},
        {DOC("+1"), 0},
        {DOC(".5"), 0},
        {DOC("1."), 2},
        {DOC("1.e5"), 2},
        {DOC("1e"), 2},
        {DOC("1e+"), 3},
        {DOC("-"), 1},
        {DOC("- 1"), 1},
        {DOC("0x10"), 1},
        {DOC("NaN"), 0},
        {DOC("Infinity"), 0},
        {DOC("-Infinity"), 1},
        {DOC("tru"), 3},
        {DOC("trUe"), 2},
        {DOC("truee"), 4},
        {DOC("nul"), 3},
        {DOC("True"), 0},
        {DOC("\"abc"), 4},
        {DOC("\"a\nb\""), 2},
        {DOC("\"a\tb\""), 2},
        {DOC("\"\\x41\""), 2},
        {DOC("\"\\u12\""), 5},
        {DOC("\"\\u12g4\""), 5},
        {DOC("\"\\U0041\""), 2},
        {DOC("\"\\\""), 3},
        {DOC("\"\\"), 2},
        {DOC("'a'"), 0},
        {DOC("[1,2"), 4},
        {DOC("/* c */ 1"), 0},
        {DOC("1 // c"), 2},
        {DOC("\xef\xbb\xbf{}"), 0}, /* BOM: JSON.parse rejects it too */
        {DOC("\f1"), 0},            /* form feed is not JSON whitespace */
        {DOC("\v1"), 0},
        {DOC("\xc2\xa0"
             "1"),
         0},                              /* NBSP neither */
        {DOC("\"\xc0\x80\""), 1},         /* overlong NUL */
        {DOC("\"\xc1\xbf\""), 1},         /* overlong 2-byte */
        {DOC("\"\xe0\x80\x80\""), 1},     /* overlong 3-byte */
        {DOC("\"\xf0\x80\x80\x80\""), 1}, /* overlong 4-byte */
        {DOC("\"\xed\xa0\x80\""), 1},     /* U+D800 encoded in UTF-8 */
        {DOC("\"\xf4\x90\x80\x80\""), 1}, /* U+110000 */
        {DOC("\"\xf5\x80\x80\x80\""), 1},
        {DOC("\"\x80\""), 1},     /* lone continuation byte */
        {DOC("\"\xe2\x82\""), 1}, /* truncated sequence */
        {DOC("\"\xe2\x82"), 1},
        {DOC("\"\xff\""), 1},
        {DOC("\"a\0b\""), 2}, /* raw NUL is a control character */
        {DOC("1\0"), 1},
        {DOC("[true\0]"), 5},
        {DOC("{}x"), 2},
        {DOC("[]]"), 2},
        {DOC("\"a\"\"b\""), 3},
    };
    ag_jtok_t toks[MAXTOK];
    for (size_t i = 0; i < AG_ARRAY_LEN(cases); i++) {
        size_t len = cases[i].len;
        size_t off = SIZE_MAX;
        int n = parse(cases[i].json, len, toks, &off);
        ASSERT_MSG_(n == AG_EPROTO, "case %zu (%s): rc %d", i, cases[i].json, n);
        ASSERT_MSG_(off == cases[i].off, "case %zu (%s): offset %zu, want %zu", i, cases[i].json,
                    off, cases[i].off);
    }
    /* NULL with no bytes is an empty document; NULL with bytes, or no room, is a misuse. */
    size_t off = SIZE_MAX;
    ASSERT_EQ(ag_jtok_parse(NULL, 0, toks, MAXTOK, &off), AG_EPROTO);
    ASSERT_EQ(off, 0);
    ASSERT_EQ(ag_jtok_parse(NULL, 1, toks, MAXTOK, NULL), AG_EINVALID);
    ASSERT_EQ(ag_jtok_parse("1", 1, NULL, 1, NULL), AG_EINVALID);
}

/* Every proper prefix of a document whose top level is a container or string is invalid, and the
 * error is found at the cut (or at the start of a UTF-8 sequence the cut split). */
TEST(test_truncation)
{
    static const char *const docs[] = {
        "{\"id\":\"msg_1\",\"content\":[{\"type\":\"text\",\"text\":\"h\xc3\xa9\\n\\u00e9 "
        "\xf0\x9f\x98\x80\\ud83d\\ude00\"}],\"usage\":{\"input_tokens\":-12.5e+3,\"ok\":true,"
        "\"no\":false,\"n\":null}}",
        "[[[]],{},\"\",0,-1.5E-7]",
        "\"\\\"\\\\\\/\\b\\f\\n\\r\\t\"",
    };
    ag_jtok_t toks[MAXTOK];
    for (size_t d = 0; d < AG_ARRAY_LEN(docs); d++) {
        size_t len = strlen(docs[d]);
        ASSERT(parse(docs[d], len, toks, NULL) > 0);
        for (size_t plen = 0; plen < len; plen++) {
            size_t off = SIZE_MAX;
            int n = parse(docs[d], plen, toks, &off);
            ASSERT_MSG_(n == AG_EPROTO, "doc %zu prefix %zu: rc %d", d, plen, n);
            ASSERT_MSG_(off <= plen && off + 3 >= plen, "doc %zu prefix %zu: offset %zu", d, plen,
                        off);
        }
    }
}

TEST(test_object_get)
{
    const char *s = "{\"prompt\":\"a\",\"pr\\u006fmpt\":\"b\",\"model\":{\"prompt\":1},"
                    "\"x\\u0000y\":2,\"\":3,\"list\":[1,[2,3],{\"k\":4}],\"prompt2\":5}";
    ag_jtok_t toks[MAXTOK];
    int n = parse(s, strlen(s), toks, NULL);
    ASSERT(n > 0);
    /* The last of the duplicates wins, matched on the decoded key. */
    int v = ag_jtok_object_get(s, toks, 0, "prompt");
    ASSERT(v > 0);
    ASSERT(ag_jtok_str_eq(s, &toks[v], "b"));
    ASSERT(!ag_jtok_str_eq(s, &toks[v], "a"));
    /* Nested keys are not the object's own. */
    int m = ag_jtok_object_get(s, toks, 0, "model");
    ASSERT_EQ(toks[m].type, AG_JT_OBJECT);
    ASSERT_EQ(ag_jtok_object_get(s, toks, m, "prompt"), m + 2);
    ASSERT_EQ(ag_jtok_object_get(s, toks, 0, "k"), -1);
    ASSERT_EQ(ag_jtok_object_get(s, toks, 0, "prompt3"), -1);
    ASSERT_EQ(ag_jtok_object_get(s, toks, 0, "promp"), -1);
    int p2 = ag_jtok_object_get(s, toks, 0, "prompt2");
    int64_t iv = 0;
    ASSERT_EQ(ag_jtok_int64(s, &toks[p2], &iv), 0);
    ASSERT_EQ(iv, 5);
    /* Keys with NUL and the empty key. */
    int xy = ag_jtok_object_getn(s, toks, 0, "x\0y", 3);
    ASSERT(xy > 0);
    ASSERT_EQ(ag_jtok_int64(s, &toks[xy], &iv), 0);
    ASSERT_EQ(iv, 2);
    ASSERT_EQ(ag_jtok_object_get(s, toks, 0, "x"), -1);
    int e = ag_jtok_object_get(s, toks, 0, "");
    ASSERT_EQ(ag_jtok_int64(s, &toks[e], &iv), 0);
    ASSERT_EQ(iv, 3);
    /* Not an object. */
    ASSERT_EQ(ag_jtok_object_get(s, toks, -1, "prompt"), -1);
    ASSERT_EQ(ag_jtok_object_get(s, toks, v, "prompt"), -1);
    int list = ag_jtok_object_get(s, toks, 0, "list");
    ASSERT_EQ(ag_jtok_object_get(s, toks, list, "k"), -1);

    /* Arrays: elements are whole subtrees. */
    ASSERT_EQ(toks[list].size, 3);
    int a0 = ag_jtok_array_at(toks, list, 0);
    int a1 = ag_jtok_array_at(toks, list, 1);
    int a2 = ag_jtok_array_at(toks, list, 2);
    ASSERT_EQ(a0, list + 1);
    ASSERT_EQ(toks[a1].type, AG_JT_ARRAY);
    ASSERT_EQ(ag_jtok_int64(s, &toks[ag_jtok_array_at(toks, a1, 1)], &iv), 0);
    ASSERT_EQ(iv, 3);
    ASSERT_EQ(toks[a2].type, AG_JT_OBJECT);
    ASSERT_EQ(ag_jtok_int64(s, &toks[ag_jtok_object_get(s, toks, a2, "k")], &iv), 0);
    ASSERT_EQ(iv, 4);
    ASSERT_EQ(ag_jtok_array_at(toks, list, 3), -1);
    ASSERT_EQ(ag_jtok_array_at(toks, -1, 0), -1);
    ASSERT_EQ(ag_jtok_array_at(toks, 0, 0), -1);
    ASSERT_EQ(ag_jtok_array_at(toks, a0, 0), -1);
}

TEST(test_str_eq)
{
    const char *s = "[\"abc\",\"a\\u0062c\",\"a\\\\c\",\"\\u0000\",\"\",1]";
    ag_jtok_t toks[MAXTOK];
    ASSERT(parse(s, strlen(s), toks, NULL) > 0);
    ASSERT(ag_jtok_str_eq(s, &toks[1], "abc"));
    ASSERT(ag_jtok_str_eq(s, &toks[2], "abc"));
    ASSERT(!ag_jtok_str_eq(s, &toks[2], "ab"));
    ASSERT(!ag_jtok_str_eq(s, &toks[2], "abcd"));
    ASSERT(!ag_jtok_str_eq(s, &toks[2], "a\\u0062c"));
    ASSERT(ag_jtok_str_eq(s, &toks[3], "a\\c"));
    ASSERT(ag_jtok_str_eqn(s, &toks[4], "\0", 1));
    ASSERT(!ag_jtok_str_eq(s, &toks[4], ""));
    ASSERT(ag_jtok_str_eq(s, &toks[5], ""));
    ASSERT(!ag_jtok_str_eq(s, &toks[6], "1")); /* a number is not a string */
}

static bool decodes_to(const char *json, const char *want, size_t want_len)
{
    ag_jtok_t toks[8];
    if (ag_jtok_parse(json, strlen(json), toks, 8, NULL) != 1)
        return false;
    ag_buf_t b;
    ag_buf_init(&b, 0);
    bool ok = ag_jtok_str_decode(json, &toks[0], &b) == 0 && b.len == want_len &&
              memcmp(b.data, want, want_len) == 0;
    ag_buf_fini(&b);
    return ok;
}

#define DECODES_TO(json, lit) ASSERT_MSG_(decodes_to(json, lit, sizeof(lit) - 1), "%s", json)

TEST(test_decode)
{
    DECODES_TO("\"plain\"", "plain");
    DECODES_TO("\"\"", "");
    DECODES_TO("\"\\\"\\\\\\/\\b\\f\\n\\r\\t\"", "\"\\/\b\f\n\r\t");
    DECODES_TO("\"\\u0041\\u00e9\\u00E9\\u20ac\\uFFFF\"",
               "A\xc3\xa9\xc3\xa9\xe2\x82\xac\xef\xbf\xbf");
    DECODES_TO("\"\\u007f\\u0080\\u07ff\\u0800\"", "\x7f\xc2\x80\xdf\xbf\xe0\xa0\x80");
    DECODES_TO("\"a\\u0000b\"", "a\0b");
    DECODES_TO("\"\\ud83d\\ude00\"", "\xf0\x9f\x98\x80"); /* U+1F600 */
    DECODES_TO("\"\\uD800\\uDC00\\uDBFF\\uDFFF\"", "\xf0\x90\x80\x80\xf4\x8f\xbf\xbf");
    DECODES_TO("\"\xf0\x9f\x98\x80 raw\"", "\xf0\x9f\x98\x80 raw"); /* raw UTF-8 passes through */
    /* Lone surrogates become U+FFFD, one per escape, as TextEncoder would write them. */
    DECODES_TO("\"\\ud800\"", "\xef\xbf\xbd");
    DECODES_TO("\"\\udc00\"", "\xef\xbf\xbd");
    DECODES_TO("\"\\ud800x\"", "\xef\xbf\xbdx");
    DECODES_TO("\"\\ud800\\u0041\"", "\xef\xbf\xbd"
                                     "A");
    DECODES_TO("\"\\udc00\\ud800\"", "\xef\xbf\xbd\xef\xbf\xbd");
    DECODES_TO("\"\\ud800\\ud800\\udc00\"", "\xef\xbf\xbd\xf0\x90\x80\x80");
    DECODES_TO("\"\\ud800\\n\"", "\xef\xbf\xbd\n");

    /* Appends, and fails whole on a buffer's cap. */
    const char *s = "[\"a\\nb\",7]";
    ag_jtok_t toks[4];
    ASSERT_EQ(ag_jtok_parse(s, strlen(s), toks, 4, NULL), 3);
    ag_buf_t b;
    ag_buf_init(&b, 5);
    ASSERT_EQ(ag_buf_append(&b, "xy", 2), 0);
    ASSERT_EQ(ag_jtok_str_decode(s, &toks[1], &b), 0); /* needs 3 of the 3 left, raw is 4 */
    ASSERT_MEMEQ(b.data, b.len, "xya\nb");
    ASSERT_EQ(ag_jtok_str_decode(s, &toks[1], &b), AG_ETOOBIG);
    ASSERT_EQ(b.len, 5);
    ASSERT_EQ(ag_jtok_str_decode(s, &toks[2], &b), AG_EINVALID);
    ag_buf_fini(&b);
}

static size_t utf16_len_of(const char *json)
{
    ag_jtok_t toks[8];
    if (ag_jtok_parse(json, strlen(json), toks, 8, NULL) != 1)
        return SIZE_MAX;
    return ag_jtok_str_utf16_len(json, &toks[0]);
}

TEST(test_utf16_len)
{
    ASSERT_EQ(utf16_len_of("\"\""), 0);
    ASSERT_EQ(utf16_len_of("\"abc\""), 3);
    ASSERT_EQ(utf16_len_of("\"\xc3\xa9\""), 1);                 /* é */
    ASSERT_EQ(utf16_len_of("\"\xe4\xb8\xad\xe6\x96\x87\""), 2); /* 中文 */
    ASSERT_EQ(utf16_len_of("\"\xf0\x9f\x98\x80\""), 2);         /* 😀: a surrogate pair in JS */
    ASSERT_EQ(utf16_len_of("\"\\ud83d\\ude00\""), 2);
    ASSERT_EQ(utf16_len_of("\"\\ud800\""), 1); /* "\ud800".length === 1 */
    ASSERT_EQ(utf16_len_of("\"a\\nb\\u0000\\\\\""), 5);
    ASSERT_EQ(utf16_len_of("\"\\u00e9\xc3\xa9\\\"\xf0\x9f\x98\x80x\""), 6);
    /* The seed's 4000-unit prompt limit, at the edge: 2000 emoji is 4000 units. */
    char big[2 + 4 * 2001 + 1];
    size_t w = 0;
    big[w++] = '"';
    for (int i = 0; i < 2000; i++) {
        memcpy(big + w, "\xf0\x9f\x98\x80", 4);
        w += 4;
    }
    big[w++] = '"';
    big[w] = '\0';
    ASSERT_EQ(utf16_len_of(big), 4000);
    ag_jtok_t toks[2];
    const char *num = "12";
    ASSERT_EQ(ag_jtok_parse(num, 2, toks, 2, NULL), 1);
    ASSERT_EQ(ag_jtok_str_utf16_len(num, &toks[0]), 0);
}

static int int64_of(const char *json, int64_t *out)
{
    ag_jtok_t toks[8];
    int n = ag_jtok_parse(json, strlen(json), toks, 8, NULL);
    if (n != 1)
        return n;
    return ag_jtok_int64(json, &toks[0], out);
}

TEST(test_int64)
{
    int64_t v = 1;
    ASSERT_EQ(int64_of("0", &v), 0);
    ASSERT_EQ(v, 0);
    ASSERT_EQ(int64_of("-0", &v), 0);
    ASSERT_EQ(v, 0);
    ASSERT_EQ(int64_of("1024", &v), 0);
    ASSERT_EQ(v, 1024);
    ASSERT_EQ(int64_of("-42", &v), 0);
    ASSERT_EQ(v, -42);
    ASSERT_EQ(int64_of("9223372036854775807", &v), 0);
    ASSERT(v == INT64_MAX);
    ASSERT_EQ(int64_of("-9223372036854775808", &v), 0);
    ASSERT(v == INT64_MIN);
    v = 7;
    ASSERT_EQ(int64_of("9223372036854775808", &v), AG_EINVALID);
    ASSERT_EQ(int64_of("-9223372036854775809", &v), AG_EINVALID);
    ASSERT_EQ(int64_of("18446744073709551616", &v), AG_EINVALID);
    ASSERT_EQ(int64_of("100000000000000000000000000000", &v), AG_EINVALID);
    ASSERT_EQ(int64_of("1.0", &v), AG_EINVALID);
    ASSERT_EQ(int64_of("1e3", &v), AG_EINVALID);
    ASSERT_EQ(int64_of("-1E0", &v), AG_EINVALID);
    ASSERT_EQ(int64_of("\"1\"", &v), AG_EINVALID);
    ASSERT_EQ(int64_of("true", &v), AG_EINVALID);
    ASSERT_EQ(v, 7); /* untouched on failure */
}

/* n nested arrays around a 1. */
static char *nested(size_t depth, size_t *len)
{
    char *s = malloc(2 * depth + 2);
    memset(s, '[', depth);
    s[depth] = '1';
    memset(s + depth + 1, ']', depth);
    s[2 * depth + 1] = '\0';
    *len = 2 * depth + 1;
    return s;
}

TEST(test_depth_limit)
{
    /* JSON.parse takes any depth a request body can hold; so does the tokenizer,
     * with no stack of its own (a worker thread's stack would not hold it). */
    const size_t D = AG_JTOK_MAX_DEPTH;
    ag_jtok_t *toks = malloc((2 * D + 8) * sizeof(*toks));
    ASSERT(toks != NULL);
    size_t len, off = 0;
    char *s = nested(D, &len);
    int n = ag_jtok_parse(s, len, toks, D + 8, &off);
    free(s);
    ASSERT_EQ(n, (int)D + 1);
    ASSERT_EQ(toks[0].next, n);
    ASSERT_EQ(toks[D - 1].size, 1);
    ASSERT_EQ(toks[D - 1].next, n);
    ASSERT_EQ(toks[D].type, AG_JT_NUMBER);

    s = nested(D + 1, &len);
    n = ag_jtok_parse(s, len, toks, D + 8, &off);
    free(s);
    ASSERT_EQ(n, AG_ETOOBIG);
    ASSERT_EQ(off, D);

    /* Objects count too, and depth is released on close. */
    char *buf = malloc(8 * D + 16);
    ASSERT(buf != NULL);
    size_t w = 0;
    for (size_t i = 0; i < D; i++) {
        memcpy(buf + w, "{\"a\":", 5);
        w += 5;
    }
    buf[w++] = '1';
    memset(buf + w, '}', D);
    w += D;
    ASSERT_EQ(ag_jtok_parse(buf, w, toks, D, NULL), AG_ETOOBIG); /* tokens */
    ASSERT_EQ(ag_jtok_parse(buf, w, toks, 2 * D + 8, NULL), (int)(2 * D + 1));
    ASSERT_EQ(toks[0].size, 1);
    ASSERT_EQ(toks[0].next, 2 * D + 1);
    buf[w - D - 1] = '['; /* the innermost value opens one level more */
    ASSERT_EQ(ag_jtok_parse(buf, w, toks, 2 * D + 8, NULL), AG_ETOOBIG);

    /* Many siblings at depth 2 are fine: the limit is on nesting, not on containers. */
    w = 0;
    buf[w++] = '[';
    for (int i = 0; i < 600; i++) {
        memcpy(buf + w, "[],", 3);
        w += 3;
    }
    buf[w - 1] = ']';
    ASSERT_EQ(ag_jtok_parse(buf, w, toks, 700, NULL), 601);
    ASSERT_EQ(toks[0].size, 600);
    /* Closing a deep container hands the parent back: siblings after it. */
    const char *mixed = "[[[1]],{\"k\":[2,[3]]},4]";
    ASSERT_EQ(ag_jtok_parse(mixed, strlen(mixed), toks, 64, NULL), 11);
    ASSERT_EQ(toks[0].size, 3);
    ASSERT_EQ(toks[1].next, 4);
    ASSERT_EQ(toks[4].type, AG_JT_OBJECT);
    ASSERT_EQ(toks[4].next, 10);
    ASSERT_EQ(toks[10].type, AG_JT_NUMBER);
    free(buf);
    free(toks);
}

TEST(test_max_tokens)
{
    const char *s = "{\"a\":[1,2,{\"b\":null}],\"c\":\"d\"}";
    ag_jtok_t toks[16];
    int n = ag_jtok_parse(s, strlen(s), toks, 16, NULL);
    ASSERT_EQ(n, 10);
    ASSERT_EQ(ag_jtok_parse(s, strlen(s), toks, 10, NULL), 10);
    for (size_t max = 0; max < 10; max++) {
        size_t off = SIZE_MAX;
        ASSERT_EQ(ag_jtok_parse(s, strlen(s), toks, max, &off), AG_ETOOBIG);
        ASSERT(off < strlen(s));
    }
    /* A huge max_tokens is fine: no more than len tokens are ever written. */
    ASSERT_EQ(ag_jtok_parse(s, strlen(s), toks, SIZE_MAX, NULL), 10);
    /* Offsets are 32-bit: longer input is refused before a byte of it is read. */
    size_t off = SIZE_MAX;
    ASSERT_EQ(ag_jtok_parse(s, (size_t)UINT32_MAX + 1, toks, 16, &off), AG_ETOOBIG);
    ASSERT_EQ(off, 0);
    /* A syntax error found before the limit is still AG_EPROTO. */
    ASSERT_EQ(ag_jtok_parse("[1,]", 4, toks, 2, NULL), AG_EPROTO);
}

/* The documented differences from jansson are classified as such, one by one. */
TEST(test_jansson_differences)
{
    static const struct {
        const char *json;
        size_t len;
        unsigned diffs;
    } cases[] = {
        {DOC("9223372036854775808"), JTOK_DIFF_INT_RANGE},
        {DOC("[-9223372036854775809]"), JTOK_DIFF_INT_RANGE},
        {DOC("9223372036854775807"), 0},
        {DOC("1e400"), JTOK_DIFF_REAL_OVERFLOW},
        {DOC("{\"a\":-1.7976931348623159e308}"), JTOK_DIFF_REAL_OVERFLOW},
        {DOC("1e-400"), 0}, /* underflow is 0 for both */
        {DOC("\"\\ud800\""), JTOK_DIFF_LONE_SURROGATE},
        {DOC("[\"\\udfff\"]"), JTOK_DIFF_LONE_SURROGATE},
        {DOC("\"\\ud800\\u0041\""), JTOK_DIFF_LONE_SURROGATE},
        {DOC("\"\\ud83d\\ude00\""), 0},
        {DOC("{\"a\\u0000\":1}"), JTOK_DIFF_NUL_KEY},
        {DOC("{\"a\":\"\\u0000\"}"), 0}, /* NUL in a value is fine for both */
        {DOC("1\0"), JTOK_DIFF_NUL_AFTER_SCALAR},
        {DOC("[true\0,null\0,-2.5e3\0]"), JTOK_DIFF_NUL_AFTER_SCALAR},
        {DOC("{\"a\":false\0}"), JTOK_DIFF_NUL_AFTER_SCALAR},
        {DOC("1\0\0"), 0},   /* only one NUL is lost: both reject */
        {DOC("\"a\"\0"), 0}, /* not after a string */
        {DOC("1 \0"), 0},    /* nor after whitespace */
        {DOC("[1,]"), 0},
    };
    for (size_t i = 0; i < AG_ARRAY_LEN(cases); i++) {
        size_t len = cases[i].len;
        unsigned diffs = 99;
        const char *why = jtok_check(cases[i].json, len, &diffs);
        ASSERT_MSG_(why == NULL, "case %zu (%s): %s", i, cases[i].json, why);
        ASSERT_MSG_(diffs == cases[i].diffs, "case %zu (%s): diffs %#x, want %#x", i, cases[i].json,
                    diffs, cases[i].diffs);
    }
    size_t len;
    char *s = nested(300, &len);
    unsigned diffs = 99;
    const char *why = jtok_check(s, len, &diffs);
    free(s);
    ASSERT_MSG_(why == NULL, "300 deep: %s", why);
    ASSERT_EQ(diffs, 0); /* both take it, as JSON.parse does */
    s = nested(3000, &len);
    why = jtok_check(s, len, &diffs);
    free(s);
    ASSERT_MSG_(why == NULL, "3000 deep: %s", why);
    ASSERT_EQ(diffs, JTOK_DIFF_DEPTH); /* jansson stops at 2048 */
}

static char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    char *data = NULL;
    size_t cap = 0, n = 0;
    for (;;) {
        if (n == cap) {
            cap = cap ? cap * 2 : 4096;
            char *p = realloc(data, cap);
            if (!p)
                break;
            data = p;
        }
        size_t got = fread(data + n, 1, cap - n, f);
        if (got == 0)
            break;
        n += got;
    }
    fclose(f);
    *len = n;
    return data ? data : malloc(1);
}

TEST(test_differential_corpus)
{
    DIR *d = opendir(AG_JTOK_CORPUS);
    ASSERT_MSG_(d != NULL, "cannot open %s", AG_JTOK_CORPUS);
    struct dirent *e;
    int files = 0, accepted = 0, failures = 0;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        char path[4096];
        snprintf(path, sizeof(path), "%s/%s", AG_JTOK_CORPUS, e->d_name);
        size_t len = 0;
        char *data = read_file(path, &len);
        if (!data) {
            failures++;
            continue;
        }
        ag_jtok_t *toks = malloc((len + 1) * sizeof(*toks));
        unsigned diffs;
        const char *why = jtok_check(data, len, &diffs);
        if (why) {
            fprintf(stderr, "  %s: %s\n", e->d_name, why);
            failures++;
        }
        accepted += toks && ag_jtok_parse(data, len, toks, len + 1, NULL) > 0;
        files++;
        free(toks);
        free(data);
    }
    closedir(d);
    ASSERT_EQ(failures, 0);
    ASSERT(files >= 20);
    ASSERT(accepted >= 5 && accepted < files);
}

/* ---- generated documents ---- */

typedef struct {
    uint64_t s;
    char *buf;
    size_t len, cap;
} gen_t;

static uint32_t rnd(gen_t *g, uint32_t n)
{
    /* xorshift64*: deterministic, so a failure reproduces. */
    g->s ^= g->s >> 12;
    g->s ^= g->s << 25;
    g->s ^= g->s >> 27;
    return (uint32_t)((g->s * 2685821657736338717ull) >> 32) % n;
}

static void put(gen_t *g, const char *s, size_t n)
{
    if (g->len + n > g->cap) {
        g->cap = (g->len + n) * 2;
        g->buf = realloc(g->buf, g->cap);
        AG_ASSERT(g->buf != NULL);
    }
    memcpy(g->buf + g->len, s, n);
    g->len += n;
}

static void put_str(gen_t *g, const char *s)
{
    put(g, s, strlen(s));
}

static void gen_ws(gen_t *g)
{
    static const char *const ws[] = {"", "", "", " ", "\n", "\t", "\r\n  "};
    put_str(g, ws[rnd(g, AG_ARRAY_LEN(ws))]);
}

static void gen_string(gen_t *g)
{
    static const char *const pieces[] = {
        "a",
        "prompt",
        " ",
        "text",
        "\\n",
        "\\\"",
        "\\\\",
        "\\/",
        "\\b\\f\\r\\t",
        "\\u0041",
        "\\u00e9",
        "\\u20AC",
        "\\u0000",
        "\\ud83d\\ude00",
        "\\uDBFF\\uDFFF",
        "\\ud800",
        "\\udc00",
        "\xc3\xa9",
        "\xe2\x82\xac",
        "\xf0\x9f\x98\x80",
        "\xf4\x8f\xbf\xbf",
        "\x7f",
        "'",
        "/",
        "{",
        "]",
        ",",
        ":",
    };
    put_str(g, "\"");
    for (uint32_t i = rnd(g, 6); i > 0; i--)
        put_str(g, pieces[rnd(g, AG_ARRAY_LEN(pieces))]);
    put_str(g, "\"");
}

static void gen_number(gen_t *g)
{
    static const char *const nums[] = {
        "0",
        "-0",
        "1",
        "-1",
        "42",
        "1024",
        "9223372036854775807",
        "-9223372036854775808",
        "9223372036854775808",
        "-9223372036854775809",
        "123456789012345678901234567890",
        "0.5",
        "-0.0",
        "3.14159",
        "1e10",
        "1E-5",
        "2.5e+3",
        "1e308",
        "1e309",
        "-1e400",
        "1e-400",
        "4.9e-324",
        "1.7976931348623157e308",
        "0e0",
        "10000000000000000000000e-10",
    };
    put_str(g, nums[rnd(g, AG_ARRAY_LEN(nums))]);
}

static void gen_value(gen_t *g, int depth)
{
    uint32_t kind = rnd(g, depth > 4 ? 6 : 9);
    switch (kind) {
    case 0:
    case 1:
        gen_string(g);
        break;
    case 2:
    case 3:
        gen_number(g);
        break;
    case 4:
        put_str(g, rnd(g, 2) ? "true" : "false");
        break;
    case 5:
        put_str(g, "null");
        break;
    case 6:
    case 7: {
        put_str(g, "{");
        uint32_t n = rnd(g, 4);
        for (uint32_t i = 0; i < n; i++) {
            gen_ws(g);
            gen_string(g);
            gen_ws(g);
            put_str(g, ":");
            gen_ws(g);
            gen_value(g, depth + 1);
            gen_ws(g);
            if (i + 1 < n)
                put_str(g, ",");
        }
        gen_ws(g);
        put_str(g, "}");
        break;
    }
    default: {
        put_str(g, "[");
        uint32_t n = rnd(g, 4);
        for (uint32_t i = 0; i < n; i++) {
            gen_ws(g);
            gen_value(g, depth + 1);
            gen_ws(g);
            if (i + 1 < n)
                put_str(g, ",");
        }
        gen_ws(g);
        put_str(g, "]");
        break;
    }
    }
}

/* A small edit that is likely to land on a boundary the parser must get right. */
static void mutate(gen_t *g)
{
    static const char alphabet[] = {'\0',   '\x01', '\x1f', ' ',    '"',    '\\', ',',
                                    ':',    '[',    ']',    '{',    '}',    '0',  '1',
                                    '-',    '.',    'e',    'u',    't',    'n',  '\x80',
                                    '\xc0', '\xed', '\xf4', '\xff', '\xef', 'x',  '\n'};
    if (g->len == 0)
        return;
    size_t at = rnd(g, (uint32_t)g->len);
    char c = alphabet[rnd(g, sizeof(alphabet))];
    switch (rnd(g, 3)) {
    case 0: /* delete */
        memmove(g->buf + at, g->buf + at + 1, g->len - at - 1);
        g->len--;
        break;
    case 1: /* replace */
        g->buf[at] = c;
        break;
    default: /* insert */
        put(g, "", 1);
        memmove(g->buf + at + 1, g->buf + at, g->len - at - 1);
        g->buf[at] = c;
        break;
    }
}

TEST(test_differential_generated)
{
    gen_t g = {.s = 0x9E3779B97F4A7C15ull};
    int accepted = 0, rejected = 0, failures = 0, diff_docs = 0;
    for (int i = 0; i < 600; i++) {
        g.len = 0;
        gen_ws(&g);
        gen_value(&g, 0);
        gen_ws(&g);
        if (i % 2)
            for (uint32_t m = rnd(&g, 3) + 1; m > 0; m--)
                mutate(&g);
        unsigned diffs;
        const char *why = jtok_check(g.buf ? g.buf : "", g.len, &diffs);
        if (why) {
            fprintf(stderr, "  doc %d: %s: %.*s\n", i, why, (int)g.len, g.buf);
            failures++;
            continue;
        }
        ag_jtok_t *toks = malloc((g.len + 1) * sizeof(*toks));
        ASSERT(toks != NULL);
        int n = ag_jtok_parse(g.buf ? g.buf : "", g.len, toks, g.len + 1, NULL);
        free(toks);
        if (n > 0)
            accepted++;
        else
            rejected++;
        diff_docs += diffs != 0;
    }
    free(g.buf);
    printf("     generated: %d accepted, %d rejected, %d with a documented difference\n", accepted,
           rejected, diff_docs);
    ASSERT_EQ(failures, 0);
    /* The generator must exercise both verdicts and the documented differences. */
    ASSERT(accepted >= 150);
    ASSERT(rejected >= 100);
    ASSERT(diff_docs >= 20);
}

AG_TESTS(AG_TEST_ENTRY(test_valid_documents) AG_TEST_ENTRY(test_token_ranges)
             AG_TEST_ENTRY(test_invalid_documents) AG_TEST_ENTRY(test_truncation)
                 AG_TEST_ENTRY(test_object_get) AG_TEST_ENTRY(test_str_eq)
                     AG_TEST_ENTRY(test_decode) AG_TEST_ENTRY(test_utf16_len)
                         AG_TEST_ENTRY(test_int64) AG_TEST_ENTRY(test_depth_limit)
                             AG_TEST_ENTRY(test_max_tokens) AG_TEST_ENTRY(test_jansson_differences)
                                 AG_TEST_ENTRY(test_differential_corpus)
                                     AG_TEST_ENTRY(test_differential_generated))
