/* SPDX-License-Identifier: MIT
 *
 * fuzz_keys.c: libFuzzer target for what a client key arrives through
 * (src/store/keys.c): the Authorization / x-api-key extraction and the key
 * shape check. The input is split at its first NUL into the two headers; a
 * key found must lie inside them, and a well-formed one must round-trip the
 * base62 alphabet. The whole input is also a record as Redis may hand it to
 * ag_keys_import() (keys shared between instances): refused, or stored and
 * exported back byte for byte.
 */
#include "util/platform.h"

#include <stdbool.h>
#include <stdint.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store/keys.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* One store for the whole run, in a directory of its own, gone at exit. */
static ag_keys_t *ks;
static char dir[] = "/tmp/aigate-fuzz-keys-XXXXXX";

static int remove_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static void store_gone(void)
{
    ag_keys_close(ks);
    nftw(dir, remove_one, 8, FTW_DEPTH | FTW_PHYS);
}

static ag_keys_t *store(void)
{
    static bool tried;
    if (!tried) {
        tried = true;
        if (mkdtemp(dir) && ag_keys_open(dir, &ks) == 0)
            atexit(store_gone);
        else
            ks = NULL;
    }
    return ks;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *p = (const char *)data;
    const char *nul = memchr(p, '\0', size);
    ag_str_t auth = ag_str(p, nul ? (size_t)(nul - p) : size);
    ag_str_t xkey = nul ? ag_str(nul + 1, size - (size_t)(nul - p) - 1) : AG_STR_NULL;
    if (size && data[0] == 0xff)
        auth = AG_STR_NULL; /* the absent header, too */
    ag_str_t key;
    bool found = ag_keys_from_headers(auth, xkey, &key);
    if (found) {
        bool in_auth = auth.ptr && key.ptr >= auth.ptr && key.ptr + key.len <= auth.ptr + auth.len;
        bool in_x = xkey.ptr && key.ptr >= xkey.ptr && key.ptr + key.len <= xkey.ptr + xkey.len;
        AG_ASSERT(in_auth || in_x);
        if (ag_keys_key_wellformed(key.ptr, key.len)) {
            AG_ASSERT(key.len == AG_KEYS_KEY_LEN && memcmp(key.ptr, "ag_", 3) == 0);
        }
    } else {
        AG_ASSERT(key.ptr == NULL && key.len == 0);
    }
    /* base62 of any 32 bytes is 43 digits of the alphabet and a valid key. */
    if (size >= 32) {
        char k[AG_KEYS_KEY_LEN + 1] = "ag_";
        ag__keys_base62(data, k + 3);
        AG_ASSERT(strlen(k) == AG_KEYS_KEY_LEN && ag_keys_key_wellformed(k, AG_KEYS_KEY_LEN));
    }
    ag_key_record_t rec = {.models = ""};
    if (size < sizeof(rec.models)) {
        memcpy(rec.models, data, size);
        rec.models[size] = '\0';
        if (ag_keys_models_valid(rec.models))
            (void)ag_keys_model_allowed(&rec, "m", 1);
    }
    ag_keys_t *st = store();
    if (st) {
        int rc = ag_keys_import(st, "fz", data, size);
        AG_ASSERT(rc == 0 || rc == 1 || rc < 0);
        unsigned char back[AG_KEYS_EXPORT_MAX];
        if (rc == 1) {
            int n = ag_keys_export(st, "fz", back);
            AG_ASSERT(n == (int)size && memcmp(back, data, size) == 0);
        }
    }
    return 0;
}
