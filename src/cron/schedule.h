/* SPDX-License-Identifier: MIT
 *
 * schedule.h: when scheduled tasks are due. A pure state machine over cron
 * expressions and an injected wall clock, so tests drive it through clock
 * jumps without waiting: it answers "what runs now" and "when to look again";
 * the caller owns the timer and the runs.
 */
#ifndef AG_CRON_SCHEDULE_H
#define AG_CRON_SCHEDULE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cron/cron.h"

typedef struct ag_schedule_entry {
    ag_cron_t cron;
    int64_t next_s;   /* the next scheduled time, epoch s (UTC); -1: never */
    bool running;     /* a run of this entry has not finished */
    uint64_t runs;    /* runs started */
    uint64_t skipped; /* scheduled times passed over: still running, or the clock jumped */
} ag_schedule_entry_t;

typedef struct ag_schedule {
    ag_schedule_entry_t *entries;
    size_t n;
    int64_t last_now_s; /* the clock at the previous look, to see it jump */
} ag_schedule_t;

/** Sets every entry's next time after now_s (missed runs are not caught up). */
void ag_schedule_start(ag_schedule_t *s, int64_t now_s);

/** The earliest next time of any entry, or -1. */
int64_t ag_schedule_next(const ag_schedule_t *s);

/** Entries due at now_s: each is marked running and its scheduled time (the
 *  epoch s it was due) stored in due_at; its next time moves past now_s. An
 *  entry still running is not started again: that time is skipped and counted.
 *  When the clock jumped forward over several scheduled times, one run starts
 *  and the others are counted as skipped (not caught up, as on Workers). When
 *  it jumped back, nothing reruns: next times stay where they were.
 *  @return how many indexes were written to due (at most cap). */
size_t ag_schedule_due(ag_schedule_t *s, int64_t now_s, size_t *due, int64_t *due_at, size_t cap);

/** A run of entry i finished. */
void ag_schedule_done(ag_schedule_t *s, size_t i);

/** How long to sleep before looking again, ms: until the next time, but at most
 *  a minute, so a wall clock that moved is noticed. */
int64_t ag_schedule_sleep_ms(const ag_schedule_t *s, int64_t now_ms);

#endif
