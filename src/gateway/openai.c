/* SPDX-License-Identifier: MIT
 *
 * openai.c: OpenAI's Chat Completions format to Anthropic's Messages API and back
 * (requests, answers, streams, errors, model lists), as Anthropic's own OpenAI SDK
 * compatibility layer maps them. Requests are rebuilt from the fields we know, so
 * nothing a client sends reaches the upstream unless it is translated on purpose.
 */
#include "util/platform.h"

#include "gateway/openai.h"

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <string.h>
#include <strings.h>

#include <jansson.h>

#include "util/errors.h"
#include "util/fmt.h"
#include "util/json.h"

/* ---- small writers ---------------------------------------------------------------- */

static int append_i64(ag_buf_t *b, int64_t v)
{
    char num[24];
    size_t n = 0;
    uint64_t u = (uint64_t)v;
    if (v < 0) {
        num[n++] = '-';
        u = 0 - u;
    }
    n += ag_fmt_u64(num + n, u);
    return ag_buf_append(b, num, n);
}

static int append_jstr(ag_buf_t *b, const char *s, size_t len)
{
    return ag_json_append_string(b, ag_str(s ? s : "", s ? len : 0));
}

static int append_cstr_or_null(ag_buf_t *b, const char *s)
{
    return s && *s ? append_jstr(b, s, strlen(s)) : ag_buf_append_cstr(b, "null");
}

static int dump_cb(const char *buffer, size_t size, void *data)
{
    return ag_buf_append(data, buffer, size) == 0 ? 0 : -1;
}

/* Compact JSON of any value into b. Reals keep 17 digits: a number passed on (a tool's schema,
 * a tool call's input) must reach the other side as the same double. */
static int dump_json(ag_buf_t *b, const json_t *v)
{
    size_t before = b->len;
    if (json_dump_callback(v, dump_cb, b, JSON_COMPACT | JSON_ENCODE_ANY) != 0) {
        b->len = before;
        return -ENOMEM;
    }
    return 0;
}

static bool absent(const json_t *v)
{
    return v == NULL || json_is_null(v);
}

static bool jstr_is(const json_t *v, const char *lit)
{
    return json_is_string(v) && strlen(lit) == json_string_length(v) &&
           memcmp(json_string_value(v), lit, json_string_length(v)) == 0;
}

static int64_t usage_int(const json_t *usage, const char *name)
{
    json_t *v = json_object_get(usage, name);
    return json_is_integer(v) && json_integer_value(v) > 0 ? (int64_t)json_integer_value(v) : 0;
}

/* ---- errors ----------------------------------------------------------------------- */

int gw_openai_error_body(ag_buf_t *out, const char *message, const char *type, const char *param,
                         const char *code)
{
    int rc = ag_buf_append_cstr(out, "{\"error\":{\"message\":");
    if (rc == 0)
        rc = append_jstr(out, message, message ? strlen(message) : 0);
    if (rc == 0)
        rc = ag_buf_append_cstr(out, ",\"type\":");
    if (rc == 0)
        rc = append_cstr_or_null(out, type);
    if (rc == 0)
        rc = ag_buf_append_cstr(out, ",\"param\":");
    if (rc == 0)
        rc = append_cstr_or_null(out, param);
    if (rc == 0)
        rc = ag_buf_append_cstr(out, ",\"code\":");
    if (rc == 0)
        rc = append_cstr_or_null(out, code);
    if (rc == 0)
        rc = ag_buf_append_cstr(out, "}}");
    return rc;
}

static const struct {
    const char *anthropic;
    const char *type;
    const char *code;
} error_map[] = {
    {"invalid_request_error", "invalid_request_error", NULL},
    {"authentication_error", "invalid_request_error", "invalid_api_key"},
    {"billing_error", "insufficient_quota", "insufficient_quota"},
    {"permission_error", "invalid_request_error", "permission_denied"},
    {"not_found_error", "invalid_request_error", "not_found"},
    {"request_too_large", "invalid_request_error", "request_too_large"},
    {"rate_limit_error", "rate_limit_error", "rate_limit_exceeded"},
    {"api_error", "server_error", NULL},
    {"timeout_error", "server_error", "timeout"},
    {"overloaded_error", "server_error", "overloaded"},
};

void gw_openai_map_error(const char *anthropic_type, int status, int *status_out,
                         const char **type_out, const char **code_out)
{
    const char *type = status >= 500 ? "server_error" : "invalid_request_error";
    const char *code = NULL;
    for (size_t i = 0; anthropic_type && i < AG_ARRAY_LEN(error_map); i++) {
        if (strcmp(anthropic_type, error_map[i].anthropic) == 0) {
            type = error_map[i].type;
            code = error_map[i].code;
            break;
        }
    }
    if (status_out)
        *status_out = status == 529 ? 503 : status;
    if (type_out)
        *type_out = type;
    if (code_out)
        *code_out = code;
}

int gw_openai_error_from_type(ag_buf_t *out, int status, const char *anthropic_type,
                              const char *message, int *status_out)
{
    const char *type, *code;
    gw_openai_map_error(anthropic_type, status, status_out, &type, &code);
    return gw_openai_error_body(out, message, type, NULL, code);
}

int gw_openai_error_from_anthropic(ag_buf_t *out, int status, const char *body, size_t len,
                                   int *status_out)
{
    json_t *root = body && len ? json_loadb(body, len, 0, NULL) : NULL;
    json_t *e = json_object_get(root, "error");
    json_t *t = json_object_get(e, "type");
    json_t *m = json_object_get(e, "message");
    const char *msg = json_is_string(m) ? json_string_value(m)
                      : status >= 500   ? "Upstream error"
                                        : "Upstream rejected the request";
    int rc = gw_openai_error_from_type(out, status, json_is_string(t) ? json_string_value(t) : NULL,
                                       msg, status_out);
    json_decref(root);
    return rc;
}

/* ---- requests --------------------------------------------------------------------- */

static int refuse(gw_openai_error_t *err, const char *code, const char *param, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int refuse(gw_openai_error_t *err, const char *code, const char *param, const char *fmt, ...)
{
    err->status = 400;
    err->type = "invalid_request_error";
    err->code = code;
    snprintf(err->param, sizeof(err->param), "%s", param ? param : "");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->message, sizeof(err->message), fmt, ap);
    va_end(ap);
    return AG_EINVALID;
}

/* The translation of one request: the error to fill and the path of the part in hand. */
typedef struct tx {
    gw_openai_error_t *err;
    char path[96]; /* "messages[3]" while a message is translated */
} tx_t;

/* Field `name` of the part in hand, for error.param. */
static const char *at(tx_t *t, char *buf, size_t size, const char *name)
{
    snprintf(buf, size, "%s%s%s", t->path, t->path[0] && name[0] != '[' ? "." : "", name);
    return buf;
}

#define REFUSE(t, code, name, ...)                                                                 \
    do {                                                                                           \
        char p_[96];                                                                               \
        return refuse((t)->err, (code), at((t), p_, sizeof(p_), (name)), __VA_ARGS__);             \
    } while (0)

static bool is_blank(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (s[i] != ' ' && s[i] != '\t' && s[i] != '\n' && s[i] != '\r' && s[i] != '\f' &&
            s[i] != '\v')
            return false;
    }
    return true;
}

static int set_new(json_t *obj, const char *key, json_t *v)
{
    return v && json_object_set_new(obj, key, v) == 0 ? 0 : -ENOMEM;
}

static int push_new(json_t *arr, json_t *v)
{
    return v && json_array_append_new(arr, v) == 0 ? 0 : -ENOMEM;
}

static json_t *text_block(const char *s, size_t n)
{
    json_t *b = json_object();
    if (b && (set_new(b, "type", json_string("text")) < 0 ||
              set_new(b, "text", json_stringn(s, n)) < 0)) {
        json_decref(b);
        return NULL;
    }
    return b;
}

/* An image_url part: a data: URL becomes a base64 source, an http(s) URL a url source. */
static int image_block(tx_t *t, const json_t *part, json_t **out)
{
    json_t *iu = json_object_get(part, "image_url");
    json_t *url = json_object_get(iu, "url");
    if (!json_is_object(iu))
        REFUSE(t, NULL, "image_url", "image_url must be an object with a url");
    if (!json_is_string(url))
        REFUSE(t, NULL, "image_url.url", "image_url.url must be a string");
    const char *u = json_string_value(url);
    size_t n = json_string_length(url);
    json_t *src = json_object();
    json_t *blk = json_object();
    int rc = src && blk ? 0 : -ENOMEM;
    if (rc == 0 && n >= 5 && strncasecmp(u, "data:", 5) == 0) {
        const char *mt = u + 5;
        const char *comma = memchr(mt, ',', n - 5);
        const char *semi = comma ? memchr(mt, ';', (size_t)(comma - mt)) : NULL;
        bool b64 = semi && (size_t)(comma - semi) == 7 && strncasecmp(semi, ";base64", 7) == 0;
        size_t mtlen = semi ? (size_t)(semi - mt) : 0;
        if (!b64 || mtlen <= 6 || strncasecmp(mt, "image/", 6) != 0) {
            json_decref(src);
            json_decref(blk);
            REFUSE(t, "invalid_image_url", "image_url.url",
                   "a data: image URL must be data:image/<type>;base64,<data>");
        }
        if (comma + 1 == u + n) {
            json_decref(src);
            json_decref(blk);
            REFUSE(t, "invalid_image_url", "image_url.url", "the data: image URL holds no data");
        }
        rc = set_new(src, "type", json_string("base64"));
        if (rc == 0)
            rc = set_new(src, "media_type", json_stringn(mt, mtlen));
        if (rc == 0)
            rc = set_new(src, "data", json_stringn(comma + 1, (size_t)(u + n - comma - 1)));
    } else if (rc == 0 && ((n > 7 && strncasecmp(u, "http://", 7) == 0) ||
                           (n > 8 && strncasecmp(u, "https://", 8) == 0))) {
        rc = set_new(src, "type", json_string("url"));
        if (rc == 0)
            rc = set_new(src, "url", json_stringn(u, n));
    } else if (rc == 0) {
        json_decref(src);
        json_decref(blk);
        REFUSE(t, "invalid_image_url", "image_url.url",
               "image_url.url must be an http(s) URL or a base64 data: URL");
    }
    if (rc == 0)
        rc = set_new(blk, "type", json_string("image"));
    if (rc == 0) {
        rc = set_new(blk, "source", src);
        src = NULL;
    }
    json_decref(src);
    if (rc < 0) {
        json_decref(blk);
        return rc;
    }
    *out = blk;
    return 0;
}

enum { PARTS_TEXT = 1, PARTS_IMAGE = 2, PARTS_AUDIO = 4, PARTS_REFUSAL = 8 };

/* Content parts into blocks: text parts (empty ones dropped: Anthropic refuses empty text
 * blocks), and the kinds `allow` admits; input_audio and refusal parts are dropped. */
static int parts_to_blocks(tx_t *t, const json_t *parts, unsigned allow, json_t *blocks)
{
    size_t i;
    json_t *part;
    json_array_foreach(parts, i, part)
    {
        size_t plen = strlen(t->path);
        snprintf(t->path + plen, sizeof(t->path) - plen, ".content[%zu]", i);
        json_t *type = json_object_get(part, "type");
        int rc = 0;
        if (!json_is_object(part) || !json_is_string(type)) {
            rc = refuse(t->err, NULL, t->path, "each content part must be an object with a type");
        } else if (jstr_is(type, "text")) {
            json_t *text = json_object_get(part, "text");
            if (!json_is_string(text)) {
                char p[96];
                rc = refuse(t->err, NULL, at(t, p, sizeof(p), "text"),
                            "a text part needs a string text");
            } else if (json_string_length(text) > 0) {
                rc =
                    push_new(blocks, text_block(json_string_value(text), json_string_length(text)));
            }
        } else if ((allow & PARTS_IMAGE) && jstr_is(type, "image_url")) {
            json_t *img = NULL;
            rc = image_block(t, part, &img);
            if (rc == 0)
                rc = push_new(blocks, img);
        } else if (((allow & PARTS_AUDIO) && jstr_is(type, "input_audio")) ||
                   ((allow & PARTS_REFUSAL) && jstr_is(type, "refusal"))) {
            /* Audio input is not supported upstream: stripped, as Anthropic's layer does. */
        } else {
            char p[96];
            rc = refuse(t->err, NULL, at(t, p, sizeof(p), "type"),
                        "content part type '%.40s' is not supported here", json_string_value(type));
        }
        t->path[plen] = '\0';
        if (rc < 0)
            return rc;
    }
    return 0;
}

/* The text of a system, developer or tool message: a string, or text parts joined by "\n". */
static int text_of(tx_t *t, const json_t *content, ag_buf_t *out)
{
    if (json_is_string(content))
        return ag_buf_append(out, json_string_value(content), json_string_length(content));
    if (!json_is_array(content))
        REFUSE(t, NULL, "content", "content must be a string or an array of text parts");
    size_t i;
    json_t *part;
    json_array_foreach(content, i, part)
    {
        json_t *text = json_object_get(part, "text");
        if (!jstr_is(json_object_get(part, "type"), "text") || !json_is_string(text)) {
            char name[32];
            snprintf(name, sizeof(name), "content[%zu]", i);
            REFUSE(t, NULL, name, "only text parts are allowed in this message");
        }
        int rc = i ? ag_buf_append(out, "\n", 1) : 0;
        if (rc == 0)
            rc = ag_buf_append(out, json_string_value(text), json_string_length(text));
        if (rc < 0)
            return rc;
    }
    return 0;
}

static int user_message(tx_t *t, const json_t *m, json_t *msgs)
{
    char p[96];
    json_t *content = json_object_get(m, "content");
    json_t *out = json_object();
    int rc = set_new(out, "role", json_string("user"));
    if (rc == 0 && json_is_string(content)) {
        rc = set_new(out, "content", json_incref(content));
    } else if (rc == 0 && json_is_array(content)) {
        json_t *blocks = json_array();
        rc = blocks ? parts_to_blocks(t, content, PARTS_IMAGE | PARTS_AUDIO, blocks) : -ENOMEM;
        if (rc == 0 && json_array_size(blocks) == 0)
            rc = refuse(t->err, NULL, at(t, p, sizeof(p), "content"),
                        "the message holds no text or image");
        if (rc == 0) {
            rc = set_new(out, "content", blocks);
            blocks = NULL;
        }
        json_decref(blocks);
    } else if (rc == 0) {
        rc = refuse(t->err, NULL, at(t, p, sizeof(p), "content"),
                    "a user message needs content: a string or an array of parts");
    }
    if (rc == 0)
        return push_new(msgs, out);
    json_decref(out);
    return rc;
}

static int tool_use_block(tx_t *t, const json_t *call, size_t j, json_t **out)
{
    char name[64];
    json_t *id = json_object_get(call, "id");
    json_t *type = json_object_get(call, "type");
    json_t *fn = json_object_get(call, "function");
    json_t *fname = json_object_get(fn, "name");
    json_t *args = json_object_get(fn, "arguments");
    snprintf(name, sizeof(name), "tool_calls[%zu]", j);
    if (!json_is_object(call) || !json_is_string(id) || json_string_length(id) == 0)
        REFUSE(t, NULL, name, "each tool call needs a string id");
    if (!absent(type) && !jstr_is(type, "function"))
        REFUSE(t, NULL, name, "only function tool calls are supported");
    snprintf(name, sizeof(name), "tool_calls[%zu].function", j);
    if (!json_is_object(fn) || !json_is_string(fname) || json_string_length(fname) == 0)
        REFUSE(t, NULL, name, "each tool call needs a function with a name");
    json_t *input;
    if (absent(args) ||
        (json_is_string(args) && is_blank(json_string_value(args), json_string_length(args)))) {
        input = json_object();
    } else if (json_is_string(args)) {
        input = json_loadb(json_string_value(args), json_string_length(args), 0, NULL);
        if (!json_is_object(input)) {
            json_decref(input);
            snprintf(name, sizeof(name), "tool_calls[%zu].function.arguments", j);
            REFUSE(t, NULL, name, "function arguments must be a JSON object");
        }
    } else {
        snprintf(name, sizeof(name), "tool_calls[%zu].function.arguments", j);
        REFUSE(t, NULL, name, "function arguments must be a string of JSON");
    }
    json_t *b = json_object();
    int rc = set_new(b, "type", json_string("tool_use"));
    if (rc == 0)
        rc = set_new(b, "id", json_incref(id));
    if (rc == 0)
        rc = set_new(b, "name", json_incref(fname));
    if (rc == 0) {
        rc = set_new(b, "input", input);
        input = NULL;
    }
    json_decref(input);
    if (rc < 0) {
        json_decref(b);
        return rc;
    }
    *out = b;
    return 0;
}

static int assistant_message(tx_t *t, const json_t *m, json_t *msgs)
{
    char p[96];
    json_t *content = json_object_get(m, "content");
    json_t *calls = json_object_get(m, "tool_calls");
    if (!absent(json_object_get(m, "function_call")))
        return refuse(t->err, NULL, at(t, p, sizeof(p), "function_call"),
                      "function_call is deprecated and not supported: use tool_calls");
    if (!absent(calls) && !json_is_array(calls))
        return refuse(t->err, NULL, at(t, p, sizeof(p), "tool_calls"),
                      "tool_calls must be an array");
    size_t ncalls = json_array_size(calls);
    if (absent(content) && ncalls == 0)
        return refuse(t->err, NULL, at(t, p, sizeof(p), "content"),
                      "an assistant message needs content or tool_calls");
    if (!absent(content) && !json_is_string(content) && !json_is_array(content))
        return refuse(t->err, NULL, at(t, p, sizeof(p), "content"),
                      "content must be a string or an array of parts");
    json_t *out = json_object();
    int rc = set_new(out, "role", json_string("assistant"));
    if (rc == 0 && json_is_string(content) && ncalls == 0) {
        rc = set_new(out, "content", json_incref(content));
    } else if (rc == 0) {
        json_t *blocks = json_array();
        rc = blocks ? 0 : -ENOMEM;
        if (rc == 0 && json_is_string(content) && json_string_length(content) > 0)
            rc = push_new(blocks,
                          text_block(json_string_value(content), json_string_length(content)));
        else if (rc == 0 && json_is_array(content))
            rc = parts_to_blocks(t, content, PARTS_REFUSAL, blocks);
        for (size_t j = 0; rc == 0 && j < ncalls; j++) {
            json_t *b = NULL;
            rc = tool_use_block(t, json_array_get(calls, j), j, &b);
            if (rc == 0)
                rc = push_new(blocks, b);
        }
        if (rc == 0 && json_array_size(blocks) == 0)
            rc = refuse(t->err, NULL, at(t, p, sizeof(p), "content"),
                        "the assistant message holds no text and no tool call");
        if (rc == 0) {
            rc = set_new(out, "content", blocks);
            blocks = NULL;
        }
        json_decref(blocks);
    }
    if (rc == 0)
        return push_new(msgs, out);
    json_decref(out);
    return rc;
}

/* A tool message: a tool_result block, added to the user turn of the tool results just before
 * it (*turn) or opening one. */
static int tool_message(tx_t *t, const json_t *m, json_t *msgs, json_t **turn)
{
    char p[96];
    json_t *id = json_object_get(m, "tool_call_id");
    json_t *content = json_object_get(m, "content");
    if (!json_is_string(id) || json_string_length(id) == 0)
        return refuse(t->err, NULL, at(t, p, sizeof(p), "tool_call_id"),
                      "a tool message needs a string tool_call_id");
    json_t *result;
    if (json_is_string(content)) {
        result = json_incref(content);
    } else if (json_is_array(content)) {
        result = json_array();
        int rc = result ? parts_to_blocks(t, content, 0, result) : -ENOMEM;
        if (rc < 0) {
            json_decref(result);
            return rc;
        }
    } else {
        return refuse(t->err, NULL, at(t, p, sizeof(p), "content"),
                      "a tool message needs content: a string or an array of text parts");
    }
    json_t *b = json_object();
    int rc = set_new(b, "type", json_string("tool_result"));
    if (rc == 0)
        rc = set_new(b, "tool_use_id", json_incref(id));
    if (rc == 0) {
        rc = set_new(b, "content", result);
        result = NULL;
    }
    json_decref(result);
    if (rc < 0) {
        json_decref(b);
        return rc;
    }
    if (*turn)
        return push_new(*turn, b);
    json_t *blocks = json_array();
    json_t *um = json_object();
    rc = push_new(blocks, b); /* takes b, also when it fails */
    if (rc == 0)
        rc = set_new(um, "role", json_string("user"));
    if (rc == 0) {
        rc = set_new(um, "content", json_incref(blocks));
        if (rc == 0) {
            rc = push_new(msgs, um);
            um = NULL;
        }
    }
    json_decref(um);
    if (rc == 0)
        *turn = blocks; /* borrowed: msgs holds it */
    json_decref(blocks);
    return rc;
}

static int translate_messages(tx_t *t, const json_t *in, json_t *msgs, ag_buf_t *sys,
                              bool *have_sys)
{
    json_t *tool_turn = NULL; /* the user turn the last tool messages went into */
    size_t i;
    json_t *m;
    json_array_foreach(in, i, m)
    {
        snprintf(t->path, sizeof(t->path), "messages[%zu]", i);
        json_t *role = json_object_get(m, "role");
        int rc;
        if (!json_is_object(m) || !json_is_string(role)) {
            rc = refuse(t->err, NULL, t->path, "each message must be an object with a role");
        } else if (jstr_is(role, "system") || jstr_is(role, "developer")) {
            /* Hoisted: Anthropic has one system prompt, before the conversation. */
            rc = *have_sys ? ag_buf_append(sys, "\n", 1) : 0;
            if (rc == 0)
                rc = text_of(t, json_object_get(m, "content"), sys);
            *have_sys = true;
        } else if (jstr_is(role, "user")) {
            rc = user_message(t, m, msgs);
            tool_turn = NULL;
        } else if (jstr_is(role, "assistant")) {
            rc = assistant_message(t, m, msgs);
            tool_turn = NULL;
        } else if (jstr_is(role, "tool")) {
            rc = tool_message(t, m, msgs, &tool_turn);
        } else if (jstr_is(role, "function")) {
            rc = refuse(t->err, NULL, t->path,
                        "the function role is deprecated and not supported: use tool messages");
        } else {
            char p[96];
            rc = refuse(t->err, NULL, at(t, p, sizeof(p), "role"),
                        "role must be one of system, developer, user, assistant, tool");
        }
        if (rc < 0)
            return rc;
    }
    t->path[0] = '\0';
    if (json_array_size(msgs) == 0)
        return refuse(t->err, NULL, "messages",
                      "messages needs at least one user or assistant message");
    return 0;
}

static int translate_tools(tx_t *t, const json_t *in, json_t *tools)
{
    size_t i;
    json_t *tool;
    json_array_foreach(in, i, tool)
    {
        char p[96];
        json_t *fn = json_object_get(tool, "function");
        json_t *name = json_object_get(fn, "name");
        json_t *desc = json_object_get(fn, "description");
        json_t *params = json_object_get(fn, "parameters");
        snprintf(p, sizeof(p), "tools[%zu]", i);
        if (!json_is_object(tool) || !jstr_is(json_object_get(tool, "type"), "function"))
            return refuse(t->err, NULL, p, "only function tools are supported");
        snprintf(p, sizeof(p), "tools[%zu].function.name", i);
        if (!json_is_object(fn) || !json_is_string(name) || json_string_length(name) == 0)
            return refuse(t->err, NULL, p, "each tool needs a function with a name");
        snprintf(p, sizeof(p), "tools[%zu].function.description", i);
        if (!absent(desc) && !json_is_string(desc))
            return refuse(t->err, NULL, p, "a tool's description must be a string");
        snprintf(p, sizeof(p), "tools[%zu].function.parameters", i);
        if (!absent(params) && !json_is_object(params))
            return refuse(t->err, NULL, p, "a tool's parameters must be a JSON Schema object");
        json_t *o = json_object();
        int rc = set_new(o, "name", json_incref(name));
        if (rc == 0 && json_is_string(desc))
            rc = set_new(o, "description", json_incref(desc));
        if (rc == 0 && json_is_object(params))
            rc = set_new(o, "input_schema", json_incref(params));
        else if (rc == 0)
            rc =
                set_new(o, "input_schema", json_pack("{s:s,s:{}}", "type", "object", "properties"));
        if (rc == 0)
            rc = push_new(tools, o);
        else
            json_decref(o);
        if (rc < 0)
            return rc;
    }
    return 0;
}

static int translate_tool_choice(tx_t *t, const json_t *tc, const json_t *parallel, bool have_tools,
                                 json_t **out)
{
    *out = NULL;
    if (!absent(parallel) && !json_is_boolean(parallel))
        return refuse(t->err, NULL, "parallel_tool_calls", "parallel_tool_calls must be a boolean");
    if (absent(tc) && !(have_tools && json_is_false(parallel)))
        return 0;
    if (!absent(tc) && !have_tools)
        return refuse(t->err, NULL, "tool_choice",
                      "tool_choice is only allowed when tools are specified");
    const char *type = "auto";
    json_t *name = NULL;
    if (jstr_is(tc, "none") || jstr_is(tc, "auto")) {
        type = json_string_value(tc);
    } else if (jstr_is(tc, "required")) {
        type = "any";
    } else if (json_is_object(tc)) {
        name = json_object_get(json_object_get(tc, "function"), "name");
        if (!jstr_is(json_object_get(tc, "type"), "function") || !json_is_string(name) ||
            json_string_length(name) == 0)
            return refuse(t->err, NULL, "tool_choice",
                          "tool_choice must be none, auto, required or "
                          "{\"type\":\"function\",\"function\":{\"name\":...}}");
        type = "tool";
    } else if (!absent(tc)) {
        return refuse(t->err, NULL, "tool_choice",
                      "tool_choice must be none, auto, required or a function");
    }
    json_t *o = json_object();
    int rc = set_new(o, "type", json_string(type));
    if (rc == 0 && name)
        rc = set_new(o, "name", json_incref(name));
    /* Anthropic's "none" takes no parallelism flag: nothing is called at all. */
    if (rc == 0 && json_is_false(parallel) && strcmp(type, "none") != 0)
        rc = set_new(o, "disable_parallel_tool_use", json_true());
    if (rc < 0) {
        json_decref(o);
        return rc;
    }
    *out = o;
    return 0;
}

/* stop: a string or an array of strings; whitespace-only entries are dropped (Anthropic refuses
 * them, and its compatibility layer documents that only non-whitespace sequences work). */
static int translate_stop(tx_t *t, const json_t *stop, json_t **out)
{
    *out = NULL;
    if (absent(stop))
        return 0;
    if (!json_is_string(stop) && !json_is_array(stop))
        return refuse(t->err, NULL, "stop", "stop must be a string or an array of strings");
    json_t *seqs = json_array();
    if (!seqs)
        return -ENOMEM;
    size_t n = json_is_array(stop) ? json_array_size(stop) : 1;
    for (size_t i = 0; i < n; i++) {
        json_t *s = json_is_array(stop) ? json_array_get(stop, i) : (json_t *)stop;
        if (!json_is_string(s)) {
            json_decref(seqs);
            char p[32];
            snprintf(p, sizeof(p), "stop[%zu]", i);
            return refuse(t->err, NULL, p, "stop must be a string or an array of strings");
        }
        if (is_blank(json_string_value(s), json_string_length(s)))
            continue;
        if (push_new(seqs, json_incref(s)) < 0) {
            json_decref(seqs);
            return -ENOMEM;
        }
    }
    if (json_array_size(seqs) == 0) {
        json_decref(seqs);
        return 0;
    }
    *out = seqs;
    return 0;
}

/* A number in [lo, hi]; absent is fine. */
static int check_number(tx_t *t, const json_t *v, const char *name, double lo, double hi)
{
    if (absent(v))
        return 0;
    if (!json_is_number(v) || json_number_value(v) < lo || json_number_value(v) > hi)
        return refuse(t->err, "invalid_value", name, "%s must be a number from %g to %g", name, lo,
                      hi);
    return 0;
}

static int translate(tx_t *t, const json_t *root, const char *default_model,
                     unsigned default_max_tokens, json_t *up, gw_openai_request_t *info)
{
    if (!json_is_object(root))
        return refuse(t->err, NULL, NULL, "the request body must be a JSON object");

    /* Checks first, in the order a reader of the error would fix them. */
    json_t *model = json_object_get(root, "model");
    json_t *msgs_in = json_object_get(root, "messages");
    json_t *n = json_object_get(root, "n");
    json_t *mct = json_object_get(root, "max_completion_tokens");
    json_t *mt = json_object_get(root, "max_tokens");
    json_t *temp = json_object_get(root, "temperature");
    json_t *top_p = json_object_get(root, "top_p");
    json_t *stream = json_object_get(root, "stream");
    json_t *sopts = json_object_get(root, "stream_options");
    json_t *tools_in = json_object_get(root, "tools");
    json_t *thinking = json_object_get(root, "thinking");
    if (absent(model) && !default_model)
        return refuse(t->err, NULL, "model", "you must provide a model parameter");
    if (!absent(model) && (!json_is_string(model) || json_string_length(model) == 0 ||
                           json_string_length(model) > 256))
        return refuse(t->err, NULL, "model", "model must be a string of 1 to 256 characters");
    const char *mname = absent(model) ? default_model : json_string_value(model);
    size_t mlen = absent(model) ? strlen(default_model) : json_string_length(model);
    if (mlen == 0 || mlen > 256 || memchr(mname, '\0', mlen))
        return refuse(t->err, NULL, "model", "model must be a string of 1 to 256 characters");
    if (!json_is_array(msgs_in) || json_array_size(msgs_in) == 0)
        return refuse(t->err, NULL, "messages", "messages must be a non-empty array");
    if (!absent(n) && !(json_is_integer(n) && json_integer_value(n) == 1))
        return refuse(t->err, "invalid_value", "n", "n must be 1: one choice per request");
    if (!absent(json_object_get(root, "functions")))
        return refuse(t->err, NULL, "functions",
                      "functions is deprecated and not supported: use tools");
    if (!absent(json_object_get(root, "function_call")))
        return refuse(t->err, NULL, "function_call",
                      "function_call is deprecated and not supported: use tool_choice");
    json_t *maxv = !absent(mct) ? mct : mt;
    const char *maxname = !absent(mct) ? "max_completion_tokens" : "max_tokens";
    unsigned max_tokens = default_max_tokens;
    if (!absent(maxv)) {
        if (!json_is_integer(maxv) || json_integer_value(maxv) < 1 ||
            json_integer_value(maxv) > INT_MAX)
            return refuse(t->err, "invalid_value", maxname, "%s must be a positive integer",
                          maxname);
        max_tokens = (unsigned)json_integer_value(maxv);
    } else if (max_tokens == 0) {
        return refuse(t->err, NULL, "max_tokens",
                      "max_tokens (or max_completion_tokens) is required");
    }
    int rc = check_number(t, temp, "temperature", 0, 2);
    if (rc == 0)
        rc = check_number(t, top_p, "top_p", 0, 1);
    if (rc < 0)
        return rc;
    if (!absent(stream) && !json_is_boolean(stream))
        return refuse(t->err, NULL, "stream", "stream must be a boolean");
    bool streaming = json_is_true(stream);
    bool include_usage = false;
    if (!absent(sopts)) {
        json_t *iu = json_object_get(sopts, "include_usage");
        if (!json_is_object(sopts) || (!absent(iu) && !json_is_boolean(iu)))
            return refuse(t->err, NULL, "stream_options",
                          "stream_options must be an object; include_usage a boolean");
        if (!streaming)
            return refuse(t->err, NULL, "stream_options",
                          "stream_options is only allowed when stream is true");
        include_usage = json_is_true(iu);
    }
    if (!absent(tools_in) && !json_is_array(tools_in))
        return refuse(t->err, NULL, "tools", "tools must be an array");
    if (!absent(thinking) && !json_is_object(thinking))
        return refuse(t->err, NULL, "thinking", "thinking must be an object");

    /* Then the parts that are rebuilt. */
    json_t *msgs = json_array();
    json_t *tools = json_array();
    json_t *stop = NULL, *choice = NULL;
    ag_buf_t sys;
    ag_buf_init(&sys, 0);
    bool have_sys = false;
    rc = msgs && tools ? 0 : -ENOMEM;
    if (rc == 0)
        rc = translate_messages(t, msgs_in, msgs, &sys, &have_sys);
    if (rc == 0 && json_is_array(tools_in))
        rc = translate_tools(t, tools_in, tools);
    if (rc == 0)
        rc = translate_tool_choice(t, json_object_get(root, "tool_choice"),
                                   json_object_get(root, "parallel_tool_calls"),
                                   json_array_size(tools) > 0, &choice);
    if (rc == 0)
        rc = translate_stop(t, json_object_get(root, "stop"), &stop);

    /* Assembled in a fixed order, so one request always gives the same bytes. */
    if (rc == 0)
        rc = set_new(up, "model", json_stringn(mname, mlen));
    if (rc == 0)
        rc = set_new(up, "max_tokens", json_integer(max_tokens));
    if (rc == 0 && have_sys)
        rc = set_new(up, "system", json_stringn(sys.data ? sys.data : "", sys.len));
    if (rc == 0) {
        rc = set_new(up, "messages", msgs);
        msgs = NULL;
    }
    if (rc == 0 && !absent(temp)) {
        bool cap = json_number_value(temp) > 1;
        rc = set_new(up, "temperature",
                     json_is_integer(temp) ? json_integer(cap ? 1 : json_integer_value(temp))
                                           : json_real(cap ? 1.0 : json_real_value(temp)));
    }
    if (rc == 0 && !absent(top_p))
        rc = set_new(up, "top_p", json_incref(top_p));
    if (rc == 0 && stop) {
        rc = set_new(up, "stop_sequences", stop);
        stop = NULL;
    }
    if (rc == 0 && streaming)
        rc = set_new(up, "stream", json_true());
    if (rc == 0 && json_array_size(tools) > 0) {
        rc = set_new(up, "tools", json_incref(tools));
        if (rc == 0 && choice) {
            rc = set_new(up, "tool_choice", choice);
            choice = NULL;
        }
    }
    if (rc == 0 && json_is_object(thinking))
        rc = set_new(up, "thinking", json_incref(thinking));
    if (rc == 0 && info) {
        info->stream = streaming;
        info->include_usage = include_usage;
        info->has_tools = json_array_size(tools) > 0;
        info->max_tokens = max_tokens;
        memcpy(info->model, mname, mlen);
        info->model[mlen] = '\0';
    }
    json_decref(msgs);
    json_decref(tools);
    json_decref(stop);
    json_decref(choice);
    ag_buf_fini(&sys);
    return rc;
}

int gw_openai_request_to_anthropic(const char *body, size_t len, const char *default_model,
                                   unsigned default_max_tokens, ag_buf_t *out,
                                   gw_openai_request_t *info, gw_openai_error_t *err)
{
    tx_t t = {.err = err};
    json_error_t jerr;
    json_t *root = json_loadb(body ? body : "", body ? len : 0, JSON_ALLOW_NUL, &jerr);
    if (!root)
        return refuse(err, NULL, NULL, "We could not parse the JSON body of your request: %.200s",
                      jerr.text);
    json_t *up = json_object();
    int rc = up ? translate(&t, root, default_model, default_max_tokens, up, info) : -ENOMEM;
    if (rc == 0)
        rc = dump_json(out, up);
    json_decref(up);
    json_decref(root);
    return rc;
}

/* ---- answers ---------------------------------------------------------------------- */

const char *gw_openai_finish_reason(const char *stop_reason)
{
    if (!stop_reason)
        return "stop";
    if (strcmp(stop_reason, "max_tokens") == 0 ||
        strcmp(stop_reason, "model_context_window_exceeded") == 0)
        return "length";
    if (strcmp(stop_reason, "tool_use") == 0)
        return "tool_calls";
    if (strcmp(stop_reason, "refusal") == 0)
        return "content_filter";
    return "stop";
}

/* OpenAI's usage: the prompt is every input token, cached or not. */
static int append_usage(ag_buf_t *b, int64_t in, int64_t out, int64_t cache_read,
                        int64_t cache_creation)
{
    int64_t prompt = in + cache_read + cache_creation;
    int rc = ag_buf_append_cstr(b, "{\"prompt_tokens\":");
    if (rc == 0)
        rc = append_i64(b, prompt);
    if (rc == 0)
        rc = ag_buf_append_cstr(b, ",\"completion_tokens\":");
    if (rc == 0)
        rc = append_i64(b, out);
    if (rc == 0)
        rc = ag_buf_append_cstr(b, ",\"total_tokens\":");
    if (rc == 0)
        rc = append_i64(b, prompt + out);
    if (rc == 0)
        rc = ag_buf_append_cstr(b, ",\"prompt_tokens_details\":{\"cached_tokens\":");
    if (rc == 0)
        rc = append_i64(b, cache_read);
    if (rc == 0)
        rc = ag_buf_append_cstr(b, "}}");
    return rc;
}

/* {"id":..,"object":"chat.completion","created":..,"model":..,"choices":[{"index":0,
 *  "message":{"role":"assistant","content": ... up to where the content goes. */
static int completion_head(ag_buf_t *b, const char *id, size_t idlen, const char *model,
                           size_t mlen, int64_t created)
{
    int rc = ag_buf_append_cstr(b, "{\"id\":");
    if (rc == 0)
        rc = append_jstr(b, id, idlen);
    if (rc == 0)
        rc = ag_buf_append_cstr(b, ",\"object\":\"chat.completion\",\"created\":");
    if (rc == 0)
        rc = append_i64(b, created);
    if (rc == 0)
        rc = ag_buf_append_cstr(b, ",\"model\":");
    if (rc == 0)
        rc = append_jstr(b, model, mlen);
    if (rc == 0)
        rc = ag_buf_append_cstr(b, ",\"choices\":[{\"index\":0,\"message\":{\"role\":"
                                   "\"assistant\",\"content\":");
    return rc;
}

static int completion_tail(ag_buf_t *b, const char *stop_reason, int64_t in, int64_t out,
                           int64_t cache_read, int64_t cache_creation)
{
    int rc = ag_buf_append_cstr(b, "},\"logprobs\":null,\"finish_reason\":\"");
    if (rc == 0)
        rc = ag_buf_append_cstr(b, gw_openai_finish_reason(stop_reason));
    if (rc == 0)
        rc = ag_buf_append_cstr(b, "\"}],\"usage\":");
    if (rc == 0)
        rc = append_usage(b, in, out, cache_read, cache_creation);
    if (rc == 0)
        rc = ag_buf_append(b, "}", 1);
    return rc;
}

int gw_openai_response_from_anthropic(const char *body, size_t len, int64_t created,
                                      const char *fallback_model, ag_buf_t *out)
{
    json_t *root = json_loadb(body ? body : "", body ? len : 0, JSON_ALLOW_NUL, NULL);
    json_t *content = json_object_get(root, "content");
    json_t *id = json_object_get(root, "id");
    json_t *model = json_object_get(root, "model");
    json_t *stop = json_object_get(root, "stop_reason");
    json_t *usage = json_object_get(root, "usage");
    if (!json_is_object(root) || !json_is_array(content) ||
        (json_object_get(root, "type") && !jstr_is(json_object_get(root, "type"), "message"))) {
        json_decref(root);
        return AG_EPROTO;
    }
    if (!fallback_model)
        fallback_model = "";
    size_t before = out->len;
    ag_buf_t text;
    ag_buf_init(&text, 0);
    bool have_text = false;
    size_t ncalls = 0, i;
    json_t *blk;
    int rc = 0;
    json_array_foreach(content, i, blk)
    {
        json_t *type = json_object_get(blk, "type");
        json_t *t = json_object_get(blk, "text");
        if (jstr_is(type, "text") && json_is_string(t)) {
            have_text = true;
            rc = ag_buf_append(&text, json_string_value(t), json_string_length(t));
        } else if (jstr_is(type, "tool_use")) {
            ncalls++;
        }
        if (rc < 0)
            break;
    }
    if (rc == 0)
        rc = completion_head(
            out, json_is_string(id) ? json_string_value(id) : "",
            json_is_string(id) ? json_string_length(id) : 0,
            json_is_string(model) ? json_string_value(model) : fallback_model,
            json_is_string(model) ? json_string_length(model) : strlen(fallback_model), created);
    if (rc == 0)
        rc = have_text ? append_jstr(out, text.data, text.len) : ag_buf_append_cstr(out, "null");
    if (rc == 0)
        rc = ag_buf_append_cstr(out, ",\"refusal\":null");
    if (rc == 0 && ncalls) {
        rc = ag_buf_append_cstr(out, ",\"tool_calls\":[");
        size_t k = 0;
        json_array_foreach(content, i, blk)
        {
            if (rc < 0 || !jstr_is(json_object_get(blk, "type"), "tool_use"))
                continue;
            json_t *tid = json_object_get(blk, "id");
            json_t *tname = json_object_get(blk, "name");
            json_t *input = json_object_get(blk, "input");
            ag_buf_t args;
            ag_buf_init(&args, 0);
            rc = ag_buf_append_cstr(out, k++ ? ",{\"id\":" : "{\"id\":");
            if (rc == 0)
                rc = json_is_string(tid)
                         ? append_jstr(out, json_string_value(tid), json_string_length(tid))
                         : ag_buf_append_cstr(out, "\"\"");
            if (rc == 0)
                rc = ag_buf_append_cstr(out, ",\"type\":\"function\",\"function\":{\"name\":");
            if (rc == 0)
                rc = json_is_string(tname)
                         ? append_jstr(out, json_string_value(tname), json_string_length(tname))
                         : ag_buf_append_cstr(out, "\"\"");
            if (rc == 0)
                rc = ag_buf_append_cstr(out, ",\"arguments\":");
            if (rc == 0)
                rc = input ? dump_json(&args, input) : ag_buf_append_cstr(&args, "{}");
            if (rc == 0)
                rc = append_jstr(out, args.data, args.len);
            if (rc == 0)
                rc = ag_buf_append_cstr(out, "}}");
            ag_buf_fini(&args);
        }
        if (rc == 0)
            rc = ag_buf_append(out, "]", 1);
    }
    if (rc == 0)
        rc = completion_tail(out, json_is_string(stop) ? json_string_value(stop) : NULL,
                             usage_int(usage, "input_tokens"), usage_int(usage, "output_tokens"),
                             usage_int(usage, "cache_read_input_tokens"),
                             usage_int(usage, "cache_creation_input_tokens"));
    if (rc < 0)
        out->len = before;
    ag_buf_fini(&text);
    json_decref(root);
    return rc;
}

int gw_openai_completion_from_text(const gw_openai_text_answer_t *a, int64_t created, ag_buf_t *out)
{
    size_t before = out->len;
    int rc = completion_head(out, a->id, a->id ? strlen(a->id) : 0, a->model,
                             a->model ? strlen(a->model) : 0, created);
    if (rc == 0)
        rc = append_jstr(out, a->text, a->text_len);
    if (rc == 0)
        rc = ag_buf_append_cstr(out, ",\"refusal\":null");
    if (rc == 0)
        rc = completion_tail(out, a->stop_reason, a->input_tokens, a->output_tokens,
                             a->cache_read_tokens, a->cache_creation_tokens);
    if (rc < 0)
        out->len = before;
    return rc;
}

/* ---- streams ---------------------------------------------------------------------- */

/* `data: {"id":..,"object":"chat.completion.chunk","created":..,"model":..` */
static int chunk_prefix(ag_buf_t *b, const char *id, size_t idlen, const char *model, size_t mlen,
                        int64_t created)
{
    int rc = ag_buf_append_cstr(b, "data: {\"id\":");
    if (rc == 0)
        rc = append_jstr(b, id, idlen);
    if (rc == 0)
        rc = ag_buf_append_cstr(b, ",\"object\":\"chat.completion.chunk\",\"created\":");
    if (rc == 0)
        rc = append_i64(b, created);
    if (rc == 0)
        rc = ag_buf_append_cstr(b, ",\"model\":");
    if (rc == 0)
        rc = append_jstr(b, model, mlen);
    return rc;
}

/* One chunk of choice 0: the prefix, then `delta` (raw JSON text), then the finish reason. */
typedef struct chunk_ctx {
    const char *id, *model;
    size_t idlen, mlen;
    int64_t created;
} chunk_ctx_t;

static int chunk_open(ag_buf_t *b, const chunk_ctx_t *c)
{
    int rc = chunk_prefix(b, c->id, c->idlen, c->model, c->mlen, c->created);
    if (rc == 0)
        rc = ag_buf_append_cstr(b, ",\"choices\":[{\"index\":0,\"delta\":");
    return rc;
}

static int chunk_close(ag_buf_t *b, const char *finish)
{
    int rc = ag_buf_append_cstr(b, ",\"logprobs\":null,\"finish_reason\":");
    if (rc == 0 && finish) {
        rc = ag_buf_append(b, "\"", 1);
        if (rc == 0)
            rc = ag_buf_append_cstr(b, finish);
        if (rc == 0)
            rc = ag_buf_append(b, "\"", 1);
    } else if (rc == 0) {
        rc = ag_buf_append_cstr(b, "null");
    }
    if (rc == 0)
        rc = ag_buf_append_cstr(b, "}]}\n\n");
    return rc;
}

static int chunk_role(ag_buf_t *b, const chunk_ctx_t *c)
{
    int rc = chunk_open(b, c);
    if (rc == 0)
        rc = ag_buf_append_cstr(b, "{\"role\":\"assistant\",\"content\":\"\"}");
    if (rc == 0)
        rc = chunk_close(b, NULL);
    return rc;
}

static int chunk_text(ag_buf_t *b, const chunk_ctx_t *c, const char *text, size_t len)
{
    int rc = chunk_open(b, c);
    if (rc == 0)
        rc = ag_buf_append_cstr(b, "{\"content\":");
    if (rc == 0)
        rc = append_jstr(b, text, len);
    if (rc == 0)
        rc = ag_buf_append(b, "}", 1);
    if (rc == 0)
        rc = chunk_close(b, NULL);
    return rc;
}

/* The end of a stream: the finish chunk, the usage chunk when asked for, [DONE]. */
static int chunk_end(ag_buf_t *b, const chunk_ctx_t *c, const char *stop_reason, bool include_usage,
                     int64_t in, int64_t out, int64_t cache_read, int64_t cache_creation)
{
    int rc = chunk_open(b, c);
    if (rc == 0)
        rc = ag_buf_append_cstr(b, "{}");
    if (rc == 0)
        rc = chunk_close(b, gw_openai_finish_reason(stop_reason));
    if (rc == 0 && include_usage) {
        rc = chunk_prefix(b, c->id, c->idlen, c->model, c->mlen, c->created);
        if (rc == 0)
            rc = ag_buf_append_cstr(b, ",\"choices\":[],\"usage\":");
        if (rc == 0)
            rc = append_usage(b, in, out, cache_read, cache_creation);
        if (rc == 0)
            rc = ag_buf_append_cstr(b, "}\n\n");
    }
    if (rc == 0)
        rc = ag_buf_append_cstr(b, "data: [DONE]\n\n");
    return rc;
}

int gw_openai_stream_from_text(const gw_openai_text_answer_t *a, int64_t created,
                               bool include_usage, ag_buf_t *out)
{
    chunk_ctx_t c = {a->id ? a->id : "", a->model ? a->model : "", a->id ? strlen(a->id) : 0,
                     a->model ? strlen(a->model) : 0, created};
    size_t before = out->len;
    int rc = chunk_role(out, &c);
    if (rc == 0 && a->text_len)
        rc = chunk_text(out, &c, a->text, a->text_len);
    if (rc == 0)
        rc = chunk_end(out, &c, a->stop_reason, include_usage, a->input_tokens, a->output_tokens,
                       a->cache_read_tokens, a->cache_creation_tokens);
    if (rc < 0)
        out->len = before;
    return rc;
}

/* Anthropic's event streams carry ids and model names of a few dozen bytes. */
#define STREAM_NAME_CAP 512

static chunk_ctx_t stream_ctx(const gw_openai_stream_t *s)
{
    return (chunk_ctx_t){s->_id.data ? s->_id.data : "", s->_model.data ? s->_model.data : "",
                         s->_id.len, s->_model.len, s->_created};
}

static void set_name(ag_buf_t *b, const json_t *v)
{
    if (!json_is_string(v))
        return;
    size_t n = json_string_length(v);
    ag_buf_reset(b);
    if (ag_buf_append(b, json_string_value(v), n < STREAM_NAME_CAP ? n : STREAM_NAME_CAP) < 0)
        ag_buf_reset(b);
}

static void take_usage(gw_openai_stream_t *s, const json_t *usage)
{
    /* Cumulative: a field present replaces the last value, one absent keeps it. */
    json_t *v;
    if (json_is_integer(v = json_object_get(usage, "input_tokens")) && json_integer_value(v) >= 0)
        s->_in = (int64_t)json_integer_value(v);
    if (json_is_integer(v = json_object_get(usage, "output_tokens")) && json_integer_value(v) >= 0)
        s->_out_tokens = (int64_t)json_integer_value(v);
    if (json_is_integer(v = json_object_get(usage, "cache_read_input_tokens")) &&
        json_integer_value(v) >= 0)
        s->_cache_read = (int64_t)json_integer_value(v);
    if (json_is_integer(v = json_object_get(usage, "cache_creation_input_tokens")) &&
        json_integer_value(v) >= 0)
        s->_cache_creation = (int64_t)json_integer_value(v);
}

/* The role chunk goes first, whatever event comes first. */
static int ensure_started(gw_openai_stream_t *s, ag_buf_t *out)
{
    if (s->_started)
        return 0;
    s->_started = true;
    chunk_ctx_t c = stream_ctx(s);
    return chunk_role(out, &c);
}

static int on_block_start(gw_openai_stream_t *s, const json_t *root, ag_buf_t *out)
{
    json_t *blk = json_object_get(root, "content_block");
    json_t *type = json_object_get(blk, "type");
    s->_cur_tool = -1;
    int rc = ensure_started(s, out);
    chunk_ctx_t c = stream_ctx(s);
    if (rc == 0 && jstr_is(type, "tool_use")) {
        json_t *id = json_object_get(blk, "id");
        json_t *name = json_object_get(blk, "name");
        s->_cur_tool = s->_tool_next++;
        rc = chunk_open(out, &c);
        if (rc == 0)
            rc = ag_buf_append_cstr(out, "{\"tool_calls\":[{\"index\":");
        if (rc == 0)
            rc = append_i64(out, s->_cur_tool);
        if (rc == 0)
            rc = ag_buf_append_cstr(out, ",\"id\":");
        if (rc == 0)
            rc = json_is_string(id)
                     ? append_jstr(out, json_string_value(id), json_string_length(id))
                     : ag_buf_append_cstr(out, "\"\"");
        if (rc == 0)
            rc = ag_buf_append_cstr(out, ",\"type\":\"function\",\"function\":{\"name\":");
        if (rc == 0)
            rc = json_is_string(name)
                     ? append_jstr(out, json_string_value(name), json_string_length(name))
                     : ag_buf_append_cstr(out, "\"\"");
        if (rc == 0)
            rc = ag_buf_append_cstr(out, ",\"arguments\":\"\"}}]}");
        if (rc == 0)
            rc = chunk_close(out, NULL);
    } else if (rc == 0 && jstr_is(type, "text")) {
        json_t *text = json_object_get(blk, "text");
        if (json_is_string(text) && json_string_length(text) > 0)
            rc = chunk_text(out, &c, json_string_value(text), json_string_length(text));
    }
    return rc;
}

static int on_block_delta(gw_openai_stream_t *s, const json_t *root, ag_buf_t *out)
{
    json_t *delta = json_object_get(root, "delta");
    json_t *type = json_object_get(delta, "type");
    int rc = 0;
    if (jstr_is(type, "text_delta")) {
        json_t *text = json_object_get(delta, "text");
        if (!json_is_string(text) || json_string_length(text) == 0)
            return 0;
        rc = ensure_started(s, out);
        chunk_ctx_t c = stream_ctx(s);
        if (rc == 0)
            rc = chunk_text(out, &c, json_string_value(text), json_string_length(text));
    } else if (jstr_is(type, "input_json_delta") && s->_cur_tool >= 0) {
        json_t *pj = json_object_get(delta, "partial_json");
        if (!json_is_string(pj) || json_string_length(pj) == 0)
            return 0;
        chunk_ctx_t c = stream_ctx(s);
        rc = chunk_open(out, &c);
        if (rc == 0)
            rc = ag_buf_append_cstr(out, "{\"tool_calls\":[{\"index\":");
        if (rc == 0)
            rc = append_i64(out, s->_cur_tool);
        if (rc == 0)
            rc = ag_buf_append_cstr(out, ",\"function\":{\"arguments\":");
        if (rc == 0)
            rc = append_jstr(out, json_string_value(pj), json_string_length(pj));
        if (rc == 0)
            rc = ag_buf_append_cstr(out, "}}]}");
        if (rc == 0)
            rc = chunk_close(out, NULL);
    }
    /* thinking_delta, signature_delta, citations_delta: OpenAI's format has no place for them. */
    return rc;
}

static int on_error(gw_openai_stream_t *s, const json_t *root, ag_buf_t *out)
{
    json_t *e = json_object_get(root, "error");
    json_t *t = json_object_get(e, "type");
    json_t *m = json_object_get(e, "message");
    const char *type, *code;
    gw_openai_map_error(json_is_string(t) ? json_string_value(t) : "api_error", 500, NULL, &type,
                        &code);
    s->_ended = s->_errored = true;
    int rc = ag_buf_append_cstr(out, "data: ");
    if (rc == 0)
        rc = gw_openai_error_body(out, json_is_string(m) ? json_string_value(m) : "Upstream error",
                                  type, NULL, code);
    if (rc == 0)
        rc = ag_buf_append_cstr(out, "\n\n");
    return rc;
}

static bool name_is(ag_str_t name, const char *lit)
{
    return ag_str_eq(name, ag_str_c(lit));
}

int gw_openai_stream_event(gw_openai_stream_t *s, const ag_sse_event_t *ev, ag_buf_t *out)
{
    if (s->_ended)
        return 0;
    json_t *root = json_loadb(ev->data.ptr ? ev->data.ptr : "", ev->data.len, 0, NULL);
    if (!json_is_object(root)) {
        json_decref(root);
        return 0; /* not an event of Anthropic's; nothing to say about it */
    }
    ag_str_t name = ev->event;
    json_t *type = json_object_get(root, "type");
    if (name_is(name, "message") && json_is_string(type))
        name = ag_str(json_string_value(type), json_string_length(type));
    size_t before = out->len;
    int rc = 0;
    if (name_is(name, "message_start")) {
        json_t *msg = json_object_get(root, "message");
        if (!s->_started) {
            set_name(&s->_id, json_object_get(msg, "id"));
            set_name(&s->_model, json_object_get(msg, "model"));
        }
        take_usage(s, json_object_get(msg, "usage"));
        rc = ensure_started(s, out);
    } else if (name_is(name, "content_block_start")) {
        rc = on_block_start(s, root, out);
    } else if (name_is(name, "content_block_delta")) {
        rc = on_block_delta(s, root, out);
    } else if (name_is(name, "content_block_stop")) {
        s->_cur_tool = -1;
    } else if (name_is(name, "message_delta")) {
        json_t *stop = json_object_get(json_object_get(root, "delta"), "stop_reason");
        if (json_is_string(stop))
            snprintf(s->_stop, sizeof(s->_stop), "%s", json_string_value(stop));
        take_usage(s, json_object_get(root, "usage"));
    } else if (name_is(name, "message_stop")) {
        rc = ensure_started(s, out);
        chunk_ctx_t c = stream_ctx(s);
        if (rc == 0)
            rc = chunk_end(out, &c, s->_stop[0] ? s->_stop : NULL, s->_include_usage, s->_in,
                           s->_out_tokens, s->_cache_read, s->_cache_creation);
        s->_ended = true;
    } else if (name_is(name, "error")) {
        rc = on_error(s, root, out);
    }
    json_decref(root);
    if (rc < 0)
        out->len = before; /* never half a chunk */
    return rc;
}

static int stream_sse_cb(void *ctx, const ag_sse_event_t *ev)
{
    gw_openai_stream_t *s = ctx;
    return gw_openai_stream_event(s, ev, s->_out);
}

void gw_openai_stream_init(gw_openai_stream_t *s, int64_t created, bool include_usage,
                           const char *fallback_model)
{
    memset(s, 0, sizeof(*s));
    ag_sse_parser_init(&s->_sse, 0, stream_sse_cb, s);
    ag_buf_init(&s->_id, 0);
    ag_buf_init(&s->_model, 0);
    if (fallback_model)
        ag_buf_append(&s->_model, fallback_model, strnlen(fallback_model, STREAM_NAME_CAP));
    s->_created = created;
    s->_include_usage = include_usage;
    s->_cur_tool = -1;
}

int gw_openai_stream_feed(gw_openai_stream_t *s, const char *data, size_t len, ag_buf_t *out)
{
    s->_out = out;
    int rc = ag_sse_parser_feed(&s->_sse, data, len);
    s->_out = NULL;
    return rc;
}

int gw_openai_stream_finish(gw_openai_stream_t *s, const char *message, ag_buf_t *out)
{
    if (s->_ended)
        return 0;
    s->_ended = s->_errored = true;
    int rc = ag_buf_append_cstr(out, "data: ");
    if (rc == 0)
        rc = gw_openai_error_body(out, message ? message : "Upstream connection failed",
                                  "server_error", NULL, NULL);
    if (rc == 0)
        rc = ag_buf_append_cstr(out, "\n\n");
    return rc;
}

bool gw_openai_stream_ended(const gw_openai_stream_t *s)
{
    return s->_ended;
}

bool gw_openai_stream_errored(const gw_openai_stream_t *s)
{
    return s->_errored;
}

void gw_openai_stream_fini(gw_openai_stream_t *s)
{
    ag_sse_parser_fini(&s->_sse);
    ag_buf_fini(&s->_id);
    ag_buf_fini(&s->_model);
}

/* ---- GET /v1/models --------------------------------------------------------------- */

int gw_openai_models_body(ag_buf_t *out, const char *const *ids, size_t n, int64_t created)
{
    int rc = ag_buf_append_cstr(out, "{\"object\":\"list\",\"data\":[");
    for (size_t i = 0; rc == 0 && i < n; i++) {
        rc = ag_buf_append_cstr(out, i ? ",{\"id\":" : "{\"id\":");
        if (rc == 0)
            rc = append_jstr(out, ids[i], strlen(ids[i]));
        if (rc == 0)
            rc = ag_buf_append_cstr(out, ",\"object\":\"model\",\"created\":");
        if (rc == 0)
            rc = append_i64(out, created);
        if (rc == 0)
            rc = ag_buf_append_cstr(out, ",\"owned_by\":\"anthropic\"}");
    }
    if (rc == 0)
        rc = ag_buf_append_cstr(out, "]}");
    return rc;
}

int gw_anthropic_models_body(ag_buf_t *out, const char *const *ids, size_t n,
                             const char *created_at)
{
    int rc = ag_buf_append_cstr(out, "{\"data\":[");
    for (size_t i = 0; rc == 0 && i < n; i++) {
        rc = ag_buf_append_cstr(out, i ? ",{\"type\":\"model\",\"id\":"
                                       : "{\"type\":\"model\","
                                         "\"id\":");
        if (rc == 0)
            rc = append_jstr(out, ids[i], strlen(ids[i]));
        if (rc == 0)
            rc = ag_buf_append_cstr(out, ",\"display_name\":");
        if (rc == 0)
            rc = append_jstr(out, ids[i], strlen(ids[i]));
        if (rc == 0)
            rc = ag_buf_append_cstr(out, ",\"created_at\":");
        if (rc == 0)
            rc = append_jstr(out, created_at, created_at ? strlen(created_at) : 0);
        if (rc == 0)
            rc = ag_buf_append(out, "}", 1);
    }
    if (rc == 0)
        rc = ag_buf_append_cstr(out, "],\"has_more\":false,\"first_id\":");
    if (rc == 0)
        rc = n ? append_jstr(out, ids[0], strlen(ids[0])) : ag_buf_append_cstr(out, "null");
    if (rc == 0)
        rc = ag_buf_append_cstr(out, ",\"last_id\":");
    if (rc == 0)
        rc = n ? append_jstr(out, ids[n - 1], strlen(ids[n - 1])) : ag_buf_append_cstr(out, "null");
    if (rc == 0)
        rc = ag_buf_append(out, "}", 1);
    return rc;
}
