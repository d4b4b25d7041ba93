/* SPDX-License-Identifier: MIT
 *
 * fuzz_chunked.c: the chunked decoder on arbitrary bytes (the first byte picks
 * a split point). Decodes whole and in two pieces: the decoded bytes stay
 * within the input, the leftover is the input's tail, and both ways agree.
 */
#include "util/platform.h"

#include <stdint.h>
#include <string.h>

#include "http/parser.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    const char *in = (const char *)data + 1;
    size_t n = size - 1, split = data[0] % (n + 1), alen = n, l1 = split, l2 = n - split;
    char *a = malloc(n + 1), *b = malloc(n + 1);
    memcpy(a, in, n);
    memcpy(b, in, n);
    ag_chunked_decoder_t d1, d2;
    ag_chunked_init(&d1);
    ag_chunked_init(&d2);

    int rc = ag_chunked_decode(&d1, a, &alen);
    AG_ASSERT(rc == AG_EAGAIN || rc == AG_EPROTO || rc >= 0);
    AG_ASSERT(alen <= n && (rc < 0 || alen + (size_t)rc <= n));
    if (rc > 0)
        AG_ASSERT(memcmp(a + alen, in + n - (size_t)rc, (size_t)rc) == 0);

    int r = ag_chunked_decode(&d2, b, &l1);
    if (r == AG_EAGAIN)
        r = ag_chunked_decode(&d2, b + split, &l2);
    else
        l2 = 0;
    if (rc == AG_EPROTO) {
        AG_ASSERT(r == AG_EPROTO);
    } else {
        AG_ASSERT(r != AG_EPROTO && (r >= 0) == (rc >= 0) && l1 + l2 == alen);
        AG_ASSERT(memcmp(a, b, l1) == 0 && memcmp(a + l1, b + split, l2) == 0);
    }
    free(a);
    free(b);
    return 0;
}
