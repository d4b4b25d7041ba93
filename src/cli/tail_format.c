/* SPDX-License-Identifier: MIT
 *
 * tail_format.c: the pure parts of `aigate tail`: the admin URL, the query
 * string of GET /tail, and the pretty and NDJSON forms of one event. Events are
 * parsed with jansson: one small object per line, on a path where nothing waits.
 */
#include "util/platform.h"

#include "cli/tail_format.h"
#include "util/http_reason.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "util/errors.h"

/* ---- a writer with a sticky error, so formatting reads straight through ---------------- */

typedef struct writer {
    ag_buf_t *b;
    int err;
} writer_t;

static void put(writer_t *w, const char *s, size_t len)
{
    if (w->err == 0)
        w->err = ag_buf_append(w->b, s, len);
}

static void puts_(writer_t *w, const char *s)
{
    put(w, s, strlen(s));
}

__attribute__((format(printf, 2, 3))) static void putf(writer_t *w, const char *fmt, ...)
{
    if (w->err)
        return;
    va_list ap;
    va_start(ap, fmt);
    w->err = ag_buf_vprintf(w->b, fmt, ap);
    va_end(ap);
}

/* Writes text that came in an event, with C0 controls, DEL and the UTF-8 form of the C1
 * controls (U+0080..U+009F) shown as '?': a terminal acts on those, and a client chooses
 * the URL and the model name. jansson hands out valid UTF-8, so no other check is needed. */
static void put_safe(writer_t *w, const char *s, size_t len)
{
    size_t run = 0; /* start of the bytes not yet written */
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)s[i];
        size_t bad = 0;
        if (ch < 0x20 || ch == 0x7f)
            bad = 1;
        else if (ch == 0xc2 && i + 1 < len && (unsigned char)s[i + 1] >= 0x80 &&
                 (unsigned char)s[i + 1] <= 0x9f)
            bad = 2;
        if (bad == 0)
            continue;
        put(w, s + run, i - run);
        put(w, "?", 1);
        i += bad - 1;
        run = i + 1;
    }
    put(w, s + run, len - run);
}

/* ---- query string ---------------------------------------------------------------------- */

static bool unreserved(unsigned char ch)
{
    return (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
           ch == '-' || ch == '.' || ch == '_' || ch == '~';
}

int ag_tail_url_encode(ag_buf_t *out, const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    writer_t w = {out, 0};
    size_t run = 0, i = 0;
    for (; s[i]; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (unreserved(ch))
            continue;
        char esc[3] = {'%', hex[ch >> 4], hex[ch & 15]};
        put(&w, s + run, i - run);
        put(&w, esc, 3);
        run = i + 1;
    }
    put(&w, s + run, i - run);
    return w.err;
}

static void param(writer_t *w, const char *name, const char *value)
{
    if (value == NULL)
        return;
    putf(w, "&%s=", name);
    if (w->err == 0)
        w->err = ag_tail_url_encode(w->b, value);
}

static void params(writer_t *w, const char *name, const char *const *values, size_t n)
{
    for (size_t i = 0; i < n; i++)
        param(w, name, values[i]);
}

int ag_tail_query(ag_buf_t *out, const ag_tail_filters_t *f)
{
    writer_t w = {out, 0};
    puts_(&w, "format=json");
    params(&w, "status", f->status, f->nstatus);
    params(&w, "method", f->method, f->nmethod);
    param(&w, "search", f->search);
    param(&w, "ip", f->ip);
    params(&w, "header", f->header, f->nheader);
    param(&w, "sampling_rate", f->sampling_rate);
    param(&w, "route", f->route);
    param(&w, "model", f->model);
    param(&w, "key", f->key);
    return w.err;
}

/* ---- the admin URL --------------------------------------------------------------------- */

static bool port_valid(const char *p, size_t n)
{
    if (n == 0 || n > 5)
        return false;
    unsigned v = 0;
    for (size_t i = 0; i < n; i++) {
        if (p[i] < '0' || p[i] > '9')
            return false;
        v = v * 10 + (unsigned)(p[i] - '0');
    }
    return v >= 1 && v <= 65535;
}

/* "host:port", "[v6]:port" or ":port" -> http://host:port, wildcards on loopback. */
static int url_of_listen(writer_t *w, const char *listen)
{
    const char *host, *port;
    size_t hlen;
    bool v6;
    if (listen[0] == '[') {
        const char *close = strchr(listen, ']');
        if (close == NULL || close[1] != ':')
            return AG_EINVALID;
        host = listen + 1;
        hlen = (size_t)(close - host);
        port = close + 2;
        v6 = true;
    } else {
        const char *colon = strrchr(listen, ':');
        if (colon == NULL)
            return AG_EINVALID;
        host = listen;
        hlen = (size_t)(colon - listen);
        port = colon + 1;
        v6 = memchr(host, ':', hlen) != NULL;
    }
    if (!port_valid(port, strlen(port)))
        return AG_EINVALID;
    puts_(w, "http://");
    if (hlen == 0 || (hlen == 7 && memcmp(host, "0.0.0.0", 7) == 0) ||
        (hlen == 1 && host[0] == '*'))
        puts_(w, "127.0.0.1");
    else if (v6 && hlen == 2 && memcmp(host, "::", 2) == 0)
        puts_(w, "[::1]");
    else if (v6)
        putf(w, "[%.*s]", (int)hlen, host);
    else
        put(w, host, hlen);
    putf(w, ":%s", port);
    return w->err;
}

int ag_tail_admin_url(ag_buf_t *out, const char *admin, const char *listen)
{
    writer_t w = {out, 0};
    const char *s = admin ? admin : listen;
    if (s == NULL || s[0] == '\0')
        return AG_EINVALID;
    bool http = strncmp(s, "http://", 7) == 0, https = strncmp(s, "https://", 8) == 0;
    if (!http && !https) {
        if (strstr(s, "://") != NULL)
            return AG_EINVALID;
        return url_of_listen(&w, s);
    }
    size_t n = strlen(s);
    while (n > 0 && s[n - 1] == '/')
        n--;
    if (n <= (size_t)(http ? 7 : 8))
        return AG_EINVALID;
    put(&w, s, n);
    return w.err;
}

/* ---- pretty ---------------------------------------------------------------------------- */

const char *ag_tail_reason(int status)
{
    return ag_http_reason(status);
}

static const char *str_at(json_t *obj, const char *key)
{
    json_t *v = json_object_get(obj, key);
    return json_is_string(v) ? json_string_value(v) : NULL;
}

static int64_t num_at(json_t *obj, const char *key, int64_t dflt)
{
    json_t *v = json_object_get(obj, key);
    if (!json_is_number(v))
        return dflt;
    double d = json_number_value(v);
    if (!(d > -9.0e15 && d < 9.0e15)) /* NaN, or beyond what a double holds exactly */
        return dflt;
    return (int64_t)llround(d);
}

static void put_str_safe(writer_t *w, const char *s)
{
    put_safe(w, s, strlen(s));
}

/* [2026-03-13T14:23:01Z]: the event's time in UTC, whole seconds. */
static void put_time(writer_t *w, json_t *ev)
{
    json_t *v = json_object_get(ev, "eventTimestamp");
    if (!json_is_number(v)) {
        puts_(w, "[?]");
        return;
    }
    double ms = json_number_value(v);
    struct tm tm;
    time_t secs = (time_t)floor(ms / 1000.0);
    if (!(ms > -1.0e15 && ms < 1.0e15) || gmtime_r(&secs, &tm) == NULL) {
        puts_(w, "[?]");
        return;
    }
    putf(w, "[%04d-%02d-%02dT%02d:%02d:%02dZ]", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
         tm.tm_hour, tm.tm_min, tm.tm_sec);
}

/* The path (and query) of a request URL: what the seed prints after the method. */
static void put_path(writer_t *w, const char *url)
{
    const char *p = url;
    const char *scheme = strstr(url, "://");
    if (scheme &&
        (scheme == url || strspn(url, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                      "0123456789+-.") != (size_t)(scheme - url)))
        scheme = NULL; /* "://" in a path or query, not after a scheme */
    if (scheme) {
        p = scheme + 3;
        p += strcspn(p, "/?#");
        if (*p != '/')
            puts_(w, "/");
        if (*p == '#')
            return;
    }
    if (*p == '\0' && !scheme) {
        puts_(w, "/");
        return;
    }
    put_str_safe(w, p);
}

static void put_request(writer_t *w, json_t *event, const char *outcome)
{
    json_t *req = json_object_get(event, "request");
    json_t *resp = json_object_get(event, "response");
    const char *method = str_at(req, "method");
    const char *url = str_at(req, "url");
    put_str_safe(w, method ? method : "?");
    puts_(w, " ");
    put_path(w, url ? url : "");
    int64_t status = num_at(resp, "status", 0);
    bool canceled = outcome && strcmp(outcome, "canceled") == 0;
    if (status > 0) {
        const char *reason = ag_tail_reason((int)status);
        putf(w, " - %lld", (long long)status);
        if (reason)
            putf(w, " %s", reason);
        if (canceled)
            puts_(w, " - canceled");
    } else {
        puts_(w, " - ");
        put_str_safe(w, outcome ? outcome : "?");
    }
}

static void put_scheduled(writer_t *w, json_t *event, json_t *ag, const char *outcome)
{
    const char *task = str_at(ag, "task");
    puts_(w, "cron \"");
    put_str_safe(w, str_at(event, "cron"));
    puts_(w, "\"");
    if (task && task[0]) {
        puts_(w, " ");
        put_str_safe(w, task);
    }
    puts_(w, " - ");
    put_str_safe(w, outcome ? outcome : "?");
}

/* "  model=M tokens=I+O cost=$C[ cached][ retries=N]" */
static void put_model_line(writer_t *w, json_t *ag)
{
    const char *model = str_at(ag, "model");
    if (model == NULL || model[0] == '\0')
        return;
    json_t *cost = json_object_get(ag, "costUsd");
    double usd = json_is_number(cost) ? json_number_value(cost) : 0.0;
    if (!isfinite(usd))
        usd = 0.0;
    puts_(w, "  model=");
    put_str_safe(w, model);
    putf(w, " tokens=%lld+%lld cost=$%.4f", (long long)num_at(ag, "inputTokens", 0),
         (long long)num_at(ag, "outputTokens", 0), usd);
    if (json_is_true(json_object_get(ag, "cached")))
        puts_(w, " cached");
    int64_t retries = num_at(ag, "retries", 0);
    if (retries > 0)
        putf(w, " retries=%lld", (long long)retries);
    puts_(w, "\n");
}

/* One part of a log message: a string as it is, anything else as compact JSON. */
static void put_part(writer_t *w, json_t *part)
{
    puts_(w, " ");
    if (json_is_string(part)) {
        put_safe(w, json_string_value(part), json_string_length(part));
        return;
    }
    char *text = json_dumps(part, JSON_COMPACT | JSON_ENCODE_ANY);
    if (text == NULL) {
        if (w->err == 0)
            w->err = -ENOMEM;
        return;
    }
    put_str_safe(w, text);
    free(text);
}

/* wrangler's pretty form of console output and exceptions: "  (level) message". */
static void put_logs(writer_t *w, json_t *ev)
{
    size_t i, k;
    json_t *item, *part;
    json_array_foreach(json_object_get(ev, "logs"), i, item)
    {
        const char *level = str_at(item, "level");
        puts_(w, "  (");
        put_str_safe(w, level ? level : "log");
        puts_(w, ")");
        json_t *msg = json_object_get(item, "message");
        if (json_is_array(msg)) {
            json_array_foreach(msg, k, part) put_part(w, part);
        } else if (msg) {
            put_part(w, msg);
        }
        puts_(w, "\n");
    }
    json_array_foreach(json_object_get(ev, "exceptions"), i, item)
    {
        const char *name = str_at(item, "name");
        const char *message = str_at(item, "message");
        puts_(w, "  (error) ");
        if (name && name[0]) {
            put_str_safe(w, name);
            if (message)
                puts_(w, ": ");
        }
        if (message)
            put_str_safe(w, message);
        puts_(w, "\n");
    }
}

static json_t *load_object(const char *json, size_t len)
{
    json_error_t jerr;
    json_t *root = json_loadb(json, len, 0, &jerr);
    if (root && !json_is_object(root)) {
        json_decref(root);
        root = NULL;
    }
    return root;
}

int ag_tail_format_dropped(ag_buf_t *out, int64_t n)
{
    return ag_buf_printf(out, "(%lld event%s dropped: tail was too slow)\n", (long long)n,
                         n == 1 ? "" : "s");
}

int ag_tail_format_pretty(ag_buf_t *out, const char *json, size_t len)
{
    json_t *ev = load_object(json, len);
    if (ev == NULL)
        return AG_EPROTO;
    size_t start = out->len;
    writer_t w = {out, 0};
    json_t *ag = json_object_get(ev, "aigate");
    json_t *event = json_object_get(ev, "event");
    const char *outcome = str_at(ev, "outcome");
    int64_t dropped = num_at(ag, "dropped", 0);
    if (dropped > 0 && w.err == 0)
        w.err = ag_tail_format_dropped(out, dropped);
    put_time(&w, ev);
    puts_(&w, " ");
    if (json_is_string(json_object_get(event, "cron")))
        put_scheduled(&w, event, ag, outcome);
    else if (json_is_object(json_object_get(event, "request")))
        put_request(&w, event, outcome);
    else {
        puts_(&w, "event - ");
        put_str_safe(&w, outcome ? outcome : "?");
    }
    int64_t wall = num_at(ev, "wallTime", -1);
    if (wall >= 0)
        putf(&w, " (%lldms)", (long long)wall);
    puts_(&w, "\n");
    put_model_line(&w, ag);
    put_logs(&w, ev);
    json_decref(ev);
    if (w.err)
        out->len = start; /* no half event */
    return w.err;
}

int ag_tail_event_dropped(const char *json, size_t len, int64_t *dropped)
{
    json_t *ev = load_object(json, len);
    *dropped = 0;
    if (ev == NULL)
        return AG_EPROTO;
    int64_t n = num_at(json_object_get(ev, "aigate"), "dropped", 0);
    *dropped = n > 0 ? n : 0;
    json_decref(ev);
    return 0;
}

int ag_tail_format_json(ag_buf_t *out, const char *json, size_t len)
{
    size_t start = out->len;
    int rc = ag_buf_append(out, json, len);
    if (rc == 0)
        rc = ag_buf_append(out, "\n", 1);
    if (rc) {
        out->len = start;
        return rc;
    }
    for (size_t i = start; i + 1 < out->len; i++) {
        if (out->data[i] == '\n' || out->data[i] == '\r')
            out->data[i] = ' ';
    }
    return 0;
}
