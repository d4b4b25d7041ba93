/* SPDX-License-Identifier: MIT
 *
 * json.c: JSON string escaping for response bodies and log lines.
 */
#include "util/platform.h"

#include "util/json.h"

#include "util/hex.h"
#include "util/utf.h"

int ag_json_append_string(ag_buf_t *b, ag_str_t s)
{
    int rc = ag_buf_reserve(b, s.len + 2);
    if (rc < 0)
        return rc;
    b->data[b->len++] = '"';
    const unsigned char *p = (const unsigned char *)s.ptr;
    size_t i = 0, run = 0;
    while (i < s.len) {
        unsigned char c = p[i];
        const char *esc = NULL;
        char ubuf[7];
        size_t adv = 1;
        if (c >= 0x20 && c != '"' && c != '\\' && c < 0x80) {
            i++, run++;
            continue;
        }
        if (c >= 0x80) {
            unsigned cp;
            adv = ag_utf8_decode(p + i, s.len - i, &cp);
            if (adv) {
                i += adv, run += adv;
                continue;
            }
            adv = 1;
            esc = "\xEF\xBF\xBD"; /* U+FFFD for a byte that is not UTF-8 */
        } else if (c == '"') {
            esc = "\\\"";
        } else if (c == '\\') {
            esc = "\\\\";
        } else if (c == '\n') {
            esc = "\\n";
        } else if (c == '\r') {
            esc = "\\r";
        } else if (c == '\t') {
            esc = "\\t";
        } else {
            ubuf[0] = '\\', ubuf[1] = 'u', ubuf[2] = '0', ubuf[3] = '0';
            ag_hex_encode(&c, 1, ubuf + 4); /* two digits and the NUL */
            esc = ubuf;
        }
        rc = ag_buf_append(b, p + i - run, run);
        if (rc == 0)
            rc = ag_buf_append_cstr(b, esc);
        if (rc < 0)
            return rc;
        run = 0;
        i += adv;
    }
    rc = ag_buf_append(b, p + i - run, run);
    if (rc == 0)
        rc = ag_buf_append(b, "\"", 1);
    return rc;
}

int ag_json_error_body(ag_buf_t *b, const char *msg)
{
    int rc = ag_buf_append_cstr(b, "{\"error\":");
    if (rc == 0)
        rc = ag_json_append_string(b, ag_str_c(msg));
    if (rc == 0)
        rc = ag_buf_append(b, "}", 1);
    return rc;
}
