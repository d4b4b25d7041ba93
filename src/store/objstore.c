/* SPDX-License-Identifier: MIT
 *
 * objstore.c: the object store front end: R2's key, size and metadata rules,
 * list cursors, the bucket folders under <data_dir>/r2/, and the choice of
 * backend by name. The backends (objstore_fs.c) see only arguments that
 * passed these checks.
 */
#include "util/platform.h"

#include "store/objstore.h"

#include <errno.h>
#include <limits.h>
#include <string.h>
#include <sys/stat.h>

#include <jansson.h>

#include "util/buf.h"
#include "util/errors.h"
#include "util/fs.h"
#include "util/hex.h"
#include "util/utf.h"

/* ---- backends -------------------------------------------------------------------------- */

static int open_fs(const char *dir, const ag_objstore_options_t *opts, ag_objstore_t **out)
{
    (void)opts; /* the directory backend has no options */
    return ag_objstore_open_fs(dir, out);
}

/* The S3 backend's "dir" is the remote bucket's name. */
static int open_s3(const char *bucket, const ag_objstore_options_t *opts, ag_objstore_t **out)
{
    return ag__objstore_s3_open(bucket, opts->s3, out);
}

/* The first entry is the default backend. */
static const struct obj_backend {
    const char *name;
    int (*open)(const char *dir, const ag_objstore_options_t *opts, ag_objstore_t **out);
    int (*remove_bucket)(const char *dir);
} backends[] = {
    {AG_OBJ_BACKEND_FS, open_fs, ag__objstore_fs_remove_bucket},
    {AG_OBJ_BACKEND_S3, open_s3, NULL},
};

int ag_objstore_open(const char *bucket_dir, const ag_objstore_options_t *opts, ag_objstore_t **out)
{
    *out = NULL;
    const char *name = opts && opts->backend ? opts->backend : backends[0].name;
    for (size_t i = 0; i < AG_ARRAY_LEN(backends); i++) {
        if (strcmp(backends[i].name, name) == 0)
            return backends[i].open(bucket_dir, opts, out);
    }
    return AG_OBJ_EBACKEND;
}

/* ---- keys and metadata ---------------------------------------------------------------- */

static int check_key(const void *key, size_t keylen)
{
    const char *k = key;
    if (keylen == 0)
        return AG_OBJ_EKEY_EMPTY;
    if (keylen > AG_OBJ_MAX_KEY_LEN)
        return AG_OBJ_EKEY_TOO_LONG;
    if (key == NULL)
        return AG_EINVALID;
    if (memchr(k, '\0', keylen) != NULL)
        return AG_OBJ_EKEY_NUL;
    if (!ag_utf8_valid(k, keylen))
        return AG_OBJ_EKEY_UTF8;
    /* The directory backend never uses the key as a path, but a key that reads
     * as one could escape a bucket in a backend or tool that does (an S3 sync to
     * disk), so the rule holds for every backend. */
    if (k[0] == '/')
        return AG_OBJ_EKEY_PATH;
    for (size_t i = 0; i < keylen;) {
        const char *slash = memchr(k + i, '/', keylen - i);
        size_t seg = slash ? (size_t)(slash - (k + i)) : keylen - i;
        if ((seg == 1 && k[i] == '.') || (seg == 2 && k[i] == '.' && k[i + 1] == '.'))
            return AG_OBJ_EKEY_PATH;
        i += seg + 1;
    }
    return 0;
}

/* Metadata strings may end up in HTTP response headers: no control bytes. */
static bool text_ok(const char *s)
{
    size_t n = strlen(s);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if ((c < 0x20 && c != '\t') || c == 0x7f)
            return false;
    }
    return ag_utf8_valid(s, n);
}

static int add_custom(json_t *custom, const char *name, const char *value)
{
    if (name == NULL || value == NULL || name[0] == '\0' || !text_ok(name) || !text_ok(value))
        return AG_OBJ_EMETADATA;
    json_t *v = json_string(value);
    if (v == NULL || json_object_set_new(custom, name, v) != 0)
        return -ENOMEM;
    return 0;
}

/* Checks the put options and builds the text of {"http":{...},"custom":{...}}. */
static int build_meta(const ag_obj_put_opts_t *o, char **out)
{
    static const ag_obj_put_opts_t none;
    if (o == NULL)
        o = &none;
    const struct {
        const char *name;
        const char *value;
    } http[] = {
        {"cacheControl", o->cache_control},       {"contentDisposition", o->content_disposition},
        {"contentEncoding", o->content_encoding}, {"contentLanguage", o->content_language},
        {"contentType", o->content_type},
    };
    int rc = -ENOMEM;
    json_t *root = json_object(), *jh = json_object(), *jc = json_object(), *parsed = NULL;
    if (root == NULL || jh == NULL || jc == NULL)
        goto out;
    for (size_t i = 0; i < AG_ARRAY_LEN(http); i++) {
        if (http[i].value == NULL)
            continue;
        rc = AG_OBJ_EMETADATA;
        if (!text_ok(http[i].value))
            goto out;
        rc = -ENOMEM;
        if (json_object_set_new(jh, http[i].name, json_string(http[i].value)) != 0)
            goto out;
    }
    rc = AG_OBJ_EMETADATA;
    if (o->ncustom > 0 && o->custom_json != NULL)
        goto out;
    if (o->ncustom > 0 && o->custom == NULL)
        goto out;
    for (size_t i = 0; i < o->ncustom; i++) {
        rc = add_custom(jc, o->custom[i].name, o->custom[i].value);
        if (rc < 0)
            goto out;
    }
    if (o->custom_json != NULL) {
        json_error_t jerr;
        parsed = json_loadb(o->custom_json, o->custom_json_len, 0, &jerr);
        rc = AG_OBJ_EMETADATA;
        if (parsed == NULL || !json_is_object(parsed))
            goto out;
        const char *name;
        json_t *v;
        json_object_foreach(parsed, name, v)
        {
            rc = AG_OBJ_EMETADATA;
            if (!json_is_string(v))
                goto out;
            rc = add_custom(jc, name, json_string_value(v));
            if (rc < 0)
                goto out;
        }
    }
    size_t total = 0;
    const char *name;
    json_t *v;
    json_object_foreach(jc, name, v)
    {
        total += strlen(name) + json_string_length(v);
    }
    rc = AG_OBJ_EMETADATA_TOO_BIG;
    if (total > AG_OBJ_MAX_METADATA_LEN)
        goto out;
    rc = -ENOMEM;
    if ((json_object_size(jh) > 0 && json_object_set(root, "http", jh) != 0) ||
        (json_object_size(jc) > 0 && json_object_set(root, "custom", jc) != 0))
        goto out;
    *out = json_dumps(root, JSON_COMPACT | JSON_SORT_KEYS);
    rc = *out != NULL ? 0 : -ENOMEM;
out:
    json_decref(parsed);
    json_decref(jh);
    json_decref(jc);
    json_decref(root);
    return rc;
}

int ag_objstore_put(ag_objstore_t *store, const void *key, size_t keylen, const void *data,
                    size_t len, const ag_obj_put_opts_t *opts, ag_obj_info_t *out)
{
    if (out != NULL)
        memset(out, 0, sizeof(*out));
    int rc = check_key(key, keylen);
    if (rc < 0)
        return rc;
    if ((uint64_t)len > AG_OBJ_MAX_PUT_SIZE)
        return AG_OBJ_ETOO_BIG;
    if (data == NULL && len > 0)
        return AG_EINVALID;
    char *meta = NULL;
    rc = build_meta(opts, &meta);
    if (rc < 0)
        return rc;
    rc = store->ops->put(store, key, keylen, data, len, meta, out);
    free(meta);
    return rc;
}

int ag_objstore_put_fd(ag_objstore_t *store, const void *key, size_t keylen, int fd,
                       const ag_obj_put_opts_t *opts, ag_obj_info_t *out)
{
    if (!store->ops->put_fd) {
        /* One byte over the limit lets the put report the limit itself. */
        ag_buf_t data;
        ag_buf_init(&data, (size_t)AG_OBJ_MAX_PUT_SIZE + 1);
        int rc = ag_fs_read_fd(fd, &data);
        if (rc == AG_ETOOBIG)
            rc = AG_OBJ_ETOO_BIG;
        if (rc == 0)
            rc = ag_objstore_put(store, key, keylen, data.data ? data.data : "", data.len, opts,
                                 out);
        ag_buf_fini(&data);
        return rc;
    }
    if (out != NULL)
        memset(out, 0, sizeof(*out));
    int rc = check_key(key, keylen);
    if (rc < 0)
        return rc;
    if (fd < 0)
        return AG_EINVALID;
    char *meta = NULL;
    rc = build_meta(opts, &meta);
    if (rc < 0)
        return rc;
    rc = store->ops->put_fd(store, key, keylen, fd, meta, out);
    free(meta);
    return rc;
}

int ag_objstore_get(ag_objstore_t *store, const void *key, size_t keylen, ag_obj_t *out)
{
    memset(out, 0, sizeof(*out));
    int rc = check_key(key, keylen);
    return rc < 0 ? rc : store->ops->get(store, key, keylen, out);
}

int ag_objstore_head(ag_objstore_t *store, const void *key, size_t keylen, ag_obj_info_t *out)
{
    memset(out, 0, sizeof(*out));
    int rc = check_key(key, keylen);
    return rc < 0 ? rc : store->ops->head(store, key, keylen, out);
}

int ag_objstore_open_read(ag_objstore_t *store, const void *key, size_t keylen, ag_obj_info_t *info,
                          int *fd, uint64_t *offset)
{
    memset(info, 0, sizeof(*info));
    *fd = -1;
    *offset = 0;
    int rc = check_key(key, keylen);
    if (rc < 0)
        return rc;
    if (store->ops->open_read == NULL)
        return -ENOTSUP;
    return store->ops->open_read(store, key, keylen, info, fd, offset);
}

int ag_objstore_delete(ag_objstore_t *store, const void *key, size_t keylen)
{
    int rc = check_key(key, keylen);
    return rc < 0 ? rc : store->ops->del(store, key, keylen);
}

/* ---- cursors --------------------------------------------------------------------------- */

/* A cursor is 'o' (the page ended with an object) or 'p' (with a delimited
 * prefix), then that entry in lowercase hex. It names a position, not a
 * snapshot: paging never skips or repeats a key that exists throughout. */
static int cursor_decode(const char *c, ag_obj_list_after_t *after)
{
    memset(after, 0, sizeof(*after));
    if (c == NULL || c[0] == '\0')
        return 0;
    size_t n = strlen(c + 1);
    if ((c[0] != 'o' && c[0] != 'p') || n == 0 || !ag_hex_is_lower(c + 1, n))
        return AG_OBJ_ECURSOR;
    ssize_t got = ag_hex_decode(c + 1, n, after->key, AG_OBJ_MAX_KEY_LEN);
    /* A key never holds NUL, so neither does a position between keys. */
    if (got <= 0 || memchr(after->key, '\0', (size_t)got) != NULL)
        return AG_OBJ_ECURSOR;
    after->key[got] = '\0';
    after->key_len = (size_t)got;
    after->is_prefix = c[0] == 'p';
    return 0;
}

/* Sets r->cursor from the page's last entry: entries come in increasing key
 * order, so it is the later of the last object and the last prefix. */
static int cursor_encode(ag_obj_list_result_t *r)
{
    const char *obj = r->count ? r->objects[r->count - 1].key : NULL;
    const char *pre = r->nprefixes ? r->prefixes[r->nprefixes - 1] : NULL;
    bool is_prefix = pre != NULL && (obj == NULL || strcmp(pre, obj) > 0);
    const char *last = is_prefix ? pre : obj;
    if (last == NULL) {
        r->truncated = false; /* nothing to go on from: there is no next page */
        return 0;
    }
    size_t n = strlen(last);
    r->cursor = malloc(2 * n + 2);
    if (r->cursor == NULL)
        return -ENOMEM;
    r->cursor[0] = is_prefix ? 'p' : 'o';
    ag_hex_encode(last, n, r->cursor + 1);
    return 0;
}

int ag_objstore_list(ag_objstore_t *store, const ag_obj_list_opts_t *opts,
                     ag_obj_list_result_t *out)
{
    memset(out, 0, sizeof(*out));
    ag_obj_list_opts_t o = {0};
    if (opts != NULL)
        o = *opts;
    if (o.limit == 0)
        o.limit = AG_OBJ_LIST_MAX_LIMIT;
    if (o.limit > AG_OBJ_LIST_MAX_LIMIT)
        return AG_OBJ_ELIMIT;
    if (o.prefix == NULL)
        o.prefix_len = 0;
    if (o.delimiter == NULL || o.delimiter_len == 0) {
        o.delimiter = NULL;
        o.delimiter_len = 0;
    }
    if (o.start_after == NULL)
        o.start_after_len = 0;
    ag_obj_list_after_t after;
    int rc = cursor_decode(o.cursor, &after);
    if (rc < 0)
        return rc;
    o.cursor = NULL;
    rc = store->ops->list(store, &o, &after, out);
    if (rc == 0 && out->truncated)
        rc = cursor_encode(out);
    if (rc < 0)
        ag_obj_list_result_free(out);
    return rc;
}

void ag_objstore_close(ag_objstore_t *store)
{
    if (store != NULL)
        store->ops->close(store);
}

char *ag_obj_info_custom_json(const ag_obj_info_t *info)
{
    json_t *o = json_object();
    if (o == NULL)
        return NULL;
    for (size_t i = 0; i < info->ncustom; i++) {
        if (json_object_set_new(o, info->custom[i].name, json_string(info->custom[i].value)) != 0) {
            json_decref(o);
            return NULL;
        }
    }
    char *s = json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(o);
    return s;
}

/* ---- buckets --------------------------------------------------------------------------- */

static bool valid_bucket(const char *s)
{
    size_t n = strlen(s);
    if (n < 3 || n > 63 || s[0] == '-' || s[n - 1] == '-')
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-'))
            return false;
    }
    return true;
}

static int bucket_path(const char *data_dir, const char *bucket, char path[PATH_MAX])
{
    if (bucket == NULL || !valid_bucket(bucket))
        return AG_OBJ_EBUCKET_NAME;
    if (data_dir == NULL)
        data_dir = AG_STORE_DEFAULT_DATA_DIR;
    int n = snprintf(path, PATH_MAX, "%s/r2/%s", data_dir, bucket);
    return n < 0 || n >= PATH_MAX ? -ENAMETOOLONG : 0;
}

int ag_objstore_open_bucket_opts(const char *data_dir, const char *bucket, bool create,
                                 const ag_objstore_options_t *opts, ag_objstore_t **out)
{
    *out = NULL;
    char path[PATH_MAX];
    int rc = bucket_path(data_dir, bucket, path);
    if (rc < 0)
        return rc;
    if (opts && opts->backend && strcmp(opts->backend, AG_OBJ_BACKEND_S3) == 0)
        return ag_objstore_open(bucket, opts, out); /* remote: no folder, no I/O */
    if (!create) {
        struct stat st;
        if (stat(path, &st) < 0)
            return errno == ENOENT ? AG_OBJ_ENO_BUCKET : -errno;
        if (!S_ISDIR(st.st_mode))
            return AG_OBJ_ENO_BUCKET;
    }
    return ag_objstore_open(path, opts, out);
}

int ag_objstore_open_bucket(const char *data_dir, const char *bucket, bool create,
                            ag_objstore_t **out)
{
    return ag_objstore_open_bucket_opts(data_dir, bucket, create, NULL, out);
}

int ag_objstore_bucket_create(const char *data_dir, const char *bucket)
{
    char path[PATH_MAX];
    int rc = bucket_path(data_dir, bucket, path);
    if (rc < 0)
        return rc;
    char parent[PATH_MAX];
    memcpy(parent, path, sizeof(parent));
    *strrchr(parent, '/') = '\0';
    rc = ag_fs_mkdir_p(parent, 0700);
    if (rc < 0)
        return rc;
    if (mkdir(path, 0700) < 0) {
        if (errno == EEXIST)
            return AG_EEXISTS;
        return errno == ENOSPC || errno == EDQUOT || errno == EFBIG ? AG_OBJ_EDISK_FULL : -errno;
    }
    return 0;
}

int ag_objstore_bucket_delete(const char *data_dir, const char *bucket)
{
    char path[PATH_MAX];
    int rc = bucket_path(data_dir, bucket, path);
    if (rc < 0)
        return rc;
    return backends[0].remove_bucket(path);
}

int ag_objstore_bucket_list(const char *data_dir, char ***names, size_t *count)
{
    *names = NULL;
    *count = 0;
    if (data_dir == NULL)
        data_dir = AG_STORE_DEFAULT_DATA_DIR;
    char path[PATH_MAX];
    int n = snprintf(path, sizeof(path), "%s/r2", data_dir);
    if (n < 0 || (size_t)n >= sizeof(path))
        return -ENAMETOOLONG;
    return ag_fs_list_dirs(path, valid_bucket, names, count);
}

void ag_objstore_bucket_list_free(char **names, size_t count)
{
    ag_fs_names_free(names, count);
}
