/* SPDX-License-Identifier: MIT
 *
 * upgrade.c: the binary upgrade's process mechanics (upgrade.h): fork and
 * exec with the listeners inherited, the readiness pipe, the child's stderr
 * kept for the reason it gives when it does not start.
 */
#include "util/platform.h"

#include "upgrade.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "util/log.h"

#define FDS_ENV "AIGATE_UPGRADE_FDS"
#define HANDOVER_ENV "AIGATE_UPGRADE_HANDOVER"
#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1U << 2)
#endif

extern char **environ;

/* ---- the new process's side ---------------------------------------------------------- */

static int parse_fd(const char *s, const char **end)
{
    char *e;
    errno = 0;
    long v = strtol(s, &e, 10);
    if (errno || e == s || v < 3 || v > INT_MAX)
        return -1;
    *end = e;
    /* Ours from now on, and not for whatever this process starts. */
    if (fcntl((int)v, F_SETFD, FD_CLOEXEC) < 0)
        return -1;
    return (int)v;
}

/* "name=fd,fd,..." into out[0..cap). @return the count, or -1. */
static int parse_list(const char *s, const char **end, int *out, unsigned cap)
{
    unsigned n = 0;
    for (;;) {
        int fd = parse_fd(s, &s);
        if (fd < 0 || n == cap)
            return -1;
        out[n++] = fd;
        if (*s != ',')
            break;
        s++;
    }
    *end = s;
    return (int)n;
}

int ag_upgrade_handover_take(ag_upgrade_handover_t *h)
{
    memset(h, 0, sizeof(*h));
    h->lock_fd = h->ready_fd = h->stderr_fd = -1;
    const char *fds = getenv(FDS_ENV);
    const char *old = getenv(HANDOVER_ENV);
    if (!fds || !old) {
        unsetenv(FDS_ENV);
        return 0;
    }
    h->active = true;
    h->old_pid = atoi(old);
    int rc = 0;
    for (const char *p = fds; *p && rc == 0;) {
        const char *eq = strchr(p, '=');
        if (!eq) {
            rc = -EINVAL;
            break;
        }
        size_t nl = (size_t)(eq - p);
        const char *v = eq + 1;
        int one[1];
        int n;
        if (nl == 6 && memcmp(p, "listen", 6) == 0) {
            n = parse_list(v, &p, h->listen, AG_UPGRADE_MAX_FDS);
            h->nlisten = n > 0 ? (unsigned)n : 0;
        } else if (nl == 5 && memcmp(p, "admin", 5) == 0) {
            n = parse_list(v, &p, h->admin, AG_ARRAY_LEN(h->admin));
            h->nadmin = n > 0 ? (unsigned)n : 0;
        } else if ((nl == 4 && memcmp(p, "lock", 4) == 0) ||
                   (nl == 5 && memcmp(p, "ready", 5) == 0) ||
                   (nl == 6 && memcmp(p, "stderr", 6) == 0)) {
            n = parse_list(v, &p, one, 1);
            if (n == 1)
                *(nl == 4 ? &h->lock_fd : nl == 5 ? &h->ready_fd : &h->stderr_fd) = one[0];
        } else {
            n = -1;
        }
        if (n < 0)
            rc = -EINVAL;
        else if (*p == ' ')
            p++;
        else if (*p)
            rc = -EINVAL;
    }
    if (rc == 0 && (h->nlisten == 0 || h->ready_fd < 0))
        rc = -EINVAL;
    if (rc < 0)
        fprintf(stderr,
                "aigate: %s=\"%s\" is not a listener handover (set only by aigate deploy "
                "--upgrade)\n",
                FDS_ENV, fds);
    unsetenv(FDS_ENV);
    unsetenv(HANDOVER_ENV);
    return rc;
}

void ag_upgrade_handover_ready(ag_upgrade_handover_t *h)
{
    if (!h->active)
        return;
    if (h->ready_fd >= 0) {
        char msg[32];
        int n = snprintf(msg, sizeof(msg), "ready %d\n", (int)getpid());
        if (write(h->ready_fd, msg, (size_t)n) != n)
            ag_log_warn("upgrade: cannot tell the old process (pid %d) this one is ready: %s",
                        h->old_pid, strerror(errno));
        close(h->ready_fd);
        h->ready_fd = -1;
    }
    /* From here on this process's log goes where the old one's went. */
    if (h->stderr_fd >= 0) {
        fflush(stderr);
        dup2(h->stderr_fd, 2);
        close(h->stderr_fd);
        h->stderr_fd = -1;
    }
}

void ag_upgrade_handover_fini(ag_upgrade_handover_t *h)
{
    if (h->ready_fd >= 0)
        close(h->ready_fd);
    if (h->stderr_fd >= 0)
        close(h->stderr_fd);
    h->ready_fd = h->stderr_fd = -1;
}

/* ---- the old process's side ---------------------------------------------------------- */

static void append_fds(char *buf, size_t cap, const char *name, const int *fds, unsigned n)
{
    size_t len = strlen(buf);
    if (n == 0)
        return;
    len += (size_t)snprintf(buf + len, cap > len ? cap - len : 0, "%s%s=", len ? " " : "", name);
    for (unsigned i = 0; i < n && len < cap; i++)
        len += (size_t)snprintf(buf + len, cap - len, "%s%d", i ? "," : "", fds[i]);
}

/* The last bytes of the child's stderr, for the reason. */
typedef struct tail_buf {
    char data[1536];
    size_t len;
} tail_buf_t;

static void tail_add(tail_buf_t *t, const char *p, size_t n)
{
    if (n >= sizeof(t->data)) {
        p += n - sizeof(t->data);
        n = sizeof(t->data);
    }
    if (t->len + n > sizeof(t->data)) {
        size_t drop = t->len + n - sizeof(t->data);
        memmove(t->data, t->data + drop, t->len - drop);
        t->len -= drop;
    }
    memcpy(t->data + t->len, p, n);
    t->len += n;
}

/* Copies what the child wrote to its stderr onto ours. @return false at EOF. */
static bool pump_stderr(int fd, tail_buf_t *t)
{
    char buf[4096];
    ssize_t n = read(fd, buf, sizeof(buf));
    if (n < 0 && (errno == EINTR || errno == EAGAIN))
        return true;
    if (n <= 0)
        return false;
    ssize_t off = 0;
    while (off < n) {
        ssize_t w = write(2, buf + off, (size_t)(n - off));
        if (w <= 0)
            break;
        off += w;
    }
    tail_add(t, buf, (size_t)n);
    return true;
}

static void child_exec(const ag_upgrade_spawn_t *s, char *const *envp, int err_w, const int *keep,
                       unsigned nkeep, long maxfd)
{
    /* Only async-signal-safe calls between fork and exec. */
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    dup2(err_w, 2);
    /* Nothing but what is handed over crosses the exec: not the connections,
     * not the upstream's sockets, not the stores' files. */
    if (syscall(SYS_close_range, 3u, ~0u, CLOSE_RANGE_CLOEXEC) < 0) {
        for (long fd = 3; fd < maxfd; fd++)
            fcntl((int)fd, F_SETFD, FD_CLOEXEC);
    }
    for (unsigned i = 0; i < nkeep; i++)
        fcntl(keep[i], F_SETFD, 0);
    execve(s->binary, s->argv, envp);
    int err = errno;
    static const char msg[] = "aigate: cannot run the new binary: exec failed, errno ";
    char num[16];
    int n = 0;
    for (int v = err; n == 0 || v; v /= 10)
        num[n++] = (char)('0' + v % 10);
    ssize_t ignored = write(2, msg, sizeof(msg) - 1);
    while (n)
        ignored = write(2, &num[--n], 1);
    ignored = write(2, "\n", 1);
    (void)ignored;
    _exit(127);
}

/* Waits up to ms for the child's exit. @return its status, or -1. */
static int reap(pid_t pid, int ms)
{
    int64_t deadline = ag_mono_us() + (int64_t)ms * 1000;
    for (;;) {
        int st;
        pid_t r = waitpid(pid, &st, WNOHANG);
        if (r == pid)
            return st;
        if (r < 0 || ag_mono_us() > deadline)
            return -1;
        poll(NULL, 0, 10);
    }
}

int ag_upgrade_spawn(const ag_upgrade_spawn_t *s, ag_upgrade_result_t *r)
{
    memset(r, 0, sizeof(*r));
    r->pid = -1;
    int ready_p[2] = {-1, -1}, err_p[2] = {-1, -1};
    int stderr_copy = -1;
    char **envp = NULL;
    int keep[AG_UPGRADE_MAX_FDS + 8];
    unsigned nkeep = 0;
    int rc = 0;
    if (s->nlisten == 0 || s->nlisten + s->nadmin + 3 > AG_ARRAY_LEN(keep)) {
        snprintf(r->why, sizeof(r->why), "no listener to hand over");
        return -EINVAL;
    }
    if (pipe2(ready_p, O_CLOEXEC) < 0 || pipe2(err_p, O_CLOEXEC) < 0 ||
        (stderr_copy = fcntl(2, F_DUPFD_CLOEXEC, 3)) < 0) {
        rc = -errno;
        snprintf(r->why, sizeof(r->why), "cannot make the handover's pipes: %s", strerror(-rc));
        goto out;
    }
    char fds[4096] = "";
    append_fds(fds, sizeof(fds), "listen", s->listen, s->nlisten);
    append_fds(fds, sizeof(fds), "admin", s->admin, s->nadmin);
    if (s->lock_fd >= 0)
        append_fds(fds, sizeof(fds), "lock", &s->lock_fd, 1);
    append_fds(fds, sizeof(fds), "ready", &ready_p[1], 1);
    append_fds(fds, sizeof(fds), "stderr", &stderr_copy, 1);
    for (unsigned i = 0; i < s->nlisten; i++)
        keep[nkeep++] = s->listen[i];
    for (unsigned i = 0; i < s->nadmin; i++)
        keep[nkeep++] = s->admin[i];
    if (s->lock_fd >= 0)
        keep[nkeep++] = s->lock_fd;
    keep[nkeep++] = ready_p[1];
    keep[nkeep++] = stderr_copy;
    /* The environment as it is, the handover's variables replaced. */
    size_t nenv = 0;
    while (environ[nenv])
        nenv++;
    envp = calloc(nenv + 3, sizeof(*envp));
    char *fds_var = NULL, *old_var = NULL;
    if (!envp || asprintf(&fds_var, "AIGATE_UPGRADE_FDS=%s", fds) < 0 ||
        asprintf(&old_var, "AIGATE_UPGRADE_HANDOVER=%d", (int)getpid()) < 0) {
        rc = -ENOMEM;
        snprintf(r->why, sizeof(r->why), "out of memory");
        free(fds_var);
        fds_var = NULL;
        goto out;
    }
    size_t k = 0;
    for (size_t i = 0; i < nenv; i++) {
        if (strncmp(environ[i], "AIGATE_UPGRADE_", 15) != 0)
            envp[k++] = environ[i];
    }
    envp[k++] = fds_var;
    envp[k++] = old_var;
    envp[k] = NULL;
    long maxfd = sysconf(_SC_OPEN_MAX);
    if (maxfd < 0 || maxfd > 1 << 20)
        maxfd = 1 << 20;
    int64_t t0 = ag_mono_us();
    fflush(stderr);
    pid_t pid = fork();
    if (pid == 0)
        child_exec(s, envp, err_p[1], keep, nkeep, maxfd);
    free(fds_var);
    free(old_var);
    if (pid < 0) {
        rc = -errno;
        snprintf(r->why, sizeof(r->why), "cannot fork: %s", strerror(-rc));
        goto out;
    }
    r->pid = pid;
    close(ready_p[1]);
    close(err_p[1]);
    close(stderr_copy);
    ready_p[1] = err_p[1] = stderr_copy = -1;
    tail_buf_t tail = {.len = 0};
    char said[64];
    size_t nsaid = 0;
    bool err_open = true, ready_open = true;
    int64_t deadline = t0 + (int64_t)s->ready_timeout_ms * 1000;
    while (ready_open && !r->ready) {
        int64_t left = (deadline - ag_mono_us()) / 1000;
        if (left <= 0)
            break;
        struct pollfd pf[2] = {{.fd = ready_p[0], .events = POLLIN},
                               {.fd = err_open ? err_p[0] : -1, .events = POLLIN}};
        int n = poll(pf, 2, (int)(left > 1000 ? 1000 : left));
        if (n < 0 && errno != EINTR)
            break;
        if (err_open && (pf[1].revents & (POLLIN | POLLHUP | POLLERR)))
            err_open = pump_stderr(err_p[0], &tail);
        if (pf[0].revents & (POLLIN | POLLHUP | POLLERR)) {
            ssize_t got = read(ready_p[0], said + nsaid, sizeof(said) - 1 - nsaid);
            if (got > 0) {
                nsaid += (size_t)got;
                said[nsaid] = '\0';
                r->ready = strncmp(said, "ready ", 6) == 0 && strchr(said, '\n');
            } else if (got == 0 || (errno != EINTR && errno != EAGAIN)) {
                ready_open = false;
            }
            if (nsaid == sizeof(said) - 1)
                ready_open = false;
        }
    }
    r->ready_ms = (double)(ag_mono_us() - t0) / 1000.0;
    if (r->ready) {
        /* It put its stderr back: what it wrote before that ends here. */
        int64_t until = ag_mono_us() + 2000000;
        while (err_open && ag_mono_us() < until) {
            struct pollfd pf = {.fd = err_p[0], .events = POLLIN};
            if (poll(&pf, 1, 100) > 0)
                err_open = pump_stderr(err_p[0], &tail);
        }
        goto out;
    }
    int st;
    if (ready_open) {
        /* Not ready in time: stopped, as a drain (it may have begun accepting). */
        kill(pid, SIGTERM);
        st = reap(pid, 10000);
        if (st < 0) {
            kill(pid, SIGKILL);
            st = reap(pid, 5000);
        }
        snprintf(r->why, sizeof(r->why), "it did not report ready within %u s (stopped)",
                 s->ready_timeout_ms / 1000);
    } else {
        st = reap(pid, 10000);
        if (st >= 0 && WIFEXITED(st))
            snprintf(r->why, sizeof(r->why), "it exited with status %d", WEXITSTATUS(st));
        else if (st >= 0 && WIFSIGNALED(st))
            snprintf(r->why, sizeof(r->why), "it was killed by signal %d", WTERMSIG(st));
        else
            snprintf(r->why, sizeof(r->why), "it closed its readiness pipe without a word");
    }
    /* Its last words. */
    int64_t until = ag_mono_us() + 1000000;
    while (err_open && ag_mono_us() < until) {
        struct pollfd pf = {.fd = err_p[0], .events = POLLIN};
        if (poll(&pf, 1, 100) > 0)
            err_open = pump_stderr(err_p[0], &tail);
    }
    if (tail.len) {
        size_t len = strlen(r->why);
        snprintf(r->why + len, sizeof(r->why) - len, "; its output:\n%.*s", (int)tail.len,
                 tail.data);
    }
    rc = -ECHILD;
out:
    for (int i = 0; i < 2; i++) {
        if (ready_p[i] >= 0)
            close(ready_p[i]);
        if (err_p[i] >= 0)
            close(err_p[i]);
    }
    if (stderr_copy >= 0)
        close(stderr_copy);
    free(envp);
    return rc;
}
