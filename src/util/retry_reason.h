/* SPDX-License-Identifier: MIT
 *
 * retry_reason.h: why an upstream attempt was made again. One list for the
 * layers that decide (upstream) and those that count (obs).
 */
#ifndef AG_UTIL_RETRY_REASON_H
#define AG_UTIL_RETRY_REASON_H

typedef enum ag_retry_reason {
    AG_RETRY_NONE = 0,       /* the answer is final as it is */
    AG_RETRY_OVERLOADED,     /* 529 */
    AG_RETRY_RATE_LIMITED,   /* 429 */
    AG_RETRY_SERVER_ERROR,   /* 500, 502, 503, 504 */
    AG_RETRY_CONNECTION,     /* reset, refused, unreachable */
    AG_RETRY_TIMEOUT,        /* no answer in time */
    AG_RETRY_UPSTREAM_ASKED, /* x-should-retry: true on another status */
    AG_RETRY_NREASONS
} ag_retry_reason_t;

/** The metrics label of a reason: "overloaded", "rate_limited", ... */
static inline const char *ag_retry_reason_name(ag_retry_reason_t reason)
{
    static const char *const names[AG_RETRY_NREASONS] = {
        "none",       "overloaded", "rate_limited",   "server_error",
        "connection", "timeout",    "upstream_asked",
    };
    return (unsigned)reason < AG_RETRY_NREASONS ? names[reason] : "none";
}

#endif
