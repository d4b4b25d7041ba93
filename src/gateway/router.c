/* SPDX-License-Identifier: MIT
 *
 * router.c: dispatch. A request takes the current generation here and keeps it
 * until its pool is cleared; the route it matched serves it.
 */
#include "util/platform.h"

#include "gateway/generation.h"
#include "gateway/router.h"

const char gw_default_headers[] =
    "Access-Control-Allow-Origin: *\r\n"
    "Access-Control-Expose-Headers: x-request-id, x-aigate-cache, Retry-After, "
    "RateLimit-Limit, RateLimit-Remaining, RateLimit-Reset\r\n";

static void release_gen(void *ref)
{
    gw_gen_release(ref);
}

void gw_router_handle(ag_req_t *req)
{
    gw_worker_t *w = ag_worker_ctx(req->worker);
    if (ag_str_eq(req->head.method, AG_STR_LIT("OPTIONS"))) {
        ag_req_add_header(req, "Access-Control-Allow-Methods", AG_STR_LIT("POST, OPTIONS"));
        ag_req_add_header(req, "Access-Control-Allow-Headers",
                          AG_STR_LIT("Content-Type, Authorization"));
        ag_req_respond(req, 200, NULL, AG_STR_NULL);
        return;
    }
    gw_gen_ref_t *ref = gw_gen_acquire(w);
    ag_pool_on_clear(&req->pool, release_gen, ref);
    bool path_known;
    const gw_route_t *route = gw_gen_route(ref->gen, req->head.method, req->head.path, &path_known);
    if (!route) {
        ag_req_respond(req, 404, "text/plain;charset=UTF-8", AG_STR_LIT("Not Found"));
        return;
    }
    req->route = route->def->path;
    route->def->handle(req, w, route);
}

void gw_router_respond_error(void *server_ctx, ag_req_t *req, int status, const char *msg)
{
    AG_UNUSED(server_ctx);
    /* The route table is static: no generation is needed (nor taken) to know
     * which protocol a path speaks. */
    for (size_t i = 0; i < gw_nroute_defs; i++) {
        const gw_route_def_t *d = &gw_route_defs[i];
        if (d->proto && req->head.path.len && ag_str_eq(req->head.path, ag_str_c(d->path))) {
            d->proto->respond_error(
                req, status, status == 413 ? "request_too_large" : "invalid_request_error", msg);
            return;
        }
    }
    ag_req_respond_error(req, status, msg);
}
