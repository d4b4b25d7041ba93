/* SPDX-License-Identifier: MIT
 *
 * fuzz_template.c: libFuzzer target for the task template language
 * (src/cron/template.c). Parses; for an accepted template checks the listing's
 * invariants, then renders with every value missing and with short values, each
 * twice, at a scheduled time taken from the input: no failure, same bytes.
 */
#include "util/platform.h"

#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "cron/template.h"
#include "util/buf.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void render_twice(const ag_template_t *t, int64_t ms, const ag_str_t *vals, size_t n,
                         int want_missing)
{
    ag_buf_t a, b;
    ag_buf_init(&a, 0);
    ag_buf_init(&b, 0);
    bool missing[AG_TEMPLATE_MAX_VARS];
    int rc = ag_template_render(t, ms, vals, n, &a, missing);
    AG_ASSERT(rc == want_missing);
    AG_ASSERT(ag_template_render(t, ms, vals, n, &b, NULL) == rc);
    AG_ASSERT(a.len == b.len && (a.len == 0 || memcmp(a.data, b.data, a.len) == 0));
    int counted = 0;
    for (size_t i = 0; i < ag_template_count(t); i++)
        counted += missing[i];
    AG_ASSERT(counted == rc);
    ag_buf_fini(&a);
    ag_buf_fini(&b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    ag_template_t *t = NULL;
    ag_template_error_t err;
    int rc = ag_template_parse((const char *)data, size, &t, &err);
    if (rc != 0) {
        AG_ASSERT(t == NULL);
        AG_ASSERT(err.offset <= size);
        AG_ASSERT(err.line >= 1 && err.col >= 1);
        AG_ASSERT(err.message[0] != '\0');
        AG_ASSERT(memchr(err.message, '\0', sizeof(err.message)) != NULL);
        return 0;
    }
    size_t n = ag_template_count(t);
    AG_ASSERT(n <= AG_TEMPLATE_MAX_VARS);
    int lookups = 0;
    for (size_t i = 0; i < n; i++) {
        const ag_template_var_t *v = ag_template_var(t, i);
        AG_ASSERT(v->offset + v->text.len <= size);
        AG_ASSERT(memcmp(v->text.ptr, data + v->offset, v->text.len) == 0);
        AG_ASSERT(v->text.len >= 4 && memcmp(v->text.ptr, "{{", 2) == 0 &&
                  memcmp(v->text.ptr + v->text.len - 2, "}}", 2) == 0);
        AG_ASSERT(v->text.ptr[v->text.len] == '\0' && v->arg.ptr[v->arg.len] == '\0' &&
                  v->binding.ptr[v->binding.len] == '\0');
        bool time = v->kind <= AG_TEMPLATE_SCHEDULED_TIME;
        bool bound = v->kind == AG_TEMPLATE_KV || v->kind == AG_TEMPLATE_R2;
        AG_ASSERT(time ? v->arg.len == 0 : v->arg.len > 0);
        AG_ASSERT(bound ? v->binding.len > 0 : v->binding.len == 0);
        AG_ASSERT((v->kind == AG_TEMPLATE_USAGE) == (v->window_s > 0));
        AG_ASSERT(v->binding_offset < size && v->arg_offset < size);
        AG_ASSERT(bound || v->binding_offset == v->offset);
        AG_ASSERT(v->arg.len == 0 || memcmp(data + v->arg_offset, v->arg.ptr, v->arg.len) == 0);
        AG_ASSERT(v->binding.len == 0 ||
                  memcmp(data + v->binding_offset, v->binding.ptr, v->binding.len) == 0);
        lookups += !time;
    }
    AG_ASSERT(ag_template_is_time_only(t) == (lookups == 0));

    /* A scheduled time from the input's first bytes: any int64, extremes included. */
    int64_t ms = 0;
    memcpy(&ms, data, size < sizeof(ms) ? size : sizeof(ms));
    render_twice(t, ms, NULL, 0, lookups);
    ag_str_t vals[AG_TEMPLATE_MAX_VARS];
    static const char short_vals[] = "0123456789{{}}\\";
    for (size_t i = 0; i < n; i++)
        vals[i] = ag_str(short_vals, i % sizeof(short_vals));
    render_twice(t, ms, vals, n, 0);
    ag_template_free(t);
    return 0;
}
