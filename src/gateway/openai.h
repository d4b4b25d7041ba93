/* SPDX-License-Identifier: MIT
 *
 * openai.h: OpenAI's Chat Completions wire format translated to and from
 * Anthropic's Messages API, following Anthropic's own OpenAI SDK compatibility
 * layer: requests, answers, event streams (as chat.completion.chunk lines),
 * errors and model lists. Pure translation: no I/O, no request, no route; a
 * route (or a test) feeds it bytes and sends what comes out. Every function
 * is reentrant; a stream translator belongs to one stream on one thread.
 */
#ifndef AG_GATEWAY_OPENAI_H
#define AG_GATEWAY_OPENAI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "upstream/sse.h"
#include "util/buf.h"

/* ---- errors -------------------------------------------------------------------------- */

/** Why a request was refused, in OpenAI's terms. Strings are static or inline. */
typedef struct gw_openai_error {
    int status;        /* HTTP status (400) */
    const char *type;  /* OpenAI's error.type ("invalid_request_error"); static */
    const char *code;  /* OpenAI's error.code, or NULL for null; static */
    char param[96];    /* error.param: the field at fault ("messages[2].content"), "" for null */
    char message[320]; /* error.message */
} gw_openai_error_t;

/**
 * Appends OpenAI's error body `{"error":{"message","type","param","code"}}` to out.
 * @param param, code NULL or "" give JSON null. Every string is escaped.
 * @return 0, or out's error (AG_ETOOBIG, -ENOMEM).
 */
int gw_openai_error_body(ag_buf_t *out, const char *message, const char *type, const char *param,
                         const char *code);

/**
 * Maps an Anthropic error (its error.type and HTTP status) to OpenAI's: the status a client
 * of OpenAI's API expects (529 overloaded becomes 503, as OpenAI answers overload; every other
 * status stays), error.type and error.code (static strings; code may be NULL). An unknown or
 * NULL type is mapped by status: under 500 invalid_request_error, else server_error.
 *
 *   invalid_request_error 400  -> invalid_request_error
 *   authentication_error  401  -> invalid_request_error, code invalid_api_key
 *   billing_error         402  -> insufficient_quota, code insufficient_quota
 *   permission_error      403  -> invalid_request_error, code permission_denied
 *   not_found_error       404  -> invalid_request_error, code not_found
 *   request_too_large     413  -> invalid_request_error, code request_too_large
 *   rate_limit_error      429  -> rate_limit_error, code rate_limit_exceeded
 *   api_error             500  -> server_error
 *   timeout_error         504  -> server_error, code timeout
 *   overloaded_error      529  -> server_error, code overloaded, status 503
 */
void gw_openai_map_error(const char *anthropic_type, int status, int *status_out,
                         const char **type_out, const char **code_out);

/**
 * OpenAI's error body for an error given in Anthropic's terms (what gw_protocol_t's
 * respond_error receives): gw_openai_map_error() then gw_openai_error_body() with param null.
 * @param status_out the status to answer with.
 */
int gw_openai_error_from_type(ag_buf_t *out, int status, const char *anthropic_type,
                              const char *message, int *status_out);

/**
 * Translates an upstream error answer (`{"type":"error","error":{"type","message"}}`, any
 * status >= 400) into OpenAI's error body; a body that is not Anthropic's error shape gets a
 * generic message for its status.
 * @param status_out the status to answer with.
 */
int gw_openai_error_from_anthropic(ag_buf_t *out, int status, const char *body, size_t len,
                                   int *status_out);

/* ---- requests ----------------------------------------------------------------------- */

/** What the translation learnt about the request, for the route's own steps. */
typedef struct gw_openai_request {
    bool stream;         /* "stream": true */
    bool include_usage;  /* "stream_options": {"include_usage": true} (only with stream) */
    bool has_tools;      /* the upstream body carries tools */
    unsigned max_tokens; /* the upstream body's max_tokens */
    char model[257];     /* the upstream body's model (at most 256 bytes), NUL-terminated */
} gw_openai_request_t;

/**
 * Translates an OpenAI chat.completions request body into an Anthropic Messages request body,
 * as Anthropic's compatibility layer documents:
 *
 *  - system and developer messages, wherever they are, become `system`: their texts joined
 *    with "\n"; user and assistant messages keep their order; text parts stay text blocks;
 *    image_url parts become image blocks (a `data:image/...;base64,` URL a base64 source,
 *    an http(s) URL a url source); input_audio parts are dropped; assistant tool_calls become
 *    tool_use blocks (arguments parsed into an object); tool messages become tool_result
 *    blocks, consecutive ones merged into one user turn;
 *  - max_completion_tokens, else max_tokens, else default_max_tokens becomes max_tokens;
 *    temperature (0 to 2) is capped at 1; top_p; stop (a string or a list; whitespace-only
 *    entries dropped) becomes stop_sequences; stream; tools (function tools: parameters become
 *    input_schema); tool_choice (none/auto/required/a named function) and
 *    parallel_tool_calls false (disable_parallel_tool_use); `thinking` is passed on as given;
 *  - n must be 1; every other field (logprobs, metadata, response_format, seed, user, ...) is
 *    accepted and ignored: nothing the client sent reaches the upstream unless listed here.
 *
 * @param body, len the client's body; borrowed.
 * @param default_model used when the body has no model (NULL: model is required).
 * @param default_max_tokens used when the body sets neither max token field (0: required).
 * @param out receives the upstream body (compact JSON; appended). Owned by the caller.
 * @param info may be NULL; filled on success.
 * @param err filled when the request is refused.
 * @return 0; AG_EINVALID when the request is refused (err says why, in OpenAI's terms, with
 *         status 400); -ENOMEM or out's error.
 */
int gw_openai_request_to_anthropic(const char *body, size_t len, const char *default_model,
                                   unsigned default_max_tokens, ag_buf_t *out,
                                   gw_openai_request_t *info, gw_openai_error_t *err);

/* ---- answers ------------------------------------------------------------------------ */

/** OpenAI's finish_reason for Anthropic's stop_reason: end_turn, stop_sequence, pause_turn
 *  -> stop; max_tokens, model_context_window_exceeded -> length; tool_use -> tool_calls;
 *  refusal -> content_filter; anything else (NULL included) -> stop. Static string. */
const char *gw_openai_finish_reason(const char *stop_reason);

/**
 * Translates an Anthropic Message (a 200 answer) into OpenAI's chat.completion: the id is the
 * message's, choices[0].message holds the text blocks concatenated (null when there are none)
 * and a tool call per tool_use block (arguments: the input as compact JSON); thinking and other
 * blocks are left out. usage: prompt_tokens = input + cache read + cache creation tokens (all
 * the prompt, as OpenAI counts it), prompt_tokens_details.cached_tokens = cache read tokens,
 * completion_tokens = output tokens, total_tokens their sum.
 * @param created Unix seconds for `created`.
 * @param fallback_model used when the answer names no model (may be NULL).
 * @return 0; AG_EPROTO when body is not a Message; -ENOMEM or out's error.
 */
int gw_openai_response_from_anthropic(const char *body, size_t len, int64_t created,
                                      const char *fallback_model, ag_buf_t *out);

/** A text-only answer (from the cache: text, stop reason and usage only). */
typedef struct gw_openai_text_answer {
    const char *id;    /* "msg_..." or any id; NUL-terminated */
    const char *model; /* NUL-terminated */
    const char *text;  /* UTF-8, text_len bytes */
    size_t text_len;
    const char *stop_reason; /* Anthropic's; NULL: end_turn */
    int64_t input_tokens, output_tokens, cache_read_tokens, cache_creation_tokens;
} gw_openai_text_answer_t;

/** chat.completion for a text-only answer, the same shape gw_openai_response_from_anthropic()
 *  gives. @return 0 or out's error. */
int gw_openai_completion_from_text(const gw_openai_text_answer_t *a, int64_t created,
                                   ag_buf_t *out);

/** The whole chunk stream for a text-only answer: role chunk, one content chunk, finish chunk,
 *  usage chunk when include_usage, `data: [DONE]`. @return 0 or out's error. */
int gw_openai_stream_from_text(const gw_openai_text_answer_t *a, int64_t created,
                               bool include_usage, ag_buf_t *out);

/* ---- streams ------------------------------------------------------------------------ */

/**
 * Follows an Anthropic event stream and writes OpenAI's: `data: {chat.completion.chunk}\n\n`
 * lines, no event names, ending with `data: [DONE]\n\n`.
 *
 *   message_start              -> {"delta":{"role":"assistant","content":""}}
 *   text_delta                 -> {"delta":{"content":TEXT}}
 *   content_block_start tool   -> {"delta":{"tool_calls":[{"index":K,"id","type":"function",
 *                                  "function":{"name","arguments":""}}]}}
 *   input_json_delta           -> {"delta":{"tool_calls":[{"index":K,"function":{"arguments"}}]}}
 *   message_stop               -> {"delta":{},"finish_reason":R}, then (include_usage) a chunk
 *                                 with "choices":[] and "usage", then data: [DONE]
 *   error                      -> data: {"error":{"message","type","param":null,"code"}}; the
 *                                 stream is over (no [DONE], as Anthropic's ends after its error)
 *   ping, thinking, signatures, unknown events -> nothing
 *
 * K counts tool calls (0, 1, ...), not content blocks. Every chunk carries the message's id,
 * `created` and model. Events after the end are ignored.
 */
typedef struct gw_openai_stream {
    /* private */
    ag_sse_parser_t _sse;
    ag_buf_t *_out; /* where the current feed appends */
    ag_buf_t _id;
    ag_buf_t _model;
    int64_t _created;
    int64_t _in, _out_tokens, _cache_read, _cache_creation;
    char _stop[40];
    int _tool_next; /* the index the next tool call gets */
    int _cur_tool;  /* the tool call index of the open content block, -1 when not a tool */
    bool _include_usage;
    bool _started; /* the role chunk was written */
    bool _ended;   /* [DONE] or an error chunk was written */
    bool _errored; /* it ended with an error chunk */
} gw_openai_stream_t;

/**
 * Prepares a translator; no allocation yet.
 * @param created Unix seconds for every chunk's `created`.
 * @param include_usage the client's stream_options.include_usage.
 * @param fallback_model the model chunks name until message_start names one (NULL: "").
 */
void gw_openai_stream_init(gw_openai_stream_t *s, int64_t created, bool include_usage,
                           const char *fallback_model);

/**
 * Feeds upstream SSE bytes, in any chunking; appends the chunks of every event completed by
 * them to out (a partial event waits for its end).
 * @return 0; -ENOMEM or out's error; AG_ETOOBIG when one event exceeds 1 MiB.
 */
int gw_openai_stream_feed(gw_openai_stream_t *s, const char *data, size_t len, ag_buf_t *out);

/** One already-framed event (for a caller that runs its own SSE parser); appends its chunks. */
int gw_openai_stream_event(gw_openai_stream_t *s, const ag_sse_event_t *ev, ag_buf_t *out);

/**
 * The upstream stream ended (or failed): when the translator has not ended yet, appends an
 * error chunk with `message` (type server_error) so the client's SDK raises, instead of a
 * stream that stops without a finish_reason. Nothing when it already ended.
 * @param message NULL: "Upstream connection failed".
 */
int gw_openai_stream_finish(gw_openai_stream_t *s, const char *message, ag_buf_t *out);

/** True once [DONE] or an error chunk was written. */
bool gw_openai_stream_ended(const gw_openai_stream_t *s);
/** True when the stream ended with an error chunk. */
bool gw_openai_stream_errored(const gw_openai_stream_t *s);

void gw_openai_stream_fini(gw_openai_stream_t *s);

/* ---- GET /v1/models ----------------------------------------------------------------- */

/** OpenAI's list: {"object":"list","data":[{"id","object":"model","created","owned_by":
 *  "anthropic"},...]}, in the order given. @return 0 or out's error. */
int gw_openai_models_body(ag_buf_t *out, const char *const *ids, size_t n, int64_t created);

/** Anthropic's list: {"data":[{"type":"model","id","display_name","created_at"},...],
 *  "has_more":false,"first_id","last_id"} (null ids when empty); display_name is the id.
 *  @param created_at RFC 3339 ("2025-01-01T00:00:00Z"). @return 0 or out's error. */
int gw_anthropic_models_body(ag_buf_t *out, const char *const *ids, size_t n,
                             const char *created_at);

#endif
