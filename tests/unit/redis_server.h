/* SPDX-License-Identifier: MIT
 *
 * redis_server.h: a real redis-server (Debian's package) for the unit tests
 * that need one: started on a free port, without persistence, and killed.
 */
#ifndef AG_TEST_REDIS_SERVER_H
#define AG_TEST_REDIS_SERVER_H

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

static inline int free_port(int *fd_out)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    bind(fd, (struct sockaddr *)&a, sizeof(a));
    socklen_t l = sizeof(a);
    getsockname(fd, (struct sockaddr *)&a, &l);
    if (fd_out)
        *fd_out = fd;
    else
        close(fd);
    return ntohs(a.sin_port);
}

static inline pid_t start_redis(int port, const char *pass)
{
    char p[16];
    snprintf(p, sizeof(p), "%d", port);
    fflush(NULL); /* the child must not write our buffered output again */
    pid_t pid = fork();
    if (pid == 0) {
        freopen("/dev/null", "w", stdout);
        if (pass)
            execlp("redis-server", "redis-server", "--port", p, "--bind", "127.0.0.1", "--save", "",
                   "--appendonly", "no", "--requirepass", pass, "--loglevel", "warning",
                   (char *)NULL);
        else
            execlp("redis-server", "redis-server", "--port", p, "--bind", "127.0.0.1", "--save", "",
                   "--appendonly", "no", "--loglevel", "warning", (char *)NULL);
        _exit(127);
    }
    return pid;
}

static inline void stop_redis(pid_t pid)
{
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
}

#endif
