/* SPDX-License-Identifier: MIT
 *
 * hex.h: lowercase hex encoding and decoding of bytes, for cursors, object
 * names, digests and escapes. Pure functions, safe on any thread.
 */
#ifndef AG_UTIL_HEX_H
#define AG_UTIL_HEX_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

/** The value (0-15) of the hex digit c, either case; -1 when c is not one. */
int ag_hex_digit(int c);

/** True when s[0..len) is all lowercase hex digits (the form ag_hex_encode writes). */
bool ag_hex_is_lower(const char *s, size_t len);

/** Writes the 2*n lowercase hex digits of p[0..n) and a NUL at out, which has
 *  room for 2*n + 1 bytes. p may be NULL when n is 0. */
void ag_hex_encode(const void *p, size_t n, char *out);

/** Same, into a malloc'd NUL-terminated string owned by the caller (free()).
 *  @return NULL on out-of-memory. */
char *ag_hex_encode_alloc(const void *p, size_t n);

/** Decodes the len hex digits (either case) at s into out, which has room for
 *  cap bytes. @return the bytes written (len / 2); AG_EINVALID for an odd len
 *  or a byte that is not a hex digit; AG_ETOOBIG when len / 2 > cap. Nothing
 *  is promised about out after an error. */
ssize_t ag_hex_decode(const char *s, size_t len, void *out, size_t cap);

/** Percent-decodes s[0..n) (RFC 3986; with plus_is_space, '+' is a space as in
 *  application/x-www-form-urlencoded) into out[cap], NUL-terminated.
 *  @return false for a bad escape, a decoded NUL, or no room. */
bool ag_percent_decode(const char *s, size_t n, char *out, size_t cap, bool plus_is_space);

#endif
