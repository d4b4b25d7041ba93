/* SPDX-License-Identifier: MIT
 *
 * test_message.c: a Message and its event stream made from each other
 * exactly (every block and field), and what is refused: the fake upstream's
 * recorded streams rebuilt, Messages of every block kind round-tripped.
 */
#include "util/platform.h"

#include <string.h>

#include "gateway/message.h"
#include "harness.h"

static int on_event(void *ctx, const ag_sse_event_t *ev)
{
    gw_msg_build_event(ctx, ev);
    return 0;
}

/* Feeds `sse` through the SSE parser in chunks of `chunk` bytes; the rebuilt
 * Message, or NULL. */
static json_t *rebuild(const char *sse, size_t len, size_t chunk)
{
    gw_msg_build_t b;
    gw_msg_build_init(&b, 1 << 20);
    ag_sse_parser_t p;
    ag_sse_parser_init(&p, 0, on_event, &b);
    for (size_t i = 0; i < len; i += chunk)
        ag_sse_parser_feed(&p, sse + i, len - i < chunk ? len - i : chunk);
    ag_sse_parser_fini(&p);
    ag_buf_t out;
    ag_buf_init(&out, 0);
    json_t *m = gw_msg_build_result(&b, &out) == 0 ? json_loadb(out.data, out.len, 0, NULL) : NULL;
    ag_buf_fini(&out);
    gw_msg_build_fini(&b);
    return m;
}

static char *slurp(const char *name, size_t *len)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/%s", AG_MESSAGE_STREAMS, name);
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    static char buf[1 << 20];
    *len = fread(buf, 1, sizeof(buf), f);
    fclose(f);
    return buf;
}

TEST(recorded_streams_rebuild_at_any_chunking)
{
    const char *ok[] = {"text.sse", "tool_use.sse", "thinking.sse", "max_tokens.sse",
                        "stop_sequence.sse"};
    for (size_t i = 0; i < AG_ARRAY_LEN(ok); i++) {
        size_t len;
        const char *sse = slurp(ok[i], &len);
        ASSERT(sse != NULL);
        json_t *whole = rebuild(sse, len, len);
        ASSERT_MSG_(whole != NULL, "%s did not rebuild", ok[i]);
        json_t *content = json_object_get(whole, "content");
        ASSERT(json_array_size(content) > 0);
        ASSERT(json_string_value(json_object_get(whole, "stop_reason")) != NULL);
        for (size_t chunk = 1; chunk < 40; chunk += 7) {
            json_t *m = rebuild(sse, len, chunk);
            ASSERT_MSG_(json_equal(m, whole), "%s differs at chunk %zu", ok[i], chunk);
            json_decref(m);
        }
        /* And back: the Message's own stream rebuilds to the same Message. */
        char *s = json_dumps(whole, JSON_COMPACT);
        ag_buf_t stream;
        ag_buf_init(&stream, 0);
        ASSERT_EQ(gw_msg_to_stream(s, strlen(s), &stream), 0);
        json_t *again = rebuild(stream.data, stream.len, 5);
        ASSERT_MSG_(json_equal(again, whole), "%s does not round-trip", ok[i]);
        json_decref(again);
        ag_buf_fini(&stream);
        free(s);
        json_decref(whole);
    }
    size_t len;
    const char *sse = slurp("mid_error.sse", &len);
    ASSERT(sse != NULL);
    ASSERT(rebuild(sse, len, len) == NULL); /* an error event: never a Message */
}

static void round_trip(const char *message)
{
    json_t *want = json_loads(message, 0, NULL);
    ASSERT(want != NULL);
    ag_buf_t stream;
    ag_buf_init(&stream, 0);
    ASSERT_EQ(gw_msg_to_stream(message, strlen(message), &stream), 0);
    json_t *got = rebuild(stream.data, stream.len, 3);
    ASSERT_MSG_(json_equal(got, want), "round trip of %s", message);
    json_decref(got);
    json_decref(want);
    ag_buf_fini(&stream);
}

TEST(every_block_and_field_round_trips)
{
    round_trip("{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"m\","
               "\"content\":[{\"type\":\"text\",\"text\":\"a \\\"b\\\"\\n\"},"
               "{\"type\":\"text\",\"text\":\"second\"}],\"stop_reason\":\"stop_sequence\","
               "\"stop_sequence\":\"STOP\",\"usage\":{\"input_tokens\":3,"
               "\"cache_creation_input_tokens\":1,\"cache_read_input_tokens\":2,"
               "\"output_tokens\":4,\"service_tier\":\"standard\"}}");
    round_trip("{\"id\":\"msg_2\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"m\","
               "\"content\":[{\"type\":\"thinking\",\"thinking\":\"hmm\",\"signature\":\"sig\"},"
               "{\"type\":\"redacted_thinking\",\"data\":\"xyz\"},"
               "{\"type\":\"text\",\"text\":\"see\",\"citations\":[{\"type\":\"char_location\","
               "\"cited_text\":\"c\",\"document_index\":0,\"start_char_index\":0,"
               "\"end_char_index\":1}]},"
               "{\"type\":\"tool_use\",\"id\":\"toolu_1\",\"name\":\"f\",\"input\":{\"a\":[1,"
               "{\"b\":null}]}},"
               "{\"type\":\"web_search_tool_result\",\"tool_use_id\":\"srvtoolu_1\","
               "\"content\":[]}],"
               "\"stop_reason\":\"tool_use\",\"stop_sequence\":null,\"usage\":{\"input_tokens\":1,"
               "\"output_tokens\":9},\"container\":null}");
}

TEST(what_is_not_a_message_is_refused)
{
    ag_buf_t out;
    ag_buf_init(&out, 0);
    ASSERT(gw_msg_to_stream("[]", 2, &out) == -1);
    ASSERT(gw_msg_to_stream("{\"type\":\"error\"}", 16, &out) == -1);
    const char *bad_text = "{\"type\":\"message\",\"content\":[{\"type\":\"text\"}]}";
    ASSERT(gw_msg_to_stream(bad_text, strlen(bad_text), &out) == -1);
    ASSERT_EQ(out.len, 0);
    ag_buf_fini(&out);
    /* A stream cut before message_stop, or with an unknown delta, is not rebuilt. */
    const char *cut = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":"
                      "{\"type\":\"message\",\"content\":[],\"usage\":{}}}\n\n";
    ASSERT(rebuild(cut, strlen(cut), 4) == NULL);
    const char *odd =
        "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"type\":\"message\","
        "\"content\":[],\"usage\":{}}}\n\nevent: content_block_start\ndata: {\"type\":"
        "\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}"
        "\n\nevent: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,"
        "\"delta\":{\"type\":\"mystery_delta\"}}\n\nevent: message_stop\ndata: {\"type\":"
        "\"message_stop\"}\n\n";
    ASSERT(rebuild(odd, strlen(odd), 7) == NULL);
}

AG_TESTS(AG_TEST_ENTRY(recorded_streams_rebuild_at_any_chunking)
             AG_TEST_ENTRY(every_block_and_field_round_trips)
                 AG_TEST_ENTRY(what_is_not_a_message_is_refused))
