/* SPDX-License-Identifier: MIT
 *
 * dashboard.h: the admin listener's dashboard, a single page whose files
 * (web/src/ and uPlot from web/node_modules) are embedded in the binary at
 * build time (tools/embed.c, cmake/modules/35-dashboard.cmake). The page reads
 * /series, /stats and /tail on the same listener; it loads nothing else.
 */
#ifndef AG_OBS_DASHBOARD_H
#define AG_OBS_DASHBOARD_H

#include <stddef.h>

/** The Content-Security-Policy to send with every dashboard response: the page
 *  has no inline script or style, no eval, and talks only to its own origin. */
#define AG_DASHBOARD_CSP                                                                           \
    "default-src 'self'; style-src 'self'; script-src 'self'; connect-src 'self'; "                \
    "img-src 'self' data:"

/** One embedded file. Everything is static, read-only data of the binary. */
typedef struct ag_asset {
    const char *path;         /* URL path: "/" or "/assets/<file>" */
    const char *content_type; /* the Content-Type to send, charset included for text */
    const unsigned char *data;
    size_t len;
} ag_asset_t;

/**
 * Finds the file for a request path: "/" is the page (index.html); its
 * scripts, styles and icon are under "/assets/". A query string ("?...")
 * is ignored; nothing else is normalised, so "/assets/../x" finds nothing.
 * @param path the request target, borrowed, not NUL-terminated (`len` bytes)
 * @return the asset (static, valid for the life of the process), or NULL when
 *         there is none: the caller answers 404.
 * @note Thread-safe: reads constant data only.
 */
const ag_asset_t *ag_dashboard_asset(const char *path, size_t len);

/**
 * The i-th embedded file, for listings and tests: NULL once `i` is past the
 * last one.
 */
const ag_asset_t *ag_dashboard_asset_at(size_t i);

#endif
