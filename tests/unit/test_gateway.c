/* SPDX-License-Identifier: MIT
 *
 * test_gateway.c: the JSON contract builders of the gateway: the upstream
 * body, the seed's response from an upstream answer, cache entries and their
 * replay and Cache-Control parsing
 * (the client address rule: test_client_ip.c).
 */
#include "util/platform.h"

#include <string.h>

#include "gateway/answer.h"
#include "gateway/cache.h"
#include "gateway/steps.h"
#include "util/log.h"

#include "harness.h"

TEST(upstream_body_is_exactly_the_seeds)
{
    ag_pool_t pool;
    ag_pool_init(&pool);
    ag_str_t b = ag__gw_build_upstream_body(&pool, AG_STR_LIT("claude-haiku-4-5"), 1024,
                                            AG_STR_LIT("say \"hi\"\n\xF0\x9F\x98\x80"));
    ASSERT_MEMEQ(b.ptr, b.len,
                 "{\"model\":\"claude-haiku-4-5\",\"max_tokens\":1024,\"messages\":[{\"role\":"
                 "\"user\",\"content\":\"say \\\"hi\\\"\\n\xF0\x9F\x98\x80\"}]}");
    ag_pool_fini(&pool);
}

TEST(text_blocks_are_joined_and_usage_passed_through)
{
    static const char body[] =
        "{\"content\":[{\"type\":\"thinking\",\"thinking\":\"x\"},{\"type\":\"text\",\"text\":"
        "\"Hel\"},"
        "{\"type\":\"tool_use\",\"id\":\"t\",\"name\":\"n\",\"input\":{}},{\"type\":\"text\","
        "\"text\":"
        "\"lo \xF0\x9F\x98\x80\"}],\"stop_reason\":\"tool_use\",\"usage\":{\"input_tokens\":7,"
        "\"output_tokens\":9}}";
    ag_upstream_response_t resp = {.status = 200, .body = AG_STR_LIT(body), .duration_us = 5};
    ag_buf_t value;
    ag_buf_init(&value, 0);
    shared_result_t *r = ag__gw_result_from_upstream("t", &resp, &value);
    ASSERT(r != NULL);
    ASSERT_EQ(r->status, 200);
    ASSERT_MEMEQ(r->body, r->len,
                 "{\"output\":\"Hello \xF0\x9F\x98\x80\",\"usage\":{\"input_tokens\":7,"
                 "\"output_tokens\":9},\"cached\":false}");
    ASSERT_EQ(r->output_units, 8); /* "Hello " + a surrogate pair */
    ASSERT_EQ(r->input_tokens, 7);
    ASSERT_EQ(r->upstream_us, 5);
    ASSERT_MEMEQ(
        value.data, value.len,
        "8 7 9 tool_use\n{\"output\":\"Hello \xF0\x9F\x98\x80\",\"usage\":{\"input_tokens\":"
        "7,\"output_tokens\":9}}");
    ag_kv_value_t v = {.data = value.data, .len = value.len};
    cache_entry_t e;
    ASSERT(ag__gw_parse_entry(&v, &e));
    ASSERT_EQ(e.units, 8);
    ASSERT_EQ(e.in, 7);
    ASSERT_EQ(e.out, 9);
    ASSERT_STREQ(e.stop, "tool_use");
    ASSERT(!e.raw);
    ag__gw_result_release(r);
    ag_buf_fini(&value);
}

TEST(unusable_upstream_answers_are_502)
{
    static const char *const bodies[] = {
        "garbage", "{}", "{\"content\":[],\"usage\":1}", "{\"content\":{},\"usage\":{}}",
        "{\"content\":[{\"type\":\"text\",\"text\":3}],\"usage\":{}}"};
    ag_log_min_level = AG_LOG_ERROR + 1;
    for (size_t i = 0; i < AG_ARRAY_LEN(bodies); i++) {
        ag_upstream_response_t resp = {.status = 200, .body = ag_str_c(bodies[i])};
        shared_result_t *r = ag__gw_result_from_upstream("t", &resp, NULL);
        ASSERT(r != NULL);
        ASSERT_EQ(r->status, 502);
        ASSERT_MEMEQ(r->body, r->len, "{\"error\":\"AI service error\"}");
        ag__gw_result_release(r);
    }
    ag_upstream_response_t err = {.status = 529, .body = AG_STR_LIT("{\"type\":\"error\"}")};
    shared_result_t *r = ag__gw_result_from_upstream("t", &err, NULL);
    ASSERT_EQ(r->status, 502);
    ag__gw_result_release(r);
    ag_log_min_level = AG_LOG_INFO;
}

TEST(raw_message_entries_replay_only_when_all_text)
{
    char ok[] = "0 0 0 raw\n{\"content\":[{\"type\":\"text\",\"text\":\"a\"},{\"type\":\"text\","
                "\"text\":\"b\"}],\"stop_reason\":\"max_tokens\",\"usage\":{\"input_tokens\":1,"
                "\"output_tokens\":2}}";
    ag_kv_value_t v = {.data = ok, .len = strlen(ok)};
    cache_entry_t e;
    ASSERT(ag__gw_parse_entry(&v, &e));
    ASSERT(e.raw);
    ag_buf_t text;
    ag_buf_init(&text, 0);
    long long in, out;
    char stop[64];
    ASSERT(ag__gw_entry_text(&e, &text, &in, &out, stop));
    ASSERT_MEMEQ(text.data, text.len, "ab");
    ASSERT_EQ(in, 1);
    ASSERT_EQ(out, 2);
    ASSERT_STREQ(stop, "max_tokens");
    ag_buf_reset(&text);
    char tool[] = "0 0 0 raw\n{\"content\":[{\"type\":\"tool_use\",\"id\":\"t\",\"name\":\"n\","
                  "\"input\":{}}],\"usage\":{}}";
    v = (ag_kv_value_t){.data = tool, .len = strlen(tool)};
    ASSERT(ag__gw_parse_entry(&v, &e));
    ASSERT(!ag__gw_entry_text(&e, &text, &in, &out, stop));
    ag_buf_fini(&text);
    char broken[] = "not an entry}";
    v = (ag_kv_value_t){.data = broken, .len = strlen(broken)};
    ASSERT(!ag__gw_parse_entry(&v, &e));
}

TEST(cache_control_tokens)
{
    ASSERT(ag__gw_has_token(AG_STR_LIT("no-cache"), "no-cache"));
    ASSERT(ag__gw_has_token(AG_STR_LIT("max-age=0, No-Store"), "no-store"));
    ASSERT(!ag__gw_has_token(AG_STR_LIT("no-cache-please"), "no-cache"));
    ASSERT(!ag__gw_has_token(AG_STR_NULL, "no-store"));
}

TEST(period_words)
{
    char buf[32];
    ASSERT_STREQ(ag__gw_period_word(60, buf, sizeof(buf)), "minute");
    ASSERT_STREQ(ag__gw_period_word(3600, buf, sizeof(buf)), "hour");
    ASSERT_STREQ(ag__gw_period_word(90, buf, sizeof(buf)), "90 seconds");
}

AG_TESTS(AG_TEST_ENTRY(upstream_body_is_exactly_the_seeds)
             AG_TEST_ENTRY(text_blocks_are_joined_and_usage_passed_through)
                 AG_TEST_ENTRY(unusable_upstream_answers_are_502)
                     AG_TEST_ENTRY(raw_message_entries_replay_only_when_all_text)
                         AG_TEST_ENTRY(cache_control_tokens) AG_TEST_ENTRY(period_words))
