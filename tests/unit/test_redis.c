/* SPDX-License-Identifier: MIT
 *
 * test_redis.c: the Redis client: URLs; against a real redis-server (started
 * here on a free port) pipelining, AUTH and SELECT, EVALSHA falling back to
 * EVAL; against a listener that never answers, the command timeout; and
 * commands failing once each when Redis is down, then the reconnect.
 */
#include "util/platform.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"
#include "redis_server.h"
#include "store/redis.h"
#include "store/redis_gcra.h"
#include "util/errors.h"

TEST(urls)
{
    ag_redis_url_t u;
    const char *err;
    ASSERT_EQ(ag_redis_url_parse("redis://127.0.0.1:6390/3", &u, &err), 0);
    ASSERT(strcmp(u.host, "127.0.0.1") == 0 && u.port == 6390 && u.db == 3 && !u.password[0]);
    ASSERT_EQ(ag_redis_url_parse("redis://:p%40ss@localhost", &u, &err), 0);
    ASSERT(strcmp(u.host, "localhost") == 0 && u.port == 6379 && u.db == 0);
    ASSERT_STREQ(u.password, "p@ss");
    ASSERT_EQ(ag_redis_url_parse("redis://bob:pw@[::1]:7000/1", &u, &err), 0);
    ASSERT(strcmp(u.host, "::1") == 0 && u.port == 7000 && u.db == 1);
    ASSERT(strcmp(u.user, "bob") == 0 && strcmp(u.password, "pw") == 0);
    ASSERT_EQ(ag_redis_url_parse("unix:///run/redis.sock?db=2&password=x", &u, &err), 0);
    ASSERT(strcmp(u.path, "/run/redis.sock") == 0 && u.db == 2 && strcmp(u.password, "x") == 0);
    ASSERT_EQ(ag_redis_url_parse("unix://:pw@/tmp/r.sock", &u, &err), 0);
    ASSERT(strcmp(u.path, "/tmp/r.sock") == 0 && strcmp(u.password, "pw") == 0);
    static const char *bad[] = {"http://x",       "rediss://x",      "redis://",
                                "redis://h:0",    "redis://h:70000", "redis://h/x",
                                "redis://:%zz@h", "unix://rel.sock", "unix:///s?x=1",
                                "redis://[::1",   "redis://h:12a"};
    for (size_t i = 0; i < AG_ARRAY_LEN(bad); i++)
        ASSERT_MSG_(ag_redis_url_parse(bad[i], &u, &err) == AG_REDIS_EURL && err, "%s", bad[i]);
    /* The message never repeats the password. */
    ASSERT_EQ(ag_redis_url_parse("redis://:secret%zz@h", &u, &err), AG_REDIS_EURL);
    ASSERT(strstr(err, "secret") == NULL);
}

typedef struct {
    int calls, ok, errors, last_rc;
    int64_t last_int;
    char last_str[64];
} sink_t;

static void on_reply(void *ctx, int rc, const ag_resp_t *reply)
{
    sink_t *s = ctx;
    s->calls++;
    s->last_rc = rc;
    if (rc < 0) {
        s->errors++;
        return;
    }
    s->ok++;
    if (reply->type == AG_RESP_INTEGER)
        s->last_int = reply->integer;
    if (reply->str) {
        size_t n = reply->len < sizeof(s->last_str) - 1 ? reply->len : sizeof(s->last_str) - 1;
        memcpy(s->last_str, reply->str, n);
        s->last_str[n] = '\0';
    }
    if (reply->type == AG_RESP_ERROR)
        s->errors++;
}

/* Runs the loop until cond or 5 s. */
#define RUN_UNTIL(loop, cond)                                                                      \
    do {                                                                                           \
        uint64_t until_ = uv_hrtime() + 5000000000ull;                                             \
        while (!(cond) && uv_hrtime() < until_)                                                    \
            uv_run((loop), UV_RUN_ONCE);                                                           \
    } while (0)

static void on_poke(uv_timer_t *t)
{
    (void)t;
}

static void close_all(uv_loop_t *loop, ag_redis_t *r)
{
    ag_redis_close(r);
    uv_run(loop, UV_RUN_DEFAULT);
    ASSERT_EQ(uv_loop_close(loop), 0);
}

static ag_redis_t *connect_to(uv_loop_t *loop, const char *url, const char *pw)
{
    ag_redis_options_t o = {.url = url,
                            .password = pw,
                            .command_timeout_ms = 300,
                            .connect_timeout_ms = 300,
                            .backoff_max_ms = 100,
                            .name = "test"};
    ag_redis_t *r = NULL;
    if (ag_redis_new(loop, &o, &r) < 0)
        return NULL;
    /* A keep-alive timer so the loop runs while the client connects. */
    uv_timer_t poke;
    uv_timer_init(loop, &poke);
    uv_timer_start(&poke, on_poke, 10, 10);
    RUN_UNTIL(loop, ag_redis_is_up(r));
    uv_close((uv_handle_t *)&poke, NULL);
    uv_run(loop, UV_RUN_NOWAIT);
    return r;
}

TEST(pipelining_auth_select_and_scripts)
{
    int port = free_port(NULL);
    pid_t pid = start_redis(port, "s3cret");
    char url[64];
    snprintf(url, sizeof(url), "redis://127.0.0.1:%d/5", port);
    uv_loop_t loop;
    uv_loop_init(&loop);
    ag_redis_t *r = connect_to(&loop, url, "s3cret");
    ASSERT(ag_redis_is_up(r));
    /* 200 INCRs issued in one go are written together and answered in order. */
    sink_t s = {0};
    const char *incr[] = {"INCR", "counter"};
    for (int i = 0; i < 200; i++)
        ASSERT_EQ(ag_redis_command(r, 2, incr, NULL, on_reply, &s, NULL), 0);
    ASSERT_EQ(s.calls, 0); /* never before the call returns */
    RUN_UNTIL(&loop, s.calls == 200);
    ASSERT(s.ok == 200 && s.errors == 0 && s.last_int == 200);
    /* SELECT 5 took effect: db 0 has no counter. */
    sink_t s2 = {0};
    const char *sel[] = {"SELECT", "0"}, *get[] = {"EXISTS", "counter"};
    ag_redis_command(r, 2, sel, NULL, on_reply, &s2, NULL);
    ag_redis_command(r, 2, get, NULL, on_reply, &s2, NULL);
    RUN_UNTIL(&loop, s2.calls == 2);
    ASSERT_EQ(s2.last_int, 0);
    /* A script nobody loaded: EVALSHA gets NOSCRIPT, the client sends EVAL. */
    static ag_redis_script_t sc;
    ag_redis_script_init(&sc, "return tonumber(ARGV[1]) + #KEYS");
    ASSERT_EQ(strlen(sc.sha1), 40);
    sink_t s3 = {0};
    const char *args[] = {"k1", "k2", "40"};
    const char *flush[] = {"SCRIPT", "FLUSH"};
    ag_redis_command(r, 2, flush, NULL, on_reply, &s3, NULL);
    ag_redis_eval(r, &sc, 2, 3, args, NULL, on_reply, &s3, NULL);
    RUN_UNTIL(&loop, s3.calls == 2);
    ASSERT(s3.errors == 0 && s3.last_int == 42);
    /* Cancelled: its answer is read and dropped, later ones still match. */
    sink_t s4 = {0};
    ag_redis_cmd_t *c = NULL;
    ASSERT_EQ(ag_redis_eval(r, &sc, 0, 1, args + 2, NULL, on_reply, &s4, &c), 0);
    ag_redis_cancel(c);
    ag_redis_eval(r, &sc, 1, 2, args + 1, NULL, on_reply, &s4, NULL);
    RUN_UNTIL(&loop, s4.calls == 1 && ag_redis_pending(r) == 0);
    ASSERT(s4.calls == 1 && s4.last_int == 41);
    close_all(&loop, r);
    stop_redis(pid);
}

TEST(wrong_password_never_comes_up)
{
    int port = free_port(NULL);
    pid_t pid = start_redis(port, "right");
    char url[64];
    snprintf(url, sizeof(url), "redis://:wrong@127.0.0.1:%d", port);
    uv_loop_t loop;
    uv_loop_init(&loop);
    ag_redis_options_t o = {.url = url, .connect_timeout_ms = 200, .name = "test"};
    ag_redis_t *r = NULL;
    ASSERT_EQ(ag_redis_new(&loop, &o, &r), 0);
    uv_timer_t poke;
    uv_timer_init(&loop, &poke);
    uv_timer_start(&poke, on_poke, 10, 10);
    uint64_t until = uv_hrtime() + 500000000ull;
    while (uv_hrtime() < until)
        uv_run(&loop, UV_RUN_ONCE);
    ASSERT(!ag_redis_is_up(r));
    uv_close((uv_handle_t *)&poke, NULL);
    close_all(&loop, r);
    stop_redis(pid);
}

TEST(timeout_and_down_fail_each_command_once)
{
    /* A listener that accepts (the kernel does) and never answers. */
    int lfd;
    int port = free_port(&lfd);
    listen(lfd, 16);
    char url[64];
    snprintf(url, sizeof(url), "redis://127.0.0.1:%d", port);
    uv_loop_t loop;
    uv_loop_init(&loop);
    ag_redis_t *r = connect_to(&loop, url, NULL);
    ASSERT(ag_redis_is_up(r)); /* no AUTH/SELECT: up once connected */
    sink_t s = {0};
    const char *ping[] = {"PING"};
    for (int i = 0; i < 10; i++)
        ASSERT_EQ(ag_redis_command(r, 1, ping, NULL, on_reply, &s, NULL), 0);
    uint64_t t0 = uv_hrtime();
    RUN_UNTIL(&loop, s.calls == 10);
    uint64_t took_ms = (uv_hrtime() - t0) / 1000000;
    ASSERT(s.calls == 10 && s.errors == 10 && s.last_rc == AG_REDIS_ETIMEDOUT);
    ASSERT(took_ms >= 250 && took_ms < 2000);
    /* Down now (between attempts): a command fails at once, its callback never runs. */
    close(lfd);
    int rc = ag_redis_command(r, 1, ping, NULL, on_reply, &s, NULL);
    ASSERT(rc == AG_REDIS_EDOWN || rc == 0);
    if (rc == 0) /* it caught a reconnect attempt: it fails once like the others */
        RUN_UNTIL(&loop, s.calls == 11);
    close_all(&loop, r);
}

TEST(killed_under_load_then_back)
{
    int port = free_port(NULL);
    pid_t pid = start_redis(port, NULL);
    char url[64];
    snprintf(url, sizeof(url), "redis://127.0.0.1:%d", port);
    uv_loop_t loop;
    uv_loop_init(&loop);
    ag_redis_t *r = connect_to(&loop, url, NULL);
    ASSERT(ag_redis_is_up(r));
    const char *ping[] = {"PING"};
    /* Killed under load: every pending command fails once. */
    sink_t s = {0};
    int issued = 0;
    for (int i = 0; i < 50; i++)
        issued += ag_redis_command(r, 1, ping, NULL, on_reply, &s, NULL) == 0;
    stop_redis(pid);
    RUN_UNTIL(&loop, s.calls == issued);
    ASSERT_EQ(s.calls, issued);
    /* Back on the same port: the client reconnects by itself. */
    pid = start_redis(port, NULL);
    uv_timer_t poke;
    uv_timer_init(&loop, &poke);
    uv_timer_start(&poke, on_poke, 10, 10);
    sink_t s2 = {0};
    bool asked = false;
    uint64_t until = uv_hrtime() + 5000000000ull;
    while (s2.ok == 0 && uv_hrtime() < until) {
        uv_run(&loop, UV_RUN_ONCE);
        if (!asked && ag_redis_is_up(r))
            asked = ag_redis_command(r, 1, ping, NULL, on_reply, &s2, NULL) == 0;
        else if (asked && s2.calls > 0 && s2.ok == 0)
            asked = false, s2.calls = 0;
    }
    ASSERT(s2.ok == 1 && strcmp(s2.last_str, "PONG") == 0);
    uv_close((uv_handle_t *)&poke, NULL);
    close_all(&loop, r);
    stop_redis(pid);
}

typedef struct {
    int calls, allowed, denied, bad;
    uint32_t max_retry, min_retry;
} gcra_sink_t;

static void on_gcra(void *ctx, int rc, const ag_resp_t *reply)
{
    gcra_sink_t *g = ctx;
    g->calls++;
    ag_redis_gcra_result_t res;
    if (rc < 0 || ag_redis_gcra_decode(reply, 5, &res) < 0) {
        g->bad++;
        return;
    }
    if (res.allowed) {
        g->allowed++;
        return;
    }
    g->denied++;
    g->max_retry = res.retry_after_s > g->max_retry ? res.retry_after_s : g->max_retry;
    g->min_retry =
        !g->min_retry || res.retry_after_s < g->min_retry ? res.retry_after_s : g->min_retry;
}

/* Two clients (two instances) share one key: a burst split between them
 * passes exactly the limit, on Redis's clock (neither sends a time). */
TEST(gcra_limit_is_exact_across_clients)
{
    int port = free_port(NULL);
    pid_t pid = start_redis(port, NULL);
    char url[64];
    snprintf(url, sizeof(url), "redis://127.0.0.1:%d", port);
    uv_loop_t loop;
    uv_loop_init(&loop);
    ag_redis_t *a = connect_to(&loop, url, NULL);
    ag_redis_t *b = connect_to(&loop, url, NULL);
    ASSERT(ag_redis_is_up(a) && ag_redis_is_up(b));
    gcra_sink_t g = {0};
    for (int i = 0; i < 8; i++) {
        ag_redis_t *r = i % 2 ? b : a;
        ASSERT_EQ(ag_redis_gcra_check(r, "rl:/x:1.2.3.4", 13, 5, 60, on_gcra, &g, NULL), 0);
    }
    RUN_UNTIL(&loop, g.calls == 8);
    ASSERT(g.calls == 8 && g.bad == 0);
    ASSERT_EQ(g.allowed, 5);
    ASSERT_EQ(g.denied, 3);
    /* One request per 12 s comes back: the first denied waits at most 12 s. */
    ASSERT(g.min_retry >= 1 && g.max_retry <= 12);
    /* Another key has its own quota. */
    gcra_sink_t h = {0};
    ag_redis_gcra_check(a, "rl:/x:5.6.7.8", 13, 5, 60, on_gcra, &h, NULL);
    RUN_UNTIL(&loop, h.calls == 1);
    ASSERT_EQ(h.allowed, 1);
    ag_redis_close(b);
    close_all(&loop, a);
    stop_redis(pid);
}

TEST(unix_socket)
{
    char path[64], url[96];
    snprintf(path, sizeof(path), "/tmp/aigate-test-redis-%d.sock", (int)getpid());
    snprintf(url, sizeof(url), "unix://%s?db=2", path);
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        freopen("/dev/null", "w", stdout);
        execlp("redis-server", "redis-server", "--port", "0", "--unixsocket", path, "--save", "",
               "--appendonly", "no", (char *)NULL);
        _exit(127);
    }
    uv_loop_t loop;
    uv_loop_init(&loop);
    ag_redis_t *r = connect_to(&loop, url, NULL);
    ASSERT(ag_redis_is_up(r));
    sink_t s = {0};
    const char *set[] = {"SET", "k", "v"}, *sel[] = {"SELECT", "2"}, *get[] = {"GET", "k"};
    const char *sel0[] = {"SELECT", "0"};
    ag_redis_command(r, 3, set, NULL, on_reply, &s, NULL);
    ag_redis_command(r, 2, sel0, NULL, on_reply, &s, NULL);
    ag_redis_command(r, 2, get, NULL, on_reply, &s, NULL); /* nil in db 0 */
    RUN_UNTIL(&loop, s.calls == 3);
    ASSERT(s.calls == 3 && s.errors == 0);
    sink_t s2 = {0};
    ag_redis_command(r, 2, sel, NULL, on_reply, &s2, NULL);
    ag_redis_command(r, 2, get, NULL, on_reply, &s2, NULL);
    RUN_UNTIL(&loop, s2.calls == 2);
    ASSERT(s2.errors == 0 && strcmp(s2.last_str, "v") == 0);
    close_all(&loop, r);
    stop_redis(pid);
    unlink(path);
}

TEST(close_fails_pending_with_closed)
{
    int lfd;
    int port = free_port(&lfd);
    listen(lfd, 16);
    char url[64];
    snprintf(url, sizeof(url), "redis://127.0.0.1:%d", port);
    uv_loop_t loop;
    uv_loop_init(&loop);
    ag_redis_t *r = connect_to(&loop, url, NULL);
    sink_t s = {0};
    const char *ping[] = {"PING"};
    ag_redis_command(r, 1, ping, NULL, on_reply, &s, NULL);
    ag_redis_command(r, 1, ping, NULL, on_reply, &s, NULL);
    ag_redis_close(r);
    ASSERT(s.calls == 2 && s.last_rc == AG_REDIS_ECLOSED);
    uv_run(&loop, UV_RUN_DEFAULT);
    ASSERT_EQ(uv_loop_close(&loop), 0);
    close(lfd);
}

/* clang-format off */
AG_TESTS(
    AG_TEST_ENTRY(urls)
    AG_TEST_ENTRY(pipelining_auth_select_and_scripts)
    AG_TEST_ENTRY(wrong_password_never_comes_up)
    AG_TEST_ENTRY(timeout_and_down_fail_each_command_once)
    AG_TEST_ENTRY(killed_under_load_then_back)
    AG_TEST_ENTRY(gcra_limit_is_exact_across_clients)
    AG_TEST_ENTRY(unix_socket)
    AG_TEST_ENTRY(close_fails_pending_with_closed))
/* clang-format on */
