/* SPDX-License-Identifier: MIT
 *
 * access_log.c: the access-log line and its batched, line-atomic writes.
 */
#include "util/platform.h"

#include "obs/access_log.h"
#include "util/json.h"
#include "util/log.h"

void ag_access_log_format(ag_buf_t *b, const ag_request_record_t *rec)
{
    char ts[64];
    ag_format_time_iso(rec->start_us + rec->duration_us, ts);
    size_t mark = b->len;
    int rc = ag_buf_printf(b, "{\"time\":\"%s\",\"id\":\"%s\",\"method\":", ts, rec->id);
    if (rc == 0)
        rc = ag_json_append_string(b, rec->method);
    if (rc == 0)
        rc = ag_buf_append_cstr(b, ",\"path\":");
    if (rc == 0)
        rc = ag_json_append_string(b, rec->path);
    if (rc == 0)
        rc = ag_buf_printf(b,
                           ",\"status\":%d,\"bytes\":%zu,\"duration_us\":%lld,\"upstream_us\":%lld,"
                           "\"client\":\"%s\",\"model\":",
                           rec->status, rec->bytes_out, (long long)rec->duration_us,
                           (long long)rec->ai.upstream_us, rec->client ? rec->client : "");
    if (rc == 0)
        rc = rec->ai.model ? ag_json_append_string(b, ag_str_c(rec->ai.model))
                           : ag_buf_append_cstr(b, "null");
    if (rc == 0 && rec->ai.key_name) {
        rc = ag_buf_append_cstr(b, ",\"key\":");
        if (rc == 0)
            rc = ag_json_append_string(b, ag_str_c(rec->ai.key_name));
    }
    if (rc == 0)
        rc = ag_buf_append_cstr(b, "}\n");
    if (rc < 0)
        b->len = mark;
}

void ag_access_log_flush(ag_buf_t *b)
{
    size_t off = 0;
    while (off < b->len) {
        size_t n = b->len - off;
        if (n > 4096) {
            n = 4096;
            while (n > 0 && b->data[off + n - 1] != '\n')
                n--;
            if (n == 0)
                n = b->len - off < 4096 ? b->len - off : 4096;
        }
        ag_log_raw(b->data + off, n);
        off += n;
    }
    b->len = 0;
}
