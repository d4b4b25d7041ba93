/* SPDX-License-Identifier: MIT
 *
 * fuzz_json.c: the gateway's JSON handling of outside input: an upstream
 * answer turned into the seed's response, cache entries read back, and a
 * request's forwarding headers. Uses the gateway's internal API (gateway/answer.h and cache.h).
 */
#include "util/platform.h"

#include <string.h>

#include "gateway/answer.h"
#include "gateway/cache.h"
#include "gateway/client_ip.h"
#include "gateway/steps.h"
#include "util/log.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* An upstream 200 with an arbitrary body. */
    ag_upstream_response_t resp = {.status = 200, .body = ag_str((const char *)data, size)};
    ag_buf_t value;
    ag_buf_init(&value, 0);
    ag_log_min_level = AG_LOG_ERROR + 1; /* keep the fuzzer's output quiet */
    shared_result_t *r = ag__gw_result_from_upstream("fuzz", &resp, &value);
    AG_ASSERT(r != NULL);
    AG_ASSERT(r->status == 200 || r->status == 502);
    /* Whatever was produced for the cache must read back. */
    if (value.len) {
        ag_kv_value_t v = {.data = value.data, .len = value.len};
        cache_entry_t e;
        AG_ASSERT(ag__gw_parse_entry(&v, &e));
        ag_buf_t text;
        ag_buf_init(&text, 0);
        long long in, out;
        char stop[64];
        AG_ASSERT(ag__gw_entry_text(&e, &text, &in, &out, stop));
        ag_buf_fini(&text);
    }
    ag__gw_result_release(r);
    ag_buf_fini(&value);

    /* The same bytes as a stored cache entry. */
    char *copy = malloc(size + 1);
    memcpy(copy, data, size);
    copy[size] = '\0';
    ag_kv_value_t v = {.data = copy, .len = size};
    cache_entry_t e;
    if (ag__gw_parse_entry(&v, &e)) {
        ag_buf_t text;
        ag_buf_init(&text, 0);
        long long in, out;
        char stop[64];
        ag__gw_entry_text(&e, &text, &in, &out, stop);
        ag_buf_fini(&text);
    }
    free(copy);

    /* As X-Forwarded-For / CF-Connecting-IP from a trusted proxy. */
    static char *const trusted[] = {"127.0.0.0/8", "::1", NULL};
    ag_trusted_t *t = NULL;
    AG_ASSERT(ag_trusted_new(trusted, &t, NULL) == 0);
    char client[64];
    ag_str_t line = ag_str((const char *)data, size);
    ag_forwarded_t f = {.xff = &line, .nxff = 1, .fwd = &line, .nfwd = 1};
    ag_client_resolve(t, NULL, "127.0.0.1", &f, client);
    AG_ASSERT(memchr(client, '\0', sizeof(client)) != NULL);
    f = (ag_forwarded_t){.cf_connecting_ip = line};
    ag_client_resolve(t, t, "127.0.0.1", &f, client);
    ag_trusted_free(t);
    return 0;
}
