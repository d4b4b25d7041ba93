/* SPDX-License-Identifier: MIT
 *
 * gateway.c: routing and POST /api/generate. Checks run in the seed's order
 * (validation, limit, cache, upstream); every response carries CORS, and the
 * upstream body is exactly the seed's, with no field of ours.
 */
#include "util/platform.h"

#include <errno.h>
#include <string.h>

#include <jansson.h>

#include "gateway/gateway.h"
#include "upstream/client.h"
#include "util/buf.h"
#include "util/errors.h"
#include "util/json.h"
#include "util/log.h"
#include "util/utf.h"

#define ANTHROPIC_VERSION "2023-06-01"

struct ag_gateway {
    const ag_config_t *cfg;
    char *messages_url;
    char *api_key_header; /* "x-api-key: ..."; a secret: never logged */
};

typedef struct gw_worker {
    ag_gateway_t *gw;
    ag_upstream_t *upstream;
} gw_worker_t;

typedef struct gen_req {
    ag_req_t *req;
    gw_worker_t *gw;
    ag_upstream_xfer_t *xfer;
    json_t *root;
    ag_str_t body; /* the upstream request body, pool-owned */
} gen_req_t;

static const char msg_invalid_json[] = "Invalid JSON";
static const char msg_invalid_prompt[] = "Invalid prompt";
static const char msg_invalid_model[] = "Invalid model";
static const char msg_ai_error[] = "AI service error";
static const char msg_internal[] = "Internal error";
static const char msg_no_key[] = "Upstream not configured: set ANTHROPIC_API_KEY";

/* ---- lifecycle ------------------------------------------------------------- */

int ag_gateway_new(const ag_config_t *cfg, ag_gateway_t **out)
{
    ag_gateway_t *gw = calloc(1, sizeof(*gw));
    if (!gw)
        return -ENOMEM;
    gw->cfg = cfg;
    const char *base = cfg->upstream;
    size_t blen = strlen(base);
    while (blen > 0 && base[blen - 1] == '/')
        blen--;
    if (asprintf(&gw->messages_url, "%.*s/v1/messages", (int)blen, base) < 0) {
        free(gw);
        return -ENOMEM;
    }
    if (cfg->anthropic_api_key &&
        asprintf(&gw->api_key_header, "x-api-key: %s", cfg->anthropic_api_key) < 0) {
        free(gw->messages_url);
        free(gw);
        return -ENOMEM;
    }
    *out = gw;
    return 0;
}

void ag_gateway_free(ag_gateway_t *gw)
{
    if (!gw)
        return;
    if (gw->api_key_header) {
        /* Scrub the secret before giving the memory back. */
        explicit_bzero(gw->api_key_header, strlen(gw->api_key_header));
        free(gw->api_key_header);
    }
    free(gw->messages_url);
    free(gw);
}

static int worker_init(ag_worker_t *w, void *server_ctx, void **worker_ctx)
{
    gw_worker_t *gww = calloc(1, sizeof(*gww));
    if (!gww)
        return -ENOMEM;
    gww->gw = server_ctx;
    int rc = ag_upstream_new(ag_worker_loop(w), &gww->upstream);
    if (rc < 0) {
        free(gww);
        return rc;
    }
    *worker_ctx = gww;
    return 0;
}

static void worker_fini(ag_worker_t *w, void *worker_ctx)
{
    gw_worker_t *gww = worker_ctx;
    AG_UNUSED(w);
    if (!gww)
        return;
    ag_upstream_close(gww->upstream);
    free(gww);
}

/* ---- /api/generate --------------------------------------------------------- */

static void gen_cleanup(void *p)
{
    gen_req_t *g = p;
    /* Normally the transfer finished already; after an abort it is still live. */
    ag_upstream_cancel(g->xfer);
    g->xfer = NULL;
    if (g->root)
        json_decref(g->root);
    g->root = NULL;
}

static void gen_abort(ag_req_t *req)
{
    gen_req_t *g = req->handler_data;
    ag_upstream_cancel(g->xfer);
    g->xfer = NULL;
}

/* Joins the text of every text block: the first block need not be text. */
static int join_text_blocks(json_t *content, ag_buf_t *out)
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
static void log_upstream_failure(ag_req_t *req, const ag_upstream_response_t *resp)
{
    if (resp->error) {
        ag_log_warn("request %s: upstream failed: %s (status %d)", req->id,
                    resp->error_text ? resp->error_text : ag_strerror(resp->error), resp->status);
        return;
    }
    json_t *root = json_loadb(resp->body.ptr, resp->body.len, 0, NULL);
    json_t *err = json_object_get(root, "error");
    const char *type = json_string_value(json_object_get(err, "type"));
    const char *msg = json_string_value(json_object_get(err, "message"));
    if (type)
        ag_log_warn("request %s: upstream answered %d: %s: %.200s", req->id, resp->status, type,
                    msg ? msg : "");
    else
        ag_log_warn("request %s: upstream answered %d with %zu unparsable bytes", req->id,
                    resp->status, resp->body.len);
    json_decref(root);
}

static void gen_upstream_done(void *ctx, const ag_upstream_response_t *resp)
{
    gen_req_t *g = ctx;
    ag_req_t *req = g->req;
    g->xfer = NULL;
    req->upstream_us = resp->duration_us;
    if (resp->error || resp->status < 200 || resp->status > 299) {
        log_upstream_failure(req, resp);
        ag_req_respond_error(req, 502, msg_ai_error);
        return;
    }
    json_error_t jerr;
    json_t *root = json_loadb(resp->body.ptr, resp->body.len, 0, &jerr);
    ag_buf_t out;
    ag_buf_init(&out, 0);
    ag_buf_t text;
    ag_buf_init(&text, 0);
    json_t *usage = json_object_get(root, "usage");
    char *usage_json = NULL;
    int rc = root ? join_text_blocks(json_object_get(root, "content"), &text) : AG_EPROTO;
    if (rc == 0 && !json_is_object(usage))
        rc = AG_EPROTO;
    if (rc == 0) {
        usage_json = json_dumps(usage, JSON_COMPACT);
        if (!usage_json)
            rc = -ENOMEM;
    }
    if (rc == 0)
        rc = ag_buf_append_cstr(&out, "{\"output\":");
    if (rc == 0)
        rc = ag_json_append_string(&out, ag_str(text.data ? text.data : "", text.len));
    if (rc == 0)
        rc = ag_buf_printf(&out, ",\"usage\":%s,\"cached\":false}", usage_json);
    if (rc == 0) {
        ag_req_respond(req, 200, "application/json", ag_str(out.data, out.len));
    } else if (rc == AG_EPROTO) {
        ag_log_warn("request %s: upstream sent an unusable body (%zu bytes)%s%s", req->id,
                    resp->body.len, root ? "" : ": ", root ? "" : jerr.text);
        ag_req_respond_error(req, 502, msg_ai_error);
    } else {
        ag_log_error("request %s: building the response failed: %s", req->id, ag_strerror(rc));
        ag_req_respond_error(req, 500, msg_internal);
    }
    free(usage_json);
    json_decref(root);
    ag_buf_fini(&out);
    ag_buf_fini(&text);
}

/* The seed's upstream body, byte for byte in meaning: model, max_tokens, messages. */
static ag_str_t build_upstream_body(ag_pool_t *pool, ag_str_t model, unsigned max_tokens,
                                    ag_str_t prompt)
{
    ag_buf_t b;
    ag_buf_init(&b, 0);
    int rc = ag_buf_append_cstr(&b, "{\"model\":");
    if (rc == 0)
        rc = ag_json_append_string(&b, model);
    if (rc == 0)
        rc = ag_buf_printf(&b, ",\"max_tokens\":%u,\"messages\":[{\"role\":\"user\",\"content\":",
                           max_tokens);
    if (rc == 0)
        rc = ag_json_append_string(&b, prompt);
    if (rc == 0)
        rc = ag_buf_append_cstr(&b, "}]}");
    ag_str_t out = rc == 0 ? ag_pool_strdup_str(pool, ag_str(b.data, b.len)) : AG_STR_NULL;
    ag_buf_fini(&b);
    return out;
}

static void handle_generate(ag_req_t *req, gw_worker_t *gww)
{
    const ag_config_t *cfg = gww->gw->cfg;
    gen_req_t *g = ag_pool_alloc(&req->pool, sizeof(*g));
    memset(g, 0, sizeof(*g));
    g->req = req;
    g->gw = gww;
    req->handler_data = g;
    ag_pool_on_clear(&req->pool, gen_cleanup, g);

    g->root = json_loadb(req->body.ptr, req->body.len, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
    if (!g->root) {
        ag_req_respond_error(req, 400, msg_invalid_json);
        return;
    }
    json_t *prompt = json_object_get(g->root, "prompt");
    if (!json_is_string(prompt) || json_string_length(prompt) == 0 ||
        ag_utf16_length(json_string_value(prompt), json_string_length(prompt)) >
            cfg->prompt_max_length) {
        ag_req_respond_error(req, 400, msg_invalid_prompt);
        return;
    }
    ag_str_t model = ag_str_c(cfg->default_model);
    json_t *jmodel = json_object_get(g->root, "model");
    if (jmodel) {
        if (!json_is_string(jmodel) ||
            !ag_config_model_allowed(cfg, json_string_value(jmodel), json_string_length(jmodel))) {
            ag_req_respond_error(req, 400, msg_invalid_model);
            return;
        }
        model = ag_str(json_string_value(jmodel), json_string_length(jmodel));
    }
    req->log_model = ag_pool_strndup(&req->pool, model.ptr, model.len);

    if (!gww->gw->api_key_header) {
        ag_req_respond_error(req, 503, msg_no_key);
        return;
    }
    g->body = build_upstream_body(&req->pool, model, cfg->max_tokens,
                                  ag_str(json_string_value(prompt), json_string_length(prompt)));
    if (!g->body.ptr) {
        ag_req_respond_error(req, 500, msg_internal);
        return;
    }
    const char *headers[] = {gww->gw->api_key_header, "anthropic-version: " ANTHROPIC_VERSION,
                             "content-type: application/json", "accept: application/json"};
    ag_upstream_request_t ureq = {
        .url = gww->gw->messages_url,
        .headers = headers,
        .nheaders = AG_ARRAY_LEN(headers),
        .body = g->body.ptr,
        .body_len = g->body.len,
        .connect_timeout_ms = cfg->upstream_connect_timeout_ms,
        .timeout_ms = cfg->upstream_timeout_ms,
    };
    int rc = ag_upstream_start(gww->upstream, &ureq, gen_upstream_done, g, &g->xfer);
    if (rc < 0) {
        ag_log_error("request %s: cannot start the upstream call: %s", req->id, ag_strerror(rc));
        ag_req_respond_error(req, 502, msg_ai_error);
        return;
    }
    req->on_abort = gen_abort;
}

/* ---- routing ------------------------------------------------------------------ */

static void handle_request(ag_req_t *req)
{
    gw_worker_t *gww = ag_worker_ctx(req->worker);
    ag_str_t method = req->head.method;
    ag_str_t path = req->head.path;
    if (ag_str_eq(method, AG_STR_LIT("OPTIONS"))) {
        ag_req_add_header(req, "Access-Control-Allow-Methods", AG_STR_LIT("POST, OPTIONS"));
        ag_req_add_header(req, "Access-Control-Allow-Headers",
                          AG_STR_LIT("Content-Type, Authorization"));
        ag_req_respond(req, 200, NULL, AG_STR_NULL);
        return;
    }
    if (ag_str_eq(path, AG_STR_LIT("/api/generate")) && ag_str_eq(method, AG_STR_LIT("POST"))) {
        handle_generate(req, gww);
        return;
    }
    if (ag_str_eq(path, AG_STR_LIT("/healthz")) &&
        (ag_str_eq(method, AG_STR_LIT("GET")) || ag_str_eq(method, AG_STR_LIT("HEAD")))) {
        ag_req_respond(req, 200, "application/json", AG_STR_LIT("{\"status\":\"ok\"}"));
        return;
    }
    ag_req_respond(req, 404, "text/plain;charset=UTF-8", AG_STR_LIT("Not Found"));
}

ag_server_hooks_t ag_gateway_hooks(ag_gateway_t *gw)
{
    ag_server_hooks_t h = {
        .worker_init = worker_init,
        .worker_fini = worker_fini,
        .handle = handle_request,
        .server_ctx = gw,
    };
    return h;
}
