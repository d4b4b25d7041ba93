/* SPDX-License-Identifier: MIT
 *
 * test_sigv4.c: our SigV4 signer over the table tests/unit/data/sigv4/cases.json,
 * whose expected Authorization values botocore produced (and the ctest
 * sigv4_reference re-checks with botocore in every run); plus the target we
 * send, and the refusals.
 */
#include "util/platform.h"

#include <jansson.h>

#include "harness.h"
#include "store/sigv4.h"
#include "util/buf.h"
#include "util/errors.h"

#ifndef AG_SIGV4_CASES
#error "AG_SIGV4_CASES: the path of cases.json"
#endif

static size_t pairs(json_t *arr, ag_sigv4_kv_t *out, size_t cap)
{
    size_t n = 0;
    for (size_t i = 0; i < json_array_size(arr) && n < cap; i++) {
        json_t *p = json_array_get(arr, i);
        out[n].name = json_string_value(json_array_get(p, 0));
        out[n].value = json_string_value(json_array_get(p, 1));
        n++;
    }
    return n;
}

TEST(table_matches_botocore)
{
    json_error_t err;
    json_t *root = json_load_file(AG_SIGV4_CASES, 0, &err);
    ASSERT_MSG_(root != NULL, "%s: %s", AG_SIGV4_CASES, err.text);
    json_t *cases = json_object_get(root, "cases");
    ASSERT(json_array_size(cases) >= 10);
    int bad = 0;
    for (size_t i = 0; i < json_array_size(cases); i++) {
        json_t *c = json_array_get(cases, i);
        ag_sigv4_kv_t q[16], h[16];
        const char *body = json_string_value(json_object_get(c, "body"));
        char hash[65];
        ag_sigv4_sha256_hex(body, strlen(body), hash);
        ag_sigv4_request_t r = {
            .method = json_string_value(json_object_get(c, "method")),
            .host = json_string_value(json_object_get(c, "host")),
            .path = json_string_value(json_object_get(c, "path")),
            .query = q,
            .nquery = pairs(json_object_get(c, "query"), q, 16),
            .headers = h,
            .nheaders = pairs(json_object_get(c, "headers"), h, 16),
            .payload_sha256 =
                json_is_true(json_object_get(c, "unsigned")) ? AG_SIGV4_UNSIGNED_PAYLOAD : hash,
            .amz_date = json_string_value(json_object_get(c, "date")),
            .region = json_string_value(json_object_get(c, "region")),
            .access_key = json_string_value(json_object_get(c, "access_key")),
            .secret_key = json_string_value(json_object_get(c, "secret_key")),
        };
        ag_buf_t target, auth, canon;
        ag_buf_init(&target, 0);
        ag_buf_init(&auth, 0);
        ag_buf_init(&canon, 0);
        int rc = ag_sigv4_sign(&r, &target, &auth, &canon);
        const char *want = json_string_value(json_object_get(c, "expect"));
        if (rc != 0 || want == NULL || strcmp(ag_buf_cstr(&auth), want) != 0) {
            fprintf(stderr, "  %s: rc %d\n  got  %s\n  want %s\n  canonical request:\n%s\n",
                    json_string_value(json_object_get(c, "name")), rc, ag_buf_cstr(&auth),
                    want ? want : "(none)", ag_buf_cstr(&canon));
            bad++;
        }
        /* the secret never shows (minioadmin is both the key id and the secret) */
        ASSERT(strcmp(r.secret_key, r.access_key) == 0 ||
               strstr(ag_buf_cstr(&auth), r.secret_key) == NULL);
        ag_buf_fini(&target);
        ag_buf_fini(&auth);
        ag_buf_fini(&canon);
    }
    json_decref(root);
    ASSERT_EQ(bad, 0);
}

TEST(target_is_what_was_signed)
{
    ag_sigv4_kv_t q[] = {{"prefix", "a b/ü"}, {"list-type", "2"}, {"continuation-token", "x+/="}};
    ag_sigv4_request_t r = {.method = "GET",
                            .host = "127.0.0.1:9",
                            .path = "/bkt/a b+c",
                            .query = q,
                            .nquery = 3,
                            .payload_sha256 = AG_SIGV4_UNSIGNED_PAYLOAD,
                            .amz_date = "20261202T000000Z",
                            .region = "us-east-1",
                            .access_key = "AK",
                            .secret_key = "SK"};
    ag_buf_t target, auth, canon;
    ag_buf_init(&target, 0);
    ag_buf_init(&auth, 0);
    ag_buf_init(&canon, 0);
    ASSERT_EQ(ag_sigv4_sign(&r, &target, &auth, &canon), 0);
    ASSERT_STREQ(ag_buf_cstr(&target),
                 "/bkt/a%20b%2Bc?continuation-token=x%2B%2F%3D&list-type=2&prefix=a%20b%2F%C3%BC");
    ASSERT(strncmp(ag_buf_cstr(&canon), "GET\n/bkt/a%20b%2Bc\ncontinuation-token=", 38) == 0);
    ag_buf_fini(&target);
    ag_buf_fini(&auth);
    ag_buf_fini(&canon);
}

TEST(refuses_bad_requests)
{
    ag_sigv4_kv_t crlf[] = {{"x-amz-meta-a", "x\r\nInjected: 1"}};
    ag_sigv4_kv_t ours[] = {{"Host", "evil"}};
    ag_sigv4_request_t base = {.method = "GET",
                               .host = "h",
                               .path = "/b",
                               .payload_sha256 = AG_SIGV4_UNSIGNED_PAYLOAD,
                               .amz_date = "20261202T000000Z",
                               .region = "us-east-1",
                               .access_key = "AK",
                               .secret_key = "SK"};
    ag_buf_t t, a;
    ag_buf_init(&t, 0);
    ag_buf_init(&a, 0);
    ag_sigv4_request_t r = base;
    r.amz_date = "2026-12-02T00:00:00Z";
    ASSERT_EQ(ag_sigv4_sign(&r, &t, &a, NULL), AG_EINVALID);
    r = base;
    r.path = "b";
    ASSERT_EQ(ag_sigv4_sign(&r, &t, &a, NULL), AG_EINVALID);
    r = base;
    r.headers = crlf;
    r.nheaders = 1;
    ASSERT_EQ(ag_sigv4_sign(&r, &t, &a, NULL), AG_EINVALID);
    r = base;
    r.headers = ours;
    r.nheaders = 1;
    ASSERT_EQ(ag_sigv4_sign(&r, &t, &a, NULL), AG_EINVALID);
    r = base;
    r.region = "";
    ASSERT_EQ(ag_sigv4_sign(&r, &t, &a, NULL), AG_EINVALID);
    ASSERT_EQ(ag_sigv4_sign(&base, &t, &a, NULL), 0);
    ag_buf_fini(&t);
    ag_buf_fini(&a);
}

TEST(amz_date_and_hash)
{
    char d[17], h[65];
    ag_sigv4_amz_date(1369353600, d); /* 2013-05-24T00:00:00Z */
    ASSERT_STREQ(d, "20130524T000000Z");
    ag_sigv4_sha256_hex("", 0, h);
    ASSERT_STREQ(h, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
}

AG_TESTS(AG_TEST_ENTRY(table_matches_botocore) AG_TEST_ENTRY(target_is_what_was_signed)
             AG_TEST_ENTRY(refuses_bad_requests) AG_TEST_ENTRY(amz_date_and_hash))
