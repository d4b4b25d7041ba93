/* SPDX-License-Identifier: MIT
 *
 * sigv4.h: AWS Signature Version 4 for S3-compatible stores, signed here with
 * OpenSSL's HMAC-SHA256 (Debian 12's libcurl 7.88 signs S3 requests wrongly).
 * Pure functions; tests/unit/test_sigv4.c checks them against botocore.
 */
#ifndef AG_STORE_SIGV4_H
#define AG_STORE_SIGV4_H

#include <stdbool.h>
#include <stddef.h>
#include <time.h>

#include "util/buf.h"

#define AG_SIGV4_UNSIGNED_PAYLOAD "UNSIGNED-PAYLOAD"

/** A query parameter (decoded) or a header (as sent). */
typedef struct ag_sigv4_kv {
    const char *name;
    const char *value;
} ag_sigv4_kv_t;

/** One request to sign. Everything is borrowed for the call. */
typedef struct ag_sigv4_request {
    const char *method; /* "GET", "PUT", ... */
    const char *host;   /* the Host header as sent: "127.0.0.1:9000", "b.s3.amazonaws.com" */
    const char *path;   /* decoded, starting with '/': "/bucket/a key"; encoded here */
    const ag_sigv4_kv_t *query; /* decoded names and values, any order */
    size_t nquery;
    const ag_sigv4_kv_t *headers; /* other headers to sign (content-type, x-amz-meta-*) */
    size_t nheaders;
    const char *payload_sha256; /* lowercase hex SHA-256 of the body, or UNSIGNED-PAYLOAD */
    const char *amz_date;       /* "YYYYMMDDTHHMMSSZ" (ag_sigv4_amz_date()) */
    const char *region;
    const char *service; /* NULL: "s3" */
    const char *access_key;
    const char *secret_key;
} ag_sigv4_request_t;

/** Appends s[0..n) URI-encoded as SigV4 wants: every byte but A-Z a-z 0-9
 *  - _ . ~ (and '/' when keep_slash) as %XX, uppercase. @return 0 or -ENOMEM. */
int ag_sigv4_uri_encode(ag_buf_t *out, const char *s, size_t n, bool keep_slash);

/** The lowercase hex SHA-256 of data[0..len) into out[65]. */
void ag_sigv4_sha256_hex(const void *data, size_t len, char out[65]);

/** "YYYYMMDDTHHMMSSZ" of t (UTC) into out[17]. */
void ag_sigv4_amz_date(time_t t, char out[17]);

/** Signs r. target gets what goes after the host in the URL (the encoded path
 *  and the query, sorted: the same bytes that were signed); authorization the
 *  value of the Authorization header. The caller sends Host, x-amz-date and
 *  x-amz-content-sha256 (payload_sha256) with the values given here, and the
 *  headers of r->headers. canonical (may be NULL) gets the canonical request,
 *  for tests. @return 0; AG_EINVALID for a missing field or a bad date;
 *  -ENOMEM. Neither output ever holds the secret key. */
int ag_sigv4_sign(const ag_sigv4_request_t *r, ag_buf_t *target, ag_buf_t *authorization,
                  ag_buf_t *canonical);

#endif
