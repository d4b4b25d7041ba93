/* SPDX-License-Identifier: MIT
 *
 * utf.h: UTF-8 checks and JavaScript-compatible string length (UTF-16 code
 * units), which the seed's `prompt.length > 4000` rule is defined in.
 */
#ifndef AG_UTIL_UTF_H
#define AG_UTIL_UTF_H

#include <stdbool.h>
#include <stddef.h>

/** True when s[0..len) is well-formed UTF-8 (no overlongs, surrogates or > U+10FFFF). */
bool ag_utf8_valid(const char *s, size_t len);

/** Length in UTF-16 code units of valid UTF-8 text, as JS String.length counts it.
 *  An invalid byte counts as one unit (U+FFFD), as a JS decoder would map it. */
size_t ag_utf16_length(const char *s, size_t len);

/** Decodes one code point at s (len bytes available). @return bytes used (1..4) and
 *  sets *cp, or 0 for an invalid sequence. */
size_t ag_utf8_decode(const unsigned char *s, size_t len, unsigned *cp);

#endif
