/* SPDX-License-Identifier: MIT
 *
 * record.h: the record of one finished request, the one thing the HTTP server
 * hands to observers (access log now; metrics and tail subscribe the same way).
 * Plain data: no layer below the gateway needs to know what a model is.
 */
#ifndef AG_OBS_RECORD_H
#define AG_OBS_RECORD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util/retry_reason.h"
#include "util/str.h"

typedef enum ag_cache_result {
    AG_CACHE_NONE = 0, /* the route does not cache */
    AG_CACHE_HIT,
    AG_CACHE_MISS,
    AG_CACHE_BYPASS, /* Cache-Control: no-cache / no-store */
} ag_cache_result_t;

/* The slot the gateway fills while it serves an AI request. Strings are owned
 * by the request's pool (or static) and live until the record is delivered. */
typedef struct ag_ai_record {
    const char *model;   /* the model asked for; NULL: the request named none */
    const char *outcome; /* streams: ok, clientDisconnected, upstreamError; else NULL */
    uint32_t prompt_units, output_units; /* UTF-16 lengths, the seed's fields */
    int64_t input_tokens, output_tokens;
    int64_t cache_write_tokens, cache_read_tokens;
    double cost_usd;
    double saved_usd;    /* a cache hit: what the upstream would have charged */
    int64_t upstream_us; /* time spent waiting on upstream */
    int upstream_status; /* the upstream's HTTP status; 0: no answer (or no call) */
    unsigned attempts;   /* upstream calls made for this request */
    unsigned retries;    /* of which were made again after a failure */
    uint8_t retries_by_reason[AG_RETRY_NREASONS];
    int64_t queued_us;         /* time held waiting for the upstream's rate window */
    const char *fallback_from; /* the model asked for, when a fallback answered; else NULL */
    const char *key_name;      /* the client API key's name (never the key); NULL: none */
    ag_cache_result_t cache;
    bool stream;
    bool usage;        /* passed validation and limits: the usage log gets an entry */
    bool rate_limited; /* refused by the route's rate limit */
} ag_ai_record_t;

/* A request header as received (the layout of the parser's header). */
typedef struct ag_record_header {
    ag_str_t name;
    ag_str_t value;
} ag_record_header_t;

typedef struct ag_request_record {
    const char *id;
    ag_str_t method;
    ag_str_t path;
    ag_str_t target; /* path and query as sent */
    ag_str_t host;   /* the Host header */
    const ag_record_header_t *headers;
    size_t nheaders;
    const char *route;  /* the route's path as configured; NULL: none matched */
    const char *client; /* the client's address, after trusted-proxy resolution */
    int status;         /* 499: the client went away first (nginx's code) */
    size_t bytes_in;    /* head and body as received */
    size_t bytes_out;   /* head and body as sent */
    int64_t start_us;   /* wall clock, epoch microseconds */
    int64_t duration_us;
    int64_t cpu_us;   /* CPU time the worker spent on this request */
    const char *cron; /* a scheduled run: its cron expression (else NULL) */
    const char *task; /* and its task */
    int64_t scheduled_ms;
    bool aborted;
    ag_ai_record_t ai;
} ag_request_record_t;

#endif
