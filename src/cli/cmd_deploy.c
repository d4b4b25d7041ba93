/* SPDX-License-Identifier: MIT
 *
 * cmd_deploy.c: `aigate deploy`: validates the config here, then has the
 * running server apply it (POST /reload on its admin listener, found through
 * DATA_DIR/aigate.pid or --admin; SIGHUP when it has no admin listener), and
 * prints what changed as `wrangler deploy` does. With --upgrade, the binary
 * upgrade the same ways (POST /upgrade; SIGUSR2 and DATA_DIR/aigate.upgrade).
 */
#include "util/platform.h"

#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <jansson.h>

#include "cli/cli.h"
#include "config/config.h"
#include "store/secrets.h"
#include "store/secrets_resolve.h"
#include "tasks/tasks.h"
#include "util/buf.h"
#include "util/errors.h"
#include "util/log.h"

static const char deploy_usage[] =
    "usage: aigate deploy [--config FILE] [--admin URL] [--upgrade [--binary PATH]]\n"
    "Validates the configuration (the checks of `aigate config check`), then applies it to\n"
    "the running server with no dropped request: a new generation for new requests, the\n"
    "old one for those in flight; rate-limit counts, the cache and open connections stay.\n"
    "With --config FILE, FILE becomes the server's config file. Prints what changed; keys\n"
    "that only a restart applies are named and left as they are. Exits 1 when the config\n"
    "is refused (errors as file:line:col), and nothing changes then.\n"
    "The server is found through DATA_DIR/aigate.pid (written by aigate serve/dev), or\n"
    "--admin URL (its admin listener; the token is the secret AIGATE_ADMIN_TOKEN).\n"
    "With --upgrade, the running binary is replaced the same way: the new one (--binary\n"
    "PATH, else the running one's path as it is on disk now) starts with the listening\n"
    "sockets inherited and every key of the config applied (listen address and threads\n"
    "too); once it serves, the old one stops accepting, drains and exits. When the new\n"
    "one does not start, the old one keeps serving and this exits 1 with its reason.\n"
    "Without an admin listener, --upgrade sends SIGUSR2 (the server's own config file).\n"
    "common options: --config FILE  --data-dir DIR  --help\n";

#define RELOAD_TIMEOUT_MS 120000L /* a tasks runner restart waits for runs to end */
#define UPGRADE_WAIT_MS 150000L   /* the server waits 60 s for the new one, then stops it */

static size_t on_body(char *p, size_t size, size_t n, void *ctx)
{
    return ag_buf_append(ctx, p, size * n) == 0 ? size * n : 0;
}

/* Reads DATA_DIR/aigate.pid: the pid and, when the server has one, its admin URL. */
static int read_pid_file(const char *data_dir, int *pid, char *url, size_t cap)
{
    char path[PATH_MAX];
    snprintf(path, sizeof(path), "%s/aigate.pid", data_dir);
    FILE *f = fopen(path, "r");
    if (!f)
        return ag__cli_fail("no running server found: %s does not exist (start one with aigate "
                            "serve, or give --admin URL)",
                            path);
    url[0] = '\0';
    int ok = fscanf(f, "%d", pid) == 1 && *pid > 0;
    if (ok && fscanf(f, " %1023s", url) != 1)
        url[0] = '\0';
    fclose(f);
    if (!ok)
        return ag__cli_fail("%s does not hold a pid", path);
    AG_UNUSED(cap);
    if (kill(*pid, 0) < 0 && errno == ESRCH)
        return ag__cli_fail("no running server found: %s names pid %d, which is gone", path, *pid);
    return 0;
}

static void print_list(const char *title, json_t *arr)
{
    if (!json_is_array(arr) || json_array_size(arr) == 0)
        return;
    printf("%s\n", title);
    size_t i;
    json_t *v;
    json_array_foreach(arr, i, v)
    {
        if (json_is_string(v))
            printf("  %s\n", json_string_value(v));
    }
}

static void print_joined(const char *title, json_t *arr, const char *none)
{
    printf("%s", title);
    if (!json_is_array(arr) || json_array_size(arr) == 0) {
        printf("%s\n", none);
        return;
    }
    size_t i;
    json_t *v;
    json_array_foreach(arr, i, v)
    {
        printf("%s%s", i ? ", " : "", json_is_string(v) ? json_string_value(v) : "?");
    }
    printf("\n");
}

/* The answer to an applied reload, as `wrangler deploy` prints a deployment. */
static void print_applied(json_t *r, double total_ms)
{
    json_t *b = json_object_get(r, "bindings");
    printf("Validated %s (%.0f ms)\n", json_string_value(json_object_get(r, "config")),
           json_number_value(json_object_get(r, "validate_ms")));
    printf("Applied to the running server, pid %d (%.0f ms; %.0f ms in all)\n",
           (int)json_integer_value(json_object_get(r, "pid")),
           json_number_value(json_object_get(r, "apply_ms")), total_ms);
    print_joined("Changed: ", json_object_get(r, "changed"), "nothing");
    json_t *restart = json_object_get(r, "restart");
    if (json_array_size(restart)) {
        print_joined("Not applied, needs a restart (or --upgrade): ", restart, "");
        printf("  (aigate deploy --upgrade applies them with no dropped request)\n");
    }
    printf("Scheduled tasks: %s\n", json_string_value(json_object_get(r, "tasks_runner")));
    printf("Your gateway has access to the following bindings:\n");
    size_t i;
    json_t *v;
    json_t *kv = json_object_get(b, "kv_namespaces");
    if (json_array_size(kv)) {
        printf("- KV Namespaces:\n");
        json_array_foreach(kv, i, v)
        {
            printf("  - %s: %s\n", json_string_value(json_object_get(v, "binding")),
                   json_string_value(json_object_get(v, "id")));
        }
    }
    json_t *r2 = json_object_get(b, "r2_buckets");
    if (json_array_size(r2)) {
        printf("- R2 Buckets:\n");
        json_array_foreach(r2, i, v)
        {
            printf("  - %s: %s\n", json_string_value(json_object_get(v, "binding")),
                   json_string_value(json_object_get(v, "bucket_name")));
        }
    }
    json_t *rl = json_object_get(b, "ratelimits");
    if (json_array_size(rl)) {
        printf("- Rate limits:\n");
        json_array_foreach(rl, i, v)
        {
            printf("  - %s: %lld requests/%llds\n", json_string_value(json_object_get(v, "name")),
                   (long long)json_integer_value(json_object_get(v, "limit")),
                   (long long)json_integer_value(json_object_get(v, "period")));
        }
    }
    json_t *vars = json_object_get(b, "vars");
    if (json_object_size(vars)) {
        printf("- Vars:\n");
        const char *k;
        json_object_foreach(vars, k, v)
        {
            printf("  - %s: \"%s\"\n", k, json_string_value(v));
        }
    }
    printf("Rate limit: %lld requests/%llds per client\n",
           (long long)json_integer_value(json_object_get(r, "rate_limit")),
           (long long)json_integer_value(json_object_get(r, "rate_period")));
    print_list("Routes:", json_object_get(r, "routes"));
    print_joined("Models: ", json_object_get(r, "models"), "(DEFAULT_MODEL only)");
    json_t *crons = json_object_get(r, "triggers");
    if (json_array_size(crons)) {
        printf("Triggers:\n");
        json_array_foreach(crons, i, v)
        {
            printf("  schedule: %s\n", json_string_value(v));
        }
    }
    print_joined("Tasks: ", json_object_get(r, "tasks"), "none");
    printf("Current generation: %lld\n",
           (long long)json_integer_value(json_object_get(r, "generation")));
}

/* The answer to a binary upgrade: which process serves now. */
static int print_upgrade(json_t *r, double total_ms)
{
    if (!json_is_true(json_object_get(r, "upgraded"))) {
        json_t *errors = json_object_get(r, "errors");
        size_t i;
        json_t *v;
        json_array_foreach(errors, i, v)
        {
            fprintf(stderr, "%s\n", json_string_value(v));
        }
        return ag__cli_fail("the upgrade did not happen: the running server keeps serving");
    }
    printf("Upgraded: pid %lld serves (%s, config %s; ready in %.0f ms, %.0f ms in all)\n",
           (long long)json_integer_value(json_object_get(r, "pid")),
           json_string_value(json_object_get(r, "binary")),
           json_string_value(json_object_get(r, "config")),
           json_number_value(json_object_get(r, "ready_ms")), total_ms);
    printf("The old process, pid %lld, stopped accepting and drains\n",
           (long long)json_integer_value(json_object_get(r, "old_pid")));
    return ag__cli_flush_stdout();
}

/* POSTs /reload?config=PATH, or /upgrade?config=PATH&binary=BIN. @return the exit code. */
static int post_reload(const char *base, const char *token, const char *path, bool from_pid_file,
                       bool upgrade, const char *binary)
{
    CURL *h = curl_easy_init();
    if (!h)
        return ag__cli_fail("cannot initialise libcurl");
    char *esc = curl_easy_escape(h, path, 0);
    ag_buf_t url, body;
    ag_buf_init(&url, 0);
    ag_buf_init(&body, 0);
    size_t blen = strlen(base);
    while (blen && base[blen - 1] == '/')
        blen--;
    ag_buf_printf(&url, "%.*s/%s?config=%s", (int)blen, base, upgrade ? "upgrade" : "reload",
                  esc ? esc : "");
    curl_free(esc);
    if (binary) {
        char *eb = curl_easy_escape(h, binary, 0);
        ag_buf_printf(&url, "&binary=%s", eb ? eb : "");
        curl_free(eb);
    }
    struct curl_slist *hdrs = NULL;
    char *auth = NULL;
    if (token && *token) {
        size_t alen = strlen(token) + sizeof("Authorization: Bearer ");
        auth = malloc(alen);
        if (auth) {
            snprintf(auth, alen, "Authorization: Bearer %s", token);
            hdrs = curl_slist_append(hdrs, auth);
        }
    }
    char errbuf[CURL_ERROR_SIZE] = "";
    curl_easy_setopt(h, CURLOPT_URL, ag_buf_cstr(&url));
    curl_easy_setopt(h, CURLOPT_POST, 1L);
    curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, 0L);
    curl_easy_setopt(h, CURLOPT_POSTFIELDS, "");
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(h, CURLOPT_USERAGENT, "aigate-deploy/" AG_VERSION);
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_NOPROXY, "localhost,127.0.0.1,::1");
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, 5000L);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, upgrade ? UPGRADE_WAIT_MS : RELOAD_TIMEOUT_MS);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &body);
    /* An https:// admin URL from the pid file is the server's own loopback
     * listener (admin_tls), whose certificate may be the very one this deploy
     * replaces, or name no loopback address: what is trusted is the pid file,
     * which only the server's user can write; the token still authenticates
     * us. An --admin URL is verified as usual. */
    if (from_pid_file &&
        (strncmp(base, "https://127.", 12) == 0 || strncmp(base, "https://[::1]", 13) == 0)) {
        curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 0L);
        curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 0L);
    }
    int64_t t0 = ag_now_us();
    CURLcode cc = curl_easy_perform(h);
    double total_ms = (double)(ag_now_us() - t0) / 1000.0;
    long status = 0;
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_cleanup(h);
    curl_slist_free_all(hdrs);
    if (auth) {
        explicit_bzero(auth, strlen(auth));
        free(auth);
    }
    int rc = 1;
    json_t *r = NULL;
    if (cc != CURLE_OK) {
        ag__cli_fail("cannot reach the admin listener at %.*s: %s", (int)blen, base,
                     errbuf[0] ? errbuf : curl_easy_strerror(cc));
    } else if (status == 401) {
        ag__cli_fail("the admin listener refused the token: set the secret AIGATE_ADMIN_TOKEN "
                     "here as the server has it (aigate secret put AIGATE_ADMIN_TOKEN)");
    } else if (!(r = json_loadb(body.data ? body.data : "", body.len, 0, NULL))) {
        ag__cli_fail("the admin listener answered %ld, not a reload's JSON", status);
    } else if (upgrade && status == 404) {
        ag__cli_fail("the running server does not know POST /upgrade (an older aigate): restart "
                     "it to run the new binary");
    } else if (upgrade) {
        rc = print_upgrade(r, total_ms);
    } else if (status == 200) {
        print_applied(r, total_ms);
        rc = ag__cli_flush_stdout();
    } else {
        json_t *errors = json_object_get(r, "errors");
        size_t i;
        json_t *v;
        json_array_foreach(errors, i, v)
        {
            fprintf(stderr, "%s\n", json_string_value(v));
        }
        ag__cli_fail("the server refused the configuration (%ld): nothing changed", status);
    }
    json_decref(r);
    ag_buf_fini(&url);
    ag_buf_fini(&body);
    return rc;
}

/* No admin listener: SIGUSR2, then the server's answer in DATA_DIR/aigate.upgrade. */
static int signal_upgrade(const char *data_dir, int pid)
{
    char path[PATH_MAX];
    snprintf(path, sizeof(path), "%s/aigate.upgrade", data_dir);
    unlink(path);
    if (kill(pid, SIGUSR2) < 0)
        return ag__cli_fail("cannot signal pid %d: %s", pid, strerror(errno));
    int64_t t0 = ag_now_us();
    int64_t deadline = t0 + UPGRADE_WAIT_MS * 1000;
    while (ag_now_us() < deadline) {
        json_t *r = json_load_file(path, 0, NULL);
        if (r) {
            int rc = print_upgrade(r, (double)(ag_now_us() - t0) / 1000.0);
            json_decref(r);
            return rc;
        }
        if (kill(pid, 0) < 0 && errno == ESRCH)
            return ag__cli_fail("pid %d exited without an answer to SIGUSR2: its log says why",
                                pid);
        struct timespec ts = {0, 20 * 1000000L};
        nanosleep(&ts, NULL);
    }
    return ag__cli_fail("no answer from pid %d to SIGUSR2 within %ld s (see its log)", pid,
                        UPGRADE_WAIT_MS / 1000);
}

int cmd_deploy(int argc, char **argv)
{
    ag__cli_opt_t opts[] = {{"--admin", true, NULL, false},
                            {"--upgrade", false, NULL, false},
                            {"--binary", true, NULL, false}};
    ag__cli_t c;
    int status;
    if (!ag__cli_parse(&c, deploy_usage, argc, argv, opts, AG_ARRAY_LEN(opts), 0, 0, &status))
        return status;
    bool upgrade = opts[1].present;
    char binary[PATH_MAX] = "";
    if (opts[2].present && !upgrade)
        return ag__cli_fail("--binary goes with --upgrade");
    if (opts[2].present && !realpath(opts[2].value, binary))
        return ag__cli_fail("cannot use --binary %s: %s", opts[2].value, strerror(errno));
    if (binary[0] && access(binary, X_OK) < 0)
        return ag__cli_fail("cannot use --binary %s: %s", binary, strerror(errno));
    const char *found = ag_config_find(c.config);
    if (!found)
        return ag__cli_fail("no configuration to deploy: no aigate.toml or wrangler.toml here "
                            "(give --config FILE)");
    char abs[PATH_MAX];
    if (!realpath(found, abs))
        return ag__cli_fail("cannot read %s: %s", found, strerror(errno));
    /* The checks of `aigate config check` that need nothing of the server's;
     * the server makes them all again before it applies anything. */
    ag_config_t cfg;
    ag_config_defaults(&cfg);
    int rc = ag_config_load_file(&cfg, abs, stderr) < 0 || ag_tasks_check(&cfg, stderr) < 0;
    if (rc) {
        ag_config_fini(&cfg);
        return ag__cli_fail("%s was not deployed: the server keeps the configuration it has", abs);
    }
    const char *data_dir = c.data_dir_flag                   ? c.data_dir_flag
                           : cfg.data_dir && cfg.data_dir[0] ? cfg.data_dir
                                                             : AG_STORE_DEFAULT_DATA_DIR;
    char url[1024] = "";
    int pid = 0;
    if (opts[0].present) {
        snprintf(url, sizeof(url), "%s", opts[0].value);
    } else if (read_pid_file(data_dir, &pid, url, sizeof(url)) != 0) {
        ag_config_fini(&cfg);
        return 1;
    }
    if (!url[0] && upgrade) {
        rc = binary[0] ? ag__cli_fail("--binary needs the server's admin listener "
                                      "(admin_listen): without one, SIGUSR2 runs the server's "
                                      "own binary path")
                       : signal_upgrade(data_dir, pid);
        ag_config_fini(&cfg);
        return rc;
    }
    if (!url[0]) {
        /* No admin listener: the signal applies the server's own file. */
        rc = kill(pid, SIGHUP) == 0
                 ? 0
                 : ag__cli_fail("cannot signal pid %d: %s", pid, strerror(errno));
        if (rc == 0)
            printf(
                "Sent SIGHUP to pid %d (no admin listener: the server's log says what changed)\n",
                pid);
        ag_config_fini(&cfg);
        return rc;
    }
    char *token = NULL;
    ag_secrets_resolve(data_dir, cfg.admin_token_secret, &token);
    rc = post_reload(url, token, abs, !opts[0].present, upgrade, binary[0] ? binary : NULL);
    ag_secrets_value_free(token);
    ag_config_fini(&cfg);
    return rc;
}
