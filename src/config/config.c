/* SPDX-License-Identifier: MIT
 *
 * config.c: defaults, the [aigate] key table, the wrangler.toml reader and
 * secrets. Every error names file:line:col; parsing goes on after an error so
 * that one run reports them all (HAProxy does the same).
 */
#include "util/platform.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config/config.h"
#include "config/toml.h"
#include "util/buf.h"
#include "util/errors.h"
#include "util/fs.h"

typedef enum {
    K_STRING,
    K_UINT,
    K_SIZE,
    K_SECONDS,
    K_BOOL,
    K_PORT,
    K_MODELS,
    K_STRLIST,
    K_ALIAS, /* deprecated: sets def_str in [aigate.routes."/v1/messages"] */
    K_ENUM,  /* one of enum_choices() (default def_str), stored as its index (int) */
    K_USD,   /* US dollars, fractions allowed, stored as a double */
} key_type_t;

typedef struct cfg_key {
    const char *name;
    key_type_t type;
    double min, max;
    double def_num;      /* numeric and bool defaults */
    const char *def_str; /* string defaults; K_ALIAS: the route key it sets */
    size_t offset;
    const char *help;
    ag_key_apply_t apply; /* omitted: reloadable */
} cfg_key_t;

#define OFF(f) offsetof(ag_config_t, f)
#define ROFF(f) offsetof(ag_config_route_t, f)
#define RESTART AG_KEY_RESTART
#define RELOAD AG_KEY_RELOAD

static const char *const auth_modes[] = {"off", "optional", "required", NULL};
static const char *const upstream_clients[] = {"native", "curl", NULL};
static const char *const redis_fail_modes[] = {"closed", "open", NULL};
static const char *const cache_backends[] = {"redis", "local", NULL};
static const char *const *enum_choices(size_t offset);

/* The [aigate] table. Durations are seconds (fractions allowed), stored as ms. */
static const cfg_key_t aigate_keys[] = {
    {"host", K_STRING, 0, 0, 0, "127.0.0.1", OFF(host), "address to listen on", RESTART},
    {"port", K_PORT, 0, 65535, 8787, NULL, OFF(port), "TCP port (0: any free port)", RESTART},
    {"threads", K_UINT, 0, 256, 0, NULL, OFF(threads), "event-loop threads; 0: one per core",
     RESTART},
    {"max_body_bytes", K_SIZE, 1, 1 << 30, 1 << 20, NULL, OFF(max_body_bytes),
     "largest request body; over it: 413", RESTART},
    {"max_header_bytes", K_SIZE, 1024, 1 << 20, 16384, NULL, OFF(max_header_bytes),
     "largest request line + headers; over it: 431", RESTART},
    {"max_connections", K_UINT, 1, 1 << 24, 10000, NULL, OFF(max_connections),
     "open client connections; over it: 503 and close", RESTART},
    {"header_timeout", K_SECONDS, 0.001, 3600, 10, NULL, OFF(header_timeout_ms),
     "seconds to receive a whole request head (slowloris guard)", RESTART},
    {"idle_timeout", K_SECONDS, 0.001, 86400, 60, NULL, OFF(idle_timeout_ms),
     "seconds a keep-alive connection may sit idle", RESTART},
    {"body_timeout", K_SECONDS, 0.001, 3600, 30, NULL, OFF(body_timeout_ms),
     "seconds without progress while receiving a body", RESTART},
    {"drain_timeout", K_SECONDS, 0, 3600, 10, NULL, OFF(drain_timeout_ms),
     "seconds in-flight requests get to finish on shutdown", RESTART},
    /* What one slow or greedy client may hold (issue 16: hardening). */
    {"body_min_rate", K_UINT, 0, 1 << 30, 1024, NULL, OFF(body_min_rate),
     "bytes/s a body must average: it gets body_timeout plus a second per body_min_rate bytes "
     "received; 0: no minimum",
     RESTART},
    {"body_deadline", K_SECONDS, 0, 86400, 300, NULL, OFF(body_deadline_ms),
     "seconds for a whole request body, however it trickles; 0: none", RESTART},
    {"send_timeout", K_SECONDS, 0, 3600, 30, NULL, OFF(send_timeout_ms),
     "seconds an answer may wait on a client that reads nothing before the connection is "
     "closed; 0: none",
     RESTART},
    {"max_queued_bytes", K_SIZE, 4096, 1 << 30, 1 << 20, NULL, OFF(max_queued_bytes),
     "answer bytes queued for one connection before the server stops reading its next requests",
     RESTART},
    {"max_connections_per_client", K_UINT, 0, 1 << 24, 1000, NULL, OFF(max_connections_per_client),
     "open connections per client address (IPv6: per ipv6_prefix); over it: 503 and close. "
     "Peers in trusted_proxies / trusted_proxies_cf are not counted; 0: no cap",
     RESTART},
    {"ipv6_prefix", K_UINT, 1, 128, 64, NULL, OFF(ipv6_prefix),
     "bits of an IPv6 address that make one client for rate limits and connection caps (logs "
     "keep the whole address)",
     RESTART},
    {"upstream", K_STRING, 0, 0, 0, "https://api.anthropic.com", OFF(upstream),
     "Anthropic API base URL", RELOAD},
    {"upstream_client", K_ENUM, 0, 0, 0, "native", OFF(upstream_client),
     "HTTP client for upstreams: \"native\" (aigate's own HTTP/1.1 client, http:// and https://, a "
     "keep-alive pool per worker) or \"curl\" (libcurl)",
     RESTART},
    {"upstream_ca_file", K_STRING, 0, 0, 0, "", OFF(upstream_ca_file),
     "PEM file of the CAs an https:// upstream's certificate must chain to; \"\": the system store "
     "(/etc/ssl/certs)",
     RESTART},
    {"upstream_connect_timeout", K_SECONDS, 0.001, 600, 10, NULL, OFF(upstream_connect_timeout_ms),
     "seconds to connect to upstream", RELOAD},
    {"upstream_timeout", K_SECONDS, 0.001, 3600, 120, NULL, OFF(upstream_timeout_ms),
     "seconds for a whole non-streaming upstream call", RELOAD},
    {"stream_idle_timeout", K_SECONDS, 0.001, 3600, 60, NULL, OFF(stream_idle_timeout_ms),
     "seconds a stream may go without a byte (pings count) before it is cut", RELOAD},
    {"upstream_retries", K_UINT, 0, 10, 2, NULL, OFF(upstream_retries),
     "attempts after the first on 429, 5xx, 529, a reset or a timeout", RELOAD},
    {"upstream_retry_base", K_SECONDS, 0.001, 60, 0.5, NULL, OFF(upstream_retry_base_ms),
     "first backoff ceiling in seconds (doubles per retry, full jitter)", RELOAD},
    {"upstream_retry_max", K_SECONDS, 0.001, 600, 8, NULL, OFF(upstream_retry_max_ms),
     "largest backoff ceiling in seconds", RELOAD},
    {"upstream_retry_max_wait", K_SECONDS, 0, 3600, 60, NULL, OFF(upstream_retry_max_wait_ms),
     "longest retry-after obeyed; a longer one ends the retries", RELOAD},
    {"upstream_deadline", K_SECONDS, 0.001, 86400, 180, NULL, OFF(upstream_deadline_ms),
     "seconds one client request may spend on the upstream, retries and waits included", RELOAD},
    {"queue_max", K_UINT, 0, 1000000, 1000, NULL, OFF(queue_max),
     "requests that may wait per model while the upstream's rate window is spent", RELOAD},
    {"queue_timeout", K_SECONDS, 0, 3600, 30, NULL, OFF(queue_timeout_ms),
     "seconds a request may wait for the upstream's rate window; then 503", RELOAD},
    {"api_key_secret", K_STRING, 0, 0, 0, "ANTHROPIC_API_KEY", OFF(api_key_secret),
     "name of the secret holding the upstream key (environment, `aigate secret put`, .dev.vars)",
     AG_KEY_SECRET},
    {"admin_listen", K_STRING, 0, 0, 0, "127.0.0.1:8788", OFF(admin_listen),
     "address of the operators' listener (metrics, tail, stats, dashboard); \"\": none", RESTART},
    {"admin_token_secret", K_STRING, 0, 0, 0, "AIGATE_ADMIN_TOKEN", OFF(admin_token_secret),
     "name of the secret every admin request must present as a Bearer token (required when "
     "admin_listen is not a loopback address)",
     AG_KEY_SECRET},
    /* HTTPS (issue 13): reloadable, the on/off switch aside (main.c keeps it). */
    {"tls_cert", K_STRING, 0, 0, 0, "", OFF(tls_cert),
     "PEM certificate chain (leaf first) to serve HTTPS with; \"\": plain HTTP. Read again on "
     "every reload: new connections get the new certificate, open ones keep theirs",
     RELOAD},
    {"tls_key", K_STRING, 0, 0, 0, "", OFF(tls_key),
     "PEM private key of tls_cert (set both or neither); read again on every reload", RELOAD},
    {"admin_tls", K_BOOL, 0, 1, 0, NULL, OFF(admin_tls),
     "serve the admin listener over HTTPS too, with tls_cert and tls_key", RESTART},
    {"data_dir", K_STRING, 0, 0, 0, "./.aigate", OFF(data_dir),
     "folder for KV stores, buckets, secrets", RESTART},
    {"access_log", K_BOOL, 0, 1, 1, NULL, OFF(access_log), "one JSON line per request on stderr",
     RESTART},
    {"prompt_max_length", K_UINT, 1, 1 << 24, 4000, NULL, OFF(prompt_max_length),
     "longest prompt, in UTF-16 code units (JavaScript's length)", RELOAD},
    {"models", K_MODELS, 0, 0, 0, NULL, OFF(models),
     "models a client may ask for, besides DEFAULT_MODEL", RELOAD},
    {"rate_limit", K_UINT, 1, 1e9, 20, NULL, OFF(rate_limit),
     "requests per rate_period per client, on every AI route", RELOAD},
    {"rate_period", K_UINT, 1, 86400, 60, NULL, OFF(rate_period_s), "seconds of the rate window",
     RELOAD},
    {"rate_limit_binding", K_STRING, 0, 0, 0, "", OFF(rate_limit_binding),
     "use the limit and period of this ratelimit binding ([[unsafe.bindings]]) instead. Routes "
     "naming bindings with one namespace_id share counters",
     RELOAD},
    {"messages_rate_limit", K_ALIAS, 0, 1e9, 0, "rate_limit", 0,
     "deprecated: rate_limit in [aigate.routes.\"/v1/messages\"]", RELOAD},
    {"messages_rate_period", K_ALIAS, 0, 86400, 0, "rate_period", 0,
     "deprecated: rate_period in [aigate.routes.\"/v1/messages\"]", RELOAD},
    {"messages_rate_limit_binding", K_ALIAS, 0, 0, 0, "rate_limit_binding", 0,
     "deprecated: rate_limit_binding in [aigate.routes.\"/v1/messages\"]", RELOAD},
    {"trusted_proxies", K_STRLIST, 0, 0, 0, NULL, OFF(trusted_proxies),
     "addresses or CIDRs whose X-Forwarded-For / Forwarded are believed (walked from the right, "
     "past every trusted hop)",
     RELOAD},
    {"trusted_proxies_cf", K_STRLIST, 0, 0, 0, NULL, OFF(trusted_proxies_cf),
     "addresses or CIDRs of Cloudflare's edge: only their CF-Connecting-IP is believed", RELOAD},
    {"cache", K_BOOL, 0, 1, 1, NULL, OFF(cache), "cache AI answers", RELOAD},
    {"cache_ttl", K_SECONDS, 1, 31536000, 3600, NULL, OFF(cache_ttl_ms),
     "seconds a cached answer lives", RELOAD},
    {"cache_binding", K_STRING, 0, 0, 0, "CACHE", OFF(cache_binding),
     "KV namespace binding that holds the cache", RESTART},
    {"usage_log", K_BOOL, 0, 1, 1, NULL, OFF(usage_log), "write usage entries to the object store",
     RESTART},
    {"usage_log_binding", K_STRING, 0, 0, 0, "STORAGE", OFF(usage_log_binding),
     "R2 binding whose bucket gets logs/YYYY/MM/DD/*.ndjson", RESTART},
    {"usage_log_flush", K_SECONDS, 0.001, 3600, 1, NULL, OFF(usage_log_flush_ms),
     "seconds between usage-log flushes at most", RESTART},
    /* Client access (platform.md section 6). */
    {"auth", K_ENUM, 0, 0, 0, "off", OFF(auth),
     "client API keys (`aigate keys`): \"off\" (none asked), \"optional\" (a key presented must be "
     "valid), \"required\" (every AI request needs one: 401 without)",
     RELOAD},
    {"budget_daily_usd", K_USD, 0, 1e9, 0, NULL, OFF(budget_daily_usd),
     "US dollars the whole gateway may spend per UTC day, reserved before each upstream call "
     "(0: no global budget)",
     RELOAD},
    {"cors_origins", K_STRLIST, 0, 0, 0, "*", OFF(cors_origins),
     "origins allowed by CORS (\"*\" or \"https://host[:port]\"); the default [\"*\"] applies to "
     "/api/generate only, other routes answer CORS only to origins listed here",
     RELOAD},
    /* Bounded disk (hardening): the cache and the usage log stop growing. */
    {"cache_max_bytes", K_SIZE, 1 << 20, 1099511627776.0, 256 << 20, NULL, OFF(cache_max_bytes),
     "most bytes the cache store may take on disk; past it the soonest-expiring entries are "
     "evicted",
     RESTART},
    {"usage_log_retention_days", K_UINT, 0, 36500, 30, NULL, OFF(usage_log_retention_days),
     "days of usage log kept (older days are deleted; closed days are gzipped); 0: forever",
     RESTART},
    {"usage_log_spool_max", K_SIZE, 0, 1099511627776.0, 1 << 30, NULL, OFF(usage_log_spool_max),
     "most bytes of usage-log batches kept in the local spool (data_dir/spool/usage-log/BUCKET) "
     "while an S3 log store refuses puts; when full, batches wait in memory, then new entries are "
     "refused and counted as dropped; 0: no spool",
     RESTART},
    /* Scale-out (platform.md section 7): the Redis of [aigate.redis] url. */
    {"redis_fail", K_ENUM, 0, 0, 0, "closed", OFF(redis_fail),
     "while Redis is down or slow: \"closed\" (rate limits answer 503 with Retry-After) or "
     "\"open\" (requests go on under this instance's own limits)",
     RELOAD},
    {"redis_timeout", K_SECONDS, 0.001, 60, 0.5, NULL, OFF(redis_timeout_ms),
     "seconds a Redis command may take (and a connect); past it Redis counts as down for that "
     "request",
     RESTART},
    {"cache_backend", K_ENUM, 0, 0, 0, "redis", OFF(cache_backend),
     "where cached answers live when [aigate.redis] is set: \"redis\" (shared by every "
     "instance) or \"local\" (this instance's store in cache_binding); without Redis, local",
     RESTART},
};

/* The values of a K_ENUM key, NULL-terminated (by field, to keep the table's rows short). */
static const char *const *enum_choices(size_t offset)
{
    if (offset == OFF(upstream_client))
        return upstream_clients;
    if (offset == OFF(redis_fail))
        return redis_fail_modes;
    if (offset == OFF(cache_backend))
        return cache_backends;
    AG_ASSERT(offset == OFF(auth));
    return auth_modes;
}

/* [aigate.routes."PATH"]: what a route may set for itself; unset, [aigate]'s holds. */
static const cfg_key_t route_keys[] = {
    {"rate_limit", K_UINT, 1, 1e9, 0, NULL, ROFF(rate_limit),
     "requests per rate_period per client on this route", RELOAD},
    {"rate_period", K_UINT, 1, 86400, 0, NULL, ROFF(rate_period_s), "seconds of the rate window",
     RELOAD},
    {"rate_limit_binding", K_STRING, 0, 0, 0, NULL, ROFF(rate_limit_binding),
     "ratelimit binding whose numbers apply on this route", RELOAD},
    {"cache", K_BOOL, 0, 1, 0, NULL, ROFF(cache), "cache this route's answers", RELOAD},
    {"models", K_MODELS, 0, 0, 0, NULL, ROFF(models),
     "models a client may ask for on this route, besides DEFAULT_MODEL (replaces [aigate]'s)",
     RELOAD},
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

/* Model lists: NULL-terminated, with their count in the size_t that follows. */
static void free_models(char ***models, size_t *n)
{
    for (size_t i = 0; i < *n; i++)
        free((*models)[i]);
    AG_FREE(models);
    *n = 0;
}

static bool models_contain(char *const *models, size_t n, const char *m, size_t len)
{
    for (size_t i = 0; i < n; i++) {
        if (strlen(models[i]) == len && memcmp(models[i], m, len) == 0)
            return true;
    }
    return false;
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
        free((*b)[i].backend);
    }
    AG_FREE(b);
    *n = 0;
}

static void task_free(ag_config_task_t *t);

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

static void add_model(char ***models, size_t *n, const char *m, size_t len)
{
    if (*models && models_contain(*models, *n, m, len))
        return;
    char **p = realloc(*models, (*n + 2) * sizeof(char *));
    AG_ASSERT(p != NULL);
    *models = p;
    p[(*n)++] = xstrndup(m, len);
    p[*n] = NULL;
}

/* Where the items of the string list at `offset` of the config were written:
 * an array of n positions, replacing the list's earlier one. */
static ag_config_pos_t *list_pos_slot(ag_config_t *cfg, size_t offset, size_t n)
{
    size_t i = 0;
    while (i < cfg->nlist_at && cfg->list_at[i].offset != offset)
        i++;
    if (i == cfg->nlist_at) {
        void *grown = realloc(cfg->list_at, (i + 1) * sizeof(*cfg->list_at));
        AG_ASSERT(grown != NULL);
        cfg->list_at = grown;
        cfg->list_at[i] = (ag__config_list_at_t){.offset = offset};
        cfg->nlist_at++;
    }
    free(cfg->list_at[i].at);
    cfg->list_at[i].at = calloc(n ? n : 1, sizeof(ag_config_pos_t));
    AG_ASSERT(cfg->list_at[i].at != NULL);
    cfg->list_at[i].n = n;
    return cfg->list_at[i].at;
}

ag_config_pos_t ag_config_list_pos(const ag_config_t *cfg, char **const *list, size_t i)
{
    size_t offset = (size_t)((const char *)list - (const char *)cfg);
    for (size_t k = 0; k < cfg->nlist_at; k++) {
        if (cfg->list_at[k].offset == offset && i < cfg->list_at[k].n)
            return cfg->list_at[k].at[i];
    }
    return (ag_config_pos_t){0, 0};
}

void ag_config_redact_url(const char *url, char *out, size_t cap)
{
    /* scheme://user:pass@host/...: the userinfo is everything between "//"
     * and the last '@' before the path. */
    const char *auth = url ? strstr(url, "://") : NULL;
    if (!auth) {
        snprintf(out, cap, "%s", url ? url : "");
        return;
    }
    auth += 3;
    size_t hostpart = strcspn(auth, "/?#");
    const char *at = NULL;
    for (const char *p = auth; p < auth + hostpart; p++) {
        if (*p == '@')
            at = p;
    }
    if (!at)
        snprintf(out, cap, "%s", url);
    else
        snprintf(out, cap, "%.*s***@%s", (int)(auth - url), url, at + 1);
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
    case K_USD:
        *(double *)field = num;
        break;
    default:
        break;
    }
}

static void free_routing(ag_config_t *cfg)
{
    for (size_t i = 0; i < cfg->nrouting; i++) {
        free(cfg->routing[i].task);
        free(cfg->routing[i].model);
    }
    AG_FREE(&cfg->routing);
    cfg->nrouting = 0;
}

static void add_routing(ag_config_t *cfg, const char *task, size_t tlen, const char *model,
                        size_t mlen)
{
    ag_config_task_route_t *p = realloc(cfg->routing, (cfg->nrouting + 1) * sizeof(*p));
    AG_ASSERT(p != NULL);
    cfg->routing = p;
    p[cfg->nrouting].task = xstrndup(task, tlen);
    p[cfg->nrouting].model = xstrndup(model, mlen);
    cfg->nrouting++;
}

void ag_config_defaults(ag_config_t *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->s3_path_style = true; /* R2, MinIO and S3 all take endpoint/bucket/key */
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
        case K_USD:
            store_number(k, field, k->def_num);
            break;
        case K_BOOL:
            *(bool *)field = k->def_num != 0;
            break;
        case K_ENUM: {
            const char *const *ch = enum_choices(k->offset);
            for (int c = 0; ch[c]; c++) {
                if (strcmp(ch[c], k->def_str) == 0)
                    *(int *)field = c;
            }
            break;
        }
        case K_STRLIST:
            if (k->def_str) {
                char **list = calloc(2, sizeof(char *));
                AG_ASSERT(list != NULL);
                list[0] = xstrdup(k->def_str);
                *(char ***)field = list;
            }
            break;
        case K_MODELS:
        case K_ALIAS:
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
    /* The seed's pattern 3. */
    static const char *const seed_routing[][2] = {
        {"classify", "claude-haiku-4-5"},     {"summarize", "claude-haiku-4-5"},
        {"generate", "claude-haiku-4-5"},     {"analyze", "claude-sonnet-4-6"},
        {"code_review", "claude-sonnet-4-6"}, {"strategy", "claude-opus-4-6"},
    };
    for (size_t i = 0; i < AG_ARRAY_LEN(seed_routing); i++)
        add_routing(cfg, seed_routing[i][0], strlen(seed_routing[i][0]), seed_routing[i][1],
                    strlen(seed_routing[i][1]));
}

void ag_config_fini(ag_config_t *cfg)
{
    for (size_t i = 0; i < AG_ARRAY_LEN(aigate_keys); i++) {
        if (aigate_keys[i].type == K_STRING)
            AG_FREE((char **)((char *)cfg + aigate_keys[i].offset));
    }
    free_models(&cfg->models, &cfg->nmodels);
    free_strlist(&cfg->trusted_proxies);
    free_strlist(&cfg->cors_origins);
    for (size_t i = 0; i < cfg->nlist_at; i++)
        free(cfg->list_at[i].at);
    AG_FREE(&cfg->list_at);
    cfg->nlist_at = 0;
    free_strlist(&cfg->trusted_proxies_cf);
    for (size_t i = 0; i < cfg->nroutes; i++) {
        free(cfg->routes[i].path);
        free(cfg->routes[i].rate_limit_binding);
        free_models(&cfg->routes[i].models, &cfg->routes[i].nmodels);
    }
    AG_FREE(&cfg->routes);
    cfg->nroutes = 0;
    free_strlist(&cfg->crons);
    AG_FREE(&cfg->cron_at);
    cfg->ncrons = 0;
    for (size_t i = 0; i < cfg->ntasks; i++)
        task_free(&cfg->tasks[i]);
    AG_FREE(&cfg->tasks);
    cfg->ntasks = 0;
    AG_FREE(&cfg->smtp_url);
    AG_FREE(&cfg->smtp_from);
    AG_FREE(&cfg->smtp_user);
    AG_FREE(&cfg->s3_endpoint);
    AG_FREE(&cfg->s3_region);
    AG_FREE(&cfg->redis_url);
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
    for (size_t i = 0; i < cfg->nfallbacks; i++) {
        free(cfg->fallbacks[i].model);
        free_strlist(&cfg->fallbacks[i].chain);
    }
    AG_FREE(&cfg->fallbacks);
    cfg->nfallbacks = 0;
    free_routing(cfg);
    AG_FREE(&cfg->path);
    AG_FREE(&cfg->name);
    AG_FREE(&cfg->environment);
    AG_FREE(&cfg->default_model);
}

const char *ag_config_task_model(const ag_config_t *cfg, const char *task, size_t len)
{
    for (size_t i = 0; task && i < cfg->nrouting; i++) {
        if (strlen(cfg->routing[i].task) == len && memcmp(cfg->routing[i].task, task, len) == 0)
            return cfg->routing[i].model;
    }
    return cfg->default_model;
}

const ag_config_fallback_t *ag_config_fallbacks(const ag_config_t *cfg, const char *model)
{
    for (size_t i = 0; model && i < cfg->nfallbacks; i++) {
        if (strcmp(cfg->fallbacks[i].model, model) == 0)
            return &cfg->fallbacks[i];
    }
    return NULL;
}

bool ag_config_model_allowed(const ag_config_t *cfg, const char *model, size_t len)
{
    if (cfg->default_model && strlen(cfg->default_model) == len &&
        memcmp(cfg->default_model, model, len) == 0)
        return true;
    return models_contain(cfg->models, cfg->nmodels, model, len);
}

const ag_config_route_t *ag_config_route(const ag_config_t *cfg, const char *path)
{
    for (size_t i = 0; i < cfg->nroutes; i++) {
        if (strcmp(cfg->routes[i].path, path) == 0)
            return &cfg->routes[i];
    }
    return NULL;
}

void ag_config_route_settings(const ag_config_t *cfg, const char *path, ag_route_settings_t *out)
{
    const ag_config_route_t *r = ag_config_route(cfg, path);
    out->rate_limit = r && r->rate_limit ? r->rate_limit : cfg->rate_limit;
    out->rate_period_s = r && r->rate_period_s ? r->rate_period_s : cfg->rate_period_s;
    const char *b = r && r->rate_limit_binding ? r->rate_limit_binding : cfg->rate_limit_binding;
    out->rate_limit_binding = b && *b ? b : NULL;
    out->cache = r && r->cache >= 0 ? r->cache != 0 : cfg->cache;
    out->models = r && r->models ? r->models : cfg->models;
    out->nmodels = r && r->models ? r->nmodels : cfg->nmodels;
}

int ag_config_key_apply(const char *name)
{
    const cfg_key_t *table = aigate_keys;
    size_t n = AG_ARRAY_LEN(aigate_keys);
    if (strncmp(name, "routes.", 7) == 0) {
        table = route_keys;
        n = AG_ARRAY_LEN(route_keys);
        name += 7;
    }
    for (size_t i = 0; i < n; i++) {
        if (strcmp(table[i].name, name) == 0)
            return (int)table[i].apply;
    }
    return -1;
}

/* ---- comparing two configs (reload) ------------------------------------------ */

static bool str_differ(const char *a, const char *b)
{
    return (a == NULL) != (b == NULL) || (a && strcmp(a, b) != 0);
}

/* NULL-terminated lists. */
static bool strlist_differ(char *const *a, char *const *b)
{
    for (; a && b && *a && *b; a++, b++) {
        if (strcmp(*a, *b) != 0)
            return true;
    }
    return (a && *a) || (b && *b);
}

static bool key_differs(const cfg_key_t *k, const ag_config_t *a, const ag_config_t *b)
{
    const char *fa = (const char *)a + k->offset, *fb = (const char *)b + k->offset;
    switch (k->type) {
    case K_STRING:
        return str_differ(*(char *const *)fa, *(char *const *)fb);
    case K_UINT:
    case K_SECONDS:
        return *(const unsigned *)fa != *(const unsigned *)fb;
    case K_PORT:
    case K_ENUM:
        return *(const int *)fa != *(const int *)fb;
    case K_SIZE:
        return *(const size_t *)fa != *(const size_t *)fb;
    case K_USD:
        return *(const double *)fa != *(const double *)fb;
    case K_BOOL:
        return *(const bool *)fa != *(const bool *)fb;
    case K_STRLIST:
    case K_MODELS:
        return strlist_differ(*(char **const *)fa, *(char **const *)fb);
    case K_ALIAS:
        return false; /* compared as the route it sets */
    }
    return false;
}

static bool routes_differ(const ag_config_t *a, const ag_config_t *b)
{
    if (a->nroutes != b->nroutes)
        return true;
    for (size_t i = 0; i < a->nroutes; i++) {
        const ag_config_route_t *x = &a->routes[i], *y = &b->routes[i];
        if (strcmp(x->path, y->path) != 0 || x->rate_limit != y->rate_limit ||
            x->rate_period_s != y->rate_period_s ||
            str_differ(x->rate_limit_binding, y->rate_limit_binding) || x->cache != y->cache ||
            strlist_differ(x->models, y->models) || (x->models == NULL) != (y->models == NULL))
            return true;
    }
    return false;
}

static bool bindings_differ(const ag_config_binding_t *a, size_t na, const ag_config_binding_t *b,
                            size_t nb)
{
    if (na != nb)
        return true;
    for (size_t i = 0; i < na; i++) {
        if (strcmp(a[i].name, b[i].name) != 0 || str_differ(a[i].target, b[i].target) ||
            str_differ(a[i].backend, b[i].backend))
            return true;
    }
    return false;
}

static bool ratelimits_differ(const ag_config_t *a, const ag_config_t *b)
{
    if (a->nratelimits != b->nratelimits)
        return true;
    for (size_t i = 0; i < a->nratelimits; i++) {
        const ag_config_ratelimit_t *x = &a->ratelimits[i], *y = &b->ratelimits[i];
        if (strcmp(x->name, y->name) != 0 || str_differ(x->namespace_id, y->namespace_id) ||
            x->limit != y->limit || x->period_s != y->period_s)
            return true;
    }
    return false;
}

static bool tasks_differ(const ag_config_t *a, const ag_config_t *b)
{
    if (a->ntasks != b->ntasks)
        return true;
    for (size_t i = 0; i < a->ntasks; i++) {
        const ag_config_task_t *x = &a->tasks[i], *y = &b->tasks[i];
        if (str_differ(x->name, y->name) || str_differ(x->cron, y->cron) ||
            str_differ(x->task, y->task) || str_differ(x->model, y->model) ||
            x->max_tokens != y->max_tokens || str_differ(x->prompt, y->prompt) ||
            str_differ(x->out_r2, y->out_r2) || str_differ(x->out_kv, y->out_kv) ||
            str_differ(x->out_webhook, y->out_webhook) ||
            str_differ(x->out_email_to, y->out_email_to) ||
            str_differ(x->out_email_subject, y->out_email_subject) ||
            strlist_differ(x->out_command, y->out_command))
            return true;
    }
    return false;
}

static bool prices_differ(const ag_config_t *a, const ag_config_t *b)
{
    if (a->nprices != b->nprices)
        return true;
    for (size_t i = 0; i < a->nprices; i++) {
        if (strcmp(a->prices[i].model, b->prices[i].model) != 0 ||
            a->prices[i].input_per_mtok != b->prices[i].input_per_mtok ||
            a->prices[i].output_per_mtok != b->prices[i].output_per_mtok)
            return true;
    }
    return false;
}

static bool fallbacks_differ(const ag_config_t *a, const ag_config_t *b)
{
    if (a->nfallbacks != b->nfallbacks)
        return true;
    for (size_t i = 0; i < a->nfallbacks; i++) {
        if (strcmp(a->fallbacks[i].model, b->fallbacks[i].model) != 0 ||
            strlist_differ(a->fallbacks[i].chain, b->fallbacks[i].chain))
            return true;
    }
    return false;
}

static bool routing_differ(const ag_config_t *a, const ag_config_t *b)
{
    if (a->nrouting != b->nrouting)
        return true;
    for (size_t i = 0; i < a->nrouting; i++) {
        if (strcmp(a->routing[i].task, b->routing[i].task) != 0 ||
            strcmp(a->routing[i].model, b->routing[i].model) != 0)
            return true;
    }
    return false;
}

size_t ag_config_diff(const ag_config_t *a, const ag_config_t *b, const char **names, size_t cap)
{
    size_t n = 0;
#define CHANGED(name)                                                                              \
    do {                                                                                           \
        if (n < cap)                                                                               \
            names[n] = (name);                                                                     \
        n++;                                                                                       \
    } while (0)
    for (size_t i = 0; i < AG_ARRAY_LEN(aigate_keys); i++) {
        if (key_differs(&aigate_keys[i], a, b))
            CHANGED(aigate_keys[i].name);
    }
    if (routes_differ(a, b))
        CHANGED("routes");
    if (str_differ(a->name, b->name))
        CHANGED("name");
    if (str_differ(a->environment, b->environment))
        CHANGED("vars.ENVIRONMENT");
    if (str_differ(a->default_model, b->default_model))
        CHANGED("vars.DEFAULT_MODEL");
    if (a->max_tokens != b->max_tokens)
        CHANGED("vars.MAX_TOKENS");
    if (bindings_differ(a->kv_namespaces, a->nkv_namespaces, b->kv_namespaces, b->nkv_namespaces))
        CHANGED("kv_namespaces");
    if (bindings_differ(a->r2_buckets, a->nr2_buckets, b->r2_buckets, b->nr2_buckets))
        CHANGED("r2_buckets");
    if (ratelimits_differ(a, b))
        CHANGED("unsafe.bindings");
    if (strlist_differ(a->crons, b->crons))
        CHANGED("triggers.crons");
    if (tasks_differ(a, b))
        CHANGED("tasks");
    if (str_differ(a->smtp_url, b->smtp_url) || str_differ(a->smtp_from, b->smtp_from) ||
        str_differ(a->smtp_user, b->smtp_user))
        CHANGED("smtp");
    if (str_differ(a->s3_endpoint, b->s3_endpoint) || str_differ(a->s3_region, b->s3_region) ||
        a->s3_path_style != b->s3_path_style)
        CHANGED("s3");
    if (str_differ(a->redis_url, b->redis_url))
        CHANGED("redis.url");
    if (prices_differ(a, b))
        CHANGED("prices");
    if (fallbacks_differ(a, b))
        CHANGED("fallbacks");
    if (routing_differ(a, b))
        CHANGED("routing");
#undef CHANGED
    return n;
}

static size_t scalar_size(key_type_t t)
{
    switch (t) {
    case K_UINT:
    case K_SECONDS:
        return sizeof(unsigned);
    case K_PORT:
    case K_ENUM:
        return sizeof(int);
    case K_SIZE:
        return sizeof(size_t);
    case K_USD:
        return sizeof(double);
    case K_BOOL:
        return sizeof(bool);
    default:
        return 0;
    }
}

void ag_config_keep_restart(ag_config_t *dst, const ag_config_t *running)
{
    for (size_t i = 0; i < AG_ARRAY_LEN(aigate_keys); i++) {
        const cfg_key_t *k = &aigate_keys[i];
        if (k->apply != AG_KEY_RESTART && strcmp(k->name, "admin_token_secret") != 0)
            continue;
        char *fd = (char *)dst + k->offset;
        const char *fr = (const char *)running + k->offset;
        if (k->type == K_STRING) {
            free(*(char **)fd);
            *(char **)fd = xstrdup(*(char *const *)fr);
        } else {
            AG_ASSERT(scalar_size(k->type) > 0); /* no restart-only list keys */
            memcpy(fd, fr, scalar_size(k->type));
        }
    }
    free(dst->name);
    dst->name = running->name ? xstrdup(running->name) : NULL;
    /* Every worker holds a connection to the Redis it started with. */
    free(dst->redis_url);
    dst->redis_url = running->redis_url ? xstrdup(running->redis_url) : NULL;
}

/* ---- loading --------------------------------------------------------------- */

typedef struct loader {
    ag_config_t *cfg;
    const char *path;
    FILE *errs;
    int errors;
    const ag_toml_value_t *s3_binding_at;    /* a [[r2_buckets]] backend = "s3" */
    const ag_toml_value_t *redis_binding_at; /* a [[kv_namespaces]] backend = "redis" */
    const ag_toml_value_t *s3_table_at;      /* [aigate.s3] */
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

__attribute__((format(printf, 4, 5))) static void report_at(loader_t *ld, unsigned line,
                                                            unsigned col, const char *fmt, ...)
{
    ld->errors++;
    if (!ld->errs)
        return;
    va_list ap;
    va_start(ap, fmt);
    fprintf(ld->errs, "%s:%u:%u: ", ld->path, line, col);
    vfprintf(ld->errs, fmt, ap);
    fputc('\n', ld->errs);
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

/* Stores v into the key's field of `base` (the config, or one route's table);
 * `table` names the table in messages ("aigate", "aigate.routes.\"/x\""). */
static void apply_key(loader_t *ld, const cfg_key_t *k, const ag_toml_value_t *v, void *base,
                      const char *table)
{
    char *field = (char *)base + k->offset;
    const char *s;
    size_t slen;
    double num;
    bool b;
    switch (k->type) {
    case K_STRING:
        if (ag_toml_get_string(v, &s, &slen) != 0 || memchr(s, '\0', slen)) {
            report(ld, v, "%s.%s must be a string", table, k->name);
            return;
        }
        free(*(char **)field);
        *(char **)field = xstrndup(s, slen);
        return;
    case K_ENUM: {
        const char *const *ch = enum_choices(k->offset);
        bool is_string = ag_toml_get_string(v, &s, &slen) == 0;
        for (int c = 0; is_string && ch[c]; c++) {
            if (strlen(ch[c]) == slen && memcmp(ch[c], s, slen) == 0) {
                *(int *)field = c;
                return;
            }
        }
        char list[128] = "";
        for (int c = 0; ch[c]; c++)
            snprintf(list + strlen(list), sizeof(list) - strlen(list), "%s\"%s\"", c ? ", " : "",
                     ch[c]);
        report(ld, v, "%s.%s must be one of %s", table, k->name, list);
        return;
    }
    case K_BOOL:
        if (ag_toml_get_bool(v, &b) != 0) {
            report(ld, v, "%s.%s must be true or false", table, k->name);
            return;
        }
        if (base == ld->cfg)
            *(bool *)field = b;
        else
            *(int *)field = b; /* a route's -1 means unset */
        return;
    case K_STRLIST: {
        if (ag_toml_type(v) != AG_TOML_ARRAY) {
            report(ld, v, "%s.%s must be an array of strings", table, k->name);
            return;
        }
        char ***list = (char ***)field;
        free_strlist(list);
        size_t n = ag_toml_array_len(v), used = 0;
        *list = calloc(n + 1, sizeof(char *));
        AG_ASSERT(*list != NULL);
        ag_config_pos_t *at = base == ld->cfg ? list_pos_slot(ld->cfg, k->offset, n) : NULL;
        for (size_t i = 0; i < n; i++) {
            const ag_toml_value_t *item = ag_toml_array_at(v, i);
            if (ag_toml_get_string(item, &s, &slen) != 0 || slen == 0 || memchr(s, '\0', slen)) {
                report(ld, item, "%s.%s[%zu] must be a non-empty string", table, k->name, i);
                continue;
            }
            if (at)
                at[used] = (ag_config_pos_t){ag_toml_line(item), ag_toml_col(item)};
            (*list)[used++] = xstrndup(s, slen);
        }
        return;
    }
    case K_MODELS: {
        if (ag_toml_type(v) != AG_TOML_ARRAY) {
            report(ld, v, "%s.%s must be an array of strings", table, k->name);
            return;
        }
        /* The count is the size_t right after the list in both structs. */
        char ***models = (char ***)field;
        size_t *n = (size_t *)(field + sizeof(char **));
        if (!*models) {
            *models = calloc(1, sizeof(char *));
            AG_ASSERT(*models != NULL);
        }
        for (size_t i = 0; i < ag_toml_array_len(v); i++) {
            const ag_toml_value_t *item = ag_toml_array_at(v, i);
            if (ag_toml_get_string(item, &s, &slen) != 0 || slen == 0) {
                report(ld, item, "%s.%s[%zu] must be a non-empty string", table, k->name, i);
                continue;
            }
            add_model(models, n, s, slen);
        }
        return;
    }
    default:
        break;
    }
    if (!get_number(v, &num)) {
        report(ld, v, "%s.%s must be a number", table, k->name);
        return;
    }
    if (k->type != K_SECONDS && k->type != K_USD && num != floor(num)) {
        report(ld, v, "%s.%s must be a whole number", table, k->name);
        return;
    }
    if (num < k->min || num > k->max) {
        report(ld, v, "%s.%s = %g is out of range [%g, %g]", table, k->name, num, k->min, k->max);
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
        /* [[r2_buckets]] backend = "fs" (the directory, the default) or "s3"
         * ([aigate.s3]); [[kv_namespaces]] backend = "lmdb" or "redis"
         * ([aigate.redis]), unset: ag_config_kv_backend() decides. */
        bool r2 = strcmp(what, "r2_buckets") == 0;
        const char *be = NULL, *shared = r2 ? "s3" : "redis";
        size_t belen = 0;
        const ag_toml_value_t *bv = ag_toml_table_get(t, "backend");
        if (bv && (ag_toml_get_string(bv, &be, &belen) != 0 || strlen(be) != belen ||
                   !(strcmp(be, r2 ? "fs" : "lmdb") == 0 || strcmp(be, shared) == 0))) {
            report(ld, bv,
                   r2 ? "%s[%zu].backend must be \"fs\" (a folder under data_dir) or \"s3\" "
                        "(the store of [aigate.s3])"
                      : "%s[%zu].backend must be \"lmdb\" (a store under data_dir) or "
                        "\"redis\" (the Redis of [aigate.redis], shared by every instance)",
                   what, i);
            continue;
        }
        if (bv && strcmp(be, shared) == 0 && r2)
            ld->s3_binding_at = bv;
        if (bv && strcmp(be, shared) == 0 && !r2)
            ld->redis_binding_at = bv;
        ag_config_binding_t *p = realloc(*out, (*nout + 1) * sizeof(*p));
        AG_ASSERT(p != NULL);
        *out = p;
        p[*nout].name = xstrndup(b, strnlen(b, blen));
        p[*nout].target = tg ? xstrndup(tg, strnlen(tg, tlen)) : NULL;
        /* KV keeps "lmdb" too: named, it overrides the response cache's default. */
        p[*nout].backend = be && (!r2 || strcmp(be, shared) == 0) ? xstrdup(be) : NULL;
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

/* The model lists are read through one pointer: the count follows the list. */
_Static_assert(offsetof(ag_config_t, nmodels) == offsetof(ag_config_t, models) + sizeof(char **),
               "nmodels follows models");
_Static_assert(offsetof(ag_config_route_t, nmodels) ==
                   offsetof(ag_config_route_t, models) + sizeof(char **),
               "nmodels follows models");

static const cfg_key_t *find_key(const cfg_key_t *table, size_t n, const char *key, size_t klen)
{
    for (size_t j = 0; j < n; j++) {
        if (strlen(table[j].name) == klen && memcmp(table[j].name, key, klen) == 0)
            return &table[j];
    }
    return NULL;
}

/* The route table for `path`, created (all unset) when missing. */
static ag_config_route_t *route_table(ag_config_t *cfg, const char *path, size_t len,
                                      const ag_toml_value_t *at)
{
    for (size_t i = 0; i < cfg->nroutes; i++) {
        if (strlen(cfg->routes[i].path) == len && memcmp(cfg->routes[i].path, path, len) == 0)
            return &cfg->routes[i];
    }
    ag_config_route_t *p = realloc(cfg->routes, (cfg->nroutes + 1) * sizeof(*p));
    AG_ASSERT(p != NULL);
    cfg->routes = p;
    p = &cfg->routes[cfg->nroutes++];
    memset(p, 0, sizeof(*p));
    p->path = xstrndup(path, len);
    p->cache = -1;
    p->line = at ? ag_toml_line(at) : 1;
    p->col = at ? ag_toml_col(at) : 1;
    return p;
}

/* [aigate.routes."PATH"] tables. */
static void load_routes(loader_t *ld, const ag_toml_value_t *t)
{
    if (ag_toml_type(t) != AG_TOML_TABLE) {
        report(ld, t, "aigate.routes must be a table of route paths");
        return;
    }
    for (size_t i = 0; i < ag_toml_table_len(t); i++) {
        const char *path;
        size_t plen;
        const ag_toml_value_t *rt = ag_toml_table_at(t, i, &path, &plen);
        if (plen == 0 || path[0] != '/' || memchr(path, '\0', plen)) {
            report(ld, rt, "aigate.routes.\"%.*s\": a route is a path starting with /", (int)plen,
                   path);
            continue;
        }
        if (ag_toml_type(rt) != AG_TOML_TABLE) {
            report(ld, rt, "aigate.routes.\"%.*s\" must be a table", (int)plen, path);
            continue;
        }
        ag_config_route_t *r = route_table(ld->cfg, path, plen, rt);
        char name[128];
        snprintf(name, sizeof(name), "aigate.routes.\"%.*s\"", (int)(plen < 96 ? plen : 96), path);
        for (size_t j = 0; j < ag_toml_table_len(rt); j++) {
            const char *key;
            size_t klen;
            const ag_toml_value_t *v = ag_toml_table_at(rt, j, &key, &klen);
            const cfg_key_t *k = find_key(route_keys, AG_ARRAY_LEN(route_keys), key, klen);
            if (!k) {
                warn(ld, v, "unknown key %s.%.*s (ignored)", name, (int)klen, key);
                continue;
            }
            apply_key(ld, k, v, r, name);
        }
    }
}

/* A deprecated messages_* key: sets its route key for /v1/messages unless the
 * routes table set it (the new spelling wins). 0 and "" keep meaning "as [aigate]". */
static void apply_alias(loader_t *ld, const cfg_key_t *k, const ag_toml_value_t *v,
                        const ag_config_route_t *before)
{
    warn(ld, v, "aigate.%s is deprecated: set %s in [aigate.routes.\"/v1/messages\"]", k->name,
         k->def_str);
    ag_config_route_t *r = route_table(ld->cfg, "/v1/messages", 12, NULL);
    const cfg_key_t *rk =
        find_key(route_keys, AG_ARRAY_LEN(route_keys), k->def_str, strlen(k->def_str));
    AG_ASSERT(rk != NULL);
    bool set_before =
        before && ((rk->offset == ROFF(rate_limit) && before->rate_limit) ||
                   (rk->offset == ROFF(rate_period_s) && before->rate_period_s) ||
                   (rk->offset == ROFF(rate_limit_binding) && before->rate_limit_binding));
    if (set_before)
        return;
    int64_t num;
    const char *s;
    size_t slen;
    if ((ag_toml_get_int(v, &num) == 0 && num == 0) ||
        (ag_toml_get_string(v, &s, &slen) == 0 && slen == 0))
        return;
    cfg_key_t alias = *rk;
    alias.min = 1;
    alias.max = k->max;
    apply_key(ld, &alias, v, r, "aigate");
}

static ag_config_pos_t pos_of(const ag_toml_value_t *v)
{
    return (ag_config_pos_t){v ? ag_toml_line(v) : 1, v ? ag_toml_col(v) : 1};
}

/* A string field of a table; *out keeps NULL when absent. @return false on a wrong type. */
static bool opt_string(loader_t *ld, const ag_toml_value_t *t, const char *key, const char *what,
                       char **out, ag_config_pos_t *at)
{
    const ag_toml_value_t *v = ag_toml_table_get(t, key);
    if (!v)
        return true;
    const char *s;
    size_t len;
    if (ag_toml_get_string(v, &s, &len) != 0 || len == 0 || memchr(s, '\0', len)) {
        report(ld, v, "%s.%s must be a non-empty string", what, key);
        return false;
    }
    free(*out);
    *out = xstrndup(s, len);
    if (at)
        *at = pos_of(v);
    return true;
}

static void task_free(ag_config_task_t *t)
{
    free(t->name);
    free(t->cron);
    free(t->task);
    free(t->model);
    free(t->prompt);
    free(t->out_r2);
    free(t->out_kv);
    free(t->out_webhook);
    free(t->out_email_to);
    free(t->out_email_subject);
    free_strlist(&t->out_command);
}

/* [[aigate.tasks]]: name, cron, task or model, max_tokens, prompt, output.* */
static void load_tasks(loader_t *ld, const ag_toml_value_t *arr)
{
    if (ag_toml_type(arr) != AG_TOML_ARRAY) {
        report(ld, arr, "aigate.tasks must be an array of tables ([[aigate.tasks]])");
        return;
    }
    static const char *const known[] = {"name",       "cron",   "task",  "model",
                                        "max_tokens", "prompt", "output"};
    static const char *const outputs[] = {"r2", "kv", "webhook", "email", "command"};
    for (size_t i = 0; i < ag_toml_array_len(arr); i++) {
        const ag_toml_value_t *t = ag_toml_array_at(arr, i);
        if (ag_toml_type(t) != AG_TOML_TABLE) {
            report(ld, t, "aigate.tasks[%zu] must be a table", i);
            continue;
        }
        ag_config_task_t task;
        memset(&task, 0, sizeof(task));
        task.at = pos_of(t);
        char what[48];
        snprintf(what, sizeof(what), "aigate.tasks[%zu]", i);
        bool ok = opt_string(ld, t, "name", what, &task.name, NULL) &&
                  opt_string(ld, t, "cron", what, &task.cron, &task.cron_at) &&
                  opt_string(ld, t, "task", what, &task.task, NULL) &&
                  opt_string(ld, t, "model", what, &task.model, NULL) &&
                  opt_string(ld, t, "prompt", what, &task.prompt, &task.prompt_at);
        for (size_t k = 0; k < ag_toml_table_len(t); k++) {
            const char *key;
            size_t klen;
            const ag_toml_value_t *v = ag_toml_table_at(t, k, &key, &klen);
            bool is_known = false;
            for (size_t j = 0; j < AG_ARRAY_LEN(known); j++)
                is_known =
                    is_known || (strlen(known[j]) == klen && memcmp(known[j], key, klen) == 0);
            if (!is_known)
                warn(ld, v, "unknown key %s.%.*s (ignored)", what, (int)klen, key);
        }
        const ag_toml_value_t *mt = ag_toml_table_get(t, "max_tokens");
        int64_t n;
        if (mt && (ag_toml_get_int(mt, &n) != 0 || n < 1 || n > 1000000)) {
            report(ld, mt, "%s.max_tokens must be a whole number from 1 to 1000000", what);
            ok = false;
        } else if (mt) {
            task.max_tokens = (unsigned)n;
        }
        if (ok && !task.name)
            report(ld, t, "%s needs a name", what), ok = false;
        if (ok && !task.cron)
            report(ld, t, "%s (%s) needs a cron expression", what, task.name), ok = false;
        if (ok && !task.prompt)
            report(ld, t, "%s (%s) needs a prompt", what, task.name), ok = false;
        if (ok && task.task && task.model)
            report(ld, t, "%s (%s): give task or model, not both", what, task.name), ok = false;
        for (size_t j = 0; ok && j < ld->cfg->ntasks; j++) {
            if (strcmp(ld->cfg->tasks[j].name, task.name) == 0)
                report(ld, t, "%s: a task named '%s' exists already", what, task.name), ok = false;
        }
        const ag_toml_value_t *out = ag_toml_table_get(t, "output");
        if (ok && out) {
            char ow[64];
            snprintf(ow, sizeof(ow), "%s.output", what);
            if (ag_toml_type(out) != AG_TOML_TABLE) {
                report(ld, out, "%s must be a table (output.r2 = \"BINDING:key\", ...)", ow);
                ok = false;
            }
            for (size_t k = 0; ok && k < ag_toml_table_len(out); k++) {
                const char *key;
                size_t klen;
                const ag_toml_value_t *v = ag_toml_table_at(out, k, &key, &klen);
                bool is_known = false;
                for (size_t j = 0; j < AG_ARRAY_LEN(outputs); j++)
                    is_known = is_known ||
                               (strlen(outputs[j]) == klen && memcmp(outputs[j], key, klen) == 0);
                if (!is_known) {
                    report(ld, v, "%s.%.*s: no such output (r2, kv, webhook, email, command)", ow,
                           (int)klen, key);
                    ok = false;
                }
            }
            ok = ok && opt_string(ld, out, "r2", ow, &task.out_r2, &task.r2_at) &&
                 opt_string(ld, out, "kv", ow, &task.out_kv, &task.kv_at) &&
                 opt_string(ld, out, "webhook", ow, &task.out_webhook, &task.webhook_at);
            const ag_toml_value_t *em = ag_toml_table_get(out, "email");
            if (ok && em) {
                task.email_at = pos_of(em);
                if (ag_toml_type(em) != AG_TOML_TABLE) {
                    report(ld, em, "%s.email must be { to = \"...\", subject = \"...\" }", ow);
                    ok = false;
                } else {
                    char ew[80];
                    snprintf(ew, sizeof(ew), "%s.email", ow);
                    ok = opt_string(ld, em, "to", ew, &task.out_email_to, NULL) &&
                         opt_string(ld, em, "subject", ew, &task.out_email_subject, NULL);
                    if (ok && !task.out_email_to)
                        report(ld, em, "%s needs to = \"address\"", ew), ok = false;
                }
            }
            const ag_toml_value_t *cmd = ag_toml_table_get(out, "command");
            if (ok && cmd) {
                task.command_at = pos_of(cmd);
                size_t nargs = ag_toml_type(cmd) == AG_TOML_ARRAY ? ag_toml_array_len(cmd) : 0;
                if (nargs == 0) {
                    report(ld, cmd, "%s.command must be a non-empty array of strings (argv)", ow);
                    ok = false;
                }
                task.out_command = nargs ? calloc(nargs + 1, sizeof(char *)) : NULL;
                for (size_t a = 0; ok && a < nargs; a++) {
                    const char *s;
                    size_t sl;
                    if (ag_toml_get_string(ag_toml_array_at(cmd, a), &s, &sl) != 0 || sl == 0 ||
                        memchr(s, '\0', sl)) {
                        report(ld, ag_toml_array_at(cmd, a), "%s.command[%zu] must be a string", ow,
                               a);
                        ok = false;
                    } else {
                        task.out_command[a] = xstrndup(s, sl);
                    }
                }
                if (ok && task.out_command[0][0] != '/')
                    report(ld, cmd, "%s.command[0] must be an absolute path (no shell, no PATH)",
                           ow),
                        ok = false;
            }
        }
        if (!ok) {
            task_free(&task);
            continue;
        }
        ag_config_task_t *p = realloc(ld->cfg->tasks, (ld->cfg->ntasks + 1) * sizeof(*p));
        AG_ASSERT(p != NULL);
        ld->cfg->tasks = p;
        p[ld->cfg->ntasks++] = task;
    }
}

/* [aigate.smtp]: url, from, user (the password is the secret SMTP_PASSWORD). */
static void load_smtp(loader_t *ld, const ag_toml_value_t *t)
{
    if (ag_toml_type(t) != AG_TOML_TABLE) {
        report(ld, t, "aigate.smtp must be a table");
        return;
    }
    opt_string(ld, t, "url", "aigate.smtp", &ld->cfg->smtp_url, NULL);
    opt_string(ld, t, "from", "aigate.smtp", &ld->cfg->smtp_from, NULL);
    opt_string(ld, t, "user", "aigate.smtp", &ld->cfg->smtp_user, NULL);
    const ag_toml_value_t *u = ag_toml_table_get(t, "url");
    if (ld->cfg->smtp_url && strncmp(ld->cfg->smtp_url, "smtp://", 7) != 0 &&
        strncmp(ld->cfg->smtp_url, "smtps://", 8) != 0)
        report(ld, u, "aigate.smtp.url must be smtp://host:port or smtps://host:port");
}

/* [aigate.s3]: endpoint, region, path_style (the keys are the secrets S3_ACCESS_KEY_ID and
 * S3_SECRET_ACCESS_KEY). */
static void load_s3(loader_t *ld, const ag_toml_value_t *t)
{
    if (ag_toml_type(t) != AG_TOML_TABLE) {
        report(ld, t, "aigate.s3 must be a table");
        return;
    }
    ld->s3_table_at = t;
    for (size_t i = 0; i < ag_toml_table_len(t); i++) {
        const char *key;
        size_t klen;
        const ag_toml_value_t *v = ag_toml_table_at(t, i, &key, &klen);
        if (!((klen == 8 && memcmp(key, "endpoint", 8) == 0) ||
              (klen == 6 && memcmp(key, "region", 6) == 0) ||
              (klen == 10 && memcmp(key, "path_style", 10) == 0)))
            warn(ld, v,
                 "unknown key aigate.s3.%.*s (ignored; the keys are the secrets "
                 "S3_ACCESS_KEY_ID and S3_SECRET_ACCESS_KEY)",
                 (int)klen, key);
    }
    opt_string(ld, t, "endpoint", "aigate.s3", &ld->cfg->s3_endpoint, NULL);
    opt_string(ld, t, "region", "aigate.s3", &ld->cfg->s3_region, NULL);
    const ag_toml_value_t *ps = ag_toml_table_get(t, "path_style");
    if (ps && ag_toml_type(ps) != AG_TOML_BOOL)
        report(ld, ps, "aigate.s3.path_style must be true or false");
    else if (ps)
        ag_toml_get_bool(ps, &ld->cfg->s3_path_style);
    const char *e = ld->cfg->s3_endpoint;
    if (e) {
        size_t sl = strncmp(e, "http://", 7) == 0 ? 7 : strncmp(e, "https://", 8) == 0 ? 8 : 0;
        size_t hl = sl ? strcspn(e + sl, "/?#@") : 0;
        if (sl == 0 || hl == 0 || !(e[sl + hl] == '\0' || strcmp(e + sl + hl, "/") == 0))
            report(ld, ag_toml_table_get(t, "endpoint"),
                   "aigate.s3.endpoint must be http(s)://host[:port] without a path or "
                   "credentials (\"https://ACCOUNT.r2.cloudflarestorage.com\", "
                   "\"http://127.0.0.1:9000\")");
    }
}

/* [aigate.redis]: url (redis://[[USER]:PASSWORD@]HOST[:PORT][/DB] or unix:///PATH; the
 * password may instead be the secret REDIS_PASSWORD). The store checks the URL's shape at
 * start; here only its scheme, so a typo is caught by `aigate deploy` too. */
static void load_redis(loader_t *ld, const ag_toml_value_t *t)
{
    if (ag_toml_type(t) != AG_TOML_TABLE) {
        report(ld, t, "aigate.redis must be a table");
        return;
    }
    for (size_t i = 0; i < ag_toml_table_len(t); i++) {
        const char *key;
        size_t klen;
        const ag_toml_value_t *v = ag_toml_table_at(t, i, &key, &klen);
        if (!(klen == 3 && memcmp(key, "url", 3) == 0))
            warn(ld, v,
                 "unknown key aigate.redis.%.*s (ignored; redis_fail and redis_timeout are "
                 "[aigate] keys, the password may be the secret REDIS_PASSWORD)",
                 (int)klen, key);
    }
    opt_string(ld, t, "url", "aigate.redis", &ld->cfg->redis_url, NULL);
    const char *u = ld->cfg->redis_url;
    if (u && strncmp(u, "redis://", 8) != 0 && strncmp(u, "unix://", 7) != 0)
        report(ld, ag_toml_table_get(t, "url"),
               "aigate.redis.url must be redis://[:PASSWORD@]HOST[:PORT][/DB] or "
               "unix:///PATH/redis.sock (TLS, rediss://, is not supported)");
}

/* [aigate.fallbacks] "MODEL" = ["NEXT", ...]: tried in order after MODEL's retries. */
static void load_fallbacks(loader_t *ld, const ag_toml_value_t *t)
{
    if (ag_toml_type(t) != AG_TOML_TABLE) {
        report(ld, t, "aigate.fallbacks must be a table of \"model\" = [\"model\", ...]");
        return;
    }
    for (size_t i = 0; i < ag_toml_table_len(t); i++) {
        const char *model;
        size_t mlen;
        const ag_toml_value_t *v = ag_toml_table_at(t, i, &model, &mlen);
        size_t n = ag_toml_array_len(v);
        if (ag_toml_type(v) != AG_TOML_ARRAY || n == 0 || memchr(model, '\0', mlen)) {
            report(ld, v, "aigate.fallbacks.\"%.*s\" must be a non-empty array of model names",
                   (int)mlen, model);
            continue;
        }
        ag_config_fallback_t f = {.model = xstrndup(model, mlen),
                                  .chain = calloc(n + 1, sizeof(char *))};
        AG_ASSERT(f.chain != NULL);
        bool ok = true;
        for (size_t j = 0; j < n; j++) {
            const ag_toml_value_t *e = ag_toml_array_at(v, j);
            const char *s;
            size_t sl;
            if (ag_toml_get_string(e, &s, &sl) != 0 || sl == 0 || memchr(s, '\0', sl) ||
                (sl == mlen && memcmp(s, model, sl) == 0)) {
                report(ld, e, "aigate.fallbacks.\"%.*s\"[%zu] must name another model", (int)mlen,
                       model, j);
                ok = false;
                break;
            }
            f.chain[f.n++] = xstrndup(s, sl);
        }
        if (!ok) {
            free(f.model);
            free_strlist(&f.chain);
            continue;
        }
        ag_config_fallback_t *p =
            realloc(ld->cfg->fallbacks, (ld->cfg->nfallbacks + 1) * sizeof(*p));
        AG_ASSERT(p != NULL);
        ld->cfg->fallbacks = p;
        p[ld->cfg->nfallbacks++] = f;
    }
}

/* [aigate.routing] TASK = "MODEL": replaces the seed's table as a whole. */
static void load_routing(loader_t *ld, const ag_toml_value_t *t)
{
    if (ag_toml_type(t) != AG_TOML_TABLE) {
        report(ld, t, "aigate.routing must be a table of task = \"model\"");
        return;
    }
    free_routing(ld->cfg);
    for (size_t i = 0; i < ag_toml_table_len(t); i++) {
        const char *task, *s;
        size_t tlen, sl;
        const ag_toml_value_t *v = ag_toml_table_at(t, i, &task, &tlen);
        if (ag_toml_get_string(v, &s, &sl) != 0 || sl == 0 || memchr(s, '\0', sl) ||
            memchr(task, '\0', tlen)) {
            report(ld, v, "aigate.routing.%.*s must be a model name", (int)tlen, task);
            continue;
        }
        add_routing(ld->cfg, task, tlen, s, sl);
    }
}

/* [triggers] crons = [...] */
static void load_triggers(loader_t *ld, const ag_toml_value_t *t)
{
    const ag_toml_value_t *c = ag_toml_table_get(t, "crons");
    if (!c)
        return;
    if (ag_toml_type(c) != AG_TOML_ARRAY) {
        report(ld, c, "triggers.crons must be an array of strings");
        return;
    }
    size_t n = ag_toml_array_len(c);
    ld->cfg->crons = calloc(n + 1, sizeof(char *));
    ld->cfg->cron_at = calloc(n + 1, sizeof(ag_config_pos_t));
    AG_ASSERT(ld->cfg->crons && ld->cfg->cron_at);
    for (size_t i = 0; i < n; i++) {
        const ag_toml_value_t *v = ag_toml_array_at(c, i);
        const char *s;
        size_t sl;
        if (ag_toml_get_string(v, &s, &sl) != 0 || memchr(s, '\0', sl)) {
            report(ld, v, "triggers.crons[%zu] must be a string", i);
            continue;
        }
        ld->cfg->cron_at[ld->cfg->ncrons] = pos_of(v);
        ld->cfg->crons[ld->cfg->ncrons++] = xstrndup(s, sl);
    }
}

static void load_aigate(loader_t *ld, const ag_toml_value_t *t)
{
    if (ag_toml_type(t) != AG_TOML_TABLE) {
        report(ld, t, "aigate must be a table");
        return;
    }
    /* Routes first: a deprecated alias must not override what they say. */
    const ag_toml_value_t *routes = ag_toml_table_get(t, "routes");
    if (routes)
        load_routes(ld, routes);
    const ag_config_route_t *msg = ag_config_route(ld->cfg, "/v1/messages");
    ag_config_route_t before = msg ? *msg : (ag_config_route_t){.cache = -1};
    for (size_t i = 0; i < ag_toml_table_len(t); i++) {
        const char *key;
        size_t klen;
        const ag_toml_value_t *v = ag_toml_table_at(t, i, &key, &klen);
        const cfg_key_t *k = find_key(aigate_keys, AG_ARRAY_LEN(aigate_keys), key, klen);
        if (!k && klen == 6 && memcmp(key, "prices", 6) == 0) {
            load_prices(ld, v);
            continue;
        }
        if (!k && klen == 6 && memcmp(key, "routes", 6) == 0)
            continue;
        if (!k && klen == 5 && memcmp(key, "tasks", 5) == 0) {
            load_tasks(ld, v);
            continue;
        }
        if (!k && klen == 4 && memcmp(key, "smtp", 4) == 0) {
            load_smtp(ld, v);
            continue;
        }
        if (!k && klen == 2 && memcmp(key, "s3", 2) == 0) {
            load_s3(ld, v);
            continue;
        }
        if (!k && klen == 5 && memcmp(key, "redis", 5) == 0) {
            load_redis(ld, v);
            continue;
        }
        if (!k && klen == 9 && memcmp(key, "fallbacks", 9) == 0) {
            load_fallbacks(ld, v);
            continue;
        }
        if (!k && klen == 7 && memcmp(key, "routing", 7) == 0) {
            load_routing(ld, v);
            continue;
        }
        if (!k) {
            warn(ld, v, "unknown key aigate.%.*s (ignored)", (int)klen, key);
            continue;
        }
        if (k->type == K_ALIAS)
            apply_alias(ld, k, v, msg ? &before : NULL);
        else
            apply_key(ld, k, v, ld->cfg, "aigate");
    }
}

/* Levenshtein distance of a and b, case-insensitively, both under 64 bytes. */
static size_t edit_distance(const char *a, size_t alen, const char *b, size_t blen)
{
    size_t row[65];
    if (alen > 64 || blen > 64)
        return SIZE_MAX;
    for (size_t j = 0; j <= blen; j++)
        row[j] = j;
    for (size_t i = 1; i <= alen; i++) {
        size_t diag = row[0];
        row[0] = i;
        for (size_t j = 1; j <= blen; j++) {
            size_t up = row[j];
            size_t cost = toupper((unsigned char)a[i - 1]) != toupper((unsigned char)b[j - 1]);
            size_t best = diag + cost;
            if (up + 1 < best)
                best = up + 1;
            if (row[j - 1] + 1 < best)
                best = row[j - 1] + 1;
            row[j] = best;
            diag = up;
        }
    }
    return row[blen];
}

/* The [vars] aigate reads; others are the Worker's own and left alone, unless
 * they look like a misspelling of ours (MAX_TOKEN), which would be ignored
 * silently otherwise. */
static const char *const known_vars[] = {"MAX_TOKENS", "DEFAULT_MODEL", "ENVIRONMENT"};

static void warn_unknown_vars(loader_t *ld, const ag_toml_value_t *t)
{
    for (size_t i = 0; i < ag_toml_table_len(t); i++) {
        const char *key;
        size_t klen;
        const ag_toml_value_t *v = ag_toml_table_at(t, i, &key, &klen);
        const char *near = NULL;
        bool exact = false;
        for (size_t j = 0; j < AG_ARRAY_LEN(known_vars); j++) {
            size_t kl = strlen(known_vars[j]);
            if (kl == klen && memcmp(known_vars[j], key, klen) == 0)
                exact = true;
            else if (!near && edit_distance(key, klen, known_vars[j], kl) <= 2)
                near = known_vars[j];
        }
        if (!exact && near)
            warn(ld, v, "vars.%.*s is not read by aigate: did you mean %s?", (int)klen, key, near);
    }
}

static void load_vars(loader_t *ld, const ag_toml_value_t *t)
{
    if (ag_toml_type(t) != AG_TOML_TABLE) {
        report(ld, t, "vars must be a table");
        return;
    }
    warn_unknown_vars(ld, t);
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

/* An origin as browsers send it: scheme://host[:port], nothing after. */
static bool origin_valid(const char *s, size_t len)
{
    size_t skip = len > 8 && memcmp(s, "https://", 8) == 0  ? 8
                  : len > 7 && memcmp(s, "http://", 7) == 0 ? 7
                                                            : 0;
    if (skip == 0)
        return false;
    for (size_t i = skip; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c <= ' ' || c >= 0x7f || c == '/' || c == '?' || c == '#' || c == '*' || c == ',')
            return false;
    }
    return true;
}

/* cors_origins = [...]: "*" or origins; non-strings were reported by apply_key. */
static void check_cors_origins(loader_t *ld, const ag_toml_value_t *v)
{
    ld->cfg->cors_origins_set = v != NULL;
    if (v == NULL || ag_toml_type(v) != AG_TOML_ARRAY)
        return;
    for (size_t i = 0; i < ag_toml_array_len(v); i++) {
        const ag_toml_value_t *item = ag_toml_array_at(v, i);
        const char *s;
        size_t len;
        if (ag_toml_get_string(item, &s, &len) != 0 || len == 0)
            continue;
        if (!(len == 1 && s[0] == '*') && !origin_valid(s, len))
            report(ld, item,
                   "aigate.cors_origins[%zu] must be \"*\" or an origin such as "
                   "\"https://app.example.com\" (scheme, host, optional port; no path or slash)",
                   i);
    }
}

int ag_config_load_file(ag_config_t *cfg, const char *path, FILE *errs)
{
    loader_t ld = {.cfg = cfg, .path = path, .errs = errs};
    ag_buf_t text;
    ag_buf_init(&text, 16u << 20);
    int rc = ag_fs_read_file(path, &text);
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
    v = ag_toml_table_get(root, "triggers");
    if (v && ag_toml_type(v) == AG_TOML_TABLE)
        load_triggers(&ld, v);
    v = ag_toml_table_get(root, "aigate");
    if (v)
        load_aigate(&ld, v);
    if (ld.s3_binding_at && !cfg->s3_endpoint)
        report(&ld, ld.s3_binding_at,
               "backend = \"s3\" needs [aigate.s3] endpoint = \"http(s)://host[:port]\" (and the "
               "secrets S3_ACCESS_KEY_ID and S3_SECRET_ACCESS_KEY)");
    if (ld.redis_binding_at && !cfg->redis_url)
        report(&ld, ld.redis_binding_at,
               "backend = \"redis\" needs [aigate.redis] url = \"redis://host:port/db\"");
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
    for (size_t i = 0; i < cfg->nroutes; i++) {
        const ag_config_route_t *r = &cfg->routes[i];
        if (r->rate_limit_binding && *r->rate_limit_binding &&
            !ag_config_ratelimit(cfg, r->rate_limit_binding))
            report_at(&ld, r->line, r->col,
                      "aigate.routes.\"%s\".rate_limit_binding: no ratelimit binding named "
                      "'%s' in [[unsafe.bindings]]",
                      r->path, r->rate_limit_binding);
    }
    check_cors_origins(&ld, ag_toml_table_get(ag_toml_table_get(root, "aigate"), "cors_origins"));
    if (strncmp(cfg->upstream, "http://", 7) != 0 && strncmp(cfg->upstream, "https://", 8) != 0)
        report(&ld, ag_toml_table_get(ag_toml_table_get(root, "aigate"), "upstream"),
               "aigate.upstream must be an http:// or https:// URL");
    /* A model without a price is logged at cost 0: spend would read too low. */
    const ag_toml_value_t *dm = ag_toml_table_get(ag_toml_table_get(root, "vars"), "DEFAULT_MODEL");
    if (dm && cfg->default_model) {
        bool priced = false;
        for (size_t i = 0; i < cfg->nprices; i++)
            priced |= strcmp(cfg->prices[i].model, cfg->default_model) == 0;
        if (!priced)
            warn(&ld, dm,
                 "vars.DEFAULT_MODEL \"%s\" has no price: its calls are logged at cost 0 (add "
                 "[aigate.prices] \"%s\" = { input = ..., output = ... })",
                 cfg->default_model, cfg->default_model);
    }
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

const ag_config_binding_t *ag_config_r2_binding(const ag_config_t *cfg, const char *binding)
{
    for (size_t i = 0; binding && i < cfg->nr2_buckets; i++) {
        if (strcmp(cfg->r2_buckets[i].name, binding) == 0)
            return &cfg->r2_buckets[i];
    }
    return NULL;
}

const ag_config_binding_t *ag_config_r2_by_bucket(const ag_config_t *cfg, const char *bucket)
{
    for (size_t i = 0; bucket && i < cfg->nr2_buckets; i++) {
        if (cfg->r2_buckets[i].target && strcmp(cfg->r2_buckets[i].target, bucket) == 0)
            return &cfg->r2_buckets[i];
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

const char *ag_config_kv_backend(const ag_config_t *cfg, const char *binding)
{
    for (size_t i = 0; i < cfg->nkv_namespaces; i++) {
        if (strcmp(cfg->kv_namespaces[i].name, binding) == 0 && cfg->kv_namespaces[i].backend)
            return cfg->kv_namespaces[i].backend;
    }
    bool cache = cfg->cache_binding && strcmp(cfg->cache_binding, binding) == 0;
    return cache && cfg->redis_url && cfg->cache_backend == 0 ? "redis" : "lmdb";
}

bool ag_config_cors_allowed(char *const *origins, bool origins_set, bool seed_route,
                            const char *origin, size_t len)
{
    if ((!origins_set && !seed_route) || origins == NULL || origin == NULL || len == 0)
        return false;
    for (char *const *o = origins; *o; o++) {
        if (strcmp(*o, "*") == 0 || (strlen(*o) == len && memcmp(*o, origin, len) == 0))
            return true;
    }
    return false;
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

static void print_keys(FILE *out, const cfg_key_t *keys, size_t n, bool inherit)
{
    static const char *const applies[] = {"reload", "restart", "secret"};
    fprintf(out, "| key | type | default | range | applies | meaning |\n"
                 "|---|---|---|---|---|---|\n");
    for (size_t i = 0; i < n; i++) {
        const cfg_key_t *k = &keys[i];
        static const char *tn[] = {"string", "integer", "bytes",       "seconds",
                                   "bool",   "port",    "string list", "string list",
                                   "alias",  "string",  "US dollars"};
        char def[64], range[64] = "";
        if (inherit)
            snprintf(def, sizeof(def), "[aigate]'s");
        else if (k->type == K_STRING)
            snprintf(def, sizeof(def), "`\"%s\"`", k->def_str);
        else if (k->type == K_BOOL)
            snprintf(def, sizeof(def), "`%s`", k->def_num ? "true" : "false");
        else if (k->type == K_ENUM)
            snprintf(def, sizeof(def), "`\"%s\"`", k->def_str);
        else if (k->type == K_STRLIST && k->def_str)
            snprintf(def, sizeof(def), "`[\"%s\"]`", k->def_str);
        else if (k->type == K_STRLIST || k->type == K_MODELS)
            snprintf(def, sizeof(def), "`[]`");
        else if (k->type == K_ALIAS)
            snprintf(def, sizeof(def), "unset");
        else
            snprintf(def, sizeof(def), "`%.15g`", k->def_num);
        if (k->type == K_UINT || k->type == K_SIZE || k->type == K_SECONDS || k->type == K_PORT ||
            k->type == K_USD)
            snprintf(range, sizeof(range), "%.15g to %.15g", k->min, k->max);
        for (int c = 0; k->type == K_ENUM && enum_choices(k->offset)[c]; c++)
            snprintf(range + strlen(range), sizeof(range) - strlen(range), "%s`\"%s\"`",
                     c ? ", " : "", enum_choices(k->offset)[c]);
        fprintf(out, "| `%s` | %s | %s | %s | %s | %s |\n", k->name, tn[k->type], def, range,
                applies[k->apply], k->help);
    }
}

void ag_config_print_reference(FILE *out)
{
    print_keys(out, aigate_keys, AG_ARRAY_LEN(aigate_keys), false);
    fprintf(out, "\n### `[aigate.routes.\"PATH\"]`\n\n"
                 "Settings of one route (`/api/generate`, `/v1/messages`); a key left out takes "
                 "its value from `[aigate]`.\n\n");
    print_keys(out, route_keys, AG_ARRAY_LEN(route_keys), true);
}
