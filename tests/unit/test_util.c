/* SPDX-License-Identifier: MIT
 *
 * test_util.c: the arena, buffers, UTF-8/UTF-16 counting, JSON escaping, hex
 * coding and the file helpers.
 */
#include "util/platform.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <sched.h>
#include <sys/stat.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"
#include "util/brlock.h"
#include "util/buf.h"
#include "util/http_bytes.h"
#include "util/errors.h"
#include "util/hist.h"
#include "util/fs.h"
#include "util/hex.h"
#include "util/json.h"
#include "util/le.h"
#include "util/pool.h"
#include "util/utf.h"

static int hook_runs;
static void count_hook(void *p)
{
    (void)p;
    hook_runs++;
}

TEST(pool_alloc_and_clear)
{
    ag_pool_t pool;
    ag_pool_init(&pool);
    char *a = ag_pool_alloc(&pool, 10);
    memset(a, 'x', 10);
    void *big = ag_pool_alloc(&pool, 100000); /* large block path */
    memset(big, 0, 100000);
    for (int i = 0; i < 1000; i++)
        ASSERT(((uintptr_t)ag_pool_alloc(&pool, 24) & 15) == 0);
    ag_pool_on_clear(&pool, count_hook, NULL);
    ag_pool_on_clear(&pool, count_hook, NULL);
    hook_runs = 0;
    ag_pool_clear(&pool);
    ASSERT_EQ(hook_runs, 2);
    ASSERT(pool.chunks != NULL && pool.large == NULL && pool.offset == 0);
    ASSERT_STREQ(ag_pool_printf(&pool, "%d-%s", 42, "x"), "42-x");
    ag_pool_fini(&pool);
}

TEST(pool_cache_recycles_first_chunks)
{
    ag_pool_cache_t cache = {.n = 0};
    ag_pool_t pool;
    ag_pool_init(&pool);
    pool.cache = &cache;
    char *a = ag_pool_alloc(&pool, 100);
    ag_pool_fini(&pool);
    ASSERT_EQ(cache.n, 1);
    char *b = ag_pool_alloc(&pool, 100); /* the parked chunk comes back */
    ASSERT(a == b);
    ASSERT_EQ(cache.n, 0);
    ag_pool_alloc(&pool, 5000); /* a second, bigger chunk is not parked */
    ag_pool_alloc(&pool, 5000);
    ag_pool_fini(&pool);
    ASSERT_EQ(cache.n, 1);
    ag_pool_cache_fini(&cache);
    ASSERT_EQ(cache.n, 0);
}

TEST(buf_cap_is_enforced)
{
    ag_buf_t b;
    ag_buf_init(&b, 8);
    ASSERT_EQ(ag_buf_append_cstr(&b, "12345678"), 0);
    ASSERT_EQ(ag_buf_append_cstr(&b, "9"), AG_ETOOBIG);
    ag_buf_consume(&b, 3);
    ASSERT_MEMEQ(b.data, b.len, "45678");
    ag_buf_fini(&b);
}

TEST(utf16_length_counts_like_javascript)
{
    ASSERT_EQ(ag_utf16_length("", 0), 0);
    ASSERT_EQ(ag_utf16_length("abc", 3), 3);
    ASSERT_EQ(ag_utf16_length("\xC3\xA9", 2), 1);                 /* é */
    ASSERT_EQ(ag_utf16_length("\xE4\xB8\xAD\xE6\x96\x87", 6), 2); /* 中文 */
    ASSERT_EQ(ag_utf16_length("\xF0\x9F\x98\x80", 4), 2);         /* 😀: a surrogate pair */
    ASSERT_EQ(ag_utf16_length("\xFF", 1), 1);                     /* invalid byte: one U+FFFD */
}

TEST(utf8_validation_rejects_overlongs_and_surrogates)
{
    ASSERT(ag_utf8_valid("h\xC3\xA9llo", 6));
    ASSERT(!ag_utf8_valid("\xC0\xAF", 2));         /* overlong '/' */
    ASSERT(!ag_utf8_valid("\xED\xA0\x80", 3));     /* U+D800 */
    ASSERT(!ag_utf8_valid("\xF4\x90\x80\x80", 4)); /* > U+10FFFF */
    ASSERT(!ag_utf8_valid("\xE4\xB8", 2));         /* truncated */
}

TEST(json_string_escaping)
{
    ag_buf_t b;
    ag_buf_init(&b, 0);
    ASSERT_EQ(ag_json_append_string(&b, AG_STR_LIT("a\"b\\c\n\x01\xF0\x9F\x98\x80\xFF")), 0);
    ASSERT_MEMEQ(b.data, b.len, "\"a\\\"b\\\\c\\n\\u0001\xF0\x9F\x98\x80\xEF\xBF\xBD\"");
    ag_buf_reset(&b);
    ASSERT_EQ(ag_json_error_body(&b, "Invalid JSON"), 0);
    ASSERT_MEMEQ(b.data, b.len, "{\"error\":\"Invalid JSON\"}");
    ag_buf_fini(&b);
}

TEST(strerror_covers_both_bands)
{
    ASSERT_STREQ(ag_strerror(AG_ETOOBIG), "exceeds the configured limit");
    ASSERT_EQ(ag_err_http_status(AG_EHDRTOOBIG), 431);
    ASSERT(strlen(ag_strerror(-2)) > 0);
}

/* Every code of every module, expanded from the one registry. */
static const struct {
    const char *name;
    int value, http;
    const char *msg;
} declared[] = {
#define AG_ERR(name, value, http, msg) {#name, name, http, msg},
#include "util/errors.def"
#undef AG_ERR
};

TEST(every_declared_code_has_its_message_and_status)
{
    ASSERT(AG_ARRAY_LEN(declared) > 50); /* the core, parser, kv, objstore, secrets, usage bands */
    for (size_t i = 0; i < AG_ARRAY_LEN(declared); i++) {
        int v = declared[i].value;
        ASSERT_MSG_(v < -4096, "%s = %d is in the errno range", declared[i].name, v);
        ASSERT_MSG_(strcmp(ag_strerror(v), declared[i].msg) == 0, "%s: \"%s\"", declared[i].name,
                    ag_strerror(v));
        ASSERT_MSG_(strcmp(ag_strerror(v), "unknown error") != 0, "%s", declared[i].name);
        int want = declared[i].http ? declared[i].http : 500;
        ASSERT_MSG_(ag_err_http_status(v) == want, "%s: %d, declared %d", declared[i].name,
                    ag_err_http_status(v), declared[i].http);
        ASSERT_MSG_(want >= 400 && want <= 599, "%s: status %d", declared[i].name, want);
    }
    /* Not declared: errno values and anything else. */
    ASSERT_STREQ(ag_strerror(-ENOENT), strerror(ENOENT));
    ASSERT_EQ(ag_err_http_status(-ENOENT), 500);
    ASSERT_STREQ(ag_strerror(-4097), "unknown error");
    ASSERT_STREQ(ag_strerror(0), "success");
    ASSERT_EQ(ag_err_http_status(-4097), 500);
    /* The formerly colliding pair now has a value each. */
    ASSERT(AG_USAGE_ECLOSED != AG_SECRETS_ENAME);
    ASSERT_STREQ(ag_strerror(AG_USAGE_ECLOSED), "usage log is closed");
    ASSERT_EQ(ag_err_http_status(AG_KV_ECORRUPT), 500);
    ASSERT_EQ(ag_err_http_status(AG_OBJ_ENO_BUCKET), 404);
}

TEST(hex_encode_decode)
{
    char out[2 * 4 + 1];
    ag_hex_encode("\x00\x9f\xa0\xff", 4, out);
    ASSERT_STREQ(out, "009fa0ff");
    ag_hex_encode(NULL, 0, out);
    ASSERT_STREQ(out, "");
    char *a = ag_hex_encode_alloc("AZ", 2);
    ASSERT(a != NULL);
    ASSERT_STREQ(a, "415a");
    free(a);

    unsigned char bin[4];
    ASSERT_EQ(ag_hex_decode("009fA0Ff", 8, bin, sizeof(bin)), 4); /* either case */
    ASSERT(memcmp(bin, "\x00\x9f\xa0\xff", 4) == 0);
    ASSERT_EQ(ag_hex_decode("", 0, bin, 0), 0);
    ASSERT_EQ(ag_hex_decode("abc", 3, bin, sizeof(bin)), AG_EINVALID);        /* odd */
    ASSERT_EQ(ag_hex_decode("0g", 2, bin, sizeof(bin)), AG_EINVALID);         /* not a digit */
    ASSERT_EQ(ag_hex_decode("0\0", 2, bin, sizeof(bin)), AG_EINVALID);        /* NUL */
    ASSERT_EQ(ag_hex_decode("0011223344", 10, bin, sizeof(bin)), AG_ETOOBIG); /* 5 > 4 */

    ASSERT_EQ(ag_hex_digit('0'), 0);
    ASSERT_EQ(ag_hex_digit('f'), 15);
    ASSERT_EQ(ag_hex_digit('F'), 15);
    ASSERT_EQ(ag_hex_digit('g'), -1);
    ASSERT_EQ(ag_hex_digit('/'), -1);
    ASSERT(ag_hex_is_lower("0123456789abcdef", 16));
    ASSERT(!ag_hex_is_lower("0A", 2));
    ASSERT(!ag_hex_is_lower("0g", 2));
}

TEST(percent_decode)
{
    char out[8];
    ASSERT(ag_percent_decode("a%2Fb%3d", 8, out, sizeof(out), false));
    ASSERT_STREQ(out, "a/b=");
    ASSERT(ag_percent_decode("a+b", 3, out, sizeof(out), false));
    ASSERT_STREQ(out, "a+b"); /* a plus stays one in a URL's userinfo */
    ASSERT(ag_percent_decode("a+b", 3, out, sizeof(out), true));
    ASSERT_STREQ(out, "a b"); /* and is a space in a form-encoded query */
    ASSERT(ag_percent_decode("", 0, out, sizeof(out), false));
    ASSERT_STREQ(out, "");
    ASSERT(!ag_percent_decode("%4", 2, out, sizeof(out), false));       /* cut short */
    ASSERT(!ag_percent_decode("%zz", 3, out, sizeof(out), false));      /* not hex */
    ASSERT(!ag_percent_decode("a%00b", 5, out, sizeof(out), false));    /* a NUL */
    ASSERT(!ag_percent_decode("12345678", 8, out, sizeof(out), false)); /* no room for the NUL */
    ASSERT(ag_percent_decode("1234567", 7, out, sizeof(out), false));
    ASSERT(!ag_percent_decode("", 0, out, 0, false));
}

TEST(le_integers)
{
    unsigned char b[8];
    ag_le_put(b, 0x0102030405060708u, 8);
    ASSERT(memcmp(b, "\x08\x07\x06\x05\x04\x03\x02\x01", 8) == 0);
    ASSERT_EQ(ag_le_get(b, 8), 0x0102030405060708u);
    ASSERT_EQ(ag_le_get(b, 2), 0x0708);
    memset(b, 0xee, sizeof(b));
    ag_le_put(b, 0xabcdef, 2); /* the low bytes only, nothing past n */
    ASSERT(b[0] == 0xef && b[1] == 0xcd && b[2] == 0xee);
    ag_le_put(b, UINT64_MAX, 8);
    ASSERT(ag_le_get(b, 8) == UINT64_MAX);
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static void rm_rf(const char *dir)
{
    nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

TEST(fs_mkdir_p)
{
    char tmpl[] = "/tmp/ag_test_util_XXXXXX";
    const char *dir = mkdtemp(tmpl);
    ASSERT(dir != NULL);
    char path[512], file[256];
    snprintf(path, sizeof(path), "%s/a/b//c/", dir);
    ASSERT_EQ(ag_fs_mkdir_p(path, 0700), 0);
    struct stat st;
    ASSERT_EQ(stat(path, &st), 0);
    ASSERT(S_ISDIR(st.st_mode));
    ASSERT_EQ(st.st_mode & 0777, 0700);
    ASSERT_EQ(ag_fs_mkdir_p(path, 0700), 0); /* exists: fine */

    snprintf(file, sizeof(file), "%s/a/f", dir);
    int fd = open(file, O_WRONLY | O_CREAT | O_EXCL, 0600);
    ASSERT(fd >= 0);
    close(fd);
    ASSERT_EQ(ag_fs_mkdir_p(file, 0700), -ENOTDIR); /* a file, not a folder */
    snprintf(path, sizeof(path), "%s/x", file);
    ASSERT_EQ(ag_fs_mkdir_p(path, 0700), -ENOTDIR); /* a file as a parent */
    ASSERT_EQ(ag_fs_mkdir_p("", 0700), -ENOENT);
    char longp[5000];
    memset(longp, 'a', sizeof(longp) - 1);
    longp[sizeof(longp) - 1] = '\0';
    ASSERT_EQ(ag_fs_mkdir_p(longp, 0700), -ENAMETOOLONG);
    rm_rf(dir);
}

TEST(fs_whole_file_io)
{
    char tmpl[] = "/tmp/ag_test_util_XXXXXX";
    const char *dir = mkdtemp(tmpl);
    ASSERT(dir != NULL);
    char path[256];
    snprintf(path, sizeof(path), "%s/data", dir);

    /* 200 KiB: more than one read() chunk. */
    size_t n = 200 * 1024;
    char *bytes = malloc(n);
    ASSERT(bytes != NULL);
    for (size_t i = 0; i < n; i++)
        bytes[i] = (char)(i * 7);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    ASSERT(fd >= 0);
    ASSERT_EQ(ag_fs_write_all(fd, bytes, n), 0);
    close(fd);

    ag_buf_t b;
    ag_buf_init(&b, 0);
    ASSERT_EQ(ag_fs_read_file(path, &b), 0);
    ASSERT_EQ(b.len, n);
    ASSERT(memcmp(b.data, bytes, n) == 0);
    ag_buf_fini(&b);

    ag_buf_init(&b, n); /* exactly fits */
    ASSERT_EQ(ag_fs_read_file(path, &b), 0);
    ASSERT_EQ(b.len, n);
    ag_buf_fini(&b);
    ag_buf_init(&b, n - 1); /* one byte too small */
    ASSERT_EQ(ag_fs_read_file(path, &b), AG_ETOOBIG);
    ASSERT_EQ(b.len, n - 1);
    ag_buf_fini(&b);
    ag_buf_init(&b, 0);
    ASSERT_EQ(ag_buf_append_cstr(&b, "head:"), 0); /* appends after what is there */
    ASSERT_EQ(ag_fs_read_file(path, &b), 0);
    ASSERT_EQ(b.len, n + 5);
    ASSERT(memcmp(b.data, "head:", 5) == 0 && memcmp(b.data + 5, bytes, n) == 0);
    ag_buf_fini(&b);

    char missing[300];
    snprintf(missing, sizeof(missing), "%s/none", dir);
    ag_buf_init(&b, 0);
    ASSERT_EQ(ag_fs_read_file(missing, &b), -ENOENT);
    ag_buf_fini(&b);

    /* pread: exact ranges, and a short count at the end of the file. */
    fd = open(path, O_RDONLY);
    ASSERT(fd >= 0);
    char part[100];
    ASSERT_EQ(ag_fs_pread_all(fd, part, sizeof(part), 1000), 100);
    ASSERT(memcmp(part, bytes + 1000, 100) == 0);
    ASSERT_EQ(ag_fs_pread_all(fd, part, sizeof(part), n - 30), 30);
    ASSERT(memcmp(part, bytes + n - 30, 30) == 0);
    ASSERT_EQ(ag_fs_pread_all(fd, part, sizeof(part), n + 5), 0);
    close(fd);
    ASSERT_EQ(ag_fs_pread_all(fd, part, sizeof(part), 0), -EBADF);
    ASSERT_EQ(ag_fs_write_all(fd, "x", 1), -EBADF);

    /* A pipe: read_fd reads to its end, not to a size it cannot know. */
    int p[2];
    ASSERT_EQ(pipe(p), 0);
    ASSERT_EQ(ag_fs_write_all(p[1], "through a pipe", 14), 0);
    close(p[1]);
    ag_buf_init(&b, 0);
    ASSERT_EQ(ag_fs_read_fd(p[0], &b), 0);
    ASSERT_MEMEQ(b.data, b.len, "through a pipe");
    ag_buf_fini(&b);
    close(p[0]);
    free(bytes);
    rm_rf(dir);
}

static bool no_dot_names(const char *name)
{
    return name[0] != '.';
}

TEST(fs_list_dirs)
{
    char tmpl[] = "/tmp/ag_test_util_XXXXXX";
    const char *dir = mkdtemp(tmpl);
    ASSERT(dir != NULL);
    char path[512];
    const char *mk[] = {"b", "a", "B", ".hidden", "a b"};
    for (size_t i = 0; i < AG_ARRAY_LEN(mk); i++) {
        snprintf(path, sizeof(path), "%s/%s", dir, mk[i]);
        ASSERT_EQ(mkdir(path, 0700), 0);
    }
    snprintf(path, sizeof(path), "%s/file", dir); /* not a folder: never listed */
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0600);
    ASSERT(fd >= 0);
    close(fd);
    char link[600];
    snprintf(path, sizeof(path), "%s/a", dir);
    snprintf(link, sizeof(link), "%s/zlink", dir); /* a symlink to a folder is one */
    ASSERT_EQ(symlink(path, link), 0);

    char **names;
    size_t n;
    ASSERT_EQ(ag_fs_list_dirs(dir, NULL, &names, &n), 0);
    ASSERT_EQ(n, 6);
    const char *want[] = {".hidden", "B", "a", "a b", "b", "zlink"}; /* byte order */
    for (size_t i = 0; i < n && i < AG_ARRAY_LEN(want); i++)
        ASSERT_STREQ(names[i], want[i]);
    ag_fs_names_free(names, n);

    ASSERT_EQ(ag_fs_list_dirs(dir, no_dot_names, &names, &n), 0);
    ASSERT_EQ(n, 5);
    ASSERT_STREQ(names[0], "B");
    ag_fs_names_free(names, n);

    snprintf(path, sizeof(path), "%s/missing", dir);
    ASSERT_EQ(ag_fs_list_dirs(path, NULL, &names, &n), 0);
    ASSERT(names == NULL && n == 0);
    snprintf(path, sizeof(path), "%s/file", dir);
    ASSERT_EQ(ag_fs_list_dirs(path, NULL, &names, &n), -ENOTDIR);
    ag_fs_names_free(NULL, 0);
    rm_rf(dir);
}

TEST(hist_buckets_are_contiguous_and_bounded)
{
    /* Every bucket's low value maps back to it, and buckets follow each other. */
    for (unsigned b = 0; b + 1 < AG_HIST_BUCKETS; b++) {
        ASSERT_EQ(ag_hist_bucket(ag_hist_bucket_low(b)), b);
        ASSERT_EQ(ag_hist_bucket(ag_hist_bucket_low(b + 1) - 1), b);
    }
    ASSERT_EQ(ag_hist_bucket(UINT64_MAX), AG_HIST_BUCKETS - 1u);
    ASSERT_EQ(ag_hist_bucket(63), 63u);
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

TEST(hist_quantiles_within_the_stated_error)
{
    enum { N = 20000 };
    static uint64_t v[N];
    ag_hist_t *h = malloc(sizeof(*h)), *a = malloc(sizeof(*a)), *b = malloc(sizeof(*b));
    ag_hist_init(h);
    ag_hist_init(a);
    ag_hist_init(b);
    uint64_t x = 88172645463325252ull;
    for (int i = 0; i < N; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17; /* xorshift: spread over 6 decades */
        v[i] = (x % 1000000) * (1 + (x >> 40) % 1000) / 1000;
        ag_hist_add(h, v[i]);
        ag_hist_add(i % 2 ? a : b, v[i]);
    }
    ag_hist_merge(a, b);
    qsort(v, N, sizeof(v[0]), cmp_u64);
    const double qs[] = {0.01, 0.5, 0.9, 0.99, 0.999, 1.0};
    for (size_t i = 0; i < AG_ARRAY_LEN(qs); i++) {
        size_t rank = (size_t)(qs[i] * N + 0.999999999);
        uint64_t truth = v[rank ? rank - 1 : 0];
        uint64_t got = ag_hist_quantile(h, qs[i]);
        double err = truth ? (double)(got > truth ? got - truth : truth - got) / (double)truth : 0;
        ASSERT_MSG_(err <= AG_HIST_REL_ERROR || (truth < 64 && got == truth),
                    "q=%g truth=%llu got=%llu", qs[i], (unsigned long long)truth,
                    (unsigned long long)got);
        ASSERT_EQ(ag_hist_quantile(a, qs[i]), got); /* merged halves = the whole */
    }
    ASSERT_EQ(a->count, (uint64_t)N);
    ASSERT_EQ(a->max, v[N - 1]);
    ag_hist_t empty;
    ag_hist_init(&empty);
    ASSERT_EQ(ag_hist_quantile(&empty, 0.5), 0u);
    free(h);
    free(a);
    free(b);
}

/* Readers on many threads (more than the slots, so some share one) never
 * see a writer's half-done update, and every thread gets a slot in range. */
static ag_brlock_t br;
static unsigned long br_a, br_b; /* equal outside the write lock */
static int br_torn;

static void *br_reader(void *arg)
{
    (void)arg;
    if (ag_brlock_slot() >= AG_BRLOCK_SLOTS)
        __atomic_store_n(&br_torn, 1, __ATOMIC_RELAXED);
    for (int i = 0; i < 20000; i++) {
        ag_brlock_rdlock(&br);
        if (br_a != br_b)
            __atomic_store_n(&br_torn, 1, __ATOMIC_RELAXED);
        ag_brlock_rdunlock(&br);
    }
    return NULL;
}

TEST(brlock_writer_excludes_every_reader)
{
    ASSERT_EQ(ag_brlock_init(&br), 0);
    pthread_t t[AG_BRLOCK_SLOTS + 4];
    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++)
        ASSERT_EQ(pthread_create(&t[i], NULL, br_reader, NULL), 0);
    for (int i = 0; i < 2000; i++) {
        ag_brlock_wrlock(&br);
        br_a++;
        sched_yield(); /* a window in which a reader that got in would see a != b */
        br_b++;
        ag_brlock_wrunlock(&br);
    }
    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++)
        pthread_join(t[i], NULL);
    ASSERT_EQ(br_torn, 0);
    ASSERT_EQ(br_a, 2000);
    ag_brlock_destroy(&br);
}

/* The tchar table is RFC 9110's tchar: ALPHA, DIGIT and "!#$%&'*+-.^_`|~". */
TEST(tchar_table_is_rfc9110_tchar)
{
    for (int c = 0; c < 256; c++) {
        bool want = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                    (c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL);
        ASSERT_EQ(ag_http_is_tchar((unsigned char)c), want);
    }
}

AG_TESTS(
    AG_TEST_ENTRY(tchar_table_is_rfc9110_tchar) AG_TEST_ENTRY(brlock_writer_excludes_every_reader)
        AG_TEST_ENTRY(hist_buckets_are_contiguous_and_bounded) AG_TEST_ENTRY(
            hist_quantiles_within_the_stated_error) AG_TEST_ENTRY(pool_alloc_and_clear)
            AG_TEST_ENTRY(pool_cache_recycles_first_chunks) AG_TEST_ENTRY(buf_cap_is_enforced)
                AG_TEST_ENTRY(utf16_length_counts_like_javascript)
                    AG_TEST_ENTRY(utf8_validation_rejects_overlongs_and_surrogates)
                        AG_TEST_ENTRY(json_string_escaping)
                            AG_TEST_ENTRY(strerror_covers_both_bands)
                                AG_TEST_ENTRY(every_declared_code_has_its_message_and_status)
                                    AG_TEST_ENTRY(hex_encode_decode) AG_TEST_ENTRY(percent_decode)
                                        AG_TEST_ENTRY(fs_mkdir_p) AG_TEST_ENTRY(fs_whole_file_io)
                                            AG_TEST_ENTRY(fs_list_dirs) AG_TEST_ENTRY(le_integers))
