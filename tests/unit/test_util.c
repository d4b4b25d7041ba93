/* SPDX-License-Identifier: MIT
 *
 * test_util.c: the arena, buffers, UTF-8/UTF-16 counting and JSON escaping.
 */
#include "util/platform.h"

#include "harness.h"
#include "util/buf.h"
#include "util/errors.h"
#include "util/json.h"
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

AG_TESTS(AG_TEST_ENTRY(pool_alloc_and_clear) AG_TEST_ENTRY(pool_cache_recycles_first_chunks)
             AG_TEST_ENTRY(buf_cap_is_enforced) AG_TEST_ENTRY(utf16_length_counts_like_javascript)
                 AG_TEST_ENTRY(utf8_validation_rejects_overlongs_and_surrogates)
                     AG_TEST_ENTRY(json_string_escaping) AG_TEST_ENTRY(strerror_covers_both_bands))
