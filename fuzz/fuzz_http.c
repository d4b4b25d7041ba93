/* SPDX-License-Identifier: MIT
 *
 * fuzz_http.c: the request-head parser on arbitrary bytes. Asserts that a
 * complete head lies inside the input, that every view points into it, that
 * one byte less is incomplete, and that prefixes never contradict the whole.
 */
#include "util/platform.h"

#include <stdint.h>

#include "http/parser.h"

static void check_view(ag_str_t s, const char *b, size_t n)
{
    AG_ASSERT(s.ptr == NULL ? s.len == 0
                            : s.ptr >= b && s.ptr <= b + n && s.len <= (size_t)(b + n - s.ptr));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *buf = (const char *)data;
    ag_http_header_t h[32];
    ag_http_request_head_t r;
    int rc = ag_http_parse_request_head(buf, size, h, 32, &r);
    if (rc > 0) {
        AG_ASSERT((size_t)rc <= size && r.num_headers <= 32);
        ag_str_t v[] = {r.method, r.target, r.path, r.query, r.authority, r.host};
        for (size_t i = 0; i < AG_ARRAY_LEN(v); i++)
            check_view(v[i], buf, (size_t)rc);
        for (size_t i = 0; i < r.num_headers; i++) {
            check_view(h[i].name, buf, (size_t)rc);
            check_view(h[i].value, buf, (size_t)rc);
        }
        AG_ASSERT(!(r.chunked && r.content_length >= 0) && (r.minor_version & ~1) == 0);
        AG_ASSERT(ag_http_parse_request_head(buf, (size_t)rc - 1, h, 32, &r) == AG_EAGAIN);
    }
    int half = ag_http_parse_request_head(buf, size / 2, h, 32, &r);
    AG_ASSERT(half == AG_EAGAIN || half == rc);
    if (half == AG_EAGAIN && size / 2 > 0) {
        int next = ag_http_parse_request_head_next(buf, size, size / 2, h, 32, &r);
        AG_ASSERT(next == rc || (next == AG_EAGAIN && rc < 0));
    }
    return 0;
}
