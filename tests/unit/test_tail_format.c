/* SPDX-License-Identifier: MIT
 *
 * test_tail_format.c: the pure parts of `aigate tail` (src/cli/tail_format.c):
 * the pretty lines of given events (a request with model, cached and retries,
 * without model, a scheduled run, canceled, a dropped notice), the NDJSON line,
 * the query string of GET /tail and the admin URL.
 */
#include "util/platform.h"

#include <string.h>

#include "cli/tail_format.h"
#include "harness.h"
#include "util/buf.h"
#include "util/errors.h"

/* 2026-03-13T14:23:01Z and 2026-03-16T09:00:00Z (a Monday) in epoch milliseconds. */
#define T_REQ "1773411781000"
#define T_CRON "1773651600000"

/* Formats `json` pretty into a static buffer. @return the text, or NULL on error. */
static const char *pretty(const char *json)
{
    static char text[4096];
    ag_buf_t b;
    ag_buf_init(&b, 0);
    int rc = ag_tail_format_pretty(&b, json, strlen(json));
    const char *s = rc == 0 ? ag_buf_cstr(&b) : NULL;
    if (s)
        snprintf(text, sizeof(text), "%s", s);
    ag_buf_fini(&b);
    return s ? text : NULL;
}

static const char *query(const ag_tail_filters_t *f)
{
    static char text[4096];
    ag_buf_t b;
    ag_buf_init(&b, 0);
    int rc = ag_tail_query(&b, f);
    const char *s = rc == 0 ? ag_buf_cstr(&b) : NULL;
    if (s)
        snprintf(text, sizeof(text), "%s", s);
    ag_buf_fini(&b);
    return s ? text : "(error)";
}

static const char *admin_url(const char *admin, const char *listen)
{
    static char text[256];
    ag_buf_t b;
    ag_buf_init(&b, 0);
    int rc = ag_tail_admin_url(&b, admin, listen);
    const char *s = rc == 0 ? ag_buf_cstr(&b) : NULL;
    snprintf(text, sizeof(text), "%s", s ? s : "(invalid)");
    ag_buf_fini(&b);
    return text;
}

TEST(pretty_request_with_model)
{
    const char *ev =
        "{\"outcome\":\"ok\",\"scriptName\":\"my-worker\",\"eventTimestamp\":" T_REQ ","
        "\"event\":{\"request\":{\"url\":\"http://127.0.0.1:8787/api/"
        "generate\",\"method\":\"POST\","
        "\"headers\":{\"content-type\":\"application/json\",\"authorization\":\"REDACTED\"}},"
        "\"response\":{\"status\":200}},\"logs\":[],\"exceptions\":[],\"wallTime\":342,"
        "\"cpuTime\":1,\"aigate\":{\"requestId\":\"r1\",\"route\":\"/api/generate\","
        "\"client\":\"127.0.0.1\",\"key\":null,\"model\":\"claude-haiku-4-5\",\"inputTokens\":287,"
        "\"outputTokens\":156,\"costUsd\":0.000259,\"cached\":false,\"retries\":0,"
        "\"upstreamMs\":330,\"stream\":false}}";
    const char *s = pretty(ev);
    ASSERT(s != NULL);
    ASSERT_STREQ(s, "[2026-03-13T14:23:01Z] POST /api/generate - 200 OK (342ms)\n"
                    "  model=claude-haiku-4-5 tokens=287+156 cost=$0.0003\n");
}

TEST(pretty_request_cached_and_retries)
{
    const char *ev =
        "{\"outcome\":\"ok\",\"eventTimestamp\":" T_REQ ".6,"
        "\"event\":{\"request\":{\"url\":\"https://gw.example/v1/messages?beta=true\","
        "\"method\":\"POST\",\"headers\":{}},\"response\":{\"status\":200}},"
        "\"logs\":[],\"exceptions\":[],\"wallTime\":12.5,\"cpuTime\":0,"
        "\"aigate\":{\"model\":\"claude-sonnet-4-5\",\"inputTokens\":10,\"outputTokens\":2,"
        "\"costUsd\":0.01236,\"cached\":true,\"retries\":2}}";
    const char *s = pretty(ev);
    ASSERT(s != NULL);
    /* wallTime is rounded; the time is whole seconds; the query stays with the path. */
    ASSERT_STREQ(s, "[2026-03-13T14:23:01Z] POST /v1/messages?beta=true - 200 OK (13ms)\n"
                    "  model=claude-sonnet-4-5 tokens=10+2 cost=$0.0124 cached retries=2\n");
}

TEST(pretty_request_without_model)
{
    const char *ev = "{\"outcome\":\"ok\",\"eventTimestamp\":" T_REQ ","
                     "\"event\":{\"request\":{\"url\":\"http://h/api/generate\",\"method\":\"GET\","
                     "\"headers\":{}},\"response\":{\"status\":405}},\"logs\":[],"
                     "\"exceptions\":[],\"wallTime\":0,\"cpuTime\":0,"
                     "\"aigate\":{\"model\":null,\"inputTokens\":0,\"outputTokens\":0,"
                     "\"costUsd\":0,\"cached\":false,\"retries\":0}}";
    const char *s = pretty(ev);
    ASSERT(s != NULL);
    ASSERT_STREQ(s, "[2026-03-13T14:23:01Z] GET /api/generate - 405 Method Not Allowed (0ms)\n");
    /* An empty model is no model either; a 429 is the client's error, outcome ok. */
    s = pretty("{\"outcome\":\"ok\",\"eventTimestamp\":" T_REQ ",\"event\":{\"request\":{\"url\":"
               "\"http://h:1\",\"method\":\"POST\"},\"response\":{\"status\":429}},"
               "\"wallTime\":1,\"aigate\":{\"model\":\"\"}}");
    ASSERT(s != NULL);
    ASSERT_STREQ(s, "[2026-03-13T14:23:01Z] POST / - 429 Too Many Requests (1ms)\n");
}

TEST(pretty_exception)
{
    const char *ev =
        "{\"outcome\":\"exception\",\"eventTimestamp\":" T_REQ ","
        "\"event\":{\"request\":{\"url\":\"http://h/api/generate\",\"method\":\"POST\"},"
        "\"response\":{\"status\":502}},\"logs\":[{\"message\":[\"upstream\",503,{\"a\":1}],"
        "\"level\":\"warn\",\"timestamp\":1}],\"exceptions\":[{\"name\":\"UpstreamError\","
        "\"message\":\"upstream answered 503\",\"timestamp\":1}],\"wallTime\":3001,"
        "\"aigate\":{\"model\":\"claude-haiku-4-5\",\"inputTokens\":0,\"outputTokens\":0,"
        "\"costUsd\":0,\"retries\":3}}";
    const char *s = pretty(ev);
    ASSERT(s != NULL);
    ASSERT_STREQ(s, "[2026-03-13T14:23:01Z] POST /api/generate - 502 Bad Gateway (3001ms)\n"
                    "  model=claude-haiku-4-5 tokens=0+0 cost=$0.0000 retries=3\n"
                    "  (warn) upstream 503 {\"a\":1}\n"
                    "  (error) UpstreamError: upstream answered 503\n");
}

TEST(pretty_scheduled_run)
{
    const char *ev =
        "{\"outcome\":\"ok\",\"scriptName\":\"w\",\"eventTimestamp\":" T_CRON ","
        "\"event\":{\"cron\":\"0 9 * * MON\",\"scheduledTime\":" T_CRON "},\"logs\":[],"
        "\"exceptions\":[],\"wallTime\":2140,\"cpuTime\":3,"
        "\"aigate\":{\"task\":\"weekly-digest\",\"model\":\"claude-haiku-4-5\","
        "\"inputTokens\":1200,\"outputTokens\":450,\"costUsd\":0.0042,\"cached\":false,"
        "\"retries\":1}}";
    const char *s = pretty(ev);
    ASSERT(s != NULL);
    ASSERT_STREQ(s, "[2026-03-16T09:00:00Z] cron \"0 9 * * MON\" weekly-digest - ok (2140ms)\n"
                    "  model=claude-haiku-4-5 tokens=1200+450 cost=$0.0042 retries=1\n");
    /* A failed run without a model line. */
    s = pretty("{\"outcome\":\"exception\",\"eventTimestamp\":" T_CRON ",\"event\":{\"cron\":"
               "\"*/5 * * * *\",\"scheduledTime\":1},\"wallTime\":7,\"aigate\":{\"task\":\"t\"}}");
    ASSERT(s != NULL);
    ASSERT_STREQ(s, "[2026-03-16T09:00:00Z] cron \"*/5 * * * *\" t - exception (7ms)\n");
}

TEST(pretty_canceled)
{
    const char *ev =
        "{\"outcome\":\"canceled\",\"eventTimestamp\":" T_REQ ","
        "\"event\":{\"request\":{\"url\":\"http://h/api/generate\",\"method\":\"POST\"},"
        "\"response\":{\"status\":200}},\"wallTime\":1500.4,"
        "\"aigate\":{\"model\":\"claude-haiku-4-5\",\"inputTokens\":287,\"outputTokens\":40,"
        "\"costUsd\":0.0001,\"stream\":true}}";
    const char *s = pretty(ev);
    ASSERT(s != NULL);
    ASSERT_STREQ(s, "[2026-03-13T14:23:01Z] POST /api/generate - 200 OK - canceled (1500ms)\n"
                    "  model=claude-haiku-4-5 tokens=287+40 cost=$0.0001\n");
    /* Gone before any answer: no status to show. */
    s = pretty(
        "{\"outcome\":\"canceled\",\"eventTimestamp\":" T_REQ ",\"event\":{\"request\":"
        "{\"url\":\"http://h/api/generate\",\"method\":\"POST\"},\"response\":{\"status\":0}},"
        "\"wallTime\":5,\"aigate\":{}}");
    ASSERT(s != NULL);
    ASSERT_STREQ(s, "[2026-03-13T14:23:01Z] POST /api/generate - canceled (5ms)\n");
}

TEST(pretty_dropped_notice)
{
    const char *ev = "{\"outcome\":\"ok\",\"eventTimestamp\":" T_REQ ",\"event\":{\"request\":"
                     "{\"url\":\"http://h/api/generate\",\"method\":\"POST\"},\"response\":"
                     "{\"status\":200}},\"wallTime\":9,\"aigate\":{\"dropped\":17}}";
    const char *s = pretty(ev);
    ASSERT(s != NULL);
    ASSERT_STREQ(s, "(17 events dropped: tail was too slow)\n"
                    "[2026-03-13T14:23:01Z] POST /api/generate - 200 OK (9ms)\n");
    ag_buf_t b;
    ag_buf_init(&b, 0);
    ASSERT_EQ(ag_tail_format_dropped(&b, 1), 0);
    ASSERT_MEMEQ(b.data, b.len, "(1 event dropped: tail was too slow)\n");
    ag_buf_fini(&b);
    int64_t n = -1;
    ASSERT_EQ(ag_tail_event_dropped(ev, strlen(ev), &n), 0);
    ASSERT_EQ(n, 17);
    ASSERT_EQ(ag_tail_event_dropped("{}", 2, &n), 0);
    ASSERT_EQ(n, 0);
    ASSERT_EQ(ag_tail_event_dropped("[1]", 3, &n), AG_EPROTO);
}

TEST(pretty_controls_and_bad_input)
{
    /* A client's escape sequence in the path or model never reaches the terminal. */
    const char *s =
        pretty("{\"outcome\":\"ok\",\"eventTimestamp\":" T_REQ ",\"event\":{\"request\":"
               "{\"url\":\"http://h/a\\u001b[2Jb\",\"method\":\"POST\"},\"response\":"
               "{\"status\":200}},\"wallTime\":1,\"aigate\":{\"model\":"
               "\"m\\u009b31m\\n\\u00e9\"}}");
    ASSERT(s != NULL);
    ASSERT_STREQ(s, "[2026-03-13T14:23:01Z] POST /a?[2Jb - 200 OK (1ms)\n"
                    "  model=m?31m?\xc3\xa9 tokens=0+0 cost=$0.0000\n");
    ASSERT(pretty("not json") == NULL);
    ASSERT(pretty("[1,2]") == NULL);
    ASSERT(pretty("{\"a\":1} x") == NULL);
    /* Odd but valid: every field missing. */
    s = pretty("{}");
    ASSERT(s != NULL);
    ASSERT_STREQ(s, "[?] event - ?\n");
}

TEST(json_line)
{
    ag_buf_t b;
    ag_buf_init(&b, 0);
    const char *ev = "{\"outcome\":\"ok\",\"aigate\":{\"model\":\"a\\nb\"}}";
    ASSERT_EQ(ag_tail_format_json(&b, ev, strlen(ev)), 0);
    ASSERT_MEMEQ(b.data, b.len, "{\"outcome\":\"ok\",\"aigate\":{\"model\":\"a\\nb\"}}\n");
    ag_buf_reset(&b);
    /* Sent as several data: lines, the parser joins them with LF: still one NDJSON line. */
    ASSERT_EQ(ag_tail_format_json(&b, "{\n\"a\": 1\n}", 10), 0);
    ASSERT_MEMEQ(b.data, b.len, "{ \"a\": 1 }\n");
    ag_buf_fini(&b);
}

TEST(query_no_filters)
{
    ag_tail_filters_t f = {0};
    ASSERT_STREQ(query(&f), "format=json");
}

TEST(query_encoding)
{
    ag_tail_filters_t f = {0};
    f.search = "a b&c=d+e/f?g#h%i~j.k_l-m";
    ASSERT_STREQ(query(&f), "format=json&search=a%20b%26c%3Dd%2Be%2Ff%3Fg%23h%25i~j.k_l-m");
    f.search = "caf\xc3\xa9 \xe2\x82\xac"; /* café € */
    ASSERT_STREQ(query(&f), "format=json&search=caf%C3%A9%20%E2%82%AC");
    ag_buf_t b;
    ag_buf_init(&b, 0);
    ASSERT_EQ(ag_tail_url_encode(&b, ""), 0);
    ASSERT_EQ(b.len, 0);
    ASSERT_EQ(ag_tail_url_encode(&b, "\x01\x7f\xff"), 0);
    ASSERT_MEMEQ(b.data, b.len, "%01%7F%FF");
    ag_buf_fini(&b);
}

TEST(query_every_flag)
{
    const char *status[] = {"error", "canceled"};
    const char *method[] = {"POST", "GET"};
    const char *header[] = {"x-user:ada lovelace", "x-trace"};
    ag_tail_filters_t f = {
        .status = status,
        .nstatus = 2,
        .method = method,
        .nmethod = 2,
        .header = header,
        .nheader = 2,
        .search = "rate limit",
        .ip = "self",
        .sampling_rate = "0.5",
        .route = "/api/generate",
        .model = "claude-haiku-4-5",
        .key = "mobile app",
    };
    ASSERT_STREQ(query(&f), "format=json&status=error&status=canceled&method=POST&method=GET"
                            "&search=rate%20limit&ip=self&header=x-user%3Aada%20lovelace"
                            "&header=x-trace&sampling_rate=0.5&route=%2Fapi%2Fgenerate"
                            "&model=claude-haiku-4-5&key=mobile%20app");
}

TEST(query_buffer_cap)
{
    ag_buf_t b;
    ag_buf_init(&b, 16);
    ag_tail_filters_t f = {.search = "a long search text that does not fit"};
    ASSERT(ag_tail_query(&b, &f) < 0);
    ag_buf_fini(&b);
}

TEST(admin_urls)
{
    ASSERT_STREQ(admin_url(NULL, AG_TAIL_DEFAULT_ADMIN_LISTEN), "http://127.0.0.1:8788");
    ASSERT_STREQ(admin_url(NULL, "0.0.0.0:9000"), "http://127.0.0.1:9000");
    ASSERT_STREQ(admin_url(NULL, ":9000"), "http://127.0.0.1:9000");
    ASSERT_STREQ(admin_url(NULL, "[::]:9000"), "http://[::1]:9000");
    ASSERT_STREQ(admin_url(NULL, "[::1]:9000"), "http://[::1]:9000");
    ASSERT_STREQ(admin_url(NULL, "localhost:1"), "http://localhost:1");
    ASSERT_STREQ(admin_url(NULL, "10.0.0.5:65535"), "http://10.0.0.5:65535");
    ASSERT_STREQ(admin_url(NULL, "127.0.0.1"), "(invalid)");
    ASSERT_STREQ(admin_url(NULL, "127.0.0.1:0"), "(invalid)");
    ASSERT_STREQ(admin_url(NULL, "127.0.0.1:65536"), "(invalid)");
    ASSERT_STREQ(admin_url(NULL, "127.0.0.1:8x"), "(invalid)");
    ASSERT_STREQ(admin_url(NULL, "[::1]"), "(invalid)");
    ASSERT_STREQ(admin_url(NULL, ""), "(invalid)");
    /* --admin wins over admin_listen, as a URL or a bare address. */
    ASSERT_STREQ(admin_url("http://127.0.0.1:9999/", "127.0.0.1:8788"), "http://127.0.0.1:9999");
    ASSERT_STREQ(admin_url("https://ops.example/aigate//", NULL), "https://ops.example/aigate");
    ASSERT_STREQ(admin_url("127.0.0.1:7000", NULL), "http://127.0.0.1:7000");
    ASSERT_STREQ(admin_url("ftp://x:1", NULL), "(invalid)");
    ASSERT_STREQ(admin_url("http://", NULL), "(invalid)");
    ASSERT_STREQ(admin_url("", "127.0.0.1:8788"), "(invalid)");
}

TEST(reason_phrases)
{
    ASSERT_STREQ(ag_tail_reason(200), "OK");
    ASSERT_STREQ(ag_tail_reason(413), "Content Too Large");
    ASSERT_STREQ(ag_tail_reason(504), "Gateway Timeout");
    ASSERT(ag_tail_reason(299) == NULL);
    /* An unknown status prints as a number alone. */
    const char *s = pretty("{\"outcome\":\"ok\",\"eventTimestamp\":0,\"event\":{\"request\":"
                           "{\"url\":\"/x\",\"method\":\"GET\"},\"response\":{\"status\":299}},"
                           "\"wallTime\":1}");
    ASSERT(s != NULL);
    ASSERT_STREQ(s, "[1970-01-01T00:00:00Z] GET /x - 299 (1ms)\n");
}

TEST(pretty_paths)
{
    static const char *const cases[][2] = {
        {"http://127.0.0.1:8787/api/generate", "/api/generate"},
        {"https://gw.example", "/"},
        {"http://h?x=1", "/?x=1"},
        {"http://h#frag", "/"},
        {"/v1/messages", "/v1/messages"},
        {"/r?next=http://x/y", "/r?next=http://x/y"},
        {"", "/"},
    };
    for (size_t i = 0; i < AG_ARRAY_LEN(cases); i++) {
        char ev[512], want[256];
        snprintf(ev, sizeof(ev),
                 "{\"eventTimestamp\":0,\"outcome\":\"ok\",\"event\":{\"request\":{\"url\":"
                 "\"%s\",\"method\":\"GET\"},\"response\":{\"status\":200}}}",
                 cases[i][0]);
        snprintf(want, sizeof(want), "[1970-01-01T00:00:00Z] GET %s - 200 OK\n", cases[i][1]);
        const char *s = pretty(ev);
        ASSERT(s != NULL);
        ASSERT_STREQ(s, want);
    }
}

/* clang-format off */
AG_TESTS(
    AG_TEST_ENTRY(pretty_request_with_model)
    AG_TEST_ENTRY(pretty_request_cached_and_retries)
    AG_TEST_ENTRY(pretty_request_without_model)
    AG_TEST_ENTRY(pretty_exception)
    AG_TEST_ENTRY(pretty_scheduled_run)
    AG_TEST_ENTRY(pretty_canceled)
    AG_TEST_ENTRY(pretty_dropped_notice)
    AG_TEST_ENTRY(pretty_controls_and_bad_input)
    AG_TEST_ENTRY(json_line)
    AG_TEST_ENTRY(query_no_filters)
    AG_TEST_ENTRY(query_encoding)
    AG_TEST_ENTRY(query_every_flag)
    AG_TEST_ENTRY(query_buffer_cap)
    AG_TEST_ENTRY(admin_urls)
    AG_TEST_ENTRY(reason_phrases)
    AG_TEST_ENTRY(pretty_paths))
/* clang-format on */
