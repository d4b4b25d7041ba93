/* SPDX-License-Identifier: MIT
 *
 * cmd_init.c: `aigate init NAME`, wrangler init's counterpart: a new project
 * folder holding the seed's wrangler.toml (which aigate serves as it is), a
 * .dev.vars.example, a .gitignore and a README of next steps in aigate's verbs.
 * It never writes into a folder that exists.
 */
#include "util/platform.h"

#include <errno.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli/cli.h"

static const char init_usage[] =
    "usage: aigate init NAME\n"
    "Creates the folder NAME (it must not exist) with the seed's wrangler.toml, a\n"
    ".dev.vars.example, a .gitignore (.dev.vars and .aigate/) and a README.md of next steps.\n"
    "The project is called after the folder's last part: letters, digits, '-' and '_'.\n";

/* The seed's production wrangler.toml, `name` set, with aigate's own table
 * beside it: wrangler ignores [aigate], aigate reads the rest as wrangler would. */
static const char wrangler_toml[] =
    "# wrangler.toml: Production AI Worker configuration (aigate serves it as it is)\n"
    "name = \"%s\"\n"
    "main = \"src/index.js\"\n"
    "compatibility_date = \"2026-01-01\"\n"
    "compatibility_flags = [\"nodejs_compat\"]\n"
    "\n"
    "# KV namespace for session management and caching (aigate: the response cache)\n"
    "[[kv_namespaces]]\n"
    "binding = \"CACHE\"\n"
    "id = \"REPLACE_WITH_YOUR_KV_ID\"\n"
    "\n"
    "# R2 bucket for storing AI outputs and assets (aigate: the usage log, logs/YYYY/MM/DD/)\n"
    "[[r2_buckets]]\n"
    "binding = \"STORAGE\"\n"
    "bucket_name = \"%s-outputs\"\n"
    "\n"
    "# Environment variables (non-secret)\n"
    "[vars]\n"
    "ENVIRONMENT = \"production\"\n"
    "MAX_TOKENS = \"1024\"\n"
    "DEFAULT_MODEL = \"claude-haiku-4-5\"\n"
    "\n"
    "# Rate limiting (Cloudflare managed, free tier)\n"
    "[[unsafe.bindings]]\n"
    "type = \"ratelimit\"\n"
    "name = \"RATE_LIMITER\"\n"
    "namespace_id = \"1001\"\n"
    "simple = { limit = 100, period = 60 }\n"
    "\n"
    "# Scheduled AI tasks (the seed's pattern 2): uncomment, then add [[aigate.tasks]].\n"
    "# [triggers]\n"
    "# crons = [\"0 9 * * MON\"] # Every Monday 9am UTC\n"
    "\n"
    "# aigate's own settings (`aigate config reference` lists every key; wrangler ignores them).\n"
    "[aigate]\n"
    "# The Worker's limit: 20 requests a minute per client. To use the binding's\n"
    "# numbers instead: rate_limit_binding = \"RATE_LIMITER\"\n"
    "rate_limit = 20\n"
    "rate_period = 60\n"
    "# host = \"127.0.0.1\"\n"
    "# port = 8787\n";

static const char dev_vars_example[] =
    "# Copy to .dev.vars (never committed) for `aigate dev`, as with `wrangler dev`.\n"
    "# In production store it with `aigate secret put ANTHROPIC_API_KEY` instead.\n"
    "ANTHROPIC_API_KEY=sk-ant-...\n"
    "# The admin listener's token (metrics, tail, stats, deploy); needed off loopback.\n"
    "# AIGATE_ADMIN_TOKEN=...\n";

static const char gitignore[] = "# secrets and local state: never committed\n"
                                ".dev.vars\n"
                                ".aigate/\n";

static const char readme[] =
    "# %s\n"
    "\n"
    "An AI endpoint served by aigate: the seed's Cloudflare\n"
    "Worker (`POST /api/generate`: validation, per-client rate limits, a response cache,\n"
    "Claude, usage logging) as one native binary. `wrangler.toml` is the Worker's config\n"
    "file, unchanged in form: aigate reads it, and the Worker's code is built in (there is\n"
    "no `src/index.js` to write).\n"
    "\n"
    "## Next steps\n"
    "\n"
    "The seed's steps, with aigate's verbs:\n"
    "\n"
    "1. Go into the project:\n"
    "\n"
    "       cd %s\n"
    "\n"
    "2. Set your Anthropic API key as a secret (never in wrangler.toml), as `wrangler\n"
    "   secret put` does. It is kept in `.aigate/secrets` (mode 0600):\n"
    "\n"
    "       aigate secret put ANTHROPIC_API_KEY\n"
    "\n"
    "   For local development you can instead copy `.dev.vars.example` to `.dev.vars`.\n"
    "\n"
    "3. Create the KV namespace and the R2 bucket (`wrangler kv namespace create`,\n"
    "   `wrangler r2 bucket create`); aigate also creates them on first use:\n"
    "\n"
    "       aigate kv namespace create CACHE\n"
    "       aigate r2 bucket create %s-outputs\n"
    "\n"
    "4. Check the configuration, then serve it locally (`wrangler dev`):\n"
    "\n"
    "       aigate config check\n"
    "       aigate dev\n"
    "\n"
    "5. Test it:\n"
    "\n"
    "       curl -X POST http://127.0.0.1:8787/api/generate \\\n"
    "         -H \"Content-Type: application/json\" \\\n"
    "         -d '{\"prompt\": \"Explain zero-cost AI infrastructure in 2 sentences.\"}'\n"
    "\n"
    "6. Serve it for real (`aigate serve`, or the systemd unit `contrib/aigate.service`),\n"
    "   and after each edit of wrangler.toml apply it to the running server with no\n"
    "   dropped request (`wrangler deploy`):\n"
    "\n"
    "       aigate deploy\n"
    "\n"
    "7. Watch it (`wrangler tail`, the dashboard's analytics):\n"
    "\n"
    "       aigate tail\n"
    "       aigate stats --since 24h\n"
    "\n"
    "   The admin listener (http://127.0.0.1:8788/) also serves a dashboard and\n"
    "   Prometheus metrics (`/metrics`).\n";

static bool name_ok(const char *n)
{
    if (!*n || strcmp(n, ".") == 0 || strcmp(n, "..") == 0)
        return false;
    for (const char *p = n; *p; p++) {
        char c = *p;
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '_' || c == '.'))
            return false;
    }
    return true;
}

/* Writes dir/name, failing if it exists. @return 0 or -errno. */
static int write_file(const char *dir, const char *name, const char *text)
{
    char path[4096];
    if (!text)
        return -ENOMEM;
    if (snprintf(path, sizeof(path), "%s/%s", dir, name) >= (int)sizeof(path))
        return -ENAMETOOLONG;
    FILE *f = fopen(path, "wx");
    if (!f)
        return -errno;
    fputs(text, f);
    int rc = ferror(f) ? -EIO : 0;
    if (fclose(f) != 0 && rc == 0)
        rc = -errno;
    return rc;
}

int cmd_init(int argc, char **argv)
{
    ag__cli_t c;
    int status;
    if (!ag__cli_parse(&c, init_usage, argc, argv, NULL, 0, 1, 1, &status))
        return status;
    const char *dir = c.pos[0];
    size_t dl = strlen(dir);
    while (dl > 1 && dir[dl - 1] == '/')
        dl--;
    char folder[4096];
    if (dl == 0 || dl >= sizeof(folder))
        return ag__cli_usage_error(init_usage, "NAME is empty or too long");
    memcpy(folder, dir, dl);
    folder[dl] = '\0';
    const char *slash = strrchr(folder, '/');
    const char *name = slash ? slash + 1 : folder;
    if (!name_ok(name))
        return ag__cli_usage_error(init_usage,
                                   "'%s' is not a project name: letters, digits, '-', '_' and '.' "
                                   "only",
                                   name);
    if (mkdir(folder, 0755) < 0) {
        if (errno == EEXIST)
            return ag__cli_fail("%s already exists: aigate init never overwrites a folder; choose "
                                "another NAME or remove it first",
                                folder);
        return ag__cli_fail("cannot create %s: %s", folder, strerror(errno));
    }
    char *toml = NULL, *doc = NULL;
    if (asprintf(&toml, wrangler_toml, name, name) < 0)
        toml = NULL;
    if (asprintf(&doc, readme, name, folder, name) < 0)
        doc = NULL;
    const struct {
        const char *name, *text;
    } files[] = {
        {"wrangler.toml", toml},
        {".dev.vars.example", dev_vars_example},
        {".gitignore", gitignore},
        {"README.md", doc},
    };
    int rc = 0;
    for (size_t i = 0; i < AG_ARRAY_LEN(files) && rc == 0; i++) {
        rc = write_file(folder, files[i].name, files[i].text);
        if (rc < 0)
            ag__cli_fail("cannot write %s/%s: %s", folder, files[i].name, strerror(-rc));
    }
    free(toml);
    free(doc);
    if (rc < 0)
        return 1;
    printf("Created %s/ with wrangler.toml, .dev.vars.example, .gitignore and README.md\n"
           "\n"
           "Next steps:\n"
           "  cd %s\n"
           "  aigate secret put ANTHROPIC_API_KEY   # or: cp .dev.vars.example .dev.vars\n"
           "  aigate config check\n"
           "  aigate dev                             # http://127.0.0.1:8787/api/generate\n"
           "  aigate deploy                          # apply wrangler.toml to a running server\n"
           "  aigate tail                            # live requests\n"
           "  aigate stats                           # usage, cost, cache hits\n",
           folder, folder);
    return ag__cli_flush_stdout();
}
