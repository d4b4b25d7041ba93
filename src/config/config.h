/* SPDX-License-Identifier: MIT
 *
 * config.h: aigate's configuration model: embedded defaults, the wrangler.toml
 * / aigate.toml loader (one declarative key table, each key marked reloadable,
 * restart-only or secret), per-route settings merged from [aigate], and
 * validation. Config holds secret names, never their values (store/secrets.h
 * resolves them). Read-only once loaded; the gateway copies what requests read.
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
    char *name;    /* binding */
    char *target;  /* KV id or R2 bucket_name */
    char *backend; /* [[r2_buckets]]: NULL (the directory, "fs") or "s3";
                    * [[kv_namespaces]]: NULL (unset), "lmdb" or "redis" */
} ag_config_binding_t;

typedef struct ag_config_price {
    char *model;
    double input_per_mtok; /* USD per million input tokens */
    double output_per_mtok;
} ag_config_price_t;

/* [aigate.routes."PATH"]: one route's own settings. A field left unset
 * inherits [aigate]'s, as an nginx location inherits from its server. */
typedef struct ag_config_route {
    char *path;
    unsigned line, col;       /* where the table is, for errors found later */
    unsigned rate_limit;      /* 0: inherit */
    unsigned rate_period_s;   /* 0: inherit */
    char *rate_limit_binding; /* NULL: inherit */
    int cache;                /* -1: inherit, else 0 or 1 */
    char **models;            /* NULL: inherit; else NULL-terminated */
    size_t nmodels;
} ag_config_route_t;

/* A position in the config file, for errors found after loading. */
typedef struct ag_config_pos {
    unsigned line, col;
} ag_config_pos_t;

/* [[aigate.tasks]]: an AI task on a schedule (platform.md section 4). Strings
 * are as written: cron expressions and templates are checked by src/tasks/,
 * which reports at the positions kept here. */
typedef struct ag_config_task {
    char *name;
    char *cron;
    char *task;          /* routed like a request's "task", or NULL */
    char *model;         /* or an explicit model, or NULL: DEFAULT_MODEL */
    unsigned max_tokens; /* 0: vars.MAX_TOKENS */
    char *prompt;
    char *out_r2;      /* "BINDING:key template", or NULL */
    char *out_kv;      /* "BINDING:key template", or NULL */
    char *out_webhook; /* URL, or NULL */
    char *out_email_to, *out_email_subject;
    char **out_command; /* argv, NULL-terminated, or NULL */
    ag_config_pos_t at, cron_at, prompt_at, r2_at, kv_at, webhook_at, email_at, command_at;
} ag_config_task_t;

/* [aigate.fallbacks]: the models tried, in order, after `model`'s retries. */
typedef struct ag_config_fallback {
    char *model;
    char **chain; /* NULL-terminated */
    size_t n;
} ag_config_fallback_t;

/* [aigate.routing]: a request's "task" picks its model. */
typedef struct ag_config_task_route {
    char *task;
    char *model;
} ag_config_task_route_t;

/* A route's settings after the merge; pointers borrow from the config. */
typedef struct ag_route_settings {
    unsigned rate_limit;
    unsigned rate_period_s;
    const char *rate_limit_binding; /* NULL: none */
    bool cache;
    char *const *models; /* allowlist besides DEFAULT_MODEL */
    size_t nmodels;
} ag_route_settings_t;

/** `auth`: whether AI requests need a client key (platform.md section 6). */
typedef enum { AG_AUTH_OFF = 0, AG_AUTH_OPTIONAL = 1, AG_AUTH_REQUIRED = 2 } ag_auth_mode_t;

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
    unsigned body_min_rate;    /* bytes/s; 0: none */
    unsigned body_deadline_ms; /* 0: none */
    unsigned send_timeout_ms;  /* 0: none */
    size_t max_queued_bytes;
    unsigned max_connections_per_client; /* 0: no cap */
    unsigned ipv6_prefix;
    char *upstream;
    unsigned upstream_connect_timeout_ms;
    unsigned upstream_timeout_ms;
    unsigned stream_idle_timeout_ms;
    /* resilience (platform.md section 5) */
    unsigned upstream_retries;
    unsigned upstream_retry_base_ms;
    unsigned upstream_retry_max_ms;
    unsigned upstream_retry_max_wait_ms;
    unsigned upstream_deadline_ms;
    unsigned queue_max;
    unsigned queue_timeout_ms;
    ag_config_fallback_t *fallbacks;
    size_t nfallbacks;
    ag_config_task_route_t *routing; /* the seed's table unless [aigate.routing] replaces it */
    size_t nrouting;
    char *data_dir;
    bool access_log;
    unsigned prompt_max_length;
    char **models; /* allowlist: [aigate] models + DEFAULT_MODEL; NULL-terminated */
    size_t nmodels;
    /* rate limiting of the AI routes */
    unsigned rate_limit; /* requests per rate_period per client */
    unsigned rate_period_s;
    char *rate_limit_binding;  /* name of a ratelimit binding whose numbers apply; "": none */
    char **trusted_proxies;    /* addresses/CIDRs whose forwarding headers are believed */
    char **trusted_proxies_cf; /* Cloudflare's edge: whose CF-Connecting-IP is believed */
    ag_config_route_t *routes; /* [aigate.routes."PATH"] tables */
    size_t nroutes;
    /* response cache */
    bool cache;
    unsigned cache_ttl_ms;
    char *cache_binding; /* KV namespace binding of the cache */
    /* usage log */
    bool usage_log;
    char *usage_log_binding; /* R2 binding whose bucket holds logs/ */
    unsigned usage_log_flush_ms;
    /* client access */
    int auth;                          /* ag_auth_mode_t */
    int upstream_client;               /* 0: native (the default), 1: curl */
    char *upstream_ca_file;            /* "": the system store */
    double budget_daily_usd;           /* 0: no global budget */
    char **cors_origins;               /* NULL-terminated; the default is {"*"} */
    bool cors_origins_set;             /* false: the default, which applies to /api/generate only */
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
    /* the name of the secret that holds the upstream key (not its value) */
    char *api_key_secret;
    /* the admin listener: "host:port", "" for none; its token's secret name */
    char *admin_listen;
    char *admin_token_secret;
    bool admin_tls; /* the admin listener speaks HTTPS too, with tls_cert/tls_key */
    /* HTTPS: PEM files; "" (both): plain HTTP */
    char *tls_cert;
    char *tls_key;
    /* scheduled tasks */
    char **crons; /* [triggers] crons, as written; NULL-terminated */
    ag_config_pos_t *cron_at;
    size_t ncrons;
    ag_config_task_t *tasks;
    size_t ntasks;
    char *smtp_url;  /* [aigate.smtp] url: smtp://host:port (STARTTLS when offered) or smtps:// */
    char *smtp_from; /* the From address */
    char *smtp_user; /* the password is the secret SMTP_PASSWORD */
    /* [aigate.s3]: the S3-compatible store of [[r2_buckets]] with backend = "s3"; the keys
     * are the secrets S3_ACCESS_KEY_ID and S3_SECRET_ACCESS_KEY */
    char *s3_endpoint;  /* http(s)://host[:port] */
    char *s3_region;    /* NULL: "us-east-1" ("auto" for R2) */
    bool s3_path_style; /* true (the default): endpoint/bucket/key; false: bucket.host/key */
    /* [aigate.redis] url: shared state of several instances (restart to change); NULL: none */
    char *redis_url;
    int redis_fail;            /* 0: "closed" (the default), 1: "open" */
    unsigned redis_timeout_ms; /* each command's (and a connect's) */
    int cache_backend;         /* 0: "redis" (when redis_url is set; the default), 1: "local" */
    /* bounded disk */
    size_t cache_max_bytes;            /* the cache store's size bound */
    unsigned usage_log_retention_days; /* 0: keep every day */
    size_t usage_log_spool_max;        /* the usage log's spool bound (S3 store); 0: no spool */
    /* where the items of string lists were written (ag_config_list_pos()) */
    struct ag__config_list_at *list_at;
    size_t nlist_at;
} ag_config_t;

typedef struct ag__config_list_at {
    size_t offset; /* of the list in ag_config_t */
    ag_config_pos_t *at;
    size_t n;
} ag__config_list_at_t;

/** Where item i of a string-list key of the config (&cfg->trusted_proxies)
 *  was written in the file; {0, 0} when it came from the defaults. Checks made
 *  after loading (the gateway's) report at it. */
ag_config_pos_t ag_config_list_pos(const ag_config_t *cfg, char **const *list, size_t i);

/** Copies `url` into out[cap] with any user:password@ replaced by "***@", for
 *  logs: a URL with credentials in it is a secret. */
void ag_config_redact_url(const char *url, char *out, size_t cap);

/** Fills `cfg` with the embedded defaults. Free with ag_config_fini(). */
void ag_config_defaults(ag_config_t *cfg);

/** Loads `path` over the defaults. Errors print as `file:line:col: message` to
 *  `errs` (all of them, not only the first); warnings (unknown keys) too.
 *  @return 0, or AG_EBADCONFIG when any error was found. */
int ag_config_load_file(ag_config_t *cfg, const char *path, FILE *errs);

/** Finds the config file: `explicit_path` if given, else aigate.toml, else
 *  wrangler.toml in the current folder; NULL when none (embedded defaults). */
const char *ag_config_find(const char *explicit_path);

/** The model [aigate.routing] gives `task`; DEFAULT_MODEL for any other task. */
const char *ag_config_task_model(const ag_config_t *cfg, const char *task, size_t len);

/** The fallback chain of `model`, or NULL. */
const ag_config_fallback_t *ag_config_fallbacks(const ag_config_t *cfg, const char *model);

/** True when `model` is in the [aigate] allowlist or is DEFAULT_MODEL. */
bool ag_config_model_allowed(const ag_config_t *cfg, const char *model, size_t len);

/** The settings of the route at `path`: its [aigate.routes."PATH"] table
 *  merged over [aigate] (and the deprecated messages_* keys for /v1/messages). */
void ag_config_route_settings(const ag_config_t *cfg, const char *path, ag_route_settings_t *out);

/** The [aigate.routes] table for `path`, or NULL. */
const ag_config_route_t *ag_config_route(const ag_config_t *cfg, const char *path);

/** How a change of a key takes effect. */
typedef enum { AG_KEY_RELOAD, AG_KEY_RESTART, AG_KEY_SECRET } ag_key_apply_t;

/** How `name` ("host", "rate_limit", "routes.rate_limit") takes effect; -1 when
 *  no such key. The lifecycle's reload uses it to refuse restart-only changes. */
int ag_config_key_apply(const char *name);

/** The parts of `b` that differ from `a`: [aigate] key names ("rate_limit",
 *  which ag_config_key_apply() classifies) and sections ("routes",
 *  "vars.DEFAULT_MODEL", "kv_namespaces", "r2_buckets", "unsafe.bindings",
 *  "triggers.crons", "tasks", "smtp", "prices", "fallbacks", "routing", "name",
 *  ...). Fills up to `cap` static names. @return how many differ. */
size_t ag_config_diff(const ag_config_t *a, const ag_config_t *b, const char **names, size_t cap);

/** Copies into `dst` the running values of every key a reload cannot apply
 *  (restart-only keys, the admin token's secret name, `name`), so what is
 *  applied is the file's reloadable part over what the server started with. */
void ag_config_keep_restart(ag_config_t *dst, const ag_config_t *running);

/** The ratelimit binding called `name`, or NULL. */
const ag_config_ratelimit_t *ag_config_ratelimit(const ag_config_t *cfg, const char *name);

/** The bucket name bound to R2 binding `binding` (its bucket_name), or NULL. */
const char *ag_config_r2_bucket(const ag_config_t *cfg, const char *binding);

/** Where KV binding `binding` lives: "redis" or "lmdb". Its own `backend` when
 *  it names one; else the response cache's binding is on Redis when
 *  [aigate.redis] is set and cache_backend is "redis"; else "lmdb". */
const char *ag_config_kv_backend(const ag_config_t *cfg, const char *binding);

/** The [[r2_buckets]] entry of `binding`, or NULL. */
const ag_config_binding_t *ag_config_r2_binding(const ag_config_t *cfg, const char *binding);

/** The [[r2_buckets]] entry whose bucket_name is `bucket`, or NULL. */
const ag_config_binding_t *ag_config_r2_by_bucket(const ag_config_t *cfg, const char *bucket);

/** Whether a request from `origin` gets CORS headers (platform.md section 6):
 *  the origin, or "*", is in `origins` (the config's cors_origins). The default
 *  list, not written in the file (origins_set false), counts only where
 *  seed_route (/api/generate); every other route answers CORS only to origins
 *  written explicitly. Borrowed arguments; pure. */
bool ag_config_cors_allowed(char *const *origins, bool origins_set, bool seed_route,
                            const char *origin, size_t len);

/** Prints the key table as Markdown (docs/config.md is generated from it). */
void ag_config_print_reference(FILE *out);

void ag_config_fini(ag_config_t *cfg);

#endif
