/* SPDX-License-Identifier: MIT
 *
 * fuzz_openai_stream.c: arbitrary bytes as an upstream event stream through the OpenAI stream
 * translator. Byte 0 picks the chunk sizes; the rest is fed whole and in those chunks, and both
 * runs must write the same bytes: `data: ` lines of JSON objects, ending at most once.
 */
#include "util/platform.h"

#include <stdint.h>
#include <string.h>

#include <jansson.h>

#include "gateway/openai.h"

/* step 0: one feed; otherwise chunks of 1 + (first byte of the chunk % step). */
static void run(const uint8_t *data, size_t size, unsigned step, bool include_usage, ag_buf_t *out)
{
    gw_openai_stream_t s;
    gw_openai_stream_init(&s, 1, include_usage, "m");
    int rc = 0;
    for (size_t off = 0; off < size && rc == 0;) {
        size_t n = step ? 1 + data[off] % step : size - off;
        n = n < size - off ? n : size - off;
        rc = gw_openai_stream_feed(&s, (const char *)data + off, n, out);
        off += n;
    }
    AG_ASSERT(gw_openai_stream_finish(&s, NULL, out) == 0);
    AG_ASSERT(gw_openai_stream_ended(&s));
    gw_openai_stream_fini(&s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    ag_buf_t whole, chunked;
    ag_buf_init(&whole, 0);
    ag_buf_init(&chunked, 0);
    bool iu = data[0] & 1;
    run(data + 1, size - 1, 0, iu, &whole);
    run(data + 1, size - 1, 1u + data[0], iu, &chunked);
    AG_ASSERT(whole.len == chunked.len && memcmp(whole.data, chunked.data, whole.len) == 0);
    size_t off = 0, ends = 0;
    while (off < whole.len) {
        const char *line = whole.data + off;
        const char *end = memmem(line, whole.len - off, "\n\n", 2);
        AG_ASSERT(end && end - line > 6 && memcmp(line, "data: ", 6) == 0);
        AG_ASSERT(ends == 0); /* nothing after [DONE] or an error */
        size_t dlen = (size_t)(end - line) - 6;
        if (dlen == 6 && memcmp(line + 6, "[DONE]", 6) == 0) {
            ends++;
        } else {
            json_t *j = json_loadb(line + 6, dlen, 0, NULL);
            AG_ASSERT(json_is_object(j));
            if (json_object_get(j, "error"))
                ends++;
            json_decref(j);
        }
        off = (size_t)(end - whole.data) + 2;
    }
    AG_ASSERT(ends == 1);
    ag_buf_fini(&whole);
    ag_buf_fini(&chunked);
    return 0;
}
