/* SPDX-License-Identifier: MIT
 *
 * keys.h: client API keys (platform.md section 6): creation, listing,
 * revocation and rotation for `aigate keys`, and the server's lookup of a
 * presented key. Keys are kept only as SHA-256 hashes, in an LMDB environment
 * in <data_dir>/keys that the CLI and every server on the folder share.
 *
 * Freshness. A lookup renews a read transaction its reader keeps (no lock, no
 * allocation: LMDB's reader slot is the reader's own), and a renewed
 * transaction sees the last commit of any process. So a key created, revoked
 * or rotated by `aigate keys` counts on the very next lookup of every thread of
 * every server, with nothing to notify and nothing cached.
 */
#ifndef AG_STORE_KEYS_H
#define AG_STORE_KEYS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util/str.h"

/** The store's folder under data_dir. */
#define AG_KEYS_DIR "keys"
/** "ag_" and 43 base62 digits: 32 random bytes, most significant digit first. */
#define AG_KEYS_PREFIX "ag_"
#define AG_KEYS_KEY_LEN 46
/** A name is 1 to 64 of [A-Za-z0-9_.-]: it goes into logs and metric labels. */
#define AG_KEYS_NAME_MAX 64
/** The model allowlist: comma-separated names, at most this many bytes. */
#define AG_KEYS_MODELS_MAX 1024

typedef struct ag_keys ag_keys_t;
typedef struct ag_keys_reader ag_keys_reader_t;

/** What a key may use; 0 for a field means no limit of that kind. */
typedef struct ag_key_limits {
    uint32_t rpm;       /* requests per minute */
    uint32_t tpm;       /* tokens (input + output) per minute */
    double daily_usd;   /* per UTC day */
    double monthly_usd; /* per UTC calendar month */
} ag_key_limits_t;

/** A key's record: everything but the key. Fixed size, so a lookup allocates nothing. */
typedef struct ag_key_record {
    char name[AG_KEYS_NAME_MAX + 1];
    int64_t created_ms;
    int64_t expires_ms; /* 0: never */
    int64_t revoked_ms; /* 0: not revoked */
    int64_t rotated_ms; /* 0: never rotated */
    ag_key_limits_t limits;
    char models[AG_KEYS_MODELS_MAX + 1]; /* "" : every model the route allows */
} ag_key_record_t;

/** True for a valid key name. */
bool ag_keys_name_valid(const char *name);

/** Checks a --models list ("a,b": non-empty names of printable ASCII, no
 *  spaces, at most AG_KEYS_MODELS_MAX bytes in all). */
bool ag_keys_models_valid(const char *models);

/** True when the record allows `model`: its list is empty or names it. */
bool ag_keys_model_allowed(const ag_key_record_t *rec, const char *model, size_t len);

/**
 * The client key in a request's headers: `Authorization: Bearer KEY` (scheme
 * case-insensitive) or else `x-api-key: KEY`; pass AG_STR_NULL for a header
 * that is absent. Surrounding blanks are trimmed.
 * @return true and *key (pointing into the header) when one is present, even
 *         if malformed (the lookup refuses it); false when neither is.
 */
bool ag_keys_from_headers(ag_str_t authorization, ag_str_t x_api_key, ag_str_t *key);

/** True when `key` has the shape of our keys (prefix, length, base62). */
bool ag_keys_key_wellformed(const char *key, size_t len);

/** Opens (creating) the store in <data_dir>/keys. @return 0 and *out, or an
 *  error (AG_KV_E*, -errno). The caller closes it with ag_keys_close(). */
int ag_keys_open(const char *data_dir, ag_keys_t **out);

/** Closes the store. Every reader must be freed first. NULL is a no-op. */
void ag_keys_close(ag_keys_t *ks);

/* ---- the server's side: one reader per thread ------------------------------------------ */

/** A reader for one thread at a time (a worker's). @return 0, -ENOMEM, AG_KV_E*. */
int ag_keys_reader_new(ag_keys_t *ks, ag_keys_reader_t **out);

/** Frees a reader. NULL is a no-op. */
void ag_keys_reader_free(ag_keys_reader_t *r);

/**
 * Checks a presented key: its SHA-256 is looked up and compared in constant
 * time (CRYPTO_memcmp) with the stored hash; a revoked key, or one expired at
 * now_ms, is refused. Sees every change committed before the call.
 * @param out  filled in when the key is known (also when revoked or expired)
 * @return 0 (valid); AG_KEYS_EINVALID (unknown or malformed), AG_KEYS_EREVOKED,
 *         AG_KEYS_EEXPIRED; or a store error (AG_KV_E*), which must fail closed.
 * @note Never logs; the key is not kept.
 */
int ag_keys_lookup(ag_keys_reader_t *r, const char *key, size_t len, int64_t now_ms,
                   ag_key_record_t *out);

/* ---- the CLI's side: each call is one transaction ------------------------------------- */

/**
 * Creates a key called `name` and writes it (NUL-terminated) to key_out, the
 * only time it exists outside the caller. `models` may be NULL or "".
 * @return 0; AG_KEYS_ENAME, AG_KEYS_EMODELS, AG_EEXISTS (the name is taken,
 *         revoked or not), AG_KEYS_ELIMITS (a negative or non-finite budget),
 *         a store error, or -errno from the random source.
 */
int ag_keys_create(ag_keys_t *ks, const char *name, const ag_key_limits_t *limits,
                   const char *models, int64_t expires_ms, int64_t now_ms,
                   char key_out[AG_KEYS_KEY_LEN + 1], ag_key_record_t *rec_out);

/** The record of `name`. @return 0, AG_ENOTFOUND, a store error. */
int ag_keys_get(ag_keys_t *ks, const char *name, ag_key_record_t *out);

/** Every record in name order, in *out (free() it); *n of them. @return 0 or an error. */
int ag_keys_list(ag_keys_t *ks, ag_key_record_t **out, size_t *n);

/** Revokes `name`: its key fails from now on. Revoking twice is not an error
 *  (the first time is kept). @return 0, AG_ENOTFOUND, a store error. */
int ag_keys_revoke(ag_keys_t *ks, const char *name, int64_t now_ms, ag_key_record_t *rec_out);

/** Gives `name` a new key (written to key_out once); the old key fails from
 *  now on. Name, limits and expiry stay. @return 0, AG_ENOTFOUND,
 *  AG_KEYS_EREVOKED (a revoked key stays revoked), a store error. */
int ag_keys_rotate(ag_keys_t *ks, const char *name, int64_t now_ms,
                   char key_out[AG_KEYS_KEY_LEN + 1], ag_key_record_t *rec_out);

/* ---- sharing through Redis: a record as its stored bytes -------------------------------- */

/** The largest exported record. */
#define AG_KEYS_EXPORT_MAX (96 + AG_KEYS_MODELS_MAX)

/** `name`'s record as stored (its key's hash included, never the key), into
 *  out[AG_KEYS_EXPORT_MAX]. @return its length, AG_ENOTFOUND, a store error. */
int ag_keys_export(ag_keys_t *ks, const char *name, unsigned char out[AG_KEYS_EXPORT_MAX]);

/** Stores an exported record under `name`, replacing the name's record and
 *  its old key's hash (a rotation elsewhere). The same bytes, or an unrevoked
 *  copy of a key revoked here: nothing to do.
 *  @return 1 stored, 0 unchanged, AG_KEYS_ECORRUPT (not a record), an error. */
int ag_keys_import(ag_keys_t *ks, const char *name, const unsigned char *rec, size_t len);

/* internal, for tests and the fuzz target: base62 of 32 bytes, 43 digits + NUL. */
void ag__keys_base62(const uint8_t bytes[32], char out[44]);

#endif
