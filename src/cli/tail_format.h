/* SPDX-License-Identifier: MIT
 *
 * tail_format.h: the pure parts of `aigate tail` (cmd_tail.c): the admin URL,
 * the query string of GET /tail with the filters, and the two output formats of
 * one tail event (platform.md section 2). No I/O, no global state: the unit test
 * (tests/unit/test_tail_format.c) calls each function on given bytes.
 */
#ifndef AG_CLI_TAIL_FORMAT_H
#define AG_CLI_TAIL_FORMAT_H

#include <stddef.h>
#include <stdint.h>

#include "util/buf.h"

/** admin_listen's default (platform.md section 1). */
#define AG_TAIL_DEFAULT_ADMIN_LISTEN "127.0.0.1:8788"

/** The filters of one tail, as given on the command line. Every pointer is
 *  borrowed (argv); NULL (or a count of 0) means the filter is not set. */
typedef struct ag_tail_filters {
    const char *const *status; /* --status, repeatable: ok, error, canceled */
    size_t nstatus;
    const char *const *method; /* --method, repeatable */
    size_t nmethod;
    const char *const *header; /* --header NAME:VALUE, repeatable */
    size_t nheader;
    const char *search;        /* --search TEXT */
    const char *ip;            /* --ip IP, or "self" (the server resolves it) */
    const char *sampling_rate; /* --sampling-rate R, as typed */
    const char *route;         /* --route PATH */
    const char *model;         /* --model M */
    const char *key;           /* --key NAME */
} ag_tail_filters_t;

/**
 * Appends the query string of GET /tail, without the '?': `format=json`, then
 * status=, method=, search=, ip=, header=, sampling_rate=, route=, model=, key=
 * in that order, a repeatable filter once per value in the order given. Each
 * value is percent-encoded (ag_tail_url_encode).
 * @return 0, or -ENOMEM / AG_ETOOBIG (the buffer's cap).
 */
int ag_tail_query(ag_buf_t *out, const ag_tail_filters_t *f);

/** Appends `s` percent-encoded for a query value: every byte but RFC 3986's
 *  unreserved ones (A-Z a-z 0-9 - . _ ~) becomes %XX (upper-case hex), so a
 *  space is %20, never '+'. @return 0, or -ENOMEM / AG_ETOOBIG. */
int ag_tail_url_encode(ag_buf_t *out, const char *s);

/**
 * Appends the base URL of the admin listener (no trailing '/').
 * `admin` is what --admin gave (an http:// or https:// URL, or a bare
 * host:port that gets http://), or NULL to use `listen`, the config's
 * admin_listen ("host:port" or "[v6]:port"): a wildcard host (0.0.0.0, [::] or
 * none) is reached on loopback (127.0.0.1, [::1]).
 * @return 0; AG_EINVALID when the address has no port, or the URL another
 *         scheme, or is empty; -ENOMEM.
 */
int ag_tail_admin_url(ag_buf_t *out, const char *admin, const char *listen);

/** The HTTP reason phrase of `status` ("OK", "Too Many Requests"), or NULL when unknown. */
const char *ag_tail_reason(int status);

/**
 * Formats one tail event (the JSON object of one `data:` field) for
 * `--format pretty`, appending every line, each ending in LF:
 *   (N events dropped: tail was too slow)                  when aigate.dropped = N > 0
 *   [2026-03-13T14:23:01Z] POST /api/generate - 200 OK (342ms)
 *   [2026-03-13T09:00:00Z] cron "0 9 * * MON" weekly-digest - ok (2140ms)   (scheduled)
 *     model=claude-haiku-4-5 tokens=287+156 cost=$0.0003 cached retries=2
 *     (log) message...     (error) Name: message       one per log and exception
 * The model line is there only when aigate.model is a non-empty string;
 * `cached` and `retries=N` only when they apply. A canceled request reads
 * `... - 200 OK - canceled (12ms)` (or `- canceled` with no status). Control
 * bytes in strings from the event are shown as '?': a client could otherwise
 * put terminal escapes in a URL or a model name.
 * @return 0; AG_EPROTO when the text is not a JSON object; -ENOMEM.
 */
int ag_tail_format_pretty(ag_buf_t *out, const char *json, size_t len);

/** Appends `(N events dropped: tail was too slow)` and LF (`1 event` when N is 1). */
int ag_tail_format_dropped(ag_buf_t *out, int64_t n);

/**
 * For `--format json`: checks that the text is a JSON object and sets *dropped
 * to its aigate.dropped (0 when absent). @return 0 or AG_EPROTO.
 */
int ag_tail_event_dropped(const char *json, size_t len, int64_t *dropped);

/** Appends the event as one NDJSON line: the bytes as received and LF. A line
 *  break inside (an event sent as several `data:` lines) becomes a space,
 *  which JSON reads the same outside strings and never holds raw inside them. */
int ag_tail_format_json(ag_buf_t *out, const char *json, size_t len);

#endif
