/* SPDX-License-Identifier: MIT
 *
 * keys.c: the client key store (keys.h): its LMDB layout, key generation and
 * the constant-time lookup a server makes per request through a reader.
 */
#include "util/platform.h"

#include "store/keys.h"

#include <errno.h>
#include <math.h>
#include <string.h>

#include <lmdb.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include "store/lmdb_util.h"
#include "util/errors.h"
#include "util/le.h"

/*
 * Layout: two databases in one environment, changed together in one
 * transaction.
 *   name  key name -> record
 *   hash  SHA-256(key) (32 bytes) -> key name
 * A record (little-endian): u8 version, u8 flags (0), u16 models length,
 * u32 rpm, u32 tpm, u32 (0), i64 created, expires, revoked, rotated (epoch ms),
 * f64 daily_usd, f64 monthly_usd, the key's 32-byte hash, then the models.
 * The map is fixed: every process opens it at the same size, so no process
 * ever sees MDB_MAP_RESIZED (which a renewed reader could not recover from
 * without a lock). 32 MiB holds some 200,000 keys.
 */
#define REC_VERSION 1
#define REC_HASH 64
#define REC_HDR 96
#define HASH_LEN 32
#define MAP_SIZE ((size_t)32 << 20)
/* Reader slots: one per server thread and one per CLI run at a time. */
#define MAX_READERS 1024

struct ag_keys {
    MDB_env *env;
    MDB_dbi name_db, hash_db;
    EVP_MD *sha256; /* fetched once: a per-call lookup costs more than the hash */
};

struct ag_keys_reader {
    ag_keys_t *ks;
    MDB_txn *txn;   /* reset between lookups: keeps its reader slot */
    EVP_MD_CTX *md; /* reused: initialising it again with the same digest allocates nothing */
};

static const char b62[] = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

bool ag_keys_name_valid(const char *name)
{
    size_t n = name ? strlen(name) : 0;
    if (n == 0 || n > AG_KEYS_NAME_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '.' || c == '-'))
            return false;
    }
    return true;
}

bool ag_keys_models_valid(const char *models)
{
    if (models == NULL || models[0] == '\0')
        return true;
    size_t n = strlen(models);
    if (n > AG_KEYS_MODELS_MAX)
        return false;
    size_t item = 0;
    for (size_t i = 0; i <= n; i++) {
        char c = models[i];
        if (c == ',' || c == '\0') {
            if (item == 0)
                return false;
            item = 0;
            continue;
        }
        if (c <= ' ' || c > '~' || c == '"' || c == '\\')
            return false;
        item++;
    }
    return true;
}

bool ag_keys_model_allowed(const ag_key_record_t *rec, const char *model, size_t len)
{
    const char *p = rec->models;
    if (*p == '\0')
        return true;
    while (*p) {
        const char *e = strchr(p, ',');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        if (n == len && memcmp(p, model, len) == 0)
            return true;
        p += n + (e != NULL);
    }
    return false;
}

static ag_str_t trim(ag_str_t s)
{
    while (s.len && (s.ptr[0] == ' ' || s.ptr[0] == '\t'))
        s.ptr++, s.len--;
    while (s.len && (s.ptr[s.len - 1] == ' ' || s.ptr[s.len - 1] == '\t'))
        s.len--;
    return s;
}

bool ag_keys_from_headers(ag_str_t authorization, ag_str_t x_api_key, ag_str_t *key)
{
    ag_str_t a = trim(authorization);
    if (a.ptr != NULL && a.len > 7 && strncasecmp(a.ptr, "bearer", 6) == 0 &&
        (a.ptr[6] == ' ' || a.ptr[6] == '\t')) {
        *key = trim(ag_str(a.ptr + 7, a.len - 7));
        return true;
    }
    ag_str_t x = trim(x_api_key);
    if (x.ptr != NULL && x.len > 0) {
        *key = x;
        return true;
    }
    /* An Authorization of another scheme (Basic...) presents no key of ours:
     * it is a key that cannot match, not an absent one. */
    if (a.ptr != NULL && a.len > 0) {
        *key = a;
        return true;
    }
    *key = AG_STR_NULL;
    return false;
}

bool ag_keys_key_wellformed(const char *key, size_t len)
{
    if (len != AG_KEYS_KEY_LEN || memcmp(key, AG_KEYS_PREFIX, 3) != 0)
        return false;
    for (size_t i = 3; i < len; i++) {
        char c = key[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')))
            return false;
    }
    return true;
}

void ag__keys_base62(const uint8_t bytes[32], char out[44])
{
    uint8_t n[32];
    memcpy(n, bytes, 32);
    /* Long division by 62, least significant digit first; 62^43 > 2^256. */
    for (int d = 42; d >= 0; d--) {
        unsigned rem = 0;
        for (int i = 0; i < 32; i++) {
            unsigned cur = (rem << 8) | n[i];
            n[i] = (uint8_t)(cur / 62);
            rem = cur % 62;
        }
        out[d] = b62[rem];
    }
    out[43] = '\0';
    OPENSSL_cleanse(n, sizeof(n));
}

/* Fails only when OpenSSL runs out of memory. */
static int sha256(const void *data, size_t len, unsigned char out[HASH_LEN])
{
    unsigned int n = HASH_LEN;
    return EVP_Digest(data, len, out, &n, EVP_sha256(), NULL) == 1 ? 0 : -ENOMEM;
}

/* ---- records ------------------------------------------------------------------------- */

static uint64_t dbits(double d)
{
    uint64_t u;
    memcpy(&u, &d, sizeof(u));
    return u;
}

static double bitsd(uint64_t u)
{
    double d;
    memcpy(&d, &u, sizeof(d));
    return d;
}

/* Decodes v (the record of `name`); *hash points into the map. */
static int rec_decode(const MDB_val *k, const MDB_val *v, ag_key_record_t *r,
                      const unsigned char **hash)
{
    const unsigned char *p = v->mv_data;
    if (v->mv_size < REC_HDR || p[0] != REC_VERSION || k->mv_size == 0 ||
        k->mv_size > AG_KEYS_NAME_MAX)
        return AG_KEYS_ECORRUPT;
    size_t mlen = (size_t)ag_le_get(p + 2, 2);
    if (mlen > AG_KEYS_MODELS_MAX || REC_HDR + mlen != v->mv_size)
        return AG_KEYS_ECORRUPT;
    memcpy(r->name, k->mv_data, k->mv_size);
    r->name[k->mv_size] = '\0';
    r->limits.rpm = (uint32_t)ag_le_get(p + 4, 4);
    r->limits.tpm = (uint32_t)ag_le_get(p + 8, 4);
    r->created_ms = (int64_t)ag_le_get(p + 16, 8);
    r->expires_ms = (int64_t)ag_le_get(p + 24, 8);
    r->revoked_ms = (int64_t)ag_le_get(p + 32, 8);
    r->rotated_ms = (int64_t)ag_le_get(p + 40, 8);
    r->limits.daily_usd = bitsd(ag_le_get(p + 48, 8));
    r->limits.monthly_usd = bitsd(ag_le_get(p + 56, 8));
    memcpy(r->models, p + REC_HDR, mlen);
    r->models[mlen] = '\0';
    if (hash)
        *hash = p + REC_HASH;
    return 0;
}

static int rec_put(ag_keys_t *ks, MDB_txn *txn, const ag_key_record_t *r,
                   const unsigned char hash[HASH_LEN])
{
    size_t mlen = strlen(r->models);
    MDB_val k = {strlen(r->name), (void *)r->name};
    MDB_val v = {REC_HDR + mlen, NULL};
    int rc = ag__lmdb_err(mdb_put(txn, ks->name_db, &k, &v, MDB_RESERVE));
    if (rc < 0)
        return rc;
    unsigned char *p = v.mv_data;
    memset(p, 0, REC_HDR);
    p[0] = REC_VERSION;
    ag_le_put(p + 2, mlen, 2);
    ag_le_put(p + 4, r->limits.rpm, 4);
    ag_le_put(p + 8, r->limits.tpm, 4);
    ag_le_put(p + 16, (uint64_t)r->created_ms, 8);
    ag_le_put(p + 24, (uint64_t)r->expires_ms, 8);
    ag_le_put(p + 32, (uint64_t)r->revoked_ms, 8);
    ag_le_put(p + 40, (uint64_t)r->rotated_ms, 8);
    ag_le_put(p + 48, dbits(r->limits.daily_usd), 8);
    ag_le_put(p + 56, dbits(r->limits.monthly_usd), 8);
    memcpy(p + REC_HASH, hash, HASH_LEN);
    memcpy(p + REC_HDR, r->models, mlen);
    return 0;
}

/* ---- opening ------------------------------------------------------------------------- */

int ag_keys_open(const char *data_dir, ag_keys_t **out)
{
    *out = NULL;
    if (data_dir == NULL)
        return AG_EINVALID;
    size_t n = strlen(data_dir) + sizeof("/" AG_KEYS_DIR);
    char *dir = malloc(n);
    if (dir == NULL)
        return -ENOMEM;
    snprintf(dir, n, "%s/%s", data_dir, AG_KEYS_DIR);
    ag_keys_t *ks = calloc(1, sizeof(*ks));
    if (ks == NULL) {
        free(dir);
        return -ENOMEM;
    }
    /* MDB_NOTLS: a reader belongs to a worker, not to whichever thread LMDB
     * would tie it to, and renewing it then needs no lock. */
    int rc = ag__lmdb_open(dir, 2, MAP_SIZE, MDB_NOTLS, MAX_READERS, &ks->env);
    free(dir);
    if (rc < 0) {
        free(ks);
        return rc;
    }
    MDB_txn *txn;
    rc = ag__lmdb_err(mdb_txn_begin(ks->env, NULL, 0, &txn));
    if (rc == 0) {
        rc = ag__lmdb_err(mdb_dbi_open(txn, "name", MDB_CREATE, &ks->name_db));
        if (rc == 0)
            rc = ag__lmdb_err(mdb_dbi_open(txn, "hash", MDB_CREATE, &ks->hash_db));
        if (rc == 0)
            rc = ag__lmdb_err(mdb_txn_commit(txn));
        else
            mdb_txn_abort(txn);
    }
    ks->sha256 = rc == 0 ? EVP_MD_fetch(NULL, "SHA256", NULL) : NULL;
    if (rc == 0 && ks->sha256 == NULL)
        rc = -ENOMEM;
    if (rc < 0) {
        mdb_env_close(ks->env);
        free(ks);
        return rc;
    }
    *out = ks;
    return 0;
}

void ag_keys_close(ag_keys_t *ks)
{
    if (ks == NULL)
        return;
    EVP_MD_free(ks->sha256);
    mdb_env_close(ks->env);
    free(ks);
}

/* ---- lookup -------------------------------------------------------------------------- */

int ag_keys_reader_new(ag_keys_t *ks, ag_keys_reader_t **out)
{
    *out = NULL;
    ag_keys_reader_t *r = calloc(1, sizeof(*r));
    if (r == NULL)
        return -ENOMEM;
    r->ks = ks;
    r->md = EVP_MD_CTX_new();
    int rc = r->md ? ag__lmdb_err(mdb_txn_begin(ks->env, NULL, MDB_RDONLY, &r->txn)) : -ENOMEM;
    if (rc < 0) {
        EVP_MD_CTX_free(r->md);
        free(r);
        return rc;
    }
    mdb_txn_reset(r->txn);
    *out = r;
    return 0;
}

void ag_keys_reader_free(ag_keys_reader_t *r)
{
    if (r == NULL)
        return;
    mdb_txn_abort(r->txn);
    EVP_MD_CTX_free(r->md);
    free(r);
}

/* The record that the key hashed to h names, in txn. */
static int find_by_hash(ag_keys_t *ks, MDB_txn *txn, const unsigned char h[HASH_LEN],
                        ag_key_record_t *out)
{
    MDB_val k = {HASH_LEN, (void *)h}, name, v;
    int rc = ag__lmdb_err(mdb_get(txn, ks->hash_db, &k, &name));
    if (rc < 0)
        return rc;
    rc = ag__lmdb_err(mdb_get(txn, ks->name_db, &name, &v));
    if (rc < 0)
        return rc == AG_ENOTFOUND ? AG_KEYS_ECORRUPT : rc;
    const unsigned char *stored;
    rc = rec_decode(&name, &v, out, &stored);
    if (rc < 0)
        return rc;
    /* The B-tree found the hash; this decides, in constant time, that the
     * record is the one for this very hash (a rotated-away index entry cannot
     * match its record's new hash). */
    return CRYPTO_memcmp(stored, h, HASH_LEN) == 0 ? 0 : AG_ENOTFOUND;
}

int ag_keys_lookup(ag_keys_reader_t *r, const char *key, size_t len, int64_t now_ms,
                   ag_key_record_t *out)
{
    unsigned char h[HASH_LEN];
    unsigned int hlen = HASH_LEN;
    if (!ag_keys_key_wellformed(key, len))
        return AG_KEYS_EINVALID;
    if (EVP_DigestInit_ex(r->md, r->ks->sha256, NULL) != 1 ||
        EVP_DigestUpdate(r->md, key, len) != 1 || EVP_DigestFinal_ex(r->md, h, &hlen) != 1)
        return -ENOMEM;
    int rc = ag__lmdb_err(mdb_txn_renew(r->txn));
    if (rc < 0)
        return rc;
    rc = find_by_hash(r->ks, r->txn, h, out);
    mdb_txn_reset(r->txn);
    if (rc == AG_ENOTFOUND)
        return AG_KEYS_EINVALID;
    if (rc < 0)
        return rc;
    if (out->revoked_ms != 0)
        return AG_KEYS_EREVOKED;
    if (out->expires_ms != 0 && now_ms >= out->expires_ms)
        return AG_KEYS_EEXPIRED;
    return 0;
}

/* ---- changes ------------------------------------------------------------------------- */

/* A fresh key and its hash; the key bytes are wiped. */
static int new_key(char key_out[AG_KEYS_KEY_LEN + 1], unsigned char h[HASH_LEN])
{
    uint8_t raw[32];
    if (RAND_bytes(raw, sizeof(raw)) != 1)
        return -EIO;
    memcpy(key_out, AG_KEYS_PREFIX, 3);
    ag__keys_base62(raw, key_out + 3);
    OPENSSL_cleanse(raw, sizeof(raw));
    return sha256(key_out, AG_KEYS_KEY_LEN, h);
}

static int get_in(ag_keys_t *ks, MDB_txn *txn, const char *name, ag_key_record_t *out,
                  unsigned char hash[HASH_LEN])
{
    if (!ag_keys_name_valid(name))
        return AG_ENOTFOUND;
    MDB_val k = {strlen(name), (void *)name}, v;
    int rc = ag__lmdb_err(mdb_get(txn, ks->name_db, &k, &v));
    if (rc < 0)
        return rc;
    const unsigned char *stored;
    rc = rec_decode(&k, &v, out, &stored);
    if (rc == 0 && hash)
        memcpy(hash, stored, HASH_LEN);
    return rc;
}

int ag_keys_export(ag_keys_t *ks, const char *name, unsigned char out[AG_KEYS_EXPORT_MAX])
{
    if (!ag_keys_name_valid(name))
        return AG_ENOTFOUND;
    MDB_txn *txn;
    int rc = ag__lmdb_err(mdb_txn_begin(ks->env, NULL, MDB_RDONLY, &txn));
    if (rc < 0)
        return rc;
    MDB_val k = {strlen(name), (void *)name}, v;
    rc = ag__lmdb_err(mdb_get(txn, ks->name_db, &k, &v));
    ag_key_record_t r;
    if (rc == 0)
        rc = rec_decode(&k, &v, &r, NULL);
    if (rc == 0) {
        memcpy(out, v.mv_data, v.mv_size);
        rc = (int)v.mv_size;
    }
    mdb_txn_abort(txn);
    return rc;
}

int ag_keys_import(ag_keys_t *ks, const char *name, const unsigned char *rec, size_t len)
{
    if (!ag_keys_name_valid(name) || len > AG_KEYS_EXPORT_MAX)
        return AG_KEYS_ECORRUPT;
    MDB_val k = {strlen(name), (void *)name}, nv = {len, (void *)rec};
    ag_key_record_t r;
    const unsigned char *nh;
    int rc = rec_decode(&k, &nv, &r, &nh);
    if (rc < 0)
        return rc;
    MDB_txn *txn;
    rc = ag__lmdb_err(mdb_txn_begin(ks->env, NULL, 0, &txn));
    if (rc < 0)
        return rc;
    MDB_val ov;
    rc = ag__lmdb_err(mdb_get(txn, ks->name_db, &k, &ov));
    if (rc == 0 && ov.mv_size == len && memcmp(ov.mv_data, rec, len) == 0) {
        mdb_txn_abort(txn);
        return 0;
    }
    ag_key_record_t old;
    if (rc == 0 && rec_decode(&k, &ov, &old, NULL) == 0 && old.revoked_ms != 0 &&
        r.revoked_ms == 0 && memcmp((unsigned char *)ov.mv_data + REC_HASH, nh, HASH_LEN) == 0) {
        /* A revocation made here that Redis did not take: never undone by an
         * older copy of the same key. */
        mdb_txn_abort(txn);
        return 0;
    }
    if (rc == 0) {
        /* The old key's hash goes with the record it named. */
        MDB_val oh = {HASH_LEN, (unsigned char *)ov.mv_data + REC_HASH};
        rc = ag__lmdb_err(mdb_del(txn, ks->hash_db, &oh, NULL));
    }
    if (rc == 0 || rc == AG_ENOTFOUND)
        rc = ag__lmdb_err(mdb_put(txn, ks->name_db, &k, &nv, 0));
    if (rc == 0) {
        MDB_val hk = {HASH_LEN, (void *)nh};
        rc = ag__lmdb_err(mdb_put(txn, ks->hash_db, &hk, &k, 0));
    }
    if (rc < 0) {
        mdb_txn_abort(txn);
        return rc;
    }
    rc = ag__lmdb_err(mdb_txn_commit(txn));
    return rc < 0 ? rc : 1;
}

static bool usd_ok(double d)
{
    return isfinite(d) && d >= 0;
}

int ag_keys_create(ag_keys_t *ks, const char *name, const ag_key_limits_t *limits,
                   const char *models, int64_t expires_ms, int64_t now_ms,
                   char key_out[AG_KEYS_KEY_LEN + 1], ag_key_record_t *rec_out)
{
    if (!ag_keys_name_valid(name))
        return AG_KEYS_ENAME;
    if (!ag_keys_models_valid(models))
        return AG_KEYS_EMODELS;
    if (limits && (!usd_ok(limits->daily_usd) || !usd_ok(limits->monthly_usd)))
        return AG_KEYS_ELIMITS;
    ag_key_record_t rec;
    memset(&rec, 0, sizeof(rec));
    snprintf(rec.name, sizeof(rec.name), "%s", name);
    snprintf(rec.models, sizeof(rec.models), "%s", models ? models : "");
    if (limits)
        rec.limits = *limits;
    rec.created_ms = now_ms;
    rec.expires_ms = expires_ms;
    unsigned char h[HASH_LEN];
    int rc = new_key(key_out, h);
    if (rc < 0)
        return rc;
    MDB_txn *txn;
    rc = ag__lmdb_err(mdb_txn_begin(ks->env, NULL, 0, &txn));
    if (rc < 0)
        goto wipe;
    MDB_val k = {strlen(name), (void *)name}, v;
    rc = ag__lmdb_err(mdb_get(txn, ks->name_db, &k, &v));
    if (rc == 0)
        rc = AG_EEXISTS;
    else if (rc == AG_ENOTFOUND)
        rc = rec_put(ks, txn, &rec, h);
    if (rc == 0) {
        MDB_val hk = {HASH_LEN, h};
        rc = ag__lmdb_err(mdb_put(txn, ks->hash_db, &hk, &k, MDB_NOOVERWRITE));
    }
    if (rc < 0) {
        mdb_txn_abort(txn);
        goto wipe;
    }
    rc = ag__lmdb_err(mdb_txn_commit(txn));
    if (rc == 0 && rec_out)
        *rec_out = rec;
wipe:
    if (rc < 0)
        OPENSSL_cleanse(key_out, AG_KEYS_KEY_LEN + 1);
    return rc;
}

int ag_keys_get(ag_keys_t *ks, const char *name, ag_key_record_t *out)
{
    MDB_txn *txn;
    int rc = ag__lmdb_err(mdb_txn_begin(ks->env, NULL, MDB_RDONLY, &txn));
    if (rc < 0)
        return rc;
    rc = get_in(ks, txn, name, out, NULL);
    mdb_txn_abort(txn);
    return rc;
}

int ag_keys_list(ag_keys_t *ks, ag_key_record_t **out, size_t *n)
{
    *out = NULL;
    *n = 0;
    MDB_txn *txn;
    MDB_cursor *cur;
    int rc = ag__lmdb_err(mdb_txn_begin(ks->env, NULL, MDB_RDONLY, &txn));
    if (rc < 0)
        return rc;
    rc = ag__lmdb_err(mdb_cursor_open(txn, ks->name_db, &cur));
    if (rc < 0) {
        mdb_txn_abort(txn);
        return rc;
    }
    MDB_stat st;
    rc = ag__lmdb_err(mdb_stat(txn, ks->name_db, &st));
    ag_key_record_t *recs = NULL;
    if (rc == 0 && st.ms_entries > 0) {
        recs = calloc(st.ms_entries, sizeof(*recs));
        if (recs == NULL)
            rc = -ENOMEM;
    }
    MDB_val k, v;
    size_t count = 0;
    int mrc = rc == 0 ? mdb_cursor_get(cur, &k, &v, MDB_FIRST) : MDB_NOTFOUND;
    for (; rc == 0 && mrc == 0 && count < st.ms_entries;
         mrc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        rc = rec_decode(&k, &v, &recs[count], NULL);
        if (rc == 0)
            count++;
    }
    if (rc == 0 && mrc != 0 && mrc != MDB_NOTFOUND)
        rc = ag__lmdb_err(mrc);
    mdb_cursor_close(cur);
    mdb_txn_abort(txn);
    if (rc < 0) {
        free(recs);
        return rc;
    }
    *out = recs;
    *n = count;
    return 0;
}

int ag_keys_revoke(ag_keys_t *ks, const char *name, int64_t now_ms, ag_key_record_t *rec_out)
{
    MDB_txn *txn;
    int rc = ag__lmdb_err(mdb_txn_begin(ks->env, NULL, 0, &txn));
    if (rc < 0)
        return rc;
    ag_key_record_t rec;
    unsigned char h[HASH_LEN];
    rc = get_in(ks, txn, name, &rec, h);
    if (rc == 0 && rec.revoked_ms == 0) {
        rec.revoked_ms = now_ms > 0 ? now_ms : 1;
        rc = rec_put(ks, txn, &rec, h);
        if (rc == 0) {
            rc = ag__lmdb_err(mdb_txn_commit(txn));
            txn = NULL;
        }
    }
    if (txn)
        mdb_txn_abort(txn);
    if (rc == 0 && rec_out)
        *rec_out = rec;
    return rc;
}

int ag_keys_rotate(ag_keys_t *ks, const char *name, int64_t now_ms,
                   char key_out[AG_KEYS_KEY_LEN + 1], ag_key_record_t *rec_out)
{
    unsigned char nh[HASH_LEN], oh[HASH_LEN];
    int rc = new_key(key_out, nh);
    if (rc < 0)
        return rc;
    MDB_txn *txn;
    rc = ag__lmdb_err(mdb_txn_begin(ks->env, NULL, 0, &txn));
    if (rc < 0)
        goto wipe;
    ag_key_record_t rec;
    rc = get_in(ks, txn, name, &rec, oh);
    if (rc == 0 && rec.revoked_ms != 0)
        rc = AG_KEYS_EREVOKED;
    if (rc == 0) {
        MDB_val ok = {HASH_LEN, oh};
        rc = ag__lmdb_err(mdb_del(txn, ks->hash_db, &ok, NULL));
        if (rc == AG_ENOTFOUND)
            rc = 0;
    }
    if (rc == 0) {
        rec.rotated_ms = now_ms;
        rc = rec_put(ks, txn, &rec, nh);
    }
    if (rc == 0) {
        MDB_val hk = {HASH_LEN, nh}, nk = {strlen(rec.name), rec.name};
        rc = ag__lmdb_err(mdb_put(txn, ks->hash_db, &hk, &nk, MDB_NOOVERWRITE));
    }
    if (rc < 0) {
        mdb_txn_abort(txn);
        goto wipe;
    }
    rc = ag__lmdb_err(mdb_txn_commit(txn));
    if (rc == 0 && rec_out)
        *rec_out = rec;
wipe:
    if (rc < 0)
        OPENSSL_cleanse(key_out, AG_KEYS_KEY_LEN + 1);
    return rc;
}
