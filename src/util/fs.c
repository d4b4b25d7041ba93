/* SPDX-License-Identifier: MIT
 *
 * fs.c: mkdir -p, folder listings, and whole-file reads and writes (see fs.h).
 */
#include "util/platform.h"

#include "util/fs.h"

#include <dirent.h>
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

static int cmp_cstr(const void *a, const void *b)
{
    /* strcmp compares as unsigned char: byte order, shorter first. */
    return strcmp(*(char *const *)a, *(char *const *)b);
}

int ag_fs_list_dirs(const char *path, bool (*accept)(const char *name), char ***names,
                    size_t *count)
{
    *names = NULL;
    *count = 0;
    DIR *d = opendir(path);
    if (d == NULL)
        return errno == ENOENT ? 0 : -errno;
    char **v = NULL;
    size_t len = 0, cap = 0;
    int rc = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (accept ? !accept(de->d_name)
                   : strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        struct stat st;
        if (fstatat(dirfd(d), de->d_name, &st, 0) < 0 || !S_ISDIR(st.st_mode))
            continue;
        if (len == cap) {
            size_t ncap = cap ? cap * 2 : 8;
            char **nv = realloc(v, ncap * sizeof(*nv));
            if (nv == NULL) {
                rc = -ENOMEM;
                break;
            }
            v = nv;
            cap = ncap;
        }
        v[len] = strdup(de->d_name);
        if (v[len] == NULL) {
            rc = -ENOMEM;
            break;
        }
        len++;
    }
    closedir(d);
    if (rc < 0) {
        ag_fs_names_free(v, len);
        return rc;
    }
    if (len > 1)
        qsort(v, len, sizeof(*v), cmp_cstr);
    *names = v;
    *count = len;
    return 0;
}

void ag_fs_names_free(char **names, size_t count)
{
    if (names == NULL)
        return;
    for (size_t i = 0; i < count; i++)
        free(names[i]);
    free(names);
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
