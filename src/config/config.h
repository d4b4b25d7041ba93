/* SPDX-License-Identifier: MIT
 *
 * config.h: aigate's configuration model: embedded defaults, the wrangler.toml
 * / aigate.toml loader (one declarative key table), secrets, and validation.
 * Loaded once at start; read-only afterwards, so threads share it freely.
 */
#ifndef AG_CONFIG_CONFIG_H
#define AG_CONFIG_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

typedef struct ag_config_ratelimit {
    char *name;
    char *namespace_id;
    unsigned limit;
    unsigned period_s;
} ag_config_ratelimit_t;

typedef struct ag_config_binding {
    char *name;   /* binding */
    char *target; /* KV id or R2 bucket_name */
} ag_config_binding_t;

typedef struct ag_config_price {
    char *model;
    double input_per_mtok; /* USD per million input tokens */
    double output_per_mtok;
} ag_config_price_t;

typedef struct ag_config {
    char *path; /* the file loaded, or NULL for embedded defaults; owned */
    char *name; /* wrangler `name` */
    /* [aigate] */
    char *host;
    int port;
    unsigned threads; /* 0: one per core */
    size_t max_body_bytes;
    size_t max_header_bytes;
    unsigned max_connections;
    unsigned header_timeout_ms;
    unsigned idle_timeout_ms;
    unsigned body_timeout_ms;
    unsigned drain_timeout_ms;
    char *upstream;
    unsigned upstream_connect_timeout_ms;
    unsigned upstream_timeout_ms;
    unsigned stream_idle_timeout_ms;
    char *data_dir;
    bool access_log;
    unsigned prompt_max_length;
    char **models; /* allowlist: [aigate] models + DEFAULT_MODEL; NULL-terminated */
    size_t nmodels;
    /* rate limiting of the AI routes */
    unsigned rate_limit; /* requests per rate_period per client */
    unsigned rate_period_s;
    char *rate_limit_binding;     /* name of a ratelimit binding whose numbers apply, or NULL */
    unsigned messages_rate_limit; /* /v1/messages; 0: as rate_limit */
    unsigned messages_rate_period_s;
    char *messages_rate_limit_binding; /* "": as rate_limit_binding */
    char **trusted_proxies;            /* addresses/CIDRs whose forwarding headers are believed */
    /* response cache */
    bool cache;
    unsigned cache_ttl_ms;
    char *cache_binding; /* KV namespace binding of the cache */
    /* usage log */
    bool usage_log;
    char *usage_log_binding; /* R2 binding whose bucket holds logs/ */
    unsigned usage_log_flush_ms;
    ag_config_ratelimit_t *ratelimits; /* [[unsafe.bindings]] of type ratelimit */
    size_t nratelimits;
    ag_config_binding_t *kv_namespaces;
    size_t nkv_namespaces;
    ag_config_binding_t *r2_buckets; /* name = binding, target = bucket_name */
    size_t nr2_buckets;
    ag_config_price_t *prices;
    size_t nprices;
    /* [vars] */
    char *environment;
    char *default_model;
    unsigned max_tokens;
    /* secrets: never logged, never printed */
    char *anthropic_api_key;
} ag_config_t;

/** Fills `cfg` with the embedded defaults. Free with ag_config_fini(). */
void ag_config_defaults(ag_config_t *cfg);

/** Loads `path` over the defaults. Errors print as `file:line:col: message` to
 *  `errs` (all of them, not only the first); warnings (unknown keys) too.
 *  @return 0, or AG_EBADCONFIG when any error was found. */
int ag_config_load_file(ag_config_t *cfg, const char *path, FILE *errs);

/** Finds the config file: `explicit_path` if given, else aigate.toml, else
 *  wrangler.toml in the current folder; NULL when none (embedded defaults). */
const char *ag_config_find(const char *explicit_path);

/** Reads ANTHROPIC_API_KEY from the environment, else the secrets file in the
 *  data folder, else `.dev.vars` in the current folder. */
void ag_config_load_secrets(ag_config_t *cfg);

/** True when `model` is in the allowlist. */
bool ag_config_model_allowed(const ag_config_t *cfg, const char *model, size_t len);

/** The ratelimit binding called `name`, or NULL. */
const ag_config_ratelimit_t *ag_config_ratelimit(const ag_config_t *cfg, const char *name);

/** The bucket name bound to R2 binding `binding` (its bucket_name), or NULL. */
const char *ag_config_r2_bucket(const ag_config_t *cfg, const char *binding);

/** Prints the key table as Markdown (docs/config.md is generated from it). */
void ag_config_print_reference(FILE *out);

void ag_config_fini(ag_config_t *cfg);

#endif
