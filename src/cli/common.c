/* SPDX-License-Identifier: MIT
 *
 * common.c: what the storage commands share: flag parsing with the common
 * --config/--data-dir/--json/--help flags, finding the data folder the way
 * the server does, subcommand dispatch and error printing.
 */
#include "util/platform.h"

#include "cli/cli.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <stdarg.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#include "config/config.h"
#include "store/kv.h"
#include "store/redis.h"
#include "store/secrets.h"
#include "store/secrets_resolve.h"
#include "util/errors.h"
#include "util/json.h"

int ag__cli_fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("aigate: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return 1;
}

int ag__cli_usage_error(const char *usage, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("aigate: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    fputs(usage, stderr);
    return 2;
}

static bool is_help(const char *a)
{
    return strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0 || strcmp(a, "help") == 0;
}

int ag__cli_dispatch(const char *usage, int argc, char **argv, const char *const *names,
                     int (*const *fns)(int, char **))
{
    if (argc < 1)
        return ag__cli_usage_error(usage, "missing subcommand");
    if (is_help(argv[0])) {
        fputs(usage, stdout);
        return 0;
    }
    for (size_t i = 0; names[i] != NULL; i++) {
        if (strcmp(argv[0], names[i]) == 0)
            return fns[i](argc - 1, argv + 1);
    }
    return ag__cli_usage_error(usage, "unknown subcommand '%s'", argv[0]);
}

bool ag__cli_parse(ag__cli_t *c, const char *usage, int argc, char **argv, ag__cli_opt_t *opts,
                   size_t nopts, int min_pos, int max_pos, int *status)
{
    *c = (ag__cli_t){.usage = usage};
    bool only_pos = false;
    AG_ASSERT(max_pos <= AG__CLI_MAX_POS);
    for (int i = 0; i < argc; i++) {
        char *a = argv[i];
        if (only_pos || a[0] != '-' || strcmp(a, "-") == 0) {
            if (c->npos >= max_pos) {
                *status = ag__cli_usage_error(usage, "unexpected argument '%s'", a);
                return false;
            }
            c->pos[c->npos++] = a;
            continue;
        }
        if (strcmp(a, "--") == 0) {
            only_pos = true;
            continue;
        }
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            fputs(usage, stdout);
            *status = 0;
            return false;
        }
        /* --name=value or --name value */
        const char *eq = strchr(a, '=');
        size_t nlen = eq ? (size_t)(eq - a) : strlen(a);
        const char *inline_val = eq ? eq + 1 : NULL;
        const char **slot = NULL;
        bool *flag = NULL;
        ag__cli_opt_t *o = NULL;
        if (nlen == 8 && strncmp(a, "--config", nlen) == 0) {
            slot = &c->config;
        } else if (nlen == 10 && strncmp(a, "--data-dir", nlen) == 0) {
            slot = &c->data_dir_flag;
        } else if (nlen == 6 && strncmp(a, "--json", nlen) == 0) {
            flag = &c->json;
        } else {
            for (size_t k = 0; k < nopts; k++) {
                if (strlen(opts[k].name) == nlen && strncmp(a, opts[k].name, nlen) == 0) {
                    o = &opts[k];
                    break;
                }
            }
            if (o == NULL) {
                *status = ag__cli_usage_error(usage, "unknown option '%.*s'", (int)nlen, a);
                return false;
            }
            if (o->takes_value)
                slot = &o->value;
            else
                flag = &o->present;
        }
        if (flag) {
            if (inline_val) {
                *status = ag__cli_usage_error(usage, "%.*s takes no value", (int)nlen, a);
                return false;
            }
            *flag = true;
            continue;
        }
        const char *val = inline_val;
        if (val == NULL) {
            if (i + 1 >= argc) {
                *status = ag__cli_usage_error(usage, "%s needs a value", a);
                return false;
            }
            val = argv[++i];
        }
        *slot = val;
        if (o)
            o->present = true;
    }
    if (c->npos < min_pos) {
        *status = ag__cli_usage_error(usage, "missing argument");
        return false;
    }
    return true;
}

static void names_free(char **v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

static int cmp_cstr(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The KV bindings on Redis: those of [[kv_namespaces]], and the response
 * cache's, which needs no entry there. */
static int kv_on_redis(ag__cli_t *c, const ag_config_t *cfg)
{
    names_free(c->kv_on_redis, c->nkv_on_redis);
    c->kv_on_redis = NULL;
    c->nkv_on_redis = 0;
    if (!cfg->redis_url)
        return 0;
    char **v = calloc(cfg->nkv_namespaces + 1, sizeof(*v));
    if (!v)
        return -ENOMEM;
    size_t n = 0;
    for (size_t i = 0; i <= cfg->nkv_namespaces; i++) {
        const char *b = i < cfg->nkv_namespaces ? cfg->kv_namespaces[i].name : cfg->cache_binding;
        bool seen = false;
        for (size_t k = 0; k < n && !seen; k++)
            seen = strcmp(v[k], b) == 0;
        if (!b || seen || strcmp(ag_config_kv_backend(cfg, b), AG_KV_BACKEND_REDIS) != 0)
            continue;
        if (!(v[n++] = strdup(b))) {
            names_free(v, n);
            return -ENOMEM;
        }
    }
    qsort(v, n, sizeof(*v), cmp_cstr);
    c->kv_on_redis = v;
    c->nkv_on_redis = n;
    return 0;
}

bool ag__cli_kv_on_redis(const ag__cli_t *c, const char *binding)
{
    for (size_t i = 0; i < c->nkv_on_redis; i++) {
        if (strcmp(c->kv_on_redis[i], binding) == 0)
            return true;
    }
    return false;
}

int ag__cli_data_dir(ag__cli_t *c)
{
    free(c->data_dir);
    c->data_dir = NULL;
    if (c->data_dir_flag && c->data_dir_flag[0] == '\0')
        return ag__cli_fail("--data-dir is empty");
    /* Read even with --data-dir: its [aigate.redis] is where revocations go. */
    ag_config_t cfg;
    ag_config_defaults(&cfg);
    const char *path = ag_config_find(c->config);
    int rc = 0;
    if (path && ag_config_load_file(&cfg, path, stderr) < 0) {
        rc = ag__cli_fail("cannot use the configuration in %s", path);
    } else {
        const char *dir = c->data_dir_flag ? c->data_dir_flag : cfg.data_dir;
        c->data_dir = strdup(dir && dir[0] ? dir : "./.aigate");
        free(c->redis_url);
        c->redis_url = cfg.redis_url ? strdup(cfg.redis_url) : NULL;
        c->redis_timeout_ms = cfg.redis_timeout_ms;
        if (c->data_dir == NULL || (cfg.redis_url && !c->redis_url) || kv_on_redis(c, &cfg) < 0)
            rc = ag__cli_fail("out of memory");
    }
    ag_config_fini(&cfg);
    return rc;
}

void ag__cli_fini(ag__cli_t *c)
{
    AG_FREE(&c->data_dir);
    AG_FREE(&c->redis_url);
    names_free(c->kv_on_redis, c->nkv_on_redis);
    c->kv_on_redis = NULL;
    c->nkv_on_redis = 0;
}

int ag__cli_redis_open(const ag__cli_t *c, ag_redis_sync_t **out)
{
    char *password = NULL;
    if (ag_secrets_resolve(c->data_dir, "REDIS_PASSWORD", &password) < 0)
        password = NULL;
    ag_redis_options_t o = {
        .url = c->redis_url,
        .password = password,
        .connect_timeout_ms = 2000,
        .command_timeout_ms = 2000,
        .single_attempt = true, /* a command line says why itself, and does not wait */
        .name = "aigate",
    };
    int rc = ag_redis_sync_open(&o, out); /* the client keeps its own copy of the password */
    ag_secrets_value_free(password);
    return rc;
}

int ag__cli_redis(const ag__cli_t *c, int argc, const char *const *argv, char *why, size_t len)
{
    ag_redis_sync_t *s;
    ag_resp_t *reply = NULL;
    int rc = ag__cli_redis_open(c, &s);
    if (rc == 0)
        rc = ag_redis_sync_command(s, argc, argv, NULL, &reply);
    ag_redis_sync_close(s);
    if (rc < 0) {
        snprintf(why, len, "%s", ag_strerror(rc));
        return rc;
    }
    if (reply->type == AG_RESP_ERROR) {
        snprintf(why, len, "Redis answered: %.200s", reply->str);
        rc = AG_REDIS_EREPLY;
    }
    ag_resp_free(reply);
    return rc;
}

int ag__cli_parse_i64(const char *s, int64_t min, int64_t max, int64_t *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || *s == '\0' || *end != '\0' || v < min || v > max)
        return -EINVAL;
    *out = (int64_t)v;
    return 0;
}

int ag__cli_flush_stdout(void)
{
    if (fflush(stdout) != 0 || ferror(stdout))
        return ag__cli_fail("cannot write the output: %s", strerror(errno));
    return 0;
}

int ag__cli_print_json(ag_buf_t *b)
{
    if (ag_buf_append(b, "\n", 1) < 0)
        return ag__cli_fail("out of memory");
    fwrite(b->data, 1, b->len, stdout);
    return ag__cli_flush_stdout();
}

void ag__cli_format_time(int64_t ms, char *buf, size_t cap)
{
    time_t secs = (time_t)(ms / 1000);
    struct tm tm;
    if (gmtime_r(&secs, &tm) == NULL) {
        snprintf(buf, cap, "?");
        return;
    }
    snprintf(buf, cap, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1,
             tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(ms % 1000));
}

int ag__cli_print_names(const ag__cli_t *c, char **names, size_t n, const char *const *fields,
                        const char *extra)
{
    if (!c->json) {
        for (size_t i = 0; i < n; i++)
            printf("%s\n", names[i]);
        return ag__cli_flush_stdout();
    }
    ag_buf_t out;
    ag_buf_init(&out, 0);
    ag_buf_append_cstr(&out, "[");
    for (size_t i = 0; i < n; i++) {
        ag_buf_append_cstr(&out, i ? ",{" : "{");
        for (size_t f = 0; fields[f]; f++) {
            ag_buf_printf(&out, "%s\"%s\":", f ? "," : "", fields[f]);
            ag_json_append_string(&out, ag_str_c(names[i]));
        }
        ag_buf_append_cstr(&out, extra);
        ag_buf_append_cstr(&out, "}");
    }
    ag_buf_append_cstr(&out, "]");
    int rc = ag__cli_print_json(&out);
    ag_buf_fini(&out);
    return rc;
}
