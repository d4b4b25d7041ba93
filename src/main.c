/* SPDX-License-Identifier: MIT
 *
 * main.c: the aigate command line: subcommand dispatch (git's commands[]
 * table), flag parsing, and the serve loop with its signal handling.
 */
#include "util/platform.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <uv.h>

#include "admin/admin.h"
#include "cli/cli.h"
#include "config/config.h"
#include "gateway/client_ip.h"
#include "gateway/gateway.h"
#include "http/server.h"
#include "store/secrets.h"
#include "store/secrets_resolve.h"
#include "tasks/tasks.h"
#include "tls/tls.h"
#include "upstream/client.h"
#include "util/errors.h"
#include "util/json.h"
#include "util/log.h"

#include "upgrade.h"

typedef struct opts {
    const char *config;
    const char *host;
    const char *upstream;
    const char *admin_listen;
    int port;
    int threads;
    bool dev;
} opts_t;

static void usage(FILE *out)
{
    fprintf(out,
            "usage: aigate <command> [options]\n"
            "\n"
            "commands:\n"
            "  dev              serve for local development (127.0.0.1:8787 by default)\n"
            "  serve            serve with the configuration as it is\n"
            "  init NAME        a new project folder: wrangler.toml, .dev.vars.example, README\n"
            "  deploy           validate the configuration and apply it to the running server\n"
            "                   (aigate deploy --help)\n"
            "  config check     validate the configuration and exit\n"
            "  config reference print the [aigate] key reference (Markdown)\n"
            "  kv               KV namespaces and keys (aigate kv --help)\n"
            "  r2               buckets and objects (aigate r2 --help)\n"
            "  secret           secrets, read from stdin (aigate secret --help)\n"
            "  keys             client API keys: create, list, show, revoke, rotate (aigate keys "
            "--help)\n"
            "  stats            usage analytics from the usage log (aigate stats --help)\n"
            "  cron             scheduled tasks: list, run NAME (aigate cron --help)\n"
            "  tail             live requests and task runs of a running server (aigate tail "
            "--help)\n"
            "  help             this text\n"
            "  version          print the version\n"
            "\n"
            "options:\n"
            "  --config FILE    configuration file (default: aigate.toml, else wrangler.toml)\n"
            "  --host ADDR      listen address\n"
            "  --port N         listen port (0: any free port)\n"
            "  --threads N      event-loop threads (default: one per core)\n"
            "  --upstream URL   Anthropic API base URL\n"
            "  --admin-listen A admin listener address (host:port; \"\" for none)\n"
            "\n"
            "environment:\n"
            "  ANTHROPIC_API_KEY  the upstream key (also read from .dev.vars)\n");
}

static int parse_int(const char *s, int min, int max, int *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || *s == '\0' || *end != '\0' || v < min || v > max)
        return -EINVAL;
    *out = (int)v;
    return 0;
}

static const char serve_flags[] =
    "options:\n"
    "  --config FILE    configuration file (default: aigate.toml, else wrangler.toml)\n"
    "  --host ADDR      listen address\n"
    "  --port N         listen port (0: any free port)\n"
    "  --threads N      event-loop threads (default: one per core)\n"
    "  --upstream URL   Anthropic API base URL\n"
    "  --admin-listen A admin listener address (host:port; \"\" for none)\n"
    "  -h, --help       this text\n";

static bool is_help_flag(const char *a)
{
    return strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0;
}

/* Parses the shared flags; `verb` names the command in messages and its help.
 * @return 0 to go on, 2 (usage error) after printing why, or -1 after --help. */
static int parse_opts(int argc, char **argv, opts_t *o, const char *verb)
{
    static const char *const known[] = {"--config",       "--host", "--upstream",
                                        "--admin-listen", "--port", "--threads"};
    o->port = -1;
    o->threads = -1;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (is_help_flag(a)) {
            printf("usage: aigate %s [options]\n%s", verb, serve_flags);
            return -1;
        }
        if (strncmp(a, "-", 1) != 0) {
            fprintf(stderr, "aigate %s: unexpected argument '%s' (see 'aigate %s --help')\n", verb,
                    a, verb);
            return 2;
        }
        const char *eq = strchr(a, '=');
        size_t nlen = eq ? (size_t)(eq - a) : strlen(a);
        const char *name = NULL;
        for (size_t k = 0; k < AG_ARRAY_LEN(known); k++) {
            if (strlen(known[k]) == nlen && strncmp(a, known[k], nlen) == 0)
                name = known[k];
        }
        if (!name) {
            fprintf(stderr, "aigate %s: unknown option '%.*s' (see 'aigate %s --help')\n", verb,
                    (int)nlen, a, verb);
            return 2;
        }
        const char *val = eq ? eq + 1 : i + 1 < argc ? argv[++i] : NULL;
        if (!val) {
            fprintf(stderr, "aigate %s: %s needs a value\n", verb, name);
            return 2;
        }
        if (strcmp(name, "--config") == 0) {
            o->config = val;
        } else if (strcmp(name, "--host") == 0) {
            o->host = val;
        } else if (strcmp(name, "--upstream") == 0) {
            o->upstream = val;
        } else if (strcmp(name, "--admin-listen") == 0) {
            o->admin_listen = val;
        } else if (strcmp(name, "--port") == 0) {
            if (parse_int(val, 0, 65535, &o->port) < 0) {
                fprintf(stderr, "aigate: --port must be 0-65535\n");
                return 2;
            }
        } else if (parse_int(val, 1, 256, &o->threads) < 0) { /* --threads */
            fprintf(stderr, "aigate: --threads must be 1-256\n");
            return 2;
        }
    }
    return 0;
}

/* Loads defaults, the file, then the flags over them (problems to errs).
 * @return 0 or an exit code. */
static int load_config_to(const opts_t *o, ag_config_t *cfg, FILE *errs)
{
    ag_config_defaults(cfg);
    const char *path = ag_config_find(o->config);
    if (path && ag_config_load_file(cfg, path, errs) < 0)
        return 1;
    if (o->host) {
        free(cfg->host);
        cfg->host = strdup(o->host);
    }
    if (o->upstream) {
        if (strncmp(o->upstream, "http://", 7) != 0 && strncmp(o->upstream, "https://", 8) != 0) {
            fprintf(errs, "aigate: --upstream must be an http:// or https:// URL\n");
            return 2;
        }
        free(cfg->upstream);
        cfg->upstream = strdup(o->upstream);
    }
    if (o->admin_listen) {
        free(cfg->admin_listen);
        cfg->admin_listen = strdup(o->admin_listen);
    }
    if (o->port >= 0)
        cfg->port = o->port;
    if (o->threads > 0)
        cfg->threads = (unsigned)o->threads;
    if (cfg->threads == 0)
        cfg->threads = uv_available_parallelism();
    return 0;
}

static int load_config(const opts_t *o, ag_config_t *cfg)
{
    return load_config_to(o, cfg, stderr);
}

static ag_server_t *running_server;
static ag_admin_t *running_admin;
static unsigned stop_signals; /* SIGTERM/SIGINT received so far */

/* ---- systemd's readiness protocol (sd_notify(3), without libsystemd) ------------------ */

/* One datagram to $NOTIFY_SOCKET ("/path", or "@name" for an abstract socket);
 * nothing when it is not set, as under any other supervisor. */
static void notify(const char *msg)
{
    const char *path = getenv("NOTIFY_SOCKET");
    if (!path || (path[0] != '/' && path[0] != '@'))
        return;
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    size_t len = strlen(path);
    if (len < 2 || len >= sizeof(sa.sun_path))
        return;
    memcpy(sa.sun_path, path, len);
    if (path[0] == '@')
        sa.sun_path[0] = '\0';
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return;
    if (sendto(fd, msg, strlen(msg), MSG_NOSIGNAL, (struct sockaddr *)&sa,
               (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len)) < 0)
        ag_log_warn("cannot notify the service manager at NOTIFY_SOCKET: %s", strerror(errno));
    close(fd);
}

/* ---- reload: SIGHUP, POST /reload, `aigate deploy` ----------------------------------- */

/* What a reload replaces, and what it must not pull out from under anyone. */
typedef struct serve {
    opts_t o;           /* the command line's flags, applied over every file loaded */
    pthread_mutex_t mu; /* one reload at a time; none once the drain began */
    bool stopping;
    ag_config_t *cfg; /* applied: the file's reloadable keys, the restart-only ones as started */
    ag_config_t
        *tasks_cfg; /* what the tasks runner and the admin's task list borrow (cfg or older) */
    ag_gateway_t *gw;
    ag_tasks_t *tasks;
    ag_admin_t *admin;
    ag_server_t *srv;
    ag_tls_ctx_t *tls;   /* the certificate new connections get; NULL: plain HTTP */
    char data_dir[1024]; /* where the pid file and the upgrade's answer go */
} serve_t;

static serve_t serving = {.mu = PTHREAD_MUTEX_INITIALIZER};

static void config_free(ag_config_t *cfg)
{
    if (cfg) {
        ag_config_fini(cfg);
        free(cfg);
    }
}

static bool restart_only(const char *name)
{
    if (strcmp(name, "admin_token_secret") == 0 || strcmp(name, "name") == 0 ||
        strcmp(name, "redis.url") == 0)
        return true;
    return ag_config_key_apply(name) == AG_KEY_RESTART;
}

/* Parts of the config the tasks runner reads (it borrows its config whole). */
static bool task_input(const char *name)
{
    static const char *const inputs[] = {
        "tasks",
        "triggers.crons",
        "smtp",
        "kv_namespaces",
        "r2_buckets",
        "prices",
        "fallbacks",
        "routing",
        "vars.MAX_TOKENS",
        "vars.DEFAULT_MODEL",
        "api_key_secret",
        "queue_max",
        "queue_timeout",
        "upstream_deadline",
        "upstream",
    };
    for (size_t i = 0; i < AG_ARRAY_LEN(inputs); i++) {
        if (strcmp(name, inputs[i]) == 0)
            return true;
    }
    return strncmp(name, "upstream_", 9) == 0;
}

static void json_strings(ag_buf_t *b, const char *key, const char *const *v, size_t n)
{
    ag_buf_printf(b, ",\"%s\":[", key);
    for (size_t i = 0; i < n; i++) {
        if (i)
            ag_buf_append_cstr(b, ",");
        ag_json_append_string(b, ag_str_c(v[i]));
    }
    ag_buf_append_cstr(b, "]");
}

/* What `aigate deploy` prints, wrangler-style: routes, bindings, triggers, models. */
static void json_summary(ag_buf_t *b, const ag_config_t *cfg)
{
    const char *methods[32], *paths[32];
    size_t nr = ag_gateway_routes(methods, paths, 32);
    ag_buf_append_cstr(b, ",\"routes\":[");
    for (size_t i = 0; i < nr && i < 32; i++) {
        char r[160];
        snprintf(r, sizeof(r), "%s %s", methods[i], paths[i]);
        if (i)
            ag_buf_append_cstr(b, ",");
        ag_json_append_string(b, ag_str_c(r));
    }
    ag_buf_append_cstr(b, "],\"bindings\":{\"kv_namespaces\":[");
    for (size_t i = 0; i < cfg->nkv_namespaces; i++) {
        ag_buf_append_cstr(b, i ? ",{\"binding\":" : "{\"binding\":");
        ag_json_append_string(b, ag_str_c(cfg->kv_namespaces[i].name));
        ag_buf_append_cstr(b, ",\"id\":");
        ag_json_append_string(b, ag_str_c(cfg->kv_namespaces[i].target));
        ag_buf_append_cstr(b, "}");
    }
    ag_buf_append_cstr(b, "],\"r2_buckets\":[");
    for (size_t i = 0; i < cfg->nr2_buckets; i++) {
        ag_buf_append_cstr(b, i ? ",{\"binding\":" : "{\"binding\":");
        ag_json_append_string(b, ag_str_c(cfg->r2_buckets[i].name));
        ag_buf_append_cstr(b, ",\"bucket_name\":");
        ag_json_append_string(b, ag_str_c(cfg->r2_buckets[i].target));
        ag_buf_append_cstr(b, "}");
    }
    ag_buf_append_cstr(b, "],\"ratelimits\":[");
    for (size_t i = 0; i < cfg->nratelimits; i++) {
        ag_buf_append_cstr(b, i ? ",{\"name\":" : "{\"name\":");
        ag_json_append_string(b, ag_str_c(cfg->ratelimits[i].name));
        ag_buf_printf(b, ",\"limit\":%u,\"period\":%u}", cfg->ratelimits[i].limit,
                      cfg->ratelimits[i].period_s);
    }
    ag_buf_append_cstr(b, "],\"vars\":{\"ENVIRONMENT\":");
    ag_json_append_string(b, ag_str_c(cfg->environment));
    ag_buf_append_cstr(b, ",\"DEFAULT_MODEL\":");
    ag_json_append_string(b, ag_str_c(cfg->default_model));
    ag_buf_printf(b, ",\"MAX_TOKENS\":\"%u\"}}", cfg->max_tokens);
    ag_buf_printf(b, ",\"rate_limit\":%u,\"rate_period\":%u", cfg->rate_limit, cfg->rate_period_s);
    json_strings(b, "triggers", (const char *const *)cfg->crons, cfg->ncrons);
    json_strings(b, "models", (const char *const *)cfg->models, cfg->nmodels);
    const char *tasks[64];
    size_t nt = 0;
    for (; nt < cfg->ntasks && nt < AG_ARRAY_LEN(tasks); nt++)
        tasks[nt] = cfg->tasks[nt].name;
    json_strings(b, "tasks", tasks, nt);
}

/* The errors (and warnings) a refused reload printed: one string a line. */
static void json_errors(ag_buf_t *b, const char *text)
{
    ag_buf_append_cstr(b, "{\"errors\":[");
    bool first = true;
    for (const char *p = text; p && *p;) {
        const char *nl = strchr(p, '\n');
        size_t len = nl ? (size_t)(nl - p) : strlen(p);
        if (len) {
            if (!first)
                ag_buf_append_cstr(b, ",");
            ag_json_append_string(b, ag_str(p, len));
            first = false;
        }
        p = nl ? nl + 1 : p + len;
    }
    ag_buf_append_cstr(b, "]}");
}

static double ms_since(int64_t t0)
{
    return (double)(ag_now_us() - t0) / 1000.0;
}

/* Restarts the tasks runner on cfg: the admin's task routes let go of the old
 * one first; a run in progress ends canceled (its record says so). */
static int restart_tasks(serve_t *sv, ag_config_t *cfg, FILE *errs)
{
    if (sv->admin)
        ag_admin_set_tasks(sv->admin, NULL, sv->tasks_cfg);
    ag_tasks_stop(sv->tasks);
    sv->tasks = NULL;
    ag_tasks_options_t to = {
        .cfg = cfg,
        .usage_log = ag_gateway_usage_log(sv->gw),
        .log_bucket = ag_gateway_log_bucket(sv->gw),
        .obs = ag_gateway_obs(sv->gw),
        .rates = ag_gateway_rates(sv->gw),
    };
    int rc = ag_tasks_start(&to, errs, &sv->tasks);
    if (sv->admin)
        ag_admin_set_tasks(sv->admin, sv->tasks, cfg);
    return rc;
}

static bool tls_wanted(const ag_config_t *cfg)
{
    return (cfg->tls_cert && *cfg->tls_cert) || (cfg->tls_key && *cfg->tls_key);
}

static void keep_string(char **dst, const char *running)
{
    char *copy = strdup(running ? running : "");
    if (!copy)
        return;
    free(*dst);
    *dst = copy;
}

/* A reload's TLS part, before the diff: HTTPS switched on or off needs a
 * restart (the running value is kept, and said); otherwise the files are read
 * again, whether or not their names changed (a certificate renewed in place),
 * and checked. @return 0 with *out (NULL: plain HTTP), or AG_EBADCONFIG. */
static int reload_tls(serve_t *sv, ag_config_t *nc, FILE *errs, ag_tls_ctx_t **out, bool *switched)
{
    *out = NULL;
    *switched = tls_wanted(nc) != (sv->tls != NULL);
    if (*switched) {
        keep_string(&nc->tls_cert, sv->cfg->tls_cert);
        keep_string(&nc->tls_key, sv->cfg->tls_key);
    }
    if (!tls_wanted(nc))
        return 0;
    char err[1024];
    if (ag_tls_ctx_new(nc->tls_cert, nc->tls_key, out, err, sizeof(err)) < 0) {
        fprintf(errs, "%s\n", err);
        return AG_EBADCONFIG;
    }
    return 0;
}

/* Validates the config file (`path`, else the one the server runs) with the
 * checks of `aigate config check`, then applies it: a new generation for
 * requests, the tasks runner restarted if its part changed. Refused, nothing
 * changes. The answer's JSON goes into body. @return the HTTP status. */
static int reload(serve_t *sv, const char *path, ag_buf_t *body)
{
    pthread_mutex_lock(&sv->mu);
    if (sv->stopping || !sv->gw) {
        const char *why = sv->stopping ? "the server is stopping" : "the server is starting";
        pthread_mutex_unlock(&sv->mu);
        ag_log_warn("reload refused: %s", why);
        json_errors(body, why);
        return 503;
    }
    char msg[64];
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    snprintf(msg, sizeof(msg), "RELOADING=1\nMONOTONIC_USEC=%lld",
             (long long)ts.tv_sec * 1000000 + ts.tv_nsec / 1000);
    notify(msg);
    int64_t t0 = ag_now_us();
    char *text = NULL;
    size_t textlen = 0;
    FILE *errs = open_memstream(&text, &textlen);
    ag_config_t *nc = calloc(1, sizeof(*nc));
    int rc = errs && nc ? 0 : -ENOMEM;
    opts_t o = sv->o;
    if (path)
        o.config = path;
    else if (sv->cfg->path)
        o.config = sv->cfg->path;
    if (rc == 0 && load_config_to(&o, nc, errs) != 0)
        rc = AG_EBADCONFIG;
    if (rc == 0 && ag_tasks_check(nc, errs) < 0)
        rc = AG_EBADCONFIG;
    ag_tls_ctx_t *tls = NULL;
    bool tls_switched = false;
    if (rc == 0)
        rc = reload_tls(sv, nc, errs, &tls, &tls_switched);
    const char *diff[96], *changed[97], *restart[98];
    size_t nchanged = 0, nrestart = 0;
    bool tasks_restart = false;
    if (rc == 0) {
        if (tls_switched)
            restart[nrestart++] = "tls_cert (HTTPS on or off)";
        size_t n = ag_config_diff(sv->cfg, nc, diff, AG_ARRAY_LEN(diff));
        for (size_t i = 0; i < n && i < AG_ARRAY_LEN(diff); i++) {
            if (restart_only(diff[i])) {
                restart[nrestart++] = diff[i];
                continue;
            }
            changed[nchanged++] = diff[i];
            tasks_restart =
                tasks_restart || (task_input(diff[i]) && (sv->cfg->ntasks > 0 || nc->ntasks > 0));
        }
        /* The usage log keeps the bucket it opened. */
        const char *was = ag_config_r2_bucket(sv->cfg, sv->cfg->usage_log_binding);
        const char *now = ag_config_r2_bucket(nc, sv->cfg->usage_log_binding);
        if ((was == NULL) != (now == NULL) || (was && strcmp(was, now) != 0))
            restart[nrestart++] = "r2_buckets (the usage log's bucket)";
        ag_config_keep_restart(nc, sv->cfg);
        /* The same file names with a new certificate in them is a change too. */
        char was_fp[65] = "", now_fp[65] = "";
        if (sv->tls && tls) {
            ag_tls_ctx_fingerprint(sv->tls, was_fp);
            ag_tls_ctx_fingerprint(tls, now_fp);
        }
        bool listed = false;
        for (size_t i = 0; i < nchanged; i++)
            listed = listed || strcmp(changed[i], "tls_cert") == 0;
        if (!listed && strcmp(was_fp, now_fp) != 0)
            changed[nchanged++] = "tls_cert";
    }
    double validate_ms = ms_since(t0);
    int64_t t1 = ag_now_us();
    int gen = rc == 0 ? ag_gateway_apply(sv->gw, nc, errs) : rc;
    if (gen < 0 && rc == 0)
        rc = gen;
    const char *tasks_state = "unchanged";
    if (rc == 0 && tls) {
        /* New connections get the new certificate; open ones keep theirs. */
        if (sv->srv)
            ag_server_set_tls(sv->srv, tls);
        if (sv->admin && sv->cfg->admin_tls)
            ag_admin_set_tls(sv->admin, tls);
        ag_tls_ctx_unref(sv->tls);
        sv->tls = tls;
        tls = NULL;
    }
    ag_tls_ctx_unref(tls); /* refused: the context built for it */
    if (rc == 0 && tasks_restart) {
        /* The generation is out already: a runner that cannot start is said,
         * not undone (its checks passed above, so only resources fail here). */
        tasks_state = restart_tasks(sv, nc, errs) == 0 ? "restarted" : "failed";
    }
    double apply_ms = ms_since(t1);
    if (errs)
        fclose(errs);
    if (text && *text)
        fputs(text, stderr);
    if (rc < 0) {
        json_errors(body, text && *text ? text : ag_strerror(rc));
        ag_log_warn("reload refused: the configuration is unchanged (generation %u)",
                    ag_gateway_generation(sv->gw));
        config_free(nc);
    } else {
        ag_buf_printf(body, "{\"generation\":%d", gen);
        json_strings(body, "changed", changed, nchanged);
        json_strings(body, "restart", restart, nrestart);
        ag_buf_append_cstr(body, ",\"config\":");
        ag_json_append_string(body, ag_str_c(nc->path ? nc->path : "(embedded defaults)"));
        ag_buf_printf(body,
                      ",\"tasks_runner\":\"%s\",\"validate_ms\":%.3f,\"apply_ms\":%.3f,\"pid\":%d",
                      tasks_state, validate_ms, apply_ms, (int)getpid());
        json_summary(body, nc);
        ag_buf_append_cstr(body, "}");
        char list[512] = "", rlist[512] = "";
        for (size_t i = 0; i < nchanged; i++)
            snprintf(list + strlen(list), sizeof(list) - strlen(list), "%s%s", i ? ", " : "",
                     changed[i]);
        for (size_t i = 0; i < nrestart; i++)
            snprintf(rlist + strlen(rlist), sizeof(rlist) - strlen(rlist), "%s%s", i ? ", " : "",
                     restart[i]);
        ag_log_info("reload: generation %d applied in %.1f ms (changed: %s; scheduled tasks %s)",
                    gen, validate_ms + apply_ms, nchanged ? list : "nothing", tasks_state);
        if (nrestart)
            ag_log_warn("reload: not applied, needs a restart (or --upgrade): %s", rlist);
        /* The old config goes once nothing borrows it. */
        ag_config_t *old = sv->cfg;
        sv->cfg = nc;
        if (tasks_restart) {
            if (sv->tasks_cfg != old)
                config_free(sv->tasks_cfg);
            sv->tasks_cfg = nc;
        }
        if (old != sv->tasks_cfg)
            config_free(old);
    }
    free(text);
    ag_metrics_config_reload(ag_obs_metrics(ag_gateway_obs(sv->gw)), rc == 0);
    notify("READY=1");
    pthread_mutex_unlock(&sv->mu);
    return rc == 0 ? 200 : rc == AG_EBADCONFIG ? 400 : 500;
}

static int admin_reload(void *ctx, const char *path, ag_buf_t *body)
{
    return reload(ctx, path, body);
}

/* ---- binary upgrade: `aigate deploy --upgrade`, POST /upgrade, SIGUSR2 ---------------- */

#define UPGRADE_READY_MS 60000 /* the new process opens its stores in this */

static int saved_argc;
static char **saved_argv;
static char self_exe[4096]; /* the running binary's path, as it was at start */

/* DATA_DIR/aigate.upgrade: the last upgrade's answer, for `aigate deploy
 * --upgrade` through SIGUSR2 (no admin listener to answer it). */
static void upgrade_answer_write(const serve_t *sv, const ag_buf_t *body)
{
    char path[1100], tmp[1200];
    snprintf(path, sizeof(path), "%s/aigate.upgrade", sv->data_dir);
    snprintf(tmp, sizeof(tmp), "%s.%d", path, (int)getpid());
    FILE *f = fopen(tmp, "w");
    if (!f)
        return;
    fwrite(body->data ? body->data : "", 1, body->len, f);
    fputc('\n', f);
    if (fclose(f) != 0 || rename(tmp, path) < 0)
        unlink(tmp);
}

/* The old process, once the new one serves: it stops accepting and drains as
 * on SIGTERM, its scheduled tasks stop (the new one runs them), and the
 * service manager learns the new main pid. Under sv->mu. */
static void upgrade_handed_over(serve_t *sv, pid_t child)
{
    sv->stopping = true;
    char msg[64];
    snprintf(msg, sizeof(msg), "MAINPID=%d\nREADY=1", (int)child);
    notify(msg);
    if (sv->admin) {
        ag_admin_set_state(sv->admin, AG_ADMIN_DRAINING);
        /* The new one answers on the admin listener now; open admin
         * connections (this upgrade's answer among them) end after an answer. */
        ag_admin_shutdown(sv->admin);
        ag_admin_set_tasks(sv->admin, NULL, sv->tasks_cfg);
    }
    ag_tasks_stop(sv->tasks);
    sv->tasks = NULL;
    if (running_server)
        ag_server_handover(running_server);
}

/* Execs `binary` (NULL: the running one's path) with the listeners inherited
 * and the config at `path` (NULL: the server's own file); once it is ready,
 * this process drains. It fails to start: nothing changes here and the answer
 * says why. The answer's JSON goes into body. @return the HTTP status. */
static int upgrade(serve_t *sv, const char *binary, const char *path, ag_buf_t *body)
{
    pthread_mutex_lock(&sv->mu);
    int status = 200;
    char why[4500] = "";
    const char *bin = binary && *binary ? binary : self_exe;
    if (sv->stopping || !sv->gw || !running_server) {
        status = 503;
        snprintf(why, sizeof(why), "%s",
                 sv->stopping ? "the server is stopping" : "the server is starting");
    } else if (!bin[0]) {
        status = 500;
        snprintf(why, sizeof(why), "cannot tell which binary runs (no /proc/self/exe): give one");
    } else if (access(bin, X_OK) < 0) {
        status = 400;
        snprintf(why, sizeof(why), "cannot run %.1024s: %s", bin, strerror(errno));
    }
    const char *cfg_path = path && *path ? path : sv->cfg ? sv->cfg->path : NULL;
    ag_upgrade_result_t res = {.pid = -1};
    if (status == 200) {
        ag_log_info("upgrade: starting %s with the listeners handed over", bin);
        int listen[AG_UPGRADE_MAX_FDS], admin_fds[8];
        unsigned nl = ag_server_listen_fds(running_server, listen, AG_UPGRADE_MAX_FDS - 8);
        unsigned na = sv->admin ? ag_admin_listen_fds(sv->admin, admin_fds, 8) : 0;
        /* The command line as it was, the config file as it is now (the last
         * --config wins); argv[0] is the new binary. */
        char **argv = calloc((size_t)saved_argc + 3, sizeof(*argv));
        char *cfg_flag = NULL;
        if (!argv || (cfg_path && asprintf(&cfg_flag, "--config=%s", cfg_path) < 0)) {
            status = 500;
            snprintf(why, sizeof(why), "out of memory");
        } else {
            int n = 0;
            argv[n++] = (char *)bin;
            for (int i = 1; i < saved_argc; i++)
                argv[n++] = saved_argv[i];
            if (cfg_flag)
                argv[n++] = cfg_flag;
            argv[n] = NULL;
            ag_upgrade_spawn_t sp = {
                .binary = bin,
                .argv = argv,
                .listen = listen,
                .nlisten = nl,
                .admin = admin_fds,
                .nadmin = na,
                .lock_fd = ag_server_lock_fd(running_server),
                .ready_timeout_ms = UPGRADE_READY_MS,
            };
            if (ag_upgrade_spawn(&sp, &res) < 0) {
                status = 500;
                snprintf(why, sizeof(why), "the new binary did not start: %s", res.why);
            }
        }
        free(cfg_flag);
        free(argv);
    }
    if (status == 200) {
        ag_buf_printf(body, "{\"upgraded\":true,\"pid\":%d,\"old_pid\":%d,\"ready_ms\":%.3f",
                      (int)res.pid, (int)getpid(), res.ready_ms);
        ag_buf_append_cstr(body, ",\"binary\":");
        ag_json_append_string(body, ag_str_c(bin));
        ag_buf_append_cstr(body, ",\"config\":");
        ag_json_append_string(body, ag_str_c(cfg_path ? cfg_path : "(embedded defaults)"));
        ag_buf_append_cstr(body, "}");
        ag_log_info("upgrade: pid %d serves (ready in %.0f ms); this one (pid %d) drains",
                    (int)res.pid, res.ready_ms, (int)getpid());
        upgrade_handed_over(sv, res.pid);
    } else {
        ag_log_warn("upgrade refused: %s; this process (pid %d) keeps serving", why, (int)getpid());
        json_errors(body, why);
    }
    if (sv->data_dir[0])
        upgrade_answer_write(sv, body);
    pthread_mutex_unlock(&sv->mu);
    return status;
}

static int admin_upgrade(void *ctx, const char *binary, const char *path, ag_buf_t *body)
{
    return upgrade(ctx, binary, path, body);
}

/* SIGUSR2: the upgrade off the signal loop (it blocks until the new one is
 * ready), one at a time. */
static uv_work_t sigusr2_work;
static bool sigusr2_busy;

static void sigusr2_run(uv_work_t *w)
{
    AG_UNUSED(w);
    ag_buf_t b;
    ag_buf_init(&b, 0);
    upgrade(&serving, NULL, NULL, &b); /* the log and DATA_DIR/aigate.upgrade say how it went */
    ag_buf_fini(&b);
}

static void sigusr2_done(uv_work_t *w, int status)
{
    AG_UNUSED(w);
    AG_UNUSED(status);
    sigusr2_busy = false;
}

/* The drain began: no reload starts after this. */
static void stop_reloads(serve_t *sv)
{
    pthread_mutex_lock(&sv->mu);
    sv->stopping = true;
    pthread_mutex_unlock(&sv->mu);
}

/* ---- the pid file: how `aigate deploy` finds the server ----------------------------- */

static char pid_path[4096];

/* DATA_DIR/aigate.pid: the pid, then the admin listener's URL (none: SIGHUP only). */
static void pid_file_write(const char *data_dir, const char *admin_host, int admin_port,
                           bool admin_tls)
{
    if (snprintf(pid_path, sizeof(pid_path), "%s/aigate.pid", data_dir) >= (int)sizeof(pid_path)) {
        pid_path[0] = '\0';
        return;
    }
    char tmp[4200];
    snprintf(tmp, sizeof(tmp), "%s.%d", pid_path, (int)getpid());
    FILE *f = fopen(tmp, "w");
    if (!f) {
        ag_log_warn("cannot write %s: %s (aigate deploy needs --admin URL)", pid_path,
                    strerror(errno));
        pid_path[0] = '\0';
        return;
    }
    fprintf(f, "%d\n", (int)getpid());
    if (admin_host) {
        /* A wildcard address is reached on loopback. */
        const char *h = strcmp(admin_host, "0.0.0.0") == 0 ? "127.0.0.1"
                        : strcmp(admin_host, "::") == 0    ? "::1"
                                                           : admin_host;
        bool v6 = strchr(h, ':') != NULL;
        fprintf(f, "%s://%s%s%s:%d\n", admin_tls ? "https" : "http", v6 ? "[" : "", h,
                v6 ? "]" : "", admin_port);
    }
    if (fclose(f) != 0 || rename(tmp, pid_path) < 0) {
        ag_log_warn("cannot write %s: %s", pid_path, strerror(errno));
        unlink(tmp);
        pid_path[0] = '\0';
    }
}

/* Removed only while it still names this process (another may have taken the folder). */
static void pid_file_remove(void)
{
    if (!pid_path[0])
        return;
    FILE *f = fopen(pid_path, "r");
    int pid = 0;
    if (f) {
        if (fscanf(f, "%d", &pid) != 1)
            pid = 0;
        fclose(f);
    }
    if (pid == (int)getpid())
        unlink(pid_path);
    pid_path[0] = '\0';
}

/* Signals are handled for the whole life of the serve loop, the final flush
 * included: a default action would end the process with usage entries of
 * answered requests still unwritten. The first SIGTERM/SIGINT drains; a
 * second cuts the drain short (what is cut is logged, and reported, so it
 * still gets its usage entry); SIGHUP does not stop anything. */
static void on_signal(uv_signal_t *s, int signum)
{
    const char *name = signum == SIGTERM ? "SIGTERM" : signum == SIGINT ? "SIGINT" : "SIGHUP";
    if (signum == SIGUSR2) {
        if (sigusr2_busy) {
            ag_log_warn("received SIGUSR2: an upgrade is under way already");
            return;
        }
        ag_log_info("received SIGUSR2: upgrading the binary");
        sigusr2_busy = uv_queue_work(s->loop, &sigusr2_work, sigusr2_run, sigusr2_done) == 0;
        return;
    }
    if (signum == SIGHUP) {
        ag_log_info("received SIGHUP: reloading the configuration");
        ag_buf_t b;
        ag_buf_init(&b, 0);
        reload(&serving, NULL, &b); /* the log says how it went */
        ag_buf_fini(&b);
        return;
    }
    if (!running_server) {
        ag_log_warn("received %s: already stopping; the usage log is being flushed", name);
        return;
    }
    if (stop_signals++ == 0) {
        ag_log_info("received %s: draining (another %s cuts the drain short)", name, name);
        stop_reloads(&serving);
        notify("STOPPING=1");
        if (running_admin)
            ag_admin_set_state(running_admin, AG_ADMIN_DRAINING);
        ag_server_shutdown(running_server);
        return;
    }
    ag_log_warn("received %s again: cutting the drain short; requests still in flight are "
                "closed and logged as aborted; the usage log is still flushed",
                name);
    ag_server_cut(running_server);
}

/* The serve loop's way to learn that the workers stopped: a thread joins
 * them, then wakes the loop, which keeps the signal handlers meanwhile. */
typedef struct stop_watch {
    ag_server_t *srv;
    uv_async_t done;
    uv_thread_t thread;
} stop_watch_t;

static void stop_watch_main(void *arg)
{
    stop_watch_t *sw = arg;
    ag_server_wait(sw->srv);
    uv_async_send(&sw->done);
}

static void on_stopped(uv_async_t *a)
{
    uv_stop(a->loop);
}

/* Peers whose connections max_connections_per_client does not count: the
 * proxies every client arrives through (the forwarded address is not known
 * when the connection is accepted). */
typedef struct exempt {
    ag_trusted_t *proxies, *cf;
} exempt_t;

static bool client_exempt(void *ctx, const char *peer)
{
    const exempt_t *e = ctx;
    return ag_trusted_contains(e->proxies, ag_str_c(peer)) ||
           ag_trusted_contains(e->cf, ag_str_c(peer));
}

/* The listen locks' folder, one per user (the kernel lets only one user's
 * sockets share a port through SO_REUSEPORT): $XDG_RUNTIME_DIR/aigate, else
 * /tmp/aigate-UID. NULL when it cannot be made safely (then only the probe). */
static const char *lock_dir(char *buf, size_t len)
{
    const char *run = getenv("XDG_RUNTIME_DIR");
    if (run && *run)
        snprintf(buf, len, "%s/aigate", run);
    else
        snprintf(buf, len, "/tmp/aigate-%u", (unsigned)getuid());
    mkdir(buf, 0700);
    struct stat st;
    if (lstat(buf, &st) < 0 || !S_ISDIR(st.st_mode) || st.st_uid != getuid() || (st.st_mode & 0022))
        return NULL;
    return buf;
}

static int run_server(int argc, char **argv, bool dev)
{
    opts_t o = {0};
    o.dev = dev;
    int rc = parse_opts(argc, argv, &o, dev ? "dev" : "serve");
    if (rc)
        return rc < 0 ? 0 : rc;
    /* A binary upgrade's new process: the old one's sockets, taken before
     * any thread starts (it edits the environment). */
    ag_upgrade_handover_t ho;
    if (ag_upgrade_handover_take(&ho) < 0)
        return 1;
    ssize_t xl = readlink("/proc/self/exe", self_exe, sizeof(self_exe) - 1);
    self_exe[xl > 0 ? xl : 0] = '\0';
    ag_config_t *cfg = calloc(1, sizeof(*cfg));
    if (!cfg) {
        ag_upgrade_handover_fini(&ho);
        return 1;
    }
    rc = load_config(&o, cfg);
    if (rc) {
        ag_upgrade_handover_fini(&ho);
        config_free(cfg);
        return rc;
    }
    /* The admin listener's token, and the rule that guards it: off loopback,
     * no token means no start, before anything is bound. */
    char *admin_token = NULL;
    char admin_host[256] = "";
    int admin_port = 0;
    if (cfg->admin_listen && *cfg->admin_listen) {
        if (ag_admin_parse_listen(cfg->admin_listen, admin_host, sizeof(admin_host), &admin_port) <
            0) {
            fprintf(stderr, "aigate: admin_listen = \"%s\" is not host:port\n", cfg->admin_listen);
            config_free(cfg);
            return 1;
        }
        ag_secrets_resolve(cfg->data_dir, cfg->admin_token_secret, &admin_token);
        if (!admin_token && !ag_admin_is_loopback(admin_host)) {
            fprintf(stderr,
                    "aigate: admin_listen = \"%s\" is not a loopback address and no admin token "
                    "is set: set the secret %s (aigate secret put %s), or listen on 127.0.0.1\n",
                    cfg->admin_listen, cfg->admin_token_secret, cfg->admin_token_secret);
            config_free(cfg);
            return 1;
        }
    }
    /* HTTPS: the certificate and key are read and checked before anything is
     * bound, so a bad one stops the start with a line that names the file. */
    ag_tls_ctx_t *tls = NULL;
    if (tls_wanted(cfg)) {
        char err[1024];
        if (ag_tls_ctx_new(cfg->tls_cert, cfg->tls_key, &tls, err, sizeof(err)) < 0) {
            fprintf(stderr, "aigate: %s\n", err);
            ag_secrets_value_free(admin_token);
            config_free(cfg);
            return 1;
        }
    } else if (cfg->admin_tls) {
        fprintf(stderr, "aigate: admin_tls = true needs tls_cert and tls_key\n");
        ag_secrets_value_free(admin_token);
        config_free(cfg);
        return 1;
    }
    signal(SIGPIPE, SIG_IGN);
    /* Every connection is a descriptor: take all the hard limit allows (nginx's
     * worker_rlimit_nofile), so max_connections, not a 1024 default, is the cap. */
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    ag_upstream_set_native(cfg->upstream_client == 0);
    char ca_err[320];
    if (ag_upstream_set_ca_file(cfg->upstream_ca_file, ca_err, sizeof(ca_err)) < 0) {
        fprintf(stderr, "aigate: %s\n", ca_err);
        ag_secrets_value_free(admin_token);
        ag_tls_ctx_unref(tls);
        config_free(cfg);
        return 1;
    }
    rc = ag_upstream_global_init();
    if (rc < 0) {
        fprintf(stderr, "aigate: cannot initialise the HTTP client (libcurl): %s\n",
                ag_strerror(rc));
        ag_secrets_value_free(admin_token);
        ag_tls_ctx_unref(tls);
        config_free(cfg);
        return 1;
    }
    ag_upstream_warm_tls(cfg->upstream);
    ag_gateway_t *gw = NULL;
    /* The old process's budget reservations are live, not a crash's leftovers. */
    ag_gateway_set_handover(ho.active);
    rc = ag_gateway_new(cfg, stderr, &gw);
    ag_server_limits_t limits = {
        .max_header_bytes = cfg->max_header_bytes,
        .max_body_bytes = cfg->max_body_bytes,
        .max_connections = cfg->max_connections,
        .header_timeout_ms = cfg->header_timeout_ms,
        .idle_timeout_ms = cfg->idle_timeout_ms,
        .body_timeout_ms = cfg->body_timeout_ms,
        .body_deadline_ms = cfg->body_deadline_ms,
        .body_min_rate = cfg->body_min_rate,
        .send_timeout_ms = cfg->send_timeout_ms,
        .max_queued_bytes = cfg->max_queued_bytes,
        .max_connections_per_client = cfg->max_connections_per_client,
        .ipv6_prefix = cfg->ipv6_prefix,
        .drain_timeout_ms = cfg->drain_timeout_ms,
    };
    /* The config loaded, so these parse (the gateway refused it otherwise). */
    exempt_t exempt = {0};
    if (rc == 0 && (ag_trusted_new(cfg->trusted_proxies, &exempt.proxies, NULL) < 0 ||
                    ag_trusted_new(cfg->trusted_proxies_cf, &exempt.cf, NULL) < 0))
        rc = -ENOMEM;
    ag_tasks_t *tasks = NULL;
    if (rc == 0) {
        ag_tasks_options_t to = {
            .cfg = cfg,
            .usage_log = ag_gateway_usage_log(gw),
            .log_bucket = ag_gateway_log_bucket(gw),
            .obs = ag_gateway_obs(gw),
            .rates = ag_gateway_rates(gw),
        };
        rc = ag_tasks_start(&to, stderr, &tasks);
        if (rc == 0 && tasks)
            ag_log_info("%zu scheduled task%s", cfg->ntasks, cfg->ntasks == 1 ? "" : "s");
    }
    ag_admin_t *admin = NULL;
    if (rc == 0 && admin_host[0]) {
        if (admin_token)
            ag_tail_add_secret(ag_obs_tail(ag_gateway_obs(gw)), admin_token);
        ag_admin_options_t ao = {
            .listen = cfg->admin_listen,
            .token = admin_token,
            .limits = limits,
            .obs = ag_gateway_obs(gw),
            .usage_log = ag_gateway_usage_log(gw),
            .log_bucket = ag_gateway_log_bucket(gw),
            .tasks = tasks,
            .gateway = gw,
            .cfg = cfg,
            .reload = admin_reload,
            .upgrade = admin_upgrade,
            .reload_ctx = &serving,
            .tls = cfg->admin_tls ? tls : NULL,
            .inherit_fds = ho.admin,
            .ninherit = ho.nadmin,
        };
        ho.nadmin = 0; /* the admin listener's now, failed or not */
        rc = ag_admin_start(&ao, &admin);
        if (rc < 0)
            fprintf(stderr,
                    "aigate: cannot listen on admin_listen = \"%s\": %s (set another port, or "
                    "admin_listen = \"\" to turn it off)\n",
                    cfg->admin_listen, ag_strerror(rc));
        else
            ag_log_info("admin listening on %s:%d", admin_host, ag_admin_port(admin));
    }
    ag_secrets_value_free(admin_token);
    /* An admin listener the new config no longer has: not left listening unserved. */
    for (unsigned i = 0; i < ho.nadmin; i++)
        close(ho.admin[i]);
    ho.nadmin = 0;
    ag_server_t *srv = NULL;
    if (rc == 0) {
        char lockbuf[4096];
        int holder = 0;
        ag_server_options_t so = {
            .host = cfg->host,
            .port = cfg->port,
            .threads = cfg->threads,
            .limits = limits,
            .hooks = ag_gateway_hooks(gw),
            .default_headers = ag_gateway_default_headers(gw),
            .client_exempt = client_exempt,
            .client_exempt_ctx = &exempt,
            .lock_dir = lock_dir(lockbuf, sizeof(lockbuf)),
            .holder_pid = &holder,
            .tls = tls,
            .inherit_fds = ho.listen,
            .ninherit = ho.nlisten,
            .inherit_lock_fd = ho.lock_fd,
        };
        ho.nlisten = 0; /* the server's now, failed or not */
        ho.lock_fd = -1;
        rc = ag_server_start(&so, &srv);
        if (rc == -EADDRINUSE && holder > 0)
            fprintf(stderr,
                    "aigate: cannot listen on %s:%d: address in use by another aigate (pid %d)\n",
                    cfg->host, cfg->port, holder);
        else if (rc == -EADDRINUSE)
            fprintf(stderr, "aigate: cannot listen on %s:%d: address in use by another process\n",
                    cfg->host, cfg->port);
        else if (rc < 0)
            fprintf(stderr, "aigate: cannot listen on %s:%d: %s\n", cfg->host, cfg->port,
                    ag_strerror(rc));
    }
    if (rc == 0) {
        /* What the start-up line and the pid file say, copied first: once the
         * config is published below, a reload may free it on another thread. */
        char upstream[512], host[256], cfg_path[1024], data_dir[1024];
        ag_config_redact_url(cfg->upstream, upstream, sizeof(upstream));
        snprintf(host, sizeof(host), "%s", cfg->host);
        snprintf(cfg_path, sizeof(cfg_path), "%s", cfg->path ? cfg->path : "(embedded defaults)");
        snprintf(data_dir, sizeof(data_dir), "%s", cfg->data_dir);
        unsigned threads = cfg->threads;
        bool admin_tls = cfg->admin_tls;
        pthread_mutex_lock(&serving.mu);
        serving.o = o;
        serving.stopping = false;
        serving.cfg = cfg;
        serving.tasks_cfg = cfg;
        serving.gw = gw;
        serving.tasks = tasks;
        serving.admin = admin;
        serving.srv = srv;
        serving.tls = tls; /* a reload replaces it */
        tls = NULL;
        snprintf(serving.data_dir, sizeof(serving.data_dir), "%s", data_dir);
        /* Under the lock: POST /upgrade reads it on a thread-pool thread. */
        running_server = srv;
        running_admin = admin;
        pthread_mutex_unlock(&serving.mu);
        if (admin) {
            ag_admin_set_server(admin, srv);
            ag_admin_set_state(admin, AG_ADMIN_READY);
        }
        uv_loop_t loop;
        uv_loop_init(&loop);
        uv_signal_t sigs[4];
        static const int signums[4] = {SIGTERM, SIGINT, SIGHUP, SIGUSR2};
        for (int i = 0; i < 4; i++) {
            uv_signal_init(&loop, &sigs[i]);
            uv_signal_start(&sigs[i], on_signal, signums[i]);
        }
        stop_watch_t watch = {.srv = srv};
        uv_async_init(&loop, &watch.done, on_stopped);
        if (uv_thread_create(&watch.thread, stop_watch_main, &watch) < 0) {
            ag_log_error("cannot start the stop watcher thread; stopping");
            ag_server_shutdown(srv);
            ag_server_wait(srv);
            uv_async_send(&watch.done);
            watch.srv = NULL;
        }
        /* Before the line tests and scripts wait for, so `aigate deploy` finds it. */
        pid_file_write(data_dir, admin ? admin_host : NULL, admin ? ag_admin_port(admin) : 0,
                       admin_tls);
        /* A binary upgrade's new process: listening, the stores open, the
         * pid file ours; the old one may drain now. */
        if (ho.active)
            ag_log_info("upgrade: taking over from pid %d", ho.old_pid);
        ag_upgrade_handover_ready(&ho);
        /* Only now: a SIGTERM right after this line must find its handler. */
        ag_log_info("aigate %s (%s): listening on %s:%d, %u thread%s, upstream %s, config %s",
                    AG_VERSION, dev ? "dev" : "serve", host, ag_server_port(srv), threads,
                    threads == 1 ? "" : "s", upstream, cfg_path);
        notify("READY=1");
        uv_run(&loop, UV_RUN_DEFAULT); /* until the workers stopped (the drain) */
        /* No reload is running past this (the drain refused new ones), and
         * what they replaced is serving's now. */
        stop_reloads(&serving);
        pthread_mutex_lock(&serving.mu);
        cfg = serving.cfg;
        tasks = serving.tasks;
        serving.srv = NULL;
        tls = serving.tls;
        serving.tls = NULL;
        pthread_mutex_unlock(&serving.mu);
        pid_file_remove();
        if (watch.srv)
            uv_thread_join(&watch.thread);
        pthread_mutex_lock(&serving.mu);
        running_server = NULL;
        pthread_mutex_unlock(&serving.mu);
        if (admin)
            ag_admin_set_server(admin, NULL);
        ag_server_free(srv);
        ag_log_info("stopped");
        /* The admin listener outlives the clients' one, so readiness says draining. */
        if (admin) {
            ag_admin_shutdown(admin);
            ag_admin_wait_and_free(admin);
        }
        running_admin = NULL;
        admin = NULL;
        /* After the admin listener, which starts runs; before the usage log closes. */
        ag_tasks_stop(tasks);
        tasks = NULL;
        ag_gateway_free(gw); /* flushes the usage log, the handlers still installed */
        gw = NULL;
        for (int i = 0; i < 4; i++)
            uv_close((uv_handle_t *)&sigs[i], NULL);
        uv_close((uv_handle_t *)&watch.done, NULL);
        uv_run(&loop, UV_RUN_DEFAULT);
        uv_loop_close(&loop);
    }
    if (admin) {
        ag_admin_shutdown(admin);
        ag_admin_wait_and_free(admin);
    }
    running_admin = NULL;
    ag_tasks_stop(tasks);
    ag_gateway_free(gw);
    ag_trusted_free(exempt.proxies);
    ag_trusted_free(exempt.cf);
    if (serving.tasks_cfg != cfg)
        config_free(serving.tasks_cfg);
    serving.cfg = serving.tasks_cfg = NULL;
    serving.gw = NULL;
    serving.tasks = NULL;
    serving.admin = NULL;
    ag_tls_ctx_unref(tls); /* the servers that used it are gone */
    config_free(cfg);
    ag_upstream_global_cleanup();
    for (unsigned i = 0; i < ho.nlisten; i++)
        close(ho.listen[i]);
    for (unsigned i = 0; i < ho.nadmin; i++)
        close(ho.admin[i]);
    if (ho.lock_fd >= 0)
        close(ho.lock_fd);
    ag_upgrade_handover_fini(&ho);
    return rc == 0 ? 0 : 1;
}

static int cmd_dev(int argc, char **argv)
{
    return run_server(argc, argv, true);
}

static int cmd_serve(int argc, char **argv)
{
    return run_server(argc, argv, false);
}

static const char config_usage[] =
    "usage: aigate config check [options]   validate the configuration and exit\n"
    "       aigate config reference         print the [aigate] key reference (Markdown)\n";

static int cmd_config(int argc, char **argv)
{
    if (argc < 1) {
        fputs(config_usage, stderr);
        return 2;
    }
    if (is_help_flag(argv[0]) || strcmp(argv[0], "help") == 0) {
        fputs(config_usage, stdout);
        return 0;
    }
    if (strcmp(argv[0], "reference") == 0) {
        if (argc > 1 && is_help_flag(argv[1])) {
            puts("usage: aigate config reference\n"
                 "Prints the reference of every [aigate] key as Markdown (docs/config.md).");
            return 0;
        }
        if (argc > 1) {
            fprintf(stderr, "aigate config reference: unknown option '%s'\n", argv[1]);
            return 2;
        }
        ag_config_print_reference(stdout);
        return 0;
    }
    if (strcmp(argv[0], "check") != 0) {
        fprintf(stderr, "aigate: unknown config command '%s'\n%s", argv[0], config_usage);
        return 2;
    }
    opts_t o = {0};
    int rc = parse_opts(argc - 1, argv + 1, &o, "config check");
    if (rc)
        return rc < 0 ? 0 : rc;
    ag_config_t cfg;
    rc = load_config(&o, &cfg);
    /* The same checks the server makes before it serves (routes, proxies). */
    if (rc == 0 && ag_gateway_check_config(&cfg, stderr) < 0)
        rc = 1;
    if (rc == 0 && ag_tasks_check(&cfg, stderr) < 0)
        rc = 1;
    if (rc == 0)
        printf("%s: ok\n", cfg.path ? cfg.path : "(embedded defaults)");
    ag_config_fini(&cfg);
    return rc;
}

static int cmd_help(int argc, char **argv)
{
    AG_UNUSED(argc);
    AG_UNUSED(argv);
    usage(stdout);
    return 0;
}

static int cmd_version(int argc, char **argv)
{
    if (argc > 0 && is_help_flag(argv[0])) {
        puts("usage: aigate version\nPrints the version.");
        return 0;
    }
    if (argc > 0) {
        fprintf(stderr, "aigate version: unknown option '%s'\n", argv[0]);
        return 2;
    }
    printf("aigate %s\n", AG_VERSION);
    return 0;
}

static const struct ag_cmd {
    const char *name;
    int (*fn)(int, char **);
} cmds[] = {
    {"--help", cmd_help},   {"--version", cmd_version}, {"-h", cmd_help},   {"config", cmd_config},
    {"dev", cmd_dev},       {"help", cmd_help},         {"kv", cmd_kv},     {"r2", cmd_r2},
    {"secret", cmd_secret}, {"serve", cmd_serve},       {"cron", cmd_cron}, {"stats", cmd_stats},
    {"tail", cmd_tail},     {"version", cmd_version},   {"keys", cmd_keys}, {"init", cmd_init},
    {"deploy", cmd_deploy},
};

int main(int argc, char **argv)
{
    saved_argc = argc;
    saved_argv = argv;
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    for (size_t i = 0; i < AG_ARRAY_LEN(cmds); i++) {
        if (strcmp(argv[1], cmds[i].name) == 0)
            return cmds[i].fn(argc - 2, argv + 2);
    }
    fprintf(stderr, "aigate: unknown command '%s' (see 'aigate help')\n", argv[1]);
    return 2;
}
