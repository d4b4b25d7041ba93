/* SPDX-License-Identifier: MIT
 *
 * test_toml_suite.c: runs the official toml-test suite (TOML 1.0.0 file list)
 * against src/config/toml.c. Valid documents must parse to a tree that, in
 * toml-test's typed JSON, equals the expected .json; invalid ones must fail.
 *
 * usage: test_toml_suite [-v] [SUITE_DIR]   (SUITE_DIR holds tests/files-toml-1.0.0)
 *        -v also prints the error message given for every invalid document.
 */
#include "util/platform.h"

#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "config/toml.h"

#ifndef AG_TOML_TEST_DIR
#define AG_TOML_TEST_DIR "../shared/testdata/toml-test"
#endif

#define MAX_FILE (16u << 20) /* the suite's files are tiny; this bounds a bad path */
#define MAX_LIST_LINES 100000

static bool verbose;

static char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return NULL;
    char *data = malloc(MAX_FILE);
    size_t n = data ? fread(data, 1, MAX_FILE, f) : 0;
    fclose(f);
    if (data == NULL || n == MAX_FILE) {
        free(data);
        return NULL;
    }
    *len = n;
    return data;
}

/* jansson's decoder refuses NUL inside object keys (values are fine with
 * JSON_ALLOW_NUL), and toml-test has a "\u0000" key. Both sides therefore
 * spell a NUL in a key as the noncharacter U+FDD0, which the suite never
 * uses: key_nul_to_fdd0() rewrites the expected JSON text, key_nul_map() our
 * keys. */
#define NUL_STANDIN "\xEF\xB7\x90"

static void key_nul_to_fdd0(char *text, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        if (text[i] != '"')
            continue;
        size_t start = ++i;
        while (i < len && text[i] != '"')
            i += text[i] == '\\' ? 2 : 1;
        size_t j = i + 1;
        while (j < len && (text[j] == ' ' || text[j] == '\t' || text[j] == '\n' || text[j] == '\r'))
            j++;
        if (j >= len || text[j] != ':')
            continue;
        for (size_t k = start; k + 6 <= i; k++) {
            if (text[k] != '\\')
                continue;
            if (memcmp(text + k + 1, "u0000", 5) == 0)
                memcpy(text + k + 1, "uFDD0", 5);
            k++; /* skip the escaped character */
        }
    }
}

static json_t *load_expected(const char *path, json_error_t *jerr)
{
    size_t len;
    char *text = read_file(path, &len);
    if (text == NULL) {
        snprintf(jerr->text, sizeof(jerr->text), "cannot read");
        return NULL;
    }
    key_nul_to_fdd0(text, len);
    json_t *j = json_loadb(text, len, JSON_ALLOW_NUL, jerr);
    free(text);
    return j;
}

static void key_nul_map(const char *key, size_t keylen, char *out, size_t size, size_t *outlen)
{
    size_t o = 0;
    for (size_t i = 0; i < keylen && o + 3 < size; i++) {
        if (key[i] == '\0') {
            memcpy(out + o, NUL_STANDIN, 3);
            o += 3;
        } else {
            out[o++] = key[i];
        }
    }
    *outlen = o;
}

/* The tree in toml-test's JSON form: {"type": ..., "value": "..."} leaves,
 * tables as objects, arrays as arrays. */
static json_t *encode(const ag_toml_value_t *v)
{
    ag_toml_type_t type = ag_toml_type(v);
    if (type == AG_TOML_TABLE) {
        json_t *obj = json_object();
        for (size_t i = 0; i < ag_toml_table_len(v); i++) {
            const char *key;
            size_t keylen;
            const ag_toml_value_t *child = ag_toml_table_at(v, i, &key, &keylen);
            char mapped[4096];
            size_t mlen;
            key_nul_map(key, keylen, mapped, sizeof(mapped), &mlen);
            json_object_setn_new(obj, mapped, mlen, encode(child));
        }
        return obj;
    }
    if (type == AG_TOML_ARRAY) {
        json_t *arr = json_array();
        for (size_t i = 0; i < ag_toml_array_len(v); i++)
            json_array_append_new(arr, encode(ag_toml_array_at(v, i)));
        return arr;
    }
    char buf[64];
    json_t *value = NULL;
    if (type == AG_TOML_STRING) {
        const char *s;
        size_t len;
        ag_toml_get_string(v, &s, &len);
        value = json_stringn(s, len);
    } else if (type == AG_TOML_INTEGER) {
        int64_t i;
        ag_toml_get_int(v, &i);
        snprintf(buf, sizeof(buf), "%" PRId64, i);
        value = json_string(buf);
    } else if (type == AG_TOML_FLOAT) {
        double f;
        ag_toml_get_float(v, &f);
        if (isnan(f))
            snprintf(buf, sizeof(buf), "nan");
        else if (isinf(f))
            snprintf(buf, sizeof(buf), "%sinf", f < 0 ? "-" : "");
        else
            snprintf(buf, sizeof(buf), "%.17g", f);
        value = json_string(buf);
    } else if (type == AG_TOML_BOOL) {
        bool b;
        ag_toml_get_bool(v, &b);
        value = json_string(b ? "true" : "false");
    } else {
        const char *text;
        ag_toml_get_datetime(v, NULL, &text);
        value = json_string(text);
    }
    return json_pack("{s:s, s:o}", "type", ag_toml_type_name(type), "value", value);
}

static bool is_leaf(const json_t *j)
{
    return json_is_object(j) && json_object_size(j) == 2 &&
           json_is_string(json_object_get(j, "type")) &&
           json_is_string(json_object_get(j, "value"));
}

static bool parse_float(const char *s, double *out)
{
    const char *m = (*s == '+' || *s == '-') ? s + 1 : s;
    double sign = *s == '-' ? -1.0 : 1.0;
    if (strcmp(m, "inf") == 0) {
        *out = sign * (double)INFINITY;
        return true;
    }
    if (strcmp(m, "nan") == 0) {
        *out = (double)NAN;
        return true;
    }
    char *end;
    errno = 0;
    *out = strtod(s, &end);
    return end != s && *end == '\0';
}

/* Datetimes compare after normalising what RFC 3339 lets vary: the
 * separator, the case of T and Z, and trailing zeros of fractional seconds. */
static void norm_datetime(const char *in, char *out, size_t size)
{
    size_t o = 0;
    for (size_t i = 0; in[i] && o + 1 < size; i++) {
        char c = in[i];
        if (c == 't' || (c == ' ' && i == 10))
            c = 'T';
        else if (c == 'z')
            c = 'Z';
        out[o++] = c;
    }
    out[o] = '\0';
    char *dot = strchr(out, '.');
    if (dot == NULL)
        return;
    char *end = dot + 1;
    while (*end >= '0' && *end <= '9')
        end++;
    char *keep = end;
    while (keep > dot + 1 && keep[-1] == '0')
        keep--;
    if (keep == dot + 1)
        keep = dot;
    memmove(keep, end, strlen(end) + 1);
}

static bool leaf_equal(const json_t *exp, const json_t *got)
{
    const char *et = json_string_value(json_object_get(exp, "type"));
    const char *gt = json_string_value(json_object_get(got, "type"));
    const json_t *ev = json_object_get(exp, "value"), *gv = json_object_get(got, "value");
    const char *es = json_string_value(ev), *gs = json_string_value(gv);
    if (strcmp(et, gt) != 0)
        return false;
    if (strcmp(et, "integer") == 0) {
        char *e1, *e2;
        errno = 0;
        long long a = strtoll(es, &e1, 10), b = strtoll(gs, &e2, 10);
        return errno == 0 && *e1 == '\0' && *e2 == '\0' && a == b;
    }
    if (strcmp(et, "float") == 0) {
        double a, b;
        if (!parse_float(es, &a) || !parse_float(gs, &b))
            return false;
        if (isnan(a) || isnan(b))
            return isnan(a) && isnan(b);
        return a == b && signbit(a) == signbit(b);
    }
    if (strstr(et, "date") != NULL || strstr(et, "time") != NULL) {
        char na[64], nb[64];
        norm_datetime(es, na, sizeof(na));
        norm_datetime(gs, nb, sizeof(nb));
        return strcmp(na, nb) == 0;
    }
    return json_string_length(ev) == json_string_length(gv) &&
           memcmp(es, gs, json_string_length(ev)) == 0;
}

/* Compares expected and got; on a difference writes where into `where`. */
static bool equal(const json_t *exp, const json_t *got, char *where, size_t size, size_t at)
{
    if (is_leaf(exp) || is_leaf(got)) {
        if (is_leaf(exp) && is_leaf(got) && leaf_equal(exp, got))
            return true;
        snprintf(where + at, size - at, ": expected %s, got %s",
                 json_string_value(json_object_get(exp, "value")) ? "leaf" : "container",
                 is_leaf(got) ? json_string_value(json_object_get(got, "value")) : "container");
        return false;
    }
    if (json_is_array(exp)) {
        if (!json_is_array(got) || json_array_size(exp) != json_array_size(got)) {
            snprintf(where + at, size - at, ": array length or type differs");
            return false;
        }
        for (size_t i = 0; i < json_array_size(exp); i++) {
            int w = snprintf(where + at, size - at, "[%zu]", i);
            size_t next = w > 0 && at + (size_t)w < size ? at + (size_t)w : at;
            if (!equal(json_array_get(exp, i), json_array_get(got, i), where, size, next))
                return false;
        }
        return true;
    }
    if (json_is_object(exp)) {
        if (!json_is_object(got) || json_object_size(exp) != json_object_size(got)) {
            snprintf(where + at, size - at, ": table keys differ (expected %zu, got %zu)",
                     json_object_size(exp), json_is_object(got) ? json_object_size(got) : 0);
            return false;
        }
        const char *key;
        size_t keylen;
        json_t *ev;
        json_object_keylen_foreach((json_t *)exp, key, keylen, ev)
        {
            const json_t *gv = json_object_getn(got, key, keylen);
            int w = snprintf(where + at, size - at, ".%.*s", (int)keylen, key);
            size_t next = w > 0 && at + (size_t)w < size ? at + (size_t)w : at;
            if (gv == NULL) {
                snprintf(where + next, size - next, ": missing");
                return false;
            }
            if (!equal(ev, gv, where, size, next))
                return false;
        }
        return true;
    }
    snprintf(where + at, size - at, ": unexpected JSON in the expected file");
    return false;
}

static bool run_valid(const char *dir, const char *rel)
{
    char path[4096], jpath[4096];
    if (snprintf(path, sizeof(path), "%s/tests/%s", dir, rel) >= (int)sizeof(path))
        return false;
    snprintf(jpath, sizeof(jpath), "%.*s.json", (int)(strlen(path) - 5), path);
    size_t len;
    char *text = read_file(path, &len);
    if (text == NULL) {
        printf("FAIL %s: cannot read\n", rel);
        return false;
    }
    ag_toml_error_t err;
    ag_toml_value_t *root = ag_toml_parse(text, len, &err);
    free(text);
    if (root == NULL) {
        printf("FAIL %s: %u:%u: %s\n", rel, err.line, err.col, err.message);
        return false;
    }
    json_error_t jerr;
    json_t *exp = load_expected(jpath, &jerr);
    json_t *got = encode(root);
    ag_toml_free(root);
    bool ok = false;
    char where[512] = "";
    if (exp == NULL)
        printf("FAIL %s: cannot load %s: %s\n", rel, jpath, jerr.text);
    else if (!(ok = equal(exp, got, where, sizeof(where), 0)))
        printf("FAIL %s: differs at %s\n", rel, where[0] ? where : "(root)");
    if (!ok && exp != NULL && verbose) {
        char *dump = json_dumps(got, JSON_SORT_KEYS | JSON_COMPACT);
        printf("     got: %.2000s\n", dump ? dump : "?");
        free(dump);
    }
    json_decref(exp);
    json_decref(got);
    return ok;
}

static bool run_invalid(const char *dir, const char *rel)
{
    char path[4096];
    if (snprintf(path, sizeof(path), "%s/tests/%s", dir, rel) >= (int)sizeof(path))
        return false;
    size_t len;
    char *text = read_file(path, &len);
    if (text == NULL) {
        printf("FAIL %s: cannot read\n", rel);
        return false;
    }
    ag_toml_error_t err;
    ag_toml_value_t *root = ag_toml_parse(text, len, &err);
    free(text);
    if (root != NULL) {
        ag_toml_free(root);
        printf("FAIL %s: accepted an invalid document\n", rel);
        return false;
    }
    if (err.message[0] == '\0' || err.line == 0 || err.col == 0) {
        printf("FAIL %s: rejected without a positioned message\n", rel);
        return false;
    }
    if (verbose)
        printf("     %s: %u:%u: %s\n", rel, err.line, err.col, err.message);
    return true;
}

static bool has_suffix(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

int main(int argc, char **argv)
{
    const char *dir = AG_TOML_TEST_DIR;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-v") == 0)
            verbose = true;
        else
            dir = argv[i];
    }
    char list[4096];
    snprintf(list, sizeof(list), "%s/tests/files-toml-1.0.0", dir);
    FILE *f = fopen(list, "r");
    if (f == NULL) {
        perror(list);
        printf("0 passed, 1 failed\n");
        return 1;
    }
    int valid = 0, valid_ok = 0, invalid = 0, invalid_ok = 0;
    char line[4096];
    for (int n = 0; n < MAX_LIST_LINES && fgets(line, sizeof(line), f) != NULL; n++) {
        line[strcspn(line, "\r\n")] = '\0';
        if (!has_suffix(line, ".toml"))
            continue;
        if (strncmp(line, "valid/", 6) == 0) {
            valid++;
            valid_ok += run_valid(dir, line);
        } else if (strncmp(line, "invalid/", 8) == 0) {
            invalid++;
            invalid_ok += run_invalid(dir, line);
        }
    }
    fclose(f);
    int total = valid + invalid, passed = valid_ok + invalid_ok;
    printf("toml-test 1.0.0: %d/%d valid passed, %d/%d invalid rejected\n", valid_ok, valid,
           invalid_ok, invalid);
    printf("%d passed, %d failed\n", passed, total - passed);
    return (total > 0 && passed == total) ? 0 : 1;
}
