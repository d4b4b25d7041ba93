/* SPDX-License-Identifier: MIT
 *
 * addr.c: parsing client addresses and the identity (IPv6 prefix) they are
 * counted by.
 */
#include "util/platform.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>

#include "http/addr.h"

bool ag_addr_parse(const char *s, size_t len, int *family, unsigned char addr[16])
{
    char buf[AG_ADDR_TEXT];
    if (len == 0 || len >= sizeof(buf))
        return false;
    memcpy(buf, s, len);
    buf[len] = '\0';
    char *p = buf;
    if (*p == '[') {
        char *end = strchr(p, ']');
        /* "[v6]" or "[v6]:port", nothing else after the bracket */
        if (!end || (end[1] && end[1] != ':'))
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

void ag_addr_copy(char out[AG_ADDR_TEXT], const char *s)
{
    size_t n = strnlen(s, AG_ADDR_TEXT - 1);
    memcpy(out, s, n);
    out[n] = '\0';
}

void ag_addr_format(int family, const unsigned char *addr, char out[AG_ADDR_TEXT])
{
    if (family != AF_INET) {
        if (!inet_ntop(family, addr, out, AG_ADDR_TEXT))
            out[0] = '\0';
        return;
    }
    char *p = out;
    for (int i = 0; i < 4; i++) {
        unsigned v = addr[i];
        if (v >= 100)
            *p++ = (char)('0' + v / 100);
        if (v >= 10)
            *p++ = (char)('0' + v / 10 % 10);
        *p++ = (char)('0' + v % 10);
        *p++ = i < 3 ? '.' : '\0';
    }
}

void ag_addr_identity(const char *ip, unsigned prefix6, char out[AG_ADDR_TEXT])
{
    int family;
    unsigned char a[16];
    /* Text without a colon is IPv4 or no address: inet_pton takes only the
     * canonical dotted quad, which formats back to itself, and anything else
     * is kept as it is, so the text is its own identity. */
    if (!strchr(ip, ':') || !ag_addr_parse(ip, strlen(ip), &family, a)) {
        ag_addr_copy(out, ip);
        return;
    }
    if (family == AF_INET || prefix6 >= 128) {
        ag_addr_format(family, a, out);
        return;
    }
    for (unsigned bit = prefix6; bit < 128; bit++)
        a[bit / 8] &= (unsigned char)~(0x80u >> (bit % 8));
    char net[INET6_ADDRSTRLEN];
    inet_ntop(AF_INET6, a, net, sizeof(net));
    snprintf(out, AG_ADDR_TEXT, "%s/%u", net, prefix6);
}
