/* SPDX-License-Identifier: MIT
 *
 * usage_log_spool.c: the usage log's local spool (usage_log_spool.h): a
 * directory bucket (objstore_fs.c, whose puts are durable and atomic) holding
 * batches the log's store refused, and their drain back into that store.
 */
#include "util/platform.h"

#include "store/usage_log_spool.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "util/errors.h"

#define SPOOL_CONTENT_TYPE "application/x-ndjson"

struct ag__usage_spool {
    ag_objstore_t *dir_store;
    char *dir;
    uint64_t max_bytes;
    uint64_t bytes, files; /* the tally: what this process last saw plus its own puts */
};

static uint64_t sub_sat(uint64_t a, uint64_t b)
{
    return a > b ? a - b : 0;
}

/* Counts what the folder holds now: every page of a listing. */
static int tally(ag__usage_spool_t *sp)
{
    uint64_t bytes = 0, files = 0;
    char *cursor = NULL;
    int rc;
    for (;;) {
        ag_obj_list_opts_t lo = {.cursor = cursor, .limit = 1000};
        ag_obj_list_result_t r;
        rc = ag_objstore_list(sp->dir_store, &lo, &r);
        free(cursor);
        cursor = NULL;
        if (rc < 0)
            return rc;
        for (size_t i = 0; i < r.count; i++)
            bytes += r.objects[i].size;
        files += r.count;
        if (r.truncated && r.cursor)
            cursor = strdup(r.cursor);
        bool more = r.truncated && r.cursor;
        ag_obj_list_result_free(&r);
        if (!more)
            break;
        if (cursor == NULL)
            return -ENOMEM;
    }
    sp->bytes = bytes;
    sp->files = files;
    return 0;
}

int ag__usage_spool_open(const char *dir, uint64_t max_bytes, ag__usage_spool_t **out)
{
    *out = NULL;
    if (dir == NULL || dir[0] == '\0' || max_bytes == 0)
        return AG_EINVALID;
    ag__usage_spool_t *sp = calloc(1, sizeof(*sp));
    if (sp == NULL)
        return -ENOMEM;
    int rc = -ENOMEM;
    sp->dir = strdup(dir);
    if (sp->dir == NULL)
        goto fail;
    sp->max_bytes = max_bytes;
    rc = ag_objstore_open_fs(dir, &sp->dir_store);
    if (rc < 0)
        goto fail;
    rc = tally(sp);
    if (rc < 0)
        goto fail;
    *out = sp;
    return 0;
fail:
    ag__usage_spool_free(sp);
    return rc;
}

void ag__usage_spool_free(ag__usage_spool_t *sp)
{
    if (sp == NULL)
        return;
    ag_objstore_close(sp->dir_store);
    free(sp->dir);
    free(sp);
}

int ag__usage_spool_put(ag__usage_spool_t *sp, const char *key, const void *data, size_t len,
                        size_t entries)
{
    if (sp->bytes + len > sp->max_bytes)
        return AG_EFULL;
    char count[24];
    snprintf(count, sizeof(count), "%zu", entries);
    ag_obj_meta_pair_t meta = {"entries", count};
    ag_obj_put_opts_t po = {.content_type = SPOOL_CONTENT_TYPE, .custom = &meta, .ncustom = 1};
    int rc = ag_objstore_put(sp->dir_store, key, strlen(key), data, len, &po, NULL);
    if (rc < 0)
        return rc;
    sp->bytes += len;
    sp->files++;
    return 0;
}

static uint64_t entries_of(const ag_obj_info_t *info)
{
    for (size_t i = 0; i < info->ncustom; i++) {
        if (strcmp(info->custom[i].name, "entries") == 0)
            return strtoull(info->custom[i].value, NULL, 10);
    }
    return 0;
}

/* One spooled batch into the store, then out of the spool. */
static int drain_one(ag__usage_spool_t *sp, ag_objstore_t *store, const ag_obj_info_t *listed,
                     const char *own, ag__usage_spool_drained_t *d)
{
    ag_obj_t obj;
    int rc = ag_objstore_get(sp->dir_store, listed->key, listed->key_len, &obj);
    if (rc == AG_ENOTFOUND) {
        /* another process sharing the folder drained it first */
        sp->bytes = sub_sat(sp->bytes, listed->size);
        sp->files = sub_sat(sp->files, 1);
        return 0;
    }
    if (rc < 0) {
        /* The spool's own fault, not the store's: the file stays (nothing is
         * deleted that was not delivered) and the drain goes on past it. */
        d->unreadable++;
        d->unreadable_rc = rc;
        return 0;
    }
    ag_obj_put_opts_t po = {
        .content_type = obj.info.content_type,
        .content_encoding = obj.info.content_encoding,
        .custom = obj.info.custom,
        .ncustom = obj.info.ncustom,
    };
    /* Same key, same bytes: a put that landed before its answer was lost is
     * overwritten by itself here, never duplicated. */
    rc = ag_objstore_put(store, obj.info.key, obj.info.key_len, obj.data, obj.len, &po, NULL);
    if (rc == 0)
        rc = ag_objstore_delete(sp->dir_store, obj.info.key, obj.info.key_len);
    if (rc == 0) {
        uint64_t n = entries_of(&obj.info);
        if (own && strstr(obj.info.key, own))
            d->own_entries += n;
        else
            d->other_entries += n;
        d->objects++;
        sp->bytes = sub_sat(sp->bytes, obj.len);
        sp->files = sub_sat(sp->files, 1);
    }
    ag_obj_free(&obj);
    return rc;
}

int ag__usage_spool_drain(ag__usage_spool_t *sp, ag_objstore_t *store, const char *own,
                          unsigned max_objects, ag__usage_spool_drained_t *d)
{
    memset(d, 0, sizeof(*d));
    if (max_objects == 0 || max_objects > 1000)
        max_objects = 1000;
    ag_obj_list_opts_t lo = {.limit = max_objects};
    ag_obj_list_result_t r;
    int rc = ag_objstore_list(sp->dir_store, &lo, &r);
    if (rc < 0) {
        d->more = sp->files > 0;
        return rc;
    }
    for (size_t i = 0; i < r.count && rc == 0; i++)
        rc = drain_one(sp, store, &r.objects[i], own, d);
    d->more = rc < 0 || r.truncated;
    if (!d->more && d->unreadable == 0) {
        /* The listing had it all and all of it is in the store now. */
        sp->bytes = 0;
        sp->files = 0;
    }
    ag_obj_list_result_free(&r);
    return rc;
}

uint64_t ag__usage_spool_bytes(const ag__usage_spool_t *sp)
{
    return sp->bytes;
}

uint64_t ag__usage_spool_files(const ag__usage_spool_t *sp)
{
    return sp->files;
}

uint64_t ag__usage_spool_max(const ag__usage_spool_t *sp)
{
    return sp->max_bytes;
}

const char *ag__usage_spool_dir(const ag__usage_spool_t *sp)
{
    return sp->dir;
}
