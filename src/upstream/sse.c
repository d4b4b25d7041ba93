/* SPDX-License-Identifier: MIT
 *
 * sse.c: the incremental event-stream parser and the Anthropic stream
 * accumulator (see sse.h). The parser copies a line only when it is split
 * across chunks; whole lines are read in place.
 */
#include "util/platform.h"

#include "upstream/sse.h"

#include <string.h>

#include <jansson.h>

#include "util/errors.h"

static const char utf8_bom[3] = {'\xEF', '\xBB', '\xBF'};

void ag_sse_parser_init(ag_sse_parser_t *p, size_t max_event_bytes, ag_sse_event_cb cb, void *ctx)
{
    size_t max = max_event_bytes ? max_event_bytes : AG_SSE_DEFAULT_MAX_EVENT;
    ag_buf_init(&p->_line, max);
    ag_buf_init(&p->_data, max);
    ag_buf_init(&p->_event, max);
    ag_buf_init(&p->_id, max);
    p->_max = max;
    p->_cb = cb;
    p->_ctx = ctx;
    p->_err = 0;
    p->_bom_seen = 0;
    p->_last_cr = false;
}

void ag_sse_parser_fini(ag_sse_parser_t *p)
{
    ag_buf_fini(&p->_line);
    ag_buf_fini(&p->_data);
    ag_buf_fini(&p->_event);
    ag_buf_fini(&p->_id);
}

static int dispatch(ag_sse_parser_t *p)
{
    /* No data line at all: nothing to dispatch, and the type does not carry
     * over to the next event. "data:" with an empty value still counts. */
    if (p->_data.len == 0) {
        p->_event.len = 0;
        return 0;
    }
    /* The data buffer ends in the LF that followed the last data line: the
     * spec drops it, and its byte makes room for a NUL terminator. */
    p->_data.data[--p->_data.len] = '\0';
    ag_sse_event_t ev = {
        .event = p->_event.len ? ag_str(p->_event.data, p->_event.len) : AG_STR_LIT("message"),
        .data = ag_str(p->_data.data, p->_data.len),
        .id = p->_id.len ? ag_str(p->_id.data, p->_id.len) : AG_STR_LIT(""),
    };
    int rc = p->_cb ? p->_cb(p->_ctx, &ev) : 0;
    p->_data.len = 0;
    p->_event.len = 0;
    return rc;
}

static int process_line(ag_sse_parser_t *p, const char *line, size_t len)
{
    if (len == 0)
        return dispatch(p);
    if (line[0] == ':')
        return 0; /* comment */
    const char *colon = memchr(line, ':', len);
    ag_str_t name = ag_str(line, colon ? (size_t)(colon - line) : len);
    ag_str_t value = AG_STR_LIT("");
    if (colon) {
        value = ag_str(colon + 1, len - name.len - 1);
        if (value.len && value.ptr[0] == ' ') {
            value.ptr++;
            value.len--;
        }
    }
    int rc = 0;
    if (ag_str_eq(name, AG_STR_LIT("data"))) {
        rc = ag_buf_append_str(&p->_data, value);
        if (rc == 0)
            rc = ag_buf_append(&p->_data, "\n", 1);
    } else if (ag_str_eq(name, AG_STR_LIT("event"))) {
        p->_event.len = 0;
        rc = ag_buf_append_str(&p->_event, value);
    } else if (ag_str_eq(name, AG_STR_LIT("id"))) {
        /* The spec ignores an id that contains NUL. */
        if (!memchr(value.ptr, '\0', value.len)) {
            p->_id.len = 0;
            rc = ag_buf_append_str(&p->_id, value);
        }
    }
    /* "retry" (reconnection time) and unknown fields are ignored: we do not
     * reconnect, the client does. */
    return rc;
}

static int feed_bytes(ag_sse_parser_t *p, const char *d, size_t n)
{
    size_t i = 0;
    while (i < n) {
        if (p->_last_cr) {
            p->_last_cr = false;
            if (d[i] == '\n') {
                i++;
                continue;
            }
        }
        size_t j = i;
        while (j < n && d[j] != '\n' && d[j] != '\r')
            j++;
        if (j == n)
            return ag_buf_append(&p->_line, d + i, n - i);

        const char *line;
        size_t line_len;
        int rc;
        if (p->_line.len) {
            rc = ag_buf_append(&p->_line, d + i, j - i);
            if (rc < 0)
                return rc;
            line = p->_line.data;
            line_len = p->_line.len;
        } else {
            if (j - i > p->_max)
                return AG_ETOOBIG; /* the same cap as a buffered line */
            line = d + i;
            line_len = j - i;
        }
        if (d[j] == '\r') {
            if (j + 1 == n)
                p->_last_cr = true; /* its LF, if any, comes with the next chunk */
            else if (d[j + 1] == '\n')
                j++;
        }
        i = j + 1;
        rc = process_line(p, line, line_len);
        p->_line.len = 0;
        if (rc)
            return rc;
    }
    return 0;
}

int ag_sse_parser_feed(ag_sse_parser_t *p, const char *data, size_t len)
{
    if (p->_err)
        return p->_err;
    int rc = 0;
    size_t i = 0;
    /* The BOM may itself arrive split across chunks: hold the matching prefix
     * until we know, and replay it as text if it turns out not to be one. */
    while (p->_bom_seen < 3 && i < len) {
        if (data[i] == utf8_bom[p->_bom_seen]) {
            p->_bom_seen++;
            i++;
            continue;
        }
        size_t held = p->_bom_seen;
        p->_bom_seen = 3;
        rc = feed_bytes(p, utf8_bom, held);
        if (rc)
            goto out;
    }
    rc = feed_bytes(p, data + i, len - i);
out:
    p->_err = rc;
    return rc;
}

/* ---- Anthropic accumulator ---- */

#define SMALL_FIELD_MAX 256
#define ERROR_JSON_MAX (64 * 1024)

void ag_anthropic_stream_init(ag_anthropic_stream_t *s, size_t max_text)
{
    memset(s, 0, sizeof(*s));
    ag_buf_init(&s->text, max_text);
    ag_buf_init(&s->id, SMALL_FIELD_MAX);
    ag_buf_init(&s->model, SMALL_FIELD_MAX);
    ag_buf_init(&s->stop_reason, SMALL_FIELD_MAX);
    ag_buf_init(&s->error_type, SMALL_FIELD_MAX);
    ag_buf_init(&s->error_json, ERROR_JSON_MAX);
}

void ag_anthropic_stream_fini(ag_anthropic_stream_t *s)
{
    ag_buf_fini(&s->text);
    ag_buf_fini(&s->id);
    ag_buf_fini(&s->model);
    ag_buf_fini(&s->stop_reason);
    ag_buf_fini(&s->error_type);
    ag_buf_fini(&s->error_json);
}

bool ag_anthropic_stream_complete(const ag_anthropic_stream_t *s)
{
    return s->saw_message_stop && !s->saw_error;
}

/* Appends as much of [p, p+n) as the buffer's cap allows, cut at a UTF-8
 * character boundary so that a truncated log line is still valid text.
 * @return 0, 1 when something was cut, or -ENOMEM. */
static int append_capped(ag_buf_t *b, const char *p, size_t n)
{
    size_t room = b->max - b->len;
    int cut = 0;
    if (n > room) {
        n = room;
        while (n > 0 && ((unsigned char)p[n] & 0xC0) == 0x80)
            n--;
        cut = 1;
    }
    int rc = ag_buf_append(b, p, n);
    return rc < 0 ? rc : cut;
}

static int set_capped(ag_buf_t *b, const char *p, size_t n)
{
    b->len = 0;
    int rc = append_capped(b, p, n);
    return rc < 0 ? rc : 0;
}

static int set_from_json_string(ag_buf_t *b, const json_t *v)
{
    if (!json_is_string(v))
        return 0;
    return set_capped(b, json_string_value(v), json_string_length(v));
}

static void take_count(int64_t *dst, const json_t *v)
{
    /* Counts are non-negative integers; anything else (null, a float, a
     * negative number) keeps the value we had. */
    if (json_is_integer(v) && json_integer_value(v) >= 0)
        *dst = (int64_t)json_integer_value(v);
}

static void take_usage(ag_sse_usage_t *u, const json_t *usage)
{
    if (!json_is_object(usage))
        return;
    take_count(&u->input_tokens, json_object_get(usage, "input_tokens"));
    take_count(&u->output_tokens, json_object_get(usage, "output_tokens"));
    take_count(&u->cache_creation_input_tokens,
               json_object_get(usage, "cache_creation_input_tokens"));
    take_count(&u->cache_read_input_tokens, json_object_get(usage, "cache_read_input_tokens"));
}

static bool json_str_is(const json_t *v, const char *lit)
{
    return json_is_string(v) &&
           ag_str_eq(ag_str(json_string_value(v), json_string_length(v)), ag_str_c(lit));
}

static int on_error_event(ag_anthropic_stream_t *s, const ag_sse_event_t *ev, const json_t *root)
{
    s->saw_error = true;
    int rc = set_capped(&s->error_json, ev->data.ptr, ev->data.len);
    if (rc == 0 && root)
        rc = set_from_json_string(&s->error_type,
                                  json_object_get(json_object_get(root, "error"), "type"));
    return rc;
}

int ag_anthropic_stream_on_event(ag_anthropic_stream_t *s, const ag_sse_event_t *ev)
{
    s->events++;
    json_error_t jerr;
    json_t *root = json_loadb(ev->data.ptr, ev->data.len, 0, &jerr);
    ag_str_t name = ev->event;
    if (!json_is_object(root)) {
        s->json_errors++;
        json_decref(root);
        /* An error event stays an error even when its body is unreadable. */
        return ag_str_eq(name, AG_STR_LIT("error")) ? on_error_event(s, ev, NULL) : 0;
    }
    if (ag_str_eq(name, AG_STR_LIT("message"))) {
        const json_t *type = json_object_get(root, "type");
        if (json_is_string(type))
            name = ag_str(json_string_value(type), json_string_length(type));
    }

    int rc = 0;
    if (ag_str_eq(name, AG_STR_LIT("content_block_delta"))) {
        const json_t *delta = json_object_get(root, "delta");
        const json_t *text = json_object_get(delta, "text");
        if (json_str_is(json_object_get(delta, "type"), "text_delta") && json_is_string(text)) {
            rc = append_capped(&s->text, json_string_value(text), json_string_length(text));
            if (rc > 0) {
                s->text_truncated = true;
                rc = 0;
            }
        }
    } else if (ag_str_eq(name, AG_STR_LIT("message_start"))) {
        const json_t *msg = json_object_get(root, "message");
        s->saw_message_start = true;
        take_usage(&s->usage, json_object_get(msg, "usage"));
        rc = set_from_json_string(&s->id, json_object_get(msg, "id"));
        if (rc == 0)
            rc = set_from_json_string(&s->model, json_object_get(msg, "model"));
    } else if (ag_str_eq(name, AG_STR_LIT("message_delta"))) {
        take_usage(&s->usage, json_object_get(root, "usage"));
        rc = set_from_json_string(&s->stop_reason,
                                  json_object_get(json_object_get(root, "delta"), "stop_reason"));
    } else if (ag_str_eq(name, AG_STR_LIT("message_stop"))) {
        s->saw_message_stop = true;
    } else if (ag_str_eq(name, AG_STR_LIT("error"))) {
        rc = on_error_event(s, ev, root);
    }
    /* ping, content_block_start/stop and event types added later: nothing to collect. */
    json_decref(root);
    return rc;
}

int ag_anthropic_stream_sse_cb(void *ctx, const ag_sse_event_t *ev)
{
    return ag_anthropic_stream_on_event(ctx, ev);
}
