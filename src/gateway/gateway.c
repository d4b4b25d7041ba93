/* SPDX-License-Identifier: MIT
 *
 * gateway.c: routing and POST /api/generate. Checks run in the seed's order
 * (validation, limit, cache, upstream); every response carries CORS, and the
 * upstream body is exactly the seed's, with no field of ours.
 */
#include "util/platform.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>

#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/sha.h>

#include "gateway/client_ip.h"
#include "gateway/gateway.h"
#include "limit/limiter.h"
#include "store/kv.h"
#include "store/objstore.h"
#include "store/usage_log.h"
#include "upstream/client.h"
#include "upstream/sse.h"
#include "util/buf.h"
#include "util/errors.h"
#include "util/fmt.h"
#include "util/json.h"
#include "util/jtok.h"
#include "util/log.h"
#include "util/utf.h"

#define ANTHROPIC_VERSION "2023-06-01"

#define FLIGHT_SHARDS 64
#define MAX_WORKERS 256

typedef struct gen_req gen_req_t;
typedef struct gw_worker gw_worker_t;

/* An answer shared by every request that waited on one upstream call. */
typedef struct shared_result {
    atomic_int refs;
    int status;
    uint32_t output_units;
    int64_t input_tokens, output_tokens;
    int64_t upstream_us; /* how long the upstream call took */
    size_t len;
    char body[]; /* the full response body */
} shared_result_t;

/* A request waiting on an in-flight upstream call, possibly on another worker. */
typedef struct waiter {
    struct waiter *next;
    unsigned worker;
    gen_req_t *g;         /* valid while !cancelled; touched only by `worker`'s thread */
    shared_result_t *res; /* set by the delivering thread */
    bool cancelled;
} waiter_t;

/* One upstream call for a cache key; its waiters share the answer. */
typedef struct flight {
    struct flight *next;
    unsigned char key[SHA256_DIGEST_LENGTH];
    waiter_t *waiters;
} flight_t;

typedef struct flight_shard {
    pthread_mutex_t lock;
    flight_t *head;
} flight_shard_t;

/* Cross-thread delivery: a locked list per worker, drained by an async handle. */
typedef struct mailbox {
    pthread_mutex_t lock;
    waiter_t *items;
    uv_async_t *async; /* NULL once the worker has stopped */
} mailbox_t;

typedef struct named_limiter {
    char *name; /* the namespace: a binding's namespace_id, or the route */
    ag_limiter_t *lim;
    bool shared; /* lim belongs to another route's limiter */
    unsigned limit, period_s;
} named_limiter_t;

struct ag_gateway {
    const ag_config_t *cfg;
    char *messages_url;
    char *api_key_header;            /* "x-api-key: ..."; a secret: never logged */
    const char *generate_headers[5]; /* the seed's upstream headers, NULL-terminated */
    ag_trusted_t *trusted;
    named_limiter_t generate_limit;
    named_limiter_t messages_limit;
    ag_kv_t *cache;
    ag_objstore_t *log_bucket;
    atomic_uint fills_pending; /* cache fills queued on the thread pool */
    atomic_ullong fills_skipped;
    ag_usage_log_t *usage_log;
    flight_shard_t flights[FLIGHT_SHARDS];
    mailbox_t mailboxes[MAX_WORKERS];
};

/* The upstream call behind a flight, owned by the worker that started it. */
typedef struct fetch {
    struct fetch *prev, *next;
    gw_worker_t *gww;
    unsigned char key[SHA256_DIGEST_LENGTH];
    char kv_key[8 + 2 * SHA256_DIGEST_LENGTH + 1];
    char *body; /* upstream request body */
    size_t body_len;
    bool fill; /* store the answer in the cache */
    ag_upstream_xfer_t *xfer;
} fetch_t;

struct gw_worker {
    ag_gateway_t *gw;
    ag_upstream_t *upstream;
    unsigned index;
    uv_loop_t *loop;
    uv_async_t mail;
    uv_timer_t sweep; /* worker 0 only: reclaims expired cache entries */
    uv_work_t sweep_work;
    bool sweeping;
    bool closed;
    fetch_t *fetches;
};

/* What the usage log records of one AI request; filled as the request goes. */
typedef struct usage {
    ag_req_t *req;
    ag_usage_log_t *log; /* NULL: not logged (failed validation, or logging off) */
    uint32_t prompt_units, output_units;
    int64_t in, out, cache_create, cache_read;
    bool cached, stream;
    const char *outcome; /* streams: ok, clientDisconnected, upstreamError */
} usage_t;

struct gen_req {
    usage_t usage;
    ag_req_t *req;
    gw_worker_t *gw;
    ag_upstream_xfer_t *xfer; /* uncoalesced call (no-store) */
    waiter_t *waiter;         /* coalesced call */
    json_t *root;
    ag_str_t body; /* the upstream request body, pool-owned */
    unsigned char key[SHA256_DIGEST_LENGTH];
};

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
    gw->generate_headers[0] = gw->api_key_header;
    gw->generate_headers[1] = "anthropic-version: " ANTHROPIC_VERSION;
    gw->generate_headers[2] = "content-type: application/json";
    gw->generate_headers[3] = "accept: application/json";
    for (unsigned i = 0; i < FLIGHT_SHARDS; i++)
        pthread_mutex_init(&gw->flights[i].lock, NULL);
    for (unsigned i = 0; i < MAX_WORKERS; i++)
        pthread_mutex_init(&gw->mailboxes[i].lock, NULL);
    const char *bad = NULL;
    int rc = ag_trusted_new(cfg->trusted_proxies, &gw->trusted, &bad);
    if (rc < 0) {
        ag_log_error("aigate.trusted_proxies: '%s' is not an address or CIDR", bad ? bad : "?");
        goto fail;
    }
    /* Each route's limit: numbers from [aigate], or a named ratelimit binding. */
    for (int i = 0; i < 2; i++) {
        named_limiter_t *nl = i == 0 ? &gw->generate_limit : &gw->messages_limit;
        const char *bname =
            i == 1 && cfg->messages_rate_limit_binding && *cfg->messages_rate_limit_binding
                ? cfg->messages_rate_limit_binding
                : cfg->rate_limit_binding;
        const ag_config_ratelimit_t *rl = bname && *bname ? ag_config_ratelimit(cfg, bname) : NULL;
        unsigned limit =
            i == 1 && cfg->messages_rate_limit ? cfg->messages_rate_limit : cfg->rate_limit;
        unsigned period = i == 1 && cfg->messages_rate_period_s ? cfg->messages_rate_period_s
                                                                : cfg->rate_period_s;
        nl->limit = rl ? rl->limit : limit;
        nl->period_s = rl ? rl->period_s : period;
        nl->name = strdup(rl       ? rl->namespace_id
                          : i == 0 ? "route:/api/generate"
                                   : "route:/v1/messages");
        if (!nl->name) {
            rc = -ENOMEM;
            goto fail;
        }
        /* Bindings with one namespace_id share counters, as on Workers. */
        if (i == 1 && strcmp(nl->name, gw->generate_limit.name) == 0) {
            nl->lim = gw->generate_limit.lim;
            nl->shared = true;
            nl->limit = gw->generate_limit.limit;
            nl->period_s = gw->generate_limit.period_s;
            continue;
        }
        ag_limiter_config_t lc = {
            .limit = nl->limit, .period_s = nl->period_s, .max_entries = 1u << 20};
        rc = ag_limiter_new(&lc, &nl->lim);
        if (rc < 0) {
            ag_log_error("cannot create the rate limiter: %s", ag_strerror(rc));
            goto fail;
        }
    }
    if (cfg->cache) {
        ag_kv_options_t ko = {.no_sync = true}; /* a cache: a lost entry is only a miss */
        rc = ag_kv_open_namespace(cfg->data_dir, cfg->cache_binding, &ko, &gw->cache);
        if (rc < 0) {
            ag_log_error("cannot open the cache store %s/kv/%s: %s", cfg->data_dir,
                         cfg->cache_binding, ag_kv_strerror(rc));
            goto fail;
        }
    }
    if (cfg->usage_log) {
        const char *bucket = ag_config_r2_bucket(cfg, cfg->usage_log_binding);
        if (!bucket)
            bucket = "usage-logs";
        rc = ag_objstore_open_bucket(cfg->data_dir, bucket, true, &gw->log_bucket);
        if (rc < 0) {
            ag_log_error("cannot open the usage-log bucket %s/r2/%s: %s", cfg->data_dir, bucket,
                         ag_objstore_strerror(rc));
            goto fail;
        }
        ag_price_t *prices = calloc(cfg->nprices ? cfg->nprices : 1, sizeof(*prices));
        for (size_t i = 0; prices && i < cfg->nprices; i++)
            prices[i] = (ag_price_t){.model = cfg->prices[i].model,
                                     .input_per_mtok = cfg->prices[i].input_per_mtok,
                                     .output_per_mtok = cfg->prices[i].output_per_mtok};
        ag_usage_log_options_t lo = {
            .store = gw->log_bucket,
            .flush_interval_ms = cfg->usage_log_flush_ms,
            .prices = prices,
            .nprices = prices ? cfg->nprices : 0,
        };
        rc = ag_usage_log_open(&lo, &gw->usage_log);
        free(prices);
        if (rc < 0) {
            ag_log_error("cannot start the usage log: %s", ag_usage_log_strerror(rc));
            goto fail;
        }
    }
    *out = gw;
    return 0;
fail:
    ag_gateway_free(gw);
    return rc < 0 ? rc : AG_EBADCONFIG;
}

static void result_release(shared_result_t *r)
{
    if (r && atomic_fetch_sub(&r->refs, 1) == 1)
        free(r);
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
    ag_trusted_free(gw->trusted);
    ag_limiter_free(gw->generate_limit.lim);
    free(gw->generate_limit.name);
    if (!gw->messages_limit.shared)
        ag_limiter_free(gw->messages_limit.lim);
    free(gw->messages_limit.name);
    ag_kv_close(gw->cache);
    /* Every accepted entry reaches the bucket before we exit: close flushes. */
    ag_usage_log_close(gw->usage_log);
    ag_usage_log_free(gw->usage_log);
    ag_objstore_close(gw->log_bucket);
    /* Deliveries that arrived after their worker stopped: nobody waits any more. */
    for (unsigned i = 0; i < MAX_WORKERS; i++) {
        waiter_t *w = gw->mailboxes[i].items;
        while (w) {
            waiter_t *next = w->next;
            result_release(w->res);
            free(w);
            w = next;
        }
        pthread_mutex_destroy(&gw->mailboxes[i].lock);
    }
    for (unsigned i = 0; i < FLIGHT_SHARDS; i++)
        pthread_mutex_destroy(&gw->flights[i].lock);
    free(gw);
}

static void on_mail(uv_async_t *a);
static void sha256_thread_done(void);
static void flight_deliver(gw_worker_t *gww, const unsigned char *key, shared_result_t *res);

/* Expired entries are invisible at once (the store checks on read); this
 * gives their space back, off the loop thread, a bounded batch at a time. */
#define SWEEP_INTERVAL_MS 60000
#define SWEEP_BATCH 10000

static void sweep_work(uv_work_t *w)
{
    gw_worker_t *gww = w->data;
    int n = ag_kv_sweep(gww->gw->cache, SWEEP_BATCH);
    if (n > 0)
        ag_log_debug("cache sweep: %d expired entries reclaimed", n);
}

static void sweep_done(uv_work_t *w, int status)
{
    gw_worker_t *gww = w->data;
    AG_UNUSED(status);
    gww->sweeping = false;
    if (gww->closed)
        free(gww); /* the worker closed while this ran */
}

static void on_sweep_timer(uv_timer_t *t)
{
    gw_worker_t *gww = t->data;
    if (gww->sweeping)
        return;
    gww->sweeping = true;
    gww->sweep_work.data = gww;
    if (uv_queue_work(gww->loop, &gww->sweep_work, sweep_work, sweep_done) < 0)
        gww->sweeping = false;
}

static int worker_init(ag_worker_t *w, void *server_ctx, void **worker_ctx)
{
    if (ag_worker_index(w) >= MAX_WORKERS)
        return AG_EINVALID;
    gw_worker_t *gww = calloc(1, sizeof(*gww));
    if (!gww)
        return -ENOMEM;
    gww->gw = server_ctx;
    gww->index = ag_worker_index(w);
    gww->loop = ag_worker_loop(w);
    int rc = ag_upstream_new(ag_worker_loop(w), &gww->upstream);
    if (rc < 0) {
        free(gww);
        return rc;
    }
    uv_async_init(ag_worker_loop(w), &gww->mail, on_mail);
    gww->mail.data = gww;
    uv_timer_init(ag_worker_loop(w), &gww->sweep);
    gww->sweep.data = gww;
    if (gww->index == 0 && gww->gw->cache) {
        uv_timer_start(&gww->sweep, on_sweep_timer, SWEEP_INTERVAL_MS, SWEEP_INTERVAL_MS);
        uv_unref((uv_handle_t *)&gww->sweep);
    }
    mailbox_t *mb = &gww->gw->mailboxes[gww->index];
    pthread_mutex_lock(&mb->lock);
    mb->async = &gww->mail;
    pthread_mutex_unlock(&mb->lock);
    *worker_ctx = gww;
    return 0;
}

static void on_mail_closed(uv_handle_t *h)
{
    gw_worker_t *gww = h->data;
    gww->closed = true;
    if (!gww->sweeping)
        free(gww);
}

static void on_sweep_closed(uv_handle_t *h)
{
    AG_UNUSED(h);
}

static void worker_fini(ag_worker_t *w, void *worker_ctx)
{
    gw_worker_t *gww = worker_ctx;
    AG_UNUSED(w);
    if (!gww)
        return;
    mailbox_t *mb = &gww->gw->mailboxes[gww->index];
    pthread_mutex_lock(&mb->lock);
    mb->async = NULL;
    pthread_mutex_unlock(&mb->lock);
    /* Calls still in flight (a forced shutdown): their waiters elsewhere get a 502. */
    while (gww->fetches) {
        fetch_t *f = gww->fetches;
        gww->fetches = f->next;
        ag_upstream_cancel(f->xfer);
        flight_deliver(gww, f->key, NULL);
        free(f->body);
        free(f);
    }
    ag_upstream_close(gww->upstream);
    uv_close((uv_handle_t *)&gww->sweep, on_sweep_closed);
    uv_close((uv_handle_t *)&gww->mail, on_mail_closed);
    sha256_thread_done();
}

/* ---- usage log ------------------------------------------------------------------- */

static void usage_record(void *p)
{
    usage_t *u = p;
    ag_req_t *req = u->req;
    if (!u->log)
        return;
    ag_usage_entry_t e;
    memset(&e, 0, sizeof(e));
    const char *model = req->log_model ? req->log_model : "";
    ag_usage_entry_set_str(e.model, sizeof(e.model), model, strlen(model));
    ag_usage_entry_set_str(e.client, sizeof(e.client), req->client_ip, strlen(req->client_ip));
    ag_usage_entry_set_str(e.request_id, sizeof(e.request_id), req->id, strlen(req->id));
    if (u->outcome)
        ag_usage_entry_set_str(e.outcome, sizeof(e.outcome), u->outcome, strlen(u->outcome));
    e.prompt_length = u->prompt_units;
    e.output_length = u->output_units;
    e.input_tokens = u->in;
    e.output_tokens = u->out;
    e.cache_creation_input_tokens = u->cache_create;
    e.cache_read_input_tokens = u->cache_read;
    e.status = req->_status ? req->_status : 499;
    e.cached = u->cached;
    e.stream = u->stream;
    e.latency_ms = (uint32_t)((ag_mono_us() - req->start_us) / 1000);
    int rc = ag_usage_log_append(u->log, &e);
    if (rc < 0)
        ag_log_warn("request %s: usage entry not accepted: %s", req->id, ag_usage_log_strerror(rc));
}

/* Starts recording: from here on the request gets exactly one usage entry. */
static void usage_begin(usage_t *u, gw_worker_t *gww, ag_req_t *req, uint32_t prompt_units,
                        bool stream)
{
    u->req = req;
    u->log = gww->gw->usage_log;
    u->prompt_units = prompt_units;
    u->stream = stream;
    ag_pool_on_clear(&req->pool, usage_record, u);
}

/* ---- /api/generate: results ----------------------------------------------- */

static shared_result_t *result_new(int status, ag_str_t body, uint32_t units, int64_t in,
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
    r->len = body.len;
    memcpy(r->body, body.ptr, body.len);
    return r;
}

static shared_result_t *result_error(int status, const char *msg)
{
    ag_buf_t b;
    ag_buf_init(&b, 0);
    shared_result_t *r = NULL;
    if (ag_json_error_body(&b, msg) == 0)
        r = result_new(status, ag_str(b.data, b.len), 0, 0, 0);
    ag_buf_fini(&b);
    return r;
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
static void log_upstream_failure(const char *id, const ag_upstream_response_t *resp)
{
    if (resp->error) {
        ag_log_warn("request %s: upstream failed: %s (status %d)", id,
                    resp->error_text ? resp->error_text : ag_strerror(resp->error), resp->status);
        return;
    }
    json_t *root = json_loadb(resp->body.ptr, resp->body.len, 0, NULL);
    json_t *err = json_object_get(root, "error");
    const char *type = json_string_value(json_object_get(err, "type"));
    const char *msg = json_string_value(json_object_get(err, "message"));
    if (type)
        ag_log_warn("request %s: upstream answered %d: %s: %.200s", id, resp->status, type,
                    msg ? msg : "");
    else
        ag_log_warn("request %s: upstream answered %d with %zu unparsable bytes", id, resp->status,
                    resp->body.len);
    json_decref(root);
}

/* A stop reason fit to store and replay: Anthropic's are short snake_case
 * words; anything else (long, spaces, quotes) becomes end_turn. */
static const char *safe_stop(const char *stop)
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

static int64_t usage_int(json_t *usage, const char *name)
{
    json_t *v = json_object_get(usage, name);
    return json_is_integer(v) ? json_integer_value(v) : 0;
}

/* Tokenizes JSON with a caller's small token array, or a heap one when the
 * document needs more. @return token count or an error; *heap (to free) is
 * set when the heap was used. */
#define JSON_MAX_TOKENS (1u << 20)
static int jparse(ag_str_t text, ag_jtok_t *stack, size_t nstack, ag_jtok_t **toks,
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
static shared_result_t *result_from_upstream(const char *id, const ag_upstream_response_t *resp,
                                             ag_buf_t *cache_value)
{
    if (resp->error || resp->status < 200 || resp->status > 299) {
        log_upstream_failure(id, resp);
        shared_result_t *e = result_error(502, msg_ai_error);
        if (e)
            e->upstream_us = resp->duration_us;
        return e;
    }
    const char *t = resp->body.ptr;
    ag_jtok_t stack[128], *toks, *heap;
    int n = jparse(resp->body, stack, AG_ARRAY_LEN(stack), &toks, &heap);
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
        rc = ag_buf_append_str(&out, ag_jtok_raw(t, &toks[usage])); /* as upstream sent it */
    uint32_t units = (uint32_t)ag_utf16_length(text.data ? text.data : "", text.len);
    if (rc == 0 && cache_value) {
        rc = ag_buf_printf(cache_value, "%u %lld %lld %s\n", units, (long long)in, (long long)outt,
                           safe_stop(stop.len ? ag_buf_cstr(&stop) : NULL));
        if (rc == 0)
            rc = ag_buf_append(cache_value, out.data, out.len);
        if (rc == 0)
            rc = ag_buf_append(cache_value, "}", 1);
    }
    if (rc == 0)
        rc = ag_buf_append_cstr(&out, ",\"cached\":false}");
    if (rc == 0) {
        r = result_new(200, ag_str(out.data, out.len), units, in, outt);
    } else if (rc == AG_EPROTO || n < 0) {
        ag_log_warn("request %s: upstream sent an unusable body (%zu bytes)", id, resp->body.len);
        r = result_error(502, msg_ai_error);
    } else {
        ag_log_error("request %s: building the response failed: %s", id, ag_strerror(rc));
        r = result_error(500, msg_internal);
    }
    if (cache_value && (!r || r->status != 200))
        ag_buf_reset(cache_value);
    if (r)
        r->upstream_us = resp->duration_us;
    free(heap);
    ag_buf_fini(&out);
    ag_buf_fini(&text);
    ag_buf_fini(&stop);
    return r;
}

static void respond_result(ag_req_t *req, const shared_result_t *r)
{
    if (!r) {
        ag_req_respond_error(req, 500, msg_internal);
        return;
    }
    req->upstream_us = r->upstream_us;
    ag_req_respond(req, r->status, "application/json", ag_str(r->body, r->len));
}

static void gen_take_result(gen_req_t *g, const shared_result_t *r)
{
    if (!r)
        return;
    g->usage.output_units = r->output_units;
    g->usage.in = r->input_tokens;
    g->usage.out = r->output_tokens;
}

/* ---- /api/generate: coalescing identical in-flight requests ----------------- */

static flight_shard_t *shard_of(ag_gateway_t *gw, const unsigned char *key)
{
    return &gw->flights[key[0] % FLIGHT_SHARDS];
}

/* Hands `res` (NULL: a 502) to every waiter of the flight `key` and ends it.
 * Local waiters are answered now; others through their worker's mailbox. */
static void flight_deliver(gw_worker_t *gww, const unsigned char *key, shared_result_t *res)
{
    ag_gateway_t *gw = gww->gw;
    flight_shard_t *sh = shard_of(gw, key);
    pthread_mutex_lock(&sh->lock);
    flight_t **pp = &sh->head, *f = NULL;
    while (*pp && memcmp((*pp)->key, key, SHA256_DIGEST_LENGTH) != 0)
        pp = &(*pp)->next;
    if (*pp) {
        f = *pp;
        *pp = f->next;
    }
    pthread_mutex_unlock(&sh->lock);
    if (!f)
        return;
    shared_result_t *err = res ? NULL : result_error(502, msg_ai_error);
    shared_result_t *r = res ? res : err;
    waiter_t *w = f->waiters;
    free(f);
    while (w) {
        waiter_t *next = w->next;
        if (w->worker == gww->index) {
            gen_req_t *g = w->g;
            g->waiter = NULL;
            free(w);
            gen_take_result(g, r);
            respond_result(g->req, r);
        } else {
            if (r)
                atomic_fetch_add(&r->refs, 1);
            w->res = r;
            mailbox_t *mb = &gw->mailboxes[w->worker];
            pthread_mutex_lock(&mb->lock);
            w->next = mb->items;
            mb->items = w;
            if (mb->async)
                uv_async_send(mb->async);
            pthread_mutex_unlock(&mb->lock);
        }
        w = next;
    }
    result_release(err);
}

static void on_mail(uv_async_t *a)
{
    gw_worker_t *gww = a->data;
    mailbox_t *mb = &gww->gw->mailboxes[gww->index];
    pthread_mutex_lock(&mb->lock);
    waiter_t *w = mb->items;
    mb->items = NULL;
    pthread_mutex_unlock(&mb->lock);
    while (w) {
        waiter_t *next = w->next;
        if (!w->cancelled) {
            gen_req_t *g = w->g;
            g->waiter = NULL;
            gen_take_result(g, w->res);
            respond_result(g->req, w->res);
        }
        result_release(w->res);
        free(w);
        w = next;
    }
}

/* Joins the flight for `key`. @return true when this request leads (it must
 * start the upstream call), false when it waits on one already running. */
static bool flight_join(gw_worker_t *gww, gen_req_t *g, const unsigned char *key, waiter_t *w)
{
    flight_shard_t *sh = shard_of(gww->gw, key);
    w->worker = gww->index;
    w->g = g;
    g->waiter = w;
    pthread_mutex_lock(&sh->lock);
    flight_t *f = sh->head;
    while (f && memcmp(f->key, key, SHA256_DIGEST_LENGTH) != 0)
        f = f->next;
    bool lead = f == NULL;
    if (lead) {
        f = calloc(1, sizeof(*f));
        AG_ASSERT(f != NULL);
        memcpy(f->key, key, SHA256_DIGEST_LENGTH);
        f->next = sh->head;
        sh->head = f;
    }
    w->next = f->waiters;
    f->waiters = w;
    pthread_mutex_unlock(&sh->lock);
    return lead;
}

/* The request went away before its answer: leave the flight. */
static void waiter_cancel(gw_worker_t *gww, gen_req_t *g, const unsigned char *key)
{
    waiter_t *w = g->waiter;
    g->waiter = NULL;
    flight_shard_t *sh = shard_of(gww->gw, key);
    bool removed = false;
    pthread_mutex_lock(&sh->lock);
    for (flight_t *f = sh->head; f && !removed; f = f->next) {
        if (memcmp(f->key, key, SHA256_DIGEST_LENGTH) != 0)
            continue;
        for (waiter_t **pp = &f->waiters; *pp; pp = &(*pp)->next) {
            if (*pp == w) {
                *pp = w->next;
                removed = true;
                break;
            }
        }
    }
    pthread_mutex_unlock(&sh->lock);
    if (removed)
        free(w);
    else
        w->cancelled = true; /* already on its way to our mailbox; on_mail frees it */
}

/* ---- /api/generate: the cache ------------------------------------------------- */

typedef struct cache_fill {
    uv_work_t work;
    ag_gateway_t *gw;
    ag_kv_t *kv;
    int64_t ttl_s;
    char key[8 + 2 * SHA256_DIGEST_LENGTH + 1];
    size_t len;
    char value[];
} cache_fill_t;

static void cache_fill_work(uv_work_t *w)
{
    cache_fill_t *cf = w->data;
    ag_kv_put_opts_t o = {.expiration_ttl = cf->ttl_s};
    int rc = ag_kv_put(cf->kv, cf->key, strlen(cf->key), cf->value, cf->len, &o);
    if (rc < 0)
        ag_log_warn("cache fill failed: %s", ag_kv_strerror(rc));
}

static void cache_fill_done(uv_work_t *w, int status)
{
    cache_fill_t *cf = w->data;
    AG_UNUSED(status);
    atomic_fetch_sub(&cf->gw->fills_pending, 1);
    free(cf);
}

#define MAX_PENDING_FILLS 4096

/* Stores the answer off the loop thread: an LMDB write may wait on the disk. */
static void cache_fill(gw_worker_t *gww, uv_loop_t *loop, const char *key, ag_buf_t *value)
{
    ag_gateway_t *gw = gww->gw;
    if (!gw->cache || value->len == 0)
        return;
    /* Memory stays bounded when fills come faster than the disk takes them:
     * past the bound a fill is skipped (a later request fills instead). */
    if (atomic_load(&gw->fills_pending) >= MAX_PENDING_FILLS) {
        if (atomic_fetch_add(&gw->fills_skipped, 1) % 10000 == 0)
            ag_log_warn("cache fills are behind the disk: skipped %llu so far",
                        (unsigned long long)atomic_load(&gw->fills_skipped));
        return;
    }
    cache_fill_t *cf = malloc(sizeof(*cf) + value->len);
    if (!cf)
        return;
    atomic_fetch_add(&gw->fills_pending, 1);
    cf->gw = gw;
    cf->kv = gw->cache;
    cf->ttl_s = (gw->cfg->cache_ttl_ms + 999) / 1000;
    snprintf(cf->key, sizeof(cf->key), "%s", key);
    cf->len = value->len;
    memcpy(cf->value, value->data, value->len);
    cf->work.data = cf;
    if (uv_queue_work(loop, &cf->work, cache_fill_work, cache_fill_done) < 0) {
        atomic_fetch_sub(&gw->fills_pending, 1);
        free(cf);
    }
}

static EVP_MD *sha256_md;                    /* fetched once, kept for the process */
static _Thread_local EVP_MD_CTX *sha256_ctx; /* per thread; freed by sha256_thread_done() */

static void sha256_thread_done(void)
{
    EVP_MD_CTX_free(sha256_ctx);
    sha256_ctx = NULL;
}

static void sha256_fetch(void)
{
    sha256_md = EVP_MD_fetch(NULL, "SHA256", NULL);
}

/* SHA-256 over the parts, each followed by a NUL so that no two splits collide. */
static void sha256_parts(const ag_str_t *parts, size_t n, unsigned char out[SHA256_DIGEST_LENGTH])
{
    /* OpenSSL 3 looks the algorithm up on every implicit fetch; fetch it once
     * and keep a context per thread. */
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, sha256_fetch);
    if (!sha256_ctx)
        sha256_ctx = EVP_MD_CTX_new();
    EVP_MD_CTX *ctx = sha256_ctx;
    AG_ASSERT(ctx != NULL && sha256_md != NULL);
    EVP_DigestInit_ex(ctx, sha256_md, NULL);
    for (size_t i = 0; i < n; i++) {
        EVP_DigestUpdate(ctx, parts[i].ptr ? parts[i].ptr : "", parts[i].len);
        EVP_DigestUpdate(ctx, "", 1);
    }
    EVP_DigestFinal_ex(ctx, out, NULL);
}

static void cache_key(const unsigned char *digest, char out[8 + 2 * SHA256_DIGEST_LENGTH + 1])
{
    static const char hex[] = "0123456789abcdef";
    memcpy(out, "gen:v1:", 7);
    for (int i = 0; i < SHA256_DIGEST_LENGTH; i++) {
        out[7 + 2 * i] = hex[digest[i] >> 4];
        out[8 + 2 * i] = hex[digest[i] & 15];
    }
    out[7 + 2 * SHA256_DIGEST_LENGTH] = '\0';
}

typedef struct cache_entry {
    unsigned long units; /* the output's UTF-16 length */
    long long in, out;
    char stop[64];
    bool raw;         /* json is Anthropic's whole Message (a /v1/messages fill) */
    const char *json; /* {"output","usage"} or the Message; points into the value */
    size_t jlen;
} cache_entry_t;

static bool parse_entry(const ag_kv_value_t *v, cache_entry_t *e);
static bool entry_text(const cache_entry_t *e, ag_buf_t *text, long long *in, long long *out,
                       char stop[64]);
static bool replay_stream(ag_req_t *req, ag_str_t model, ag_str_t text, long long in, long long out,
                          const char *stop);

/* Answers from the cache, as JSON or (stream_model given) as a replayed event
 * stream. @return true when it did. */
static void usage_from_entry(usage_t *u, const cache_entry_t *e)
{
    u->cached = true;
    u->output_units = (uint32_t)e->units;
    u->in = e->in;
    u->out = e->out;
}

static bool cache_lookup(gw_worker_t *gww, ag_req_t *req, const char *key,
                         const ag_str_t *stream_model, usage_t *usage)
{
    ag_kv_value_t v;
    if (!gww->gw->cache || ag_kv_get(gww->gw->cache, key, strlen(key), &v) != 0)
        return false;
    bool served = false;
    cache_entry_t e;
    if (parse_entry(&v, &e) && !e.raw) {
        usage_from_entry(usage, &e);
        if (stream_model) {
            ag_buf_t text;
            ag_buf_init(&text, 0);
            long long in, out;
            char stop[64];
            served = entry_text(&e, &text, &in, &out, stop) &&
                     replay_stream(req, *stream_model, ag_str(text.data ? text.data : "", text.len),
                                   in, out, stop);
            ag_buf_fini(&text);
        } else {
            ag_buf_t b;
            ag_buf_init(&b, 0);
            if (ag_buf_append(&b, e.json, e.jlen - 1) == 0 &&
                ag_buf_append_cstr(&b, ",\"cached\":true}") == 0) {
                ag_req_add_header(req, "x-aigate-cache", AG_STR_LIT("hit"));
                ag_req_respond(req, 200, "application/json", ag_str(b.data, b.len));
                served = true;
            }
            ag_buf_fini(&b);
        }
    }
    if (!served)
        ag_log_warn("request %s: ignoring an unusable cache entry %s", req->id, key);
    ag_kv_value_free(&v);
    return served;
}

/* ---- /api/generate: upstream calls --------------------------------------------- */

static void fetch_unlink(gw_worker_t *gww, fetch_t *f)
{
    if (f->prev)
        f->prev->next = f->next;
    else
        gww->fetches = f->next;
    if (f->next)
        f->next->prev = f->prev;
}

static void fetch_done(void *ctx, const ag_upstream_response_t *resp)
{
    fetch_t *f = ctx;
    gw_worker_t *gww = f->gww;
    f->xfer = NULL;
    fetch_unlink(gww, f);
    ag_buf_t value;
    ag_buf_init(&value, 0);
    shared_result_t *r = result_from_upstream(f->kv_key + 7, resp, f->fill ? &value : NULL);
    flight_deliver(gww, f->key, r);
    if (f->fill && value.len)
        cache_fill(gww, gww->loop, f->kv_key, &value);
    result_release(r);
    ag_buf_fini(&value);
    free(f->body);
    free(f);
}

/* An upstream call: the gateway's URL and timeouts, the given NULL-terminated
 * header lines. A stream gets an idle timeout instead of a total one, so a
 * long healthy stream is never cut while a stalled one is. */
static ag_upstream_request_t upstream_request(ag_gateway_t *gw, const char *const *headers,
                                              ag_str_t body, bool stream)
{
    ag_upstream_request_t u = {
        .url = gw->messages_url,
        .headers = headers,
        .body = body.ptr,
        .body_len = body.len,
        .connect_timeout_ms = gw->cfg->upstream_connect_timeout_ms,
        .timeout_ms = stream ? 0 : gw->cfg->upstream_timeout_ms,
        .idle_timeout_ms = stream ? gw->cfg->stream_idle_timeout_ms : 0,
    };
    while (headers[u.nheaders])
        u.nheaders++;
    return u;
}

static void start_fetch(gw_worker_t *gww, const unsigned char *key, const char *kv_key,
                        ag_str_t body, bool fill)
{
    fetch_t *f = calloc(1, sizeof(*f));
    char *copy = f ? malloc(body.len) : NULL;
    int rc = -ENOMEM;
    if (f && copy) {
        f->gww = gww;
        memcpy(f->key, key, SHA256_DIGEST_LENGTH);
        snprintf(f->kv_key, sizeof(f->kv_key), "%s", kv_key);
        memcpy(copy, body.ptr, body.len);
        f->body = copy;
        f->body_len = body.len;
        f->fill = fill;
        ag_upstream_request_t u = upstream_request(gww->gw, gww->gw->generate_headers,
                                                   ag_str(f->body, f->body_len), false);
        rc = ag_upstream_start(gww->upstream, &u, fetch_done, f, &f->xfer);
    }
    if (rc < 0) {
        ag_log_error("cannot start the upstream call: %s", ag_strerror(rc));
        free(copy);
        free(f);
        flight_deliver(gww, key, NULL);
        return;
    }
    f->next = gww->fetches;
    if (gww->fetches)
        gww->fetches->prev = f;
    gww->fetches = f;
}

static void gen_upstream_done(void *ctx, const ag_upstream_response_t *resp)
{
    gen_req_t *g = ctx;
    ag_req_t *req = g->req;
    g->xfer = NULL;
    req->upstream_us = resp->duration_us;
    shared_result_t *r = result_from_upstream(req->id, resp, NULL);
    gen_take_result(g, r);
    respond_result(req, r);
    result_release(r);
}

/* ---- /api/generate ---------------------------------------------------------------- */

typedef enum { RELAY_GENERATE, RELAY_MESSAGES } relay_kind_t;
static void relay_start(gw_worker_t *gww, ag_req_t *req, relay_kind_t kind, ag_str_t body,
                        const char *const *headers, const char *kv_key, usage_t *usage);
static const char *const *passthrough_headers(ag_gateway_t *gw, ag_req_t *req);

static void gen_cleanup(void *p)
{
    gen_req_t *g = p;
    /* Normally the call finished already; after an abort it may still be live. */
    ag_upstream_cancel(g->xfer);
    g->xfer = NULL;
    if (g->waiter)
        waiter_cancel(g->gw, g, g->key);
    if (g->root)
        json_decref(g->root);
    g->root = NULL;
}

static void gen_abort(ag_req_t *req)
{
    gen_cleanup(req->handler_data);
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

static bool has_token(ag_str_t header, const char *token)
{
    size_t tlen = strlen(token);
    for (size_t i = 0; i + tlen <= header.len; i++) {
        if (strncasecmp(header.ptr + i, token, tlen) != 0)
            continue;
        bool left = i == 0 || header.ptr[i - 1] == ',' || header.ptr[i - 1] == ' ';
        bool right = i + tlen == header.len || header.ptr[i + tlen] == ',' ||
                     header.ptr[i + tlen] == ' ' || header.ptr[i + tlen] == ';';
        if (left && right)
            return true;
    }
    return false;
}

static const char *period_word(unsigned period_s, char *buf, size_t len)
{
    switch (period_s) {
    case 1:
        return "second";
    case 60:
        return "minute";
    case 3600:
        return "hour";
    case 86400:
        return "day";
    default:
        snprintf(buf, len, "%u seconds", period_s);
        return buf;
    }
}

/* The route's rate limit. @return true when the request may go on; otherwise
 * the 429 was sent. The RateLimit-* headers go on whatever response follows. */
static void messages_error(ag_req_t *req, int status, const char *type, const char *msg);

static bool check_rate_limit(gw_worker_t *gww, ag_req_t *req, named_limiter_t *nl, bool anthropic)
{
    ag_gateway_t *gw = gww->gw;
    char client[64];
    ag_client_ip(gw->trusted, req->client_ip, ag_req_header(req, "CF-Connecting-IP"),
                 ag_req_header(req, "X-Forwarded-For"), client);
    memcpy(req->client_ip, client, sizeof(client));
    ag_limit_result_t r;
    ag_limiter_check(nl->lim, client, strlen(client), ag_now_us(), &r);
    char num[24];
    ag_req_add_header(req, "RateLimit-Limit", ag_str(num, ag_fmt_u64(num, r.limit)));
    ag_req_add_header(req, "RateLimit-Remaining", ag_str(num, ag_fmt_u64(num, r.remaining)));
    ag_req_add_header(req, "RateLimit-Reset", ag_str(num, ag_fmt_u64(num, r.reset_s)));
    if (r.allowed)
        return true;
    ag_req_add_header(req, "Retry-After", ag_str(num, ag_fmt_u64(num, r.retry_after_s)));
    char word[32], msg[128];
    snprintf(msg, sizeof(msg), "Rate limit exceeded. Max %u requests/%s.", nl->limit,
             period_word(nl->period_s, word, sizeof(word)));
    if (anthropic)
        messages_error(req, 429, "rate_limit_error", msg);
    else
        ag_req_respond_error(req, 429, msg);
    return false;
}

static void handle_generate(ag_req_t *req, gw_worker_t *gww)
{
    ag_gateway_t *gw = gww->gw;
    const ag_config_t *cfg = gw->cfg;
    gen_req_t *g = ag_pool_alloc(&req->pool, sizeof(*g));
    memset(g, 0, sizeof(*g));
    g->req = req;
    g->gw = gww;
    req->handler_data = g;
    ag_pool_on_clear(&req->pool, gen_cleanup, g);

    /* 1. validation, with JavaScript's rules: JSON.parse, then prompt.length in
     *    UTF-16 units. */
    const char *body = req->body.ptr;
    ag_jtok_t stack[64], *toks, *heap;
    int n = jparse(req->body, stack, AG_ARRAY_LEN(stack), &toks, &heap);
    if (heap)
        ag_pool_on_clear(&req->pool, free, heap);
    if (n <= 0) {
        ag_req_respond_error(req, 400, msg_invalid_json);
        return;
    }
    bool is_object = toks[0].type == AG_JT_OBJECT;
    int jp = is_object ? ag_jtok_object_get(body, toks, 0, "prompt") : -1;
    size_t prompt_units =
        jp >= 0 && toks[jp].type == AG_JT_STRING ? ag_jtok_str_utf16_len(body, &toks[jp]) : 0;
    if (prompt_units == 0 || prompt_units > cfg->prompt_max_length) {
        ag_req_respond_error(req, 400, msg_invalid_prompt);
        return;
    }
    ag_buf_t pbuf;
    ag_buf_init(&pbuf, 0);
    if (ag_jtok_str_decode(body, &toks[jp], &pbuf) < 0) {
        ag_buf_fini(&pbuf);
        ag_req_respond_error(req, 500, msg_internal);
        return;
    }
    ag_str_t prompt_text =
        ag_pool_strdup_str(&req->pool, ag_str(pbuf.data ? pbuf.data : "", pbuf.len));
    ag_buf_fini(&pbuf);
    ag_str_t model = ag_str_c(cfg->default_model);
    int jm = ag_jtok_object_get(body, toks, 0, "model");
    if (jm >= 0) {
        ag_buf_t mbuf;
        ag_buf_init(&mbuf, 512);
        bool ok = toks[jm].type == AG_JT_STRING &&
                  ag_jtok_str_decode(body, &toks[jm], &mbuf) == 0 &&
                  ag_config_model_allowed(cfg, mbuf.data ? mbuf.data : "", mbuf.len);
        if (ok)
            model = ag_pool_strdup_str(&req->pool, ag_str(mbuf.data, mbuf.len));
        ag_buf_fini(&mbuf);
        if (!ok) {
            ag_req_respond_error(req, 400, msg_invalid_model);
            return;
        }
    }
    req->log_model = ag_pool_strndup(&req->pool, model.ptr, model.len);
    /* Streaming is decided by the body alone, never by Accept. */
    int js = ag_jtok_object_get(body, toks, 0, "stream");
    bool stream = js >= 0 && toks[js].type == AG_JT_TRUE;
    usage_begin(&g->usage, gww, req, (uint32_t)prompt_units, stream);

    /* 2. rate limit */
    if (!check_rate_limit(gww, req, &gw->generate_limit, false))
        return;

    /* 3. cache: keyed on the exact upstream body, which holds everything that
     *    changes the answer (model, max_tokens, prompt). */
    g->body = build_upstream_body(&req->pool, model, cfg->max_tokens, prompt_text);
    if (!g->body.ptr) {
        ag_req_respond_error(req, 500, msg_internal);
        return;
    }
    sha256_parts(&g->body, 1, g->key);
    char kv_key[8 + 2 * SHA256_DIGEST_LENGTH + 1];
    cache_key(g->key, kv_key);
    ag_str_t cc = ag_req_header(req, "Cache-Control");
    bool no_store = has_token(cc, "no-store");
    bool no_cache = no_store || has_token(cc, "no-cache");
    if (!no_cache && cache_lookup(gww, req, kv_key, stream ? &model : NULL, &g->usage))
        return;
    if (stream) {
        if (!gw->api_key_header) {
            ag_req_respond_error(req, 503, msg_no_key);
            return;
        }
        /* The same body plus "stream": the cache key stays the non-streaming
         * one, so streamed and plain requests share entries. */
        ag_str_t sbody = ag_str(ag_pool_printf(&req->pool, "%.*s,\"stream\":true}",
                                               (int)(g->body.len - 1), g->body.ptr),
                                g->body.len + 14);
        relay_start(gww, req, RELAY_GENERATE, sbody, gw->generate_headers,
                    gw->cache && !no_store ? kv_key : NULL, &g->usage);
        return;
    }

    /* 4. upstream */
    if (!gw->api_key_header) {
        ag_req_respond_error(req, 503, msg_no_key);
        return;
    }
    req->on_abort = gen_abort;
    if (no_store) {
        ag_upstream_request_t u = upstream_request(gw, gw->generate_headers, g->body, false);
        int rc = ag_upstream_start(gww->upstream, &u, gen_upstream_done, g, &g->xfer);
        if (rc < 0) {
            ag_log_error("request %s: cannot start the upstream call: %s", req->id,
                         ag_strerror(rc));
            ag_req_respond_error(req, 502, msg_ai_error);
        }
        return;
    }
    waiter_t *w = calloc(1, sizeof(*w));
    AG_ASSERT(w != NULL);
    if (flight_join(gww, g, g->key, w))
        start_fetch(gww, g->key, kv_key, g->body, gw->cache != NULL);
}

/* ---- streaming relay (/api/generate with "stream": true, /v1/messages) ---------- */

/* Past this many bytes queued for a slow client, the upstream transfer is
 * paused; memory per stream stays near this bound whatever the client does. */
#define STREAM_HIGH_WATER (256 * 1024)

typedef struct relay {
    ag_req_t *req;
    gw_worker_t *gww;
    ag_upstream_xfer_t *xfer;
    ag_sse_parser_t sse;
    ag_anthropic_stream_t acc;
    relay_kind_t kind;
    usage_t *usage;
    bool started;
    bool paused;
    char kv_key[8 + 2 * SHA256_DIGEST_LENGTH + 1]; /* "" when the stream is not cached */
} relay_t;

static void relay_cleanup(void *p)
{
    relay_t *r = p;
    ag_upstream_cancel(r->xfer);
    r->xfer = NULL;
    ag_sse_parser_fini(&r->sse);
    ag_anthropic_stream_fini(&r->acc);
}

/* Copies what the stream said into the usage entry. */
static void relay_account(relay_t *r, const char *outcome)
{
    usage_t *u = r->usage;
    const ag_anthropic_stream_t *a = &r->acc;
    u->outcome = outcome;
    u->output_units = (uint32_t)ag_utf16_length(a->text.data ? a->text.data : "", a->text.len);
    u->in = a->usage.input_tokens;
    u->out = a->usage.output_tokens;
    u->cache_create = a->usage.cache_creation_input_tokens;
    u->cache_read = a->usage.cache_read_input_tokens;
}

static void relay_abort(ag_req_t *req)
{
    relay_t *r = req->handler_data;
    relay_account(r, "clientDisconnected");
    /* The client left: stop the upstream call at once, it costs tokens. */
    ag_upstream_cancel(r->xfer);
    r->xfer = NULL;
}

static void relay_drained(ag_req_t *req, void *data)
{
    relay_t *r = data;
    AG_UNUSED(req);
    if (r->paused && r->xfer) {
        r->paused = false;
        ag_upstream_resume(r->xfer);
    }
}

/* Response headers of Anthropic's that a client of /v1/messages should see. */
static void forward_upstream_headers(ag_req_t *req, ag_str_t headers)
{
    const char *p = headers.ptr, *end = headers.ptr + headers.len;
    while (p < end) {
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        const char *le = eol ? eol : end;
        const char *colon = memchr(p, ':', (size_t)(le - p));
        if (colon) {
            size_t nlen = (size_t)(colon - p);
            bool fwd = (nlen > 10 && strncasecmp(p, "anthropic-", 10) == 0) ||
                       (nlen == 10 && strncasecmp(p, "request-id", 10) == 0) ||
                       (nlen == 11 && strncasecmp(p, "retry-after", 11) == 0) ||
                       (nlen == 14 && strncasecmp(p, "x-should-retry", 14) == 0);
            if (fwd) {
                const char *v = colon + 1, *ve = le;
                while (v < ve && (*v == ' ' || *v == '\t'))
                    v++;
                while (ve > v && (ve[-1] == '\r' || ve[-1] == ' '))
                    ve--;
                char *name = ag_pool_strndup(&req->pool, p, nlen);
                ag_req_add_header(req, name, ag_str(v, (size_t)(ve - v)));
            }
        }
        p = eol ? eol + 1 : end;
    }
}

static int relay_on_data(void *ctx, int status, ag_str_t headers, const char *data, size_t len)
{
    relay_t *r = ctx;
    ag_req_t *req = r->req;
    if (!r->started) {
        r->started = true;
        if (r->kind == RELAY_MESSAGES)
            forward_upstream_headers(req, headers);
        ag_req_add_header(req, "Cache-Control", AG_STR_LIT("no-cache"));
        ag_req_stream_start(req, status, "text/event-stream; charset=utf-8");
        ag_req_on_drain(req, relay_drained, r);
    }
    size_t queued = 0;
    ag_req_stream_write(req, NULL, 0, &queued);
    if (queued >= STREAM_HIGH_WATER) {
        r->paused = true;
        return AG_EAGAIN; /* curl hands these same bytes again on resume */
    }
    if (ag_req_stream_write(req, data, len, &queued) < 0)
        return -1;
    if (ag_sse_parser_feed(&r->sse, data, len) != 0)
        r->kv_key[0] = '\0'; /* unparsable: relay it, but never cache it */
    return 0;
}

static const char stream_error_event[] =
    "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"api_error\",\"message\":"
    "\"Upstream connection failed\"}}\n\n";

static void relay_done(void *ctx, const ag_upstream_response_t *resp)
{
    relay_t *r = ctx;
    ag_req_t *req = r->req;
    r->xfer = NULL;
    req->upstream_us = resp->duration_us;
    if (!r->started) {
        /* Nothing relayed yet: answer as the non-streaming path would. */
        r->usage->outcome = "upstreamError";
        if (r->kind == RELAY_MESSAGES && !resp->error && resp->status >= 400) {
            forward_upstream_headers(req, resp->headers);
            ag_str_t ct = ag_upstream_header(resp->headers, "content-type");
            ag_req_respond(req, resp->status,
                           ct.len ? ag_pool_strndup(&req->pool, ct.ptr, ct.len)
                                  : "application/json",
                           resp->body);
            return;
        }
        log_upstream_failure(req->id, resp);
        if (r->kind == RELAY_MESSAGES)
            messages_error(req, 502, "api_error", "Upstream connection failed");
        else
            ag_req_respond_error(req, 502, msg_ai_error);
        return;
    }
    relay_account(r,
                  resp->error || !ag_anthropic_stream_complete(&r->acc) ? "upstreamError" : "ok");
    if (resp->error) {
        /* Mid-stream failure: tell the client in the stream's own terms, then end. */
        log_upstream_failure(req->id, resp);
        ag_req_stream_write(req, stream_error_event, sizeof(stream_error_event) - 1, NULL);
    } else if (r->kv_key[0] && ag_anthropic_stream_complete(&r->acc) && !r->acc.text_truncated) {
        const ag_anthropic_stream_t *a = &r->acc;
        ag_buf_t v;
        ag_buf_init(&v, 0);
        const char *stop =
            a->stop_reason.len ? ag_buf_cstr((ag_buf_t *)&a->stop_reason) : "end_turn";
        int rc = ag_buf_printf(
            &v, "%u %lld %lld %s\n{\"output\":",
            (unsigned)ag_utf16_length(a->text.data ? a->text.data : "", a->text.len),
            (long long)a->usage.input_tokens, (long long)a->usage.output_tokens, safe_stop(stop));
        if (rc == 0)
            rc = ag_json_append_string(&v, ag_str(a->text.data ? a->text.data : "", a->text.len));
        if (rc == 0)
            rc = ag_buf_printf(
                &v,
                ",\"usage\":{\"input_tokens\":%lld,\"cache_creation_input_tokens\":%lld,"
                "\"cache_read_input_tokens\":%lld,\"output_tokens\":%lld}}",
                (long long)a->usage.input_tokens, (long long)a->usage.cache_creation_input_tokens,
                (long long)a->usage.cache_read_input_tokens, (long long)a->usage.output_tokens);
        if (rc == 0)
            cache_fill(r->gww, r->gww->loop, r->kv_key, &v);
        ag_buf_fini(&v);
    }
    ag_req_stream_end(req);
}

static void relay_start(gw_worker_t *gww, ag_req_t *req, relay_kind_t kind, ag_str_t body,
                        const char *const *headers, const char *kv_key, usage_t *usage)
{
    ag_gateway_t *gw = gww->gw;
    relay_t *r = ag_pool_alloc(&req->pool, sizeof(*r));
    memset(r, 0, sizeof(*r));
    r->usage = usage;
    r->req = req;
    r->gww = gww;
    r->kind = kind;
    if (kv_key)
        snprintf(r->kv_key, sizeof(r->kv_key), "%s", kv_key);
    ag_sse_parser_init(&r->sse, 0, ag_anthropic_stream_sse_cb, &r->acc);
    ag_anthropic_stream_init(&r->acc, 4u << 20);
    req->handler_data = r;
    ag_pool_on_clear(&req->pool, relay_cleanup, r);
    ag_upstream_request_t u = upstream_request(gw, headers, body, true);
    u.on_data = relay_on_data;
    int rc = ag_upstream_start(gww->upstream, &u, relay_done, r, &r->xfer);
    if (rc < 0) {
        ag_log_error("request %s: cannot start the upstream call: %s", req->id, ag_strerror(rc));
        if (kind == RELAY_MESSAGES)
            messages_error(req, 502, "api_error", "Upstream connection failed");
        else
            ag_req_respond_error(req, 502, msg_ai_error);
        return;
    }
    req->on_abort = relay_abort;
}

/* The header lines for /v1/messages, in the request pool: our key, never the
 * client's; the client's anthropic-version (ours when absent) and anthropic-beta. */
static const char *const *passthrough_headers(ag_gateway_t *gw, ag_req_t *req)
{
    const char **h = ag_pool_alloc(&req->pool, 6 * sizeof(char *));
    size_t n = 0;
    h[n++] = gw->api_key_header;
    ag_str_t ver = ag_req_header(req, "anthropic-version");
    h[n++] = ver.len ? ag_pool_printf(&req->pool, "anthropic-version: %.*s", (int)ver.len, ver.ptr)
                     : "anthropic-version: " ANTHROPIC_VERSION;
    ag_str_t beta = ag_req_header(req, "anthropic-beta");
    if (beta.len)
        h[n++] = ag_pool_printf(&req->pool, "anthropic-beta: %.*s", (int)beta.len, beta.ptr);
    h[n++] = "content-type: application/json";
    h[n++] = "accept: application/json, text/event-stream";
    h[n] = NULL;
    return h;
}

/* A cache entry: "in out stop\n" (three fields after a UTF-16 length) then JSON. */
static bool parse_entry(const ag_kv_value_t *v, cache_entry_t *e)
{
    const char *nl = memchr(v->data, '\n', v->len);
    if (!nl || v->len - (size_t)(nl + 1 - v->data) < 2 || v->data[v->len - 1] != '}')
        return false;
    char *p = v->data, *end;
    e->units = strtoul(p, &end, 10);
    if (end == p)
        return false;
    e->in = strtoll(end, &p, 10);
    e->out = strtoll(p, &end, 10);
    if (end == p)
        return false;
    while (*end == ' ')
        end++;
    size_t slen = (size_t)(nl - end);
    if (slen == 0 || slen >= sizeof(e->stop))
        return false;
    memcpy(e->stop, end, slen);
    e->stop[slen] = '\0';
    e->raw = strcmp(e->stop, "raw") == 0;
    /* The entry may have been written by hand (aigate kv key put): the stop
     * reason goes into replayed JSON, so only a plain word passes. */
    if (!e->raw)
        memmove(e->stop, safe_stop(e->stop), strlen(safe_stop(e->stop)) + 1);
    e->json = nl + 1;
    e->jlen = v->len - (size_t)(nl + 1 - v->data);
    return true;
}

/* The text, token counts and stop reason of an entry. Fails for a Message with
 * blocks other than text (a tool call cannot be replayed as text). */
static bool entry_text(const cache_entry_t *e, ag_buf_t *text, long long *in, long long *out,
                       char stop[64])
{
    json_t *root = json_loadb(e->json, e->jlen, 0, NULL);
    bool ok = false;
    if (!e->raw) {
        json_t *t = json_object_get(root, "output");
        ok = json_is_string(t) &&
             ag_buf_append(text, json_string_value(t), json_string_length(t)) == 0;
        *in = e->in;
        *out = e->out;
        snprintf(stop, 64, "%s", e->stop);
    } else {
        json_t *content = json_object_get(root, "content"), *block;
        size_t i;
        ok = json_is_array(content);
        json_array_foreach(content, i, block)
        {
            const char *type = json_string_value(json_object_get(block, "type"));
            if (!type || strcmp(type, "text") != 0)
                ok = false;
        }
        ok = ok && join_text_blocks(content, text) == 0;
        json_t *usage = json_object_get(root, "usage");
        *in = usage_int(usage, "input_tokens");
        *out = usage_int(usage, "output_tokens");
        const char *sr = json_string_value(json_object_get(root, "stop_reason"));
        snprintf(stop, 64, "%s", safe_stop(sr));
    }
    json_decref(root);
    return ok;
}

/* Replays a cached answer as Anthropic's event stream, so a streaming client
 * served from the cache sees the same event sequence as a live one. */
static bool replay_stream(ag_req_t *req, ag_str_t model, ag_str_t text, long long in, long long out,
                          const char *stop)
{
    ag_buf_t b;
    ag_buf_init(&b, 0);
    int rc = ag_buf_printf(&b,
                           "event: message_start\ndata: {\"type\":\"message_start\",\"message\":"
                           "{\"id\":\"msg_aigate_%s\",\"type\":\"message\",\"role\":\"assistant\","
                           "\"model\":",
                           req->id);
    if (rc == 0)
        rc = ag_json_append_string(&b, model);
    if (rc == 0)
        rc = ag_buf_printf(
            &b,
            ",\"content\":[],\"stop_reason\":null,\"stop_sequence\":null,\"usage\":"
            "{\"input_tokens\":%lld,\"output_tokens\":1}}}\n\n"
            "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,"
            "\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n"
            "event: ping\ndata: {\"type\": \"ping\"}\n\n"
            "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,"
            "\"delta\":{\"type\":\"text_delta\",\"text\":",
            in);
    if (rc == 0)
        rc = ag_json_append_string(&b, text);
    if (rc == 0)
        rc =
            ag_buf_printf(&b,
                          "}}\n\nevent: content_block_stop\ndata: {\"type\":\"content_block_stop\","
                          "\"index\":0}\n\nevent: message_delta\ndata: {\"type\":\"message_delta\","
                          "\"delta\":{\"stop_reason\":\"%s\",\"stop_sequence\":null},\"usage\":"
                          "{\"output_tokens\":%lld}}\n\nevent: message_stop\ndata: "
                          "{\"type\":\"message_stop\"}\n\n",
                          stop, out);
    if (rc == 0) {
        ag_req_add_header(req, "x-aigate-cache", AG_STR_LIT("hit"));
        ag_req_add_header(req, "Cache-Control", AG_STR_LIT("no-cache"));
        ag_req_respond(req, 200, "text/event-stream; charset=utf-8", ag_str(b.data, b.len));
    }
    ag_buf_fini(&b);
    return rc == 0;
}

/* A cached answer as Anthropic's Message, for a non-streaming /v1/messages. */
static bool respond_message(ag_req_t *req, ag_str_t model, const cache_entry_t *e)
{
    if (e->raw) {
        ag_req_add_header(req, "x-aigate-cache", AG_STR_LIT("hit"));
        ag_req_respond(req, 200, "application/json", ag_str(e->json, e->jlen));
        return true;
    }
    ag_buf_t text, b;
    ag_buf_init(&text, 0);
    ag_buf_init(&b, 0);
    long long in, out;
    char stop[64];
    bool ok = entry_text(e, &text, &in, &out, stop);
    int rc = ok ? ag_buf_printf(&b,
                                "{\"id\":\"msg_aigate_%s\",\"type\":\"message\",\"role\":"
                                "\"assistant\",\"model\":",
                                req->id)
                : -1;
    if (rc == 0)
        rc = ag_json_append_string(&b, model);
    if (rc == 0)
        rc = ag_buf_append_cstr(&b, ",\"content\":[{\"type\":\"text\",\"text\":");
    if (rc == 0)
        rc = ag_json_append_string(&b, ag_str(text.data ? text.data : "", text.len));
    if (rc == 0)
        rc = ag_buf_printf(&b,
                           "}],\"stop_reason\":\"%s\",\"stop_sequence\":null,\"usage\":"
                           "{\"input_tokens\":%lld,\"output_tokens\":%lld}}",
                           stop, in, out);
    if (rc == 0) {
        ag_req_add_header(req, "x-aigate-cache", AG_STR_LIT("hit"));
        ag_req_respond(req, 200, "application/json", ag_str(b.data, b.len));
    }
    ag_buf_fini(&text);
    ag_buf_fini(&b);
    return rc == 0;
}

/* ---- POST /v1/messages: Anthropic's API, passed through ------------------------- */

static void messages_error(ag_req_t *req, int status, const char *type, const char *msg)
{
    ag_buf_t b;
    ag_buf_init(&b, 0);
    int rc = ag_buf_printf(&b, "{\"type\":\"error\",\"error\":{\"type\":\"%s\",\"message\":", type);
    if (rc == 0)
        rc = ag_json_append_string(&b, ag_str_c(msg));
    if (rc == 0)
        rc = ag_buf_append_cstr(&b, "}}");
    ag_req_respond(req, status, "application/json", rc == 0 ? ag_str(b.data, b.len) : AG_STR_NULL);
    ag_buf_fini(&b);
}

typedef struct msg_req {
    usage_t usage;
    ag_req_t *req;
    gw_worker_t *gww;
    ag_upstream_xfer_t *xfer;
    json_t *root;
    char kv_key[8 + 2 * SHA256_DIGEST_LENGTH + 1];
} msg_req_t;

static void msg_cleanup(void *p)
{
    msg_req_t *m = p;
    ag_upstream_cancel(m->xfer);
    m->xfer = NULL;
    if (m->root)
        json_decref(m->root);
    m->root = NULL;
}

static void msg_abort(ag_req_t *req)
{
    msg_req_t *m = req->handler_data;
    ag_upstream_cancel(m->xfer);
    m->xfer = NULL;
}

static void msg_done(void *ctx, const ag_upstream_response_t *resp)
{
    msg_req_t *m = ctx;
    ag_req_t *req = m->req;
    m->xfer = NULL;
    req->upstream_us = resp->duration_us;
    if (resp->error || resp->status == 0) {
        log_upstream_failure(req->id, resp);
        messages_error(req, 502, "api_error", "Upstream connection failed");
        return;
    }
    forward_upstream_headers(req, resp->headers);
    ag_str_t ct = ag_upstream_header(resp->headers, "content-type");
    if (resp->status == 200) {
        json_t *root = json_loadb(resp->body.ptr, resp->body.len, 0, NULL);
        json_t *usage = json_object_get(root, "usage");
        ag_buf_t text;
        ag_buf_init(&text, 0);
        join_text_blocks(json_object_get(root, "content"), &text);
        m->usage.output_units = (uint32_t)ag_utf16_length(text.data ? text.data : "", text.len);
        m->usage.in = usage_int(usage, "input_tokens");
        m->usage.out = usage_int(usage, "output_tokens");
        m->usage.cache_create = usage_int(usage, "cache_creation_input_tokens");
        m->usage.cache_read = usage_int(usage, "cache_read_input_tokens");
        ag_buf_fini(&text);
        json_decref(root);
    }
    if (resp->status == 200 && m->kv_key[0] && m->gww->gw->cache) {
        ag_buf_t v;
        ag_buf_init(&v, 0);
        if (ag_buf_append_cstr(&v, "0 0 0 raw\n") == 0 && ag_buf_append_str(&v, resp->body) == 0)
            cache_fill(m->gww, m->gww->loop, m->kv_key, &v);
        ag_buf_fini(&v);
    }
    ag_req_respond(req, resp->status,
                   ct.len ? ag_pool_strndup(&req->pool, ct.ptr, ct.len) : "application/json",
                   resp->body);
}

/* The UTF-16 length of the last user turn's text, the seed's promptLength. */
static uint32_t last_user_units(json_t *root)
{
    json_t *msgs = json_object_get(root, "messages");
    size_t n = json_array_size(msgs);
    json_t *last = n ? json_array_get(msgs, n - 1) : NULL;
    json_t *content = json_object_get(last, "content");
    if (json_is_string(content))
        return (uint32_t)ag_utf16_length(json_string_value(content), json_string_length(content));
    ag_buf_t text;
    ag_buf_init(&text, 0);
    join_text_blocks(content, &text);
    uint32_t units = (uint32_t)ag_utf16_length(text.data ? text.data : "", text.len);
    ag_buf_fini(&text);
    return units;
}

static void handle_messages(ag_req_t *req, gw_worker_t *gww)
{
    ag_gateway_t *gw = gww->gw;
    msg_req_t *m = ag_pool_alloc(&req->pool, sizeof(*m));
    memset(m, 0, sizeof(*m));
    m->req = req;
    m->gww = gww;
    req->handler_data = m;
    ag_pool_on_clear(&req->pool, msg_cleanup, m);
    m->root = json_loadb(req->body.ptr, req->body.len, JSON_ALLOW_NUL, NULL);
    if (!json_is_object(m->root)) {
        messages_error(req, 400, "invalid_request_error", "The request body is not valid JSON.");
        return;
    }
    json_t *model = json_object_get(m->root, "model");
    if (json_is_string(model)) {
        req->log_model =
            ag_pool_strndup(&req->pool, json_string_value(model), json_string_length(model));
        if (!ag_config_model_allowed(gw->cfg, json_string_value(model),
                                     json_string_length(model))) {
            messages_error(req, 400, "invalid_request_error", "model: not allowed by this gateway");
            return;
        }
    }
    bool stream = json_is_true(json_object_get(m->root, "stream"));
    usage_begin(&m->usage, gww, req, last_user_units(m->root), stream);
    if (!check_rate_limit(gww, req, &gw->messages_limit, true))
        return;
    /* The cache key covers the request without "stream" (so streamed and plain
     * requests share entries) and the headers that change the answer. */
    ag_str_t ver = ag_req_header(req, "anthropic-version"),
             beta = ag_req_header(req, "anthropic-beta");
    json_object_del(m->root, "stream");
    char *canon = json_dumps(m->root, JSON_COMPACT | JSON_SORT_KEYS);
    unsigned char digest[SHA256_DIGEST_LENGTH];
    const ag_str_t parts[] = {AG_STR_LIT("messages"), ver, beta, ag_str_c(canon)};
    sha256_parts(parts, AG_ARRAY_LEN(parts), digest);
    free(canon);
    cache_key(digest, m->kv_key);
    memcpy(m->kv_key, "msg:v1:", 7);
    ag_str_t cc = ag_req_header(req, "Cache-Control");
    bool no_store = has_token(cc, "no-store");
    bool no_cache = no_store || has_token(cc, "no-cache");
    /* Only text answers can be replayed: with tools or thinking, no caching. */
    bool cacheable = gw->cache && !json_object_get(m->root, "tools") &&
                     !json_object_get(m->root, "thinking") && req->log_model;
    if (cacheable && !no_cache) {
        ag_kv_value_t v;
        if (ag_kv_get(gw->cache, m->kv_key, strlen(m->kv_key), &v) == 0) {
            cache_entry_t e;
            bool served = false;
            ag_str_t mname = ag_str_c(req->log_model);
            if (parse_entry(&v, &e)) {
                usage_from_entry(&m->usage, &e);
                if (stream) {
                    ag_buf_t text;
                    ag_buf_init(&text, 0);
                    long long in, out;
                    char stop[64];
                    served = entry_text(&e, &text, &in, &out, stop) &&
                             replay_stream(req, mname, ag_str(text.data ? text.data : "", text.len),
                                           in, out, stop);
                    ag_buf_fini(&text);
                } else {
                    served = respond_message(req, mname, &e);
                }
            }
            ag_kv_value_free(&v);
            if (served)
                return;
        }
    }
    if (!gw->api_key_header) {
        messages_error(req, 503, "api_error", msg_no_key);
        return;
    }
    if (!cacheable || no_store)
        m->kv_key[0] = '\0';
    const char *const *headers = passthrough_headers(gw, req);
    if (stream) {
        json_decref(m->root);
        m->root = NULL;
        relay_start(gww, req, RELAY_MESSAGES, req->body, headers, m->kv_key[0] ? m->kv_key : NULL,
                    &m->usage);
        return;
    }
    ag_upstream_request_t u = upstream_request(gw, headers, req->body, false);
    int rc = ag_upstream_start(gww->upstream, &u, msg_done, m, &m->xfer);
    if (rc < 0) {
        messages_error(req, 502, "api_error", "Upstream connection failed");
        return;
    }
    req->on_abort = msg_abort;
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
    if (ag_str_eq(path, AG_STR_LIT("/v1/messages")) && ag_str_eq(method, AG_STR_LIT("POST"))) {
        handle_messages(req, gww);
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
