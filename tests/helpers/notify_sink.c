/* SPDX-License-Identifier: MIT
 *
 * notify_sink.c: the service manager's end of sd_notify(3) for the lifecycle
 * tests: binds a unix datagram socket at argv[1] ("@name": abstract) and
 * prints each datagram on a line of its own (newlines inside become '|').
 * Node's dgram module has no unix datagram sockets.
 */
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: notify_sink PATH|@NAME\n");
        return 2;
    }
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    size_t len = strlen(argv[1]);
    if (len < 2 || len >= sizeof(sa.sun_path))
        return 2;
    memcpy(sa.sun_path, argv[1], len);
    if (argv[1][0] == '@')
        sa.sun_path[0] = '\0';
    else
        unlink(argv[1]);
    int fd = socket(AF_UNIX, SOCK_DGRAM, 0);
    if (fd < 0 || bind(fd, (struct sockaddr *)&sa,
                       (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len)) < 0) {
        perror("notify_sink");
        return 1;
    }
    printf("listening\n");
    fflush(stdout);
    char buf[4096];
    for (;;) {
        ssize_t n = recv(fd, buf, sizeof(buf) - 1, 0);
        if (n < 0)
            return 1;
        for (ssize_t i = 0; i < n; i++)
            if (buf[i] == '\n')
                buf[i] = '|';
        buf[n] = '\0';
        printf("%s\n", buf);
        fflush(stdout);
    }
}
