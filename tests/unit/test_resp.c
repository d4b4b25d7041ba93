/* SPDX-License-Identifier: MIT
 *
 * test_resp.c: the RESP2 reply parser: every type, nesting, byte-by-byte
 * feeding, and the malformed and oversized replies it must refuse.
 */
#include "util/platform.h"

#include <string.h>

#include "harness.h"
#include "store/resp.h"
#include "util/errors.h"

static const ag_resp_limits_t limits = {.max_bulk = 1024, .max_nodes = 64};

static int64_t parse(const char *s, ag_resp_t **out)
{
    ag_resp_parser_t p;
    ag_resp_parser_init(&p, &limits);
    return ag_resp_parse(&p, s, strlen(s), out);
}

TEST(scalars)
{
    ag_resp_t *r;
    ASSERT_EQ(parse("+OK\r\n", &r), 5);
    ASSERT(ag_resp_is(r, AG_RESP_STATUS, "OK"));
    ag_resp_free(r);
    ASSERT_EQ(parse("-NOSCRIPT No matching script\r\n", &r), 30);
    ASSERT(ag_resp_error_is(r, "NOSCRIPT") && !ag_resp_error_is(r, "NOSCRIPTX"));
    ag_resp_free(r);
    ASSERT_EQ(parse(":-9223372036854775808\r\n", &r), 23);
    ASSERT(r->type == AG_RESP_INTEGER && r->integer == INT64_MIN);
    ag_resp_free(r);
    ASSERT_EQ(parse("$5\r\na\r\nbc\r\n", &r), 11);
    ASSERT(r->type == AG_RESP_BULK && r->len == 5 && memcmp(r->str, "a\r\nbc", 5) == 0);
    ag_resp_free(r);
    ASSERT_EQ(parse("$0\r\n\r\n", &r), 6);
    ASSERT(r->type == AG_RESP_BULK && r->len == 0);
    ag_resp_free(r);
    ASSERT_EQ(parse("$-1\r\n", &r), 5);
    ASSERT(r->type == AG_RESP_NIL);
    ag_resp_free(r);
    ASSERT_EQ(parse("*-1\r\n", &r), 5);
    ASSERT(r->type == AG_RESP_NIL);
    ag_resp_free(r);
}

TEST(nested_arrays_and_trailing_bytes)
{
    const char *s = "*3\r\n:1\r\n*2\r\n$1\r\nx\r\n*0\r\n+y\r\n+NEXT\r\n";
    ag_resp_t *r;
    int64_t n = parse(s, &r);
    ASSERT_EQ(n, (int64_t)(strlen(s) - 7));
    ASSERT(r->type == AG_RESP_ARRAY && r->len == 3);
    ASSERT(r->elems[0].integer == 1);
    ASSERT(r->elems[1].type == AG_RESP_ARRAY && r->elems[1].len == 2);
    ASSERT(ag_resp_is(&r->elems[1].elems[0], AG_RESP_BULK, "x"));
    ASSERT(r->elems[1].elems[1].type == AG_RESP_ARRAY && r->elems[1].elems[1].len == 0);
    ASSERT(ag_resp_is(&r->elems[2], AG_RESP_STATUS, "y"));
    ag_resp_free(r);
}

TEST(byte_by_byte_is_the_same_as_whole)
{
    const char *s = "*2\r\n$3\r\nabc\r\n*2\r\n:-5\r\n-ERR x\r\n";
    size_t len = strlen(s);
    ag_resp_parser_t p;
    ag_resp_parser_init(&p, &limits);
    ag_resp_t *r = NULL;
    for (size_t i = 1; i < len; i++)
        ASSERT_EQ(ag_resp_parse(&p, s, i, &r), AG_EAGAIN);
    ASSERT_EQ(ag_resp_parse(&p, s, len, &r), (int64_t)len);
    ASSERT(r && r->len == 2 && r->elems[1].elems[0].integer == -5);
    ASSERT(ag_resp_error_is(&r->elems[1].elems[1], "ERR"));
    ag_resp_free(r);
    /* The parser is ready for the next reply. */
    ASSERT_EQ(ag_resp_parse(&p, ":7\r\n", 4, &r), 4);
    ASSERT_EQ(r->integer, 7);
    ag_resp_free(r);
}

TEST(malformed_is_refused)
{
    static const char *bad[] = {
        "?x\r\n",
        "+a\nb\r\n",
        "+a\rb\r\n",
        ":\r\n",
        ":01\r\n",
        ":-0\r\n",
        ":1x\r\n",
        ":+1\r\n",
        "$-2\r\n",
        "$3\r\nabcd\r\n",
        "*-2\r\n",
        "$x\r\n",
        ":99999999999999999999\r\n",
        ":9223372036854775808\r\n",
        "+ok\n",
    };
    for (size_t i = 0; i < AG_ARRAY_LEN(bad); i++) {
        ag_resp_t *r = NULL;
        int64_t rc = parse(bad[i], &r);
        ASSERT_MSG_(rc == AG_EPROTO, "%s: %lld", bad[i], (long long)rc);
        ASSERT(r == NULL);
    }
}

TEST(limits_hold)
{
    ag_resp_t *r = NULL;
    ASSERT_EQ(parse("$1025\r\n", &r), AG_ETOOBIG);
    ASSERT_EQ(parse("*64\r\n", &r), AG_ETOOBIG);
    ASSERT_EQ(parse("*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n:1\r\n", &r), AG_EPROTO);
    ASSERT_EQ(parse("*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n:1\r\n", &r), 36);
    ag_resp_free(r);
    /* A line with no end in sight is refused once it passes the bound. */
    static char big[AG_RESP_MAX_LINE + 8];
    memset(big, 'a', sizeof(big));
    big[0] = '+';
    ag_resp_parser_t p;
    ag_resp_parser_init(&p, &limits);
    ASSERT_EQ(ag_resp_parse(&p, big, 100, &r), AG_EAGAIN);
    ASSERT_EQ(ag_resp_parse(&p, big, sizeof(big), &r), AG_EPROTO);
}

/* clang-format off */
/* A copy outlives the bytes it was parsed from, its strings NUL-terminated. */
TEST(dup_owns_its_strings)
{
    char buf[] = "*3\r\n$3\r\nabc\r\n*2\r\n:7\r\n-ERR no\r\n$-1\r\n";
    ag_resp_t *r, *c;
    ASSERT_EQ(parse(buf, &r), (int64_t)strlen(buf));
    c = ag_resp_dup(r);
    ASSERT(c != NULL);
    ag_resp_free(r);
    memset(buf, 'x', sizeof(buf) - 1);
    ASSERT_EQ(c->type, AG_RESP_ARRAY);
    ASSERT_EQ(c->len, 3);
    ASSERT_EQ(c->elems[0].type, AG_RESP_BULK);
    ASSERT_STREQ(c->elems[0].str, "abc");
    ASSERT_EQ(c->elems[1].type, AG_RESP_ARRAY);
    ASSERT_EQ(c->elems[1].elems[0].integer, 7);
    ASSERT_EQ(c->elems[1].elems[1].type, AG_RESP_ERROR);
    ASSERT_STREQ(c->elems[1].elems[1].str, "ERR no");
    ASSERT_EQ(c->elems[2].type, AG_RESP_NIL);
    ag_resp_free(c);
}

AG_TESTS(
    AG_TEST_ENTRY(dup_owns_its_strings)
    AG_TEST_ENTRY(scalars)
    AG_TEST_ENTRY(nested_arrays_and_trailing_bytes)
    AG_TEST_ENTRY(byte_by_byte_is_the_same_as_whole)
    AG_TEST_ENTRY(malformed_is_refused)
    AG_TEST_ENTRY(limits_hold))
/* clang-format on */
