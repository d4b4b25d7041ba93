/* SPDX-License-Identifier: MIT
 *
 * generation.c: building a generation from the config, and the per-worker
 * holds that let requests use one without a shared counter on the hot path.
 */
#include "util/platform.h"

#include <errno.h>
#include <string.h>

#include "gateway/generation.h"
#include "store/secrets.h"
#include "store/secrets_resolve.h"
#include "util/errors.h"
#include "util/log.h"

static void free_models(char **m, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(m[i]);
    free(m);
}

static void lim_box_unref(gw_lim_box_t *b)
{
    if (b && atomic_fetch_sub(&b->refs, 1) == 1) {
        ag_limiter_free(b->lim);
        free(b);
    }
}

static void gen_free(gw_gen_t *g)
{
    if (g->api_key_header) {
        /* Scrub the secret before giving the memory back. */
        explicit_bzero(g->api_key_header, strlen(g->api_key_header));
        free(g->api_key_header);
    }
    free(g->messages_url);
    free(g->count_tokens_url);
    for (char **o = g->cors_origins; o && *o; o++)
        free(*o);
    free(g->cors_origins);
    ag_trusted_free(g->trusted);
    ag_trusted_free(g->trusted_cf);
    free(g->default_model);
    for (size_t i = 0; i < g->nprices; i++)
        free((char *)g->prices[i].model);
    free(g->prices);
    for (size_t i = 0; i < g->nfallbacks; i++) {
        free(g->fallbacks[i].model);
        free_models(g->fallbacks[i].chain, g->fallbacks[i].n);
    }
    free(g->fallbacks);
    for (size_t i = 0; i < g->nrouting; i++) {
        free(g->routing[i].task);
        free(g->routing[i].model);
    }
    free(g->routing);
    for (size_t i = 0; i < g->nroutes; i++) {
        gw_route_t *r = &g->routes[i];
        if (!r->limit.shared)
            lim_box_unref(r->limit.box);
        free(r->limit.name);
        free_models(r->models, r->nmodels);
    }
    free(g);
}

void gw_gen_unref(gw_gen_t *gen)
{
    if (gen && atomic_fetch_sub(&gen->refs, 1) == 1)
        gen_free(gen);
}

/* The route's limit: its merged numbers, or those of its ratelimit binding;
 * routes whose bindings name one namespace_id share one limiter, as on Workers. */
static int build_limit(gw_gen_t *g, gw_route_t *r, const ag_config_t *cfg,
                       const ag_route_settings_t *s, const gw_gen_t *prev)
{
    const ag_config_ratelimit_t *rl =
        s->rate_limit_binding ? ag_config_ratelimit(cfg, s->rate_limit_binding) : NULL;
    gw_limit_t *nl = &r->limit;
    nl->limit = rl ? rl->limit : s->rate_limit;
    nl->period_s = rl ? rl->period_s : s->rate_period_s;
    if (rl)
        nl->name = strdup(rl->namespace_id);
    else if (asprintf(&nl->name, "route:%s", r->def->path) < 0)
        nl->name = NULL;
    if (!nl->name)
        return -ENOMEM;
    for (gw_route_t *o = g->routes; o < r; o++) {
        if (o->limit.lim && strcmp(o->limit.name, nl->name) == 0) {
            nl->lim = o->limit.lim;
            nl->box = o->limit.box;
            nl->shared = true;
            nl->limit = o->limit.limit;
            nl->period_s = o->limit.period_s;
            return 0;
        }
    }
    /* The previous generation's limiter of this name and these numbers keeps
     * its counts: a reload must not hand every client a fresh quota. */
    for (size_t i = 0; prev && i < prev->nroutes; i++) {
        const gw_limit_t *pl = &prev->routes[i].limit;
        if (pl->box && strcmp(pl->name, nl->name) == 0 && pl->limit == nl->limit &&
            pl->period_s == nl->period_s) {
            atomic_fetch_add(&pl->box->refs, 1);
            nl->box = pl->box;
            nl->lim = pl->box->lim;
            return 0;
        }
    }
    nl->box = calloc(1, sizeof(*nl->box));
    if (!nl->box)
        return -ENOMEM;
    atomic_init(&nl->box->refs, 1);
    ag_limiter_config_t lc = {
        .limit = nl->limit, .period_s = nl->period_s, .max_entries = 1u << 20};
    int rc = ag_limiter_new(&lc, &nl->box->lim);
    if (rc < 0)
        ag_log_error("cannot create the rate limiter of %s: %s", r->def->path, ag_strerror(rc));
    nl->lim = nl->box->lim;
    return rc;
}

static int build_routes(gw_gen_t *g, const ag_config_t *cfg, FILE *errs, const gw_gen_t *prev)
{
    int errors = 0;
    /* A table for a route we do not serve is a mistake worth stopping for. */
    for (size_t i = 0; i < cfg->nroutes; i++) {
        bool known = false;
        for (size_t j = 0; j < gw_nroute_defs; j++)
            known = known || (gw_route_defs[j].proto &&
                              strcmp(gw_route_defs[j].path, cfg->routes[i].path) == 0);
        if (!known) {
            if (errs)
                fprintf(errs, "%s:%u:%u: aigate.routes.\"%s\": no such AI route (routes:",
                        cfg->path ? cfg->path : "(config)", cfg->routes[i].line, cfg->routes[i].col,
                        cfg->routes[i].path);
            for (size_t j = 0; errs && j < gw_nroute_defs; j++)
                if (gw_route_defs[j].proto)
                    fprintf(errs, " %s", gw_route_defs[j].path);
            if (errs)
                fprintf(errs, ")\n");
            errors++;
        }
    }
    if (errors)
        return AG_EBADCONFIG;
    for (size_t j = 0; j < gw_nroute_defs; j++) {
        gw_route_t *r = &g->routes[g->nroutes++];
        r->def = &gw_route_defs[j];
        r->gen = g;
        if (!r->def->proto)
            continue;
        ag_route_settings_t s;
        ag_config_route_settings(cfg, r->def->path, &s);
        r->cache = s.cache && cfg->cache;
        r->models = calloc(s.nmodels + 1, sizeof(char *));
        if (!r->models)
            return -ENOMEM;
        for (size_t k = 0; k < s.nmodels; k++) {
            r->models[k] = strdup(s.models[k]);
            if (!r->models[k])
                return -ENOMEM;
            r->nmodels++;
        }
        int rc = build_limit(g, r, cfg, &s, prev);
        if (rc < 0)
            return rc;
    }
    return 0;
}

int gw_gen_new(const ag_config_t *cfg, FILE *errs, gw_gen_t **out)
{
    return gw_gen_new_from(cfg, NULL, errs, out);
}

int gw_gen_new_from(const ag_config_t *cfg, const gw_gen_t *prev, FILE *errs, gw_gen_t **out)
{
    gw_gen_t *g = calloc(1, sizeof(*g));
    if (!g)
        return -ENOMEM;
    atomic_init(&g->refs, 1);
    g->number = prev ? prev->number + 1 : 1;
    const char *base = cfg->upstream;
    size_t blen = strlen(base);
    while (blen > 0 && base[blen - 1] == '/')
        blen--;
    int rc = -ENOMEM;
    if (asprintf(&g->messages_url, "%.*s/v1/messages", (int)blen, base) < 0) {
        g->messages_url = NULL;
        goto fail;
    }
    if (asprintf(&g->count_tokens_url, "%.*s/v1/messages/count_tokens", (int)blen, base) < 0) {
        g->count_tokens_url = NULL;
        goto fail;
    }
    g->auth = cfg->auth;
    g->redis_fail_open = cfg->redis_fail == 1;
    g->cors_origins_set = cfg->cors_origins_set;
    size_t norigins = 0;
    while (cfg->cors_origins && cfg->cors_origins[norigins])
        norigins++;
    if (!(g->cors_origins = calloc(norigins + 1, sizeof(char *))))
        goto fail;
    for (size_t i = 0; i < norigins; i++) {
        if (!(g->cors_origins[i] = strdup(cfg->cors_origins[i])))
            goto fail;
        g->cors_wildcard = g->cors_wildcard || strcmp(cfg->cors_origins[i], "*") == 0;
    }
    char *key = NULL;
    if (ag_secrets_resolve(cfg->data_dir, cfg->api_key_secret, &key) == 0) {
        int n = asprintf(&g->api_key_header, "x-api-key: %s", key);
        ag_secrets_value_free(key);
        if (n < 0) {
            g->api_key_header = NULL;
            goto fail;
        }
    } else {
        ag_log_warn("%s is not set (environment or .dev.vars): AI routes will answer 503 until "
                    "it is",
                    cfg->api_key_secret);
    }
    g->generate_headers[0] = g->api_key_header;
    g->generate_headers[1] = "anthropic-version: " ANTHROPIC_VERSION;
    g->generate_headers[2] = "content-type: application/json";
    g->generate_headers[3] = "accept: application/json";
    const char *bad = NULL;
    rc = ag_trusted_new(cfg->trusted_proxies, &g->trusted, &bad);
    if (rc < 0) {
        size_t i = 0; /* which item: its position in the file */
        while (bad && cfg->trusted_proxies[i] && cfg->trusted_proxies[i] != bad)
            i++;
        ag_config_pos_t at = ag_config_list_pos(cfg, &cfg->trusted_proxies, i);
        if (errs)
            fprintf(errs, "%s:%u:%u: aigate.trusted_proxies[%zu]: '%s' is not an address or CIDR\n",
                    cfg->path ? cfg->path : "(config)", at.line ? at.line : 1, at.col ? at.col : 1,
                    i, bad ? bad : "?");
        rc = AG_EBADCONFIG;
        goto fail;
    }
    rc = ag_trusted_new(cfg->trusted_proxies_cf, &g->trusted_cf, &bad);
    if (rc < 0) {
        if (errs)
            fprintf(errs, "%s: aigate.trusted_proxies_cf: '%s' is not an address or CIDR\n",
                    cfg->path ? cfg->path : "(config)", bad ? bad : "?");
        rc = AG_EBADCONFIG;
        goto fail;
    }
    g->ipv6_prefix = cfg->ipv6_prefix;
    g->connect_timeout_ms = cfg->upstream_connect_timeout_ms;
    g->timeout_ms = cfg->upstream_timeout_ms;
    g->stream_idle_timeout_ms = cfg->stream_idle_timeout_ms;
    g->prompt_max_length = cfg->prompt_max_length;
    g->max_tokens = cfg->max_tokens;
    g->cache_ttl_s = (cfg->cache_ttl_ms + 999) / 1000;
    rc = -ENOMEM;
    g->default_model = strdup(cfg->default_model);
    g->prices = calloc(cfg->nprices + 1, sizeof(*g->prices));
    if (!g->default_model || !g->prices)
        goto fail;
    for (size_t i = 0; i < cfg->nprices; i++) {
        g->prices[i] = (ag_price_t){.model = strdup(cfg->prices[i].model),
                                    .input_per_mtok = cfg->prices[i].input_per_mtok,
                                    .output_per_mtok = cfg->prices[i].output_per_mtok};
        if (!g->prices[i].model)
            goto fail;
        g->nprices++;
    }
    g->retry = (ag_retry_policy_t){
        .retries = cfg->upstream_retries,
        .base_ms = cfg->upstream_retry_base_ms,
        .max_ms = cfg->upstream_retry_max_ms,
        .max_wait_ms = cfg->upstream_retry_max_wait_ms,
        .deadline_ms = cfg->upstream_deadline_ms,
    };
    g->queue_max = cfg->queue_max;
    g->queue_timeout_ms = cfg->queue_timeout_ms;
    g->fallbacks = calloc(cfg->nfallbacks + 1, sizeof(*g->fallbacks));
    g->routing = calloc(cfg->nrouting + 1, sizeof(*g->routing));
    if (!g->fallbacks || !g->routing)
        goto fail;
    for (size_t i = 0; i < cfg->nfallbacks; i++) {
        const ag_config_fallback_t *f = &cfg->fallbacks[i];
        ag_config_fallback_t *c = &g->fallbacks[g->nfallbacks++];
        c->model = strdup(f->model);
        c->chain = calloc(f->n + 1, sizeof(char *));
        if (!c->model || !c->chain)
            goto fail;
        for (; c->n < f->n; c->n++) {
            if (!(c->chain[c->n] = strdup(f->chain[c->n])))
                goto fail;
        }
    }
    for (size_t i = 0; i < cfg->nrouting; i++) {
        ag_config_task_route_t *c = &g->routing[g->nrouting++];
        c->task = strdup(cfg->routing[i].task);
        c->model = strdup(cfg->routing[i].model);
        if (!c->task || !c->model)
            goto fail;
    }
    rc = build_routes(g, cfg, errs, prev);
    if (rc < 0)
        goto fail;
    *out = g;
    return 0;
fail:
    gen_free(g);
    return rc;
}

const gw_route_t *gw_gen_route(const gw_gen_t *gen, ag_str_t method, ag_str_t path,
                               bool *path_known)
{
    *path_known = false;
    for (size_t i = 0; i < gen->nroutes; i++) {
        const gw_route_t *r = &gen->routes[i];
        if (!ag_str_eq(path, ag_str_c(r->def->path)))
            continue;
        *path_known = true;
        if (ag_str_eq(method, ag_str_c(r->def->method)) ||
            (strcmp(r->def->method, "GET") == 0 && ag_str_eq(method, AG_STR_LIT("HEAD"))))
            return r;
    }
    return NULL;
}

const char *gw_gen_task_model(const gw_gen_t *gen, const char *task, size_t len)
{
    for (size_t i = 0; i < gen->nrouting; i++) {
        if (strlen(gen->routing[i].task) == len && memcmp(gen->routing[i].task, task, len) == 0)
            return gen->routing[i].model;
    }
    return gen->default_model;
}

const char *const *gw_gen_fallbacks(const gw_gen_t *gen, const char *model, size_t *n)
{
    for (size_t i = 0; model && i < gen->nfallbacks; i++) {
        if (strcmp(gen->fallbacks[i].model, model) == 0) {
            *n = gen->fallbacks[i].n;
            return (const char *const *)gen->fallbacks[i].chain;
        }
    }
    *n = 0;
    return NULL;
}

bool gw_route_model_allowed(const gw_route_t *r, const char *model, size_t len)
{
    const char *dm = r->gen->default_model;
    if (strlen(dm) == len && memcmp(dm, model, len) == 0)
        return true;
    for (size_t i = 0; i < r->nmodels; i++) {
        if (strlen(r->models[i]) == len && memcmp(r->models[i], model, len) == 0)
            return true;
    }
    return false;
}

/* ---- holds ------------------------------------------------------------------ */

static void ref_drop(gw_gen_ref_t *ref)
{
    gw_gen_unref(ref->gen);
    free(ref);
}

/* The worker's current hold was superseded: keep it while requests use it. */
static void ref_retire(gw_worker_t *w, gw_gen_ref_t *ref)
{
    if (ref->users == 0) {
        ref_drop(ref);
        return;
    }
    ref->next = w->old_gens;
    w->old_gens = ref;
}

gw_gen_ref_t *gw_gen_acquire(gw_worker_t *w)
{
    /* The fast path is a plain load of a pointer that changes once per reload:
     * no cache line bounces between workers, as a shared counter would. */
    gw_gen_t *cur = atomic_load_explicit(&w->gw->current, memory_order_acquire);
    gw_gen_ref_t *ref = w->gen;
    if (!ref || ref->gen != cur) {
        /* Once per worker per reload: take a reference under the lock the
         * publisher swaps under, so the generation cannot be freed between
         * reading `current` and counting ourselves in. */
        gw_gen_ref_t *n = calloc(1, sizeof(*n));
        AG_ASSERT(n != NULL);
        pthread_mutex_lock(&w->gw->gen_lock);
        cur = atomic_load_explicit(&w->gw->current, memory_order_relaxed);
        atomic_fetch_add(&cur->refs, 1);
        pthread_mutex_unlock(&w->gw->gen_lock);
        n->gen = cur;
        n->worker = w;
        w->gen = n;
        if (ref)
            ref_retire(w, ref);
        ref = n;
    }
    ref->users++;
    return ref;
}

gw_gen_ref_t *gw_gen_hold(gw_worker_t *w, const gw_gen_t *gen)
{
    gw_gen_ref_t *ref = w->gen && w->gen->gen == gen ? w->gen : w->old_gens;
    while (ref && ref->gen != gen)
        ref = ref->next;
    AG_ASSERT(ref != NULL && ref->users > 0); /* a request of this worker holds it */
    ref->users++;
    return ref;
}

void gw_gen_release(gw_gen_ref_t *ref)
{
    AG_ASSERT(ref->users > 0);
    if (--ref->users > 0 || ref->worker->gen == ref)
        return;
    gw_worker_t *w = ref->worker;
    for (gw_gen_ref_t **pp = &w->old_gens; *pp; pp = &(*pp)->next) {
        if (*pp == ref) {
            *pp = ref->next;
            break;
        }
    }
    ref_drop(ref);
}

void gw_gen_publish(ag_gateway_t *gw, gw_gen_t *gen)
{
    pthread_mutex_lock(&gw->gen_lock);
    gw_gen_t *old = atomic_load_explicit(&gw->current, memory_order_relaxed);
    atomic_store_explicit(&gw->current, gen, memory_order_release);
    pthread_mutex_unlock(&gw->gen_lock);
    gw_gen_unref(old);
}

void gw_gen_worker_done(gw_worker_t *w)
{
    gw_gen_ref_t *ref = w->gen;
    w->gen = NULL;
    if (ref)
        ref_retire(w, ref);
    /* Requests are gone by now; anything left would be a leak of ours. */
    while (w->old_gens && w->old_gens->users == 0) {
        gw_gen_ref_t *r = w->old_gens;
        w->old_gens = r->next;
        ref_drop(r);
    }
}
