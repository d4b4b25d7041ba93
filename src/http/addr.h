/* SPDX-License-Identifier: MIT
 *
 * addr.h: client addresses as text: parsing the forms proxies write, and the
 * identity a client is counted by (limits, connection caps): IPv4 per address,
 * IPv6 per prefix (one subscriber holds a whole /64), IPv4-mapped IPv6 as IPv4.
 */
#ifndef AG_HTTP_ADDR_H
#define AG_HTTP_ADDR_H

#include <stdbool.h>
#include <stddef.h>

#define AG_ADDR_TEXT 64 /* room for any address this module writes, NUL included */

/** Parses an address as proxies write it: "1.2.3.4", "1.2.3.4:port", "::1",
 *  "[::1]", "[::1]:port". An IPv4-mapped IPv6 address comes back as IPv4.
 *  @return true with *family (AF_INET/AF_INET6) and addr (4 or 16 bytes). */
bool ag_addr_parse(const char *s, size_t len, int *family, unsigned char addr[16]);

/** The identity a client is counted by, into out[AG_ADDR_TEXT]: an IPv4
 *  address as itself; an IPv6 one as its network of `prefix6` bits
 *  ("2001:db8:1:2::/64"; 128: the address). Text that is no address is
 *  copied as it is (a handler's own client names). */
void ag_addr_identity(const char *ip, unsigned prefix6, char out[AG_ADDR_TEXT]);

/** s into out[AG_ADDR_TEXT], cut to fit: a copy without printf's cost. */
void ag_addr_copy(char out[AG_ADDR_TEXT], const char *s);

/** An address (AF_INET: 4 bytes, AF_INET6: 16) as inet_ntop writes it, into
 *  out[AG_ADDR_TEXT]; IPv4 without printf (it runs once or twice a request). */
void ag_addr_format(int family, const unsigned char *addr, char out[AG_ADDR_TEXT]);

#endif
