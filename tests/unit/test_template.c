/* SPDX-License-Identifier: MIT
 *
 * test_template.c: the task template language (src/cron/template.c): every
 * variable, the calendar at leap days and year ends, escapes, whitespace,
 * missing values, every parse error with its position, and the size limits.
 */
#include "util/platform.h"

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#include "cron/template.h"
#include "util/buf.h"
#include "util/errors.h"

#include "harness.h"

#define T_2026_12_07_0900 INT64_C(1796634000000) /* Monday 2026-12-07T09:00:00Z */

static ag_template_t *parse(const char *s)
{
    ag_template_t *t = NULL;
    ag_template_error_t err;
    int rc = ag_template_parse(s, strlen(s), &t, &err);
    if (rc != 0)
        fprintf(stderr, "  parse(\"%s\"): %s at %zu (%u:%u): %s\n", s, ag_strerror(rc), err.offset,
                err.line, err.col, err.message);
    return t;
}

/* Renders into a static buffer (NUL-terminated); NULL on error. */
static const char *render(const ag_template_t *t, int64_t ms, const ag_str_t *values, size_t n,
                          bool *missing, int *nmissing)
{
    static ag_buf_t b;
    static bool init;
    if (!init) {
        ag_buf_init(&b, 0);
        init = true;
    }
    ag_buf_reset(&b);
    int rc = ag_template_render(t, ms, values, n, &b, missing);
    if (nmissing)
        *nmissing = rc;
    if (rc < 0)
        return NULL;
    return ag_buf_cstr(&b);
}

/* Parses and renders s with no values at ms. */
static const char *expand(const char *s, int64_t ms)
{
    static char out[256];
    ag_template_t *t = parse(s);
    if (t == NULL)
        return "(parse error)";
    const char *r = render(t, ms, NULL, 0, NULL, NULL);
    snprintf(out, sizeof(out), "%s", r ? r : "(render error)");
    ag_template_free(t);
    return out;
}

TEST(no_placeholders_is_plain_text)
{
    const char *s = "Hello { world } }} {x} a\\b \\{ \\ end\\";
    ag_template_t *t = parse(s);
    ASSERT(t != NULL);
    ASSERT_EQ(ag_template_count(t), 0);
    ASSERT(ag_template_is_time_only(t));
    int n = -1;
    const char *r = render(t, 0, NULL, 0, NULL, &n);
    ASSERT(r != NULL);
    ASSERT_STREQ(r, s);
    ASSERT_EQ(n, 0);
    ag_template_free(t);

    ASSERT_EQ(ag_template_parse(NULL, 0, &t, NULL), 0);
    ASSERT_EQ(ag_template_count(t), 0);
    r = render(t, 0, NULL, 0, NULL, &n);
    ASSERT(r != NULL);
    ASSERT_STREQ(r, "");
    ag_template_free(t);
    ag_template_free(NULL);
}

TEST(time_variables)
{
    ASSERT_STREQ(expand("{{date}}", T_2026_12_07_0900), "2026-12-07");
    ASSERT_STREQ(expand("{{datetime}}", T_2026_12_07_0900), "2026-12-07T09:00:00Z");
    ASSERT_STREQ(expand("{{scheduledTime}}", T_2026_12_07_0900), "1796634000000");
    ASSERT_STREQ(expand("digests/{{date}}.md", T_2026_12_07_0900), "digests/2026-12-07.md");
    /* Milliseconds are cut, not rounded. */
    ASSERT_STREQ(expand("{{datetime}}", T_2026_12_07_0900 + 59999), "2026-12-07T09:00:59Z");
    ASSERT_STREQ(expand("{{datetime}} {{scheduledTime}}", 0), "1970-01-01T00:00:00Z 0");
}

TEST(leap_days)
{
    /* 2024-02-29T23:59:59.999Z, then the next millisecond. */
    ASSERT_STREQ(expand("{{datetime}}", INT64_C(1709251199999)), "2024-02-29T23:59:59Z");
    ASSERT_STREQ(expand("{{date}}", INT64_C(1709251199999)), "2024-02-29");
    ASSERT_STREQ(expand("{{datetime}}", INT64_C(1709251200000)), "2024-03-01T00:00:00Z");
    /* 2000 is a leap year (divisible by 400), 2100 is not (by 100). */
    ASSERT_STREQ(expand("{{date}}", INT64_C(951825600000)), "2000-02-29");
    ASSERT_STREQ(expand("{{date}}", INT64_C(4107499200000)), "2100-02-28");
    ASSERT_STREQ(expand("{{date}}", INT64_C(4107499200000) + 86400000), "2100-03-01");
    /* 1900 was not either: before the epoch. */
    ASSERT_STREQ(expand("{{date}}", INT64_C(-2203891200000) - 86400000), "1900-02-28");
}

TEST(year_end)
{
    ASSERT_STREQ(expand("{{datetime}}", INT64_C(1767225599999)), "2025-12-31T23:59:59Z");
    ASSERT_STREQ(expand("{{datetime}}", INT64_C(1767225600000)), "2026-01-01T00:00:00Z");
    ASSERT_STREQ(expand("{{date}}", INT64_C(1767225600000)), "2026-01-01");
    /* Before the epoch: floor, not truncation, of negative times. */
    ASSERT_STREQ(expand("{{datetime}}", -1), "1969-12-31T23:59:59Z");
    ASSERT_STREQ(expand("{{datetime}}", -1000), "1969-12-31T23:59:59Z");
    ASSERT_STREQ(expand("{{datetime}}", -1001), "1969-12-31T23:59:58Z");
}

TEST(scheduled_time_digits)
{
    ASSERT_STREQ(expand("{{scheduledTime}}", 7), "7");
    ASSERT_STREQ(expand("{{scheduledTime}}", -1), "-1");
    ASSERT_STREQ(expand("{{scheduledTime}}", INT64_MAX), "9223372036854775807");
    ASSERT_STREQ(expand("{{scheduledTime}}", INT64_MIN), "-9223372036854775808");
    /* The extremes of the calendar render, with longer or negative years. */
    ASSERT_STREQ(expand("{{datetime}}", INT64_MAX), "292278994-08-17T07:12:55Z");
    ASSERT_STREQ(expand("{{datetime}}", INT64_MIN), "-292275055-05-16T16:47:04Z");
    ASSERT_STREQ(expand("{{date}}", INT64_C(253402300799999)), "9999-12-31");
    ASSERT_STREQ(expand("{{date}}", INT64_C(253402300800000)), "10000-01-01");
    ASSERT_STREQ(expand("{{date}}", INT64_C(-62167219200000)), "0000-01-01");
    ASSERT_STREQ(expand("{{date}}", INT64_C(-62167219200000) - 1), "-0001-12-31");
}

/* Our calendar against the C library's, a day at a time over 1600-2400 and at
 * odd seconds of the day. */
TEST(calendar_matches_gmtime)
{
    ag_template_t *t = parse("{{datetime}}");
    ASSERT(t != NULL);
    for (int64_t day = -135140; day <= 157000; day += 1) {
        int64_t secs = day * 86400 + (day * 7919) % 86400;
        time_t tt = (time_t)secs;
        struct tm tm;
        ASSERT(gmtime_r(&tt, &tm) != NULL);
        char want[64];
        snprintf(want, sizeof(want), "%04d-%02d-%02dT%02d:%02d:%02dZ", tm.tm_year + 1900,
                 tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
        const char *got = render(t, secs * 1000 + 999, NULL, 0, NULL, NULL);
        ASSERT(got != NULL);
        ASSERT_STREQ(got, want);
    }
    ag_template_free(t);
}

TEST(listing_placeholders)
{
    const char *s = "a {{date}} b {{ kv : CACHE : digest:latest }} {{r2:STORAGE:logs/x y.ndjson}}"
                    " {{usage:7d}} {{fetch:https://example.com:8443/a?b=c}} {{scheduledTime}}";
    ag_template_t *t = parse(s);
    ASSERT(t != NULL);
    ASSERT_EQ(ag_template_count(t), 6);
    ASSERT(!ag_template_is_time_only(t));

    const ag_template_var_t *v = ag_template_var(t, 0);
    ASSERT_EQ(v->kind, AG_TEMPLATE_DATE);
    ASSERT_EQ(v->offset, 2);
    ASSERT_MEMEQ(v->text.ptr, v->text.len, "{{date}}");
    ASSERT_EQ(v->binding.len, 0);
    ASSERT_EQ(v->arg.len, 0);

    v = ag_template_var(t, 1);
    ASSERT_EQ(v->kind, AG_TEMPLATE_KV);
    ASSERT_STREQ(v->binding.ptr, "CACHE");
    ASSERT_EQ(v->binding.len, 5);
    ASSERT_STREQ(v->arg.ptr, "digest:latest"); /* the key keeps its colons */
    ASSERT_STREQ(v->text.ptr, "{{ kv : CACHE : digest:latest }}");
    ASSERT_EQ(v->offset, 13);
    ASSERT_EQ(v->binding_offset, (size_t)(strstr(s, "CACHE") - s));
    ASSERT_EQ(v->arg_offset, (size_t)(strstr(s, "digest:") - s));

    v = ag_template_var(t, 2);
    ASSERT_EQ(v->kind, AG_TEMPLATE_R2);
    ASSERT_STREQ(v->binding.ptr, "STORAGE");
    ASSERT_STREQ(v->arg.ptr, "logs/x y.ndjson");

    v = ag_template_var(t, 3);
    ASSERT_EQ(v->kind, AG_TEMPLATE_USAGE);
    ASSERT_STREQ(v->arg.ptr, "7d");
    ASSERT_EQ(v->window_s, 7 * 86400);
    ASSERT_EQ(v->arg_offset, (size_t)(strstr(s, "7d") - s));

    v = ag_template_var(t, 4);
    ASSERT_EQ(v->kind, AG_TEMPLATE_FETCH);
    ASSERT_STREQ(v->arg.ptr, "https://example.com:8443/a?b=c");

    v = ag_template_var(t, 5);
    ASSERT_EQ(v->kind, AG_TEMPLATE_SCHEDULED_TIME);

    uint32_t line, col;
    ag_template_locate(t, ag_template_var(t, 3)->offset, &line, &col);
    ASSERT_EQ(line, 1);
    ASSERT_EQ(col, ag_template_var(t, 3)->offset + 1);
    ag_template_free(t);
}

TEST(usage_windows)
{
    static const struct {
        const char *text;
        int64_t seconds;
    } ok[] = {
        {"{{usage:45s}}", 45},    {"{{usage:30m}}", 1800},    {"{{usage:24h}}", 86400},
        {"{{usage:7d}}", 604800}, {"{{usage:007d}}", 604800}, {"{{usage:36600d}}", 3162240000},
        {"{{ usage: 1s }}", 1},
    };
    for (size_t i = 0; i < AG_ARRAY_LEN(ok); i++) {
        ag_template_t *t = parse(ok[i].text);
        ASSERT(t != NULL);
        ASSERT_EQ(ag_template_var(t, 0)->window_s, ok[i].seconds);
        ag_template_free(t);
    }
}

TEST(values_render_verbatim_and_missing_are_reported)
{
    ag_template_t *t = parse("[{{kv:C:a}}|{{date}}|{{r2:S:b}}|{{usage:1h}}|{{fetch:http://h/}}]");
    ASSERT(t != NULL);
    ASSERT_EQ(ag_template_count(t), 5);
    bool missing[5];

    /* All values present; the one given for {{date}} is ignored; bytes are not escaped. */
    ag_str_t all[5] = {AG_STR_LIT("{{x}}\n\"<&>"), AG_STR_LIT("ignored"), AG_STR_LIT("obj"),
                       AG_STR_LIT("42 requests"), AG_STR_LIT("body")};
    int n = -1;
    const char *r = render(t, T_2026_12_07_0900, all, 5, missing, &n);
    ASSERT(r != NULL);
    ASSERT_STREQ(r, "[{{x}}\n\"<&>|2026-12-07|obj|42 requests|body]");
    ASSERT_EQ(n, 0);
    for (int i = 0; i < 5; i++)
        ASSERT(!missing[i]);

    /* Missing (NULL) and present-but-empty values both render empty; only the
     * missing ones are reported. */
    ag_str_t some[5] = {AG_STR_NULL, AG_STR_NULL, AG_STR_LIT(""), AG_STR_NULL, AG_STR_LIT("b")};
    r = render(t, T_2026_12_07_0900, some, 5, missing, &n);
    ASSERT(r != NULL);
    ASSERT_STREQ(r, "[|2026-12-07|||b]");
    ASSERT_EQ(n, 2);
    ASSERT(missing[0] && !missing[1] && !missing[2] && missing[3] && !missing[4]);

    /* A short array: the indexes past it are missing. */
    r = render(t, T_2026_12_07_0900, all, 2, missing, &n);
    ASSERT(r != NULL);
    ASSERT_STREQ(r, "[{{x}}\n\"<&>|2026-12-07|||]");
    ASSERT_EQ(n, 3);
    ASSERT(!missing[0] && !missing[1] && missing[2] && missing[3] && missing[4]);

    /* No values at all. */
    r = render(t, T_2026_12_07_0900, NULL, 0, NULL, &n);
    ASSERT(r != NULL);
    ASSERT_STREQ(r, "[|2026-12-07|||]");
    ASSERT_EQ(n, 4);

    /* Rendering appends. */
    ag_buf_t b;
    ag_buf_init(&b, 0);
    ASSERT_EQ(ag_buf_append_cstr(&b, "prefix:"), 0);
    ASSERT_EQ(ag_template_render(t, 0, all, 5, &b, NULL), 0);
    ASSERT_STREQ(ag_buf_cstr(&b), "prefix:[{{x}}\n\"<&>|1970-01-01|obj|42 requests|body]");
    ASSERT_EQ(ag_template_render(NULL, 0, NULL, 0, &b, NULL), AG_EINVALID);
    ASSERT_EQ(ag_template_render(t, 0, NULL, 0, NULL, NULL), AG_EINVALID);
    ag_buf_fini(&b);
    ag_template_free(t);
}

TEST(escapes)
{
    int64_t ms = T_2026_12_07_0900;
    ASSERT_STREQ(expand("\\{{date}}", ms), "{{date}}");
    ASSERT_STREQ(expand("a \\{{ not a placeholder", ms), "a {{ not a placeholder");
    ASSERT_STREQ(expand("\\{{kv:{{date}}", ms), "{{kv:2026-12-07");
    ASSERT_STREQ(expand("\\\\{{date}}", ms), "\\2026-12-07");
    ASSERT_STREQ(expand("C:\\\\{{date}}\\x", ms), "C:\\2026-12-07\\x");
    ASSERT_STREQ(expand("\\\\\\{{date}}", ms), "\\\\2026-12-07");
    ASSERT_STREQ(expand("\\\\ \\{ \\} \\", ms), "\\\\ \\{ \\} \\");
    ASSERT_STREQ(expand("{{{date}}}", ms), "{2026-12-07}");
    ASSERT_STREQ(expand("{{{{date}}", ms), "{{2026-12-07");
    ASSERT_STREQ(expand("{\"d\":\"{{date}}\"}", ms), "{\"d\":\"2026-12-07\"}");
    ASSERT_STREQ(expand("{{date}}}}", ms), "2026-12-07}}");
    ASSERT_STREQ(expand("\\{{{date}}", ms), "{{{date}}");
    ASSERT_STREQ(expand("end \\{{", ms), "end {{");
}

TEST(whitespace_is_trimmed)
{
    int64_t ms = T_2026_12_07_0900;
    ASSERT_STREQ(expand("{{ date }}", ms), "2026-12-07");
    ASSERT_STREQ(expand("{{\tdatetime \t}}", ms), "2026-12-07T09:00:00Z");
    ASSERT_STREQ(expand("{{  scheduledTime}}", ms), "1796634000000");
    ag_template_t *t = parse("{{ kv :\tCACHE\t: a key  }}{{ fetch : https://x/ }}");
    ASSERT(t != NULL);
    ASSERT_STREQ(ag_template_var(t, 0)->binding.ptr, "CACHE");
    ASSERT_STREQ(ag_template_var(t, 0)->arg.ptr, "a key");
    ASSERT_STREQ(ag_template_var(t, 1)->arg.ptr, "https://x/");
    ag_template_free(t);
}

TEST(time_only)
{
    static const struct {
        const char *text;
        bool time_only;
    } cases[] = {
        {"", true},
        {"plain", true},
        {"digests/{{date}}.md", true},
        {"{{datetime}}-{{scheduledTime}}-{{date}}", true},
        {"{{date}} {{kv:C:k}}", false},
        {"{{r2:S:k}}", false},
        {"{{usage:1d}}", false},
        {"{{fetch:http://a}}", false},
    };
    for (size_t i = 0; i < AG_ARRAY_LEN(cases); i++) {
        ag_template_t *t = parse(cases[i].text);
        ASSERT(t != NULL);
        ASSERT_EQ(ag_template_is_time_only(t), cases[i].time_only);
        ag_template_free(t);
    }
}

TEST(kind_names)
{
    ASSERT_STREQ(ag_template_kind_name(AG_TEMPLATE_DATE), "date");
    ASSERT_STREQ(ag_template_kind_name(AG_TEMPLATE_DATETIME), "datetime");
    ASSERT_STREQ(ag_template_kind_name(AG_TEMPLATE_SCHEDULED_TIME), "scheduledTime");
    ASSERT_STREQ(ag_template_kind_name(AG_TEMPLATE_KV), "kv");
    ASSERT_STREQ(ag_template_kind_name(AG_TEMPLATE_R2), "r2");
    ASSERT_STREQ(ag_template_kind_name(AG_TEMPLATE_USAGE), "usage");
    ASSERT_STREQ(ag_template_kind_name(AG_TEMPLATE_FETCH), "fetch");
    ASSERT_STREQ(ag_template_kind_name((ag_template_kind_t)99), "?");
}

TEST(errors_with_their_offsets)
{
    static const struct {
        const char *text;
        int code;
        size_t offset;
        const char *message; /* a part of it */
    } cases[] = {
        {"hi {{dat}}", AG_EINVALID, 5, "unknown variable \"dat\""},
        {"{{ Date }}", AG_EINVALID, 3, "unknown variable \"Date\""},
        {"{{kv2:A:b}}", AG_EINVALID, 2, "unknown variable \"kv2\""},
        {"abc {{date", AG_EINVALID, 4, "unterminated"},
        {"abc {{date}", AG_EINVALID, 4, "unterminated"},
        {"{{date\n}}", AG_EINVALID, 0, "unterminated"},
        {"x\n{{date\r\n}}", AG_EINVALID, 2, "unterminated"},
        {"{{", AG_EINVALID, 0, "unterminated"},
        {"ok {{date}} {{", AG_EINVALID, 12, "unterminated"},
        {"{{}}", AG_EINVALID, 0, "empty variable name"},
        {"a{{   }}", AG_EINVALID, 1, "empty variable name"},
        {"{{:x}}", AG_EINVALID, 0, "empty variable name"},
        {"{{kv:{{date}}}}", AG_EINVALID, 5, "nested"},
        {"{{ {{date}} }}", AG_EINVALID, 3, "nested"},
        {"{{date:%Y}}", AG_EINVALID, 6, "takes no argument"},
        {"{{datetime:}}", AG_EINVALID, 10, "takes no argument"},
        {"{{scheduledTime :x}}", AG_EINVALID, 16, "takes no argument"},
        {"{{kv}}", AG_EINVALID, 4, "needs a binding and a key"},
        {"{{kv:}}", AG_EINVALID, 5, "needs a binding and a key"},
        {"{{kv: :k}}", AG_EINVALID, 6, "needs a binding and a key"},
        {"{{kv:CACHE}}", AG_EINVALID, 10, "needs a binding and a key"},
        {"{{kv:CACHE:}}", AG_EINVALID, 11, "needs a key"},
        {"{{r2:S: }}", AG_EINVALID, 7, "needs a key"},
        {"{{r2::k}}", AG_EINVALID, 5, "needs a binding and a key"},
        {"{{kv:MY CACHE:k}}", AG_EINVALID, 7, "binding name contains a space"},
        {"{{usage}}", AG_EINVALID, 7, "usage needs a window"},
        {"{{usage: }}", AG_EINVALID, 8, "usage needs a window"},
        {"{{usage:7}}", AG_EINVALID, 8, "bad usage window \"7\""},
        {"{{usage:d}}", AG_EINVALID, 8, "bad usage window"},
        {"{{usage:0d}}", AG_EINVALID, 8, "bad usage window"},
        {"{{usage:7w}}", AG_EINVALID, 8, "bad usage window"},
        {"{{usage:7dd}}", AG_EINVALID, 8, "bad usage window"},
        {"{{usage:7 d}}", AG_EINVALID, 8, "bad usage window"},
        {"{{usage:-7d}}", AG_EINVALID, 8, "bad usage window"},
        {"{{usage:1.5h}}", AG_EINVALID, 8, "bad usage window"},
        {"{{usage:36601d}}", AG_EINVALID, 8, "bad usage window"},
        {"{{usage:99999999999999999999999s}}", AG_EINVALID, 8, "bad usage window"},
        {"{{fetch}}", AG_EINVALID, 7, "fetch needs a URL"},
        {"{{fetch:ftp://x/}}", AG_EINVALID, 8, "http:// or https://"},
        {"{{fetch:example.com}}", AG_EINVALID, 8, "http:// or https://"},
        {"{{fetch:http://}}", AG_EINVALID, 8, "with a host"},
        {"{{fetch:https:///path}}", AG_EINVALID, 8, "with a host"},
        {"{{fetch:http://a b/}}", AG_EINVALID, 16, "space or control"},
        {"{{fetch:http://a\tb}}", AG_EINVALID, 16, "space or control"},
    };
    for (size_t i = 0; i < AG_ARRAY_LEN(cases); i++) {
        ag_template_t *t = (ag_template_t *)1;
        ag_template_error_t err;
        memset(&err, 0, sizeof(err));
        int rc = ag_template_parse(cases[i].text, strlen(cases[i].text), &t, &err);
        ASSERT_MSG_(rc == cases[i].code, "\"%s\": rc %d (%s)", cases[i].text, rc, err.message);
        ASSERT(t == NULL);
        ASSERT_MSG_(err.offset == cases[i].offset, "\"%s\": offset %zu, want %zu (%s)",
                    cases[i].text, err.offset, cases[i].offset, err.message);
        ASSERT_MSG_(strstr(err.message, cases[i].message) != NULL, "\"%s\": message \"%s\"",
                    cases[i].text, err.message);
        ASSERT(err.line >= 1 && err.col >= 1);
        ASSERT(strchr(err.message, '\n') == NULL);
    }
    /* err may be NULL. */
    ag_template_t *t;
    ASSERT_EQ(ag_template_parse("{{nope}}", 8, &t, NULL), AG_EINVALID);
    ASSERT_EQ(ag_template_parse(NULL, 1, &t, NULL), AG_EINVALID);
}

TEST(error_line_and_column)
{
    /* Line 3; the column counts code points ("é" and "—" are one each). */
    const char *s = "Digest\nof last week:\n\xc3\xa9\xe2\x80\x94 {{usage:7x}}";
    ag_template_t *t;
    ag_template_error_t err;
    ASSERT_EQ(ag_template_parse(s, strlen(s), &t, &err), AG_EINVALID);
    ASSERT_EQ(err.offset, strlen("Digest\nof last week:\n\xc3\xa9\xe2\x80\x94 {{usage:"));
    ASSERT_EQ(err.line, 3);
    ASSERT_EQ(err.col, 12);

    /* A long unknown name is quoted cut short. */
    char name[200];
    memset(name, 'x', sizeof(name));
    memcpy(name, "{{", 2);
    memcpy(name + sizeof(name) - 3, "}}", 3);
    ASSERT_EQ(ag_template_parse(name, strlen(name), &t, &err), AG_EINVALID);
    ASSERT(strlen(err.message) < sizeof(err.message) - 1);
    ASSERT(strstr(err.message, "unknown variable") != NULL);
}

TEST(size_limit)
{
    char *s = malloc(AG_TEMPLATE_MAX_SIZE + 2);
    ASSERT(s != NULL);
    memset(s, 'a', AG_TEMPLATE_MAX_SIZE + 1);
    memcpy(s + AG_TEMPLATE_MAX_SIZE - 8, "{{date}}", 8);
    ag_template_t *t;
    ag_template_error_t err;
    ASSERT_EQ(ag_template_parse(s, AG_TEMPLATE_MAX_SIZE, &t, &err), 0);
    ASSERT_EQ(ag_template_count(t), 1);
    ag_template_free(t);
    ASSERT_EQ(ag_template_parse(s, AG_TEMPLATE_MAX_SIZE + 1, &t, &err), AG_ETOOBIG);
    ASSERT(t == NULL);
    ASSERT_EQ(err.offset, AG_TEMPLATE_MAX_SIZE);
    ASSERT(strstr(err.message, "64 KiB") != NULL);
    free(s);
}

TEST(placeholder_limit)
{
    ag_buf_t b;
    ag_buf_init(&b, 0);
    for (int i = 0; i < AG_TEMPLATE_MAX_VARS; i++)
        ASSERT_EQ(ag_buf_append_cstr(&b, i % 2 ? "{{kv:C:k}}," : "{{ date }},"), 0);
    ag_template_t *t;
    ag_template_error_t err;
    ASSERT_EQ(ag_template_parse(b.data, b.len, &t, &err), 0);
    ASSERT_EQ(ag_template_count(t), AG_TEMPLATE_MAX_VARS);
    ASSERT_EQ(ag_template_var(t, 255)->kind, AG_TEMPLATE_KV);
    ASSERT_EQ(ag_template_render(t, 0, NULL, 0, &b, NULL), AG_TEMPLATE_MAX_VARS / 2);
    ag_template_free(t);
    ag_buf_reset(&b);
    for (int i = 0; i < AG_TEMPLATE_MAX_VARS; i++)
        ASSERT_EQ(ag_buf_append_cstr(&b, "{{date}}"), 0);
    size_t at = b.len;
    ASSERT_EQ(ag_buf_append_cstr(&b, " {{date}}"), 0);
    ASSERT_EQ(ag_template_parse(b.data, b.len, &t, &err), AG_ETOOBIG);
    ASSERT_EQ(err.offset, at + 1);
    ASSERT(strstr(err.message, "more than 256 placeholders") != NULL);
    /* Escaped braces do not count. */
    ag_buf_reset(&b);
    for (int i = 0; i < 2 * AG_TEMPLATE_MAX_VARS; i++)
        ASSERT_EQ(ag_buf_append_cstr(&b, "\\{{date}}"), 0);
    ASSERT_EQ(ag_buf_append_cstr(&b, "{{date}}"), 0);
    ASSERT_EQ(ag_template_parse(b.data, b.len, &t, &err), 0);
    ASSERT_EQ(ag_template_count(t), 1);
    ag_template_free(t);
    ag_buf_fini(&b);
}

TEST(output_limit)
{
    ag_template_t *t = parse("ab{{kv:C:k}}{{fetch:http://x}}");
    ASSERT(t != NULL);
    size_t big = AG_TEMPLATE_MAX_OUTPUT - 2;
    char *v = malloc(big + 1);
    ASSERT(v != NULL);
    memset(v, 'v', big + 1);
    ag_buf_t b;
    ag_buf_init(&b, 0);

    /* Exactly the limit. */
    ag_str_t vals[2] = {ag_str(v, big), AG_STR_LIT("")};
    ASSERT_EQ(ag_template_render(t, 0, vals, 2, &b, NULL), 0);
    ASSERT_EQ(b.len, AG_TEMPLATE_MAX_OUTPUT);

    /* One byte more, in either value: nothing is appended. */
    ag_buf_reset(&b);
    ASSERT_EQ(ag_buf_append_cstr(&b, "keep"), 0);
    vals[1] = AG_STR_LIT("!");
    ASSERT_EQ(ag_template_render(t, 0, vals, 2, &b, NULL), AG_ETOOBIG);
    ASSERT_EQ(b.len, 4);
    vals[0] = ag_str(v, big + 1);
    vals[1] = AG_STR_LIT("");
    ASSERT_EQ(ag_template_render(t, 0, vals, 2, &b, NULL), AG_ETOOBIG);
    vals[0] = ag_str(v, SIZE_MAX / 2);
    vals[1] = ag_str(v, SIZE_MAX / 2);
    ASSERT_EQ(ag_template_render(t, 0, vals, 2, &b, NULL), AG_ETOOBIG);
    ASSERT_EQ(b.len, 4);
    ASSERT_STREQ(ag_buf_cstr(&b), "keep");
    ag_buf_fini(&b);

    /* The buffer's own cap holds too (an output key of at most 16 bytes). */
    ag_buf_init(&b, 16);
    vals[0] = AG_STR_LIT("0123456789abcd");
    vals[1] = AG_STR_LIT("");
    ASSERT_EQ(ag_template_render(t, 0, vals, 2, &b, NULL), 0);
    ASSERT_EQ(b.len, 16);
    ag_buf_reset(&b);
    vals[1] = AG_STR_LIT("!");
    ASSERT_EQ(ag_template_render(t, 0, vals, 2, &b, NULL), AG_ETOOBIG);
    ASSERT_EQ(b.len, 0);
    ag_buf_fini(&b);
    free(v);
    ag_template_free(t);
}

/* clang-format off */
AG_TESTS(
    AG_TEST_ENTRY(no_placeholders_is_plain_text)
    AG_TEST_ENTRY(time_variables)
    AG_TEST_ENTRY(leap_days)
    AG_TEST_ENTRY(year_end)
    AG_TEST_ENTRY(scheduled_time_digits)
    AG_TEST_ENTRY(calendar_matches_gmtime)
    AG_TEST_ENTRY(listing_placeholders)
    AG_TEST_ENTRY(usage_windows)
    AG_TEST_ENTRY(values_render_verbatim_and_missing_are_reported)
    AG_TEST_ENTRY(escapes)
    AG_TEST_ENTRY(whitespace_is_trimmed)
    AG_TEST_ENTRY(time_only)
    AG_TEST_ENTRY(kind_names)
    AG_TEST_ENTRY(errors_with_their_offsets)
    AG_TEST_ENTRY(error_line_and_column)
    AG_TEST_ENTRY(size_limit)
    AG_TEST_ENTRY(placeholder_limit)
    AG_TEST_ENTRY(output_limit))
/* clang-format on */
