/* SPDX-License-Identifier: MIT
 *
 * rates.h: the upstream's rate-limit view, per model, shared by every loop:
 * what Anthropic's anthropic-ratelimit-* headers (and its 429s) said, and so
 * whether a new attempt may go now or must wait for the window's reset.
 *
 * The common case costs one relaxed load per attempt and no write: only a
 * model whose window is spent (or was, and is refilling) keeps counts.
 */
#ifndef AG_UPSTREAM_RATES_H
#define AG_UPSTREAM_RATES_H

#include <stdbool.h>
#include <stdint.h>

#include "util/str.h"

#define AG_RATES_MAX_MODELS 64

typedef struct ag_rates ag_rates_t;
typedef struct ag_rate_model ag_rate_model_t;

int ag_rates_new(ag_rates_t **out);
void ag_rates_free(ag_rates_t *rates);

/** The model's entry, created on first use. NULL when the table is full
 *  (those models are never held). Thread-safe. */
ag_rate_model_t *ag_rates_model(ag_rates_t *rates, const char *model);

/** May an attempt go at `now_ms` (wall clock)? true: go; *took_permit says
 *  whether it counts against a refilling window (pass it to observe or
 *  abandon). false: wait; *until_ms is the reset (0: until an answer says). */
bool ag_rates_admit(ag_rate_model_t *m, int64_t now_ms, bool *took_permit, int64_t *until_ms);

/** An attempt's answer: its status and headers update the view.
 *  @return the reset the model now waits for when this answer spent its
 *  window (newly, or until later than before), else 0. */
int64_t ag_rates_observe(ag_rate_model_t *m, int status, ag_str_t headers, int64_t now_ms,
                         bool took_permit);

/** What another instance saw: the model's window is spent until until_ms. It
 *  is held here too (the later reset wins), then one probe goes, whose answer
 *  says more. Past resets are ignored. */
void ag_rates_spend(ag_rate_model_t *m, int64_t until_ms, int64_t now_ms);

/** An attempt that got no answer (cancelled, failed to connect). */
void ag_rates_abandon(ag_rate_model_t *m, bool took_permit);

/** Calls waiting for this model on every loop; the queue keeps it. */
long ag_rates_queued(const ag_rate_model_t *m);
long ag_rates_queue_add(ag_rate_model_t *m, long delta);

/** The reset a spent model waits for (wall ms), 0 when none. */
int64_t ag_rates_until(const ag_rate_model_t *m);

const char *ag_rates_model_name(const ag_rate_model_t *m);

#endif
