/* SPDX-License-Identifier: MIT
 *
 * cron_next.c: a filter for tests/integration/m_cron_oracle.test.js. Reads
 * lines "EXPR<TAB>START_EPOCH_S" and answers each with one line: the next five
 * run times ("ok T1 T2 T3 T4 T5", epoch seconds; -1 ends the list early when
 * there is no further run), or "error OFFSET MESSAGE".
 */
#include "util/platform.h"

#include <inttypes.h>
#include <string.h>

#include "cron/cron.h"

int main(void)
{
    char line[4096];
    while (fgets(line, sizeof(line), stdin) != NULL) {
        size_t len = strcspn(line, "\r\n");
        line[len] = '\0';
        if (len == 0)
            continue;
        char *tab = strchr(line, '\t');
        if (tab == NULL) {
            fprintf(stderr, "cron_next: want EXPR<TAB>START_EPOCH_S, got \"%s\"\n", line);
            return 2;
        }
        char *endp;
        int64_t t = (int64_t)strtoll(tab + 1, &endp, 10);
        if (*endp != '\0' || endp == tab + 1) {
            fprintf(stderr, "cron_next: bad start time \"%s\"\n", tab + 1);
            return 2;
        }
        ag_cron_t c;
        ag_cron_error_t err;
        if (ag_cron_parse(line, (size_t)(tab - line), &c, &err) < 0) {
            printf("error %u %s\n", err.offset, err.message);
            continue;
        }
        fputs("ok", stdout);
        for (int i = 0; i < 5; i++) {
            t = ag_cron_next(&c, t);
            printf(" %" PRId64, t);
            if (t == -1)
                break;
        }
        putchar('\n');
    }
    return 0;
}
