/* SPDX-License-Identifier: MIT
 *
 * fuzz_client_ip.c: the forwarded-chain parsers (X-Forwarded-For lines,
 * RFC 7239 Forwarded) and the client address rule on arbitrary header bytes.
 * Input: lines split at '\n'; a line's first byte picks its header. Asserts
 * that the answer is always an address (or the peer) and NUL-terminated.
 */
#include "util/platform.h"

#include <arpa/inet.h>
#include <stdint.h>
#include <string.h>

#include "gateway/client_ip.h"
#include "http/addr.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static ag_trusted_t *t, *cf;
    if (!t) {
        static char *const proxies[] = {"10.0.0.0/8", "127.0.0.1", "::1", NULL};
        static char *const edge[] = {"173.245.48.0/20", NULL};
        AG_ASSERT(ag_trusted_new(proxies, &t, NULL) == 0 && ag_trusted_new(edge, &cf, NULL) == 0);
    }
    ag_str_t xff[16], fwd[16];
    ag_forwarded_t f = {.xff = xff, .fwd = fwd};
    const char *p = (const char *)data, *end = p + size;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *stop = nl ? nl : end;
        if (stop > p) {
            ag_str_t v = ag_str(p + 1, (size_t)(stop - p - 1));
            if (*p % 3 == 0 && f.nxff < 16)
                xff[f.nxff++] = v;
            else if (*p % 3 == 1 && f.nfwd < 16)
                fwd[f.nfwd++] = v;
            else
                f.cf_connecting_ip = v;
        }
        p = nl ? nl + 1 : end;
    }
    static const char *const peers[] = {"127.0.0.1", "173.245.48.9", "203.0.113.1"};
    for (size_t i = 0; i < AG_ARRAY_LEN(peers); i++) {
        char out[64];
        memset(out, 'x', sizeof(out));
        ag_client_resolve(t, cf, peers[i], &f, out);
        AG_ASSERT(memchr(out, '\0', sizeof(out)) != NULL);
        int fam;
        unsigned char a[16];
        AG_ASSERT(ag_addr_parse(out, strlen(out), &fam, a));
        char id[AG_ADDR_TEXT];
        ag_addr_identity(out, 64, id);
        AG_ASSERT(memchr(id, '\0', sizeof(id)) != NULL);
    }
    return 0;
}
