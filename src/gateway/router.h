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

#endif
