/* SPDX-License-Identifier: MIT
 *
 * test_outputs.c: a task run's outputs against real stores and processes: R2
 * and KV in a temporary data folder (read back through the store APIs), an
 * unknown binding that fails without a try while the others land, commands
 * (stdin, exit status, a fail-then-succeed retry, the kill at the timeout,
 * SIGKILL for one that ignores SIGTERM, a missing program, a stop), the
 * limits, and the e-mail message format (addresses, RFC 2047, quoted-printable).
 * Webhooks and SMTP against real servers: tests/integration/n_outputs.test.js.
 */
#include "util/platform.h"

#include <arpa/inet.h>
#include <errno.h>
#include <ftw.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>

#include "harness.h"
#include "config/config.h"
#include "store/kv.h"
#include "store/objstore.h"
#include "tasks/exec.h"
#include "tasks/mail.h"
#include "tasks/outputs.h"
#include "util/buf.h"
#include "util/errors.h"
#include "util/log.h"
#include "util/utf.h"

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    return remove(path);
}

static void rm_rf(const char *dir)
{
    nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* A temp folder with a config that binds R2 STORAGE -> bucket "digests" and KV CACHE. */
typedef struct fixture {
    char dir[64];
    char data[128];
    ag_config_t cfg;
    ag_outputs_env_t env;
} fixture_t;

static int write_file(const char *path, const char *text, mode_t mode)
{
    FILE *f = fopen(path, "w");
    if (!f)
        return -1;
    fputs(text, f);
    fclose(f);
    return chmod(path, mode);
}

static char *read_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    ag_buf_t b;
    ag_buf_init(&b, 0);
    char chunk[4096];
    size_t n;
    while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0)
        ag_buf_append(&b, chunk, n);
    fclose(f);
    ag_buf_cstr(&b);
    return b.data ? b.data : strdup("");
}

static bool fixture_init(fixture_t *fx)
{
    memset(fx, 0, sizeof(*fx));
    snprintf(fx->dir, sizeof(fx->dir), "/tmp/ag_test_outputs_XXXXXX");
    if (!mkdtemp(fx->dir))
        return false;
    snprintf(fx->data, sizeof(fx->data), "%s/data", fx->dir);
    char path[160];
    snprintf(path, sizeof(path), "%s/aigate.toml", fx->dir);
    if (write_file(path,
                   "[[r2_buckets]]\nbinding = \"STORAGE\"\nbucket_name = \"digests\"\n"
                   "[[kv_namespaces]]\nbinding = \"CACHE\"\nid = \"cache-id\"\n",
                   0600) < 0)
        return false;
    ag_config_defaults(&fx->cfg);
    if (ag_config_load_file(&fx->cfg, path, stderr) < 0)
        return false;
    fx->env = (ag_outputs_env_t){
        .data_dir = fx->data,
        .cfg = &fx->cfg,
        .backoff_ms = 1,
        .backoff_max_ms = 5,
        .timeout_ms = 5000,
        .command_timeout_ms = 10000,
    };
    return true;
}

static void fixture_fini(fixture_t *fx)
{
    ag_config_fini(&fx->cfg);
    rm_rf(fx->dir);
}

static const ag_delivery_t DELIVERY = {
    .task = "weekly-digest",
    .cron = "0 9 * * MON",
    .scheduled_ms = 1773651600000,
    .model = "claude-haiku-4-5",
    .output = {"# Digest\n\nAll quiet.\n", 21},
    .input_tokens = 1200,
    .output_tokens = 450,
    .cost_usd = 0.0042,
};

static bool detail_clean(const char *s)
{
    for (const char *p = s; *p; p++) {
        if ((unsigned char)*p < 0x20 || *p == 0x7f)
            return false;
    }
    return strlen(s) < AG_OUTPUT_DETAIL_MAX && ag_utf8_valid(s, strlen(s));
}

static const char *custom(const ag_obj_info_t *info, const char *name)
{
    for (size_t i = 0; i < info->ncustom; i++) {
        if (strcmp(info->custom[i].name, name) == 0)
            return info->custom[i].value;
    }
    return NULL;
}

TEST(r2_and_kv_land)
{
    fixture_t fx;
    ASSERT(fixture_init(&fx));
    ag_output_t outs[] = {
        {.kind = AG_OUT_R2, .binding = "STORAGE", .key = "digests/2026-03-16.md"},
        {.kind = AG_OUT_R2, .binding = "STORAGE", .key = "latest.txt"},
        {.kind = AG_OUT_KV, .binding = "CACHE", .key = "digest:latest"},
    };
    ag_output_result_t res[3];
    ag_outputs_deliver(&fx.env, outs, 3, &DELIVERY, res);
    for (int i = 0; i < 3; i++) {
        ASSERT_EQ(res[i].rc, 0);
        ASSERT_EQ(res[i].attempts, 1);
        ASSERT(detail_clean(res[i].detail));
    }
    ASSERT_STREQ(res[0].detail, "r2 STORAGE/digests/2026-03-16.md: 21 bytes");

    ag_objstore_t *s = NULL;
    ASSERT_EQ(ag_objstore_open_bucket(fx.data, "digests", false, &s), 0);
    ag_obj_t obj;
    ASSERT_EQ(ag_objstore_get(s, "digests/2026-03-16.md", 21, &obj), 0);
    ASSERT_MEMEQ(obj.data, obj.len, "# Digest\n\nAll quiet.\n");
    ASSERT_STREQ(obj.info.content_type, "text/markdown; charset=utf-8");
    ASSERT_STREQ(custom(&obj.info, "task"), "weekly-digest");
    ASSERT_STREQ(custom(&obj.info, "cron"), "0 9 * * MON");
    ASSERT_STREQ(custom(&obj.info, "scheduledTime"), "1773651600000");
    ag_obj_free(&obj);
    ASSERT_EQ(ag_objstore_get(s, "latest.txt", 10, &obj), 0);
    ASSERT_STREQ(obj.info.content_type, "text/plain; charset=utf-8");
    ag_obj_free(&obj);
    ag_objstore_close(s);

    ag_kv_t *kv = NULL;
    ASSERT_EQ(ag_kv_open_namespace(fx.data, "CACHE", NULL, &kv), 0);
    ag_kv_value_t v;
    ASSERT_EQ(ag_kv_get_with_metadata(kv, "digest:latest", 13, &v), 0);
    ASSERT_MEMEQ(v.data, v.len, "# Digest\n\nAll quiet.\n");
    ASSERT_STREQ(
        v.metadata,
        "{\"task\":\"weekly-digest\",\"cron\":\"0 9 * * MON\",\"scheduledTime\":1773651600000}");
    ag_kv_value_free(&v);
    ag_kv_close(kv);
    fixture_fini(&fx);
}

TEST(unknown_binding_fails_alone)
{
    fixture_t fx;
    ASSERT(fixture_init(&fx));
    char path[160];
    snprintf(path, sizeof(path), "%s/tee.out", fx.dir);
    char *tee[] = {"/usr/bin/tee", path, NULL};
    ag_output_t outs[] = {
        {.kind = AG_OUT_R2, .binding = "NOPE", .key = "a.md"},
        {.kind = AG_OUT_KV, .binding = "NOPE", .key = "a"},
        {.kind = AG_OUT_R2, .binding = "STORAGE", .key = "a.md"},
        {.kind = AG_OUT_KV, .binding = "CACHE", .key = "a"},
        {.kind = AG_OUT_COMMAND, .argv = tee},
        {.kind = AG_OUT_KV, .binding = "CACHE", .key = ""},
    };
    ag_output_result_t res[6];
    ag_outputs_deliver(&fx.env, outs, 6, &DELIVERY, res);
    ASSERT_EQ(res[0].rc, AG_OUT_EBINDING);
    ASSERT_EQ(res[0].attempts, 0);
    ASSERT(strstr(res[0].detail, "NOPE") != NULL);
    ASSERT_EQ(res[1].rc, AG_OUT_EBINDING);
    ASSERT_EQ(res[1].attempts, 0);
    ASSERT_EQ(res[2].rc, 0);
    ASSERT_EQ(res[3].rc, 0);
    ASSERT_EQ(res[4].rc, 0);
    ASSERT_EQ(res[5].rc, AG_EINVALID);
    /* Nothing was made for the unknown bindings. */
    struct stat st;
    char nope[200];
    snprintf(nope, sizeof(nope), "%s/kv/NOPE", fx.data);
    ASSERT(stat(nope, &st) < 0);
    char *got = read_file(path);
    ASSERT(got != NULL);
    ASSERT_STREQ(got, "# Digest\n\nAll quiet.\n");
    free(got);
    /* No config at all: every binding is unknown. */
    fx.env.cfg = NULL;
    ag_outputs_deliver(&fx.env, outs + 2, 1, &DELIVERY, res);
    ASSERT_EQ(res[0].rc, AG_OUT_EBINDING);
    fixture_fini(&fx);
}

TEST(store_errors)
{
    fixture_t fx;
    ASSERT(fixture_init(&fx));
    ag_output_t outs[] = {
        {.kind = AG_OUT_R2, .binding = "STORAGE", .key = "../escape.md"},
        {.kind = AG_OUT_KV, .binding = "CACHE", .key = "x"},
    };
    ag_output_result_t res[2];
    ag_outputs_deliver(&fx.env, outs, 1, &DELIVERY, res);
    ASSERT_EQ(res[0].rc, AG_OBJ_EKEY_PATH);
    ASSERT_EQ(res[0].attempts, 1); /* the caller's mistake: not retried */
    fx.env.max_output_bytes = 4;
    ag_outputs_deliver(&fx.env, outs, 2, &DELIVERY, res);
    ASSERT_EQ(res[0].rc, AG_ETOOBIG);
    ASSERT_EQ(res[0].attempts, 0);
    ASSERT_EQ(res[1].rc, AG_ETOOBIG);
    ASSERT_EQ(res[1].attempts, 0);
    fixture_fini(&fx);
}

TEST(command_gets_stdin_and_a_clean_env)
{
    fixture_t fx;
    ASSERT(fixture_init(&fx));
    char script[160], out[160];
    snprintf(script, sizeof(script), "%s/env.sh", fx.dir);
    snprintf(out, sizeof(out), "%s/env.out", fx.dir);
    char text[512];
    snprintf(text, sizeof(text),
             "#!/bin/sh\n"
             "cat > '%s.stdin'\n"
             "printf '%%s|%%s|%%s|%%s|%%s|%%s' \"$AIGATE_TASK\" \"$AIGATE_SCHEDULED_TIME\" "
             "\"$AIGATE_MODEL\" \"$AIGATE_OUTPUT_TOKENS\" \"${ANTHROPIC_API_KEY:-none}\" "
             "\"$0\" > '%s'\n"
             "echo done\n",
             out, out);
    ASSERT_EQ(write_file(script, text, 0700), 0);
    setenv("ANTHROPIC_API_KEY", "sk-ant-must-not-leak", 1);
    char *argv[] = {script, NULL};
    ag_output_t o = {.kind = AG_OUT_COMMAND, .argv = argv};
    ag_output_result_t r;
    ag_outputs_deliver(&fx.env, &o, 1, &DELIVERY, &r);
    unsetenv("ANTHROPIC_API_KEY");
    ASSERT_EQ(r.rc, 0);
    ASSERT_EQ(r.status, 0);
    ASSERT_EQ(r.attempts, 1);
    ASSERT_STREQ(r.detail, "env.sh: exit 0: done");
    char *got = read_file(out);
    ASSERT(got != NULL);
    char want[400];
    snprintf(want, sizeof(want), "weekly-digest|1773651600000|claude-haiku-4-5|450|none|%s",
             script);
    ASSERT_STREQ(got, want);
    free(got);
    char in_path[200];
    snprintf(in_path, sizeof(in_path), "%s.stdin", out);
    got = read_file(in_path);
    ASSERT(got != NULL);
    ASSERT_STREQ(got, "# Digest\n\nAll quiet.\n");
    free(got);
    fixture_fini(&fx);
}

TEST(command_fails_then_succeeds)
{
    fixture_t fx;
    ASSERT(fixture_init(&fx));
    char script[160], text[600];
    snprintf(script, sizeof(script), "%s/flaky.sh", fx.dir);
    snprintf(text, sizeof(text),
             "#!/bin/sh\n"
             "if [ -e '%s/marker' ]; then cat > '%s/flaky.out'; exit 0; fi\n"
             ": > '%s/marker'\n"
             "echo 'first try fails' >&2\n"
             "exit 3\n",
             fx.dir, fx.dir, fx.dir);
    ASSERT_EQ(write_file(script, text, 0700), 0);
    char *argv[] = {script, NULL};
    ag_output_t o = {.kind = AG_OUT_COMMAND, .argv = argv};
    ag_output_result_t r;
    ag_outputs_deliver(&fx.env, &o, 1, &DELIVERY, &r);
    ASSERT_EQ(r.rc, 0);
    ASSERT_EQ(r.attempts, 2);
    ASSERT_EQ(r.status, 0);
    char path[200];
    snprintf(path, sizeof(path), "%s/flaky.out", fx.dir);
    char *got = read_file(path);
    ASSERT(got != NULL);
    ASSERT_STREQ(got, "# Digest\n\nAll quiet.\n");
    free(got);
    fixture_fini(&fx);
}

TEST(command_exit_status_and_output_in_detail)
{
    fixture_t fx;
    ASSERT(fixture_init(&fx));
    char script[160];
    snprintf(script, sizeof(script), "%s/fail.sh", fx.dir);
    /* Control characters, invalid UTF-8, a password echoed back, and a lot of
     * output: the detail stays one clean line, without the secret. */
    ASSERT_EQ(write_file(script,
                         "#!/bin/sh\n"
                         "printf 'bad\\tthing\\001\\377 happened\\n' >&2\n"
                         "i=0; while [ $i -lt 2000 ]; do echo 'more output line'; i=$((i+1)); "
                         "done\n"
                         "exit 7\n",
                         0700),
              0);
    char *argv[] = {script, NULL};
    ag_output_t o = {.kind = AG_OUT_COMMAND, .argv = argv};
    ag_output_result_t r;
    ag_outputs_deliver(&fx.env, &o, 1, &DELIVERY, &r);
    ASSERT_EQ(r.rc, AG_OUT_EEXIT);
    ASSERT_EQ(r.attempts, 3);
    ASSERT_EQ(r.status, 7);
    ASSERT(detail_clean(r.detail));
    ASSERT(strncmp(r.detail, "fail.sh: exit 7: bad thing ? happened more output line", 54) == 0);

    ASSERT_EQ(
        write_file(script, "#!/bin/sh\necho 'login with pw-Hunter2-XYZ failed'\nexit 1\n", 0700),
        0);
    fx.env.smtp.password = "pw-Hunter2-XYZ";
    fx.env.attempts = 1;
    ag_outputs_deliver(&fx.env, &o, 1, &DELIVERY, &r);
    ASSERT_EQ(r.rc, AG_OUT_EEXIT);
    ASSERT(strstr(r.detail, "Hunter2") == NULL);
    fixture_fini(&fx);
}

TEST(command_killed_at_timeout)
{
    fixture_t fx;
    ASSERT(fixture_init(&fx));
    char *argv[] = {"sleep", "30", NULL}; /* found in PATH */
    ag_output_t o = {.kind = AG_OUT_COMMAND, .argv = argv};
    ag_output_result_t r;
    fx.env.attempts = 1;
    fx.env.command_timeout_ms = 200;
    int64_t t0 = ag_mono_us();
    ag_outputs_deliver(&fx.env, &o, 1, &DELIVERY, &r);
    int64_t us = ag_mono_us() - t0;
    ASSERT_EQ(r.rc, AG_OUT_EKILLED);
    ASSERT_EQ(r.status, 128 + SIGTERM);
    /* Not before the timeout; the deadline is kept in whole milliseconds, so
     * allow one of rounding against this microsecond clock. */
    ASSERT(us >= 199000 && us < 5000000);
    ASSERT(strstr(r.detail, "killed after 200 ms (timeout)") != NULL);

    /* One that ignores SIGTERM gets SIGKILL after the grace, its children too. */
    char script[160];
    snprintf(script, sizeof(script), "%s/stubborn.sh", fx.dir);
    ASSERT_EQ(write_file(script, "#!/bin/sh\ntrap '' TERM\nsleep 30\necho never\n", 0700), 0);
    char *argv2[] = {script, NULL};
    o.argv = argv2;
    fx.env.command_grace_ms = 100;
    t0 = ag_mono_us();
    ag_outputs_deliver(&fx.env, &o, 1, &DELIVERY, &r);
    us = ag_mono_us() - t0;
    ASSERT_EQ(r.rc, AG_OUT_EKILLED);
    ASSERT_EQ(r.status, 128 + SIGKILL);
    ASSERT(us >= 299000 && us < 5000000);
    fixture_fini(&fx);
}

TEST(command_that_cannot_start)
{
    fixture_t fx;
    ASSERT(fixture_init(&fx));
    char *argv[] = {"/nonexistent/publish-digest", NULL};
    char *empty[] = {NULL};
    ag_output_t outs[] = {
        {.kind = AG_OUT_COMMAND, .argv = argv},
        {.kind = AG_OUT_COMMAND, .argv = empty},
        {.kind = AG_OUT_COMMAND, .argv = NULL},
    };
    ag_output_result_t res[3];
    ag_outputs_deliver(&fx.env, outs, 3, &DELIVERY, res);
    ASSERT_EQ(res[0].rc, -ENOENT);
    ASSERT_EQ(res[0].attempts, 1);
    ASSERT_STREQ(res[0].detail, "publish-digest: cannot start: No such file or directory");
    ASSERT_EQ(res[1].rc, AG_EINVALID);
    ASSERT_EQ(res[1].attempts, 0);
    ASSERT_EQ(res[2].rc, AG_EINVALID);
    fixture_fini(&fx);
}

TEST(command_big_input)
{
    fixture_t fx;
    ASSERT(fixture_init(&fx));
    size_t len = 3u << 20; /* far more than a pipe holds */
    char *big = malloc(len);
    ASSERT(big != NULL);
    for (size_t i = 0; i < len; i++)
        big[i] = (char)('a' + i % 26);
    ag_delivery_t d = DELIVERY;
    d.output = ag_str(big, len);
    char path[160];
    snprintf(path, sizeof(path), "%s/big.out", fx.dir);
    char *tee[] = {"/usr/bin/tee", path, NULL};
    char *deaf[] = {"/bin/true", NULL}; /* reads nothing: our writes meet EPIPE */
    ag_output_t outs[] = {{.kind = AG_OUT_COMMAND, .argv = tee},
                          {.kind = AG_OUT_COMMAND, .argv = deaf}};
    ag_output_result_t res[2];
    ag_outputs_deliver(&fx.env, outs, 2, &d, res);
    ASSERT_EQ(res[0].rc, 0);
    ASSERT_EQ(res[1].rc, 0);
    ASSERT(detail_clean(res[0].detail));
    char *got = read_file(path);
    ASSERT(got != NULL);
    ASSERT(strlen(got) == len && memcmp(got, big, len) == 0);
    free(got);
    free(big);
    fixture_fini(&fx);
}

typedef struct stopper {
    atomic_bool stop;
    char marker[200];
} stopper_t;

/* Sets the stop flag once the command has started (its marker file exists). */
static void *stop_when_started(void *arg)
{
    stopper_t *s = arg;
    struct stat st;
    for (int i = 0; i < 5000 && stat(s->marker, &st) < 0; i++) {
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
    atomic_store(&s->stop, true);
    return NULL;
}

TEST(stop_ends_a_delivery)
{
    fixture_t fx;
    ASSERT(fixture_init(&fx));
    stopper_t s;
    atomic_init(&s.stop, true);
    fx.env.stop = &s.stop;
    ag_output_t o = {.kind = AG_OUT_R2, .binding = "STORAGE", .key = "a.md"};
    ag_output_result_t r;
    ag_outputs_deliver(&fx.env, &o, 1, &DELIVERY, &r);
    ASSERT_EQ(r.rc, AG_OUT_ECANCELED);
    ASSERT_EQ(r.attempts, 0);

    /* A hanging command is stopped as soon as the flag is set. */
    atomic_store(&s.stop, false);
    char script[160], text[400];
    snprintf(script, sizeof(script), "%s/hang.sh", fx.dir);
    snprintf(s.marker, sizeof(s.marker), "%s/started", fx.dir);
    snprintf(text, sizeof(text), "#!/bin/sh\n: > '%s'\nsleep 30\n", s.marker);
    ASSERT_EQ(write_file(script, text, 0700), 0);
    char *argv[] = {script, NULL};
    ag_output_t c = {.kind = AG_OUT_COMMAND, .argv = argv};
    pthread_t th;
    ASSERT_EQ(pthread_create(&th, NULL, stop_when_started, &s), 0);
    int64_t t0 = ag_mono_us();
    ag_outputs_deliver(&fx.env, &c, 1, &DELIVERY, &r);
    int64_t ms = (ag_mono_us() - t0) / 1000;
    pthread_join(th, NULL);
    ASSERT_EQ(r.rc, AG_OUT_ECANCELED);
    ASSERT_EQ(r.attempts, 1);
    ASSERT(ms < 8000);
    fixture_fini(&fx);
}

TEST(webhook_and_email_refusals)
{
    fixture_t fx;
    ASSERT(fixture_init(&fx));
    /* A port nobody listens on: connection refused, retried. */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    ASSERT(fd >= 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t sl = sizeof(sa);
    ASSERT_EQ(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    ASSERT_EQ(getsockname(fd, (struct sockaddr *)&sa, &sl), 0);
    close(fd);
    char url[128];
    snprintf(url, sizeof(url), "http://user:tok3n@127.0.0.1:%u/hook/SECRET-PATH?key=SECRET-Q",
             ntohs(sa.sin_port));
    ag_output_t outs[] = {
        {.kind = AG_OUT_WEBHOOK, .url = url},
        {.kind = AG_OUT_WEBHOOK, .url = "ftp://example.com/x"},
        {.kind = AG_OUT_WEBHOOK, .url = "not a url"},
        {.kind = AG_OUT_EMAIL, .to = "me@example.com", .subject = "s"},
        {.kind = AG_OUT_R2, .binding = "STORAGE", .key = "still.md"},
    };
    ag_output_result_t res[5];
    ag_outputs_deliver(&fx.env, outs, 5, &DELIVERY, res);
    ASSERT_EQ(res[0].rc, AG_OUT_ECONNECT);
    ASSERT_EQ(res[0].attempts, 3);
    ASSERT_EQ(res[0].status, 0);
    ASSERT(strstr(res[0].detail, "SECRET") == NULL && strstr(res[0].detail, "tok3n") == NULL);
    ASSERT(strncmp(res[0].detail, "POST http://127.0.0.1:", 22) == 0);
    ASSERT_EQ(res[1].rc, AG_EINVALID);
    ASSERT_EQ(res[1].attempts, 0);
    ASSERT_EQ(res[2].rc, AG_EINVALID);
    ASSERT_EQ(res[3].rc, AG_OUT_ENOSMTP);
    ASSERT_EQ(res[3].attempts, 0);
    ASSERT_EQ(res[4].rc, 0);

    fx.env.smtp = (ag_outputs_smtp_t){.url = "smtp://127.0.0.1:1", .from = "bot@example.com"};
    ag_output_t bad[] = {
        {.kind = AG_OUT_EMAIL, .to = "not-an-address", .subject = "s"},
        {.kind = AG_OUT_EMAIL, .to = "a@example.com\r\nBcc: x@evil.test", .subject = "s"},
        {.kind = AG_OUT_EMAIL, .to = NULL, .subject = "s"},
    };
    ag_outputs_deliver(&fx.env, bad, 3, &DELIVERY, res);
    for (int i = 0; i < 3; i++) {
        ASSERT_EQ(res[i].rc, AG_EINVALID);
        ASSERT_EQ(res[i].attempts, 0);
    }
    fixture_fini(&fx);
}

/* ---- the message format ------------------------------------------------------------------ */

static int b64val(char c)
{
    const char *tab = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    const char *p = c ? strchr(tab, c) : NULL;
    return p ? (int)(p - tab) : -1;
}

/* Decodes every "=?UTF-8?B?...?=" word of s (ignoring what lies between them). */
static void decode_words(const char *s, ag_buf_t *out)
{
    const char *p = s;
    while ((p = strstr(p, "=?UTF-8?B?")) != NULL) {
        p += 10;
        unsigned acc = 0;
        int bits = 0;
        for (; *p && *p != '?'; p++) {
            int v = b64val(*p);
            if (v < 0)
                continue;
            acc = acc << 6 | (unsigned)v;
            bits += 6;
            if (bits >= 8) {
                bits -= 8;
                char ch = (char)((acc >> bits) & 0xff);
                ag_buf_append(out, &ch, 1);
            }
        }
    }
}

TEST(mail_addresses)
{
    ag_mail_addr_t a[4];
    ASSERT_EQ(ag_mail_parse_list(ag_str_c("me@example.com"), a, 4), 1);
    ASSERT_MEMEQ(a[0].spec.ptr, a[0].spec.len, "me@example.com");
    ASSERT_EQ(a[0].display.len, 0);
    ASSERT_EQ(
        ag_mail_parse_list(ag_str_c(" Ops Team <ops@example.com> , \"Dev, Lead\" <d@x.io>"), a, 4),
        AG_EINVALID); /* a comma inside a display name is not supported */
    ASSERT_EQ(
        ag_mail_parse_list(ag_str_c(" Ops Team <ops@example.com> , \"Dev Lead\" <d@x.io>"), a, 4),
        2);
    ASSERT_MEMEQ(a[0].display.ptr, a[0].display.len, "Ops Team");
    ASSERT_MEMEQ(a[1].display.ptr, a[1].display.len, "Dev Lead");
    ASSERT_MEMEQ(a[1].spec.ptr, a[1].spec.len, "d@x.io");
    const char *bad[] = {"",
                         "nobody",
                         "a@",
                         "@b",
                         "a@@b",
                         "a b@c.d",
                         "<a@b.c",
                         "x <a@b.c> y",
                         "a@b.c,",
                         "a@b.c\nBcc: e@f.g",
                         "a@b.c, , d@e.f"};
    for (size_t i = 0; i < AG_ARRAY_LEN(bad); i++)
        ASSERT_MSG_(ag_mail_parse_list(ag_str_c(bad[i]), a, 4) == AG_EINVALID, "accepted %s",
                    bad[i]);
    ASSERT_EQ(ag_mail_parse_list(ag_str_c("a@b.c,d@e.f,g@h.i"), a, 2), AG_EINVALID);
}

TEST(mail_header_text)
{
    ag_buf_t b;
    ag_buf_init(&b, 0);
    ASSERT_EQ(ag_mail_append_header_text(&b, ag_str_c("Weekly digest 2026-03-16")), 0);
    ASSERT_MEMEQ(b.data, b.len, "Weekly digest 2026-03-16");
    ag_buf_reset(&b);
    ASSERT_EQ(ag_mail_append_header_text(&b, ag_str_c("\xc3\xa9")), 0);
    ASSERT_MEMEQ(b.data, b.len, "=?UTF-8?B?w6k=?=");
    ag_buf_reset(&b);
    /* Newlines from a template never make a second header. */
    ASSERT_EQ(ag_mail_append_header_text(&b, ag_str_c("a\r\nBcc: x@y.z")), 0);
    ASSERT_MEMEQ(b.data, b.len, "a  Bcc: x@y.z");
    ag_buf_reset(&b);
    /* Long non-ASCII text: several words of whole characters, folded. */
    const char *subj = "R\xc3\xa9sum\xc3\xa9 hebdomadaire \xe2\x80\x94 \xe6\x97\xa5\xe6\x9c\xac"
                       "\xe8\xaa\x9e \xf0\x9f\x93\x88 and a longer tail of plain words here";
    ASSERT_EQ(ag_mail_append_header_text(&b, ag_str_c(subj)), 0);
    ag_buf_cstr(&b);
    ASSERT(strstr(b.data, "\r\n =?UTF-8?B?") != NULL);
    const char *w = b.data;
    while ((w = strstr(w, "=?UTF-8?B?")) != NULL) {
        const char *end = strstr(w + 10, "?=");
        ASSERT(end != NULL && end + 2 - w <= 75);
        ag_buf_t one;
        ag_buf_init(&one, 0);
        ag_buf_append(&one, w, (size_t)(end + 2 - w));
        ag_buf_cstr(&one);
        ag_buf_t dec;
        ag_buf_init(&dec, 0);
        decode_words(one.data, &dec);
        ASSERT(ag_utf8_valid(dec.data, dec.len)); /* no character split across words */
        ag_buf_fini(&dec);
        ag_buf_fini(&one);
        w = end;
    }
    ag_buf_t all;
    ag_buf_init(&all, 0);
    decode_words(b.data, &all);
    ASSERT_MEMEQ(all.data, all.len, subj);
    ag_buf_fini(&all);
    ag_buf_fini(&b);
}

TEST(mail_quoted_printable)
{
    ag_buf_t b;
    ag_buf_init(&b, 0);
    ASSERT_EQ(ag_mail_append_qp(&b, ag_str_c("a=b caf\xc3\xa9 \nend\t")), 0);
    ASSERT_MEMEQ(b.data, b.len, "a=3Db caf=C3=A9=20\r\nend=09\r\n");
    ag_buf_reset(&b);
    char line[301];
    memset(line, 'x', 300);
    line[300] = '\0';
    ASSERT_EQ(ag_mail_append_qp(&b, ag_str_c(line)), 0);
    ag_buf_cstr(&b);
    /* Every encoded line within 76 bytes; dropping the soft breaks gives the text back. */
    size_t col = 0, xs = 0;
    for (size_t i = 0; i < b.len; i++) {
        if (b.data[i] == '\r' && b.data[i + 1] == '\n') {
            ASSERT(col <= 76);
            col = 0;
            i++;
            continue;
        }
        col++;
        xs += b.data[i] == 'x';
    }
    ASSERT_EQ(xs, 300);
    ag_buf_fini(&b);
}

TEST(mail_message)
{
    ag_mail_addr_t from, to[2];
    ASSERT_EQ(ag_mail_parse_list(ag_str_c("aigate <bot@example.com>"), &from, 1), 1);
    ASSERT_EQ(ag_mail_parse_list(ag_str_c("me@example.com, J\xc3\xb6rg <j@example.org>"), to, 2),
              2);
    ag_mail_msg_t m = {
        .from = &from,
        .to = to,
        .nto = 2,
        .subject = ag_str_c("Digest"),
        .body = ag_str_c("line one\nline two\n.\nlast"),
        .date_ms = 1773651600000,
        .message_id = ag_str_c("<id.1@example.com>"),
        .task = ag_str_c("weekly-digest"),
    };
    ag_buf_t b;
    ag_buf_init(&b, 0);
    ASSERT_EQ(ag_mail_build(&m, &b), 0);
    ag_buf_cstr(&b);
    ASSERT_STREQ(b.data, "Date: Mon, 16 Mar 2026 09:00:00 +0000\r\n"
                         "From: aigate <bot@example.com>\r\n"
                         "To: me@example.com, =?UTF-8?B?SsO2cmc=?= <j@example.org>\r\n"
                         "Subject: Digest\r\n"
                         "Message-ID: <id.1@example.com>\r\n"
                         "MIME-Version: 1.0\r\n"
                         "Content-Type: text/plain; charset=utf-8\r\n"
                         "Content-Transfer-Encoding: 7bit\r\n"
                         "Auto-Submitted: auto-generated\r\n"
                         "X-Aigate-Task: weekly-digest\r\n"
                         "\r\n"
                         "line one\r\nline two\r\n.\r\nlast\r\n");
    ag_buf_reset(&b);
    m.body = ag_str_c("Caf\xc3\xa9\n");
    ASSERT_EQ(ag_mail_build(&m, &b), 0);
    ag_buf_cstr(&b);
    ASSERT(strstr(b.data, "Content-Transfer-Encoding: quoted-printable\r\n") != NULL);
    ASSERT(strstr(b.data, "\r\n\r\nCaf=C3=A9\r\n") != NULL);
    ag_buf_fini(&b);
}

TEST(exec_captures_and_bounds)
{
    char *argv[] = {"/bin/sh", "-c", "echo out; echo err >&2; head -c 100000 /dev/zero", NULL};
    ag_exec_opts_t o = {.argv = argv, .capture_max = 16, .timeout_ms = 10000};
    ag_exec_result_t r;
    ASSERT_EQ(ag_exec_run(&o, &r), 0);
    ASSERT_EQ(r.exit_status, 0);
    ASSERT_EQ(r.output.len, 16);
    ASSERT(memcmp(r.output.data, "out\nerr\n", 8) == 0);
    ASSERT_EQ(r.output_total, 100008);
    ag_buf_fini(&r.output);
}

AG_TESTS(AG_TEST_ENTRY(r2_and_kv_land) AG_TEST_ENTRY(unknown_binding_fails_alone)
             AG_TEST_ENTRY(store_errors) AG_TEST_ENTRY(command_gets_stdin_and_a_clean_env)
                 AG_TEST_ENTRY(command_fails_then_succeeds)
                     AG_TEST_ENTRY(command_exit_status_and_output_in_detail) AG_TEST_ENTRY(
                         command_killed_at_timeout) AG_TEST_ENTRY(command_that_cannot_start)
                         AG_TEST_ENTRY(command_big_input) AG_TEST_ENTRY(stop_ends_a_delivery)
                             AG_TEST_ENTRY(webhook_and_email_refusals) AG_TEST_ENTRY(mail_addresses)
                                 AG_TEST_ENTRY(mail_header_text)
                                     AG_TEST_ENTRY(mail_quoted_printable)
                                         AG_TEST_ENTRY(mail_message)
                                             AG_TEST_ENTRY(exec_captures_and_bounds))
