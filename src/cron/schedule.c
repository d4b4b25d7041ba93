/* SPDX-License-Identifier: MIT
 *
 * schedule.c: due entries, skips and clock jumps.
 */
#include "util/platform.h"

#include "cron/schedule.h"

void ag_schedule_start(ag_schedule_t *s, int64_t now_s)
{
    for (size_t i = 0; i < s->n; i++)
        s->entries[i].next_s = ag_cron_next(&s->entries[i].cron, now_s);
    s->last_now_s = now_s;
}

int64_t ag_schedule_next(const ag_schedule_t *s)
{
    int64_t best = -1;
    for (size_t i = 0; i < s->n; i++) {
        int64_t t = s->entries[i].next_s;
        if (t >= 0 && (best < 0 || t < best))
            best = t;
    }
    return best;
}

size_t ag_schedule_due(ag_schedule_t *s, int64_t now_s, size_t *due, int64_t *due_at, size_t cap)
{
    size_t n = 0;
    s->last_now_s = now_s;
    for (size_t i = 0; i < s->n; i++) {
        ag_schedule_entry_t *e = &s->entries[i];
        if (e->next_s < 0 || e->next_s > now_s)
            continue;
        int64_t at = e->next_s;
        /* Times between this one and now were missed (a jump, a stall): count
         * them, bounded, and run once. */
        int64_t t = ag_cron_next(&e->cron, at);
        for (unsigned k = 0; t >= 0 && t <= now_s && k < 100000; k++) {
            e->skipped++;
            at = t;
            t = ag_cron_next(&e->cron, t);
        }
        e->next_s = t;
        if (e->running || n == cap) {
            e->skipped++;
            continue;
        }
        e->running = true;
        e->runs++;
        due[n] = i;
        due_at[n] = at;
        n++;
    }
    return n;
}

void ag_schedule_done(ag_schedule_t *s, size_t i)
{
    if (i < s->n)
        s->entries[i].running = false;
}

int64_t ag_schedule_sleep_ms(const ag_schedule_t *s, int64_t now_ms)
{
    int64_t next = ag_schedule_next(s);
    int64_t ms = next < 0 ? 60000 : next * 1000 - now_ms;
    if (ms < 0)
        ms = 0;
    return ms > 60000 ? 60000 : ms;
}
