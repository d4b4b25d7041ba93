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
    char *data_dir;
    bool access_log;
    unsigned prompt_max_length;
    char **models; /* allowlist: [aigate] models + DEFAULT_MODEL; NULL-terminated */
    size_t nmodels;
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

/** Prints the key table as Markdown (docs/config.md is generated from it). */
void ag_config_print_reference(FILE *out);

void ag_config_fini(ag_config_t *cfg);

#endif
