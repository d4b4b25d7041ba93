/* SPDX-License-Identifier: MIT
 *
 * test_dashboard.c: the embedded dashboard: the lookup by request path, and
 * what the page's Content-Security-Policy demands of the embedded files (no
 * inline script or style, no event-handler attributes, nothing named on
 * another origin, every file the page names is embedded). The page itself is
 * tested in a real browser by tests/integration/i_dashboard.test.js.
 */
#include "util/platform.h"

#include <stdbool.h>
#include <string.h>
#include <strings.h>

#include "obs/dashboard.h"

#include "harness.h"

static const ag_asset_t *find(const char *path)
{
    return ag_dashboard_asset(path, strlen(path));
}

/* Does the asset's text contain `needle`? (Embedded files are not NUL-terminated.) */
static bool contains(const ag_asset_t *a, const char *needle)
{
    size_t n = strlen(needle);
    for (size_t i = 0; n <= a->len && i <= a->len - n; i++)
        if (memcmp(a->data + i, needle, n) == 0)
            return true;
    return false;
}

/* Case-insensitive variant, for HTML tag and attribute names. */
static bool contains_ci(const ag_asset_t *a, const char *needle)
{
    size_t n = strlen(needle);
    for (size_t i = 0; n <= a->len && i <= a->len - n; i++)
        if (strncasecmp((const char *)a->data + i, needle, n) == 0)
            return true;
    return false;
}

TEST(the_page_is_at_the_root)
{
    const ag_asset_t *a = find("/");
    ASSERT(a != NULL);
    ASSERT_STREQ(a->path, "/");
    ASSERT_STREQ(a->content_type, "text/html; charset=utf-8");
    ASSERT(a->len > 100);
    ASSERT(strncasecmp((const char *)a->data, "<!doctype html>", 15) == 0);
    ASSERT(find("/?refresh=1") == a); /* the query is not part of the path */
    ASSERT(find("/#x") == NULL);      /* a fragment never reaches a server */
}

TEST(assets_are_under_assets_with_their_types)
{
    static const struct {
        const char *path, *type;
    } want[] = {
        {"/assets/dashboard.js", "text/javascript; charset=utf-8"},
        {"/assets/dashboard.css", "text/css; charset=utf-8"},
        {"/assets/uPlot.iife.min.js", "text/javascript; charset=utf-8"},
        {"/assets/uPlot.min.css", "text/css; charset=utf-8"},
        {"/assets/favicon.svg", "image/svg+xml"},
    };
    for (size_t i = 0; i < AG_ARRAY_LEN(want); i++) {
        const ag_asset_t *a = find(want[i].path);
        ASSERT_MSG_(a != NULL, "%s is not embedded", want[i].path);
        ASSERT_STREQ(a->path, want[i].path);
        ASSERT_STREQ(a->content_type, want[i].type);
        ASSERT(a->len > 0);
    }
    ASSERT(contains(find("/assets/uPlot.iife.min.js"), "uPlot"));
}

TEST(lookups_respect_the_length_and_match_exactly)
{
    const char buf[] = "/assets/dashboard.jsXYZ";
    const ag_asset_t *a = ag_dashboard_asset(buf, strlen("/assets/dashboard.js"));
    ASSERT(a != NULL);
    ASSERT_STREQ(a->path, "/assets/dashboard.js");
    ASSERT(ag_dashboard_asset(buf, strlen("/assets/dashboard.j")) == NULL);
    ASSERT(ag_dashboard_asset(NULL, 0) == NULL);
    ASSERT(ag_dashboard_asset("", 0) == NULL);
    ASSERT(ag_dashboard_asset("/", 0) == NULL);
    static const char *const misses[] = {
        "/index.html",
        "/assets/",
        "/assets",
        "/assets/../",
        "/ASSETS/dashboard.js",
        "//assets/dashboard.js",
        "/assets/dashboard.js/",
        "/assets/nope.js",
        "/metrics",
        "/tail",
        "dashboard.js",
        "/assets/dashboard.js%00",
    };
    for (size_t i = 0; i < AG_ARRAY_LEN(misses); i++)
        ASSERT_MSG_(find(misses[i]) == NULL, "%s found an asset", misses[i]);
}

TEST(the_table_is_well_formed)
{
    size_t n = 0;
    for (const ag_asset_t *a; (a = ag_dashboard_asset_at(n)) != NULL; n++) {
        ASSERT(a->path != NULL && a->content_type != NULL && a->data != NULL);
        ASSERT_MSG_(a->path[0] == '/', "%s", a->path);
        ASSERT_MSG_(strcmp(a->path, "/") == 0 || strncmp(a->path, "/assets/", 8) == 0, "%s",
                    a->path);
        ASSERT(find(a->path) == a); /* paths are unique */
    }
    ASSERT(n >= 6);
    ASSERT(ag_dashboard_asset_at(n) == NULL);
}

/* Every src="..." and href="..." in the page names an embedded file, by a
 * relative URL (the page loads nothing from another origin). */
TEST(everything_the_page_names_is_embedded)
{
    const ag_asset_t *page = find("/");
    ASSERT(page != NULL);
    const char *s = (const char *)page->data;
    int refs = 0;
    for (size_t i = 0; i < page->len; i++) {
        size_t skip = 0;
        if (i + 6 <= page->len && memcmp(s + i, " src=\"", 6) == 0)
            skip = 6;
        else if (i + 7 <= page->len && memcmp(s + i, " href=\"", 7) == 0)
            skip = 7;
        if (skip == 0)
            continue;
        const char *v = s + i + skip;
        const char *end = memchr(v, '"', page->len - (size_t)(v - s));
        ASSERT(end != NULL);
        size_t vlen = (size_t)(end - v);
        ASSERT_MSG_(vlen > 7 && memcmp(v, "assets/", 7) == 0, "%.*s is not a relative asset",
                    (int)vlen, v);
        char path[256];
        ASSERT(vlen + 2 < sizeof(path));
        path[0] = '/';
        memcpy(path + 1, v, vlen);
        path[vlen + 1] = '\0';
        ASSERT_MSG_(find(path) != NULL, "the page names %s, which is not embedded", path);
        refs++;
    }
    ASSERT(refs >= 5); /* favicon, two styles, two scripts */
}

/* script-src 'self' and style-src 'self' with no 'unsafe-inline' or 'unsafe-eval'. */
TEST(the_page_obeys_its_content_security_policy)
{
    const ag_asset_t *page = find("/");
    ASSERT(page != NULL);
    ASSERT(!contains_ci(page, "<style"));
    ASSERT(!contains_ci(page, " style="));
    ASSERT(!contains_ci(page, "javascript:"));
    ASSERT(!contains_ci(page, " onclick="));
    ASSERT(!contains_ci(page, " onload="));
    ASSERT(!contains_ci(page, " onerror="));
    ASSERT(!contains_ci(page, " onchange="));
    ASSERT(!contains_ci(page, " oninput="));
    ASSERT(!contains_ci(page, " onsubmit="));
    /* every <script> has a src: no inline script */
    const char *s = (const char *)page->data;
    for (size_t i = 0; i + 7 <= page->len; i++) {
        if (strncasecmp(s + i, "<script", 7) != 0)
            continue;
        const char *gt = memchr(s + i, '>', page->len - i);
        ASSERT(gt != NULL);
        bool has_src = false;
        for (const char *p = s + i; p + 5 <= gt; p++)
            if (memcmp(p, " src=", 5) == 0)
                has_src = true;
        ASSERT_MSG_(has_src, "an inline <script> at byte %zu", i);
    }

    static const char *const ours[] = {"/", "/assets/dashboard.js", "/assets/dashboard.css"};
    for (size_t i = 0; i < AG_ARRAY_LEN(ours); i++) {
        const ag_asset_t *a = find(ours[i]);
        ASSERT(a != NULL);
        ASSERT_MSG_(!contains(a, "http://") && !contains(a, "https://"), "%s names another origin",
                    ours[i]);
        ASSERT_MSG_(!contains(a, "@import"), "%s imports a style", ours[i]);
    }
    const ag_asset_t *js = find("/assets/dashboard.js");
    ASSERT(!contains(js, "eval("));
    ASSERT(!contains(js, "new Function"));
    ASSERT(!contains(js, "innerHTML"));
    ASSERT(!contains(js, "new EventSource")); /* it cannot send the admin token */
}

AG_TESTS(AG_TEST_ENTRY(the_page_is_at_the_root)
             AG_TEST_ENTRY(assets_are_under_assets_with_their_types)
                 AG_TEST_ENTRY(lookups_respect_the_length_and_match_exactly)
                     AG_TEST_ENTRY(the_table_is_well_formed)
                         AG_TEST_ENTRY(everything_the_page_names_is_embedded)
                             AG_TEST_ENTRY(the_page_obeys_its_content_security_policy))
