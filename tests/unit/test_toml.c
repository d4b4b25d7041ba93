/* SPDX-License-Identifier: MIT
 *
 * test_toml.c: unit tests of src/config/toml.c: error positions and messages,
 * lookups and accessors, the redefinition rules, limits, and inputs the
 * toml-test suite does not cover. The suite itself runs in test_toml_suite.
 */
#include "util/platform.h"

#include <math.h>
#include <string.h>

#include "config/toml.h"
#include "util/buf.h"
#include "util/errors.h"
#include "util/utf.h"

#include "harness.h"

static ag_toml_value_t *parse(const char *text)
{
    ag_toml_error_t err;
    ag_toml_value_t *root = ag_toml_parse(text, strlen(text), &err);
    if (root == NULL)
        fprintf(stderr, "  unexpected error %u:%u: %s\n", err.line, err.col, err.message);
    return root;
}

/* Parses text that must fail at line:col with a message containing `want`. */
static bool fails_at(const char *text, size_t len, uint32_t line, uint32_t col, const char *want)
{
    ag_toml_error_t err;
    ag_toml_value_t *root = ag_toml_parse(text, len, &err);
    if (root != NULL) {
        ag_toml_free(root);
        fprintf(stderr, "  accepted: %s\n", text);
        return false;
    }
    if (err.line != line || err.col != col || strstr(err.message, want) == NULL) {
        fprintf(stderr, "  for %s\n  got %u:%u: %s\n  want %u:%u: ...%s...\n", text, err.line,
                err.col, err.message, line, col, want);
        return false;
    }
    return true;
}

#define FAILS_AT(text, line, col, want)                                                            \
    ASSERT(fails_at((text), strlen(text), (line), (col), (want)))

static bool rejects(const char *text)
{
    ag_toml_error_t err;
    ag_toml_value_t *root = ag_toml_parse(text, strlen(text), &err);
    if (root != NULL) {
        ag_toml_free(root);
        fprintf(stderr, "  accepted: %s\n", text);
        return false;
    }
    return err.line >= 1 && err.col >= 1 && err.message[0] != '\0';
}

static int64_t get_int(const ag_toml_value_t *t, const char *key)
{
    int64_t v = -12345;
    ag_toml_get_int(ag_toml_table_get(t, key), &v);
    return v;
}

static const char *get_str(const ag_toml_value_t *t, const char *key)
{
    const char *s = "<missing>";
    ag_toml_get_string(ag_toml_table_get(t, key), &s, NULL);
    return s;
}

TEST(t_types_and_lookup)
{
    ag_toml_value_t *root = parse("s = \"hi\"\n"
                                  "i = -42\n"
                                  "f = 2.5e3\n"
                                  "b = true\n"
                                  "odt = 1979-05-27T07:32:00Z\n"
                                  "ldt = 1979-05-27T07:32:00\n"
                                  "ld = 1979-05-27\n"
                                  "lt = 07:32:00\n"
                                  "arr = [1, \"two\", [3]]\n"
                                  "tab = { x = 1 }\n");
    ASSERT(root != NULL);
    ASSERT_EQ(ag_toml_type(root), AG_TOML_TABLE);
    ASSERT_EQ(ag_toml_table_len(root), 10);
    static const ag_toml_type_t want[] = {
        AG_TOML_STRING,   AG_TOML_INTEGER,        AG_TOML_FLOAT,      AG_TOML_BOOL,
        AG_TOML_DATETIME, AG_TOML_DATETIME_LOCAL, AG_TOML_DATE_LOCAL, AG_TOML_TIME_LOCAL,
        AG_TOML_ARRAY,    AG_TOML_TABLE,
    };
    for (size_t i = 0; i < AG_ARRAY_LEN(want); i++)
        ASSERT_EQ(ag_toml_type(ag_toml_table_at(root, i, NULL, NULL)), want[i]);
    ASSERT_STREQ(get_str(root, "s"), "hi");
    ASSERT_EQ(get_int(root, "i"), -42);
    double f = 0;
    ASSERT_EQ(ag_toml_get_float(ag_toml_table_get(root, "f"), &f), 0);
    ASSERT(f == 2500.0);
    bool b = false;
    ASSERT_EQ(ag_toml_get_bool(ag_toml_table_get(root, "b"), &b), 0);
    ASSERT(b);
    const ag_toml_value_t *arr = ag_toml_table_get(root, "arr");
    ASSERT_EQ(ag_toml_array_len(arr), 3);
    ASSERT_EQ(ag_toml_type(ag_toml_array_at(arr, 1)), AG_TOML_STRING);
    ASSERT_EQ(ag_toml_array_len(ag_toml_array_at(arr, 2)), 1);
    ASSERT(ag_toml_array_at(arr, 3) == NULL);
    ASSERT_EQ(get_int(ag_toml_table_get(root, "tab"), "x"), 1);
    ASSERT_STREQ(ag_toml_type_name(AG_TOML_DATETIME_LOCAL), "datetime-local");
    ag_toml_free(root);
}

TEST(t_getters_reject_other_types)
{
    ag_toml_value_t *root = parse("s = \"1\"\ni = 1\n");
    ASSERT(root != NULL);
    const ag_toml_value_t *s = ag_toml_table_get(root, "s");
    int64_t i = 77;
    double f = 7.5;
    bool b = true;
    ASSERT_EQ(ag_toml_get_int(s, &i), AG_EINVALID);
    ASSERT_EQ(i, 77);
    ASSERT_EQ(ag_toml_get_float(ag_toml_table_get(root, "i"), &f), AG_EINVALID);
    ASSERT(f == 7.5);
    ASSERT_EQ(ag_toml_get_bool(s, &b), AG_EINVALID);
    ASSERT_EQ(ag_toml_get_datetime(s, NULL, NULL), AG_EINVALID);
    ASSERT_EQ(ag_toml_get_string(ag_toml_table_get(root, "missing"), NULL, NULL), AG_EINVALID);
    /* NULL-safe, so lookups chain without checks in between. */
    ASSERT(ag_toml_table_get(ag_toml_table_get(root, "nope"), "x") == NULL);
    ASSERT(ag_toml_table_get(s, "x") == NULL);
    ASSERT_EQ(ag_toml_table_len(s), 0);
    ASSERT_EQ(ag_toml_array_len(root), 0);
    ASSERT(ag_toml_table_at(root, 2, NULL, NULL) == NULL);
    ASSERT_EQ(ag_toml_line(NULL), 0);
    ag_toml_free(root);
    ag_toml_free(NULL);
}

TEST(t_insertion_order)
{
    ag_toml_value_t *root = parse("zeta = 1\n"
                                  "alpha.b = 2\n"
                                  "mid = 3\n"
                                  "[beta]\n"
                                  "[[aot]]\n"
                                  "[alpha.c]\n");
    ASSERT(root != NULL);
    static const char *want[] = {"zeta", "alpha", "mid", "beta", "aot"};
    ASSERT_EQ(ag_toml_table_len(root), AG_ARRAY_LEN(want));
    for (size_t i = 0; i < AG_ARRAY_LEN(want); i++) {
        const char *key;
        size_t len;
        ASSERT(ag_toml_table_at(root, i, &key, &len) != NULL);
        ASSERT_MEMEQ(key, len, want[i]);
    }
    const ag_toml_value_t *alpha = ag_toml_table_get(root, "alpha");
    const char *k0, *k1;
    ag_toml_table_at(alpha, 0, &k0, NULL);
    ag_toml_table_at(alpha, 1, &k1, NULL);
    ASSERT_STREQ(k0, "b");
    ASSERT_STREQ(k1, "c");
    ag_toml_free(root);
}

TEST(t_keys_with_nul_and_escapes)
{
    static const char doc[] = "\"a\\u0000b\" = 1\n"
                              "\"\" = 2\n"
                              "'a\\u0000b' = 3\n"
                              "\"\\U0001F600\" = 4\n";
    ag_toml_value_t *root = parse(doc);
    ASSERT(root != NULL);
    ASSERT_EQ(ag_toml_table_len(root), 4);
    int64_t v = 0;
    ASSERT_EQ(ag_toml_get_int(ag_toml_table_getn(root, "a\0b", 3), &v), 0);
    ASSERT_EQ(v, 1);
    /* The C-string lookup stops at the NUL, so it cannot reach that key. */
    ASSERT(ag_toml_table_get(root, "a") == NULL);
    ASSERT_EQ(get_int(root, ""), 2);
    ASSERT_EQ(get_int(root, "a\\u0000b"), 3);
    ASSERT_EQ(get_int(root, "\xF0\x9F\x98\x80"), 4);
    const char *key;
    size_t len;
    ag_toml_table_at(root, 0, &key, &len);
    ASSERT_EQ(len, 3);
    ASSERT_EQ(key[3], '\0');
    ag_toml_free(root);
}

TEST(t_value_positions)
{
    ag_toml_value_t *root =
        parse("# comment\n"
              "a = 1\n"
              "  b.c =   \"x\"\n"
              "[t]\n"
              "\"\xC3\xA9t\xC3\xA9\" = 'caf\xC3\xA9'   # col counts code points\n"
              "arr = [\n"
              "  10,\n"
              "  { k = 2 },\n"
              "]\n"
              "[[p.q]]\n");
    ASSERT(root != NULL);
    ASSERT_EQ(ag_toml_line(root), 1);
    ASSERT_EQ(ag_toml_col(root), 1);
    const ag_toml_value_t *a = ag_toml_table_get(root, "a");
    ASSERT_EQ(ag_toml_line(a), 2);
    ASSERT_EQ(ag_toml_col(a), 5);
    const ag_toml_value_t *b = ag_toml_table_get(root, "b");
    ASSERT_EQ(ag_toml_line(b), 3); /* implied by the key, at the key */
    ASSERT_EQ(ag_toml_col(b), 3);
    const ag_toml_value_t *c = ag_toml_table_get(b, "c");
    ASSERT_EQ(ag_toml_line(c), 3);
    ASSERT_EQ(ag_toml_col(c), 11);
    const ag_toml_value_t *t = ag_toml_table_get(root, "t");
    ASSERT_EQ(ag_toml_line(t), 4);
    ASSERT_EQ(ag_toml_col(t), 1);
    const ag_toml_value_t *ete = ag_toml_table_get(t, "\xC3\xA9t\xC3\xA9");
    ASSERT_EQ(ag_toml_line(ete), 5);
    ASSERT_EQ(ag_toml_col(ete), 9);
    const ag_toml_value_t *arr = ag_toml_table_get(t, "arr");
    ASSERT_EQ(ag_toml_line(arr), 6);
    ASSERT_EQ(ag_toml_col(arr), 7);
    ASSERT_EQ(ag_toml_line(ag_toml_array_at(arr, 0)), 7);
    ASSERT_EQ(ag_toml_col(ag_toml_array_at(arr, 0)), 3);
    const ag_toml_value_t *k = ag_toml_table_get(ag_toml_array_at(arr, 1), "k");
    ASSERT_EQ(ag_toml_line(k), 8);
    ASSERT_EQ(ag_toml_col(k), 9);
    const ag_toml_value_t *q = ag_toml_table_get(ag_toml_table_get(root, "p"), "q");
    ASSERT_EQ(ag_toml_line(ag_toml_array_at(q, 0)), 10);
    ASSERT_EQ(ag_toml_col(ag_toml_array_at(q, 0)), 1);
    ag_toml_free(root);
}

TEST(t_error_positions)
{
    FAILS_AT("a = 1\na = 2\n", 2, 1, "duplicate key 'a' (first defined at line 1, column 5)");
    FAILS_AT("name \"x\"", 1, 6, "expected '=' after the key, found '\"'");
    FAILS_AT("s = \"ab\\qc\"", 1, 8, "invalid escape: backslash followed by 'q'");
    FAILS_AT("# fine\n# bad \x01 here\n", 2, 7, "control character U+0001");
    /* Lines are counted inside multi-line strings. */
    FAILS_AT("x = \"\"\"\nline2\nline3 \\q\"\"\"", 3, 7, "invalid escape");
    FAILS_AT("x = '''\none\ntwo'''\ny = ", 4, 5, "expected a value, found end of input");
    /* Columns count code points: "é" is one column. */
    FAILS_AT("k = \"\xC3\xA9\" x", 1, 9, "expected end of line, found 'x'");
    FAILS_AT("a = 1\r\nb = 2\r\nc = \r\n", 3, 5, "expected a value, found end of line");
    FAILS_AT("a = \"\xFF\"", 1, 6, "invalid UTF-8 byte 0xFF");
    FAILS_AT("[a]\nx = 1\n[a]\n", 3, 1, "table 'a' is already defined (at line 1, column 1)");
    FAILS_AT("a = [1, 2", 1, 10, "unterminated array (opened at line 1, column 5)");
    FAILS_AT("a = \"open", 1, 5, "unterminated string");
    FAILS_AT("a = \"open\nb = 1", 1, 10, "not closed before the end of the line");
    FAILS_AT("a = {b = 1,}", 1, 11, "trailing comma");
    FAILS_AT("a = {b = 1\n}", 1, 11, "newline is not allowed inside an inline table");
    FAILS_AT("a = 1 b = 2", 1, 7, "expected end of line, found 'b'");
    FAILS_AT("a = 9223372036854775808", 1, 5, "does not fit in 64 bits");
    FAILS_AT("x = \"\\uD800\"", 1, 6, "not a Unicode scalar value");
    FAILS_AT("a = 1\rb = 2", 1, 6, "carriage return not followed by a line feed");
    FAILS_AT("t = {a = 1}\nt.b = 2", 2, 1, "inline tables are immutable");
    FAILS_AT("a = 2024-02-30", 1, 5, "day out of range");
    /* A BOM is skipped and not counted as a column. */
    FAILS_AT("\xEF\xBB\xBFk = ?", 1, 5, "expected a value, found '?'");
    /* Long keys are cut in messages rather than overflowing them. */
    char doc[700];
    memset(doc, 'k', 300);
    memcpy(doc + 300, " = 1\n", 5);
    memset(doc + 305, 'k', 300);
    memcpy(doc + 605, " = 2\n", 6);
    ASSERT(fails_at(doc, strlen(doc), 2, 1, "kkk...' (first defined at line 1, column 304)"));
    /* ... and cut between characters, not inside one. */
    ag_buf_t b;
    ag_buf_init(&b, 0);
    for (int round = 0; round < 2; round++) {
        ASSERT_EQ(ag_buf_append_cstr(&b, "\""), 0);
        for (int i = 0; i < 100; i++)
            ASSERT_EQ(ag_buf_append_cstr(&b, "\xC3\xA9"), 0);
        ASSERT_EQ(ag_buf_append_cstr(&b, "\" = 1\n"), 0);
    }
    ag_toml_error_t err;
    ASSERT(ag_toml_parse(b.data, b.len, &err) == NULL);
    ag_buf_fini(&b);
    ASSERT(strstr(err.message, "duplicate key") != NULL);
    ASSERT(strstr(err.message, "...") != NULL);
    ASSERT(ag_utf8_valid(err.message, strlen(err.message)));
}

TEST(t_integers)
{
    ag_toml_value_t *root = parse("max = 9223372036854775807\n"
                                  "min = -9223372036854775808\n"
                                  "hex = 0x7FFF_FFFF_ffff_ffff\n"
                                  "oct = 0o755\n"
                                  "bin = 0b1101_0110\n"
                                  "us = 1_000_000\n"
                                  "pz = +0\n"
                                  "nz = -0\n");
    ASSERT(root != NULL);
    ASSERT_EQ(get_int(root, "max"), INT64_MAX);
    ASSERT_EQ(get_int(root, "min"), INT64_MIN);
    ASSERT_EQ(get_int(root, "hex"), INT64_MAX);
    ASSERT_EQ(get_int(root, "oct"), 0755);
    ASSERT_EQ(get_int(root, "bin"), 0xD6);
    ASSERT_EQ(get_int(root, "us"), 1000000);
    ASSERT_EQ(get_int(root, "pz"), 0);
    ASSERT_EQ(get_int(root, "nz"), 0);
    ag_toml_free(root);
    ASSERT(rejects("a = -9223372036854775809"));
    ASSERT(rejects("a = 0x8000000000000000"));
    ASSERT(rejects("a = 0o1000000000000000000000"));
    ASSERT(rejects("a = 0b"
                   "1000000000000000000000000000000000000000000000000000000000000000"));
    ASSERT(rejects("a = 99999999999999999999999999"));
    ASSERT(rejects("a = 1__0"));
    ASSERT(rejects("a = 0x"));
    ASSERT(rejects("a = -0x1"));
}

TEST(t_floats)
{
    ag_toml_value_t *root = parse("a = +inf\nb = -inf\nc = nan\nd = -nan\ne = -0.0\n"
                                  "f = 6.626e-34\ng = 1_000.000_1\nh = 1e1_0\ni = 0e00\n");
    ASSERT(root != NULL);
    double v[9];
    static const char *keys[] = {"a", "b", "c", "d", "e", "f", "g", "h", "i"};
    for (size_t i = 0; i < AG_ARRAY_LEN(keys); i++)
        ASSERT_EQ(ag_toml_get_float(ag_toml_table_get(root, keys[i]), &v[i]), 0);
    ASSERT(isinf(v[0]) && v[0] > 0);
    ASSERT(isinf(v[1]) && v[1] < 0);
    ASSERT(isnan(v[2]) && isnan(v[3]));
    ASSERT(v[4] == 0.0 && signbit(v[4]));
    ASSERT(v[5] == 6.626e-34);
    ASSERT(v[6] == 1000.0001);
    ASSERT(v[7] == 1e10);
    ASSERT(v[8] == 0.0 && !signbit(v[8]));
    ag_toml_free(root);
    ASSERT(rejects("a = .5"));
    ASSERT(rejects("a = 5."));
    ASSERT(rejects("a = 1e"));
    ASSERT(rejects("a = 1.5_"));
    ASSERT(rejects("a = 01.5"));
    ASSERT(rejects("a = Inf"));
    ASSERT(rejects("a = +nan_"));
}

TEST(t_datetimes)
{
    ag_toml_value_t *root = parse("a = 1979-05-27 07:32:00.999999999999z\n"
                                  "b = 1979-05-27t00:32:00-07:30\n"
                                  "c = 2016-12-31T23:59:60\n"
                                  "d = 2024-02-29\n"
                                  "e = 07:32:00.5\n"
                                  "f = 1979-05-27T07:32:00+00:00\n");
    ASSERT(root != NULL);
    ag_toml_datetime_t dt;
    const char *text;
    const ag_toml_value_t *a = ag_toml_table_get(root, "a");
    ASSERT_EQ(ag_toml_type(a), AG_TOML_DATETIME);
    ASSERT_EQ(ag_toml_get_datetime(a, &dt, &text), 0);
    ASSERT_STREQ(text, "1979-05-27T07:32:00.999999999Z");
    ASSERT_EQ(dt.year, 1979);
    ASSERT_EQ(dt.month, 5);
    ASSERT_EQ(dt.day, 27);
    ASSERT_EQ(dt.hour, 7);
    ASSERT_EQ(dt.nanosecond, 999999999);
    ASSERT_EQ(dt.offset_minutes, 0);
    ASSERT_EQ(ag_toml_get_datetime(ag_toml_table_get(root, "b"), &dt, &text), 0);
    ASSERT_STREQ(text, "1979-05-27T00:32:00-07:30");
    ASSERT_EQ(dt.offset_minutes, -450);
    const ag_toml_value_t *c = ag_toml_table_get(root, "c");
    ASSERT_EQ(ag_toml_type(c), AG_TOML_DATETIME_LOCAL);
    ASSERT_EQ(ag_toml_get_datetime(c, &dt, &text), 0);
    ASSERT_EQ(dt.second, 60);
    ASSERT_STREQ(text, "2016-12-31T23:59:60");
    ASSERT_EQ(ag_toml_get_datetime(ag_toml_table_get(root, "d"), &dt, &text), 0);
    ASSERT_STREQ(text, "2024-02-29");
    ASSERT_EQ(dt.hour, 0);
    const ag_toml_value_t *e = ag_toml_table_get(root, "e");
    ASSERT_EQ(ag_toml_type(e), AG_TOML_TIME_LOCAL);
    ASSERT_EQ(ag_toml_get_datetime(e, &dt, &text), 0);
    ASSERT_STREQ(text, "07:32:00.5");
    ASSERT_EQ(dt.nanosecond, 500000000);
    ASSERT_EQ(dt.year, 0);
    ASSERT_EQ(ag_toml_get_datetime(ag_toml_table_get(root, "f"), NULL, &text), 0);
    ASSERT_STREQ(text, "1979-05-27T07:32:00+00:00");
    ag_toml_free(root);
    ASSERT(rejects("a = 2023-02-29"));
    ASSERT(rejects("a = 2000-01-01T"));
    ASSERT(rejects("a = 07:32:00Z"));
    ASSERT(rejects("a = 07:32"));
    ASSERT(rejects("a = 2000-01-01 07:32:00 Z"));
    ASSERT(rejects("a = 1979-05-27T07:32:00+24:00"));
}

TEST(t_strings)
{
    ag_toml_value_t *root =
        parse("a = \"\"\"\n"
              "one \\\n"
              "     two\\\t  \r\n"
              "\n"
              "  three\"\"\"\"\"\n"
              "b = '''\r\nraw \\n\r\nx'''\n"
              "c = \"tab\\there \\\"q\\\" \\\\ \\b\\f\\r\\n\\u00e9\\U0001F600\"\n"
              "d = ''''quoted'''' \n"
              "e = \"\\u0000\"\n");
    ASSERT(root != NULL);
    ASSERT_STREQ(get_str(root, "a"), "one twothree\"\"");
    ASSERT_STREQ(get_str(root, "b"), "raw \\n\nx"); /* CRLF normalised, no escapes */
    ASSERT_STREQ(get_str(root, "c"), "tab\there \"q\" \\ \b\f\r\n\xC3\xA9\xF0\x9F\x98\x80");
    ASSERT_STREQ(get_str(root, "d"), "'quoted'");
    const char *s;
    size_t len;
    ASSERT_EQ(ag_toml_get_string(ag_toml_table_get(root, "e"), &s, &len), 0);
    ASSERT_EQ(len, 1);
    ASSERT_EQ(s[0], '\0');
    ag_toml_free(root);
    ASSERT(rejects("a = \"\\x41\""));
    ASSERT(rejects("a = \"\\e\""));
    ASSERT(rejects("a = \"\\U00110000\""));
    ASSERT(rejects("a = \"\\uDFFF\""));
    ASSERT(rejects("a = '''x''''''"));
    ASSERT(rejects("a = \"\"\"x \\ y\"\"\""));
    ASSERT(rejects("a = \"x\ty\x7f\""));
    ASSERT(rejects("a = '\x1b'"));
}

TEST(t_tables_valid)
{
    ag_toml_value_t *root = parse("[a.b.c]\n"
                                  "x = 1\n"
                                  "[a]\n"
                                  "y = 2\n"
                                  "[a.b]\n"
                                  "z = 3\n"
                                  "[fruit]\n"
                                  "apple.color = 'red'\n"
                                  "apple.taste.sweet = true\n"
                                  "[fruit.apple.texture]\n"
                                  "smooth = true\n"
                                  "[[products]]\n"
                                  "name = 'Hammer'\n"
                                  "[products.dims]\n"
                                  "w = 1\n"
                                  "[[products]]\n"
                                  "[[products.parts]]\n"
                                  "n = 1\n"
                                  "[[products.parts]]\n"
                                  "n = 2\n"
                                  "[ \"quoted . key\" . 'lit' ]\n"
                                  "v = 1\n");
    ASSERT(root != NULL);
    const ag_toml_value_t *a = ag_toml_table_get(root, "a");
    ASSERT_EQ(get_int(a, "y"), 2);
    const ag_toml_value_t *ab = ag_toml_table_get(a, "b");
    ASSERT_EQ(get_int(ab, "z"), 3);
    ASSERT_EQ(get_int(ag_toml_table_get(ab, "c"), "x"), 1);
    const ag_toml_value_t *apple = ag_toml_table_get(ag_toml_table_get(root, "fruit"), "apple");
    ASSERT_EQ(ag_toml_table_len(apple), 3);
    const ag_toml_value_t *products = ag_toml_table_get(root, "products");
    ASSERT_EQ(ag_toml_array_len(products), 2);
    ASSERT_EQ(get_int(ag_toml_table_get(ag_toml_array_at(products, 0), "dims"), "w"), 1);
    const ag_toml_value_t *parts = ag_toml_table_get(ag_toml_array_at(products, 1), "parts");
    ASSERT_EQ(ag_toml_array_len(parts), 2);
    ASSERT_EQ(get_int(ag_toml_array_at(parts, 1), "n"), 2);
    const ag_toml_value_t *q = ag_toml_table_get(root, "quoted . key");
    ASSERT_EQ(get_int(ag_toml_table_get(q, "lit"), "v"), 1);
    ag_toml_free(root);
}

TEST(t_tables_invalid)
{
    static const char *bad[] = {
        "[a]\n[a]",                   /* header twice */
        "[a.b]\n[a]\n[a]",            /* implicit, then defined twice */
        "a.b = 1\n[a]",               /* dotted, then header */
        "[x]\na.b = 1\n[x.a]",        /* dotted in a section, then header */
        "[x.a.b]\n[x]\na.b.c = 1",    /* dotted key into a header table */
        "[x]\na.b = 1\n[y]\n[x.a.b]", /* header on a dotted key's table */
        "a = {}\n[a.b]",              /* inline tables are immutable */
        "a = {b = {}}\n[[a.b]]",      /* even deep inside */
        "a = {b = 1}\na.c = 2",       /* ... to dotted keys too */
        "a = {b.c = 1, b = 2}",       /* inside one inline table */
        "a = []\n[[a]]",              /* static arrays cannot be appended to */
        "a = [{}]\n[a.b]",            /* nor extended through */
        "[[a]]\n[a]",                 /* an array of tables is not a table */
        "[a]\n[[a]]",                 /* and vice versa */
        "[[a.b]]\n[[a]]",             /* a is an implicit table, not an array */
        "a = 1\n[a.b]",               /* header through a scalar */
        "[[a]]\nb.c = 1\n[a.b]",      /* dotted in an aot element, then header */
        "[a]\nb = 1\n[a.b]",          /* header on a scalar */
        "a.b = 1\na.b.c = 2",         /* dotted through a scalar */
        "[a]\n[a.b]\n[[a.b]]",        /* table, then array of the same name */
    };
    for (size_t i = 0; i < AG_ARRAY_LEN(bad); i++)
        ASSERT(rejects(bad[i]));
}

TEST(t_syntax_invalid)
{
    static const char *bad[] = {
        "a = {b = 1,}",
        "a = {\n}",
        "a = [1,,]",
        "a = [,]",
        "a.",
        "[a",
        "[[a]",
        "[[a] ]",
        "[ [a]]",
        "=1",
        "a = ",
        "a",
        "\"\"\"k\"\"\" = 1",
        "a = 1 # ok\x7f",
        "a = true false",
        "a = [1 2]",
        "a = tru",
        "a = {a = 1 b = 2}",
        "[a]b]",
        "a = 1\n\r",
        "a = \"\"\"x\rx\"\"\"",
        ("\xEF\xBB\xBF\xEF\xBB\xBF"
         "a = 1"),
    };
    for (size_t i = 0; i < AG_ARRAY_LEN(bad); i++)
        ASSERT(rejects(bad[i]));
    /* NUL in the middle of a document whose text goes on. */
    ASSERT(fails_at("a = 1\n\0b = 2\n", 13, 2, 1, "control character U+0000"));
    ASSERT(fails_at("\0", 1, 1, 1, "expected a key, found control character U+0000"));
    ASSERT(fails_at("a = \"\0\"", 7, 1, 6, "control character U+0000 must be escaped"));
}

TEST(t_empty_and_odd_documents)
{
    static const char *ok[] = {"", "\n", "  \t\n# c\n\r\n", "\xEF\xBB\xBF", "a=1", "a=1#c"};
    for (size_t i = 0; i < AG_ARRAY_LEN(ok); i++) {
        ag_toml_value_t *root = parse(ok[i]);
        ASSERT(root != NULL);
        ag_toml_free(root);
    }
    ag_toml_value_t *root = ag_toml_parse(NULL, 0, NULL);
    ASSERT(root != NULL);
    ASSERT_EQ(ag_toml_table_len(root), 0);
    ag_toml_free(root);
    ASSERT(ag_toml_parse(NULL, 5, NULL) == NULL);
}

TEST(t_depth_limit)
{
    char doc[4 * AG_TOML_MAX_DEPTH + 64];
    /* a = [[...]]: the outer array is at depth 1, the innermost at n. */
    for (int n = AG_TOML_MAX_DEPTH; n <= AG_TOML_MAX_DEPTH + 1; n++) {
        size_t o = 0;
        o += (size_t)snprintf(doc, sizeof(doc), "a = ");
        for (int i = 0; i < n; i++)
            doc[o++] = '[';
        for (int i = 0; i < n; i++)
            doc[o++] = ']';
        doc[o] = '\0';
        ag_toml_error_t err;
        ag_toml_value_t *root = ag_toml_parse(doc, o, &err);
        if (n <= AG_TOML_MAX_DEPTH) {
            ASSERT(root != NULL);
            ag_toml_free(root);
        } else {
            ASSERT(root == NULL);
            ASSERT(strstr(err.message, "nesting is deeper than") != NULL);
            ASSERT_EQ(err.col, 4 + (uint32_t)n);
        }
    }
    /* Inline tables and dotted keys count the same way. */
    size_t o = 0;
    for (int i = 0; i < AG_TOML_MAX_DEPTH + 1; i++)
        o += (size_t)snprintf(doc + o, sizeof(doc) - o, "k.");
    o += (size_t)snprintf(doc + o, sizeof(doc) - o, "k = 1");
    ASSERT(rejects(doc));
    o = 0;
    for (int i = 0; i < AG_TOML_MAX_DEPTH + 1; i++)
        o += (size_t)snprintf(doc + o, sizeof(doc) - o, "a={");
    for (int i = 0; i < AG_TOML_MAX_DEPTH + 1; i++)
        doc[o++] = '}';
    doc[o] = '\0';
    ASSERT(rejects(doc));
    /* Hostile nesting far past the limit fails cleanly, without deep recursion. */
    static char deep[1 << 20];
    memcpy(deep, "a=", 2);
    memset(deep + 2, '[', sizeof(deep) - 3);
    ASSERT(fails_at(deep, sizeof(deep) - 1, 1, AG_TOML_MAX_DEPTH + 3, "nesting"));
}

TEST(t_big_table_and_long_line)
{
    enum { N = 50000 };
    ag_buf_t b;
    ag_buf_init(&b, 0);
    for (int i = 0; i < N; i++)
        ASSERT_EQ(ag_buf_printf(&b, "key%d = %d\n", (i * 7919) % N, i), 0);
    ag_toml_value_t *root = ag_toml_parse(b.data, b.len, NULL);
    ASSERT(root != NULL);
    ASSERT_EQ(ag_toml_table_len(root), N);
    for (int i = 0; i < N; i++) {
        char key[32];
        snprintf(key, sizeof(key), "key%d", (i * 7919) % N);
        const ag_toml_value_t *v = ag_toml_table_get(root, key);
        ASSERT(v != NULL);
        ASSERT_EQ(get_int(root, key), i);
        ASSERT_EQ(ag_toml_line(v), (uint32_t)i + 1);
        const char *k;
        ag_toml_table_at(root, (size_t)i, &k, NULL);
        ASSERT_STREQ(k, key);
    }
    ASSERT(ag_toml_table_get(root, "key-1") == NULL);
    ag_toml_free(root);
    /* A duplicate at the end of a big table is still caught, with its line. */
    ASSERT_EQ(ag_buf_printf(&b, "key%d = 0\n", N / 2), 0);
    ASSERT(fails_at(b.data, b.len, N + 1, 1, "duplicate key"));

    /* One long line: positions must stay cheap (no rescan from the line start). */
    ag_buf_reset(&b);
    ASSERT_EQ(ag_buf_append_cstr(&b, "a = ["), 0);
    for (int i = 0; i < 200000; i++)
        ASSERT_EQ(ag_buf_append_cstr(&b, "1,"), 0);
    ASSERT_EQ(ag_buf_append_cstr(&b, "]"), 0);
    root = ag_toml_parse(b.data, b.len, NULL);
    ASSERT(root != NULL);
    const ag_toml_value_t *a = ag_toml_table_get(root, "a");
    ASSERT_EQ(ag_toml_array_len(a), 200000);
    ASSERT_EQ(ag_toml_col(ag_toml_array_at(a, 199999)), 6 + 2 * 199999);
    ag_toml_free(root);
    ag_buf_fini(&b);
}

/* Every prefix of a document that uses most of the grammar must parse or fail
 * cleanly with a position, never crash (ASan and UBSan watch this one). */
TEST(t_every_prefix)
{
    static const char doc[] = "\xEF\xBB\xBF# config\r\n"
                              "title = \"T\\u00e9st \\\"q\\\"\"\n"
                              "[server]\n"
                              "host = '127.0.0.1' # inline\n"
                              "ports = [ 8001, 8_002, 0x1F, 0o7, 0b1, ]\n"
                              "ml = \"\"\"\n  a \\\n  b\"\"\"\n"
                              "lit = '''\nx'''\n"
                              "when = 1979-05-27T07:32:00.5-08:00\n"
                              "f = [ -inf, nan, 6.02e+23, -0.0 ]\n"
                              "inl = { a.b = 1, 'c' = [ {d = 2} ] }\n"
                              "[[fruits]]\n"
                              "name.first = \"apple\"\n"
                              "[[fruits.variety]]\n"
                              "\"\xC3\xA9\" = 07:32:00\n";
    size_t len = sizeof(doc) - 1;
    ag_toml_value_t *root = ag_toml_parse(doc, len, NULL);
    ASSERT(root != NULL);
    ag_toml_free(root);
    for (size_t n = 0; n < len; n++) {
        ag_toml_error_t err;
        root = ag_toml_parse(doc, n, &err);
        if (root != NULL)
            ag_toml_free(root);
        else
            ASSERT(err.line >= 1 && err.col >= 1 && err.message[0] != '\0');
    }
    /* And with each byte flipped to a few troublesome values. */
    static const unsigned char subst[] = {0x00, '\r', '"', '[', '.', 0xC3, 0xFF};
    char copy[sizeof(doc)];
    for (size_t n = 0; n < len; n++) {
        for (size_t s = 0; s < sizeof(subst); s++) {
            memcpy(copy, doc, len);
            copy[n] = (char)subst[s];
            ag_toml_error_t err;
            root = ag_toml_parse(copy, len, &err);
            if (root != NULL)
                ag_toml_free(root);
            else
                ASSERT(err.line >= 1 && err.col >= 1);
        }
    }
}

AG_TESTS(AG_TEST_ENTRY(t_types_and_lookup) AG_TEST_ENTRY(t_getters_reject_other_types)
             AG_TEST_ENTRY(t_insertion_order) AG_TEST_ENTRY(t_keys_with_nul_and_escapes)
                 AG_TEST_ENTRY(t_value_positions) AG_TEST_ENTRY(t_error_positions)
                     AG_TEST_ENTRY(t_integers) AG_TEST_ENTRY(t_floats) AG_TEST_ENTRY(t_datetimes)
                         AG_TEST_ENTRY(t_strings) AG_TEST_ENTRY(t_tables_valid)
                             AG_TEST_ENTRY(t_tables_invalid) AG_TEST_ENTRY(t_syntax_invalid)
                                 AG_TEST_ENTRY(t_empty_and_odd_documents)
                                     AG_TEST_ENTRY(t_depth_limit)
                                         AG_TEST_ENTRY(t_big_table_and_long_line)
                                             AG_TEST_ENTRY(t_every_prefix))
