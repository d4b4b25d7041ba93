/* SPDX-License-Identifier: MIT
 *
 * metrics.c: the per-worker slabs, what a finished request adds to them, and
 * the text a scrape sends.
 */
#include "util/platform.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sys/syscall.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "obs/counters.h"
#include "obs/metrics.h"

/* Request durations, seconds: an AI answer takes seconds, a cache hit microseconds. */
static const double duration_le[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                                     0.5,    1,     2.5,    5,     10,   30,    60,   120};
#define NDUR (sizeof(duration_le) / sizeof(duration_le[0]))
/* CPU per request, seconds: tens of microseconds is the norm. */
static const double cpu_le[] = {0.000005, 0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005,
                                0.001,    0.0025,  0.005,    0.01,    0.025,  0.1};
#define NCPU (sizeof(cpu_le) / sizeof(cpu_le[0]))

#define NSTATUS 500 /* 100..599 */
#define MODEL_STATUSES 16

typedef struct phist {
    ag_ctr_t buckets[NDUR + 1]; /* the last is +Inf only */
    ag_ctr_t count;
    ag_ctr_t sum_ns;
} phist_t;

typedef struct route_slab {
    ag_ctr_t status[NSTATUS];
    ag_ctr_t other_status; /* outside 100..599 */
    phist_t duration;
    phist_t cpu;
    ag_ctr_t ratelimited;
} route_slab_t;

typedef struct model_slab {
    _Atomic bool used;
    char name[128];
    _Atomic unsigned nstatus;
    int status_code[MODEL_STATUSES];
    ag_ctr_t status_n[MODEL_STATUSES];
    ag_ctr_t tokens[4]; /* input, output, cache_read, cache_write */
    ag_fctr_t cost;
    phist_t upstream;
    ag_gauge_t queued;  /* requests held for the model's rate window now */
    phist_t queue_wait; /* of requests that were held */
    ag_ctr_t fallbacks; /* answers from a fallback when this model was asked for */
} model_slab_t;

/* A client key's requests and spend, by its name (never the key). */
typedef struct key_slab {
    _Atomic bool used;
    char name[64];
    ag_ctr_t requests;
    ag_fctr_t cost;
} key_slab_t;

typedef struct worker_slab {
    _Alignas(64) route_slab_t routes[AG_METRICS_MAX_ROUTES + 1]; /* [0]: no route */
    model_slab_t models[AG_METRICS_MAX_MODELS + 1];              /* the last: "other" */
    ag_ctr_t cache[4];                                           /* by ag_cache_result_t */
    ag_fctr_t saved_usd;
    ag_gauge_t streams;
    ag_ctr_t retries[AG_RETRY_NREASONS];
    key_slab_t keys[AG_METRICS_MAX_KEYS + 1]; /* the last: "other" */
} worker_slab_t;

#define MAX_TASK_SERIES 256

typedef struct task_series {
    char task[64];
    char outcome[24];
    uint64_t n;
} task_series_t;

struct ag_metrics {
    pthread_mutex_t tasks_lock;
    task_series_t tasks[MAX_TASK_SERIES];
    size_t ntasks;
    uint64_t task_retries[AG_RETRY_NREASONS]; /* scheduled runs' retries, under tasks_lock */
    uint64_t reloads[2];                      /* config reloads: [0] refused, [1] applied */
    unsigned nworkers;
    size_t nroutes;
    char *routes[AG_METRICS_MAX_ROUTES + 1]; /* [0] is "none" */
    worker_slab_t *slabs;
};

int ag_metrics_new(unsigned nworkers, const char *const *routes, size_t nroutes, ag_metrics_t **out)
{
    if (nroutes > AG_METRICS_MAX_ROUTES)
        return -EINVAL;
    ag_metrics_t *m = calloc(1, sizeof(*m));
    if (!m)
        return -ENOMEM;
    m->nworkers = nworkers ? nworkers : 1;
    m->nroutes = nroutes + 1;
    m->routes[0] = strdup("none");
    for (size_t i = 0; i < nroutes; i++)
        m->routes[i + 1] = strdup(routes[i]);
    m->slabs = aligned_alloc(64, sizeof(worker_slab_t) * m->nworkers);
    bool ok = m->slabs != NULL;
    for (size_t i = 0; i < m->nroutes; i++)
        ok = ok && m->routes[i];
    if (!ok) {
        ag_metrics_free(m);
        return -ENOMEM;
    }
    memset(m->slabs, 0, sizeof(worker_slab_t) * m->nworkers);
    pthread_mutex_init(&m->tasks_lock, NULL);
    *out = m;
    return 0;
}

void ag_metrics_free(ag_metrics_t *m)
{
    if (!m)
        return;
    for (size_t i = 0; i < AG_METRICS_MAX_ROUTES + 1; i++)
        free(m->routes[i]);
    if (m->slabs)
        pthread_mutex_destroy(&m->tasks_lock);
    free(m->slabs);
    free(m);
}

static void phist_add(phist_t *h, const double *le, size_t n, int64_t us)
{
    double s = (double)us / 1e6;
    size_t b = 0;
    while (b < n && s > le[b])
        b++;
    ag_ctr_add(&h->buckets[b], 1);
    ag_ctr_add(&h->count, 1);
    ag_ctr_add(&h->sum_ns, (uint64_t)(us > 0 ? us : 0) * 1000);
}

static size_t route_index(const ag_metrics_t *m, const char *route)
{
    if (!route)
        return 0;
    for (size_t i = 1; i < m->nroutes; i++) {
        if (strcmp(m->routes[i], route) == 0)
            return i;
    }
    return 0;
}

/* The worker's slot for `model`; only this worker writes its table. */
static model_slab_t *model_slot(worker_slab_t *s, const char *model)
{
    size_t len = strlen(model);
    for (size_t i = 0; i < AG_METRICS_MAX_MODELS; i++) {
        model_slab_t *ms = &s->models[i];
        if (!atomic_load_explicit(&ms->used, memory_order_acquire)) {
            if (len >= sizeof(ms->name))
                break;
            memcpy(ms->name, model, len + 1);
            atomic_store_explicit(&ms->used, true, memory_order_release);
            return ms;
        }
        if (strcmp(ms->name, model) == 0)
            return ms;
    }
    model_slab_t *other = &s->models[AG_METRICS_MAX_MODELS];
    if (!atomic_load_explicit(&other->used, memory_order_acquire)) {
        memcpy(other->name, "other", 6);
        atomic_store_explicit(&other->used, true, memory_order_release);
    }
    return other;
}

/* The worker's slot for a key name: bounded, past the table's size "other". */
static key_slab_t *key_slot(worker_slab_t *s, const char *name)
{
    size_t len = strlen(name);
    for (size_t i = 0; i < AG_METRICS_MAX_KEYS && len < sizeof(s->keys[0].name); i++) {
        key_slab_t *k = &s->keys[i];
        if (!atomic_load_explicit(&k->used, memory_order_acquire)) {
            memcpy(k->name, name, len + 1);
            atomic_store_explicit(&k->used, true, memory_order_release);
            return k;
        }
        if (strcmp(k->name, name) == 0)
            return k;
    }
    key_slab_t *other = &s->keys[AG_METRICS_MAX_KEYS];
    if (!atomic_load_explicit(&other->used, memory_order_acquire)) {
        memcpy(other->name, "other", 6);
        atomic_store_explicit(&other->used, true, memory_order_release);
    }
    return other;
}

static void model_status(model_slab_t *ms, int status)
{
    unsigned n = atomic_load_explicit(&ms->nstatus, memory_order_relaxed);
    for (unsigned i = 0; i < n; i++) {
        if (ms->status_code[i] == status) {
            ag_ctr_add(&ms->status_n[i], 1);
            return;
        }
    }
    if (n == MODEL_STATUSES) {
        ag_ctr_add(&ms->status_n[n - 1], 1); /* an odd status: counted with the last */
        return;
    }
    ms->status_code[n] = status;
    ag_ctr_add(&ms->status_n[n], 1);
    atomic_store_explicit(&ms->nstatus, n + 1, memory_order_release);
}

void ag_metrics_record(ag_metrics_t *m, unsigned w, const ag_request_record_t *rec)
{
    if (w >= m->nworkers)
        return;
    worker_slab_t *s = &m->slabs[w];
    route_slab_t *r = &s->routes[route_index(m, rec->route)];
    if (rec->status >= 100 && rec->status < 600)
        ag_ctr_add(&r->status[rec->status - 100], 1);
    else
        ag_ctr_add(&r->other_status, 1);
    phist_add(&r->duration, duration_le, NDUR, rec->duration_us);
    phist_add(&r->cpu, cpu_le, NCPU, rec->cpu_us);
    const ag_ai_record_t *ai = &rec->ai;
    if (ai->rate_limited)
        ag_ctr_add(&r->ratelimited, 1);
    if (ai->cache != AG_CACHE_NONE)
        ag_ctr_add(&s->cache[ai->cache], 1);
    if (ai->saved_usd > 0)
        ag_fctr_add(&s->saved_usd, ai->saved_usd);
    for (unsigned k = 1; k < AG_RETRY_NREASONS; k++) {
        if (ai->retries_by_reason[k])
            ag_ctr_add(&s->retries[k], ai->retries_by_reason[k]);
    }
    if (ai->key_name) {
        key_slab_t *ks = key_slot(s, ai->key_name);
        ag_ctr_add(&ks->requests, 1);
        if (ai->cost_usd > 0)
            ag_fctr_add(&ks->cost, ai->cost_usd);
    }
    if (ai->model && ai->queued_us > 0)
        phist_add(&model_slot(s, ai->model)->queue_wait, duration_le, NDUR, ai->queued_us);
    if (ai->fallback_from)
        ag_ctr_add(&model_slot(s, ai->fallback_from)->fallbacks, 1);
    if (!ai->model || ai->attempts == 0)
        return; /* no upstream call (a cache hit, a refusal): it used nothing */
    model_slab_t *ms = model_slot(s, ai->model);
    model_status(ms, ai->upstream_status);
    phist_add(&ms->upstream, duration_le, NDUR, ai->upstream_us);
    ag_ctr_add(&ms->tokens[0], (uint64_t)(ai->input_tokens > 0 ? ai->input_tokens : 0));
    ag_ctr_add(&ms->tokens[1], (uint64_t)(ai->output_tokens > 0 ? ai->output_tokens : 0));
    ag_ctr_add(&ms->tokens[2], (uint64_t)(ai->cache_read_tokens > 0 ? ai->cache_read_tokens : 0));
    ag_ctr_add(&ms->tokens[3], (uint64_t)(ai->cache_write_tokens > 0 ? ai->cache_write_tokens : 0));
    if (ai->cost_usd > 0)
        ag_fctr_add(&ms->cost, ai->cost_usd);
}

void ag_metrics_task_run(ag_metrics_t *m, const char *task, const char *outcome)
{
    pthread_mutex_lock(&m->tasks_lock);
    size_t i = 0;
    while (i < m->ntasks &&
           (strcmp(m->tasks[i].task, task) != 0 || strcmp(m->tasks[i].outcome, outcome) != 0))
        i++;
    if (i == m->ntasks && m->ntasks < MAX_TASK_SERIES) {
        snprintf(m->tasks[i].task, sizeof(m->tasks[i].task), "%s", task);
        snprintf(m->tasks[i].outcome, sizeof(m->tasks[i].outcome), "%s", outcome);
        m->ntasks++;
    }
    if (i < m->ntasks)
        m->tasks[i].n++;
    pthread_mutex_unlock(&m->tasks_lock);
}

void ag_metrics_config_reload(ag_metrics_t *m, bool applied)
{
    pthread_mutex_lock(&m->tasks_lock);
    m->reloads[applied]++;
    pthread_mutex_unlock(&m->tasks_lock);
}

void ag_metrics_queue(ag_metrics_t *m, unsigned w, const char *model, int delta)
{
    if (w < m->nworkers && model)
        ag_gauge_add(&model_slot(&m->slabs[w], model)->queued, delta);
}

void ag_metrics_retries(ag_metrics_t *m, const uint8_t *by_reason)
{
    pthread_mutex_lock(&m->tasks_lock);
    for (unsigned k = 1; k < AG_RETRY_NREASONS; k++)
        m->task_retries[k] += by_reason[k];
    pthread_mutex_unlock(&m->tasks_lock);
}

void ag_metrics_streams(ag_metrics_t *m, unsigned w, int delta)
{
    if (w < m->nworkers)
        ag_gauge_add(&m->slabs[w].streams, delta);
}

/* ---- rendering ------------------------------------------------------------------ */

static int family(ag_buf_t *b, const char *name, const char *type, const char *help)
{
    return ag_buf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* A label value as the text format wants it: \\, \" and \n escaped. */
static int label_value(ag_buf_t *b, const char *v)
{
    int rc = 0;
    for (const char *p = v; *p && rc == 0; p++) {
        if (*p == '\\' || *p == '"')
            rc = ag_buf_printf(b, "\\%c", *p);
        else if (*p == '\n')
            rc = ag_buf_append_cstr(b, "\\n");
        else
            rc = ag_buf_append(b, p, 1);
    }
    return rc;
}

static int sample_label(ag_buf_t *b, const char *name, const char *label, const char *value,
                        const char *label2, const char *value2, double v)
{
    int rc = ag_buf_printf(b, "%s{%s=\"", name, label);
    if (rc == 0)
        rc = label_value(b, value);
    if (rc == 0 && label2) {
        rc = ag_buf_printf(b, "\",%s=\"", label2);
        if (rc == 0)
            rc = label_value(b, value2);
    }
    if (rc == 0)
        rc = ag_buf_printf(b, "\"} %.17g\n", v);
    return rc;
}

/* One histogram series: buckets (cumulative), +Inf, sum and count. */
static int render_hist(ag_buf_t *b, const char *name, const char *label, const char *value,
                       const double *le, size_t n, const uint64_t *buckets, uint64_t count,
                       uint64_t sum_ns)
{
    uint64_t cum = 0;
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        cum += buckets[i];
        rc = ag_buf_printf(b, "%s_bucket{%s=\"", name, label);
        if (rc == 0)
            rc = label_value(b, value);
        if (rc == 0)
            rc = ag_buf_printf(b, "\",le=\"%g\"} %llu\n", le[i], (unsigned long long)cum);
    }
    if (rc == 0)
        rc = ag_buf_printf(b, "%s_bucket{%s=\"", name, label);
    if (rc == 0)
        rc = label_value(b, value);
    if (rc == 0)
        rc = ag_buf_printf(b, "\",le=\"+Inf\"} %llu\n", (unsigned long long)count);
    if (rc == 0)
        rc = ag_buf_printf(b, "%s_sum{%s=\"", name, label);
    if (rc == 0)
        rc = label_value(b, value);
    if (rc == 0)
        rc = ag_buf_printf(b, "\"} %.9f\n%s_count{%s=\"", (double)sum_ns / 1e9, name, label);
    if (rc == 0)
        rc = label_value(b, value);
    if (rc == 0)
        rc = ag_buf_printf(b, "\"} %llu\n", (unsigned long long)count);
    return rc;
}

/* Sums one phist over the workers. */
static void sum_phist(const ag_metrics_t *m, size_t off, uint64_t *buckets, size_t nb,
                      uint64_t *count, uint64_t *sum_ns)
{
    memset(buckets, 0, sizeof(uint64_t) * (nb + 1));
    *count = 0;
    *sum_ns = 0;
    for (unsigned w = 0; w < m->nworkers; w++) {
        phist_t *h = (phist_t *)((char *)&m->slabs[w] + off);
        for (size_t i = 0; i <= nb; i++)
            buckets[i] += ag_ctr_get(&h->buckets[i]);
        *count += ag_ctr_get(&h->count);
        *sum_ns += ag_ctr_get(&h->sum_ns);
    }
}

static model_slab_t *find_model(worker_slab_t *s, const char *model);

/* One model's duration histogram (at `off` in its slab), summed over the workers. */
static void sum_model_phist(ag_metrics_t *m, const char *model, size_t off, uint64_t *buckets,
                            uint64_t *count, uint64_t *sum_ns)
{
    memset(buckets, 0, sizeof(uint64_t) * (NDUR + 1));
    *count = *sum_ns = 0;
    for (unsigned w = 0; w < m->nworkers; w++) {
        model_slab_t *ms = find_model(&m->slabs[w], model);
        if (!ms)
            continue;
        phist_t *h = (phist_t *)((char *)ms + off);
        for (size_t k = 0; k <= NDUR; k++)
            buckets[k] += ag_ctr_get(&h->buckets[k]);
        *count += ag_ctr_get(&h->count);
        *sum_ns += ag_ctr_get(&h->sum_ns);
    }
}

/* The distinct model names any worker has seen, in first-seen order of worker 0 then the rest. */
static size_t collect_models(const ag_metrics_t *m, const char **names, size_t cap)
{
    size_t n = 0;
    for (unsigned w = 0; w < m->nworkers; w++) {
        for (size_t i = 0; i <= AG_METRICS_MAX_MODELS; i++) {
            model_slab_t *ms = &m->slabs[w].models[i];
            if (!atomic_load_explicit(&ms->used, memory_order_acquire))
                continue;
            bool seen = false;
            for (size_t k = 0; k < n && !seen; k++)
                seen = strcmp(names[k], ms->name) == 0;
            if (!seen && n < cap)
                names[n++] = ms->name;
        }
    }
    return n;
}

static model_slab_t *find_model(worker_slab_t *s, const char *name)
{
    for (size_t i = 0; i <= AG_METRICS_MAX_MODELS; i++) {
        model_slab_t *ms = &s->models[i];
        if (atomic_load_explicit(&ms->used, memory_order_acquire) && strcmp(ms->name, name) == 0)
            return ms;
    }
    return NULL;
}

static void process_figures(double *rss, double *cpu_s, double *fds)
{
    *rss = *cpu_s = *fds = 0;
    long pages = 0, resident = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (f) {
        if (fscanf(f, "%ld %ld", &pages, &resident) == 2)
            *rss = (double)resident * (double)sysconf(_SC_PAGESIZE);
        fclose(f);
    }
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) == 0)
        *cpu_s = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
                 (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
    /* getdents64 on our own descriptor: no shared libc directory state. */
    int fd = open("/proc/self/fd", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        char buf[8192];
        long n;
        while ((n = syscall(SYS_getdents64, fd, buf, sizeof(buf))) > 0) {
            for (long off = 0; off < n;) {
                const char *name = buf + off + 19; /* d_ino 8, d_off 8, d_reclen 2, d_type 1 */
                unsigned short reclen;
                memcpy(&reclen, buf + off + 16, sizeof(reclen));
                *fds += name[0] != '.';
                off += reclen;
            }
        }
        *fds -= 1; /* the directory's own descriptor */
        close(fd);
    }
}

int ag_metrics_render(ag_metrics_t *m, const ag_metrics_process_t *p, ag_buf_t *b)
{
    int rc = family(b, "aigate_http_requests_total", "counter",
                    "Requests answered on the client listener, by route and status.");
    for (size_t r = 0; r < m->nroutes && rc == 0; r++) {
        for (int st = 0; st < NSTATUS && rc == 0; st++) {
            uint64_t n = 0;
            for (unsigned w = 0; w < m->nworkers; w++)
                n += ag_ctr_get(&m->slabs[w].routes[r].status[st]);
            if (n) {
                char code[8];
                snprintf(code, sizeof(code), "%d", st + 100);
                rc = sample_label(b, "aigate_http_requests_total", "route", m->routes[r], "status",
                                  code, (double)n);
            }
        }
    }
    uint64_t buckets[NDUR + 1], count, sum;
    if (rc == 0)
        rc = family(b, "aigate_http_request_duration_seconds", "histogram",
                    "Time from the request's first byte to its response's last, by route.");
    for (size_t r = 0; r < m->nroutes && rc == 0; r++) {
        sum_phist(m,
                  offsetof(worker_slab_t, routes) + r * sizeof(route_slab_t) +
                      offsetof(route_slab_t, duration),
                  buckets, NDUR, &count, &sum);
        if (count)
            rc = render_hist(b, "aigate_http_request_duration_seconds", "route", m->routes[r],
                             duration_le, NDUR, buckets, count, sum);
    }
    if (rc == 0)
        rc = family(b, "aigate_request_cpu_seconds", "histogram",
                    "CPU time aigate spent on each request (its worker's thread), by route.");
    for (size_t r = 0; r < m->nroutes && rc == 0; r++) {
        sum_phist(m,
                  offsetof(worker_slab_t, routes) + r * sizeof(route_slab_t) +
                      offsetof(route_slab_t, cpu),
                  buckets, NCPU, &count, &sum);
        if (count)
            rc = render_hist(b, "aigate_request_cpu_seconds", "route", m->routes[r], cpu_le, NCPU,
                             buckets, count, sum);
    }
    const char *models[AG_METRICS_MAX_MODELS * 4];
    size_t nmodels = collect_models(m, models, AG_ARRAY_LEN(models));
    if (rc == 0)
        rc = family(b, "aigate_upstream_requests_total", "counter",
                    "Calls to the upstream (the seed's subrequests), by model and the upstream's "
                    "status (0: no answer).");
    for (size_t i = 0; i < nmodels && rc == 0; i++) {
        int codes[MODEL_STATUSES * 4];
        uint64_t counts[MODEL_STATUSES * 4];
        size_t nc = 0;
        for (unsigned w = 0; w < m->nworkers; w++) {
            model_slab_t *ms = find_model(&m->slabs[w], models[i]);
            unsigned ns = ms ? atomic_load_explicit(&ms->nstatus, memory_order_acquire) : 0;
            for (unsigned k = 0; k < ns; k++) {
                size_t j = 0;
                while (j < nc && codes[j] != ms->status_code[k])
                    j++;
                if (j == nc) {
                    if (nc == AG_ARRAY_LEN(codes))
                        continue;
                    codes[nc] = ms->status_code[k];
                    counts[nc++] = 0;
                }
                counts[j] += ag_ctr_get(&ms->status_n[k]);
            }
        }
        for (size_t j = 0; j < nc && rc == 0; j++) {
            char code[12];
            snprintf(code, sizeof(code), "%d", codes[j]);
            rc = sample_label(b, "aigate_upstream_requests_total", "model", models[i], "status",
                              code, (double)counts[j]);
        }
    }
    if (rc == 0)
        rc = family(b, "aigate_upstream_duration_seconds", "histogram",
                    "Time of each upstream call, by model.");
    for (size_t i = 0; i < nmodels && rc == 0; i++) {
        sum_model_phist(m, models[i], offsetof(model_slab_t, upstream), buckets, &count, &sum);
        if (count)
            rc = render_hist(b, "aigate_upstream_duration_seconds", "model", models[i], duration_le,
                             NDUR, buckets, count, sum);
    }
    if (rc == 0)
        rc = family(b, "aigate_upstream_retries_total", "counter",
                    "Upstream calls made again, by reason.");
    for (unsigned k = 1; k < AG_RETRY_NREASONS && rc == 0; k++) {
        pthread_mutex_lock(&m->tasks_lock);
        uint64_t n = m->task_retries[k];
        pthread_mutex_unlock(&m->tasks_lock);
        for (unsigned w = 0; w < m->nworkers; w++)
            n += ag_ctr_get(&m->slabs[w].retries[k]);
        rc = sample_label(b, "aigate_upstream_retries_total", "reason",
                          ag_retry_reason_name((ag_retry_reason_t)k), NULL, NULL, (double)n);
    }
    if (rc == 0)
        rc = family(b, "aigate_upstream_fallbacks_total", "counter",
                    "Answers given by a fallback model, by the model asked for.");
    for (size_t i = 0; i < nmodels && rc == 0; i++) {
        uint64_t n = 0;
        for (unsigned w = 0; w < m->nworkers; w++) {
            model_slab_t *ms = find_model(&m->slabs[w], models[i]);
            n += ms ? ag_ctr_get(&ms->fallbacks) : 0;
        }
        if (n)
            rc = sample_label(b, "aigate_upstream_fallbacks_total", "model", models[i], NULL, NULL,
                              (double)n);
    }
    static const char *const token_types[] = {"input", "output", "cache_read", "cache_write"};
    if (rc == 0)
        rc = family(b, "aigate_tokens_total", "counter",
                    "Tokens the upstream used, by model and type (cache hits use none).");
    for (size_t i = 0; i < nmodels && rc == 0; i++) {
        for (size_t t = 0; t < 4 && rc == 0; t++) {
            uint64_t n = 0;
            for (unsigned w = 0; w < m->nworkers; w++) {
                model_slab_t *ms = find_model(&m->slabs[w], models[i]);
                n += ms ? ag_ctr_get(&ms->tokens[t]) : 0;
            }
            rc = sample_label(b, "aigate_tokens_total", "model", models[i], "type", token_types[t],
                              (double)n);
        }
    }
    if (rc == 0)
        rc = family(b, "aigate_cost_usd_total", "counter",
                    "Estimated upstream cost in US dollars, by model.");
    for (size_t i = 0; i < nmodels && rc == 0; i++) {
        double c = 0;
        for (unsigned w = 0; w < m->nworkers; w++) {
            model_slab_t *ms = find_model(&m->slabs[w], models[i]);
            c += ms ? ag_fctr_get(&ms->cost) : 0;
        }
        rc = sample_label(b, "aigate_cost_usd_total", "model", models[i], NULL, NULL, c);
    }
    double saved = 0;
    uint64_t cache[4] = {0};
    int64_t streams = 0;
    for (unsigned w = 0; w < m->nworkers; w++) {
        saved += ag_fctr_get(&m->slabs[w].saved_usd);
        for (int k = 0; k < 4; k++)
            cache[k] += ag_ctr_get(&m->slabs[w].cache[k]);
        streams += ag_gauge_get(&m->slabs[w].streams);
    }
    if (rc == 0)
        rc = family(b, "aigate_cache_saved_usd_total", "counter",
                    "What cache hits would have cost upstream, in US dollars.");
    if (rc == 0)
        rc = ag_buf_printf(b, "aigate_cache_saved_usd_total %.17g\n", saved);
    if (rc == 0)
        rc = family(b, "aigate_cache_requests_total", "counter",
                    "Requests on routes that cache, by result.");
    static const char *const results[] = {NULL, "hit", "miss", "bypass"};
    for (int k = 1; k < 4 && rc == 0; k++)
        rc = sample_label(b, "aigate_cache_requests_total", "result", results[k], NULL, NULL,
                          (double)cache[k]);
    if (rc == 0)
        rc = family(b, "aigate_ratelimit_rejections_total", "counter",
                    "Requests refused by a rate limit, by route.");
    for (size_t r = 1; r < m->nroutes && rc == 0; r++) {
        uint64_t n = 0;
        for (unsigned w = 0; w < m->nworkers; w++)
            n += ag_ctr_get(&m->slabs[w].routes[r].ratelimited);
        rc = sample_label(b, "aigate_ratelimit_rejections_total", "route", m->routes[r], NULL, NULL,
                          (double)n);
    }
    /* Per client key (its name): the names any worker has seen, summed. */
    if (rc == 0)
        rc = family(b, "aigate_key_requests_total", "counter",
                    "AI requests made with a client API key, by the key's name (bounded: "
                    "past 64 names, \"other\").");
    const char *keys[(AG_METRICS_MAX_KEYS + 1) * 4];
    size_t nkeys = 0;
    for (unsigned w = 0; w < m->nworkers; w++) {
        for (size_t i = 0; i <= AG_METRICS_MAX_KEYS; i++) {
            key_slab_t *k = &m->slabs[w].keys[i];
            if (!atomic_load_explicit(&k->used, memory_order_acquire))
                continue;
            size_t j = 0;
            while (j < nkeys && strcmp(keys[j], k->name) != 0)
                j++;
            if (j == nkeys && nkeys < AG_ARRAY_LEN(keys))
                keys[nkeys++] = k->name;
        }
    }
    for (int pass = 0; pass < 2 && rc == 0; pass++) {
        if (pass == 1)
            rc = family(b, "aigate_key_cost_usd_total", "counter",
                        "Estimated upstream cost of a client key's requests, in US dollars.");
        for (size_t i = 0; i < nkeys && rc == 0; i++) {
            double v = 0;
            for (unsigned w = 0; w < m->nworkers; w++) {
                for (size_t j = 0; j <= AG_METRICS_MAX_KEYS; j++) {
                    key_slab_t *k = &m->slabs[w].keys[j];
                    if (atomic_load_explicit(&k->used, memory_order_acquire) &&
                        strcmp(k->name, keys[i]) == 0)
                        v += pass ? ag_fctr_get(&k->cost) : (double)ag_ctr_get(&k->requests);
                }
            }
            rc = sample_label(b, pass ? "aigate_key_cost_usd_total" : "aigate_key_requests_total",
                              "key", keys[i], NULL, NULL, v);
        }
    }
    if (rc == 0)
        rc = family(b, "aigate_queue_depth", "gauge",
                    "Requests waiting for the upstream's rate window, by model.");
    for (size_t i = 0; i < nmodels && rc == 0; i++) {
        int64_t n = 0;
        for (unsigned w = 0; w < m->nworkers; w++) {
            model_slab_t *ms = find_model(&m->slabs[w], models[i]);
            n += ms ? ag_gauge_get(&ms->queued) : 0;
        }
        rc = sample_label(b, "aigate_queue_depth", "model", models[i], NULL, NULL, (double)n);
    }
    if (rc == 0)
        rc = family(b, "aigate_queue_wait_seconds", "histogram",
                    "Time requests waited in the upstream queue, by model.");
    for (size_t i = 0; i < nmodels && rc == 0; i++) {
        sum_model_phist(m, models[i], offsetof(model_slab_t, queue_wait), buckets, &count, &sum);
        if (count)
            rc = render_hist(b, "aigate_queue_wait_seconds", "model", models[i], duration_le, NDUR,
                             buckets, count, sum);
    }
    if (rc == 0)
        rc = family(b, "aigate_streams_active", "gauge", "Streams being relayed now.");
    if (rc == 0)
        rc = ag_buf_printf(b, "aigate_streams_active %lld\n", (long long)streams);
    if (rc == 0)
        rc = family(b, "aigate_connections_active", "gauge", "Open client connections.");
    if (rc == 0)
        rc = ag_buf_printf(b, "aigate_connections_active %llu\n",
                           (unsigned long long)p->connections_active);
    if (rc == 0)
        rc = family(b, "aigate_usage_log_entries_total", "counter",
                    "Usage-log entries accepted for writing.");
    if (rc == 0)
        rc = ag_buf_printf(b, "aigate_usage_log_entries_total %llu\n",
                           (unsigned long long)p->usage_log_entries);
    if (rc == 0)
        rc = family(b, "aigate_usage_log_dropped_total", "counter",
                    "Usage-log entries dropped because the writer's queue was full.");
    if (rc == 0)
        rc = ag_buf_printf(b, "aigate_usage_log_dropped_total %llu\n",
                           (unsigned long long)p->usage_log_dropped);
    if (rc == 0)
        rc = family(b, "aigate_usage_log_spool_bytes", "gauge",
                    "Usage-log NDJSON bytes waiting in the local spool for the store.");
    if (rc == 0)
        rc = ag_buf_printf(b, "aigate_usage_log_spool_bytes %llu\n",
                           (unsigned long long)p->usage_log_spool_bytes);
    if (rc == 0)
        rc = family(b, "aigate_usage_log_spool_full_total", "counter",
                    "Usage-log batches the full spool refused (kept in memory instead).");
    if (rc == 0)
        rc = ag_buf_printf(b, "aigate_usage_log_spool_full_total %llu\n",
                           (unsigned long long)p->usage_log_spool_full);
    if (rc == 0)
        rc = family(b, "aigate_tail_dropped_total", "counter",
                    "Tail events dropped because a subscriber read too slowly.");
    if (rc == 0)
        rc = ag_buf_printf(b, "aigate_tail_dropped_total %llu\n",
                           (unsigned long long)p->tail_dropped);
    if (rc == 0)
        rc = family(b, "aigate_task_runs_total", "counter",
                    "Scheduled task runs, by task and outcome.");
    pthread_mutex_lock(&m->tasks_lock);
    for (size_t i = 0; i < m->ntasks && rc == 0; i++)
        rc = sample_label(b, "aigate_task_runs_total", "task", m->tasks[i].task, "outcome",
                          m->tasks[i].outcome, (double)m->tasks[i].n);
    pthread_mutex_unlock(&m->tasks_lock);
    if (rc == 0)
        rc = family(b, "aigate_config_reloads_total", "counter",
                    "Configuration reloads, by result.");
    pthread_mutex_lock(&m->tasks_lock);
    uint64_t reloads[2] = {m->reloads[0], m->reloads[1]};
    pthread_mutex_unlock(&m->tasks_lock);
    if (rc == 0)
        rc = ag_buf_printf(b,
                           "aigate_config_reloads_total{result=\"success\"} %llu\n"
                           "aigate_config_reloads_total{result=\"failure\"} %llu\n",
                           (unsigned long long)reloads[1], (unsigned long long)reloads[0]);
    double rss, cpu_s, fds;
    process_figures(&rss, &cpu_s, &fds);
    if (rc == 0)
        rc = family(b, "process_resident_memory_bytes", "gauge", "Resident memory size in bytes.");
    if (rc == 0)
        rc = ag_buf_printf(b, "process_resident_memory_bytes %.0f\n", rss);
    if (rc == 0)
        rc = family(b, "process_cpu_seconds_total", "counter",
                    "Total user and system CPU time spent in seconds.");
    if (rc == 0)
        rc = ag_buf_printf(b, "process_cpu_seconds_total %.6f\n", cpu_s);
    if (rc == 0)
        rc = family(b, "process_start_time_seconds", "gauge",
                    "Start time of the process since unix epoch in seconds.");
    if (rc == 0)
        rc = ag_buf_printf(b, "process_start_time_seconds %.3f\n", p->start_time_s);
    if (rc == 0)
        rc = family(b, "process_open_fds", "gauge", "Number of open file descriptors.");
    if (rc == 0)
        rc = ag_buf_printf(b, "process_open_fds %.0f\n", fds);
    return rc;
}
