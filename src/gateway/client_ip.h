/* SPDX-License-Identifier: MIT
 *
 * client_ip.h: who the client is. The socket's peer address, unless the peer
 * is a configured proxy: then the forwarded chain (every X-Forwarded-For line
 * as one list, or RFC 7239 Forwarded "for="), walked from the right past the
 * trusted hops; CF-Connecting-IP only from Cloudflare's edge. Read-only after
 * creation: threads share it.
 */
#ifndef AG_GATEWAY_CLIENT_IP_H
#define AG_GATEWAY_CLIENT_IP_H

#include <stdbool.h>
#include <stddef.h>

#include "util/str.h"

typedef struct ag_trusted ag_trusted_t;

/** Parses addresses and CIDRs ("127.0.0.1", "10.0.0.0/8", "::1", "fd00::/8").
 *  @return 0, or AG_EINVALID with *bad set to the entry that did not parse. */
int ag_trusted_new(char *const *list, ag_trusted_t **out, const char **bad);
void ag_trusted_free(ag_trusted_t *t);

/** True when the textual address `ip` is trusted. */
bool ag_trusted_contains(const ag_trusted_t *t, ag_str_t ip);

/** What a request says about where it came from: header lines in the order
 *  they arrived (views into the request; none: n = 0). */
typedef struct ag_forwarded {
    ag_str_t cf_connecting_ip;
    const ag_str_t *xff; /* X-Forwarded-For lines */
    size_t nxff;
    const ag_str_t *fwd; /* Forwarded lines */
    size_t nfwd;
} ag_forwarded_t;

/** Resolves the client address into out[64]. `proxies`: trusted_proxies,
 *  `cf`: trusted_proxies_cf (either may be NULL); `peer` is the socket's.
 *  - A peer in neither list: the peer.
 *  - A peer in `cf` with a valid CF-Connecting-IP: that address.
 *  - Else the chain is walked from the right, hops in either list skipped:
 *    the first one trusted by neither is the client (anything left of it
 *    could have been written by the client); past an entry that is no
 *    address, the last trusted hop; all trusted: the leftmost.
 *  - X-Forwarded-For and Forwarded both present and naming different
 *    clients: the peer, since a client could have written either.
 *  Addresses come out normalised (IPv4-mapped IPv6 as IPv4). */
void ag_client_resolve(const ag_trusted_t *proxies, const ag_trusted_t *cf, const char *peer,
                       const ag_forwarded_t *fwd, char out[64]);

#endif
