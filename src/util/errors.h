/* SPDX-License-Identifier: MIT
 *
 * errors.h: our error codes (errors.def) and ag_strerror(), which also
 * covers negative errno values.
 */
#ifndef AG_UTIL_ERRORS_H
#define AG_UTIL_ERRORS_H

enum ag_err {
#define AG_ERR(name, value, http, msg) AG_E##name = (value),
#include "util/errors.def"
#undef AG_ERR
};

/** Message for an AG_E* code or a negative errno. Static storage. */
const char *ag_strerror(int code);

/** The HTTP status that an AG_E* code maps to; 500 when it has none. */
int ag_err_http_status(int code);

#endif
