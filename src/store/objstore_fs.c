/* SPDX-License-Identifier: MIT
 *
 * objstore_fs.c: the object store front end (key and metadata rules, R2
 * errors) and its directory backend, plus the bucket folders under
 * <data_dir>/r2/. The front end moves to objstore.c with a second backend.
 */
#include "util/platform.h"

#include "store/objstore.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include "util/log.h"
#include "util/utf.h"

/* ---- front end ------------------------------------------------------------------------- */

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
    int rc = store->ops->list(store, &o, out);
    if (rc < 0)
        ag_obj_list_result_free(out);
    return rc;
}

void ag_objstore_close(ag_objstore_t *store)
{
    if (store != NULL)
        store->ops->close(store);
}

void ag_obj_info_free(ag_obj_info_t *info)
{
    if (info == NULL)
        return;
    free(info->key);
    free(info->custom);
    json_decref(info->_json);
    memset(info, 0, sizeof(*info));
}

void ag_obj_free(ag_obj_t *obj)
{
    if (obj == NULL)
        return;
    ag_obj_info_free(&obj->info);
    free(obj->data);
    obj->data = NULL;
    obj->len = 0;
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

void ag_obj_list_result_free(ag_obj_list_result_t *r)
{
    if (r == NULL)
        return;
    for (size_t i = 0; i < r->count; i++)
        ag_obj_info_free(&r->objects[i]);
    free(r->objects);
    for (size_t i = 0; i < r->nprefixes; i++)
        free(r->prefixes[i]);
    free(r->prefixes);
    free(r->cursor);
    memset(r, 0, sizeof(*r));
}

/* ---- directory backend ----------------------------------------------------------------- */

/*
 * Layout. An object lives in one file, <bucket>/<hh>/<sha256(key) in hex>, hh
 * being the hash's first byte: hashing supports every key (no file/folder
 * clash between "a" and "a/b", no name-length limit, nothing a key can do to
 * the path) and the 256 shards keep folders small. The file holds
 *   "AGOBJ01\n", u32 key length, u32 metadata length, u64 data length (LE),
 *   the key, the metadata JSON, the bytes.
 * so that data and metadata change together with one rename. Temp files start
 * with '.', in the shard folder, so that the rename stays on one filesystem;
 * listings remove those a crashed put left behind.
 */
#define OBJ_MAGIC "AGOBJ01\n"
#define OBJ_HDR 24
#define OBJ_MAX_META (1u << 20) /* far above what build_meta allows */
#define HASH_HEX 64

typedef struct fs_store {
    ag_objstore_t base;
    char *dir;
} fs_store_t;

static const char hexdigits[] = "0123456789abcdef";

static void hex_into(const unsigned char *p, size_t n, char *out)
{
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = hexdigits[p[i] >> 4];
        out[2 * i + 1] = hexdigits[p[i] & 15];
    }
    out[2 * n] = '\0';
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

static bool is_hex(const char *s, size_t n)
{
    if (strlen(s) != n)
        return false;
    for (size_t i = 0; i < n; i++) {
        if (hexval(s[i]) < 0)
            return false;
    }
    return true;
}

static void put_le(unsigned char *p, uint64_t v, int n)
{
    for (int i = 0; i < n; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static uint64_t get_le(const unsigned char *p, int n)
{
    uint64_t v = 0;
    for (int i = 0; i < n; i++)
        v |= (uint64_t)p[i] << (8 * i);
    return v;
}

static int map_errno(int err)
{
    if (err == ENOSPC || err == EDQUOT || err == EFBIG)
        return AG_OBJ_EDISK_FULL;
    return -err;
}

/* The shard folder and object file of key. */
static int obj_paths(const fs_store_t *fs, const char *key, size_t keylen, char shard[PATH_MAX],
                     char file[PATH_MAX])
{
    unsigned char md[32];
    unsigned int mdlen = sizeof(md);
    if (EVP_Digest(key, keylen, md, &mdlen, EVP_sha256(), NULL) != 1)
        return -ENOMEM;
    char hex[HASH_HEX + 1];
    hex_into(md, sizeof(md), hex);
    int n = snprintf(shard, PATH_MAX, "%s/%.2s", fs->dir, hex);
    if (n < 0 || n >= PATH_MAX)
        return -ENAMETOOLONG;
    n = snprintf(file, PATH_MAX, "%s/%s", shard, hex);
    if (n < 0 || n >= PATH_MAX)
        return -ENAMETOOLONG;
    return 0;
}

static int read_full(int fd, void *buf, size_t len, uint64_t off)
{
    char *p = buf;
    while (len > 0) {
        ssize_t n = pread(fd, p, len, (off_t)off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -errno;
        if (n == 0)
            return AG_OBJ_ECORRUPT; /* shorter than its header says */
        p += n;
        len -= (size_t)n;
        off += (uint64_t)n;
    }
    return 0;
}

static int write_full(int fd, const void *buf, size_t len)
{
    const char *p = buf;
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return map_errno(errno);
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

static int fsync_dir(const char *path)
{
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return map_errno(errno);
    int rc = fsync(fd) < 0 ? map_errno(errno) : 0;
    close(fd);
    return rc;
}

/* Fills info from the stored metadata object j, taking j. */
static int info_from_json(json_t *j, const char *key, size_t keylen, uint64_t size,
                          ag_obj_info_t *info)
{
    memset(info, 0, sizeof(*info));
    info->_json = j;
    info->key = malloc(keylen + 1);
    if (info->key == NULL)
        goto nomem;
    memcpy(info->key, key, keylen);
    info->key[keylen] = '\0';
    info->key_len = keylen;
    info->size = size;
    const char *etag = json_string_value(json_object_get(j, "etag"));
    const char *version = json_string_value(json_object_get(j, "version"));
    if (etag == NULL || strlen(etag) != 32 || version == NULL || strlen(version) != 32) {
        ag_obj_info_free(info);
        return AG_OBJ_ECORRUPT;
    }
    memcpy(info->etag, etag, 33);
    memcpy(info->version, version, 33);
    info->uploaded_ms = (int64_t)json_integer_value(json_object_get(j, "uploaded"));
    json_t *h = json_object_get(j, "http");
    info->cache_control = json_string_value(json_object_get(h, "cacheControl"));
    info->content_disposition = json_string_value(json_object_get(h, "contentDisposition"));
    info->content_encoding = json_string_value(json_object_get(h, "contentEncoding"));
    info->content_language = json_string_value(json_object_get(h, "contentLanguage"));
    info->content_type = json_string_value(json_object_get(h, "contentType"));
    json_t *c = json_object_get(j, "custom");
    size_t n = json_is_object(c) ? json_object_size(c) : 0;
    if (n > 0) {
        info->custom = calloc(n, sizeof(*info->custom));
        if (info->custom == NULL)
            goto nomem;
        const char *name;
        json_t *v;
        /* Stored with sorted keys, and jansson keeps the order it read. */
        json_object_foreach(c, name, v)
        {
            if (!json_is_string(v) || info->ncustom == n)
                continue;
            info->custom[info->ncustom].name = name;
            info->custom[info->ncustom].value = json_string_value(v);
            info->ncustom++;
        }
    }
    return 0;
nomem:
    ag_obj_info_free(info);
    return -ENOMEM;
}

/* Reads and checks the header of the open object file fd; a stored key other
 * than key (a hash collision) reads as missing. */
static int read_header(int fd, const char *key, size_t keylen, ag_obj_info_t *info,
                       uint64_t *data_off)
{
    struct stat st;
    unsigned char hdr[OBJ_HDR];
    if (fstat(fd, &st) < 0)
        return -errno;
    int rc = read_full(fd, hdr, sizeof(hdr), 0);
    if (rc < 0)
        return rc;
    if (memcmp(hdr, OBJ_MAGIC, 8) != 0)
        return AG_OBJ_ECORRUPT;
    uint64_t klen = get_le(hdr + 8, 4), mlen = get_le(hdr + 12, 4), dlen = get_le(hdr + 16, 8);
    if (klen > AG_OBJ_MAX_KEY_LEN || mlen > OBJ_MAX_META || dlen > (uint64_t)INT64_MAX ||
        OBJ_HDR + klen + mlen + dlen != (uint64_t)st.st_size)
        return AG_OBJ_ECORRUPT;
    char *buf = malloc(klen + mlen + 1);
    if (buf == NULL)
        return -ENOMEM;
    rc = read_full(fd, buf, klen + mlen, OBJ_HDR);
    if (rc == 0 && (klen != keylen || memcmp(buf, key, keylen) != 0))
        rc = AG_ENOTFOUND;
    if (rc == 0) {
        json_error_t jerr;
        json_t *j = json_loadb(buf + klen, mlen, 0, &jerr);
        rc = j != NULL ? info_from_json(j, key, keylen, dlen, info) : AG_OBJ_ECORRUPT;
    }
    free(buf);
    *data_off = OBJ_HDR + klen + mlen;
    return rc;
}

static int open_obj(fs_store_t *fs, const char *key, size_t keylen, int *fd)
{
    char shard[PATH_MAX], file[PATH_MAX];
    int rc = obj_paths(fs, key, keylen, shard, file);
    if (rc < 0)
        return rc;
    *fd = open(file, O_RDONLY | O_CLOEXEC);
    if (*fd < 0)
        return errno == ENOENT || errno == ENOTDIR ? AG_ENOTFOUND : -errno;
    return 0;
}

static int fs_head(ag_objstore_t *s, const char *key, size_t keylen, ag_obj_info_t *out)
{
    int fd;
    uint64_t off;
    int rc = open_obj((fs_store_t *)s, key, keylen, &fd);
    if (rc < 0)
        return rc;
    rc = read_header(fd, key, keylen, out, &off);
    close(fd);
    return rc;
}

static int fs_open_read(ag_objstore_t *s, const char *key, size_t keylen, ag_obj_info_t *info,
                        int *fdp, uint64_t *offset)
{
    int fd;
    int rc = open_obj((fs_store_t *)s, key, keylen, &fd);
    if (rc < 0)
        return rc;
    rc = read_header(fd, key, keylen, info, offset);
    if (rc < 0) {
        close(fd);
        return rc;
    }
    *fdp = fd;
    return 0;
}

static int fs_get(ag_objstore_t *s, const char *key, size_t keylen, ag_obj_t *out)
{
    int fd;
    uint64_t off;
    int rc = fs_open_read(s, key, keylen, &out->info, &fd, &off);
    if (rc < 0)
        return rc;
    if (out->info.size >= SIZE_MAX) {
        rc = -ENOMEM;
        goto fail;
    }
    out->data = malloc((size_t)out->info.size + 1);
    if (out->data == NULL) {
        rc = -ENOMEM;
        goto fail;
    }
    rc = read_full(fd, out->data, (size_t)out->info.size, off);
    if (rc < 0)
        goto fail;
    out->data[out->info.size] = '\0';
    out->len = (size_t)out->info.size;
    close(fd);
    return 0;
fail:
    close(fd);
    ag_obj_free(out);
    return rc;
}

static atomic_uint temp_seq;

static int fs_put(ag_objstore_t *s, const char *key, size_t keylen, const void *data, size_t len,
                  const char *meta_json, ag_obj_info_t *out)
{
    fs_store_t *fs = (fs_store_t *)s;
    char shard[PATH_MAX], file[PATH_MAX], tmp[PATH_MAX];
    unsigned char md5[16], rnd[16];
    unsigned int mdlen = sizeof(md5);
    char *metatext = NULL;
    int fd = -1;
    bool have_tmp = false;

    int rc = obj_paths(fs, key, keylen, shard, file);
    if (rc < 0)
        return rc;
    json_error_t jerr;
    json_t *j = json_loads(meta_json, 0, &jerr);
    if (j == NULL)
        return AG_OBJ_EMETADATA;
    char etag[33], version[33];
    rc = -ENOMEM;
    if (EVP_Digest(len ? data : "", len, md5, &mdlen, EVP_md5(), NULL) != 1 ||
        RAND_bytes(rnd, 16) != 1)
        goto fail;
    hex_into(md5, 16, etag);
    hex_into(rnd, 16, version);
    if (json_object_set_new(j, "etag", json_string(etag)) != 0 ||
        json_object_set_new(j, "version", json_string(version)) != 0 ||
        json_object_set_new(j, "uploaded", json_integer(ag_now_us() / 1000)) != 0)
        goto fail;
    metatext = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS);
    if (metatext == NULL)
        goto fail;
    size_t mlen = strlen(metatext);
    unsigned char hdr[OBJ_HDR];
    memcpy(hdr, OBJ_MAGIC, 8);
    put_le(hdr + 8, keylen, 4);
    put_le(hdr + 12, mlen, 4);
    put_le(hdr + 16, len, 8);

    if (mkdir(shard, 0700) == 0) {
        rc = fsync_dir(fs->dir); /* the new shard must survive a crash too */
        if (rc < 0)
            goto fail;
    } else if (errno != EEXIST) {
        rc = map_errno(errno);
        goto fail;
    }
    unsigned char trnd[4];
    if (RAND_bytes(trnd, sizeof(trnd)) != 1) {
        rc = -ENOMEM;
        goto fail;
    }
    int n = snprintf(tmp, sizeof(tmp), "%s/.tmp-%ld-%u-%02x%02x%02x%02x", shard, (long)getpid(),
                     atomic_fetch_add(&temp_seq, 1), trnd[0], trnd[1], trnd[2], trnd[3]);
    if (n < 0 || (size_t)n >= sizeof(tmp)) {
        rc = -ENAMETOOLONG;
        goto fail;
    }
    fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
        rc = map_errno(errno);
        goto fail;
    }
    have_tmp = true;
    rc = write_full(fd, hdr, sizeof(hdr));
    if (rc == 0)
        rc = write_full(fd, key, keylen);
    if (rc == 0)
        rc = write_full(fd, metatext, mlen);
    if (rc == 0)
        rc = write_full(fd, data, len);
    if (rc == 0 && fsync(fd) < 0)
        rc = map_errno(errno);
    if (rc < 0)
        goto fail;
    int cfd = fd;
    fd = -1;
    if (close(cfd) < 0) {
        rc = map_errno(errno);
        goto fail;
    }
    if (rename(tmp, file) < 0) {
        rc = map_errno(errno);
        goto fail;
    }
    have_tmp = false;
    rc = fsync_dir(shard);
    if (rc < 0)
        goto fail;
    free(metatext);
    if (out != NULL)
        return info_from_json(j, key, keylen, len, out);
    json_decref(j);
    return 0;
fail:
    if (fd >= 0)
        close(fd);
    if (have_tmp)
        unlink(tmp);
    free(metatext);
    json_decref(j);
    return rc;
}

static int fs_del(ag_objstore_t *s, const char *key, size_t keylen)
{
    fs_store_t *fs = (fs_store_t *)s;
    char shard[PATH_MAX], file[PATH_MAX];
    int rc = obj_paths(fs, key, keylen, shard, file);
    if (rc < 0)
        return rc;
    /* Only remove the file that holds this key, not a colliding one. */
    ag_obj_info_t info;
    rc = fs_head(s, key, keylen, &info);
    if (rc == AG_ENOTFOUND)
        return 0;
    if (rc < 0 && rc != AG_OBJ_ECORRUPT)
        return rc;
    ag_obj_info_free(&info);
    if (unlink(file) < 0)
        return errno == ENOENT ? 0 : -errno;
    return fsync_dir(shard);
}

/* A growable array of malloc'd strings. */
typedef struct strvec {
    char **v;
    size_t len, cap;
} strvec_t;

static int strvec_push(strvec_t *sv, char *s)
{
    if (s == NULL)
        return -ENOMEM;
    if (sv->len == sv->cap) {
        size_t ncap = sv->cap ? sv->cap * 2 : 64;
        char **nv = realloc(sv->v, ncap * sizeof(*nv));
        if (nv == NULL) {
            free(s);
            return -ENOMEM;
        }
        sv->v = nv;
        sv->cap = ncap;
    }
    sv->v[sv->len++] = s;
    return 0;
}

static void strvec_free(strvec_t *sv)
{
    for (size_t i = 0; i < sv->len; i++)
        free(sv->v[i]);
    free(sv->v);
    memset(sv, 0, sizeof(*sv));
}

static int cmp_cstr(const void *a, const void *b)
{
    /* strcmp compares as unsigned char: byte order, shorter first. */
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static bool starts_with(const char *s, size_t slen, const char *p, size_t plen)
{
    return slen >= plen && (plen == 0 || memcmp(s, p, plen) == 0);
}

/* Where a page starts: keys after `after`, also skipping the keys under it
 * when it was a rolled-up prefix, and after start_after. */
typedef struct list_pos {
    char after[AG_OBJ_MAX_KEY_LEN + 1];
    size_t afterlen;
    bool has_after, skip_under;
} list_pos_t;

static bool key_selected(const char *k, size_t klen, const ag_obj_list_opts_t *o,
                         const list_pos_t *pos)
{
    if (!starts_with(k, klen, o->prefix, o->prefix_len))
        return false;
    if (o->start_after_len > 0 && strcmp(k, o->start_after) <= 0)
        return false;
    if (pos->has_after) {
        if (strcmp(k, pos->after) <= 0)
            return false;
        if (pos->skip_under && starts_with(k, klen, pos->after, pos->afterlen))
            return false;
    }
    return true;
}

/* A put that crashed leaves its temp file behind. Every write of a running put
 * touches its mtime, so one untouched for an hour is a leftover. */
#define TEMP_STALE_S 3600

static void reap_temp(int dfd, const char *name)
{
    struct stat st;
    if (fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(st.st_mode) &&
        st.st_mtime < time(NULL) - TEMP_STALE_S)
        unlinkat(dfd, name, 0);
}

/* Reads the keys of every object in the bucket that the listing selects. */
static int scan_keys(fs_store_t *fs, const ag_obj_list_opts_t *o, const list_pos_t *pos,
                     strvec_t *keys)
{
    DIR *d = opendir(fs->dir);
    if (d == NULL)
        return -errno;
    int rc = 0;
    struct dirent *de;
    while (rc == 0 && (de = readdir(d)) != NULL) {
        if (!is_hex(de->d_name, 2))
            continue;
        int sfd = openat(dirfd(d), de->d_name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (sfd < 0)
            continue;
        DIR *sd = fdopendir(sfd);
        if (sd == NULL) {
            close(sfd);
            continue;
        }
        struct dirent *oe;
        while (rc == 0 && (oe = readdir(sd)) != NULL) {
            if (strncmp(oe->d_name, ".tmp-", 5) == 0) {
                reap_temp(sfd, oe->d_name);
                continue;
            }
            if (!is_hex(oe->d_name, HASH_HEX))
                continue;
            int fd = openat(sfd, oe->d_name, O_RDONLY | O_CLOEXEC);
            if (fd < 0)
                continue; /* deleted meanwhile */
            unsigned char buf[OBJ_HDR + AG_OBJ_MAX_KEY_LEN + 1];
            ssize_t n = pread(fd, buf, sizeof(buf) - 1, 0);
            close(fd);
            if (n < OBJ_HDR || memcmp(buf, OBJ_MAGIC, 8) != 0)
                continue;
            size_t klen = (size_t)get_le(buf + 8, 4);
            if (klen == 0 || klen > AG_OBJ_MAX_KEY_LEN || OBJ_HDR + klen > (size_t)n)
                continue;
            char *k = (char *)buf + OBJ_HDR;
            k[klen] = '\0';
            if (strlen(k) != klen || !key_selected(k, klen, o, pos))
                continue;
            rc = strvec_push(keys, strndup(k, klen));
        }
        closedir(sd);
    }
    closedir(d);
    return rc;
}

static int list_add_object(fs_store_t *fs, ag_obj_list_result_t *out, size_t *cap, const char *key)
{
    if (out->count == *cap) {
        size_t ncap = *cap ? *cap * 2 : 32;
        ag_obj_info_t *no = realloc(out->objects, ncap * sizeof(*no));
        if (no == NULL)
            return -ENOMEM;
        out->objects = no;
        *cap = ncap;
    }
    int rc = fs_head(&fs->base, key, strlen(key), &out->objects[out->count]);
    if (rc == 0)
        out->count++;
    return rc;
}

static int fs_list(ag_objstore_t *s, const ag_obj_list_opts_t *o, ag_obj_list_result_t *out)
{
    fs_store_t *fs = (fs_store_t *)s;
    list_pos_t pos = {0};
    if (o->cursor != NULL && o->cursor[0] != '\0') {
        /* Cursor: 'o' (last was an object) or 'p' (a rolled-up prefix), then
         * that key in hex. */
        const char *c = o->cursor;
        size_t n = strlen(c + 1);
        if ((c[0] != 'o' && c[0] != 'p') || n == 0 || n % 2 != 0 || n / 2 > AG_OBJ_MAX_KEY_LEN)
            return AG_OBJ_ECURSOR;
        for (size_t i = 0; i < n / 2; i++) {
            int hi = hexval(c[1 + 2 * i]), lo = hexval(c[2 + 2 * i]);
            if (hi < 0 || lo < 0 || (hi == 0 && lo == 0))
                return AG_OBJ_ECURSOR;
            pos.after[i] = (char)(hi << 4 | lo);
        }
        pos.after[n / 2] = '\0';
        pos.afterlen = n / 2;
        pos.has_after = true;
        pos.skip_under = c[0] == 'p';
    }
    ag_obj_list_opts_t oc = *o;
    char start_after[AG_OBJ_MAX_KEY_LEN + 1];
    if (oc.start_after_len > 0) {
        /* NUL-terminated copy for the comparisons; a key never holds NUL. */
        if (oc.start_after_len > AG_OBJ_MAX_KEY_LEN)
            oc.start_after_len = AG_OBJ_MAX_KEY_LEN;
        memcpy(start_after, oc.start_after, oc.start_after_len);
        start_after[oc.start_after_len] = '\0';
        oc.start_after = start_after;
    }
    strvec_t keys = {0};
    int rc = scan_keys(fs, &oc, &pos, &keys);
    if (rc < 0)
        goto done;
    if (keys.len > 1)
        qsort(keys.v, keys.len, sizeof(*keys.v), cmp_cstr);

    size_t cap = 0, pcap = 0, entries = 0;
    const char *last = NULL; /* the last entry given: an object key or a prefix */
    bool last_is_prefix = false;
    for (size_t i = 0; i < keys.len; i++) {
        const char *k = keys.v[i];
        size_t klen = strlen(k);
        if (last_is_prefix && starts_with(k, klen, last, strlen(last)))
            continue;
        const char *d = NULL;
        if (oc.delimiter_len > 0)
            d = memmem(k + oc.prefix_len, klen - oc.prefix_len, oc.delimiter, oc.delimiter_len);
        if (entries == oc.limit) {
            out->truncated = true;
            break;
        }
        if (d != NULL) {
            if (out->nprefixes == pcap) {
                size_t ncap = pcap ? pcap * 2 : 16;
                char **np = realloc(out->prefixes, ncap * sizeof(*np));
                if (np == NULL) {
                    rc = -ENOMEM;
                    goto done;
                }
                out->prefixes = np;
                pcap = ncap;
            }
            char *p = strndup(k, (size_t)(d - k) + oc.delimiter_len);
            if (p == NULL) {
                rc = -ENOMEM;
                goto done;
            }
            out->prefixes[out->nprefixes++] = p;
            last = p;
            last_is_prefix = true;
            entries++;
            continue;
        }
        rc = list_add_object(fs, out, &cap, k);
        if (rc == AG_ENOTFOUND || rc == AG_OBJ_ECORRUPT) {
            rc = 0; /* deleted since the scan, or unreadable: not listed */
            continue;
        }
        if (rc < 0)
            goto done;
        last = out->objects[out->count - 1].key;
        last_is_prefix = false;
        entries++;
    }
    if (out->truncated) {
        size_t n = strlen(last);
        out->cursor = malloc(2 * n + 2);
        if (out->cursor == NULL) {
            rc = -ENOMEM;
            goto done;
        }
        out->cursor[0] = last_is_prefix ? 'p' : 'o';
        hex_into((const unsigned char *)last, n, out->cursor + 1);
    }
done:
    strvec_free(&keys);
    return rc;
}

static void fs_close(ag_objstore_t *s)
{
    fs_store_t *fs = (fs_store_t *)s;
    free(fs->dir);
    free(fs);
}

static const ag_objstore_ops_t fs_ops = {
    .name = "fs",
    .put = fs_put,
    .get = fs_get,
    .head = fs_head,
    .open_read = fs_open_read,
    .del = fs_del,
    .list = fs_list,
    .close = fs_close,
};

/* mkdir -p: creates each missing component of path with `mode`. */
static int mkdir_p(const char *path, mode_t mode)
{
    char buf[PATH_MAX];
    size_t n = strlen(path);
    if (n == 0)
        return -ENOENT;
    if (n >= sizeof(buf))
        return -ENAMETOOLONG;
    memcpy(buf, path, n + 1);
    for (size_t i = 1; i <= n; i++) {
        if (buf[i] != '/' && buf[i] != '\0')
            continue;
        char saved = buf[i];
        buf[i] = '\0';
        if (mkdir(buf, mode) < 0 && errno != EEXIST)
            return -errno;
        buf[i] = saved;
    }
    struct stat st;
    if (stat(path, &st) < 0)
        return -errno;
    return S_ISDIR(st.st_mode) ? 0 : -ENOTDIR;
}

int ag_objstore_open_fs(const char *bucket_dir, ag_objstore_t **out)
{
    *out = NULL;
    if (bucket_dir == NULL)
        return AG_EINVALID;
    int rc = mkdir_p(bucket_dir, 0700);
    if (rc < 0)
        return rc;
    fs_store_t *fs = calloc(1, sizeof(*fs));
    if (fs == NULL)
        return -ENOMEM;
    fs->dir = strdup(bucket_dir);
    if (fs->dir == NULL) {
        free(fs);
        return -ENOMEM;
    }
    fs->base.ops = &fs_ops;
    *out = &fs->base;
    return 0;
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

int ag_objstore_open_bucket(const char *data_dir, const char *bucket, bool create,
                            ag_objstore_t **out)
{
    *out = NULL;
    char path[PATH_MAX];
    int rc = bucket_path(data_dir, bucket, path);
    if (rc < 0)
        return rc;
    if (!create) {
        struct stat st;
        if (stat(path, &st) < 0)
            return errno == ENOENT ? AG_OBJ_ENO_BUCKET : -errno;
        if (!S_ISDIR(st.st_mode))
            return AG_OBJ_ENO_BUCKET;
    }
    return ag_objstore_open_fs(path, out);
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
    rc = mkdir_p(parent, 0700);
    if (rc < 0)
        return rc;
    if (mkdir(path, 0700) < 0)
        return errno == EEXIST ? AG_EEXISTS : map_errno(errno);
    return 0;
}

/* Empties a shard folder of stale temp files; AG_OBJ_EBUCKET_NOT_EMPTY when it
 * holds anything else. */
static int shard_clear(int bfd, const char *name)
{
    int sfd = openat(bfd, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (sfd < 0)
        return -errno;
    DIR *sd = fdopendir(sfd);
    if (sd == NULL) {
        close(sfd);
        return -ENOMEM;
    }
    int rc = 0;
    struct dirent *de;
    while (rc == 0 && (de = readdir(sd)) != NULL) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        if (strncmp(de->d_name, ".tmp-", 5) == 0)
            unlinkat(sfd, de->d_name, 0); /* a crashed put's leftover */
        else
            rc = AG_OBJ_EBUCKET_NOT_EMPTY;
    }
    closedir(sd);
    if (rc == 0 && unlinkat(bfd, name, AT_REMOVEDIR) < 0)
        rc = errno == ENOTEMPTY || errno == EEXIST ? AG_OBJ_EBUCKET_NOT_EMPTY : -errno;
    return rc;
}

int ag_objstore_bucket_delete(const char *data_dir, const char *bucket)
{
    char path[PATH_MAX];
    int rc = bucket_path(data_dir, bucket, path);
    if (rc < 0)
        return rc;
    DIR *d = opendir(path);
    if (d == NULL)
        return errno == ENOENT ? AG_OBJ_ENO_BUCKET : -errno;
    struct dirent *de;
    while (rc == 0 && (de = readdir(d)) != NULL) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        rc = is_hex(de->d_name, 2) ? shard_clear(dirfd(d), de->d_name) : AG_OBJ_EBUCKET_NOT_EMPTY;
    }
    closedir(d);
    if (rc == 0 && rmdir(path) < 0)
        rc = errno == ENOTEMPTY || errno == EEXIST ? AG_OBJ_EBUCKET_NOT_EMPTY : -errno;
    return rc;
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
    DIR *d = opendir(path);
    if (d == NULL)
        return errno == ENOENT ? 0 : -errno;
    strvec_t sv = {0};
    int rc = 0;
    struct dirent *de;
    while (rc == 0 && (de = readdir(d)) != NULL) {
        struct stat st;
        if (!valid_bucket(de->d_name) || fstatat(dirfd(d), de->d_name, &st, 0) < 0 ||
            !S_ISDIR(st.st_mode))
            continue;
        rc = strvec_push(&sv, strdup(de->d_name));
    }
    closedir(d);
    if (rc < 0) {
        strvec_free(&sv);
        return rc;
    }
    if (sv.len > 1)
        qsort(sv.v, sv.len, sizeof(*sv.v), cmp_cstr);
    *names = sv.v;
    *count = sv.len;
    return 0;
}

void ag_objstore_bucket_list_free(char **names, size_t count)
{
    for (size_t i = 0; i < count; i++)
        free(names[i]);
    free(names);
}
