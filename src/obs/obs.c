/* SPDX-License-Identifier: MIT
 *
 * obs.c: per-worker observer state and the fan-out of request records.
 */
#include "util/platform.h"

#include <errno.h>
#include <stdlib.h>

#include "obs/access_log.h"
#include "obs/obs.h"
#include "util/log.h"

/* Each worker's state on its own cache lines: workers never share a line. */
typedef struct obs_worker {
    _Alignas(64) ag_buf_t lines;
    uv_prepare_t flush;
    uv_timer_t fold; /* folds the worker's minute into the series */
    ag_obs_t *obs;
    unsigned index;
    bool started;
} obs_worker_t;

struct ag_obs {
    ag_obs_options_t opts;
    double start_time;
    obs_worker_t *workers;
    ag_metrics_t *metrics;
    ag_series_t *series;
    ag_tail_t *tail;
};

int ag_obs_new(const ag_obs_options_t *opts, ag_obs_t **out)
{
    ag_obs_t *obs = calloc(1, sizeof(*obs));
    if (!obs)
        return -ENOMEM;
    obs->opts = *opts;
    obs->opts.nworkers = opts->nworkers ? opts->nworkers : 1;
    obs->start_time = (double)ag_now_us() / 1e6;
    obs->workers = aligned_alloc(64, sizeof(obs_worker_t) * obs->opts.nworkers);
    int rc = obs->workers ? 0 : -ENOMEM;
    if (rc == 0)
        rc = ag_metrics_new(obs->opts.nworkers, opts->routes, opts->nroutes, &obs->metrics);
    if (rc == 0)
        rc = ag_series_new(obs->opts.nworkers, (int64_t)obs->start_time, &obs->series);
    if (rc == 0)
        rc = ag_tail_new(opts->script_name, &obs->tail);
    if (rc < 0) {
        ag_metrics_free(obs->metrics);
        ag_series_free(obs->series);
        free(obs->workers);
        free(obs);
        return rc;
    }
    for (unsigned i = 0; i < obs->opts.nworkers; i++) {
        obs_worker_t *w = &obs->workers[i];
        ag_buf_init(&w->lines, 0);
        w->obs = obs;
        w->index = i;
        w->started = false;
    }
    *out = obs;
    return 0;
}

void ag_obs_free(ag_obs_t *obs)
{
    if (!obs)
        return;
    for (unsigned i = 0; i < obs->opts.nworkers; i++) {
        ag_access_log_flush(&obs->workers[i].lines);
        ag_buf_fini(&obs->workers[i].lines);
    }
    ag_metrics_free(obs->metrics);
    ag_series_free(obs->series);
    ag_tail_free(obs->tail);
    free(obs->workers);
    free(obs);
}

static void on_prepare(uv_prepare_t *p)
{
    obs_worker_t *w = p->data;
    if (w->lines.len)
        ag_access_log_flush(&w->lines);
}

static void on_fold(uv_timer_t *t)
{
    obs_worker_t *w = t->data;
    ag_series_flush(w->obs->series, w->index);
}

int ag_obs_worker_start(ag_obs_t *obs, unsigned index, uv_loop_t *loop)
{
    if (index >= obs->opts.nworkers)
        return -EINVAL;
    obs_worker_t *w = &obs->workers[index];
    int rc = uv_prepare_init(loop, &w->flush);
    if (rc < 0)
        return rc;
    rc = uv_timer_init(loop, &w->fold);
    if (rc < 0) {
        uv_close((uv_handle_t *)&w->flush, NULL);
        return rc;
    }
    w->flush.data = w;
    w->fold.data = w;
    uv_prepare_start(&w->flush, on_prepare);
    uv_unref((uv_handle_t *)&w->flush);
    uv_timer_start(&w->fold, on_fold, 1000, 1000);
    uv_unref((uv_handle_t *)&w->fold);
    w->started = true;
    return 0;
}

void ag_obs_worker_stop(ag_obs_t *obs, unsigned index)
{
    if (index >= obs->opts.nworkers)
        return;
    obs_worker_t *w = &obs->workers[index];
    ag_access_log_flush(&w->lines);
    ag_series_flush(obs->series, index);
    if (w->started) {
        uv_close((uv_handle_t *)&w->flush, NULL);
        uv_close((uv_handle_t *)&w->fold, NULL);
    }
    w->started = false;
}

void ag_obs_request_done(ag_obs_t *obs, unsigned index, const ag_request_record_t *rec)
{
    if (index >= obs->opts.nworkers)
        return;
    if (obs->opts.access_log)
        ag_access_log_format(&obs->workers[index].lines, rec);
    if (!obs->opts.metrics)
        return;
    ag_metrics_record(obs->metrics, index, rec);
    ag_series_record(obs->series, index, rec, (rec->start_us + rec->duration_us) / 1000000);
    ag_tail_publish(obs->tail, rec);
}

void ag_obs_task_run(ag_obs_t *obs, const ag_request_record_t *rec, const char *outcome)
{
    if (!obs->opts.metrics)
        return;
    ag_metrics_task_run(obs->metrics, rec->task, outcome);
    ag_metrics_retries(obs->metrics, rec->ai.retries_by_reason);
    ag_tail_publish(obs->tail, rec);
}

void ag_obs_queue(ag_obs_t *obs, unsigned index, const char *model, int delta)
{
    if (obs->opts.metrics)
        ag_metrics_queue(obs->metrics, index, model, delta);
}

void ag_obs_streams(ag_obs_t *obs, unsigned index, int delta)
{
    ag_metrics_streams(obs->metrics, index, delta);
}

ag_metrics_t *ag_obs_metrics(ag_obs_t *obs)
{
    return obs->metrics;
}

ag_series_t *ag_obs_series(ag_obs_t *obs)
{
    return obs->series;
}

ag_tail_t *ag_obs_tail(ag_obs_t *obs)
{
    return obs->tail;
}

double ag_obs_start_time(const ag_obs_t *obs)
{
    return obs->start_time;
}
