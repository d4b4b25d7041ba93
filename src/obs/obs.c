/* SPDX-License-Identifier: MIT
 *
 * obs.c: per-worker observer state and the fan-out of request records.
 */
#include "util/platform.h"

#include <errno.h>
#include <stdlib.h>

#include "obs/access_log.h"
#include "obs/obs.h"

/* Each worker's state on its own cache lines: workers never share a line. */
typedef struct obs_worker {
    _Alignas(64) ag_buf_t lines;
    uv_prepare_t flush;
    bool started;
} obs_worker_t;

struct ag_obs {
    ag_obs_options_t opts;
    obs_worker_t *workers;
};

int ag_obs_new(const ag_obs_options_t *opts, ag_obs_t **out)
{
    ag_obs_t *obs = calloc(1, sizeof(*obs));
    if (!obs)
        return -ENOMEM;
    obs->opts = *opts;
    obs->workers = aligned_alloc(64, sizeof(obs_worker_t) * (opts->nworkers ? opts->nworkers : 1));
    if (!obs->workers) {
        free(obs);
        return -ENOMEM;
    }
    for (unsigned i = 0; i < opts->nworkers; i++) {
        obs_worker_t *w = &obs->workers[i];
        ag_buf_init(&w->lines, 0);
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
    free(obs->workers);
    free(obs);
}

static void on_prepare(uv_prepare_t *p)
{
    obs_worker_t *w = p->data;
    if (w->lines.len)
        ag_access_log_flush(&w->lines);
}

int ag_obs_worker_start(ag_obs_t *obs, unsigned index, uv_loop_t *loop)
{
    if (index >= obs->opts.nworkers)
        return -EINVAL;
    obs_worker_t *w = &obs->workers[index];
    int rc = uv_prepare_init(loop, &w->flush);
    if (rc < 0)
        return rc;
    w->flush.data = w;
    uv_prepare_start(&w->flush, on_prepare);
    uv_unref((uv_handle_t *)&w->flush);
    w->started = true;
    return 0;
}

void ag_obs_worker_stop(ag_obs_t *obs, unsigned index)
{
    if (index >= obs->opts.nworkers)
        return;
    obs_worker_t *w = &obs->workers[index];
    ag_access_log_flush(&w->lines);
    if (w->started)
        uv_close((uv_handle_t *)&w->flush, NULL);
    w->started = false;
}

void ag_obs_request_done(ag_obs_t *obs, unsigned index, const ag_request_record_t *rec)
{
    if (obs->opts.access_log && index < obs->opts.nworkers)
        ag_access_log_format(&obs->workers[index].lines, rec);
}
