/* SPDX-License-Identifier: MIT
 *
 * client_ip.h: who the client is. The socket's peer address, unless the peer
 * is a configured trusted proxy: then CF-Connecting-IP, else the rightmost
 * untrusted X-Forwarded-For entry. Read-only after creation: threads share it.
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

/** Resolves the client address into out[64]. `peer` is the socket address;
 *  `cf` and `xff` are the header values (AG_STR_NULL when absent). */
void ag_client_ip(const ag_trusted_t *t, const char *peer, ag_str_t cf, ag_str_t xff, char out[64]);

#endif
