/* SPDX-License-Identifier: MIT
 *
 * jtok_bench.c: ns per parse of util/jtok against jansson's json_loadb, in the same run, on the
 * two documents of the request path: a client's {"prompt":...} body and an upstream Messages
 * answer. Each side is timed parsing alone and parsing plus what the gateway reads out.
 *
 *   jtok_bench [rounds] [upstream-answer.json]
 */
#include "util/platform.h"

#include <inttypes.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "util/buf.h"
#include "util/jtok.h"
#include "util/utf.h"

/* bench/canned/messages.json, the answer the load benchmarks' fake upstream gives. */
static const char messages_doc[] =
    "{\"id\":\"msg_01BenchCannedAnswer00000000\",\"type\":\"message\",\"role\":\"assistant\","
    "\"model\":\"claude-haiku-4-5\",\"content\":[{\"type\":\"text\",\"text\":\"Edge computing runs "
    "code close to the people who use it, so a request travels a short distance and the answer "
    "comes back quickly. A gateway in front of a model API adds validation, rate limits, caching "
    "and usage logs without changing the client. This fixed answer stands in for Claude during "
    "benchmarks.\"}],\"stop_reason\":\"end_turn\",\"stop_sequence\":null,\"usage\":{\"input_"
    "tokens\":24,\"cache_creation_input_tokens\":0,\"cache_read_input_tokens\":0,\"output_tokens\":"
    "61,\"service_tier\":\"standard\"}}";

static const char prompt_doc[] =
    "{\"prompt\":\"Explain edge computing in one short paragraph for a product manager.\"}";

static volatile uint64_t sink; /* keeps the optimizer from dropping the work */
static ag_buf_t text_buf;

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

typedef void (*bench_fn)(const char *doc, size_t len);

static void jtok_parse_only(const char *doc, size_t len)
{
    ag_jtok_t toks[1024];
    int n = ag_jtok_parse(doc, len, toks, 1024, NULL);
    AG_ASSERT(n > 0);
    sink += (uint64_t)n;
}

static void jansson_parse_only(const char *doc, size_t len)
{
    json_t *j = json_loadb(doc, len, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
    AG_ASSERT(j != NULL);
    sink += json_typeof(j);
    json_decref(j);
}

/* Upstream answer: content[0].text decoded, stop_reason, the two token counts. */
static void jtok_messages(const char *doc, size_t len)
{
    ag_jtok_t toks[1024];
    int n = ag_jtok_parse(doc, len, toks, 1024, NULL);
    AG_ASSERT(n > 0);
    int content = ag_jtok_object_get(doc, toks, 0, "content");
    int first = ag_jtok_array_at(toks, content, 0);
    int text = ag_jtok_object_get(doc, toks, first, "text");
    ag_buf_reset(&text_buf);
    AG_ASSERT(text >= 0 && ag_jtok_str_decode(doc, &toks[text], &text_buf) == 0);
    int stop = ag_jtok_object_get(doc, toks, 0, "stop_reason");
    AG_ASSERT(stop >= 0 && ag_jtok_str_eq(doc, &toks[stop], "end_turn"));
    int usage = ag_jtok_object_get(doc, toks, 0, "usage");
    int64_t in = 0, out = 0;
    AG_ASSERT(
        ag_jtok_int64(doc, &toks[ag_jtok_object_get(doc, toks, usage, "input_tokens")], &in) == 0);
    AG_ASSERT(ag_jtok_int64(doc, &toks[ag_jtok_object_get(doc, toks, usage, "output_tokens")],
                            &out) == 0);
    sink += text_buf.len + (uint64_t)in + (uint64_t)out;
}

static void jansson_messages(const char *doc, size_t len)
{
    json_t *j = json_loadb(doc, len, 0, NULL);
    AG_ASSERT(j != NULL);
    json_t *text = json_object_get(json_array_get(json_object_get(j, "content"), 0), "text");
    AG_ASSERT(json_is_string(text));
    ag_buf_reset(&text_buf);
    AG_ASSERT(ag_buf_append(&text_buf, json_string_value(text), json_string_length(text)) == 0);
    json_t *stop = json_object_get(j, "stop_reason");
    AG_ASSERT(json_is_string(stop) && strcmp(json_string_value(stop), "end_turn") == 0);
    json_t *usage = json_object_get(j, "usage");
    json_int_t in = json_integer_value(json_object_get(usage, "input_tokens"));
    json_int_t out = json_integer_value(json_object_get(usage, "output_tokens"));
    sink += text_buf.len + (uint64_t)in + (uint64_t)out;
    json_decref(j);
}

/* Request body: the prompt, its JS length, and the decoded text. */
static void jtok_prompt(const char *doc, size_t len)
{
    ag_jtok_t toks[32];
    int n = ag_jtok_parse(doc, len, toks, 32, NULL);
    AG_ASSERT(n > 0);
    int p = ag_jtok_object_get(doc, toks, 0, "prompt");
    AG_ASSERT(p >= 0 && toks[p].type == AG_JT_STRING);
    size_t units = ag_jtok_str_utf16_len(doc, &toks[p]);
    ag_buf_reset(&text_buf);
    AG_ASSERT(ag_jtok_str_decode(doc, &toks[p], &text_buf) == 0);
    sink += units + text_buf.len;
}

static void jansson_prompt(const char *doc, size_t len)
{
    json_t *j = json_loadb(doc, len, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
    AG_ASSERT(j != NULL);
    json_t *p = json_object_get(j, "prompt");
    AG_ASSERT(json_is_string(p));
    size_t units = ag_utf16_length(json_string_value(p), json_string_length(p));
    ag_buf_reset(&text_buf);
    AG_ASSERT(ag_buf_append(&text_buf, json_string_value(p), json_string_length(p)) == 0);
    sink += units + text_buf.len;
    json_decref(j);
}

/* The median over `rounds` rounds of ns per call; each round runs about 50 ms. */
static double measure(bench_fn fn, const char *doc, size_t len, int rounds)
{
    uint64_t iters = 1;
    for (;;) { /* calibrate */
        uint64_t t0 = now_ns();
        for (uint64_t i = 0; i < iters; i++)
            fn(doc, len);
        if (now_ns() - t0 > 50000000u || iters >= (1u << 30))
            break;
        iters *= 2;
    }
    double samples[64];
    if (rounds > 64)
        rounds = 64;
    for (int r = 0; r < rounds; r++) {
        uint64_t t0 = now_ns();
        for (uint64_t i = 0; i < iters; i++)
            fn(doc, len);
        samples[r] = (double)(now_ns() - t0) / (double)iters;
    }
    for (int a = 1; a < rounds; a++) /* insertion sort: a handful of samples */
        for (int b = a; b > 0 && samples[b - 1] > samples[b]; b--) {
            double t = samples[b];
            samples[b] = samples[b - 1];
            samples[b - 1] = t;
        }
    return samples[rounds / 2];
}

static void row(const char *name, const char *doc, size_t len, bench_fn jt, bench_fn js, int rounds)
{
    double a = measure(jt, doc, len, rounds);
    double b = measure(js, doc, len, rounds);
    printf("%-34s %6zu %12.1f %12.1f %8.1fx\n", name, len, a, b, b / a);
}

static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    size_t cap = 1 << 16;
    char *buf = malloc(cap);
    *len = buf ? fread(buf, 1, cap, f) : 0;
    fclose(f);
    return buf;
}

int main(int argc, char **argv)
{
    int rounds = argc > 1 ? (int)strtol(argv[1], NULL, 10) : 7;
    if (rounds < 1)
        rounds = 1;
    const char *msg = messages_doc;
    size_t msg_len = sizeof(messages_doc) - 1;
    char *file = NULL;
    if (argc > 2) {
        file = slurp(argv[2], &msg_len);
        if (!file) {
            perror(argv[2]);
            return 1;
        }
        msg = file;
    }
    ag_buf_init(&text_buf, 0);
    printf("jtok vs jansson %s, median of %d rounds, ns per document\n", JANSSON_VERSION, rounds);
    printf("%-34s %6s %12s %12s %9s\n", "document", "bytes", "jtok", "jansson", "speedup");
    row("prompt body: parse", prompt_doc, sizeof(prompt_doc) - 1, jtok_parse_only,
        jansson_parse_only, rounds);
    row("prompt body: parse + prompt", prompt_doc, sizeof(prompt_doc) - 1, jtok_prompt,
        jansson_prompt, rounds);
    row("messages answer: parse", msg, msg_len, jtok_parse_only, jansson_parse_only, rounds);
    row("messages answer: parse + fields", msg, msg_len, jtok_messages, jansson_messages, rounds);
    ag_buf_fini(&text_buf);
    free(file);
    return sink == 0;
}
