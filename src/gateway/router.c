/* SPDX-License-Identifier: MIT
 *
 * router.c: dispatch. A request takes the current generation here and keeps it
 * until its pool is cleared; the route it matched serves it. CORS is decided
 * here too, per route and per Origin, preflights included.
 */
#include "util/platform.h"

#include "gateway/access.h"
#include "gateway/generation.h"
#include "gateway/router.h"

static void release_gen(void *ref)
{
    gw_gen_release(ref);
}

/* Whether the route at `path` (any method) answers CORS to listed origins only. */
static bool path_strict(const gw_gen_t *gen, ag_str_t path)
{
    for (size_t i = 0; i < gen->nroutes; i++) {
        if (ag_str_eq(path, ag_str_c(gen->routes[i].def->path)))
            return gen->routes[i].def->cors_strict;
    }
    return false;
}

static void preflight(ag_req_t *req, const gw_gen_t *gen)
{
    bool strict = path_strict(gen, req->head.path);
    if (!gw_cors_apply(req, gen, strict)) {
        /* No CORS headers at all: the browser blocks the request. */
        ag_req_respond(req, 204, NULL, AG_STR_NULL);
        return;
    }
    if (strict) {
        /* The SDKs send their own headers (x-api-key, anthropic-*, x-stainless-*):
         * an allowed origin may send what it asks for. */
        ag_str_t asked = ag_req_header(req, "Access-Control-Request-Headers");
        ag_req_add_header(req, "Access-Control-Allow-Methods", AG_STR_LIT("GET, POST, OPTIONS"));
        ag_req_add_header(req, "Access-Control-Allow-Headers",
                          asked.len ? asked
                                    : AG_STR_LIT("Content-Type, Authorization, x-api-key, "
                                                 "anthropic-version, anthropic-beta"));
        ag_req_add_header(req, "Access-Control-Max-Age", AG_STR_LIT("600"));
    } else {
        ag_req_add_header(req, "Access-Control-Allow-Methods", AG_STR_LIT("POST, OPTIONS"));
        ag_req_add_header(req, "Access-Control-Allow-Headers",
                          AG_STR_LIT("Content-Type, Authorization"));
    }
    ag_req_respond(req, 200, NULL, AG_STR_NULL);
}

void gw_router_handle(ag_req_t *req)
{
    gw_worker_t *w = ag_worker_ctx(req->worker);
    gw_gen_ref_t *ref = gw_gen_acquire(w);
    ag_pool_on_clear(&req->pool, release_gen, ref);
    if (ag_str_eq(req->head.method, AG_STR_LIT("OPTIONS"))) {
        preflight(req, ref->gen);
        return;
    }
    bool path_known;
    const gw_route_t *route = gw_gen_route(ref->gen, req->head.method, req->head.path, &path_known);
    if (!route) {
        gw_cors_apply(req, ref->gen, path_strict(ref->gen, req->head.path));
        ag_req_respond(req, 404, "text/plain;charset=UTF-8", AG_STR_LIT("Not Found"));
        return;
    }
    gw_cors_apply(req, ref->gen, route->def->cors_strict);
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
