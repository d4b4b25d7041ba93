/* SPDX-License-Identifier: MIT
 *
 * cmd_stats.c: `aigate stats`: the usage log summed over a window (obs/stats.h),
 * as a table or as the JSON GET /stats answers. It finds the log's bucket as the
 * server does ([aigate] usage_log_binding, else "usage-logs", under the data
 * folder) and only reads it, so it runs with the server stopped or serving.
 */
#include "util/platform.h"

#include <string.h>

#include "cli/cli.h"
#include "config/config.h"
#include "obs/stats.h"
#include "store/objstore.h"
#include "util/buf.h"
#include "util/errors.h"
#include "util/log.h"

static const char stats_usage[] =
    "usage: aigate stats [--since 24h] [--by model|route|status|client|key|hour] [--json]\n"
    "Sums up the usage log over the last SINCE (a count and s, m, h or d; default 24h):\n"
    "requests, error rate (status >= 500), latency and CPU time p50/p99, upstream calls,\n"
    "cache hits, tokens and cost; with --by, one row per model, route, status, client, API\n"
    "key or hour. --json prints what the admin listener's GET /stats answers. Reads the\n"
    "log's bucket in the data folder, so it works with the server stopped.\n"
    "common options: --config FILE  --data-dir DIR  --json  --help\n";

#define DEFAULT_LOG_BUCKET "usage-logs" /* as the gateway's open_usage_log() */

int cmd_stats(int argc, char **argv)
{
    ag__cli_opt_t opts[] = {{"--since", true, NULL, false}, {"--by", true, NULL, false}};
    ag__cli_t c;
    int status;
    if (!ag__cli_parse(&c, stats_usage, argc, argv, opts, AG_ARRAY_LEN(opts), 0, 0, &status))
        return status;
    int64_t secs = 86400;
    if (opts[0].present && ag_stats_parse_window(opts[0].value, &secs) < 0)
        return ag__cli_usage_error(stats_usage,
                                   "--since takes a count and a unit, s, m, h or d (30s, 15m, "
                                   "1h, 7d), not '%s'",
                                   opts[0].value);
    ag_stats_by_t by = AG_STATS_BY_NONE;
    if (opts[1].present && (opts[1].value[0] == '\0' || ag_stats_parse_by(opts[1].value, &by) < 0))
        return ag__cli_usage_error(stats_usage,
                                   "--by takes model, route, status, client, key or hour, not "
                                   "'%s'",
                                   opts[1].value);
    if (c.data_dir_flag && c.data_dir_flag[0] == '\0')
        return ag__cli_fail("--data-dir is empty");

    /* The config as the server reads it: the data folder and the log's binding. */
    ag_config_t cfg;
    ag_config_defaults(&cfg);
    const char *path = ag_config_find(c.config);
    if (path && ag_config_load_file(&cfg, path, stderr) < 0) {
        ag_config_fini(&cfg);
        return ag__cli_fail("cannot use the configuration in %s", path);
    }
    const char *data_dir = c.data_dir_flag                   ? c.data_dir_flag
                           : cfg.data_dir && cfg.data_dir[0] ? cfg.data_dir
                                                             : AG_STORE_DEFAULT_DATA_DIR;
    const ag_config_binding_t *lb = ag_config_r2_binding(
        &cfg,
        cfg.usage_log_binding && cfg.usage_log_binding[0] ? cfg.usage_log_binding : "STORAGE");
    const char *bucket = lb ? lb->target : NULL;
    if (bucket == NULL)
        bucket = DEFAULT_LOG_BUCKET;

    int rc = 1;
    ag_objstore_t *store = NULL;
    ag_buf_t out;
    ag_buf_init(&out, 0);
    ag_stats_result_t r = {0};
    ag_objstore_s3_where_t where = {cfg.s3_endpoint, cfg.s3_region, cfg.s3_path_style};
    int err =
        ag_objstore_open_binding(data_dir, bucket, false, lb ? lb->backend : NULL, &where, &store);
    if (err == AG_OBJ_ENO_BUCKET) {
        store = NULL; /* nothing logged yet: zero counts */
    } else if (err < 0) {
        ag__cli_fail("cannot open the usage-log bucket %s/r2/%s: %s", data_dir, bucket,
                     ag_strerror(err));
        goto done;
    }
    int64_t now = ag_now_us() / 1000;
    ag_stats_query_t q = {.since_ms = now - secs * 1000, .until_ms = now, .by = by};
    err = ag_stats_collect(store, &q, &r);
    if (err < 0) {
        ag__cli_fail("cannot read the usage log in %s/r2/%s: %s", data_dir, bucket,
                     ag_strerror(err));
        goto done;
    }
    err = c.json ? ag_stats_json(&r, &out) : ag_stats_text(&r, &out);
    if (err < 0) {
        ag__cli_fail("out of memory");
        goto done;
    }
    if (c.json) {
        rc = ag__cli_print_json(&out);
    } else {
        fwrite(out.data, 1, out.len, stdout);
        rc = ag__cli_flush_stdout();
    }
done:
    ag_stats_result_fini(&r);
    ag_buf_fini(&out);
    ag_objstore_close(store);
    ag_config_fini(&cfg);
    ag__cli_fini(&c);
    return rc;
}
