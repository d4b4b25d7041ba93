/* SPDX-License-Identifier: MIT
 *
 * test_retry.c: the retry policy (which answers are worth another attempt,
 * and the wait), its header readers, the upstream's rate view, and the
 * body rewrite of a fallback.
 */
#include "util/platform.h"

#include <string.h>

#include "harness.h"
#include "upstream/call.h"
#include "upstream/rates.h"
#include "upstream/retry.h"
#include "util/errors.h"

static const ag_retry_policy_t policy = {
    .retries = 2, .base_ms = 500, .max_ms = 8000, .max_wait_ms = 60000, .deadline_ms = 180000};

static ag_upstream_response_t answer(int status, const char *headers, const char *body)
{
    return (ag_upstream_response_t){
        .status = status, .headers = ag_str_c(headers), .body = ag_str_c(body ? body : "")};
}

TEST(rfc3339)
{
    int64_t ms;
    ASSERT_EQ(ag_parse_rfc3339_ms(ag_str_c("1970-01-01T00:00:00Z"), &ms), 0);
    ASSERT_EQ(ms, 0);
    ASSERT_EQ(ag_parse_rfc3339_ms(ag_str_c("2026-12-02T04:10:00Z"), &ms), 0);
    ASSERT_EQ(ms, INT64_C(1796184600000));
    ASSERT_EQ(ag_parse_rfc3339_ms(ag_str_c("2026-12-02T04:10:00.25Z"), &ms), 0);
    ASSERT_EQ(ms, INT64_C(1796184600250));
    ASSERT_EQ(ag_parse_rfc3339_ms(ag_str_c("2026-12-02T05:10:00.123456+01:00"), &ms), 0);
    ASSERT_EQ(ms, INT64_C(1796184600123));
    ASSERT_EQ(ag_parse_rfc3339_ms(ag_str_c("2024-02-29T00:00:00Z"), &ms), 0);
    ASSERT_EQ(ms, INT64_C(1709164800000));
    const char *bad[] = {"",
                         "2026-12-02",
                         "2026-12-02T04:10:00",
                         "2026-13-02T04:10:00Z",
                         "2026-12-02T04:10:00.Z",
                         "2026-12-02T04:10:00Zjunk",
                         "x026-12-02T04:10:00Z"};
    for (size_t i = 0; i < AG_ARRAY_LEN(bad); i++)
        ASSERT(ag_parse_rfc3339_ms(ag_str_c(bad[i]), &ms) == -1);
}

TEST(retry_after_headers)
{
    ASSERT_EQ(ag_retry_after_ms(ag_str_c("retry-after: 2\r\n"), 0), 2000);
    ASSERT_EQ(ag_retry_after_ms(ag_str_c("Retry-After: 1.5\r\n"), 0), 1500);
    /* retry-after-ms wins over retry-after, as in the SDKs */
    ASSERT_EQ(ag_retry_after_ms(ag_str_c("retry-after: 9\r\nretry-after-ms: 250\r\n"), 0), 250);
    int64_t now = INT64_C(784111777000); /* Sun, 06 Nov 1994 08:49:37 GMT */
    ASSERT_EQ(ag_retry_after_ms(ag_str_c("retry-after: Sun, 06 Nov 1994 08:49:40 GMT\r\n"), now),
              3000);
    ASSERT_EQ(ag_retry_after_ms(ag_str_c("retry-after: Sun, 06 Nov 1994 08:49:30 GMT\r\n"), now),
              0);
    ASSERT_EQ(ag_retry_after_ms(ag_str_c("retry-after: soon\r\n"), 0), -1);
    ASSERT_EQ(ag_retry_after_ms(ag_str_c("retry-after: -1\r\n"), 0), -1);
    ASSERT_EQ(ag_retry_after_ms(ag_str_c("content-type: x\r\n"), 0), -1);
}

TEST(backoff_is_full_jitter_within_the_ceiling)
{
    for (unsigned r = 0; r < 8; r++) {
        int64_t ceiling = 500LL << r;
        if (ceiling > 8000)
            ceiling = 8000;
        int64_t lo = INT64_MAX, hi = 0;
        uint64_t state = 42 + r;
        for (int i = 0; i < 2000; i++) {
            int64_t d = ag_retry_backoff_ms(&policy, r, ag_retry_random(&state));
            ASSERT(d >= 0 && d <= ceiling);
            lo = d < lo ? d : lo;
            hi = d > hi ? d : hi;
        }
        ASSERT(lo < ceiling / 10);     /* full jitter: down to 0 */
        ASSERT(hi > ceiling * 9 / 10); /* and up to the ceiling */
    }
}

TEST(decisions)
{
    ag_upstream_response_t ok = answer(200, "", NULL);
    ASSERT_EQ(ag_retry_decide(&policy, &ok, 0, 1000000, 1, 0).reason, AG_RETRY_NONE);
    int retried[] = {429, 500, 502, 503, 504, 529};
    ag_retry_reason_t reasons[] = {AG_RETRY_RATE_LIMITED, AG_RETRY_SERVER_ERROR,
                                   AG_RETRY_SERVER_ERROR, AG_RETRY_SERVER_ERROR,
                                   AG_RETRY_SERVER_ERROR, AG_RETRY_OVERLOADED};
    for (size_t i = 0; i < AG_ARRAY_LEN(retried); i++) {
        ag_upstream_response_t a = answer(retried[i], "retry-after: 1\r\n", NULL);
        ag_retry_decision_t d = ag_retry_decide(&policy, &a, 0, 1000000, 1, 0);
        ASSERT(d.retry);
        ASSERT_EQ(d.reason, reasons[i]);
        ASSERT_EQ(d.delay_ms, 1000);
        d = ag_retry_decide(&policy, &a, 2, 1000000, 1, 0);
        ASSERT(!d.retry); /* retries spent */
        ASSERT(d.why_not != NULL);
    }
    int final[] = {400, 401, 403, 404, 409, 413};
    for (size_t i = 0; i < AG_ARRAY_LEN(final); i++) {
        ag_upstream_response_t a = answer(final[i], "", NULL);
        ag_retry_decision_t d = ag_retry_decide(&policy, &a, 0, 1000000, 1, 0);
        ASSERT(!d.retry);
        ASSERT_EQ(d.reason, AG_RETRY_NONE);
    }
    ag_upstream_response_t reset = {.error = AG_EUPSTREAM, .error_text = "reset"};
    ag_retry_decision_t d = ag_retry_decide(&policy, &reset, 0, 1000000, 7, 0);
    ASSERT(d.retry);
    ASSERT_EQ(d.reason, AG_RETRY_CONNECTION);
    ag_upstream_response_t late = {.error = AG_EUPSTREAM_TIMEOUT};
    ASSERT_EQ(ag_retry_decide(&policy, &late, 0, 1000000, 7, 0).reason, AG_RETRY_TIMEOUT);

    /* The upstream's word first. */
    ag_upstream_response_t no = answer(529, "x-should-retry: false\r\n", NULL);
    ASSERT(!ag_retry_decide(&policy, &no, 0, 1000000, 1, 0).retry);
    ag_upstream_response_t yes = answer(409, "x-should-retry: true\r\n", NULL);
    d = ag_retry_decide(&policy, &yes, 0, 1000000, 1, 0);
    ASSERT(d.retry);
    ASSERT_EQ(d.reason, AG_RETRY_UPSTREAM_ASKED);
    /* A wait past the cap, or past the deadline, ends the retries. */
    ag_upstream_response_t far = answer(529, "retry-after: 61\r\n", NULL);
    ASSERT(!ag_retry_decide(&policy, &far, 0, 1000000, 1, 0).retry);
    ag_upstream_response_t near = answer(529, "retry-after: 5\r\n", NULL);
    ASSERT(!ag_retry_decide(&policy, &near, 0, 4000, 1, 0).retry);
    ASSERT(ag_retry_decide(&policy, &near, 0, 6000, 1, 0).retry);
    /* A 429 without retry-after, or saying it is a cap, is not retried. */
    ag_upstream_response_t cap = answer(429, "", NULL);
    ASSERT(!ag_retry_decide(&policy, &cap, 0, 1000000, 1, 0).retry);
    ag_upstream_response_t cap2 = answer(429, "retry-after: 1\r\n",
                                         "{\"error\":{\"message\":\"You have reached your "
                                         "specified API usage limits\"}}");
    ASSERT(!ag_retry_decide(&policy, &cap2, 0, 1000000, 1, 0).retry);
}

static char hdr[1024];

static ag_str_t rate_headers(int64_t remaining, int64_t limit, int64_t reset_ms)
{
    char when[40];
    time_t s = (time_t)(reset_ms / 1000);
    struct tm tm;
    gmtime_r(&s, &tm);
    strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(hdr, sizeof(hdr),
             "anthropic-ratelimit-requests-limit: %lld\r\n"
             "anthropic-ratelimit-requests-remaining: %lld\r\n"
             "anthropic-ratelimit-requests-reset: %s.%03dZ\r\n"
             "anthropic-ratelimit-tokens-remaining: 5000\r\n",
             (long long)limit, (long long)remaining, when, (int)(reset_ms % 1000));
    return ag_str_c(hdr);
}

TEST(rates_open_spent_refilling_open)
{
    ag_rates_t *rates;
    ASSERT_EQ(ag_rates_new(&rates), 0);
    ag_rate_model_t *m = ag_rates_model(rates, "claude-haiku-4-5");
    ASSERT(m != NULL);
    ASSERT(ag_rates_model(rates, "claude-haiku-4-5") == m);
    int64_t now = INT64_C(1796184600000), until;
    bool took;
    /* Open: answers with room change nothing, and everything goes. */
    ASSERT_EQ(ag_rates_observe(m, 200, rate_headers(3, 5, now + 1000), now, false), 0);
    ASSERT(ag_rates_admit(m, now, &took, &until));
    ASSERT(!took);
    /* Spent: nothing goes until the reset (which is returned, once). */
    ASSERT_EQ(ag_rates_observe(m, 200, rate_headers(0, 5, now + 1000), now, false), now + 1000);
    ASSERT_EQ(ag_rates_observe(m, 200, rate_headers(0, 5, now + 1000), now, false), 0);
    ASSERT(!ag_rates_admit(m, now + 999, &took, &until));
    ASSERT_EQ(until, now + 1000);
    /* Refilling: exactly the window's 5, then an answer's count. */
    for (int i = 0; i < 5; i++) {
        ASSERT(ag_rates_admit(m, now + 1000, &took, &until));
        ASSERT(took);
    }
    ASSERT(!ag_rates_admit(m, now + 1000, &took, &until));
    ASSERT_EQ(until, 0); /* wait for an answer, not a time */
    ag_rates_queue_add(m, +1);
    /* The upstream says 4 left while 4 of ours are still out: nothing more yet. */
    ag_rates_observe(m, 200, rate_headers(4, 5, now + 2000), now + 1010, true);
    ASSERT(!ag_rates_admit(m, now + 1010, &took, &until));
    /* A cancelled attempt gives its permit back. */
    ASSERT(ag_rates_admit(m, now + 1010, &took, &until) == false);
    ag_rates_abandon(m, true);
    ASSERT(ag_rates_admit(m, now + 1010, &took, &until));
    ASSERT(took);
    ag_rates_queue_add(m, -1);
    /* Answers in: with nobody waiting and nothing out, open again. */
    for (int i = 0; i < 4; i++)
        ag_rates_observe(m, 200, rate_headers(1, 5, now + 2000), now + 1020, true);
    ASSERT(ag_rates_admit(m, now + 1020, &took, &until));
    ASSERT(!took);
    /* A 429 with retry-after holds; one without (a spend cap) does not. */
    ag_rates_observe(m, 429, ag_str_c("retry-after: 2\r\n"), now + 3000, false);
    ASSERT(!ag_rates_admit(m, now + 4999, &took, &until));
    ASSERT_EQ(until, now + 5000);
    ag_rate_model_t *m2 = ag_rates_model(rates, "other");
    ag_rates_observe(m2, 429, ag_str_c(""), now, false);
    ASSERT(ag_rates_admit(m2, now, &took, &until));
    /* Another instance's reset: held until then (a past one is ignored, an
     * earlier one does not shorten it), then one probe. */
    ag_rates_spend(m2, now - 1, now);
    ASSERT(ag_rates_admit(m2, now, &took, &until));
    ag_rates_spend(m2, now + 700, now);
    ag_rates_spend(m2, now + 300, now);
    ASSERT(!ag_rates_admit(m2, now + 699, &took, &until));
    ASSERT_EQ(until, now + 700);
    ASSERT(ag_rates_admit(m2, now + 700, &took, &until));
    ASSERT(took);
    ASSERT(!ag_rates_admit(m2, now + 700, &took, &until));
    ag_rates_free(rates);
}

TEST(rates_table_is_bounded)
{
    ag_rates_t *rates;
    ASSERT_EQ(ag_rates_new(&rates), 0);
    char name[32];
    for (int i = 0; i < AG_RATES_MAX_MODELS; i++) {
        snprintf(name, sizeof(name), "m%d", i);
        ASSERT(ag_rates_model(rates, name) != NULL);
    }
    ASSERT(ag_rates_model(rates, "one too many") == NULL);
    bool took;
    int64_t until;
    ASSERT(ag_rates_admit(NULL, 0, &took, &until)); /* never held */
    ag_rates_free(rates);
}

TEST(fallback_body_keeps_every_other_byte)
{
    const char *body =
        "{\"max_tokens\": 5, \"model\" : \"claude-sonnet-4-6\",\"x\":[1,{\"model\":1}]}";
    size_t n;
    char *out = ag_call_body_with_model(body, strlen(body), "claude-haiku-4-5", &n);
    ASSERT(out != NULL);
    ASSERT_MEMEQ(out, n,
                 "{\"max_tokens\": 5, \"model\" : \"claude-haiku-4-5\",\"x\":[1,{\"model\":1}]}");
    free(out);
    ASSERT(ag_call_body_with_model("[1]", 3, "m", &n) == NULL);
    ASSERT(ag_call_body_with_model("{\"a\":1}", 7, "m", &n) == NULL);
    ASSERT(ag_call_body_with_model("{\"model\":", 9, "m", &n) == NULL);
}

AG_TESTS(AG_TEST_ENTRY(rfc3339) AG_TEST_ENTRY(retry_after_headers)
             AG_TEST_ENTRY(backoff_is_full_jitter_within_the_ceiling) AG_TEST_ENTRY(decisions)
                 AG_TEST_ENTRY(rates_open_spent_refilling_open)
                     AG_TEST_ENTRY(rates_table_is_bounded)
                         AG_TEST_ENTRY(fallback_body_keeps_every_other_byte))
