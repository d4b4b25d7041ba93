/* SPDX-License-Identifier: MIT
 *
 * gateway.c: lifecycle, workers, routing and POST /api/generate. Checks run in the
 * seed's order (validation, limit, cache, upstream); every response carries
 * CORS, and the upstream body is exactly the seed's, with no field of ours.
 */
#include "util/platform.h"

#include <errno.h>
#include <string.h>

#include <openssl/evp.h>

#include "gateway/internal.h"
#include "upstream/sse.h"
#include "util/errors.h"
#include "util/fmt.h"
#include "util/json.h"
#include "util/log.h"
#include "util/utf.h"

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
        ag_kv_options_t ko = {.lmdb.no_sync = true}; /* a cache: a lost entry is only a miss */
        rc = ag_kv_open_namespace(cfg->data_dir, cfg->cache_binding, &ko, &gw->cache);
        if (rc < 0) {
            ag_log_error("cannot open the cache store %s/kv/%s: %s", cfg->data_dir,
                         cfg->cache_binding, ag_strerror(rc));
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
                         ag_strerror(rc));
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
            ag_log_error("cannot start the usage log: %s", ag_strerror(rc));
            goto fail;
        }
    }
    *out = gw;
    return 0;
fail:
    ag_gateway_free(gw);
    return rc < 0 ? rc : AG_EBADCONFIG;
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
            ag__gw_result_release(w->res);
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
    ag__gw_sha256_thread_done();
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
        ag_log_warn("request %s: usage entry not accepted: %s", req->id, ag_strerror(rc));
}

/* Starts recording: from here on the request gets exactly one usage entry. */
void ag__gw_usage_begin(usage_t *u, gw_worker_t *gww, ag_req_t *req, uint32_t prompt_units,
                        bool stream)
{
    u->req = req;
    u->log = gww->gw->usage_log;
    u->prompt_units = prompt_units;
    u->stream = stream;
    ag_pool_on_clear(&req->pool, usage_record, u);
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
    shared_result_t *err = res ? NULL : ag__gw_result_error(502, MSG_AI_ERROR);
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
            ag__gw_respond_result(g->req, r);
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
    ag__gw_result_release(err);
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
            ag__gw_respond_result(g->req, w->res);
        }
        ag__gw_result_release(w->res);
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
    shared_result_t *r = ag__gw_result_from_upstream(f->kv_key + 7, resp, f->fill ? &value : NULL);
    flight_deliver(gww, f->key, r);
    if (f->fill && value.len)
        ag__gw_cache_fill(gww, gww->loop, f->kv_key, &value);
    ag__gw_result_release(r);
    ag_buf_fini(&value);
    free(f->body);
    free(f);
}

/* An upstream call: the gateway's URL and timeouts, the given NULL-terminated
 * header lines. A stream gets an idle timeout instead of a total one, so a
 * long healthy stream is never cut while a stalled one is. */
ag_upstream_request_t ag__gw_upstream_request(ag_gateway_t *gw, const char *const *headers,
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
        ag_upstream_request_t u = ag__gw_upstream_request(gww->gw, gww->gw->generate_headers,
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
    shared_result_t *r = ag__gw_result_from_upstream(req->id, resp, NULL);
    gen_take_result(g, r);
    ag__gw_respond_result(req, r);
    ag__gw_result_release(r);
}

/* ---- /api/generate ---------------------------------------------------------------- */

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

bool ag__gw_has_token(ag_str_t header, const char *token)
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

const char *ag__gw_period_word(unsigned period_s, char *buf, size_t len)
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

bool ag__gw_check_rate_limit(gw_worker_t *gww, ag_req_t *req, named_limiter_t *nl, bool anthropic)
{
    ag_gateway_t *gw = gww->gw;
    char client[64];
    ag_client_ip(gw->trusted, req->client_ip, ag_req_header(req, "CF-Connecting-IP"),
                 ag_req_header(req, "X-Forwarded-For"), client);
    memcpy(req->client_ip, client, sizeof(client));
    ag_limit_result_t r;
    /* Monotonic: a wall-clock step (NTP) must not block or free clients. */
    ag_limiter_check(nl->lim, client, strlen(client), ag_mono_us(), &r);
    char num[24];
    ag_req_add_header(req, "RateLimit-Limit", ag_str(num, ag_fmt_u64(num, r.limit)));
    ag_req_add_header(req, "RateLimit-Remaining", ag_str(num, ag_fmt_u64(num, r.remaining)));
    ag_req_add_header(req, "RateLimit-Reset", ag_str(num, ag_fmt_u64(num, r.reset_s)));
    if (r.allowed)
        return true;
    ag_req_add_header(req, "Retry-After", ag_str(num, ag_fmt_u64(num, r.retry_after_s)));
    char word[32], msg[128];
    snprintf(msg, sizeof(msg), "Rate limit exceeded. Max %u requests/%s.", nl->limit,
             ag__gw_period_word(nl->period_s, word, sizeof(word)));
    if (anthropic)
        ag__gw_messages_error(req, 429, "rate_limit_error", msg);
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
    int n = ag__gw_jparse(req->body, stack, AG_ARRAY_LEN(stack), &toks, &heap);
    if (heap)
        ag_pool_on_clear(&req->pool, free, heap);
    if (n <= 0) {
        ag_req_respond_error(req, 400, MSG_INVALID_JSON);
        return;
    }
    bool is_object = toks[0].type == AG_JT_OBJECT;
    int jp = is_object ? ag_jtok_object_get(body, toks, 0, "prompt") : -1;
    size_t prompt_units =
        jp >= 0 && toks[jp].type == AG_JT_STRING ? ag_jtok_str_utf16_len(body, &toks[jp]) : 0;
    if (prompt_units == 0 || prompt_units > cfg->prompt_max_length) {
        ag_req_respond_error(req, 400, MSG_INVALID_PROMPT);
        return;
    }
    ag_buf_t pbuf;
    ag_buf_init(&pbuf, 0);
    if (ag_jtok_str_decode(body, &toks[jp], &pbuf) < 0) {
        ag_buf_fini(&pbuf);
        ag_req_respond_error(req, 500, MSG_INTERNAL);
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
            ag_req_respond_error(req, 400, MSG_INVALID_MODEL);
            return;
        }
    }
    req->log_model = ag_pool_strndup(&req->pool, model.ptr, model.len);
    /* Streaming is decided by the body alone, never by Accept. */
    int js = ag_jtok_object_get(body, toks, 0, "stream");
    bool stream = js >= 0 && toks[js].type == AG_JT_TRUE;
    ag__gw_usage_begin(&g->usage, gww, req, (uint32_t)prompt_units, stream);

    /* 2. rate limit */
    if (!ag__gw_check_rate_limit(gww, req, &gw->generate_limit, false))
        return;

    /* 3. cache: keyed on the exact upstream body, which holds everything that
     *    changes the answer (model, max_tokens, prompt). */
    g->body = ag__gw_build_upstream_body(&req->pool, model, cfg->max_tokens, prompt_text);
    if (!g->body.ptr) {
        ag_req_respond_error(req, 500, MSG_INTERNAL);
        return;
    }
    ag__gw_sha256_parts(&g->body, 1, g->key);
    char kv_key[8 + 2 * SHA256_DIGEST_LENGTH + 1];
    ag__gw_cache_key(g->key, kv_key);
    ag_str_t cc = ag_req_header(req, "Cache-Control");
    bool no_store = ag__gw_has_token(cc, "no-store");
    bool no_cache = no_store || ag__gw_has_token(cc, "no-cache");
    if (!no_cache && ag__gw_cache_lookup(gww, req, kv_key, stream ? &model : NULL, &g->usage))
        return;
    if (stream) {
        if (!gw->api_key_header) {
            ag_req_respond_error(req, 503, MSG_NO_KEY);
            return;
        }
        /* The same body plus "stream": the cache key stays the non-streaming
         * one, so streamed and plain requests share entries. */
        ag_str_t sbody = ag_str(ag_pool_printf(&req->pool, "%.*s,\"stream\":true}",
                                               (int)(g->body.len - 1), g->body.ptr),
                                g->body.len + 14);
        ag__gw_relay_start(gww, req, RELAY_GENERATE, sbody, gw->generate_headers,
                           gw->cache && !no_store ? kv_key : NULL, &g->usage);
        return;
    }

    /* 4. upstream */
    if (!gw->api_key_header) {
        ag_req_respond_error(req, 503, MSG_NO_KEY);
        return;
    }
    req->on_abort = gen_abort;
    if (no_store) {
        ag_upstream_request_t u = ag__gw_upstream_request(gw, gw->generate_headers, g->body, false);
        int rc = ag_upstream_start(gww->upstream, &u, gen_upstream_done, g, &g->xfer);
        if (rc < 0) {
            ag_log_error("request %s: cannot start the upstream call: %s", req->id,
                         ag_strerror(rc));
            ag_req_respond_error(req, 502, MSG_AI_ERROR);
        }
        return;
    }
    waiter_t *w = calloc(1, sizeof(*w));
    AG_ASSERT(w != NULL);
    if (flight_join(gww, g, g->key, w))
        start_fetch(gww, g->key, kv_key, g->body, gw->cache != NULL);
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
        ag__gw_handle_messages(req, gww);
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
