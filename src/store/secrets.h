/* SPDX-License-Identifier: MIT
 *
 * secrets.h: the secret store (the `wrangler secret` equivalent): named values
 * kept in one file, <data_dir>/secrets, mode 0600, replaced atomically on every
 * change. `aigate secret` writes it; the server reads it like environment
 * variables (the environment wins). No function here ever prints a value.
 */
#ifndef AG_STORE_SECRETS_H
#define AG_STORE_SECRETS_H

#include <stdbool.h>
#include <stddef.h>

#include "util/errors.h"

#ifndef AG_STORE_DEFAULT_DATA_DIR
#define AG_STORE_DEFAULT_DATA_DIR "./.aigate" /* also in kv.h and objstore.h */
#endif

/* The file's name inside the data folder. */
#define AG_SECRETS_FILE "secrets"
/* A name is [A-Za-z_][A-Za-z0-9_]{0,127}: an environment variable name. */
#define AG_SECRETS_MAX_NAME_LEN 128
/* Workers allows 5 KiB per secret; certificates and JSON credentials need more. */
#define AG_SECRETS_MAX_VALUE_LEN (64u * 1024)
#define AG_SECRETS_MAX_COUNT 1024

/* The errors of this module, AG_SECRETS_E*, are declared in util/errors.def:
 * ag_strerror() gives their messages. */

/** True when `name` is a valid secret name. */
bool ag_secrets_name_valid(const char *name);

/** Writes "<data_dir>/secrets" into buf (data_dir NULL means
 *  AG_STORE_DEFAULT_DATA_DIR). @return 0, or -ENAMETOOLONG. */
int ag_secrets_path(const char *data_dir, char *buf, size_t cap);

/* Every call below reads or rewrites the whole file; they are meant for the
 * CLI and for server start-up, not for a request path. data_dir NULL means
 * AG_STORE_DEFAULT_DATA_DIR. Writers in several processes serialise on an
 * flock() of the data folder; readers never block, because a writer replaces
 * the file with rename(): a reader sees the old set or the new one. The file
 * must be a regular file owned by the calling user (AG_SECRETS_ENOT_PRIVATE),
 * as a file someone else could have written cannot be trusted for keys. */

/** Reads the secret `name`.
 *  @return 0 and *value_out, a malloc'd NUL-terminated copy (values never hold
 *  NUL) that the caller releases with ag_secrets_value_free(); AG_ENOTFOUND
 *  when the secret or the file does not exist; AG_SECRETS_E* or -errno. */
int ag_secrets_get(const char *data_dir, const char *name, char **value_out);

/** Releases a value from ag_secrets_get(), zeroing it first. NULL is a no-op. */
void ag_secrets_value_free(char *value);

/** Sets `name` to the `len` bytes at `value` (borrowed; any byte but NUL,
 *  newlines included; 1..AG_SECRETS_MAX_VALUE_LEN bytes), replacing any old
 *  value. Creates the data folder (mode 0700, with parents) and the file (mode
 *  0600) when missing; rewrites the file with mode 0600 whatever its mode was.
 *  The new file is fsynced before it replaces the old one.
 *  @return 0; AG_SECRETS_E*; or -errno (-ENOSPC: the old file is untouched). */
int ag_secrets_put(const char *data_dir, const char *name, const void *value, size_t len);

/** Deletes `name`. @return 0; AG_ENOTFOUND when it does not exist. */
int ag_secrets_delete(const char *data_dir, const char *name);

/** The names of the stored secrets, sorted. *names is an array of *n malloc'd
 *  strings, released by ag_secrets_list_free(). A missing file gives 0 names. */
int ag_secrets_list(const char *data_dir, char ***names, size_t *n);
void ag_secrets_list_free(char **names, size_t n);

#endif
