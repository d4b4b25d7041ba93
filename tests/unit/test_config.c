/* SPDX-License-Identifier: MIT
 *
 * test_config.c: per-route settings merged over [aigate], the deprecated
 * messages_* aliases, key application classes, and route errors.
 */
#include "util/platform.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config/config.h"
#include "util/errors.h"

#include "harness.h"

/* Loads `text` as a config file; diagnostics go to *diag (malloc'd). */
static int load(ag_config_t *cfg, const char *text, char **diag)
{
    char path[] = "/tmp/aigate-test-config-XXXXXX";
    int fd = mkstemp(path);
    if (fd < 0)
        return -1;
    ssize_t n = write(fd, text, strlen(text));
    close(fd);
    if (n != (ssize_t)strlen(text))
        return -1;
    ag_config_defaults(cfg);
    size_t len = 0;
    FILE *errs = open_memstream(diag, &len);
    int rc = ag_config_load_file(cfg, path, errs);
    fclose(errs);
    unlink(path);
    return rc;
}

TEST(routes_inherit_what_they_leave_out)
{
    ag_config_t cfg;
    char *diag = NULL;
    ASSERT_EQ(load(&cfg,
                   "[aigate]\nrate_limit = 30\nrate_period = 120\nmodels = [\"m-a\"]\n"
                   "cache = true\n"
                   "[aigate.routes.\"/v1/messages\"]\nrate_limit = 5\ncache = false\n"
                   "models = [\"m-b\", \"m-c\"]\n",
                   &diag),
              0);
    ag_route_settings_t gen, msg;
    ag_config_route_settings(&cfg, "/api/generate", &gen);
    ag_config_route_settings(&cfg, "/v1/messages", &msg);
    ASSERT_EQ(gen.rate_limit, 30u);
    ASSERT_EQ(gen.rate_period_s, 120u);
    ASSERT(gen.cache);
    ASSERT_EQ(gen.nmodels, 1u);
    ASSERT_STREQ(gen.models[0], "m-a");
    ASSERT_EQ(msg.rate_limit, 5u);
    ASSERT_EQ(msg.rate_period_s, 120u); /* inherited */
    ASSERT(!msg.cache);
    ASSERT_EQ(msg.nmodels, 2u); /* replaces [aigate]'s list */
    ASSERT_STREQ(msg.models[1], "m-c");
    ASSERT(msg.rate_limit_binding == NULL);
    ASSERT_STREQ(diag, "");
    free(diag);
    ag_config_fini(&cfg);
}

TEST(an_unset_route_is_aigates)
{
    ag_config_t cfg;
    ag_config_defaults(&cfg);
    ag_route_settings_t s;
    ag_config_route_settings(&cfg, "/v1/messages", &s);
    ASSERT_EQ(s.rate_limit, 20u);
    ASSERT_EQ(s.rate_period_s, 60u);
    ASSERT(s.cache);
    ASSERT_EQ(s.nmodels, 0u);
    ASSERT(ag_config_route(&cfg, "/v1/messages") == NULL);
    ag_config_fini(&cfg);
}

TEST(messages_keys_are_deprecated_aliases)
{
    ag_config_t cfg;
    char *diag = NULL;
    ASSERT_EQ(
        load(&cfg,
             "[[unsafe.bindings]]\nname = \"RL\"\ntype = \"ratelimit\"\nnamespace_id = \"1\"\n"
             "simple = { limit = 3, period = 10 }\n"
             "[aigate]\nmessages_rate_limit = 7\nmessages_rate_period = 30\n"
             "messages_rate_limit_binding = \"RL\"\n",
             &diag),
        0);
    ag_route_settings_t s;
    ag_config_route_settings(&cfg, "/v1/messages", &s);
    ASSERT_EQ(s.rate_limit, 7u);
    ASSERT_EQ(s.rate_period_s, 30u);
    ASSERT_STREQ(s.rate_limit_binding, "RL");
    ASSERT(strstr(diag, "aigate.messages_rate_limit is deprecated") != NULL);
    ASSERT(strstr(diag, "warning: ") != NULL);
    free(diag);
    ag_config_fini(&cfg);
}

TEST(a_routes_table_wins_over_an_alias)
{
    ag_config_t cfg;
    char *diag = NULL;
    ASSERT_EQ(load(&cfg,
                   "[aigate]\nmessages_rate_limit = 7\n"
                   "[aigate.routes.\"/v1/messages\"]\nrate_limit = 9\n",
                   &diag),
              0);
    ag_route_settings_t s;
    ag_config_route_settings(&cfg, "/v1/messages", &s);
    ASSERT_EQ(s.rate_limit, 9u);
    free(diag);
    ag_config_fini(&cfg);
}

TEST(zero_aliases_keep_meaning_inherit)
{
    ag_config_t cfg;
    char *diag = NULL;
    ASSERT_EQ(load(&cfg, "[aigate]\nrate_limit = 11\nmessages_rate_limit = 0\n", &diag), 0);
    ag_route_settings_t s;
    ag_config_route_settings(&cfg, "/v1/messages", &s);
    ASSERT_EQ(s.rate_limit, 11u);
    free(diag);
    ag_config_fini(&cfg);
}

TEST(route_errors_name_file_line_and_col)
{
    ag_config_t cfg;
    char *diag = NULL;
    ASSERT_EQ(load(&cfg,
                   "[aigate.routes.\"/v1/messages\"]\nrate_limit = \"x\"\n"
                   "rate_limit_binding = \"NOPE\"\nbogus = 1\n",
                   &diag),
              AG_EBADCONFIG);
    ASSERT(strstr(diag, ":2:14: aigate.routes.\"/v1/messages\".rate_limit must be a number") !=
           NULL);
    ASSERT(strstr(diag, "no ratelimit binding named 'NOPE'") != NULL);
    ASSERT(strstr(diag, "warning: unknown key aigate.routes.\"/v1/messages\".bogus") != NULL);
    free(diag);
    ag_config_fini(&cfg);
    diag = NULL;
    ASSERT_EQ(load(&cfg, "[aigate.routes.nopath]\ncache = true\n", &diag), AG_EBADCONFIG);
    ASSERT(strstr(diag, "a route is a path starting with /") != NULL);
    free(diag);
    ag_config_fini(&cfg);
}

TEST(keys_say_how_they_apply)
{
    ASSERT_EQ(ag_config_key_apply("port"), AG_KEY_RESTART);
    ASSERT_EQ(ag_config_key_apply("data_dir"), AG_KEY_RESTART);
    ASSERT_EQ(ag_config_key_apply("rate_limit"), AG_KEY_RELOAD);
    ASSERT_EQ(ag_config_key_apply("models"), AG_KEY_RELOAD);
    ASSERT_EQ(ag_config_key_apply("api_key_secret"), AG_KEY_SECRET);
    ASSERT_EQ(ag_config_key_apply("routes.cache"), AG_KEY_RELOAD);
    ASSERT_EQ(ag_config_key_apply("no_such_key"), -1);
}

TEST(config_holds_secret_names_not_values)
{
    setenv("ANTHROPIC_API_KEY", "sk-test-never-in-config", 1);
    ag_config_t cfg;
    ag_config_defaults(&cfg);
    ASSERT_STREQ(cfg.api_key_secret, "ANTHROPIC_API_KEY");
    /* Nothing in the struct's strings holds the value. */
    const char *const strs[] = {cfg.host, cfg.upstream, cfg.data_dir, cfg.api_key_secret,
                                cfg.default_model};
    for (size_t i = 0; i < AG_ARRAY_LEN(strs); i++)
        ASSERT(strstr(strs[i], "sk-test") == NULL);
    ag_config_fini(&cfg);
    unsetenv("ANTHROPIC_API_KEY");
}

TEST(reference_lists_route_keys_and_how_each_applies)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    ag_config_print_reference(f);
    fclose(f);
    ASSERT(strstr(text, "| `port` | port | `8787` | 0 to 65535 | restart |") != NULL);
    ASSERT(strstr(text, "| `api_key_secret` | string |") != NULL);
    ASSERT(strstr(text, "[aigate.routes.\"PATH\"]") != NULL);
    ASSERT(strstr(text, "| `rate_limit` | integer | [aigate]'s |") != NULL);
    ASSERT(strstr(text, "| `auth` | string | `\"off\"` | `\"off\"`, `\"optional\"`, `\"required\"` "
                        "| reload |") != NULL);
    ASSERT(strstr(text, "| `budget_daily_usd` | US dollars | `0` | 0 to 1000000000 | reload |") !=
           NULL);
    ASSERT(strstr(text, "| `cors_origins` | string list | `[\"*\"]` |  | reload |") != NULL);
    free(text);
}

TEST(client_access_keys_default_and_load)
{
    ag_config_t cfg;
    ag_config_defaults(&cfg);
    ASSERT_EQ(cfg.auth, AG_AUTH_OFF);
    ASSERT(cfg.budget_daily_usd == 0);
    ASSERT(cfg.cors_origins != NULL && cfg.cors_origins[1] == NULL);
    ASSERT_STREQ(cfg.cors_origins[0], "*");
    ASSERT(!cfg.cors_origins_set);
    ag_config_fini(&cfg);
    char *diag = NULL;
    ASSERT_EQ(load(&cfg,
                   "[aigate]\nauth = \"required\"\nbudget_daily_usd = 12.5\n"
                   "cors_origins = [\"https://app.example.com\", \"http://localhost:5173\"]\n",
                   &diag),
              0);
    ASSERT_EQ(cfg.auth, AG_AUTH_REQUIRED);
    ASSERT(cfg.budget_daily_usd == 12.5);
    ASSERT(cfg.cors_origins_set);
    ASSERT_STREQ(cfg.cors_origins[0], "https://app.example.com");
    ASSERT_STREQ(cfg.cors_origins[1], "http://localhost:5173");
    ASSERT(cfg.cors_origins[2] == NULL);
    free(diag);
    ag_config_fini(&cfg);
    diag = NULL;
    ASSERT_EQ(load(&cfg, "[aigate]\nauth = \"optional\"\ncors_origins = []\n", &diag), 0);
    ASSERT_EQ(cfg.auth, AG_AUTH_OPTIONAL);
    ASSERT(cfg.cors_origins_set && cfg.cors_origins[0] == NULL);
    free(diag);
    ag_config_fini(&cfg);
    ASSERT_EQ(ag_config_key_apply("auth"), AG_KEY_RELOAD);
    /* CORS: the default "*" on /api/generate only; an explicit list everywhere. */
    ag_config_defaults(&cfg);
    ASSERT(ag_config_cors_allowed(cfg.cors_origins, cfg.cors_origins_set, true, "https://a.b", 11));
    ASSERT(
        !ag_config_cors_allowed(cfg.cors_origins, cfg.cors_origins_set, false, "https://a.b", 11));
    ASSERT(!ag_config_cors_allowed(cfg.cors_origins, cfg.cors_origins_set, true, "", 0));
    ag_config_fini(&cfg);
    char *const list[] = {"https://app.example.com", NULL};
    ASSERT(ag_config_cors_allowed(list, true, false, "https://app.example.com", 23));
    ASSERT(ag_config_cors_allowed(list, true, true, "https://app.example.com", 23));
    ASSERT(!ag_config_cors_allowed(list, true, true, "https://app.example.co", 22));
    ASSERT(!ag_config_cors_allowed(list, true, false, "https://evil.example", 20));
    char *const star[] = {"*", NULL};
    ASSERT(ag_config_cors_allowed(star, true, false, "https://any.example", 19));
    char *const none[] = {NULL};
    ASSERT(!ag_config_cors_allowed(none, true, true, "https://any.example", 19));
    ASSERT_EQ(ag_config_key_apply("budget_daily_usd"), AG_KEY_RELOAD);
    ASSERT_EQ(ag_config_key_apply("cors_origins"), AG_KEY_RELOAD);
}

TEST(client_access_mistakes_name_their_place)
{
    ag_config_t cfg;
    char *diag = NULL;
    ASSERT_EQ(load(&cfg,
                   "[aigate]\nauth = \"on\"\nbudget_daily_usd = -1\n"
                   "cors_origins = [\"*\", \"https://ok.example\", \"https://x.example/\", "
                   "\"example.com\", 3]\n",
                   &diag),
              AG_EBADCONFIG);
    ASSERT(strstr(diag, ":2:8: aigate.auth must be one of \"off\", \"optional\", \"required\"") !=
           NULL);
    ASSERT(strstr(diag, ":3:20: aigate.budget_daily_usd = -1 is out of range") != NULL);
    ASSERT(strstr(diag, ":4:44: aigate.cors_origins[2] must be \"*\" or an origin") != NULL);
    ASSERT(strstr(diag, ":4:66: aigate.cors_origins[3] must be") != NULL);
    ASSERT(strstr(diag, ":4:81: aigate.cors_origins[4] must be a non-empty string") != NULL);
    ASSERT(strstr(diag, "cors_origins[0]") == NULL && strstr(diag, "cors_origins[1]") == NULL);
    free(diag);
    ag_config_fini(&cfg);
    diag = NULL;
    ASSERT_EQ(load(&cfg, "[aigate]\nauth = true\nbudget_daily_usd = \"5\"\n", &diag),
              AG_EBADCONFIG);
    ASSERT(strstr(diag, ":2:8: aigate.auth must be one of") != NULL);
    ASSERT(strstr(diag, ":3:20: aigate.budget_daily_usd must be a number") != NULL);
    free(diag);
    ag_config_fini(&cfg);
}

TEST(kv_bindings_name_their_backend)
{
    ag_config_t cfg;
    char *diag = NULL;
    /* Without Redis every binding is on LMDB, the cache's too. */
    ASSERT_EQ(load(&cfg, "[[kv_namespaces]]\nbinding = \"CACHE\"\nid = \"c\"\n", &diag), 0);
    ASSERT_STREQ(ag_config_kv_backend(&cfg, "CACHE"), "lmdb");
    free(diag);
    ag_config_fini(&cfg);
    diag = NULL;
    /* With Redis: the cache binding by default, others when they say so; a
     * binding's own backend wins over cache_backend. */
    ASSERT_EQ(
        load(&cfg,
             "kv_namespaces = [{binding = \"CACHE\", id = \"c\"},\n"
             "  {binding = \"SHARED\", id = \"s\", backend = \"redis\"},\n"
             "  {binding = \"LOCAL\", id = \"l\", backend = \"lmdb\"}, {binding = \"PLAIN\"}]\n"
             "[aigate.redis]\nurl = \"redis://127.0.0.1:6379/0\"\n",
             &diag),
        0);
    ASSERT_STREQ(ag_config_kv_backend(&cfg, "CACHE"), "redis");
    ASSERT_STREQ(ag_config_kv_backend(&cfg, "SHARED"), "redis");
    ASSERT_STREQ(ag_config_kv_backend(&cfg, "LOCAL"), "lmdb");
    ASSERT_STREQ(ag_config_kv_backend(&cfg, "PLAIN"), "lmdb");
    free(diag);
    ag_config_fini(&cfg);
    diag = NULL;
    ASSERT_EQ(load(&cfg,
                   "kv_namespaces = [{binding = \"CACHE\", backend = \"lmdb\"}]\n"
                   "[aigate.redis]\nurl = \"redis://127.0.0.1:6379/0\"\n",
                   &diag),
              0);
    ASSERT_STREQ(ag_config_kv_backend(&cfg, "CACHE"), "lmdb");
    free(diag);
    ag_config_fini(&cfg);
    diag = NULL;
    ASSERT_EQ(load(&cfg,
                   "[aigate]\ncache_backend = \"local\"\n"
                   "[aigate.redis]\nurl = \"redis://127.0.0.1:6379/0\"\n",
                   &diag),
              0);
    ASSERT_STREQ(ag_config_kv_backend(&cfg, "CACHE"), "lmdb");
    free(diag);
    ag_config_fini(&cfg);
    diag = NULL;
    /* Mistakes say where they are. */
    ASSERT_EQ(load(&cfg,
                   "kv_namespaces = [{binding = \"A\", backend = \"redis\"},\n"
                   "  {binding = \"B\", backend = \"s3\"}]\n",
                   &diag),
              AG_EBADCONFIG);
    ASSERT(strstr(diag, ":1:44: backend = \"redis\" needs [aigate.redis] url") != NULL);
    ASSERT(strstr(diag, "kv_namespaces[1].backend must be \"lmdb\"") != NULL);
    free(diag);
    ag_config_fini(&cfg);
}

TEST(tasks_and_triggers_load_as_written)
{
    ag_config_t cfg;
    char *diag = NULL;
    ASSERT_EQ(
        load(&cfg,
             "[triggers]\ncrons = [\"0 9 * * MON\", \"*/5 * * * *\"]\n"
             "[[aigate.tasks]]\nname = \"weekly-digest\"\ncron = \"0 9 * * MON\"\n"
             "task = \"summarize\"\nmax_tokens = 1024\n"
             "prompt = \"\"\"Digest:\n{{usage:7d}}\"\"\"\n"
             "output.r2 = \"STORAGE:digests/{{date}}.md\"\noutput.kv = \"CACHE:digest:latest\"\n"
             "output.webhook = \"https://hooks.example.com/d\"\n"
             "output.email = { to = \"me@example.com\", subject = \"Digest {{date}}\" }\n"
             "output.command = [\"/usr/local/bin/publish\", \"--now\"]\n"
             "[aigate.smtp]\nurl = \"smtp://127.0.0.1:2525\"\nfrom = \"gw@example.com\"\n",
             &diag),
        0);
    ASSERT_STREQ(diag, "");
    ASSERT_EQ(cfg.ncrons, 2u);
    ASSERT_STREQ(cfg.crons[1], "*/5 * * * *");
    ASSERT_EQ(cfg.cron_at[0].line, 2u);
    ASSERT_EQ(cfg.ntasks, 1u);
    const ag_config_task_t *t = &cfg.tasks[0];
    ASSERT_STREQ(t->name, "weekly-digest");
    ASSERT_STREQ(t->task, "summarize");
    ASSERT(t->model == NULL);
    ASSERT_EQ(t->max_tokens, 1024u);
    ASSERT_STREQ(t->prompt, "Digest:\n{{usage:7d}}");
    ASSERT_STREQ(t->out_r2, "STORAGE:digests/{{date}}.md");
    ASSERT_STREQ(t->out_kv, "CACHE:digest:latest");
    ASSERT_STREQ(t->out_email_to, "me@example.com");
    ASSERT_STREQ(t->out_email_subject, "Digest {{date}}");
    ASSERT_STREQ(t->out_command[0], "/usr/local/bin/publish");
    ASSERT_STREQ(t->out_command[1], "--now");
    ASSERT(t->out_command[2] == NULL);
    ASSERT_EQ(t->cron_at.line, 5u);
    ASSERT_STREQ(cfg.smtp_url, "smtp://127.0.0.1:2525");
    ASSERT_STREQ(cfg.smtp_from, "gw@example.com");
    free(diag);
    ag_config_fini(&cfg);
}

TEST(task_mistakes_are_errors_with_their_place)
{
    static const struct {
        const char *text, *want;
    } cases[] = {
        {"[[aigate.tasks]]\ncron = \"* * * * *\"\nprompt = \"x\"\n", "needs a name"},
        {"[[aigate.tasks]]\nname = \"a\"\nprompt = \"x\"\n", "needs a cron expression"},
        {"[[aigate.tasks]]\nname = \"a\"\ncron = \"* * * * *\"\n", "needs a prompt"},
        {"[[aigate.tasks]]\nname = \"a\"\ncron = \"* * * * *\"\nprompt = \"x\"\ntask = \"t\"\n"
         "model = \"m\"\n",
         "give task or model, not both"},
        {"[[aigate.tasks]]\nname = \"a\"\ncron = \"* * * * *\"\nprompt = \"x\"\noutput.fax = "
         "\"1\"\n",
         ":5:"},
        {"[[aigate.tasks]]\nname = \"a\"\ncron = \"* * * * *\"\nprompt = \"x\"\n"
         "output.command = [\"publish\"]\n",
         "must be an absolute path"},
        {"[[aigate.tasks]]\nname = \"a\"\ncron = \"* * * * *\"\nprompt = \"x\"\n"
         "[[aigate.tasks]]\nname = \"a\"\ncron = \"* * * * *\"\nprompt = \"y\"\n",
         "a task named 'a' exists already"},
        {"[[aigate.tasks]]\nname = \"a\"\ncron = \"* * * * *\"\nprompt = \"x\"\nmax_tokens = 0\n",
         "max_tokens must be a whole number"},
        {"[aigate.smtp]\nurl = \"http://mail\"\n", "aigate.smtp.url must be smtp://"},
        {"[triggers]\ncrons = [1]\n", "triggers.crons[0] must be a string"},
    };
    for (size_t i = 0; i < AG_ARRAY_LEN(cases); i++) {
        ag_config_t cfg;
        char *diag = NULL;
        ASSERT_EQ(load(&cfg, cases[i].text, &diag), AG_EBADCONFIG);
        ASSERT_MSG_(strstr(diag, cases[i].want) != NULL, "case %zu: %s", i, diag);
        free(diag);
        ag_config_fini(&cfg);
    }
}

TEST(list_items_keep_their_place_for_later_checks)
{
    ag_config_t cfg;
    char *diag = NULL;
    ASSERT_EQ(load(&cfg, "[aigate]\ntrusted_proxies = [\"10.0.0.1\",\n  \"not-an-ip\"]\n", &diag),
              0);
    ag_config_pos_t at = ag_config_list_pos(&cfg, &cfg.trusted_proxies, 1);
    ASSERT_EQ(at.line, 3u);
    ASSERT_EQ(at.col, 3u);
    at = ag_config_list_pos(&cfg, &cfg.trusted_proxies, 0);
    ASSERT_EQ(at.line, 2u);
    at = ag_config_list_pos(&cfg, &cfg.trusted_proxies, 7);
    ASSERT_EQ(at.line, 0u);
    ag_config_fini(&cfg);
    free(diag);
}

TEST(vars_that_look_like_ours_and_unpriced_default_models_warn)
{
    ag_config_t cfg;
    char *diag = NULL;
    ASSERT_EQ(load(&cfg,
                   "[vars]\nMAX_TOKEN = \"5\"\ndefault_model = \"x\"\nMY_OWN_VAR = \"y\"\n"
                   "DEFAULT_MODEL = \"my-model\"\n",
                   &diag),
              0);
    ASSERT(strstr(diag, ":2:13: warning: vars.MAX_TOKEN is not read by aigate: did you mean "
                        "MAX_TOKENS?") != NULL);
    ASSERT(strstr(diag, "vars.default_model is not read by aigate: did you mean DEFAULT_MODEL?"));
    ASSERT(strstr(diag, "MY_OWN_VAR") == NULL); /* a Worker's own var is its business */
    ASSERT(strstr(diag, ":5:17: warning: vars.DEFAULT_MODEL \"my-model\" has no price") != NULL);
    ag_config_fini(&cfg);
    free(diag);
    diag = NULL;
    ASSERT_EQ(load(&cfg,
                   "[vars]\nDEFAULT_MODEL = \"my-model\"\nMAX_TOKENS = \"5\"\n"
                   "[aigate.prices]\n\"my-model\" = { input = 1, output = 2 }\n",
                   &diag),
              0);
    ASSERT(strstr(diag, "warning") == NULL);
    ag_config_fini(&cfg);
    free(diag);
}

TEST(bounded_disk_keys_have_defaults)
{
    ag_config_t cfg;
    ag_config_defaults(&cfg);
    ASSERT_EQ(cfg.cache_max_bytes, (size_t)256 << 20);
    ASSERT_EQ(cfg.usage_log_retention_days, 30u);
    ag_config_fini(&cfg);
    char *diag = NULL;
    ASSERT_EQ(
        load(&cfg, "[aigate]\ncache_max_bytes = 4194304\nusage_log_retention_days = 0\n", &diag),
        0);
    ASSERT_EQ(cfg.cache_max_bytes, (size_t)4 << 20);
    ASSERT_EQ(cfg.usage_log_retention_days, 0u);
    ag_config_fini(&cfg);
    free(diag);
}

TEST(urls_lose_their_credentials_in_logs)
{
    char out[256];
    ag_config_redact_url("https://user:pa%40ss@proxy.example:8443/v1?x=1", out, sizeof(out));
    ASSERT_STREQ(out, "https://***@proxy.example:8443/v1?x=1");
    ag_config_redact_url("http://127.0.0.1:9/a@b", out, sizeof(out));
    ASSERT_STREQ(out, "http://127.0.0.1:9/a@b"); /* an @ in the path is no userinfo */
    ag_config_redact_url("https://api.anthropic.com", out, sizeof(out));
    ASSERT_STREQ(out, "https://api.anthropic.com");
    ag_config_redact_url("https://a@b@host", out, sizeof(out));
    ASSERT_STREQ(out, "https://***@host");
}

AG_TESTS(
    AG_TEST_ENTRY(tasks_and_triggers_load_as_written) AG_TEST_ENTRY(
        task_mistakes_are_errors_with_their_place) AG_TEST_ENTRY(routes_inherit_what_they_leave_out)
        AG_TEST_ENTRY(an_unset_route_is_aigates) AG_TEST_ENTRY(messages_keys_are_deprecated_aliases)
            AG_TEST_ENTRY(a_routes_table_wins_over_an_alias)
                AG_TEST_ENTRY(zero_aliases_keep_meaning_inherit) AG_TEST_ENTRY(
                    route_errors_name_file_line_and_col) AG_TEST_ENTRY(keys_say_how_they_apply)
                    AG_TEST_ENTRY(config_holds_secret_names_not_values)
                        AG_TEST_ENTRY(reference_lists_route_keys_and_how_each_applies)
                            AG_TEST_ENTRY(client_access_keys_default_and_load) AG_TEST_ENTRY(
                                client_access_mistakes_name_their_place)
                                AG_TEST_ENTRY(list_items_keep_their_place_for_later_checks)
                                    AG_TEST_ENTRY(
                                        vars_that_look_like_ours_and_unpriced_default_models_warn)
                                        AG_TEST_ENTRY(bounded_disk_keys_have_defaults)
                                            AG_TEST_ENTRY(urls_lose_their_credentials_in_logs)
                                                AG_TEST_ENTRY(kv_bindings_name_their_backend))
