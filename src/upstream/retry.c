/* SPDX-License-Identifier: MIT
 *
 * retry.c: the retry policy: which answers are worth another attempt, and the
 * wait before it. The upstream's headers come first, as the official SDKs do.
 */
#include "util/platform.h"

#include <string.h>
#include <strings.h>
#include <time.h>

#include "upstream/retry.h"
#include "util/errors.h"

ag_retry_reason_t ag_retry_classify(const ag_upstream_response_t *resp)
{
    if (resp->error == AG_EUPSTREAM_TIMEOUT)
        return AG_RETRY_TIMEOUT;
    if (resp->error || resp->status == 0)
        return AG_RETRY_CONNECTION;
    switch (resp->status) {
    case 429:
        return AG_RETRY_RATE_LIMITED;
    case 529:
        return AG_RETRY_OVERLOADED;
    case 500:
    case 502:
    case 503:
    case 504:
        return AG_RETRY_SERVER_ERROR;
    default:
        return AG_RETRY_NONE;
    }
}

static bool parse_digits(const char **p, const char *end, int n, int *out)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (*p >= end || **p < '0' || **p > '9')
            return false;
        v = v * 10 + (*(*p)++ - '0');
    }
    *out = v;
    return true;
}

static bool expect(const char **p, const char *end, char c)
{
    if (*p >= end || (**p != c && !(c == 'T' && (**p == 't' || **p == ' '))))
        return false;
    (*p)++;
    return true;
}

/* Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's method). */
static int64_t days_from_civil(int y, int m, int d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

int ag_parse_rfc3339_ms(ag_str_t s, int64_t *out_ms)
{
    const char *p = s.ptr, *end = s.ptr + s.len;
    int y, mo, d, h, mi, sec;
    if (!s.ptr || !parse_digits(&p, end, 4, &y) || !expect(&p, end, '-') ||
        !parse_digits(&p, end, 2, &mo) || !expect(&p, end, '-') || !parse_digits(&p, end, 2, &d) ||
        !expect(&p, end, 'T') || !parse_digits(&p, end, 2, &h) || !expect(&p, end, ':') ||
        !parse_digits(&p, end, 2, &mi) || !expect(&p, end, ':') || !parse_digits(&p, end, 2, &sec))
        return -1;
    if (mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || sec > 60)
        return -1;
    int ms = 0;
    if (p < end && *p == '.') {
        p++;
        int digits = 0;
        while (p < end && *p >= '0' && *p <= '9') {
            if (digits < 3)
                ms = ms * 10 + (*p - '0');
            digits++;
            p++;
        }
        if (digits == 0)
            return -1;
        for (; digits < 3; digits++)
            ms *= 10;
    }
    int offset_min = 0;
    if (p < end && (*p == 'Z' || *p == 'z')) {
        p++;
    } else if (p < end && (*p == '+' || *p == '-')) {
        int sign = *p++ == '-' ? -1 : 1, oh, om;
        if (!parse_digits(&p, end, 2, &oh) || !expect(&p, end, ':') ||
            !parse_digits(&p, end, 2, &om) || oh > 23 || om > 59)
            return -1;
        offset_min = sign * (oh * 60 + om);
    } else {
        return -1;
    }
    if (p != end)
        return -1;
    int64_t t = days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + sec - offset_min * 60;
    *out_ms = t * 1000 + ms;
    return 0;
}

/* Seconds as the SDKs read them (a decimal number); -1 when it is not one. */
static int64_t seconds_ms(ag_str_t v)
{
    if (v.len == 0 || v.len > 24)
        return -1;
    int64_t whole = 0, frac = 0, scale = 1000;
    size_t i = 0;
    for (; i < v.len && v.ptr[i] >= '0' && v.ptr[i] <= '9'; i++)
        whole = whole * 10 + (v.ptr[i] - '0');
    if (i == 0)
        return -1;
    if (i < v.len && v.ptr[i] == '.') {
        for (i++; i < v.len && v.ptr[i] >= '0' && v.ptr[i] <= '9'; i++) {
            if (scale > 1) {
                scale /= 10;
                frac += (v.ptr[i] - '0') * scale;
            }
        }
    }
    return i == v.len && whole < INT64_MAX / 2000 ? whole * 1000 + frac : -1;
}

/* An IMF-fixdate ("Sun, 06 Nov 1994 08:49:37 GMT") to epoch ms; -1 otherwise. */
static int64_t http_date_ms(ag_str_t v)
{
    char buf[40];
    if (v.len == 0 || v.len >= sizeof(buf))
        return -1;
    memcpy(buf, v.ptr, v.len);
    buf[v.len] = '\0';
    struct tm tm;
    memset(&tm, 0, sizeof(tm));
    const char *end = strptime(buf, "%a, %d %b %Y %H:%M:%S GMT", &tm);
    if (!end || *end)
        return -1;
    return (int64_t)timegm(&tm) * 1000;
}

int64_t ag_retry_after_ms(ag_str_t headers, int64_t now_ms)
{
    ag_str_t ms = ag_upstream_header(headers, "retry-after-ms");
    if (ms.len) {
        int64_t v = seconds_ms(ms); /* a number of ms: read as seconds, then scaled back */
        if (v >= 0)
            return v / 1000;
    }
    ag_str_t ra = ag_upstream_header(headers, "retry-after");
    if (!ra.len)
        return -1;
    int64_t v = seconds_ms(ra);
    if (v >= 0)
        return v;
    int64_t at = http_date_ms(ra);
    if (at < 0)
        return -1;
    return at > now_ms ? at - now_ms : 0;
}

int64_t ag_retry_backoff_ms(const ag_retry_policy_t *p, unsigned retries_done, uint64_t random)
{
    uint64_t cap = p->base_ms;
    for (unsigned i = 0; i < retries_done && cap < p->max_ms; i++)
        cap *= 2;
    if (cap > p->max_ms)
        cap = p->max_ms;
    return (int64_t)(random % (cap + 1));
}

/* A 429 that waiting will not cure: a spend or credit limit. Anthropic sends
 * retry-after with every rate-limit 429; a 429 without one is a cap. */
static bool spend_cap(const ag_upstream_response_t *resp, bool has_wait)
{
    if (!has_wait)
        return true;
    static const char *const words[] = {"spend limit", "usage limit", "credit balance", "billing"};
    for (size_t i = 0; i < AG_ARRAY_LEN(words); i++) {
        size_t n = strlen(words[i]);
        for (size_t j = 0; j + n <= resp->body.len; j++) {
            if (strncasecmp(resp->body.ptr + j, words[i], n) == 0)
                return true;
        }
    }
    return false;
}

ag_retry_decision_t ag_retry_decide(const ag_retry_policy_t *p, const ag_upstream_response_t *resp,
                                    unsigned retries_done, int64_t remaining_ms, uint64_t random,
                                    int64_t now_ms)
{
    ag_retry_decision_t d = {.reason = ag_retry_classify(resp)};
    if (resp->status >= 200 && resp->status < 300 && !resp->error)
        return d;
    ag_str_t should =
        resp->error ? AG_STR_NULL : ag_upstream_header(resp->headers, "x-should-retry");
    bool asked = should.len == 4 && strncasecmp(should.ptr, "true", 4) == 0;
    bool refused = should.len == 5 && strncasecmp(should.ptr, "false", 5) == 0;
    if (d.reason == AG_RETRY_NONE && asked)
        d.reason = AG_RETRY_UPSTREAM_ASKED;
    if (d.reason == AG_RETRY_NONE)
        return d;
    int64_t wait = resp->error ? -1 : ag_retry_after_ms(resp->headers, now_ms);
    if (refused)
        d.why_not = "the upstream said x-should-retry: false";
    else if (d.reason == AG_RETRY_RATE_LIMITED && !asked && spend_cap(resp, wait >= 0))
        d.why_not = "a spend or usage cap (no retry-after)";
    else if (retries_done >= p->retries)
        d.why_not = "retries spent";
    else if (wait > (int64_t)p->max_wait_ms)
        d.why_not = "retry-after is past upstream_retry_max_wait";
    if (d.why_not)
        return d;
    d.delay_ms = wait >= 0 ? wait : ag_retry_backoff_ms(p, retries_done, random);
    if (d.delay_ms >= remaining_ms) {
        d.why_not = "the retry would pass upstream_deadline";
        return d;
    }
    d.retry = true;
    return d;
}

uint64_t ag_retry_random(uint64_t *state)
{
    uint64_t x = *state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    return x * 0x2545F4914F6CDD1DULL;
}
