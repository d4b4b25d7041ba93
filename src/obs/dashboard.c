/* SPDX-License-Identifier: MIT
 *
 * dashboard.c: looks up the dashboard's embedded files. The table itself is
 * generated at build time (dashboard_assets.c in the build tree, written by
 * tools/embed.c from web/); this file only searches it.
 */
#include "obs/dashboard.h"

#include <string.h>

/* Defined in the generated dashboard_assets.c. */
extern const ag_asset_t ag__dashboard_assets[];
extern const size_t ag__dashboard_nassets;

const ag_asset_t *ag_dashboard_asset(const char *path, size_t len)
{
    if (path == NULL)
        return NULL;
    const char *q = memchr(path, '?', len);
    if (q != NULL)
        len = (size_t)(q - path);
    /* A handful of files: a linear scan is as fast as anything else. */
    for (size_t i = 0; i < ag__dashboard_nassets; i++) {
        const ag_asset_t *a = &ag__dashboard_assets[i];
        if (strlen(a->path) == len && memcmp(a->path, path, len) == 0)
            return a;
    }
    return NULL;
}

const ag_asset_t *ag_dashboard_asset_at(size_t i)
{
    return i < ag__dashboard_nassets ? &ag__dashboard_assets[i] : NULL;
}
