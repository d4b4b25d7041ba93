/* SPDX-License-Identifier: MIT
 *
 * cmd_cron.c: `aigate cron list` (each task, its cron, its next three runs,
 * the last run when a server answers) and `aigate cron run NAME` (through the
 * admin listener's POST /tasks/NAME/run).
 */
#include "util/platform.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>
#include <jansson.h>

#include "cli/cli.h"
#include "config/config.h"
#include "store/secrets.h"
#include "store/secrets_resolve.h"
#include "tasks/tasks.h"
#include "util/buf.h"
#include "util/log.h"

static const char usage_top[] = "usage: aigate cron list [--json] [--config FILE]\n"
                                "       aigate cron run NAME [--config FILE] [--admin URL]\n";
static const char usage_list[] = "usage: aigate cron list [--json] [--config FILE]\n";
static const char usage_run[] = "usage: aigate cron run NAME [--admin URL] [--config FILE]\n";

static size_t collect(char *data, size_t size, size_t n, void *userp)
{
    return ag_buf_append(userp, data, size * n) == 0 ? size * n : 0;
}

/* One admin request. @return the HTTP status, 0 when nothing answered. */
static long admin_call(const ag_config_t *cfg, const char *admin, const char *method,
                       const char *path, long timeout_ms, ag_buf_t *out)
{
    char url[1024];
    snprintf(url, sizeof(url), "%s%s", admin, path);
    CURL *e = curl_easy_init();
    if (!e)
        return 0;
    struct curl_slist *h = NULL;
    char *token = NULL;
    if (ag_secrets_resolve(cfg->data_dir, cfg->admin_token_secret, &token) == 0) {
        ag_buf_t auth;
        ag_buf_init(&auth, 0);
        ag_buf_printf(&auth, "Authorization: Bearer %s", token);
        h = curl_slist_append(h, ag_buf_cstr(&auth));
        explicit_bzero(auth.data, auth.len);
        ag_buf_fini(&auth);
        ag_secrets_value_free(token);
    }
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method);
    if (strcmp(method, "POST") == 0)
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, "");
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, collect);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, out);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, timeout_ms);
    curl_easy_setopt(e, CURLOPT_NOPROXY, "*");
    long status = 0;
    if (curl_easy_perform(e) == CURLE_OK)
        curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &status);
    curl_slist_free_all(h);
    curl_easy_cleanup(e);
    return status;
}

/* http://HOST:PORT of the config's admin listener, or "" when it is off. */
static void admin_url(const ag_config_t *cfg, const char *flag, char *out, size_t cap)
{
    if (flag) {
        snprintf(out, cap, "%s%s", strstr(flag, "://") ? "" : "http://", flag);
        return;
    }
    const char *l = cfg->admin_listen ? cfg->admin_listen : "";
    if (!*l) {
        out[0] = '\0';
        return;
    }
    /* A wildcard address is reached on loopback. */
    if (strncmp(l, "0.0.0.0:", 8) == 0)
        snprintf(out, cap, "http://127.0.0.1:%s", l + 8);
    else if (strncmp(l, "[::]:", 5) == 0)
        snprintf(out, cap, "http://[::1]:%s", l + 5);
    else
        snprintf(out, cap, "http://%s", l);
}

static int load(const ag__cli_t *c, ag_config_t *cfg)
{
    ag_config_defaults(cfg);
    const char *path = ag_config_find(c->config);
    if (path && ag_config_load_file(cfg, path, stderr) < 0)
        return ag__cli_fail("cannot use the configuration in %s", path);
    if (c->data_dir_flag) {
        free(cfg->data_dir);
        cfg->data_dir = strdup(c->data_dir_flag);
    }
    return 0;
}

static int cron_list(int argc, char **argv)
{
    ag__cli_t c;
    int status;
    ag__cli_opt_t opts[] = {{"--admin", true, NULL, false}};
    if (!ag__cli_parse(&c, usage_list, argc, argv, opts, AG_ARRAY_LEN(opts), 0, 0, &status))
        return status;
    ag_config_t cfg;
    int rc = load(&c, &cfg);
    ag_buf_t b;
    ag_buf_init(&b, 0);
    if (rc == 0 && ag_tasks_check(&cfg, stderr) < 0)
        rc = 1;
    if (rc == 0) {
        /* The running server knows the last runs; without one, "last" is null. */
        char admin[512];
        admin_url(&cfg, opts[0].value, admin, sizeof(admin));
        if (!admin[0] || admin_call(&cfg, admin, "GET", "/tasks", 2000, &b) != 200) {
            b.len = 0;
            rc = ag_tasks_list_json(NULL, &cfg, ag_now_us() / 1000000, &b) < 0 ? 1 : 0;
        }
    }
    if (rc == 0 && c.json) {
        rc = ag__cli_print_json(&b);
    } else if (rc == 0) {
        json_t *list = json_loadb(b.data ? b.data : "[]", b.len ? b.len : 2, 0, NULL);
        size_t i;
        json_t *t;
        if (json_array_size(list) == 0)
            printf("no scheduled tasks ([[aigate.tasks]] in the config)\n");
        json_array_foreach(list, i, t)
        {
            printf("%-24s %-16s", json_string_value(json_object_get(t, "name")),
                   json_string_value(json_object_get(t, "cron")));
            json_t *next = json_object_get(t, "next"), *n;
            size_t k;
            json_array_foreach(next, k, n) printf(" %s", json_string_value(n));
            json_t *last = json_object_get(t, "last");
            if (json_is_object(last))
                printf("  last: %s", json_string_value(json_object_get(last, "outcome")));
            printf("\n");
        }
        json_decref(list);
        rc = ag__cli_flush_stdout();
    }
    ag_buf_fini(&b);
    ag_config_fini(&cfg);
    ag__cli_fini(&c);
    return rc;
}

static int cron_run(int argc, char **argv)
{
    ag__cli_t c;
    int status;
    ag__cli_opt_t opts[] = {{"--admin", true, NULL, false}};
    if (!ag__cli_parse(&c, usage_run, argc, argv, opts, AG_ARRAY_LEN(opts), 1, 1, &status))
        return status;
    ag_config_t cfg;
    int rc = load(&c, &cfg);
    char admin[512] = "";
    if (rc == 0)
        admin_url(&cfg, opts[0].value, admin, sizeof(admin));
    if (rc == 0 && !admin[0])
        rc = ag__cli_fail("the admin listener is off (admin_listen = \"\"): set admin_listen = "
                          "\"127.0.0.1:8788\" in [aigate], restart the server, and run this again");
    ag_buf_t b;
    ag_buf_init(&b, 0);
    if (rc == 0) {
        char path[300];
        snprintf(path, sizeof(path), "/tasks/%s/run", c.pos[0]);
        long st = admin_call(&cfg, admin, "POST", path, 600000, &b);
        if (st == 0)
            rc = ag__cli_fail("no aigate server at %s (is it running? admin_listen)", admin);
        else if (st == 401)
            rc = ag__cli_fail("%s refused the admin token (the secret %s)", admin,
                              cfg.admin_token_secret);
        else if (st == 404)
            rc = ag__cli_fail("no task named '%s' on the server at %s", c.pos[0], admin);
        else if (st != 200)
            rc = ag__cli_fail("%s answered %ld: %.*s", admin, st, (int)b.len, b.data ? b.data : "");
        else
            rc = ag__cli_print_json(&b);
    }
    ag_buf_fini(&b);
    ag_config_fini(&cfg);
    ag__cli_fini(&c);
    return rc;
}

int cmd_cron(int argc, char **argv)
{
    static const char *const names[] = {"list", "run", NULL};
    static int (*const fns[])(int, char **) = {cron_list, cron_run};
    return ag__cli_dispatch(usage_top, argc, argv, names, fns);
}
