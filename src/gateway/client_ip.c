/* SPDX-License-Identifier: MIT
 *
 * client_ip.c: trusted-proxy matching (IPv4/IPv6 CIDRs) and the client
 * address rule. Forwarding headers are believed only from trusted peers, so a
 * client cannot pick its own address to escape the rate limit.
 */
#include "util/platform.h"

#include <arpa/inet.h>
#include <errno.h>
#include <string.h>

#include "gateway/client_ip.h"
#include "util/errors.h"

typedef struct net {
    int family;
    unsigned char addr[16];
    unsigned prefix;
} net_t;

struct ag_trusted {
    net_t *nets;
    size_t n;
};

static bool parse_ip(const char *s, size_t len, int *family, unsigned char addr[16])
{
    char buf[64];
    if (len == 0 || len >= sizeof(buf))
        return false;
    memcpy(buf, s, len);
    buf[len] = '\0';
    /* "[::1]" and "1.2.3.4:port" forms as some proxies write them */
    char *p = buf;
    if (*p == '[') {
        char *end = strchr(p, ']');
        if (!end)
            return false;
        *end = '\0';
        p++;
    } else if (strchr(p, '.') && strchr(p, ':') && strchr(p, ':') == strrchr(p, ':')) {
        *strchr(p, ':') = '\0'; /* one colon: IPv4 with a port; IPv6 has several */
    }
    memset(addr, 0, 16);
    if (inet_pton(AF_INET, p, addr) == 1) {
        *family = AF_INET;
        return true;
    }
    if (inet_pton(AF_INET6, p, addr) == 1) {
        /* An IPv4-mapped IPv6 address is that IPv4 address. */
        static const unsigned char mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
        if (memcmp(addr, mapped, 12) == 0) {
            memmove(addr, addr + 12, 4);
            memset(addr + 4, 0, 12);
            *family = AF_INET;
        } else {
            *family = AF_INET6;
        }
        return true;
    }
    return false;
}

int ag_trusted_new(char *const *list, ag_trusted_t **out, const char **bad)
{
    ag_trusted_t *t = calloc(1, sizeof(*t));
    if (!t)
        return -ENOMEM;
    size_t n = 0;
    while (list && list[n])
        n++;
    t->nets = calloc(n ? n : 1, sizeof(net_t));
    if (!t->nets) {
        free(t);
        return -ENOMEM;
    }
    for (size_t i = 0; i < n; i++) {
        const char *s = list[i];
        const char *slash = strchr(s, '/');
        size_t alen = slash ? (size_t)(slash - s) : strlen(s);
        net_t *nt = &t->nets[t->n];
        if (!parse_ip(s, alen, &nt->family, nt->addr))
            goto bad_entry;
        unsigned max = nt->family == AF_INET ? 32 : 128;
        nt->prefix = max;
        if (slash) {
            char *end;
            errno = 0;
            unsigned long p = strtoul(slash + 1, &end, 10);
            if (errno || *end || end == slash + 1 || p > max)
                goto bad_entry;
            nt->prefix = (unsigned)p;
        }
        t->n++;
        continue;
    bad_entry:
        if (bad)
            *bad = s;
        ag_trusted_free(t);
        return AG_EINVALID;
    }
    *out = t;
    return 0;
}

void ag_trusted_free(ag_trusted_t *t)
{
    if (!t)
        return;
    free(t->nets);
    free(t);
}

static bool net_contains(const net_t *n, int family, const unsigned char *addr)
{
    if (n->family != family)
        return false;
    unsigned full = n->prefix / 8, rest = n->prefix % 8;
    if (memcmp(n->addr, addr, full) != 0)
        return false;
    if (rest == 0)
        return true;
    unsigned char mask = (unsigned char)(0xff << (8 - rest));
    return (n->addr[full] & mask) == (addr[full] & mask);
}

bool ag_trusted_contains(const ag_trusted_t *t, ag_str_t ip)
{
    if (!t || t->n == 0)
        return false;
    int family;
    unsigned char addr[16];
    while (ip.len && (ip.ptr[0] == ' ' || ip.ptr[0] == '\t'))
        ip.ptr++, ip.len--;
    while (ip.len && (ip.ptr[ip.len - 1] == ' ' || ip.ptr[ip.len - 1] == '\t'))
        ip.len--;
    if (!parse_ip(ip.ptr, ip.len, &family, addr))
        return false;
    for (size_t i = 0; i < t->n; i++) {
        if (net_contains(&t->nets[i], family, addr))
            return true;
    }
    return false;
}

static void copy_addr(ag_str_t s, char out[64])
{
    while (s.len && (s.ptr[0] == ' ' || s.ptr[0] == '\t'))
        s.ptr++, s.len--;
    while (s.len && (s.ptr[s.len - 1] == ' ' || s.ptr[s.len - 1] == '\t'))
        s.len--;
    int family;
    unsigned char addr[16];
    /* Only a well-formed address may become the client's identity. */
    if (!parse_ip(s.ptr, s.len, &family, addr)) {
        snprintf(out, 64, "invalid");
        return;
    }
    inet_ntop(family, addr, out, 64);
}

void ag_client_ip(const ag_trusted_t *t, const char *peer, ag_str_t cf, ag_str_t xff, char out[64])
{
    if (!ag_trusted_contains(t, ag_str_c(peer))) {
        snprintf(out, 64, "%s", peer);
        return;
    }
    if (cf.len) {
        copy_addr(cf, out);
        return;
    }
    /* Walk X-Forwarded-For from the right: the first hop we do not trust is
     * the client; anything left of it could have been written by the client. */
    const char *end = xff.ptr ? xff.ptr + xff.len : NULL;
    while (end && end > xff.ptr) {
        const char *start = end;
        while (start > xff.ptr && start[-1] != ',')
            start--;
        ag_str_t item = ag_str(start, (size_t)(end - start));
        if (!ag_trusted_contains(t, item)) {
            copy_addr(item, out);
            return;
        }
        end = start > xff.ptr ? start - 1 : NULL;
    }
    snprintf(out, 64, "%s", peer);
}
