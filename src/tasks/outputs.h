/* SPDX-License-Identifier: MIT
 *
 * outputs.h: delivering one scheduled task run's output to its destinations
 * (platform.md section 4: output.r2, output.kv, output.webhook, output.email,
 * output.command). Each output is tried on its own, retried with exponential
 * backoff, and one that fails never stops the others; the caller (the task
 * runner) turns the results into the run record.
 *
 * BLOCKING: ag_outputs_deliver() does disk I/O, network I/O and waits for
 * child processes and backoff sleeps. Call it on a worker thread (the libuv
 * thread pool, uv_queue_work), never on an event-loop thread.
 */
#ifndef AG_TASKS_OUTPUTS_H
#define AG_TASKS_OUTPUTS_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config/config.h"
#include "store/kv.h"
#include "util/str.h"

/* Defaults, for the fields of ag_outputs_env_t left 0. */
#define AG_OUTPUTS_TIMEOUT_MS 30000         /* one webhook or SMTP attempt */
#define AG_OUTPUTS_ATTEMPTS 3               /* tries per output */
#define AG_OUTPUTS_MAX_ATTEMPTS 10          /* more are clamped to this */
#define AG_OUTPUTS_BACKOFF_MS 1000          /* sleep after the first failed try */
#define AG_OUTPUTS_BACKOFF_MAX_MS 30000     /* no sleep is longer */
#define AG_OUTPUTS_COMMAND_TIMEOUT_MS 60000 /* one command run */
#define AG_OUTPUTS_KILL_GRACE_MS 2000       /* SIGTERM, then SIGKILL this much later */
/* Captured stdout+stderr of a command, for the detail. */
#define AG_OUTPUTS_CAPTURE_BYTES 4096
#define AG_OUTPUT_DETAIL_MAX 160

typedef enum ag_output_kind {
    AG_OUT_R2,      /* output.r2 = "BINDING:key" */
    AG_OUT_KV,      /* output.kv = "BINDING:key" */
    AG_OUT_WEBHOOK, /* output.webhook = "https://..." */
    AG_OUT_EMAIL,   /* output.email = { to, subject } */
    AG_OUT_COMMAND, /* output.command = ["/path/prog", "arg", ...] */
} ag_output_kind_t;

/** One destination of a task, its templates already rendered by the caller.
 *  Every pointer is borrowed for the call; fields of other kinds are ignored. */
typedef struct ag_output {
    ag_output_kind_t kind;
    /** r2: an [[r2_buckets]] binding (its bucket_name is the bucket);
     *  kv: a [[kv_namespaces]] binding. Not in env->cfg: AG_OUT_EBINDING. */
    const char *binding;
    /** r2, kv: the object or KV key. */
    const char *key;
    /** webhook: an http:// or https:// URL; it gets a POST (redirects are not
     *  followed). Only its scheme, host and port ever reach a detail or log
     *  line, as its path or query may hold a token. */
    const char *url;
    /** email: the recipients, "a@example.com" or "Name <a@example.com>",
     *  comma-separated (at most AG_MAIL_MAX_RCPT); ASCII addresses. */
    const char *to;
    /** email: the subject (UTF-8; encoded as RFC 2047 when not ASCII). */
    const char *subject;
    /** command: the program and its arguments, NULL-terminated, run without a
     *  shell (argv[0] without '/' is looked up in PATH). */
    char *const *argv;
} ag_output_t;

/** The run whose output is delivered. Borrowed for the call. */
typedef struct ag_delivery {
    const char *task;     /* the task's name */
    const char *cron;     /* its cron expression; NULL for none */
    int64_t scheduled_ms; /* the scheduled time, epoch ms */
    const char *model;    /* the model that answered; NULL for none */
    ag_str_t output;      /* the text delivered (UTF-8) */
    int64_t input_tokens, output_tokens;
    double cost_usd;
} ag_delivery_t;

/** The SMTP server of email outputs ([aigate.smtp]). Borrowed for the call. */
typedef struct ag_outputs_smtp {
    /** "smtp://host[:port]" (plain, upgraded with STARTTLS when the server
     *  offers it) or "smtps://host[:port]" (implicit TLS). NULL or "": email
     *  outputs fail with AG_OUT_ENOSMTP. */
    const char *url;
    /** The sender: "bot@example.com" or "Name <bot@example.com>". */
    const char *from;
    /** Login; NULL or "" for none (then no AUTH). */
    const char *user;
    /** The password, resolved by the caller (the secret SMTP_PASSWORD). Never
     *  copied into a result or a log line. */
    const char *password;
    /** Fail unless the connection is encrypted (smtp:// then needs STARTTLS). */
    bool require_tls;
    /** Skip the server certificate's verification: for tests only. */
    bool tls_no_verify;
    /** CA bundle (PEM file) to verify the server with; NULL: the system's. */
    const char *ca_file;
} ag_outputs_smtp_t;

/** Where and how to deliver. A zeroed struct is valid: 0 fields take the
 *  defaults above. Borrowed for the call. */
typedef struct ag_outputs_env {
    /** The data folder of the stores; NULL: AG_STORE_DEFAULT_DATA_DIR. */
    const char *data_dir;
    /** The bindings: [[r2_buckets]] and [[kv_namespaces]]. NULL: none. */
    const ag_config_t *cfg;
    ag_outputs_smtp_t smtp;
    /** Each webhook or SMTP attempt, in ms (connecting included). */
    unsigned timeout_ms;
    /** Tries per output (1..AG_OUTPUTS_MAX_ATTEMPTS). */
    unsigned attempts;
    /** After the k-th failed try the output sleeps backoff_ms << (k-1), at
     *  most backoff_max_ms; a webhook's Retry-After raises it (to that cap). */
    unsigned backoff_ms;
    unsigned backoff_max_ms;
    /** One command run, and the SIGTERM-to-SIGKILL grace after it. */
    unsigned command_timeout_ms;
    unsigned command_grace_ms;
    /** An output longer than this is delivered nowhere (AG_ETOOBIG, no try);
     *  0: no limit of our own (KV's 25 MiB and R2's 5 GiB still apply). */
    size_t max_output_bytes;
    /** When it becomes true (shutdown), no new try starts, and backoff sleeps
     *  and commands end within about 50 ms, transfers within about a second
     *  (libcurl's progress callback); those outputs fail with
     *  AG_OUT_ECANCELED. NULL: never. */
    const atomic_bool *stop;
} ag_outputs_env_t;

/** What happened to one output. */
typedef struct ag_output_result {
    /** 0 when it landed, else the error of its last try: AG_OUT_E* (see
     *  errors.def), AG_EINVALID (a malformed output: bad URL, address, empty
     *  argv), AG_ETOOBIG, a store's AG_KV_E* / AG_OBJ_E*, or -errno. */
    int rc;
    /** Tries made (0 when it was refused before the first). */
    unsigned attempts;
    /** Of the last try: webhook: the HTTP status (0: no response); email: the
     *  SMTP reply code (250 when accepted; 0: none); command: the exit status,
     *  or 128 + the signal that killed it; r2, kv: 0. */
    int status;
    /** Wall time of all tries and sleeps, in ms. */
    int64_t elapsed_ms;
    /** One line for the run record and the log, NUL-terminated, valid UTF-8,
     *  no control characters; never a secret (no password, no URL path or
     *  query). For a failing command it holds the start of its output. */
    char detail[AG_OUTPUT_DETAIL_MAX];
} ag_output_result_t;

/** "r2", "kv", "webhook", "email", "command" (static), or "?". */
const char *ag_output_kind_name(ag_output_kind_t kind);

/** Opens the store of KV binding `binding` where cfg puts it (LMDB under
 *  data_dir, or the Redis of [aigate.redis]; ag_config_kv_backend()). cfg NULL:
 *  LMDB. Blocks on Redis: from a thread of the pool, never a loop's. */
int ag_outputs_kv_open(const ag_config_t *cfg, const char *data_dir, const char *binding,
                       ag_kv_t **out);

/** Delivers d->output to each of outs[0..n), writing results[i] for outs[i]
 *  (results holds n entries; every one is written).
 *
 *  Per kind:
 *  - r2: put at `key` in the bucket of `binding`, Content-Type
 *    "text/markdown; charset=utf-8" for a key ending in ".md" and
 *    "text/plain; charset=utf-8" otherwise, custom metadata task, cron and
 *    scheduledTime (ms, decimal). The bucket folder is created when missing.
 *  - kv: put at `key` in the namespace of `binding`, metadata
 *    {"task","cron","scheduledTime"} (left out if over KV's 1024 bytes).
 *  - webhook: POST application/json
 *    {"task","cron","scheduledTime","model","output",
 *     "usage":{"input_tokens","output_tokens"},"costUsd"}
 *    with Idempotency-Key "<task>:<scheduledTime>" (the same on every try);
 *    2xx lands; connection errors, timeouts, 5xx and 429 are retried; any
 *    other status fails at once.
 *  - email: SMTP through env->smtp (ag_mail_build() makes the message; one
 *    Message-ID for every try); 4xx replies and transport errors are retried,
 *    5xx replies (a refused login included) fail at once.
 *  - command: the output on stdin, stdout+stderr captured (the first 4 KiB),
 *    killed at command_timeout_ms; exit 0 lands, anything else is retried; a
 *    program that cannot be started fails at once. Its environment is not
 *    ours (which holds the upstream key): PATH, HOME, USER, LOGNAME, LANG,
 *    LC_ALL, LC_CTYPE, TZ and TMPDIR where set, plus AIGATE_TASK,
 *    AIGATE_CRON, AIGATE_SCHEDULED_TIME, AIGATE_MODEL, AIGATE_INPUT_TOKENS,
 *    AIGATE_OUTPUT_TOKENS, AIGATE_COST_USD.
 *  A store error that is the caller's (a bad key, too big: HTTP 4xx in
 *  errors.def) and an unknown binding are not retried; other store errors are.
 *
 *  The outputs are delivered at the same time, each but the first on a
 *  thread of its own (when a thread cannot be made, in turn on the calling
 *  thread), so the call takes about as long as the slowest output: at most
 *  attempts x (timeout + backoff) for it. A failed try is logged (warn) with
 *  the task, the kind and the detail.
 *
 *  Thread-safe: several deliveries may run at once. libcurl must have been
 *  initialised (main's ag_upstream_global_init(); libcurl >= 7.84 also does it
 *  by itself, thread-safely). */
void ag_outputs_deliver(const ag_outputs_env_t *env, const ag_output_t *outs, size_t n,
                        const ag_delivery_t *d, ag_output_result_t *results);

#endif
