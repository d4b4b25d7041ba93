/* SPDX-License-Identifier: MIT
 *
 * secrets_resolve.h: where a secret's value comes from, in wrangler's order of
 * precedence: the environment, then `aigate secret put` (the secrets file),
 * then .dev.vars in the current folder. Config holds only secret names.
 */
#ifndef AG_STORE_SECRETS_RESOLVE_H
#define AG_STORE_SECRETS_RESOLVE_H

/** Resolves the secret `name` (data_dir NULL: the default data folder).
 *  @return 0 and *value (malloc'd, NUL-terminated; release it with
 *  ag_secrets_value_free(), which zeroes it); AG_ENOTFOUND when no source has
 *  a non-empty value. A secrets file that cannot be read is reported on stderr
 *  (never with a value) and the next source is tried. Every secret resolved
 *  here is a credential that goes into a header or is compared with one, so a
 *  value with a control byte (CR, LF, NUL, any byte below 0x20, DEL) is
 *  refused: reported on stderr with its name and source, never its value, and
 *  AG_SECRETS_ECONTROL is returned. */
int ag_secrets_resolve(const char *data_dir, const char *name, char **value);

#endif
