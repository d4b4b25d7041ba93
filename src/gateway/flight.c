/* SPDX-License-Identifier: MIT
 *
 * flight.c: flights (one upstream call per key), their waiters, the leader's
 * call, and the per-worker mailboxes that carry answers across threads.
 */
#include "util/platform.h"

#include <errno.h>
#include <string.h>

#include "gateway/flight.h"
#include "gateway/generation.h"
#include "gateway/steps.h"
#include "gateway/upcall.h"
#include "util/errors.h"
#include "util/log.h"

struct gw_waiter {
    gw_waiter_t *next;
    unsigned worker;
    gw_flight_cb cb;
    void *ctx;            /* valid while !cancelled; touched only by `worker`'s thread */
    shared_result_t *res; /* set by the delivering thread */
    bool cancelled;
};

/* One upstream call for a cache key; its waiters share the answer. */
struct gw_flight {
    gw_flight_t *next;
    unsigned char key[SHA256_DIGEST_LENGTH];
    gw_waiter_t *waiters;
    gw_fetch_t *fetch; /* its call; touched only on fetch_worker's thread */
    unsigned fetch_worker;
};

/* The upstream call behind a flight, owned by the worker that started it. */
struct gw_fetch {
    gw_fetch_t *prev, *next;
    gw_worker_t *w;
    gw_gen_ref_t *gen; /* keeps the route and its headers alive */
    const gw_route_t *route;
    gw_flight_finish_fn finish;
    unsigned char key[SHA256_DIGEST_LENGTH];
    char kv_key[GW_KV_KEY_LEN];
    char req_id[48]; /* the leading request's, for the log */
    char *body;      /* upstream request body */
    size_t body_len;
    char model[128];
    ag_call_t *call;
};

static flight_shard_t *shard_of(ag_gateway_t *gw, const unsigned char *key)
{
    return &gw->flights[key[0] % FLIGHT_SHARDS];
}

void gw_flight_init(ag_gateway_t *gw)
{
    for (unsigned i = 0; i < FLIGHT_SHARDS; i++)
        pthread_mutex_init(&gw->flights[i].lock, NULL);
    for (unsigned i = 0; i < MAX_WORKERS; i++)
        pthread_mutex_init(&gw->mailboxes[i].lock, NULL);
}

void gw_flight_fini(ag_gateway_t *gw)
{
    /* Deliveries that arrived after their worker stopped: nobody waits any more. */
    for (unsigned i = 0; i < MAX_WORKERS; i++) {
        gw_waiter_t *w = gw->mailboxes[i].items;
        while (w) {
            gw_waiter_t *next = w->next;
            ag__gw_result_release(w->res);
            free(w);
            w = next;
        }
        pthread_mutex_destroy(&gw->mailboxes[i].lock);
    }
    for (unsigned i = 0; i < FLIGHT_SHARDS; i++)
        pthread_mutex_destroy(&gw->flights[i].lock);
}

/* Hands `res` (NULL: a 502) to every waiter of the flight `key` and ends it.
 * Local waiters are answered now; others through their worker's mailbox. */
static void flight_deliver(gw_worker_t *w, const unsigned char *key, shared_result_t *res,
                           int64_t cpu_us)
{
    ag_gateway_t *gw = w->gw;
    flight_shard_t *sh = shard_of(gw, key);
    pthread_mutex_lock(&sh->lock);
    gw_flight_t **pp = &sh->head, *f = NULL;
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
    gw_waiter_t *wt = f->waiters;
    unsigned nwaiters = 0;
    for (gw_waiter_t *x = wt; x; x = x->next)
        nwaiters++;
    if (r && nwaiters)
        r->cpu_share_us = cpu_us / nwaiters; /* before any other thread sees r */
    free(f);
    while (wt) {
        gw_waiter_t *next = wt->next;
        if (wt->worker == w->index) {
            gw_flight_cb cb = wt->cb;
            void *ctx = wt->ctx;
            free(wt);
            cb(ctx, r);
        } else {
            if (r)
                atomic_fetch_add(&r->refs, 1);
            wt->res = r;
            mailbox_t *mb = &gw->mailboxes[wt->worker];
            pthread_mutex_lock(&mb->lock);
            wt->next = mb->items;
            mb->items = wt;
            if (mb->async)
                uv_async_send(mb->async);
            pthread_mutex_unlock(&mb->lock);
        }
        wt = next;
    }
    ag__gw_result_release(err);
}

static void on_mail(uv_async_t *a)
{
    gw_worker_t *w = a->data;
    mailbox_t *mb = &w->gw->mailboxes[w->index];
    pthread_mutex_lock(&mb->lock);
    gw_waiter_t *wt = mb->items;
    mb->items = NULL;
    pthread_mutex_unlock(&mb->lock);
    while (wt) {
        gw_waiter_t *next = wt->next;
        if (!wt->cancelled)
            wt->cb(wt->ctx, wt->res);
        ag__gw_result_release(wt->res);
        free(wt);
        wt = next;
    }
}

bool gw_flight_join(gw_worker_t *w, const unsigned char *key, gw_flight_cb cb, void *ctx,
                    gw_waiter_t **out)
{
    gw_waiter_t *wt = calloc(1, sizeof(*wt));
    AG_ASSERT(wt != NULL);
    wt->worker = w->index;
    wt->cb = cb;
    wt->ctx = ctx;
    *out = wt;
    flight_shard_t *sh = shard_of(w->gw, key);
    pthread_mutex_lock(&sh->lock);
    gw_flight_t *f = sh->head;
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
    wt->next = f->waiters;
    f->waiters = wt;
    pthread_mutex_unlock(&sh->lock);
    return lead;
}

static void fetch_unlink(gw_worker_t *w, gw_fetch_t *f);
static void fetch_free(gw_fetch_t *f);

void gw_flight_leave(gw_worker_t *w, gw_waiter_t *wt, const unsigned char *key)
{
    flight_shard_t *sh = shard_of(w->gw, key);
    bool removed = false;
    gw_flight_t *orphan = NULL;
    pthread_mutex_lock(&sh->lock);
    for (gw_flight_t **fp = &sh->head; *fp; fp = &(*fp)->next) {
        gw_flight_t *f = *fp;
        if (memcmp(f->key, key, SHA256_DIGEST_LENGTH) != 0)
            continue;
        for (gw_waiter_t **pp = &f->waiters; *pp; pp = &(*pp)->next) {
            if (*pp == wt) {
                *pp = wt->next;
                removed = true;
                break;
            }
        }
        /* Nobody waits any more: the call is stopped, it costs tokens (and a
         * held call must leave the queue at once). Only its own worker can
         * stop it; a flight left last on another worker runs to its end. */
        if (removed && !f->waiters && f->fetch && f->fetch_worker == w->index) {
            *fp = f->next;
            orphan = f;
        }
        break; /* one flight per key */
    }
    pthread_mutex_unlock(&sh->lock);
    if (removed)
        free(wt);
    else
        wt->cancelled = true; /* already on its way to our mailbox; on_mail frees it */
    if (orphan) {
        gw_fetch_t *fetch = orphan->fetch;
        free(orphan);
        fetch_unlink(w, fetch);
        ag_call_cancel(fetch->call);
        fetch_free(fetch);
    }
}

/* The flight `key` is run by `fetch` on worker w (the leader's). */
static void flight_set_fetch(gw_worker_t *w, const unsigned char *key, gw_fetch_t *fetch)
{
    flight_shard_t *sh = shard_of(w->gw, key);
    pthread_mutex_lock(&sh->lock);
    for (gw_flight_t *f = sh->head; f; f = f->next) {
        if (memcmp(f->key, key, SHA256_DIGEST_LENGTH) == 0) {
            f->fetch = fetch;
            f->fetch_worker = w->index;
            break;
        }
    }
    pthread_mutex_unlock(&sh->lock);
}

/* ---- the leader's call ---------------------------------------------------------- */

static void fetch_unlink(gw_worker_t *w, gw_fetch_t *f)
{
    if (f->prev)
        f->prev->next = f->next;
    else
        w->fetches = f->next;
    if (f->next)
        f->next->prev = f->prev;
}

static void fetch_free(gw_fetch_t *f)
{
    gw_gen_release(f->gen);
    free(f->body);
    free(f);
}

static void fetch_done(void *ctx, const ag_upstream_response_t *resp, const ag_call_summary_t *s)
{
    gw_fetch_t *f = ctx;
    gw_worker_t *w = f->w;
    f->call = NULL;
    fetch_unlink(w, f);
    int64_t t0 = ag_mono_us();
    gw_call_info_t info;
    gw_call_info_from(&info, s);
    shared_result_t *r;
    if (s->refusal) {
        r = ag__gw_result_error(503, gw_call_refusal_message(s->refusal));
    } else {
        /* A fallback's answer is not the one asked for: never cached for the first model. */
        r = f->finish(w, f->route, f->kv_key, f->req_id, resp, !info.fallback_from[0]);
    }
    if (r)
        r->call = info;
    flight_deliver(w, f->key, r, resp->cpu_us + ag_mono_us() - t0);
    ag__gw_result_release(r);
    fetch_free(f);
}

void gw_flight_fetch(gw_worker_t *w, const gw_route_t *route, const unsigned char *key,
                     const char *kv_key, const char *req_id, const char *model, ag_str_t body,
                     const char *const *headers, gw_flight_finish_fn finish)
{
    gw_fetch_t *f = calloc(1, sizeof(*f));
    char *copy = f ? malloc(body.len) : NULL;
    int rc = -ENOMEM;
    if (f && copy) {
        f->w = w;
        f->gen = gw_gen_hold(w, route->gen);
        f->route = route;
        f->finish = finish;
        memcpy(f->key, key, SHA256_DIGEST_LENGTH);
        snprintf(f->kv_key, sizeof(f->kv_key), "%s", kv_key);
        snprintf(f->req_id, sizeof(f->req_id), "%s", req_id);
        memcpy(copy, body.ptr, body.len);
        f->body = copy;
        f->body_len = body.len;
        snprintf(f->model, sizeof(f->model), "%s", model);
        ag_upstream_request_t u =
            gw_upstream_request(route->gen, headers, ag_str(f->body, f->body_len), false);
        /* Linked first: the call may answer before it returns (a refusal). */
        f->next = w->fetches;
        if (w->fetches)
            w->fetches->prev = f;
        w->fetches = f;
        flight_set_fetch(w, key, f);
        rc = gw_call_start(w, route, f->model, &u, fetch_done, f, &f->call);
        if (rc < 0) {
            flight_set_fetch(w, key, NULL);
            fetch_unlink(w, f);
            gw_gen_release(f->gen);
            f->gen = NULL;
        }
    }
    if (rc < 0) {
        ag_log_error("cannot start the upstream call: %s", ag_strerror(rc));
        free(copy);
        free(f);
        flight_deliver(w, key, NULL, 0);
        return;
    }
}

/* ---- workers -------------------------------------------------------------------- */

int gw_flight_worker_init(gw_worker_t *w)
{
    int rc = uv_async_init(w->loop, &w->mail, on_mail);
    if (rc < 0)
        return rc;
    w->mail.data = w;
    mailbox_t *mb = &w->gw->mailboxes[w->index];
    pthread_mutex_lock(&mb->lock);
    mb->async = &w->mail;
    pthread_mutex_unlock(&mb->lock);
    return 0;
}

void gw_flight_worker_stop(gw_worker_t *w, uv_close_cb on_mailbox_closed)
{
    mailbox_t *mb = &w->gw->mailboxes[w->index];
    pthread_mutex_lock(&mb->lock);
    mb->async = NULL;
    pthread_mutex_unlock(&mb->lock);
    /* Calls still in flight (a forced shutdown): their waiters elsewhere get a 502. */
    while (w->fetches) {
        gw_fetch_t *f = w->fetches;
        w->fetches = f->next;
        ag_call_cancel(f->call);
        flight_deliver(w, f->key, NULL, 0);
        fetch_free(f);
    }
    uv_close((uv_handle_t *)&w->mail, on_mailbox_closed);
}
