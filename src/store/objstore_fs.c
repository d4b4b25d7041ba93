/* SPDX-License-Identifier: MIT
 *
 * objstore_fs.c: the directory backend of the object store: one file per
 * object under its bucket's folder, atomic puts by rename, listings by a scan
 * of the folder, and the removal of an empty bucket. The front end
 * (objstore.c) has checked every argument before a call gets here.
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

#include "util/errors.h"
#include "util/fs.h"
#include "util/hex.h"
#include "util/le.h"
#include "util/log.h"

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

/* Shard folders and object files are named in lowercase hex. */
static bool is_hex(const char *s, size_t n)
{
    return strlen(s) == n && ag_hex_is_lower(s, n);
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
    ag_hex_encode(md, sizeof(md), hex);
    int n = snprintf(shard, PATH_MAX, "%s/%.2s", fs->dir, hex);
    if (n < 0 || n >= PATH_MAX)
        return -ENAMETOOLONG;
    n = snprintf(file, PATH_MAX, "%s/%s", shard, hex);
    if (n < 0 || n >= PATH_MAX)
        return -ENAMETOOLONG;
    return 0;
}

/* Reads exactly len bytes at off: a file shorter than its header says is corrupt. */
static int read_full(int fd, void *buf, size_t len, uint64_t off)
{
    ssize_t n = ag_fs_pread_all(fd, buf, len, off);
    if (n < 0)
        return (int)n;
    return (size_t)n == len ? 0 : AG_OBJ_ECORRUPT;
}

static int write_full(int fd, const void *buf, size_t len)
{
    int rc = ag_fs_write_all(fd, buf, len);
    return rc < 0 ? map_errno(-rc) : 0;
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
    uint64_t klen = ag_le_get(hdr + 8, 4), mlen = ag_le_get(hdr + 12, 4),
             dlen = ag_le_get(hdr + 16, 8);
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

/* Copies src to fd to its end, hashing it; *len: the bytes copied. */
static int copy_stream(int src, int fd, EVP_MD_CTX *md, uint64_t *len)
{
    enum { CHUNK = 256 * 1024 };
    char *buf = malloc(CHUNK);
    if (!buf)
        return -ENOMEM;
    int rc = 0;
    *len = 0;
    for (;;) {
        ssize_t r = read(src, buf, CHUNK);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            rc = -errno;
            break;
        }
        if (r == 0)
            break;
        *len += (uint64_t)r;
        if (*len > AG_OBJ_MAX_PUT_SIZE) {
            rc = AG_OBJ_ETOO_BIG;
            break;
        }
        if (EVP_DigestUpdate(md, buf, (size_t)r) != 1) {
            rc = -ENOMEM;
            break;
        }
        rc = write_full(fd, buf, (size_t)r);
        if (rc < 0)
            break;
    }
    free(buf);
    return rc;
}

/* A put of (data, len), or, when src >= 0, of what src holds to its end, in
 * chunks: the object never has to fit in memory. Its length and etag are
 * known only at the end, so the header and metadata are written with
 * placeholders of the same size and rewritten before the rename. */
static int put_from(ag_objstore_t *s, const char *key, size_t keylen, const void *data, size_t len,
                    int src, const char *meta_json, ag_obj_info_t *out)
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
    if (src >= 0)
        memset(md5, 0, sizeof(md5)); /* the placeholder: the same length as the etag */
    else if (EVP_Digest(len ? data : "", len, md5, &mdlen, EVP_md5(), NULL) != 1)
        goto fail;
    if (RAND_bytes(rnd, 16) != 1)
        goto fail;
    ag_hex_encode(md5, 16, etag);
    ag_hex_encode(rnd, 16, version);
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
    ag_le_put(hdr + 8, keylen, 4);
    ag_le_put(hdr + 12, mlen, 4);
    ag_le_put(hdr + 16, len, 8);

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
    if (rc == 0 && src < 0)
        rc = write_full(fd, data, len);
    if (rc == 0 && src >= 0) {
        EVP_MD_CTX *md = EVP_MD_CTX_new();
        uint64_t got = 0;
        rc = md && EVP_DigestInit_ex(md, EVP_md5(), NULL) == 1 ? copy_stream(src, fd, md, &got)
                                                               : -ENOMEM;
        if (rc == 0 && EVP_DigestFinal_ex(md, md5, &mdlen) != 1)
            rc = -ENOMEM;
        EVP_MD_CTX_free(md);
        len = (size_t)got;
        char *final = NULL;
        if (rc == 0) {
            ag_hex_encode(md5, 16, etag);
            if (json_object_set_new(j, "etag", json_string(etag)) != 0 ||
                !(final = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS)) || strlen(final) != mlen)
                rc = -ENOMEM;
        }
        unsigned char lenbuf[8];
        ag_le_put(lenbuf, len, 8);
        if (rc == 0 && (pwrite(fd, lenbuf, 8, 16) != 8 ||
                        pwrite(fd, final, mlen, (off_t)(OBJ_HDR + keylen)) != (ssize_t)mlen))
            rc = map_errno(errno);
        free(final);
    }
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

/* Whether a page lists key k: with the prefix, after start_after and after the
 * cursor's position, and not under the prefix the previous page ended with. */
static bool key_selected(const char *k, size_t klen, const ag_obj_list_opts_t *o,
                         const ag_obj_list_after_t *after)
{
    if (!starts_with(k, klen, o->prefix, o->prefix_len))
        return false;
    if (o->start_after_len > 0 && strcmp(k, o->start_after) <= 0)
        return false;
    if (after->key_len > 0) {
        if (strcmp(k, after->key) <= 0)
            return false;
        if (after->is_prefix && starts_with(k, klen, after->key, after->key_len))
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
static int scan_keys(fs_store_t *fs, const ag_obj_list_opts_t *o, const ag_obj_list_after_t *after,
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
            size_t klen = (size_t)ag_le_get(buf + 8, 4);
            if (klen == 0 || klen > AG_OBJ_MAX_KEY_LEN || OBJ_HDR + klen > (size_t)n)
                continue;
            char *k = (char *)buf + OBJ_HDR;
            k[klen] = '\0';
            if (strlen(k) != klen || !key_selected(k, klen, o, after))
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

static int fs_list(ag_objstore_t *s, const ag_obj_list_opts_t *o, const ag_obj_list_after_t *after,
                   ag_obj_list_result_t *out)
{
    fs_store_t *fs = (fs_store_t *)s;
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
    int rc = scan_keys(fs, &oc, after, &keys);
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

static int fs_put(ag_objstore_t *s, const char *key, size_t keylen, const void *data, size_t len,
                  const char *meta_json, ag_obj_info_t *out)
{
    return put_from(s, key, keylen, data, len, -1, meta_json, out);
}

static int fs_put_fd(ag_objstore_t *s, const char *key, size_t keylen, int src,
                     const char *meta_json, ag_obj_info_t *out)
{
    return put_from(s, key, keylen, NULL, 0, src, meta_json, out);
}

static const ag_objstore_ops_t fs_ops = {
    .put_fd = fs_put_fd,
    .name = "fs",
    .put = fs_put,
    .get = fs_get,
    .head = fs_head,
    .open_read = fs_open_read,
    .del = fs_del,
    .list = fs_list,
    .close = fs_close,
};

int ag_objstore_open_fs(const char *bucket_dir, ag_objstore_t **out)
{
    *out = NULL;
    if (bucket_dir == NULL)
        return AG_EINVALID;
    int rc = ag_fs_mkdir_p(bucket_dir, 0700);
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

/* ---- bucket removal -------------------------------------------------------------------- */

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

int ag__objstore_fs_remove_bucket(const char *path)
{
    int rc = 0;
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
