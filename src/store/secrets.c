/* SPDX-License-Identifier: MIT
 *
 * secrets.c: the secret store file (see secrets.h): its dotenv-like format,
 * atomic rewrite under an flock of the data folder, and zeroing of every
 * buffer that held a value.
 *
 * Format: `# ...` comment lines and `NAME="value"` lines. Inside the quotes
 * \\ \" \n \r \t and \xHH stand for bytes; every other byte but NUL and
 * newline is itself. This is the double-quoted form of .dev.vars, so the file
 * stays readable, and newlines and control bytes round-trip.
 */
#include "util/platform.h"

#include "store/secrets.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdint.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include "util/fs.h"
#include "util/hex.h"

/* A file this large cannot come from AG_SECRETS_MAX_COUNT escaped values. */
#define MAX_FILE_BYTES                                                                             \
    ((size_t)AG_SECRETS_MAX_COUNT * (AG_SECRETS_MAX_NAME_LEN + 4 * AG_SECRETS_MAX_VALUE_LEN + 4) + \
     4096)

static const char file_header[] =
    "# aigate secrets: written by `aigate secret put`; keep this file mode 0600.\n"
    "# NAME=\"value\", with \\\\ \\\" \\n \\r \\t \\xHH escapes inside the quotes.\n";

static bool name_valid_n(const char *s, size_t n)
{
    if (n < 1 || n > AG_SECRETS_MAX_NAME_LEN)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' ||
                  (i > 0 && c >= '0' && c <= '9');
        if (!ok)
            return false;
    }
    return true;
}

bool ag_secrets_name_valid(const char *name)
{
    return name != NULL && name_valid_n(name, strnlen(name, AG_SECRETS_MAX_NAME_LEN + 1));
}

int ag_secrets_path(const char *data_dir, char *buf, size_t cap)
{
    if (data_dir == NULL)
        data_dir = AG_STORE_DEFAULT_DATA_DIR;
    int n = snprintf(buf, cap, "%s/%s", data_dir, AG_SECRETS_FILE);
    if (n < 0 || (size_t)n >= cap)
        return -ENAMETOOLONG;
    return 0;
}

void ag_secrets_value_free(char *value)
{
    if (value == NULL)
        return;
    explicit_bzero(value, strlen(value));
    free(value);
}

/* Zeroes then frees a buffer of known size that held secret bytes. */
static void wipe_free(void *p, size_t n)
{
    if (p == NULL)
        return;
    explicit_bzero(p, n);
    free(p);
}

/* ---- the in-memory set ----------------------------------------------------------------- */

typedef struct entry {
    char *name;
    char *value; /* NUL-terminated; vlen bytes without NUL */
    size_t vlen;
} entry_t;

typedef struct set {
    entry_t *v;
    size_t n, cap;
} set_t;

static void set_fini(set_t *s)
{
    for (size_t i = 0; i < s->n; i++) {
        free(s->v[i].name);
        wipe_free(s->v[i].value, s->v[i].vlen);
    }
    free(s->v);
    *s = (set_t){0};
}

static entry_t *set_find(set_t *s, const char *name)
{
    for (size_t i = 0; i < s->n; i++) {
        if (strcmp(s->v[i].name, name) == 0)
            return &s->v[i];
    }
    return NULL;
}

/* Adds or replaces `name`, taking ownership of `value` (freed on failure). */
static int set_put(set_t *s, const char *name, size_t nlen, char *value, size_t vlen)
{
    for (size_t i = 0; i < s->n; i++) {
        if (strlen(s->v[i].name) == nlen && memcmp(s->v[i].name, name, nlen) == 0) {
            wipe_free(s->v[i].value, s->v[i].vlen);
            s->v[i].value = value;
            s->v[i].vlen = vlen;
            return 0;
        }
    }
    if (s->n >= AG_SECRETS_MAX_COUNT) {
        wipe_free(value, vlen);
        return AG_SECRETS_ETOO_MANY;
    }
    if (s->n == s->cap) {
        size_t ncap = s->cap ? s->cap * 2 : 8;
        entry_t *nv = realloc(s->v, ncap * sizeof(*nv));
        if (nv == NULL) {
            wipe_free(value, vlen);
            return -ENOMEM;
        }
        s->v = nv;
        s->cap = ncap;
    }
    char *copy = strndup(name, nlen);
    if (copy == NULL) {
        wipe_free(value, vlen);
        return -ENOMEM;
    }
    s->v[s->n++] = (entry_t){copy, value, vlen};
    return 0;
}

/* ---- parse and serialise --------------------------------------------------------------- */

/* Decodes the quoted value of one line, [p, end) just after the opening quote,
 * into a malloc'd buffer. */
static int parse_value(const char *p, const char *end, char **out, size_t *outlen)
{
    /* Decoding never grows the text, so the line's length bounds the value. */
    size_t cap = (size_t)(end - p) + 1;
    char *v = malloc(cap);
    if (v == NULL)
        return -ENOMEM;
    size_t n = 0;
    int rc = AG_SECRETS_ECORRUPT;
    while (p < end && *p != '"') {
        unsigned char c = (unsigned char)*p++;
        if (c == '\\') {
            if (p == end)
                goto fail;
            char e = *p++;
            if (e == 'n') {
                c = '\n';
            } else if (e == 'r') {
                c = '\r';
            } else if (e == 't') {
                c = '\t';
            } else if (e == '\\' || e == '"') {
                c = (unsigned char)e;
            } else if (e == 'x') {
                if (end - p < 2 || ag_hex_decode(p, 2, &c, 1) != 1)
                    goto fail;
                p += 2;
            } else {
                goto fail;
            }
        }
        if (c == '\0')
            goto fail;
        v[n++] = (char)c;
    }
    /* The closing quote must end the line; an empty value is never written. */
    if (p == end || p + 1 != end || n == 0 || n > AG_SECRETS_MAX_VALUE_LEN)
        goto fail;
    v[n] = '\0';
    *out = v;
    *outlen = n;
    return 0;
fail:
    wipe_free(v, cap);
    return rc;
}

static int parse(const char *text, size_t len, set_t *s)
{
    const char *p = text, *end = text + len;
    while (p < end) {
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        const char *line_end = eol ? eol : end;
        if (line_end > p && line_end[-1] == '\r')
            line_end--; /* tolerate a file edited on Windows */
        if (line_end == p || *p == '#') {
            p = eol ? eol + 1 : end;
            continue;
        }
        const char *eq = memchr(p, '=', (size_t)(line_end - p));
        if (eq == NULL || !name_valid_n(p, (size_t)(eq - p)) || eq + 1 == line_end || eq[1] != '"')
            return AG_SECRETS_ECORRUPT;
        char *value;
        size_t vlen;
        int rc = parse_value(eq + 2, line_end, &value, &vlen);
        if (rc < 0)
            return rc;
        rc = set_put(s, p, (size_t)(eq - p), value, vlen);
        if (rc < 0)
            return rc;
        p = eol ? eol + 1 : end;
    }
    return 0;
}

static size_t escaped_len(const char *v, size_t n)
{
    size_t out = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)v[i];
        if (c == '\\' || c == '"' || c == '\n' || c == '\r' || c == '\t')
            out += 2;
        else if (c < 0x20 || c == 0x7f)
            out += 4;
        else
            out += 1;
    }
    return out;
}

/* Serialises the set, sorted by name, into one malloc'd buffer. */
static int serialise(set_t *s, char **out, size_t *outlen)
{
    size_t total = sizeof(file_header) - 1;
    for (size_t i = 0; i < s->n; i++)
        total += strlen(s->v[i].name) + 4 + escaped_len(s->v[i].value, s->v[i].vlen);
    char *buf = malloc(total + 1);
    if (buf == NULL)
        return -ENOMEM;
    memcpy(buf, file_header, sizeof(file_header) - 1);
    size_t o = sizeof(file_header) - 1;
    for (size_t i = 0; i < s->n; i++) {
        size_t nl = strlen(s->v[i].name);
        memcpy(buf + o, s->v[i].name, nl);
        o += nl;
        buf[o++] = '=';
        buf[o++] = '"';
        for (size_t j = 0; j < s->v[i].vlen; j++) {
            unsigned char c = (unsigned char)s->v[i].value[j];
            char e = 0;
            if (c == '\\' || c == '"')
                e = (char)c;
            else if (c == '\n')
                e = 'n';
            else if (c == '\r')
                e = 'r';
            else if (c == '\t')
                e = 't';
            if (e) {
                buf[o++] = '\\';
                buf[o++] = e;
            } else if (c < 0x20 || c == 0x7f) {
                char hex[3];
                ag_hex_encode(&c, 1, hex);
                buf[o++] = '\\';
                buf[o++] = 'x';
                buf[o++] = hex[0];
                buf[o++] = hex[1];
            } else {
                buf[o++] = (char)c;
            }
        }
        buf[o++] = '"';
        buf[o++] = '\n';
    }
    AG_ASSERT(o == total);
    buf[o] = '\0';
    *out = buf;
    *outlen = total;
    return 0;
}

static int cmp_entry(const void *a, const void *b)
{
    return strcmp(((const entry_t *)a)->name, ((const entry_t *)b)->name);
}

/* ---- files ----------------------------------------------------------------------------- */

/* Loads the file into *s; a missing file (or data folder) is an empty set. */
static int load(const char *data_dir, set_t *s)
{
    char path[PATH_MAX];
    int rc = ag_secrets_path(data_dir, path, sizeof(path));
    if (rc < 0)
        return rc;
    /* O_NOFOLLOW: a symlink planted in the data folder must not redirect us. */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return errno == ENOENT ? 0 : errno == ELOOP ? AG_SECRETS_ENOT_PRIVATE : -errno;
    struct stat st;
    if (fstat(fd, &st) < 0) {
        rc = -errno;
        close(fd);
        return rc;
    }
    if (!S_ISREG(st.st_mode) || (st.st_uid != geteuid() && st.st_uid != 0)) {
        close(fd);
        return AG_SECRETS_ENOT_PRIVATE;
    }
    if ((uint64_t)st.st_size > MAX_FILE_BYTES) {
        close(fd);
        return AG_SECRETS_ECORRUPT;
    }
    size_t cap = (size_t)st.st_size + 1;
    char *text = malloc(cap);
    if (text == NULL) {
        close(fd);
        return -ENOMEM;
    }
    /* The fd pins the inode, so a concurrent rename cannot mix two versions.
     * Read into this exact buffer, not a growing one: every copy of the text
     * must be wiped, and a realloc would leave one behind. */
    ssize_t got = ag_fs_pread_all(fd, text, cap - 1, 0);
    close(fd);
    size_t len = got > 0 ? (size_t)got : 0;
    if (got < 0)
        rc = (int)got;
    if (rc == 0 && memchr(text, '\0', len) != NULL)
        rc = AG_SECRETS_ECORRUPT;
    if (rc == 0)
        rc = parse(text, len, s);
    wipe_free(text, cap);
    if (rc < 0)
        set_fini(s);
    return rc;
}

/* Replaces the file with `text`: temp file (0600) in the same folder, fsync,
 * rename, fsync of the folder, so a crash leaves the old file or the new one. */
static int write_atomic(const char *dir, int dirfd, const char *text, size_t len)
{
    char tmp[PATH_MAX], path[PATH_MAX];
    int n = snprintf(tmp, sizeof(tmp), "%s/.%s.XXXXXX", dir, AG_SECRETS_FILE);
    if (n < 0 || (size_t)n >= sizeof(tmp) || ag_secrets_path(dir, path, sizeof(path)) < 0)
        return -ENAMETOOLONG;
    int fd = mkostemp(tmp, O_CLOEXEC); /* creates with mode 0600 */
    if (fd < 0)
        return -errno;
    int rc = 0;
    if (fchmod(fd, 0600) < 0)
        rc = -errno;
    if (rc == 0)
        rc = ag_fs_write_all(fd, text, len);
    if (rc == 0 && fsync(fd) < 0)
        rc = -errno;
    if (close(fd) < 0 && rc == 0)
        rc = -errno;
    if (rc == 0 && rename(tmp, path) < 0)
        rc = -errno;
    if (rc < 0) {
        unlink(tmp);
        return rc;
    }
    /* Makes the rename itself durable. */
    if (fsync(dirfd) < 0)
        return -errno;
    return 0;
}

/* Opens and exclusively locks the data folder (creating it when `create`).
 * @return the locked fd, AG_ENOTFOUND when missing, or -errno. */
static int lock_dir(const char *dir, bool create)
{
    if (create) {
        int rc = ag_fs_mkdir_p(dir, 0700);
        if (rc < 0)
            return rc;
    }
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return errno == ENOENT ? AG_ENOTFOUND : -errno;
    while (flock(fd, LOCK_EX) < 0) {
        if (errno != EINTR) {
            int rc = -errno;
            close(fd);
            return rc;
        }
    }
    return fd;
}

/* Load, change, write back, under the folder lock. value NULL deletes. */
static int modify(const char *data_dir, const char *name, const void *value, size_t len)
{
    if (!ag_secrets_name_valid(name))
        return AG_SECRETS_ENAME;
    if (value != NULL) {
        if (len == 0 || memchr(value, '\0', len) != NULL)
            return AG_SECRETS_EVALUE;
        if (len > AG_SECRETS_MAX_VALUE_LEN)
            return AG_SECRETS_EVALUE_TOO_BIG;
    }
    if (data_dir == NULL)
        data_dir = AG_STORE_DEFAULT_DATA_DIR;
    int dfd = lock_dir(data_dir, value != NULL);
    if (dfd < 0)
        return dfd;
    set_t s = {0};
    char *text = NULL;
    size_t tlen = 0;
    int rc = load(data_dir, &s);
    if (rc < 0)
        goto out;
    if (value != NULL) {
        char *copy = malloc(len + 1);
        if (copy == NULL) {
            rc = -ENOMEM;
            goto out;
        }
        memcpy(copy, value, len);
        copy[len] = '\0';
        rc = set_put(&s, name, strlen(name), copy, len);
    } else {
        entry_t *e = set_find(&s, name);
        if (e == NULL) {
            rc = AG_ENOTFOUND;
        } else {
            free(e->name);
            wipe_free(e->value, e->vlen);
            *e = s.v[--s.n];
        }
    }
    if (rc < 0)
        goto out;
    if (s.n > 1)
        qsort(s.v, s.n, sizeof(*s.v), cmp_entry);
    rc = serialise(&s, &text, &tlen);
    if (rc == 0)
        rc = write_atomic(data_dir, dfd, text, tlen);
out:
    wipe_free(text, tlen);
    set_fini(&s);
    close(dfd); /* releases the lock */
    return rc;
}

int ag_secrets_put(const char *data_dir, const char *name, const void *value, size_t len)
{
    if (value == NULL)
        return AG_SECRETS_EVALUE;
    return modify(data_dir, name, value, len);
}

int ag_secrets_delete(const char *data_dir, const char *name)
{
    return modify(data_dir, name, NULL, 0);
}

int ag_secrets_get(const char *data_dir, const char *name, char **value_out)
{
    *value_out = NULL;
    if (!ag_secrets_name_valid(name))
        return AG_SECRETS_ENAME;
    set_t s = {0};
    int rc = load(data_dir, &s);
    if (rc < 0)
        return rc;
    entry_t *e = set_find(&s, name);
    if (e == NULL) {
        rc = AG_ENOTFOUND;
    } else {
        /* Hand over the buffer itself: one copy fewer to wipe. */
        *value_out = e->value;
        e->value = NULL;
        e->vlen = 0;
    }
    set_fini(&s);
    return rc;
}

static int cmp_cstr(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

int ag_secrets_list(const char *data_dir, char ***names, size_t *n)
{
    *names = NULL;
    *n = 0;
    set_t s = {0};
    int rc = load(data_dir, &s);
    if (rc < 0)
        return rc;
    char **v = NULL;
    if (s.n > 0) {
        v = calloc(s.n, sizeof(*v));
        if (v == NULL) {
            set_fini(&s);
            return -ENOMEM;
        }
        /* Move the names out; set_fini() then frees NULLs. */
        for (size_t i = 0; i < s.n; i++) {
            v[i] = s.v[i].name;
            s.v[i].name = NULL;
        }
        qsort(v, s.n, sizeof(*v), cmp_cstr);
    }
    *names = v;
    *n = s.n;
    set_fini(&s);
    return 0;
}

void ag_secrets_list_free(char **names, size_t n)
{
    if (names == NULL)
        return;
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
}
