/* SPDX-License-Identifier: MIT
 *
 * test_sse.c: the event-stream parser (framing, chunking, caps) and the
 * Anthropic accumulator (text, cumulative usage, errors) on recorded streams.
 */
#include "util/platform.h"

#include "harness.h"
#include "upstream/sse.h"
#include "util/buf.h"
#include "util/errors.h"

/* A string literal and its length, embedded NULs included. */
#define S(lit) lit, sizeof(lit) - 1

/* A stream in the shape of the SDK fixtures (thinking, text, tool use). */
static const char full_stream[] =
    "event: message_start\n"
    "data: "
    "{\"type\":\"message_start\",\"message\":{\"id\":\"msg_019Q1hrJbZG26Fb9BQhrkHEr\",\"type\":"
    "\"message\",\"role\":\"assistant\",\"model\":\"claude-sonnet-4-20250514\",\"content\":[],"
    "\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{\"input_tokens\":377,\"cache_creation_"
    "input_tokens\":11,\"cache_read_input_tokens\":22,\"output_tokens\":1,\"service_tier\":"
    "\"standard\"}}}\n"
    "\n"
    "event: content_block_start\n"
    "data: {\"type\": \"content_block_start\", \"index\": 0, \"content_block\": {\"type\": "
    "\"thinking\", \"thinking\": \"\"}}\n"
    "\n"
    "event: ping\n"
    "data: {\"type\": \"ping\"}\n"
    "\n"
    "event: content_block_delta\n"
    "data: {\"type\": \"content_block_delta\", \"index\": 0, \"delta\": {\"type\": "
    "\"thinking_delta\", \"thinking\": \"Let me think\\n\\n1. First\"}}\n"
    "\n"
    "event: content_block_delta\n"
    "data: {\"type\": \"content_block_delta\", \"index\": 0, \"delta\": {\"type\": "
    "\"signature_delta\", \"signature\": "
    "\"EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxBdjrkzLoky3dl1pkiMOYds\"}}\n"
    "\n"
    "event: content_block_stop\n"
    "data: {\"type\": \"content_block_stop\", \"index\": 0}\n"
    "\n"
    "event: content_block_start\n"
    "data: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"text\","
    "\"text\":\"\"}}\n"
    "\n"
    ": keepalive\n"
    "\n"
    "event: content_block_delta\n"
    "data: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"text_delta\","
    "\"text\":\"Hello\"}}\n"
    "\n"
    "event: content_block_delta\n"
    "data: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"text_delta\","
    "\"text\":\" there\"}}\n"
    "\n"
    "event: content_block_delta\n"
    "data: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"text_delta\","
    "\"text\":\"! \\u00e9\\n\"}}\n"
    "\n"
    "event: content_block_stop\n"
    "data: {\"type\":\"content_block_stop\",\"index\":1}\n"
    "\n"
    "event: content_block_start\n"
    "data: {\"type\":\"content_block_start\",\"index\":2,\"content_block\":{\"type\":\"tool_use\","
    "\"id\":\"toolu_01NRLabsLyVHZPKxbKvkfSMn\",\"name\":\"get_weather\",\"input\":{}}}\n"
    "\n"
    "event: content_block_delta\n"
    "data: {\"type\":\"content_block_delta\",\"index\":2,\"delta\":{\"type\":\"input_json_delta\","
    "\"partial_json\":\"\"}}\n"
    "\n"
    "event: content_block_delta\n"
    "data: {\"type\":\"content_block_delta\",\"index\":2,\"delta\":{\"type\":\"input_json_delta\","
    "\"partial_json\":\"{\\\"locati\"}}\n"
    "\n"
    "event: content_block_delta\n"
    "data: {\"type\":\"content_block_delta\",\"index\":2,\"delta\":{\"type\":\"input_json_delta\","
    "\"partial_json\":\"on\\\": \\\"Paris\\\"}\"}}\n"
    "\n"
    "event: content_block_stop\n"
    "data: {\"type\":\"content_block_stop\",\"index\":2}\n"
    "\n"
    "event: message_delta\n"
    "data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\",\"stop_sequence\":"
    "null},\"usage\":{\"output_tokens\":65}}\n"
    "\n"
    "event: message_stop\n"
    "data: {\"type\":\"message_stop\"}\n"
    "\n";
#define FULL_STREAM_EVENTS 18

/* Records every event as "event|id|data\n" and folds it into an accumulator. */
typedef struct {
    ag_buf_t log;
    ag_anthropic_stream_t acc;
    int events;
    int stop_at; /* return stop_rc from this event (1-based); 0: never */
    int stop_rc;
} rec_t;

static void rec_init(rec_t *r)
{
    ag_buf_init(&r->log, 0);
    ag_anthropic_stream_init(&r->acc, 0);
    r->events = 0;
    r->stop_at = 0;
    r->stop_rc = 0;
}

static void rec_fini(rec_t *r)
{
    ag_buf_fini(&r->log);
    ag_anthropic_stream_fini(&r->acc);
}

static int rec_cb(void *ctx, const ag_sse_event_t *ev)
{
    rec_t *r = ctx;
    r->events++;
    /* The parser promises a NUL after data. */
    if (ev->data.ptr[ev->data.len] != '\0')
        return -1000;
    ag_buf_printf(&r->log, "%.*s|%.*s|%.*s\n", (int)ev->event.len, ev->event.ptr, (int)ev->id.len,
                  ev->id.ptr, (int)ev->data.len, ev->data.ptr);
    int rc = ag_anthropic_stream_on_event(&r->acc, ev);
    if (rc)
        return rc;
    return r->events == r->stop_at ? r->stop_rc : 0;
}

/* Parses `s` in one feed into a fresh recorder. @return the feed's result. */
static int parse_whole(rec_t *r, const char *s, size_t len, size_t max)
{
    ag_sse_parser_t p;
    rec_init(r);
    ag_sse_parser_init(&p, max, rec_cb, r);
    int rc = ag_sse_parser_feed(&p, s, len);
    ag_sse_parser_fini(&p);
    return rc;
}

/* Feeds each of the NUL-separated chunks in `chunks` (ending with an empty one). */
static int parse_chunks(rec_t *r, const char *const *chunks, size_t max)
{
    ag_sse_parser_t p;
    rec_init(r);
    ag_sse_parser_init(&p, max, rec_cb, r);
    int rc = 0;
    for (size_t i = 0; chunks[i] && rc == 0; i++)
        rc = ag_sse_parser_feed(&p, chunks[i], strlen(chunks[i]));
    ag_sse_parser_fini(&p);
    return rc;
}

/* Rewrites every LF in `in` as `eol`. */
static void with_eol(ag_buf_t *out, const char *in, const char *eol)
{
    ag_buf_init(out, 0);
    for (const char *c = in; *c; c++) {
        if (*c == '\n')
            ag_buf_append_cstr(out, eol);
        else
            ag_buf_append(out, c, 1);
    }
}

static bool same_totals(const rec_t *a, const rec_t *b)
{
    return a->events == b->events && a->log.len == b->log.len &&
           memcmp(a->log.data, b->log.data, a->log.len) == 0 &&
           memcmp(&a->acc.usage, &b->acc.usage, sizeof(a->acc.usage)) == 0 &&
           a->acc.text.len == b->acc.text.len &&
           memcmp(a->acc.text.data, b->acc.text.data, a->acc.text.len) == 0 &&
           ag_anthropic_stream_complete(&a->acc) == ag_anthropic_stream_complete(&b->acc) &&
           a->acc.events == b->acc.events && a->acc.json_errors == b->acc.json_errors;
}

TEST(full_stream_totals)
{
    rec_t r;
    int rc = parse_whole(&r, full_stream, strlen(full_stream), 0);
    ASSERT_EQ(rc, 0);
    ASSERT_EQ(r.events, FULL_STREAM_EVENTS);
    ASSERT_EQ(r.acc.events, FULL_STREAM_EVENTS);
    ASSERT_EQ(r.acc.json_errors, 0);
    ASSERT(r.acc.saw_message_start && r.acc.saw_message_stop && !r.acc.saw_error);
    ASSERT(ag_anthropic_stream_complete(&r.acc));
    ASSERT_MEMEQ(r.acc.text.data, r.acc.text.len, "Hello there! \xC3\xA9\n");
    ASSERT(!r.acc.text_truncated);
    ASSERT_EQ(r.acc.usage.input_tokens, 377);
    ASSERT_EQ(r.acc.usage.cache_creation_input_tokens, 11);
    ASSERT_EQ(r.acc.usage.cache_read_input_tokens, 22);
    ASSERT_EQ(r.acc.usage.output_tokens, 65);
    ASSERT_MEMEQ(r.acc.model.data, r.acc.model.len, "claude-sonnet-4-20250514");
    ASSERT_MEMEQ(r.acc.id.data, r.acc.id.len, "msg_019Q1hrJbZG26Fb9BQhrkHEr");
    ASSERT_MEMEQ(r.acc.stop_reason.data, r.acc.stop_reason.len, "tool_use");
    /* The ping event passes through with its name and the data as sent. */
    ag_buf_cstr(&r.log);
    ASSERT(strstr(r.log.data, "\nping||{\"type\": \"ping\"}\n") != NULL);
    rec_fini(&r);
}

/* Whole, byte by byte, and split in two at every position: same events and
 * totals, for LF, CRLF and CR line ends. */
TEST(any_chunking_gives_the_same_result)
{
    static const char *const eols[] = {"\n", "\r\n", "\r"};
    for (size_t e = 0; e < AG_ARRAY_LEN(eols); e++) {
        ag_buf_t s;
        with_eol(&s, full_stream, eols[e]);
        rec_t ref;
        ASSERT_EQ(parse_whole(&ref, s.data, s.len, 0), 0);
        ASSERT_EQ(ref.events, FULL_STREAM_EVENTS);
        ASSERT_EQ(ref.acc.usage.output_tokens, 65);

        rec_t r;
        ag_sse_parser_t p;
        rec_init(&r);
        ag_sse_parser_init(&p, 0, rec_cb, &r);
        for (size_t i = 0; i < s.len; i++)
            ASSERT_EQ(ag_sse_parser_feed(&p, s.data + i, 1), 0);
        ag_sse_parser_fini(&p);
        ASSERT(same_totals(&ref, &r));
        rec_fini(&r);

        for (size_t cut = 0; cut <= s.len; cut++) {
            rec_init(&r);
            ag_sse_parser_init(&p, 0, rec_cb, &r);
            ASSERT_EQ(ag_sse_parser_feed(&p, s.data, cut), 0);
            ASSERT_EQ(ag_sse_parser_feed(&p, s.data + cut, s.len - cut), 0);
            ag_sse_parser_fini(&p);
            ASSERT_MSG_(same_totals(&ref, &r), "eol %zu, cut at %zu", e, cut);
            rec_fini(&r);
        }
        rec_fini(&ref);
        ag_buf_fini(&s);
    }
}

TEST(line_endings)
{
    static const char *const streams[] = {
        "data: a\n\n",   "data: a\r\n\r\n", "data: a\r\r",
        "data: a\r\n\n", "data: a\n\r",     "data: a\r\r\n", /* mixed */
    };
    for (size_t i = 0; i < AG_ARRAY_LEN(streams); i++) {
        rec_t r;
        ASSERT_EQ(parse_whole(&r, streams[i], strlen(streams[i]), 0), 0);
        ASSERT_MSG_(r.events == 1, "stream %zu: %d events", i, r.events);
        ASSERT_MEMEQ(r.log.data, r.log.len, "message||a\n");
        rec_fini(&r);
    }
    /* CR LF is one line end, but LF CR is two. */
    rec_t r;
    ASSERT_EQ(parse_whole(&r, S("data: a\r\ndata: b\n\rdata: c\n\n"), 0), 0);
    ASSERT_MEMEQ(r.log.data, r.log.len, "message||a\nb\nmessage||c\n");
    rec_fini(&r);
}

TEST(cr_and_lf_split_across_chunks)
{
    /* A CR that ends a chunk and a LF that starts the next are one line end:
     * if they counted as two, "x" would be dispatched alone. */
    static const char *const a[] = {"data: x\r", "\ndata: y\r", "\n\r", "\n", NULL};
    rec_t r;
    ASSERT_EQ(parse_chunks(&r, a, 0), 0);
    ASSERT_MEMEQ(r.log.data, r.log.len, "message||x\ny\n");
    rec_fini(&r);

    /* A CR at a chunk end followed by something else is a line end by itself. */
    static const char *const b[] = {"data: x\r", "data: y\r", "\r", "data: z\r", "\r", NULL};
    ASSERT_EQ(parse_chunks(&r, b, 0), 0);
    ASSERT_MEMEQ(r.log.data, r.log.len, "message||x\ny\nmessage||z\n");
    rec_fini(&r);

    /* CR, then an empty chunk, then LF: still one line end. */
    static const char *const c[] = {"data: x\r", "", "\n", "\r\n", NULL};
    ASSERT_EQ(parse_chunks(&r, c, 0), 0);
    ASSERT_MEMEQ(r.log.data, r.log.len, "message||x\n");
    rec_fini(&r);
}

TEST(comments_are_ignored)
{
    static const char s[] = ": keepalive\n:\n:data: no\nevent: e\n: between\ndata: yes\n\n"
                            ": trailing\n\n";
    rec_t r;
    ASSERT_EQ(parse_whole(&r, s, strlen(s), 0), 0);
    ASSERT_EQ(r.events, 1);
    ASSERT_MEMEQ(r.log.data, r.log.len, "e||yes\n");
    rec_fini(&r);
}

TEST(multi_line_data_is_joined_with_lf)
{
    static const char s[] = "data: a\ndata:\ndata\ndata:  b\ndata: c \n\n";
    rec_t r;
    ASSERT_EQ(parse_whole(&r, s, strlen(s), 0), 0);
    ASSERT_EQ(r.events, 1);
    /* "data" without a colon is a data line with an empty value; only one
     * space after the colon is stripped. */
    ASSERT_MEMEQ(r.log.data, r.log.len, "message||a\n\n\n b\nc \n");
    rec_fini(&r);
}

TEST(space_after_colon_is_optional)
{
    static const char s[] = "event:foo\ndata:x\n\nevent: bar\ndata: y\n\nevent:  baz\ndata:z\n\n";
    rec_t r;
    ASSERT_EQ(parse_whole(&r, s, strlen(s), 0), 0);
    ASSERT_MEMEQ(r.log.data, r.log.len, "foo||x\nbar||y\n baz||z\n");
    rec_fini(&r);
}

TEST(event_without_data_is_not_dispatched)
{
    /* The type of an undispatched event does not carry over to the next one;
     * an empty "data:" line does make an event. Unknown fields are ignored. */
    static const char s[] = "event: ping\n\nevent: lone\nretry: 10\nfoo: bar\n\n"
                            "data: x\n\n\n\nevent: e\ndata:\n\n";
    rec_t r;
    ASSERT_EQ(parse_whole(&r, s, strlen(s), 0), 0);
    ASSERT_EQ(r.events, 2);
    ASSERT_MEMEQ(r.log.data, r.log.len, "message||x\ne||\n");
    rec_fini(&r);

    /* An event not ended by a blank line is never dispatched. */
    ASSERT_EQ(parse_whole(&r, S("data: a\n\ndata: b\n"), 0), 0);
    ASSERT_MEMEQ(r.log.data, r.log.len, "message||a\n");
    rec_fini(&r);
}

TEST(last_event_id_persists)
{
    static const char s[] = "id: 7\ndata: a\n\ndata: b\n\nid\ndata: c\n\nid: x\0y\ndata: d\n\n"
                            "id: 9\n\ndata: e\n\n";
    rec_t r;
    ASSERT_EQ(parse_whole(&r, s, sizeof(s) - 1, 0), 0);
    /* "id" with no value resets it; an id containing NUL is ignored; an id
     * set by an event with no data still applies to the next one. */
    ASSERT_MEMEQ(r.log.data, r.log.len,
                 "message|7|a\nmessage|7|b\nmessage||c\nmessage||d\nmessage|9|e\n");
    rec_fini(&r);
}

TEST(leading_bom_is_skipped_once)
{
    rec_t r;
    ASSERT_EQ(parse_whole(&r,
                          S("\xEF\xBB\xBF"
                            "data: x\n\n"),
                          0),
              0);
    ASSERT_MEMEQ(r.log.data, r.log.len, "message||x\n");
    rec_fini(&r);

    static const char *const split[] = {"\xEF", "\xBB",
                                        "\xBF"
                                        "da",
                                        "ta: x\n\n", NULL};
    ASSERT_EQ(parse_chunks(&r, split, 0), 0);
    ASSERT_MEMEQ(r.log.data, r.log.len, "message||x\n");
    rec_fini(&r);

    /* A second BOM is part of the field name, so the line is an unknown field. */
    ASSERT_EQ(parse_whole(&r,
                          S("\xEF\xBB\xBF\xEF\xBB\xBF"
                            "data: x\n\ndata: y\n\n"),
                          0),
              0);
    ASSERT_MEMEQ(r.log.data, r.log.len, "message||y\n");
    rec_fini(&r);

    /* A BOM prefix that turns out not to be one is kept as text, even when
     * it was held back across chunks: "\xEF\xBB" "data" is not "data". */
    static const char *const partial[] = {"\xEF", "\xBB", "data: x\n\ndata: y\n\n", NULL};
    ASSERT_EQ(parse_chunks(&r, partial, 0), 0);
    ASSERT_MEMEQ(r.log.data, r.log.len, "message||y\n");
    rec_fini(&r);
    ASSERT_EQ(parse_whole(&r,
                          S("\xEF"
                            "data: x\n\ndata: y\n\n"),
                          0),
              0);
    ASSERT_MEMEQ(r.log.data, r.log.len, "message||y\n");
    rec_fini(&r);
}

TEST(cap_gives_toobig_and_sticks)
{
    rec_t r;
    /* A line of exactly the cap passes; one byte more does not. */
    ASSERT_EQ(parse_whole(&r, S("data: 0123456789\n\n"), 16), 0);
    ASSERT_EQ(r.events, 1);
    rec_fini(&r);
    ASSERT_EQ(parse_whole(&r, S("data: 0123456789A\n\n"), 16), AG_ETOOBIG);
    ASSERT_EQ(r.events, 0);
    rec_fini(&r);

    /* The same line split across chunks, and an endless line without an end. */
    static const char *const split[] = {"data: 01234", "56789A", "\n\n", NULL};
    ASSERT_EQ(parse_chunks(&r, split, 16), AG_ETOOBIG);
    rec_fini(&r);
    static const char *const endless[] = {"data: 0123456789", "A", NULL};
    ASSERT_EQ(parse_chunks(&r, endless, 16), AG_ETOOBIG);
    rec_fini(&r);

    /* Many short data lines: the event's data is capped too. Events before
     * the oversized one are delivered, and the error sticks. */
    ag_sse_parser_t p;
    rec_init(&r);
    ag_sse_parser_init(&p, 16, rec_cb, &r);
    ASSERT_EQ(ag_sse_parser_feed(&p, S("data: ok\n\n")), 0);
    int rc = 0;
    for (int i = 0; i < 10 && rc == 0; i++)
        rc = ag_sse_parser_feed(&p, S("data: abcd\n"));
    ASSERT_EQ(rc, AG_ETOOBIG);
    ASSERT_EQ(ag_sse_parser_feed(&p, S("\n")), AG_ETOOBIG);
    ASSERT_EQ(ag_sse_parser_feed(&p, S("data: ok\n\n")), AG_ETOOBIG);
    ASSERT_EQ(r.events, 1);
    ag_sse_parser_fini(&p);
    rec_fini(&r);
}

TEST(callback_result_stops_parsing)
{
    static const char s[] = "data: 1\n\ndata: 2\n\ndata: 3\n\n";
    ag_sse_parser_t p;
    rec_t r;
    rec_init(&r);
    r.stop_at = 2;
    r.stop_rc = 42;
    ag_sse_parser_init(&p, 0, rec_cb, &r);
    ASSERT_EQ(ag_sse_parser_feed(&p, s, strlen(s)), 42);
    ASSERT_EQ(r.events, 2);
    ASSERT_EQ(ag_sse_parser_feed(&p, s, strlen(s)), 42);
    ASSERT_EQ(r.events, 2);
    ag_sse_parser_fini(&p);
    rec_fini(&r);
}

TEST(usage_is_cumulative_latest_wins)
{
    static const char s[] =
        "event: message_start\n"
        "data: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":10,"
        "\"output_tokens\":1}}}\n\n"
        "event: message_delta\n"
        "data: {\"type\":\"message_delta\",\"delta\":{},\"usage\":{\"output_tokens\":5}}\n\n";
    rec_t r;
    ASSERT_EQ(parse_whole(&r, s, strlen(s), 0), 0);
    ASSERT_EQ(r.acc.usage.input_tokens, 10);
    ASSERT_EQ(r.acc.usage.output_tokens, 5);
    ASSERT_EQ(r.acc.usage.cache_read_input_tokens, 0);
    ASSERT(r.acc.saw_message_start && !r.acc.saw_message_stop);
    ASSERT(!ag_anthropic_stream_complete(&r.acc));

    /* A second message_delta replaces the counts; newer API versions repeat
     * the input and cache counts there; null or negative values are ignored. */
    static const char more[] =
        "event: message_delta\n"
        "data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":"
        "{\"output_tokens\":9,\"input_tokens\":12,\"cache_creation_input_tokens\":null,"
        "\"cache_read_input_tokens\":3}}\n\n"
        "event: message_delta\n"
        "data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":null},\"usage\":"
        "{\"output_tokens\":-4,\"input_tokens\":1.5}}\n\n"
        "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";
    ag_sse_parser_t p;
    ag_sse_parser_init(&p, 0, rec_cb, &r);
    ASSERT_EQ(ag_sse_parser_feed(&p, more, strlen(more)), 0);
    ag_sse_parser_fini(&p);
    ASSERT_EQ(r.acc.usage.output_tokens, 9);
    ASSERT_EQ(r.acc.usage.input_tokens, 12);
    ASSERT_EQ(r.acc.usage.cache_read_input_tokens, 3);
    ASSERT_EQ(r.acc.usage.cache_creation_input_tokens, 0);
    ASSERT_MEMEQ(r.acc.stop_reason.data, r.acc.stop_reason.len, "end_turn");
    ASSERT(ag_anthropic_stream_complete(&r.acc));
    rec_fini(&r);
}

TEST(error_event_mid_stream)
{
    static const char s[] =
        "event: message_start\n"
        "data: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":4,"
        "\"output_tokens\":1}}}\n\n"
        "event: content_block_delta\n"
        "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\","
        "\"text\":\"Hi\"}}\n\n"
        "event: error\n"
        "data: {\"type\": \"error\", \"error\": {\"type\": \"overloaded_error\", \"message\": "
        "\"Overloaded\"}}\n\n";
    rec_t r;
    ASSERT_EQ(parse_whole(&r, s, strlen(s), 0), 0);
    ASSERT(r.acc.saw_error);
    ASSERT(!ag_anthropic_stream_complete(&r.acc));
    ASSERT_MEMEQ(r.acc.text.data, r.acc.text.len, "Hi");
    ASSERT_EQ(r.acc.usage.input_tokens, 4);
    ASSERT_MEMEQ(r.acc.error_type.data, r.acc.error_type.len, "overloaded_error");
    ASSERT_MEMEQ(r.acc.error_json.data, r.acc.error_json.len,
                 "{\"type\": \"error\", \"error\": {\"type\": \"overloaded_error\", \"message\": "
                 "\"Overloaded\"}}");
    /* A message_stop after an error does not make the stream complete. */
    ag_sse_parser_t p;
    ag_sse_parser_init(&p, 0, rec_cb, &r);
    ASSERT_EQ(ag_sse_parser_feed(&p, S("event: message_stop\ndata: {}\n\n")), 0);
    ag_sse_parser_fini(&p);
    ASSERT(r.acc.saw_message_stop);
    ASSERT(!ag_anthropic_stream_complete(&r.acc));
    rec_fini(&r);
}

TEST(garbage_json_is_counted_not_fatal)
{
    static const char s[] = "event: content_block_delta\ndata: {not json\n\n"
                            "event: message_delta\ndata: [1,2]\n\n"
                            "event: message_start\ndata: \n\n"
                            "event: content_block_delta\n"
                            "data: {\"delta\":{\"type\":\"text_delta\",\"text\":7}}\n\n"
                            "event: content_block_delta\n"
                            "data: {\"delta\":\"text_delta\"}\n\n"
                            "event: message_start\ndata: {\"message\":[]}\n\n"
                            "event: error\ndata: <html>502 Bad Gateway</html>\n\n"
                            "event: content_block_delta\n"
                            "data: {\"delta\":{\"type\":\"text_delta\",\"text\":\"ok\"}}\n\n";
    rec_t r;
    ASSERT_EQ(parse_whole(&r, s, strlen(s), 0), 0);
    ASSERT_EQ(r.events, 8);
    ASSERT_EQ(r.acc.events, 8);
    ASSERT_EQ(r.acc.json_errors, 4);
    ASSERT(r.acc.saw_error);
    ASSERT_EQ(r.acc.error_type.len, 0);
    ASSERT_MEMEQ(r.acc.error_json.data, r.acc.error_json.len, "<html>502 Bad Gateway</html>");
    ASSERT_MEMEQ(r.acc.text.data, r.acc.text.len, "ok");
    ASSERT(r.acc.saw_message_start); /* the well-formed (if odd) one */
    rec_fini(&r);
}

TEST(only_text_deltas_make_text)
{
    static const char s[] =
        "event: content_block_delta\n"
        "data: {\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"a\\\"\"}}\n\n"
        "event: content_block_delta\n"
        "data: {\"delta\":{\"type\":\"thinking_delta\",\"thinking\":\"hmm\",\"text\":\"no\"}}\n\n"
        "event: content_block_delta\n"
        "data: {\"delta\":{\"type\":\"text_delta\",\"text\":\"A\"}}\n\n"
        "event: ping\ndata: {\"type\":\"content_block_delta\",\"delta\":{\"type\":\"text_delta\","
        "\"text\":\"named ping, not a delta\"}}\n\n"
        "data: "
        "{\"type\":\"content_block_delta\",\"delta\":{\"type\":\"text_delta\",\"text\":\"B\"}}"
        "\n\n"
        "data: {\"type\":\"message_stop\"}\n\n";
    rec_t r;
    ASSERT_EQ(parse_whole(&r, s, strlen(s), 0), 0);
    /* An unnamed event is classified by its "type"; a named one by its name. */
    ASSERT_MEMEQ(r.acc.text.data, r.acc.text.len, "AB");
    ASSERT(ag_anthropic_stream_complete(&r.acc));
    rec_fini(&r);
}

TEST(text_cap_truncates_at_a_character)
{
    static const char s[] =
        "event: content_block_delta\n"
        "data: {\"delta\":{\"type\":\"text_delta\",\"text\":\"abc\"}}\n\n"
        "event: content_block_delta\n"
        "data: {\"delta\":{\"type\":\"text_delta\",\"text\":\"\\u00e9\\u00e9\"}}\n\n"
        "event: content_block_delta\n"
        "data: {\"delta\":{\"type\":\"text_delta\",\"text\":\"x\"}}\n\n";
    ag_anthropic_stream_t acc;
    ag_anthropic_stream_init(&acc, 6);
    ag_sse_parser_t p;
    ag_sse_parser_init(&p, 0, ag_anthropic_stream_sse_cb, &acc);
    ASSERT_EQ(ag_sse_parser_feed(&p, s, strlen(s)), 0);
    ag_sse_parser_fini(&p);
    /* 3 + 2 bytes fit; the second é would straddle the cap; then 'x' fits. */
    ASSERT(acc.text_truncated);
    ASSERT_MEMEQ(acc.text.data, acc.text.len, "abc\xC3\xA9x");
    ASSERT_EQ(acc.events, 3);
    ag_anthropic_stream_fini(&acc);
}

/* clang-format off */
AG_TESTS(
    AG_TEST_ENTRY(full_stream_totals)
    AG_TEST_ENTRY(any_chunking_gives_the_same_result)
    AG_TEST_ENTRY(line_endings)
    AG_TEST_ENTRY(cr_and_lf_split_across_chunks)
    AG_TEST_ENTRY(comments_are_ignored)
    AG_TEST_ENTRY(multi_line_data_is_joined_with_lf)
    AG_TEST_ENTRY(space_after_colon_is_optional)
    AG_TEST_ENTRY(event_without_data_is_not_dispatched)
    AG_TEST_ENTRY(last_event_id_persists)
    AG_TEST_ENTRY(leading_bom_is_skipped_once)
    AG_TEST_ENTRY(cap_gives_toobig_and_sticks)
    AG_TEST_ENTRY(callback_result_stops_parsing)
    AG_TEST_ENTRY(usage_is_cumulative_latest_wins)
    AG_TEST_ENTRY(error_event_mid_stream)
    AG_TEST_ENTRY(garbage_json_is_counted_not_fatal)
    AG_TEST_ENTRY(only_text_deltas_make_text)
    AG_TEST_ENTRY(text_cap_truncates_at_a_character))
/* clang-format on */
