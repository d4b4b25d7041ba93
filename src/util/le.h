/* SPDX-License-Identifier: MIT
 *
 * le.h: little-endian integers of 1-8 bytes in on-disk headers (the KV
 * records, the object files), independent of the host's byte order.
 */
#ifndef AG_UTIL_LE_H
#define AG_UTIL_LE_H

#include <stdint.h>

/** Writes the low n (1-8) bytes of v at p, least significant first. */
static inline void ag_le_put(unsigned char *p, uint64_t v, int n)
{
    for (int i = 0; i < n; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

/** Reads an n-byte (1-8) little-endian integer at p. */
static inline uint64_t ag_le_get(const unsigned char *p, int n)
{
    uint64_t v = 0;
    for (int i = 0; i < n; i++)
        v |= (uint64_t)p[i] << (8 * i);
    return v;
}

#endif
