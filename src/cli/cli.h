/* SPDX-License-Identifier: MIT
 *
 * cli.h: the storage commands of the aigate CLI (`aigate kv`, `aigate r2`,
 * `aigate secret`, `aigate keys`). They work on the same stores as the server, through the
 * same interfaces, and are safe to run while it runs. `aigate tail` reads a
 * running server's live events from its admin listener. Each handler gets argv
 * after its command word (as main()'s other handlers), returns the exit code
 * (0 ok, 1 operational error, 2 usage error) and never exits itself.
 */
#ifndef AG_CLI_CLI_H
#define AG_CLI_CLI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "store/redis.h"
#include "util/buf.h"

/** `aigate kv namespace create|list`, `aigate kv key put|get|list|delete`. */
int cmd_kv(int argc, char **argv);

/** `aigate r2 bucket create|list`, `aigate r2 object put|get|list|delete`. */
int cmd_r2(int argc, char **argv);

/** `aigate secret put|list|delete`. */
int cmd_secret(int argc, char **argv);

/** `aigate tail`: live events from the admin listener's GET /tail (cmd_tail.c). */
int cmd_tail(int argc, char **argv);
/** `aigate stats [--since 24h] [--by ...] [--json]`: the usage log summed up (cmd_stats.c). */
int cmd_stats(int argc, char **argv);

/** `aigate cron list|run`: scheduled tasks (cmd_cron.c). */
int cmd_cron(int argc, char **argv);

/** `aigate init NAME`: a new project folder (cmd_init.c). */
int cmd_init(int argc, char **argv);

/** `aigate deploy`: validate the config and apply it to the running server (cmd_deploy.c). */
int cmd_deploy(int argc, char **argv);

/** `aigate keys create|list|show|revoke|rotate`: client API keys (cmd_keys.c). */
int cmd_keys(int argc, char **argv);

/* ---- internals shared by the cmd_*.c files (common.c) -------------------------------- */

#define AG__CLI_MAX_POS 4

/** A command-specific flag. The parser fills value/present. */
typedef struct ag__cli_opt {
    const char *name; /* "--ttl" */
    bool takes_value;
    const char *value; /* borrowed from argv */
    bool present;
} ag__cli_opt_t;

/** One parsed command line. */
typedef struct ag__cli {
    const char *usage; /* the leaf's usage text, static */
    const char *config;
    const char *data_dir_flag;
    bool json;
    char *pos[AG__CLI_MAX_POS]; /* positional arguments, borrowed from argv */
    int npos;
    char *data_dir;  /* resolved by ag__cli_data_dir(); owned, freed by ag__cli_fini() */
    char *redis_url; /* the config's [aigate.redis] url, set with data_dir; NULL: none */
    unsigned redis_timeout_ms;
    char **kv_on_redis; /* the KV bindings the config keeps on Redis, sorted; owned */
    size_t nkv_on_redis;
} ag__cli_t;

/** Parses argv (after the leaf command words): the common flags --config FILE,
 *  --data-dir DIR, --json, --help/-h, the flags in opts[], and between min_pos
 *  and max_pos positionals ("--" ends the flags; "-" is a positional).
 *  @return true to go on; false when the command is done, with *status set:
 *  0 after --help (usage on stdout), 2 after a usage error (on stderr). */
bool ag__cli_parse(ag__cli_t *c, const char *usage, int argc, char **argv, ag__cli_opt_t *opts,
                   size_t nopts, int min_pos, int max_pos, int *status);

/** Finds the data folder as the server does: --data-dir, else data_dir of the
 *  config file (--config, else aigate.toml, else wrangler.toml), else the
 *  default. Sets c->data_dir. @return 0, or 1 after printing config errors. */
int ag__cli_data_dir(ag__cli_t *c);

void ag__cli_fini(ag__cli_t *c);

/** True when the config (read by ag__cli_data_dir()) keeps KV binding
 *  `binding` on Redis (ag_config_kv_backend()). */
bool ag__cli_kv_on_redis(const ag__cli_t *c, const char *binding);

/** One command to the config's Redis (c->redis_url, the password from the URL
 *  or the secret REDIS_PASSWORD), waiting at most two seconds for its answer.
 *  @return 0 with Redis's answer not an error; otherwise a negative code, with
 *  `why` saying what happened (never the password). */
int ag__cli_redis(const ag__cli_t *c, int argc, const char *const *argv, char *why, size_t len);

/** A session on the config's Redis, as ag__cli_redis() uses, for several
 *  commands on one connection. @return 0 and *out (ag_redis_sync_close()). */
int ag__cli_redis_open(const ag__cli_t *c, ag_redis_sync_t **out);

/** Prints "aigate: <message>" to stderr. @return 1. */
int ag__cli_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/** Prints "aigate: <message>" and the usage text to stderr. @return 2. */
int ag__cli_usage_error(const char *usage, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/** Dispatches a command group: argv[0] names the subcommand among names[] (a
 *  NULL-terminated list matched to fns[]). No word, or an unknown one, is a
 *  usage error; help/--help/-h prints `usage` on stdout. */
int ag__cli_dispatch(const char *usage, int argc, char **argv, const char *const *names,
                     int (*const *fns)(int, char **));

/** Parses a decimal integer in [min, max]. @return 0 or -EINVAL. */
int ag__cli_parse_i64(const char *s, int64_t min, int64_t max, int64_t *out);

/** Writes b and a newline to stdout (the --json output). @return 0 or 1. */
int ag__cli_print_json(ag_buf_t *b);

/** Prints a list of names: one a line, or with --json an array of objects
 *  whose `fields` (NULL-terminated) each hold the name, followed by `extra`
 *  (raw JSON members starting with a comma, or ""). @return the exit code. */
int ag__cli_print_names(const ag__cli_t *c, char **names, size_t n, const char *const *fields,
                        const char *extra);

/** Flushes stdout. @return 0, or 1 after printing why it failed (EPIPE, ENOSPC). */
int ag__cli_flush_stdout(void);

/** Formats epoch milliseconds as RFC 3339 UTC (e.g. 2025-01-02T03:04:05.678Z). */
void ag__cli_format_time(int64_t ms, char *buf, size_t cap);

#endif
