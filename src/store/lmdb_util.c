/* SPDX-License-Identifier: MIT
 *
 * lmdb_util.c: LMDB's errors as ours, and the one way the store opens an
 * environment (folder, map size, stale readers).
 */
#include "util/platform.h"

#include "store/lmdb_util.h"

#include <errno.h>

#include "store/kv.h"
#include "util/errors.h"
#include "util/fs.h"

int ag__lmdb_err(int rc)
{
    switch (rc) {
    case MDB_SUCCESS:
        return 0;
    case MDB_NOTFOUND:
        return AG_ENOTFOUND;
    case MDB_MAP_FULL:
        return AG_KV_EMAP_FULL;
    case MDB_READERS_FULL:
        return AG_KV_EREADERS_FULL;
    case MDB_TXN_FULL:
    case MDB_BAD_VALSIZE:
        return AG_KV_ETXN_TOO_BIG;
    case MDB_CORRUPTED:
    case MDB_PANIC:
    case MDB_VERSION_MISMATCH:
    case MDB_INVALID:
    case MDB_PAGE_NOTFOUND:
    case MDB_INCOMPATIBLE:
        return AG_KV_ECORRUPT;
    case ENOSPC:
    case EDQUOT:
    case EFBIG:
        return AG_KV_EDISK_FULL;
    case ENOMEM:
        return -ENOMEM;
    default:
        /* LMDB returns system errors as positive errno values. */
        return rc > 0 ? -rc : AG_KV_ECORRUPT;
    }
}

int ag__lmdb_open(const char *dir, unsigned maxdbs, size_t map_size, unsigned flags,
                  unsigned maxreaders, MDB_env **out)
{
    *out = NULL;
    int rc = ag_fs_mkdir_p(dir, 0700);
    if (rc < 0)
        return rc;
    MDB_env *env;
    rc = ag__lmdb_err(mdb_env_create(&env));
    if (rc < 0)
        return rc;
    rc = ag__lmdb_err(mdb_env_set_maxdbs(env, maxdbs));
    if (rc == 0)
        rc = ag__lmdb_err(mdb_env_set_mapsize(env, map_size));
    if (rc == 0 && maxreaders)
        rc = ag__lmdb_err(mdb_env_set_maxreaders(env, maxreaders));
    if (rc == 0)
        rc = ag__lmdb_err(mdb_env_open(env, dir, flags, 0600));
    if (rc < 0) {
        mdb_env_close(env);
        return rc;
    }
    /* Reader slots of processes that died (a killed CLI) would pin old pages. */
    int dead;
    mdb_reader_check(env, &dead);
    *out = env;
    return 0;
}
