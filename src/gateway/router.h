/* SPDX-License-Identifier: MIT
 *
 * router.h: the server's request handler: CORS preflights, the route table
 * walk (in the request's generation), and 404.
 */
#ifndef AG_GATEWAY_ROUTER_H
#define AG_GATEWAY_ROUTER_H

#include "http/server.h"

/** The server's handler for every request. */
void gw_router_handle(ag_req_t *req);

/** The server's own error answers in the shape of the route the path names
 *  (Anthropic's on /v1/messages); the seed's elsewhere. */
void gw_router_respond_error(void *server_ctx, ag_req_t *req, int status, const char *msg);

#endif
