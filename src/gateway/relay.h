/* SPDX-License-Identifier: MIT
 *
 * relay.h: the streaming relay. Serves any route's stream through its protocol
 * table: back-pressure (the upstream transfer pauses while a slow client's
 * queue is full), an idle cut, errors before and after the first byte, and
 * the cache fill from a complete stream.
 */
#ifndef AG_GATEWAY_RELAY_H
#define AG_GATEWAY_RELAY_H

#include "gateway/generation.h"
#include "http/server.h"

struct gw_access;

/** Starts relaying the upstream stream for `body` to the client. kv_key (or
 *  NULL) is where a complete stream is cached; acc's reservation is settled
 *  with the usage the stream showed when it ends, however it ends;
 *  proto_state is what the protocol's translate_stream and finish_stream get
 *  (the request's pool owns it). A tail call (see server.h). */
void gw_relay_start(gw_worker_t *w, ag_req_t *req, const gw_route_t *route, const char *model,
                    ag_str_t body, const char *const *headers, const char *kv_key,
                    struct gw_access *acc, void *proto_state);

/** Response headers of Anthropic's that a passthrough client should see.
 *  A value holding a CR, LF or NUL is dropped (and logged), never relayed. */
void gw_forward_upstream_headers(ag_req_t *req, ag_str_t headers);

/** True when a header value may be relayed: no CR, LF or NUL. */
bool gw_header_value_safe(ag_str_t value);

/** The upstream's content-type, when safe to relay (in the pool); else JSON's. */
const char *gw_upstream_content_type(ag_req_t *req, ag_str_t headers);

#endif
