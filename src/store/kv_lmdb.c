/* SPDX-License-Identifier: MIT
 *
 * kv_lmdb.c: the embedded KV backend on LMDB: its on-disk layout, one shared
 * environment per folder and process, and LMDB's errors mapped to AG_KV_E*.
 * The front end (kv.c) has checked every argument before a call gets here.
 */
#include "util/platform.h"

#include "store/kv.h"
#include "store/lmdb_util.h"

#include <errno.h>
#include <stdatomic.h>
#include <fcntl.h>
#include <pthread.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/types.h>
#include <unistd.h>

#include <lmdb.h>
#include <openssl/evp.h>

#include "util/brlock.h"
#include "util/errors.h"
#include "util/fs.h"
#include "util/le.h"
#include "util/log.h"

/*
 * Layout. LMDB keys are at most 511 bytes (MDB_MAXKEYSIZE of the Debian build)
 * while a Workers key may have 512, so the store has three databases:
 *   main    key (<= 511 bytes)  -> record
 *   long    SHA-256(key)        -> record, which also holds the whole key
 *   longidx key[0..511) (dupsort) -> key[511..]: keeps long keys in byte order
 * A listing merges main with longidx. Nearly every key takes the main path.
 *
 * A record is a 16-byte header, then the stored key (long records only), the
 * metadata JSON and the value:
 *   u8 version, u8 flags (0), u16 stored key length, u32 metadata length,
 *   i64 expiration (epoch ms, 0 = never); little-endian.
 */
#define REC_VERSION 1
#define REC_HDR 16
#define SHA_LEN 32

typedef struct kv_env {
    struct kv_env *next;
    dev_t dev;
    ino_t ino;
    pid_t pid; /* entries inherited across fork() belong to the parent */
    int refs;
    MDB_env *env;
    MDB_dbi main, lng, longidx;
    size_t maxkey;
    size_t psize;
    /* Held shared around every transaction and exclusively to adopt a map size
     * grown by another process, which LMDB allows only with no transaction open
     * in this process. A big-reader lock: a get writes no line another
     * thread's get writes. */
    ag_brlock_t resize_lock;
    /* A reset read transaction per lock slot, renewed by the next get on that
     * slot: LMDB then keeps its reader slot, where a new transaction takes the
     * environment's reader mutex (shared by every thread) and a malloc. */
    struct {
        _Atomic(MDB_txn *) txn;
        char pad[120];
    } spare[AG_BRLOCK_SLOTS];
    /* An evicting store (max_bytes > 0): its bound, one evictor at a time, and
     * the throttled report of puts it had to drop. */
    size_t max_bytes;
    pthread_mutex_t evict_lock;
    uint64_t dropped;       /* since the last report; under evict_lock */
    int64_t last_report_ms; /* under evict_lock */
    char *dir;
} kv_env_t;

typedef struct kv_lmdb {
    ag_kv_t base;
    kv_env_t *e;
    pthread_mutex_t sweep_lock;
    /* Where the next bounded sweep starts: database 0 (main) or 1 (long), at
     * the first key >= sweep_key (from the start when sweep_keylen is 0). */
    int sweep_db;
    size_t sweep_keylen;
    unsigned char sweep_key[AG_KV_MAX_KEY_LEN];
} kv_lmdb_t;

typedef struct rec {
    int64_t expiration_ms;
    const unsigned char *key; /* stored key (long records) */
    size_t keylen;
    const char *meta;
    size_t metalen;
    const char *val;
    size_t vallen;
} rec_t;

static pthread_mutex_t envs_lock = PTHREAD_MUTEX_INITIALIZER;
static kv_env_t *envs;

static int rec_decode(const MDB_val *v, rec_t *r)
{
    const unsigned char *p = v->mv_data;
    if (v->mv_size < REC_HDR || p[0] != REC_VERSION)
        return AG_KV_ECORRUPT;
    size_t keylen = (size_t)ag_le_get(p + 2, 2);
    size_t metalen = (size_t)ag_le_get(p + 4, 4);
    if (keylen + metalen > v->mv_size - REC_HDR)
        return AG_KV_ECORRUPT;
    r->expiration_ms = (int64_t)ag_le_get(p + 8, 8);
    r->key = p + REC_HDR;
    r->keylen = keylen;
    r->meta = (const char *)p + REC_HDR + keylen;
    r->metalen = metalen;
    r->val = r->meta + metalen;
    r->vallen = v->mv_size - REC_HDR - keylen - metalen;
    return 0;
}

static bool rec_expired(const rec_t *r, int64_t now_ms)
{
    return r->expiration_ms != 0 && now_ms >= r->expiration_ms;
}

/* Fails only when OpenSSL runs out of memory. */
static int sha256(const void *data, size_t len, unsigned char out[SHA_LEN])
{
    unsigned int n = SHA_LEN;
    return EVP_Digest(data, len, out, &n, EVP_sha256(), NULL) == 1 ? 0 : -ENOMEM;
}

static int keycmp(const unsigned char *a, size_t alen, const unsigned char *b, size_t blen)
{
    size_t n = alen < blen ? alen : blen;
    int c = n ? memcmp(a, b, n) : 0;
    if (c != 0)
        return c;
    return alen < blen ? -1 : alen > blen;
}

/* Begins a transaction; the caller holds resize_lock shared. */
static int txn_begin(kv_env_t *e, unsigned flags, MDB_txn **txn)
{
    for (int tries = 0;; tries++) {
        int rc = mdb_txn_begin(e->env, NULL, flags, txn);
        if (rc != MDB_MAP_RESIZED || tries == 4)
            return ag__lmdb_err(rc);
        ag_brlock_rdunlock(&e->resize_lock);
        ag_brlock_wrlock(&e->resize_lock);
        mdb_env_set_mapsize(e->env, 0);
        ag_brlock_wrunlock(&e->resize_lock);
        ag_brlock_rdlock(&e->resize_lock);
    }
}

/* A read transaction: the slot's spare renewed, else a new one. The caller
 * holds resize_lock shared. */
static int read_txn_begin(kv_env_t *e, MDB_txn **txn)
{
    MDB_txn *t = atomic_exchange(&e->spare[ag_brlock_slot()].txn, NULL);
    if (t) {
        if (mdb_txn_renew(t) == MDB_SUCCESS) {
            *txn = t;
            return 0;
        }
        mdb_txn_abort(t); /* MDB_MAP_RESIZED, say: txn_begin adopts the size */
    }
    return txn_begin(e, MDB_RDONLY, txn);
}

/* Ends a read transaction, kept reset as its slot's spare (another thread of
 * the slot may have left one there: then this one goes). */
static void read_txn_end(kv_env_t *e, MDB_txn *txn)
{
    mdb_txn_reset(txn);
    MDB_txn *none = NULL;
    if (!atomic_compare_exchange_strong(&e->spare[ag_brlock_slot()].txn, &none, txn))
        mdb_txn_abort(txn);
}

static int txn_commit(MDB_txn *txn)
{
    return ag__lmdb_err(mdb_txn_commit(txn));
}

/* Finds the record of key; *v points into the map until the txn ends. */
static int fetch(kv_env_t *e, MDB_txn *txn, const void *key, size_t keylen, rec_t *r)
{
    MDB_val k, v;
    unsigned char h[SHA_LEN];
    MDB_dbi dbi = e->main;
    if (keylen > e->maxkey) {
        if (sha256(key, keylen, h) < 0)
            return -ENOMEM;
        k = (MDB_val){SHA_LEN, h};
        dbi = e->lng;
    } else {
        k = (MDB_val){keylen, (void *)key};
    }
    int rc = ag__lmdb_err(mdb_get(txn, dbi, &k, &v));
    if (rc < 0)
        return rc;
    rc = rec_decode(&v, r);
    if (rc < 0)
        return rc;
    if (dbi == e->lng && (r->keylen != keylen || memcmp(r->key, key, keylen) != 0))
        return AG_ENOTFOUND;
    return 0;
}

static char *dup_bytes(const void *p, size_t len)
{
    char *s = malloc(len + 1);
    if (s == NULL)
        return NULL;
    if (len)
        memcpy(s, p, len);
    s[len] = '\0';
    return s;
}

static int lmdb_get(ag_kv_t *kv, const void *key, size_t keylen, bool with_metadata,
                    ag_kv_value_t *out)
{
    kv_lmdb_t *h = (kv_lmdb_t *)kv;
    kv_env_t *e = h->e;
    MDB_txn *txn;
    rec_t r;
    ag_brlock_rdlock(&e->resize_lock);
    int rc = read_txn_begin(e, &txn);
    if (rc < 0)
        goto out;
    rc = fetch(e, txn, key, keylen, &r);
    if (rc == 0 && rec_expired(&r, kv->now_ms(kv->clock_ctx)))
        rc = AG_ENOTFOUND;
    if (rc == 0) {
        out->data = dup_bytes(r.val, r.vallen);
        out->len = r.vallen;
        if (with_metadata && r.metalen > 0) {
            out->metadata = dup_bytes(r.meta, r.metalen);
            out->metadata_len = r.metalen;
        }
        out->expiration_ms = r.expiration_ms;
        if (out->data == NULL || (with_metadata && r.metalen > 0 && out->metadata == NULL)) {
            ag_kv_value_free(out);
            rc = -ENOMEM;
        }
    }
    read_txn_end(e, txn);
out:
    ag_brlock_rdunlock(&e->resize_lock);
    return rc;
}

/*
 * LMDB turns a write that the disk cuts short into EIO ("short write,
 * filesystem full?"). To give a clear error instead, a put first reserves disk
 * blocks past the end of the data file for what it may append, holding the
 * write lock so that the end cannot move: ENOSPC there, or a file-size limit
 * the append would pass, is AG_KV_EDISK_FULL before anything is written.
 * FALLOC_FL_KEEP_SIZE leaves the file size, which LMDB reads, alone.
 */
static int reserve_space(kv_env_t *e, size_t bytes, uint64_t *need_out)
{
    MDB_envinfo info;
    if (mdb_env_info(e->env, &info) != 0)
        return 0;
    uint64_t start = ((uint64_t)info.me_last_pgno + 1) * e->psize;
    /* The record's pages plus the B-tree path and free-list pages it dirties. */
    uint64_t need = bytes + 64 * (uint64_t)e->psize;
    if (start >= info.me_mapsize)
        return 0; /* LMDB answers MDB_MAP_FULL */
    if (start + need > info.me_mapsize)
        need = info.me_mapsize - start;
    *need_out = need;
    struct rlimit rl;
    if (getrlimit(RLIMIT_FSIZE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY &&
        start + need > (uint64_t)rl.rlim_cur)
        return AG_KV_EDISK_FULL;
    mdb_filehandle_t fd;
    if (mdb_env_get_fd(e->env, &fd) != 0)
        return 0;
    if (fallocate(fd, FALLOC_FL_KEEP_SIZE, (off_t)start, (off_t)need) < 0 &&
        (errno == ENOSPC || errno == EDQUOT))
        return AG_KV_EDISK_FULL;
    return 0; /* also when the filesystem cannot preallocate */
}

/* A commit that failed with EIO on a nearly full disk was a short write. */
static int commit_error(kv_env_t *e, int rc, uint64_t need)
{
    mdb_filehandle_t fd;
    struct statvfs sv;
    if (rc == -EIO && mdb_env_get_fd(e->env, &fd) == 0 && fstatvfs(fd, &sv) == 0 &&
        (uint64_t)sv.f_bavail * sv.f_frsize < need)
        return AG_KV_EDISK_FULL;
    return rc;
}

/* Bytes the databases' pages take (not the free list): what eviction bounds. */
static uint64_t live_bytes(kv_env_t *e, MDB_txn *txn)
{
    uint64_t pages = 0;
    MDB_dbi dbis[] = {e->main, e->lng, e->longidx};
    for (size_t i = 0; i < AG_ARRAY_LEN(dbis); i++) {
        MDB_stat ms;
        if (mdb_stat(txn, dbis[i], &ms) == 0)
            pages += ms.ms_branch_pages + ms.ms_leaf_pages + ms.ms_overflow_pages;
    }
    return pages * e->psize;
}

/* One put in its own transaction; *over: an evicting store passed its high mark. */
static int put_once(kv_env_t *e, const void *key, size_t keylen, const void *val, size_t vallen,
                    int64_t expiration_ms, const char *metadata, size_t metadata_len, bool *over)
{
    bool is_long = keylen > e->maxkey;
    size_t storedkey = is_long ? keylen : 0;
    unsigned char hash[SHA_LEN];
    MDB_val k = {keylen, (void *)key};
    MDB_val v = {REC_HDR + storedkey + metadata_len + vallen, NULL};
    MDB_dbi dbi = e->main;
    if (is_long) {
        if (sha256(key, keylen, hash) < 0)
            return -ENOMEM;
        k = (MDB_val){SHA_LEN, hash};
        dbi = e->lng;
    }
    MDB_txn *txn;
    ag_brlock_rdlock(&e->resize_lock);
    uint64_t need = 0;
    int rc = txn_begin(e, 0, &txn);
    if (rc < 0)
        goto out;
    rc = reserve_space(e, v.mv_size, &need);
    if (rc < 0)
        goto abort;
    /* MDB_RESERVE: the record is built in place, no second copy of the value. */
    rc = ag__lmdb_err(mdb_put(txn, dbi, &k, &v, MDB_RESERVE));
    if (rc < 0)
        goto abort;
    unsigned char *p = v.mv_data;
    p[0] = REC_VERSION;
    p[1] = 0;
    ag_le_put(p + 2, storedkey, 2);
    ag_le_put(p + 4, metadata_len, 4);
    ag_le_put(p + 8, (uint64_t)expiration_ms, 8);
    p += REC_HDR;
    if (storedkey)
        memcpy(p, key, storedkey);
    p += storedkey;
    if (metadata_len)
        memcpy(p, metadata, metadata_len);
    p += metadata_len;
    if (vallen)
        memcpy(p, val, vallen);
    if (is_long) {
        MDB_val head = {e->maxkey, (void *)key};
        MDB_val tail = {keylen - e->maxkey, (unsigned char *)key + e->maxkey};
        int mrc = mdb_put(txn, e->longidx, &head, &tail, MDB_NODUPDATA);
        if (mrc != MDB_KEYEXIST) {
            rc = ag__lmdb_err(mrc);
            if (rc < 0)
                goto abort;
        }
    }
    if (e->max_bytes)
        *over = live_bytes(e, txn) > e->max_bytes / 8 * 7;
    rc = commit_error(e, txn_commit(txn), need);
    goto out;
abort:
    mdb_txn_abort(txn);
out:
    ag_brlock_rdunlock(&e->resize_lock);
    return rc;
}

/* Deletes the longidx entry of a long key. */
static int del_longidx(kv_env_t *e, MDB_txn *txn, const void *key, size_t keylen)
{
    MDB_val head = {e->maxkey, (void *)key};
    MDB_val tail = {keylen - e->maxkey, (unsigned char *)key + e->maxkey};
    int rc = mdb_del(txn, e->longidx, &head, &tail);
    return rc == MDB_NOTFOUND ? 0 : ag__lmdb_err(rc);
}

static int lmdb_del(ag_kv_t *kv, const void *key, size_t keylen)
{
    kv_lmdb_t *h = (kv_lmdb_t *)kv;
    kv_env_t *e = h->e;
    MDB_txn *txn;
    ag_brlock_rdlock(&e->resize_lock);
    int rc = txn_begin(e, 0, &txn);
    if (rc < 0)
        goto out;
    if (keylen > e->maxkey) {
        unsigned char hash[SHA_LEN];
        MDB_val k = {SHA_LEN, hash};
        rc = sha256(key, keylen, hash);
        if (rc == 0)
            rc = ag__lmdb_err(mdb_del(txn, e->lng, &k, NULL));
        if (rc == 0)
            rc = del_longidx(e, txn, key, keylen);
    } else {
        MDB_val k = {keylen, (void *)key};
        rc = ag__lmdb_err(mdb_del(txn, e->main, &k, NULL));
    }
    if (rc < 0) {
        mdb_txn_abort(txn); /* also when missing: nothing to write */
        if (rc == AG_ENOTFOUND)
            rc = 0;
        goto out;
    }
    rc = txn_commit(txn);
out:
    ag_brlock_rdunlock(&e->resize_lock);
    return rc;
}

/* One ordered source of a listing: main, or long keys through longidx. */
typedef struct list_src {
    kv_env_t *e;
    MDB_txn *txn;
    MDB_cursor *cur;
    bool is_long;
    bool valid;
    unsigned char key[AG_KV_MAX_KEY_LEN];
    size_t keylen;
    rec_t rec;
} list_src_t;

/* Loads the entry the cursor is on after a cursor op returned mrc. */
static int src_load(list_src_t *s, int mrc, const MDB_val *k, const MDB_val *v)
{
    for (;;) {
        if (mrc == MDB_NOTFOUND) {
            s->valid = false;
            return 0;
        }
        if (mrc != 0)
            return ag__lmdb_err(mrc);
        if (!s->is_long) {
            if (k->mv_size > AG_KV_MAX_KEY_LEN)
                return AG_KV_ECORRUPT;
            memcpy(s->key, k->mv_data, k->mv_size);
            s->keylen = k->mv_size;
            s->valid = true;
            return rec_decode(v, &s->rec);
        }
        if (k->mv_size + v->mv_size > AG_KV_MAX_KEY_LEN)
            return AG_KV_ECORRUPT;
        memcpy(s->key, k->mv_data, k->mv_size);
        memcpy(s->key + k->mv_size, v->mv_data, v->mv_size);
        s->keylen = k->mv_size + v->mv_size;
        int rc = fetch(s->e, s->txn, s->key, s->keylen, &s->rec);
        if (rc == 0) {
            s->valid = true;
            return 0;
        }
        if (rc != AG_ENOTFOUND)
            return rc;
        /* An index entry without its record cannot be written by us (both
         * change in one transaction); skip it rather than fail every listing. */
        MDB_val nk, nv;
        mrc = mdb_cursor_get(s->cur, &nk, &nv, MDB_NEXT);
        k = &nk;
        v = &nv;
    }
}

static int src_next(list_src_t *s)
{
    MDB_val k, v;
    int mrc = mdb_cursor_get(s->cur, &k, &v, MDB_NEXT);
    return src_load(s, mrc, &k, &v);
}

/* Positions s at the first key >= start (> start when exclusive). */
static int src_seek(list_src_t *s, const unsigned char *start, size_t startlen, bool exclusive)
{
    MDB_val k, v;
    int mrc;
    if (startlen == 0) {
        mrc = mdb_cursor_get(s->cur, &k, &v, MDB_FIRST);
    } else {
        /* Truncating to the longest storable key can only land earlier, and
         * the loop below walks forward over what sorts before start. */
        k = (MDB_val){startlen < s->e->maxkey ? startlen : s->e->maxkey, (void *)start};
        mrc = mdb_cursor_get(s->cur, &k, &v, MDB_SET_RANGE);
    }
    int rc = src_load(s, mrc, &k, &v);
    while (rc == 0 && s->valid) {
        int c = keycmp(s->key, s->keylen, start, startlen);
        if (c > 0 || (c == 0 && !exclusive))
            return 0;
        rc = src_next(s);
    }
    return rc;
}

static int list_push(ag_kv_list_result_t *out, size_t *cap, const list_src_t *s)
{
    if (out->count == *cap) {
        size_t ncap = *cap ? *cap * 2 : 64;
        ag_kv_list_key_t *nk = realloc(out->keys, ncap * sizeof(*nk));
        if (nk == NULL)
            return -ENOMEM;
        out->keys = nk;
        *cap = ncap;
    }
    ag_kv_list_key_t *k = &out->keys[out->count];
    memset(k, 0, sizeof(*k));
    k->name = dup_bytes(s->key, s->keylen);
    if (k->name == NULL)
        return -ENOMEM;
    k->name_len = s->keylen;
    k->expiration_ms = s->rec.expiration_ms;
    out->count++; /* counted now so that a failure below still frees name */
    if (s->rec.metalen > 0) {
        k->metadata = dup_bytes(s->rec.meta, s->rec.metalen);
        if (k->metadata == NULL)
            return -ENOMEM;
        k->metadata_len = s->rec.metalen;
    }
    return 0;
}

static int lmdb_list(ag_kv_t *kv, const void *prefix, size_t prefixlen, const void *after,
                     size_t afterlen, unsigned limit, ag_kv_list_result_t *out)
{
    kv_lmdb_t *h = (kv_lmdb_t *)kv;
    kv_env_t *e = h->e;
    int64_t now = kv->now_ms(kv->clock_ctx);
    list_src_t src[2];
    memset(src, 0, sizeof(src));
    size_t cap = 0;
    MDB_txn *txn;

    /* Start at the later of the prefix (inclusive) and the cursor (exclusive):
     * keys with the prefix are one contiguous run from the prefix on, so the
     * first key past start without it ends the listing. */
    const unsigned char *start = prefix;
    size_t startlen = prefixlen;
    bool exclusive = false;
    if (after != NULL && keycmp(after, afterlen, prefix, prefixlen) >= 0) {
        start = after;
        startlen = afterlen;
        exclusive = true;
    }

    ag_brlock_rdlock(&e->resize_lock);
    int rc = txn_begin(e, MDB_RDONLY, &txn);
    if (rc < 0)
        goto unlock;
    for (int i = 0; i < 2; i++) {
        src[i].e = e;
        src[i].txn = txn;
        src[i].is_long = i == 1;
        rc = ag__lmdb_err(mdb_cursor_open(txn, i ? e->longidx : e->main, &src[i].cur));
        if (rc < 0)
            goto done;
        rc = src_seek(&src[i], start, startlen, exclusive);
        if (rc < 0)
            goto done;
    }
    out->list_complete = true;
    for (;;) {
        list_src_t *s = NULL;
        for (int i = 0; i < 2; i++) {
            if (src[i].valid &&
                (s == NULL || keycmp(src[i].key, src[i].keylen, s->key, s->keylen) < 0))
                s = &src[i];
        }
        if (s == NULL || s->keylen < prefixlen ||
            (prefixlen && memcmp(s->key, prefix, prefixlen) != 0))
            break;
        if (!rec_expired(&s->rec, now)) {
            if (out->count == limit) {
                out->list_complete = false;
                break;
            }
            rc = list_push(out, &cap, s);
            if (rc < 0)
                goto done;
        }
        rc = src_next(s);
        if (rc < 0)
            goto done;
    }
done:
    for (int i = 0; i < 2; i++) {
        if (src[i].cur != NULL)
            mdb_cursor_close(src[i].cur);
    }
    mdb_txn_abort(txn);
unlock:
    ag_brlock_rdunlock(&e->resize_lock);
    return rc;
}

static int lmdb_sweep(ag_kv_t *kv, size_t max_keys)
{
    kv_lmdb_t *h = (kv_lmdb_t *)kv;
    kv_env_t *e = h->e;
    int64_t now = kv->now_ms(kv->clock_ctx);
    int deleted = 0;
    size_t examined = 0;
    MDB_txn *txn;
    MDB_cursor *cur = NULL;

    pthread_mutex_lock(&h->sweep_lock);
    ag_brlock_rdlock(&e->resize_lock);
    int rc = txn_begin(e, 0, &txn);
    if (rc < 0)
        goto unlock;
    int db = max_keys ? h->sweep_db : 0;
    bool resume = max_keys && h->sweep_keylen > 0;
    for (; db < 2; db++) {
        rc = ag__lmdb_err(mdb_cursor_open(txn, db ? e->lng : e->main, &cur));
        if (rc < 0)
            goto abort;
        MDB_val k, v;
        int mrc;
        if (resume) {
            k = (MDB_val){h->sweep_keylen, h->sweep_key};
            mrc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
            resume = false;
        } else {
            mrc = mdb_cursor_get(cur, &k, &v, MDB_FIRST);
        }
        for (; mrc == 0; mrc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
            if (max_keys && examined == max_keys) {
                /* k is the next entry to examine, always <= 511 bytes. */
                h->sweep_db = db;
                h->sweep_keylen = k.mv_size;
                memcpy(h->sweep_key, k.mv_data, k.mv_size);
                mdb_cursor_close(cur);
                rc = txn_commit(txn);
                goto unlock;
            }
            examined++;
            rec_t r;
            if (rec_decode(&v, &r) < 0 || !rec_expired(&r, now))
                continue;
            if (db == 1 && r.keylen > e->maxkey) {
                rc = del_longidx(e, txn, r.key, r.keylen);
                if (rc < 0)
                    goto abort;
            }
            rc = ag__lmdb_err(mdb_cursor_del(cur, 0));
            if (rc < 0)
                goto abort;
            deleted++;
        }
        if (mrc != MDB_NOTFOUND) {
            rc = ag__lmdb_err(mrc);
            goto abort;
        }
        mdb_cursor_close(cur);
        cur = NULL;
    }
    /* Reached the end: the next bounded sweep starts over. */
    h->sweep_db = 0;
    h->sweep_keylen = 0;
    rc = txn_commit(txn);
    goto unlock;
abort:
    if (cur != NULL)
        mdb_cursor_close(cur);
    mdb_txn_abort(txn);
unlock:
    ag_brlock_rdunlock(&e->resize_lock);
    pthread_mutex_unlock(&h->sweep_lock);
    return rc < 0 ? rc : deleted;
}

/*
 * Eviction, for an evicting store (a cache). Workers KV has no size bound, but
 * a cache must have one: it deletes the entries that expire soonest (those
 * without an expiry last) until the store's pages are down to a target. With
 * one TTL per route, soonest to expire is oldest written, and it needs no
 * write on a read (LRU would turn every hit into a write transaction). Two
 * passes over the store: collect (expiry, size) pairs and find the expiry
 * below which enough bytes go, then delete up to it. Each round deletes at
 * most EVICT_BATCH entries in one transaction, so the dirty pages stay bounded.
 */
#define EVICT_BATCH 20000
#define EVICT_REPORT_MS 60000

typedef struct evict_item {
    int64_t exp; /* INT64_MAX: never expires */
    uint64_t size;
} evict_item_t;

static int cmp_evict(const void *a, const void *b)
{
    const evict_item_t *x = a, *y = b;
    return (x->exp > y->exp) - (x->exp < y->exp);
}

static uint64_t entry_size(const MDB_val *k, const MDB_val *v)
{
    return k->mv_size + v->mv_size + 16; /* the node header */
}

/* Deletes the entry under cur (db 1: a long key, with its index entry). */
static int evict_del(kv_env_t *e, MDB_txn *txn, MDB_cursor *cur, int db, const MDB_val *v)
{
    rec_t r;
    if (db == 1 && rec_decode(v, &r) == 0 && r.keylen > e->maxkey) {
        int rc = del_longidx(e, txn, r.key, r.keylen);
        if (rc < 0)
            return rc;
    }
    return ag__lmdb_err(mdb_cursor_del(cur, 0));
}

/* One round: frees about `want` bytes. @return bytes freed, or a negative error. */
static int64_t evict_round(kv_env_t *e, int64_t now, uint64_t want)
{
    MDB_txn *txn;
    MDB_cursor *cur = NULL;
    evict_item_t *items = NULL;
    size_t n = 0, cap = 0;
    uint64_t freed = 0;
    int rc = txn_begin(e, 0, &txn);
    if (rc < 0)
        return rc;
    /* Pass 1: what is there, by expiry. */
    for (int db = 0; db < 2; db++) {
        rc = ag__lmdb_err(mdb_cursor_open(txn, db ? e->lng : e->main, &cur));
        if (rc < 0)
            goto abort;
        MDB_val k, v;
        int mrc;
        for (mrc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); mrc == 0;
             mrc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
            rec_t r;
            if (n == cap) {
                size_t ncap = cap ? cap * 2 : 1024;
                evict_item_t *grown = realloc(items, ncap * sizeof(*items));
                if (!grown) {
                    rc = -ENOMEM;
                    goto abort;
                }
                items = grown;
                cap = ncap;
            }
            int64_t exp = rec_decode(&v, &r) < 0 ? INT64_MIN /* unreadable: first */
                          : r.expiration_ms == 0 ? INT64_MAX
                          : rec_expired(&r, now) ? INT64_MIN
                                                 : r.expiration_ms;
            items[n++] = (evict_item_t){exp, entry_size(&k, &v)};
        }
        mdb_cursor_close(cur);
        cur = NULL;
        if (mrc != MDB_NOTFOUND) {
            rc = ag__lmdb_err(mrc);
            goto abort;
        }
    }
    if (n == 0) {
        mdb_txn_abort(txn);
        free(items);
        return 0;
    }
    qsort(items, n, sizeof(*items), cmp_evict);
    /* The expiry up to which the round deletes: enough bytes, or the batch. */
    uint64_t sum = 0;
    size_t last = 0;
    while (last < n && last < EVICT_BATCH - 1 && (sum < want || items[last].exp == INT64_MIN))
        sum += items[last++].size;
    int64_t upto = items[last ? last - 1 : 0].exp;
    size_t budget = last ? last : 1;
    free(items);
    items = NULL;
    /* Pass 2: delete up to it. */
    for (int db = 0; db < 2 && budget > 0; db++) {
        rc = ag__lmdb_err(mdb_cursor_open(txn, db ? e->lng : e->main, &cur));
        if (rc < 0)
            goto abort;
        MDB_val k, v;
        int mrc;
        for (mrc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); mrc == 0 && budget > 0;
             mrc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
            rec_t r;
            int64_t exp = rec_decode(&v, &r) < 0 ? INT64_MIN
                          : r.expiration_ms == 0 ? INT64_MAX
                          : rec_expired(&r, now) ? INT64_MIN
                                                 : r.expiration_ms;
            if (exp > upto)
                continue;
            uint64_t size = entry_size(&k, &v);
            rc = evict_del(e, txn, cur, db, &v);
            if (rc < 0)
                goto abort;
            freed += size;
            budget--;
        }
        mdb_cursor_close(cur);
        cur = NULL;
        if (mrc != 0 && mrc != MDB_NOTFOUND) {
            rc = ag__lmdb_err(mrc);
            goto abort;
        }
    }
    rc = txn_commit(txn);
    return rc < 0 ? rc : (int64_t)freed;
abort:
    free(items);
    if (cur)
        mdb_cursor_close(cur);
    mdb_txn_abort(txn);
    return rc;
}

/* Evicts until the live pages are under `target` bytes, or nothing is left to
 * delete; at most a few rounds. The caller holds evict_lock and resize_lock
 * (shared). */
static int evict_to(kv_env_t *e, int64_t now, uint64_t target, uint64_t at_least)
{
    for (int round = 0; round < 8; round++) {
        MDB_txn *txn;
        int rc = txn_begin(e, MDB_RDONLY, &txn);
        if (rc < 0)
            return rc;
        uint64_t live = live_bytes(e, txn);
        mdb_txn_abort(txn);
        if (live <= target && at_least == 0)
            return 0;
        uint64_t want = live > target ? live - target : 0;
        if (want < at_least)
            want = at_least;
        int64_t freed = evict_round(e, now, want);
        if (freed <= 0)
            return (int)freed;
        at_least = (uint64_t)freed >= at_least ? 0 : at_least - (uint64_t)freed;
    }
    return 0;
}

/* A put the store could not take even after evicting: dropped (a cache entry
 * is only a miss later), and said at most once a minute, with the count. */
static void report_dropped(kv_env_t *e, int64_t now, size_t bytes, int why)
{
    pthread_mutex_lock(&e->evict_lock);
    e->dropped++;
    if (now - e->last_report_ms >= EVICT_REPORT_MS) {
        ag_log_warn("cache store %s is full (%s): dropped %llu entr%s since the last report "
                    "(this one %zu bytes; the bound is %zu bytes: cache_max_bytes)",
                    e->dir, ag_strerror(why), (unsigned long long)e->dropped,
                    e->dropped == 1 ? "y" : "ies", bytes, e->max_bytes);
        e->dropped = 0;
        e->last_report_ms = now;
    }
    pthread_mutex_unlock(&e->evict_lock);
}

static int lmdb_put(ag_kv_t *kv, const void *key, size_t keylen, const void *val, size_t vallen,
                    int64_t expiration_ms, const char *metadata, size_t metadata_len)
{
    kv_lmdb_t *h = (kv_lmdb_t *)kv;
    kv_env_t *e = h->e;
    bool over = false;
    int rc = put_once(e, key, keylen, val, vallen, expiration_ms, metadata, metadata_len, &over);
    if (!e->max_bytes)
        return rc;
    int64_t now = kv->now_ms(kv->clock_ctx);
    if (rc == 0 && over && pthread_mutex_trylock(&e->evict_lock) == 0) {
        /* Past 7/8 of the bound: down to 3/4, so that freed pages are there to
         * reuse before the map fills (LMDB reuses them a commit or two later). */
        ag_brlock_rdlock(&e->resize_lock);
        evict_to(e, now, e->max_bytes / 4 * 3, 0);
        ag_brlock_rdunlock(&e->resize_lock);
        pthread_mutex_unlock(&e->evict_lock);
        return 0;
    }
    for (int tries = 0; tries < 3 && (rc == AG_KV_EMAP_FULL || rc == AG_KV_EDISK_FULL); tries++) {
        /* Full before the mark (fragmented free pages, a value larger than the
         * slack): evict at least an eighth more and try again. */
        pthread_mutex_lock(&e->evict_lock);
        ag_brlock_rdlock(&e->resize_lock);
        int erc = evict_to(e, now, e->max_bytes / 4 * 3,
                           e->max_bytes / 8 + REC_HDR + keylen + metadata_len + vallen);
        ag_brlock_rdunlock(&e->resize_lock);
        pthread_mutex_unlock(&e->evict_lock);
        if (erc < 0)
            break;
        rc = put_once(e, key, keylen, val, vallen, expiration_ms, metadata, metadata_len, &over);
    }
    if (rc == AG_KV_EMAP_FULL || rc == AG_KV_EDISK_FULL) {
        report_dropped(e, now, REC_HDR + keylen + metadata_len + vallen, rc);
        return AG_KV_DROPPED;
    }
    return rc;
}

static int lmdb_stat(ag_kv_t *kv, ag_kv_stat_t *st)
{
    kv_lmdb_t *h = (kv_lmdb_t *)kv;
    kv_env_t *e = h->e;
    MDB_txn *txn;
    MDB_stat ms;
    MDB_envinfo info;
    ag_brlock_rdlock(&e->resize_lock);
    int rc = txn_begin(e, MDB_RDONLY, &txn);
    if (rc < 0)
        goto out;
    rc = ag__lmdb_err(mdb_stat(txn, e->main, &ms));
    if (rc == 0) {
        st->entries = ms.ms_entries;
        rc = ag__lmdb_err(mdb_stat(txn, e->lng, &ms));
        st->entries += ms.ms_entries;
    }
    if (rc == 0)
        rc = ag__lmdb_err(mdb_env_info(e->env, &info));
    if (rc == 0) {
        st->map_size = info.me_mapsize;
        st->used_bytes = (uint64_t)(info.me_last_pgno + 1) * ms.ms_psize;
    }
    mdb_txn_abort(txn);
out:
    ag_brlock_rdunlock(&e->resize_lock);
    return rc;
}

static void env_release(kv_env_t *e)
{
    pthread_mutex_lock(&envs_lock);
    if (--e->refs > 0) {
        pthread_mutex_unlock(&envs_lock);
        return;
    }
    for (kv_env_t **pp = &envs; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == e) {
            *pp = e->next;
            break;
        }
    }
    pthread_mutex_unlock(&envs_lock);
    for (unsigned i = 0; i < AG_BRLOCK_SLOTS; i++) {
        MDB_txn *t = atomic_exchange(&e->spare[i].txn, NULL);
        if (t)
            mdb_txn_abort(t);
    }
    mdb_env_close(e->env);
    ag_brlock_destroy(&e->resize_lock);
    pthread_mutex_destroy(&e->evict_lock);
    free(e->dir);
    free(e);
}

static void lmdb_close(ag_kv_t *kv)
{
    kv_lmdb_t *h = (kv_lmdb_t *)kv;
    env_release(h->e);
    pthread_mutex_destroy(&h->sweep_lock);
    free(h);
}

static const ag_kv_ops_t lmdb_ops = {
    .name = "lmdb",
    .get = lmdb_get,
    .put = lmdb_put,
    .del = lmdb_del,
    .list = lmdb_list,
    .sweep = lmdb_sweep,
    .stat = lmdb_stat,
    .close = lmdb_close,
};

/* Creates the environment of dir; the caller holds envs_lock. */
static int env_create(const char *dir, size_t map_size, bool no_sync, kv_env_t **out)
{
    kv_env_t *e = calloc(1, sizeof(*e));
    if (e == NULL)
        return -ENOMEM;
    MDB_txn *txn = NULL;
    /* MDB_NOTLS: read transactions are not tied to a thread, since the server
     * may begin and end them on different event-loop threads. */
    int rc = ag__lmdb_open(dir, 4, map_size, MDB_NOTLS | (no_sync ? MDB_NOSYNC : 0), 0, &e->env);
    if (rc < 0) {
        free(e);
        return rc;
    }
    MDB_stat est;
    rc = ag__lmdb_err(mdb_env_stat(e->env, &est));
    if (rc < 0)
        goto fail;
    e->psize = est.ms_psize;
    e->maxkey = (size_t)mdb_env_get_maxkeysize(e->env);
    if (e->maxkey > AG_KV_MAX_KEY_LEN)
        e->maxkey = AG_KV_MAX_KEY_LEN;
    rc = ag__lmdb_err(mdb_txn_begin(e->env, NULL, 0, &txn));
    if (rc < 0)
        goto fail;
    rc = ag__lmdb_err(mdb_dbi_open(txn, "main", MDB_CREATE, &e->main));
    if (rc == 0)
        rc = ag__lmdb_err(mdb_dbi_open(txn, "long", MDB_CREATE, &e->lng));
    if (rc == 0)
        rc = ag__lmdb_err(mdb_dbi_open(txn, "longidx", MDB_CREATE | MDB_DUPSORT, &e->longidx));
    if (rc < 0) {
        mdb_txn_abort(txn);
        goto fail;
    }
    rc = txn_commit(txn);
    if (rc < 0)
        goto fail;
    if (ag_brlock_init(&e->resize_lock) != 0) {
        rc = -ENOMEM;
        goto fail;
    }
    pthread_mutex_init(&e->evict_lock, NULL);
    e->dir = strdup(dir);
    if (!e->dir) {
        ag_brlock_destroy(&e->resize_lock);
        pthread_mutex_destroy(&e->evict_lock);
        rc = -ENOMEM;
        goto fail;
    }
    *out = e;
    return 0;
fail:
    mdb_env_close(e->env);
    free(e);
    return rc;
}

int ag_kv_open_lmdb(const char *dir, const ag_kv_options_t *opts, ag_kv_t **out)
{
    *out = NULL;
    if (dir == NULL)
        return AG_EINVALID;
    size_t max_bytes = opts ? opts->lmdb.max_bytes : 0;
    size_t map_size = max_bytes                     ? max_bytes
                      : opts && opts->lmdb.map_size ? opts->lmdb.map_size
                                                    : AG_KV_DEFAULT_MAP_SIZE;
    int rc = ag_fs_mkdir_p(dir, 0700);
    if (rc < 0)
        return rc;
    struct stat st;
    if (stat(dir, &st) < 0)
        return -errno;

    kv_lmdb_t *h = calloc(1, sizeof(*h));
    if (h == NULL)
        return -ENOMEM;
    if (pthread_mutex_init(&h->sweep_lock, NULL) != 0) {
        free(h);
        return -ENOMEM;
    }
    ag__kv_init(&h->base, &lmdb_ops, opts);

    pid_t pid = getpid();
    pthread_mutex_lock(&envs_lock);
    kv_env_t *e = envs;
    while (e != NULL && !(e->dev == st.st_dev && e->ino == st.st_ino && e->pid == pid))
        e = e->next;
    if (e != NULL) {
        e->refs++;
    } else {
        rc = env_create(dir, map_size, opts && opts->lmdb.no_sync, &e);
        if (rc == 0) {
            e->dev = st.st_dev;
            e->ino = st.st_ino;
            e->pid = pid;
            e->refs = 1;
            e->max_bytes = max_bytes;
            e->next = envs;
            envs = e;
        }
    }
    pthread_mutex_unlock(&envs_lock);
    if (rc < 0) {
        pthread_mutex_destroy(&h->sweep_lock);
        free(h);
        return rc;
    }
    h->e = e;
    *out = &h->base;
    return 0;
}
