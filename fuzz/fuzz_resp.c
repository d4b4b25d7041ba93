/* SPDX-License-Identifier: MIT
 *
 * fuzz_resp.c: the RESP2 reply parser on arbitrary bytes. Byte 0 picks the
 * chunk sizes; the rest is parsed as a run of replies twice, whole and fed in
 * those chunks, and both runs must agree on every reply and on the end.
 */
#include "util/platform.h"

#include <stdint.h>
#include <string.h>

#include "store/resp.h"
#include "util/errors.h"

static void mix(uint64_t *h, const void *p, size_t n)
{
    const unsigned char *s = p;
    for (size_t i = 0; i < n; i++)
        *h = (*h ^ s[i]) * UINT64_C(0x100000001b3);
    *h = (*h ^ n) * UINT64_C(0x100000001b3);
}

static void digest(uint64_t *h, const ag_resp_t *r, const char *base, size_t size)
{
    mix(h, &r->type, sizeof(r->type));
    switch (r->type) {
    case AG_RESP_STATUS:
    case AG_RESP_ERROR:
    case AG_RESP_BULK:
        AG_ASSERT(r->str >= base && r->str + r->len <= base + size);
        mix(h, r->str, r->len);
        break;
    case AG_RESP_INTEGER:
        mix(h, &r->integer, sizeof(r->integer));
        break;
    case AG_RESP_ARRAY:
        for (size_t i = 0; i < r->len; i++)
            digest(h, &r->elems[i], base, size);
        break;
    default:
        break;
    }
}

/* step 0: everything at once; otherwise the visible length grows in steps. */
static int64_t run(const char *data, size_t size, unsigned step, uint64_t *h)
{
    static const ag_resp_limits_t limits = {.max_bulk = 4096, .max_nodes = 512};
    ag_resp_parser_t p;
    ag_resp_parser_init(&p, &limits);
    size_t off = 0, seen = step ? 0 : size;
    *h = UINT64_C(0xcbf29ce484222325);
    for (int replies = 0; replies < 4096; replies++) {
        ag_resp_t *r = NULL;
        int64_t rc = ag_resp_parse(&p, data + off, seen - off, &r);
        if (rc == AG_EAGAIN && seen < size) {
            seen += 1 + (unsigned char)data[seen] % step;
            seen = seen < size ? seen : size;
            replies--;
            continue;
        }
        if (rc <= 0)
            return rc;
        AG_ASSERT((size_t)rc <= seen - off);
        digest(h, r, data + off, (size_t)rc);
        ag_resp_free(r);
        off += (size_t)rc;
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    uint64_t a, b;
    int64_t ra = run((const char *)data + 1, size - 1, 0, &a);
    int64_t rb = run((const char *)data + 1, size - 1, 1u + data[0] % 16, &b);
    AG_ASSERT(ra == rb && a == b);
    return 0;
}
