/* SPDX-License-Identifier: MIT
 *
 * fuzz_toml.c: libFuzzer target for the TOML parser (src/config/toml.c), the
 * parser of aigate's config files. Parses, walks the whole tree checking the
 * accessors' invariants, and frees.
 */
#include "util/platform.h"

#include <stdint.h>
#include <string.h>

#include "config/toml.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void walk(const ag_toml_value_t *v, int depth)
{
    AG_ASSERT(depth <= AG_TOML_MAX_DEPTH);
    AG_ASSERT(ag_toml_line(v) >= 1 && ag_toml_col(v) >= 1);
    for (size_t i = 0; i < ag_toml_table_len(v); i++) {
        const char *key;
        size_t keylen;
        const ag_toml_value_t *child = ag_toml_table_at(v, i, &key, &keylen);
        AG_ASSERT(child != NULL && key[keylen] == '\0');
        AG_ASSERT(ag_toml_table_getn(v, key, keylen) == child);
        walk(child, depth + 1);
    }
    for (size_t i = 0; i < ag_toml_array_len(v); i++)
        walk(ag_toml_array_at(v, i), depth + 1);
    const char *s;
    size_t len;
    if (ag_toml_get_string(v, &s, &len) == 0)
        AG_ASSERT(s[len] == '\0');
    const char *text;
    if (ag_toml_get_datetime(v, NULL, &text) == 0)
        AG_ASSERT(strlen(text) >= 8);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    ag_toml_error_t err;
    ag_toml_value_t *root = ag_toml_parse((const char *)data, size, &err);
    if (root != NULL) {
        walk(root, 0);
        ag_toml_free(root);
    } else {
        AG_ASSERT(err.message[0] != '\0');
        AG_ASSERT(memchr(err.message, '\0', sizeof(err.message)) != NULL);
    }
    return 0;
}
