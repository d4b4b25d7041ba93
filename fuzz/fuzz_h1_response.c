/* SPDX-License-Identifier: MIT
 *
 * fuzz_h1_response.c: the native client's response parser on arbitrary bytes:
 * a head, then its body decoded whole and split at a point the first byte
 * picks. Both ways agree, and nothing is read or written out of bounds.
 */
#include "util/platform.h"

#include <stdint.h>
#include <string.h>

#include "upstream/h1_parse.h"

static int decode(const ag_h1_response_head_t *hd, char *buf, size_t n, size_t split, char *out,
                  size_t *outlen)
{
    ag_h1_body_t b;
    ag_h1_body_init(&b, hd, false);
    size_t l1 = split, l2 = n - split;
    *outlen = 0;
    int rc = ag_h1_body_decode(&b, buf, &l1);
    AG_ASSERT(l1 <= split);
    memcpy(out, buf, l1);
    *outlen = l1;
    if (rc == AG_EAGAIN) {
        rc = ag_h1_body_decode(&b, buf + split, &l2);
        AG_ASSERT(l2 <= n - split);
        memcpy(out + l1, buf + split, l2);
        *outlen += l2;
    }
    if (rc == AG_EAGAIN)
        rc = ag_h1_body_eof(&b) == 0 ? -1 : AG_EPROTO;
    return rc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    const char *in = (const char *)data + 1;
    size_t n = size - 1;
    ag_h1_header_t h[16];
    ag_h1_response_head_t hd;
    int rc = ag_h1_parse_response_head(in, n, h, 16, &hd);
    AG_ASSERT(rc == AG_EAGAIN || rc == AG_EPROTO || rc == AG_EHDRTOOBIG ||
              (rc > 0 && (size_t)rc <= n));
    if (rc <= 0)
        return 0;
    AG_ASSERT(hd.status >= 100 && hd.status <= 599 && hd.num_headers <= 16);
    size_t blen = n - (size_t)rc;
    char *a = malloc(blen + 1), *b = malloc(blen + 1), *oa = malloc(blen + 1),
         *ob = malloc(blen + 1);
    memcpy(a, in + rc, blen);
    memcpy(b, in + rc, blen);
    size_t la, lb;
    int ra = decode(&hd, a, blen, blen, oa, &la);
    int rb = decode(&hd, b, blen, data[0] % (blen + 1), ob, &lb);
    AG_ASSERT((ra == AG_EPROTO) == (rb == AG_EPROTO));
    if (ra != AG_EPROTO)
        AG_ASSERT(la == lb && memcmp(oa, ob, la) == 0);
    free(a);
    free(b);
    free(oa);
    free(ob);
    return 0;
}
