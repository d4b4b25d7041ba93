/* SPDX-License-Identifier: MIT
 *
 * test_secrets.c: the secret store file (src/store/secrets.c): round trips of
 * awkward bytes, file and folder modes, name and value rules, atomic
 * replacement, listing, malformed files, and writers in several processes.
 */
#include "util/platform.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"
#include "store/secrets.h"
#include "store/secrets_resolve.h"

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    AG_UNUSED(st);
    AG_UNUSED(flag);
    AG_UNUSED(ftw);
    return remove(path);
}

static void rm_rf(const char *dir)
{
    nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static char *make_tmpdir(void)
{
    char tmpl[] = "/tmp/ag-secrets-XXXXXX";
    char *d = mkdtemp(tmpl);
    return d ? strdup(d) : NULL;
}

static void path_of(char *buf, size_t cap, const char *dir, const char *name)
{
    snprintf(buf, cap, "%s/%s", dir, name);
}

/* Reads a whole small file into buf (NUL-terminated). @return its length or -1. */
static ssize_t slurp(const char *path, char *buf, size_t cap)
{
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        return -1;
    ssize_t n = read(fd, buf, cap - 1);
    close(fd);
    if (n >= 0)
        buf[n] = '\0';
    return n;
}

static int count_entries(const char *dir)
{
    DIR *d = opendir(dir);
    if (d == NULL)
        return -1;
    int n = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0)
            n++;
    }
    closedir(d);
    return n;
}

TEST(round_trip_awkward_bytes)
{
    char *dir = make_tmpdir();
    ASSERT(dir != NULL);
    /* Every byte but NUL, newlines and quotes included, and invalid UTF-8. */
    char all[255];
    for (int i = 0; i < 255; i++)
        all[i] = (char)(i + 1);
    const struct {
        const char *name;
        const char *value;
        size_t len;
    } cases[] = {
#define CASE_(name, lit) {name, lit, sizeof(lit) - 1}
        CASE_("ANTHROPIC_API_KEY", "sk-ant-123"),
        CASE_("MULTI", "line one\nline two\r\n\tend\n"),
        CASE_("QUOTES", "say \"hi\" \\n is not a newline\\"),
        CASE_("UTF8", "caf\xc3\xa9 \xf0\x9f\x94\x91"),
        CASE_("BINARY", "\xff\xfe\x01\x7f\x1b[0m"),
        {"ALL", all, sizeof(all)},
        CASE_("_", "=\"="),
#undef CASE_
    };
    for (size_t i = 0; i < AG_ARRAY_LEN(cases); i++)
        ASSERT_EQ(ag_secrets_put(dir, cases[i].name, cases[i].value, cases[i].len), 0);
    for (size_t i = 0; i < AG_ARRAY_LEN(cases); i++) {
        char *v = NULL;
        ASSERT_EQ(ag_secrets_get(dir, cases[i].name, &v), 0);
        ASSERT(v != NULL);
        ASSERT_EQ(strlen(v), cases[i].len);
        ASSERT(memcmp(v, cases[i].value, cases[i].len) == 0);
        ag_secrets_value_free(v);
    }
    /* One line per secret plus the two header lines: no raw newline leaked
     * from a value into the file. */
    char path[512], text[8192];
    path_of(path, sizeof(path), dir, AG_SECRETS_FILE);
    ssize_t n = slurp(path, text, sizeof(text));
    ASSERT(n > 0);
    int lines = 0;
    for (ssize_t i = 0; i < n; i++)
        lines += text[i] == '\n';
    ASSERT_EQ(lines, 2 + (int)AG_ARRAY_LEN(cases));
    ASSERT(strstr(text, "\nANTHROPIC_API_KEY=\"sk-ant-123\"\n") != NULL);
    rm_rf(dir);
    free(dir);
}

TEST(file_mode_0600_and_dir_0700)
{
    char *dir = make_tmpdir();
    ASSERT(dir != NULL);
    char data[512], path[600];
    path_of(data, sizeof(data), dir, "a/b/data"); /* parents created too */
    mode_t old = umask(0); /* the modes must not depend on a permissive umask */
    int rc = ag_secrets_put(data, "KEY", "v", 1);
    umask(old);
    ASSERT_EQ(rc, 0);
    struct stat st;
    ASSERT_EQ(stat(data, &st), 0);
    ASSERT_EQ(st.st_mode & 0777, 0700);
    path_of(path, sizeof(path), dir, "a");
    ASSERT_EQ(stat(path, &st), 0);
    ASSERT_EQ(st.st_mode & 0777, 0700);
    path_of(path, sizeof(path), data, AG_SECRETS_FILE);
    ASSERT_EQ(stat(path, &st), 0);
    ASSERT(S_ISREG(st.st_mode));
    ASSERT_EQ(st.st_mode & 0777, 0600);
    /* A file someone loosened is tightened again on the next write. */
    ASSERT_EQ(chmod(path, 0644), 0);
    ASSERT_EQ(ag_secrets_put(data, "KEY2", "w", 1), 0);
    ASSERT_EQ(stat(path, &st), 0);
    ASSERT_EQ(st.st_mode & 0777, 0600);
    rm_rf(dir);
    free(dir);
}

TEST(bad_names)
{
    char *dir = make_tmpdir();
    ASSERT(dir != NULL);
    char long_ok[129], too_long[130];
    memset(long_ok, 'A', 128);
    long_ok[128] = '\0';
    memset(too_long, 'A', 129);
    too_long[129] = '\0';
    const char *bad[] = {"",    "1ABC", "A-B",  "A B",      "A=B",
                         "A.B", "../X", "A\nB", "\xc3\xa9", too_long};
    for (size_t i = 0; i < AG_ARRAY_LEN(bad); i++) {
        ASSERT(!ag_secrets_name_valid(bad[i]));
        ASSERT_EQ(ag_secrets_put(dir, bad[i], "v", 1), AG_SECRETS_ENAME);
        char *v = NULL;
        ASSERT_EQ(ag_secrets_get(dir, bad[i], &v), AG_SECRETS_ENAME);
        ASSERT(v == NULL);
        ASSERT_EQ(ag_secrets_delete(dir, bad[i]), AG_SECRETS_ENAME);
    }
    ASSERT(!ag_secrets_name_valid(NULL));
    const char *good[] = {"_", "a", "A1", "_9_", "ANTHROPIC_API_KEY", long_ok};
    for (size_t i = 0; i < AG_ARRAY_LEN(good); i++) {
        ASSERT(ag_secrets_name_valid(good[i]));
        ASSERT_EQ(ag_secrets_put(dir, good[i], "v", 1), 0);
    }
    /* Refused names left no file behind; good ones are all there. */
    char **names;
    size_t n;
    ASSERT_EQ(ag_secrets_list(dir, &names, &n), 0);
    ASSERT_EQ(n, AG_ARRAY_LEN(good));
    ag_secrets_list_free(names, n);
    rm_rf(dir);
    free(dir);
}

TEST(bad_values)
{
    char *dir = make_tmpdir();
    ASSERT(dir != NULL);
    ASSERT_EQ(ag_secrets_put(dir, "K", "", 0), AG_SECRETS_EVALUE);
    ASSERT_EQ(ag_secrets_put(dir, "K", "a\0b", 3), AG_SECRETS_EVALUE);
    ASSERT_EQ(ag_secrets_put(dir, "K", NULL, 1), AG_SECRETS_EVALUE);
    size_t big = AG_SECRETS_MAX_VALUE_LEN + 1;
    char *v = malloc(big);
    ASSERT(v != NULL);
    memset(v, 'x', big);
    ASSERT_EQ(ag_secrets_put(dir, "K", v, big), AG_SECRETS_EVALUE_TOO_BIG);
    /* Exactly the limit is fine, and survives the round trip (4x escaping). */
    memset(v, '\n', big);
    ASSERT_EQ(ag_secrets_put(dir, "K", v, big - 1), 0);
    char *got = NULL;
    ASSERT_EQ(ag_secrets_get(dir, "K", &got), 0);
    ASSERT_EQ(strlen(got), big - 1);
    ASSERT(memcmp(got, v, big - 1) == 0);
    ag_secrets_value_free(got);
    free(v);
    rm_rf(dir);
    free(dir);
}

TEST(atomic_overwrite)
{
    char *dir = make_tmpdir();
    ASSERT(dir != NULL);
    char path[512];
    path_of(path, sizeof(path), dir, AG_SECRETS_FILE);
    ASSERT_EQ(ag_secrets_put(dir, "TOKEN", "old", 3), 0);
    ASSERT_EQ(ag_secrets_put(dir, "OTHER", "keep", 4), 0);
    /* A reader holding the old file keeps seeing the old bytes: the new file
     * is a new inode renamed over it, never the old one rewritten in place. */
    int fd = open(path, O_RDONLY);
    ASSERT(fd >= 0);
    struct stat before, after;
    ASSERT_EQ(fstat(fd, &before), 0);
    ASSERT_EQ(ag_secrets_put(dir, "TOKEN", "new-value", 9), 0);
    ASSERT_EQ(stat(path, &after), 0);
    ASSERT(before.st_ino != after.st_ino);
    char old_text[4096];
    ssize_t n = pread(fd, old_text, sizeof(old_text) - 1, 0);
    close(fd);
    ASSERT(n > 0);
    old_text[n] = '\0';
    ASSERT(strstr(old_text, "TOKEN=\"old\"") != NULL);
    char *v = NULL;
    ASSERT_EQ(ag_secrets_get(dir, "TOKEN", &v), 0);
    ASSERT_STREQ(v, "new-value");
    ag_secrets_value_free(v);
    ASSERT_EQ(ag_secrets_get(dir, "OTHER", &v), 0);
    ASSERT_STREQ(v, "keep");
    ag_secrets_value_free(v);
    /* No temp file is left beside it. */
    ASSERT_EQ(count_entries(dir), 1);
    rm_rf(dir);
    free(dir);
}

TEST(list_and_delete)
{
    char *dir = make_tmpdir();
    ASSERT(dir != NULL);
    char **names = NULL;
    size_t n = 99;
    /* No file, and no folder at all, are both an empty set. */
    ASSERT_EQ(ag_secrets_list(dir, &names, &n), 0);
    ASSERT_EQ(n, 0);
    ASSERT(names == NULL);
    char missing[512];
    path_of(missing, sizeof(missing), dir, "nope");
    ASSERT_EQ(ag_secrets_list(missing, &names, &n), 0);
    ASSERT_EQ(n, 0);
    char *v = NULL;
    ASSERT_EQ(ag_secrets_get(missing, "A", &v), AG_ENOTFOUND);
    ASSERT_EQ(ag_secrets_delete(missing, "A"), AG_ENOTFOUND);
    ASSERT_EQ(count_entries(dir), 0); /* delete did not create the folder */

    ASSERT_EQ(ag_secrets_put(dir, "ZED", "1", 1), 0);
    ASSERT_EQ(ag_secrets_put(dir, "ALPHA", "2", 1), 0);
    ASSERT_EQ(ag_secrets_put(dir, "MID", "3", 1), 0);
    ASSERT_EQ(ag_secrets_put(dir, "ALPHA", "4", 1), 0); /* replace, not add */
    ASSERT_EQ(ag_secrets_list(dir, &names, &n), 0);
    ASSERT_EQ(n, 3);
    ASSERT_STREQ(names[0], "ALPHA");
    ASSERT_STREQ(names[1], "MID");
    ASSERT_STREQ(names[2], "ZED");
    ag_secrets_list_free(names, n);

    ASSERT_EQ(ag_secrets_delete(dir, "MID"), 0);
    ASSERT_EQ(ag_secrets_delete(dir, "MID"), AG_ENOTFOUND);
    ASSERT_EQ(ag_secrets_get(dir, "MID", &v), AG_ENOTFOUND);
    ASSERT_EQ(ag_secrets_list(dir, &names, &n), 0);
    ASSERT_EQ(n, 2);
    ASSERT_STREQ(names[0], "ALPHA");
    ASSERT_STREQ(names[1], "ZED");
    ag_secrets_list_free(names, n);
    ASSERT_EQ(ag_secrets_get(dir, "ALPHA", &v), 0);
    ASSERT_STREQ(v, "4");
    ag_secrets_value_free(v);
    ag_secrets_value_free(NULL);
    rm_rf(dir);
    free(dir);
}

static int write_text(const char *path, const char *text, mode_t mode)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, mode);
    if (fd < 0)
        return -1;
    ssize_t n = write(fd, text, strlen(text));
    close(fd);
    return n == (ssize_t)strlen(text) ? 0 : -1;
}

TEST(malformed_and_foreign_files)
{
    char *dir = make_tmpdir();
    ASSERT(dir != NULL);
    char path[512];
    path_of(path, sizeof(path), dir, AG_SECRETS_FILE);
    /* Hand-written but valid: comments, blank and CRLF lines, a duplicate. */
    ASSERT_EQ(write_text(path, "# c\n\nA=\"1\"\r\nB=\"x\\x41\\\\\"\nA=\"2\"", 0600), 0);
    char *v = NULL;
    ASSERT_EQ(ag_secrets_get(dir, "A", &v), 0);
    ASSERT_STREQ(v, "2");
    ag_secrets_value_free(v);
    ASSERT_EQ(ag_secrets_get(dir, "B", &v), 0);
    ASSERT_STREQ(v, "xA\\");
    ag_secrets_value_free(v);

    const char *bad[] = {
        "A=1\n",         /* unquoted */
        "A=\"1\n",       /* unterminated */
        "A=\"1\" x\n",   /* text after the quote */
        "A=\"\\q\"\n",   /* unknown escape */
        "A=\"\\x4\"\n",  /* short hex */
        "A=\"\\x00\"\n", /* an escaped NUL */
        "A=\"\"\n",      /* empty value */
        "1A=\"x\"\n",    /* bad name */
        "just text\n",   /* no '=' */
    };
    for (size_t i = 0; i < AG_ARRAY_LEN(bad); i++) {
        ASSERT_EQ(write_text(path, bad[i], 0600), 0);
        ASSERT_EQ(ag_secrets_get(dir, "A", &v), AG_SECRETS_ECORRUPT);
        ASSERT(v == NULL);
        /* A writer refuses too, rather than dropping what it cannot read. */
        ASSERT_EQ(ag_secrets_put(dir, "A", "v", 1), AG_SECRETS_ECORRUPT);
    }
    /* A raw NUL byte in the file. */
    int fd = open(path, O_WRONLY | O_TRUNC);
    ASSERT(fd >= 0);
    ASSERT_EQ(write(fd, "A=\"a\0b\"\n", 8), 8);
    close(fd);
    ASSERT_EQ(ag_secrets_get(dir, "A", &v), AG_SECRETS_ECORRUPT);

    /* A symlink in place of the file is refused, not followed. */
    char target[512];
    path_of(target, sizeof(target), dir, "elsewhere");
    ASSERT_EQ(write_text(target, "A=\"planted\"\n", 0600), 0);
    ASSERT_EQ(unlink(path), 0);
    ASSERT_EQ(symlink(target, path), 0);
    ASSERT_EQ(ag_secrets_get(dir, "A", &v), AG_SECRETS_ENOT_PRIVATE);
    ASSERT(v == NULL);
    rm_rf(dir);
    free(dir);
}

TEST(writers_in_several_processes)
{
    char *dir = make_tmpdir();
    ASSERT(dir != NULL);
    enum { PROCS = 6, EACH = 8 };
    pid_t pids[PROCS];
    for (int p = 0; p < PROCS; p++) {
        pids[p] = fork();
        ASSERT(pids[p] >= 0);
        if (pids[p] == 0) {
            int failed = 0;
            for (int i = 0; i < EACH; i++) {
                char name[32], val[32];
                snprintf(name, sizeof(name), "P%d_%d", p, i);
                snprintf(val, sizeof(val), "v%d", p * 100 + i);
                failed |= ag_secrets_put(dir, name, val, strlen(val)) != 0;
            }
            _exit(failed);
        }
    }
    for (int p = 0; p < PROCS; p++) {
        int st;
        ASSERT_EQ(waitpid(pids[p], &st, 0), pids[p]);
        ASSERT(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    }
    /* The folder lock serialises read-modify-write: no update was lost. */
    char **names;
    size_t n;
    ASSERT_EQ(ag_secrets_list(dir, &names, &n), 0);
    ag_secrets_list_free(names, n);
    ASSERT_EQ(n, PROCS * EACH);
    char *v = NULL;
    ASSERT_EQ(ag_secrets_get(dir, "P3_7", &v), 0);
    ASSERT_STREQ(v, "v307");
    ag_secrets_value_free(v);
    rm_rf(dir);
    free(dir);
}

TEST(path_and_strerror)
{
    char buf[64];
    ASSERT_EQ(ag_secrets_path("/data", buf, sizeof(buf)), 0);
    ASSERT_STREQ(buf, "/data/secrets");
    ASSERT_EQ(ag_secrets_path(NULL, buf, sizeof(buf)), 0);
    ASSERT_STREQ(buf, AG_STORE_DEFAULT_DATA_DIR "/secrets");
    ASSERT_EQ(ag_secrets_path("/a/very/long/folder/name/indeed/more/than/that", buf, 32),
              -ENAMETOOLONG);
    ASSERT(strstr(ag_strerror(AG_SECRETS_ENAME), "A-Za-z_") != NULL);
    ASSERT_STREQ(ag_strerror(AG_ENOTFOUND), "no such key or route");
    ASSERT_EQ(ag_err_http_status(AG_SECRETS_ENAME), 400);
}

/* A credential with CR, LF or NUL would inject header lines upstream: refused
 * from every source, and the refusal names the secret, never its value. */
TEST(resolve_refuses_control_bytes)
{
    char *dir = make_tmpdir();
    ASSERT(dir != NULL);
    char *v = NULL;
    ASSERT_EQ(ag_secrets_put(dir, "FILE_KEY", "sk-ant-x\r\nX-Evil: 1", 19), 0);
    char logpath[] = "/tmp/ag_test_secrets_log_XXXXXX";
    int logfd = mkstemp(logpath);
    ASSERT(logfd >= 0);
    fflush(stderr);
    int saved = dup(STDERR_FILENO);
    dup2(logfd, STDERR_FILENO);
    int rc_file = ag_secrets_resolve(dir, "FILE_KEY", &v);
    setenv("AG_TEST_ENV_KEY", "sk-ant-y\nX-Evil: 2", 1);
    char *v2 = NULL;
    int rc_env = ag_secrets_resolve(dir, "AG_TEST_ENV_KEY", &v2);
    unsetenv("AG_TEST_ENV_KEY");
    setenv("AG_TEST_OK_KEY", "sk-ant-fine", 1);
    char *v3 = NULL;
    int rc_ok = ag_secrets_resolve(dir, "AG_TEST_OK_KEY", &v3);
    unsetenv("AG_TEST_OK_KEY");
    fflush(stderr);
    dup2(saved, STDERR_FILENO);
    close(saved);
    ASSERT_EQ(rc_file, AG_SECRETS_ECONTROL);
    ASSERT(v == NULL);
    ASSERT_EQ(rc_env, AG_SECRETS_ECONTROL);
    ASSERT(v2 == NULL);
    ASSERT_EQ(rc_ok, 0);
    ASSERT_STREQ(v3, "sk-ant-fine");
    ag_secrets_value_free(v3);
    char text[4096] = "";
    ssize_t n = pread(logfd, text, sizeof(text) - 1, 0);
    close(logfd);
    unlink(logpath);
    ASSERT(n > 0);
    text[n] = '\0';
    ASSERT(strstr(text, "refusing the secret FILE_KEY from the secrets file: byte 9") != NULL);
    ASSERT(strstr(text, "refusing the secret AG_TEST_ENV_KEY from the environment") != NULL);
    ASSERT(strstr(text, "sk-ant") == NULL && strstr(text, "Evil") == NULL);
    rm_rf(dir);
    free(dir);
}

AG_TESTS(AG_TEST_ENTRY(round_trip_awkward_bytes) AG_TEST_ENTRY(file_mode_0600_and_dir_0700)
             AG_TEST_ENTRY(bad_names) AG_TEST_ENTRY(bad_values) AG_TEST_ENTRY(atomic_overwrite)
                 AG_TEST_ENTRY(list_and_delete) AG_TEST_ENTRY(malformed_and_foreign_files)
                     AG_TEST_ENTRY(writers_in_several_processes) AG_TEST_ENTRY(path_and_strerror)
                         AG_TEST_ENTRY(resolve_refuses_control_bytes))
