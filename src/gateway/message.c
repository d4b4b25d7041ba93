/* SPDX-License-Identifier: MIT
 *
 * message.c: folding Anthropic's stream events into its Message (the SDKs'
 * accumulation), and unfolding a Message into events. Both refuse what they
 * cannot do exactly, so the cache never stores or serves a lossy answer.
 */
#include "util/platform.h"

#include <string.h>

#include "gateway/message.h"
#include "util/json.h"

void gw_msg_build_init(gw_msg_build_t *b, size_t max_bytes)
{
    memset(b, 0, sizeof(*b));
    ag_buf_init(&b->partial, 0);
    b->partial_index = -1;
    b->max_bytes = max_bytes;
}

void gw_msg_build_fini(gw_msg_build_t *b)
{
    json_decref(b->message);
    b->message = NULL;
    ag_buf_fini(&b->partial);
}

static bool is(json_t *o, const char *key, const char *value)
{
    const char *v = json_string_value(json_object_get(o, key));
    return v && strcmp(v, value) == 0;
}

/* Appends to the string member `key` of `block`. */
static bool append_str(json_t *block, const char *key, json_t *piece)
{
    json_t *cur = json_object_get(block, key);
    if (!json_is_string(cur) || !json_is_string(piece))
        return false;
    size_t a = json_string_length(cur), n = json_string_length(piece);
    char *s = malloc(a + n + 1);
    if (!s)
        return false;
    memcpy(s, json_string_value(cur), a);
    memcpy(s + a, json_string_value(piece), n);
    json_t *v = json_stringn_nocheck(s, a + n);
    free(s);
    return v && json_object_set_new(block, key, v) == 0;
}

/* Ends a tool_use block's input: its delta text parsed as the input object. */
static bool close_partial(gw_msg_build_t *b, json_t *block)
{
    if (b->partial_index < 0)
        return true;
    json_t *input =
        b->partial.len ? json_loadb(b->partial.data, b->partial.len, 0, NULL) : json_object();
    b->partial.len = 0;
    b->partial_index = -1;
    return json_is_object(input) && json_object_set_new(block, "input", input) == 0;
}

static bool fold_delta(gw_msg_build_t *b, json_t *block, size_t index, json_t *delta)
{
    if (is(delta, "type", "text_delta") && is(block, "type", "text"))
        return append_str(block, "text", json_object_get(delta, "text"));
    if (is(delta, "type", "thinking_delta") && is(block, "type", "thinking"))
        return append_str(block, "thinking", json_object_get(delta, "thinking"));
    if (is(delta, "type", "signature_delta") && is(block, "type", "thinking")) {
        json_t *sig = json_object_get(delta, "signature");
        return json_is_string(sig) && json_object_set(block, "signature", sig) == 0;
    }
    if (is(delta, "type", "citations_delta") && is(block, "type", "text")) {
        json_t *list = json_object_get(block, "citations"), *c = json_object_get(delta, "citation");
        if (!json_is_object(c))
            return false;
        if (!json_is_array(list)) {
            list = json_array();
            if (!list || json_object_set_new(block, "citations", list) != 0)
                return false;
        }
        return json_array_append(list, c) == 0;
    }
    if (is(delta, "type", "input_json_delta") && json_object_get(block, "input")) {
        json_t *piece = json_object_get(delta, "partial_json");
        if (!json_is_string(piece) || (b->partial_index >= 0 && (size_t)b->partial_index != index))
            return false;
        b->partial_index = (int)index;
        return ag_buf_append(&b->partial, json_string_value(piece), json_string_length(piece)) == 0;
    }
    return false;
}

void gw_msg_build_event(gw_msg_build_t *b, const ag_sse_event_t *ev)
{
    if (b->failed || b->stopped)
        return;
    b->bytes += ev->data.len;
    json_t *data =
        b->bytes <= b->max_bytes ? json_loadb(ev->data.ptr, ev->data.len, 0, NULL) : NULL;
    bool ok = json_is_object(data);
    json_t *content = b->message ? json_object_get(b->message, "content") : NULL;
    json_t *index = json_object_get(data, "index");
    size_t i = json_is_integer(index) ? (size_t)json_integer_value(index) : (size_t)-1;
    if (!ok) {
        /* a ping's data is JSON too: only bad data fails */
    } else if (is(data, "type", "ping")) {
    } else if (is(data, "type", "message_start")) {
        json_t *m = json_object_get(data, "message");
        ok = !b->message && json_is_object(m) && json_is_array(json_object_get(m, "content")) &&
             json_array_size(json_object_get(m, "content")) == 0;
        if (ok)
            b->message = json_deep_copy(m);
        ok = ok && b->message;
    } else if (is(data, "type", "content_block_start")) {
        json_t *block = json_object_get(data, "content_block");
        ok = json_is_array(content) && json_is_object(block) && i == json_array_size(content) &&
             json_array_append_new(content, json_deep_copy(block)) == 0;
    } else if (is(data, "type", "content_block_delta")) {
        json_t *block = json_array_get(content, i);
        ok = json_is_object(block) && fold_delta(b, block, i, json_object_get(data, "delta"));
    } else if (is(data, "type", "content_block_stop")) {
        json_t *block = json_array_get(content, i);
        ok = json_is_object(block) && close_partial(b, block);
    } else if (is(data, "type", "message_delta")) {
        json_t *delta = json_object_get(data, "delta"), *usage = json_object_get(data, "usage");
        ok = b->message && json_is_object(delta);
        const char *key;
        json_t *v;
        if (ok)
            json_object_foreach(delta, key, v) json_object_set(b->message, key, v);
        json_t *mu = json_object_get(b->message, "usage");
        if (ok && json_is_object(usage) && json_is_object(mu))
            json_object_foreach(usage, key, v) json_object_set(mu, key, v);
    } else if (is(data, "type", "message_stop")) {
        ok = b->message && b->partial_index < 0;
        b->stopped = ok;
    } else {
        ok = false; /* an error event, or one we do not know: never rebuilt */
    }
    json_decref(data);
    if (!ok)
        b->failed = true;
}

int gw_msg_build_result(gw_msg_build_t *b, ag_buf_t *out)
{
    if (b->failed || !b->stopped || !b->message)
        return -1;
    char *s = json_dumps(b->message, JSON_COMPACT | JSON_PRESERVE_ORDER);
    int rc = s ? ag_buf_append_cstr(out, s) : -1;
    free(s);
    return rc;
}

/* ---- a Message as its stream ----------------------------------------------------- */

static int event(ag_buf_t *out, const char *name, json_t *data)
{
    char *s = json_dumps(data, JSON_COMPACT | JSON_PRESERVE_ORDER);
    int rc = s ? ag_buf_printf(out, "event: %s\ndata: %s\n\n", name, s) : -1;
    free(s);
    json_decref(data);
    return rc;
}

/* One block: its start (without what the deltas carry), deltas, stop. */
static int stream_block(ag_buf_t *out, size_t i, json_t *block)
{
    json_t *start = json_deep_copy(block), *delta = NULL, *extra = NULL;
    if (!start)
        return -1;
    if (is(block, "type", "text")) {
        if (!json_is_string(json_object_get(block, "text"))) {
            json_decref(start);
            return -1;
        }
        json_object_set_new(start, "text", json_string(""));
        delta =
            json_pack("{s:s,s:O}", "type", "text_delta", "text", json_object_get(block, "text"));
    } else if (is(block, "type", "tool_use") || is(block, "type", "server_tool_use")) {
        json_t *input = json_object_get(block, "input");
        char *s =
            json_is_object(input) ? json_dumps(input, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
        if (s) {
            json_object_set_new(start, "input", json_object());
            delta = json_pack("{s:s,s:s}", "type", "input_json_delta", "partial_json", s);
            free(s);
        }
    } else if (is(block, "type", "thinking") &&
               json_is_string(json_object_get(block, "signature"))) {
        json_object_set_new(start, "thinking", json_string(""));
        json_object_set_new(start, "signature", json_string(""));
        delta = json_pack("{s:s,s:O}", "type", "thinking_delta", "thinking",
                          json_object_get(block, "thinking"));
        extra = json_pack("{s:s,s:O}", "type", "signature_delta", "signature",
                          json_object_get(block, "signature"));
    }
    /* Anything else starts whole, as the API streams what it does not split. */
    int rc = event(out, "content_block_start",
                   json_pack("{s:s,s:I,s:o}", "type", "content_block_start", "index", (json_int_t)i,
                             "content_block", start));
    json_t *parts[] = {delta, extra};
    for (size_t k = 0; k < 2; k++) {
        if (!parts[k])
            continue;
        if (rc == 0)
            rc = event(out, "content_block_delta",
                       json_pack("{s:s,s:I,s:o}", "type", "content_block_delta", "index",
                                 (json_int_t)i, "delta", parts[k]));
        else
            json_decref(parts[k]);
    }
    if (rc == 0)
        rc = event(out, "content_block_stop",
                   json_pack("{s:s,s:I}", "type", "content_block_stop", "index", (json_int_t)i));
    return rc;
}

int gw_msg_to_stream(const char *message, size_t len, ag_buf_t *out)
{
    json_t *m = json_loadb(message, len, JSON_PRESERVE_ORDER, NULL);
    json_t *content = json_object_get(m, "content");
    if (!is(m, "type", "message") || !json_is_array(content)) {
        json_decref(m);
        return -1;
    }
    size_t start_len = out->len;
    json_t *head = json_deep_copy(m);
    json_object_set_new(head, "content", json_array());
    json_object_set_new(head, "stop_reason", json_null());
    json_object_set_new(head, "stop_sequence", json_null());
    int rc = event(out, "message_start",
                   json_pack("{s:s,s:o}", "type", "message_start", "message", head));
    if (rc == 0)
        rc = ag_buf_append_cstr(out, "event: ping\ndata: {\"type\": \"ping\"}\n\n");
    size_t i;
    json_t *block;
    json_array_foreach(content, i, block)
    {
        if (rc == 0)
            rc = json_is_object(block) ? stream_block(out, i, block) : -1;
    }
    if (rc == 0) {
        json_t *md = json_object(), *delta = json_object(), *usage = json_object();
        json_t *sr = json_object_get(m, "stop_reason"), *ss = json_object_get(m, "stop_sequence");
        json_t *ot = json_object_get(json_object_get(m, "usage"), "output_tokens");
        json_object_set_new(md, "type", json_string("message_delta"));
        json_object_set_new(delta, "stop_reason", sr ? json_incref(sr) : json_null());
        json_object_set_new(delta, "stop_sequence", ss ? json_incref(ss) : json_null());
        json_object_set_new(usage, "output_tokens", ot ? json_incref(ot) : json_integer(0));
        json_object_set_new(md, "delta", delta);
        json_object_set_new(md, "usage", usage);
        rc = event(out, "message_delta", md);
    }
    if (rc == 0)
        rc = ag_buf_append_cstr(out, "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n");
    json_decref(m);
    if (rc != 0)
        out->len = start_len;
    return rc == 0 ? 0 : -1;
}
