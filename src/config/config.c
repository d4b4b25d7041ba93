/* SPDX-License-Identifier: MIT
 *
 * config.c: defaults, the [aigate] key table, the wrangler.toml reader and
 * secrets. Every error names file:line:col; parsing goes on after an error so
 * that one run reports them all (HAProxy does the same).
 */
#include "util/platform.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config/config.h"
#include "config/toml.h"
#include "store/secrets.h"
#include "util/buf.h"
#include "util/errors.h"

typedef enum {
    K_STRING,
    K_UINT,
    K_SIZE,
    K_SECONDS,
    K_BOOL,
    K_PORT,
    K_MODELS,
    K_STRLIST
} key_type_t;

typedef struct cfg_key {
    const char *name;
    key_type_t type;
    double min, max;
    double def_num;      /* numeric and bool defaults */
    const char *def_str; /* string defaults */
    size_t offset;
    const char *help;
} cfg_key_t;

#define OFF(f) offsetof(ag_config_t, f)

/* The [aigate] table. Durations are seconds (fractions allowed), stored as ms. */
static const cfg_key_t aigate_keys[] = {
    {"host", K_STRING, 0, 0, 0, "127.0.0.1", OFF(host), "address to listen on"},
    {"port", K_PORT, 0, 65535, 8787, NULL, OFF(port), "TCP port (0: any free port)"},
    {"threads", K_UINT, 0, 256, 0, NULL, OFF(threads), "event-loop threads; 0: one per core"},
    {"max_body_bytes", K_SIZE, 1, 1 << 30, 1 << 20, NULL, OFF(max_body_bytes),
     "largest request body; over it: 413"},
    {"max_header_bytes", K_SIZE, 1024, 1 << 20, 16384, NULL, OFF(max_header_bytes),
     "largest request line + headers; over it: 431"},
    {"max_connections", K_UINT, 1, 1 << 24, 10000, NULL, OFF(max_connections),
     "open client connections; over it: 503 and close"},
    {"header_timeout", K_SECONDS, 0.001, 3600, 10, NULL, OFF(header_timeout_ms),
     "seconds to receive a whole request head (slowloris guard)"},
    {"idle_timeout", K_SECONDS, 0.001, 86400, 60, NULL, OFF(idle_timeout_ms),
     "seconds a keep-alive connection may sit idle"},
    {"body_timeout", K_SECONDS, 0.001, 3600, 30, NULL, OFF(body_timeout_ms),
     "seconds without progress while receiving a body"},
    {"drain_timeout", K_SECONDS, 0, 3600, 10, NULL, OFF(drain_timeout_ms),
     "seconds in-flight requests get to finish on shutdown"},
    {"upstream", K_STRING, 0, 0, 0, "https://api.anthropic.com", OFF(upstream),
     "Anthropic API base URL"},
    {"upstream_connect_timeout", K_SECONDS, 0.001, 600, 10, NULL, OFF(upstream_connect_timeout_ms),
     "seconds to connect to upstream"},
    {"upstream_timeout", K_SECONDS, 0.001, 3600, 120, NULL, OFF(upstream_timeout_ms),
     "seconds for a whole non-streaming upstream call"},
    {"stream_idle_timeout", K_SECONDS, 0.001, 3600, 60, NULL, OFF(stream_idle_timeout_ms),
     "seconds a stream may go without a byte (pings count) before it is cut"},
    {"data_dir", K_STRING, 0, 0, 0, "./.aigate", OFF(data_dir),
     "folder for KV stores, buckets, secrets"},
    {"access_log", K_BOOL, 0, 1, 1, NULL, OFF(access_log), "one JSON line per request on stderr"},
    {"prompt_max_length", K_UINT, 1, 1 << 24, 4000, NULL, OFF(prompt_max_length),
     "longest prompt, in UTF-16 code units (JavaScript's length)"},
    {"models", K_MODELS, 0, 0, 0, NULL, OFF(models),
     "models a client may ask for, besides DEFAULT_MODEL"},
    {"rate_limit", K_UINT, 1, 1e9, 20, NULL, OFF(rate_limit),
     "requests per rate_period per client on POST /api/generate"},
    {"rate_period", K_UINT, 1, 86400, 60, NULL, OFF(rate_period_s), "seconds of the rate window"},
    {"rate_limit_binding", K_STRING, 0, 0, 0, "", OFF(rate_limit_binding),
     "use the limit and period of this ratelimit binding ([[unsafe.bindings]]) instead"},
    {"messages_rate_limit", K_UINT, 0, 1e9, 0, NULL, OFF(messages_rate_limit),
     "requests per messages_rate_period per client on POST /v1/messages; 0: as rate_limit"},
    {"messages_rate_period", K_UINT, 0, 86400, 0, NULL, OFF(messages_rate_period_s),
     "seconds of the /v1/messages window; 0: as rate_period"},
    {"messages_rate_limit_binding", K_STRING, 0, 0, 0, "", OFF(messages_rate_limit_binding),
     "ratelimit binding for /v1/messages; \"\": as rate_limit_binding. Routes naming bindings "
     "with one namespace_id share counters"},
    {"trusted_proxies", K_STRLIST, 0, 0, 0, NULL, OFF(trusted_proxies),
     "addresses or CIDRs whose CF-Connecting-IP / X-Forwarded-For are believed"},
    {"cache", K_BOOL, 0, 1, 1, NULL, OFF(cache), "cache /api/generate answers"},
    {"cache_ttl", K_SECONDS, 1, 31536000, 3600, NULL, OFF(cache_ttl_ms),
     "seconds a cached answer lives"},
    {"cache_binding", K_STRING, 0, 0, 0, "CACHE", OFF(cache_binding),
     "KV namespace binding that holds the cache"},
    {"usage_log", K_BOOL, 0, 1, 1, NULL, OFF(usage_log), "write usage entries to the object store"},
    {"usage_log_binding", K_STRING, 0, 0, 0, "STORAGE", OFF(usage_log_binding),
     "R2 binding whose bucket gets logs/YYYY/MM/DD/*.ndjson"},
    {"usage_log_flush", K_SECONDS, 0.001, 3600, 1, NULL, OFF(usage_log_flush_ms),
     "seconds between usage-log flushes at most"},
};

/* Top-level keys that wrangler.toml may hold; we read some and accept the rest. */
static const char *const wrangler_keys[] = {
    "account_id",
    "aigate",
    "ai",
    "alias",
    "analytics_engine_datasets",
    "assets",
    "base_dir",
    "browser",
    "build",
    "compatibility_date",
    "compatibility_flags",
    "d1_databases",
    "define",
    "dev",
    "durable_objects",
    "env",
    "find_additional_modules",
    "hyperdrive",
    "keep_vars",
    "kv_namespaces",
    "limits",
    "logpush",
    "main",
    "migrations",
    "minify",
    "mtls_certificates",
    "name",
    "no_bundle",
    "node_compat",
    "observability",
    "placement",
    "preserve_file_names",
    "queues",
    "r2_buckets",
    "route",
    "routes",
    "rules",
    "send_metrics",
    "services",
    "site",
    "tail_consumers",
    "triggers",
    "tsconfig",
    "unsafe",
    "upload_source_maps",
    "usage_model",
    "vars",
    "vectorize",
    "version_metadata",
    "workers_dev",
    "workflows",
    "zone_id",
};

static char *xstrdup(const char *s)
{
    char *p = strdup(s ? s : "");
    AG_ASSERT(p != NULL);
    return p;
}

static char *xstrndup(const char *s, size_t n)
{
    char *p = strndup(s, n);
    AG_ASSERT(p != NULL);
    return p;
}

static void free_models(ag_config_t *cfg)
{
    for (size_t i = 0; i < cfg->nmodels; i++)
        free(cfg->models[i]);
    AG_FREE(&cfg->models);
    cfg->nmodels = 0;
}

static void free_strlist(char ***list)
{
    for (char **p = *list; p && *p; p++)
        free(*p);
    AG_FREE(list);
}

static void free_bindings(ag_config_binding_t **b, size_t *n)
{
    for (size_t i = 0; i < *n; i++) {
        free((*b)[i].name);
        free((*b)[i].target);
    }
    AG_FREE(b);
    *n = 0;
}

static void add_price(ag_config_t *cfg, const char *model, double in, double out)
{
    for (size_t i = 0; i < cfg->nprices; i++) {
        if (strcmp(cfg->prices[i].model, model) == 0) {
            cfg->prices[i].input_per_mtok = in;
            cfg->prices[i].output_per_mtok = out;
            return;
        }
    }
    ag_config_price_t *p = realloc(cfg->prices, (cfg->nprices + 1) * sizeof(*p));
    AG_ASSERT(p != NULL);
    cfg->prices = p;
    cfg->prices[cfg->nprices++] = (ag_config_price_t){xstrdup(model), in, out};
}

static void add_model(ag_config_t *cfg, const char *m, size_t len)
{
    if (ag_config_model_allowed(cfg, m, len))
        return;
    char **p = realloc(cfg->models, (cfg->nmodels + 2) * sizeof(char *));
    AG_ASSERT(p != NULL);
    cfg->models = p;
    cfg->models[cfg->nmodels++] = xstrndup(m, len);
    cfg->models[cfg->nmodels] = NULL;
}

/* Stores a validated number into the key's field, in the field's own unit. */
static void store_number(const cfg_key_t *k, char *field, double num)
{
    switch (k->type) {
    case K_UINT:
        *(unsigned *)field = (unsigned)num;
        break;
    case K_PORT:
        *(int *)field = (int)num;
        break;
    case K_SIZE:
        *(size_t *)field = (size_t)num;
        break;
    case K_SECONDS:
        *(unsigned *)field = (unsigned)llround(num * 1000);
        break;
    default:
        break;
    }
}

void ag_config_defaults(ag_config_t *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    for (size_t i = 0; i < AG_ARRAY_LEN(aigate_keys); i++) {
        const cfg_key_t *k = &aigate_keys[i];
        char *field = (char *)cfg + k->offset;
        switch (k->type) {
        case K_STRING:
            *(char **)field = xstrdup(k->def_str);
            break;
        case K_UINT:
        case K_PORT:
        case K_SIZE:
        case K_SECONDS:
            store_number(k, field, k->def_num);
            break;
        case K_BOOL:
            *(bool *)field = k->def_num != 0;
            break;
        case K_MODELS:
        case K_STRLIST:
            break;
        }
    }
    /* Anthropic's list prices, USD per million tokens; [aigate.prices] overrides. */
    add_price(cfg, "claude-haiku-4-5", 1.0, 5.0);
    add_price(cfg, "claude-sonnet-4-6", 3.0, 15.0);
    add_price(cfg, "claude-sonnet-4-5", 3.0, 15.0);
    add_price(cfg, "claude-opus-4-6", 5.0, 25.0);
    add_price(cfg, "claude-opus-4-5", 5.0, 25.0);
    cfg->environment = xstrdup("development");
    cfg->default_model = xstrdup("claude-haiku-4-5");
    cfg->max_tokens = 1024;
}

void ag_config_fini(ag_config_t *cfg)
{
    for (size_t i = 0; i < AG_ARRAY_LEN(aigate_keys); i++) {
        if (aigate_keys[i].type == K_STRING)
            AG_FREE((char **)((char *)cfg + aigate_keys[i].offset));
    }
    free_models(cfg);
    free_strlist(&cfg->trusted_proxies);
    for (size_t i = 0; i < cfg->nratelimits; i++) {
        free(cfg->ratelimits[i].name);
        free(cfg->ratelimits[i].namespace_id);
    }
    AG_FREE(&cfg->ratelimits);
    cfg->nratelimits = 0;
    free_bindings(&cfg->kv_namespaces, &cfg->nkv_namespaces);
    free_bindings(&cfg->r2_buckets, &cfg->nr2_buckets);
    for (size_t i = 0; i < cfg->nprices; i++)
        free(cfg->prices[i].model);
    AG_FREE(&cfg->prices);
    cfg->nprices = 0;
    AG_FREE(&cfg->path);
    AG_FREE(&cfg->name);
    AG_FREE(&cfg->environment);
    AG_FREE(&cfg->default_model);
    if (cfg->anthropic_api_key) {
        explicit_bzero(cfg->anthropic_api_key, strlen(cfg->anthropic_api_key));
        AG_FREE(&cfg->anthropic_api_key);
    }
}

bool ag_config_model_allowed(const ag_config_t *cfg, const char *model, size_t len)
{
    if (cfg->default_model && strlen(cfg->default_model) == len &&
        memcmp(cfg->default_model, model, len) == 0)
        return true;
    for (size_t i = 0; i < cfg->nmodels; i++) {
        if (strlen(cfg->models[i]) == len && memcmp(cfg->models[i], model, len) == 0)
            return true;
    }
    return false;
}

/* ---- loading --------------------------------------------------------------- */

typedef struct loader {
    ag_config_t *cfg;
    const char *path;
    FILE *errs;
    int errors;
} loader_t;

/* One diagnostic: `file:line:col: [label]message`, at the offending value. */
__attribute__((format(printf, 4, 0))) static void
diag(loader_t *ld, const ag_toml_value_t *at, const char *label, const char *fmt, va_list ap)
{
    if (!ld->errs)
        return;
    fprintf(ld->errs, "%s:%u:%u: %s", ld->path, at ? ag_toml_line(at) : 1, at ? ag_toml_col(at) : 1,
            label);
    vfprintf(ld->errs, fmt, ap);
    fputc('\n', ld->errs);
}

__attribute__((format(printf, 3, 4))) static void report(loader_t *ld, const ag_toml_value_t *at,
                                                         const char *fmt, ...)
{
    ld->errors++;
    va_list ap;
    va_start(ap, fmt);
    diag(ld, at, "", fmt, ap);
    va_end(ap);
}

__attribute__((format(printf, 3, 4))) static void warn(loader_t *ld, const ag_toml_value_t *at,
                                                       const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    diag(ld, at, "warning: ", fmt, ap);
    va_end(ap);
}

static bool get_number(const ag_toml_value_t *v, double *out)
{
    int64_t i;
    if (ag_toml_get_int(v, &i) == 0) {
        *out = (double)i;
        return true;
    }
    return ag_toml_get_float(v, out) == 0 && isfinite(*out);
}

static void apply_key(loader_t *ld, const cfg_key_t *k, const ag_toml_value_t *v)
{
    char *field = (char *)ld->cfg + k->offset;
    const char *s;
    size_t slen;
    double num;
    bool b;
    switch (k->type) {
    case K_STRING:
        if (ag_toml_get_string(v, &s, &slen) != 0 || memchr(s, '\0', slen)) {
            report(ld, v, "aigate.%s must be a string", k->name);
            return;
        }
        free(*(char **)field);
        *(char **)field = xstrndup(s, slen);
        return;
    case K_BOOL:
        if (ag_toml_get_bool(v, &b) != 0) {
            report(ld, v, "aigate.%s must be true or false", k->name);
            return;
        }
        *(bool *)field = b;
        return;
    case K_STRLIST: {
        if (ag_toml_type(v) != AG_TOML_ARRAY) {
            report(ld, v, "aigate.%s must be an array of strings", k->name);
            return;
        }
        char ***list = (char ***)field;
        free_strlist(list);
        size_t n = ag_toml_array_len(v), used = 0;
        *list = calloc(n + 1, sizeof(char *));
        AG_ASSERT(*list != NULL);
        for (size_t i = 0; i < n; i++) {
            const ag_toml_value_t *item = ag_toml_array_at(v, i);
            if (ag_toml_get_string(item, &s, &slen) != 0 || slen == 0 || memchr(s, '\0', slen)) {
                report(ld, item, "aigate.%s[%zu] must be a non-empty string", k->name, i);
                continue;
            }
            (*list)[used++] = xstrndup(s, slen);
        }
        return;
    }
    case K_MODELS:
        if (ag_toml_type(v) != AG_TOML_ARRAY) {
            report(ld, v, "aigate.%s must be an array of strings", k->name);
            return;
        }
        for (size_t i = 0; i < ag_toml_array_len(v); i++) {
            const ag_toml_value_t *item = ag_toml_array_at(v, i);
            if (ag_toml_get_string(item, &s, &slen) != 0 || slen == 0) {
                report(ld, item, "aigate.%s[%zu] must be a non-empty string", k->name, i);
                continue;
            }
            add_model(ld->cfg, s, slen);
        }
        return;
    default:
        break;
    }
    if (!get_number(v, &num)) {
        report(ld, v, "aigate.%s must be a number", k->name);
        return;
    }
    if (k->type != K_SECONDS && num != floor(num)) {
        report(ld, v, "aigate.%s must be a whole number", k->name);
        return;
    }
    if (num < k->min || num > k->max) {
        report(ld, v, "aigate.%s = %g is out of range [%g, %g]", k->name, num, k->min, k->max);
        return;
    }
    store_number(k, field, num);
}

/* [aigate.prices] "model" = { input = USD/MTok, output = USD/MTok } */
static void load_prices(loader_t *ld, const ag_toml_value_t *t)
{
    if (ag_toml_type(t) != AG_TOML_TABLE) {
        report(ld, t, "aigate.prices must be a table");
        return;
    }
    for (size_t i = 0; i < ag_toml_table_len(t); i++) {
        const char *model;
        size_t mlen;
        const ag_toml_value_t *v = ag_toml_table_at(t, i, &model, &mlen);
        double in, out;
        if (ag_toml_type(v) != AG_TOML_TABLE || !get_number(ag_toml_table_get(v, "input"), &in) ||
            !get_number(ag_toml_table_get(v, "output"), &out) || in < 0 || out < 0) {
            report(
                ld, v,
                "aigate.prices.\"%.*s\" must be { input = N, output = N } (USD per million tokens)",
                (int)mlen, model);
            continue;
        }
        char *m = xstrndup(model, mlen);
        add_price(ld->cfg, m, in, out);
        free(m);
    }
}

/* [[kv_namespaces]] / [[r2_buckets]]: binding plus id / bucket_name. */
static void load_bindings(loader_t *ld, const ag_toml_value_t *arr, const char *what,
                          const char *target_key, ag_config_binding_t **out, size_t *nout)
{
    if (ag_toml_type(arr) != AG_TOML_ARRAY) {
        report(ld, arr, "%s must be an array of tables ([[%s]])", what, what);
        return;
    }
    for (size_t i = 0; i < ag_toml_array_len(arr); i++) {
        const ag_toml_value_t *t = ag_toml_array_at(arr, i);
        const char *b, *tg = NULL;
        size_t blen, tlen = 0;
        if (ag_toml_type(t) != AG_TOML_TABLE ||
            ag_toml_get_string(ag_toml_table_get(t, "binding"), &b, &blen) != 0 || blen == 0) {
            report(ld, t, "%s[%zu] needs a binding name", what, i);
            continue;
        }
        const ag_toml_value_t *tv = ag_toml_table_get(t, target_key);
        if (tv && ag_toml_get_string(tv, &tg, &tlen) != 0) {
            report(ld, tv, "%s[%zu].%s must be a string", what, i, target_key);
            continue;
        }
        ag_config_binding_t *p = realloc(*out, (*nout + 1) * sizeof(*p));
        AG_ASSERT(p != NULL);
        *out = p;
        p[*nout].name = xstrndup(b, strnlen(b, blen));
        p[*nout].target = tg ? xstrndup(tg, strnlen(tg, tlen)) : NULL;
        (*nout)++;
    }
}

/* [[unsafe.bindings]] with type = "ratelimit": name, namespace_id, simple = {limit, period}. */
static void load_unsafe(loader_t *ld, const ag_toml_value_t *unsafe)
{
    const ag_toml_value_t *arr = ag_toml_table_get(unsafe, "bindings");
    for (size_t i = 0; i < ag_toml_array_len(arr); i++) {
        const ag_toml_value_t *t = ag_toml_array_at(arr, i);
        const char *type, *name, *ns;
        size_t tlen, nlen, nslen;
        if (ag_toml_get_string(ag_toml_table_get(t, "type"), &type, &tlen) != 0 ||
            strcmp(type, "ratelimit") != 0)
            continue;
        if (ag_toml_get_string(ag_toml_table_get(t, "name"), &name, &nlen) != 0 || nlen == 0) {
            report(ld, t, "ratelimit binding needs a name");
            continue;
        }
        if (ag_toml_get_string(ag_toml_table_get(t, "namespace_id"), &ns, &nslen) != 0) {
            ns = name;
            nslen = nlen;
        }
        const ag_toml_value_t *simple = ag_toml_table_get(t, "simple");
        int64_t limit = 0, period = 0;
        if (ag_toml_get_int(ag_toml_table_get(simple, "limit"), &limit) != 0 || limit < 1 ||
            limit > 1000000000 ||
            ag_toml_get_int(ag_toml_table_get(simple, "period"), &period) != 0 || period < 1 ||
            period > 86400) {
            report(ld, simple ? simple : t,
                   "ratelimit binding %s needs simple = { limit = N, period = S } with N >= 1 and "
                   "S in 1..86400",
                   name);
            continue;
        }
        ag_config_ratelimit_t *p =
            realloc(ld->cfg->ratelimits, (ld->cfg->nratelimits + 1) * sizeof(*p));
        AG_ASSERT(p != NULL);
        ld->cfg->ratelimits = p;
        p[ld->cfg->nratelimits++] = (ag_config_ratelimit_t){xstrndup(name, strnlen(name, nlen)),
                                                            xstrndup(ns, strnlen(ns, nslen)),
                                                            (unsigned)limit, (unsigned)period};
    }
}

static void load_aigate(loader_t *ld, const ag_toml_value_t *t)
{
    if (ag_toml_type(t) != AG_TOML_TABLE) {
        report(ld, t, "aigate must be a table");
        return;
    }
    for (size_t i = 0; i < ag_toml_table_len(t); i++) {
        const char *key;
        size_t klen;
        const ag_toml_value_t *v = ag_toml_table_at(t, i, &key, &klen);
        const cfg_key_t *k = NULL;
        for (size_t j = 0; j < AG_ARRAY_LEN(aigate_keys); j++) {
            if (strlen(aigate_keys[j].name) == klen && memcmp(aigate_keys[j].name, key, klen) == 0)
                k = &aigate_keys[j];
        }
        if (!k && klen == 6 && memcmp(key, "prices", 6) == 0) {
            load_prices(ld, v);
            continue;
        }
        if (!k) {
            warn(ld, v, "unknown key aigate.%.*s (ignored)", (int)klen, key);
            continue;
        }
        apply_key(ld, k, v);
    }
}

static void load_vars(loader_t *ld, const ag_toml_value_t *t)
{
    if (ag_toml_type(t) != AG_TOML_TABLE) {
        report(ld, t, "vars must be a table");
        return;
    }
    const char *s;
    size_t slen;
    const ag_toml_value_t *v = ag_toml_table_get(t, "MAX_TOKENS");
    if (v) {
        /* wrangler vars are strings ("1024"); a bare integer is accepted too. */
        int64_t n = -1;
        if (ag_toml_get_string(v, &s, &slen) == 0) {
            char *end = NULL;
            errno = 0;
            long long parsed = slen ? strtoll(s, &end, 10) : -1;
            if (slen && end == s + slen && errno == 0)
                n = parsed;
        } else if (ag_toml_get_int(v, &n) != 0) {
            n = -1;
        }
        if (n < 1 || n > 1000000)
            report(ld, v, "vars.MAX_TOKENS must be a whole number from 1 to 1000000");
        else
            ld->cfg->max_tokens = (unsigned)n;
    }
    v = ag_toml_table_get(t, "DEFAULT_MODEL");
    if (v) {
        if (ag_toml_get_string(v, &s, &slen) != 0 || slen == 0 || memchr(s, '\0', slen)) {
            report(ld, v, "vars.DEFAULT_MODEL must be a non-empty string");
        } else {
            free(ld->cfg->default_model);
            ld->cfg->default_model = xstrndup(s, slen);
        }
    }
    v = ag_toml_table_get(t, "ENVIRONMENT");
    if (v) {
        if (ag_toml_get_string(v, &s, &slen) != 0 || memchr(s, '\0', slen)) {
            report(ld, v, "vars.ENVIRONMENT must be a string");
        } else {
            free(ld->cfg->environment);
            ld->cfg->environment = xstrndup(s, slen);
        }
    }
}

static int read_file(const char *path, ag_buf_t *out)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return -errno;
    char chunk[8192];
    size_t n;
    int rc = 0;
    while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0) {
        rc = ag_buf_append(out, chunk, n);
        if (rc < 0)
            break;
    }
    if (rc == 0 && ferror(f))
        rc = -EIO;
    fclose(f);
    return rc;
}

int ag_config_load_file(ag_config_t *cfg, const char *path, FILE *errs)
{
    loader_t ld = {cfg, path, errs, 0};
    ag_buf_t text;
    ag_buf_init(&text, 16u << 20);
    int rc = read_file(path, &text);
    if (rc < 0) {
        if (errs)
            fprintf(errs, "%s: cannot read: %s\n", path, ag_strerror(rc));
        ag_buf_fini(&text);
        return AG_EBADCONFIG;
    }
    ag_toml_error_t terr;
    ag_toml_value_t *root = ag_toml_parse(text.data ? text.data : "", text.len, &terr);
    ag_buf_fini(&text);
    if (!root) {
        if (errs)
            fprintf(errs, "%s:%u:%u: %s\n", path, terr.line, terr.col, terr.message);
        return AG_EBADCONFIG;
    }
    free(cfg->path);
    cfg->path = xstrdup(path);
    for (size_t i = 0; i < ag_toml_table_len(root); i++) {
        const char *key;
        size_t klen;
        const ag_toml_value_t *v = ag_toml_table_at(root, i, &key, &klen);
        bool known = false;
        for (size_t j = 0; j < AG_ARRAY_LEN(wrangler_keys); j++) {
            if (strlen(wrangler_keys[j]) == klen && memcmp(wrangler_keys[j], key, klen) == 0)
                known = true;
        }
        if (!known)
            warn(&ld, v, "unknown key %.*s (ignored)", (int)klen, key);
    }
    const ag_toml_value_t *v = ag_toml_table_get(root, "name");
    if (v) {
        const char *s;
        size_t slen;
        if (ag_toml_get_string(v, &s, &slen) != 0) {
            report(&ld, v, "name must be a string");
        } else {
            free(cfg->name);
            cfg->name = xstrndup(s, strnlen(s, slen));
        }
    }
    v = ag_toml_table_get(root, "vars");
    if (v)
        load_vars(&ld, v);
    v = ag_toml_table_get(root, "kv_namespaces");
    if (v)
        load_bindings(&ld, v, "kv_namespaces", "id", &cfg->kv_namespaces, &cfg->nkv_namespaces);
    v = ag_toml_table_get(root, "r2_buckets");
    if (v)
        load_bindings(&ld, v, "r2_buckets", "bucket_name", &cfg->r2_buckets, &cfg->nr2_buckets);
    v = ag_toml_table_get(root, "unsafe");
    if (v)
        load_unsafe(&ld, v);
    v = ag_toml_table_get(root, "aigate");
    if (v)
        load_aigate(&ld, v);
    if ((double)cfg->rate_limit > (double)cfg->rate_period_s * 1e6)
        report(&ld, ag_toml_table_get(ag_toml_table_get(root, "aigate"), "rate_limit"),
               "aigate.rate_limit: %u per %u s is over one request per microsecond, the "
               "limiter's resolution",
               cfg->rate_limit, cfg->rate_period_s);
    if (cfg->rate_limit_binding && *cfg->rate_limit_binding &&
        !ag_config_ratelimit(cfg, cfg->rate_limit_binding))
        report(&ld, ag_toml_table_get(ag_toml_table_get(root, "aigate"), "rate_limit_binding"),
               "aigate.rate_limit_binding: no ratelimit binding named '%s' in [[unsafe.bindings]]",
               cfg->rate_limit_binding);
    if (cfg->messages_rate_limit_binding && *cfg->messages_rate_limit_binding &&
        !ag_config_ratelimit(cfg, cfg->messages_rate_limit_binding))
        report(&ld,
               ag_toml_table_get(ag_toml_table_get(root, "aigate"), "messages_rate_limit_binding"),
               "aigate.messages_rate_limit_binding: no ratelimit binding named '%s' in "
               "[[unsafe.bindings]]",
               cfg->messages_rate_limit_binding);
    if (strncmp(cfg->upstream, "http://", 7) != 0 && strncmp(cfg->upstream, "https://", 8) != 0)
        report(&ld, ag_toml_table_get(ag_toml_table_get(root, "aigate"), "upstream"),
               "aigate.upstream must be an http:// or https:// URL");
    ag_toml_free(root);
    return ld.errors ? AG_EBADCONFIG : 0;
}

const ag_config_ratelimit_t *ag_config_ratelimit(const ag_config_t *cfg, const char *name)
{
    for (size_t i = 0; i < cfg->nratelimits; i++) {
        if (strcmp(cfg->ratelimits[i].name, name) == 0)
            return &cfg->ratelimits[i];
    }
    return NULL;
}

const char *ag_config_r2_bucket(const ag_config_t *cfg, const char *binding)
{
    for (size_t i = 0; i < cfg->nr2_buckets; i++) {
        if (strcmp(cfg->r2_buckets[i].name, binding) == 0)
            return cfg->r2_buckets[i].target;
    }
    return NULL;
}

const char *ag_config_find(const char *explicit_path)
{
    if (explicit_path)
        return explicit_path;
    if (access("aigate.toml", F_OK) == 0)
        return "aigate.toml";
    if (access("wrangler.toml", F_OK) == 0)
        return "wrangler.toml";
    return NULL;
}

/* ---- secrets --------------------------------------------------------------- */

/* Finds NAME in a dotenv file (wrangler's .dev.vars): NAME=value lines, an
 * optional `export `, quotes, and # comments. Returns a malloc'd value or NULL. */
static char *dotenv_lookup(const char *path, const char *name)
{
    ag_buf_t text;
    ag_buf_init(&text, 1u << 20);
    if (read_file(path, &text) < 0 || !ag_buf_cstr(&text)) {
        ag_buf_fini(&text);
        return NULL;
    }
    char *found = NULL;
    size_t nlen = strlen(name);
    char *line = text.data;
    while (line && *line) {
        char *eol = strchr(line, '\n');
        if (eol)
            *eol = '\0';
        char *p = line;
        while (*p == ' ' || *p == '\t')
            p++;
        if (strncmp(p, "export ", 7) == 0)
            p += 7;
        if (strncmp(p, name, nlen) == 0) {
            char *q = p + nlen;
            while (*q == ' ' || *q == '\t')
                q++;
            if (*q == '=') {
                q++;
                while (*q == ' ' || *q == '\t')
                    q++;
                size_t vlen = strlen(q);
                while (vlen && (q[vlen - 1] == '\r' || q[vlen - 1] == ' ' || q[vlen - 1] == '\t'))
                    vlen--;
                if (vlen >= 2 && (q[0] == '"' || q[0] == '\'') && q[vlen - 1] == q[0]) {
                    q++;
                    vlen -= 2;
                } else {
                    char *hash = memchr(q, '#', vlen);
                    if (hash) {
                        vlen = (size_t)(hash - q);
                        while (vlen && (q[vlen - 1] == ' ' || q[vlen - 1] == '\t'))
                            vlen--;
                    }
                }
                free(found);
                found = xstrndup(q, vlen);
            }
        }
        line = eol ? eol + 1 : NULL;
    }
    explicit_bzero(text.data, text.cap);
    ag_buf_fini(&text);
    return found;
}

void ag_config_load_secrets(ag_config_t *cfg)
{
    const char *env = getenv("ANTHROPIC_API_KEY");
    char *key = NULL;
    if (env && *env)
        key = xstrdup(env);
    if (!key) {
        /* `aigate secret put`: the environment wins, then the secrets file, then .dev.vars. */
        int src = ag_secrets_get(cfg->data_dir, "ANTHROPIC_API_KEY", &key);
        if (src < 0 && src != AG_ENOTFOUND)
            fprintf(stderr, "aigate: cannot read the secrets file in %s: %s\n",
                    cfg->data_dir ? cfg->data_dir : "./.aigate", ag_strerror(src));
    }
    if (!key)
        key = dotenv_lookup(".dev.vars", "ANTHROPIC_API_KEY");
    if (key && !*key)
        AG_FREE(&key);
    if (cfg->anthropic_api_key) {
        explicit_bzero(cfg->anthropic_api_key, strlen(cfg->anthropic_api_key));
        free(cfg->anthropic_api_key);
    }
    cfg->anthropic_api_key = key;
}

void ag_config_print_reference(FILE *out)
{
    fprintf(out, "| key | type | default | range | meaning |\n|---|---|---|---|---|\n");
    for (size_t i = 0; i < AG_ARRAY_LEN(aigate_keys); i++) {
        const cfg_key_t *k = &aigate_keys[i];
        static const char *tn[] = {"string", "integer", "bytes",       "seconds",
                                   "bool",   "port",    "string list", "string list"};
        char def[64], range[64] = "";
        if (k->type == K_STRING)
            snprintf(def, sizeof(def), "`\"%s\"`", k->def_str);
        else if (k->type == K_BOOL)
            snprintf(def, sizeof(def), "`%s`", k->def_num ? "true" : "false");
        else if (k->type == K_STRLIST || k->type == K_MODELS)
            snprintf(def, sizeof(def), "`[]`");
        else
            snprintf(def, sizeof(def), "`%.15g`", k->def_num);
        if (k->type != K_STRING && k->type != K_BOOL && k->type != K_STRLIST && k->type != K_MODELS)
            snprintf(range, sizeof(range), "%.15g to %.15g", k->min, k->max);
        fprintf(out, "| `%s` | %s | %s | %s | %s |\n", k->name, tn[k->type], def, range, k->help);
    }
}
