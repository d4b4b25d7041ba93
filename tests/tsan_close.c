/* ThreadSanitizer builds only: routes libuv's raw close syscall through the
 * intercepted close(), so TSan forgets a descriptor when libuv closes it. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdarg.h>
#include <sys/syscall.h>
#include <unistd.h>

/* libuv closes descriptors with syscall(SYS_close) (uv__close_nocancel), which
 * TSan does not see. TSan then keeps the last access to that number; when the
 * kernel hands the number to one of our files opened by a call TSan does not
 * intercept (openat, fdopendir, pidfd_open), our first use of it is reported as
 * a race with libuv's accept4 or epoll_ctl on the old socket. Closing through
 * close() makes TSan reset the descriptor, as it does for every close it sees.
 * The executable's syscall() comes before glibc's for libuv's calls. */
long syscall(long number, ...)
{
    static long (*next_syscall)(long, ...);
    long a[6];
    va_list ap;
    va_start(ap, number);
    for (int i = 0; i < 6; i++)
        a[i] = va_arg(ap, long); /* as glibc's syscall(): six words, used or not */
    va_end(ap);
    if (number == SYS_close)
        return close((int)a[0]);
    if (next_syscall == NULL)
        next_syscall = (long (*)(long, ...))dlsym(RTLD_NEXT, "syscall");
    return next_syscall(number, a[0], a[1], a[2], a[3], a[4], a[5]);
}
