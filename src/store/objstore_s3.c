/* SPDX-License-Identifier: MIT
 *
 * objstore_s3.c: the S3-compatible object-store backend (R2, S3, MinIO):
 * PutObject, GetObject, HeadObject, ListObjectsV2 and DeleteObject over
 * libcurl easy handles, each request signed by sigv4.c. Calls block (the
 * callers run them off event loops: the usage log's writer, the tasks' thread
 * pool, the CLI); no state is shared between calls but the read-only handle.
 */
#include "util/platform.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "store/objstore.h"
#include "store/sigv4.h"
#include "util/buf.h"
#include "util/errors.h"
#include "util/fs.h"
#include "util/hex.h"

#define DEFAULT_TIMEOUT_MS 30000
#define DEFAULT_CONNECT_MS 5000
#define MAX_DOC_BYTES (16u << 20) /* a listing or an error document */
#define MAX_HEADERS_BYTES (64u << 10)
#define MAX_EXTRA_HEADERS 48
#define CHUNK (256u << 10)

typedef struct s3_store {
    ag_objstore_t base;
    char *bucket;
    char *origin; /* "http://host:port" of the requests, bucket included when virtual-host */
    char *host;   /* the Host header, the same host and port */
    char *region, *access, *secret;
    bool path_style;
    long timeout_ms, connect_ms;
} s3_store_t;

/* ---- errors for people ------------------------------------------------------------------ */

static _Thread_local char last_error[512];

const char *ag_objstore_last_error(void)
{
    return last_error;
}

void ag__objstore_set_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(last_error, sizeof(last_error), fmt, ap);
    va_end(ap);
}

/* ---- one request ------------------------------------------------------------------------ */

typedef struct s3_req {
    const char *method;
    const char *key; /* NULL: the bucket itself */
    size_t keylen;
    ag_sigv4_kv_t query[8];
    size_t nquery;
    ag_sigv4_kv_t headers[MAX_EXTRA_HEADERS];
    size_t nheaders;
    /* the body: memory, or a file read from body_off for body_len bytes */
    const void *body;
    int body_fd;
    uint64_t body_off, body_len, body_pos;
    char payload_sha256[65];
    /* the answer */
    long status;
    ag_buf_t resp;     /* the body, unless out_fd >= 0 (then only an error body) */
    int out_fd;        /* GET into a file */
    ag_buf_t resp_hdr; /* "name: value\n", names lowercased */
    int write_err;
} s3_req_t;

static void req_init(s3_req_t *r, const char *method, const char *key, size_t keylen)
{
    memset(r, 0, sizeof(*r));
    r->method = method;
    r->key = key;
    r->keylen = keylen;
    r->body_fd = -1;
    r->out_fd = -1;
    ag_buf_init(&r->resp, MAX_DOC_BYTES);
    ag_buf_init(&r->resp_hdr, MAX_HEADERS_BYTES);
    ag_sigv4_sha256_hex("", 0, r->payload_sha256);
}

static void req_fini(s3_req_t *r)
{
    ag_buf_fini(&r->resp);
    ag_buf_fini(&r->resp_hdr);
}

static size_t on_body(char *p, size_t size, size_t n, void *ctx)
{
    s3_req_t *r = ctx;
    size_t len = size * n;
    if (r->out_fd >= 0 && r->status >= 200 && r->status < 300) {
        int rc = ag_fs_write_all(r->out_fd, p, len);
        if (rc < 0) {
            r->write_err = rc;
            return 0;
        }
        return len;
    }
    if (ag_buf_append(&r->resp, p, len) < 0) {
        r->write_err = AG_OBJ_ETOO_BIG;
        return 0;
    }
    return len;
}

static size_t on_header(char *p, size_t size, size_t n, void *ctx)
{
    s3_req_t *r = ctx;
    size_t len = size * n;
    if (len >= 5 && memcmp(p, "HTTP/", 5) == 0) {
        /* a new answer (after a 100 Continue): only its headers count */
        ag_buf_reset(&r->resp_hdr);
        const char *sp = memchr(p, ' ', len);
        r->status = sp ? strtol(sp + 1, NULL, 10) : 0;
        return len;
    }
    const char *colon = memchr(p, ':', len);
    if (colon == NULL)
        return len;
    size_t nlen = (size_t)(colon - p);
    const char *v = colon + 1, *end = p + len;
    while (v < end && (*v == ' ' || *v == '\t'))
        v++;
    while (end > v && (end[-1] == '\r' || end[-1] == '\n' || end[-1] == ' ' || end[-1] == '\t'))
        end--;
    if (ag_buf_reserve(&r->resp_hdr, nlen + (size_t)(end - v) + 3) < 0)
        return 0;
    for (size_t i = 0; i < nlen; i++) {
        char c = p[i];
        r->resp_hdr.data[r->resp_hdr.len++] = (char)(c >= 'A' && c <= 'Z' ? c + 32 : c);
    }
    ag_buf_append(&r->resp_hdr, ":", 1);
    ag_buf_append(&r->resp_hdr, v, (size_t)(end - v));
    ag_buf_append(&r->resp_hdr, "\n", 1);
    return len;
}

static size_t on_read(char *dst, size_t size, size_t n, void *ctx)
{
    s3_req_t *r = ctx;
    uint64_t left = r->body_len - r->body_pos;
    size_t want = size * n;
    if ((uint64_t)want > left)
        want = (size_t)left;
    if (want == 0)
        return 0;
    if (r->body_fd >= 0) {
        ssize_t got = ag_fs_pread_all(r->body_fd, dst, want, r->body_off + r->body_pos);
        if (got != (ssize_t)want)
            return CURL_READFUNC_ABORT; /* the file shrank under us */
    } else {
        memcpy(dst, (const char *)r->body + r->body_pos, want);
    }
    r->body_pos += want;
    return want;
}

/* The value of response header `name` (lowercase), NUL-terminated into out. */
static bool resp_header(const s3_req_t *r, const char *name, char *out, size_t cap)
{
    size_t nlen = strlen(name);
    const char *p = r->resp_hdr.data, *end = p + r->resp_hdr.len;
    while (p && p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        if (nl == NULL)
            break;
        if ((size_t)(nl - p) > nlen && memcmp(p, name, nlen) == 0 && p[nlen] == ':') {
            size_t vlen = (size_t)(nl - p) - nlen - 1;
            if (vlen >= cap)
                vlen = cap - 1;
            memcpy(out, p + nlen + 1, vlen);
            out[vlen] = '\0';
            return true;
        }
        p = nl + 1;
    }
    return false;
}

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static void curl_init_once(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
}

static const char *what_of(const s3_req_t *r)
{
    return r->key ? r->key : "(bucket)";
}

/* Maps an answer that is not 2xx to our errors, with the store's own words. */
static int map_status(s3_store_t *s, s3_req_t *r)
{
    char code[96], msg[320];
    ag__objstore_s3_parse_error(r->resp.data ? r->resp.data : "", r->resp.len, code, sizeof(code),
                                msg, sizeof(msg));
    ag__objstore_set_error("S3 %s %s/%.*s: HTTP %ld%s%s%s%s", r->method, s->bucket,
                           r->key ? (int)r->keylen : 0, r->key ? r->key : "", r->status,
                           code[0] ? " " : "", code, msg[0] ? ": " : "", msg);
    if (strcmp(code, "NoSuchBucket") == 0)
        return AG_OBJ_ENO_BUCKET;
    if (r->status == 404)
        return r->key ? AG_ENOTFOUND : AG_OBJ_ENO_BUCKET;
    if (r->status == 401 || r->status == 403)
        return AG_OBJ_EDENIED;
    if (strcmp(code, "EntityTooLarge") == 0)
        return AG_OBJ_ETOO_BIG;
    return AG_OBJ_ESTORE;
}

static int perform(s3_store_t *s, s3_req_t *r)
{
    last_error[0] = '\0';
    pthread_once(&curl_once, curl_init_once);
    char date[17];
    ag_sigv4_amz_date(time(NULL), date);
    ag_buf_t path, target, auth, url, line;
    ag_buf_init(&path, 0);
    ag_buf_init(&target, 0);
    ag_buf_init(&auth, 0);
    ag_buf_init(&url, 0);
    ag_buf_init(&line, 0);
    struct curl_slist *hl = NULL;
    CURL *c = NULL;
    int rc = -ENOMEM;
    if (ag_buf_append(&path, "/", 1) < 0 ||
        (s->path_style && ag_buf_append_cstr(&path, s->bucket) < 0) ||
        (s->path_style && r->key && ag_buf_append(&path, "/", 1) < 0) ||
        (r->key && ag_buf_append(&path, r->key, r->keylen) < 0) || !ag_buf_cstr(&path))
        goto out;
    ag_sigv4_request_t sr = {
        .method = r->method,
        .host = s->host,
        .path = path.data,
        .query = r->query,
        .nquery = r->nquery,
        .headers = r->headers,
        .nheaders = r->nheaders,
        .payload_sha256 = r->payload_sha256,
        .amz_date = date,
        .region = s->region,
        .access_key = s->access,
        .secret_key = s->secret,
    };
    rc = ag_sigv4_sign(&sr, &target, &auth, NULL);
    if (rc < 0) {
        ag__objstore_set_error("S3 %s %s: cannot sign the request: %s", r->method, what_of(r),
                               ag_strerror(rc));
        goto out;
    }
    rc = -ENOMEM;
    if (ag_buf_printf(&url, "%s", s->origin) < 0 ||
        ag_buf_append(&url, target.data, target.len) < 0 || !ag_buf_cstr(&url))
        goto out;
#define ADD_HEADER(...)                                                                            \
    do {                                                                                           \
        ag_buf_reset(&line);                                                                       \
        if (ag_buf_printf(&line, __VA_ARGS__) < 0 || !ag_buf_cstr(&line))                          \
            goto out;                                                                              \
        struct curl_slist *n_ = curl_slist_append(hl, line.data);                                  \
        if (n_ == NULL)                                                                            \
            goto out;                                                                              \
        hl = n_;                                                                                   \
    } while (0)
    ADD_HEADER("Host: %s", s->host);
    ADD_HEADER("x-amz-date: %s", date);
    ADD_HEADER("x-amz-content-sha256: %s", r->payload_sha256);
    ADD_HEADER("Authorization: %s", ag_buf_cstr(&auth));
    for (size_t i = 0; i < r->nheaders; i++)
        ADD_HEADER("%s: %s", r->headers[i].name, r->headers[i].value);
    ADD_HEADER("Expect:"); /* no 100-continue round trip */
    ADD_HEADER("Accept:");
#undef ADD_HEADER
    c = curl_easy_init();
    if (c == NULL)
        goto out;
    curl_easy_setopt(c, CURLOPT_URL, url.data);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, s->timeout_ms);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, s->connect_ms);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hl);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, r);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, r);
    if (strcmp(r->method, "PUT") == 0) {
        curl_easy_setopt(c, CURLOPT_UPLOAD, 1L);
        curl_easy_setopt(c, CURLOPT_READFUNCTION, on_read);
        curl_easy_setopt(c, CURLOPT_READDATA, r);
        curl_easy_setopt(c, CURLOPT_INFILESIZE_LARGE, (curl_off_t)r->body_len);
    } else if (strcmp(r->method, "HEAD") == 0) {
        curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
    } else if (strcmp(r->method, "GET") != 0) {
        curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, r->method);
    }
    CURLcode cc = curl_easy_perform(c);
    if (r->write_err < 0) {
        rc = r->write_err;
        ag__objstore_set_error("S3 %s %s: %s", r->method, what_of(r), ag_strerror(rc));
    } else if (cc != CURLE_OK) {
        rc = cc == CURLE_OUT_OF_MEMORY ? -ENOMEM : AG_OBJ_EUNREACHABLE;
        /* the URL holds no secret: the signature goes in a header */
        ag__objstore_set_error("S3 %s %s: %s (%s)", r->method, what_of(r), curl_easy_strerror(cc),
                               s->origin);
    } else {
        long st = 0;
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &st);
        r->status = st;
        rc = st >= 200 && st < 300 ? 0 : map_status(s, r);
    }
out:
    if (c)
        curl_easy_cleanup(c);
    curl_slist_free_all(hl);
    /* the Authorization value is not a secret, but it is no one's business either */
    if (auth.data)
        OPENSSL_cleanse(auth.data, auth.len);
    ag_buf_fini(&path);
    ag_buf_fini(&target);
    ag_buf_fini(&auth);
    ag_buf_fini(&url);
    ag_buf_fini(&line);
    if (rc == -ENOMEM && last_error[0] == '\0')
        ag__objstore_set_error("S3 %s %s: out of memory", r->method, what_of(r));
    return rc;
}

/* ---- metadata ---------------------------------------------------------------------------- */

static const struct {
    const char *json;   /* in meta_json's "http" */
    const char *header; /* as sent and answered, lowercase */
} http_fields[] = {
    {"cacheControl", "cache-control"},       {"contentDisposition", "content-disposition"},
    {"contentEncoding", "content-encoding"}, {"contentLanguage", "content-language"},
    {"contentType", "content-type"},
};

/* S3 keeps metadata names lowercase and values ASCII: refuse what it would
 * change rather than give back something else than was put. */
static bool meta_name_ok(const char *s)
{
    if (*s == '\0' || strlen(s) > 128)
        return false;
    for (; *s; s++) {
        char c = *s;
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_'))
            return false;
    }
    return true;
}

static bool meta_value_ok(const char *s)
{
    for (; *s; s++) {
        if ((unsigned char)*s < 0x20 || (unsigned char)*s > 0x7e)
            return false;
    }
    return true;
}

/* The headers of a put from meta_json, into r->headers; the strings are
 * the parsed document's (*doc, released by the caller) or in names. */
static int meta_headers(s3_req_t *r, const char *meta_json, json_t **doc, char names[][160],
                        size_t nnames)
{
    json_error_t jerr;
    *doc = json_loads(meta_json ? meta_json : "{}", 0, &jerr);
    if (*doc == NULL)
        return -ENOMEM;
    json_t *h = json_object_get(*doc, "http");
    for (size_t i = 0; i < AG_ARRAY_LEN(http_fields); i++) {
        const char *v = json_string_value(json_object_get(h, http_fields[i].json));
        if (v == NULL)
            continue;
        if (!meta_value_ok(v)) {
            ag__objstore_set_error("S3 PUT %.*s: the S3 backend stores %s values of printable "
                                   "ASCII only",
                                   (int)r->keylen, r->key, http_fields[i].header);
            return AG_OBJ_EMETADATA;
        }
        r->headers[r->nheaders].name = http_fields[i].header;
        r->headers[r->nheaders].value = v;
        r->nheaders++;
    }
    json_t *cm = json_object_get(*doc, "custom");
    const char *name;
    json_t *v;
    size_t k = 0;
    json_object_foreach(cm, name, v)
    {
        const char *val = json_string_value(v);
        if (!meta_name_ok(name) || val == NULL || !meta_value_ok(val)) {
            ag__objstore_set_error(
                "S3 PUT %.*s: the S3 backend stores custom metadata with names of a-z 0-9 - _ "
                "and values of printable ASCII only (\"%.60s\")",
                (int)r->keylen, r->key, name);
            return AG_OBJ_EMETADATA;
        }
        if (k >= nnames || r->nheaders >= MAX_EXTRA_HEADERS - 2)
            return AG_OBJ_EMETADATA_TOO_BIG;
        snprintf(names[k], sizeof(names[k]), "x-amz-meta-%s", name);
        r->headers[r->nheaders].name = names[k];
        r->headers[r->nheaders].value = val;
        r->nheaders++;
        k++;
    }
    return 0;
}

/* "Wed, 02 Dec 2026 08:01:02 GMT" as epoch ms; 0 when unreadable. */
static int64_t http_date_ms(const char *s)
{
    static const char months[] = "JanFebMarAprMayJunJulAugSepOctNovDec";
    char mon[4];
    int d, y, h, mi, sec;
    if (sscanf(s, "%*3s, %2d %3s %4d %2d:%2d:%2d GMT", &d, mon, &y, &h, &mi, &sec) != 6)
        return 0;
    const char *m = strstr(months, mon);
    if (m == NULL || (m - months) % 3 != 0)
        return 0;
    struct tm tm = {.tm_year = y - 1900,
                    .tm_mon = (int)((m - months) / 3),
                    .tm_mday = d,
                    .tm_hour = h,
                    .tm_min = mi,
                    .tm_sec = sec};
    return (int64_t)timegm(&tm) * 1000;
}

/* The description of an object from a HEAD or GET answer. */
static int info_from_answer(const s3_req_t *r, const char *key, size_t keylen, uint64_t size,
                            ag_obj_info_t *info)
{
    memset(info, 0, sizeof(*info));
    json_t *root = json_object(), *h = json_object(), *cm = json_object();
    int rc = -ENOMEM;
    if (root == NULL || h == NULL || cm == NULL)
        goto fail;
    char v[1024];
    for (size_t i = 0; i < AG_ARRAY_LEN(http_fields); i++) {
        if (resp_header(r, http_fields[i].header, v, sizeof(v)) && v[0])
            json_object_set_new(h, http_fields[i].json, json_string(v));
    }
    const char *p = r->resp_hdr.data, *end = p + r->resp_hdr.len;
    while (p && p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *colon = nl ? memchr(p, ':', (size_t)(nl - p)) : NULL;
        if (nl == NULL)
            break;
        if (colon && colon - p > 11 && memcmp(p, "x-amz-meta-", 11) == 0) {
            char name[160], val[1024];
            size_t nlen = (size_t)(colon - p) - 11, vlen = (size_t)(nl - colon) - 1;
            if (nlen < sizeof(name) && vlen < sizeof(val)) {
                memcpy(name, p + 11, nlen);
                name[nlen] = '\0';
                memcpy(val, colon + 1, vlen);
                val[vlen] = '\0';
                json_t *js = json_string(val);
                if (js)
                    json_object_set_new(cm, name, js);
            }
        }
        p = nl + 1;
    }
    json_object_set(root, "http", h);
    json_object_set(root, "custom", cm);
    /* Dumped sorted and read back: jansson keeps the order it read, so the
     * custom pairs come out sorted by name, as the interface says. */
    char *txt = json_dumps(root, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(root);
    root = NULL;
    if (txt == NULL)
        goto fail;
    json_error_t jerr;
    json_t *j = json_loads(txt, 0, &jerr);
    free(txt);
    if (j == NULL)
        goto fail;
    info->_json = j;
    info->key = malloc(keylen + 1);
    if (info->key == NULL)
        goto fail;
    memcpy(info->key, key, keylen);
    info->key[keylen] = '\0';
    info->key_len = keylen;
    info->size = size;
    if (resp_header(r, "etag", v, sizeof(v)))
        ag__objstore_s3_etag(info->etag, v, strlen(v));
    memcpy(info->version, info->etag, sizeof(info->version));
    if (resp_header(r, "last-modified", v, sizeof(v)))
        info->uploaded_ms = http_date_ms(v);
    json_t *jh = json_object_get(j, "http");
    info->cache_control = json_string_value(json_object_get(jh, "cacheControl"));
    info->content_disposition = json_string_value(json_object_get(jh, "contentDisposition"));
    info->content_encoding = json_string_value(json_object_get(jh, "contentEncoding"));
    info->content_language = json_string_value(json_object_get(jh, "contentLanguage"));
    info->content_type = json_string_value(json_object_get(jh, "contentType"));
    json_t *jc = json_object_get(j, "custom");
    size_t n = json_object_size(jc);
    if (n > 0) {
        info->custom = calloc(n, sizeof(*info->custom));
        if (info->custom == NULL)
            goto fail;
        const char *name;
        json_t *jv;
        json_object_foreach(jc, name, jv)
        {
            info->custom[info->ncustom].name = name;
            info->custom[info->ncustom].value = json_string_value(jv);
            info->ncustom++;
        }
    }
    json_decref(h);
    json_decref(cm);
    return 0;
fail:
    json_decref(root);
    json_decref(h);
    json_decref(cm);
    ag_obj_info_free(info);
    return rc;
}

/* ---- the operations ---------------------------------------------------------------------- */

/* Hashes what the put sends (SHA-256 for the signature, MD5 for Content-MD5
 * and the etag), from memory or from the file. */
static int hash_body(s3_req_t *r, char md5_hex[33], char md5_b64[25])
{
    EVP_MD_CTX *sha = EVP_MD_CTX_new(), *md5 = EVP_MD_CTX_new();
    int rc = -ENOMEM;
    char *chunk = r->body_fd >= 0 ? malloc(CHUNK) : NULL;
    if (sha == NULL || md5 == NULL || (r->body_fd >= 0 && chunk == NULL) ||
        EVP_DigestInit_ex(sha, EVP_sha256(), NULL) != 1 ||
        EVP_DigestInit_ex(md5, EVP_md5(), NULL) != 1)
        goto out;
    if (r->body_fd < 0) {
        EVP_DigestUpdate(sha, r->body, (size_t)r->body_len);
        EVP_DigestUpdate(md5, r->body, (size_t)r->body_len);
    } else {
        for (uint64_t off = 0; off < r->body_len;) {
            size_t want = r->body_len - off < CHUNK ? (size_t)(r->body_len - off) : CHUNK;
            ssize_t got = ag_fs_pread_all(r->body_fd, chunk, want, r->body_off + off);
            if (got != (ssize_t)want) {
                rc = got < 0 ? (int)got : -EIO;
                goto out;
            }
            EVP_DigestUpdate(sha, chunk, want);
            EVP_DigestUpdate(md5, chunk, want);
            off += want;
        }
    }
    unsigned char d[EVP_MAX_MD_SIZE];
    unsigned int dl = 0;
    EVP_DigestFinal_ex(sha, d, &dl);
    ag_hex_encode(d, dl, r->payload_sha256);
    EVP_DigestFinal_ex(md5, d, &dl);
    ag_hex_encode(d, dl, md5_hex);
    EVP_EncodeBlock((unsigned char *)md5_b64, d, (int)dl);
    rc = 0;
out:
    free(chunk);
    EVP_MD_CTX_free(sha);
    EVP_MD_CTX_free(md5);
    return rc;
}

static int do_put(s3_store_t *s, s3_req_t *r, const char *meta_json, ag_obj_info_t *out)
{
    json_t *doc = NULL;
    char names[32][160];
    char md5_hex[33], md5_b64[25];
    int rc = meta_headers(r, meta_json, &doc, names, AG_ARRAY_LEN(names));
    if (rc == 0)
        rc = hash_body(r, md5_hex, md5_b64);
    if (rc == 0) {
        r->headers[r->nheaders].name = "content-md5";
        r->headers[r->nheaders].value = md5_b64;
        r->nheaders++;
        rc = perform(s, r);
    }
    if (rc == 0 && out != NULL) {
        /* The description of what was put: the answer carries only the etag. */
        json_error_t jerr;
        json_t *j = json_loads(meta_json ? meta_json : "{}", 0, &jerr);
        memset(out, 0, sizeof(*out));
        rc = j ? 0 : -ENOMEM;
        if (rc == 0) {
            out->_json = j;
            out->key = malloc(r->keylen + 1);
            rc = out->key ? 0 : -ENOMEM;
        }
        if (rc == 0) {
            memcpy(out->key, r->key, r->keylen);
            out->key[r->keylen] = '\0';
            out->key_len = r->keylen;
            out->size = r->body_len;
            memcpy(out->etag, md5_hex, sizeof(out->etag));
            memcpy(out->version, md5_hex, sizeof(out->version));
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            out->uploaded_ms = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
            json_t *jh = json_object_get(j, "http");
            out->cache_control = json_string_value(json_object_get(jh, "cacheControl"));
            out->content_disposition = json_string_value(json_object_get(jh, "contentDisposition"));
            out->content_encoding = json_string_value(json_object_get(jh, "contentEncoding"));
            out->content_language = json_string_value(json_object_get(jh, "contentLanguage"));
            out->content_type = json_string_value(json_object_get(jh, "contentType"));
            json_t *jc = json_object_get(j, "custom");
            size_t n = json_object_size(jc);
            if (n > 0) {
                out->custom = calloc(n, sizeof(*out->custom));
                rc = out->custom ? 0 : -ENOMEM;
                const char *name;
                json_t *jv;
                json_object_foreach(jc, name, jv)
                {
                    if (out->custom == NULL)
                        break;
                    out->custom[out->ncustom].name = name;
                    out->custom[out->ncustom].value = json_string_value(jv);
                    out->ncustom++;
                }
            }
        }
        if (rc < 0)
            ag_obj_info_free(out);
    }
    json_decref(doc);
    return rc;
}

static int s3_put(ag_objstore_t *base, const char *key, size_t keylen, const void *data, size_t len,
                  const char *meta_json, ag_obj_info_t *out)
{
    s3_store_t *s = (s3_store_t *)base;
    s3_req_t r;
    req_init(&r, "PUT", key, keylen);
    r.body = data ? data : "";
    r.body_len = len;
    int rc = do_put(s, &r, meta_json, out);
    req_fini(&r);
    return rc;
}

static int s3_put_fd(ag_objstore_t *base, const char *key, size_t keylen, int fd,
                     const char *meta_json, ag_obj_info_t *out)
{
    s3_store_t *s = (s3_store_t *)base;
    struct stat st;
    off_t pos = lseek(fd, 0, SEEK_CUR);
    if (fstat(fd, &st) < 0)
        return -errno;
    if (!S_ISREG(st.st_mode) || pos < 0) {
        /* A pipe: S3 wants the length first, so it is read whole. */
        ag_buf_t data;
        ag_buf_init(&data, (size_t)AG_OBJ_MAX_PUT_SIZE + 1);
        int rc = ag_fs_read_fd(fd, &data);
        if (rc == AG_ETOOBIG)
            rc = AG_OBJ_ETOO_BIG;
        if (rc == 0)
            rc = s3_put(base, key, keylen, data.data ? data.data : "", data.len, meta_json, out);
        ag_buf_fini(&data);
        return rc;
    }
    uint64_t len = st.st_size > pos ? (uint64_t)(st.st_size - pos) : 0;
    if (len > AG_OBJ_MAX_PUT_SIZE)
        return AG_OBJ_ETOO_BIG;
    s3_req_t r;
    req_init(&r, "PUT", key, keylen);
    r.body_fd = fd;
    r.body_off = (uint64_t)pos;
    r.body_len = len;
    int rc = do_put(s, &r, meta_json, out);
    if (rc == 0)
        lseek(fd, 0, SEEK_END); /* read to its end, as the interface says */
    req_fini(&r);
    return rc;
}

static int s3_head(ag_objstore_t *base, const char *key, size_t keylen, ag_obj_info_t *out)
{
    s3_store_t *s = (s3_store_t *)base;
    s3_req_t r;
    req_init(&r, "HEAD", key, keylen);
    int rc = perform(s, &r);
    if (rc == 0) {
        char v[32];
        uint64_t size = resp_header(&r, "content-length", v, sizeof(v)) ? strtoull(v, NULL, 10) : 0;
        rc = info_from_answer(&r, key, keylen, size, out);
    }
    req_fini(&r);
    return rc;
}

static int s3_get(ag_objstore_t *base, const char *key, size_t keylen, ag_obj_t *out)
{
    s3_store_t *s = (s3_store_t *)base;
    s3_req_t r;
    req_init(&r, "GET", key, keylen);
    r.resp.max = (size_t)AG_OBJ_MAX_PUT_SIZE + 1;
    int rc = perform(s, &r);
    if (rc == 0)
        rc = info_from_answer(&r, key, keylen, r.resp.len, &out->info);
    if (rc == 0) {
        if (ag_buf_cstr(&r.resp) == NULL) {
            ag_obj_info_free(&out->info);
            rc = -ENOMEM;
        } else {
            out->data = r.resp.data; /* taken, NUL-terminated */
            out->len = r.resp.len;
            r.resp.data = NULL;
            r.resp.len = r.resp.cap = 0;
        }
    }
    req_fini(&r);
    return rc;
}

/* A descriptor of a private temporary file holding the object. */
static int s3_open_read(ag_objstore_t *base, const char *key, size_t keylen, ag_obj_info_t *info,
                        int *fd, uint64_t *offset)
{
    s3_store_t *s = (s3_store_t *)base;
    const char *dir = getenv("TMPDIR");
    if (dir == NULL || dir[0] == '\0')
        dir = "/tmp";
    int tfd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
    if (tfd < 0) {
        char tmpl[4096];
        snprintf(tmpl, sizeof(tmpl), "%s/aigate-s3-XXXXXX", dir);
        tfd = mkostemp(tmpl, O_CLOEXEC);
        if (tfd < 0)
            return -errno;
        unlink(tmpl);
    }
    s3_req_t r;
    req_init(&r, "GET", key, keylen);
    r.out_fd = tfd;
    int rc = perform(s, &r);
    if (rc == 0) {
        struct stat st;
        rc = fstat(tfd, &st) < 0 ? -errno : 0;
        if (rc == 0)
            rc = info_from_answer(&r, key, keylen, (uint64_t)st.st_size, info);
    }
    req_fini(&r);
    if (rc < 0) {
        close(tfd);
        return rc;
    }
    *fd = tfd;
    *offset = 0;
    return 0;
}

static int s3_del(ag_objstore_t *base, const char *key, size_t keylen)
{
    s3_store_t *s = (s3_store_t *)base;
    s3_req_t r;
    req_init(&r, "DELETE", key, keylen);
    int rc = perform(s, &r);
    if (rc == AG_ENOTFOUND)
        rc = 0; /* as R2: deleting nothing is fine */
    req_fini(&r);
    return rc;
}

static char *dup_n(const char *p, size_t n)
{
    char *d = malloc(n + 1);
    if (d) {
        memcpy(d, p, n);
        d[n] = '\0';
    }
    return d;
}

static int s3_list(ag_objstore_t *base, const ag_obj_list_opts_t *o,
                   const ag_obj_list_after_t *after, ag_obj_list_result_t *out)
{
    s3_store_t *s = (s3_store_t *)base;
    if ((o->prefix_len && memchr(o->prefix, '\0', o->prefix_len)) ||
        (o->delimiter_len && memchr(o->delimiter, '\0', o->delimiter_len)) ||
        (o->start_after_len && memchr(o->start_after, '\0', o->start_after_len)))
        return AG_EINVALID;
    char *prefix = dup_n(o->prefix ? o->prefix : "", o->prefix_len);
    char *delim = dup_n(o->delimiter ? o->delimiter : "", o->delimiter_len);
    /* Where the page starts: after the later of start_after and the cursor. A
     * cursor on a delimited prefix skips every key under it: the prefix then
     * U+10FFFF, past any UTF-8 key that starts with it. */
    char *from = malloc(AG_OBJ_MAX_KEY_LEN + 8);
    int rc = -ENOMEM;
    if (prefix == NULL || delim == NULL || from == NULL)
        goto out;
    size_t flen = 0;
    if (after->key_len > 0) {
        memcpy(from, after->key, after->key_len);
        flen = after->key_len;
        if (after->is_prefix) {
            memcpy(from + flen, "\xf4\x8f\xbf\xbf", 4);
            flen += 4;
        }
    }
    if (o->start_after_len > 0) {
        size_t n = o->start_after_len < flen ? o->start_after_len : flen;
        int c = memcmp(o->start_after, from, n);
        if (flen == 0 || c > 0 || (c == 0 && o->start_after_len > flen)) {
            memcpy(from, o->start_after, o->start_after_len);
            flen = o->start_after_len;
        }
    }
    from[flen] = '\0';
    char max_keys[16];
    snprintf(max_keys, sizeof(max_keys), "%u", o->limit);
    s3_req_t r;
    req_init(&r, "GET", NULL, 0);
    r.query[r.nquery++] = (ag_sigv4_kv_t){"list-type", "2"};
    r.query[r.nquery++] = (ag_sigv4_kv_t){"max-keys", max_keys};
    if (prefix[0])
        r.query[r.nquery++] = (ag_sigv4_kv_t){"prefix", prefix};
    if (delim[0])
        r.query[r.nquery++] = (ag_sigv4_kv_t){"delimiter", delim};
    if (from[0])
        r.query[r.nquery++] = (ag_sigv4_kv_t){"start-after", from};
    rc = perform(s, &r);
    if (rc == 0) {
        char *next = NULL;
        rc = ag__objstore_s3_parse_list(r.resp.data ? r.resp.data : "", r.resp.len, out, &next);
        free(next); /* the front end makes its cursor from the last entry */
        if (rc == AG_EPROTO) {
            ag__objstore_set_error("S3 list %s: the store's answer is not a ListObjectsV2 "
                                   "result",
                                   s->bucket);
            rc = AG_OBJ_ESTORE;
        }
    }
    req_fini(&r);
out:
    free(prefix);
    free(delim);
    free(from);
    return rc;
}

static void s3_close(ag_objstore_t *base)
{
    s3_store_t *s = (s3_store_t *)base;
    if (s->secret)
        OPENSSL_cleanse(s->secret, strlen(s->secret));
    free(s->bucket);
    free(s->origin);
    free(s->host);
    free(s->region);
    free(s->access);
    free(s->secret);
    free(s);
}

static const ag_objstore_ops_t s3_ops = {
    .name = AG_OBJ_BACKEND_S3,
    .put = s3_put,
    .get = s3_get,
    .head = s3_head,
    .open_read = s3_open_read,
    .del = s3_del,
    .list = s3_list,
    .close = s3_close,
    .put_fd = s3_put_fd,
};

int ag__objstore_s3_open(const char *bucket, const ag_objstore_s3_options_t *o, ag_objstore_t **out)
{
    *out = NULL;
    if (o == NULL || o->endpoint == NULL || o->endpoint[0] == '\0' || o->access_key == NULL ||
        o->access_key[0] == '\0' || o->secret_key == NULL || o->secret_key[0] == '\0') {
        ag__objstore_set_error("the S3 backend needs [aigate.s3] endpoint and the secrets "
                               "S3_ACCESS_KEY_ID and S3_SECRET_ACCESS_KEY");
        return AG_OBJ_ES3_CONFIG;
    }
    const char *ep = o->endpoint;
    size_t slen = strncmp(ep, "http://", 7) == 0 ? 7 : strncmp(ep, "https://", 8) == 0 ? 8 : 0;
    const char *hp = ep + slen;
    size_t hlen = strcspn(hp, "/?#");
    bool ok = slen > 0 && hlen > 0 && (hp[hlen] == '\0' || strcmp(hp + hlen, "/") == 0) &&
              strchr(hp, '@') == NULL;
    for (size_t i = 0; ok && i < hlen; i++) {
        char c = hp[i];
        ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
             c == '.' || c == '-' || c == ':' || c == '[' || c == ']';
    }
    if (!ok || bucket == NULL || bucket[0] == '\0') {
        ag__objstore_set_error("[aigate.s3] endpoint must be http(s)://host[:port], without a "
                               "path");
        return AG_EINVALID;
    }
    s3_store_t *s = calloc(1, sizeof(*s));
    if (s == NULL)
        return -ENOMEM;
    s->base.ops = &s3_ops;
    s->path_style = o->path_style;
    s->timeout_ms = o->timeout_ms ? (long)o->timeout_ms : DEFAULT_TIMEOUT_MS;
    s->connect_ms = o->connect_timeout_ms ? (long)o->connect_timeout_ms : DEFAULT_CONNECT_MS;
    s->bucket = strdup(bucket);
    s->region = strdup(o->region && o->region[0] ? o->region : "us-east-1");
    s->access = strdup(o->access_key);
    s->secret = strdup(o->secret_key);
    ag_buf_t b;
    ag_buf_init(&b, 0);
    if (s->path_style)
        ag_buf_printf(&b, "%.*s", (int)hlen, hp);
    else
        ag_buf_printf(&b, "%s.%.*s", bucket, (int)hlen, hp);
    s->host = ag_buf_cstr(&b) ? strdup(b.data) : NULL;
    ag_buf_reset(&b);
    ag_buf_printf(&b, "%.*s%s", (int)slen, ep, s->host ? s->host : "");
    s->origin = ag_buf_cstr(&b) ? strdup(b.data) : NULL;
    ag_buf_fini(&b);
    if (s->bucket == NULL || s->region == NULL || s->access == NULL || s->secret == NULL ||
        s->host == NULL || s->origin == NULL) {
        s3_close(&s->base);
        return -ENOMEM;
    }
    *out = &s->base;
    return 0;
}
