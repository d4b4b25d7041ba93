/* SPDX-License-Identifier: MIT
 *
 * fuzz_cron.c: libFuzzer target for the cron parser and next-run search
 * (src/cron/cron.c), which read [[aigate.tasks]] cron = "..." from config.
 * A rejection names a message and an offset within the input; for an accepted
 * expression, from a few start times: next(t) > t lands on a minute that
 * matches, and when it is under two days away no minute in between matches.
 */
#include "util/platform.h"

#include <stdint.h>
#include <string.h>

#include "cron/cron.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_from(const ag_cron_t *c, int64_t t)
{
    int64_t next = ag_cron_next(c, t);
    if (next == -1)
        return;
    AG_ASSERT(next > t && next % 60 == 0 && next <= AG_CRON_MAX_S);
    AG_ASSERT(ag_cron_matches(c, next));
    if (next - t < 2 * 86400)
        for (int64_t m = (t / 60 + 1) * 60; m < next; m += 60)
            AG_ASSERT(!ag_cron_matches(c, m));
    AG_ASSERT(ag_cron_next(c, next - 1) == next);
    int64_t after = ag_cron_next(c, next);
    AG_ASSERT(after == -1 || (after > next && ag_cron_matches(c, after)));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    ag_cron_t c;
    ag_cron_error_t err = {NULL, 0};
    if (ag_cron_parse((const char *)data, size, &c, &err) < 0) {
        AG_ASSERT(err.message != NULL && err.message[0] != '\0');
        AG_ASSERT(err.offset <= size);
        return 0;
    }
    /* Start times: a leap day, a year's last minute, and one the input picks
     * (FNV-1a of it, within 1970-2300). */
    uint64_t h = 14695981039346656037u;
    for (size_t i = 0; i < size; i++)
        h = (h ^ data[i]) * 1099511628211u;
    check_from(&c, 1709164800 + 59); /* 2024-02-29T00:00:59Z */
    check_from(&c, 1735689599);      /* 2024-12-31T23:59:59Z */
    check_from(&c, (int64_t)(h % 10413792000u));
    return 0;
}
