/* SPDX-License-Identifier: MIT
 *
 * routes.c: the route table. The router walks it; each generation merges every
 * route's settings from the config ([aigate.routes."PATH"] over [aigate]).
 */
#include "util/platform.h"

#include "gateway/routes.h"

static void handle_health(ag_req_t *req, gw_worker_t *w, const gw_route_t *route)
{
    AG_UNUSED(w);
    AG_UNUSED(route);
    ag_req_respond(req, 200, "application/json", AG_STR_LIT("{\"status\":\"ok\"}"));
}

const gw_route_def_t gw_route_defs[] = {
    {"POST", "/api/generate", gw_generate_handle, &gw_proto_seed, false},
    {"POST", "/v1/messages", gw_messages_handle, &gw_proto_anthropic, true},
    {"POST", "/v1/messages/count_tokens", gw_count_tokens_handle, &gw_proto_anthropic, true},
    {"POST", "/v1/chat/completions", gw_chat_handle, &gw_proto_openai, true},
    {"GET", "/v1/models", gw_models_handle, &gw_proto_models, true},
    {"GET", "/healthz", handle_health, NULL, false},
};

const size_t gw_nroute_defs = AG_ARRAY_LEN(gw_route_defs);

_Static_assert(AG_ARRAY_LEN(gw_route_defs) <= GW_MAX_ROUTES, "GW_MAX_ROUTES holds every route");
