/* SPDX-License-Identifier: MIT
 *
 * answer.c: Anthropic's answers: the upstream JSON turned into the seed's
 * response (all text blocks joined), shared results, and failure logging.
 */
#include "util/platform.h"

#include <errno.h>
#include <string.h>

#include "gateway/answer.h"
#include "gateway/internal.h"
#include "util/errors.h"
#include "util/fmt.h"
#include "util/json.h"
#include "util/log.h"
#include "util/utf.h"

void ag__gw_result_release(shared_result_t *r)
{
    if (r && atomic_fetch_sub(&r->refs, 1) == 1)
        free(r);
}

/* ---- /api/generate: results ----------------------------------------------- */

shared_result_t *ag__gw_result_new(int status, ag_str_t body, uint32_t units, int64_t in,
                                   int64_t out)
{
    shared_result_t *r = malloc(sizeof(*r) + body.len);
    if (!r)
        return NULL;
    atomic_init(&r->refs, 1);
    r->status = status;
    r->output_units = units;
    r->input_tokens = in;
    r->output_tokens = out;
    r->upstream_us = 0;
    r->cpu_share_us = 0;
    r->upstream_status = 0;
    memset(&r->call, 0, sizeof(r->call));
    r->len = body.len;
    memcpy(r->body, body.ptr, body.len);
    return r;
}

shared_result_t *ag__gw_result_error(int status, const char *msg)
{
    ag_buf_t b;
    ag_buf_init(&b, 0);
    shared_result_t *r = NULL;
    if (ag_json_error_body(&b, msg) == 0)
        r = ag__gw_result_new(status, ag_str(b.data, b.len), 0, 0, 0);
    ag_buf_fini(&b);
    return r;
}

/* Joins the text of every text block: the first block need not be text. */
int ag__gw_join_text_blocks(json_t *content, ag_buf_t *out)
{
    if (!json_is_array(content))
        return AG_EPROTO;
    size_t i;
    json_t *block;
    json_array_foreach(content, i, block)
    {
        json_t *type = json_object_get(block, "type");
        json_t *text = json_object_get(block, "text");
        if (!json_is_string(type) || strcmp(json_string_value(type), "text") != 0)
            continue;
        if (!json_is_string(text))
            return AG_EPROTO;
        int rc = ag_buf_append(out, json_string_value(text), json_string_length(text));
        if (rc < 0)
            return rc;
    }
    return 0;
}

/* Logs why upstream failed: status and Anthropic's error type and message. */
void ag__gw_log_upstream_failure(const char *id, const ag_upstream_response_t *resp)
{
    char a[96], b[256];
    if (resp->error) {
        const char *text = resp->error_text ? resp->error_text : ag_strerror(resp->error);
        ag_log_escape(a, sizeof(a), text, strlen(text));
        ag_log_warn("request %s: upstream failed: %s (status %d)", id, a, resp->status);
        return;
    }
    json_t *root = json_loadb(resp->body.ptr, resp->body.len, 0, NULL);
    json_t *err = json_object_get(root, "error");
    json_t *type = json_object_get(err, "type"), *msg = json_object_get(err, "message");
    /* The upstream's words are escaped: a newline in them must not forge a log line. */
    if (json_is_string(type)) {
        ag_log_escape(a, sizeof(a), json_string_value(type), json_string_length(type));
        ag_log_escape(b, sizeof(b), json_is_string(msg) ? json_string_value(msg) : "",
                      json_is_string(msg) ? json_string_length(msg) : 0);
        ag_log_warn("request %s: upstream answered %d: %s: %s", id, resp->status, a, b);
    } else
        ag_log_warn("request %s: upstream answered %d with %zu unparsable bytes", id, resp->status,
                    resp->body.len);
    json_decref(root);
}

/* A stop reason fit to store and replay: Anthropic's are short snake_case
 * words; anything else (long, spaces, quotes) becomes end_turn. */
const char *ag__gw_safe_stop(const char *stop)
{
    size_t n = stop ? strlen(stop) : 0;
    if (n == 0 || n > 40)
        return "end_turn";
    for (size_t i = 0; i < n; i++) {
        if (!((stop[i] >= 'a' && stop[i] <= 'z') || stop[i] == '_'))
            return "end_turn";
    }
    return stop;
}

int64_t ag__gw_usage_int(json_t *usage, const char *name)
{
    json_t *v = json_object_get(usage, name);
    return json_is_integer(v) ? json_integer_value(v) : 0;
}

/* Tokenizes JSON with a caller's small token array, or a heap one when the
 * document needs more. @return token count or an error; *heap (to free) is
 * set when the heap was used. */
#define JSON_MAX_TOKENS (1u << 20)
int ag__gw_jparse(ag_str_t text, ag_jtok_t *stack, size_t nstack, ag_jtok_t **toks,
                  ag_jtok_t **heap)
{
    *heap = NULL;
    *toks = stack;
    int n = ag_jtok_parse(text.ptr, text.len, stack, nstack, NULL);
    if (n != AG_ETOOBIG || text.len < nstack)
        return n;
    size_t cap = text.len + 1 < JSON_MAX_TOKENS ? text.len + 1 : JSON_MAX_TOKENS;
    *heap = malloc(cap * sizeof(ag_jtok_t));
    if (!*heap)
        return -ENOMEM;
    *toks = *heap;
    return ag_jtok_parse(text.ptr, text.len, *heap, cap, NULL);
}

static int64_t jtok_member_int(const char *text, const ag_jtok_t *toks, int obj, const char *key)
{
    int i = ag_jtok_object_get(text, toks, obj, key);
    int64_t v = 0;
    if (i < 0 || ag_jtok_int64(text, &toks[i], &v) != 0)
        return 0;
    return v;
}

/* Appends the usage object as upstream sent it when it reads back under the
 * cache's JSON reader; our tokenizer also takes integers past 64 bits and lone
 * surrogate escapes, which jansson refuses, and a cached entry must replay.
 * Such a usage becomes the two counts we read from it. */
/* True when raw (already accepted by the tokenizer) holds none of what jansson
 * may refuse: no escape, no byte past ASCII, no fraction or exponent, no digit
 * run long enough to pass 64 bits. Anthropic's usage objects always pass, and
 * parsing one with jansson cost more than the rest of the answer's handling. */
static bool usage_plain(ag_str_t raw)
{
    unsigned digits = 0;
    for (size_t i = 0; i < raw.len; i++) {
        unsigned char c = (unsigned char)raw.ptr[i];
        if (c == '\\' || c >= 0x80 || c == '.')
            return false;
        if (c >= '0' && c <= '9') {
            if (++digits > 18)
                return false;
            continue;
        }
        if ((c == 'e' || c == 'E') && digits)
            return false;
        digits = 0;
    }
    return true;
}

static int append_usage(ag_buf_t *out, ag_str_t raw, int64_t in, int64_t outt)
{
    if (usage_plain(raw))
        return ag_buf_append_str(out, raw);
    json_t *check = json_loadb(raw.ptr, raw.len, JSON_ALLOW_NUL, NULL);
    json_decref(check);
    if (check)
        return ag_buf_append_str(out, raw);
    return ag_buf_printf(out, "{\"input_tokens\":%lld,\"output_tokens\":%lld}", (long long)in,
                         (long long)outt);
}

/* Appends the text of every text block of a content array: the first block
 * need not be text (the seed read content[0].text and broke on tool use). */
static int jtok_join_text(const char *text, const ag_jtok_t *toks, int content, ag_buf_t *out)
{
    if (content < 0 || toks[content].type != AG_JT_ARRAY)
        return AG_EPROTO;
    int i = content + 1;
    for (uint32_t k = 0; k < toks[content].size; k++, i = (int)toks[i].next) {
        if (toks[i].type != AG_JT_OBJECT)
            continue;
        int type = ag_jtok_object_get(text, toks, i, "type");
        if (type < 0 || !ag_jtok_str_eq(text, &toks[type], "text"))
            continue;
        int t = ag_jtok_object_get(text, toks, i, "text");
        if (t < 0 || toks[t].type != AG_JT_STRING)
            return AG_EPROTO;
        int rc = ag_jtok_str_decode(text, &toks[t], out);
        if (rc < 0)
            return rc;
    }
    return 0;
}

/* Turns an upstream answer into the seed's response. On success, *cache_value
 * (if given) gets what the cache stores: "units in out stop\n" then the body
 * without "cached". Never NULL unless out of memory. */
shared_result_t *ag__gw_result_from_upstream(const char *id, const ag_upstream_response_t *resp,
                                             ag_buf_t *cache_value)
{
    if (resp->error || resp->status < 200 || resp->status > 299) {
        ag__gw_log_upstream_failure(id, resp);
        shared_result_t *e = ag__gw_result_error(502, MSG_AI_ERROR);
        if (e) {
            e->upstream_us = resp->duration_us;
            e->upstream_status = resp->status;
        }
        return e;
    }
    const char *t = resp->body.ptr;
    ag_jtok_t stack[128], *toks, *heap;
    int n = ag__gw_jparse(resp->body, stack, AG_ARRAY_LEN(stack), &toks, &heap);
    ag_buf_t out, text, stop;
    ag_buf_init(&out, 0);
    ag_buf_init(&text, 0);
    ag_buf_init(&stop, 64);
    shared_result_t *r = NULL;
    int rc = n > 0 && toks[0].type == AG_JT_OBJECT ? 0 : AG_EPROTO;
    int usage = rc == 0 ? ag_jtok_object_get(t, toks, 0, "usage") : -1;
    if (rc == 0)
        rc = jtok_join_text(t, toks, ag_jtok_object_get(t, toks, 0, "content"), &text);
    if (rc == 0 && (usage < 0 || toks[usage].type != AG_JT_OBJECT))
        rc = AG_EPROTO;
    int64_t in = 0, outt = 0;
    if (rc == 0) {
        in = jtok_member_int(t, toks, usage, "input_tokens");
        outt = jtok_member_int(t, toks, usage, "output_tokens");
        int sr = ag_jtok_object_get(t, toks, 0, "stop_reason");
        if (sr >= 0 && toks[sr].type == AG_JT_STRING && ag_jtok_str_decode(t, &toks[sr], &stop) < 0)
            ag_buf_reset(&stop);
        rc = ag_buf_append_cstr(&out, "{\"output\":");
    }
    if (rc == 0)
        rc = ag_json_append_string(&out, ag_str(text.data ? text.data : "", text.len));
    if (rc == 0)
        rc = ag_buf_append_cstr(&out, ",\"usage\":");
    if (rc == 0)
        rc = append_usage(&out, ag_jtok_raw(t, &toks[usage]), in, outt);
    uint32_t units = (uint32_t)ag_utf16_length(text.data ? text.data : "", text.len);
    if (rc == 0 && cache_value) {
        rc = ag_buf_printf(cache_value, "%u %lld %lld %s\n", units, (long long)in, (long long)outt,
                           ag__gw_safe_stop(stop.len ? ag_buf_cstr(&stop) : NULL));
        if (rc == 0)
            rc = ag_buf_append(cache_value, out.data, out.len);
        if (rc == 0)
            rc = ag_buf_append(cache_value, "}", 1);
    }
    if (rc == 0)
        rc = ag_buf_append_cstr(&out, ",\"cached\":false}");
    if (rc == 0) {
        r = ag__gw_result_new(200, ag_str(out.data, out.len), units, in, outt);
    } else if (rc == AG_EPROTO || n < 0) {
        ag_log_warn("request %s: upstream sent an unusable body (%zu bytes)", id, resp->body.len);
        r = ag__gw_result_error(502, MSG_AI_ERROR);
    } else {
        ag_log_error("request %s: building the response failed: %s", id, ag_strerror(rc));
        r = ag__gw_result_error(500, MSG_INTERNAL);
    }
    if (cache_value && (!r || r->status != 200))
        ag_buf_reset(cache_value);
    if (r) {
        r->upstream_us = resp->duration_us;
        r->upstream_status = resp->status;
    }
    free(heap);
    ag_buf_fini(&out);
    ag_buf_fini(&text);
    ag_buf_fini(&stop);
    return r;
}

void ag__gw_respond_result(ag_req_t *req, const shared_result_t *r)
{
    if (!r) {
        ag_req_respond_error(req, 500, MSG_INTERNAL);
        return;
    }
    req->ai.upstream_us = r->upstream_us;
    if (r->call.refusal) {
        char num[24];
        ag_req_add_header(req, "Retry-After", ag_str(num, ag_fmt_u64(num, r->call.retry_after_s)));
    }
    ag_req_respond(req, r->status, "application/json", ag_str(r->body, r->len));
}

/* The seed's upstream body, byte for byte in meaning: model, max_tokens, messages. */
ag_str_t ag__gw_build_upstream_body(ag_pool_t *pool, ag_str_t model, unsigned max_tokens,
                                    ag_str_t prompt)
{
    ag_buf_t b;
    ag_buf_init(&b, 0);
    int rc = ag_buf_append_cstr(&b, "{\"model\":");
    if (rc == 0)
        rc = ag_json_append_string(&b, model);
    char num[24];
    if (rc == 0)
        rc = ag_buf_append_cstr(&b, ",\"max_tokens\":");
    if (rc == 0)
        rc = ag_buf_append(&b, num, ag_fmt_u64(num, max_tokens));
    if (rc == 0)
        rc = ag_buf_append_cstr(&b, ",\"messages\":[{\"role\":\"user\",\"content\":");
    if (rc == 0)
        rc = ag_json_append_string(&b, prompt);
    if (rc == 0)
        rc = ag_buf_append_cstr(&b, "}]}");
    ag_str_t out = rc == 0 ? ag_pool_strdup_str(pool, ag_str(b.data, b.len)) : AG_STR_NULL;
    ag_buf_fini(&b);
    return out;
}

/* The UTF-16 length of the last user turn's text, the seed's promptLength. */
uint32_t ag__gw_last_user_units(json_t *root)
{
    json_t *msgs = json_object_get(root, "messages");
    size_t n = json_array_size(msgs);
    json_t *last = n ? json_array_get(msgs, n - 1) : NULL;
    json_t *content = json_object_get(last, "content");
    if (json_is_string(content))
        return (uint32_t)ag_utf16_length(json_string_value(content), json_string_length(content));
    ag_buf_t text;
    ag_buf_init(&text, 0);
    ag__gw_join_text_blocks(content, &text);
    uint32_t units = (uint32_t)ag_utf16_length(text.data ? text.data : "", text.len);
    ag_buf_fini(&text);
    return units;
}
