/* SPDX-License-Identifier: MIT
 *
 * cmd_tail.c: `aigate tail`, the client of the admin listener's GET /tail
 * (platform.md section 2). One libcurl easy transfer at a time; the body, a
 * text/event-stream, goes through upstream's SSE parser as it arrives, and each
 * event is printed (tail_format.c) and flushed whole. Filters run in the server.
 * A stream that drops after it was up is retried with backoff until Ctrl-C.
 */
#include "util/platform.h"

#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdbool.h>
#include <string.h>
#include <strings.h>
#include <sys/select.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>

#include "cli/cli.h"
#include "cli/tail_format.h"
#include "config/config.h"
#include "store/secrets.h"
#include "store/secrets_resolve.h"
#include "upstream/sse.h"
#include "util/buf.h"
#include "util/errors.h"

static const char tail_usage[] =
    "usage: aigate tail [--admin URL] [--format pretty|json] [--status ok|error|canceled]...\n"
    "                   [--method M]... [--search TEXT] [--ip IP|self] [--header NAME:VALUE]...\n"
    "                   [--sampling-rate R] [--route PATH] [--model M] [--key NAME]\n"
    "Prints the requests and task runs of a running server as they finish, from its admin\n"
    "listener (GET /tail). Filters run in the server; repeat a flag marked ... to allow\n"
    "several values. Ctrl-C stops.\n"
    "  --admin URL          the admin listener (default: http:// + admin_listen of the config)\n"
    "  --format F           pretty (the default on a terminal) or json (one wrangler tail\n"
    "                       event per line, the default when piped)\n"
    "  --status S           ok, error (answers of 500 and above) or canceled\n"
    "  --method M           HTTP method\n"
    "  --search TEXT        text in the event\n"
    "  --ip IP              client address; self: this machine's\n"
    "  --header NAME:VALUE  request header (NAME alone: present)\n"
    "  --sampling-rate R    share of the events to show, 0 to 1\n"
    "  --route PATH         route, e.g. /api/generate\n"
    "  --model M            model\n"
    "  --key NAME           API key name\n"
    "common options: --config FILE  --data-dir DIR  --help\n"
    "The secret AIGATE_ADMIN_TOKEN, when set, is sent as the admin bearer token.\n";

#define BACKOFF_FIRST_MS 200u
#define BACKOFF_MAX_MS 5000u
#define STAYED_UP_MS 1000   /* a stream up this long resets the backoff */
#define ERROR_BODY_MAX 512  /* how much of a refusal's body goes into the message */
#define OUT_MAX (16u << 20) /* one formatted event; the SSE parser caps it at 1 MiB */
#define CONTENT_TYPE_MAX 128

/* ---- the command line ------------------------------------------------------------------ */

typedef struct tail_opts {
    const char *admin;
    const char *format;
    const char *config;
    const char *data_dir;
    ag_tail_filters_t f;
    /* storage for the repeatable flags, argc entries each (borrowed from argv) */
    const char **status, **method, **header;
} tail_opts_t;

typedef struct flag {
    const char *name;
    const char **single; /* a flag given once */
    const char ***many;  /* a repeatable flag: array */
    size_t *n;           /* and its count */
} flag_t;

static bool one_of(const char *s, const char *const *words)
{
    for (size_t i = 0; words[i]; i++) {
        if (strcmp(s, words[i]) == 0)
            return true;
    }
    return false;
}

/* @return 0 to go on, or the exit code (0 after --help, 2 after a usage error). */
static int parse_args(tail_opts_t *o, int argc, char **argv, bool *done)
{
    ag_tail_filters_t *f = &o->f;
    flag_t flags[] = {
        {"--admin", &o->admin, NULL, NULL},
        {"--format", &o->format, NULL, NULL},
        {"--config", &o->config, NULL, NULL},
        {"--data-dir", &o->data_dir, NULL, NULL},
        {"--status", NULL, &o->status, &f->nstatus},
        {"--method", NULL, &o->method, &f->nmethod},
        {"--header", NULL, &o->header, &f->nheader},
        {"--search", &f->search, NULL, NULL},
        {"--ip", &f->ip, NULL, NULL},
        {"--sampling-rate", &f->sampling_rate, NULL, NULL},
        {"--route", &f->route, NULL, NULL},
        {"--model", &f->model, NULL, NULL},
        {"--key", &f->key, NULL, NULL},
    };
    *done = true;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            fputs(tail_usage, stdout);
            return 0;
        }
        if (strncmp(a, "--", 2) != 0)
            return ag__cli_usage_error(tail_usage, "unexpected argument '%s'", a);
        const char *eq = strchr(a, '=');
        size_t nlen = eq ? (size_t)(eq - a) : strlen(a);
        const flag_t *fl = NULL;
        for (size_t k = 0; k < AG_ARRAY_LEN(flags); k++) {
            if (strlen(flags[k].name) == nlen && strncmp(a, flags[k].name, nlen) == 0)
                fl = &flags[k];
        }
        if (fl == NULL)
            return ag__cli_usage_error(tail_usage, "unknown option '%.*s'", (int)nlen, a);
        const char *val = eq ? eq + 1 : NULL;
        if (val == NULL) {
            if (i + 1 >= argc)
                return ag__cli_usage_error(tail_usage, "%s needs a value", a);
            val = argv[++i];
        }
        if (fl->single) {
            if (*fl->single)
                return ag__cli_usage_error(tail_usage, "%s is given twice", fl->name);
            *fl->single = val;
        } else {
            (*fl->many)[(*fl->n)++] = val;
        }
    }
    static const char *const formats[] = {"pretty", "json", NULL};
    static const char *const statuses[] = {"ok", "error", "canceled", NULL};
    if (o->format && !one_of(o->format, formats))
        return ag__cli_usage_error(tail_usage, "--format is pretty or json, not '%s'", o->format);
    for (size_t i = 0; i < f->nstatus; i++) {
        if (!one_of(f->status[i], statuses))
            return ag__cli_usage_error(tail_usage, "--status is ok, error or canceled, not '%s'",
                                       f->status[i]);
    }
    for (size_t i = 0; i < f->nmethod; i++) {
        if (f->method[i][0] == '\0')
            return ag__cli_usage_error(tail_usage, "--method is empty");
    }
    for (size_t i = 0; i < f->nheader; i++) {
        if (f->header[i][0] == '\0' || f->header[i][0] == ':')
            return ag__cli_usage_error(tail_usage, "--header wants NAME:VALUE or NAME, not '%s'",
                                       f->header[i]);
    }
    if (f->sampling_rate) {
        char *end;
        errno = 0;
        double r = strtod(f->sampling_rate, &end);
        if (errno || end == f->sampling_rate || *end != '\0' || !(r >= 0.0 && r <= 1.0))
            return ag__cli_usage_error(tail_usage, "--sampling-rate is a number from 0 to 1");
    }
    const char *const nonempty[][2] = {{"--ip", f->ip},       {"--route", f->route},
                                       {"--model", f->model}, {"--key", f->key},
                                       {"--admin", o->admin}, {"--config", o->config}};
    for (size_t i = 0; i < AG_ARRAY_LEN(nonempty); i++) {
        if (nonempty[i][1] && nonempty[i][1][0] == '\0')
            return ag__cli_usage_error(tail_usage, "%s is empty", nonempty[i][0]);
    }
    *done = false;
    return 0;
}

/* ---- configuration: the data folder (for the token) and admin_listen -------------------- */

/* What tail reads from the config. [aigate] admin_listen and the name of the admin token's
 * secret are being added on another branch (platform.md section 1); until they land, their
 * documented defaults. */
static const char *config_admin_listen(const ag_config_t *cfg)
{
    return cfg->admin_listen ? cfg->admin_listen : AG_TAIL_DEFAULT_ADMIN_LISTEN;
}

static const char *config_admin_token_secret(const ag_config_t *cfg)
{
    return cfg->admin_token_secret && *cfg->admin_token_secret ? cfg->admin_token_secret
                                                               : "AIGATE_ADMIN_TOKEN";
}

typedef struct tail_config {
    char *data_dir;     /* as ag__cli_data_dir() finds it */
    char *listen;       /* admin_listen */
    char *token_secret; /* the secret that holds the admin token */
} tail_config_t;

static void tail_config_fini(tail_config_t *tc)
{
    AG_FREE(&tc->data_dir);
    AG_FREE(&tc->listen);
    AG_FREE(&tc->token_secret);
}

/* One read of the config. @return 0, or 1 after printing why. */
static int read_config(const tail_opts_t *o, tail_config_t *tc)
{
    ag_config_t cfg;
    ag_config_defaults(&cfg);
    const char *path = ag_config_find(o->config);
    int rc = 0;
    if (path && ag_config_load_file(&cfg, path, stderr) < 0) {
        rc = ag__cli_fail("cannot use the configuration in %s", path);
    } else {
        const char *dir = o->data_dir                       ? o->data_dir
                          : cfg.data_dir && cfg.data_dir[0] ? cfg.data_dir
                                                            : "./.aigate";
        tc->data_dir = strdup(dir);
        tc->listen = strdup(config_admin_listen(&cfg));
        tc->token_secret = strdup(config_admin_token_secret(&cfg));
        if (tc->data_dir == NULL || tc->listen == NULL || tc->token_secret == NULL)
            rc = ag__cli_fail("out of memory");
    }
    ag_config_fini(&cfg);
    return rc;
}

/* ---- signals --------------------------------------------------------------------------- */

static volatile sig_atomic_t stop_requested;

static void on_stop_signal(int signum)
{
    AG_UNUSED(signum);
    stop_requested = 1;
}

/* SIGINT and SIGTERM set a flag that the transfer's progress callback and the backoff wait
 * read, so a line is never cut in half. No SA_RESTART: the poll in libcurl returns at
 * once. SA_RESETHAND: a second Ctrl-C ends the process the ordinary way. */
static void install_signals(struct sigaction *old_int, struct sigaction *old_term)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_stop_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESETHAND;
    sigaction(SIGINT, &sa, old_int);
    sigaction(SIGTERM, &sa, old_term);
}

/* Waits ms, or less when a stop signal comes. Signals are blocked between the flag test
 * and pselect(), which unblocks them atomically: a signal cannot slip in between.
 * @return true when the time passed, false when a stop was requested. */
static bool wait_ms(unsigned ms)
{
    sigset_t block, old;
    sigemptyset(&block);
    sigaddset(&block, SIGINT);
    sigaddset(&block, SIGTERM);
    sigprocmask(SIG_BLOCK, &block, &old);
    struct timespec now, end;
    clock_gettime(CLOCK_MONOTONIC, &end);
    end.tv_sec += ms / 1000;
    end.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (end.tv_nsec >= 1000000000L) {
        end.tv_sec++;
        end.tv_nsec -= 1000000000L;
    }
    while (!stop_requested) {
        clock_gettime(CLOCK_MONOTONIC, &now);
        struct timespec left = {end.tv_sec - now.tv_sec, end.tv_nsec - now.tv_nsec};
        if (left.tv_nsec < 0) {
            left.tv_sec--;
            left.tv_nsec += 1000000000L;
        }
        if (left.tv_sec < 0)
            break;
        pselect(0, NULL, NULL, NULL, &left, &old);
    }
    sigprocmask(SIG_SETMASK, &old, NULL);
    return !stop_requested;
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- one connection -------------------------------------------------------------------- */

typedef struct tail {
    bool pretty;
    const char *base;         /* the admin listener's URL, for messages */
    const char *url;          /* base + /tail?query */
    const char *token_secret; /* its name, for messages */
    struct curl_slist *headers;
    bool token_sent;
    bool ever_connected; /* some connection got its stream: later failures are retried */
} tail_t;

typedef struct conn {
    tail_t *t;
    CURL *h;
    ag_sse_parser_t sse;
    long status;
    bool headers_done;
    bool streaming;             /* 200 and text/event-stream: the body is events */
    int64_t streaming_since_ms; /* monotonic */
    char content_type[CONTENT_TYPE_MAX];
    ag_buf_t body; /* the start of an answer that is not a stream, for the message */
    ag_buf_t out;  /* one formatted event */
    int out_err;   /* errno of a failed write to stdout */
    int sse_err;   /* the SSE parser's error (an event over its cap, out of memory) */
} conn_t;

static int write_out(conn_t *c)
{
    if (c->out.len && fwrite(c->out.data, 1, c->out.len, stdout) != c->out.len) {
        c->out_err = errno ? errno : EIO;
        return 1;
    }
    if (fflush(stdout) != 0) {
        c->out_err = errno ? errno : EIO;
        return 1;
    }
    return 0;
}

/* One SSE event: one tail event as a JSON object in its data. Comments (`: keepalive`),
 * other fields and empty events never get here or are skipped. */
static int on_event(void *ctx, const ag_sse_event_t *ev)
{
    conn_t *c = ctx;
    if (ev->data.len == 0)
        return 0;
    ag_buf_reset(&c->out);
    int rc;
    if (c->t->pretty) {
        rc = ag_tail_format_pretty(&c->out, ev->data.ptr, ev->data.len);
    } else {
        int64_t dropped = 0;
        rc = ag_tail_event_dropped(ev->data.ptr, ev->data.len, &dropped);
        if (rc == 0 && dropped > 0) {
            /* stdout first, so the notice and the events keep their order on a terminal */
            fflush(stdout);
            ag_buf_t note;
            ag_buf_init(&note, 0);
            if (ag_tail_format_dropped(&note, dropped) == 0)
                fwrite(note.data, 1, note.len, stderr);
            ag_buf_fini(&note);
        }
        if (rc == 0)
            rc = ag_tail_format_json(&c->out, ev->data.ptr, ev->data.len);
    }
    if (rc == AG_EPROTO) {
        fputs("tail: skipped an event that is not a JSON object\n", stderr);
        return 0;
    }
    if (rc < 0)
        return rc;
    return write_out(c);
}

static size_t on_header(char *ptr, size_t size, size_t n, void *ud)
{
    conn_t *c = ud;
    size_t len = size * n;
    if (len >= 5 && strncmp(ptr, "HTTP/", 5) == 0) {
        c->content_type[0] = '\0'; /* a new response head (after a 1xx) */
    } else if (len > 13 && strncasecmp(ptr, "content-type:", 13) == 0) {
        const char *v = ptr + 13;
        size_t vlen = len - 13;
        while (vlen && (*v == ' ' || *v == '\t')) {
            v++;
            vlen--;
        }
        while (vlen && (v[vlen - 1] == '\r' || v[vlen - 1] == '\n' || v[vlen - 1] == ' '))
            vlen--;
        if (vlen >= sizeof(c->content_type))
            vlen = sizeof(c->content_type) - 1;
        memcpy(c->content_type, v, vlen);
        c->content_type[vlen] = '\0';
    } else if ((len == 2 && ptr[0] == '\r' && ptr[1] == '\n') || (len == 1 && ptr[0] == '\n')) {
        long status = 0;
        curl_easy_getinfo(c->h, CURLINFO_RESPONSE_CODE, &status);
        if (status < 200)
            return len;
        c->status = status;
        c->headers_done = true;
        c->streaming = status == 200 && strncasecmp(c->content_type, "text/event-stream", 17) == 0;
        if (c->streaming) {
            c->streaming_since_ms = now_ms();
            if (c->t->ever_connected)
                fputs("tail: reconnected\n", stderr);
            else if (c->t->pretty)
                fprintf(stderr, "tail: connected to %s, waiting for events (Ctrl-C to stop)\n",
                        c->t->base);
            c->t->ever_connected = true;
        }
    }
    return len;
}

static size_t on_body(char *ptr, size_t size, size_t n, void *ud)
{
    conn_t *c = ud;
    size_t len = size * n;
    if (!c->streaming) {
        /* A refusal or something that is not a tail: keep the start for the message. */
        size_t room = ERROR_BODY_MAX - c->body.len;
        if (ag_buf_append(&c->body, ptr, len < room ? len : room) < 0 || len >= room)
            return 0;
        return len;
    }
    int rc = ag_sse_parser_feed(&c->sse, ptr, len);
    if (rc != 0) {
        if (c->out_err == 0)
            c->sse_err = rc;
        return 0; /* CURLE_WRITE_ERROR ends the transfer */
    }
    return len;
}

static int on_progress(void *ud, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
                       curl_off_t ulnow)
{
    AG_UNUSED(ud);
    AG_UNUSED(dltotal);
    AG_UNUSED(dlnow);
    AG_UNUSED(ultotal);
    AG_UNUSED(ulnow);
    return stop_requested ? 1 : 0;
}

/* One GET /tail until it ends. The caller reads the outcome from c and res. */
static CURLcode tail_once(tail_t *t, conn_t *c, char *errbuf)
{
    *c = (conn_t){.t = t};
    ag_buf_init(&c->body, ERROR_BODY_MAX);
    ag_buf_init(&c->out, OUT_MAX);
    ag_sse_parser_init(&c->sse, 0, on_event, c);
    c->h = curl_easy_init();
    if (c->h == NULL)
        return CURLE_OUT_OF_MEMORY;
    CURL *h = c->h;
    errbuf[0] = '\0';
    curl_easy_setopt(h, CURLOPT_URL, t->url);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, t->headers);
    curl_easy_setopt(h, CURLOPT_USERAGENT, "aigate-tail/" AG_VERSION);
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    /* The admin listener is on loopback as a rule: never through a proxy from the environment. */
    curl_easy_setopt(h, CURLOPT_NOPROXY, "localhost,127.0.0.1,::1");
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, 5000L);
    /* A tail may be silent for hours: TCP keep-alive notices a peer that vanished. */
    curl_easy_setopt(h, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(h, CURLOPT_TCP_KEEPIDLE, 30L);
    curl_easy_setopt(h, CURLOPT_TCP_KEEPINTVL, 10L);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, c);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, c);
    curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, on_progress);
    curl_easy_setopt(h, CURLOPT_XFERINFODATA, c);
    curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
    return curl_easy_perform(h);
}

static void conn_fini(conn_t *c)
{
    curl_easy_cleanup(c->h);
    ag_sse_parser_fini(&c->sse);
    ag_buf_fini(&c->body);
    ag_buf_fini(&c->out);
}

static bool retryable_status(long status)
{
    return status == 502 || status == 503 || status == 504;
}

/* Why a connection ended, as the exit code of the command or RETRY. */
#define RETRY (-1)

static int judge(tail_t *t, conn_t *c, CURLcode res, const char *errbuf)
{
    if (stop_requested)
        return 0;
    if (c->out_err) /* a closed pipe (`| head`) ends the tail as it ends `yes` */
        return c->out_err == EPIPE
                   ? 0
                   : ag__cli_fail("cannot write the output: %s", strerror(c->out_err));
    if (c->streaming) {
        if (c->sse_err)
            fprintf(stderr, "tail: the event stream broke: %s\n", ag_strerror(c->sse_err));
        fputs("tail: connection lost; reconnecting...\n", stderr);
        return RETRY;
    }
    if (c->headers_done) {
        const char *reason = ag_tail_reason((int)c->status);
        if (c->status == 401)
            return t->token_sent
                       ? ag__cli_fail("the admin token is wrong: %s refused the secret %s (401)",
                                      t->base, t->token_secret)
                       : ag__cli_fail("the admin token is missing: %s wants one (401); set the "
                                      "secret %s (aigate secret put %s)",
                                      t->base, t->token_secret, t->token_secret);
        if (t->ever_connected && retryable_status(c->status))
            return RETRY;
        if (c->status == 200)
            return ag__cli_fail("%s/tail is not an aigate live tail (Content-Type: %s)", t->base,
                                c->content_type[0] ? c->content_type : "none");
        /* The first line of the answer, if it is text: the server says why. */
        size_t n = strcspn(ag_buf_cstr(&c->body) ? c->body.data : "", "\r\n");
        for (size_t i = 0; i < n; i++) {
            unsigned char ch = (unsigned char)c->body.data[i];
            if (ch < 0x20 || ch == 0x7f)
                n = 0;
        }
        return ag__cli_fail("%s/tail answered %ld%s%s%s%.*s", t->base, c->status, reason ? " " : "",
                            reason ? reason : "", n ? ": " : "", (int)n,
                            c->body.data ? c->body.data : "");
    }
    if (t->ever_connected)
        return RETRY; /* still restarting */
    if (res == CURLE_COULDNT_CONNECT || res == CURLE_COULDNT_RESOLVE_HOST ||
        res == CURLE_OPERATION_TIMEDOUT)
        return ag__cli_fail("no aigate server at %s (is it running? admin_listen)", t->base);
    return ag__cli_fail("cannot tail %s: %s", t->base,
                        errbuf[0] ? errbuf : curl_easy_strerror(res));
}

static int run(tail_t *t)
{
    unsigned delay = BACKOFF_FIRST_MS;
    char errbuf[CURL_ERROR_SIZE];
    for (;;) {
        conn_t c;
        CURLcode res = tail_once(t, &c, errbuf);
        int rc = judge(t, &c, res, errbuf);
        /* A stream that was up a while starts the backoff again; one that a server ends
         * as soon as it starts keeps doubling it, so that is no busy loop. */
        bool stayed = c.streaming && now_ms() - c.streaming_since_ms >= STAYED_UP_MS;
        conn_fini(&c);
        if (rc != RETRY)
            return rc;
        if (stayed)
            delay = BACKOFF_FIRST_MS;
        if (!wait_ms(delay))
            return 0;
        delay = delay * 2 < BACKOFF_MAX_MS ? delay * 2 : BACKOFF_MAX_MS;
    }
}

/* ---- the command ----------------------------------------------------------------------- */

int cmd_tail(int argc, char **argv)
{
    tail_opts_t o = {0};
    size_t slots = argc > 0 ? (size_t)argc : 1;
    o.status = calloc(slots, sizeof(char *));
    o.method = calloc(slots, sizeof(char *));
    o.header = calloc(slots, sizeof(char *));
    o.f.status = o.status;
    o.f.method = o.method;
    o.f.header = o.header;
    tail_config_t tc = {0};
    char *token = NULL, *auth = NULL;
    tail_t t = {0};
    ag_buf_t base, url;
    ag_buf_init(&base, 0);
    ag_buf_init(&url, 0);
    bool curl_ready = false;
    bool done;
    int rc;
    if (o.status == NULL || o.method == NULL || o.header == NULL) {
        rc = ag__cli_fail("out of memory");
        goto out;
    }
    rc = parse_args(&o, argc, argv, &done);
    if (done)
        goto out;
    rc = read_config(&o, &tc);
    if (rc)
        goto out;
    if (o.admin == NULL && tc.listen[0] == '\0') {
        rc = ag__cli_fail("the admin listener is off (admin_listen = \"\"): set admin_listen, or "
                          "give --admin URL");
        goto out;
    }
    if (ag_tail_admin_url(&base, o.admin, tc.listen) < 0 || ag_buf_cstr(&base) == NULL) {
        rc = o.admin ? ag__cli_usage_error(tail_usage,
                                           "--admin wants an http:// or https:// URL or "
                                           "host:port, not '%s'",
                                           o.admin)
                     : ag__cli_fail("admin_listen \"%s\" is not host:port", tc.listen);
        goto out;
    }
    if (ag_buf_printf(&url, "%s/tail?", base.data) < 0 || ag_tail_query(&url, &o.f) < 0 ||
        ag_buf_cstr(&url) == NULL) {
        rc = ag__cli_fail("out of memory");
        goto out;
    }
    t.pretty = o.format ? strcmp(o.format, "pretty") == 0 : isatty(STDOUT_FILENO) == 1;
    t.base = base.data;
    t.url = url.data;
    t.token_secret = tc.token_secret;

    int err = ag_secrets_resolve(tc.data_dir, tc.token_secret, &token);
    if (err < 0 && err != AG_ENOTFOUND) {
        rc = ag__cli_fail("cannot read the secret %s: %s", tc.token_secret, ag_strerror(err));
        goto out;
    }
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        rc = ag__cli_fail("cannot initialise the HTTP client (libcurl)");
        goto out;
    }
    curl_ready = true;
    struct curl_slist *h = curl_slist_append(NULL, "Accept: text/event-stream");
    if (h == NULL) {
        rc = ag__cli_fail("out of memory");
        goto out;
    }
    t.headers = h;
    if (token) {
        if (strpbrk(token, "\r\n") != NULL) {
            rc = ag__cli_fail("the secret %s holds a line break", tc.token_secret);
            goto out;
        }
        size_t alen = strlen(token) + sizeof("Authorization: Bearer ");
        auth = malloc(alen);
        if (auth == NULL) {
            rc = ag__cli_fail("out of memory");
            goto out;
        }
        snprintf(auth, alen, "Authorization: Bearer %s", token);
        h = curl_slist_append(t.headers, auth); /* copies it */
        explicit_bzero(auth, alen);
        if (h == NULL) {
            rc = ag__cli_fail("out of memory");
            goto out;
        }
        t.headers = h;
        t.token_sent = true;
    }

    struct sigaction old_int, old_term;
    void (*old_pipe)(int) = signal(SIGPIPE, SIG_IGN);
    stop_requested = 0;
    install_signals(&old_int, &old_term);
    rc = run(&t);
    sigaction(SIGINT, &old_int, NULL);
    sigaction(SIGTERM, &old_term, NULL);
    signal(SIGPIPE, old_pipe);
    if (rc == 0 && !stop_requested && fflush(stdout) != 0 && errno != EPIPE)
        rc = ag__cli_fail("cannot write the output: %s", strerror(errno));

out:
    curl_slist_free_all(t.headers);
    if (curl_ready)
        curl_global_cleanup();
    free(auth);
    if (token)
        ag_secrets_value_free(token);
    tail_config_fini(&tc);
    ag_buf_fini(&base);
    ag_buf_fini(&url);
    free(o.status);
    free(o.method);
    free(o.header);
    return rc;
}
