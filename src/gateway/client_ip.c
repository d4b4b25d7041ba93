/* SPDX-License-Identifier: MIT
 *
 * client_ip.c: trusted-proxy matching (IPv4/IPv6 CIDRs) and the client
 * address rule. Forwarding headers are believed only from trusted peers, and
 * only as far as trusted hops wrote them, so a client cannot pick its own
 * address to escape, or exhaust someone else's, rate limit.
 */
#include "util/platform.h"

#include <arpa/inet.h>
#include <errno.h>
#include <string.h>

#include "gateway/client_ip.h"
#include "http/addr.h"
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
        if (!ag_addr_parse(s, alen, &nt->family, nt->addr))
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

static bool contains(const ag_trusted_t *t, int family, const unsigned char *addr)
{
    for (size_t i = 0; t && i < t->n; i++) {
        if (net_contains(&t->nets[i], family, addr))
            return true;
    }
    return false;
}

static ag_str_t trim(ag_str_t s)
{
    while (s.len && (s.ptr[0] == ' ' || s.ptr[0] == '\t'))
        s.ptr++, s.len--;
    while (s.len && (s.ptr[s.len - 1] == ' ' || s.ptr[s.len - 1] == '\t'))
        s.len--;
    return s;
}

bool ag_trusted_contains(const ag_trusted_t *t, ag_str_t ip)
{
    int family;
    unsigned char addr[16];
    ip = trim(ip);
    return ag_addr_parse(ip.ptr, ip.len, &family, addr) && contains(t, family, addr);
}

/* ---- the forwarded chain ------------------------------------------------- */

/* The rightmost hops are the ones trusted proxies wrote; a longer chain keeps
 * those and drops its left end. */
#define MAX_HOPS 64

typedef struct hops {
    ag_str_t v[MAX_HOPS];
    size_t n;
    bool dropped;
} hops_t;

static void hops_push(hops_t *h, ag_str_t s)
{
    if (h->n == MAX_HOPS) {
        memmove(h->v, h->v + 1, (MAX_HOPS - 1) * sizeof(h->v[0]));
        h->n--;
        h->dropped = true;
    }
    h->v[h->n++] = trim(s);
}

/* X-Forwarded-For: every line, comma-separated, one list (RFC 9110 5.3). */
static void hops_xff(hops_t *h, const ag_str_t *lines, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        const char *p = lines[i].ptr, *end = p + lines[i].len;
        while (p && p <= end) {
            const char *comma = memchr(p, ',', (size_t)(end - p));
            const char *stop = comma ? comma : end;
            ag_str_t item = trim(ag_str(p, (size_t)(stop - p)));
            if (item.len) /* empty list elements are allowed and mean nothing */
                hops_push(h, item);
            p = comma ? comma + 1 : NULL;
        }
    }
}

/* Forwarded (RFC 7239): elements split by commas, pairs by semicolons, values
 * tokens or quoted strings; each element's for= is one hop. An element with
 * none is a hop that is no address. */
static void hops_forwarded(hops_t *h, const ag_str_t *lines, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        const char *p = lines[i].ptr, *end = p + lines[i].len;
        ag_str_t node = AG_STR_NULL;
        bool any = false;
        while (p < end) {
            while (p < end && (*p == ' ' || *p == '\t'))
                p++;
            const char *name = p;
            while (p < end && *p != '=' && *p != ';' && *p != ',')
                p++;
            ag_str_t key = trim(ag_str(name, (size_t)(p - name)));
            ag_str_t val = AG_STR_NULL;
            if (p < end && *p == '=') {
                p++;
                if (p < end && *p == '"') {
                    const char *q = ++p;
                    while (p < end && *p != '"') {
                        if (*p == '\\' && p + 1 < end)
                            p++;
                        p++;
                    }
                    val = ag_str(q, (size_t)(p - q));
                    if (p < end)
                        p++;
                } else {
                    const char *q = p;
                    while (p < end && *p != ';' && *p != ',')
                        p++;
                    val = trim(ag_str(q, (size_t)(p - q)));
                }
                while (p < end && *p != ';' && *p != ',')
                    p++; /* junk after a value */
            }
            if (key.len) {
                any = true;
                if (ag_str_eq_lit_ci(key, "for"))
                    node = val;
            }
            if (p < end && *p == ';') {
                p++;
                continue;
            }
            if (p < end && *p == ',')
                p++;
            if (any)
                hops_push(h, node.ptr ? node : AG_STR_LIT("unknown"));
            node = AG_STR_NULL;
            any = false;
        }
        if (any)
            hops_push(h, node.ptr ? node : AG_STR_LIT("unknown"));
    }
}

static void format_addr(int family, const unsigned char *addr, char out[64])
{
    ag_addr_format(family, addr, out);
}

/* The walk from the right; the peer (trusted) is the hop right of them all. */
static void walk(const ag_trusted_t *proxies, const ag_trusted_t *cf, const hops_t *h,
                 int peer_family, const unsigned char *peer_addr, char out[64])
{
    int family = peer_family;
    unsigned char last[16];
    memcpy(last, peer_addr, 16);
    for (size_t i = h->n; i-- > 0;) {
        int f;
        unsigned char a[16];
        if (!ag_addr_parse(h->v[i].ptr, h->v[i].len, &f, a))
            break; /* a trusted hop wrote what is no address: stop at that hop */
        if (!contains(proxies, f, a) && !contains(cf, f, a)) {
            format_addr(f, a, out);
            return;
        }
        family = f;
        memcpy(last, a, 16);
        if (i == 0 && h->dropped) {
            /* The chain went on beyond what was kept: the client is unknown. */
            family = peer_family;
            memcpy(last, peer_addr, 16);
        }
    }
    format_addr(family, last, out);
}

void ag_client_resolve(const ag_trusted_t *proxies, const ag_trusted_t *cf, const char *peer,
                       const ag_forwarded_t *fwd, char out[64])
{
    int pf;
    unsigned char pa[16];
    /* No proxy is trusted: the client is the peer, and an IPv4 peer's text
     * (no colon) is already what format_addr would make of it. */
    if ((!proxies || !proxies->n) && (!cf || !cf->n) && !strchr(peer, ':')) {
        ag_addr_copy(out, peer);
        return;
    }
    if (!ag_addr_parse(peer, strlen(peer), &pf, pa)) {
        ag_addr_copy(out, peer);
        return;
    }
    bool via_cf = contains(cf, pf, pa);
    if (!via_cf && !contains(proxies, pf, pa)) {
        format_addr(pf, pa, out);
        return;
    }
    if (via_cf && fwd->cf_connecting_ip.len) {
        ag_str_t s = trim(fwd->cf_connecting_ip);
        int f;
        unsigned char a[16];
        if (ag_addr_parse(s.ptr, s.len, &f, a)) {
            format_addr(f, a, out);
            return;
        }
    }
    char a[64], b[64];
    hops_t hops, *h = &hops;
    h->n = 0;
    h->dropped = false;
    hops_xff(h, fwd->xff, fwd->nxff);
    bool have_xff = h->n > 0;
    walk(proxies, cf, h, pf, pa, a);
    h->n = 0;
    h->dropped = false;
    hops_forwarded(h, fwd->fwd, fwd->nfwd);
    bool have_fwd = h->n > 0;
    walk(proxies, cf, h, pf, pa, b);
    if (have_xff && have_fwd && strcmp(a, b) != 0)
        format_addr(pf, pa, out);
    else
        ag_addr_copy(out, have_fwd ? b : a);
}
