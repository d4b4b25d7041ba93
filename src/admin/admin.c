/* SPDX-License-Identifier: MIT
 *
 * admin.c: the admin listener's server, its routes, bearer-token checks and
 * the live tail's server-sent event streams.
 */
#include "util/platform.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <pthread.h>
#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "admin/admin.h"
#include "obs/dashboard.h"
#include "obs/stats.h"
#include "util/errors.h"
#include "util/log.h"

#define TAIL_QUEUE 1024              /* events a subscriber may fall behind by */
#define TAIL_HIGH_WATER (256 * 1024) /* bytes queued on its socket before it waits */
#define TAIL_KEEPALIVE_MS 15000

typedef struct tail_session tail_session_t;

struct ag_admin {
    ag_admin_options_t opts;
    char host[256];
    char *token;
    size_t token_len;
    ag_server_t *srv;
    pthread_mutex_t clients_lock; /* held while the clients' server is read or dropped */
    const ag_server_t *clients;
    _Atomic int state;
    pthread_rwlock_t tasks_lock; /* opts.tasks and opts.cfg: read while used, written on reload */
    tail_session_t *tails;       /* open tails, touched only by the admin thread */
};

struct tail_session {
    tail_session_t *prev, *next;
    ag_admin_t *admin;
    ag_req_t *req; /* NULL once the request is gone */
    ag_tail_sub_t *sub;
    uv_async_t wake;
    uv_timer_t keepalive;
    uv_timer_t tick; /* drains what arrived below a wake-up batch */
    ag_buf_t out;
    int closes;
    bool closing;
};

/* ---- addresses ------------------------------------------------------------------- */

int ag_admin_parse_listen(const char *listen, char *host, size_t hostlen, int *port)
{
    const char *colon = strrchr(listen, ':');
    if (!colon || colon == listen)
        return -EINVAL;
    const char *h = listen;
    size_t hl = (size_t)(colon - listen);
    if (h[0] == '[') {
        if (hl < 3 || h[hl - 1] != ']')
            return -EINVAL;
        h++;
        hl -= 2;
    } else if (memchr(h, ':', hl)) {
        return -EINVAL; /* an IPv6 address needs its brackets */
    }
    if (hl == 0 || hl >= hostlen)
        return -EINVAL;
    char *end;
    long p = strtol(colon + 1, &end, 10);
    if (colon[1] == '\0' || *end != '\0' || p < 0 || p > 65535)
        return -EINVAL;
    memcpy(host, h, hl);
    host[hl] = '\0';
    *port = (int)p;
    return 0;
}

bool ag_admin_is_loopback(const char *host)
{
    if (strcmp(host, "localhost") == 0 || strcmp(host, "::1") == 0)
        return true;
    struct in_addr a;
    return inet_pton(AF_INET, host, &a) == 1 && (ntohl(a.s_addr) >> 24) == 127;
}

/* ---- the live tail ----------------------------------------------------------------- */

static void on_session_handle_closed(uv_handle_t *h)
{
    tail_session_t *s = h->data;
    if (--s->closes == 0) {
        ag_buf_fini(&s->out);
        free(s);
    }
}

/* Ends the subscription and frees the session once its handles closed. */
static void session_close(tail_session_t *s)
{
    if (s->closing)
        return;
    s->closing = true;
    ag_tail_unsubscribe(ag_obs_tail(s->admin->opts.obs), s->sub);
    s->sub = NULL;
    if (s->req) {
        /* The request may outlive the session (its socket failed first): it
         * must not find the session again. */
        s->req->handler_data = NULL;
        s->req->on_abort = NULL;
    }
    s->req = NULL;
    if (s->prev)
        s->prev->next = s->next;
    else
        s->admin->tails = s->next;
    if (s->next)
        s->next->prev = s->prev;
    s->closes = 3;
    uv_close((uv_handle_t *)&s->wake, on_session_handle_closed);
    uv_close((uv_handle_t *)&s->keepalive, on_session_handle_closed);
    uv_close((uv_handle_t *)&s->tick, on_session_handle_closed);
}

static void tail_notify(void *ctx)
{
    tail_session_t *s = ctx;
    uv_async_send(&s->wake);
}

/* Writes what the subscription queued, unless the socket is still full: then
 * the events wait in the bounded queue (and are dropped past it). */
static void session_pump(tail_session_t *s)
{
    if (!s->req)
        return;
    size_t queued = 0;
    ag_req_stream_write(s->req, NULL, 0, &queued);
    if (queued >= TAIL_HIGH_WATER)
        return;
    s->out.len = 0;
    if (ag_tail_drain(s->sub, &s->out) == 0)
        return;
    if (ag_req_stream_write(s->req, s->out.data, s->out.len, &queued) < 0)
        session_close(s);
}

static void on_wake(uv_async_t *a)
{
    session_pump(a->data);
}

static void on_tick(uv_timer_t *t)
{
    session_pump(t->data);
}

static void on_keepalive(uv_timer_t *t)
{
    tail_session_t *s = t->data;
    if (s->req && ag_req_stream_write(s->req, ": keepalive\n\n", 13, NULL) < 0)
        session_close(s);
}

static void tail_drained(ag_req_t *req, void *data)
{
    AG_UNUSED(req);
    session_pump(data);
}

static void tail_abort(ag_req_t *req)
{
    if (req->handler_data)
        session_close(req->handler_data);
}

static void tail_cleared(void *p)
{
    ag_req_t *req = p;
    if (req->handler_data)
        session_close(req->handler_data);
}

static void handle_tail(ag_admin_t *a, ag_req_t *req)
{
    ag_tail_filter_t f;
    const char *bad = NULL;
    if (ag_tail_filter_parse(req->head.query, req->peer_ip, &f, &bad) < 0) {
        char msg[96];
        snprintf(msg, sizeof(msg), "bad tail filter: %s", bad ? bad : "query");
        ag_req_respond_error(req, 400, msg);
        return;
    }
    tail_session_t *s = calloc(1, sizeof(*s));
    if (!s) {
        ag_req_respond_error(req, 503, "Out of memory");
        return;
    }
    s->admin = a;
    s->req = req;
    ag_buf_init(&s->out, 0);
    uv_loop_t *loop = ag_worker_loop(req->worker);
    uv_async_init(loop, &s->wake, on_wake);
    uv_timer_init(loop, &s->keepalive);
    uv_timer_init(loop, &s->tick);
    s->wake.data = s;
    s->keepalive.data = s;
    s->tick.data = s;
    s->next = a->tails;
    if (a->tails)
        a->tails->prev = s;
    a->tails = s;
    if (ag_tail_subscribe(ag_obs_tail(a->opts.obs), &f, TAIL_QUEUE, tail_notify, s, &s->sub) < 0) {
        session_close(s);
        ag_req_respond_error(req, 503, "Out of memory");
        return;
    }
    req->handler_data = s;
    req->on_abort = tail_abort;
    ag_pool_on_clear(&req->pool, tail_cleared, req);
    ag_req_add_header(req, "Cache-Control", AG_STR_LIT("no-cache"));
    ag_req_stream_start(req, 200, "text/event-stream; charset=utf-8");
    ag_req_on_drain(req, tail_drained, s);
    ag_req_stream_write(req, ": tail started\n\n", 16, NULL);
    uv_timer_start(&s->keepalive, on_keepalive, TAIL_KEEPALIVE_MS, TAIL_KEEPALIVE_MS);
    uv_timer_start(&s->tick, on_tick, AG_TAIL_TICK_MS, AG_TAIL_TICK_MS);
}

/* ---- routes ------------------------------------------------------------------------ */

/* Base64 (RFC 4648) into out; @return the length, or -1 when malformed or too long. */
static int base64_decode(ag_str_t in, char *out, size_t cap)
{
    static const char alphabet[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    uint32_t acc = 0;
    int bits = 0;
    size_t n = 0;
    for (size_t i = 0; i < in.len; i++) {
        char c = in.ptr[i];
        if (c == '=')
            break;
        const char *p = c ? strchr(alphabet, c) : NULL;
        if (!p)
            return -1;
        acc = acc << 6 | (uint32_t)(p - alphabet);
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            if (n + 1 >= cap)
                return -1;
            out[n++] = (char)(acc >> bits & 0xff);
        }
    }
    out[n] = '\0';
    return (int)n;
}

/* The token as the request gives it: `Bearer TOKEN`, or `Basic` with the token
 * as the password (what a browser sends after its login prompt). */
static ag_str_t given_token(ag_req_t *req, char *basic, size_t cap)
{
    ag_str_t h = ag_req_header(req, "Authorization");
    if (h.len >= 7 && strncasecmp(h.ptr, "Bearer ", 7) == 0)
        return ag_str(h.ptr + 7, h.len - 7);
    if (h.len >= 6 && strncasecmp(h.ptr, "Basic ", 6) == 0) {
        int n = base64_decode(ag_str(h.ptr + 6, h.len - 6), basic, cap);
        const char *colon = n > 0 ? memchr(basic, ':', (size_t)n) : NULL;
        if (colon)
            return ag_str(colon + 1, (size_t)(basic + n - colon - 1));
    }
    return AG_STR_NULL;
}

static bool token_ok(const ag_admin_t *a, ag_req_t *req)
{
    if (!a->token)
        return true;
    char basic[512];
    ag_str_t given = given_token(req, basic, sizeof(basic));
    if (!given.ptr) {
        explicit_bzero(basic, sizeof(basic));
        return false;
    }
    /* In constant time over the token, so timing says nothing about its bytes. */
    unsigned char diff = given.len != a->token_len;
    for (size_t i = 0; i < a->token_len; i++)
        diff |= (unsigned char)(a->token[i] ^ (i < given.len ? given.ptr[i] : 0));
    explicit_bzero(basic, sizeof(basic));
    return diff == 0;
}

static void handle_metrics(ag_admin_t *a, ag_req_t *req)
{
    ag_metrics_process_t p = {
        .start_time_s = ag_obs_start_time(a->opts.obs),
        .tail_dropped = ag_tail_dropped(ag_obs_tail(a->opts.obs)),
    };
    pthread_mutex_lock(&a->clients_lock);
    if (a->clients)
        p.connections_active = ag_server_connections(a->clients);
    pthread_mutex_unlock(&a->clients_lock);
    if (a->opts.usage_log) {
        ag_usage_log_stats_t st;
        ag_usage_log_stats(a->opts.usage_log, &st);
        p.usage_log_entries = st.accepted;
        p.usage_log_dropped = st.dropped;
        p.usage_log_spool_bytes = st.spool_bytes;
        p.usage_log_spool_full = st.spool_full;
    }
    ag_buf_t b;
    ag_buf_init(&b, 0);
    if (ag_metrics_render(ag_obs_metrics(a->opts.obs), &p, &b) < 0) {
        ag_buf_fini(&b);
        ag_req_respond_error(req, 500, "Internal error");
        return;
    }
    ag_req_respond(req, 200, AG_METRICS_CONTENT_TYPE, ag_str(b.data, b.len));
    ag_buf_fini(&b);
}

/* The value of query parameter `name`, or AG_STR_NULL. */
static ag_str_t query_param(ag_str_t q, const char *name)
{
    size_t nl = strlen(name);
    const char *p = q.ptr, *end = q.ptr + q.len;
    while (p && p < end) {
        const char *amp = memchr(p, '&', (size_t)(end - p));
        const char *pe = amp ? amp : end;
        if ((size_t)(pe - p) > nl && memcmp(p, name, nl) == 0 && p[nl] == '=')
            return ag_str(p + nl + 1, (size_t)(pe - p - nl - 1));
        p = amp ? amp + 1 : NULL;
    }
    return AG_STR_NULL;
}

static void handle_series(ag_admin_t *a, ag_req_t *req)
{
    ag_str_t m = query_param(req->head.query, "minutes");
    unsigned minutes = AG_SERIES_MINUTES;
    if (m.len) {
        char buf[8];
        unsigned long v = 0;
        bool ok = m.len < sizeof(buf);
        if (ok) {
            memcpy(buf, m.ptr, m.len);
            buf[m.len] = '\0';
            char *e;
            v = strtoul(buf, &e, 10);
            ok = *e == '\0' && v >= 1 && v <= AG_SERIES_MINUTES;
        }
        if (!ok) {
            ag_req_respond_error(req, 400, "minutes must be 1 to 60");
            return;
        }
        minutes = (unsigned)v;
    }
    ag_buf_t b;
    ag_buf_init(&b, 0);
    int rc = ag_series_json(ag_obs_series(a->opts.obs), minutes, ag_now_us() / 1000000, &b);
    if (rc < 0)
        ag_req_respond_error(req, 500, "Internal error");
    else
        ag_req_respond(req, 200, "application/json", ag_str(b.data, b.len));
    ag_buf_fini(&b);
}

/* ---- analytics: read off the loop (a day of logs takes seconds) ---------------------- */

typedef struct stats_job {
    uv_work_t work;
    ag_req_t *req; /* NULL once the client went away */
    ag_objstore_t *bucket;
    int64_t since_ms, until_ms;
    ag_stats_by_t by;
    ag_buf_t json;
    int rc;
} stats_job_t;

static void stats_work(uv_work_t *w)
{
    stats_job_t *j = w->data;
    j->rc = ag_stats_run(j->bucket, j->since_ms, j->until_ms, j->by, &j->json);
}

static void stats_done(uv_work_t *w, int status)
{
    stats_job_t *j = w->data;
    if (j->req) {
        ag_req_t *req = j->req;
        req->handler_data = NULL;
        req->on_abort = NULL;
        if (status < 0 || j->rc < 0)
            ag_req_respond_error(req, 500, "Cannot read the usage log");
        else
            ag_req_respond(req, 200, "application/json", ag_str(j->json.data, j->json.len));
    }
    ag_buf_fini(&j->json);
    free(j);
}

static void stats_abort(ag_req_t *req)
{
    stats_job_t *j = req->handler_data;
    if (j)
        j->req = NULL; /* the work finishes; its answer is dropped */
}

static void handle_stats(ag_admin_t *a, ag_req_t *req)
{
    char since[32] = "24h", by[32] = "";
    ag_str_t s = query_param(req->head.query, "since"), b = query_param(req->head.query, "by");
    if (s.len >= sizeof(since) || b.len >= sizeof(by)) {
        ag_req_respond_error(req, 400, "since or by is too long");
        return;
    }
    if (s.ptr) {
        memcpy(since, s.ptr, s.len);
        since[s.len] = '\0';
    }
    if (b.ptr) {
        memcpy(by, b.ptr, b.len);
        by[b.len] = '\0';
    }
    int64_t secs;
    ag_stats_by_t group;
    if (ag_stats_parse_window(since, &secs) < 0) {
        ag_req_respond_error(req, 400, "since takes a count and a unit: 30s, 15m, 1h, 7d");
        return;
    }
    if (ag_stats_parse_by(by, &group) < 0) {
        ag_req_respond_error(req, 400, "by is one of model, route, status, client, key, hour");
        return;
    }
    stats_job_t *j = calloc(1, sizeof(*j));
    if (!j) {
        ag_req_respond_error(req, 503, "Out of memory");
        return;
    }
    int64_t now = ag_now_us() / 1000;
    j->req = req;
    j->bucket = a->opts.log_bucket;
    j->since_ms = now - secs * 1000;
    j->until_ms = now + 1;
    j->by = group;
    ag_buf_init(&j->json, 0);
    j->work.data = j;
    req->handler_data = j;
    req->on_abort = stats_abort;
    if (uv_queue_work(ag_worker_loop(req->worker), &j->work, stats_work, stats_done) < 0) {
        req->handler_data = NULL;
        req->on_abort = NULL;
        ag_buf_fini(&j->json);
        free(j);
        ag_req_respond_error(req, 503, "Cannot start the query");
    }
}

/* ---- scheduled tasks ------------------------------------------------------------------- */

/* POST /tasks/NAME/run waits for the run's record on a thread-pool thread, so
 * the admin loop goes on serving meanwhile. */
typedef struct task_wait {
    uv_work_t work;
    ag_admin_t *a;
    ag_req_t *req; /* NULL once the client left */
    char name[128];
    pthread_mutex_t lock;
    pthread_cond_t cond;
    bool done;
    int rc;
    char *record;
} task_wait_t;

static void task_done(void *ctx, ag_str_t record)
{
    task_wait_t *tw = ctx;
    pthread_mutex_lock(&tw->lock);
    tw->record = strndup(record.ptr, record.len);
    tw->done = true;
    pthread_cond_signal(&tw->cond);
    pthread_mutex_unlock(&tw->lock);
}

static void task_wait_work(uv_work_t *w)
{
    task_wait_t *tw = w->data;
    pthread_rwlock_rdlock(&tw->a->tasks_lock);
    tw->rc =
        tw->a->opts.tasks ? ag_tasks_run(tw->a->opts.tasks, tw->name, task_done, tw) : AG_ENOTFOUND;
    pthread_rwlock_unlock(&tw->a->tasks_lock);
    if (tw->rc < 0)
        return;
    pthread_mutex_lock(&tw->lock);
    while (!tw->done)
        pthread_cond_wait(&tw->cond, &tw->lock);
    pthread_mutex_unlock(&tw->lock);
}

static void task_wait_done(uv_work_t *w, int status)
{
    task_wait_t *tw = w->data;
    AG_UNUSED(status);
    if (tw->req) {
        ag_req_t *req = tw->req;
        req->handler_data = NULL;
        req->on_abort = NULL;
        if (tw->rc == AG_ENOTFOUND)
            ag_req_respond_error(req, 404, "No such task");
        else if (tw->rc < 0 || !tw->record)
            ag_req_respond_error(req, 500, "The run could not start");
        else
            ag_req_respond(req, 200, "application/json", ag_str_c(tw->record));
    }
    free(tw->record);
    pthread_mutex_destroy(&tw->lock);
    pthread_cond_destroy(&tw->cond);
    free(tw);
}

static void task_wait_abort(ag_req_t *req)
{
    task_wait_t *tw = req->handler_data;
    if (tw)
        tw->req = NULL; /* the run goes on; its record is dropped */
}

static void handle_task_run(ag_admin_t *a, ag_req_t *req, ag_str_t name)
{
    pthread_rwlock_rdlock(&a->tasks_lock);
    bool none = !a->opts.tasks;
    pthread_rwlock_unlock(&a->tasks_lock);
    if (none) {
        ag_req_respond_error(req, 404, "No scheduled tasks are configured ([[aigate.tasks]])");
        return;
    }
    task_wait_t *tw = calloc(1, sizeof(*tw));
    if (!tw || name.len == 0 || name.len >= sizeof(tw->name)) {
        free(tw);
        ag_req_respond_error(req, tw ? 404 : 503, tw ? "No such task" : "Out of memory");
        return;
    }
    memcpy(tw->name, name.ptr, name.len);
    tw->a = a;
    tw->req = req;
    pthread_mutex_init(&tw->lock, NULL);
    pthread_cond_init(&tw->cond, NULL);
    tw->work.data = tw;
    req->handler_data = tw;
    req->on_abort = task_wait_abort;
    if (uv_queue_work(ag_worker_loop(req->worker), &tw->work, task_wait_work, task_wait_done) < 0) {
        req->handler_data = NULL;
        req->on_abort = NULL;
        pthread_mutex_destroy(&tw->lock);
        pthread_cond_destroy(&tw->cond);
        free(tw);
        ag_req_respond_error(req, 503, "Cannot start the run");
    }
}

/* wrangler dev's /__scheduled?cron=EXPR: '+' is a space, %XX decoded. */
static void handle_scheduled(ag_admin_t *a, ag_req_t *req)
{
    ag_str_t q = query_param(req->head.query, "cron");
    char cron[256];
    size_t n = 0;
    for (size_t i = 0; i < q.len && n + 1 < sizeof(cron); i++) {
        char c = q.ptr[i];
        if (c == '+') {
            c = ' ';
        } else if (c == '%' && i + 2 < q.len) {
            char hex[3] = {q.ptr[i + 1], q.ptr[i + 2], 0};
            c = (char)strtol(hex, NULL, 16);
            i += 2;
        }
        cron[n++] = c;
    }
    cron[n] = '\0';
    if (n == 0) {
        ag_req_respond_error(req, 400, "cron= is required, e.g. /__scheduled?cron=0+9+*+*+MON");
        return;
    }
    pthread_rwlock_rdlock(&a->tasks_lock);
    ag_tasks_run_cron(a->opts.tasks, cron);
    pthread_rwlock_unlock(&a->tasks_lock);
    ag_req_respond(req, 200, "text/plain; charset=utf-8", AG_STR_LIT("Ran scheduled event"));
}

static void handle_task_list(ag_admin_t *a, ag_req_t *req)
{
    ag_buf_t b;
    ag_buf_init(&b, 0);
    pthread_rwlock_rdlock(&a->tasks_lock);
    int rc = a->opts.cfg ? ag_tasks_list_json(a->opts.tasks, a->opts.cfg, ag_now_us() / 1000000, &b)
                         : -1;
    pthread_rwlock_unlock(&a->tasks_lock);
    if (rc < 0)
        ag_req_respond_error(req, 500, "Internal error");
    else
        ag_req_respond(req, 200, "application/json", ag_str(b.data, b.len));
    ag_buf_fini(&b);
}

/* ---- reload: validated and applied by the serve loop's owner, off this loop ---------- */

typedef struct reload_job {
    uv_work_t work;
    ag_admin_t *a;
    ag_req_t *req; /* NULL once the client left */
    char *path;    /* NULL: the server's own file */
    char *binary;  /* POST /upgrade: NULL for the running one's path; else NULL */
    bool upgrade;
    ag_buf_t body;
    int status;
} reload_job_t;

static void reload_work(uv_work_t *w)
{
    reload_job_t *j = w->data;
    if (j->upgrade)
        j->status = j->a->opts.upgrade(j->a->opts.reload_ctx, j->binary, j->path, &j->body);
    else
        j->status = j->a->opts.reload(j->a->opts.reload_ctx, j->path, &j->body);
}

static void reload_done(uv_work_t *w, int status)
{
    reload_job_t *j = w->data;
    if (j->req) {
        ag_req_t *req = j->req;
        req->handler_data = NULL;
        req->on_abort = NULL;
        if (status < 0)
            ag_req_respond_error(req, 500, "The reload could not run");
        else
            ag_req_respond(req, j->status, "application/json", ag_str(j->body.data, j->body.len));
    }
    ag_buf_fini(&j->body);
    free(j->path);
    free(j->binary);
    free(j);
}

static void reload_abort(ag_req_t *req)
{
    reload_job_t *j = req->handler_data;
    if (j)
        j->req = NULL; /* the reload goes on: it is the server's, not this request's */
}

/* %XX and '+' decoded. @return the length, or -1 when it does not fit. */
static int query_decode(ag_str_t v, char *out, size_t cap)
{
    size_t n = 0;
    for (size_t i = 0; i < v.len; i++) {
        char c = v.ptr[i];
        if (c == '+') {
            c = ' ';
        } else if (c == '%' && i + 2 < v.len && isxdigit((unsigned char)v.ptr[i + 1]) &&
                   isxdigit((unsigned char)v.ptr[i + 2])) {
            char hex[3] = {v.ptr[i + 1], v.ptr[i + 2], 0};
            c = (char)strtol(hex, NULL, 16);
            i += 2;
        }
        if (c == '\0' || n + 1 >= cap)
            return -1;
        out[n++] = c;
    }
    out[n] = '\0';
    return (int)n;
}

/* POST /reload?config=PATH, and POST /upgrade?config=PATH&binary=PATH. */
static void handle_reload(ag_admin_t *a, ag_req_t *req, bool upgrade)
{
    if (upgrade ? !a->opts.upgrade : !a->opts.reload) {
        ag_req_respond_error(req, 404, "Not found");
        return;
    }
    if (!ag_str_eq(req->head.method, AG_STR_LIT("POST"))) {
        ag_req_add_header(req, "Allow", AG_STR_LIT("POST"));
        ag_req_respond_error(req, 405, "Method not allowed");
        return;
    }
    char path[4096];
    ag_str_t q = query_param(req->head.query, "config");
    if (q.ptr && query_decode(q, path, sizeof(path)) < 0) {
        ag_req_respond_error(req, 400, "config= is not a path");
        return;
    }
    char binary[4096];
    ag_str_t qb = upgrade ? query_param(req->head.query, "binary") : (ag_str_t){0};
    if (qb.ptr && query_decode(qb, binary, sizeof(binary)) < 0) {
        ag_req_respond_error(req, 400, "binary= is not a path");
        return;
    }
    reload_job_t *j = calloc(1, sizeof(*j));
    if (!j || (q.ptr && q.len && !(j->path = strdup(path))) ||
        (qb.ptr && qb.len && !(j->binary = strdup(binary)))) {
        if (j)
            free(j->path);
        free(j);
        ag_req_respond_error(req, 503, "Out of memory");
        return;
    }
    j->upgrade = upgrade;
    j->a = a;
    j->req = req;
    ag_buf_init(&j->body, 0);
    j->work.data = j;
    req->handler_data = j;
    req->on_abort = reload_abort;
    if (uv_queue_work(ag_worker_loop(req->worker), &j->work, reload_work, reload_done) < 0) {
        req->handler_data = NULL;
        req->on_abort = NULL;
        ag_buf_fini(&j->body);
        free(j->path);
        free(j->binary);
        free(j);
        ag_req_respond_error(req, 503, "Cannot start the reload");
    }
}

static void handle_request(ag_req_t *req)
{
    ag_admin_t *a = ag_worker_ctx(req->worker);
    ag_str_t path = req->head.path, method = req->head.method;
    bool get = ag_str_eq(method, AG_STR_LIT("GET")) || ag_str_eq(method, AG_STR_LIT("HEAD"));
    if (!token_ok(a, req)) {
        /* Basic too, so a browser asks for the token once and sends it on
         * every request of the page, fetches included. */
        ag_req_add_header(req, "WWW-Authenticate", AG_STR_LIT("Bearer realm=\"aigate admin\""));
        ag_req_add_header(req, "WWW-Authenticate",
                          AG_STR_LIT("Basic realm=\"aigate admin\", charset=\"UTF-8\""));
        ag_req_respond_error(req, 401, "Unauthorized: send Authorization: Bearer <admin token>");
        return;
    }
    static const char *const routes[] = {"/metrics", "/tail",    "/series",
                                         "/stats",   "/healthz", "/readyz"};
    bool known = false;
    for (size_t i = 0; i < AG_ARRAY_LEN(routes) && !known; i++)
        known = ag_str_eq(path, ag_str_c(routes[i]));
    if (known && !get) {
        ag_req_add_header(req, "Allow", AG_STR_LIT("GET, HEAD"));
        ag_req_respond_error(req, 405, "Method not allowed");
        return;
    }
    if (ag_str_eq(path, AG_STR_LIT("/reload"))) {
        handle_reload(a, req, false);
    } else if (ag_str_eq(path, AG_STR_LIT("/upgrade"))) {
        handle_reload(a, req, true);
    } else if (ag_str_eq(path, AG_STR_LIT("/__scheduled"))) {
        handle_scheduled(a, req); /* any method, as wrangler dev */
    } else if (path.len > 11 && memcmp(path.ptr, "/tasks/", 7) == 0 &&
               memcmp(path.ptr + path.len - 4, "/run", 4) == 0) {
        if (!ag_str_eq(method, AG_STR_LIT("POST"))) {
            ag_req_add_header(req, "Allow", AG_STR_LIT("POST"));
            ag_req_respond_error(req, 405, "Method not allowed");
            return;
        }
        handle_task_run(a, req, ag_str(path.ptr + 7, path.len - 11));
    } else if (ag_str_eq(path, AG_STR_LIT("/tasks")) && get) {
        handle_task_list(a, req);
    } else if (ag_str_eq(path, AG_STR_LIT("/metrics"))) {
        handle_metrics(a, req);
    } else if (ag_str_eq(path, AG_STR_LIT("/tail"))) {
        handle_tail(a, req);
    } else if (ag_str_eq(path, AG_STR_LIT("/series"))) {
        handle_series(a, req);
    } else if (ag_str_eq(path, AG_STR_LIT("/stats"))) {
        handle_stats(a, req);
    } else if (get && (ag_str_eq(path, AG_STR_LIT("/")) ||
                       (path.len > 8 && memcmp(path.ptr, "/assets/", 8) == 0))) {
        const ag_asset_t *asset = ag_dashboard_asset(path.ptr, path.len);
        if (!asset) {
            ag_req_respond_error(req, 404, "Not found");
            return;
        }
        ag_req_add_header(req, "Content-Security-Policy", AG_STR_LIT(AG_DASHBOARD_CSP));
        ag_req_add_header(req, "Cache-Control", AG_STR_LIT("no-cache"));
        ag_req_respond(req, 200, asset->content_type,
                       ag_str((const char *)asset->data, asset->len));
    } else if (ag_str_eq(path, AG_STR_LIT("/healthz"))) {
        /* The pid says which process answered (a binary upgrade changes it). */
        char body[64];
        int n = snprintf(body, sizeof(body), "{\"status\":\"ok\",\"pid\":%d}", (int)getpid());
        ag_req_respond(req, 200, "application/json", ag_str(body, (size_t)n));
    } else if (ag_str_eq(path, AG_STR_LIT("/readyz"))) {
        int st = atomic_load(&a->state);
        ag_gateway_redis_t rs =
            a->opts.gateway ? ag_gateway_redis_state(a->opts.gateway) : AG_GATEWAY_REDIS_NONE;
        /* Redis is required while limits fail closed: without it every AI
         * request would get a 503, so a balancer should send them elsewhere. */
        if (st == AG_ADMIN_READY && rs == AG_GATEWAY_REDIS_DOWN)
            ag_req_respond(req, 503, "application/json",
                           AG_STR_LIT("{\"status\":\"redis_down\",\"redis\":\"down\"}"));
        else if (st == AG_ADMIN_READY && rs == AG_GATEWAY_REDIS_NONE)
            ag_req_respond(req, 200, "application/json", AG_STR_LIT("{\"status\":\"ready\"}"));
        else if (st == AG_ADMIN_READY)
            ag_req_respond(req, 200, "application/json",
                           rs == AG_GATEWAY_REDIS_UP
                               ? AG_STR_LIT("{\"status\":\"ready\",\"redis\":\"up\"}")
                               : AG_STR_LIT("{\"status\":\"ready\",\"redis\":\"down\"}"));
        else
            ag_req_respond(req, 503, "application/json",
                           st == AG_ADMIN_STARTING ? AG_STR_LIT("{\"status\":\"starting\"}")
                                                   : AG_STR_LIT("{\"status\":\"draining\"}"));
    } else {
        ag_req_respond_error(req, 404, "Not found");
    }
}

/* ---- lifecycle ----------------------------------------------------------------------- */

static int worker_init(ag_worker_t *w, void *server_ctx, void **worker_ctx)
{
    AG_UNUSED(w);
    *worker_ctx = server_ctx;
    return 0;
}

/* Shutdown began: end every tail, so draining does not wait on them. */
static void worker_drain(ag_worker_t *w, void *worker_ctx)
{
    ag_admin_t *a = worker_ctx;
    AG_UNUSED(w);
    while (a->tails) {
        tail_session_t *s = a->tails;
        ag_req_t *req = s->req;
        session_close(s);
        if (req)
            ag_req_stream_end(req);
    }
}

int ag_admin_start(const ag_admin_options_t *opts, ag_admin_t **out)
{
    ag_admin_t *a = calloc(1, sizeof(*a));
    if (!a)
        return -ENOMEM;
    a->opts = *opts;
    int port;
    int rc = ag_admin_parse_listen(opts->listen, a->host, sizeof(a->host), &port);
    if (rc < 0) {
        free(a);
        return rc;
    }
    if (opts->token && *opts->token) {
        a->token = strdup(opts->token);
        a->token_len = a->token ? strlen(a->token) : 0;
        if (!a->token) {
            free(a);
            return -ENOMEM;
        }
    }
    a->opts.token = NULL;
    atomic_init(&a->state, AG_ADMIN_STARTING);
    pthread_mutex_init(&a->clients_lock, NULL);
    pthread_rwlock_init(&a->tasks_lock, NULL);
    ag_server_options_t so = {
        .host = a->host,
        .port = port,
        .threads = 1,
        .limits = opts->limits,
        .hooks =
            {
                .worker_init = worker_init,
                .worker_drain = worker_drain,
                .handle = handle_request,
                .server_ctx = a,
            },
        .default_headers = "X-Content-Type-Options: nosniff\r\n",
        .tls = opts->tls,
        .inherit_fds = opts->inherit_fds,
        .ninherit = opts->ninherit,
    };
    a->opts.tls = NULL; /* borrowed for the start only: the server holds its own */
    rc = ag_server_start(&so, &a->srv);
    if (rc < 0) {
        pthread_mutex_destroy(&a->clients_lock);
        pthread_rwlock_destroy(&a->tasks_lock);
        if (a->token)
            explicit_bzero(a->token, a->token_len);
        free(a->token);
        free(a);
        return rc;
    }
    *out = a;
    return 0;
}

unsigned ag_admin_listen_fds(const ag_admin_t *a, int *out, unsigned max)
{
    return ag_server_listen_fds(a->srv, out, max);
}

int ag_admin_port(const ag_admin_t *a)
{
    return ag_server_port(a->srv);
}

void ag_admin_set_server(ag_admin_t *a, const ag_server_t *srv)
{
    pthread_mutex_lock(&a->clients_lock);
    a->clients = srv;
    pthread_mutex_unlock(&a->clients_lock);
}

int ag_admin_set_tls(ag_admin_t *a, ag_tls_ctx_t *ctx)
{
    return ag_server_set_tls(a->srv, ctx);
}

void ag_admin_set_state(ag_admin_t *a, ag_admin_state_t state)
{
    atomic_store(&a->state, (int)state);
}

void ag_admin_set_tasks(ag_admin_t *a, ag_tasks_t *tasks, const ag_config_t *cfg)
{
    pthread_rwlock_wrlock(&a->tasks_lock);
    a->opts.tasks = tasks;
    a->opts.cfg = cfg;
    pthread_rwlock_unlock(&a->tasks_lock);
}

void ag_admin_shutdown(ag_admin_t *a)
{
    ag_server_shutdown(a->srv);
}

void ag_admin_wait_and_free(ag_admin_t *a)
{
    if (!a)
        return;
    ag_server_wait_and_free(a->srv);
    pthread_mutex_destroy(&a->clients_lock);
    pthread_rwlock_destroy(&a->tasks_lock);
    if (a->token) {
        explicit_bzero(a->token, a->token_len);
        free(a->token);
    }
    free(a);
}
