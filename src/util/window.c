/* SPDX-License-Identifier: MIT
 *
 * window.c: "30s", "15m", "24h", "7d".
 */
#include "util/platform.h"

#include "util/errors.h"
#include "util/window.h"

int ag_parse_window(const char *s, size_t len, int64_t *seconds)
{
    int64_t v = 0;
    size_t i = 0;
    for (; i < len && s[i] >= '0' && s[i] <= '9'; i++) {
        if (v > AG_WINDOW_MAX_S)
            return AG_EINVALID;
        v = v * 10 + (s[i] - '0');
    }
    if (i == 0 || i + 1 != len)
        return AG_EINVALID;
    int64_t unit = s[i] == 's'   ? 1
                   : s[i] == 'm' ? 60
                   : s[i] == 'h' ? 3600
                   : s[i] == 'd' ? 86400
                                 : 0;
    if (unit == 0 || v == 0 || v > AG_WINDOW_MAX_S / unit)
        return AG_EINVALID;
    *seconds = v * unit;
    return 0;
}
