/* SPDX-License-Identifier: MIT
 *
 * outputs.c: writing a scheduled task run's output to its destinations: R2
 * and KV through the stores, webhooks and e-mail through libcurl's easy
 * interface, commands through exec.c. One retry loop for every kind; each
 * output on its own thread, so a slow one never delays the others.
 */
#include "util/platform.h"

#include "tasks/outputs.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <sys/random.h>
#include <time.h>

#include <curl/curl.h>

#include "store/kv.h"
#include "store/objstore.h"
#include "tasks/exec.h"
#include "tasks/mail.h"
#include "util/buf.h"
#include "util/errors.h"
#include "util/hex.h"
#include "util/json.h"
#include "util/log.h"
#include "util/utf.h"

#define SLEEP_SLICE_MS 50
#define CONNECT_TIMEOUT_MAX_MS 10000
#define SNIPPET_BYTES 96         /* of a webhook's error body, for the detail */
#define RESPONSE_MAX_BYTES 65536 /* of a webhook's body we read at all */
#define MAX_ENV 24

typedef struct job {
    const ag_outputs_env_t *env; /* defaults filled in */
    const ag_output_t *out;
    const ag_delivery_t *d;
    ag_output_result_t *r;
    pthread_t thread;
    bool threaded;
} job_t;

/* What one try says besides its error. */
typedef struct
try {
    bool retry;              /* another try may succeed */
    unsigned retry_after_ms; /* the destination asked for this pause (Retry-After) */
}
try_t;

typedef int (*try_fn)(job_t *j, void *ctx, try_t *t);

const char *ag_output_kind_name(ag_output_kind_t kind)
{
    switch (kind) {
    case AG_OUT_R2:
        return "r2";
    case AG_OUT_KV:
        return "kv";
    case AG_OUT_WEBHOOK:
        return "webhook";
    case AG_OUT_EMAIL:
        return "email";
    case AG_OUT_COMMAND:
        return "command";
    }
    return "?";
}

static bool stopped(const ag_outputs_env_t *env)
{
    return env->stop && atomic_load(env->stop);
}

/* ---- details ----------------------------------------------------------------------------- */

/* Copies src into dst (cap bytes) as one line of valid UTF-8: control
 * characters and runs of white space become one space, an invalid byte '?',
 * and a cut never splits a character. */
static void clean_line(char *dst, size_t cap, const char *src, size_t len)
{
    size_t o = 0;
    bool space = false;
    const unsigned char *p = (const unsigned char *)src;
    for (size_t i = 0; i < len && o + 1 < cap;) {
        unsigned cp;
        size_t adv = p[i] < 0x80 ? 1 : ag_utf8_decode(p + i, len - i, &cp);
        if (p[i] < 0x20 || p[i] == 0x7f || p[i] == ' ') {
            space = o > 0;
            i++;
            continue;
        }
        if (space) {
            if (o + 2 >= cap)
                break;
            dst[o++] = ' ';
            space = false;
        }
        if (adv == 0) {
            dst[o++] = '?';
            i++;
            continue;
        }
        if (o + adv >= cap)
            break;
        memcpy(dst + o, p + i, adv);
        o += adv;
        i += adv;
    }
    dst[o] = '\0';
}

static void set_detail(ag_output_result_t *r, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void set_detail(ag_output_result_t *r, const char *fmt, ...)
{
    char tmp[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
    va_end(ap);
    if (n < 0)
        n = 0;
    clean_line(r->detail, sizeof(r->detail), tmp,
               (size_t)n < sizeof(tmp) ? (size_t)n : sizeof(tmp) - 1);
}

/* Belt and braces: nothing we write says the password, but a server's or a
 * command's text could echo it back. */
static void redact(const ag_outputs_env_t *env, ag_output_result_t *r)
{
    const char *pw = env->smtp.password;
    if (pw && *pw && strstr(r->detail, pw))
        set_detail(r, "(detail withheld: it contained the SMTP password)");
}

/* ---- the retry loop ---------------------------------------------------------------------- */

/* Sleeps ms, in slices, so that a stop ends it early. @return false when stopped. */
static bool pause_ms(const ag_outputs_env_t *env, unsigned ms)
{
    int64_t end = ag_mono_us() + (int64_t)ms * 1000;
    for (;;) {
        if (stopped(env))
            return false;
        int64_t left = end - ag_mono_us();
        if (left <= 0)
            return true;
        if (left > SLEEP_SLICE_MS * 1000)
            left = SLEEP_SLICE_MS * 1000;
        struct timespec ts = {.tv_sec = 0, .tv_nsec = (long)left * 1000};
        nanosleep(&ts, NULL);
    }
}

static unsigned backoff_for(const ag_outputs_env_t *env, unsigned failed, unsigned asked)
{
    unsigned ms = env->backoff_ms;
    for (unsigned k = 1; k < failed && ms < env->backoff_max_ms; k++)
        ms = ms > env->backoff_max_ms / 2 ? env->backoff_max_ms : ms * 2;
    if (asked > ms)
        ms = asked;
    return ms < env->backoff_max_ms ? ms : env->backoff_max_ms;
}

static void run_tries(job_t *j, try_fn fn, void *ctx)
{
    const ag_outputs_env_t *env = j->env;
    ag_output_result_t *r = j->r;
    for (unsigned k = 1; k <= env->attempts; k++) {
        if (stopped(env)) {
            r->rc = AG_OUT_ECANCELED;
            if (k == 1)
                set_detail(r, "%s", ag_strerror(AG_OUT_ECANCELED));
            return;
        }
        try_t t = {0};
        r->status = 0;
        r->detail[0] = '\0';
        r->rc = fn(j, ctx, &t);
        r->attempts = k;
        if (r->detail[0] == '\0')
            set_detail(r, "%s", ag_strerror(r->rc));
        redact(env, r);
        if (r->rc == 0)
            return;
        ag_log_warn("task %s: %s output failed (try %u of %u%s): %s", j->d->task ? j->d->task : "?",
                    ag_output_kind_name(j->out->kind), k, env->attempts,
                    t.retry ? "" : ", not retried", r->detail);
        if (!t.retry || k == env->attempts)
            return;
        if (!pause_ms(env, backoff_for(env, k, t.retry_after_ms))) {
            r->rc = AG_OUT_ECANCELED;
            return;
        }
    }
}

/* Store errors that are the caller's (a bad key, too big: 4xx in errors.def)
 * will fail again; the rest (disk full, I/O) may not. */
static bool store_retryable(int rc)
{
    int http = ag_err_http_status(rc);
    return !(http >= 400 && http < 500);
}

static void fmt_ms(char out[24], int64_t ms)
{
    snprintf(out, 24, "%lld", (long long)ms);
}

/* ---- r2 ---------------------------------------------------------------------------------- */

typedef struct r2_ctx {
    const char *bucket;
} r2_ctx_t;

static bool ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

static int r2_try(job_t *j, void *vctx, try_t *t)
{
    r2_ctx_t *c = vctx;
    const ag_output_t *o = j->out;
    ag_objstore_t *s = NULL;
    const ag_config_t *cfg = j->env->cfg;
    const ag_config_binding_t *b = cfg ? ag_config_r2_binding(cfg, o->binding) : NULL;
    ag_objstore_s3_where_t where = {cfg ? cfg->s3_endpoint : NULL, cfg ? cfg->s3_region : NULL,
                                    cfg ? cfg->s3_path_style : true};
    int rc = ag_objstore_open_binding(j->env->data_dir, c->bucket, true, b ? b->backend : NULL,
                                      &where, &s);
    if (rc < 0) {
        t->retry = store_retryable(rc);
        set_detail(j->r, "r2 %s (bucket %s): cannot open: %s", o->binding, c->bucket,
                   ag_strerror(rc));
        return rc;
    }
    char sched[24];
    fmt_ms(sched, j->d->scheduled_ms);
    ag_obj_meta_pair_t meta[3];
    size_t nmeta = 0;
    meta[nmeta++] = (ag_obj_meta_pair_t){"task", j->d->task ? j->d->task : ""};
    if (j->d->cron)
        meta[nmeta++] = (ag_obj_meta_pair_t){"cron", j->d->cron};
    meta[nmeta++] = (ag_obj_meta_pair_t){"scheduledTime", sched};
    ag_obj_put_opts_t po = {
        .content_type =
            ends_with(o->key, ".md") ? "text/markdown; charset=utf-8" : "text/plain; charset=utf-8",
        .custom = meta,
        .ncustom = nmeta,
    };
    rc = ag_objstore_put(s, o->key, strlen(o->key), j->d->output.ptr ? j->d->output.ptr : "",
                         j->d->output.len, &po, NULL);
    ag_objstore_close(s);
    if (rc < 0) {
        t->retry = store_retryable(rc);
        const char *why = ag_objstore_last_error();
        set_detail(j->r, "r2 %s/%s: %s%s%s", o->binding, o->key, ag_strerror(rc),
                   why[0] ? ": " : "", why);
        return rc;
    }
    set_detail(j->r, "r2 %s/%s: %zu bytes", o->binding, o->key, j->d->output.len);
    return 0;
}

static void deliver_r2(job_t *j)
{
    const ag_output_t *o = j->out;
    r2_ctx_t c = {0};
    if (o->binding && j->env->cfg)
        c.bucket = ag_config_r2_bucket(j->env->cfg, o->binding);
    if (c.bucket == NULL || *c.bucket == '\0') {
        j->r->rc = AG_OUT_EBINDING;
        set_detail(j->r, "r2: no [[r2_buckets]] binding \"%s\" in the configuration",
                   o->binding ? o->binding : "");
        return;
    }
    if (o->key == NULL || *o->key == '\0') {
        j->r->rc = AG_EINVALID;
        set_detail(j->r, "r2 %s: the key is empty", o->binding);
        return;
    }
    run_tries(j, r2_try, &c);
}

/* ---- kv ---------------------------------------------------------------------------------- */

typedef struct kv_ctx {
    ag_buf_t meta; /* the metadata JSON, or empty when none */
} kv_ctx_t;

static bool kv_bound(const ag_config_t *cfg, const char *binding)
{
    for (size_t i = 0; cfg && binding && i < cfg->nkv_namespaces; i++) {
        if (strcmp(cfg->kv_namespaces[i].name, binding) == 0)
            return true;
    }
    return false;
}

int ag_outputs_kv_open(const ag_config_t *cfg, const char *data_dir, const char *binding,
                       ag_kv_t **out)
{
    ag_kv_options_t ko = {0};
    if (cfg && binding) {
        ko.backend = ag_config_kv_backend(cfg, binding);
        ko.redis.url = cfg->redis_url;
        ko.redis.timeout_ms = cfg->redis_timeout_ms;
    }
    return ag_kv_open_namespace(data_dir, binding, &ko, out);
}

static int kv_try(job_t *j, void *vctx, try_t *t)
{
    kv_ctx_t *c = vctx;
    const ag_output_t *o = j->out;
    ag_kv_t *kv = NULL;
    int rc = ag_outputs_kv_open(j->env->cfg, j->env->data_dir, o->binding, &kv);
    if (rc < 0) {
        t->retry = store_retryable(rc);
        set_detail(j->r, "kv %s: cannot open: %s", o->binding, ag_strerror(rc));
        return rc;
    }
    ag_kv_put_opts_t po = {
        .metadata = c->meta.len ? c->meta.data : NULL,
        .metadata_len = c->meta.len,
    };
    rc = ag_kv_put(kv, o->key, strlen(o->key), j->d->output.ptr ? j->d->output.ptr : "",
                   j->d->output.len, &po);
    ag_kv_close(kv);
    if (rc < 0) {
        t->retry = store_retryable(rc);
        set_detail(j->r, "kv %s %s: %s", o->binding, o->key, ag_strerror(rc));
        return rc;
    }
    set_detail(j->r, "kv %s %s: %zu bytes", o->binding, o->key, j->d->output.len);
    return 0;
}

static void deliver_kv(job_t *j)
{
    const ag_output_t *o = j->out;
    if (!kv_bound(j->env->cfg, o->binding)) {
        j->r->rc = AG_OUT_EBINDING;
        set_detail(j->r, "kv: no [[kv_namespaces]] binding \"%s\" in the configuration",
                   o->binding ? o->binding : "");
        return;
    }
    if (o->key == NULL || *o->key == '\0') {
        j->r->rc = AG_EINVALID;
        set_detail(j->r, "kv %s: the key is empty", o->binding);
        return;
    }
    kv_ctx_t c;
    ag_buf_init(&c.meta, AG_KV_MAX_METADATA_LEN);
    char sched[24];
    fmt_ms(sched, j->d->scheduled_ms);
    int rc = ag_buf_append_cstr(&c.meta, "{\"task\":");
    if (rc == 0)
        rc = ag_json_append_string(&c.meta, ag_str_c(j->d->task ? j->d->task : ""));
    if (rc == 0 && j->d->cron) {
        rc = ag_buf_append_cstr(&c.meta, ",\"cron\":");
        if (rc == 0)
            rc = ag_json_append_string(&c.meta, ag_str_c(j->d->cron));
    }
    if (rc == 0)
        rc = ag_buf_printf(&c.meta, ",\"scheduledTime\":%s}", sched);
    if (rc < 0)
        c.meta.len = 0; /* over KV's limit: the value goes without it */
    run_tries(j, kv_try, &c);
    ag_buf_fini(&c.meta);
}

/* ---- libcurl, for webhooks and e-mail ---------------------------------------------------- */

static int on_progress(void *p, curl_off_t dt, curl_off_t dn, curl_off_t ut, curl_off_t un)
{
    (void)dt, (void)dn, (void)ut, (void)un;
    return stopped(p) ? 1 : 0;
}

static CURL *easy_new(const ag_outputs_env_t *env, char errbuf[CURL_ERROR_SIZE])
{
    CURL *h = curl_easy_init();
    if (h == NULL)
        return NULL;
    errbuf[0] = '\0';
    unsigned connect_ms =
        env->timeout_ms < CONNECT_TIMEOUT_MAX_MS ? env->timeout_ms : CONNECT_TIMEOUT_MAX_MS;
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)env->timeout_ms);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, (long)connect_ms);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, on_progress);
    curl_easy_setopt(h, CURLOPT_XFERINFODATA, (void *)env);
    curl_easy_setopt(h, CURLOPT_USERAGENT, "aigate/" AG_VERSION);
    return h;
}

static void set_protocols(CURL *h, const char *list)
{
#if LIBCURL_VERSION_NUM >= 0x075500
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, list);
    curl_easy_setopt(h, CURLOPT_REDIR_PROTOCOLS_STR, list);
#else
    (void)h, (void)list; /* the URL's scheme was checked in any case */
#endif
}

/* Our error for a libcurl failure, and whether another try may do better. */
static int curl_error(CURLcode c, bool *retry)
{
    *retry = false;
    switch (c) {
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY:
    case CURLE_COULDNT_CONNECT:
        *retry = true;
        return AG_OUT_ECONNECT;
    case CURLE_OPERATION_TIMEDOUT:
        *retry = true;
        return AG_OUT_ETIMEOUT;
    case CURLE_ABORTED_BY_CALLBACK:
        return AG_OUT_ECANCELED;
    case CURLE_LOGIN_DENIED:
    case CURLE_AUTH_ERROR:
        return AG_OUT_EAUTH;
    case CURLE_SSL_CONNECT_ERROR:
        *retry = true;
        return AG_OUT_ETLS;
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CIPHER:
    case CURLE_SSL_ISSUER_ERROR:
    case CURLE_SSL_CRL_BADFILE:
    case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
    case CURLE_USE_SSL_FAILED:
        return AG_OUT_ETLS;
    case CURLE_UNSUPPORTED_PROTOCOL:
    case CURLE_URL_MALFORMAT:
    case CURLE_NOT_BUILT_IN:
        return AG_EINVALID;
    case CURLE_OUT_OF_MEMORY:
        *retry = true;
        return -ENOMEM;
    default:
        *retry = true;
        return AG_OUT_ETRANSFER;
    }
}

/* "scheme://host[:port]" of url into out: what a detail may say of it (its
 * path, query and user info may hold a token). @return 0, or AG_EINVALID
 * when it is not a URL of one of the `schemes` (a NULL-terminated list). */
static int url_origin(const char *url, const char *const *schemes, char *out, size_t cap)
{
    CURLU *u = curl_url();
    char *scheme = NULL, *host = NULL, *port = NULL;
    int rc = AG_EINVALID;
    if (u && url && curl_url_set(u, CURLUPART_URL, url, 0) == CURLUE_OK &&
        curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) == CURLUE_OK &&
        curl_url_get(u, CURLUPART_HOST, &host, 0) == CURLUE_OK && host[0]) {
        for (size_t i = 0; schemes[i]; i++) {
            if (strcasecmp(scheme, schemes[i]) == 0)
                rc = 0;
        }
        if (curl_url_get(u, CURLUPART_PORT, &port, 0) != CURLUE_OK)
            port = NULL;
        if (rc == 0)
            snprintf(out, cap, "%s://%s%s%s", scheme, host, port ? ":" : "", port ? port : "");
    }
    curl_free(scheme);
    curl_free(host);
    curl_free(port);
    curl_url_cleanup(u);
    return rc;
}

/* ---- webhook ----------------------------------------------------------------------------- */

typedef struct hook_ctx {
    ag_buf_t body;
    char origin[128];
    char idem[160];
    /* per try */
    char snippet[SNIPPET_BYTES + 1];
    size_t snippet_len;
    size_t received;
    bool cut; /* we stopped reading a long response */
} hook_ctx_t;

static size_t on_hook_body(char *p, size_t size, size_t n, void *vctx)
{
    hook_ctx_t *c = vctx;
    size_t len = size * n;
    size_t room = SNIPPET_BYTES - c->snippet_len;
    if (room > len)
        room = len;
    memcpy(c->snippet + c->snippet_len, p, room);
    c->snippet_len += room;
    c->received += len;
    if (c->received > RESPONSE_MAX_BYTES) {
        c->cut = true;
        return 0; /* the status is known: the rest of the body is of no use */
    }
    return len;
}

static int append_json_cstr_or_null(ag_buf_t *b, const char *s)
{
    return s ? ag_json_append_string(b, ag_str_c(s)) : ag_buf_append_cstr(b, "null");
}

/* The shortest decimal that reads back as v (JSON has no NaN or infinity). */
static int append_double(ag_buf_t *b, double v)
{
    if (!isfinite(v))
        v = 0;
    char tmp[40];
    snprintf(tmp, sizeof(tmp), "%.15g", v);
    if (strtod(tmp, NULL) != v)
        snprintf(tmp, sizeof(tmp), "%.17g", v);
    return ag_buf_append_cstr(b, tmp);
}

static int build_hook_body(const ag_delivery_t *d, ag_buf_t *b)
{
    int rc = ag_buf_append_cstr(b, "{\"task\":");
    if (rc == 0)
        rc = append_json_cstr_or_null(b, d->task);
    if (rc == 0)
        rc = ag_buf_append_cstr(b, ",\"cron\":");
    if (rc == 0)
        rc = append_json_cstr_or_null(b, d->cron);
    if (rc == 0)
        rc = ag_buf_printf(b, ",\"scheduledTime\":%lld,\"model\":", (long long)d->scheduled_ms);
    if (rc == 0)
        rc = append_json_cstr_or_null(b, d->model);
    if (rc == 0)
        rc = ag_buf_append_cstr(b, ",\"output\":");
    if (rc == 0)
        rc = ag_json_append_string(b, d->output.ptr ? d->output : AG_STR_LIT(""));
    if (rc == 0)
        rc = ag_buf_printf(b,
                           ",\"usage\":{\"input_tokens\":%lld,\"output_tokens\":%lld},\"costUsd\":",
                           (long long)d->input_tokens, (long long)d->output_tokens);
    if (rc == 0)
        rc = append_double(b, d->cost_usd);
    if (rc == 0)
        rc = ag_buf_append(b, "}", 1);
    return rc;
}

static int hook_try(job_t *j, void *vctx, try_t *t)
{
    hook_ctx_t *c = vctx;
    char err[CURL_ERROR_SIZE];
    c->snippet_len = 0;
    c->received = 0;
    c->cut = false;
    CURL *h = easy_new(j->env, err);
    struct curl_slist *hdrs = NULL, *tmp;
    bool oom = h == NULL;
    /* "Expect:" drops curl's 100-continue round trip for larger bodies. */
    const char *lines[] = {"Content-Type: application/json", "Expect:", c->idem};
    for (size_t i = 0; !oom && i < AG_ARRAY_LEN(lines); i++) {
        tmp = curl_slist_append(hdrs, lines[i]);
        oom = tmp == NULL;
        if (tmp)
            hdrs = tmp;
    }
    if (oom) {
        curl_slist_free_all(hdrs);
        curl_easy_cleanup(h);
        t->retry = true;
        return -ENOMEM;
    }
    set_protocols(h, "http,https");
    curl_easy_setopt(h, CURLOPT_URL, j->out->url);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(h, CURLOPT_POSTFIELDS, c->body.data);
    curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)c->body.len);
    curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_hook_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, c);
    CURLcode cc = curl_easy_perform(h);
    long status = 0;
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    curl_off_t after = -1;
#if LIBCURL_VERSION_NUM >= 0x074200
    curl_easy_getinfo(h, CURLINFO_RETRY_AFTER, &after);
#endif
    curl_easy_cleanup(h);
    curl_slist_free_all(hdrs);
    j->r->status = (int)status;
    if (cc != CURLE_OK && !(cc == CURLE_WRITE_ERROR && c->cut)) {
        int rc = curl_error(cc, &t->retry);
        set_detail(j->r, "POST %s: %s", c->origin, err[0] ? err : curl_easy_strerror(cc));
        return rc;
    }
    if (status >= 200 && status < 300) {
        set_detail(j->r, "POST %s: HTTP %ld", c->origin, status);
        return 0;
    }
    t->retry = status == 429 || status >= 500;
    if (t->retry && after > 0)
        t->retry_after_ms = after > 3600 ? 3600u * 1000 : (unsigned)after * 1000;
    char snip[SNIPPET_BYTES + 1];
    clean_line(snip, sizeof(snip), c->snippet, c->snippet_len);
    set_detail(j->r, "POST %s: HTTP %ld%s%s", c->origin, status, snip[0] ? ": " : "", snip);
    return AG_OUT_EHTTP;
}

static void deliver_webhook(job_t *j)
{
    static const char *const schemes[] = {"http", "https", NULL};
    hook_ctx_t c;
    memset(&c, 0, sizeof(c));
    if (url_origin(j->out->url, schemes, c.origin, sizeof(c.origin)) < 0) {
        j->r->rc = AG_EINVALID;
        set_detail(j->r, "webhook: not an http:// or https:// URL");
        return;
    }
    /* Receivers may drop a repeat: every try of this run carries the same key. */
    char task[96];
    clean_line(task, sizeof(task), j->d->task ? j->d->task : "",
               j->d->task ? strlen(j->d->task) : 0);
    snprintf(c.idem, sizeof(c.idem), "Idempotency-Key: %s:%lld", task,
             (long long)j->d->scheduled_ms);
    ag_buf_init(&c.body, 0);
    int rc = build_hook_body(j->d, &c.body);
    if (rc < 0) {
        j->r->rc = rc;
        set_detail(j->r, "webhook: cannot build the body: %s", ag_strerror(rc));
    } else {
        run_tries(j, hook_try, &c);
    }
    ag_buf_fini(&c.body);
}

/* ---- email ------------------------------------------------------------------------------- */

typedef struct mail_ctx {
    ag_buf_t msg;
    size_t sent; /* per try: bytes of msg handed to libcurl */
    struct curl_slist *rcpt;
    char mail_from[300];
    char origin[128];
    size_t nrcpt;
} mail_ctx_t;

static size_t on_mail_read(char *p, size_t size, size_t n, void *vctx)
{
    mail_ctx_t *c = vctx;
    size_t len = c->msg.len - c->sent;
    if (len > size * n)
        len = size * n;
    memcpy(p, c->msg.data + c->sent, len);
    c->sent += len;
    return len;
}

static int mail_try(job_t *j, void *vctx, try_t *t)
{
    mail_ctx_t *c = vctx;
    const ag_outputs_smtp_t *smtp = &j->env->smtp;
    char err[CURL_ERROR_SIZE];
    c->sent = 0;
    CURL *h = easy_new(j->env, err);
    if (h == NULL) {
        t->retry = true;
        return -ENOMEM;
    }
    set_protocols(h, "smtp,smtps");
    curl_easy_setopt(h, CURLOPT_URL, smtp->url);
    curl_easy_setopt(h, CURLOPT_MAIL_FROM, c->mail_from);
    curl_easy_setopt(h, CURLOPT_MAIL_RCPT, c->rcpt);
    curl_easy_setopt(h, CURLOPT_UPLOAD, 1L);
    curl_easy_setopt(h, CURLOPT_READFUNCTION, on_mail_read);
    curl_easy_setopt(h, CURLOPT_READDATA, c);
    curl_easy_setopt(h, CURLOPT_INFILESIZE_LARGE, (curl_off_t)c->msg.len);
    /* smtp://: STARTTLS when offered (or required); smtps:// is TLS from the start. */
    curl_easy_setopt(h, CURLOPT_USE_SSL,
                     smtp->require_tls ? (long)CURLUSESSL_ALL : (long)CURLUSESSL_TRY);
    if (smtp->user && *smtp->user) {
        curl_easy_setopt(h, CURLOPT_USERNAME, smtp->user);
        curl_easy_setopt(h, CURLOPT_PASSWORD, smtp->password ? smtp->password : "");
    }
    if (smtp->tls_no_verify) {
        curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 0L);
        curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 0L);
    }
    if (smtp->ca_file && *smtp->ca_file)
        curl_easy_setopt(h, CURLOPT_CAINFO, smtp->ca_file);
    CURLcode cc = curl_easy_perform(h);
    long code = 0;
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &code);
    curl_easy_cleanup(h);
    j->r->status = (int)code;
    if (cc == CURLE_OK) {
        set_detail(j->r, "%s: %ld, %zu recipient%s", c->origin, code, c->nrcpt,
                   c->nrcpt == 1 ? "" : "s");
        return 0;
    }
    int rc = curl_error(cc, &t->retry);
    if (code >= 400 && code < 600 && cc != CURLE_ABORTED_BY_CALLBACK) {
        /* SMTP's own verdict: 4xx is "try again later", 5xx is final. */
        t->retry = code < 500;
        rc = (cc == CURLE_LOGIN_DENIED || code == 535) ? AG_OUT_EAUTH : AG_OUT_ESMTP;
    }
    const char *why = err[0] ? err : curl_easy_strerror(cc);
    if (code)
        set_detail(j->r, "%s: reply %ld: %s", c->origin, code, why);
    else
        set_detail(j->r, "%s: %s", c->origin, why);
    return rc;
}

/* "<aigate.TASK.SCHEDULED.RANDOM@DOMAIN>": unique, and the same on every try,
 * so a server that got a try whose answer was lost can drop the repeat. */
static void make_message_id(const ag_delivery_t *d, ag_str_t from_spec, char *out, size_t cap)
{
    unsigned char rnd[8] = {0};
    if (getrandom(rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd)) {
        int64_t t = ag_now_us();
        memcpy(rnd, &t, sizeof(rnd));
    }
    char hex[17];
    ag_hex_encode(rnd, sizeof(rnd), hex);
    char task[48];
    size_t n = 0;
    for (const char *p = d->task; p && *p && n + 1 < sizeof(task); p++) {
        char ch = *p;
        bool ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
                  (ch >= '0' && ch <= '9') || ch == '-' || ch == '_';
        task[n++] = ok ? ch : '_';
    }
    task[n] = '\0';
    const char *at = memchr(from_spec.ptr, '@', from_spec.len);
    ag_str_t domain = at ? ag_str(at + 1, from_spec.len - (size_t)(at + 1 - from_spec.ptr))
                         : AG_STR_LIT("aigate.localhost");
    snprintf(out, cap, "<aigate.%s.%lld.%s@%.*s>", n ? task : "task", (long long)d->scheduled_ms,
             hex, (int)domain.len, domain.ptr);
}

static void deliver_email(job_t *j)
{
    static const char *const schemes[] = {"smtp", "smtps", NULL};
    const ag_outputs_smtp_t *smtp = &j->env->smtp;
    ag_output_result_t *r = j->r;
    mail_ctx_t c;
    memset(&c, 0, sizeof(c));
    ag_buf_init(&c.msg, 0);
    if (!smtp->url || !*smtp->url || !smtp->from || !*smtp->from) {
        r->rc = AG_OUT_ENOSMTP;
        set_detail(r, "email: %s", ag_strerror(AG_OUT_ENOSMTP));
        return;
    }
    if (url_origin(smtp->url, schemes, c.origin, sizeof(c.origin)) < 0) {
        r->rc = AG_EINVALID;
        set_detail(r, "email: the SMTP url is not smtp:// or smtps://");
        return;
    }
    ag_mail_addr_t from, to[AG_MAIL_MAX_RCPT];
    if (ag_mail_parse_list(ag_str_c(smtp->from), &from, 1) != 1) {
        r->rc = AG_EINVALID;
        set_detail(r, "email: the sender (from) is not one valid address");
        return;
    }
    int nto = ag_mail_parse_list(ag_str_c(j->out->to), to, AG_MAIL_MAX_RCPT);
    if (nto < 0) {
        r->rc = AG_EINVALID;
        set_detail(r, "email: \"to\" is not a list of at most %d valid addresses",
                   AG_MAIL_MAX_RCPT);
        return;
    }
    snprintf(c.mail_from, sizeof(c.mail_from), "<%.*s>", (int)from.spec.len, from.spec.ptr);
    int rc = 0;
    for (int i = 0; rc == 0 && i < nto; i++) {
        char one[300];
        snprintf(one, sizeof(one), "<%.*s>", (int)to[i].spec.len, to[i].spec.ptr);
        struct curl_slist *tmp = curl_slist_append(c.rcpt, one);
        if (tmp == NULL)
            rc = -ENOMEM;
        else
            c.rcpt = tmp;
    }
    c.nrcpt = (size_t)nto;
    char msgid[200];
    make_message_id(j->d, from.spec, msgid, sizeof(msgid));
    ag_mail_msg_t m = {
        .from = &from,
        .to = to,
        .nto = (size_t)nto,
        .subject = ag_str_c(j->out->subject),
        .body = j->d->output,
        .date_ms = ag_now_us() / 1000,
        .message_id = ag_str_c(msgid),
        .task = ag_str_c(j->d->task),
    };
    if (rc == 0)
        rc = ag_mail_build(&m, &c.msg);
    if (rc < 0) {
        r->rc = rc;
        set_detail(r, "email: cannot build the message: %s", ag_strerror(rc));
    } else {
        run_tries(j, mail_try, &c);
    }
    curl_slist_free_all(c.rcpt);
    ag_buf_fini(&c.msg);
}

/* ---- command ----------------------------------------------------------------------------- */

typedef struct cmd_ctx {
    char *envp[MAX_ENV + 1];
    size_t nenv;
    const char *name; /* argv[0]'s last segment, for details */
} cmd_ctx_t;

static void env_add(cmd_ctx_t *c, const char *name, const char *value)
{
    if (value == NULL || c->nenv == MAX_ENV)
        return;
    ag_buf_t b;
    ag_buf_init(&b, 0);
    if (ag_buf_printf(&b, "%s=%s", name, value) == 0 && ag_buf_cstr(&b))
        c->envp[c->nenv++] = b.data;
    else
        ag_buf_fini(&b);
}

static void build_env(cmd_ctx_t *c, const ag_delivery_t *d)
{
    static const char *const keep[] = {"PATH",   "HOME",     "USER", "LOGNAME", "LANG",
                                       "LC_ALL", "LC_CTYPE", "TZ",   "TMPDIR"};
    for (size_t i = 0; i < AG_ARRAY_LEN(keep); i++)
        env_add(c, keep[i], getenv(keep[i]));
    if (getenv("PATH") == NULL)
        env_add(c, "PATH", "/usr/local/bin:/usr/bin:/bin");
    char num[48];
    env_add(c, "AIGATE_TASK", d->task ? d->task : "");
    env_add(c, "AIGATE_CRON", d->cron ? d->cron : "");
    fmt_ms(num, d->scheduled_ms);
    env_add(c, "AIGATE_SCHEDULED_TIME", num);
    env_add(c, "AIGATE_MODEL", d->model ? d->model : "");
    snprintf(num, sizeof(num), "%lld", (long long)d->input_tokens);
    env_add(c, "AIGATE_INPUT_TOKENS", num);
    snprintf(num, sizeof(num), "%lld", (long long)d->output_tokens);
    env_add(c, "AIGATE_OUTPUT_TOKENS", num);
    snprintf(num, sizeof(num), "%.6f", isfinite(d->cost_usd) ? d->cost_usd : 0.0);
    env_add(c, "AIGATE_COST_USD", num);
    c->envp[c->nenv] = NULL;
}

static int cmd_try(job_t *j, void *vctx, try_t *t)
{
    cmd_ctx_t *c = vctx;
    const ag_outputs_env_t *env = j->env;
    ag_exec_opts_t eo = {
        .argv = j->out->argv,
        .envp = c->envp,
        .input = j->d->output,
        .timeout_ms = env->command_timeout_ms,
        .grace_ms = env->command_grace_ms,
        .capture_max = AG_OUTPUTS_CAPTURE_BYTES,
        .stop = env->stop,
    };
    ag_exec_result_t er;
    int rc = ag_exec_run(&eo, &er);
    ag_output_result_t *r = j->r;
    if (rc < 0) {
        /* A program that is missing or not executable stays so. */
        t->retry =
            !(rc == -ENOENT || rc == -EACCES || rc == -ENOEXEC || rc == -ENOTDIR || rc == -EINVAL ||
              rc == -E2BIG || rc == -ENAMETOOLONG || rc == -ELOOP || rc == -EPERM);
        set_detail(r, "%s: cannot start: %s", c->name, ag_strerror(rc));
        ag_buf_fini(&er.output);
        return rc;
    }
    char out[AG_OUTPUT_DETAIL_MAX];
    clean_line(out, sizeof(out), er.output.data ? er.output.data : "", er.output.len);
    const char *sep = out[0] ? ": " : "";
    if (er.stopped) {
        rc = AG_OUT_ECANCELED;
        r->status = er.term_signal ? 128 + er.term_signal : er.exit_status;
        set_detail(r, "%s: stopped (shutdown)", c->name);
    } else if (er.timed_out) {
        rc = AG_OUT_EKILLED;
        t->retry = true;
        r->status = er.term_signal ? 128 + er.term_signal : er.exit_status;
        set_detail(r, "%s: killed after %u ms (timeout)%s%s", c->name, env->command_timeout_ms, sep,
                   out);
    } else if (er.term_signal) {
        rc = AG_OUT_EKILLED;
        t->retry = true;
        r->status = 128 + er.term_signal;
        set_detail(r, "%s: killed by signal %d%s%s", c->name, er.term_signal, sep, out);
    } else if (er.exit_status != 0) {
        rc = AG_OUT_EEXIT;
        t->retry = true;
        r->status = er.exit_status;
        set_detail(r, "%s: exit %d%s%s", c->name, er.exit_status, sep, out);
    } else {
        r->status = 0;
        set_detail(r, "%s: exit 0%s%s", c->name, sep, out);
    }
    ag_buf_fini(&er.output);
    return rc;
}

static void deliver_command(job_t *j)
{
    char *const *argv = j->out->argv;
    if (argv == NULL || argv[0] == NULL || argv[0][0] == '\0') {
        j->r->rc = AG_EINVALID;
        set_detail(j->r, "command: the argv is empty");
        return;
    }
    cmd_ctx_t c;
    memset(&c, 0, sizeof(c));
    const char *slash = strrchr(argv[0], '/');
    c.name = slash && slash[1] ? slash + 1 : argv[0];
    build_env(&c, j->d);
    run_tries(j, cmd_try, &c);
    for (size_t i = 0; i < c.nenv; i++)
        free(c.envp[i]);
}

/* ---- the whole delivery ------------------------------------------------------------------ */

static void deliver_one(job_t *j)
{
    int64_t t0 = ag_mono_us();
    ag_output_result_t *r = j->r;
    if (stopped(j->env)) {
        r->rc = AG_OUT_ECANCELED;
        set_detail(r, "%s", ag_strerror(AG_OUT_ECANCELED));
    } else if (j->env->max_output_bytes && j->d->output.len > j->env->max_output_bytes) {
        r->rc = AG_ETOOBIG;
        set_detail(r, "%s: the output (%zu bytes) is over the limit of %zu bytes",
                   ag_output_kind_name(j->out->kind), j->d->output.len, j->env->max_output_bytes);
    } else {
        switch (j->out->kind) {
        case AG_OUT_R2:
            deliver_r2(j);
            break;
        case AG_OUT_KV:
            deliver_kv(j);
            break;
        case AG_OUT_WEBHOOK:
            deliver_webhook(j);
            break;
        case AG_OUT_EMAIL:
            deliver_email(j);
            break;
        case AG_OUT_COMMAND:
            deliver_command(j);
            break;
        default:
            r->rc = AG_EINVALID;
            set_detail(r, "unknown output kind %d", (int)j->out->kind);
            break;
        }
    }
    if (r->rc != 0 && r->attempts == 0)
        ag_log_warn("task %s: %s output not delivered: %s", j->d->task ? j->d->task : "?",
                    ag_output_kind_name(j->out->kind), r->detail);
    redact(j->env, r);
    r->elapsed_ms = (ag_mono_us() - t0) / 1000;
}

static void *job_main(void *arg)
{
    deliver_one(arg);
    return NULL;
}

void ag_outputs_deliver(const ag_outputs_env_t *env_in, const ag_output_t *outs, size_t n,
                        const ag_delivery_t *d, ag_output_result_t *results)
{
    if (n == 0)
        return;
    ag_outputs_env_t env = env_in ? *env_in : (ag_outputs_env_t){0};
    if (!env.timeout_ms)
        env.timeout_ms = AG_OUTPUTS_TIMEOUT_MS;
    if (!env.attempts)
        env.attempts = AG_OUTPUTS_ATTEMPTS;
    if (env.attempts > AG_OUTPUTS_MAX_ATTEMPTS)
        env.attempts = AG_OUTPUTS_MAX_ATTEMPTS;
    if (!env.backoff_ms)
        env.backoff_ms = AG_OUTPUTS_BACKOFF_MS;
    if (!env.backoff_max_ms)
        env.backoff_max_ms = AG_OUTPUTS_BACKOFF_MAX_MS;
    if (env.backoff_max_ms < env.backoff_ms)
        env.backoff_max_ms = env.backoff_ms;
    if (!env.command_timeout_ms)
        env.command_timeout_ms = AG_OUTPUTS_COMMAND_TIMEOUT_MS;
    if (!env.command_grace_ms)
        env.command_grace_ms = AG_OUTPUTS_KILL_GRACE_MS;

    job_t *jobs = calloc(n, sizeof(*jobs));
    job_t one;
    for (size_t i = 0; i < n; i++) {
        memset(&results[i], 0, sizeof(results[i]));
        job_t *j = jobs ? &jobs[i] : &one;
        *j = (job_t){.env = &env, .out = &outs[i], .d = d, .r = &results[i]};
        if (jobs == NULL) /* no memory for threads: one after the other */
            deliver_one(j);
    }
    if (jobs == NULL)
        return;
    /* The first output runs here; the others on threads of their own. */
    for (size_t i = 1; i < n; i++)
        jobs[i].threaded = pthread_create(&jobs[i].thread, NULL, job_main, &jobs[i]) == 0;
    deliver_one(&jobs[0]);
    for (size_t i = 1; i < n; i++) {
        if (jobs[i].threaded)
            pthread_join(jobs[i].thread, NULL);
        else
            deliver_one(&jobs[i]);
    }
    free(jobs);
}
