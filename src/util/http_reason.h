/* SPDX-License-Identifier: MIT
 *
 * http_reason.h: the reason phrase of an HTTP status code.
 */
#ifndef AG_UTIL_HTTP_REASON_H
#define AG_UTIL_HTTP_REASON_H

/** "OK", "Not Found"...; NULL for a code without one we know. Static. */
const char *ag_http_reason(int status);

#endif
