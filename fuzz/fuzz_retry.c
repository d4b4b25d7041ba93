/* SPDX-License-Identifier: MIT
 *
 * fuzz_retry.c: the readers of the upstream's retry and rate-limit headers
 * (retry-after, retry-after-ms, x-should-retry, anthropic-ratelimit-*, RFC
 * 3339 dates) on arbitrary header blocks: no crash, and every wait or date
 * they return is within its bounds.
 */
#include "util/platform.h"

#include <stdint.h>
#include <string.h>

#include "upstream/rates.h"
#include "upstream/retry.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static ag_rates_t *rates;
    if (!rates && ag_rates_new(&rates) != 0)
        return 0;
    ag_str_t text = ag_str((const char *)data, size);
    const int64_t now = INT64_C(1796184600000);
    int64_t ms;
    if (ag_parse_rfc3339_ms(text, &ms) == 0 && size < 16)
        abort(); /* no RFC 3339 date is that short */
    int64_t wait = ag_retry_after_ms(text, now);
    if (wait < -1)
        abort();
    static const ag_retry_policy_t p = {2, 500, 8000, 60000, 180000};
    int statuses[] = {0, 200, 429, 500, 529, 400};
    for (size_t i = 0; i < AG_ARRAY_LEN(statuses); i++) {
        ag_upstream_response_t resp = {.status = statuses[i], .headers = text, .body = text};
        ag_retry_decision_t d = ag_retry_decide(&p, &resp, 0, 100000, size, now);
        if (d.retry && (d.delay_ms < 0 || d.delay_ms >= 100000 || d.reason == AG_RETRY_NONE))
            abort();
        ag_rate_model_t *m = ag_rates_model(rates, "fuzz");
        ag_rates_observe(m, statuses[i], text, now, false);
        bool took;
        int64_t until;
        if (!ag_rates_admit(m, now, &took, &until) && until != 0 && until <= now)
            abort();
    }
    return 0;
}
