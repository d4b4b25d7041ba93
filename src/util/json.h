/* SPDX-License-Identifier: MIT
 *
 * json.h: writing JSON text into an ag_buf_t. Parsing uses jansson; writing
 * our own small responses directly avoids building a tree per request.
 */
#ifndef AG_UTIL_JSON_H
#define AG_UTIL_JSON_H

#include "util/buf.h"
#include "util/str.h"

/** Appends s as a quoted JSON string. Invalid UTF-8 bytes become U+FFFD, so the
 *  output is always valid JSON. @return 0 or a buf error. */
int ag_json_append_string(ag_buf_t *b, ag_str_t s);

/** Builds `{"error":"<msg>"}` into b. */
int ag_json_error_body(ag_buf_t *b, const char *msg);

#endif
