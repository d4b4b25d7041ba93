/* SPDX-License-Identifier: MIT
 *
 * test_kv.c: the KV store on real LMDB files in a temporary folder: round
 * trips, metadata, expiry on an injected clock, byte-ordered paged listings,
 * Workers KV limits, a full map and a file-size limit, several writer
 * processes and threads, and the namespace folders.
 */
#include "util/platform.h"

#include <errno.h>
#include <ftw.h>
#include <pthread.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"
#include "store/kv.h"
#include "util/errors.h"

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

/* A fresh folder under /tmp; removed with rm_rf() at the end of the test. */
static char *make_tmpdir(void)
{
    char tmpl[] = "/tmp/ag_test_kv_XXXXXX";
    char *d = mkdtemp(tmpl);
    return d ? strdup(d) : NULL;
}

static void rm_rf(char *dir)
{
    if (dir != NULL)
        nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    free(dir);
}

/* The injected clock: tests move time by assigning to it. */
static int64_t fake_now_ms;
static int64_t fake_clock(void *ctx)
{
    return *(int64_t *)ctx;
}

static ag_kv_t *open_store(const char *dir, size_t map_size)
{
    ag_kv_options_t opts = {
        .now_ms = fake_clock, .clock_ctx = &fake_now_ms, .lmdb = {.map_size = map_size}};
    ag_kv_t *kv = NULL;
    int rc = ag_kv_open_lmdb(dir, &opts, &kv);
    if (rc < 0)
        fprintf(stderr, "  open %s: %s\n", dir, ag_strerror(rc));
    return kv;
}

static int put_str(ag_kv_t *kv, const char *key, const char *val)
{
    return ag_kv_put(kv, key, strlen(key), val, strlen(val), NULL);
}

static int cmp_bytes(const void *a, size_t alen, const void *b, size_t blen)
{
    size_t n = alen < blen ? alen : blen;
    int c = n ? memcmp(a, b, n) : 0;
    return c ? c : (alen > blen) - (alen < blen);
}

TEST(kv_roundtrip)
{
    char *dir = make_tmpdir();
    ASSERT(dir != NULL);
    fake_now_ms = 1700000000000;
    ag_kv_t *kv = open_store(dir, 0);
    ASSERT(kv != NULL);
    ag_kv_value_t v;

    ASSERT_EQ(ag_kv_get(kv, "missing", 7, &v), AG_ENOTFOUND);
    ASSERT_EQ(put_str(kv, "greeting", "hello"), 0);
    ASSERT_EQ(ag_kv_get(kv, "greeting", 8, &v), 0);
    ASSERT_MEMEQ(v.data, v.len, "hello");
    ASSERT_EQ(v.data[v.len], '\0');
    ASSERT(v.metadata == NULL);
    ASSERT_EQ(v.expiration, 0);
    ag_kv_value_free(&v);

    /* Overwrite, binary value with NUL bytes, a key holding NUL, empty value. */
    ASSERT_EQ(put_str(kv, "greeting", "bonjour"), 0);
    ASSERT_EQ(ag_kv_get(kv, "greeting", 8, &v), 0);
    ASSERT_MEMEQ(v.data, v.len, "bonjour");
    ag_kv_value_free(&v);
    const char bin[] = {0, 1, 2, 0, (char)0xff, 0};
    ASSERT_EQ(ag_kv_put(kv, "k\0x", 3, bin, sizeof(bin), NULL), 0);
    ASSERT_EQ(ag_kv_get(kv, "k\0x", 3, &v), 0);
    ASSERT_EQ(v.len, sizeof(bin));
    ASSERT(memcmp(v.data, bin, sizeof(bin)) == 0);
    ag_kv_value_free(&v);
    ASSERT_EQ(ag_kv_get(kv, "k", 1, &v), AG_ENOTFOUND);
    ASSERT_EQ(ag_kv_put(kv, "empty", 5, NULL, 0, NULL), 0);
    ASSERT_EQ(ag_kv_get(kv, "empty", 5, &v), 0);
    ASSERT_EQ(v.len, 0);
    ag_kv_value_free(&v);

    ASSERT_EQ(ag_kv_delete(kv, "greeting", 8), 0);
    ASSERT_EQ(ag_kv_get(kv, "greeting", 8, &v), AG_ENOTFOUND);
    ASSERT_EQ(ag_kv_delete(kv, "greeting", 8), 0); /* deleting twice is fine */

    /* Reopening finds what was written. */
    ag_kv_close(kv);
    kv = open_store(dir, 0);
    ASSERT(kv != NULL);
    ASSERT_EQ(ag_kv_get(kv, "k\0x", 3, &v), 0);
    ASSERT_EQ(v.len, sizeof(bin));
    ag_kv_value_free(&v);
    ag_kv_stat_t st;
    ASSERT_EQ(ag_kv_stat(kv, &st), 0);
    ASSERT_EQ(st.entries, 2);
    ASSERT_EQ(st.map_size, AG_KV_DEFAULT_MAP_SIZE);
    ASSERT(st.used_bytes > 0);
    ag_kv_close(kv);
    rm_rf(dir);
}

TEST(kv_metadata)
{
    char *dir = make_tmpdir();
    ASSERT(dir != NULL);
    ag_kv_t *kv = open_store(dir, 0);
    ASSERT(kv != NULL);
    const char *meta = "{\"owner\":\"ann\",\"n\":[1,2]}";
    ag_kv_put_opts_t o = {.metadata = meta, .metadata_len = strlen(meta)};
    ASSERT_EQ(ag_kv_put(kv, "doc", 3, "body", 4, &o), 0);

    ag_kv_value_t v;
    ASSERT_EQ(ag_kv_get_with_metadata(kv, "doc", 3, &v), 0);
    ASSERT_MEMEQ(v.data, v.len, "body");
    ASSERT(v.metadata != NULL);
    ASSERT_MEMEQ(v.metadata, v.metadata_len, meta);
    ag_kv_value_free(&v);
    ASSERT_EQ(ag_kv_get(kv, "doc", 3, &v), 0); /* plain get leaves it out */
    ASSERT(v.metadata == NULL);
    ag_kv_value_free(&v);

    ag_kv_list_result_t r;
    ASSERT_EQ(ag_kv_list(kv, NULL, 0, NULL, 0, &r), 0);
    ASSERT_EQ(r.count, 1);
    ASSERT_MEMEQ(r.keys[0].metadata, r.keys[0].metadata_len, meta);
    ag_kv_list_result_free(&r);

    /* Any JSON value is metadata, as in Workers KV. */
    ag_kv_put_opts_t s = {.metadata = "\"just a string\"", .metadata_len = 15};
    ASSERT_EQ(ag_kv_put(kv, "doc", 3, "b2", 2, &s), 0);
    ASSERT_EQ(ag_kv_get_with_metadata(kv, "doc", 3, &v), 0);
    ASSERT_MEMEQ(v.metadata, v.metadata_len, "\"just a string\"");
    ag_kv_value_free(&v);

    /* A put without metadata drops the old metadata. */
    ASSERT_EQ(put_str(kv, "doc", "b3"), 0);
    ASSERT_EQ(ag_kv_get_with_metadata(kv, "doc", 3, &v), 0);
    ASSERT(v.metadata == NULL);
    ag_kv_value_free(&v);
    ag_kv_close(kv);
    rm_rf(dir);
}

TEST(kv_ttl_expiry_on_injected_clock)
{
    char *dir = make_tmpdir();
    ASSERT(dir != NULL);
    fake_now_ms = 1700000000500;
    ag_kv_t *kv = open_store(dir, 0);
    ASSERT(kv != NULL);
    ag_kv_put_opts_t o = {.expiration_ttl = 60};
    ASSERT_EQ(ag_kv_put(kv, "session", 7, "s1", 2, &o), 0);
    ASSERT_EQ(put_str(kv, "stay", "forever"), 0);

    ag_kv_value_t v;
    ASSERT_EQ(ag_kv_get(kv, "session", 7, &v), 0);
    ASSERT_EQ(v.expiration_ms, 1700000060500);
    ASSERT_EQ(v.expiration, 1700000061); /* rounded up to whole seconds */
    ag_kv_value_free(&v);

    fake_now_ms = 1700000060499; /* one ms before expiry: still there */
    ASSERT_EQ(ag_kv_get(kv, "session", 7, &v), 0);
    ag_kv_value_free(&v);
    ag_kv_list_result_t r;
    ASSERT_EQ(ag_kv_list(kv, NULL, 0, NULL, 0, &r), 0);
    ASSERT_EQ(r.count, 2);
    ASSERT_EQ(r.keys[0].expiration, 1700000061);
    ag_kv_list_result_free(&r);

    fake_now_ms = 1700000060500; /* at expiry: gone at once, from get and list */
    ASSERT_EQ(ag_kv_get(kv, "session", 7, &v), AG_ENOTFOUND);
    ASSERT_EQ(ag_kv_get_with_metadata(kv, "session", 7, &v), AG_ENOTFOUND);
    ASSERT_EQ(ag_kv_list(kv, NULL, 0, NULL, 0, &r), 0);
    ASSERT_EQ(r.count, 1);
    ASSERT_MEMEQ(r.keys[0].name, r.keys[0].name_len, "stay");
    ASSERT(r.list_complete);
    ag_kv_list_result_free(&r);

    /* Still stored until the sweep reclaims it. */
    ag_kv_stat_t st;
    ASSERT_EQ(ag_kv_stat(kv, &st), 0);
    ASSERT_EQ(st.entries, 2);
    ASSERT_EQ(ag_kv_sweep(kv, 0), 1);
    ASSERT_EQ(ag_kv_stat(kv, &st), 0);
    ASSERT_EQ(st.entries, 1);
    ASSERT_EQ(ag_kv_sweep(kv, 0), 0);
    ASSERT_EQ(ag_kv_get(kv, "stay", 4, &v), 0);
    ag_kv_value_free(&v);

    /* A put over an expired key makes it live again, without expiry. */
    ASSERT_EQ(ag_kv_put(kv, "session", 7, "s1", 2, &o), 0);
    fake_now_ms += 3600 * 1000;
    ASSERT_EQ(put_str(kv, "session", "s2"), 0);
    ASSERT_EQ(ag_kv_get(kv, "session", 7, &v), 0);
    ASSERT_EQ(v.expiration, 0);
    ag_kv_value_free(&v);
    ag_kv_close(kv);
    rm_rf(dir);
}

TEST(kv_absolute_expiration)
{
    char *dir = make_tmpdir();
    ASSERT(dir != NULL);
    fake_now_ms = 1800000000000;
    ag_kv_t *kv = open_store(dir, 0);
    ASSERT(kv != NULL);
    ag_kv_put_opts_t o = {.expiration = 1800000100};
    ASSERT_EQ(ag_kv_put(kv, "k", 1, "v", 1, &o), 0);
    ag_kv_value_t v;
    ASSERT_EQ(ag_kv_get(kv, "k", 1, &v), 0);
    ASSERT_EQ(v.expiration, 1800000100);
    ag_kv_value_free(&v);
    fake_now_ms = 1800000099999;
    ASSERT_EQ(ag_kv_get(kv, "k", 1, &v), 0);
    ag_kv_value_free(&v);
    fake_now_ms = 1800000100000;
    ASSERT_EQ(ag_kv_get(kv, "k", 1, &v), AG_ENOTFOUND);

    /* Refused: in the past, now, negative TTL, both at once. */
    ag_kv_put_opts_t past = {.expiration = 1800000000};
    ASSERT_EQ(ag_kv_put(kv, "k", 1, "v", 1, &past), AG_KV_EEXPIRATION);
    ag_kv_put_opts_t now = {.expiration = 1800000100};
    ASSERT_EQ(ag_kv_put(kv, "k", 1, "v", 1, &now), AG_KV_EEXPIRATION);
    ag_kv_put_opts_t neg = {.expiration_ttl = -5};
    ASSERT_EQ(ag_kv_put(kv, "k", 1, "v", 1, &neg), AG_KV_EEXPIRATION);
    ag_kv_put_opts_t both = {.expiration_ttl = 100, .expiration = 1900000000};
    ASSERT_EQ(ag_kv_put(kv, "k", 1, "v", 1, &both), AG_KV_EEXPIRATION);
    ag_kv_put_opts_t huge = {.expiration_ttl = INT64_MAX};
    ASSERT_EQ(ag_kv_put(kv, "k", 1, "v", 1, &huge), AG_KV_EEXPIRATION);
    ASSERT_EQ(ag_kv_get(kv, "k", 1, &v), AG_ENOTFOUND); /* refused puts wrote nothing */
    ag_kv_close(kv);
    rm_rf(dir);
}

TEST(kv_bounded_sweep_resumes)
{
    char *dir = make_tmpdir();
    ASSERT(dir != NULL);
    fake_now_ms = 1700000000000;
    ag_kv_t *kv = open_store(dir, 0);
    ASSERT(kv != NULL);
    char key[32];
    for (int i = 0; i < 100; i++) {
        snprintf(key, sizeof(key), "k%03d", i);
        ag_kv_put_opts_t o = {.expiration_ttl = i % 2 ? 0 : 10};
        ASSERT_EQ(ag_kv_put(kv, key, strlen(key), "v", 1, &o), 0);
    }
    fake_now_ms += 11000;
    int total = 0, calls = 0;
    for (; calls < 100 && total < 50; calls++) {
        int n = ag_kv_sweep(kv, 7);
        ASSERT(n >= 0 && n <= 7);
        total += n;
    }
    ASSERT_EQ(total, 50);
    /* 7 entries a call and half of them expired: about 14 calls, not one. */
    ASSERT(calls >= 13 && calls <= 16);
    ASSERT_EQ(ag_kv_sweep(kv, 0), 0);
    ag_kv_stat_t st;
    ASSERT_EQ(ag_kv_stat(kv, &st), 0);
    ASSERT_EQ(st.entries, 50);
    for (int i = 1; i < 100; i += 2) {
        snprintf(key, sizeof(key), "k%03d", i);
        ag_kv_value_t v;
        ASSERT_EQ(ag_kv_get(kv, key, strlen(key), &v), 0);
        ag_kv_value_free(&v);
    }
    ag_kv_close(kv);
    rm_rf(dir);
}

static int cmp_key_ptrs(const void *a, const void *b)
{
    const char *x = *(const char *const *)a, *y = *(const char *const *)b;
    return cmp_bytes(x, strlen(x), y, strlen(y));
}

TEST(kv_list_sorted_by_bytes)
{
    char *dir = make_tmpdir();
    ASSERT(dir != NULL);
    ag_kv_t *kv = open_store(dir, 0);
    ASSERT(kv != NULL);
    const char *keys[] = {"b",
                          "a",
                          "Z",
                          "A",
                          "z",
                          "\xc3\xa9" /* é */,
                          "\xe6\x97\xa5\xe6\x9c\xac" /* 日本 */,
                          "ab",
                          "a b",
                          "\xf0\x9f\x98\x80" /* emoji */,
                          "~",
                          "0",
                          "\x7f",
                          "B",
                          "aB",
                          "\xc3\xa9t\xc3\xa9"};
    size_t n = AG_ARRAY_LEN(keys);
    for (size_t i = 0; i < n; i++)
        ASSERT_EQ(put_str(kv, keys[i], "v"), 0);
    const char *want[AG_ARRAY_LEN(keys)];
    memcpy(want, keys, sizeof(keys));
    qsort(want, n, sizeof(want[0]), cmp_key_ptrs);

    ag_kv_list_result_t r;
    ASSERT_EQ(ag_kv_list(kv, NULL, 0, NULL, 0, &r), 0);
    ASSERT_EQ(r.count, n);
    ASSERT(r.list_complete);
    ASSERT(r.cursor == NULL);
    for (size_t i = 0; i < n; i++)
        ASSERT_MEMEQ(r.keys[i].name, r.keys[i].name_len, want[i]);
    /* Byte order, not case-folded or locale order. */
    ASSERT_MEMEQ(r.keys[1].name, r.keys[1].name_len, "A");
    ASSERT_MEMEQ(r.keys[n - 1].name, r.keys[n - 1].name_len, "\xf0\x9f\x98\x80");
    ag_kv_list_result_free(&r);

    /* A prefix of multibyte text. */
    ASSERT_EQ(ag_kv_list(kv, "\xc3\xa9", 2, NULL, 0, &r), 0);
    ASSERT_EQ(r.count, 2);
    ASSERT_MEMEQ(r.keys[0].name, r.keys[0].name_len, "\xc3\xa9");
    ASSERT_MEMEQ(r.keys[1].name, r.keys[1].name_len, "\xc3\xa9t\xc3\xa9");
    ag_kv_list_result_free(&r);
    ag_kv_close(kv);
    rm_rf(dir);
}

/* Pages through a listing; checks order and page sizes; returns the count. */
static long list_all(ag_kv_t *kv, const char *prefix, unsigned limit, int *pages)
{
    char *cursor = NULL;
    char last[64] = "";
    size_t lastlen = 0;
    long total = 0;
    *pages = 0;
    unsigned page_max = limit ? limit : 1000;
    for (int guard = 0; guard < 100; guard++) {
        ag_kv_list_result_t r;
        int rc = ag_kv_list(kv, prefix, prefix ? strlen(prefix) : 0, cursor, limit, &r);
        free(cursor);
        cursor = NULL;
        if (rc < 0)
            return rc;
        (*pages)++;
        if (r.count > page_max || (!r.list_complete && r.count != page_max)) {
            ag_kv_list_result_free(&r);
            return -1000;
        }
        for (size_t i = 0; i < r.count; i++) {
            const ag_kv_list_key_t *k = &r.keys[i];
            bool ordered = total == 0 || cmp_bytes(last, lastlen, k->name, k->name_len) < 0;
            bool prefixed = !prefix || strncmp(k->name, prefix, strlen(prefix)) == 0;
            if (!ordered || !prefixed || k->name_len >= sizeof(last)) {
                ag_kv_list_result_free(&r);
                return -1001;
            }
            memcpy(last, k->name, k->name_len);
            lastlen = k->name_len;
            total++;
        }
        bool done = r.list_complete;
        if (done != (r.cursor == NULL)) {
            ag_kv_list_result_free(&r);
            return -1002;
        }
        if (!done)
            cursor = strdup(r.cursor);
        ag_kv_list_result_free(&r);
        if (done)
            return total;
    }
    return -1003;
}

TEST(kv_list_paging_5000_keys)
{
    char *dir = make_tmpdir();
    ASSERT(dir != NULL);
    ag_kv_t *kv = open_store(dir, 0);
    ASSERT(kv != NULL);
    /* Insert in a scrambled order so that the store, not insertion, sorts. */
    char key[32];
    for (int i = 0; i < 5000; i++) {
        int k = (i * 2039) % 5000; /* 2039 is prime to 5000: a permutation */
        snprintf(key, sizeof(key), "p/%05d", k);
        ASSERT_EQ(put_str(kv, key, "v"), 0);
    }
    for (int i = 0; i < 300; i++) {
        snprintf(key, sizeof(key), "q/%03d", i);
        ASSERT_EQ(put_str(kv, key, "v"), 0);
    }
    for (int i = 0; i < 200; i++) {
        snprintf(key, sizeof(key), "o/%03d", i);
        ASSERT_EQ(put_str(kv, key, "v"), 0);
    }
    int pages;
    ASSERT_EQ(list_all(kv, "p/", 1000, &pages), 5000);
    ASSERT_EQ(pages, 5); /* the 5th page knows nothing with the prefix follows */
    ASSERT_EQ(list_all(kv, NULL, 1000, &pages), 5500);
    ASSERT_EQ(pages, 6);
    ASSERT_EQ(list_all(kv, NULL, 0, &pages), 5500); /* 0: the default, 1000 */
    ASSERT_EQ(pages, 6);
    ASSERT_EQ(list_all(kv, "p/01", 1000, &pages), 1000);
    ASSERT_EQ(pages, 1);
    ASSERT_EQ(list_all(kv, "q/", 7, &pages), 300);
    ASSERT_EQ(pages, 43);
    ASSERT_EQ(list_all(kv, "zzz", 10, &pages), 0);

    /* A cursor stays valid when its key is deleted meanwhile. */
    ag_kv_list_result_t r;
    ASSERT_EQ(ag_kv_list(kv, "p/", 2, NULL, 1000, &r), 0);
    ASSERT_EQ(r.count, 1000);
    ASSERT_MEMEQ(r.keys[999].name, r.keys[999].name_len, "p/00999");
    char *cursor = strdup(r.cursor);
    ag_kv_list_result_free(&r);
    ASSERT_EQ(ag_kv_delete(kv, "p/00999", 7), 0);
    int rc = ag_kv_list(kv, "p/", 2, cursor, 3, &r);
    free(cursor);
    ASSERT_EQ(rc, 0);
    ASSERT_EQ(r.count, 3);
    ASSERT_MEMEQ(r.keys[0].name, r.keys[0].name_len, "p/01000");
    ag_kv_list_result_free(&r);

    /* A cursor from another prefix's listing starts at the prefix. */
    ASSERT_EQ(ag_kv_list(kv, "o/", 2, NULL, 1, &r), 0);
    cursor = strdup(r.cursor);
    ag_kv_list_result_free(&r);
    rc = ag_kv_list(kv, "q/", 2, cursor, 1, &r);
    free(cursor);
    ASSERT_EQ(rc, 0);
    ASSERT_MEMEQ(r.keys[0].name, r.keys[0].name_len, "q/000");
    ag_kv_list_result_free(&r);
    ag_kv_close(kv);
    rm_rf(dir);
}

/* 512-byte keys exceed LMDB's 511-byte key limit and take the long path. */
TEST(kv_512_byte_keys)
{
    char *dir = make_tmpdir();
    ASSERT(dir != NULL);
    fake_now_ms = 1700000000000;
    ag_kv_t *kv = open_store(dir, 0);
    ASSERT(kv != NULL);
    static char k[6][513];
    size_t lens[6];
    const char last[] = {'b', 'a', 'z', '0'};
    for (int i = 0; i < 4; i++) {
        memset(k[i], 'x', 511);
        k[i][511] = last[i];
        lens[i] = 512;
    }
    memset(k[4], 'x', 511); /* the 511-byte head of the others */
    lens[4] = 511;
    memset(k[5], 'x', 510);
    k[5][510] = 'y'; /* sorts after every xxx...x key */
    lens[5] = 511;
    for (int i = 0; i < 6; i++) {
        char val[8];
        snprintf(val, sizeof(val), "v%d", i);
        ASSERT_EQ(ag_kv_put(kv, k[i], lens[i], val, strlen(val), NULL), 0);
    }
    ASSERT_EQ(put_str(kv, "a", "short"), 0);
    ASSERT_EQ(put_str(kv, "y", "short"), 0);
    for (int i = 0; i < 6; i++) {
        ag_kv_value_t v;
        char val[8];
        snprintf(val, sizeof(val), "v%d", i);
        ASSERT_EQ(ag_kv_get(kv, k[i], lens[i], &v), 0);
        ASSERT_MEMEQ(v.data, v.len, val);
        ag_kv_value_free(&v);
    }
    /* Expected order: a, x*511, x*511+"0", +"a", +"b", +"z", x*510+"y", y. */
    const int order[] = {4, 3, 1, 0, 2, 5};
    ag_kv_list_result_t r;
    ASSERT_EQ(ag_kv_list(kv, NULL, 0, NULL, 0, &r), 0);
    ASSERT_EQ(r.count, 8);
    ASSERT_MEMEQ(r.keys[0].name, r.keys[0].name_len, "a");
    for (int i = 0; i < 6; i++) {
        ASSERT_EQ(r.keys[i + 1].name_len, lens[order[i]]);
        ASSERT(memcmp(r.keys[i + 1].name, k[order[i]], lens[order[i]]) == 0);
    }
    ASSERT_MEMEQ(r.keys[7].name, r.keys[7].name_len, "y");
    ag_kv_list_result_free(&r);

    /* Paging with a 512-byte cursor, and a prefix that only long keys match. */
    ASSERT_EQ(ag_kv_list(kv, NULL, 0, NULL, 3, &r), 0);
    ASSERT_EQ(r.keys[2].name_len, 512);
    char *cursor = strdup(r.cursor);
    ag_kv_list_result_free(&r);
    int rc = ag_kv_list(kv, NULL, 0, cursor, 2, &r);
    free(cursor);
    ASSERT_EQ(rc, 0);
    ASSERT_EQ(r.count, 2);
    ASSERT(memcmp(r.keys[0].name, k[1], 512) == 0);
    ASSERT(memcmp(r.keys[1].name, k[0], 512) == 0);
    ag_kv_list_result_free(&r);
    ASSERT_EQ(ag_kv_list(kv, k[0], 512, NULL, 0, &r), 0);
    ASSERT_EQ(r.count, 1);
    ASSERT(memcmp(r.keys[0].name, k[0], 512) == 0);
    ag_kv_list_result_free(&r);

    /* Delete, and expiry plus sweep, on long keys. */
    ASSERT_EQ(ag_kv_delete(kv, k[1], 512), 0);
    ag_kv_value_t v;
    ASSERT_EQ(ag_kv_get(kv, k[1], 512, &v), AG_ENOTFOUND);
    ASSERT_EQ(ag_kv_get(kv, k[0], 512, &v), 0);
    ag_kv_value_free(&v);
    ag_kv_put_opts_t o = {.expiration_ttl = 5};
    ASSERT_EQ(ag_kv_put(kv, k[2], 512, "t", 1, &o), 0);
    fake_now_ms += 5000;
    ASSERT_EQ(ag_kv_get(kv, k[2], 512, &v), AG_ENOTFOUND);
    ASSERT_EQ(ag_kv_sweep(kv, 0), 1);
    ASSERT_EQ(ag_kv_list(kv, NULL, 0, NULL, 0, &r), 0);
    ASSERT_EQ(r.count, 6); /* a, 4, 3, 0, 5, y */
    ASSERT(memcmp(r.keys[3].name, k[0], 512) == 0);
    ag_kv_list_result_free(&r);
    ag_kv_stat_t st;
    ASSERT_EQ(ag_kv_stat(kv, &st), 0);
    ASSERT_EQ(st.entries, 6);
    ag_kv_close(kv);
    rm_rf(dir);
}

TEST(kv_limits_and_errors)
{
    char *dir = make_tmpdir();
    ASSERT(dir != NULL);
    ag_kv_t *kv = open_store(dir, 0);
    ASSERT(kv != NULL);
    static char key[513];
    memset(key, 'k', sizeof(key));
    ASSERT_EQ(ag_kv_put(kv, key, 513, "v", 1, NULL), AG_KV_EKEY_TOO_LONG);
    ASSERT_EQ(ag_kv_put(kv, key, 512, "v", 1, NULL), 0);
    ag_kv_value_t v;
    ASSERT_EQ(ag_kv_get(kv, key, 513, &v), AG_KV_EKEY_TOO_LONG);
    ASSERT_EQ(ag_kv_delete(kv, key, 513), AG_KV_EKEY_TOO_LONG);
    ASSERT_EQ(ag_kv_put(kv, "", 0, "v", 1, NULL), AG_KV_EKEY_EMPTY);
    ASSERT_EQ(ag_kv_put(kv, ".", 1, "v", 1, NULL), AG_KV_EKEY_DOT);
    ASSERT_EQ(ag_kv_put(kv, "..", 2, "v", 1, NULL), AG_KV_EKEY_DOT);
    ASSERT_EQ(ag_kv_put(kv, "...", 3, "v", 1, NULL), 0);
    ASSERT_EQ(ag_kv_put(kv, "\xff", 1, "v", 1, NULL), AG_KV_EKEY_UTF8);

    /* 25 MiB is allowed, one byte more is not. */
    char *big = malloc(AG_KV_MAX_VALUE_LEN + 1);
    ASSERT(big != NULL);
    memset(big, 'B', AG_KV_MAX_VALUE_LEN + 1);
    big[12345] = 'x';
    ASSERT_EQ(ag_kv_put(kv, "big", 3, big, AG_KV_MAX_VALUE_LEN + 1, NULL), AG_KV_EVALUE_TOO_BIG);
    ASSERT_EQ(ag_kv_put(kv, "big", 3, big, AG_KV_MAX_VALUE_LEN, NULL), 0);
    ASSERT_EQ(ag_kv_get(kv, "big", 3, &v), 0);
    ASSERT_EQ(v.len, AG_KV_MAX_VALUE_LEN);
    ASSERT(memcmp(v.data, big, AG_KV_MAX_VALUE_LEN) == 0);
    ag_kv_value_free(&v);
    free(big);

    /* Metadata: 1024 bytes fit, 1025 do not; it must be JSON. */
    char meta[1026];
    meta[0] = '"';
    memset(meta + 1, 'm', 1022);
    meta[1023] = '"';
    ag_kv_put_opts_t o = {.metadata = meta, .metadata_len = 1024};
    ASSERT_EQ(ag_kv_put(kv, "m", 1, "v", 1, &o), 0);
    meta[1023] = 'm';
    meta[1024] = '"';
    o.metadata_len = 1025;
    ASSERT_EQ(ag_kv_put(kv, "m", 1, "v", 1, &o), AG_KV_EMETADATA_TOO_BIG);
    ag_kv_put_opts_t bad = {.metadata = "{\"a\":", .metadata_len = 5};
    ASSERT_EQ(ag_kv_put(kv, "m", 1, "v", 1, &bad), AG_KV_EMETADATA_JSON);
    ag_kv_put_opts_t empty = {.metadata = "", .metadata_len = 0};
    ASSERT_EQ(ag_kv_put(kv, "m", 1, "v", 1, &empty), AG_KV_EMETADATA_JSON);
    ag_kv_put_opts_t trailing = {.metadata = "{} x", .metadata_len = 4};
    ASSERT_EQ(ag_kv_put(kv, "m", 1, "v", 1, &trailing), AG_KV_EMETADATA_JSON);
    ASSERT_EQ(ag_kv_get_with_metadata(kv, "m", 1, &v), 0);
    ASSERT_EQ(v.metadata_len, 1024); /* the refused puts changed nothing */
    ag_kv_value_free(&v);

    ag_kv_list_result_t r;
    ASSERT_EQ(ag_kv_list(kv, NULL, 0, NULL, 1001, &r), AG_KV_ELIMIT);
    ASSERT_EQ(ag_kv_list(kv, NULL, 0, "xyz", 10, &r), AG_KV_ECURSOR);
    ASSERT_EQ(ag_kv_list(kv, NULL, 0, "abc", 10, &r), AG_KV_ECURSOR);

    /* Messages and statuses: clear text, and the HTTP status of each code. */
    ASSERT(strstr(ag_strerror(AG_KV_EKEY_TOO_LONG), "512") != NULL);
    ASSERT(strstr(ag_strerror(AG_KV_EMAP_FULL), "full") != NULL);
    ASSERT_STREQ(ag_strerror(AG_ENOTFOUND), "no such key or route");
    ASSERT_STREQ(ag_strerror(-ENOENT), strerror(ENOENT));
    ASSERT_EQ(ag_err_http_status(AG_KV_EKEY_TOO_LONG), 413);
    ASSERT_EQ(ag_err_http_status(AG_KV_EVALUE_TOO_BIG), 413);
    ASSERT_EQ(ag_err_http_status(AG_KV_EKEY_EMPTY), 400);
    ASSERT_EQ(ag_err_http_status(AG_KV_EMAP_FULL), 507);
    ASSERT_EQ(ag_err_http_status(AG_KV_EDISK_FULL), 507);
    ASSERT_EQ(ag_err_http_status(AG_KV_ECORRUPT), 500);
    ASSERT_EQ(ag_err_http_status(AG_ENOTFOUND), 404);
    ag_kv_close(kv);
    rm_rf(dir);
}

TEST(kv_map_full_is_clear_and_recoverable)
{
    char *dir = make_tmpdir();
    ASSERT(dir != NULL);
    ag_kv_t *kv = open_store(dir, 1 << 20);
    ASSERT(kv != NULL);
    enum { VAL = 16 * 1024 };
    static char val[VAL];
    char key[32];
    int rc = 0, written = 0;
    for (; written < 1000; written++) {
        snprintf(key, sizeof(key), "k%04d", written);
        memset(val, 'a' + written % 26, VAL);
        rc = ag_kv_put(kv, key, strlen(key), val, VAL, NULL);
        if (rc < 0)
            break;
    }
    ASSERT_EQ(rc, AG_KV_EMAP_FULL);
    ASSERT_EQ(ag_err_http_status(rc), ag_err_http_status(AG_EFULL));
    ASSERT(written > 10 && written < 64); /* 1 MiB holds about 60 of them */

    /* Everything written before reads back; the failed put left nothing. */
    ag_kv_value_t v;
    for (int i = 0; i < written; i++) {
        snprintf(key, sizeof(key), "k%04d", i);
        ASSERT_EQ(ag_kv_get(kv, key, strlen(key), &v), 0);
        ASSERT_EQ(v.len, VAL);
        ASSERT(v.data[0] == 'a' + i % 26 && v.data[VAL - 1] == 'a' + i % 26);
        ag_kv_value_free(&v);
    }
    snprintf(key, sizeof(key), "k%04d", written);
    ASSERT_EQ(ag_kv_get(kv, key, strlen(key), &v), AG_ENOTFOUND);
    ag_kv_list_result_t r;
    ASSERT_EQ(ag_kv_list(kv, NULL, 0, NULL, 0, &r), 0);
    ASSERT_EQ(r.count, (size_t)written);
    ag_kv_list_result_free(&r);

    /* Deleting frees room for the value that did not fit. LMDB reuses a page
     * freed by one write transaction from the second one after it on (the
     * previous snapshot stays intact), so free a few values' worth. */
    for (int i = 0; i < 4; i++) {
        snprintf(key, sizeof(key), "k%04d", i);
        ASSERT_EQ(ag_kv_delete(kv, key, strlen(key)), 0);
    }
    snprintf(key, sizeof(key), "k%04d", written);
    memset(val, 'Q', VAL);
    ASSERT_EQ(ag_kv_put(kv, key, strlen(key), val, VAL, NULL), 0);
    ASSERT_EQ(ag_kv_get(kv, key, strlen(key), &v), 0);
    ASSERT_EQ(v.data[100], 'Q');
    ag_kv_value_free(&v);
    ag_kv_close(kv);
    rm_rf(dir);
}

static ag_kv_t *open_evicting(const char *dir, size_t max_bytes)
{
    ag_kv_options_t opts = {
        .now_ms = fake_clock, .clock_ctx = &fake_now_ms, .lmdb = {.max_bytes = max_bytes}};
    ag_kv_t *kv = NULL;
    int rc = ag_kv_open_lmdb(dir, &opts, &kv);
    if (rc < 0)
        fprintf(stderr, "  open %s: %s\n", dir, ag_strerror(rc));
    return kv;
}

static long long file_size(const char *dir, const char *name)
{
    char path[512];
    struct stat st;
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    return stat(path, &st) == 0 ? (long long)st.st_size : -1;
}

/* A cache of 1 MiB takes 10 MiB of puts: every put succeeds, the file stays
 * within the bound, the newest entries are there and the soonest-expiring are
 * the ones gone; an entry without expiry outlives them. */
TEST(kv_evicting_store_stays_within_its_bound)
{
    char *dir = make_tmpdir();
    ASSERT(dir != NULL);
    fake_now_ms = 1700000000000;
    enum { MAX = 1 << 20, VAL = 10 * 1024, N = 1000 };
    ag_kv_t *kv = open_evicting(dir, MAX);
    ASSERT(kv != NULL);
    static char val[VAL];
    char key[32];
    ASSERT_EQ(put_str(kv, "forever", "kept"), 0);
    for (int i = 0; i < N; i++) {
        snprintf(key, sizeof(key), "k%05d", i);
        memset(val, 'a' + i % 26, VAL);
        /* Later puts expire later, as a cache's fills with one TTL do. */
        ag_kv_put_opts_t o = {.expiration_ttl = 3600 + i};
        int rc = ag_kv_put(kv, key, strlen(key), val, VAL, &o);
        ASSERT_EQ(rc, 0);
        ASSERT(file_size(dir, "data.mdb") <= MAX);
    }
    ag_kv_stat_t st;
    ASSERT_EQ(ag_kv_stat(kv, &st), 0);
    ASSERT(st.map_size <= MAX);
    ASSERT(st.entries > 20 && st.entries < 100); /* about 1 MiB of 10 KiB values */
    ag_kv_value_t v;
    for (int i = N - 20; i < N; i++) {
        snprintf(key, sizeof(key), "k%05d", i);
        ASSERT_EQ(ag_kv_get(kv, key, strlen(key), &v), 0);
        ASSERT(v.len == VAL && v.data[0] == 'a' + i % 26);
        ag_kv_value_free(&v);
    }
    for (int i = 0; i < 100; i++) {
        snprintf(key, sizeof(key), "k%05d", i);
        ASSERT_EQ(ag_kv_get(kv, key, strlen(key), &v), AG_ENOTFOUND);
    }
    ASSERT_EQ(ag_kv_get(kv, "forever", 7, &v), 0);
    ag_kv_value_free(&v);
    ag_kv_close(kv);
    ASSERT(file_size(dir, "data.mdb") <= MAX);
    rm_rf(dir);
}

/* Expired entries go before live ones, whatever their expiry. */
TEST(kv_evicting_store_takes_expired_entries_first)
{
    char *dir = make_tmpdir();
    ASSERT(dir != NULL);
    fake_now_ms = 1700000000000;
    enum { MAX = 1 << 20, VAL = 10 * 1024 };
    ag_kv_t *kv = open_evicting(dir, MAX);
    ASSERT(kv != NULL);
    static char val[VAL];
    char key[32];
    /* Long-lived entries first, then short-lived ones that then expire. */
    for (int i = 0; i < 30; i++) {
        snprintf(key, sizeof(key), "long%02d", i);
        ASSERT_EQ(
            ag_kv_put(kv, key, strlen(key), val, VAL, &(ag_kv_put_opts_t){.expiration_ttl = 86400}),
            0);
    }
    for (int i = 0; i < 200; i++) {
        snprintf(key, sizeof(key), "short%03d", i);
        fake_now_ms += 10;
        ASSERT_EQ(
            ag_kv_put(kv, key, strlen(key), val, VAL, &(ag_kv_put_opts_t){.expiration_ttl = 1}), 0);
    }
    ag_kv_value_t v;
    for (int i = 0; i < 30; i++) {
        snprintf(key, sizeof(key), "long%02d", i);
        ASSERT_EQ(ag_kv_get(kv, key, strlen(key), &v), 0);
        ag_kv_value_free(&v);
    }
    ag_kv_close(kv);
    rm_rf(dir);
}

/* A value larger than the whole bound is dropped, not an error, and said once
 * a minute with a count; the store goes on taking entries that fit. */
TEST(kv_evicting_store_drops_what_cannot_fit_and_says_so_once_a_minute)
{
    char *dir = make_tmpdir();
    ASSERT(dir != NULL);
    fake_now_ms = 1700000000000;
    enum { MAX = 1 << 20, BIG = 2 << 20 };
    ag_kv_t *kv = open_evicting(dir, MAX);
    ASSERT(kv != NULL);
    char *big = calloc(1, BIG);
    ASSERT(big != NULL);
    char logpath[] = "/tmp/ag_test_kv_log_XXXXXX";
    int logfd = mkstemp(logpath);
    ASSERT(logfd >= 0);
    fflush(stderr);
    int saved = dup(STDERR_FILENO);
    dup2(logfd, STDERR_FILENO);
    int rcs[21];
    for (int i = 0; i < 20; i++)
        rcs[i] = ag_kv_put(kv, "big", 3, big, BIG, NULL);
    fake_now_ms += 61000;
    rcs[20] = ag_kv_put(kv, "big", 3, big, BIG, NULL);
    fflush(stderr);
    dup2(saved, STDERR_FILENO);
    close(saved);
    for (int i = 0; i < 21; i++)
        ASSERT_EQ(rcs[i], AG_KV_DROPPED);
    char text[4096] = "";
    ssize_t n = pread(logfd, text, sizeof(text) - 1, 0);
    close(logfd);
    unlink(logpath);
    ASSERT(n > 0);
    text[n] = '\0';
    int lines = 0;
    for (char *p = text; (p = strstr(p, "cache store ")) != NULL; p++)
        lines++;
    ASSERT_EQ(lines, 2);
    ASSERT(strstr(text, "dropped 1 entry ") != NULL);
    ASSERT(strstr(text, "dropped 20 entries ") != NULL);
    ASSERT_EQ(put_str(kv, "small", "fits"), 0);
    ag_kv_value_t v;
    ASSERT_EQ(ag_kv_get(kv, "small", 5, &v), 0);
    ag_kv_value_free(&v);
    free(big);
    ag_kv_close(kv);
    rm_rf(dir);
}

TEST(kv_file_size_limit_is_disk_full)
{
    char *dir = make_tmpdir();
    ASSERT(dir != NULL);
    ag_kv_t *kv = open_store(dir, 0);
    ASSERT(kv != NULL);
    ASSERT_EQ(put_str(kv, "before", "ok"), 0);
    char path[512];
    snprintf(path, sizeof(path), "%s/data.mdb", dir);
    struct stat st;
    ASSERT_EQ(stat(path, &st), 0);

    /* A file-size limit stands in for a full disk: both refuse the append. */
    struct rlimit old, lim;
    ASSERT_EQ(getrlimit(RLIMIT_FSIZE, &old), 0);
    lim = old;
    lim.rlim_cur = (rlim_t)st.st_size + 64 * 1024;
    void (*oldsig)(int) = signal(SIGXFSZ, SIG_IGN);
    ASSERT_EQ(setrlimit(RLIMIT_FSIZE, &lim), 0);
    static char val[1 << 20];
    memset(val, 'v', sizeof(val));
    int rc = ag_kv_put(kv, "big", 3, val, sizeof(val), NULL);
    setrlimit(RLIMIT_FSIZE, &old);
    signal(SIGXFSZ, oldsig);
    ASSERT_EQ(rc, AG_KV_EDISK_FULL);
    ASSERT_EQ(ag_err_http_status(rc), ag_err_http_status(AG_EFULL));

    ag_kv_value_t v;
    ASSERT_EQ(ag_kv_get(kv, "big", 3, &v), AG_ENOTFOUND);
    ASSERT_EQ(ag_kv_get(kv, "before", 6, &v), 0);
    ag_kv_value_free(&v);
    ASSERT_EQ(ag_kv_put(kv, "big", 3, val, sizeof(val), NULL), 0); /* room again */
    ASSERT_EQ(ag_kv_get(kv, "big", 3, &v), 0);
    ASSERT_EQ(v.len, sizeof(val));
    ag_kv_value_free(&v);
    ag_kv_close(kv);
    rm_rf(dir);
}

enum { CHILDREN = 4, PER_CHILD = 500 };

static int child_writer(const char *dir, int id)
{
    ag_kv_t *kv = NULL;
    if (ag_kv_open_lmdb(dir, NULL, &kv) < 0)
        return 2;
    char key[32], val[32];
    for (int i = 0; i < PER_CHILD; i++) {
        snprintf(key, sizeof(key), "c%d/%03d", id, i);
        snprintf(val, sizeof(val), "%d:%d", id, i);
        if (put_str(kv, key, val) < 0 || put_str(kv, "shared-counter", val) < 0)
            return 3;
    }
    ag_kv_close(kv);
    return 0;
}

TEST(kv_concurrent_writer_processes)
{
    char *dir = make_tmpdir();
    ASSERT(dir != NULL);
    /* The parent holds the store open the whole time, as the server would
     * while the CLI writes. */
    ag_kv_t *kv = open_store(dir, 0);
    ASSERT(kv != NULL);
    pid_t pids[CHILDREN];
    fflush(NULL);
    for (int c = 0; c < CHILDREN; c++) {
        pids[c] = fork();
        ASSERT(pids[c] >= 0);
        if (pids[c] == 0)
            _exit(child_writer(dir, c)); /* _exit: no atexit or leak report in the child */
    }
    for (int c = 0; c < CHILDREN; c++) {
        int status = 0;
        ASSERT_EQ(waitpid(pids[c], &status, 0), pids[c]);
        ASSERT(WIFEXITED(status));
        ASSERT_EQ(WEXITSTATUS(status), 0);
    }
    int pages;
    ASSERT_EQ(list_all(kv, "c", 1000, &pages), CHILDREN * PER_CHILD);
    char key[32], val[32];
    for (int c = 0; c < CHILDREN; c++) {
        for (int i = 0; i < PER_CHILD; i += 97) {
            snprintf(key, sizeof(key), "c%d/%03d", c, i);
            snprintf(val, sizeof(val), "%d:%d", c, i);
            ag_kv_value_t v;
            ASSERT_EQ(ag_kv_get(kv, key, strlen(key), &v), 0);
            ASSERT_MEMEQ(v.data, v.len, val);
            ag_kv_value_free(&v);
        }
    }
    /* The shared key holds one writer's last value, whole. */
    ag_kv_value_t v;
    ASSERT_EQ(ag_kv_get(kv, "shared-counter", 14, &v), 0);
    int id = -1, n = -1;
    char *colon = strchr(v.data, ':');
    if (colon != NULL) {
        id = (int)strtol(v.data, NULL, 10);
        n = (int)strtol(colon + 1, NULL, 10);
    }
    ag_kv_value_free(&v);
    ASSERT(id >= 0 && id < CHILDREN);
    ASSERT_EQ(n, PER_CHILD - 1);
    ag_kv_close(kv);
    rm_rf(dir);
}

typedef struct {
    ag_kv_t *kv;
    int id;
    int errors;
} thread_arg_t;

static void *thread_writer(void *p)
{
    thread_arg_t *a = p;
    char key[32], val[32];
    for (int i = 0; i < 200; i++) {
        snprintf(key, sizeof(key), "t%d/%03d", a->id, i);
        snprintf(val, sizeof(val), "%d", i * a->id);
        if (put_str(a->kv, key, val) < 0)
            a->errors++;
        ag_kv_value_t v;
        if (ag_kv_get(a->kv, key, strlen(key), &v) < 0 || strcmp(v.data, val) != 0)
            a->errors++;
        ag_kv_value_free(&v);
        if (i % 50 == 0) {
            ag_kv_list_result_t r;
            if (ag_kv_list(a->kv, "t", 1, NULL, 100, &r) < 0)
                a->errors++;
            ag_kv_list_result_free(&r);
        }
    }
    return NULL;
}

TEST(kv_threads_share_one_handle)
{
    char *dir = make_tmpdir();
    ASSERT(dir != NULL);
    ag_kv_t *kv = open_store(dir, 0);
    ASSERT(kv != NULL);
    /* A second open of the same folder shares the environment. */
    ag_kv_t *kv2 = open_store(dir, 0);
    ASSERT(kv2 != NULL);
    pthread_t th[4];
    thread_arg_t args[4];
    for (int i = 0; i < 4; i++) {
        args[i] = (thread_arg_t){i % 2 ? kv2 : kv, i + 1, 0};
        ASSERT_EQ(pthread_create(&th[i], NULL, thread_writer, &args[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        ASSERT_EQ(args[i].errors, 0);
    }
    ag_kv_close(kv2);
    int pages;
    ASSERT_EQ(list_all(kv, "t", 1000, &pages), 800);
    ag_kv_close(kv);
    rm_rf(dir);
}

TEST(kv_namespaces)
{
    char *dir = make_tmpdir();
    ASSERT(dir != NULL);
    ag_kv_t *kv = NULL;
    ASSERT_EQ(ag_kv_open_namespace(dir, "sessions", NULL, &kv), 0);
    ASSERT_EQ(put_str(kv, "k", "v"), 0);
    ag_kv_close(kv);
    ASSERT_EQ(ag_kv_open_namespace(dir, "CACHE_2", NULL, &kv), 0);
    ag_kv_close(kv);
    const char *bad[] = {"",
                         "a/b",
                         "..",
                         ".",
                         "a b",
                         "ns\xc3\xa9",
                         "a1234567890123456789012345678901234567890123456789012345678901234"};
    ASSERT_EQ(strlen(bad[AG_ARRAY_LEN(bad) - 1]), 65);
    for (size_t i = 0; i < AG_ARRAY_LEN(bad); i++)
        ASSERT_EQ(ag_kv_open_namespace(dir, bad[i], NULL, &kv), AG_KV_EBINDING);
    ASSERT(kv == NULL);

    /* Stray entries under kv/ are not namespaces. */
    char path[512];
    snprintf(path, sizeof(path), "%s/kv/not.valid", dir);
    ASSERT_EQ(mkdir(path, 0700), 0);
    snprintf(path, sizeof(path), "%s/kv/afile", dir);
    FILE *f = fopen(path, "w");
    ASSERT(f != NULL);
    fclose(f);

    char **names;
    size_t n;
    ASSERT_EQ(ag_kv_namespace_list(dir, &names, &n), 0);
    ASSERT_EQ(n, 2);
    ASSERT_STREQ(names[0], "CACHE_2");
    ASSERT_STREQ(names[1], "sessions");
    ag_kv_namespace_list_free(names, n);

    /* The data reopens through the binding. */
    ASSERT_EQ(ag_kv_open_namespace(dir, "sessions", NULL, &kv), 0);
    ag_kv_value_t v;
    ASSERT_EQ(ag_kv_get(kv, "k", 1, &v), 0);
    ag_kv_value_free(&v);
    ag_kv_close(kv);

    snprintf(path, sizeof(path), "%s/none", dir);
    ASSERT_EQ(ag_kv_namespace_list(path, &names, &n), 0);
    ASSERT_EQ(n, 0);
    rm_rf(dir);
}

TEST(kv_backend_by_name)
{
    char *dir = make_tmpdir();
    ASSERT(dir != NULL);
    ag_kv_t *kv = (ag_kv_t *)&kv; /* must come back NULL */
    ag_kv_options_t o = {.backend = "memcached"};
    ASSERT_EQ(ag_kv_open_namespace(dir, "ns", &o, &kv), AG_KV_EBACKEND);
    ASSERT(kv == NULL);
    ASSERT(strstr(ag_strerror(AG_KV_EBACKEND), "lmdb") != NULL);
    ASSERT(strstr(ag_strerror(AG_KV_EBACKEND), "redis") != NULL);
    o.backend = "";
    ASSERT_EQ(ag_kv_open(dir, &o, &kv), AG_KV_EBACKEND);
    char path[512];
    snprintf(path, sizeof(path), "%s/kv/ns", dir);
    struct stat st;
    ASSERT_EQ(stat(path, &st), -1); /* an unknown backend creates nothing */

    /* By name, and by default; the LMDB options reach the backend. */
    o = (ag_kv_options_t){.backend = AG_KV_BACKEND_LMDB, .lmdb = {.map_size = 4 << 20}};
    ASSERT_EQ(ag_kv_open_namespace(dir, "ns", &o, &kv), 0);
    ASSERT(kv != NULL);
    ASSERT_STREQ(kv->ops->name, "lmdb");
    ag_kv_stat_t sst;
    ASSERT_EQ(ag_kv_stat(kv, &sst), 0);
    ASSERT_EQ(sst.map_size, 4 << 20);
    ASSERT_EQ(put_str(kv, "k", "v"), 0);
    ag_kv_close(kv);
    ag_kv_options_t nosync = {.lmdb.no_sync = true};
    ASSERT_EQ(ag_kv_open(path, &nosync, &kv), 0);
    ag_kv_value_t v;
    ASSERT_EQ(ag_kv_get(kv, "k", 1, &v), 0);
    ASSERT_MEMEQ(v.data, v.len, "v");
    ag_kv_value_free(&v);
    ag_kv_close(kv);
    rm_rf(dir);
}

/* ---- asynchronous get and put ---------------------------------------------------------- */

/* What a callback saw. */
typedef struct cb_log {
    int calls;
    int rc;
    bool had_value;
    char data[64];
    size_t len;
    int64_t expiration;
    bool take;           /* take the value over instead of letting the store release it */
    ag_kv_value_t taken; /* what was taken over */
} cb_log_t;

static void on_get(void *ctx, int rc, ag_kv_value_t *value)
{
    cb_log_t *l = ctx;
    l->calls++;
    l->rc = rc;
    l->had_value = value != NULL;
    if (value != NULL) {
        l->len = value->len < sizeof(l->data) ? value->len : sizeof(l->data);
        memcpy(l->data, value->data, l->len);
        l->expiration = value->expiration;
        if (l->take) {
            l->taken = *value;
            *value = (ag_kv_value_t){0};
        }
    }
}

static void on_put(void *ctx, int rc)
{
    cb_log_t *l = ctx;
    l->calls++;
    l->rc = rc;
}

/* Something other than NULL, to see that a call sets *op. */
#define NOT_SET ((ag_kv_op_t *)&fake_now_ms)

TEST(kv_async_completes_inline_on_lmdb)
{
    char *dir = make_tmpdir();
    ASSERT(dir != NULL);
    fake_now_ms = 1700000000000;
    ag_kv_t *kv = open_store(dir, 0);
    ASSERT(kv != NULL);

    /* put_async then get: LMDB runs the callback before the call returns. */
    cb_log_t pl = {0};
    ag_kv_op_t *op = NOT_SET;
    ag_kv_put_opts_t po = {.expiration_ttl = 60};
    ASSERT_EQ(ag_kv_put_async(kv, "k", 1, "value", 5, &po, on_put, &pl, &op), 0);
    ASSERT_EQ(pl.calls, 1);
    ASSERT_EQ(pl.rc, 0);
    ASSERT(op == NULL);
    ag_kv_value_t v;
    ASSERT_EQ(ag_kv_get(kv, "k", 1, &v), 0);
    ASSERT_MEMEQ(v.data, v.len, "value");
    ASSERT_EQ(v.expiration, 1700000060);
    ag_kv_value_free(&v);

    cb_log_t gl = {0};
    op = NOT_SET;
    ASSERT_EQ(ag_kv_get_async(kv, "k", 1, on_get, &gl, &op), 0);
    ASSERT_EQ(gl.calls, 1);
    ASSERT_EQ(gl.rc, 0);
    ASSERT(gl.had_value);
    ASSERT_MEMEQ(gl.data, gl.len, "value");
    ASSERT_EQ(gl.expiration, 1700000060);
    ASSERT(op == NULL);
    ag_kv_op_cancel(op); /* what an inline completion leaves: a no-op */
    ag_kv_op_cancel(NULL);
    ASSERT_EQ(gl.calls, 1);

    /* The callback may take the value over; it then owns it (ASan would see a
     * double free if the store released it too). */
    cb_log_t tl = {.take = true};
    ASSERT_EQ(ag_kv_get_async(kv, "k", 1, on_get, &tl, NULL), 0); /* op may be NULL */
    ASSERT_EQ(tl.calls, 1);
    ASSERT_MEMEQ(tl.taken.data, tl.taken.len, "value");
    ag_kv_value_free(&tl.taken);

    /* A put_async with no options, and a binary value, reads back the same way. */
    cb_log_t p2 = {0};
    ASSERT_EQ(ag_kv_put_async(kv, "bin", 3, "a\0b", 3, NULL, on_put, &p2, NULL), 0);
    ASSERT_EQ(p2.calls, 1);
    ASSERT_EQ(p2.rc, 0);
    cb_log_t g2 = {0};
    ASSERT_EQ(ag_kv_get_async(kv, "bin", 3, on_get, &g2, NULL), 0);
    ASSERT_EQ(g2.len, 3);
    ASSERT(memcmp(g2.data, "a\0b", 3) == 0);
    ASSERT_EQ(g2.expiration, 0);
    ag_kv_close(kv);
    rm_rf(dir);
}

TEST(kv_async_not_found_and_store_errors_come_through_the_callback)
{
    char *dir = make_tmpdir();
    ASSERT(dir != NULL);
    fake_now_ms = 1700000000000;
    ag_kv_t *kv = open_store(dir, 0);
    ASSERT(kv != NULL);
    cb_log_t l = {0};
    ag_kv_op_t *op = NOT_SET;
    ASSERT_EQ(ag_kv_get_async(kv, "missing", 7, on_get, &l, &op), 0);
    ASSERT_EQ(l.calls, 1);
    ASSERT_EQ(l.rc, AG_ENOTFOUND);
    ASSERT(!l.had_value);
    ASSERT(op == NULL);

    /* Expired is missing too. */
    ag_kv_put_opts_t po = {.expiration_ttl = 1};
    ASSERT_EQ(ag_kv_put(kv, "short", 5, "v", 1, &po), 0);
    fake_now_ms += 1000;
    l = (cb_log_t){0};
    ASSERT_EQ(ag_kv_get_async(kv, "short", 5, on_get, &l, NULL), 0);
    ASSERT_EQ(l.calls, 1);
    ASSERT_EQ(l.rc, AG_ENOTFOUND);
    ag_kv_close(kv);

    /* A put that the store refuses (a full map) is a completion, not a
     * synchronous failure: the arguments were fine. */
    rm_rf(dir);
    dir = make_tmpdir(); /* a new folder, so that a small map size holds */
    ASSERT(dir != NULL);
    kv = open_store(dir, 1 << 20);
    ASSERT(kv != NULL);
    static char big[512 * 1024];
    memset(big, 'x', sizeof(big));
    l = (cb_log_t){0};
    int rc = 0;
    for (int i = 0; i < 8 && l.rc == 0; i++) {
        char key[16];
        snprintf(key, sizeof(key), "big%d", i);
        rc = ag_kv_put_async(kv, key, strlen(key), big, sizeof(big), NULL, on_put, &l, NULL);
        if (rc < 0)
            break;
    }
    ASSERT_EQ(rc, 0);
    ASSERT_EQ(l.rc, AG_KV_EMAP_FULL);
    ag_kv_close(kv);
    rm_rf(dir);
}

TEST(kv_async_synchronous_failure_never_calls_back)
{
    char *dir = make_tmpdir();
    ASSERT(dir != NULL);
    fake_now_ms = 1700000000000;
    ag_kv_t *kv = open_store(dir, 0);
    ASSERT(kv != NULL);
    cb_log_t l = {0};
    ag_kv_op_t *op = NOT_SET;
    ASSERT_EQ(ag_kv_get_async(kv, "", 0, on_get, &l, &op), AG_KV_EKEY_EMPTY);
    ASSERT(op == NULL);
    static char longkey[AG_KV_MAX_KEY_LEN + 1];
    memset(longkey, 'k', sizeof(longkey));
    ASSERT_EQ(ag_kv_get_async(kv, longkey, sizeof(longkey), on_get, &l, &op), AG_KV_EKEY_TOO_LONG);
    ASSERT_EQ(ag_kv_get_async(kv, "..", 2, on_get, &l, &op), AG_KV_EKEY_DOT);
    ASSERT_EQ(ag_kv_get_async(kv, "\xff", 1, on_get, &l, &op), AG_KV_EKEY_UTF8);
    ASSERT_EQ(ag_kv_get_async(kv, "k", 1, NULL, &l, &op), AG_EINVALID);

    op = NOT_SET;
    ASSERT_EQ(ag_kv_put_async(kv, "", 0, "v", 1, NULL, on_put, &l, &op), AG_KV_EKEY_EMPTY);
    ASSERT(op == NULL);
    ASSERT_EQ(ag_kv_put_async(kv, "k", 1, NULL, AG_KV_MAX_VALUE_LEN + 1, NULL, on_put, &l, &op),
              AG_KV_EVALUE_TOO_BIG);
    ASSERT_EQ(ag_kv_put_async(kv, "k", 1, NULL, 1, NULL, on_put, &l, &op), AG_EINVALID);
    ag_kv_put_opts_t both = {.expiration_ttl = 60, .expiration = 1800000000};
    ASSERT_EQ(ag_kv_put_async(kv, "k", 1, "v", 1, &both, on_put, &l, &op), AG_KV_EEXPIRATION);
    ag_kv_put_opts_t past = {.expiration = 1600000000};
    ASSERT_EQ(ag_kv_put_async(kv, "k", 1, "v", 1, &past, on_put, &l, &op), AG_KV_EEXPIRATION);
    ag_kv_put_opts_t badmeta = {.metadata = "{", .metadata_len = 1};
    ASSERT_EQ(ag_kv_put_async(kv, "k", 1, "v", 1, &badmeta, on_put, &l, &op), AG_KV_EMETADATA_JSON);
    ASSERT_EQ(ag_kv_put_async(kv, "k", 1, "v", 1, NULL, NULL, &l, &op), AG_EINVALID);
    ASSERT_EQ(l.calls, 0);

    /* None of the refused puts wrote anything. */
    ag_kv_value_t v;
    ASSERT_EQ(ag_kv_get(kv, "k", 1, &v), AG_ENOTFOUND);
    ag_kv_close(kv);
    rm_rf(dir);
}

/* A backend that completes later, as a network one would: each op waits in a
 * one-slot queue until the test calls deferred_complete(). */
typedef struct deferred_op {
    ag_kv_op_t base;
    bool is_get;
    ag_kv_get_cb get_cb;
    ag_kv_put_cb put_cb;
    void *ctx;
    char key[16];
    size_t keylen;
} deferred_op_t;

typedef struct deferred_kv {
    ag_kv_t base;
    deferred_op_t *pending;
    int started, cancelled;
    char stored[16]; /* the one key it holds, "" when none */
} deferred_kv_t;

static int deferred_get(ag_kv_t *kv, const void *key, size_t keylen, bool with_metadata,
                        ag_kv_value_t *out)
{
    (void)kv, (void)key, (void)keylen, (void)with_metadata, (void)out;
    return -ENOTSUP;
}

static int deferred_put(ag_kv_t *kv, const void *key, size_t keylen, const void *val, size_t vallen,
                        int64_t expiration_ms, const char *metadata, size_t metadata_len)
{
    (void)kv, (void)key, (void)keylen, (void)val, (void)vallen, (void)expiration_ms;
    (void)metadata, (void)metadata_len;
    return -ENOTSUP;
}

static deferred_op_t *deferred_start(ag_kv_t *kv, const void *key, size_t keylen, void *ctx)
{
    deferred_kv_t *d = (deferred_kv_t *)kv;
    deferred_op_t *o = calloc(1, sizeof(*o));
    if (o == NULL || keylen >= sizeof(o->key)) {
        free(o);
        return NULL;
    }
    o->base.kv = kv;
    o->ctx = ctx;
    memcpy(o->key, key, keylen); /* borrowed for the call only: copy */
    o->keylen = keylen;
    d->pending = o;
    d->started++;
    return o;
}

static int deferred_get_async(ag_kv_t *kv, const void *key, size_t keylen, bool with_metadata,
                              ag_kv_get_cb cb, void *ctx, ag_kv_op_t **op)
{
    (void)with_metadata;
    deferred_op_t *o = deferred_start(kv, key, keylen, ctx);
    if (o == NULL)
        return -ENOMEM;
    o->is_get = true;
    o->get_cb = cb;
    *op = &o->base;
    return 0;
}

static int deferred_put_async(ag_kv_t *kv, const void *key, size_t keylen, const void *val,
                              size_t vallen, int64_t expiration_ms, const char *metadata,
                              size_t metadata_len, ag_kv_put_cb cb, void *ctx, ag_kv_op_t **op)
{
    (void)val, (void)vallen, (void)expiration_ms, (void)metadata, (void)metadata_len;
    deferred_op_t *o = deferred_start(kv, key, keylen, ctx);
    if (o == NULL)
        return -ENOMEM;
    o->put_cb = cb;
    *op = &o->base;
    return 0;
}

static void deferred_cancel(ag_kv_op_t *op)
{
    deferred_kv_t *d = (deferred_kv_t *)op->kv;
    if (d->pending == (deferred_op_t *)op)
        d->pending = NULL;
    d->cancelled++;
    free(op);
}

/* The backend's event loop turning: completes the pending op, if any. */
static void deferred_complete(deferred_kv_t *d)
{
    deferred_op_t *o = d->pending;
    if (o == NULL)
        return;
    d->pending = NULL;
    if (o->is_get) {
        ag_kv_value_t v = {0};
        int rc = AG_ENOTFOUND;
        if (strlen(d->stored) == o->keylen && memcmp(d->stored, o->key, o->keylen) == 0) {
            v.data = strdup("deferred");
            v.len = 8;
            v.expiration_ms = 1700000000001;
            rc = v.data ? 0 : -ENOMEM;
        }
        ag__kv_get_done(o->get_cb, o->ctx, rc, &v);
    } else {
        memcpy(d->stored, o->key, o->keylen);
        d->stored[o->keylen] = '\0';
        o->put_cb(o->ctx, 0);
    }
    free(o);
}

static const ag_kv_ops_t deferred_ops = {
    .name = "deferred",
    .get = deferred_get,
    .put = deferred_put,
    .get_async = deferred_get_async,
    .put_async = deferred_put_async,
    .cancel = deferred_cancel,
};

TEST(kv_async_backend_completes_later_or_never_when_cancelled)
{
    deferred_kv_t d = {0};
    ag__kv_init(&d.base, &deferred_ops, NULL);
    ag_kv_t *kv = &d.base;

    /* put_async, then a get: each callback runs once, at completion only. */
    cb_log_t pl = {0};
    ag_kv_op_t *op = NULL;
    ASSERT_EQ(ag_kv_put_async(kv, "key", 3, "v", 1, NULL, on_put, &pl, &op), 0);
    ASSERT(op != NULL);
    ASSERT_EQ(pl.calls, 0);
    deferred_complete(&d);
    ASSERT_EQ(pl.calls, 1);
    ASSERT_EQ(pl.rc, 0);
    deferred_complete(&d); /* nothing pending: no second call */
    ASSERT_EQ(pl.calls, 1);

    cb_log_t gl = {0};
    ASSERT_EQ(ag_kv_get_async(kv, "key", 3, on_get, &gl, &op), 0);
    ASSERT(op != NULL);
    ASSERT_EQ(gl.calls, 0);
    deferred_complete(&d);
    ASSERT_EQ(gl.calls, 1);
    ASSERT_EQ(gl.rc, 0);
    ASSERT_MEMEQ(gl.data, gl.len, "deferred");
    ASSERT_EQ(gl.expiration, 1700000001); /* derived by the front end, rounded up */

    /* Cancelled before completion: the callback never runs. */
    cb_log_t cl = {0};
    ASSERT_EQ(ag_kv_get_async(kv, "key", 3, on_get, &cl, &op), 0);
    ag_kv_op_cancel(op);
    deferred_complete(&d);
    ASSERT_EQ(cl.calls, 0);
    ASSERT_EQ(d.cancelled, 1);
    ASSERT_EQ(ag_kv_put_async(kv, "other", 5, "v", 1, NULL, on_put, &cl, &op), 0);
    ag_kv_op_cancel(op);
    deferred_complete(&d);
    ASSERT_EQ(cl.calls, 0);
    ASSERT_EQ(d.cancelled, 2);

    /* Not found comes through the callback; a bad key never reaches the backend. */
    cb_log_t nl = {0};
    ASSERT_EQ(ag_kv_get_async(kv, "nope", 4, on_get, &nl, &op), 0);
    deferred_complete(&d);
    ASSERT_EQ(nl.calls, 1);
    ASSERT_EQ(nl.rc, AG_ENOTFOUND);
    ASSERT(!nl.had_value);
    int started = d.started;
    op = NOT_SET;
    ASSERT_EQ(ag_kv_get_async(kv, "", 0, on_get, &nl, &op), AG_KV_EKEY_EMPTY);
    ASSERT_EQ(ag_kv_put_async(kv, "k", 1, "v", 1, &(ag_kv_put_opts_t){.expiration_ttl = -1}, on_put,
                              &nl, &op),
              AG_KV_EEXPIRATION);
    ASSERT(op == NULL);
    ASSERT_EQ(d.started, started);
    ASSERT_EQ(nl.calls, 1);
}

AG_TESTS(
    AG_TEST_ENTRY(kv_roundtrip) AG_TEST_ENTRY(kv_metadata) AG_TEST_ENTRY(
        kv_ttl_expiry_on_injected_clock) AG_TEST_ENTRY(kv_absolute_expiration)
        AG_TEST_ENTRY(kv_bounded_sweep_resumes) AG_TEST_ENTRY(kv_list_sorted_by_bytes)
            AG_TEST_ENTRY(kv_list_paging_5000_keys) AG_TEST_ENTRY(kv_512_byte_keys) AG_TEST_ENTRY(
                kv_limits_and_errors) AG_TEST_ENTRY(kv_map_full_is_clear_and_recoverable)
                AG_TEST_ENTRY(kv_evicting_store_stays_within_its_bound)
                    AG_TEST_ENTRY(kv_evicting_store_takes_expired_entries_first) AG_TEST_ENTRY(
                        kv_evicting_store_drops_what_cannot_fit_and_says_so_once_a_minute)
                        AG_TEST_ENTRY(kv_file_size_limit_is_disk_full) AG_TEST_ENTRY(
                            kv_concurrent_writer_processes)
                            AG_TEST_ENTRY(kv_threads_share_one_handle) AG_TEST_ENTRY(
                                kv_namespaces) AG_TEST_ENTRY(kv_backend_by_name)
                                AG_TEST_ENTRY(kv_async_completes_inline_on_lmdb) AG_TEST_ENTRY(
                                    kv_async_not_found_and_store_errors_come_through_the_callback)
                                    AG_TEST_ENTRY(kv_async_synchronous_failure_never_calls_back)
                                        AG_TEST_ENTRY(
                                            kv_async_backend_completes_later_or_never_when_cancelled))
