/* SPDX-License-Identifier: MIT
 *
 * tail.h: live tail. Subscribers register a filter and get matching requests
 * as wrangler-tail events (JSON), through a bounded queue each: a subscriber
 * that reads too slowly loses events (counted, and told with the next one),
 * never slows a request. With no subscriber, publishing costs one load.
 */
#ifndef AG_OBS_TAIL_H
#define AG_OBS_TAIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "obs/record.h"
#include "util/buf.h"

#define AG_TAIL_MAX_LIST 8
/* Queued events that wake the subscriber; fewer wait for its timer (AG_TAIL_TICK_MS). */
#define AG_TAIL_WAKE_BATCH 64
#define AG_TAIL_TICK_MS 100

enum { AG_TAIL_OK = 1, AG_TAIL_EXCEPTION = 2, AG_TAIL_CANCELED = 4 };

/* What a subscriber wants; empty fields match everything. Filters run in the
 * publishing worker, so a filtered-out event costs the subscriber nothing. */
typedef struct ag_tail_filter {
    unsigned outcomes; /* AG_TAIL_* bits; 0: all */
    char methods[AG_TAIL_MAX_LIST][16];
    size_t nmethods;
    char search[256]; /* a substring of the URL, method, client, route or model */
    char ip[64];      /* the client, exactly */
    char header_names[AG_TAIL_MAX_LIST][64];
    char header_values[AG_TAIL_MAX_LIST][256];
    size_t nheaders;      /* every NAME:VALUE must be present */
    double sampling_rate; /* 0 < r <= 1; 0 means 1 */
    char route[256];
    char model[128];
    char key[64];
} ag_tail_filter_t;

typedef struct ag_tail ag_tail_t;
typedef struct ag_tail_sub ag_tail_sub_t;

/** script_name: the config's `name` (wrangler's scriptName). */
int ag_tail_new(const char *script_name, ag_tail_t **out);
void ag_tail_free(ag_tail_t *t);

/** A value that must never appear in an event (a key, a token): a header
 *  holding it shows "REDACTED". Any thread (a reload adds a new upstream
 *  key); a value given twice is kept once. */
int ag_tail_add_secret(ag_tail_t *t, const char *value);

/** Subscribes. notify(ctx) runs on a publishing thread when AG_TAIL_WAKE_BATCH
 *  events are waiting; the subscriber drains the queue on its own thread then,
 *  and every AG_TAIL_TICK_MS in any case. */
int ag_tail_subscribe(ag_tail_t *t, const ag_tail_filter_t *f, size_t max_queue,
                      void (*notify)(void *ctx), void *ctx, ag_tail_sub_t **out);
void ag_tail_unsubscribe(ag_tail_t *t, ag_tail_sub_t *s);

/** Moves the queued events into out as server-sent events ("data: {...}\n\n");
 *  the first after a loss carries "dropped":N in its aigate object.
 *  @return the number of events. */
size_t ag_tail_drain(ag_tail_sub_t *s, ag_buf_t *out);

/** One finished request, from any worker. */
void ag_tail_publish(ag_tail_t *t, const ag_request_record_t *rec);

/** Events dropped for slow subscribers since the start. */
uint64_t ag_tail_dropped(ag_tail_t *t);

/** The event for a record, as published (for tests and the CLI's fixtures). */
int ag_tail_event_json(ag_tail_t *t, const ag_request_record_t *rec, ag_buf_t *out);

/** Parses a URL query (?status=error&method=POST...) into a filter. `self` is
 *  what --ip self means (the subscriber's own address).
 *  @return 0, or -EINVAL with *bad set to the offending parameter. */
int ag_tail_filter_parse(ag_str_t query, const char *self, ag_tail_filter_t *f, const char **bad);

#endif
