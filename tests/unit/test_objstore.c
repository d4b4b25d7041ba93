/* SPDX-License-Identifier: MIT
 *
 * test_objstore.c: the object store on real folders under a temporary
 * directory: round trips, head fields, metadata, keys that clash as paths,
 * R2 listings (prefix, delimiter, cursor), refused keys, failed and racing
 * puts, streaming reads and the bucket folders.
 */
#include "util/platform.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "harness.h"
#include "store/objstore.h"
#include "util/errors.h"
#include "util/log.h"

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static char *make_tmpdir(void)
{
    char tmpl[] = "/tmp/ag_test_obj_XXXXXX";
    char *d = mkdtemp(tmpl);
    return d ? strdup(d) : NULL;
}

static void rm_rf(char *dir)
{
    if (dir != NULL)
        nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    free(dir);
}

/* Counts regular files below a folder, and those that are temp files. */
static int count_files, count_tmp;
static int count_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    if (flag == FTW_F) {
        count_files++;
        if (strncmp(path + ftw->base, ".tmp", 4) == 0)
            count_tmp++;
    }
    return 0;
}

static int files_under(const char *dir)
{
    count_files = count_tmp = 0;
    nftw(dir, count_entry, 16, FTW_PHYS);
    return count_files;
}

static void md5_hex(const void *data, size_t len, char out[33])
{
    unsigned char md[16];
    unsigned int n = sizeof(md);
    EVP_Digest(len ? data : "", len, md, &n, EVP_md5(), NULL);
    for (int i = 0; i < 16; i++)
        snprintf(out + 2 * i, 3, "%02x", md[i]);
}

/* A bucket folder inside a fresh parent folder, so that the test can check
 * that nothing lands beside the bucket. */
typedef struct {
    char *root;
    char bucket[512];
    ag_objstore_t *s;
} fixture_t;

static bool fixture_open(fixture_t *f)
{
    memset(f, 0, sizeof(*f));
    f->root = make_tmpdir();
    if (f->root == NULL)
        return false;
    snprintf(f->bucket, sizeof(f->bucket), "%s/bucket", f->root);
    int rc = ag_objstore_open_fs(f->bucket, &f->s);
    if (rc < 0)
        fprintf(stderr, "  open: %s\n", ag_strerror(rc));
    return rc == 0;
}

static void fixture_close(fixture_t *f)
{
    ag_objstore_close(f->s);
    rm_rf(f->root);
}

static int put_str(ag_objstore_t *s, const char *key, const char *val)
{
    return ag_objstore_put(s, key, strlen(key), val, strlen(val), NULL, NULL);
}

TEST(obj_roundtrip_and_head)
{
    fixture_t f;
    ASSERT(fixture_open(&f));
    unsigned char bin[256];
    for (int i = 0; i < 256; i++)
        bin[i] = (unsigned char)(255 - i); /* includes NUL bytes */
    ag_obj_put_opts_t o = {.content_type = "application/octet-stream",
                           .cache_control = "max-age=60",
                           .content_language = "en"};
    int64_t before = ag_now_us() / 1000;
    ag_obj_info_t pi;
    ASSERT_EQ(ag_objstore_put(f.s, "dir/bin.dat", 11, bin, sizeof(bin), &o, &pi), 0);
    int64_t after = ag_now_us() / 1000;
    char want_etag[33];
    md5_hex(bin, sizeof(bin), want_etag);
    ASSERT_STREQ(pi.etag, want_etag);
    ASSERT_STREQ(pi.key, "dir/bin.dat");

    ag_obj_t obj;
    ASSERT_EQ(ag_objstore_get(f.s, "dir/bin.dat", 11, &obj), 0);
    ASSERT_EQ(obj.len, sizeof(bin));
    ASSERT(memcmp(obj.data, bin, sizeof(bin)) == 0);
    ASSERT_EQ(obj.info.size, sizeof(bin));
    ASSERT_STREQ(obj.info.etag, want_etag);
    ASSERT_STREQ(obj.info.version, pi.version);
    ASSERT_EQ(strspn(obj.info.version, "0123456789abcdef"), 32);
    ASSERT(obj.info.uploaded_ms >= before && obj.info.uploaded_ms <= after);
    ASSERT_EQ(obj.info.uploaded_ms, pi.uploaded_ms);
    ASSERT_STREQ(obj.info.content_type, "application/octet-stream");
    ASSERT_STREQ(obj.info.cache_control, "max-age=60");
    ASSERT_STREQ(obj.info.content_language, "en");
    ASSERT(obj.info.content_encoding == NULL && obj.info.content_disposition == NULL);
    ASSERT_EQ(obj.info.ncustom, 0);
    ag_obj_free(&obj);
    ag_obj_info_free(&pi);

    ag_obj_info_t h;
    ASSERT_EQ(ag_objstore_head(f.s, "dir/bin.dat", 11, &h), 0);
    ASSERT_EQ(h.size, sizeof(bin));
    ASSERT_STREQ(h.key, "dir/bin.dat");
    ag_obj_info_free(&h);
    ASSERT_EQ(ag_objstore_head(f.s, "dir/bin.da", 10, &h), AG_ENOTFOUND);
    ASSERT_EQ(ag_objstore_get(f.s, "nope", 4, &obj), AG_ENOTFOUND);

    /* The empty object. */
    ASSERT_EQ(ag_objstore_put(f.s, "empty", 5, NULL, 0, NULL, NULL), 0);
    ASSERT_EQ(ag_objstore_get(f.s, "empty", 5, &obj), 0);
    ASSERT_EQ(obj.len, 0);
    md5_hex("", 0, want_etag);
    ASSERT_STREQ(obj.info.etag, want_etag);
    ag_obj_free(&obj);
    fixture_close(&f);
}

TEST(obj_custom_metadata)
{
    fixture_t f;
    ASSERT(fixture_open(&f));
    ag_obj_meta_pair_t pairs[] = {
        {"zeta", "last"}, {"alpha", "first"}, {"mid", "x"}, {"alpha", "again"}};
    ag_obj_put_opts_t o = {.custom = pairs, .ncustom = 4};
    ASSERT_EQ(ag_objstore_put(f.s, "m", 1, "d", 1, &o, NULL), 0);
    ag_obj_info_t h;
    ASSERT_EQ(ag_objstore_head(f.s, "m", 1, &h), 0);
    ASSERT_EQ(h.ncustom, 3);
    ASSERT_STREQ(h.custom[0].name, "alpha");
    ASSERT_STREQ(h.custom[0].value, "again"); /* a later duplicate wins */
    ASSERT_STREQ(h.custom[1].name, "mid");
    ASSERT_STREQ(h.custom[2].name, "zeta");
    char *js = ag_obj_info_custom_json(&h);
    ASSERT(js != NULL);
    ASSERT_STREQ(js, "{\"alpha\":\"again\",\"mid\":\"x\",\"zeta\":\"last\"}");
    free(js);
    ag_obj_info_free(&h);

    /* The same as JSON text, UTF-8 included. */
    const char *json = "{\"b\":\"2\",\"a\":\"caf\\u00e9\"}";
    ag_obj_put_opts_t oj = {.custom_json = json, .custom_json_len = strlen(json)};
    ASSERT_EQ(ag_objstore_put(f.s, "m", 1, "d", 1, &oj, NULL), 0);
    ASSERT_EQ(ag_objstore_head(f.s, "m", 1, &h), 0);
    ASSERT_EQ(h.ncustom, 2);
    ASSERT_STREQ(h.custom[0].name, "a");
    ASSERT_STREQ(h.custom[0].value, "caf\xc3\xa9");
    ag_obj_info_free(&h);

    /* Refused, each leaving the stored object as it was. */
    ag_obj_put_opts_t both = {
        .custom = pairs, .ncustom = 1, .custom_json = "{}", .custom_json_len = 2};
    ASSERT_EQ(ag_objstore_put(f.s, "m", 1, "x", 1, &both, NULL), AG_OBJ_EMETADATA);
    ag_obj_put_opts_t notobj = {.custom_json = "[1]", .custom_json_len = 3};
    ASSERT_EQ(ag_objstore_put(f.s, "m", 1, "x", 1, &notobj, NULL), AG_OBJ_EMETADATA);
    ag_obj_put_opts_t num = {.custom_json = "{\"a\":1}", .custom_json_len = 7};
    ASSERT_EQ(ag_objstore_put(f.s, "m", 1, "x", 1, &num, NULL), AG_OBJ_EMETADATA);
    ag_obj_put_opts_t crlf = {.content_type = "text/plain\r\nX-Evil: 1"};
    ASSERT_EQ(ag_objstore_put(f.s, "m", 1, "x", 1, &crlf, NULL), AG_OBJ_EMETADATA);
    ag_obj_meta_pair_t badval[] = {{"k", "a\nb"}};
    ag_obj_put_opts_t bv = {.custom = badval, .ncustom = 1};
    ASSERT_EQ(ag_objstore_put(f.s, "m", 1, "x", 1, &bv, NULL), AG_OBJ_EMETADATA);
    ag_obj_meta_pair_t badutf[] = {{"k", "\xc3"}};
    ag_obj_put_opts_t bu = {.custom = badutf, .ncustom = 1};
    ASSERT_EQ(ag_objstore_put(f.s, "m", 1, "x", 1, &bu, NULL), AG_OBJ_EMETADATA);
    static char big[AG_OBJ_MAX_METADATA_LEN];
    memset(big, 'v', sizeof(big) - 1); /* 8191 bytes + the 1-byte name: 8192, fits */
    ag_obj_meta_pair_t fits[] = {{"k", big}};
    ag_obj_put_opts_t of = {.custom = fits, .ncustom = 1};
    ASSERT_EQ(ag_objstore_put(f.s, "big", 3, "x", 1, &of, NULL), 0);
    ag_obj_meta_pair_t over[] = {{"kk", big}};
    ag_obj_put_opts_t oo = {.custom = over, .ncustom = 1};
    ASSERT_EQ(ag_objstore_put(f.s, "big", 3, "x", 1, &oo, NULL), AG_OBJ_EMETADATA_TOO_BIG);
    ag_obj_t obj;
    ASSERT_EQ(ag_objstore_get(f.s, "m", 1, &obj), 0);
    ASSERT_MEMEQ(obj.data, obj.len, "d");
    ASSERT_EQ(obj.info.ncustom, 2);
    ag_obj_free(&obj);
    fixture_close(&f);
}

TEST(obj_overwrite_delete_and_clashing_keys)
{
    fixture_t f;
    ASSERT(fixture_open(&f));
    ag_obj_info_t a, b;
    ASSERT_EQ(ag_objstore_put(f.s, "k", 1, "one", 3, NULL, &a), 0);
    ASSERT_EQ(ag_objstore_put(f.s, "k", 1, "second", 6, NULL, &b), 0);
    ASSERT(strcmp(a.version, b.version) != 0);
    ASSERT(strcmp(a.etag, b.etag) != 0);
    ag_obj_info_free(&a);
    ag_obj_info_free(&b);
    ag_obj_t obj;
    ASSERT_EQ(ag_objstore_get(f.s, "k", 1, &obj), 0);
    ASSERT_MEMEQ(obj.data, obj.len, "second");
    ag_obj_free(&obj);
    ASSERT_EQ(files_under(f.bucket), 1); /* the overwrite left no second file */

    /* Keys that would clash as file and folder, or as odd paths. */
    const char *keys[] = {"a", "a/b", "a/b/c", "a/", "a//b", "a/b/", "...", "a/.hidden", "-"};
    for (size_t i = 0; i < AG_ARRAY_LEN(keys); i++)
        ASSERT_EQ(put_str(f.s, keys[i], keys[i]), 0);
    for (size_t i = 0; i < AG_ARRAY_LEN(keys); i++) {
        ASSERT_EQ(ag_objstore_get(f.s, keys[i], strlen(keys[i]), &obj), 0);
        ASSERT_STREQ(obj.data, keys[i]);
        ag_obj_free(&obj);
    }
    ASSERT_EQ(files_under(f.bucket), 1 + (int)AG_ARRAY_LEN(keys));
    ASSERT_EQ(count_tmp, 0);

    ASSERT_EQ(ag_objstore_delete(f.s, "a", 1), 0);
    ASSERT_EQ(ag_objstore_get(f.s, "a", 1, &obj), AG_ENOTFOUND);
    ASSERT_EQ(ag_objstore_delete(f.s, "a", 1), 0); /* as R2: no error */
    ASSERT_EQ(ag_objstore_get(f.s, "a/b", 3, &obj), 0);
    ag_obj_free(&obj);
    ASSERT_EQ(files_under(f.bucket), (int)AG_ARRAY_LEN(keys));
    fixture_close(&f);
}

/* Lists one page; copies object keys and prefixes into a " "-joined string
 * with prefixes marked "P:". */
static int list_page(ag_objstore_t *s, const char *prefix, const char *delim, const char *cursor,
                     unsigned limit, char *out, size_t outlen, char **next)
{
    ag_obj_list_opts_t o = {.prefix = prefix,
                            .prefix_len = prefix ? strlen(prefix) : 0,
                            .delimiter = delim,
                            .delimiter_len = delim ? strlen(delim) : 0,
                            .cursor = cursor,
                            .limit = limit};
    ag_obj_list_result_t r;
    int rc = ag_objstore_list(s, &o, &r);
    if (rc < 0)
        return rc;
    /* Merge objects and prefixes in key order, as R2 pages them. */
    out[0] = '\0';
    size_t i = 0, j = 0;
    while (i < r.count || j < r.nprefixes) {
        bool obj = j == r.nprefixes || (i < r.count && strcmp(r.objects[i].key, r.prefixes[j]) < 0);
        size_t used = strlen(out);
        snprintf(out + used, outlen - used, "%s%s%s", used ? " " : "",
                 obj ? "" : "P:", obj ? r.objects[i].key : r.prefixes[j]);
        if (obj)
            i++;
        else
            j++;
    }
    *next = r.truncated ? strdup(r.cursor) : NULL;
    rc = (r.truncated == (r.cursor != NULL)) ? (int)(r.count + r.nprefixes) : -1000;
    ag_obj_list_result_free(&r);
    return rc;
}

TEST(obj_list_prefix_delimiter_cursor)
{
    fixture_t f;
    ASSERT(fixture_open(&f));
    const char *keys[] = {"c", "b/x/y", "a/2", "a/1", "x::1", "x::2", "b/z"};
    for (size_t i = 0; i < AG_ARRAY_LEN(keys); i++)
        ASSERT_EQ(put_str(f.s, keys[i], "v"), 0);
    char buf[1024], *next = NULL;

    ASSERT_EQ(list_page(f.s, NULL, NULL, NULL, 0, buf, sizeof(buf), &next), 7);
    ASSERT_STREQ(buf, "a/1 a/2 b/x/y b/z c x::1 x::2");
    ASSERT(next == NULL);
    ASSERT_EQ(list_page(f.s, NULL, "/", NULL, 0, buf, sizeof(buf), &next), 5);
    ASSERT_STREQ(buf, "P:a/ P:b/ c x::1 x::2");
    ASSERT_EQ(list_page(f.s, "b/", "/", NULL, 0, buf, sizeof(buf), &next), 2);
    ASSERT_STREQ(buf, "P:b/x/ b/z");
    ASSERT_EQ(list_page(f.s, "a/", "/", NULL, 0, buf, sizeof(buf), &next), 2);
    ASSERT_STREQ(buf, "a/1 a/2");
    ASSERT_EQ(list_page(f.s, "a", NULL, NULL, 0, buf, sizeof(buf), &next), 2);
    ASSERT_STREQ(buf, "a/1 a/2");
    ASSERT_EQ(list_page(f.s, NULL, "::", NULL, 0, buf, sizeof(buf), &next), 6);
    ASSERT_STREQ(buf, "a/1 a/2 b/x/y b/z c P:x::");
    ASSERT_EQ(list_page(f.s, "zzz", "/", NULL, 0, buf, sizeof(buf), &next), 0);

    /* One entry a page: a rolled-up prefix is one entry and its keys are not
     * seen again on later pages. */
    const char *want[] = {"P:a/", "P:b/", "c", "x::1", "x::2"};
    char *cursor = NULL;
    for (size_t p = 0; p < AG_ARRAY_LEN(want); p++) {
        int n = list_page(f.s, NULL, "/", cursor, 1, buf, sizeof(buf), &next);
        free(cursor);
        cursor = next;
        ASSERT_EQ(n, 1);
        ASSERT_STREQ(buf, want[p]);
        ASSERT((cursor == NULL) == (p == AG_ARRAY_LEN(want) - 1));
    }
    ASSERT(cursor == NULL);

    /* startAfter, limits and cursors. */
    ag_obj_list_opts_t o = {.start_after = "b/x/y", .start_after_len = 5};
    ag_obj_list_result_t r;
    ASSERT_EQ(ag_objstore_list(f.s, &o, &r), 0);
    ASSERT_EQ(r.count, 4);
    ASSERT_STREQ(r.objects[0].key, "b/z");
    ASSERT_EQ(r.objects[0].size, 1);
    ag_obj_list_result_free(&r);
    ag_obj_list_opts_t big = {.limit = 1001};
    ASSERT_EQ(ag_objstore_list(f.s, &big, &r), AG_OBJ_ELIMIT);
    ag_obj_list_opts_t bad = {.cursor = "q1234"};
    ASSERT_EQ(ag_objstore_list(f.s, &bad, &r), AG_OBJ_ECURSOR);
    ag_obj_list_opts_t bad2 = {.cursor = "o12z4"};
    ASSERT_EQ(ag_objstore_list(f.s, &bad2, &r), AG_OBJ_ECURSOR);
    fixture_close(&f);
}

TEST(obj_list_paging_2500)
{
    fixture_t f;
    ASSERT(fixture_open(&f));
    char key[32];
    for (int i = 0; i < 2500; i++) {
        snprintf(key, sizeof(key), "p/%04d", (i * 1499) % 2500); /* a permutation */
        ASSERT_EQ(put_str(f.s, key, key), 0);
    }
    for (int i = 0; i < 10; i++) {
        snprintf(key, sizeof(key), "q/%d", i);
        ASSERT_EQ(put_str(f.s, key, key), 0);
    }
    char *cursor = NULL;
    int seen = 0, pages = 0;
    char last[32] = "";
    for (int guard = 0; guard < 10; guard++) {
        ag_obj_list_opts_t o = {.prefix = "p/", .prefix_len = 2, .cursor = cursor, .limit = 1000};
        ag_obj_list_result_t r;
        int rc = ag_objstore_list(f.s, &o, &r);
        free(cursor);
        cursor = NULL;
        ASSERT_EQ(rc, 0);
        pages++;
        for (size_t i = 0; i < r.count; i++) {
            ASSERT(strcmp(last, r.objects[i].key) < 0);
            ASSERT(strncmp(r.objects[i].key, "p/", 2) == 0);
            snprintf(last, sizeof(last), "%s", r.objects[i].key);
            seen++;
        }
        ASSERT(r.truncated ? r.count == 1000 : r.count <= 1000);
        if (r.truncated)
            cursor = strdup(r.cursor);
        ag_obj_list_result_free(&r);
        if (cursor == NULL)
            break;
    }
    ASSERT_EQ(seen, 2500);
    ASSERT_EQ(pages, 3);
    ASSERT_STREQ(last, "p/2499");
    fixture_close(&f);
}

TEST(obj_bad_keys_refused_and_contained)
{
    fixture_t f;
    ASSERT(fixture_open(&f));
    struct stat passwd_before, passwd_after;
    bool have_passwd = stat("/etc/passwd", &passwd_before) == 0;
    const struct {
        const char *key;
        size_t len;
        int rc;
    } bad[] = {
        {"../x", 4, AG_OBJ_EKEY_PATH},
        {"a/../../x", 9, AG_OBJ_EKEY_PATH},
        {"/etc/passwd", 11, AG_OBJ_EKEY_PATH},
        {"a\0b", 3, AG_OBJ_EKEY_NUL},
        {".", 1, AG_OBJ_EKEY_PATH},
        {"..", 2, AG_OBJ_EKEY_PATH},
        {"./a", 3, AG_OBJ_EKEY_PATH},
        {"a/.", 3, AG_OBJ_EKEY_PATH},
        {"a/./b", 5, AG_OBJ_EKEY_PATH},
        {"a/..", 4, AG_OBJ_EKEY_PATH},
        {"", 0, AG_OBJ_EKEY_EMPTY},
        {"\xff\xfe", 2, AG_OBJ_EKEY_UTF8},
        {"\xc0\xae\xc0\xae/x", 6, AG_OBJ_EKEY_UTF8}, /* overlong "..": not UTF-8 */
    };
    for (size_t i = 0; i < AG_ARRAY_LEN(bad); i++) {
        ASSERT_EQ(ag_objstore_put(f.s, bad[i].key, bad[i].len, "evil", 4, NULL, NULL), bad[i].rc);
        ag_obj_t obj;
        ASSERT_EQ(ag_objstore_get(f.s, bad[i].key, bad[i].len, &obj), bad[i].rc);
        ASSERT_EQ(ag_objstore_delete(f.s, bad[i].key, bad[i].len), bad[i].rc);
    }
    static char longkey[AG_OBJ_MAX_KEY_LEN + 1];
    memset(longkey, 'k', sizeof(longkey));
    ASSERT_EQ(ag_objstore_put(f.s, longkey, sizeof(longkey), "v", 1, NULL, NULL),
              AG_OBJ_EKEY_TOO_LONG);
    ASSERT_EQ(ag_objstore_put(f.s, longkey, AG_OBJ_MAX_KEY_LEN, "v", 1, NULL, NULL), 0);
    ag_obj_info_t h;
    ASSERT_EQ(ag_objstore_head(f.s, longkey, AG_OBJ_MAX_KEY_LEN, &h), 0);
    ASSERT_EQ(h.key_len, AG_OBJ_MAX_KEY_LEN);
    ag_obj_info_free(&h);
    /* Dots inside a segment are fine. */
    ASSERT_EQ(put_str(f.s, "a/..b/c..", "ok"), 0);

    /* Nothing beside the bucket folder; /etc/passwd untouched. */
    DIR *d = opendir(f.root);
    ASSERT(d != NULL);
    int entries = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0) {
            entries++;
            ASSERT_STREQ(de->d_name, "bucket");
        }
    }
    closedir(d);
    ASSERT_EQ(entries, 1);
    ASSERT_EQ(files_under(f.bucket), 2);
    if (have_passwd) {
        ASSERT_EQ(stat("/etc/passwd", &passwd_after), 0);
        ASSERT_EQ(passwd_after.st_mtime, passwd_before.st_mtime);
        ASSERT_EQ(passwd_after.st_size, passwd_before.st_size);
    }
    ASSERT_EQ(ag_err_http_status(AG_OBJ_EKEY_PATH), ag_err_http_status(AG_EINVALID));
    ASSERT_EQ(ag_err_http_status(AG_OBJ_EKEY_TOO_LONG), 413);
    ASSERT_EQ(ag_err_http_status(AG_OBJ_EDISK_FULL), 507);
    ASSERT(strstr(ag_strerror(AG_OBJ_EKEY_PATH), "..") != NULL);
    ASSERT_STREQ(ag_strerror(AG_ENOTFOUND), "no such key or route");
    fixture_close(&f);
}

TEST(obj_failed_put_leaves_nothing)
{
    fixture_t f;
    ASSERT(fixture_open(&f));
    ASSERT_EQ(put_str(f.s, "keep", "old content"), 0);

    /* A file-size limit makes the write fail midway, as a full disk would. */
    static char big[1 << 20];
    memset(big, 'n', sizeof(big));
    struct rlimit old, lim;
    ASSERT_EQ(getrlimit(RLIMIT_FSIZE, &old), 0);
    lim = old;
    lim.rlim_cur = 64 * 1024;
    void (*oldsig)(int) = signal(SIGXFSZ, SIG_IGN);
    ASSERT_EQ(setrlimit(RLIMIT_FSIZE, &lim), 0);
    int rc1 = ag_objstore_put(f.s, "new", 3, big, sizeof(big), NULL, NULL);
    int rc2 = ag_objstore_put(f.s, "keep", 4, big, sizeof(big), NULL, NULL);
    setrlimit(RLIMIT_FSIZE, &old);
    signal(SIGXFSZ, oldsig);
    ASSERT_EQ(rc1, AG_OBJ_EDISK_FULL);
    ASSERT_EQ(rc2, AG_OBJ_EDISK_FULL);

    ag_obj_t obj;
    ASSERT_EQ(ag_objstore_get(f.s, "new", 3, &obj), AG_ENOTFOUND);
    ASSERT_EQ(ag_objstore_get(f.s, "keep", 4, &obj), 0);
    ASSERT_MEMEQ(obj.data, obj.len, "old content");
    ag_obj_free(&obj);
    ASSERT_EQ(files_under(f.bucket), 1);
    ASSERT_EQ(count_tmp, 0); /* the temp files were removed */
    ag_obj_list_result_t r;
    ASSERT_EQ(ag_objstore_list(f.s, NULL, &r), 0);
    ASSERT_EQ(r.count, 1);
    ag_obj_list_result_free(&r);

    /* Without write permission (meaningless for root, which ignores it). */
    if (geteuid() != 0) {
        char shard[1024];
        DIR *d = opendir(f.bucket);
        ASSERT(d != NULL);
        struct dirent *de;
        while ((de = readdir(d)) != NULL) {
            if (de->d_name[0] != '.') {
                snprintf(shard, sizeof(shard), "%s/%s", f.bucket, de->d_name);
                chmod(shard, 0500);
            }
        }
        closedir(d);
        chmod(f.bucket, 0500);
        ASSERT(ag_objstore_put(f.s, "keep", 4, "x", 1, NULL, NULL) < 0);
        ASSERT(ag_objstore_put(f.s, "other", 5, "x", 1, NULL, NULL) < 0);
        chmod(f.bucket, 0700);
        d = opendir(f.bucket);
        ASSERT(d != NULL);
        while ((de = readdir(d)) != NULL) {
            if (de->d_name[0] != '.') {
                snprintf(shard, sizeof(shard), "%s/%s", f.bucket, de->d_name);
                chmod(shard, 0700);
            }
        }
        closedir(d);
        ASSERT_EQ(ag_objstore_get(f.s, "keep", 4, &obj), 0);
        ASSERT_MEMEQ(obj.data, obj.len, "old content");
        ag_obj_free(&obj);
        ASSERT_EQ(files_under(f.bucket), 1);
    }

    /* With room again the put works. */
    ASSERT_EQ(ag_objstore_put(f.s, "new", 3, big, sizeof(big), NULL, NULL), 0);
    ASSERT_EQ(ag_objstore_get(f.s, "new", 3, &obj), 0);
    ASSERT_EQ(obj.len, sizeof(big));
    ag_obj_free(&obj);
    fixture_close(&f);
}

/* Each child writes the key over and over with content of its own: one letter
 * repeated, a size of its own. A reader must only ever see one whole version. */
static int racing_writer(const char *bucket, int id)
{
    ag_objstore_t *s;
    if (ag_objstore_open_fs(bucket, &s) < 0)
        return 2;
    size_t len = 1000 + (size_t)id * 7919;
    char *buf = malloc(len);
    if (buf == NULL)
        return 3;
    for (int i = 0; i < 40; i++) {
        memset(buf, 'A' + id, len);
        char ct[32];
        snprintf(ct, sizeof(ct), "text/x-%c", 'A' + id);
        ag_obj_put_opts_t o = {.content_type = ct};
        if (ag_objstore_put(s, "race", 4, buf, len, &o, NULL) < 0)
            return 4;
    }
    free(buf);
    ag_objstore_close(s);
    return 0;
}

static bool consistent(const ag_obj_t *obj)
{
    if (obj->len == 0 || obj->info.size != obj->len || obj->info.content_type == NULL)
        return false;
    char c = obj->data[0];
    int id = c - 'A';
    if (id < 0 || id > 3 || obj->len != 1000 + (size_t)id * 7919)
        return false;
    for (size_t i = 0; i < obj->len; i++) {
        if (obj->data[i] != c)
            return false;
    }
    char etag[33];
    md5_hex(obj->data, obj->len, etag);
    return strcmp(etag, obj->info.etag) == 0 && obj->info.content_type[7] == c;
}

TEST(obj_racing_writers_never_tear)
{
    fixture_t f;
    ASSERT(fixture_open(&f));
    pid_t pids[4];
    fflush(NULL);
    for (int c = 0; c < 4; c++) {
        pids[c] = fork();
        ASSERT(pids[c] >= 0);
        if (pids[c] == 0)
            _exit(racing_writer(f.bucket, c));
    }
    /* Read while any writer runs (bounded), then collect them. */
    int reads = 0, bad = 0, running = 4, status[4] = {0};
    bool done[4] = {false};
    for (int i = 0; i < 200000 && running > 0; i++) {
        ag_obj_t obj;
        int rc = ag_objstore_get(f.s, "race", 4, &obj);
        if (rc != AG_ENOTFOUND) { /* missing only before the first rename */
            if (rc < 0 || !consistent(&obj))
                bad++;
            reads++;
            ag_obj_free(&obj);
        }
        for (int c = 0; c < 4; c++) {
            if (!done[c] && waitpid(pids[c], &status[c], WNOHANG) == pids[c]) {
                done[c] = true;
                running--;
            }
        }
    }
    for (int c = 0; c < 4; c++) {
        if (!done[c])
            ASSERT_EQ(waitpid(pids[c], &status[c], 0), pids[c]);
        ASSERT(WIFEXITED(status[c]));
        ASSERT_EQ(WEXITSTATUS(status[c]), 0);
    }
    ASSERT_EQ(bad, 0);
    ASSERT(reads > 0);
    ag_obj_t obj;
    ASSERT_EQ(ag_objstore_get(f.s, "race", 4, &obj), 0);
    ASSERT(consistent(&obj));
    ag_obj_free(&obj);
    ASSERT_EQ(files_under(f.bucket), 1);
    ASSERT_EQ(count_tmp, 0);
    fprintf(stderr, "  (%d reads raced the writers)\n", reads);
    fixture_close(&f);
}

TEST(obj_open_read_is_a_snapshot)
{
    fixture_t f;
    ASSERT(fixture_open(&f));
    ASSERT_EQ(put_str(f.s, "doc", "first version"), 0);
    ag_obj_info_t info;
    int fd;
    uint64_t off;
    ASSERT_EQ(ag_objstore_open_read(f.s, "doc", 3, &info, &fd, &off), 0);
    ASSERT_EQ(info.size, 13);
    ASSERT_EQ(put_str(f.s, "doc", "second"), 0);
    char buf[32] = {0};
    ASSERT_EQ(pread(fd, buf, (size_t)info.size, (off_t)off), 13);
    ASSERT_STREQ(buf, "first version");
    close(fd);
    ag_obj_info_free(&info);
    ASSERT_EQ(ag_objstore_open_read(f.s, "nope", 4, &info, &fd, &off), AG_ENOTFOUND);
    ASSERT_EQ(fd, -1);
    fixture_close(&f);
}

TEST(obj_stale_temp_files_reaped)
{
    fixture_t f;
    ASSERT(fixture_open(&f));
    ASSERT_EQ(put_str(f.s, "k", "v"), 0);
    /* Plant a crashed put's temp file (two hours old) and a running one's. */
    char shard[1024] = "", path[1100];
    DIR *d = opendir(f.bucket);
    ASSERT(d != NULL);
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (de->d_name[0] != '.')
            snprintf(shard, sizeof(shard), "%s/%s", f.bucket, de->d_name);
    }
    closedir(d);
    ASSERT(shard[0] != '\0');
    snprintf(path, sizeof(path), "%s/.tmp-1-1-old", shard);
    FILE *fp = fopen(path, "w");
    ASSERT(fp != NULL);
    fclose(fp);
    struct timespec old[2] = {{time(NULL) - 7200, 0}, {time(NULL) - 7200, 0}};
    ASSERT_EQ(utimensat(AT_FDCWD, path, old, 0), 0);
    snprintf(path, sizeof(path), "%s/.tmp-1-2-new", shard);
    fp = fopen(path, "w");
    ASSERT(fp != NULL);
    fclose(fp);
    ASSERT_EQ(files_under(f.bucket), 3);

    ag_obj_list_result_t r;
    ASSERT_EQ(ag_objstore_list(f.s, NULL, &r), 0);
    ASSERT_EQ(r.count, 1);
    ag_obj_list_result_free(&r);
    ASSERT_EQ(files_under(f.bucket), 2);
    ASSERT_EQ(count_tmp, 1);
    ASSERT_EQ(access(path, F_OK), 0); /* the fresh one stays */
    fixture_close(&f);
}

TEST(obj_buckets)
{
    char *root = make_tmpdir();
    ASSERT(root != NULL);
    ASSERT_EQ(ag_objstore_bucket_create(root, "my-bucket"), 0);
    ASSERT_EQ(ag_objstore_bucket_create(root, "my-bucket"), AG_EEXISTS);
    ASSERT_EQ(ag_objstore_bucket_create(root, "abc"), 0);
    const char *bad[] = {
        "ab",   "-abc", "abc-",
        "Abc",  "a_bc", "a.bc",
        "../x", "",     "a123456789012345678901234567890123456789012345678901234567890123"};
    ASSERT_EQ(strlen(bad[AG_ARRAY_LEN(bad) - 1]), 64);
    ag_objstore_t *s = NULL;
    for (size_t i = 0; i < AG_ARRAY_LEN(bad); i++) {
        ASSERT_EQ(ag_objstore_bucket_create(root, bad[i]), AG_OBJ_EBUCKET_NAME);
        ASSERT_EQ(ag_objstore_open_bucket(root, bad[i], true, &s), AG_OBJ_EBUCKET_NAME);
    }
    ASSERT_EQ(ag_objstore_open_bucket(root, "missing", false, &s), AG_OBJ_ENO_BUCKET);
    ASSERT(s == NULL);
    ASSERT_EQ(ag_objstore_open_bucket(root, "made-on-open", true, &s), 0);
    ag_objstore_close(s);

    char **names;
    size_t n;
    ASSERT_EQ(ag_objstore_bucket_list(root, &names, &n), 0);
    ASSERT_EQ(n, 3);
    ASSERT_STREQ(names[0], "abc");
    ASSERT_STREQ(names[1], "made-on-open");
    ASSERT_STREQ(names[2], "my-bucket");
    ag_objstore_bucket_list_free(names, n);

    ASSERT_EQ(ag_objstore_open_bucket(root, "my-bucket", false, &s), 0);
    ASSERT_EQ(put_str(s, "x/y", "data"), 0);
    ASSERT_EQ(ag_objstore_bucket_delete(root, "my-bucket"), AG_OBJ_EBUCKET_NOT_EMPTY);
    ag_obj_t obj;
    ASSERT_EQ(ag_objstore_get(s, "x/y", 3, &obj), 0); /* the refused delete kept it */
    ag_obj_free(&obj);
    ASSERT_EQ(ag_objstore_delete(s, "x/y", 3), 0);
    ag_objstore_close(s);
    ASSERT_EQ(ag_objstore_bucket_delete(root, "my-bucket"), 0);
    ASSERT_EQ(ag_objstore_bucket_delete(root, "my-bucket"), AG_OBJ_ENO_BUCKET);
    ASSERT_EQ(ag_objstore_bucket_list(root, &names, &n), 0);
    ASSERT_EQ(n, 2);
    ag_objstore_bucket_list_free(names, n);

    char none[600];
    snprintf(none, sizeof(none), "%s/none", root);
    ASSERT_EQ(ag_objstore_bucket_list(none, &names, &n), 0);
    ASSERT_EQ(n, 0);
    rm_rf(root);
}

TEST(obj_backend_by_name)
{
    char *root = make_tmpdir();
    ASSERT(root != NULL);
    ag_objstore_t *s = (ag_objstore_t *)&s; /* must come back NULL */
    ag_objstore_options_t o = {.backend = "gcs"};
    ASSERT_EQ(ag_objstore_open_bucket_opts(root, "new-bucket", true, &o, &s), AG_OBJ_EBACKEND);
    ASSERT(s == NULL);
    /* s3 without [aigate.s3] says what it needs, and makes no folder either */
    s = (ag_objstore_t *)&s;
    o.backend = "s3";
    ASSERT_EQ(ag_objstore_open_bucket_opts(root, "new-bucket", true, &o, &s), AG_OBJ_ES3_CONFIG);
    ASSERT(s == NULL);
    ASSERT(strstr(ag_strerror(AG_OBJ_EBACKEND), "fs") != NULL);
    char **names;
    size_t n;
    ASSERT_EQ(ag_objstore_bucket_list(root, &names, &n), 0);
    ASSERT_EQ(n, 0); /* an unknown backend creates nothing */

    o.backend = AG_OBJ_BACKEND_FS;
    ASSERT_EQ(ag_objstore_open_bucket_opts(root, "new-bucket", true, &o, &s), 0);
    ASSERT_STREQ(s->ops->name, "fs");
    ASSERT_EQ(put_str(s, "k", "v"), 0);
    ag_objstore_close(s);
    char dir[600];
    snprintf(dir, sizeof(dir), "%s/r2/new-bucket", root);
    ASSERT_EQ(ag_objstore_open(dir, NULL, &s), 0); /* the default backend finds it */
    ag_obj_t obj;
    ASSERT_EQ(ag_objstore_get(s, "k", 1, &obj), 0);
    ASSERT_MEMEQ(obj.data, obj.len, "v");
    ag_obj_free(&obj);
    ag_objstore_close(s);
    rm_rf(root);
}

TEST(obj_cursor_names_the_last_entry)
{
    fixture_t f;
    ASSERT(fixture_open(&f));
    ASSERT_EQ(put_str(f.s, "a/1", "x"), 0);
    ASSERT_EQ(put_str(f.s, "a/2", "x"), 0);
    ASSERT_EQ(put_str(f.s, "b", "x"), 0);

    /* A page that ends with a delimited prefix: 'p' + hex("a/"). */
    ag_obj_list_opts_t o = {.delimiter = "/", .delimiter_len = 1, .limit = 1};
    ag_obj_list_result_t r;
    ASSERT_EQ(ag_objstore_list(f.s, &o, &r), 0);
    ASSERT_EQ(r.nprefixes, 1);
    ASSERT(r.truncated);
    ASSERT_STREQ(r.cursor, "p612f");
    ag_obj_list_result_free(&r);
    o.cursor = "p612f";
    ASSERT_EQ(ag_objstore_list(f.s, &o, &r), 0);
    ASSERT_EQ(r.count, 1);
    ASSERT_STREQ(r.objects[0].key, "b");
    ASSERT(!r.truncated && r.cursor == NULL);
    ag_obj_list_result_free(&r);

    /* A page that ends with an object: 'o' + hex("a/1"). */
    ag_obj_list_opts_t flat = {.limit = 1};
    ASSERT_EQ(ag_objstore_list(f.s, &flat, &r), 0);
    ASSERT_STREQ(r.cursor, "o612f31");
    ag_obj_list_result_free(&r);
    flat.cursor = "o612f31";
    flat.limit = 0;
    ASSERT_EQ(ag_objstore_list(f.s, &flat, &r), 0);
    ASSERT_EQ(r.count, 2);
    ASSERT_STREQ(r.objects[0].key, "a/2");
    ag_obj_list_result_free(&r);

    /* Malformed: empty, odd, upper case (never written), a NUL byte, too long. */
    static char longc[2 + 2 * (AG_OBJ_MAX_KEY_LEN + 1)];
    longc[0] = 'o';
    memset(longc + 1, '6', 2 * (AG_OBJ_MAX_KEY_LEN + 1));
    const char *bad[] = {"o", "p", "o612", "o612F31", "o6100", "x61", longc};
    for (size_t i = 0; i < AG_ARRAY_LEN(bad); i++) {
        ag_obj_list_opts_t b = {.cursor = bad[i]};
        ASSERT_MSG_(ag_objstore_list(f.s, &b, &r) == AG_OBJ_ECURSOR, "cursor %zu", i);
        ASSERT(r.objects == NULL && r.cursor == NULL);
    }
    ag_obj_list_opts_t empty = {.cursor = ""}; /* no cursor: from the start */
    ASSERT_EQ(ag_objstore_list(f.s, &empty, &r), 0);
    ASSERT_EQ(r.count, 3);
    ag_obj_list_result_free(&r);
    fixture_close(&f);
}

AG_TESTS(AG_TEST_ENTRY(obj_roundtrip_and_head) AG_TEST_ENTRY(obj_custom_metadata)
             AG_TEST_ENTRY(obj_overwrite_delete_and_clashing_keys)
                 AG_TEST_ENTRY(obj_list_prefix_delimiter_cursor) AG_TEST_ENTRY(obj_list_paging_2500)
                     AG_TEST_ENTRY(obj_bad_keys_refused_and_contained)
                         AG_TEST_ENTRY(obj_failed_put_leaves_nothing)
                             AG_TEST_ENTRY(obj_racing_writers_never_tear)
                                 AG_TEST_ENTRY(obj_open_read_is_a_snapshot)
                                     AG_TEST_ENTRY(obj_stale_temp_files_reaped)
                                         AG_TEST_ENTRY(obj_buckets)
                                             AG_TEST_ENTRY(obj_backend_by_name)
                                                 AG_TEST_ENTRY(obj_cursor_names_the_last_entry))
