/* SPDX-License-Identifier: MIT
 *
 * tail.c: subscribers, their filters and queues, and the wrangler-tail event.
 */
#include "util/platform.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "obs/tail.h"
#include "util/fmt.h"
#include "util/hex.h"
#include "util/json.h"
#include "util/log.h"

#define MAX_SECRETS 16

typedef struct event {
    struct event *next;
    size_t len;
    size_t aigate_at; /* where the aigate object's '{' is */
    char json[];
} event_t;

struct ag_tail_sub {
    ag_tail_sub_t *next;
    ag_tail_filter_t filter;
    void (*notify)(void *ctx);
    void *ctx;
    pthread_mutex_t lock; /* the queue */
    event_t *head, *tail;
    size_t queued, max_queue;
    uint64_t dropped; /* since the last event this subscriber got */
    uint64_t rng;
};

struct ag_tail {
    char *script_name;
    char *secrets[MAX_SECRETS];
    size_t nsecrets;
    pthread_rwlock_t lock; /* the subscriber list */
    ag_tail_sub_t *subs;
    _Atomic unsigned nsubs;
    _Atomic uint64_t dropped;
};

int ag_tail_new(const char *script_name, ag_tail_t **out)
{
    ag_tail_t *t = calloc(1, sizeof(*t));
    if (!t)
        return -ENOMEM;
    t->script_name = strdup(script_name && *script_name ? script_name : "aigate");
    if (!t->script_name) {
        free(t);
        return -ENOMEM;
    }
    pthread_rwlock_init(&t->lock, NULL);
    *out = t;
    return 0;
}

static void events_free(event_t *e)
{
    while (e) {
        event_t *next = e->next;
        free(e);
        e = next;
    }
}

void ag_tail_free(ag_tail_t *t)
{
    if (!t)
        return;
    while (t->subs) {
        ag_tail_sub_t *s = t->subs;
        t->subs = s->next;
        events_free(s->head);
        pthread_mutex_destroy(&s->lock);
        free(s);
    }
    for (size_t i = 0; i < t->nsecrets; i++) {
        explicit_bzero(t->secrets[i], strlen(t->secrets[i]));
        free(t->secrets[i]);
    }
    pthread_rwlock_destroy(&t->lock);
    free(t->script_name);
    free(t);
}

int ag_tail_add_secret(ag_tail_t *t, const char *value)
{
    if (!value || !*value)
        return 0;
    /* Events are built under the read lock: a reload may add a key meanwhile. */
    int rc = 0;
    pthread_rwlock_wrlock(&t->lock);
    bool known = false;
    for (size_t i = 0; i < t->nsecrets && !known; i++)
        known = strcmp(t->secrets[i], value) == 0;
    if (!known && t->nsecrets == MAX_SECRETS) {
        rc = -ENOSPC;
    } else if (!known) {
        t->secrets[t->nsecrets] = strdup(value);
        if (t->secrets[t->nsecrets])
            t->nsecrets++;
        else
            rc = -ENOMEM;
    }
    pthread_rwlock_unlock(&t->lock);
    return rc;
}

uint64_t ag_tail_dropped(ag_tail_t *t)
{
    return atomic_load(&t->dropped);
}

/* ---- the event ------------------------------------------------------------------- */

static unsigned outcome_of(const ag_request_record_t *rec)
{
    if (rec->aborted && rec->status == 499)
        return AG_TAIL_CANCELED;
    return rec->status >= 500 ? AG_TAIL_EXCEPTION : AG_TAIL_OK;
}

/* wrangler's rule: cookies and anything naming auth, key, secret, token or jwt. */
static bool sensitive_name(ag_str_t name)
{
    static const char *const words[] = {"auth", "key", "secret", "token", "jwt"};
    if ((name.len == 6 && strncasecmp(name.ptr, "cookie", 6) == 0) ||
        (name.len == 10 && strncasecmp(name.ptr, "set-cookie", 10) == 0))
        return true;
    for (size_t w = 0; w < AG_ARRAY_LEN(words); w++) {
        size_t wl = strlen(words[w]);
        for (size_t i = 0; i + wl <= name.len; i++) {
            if (strncasecmp(name.ptr + i, words[w], wl) == 0)
                return true;
        }
    }
    return false;
}

static bool holds_secret(const ag_tail_t *t, ag_str_t value)
{
    for (size_t i = 0; i < t->nsecrets; i++) {
        size_t sl = strlen(t->secrets[i]);
        for (size_t k = 0; sl && k + sl <= value.len; k++) {
            if (memcmp(value.ptr + k, t->secrets[i], sl) == 0)
                return true;
        }
    }
    return false;
}

static int lower_json_string(ag_buf_t *b, ag_str_t s)
{
    char tmp[128];
    size_t n = s.len < sizeof(tmp) ? s.len : sizeof(tmp);
    for (size_t i = 0; i < n; i++)
        tmp[i] = (char)((s.ptr[i] >= 'A' && s.ptr[i] <= 'Z') ? s.ptr[i] + 32 : s.ptr[i]);
    return ag_json_append_string(b, ag_str(tmp, n));
}

static int append_nullable(ag_buf_t *b, const char *s)
{
    return s && *s ? ag_json_append_string(b, ag_str_c(s)) : ag_buf_append_cstr(b, "null");
}

/* Appenders without printf: an event is built for every request while a tail
 * is open, and printf's machinery was most of that cost. */
static int put_lit(ag_buf_t *b, const char *s)
{
    return ag_buf_append(b, s, strlen(s));
}

static int put_int(ag_buf_t *b, int64_t v)
{
    char num[24];
    if (v < 0) {
        int rc = ag_buf_append(b, "-", 1);
        if (rc < 0)
            return rc;
        v = -v;
    }
    return ag_buf_append(b, num, ag_fmt_u64(num, (uint64_t)v));
}

/* v / 10^decimals, with exactly that many decimals (v >= 0). */
static int put_fixed(ag_buf_t *b, uint64_t v, unsigned decimals)
{
    uint64_t scale = 1;
    for (unsigned i = 0; i < decimals; i++)
        scale *= 10;
    char num[24], frac[24];
    int rc = ag_buf_append(b, num, ag_fmt_u64(num, v / scale));
    if (rc == 0 && decimals) {
        size_t n = ag_fmt_u64(frac, v % scale + scale); /* leading 1 keeps the zeros */
        rc = ag_buf_append(b, ".", 1);
        if (rc == 0)
            rc = ag_buf_append(b, frac + 1, n - 1);
    }
    return rc;
}

/* Builds the event; *aigate_at gets the offset of the aigate object's '{'. */
static int event_json(ag_tail_t *t, const ag_request_record_t *rec, ag_buf_t *b, size_t *aigate_at)
{
    static const char *const outcomes[] = {NULL, "ok", "exception", NULL, "canceled"};
    unsigned oc = outcome_of(rec);
    int64_t ts_ms = (rec->start_us + rec->duration_us) / 1000;
    int rc = put_lit(b, "{\"outcome\":\"");
    if (rc == 0)
        rc = put_lit(b, outcomes[oc]);
    if (rc == 0)
        rc = put_lit(b, "\",\"scriptName\":");
    if (rc == 0)
        rc = ag_json_append_string(b, ag_str_c(t->script_name));
    if (rc == 0)
        rc = put_lit(b, ",\"eventTimestamp\":");
    if (rc == 0)
        rc = put_int(b, ts_ms);
    if (rc == 0 && rec->cron) {
        /* A scheduled run: wrangler's scheduled event. */
        rc = put_lit(b, ",\"event\":{\"cron\":");
        if (rc == 0)
            rc = ag_json_append_string(b, ag_str_c(rec->cron));
        if (rc == 0)
            rc = put_lit(b, ",\"scheduledTime\":");
        if (rc == 0)
            rc = put_int(b, rec->scheduled_ms);
        if (rc == 0)
            rc = put_lit(b, "},\"logs\":[],\"exceptions\":[");
        goto after_event;
    }
    if (rc == 0)
        rc = put_lit(b, ",\"event\":{\"request\":{\"url\":");
    /* The URL as the client addressed us: Host, then the target. */
    if (rc == 0) {
        char url[2048];
        ag_str_t host = rec->host.len ? rec->host : AG_STR_LIT("localhost");
        ag_str_t target = rec->target.len ? rec->target : rec->path;
        size_t n = 7 + host.len + target.len;
        if (n < sizeof(url)) {
            memcpy(url, "http://", 7);
            memcpy(url + 7, host.ptr, host.len);
            memcpy(url + 7 + host.len, target.ptr, target.len);
            rc = ag_json_append_string(b, ag_str(url, n));
        } else {
            rc = ag_json_append_string(b, target);
        }
    }
    if (rc == 0)
        rc = put_lit(b, ",\"method\":");
    if (rc == 0)
        rc = ag_json_append_string(b, rec->method);
    if (rc == 0)
        rc = put_lit(b, ",\"headers\":{");
    for (size_t i = 0; i < rec->nheaders && rc == 0; i++) {
        const ag_record_header_t *h = &rec->headers[i];
        if (i)
            rc = ag_buf_append(b, ",", 1);
        if (rc == 0)
            rc = lower_json_string(b, h->name);
        if (rc == 0)
            rc = ag_buf_append(b, ":", 1);
        if (rc == 0)
            rc = sensitive_name(h->name) || holds_secret(t, h->value)
                     ? put_lit(b, "\"REDACTED\"")
                     : ag_json_append_string(b, h->value);
    }
    if (rc == 0)
        rc = put_lit(b, "}},\"response\":{\"status\":");
    if (rc == 0)
        rc = put_int(b, rec->status);
    if (rc == 0)
        rc = put_lit(b, "}},\"logs\":[],\"exceptions\":[");
after_event:
    if (rc == 0 && oc == AG_TAIL_EXCEPTION) {
        rc = put_lit(b, "{\"name\":\"Error\",\"message\":\"HTTP ");
        if (rc == 0)
            rc = put_int(b, rec->status);
        if (rc == 0)
            rc = put_lit(b, "\",\"timestamp\":");
        if (rc == 0)
            rc = put_int(b, ts_ms);
        if (rc == 0)
            rc = ag_buf_append(b, "}", 1);
    }
    if (rc == 0)
        rc = put_lit(b, "],\"wallTime\":");
    if (rc == 0)
        rc = put_int(b, (rec->duration_us + 500) / 1000);
    if (rc == 0)
        rc = put_lit(b, ",\"cpuTime\":");
    if (rc == 0)
        rc = put_fixed(b, (uint64_t)(rec->cpu_us > 0 ? rec->cpu_us : 0), 3);
    if (rc == 0)
        rc = put_lit(b, ",\"aigate\":");
    *aigate_at = b->len;
    const ag_ai_record_t *ai = &rec->ai;
    if (rc == 0)
        rc = put_lit(b, "{\"requestId\":\"");
    if (rc == 0)
        rc = put_lit(b, rec->id);
    if (rc == 0)
        rc = put_lit(b, "\",\"route\":");
    if (rc == 0)
        rc = append_nullable(b, rec->route);
    if (rc == 0 && rec->task) {
        rc = put_lit(b, ",\"task\":");
        if (rc == 0)
            rc = ag_json_append_string(b, ag_str_c(rec->task));
    }
    if (rc == 0)
        rc = put_lit(b, ",\"client\":");
    if (rc == 0)
        rc = append_nullable(b, rec->client);
    if (rc == 0)
        rc = put_lit(b, ",\"key\":");
    if (rc == 0)
        rc = append_nullable(b, ai->key_name);
    if (rc == 0)
        rc = put_lit(b, ",\"model\":");
    if (rc == 0)
        rc = append_nullable(b, ai->model);
    if (rc == 0)
        rc = put_lit(b, ",\"inputTokens\":");
    if (rc == 0)
        rc = put_int(b, ai->input_tokens);
    if (rc == 0)
        rc = put_lit(b, ",\"outputTokens\":");
    if (rc == 0)
        rc = put_int(b, ai->output_tokens);
    if (rc == 0)
        rc = put_lit(b, ",\"costUsd\":");
    if (rc == 0)
        rc = put_fixed(b, (uint64_t)(ai->cost_usd > 0 ? ai->cost_usd * 1e9 + 0.5 : 0), 9);
    if (rc == 0)
        rc = put_lit(b, ai->cache == AG_CACHE_HIT ? ",\"cached\":true,\"retries\":"
                                                  : ",\"cached\":false,\"retries\":");
    if (rc == 0)
        rc = put_int(b, ai->attempts > 1 ? ai->attempts - 1 : 0);
    if (rc == 0)
        rc = put_lit(b, ",\"upstreamMs\":");
    if (rc == 0)
        rc = put_int(b, ai->upstream_us / 1000);
    if (rc == 0)
        rc = put_lit(b, ai->stream ? ",\"stream\":true}}" : ",\"stream\":false}}");
    return rc;
}

int ag_tail_event_json(ag_tail_t *t, const ag_request_record_t *rec, ag_buf_t *out)
{
    size_t at;
    return event_json(t, rec, out, &at);
}

/* ---- filters ---------------------------------------------------------------------- */

static bool contains(ag_str_t hay, const char *needle)
{
    size_t n = strlen(needle);
    for (size_t i = 0; n && i + n <= hay.len; i++) {
        if (strncasecmp(hay.ptr + i, needle, n) == 0)
            return true;
    }
    return n == 0;
}

static uint64_t next_random(uint64_t *s)
{
    uint64_t x = *s ? *s : 0x9e3779b97f4a7c15ull;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *s = x;
}

static bool matches(ag_tail_sub_t *s, const ag_request_record_t *rec)
{
    const ag_tail_filter_t *f = &s->filter;
    if (f->outcomes && !(f->outcomes & outcome_of(rec)))
        return false;
    if (f->nmethods) {
        bool any = false;
        for (size_t i = 0; i < f->nmethods && !any; i++)
            any = ag_str_eq(rec->method, ag_str_c(f->methods[i]));
        if (!any)
            return false;
    }
    if (f->ip[0] && (!rec->client || strcmp(rec->client, f->ip) != 0))
        return false;
    if (f->route[0] && (!rec->route || strcmp(rec->route, f->route) != 0))
        return false;
    if (f->model[0] && (!rec->ai.model || strcmp(rec->ai.model, f->model) != 0))
        return false;
    if (f->key[0] && (!rec->ai.key_name || strcmp(rec->ai.key_name, f->key) != 0))
        return false;
    for (size_t i = 0; i < f->nheaders; i++) {
        bool found = false;
        for (size_t k = 0; k < rec->nheaders && !found; k++) {
            const ag_record_header_t *h = &rec->headers[k];
            found = h->name.len == strlen(f->header_names[i]) &&
                    strncasecmp(h->name.ptr, f->header_names[i], h->name.len) == 0 &&
                    ag_str_eq(h->value, ag_str_c(f->header_values[i]));
        }
        if (!found)
            return false;
    }
    if (f->search[0]) {
        bool hit = contains(rec->target.len ? rec->target : rec->path, f->search) ||
                   contains(rec->method, f->search) ||
                   (rec->client && contains(ag_str_c(rec->client), f->search)) ||
                   (rec->route && contains(ag_str_c(rec->route), f->search)) ||
                   (rec->ai.model && contains(ag_str_c(rec->ai.model), f->search));
        if (!hit)
            return false;
    }
    if (f->sampling_rate > 0 && f->sampling_rate < 1) {
        double r = (double)(next_random(&s->rng) >> 11) / 9007199254740992.0;
        if (r >= f->sampling_rate)
            return false;
    }
    return true;
}

/* ---- subscribers ------------------------------------------------------------------- */

int ag_tail_subscribe(ag_tail_t *t, const ag_tail_filter_t *f, size_t max_queue,
                      void (*notify)(void *ctx), void *ctx, ag_tail_sub_t **out)
{
    ag_tail_sub_t *s = calloc(1, sizeof(*s));
    if (!s)
        return -ENOMEM;
    s->filter = *f;
    s->notify = notify;
    s->ctx = ctx;
    s->max_queue = max_queue ? max_queue : 1024;
    s->rng = (uint64_t)(uintptr_t)s ^ (uint64_t)ag_now_us();
    pthread_mutex_init(&s->lock, NULL);
    pthread_rwlock_wrlock(&t->lock);
    s->next = t->subs;
    t->subs = s;
    atomic_fetch_add(&t->nsubs, 1);
    pthread_rwlock_unlock(&t->lock);
    *out = s;
    return 0;
}

void ag_tail_unsubscribe(ag_tail_t *t, ag_tail_sub_t *s)
{
    if (!s)
        return;
    pthread_rwlock_wrlock(&t->lock);
    for (ag_tail_sub_t **pp = &t->subs; *pp; pp = &(*pp)->next) {
        if (*pp == s) {
            *pp = s->next;
            atomic_fetch_sub(&t->nsubs, 1);
            break;
        }
    }
    pthread_rwlock_unlock(&t->lock);
    events_free(s->head);
    pthread_mutex_destroy(&s->lock);
    free(s);
}

void ag_tail_publish(ag_tail_t *t, const ag_request_record_t *rec)
{
    if (atomic_load_explicit(&t->nsubs, memory_order_relaxed) == 0)
        return;
    ag_buf_t json;
    ag_buf_init(&json, 0);
    size_t aigate_at = 0;
    bool built = false, failed = false;
    pthread_rwlock_rdlock(&t->lock);
    for (ag_tail_sub_t *s = t->subs; s; s = s->next) {
        pthread_mutex_lock(&s->lock);
        bool want = matches(s, rec);
        pthread_mutex_unlock(&s->lock);
        if (!want)
            continue;
        if (!built && !failed) {
            failed = event_json(t, rec, &json, &aigate_at) < 0;
            built = !failed;
        }
        if (!built)
            break;
        event_t *e = malloc(sizeof(*e) + json.len + 1);
        pthread_mutex_lock(&s->lock);
        bool full = s->queued >= s->max_queue || !e;
        /* Waking the subscriber's thread costs a system call and a context
         * switch: do it only for a batch; its own timer takes the rest. */
        bool wake = s->queued + 1 == AG_TAIL_WAKE_BATCH;
        if (full) {
            s->dropped++;
            atomic_fetch_add(&t->dropped, 1);
        } else {
            e->next = NULL;
            e->len = json.len;
            e->aigate_at = aigate_at;
            memcpy(e->json, json.data, json.len + 1);
            if (s->tail)
                s->tail->next = e;
            else
                s->head = e;
            s->tail = e;
            s->queued++;
        }
        pthread_mutex_unlock(&s->lock);
        if (full)
            free(e);
        else if (wake && s->notify)
            s->notify(s->ctx);
    }
    pthread_rwlock_unlock(&t->lock);
    ag_buf_fini(&json);
}

size_t ag_tail_drain(ag_tail_sub_t *s, ag_buf_t *out)
{
    pthread_mutex_lock(&s->lock);
    event_t *e = s->head;
    uint64_t dropped = s->dropped;
    s->head = s->tail = NULL;
    s->queued = 0;
    s->dropped = 0;
    pthread_mutex_unlock(&s->lock);
    size_t n = 0;
    for (event_t *x = e; x; x = x->next, n++) {
        ag_buf_append_cstr(out, "data: ");
        if (dropped && x == e) {
            /* The first event after a loss says how many were lost. */
            ag_buf_append(out, x->json, x->aigate_at + 1);
            ag_buf_printf(out, "\"dropped\":%llu,", (unsigned long long)dropped);
            ag_buf_append(out, x->json + x->aigate_at + 1, x->len - x->aigate_at - 1);
        } else {
            ag_buf_append(out, x->json, x->len);
        }
        ag_buf_append_cstr(out, "\n\n");
    }
    events_free(e);
    return n;
}

/* ---- query parsing ------------------------------------------------------------------- */

/* Copies a value that was checked to fit. */
static void field_set(char *dst, size_t cap, const char *v)
{
    size_t n = strlen(v);
    if (n >= cap)
        n = cap - 1;
    memcpy(dst, v, n);
    dst[n] = '\0';
}

int ag_tail_filter_parse(ag_str_t query, const char *self, ag_tail_filter_t *f, const char **bad)
{
    memset(f, 0, sizeof(*f));
    *bad = NULL;
    const char *p = query.ptr, *end = query.ptr + query.len;
    while (p && p < end) {
        const char *amp = memchr(p, '&', (size_t)(end - p));
        const char *pe = amp ? amp : end;
        const char *eq = memchr(p, '=', (size_t)(pe - p));
        char name[32], value[512];
        if (!eq || (size_t)(eq - p) >= sizeof(name)) {
            if (pe > p) {
                *bad = "query";
                return -EINVAL;
            }
            p = amp ? amp + 1 : NULL;
            continue;
        }
        memcpy(name, p, (size_t)(eq - p));
        name[eq - p] = '\0';
        if (!ag_percent_decode(eq + 1, (size_t)(pe - eq - 1), value, sizeof(value), true)) {
            *bad = "query";
            return -EINVAL;
        }
        int rc = 0;
        if (strcmp(name, "format") == 0) {
            rc = strcmp(value, "json") == 0 ? 0 : -EINVAL;
        } else if (strcmp(name, "status") == 0) {
            unsigned bit = strcmp(value, "ok") == 0         ? AG_TAIL_OK
                           : strcmp(value, "error") == 0    ? AG_TAIL_EXCEPTION
                           : strcmp(value, "canceled") == 0 ? AG_TAIL_CANCELED
                                                            : 0;
            rc = bit ? 0 : -EINVAL;
            f->outcomes |= bit;
        } else if (strcmp(name, "method") == 0) {
            rc = f->nmethods < AG_TAIL_MAX_LIST && strlen(value) < sizeof(f->methods[0]) && *value
                     ? 0
                     : -EINVAL;
            if (rc == 0) {
                for (char *c = value; *c; c++)
                    *c = (char)(*c >= 'a' && *c <= 'z' ? *c - 32 : *c);
                field_set(f->methods[f->nmethods++], sizeof(f->methods[0]), value);
            }
        } else if (strcmp(name, "search") == 0) {
            rc = strlen(value) < sizeof(f->search) ? 0 : -EINVAL;
            field_set(f->search, sizeof(f->search), value);
        } else if (strcmp(name, "ip") == 0) {
            const char *ip = strcmp(value, "self") == 0 && self ? self : value;
            rc = strlen(ip) < sizeof(f->ip) ? 0 : -EINVAL;
            field_set(f->ip, sizeof(f->ip), ip);
        } else if (strcmp(name, "header") == 0) {
            char *colon = strchr(value, ':');
            rc = colon && colon > value && f->nheaders < AG_TAIL_MAX_LIST &&
                         (size_t)(colon - value) < sizeof(f->header_names[0]) &&
                         strlen(colon + 1) < sizeof(f->header_values[0])
                     ? 0
                     : -EINVAL;
            if (rc == 0) {
                *colon = '\0';
                const char *v = colon + 1;
                while (*v == ' ')
                    v++;
                field_set(f->header_names[f->nheaders], sizeof(f->header_names[0]), value);
                field_set(f->header_values[f->nheaders], sizeof(f->header_values[0]), v);
                f->nheaders++;
            }
        } else if (strcmp(name, "sampling_rate") == 0) {
            char *e;
            double r = strtod(value, &e);
            rc = *value && *e == '\0' && r > 0 && r <= 1 ? 0 : -EINVAL;
            f->sampling_rate = r;
        } else if (strcmp(name, "route") == 0) {
            rc = strlen(value) < sizeof(f->route) ? 0 : -EINVAL;
            field_set(f->route, sizeof(f->route), value);
        } else if (strcmp(name, "model") == 0) {
            rc = strlen(value) < sizeof(f->model) ? 0 : -EINVAL;
            field_set(f->model, sizeof(f->model), value);
        } else if (strcmp(name, "key") == 0) {
            rc = strlen(value) < sizeof(f->key) ? 0 : -EINVAL;
            field_set(f->key, sizeof(f->key), value);
        } else {
            rc = -EINVAL;
        }
        if (rc < 0) {
            *bad = strcmp(name, "status") == 0          ? "status"
                   : strcmp(name, "method") == 0        ? "method"
                   : strcmp(name, "header") == 0        ? "header"
                   : strcmp(name, "sampling_rate") == 0 ? "sampling_rate"
                   : strcmp(name, "format") == 0        ? "format"
                                                        : "query";
            return -EINVAL;
        }
        p = amp ? amp + 1 : NULL;
    }
    return 0;
}
