/* SPDX-License-Identifier: MIT
 *
 * fuzz_openai_request.c: OpenAI requests (and the same bytes as an upstream answer and an
 * upstream error) through gateway/openai.c. An accepted request must give an Anthropic body
 * with only fields Anthropic knows; a refused one an error and no output.
 */
#include "util/platform.h"

#include <stdint.h>
#include <string.h>

#include <jansson.h>

#include "gateway/openai.h"
#include "util/errors.h"

static const char *const anthropic_fields[] = {
    "model",          "max_tokens", "system", "messages",    "temperature", "top_p",
    "stop_sequences", "stream",     "tools",  "tool_choice", "thinking",
};

static void check_upstream_body(const ag_buf_t *out, const gw_openai_request_t *info)
{
    json_t *root = json_loadb(out->data, out->len, JSON_ALLOW_NUL, NULL);
    AG_ASSERT(json_is_object(root));
    const char *key;
    json_t *v;
    json_object_foreach(root, key, v)
    {
        bool known = false;
        for (size_t i = 0; i < AG_ARRAY_LEN(anthropic_fields); i++)
            known = known || strcmp(key, anthropic_fields[i]) == 0;
        AG_ASSERT(known);
    }
    AG_ASSERT(json_is_string(json_object_get(root, "model")));
    AG_ASSERT(strcmp(json_string_value(json_object_get(root, "model")), info->model) == 0);
    AG_ASSERT(json_integer_value(json_object_get(root, "max_tokens")) == info->max_tokens);
    AG_ASSERT(info->max_tokens >= 1);
    json_t *msgs = json_object_get(root, "messages");
    AG_ASSERT(json_array_size(msgs) > 0);
    size_t i;
    json_array_foreach(msgs, i, v)
    {
        json_t *role = json_object_get(v, "role");
        AG_ASSERT(json_is_string(role));
        AG_ASSERT(!strcmp(json_string_value(role), "user") ||
                  !strcmp(json_string_value(role), "assistant"));
        AG_ASSERT(json_object_size(v) == 2 && json_object_get(v, "content"));
    }
    json_t *t = json_object_get(root, "temperature");
    AG_ASSERT(!t || (json_number_value(t) >= 0 && json_number_value(t) <= 1));
    AG_ASSERT(info->stream == json_is_true(json_object_get(root, "stream")));
    AG_ASSERT(!info->include_usage || info->stream);
    json_decref(root);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *body = (const char *)data;
    ag_buf_t out;
    ag_buf_init(&out, 0);
    gw_openai_request_t info;
    gw_openai_error_t err;
    int rc = gw_openai_request_to_anthropic(body, size, size % 2 ? "claude-default" : NULL,
                                            size % 3 ? 1024 : 0, &out, &info, &err);
    if (rc == 0) {
        check_upstream_body(&out, &info);
    } else {
        AG_ASSERT(rc == AG_EINVALID);
        AG_ASSERT(out.len == 0 && err.status == 400 && err.message[0] && err.type);
    }

    ag_buf_reset(&out);
    rc = gw_openai_response_from_anthropic(body, size, 1, "m", &out);
    AG_ASSERT(rc == 0 || rc == AG_EPROTO);
    if (rc == 0) {
        json_t *c = json_loadb(out.data, out.len, 0, NULL);
        AG_ASSERT(json_is_object(c) && json_array_size(json_object_get(c, "choices")) == 1);
        json_decref(c);
    }

    ag_buf_reset(&out);
    int st = 0;
    AG_ASSERT(gw_openai_error_from_anthropic(&out, 400 + (int)(size % 200), body, size, &st) == 0);
    json_t *e = json_loadb(out.data, out.len, 0, NULL);
    AG_ASSERT(json_is_object(json_object_get(e, "error")));
    json_decref(e);
    ag_buf_fini(&out);
    return 0;
}
