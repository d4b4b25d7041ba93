/* SPDX-License-Identifier: MIT
 *
 * gateway.c: the gateway's lifecycle: stores, the usage log and observers
 * opened once; generations built and published; workers started and stopped;
 * and each finished request's record turned into its usage entry.
 */
#include "util/platform.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <openssl/rand.h>

#include "gateway/access.h"
#include "gateway/cache.h"
#include "gateway/flight.h"
#include "gateway/upcall.h"
#include "gateway/generation.h"
#include "gateway/keys_sync.h"
#include "gateway/router.h"
#include "store/secrets.h"
#include "store/secrets_resolve.h"
#include "util/errors.h"
#include "util/hex.h"
#include "util/log.h"

/* How often worker 0 reclaims expired cache entries. */
#define SWEEP_INTERVAL_MS 60000

static bool any_route_caches(const gw_gen_t *g)
{
    for (size_t i = 0; i < g->nroutes; i++) {
        if (g->routes[i].cache)
            return true;
    }
    return false;
}

static int open_usage_log(ag_gateway_t *gw, const ag_config_t *cfg, const gw_gen_t *gen)
{
    const ag_config_binding_t *b = ag_config_r2_binding(cfg, cfg->usage_log_binding);
    const char *bucket = b && b->target ? b->target : "usage-logs";
    const char *backend = b ? b->backend : NULL;
    ag_objstore_s3_where_t where = {cfg->s3_endpoint, cfg->s3_region, cfg->s3_path_style};
    int rc =
        ag_objstore_open_binding(cfg->data_dir, bucket, true, backend, &where, &gw->log_bucket);
    if (rc < 0) {
        if (backend)
            ag_log_error("cannot open the usage-log bucket %s on S3: %s (%s)", bucket,
                         ag_strerror(rc), ag_objstore_last_error());
        else
            ag_log_error("cannot open the usage-log bucket %s/r2/%s: %s", cfg->data_dir, bucket,
                         ag_strerror(rc));
        return rc;
    }
    /* The spool is for a store across the network: the directory backend's
     * bucket shares its disk with the spool, which would only write twice. */
    char spool[4096];
    bool spooled = backend && strcmp(backend, AG_OBJ_BACKEND_S3) == 0 && cfg->usage_log_spool_max;
    if (spooled) {
        int n = snprintf(spool, sizeof(spool), "%s/spool/usage-log/%s",
                         cfg->data_dir ? cfg->data_dir : AG_STORE_DEFAULT_DATA_DIR, bucket);
        if (n < 0 || (size_t)n >= sizeof(spool)) {
            ag_log_error("the usage-log spool's path is too long (data_dir)");
            return AG_EINVALID;
        }
    }
    ag_usage_log_options_t lo = {
        .store = gw->log_bucket,
        .flush_interval_ms = cfg->usage_log_flush_ms,
        .prices = gen->prices,
        .nprices = gen->nprices,
        .retention_days = cfg->usage_log_retention_days,
        .compress_days = true,
        .spool_dir = spooled ? spool : NULL,
        .spool_max_bytes = cfg->usage_log_spool_max,
    };
    rc = ag_usage_log_open(&lo, &gw->usage_log);
    if (rc < 0)
        ag_log_error("cannot start the usage log%s%s: %s", spooled ? " with its spool " : "",
                     spooled ? spool : "", ag_strerror(rc));
    return rc;
}

int ag_gateway_check_config(const ag_config_t *cfg, FILE *errs)
{
    gw_gen_t *gen = NULL;
    int rc = gw_gen_new(cfg, errs, &gen);
    gw_gen_unref(gen);
    return rc < 0 ? rc : 0;
}

/* Set once, before the gateway is built, by a binary upgrade's new process. */
static bool gw_handover;

void ag_gateway_set_handover(bool on)
{
    gw_handover = on;
}

/* [aigate.redis]: checked here (each worker connects on its own loop). */
static int redis_settings(ag_gateway_t *gw, const ag_config_t *cfg)
{
    ag_redis_url_t u;
    const char *why;
    if (ag_redis_url_parse(cfg->redis_url, &u, &why) < 0) {
        ag_log_error("aigate.redis.url: %s", why);
        return AG_EBADCONFIG;
    }
    gw->redis_url = strdup(cfg->redis_url);
    if (!gw->redis_url)
        return -ENOMEM;
    if (!u.password[0]) {
        int rc = ag_secrets_resolve(cfg->data_dir, "REDIS_PASSWORD", &gw->redis_password);
        if (rc == AG_ENOTFOUND) {
            rc = 0; /* a Redis without a password */
        } else if (rc < 0) {
            ag_log_error("cannot read the secret REDIS_PASSWORD: %s", ag_strerror(rc));
            return rc;
        }
    }
    gw->redis_timeout_ms = cfg->redis_timeout_ms;
    explicit_bzero(&u, sizeof(u));
    return 0;
}

int ag_gateway_new(const ag_config_t *cfg, FILE *errs, ag_gateway_t **out)
{
    ag_gateway_t *gw = calloc(1, sizeof(*gw));
    if (!gw)
        return -ENOMEM;
    pthread_mutex_init(&gw->gen_lock, NULL);
    gw_flight_init(gw);
    gw->nworkers = cfg->threads ? cfg->threads : 1;
    unsigned char id[16];
    if (RAND_bytes(id, sizeof(id)) != 1) {
        /* Only the claims on Redis use it: distinct per process is enough. */
        uint64_t t = (uint64_t)ag_now_us() ^ ((uint64_t)getpid() << 40);
        memcpy(id, &t, sizeof(t));
        memcpy(id + 8, &t, sizeof(t));
    }
    ag_hex_encode(id, sizeof(id), gw->instance_id);
    gw_gen_t *gen = NULL;
    int rc = ag_rates_new(&gw->rates);
    if (rc == 0)
        rc = gw_gen_new(cfg, errs, &gen);
    if (rc < 0)
        goto fail;
    atomic_store(&gw->current, gen);
    if (cfg->redis_url && (rc = redis_settings(gw, cfg)) < 0)
        goto fail;
    bool cache_on_redis =
        strcmp(ag_config_kv_backend(cfg, cfg->cache_binding), AG_KV_BACKEND_REDIS) == 0;
    if (any_route_caches(gen) && gw->redis_url && cache_on_redis) {
        /* Shared by every instance, laid out as kv_redis.c keeps a namespace
         * (so `aigate kv` reads it); Redis's TTLs expire the entries. */
        if (asprintf(&gw->cache_redis, AG_KV_REDIS_PREFIX "%s:", cfg->cache_binding) < 0) {
            gw->cache_redis = NULL;
            rc = -ENOMEM;
            goto fail;
        }
        if (asprintf(&gw->flight_redis, "aigate:flight:%s:", cfg->cache_binding) < 0) {
            gw->flight_redis = NULL;
            rc = -ENOMEM;
            goto fail;
        }
    } else if (any_route_caches(gen)) {
        /* A cache: a lost entry is only a miss, and the oldest go to stay in the bound. */
        ag_kv_options_t ko = {.lmdb.no_sync = true, .lmdb.max_bytes = cfg->cache_max_bytes};
        rc = ag_kv_open_namespace(cfg->data_dir, cfg->cache_binding, &ko, &gw->cache);
        if (rc < 0) {
            ag_log_error("cannot open the cache store %s/kv/%s: %s", cfg->data_dir,
                         cfg->cache_binding, ag_strerror(rc));
            goto fail;
        }
    }
    if (cfg->usage_log && (rc = open_usage_log(gw, cfg, gen)) < 0)
        goto fail;
    rc = ag_keys_open(cfg->data_dir, &gw->keys);
    if (rc < 0) {
        ag_log_error("cannot open the key store %s/" AG_KEYS_DIR ": %s", cfg->data_dir,
                     ag_strerror(rc));
        goto fail;
    }
    ag_budget_options_t bo = {.global_daily_usd = cfg->budget_daily_usd, .handover = gw_handover};
    rc = ag_budget_open(cfg->data_dir, &bo, &gw->budget);
    if (rc < 0) {
        ag_log_error("cannot open the budget store %s/" AG_BUDGET_DIR ": %s", cfg->data_dir,
                     ag_strerror(rc));
        goto fail;
    }
    gw->default_headers = gw_cors_default_headers(cfg);
    const char *routes[GW_MAX_ROUTES];
    for (size_t i = 0; i < gw_nroute_defs; i++)
        routes[i] = gw_route_defs[i].path;
    ag_obs_options_t oo = {
        .nworkers = gw->nworkers,
        .access_log = cfg->access_log,
        .metrics = cfg->admin_listen && *cfg->admin_listen,
        .routes = routes,
        .nroutes = gw_nroute_defs,
        .script_name = cfg->name,
    };
    rc = ag_obs_new(&oo, &gw->obs);
    if (rc < 0)
        goto fail;
    /* Tail events never show the upstream key, even in a header a client sent. */
    if (gen->api_key_header)
        ag_tail_add_secret(ag_obs_tail(gw->obs), gen->api_key_header + strlen("x-api-key: "));
    *out = gw;
    return 0;
fail:
    ag_gateway_free(gw);
    return rc < 0 ? rc : AG_EBADCONFIG;
}

int ag_gateway_apply(ag_gateway_t *gw, const ag_config_t *cfg, FILE *errs)
{
    /* Held so the limiters it shares cannot go while the new one is built. */
    pthread_mutex_lock(&gw->gen_lock);
    gw_gen_t *prev = atomic_load(&gw->current);
    atomic_fetch_add(&prev->refs, 1);
    pthread_mutex_unlock(&gw->gen_lock);
    gw_gen_t *gen = NULL;
    int rc = gw_gen_new_from(cfg, prev, errs, &gen);
    gw_gen_unref(prev);
    if (rc < 0)
        return rc;
    /* Entries accepted from now on are priced by the new table. */
    if (gw->usage_log && ag_usage_log_set_prices(gw->usage_log, gen->prices, gen->nprices) < 0) {
        gw_gen_unref(gen);
        return -ENOMEM;
    }
    int number = (int)gen->number;
    /* A key put with `aigate secret put` and deployed is hidden from tail too. */
    if (gen->api_key_header &&
        ag_tail_add_secret(ag_obs_tail(gw->obs), gen->api_key_header + strlen("x-api-key: ")) < 0)
        ag_log_warn("reload: the tail cannot hide one more upstream key (restart to reset the "
                    "list); tail events keep redacting every header that names a key");
    ag_budget_set_global(gw->budget, cfg->budget_daily_usd);
    gw_gen_publish(gw, gen);
    return number;
}

size_t ag_gateway_routes(const char **methods, const char **paths, size_t cap)
{
    for (size_t i = 0; i < gw_nroute_defs && i < cap; i++) {
        methods[i] = gw_route_defs[i].method;
        paths[i] = gw_route_defs[i].path;
    }
    return gw_nroute_defs;
}

unsigned ag_gateway_generation(ag_gateway_t *gw)
{
    pthread_mutex_lock(&gw->gen_lock);
    unsigned n = atomic_load(&gw->current)->number;
    pthread_mutex_unlock(&gw->gen_lock);
    return n;
}

void ag_gateway_free(ag_gateway_t *gw)
{
    if (!gw)
        return;
    ag_kv_close(gw->cache);
    free(gw->cache_redis);
    free(gw->flight_redis);
    /* Every accepted entry reaches the bucket before we exit: close flushes. */
    ag_usage_log_close(gw->usage_log);
    ag_usage_log_free(gw->usage_log);
    ag_objstore_close(gw->log_bucket);
    ag_obs_free(gw->obs);
    gw_flight_fini(gw);
    /* After the workers: their readers are gone, no reservation is outstanding. */
    ag_budget_close(gw->budget);
    ag_keys_close(gw->keys);
    ag_rates_free(gw->rates);
    free(gw->redis_url);
    ag_secrets_value_free(gw->redis_password);
    gw_gen_unref(atomic_load(&gw->current));
    pthread_mutex_destroy(&gw->gen_lock);
    free(gw);
}

ag_rates_t *ag_gateway_rates(ag_gateway_t *gw)
{
    return gw->rates;
}

ag_obs_t *ag_gateway_obs(ag_gateway_t *gw)
{
    return gw->obs;
}

ag_usage_log_t *ag_gateway_usage_log(ag_gateway_t *gw)
{
    return gw->usage_log;
}

ag_objstore_t *ag_gateway_log_bucket(ag_gateway_t *gw)
{
    return gw->log_bucket;
}

const char *ag_gateway_default_headers(const ag_gateway_t *gw)
{
    return gw->default_headers ? gw->default_headers : "";
}

/* ---- workers ------------------------------------------------------------------ */

static void worker_fini(ag_worker_t *sw, void *worker_ctx);

/* Each loop has its own connection: commands and answers never cross threads. */
static int worker_redis_open(gw_worker_t *w)
{
    ag_gateway_t *gw = w->gw;
    snprintf(w->redis_name, sizeof(w->redis_name), "worker %u", w->index);
    ag_redis_options_t ro = {
        .url = gw->redis_url,
        .password = gw->redis_password,
        .connect_timeout_ms = gw->redis_timeout_ms,
        .command_timeout_ms = gw->redis_timeout_ms,
        .name = w->redis_name,
    };
    int rc = ag_redis_new(w->loop, &ro, &w->redis);
    if (rc < 0)
        return rc;
    pthread_mutex_lock(&gw->gen_lock);
    gw->redis_clients[w->index] = w->redis;
    pthread_mutex_unlock(&gw->gen_lock);
    return 0;
}

static void worker_redis_close(gw_worker_t *w)
{
    if (!w->redis)
        return;
    pthread_mutex_lock(&w->gw->gen_lock);
    w->gw->redis_clients[w->index] = NULL;
    pthread_mutex_unlock(&w->gw->gen_lock);
    /* Pending checks fail (ECLOSED): their requests are answered by the policy. */
    ag_redis_close(w->redis);
    w->redis = NULL;
}

ag_gateway_redis_t ag_gateway_redis_state(ag_gateway_t *gw)
{
    if (!gw->redis_url)
        return AG_GATEWAY_REDIS_NONE;
    unsigned up = 0, clients = 0;
    pthread_mutex_lock(&gw->gen_lock);
    for (unsigned i = 0; i < gw->nworkers && i < MAX_WORKERS; i++) {
        if (gw->redis_clients[i]) {
            clients++;
            up += ag_redis_is_up(gw->redis_clients[i]);
        }
    }
    bool open = atomic_load(&gw->current)->redis_fail_open;
    pthread_mutex_unlock(&gw->gen_lock);
    /* Every worker talks to the same server: one that cannot reach it is
     * enough to call it down (its requests would fail). */
    if (clients > 0 && up == clients)
        return AG_GATEWAY_REDIS_UP;
    return open ? AG_GATEWAY_REDIS_DOWN_OPEN : AG_GATEWAY_REDIS_DOWN;
}

static int worker_init(ag_worker_t *sw, void *server_ctx, void **worker_ctx)
{
    ag_gateway_t *gw = server_ctx;
    if (ag_worker_index(sw) >= MAX_WORKERS || ag_worker_index(sw) >= gw->nworkers)
        return AG_EINVALID;
    gw_worker_t *w = calloc(1, sizeof(*w));
    if (!w)
        return -ENOMEM;
    w->gw = gw;
    w->index = ag_worker_index(sw);
    w->loop = ag_worker_loop(sw);
    int rc = ag_upstream_new(w->loop, &w->upstream);
    if (rc < 0) {
        free(w);
        return rc;
    }
    rc = gw_flight_worker_init(w);
    if (rc < 0) {
        ag_upstream_close(w->upstream);
        free(w);
        return rc;
    }
    rc = gw_upcall_worker_init(w);
    if (rc == 0)
        rc = ag_keys_reader_new(gw->keys, &w->keys);
    if (rc < 0) {
        ag_log_error("worker %u: cannot start: %s", w->index, ag_strerror(rc));
        worker_fini(sw, w);
        return rc;
    }
    if (gw->redis_url && (rc = worker_redis_open(w)) < 0) {
        ag_log_error("worker %u: cannot start its Redis client: %s", w->index, ag_strerror(rc));
        worker_fini(sw, w);
        return rc;
    }
    rc = ag_obs_worker_start(gw->obs, w->index, w->loop);
    if (rc == 0 && w->index == 0 && gw->cache)
        rc = ag_periodic_start(w->loop, SWEEP_INTERVAL_MS, gw_cache_sweep, gw, &w->sweep);
    if (rc == 0 && w->index == 0 && gw->redis_url)
        rc =
            gw_keys_sync_start(w->loop, gw->keys, gw->redis_url, gw->redis_password, &w->keys_sync);
    if (rc < 0) {
        ag_log_error("worker %u: cannot start: %s", w->index, ag_strerror(rc));
        worker_fini(sw, w);
        return rc;
    }
    *worker_ctx = w;
    return 0;
}

static void on_mailbox_closed(uv_handle_t *h)
{
    free(h->data);
}

static void worker_fini(ag_worker_t *sw, void *worker_ctx)
{
    gw_worker_t *w = worker_ctx;
    AG_UNUSED(sw);
    if (!w)
        return;
    ag_periodic_stop(w->sweep);
    gw_keys_sync_stop(w->keys_sync);
    w->keys_sync = NULL;
    worker_redis_close(w);
    /* Flights first: they cancel their own calls, which closing the client
     * would free under them (a drain cut short leaves some). */
    gw_flight_worker_stop(w, on_mailbox_closed);
    if (w->callq)
        gw_upcall_worker_stop(w);
    ag_upstream_close(w->upstream);
    gw_gen_worker_done(w);
    ag_keys_reader_free(w->keys);
    w->keys = NULL;
    ag_obs_worker_stop(w->gw->obs, w->index);
    ag__gw_sha256_thread_done();
}

/* ---- finished requests ---------------------------------------------------------- */

static void usage_entry(ag_usage_log_t *log, const ag_request_record_t *rec)
{
    const ag_ai_record_t *ai = &rec->ai;
    ag_usage_entry_t e;
    memset(&e, 0, sizeof(e));
    const char *model = ai->model ? ai->model : "";
    ag_usage_entry_set_str(e.model, sizeof(e.model), model, strlen(model));
    ag_usage_entry_set_str(e.client, sizeof(e.client), rec->client, strlen(rec->client));
    ag_usage_entry_set_str(e.request_id, sizeof(e.request_id), rec->id, strlen(rec->id));
    if (ai->outcome)
        ag_usage_entry_set_str(e.outcome, sizeof(e.outcome), ai->outcome, strlen(ai->outcome));
    e.prompt_length = ai->prompt_units;
    e.output_length = ai->output_units;
    e.input_tokens = ai->input_tokens;
    e.output_tokens = ai->output_tokens;
    e.cache_creation_input_tokens = ai->cache_write_tokens;
    e.cache_read_input_tokens = ai->cache_read_tokens;
    e.status = rec->status ? rec->status : 499;
    e.cached = ai->cache == AG_CACHE_HIT;
    e.stream = ai->stream;
    e.latency_ms = (uint32_t)(rec->duration_us / 1000);
    if (rec->route)
        ag_usage_entry_set_str(e.route, sizeof(e.route), rec->route, strlen(rec->route));
    e.cpu_us = (uint32_t)(rec->cpu_us > 0 ? rec->cpu_us : 0);
    e.attempts = ai->attempts;
    e.queued_ms = (uint32_t)(ai->queued_us / 1000);
    if (ai->key_name)
        ag_usage_entry_set_str(e.key, sizeof(e.key), ai->key_name, strlen(ai->key_name));
    if (ai->fallback_from)
        ag_usage_entry_set_str(e.fallback_from, sizeof(e.fallback_from), ai->fallback_from,
                               strlen(ai->fallback_from));
    int rc = ag_usage_log_append(log, &e);
    if (rc < 0)
        ag_log_warn("request %s: usage entry not accepted: %s", rec->id, ag_strerror(rc));
}

static void request_done(void *worker_ctx, const ag_request_record_t *rec)
{
    gw_worker_t *w = worker_ctx;
    if (rec->ai.usage && w->gw->usage_log)
        usage_entry(w->gw->usage_log, rec);
    ag_obs_request_done(w->gw->obs, w->index, rec);
}

ag_server_hooks_t ag_gateway_hooks(ag_gateway_t *gw)
{
    ag_server_hooks_t h = {
        .worker_init = worker_init,
        .worker_fini = worker_fini,
        .handle = gw_router_handle,
        .request_done = request_done,
        .respond_error = gw_router_respond_error,
        .server_ctx = gw,
    };
    return h;
}
