/* SPDX-License-Identifier: MIT
 *
 * routes.h: the routes aigate serves, as data. A route is a method and path,
 * its handler, and the protocol it speaks: the shape of its error bodies, how
 * an upstream stream reaches its clients, and how it answers from the cache.
 * Adding a route is one row in routes.c and one file with its handler.
 */
#ifndef AG_GATEWAY_ROUTES_H
#define AG_GATEWAY_ROUTES_H

#include <stdbool.h>
#include <stddef.h>

#include "gateway/internal.h"
#include "http/server.h"
#include "util/buf.h"

#define GW_MAX_ROUTES 16

typedef struct gw_cache_entry gw_cache_entry_t;

typedef struct gw_protocol {
    const char *name;
    /** Answers an error in this protocol's shape. `type` is Anthropic's error
     *  type (invalid_request_error, rate_limit_error, api_error, ...). */
    void (*respond_error)(ag_req_t *req, int status, const char *type, const char *msg);
    /** The message of this protocol's 502 when the upstream failed. */
    const char *upstream_failure;
    /** The upstream's status, body and anthropic-* headers reach the client as
     *  they are (a passthrough API), rather than this protocol's 502. */
    bool passthrough;
    /** Turns upstream SSE bytes into what this protocol's clients read; NULL:
     *  Anthropic's events are relayed byte for byte. Appends to out. */
    int (*translate_stream)(void *state, const char *data, size_t len, ag_buf_t *out);
    /** Answers from a cache entry, plain or as a replayed stream.
     *  @return false when the entry cannot serve this request (nothing was sent). */
    bool (*serve_cached)(ag_req_t *req, const gw_cache_entry_t *e, const char *model, bool stream);
    /** The end of a stream that was relayed through translate_stream: appends
     *  what its clients must read last (an error when the upstream failed);
     *  NULL: Anthropic's error event on failure, nothing otherwise. */
    int (*finish_stream)(void *state, bool failed, ag_buf_t *out);
    /** An upstream error answer (status >= 400) for a route that is not a
     *  passthrough, in this protocol's shape; NULL: the 502 upstream_failure. */
    void (*respond_upstream_error)(ag_req_t *req, int status, ag_str_t body);
} gw_protocol_t;

typedef void (*gw_handler_fn)(ag_req_t *req, gw_worker_t *w, const gw_route_t *route);

typedef struct gw_route_def {
    const char *method; /* GET also answers HEAD */
    const char *path;
    gw_handler_fn handle;
    const gw_protocol_t *proto; /* NULL: no AI behind it (no limit, no cache) */
    /* CORS only for origins written in cors_origins (the default ["*"] is the
     * seed's, for /api/generate and what is not an API of the operator's key) */
    bool cors_strict;
} gw_route_def_t;

/** Every route, in the order the router tries them. */
extern const gw_route_def_t gw_route_defs[];
extern const size_t gw_nroute_defs;

/* The handlers and protocols behind the table, one file each. */
void gw_generate_handle(ag_req_t *req, gw_worker_t *w, const gw_route_t *route);
void gw_messages_handle(ag_req_t *req, gw_worker_t *w, const gw_route_t *route);
void gw_count_tokens_handle(ag_req_t *req, gw_worker_t *w, const gw_route_t *route);
void gw_chat_handle(ag_req_t *req, gw_worker_t *w, const gw_route_t *route);
void gw_models_handle(ag_req_t *req, gw_worker_t *w, const gw_route_t *route);
extern const gw_protocol_t gw_proto_seed;
extern const gw_protocol_t gw_proto_anthropic;
extern const gw_protocol_t gw_proto_openai;
extern const gw_protocol_t gw_proto_models;

#endif
