/* SPDX-License-Identifier: MIT
 *
 * tasks.c: compiling [[aigate.tasks]], the tasks' thread and timer, and one
 * run: values gathered off the loop, the prompt rendered, the upstream called
 * with retries, the outputs delivered, the run recorded.
 */
#include "util/platform.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <curl/curl.h>
#include <jansson.h>
#include <uv.h>

#include "cron/cron.h"
#include "cron/schedule.h"
#include "cron/template.h"
#include "obs/stats.h"
#include "store/kv.h"
#include "store/redis.h"
#include "store/secrets.h"
#include "store/secrets_resolve.h"
#include "tasks/outputs.h"
#include "tasks/tasks.h"
#include "upstream/call.h"
#include "upstream/client.h"
#include "util/errors.h"
#include "util/json.h"
#include "util/log.h"

#define FETCH_MAX_BYTES (1u << 20) /* {{fetch:URL}} */
#define FETCH_TIMEOUT_MS 10000

typedef struct task {
    const ag_config_task_t *c;
    ag_cron_t cron;
    ag_template_t *prompt;
    ag_template_t *r2_key, *kv_key, *subject; /* time-only templates */
    char *r2_binding, *kv_binding;
    const char *model;
    char *last; /* the last run record (JSON), under ag_tasks_t.lock */
} task_t;

typedef struct request {
    struct request *next;
    size_t task;
    bool by_cron; /* from /__scheduled: the cron expression stands for the time */
    ag_task_done_fn done;
    void *ctx;
} request_t;

struct ag_tasks {
    ag_tasks_options_t o;
    task_t *tasks;
    size_t n;
    ag_schedule_entry_t *entries;
    ag_schedule_t sched;
    ag_price_t *prices;
    size_t nprices;
    char *messages_url;
    char *key_header; /* "x-api-key: ..." */
    char *smtp_password;
    uv_loop_t loop;
    uv_thread_t thread;
    uv_timer_t timer;
    uv_async_t wake;
    pthread_mutex_t lock; /* requests, last records */
    request_t *requests;
    atomic_bool stop;
    ag_upstream_t *upstream;
    ag_callq_t *callq; /* the runs' backoffs and rate-window waits */
    ag_redis_t *redis; /* [aigate.redis]: each scheduled time's lock; NULL without */
    char *redis_password;
    char instance[96]; /* "HOST PID": who holds a run's lock */
    unsigned running;  /* runs, and run locks being asked for */
    struct run *runs;
    bool closed;
    bool thread_started;
};

typedef struct run {
    struct run *prev, *next; /* the runs in progress */
    ag_tasks_t *ts;
    task_t *t;
    size_t index;
    int64_t scheduled_ms;
    int64_t start_us;
    ag_task_done_fn done;
    void *ctx;
    uv_work_t work;
    ag_str_t *values;
    bool *missing;
    unsigned nmissing;
    ag_buf_t prompt, body, text, record;
    ag_call_t *call;
    const char *headers[5];
    unsigned attempts;
    uint8_t retries_by_reason[AG_RETRY_NREASONS];
    int64_t queued_us;
    const char *answered_by; /* the model that answered, when a fallback did */
    int upstream_status;
    int64_t upstream_us;
    int64_t in, out;
    double cost;
    const char *outcome; /* ok, exception */
    char error[160];
    ag_output_t outs[5];
    ag_output_result_t results[5];
    size_t nouts;
    char r2_key[1024], kv_key[1024], subject[512];
} run_t;

/* ---- compiling ----------------------------------------------------------------------- */

static const char *cfg_path(const ag_config_t *cfg)
{
    return cfg->path ? cfg->path : "(config)";
}

static bool kv_binding_known(const ag_config_t *cfg, const char *b, size_t len)
{
    for (size_t i = 0; i < cfg->nkv_namespaces; i++) {
        if (strlen(cfg->kv_namespaces[i].name) == len &&
            memcmp(cfg->kv_namespaces[i].name, b, len) == 0)
            return true;
    }
    return false;
}

static bool r2_binding_known(const ag_config_t *cfg, const char *b, size_t len)
{
    for (size_t i = 0; i < cfg->nr2_buckets; i++) {
        if (strlen(cfg->r2_buckets[i].name) == len && memcmp(cfg->r2_buckets[i].name, b, len) == 0)
            return true;
    }
    return false;
}

/* A "BINDING:key template" output target. */
static int compile_target(const ag_config_t *cfg, const ag_config_task_t *c, const char *what,
                          const char *spec, ag_config_pos_t at, bool r2, char **binding,
                          ag_template_t **key, FILE *errs)
{
    const char *colon = strchr(spec, ':');
    if (!colon || colon == spec || !colon[1]) {
        if (errs)
            fprintf(errs, "%s:%u:%u: task %s: output.%s must be \"BINDING:key\"\n", cfg_path(cfg),
                    at.line, at.col, c->name, what);
        return AG_EBADCONFIG;
    }
    size_t blen = (size_t)(colon - spec);
    if (!(r2 ? r2_binding_known(cfg, spec, blen) : kv_binding_known(cfg, spec, blen))) {
        if (errs)
            fprintf(errs, "%s:%u:%u: task %s: output.%s: no %s binding named '%.*s'\n",
                    cfg_path(cfg), at.line, at.col, c->name, what,
                    r2 ? "[[r2_buckets]]" : "[[kv_namespaces]]", (int)blen, spec);
        return AG_EBADCONFIG;
    }
    ag_template_error_t err;
    if (ag_template_parse(colon + 1, strlen(colon + 1), key, &err) < 0 ||
        !ag_template_is_time_only(*key)) {
        if (errs)
            fprintf(errs, "%s:%u:%u: task %s: output.%s: %s\n", cfg_path(cfg), at.line,
                    at.col + 1 + (unsigned)blen + 1 + (unsigned)err.offset, c->name, what,
                    *key ? "a key may use only {{date}}, {{datetime}} and {{scheduledTime}}"
                         : err.message);
        return AG_EBADCONFIG;
    }
    *binding = strndup(spec, blen);
    return *binding ? 0 : -ENOMEM;
}

static int compile_task(const ag_config_t *cfg, const ag_config_task_t *c, task_t *t, FILE *errs)
{
    t->c = c;
    ag_cron_error_t cerr;
    int rc = 0;
    if (ag_cron_parse(c->cron, strlen(c->cron), &t->cron, &cerr) < 0) {
        if (errs)
            fprintf(errs, "%s:%u:%u: task %s: cron \"%s\": %s\n", cfg_path(cfg), c->cron_at.line,
                    c->cron_at.col + 1 + cerr.offset, c->name, c->cron, cerr.message);
        rc = AG_EBADCONFIG;
    } else if (ag_cron_next(&t->cron, 0) < 0) {
        if (errs)
            fprintf(errs, "%s:%u:%u: task %s: cron \"%s\" never matches a day\n", cfg_path(cfg),
                    c->cron_at.line, c->cron_at.col, c->name, c->cron);
        rc = AG_EBADCONFIG;
    }
    ag_template_error_t terr;
    if (ag_template_parse(c->prompt, strlen(c->prompt), &t->prompt, &terr) < 0) {
        if (errs)
            fprintf(errs, "%s:%u:%u: task %s: prompt (its line %u, column %u): %s\n", cfg_path(cfg),
                    c->prompt_at.line, c->prompt_at.col, c->name, terr.line, terr.col,
                    terr.message);
        rc = AG_EBADCONFIG;
    }
    for (size_t i = 0; t->prompt && i < ag_template_count(t->prompt); i++) {
        const ag_template_var_t *v = ag_template_var(t->prompt, i);
        bool kv = v->kind == AG_TEMPLATE_KV, r2 = v->kind == AG_TEMPLATE_R2;
        if ((kv && !kv_binding_known(cfg, v->binding.ptr, v->binding.len)) ||
            (r2 && !r2_binding_known(cfg, v->binding.ptr, v->binding.len))) {
            uint32_t line, col;
            ag_template_locate(t->prompt, v->binding_offset, &line, &col);
            if (errs)
                fprintf(errs,
                        "%s:%u:%u: task %s: prompt (its line %u, column %u): no %s binding "
                        "named '%.*s'\n",
                        cfg_path(cfg), c->prompt_at.line, c->prompt_at.col, c->name, line, col,
                        kv ? "[[kv_namespaces]]" : "[[r2_buckets]]", (int)v->binding.len,
                        v->binding.ptr);
            rc = AG_EBADCONFIG;
        }
    }
    if (c->out_r2 && compile_target(cfg, c, "r2", c->out_r2, c->r2_at, true, &t->r2_binding,
                                    &t->r2_key, errs) < 0)
        rc = AG_EBADCONFIG;
    if (c->out_kv && compile_target(cfg, c, "kv", c->out_kv, c->kv_at, false, &t->kv_binding,
                                    &t->kv_key, errs) < 0)
        rc = AG_EBADCONFIG;
    if (c->out_email_subject) {
        if (ag_template_parse(c->out_email_subject, strlen(c->out_email_subject), &t->subject,
                              &terr) < 0 ||
            !ag_template_is_time_only(t->subject)) {
            if (errs)
                fprintf(errs,
                        "%s:%u:%u: task %s: output.email.subject may use only {{date}}, "
                        "{{datetime}} and {{scheduledTime}}\n",
                        cfg_path(cfg), c->email_at.line, c->email_at.col, c->name);
            rc = AG_EBADCONFIG;
        }
    }
    if (c->out_email_to && !cfg->smtp_url) {
        if (errs)
            fprintf(errs, "%s:%u:%u: task %s: output.email needs [aigate.smtp] url and from\n",
                    cfg_path(cfg), c->email_at.line, c->email_at.col, c->name);
        rc = AG_EBADCONFIG;
    }
    t->model =
        c->model ? c->model : ag_config_task_model(cfg, c->task, c->task ? strlen(c->task) : 0);
    return rc;
}

static void task_fini(task_t *t)
{
    ag_template_free(t->prompt);
    ag_template_free(t->r2_key);
    ag_template_free(t->kv_key);
    ag_template_free(t->subject);
    free(t->r2_binding);
    free(t->kv_binding);
    free(t->last);
}

static int compile_all(const ag_config_t *cfg, FILE *errs, task_t **out)
{
    task_t *tasks = calloc(cfg->ntasks ? cfg->ntasks : 1, sizeof(*tasks));
    if (!tasks)
        return -ENOMEM;
    int rc = 0;
    for (size_t i = 0; i < cfg->ntasks; i++) {
        if (compile_task(cfg, &cfg->tasks[i], &tasks[i], errs) < 0)
            rc = AG_EBADCONFIG;
    }
    if (rc < 0) {
        for (size_t i = 0; i < cfg->ntasks; i++)
            task_fini(&tasks[i]);
        free(tasks);
        return rc;
    }
    *out = tasks;
    return 0;
}

/* [triggers] crons: each must parse, task or no task. */
static int check_triggers(const ag_config_t *cfg, FILE *errs)
{
    int rc = 0;
    for (size_t i = 0; i < cfg->ncrons; i++) {
        ag_cron_t c;
        ag_cron_error_t err;
        if (ag_cron_parse(cfg->crons[i], strlen(cfg->crons[i]), &c, &err) < 0) {
            if (errs)
                fprintf(errs, "%s:%u:%u: triggers.crons: \"%s\": %s\n", cfg_path(cfg),
                        cfg->cron_at[i].line, cfg->cron_at[i].col + 1 + err.offset, cfg->crons[i],
                        err.message);
            rc = AG_EBADCONFIG;
        }
    }
    return rc;
}

int ag_tasks_check(const ag_config_t *cfg, FILE *errs)
{
    task_t *tasks = NULL;
    int rc = compile_all(cfg, errs, &tasks);
    for (size_t i = 0; rc == 0 && i < cfg->ntasks; i++)
        task_fini(&tasks[i]);
    if (rc == 0)
        free(tasks);
    return rc == 0 ? check_triggers(cfg, errs) : rc;
}

/* ---- recording ---------------------------------------------------------------------- */

static int64_t now_ms(const ag_tasks_t *ts)
{
    return ts->o.now_ms ? ts->o.now_ms(ts->o.clock_ctx) : ag_now_us() / 1000;
}

static void record_json(run_t *r)
{
    ag_buf_t *b = &r->record;
    char when[32];
    ag_cron_format_time(r->scheduled_ms / 1000, when, sizeof(when));
    ag_buf_append_cstr(b, "{\"task\":");
    ag_json_append_string(b, ag_str_c(r->t->c->name));
    ag_buf_append_cstr(b, ",\"cron\":");
    ag_json_append_string(b, ag_str_c(r->t->c->cron));
    ag_buf_printf(b, ",\"scheduledTime\":%lld,\"scheduled\":\"%s\",\"model\":",
                  (long long)r->scheduled_ms, when);
    ag_json_append_string(b, ag_str_c(r->t->model));
    ag_buf_printf(b,
                  ",\"outcome\":\"%s\",\"attempts\":%u,\"upstreamStatus\":%d,\"durationMs\":%lld,"
                  "\"usage\":{\"input_tokens\":%lld,\"output_tokens\":%lld},\"costUsd\":%.9f",
                  r->outcome, r->attempts, r->upstream_status,
                  (long long)((ag_mono_us() - r->start_us) / 1000), (long long)r->in,
                  (long long)r->out, r->cost);
    if (r->error[0]) {
        ag_buf_append_cstr(b, ",\"error\":");
        ag_json_append_string(b, ag_str_c(r->error));
    }
    ag_buf_append_cstr(b, ",\"missing\":[");
    for (size_t i = 0, k = 0; r->missing && i < ag_template_count(r->t->prompt); i++) {
        if (!r->missing[i])
            continue;
        if (k++)
            ag_buf_append_cstr(b, ",");
        ag_json_append_string(b, ag_template_var(r->t->prompt, i)->text);
    }
    ag_buf_append_cstr(b, "],\"outputs\":[");
    for (size_t i = 0; i < r->nouts; i++) {
        const ag_output_result_t *res = &r->results[i];
        ag_buf_printf(b, "%s{\"kind\":\"%s\",\"ok\":%s,\"attempts\":%u,\"status\":%d,\"detail\":",
                      i ? "," : "", ag_output_kind_name(r->outs[i].kind),
                      res->rc == 0 ? "true" : "false", res->attempts, res->status);
        ag_json_append_string(b, ag_str_c(res->detail));
        ag_buf_append_cstr(b, "}");
    }
    ag_buf_append_cstr(b, "]}");
}

static void usage_entry(run_t *r)
{
    ag_usage_log_t *log = r->ts->o.usage_log;
    if (!log)
        return;
    ag_usage_entry_t e;
    memset(&e, 0, sizeof(e));
    const char *model = r->answered_by ? r->answered_by : r->t->model;
    ag_usage_entry_set_str(e.model, sizeof(e.model), model, strlen(model));
    if (r->answered_by)
        ag_usage_entry_set_str(e.fallback_from, sizeof(e.fallback_from), r->t->model,
                               strlen(r->t->model));
    e.queued_ms = (uint32_t)(r->queued_us / 1000);
    ag_usage_entry_set_str(e.client, sizeof(e.client), "scheduled", 9);
    char id[40];
    snprintf(id, sizeof(id), "cron-%s-%lld", r->t->c->name, (long long)r->scheduled_ms);
    ag_usage_entry_set_str(e.request_id, sizeof(e.request_id), id, strlen(id));
    ag_usage_entry_set_str(e.outcome, sizeof(e.outcome), r->outcome, strlen(r->outcome));
    e.prompt_length = (uint32_t)r->prompt.len;
    e.output_length = (uint32_t)r->text.len;
    e.input_tokens = r->in;
    e.output_tokens = r->out;
    e.status = r->upstream_status == 200 ? 200 : 502;
    e.latency_ms = (uint32_t)((ag_mono_us() - r->start_us) / 1000);
    ag_usage_entry_set_str(e.route, sizeof(e.route), "scheduled", 9);
    e.attempts = r->attempts;
    ag_usage_entry_set_str(e.task, sizeof(e.task), r->t->c->name, strlen(r->t->c->name));
    ag_usage_entry_set_str(e.cron, sizeof(e.cron), r->t->c->cron, strlen(r->t->c->cron));
    e.scheduled_ms = r->scheduled_ms;
    char outs[256] = "";
    size_t used = 0;
    for (size_t i = 0; i < r->nouts && used < sizeof(outs); i++) {
        int n =
            snprintf(outs + used, sizeof(outs) - used, "%s%s:%s", i ? "," : "",
                     ag_output_kind_name(r->outs[i].kind), r->results[i].rc == 0 ? "ok" : "failed");
        used += n > 0 ? (size_t)n : 0;
    }
    ag_usage_entry_set_str(e.outputs, sizeof(e.outputs), outs, strnlen(outs, sizeof(outs)));
    int rc = ag_usage_log_append(log, &e);
    if (rc < 0)
        ag_log_warn("task %s: usage entry not accepted: %s", r->t->c->name, ag_strerror(rc));
}

static void run_free(run_t *r)
{
    free(r->values);
    free(r->missing);
    ag_buf_fini(&r->prompt);
    ag_buf_fini(&r->body);
    ag_buf_fini(&r->text);
    ag_buf_fini(&r->record);
    free(r);
}

/* Stopping, and nothing runs any more: close the loop's handles, so it ends. */
static void maybe_close(ag_tasks_t *ts)
{
    if (!atomic_load(&ts->stop) || ts->running > 0 || ts->closed)
        return;
    ts->closed = true;
    uv_close((uv_handle_t *)&ts->timer, NULL);
    uv_close((uv_handle_t *)&ts->wake, NULL);
    ag_callq_close(ts->callq);
    ts->callq = NULL;
    ag_upstream_close(ts->upstream);
    ag_redis_close(ts->redis); /* nothing of it is pending: those count in `running` */
    ts->redis = NULL;
}

/* The run ended, with or without an answer: record it everywhere it goes. */
static void run_finish(run_t *r)
{
    ag_tasks_t *ts = r->ts;
    record_json(r);
    usage_entry(r);
    if (ts->o.obs) {
        ag_request_record_t rec;
        memset(&rec, 0, sizeof(rec));
        char id[40];
        snprintf(id, sizeof(id), "cron-%lld", (long long)r->scheduled_ms);
        rec.id = id;
        rec.route = "scheduled";
        rec.client = "scheduled";
        rec.cron = r->t->c->cron;
        rec.task = r->t->c->name;
        rec.scheduled_ms = r->scheduled_ms;
        rec.status = strcmp(r->outcome, "ok") == 0 ? 200 : 502;
        rec.start_us = r->scheduled_ms * 1000;
        rec.duration_us = ag_mono_us() - r->start_us;
        rec.ai.model = r->t->model;
        rec.ai.input_tokens = r->in;
        rec.ai.output_tokens = r->out;
        rec.ai.cost_usd = r->cost;
        rec.ai.attempts = r->attempts;
        memcpy(rec.ai.retries_by_reason, r->retries_by_reason, sizeof(r->retries_by_reason));
        rec.ai.queued_us = r->queued_us;
        rec.ai.fallback_from = r->answered_by ? r->t->model : NULL;
        if (r->answered_by)
            rec.ai.model = r->answered_by;
        rec.ai.upstream_us = r->upstream_us;
        ag_obs_task_run(ts->o.obs, &rec, r->outcome);
    }
    ag_log_info("task %s (%s): %s after %u attempt%s, %zu output%s", r->t->c->name, r->t->c->cron,
                r->outcome, r->attempts, r->attempts == 1 ? "" : "s", r->nouts,
                r->nouts == 1 ? "" : "s");
    char *copy = strndup(r->record.data, r->record.len);
    pthread_mutex_lock(&ts->lock);
    free(r->t->last);
    r->t->last = copy;
    pthread_mutex_unlock(&ts->lock);
    ag_schedule_done(&ts->sched, r->index); /* every run holds its entry */
    if (r->done)
        r->done(r->ctx, ag_str(r->record.data, r->record.len));
    if (r->prev)
        r->prev->next = r->next;
    else
        ts->runs = r->next;
    if (r->next)
        r->next->prev = r->prev;
    ts->running--;
    run_free(r);
    maybe_close(ts);
}

/* ---- outputs (off the loop) --------------------------------------------------------- */

static void outputs_work(uv_work_t *w)
{
    run_t *r = w->data;
    ag_tasks_t *ts = r->ts;
    const ag_config_task_t *c = r->t->c;
    ag_outputs_env_t env = {
        .data_dir = ts->o.cfg->data_dir,
        .cfg = ts->o.cfg,
        .smtp = {.url = ts->o.cfg->smtp_url,
                 .from = ts->o.cfg->smtp_from,
                 .user = ts->o.cfg->smtp_user,
                 .password = ts->smtp_password},
        .timeout_ms = 10000,
        .attempts = 3,
        .backoff_ms = 200,
        .backoff_max_ms = 2000,
        .command_timeout_ms = 30000,
        .stop = &ts->stop,
    };
    ag_buf_t tmp;
    ag_buf_init(&tmp, 0);
    if (c->out_r2) {
        tmp.len = 0;
        ag_template_render(r->t->r2_key, r->scheduled_ms, NULL, 0, &tmp, NULL);
        snprintf(r->r2_key, sizeof(r->r2_key), "%.*s", (int)tmp.len, tmp.data ? tmp.data : "");
        r->outs[r->nouts++] =
            (ag_output_t){.kind = AG_OUT_R2, .binding = r->t->r2_binding, .key = r->r2_key};
    }
    if (c->out_kv) {
        tmp.len = 0;
        ag_template_render(r->t->kv_key, r->scheduled_ms, NULL, 0, &tmp, NULL);
        snprintf(r->kv_key, sizeof(r->kv_key), "%.*s", (int)tmp.len, tmp.data ? tmp.data : "");
        r->outs[r->nouts++] =
            (ag_output_t){.kind = AG_OUT_KV, .binding = r->t->kv_binding, .key = r->kv_key};
    }
    if (c->out_webhook)
        r->outs[r->nouts++] = (ag_output_t){.kind = AG_OUT_WEBHOOK, .url = c->out_webhook};
    if (c->out_email_to) {
        tmp.len = 0;
        if (r->t->subject)
            ag_template_render(r->t->subject, r->scheduled_ms, NULL, 0, &tmp, NULL);
        snprintf(r->subject, sizeof(r->subject), "%.*s", (int)tmp.len,
                 tmp.len ? tmp.data : c->name);
        r->outs[r->nouts++] =
            (ag_output_t){.kind = AG_OUT_EMAIL, .to = c->out_email_to, .subject = r->subject};
    }
    if (c->out_command)
        r->outs[r->nouts++] = (ag_output_t){.kind = AG_OUT_COMMAND, .argv = c->out_command};
    ag_buf_fini(&tmp);
    ag_delivery_t d = {
        .task = c->name,
        .cron = c->cron,
        .scheduled_ms = r->scheduled_ms,
        .model = r->t->model,
        .output = ag_str(r->text.data ? r->text.data : "", r->text.len),
        .input_tokens = r->in,
        .output_tokens = r->out,
        .cost_usd = r->cost,
    };
    ag_outputs_deliver(&env, r->outs, r->nouts, &d, r->results);
}

static void outputs_done(uv_work_t *w, int status)
{
    AG_UNUSED(status);
    run_finish(w->data);
}

/* ---- the upstream ------------------------------------------------------------------- */

/* The answer's text blocks and usage. @return false when it has none. */
static bool read_answer(run_t *r, const ag_upstream_response_t *resp)
{
    json_t *root = json_loadb(resp->body.ptr, resp->body.len, 0, NULL);
    json_t *content = json_object_get(root, "content"), *block;
    size_t i;
    bool ok = json_is_array(content);
    json_array_foreach(content, i, block)
    {
        json_t *type = json_object_get(block, "type"), *text = json_object_get(block, "text");
        if (json_is_string(type) && strcmp(json_string_value(type), "text") == 0 &&
            json_is_string(text))
            ag_buf_append(&r->text, json_string_value(text), json_string_length(text));
    }
    json_t *usage = json_object_get(root, "usage");
    r->in = json_integer_value(json_object_get(usage, "input_tokens"));
    r->out = json_integer_value(json_object_get(usage, "output_tokens"));
    json_decref(root);
    return ok;
}

static void upstream_done(void *ctx, const ag_upstream_response_t *resp, const ag_call_summary_t *s)
{
    run_t *r = ctx;
    r->call = NULL;
    r->attempts = s->attempts;
    for (unsigned k = 0; k < AG_RETRY_NREASONS; k++)
        r->retries_by_reason[k] =
            (uint8_t)(s->retries_by_reason[k] > 255 ? 255 : s->retries_by_reason[k]);
    r->queued_us = s->queued_us;
    r->answered_by = s->fallback_from ? s->model : NULL;
    r->upstream_status = resp->status;
    r->upstream_us += resp->duration_us;
    const char *model = r->answered_by ? r->answered_by : r->t->model;
    if (!resp->error && resp->status == 200 && read_answer(r, resp)) {
        r->cost = ag_usage_cost_usd(r->ts->prices, r->ts->nprices, model, r->in, r->out, 0, 0);
        r->outcome = "ok";
        r->work.data = r;
        if (uv_queue_work(&r->ts->loop, &r->work, outputs_work, outputs_done) < 0)
            run_finish(r);
        return;
    }
    r->outcome = "exception";
    snprintf(r->error, sizeof(r->error), "upstream %s (status %d)%s%s",
             resp->error_text ? resp->error_text : "failed", resp->status, s->why_final ? ": " : "",
             s->why_final ? s->why_final : "");
    run_finish(r);
}

static void call_upstream(run_t *r)
{
    ag_tasks_t *ts = r->ts;
    if (atomic_load(&ts->stop)) {
        r->outcome = "canceled";
        snprintf(r->error, sizeof(r->error), "the server stopped");
        run_finish(r);
        return;
    }
    if (!ts->key_header) {
        r->outcome = "exception";
        snprintf(r->error, sizeof(r->error), "%s is not set", ts->o.cfg->api_key_secret);
        run_finish(r);
        return;
    }
    /* Every attempt reads the header lines: they live as long as the run. */
    const char *const headers[] = {ts->key_header, "anthropic-version: 2023-06-01",
                                   "content-type: application/json", "accept: application/json",
                                   NULL};
    memcpy(r->headers, headers, sizeof(headers));
    const ag_config_t *cfg = ts->o.cfg;
    ag_call_opts_t o = {
        .upstream = ts->upstream,
        .queue = ts->callq,
        .rates = ts->o.rates,
        .policy = {cfg->upstream_retries, cfg->upstream_retry_base_ms, cfg->upstream_retry_max_ms,
                   cfg->upstream_retry_max_wait_ms, cfg->upstream_deadline_ms},
        .queue_max = cfg->queue_max,
        .queue_timeout_ms = cfg->queue_timeout_ms,
        .request =
            {
                .url = ts->messages_url,
                .headers = r->headers,
                .nheaders = 4,
                .body = r->body.data,
                .body_len = r->body.len,
                .connect_timeout_ms = cfg->upstream_connect_timeout_ms,
                .timeout_ms = cfg->upstream_timeout_ms,
            },
        .model = r->t->model,
        .done = upstream_done,
        .ctx = r,
    };
    const ag_config_fallback_t *fb = ag_config_fallbacks(cfg, r->t->model);
    if (fb) {
        o.fallbacks = (const char *const *)fb->chain;
        o.nfallbacks = fb->n;
    }
    int rc = ag_call_start(&o, &r->call);
    if (rc < 0) {
        r->outcome = "exception";
        snprintf(r->error, sizeof(r->error), "cannot call the upstream: %s", ag_strerror(rc));
        run_finish(r);
    }
}

/* ---- the values of the prompt (off the loop) ------------------------------------------ */

static size_t fetch_write(char *data, size_t size, size_t n, void *userp)
{
    ag_buf_t *b = userp;
    size_t len = size * n;
    return ag_buf_append(b, data, len) == 0 ? len : 0;
}

static char *fetch_url(const ag_str_t url, size_t *len)
{
    CURL *e = curl_easy_init();
    if (!e)
        return NULL;
    char *u = strndup(url.ptr, url.len);
    ag_buf_t b;
    ag_buf_init(&b, FETCH_MAX_BYTES);
    curl_easy_setopt(e, CURLOPT_URL, u);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, fetch_write);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, &b);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)FETCH_TIMEOUT_MS);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    CURLcode cc = curl_easy_perform(e);
    long status = 0;
    curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_cleanup(e);
    free(u);
    if (cc != CURLE_OK || status < 200 || status > 299) {
        ag_buf_fini(&b);
        return NULL;
    }
    *len = b.len;
    char *out = b.data ? b.data : strdup("");
    return out;
}

static void gather_work(uv_work_t *w)
{
    run_t *r = w->data;
    ag_tasks_t *ts = r->ts;
    const ag_template_t *tp = r->t->prompt;
    size_t n = ag_template_count(tp);
    r->values = calloc(n ? n : 1, sizeof(ag_str_t));
    r->missing = calloc(n ? n : 1, sizeof(bool));
    char **owned = calloc(n ? n : 1, sizeof(char *));
    for (size_t i = 0; r->values && owned && i < n; i++) {
        const ag_template_var_t *v = ag_template_var(tp, i);
        char *val = NULL;
        size_t len = 0;
        if (v->kind == AG_TEMPLATE_KV) {
            ag_kv_t *kv = NULL;
            char *binding = strndup(v->binding.ptr, v->binding.len);
            ag_kv_value_t kvv;
            if (binding && ag_outputs_kv_open(ts->o.cfg, ts->o.cfg->data_dir, binding, &kv) == 0 &&
                ag_kv_get(kv, v->arg.ptr, v->arg.len, &kvv) == 0) {
                val = kvv.data;
                len = kvv.len;
                kvv.data = NULL;
                ag_kv_value_free(&kvv);
            }
            ag_kv_close(kv);
            free(binding);
        } else if (v->kind == AG_TEMPLATE_R2) {
            char *binding = strndup(v->binding.ptr, v->binding.len);
            const char *bucket = binding ? ag_config_r2_bucket(ts->o.cfg, binding) : NULL;
            ag_objstore_t *st = NULL;
            ag_obj_t obj;
            memset(&obj, 0, sizeof(obj));
            const ag_config_binding_t *rb =
                binding ? ag_config_r2_binding(ts->o.cfg, binding) : NULL;
            ag_objstore_s3_where_t where = {ts->o.cfg->s3_endpoint, ts->o.cfg->s3_region,
                                            ts->o.cfg->s3_path_style};
            if (bucket &&
                ag_objstore_open_binding(ts->o.cfg->data_dir, bucket, false,
                                         rb ? rb->backend : NULL, &where, &st) == 0 &&
                ag_objstore_get(st, v->arg.ptr, v->arg.len, &obj) == 0) {
                val = obj.data;
                len = obj.len;
                obj.data = NULL;
            }
            ag_obj_free(&obj);
            ag_objstore_close(st);
            free(binding);
        } else if (v->kind == AG_TEMPLATE_USAGE) {
            int64_t now = now_ms(ts);
            ag_stats_query_t q = {
                .since_ms = now - v->window_s * 1000, .until_ms = now, .threads = 1};
            ag_stats_result_t res;
            memset(&res, 0, sizeof(res));
            if (ag_stats_collect(ts->o.log_bucket, &q, &res) == 0) {
                ag_buf_t b;
                ag_buf_init(&b, 0);
                if (ag_stats_text(&res, &b) == 0) {
                    val = b.data ? b.data : strdup("");
                    len = b.len;
                } else {
                    ag_buf_fini(&b);
                }
            }
            ag_stats_result_fini(&res);
        } else if (v->kind == AG_TEMPLATE_FETCH) {
            val = fetch_url(v->arg, &len);
        } else {
            continue; /* time variables: the renderer's own */
        }
        owned[i] = val;
        r->values[i] = val ? ag_str(val, len) : AG_STR_NULL;
    }
    int missing =
        r->values ? ag_template_render(tp, r->scheduled_ms, r->values, n, &r->prompt, r->missing)
                  : -ENOMEM;
    r->nmissing = missing > 0 ? (unsigned)missing : 0;
    for (size_t i = 0; owned && i < n; i++)
        free(owned[i]);
    free(owned);
    free(r->values);
    r->values = NULL;
    if (missing < 0) {
        snprintf(r->error, sizeof(r->error), "cannot render the prompt: %s", ag_strerror(missing));
        return;
    }
    unsigned max_tokens = r->t->c->max_tokens ? r->t->c->max_tokens : ts->o.cfg->max_tokens;
    ag_buf_append_cstr(&r->body, "{\"model\":");
    ag_json_append_string(&r->body, ag_str_c(r->t->model));
    ag_buf_printf(&r->body,
                  ",\"max_tokens\":%u,\"messages\":[{\"role\":\"user\",\"content\":", max_tokens);
    ag_json_append_string(&r->body, ag_str(r->prompt.data ? r->prompt.data : "", r->prompt.len));
    ag_buf_append_cstr(&r->body, "}]}");
}

static void gather_done(uv_work_t *w, int status)
{
    run_t *r = w->data;
    AG_UNUSED(status);
    if (r->error[0]) {
        r->outcome = "exception";
        run_finish(r);
        return;
    }
    call_upstream(r);
}

static void run_start(ag_tasks_t *ts, size_t i, int64_t scheduled_ms, ag_task_done_fn done,
                      void *ctx)
{
    run_t *r = calloc(1, sizeof(*r));
    AG_ASSERT(r != NULL);
    r->ts = ts;
    r->t = &ts->tasks[i];
    r->index = i;
    r->scheduled_ms = scheduled_ms;
    r->start_us = ag_mono_us();
    r->done = done;
    r->ctx = ctx;
    r->outcome = "exception";
    ag_buf_init(&r->prompt, 0);
    ag_buf_init(&r->body, 0);
    ag_buf_init(&r->text, 0);
    ag_buf_init(&r->record, 0);
    r->work.data = r;
    ts->running++;
    r->next = ts->runs;
    if (ts->runs)
        ts->runs->prev = r;
    ts->runs = r;
    if (uv_queue_work(&ts->loop, &r->work, gather_work, gather_done) < 0) {
        snprintf(r->error, sizeof(r->error), "cannot start the run");
        run_finish(r);
    }
}

/* ---- run locks (several instances on one Redis) ---------------------------------- */

/* How long a scheduled time's lock is kept: past any clock skew between
 * instances, so a late one still finds the time taken. */
#define RUN_LOCK_MS "3600000"

typedef struct run_lock {
    ag_tasks_t *ts;
    size_t index;
    int64_t at_ms;
} run_lock_t;

static void on_run_lock(void *ctx, int rc, const ag_resp_t *reply)
{
    run_lock_t *lk = ctx;
    ag_tasks_t *ts = lk->ts;
    size_t i = lk->index;
    int64_t at_ms = lk->at_ms;
    free(lk);
    ts->running--;
    char when[32];
    ag_cron_format_time(at_ms / 1000, when, sizeof(when));
    const char *name = ts->tasks[i].c->name;
    if (atomic_load(&ts->stop)) {
        ag_schedule_done(&ts->sched, i);
        maybe_close(ts);
        return;
    }
    if (rc == 0 && reply->type == AG_RESP_NIL) {
        ag_log_info("task %s at %s: another instance runs it (its Redis lock is taken)", name,
                    when);
        ag_schedule_done(&ts->sched, i);
        return;
    }
    if (rc == 0 && reply->type != AG_RESP_STATUS)
        rc = AG_REDIS_EREPLY;
    /* A run missed is worse than a run made twice: without Redis it runs here. */
    if (rc < 0)
        ag_log_warn("task %s at %s: Redis cannot lock the run (%s): it runs here, and may run on "
                    "another instance too",
                    name, when, ag_strerror(rc));
    run_start(ts, i, at_ms, NULL, NULL);
}

/* Each scheduled time runs on one instance: the first to SET its key. */
static void run_lock(ag_tasks_t *ts, size_t i, int64_t at_ms)
{
    run_lock_t *lk = malloc(sizeof(*lk));
    AG_ASSERT(lk != NULL);
    *lk = (run_lock_t){ts, i, at_ms};
    char *key = NULL;
    ts->running++;
    int rc = asprintf(&key, "aigate:run:%s:%lld", ts->tasks[i].c->name, (long long)at_ms) < 0
                 ? -ENOMEM
                 : 0;
    if (rc == 0) {
        const char *argv[] = {"SET", key, ts->instance, "NX", "PX", RUN_LOCK_MS};
        rc = ag_redis_command(ts->redis, 6, argv, NULL, on_run_lock, lk, NULL);
    }
    free(key);
    if (rc < 0)
        on_run_lock(lk, rc, NULL);
}

/* ---- the thread --------------------------------------------------------------------- */

static void on_timer(uv_timer_t *t)
{
    ag_tasks_t *ts = t->data;
    if (atomic_load(&ts->stop))
        return;
    int64_t now = now_ms(ts);
    size_t due[64];
    int64_t at[64];
    size_t n = ag_schedule_due(&ts->sched, now / 1000, due, at, AG_ARRAY_LEN(due));
    for (size_t k = 0; k < n; k++) {
        if (ts->redis)
            run_lock(ts, due[k], at[k] * 1000);
        else
            run_start(ts, due[k], at[k] * 1000, NULL, NULL);
    }
    uv_timer_start(&ts->timer, on_timer, (uint64_t)ag_schedule_sleep_ms(&ts->sched, now_ms(ts)), 0);
}

static void on_wake(uv_async_t *a)
{
    ag_tasks_t *ts = a->data;
    pthread_mutex_lock(&ts->lock);
    request_t *q = ts->requests;
    ts->requests = NULL;
    pthread_mutex_unlock(&ts->lock);
    while (q) {
        request_t *next = q->next;
        ag_schedule_entry_t *e = &ts->entries[q->task];
        if (atomic_load(&ts->stop)) {
            /* Nothing starts any more; whoever waits for this run hears so
             * (a reload restarting the runner must not leave a caller hanging). */
            if (q->done) {
                ag_buf_t b;
                ag_buf_init(&b, 0);
                ag_buf_append_cstr(&b, "{\"task\":");
                ag_json_append_string(&b, ag_str_c(ts->tasks[q->task].c->name));
                ag_buf_append_cstr(&b,
                                   ",\"outcome\":\"canceled\",\"error\":\"the server stopped\"}");
                q->done(q->ctx, ag_str(b.data, b.len));
                ag_buf_fini(&b);
            }
        } else if (e->running) {
            /* Runs of one task never overlap, whoever asks. */
            e->skipped++;
            if (q->done) {
                ag_buf_t b;
                ag_buf_init(&b, 0);
                ag_buf_append_cstr(&b, "{\"task\":");
                ag_json_append_string(&b, ag_str_c(ts->tasks[q->task].c->name));
                ag_buf_append_cstr(&b, ",\"outcome\":\"skipped\",\"error\":\"a run of this task "
                                       "is in progress\"}");
                q->done(q->ctx, ag_str(b.data, b.len));
                ag_buf_fini(&b);
            }
        } else {
            e->running = true;
            run_start(ts, q->task, now_ms(ts) / 60000 * 60000, q->done, q->ctx);
        }
        free(q);
        q = next;
    }
    if (atomic_load(&ts->stop)) {
        uv_timer_stop(&ts->timer);
        /* A run waiting on the upstream or on a retry ends now, canceled; one
         * on the thread pool finishes there (its outputs see `stop`). */
        for (run_t *r = ts->runs, *next; r; r = next) {
            next = r->next;
            if (!r->call)
                continue;
            ag_call_cancel(r->call);
            r->call = NULL;
            r->outcome = "canceled";
            snprintf(r->error, sizeof(r->error), "the server stopped");
            run_finish(r);
        }
        maybe_close(ts);
    }
}

static void thread_main(void *arg)
{
    ag_tasks_t *ts = arg;
    uv_run(&ts->loop, UV_RUN_DEFAULT);
}

static int enqueue(ag_tasks_t *ts, size_t i, ag_task_done_fn done, void *ctx)
{
    request_t *q = calloc(1, sizeof(*q));
    if (!q)
        return -ENOMEM;
    q->task = i;
    q->done = done;
    q->ctx = ctx;
    pthread_mutex_lock(&ts->lock);
    q->next = ts->requests;
    ts->requests = q;
    pthread_mutex_unlock(&ts->lock);
    uv_async_send(&ts->wake);
    return 0;
}

int ag_tasks_run(ag_tasks_t *ts, const char *name, ag_task_done_fn done, void *ctx)
{
    for (size_t i = 0; ts && i < ts->n; i++) {
        if (strcmp(ts->tasks[i].c->name, name) == 0)
            return enqueue(ts, i, done, ctx);
    }
    return AG_ENOTFOUND;
}

int ag_tasks_run_cron(ag_tasks_t *ts, const char *cron)
{
    int n = 0;
    for (size_t i = 0; ts && i < ts->n; i++) {
        if (strcmp(ts->tasks[i].c->cron, cron) == 0 && enqueue(ts, i, NULL, NULL) == 0)
            n++;
    }
    return n;
}

/* The runner's own connection, on its loop (the gateway's are on theirs). */
static int open_redis(ag_tasks_t *ts, const ag_config_t *cfg)
{
    char host[64] = "";
    gethostname(host, sizeof(host) - 1);
    snprintf(ts->instance, sizeof(ts->instance), "%s %d", host, (int)getpid());
    /* Used only when the URL has no password; a Redis may have none. */
    if (ag_secrets_resolve(cfg->data_dir, "REDIS_PASSWORD", &ts->redis_password) < 0)
        ts->redis_password = NULL;
    ag_redis_options_t ro = {
        .url = cfg->redis_url,
        .password = ts->redis_password,
        .connect_timeout_ms = cfg->redis_timeout_ms,
        .command_timeout_ms = cfg->redis_timeout_ms,
        .name = "scheduled tasks",
    };
    return ag_redis_new(&ts->loop, &ro, &ts->redis);
}

int ag_tasks_start(const ag_tasks_options_t *opts, FILE *errs, ag_tasks_t **out)
{
    const ag_config_t *cfg = opts->cfg;
    *out = NULL;
    /* A trigger no task answers would be an empty scheduled(): say so. */
    for (size_t i = 0; i < cfg->ncrons; i++) {
        bool used = false;
        for (size_t k = 0; k < cfg->ntasks && !used; k++)
            used = strcmp(cfg->tasks[k].cron, cfg->crons[i]) == 0;
        if (!used)
            ag_log_warn("%s:%u:%u: triggers.crons \"%s\" has no [[aigate.tasks]] entry: it "
                        "will run nothing",
                        cfg_path(cfg), cfg->cron_at[i].line, cfg->cron_at[i].col, cfg->crons[i]);
    }
    int rc = check_triggers(cfg, errs);
    if (rc < 0 || cfg->ntasks == 0)
        return rc;
    ag_tasks_t *ts = calloc(1, sizeof(*ts));
    if (!ts)
        return -ENOMEM;
    ts->o = *opts;
    rc = compile_all(cfg, errs, &ts->tasks);
    if (rc < 0) {
        free(ts);
        return rc;
    }
    ts->n = cfg->ntasks;
    ts->entries = calloc(ts->n, sizeof(*ts->entries));
    ts->prices = calloc(cfg->nprices + 1, sizeof(*ts->prices));
    for (size_t i = 0; ts->entries && i < ts->n; i++)
        ts->entries[i].cron = ts->tasks[i].cron;
    for (size_t i = 0; ts->prices && i < cfg->nprices; i++)
        ts->prices[i] = (ag_price_t){.model = cfg->prices[i].model,
                                     .input_per_mtok = cfg->prices[i].input_per_mtok,
                                     .output_per_mtok = cfg->prices[i].output_per_mtok};
    ts->nprices = cfg->nprices;
    ts->sched = (ag_schedule_t){ts->entries, ts->n, 0};
    const char *base = cfg->upstream;
    size_t blen = strlen(base);
    while (blen && base[blen - 1] == '/')
        blen--;
    if (asprintf(&ts->messages_url, "%.*s/v1/messages", (int)blen, base) < 0)
        ts->messages_url = NULL;
    char *key = NULL;
    if (ag_secrets_resolve(cfg->data_dir, cfg->api_key_secret, &key) == 0) {
        if (asprintf(&ts->key_header, "x-api-key: %s", key) < 0)
            ts->key_header = NULL;
        ag_secrets_value_free(key);
    }
    ag_secrets_resolve(cfg->data_dir, "SMTP_PASSWORD", &ts->smtp_password);
    pthread_mutex_init(&ts->lock, NULL);
    rc = ts->entries && ts->prices && ts->messages_url ? uv_loop_init(&ts->loop) : -ENOMEM;
    if (rc == 0)
        ts->loop.data = ts; /* marks the loop as initialised */
    if (rc == 0)
        rc = ag_upstream_new(&ts->loop, &ts->upstream);
    if (rc == 0)
        rc = ag_callq_new(&ts->loop, NULL, NULL, &ts->callq);
    if (rc == 0 && cfg->redis_url)
        rc = open_redis(ts, cfg);
    if (rc == 0) {
        uv_timer_init(&ts->loop, &ts->timer);
        uv_async_init(&ts->loop, &ts->wake, on_wake);
        ts->timer.data = ts;
        ts->wake.data = ts;
        ag_schedule_start(&ts->sched, now_ms(ts) / 1000);
        uv_timer_start(&ts->timer, on_timer, (uint64_t)ag_schedule_sleep_ms(&ts->sched, now_ms(ts)),
                       0);
        rc = uv_thread_create(&ts->thread, thread_main, ts);
    }
    if (rc < 0) {
        ag_log_error("cannot start the scheduled tasks: %s", ag_strerror(rc));
        if (ts->upstream) {
            atomic_store(&ts->stop, true);
            maybe_close(ts);
            uv_run(&ts->loop, UV_RUN_DEFAULT); /* the closes */
            ts->thread_started = false;
        }
        ag_tasks_stop(ts);
        return rc;
    }
    ts->thread_started = true;
    *out = ts;
    return 0;
}

void ag_tasks_stop(ag_tasks_t *ts)
{
    if (!ts)
        return;
    if (ts->thread_started) {
        atomic_store(&ts->stop, true);
        uv_async_send(&ts->wake);
        /* Runs still going finish (their outputs see `stop`); the last one's
         * finish closes the loop's handles. */
        uv_thread_join(&ts->thread);
    }
    if (ts->loop.data == ts)
        uv_loop_close(&ts->loop);
    for (size_t i = 0; i < ts->n; i++)
        task_fini(&ts->tasks[i]);
    free(ts->tasks);
    free(ts->entries);
    free(ts->prices);
    free(ts->messages_url);
    if (ts->key_header) {
        explicit_bzero(ts->key_header, strlen(ts->key_header));
        free(ts->key_header);
    }
    ag_secrets_value_free(ts->smtp_password);
    ag_secrets_value_free(ts->redis_password);
    pthread_mutex_destroy(&ts->lock);
    free(ts);
}

int ag_tasks_list_json(ag_tasks_t *ts, const ag_config_t *cfg, int64_t now_s, ag_buf_t *out)
{
    int rc = ag_buf_append_cstr(out, "[");
    for (size_t i = 0; rc == 0 && i < cfg->ntasks; i++) {
        const ag_config_task_t *c = &cfg->tasks[i];
        ag_cron_t cron;
        ag_cron_error_t err;
        bool ok = ag_cron_parse(c->cron, strlen(c->cron), &cron, &err) == 0;
        rc = ag_buf_append_cstr(out, i ? ",{\"name\":" : "{\"name\":");
        if (rc == 0)
            rc = ag_json_append_string(out, ag_str_c(c->name));
        if (rc == 0)
            rc = ag_buf_append_cstr(out, ",\"cron\":");
        if (rc == 0)
            rc = ag_json_append_string(out, ag_str_c(c->cron));
        if (rc == 0)
            rc = ag_buf_append_cstr(out, ",\"next\":[");
        int64_t t = now_s;
        for (int k = 0; ok && rc == 0 && k < 3; k++) {
            t = ag_cron_next(&cron, t);
            if (t < 0)
                break;
            char when[32];
            ag_cron_format_time(t, when, sizeof(when));
            rc = ag_buf_printf(out, "%s\"%s\"", k ? "," : "", when);
        }
        if (rc == 0)
            rc = ag_buf_append_cstr(out, "],\"last\":");
        char *last = NULL;
        if (ts) {
            pthread_mutex_lock(&ts->lock);
            last = ts->tasks[i].last ? strdup(ts->tasks[i].last) : NULL;
            pthread_mutex_unlock(&ts->lock);
        }
        if (rc == 0)
            rc = ag_buf_append_cstr(out, last ? last : "null");
        free(last);
        if (rc == 0)
            rc = ag_buf_append_cstr(out, "}");
    }
    if (rc == 0)
        rc = ag_buf_append_cstr(out, "]");
    return rc;
}
