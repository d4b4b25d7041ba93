/* SPDX-License-Identifier: MIT
 *
 * rates.c: the per-model view of the upstream's rate limits. A model is open
 * (nothing counted), spent (nothing goes until the reset), or refilling after
 * a reset (permits: no more attempts than the window allows, less those
 * already on their way).
 */
#include "util/platform.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <strings.h>

#include "upstream/rates.h"
#include "upstream/retry.h"

struct ag_rate_model {
    char name[128];
    _Atomic int64_t until_ms;    /* 0: open; else spent until then, refilling after */
    _Atomic int64_t permits;     /* refilling: attempts that may still start */
    _Atomic int64_t outstanding; /* refilling: permits taken, not yet answered */
    _Atomic long queued;
    pthread_mutex_t lock; /* only to change state, never to read it */
};

struct ag_rates {
    pthread_mutex_t lock; /* only to add a model */
    _Atomic unsigned n;
    ag_rate_model_t models[AG_RATES_MAX_MODELS];
};

int ag_rates_new(ag_rates_t **out)
{
    ag_rates_t *r = calloc(1, sizeof(*r));
    if (!r)
        return -ENOMEM;
    pthread_mutex_init(&r->lock, NULL);
    for (unsigned i = 0; i < AG_RATES_MAX_MODELS; i++)
        pthread_mutex_init(&r->models[i].lock, NULL);
    *out = r;
    return 0;
}

void ag_rates_free(ag_rates_t *r)
{
    if (!r)
        return;
    for (unsigned i = 0; i < AG_RATES_MAX_MODELS; i++)
        pthread_mutex_destroy(&r->models[i].lock);
    pthread_mutex_destroy(&r->lock);
    free(r);
}

ag_rate_model_t *ag_rates_model(ag_rates_t *r, const char *model)
{
    if (!r || !model || strlen(model) >= sizeof(r->models[0].name))
        return NULL;
    unsigned n = atomic_load_explicit(&r->n, memory_order_acquire);
    for (unsigned i = 0; i < n; i++) {
        if (strcmp(r->models[i].name, model) == 0)
            return &r->models[i];
    }
    pthread_mutex_lock(&r->lock);
    ag_rate_model_t *m = NULL;
    n = atomic_load_explicit(&r->n, memory_order_relaxed);
    for (unsigned i = 0; i < n && !m; i++) {
        if (strcmp(r->models[i].name, model) == 0)
            m = &r->models[i];
    }
    if (!m && n < AG_RATES_MAX_MODELS) {
        m = &r->models[n];
        snprintf(m->name, sizeof(m->name), "%s", model);
        atomic_store_explicit(&r->n, n + 1, memory_order_release);
    }
    pthread_mutex_unlock(&r->lock);
    return m;
}

bool ag_rates_admit(ag_rate_model_t *m, int64_t now_ms, bool *took_permit, int64_t *until_ms)
{
    *took_permit = false;
    *until_ms = 0;
    if (!m)
        return true;
    int64_t until = atomic_load_explicit(&m->until_ms, memory_order_acquire);
    if (until == 0)
        return true;
    if (now_ms < until) {
        *until_ms = until;
        return false;
    }
    int64_t p = atomic_load(&m->permits);
    while (p > 0) {
        if (atomic_compare_exchange_weak(&m->permits, &p, p - 1)) {
            atomic_fetch_add(&m->outstanding, 1);
            *took_permit = true;
            return true;
        }
    }
    return false;
}

/* The numbers of the headers this view reads; -1: absent. */
typedef struct rate_headers {
    int64_t req_remaining, req_limit, req_reset;
    int64_t tok_remaining, tok_reset; /* the lowest of tokens, input and output tokens */
} rate_headers_t;

static int64_t number(ag_str_t v)
{
    if (v.len == 0 || v.len > 18)
        return -1;
    int64_t n = 0;
    for (size_t i = 0; i < v.len; i++) {
        if (v.ptr[i] < '0' || v.ptr[i] > '9')
            return -1;
        n = n * 10 + (v.ptr[i] - '0');
    }
    return n;
}

/* One pass over the header block: these arrive on every answer. */
static void read_headers(ag_str_t headers, rate_headers_t *h)
{
    static const char prefix[] = "anthropic-ratelimit-";
    const size_t plen = sizeof(prefix) - 1;
    *h = (rate_headers_t){-1, -1, -1, -1, -1};
    const char *p = headers.ptr, *end = headers.ptr + headers.len;
    while (p && p < end) {
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        const char *le = eol ? eol : end;
        const char *colon = memchr(p, ':', (size_t)(le - p));
        if (colon && (size_t)(colon - p) > plen && strncasecmp(p, prefix, plen) == 0) {
            ag_str_t name = ag_str(p + plen, (size_t)(colon - p) - plen);
            const char *v = colon + 1, *ve = le;
            while (v < ve && (*v == ' ' || *v == '\t'))
                v++;
            while (ve > v && (ve[-1] == '\r' || ve[-1] == ' ' || ve[-1] == '\t'))
                ve--;
            ag_str_t val = ag_str(v, (size_t)(ve - v));
            /* NAME is GROUP-FIELD: requests-, tokens-, input-tokens-, output-tokens-. */
            const char *last = name.ptr + name.len;
            while (last > name.ptr && last[-1] != '-')
                last--;
            ag_str_t group = ag_str(name.ptr, last > name.ptr ? (size_t)(last - 1 - name.ptr) : 0);
            ag_str_t field = ag_str(last, (size_t)(name.ptr + name.len - last));
            bool req = ag_str_eq_lit_ci(group, "requests");
            bool tok = ag_str_eq_lit_ci(group, "tokens") ||
                       ag_str_eq_lit_ci(group, "input-tokens") ||
                       ag_str_eq_lit_ci(group, "output-tokens");
            int64_t at;
            if (req && ag_str_eq_lit_ci(field, "remaining")) {
                h->req_remaining = number(val);
            } else if (req && ag_str_eq_lit_ci(field, "limit")) {
                h->req_limit = number(val);
            } else if (req && ag_str_eq_lit_ci(field, "reset")) {
                if (ag_parse_rfc3339_ms(val, &at) == 0)
                    h->req_reset = at;
            } else if (tok && ag_str_eq_lit_ci(field, "remaining")) {
                int64_t n = number(val);
                if (n >= 0 && (h->tok_remaining < 0 || n < h->tok_remaining))
                    h->tok_remaining = n;
            } else if (tok && ag_str_eq_lit_ci(field, "reset")) {
                if (ag_parse_rfc3339_ms(val, &at) == 0 && at > h->tok_reset)
                    h->tok_reset = at;
            }
        }
        p = eol ? eol + 1 : end;
    }
}

/* Spent until `until`, then `permits_after` attempts; a later reset wins.
 * @return whether the view changed. */
static bool spend(ag_rate_model_t *m, int64_t until_ms, int64_t permits_after)
{
    bool changed = false;
    pthread_mutex_lock(&m->lock);
    int64_t until = atomic_load(&m->until_ms);
    if (until == 0 || until_ms > until) {
        atomic_store(&m->permits, permits_after);
        atomic_store(&m->until_ms, until_ms);
        changed = true;
    }
    pthread_mutex_unlock(&m->lock);
    return changed;
}

void ag_rates_spend(ag_rate_model_t *m, int64_t until_ms, int64_t now_ms)
{
    if (m && until_ms > now_ms && until_ms > atomic_load(&m->until_ms))
        spend(m, until_ms, 1);
}

int64_t ag_rates_observe(ag_rate_model_t *m, int status, ag_str_t headers, int64_t now_ms,
                         bool took_permit)
{
    if (!m)
        return 0;
    if (took_permit)
        atomic_fetch_sub(&m->outstanding, 1);
    rate_headers_t h;
    read_headers(headers, &h);
    int64_t spent_until = 0, permits_after = 1;
    if (h.req_remaining == 0 && h.req_reset > now_ms) {
        spent_until = h.req_reset;
        permits_after = h.req_limit > 0 ? h.req_limit : 1;
    }
    if (h.tok_remaining == 0 && h.tok_reset > now_ms) {
        /* Tokens refill as they please: one probe first, whose answer says more. */
        spent_until = h.tok_reset > spent_until ? h.tok_reset : spent_until;
        permits_after = 1;
    }
    int64_t wait = status == 429 ? ag_retry_after_ms(headers, now_ms) : -1;
    if (wait >= 0) {
        /* A 429 without retry-after is a spend cap: holding requests would not help. */
        int64_t at = now_ms + wait;
        if (at > spent_until) {
            spent_until = at;
            permits_after = 1;
        }
    }
    if (spent_until > now_ms)
        return spend(m, spent_until, permits_after) ? spent_until : 0;
    int64_t until = atomic_load_explicit(&m->until_ms, memory_order_acquire);
    if (until == 0 || now_ms < until)
        return 0; /* open (the common case), or an answer from before the reset */
    pthread_mutex_lock(&m->lock);
    long waiting = atomic_load(&m->queued);
    int64_t out = atomic_load(&m->outstanding);
    if (h.req_remaining < 0 || (waiting == 0 && out == 0)) {
        /* No count to go by (an answer without the headers), or nothing left
         * to count: open again. */
        atomic_store(&m->until_ms, 0);
    } else {
        int64_t p = h.req_remaining - out;
        atomic_store(&m->permits, p > 0 ? p : 0);
    }
    pthread_mutex_unlock(&m->lock);
    return 0;
}

void ag_rates_abandon(ag_rate_model_t *m, bool took_permit)
{
    if (!m || !took_permit)
        return;
    /* The permit was never used: give it back. */
    atomic_fetch_sub(&m->outstanding, 1);
    atomic_fetch_add(&m->permits, 1);
}

long ag_rates_queued(const ag_rate_model_t *m)
{
    return m ? atomic_load(&((ag_rate_model_t *)m)->queued) : 0;
}

long ag_rates_queue_add(ag_rate_model_t *m, long delta)
{
    return m ? atomic_fetch_add(&m->queued, delta) + delta : 0;
}

int64_t ag_rates_until(const ag_rate_model_t *m)
{
    return m ? atomic_load(&((ag_rate_model_t *)m)->until_ms) : 0;
}

const char *ag_rates_model_name(const ag_rate_model_t *m)
{
    return m ? m->name : "";
}
