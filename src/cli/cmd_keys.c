/* SPDX-License-Identifier: MIT
 *
 * cmd_keys.c: `aigate keys create|list|show|revoke|rotate|publish`: client API keys
 * (platform.md section 6) over store/keys.h, the store the server reads. A key
 * is printed once, by create or rotate, alone on stdout so that a script can
 * take it; nothing else ever prints one, or could: only its hash is stored.
 */
#include "util/platform.h"

#include <errno.h>
#include <math.h>
#include <string.h>
#include <time.h>

#include <openssl/crypto.h>

#include "cli/cli.h"
#include "store/keys.h"
#include "store/redis.h"
#include "util/buf.h"
#include "util/hex.h"
#include "util/errors.h"
#include "util/json.h"
#include "util/log.h"
#include "util/window.h"

#define COMMON_OPTS "common options: --config FILE  --data-dir DIR  --json  --help\n"

static const char keys_usage[] =
    "usage: aigate keys create NAME [--rpm N] [--tpm N] [--daily-usd X] [--monthly-usd X]\n"
    "                          [--models a,b] [--expires DATE]\n"
    "       aigate keys list\n"
    "       aigate keys show NAME\n"
    "       aigate keys revoke NAME\n"
    "       aigate keys rotate NAME\n"
    "       aigate keys publish\n"
    "Client API keys, sent as `Authorization: Bearer KEY` or `x-api-key: KEY` when\n"
    "[aigate] auth is \"optional\" or \"required\". A key is shown once, when created or\n"
    "rotated; the store keeps only its SHA-256. Changes apply at once to running "
    "servers.\n" COMMON_OPTS;
static const char create_usage[] =
    "usage: aigate keys create NAME [--rpm N] [--tpm N] [--daily-usd X] [--monthly-usd X]\n"
    "                          [--models a,b] [--expires DATE]\n"
    "Creates a key called NAME ([A-Za-z0-9_.-], at most 64) and prints it, once, alone on\n"
    "stdout (with --json: {\"name\",\"key\",...limits}). Limits left out do not apply.\n"
    "  --rpm N          requests per minute\n"
    "  --tpm N          tokens (input and output) per minute\n"
    "  --daily-usd X    US dollars per UTC day\n"
    "  --monthly-usd X  US dollars per UTC calendar month\n"
    "  --models a,b     the only models it may use (default: any the route allows)\n"
    "  --expires DATE   YYYY-MM-DD (00:00 UTC), YYYY-MM-DDTHH:MM:SSZ, or a time from now\n"
    "                   (30d, 12h)\n" COMMON_OPTS;
static const char list_usage[] = "usage: aigate keys list\n"
                                 "Lists the keys: names, status and limits (never a key).\n"
                                 "\n" COMMON_OPTS;
static const char show_usage[] = "usage: aigate keys show NAME\n"
                                 "Shows one key's status and limits (never the key).\n"
                                 "\n" COMMON_OPTS;
static const char revoke_usage[] = "usage: aigate keys revoke NAME\n"
                                   "Revokes a key: it fails from now on, on every server.\n"
                                   "\n" COMMON_OPTS;
static const char rotate_usage[] =
    "usage: aigate keys rotate NAME\n"
    "Gives NAME a new key and prints it once; the old key fails from now on. Limits and\n"
    "expiry stay.\n" COMMON_OPTS;

static const char publish_usage[] =
    "usage: aigate keys publish\n"
    "Puts every key of this data folder on the configuration's Redis, for keys made\n"
    "before [aigate.redis] was set (create, rotate and revoke publish by themselves).\n"
    "A name Redis already holds with another record (the same name made elsewhere, or\n"
    "rotated there) is left as it is and named; rotate or revoke it to settle which\n"
    "stands. Exits 1 when one is, or when Redis cannot be reached.\n" COMMON_OPTS;

static int64_t now_ms(void)
{
    return ag_now_us() / 1000;
}

/* ---- output ------------------------------------------------------------------------- */

static const char *status_of(const ag_key_record_t *r, int64_t now)
{
    if (r->revoked_ms)
        return "revoked";
    if (r->expires_ms && now >= r->expires_ms)
        return "expired";
    return "active";
}

static void json_time(ag_buf_t *b, const char *field, int64_t ms)
{
    ag_buf_printf(b, ",\"%s\":", field);
    if (ms == 0) {
        ag_buf_append_cstr(b, "null");
        return;
    }
    char t[40];
    ag__cli_format_time(ms, t, sizeof(t));
    ag_buf_printf(b, "\"%s\"", t);
}

static void json_uint(ag_buf_t *b, const char *field, uint32_t v)
{
    if (v)
        ag_buf_printf(b, ",\"%s\":%u", field, v);
    else
        ag_buf_printf(b, ",\"%s\":null", field);
}

static void json_usd(ag_buf_t *b, const char *field, double v)
{
    if (v > 0)
        ag_buf_printf(b, ",\"%s\":%.17g", field, v);
    else
        ag_buf_printf(b, ",\"%s\":null", field);
}

/* One record as a JSON object; `key` (NULL: none) is the one just made. */
static void json_record(ag_buf_t *b, const ag_key_record_t *r, const char *key, int64_t now)
{
    ag_buf_append_cstr(b, "{\"name\":");
    ag_json_append_string(b, ag_str_c(r->name));
    if (key) {
        ag_buf_append_cstr(b, ",\"key\":");
        ag_json_append_string(b, ag_str_c(key));
    }
    json_uint(b, "rpm", r->limits.rpm);
    json_uint(b, "tpm", r->limits.tpm);
    json_usd(b, "daily_usd", r->limits.daily_usd);
    json_usd(b, "monthly_usd", r->limits.monthly_usd);
    ag_buf_append_cstr(b, ",\"models\":");
    if (r->models[0] == '\0') {
        ag_buf_append_cstr(b, "null");
    } else {
        ag_buf_append_cstr(b, "[");
        const char *p = r->models;
        for (bool first = true; *p; first = false) {
            const char *e = strchr(p, ',');
            size_t n = e ? (size_t)(e - p) : strlen(p);
            if (!first)
                ag_buf_append_cstr(b, ",");
            ag_json_append_string(b, ag_str(p, n));
            p += n + (e != NULL);
        }
        ag_buf_append_cstr(b, "]");
    }
    json_time(b, "expires", r->expires_ms);
    json_time(b, "created", r->created_ms);
    ag_buf_printf(b, ",\"status\":\"%s\"", status_of(r, now));
    json_time(b, "revoked", r->revoked_ms);
    json_time(b, "rotated", r->rotated_ms);
    ag_buf_append_cstr(b, "}");
}

static void text_limits(const ag_key_record_t *r, char *buf, size_t cap)
{
    size_t n = 0;
    buf[0] = '\0';
#define PUT(...) n += (size_t)snprintf(buf + n, n < cap ? cap - n : 0, __VA_ARGS__)
    if (r->limits.rpm)
        PUT("%srpm %u", n ? ", " : "", r->limits.rpm);
    if (r->limits.tpm)
        PUT("%stpm %u", n ? ", " : "", r->limits.tpm);
    if (r->limits.daily_usd > 0)
        PUT("%s$%g/day", n ? ", " : "", r->limits.daily_usd);
    if (r->limits.monthly_usd > 0)
        PUT("%s$%g/month", n ? ", " : "", r->limits.monthly_usd);
    if (n == 0)
        PUT("none");
#undef PUT
}

/* ---- flags -------------------------------------------------------------------------- */

static int parse_usd(const char *s, double *out)
{
    char *end;
    errno = 0;
    double d = strtod(s, &end);
    if (errno || *s == '\0' || *end != '\0' || !isfinite(d) || d < 0 || d > 1e9)
        return -EINVAL;
    *out = d;
    return 0;
}

/* YYYY-MM-DD, YYYY-MM-DDTHH:MM:SSZ, or a window from now ("30d"). */
static int parse_expires(const char *s, int64_t now, int64_t *out)
{
    int64_t secs;
    if (ag_parse_window(s, strlen(s), &secs) == 0) {
        *out = now + secs * 1000;
        return 0;
    }
    struct tm tm = {0};
    const char *end = strptime(s, "%Y-%m-%d", &tm);
    if (end == NULL)
        return -EINVAL;
    if (*end == 'T') {
        end = strptime(end + 1, "%H:%M:%S", &tm);
        if (end == NULL || strcmp(end, "Z") != 0)
            return -EINVAL;
    } else if (*end != '\0') {
        return -EINVAL;
    }
    time_t t = timegm(&tm);
    if (t <= 0)
        return -EINVAL;
    *out = (int64_t)t * 1000;
    return 0;
}

/* Opens the store of c's data folder; prints why not. */
static int open_store(ag__cli_t *c, ag_keys_t **ks)
{
    int rc = ag__cli_data_dir(c);
    if (rc)
        return rc;
    int err = ag_keys_open(c->data_dir, ks);
    if (err < 0)
        return ag__cli_fail("cannot open the key store in %s/%s: %s", c->data_dir, AG_KEYS_DIR,
                            ag_strerror(err));
    return 0;
}

/* Prints a key made just now: alone on stdout, or in its record with --json. */
static int print_new_key(const ag__cli_t *c, const ag_key_record_t *rec, const char *key,
                         const char *what)
{
    int rc;
    if (c->json) {
        ag_buf_t out;
        ag_buf_init(&out, 0);
        json_record(&out, rec, key, now_ms());
        rc = ag__cli_print_json(&out);
        OPENSSL_cleanse(out.data, out.len);
        ag_buf_fini(&out);
    } else {
        char lim[160];
        text_limits(rec, lim, sizeof(lim));
        printf("%s\n", key);
        rc = ag__cli_flush_stdout();
        fprintf(stderr, "%s key %s (limits: %s). This is the only time it is shown: keep it now.\n",
                what, rec->name, lim);
    }
    return rc;
}

/* ---- the subcommands ---------------------------------------------------------------- */

/* With [aigate.redis], the record goes there too (as stored, hex: the key's
 * hash, never the key), and every instance imports it within a second
 * (gateway/keys_sync.c). @return 0, or 1 having said why. */
static int publish_record(const ag__cli_t *c, ag_keys_t *ks, const char *name, const char *did)
{
    if (!c->redis_url)
        return 0;
    unsigned char rec[AG_KEYS_EXPORT_MAX];
    char hex[2 * AG_KEYS_EXPORT_MAX + 1], why[256];
    int n = ag_keys_export(ks, name, rec);
    if (n < 0)
        return ag__cli_fail("key %s is %s here, but cannot be read back for Redis: %s", name, did,
                            ag_strerror(n));
    ag_hex_encode(rec, (size_t)n, hex);
    static const char script[] = "redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) "
                                 "return redis.call('INCR', KEYS[2])";
    const char *argv[] = {"EVAL", script, "2", AG_REDIS_KEYS_RECORDS, AG_REDIS_KEYS_VERSION,
                          name,   hex};
    if (ag__cli_redis(c, 7, argv, why, sizeof(why)) < 0)
        return ag__cli_fail("key %s is %s here, but not on Redis (%s): other instances do not "
                            "know it yet; run the command again",
                            name, did, why);
    return 0;
}

static int keys_create(int argc, char **argv)
{
    ag__cli_opt_t opts[] = {
        {"--rpm", true, NULL, false},       {"--tpm", true, NULL, false},
        {"--daily-usd", true, NULL, false}, {"--monthly-usd", true, NULL, false},
        {"--models", true, NULL, false},    {"--expires", true, NULL, false}};
    ag__cli_t c;
    int status;
    if (!ag__cli_parse(&c, create_usage, argc, argv, opts, AG_ARRAY_LEN(opts), 1, 1, &status))
        return status;
    const char *name = c.pos[0];
    ag_key_limits_t lim = {0};
    int64_t v, expires = 0, now = now_ms();
    int rc = 0;
    if (!ag_keys_name_valid(name)) {
        rc = ag__cli_usage_error(create_usage, "%s", ag_strerror(AG_KEYS_ENAME));
        goto done;
    }
    for (int i = 0; i < 2; i++) {
        if (!opts[i].present)
            continue;
        if (ag__cli_parse_i64(opts[i].value, 1, UINT32_MAX, &v) < 0) {
            rc = ag__cli_usage_error(create_usage, "%s must be a whole number from 1 to %u",
                                     opts[i].name, UINT32_MAX);
            goto done;
        }
        *(i ? &lim.tpm : &lim.rpm) = (uint32_t)v;
    }
    for (int i = 2; i < 4; i++) {
        if (opts[i].present &&
            parse_usd(opts[i].value, i == 2 ? &lim.daily_usd : &lim.monthly_usd) < 0) {
            rc = ag__cli_usage_error(create_usage, "%s must be a number of US dollars from 0",
                                     opts[i].name);
            goto done;
        }
    }
    const char *models = opts[4].present ? opts[4].value : NULL;
    if (!ag_keys_models_valid(models)) {
        rc = ag__cli_usage_error(create_usage, "--models: %s", ag_strerror(AG_KEYS_EMODELS));
        goto done;
    }
    if (opts[5].present && parse_expires(opts[5].value, now, &expires) < 0) {
        rc = ag__cli_usage_error(create_usage,
                                 "--expires must be YYYY-MM-DD, YYYY-MM-DDTHH:MM:SSZ or a time "
                                 "from now such as 30d");
        goto done;
    }
    ag_keys_t *ks;
    rc = open_store(&c, &ks);
    if (rc)
        goto done;
    char key[AG_KEYS_KEY_LEN + 1];
    ag_key_record_t rec;
    int err = ag_keys_create(ks, name, &lim, models, expires, now, key, &rec);
    if (err == AG_EEXISTS)
        rc = ag__cli_fail("a key named %s exists already (rotate it for a new key)", name);
    else if (err < 0)
        rc = ag__cli_fail("cannot create key %s: %s", name, ag_strerror(err));
    else
        rc = print_new_key(&c, &rec, key, "Created");
    /* Printed first: the key exists here whatever Redis says. */
    if (err == 0 && publish_record(&c, ks, name, "created"))
        rc = 1;
    ag_keys_close(ks);
    OPENSSL_cleanse(key, sizeof(key));
done:
    ag__cli_fini(&c);
    return rc;
}

static int keys_list(int argc, char **argv)
{
    ag__cli_t c;
    int status;
    if (!ag__cli_parse(&c, list_usage, argc, argv, NULL, 0, 0, 0, &status))
        return status;
    ag_keys_t *ks;
    int rc = open_store(&c, &ks);
    if (rc) {
        ag__cli_fini(&c);
        return rc;
    }
    ag_key_record_t *recs;
    size_t n;
    int err = ag_keys_list(ks, &recs, &n);
    ag_keys_close(ks);
    if (err < 0) {
        rc = ag__cli_fail("cannot list keys: %s", ag_strerror(err));
        ag__cli_fini(&c);
        return rc;
    }
    int64_t now = now_ms();
    if (c.json) {
        ag_buf_t out;
        ag_buf_init(&out, 0);
        ag_buf_append_cstr(&out, "[");
        for (size_t i = 0; i < n; i++) {
            if (i)
                ag_buf_append_cstr(&out, ",");
            json_record(&out, &recs[i], NULL, now);
        }
        ag_buf_append_cstr(&out, "]");
        rc = ag__cli_print_json(&out);
        ag_buf_fini(&out);
    } else {
        if (n > 0)
            printf("%-24s %-8s %-24s %s\n", "NAME", "STATUS", "EXPIRES", "LIMITS");
        for (size_t i = 0; i < n; i++) {
            char lim[160], exp[40] = "never";
            text_limits(&recs[i], lim, sizeof(lim));
            if (recs[i].expires_ms)
                ag__cli_format_time(recs[i].expires_ms, exp, sizeof(exp));
            printf("%-24s %-8s %-24s %s%s%s\n", recs[i].name, status_of(&recs[i], now), exp, lim,
                   recs[i].models[0] ? "; models " : "", recs[i].models);
        }
        rc = ag__cli_flush_stdout();
    }
    free(recs);
    ag__cli_fini(&c);
    return rc;
}

/* With [aigate.redis], every instance sees the revocation with its next
 * request under this name (the gateway asks along with the rate limit). */
static int publish_revocation(const ag__cli_t *c, const char *name, int64_t now)
{
    char key[AG_KEYS_NAME_MAX + 32], when[24], why[256];
    snprintf(key, sizeof(key), "%s%s", AG_REDIS_REVOKED_PREFIX, name);
    snprintf(when, sizeof(when), "%lld", (long long)now);
    const char *argv[] = {"SET", key, when};
    if (ag__cli_redis(c, 3, argv, why, sizeof(why)) < 0)
        return ag__cli_fail("key %s is revoked here, but not on Redis (%s): other instances "
                            "still take it; run the command again",
                            name, why);
    return 0;
}

/* show / revoke: one name, one record printed. */
static int keys_one(int argc, char **argv, const char *usage, bool revoke)
{
    ag__cli_t c;
    int status;
    if (!ag__cli_parse(&c, usage, argc, argv, NULL, 0, 1, 1, &status))
        return status;
    const char *name = c.pos[0];
    ag_keys_t *ks;
    int rc = open_store(&c, &ks);
    if (rc) {
        ag__cli_fini(&c);
        return rc;
    }
    ag_key_record_t rec;
    int64_t now = now_ms();
    int err = revoke ? ag_keys_revoke(ks, name, now, &rec) : ag_keys_get(ks, name, &rec);
    /* The revoked record too: an instance importing it later refuses the key
     * without the mark. */
    if (err == 0 && revoke && publish_record(&c, ks, name, "revoked"))
        err = 1;
    ag_keys_close(ks);
    if (err == 1) {
        rc = 1; /* said why */
    } else if (err == AG_ENOTFOUND) {
        rc = ag__cli_fail("no key named %s", name);
    } else if (err < 0) {
        rc = ag__cli_fail("cannot %s key %s: %s", revoke ? "revoke" : "read", name,
                          ag_strerror(err));
    } else if (revoke && c.redis_url && (rc = publish_revocation(&c, name, now)) != 0) {
        /* said why */
    } else if (c.json) {
        ag_buf_t out;
        ag_buf_init(&out, 0);
        json_record(&out, &rec, NULL, now);
        rc = ag__cli_print_json(&out);
        ag_buf_fini(&out);
    } else if (revoke) {
        printf("Revoked key %s: it fails from now on%s.\n", name,
               c.redis_url ? ", on every instance of this Redis" : "");
        rc = ag__cli_flush_stdout();
    } else {
        char lim[160], t[40];
        text_limits(&rec, lim, sizeof(lim));
        printf("name:    %s\nstatus:  %s\nlimits:  %s\nmodels:  %s\n", rec.name,
               status_of(&rec, now), lim, rec.models[0] ? rec.models : "any");
        ag__cli_format_time(rec.created_ms, t, sizeof(t));
        printf("created: %s\n", t);
        if (rec.expires_ms)
            ag__cli_format_time(rec.expires_ms, t, sizeof(t));
        printf("expires: %s\n", rec.expires_ms ? t : "never");
        if (rec.rotated_ms) {
            ag__cli_format_time(rec.rotated_ms, t, sizeof(t));
            printf("rotated: %s\n", t);
        }
        if (rec.revoked_ms) {
            ag__cli_format_time(rec.revoked_ms, t, sizeof(t));
            printf("revoked: %s\n", t);
        }
        rc = ag__cli_flush_stdout();
    }
    ag__cli_fini(&c);
    return rc;
}

static int keys_show(int argc, char **argv)
{
    return keys_one(argc, argv, show_usage, false);
}

static int keys_revoke(int argc, char **argv)
{
    return keys_one(argc, argv, revoke_usage, true);
}

static int keys_rotate(int argc, char **argv)
{
    ag__cli_t c;
    int status;
    if (!ag__cli_parse(&c, rotate_usage, argc, argv, NULL, 0, 1, 1, &status))
        return status;
    const char *name = c.pos[0];
    ag_keys_t *ks;
    int rc = open_store(&c, &ks);
    if (rc) {
        ag__cli_fini(&c);
        return rc;
    }
    char key[AG_KEYS_KEY_LEN + 1];
    ag_key_record_t rec;
    int err = ag_keys_rotate(ks, name, now_ms(), key, &rec);
    if (err == AG_ENOTFOUND)
        rc = ag__cli_fail("no key named %s", name);
    else if (err == AG_KEYS_EREVOKED)
        rc = ag__cli_fail("key %s is revoked: create a key of another name", name);
    else if (err < 0)
        rc = ag__cli_fail("cannot rotate key %s: %s", name, ag_strerror(err));
    else
        rc = print_new_key(&c, &rec, key, "Rotated");
    if (err == 0 && publish_record(&c, ks, name, "rotated"))
        rc = 1;
    ag_keys_close(ks);
    OPENSSL_cleanse(key, sizeof(key));
    ag__cli_fini(&c);
    return rc;
}

/* HSETNX: a name Redis holds already keeps its record. 1: published, 0: the
 * same record was there, -1: another one is. */
static const char publish_lua[] =
    "if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 1 then "
    "redis.call('INCR', KEYS[2]) return 1 end "
    "if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then return 0 end return -1";

static int keys_publish(int argc, char **argv)
{
    ag__cli_t c;
    int status;
    if (!ag__cli_parse(&c, publish_usage, argc, argv, NULL, 0, 0, 0, &status))
        return status;
    ag_keys_t *ks = NULL;
    ag_key_record_t *recs = NULL;
    size_t n = 0, published = 0, same = 0, differ = 0;
    int rc = open_store(&c, &ks);
    if (rc)
        goto done;
    if (!c.redis_url) {
        rc = ag__cli_fail("the configuration has no [aigate.redis] url: nothing to publish to");
        goto done;
    }
    int err = ag_keys_list(ks, &recs, &n);
    if (err < 0) {
        rc = ag__cli_fail("cannot list keys: %s", ag_strerror(err));
        goto done;
    }
    ag_redis_sync_t *s = NULL;
    err = ag__cli_redis_open(&c, &s);
    for (size_t i = 0; err == 0 && i < n; i++) {
        unsigned char rec[AG_KEYS_EXPORT_MAX];
        char hex[2 * AG_KEYS_EXPORT_MAX + 1];
        int len = ag_keys_export(ks, recs[i].name, rec);
        if (len < 0) {
            rc = ag__cli_fail("cannot read key %s back: %s", recs[i].name, ag_strerror(len));
            continue;
        }
        ag_hex_encode(rec, (size_t)len, hex);
        const char *args[] = {
            "EVAL",       publish_lua, "2", AG_REDIS_KEYS_RECORDS, AG_REDIS_KEYS_VERSION,
            recs[i].name, hex};
        ag_resp_t *reply = NULL;
        err = ag_redis_sync_command(s, 7, args, NULL, &reply);
        if (err == 0 && reply->type != AG_RESP_INTEGER)
            err = AG_REDIS_EREPLY;
        if (err == 0 && reply->integer == 1)
            published++;
        else if (err == 0 && reply->integer == 0)
            same++;
        else if (err == 0) {
            differ++;
            rc = ag__cli_fail("key %s: Redis holds another record of that name (made or rotated "
                              "elsewhere); left as it is: rotate or revoke it to settle",
                              recs[i].name);
        }
        ag_resp_free(reply);
    }
    ag_redis_sync_close(s);
    if (err < 0) {
        rc = ag__cli_fail("cannot publish to Redis: %s (%zu of %zu keys published)",
                          ag_strerror(err), published, n);
        goto done;
    }
    if (c.json) {
        ag_buf_t out;
        ag_buf_init(&out, 0);
        ag_buf_printf(&out, "{\"published\":%zu,\"unchanged\":%zu,\"differ\":%zu}", published, same,
                      differ);
        if (ag__cli_print_json(&out))
            rc = 1;
        ag_buf_fini(&out);
    } else {
        printf("Published %zu key%s to Redis; %zu already there; %zu held otherwise.\n", published,
               published == 1 ? "" : "s", same, differ);
        if (ag__cli_flush_stdout())
            rc = 1;
    }
done:
    free(recs);
    ag_keys_close(ks);
    ag__cli_fini(&c);
    return rc;
}

int cmd_keys(int argc, char **argv)
{
    static const char *const names[] = {"create", "list",    "show", "revoke",
                                        "rotate", "publish", NULL};
    static int (*const fns[])(int, char **) = {keys_create, keys_list,   keys_show,
                                               keys_revoke, keys_rotate, keys_publish};
    return ag__cli_dispatch(keys_usage, argc, argv, names, fns);
}
