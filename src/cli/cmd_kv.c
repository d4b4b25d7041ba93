/* SPDX-License-Identifier: MIT
 *
 * cmd_kv.c: `aigate kv`: KV namespaces (one LMDB store per binding under
 * <data_dir>/kv/, or the bindings the config keeps on Redis) and their keys,
 * through store/kv.h, the interface the server uses. LMDB's lock file lets
 * this run beside a serving process.
 */
#include "util/platform.h"

#include <errno.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"
#include "store/kv.h"
#include "util/buf.h"
#include "util/errors.h"
#include "util/fs.h"
#include "util/json.h"

#define COMMON_OPTS "common options: --config FILE  --data-dir DIR  --json  --help\n"

static const char kv_usage[] =
    "usage: aigate kv namespace create NAME\n"
    "       aigate kv namespace list\n"
    "       aigate kv key put KEY (VALUE | - | --path FILE) --binding NAME [--ttl S]\n"
    "                         [--expiration EPOCH] [--metadata JSON]\n"
    "       aigate kv key get KEY --binding NAME\n"
    "       aigate kv key list --binding NAME [--prefix P] [--limit N] [--cursor C]\n"
    "       aigate kv key delete KEY --binding NAME\n" COMMON_OPTS;

static const char ns_usage[] = "usage: aigate kv namespace create NAME\n"
                               "       aigate kv namespace list\n" COMMON_OPTS;
static const char ns_create_usage[] =
    "usage: aigate kv namespace create NAME\n"
    "Creates the KV namespace NAME (the store of a [[kv_namespaces]] binding).\n" COMMON_OPTS;
static const char ns_list_usage[] = "usage: aigate kv namespace list\n"
                                    "Lists the KV namespaces in the data folder and those the "
                                    "configuration keeps on Redis.\n" COMMON_OPTS;

static const char key_usage[] =
    "usage: aigate kv key put KEY (VALUE | - | --path FILE) --binding NAME [--ttl S]\n"
    "                         [--expiration EPOCH] [--metadata JSON]\n"
    "       aigate kv key get KEY --binding NAME\n"
    "       aigate kv key list --binding NAME [--prefix P] [--limit N] [--cursor C]\n"
    "       aigate kv key delete KEY --binding NAME\n" COMMON_OPTS;
static const char put_usage[] =
    "usage: aigate kv key put KEY (VALUE | - | --path FILE) --binding NAME [--ttl S]\n"
    "                         [--expiration EPOCH] [--metadata JSON]\n"
    "Writes KEY; the value is VALUE, stdin (-) or the bytes of FILE.\n"
    "  --ttl S             expire S seconds from now\n"
    "  --expiration EPOCH  expire at this time (epoch seconds)\n"
    "  --metadata JSON     attach metadata (any JSON value, at most 1024 bytes)\n" COMMON_OPTS;
static const char get_usage[] =
    "usage: aigate kv key get KEY --binding NAME\n"
    "Writes the value to stdout as it is (with --json: {\"value\",\"metadata\",\"expiration\"}).\n"
    "Exits 1 when the key does not exist.\n" COMMON_OPTS;
static const char list_usage[] =
    "usage: aigate kv key list --binding NAME [--prefix P] [--limit N] [--cursor C]\n"
    "Lists up to N (default and most 1000) keys, one per line; with --json, as Workers KV's\n"
    "list() does: "
    "{\"keys\":[{\"name\",\"expiration\",\"metadata\"}],\"list_complete\",\"cursor\"}.\n"
    "\n" COMMON_OPTS;
static const char delete_usage[] =
    "usage: aigate kv key delete KEY --binding NAME\n"
    "Deletes KEY (succeeds also when it does not exist, as Workers KV).\n" COMMON_OPTS;

/* The same rule as ag_kv_open_namespace(); checked first so that an invalid
 * name is reported as such rather than as a missing namespace. */
static bool binding_valid(const char *s)
{
    size_t n = strlen(s);
    if (n < 1 || n > 64)
        return false;
    for (size_t i = 0; i < n; i++) {
        char ch = s[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == '_' || ch == '-'))
            return false;
    }
    return true;
}

/* @return 1 when the namespace exists, 0 when not, or a negative error. */
static int namespace_exists(const char *data_dir, const char *binding)
{
    char **names;
    size_t n;
    int rc = ag_kv_namespace_list(data_dir, &names, &n);
    if (rc < 0)
        return rc;
    int found = 0;
    for (size_t i = 0; i < n && !found; i++)
        found = strcmp(names[i], binding) == 0;
    ag_kv_namespace_list_free(names, n);
    return found;
}

/* Opens an existing namespace: opening creates, and a typo in --binding must
 * not leave a new empty store behind. @return 0, or the exit code. */
static int open_binding(ag__cli_t *c, const char *binding, ag_kv_t **kv)
{
    *kv = NULL;
    if (binding == NULL)
        return ag__cli_usage_error(c->usage, "--binding NAME is required");
    if (!binding_valid(binding))
        return ag__cli_fail("%s", ag_strerror(AG_KV_EBINDING));
    int rc = ag__cli_data_dir(c);
    if (rc)
        return rc;
    if (ag__cli_kv_on_redis(c, binding)) {
        ag_kv_options_t o = {
            .backend = AG_KV_BACKEND_REDIS,
            .redis = {.url = c->redis_url, .timeout_ms = c->redis_timeout_ms},
        };
        rc = ag_kv_open_namespace(c->data_dir, binding, &o, kv);
        if (rc < 0)
            return ag__cli_fail("cannot open KV namespace \"%s\" on Redis: %s", binding,
                                ag_strerror(rc));
        return 0;
    }
    rc = namespace_exists(c->data_dir, binding);
    if (rc < 0)
        return ag__cli_fail("cannot list KV namespaces in %s: %s", c->data_dir, ag_strerror(rc));
    if (rc == 0)
        return ag__cli_fail("no KV namespace \"%s\" in %s: create it with `aigate kv namespace "
                            "create %s`",
                            binding, c->data_dir, binding);
    rc = ag_kv_open_namespace(c->data_dir, binding, NULL, kv);
    if (rc < 0)
        return ag__cli_fail("cannot open KV namespace \"%s\": %s", binding, ag_strerror(rc));
    return 0;
}

/* ---- namespace ------------------------------------------------------------------------- */

static int ns_create(int argc, char **argv)
{
    ag__cli_t c;
    int status;
    if (!ag__cli_parse(&c, ns_create_usage, argc, argv, NULL, 0, 1, 1, &status))
        return status;
    const char *name = c.pos[0];
    int rc = 0;
    ag_kv_t *kv = NULL;
    ag_buf_t out;
    ag_buf_init(&out, 0);
    if (!binding_valid(name)) {
        rc = ag__cli_fail("%s", ag_strerror(AG_KV_EBINDING));
        goto done;
    }
    rc = ag__cli_data_dir(&c);
    if (rc)
        goto done;
    if (ag__cli_kv_on_redis(&c, name)) {
        /* Redis needs nothing made: its keys appear with the first put. */
        if (c.json) {
            ag_buf_append_cstr(&out, "{\"binding\":");
            ag_json_append_string(&out, ag_str_c(name));
            ag_buf_append_cstr(&out, ",\"id\":");
            ag_json_append_string(&out, ag_str_c(name));
            ag_buf_append_cstr(&out, ",\"backend\":\"redis\"}");
            rc = ag__cli_print_json(&out);
        } else {
            printf("KV namespace \"%s\" is on Redis (the configuration's [aigate.redis]): "
                   "nothing to create.\n",
                   name);
            rc = ag__cli_flush_stdout();
        }
        goto done;
    }
    int exists = namespace_exists(c.data_dir, name);
    if (exists < 0) {
        rc = ag__cli_fail("cannot list KV namespaces in %s: %s", c.data_dir, ag_strerror(exists));
        goto done;
    }
    if (exists) {
        rc = ag__cli_fail("KV namespace \"%s\" already exists in %s", name, c.data_dir);
        goto done;
    }
    int err = ag_kv_open_namespace(c.data_dir, name, NULL, &kv);
    if (err < 0) {
        rc = ag__cli_fail("cannot create KV namespace \"%s\" in %s: %s", name, c.data_dir,
                          ag_strerror(err));
        goto done;
    }
    if (c.json) {
        ag_buf_append_cstr(&out, "{\"binding\":");
        ag_json_append_string(&out, ag_str_c(name));
        ag_buf_append_cstr(&out, ",\"id\":");
        ag_json_append_string(&out, ag_str_c(name));
        ag_buf_t path;
        ag_buf_init(&path, 0);
        ag_buf_printf(&path, "%s/kv/%s", c.data_dir, name);
        ag_buf_append_cstr(&out, ",\"path\":");
        ag_json_append_string(&out, ag_str(path.data, path.len));
        ag_buf_append_cstr(&out, "}");
        ag_buf_fini(&path);
        rc = ag__cli_print_json(&out);
    } else {
        printf("Created KV namespace \"%s\" in %s/kv/%s\n"
               "Add it to the kv_namespaces array of your configuration file:\n"
               "{ binding = \"%s\", id = \"%s\" }\n",
               name, c.data_dir, name, name, name);
        rc = ag__cli_flush_stdout();
    }
done:
    ag_kv_close(kv);
    ag_buf_fini(&out);
    ag__cli_fini(&c);
    return rc;
}

static int cmp_name(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int ns_list(int argc, char **argv)
{
    ag__cli_t c;
    int status;
    if (!ag__cli_parse(&c, ns_list_usage, argc, argv, NULL, 0, 0, 0, &status))
        return status;
    int rc = ag__cli_data_dir(&c);
    if (rc) {
        ag__cli_fini(&c);
        return rc;
    }
    char **names;
    size_t n;
    int err = ag_kv_namespace_list(c.data_dir, &names, &n);
    if (err < 0) {
        rc = ag__cli_fail("cannot list KV namespaces in %s: %s", c.data_dir, ag_strerror(err));
        ag__cli_fini(&c);
        return rc;
    }
    /* The folders, then the bindings on Redis, as one sorted list. */
    char **all = calloc(n + c.nkv_on_redis + 1, sizeof(*all));
    size_t nall = 0;
    for (size_t i = 0; all && i < n; i++) {
        if (!ag__cli_kv_on_redis(&c, names[i]))
            all[nall++] = names[i];
    }
    for (size_t i = 0; all && i < c.nkv_on_redis; i++)
        all[nall++] = c.kv_on_redis[i];
    if (all) {
        qsort(all, nall, sizeof(*all), cmp_name);
        static const char *const fields[] = {"binding", "id", NULL};
        rc = ag__cli_print_names(&c, all, nall, fields, "");
    } else {
        rc = ag__cli_fail("out of memory");
    }
    free(all);
    ag_kv_namespace_list_free(names, n);
    ag__cli_fini(&c);
    return rc;
}

static int cmd_kv_namespace(int argc, char **argv)
{
    static const char *const names[] = {"create", "list", NULL};
    static int (*const fns[])(int, char **) = {ns_create, ns_list};
    return ag__cli_dispatch(ns_usage, argc, argv, names, fns);
}

/* ---- key ------------------------------------------------------------------------------- */

static int key_put(int argc, char **argv)
{
    ag__cli_opt_t opts[] = {
        {"--binding", true, NULL, false},  {"--path", true, NULL, false},
        {"--ttl", true, NULL, false},      {"--expiration", true, NULL, false},
        {"--metadata", true, NULL, false},
    };
    ag__cli_t c;
    int status;
    if (!ag__cli_parse(&c, put_usage, argc, argv, opts, AG_ARRAY_LEN(opts), 1, 2, &status))
        return status;
    const char *binding = opts[0].value, *path = opts[1].value;
    ag_kv_put_opts_t po = {0};
    ag_buf_t val, out;
    /* One byte over the limit lets the store report the limit itself. */
    ag_buf_init(&val, AG_KV_MAX_VALUE_LEN + 1);
    ag_buf_init(&out, 0);
    ag_kv_t *kv = NULL;
    int rc = 0;
    if ((c.npos == 2) == (path != NULL)) {
        rc = ag__cli_usage_error(put_usage, "give the value as VALUE, - (stdin) or --path FILE");
        goto done;
    }
    if (opts[2].value &&
        ag__cli_parse_i64(opts[2].value, 1, INT64_MAX / 1000, &po.expiration_ttl) < 0) {
        rc = ag__cli_usage_error(put_usage, "--ttl wants a number of seconds >= 1");
        goto done;
    }
    if (opts[3].value &&
        ag__cli_parse_i64(opts[3].value, 1, INT64_MAX / 1000, &po.expiration) < 0) {
        rc = ag__cli_usage_error(put_usage, "--expiration wants epoch seconds");
        goto done;
    }
    if (po.expiration_ttl && po.expiration) {
        rc = ag__cli_usage_error(put_usage, "give --ttl or --expiration, not both");
        goto done;
    }
    if (opts[4].value) {
        po.metadata = opts[4].value;
        po.metadata_len = strlen(opts[4].value);
    }
    rc = open_binding(&c, binding, &kv);
    if (rc)
        goto done;
    const char *data;
    size_t len;
    if (path || strcmp(c.pos[1], "-") == 0) {
        int err = path ? ag_fs_read_file(path, &val) : ag_fs_read_fd(STDIN_FILENO, &val);
        if (err == AG_ETOOBIG)
            err = AG_KV_EVALUE_TOO_BIG;
        if (err < 0) {
            rc = ag__cli_fail("cannot read the value from %s: %s", path ? path : "stdin",
                              ag_strerror(err));
            goto done;
        }
        data = val.data ? val.data : "";
        len = val.len;
    } else {
        data = c.pos[1];
        len = strlen(c.pos[1]);
    }
    const char *key = c.pos[0];
    int err = ag_kv_put(kv, key, strlen(key), data, len, &po);
    if (err < 0) {
        rc = ag__cli_fail("cannot write key \"%s\": %s", key, ag_strerror(err));
        goto done;
    }
    if (c.json) {
        ag_buf_append_cstr(&out, "{\"ok\":true,\"binding\":");
        ag_json_append_string(&out, ag_str_c(binding));
        ag_buf_append_cstr(&out, ",\"key\":");
        ag_json_append_string(&out, ag_str_c(key));
        ag_buf_printf(&out, ",\"size\":%zu}", len);
        rc = ag__cli_print_json(&out);
    } else {
        printf("Wrote key \"%s\" to KV namespace \"%s\" (%zu bytes).\n", key, binding, len);
        rc = ag__cli_flush_stdout();
    }
done:
    ag_kv_close(kv);
    if (val.data)
        explicit_bzero(val.data, val.cap); /* values are often tokens */
    ag_buf_fini(&val);
    ag_buf_fini(&out);
    ag__cli_fini(&c);
    return rc;
}

static int key_get(int argc, char **argv)
{
    ag__cli_opt_t opts[] = {{"--binding", true, NULL, false}};
    ag__cli_t c;
    int status;
    if (!ag__cli_parse(&c, get_usage, argc, argv, opts, AG_ARRAY_LEN(opts), 1, 1, &status))
        return status;
    const char *binding = opts[0].value, *key = c.pos[0];
    ag_kv_t *kv = NULL;
    ag_kv_value_t v = {0};
    ag_buf_t out;
    ag_buf_init(&out, 0);
    int rc = open_binding(&c, binding, &kv);
    if (rc)
        goto done;
    int err = ag_kv_get_with_metadata(kv, key, strlen(key), &v);
    if (err == AG_ENOTFOUND) {
        rc = ag__cli_fail("key \"%s\" not found in KV namespace \"%s\"", key, binding);
        goto done;
    }
    if (err < 0) {
        rc = ag__cli_fail("cannot read key \"%s\": %s", key, ag_strerror(err));
        goto done;
    }
    if (c.json) {
        ag_buf_append_cstr(&out, "{\"value\":");
        ag_json_append_string(&out, ag_str(v.data, v.len));
        ag_buf_append_cstr(&out, ",\"metadata\":");
        /* The store keeps metadata as checked JSON text: embed it as it is. */
        if (v.metadata)
            ag_buf_append(&out, v.metadata, v.metadata_len);
        else
            ag_buf_append_cstr(&out, "null");
        if (v.expiration)
            ag_buf_printf(&out, ",\"expiration\":%lld}", (long long)v.expiration);
        else
            ag_buf_append_cstr(&out, ",\"expiration\":null}");
        rc = ag__cli_print_json(&out);
    } else {
        fwrite(v.data, 1, v.len, stdout);
        rc = ag__cli_flush_stdout();
    }
done:
    ag_kv_value_free(&v);
    ag_kv_close(kv);
    ag_buf_fini(&out);
    ag__cli_fini(&c);
    return rc;
}

static int key_list(int argc, char **argv)
{
    ag__cli_opt_t opts[] = {
        {"--binding", true, NULL, false},
        {"--prefix", true, NULL, false},
        {"--limit", true, NULL, false},
        {"--cursor", true, NULL, false},
    };
    ag__cli_t c;
    int status;
    if (!ag__cli_parse(&c, list_usage, argc, argv, opts, AG_ARRAY_LEN(opts), 0, 0, &status))
        return status;
    const char *binding = opts[0].value, *prefix = opts[1].value;
    int64_t limit = AG_KV_LIST_MAX_LIMIT;
    if (opts[2].value && ag__cli_parse_i64(opts[2].value, 1, AG_KV_LIST_MAX_LIMIT, &limit) < 0) {
        ag__cli_fini(&c);
        return ag__cli_usage_error(list_usage, "--limit wants 1-%d", AG_KV_LIST_MAX_LIMIT);
    }
    ag_kv_t *kv = NULL;
    ag_kv_list_result_t r = {0};
    ag_buf_t out;
    ag_buf_init(&out, 0);
    int rc = open_binding(&c, binding, &kv);
    if (rc)
        goto done;
    int err =
        ag_kv_list(kv, prefix, prefix ? strlen(prefix) : 0, opts[3].value, (unsigned)limit, &r);
    if (err < 0) {
        rc = ag__cli_fail("cannot list KV namespace \"%s\": %s", binding, ag_strerror(err));
        goto done;
    }
    if (c.json) {
        /* Workers KV's shape: expiration and metadata only when set, cursor
         * only while list_complete is false. */
        ag_buf_append_cstr(&out, "{\"keys\":[");
        for (size_t i = 0; i < r.count; i++) {
            const ag_kv_list_key_t *k = &r.keys[i];
            ag_buf_append_cstr(&out, i ? ",{\"name\":" : "{\"name\":");
            ag_json_append_string(&out, ag_str(k->name, k->name_len));
            if (k->expiration)
                ag_buf_printf(&out, ",\"expiration\":%lld", (long long)k->expiration);
            if (k->metadata) {
                ag_buf_append_cstr(&out, ",\"metadata\":");
                ag_buf_append(&out, k->metadata, k->metadata_len);
            }
            ag_buf_append_cstr(&out, "}");
        }
        ag_buf_printf(&out, "],\"list_complete\":%s", r.list_complete ? "true" : "false");
        if (!r.list_complete && r.cursor) {
            ag_buf_append_cstr(&out, ",\"cursor\":");
            ag_json_append_string(&out, ag_str_c(r.cursor));
        }
        ag_buf_append_cstr(&out, "}");
        rc = ag__cli_print_json(&out);
    } else {
        for (size_t i = 0; i < r.count; i++) {
            fwrite(r.keys[i].name, 1, r.keys[i].name_len, stdout);
            fputc('\n', stdout);
        }
        rc = ag__cli_flush_stdout();
        if (rc == 0 && !r.list_complete && r.cursor)
            fprintf(stderr, "(more keys: add --cursor %s)\n", r.cursor);
    }
done:
    ag_kv_list_result_free(&r);
    ag_kv_close(kv);
    ag_buf_fini(&out);
    ag__cli_fini(&c);
    return rc;
}

static int key_delete(int argc, char **argv)
{
    ag__cli_opt_t opts[] = {{"--binding", true, NULL, false}};
    ag__cli_t c;
    int status;
    if (!ag__cli_parse(&c, delete_usage, argc, argv, opts, AG_ARRAY_LEN(opts), 1, 1, &status))
        return status;
    const char *binding = opts[0].value, *key = c.pos[0];
    ag_kv_t *kv = NULL;
    ag_buf_t out;
    ag_buf_init(&out, 0);
    int rc = open_binding(&c, binding, &kv);
    if (rc)
        goto done;
    int err = ag_kv_delete(kv, key, strlen(key));
    if (err < 0) {
        rc = ag__cli_fail("cannot delete key \"%s\": %s", key, ag_strerror(err));
        goto done;
    }
    if (c.json) {
        ag_buf_append_cstr(&out, "{\"ok\":true,\"binding\":");
        ag_json_append_string(&out, ag_str_c(binding));
        ag_buf_append_cstr(&out, ",\"key\":");
        ag_json_append_string(&out, ag_str_c(key));
        ag_buf_append_cstr(&out, "}");
        rc = ag__cli_print_json(&out);
    } else {
        printf("Deleted key \"%s\" from KV namespace \"%s\".\n", key, binding);
        rc = ag__cli_flush_stdout();
    }
done:
    ag_kv_close(kv);
    ag_buf_fini(&out);
    ag__cli_fini(&c);
    return rc;
}

static int cmd_kv_key(int argc, char **argv)
{
    static const char *const names[] = {"put", "get", "list", "delete", NULL};
    static int (*const fns[])(int, char **) = {key_put, key_get, key_list, key_delete};
    return ag__cli_dispatch(key_usage, argc, argv, names, fns);
}

int cmd_kv(int argc, char **argv)
{
    static const char *const names[] = {"namespace", "key", NULL};
    static int (*const fns[])(int, char **) = {cmd_kv_namespace, cmd_kv_key};
    return ag__cli_dispatch(kv_usage, argc, argv, names, fns);
}
