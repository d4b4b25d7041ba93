/* SPDX-License-Identifier: MIT
 *
 * errors.h: every error code of our own (declared once, in errors.def, for
 * all modules) and the two lookups over them, ag_strerror() and
 * ag_err_http_status(), which also cover negative errno values.
 */
#ifndef AG_UTIL_ERRORS_H
#define AG_UTIL_ERRORS_H

enum ag_err {
#define AG_ERR(name, value, http, msg) name = (value),
#include "util/errors.def"
#undef AG_ERR
};

/** Message for any code in errors.def or a negative errno; "success" for 0
 *  and "unknown error" for anything else. Static storage. */
const char *ag_strerror(int code);

/** The HTTP status declared for a code in errors.def; 500 for a code declared
 *  without one (0), for a negative errno and for any other value. */
int ag_err_http_status(int code);

#endif
