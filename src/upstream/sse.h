/* SPDX-License-Identifier: MIT
 *
 * sse.h: an incremental text/event-stream parser (WHATWG "event stream
 * interpretation") and, on top of it, an accumulator that follows an
 * Anthropic Messages stream to collect the text, the usage and how it ended.
 * Both are plain state machines: no I/O, no threads, no event loop. One
 * parser belongs to one stream and is used by one thread at a time.
 */
#ifndef AG_UPSTREAM_SSE_H
#define AG_UPSTREAM_SSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util/buf.h"
#include "util/str.h"

/* Default for max_event_bytes when 0 is passed. */
#define AG_SSE_DEFAULT_MAX_EVENT ((size_t)1 << 20)

/**
 * One dispatched event. Every view points into the parser's buffers and is
 * valid only during the callback. `event` is "message" when the stream gave
 * no event type. `data` is the data lines joined with "\n" (no trailing LF)
 * and is followed by a NUL that is not counted. `id` is the last event ID seen
 * on the stream so far (it persists across events, as in the spec); empty if none.
 */
typedef struct ag_sse_event {
    ag_str_t event;
    ag_str_t data;
    ag_str_t id;
} ag_sse_event_t;

/** Called once per dispatched event. A non-zero return stops parsing: feed()
 *  returns that value, and the parser stays stopped (see ag_sse_parser_feed). */
typedef int (*ag_sse_event_cb)(void *ctx, const ag_sse_event_t *ev);

typedef struct ag_sse_parser {
    /* private */
    ag_buf_t _line;  /* a line split across chunks, until its end arrives */
    ag_buf_t _data;  /* data buffer: each data line followed by LF, as in the spec */
    ag_buf_t _event; /* event type buffer */
    ag_buf_t _id;    /* last event ID buffer */
    size_t _max;
    ag_sse_event_cb _cb;
    void *_ctx;
    int _err;          /* sticky: the first error or non-zero callback result */
    uint8_t _bom_seen; /* bytes of a leading UTF-8 BOM matched; 3 once decided */
    bool _last_cr; /* the last byte fed was a CR: a LF right after it is part of that line end */
} ag_sse_parser_t;

/**
 * Prepares a parser. No allocation happens until input arrives.
 * @param max_event_bytes hard cap on one line, on an event's data, type and id
 *        (0: AG_SSE_DEFAULT_MAX_EVENT)
 * @param cb, ctx called for each event; ctx is borrowed for the parser's life
 */
void ag_sse_parser_init(ag_sse_parser_t *p, size_t max_event_bytes, ag_sse_event_cb cb, void *ctx);

/**
 * Feeds the next bytes of the stream, in any chunking. Complete events are
 * dispatched to the callback before this returns; a partial line or event is
 * kept for the next call. Lines end in CRLF, LF or CR (a CRLF split across two
 * calls is one line end). A UTF-8 BOM at the very start is skipped.
 * @return 0; AG_ETOOBIG when a line or an event exceeds the cap; -ENOMEM; or the
 *         callback's non-zero result. Any non-zero result is sticky: later
 *         calls return it again without parsing.
 * @note `data` is borrowed for the call only.
 */
int ag_sse_parser_feed(ag_sse_parser_t *p, const char *data, size_t len);

/** Releases the parser's buffers. An event not yet ended by a blank line is
 *  discarded, as the spec does at end of stream. */
void ag_sse_parser_fini(ag_sse_parser_t *p);

/* ---- Anthropic Messages stream accumulator ---- */

/** Token counts. Anthropic reports them cumulatively: the latest value wins. */
typedef struct ag_sse_usage {
    int64_t input_tokens;
    int64_t output_tokens;
    int64_t cache_creation_input_tokens;
    int64_t cache_read_input_tokens;
} ag_sse_usage_t;

/**
 * What a stream carried, as far as it got. The caller owns the struct; every
 * buffer is owned by it and released by ag_anthropic_stream_fini(). Fields
 * may be read at any time (e.g. after each feed) from the parsing thread.
 */
typedef struct ag_anthropic_stream {
    ag_buf_t text;          /* text_delta text concatenated, capped at max_text */
    bool text_truncated;    /* some text did not fit under the cap */
    ag_sse_usage_t usage;   /* message_start's usage, then each message_delta's */
    ag_buf_t id;            /* message_start.message.id (capped at 256 bytes) */
    ag_buf_t model;         /* message_start.message.model (capped at 256 bytes) */
    ag_buf_t stop_reason;   /* the latest message_delta.delta.stop_reason, if a string */
    ag_buf_t error_type;    /* error.type from an error event's data, if any */
    ag_buf_t error_json;    /* the error event's data verbatim (capped at 64 KiB) */
    bool saw_message_start; /* message_start events seen */
    bool saw_message_stop;
    bool saw_error;
    uint32_t events;      /* events seen, pings and unknown types included */
    uint32_t json_errors; /* events whose data was not a JSON object (skipped, not fatal) */
} ag_anthropic_stream_t;

/** @param max_text cap on the collected text in bytes (0: no cap). */
void ag_anthropic_stream_init(ag_anthropic_stream_t *s, size_t max_text);

/**
 * Folds one event into the totals. The event's name decides its kind, as in
 * the SDKs; for an unnamed ("message") event the data's "type" is used.
 * message_start sets usage from message.usage; message_delta overwrites the
 * usage fields it carries (values are cumulative, never summed); text comes
 * from content_block_delta with delta.type "text_delta" only; an error event
 * is recorded. Bad JSON, unknown events and odd values are counted or ignored.
 * @return 0, or -ENOMEM (the totals may then miss that event).
 */
int ag_anthropic_stream_on_event(ag_anthropic_stream_t *s, const ag_sse_event_t *ev);

/** ag_anthropic_stream_on_event() with the signature of ag_sse_event_cb: pass
 *  the stream as ctx to ag_sse_parser_init(). */
int ag_anthropic_stream_sse_cb(void *ctx, const ag_sse_event_t *ev);

/** True when message_stop was seen and no error event was. */
bool ag_anthropic_stream_complete(const ag_anthropic_stream_t *s);

void ag_anthropic_stream_fini(ag_anthropic_stream_t *s);

#endif
