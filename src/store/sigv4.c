/* SPDX-License-Identifier: MIT
 *
 * sigv4.c: AWS Signature Version 4 (sigv4.h): the canonical request, the
 * string to sign, the signing key chain and the Authorization header value.
 */
#include "util/platform.h"

#include "store/sigv4.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/sha.h>

#include "util/errors.h"
#include "util/hex.h"

#define MAX_HEADERS 64
#define MAX_QUERY 64

int ag_sigv4_uri_encode(ag_buf_t *out, const char *s, size_t n, bool keep_slash)
{
    static const char hex[] = "0123456789ABCDEF";
    int rc = ag_buf_reserve(out, n * 3);
    if (rc < 0)
        return rc;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        bool plain = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                     c == '-' || c == '_' || c == '.' || c == '~' || (keep_slash && c == '/');
        if (plain) {
            out->data[out->len++] = (char)c;
        } else {
            out->data[out->len++] = '%';
            out->data[out->len++] = hex[c >> 4];
            out->data[out->len++] = hex[c & 15];
        }
    }
    return 0;
}

void ag_sigv4_sha256_hex(const void *data, size_t len, char out[65])
{
    unsigned char md[SHA256_DIGEST_LENGTH];
    SHA256(data ? data : (const void *)"", len, md);
    ag_hex_encode(md, sizeof(md), out);
}

void ag_sigv4_amz_date(time_t t, char out[17])
{
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, 17, "%Y%m%dT%H%M%SZ", &tm);
}

static bool hmac(const void *key, size_t klen, const char *msg, size_t mlen,
                 unsigned char out[SHA256_DIGEST_LENGTH])
{
    unsigned int olen = 0;
    return HMAC(EVP_sha256(), key, (int)klen, (const unsigned char *)msg, mlen, out, &olen) !=
               NULL &&
           olen == SHA256_DIGEST_LENGTH;
}

static bool date_ok(const char *d)
{
    if (d == NULL || strlen(d) != 16 || d[8] != 'T' || d[15] != 'Z')
        return false;
    for (int i = 0; i < 15; i++) {
        if (i != 8 && (d[i] < '0' || d[i] > '9'))
            return false;
    }
    return true;
}

/* A value with no control bytes: it goes into a header line. */
static bool text_ok(const char *s)
{
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if ((c < 0x20 && c != '\t') || c == 0x7f)
            return false;
    }
    return true;
}

typedef struct hdr {
    char name[64];
    const char *value;
    size_t order;
} hdr_t;

static int hdr_cmp(const void *a, const void *b)
{
    const hdr_t *x = a, *y = b;
    int c = strcmp(x->name, y->name);
    if (c != 0)
        return c;
    return x->order < y->order ? -1 : x->order > y->order;
}

typedef struct qparam {
    size_t name_off, name_len, value_off, value_len; /* in the encoded buffer */
    const char *enc;
} qparam_t;

static int q_cmp(const void *a, const void *b)
{
    const qparam_t *x = a, *y = b;
    size_t n = x->name_len < y->name_len ? x->name_len : y->name_len;
    int c = memcmp(x->enc + x->name_off, y->enc + y->name_off, n);
    if (c != 0)
        return c;
    if (x->name_len != y->name_len)
        return x->name_len < y->name_len ? -1 : 1;
    n = x->value_len < y->value_len ? x->value_len : y->value_len;
    c = memcmp(x->enc + x->value_off, y->enc + y->value_off, n);
    if (c != 0)
        return c;
    return x->value_len < y->value_len ? -1 : x->value_len > y->value_len;
}

/* A header value as SigV4 canonicalises it: trimmed, runs of blanks as one space. */
static int append_value(ag_buf_t *b, const char *v)
{
    bool pending_space = false, any = false;
    for (; *v; v++) {
        if (*v == ' ' || *v == '\t') {
            pending_space = any;
            continue;
        }
        if (pending_space && ag_buf_append(b, " ", 1) < 0)
            return -ENOMEM;
        pending_space = false;
        any = true;
        if (ag_buf_append(b, v, 1) < 0)
            return -ENOMEM;
    }
    return 0;
}

int ag_sigv4_sign(const ag_sigv4_request_t *r, ag_buf_t *target, ag_buf_t *authorization,
                  ag_buf_t *canonical)
{
    const char *service = r->service ? r->service : "s3";
    if (r->method == NULL || r->host == NULL || r->path == NULL || r->path[0] != '/' ||
        r->payload_sha256 == NULL || !date_ok(r->amz_date) || r->region == NULL ||
        r->region[0] == '\0' || r->access_key == NULL || r->secret_key == NULL ||
        r->nheaders > MAX_HEADERS - 3 || r->nquery > MAX_QUERY || !text_ok(r->host) ||
        !text_ok(r->payload_sha256) || !text_ok(r->access_key) || !text_ok(r->region))
        return AG_EINVALID;

    int rc = -ENOMEM;
    ag_buf_t cr, enc, sts;
    ag_buf_init(&cr, 0);
    ag_buf_init(&enc, 0);
    ag_buf_init(&sts, 0);

    /* The target: the path once encoded (S3 does not normalise it) and the
     * query sorted by encoded name then value, which is what we sign. */
    size_t target_start = target->len;
    if (ag_sigv4_uri_encode(target, r->path, strlen(r->path), true) < 0)
        goto out;
    qparam_t qs[MAX_QUERY];
    for (size_t i = 0; i < r->nquery; i++) {
        const char *v = r->query[i].value ? r->query[i].value : "";
        qs[i].name_off = enc.len;
        if (ag_sigv4_uri_encode(&enc, r->query[i].name, strlen(r->query[i].name), false) < 0)
            goto out;
        qs[i].name_len = enc.len - qs[i].name_off;
        qs[i].value_off = enc.len;
        if (ag_sigv4_uri_encode(&enc, v, strlen(v), false) < 0)
            goto out;
        qs[i].value_len = enc.len - qs[i].value_off;
    }
    for (size_t i = 0; i < r->nquery; i++)
        qs[i].enc = enc.data;
    qsort(qs, r->nquery, sizeof(qs[0]), q_cmp);
    ag_buf_t q;
    ag_buf_init(&q, 0);
    for (size_t i = 0; i < r->nquery; i++) {
        if ((i > 0 && ag_buf_append(&q, "&", 1) < 0) ||
            ag_buf_append(&q, enc.data + qs[i].name_off, qs[i].name_len) < 0 ||
            ag_buf_append(&q, "=", 1) < 0 ||
            ag_buf_append(&q, enc.data + qs[i].value_off, qs[i].value_len) < 0) {
            ag_buf_fini(&q);
            goto out;
        }
    }

    /* Canonical request: method, path, query, headers, signed headers, payload. */
    if (ag_buf_printf(&cr, "%s\n", r->method) < 0 ||
        ag_buf_append(&cr, target->data + target_start, target->len - target_start) < 0 ||
        ag_buf_append(&cr, "\n", 1) < 0 || (q.len && ag_buf_append(&cr, q.data, q.len) < 0) ||
        ag_buf_append(&cr, "\n", 1) < 0 ||
        (q.len &&
         (ag_buf_append(target, "?", 1) < 0 || ag_buf_append(target, q.data, q.len) < 0))) {
        ag_buf_fini(&q);
        goto out;
    }
    ag_buf_fini(&q);

    hdr_t hs[MAX_HEADERS];
    size_t nh = 0;
    const ag_sigv4_kv_t fixed[] = {
        {"host", r->host},
        {"x-amz-content-sha256", r->payload_sha256},
        {"x-amz-date", r->amz_date},
    };
    for (size_t i = 0; i < 3 + r->nheaders; i++) {
        const ag_sigv4_kv_t *h = i < 3 ? &fixed[i] : &r->headers[i - 3];
        size_t n = h->name ? strlen(h->name) : 0;
        rc = AG_EINVALID;
        if (n == 0 || n >= sizeof(hs[0].name) || h->value == NULL || !text_ok(h->value))
            goto out;
        for (size_t j = 0; j < n; j++) {
            unsigned char c = (unsigned char)h->name[j];
            if (c <= 0x20 || c >= 0x7f || c == ':')
                goto out;
            hs[nh].name[j] = (char)(c >= 'A' && c <= 'Z' ? c + 32 : c);
        }
        hs[nh].name[n] = '\0';
        /* host, x-amz-date and x-amz-content-sha256 are ours to give */
        if (i >= 3 && (strcmp(hs[nh].name, "host") == 0 || strcmp(hs[nh].name, "x-amz-date") == 0 ||
                       strcmp(hs[nh].name, "x-amz-content-sha256") == 0 ||
                       strcmp(hs[nh].name, "authorization") == 0))
            goto out;
        hs[nh].value = h->value;
        hs[nh].order = i;
        nh++;
    }
    rc = -ENOMEM;
    qsort(hs, nh, sizeof(hs[0]), hdr_cmp);
    for (size_t i = 0; i < nh; i++) {
        bool cont = i > 0 && strcmp(hs[i].name, hs[i - 1].name) == 0;
        if (cont) {
            if (ag_buf_append(&cr, ",", 1) < 0)
                goto out;
        } else if ((i > 0 && ag_buf_append(&cr, "\n", 1) < 0) ||
                   ag_buf_printf(&cr, "%s:", hs[i].name) < 0) {
            goto out;
        }
        if (append_value(&cr, hs[i].value) < 0)
            goto out;
    }
    if (ag_buf_append(&cr, "\n\n", 2) < 0)
        goto out;
    size_t signed_start = cr.len;
    for (size_t i = 0; i < nh; i++) {
        if (i > 0 && strcmp(hs[i].name, hs[i - 1].name) == 0)
            continue;
        if (ag_buf_printf(&cr, "%s%s", cr.len > signed_start ? ";" : "", hs[i].name) < 0)
            goto out;
    }
    size_t signed_end = cr.len;
    if (ag_buf_printf(&cr, "\n%s", r->payload_sha256) < 0)
        goto out;

    /* String to sign and the key chain. */
    char cr_hash[65];
    ag_sigv4_sha256_hex(cr.data, cr.len, cr_hash);
    char day[9];
    memcpy(day, r->amz_date, 8);
    day[8] = '\0';
    if (ag_buf_printf(&sts, "AWS4-HMAC-SHA256\n%s\n%s/%s/%s/aws4_request\n%s", r->amz_date, day,
                      r->region, service, cr_hash) < 0)
        goto out;
    size_t sklen = strlen(r->secret_key);
    char *k0 = malloc(sklen + 5);
    if (k0 == NULL)
        goto out;
    memcpy(k0, "AWS4", 4);
    memcpy(k0 + 4, r->secret_key, sklen + 1);
    unsigned char k[SHA256_DIGEST_LENGTH], sig[SHA256_DIGEST_LENGTH];
    bool ok =
        hmac(k0, sklen + 4, day, 8, k) && hmac(k, sizeof(k), r->region, strlen(r->region), k) &&
        hmac(k, sizeof(k), service, strlen(service), k) &&
        hmac(k, sizeof(k), "aws4_request", 12, k) && hmac(k, sizeof(k), sts.data, sts.len, sig);
    OPENSSL_cleanse(k0, sklen + 4);
    OPENSSL_cleanse(k, sizeof(k));
    free(k0);
    if (!ok)
        goto out;
    char sighex[65];
    ag_hex_encode(sig, sizeof(sig), sighex);
    if (ag_buf_printf(authorization, "AWS4-HMAC-SHA256 Credential=%s/%s/%s/%s/aws4_request, ",
                      r->access_key, day, r->region, service) < 0 ||
        ag_buf_append(authorization, "SignedHeaders=", 14) < 0 ||
        ag_buf_append(authorization, cr.data + signed_start, signed_end - signed_start) < 0 ||
        ag_buf_printf(authorization, ", Signature=%s", sighex) < 0)
        goto out;
    if (canonical && ag_buf_append(canonical, cr.data, cr.len) < 0)
        goto out;
    rc = 0;
out:
    ag_buf_fini(&cr);
    ag_buf_fini(&enc);
    ag_buf_fini(&sts);
    return rc;
}
