/* SPDX-License-Identifier: MIT
 *
 * fs.c: mkdir -p and whole-file reads and writes (see fs.h).
 */
#include "util/platform.h"

#include "util/fs.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util/errors.h"

int ag_fs_mkdir_p(const char *path, mode_t mode)
{
    char buf[PATH_MAX];
    size_t n = strlen(path);
    if (n == 0)
        return -ENOENT;
    if (n >= sizeof(buf))
        return -ENAMETOOLONG;
    memcpy(buf, path, n + 1);
    /* Each prefix that ends at a slash, then the whole path; an existing one is
     * fine here, and the stat() below tells a folder from anything else. */
    for (size_t i = 1; i <= n; i++) {
        if (buf[i] != '/' && buf[i] != '\0')
            continue;
        char saved = buf[i];
        buf[i] = '\0';
        if (mkdir(buf, mode) < 0 && errno != EEXIST)
            return -errno;
        buf[i] = saved;
    }
    struct stat st;
    if (stat(path, &st) < 0)
        return -errno;
    return S_ISDIR(st.st_mode) ? 0 : -ENOTDIR;
}

int ag_fs_read_fd(int fd, ag_buf_t *out)
{
    size_t max = out->max ? out->max : SIZE_MAX;
    for (;;) {
        size_t want = max - out->len;
        if (want > 64 * 1024)
            want = 64 * 1024;
        if (want == 0) {
            /* Full: one more byte tells a file that fits exactly from a bigger one. */
            char extra;
            ssize_t r = read(fd, &extra, 1);
            if (r < 0 && errno == EINTR)
                continue;
            if (r < 0)
                return -errno;
            return r == 0 ? 0 : AG_ETOOBIG;
        }
        int rc = ag_buf_reserve(out, want);
        if (rc < 0)
            return rc;
        ssize_t r = read(fd, out->data + out->len, want);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return -errno;
        if (r == 0)
            return 0;
        out->len += (size_t)r;
    }
}

int ag_fs_read_file(const char *path, ag_buf_t *out)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    int rc = ag_fs_read_fd(fd, out);
    close(fd);
    return rc;
}

ssize_t ag_fs_pread_all(int fd, void *buf, size_t len, uint64_t off)
{
    char *p = buf;
    size_t done = 0;
    while (done < len) {
        ssize_t n = pread(fd, p + done, len - done, (off_t)(off + done));
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -errno;
        if (n == 0)
            break;
        done += (size_t)n;
    }
    return (ssize_t)done;
}

int ag_fs_write_all(int fd, const void *p, size_t n)
{
    const char *s = p;
    while (n > 0) {
        ssize_t w = write(fd, s, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0)
            return -errno;
        s += w;
        n -= (size_t)w;
    }
    return 0;
}
