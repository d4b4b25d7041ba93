/* SPDX-License-Identifier: MIT
 *
 * curl_lazy.c: libcurl loaded on first use. The curl_* functions aigate calls
 * are defined here under their own names; the first call dlopen()s
 * libcurl.so.4 and forwards to it. libcurl and its ~25 libraries are then
 * no part of a start that does not need them (issue 15: cold start), and a
 * gateway whose upstream is served by the native client never loads it.
 */
#include "util/platform.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>

/* Our definitions are the plain functions; the type-checking macros of
 * curl/typecheck-gcc.h would rename nothing here, but they would wrap ours. */
#define CURL_DISABLE_TYPECHECK 1
#include <curl/curl.h>

#include "util/log.h"

#define CURL_SONAME "libcurl.so.4"

/* Every entry point used, as a pointer into the loaded library. */
#define CURL_FUNCS(X)                                                                              \
    X(curl_global_init)                                                                            \
    X(curl_global_cleanup)                                                                         \
    X(curl_easy_init)                                                                              \
    X(curl_easy_cleanup)                                                                           \
    X(curl_easy_reset)                                                                             \
    X(curl_easy_perform)                                                                           \
    X(curl_easy_setopt)                                                                            \
    X(curl_easy_getinfo)                                                                           \
    X(curl_easy_pause)                                                                             \
    X(curl_easy_strerror)                                                                          \
    X(curl_easy_escape)                                                                            \
    X(curl_free)                                                                                   \
    X(curl_slist_append)                                                                           \
    X(curl_slist_free_all)                                                                         \
    X(curl_multi_init)                                                                             \
    X(curl_multi_cleanup)                                                                          \
    X(curl_multi_setopt)                                                                           \
    X(curl_multi_add_handle)                                                                       \
    X(curl_multi_remove_handle)                                                                    \
    X(curl_multi_socket_action)                                                                    \
    X(curl_multi_assign)                                                                           \
    X(curl_multi_info_read)                                                                        \
    X(curl_url)                                                                                    \
    X(curl_url_cleanup)                                                                            \
    X(curl_url_get)                                                                                \
    X(curl_url_set)

static struct {
#define FIELD(name) __typeof__(name) *name;
    CURL_FUNCS(FIELD)
#undef FIELD
} real;

static pthread_once_t load_once = PTHREAD_ONCE_INIT;
static bool loaded;

static void load(void)
{
    void *h = dlopen(CURL_SONAME, RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        ag_log(AG_LOG_ERROR, "cannot load %s (install libcurl4): %s", CURL_SONAME, dlerror());
        return;
    }
    bool ok = true;
#define RESOLVE(name)                                                                              \
    *(void **)&real.name = dlsym(h, #name);                                                        \
    if (!real.name) {                                                                              \
        ag_log(AG_LOG_ERROR, "%s has no %s", CURL_SONAME, #name);                                  \
        ok = false;                                                                                \
    }
    CURL_FUNCS(RESOLVE)
#undef RESOLVE
    /* libcurl's own setup, once for the process, before any thread uses it. */
    if (ok && real.curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        ag_log(AG_LOG_ERROR, "%s: curl_global_init failed", CURL_SONAME);
        ok = false;
    }
    loaded = ok;
}

static bool ready(void)
{
    pthread_once(&load_once, load);
    return loaded;
}

/* curl_global_init ran in load(); a caller's own call only counts. */
CURLcode curl_global_init(long flags)
{
    AG_UNUSED(flags);
    return ready() ? CURLE_OK : CURLE_FAILED_INIT;
}

void curl_global_cleanup(void)
{
    /* libcurl stays initialised for the life of the process: a caller's
     * cleanup must not tear it down under another user. */
}

CURL *curl_easy_init(void)
{
    return ready() ? real.curl_easy_init() : NULL;
}

void curl_easy_cleanup(CURL *h)
{
    if (h && ready())
        real.curl_easy_cleanup(h);
}

void curl_easy_reset(CURL *h)
{
    if (h && ready())
        real.curl_easy_reset(h);
}

CURLcode curl_easy_perform(CURL *h)
{
    return ready() ? real.curl_easy_perform(h) : CURLE_FAILED_INIT;
}

/* The variadic argument's type follows from the option's number, as
 * libcurl's own curl_easy_setopt reads it (CURLOPTTYPE_*). */
#define VA_FORWARD(fn, handle, option, ap)                                                         \
    do {                                                                                           \
        if ((option) < CURLOPTTYPE_OBJECTPOINT)                                                    \
            return fn(handle, option, va_arg(ap, long));                                           \
        if ((option) < CURLOPTTYPE_FUNCTIONPOINT)                                                  \
            return fn(handle, option, va_arg(ap, void *));                                         \
        if ((option) < CURLOPTTYPE_OFF_T)                                                          \
            return fn(handle, option, va_arg(ap, void (*)(void)));                                 \
        if ((option) < CURLOPTTYPE_BLOB)                                                           \
            return fn(handle, option, va_arg(ap, curl_off_t));                                     \
        return fn(handle, option, va_arg(ap, void *));                                             \
    } while (0)

static CURLcode easy_setopt(CURL *h, CURLoption o, va_list ap)
{
    VA_FORWARD(real.curl_easy_setopt, h, o, ap);
}

CURLcode curl_easy_setopt(CURL *h, CURLoption o, ...)
{
    if (!ready())
        return CURLE_FAILED_INIT;
    va_list ap;
    va_start(ap, o);
    CURLcode rc = easy_setopt(h, o, ap);
    va_end(ap);
    return rc;
}

static CURLMcode multi_setopt(CURLM *m, CURLMoption o, va_list ap)
{
    VA_FORWARD(real.curl_multi_setopt, m, o, ap);
}

CURLMcode curl_multi_setopt(CURLM *m, CURLMoption o, ...)
{
    if (!ready())
        return CURLM_INTERNAL_ERROR;
    va_list ap;
    va_start(ap, o);
    CURLMcode rc = multi_setopt(m, o, ap);
    va_end(ap);
    return rc;
}

/* Every CURLINFO takes a pointer to where the answer goes. */
CURLcode curl_easy_getinfo(CURL *h, CURLINFO info, ...)
{
    if (!ready())
        return CURLE_FAILED_INIT;
    va_list ap;
    va_start(ap, info);
    void *out = va_arg(ap, void *);
    va_end(ap);
    return real.curl_easy_getinfo(h, info, out);
}

CURLcode curl_easy_pause(CURL *h, int bitmask)
{
    return ready() ? real.curl_easy_pause(h, bitmask) : CURLE_FAILED_INIT;
}

const char *curl_easy_strerror(CURLcode code)
{
    return ready() ? real.curl_easy_strerror(code) : "libcurl could not be loaded";
}

char *curl_easy_escape(CURL *h, const char *s, int len)
{
    return ready() ? real.curl_easy_escape(h, s, len) : NULL;
}

void curl_free(void *p)
{
    if (p && ready())
        real.curl_free(p);
}

struct curl_slist *curl_slist_append(struct curl_slist *list, const char *s)
{
    return ready() ? real.curl_slist_append(list, s) : NULL;
}

void curl_slist_free_all(struct curl_slist *list)
{
    if (list && ready())
        real.curl_slist_free_all(list);
}

CURLM *curl_multi_init(void)
{
    return ready() ? real.curl_multi_init() : NULL;
}

CURLMcode curl_multi_cleanup(CURLM *m)
{
    return ready() ? real.curl_multi_cleanup(m) : CURLM_INTERNAL_ERROR;
}

CURLMcode curl_multi_add_handle(CURLM *m, CURL *h)
{
    return ready() ? real.curl_multi_add_handle(m, h) : CURLM_INTERNAL_ERROR;
}

CURLMcode curl_multi_remove_handle(CURLM *m, CURL *h)
{
    return ready() ? real.curl_multi_remove_handle(m, h) : CURLM_INTERNAL_ERROR;
}

CURLMcode curl_multi_socket_action(CURLM *m, curl_socket_t s, int ev, int *running)
{
    return ready() ? real.curl_multi_socket_action(m, s, ev, running) : CURLM_INTERNAL_ERROR;
}

CURLMcode curl_multi_assign(CURLM *m, curl_socket_t s, void *p)
{
    return ready() ? real.curl_multi_assign(m, s, p) : CURLM_INTERNAL_ERROR;
}

CURLMsg *curl_multi_info_read(CURLM *m, int *left)
{
    return ready() ? real.curl_multi_info_read(m, left) : NULL;
}

CURLU *curl_url(void)
{
    return ready() ? real.curl_url() : NULL;
}

void curl_url_cleanup(CURLU *u)
{
    if (u && ready())
        real.curl_url_cleanup(u);
}

CURLUcode curl_url_get(CURLU *u, CURLUPart what, char **part, unsigned int flags)
{
    return ready() ? real.curl_url_get(u, what, part, flags) : CURLUE_OUT_OF_MEMORY;
}

CURLUcode curl_url_set(CURLU *u, CURLUPart what, const char *part, unsigned int flags)
{
    return ready() ? real.curl_url_set(u, what, part, flags) : CURLUE_OUT_OF_MEMORY;
}
