/* SPDX-License-Identifier: MIT
 *
 * test_keys.c: the client key store on real LMDB files: key shape and base62,
 * create/get/list/revoke/rotate, lookups of valid, unknown, malformed, revoked,
 * expired and rotated-away keys, changes made by another process seen by an
 * open reader at once, readers on several threads, and the header rule.
 */
#include "util/platform.h"

#include <ftw.h>
#include <pthread.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"
#include "store/keys.h"
#include "util/errors.h"

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static char *make_tmpdir(void)
{
    char tmpl[] = "/tmp/ag_test_keys_XXXXXX";
    char *d = mkdtemp(tmpl);
    return d ? strdup(d) : NULL;
}

static void rm_rf(char *dir)
{
    if (dir != NULL)
        nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    free(dir);
}

static const ag_key_limits_t no_limits;

TEST(base62_of_32_bytes)
{
    uint8_t b[32];
    char out[44];
    memset(b, 0, sizeof(b));
    ag__keys_base62(b, out);
    ASSERT_STREQ(out, "0000000000000000000000000000000000000000000");
    memset(b, 0xff, sizeof(b));
    ag__keys_base62(b, out);
    ASSERT_STREQ(out, "yhjskwdA6OZ1AL1YmHWZWm8LLG7HjnuCA2j5rOw8Xp1");
    for (int i = 0; i < 32; i++)
        b[i] = (uint8_t)i;
    ag__keys_base62(b, out);
    ASSERT_STREQ(out, "003aUlTJC7tjlCTQj2uNU3MFagCXG9LRKRcwGkBIDlf");
}

TEST(names_models_and_shape)
{
    ASSERT(ag_keys_name_valid("ci-bot_1.prod"));
    ASSERT(!ag_keys_name_valid(""));
    ASSERT(!ag_keys_name_valid("a b"));
    ASSERT(!ag_keys_name_valid("a/b"));
    ASSERT(!ag_keys_name_valid("*"));
    char long_name[66];
    memset(long_name, 'a', 65);
    long_name[65] = '\0';
    ASSERT(!ag_keys_name_valid(long_name));
    long_name[64] = '\0';
    ASSERT(ag_keys_name_valid(long_name));

    ASSERT(ag_keys_models_valid(NULL));
    ASSERT(ag_keys_models_valid(""));
    ASSERT(ag_keys_models_valid("claude-haiku-4-5,claude-sonnet-4-6"));
    ASSERT(!ag_keys_models_valid("a,,b"));
    ASSERT(!ag_keys_models_valid("a,"));
    ASSERT(!ag_keys_models_valid("a, b"));

    ag_key_record_t r = {.models = "claude-haiku-4-5,claude-opus-4-6"};
    ASSERT(ag_keys_model_allowed(&r, "claude-opus-4-6", 15));
    ASSERT(ag_keys_model_allowed(&r, "claude-haiku-4-5", 16));
    ASSERT(!ag_keys_model_allowed(&r, "claude-haiku-4", 14));
    ASSERT(!ag_keys_model_allowed(&r, "claude-sonnet-4-6", 17));
    r.models[0] = '\0';
    ASSERT(ag_keys_model_allowed(&r, "anything", 8));

    ASSERT(ag_keys_key_wellformed("ag_0000000000000000000000000000000000000000000", 46));
    ASSERT(!ag_keys_key_wellformed("ag_000000000000000000000000000000000000000000", 45));
    ASSERT(!ag_keys_key_wellformed("sk_0000000000000000000000000000000000000000000", 46));
    ASSERT(!ag_keys_key_wellformed("ag_000000000000000000000000000000000000000000-", 46));
}

TEST(key_from_headers)
{
    ag_str_t k;
    ASSERT(!ag_keys_from_headers(AG_STR_NULL, AG_STR_NULL, &k));
    ASSERT(k.ptr == NULL);
    ASSERT(ag_keys_from_headers(AG_STR_LIT("Bearer  ag_x "), AG_STR_NULL, &k));
    ASSERT_MEMEQ(k.ptr, k.len, "ag_x");
    ASSERT(ag_keys_from_headers(AG_STR_LIT("bearer ag_y"), AG_STR_LIT("ag_z"), &k));
    ASSERT_MEMEQ(k.ptr, k.len, "ag_y");
    ASSERT(ag_keys_from_headers(AG_STR_NULL, AG_STR_LIT(" ag_z"), &k));
    ASSERT_MEMEQ(k.ptr, k.len, "ag_z");
    /* Another scheme is a key that cannot match, not a missing one. */
    ASSERT(ag_keys_from_headers(AG_STR_LIT("Basic dTpw"), AG_STR_NULL, &k));
    ASSERT(!ag_keys_key_wellformed(k.ptr, k.len));
    ASSERT(ag_keys_from_headers(AG_STR_LIT("Bearer"), AG_STR_NULL, &k));
    ASSERT(!ag_keys_key_wellformed(k.ptr, k.len));
    ASSERT(!ag_keys_from_headers(AG_STR_LIT("  "), AG_STR_LIT(""), &k));
}

TEST(create_lookup_revoke_rotate)
{
    char *dir = make_tmpdir();
    ag_keys_t *ks;
    ASSERT_EQ(ag_keys_open(dir, &ks), 0);
    ag_keys_reader_t *rd;
    ASSERT_EQ(ag_keys_reader_new(ks, &rd), 0);
    char key[AG_KEYS_KEY_LEN + 1], key2[AG_KEYS_KEY_LEN + 1];
    ag_key_limits_t lim = {.rpm = 60, .tpm = 1000, .daily_usd = 1.5, .monthly_usd = 20};
    ag_key_record_t rec, got;
    ASSERT_EQ(ag_keys_create(ks, "alice", &lim, "claude-haiku-4-5", 0, 1000, key, &rec), 0);
    ASSERT_EQ(strlen(key), AG_KEYS_KEY_LEN);
    ASSERT(ag_keys_key_wellformed(key, strlen(key)));
    ASSERT_EQ(ag_keys_create(ks, "alice", NULL, NULL, 0, 1000, key2, NULL), AG_EEXISTS);
    ASSERT_EQ(ag_keys_create(ks, "bad name", NULL, NULL, 0, 1000, key2, NULL), AG_KEYS_ENAME);
    ASSERT_EQ(ag_keys_create(ks, "x", NULL, "a,,b", 0, 1000, key2, NULL), AG_KEYS_EMODELS);
    ag_key_limits_t neg = {.daily_usd = -1};
    ASSERT_EQ(ag_keys_create(ks, "x", &neg, NULL, 0, 1000, key2, NULL), AG_KEYS_ELIMITS);

    ASSERT_EQ(ag_keys_lookup(rd, key, strlen(key), 2000, &got), 0);
    ASSERT_STREQ(got.name, "alice");
    ASSERT_EQ(got.limits.rpm, 60);
    ASSERT_EQ(got.limits.tpm, 1000);
    ASSERT(got.limits.daily_usd == 1.5 && got.limits.monthly_usd == 20);
    ASSERT_STREQ(got.models, "claude-haiku-4-5");
    ASSERT_EQ(got.created_ms, 1000);

    /* One changed digit, a malformed key, and nothing at all. */
    char wrong[AG_KEYS_KEY_LEN + 1];
    memcpy(wrong, key, sizeof(wrong));
    wrong[10] = wrong[10] == 'a' ? 'b' : 'a';
    ASSERT_EQ(ag_keys_lookup(rd, wrong, strlen(wrong), 2000, &got), AG_KEYS_EINVALID);
    ASSERT_EQ(ag_keys_lookup(rd, "ag_short", 8, 2000, &got), AG_KEYS_EINVALID);
    ASSERT_EQ(ag_keys_lookup(rd, "", 0, 2000, &got), AG_KEYS_EINVALID);

    /* Expiry, at the instant. */
    char ekey[AG_KEYS_KEY_LEN + 1];
    ASSERT_EQ(ag_keys_create(ks, "temp", &no_limits, NULL, 5000, 1000, ekey, NULL), 0);
    ASSERT_EQ(ag_keys_lookup(rd, ekey, strlen(ekey), 4999, &got), 0);
    ASSERT_EQ(ag_keys_lookup(rd, ekey, strlen(ekey), 5000, &got), AG_KEYS_EEXPIRED);

    /* Rotation: the old key fails, the new one works, limits stay. */
    ASSERT_EQ(ag_keys_rotate(ks, "alice", 3000, key2, &rec), 0);
    ASSERT(strcmp(key, key2) != 0);
    ASSERT_EQ(ag_keys_lookup(rd, key, strlen(key), 3001, &got), AG_KEYS_EINVALID);
    ASSERT_EQ(ag_keys_lookup(rd, key2, strlen(key2), 3001, &got), 0);
    ASSERT_EQ(got.limits.rpm, 60);
    ASSERT_EQ(got.rotated_ms, 3000);
    ASSERT_EQ(ag_keys_rotate(ks, "nobody", 3000, key, NULL), AG_ENOTFOUND);

    /* Revocation: at once, kept on a second revoke, and rotation cannot undo it. */
    ASSERT_EQ(ag_keys_revoke(ks, "alice", 4000, &rec), 0);
    ASSERT_EQ(rec.revoked_ms, 4000);
    ASSERT_EQ(ag_keys_lookup(rd, key2, strlen(key2), 4001, &got), AG_KEYS_EREVOKED);
    ASSERT_EQ(ag_keys_revoke(ks, "alice", 9000, &rec), 0);
    ASSERT_EQ(rec.revoked_ms, 4000);
    ASSERT_EQ(ag_keys_rotate(ks, "alice", 9000, key, NULL), AG_KEYS_EREVOKED);
    ASSERT_EQ(ag_keys_revoke(ks, "nobody", 4000, NULL), AG_ENOTFOUND);

    ag_key_record_t *all;
    size_t n;
    ASSERT_EQ(ag_keys_list(ks, &all, &n), 0);
    ASSERT_EQ(n, 2);
    ASSERT_STREQ(all[0].name, "alice");
    ASSERT_STREQ(all[1].name, "temp");
    free(all);
    ASSERT_EQ(ag_keys_get(ks, "temp", &got), 0);
    ASSERT_EQ(got.expires_ms, 5000);
    ASSERT_EQ(ag_keys_get(ks, "nobody", &got), AG_ENOTFOUND);

    ag_keys_reader_free(rd);
    ag_keys_close(ks);

    /* A reopened store has it all, and no file holds the key itself. */
    ASSERT_EQ(ag_keys_open(dir, &ks), 0);
    ASSERT_EQ(ag_keys_reader_new(ks, &rd), 0);
    ASSERT_EQ(ag_keys_lookup(rd, ekey, strlen(ekey), 4000, &got), 0);
    ag_keys_reader_free(rd);
    ag_keys_close(ks);
    char path[512];
    snprintf(path, sizeof(path), "%s/keys/data.mdb", dir);
    FILE *f = fopen(path, "rb");
    ASSERT(f != NULL);
    static char data[1 << 20];
    size_t len = fread(data, 1, sizeof(data), f);
    fclose(f);
    ASSERT(len > 0);
    ASSERT(memmem(data, len, ekey + 3, AG_KEYS_KEY_LEN - 3) == NULL);
    ASSERT(memmem(data, len, key2 + 3, AG_KEYS_KEY_LEN - 3) == NULL);
    rm_rf(dir);
}

/* Another process creates and revokes; a reader opened before sees both at once. */
TEST(other_process_changes_seen_at_once)
{
    char *dir = make_tmpdir();
    ag_keys_t *ks;
    ASSERT_EQ(ag_keys_open(dir, &ks), 0);
    ag_keys_reader_t *rd;
    ASSERT_EQ(ag_keys_reader_new(ks, &rd), 0);
    int to_child[2], to_parent[2];
    ASSERT_EQ(pipe(to_child), 0);
    ASSERT_EQ(pipe(to_parent), 0);
    pid_t pid = fork();
    ASSERT(pid >= 0);
    if (pid == 0) {
        ag_keys_t *cks;
        char key[AG_KEYS_KEY_LEN + 1];
        char go;
        if (ag_keys_open(dir, &cks) != 0 ||
            ag_keys_create(cks, "late", &no_limits, NULL, 0, 1, key, NULL) != 0)
            _exit(1);
        if (write(to_parent[1], key, AG_KEYS_KEY_LEN) != AG_KEYS_KEY_LEN)
            _exit(1);
        if (read(to_child[0], &go, 1) != 1 || ag_keys_revoke(cks, "late", 2, NULL) != 0)
            _exit(1);
        ag_keys_close(cks);
        _exit(0);
    }
    char key[AG_KEYS_KEY_LEN + 1] = {0};
    ASSERT_EQ(read(to_parent[0], key, AG_KEYS_KEY_LEN), AG_KEYS_KEY_LEN);
    ag_key_record_t got;
    ASSERT_EQ(ag_keys_lookup(rd, key, AG_KEYS_KEY_LEN, 10, &got), 0);
    ASSERT_STREQ(got.name, "late");
    ASSERT_EQ(write(to_child[1], "g", 1), 1);
    int st;
    ASSERT_EQ(waitpid(pid, &st, 0), pid);
    ASSERT(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    ASSERT_EQ(ag_keys_lookup(rd, key, AG_KEYS_KEY_LEN, 10, &got), AG_KEYS_EREVOKED);
    ag_keys_reader_free(rd);
    ag_keys_close(ks);
    close(to_child[0]);
    close(to_child[1]);
    close(to_parent[0]);
    close(to_parent[1]);
    rm_rf(dir);
}

typedef struct reader_arg {
    ag_keys_t *ks;
    const char *key;
    int ok, bad;
} reader_arg_t;

static void *reader_thread(void *p)
{
    reader_arg_t *a = p;
    ag_keys_reader_t *rd;
    if (ag_keys_reader_new(a->ks, &rd) != 0)
        return NULL;
    ag_key_record_t got;
    for (int i = 0; i < 20000; i++) {
        if (ag_keys_lookup(rd, a->key, AG_KEYS_KEY_LEN, 10, &got) == 0 &&
            strcmp(got.name, "shared") == 0)
            a->ok++;
        else
            a->bad++;
    }
    ag_keys_reader_free(rd);
    return NULL;
}

/* Readers on four threads while keys are being created: every lookup of the
 * existing key succeeds. Also prints what one lookup costs. */
TEST(readers_on_threads)
{
    char *dir = make_tmpdir();
    ag_keys_t *ks;
    ASSERT_EQ(ag_keys_open(dir, &ks), 0);
    char key[AG_KEYS_KEY_LEN + 1], other[AG_KEYS_KEY_LEN + 1];
    ASSERT_EQ(ag_keys_create(ks, "shared", &no_limits, NULL, 0, 1, key, NULL), 0);
    pthread_t th[4];
    reader_arg_t args[4];
    for (int i = 0; i < 4; i++) {
        args[i] = (reader_arg_t){ks, key, 0, 0};
        ASSERT_EQ(pthread_create(&th[i], NULL, reader_thread, &args[i]), 0);
    }
    for (int i = 0; i < 50; i++) {
        char name[16];
        snprintf(name, sizeof(name), "k%d", i);
        ASSERT_EQ(ag_keys_create(ks, name, &no_limits, NULL, 0, 1, other, NULL), 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        ASSERT_EQ(args[i].ok, 20000);
        ASSERT_EQ(args[i].bad, 0);
    }
    ag_keys_reader_t *rd;
    ASSERT_EQ(ag_keys_reader_new(ks, &rd), 0);
    struct timespec t0, t1;
    ag_key_record_t got;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int i = 0; i < 100000; i++)
        ASSERT_EQ(ag_keys_lookup(rd, key, AG_KEYS_KEY_LEN, 10, &got), 0);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double ns = ((double)(t1.tv_sec - t0.tv_sec) * 1e9 + (double)(t1.tv_nsec - t0.tv_nsec)) / 1e5;
    printf("     one lookup (renew, two gets, SHA-256, copy): %.0f ns\n", ns);
    ag_keys_reader_free(rd);
    ag_keys_close(ks);
    rm_rf(dir);
}

/* A record exported from one store and imported into another: the key works
 * there; a rotation replaces the old key's hash; an older unrevoked copy does
 * not undo a revocation; bytes that are no record are refused. */
TEST(export_import_between_stores)
{
    char *da = make_tmpdir(), *db = make_tmpdir();
    ag_keys_t *a, *b;
    ASSERT_EQ(ag_keys_open(da, &a), 0);
    ASSERT_EQ(ag_keys_open(db, &b), 0);
    ag_keys_reader_t *rb;
    ASSERT_EQ(ag_keys_reader_new(b, &rb), 0);
    char key[AG_KEYS_KEY_LEN + 1], key2[AG_KEYS_KEY_LEN + 1];
    ag_key_limits_t lim = {.rpm = 7};
    ASSERT_EQ(ag_keys_create(a, "carol", &lim, "", 0, 1000, key, NULL), 0);
    unsigned char rec[AG_KEYS_EXPORT_MAX], first[AG_KEYS_EXPORT_MAX];
    int n = ag_keys_export(a, "carol", rec);
    ASSERT(n > 0);
    memcpy(first, rec, (size_t)n);
    ASSERT(memmem(rec, (size_t)n, key + 3, AG_KEYS_KEY_LEN - 3) == NULL); /* a hash, not the key */
    ASSERT_EQ(ag_keys_export(a, "nobody", rec), AG_ENOTFOUND);
    ASSERT_EQ(ag_keys_import(b, "carol", first, (size_t)n), 1);
    ASSERT_EQ(ag_keys_import(b, "carol", first, (size_t)n), 0); /* the same bytes */
    ag_key_record_t got;
    ASSERT_EQ(ag_keys_lookup(rb, key, strlen(key), 2000, &got), 0);
    ASSERT_EQ(got.limits.rpm, 7);
    /* Rotated in a: b takes the new key and drops the old one. */
    ASSERT_EQ(ag_keys_rotate(a, "carol", 3000, key2, NULL), 0);
    int n2 = ag_keys_export(a, "carol", rec);
    ASSERT_EQ(ag_keys_import(b, "carol", rec, (size_t)n2), 1);
    ASSERT_EQ(ag_keys_lookup(rb, key2, strlen(key2), 4000, &got), 0);
    ASSERT(ag_keys_lookup(rb, key, strlen(key), 4000, &got) < 0);
    /* Revoked in b; a copy from before the revocation changes nothing. */
    ASSERT_EQ(ag_keys_revoke(b, "carol", 5000, NULL), 0);
    ASSERT_EQ(ag_keys_import(b, "carol", rec, (size_t)n2), 0);
    ASSERT(ag_keys_lookup(rb, key2, strlen(key2), 6000, &got) < 0);
    /* Not a record. */
    unsigned char junk[8] = {9, 9, 9};
    ASSERT_EQ(ag_keys_import(b, "carol", junk, sizeof(junk)), AG_KEYS_ECORRUPT);
    ASSERT_EQ(ag_keys_import(b, "bad name", first, (size_t)n), AG_KEYS_ECORRUPT);
    ag_keys_reader_free(rb);
    ag_keys_close(a);
    ag_keys_close(b);
    rm_rf(da);
    rm_rf(db);
}

AG_TESTS(AG_TEST_ENTRY(base62_of_32_bytes) AG_TEST_ENTRY(names_models_and_shape)
             AG_TEST_ENTRY(key_from_headers) AG_TEST_ENTRY(create_lookup_revoke_rotate)
                 AG_TEST_ENTRY(other_process_changes_seen_at_once) AG_TEST_ENTRY(readers_on_threads)
                     AG_TEST_ENTRY(export_import_between_stores))
