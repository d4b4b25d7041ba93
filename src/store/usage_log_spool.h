/* SPDX-License-Identifier: MIT
 *
 * usage_log_spool.h: the usage log's local spool (internal to store/): a
 * directory bucket under the data dir that keeps sealed batches, under their
 * own object keys, while the log's store refuses puts, and drains them into
 * the store oldest first. Used only by the usage log's writer thread.
 */
#ifndef AG_STORE_USAGE_LOG_SPOOL_H
#define AG_STORE_USAGE_LOG_SPOOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "store/objstore.h"

typedef struct ag__usage_spool ag__usage_spool_t;

/** Opens (creating, mode 0700) the spool in the folder `dir`, which keeps at
 *  most max_bytes of batches (NDJSON bytes; each file adds a small header),
 *  and tallies what an earlier run left there. dir is copied.
 *  @return 0 and *out; -errno or an object-store error. */
int ag__usage_spool_open(const char *dir, uint64_t max_bytes, ag__usage_spool_t **out);

/** Closes the spool; the files stay for the next open. NULL is a no-op. */
void ag__usage_spool_free(ag__usage_spool_t *sp);

/** Stores one batch durably (temp file, fsync, rename, folder fsync: the
 *  directory backend's put) under its object key, with its content type and
 *  `entries` count. @return 0; AG_EFULL when it would take the spool past its
 *  limit (nothing written); the directory backend's error. */
int ag__usage_spool_put(ag__usage_spool_t *sp, const char *key, const void *data, size_t len,
                        size_t entries);

/** What one drain did. */
typedef struct ag__usage_spool_drained {
    size_t objects;         /* batches put into the store and removed from the spool */
    uint64_t own_entries;   /* entries of those whose key holds `own` */
    uint64_t other_entries; /* entries spooled by another open (an earlier run) */
    bool more;              /* batches are left to drain (a page ended, or a put failed) */
    size_t unreadable;      /* spool files that could not be read (left in place) */
    int unreadable_rc;      /* the last such error */
} ag__usage_spool_drained_t;

/** Puts up to max_objects spooled batches into `store`, in key order (oldest
 *  first), each under its own key with its own metadata, and deletes each
 *  spool file only after its put succeeded. `own` is the log's instance part
 *  of keys ("-<instance>-"), to tell its own entries from an earlier run's.
 *  A spool file that cannot be read is left in place and counted in
 *  d->unreadable; the drain goes on. @return 0, or the first failed put's
 *  error (that batch and the ones after it stay spooled). */
int ag__usage_spool_drain(ag__usage_spool_t *sp, ag_objstore_t *store, const char *own,
                          unsigned max_objects, ag__usage_spool_drained_t *d);

/** The spool's tally: NDJSON bytes and batches it holds (as far as this
 *  process knows: another process sharing the folder is seen at the next
 *  drain), and its folder (owned by sp). */
uint64_t ag__usage_spool_bytes(const ag__usage_spool_t *sp);
uint64_t ag__usage_spool_files(const ag__usage_spool_t *sp);
uint64_t ag__usage_spool_max(const ag__usage_spool_t *sp);
const char *ag__usage_spool_dir(const ag__usage_spool_t *sp);

#endif
