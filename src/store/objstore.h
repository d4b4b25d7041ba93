/* SPDX-License-Identifier: MIT
 *
 * objstore.h: the object store (the R2 equivalent) behind one interface, one
 * bucket per [[r2_buckets]] binding. The front end (objstore.c) checks keys,
 * sizes and metadata, owns the list cursors, names the bucket folders under
 * <data_dir>/r2/ and picks the backend by name; the directory backend
 * (objstore_fs.c) keeps each object in one file in its bucket's folder; the
 * S3 backend (objstore_s3.c) keeps it in a bucket of an S3-compatible store
 * (R2, S3, MinIO), signed with SigV4 (sigv4.c).
 */
#ifndef AG_STORE_OBJSTORE_H
#define AG_STORE_OBJSTORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util/errors.h"

#ifndef AG_STORE_DEFAULT_DATA_DIR
#define AG_STORE_DEFAULT_DATA_DIR "./.aigate" /* also in kv.h */
#endif

/* R2 limits. */
#define AG_OBJ_MAX_KEY_LEN 1024
#define AG_OBJ_MAX_METADATA_LEN 8192 /* custom metadata: names + values, in bytes */
#define AG_OBJ_MAX_PUT_SIZE (((uint64_t)5 << 30) - ((uint64_t)5 << 20)) /* single-part upload */
#define AG_OBJ_LIST_MAX_LIMIT 1000

/* The errors of this module, AG_OBJ_E*, are declared in util/errors.def with
 * their messages and HTTP statuses: use ag_strerror() and ag_err_http_status(). */

typedef struct ag_objstore ag_objstore_t;

/** A custom metadata entry: NUL-terminated UTF-8 name and value. */
typedef struct ag_obj_meta_pair {
    const char *name;
    const char *value;
} ag_obj_meta_pair_t;

/** What a put stores besides the bytes. Everything is borrowed for the call;
 *  NULL fields are unset. */
typedef struct ag_obj_put_opts {
    /* R2 httpMetadata, given back on head/get; no control characters. */
    const char *content_type;
    const char *content_encoding;
    const char *content_disposition;
    const char *content_language;
    const char *cache_control;
    /* Custom metadata, either as pairs (a later duplicate name wins) or as the
     * text of a JSON object of string values; not both. */
    const ag_obj_meta_pair_t *custom;
    size_t ncustom;
    const char *custom_json;
    size_t custom_json_len;
} ag_obj_put_opts_t;

/** An object's description, as R2's head() gives it. All pointers are owned
 *  by the struct and released by ag_obj_info_free(). */
typedef struct ag_obj_info {
    char *key; /* NUL-terminated (keys never hold NUL) */
    size_t key_len;
    uint64_t size;
    char etag[33];       /* lowercase hex MD5 of the bytes, as R2 gives for single-part uploads */
    char version[33];    /* random hex id of this upload */
    int64_t uploaded_ms; /* epoch ms of the put */
    /* httpMetadata; NULL when unset. */
    const char *content_type;
    const char *content_encoding;
    const char *content_disposition;
    const char *content_language;
    const char *cache_control;
    ag_obj_meta_pair_t *custom; /* customMetadata, sorted by name */
    size_t ncustom;
    /* private: the parsed metadata the strings above point into */
    void *_json;
} ag_obj_info_t;

void ag_obj_info_free(ag_obj_info_t *info);

/** customMetadata as compact JSON object text (sorted keys), malloc'd; NULL
 *  on out-of-memory. */
char *ag_obj_info_custom_json(const ag_obj_info_t *info);

/** An object read whole: description plus bytes (followed by a NUL that len
 *  does not count). Released by ag_obj_free(). */
typedef struct ag_obj {
    ag_obj_info_t info;
    char *data;
    size_t len;
} ag_obj_t;

void ag_obj_free(ag_obj_t *obj);

typedef struct ag_obj_list_opts {
    const char *prefix; /* keys starting with it; NULL for all */
    size_t prefix_len;
    /* With a delimiter, keys that contain it after the prefix are rolled up
     * into one delimited prefix (prefix + text up to and including the
     * delimiter), as R2 and S3 do. NULL for none. */
    const char *delimiter;
    size_t delimiter_len;
    const char *cursor;      /* from the previous page, or NULL */
    const char *start_after; /* only keys after this one; NULL for none */
    size_t start_after_len;
    unsigned limit; /* objects + delimited prefixes per page: 0 means 1000, max 1000 */
} ag_obj_list_opts_t;

/** A page of a listing, owned by the struct (ag_obj_list_result_free()). */
typedef struct ag_obj_list_result {
    ag_obj_info_t *objects; /* sorted by key bytes */
    size_t count;
    char **prefixes; /* delimitedPrefixes, sorted, NUL-terminated */
    size_t nprefixes;
    bool truncated; /* more entries follow: pass cursor to get them */
    char *cursor;   /* NULL unless truncated */
} ag_obj_list_result_t;

void ag_obj_list_result_free(ag_obj_list_result_t *r);

/** The name of the directory backend, the default. */
#define AG_OBJ_BACKEND_FS "fs"
/** The name of the S3-compatible backend. */
#define AG_OBJ_BACKEND_S3 "s3"

/** Where an S3-compatible store is ([aigate.s3] and the binding's bucket_name).
 *  Copied by the open. */
typedef struct ag_objstore_s3_options {
    /** "http://127.0.0.1:9000", "https://ACCOUNT.r2.cloudflarestorage.com",
     *  "https://s3.eu-west-1.amazonaws.com"; a path after the host is refused. */
    const char *endpoint;
    const char *region; /* NULL: "us-east-1" ("auto" for R2) */
    bool path_style;    /* endpoint/bucket/key; false: bucket.endpoint-host/key */
    const char *access_key;
    const char *secret_key;
    unsigned timeout_ms;         /* each request, whole; 0: 30000 */
    unsigned connect_timeout_ms; /* 0: 5000 */
} ag_objstore_s3_options_t;

/** Options of an open; a zeroed struct (or NULL) means the defaults. The
 *  directory backend has no options of its own. */
typedef struct ag_objstore_options {
    /** The backend by name: NULL means AG_OBJ_BACKEND_FS; AG_OBJ_BACKEND_S3
     *  needs `s3`. Any other name fails the open with AG_OBJ_EBACKEND.
     *  Borrowed for the open. */
    const char *backend;
    /** For AG_OBJ_BACKEND_S3; the bucket is the one the open names. */
    const ag_objstore_s3_options_t *s3;
} ag_objstore_options_t;

/** What the last failed call of this thread on an S3 store said, for people:
 *  "PUT logs/x.ndjson: HTTP 403 SignatureDoesNotMatch: The request signature
 *  ..." or "GET k: Could not connect to server"; "" when none. Never holds a
 *  secret. Valid until the thread's next object-store call. */
const char *ag_objstore_last_error(void);

/** Opens the bucket kept at the folder bucket_dir with the backend
 *  opts->backend (opts may be NULL; read only during the call). For the S3
 *  backend bucket_dir is the remote bucket's name.
 *  @return 0 and *out; AG_OBJ_EBACKEND; or what the backend's open returns. */
int ag_objstore_open(const char *bucket_dir, const ag_objstore_options_t *opts,
                     ag_objstore_t **out);

/** Opens the bucket kept in the folder bucket_dir with the directory backend
 *  (the folder is created, with parents, mode 0700, when missing). The handle
 *  holds only the path: every call below is thread-safe and several processes
 *  may use one bucket at once. @return 0 and *out, or a negative errno. */
int ag_objstore_open_fs(const char *bucket_dir, ag_objstore_t **out);

/** Opens the bucket of an [[r2_buckets]] binding: <data_dir>/r2/<bucket>/
 *  (data_dir NULL means AG_STORE_DEFAULT_DATA_DIR, "./.aigate"), with the
 *  default backend. Without `create` a missing bucket is AG_OBJ_ENO_BUCKET;
 *  AG_OBJ_EBUCKET_NAME for a name R2 would refuse. With the S3 backend
 *  (ag_objstore_open_bucket_opts()) the open does no I/O and `create` is
 *  ignored: a missing remote bucket is AG_OBJ_ENO_BUCKET from the first call. */
int ag_objstore_open_bucket(const char *data_dir, const char *bucket, bool create,
                            ag_objstore_t **out);

/** The same with the backend (and its options) of `opts`, which may be NULL. */
int ag_objstore_open_bucket_opts(const char *data_dir, const char *bucket, bool create,
                                 const ag_objstore_options_t *opts, ag_objstore_t **out);

/** Where [aigate.s3] says the S3-compatible store is. */
typedef struct ag_objstore_s3_where {
    const char *endpoint;
    const char *region;
    bool path_style;
} ag_objstore_s3_where_t;

/** Opens the bucket of a binding by its backend's name: NULL or "fs" as
 *  ag_objstore_open_bucket(); "s3" at `where` with the keys of the secrets
 *  S3_ACCESS_KEY_ID and S3_SECRET_ACCESS_KEY (resolved with data_dir's
 *  secrets file), no I/O. @return as the open; AG_OBJ_ES3_CONFIG without the
 *  endpoint or a key (ag_objstore_last_error() says which). */
int ag_objstore_open_binding(const char *data_dir, const char *bucket, bool create,
                             const char *backend, const ag_objstore_s3_where_t *where,
                             ag_objstore_t **out);

/** `aigate r2 bucket create`: AG_EEXISTS when it exists. */
int ag_objstore_bucket_create(const char *data_dir, const char *bucket);

/** Deletes an empty bucket (of the default backend): AG_OBJ_EBUCKET_NOT_EMPTY
 *  while it holds objects, AG_OBJ_ENO_BUCKET when missing. */
int ag_objstore_bucket_delete(const char *data_dir, const char *bucket);

/** The buckets under <data_dir>/r2/, sorted; free with
 *  ag_objstore_bucket_list_free(). No r2/ folder gives 0 buckets. */
int ag_objstore_bucket_list(const char *data_dir, char ***names, size_t *count);
void ag_objstore_bucket_list_free(char **names, size_t count);

/** Closes the handle; NULL is a no-op. */
void ag_objstore_close(ag_objstore_t *store);

/* Object calls. Keys are UTF-8, 1-1024 bytes, without NUL, not starting with
 * '/', with no "." or ".." segment between slashes (else AG_OBJ_EKEY_*). They
 * block on disk I/O (a put fsyncs), so an event loop should run them on a
 * worker thread for anything but small objects. */

/** Stores the object atomically: readers see the old object or the new one,
 *  never a mix; when several writers race, the last to finish wins. out may be
 *  NULL, else it receives the new object's description.
 *  @return 0; AG_OBJ_E* for a bad key/metadata; AG_OBJ_EDISK_FULL when the
 *  disk, quota or file-size limit refuses the write (nothing is left behind). */
int ag_objstore_put(ag_objstore_t *store, const void *key, size_t keylen, const void *data,
                    size_t len, const ag_obj_put_opts_t *opts, ag_obj_info_t *out);

/** The same with the bytes read from fd to its end (a file, a pipe), in
 *  chunks: memory stays a few hundred KiB whatever the object's size (with
 *  backends that have put_fd; others read it whole first). The fd is read,
 *  not closed. @return as ag_objstore_put(); AG_OBJ_ETOO_BIG past the limit;
 *  -errno when fd cannot be read. */
int ag_objstore_put_fd(ag_objstore_t *store, const void *key, size_t keylen, int fd,
                       const ag_obj_put_opts_t *opts, ag_obj_info_t *out);

/** Reads the whole object. @return 0 and *out; AG_ENOTFOUND when missing. */
int ag_objstore_get(ag_objstore_t *store, const void *key, size_t keylen, ag_obj_t *out);

/** Reads only the description. @return 0 and *out; AG_ENOTFOUND. */
int ag_objstore_head(ag_objstore_t *store, const void *key, size_t keylen, ag_obj_info_t *out);

/** For streaming large objects (sendfile): fills *info and returns in *fd a
 *  descriptor (the caller closes it) whose bytes [*offset, *offset +
 *  info->size) are the object, a stable snapshot even if it is overwritten
 *  meanwhile. -ENOTSUP for backends without files. */
int ag_objstore_open_read(ag_objstore_t *store, const void *key, size_t keylen, ag_obj_info_t *info,
                          int *fd, uint64_t *offset);

/** Deletes the object. @return 0, also when it did not exist (as R2). */
int ag_objstore_delete(ag_objstore_t *store, const void *key, size_t keylen);

/** Lists objects (with the metadata of each) and delimited prefixes in key
 *  byte order. opts may be NULL. The directory backend reads the header of
 *  every object in the bucket per call: fine for the buckets a self-hosted
 *  gateway holds, O(n) per page for huge ones. It also deletes temp files that
 *  crashed puts left (untouched for an hour).
 *  @return 0 and *out (free with ag_obj_list_result_free()). */
int ag_objstore_list(ag_objstore_t *store, const ag_obj_list_opts_t *opts,
                     ag_obj_list_result_t *out);

/* Backend interface: a backend embeds ag_objstore_t first in its handle. The
 * public functions check keys, sizes, list limits and metadata before calling
 * it, and own the list cursor: they decode it into an ag_obj_list_after_t
 * before a list and encode the last entry of a truncated page after it. */

/** Where a page starts, decoded from the caller's cursor. */
typedef struct ag_obj_list_after {
    char key[AG_OBJ_MAX_KEY_LEN + 1]; /* NUL-terminated; "" (key_len 0): no cursor */
    size_t key_len;
    /* The previous page ended with this delimited prefix: skip the keys under it. */
    bool is_prefix;
} ag_obj_list_after_t;

typedef struct ag_objstore_ops {
    const char *name;
    /* meta_json: the text of {"http":{...},"custom":{...}} (members optional),
     * checked and sorted; the backend adds etag, version and upload time. */
    int (*put)(ag_objstore_t *s, const char *key, size_t keylen, const void *data, size_t len,
               const char *meta_json, ag_obj_info_t *out);
    int (*get)(ag_objstore_t *s, const char *key, size_t keylen, ag_obj_t *out);
    int (*head)(ag_objstore_t *s, const char *key, size_t keylen, ag_obj_info_t *out);
    int (*open_read)(ag_objstore_t *s, const char *key, size_t keylen, ag_obj_info_t *info, int *fd,
                     uint64_t *offset); /* may be NULL */
    int (*del)(ag_objstore_t *s, const char *key, size_t keylen);
    /* opts is never NULL, opts->limit is 1..1000 and opts->cursor is NULL: the
     * page starts after `after`. The backend fills objects, prefixes (both in
     * key order, entries strictly increasing) and truncated; the front end makes
     * the cursor from the last entry. */
    int (*list)(ag_objstore_t *s, const ag_obj_list_opts_t *opts, const ag_obj_list_after_t *after,
                ag_obj_list_result_t *out);
    void (*close)(ag_objstore_t *s);
    /* Optional (NULL: the front end reads fd whole and calls put): the put of
     * what fd holds to its end, in chunks. */
    int (*put_fd)(ag_objstore_t *s, const char *key, size_t keylen, int fd, const char *meta_json,
                  ag_obj_info_t *out);
} ag_objstore_ops_t;

struct ag_objstore {
    const ag_objstore_ops_t *ops;
};

/** For the front end: removes the directory backend's bucket folder when it
 *  holds no object (a crashed put's temp files do not count).
 *  @return 0; AG_OBJ_EBUCKET_NOT_EMPTY; AG_OBJ_ENO_BUCKET when missing; -errno. */
int ag__objstore_fs_remove_bucket(const char *bucket_dir);

/** The S3 backend's open (objstore_s3.c): bucket is the remote bucket.
 *  @return 0; AG_OBJ_ES3_CONFIG for a missing endpoint or key; AG_EINVALID
 *  for an endpoint that is not http(s)://host[:port]; -ENOMEM. */
int ag__objstore_s3_open(const char *bucket, const ag_objstore_s3_options_t *o,
                         ag_objstore_t **out);

/** Sets what ag_objstore_last_error() gives on this thread (printf-style). */
void ag__objstore_set_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/** ListObjectsV2's answer (objstore_s3_xml.c): the XML of one page into `out`
 *  (objects with key, size, etag and upload time; delimited prefixes; truncated)
 *  and the continuation token in *next (malloc'd; NULL when absent). Strict:
 *  anything but well-formed XML of that shape is AG_EPROTO.
 *  @return 0, AG_EPROTO or -ENOMEM (out is then empty). */
int ag__objstore_s3_parse_list(const char *xml, size_t len, ag_obj_list_result_t *out, char **next);

/** An ETag as S3 gives it (in a header or a listing: "\"hex\"", or hex-N for a
 *  multipart upload) into etag[33]: the lowercase hex digits, NUL-terminated. */
void ag__objstore_s3_etag(char etag[33], const char *s, size_t n);

/** The <Code> and <Message> of an S3 <Error> document, each copied
 *  NUL-terminated and truncated into code[ncode] and msg[nmsg] ("" when
 *  absent or not an <Error>). */
void ag__objstore_s3_parse_error(const char *xml, size_t len, char *code, size_t ncode, char *msg,
                                 size_t nmsg);

#endif
