/* SPDX-License-Identifier: MIT
 *
 * test_client_ip.c: who the client is (a table of peers and forwarding
 * headers: X-Forwarded-For over all its lines, Forwarded, CF-Connecting-IP
 * from Cloudflare's edge only) and the identity it is counted by (IPv6 per
 * prefix, IPv4-mapped as IPv4).
 */
#include "util/platform.h"

#include <arpa/inet.h>
#include <string.h>

#include "gateway/client_ip.h"
#include "http/addr.h"
#include "util/errors.h"

#include "harness.h"

#define MAXL 8

typedef struct row {
    const char *peer;
    const char *cf;        /* CF-Connecting-IP, or NULL */
    const char *xff[MAXL]; /* X-Forwarded-For lines */
    const char *fwd[MAXL]; /* Forwarded lines */
    const char *want;
} row_t;

static const row_t rows[] = {
    /* An untrusted peer: every header ignored. */
    {"203.0.113.5", "1.1.1.1", {"2.2.2.2"}, {"for=3.3.3.3"}, "203.0.113.5"},
    /* CF-Connecting-IP: believed from Cloudflare's edge only ... */
    {"173.245.48.1", " 198.51.100.7 ", {"2.2.2.2"}, {0}, "198.51.100.7"},
    /* ... never from a plain trusted proxy, which gets the XFF walk. */
    {"127.0.0.1", "198.51.100.7", {"2.2.2.2"}, {0}, "2.2.2.2"},
    {"127.0.0.1", "198.51.100.7", {0}, {0}, "127.0.0.1"},
    /* Cloudflare's edge with a bad header: its XFF. */
    {"173.245.48.1", "not an ip", {"198.51.100.8"}, {0}, "198.51.100.8"},
    /* X-Forwarded-For: the rightmost hop we do not trust. */
    {"10.1.2.3", NULL, {"6.6.6.6, 198.51.100.9, 10.9.9.9"}, {0}, "198.51.100.9"},
    /* Every line is one list: a proxy that appends its own line (HAProxy's
     * option forwardfor) decides, not the line the client wrote first. */
    {"10.1.2.3", NULL, {"6.6.6.6", "198.51.100.10"}, {0}, "198.51.100.10"},
    {"10.1.2.3", NULL, {"6.6.6.6, 7.7.7.7", "198.51.100.10, 10.0.0.9"}, {0}, "198.51.100.10"},
    {"10.1.2.3", NULL, {"6.6.6.6", "", " , 198.51.100.11 ,"}, {0}, "198.51.100.11"},
    /* All hops trusted: the leftmost. */
    {"127.0.0.1", NULL, {"fd00::1, 10.0.0.1"}, {0}, "fd00::1"},
    /* Past an entry that is no address: the last trusted hop. */
    {"127.0.0.1", NULL, {"garbage, 10.0.0.1"}, {0}, "10.0.0.1"},
    {"127.0.0.1", NULL, {"6.6.6.6, garbage"}, {0}, "127.0.0.1"},
    /* Forms proxies write: ports, brackets, IPv4-mapped IPv6. */
    {"127.0.0.1", NULL, {"198.51.100.12:4711"}, {0}, "198.51.100.12"},
    {"127.0.0.1", NULL, {"[2001:db8::1]:443"}, {0}, "2001:db8::1"},
    {"127.0.0.1", NULL, {"::ffff:198.51.100.13"}, {0}, "198.51.100.13"},
    {"::ffff:127.0.0.1", NULL, {"198.51.100.14"}, {0}, "198.51.100.14"},
    {"::ffff:203.0.113.9", NULL, {"198.51.100.14"}, {0}, "203.0.113.9"},
    /* Forwarded (RFC 7239): for= of each element, quoted IPv6 with a port. */
    {"127.0.0.1", NULL, {0}, {"for=192.0.2.60;proto=http;by=203.0.113.43"}, "192.0.2.60"},
    {"127.0.0.1",
     NULL,
     {0},
     {"for=6.6.6.6, for=\"[2001:db8:cafe::17]:4711\""},
     "2001:db8:cafe::17"},
    {"127.0.0.1",
     NULL,
     {0},
     {"For=\"6.6.6.6\"", "for=192.0.2.61;proto=https, for=10.0.0.2"},
     "192.0.2.61"},
    {"127.0.0.1", NULL, {0}, {"for=6.6.6.6, for=unknown"}, "127.0.0.1"},
    {"127.0.0.1", NULL, {0}, {"for=6.6.6.6, proto=http"}, "127.0.0.1"},
    {"127.0.0.1", NULL, {0}, {"for=192.0.2.62;by=\"a,b;c\""}, "192.0.2.62"},
    /* Both headers naming different clients: the peer (either could be the client's). */
    {"127.0.0.1", NULL, {"6.6.6.6"}, {"for=192.0.2.63"}, "127.0.0.1"},
    {"127.0.0.1", NULL, {"192.0.2.64"}, {"for=192.0.2.64"}, "192.0.2.64"},
};

static size_t lines(const char *const *in, ag_str_t *out)
{
    size_t n = 0;
    while (n < MAXL && in[n]) {
        out[n] = ag_str_c(in[n]);
        n++;
    }
    return n;
}

TEST(client_address_table)
{
    static char *const proxies[] = {"10.0.0.0/8", "127.0.0.1", "fd00::/8", NULL};
    static char *const cf[] = {"173.245.48.0/20", NULL};
    ag_trusted_t *t = NULL, *c = NULL;
    ASSERT_EQ(ag_trusted_new(proxies, &t, NULL), 0);
    ASSERT_EQ(ag_trusted_new(cf, &c, NULL), 0);
    for (size_t i = 0; i < AG_ARRAY_LEN(rows); i++) {
        const row_t *r = &rows[i];
        ag_str_t x[MAXL], f[MAXL];
        ag_forwarded_t fw = {.cf_connecting_ip = r->cf ? ag_str_c(r->cf) : AG_STR_NULL,
                             .xff = x,
                             .nxff = lines(r->xff, x),
                             .fwd = f,
                             .nfwd = lines(r->fwd, f)};
        char out[64];
        ag_client_resolve(t, c, r->peer, &fw, out);
        ASSERT_MSG_(strcmp(out, r->want) == 0, "row %zu: got %s, want %s", i, out, r->want);
    }
    /* A chain longer than is kept, trusted all along: the client is unknown. */
    char chain[64 * 12 + 32] = "6.6.6.6";
    for (int i = 0; i < 70; i++)
        strcat(chain, ", 10.0.0.1");
    ag_str_t x = ag_str_c(chain);
    ag_forwarded_t fw = {.xff = &x, .nxff = 1};
    char out[64];
    ag_client_resolve(t, c, "127.0.0.1", &fw, out);
    ASSERT_STREQ(out, "127.0.0.1");
    ag_trusted_free(t);
    ag_trusted_free(c);
}

TEST(trusted_lists)
{
    static char *const list[] = {"10.0.0.0/8", "127.0.0.1", "fd00::/8", NULL};
    ag_trusted_t *t = NULL;
    ASSERT_EQ(ag_trusted_new(list, &t, NULL), 0);
    ASSERT(ag_trusted_contains(t, AG_STR_LIT("::ffff:10.1.1.1")));
    ASSERT(ag_trusted_contains(t, AG_STR_LIT(" fd12::1 ")));
    ASSERT(!ag_trusted_contains(t, AG_STR_LIT("11.0.0.1")));
    ASSERT(!ag_trusted_contains(NULL, AG_STR_LIT("10.0.0.1")));
    ag_trusted_free(t);
    static char *const bad[] = {"10.0.0.0/33", NULL};
    const char *which = NULL;
    ASSERT_EQ(ag_trusted_new(bad, &t, &which), AG_EINVALID);
    ASSERT_STREQ(which, "10.0.0.0/33");
    static char *const bad2[] = {"::1", "[::1]x", NULL};
    ASSERT_EQ(ag_trusted_new(bad2, &t, &which), AG_EINVALID);
    ASSERT_STREQ(which, "[::1]x");
}

TEST(identity_is_ipv6_prefix_and_ipv4_address)
{
    char out[AG_ADDR_TEXT];
    ag_addr_identity("2001:db8:1:2:aaaa:bbbb:cccc:dddd", 64, out);
    ASSERT_STREQ(out, "2001:db8:1:2::/64");
    /* Two addresses of one /64 are one client; the next /64 is another. */
    char other[AG_ADDR_TEXT];
    ag_addr_identity("2001:db8:1:2::1", 64, other);
    ASSERT_STREQ(out, other);
    ag_addr_identity("2001:db8:1:3::1", 64, other);
    ASSERT_STREQ(other, "2001:db8:1:3::/64");
    ag_addr_identity("2001:db8:1:2:aaaa::1", 56, out);
    ASSERT_STREQ(out, "2001:db8:1::/56");
    ag_addr_identity("2001:db8:1:2:aaaa::1", 61, out);
    ASSERT_STREQ(out, "2001:db8:1::/61");
    ag_addr_identity("2001:db8::7", 128, out);
    ASSERT_STREQ(out, "2001:db8::7");
    /* IPv4 per address, IPv4-mapped IPv6 as IPv4. */
    ag_addr_identity("198.51.100.7", 64, out);
    ASSERT_STREQ(out, "198.51.100.7");
    ag_addr_identity("::ffff:198.51.100.7", 64, out);
    ASSERT_STREQ(out, "198.51.100.7");
    /* Not an address (a handler's own name): as it is. */
    ag_addr_identity("invalid", 64, out);
    ASSERT_STREQ(out, "invalid");
}

/* The hand-made IPv4 formatter writes what inet_ntop writes, for every
 * octet value in every place. */
TEST(format_matches_inet_ntop)
{
    char ours[AG_ADDR_TEXT], libc[AG_ADDR_TEXT];
    for (unsigned v = 0; v < 256; v++) {
        for (int at = 0; at < 4; at++) {
            unsigned char a[4] = {10, 200, 3, 45};
            a[at] = (unsigned char)v;
            ag_addr_format(AF_INET, a, ours);
            inet_ntop(AF_INET, a, libc, sizeof(libc));
            ASSERT_STREQ(ours, libc);
        }
    }
    unsigned char v6[16] = {0x20, 0x01, 0x0d, 0xb8, [15] = 1};
    ag_addr_format(AF_INET6, v6, ours);
    ASSERT_STREQ(ours, "2001:db8::1");
}

AG_TESTS(AG_TEST_ENTRY(client_address_table) AG_TEST_ENTRY(trusted_lists)
             AG_TEST_ENTRY(identity_is_ipv6_prefix_and_ipv4_address)
                 AG_TEST_ENTRY(format_matches_inet_ntop))
