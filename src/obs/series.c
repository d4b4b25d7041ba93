/* SPDX-License-Identifier: MIT
 *
 * series.c: per-worker minutes, the shared hour, and its JSON.
 */
#include "util/platform.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "obs/series.h"
#include "util/hist.h"
#include "util/json.h"

#define SERIES_MODELS 32

typedef struct model_minute {
    char name[128];
    uint64_t input, output;
    double cost;
} model_minute_t;

typedef struct minute {
    int64_t minute;      /* epoch minute; -1: empty */
    uint64_t classes[4]; /* 2xx, 3xx, 4xx, 5xx */
    uint64_t requests;
    uint64_t hits, misses;
    uint64_t retries;
    ag_hist_t latency; /* µs */
    ag_hist_t cpu;     /* µs */
    size_t nmodels;
    model_minute_t models[SERIES_MODELS]; /* the last one takes the rest as "other" */
} minute_t;

typedef struct worker_minute {
    _Alignas(64) minute_t m;
    bool dirty;
} worker_minute_t;

struct ag_series {
    unsigned nworkers;
    int64_t start_minute; /* idle minutes after it are zeros, before it unknown */
    minute_t idle;        /* an empty minute */
    worker_minute_t *workers;
    pthread_mutex_t lock; /* the hour */
    minute_t hour[AG_SERIES_MINUTES];
};

static void minute_reset(minute_t *m, int64_t minute)
{
    m->minute = minute;
    memset(m->classes, 0, sizeof(m->classes));
    m->requests = m->hits = m->misses = m->retries = 0;
    ag_hist_init(&m->latency);
    ag_hist_init(&m->cpu);
    m->nmodels = 0;
}

int ag_series_new(unsigned nworkers, int64_t start_s, ag_series_t **out)
{
    ag_series_t *s = calloc(1, sizeof(*s));
    if (!s)
        return -ENOMEM;
    s->nworkers = nworkers ? nworkers : 1;
    s->workers = aligned_alloc(64, sizeof(worker_minute_t) * s->nworkers);
    if (!s->workers) {
        free(s);
        return -ENOMEM;
    }
    for (unsigned i = 0; i < s->nworkers; i++) {
        minute_reset(&s->workers[i].m, -1);
        s->workers[i].dirty = false;
    }
    for (unsigned i = 0; i < AG_SERIES_MINUTES; i++)
        minute_reset(&s->hour[i], -1);
    minute_reset(&s->idle, -1);
    s->start_minute = start_s / 60;
    pthread_mutex_init(&s->lock, NULL);
    *out = s;
    return 0;
}

void ag_series_free(ag_series_t *s)
{
    if (!s)
        return;
    pthread_mutex_destroy(&s->lock);
    free(s->workers);
    free(s);
}

static model_minute_t *model_of(minute_t *m, const char *name)
{
    for (size_t i = 0; i < m->nmodels; i++) {
        if (strcmp(m->models[i].name, name) == 0)
            return &m->models[i];
    }
    if (m->nmodels == SERIES_MODELS)
        return &m->models[SERIES_MODELS - 1];
    model_minute_t *mm = &m->models[m->nmodels++];
    memset(mm, 0, sizeof(*mm));
    snprintf(mm->name, sizeof(mm->name), "%s", m->nmodels == SERIES_MODELS ? "other" : name);
    return mm;
}

static void minute_merge(minute_t *into, const minute_t *from)
{
    for (int i = 0; i < 4; i++)
        into->classes[i] += from->classes[i];
    into->requests += from->requests;
    into->hits += from->hits;
    into->misses += from->misses;
    into->retries += from->retries;
    ag_hist_merge(&into->latency, &from->latency);
    ag_hist_merge(&into->cpu, &from->cpu);
    for (size_t i = 0; i < from->nmodels; i++) {
        model_minute_t *mm = model_of(into, from->models[i].name);
        mm->input += from->models[i].input;
        mm->output += from->models[i].output;
        mm->cost += from->models[i].cost;
    }
}

void ag_series_flush(ag_series_t *s, unsigned w)
{
    if (w >= s->nworkers || !s->workers[w].dirty)
        return;
    minute_t *mine = &s->workers[w].m;
    pthread_mutex_lock(&s->lock);
    minute_t *slot = &s->hour[mine->minute % AG_SERIES_MINUTES];
    if (slot->minute != mine->minute) {
        /* A slot from an hour ago, or one that a slower worker is still behind on. */
        if (slot->minute < mine->minute)
            minute_reset(slot, mine->minute);
        else
            slot = NULL;
    }
    if (slot)
        minute_merge(slot, mine);
    pthread_mutex_unlock(&s->lock);
    minute_reset(mine, mine->minute);
    s->workers[w].dirty = false;
}

void ag_series_record(ag_series_t *s, unsigned w, const ag_request_record_t *rec, int64_t now_s)
{
    if (w >= s->nworkers)
        return;
    worker_minute_t *wm = &s->workers[w];
    int64_t minute = now_s / 60;
    if (wm->m.minute != minute) {
        ag_series_flush(s, w);
        minute_reset(&wm->m, minute);
    }
    minute_t *m = &wm->m;
    wm->dirty = true;
    m->requests++;
    if (rec->status >= 200 && rec->status < 600)
        m->classes[rec->status / 100 - 2]++;
    ag_hist_add(&m->latency, (uint64_t)(rec->duration_us > 0 ? rec->duration_us : 0));
    ag_hist_add(&m->cpu, (uint64_t)(rec->cpu_us > 0 ? rec->cpu_us : 0));
    const ag_ai_record_t *ai = &rec->ai;
    if (ai->cache == AG_CACHE_HIT)
        m->hits++;
    else if (ai->cache == AG_CACHE_MISS)
        m->misses++;
    if (ai->attempts > 1)
        m->retries += ai->attempts - 1;
    if (ai->model && ai->attempts > 0) {
        model_minute_t *mm = model_of(m, ai->model);
        mm->input += (uint64_t)(ai->input_tokens > 0 ? ai->input_tokens : 0);
        mm->output += (uint64_t)(ai->output_tokens > 0 ? ai->output_tokens : 0);
        mm->cost += ai->cost_usd;
    }
}

/* ---- JSON -------------------------------------------------------------------------- */

typedef struct series_out {
    ag_buf_t *b;
    const minute_t *const *slots; /* NULL: no data that minute */
    unsigned n;
    int rc;
} series_out_t;

static void put(series_out_t *o, const char *s)
{
    if (o->rc == 0)
        o->rc = ag_buf_append_cstr(o->b, s);
}

/* An array of one figure per minute; value() returns false for null. */
static void array(series_out_t *o, const char *name,
                  bool (*value)(const minute_t *, const void *, double *), const void *arg)
{
    if (o->rc == 0)
        o->rc = ag_buf_printf(o->b, "\"%s\":[", name);
    for (unsigned i = 0; i < o->n && o->rc == 0; i++) {
        double v;
        if (i)
            put(o, ",");
        if (o->slots[i] && value(o->slots[i], arg, &v))
            o->rc = ag_buf_printf(o->b, "%.6g", v);
        else
            put(o, "null");
    }
    put(o, "]");
}

static bool v_class(const minute_t *m, const void *arg, double *v)
{
    *v = (double)m->classes[*(const int *)arg];
    return true;
}

static bool v_error_rate(const minute_t *m, const void *arg, double *v)
{
    AG_UNUSED(arg);
    *v = m->requests ? (double)m->classes[3] / (double)m->requests : 0;
    return true;
}

static bool v_latency(const minute_t *m, const void *arg, double *v)
{
    *v = (double)ag_hist_quantile(&m->latency, *(const double *)arg) / 1000.0;
    return m->latency.count > 0;
}

static bool v_cpu(const minute_t *m, const void *arg, double *v)
{
    *v = (double)ag_hist_quantile(&m->cpu, *(const double *)arg) / 1000.0;
    return m->cpu.count > 0;
}

static bool v_hit_ratio(const minute_t *m, const void *arg, double *v)
{
    AG_UNUSED(arg);
    if (m->hits + m->misses == 0)
        return false;
    *v = (double)m->hits / (double)(m->hits + m->misses);
    return true;
}

static bool v_retries(const minute_t *m, const void *arg, double *v)
{
    AG_UNUSED(arg);
    *v = (double)m->retries;
    return true;
}

static bool v_zero(const minute_t *m, const void *arg, double *v)
{
    AG_UNUSED(m);
    AG_UNUSED(arg);
    *v = 0;
    return true;
}

typedef struct model_field {
    const char *name;
    int field; /* 0 input, 1 output, 2 cost */
} model_field_t;

static bool v_model(const minute_t *m, const void *arg, double *v)
{
    const model_field_t *f = arg;
    *v = 0;
    for (size_t i = 0; i < m->nmodels; i++) {
        const model_minute_t *mm = &m->models[i];
        if (strcmp(mm->name, f->name) != 0)
            continue;
        *v = f->field == 0 ? (double)mm->input : f->field == 1 ? (double)mm->output : mm->cost;
    }
    return true;
}

int ag_series_json(ag_series_t *s, unsigned minutes, int64_t now_s, ag_buf_t *b)
{
    if (minutes == 0 || minutes > AG_SERIES_MINUTES)
        minutes = AG_SERIES_MINUTES;
    int64_t last = now_s / 60, first = last - minutes + 1;
    /* A copy of the hour, so the lock is held for a memcpy, not for the JSON. */
    minute_t *copy = malloc(sizeof(minute_t) * minutes);
    const minute_t **slots = calloc(minutes, sizeof(*slots));
    if (!copy || !slots) {
        free(copy);
        free(slots);
        return -ENOMEM;
    }
    pthread_mutex_lock(&s->lock);
    for (unsigned i = 0; i < minutes; i++) {
        const minute_t *src = &s->hour[(first + i) % AG_SERIES_MINUTES];
        if (src->minute == first + (int64_t)i) {
            copy[i] = *src;
            slots[i] = &copy[i];
        } else if (first + (int64_t)i >= s->start_minute) {
            slots[i] = &s->idle;
        }
    }
    pthread_mutex_unlock(&s->lock);
    series_out_t o = {b, slots, minutes, 0};
    o.rc = ag_buf_printf(b, "{\"now\":%lld,\"step\":60,\"minutes\":[", (long long)now_s);
    for (unsigned i = 0; i < minutes && o.rc == 0; i++)
        o.rc = ag_buf_printf(b, "%s%lld", i ? "," : "", (long long)((first + i) * 60));
    put(&o, "],\"requests\":{");
    static const char *const classes[] = {"2xx", "3xx", "4xx", "5xx"};
    static const int idx[] = {0, 1, 2, 3};
    for (int k = 0; k < 4; k++) {
        if (k)
            put(&o, ",");
        array(&o, classes[k], v_class, &idx[k]);
    }
    put(&o, "},");
    array(&o, "errorRate", v_error_rate, NULL);
    static const double p50 = 0.5, p99 = 0.99;
    put(&o, ",\"latencyMs\":{");
    array(&o, "p50", v_latency, &p50);
    put(&o, ",");
    array(&o, "p99", v_latency, &p99);
    put(&o, "},\"cpuMs\":{");
    array(&o, "p50", v_cpu, &p50);
    put(&o, ",");
    array(&o, "p99", v_cpu, &p99);
    put(&o, "},");
    array(&o, "cacheHitRatio", v_hit_ratio, NULL);
    put(&o, ",");
    array(&o, "retries", v_retries, NULL);
    put(&o, ",");
    array(&o, "queueDepth", v_zero, NULL);
    put(&o, ",\"models\":{");
    /* Every model seen in the window, once. */
    const char *names[SERIES_MODELS * 4];
    size_t nnames = 0;
    for (unsigned i = 0; i < minutes; i++) {
        for (size_t k = 0; slots[i] && k < slots[i]->nmodels; k++) {
            bool seen = false;
            for (size_t j = 0; j < nnames && !seen; j++)
                seen = strcmp(names[j], slots[i]->models[k].name) == 0;
            if (!seen && nnames < AG_ARRAY_LEN(names))
                names[nnames++] = slots[i]->models[k].name;
        }
    }
    for (size_t j = 0; j < nnames; j++) {
        if (j)
            put(&o, ",");
        if (o.rc == 0)
            o.rc = ag_json_append_string(b, ag_str_c(names[j]));
        put(&o, ":{");
        model_field_t in = {names[j], 0}, out = {names[j], 1}, cost = {names[j], 2};
        array(&o, "inputTokens", v_model, &in);
        put(&o, ",");
        array(&o, "outputTokens", v_model, &out);
        put(&o, ",");
        array(&o, "costUsd", v_model, &cost);
        put(&o, "}");
    }
    put(&o, "}}");
    free(copy);
    free(slots);
    return o.rc;
}
