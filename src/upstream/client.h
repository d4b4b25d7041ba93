/* SPDX-License-Identifier: MIT
 *
 * client.h: the upstream HTTP client, one per worker loop: with
 * upstream_client = "native" (the default), http:// and https:// go to the
 * native HTTP/1.1 client (h1_client.c); what it declines (a proxy in the
 * environment, userinfo in the URL), and everything with "curl", to a libcurl
 * multi handle driven by the loop's sockets and timer (no blocking call, no
 * thread per request). Connections are pooled either way.
 */
#ifndef AG_UPSTREAM_CLIENT_H
#define AG_UPSTREAM_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "util/str.h"

typedef struct ag_upstream ag_upstream_t;
typedef struct ag_upstream_xfer ag_upstream_xfer_t;

typedef struct ag_upstream_response {
    int status;             /* HTTP status; 0 when no response arrived */
    int error;              /* 0, AG_EUPSTREAM or AG_EUPSTREAM_TIMEOUT */
    const char *error_text; /* transport error for the log (holds no secret) */
    ag_str_t body;          /* valid during the callback only */
    ag_str_t headers;       /* raw response header lines, valid during the callback */
    int64_t duration_us;
    int64_t cpu_us; /* the loop's time in libcurl for this transfer (its share) */
} ag_upstream_response_t;

typedef void (*ag_upstream_done_cb)(void *ctx, const ag_upstream_response_t *resp);

typedef struct ag_upstream_request {
    const char *url;
    const char *const *headers; /* "Name: value" lines */
    size_t nheaders;
    const char *body; /* borrowed until done or cancel */
    size_t body_len;
    unsigned connect_timeout_ms;
    unsigned timeout_ms;      /* whole transfer; 0: none (streams use idle_timeout_ms) */
    unsigned idle_timeout_ms; /* no byte for this long: fail; 0: none */
    size_t max_response_bytes;
    /* Streaming: when set and the status is 2xx, body bytes go here as they
     * arrive instead of being buffered. Return 0 to go on, AG_EAGAIN to pause
     * the transfer (resume with ag_upstream_resume), anything else to abort. */
    int (*on_data)(void *ctx, int status, ag_str_t headers, const char *data, size_t len);
} ag_upstream_request_t;

/** Creates the client on `loop` (call on the loop's thread, or before it runs). */
int ag_upstream_new(uv_loop_t *loop, ag_upstream_t **out);

/** Cancels every transfer (their callbacks are not called) and closes the
 *  client; its memory is freed once its handles have closed on the loop. */
void ag_upstream_close(ag_upstream_t *u);

/** Starts a POST (or GET when body is NULL). `done` runs exactly once, on the loop,
 *  unless the transfer is cancelled first. @return 0, or an error and done is never called. */
int ag_upstream_start(ag_upstream_t *u, const ag_upstream_request_t *req, ag_upstream_done_cb done,
                      void *ctx, ag_upstream_xfer_t **out);

/** Stops a transfer at once; its done callback will not run. NULL is a no-op. */
void ag_upstream_cancel(ag_upstream_xfer_t *x);

/** Resumes a transfer paused by on_data returning AG_EAGAIN. */
void ag_upstream_resume(ag_upstream_xfer_t *x);

/** Finds a header in a raw header block (case-insensitive name). */
ag_str_t ag_upstream_header(ag_str_t headers, const char *name);

/** Transfers in flight on this client. */
unsigned ag_upstream_active(const ag_upstream_t *u);

/** Whether clients made from now on send http:// and https:// through the
 *  native client or libcurl. Call before any worker loop starts. */
void ag_upstream_set_native(bool native);

/** The CA bundle https:// upstreams are verified against (both clients);
 *  NULL or "": the system store. A file is loaded now, so a bad one stops
 *  the start; the system store waits for the first https:// transfer.
 *  Call before any worker loop starts. @return 0 or AG_EBADCONFIG (err). */
int ag_upstream_set_ca_file(const char *ca_file, char *err, size_t errlen);

/** Process-wide libcurl setup; call once before any thread starts. */
int ag_upstream_global_init(void);
/** With the native client and an https:// upstream, starts loading the
 *  system's CA store on a thread of its own, so that neither the start nor
 *  the first request waits for it. */
void ag_upstream_warm_tls(const char *upstream_url);
/** Joins that thread too. */
void ag_upstream_global_cleanup(void);

#endif
