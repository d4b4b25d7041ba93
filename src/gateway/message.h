/* SPDX-License-Identifier: MIT
 *
 * message.h: Anthropic's Message and its event stream, each made from the
 * other exactly, so a cached answer serves streaming and non-streaming
 * clients alike with every block and field the upstream sent.
 */
#ifndef AG_GATEWAY_MESSAGE_H
#define AG_GATEWAY_MESSAGE_H

#include <stdbool.h>
#include <stddef.h>

#include <jansson.h>

#include "upstream/sse.h"
#include "util/buf.h"

/* A Message being rebuilt from its stream, as the official SDKs accumulate it. */
typedef struct gw_msg_build {
    json_t *message;  /* message_start's message, with content filled in */
    ag_buf_t partial; /* the current tool_use block's input_json_delta text */
    int partial_index;
    size_t bytes, max_bytes;
    bool failed;  /* an event it cannot fold exactly: the stream is not rebuilt */
    bool stopped; /* message_stop seen */
} gw_msg_build_t;

void gw_msg_build_init(gw_msg_build_t *b, size_t max_bytes);
void gw_msg_build_fini(gw_msg_build_t *b);

/** Folds one event in. Unknown events and deltas, bad JSON, indices out of
 *  order or more than max_bytes mark the build failed (for good). */
void gw_msg_build_event(gw_msg_build_t *b, const ag_sse_event_t *ev);

/** The rebuilt Message as compact JSON, once message_stop came and nothing
 *  failed. @return 0, or -1 (then `out` is unchanged). */
int gw_msg_build_result(gw_msg_build_t *b, ag_buf_t *out);

/** The event stream of a Message, as the upstream would have streamed it:
 *  message_start, per block its start, deltas and stop, message_delta and
 *  message_stop. Blocks whose streaming is not known go whole in their start.
 *  @return 0, or -1 when `message` is not a Message. */
int gw_msg_to_stream(const char *message, size_t len, ag_buf_t *out);

#endif
