/* SPDX-License-Identifier: MIT
 *
 * fs.h: small file-system helpers the stores, the CLI and the config loader
 * share: mkdir -p, sorted folder listings, and whole reads and writes that
 * retry EINTR and short transfers. They block: keep big files off event-loop
 * threads.
 */
#ifndef AG_UTIL_FS_H
#define AG_UTIL_FS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "util/buf.h"

/** Creates the folder path and every missing parent, each with `mode` (as
 *  `mkdir -p`). @return 0, also when it exists already; -ENOTDIR when path or
 *  a parent is not a folder; -ENOENT for an empty path; -ENAMETOOLONG past
 *  PATH_MAX; or another -errno. */
int ag_fs_mkdir_p(const char *path, mode_t mode);

/** The names of the folders (or symlinks to folders) in the folder `path`
 *  that `accept` takes (NULL: all but "." and ".."), sorted by strcmp().
 *  *names is a malloc'd array of *count malloc'd strings, released by
 *  ag_fs_names_free(). A missing path gives 0 names.
 *  @return 0, -ENOMEM, or -errno of opendir(). */
int ag_fs_list_dirs(const char *path, bool (*accept)(const char *name), char ***names,
                    size_t *count);

/** Releases a list from ag_fs_list_dirs(); NULL is a no-op. */
void ag_fs_names_free(char **names, size_t count);

/** Reads fd to its end and appends the bytes to out (initialised by the
 *  caller), whose cap bounds how much is read.
 *  @return 0; AG_ETOOBIG when fd holds more than out can take (out keeps what
 *  fit); -ENOMEM; or -errno of read(). */
int ag_fs_read_fd(int fd, ag_buf_t *out);

/** Opens path (read-only, close-on-exec) and appends all of it to out as
 *  ag_fs_read_fd() does. @return the same, or -errno of open(). */
int ag_fs_read_file(const char *path, ag_buf_t *out);

/** Reads len bytes at offset off with pread(), retrying EINTR and short reads.
 *  @return the bytes read, less than len only when the file ended first; or
 *  -errno. */
ssize_t ag_fs_pread_all(int fd, void *buf, size_t len, uint64_t off);

/** Writes the n bytes at p to fd, retrying EINTR and short writes.
 *  @return 0 or -errno of write() (-ENOSPC, -EPIPE, ...). */
int ag_fs_write_all(int fd, const void *p, size_t n);

#endif
