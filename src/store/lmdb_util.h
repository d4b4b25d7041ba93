/* SPDX-License-Identifier: MIT
 *
 * lmdb_util.h: what the store's LMDB users share (the KV back end, the client
 * key store): LMDB's errors mapped to our codes, and opening an environment.
 */
#ifndef AG_STORE_LMDB_UTIL_H
#define AG_STORE_LMDB_UTIL_H

#include <stddef.h>

#include <lmdb.h>

/** An LMDB return code as ours: 0, AG_ENOTFOUND, AG_KV_E* or -errno. */
int ag__lmdb_err(int rc);

/** Creates dir (0700) and opens an environment there with `maxdbs` named
 *  databases, `map_size` bytes of map and `flags` (MDB_NOTLS and the like);
 *  reader slots of dead processes are cleared first. @return 0 and *out, or
 *  an error of ag__lmdb_err() or -errno. */
int ag__lmdb_open(const char *dir, unsigned maxdbs, size_t map_size, unsigned flags,
                  unsigned maxreaders, MDB_env **out);

#endif
