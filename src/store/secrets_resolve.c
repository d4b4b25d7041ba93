/* SPDX-License-Identifier: MIT
 *
 * secrets_resolve.c: a secret's value from the environment, the secrets file
 * or .dev.vars (dotenv syntax), in that order.
 */
#include "util/platform.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store/secrets.h"
#include "store/secrets_resolve.h"
#include "util/buf.h"
#include "util/errors.h"

static int read_small_file(const char *path, ag_buf_t *out)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return -errno;
    char chunk[4096];
    size_t n;
    int rc = 0;
    while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0 && rc == 0)
        rc = ag_buf_append(out, chunk, n);
    if (rc == 0 && ferror(f))
        rc = -EIO;
    explicit_bzero(chunk, sizeof(chunk));
    fclose(f);
    return rc;
}

/* Finds NAME in a dotenv file (wrangler's .dev.vars): NAME=value lines, an
 * optional `export `, quotes, and # comments. Returns a malloc'd value or NULL. */
static char *dotenv_lookup(const char *path, const char *name)
{
    ag_buf_t text;
    ag_buf_init(&text, 1u << 20);
    if (read_small_file(path, &text) < 0 || !ag_buf_cstr(&text)) {
        if (text.data)
            explicit_bzero(text.data, text.cap);
        ag_buf_fini(&text);
        return NULL;
    }
    char *found = NULL;
    size_t nlen = strlen(name);
    char *line = text.data;
    while (line && *line) {
        char *eol = strchr(line, '\n');
        if (eol)
            *eol = '\0';
        char *p = line;
        while (*p == ' ' || *p == '\t')
            p++;
        if (strncmp(p, "export ", 7) == 0)
            p += 7;
        if (strncmp(p, name, nlen) == 0) {
            char *q = p + nlen;
            while (*q == ' ' || *q == '\t')
                q++;
            if (*q == '=') {
                q++;
                while (*q == ' ' || *q == '\t')
                    q++;
                size_t vlen = strlen(q);
                while (vlen && (q[vlen - 1] == '\r' || q[vlen - 1] == ' ' || q[vlen - 1] == '\t'))
                    vlen--;
                if (vlen >= 2 && (q[0] == '"' || q[0] == '\'') && q[vlen - 1] == q[0]) {
                    q++;
                    vlen -= 2;
                } else {
                    char *hash = memchr(q, '#', vlen);
                    if (hash) {
                        vlen = (size_t)(hash - q);
                        while (vlen && (q[vlen - 1] == ' ' || q[vlen - 1] == '\t'))
                            vlen--;
                    }
                }
                ag_secrets_value_free(found);
                found = strndup(q, vlen);
            }
        }
        line = eol ? eol + 1 : NULL;
    }
    explicit_bzero(text.data, text.cap);
    ag_buf_fini(&text);
    return found;
}

/* The first control byte of v (a CR or LF would end a header line early and
 * inject the rest), or -1. */
static long control_at(const char *v)
{
    for (const unsigned char *p = (const unsigned char *)v; *p; p++) {
        if (*p < 0x20 || *p == 0x7f)
            return (long)(p - (const unsigned char *)v);
    }
    return -1;
}

int ag_secrets_resolve(const char *data_dir, const char *name, char **value)
{
    *value = NULL;
    const char *env = getenv(name);
    const char *from = "the environment";
    char *v = env && *env ? strdup(env) : NULL;
    if (!v) {
        from = "the secrets file";
        int rc = ag_secrets_get(data_dir, name, &v);
        if (rc < 0 && rc != AG_ENOTFOUND)
            fprintf(stderr, "aigate: cannot read the secrets file in %s: %s\n",
                    data_dir ? data_dir : "./.aigate", ag_strerror(rc));
    }
    if (!v) {
        from = ".dev.vars";
        v = dotenv_lookup(".dev.vars", name);
    }
    if (v && !*v) {
        ag_secrets_value_free(v);
        v = NULL;
    }
    long bad = v ? control_at(v) : -1;
    if (bad >= 0) {
        /* Where and what, never the value. */
        fprintf(stderr,
                "aigate: refusing the secret %s from %s: byte %ld is a control byte (0x%02x; CR, "
                "LF and NUL are not allowed in a key or token). Set it again without it "
                "(`aigate secret put %s` trims one trailing newline)\n",
                name, from, bad + 1, (unsigned char)v[bad], name);
        ag_secrets_value_free(v);
        return AG_SECRETS_ECONTROL;
    }
    *value = v;
    return v ? 0 : AG_ENOTFOUND;
}
