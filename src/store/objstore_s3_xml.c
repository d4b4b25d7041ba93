/* SPDX-License-Identifier: MIT
 *
 * objstore_s3_xml.c: the two XML documents the S3 backend reads: a
 * ListObjectsV2 page and an <Error>. A strict walk of a small XML subset
 * (prolog, elements, attributes, text, the five entities and character
 * references; no DTD, comments, CDATA or processing instructions past the
 * prolog), bounded in depth; fuzzed by fuzz_s3_list.
 */
#include "util/platform.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "store/objstore.h"
#include "util/buf.h"
#include "util/errors.h"
#include "util/utf.h"

#define XML_MAX_DEPTH 8
#define XML_MAX_NAME 64

typedef struct xml_walk {
    const char *p, *end;
    int depth;
    char names[XML_MAX_DEPTH][XML_MAX_NAME];
    ag_buf_t text; /* decoded text of the innermost open element */
    bool had_child[XML_MAX_DEPTH];
    /* called when an element ends: names[0..depth) is its path, text its text
     * when it had no child element */
    int (*end_cb)(void *ctx, struct xml_walk *w, const char *text, size_t len);
    void *ctx;
} xml_walk_t;

static bool name_char(char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '-' || c == '.' || c == ':';
}

static bool is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

static void skip_space(xml_walk_t *w)
{
    while (w->p < w->end && is_space(*w->p))
        w->p++;
}

static int append_utf8(ag_buf_t *b, uint32_t cp)
{
    char u[4];
    size_t n;
    if (cp == 0 || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
        return AG_EPROTO;
    if (cp < 0x80) {
        u[0] = (char)cp;
        n = 1;
    } else if (cp < 0x800) {
        u[0] = (char)(0xC0 | (cp >> 6));
        u[1] = (char)(0x80 | (cp & 0x3F));
        n = 2;
    } else if (cp < 0x10000) {
        u[0] = (char)(0xE0 | (cp >> 12));
        u[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        u[2] = (char)(0x80 | (cp & 0x3F));
        n = 3;
    } else {
        u[0] = (char)(0xF0 | (cp >> 18));
        u[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
        u[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
        u[3] = (char)(0x80 | (cp & 0x3F));
        n = 4;
    }
    return ag_buf_append(b, u, n) < 0 ? -ENOMEM : 0;
}

/* An entity or character reference at w->p ('&'), decoded into b. */
static int entity(xml_walk_t *w, ag_buf_t *b)
{
    const char *semi =
        memchr(w->p, ';', (size_t)(w->end - w->p) < 12 ? (size_t)(w->end - w->p) : 12);
    if (semi == NULL)
        return AG_EPROTO;
    const char *e = w->p + 1;
    size_t n = (size_t)(semi - e);
    static const struct {
        const char *name;
        char c;
    } named[] = {{"amp", '&'}, {"lt", '<'}, {"gt", '>'}, {"quot", '"'}, {"apos", '\''}};
    w->p = semi + 1;
    for (size_t i = 0; i < sizeof(named) / sizeof(named[0]); i++) {
        if (strlen(named[i].name) == n && memcmp(named[i].name, e, n) == 0)
            return ag_buf_append(b, &named[i].c, 1) < 0 ? -ENOMEM : 0;
    }
    if (n < 2 || e[0] != '#')
        return AG_EPROTO;
    bool hex = e[1] == 'x';
    size_t i = hex ? 2 : 1;
    if (i >= n)
        return AG_EPROTO;
    uint32_t cp = 0;
    for (; i < n; i++) {
        char c = e[i];
        int d = c >= '0' && c <= '9'          ? c - '0'
                : hex && c >= 'a' && c <= 'f' ? c - 'a' + 10
                : hex && c >= 'A' && c <= 'F' ? c - 'A' + 10
                                              : -1;
        if (d < 0)
            return AG_EPROTO;
        cp = cp * (hex ? 16 : 10) + (uint32_t)d;
        if (cp > 0x10FFFF)
            return AG_EPROTO;
    }
    return append_utf8(b, cp);
}

static int read_name(xml_walk_t *w, char out[XML_MAX_NAME])
{
    size_t n = 0;
    while (w->p < w->end && name_char(*w->p)) {
        if (n + 1 >= XML_MAX_NAME)
            return AG_EPROTO;
        out[n++] = *w->p++;
    }
    out[n] = '\0';
    return n == 0 ? AG_EPROTO : 0;
}

/* Attributes of a start tag: name="value" or name='value', checked, dropped. */
static int skip_attrs(xml_walk_t *w)
{
    ag_buf_t scratch;
    ag_buf_init(&scratch, 4096);
    int rc = 0;
    for (;;) {
        bool spaced = w->p < w->end && is_space(*w->p);
        skip_space(w);
        if (w->p >= w->end) {
            rc = AG_EPROTO;
            break;
        }
        if (*w->p == '>' || *w->p == '/')
            break;
        char name[XML_MAX_NAME];
        if (!spaced || read_name(w, name) < 0) {
            rc = AG_EPROTO;
            break;
        }
        skip_space(w);
        if (w->p >= w->end || *w->p != '=') {
            rc = AG_EPROTO;
            break;
        }
        w->p++;
        skip_space(w);
        if (w->p >= w->end || (*w->p != '"' && *w->p != '\'')) {
            rc = AG_EPROTO;
            break;
        }
        char q = *w->p++;
        while (rc == 0 && w->p < w->end && *w->p != q) {
            if (*w->p == '<')
                rc = AG_EPROTO;
            else if (*w->p == '&')
                rc = entity(w, &scratch);
            else
                w->p++;
        }
        if (rc < 0)
            break;
        if (w->p >= w->end) {
            rc = AG_EPROTO;
            break;
        }
        w->p++;
        ag_buf_reset(&scratch);
    }
    ag_buf_fini(&scratch);
    return rc;
}

static int xml_walk(xml_walk_t *w, const char *xml, size_t len)
{
    w->p = xml;
    w->end = xml + len;
    w->depth = 0;
    ag_buf_init(&w->text, 1u << 20);
    int rc = 0;
    bool root_done = false;
    if (!ag_utf8_valid(xml, len) || memchr(xml, '\0', len) != NULL)
        rc = AG_EPROTO;
    skip_space(w);
    if (rc == 0 && (size_t)(w->end - w->p) >= 5 && memcmp(w->p, "<?xml", 5) == 0) {
        const char *q = w->p + 5;
        while (q + 1 < w->end && !(q[0] == '?' && q[1] == '>'))
            q++;
        if (q + 1 >= w->end)
            rc = AG_EPROTO;
        else
            w->p = q + 2;
    }
    while (rc == 0) {
        if (w->depth == 0)
            skip_space(w);
        if (w->p >= w->end) {
            if (w->depth != 0 || !root_done)
                rc = AG_EPROTO;
            break;
        }
        char c = *w->p;
        if (c != '<') {
            if (w->depth == 0) {
                rc = AG_EPROTO;
                break;
            }
            if (c == '&')
                rc = entity(w, &w->text);
            else if (c == '>')
                rc = AG_EPROTO;
            else
                rc = ag_buf_append(&w->text, w->p++, 1) < 0 ? -ENOMEM : 0;
            continue;
        }
        w->p++;
        if (w->p < w->end && *w->p == '/') {
            /* an end tag: it must close the innermost element */
            w->p++;
            char name[XML_MAX_NAME];
            if (w->depth == 0 || read_name(w, name) < 0 ||
                strcmp(name, w->names[w->depth - 1]) != 0) {
                rc = AG_EPROTO;
                break;
            }
            skip_space(w);
            if (w->p >= w->end || *w->p != '>') {
                rc = AG_EPROTO;
                break;
            }
            w->p++;
            bool leaf = !w->had_child[w->depth - 1];
            if (!leaf) {
                /* between children only blanks */
                for (size_t i = 0; i < w->text.len; i++) {
                    if (!is_space(w->text.data[i]))
                        rc = AG_EPROTO;
                }
            }
            if (rc == 0)
                rc = w->end_cb(w->ctx, w, leaf ? (w->text.data ? w->text.data : "") : "",
                               leaf ? w->text.len : 0);
            ag_buf_reset(&w->text);
            w->depth--;
            if (w->depth == 0)
                root_done = true;
            continue;
        }
        /* a start tag */
        if (w->depth >= XML_MAX_DEPTH || (w->depth == 0 && root_done)) {
            rc = AG_EPROTO;
            break;
        }
        if (w->depth > 0) {
            for (size_t i = 0; i < w->text.len; i++) {
                if (!is_space(w->text.data[i]))
                    rc = AG_EPROTO; /* mixed content */
            }
            w->had_child[w->depth - 1] = true;
        }
        ag_buf_reset(&w->text);
        if (rc < 0 || read_name(w, w->names[w->depth]) < 0) {
            rc = AG_EPROTO;
            break;
        }
        rc = skip_attrs(w);
        if (rc < 0)
            break;
        w->had_child[w->depth] = false;
        w->depth++;
        if (*w->p == '/') {
            w->p++;
            if (w->p >= w->end || *w->p != '>') {
                rc = AG_EPROTO;
                break;
            }
            w->p++;
            rc = w->end_cb(w->ctx, w, "", 0);
            w->depth--;
            if (w->depth == 0)
                root_done = true;
            continue;
        }
        w->p++; /* '>' */
    }
    ag_buf_fini(&w->text);
    return rc;
}

/* ---- ListObjectsV2 ---------------------------------------------------------------------- */

typedef struct list_ctx {
    ag_obj_list_result_t *out;
    size_t cap_objects, cap_prefixes;
    ag_obj_info_t cur; /* the <Contents> being read */
    bool have_key, have_size;
    char **next;
    bool truncated_seen;
} list_ctx_t;

static bool key_ok(const char *s, size_t n)
{
    return n > 0 && n <= AG_OBJ_MAX_KEY_LEN && memchr(s, '\0', n) == NULL;
}

static char *dup_n(const char *s, size_t n)
{
    char *d = malloc(n + 1);
    if (d) {
        memcpy(d, s, n);
        d[n] = '\0';
    }
    return d;
}

/* "2026-12-02T08:01:02.123Z" (the milliseconds optional) as epoch ms. */
static int parse_iso_ms(const char *s, size_t n, int64_t *out)
{
    char tmp[40];
    if (n < 20 || n >= sizeof(tmp))
        return AG_EPROTO;
    memcpy(tmp, s, n);
    tmp[n] = '\0';
    int y, mo, d, h, mi, sec, used = 0;
    if (sscanf(tmp, "%4d-%2d-%2dT%2d:%2d:%2d%n", &y, &mo, &d, &h, &mi, &sec, &used) != 6 ||
        used != 19 || y < 1970 || mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 ||
        sec > 60 || h < 0 || mi < 0 || sec < 0)
        return AG_EPROTO;
    int64_t ms = 0;
    const char *p = tmp + 19;
    if (*p == '.') {
        p++;
        int digits = 0;
        while (*p >= '0' && *p <= '9') {
            if (digits < 3)
                ms = ms * 10 + (*p - '0');
            digits++;
            p++;
        }
        if (digits == 0 || digits > 9)
            return AG_EPROTO;
        for (; digits < 3; digits++)
            ms *= 10;
    }
    if (strcmp(p, "Z") != 0)
        return AG_EPROTO;
    struct tm tm = {.tm_year = y - 1900,
                    .tm_mon = mo - 1,
                    .tm_mday = d,
                    .tm_hour = h,
                    .tm_min = mi,
                    .tm_sec = sec};
    time_t t = timegm(&tm);
    *out = (int64_t)t * 1000 + ms;
    return 0;
}

/* An ETag as S3 gives it ("\"hex\"", or hex-N for multipart) into etag[33]. */
void ag__objstore_s3_etag(char etag[33], const char *s, size_t n)
{
    size_t j = 0;
    for (size_t i = 0; i < n && j < 32; i++) {
        char c = s[i];
        if (c >= 'A' && c <= 'F')
            c = (char)(c + 32);
        if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))
            etag[j++] = c;
        else if (c != '"')
            break;
    }
    etag[j] = '\0';
}

static int list_end(void *vctx, xml_walk_t *w, const char *text, size_t len)
{
    list_ctx_t *c = vctx;
    if (strcmp(w->names[0], "ListBucketResult") != 0)
        return AG_EPROTO;
    const char *name = w->names[w->depth - 1];
    if (w->depth == 2) {
        if (strcmp(name, "IsTruncated") == 0) {
            if (len == 4 && memcmp(text, "true", 4) == 0)
                c->out->truncated = true;
            else if (len == 5 && memcmp(text, "false", 5) == 0)
                c->out->truncated = false;
            else
                return AG_EPROTO;
            c->truncated_seen = true;
        } else if (strcmp(name, "NextContinuationToken") == 0) {
            if (len == 0 || len > 4096 || *c->next != NULL)
                return AG_EPROTO;
            *c->next = dup_n(text, len);
            if (*c->next == NULL)
                return -ENOMEM;
        } else if (strcmp(name, "Contents") == 0) {
            if (!c->have_key || !c->have_size)
                return AG_EPROTO;
            if (c->out->count > 0 &&
                strcmp(c->out->objects[c->out->count - 1].key, c->cur.key) >= 0)
                return AG_EPROTO; /* listings come in strictly increasing key order */
            if (c->out->count == c->cap_objects) {
                size_t ncap = c->cap_objects ? c->cap_objects * 2 : 16;
                if (ncap > AG_OBJ_LIST_MAX_LIMIT)
                    ncap = AG_OBJ_LIST_MAX_LIMIT;
                if (ncap <= c->out->count)
                    return AG_EPROTO; /* more than a page can hold */
                ag_obj_info_t *p = realloc(c->out->objects, ncap * sizeof(*p));
                if (p == NULL)
                    return -ENOMEM;
                c->out->objects = p;
                c->cap_objects = ncap;
            }
            memcpy(c->cur.version, c->cur.etag, sizeof(c->cur.version));
            c->out->objects[c->out->count++] = c->cur;
            memset(&c->cur, 0, sizeof(c->cur));
            c->have_key = c->have_size = false;
        }
        return 0;
    }
    if (w->depth == 3 && strcmp(w->names[1], "Contents") == 0) {
        if (strcmp(name, "Key") == 0) {
            if (c->have_key || !key_ok(text, len))
                return AG_EPROTO;
            c->cur.key = dup_n(text, len);
            if (c->cur.key == NULL)
                return -ENOMEM;
            c->cur.key_len = len;
            c->have_key = true;
        } else if (strcmp(name, "Size") == 0) {
            if (c->have_size || len == 0 || len > 19)
                return AG_EPROTO;
            uint64_t v = 0;
            for (size_t i = 0; i < len; i++) {
                if (text[i] < '0' || text[i] > '9')
                    return AG_EPROTO;
                v = v * 10 + (uint64_t)(text[i] - '0');
            }
            c->cur.size = v;
            c->have_size = true;
        } else if (strcmp(name, "ETag") == 0) {
            ag__objstore_s3_etag(c->cur.etag, text, len);
        } else if (strcmp(name, "LastModified") == 0) {
            if (parse_iso_ms(text, len, &c->cur.uploaded_ms) < 0)
                return AG_EPROTO;
        }
        return 0;
    }
    if (w->depth == 3 && strcmp(w->names[1], "CommonPrefixes") == 0 &&
        strcmp(name, "Prefix") == 0) {
        if (!key_ok(text, len))
            return AG_EPROTO;
        ag_obj_list_result_t *o = c->out;
        if (o->nprefixes > 0 && strcmp(o->prefixes[o->nprefixes - 1], text) >= 0)
            return AG_EPROTO;
        if (o->nprefixes == c->cap_prefixes) {
            size_t ncap = c->cap_prefixes ? c->cap_prefixes * 2 : 16;
            if (ncap > AG_OBJ_LIST_MAX_LIMIT)
                ncap = AG_OBJ_LIST_MAX_LIMIT;
            if (ncap <= o->nprefixes)
                return AG_EPROTO;
            char **p = realloc(o->prefixes, ncap * sizeof(*p));
            if (p == NULL)
                return -ENOMEM;
            o->prefixes = p;
            c->cap_prefixes = ncap;
        }
        o->prefixes[o->nprefixes] = dup_n(text, len);
        if (o->prefixes[o->nprefixes] == NULL)
            return -ENOMEM;
        o->nprefixes++;
    }
    return 0;
}

int ag__objstore_s3_parse_list(const char *xml, size_t len, ag_obj_list_result_t *out, char **next)
{
    memset(out, 0, sizeof(*out));
    *next = NULL;
    list_ctx_t c = {.out = out, .next = next};
    xml_walk_t w = {.end_cb = list_end, .ctx = &c};
    int rc = xml_walk(&w, xml, len);
    if (rc == 0 && !c.truncated_seen)
        rc = AG_EPROTO;
    free(c.cur.key);
    if (rc < 0) {
        ag_obj_list_result_free(out);
        free(*next);
        *next = NULL;
    }
    return rc;
}

/* ---- <Error> ---------------------------------------------------------------------------- */

typedef struct err_ctx {
    char *code, *msg;
    size_t ncode, nmsg;
} err_ctx_t;

static void copy_trunc(char *dst, size_t cap, const char *s, size_t n)
{
    if (cap == 0)
        return;
    if (n >= cap) {
        n = cap - 1;
        /* keep whole UTF-8 characters (it is printed), and no control bytes */
        while (n > 0 && ((unsigned char)s[n] & 0xC0) == 0x80)
            n--;
    }
    size_t j = 0;
    for (size_t i = 0; i < n; i++)
        dst[j++] = (unsigned char)s[i] < 0x20 ? ' ' : s[i];
    dst[j] = '\0';
}

static int err_end(void *vctx, xml_walk_t *w, const char *text, size_t len)
{
    err_ctx_t *c = vctx;
    if (strcmp(w->names[0], "Error") != 0)
        return AG_EPROTO;
    if (w->depth == 2 && strcmp(w->names[1], "Code") == 0)
        copy_trunc(c->code, c->ncode, text, len);
    else if (w->depth == 2 && strcmp(w->names[1], "Message") == 0)
        copy_trunc(c->msg, c->nmsg, text, len);
    return 0;
}

void ag__objstore_s3_parse_error(const char *xml, size_t len, char *code, size_t ncode, char *msg,
                                 size_t nmsg)
{
    if (ncode)
        code[0] = '\0';
    if (nmsg)
        msg[0] = '\0';
    err_ctx_t c = {code, msg, ncode, nmsg};
    xml_walk_t w = {.end_cb = err_end, .ctx = &c};
    if (xml_walk(&w, xml, len) < 0) {
        if (ncode)
            code[0] = '\0';
        if (nmsg)
            msg[0] = '\0';
    }
}
