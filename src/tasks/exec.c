/* SPDX-License-Identifier: MIT
 *
 * exec.c: one command run for a command output: posix_spawn into its own
 * process group, one poll loop that feeds stdin, drains stdout+stderr and
 * watches the child (a pidfd, or a 10 ms waitpid poll where pidfds are not
 * available), and the deadline: SIGTERM to the group, SIGKILL after the grace.
 */
#include "util/platform.h"

#include "tasks/exec.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "util/log.h"

extern char **environ;

#define STOP_POLL_MS 50
#define WAITPID_POLL_MS 10

static int64_t mono_ms(void)
{
    return ag_mono_us() / 1000;
}

static int open_pidfd(pid_t pid)
{
#ifdef SYS_pidfd_open
    long fd = syscall(SYS_pidfd_open, pid, 0);
    if (fd >= 0) {
        fcntl((int)fd, F_SETFD, FD_CLOEXEC);
        return (int)fd;
    }
#else
    (void)pid;
#endif
    return -1;
}

static void close_fd(int *fd)
{
    if (*fd >= 0)
        close(*fd);
    *fd = -1;
}

/* Our writes to a child that closed its stdin must not raise SIGPIPE in the
 * whole process: SIGPIPE stays blocked in this thread while we write, and one
 * that became pending is consumed before the mask is restored. */
static void consume_sigpipe(void)
{
    sigset_t pending, pipe_set;
    sigemptyset(&pipe_set);
    sigaddset(&pipe_set, SIGPIPE);
    if (sigpending(&pending) == 0 && sigismember(&pending, SIGPIPE)) {
        struct timespec zero = {0, 0};
        while (sigtimedwait(&pipe_set, NULL, &zero) < 0 && errno == EINTR) {
        }
    }
}

/* The child leads its own group: signal all of it (a script's children too),
 * or the child alone when it moved to another group. Never called once the
 * child is reaped, so the pid cannot have been reused. */
static void signal_group(pid_t pid, int sig)
{
    if (kill(-pid, sig) < 0)
        kill(pid, sig);
}

static void set_nonblock(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    if (fl >= 0)
        fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}

static int spawn_child(const ag_exec_opts_t *o, int in_rd, int out_wr, pid_t *pid)
{
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t at;
    int rc = posix_spawn_file_actions_init(&fa);
    if (rc != 0)
        return -rc;
    rc = posix_spawnattr_init(&at);
    if (rc != 0) {
        posix_spawn_file_actions_destroy(&fa);
        return -rc;
    }
    /* dup2 clears close-on-exec on the targets; the originals close at exec. */
    rc = posix_spawn_file_actions_adddup2(&fa, in_rd, 0);
    if (rc == 0)
        rc = posix_spawn_file_actions_adddup2(&fa, out_wr, 1);
    if (rc == 0)
        rc = posix_spawn_file_actions_adddup2(&fa, out_wr, 2);
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 34))
    /* Descriptors a library opened without close-on-exec stay ours too. */
    if (rc == 0)
        rc = posix_spawn_file_actions_addclosefrom_np(&fa, 3);
#endif
    sigset_t none, defaults;
    sigemptyset(&none);
    sigemptyset(&defaults);
    static const int sigs[] = {SIGPIPE, SIGINT,  SIGTERM, SIGHUP,  SIGQUIT,
                               SIGCHLD, SIGUSR1, SIGUSR2, SIGALRM, SIGXFSZ};
    for (size_t i = 0; i < AG_ARRAY_LEN(sigs); i++)
        sigaddset(&defaults, sigs[i]);
    if (rc == 0)
        rc = posix_spawnattr_setsigmask(&at, &none);
    if (rc == 0)
        rc = posix_spawnattr_setsigdefault(&at, &defaults);
    if (rc == 0)
        rc = posix_spawnattr_setpgroup(&at, 0);
    if (rc == 0)
        rc = posix_spawnattr_setflags(&at, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF |
                                               POSIX_SPAWN_SETPGROUP);
    if (rc == 0)
        rc = posix_spawnp(pid, o->argv[0], &fa, &at, o->argv, o->envp ? o->envp : environ);
    posix_spawnattr_destroy(&at);
    posix_spawn_file_actions_destroy(&fa);
    return -rc;
}

static void read_output(int *fd, ag_exec_result_t *r, size_t cap)
{
    char chunk[4096];
    /* Bounded: a child that writes without pause is drained on the next turn. */
    for (int turn = 0; turn < 64 && *fd >= 0; turn++) {
        ssize_t n = read(*fd, chunk, sizeof(chunk));
        if (n > 0) {
            size_t keep = r->output.len < cap ? cap - r->output.len : 0;
            if (keep > (size_t)n)
                keep = (size_t)n;
            if (keep)
                ag_buf_append(&r->output, chunk, keep);
            r->output_total += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        close_fd(fd); /* EOF or an error: nothing more to read */
    }
}

/* Reaps the child when it has exited. @return true when it has. */
static bool try_reap(pid_t pid, ag_exec_result_t *r, bool block)
{
    int st;
    pid_t w;
    do {
        w = waitpid(pid, &st, block ? 0 : WNOHANG);
    } while (w < 0 && errno == EINTR);
    if (w != pid)
        return w < 0; /* an error (ECHILD: someone else reaped it): nothing to wait for */
    if (WIFEXITED(st))
        r->exit_status = WEXITSTATUS(st);
    else if (WIFSIGNALED(st))
        r->term_signal = WTERMSIG(st);
    return true;
}

int ag_exec_run(const ag_exec_opts_t *o, ag_exec_result_t *r)
{
    memset(r, 0, sizeof(*r));
    r->exit_status = -1;
    ag_buf_init(&r->output, 0);
    if (o->argv == NULL || o->argv[0] == NULL || o->argv[0][0] == '\0')
        return -EINVAL;
    int in[2] = {-1, -1}, out[2] = {-1, -1};
    if (pipe2(in, O_CLOEXEC) < 0)
        return -errno;
    if (pipe2(out, O_CLOEXEC) < 0) {
        int e = errno;
        close_fd(&in[0]);
        close_fd(&in[1]);
        return -e;
    }
    int64_t t0 = mono_ms();
    pid_t pid;
    int rc = spawn_child(o, in[0], out[1], &pid);
    close_fd(&in[0]);
    close_fd(&out[1]);
    if (rc < 0) {
        close_fd(&in[1]);
        close_fd(&out[0]);
        return rc;
    }
    int pidfd = open_pidfd(pid);
    set_nonblock(in[1]);
    set_nonblock(out[0]);

    sigset_t pipe_set, old_mask;
    sigemptyset(&pipe_set);
    sigaddset(&pipe_set, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &pipe_set, &old_mask);

    size_t written = 0;
    if (o->input.len == 0)
        close_fd(&in[1]);
    int64_t deadline = o->timeout_ms ? t0 + o->timeout_ms : INT64_MAX;
    int stage = 0; /* 0: running, 1: SIGTERM sent, 2: SIGKILL sent */
    bool exited = false;
    /* Every turn waits on the child, its pipes or a deadline; the loop ends
     * when the child is reaped, at the latest after the SIGKILL. */
    while (!exited) {
        int64_t now = mono_ms();
        bool stop = o->stop && atomic_load(o->stop);
        if (stage == 0 && (now >= deadline || stop)) {
            r->timed_out = !stop;
            r->stopped = stop;
            signal_group(pid, SIGTERM);
            stage = 1;
            deadline = now + o->grace_ms;
            close_fd(&in[1]);
        }
        if (stage == 1 && now >= deadline) {
            signal_group(pid, SIGKILL);
            stage = 2;
        }
        if (stage == 2) {
            exited = try_reap(pid, r, true);
            break;
        }
        struct pollfd pf[3];
        nfds_t np = 0;
        int i_in = -1, i_out = -1, i_pid = -1;
        if (in[1] >= 0)
            i_in = (int)np, pf[np++] = (struct pollfd){.fd = in[1], .events = POLLOUT};
        if (out[0] >= 0)
            i_out = (int)np, pf[np++] = (struct pollfd){.fd = out[0], .events = POLLIN};
        if (pidfd >= 0)
            i_pid = (int)np, pf[np++] = (struct pollfd){.fd = pidfd, .events = POLLIN};
        int64_t wait = deadline == INT64_MAX ? 1000 : deadline - now;
        if (o->stop && wait > STOP_POLL_MS)
            wait = STOP_POLL_MS;
        if (pidfd < 0 && wait > WAITPID_POLL_MS)
            wait = WAITPID_POLL_MS;
        if (wait < 0)
            wait = 0;
        int n = poll(pf, np, (int)wait);
        if (n < 0 && errno != EINTR)
            n = 0;
        if (n > 0 && i_in >= 0 && pf[i_in].revents) {
            ssize_t w = write(in[1], o->input.ptr + written, o->input.len - written);
            if (w > 0) {
                written += (size_t)w;
            } else if (w < 0 && errno != EAGAIN && errno != EINTR) {
                if (errno == EPIPE)
                    consume_sigpipe();
                close_fd(&in[1]);
            }
            if (written == o->input.len)
                close_fd(&in[1]);
        }
        if (n > 0 && i_out >= 0 && pf[i_out].revents)
            read_output(&out[0], r, o->capture_max);
        if (pidfd < 0 || (n > 0 && i_pid >= 0 && pf[i_pid].revents))
            exited = try_reap(pid, r, false);
    }
    /* What it wrote before it exited is in the pipe; a grandchild that keeps
     * the pipe open is not waited for. */
    if (out[0] >= 0)
        read_output(&out[0], r, o->capture_max);
    r->input_short = written < o->input.len;
    close_fd(&in[1]);
    close_fd(&out[0]);
    close_fd(&pidfd);
    consume_sigpipe();
    pthread_sigmask(SIG_SETMASK, &old_mask, NULL);
    r->elapsed_ms = (long)(mono_ms() - t0);
    return 0;
}
