/* SPDX-License-Identifier: MIT
 *
 * stats_gen.c: writes synthetic usage logs for bench/stats_bench.sh, through the
 * real usage-log writer (store/usage_log.c) into <data-dir>/r2/usage-logs/, so
 * names, folders, field order and escaping are what a server writes. Unlike
 * the load tools in bench/ it links project code, on purpose: it must write
 * exactly the format `aigate stats` reads.
 *
 *   stats_gen --data-dir DIR [--entries N] [--rate R] [--end-ms MS] [--object-lines L]
 *
 * N entries (default 8640000: a day at 100 req/s), evenly spaced at R per
 * second (default 100), the last one at --end-ms (default now - 1 s), in
 * objects of about L lines (default 10000).
 */
#include "util/platform.h"

#include <inttypes.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#include "store/objstore.h"
#include "store/usage_log.h"
#include "util/errors.h"

static uint64_t rng = 0x243F6A8885A308D3ULL;

static uint64_t next(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

static uint32_t pick(uint32_t n)
{
    return (uint32_t)(next() % n);
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static const ag_price_t prices[] = {
    {"claude-haiku-4-5", 1.0, 5.0, 0, 0},  {"claude-sonnet-4-5", 3.0, 15.0, 0, 0},
    {"claude-opus-4-1", 15.0, 75.0, 0, 0}, {"claude-sonnet-4", 3.0, 15.0, 0, 0},
    {"claude-3-5-haiku", 0.8, 4.0, 0, 0},
};
static const char *const models[] = {"claude-haiku-4-5", "claude-sonnet-4-5",
                                     "claude-opus-4-1",  "claude-sonnet-4",
                                     "claude-3-5-haiku", "claude-haiku-4-5-20251001"};
static const char *const routes[] = {"/api/generate", "/v1/messages", "scheduled"};

int main(int argc, char **argv)
{
    const char *data_dir = NULL;
    uint64_t n = 8640000, rate = 100, lines = 10000;
    int64_t end_ms = now_ms() - 1000;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--data-dir") == 0)
            data_dir = argv[i + 1];
        else if (strcmp(argv[i], "--entries") == 0)
            n = strtoull(argv[i + 1], NULL, 10);
        else if (strcmp(argv[i], "--rate") == 0)
            rate = strtoull(argv[i + 1], NULL, 10);
        else if (strcmp(argv[i], "--end-ms") == 0)
            end_ms = strtoll(argv[i + 1], NULL, 10);
        else if (strcmp(argv[i], "--object-lines") == 0)
            lines = strtoull(argv[i + 1], NULL, 10);
    }
    if (data_dir == NULL || n == 0 || rate == 0 || lines == 0) {
        fprintf(stderr, "usage: stats_gen --data-dir DIR [--entries N] [--rate R] [--end-ms MS] "
                        "[--object-lines L]\n");
        return 2;
    }
    ag_objstore_t *bucket;
    int rc = ag_objstore_open_bucket(data_dir, "usage-logs", true, &bucket);
    if (rc < 0) {
        fprintf(stderr, "stats_gen: cannot open the bucket: %s\n", ag_strerror(rc));
        return 1;
    }
    ag_usage_log_options_t o = {
        .store = bucket,
        .queue_capacity = 1 << 17,
        .flush_bytes = (size_t)lines * 400, /* lines run ~400 bytes */
        .flush_interval_ms = 600000,        /* objects close by size, not age */
        .max_retained_bytes = (size_t)256 << 20,
        .queue_full_policy = AG_USAGE_BLOCK,
        .block_timeout_ms = 600000,
        .prices = prices,
        .nprices = AG_ARRAY_LEN(prices),
        .instance_id = "bench",
    };
    ag_usage_log_t *log;
    rc = ag_usage_log_open(&o, &log);
    if (rc < 0) {
        fprintf(stderr, "stats_gen: cannot open the usage log: %s\n", ag_strerror(rc));
        return 1;
    }
    int64_t start_ms = end_ms - (int64_t)((n - 1) * 1000 / rate);
    for (uint64_t i = 0; i < n; i++) {
        ag_usage_entry_t e = {0};
        e.timestamp_ms = start_ms + (int64_t)(i * 1000 / rate);
        uint32_t m = pick(100);
        const char *model = models[m < 55   ? 0
                                   : m < 80 ? 1
                                   : m < 88 ? 2
                                   : m < 94 ? 3
                                   : m < 98 ? 4
                                            : 5];
        ag_usage_entry_set_str(e.model, sizeof(e.model), model, strlen(model));
        char client[32];
        int cl = snprintf(client, sizeof(client), "10.%u.%u.%u", pick(4), pick(16), pick(16));
        ag_usage_entry_set_str(e.client, sizeof(e.client), client, (size_t)cl);
        char rid[40];
        int rl = snprintf(rid, sizeof(rid), "%08" PRIx64 "-%04x-%04x-%012" PRIx64,
                          next() & 0xffffffffu, (unsigned)pick(65536), (unsigned)pick(65536),
                          (uint64_t)(next() & 0xffffffffffffULL));
        ag_usage_entry_set_str(e.request_id, sizeof(e.request_id), rid, (size_t)rl);
        uint32_t st = pick(1000);
        e.status = st < 960 ? 200 : st < 980 ? 500 : st < 990 ? 502 : 504;
        e.cached = e.status == 200 && pick(100) < 20;
        e.stream = pick(100) < 30;
        if (e.stream)
            ag_usage_entry_set_str(e.outcome, sizeof(e.outcome), "ok", 2);
        e.prompt_length = 20 + pick(4000);
        e.output_length = e.cached ? 300 : 50 + pick(8000);
        if (!e.cached) {
            e.input_tokens = 10 + pick(3000);
            e.output_tokens = 5 + pick(2000);
            e.cache_read_input_tokens = pick(4) == 0 ? pick(5000) : 0;
        }
        /* a long tail: most answers in ~0.3-3 s, some much slower; hits in ~1 ms */
        e.latency_ms =
            e.cached ? 1 + pick(3) : 300 + pick(2700) + (pick(100) == 0 ? pick(60000) : 0);
        e.cpu_us = e.cached ? 40 + pick(60) : 150 + pick(900);
        e.attempts = e.cached ? 0 : 1 + (pick(20) == 0);
        const char *route = routes[pick(100) < 70 ? 0 : pick(50) == 0 ? 2 : 1];
        ag_usage_entry_set_str(e.route, sizeof(e.route), route, strlen(route));
        uint32_t k = pick(25);
        if (k < 20) {
            char key[16];
            int kl = snprintf(key, sizeof(key), "team-%02u", k);
            ag_usage_entry_set_str(e.key, sizeof(e.key), key, (size_t)kl);
        }
        rc = ag_usage_log_append(log, &e);
        if (rc < 0) {
            fprintf(stderr, "stats_gen: append: %s\n", ag_strerror(rc));
            break;
        }
    }
    ag_usage_log_close(log);
    ag_usage_log_stats_t st;
    ag_usage_log_stats(log, &st);
    ag_usage_log_free(log);
    ag_objstore_close(bucket);
    printf("entries %" PRIu64 ", objects %" PRIu64 ", first %" PRId64 ", last %" PRId64 "\n",
           st.written, st.flushes, start_ms, end_ms);
    return rc < 0 || st.written != n ? 1 : 0;
}
