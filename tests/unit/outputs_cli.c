/* SPDX-License-Identifier: MIT
 *
 * outputs_cli.c: a test driver for ag_outputs_deliver(). It reads a JSON spec
 * (the file argv[1], or stdin), delivers, and prints the results as JSON on
 * stdout; tests/integration/n_outputs.test.js runs it against a real webhook
 * receiver and a real SMTP server. Not installed.
 *
 * spec: {"config": "aigate.toml" (its [[r2_buckets]], [[kv_namespaces]], data_dir),
 *        "dataDir": "...",
 *        "smtp": {"url","from","user","password" | "passwordSecret": "SMTP_PASSWORD",
 *                 "requireTls","tlsNoVerify","caFile"},
 *        "timeoutMs","attempts","backoffMs","backoffMaxMs","commandTimeoutMs",
 *        "commandGraceMs","maxOutputBytes",
 *        "delivery": {"task","cron","scheduledTime","model","output","inputTokens",
 *                     "outputTokens","costUsd"},
 *        "outputs": [{"kind": "r2"|"kv"|"webhook"|"email"|"command",
 *                     "binding","key","url","to","subject","argv": [...]}]}
 * out:  {"results": [{"kind","rc","error","attempts","status","elapsedMs","detail"}]}
 * exit: 0 when the spec was delivered (whatever the results), 2 for a bad spec.
 */
#include "util/platform.h"

#include <jansson.h>

#include <curl/curl.h>

#include "config/config.h"
#include "store/secrets.h"
#include "store/secrets_resolve.h"
#include "tasks/outputs.h"
#include "util/errors.h"

static const char *str_of(const json_t *o, const char *k)
{
    return json_string_value(json_object_get(o, k));
}

static unsigned uint_of(const json_t *o, const char *k)
{
    json_int_t v = json_integer_value(json_object_get(o, k));
    return v > 0 ? (unsigned)v : 0;
}

static int fail(const char *msg)
{
    fprintf(stderr, "outputs_cli: %s\n", msg);
    return 2;
}

static int parse_kind(const char *s, ag_output_kind_t *k)
{
    static const struct {
        const char *name;
        ag_output_kind_t kind;
    } kinds[] = {{"r2", AG_OUT_R2},
                 {"kv", AG_OUT_KV},
                 {"webhook", AG_OUT_WEBHOOK},
                 {"email", AG_OUT_EMAIL},
                 {"command", AG_OUT_COMMAND}};
    for (size_t i = 0; s && i < AG_ARRAY_LEN(kinds); i++) {
        if (strcmp(s, kinds[i].name) == 0) {
            *k = kinds[i].kind;
            return 0;
        }
    }
    return -1;
}

int main(int argc, char **argv)
{
    json_error_t jerr;
    json_t *spec = argc > 1 && strcmp(argv[1], "-") != 0 ? json_load_file(argv[1], 0, &jerr)
                                                         : json_loadf(stdin, 0, &jerr);
    if (!json_is_object(spec)) {
        fprintf(stderr, "outputs_cli: bad spec: %s\n", jerr.text);
        json_decref(spec);
        return 2;
    }
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        json_decref(spec);
        return fail("curl_global_init failed");
    }
    int status = 2;
    ag_config_t cfg;
    ag_config_defaults(&cfg);
    char *password = NULL;
    const json_t *outs_j = json_object_get(spec, "outputs");
    size_t n = json_array_size(outs_j);
    ag_output_t *outs = calloc(n ? n : 1, sizeof(*outs));
    ag_output_result_t *res = calloc(n ? n : 1, sizeof(*res));
    char ***argvs = calloc(n ? n : 1, sizeof(*argvs));
    if (!outs || !res || !argvs)
        goto out;
    const char *cfg_path = str_of(spec, "config");
    if (cfg_path && ag_config_load_file(&cfg, cfg_path, stderr) < 0) {
        fail("the config does not load");
        goto out;
    }
    ag_outputs_env_t env = {
        .data_dir = str_of(spec, "dataDir") ? str_of(spec, "dataDir") : cfg.data_dir,
        .cfg = &cfg,
        .timeout_ms = uint_of(spec, "timeoutMs"),
        .attempts = uint_of(spec, "attempts"),
        .backoff_ms = uint_of(spec, "backoffMs"),
        .backoff_max_ms = uint_of(spec, "backoffMaxMs"),
        .command_timeout_ms = uint_of(spec, "commandTimeoutMs"),
        .command_grace_ms = uint_of(spec, "commandGraceMs"),
        .max_output_bytes = uint_of(spec, "maxOutputBytes"),
    };
    const json_t *smtp = json_object_get(spec, "smtp");
    if (smtp) {
        env.smtp.url = str_of(smtp, "url");
        env.smtp.from = str_of(smtp, "from");
        env.smtp.user = str_of(smtp, "user");
        env.smtp.password = str_of(smtp, "password");
        env.smtp.require_tls = json_is_true(json_object_get(smtp, "requireTls"));
        env.smtp.tls_no_verify = json_is_true(json_object_get(smtp, "tlsNoVerify"));
        env.smtp.ca_file = str_of(smtp, "caFile");
        const char *secret = str_of(smtp, "passwordSecret");
        if (secret) {
            /* As the server will: the password comes from the secret, never the config. */
            int rc = ag_secrets_resolve(env.data_dir, secret, &password);
            if (rc < 0) {
                fprintf(stderr, "outputs_cli: secret %s: %s\n", secret, ag_strerror(rc));
                goto out;
            }
            env.smtp.password = password;
        }
    }
    const json_t *dj = json_object_get(spec, "delivery");
    const char *output = str_of(dj, "output");
    ag_delivery_t d = {
        .task = str_of(dj, "task"),
        .cron = str_of(dj, "cron"),
        .scheduled_ms = (int64_t)json_integer_value(json_object_get(dj, "scheduledTime")),
        .model = str_of(dj, "model"),
        .output = ag_str(output ? output : "",
                         output ? json_string_length(json_object_get(dj, "output")) : 0),
        .input_tokens = (int64_t)json_integer_value(json_object_get(dj, "inputTokens")),
        .output_tokens = (int64_t)json_integer_value(json_object_get(dj, "outputTokens")),
        .cost_usd = json_number_value(json_object_get(dj, "costUsd")),
    };
    for (size_t i = 0; i < n; i++) {
        const json_t *o = json_array_get(outs_j, i);
        if (parse_kind(str_of(o, "kind"), &outs[i].kind) < 0) {
            fail("an output has no known kind");
            goto out;
        }
        outs[i].binding = str_of(o, "binding");
        outs[i].key = str_of(o, "key");
        outs[i].url = str_of(o, "url");
        outs[i].to = str_of(o, "to");
        outs[i].subject = str_of(o, "subject");
        const json_t *av = json_object_get(o, "argv");
        if (av) {
            size_t na = json_array_size(av);
            argvs[i] = calloc(na + 1, sizeof(char *));
            if (!argvs[i])
                goto out;
            for (size_t k = 0; k < na; k++)
                argvs[i][k] = (char *)json_string_value(json_array_get(av, k));
            outs[i].argv = argvs[i];
        }
    }

    ag_outputs_deliver(&env, outs, n, &d, res);

    json_t *arr = json_array();
    for (size_t i = 0; i < n; i++) {
        json_array_append_new(arr,
                              json_pack("{s:s, s:i, s:s, s:i, s:i, s:I, s:s}", "kind",
                                        ag_output_kind_name(outs[i].kind), "rc", res[i].rc, "error",
                                        ag_strerror(res[i].rc), "attempts", (int)res[i].attempts,
                                        "status", res[i].status, "elapsedMs",
                                        (json_int_t)res[i].elapsed_ms, "detail", res[i].detail));
    }
    json_t *top = json_pack("{s:o}", "results", arr);
    char *text = json_dumps(top, JSON_COMPACT);
    if (text)
        printf("%s\n", text);
    free(text);
    json_decref(top);
    status = 0;
out:
    for (size_t i = 0; argvs && i < n; i++)
        free(argvs[i]);
    free(argvs);
    free(outs);
    free(res);
    if (password)
        ag_secrets_value_free(password);
    ag_config_fini(&cfg);
    json_decref(spec);
    curl_global_cleanup();
    return status;
}
