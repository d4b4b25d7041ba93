/* SPDX-License-Identifier: MIT
 *
 * flight.h: request coalescing. Identical requests in flight, on any worker,
 * share one upstream call: the first leads (its worker runs the call), the
 * others wait; the answer reaches waiters on other workers through their
 * worker's mailbox. Shards keep the lock per key, never per request path.
 */
#ifndef AG_GATEWAY_FLIGHT_H
#define AG_GATEWAY_FLIGHT_H

#include <stdbool.h>

#include "gateway/answer.h"
#include "gateway/internal.h"

/** A waiter's answer, on its own worker's thread; res NULL means 502. The
 *  waiter is gone once this runs. */
typedef void (*gw_flight_cb)(void *ctx, const shared_result_t *res);

/** Turns the upstream's answer into the shared result (and fills the cache
 *  when `may_fill`); runs on the leading worker. `req_id` names the leading
 *  request in the log. */
typedef shared_result_t *(*gw_flight_finish_fn)(gw_worker_t *w, const gw_route_t *route,
                                                const char *kv_key, const char *req_id,
                                                const ag_upstream_response_t *resp, bool may_fill);

/** Joins the flight for `key`. @return true when the caller leads: it must
 *  then call gw_flight_fetch(). *out is what gw_flight_leave() takes. */
bool gw_flight_join(gw_worker_t *w, const unsigned char *key, gw_flight_cb cb, void *ctx,
                    gw_waiter_t **out);

/** The waiter's request went away before its answer: leave the flight. */
void gw_flight_leave(gw_worker_t *w, gw_waiter_t *waiter, const unsigned char *key);

/** The leader's upstream call; every waiter of the flight gets its result.
 *  The call holds the generation, so it outlives its own request. */
void gw_flight_fetch(gw_worker_t *w, const gw_route_t *route, const unsigned char *key,
                     const char *kv_key, const char *req_id, const char *model, ag_str_t body,
                     const char *const *headers, gw_flight_finish_fn finish);

/** Worker start and stop: the mailbox, and the calls it still leads (their
 *  waiters get a 502). */
int gw_flight_worker_init(gw_worker_t *w);
void gw_flight_worker_stop(gw_worker_t *w, uv_close_cb on_mailbox_closed);

/** Gateway start and end: shards and mailboxes. */
void gw_flight_init(ag_gateway_t *gw);
void gw_flight_fini(ag_gateway_t *gw);

#endif
