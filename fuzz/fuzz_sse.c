/* SPDX-License-Identifier: MIT
 *
 * fuzz_sse.c: the SSE parser and the Anthropic accumulator on arbitrary bytes.
 * Byte 0 picks the chunk sizes; the rest is parsed twice, whole and in those
 * chunks, and both runs must see the same events, totals and result.
 */
#include "util/platform.h"

#include <stdint.h>
#include <string.h>

#include "upstream/sse.h"

typedef struct {
    ag_anthropic_stream_t acc;
    uint64_t digest; /* FNV-1a over every event's fields */
} sink_t;

static void mix(uint64_t *h, ag_str_t s)
{
    for (size_t i = 0; i < s.len; i++)
        *h = (*h ^ (unsigned char)s.ptr[i]) * UINT64_C(0x100000001b3);
    *h = (*h ^ s.len) * UINT64_C(0x100000001b3);
}

static int on_event(void *ctx, const ag_sse_event_t *ev)
{
    sink_t *s = ctx;
    mix(&s->digest, ev->event);
    mix(&s->digest, ev->data);
    mix(&s->digest, ev->id);
    return ag_anthropic_stream_on_event(&s->acc, ev);
}

/* step 0: one feed; otherwise chunks of 1 + (first byte of the chunk % step). */
static int parse(const uint8_t *data, size_t size, unsigned step, sink_t *s)
{
    ag_sse_parser_t p;
    s->digest = UINT64_C(0xcbf29ce484222325);
    ag_anthropic_stream_init(&s->acc, 1024);
    ag_sse_parser_init(&p, 4096, on_event, s);
    int rc = 0;
    for (size_t off = 0; off < size && rc == 0;) {
        size_t n = step ? 1 + data[off] % step : size - off;
        n = n < size - off ? n : size - off;
        rc = ag_sse_parser_feed(&p, (const char *)data + off, n);
        off += n;
    }
    ag_sse_parser_fini(&p);
    return rc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    sink_t whole, chunked;
    int rc_whole = parse(data + 1, size - 1, 0, &whole);
    int rc_chunked = parse(data + 1, size - 1, 1u + data[0], &chunked);
    AG_ASSERT(rc_whole == rc_chunked && whole.digest == chunked.digest);
    AG_ASSERT(whole.acc.events == chunked.acc.events);
    AG_ASSERT(memcmp(&whole.acc.usage, &chunked.acc.usage, sizeof(whole.acc.usage)) == 0);
    AG_ASSERT(whole.acc.text.len == chunked.acc.text.len && whole.acc.text.len <= 1024);
    AG_ASSERT(whole.acc.text.len == 0 ||
              memcmp(whole.acc.text.data, chunked.acc.text.data, whole.acc.text.len) == 0);
    AG_ASSERT(ag_anthropic_stream_complete(&whole.acc) ==
              ag_anthropic_stream_complete(&chunked.acc));
    ag_anthropic_stream_fini(&whole.acc);
    ag_anthropic_stream_fini(&chunked.acc);
    return 0;
}
