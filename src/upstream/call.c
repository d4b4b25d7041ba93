/* SPDX-License-Identifier: MIT
 *
 * call.c: the retrying upstream call and the loop's queue of calls that wait
 * (for a backoff, or for the model's rate window). One timer per loop serves
 * every wait, so a call owns no handle and ends synchronously on cancel.
 */
#include "util/platform.h"

#include <errno.h>
#include <string.h>
#include <sys/random.h>

#include "upstream/call.h"
#include "util/errors.h"
#include "util/json.h"
#include "util/jtok.h"
#include "util/log.h"

/* While calls wait on a window that has reset but has no permit left, the
 * queue looks again this often for answers (on any loop) that freed some. */
#define QUEUE_POLL_MS 20

typedef struct call_list {
    ag_call_t *head, *tail;
} call_list_t;

typedef enum call_state { CALL_SLEEPING, CALL_HELD, CALL_RUNNING, CALL_ENDED } call_state_t;

struct ag_call {
    ag_call_t *prev, *next;
    call_list_t *list; /* the list it is on: sleeping, held, or a pass's own */
    ag_call_opts_t o;
    ag_callq_t *q;
    call_state_t state;
    ag_upstream_xfer_t *xfer;
    ag_rate_model_t *rate;
    bool took_permit;
    bool started;          /* on_data ran: bytes reached the client */
    int64_t deadline_ms;   /* monotonic */
    int64_t wake_ms;       /* sleeping: monotonic */
    int64_t held_until_ms; /* held: queue_timeout, monotonic */
    int64_t held_since_us;
    unsigned retries_this_model;
    size_t next_fallback;
    char *alt_body; /* the body for a fallback model */
    size_t alt_len;
    ag_call_summary_t sum;
};

struct ag_callq {
    uv_timer_t timer;
    uv_loop_t *loop;
    call_list_t sleeping; /* by wake_ms */
    call_list_t held;     /* FIFO */
    ag_callq_depth_cb on_depth;
    void *ctx;
    uint64_t rng;
    bool in_pass;
};

static int64_t mono_ms(void)
{
    return ag_mono_us() / 1000;
}

static int64_t wall_ms(void)
{
    return ag_now_us() / 1000;
}

static void list_unlink(ag_call_t *c)
{
    call_list_t *l = c->list;
    if (!l)
        return;
    if (c->prev)
        c->prev->next = c->next;
    else
        l->head = c->next;
    if (c->next)
        c->next->prev = c->prev;
    else
        l->tail = c->prev;
    c->prev = c->next = NULL;
    c->list = NULL;
}

static void list_append(call_list_t *l, ag_call_t *c)
{
    c->list = l;
    c->next = NULL;
    c->prev = l->tail;
    if (l->tail)
        l->tail->next = c;
    else
        l->head = c;
    l->tail = c;
}

static void list_insert_by_wake(call_list_t *l, ag_call_t *c)
{
    ag_call_t *at = l->tail;
    while (at && at->wake_ms > c->wake_ms)
        at = at->prev;
    c->list = l;
    c->prev = at;
    c->next = at ? at->next : l->head;
    if (c->next)
        c->next->prev = c;
    else
        l->tail = c;
    if (at)
        at->next = c;
    else
        l->head = c;
}

static void callq_arm(ag_callq_t *q);
static void call_attempt(ag_call_t *c);

static void call_free(ag_call_t *c)
{
    free(c->alt_body);
    free(c);
}

static void leave_queue(ag_call_t *c)
{
    list_unlink(c);
    if (c->state != CALL_HELD)
        return;
    int64_t waited = ag_mono_us() - c->held_since_us;
    c->sum.queued_us += waited;
    ag_rates_queue_add(c->rate, -1);
    if (c->q->on_depth)
        c->q->on_depth(c->q->ctx, c->sum.model, -1, waited);
}

/* The caller's answer; the call is gone once it returns. */
static void call_end(ag_call_t *c, const ag_upstream_response_t *resp)
{
    c->state = CALL_ENDED;
    c->o.done(c->o.ctx, resp, &c->sum);
    call_free(c);
}

static void call_refuse(ag_call_t *c, ag_call_refusal_t why, int64_t until_wall_ms)
{
    c->sum.refusal = why;
    int64_t wait = until_wall_ms > 0 ? until_wall_ms - wall_ms() : 0;
    c->sum.retry_after_s = wait > 0 ? (unsigned)((wait + 999) / 1000) : 1;
    ag_upstream_response_t resp = {
        .error = why == AG_CALL_QUEUE_FULL ? AG_EUPSTREAM_QFULL : AG_EUPSTREAM_QWAIT,
        .error_text = why == AG_CALL_QUEUE_FULL
                          ? "the upstream queue is full"
                          : "the upstream's rate window did not reset in time",
    };
    call_end(c, &resp);
}

static int call_on_data(void *ctx, int status, ag_str_t headers, const char *data, size_t len)
{
    ag_call_t *c = ctx;
    c->started = true;
    return c->o.request.on_data(c->o.ctx, status, headers, data, len);
}

static void call_sleep(ag_call_t *c, int64_t delay_ms)
{
    c->state = CALL_SLEEPING;
    c->wake_ms = mono_ms() + delay_ms;
    list_insert_by_wake(&c->q->sleeping, c);
    callq_arm(c->q);
}

/* Switches to the next fallback model; false when there is none or no body. */
static bool call_fall_back(ag_call_t *c)
{
    if (c->next_fallback >= c->o.nfallbacks)
        return false;
    const char *model = c->o.fallbacks[c->next_fallback++];
    size_t len;
    char *body = ag_call_body_with_model(c->o.request.body, c->o.request.body_len, model, &len);
    if (!body)
        return false;
    free(c->alt_body);
    c->alt_body = body;
    c->alt_len = len;
    if (!c->sum.fallback_from)
        c->sum.fallback_from = c->o.model;
    c->sum.model = model;
    c->rate = ag_rates_model(c->o.rates, model);
    c->retries_this_model = 0;
    return true;
}

static void attempt_done(void *ctx, const ag_upstream_response_t *resp)
{
    ag_call_t *c = ctx;
    c->xfer = NULL;
    int64_t spent =
        ag_rates_observe(c->rate, resp->status, resp->headers, wall_ms(), c->took_permit);
    c->took_permit = false;
    if (spent && c->o.on_spent)
        c->o.on_spent(c->o.spent_ctx, ag_rates_model_name(c->rate), spent);
    if (c->started) {
        call_end(c, resp); /* a stream that reached the client is never made again */
        return;
    }
    int64_t remaining = c->deadline_ms - mono_ms();
    ag_retry_decision_t d = ag_retry_decide(&c->o.policy, resp, c->retries_this_model, remaining,
                                            ag_retry_random(&c->q->rng), wall_ms());
    if (d.retry) {
        c->retries_this_model++;
        c->sum.retries++;
        c->sum.retries_by_reason[d.reason]++;
        call_sleep(c, d.delay_ms);
        return;
    }
    bool fallback_worthy = d.reason == AG_RETRY_OVERLOADED || d.reason == AG_RETRY_SERVER_ERROR;
    if (fallback_worthy && remaining > 0 && call_fall_back(c)) {
        call_attempt(c);
        return;
    }
    c->sum.why_final = d.why_not;
    call_end(c, resp);
}

static void call_launch(ag_call_t *c)
{
    c->state = CALL_RUNNING;
    ag_upstream_request_t u = c->o.request;
    if (c->alt_body) {
        u.body = c->alt_body;
        u.body_len = c->alt_len;
    }
    int64_t remaining = c->deadline_ms - mono_ms();
    if (remaining < 1)
        remaining = 1;
    if (!u.on_data && (u.timeout_ms == 0 || (int64_t)u.timeout_ms > remaining))
        u.timeout_ms = (unsigned)remaining;
    if (u.on_data)
        u.on_data = call_on_data;
    c->sum.attempts++;
    int rc = ag_upstream_start(c->o.upstream, &u, attempt_done, c, &c->xfer);
    if (rc < 0) {
        ag_rates_abandon(c->rate, c->took_permit);
        c->took_permit = false;
        ag_upstream_response_t resp = {.error = rc, .error_text = ag_strerror(rc)};
        c->sum.why_final = "the attempt could not start";
        call_end(c, &resp);
    }
}

/* Makes the next attempt now, unless the model's window holds it. */
static void call_attempt(ag_call_t *c)
{
    int64_t until;
    if (ag_rates_admit(c->rate, wall_ms(), &c->took_permit, &until) || !c->q) {
        call_launch(c);
        return;
    }
    int64_t wait = until ? until - wall_ms() : 0;
    if (wait > (int64_t)c->o.queue_timeout_ms || wait > c->deadline_ms - mono_ms()) {
        call_refuse(c, AG_CALL_QUEUE_TIMEOUT, until);
        return;
    }
    if (ag_rates_queued(c->rate) >= (long)c->o.queue_max) {
        call_refuse(c, AG_CALL_QUEUE_FULL, until);
        return;
    }
    c->state = CALL_HELD;
    c->held_since_us = ag_mono_us();
    int64_t limit = c->deadline_ms - mono_ms();
    c->held_until_ms =
        mono_ms() + ((int64_t)c->o.queue_timeout_ms < limit ? c->o.queue_timeout_ms : limit);
    ag_rates_queue_add(c->rate, +1);
    list_append(&c->q->held, c);
    if (c->q->on_depth)
        c->q->on_depth(c->q->ctx, c->sum.model, +1, 0);
    callq_arm(c->q);
}

int ag_call_start(const ag_call_opts_t *opts, ag_call_t **out)
{
    ag_call_t *c = calloc(1, sizeof(*c));
    if (!c)
        return -ENOMEM;
    c->o = *opts;
    c->q = opts->queue;
    c->sum.model = opts->model;
    c->rate = opts->queue ? ag_rates_model(opts->rates, opts->model) : NULL;
    c->deadline_ms = mono_ms() + (opts->policy.deadline_ms ? opts->policy.deadline_ms : 180000);
    if (!c->q) {
        /* Without a queue nothing can wait: no retries, no held calls. */
        c->o.policy.retries = 0;
    }
    *out = c;
    call_attempt(c);
    return 0;
}

void ag_call_cancel(ag_call_t *c)
{
    if (!c)
        return;
    switch (c->state) {
    case CALL_RUNNING:
        ag_upstream_cancel(c->xfer);
        c->xfer = NULL;
        ag_rates_abandon(c->rate, c->took_permit);
        break;
    case CALL_SLEEPING:
    case CALL_HELD:
        leave_queue(c);
        break;
    case CALL_ENDED:
        return;
    }
    call_free(c);
}

const ag_call_summary_t *ag_call_summary(const ag_call_t *c)
{
    return &c->sum;
}

void ag_call_resume(ag_call_t *c)
{
    if (c && c->xfer)
        ag_upstream_resume(c->xfer);
}

/* ---- the loop's queue --------------------------------------------------------- */

static void callq_pass(ag_callq_t *q)
{
    q->in_pass = true;
    int64_t now = mono_ms();
    while (q->sleeping.head && q->sleeping.head->wake_ms <= now) {
        ag_call_t *c = q->sleeping.head;
        list_unlink(c);
        call_attempt(c); /* may hold it again, or end it */
    }
    /* The held calls, oldest first. A pass takes the list, so calls that the
     * callbacks below add or cancel never break the walk. */
    call_list_t pass = q->held;
    q->held = (call_list_t){NULL, NULL};
    for (ag_call_t *c = pass.head; c; c = c->next)
        c->list = &pass;
    while (pass.head) {
        ag_call_t *c = pass.head;
        now = mono_ms();
        int64_t until;
        bool go = false;
        if (now < c->held_until_ms)
            go = ag_rates_admit(c->rate, wall_ms(), &c->took_permit, &until);
        if (!go && now < c->held_until_ms) {
            list_unlink(c);
            list_append(&q->held, c); /* older than anything added meanwhile: see below */
            continue;
        }
        c->state = CALL_HELD;
        leave_queue(c);
        if (go)
            call_launch(c);
        else
            call_refuse(c, AG_CALL_QUEUE_TIMEOUT, ag_rates_until(c->rate));
    }
    q->in_pass = false;
    callq_arm(q);
}

static void on_timer(uv_timer_t *t)
{
    callq_pass(t->data);
}

static void callq_arm(ag_callq_t *q)
{
    if (q->in_pass || uv_is_closing((uv_handle_t *)&q->timer))
        return;
    int64_t now = mono_ms(), due = INT64_MAX;
    if (q->sleeping.head)
        due = q->sleeping.head->wake_ms;
    int64_t wnow = wall_ms();
    for (ag_call_t *c = q->held.head; c; c = c->next) {
        int64_t until = ag_rates_until(c->rate);
        int64_t at = until > wnow ? now + (until - wnow) : now + QUEUE_POLL_MS;
        if (c->held_until_ms < at)
            at = c->held_until_ms;
        if (at < due)
            due = at;
    }
    if (due == INT64_MAX) {
        uv_timer_stop(&q->timer);
        return;
    }
    uv_timer_start(&q->timer, on_timer, (uint64_t)(due > now ? due - now : 0), 0);
}

int ag_callq_new(uv_loop_t *loop, ag_callq_depth_cb on_depth, void *ctx, ag_callq_t **out)
{
    ag_callq_t *q = calloc(1, sizeof(*q));
    if (!q)
        return -ENOMEM;
    int rc = uv_timer_init(loop, &q->timer);
    if (rc < 0) {
        free(q);
        return rc;
    }
    q->timer.data = q;
    q->loop = loop;
    q->on_depth = on_depth;
    q->ctx = ctx;
    if (getrandom(&q->rng, sizeof(q->rng), 0) != (ssize_t)sizeof(q->rng) || q->rng == 0)
        q->rng = (uint64_t)ag_mono_us() | 1;
    *out = q;
    return 0;
}

static void on_callq_closed(uv_handle_t *h)
{
    free(h->data);
}

void ag_callq_close(ag_callq_t *q)
{
    if (!q)
        return;
    ag_upstream_response_t resp = {.error = AG_EUPSTREAM, .error_text = "the server is stopping"};
    call_list_t *lists[] = {&q->sleeping, &q->held};
    for (size_t i = 0; i < AG_ARRAY_LEN(lists); i++) {
        while (lists[i]->head) {
            ag_call_t *c = lists[i]->head;
            leave_queue(c);
            c->sum.why_final = "the server is stopping";
            call_end(c, &resp);
        }
    }
    uv_close((uv_handle_t *)&q->timer, on_callq_closed);
}

char *ag_call_body_with_model(const char *body, size_t len, const char *model, size_t *out_len)
{
    size_t cap = len + 1 < 1u << 20 ? len + 1 : 1u << 20;
    ag_jtok_t *toks = malloc(cap * sizeof(*toks));
    if (!toks)
        return NULL;
    char *out = NULL;
    int n = ag_jtok_parse(body, len, toks, cap, NULL);
    int m = n > 0 && toks[0].type == AG_JT_OBJECT ? ag_jtok_object_get(body, toks, 0, "model") : -1;
    if (m >= 0) {
        /* Splice: every other byte stays as the client sent it. */
        ag_buf_t b;
        ag_buf_init(&b, len + strlen(model) + 8);
        const ag_jtok_t *t = &toks[m];
        size_t from = t->type == AG_JT_STRING ? t->start - 1 : t->start;
        size_t to = t->type == AG_JT_STRING ? t->end + 1 : t->end;
        int rc = ag_buf_append(&b, body, from);
        if (rc == 0)
            rc = ag_json_append_string(&b, ag_str_c(model));
        if (rc == 0)
            rc = ag_buf_append(&b, body + to, len - to);
        if (rc == 0) {
            out = b.data;
            *out_len = b.len;
        } else {
            ag_buf_fini(&b);
        }
    }
    free(toks);
    return out;
}
