/* SPDX-License-Identifier: MIT
 *
 * errors.c: expands errors.def into the message and HTTP-status lookups. Both
 * are switches over every declared value, so a value declared twice is a
 * compile error (duplicate case label).
 */
#include "util/platform.h"

#include <string.h>

#include "util/errors.h"

const char *ag_strerror(int code)
{
    switch (code) {
#define AG_ERR(name, value, http, msg)                                                             \
    case value:                                                                                    \
        return msg;
#include "util/errors.def"
#undef AG_ERR
    default:
        break;
    }
    if (code < 0 && code > -4096)
        return strerror(-code);
    return code == 0 ? "success" : "unknown error";
}

int ag_err_http_status(int code)
{
    switch (code) {
#define AG_ERR(name, value, http, msg)                                                             \
    case value:                                                                                    \
        return (http) ? (http) : 500;
#include "util/errors.def"
#undef AG_ERR
    default:
        return 500;
    }
}
