/* SPDX-License-Identifier: MIT
 *
 * usage_log_days.c: the usage log's closed days: retention (day folders older
 * than N days are deleted) and gzip (a closed day's NDJSON objects become
 * .ndjson.gz objects), and how far back the log goes.
 */
#include "util/platform.h"

#include <errno.h>
#include <inttypes.h>
#include <string.h>
#include <time.h>

#include <zlib.h>

#include "store/usage_log.h"
#include "util/buf.h"
#include "util/errors.h"
#include "util/log.h"

#define DAY_MS 86400000LL
/* A day is closed an hour after it ended: a batch sealed at 23:59:59 is put
 * within the flush interval, or retried for a while when the store fails. */
#define CLOSE_MARGIN_MS 3600000LL
/* One gzip object holds at most this much compressed: memory stays bounded on
 * a day of millions of entries. */
#define GZ_PART_BYTES (32u << 20)
#define FOLDER_LEN 16 /* "logs/YYYY/MM/DD/" */

typedef struct strlist {
    char **v;
    size_t n, cap;
} strlist_t;

static int strlist_push(strlist_t *l, const char *s, size_t n)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 64;
        char **grown = realloc(l->v, cap * sizeof(*grown));
        if (!grown)
            return -ENOMEM;
        l->v = grown;
        l->cap = cap;
    }
    l->v[l->n] = strndup(s, n);
    if (!l->v[l->n])
        return -ENOMEM;
    l->n++;
    return 0;
}

static void strlist_free(strlist_t *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->v[i]);
    free(l->v);
    *l = (strlist_t){0};
}

/* Every key (or, with a delimiter, every delimited prefix) under prefix. */
static int list_all(ag_objstore_t *s, const char *prefix, bool prefixes, strlist_t *out)
{
    char *cursor = NULL;
    int rc = 0;
    do {
        ag_obj_list_opts_t lo = {
            .prefix = prefix,
            .prefix_len = strlen(prefix),
            .delimiter = prefixes ? "/" : NULL,
            .delimiter_len = prefixes ? 1 : 0,
            .cursor = cursor,
        };
        ag_obj_list_result_t page;
        rc = ag_objstore_list(s, &lo, &page);
        AG_FREE(&cursor);
        if (rc < 0)
            break;
        if (prefixes) {
            for (size_t i = 0; i < page.nprefixes && rc == 0; i++)
                rc = strlist_push(out, page.prefixes[i], strlen(page.prefixes[i]));
        } else {
            for (size_t i = 0; i < page.count && rc == 0; i++)
                rc = strlist_push(out, page.objects[i].key, page.objects[i].key_len);
        }
        if (rc == 0 && page.truncated && page.cursor && !(cursor = strdup(page.cursor)))
            rc = -ENOMEM;
        ag_obj_list_result_free(&page);
    } while (rc == 0 && cursor);
    free(cursor);
    return rc;
}

/* The day of a "logs/YYYY/MM/DD/" folder, in days since the epoch; -1 if it is not one. */
static int64_t folder_day(const char *f)
{
    struct tm tm = {0};
    if (strlen(f) != FOLDER_LEN || memcmp(f, "logs/", 5) != 0 || f[9] != '/' || f[12] != '/' ||
        f[15] != '/')
        return -1;
    for (int i = 5; i < 15; i++) {
        if (i != 9 && i != 12 && (f[i] < '0' || f[i] > '9'))
            return -1;
    }
    tm.tm_year = atoi(f + 5) - 1900;
    tm.tm_mon = atoi(f + 10) - 1;
    tm.tm_mday = atoi(f + 13);
    if (tm.tm_mon < 0 || tm.tm_mon > 11 || tm.tm_mday < 1 || tm.tm_mday > 31)
        return -1;
    return (int64_t)timegm(&tm) / 86400;
}

/* The day folders of the log, oldest first. */
static int day_folders(ag_objstore_t *s, strlist_t *days)
{
    strlist_t years = {0};
    int rc = list_all(s, "logs/", true, &years);
    for (size_t y = 0; y < years.n && rc == 0; y++) {
        strlist_t months = {0};
        rc = list_all(s, years.v[y], true, &months);
        for (size_t m = 0; m < months.n && rc == 0; m++)
            rc = list_all(s, months.v[m], true, days);
        strlist_free(&months);
    }
    strlist_free(&years);
    return rc;
}

static bool ends_with(const char *s, const char *tail)
{
    size_t n = strlen(s), t = strlen(tail);
    return n >= t && memcmp(s + n - t, tail, t) == 0;
}

static int delete_keys(ag_objstore_t *s, char *const *keys, size_t n, uint64_t *count)
{
    for (size_t i = 0; i < n; i++) {
        int rc = ag_objstore_delete(s, keys[i], strlen(keys[i]));
        if (rc < 0)
            return rc;
        (*count)++;
    }
    return 0;
}

/* Stores the part (keys[0..n) deflated into gz) and deletes its sources. The
 * name is the first source's first-ms (names sort by time, and `aigate stats`
 * skips by it) and a hash of the sources' names: two processes that compact
 * the same objects write the same object, not a duplicate. */
static int store_part(ag_objstore_t *s, char *const *keys, size_t n, const ag_buf_t *gz,
                      uint64_t entries, ag_usage_days_stats_t *st)
{
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < n; i++) {
        for (const char *p = keys[i]; *p; p++)
            h = (h ^ (unsigned char)*p) * 1099511628211ULL;
    }
    char key[96], count[24];
    snprintf(key, sizeof(key), "%.*s-gz-%016" PRIx64 ".ndjson.gz", FOLDER_LEN + 13, keys[0], h);
    snprintf(count, sizeof(count), "%" PRIu64, entries);
    ag_obj_meta_pair_t meta = {"entries", count};
    ag_obj_put_opts_t po = {.content_type = "application/x-ndjson",
                            .content_encoding = "gzip",
                            .custom = &meta,
                            .ncustom = 1};
    int rc = ag_objstore_put(s, key, strlen(key), gz->data ? gz->data : "", gz->len, &po, NULL);
    if (rc < 0)
        return rc;
    st->gz_objects++;
    return delete_keys(s, keys, n, &st->objects_deleted);
}

/* Deflates in[0..len) onto out; with Z_FINISH, to the end of the stream. */
static int deflate_into(z_stream *z, ag_buf_t *out, const void *in, size_t len, int flush)
{
    z->next_in = (Bytef *)(uintptr_t)in;
    z->avail_in = (uInt)len;
    for (;;) {
        if (ag_buf_reserve(out, 64 * 1024) < 0)
            return -ENOMEM;
        z->next_out = (Bytef *)out->data + out->len;
        z->avail_out = (uInt)(out->cap - out->len);
        size_t before = z->avail_out;
        int zrc = deflate(z, flush);
        if (zrc == Z_STREAM_ERROR)
            return -EIO;
        out->len += before - z->avail_out;
        if (flush == Z_FINISH ? zrc == Z_STREAM_END : z->avail_in == 0 && z->avail_out > 0)
            return 0;
    }
}

/* Gzips the .ndjson objects of one closed day folder. */
static int compress_day(ag_objstore_t *s, const char *folder, ag_usage_days_stats_t *st)
{
    strlist_t all = {0}, plain = {0};
    int rc = list_all(s, folder, false, &all);
    for (size_t i = 0; i < all.n && rc == 0; i++) {
        /* logs/YYYY/MM/DD/<13-digit first-ms>-...ndjson: the writer's names */
        const char *k = all.v[i];
        if (ends_with(k, ".ndjson") && strlen(k) > FOLDER_LEN + 14 && k[FOLDER_LEN + 13] == '-')
            rc = strlist_push(&plain, k, strlen(k));
    }
    strlist_free(&all);
    if (rc < 0 || plain.n == 0) {
        strlist_free(&plain);
        return rc;
    }
    ag_buf_t gz;
    ag_buf_init(&gz, 0);
    z_stream z;
    size_t first = 0;
    uint64_t entries = 0;
    bool open = false;
    for (size_t i = 0; i < plain.n && rc == 0; i++) {
        if (!open) {
            memset(&z, 0, sizeof(z));
            if (deflateInit2(&z, 6, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK) {
                rc = -ENOMEM;
                break;
            }
            open = true;
            first = i;
            entries = 0;
            ag_buf_reset(&gz);
        }
        ag_obj_t obj;
        rc = ag_objstore_get(s, plain.v[i], strlen(plain.v[i]), &obj);
        if (rc == AG_ENOTFOUND) {
            rc = 0; /* another process compacted it meanwhile */
            continue;
        }
        if (rc < 0)
            break;
        for (size_t b = 0; b < obj.len; b++)
            entries += obj.data[b] == '\n';
        rc = deflate_into(&z, &gz, obj.data, obj.len, Z_NO_FLUSH);
        ag_obj_free(&obj);
        bool last = i + 1 == plain.n;
        if (rc == 0 && (last || gz.len >= GZ_PART_BYTES)) {
            rc = deflate_into(&z, &gz, NULL, 0, Z_FINISH);
            deflateEnd(&z);
            open = false;
            if (rc == 0)
                rc = store_part(s, plain.v + first, i + 1 - first, &gz, entries, st);
        }
    }
    if (open)
        deflateEnd(&z);
    if (rc == 0)
        st->days_compressed++;
    ag_buf_fini(&gz);
    strlist_free(&plain);
    return rc;
}

int ag_usage_log_maintain(ag_objstore_t *store, int64_t now_ms, unsigned retention_days,
                          bool compress, ag_usage_days_stats_t *st)
{
    ag_usage_days_stats_t local = {0};
    if (!st)
        st = &local;
    *st = (ag_usage_days_stats_t){0};
    if (!store)
        return AG_EINVALID;
    int64_t today = now_ms / DAY_MS;
    strlist_t days = {0};
    int rc = day_folders(store, &days);
    for (size_t i = 0; i < days.n && rc == 0; i++) {
        int64_t day = folder_day(days.v[i]);
        if (day < 0)
            continue;
        if (retention_days > 0 && day <= today - (int64_t)retention_days) {
            strlist_t keys = {0};
            rc = list_all(store, days.v[i], false, &keys);
            if (rc == 0)
                rc = delete_keys(store, keys.v, keys.n, &st->objects_deleted);
            strlist_free(&keys);
            if (rc == 0)
                st->days_deleted++;
        } else if (compress && (day + 1) * DAY_MS + CLOSE_MARGIN_MS <= now_ms) {
            rc = compress_day(store, days.v[i], st);
        }
    }
    strlist_free(&days);
    return rc;
}

int ag_usage_log_oldest_day(ag_objstore_t *store, char out[11])
{
    out[0] = '\0';
    if (!store)
        return 0;
    strlist_t days = {0};
    int rc = day_folders(store, &days);
    for (size_t i = 0; i < days.n && rc == 0; i++) {
        if (folder_day(days.v[i]) >= 0) {
            snprintf(out, 11, "%.4s-%.2s-%.2s", days.v[i] + 5, days.v[i] + 10, days.v[i] + 13);
            break;
        }
    }
    strlist_free(&days);
    return rc;
}
