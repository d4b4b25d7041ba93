/* SPDX-License-Identifier: MIT
 *
 * cmd_r2.c: `aigate r2`: buckets under <data_dir>/r2/ and their objects,
 * through store/objstore.h, the interface the server uses. Every object
 * write is atomic there, so this runs safely beside a serving process.
 */
#include "util/platform.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"
#include "config/config.h"
#include "store/objstore.h"
#include "util/buf.h"
#include "util/errors.h"
#include "util/fs.h"
#include "util/json.h"

#define COMMON_OPTS "common options: --config FILE  --data-dir DIR  --json  --help\n"

static const char r2_usage[] =
    "usage: aigate r2 bucket create NAME\n"
    "       aigate r2 bucket list\n"
    "       aigate r2 bucket delete NAME\n"
    "       aigate r2 object put BUCKET/KEY [--file FILE] [--content-type TYPE]\n"
    "       aigate r2 object get BUCKET/KEY [--file FILE]\n"
    "       aigate r2 object list BUCKET [--prefix P] [--delimiter D] [--limit N] [--cursor C]\n"
    "       aigate r2 object delete BUCKET/KEY\n" COMMON_OPTS;

static const char bucket_usage[] = "usage: aigate r2 bucket create NAME\n"
                                   "       aigate r2 bucket list\n"
                                   "       aigate r2 bucket delete NAME\n" COMMON_OPTS;
static const char bucket_create_usage[] =
    "usage: aigate r2 bucket create NAME\n"
    "Creates the bucket NAME (3-63 lowercase letters, digits and hyphens).\n" COMMON_OPTS;
static const char bucket_list_usage[] = "usage: aigate r2 bucket list\n"
                                        "Lists the buckets in the data folder.\n" COMMON_OPTS;
static const char bucket_delete_usage[] =
    "usage: aigate r2 bucket delete NAME\n"
    "Deletes the bucket NAME, which must be empty.\n" COMMON_OPTS;

static const char object_usage[] =
    "usage: aigate r2 object put BUCKET/KEY [--file FILE] [--content-type TYPE]\n"
    "       aigate r2 object get BUCKET/KEY [--file FILE]\n"
    "       aigate r2 object list BUCKET [--prefix P] [--delimiter D] [--limit N] [--cursor C]\n"
    "       aigate r2 object delete BUCKET/KEY\n" COMMON_OPTS;
static const char put_usage[] =
    "usage: aigate r2 object put BUCKET/KEY [--file FILE] [--content-type TYPE]\n"
    "Uploads the bytes of FILE, or of stdin without --file (or with --file -).\n" COMMON_OPTS;
static const char get_usage[] =
    "usage: aigate r2 object get BUCKET/KEY [--file FILE]\n"
    "Writes the object to stdout, or to FILE. With --json, prints the object's description\n"
    "instead of its bytes (which then go only to FILE). Exits 1 when it does not exist.\n"
    "\n" COMMON_OPTS;
static const char list_usage[] =
    "usage: aigate r2 object list BUCKET [--prefix P] [--delimiter D] [--limit N] [--cursor C]\n"
    "Lists up to N (default and most 1000) objects; with a delimiter, keys that hold it after\n"
    "the prefix are rolled up into one line (PRE) per delimited prefix.\n" COMMON_OPTS;
static const char delete_usage[] =
    "usage: aigate r2 object delete BUCKET/KEY\n"
    "Deletes the object (succeeds also when it does not exist, as R2).\n" COMMON_OPTS;

/* What an S3 store said about the last failure, as ": detail" ("" for none). */
static const char *why(void)
{
    static _Thread_local char b[600];
    const char *e = ag_objstore_last_error();
    snprintf(b, sizeof(b), "%s%s", e[0] ? ": " : "", e);
    return b;
}

/* Splits BUCKET/KEY at the first slash. @return 0, or the usage exit code. */
static int split_target(const char *usage, const char *arg, char **bucket, const char **key)
{
    const char *slash = strchr(arg, '/');
    if (slash == NULL || slash == arg || slash[1] == '\0')
        return ag__cli_usage_error(usage, "expected BUCKET/KEY, got '%s'", arg);
    *bucket = strndup(arg, (size_t)(slash - arg));
    if (*bucket == NULL)
        return ag__cli_fail("out of memory");
    *key = slash + 1;
    return 0;
}

/* Opens an existing bucket (never creates: a typo must not make a bucket). A
 * bucket whose [[r2_buckets]] binding says backend = "s3" is the one of that
 * name in the store of [aigate.s3]. */
static int open_bucket(ag__cli_t *c, const char *bucket, ag_objstore_t **s)
{
    *s = NULL;
    int rc = ag__cli_data_dir(c);
    if (rc)
        return rc;
    ag_config_t cfg;
    ag_config_defaults(&cfg);
    const char *path = ag_config_find(c->config);
    if (path && ag_config_load_file(&cfg, path, NULL) < 0)
        ag_config_fini(&cfg), ag_config_defaults(&cfg); /* ag__cli_data_dir() said why */
    const ag_config_binding_t *b = ag_config_r2_by_bucket(&cfg, bucket);
    bool remote = b && b->backend;
    ag_objstore_s3_where_t where = {cfg.s3_endpoint, cfg.s3_region, cfg.s3_path_style};
    int err =
        ag_objstore_open_binding(c->data_dir, bucket, false, remote ? b->backend : NULL, &where, s);
    ag_config_fini(&cfg);
    if (err == AG_OBJ_ENO_BUCKET)
        return ag__cli_fail("no bucket \"%s\" in %s: create it with `aigate r2 bucket create %s`",
                            bucket, c->data_dir, bucket);
    if (err < 0)
        return ag__cli_fail("cannot open bucket \"%s\": %s%s%s", bucket, ag_strerror(err),
                            ag_objstore_last_error()[0] ? ": " : "", ag_objstore_last_error());
    return 0;
}

static void append_json_field(ag_buf_t *b, const char *name, const char *value, bool *first)
{
    if (value == NULL)
        return;
    ag_buf_append_cstr(b, *first ? "\"" : ",\"");
    ag_buf_append_cstr(b, name);
    ag_buf_append_cstr(b, "\":");
    ag_json_append_string(b, ag_str_c(value));
    *first = false;
}

/* An object's description in R2's field names. */
static void append_info(ag_buf_t *b, const ag_obj_info_t *info)
{
    char when[40];
    ag__cli_format_time(info->uploaded_ms, when, sizeof(when));
    ag_buf_append_cstr(b, "{\"key\":");
    ag_json_append_string(b, ag_str(info->key, info->key_len));
    ag_buf_printf(b, ",\"size\":%llu,\"etag\":\"%s\",\"version\":\"%s\",\"uploaded\":\"%s\"",
                  (unsigned long long)info->size, info->etag, info->version, when);
    ag_buf_append_cstr(b, ",\"httpMetadata\":{");
    bool first = true;
    append_json_field(b, "contentType", info->content_type, &first);
    append_json_field(b, "contentEncoding", info->content_encoding, &first);
    append_json_field(b, "contentDisposition", info->content_disposition, &first);
    append_json_field(b, "contentLanguage", info->content_language, &first);
    append_json_field(b, "cacheControl", info->cache_control, &first);
    ag_buf_append_cstr(b, "},\"customMetadata\":");
    char *custom = ag_obj_info_custom_json(info);
    ag_buf_append_cstr(b, custom ? custom : "{}");
    free(custom);
    ag_buf_append_cstr(b, "}");
}

/* ---- bucket ---------------------------------------------------------------------------- */

static int bucket_create(int argc, char **argv)
{
    ag__cli_t c;
    int status;
    if (!ag__cli_parse(&c, bucket_create_usage, argc, argv, NULL, 0, 1, 1, &status))
        return status;
    const char *name = c.pos[0];
    int rc = ag__cli_data_dir(&c);
    if (rc)
        goto done;
    int err = ag_objstore_bucket_create(c.data_dir, name);
    if (err == AG_EEXISTS) {
        rc = ag__cli_fail("bucket \"%s\" already exists in %s", name, c.data_dir);
        goto done;
    }
    if (err < 0) {
        rc = ag__cli_fail("cannot create bucket \"%s\": %s", name, ag_strerror(err));
        goto done;
    }
    if (c.json) {
        ag_buf_t out, path;
        ag_buf_init(&out, 0);
        ag_buf_init(&path, 0);
        ag_buf_printf(&path, "%s/r2/%s", c.data_dir, name);
        ag_buf_append_cstr(&out, "{\"name\":");
        ag_json_append_string(&out, ag_str_c(name));
        ag_buf_append_cstr(&out, ",\"path\":");
        ag_json_append_string(&out, ag_str(path.data, path.len));
        ag_buf_append_cstr(&out, "}");
        rc = ag__cli_print_json(&out);
        ag_buf_fini(&path);
        ag_buf_fini(&out);
    } else {
        printf("Created bucket \"%s\" in %s/r2/%s\n"
               "Add it to the r2_buckets array of your configuration file:\n"
               "{ binding = \"BUCKET\", bucket_name = \"%s\" }\n",
               name, c.data_dir, name, name);
        rc = ag__cli_flush_stdout();
    }
done:
    ag__cli_fini(&c);
    return rc;
}

static int bucket_list(int argc, char **argv)
{
    ag__cli_t c;
    int status;
    if (!ag__cli_parse(&c, bucket_list_usage, argc, argv, NULL, 0, 0, 0, &status))
        return status;
    int rc = ag__cli_data_dir(&c);
    if (rc) {
        ag__cli_fini(&c);
        return rc;
    }
    char **names;
    size_t n;
    int err = ag_objstore_bucket_list(c.data_dir, &names, &n);
    if (err < 0) {
        rc = ag__cli_fail("cannot list buckets in %s: %s", c.data_dir, ag_strerror(err));
        ag__cli_fini(&c);
        return rc;
    }
    static const char *const fields[] = {"name", NULL};
    rc = ag__cli_print_names(&c, names, n, fields, "");
    ag_objstore_bucket_list_free(names, n);
    ag__cli_fini(&c);
    return rc;
}

static int bucket_delete(int argc, char **argv)
{
    ag__cli_t c;
    int status;
    if (!ag__cli_parse(&c, bucket_delete_usage, argc, argv, NULL, 0, 1, 1, &status))
        return status;
    const char *name = c.pos[0];
    int rc = ag__cli_data_dir(&c);
    if (rc)
        goto done;
    int err = ag_objstore_bucket_delete(c.data_dir, name);
    if (err < 0) {
        rc = ag__cli_fail("cannot delete bucket \"%s\": %s", name, ag_strerror(err));
        goto done;
    }
    if (c.json) {
        ag_buf_t out;
        ag_buf_init(&out, 0);
        ag_buf_append_cstr(&out, "{\"ok\":true,\"name\":");
        ag_json_append_string(&out, ag_str_c(name));
        ag_buf_append_cstr(&out, "}");
        rc = ag__cli_print_json(&out);
        ag_buf_fini(&out);
    } else {
        printf("Deleted bucket \"%s\".\n", name);
        rc = ag__cli_flush_stdout();
    }
done:
    ag__cli_fini(&c);
    return rc;
}

static int cmd_r2_bucket(int argc, char **argv)
{
    static const char *const names[] = {"create", "list", "delete", NULL};
    static int (*const fns[])(int, char **) = {bucket_create, bucket_list, bucket_delete};
    return ag__cli_dispatch(bucket_usage, argc, argv, names, fns);
}

/* ---- object ---------------------------------------------------------------------------- */

static int object_put(int argc, char **argv)
{
    ag__cli_opt_t opts[] = {{"--file", true, NULL, false}, {"--content-type", true, NULL, false}};
    ag__cli_t c;
    int status;
    if (!ag__cli_parse(&c, put_usage, argc, argv, opts, AG_ARRAY_LEN(opts), 1, 1, &status))
        return status;
    const char *file = opts[0].value, *key = NULL;
    char *bucket = NULL;
    ag_objstore_t *s = NULL;
    ag_buf_t out;
    int in = -1;
    ag_buf_init(&out, 0);
    ag_obj_info_t info = {0};
    int rc = split_target(put_usage, c.pos[0], &bucket, &key);
    if (rc)
        goto done;
    bool from_stdin = file == NULL || strcmp(file, "-") == 0;
    if (from_stdin && isatty(STDIN_FILENO)) {
        rc = ag__cli_usage_error(put_usage, "give --file FILE, or pipe the object into stdin");
        goto done;
    }
    rc = open_bucket(&c, bucket, &s);
    if (rc)
        goto done;
    /* Streamed from the descriptor: a 300 MiB upload no longer takes 300 MiB. */
    in = from_stdin ? STDIN_FILENO : open(file, O_RDONLY | O_CLOEXEC);
    if (in < 0) {
        rc = ag__cli_fail("cannot read %s: %s", file, strerror(errno));
        goto done;
    }
    ag_obj_put_opts_t po = {.content_type = opts[1].value};
    int err = ag_objstore_put_fd(s, key, strlen(key), in, &po, &info);
    if (err < 0) {
        rc = ag__cli_fail("cannot upload %s/%s: %s%s", bucket, key, ag_strerror(err), why());
        goto done;
    }
    if (c.json) {
        append_info(&out, &info);
        rc = ag__cli_print_json(&out);
    } else {
        printf("Uploaded %s/%s (%llu bytes, etag %s).\n", bucket, key,
               (unsigned long long)info.size, info.etag);
        rc = ag__cli_flush_stdout();
    }
done:
    if (in > STDIN_FILENO)
        close(in);
    ag_obj_info_free(&info);
    ag_objstore_close(s);
    free(bucket);
    ag_buf_fini(&out);
    ag__cli_fini(&c);
    return rc;
}

/* Copies [offset, offset + size) of in to out. */
static int copy_range(int in, uint64_t offset, uint64_t size, int out)
{
    char buf[64 * 1024];
    while (size > 0) {
        size_t want = size < sizeof(buf) ? (size_t)size : sizeof(buf);
        ssize_t r = ag_fs_pread_all(in, buf, want, offset);
        if (r < 0)
            return (int)r;
        int rc = ag_fs_write_all(out, buf, (size_t)r);
        if (rc < 0)
            return rc;
        if ((size_t)r < want)
            return AG_OBJ_ECORRUPT; /* the snapshot is shorter than its header says */
        offset += (uint64_t)r;
        size -= (uint64_t)r;
    }
    return 0;
}

static int object_get(int argc, char **argv)
{
    ag__cli_opt_t opts[] = {{"--file", true, NULL, false}};
    ag__cli_t c;
    int status;
    if (!ag__cli_parse(&c, get_usage, argc, argv, opts, AG_ARRAY_LEN(opts), 1, 1, &status))
        return status;
    const char *file = opts[0].value, *key = NULL;
    char *bucket = NULL;
    ag_objstore_t *s = NULL;
    ag_obj_info_t info = {0};
    ag_obj_t obj = {0};
    ag_buf_t out;
    ag_buf_init(&out, 0);
    int in = -1, fd = -1;
    uint64_t offset = 0;
    int rc = split_target(get_usage, c.pos[0], &bucket, &key);
    if (rc)
        goto done;
    rc = open_bucket(&c, bucket, &s);
    if (rc)
        goto done;
    /* A descriptor on a snapshot streams objects of any size in constant memory. */
    int err = ag_objstore_open_read(s, key, strlen(key), &info, &in, &offset);
    if (err == -ENOTSUP) {
        err = ag_objstore_get(s, key, strlen(key), &obj);
        if (err == 0) {
            info = obj.info;
            obj.info = (ag_obj_info_t){0};
        }
    }
    if (err == AG_ENOTFOUND) {
        rc = ag__cli_fail("object %s/%s not found", bucket, key);
        goto done;
    }
    if (err < 0) {
        rc = ag__cli_fail("cannot read %s/%s: %s%s", bucket, key, ag_strerror(err), why());
        goto done;
    }
    bool to_file = file != NULL && strcmp(file, "-") != 0;
    if (to_file || !c.json) {
        /* The output file is opened only now, so a missing object never truncates it. */
        fd = to_file ? open(file, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666) : STDOUT_FILENO;
        if (fd < 0) {
            rc = ag__cli_fail("cannot open %s: %s", file, strerror(errno));
            goto done;
        }
        err = in >= 0 ? copy_range(in, offset, info.size, fd)
                      : ag_fs_write_all(fd, obj.data, obj.len);
        if (err == 0 && to_file && fsync(fd) < 0 && errno != EINVAL)
            err = -errno;
        if (err < 0) {
            rc = ag__cli_fail("cannot write %s/%s to %s: %s", bucket, key,
                              to_file ? file : "stdout", ag_strerror(err));
            goto done;
        }
    }
    if (c.json) {
        append_info(&out, &info);
        rc = ag__cli_print_json(&out);
    }
done:
    if (in >= 0)
        close(in);
    if (fd > STDOUT_FILENO && close(fd) < 0 && rc == 0)
        rc = ag__cli_fail("cannot write %s: %s", file, strerror(errno));
    ag_obj_free(&obj);
    ag_obj_info_free(&info);
    ag_objstore_close(s);
    free(bucket);
    ag_buf_fini(&out);
    ag__cli_fini(&c);
    return rc;
}

static int object_list(int argc, char **argv)
{
    ag__cli_opt_t opts[] = {
        {"--prefix", true, NULL, false},
        {"--delimiter", true, NULL, false},
        {"--limit", true, NULL, false},
        {"--cursor", true, NULL, false},
    };
    ag__cli_t c;
    int status;
    if (!ag__cli_parse(&c, list_usage, argc, argv, opts, AG_ARRAY_LEN(opts), 1, 1, &status))
        return status;
    int64_t limit = AG_OBJ_LIST_MAX_LIMIT;
    if (opts[2].value && ag__cli_parse_i64(opts[2].value, 1, AG_OBJ_LIST_MAX_LIMIT, &limit) < 0) {
        ag__cli_fini(&c);
        return ag__cli_usage_error(list_usage, "--limit wants 1-%d", AG_OBJ_LIST_MAX_LIMIT);
    }
    /* "BUCKET/" is accepted too: it reads like a folder. */
    char *bucket = strdup(c.pos[0]);
    ag_objstore_t *s = NULL;
    ag_obj_list_result_t r = {0};
    ag_buf_t out;
    ag_buf_init(&out, 0);
    int rc = 0;
    if (bucket == NULL) {
        rc = ag__cli_fail("out of memory");
        goto done;
    }
    size_t bl = strlen(bucket);
    if (bl > 1 && bucket[bl - 1] == '/')
        bucket[bl - 1] = '\0';
    rc = open_bucket(&c, bucket, &s);
    if (rc)
        goto done;
    const char *prefix = opts[0].value, *delim = opts[1].value;
    ag_obj_list_opts_t lo = {
        .prefix = prefix,
        .prefix_len = prefix ? strlen(prefix) : 0,
        .delimiter = delim && *delim ? delim : NULL,
        .delimiter_len = delim ? strlen(delim) : 0,
        .cursor = opts[3].value,
        .limit = (unsigned)limit,
    };
    int err = ag_objstore_list(s, &lo, &r);
    if (err < 0) {
        rc = ag__cli_fail("cannot list bucket \"%s\": %s%s", bucket, ag_strerror(err), why());
        goto done;
    }
    if (c.json) {
        /* R2's R2Objects shape. */
        ag_buf_append_cstr(&out, "{\"objects\":[");
        for (size_t i = 0; i < r.count; i++) {
            if (i)
                ag_buf_append_cstr(&out, ",");
            append_info(&out, &r.objects[i]);
        }
        ag_buf_append_cstr(&out, "],\"delimitedPrefixes\":[");
        for (size_t i = 0; i < r.nprefixes; i++) {
            if (i)
                ag_buf_append_cstr(&out, ",");
            ag_json_append_string(&out, ag_str_c(r.prefixes[i]));
        }
        ag_buf_printf(&out, "],\"truncated\":%s", r.truncated ? "true" : "false");
        if (r.truncated && r.cursor) {
            ag_buf_append_cstr(&out, ",\"cursor\":");
            ag_json_append_string(&out, ag_str_c(r.cursor));
        }
        ag_buf_append_cstr(&out, "}");
        rc = ag__cli_print_json(&out);
    } else {
        /* aws s3 ls's layout: rolled-up prefixes first, marked PRE. */
        for (size_t i = 0; i < r.nprefixes; i++)
            printf("%24s  %12s  %s\n", "", "PRE", r.prefixes[i]);
        for (size_t i = 0; i < r.count; i++) {
            char when[40];
            ag__cli_format_time(r.objects[i].uploaded_ms, when, sizeof(when));
            printf("%24s  %12llu  %s\n", when, (unsigned long long)r.objects[i].size,
                   r.objects[i].key);
        }
        rc = ag__cli_flush_stdout();
        if (rc == 0 && r.truncated && r.cursor)
            fprintf(stderr, "(more objects: add --cursor %s)\n", r.cursor);
    }
done:
    ag_obj_list_result_free(&r);
    ag_objstore_close(s);
    free(bucket);
    ag_buf_fini(&out);
    ag__cli_fini(&c);
    return rc;
}

static int object_delete(int argc, char **argv)
{
    ag__cli_t c;
    int status;
    if (!ag__cli_parse(&c, delete_usage, argc, argv, NULL, 0, 1, 1, &status))
        return status;
    const char *key = NULL;
    char *bucket = NULL;
    ag_objstore_t *s = NULL;
    ag_buf_t out;
    ag_buf_init(&out, 0);
    int rc = split_target(delete_usage, c.pos[0], &bucket, &key);
    if (rc)
        goto done;
    rc = open_bucket(&c, bucket, &s);
    if (rc)
        goto done;
    int err = ag_objstore_delete(s, key, strlen(key));
    if (err < 0) {
        rc = ag__cli_fail("cannot delete %s/%s: %s%s", bucket, key, ag_strerror(err), why());
        goto done;
    }
    if (c.json) {
        ag_buf_append_cstr(&out, "{\"ok\":true,\"bucket\":");
        ag_json_append_string(&out, ag_str_c(bucket));
        ag_buf_append_cstr(&out, ",\"key\":");
        ag_json_append_string(&out, ag_str_c(key));
        ag_buf_append_cstr(&out, "}");
        rc = ag__cli_print_json(&out);
    } else {
        printf("Deleted %s/%s.\n", bucket, key);
        rc = ag__cli_flush_stdout();
    }
done:
    ag_objstore_close(s);
    free(bucket);
    ag_buf_fini(&out);
    ag__cli_fini(&c);
    return rc;
}

static int cmd_r2_object(int argc, char **argv)
{
    static const char *const names[] = {"put", "get", "list", "delete", NULL};
    static int (*const fns[])(int, char **) = {object_put, object_get, object_list, object_delete};
    return ag__cli_dispatch(object_usage, argc, argv, names, fns);
}

int cmd_r2(int argc, char **argv)
{
    static const char *const names[] = {"bucket", "object", NULL};
    static int (*const fns[])(int, char **) = {cmd_r2_bucket, cmd_r2_object};
    return ag__cli_dispatch(r2_usage, argc, argv, names, fns);
}
