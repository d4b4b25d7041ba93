/* SPDX-License-Identifier: MIT
 *
 * test_routes.c: the route table, each generation's merged routes (limits,
 * shared namespaces, models), config errors about routes, and the holds that
 * let a new generation be published while requests finish on the old one.
 */
#include "util/platform.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "gateway/generation.h"
#include "gateway/internal.h"
#include "util/errors.h"

#include "harness.h"

static int load(ag_config_t *cfg, const char *text)
{
    char path[] = "/tmp/aigate-test-routes-XXXXXX";
    int fd = mkstemp(path);
    if (fd < 0)
        return -1;
    ssize_t n = write(fd, text, strlen(text));
    close(fd);
    ag_config_defaults(cfg);
    int rc = n == (ssize_t)strlen(text) ? ag_config_load_file(cfg, path, NULL) : -1;
    unlink(path);
    return rc;
}

/* A generation of `text`, built after `prev` (NULL: the first) as a reload builds it. */
static gw_gen_t *gen_after(const gw_gen_t *prev, const char *text)
{
    ag_config_t cfg;
    if (load(&cfg, text) != 0) {
        ag_config_fini(&cfg);
        return NULL;
    }
    gw_gen_t *g = NULL;
    int rc = gw_gen_new_from(&cfg, prev, NULL, &g);
    ag_config_fini(&cfg);
    return rc == 0 ? g : NULL;
}

static gw_gen_t *gen_of(const char *text)
{
    return gen_after(NULL, text);
}

TEST(the_table_holds_every_route_once)
{
    for (size_t i = 0; i < gw_nroute_defs; i++) {
        ASSERT(gw_route_defs[i].handle != NULL);
        ASSERT(gw_route_defs[i].path[0] == '/');
        for (size_t j = 0; j < i; j++)
            ASSERT(strcmp(gw_route_defs[i].path, gw_route_defs[j].path) != 0 ||
                   strcmp(gw_route_defs[i].method, gw_route_defs[j].method) != 0);
    }
    /* An AI route speaks a protocol with every entry filled. */
    for (size_t i = 0; i < gw_nroute_defs; i++) {
        const gw_protocol_t *p = gw_route_defs[i].proto;
        if (p)
            ASSERT(p->respond_error && p->serve_cached && p->upstream_failure);
    }
}

TEST(lookup_by_method_and_path)
{
    gw_gen_t *g = gen_of("");
    ASSERT(g != NULL);
    bool known;
    const gw_route_t *r = gw_gen_route(g, AG_STR_LIT("POST"), AG_STR_LIT("/api/generate"), &known);
    ASSERT(r && known && r->def->handle == gw_generate_handle && r->gen == g);
    r = gw_gen_route(g, AG_STR_LIT("POST"), AG_STR_LIT("/v1/messages"), &known);
    ASSERT(r && r->def->proto == &gw_proto_anthropic);
    ASSERT(gw_gen_route(g, AG_STR_LIT("GET"), AG_STR_LIT("/api/generate"), &known) == NULL);
    ASSERT(known); /* the path exists, for another method */
    /* The OpenAI-shaped and Anthropic API routes answer CORS to listed origins only. */
    r = gw_gen_route(g, AG_STR_LIT("POST"), AG_STR_LIT("/v1/chat/completions"), &known);
    ASSERT(r && r->def->proto == &gw_proto_openai && r->def->cors_strict);
    r = gw_gen_route(g, AG_STR_LIT("POST"), AG_STR_LIT("/v1/messages/count_tokens"), &known);
    ASSERT(r && r->def->proto == &gw_proto_anthropic && r->def->cors_strict);
    r = gw_gen_route(g, AG_STR_LIT("GET"), AG_STR_LIT("/v1/models"), &known);
    ASSERT(r && r->def->proto == &gw_proto_models && r->def->cors_strict);
    r = gw_gen_route(g, AG_STR_LIT("POST"), AG_STR_LIT("/api/generate"), &known);
    ASSERT(r && !r->def->cors_strict);
    r = gw_gen_route(g, AG_STR_LIT("HEAD"), AG_STR_LIT("/healthz"), &known);
    ASSERT(r && strcmp(r->def->path, "/healthz") == 0);
    ASSERT(gw_gen_route(g, AG_STR_LIT("POST"), AG_STR_LIT("/api/generat"), &known) == NULL);
    ASSERT(!known);
    gw_gen_unref(g);
}

TEST(each_route_gets_its_merged_limit)
{
    gw_gen_t *g = gen_of("[aigate]\nrate_limit = 40\n"
                         "[aigate.routes.\"/v1/messages\"]\nrate_limit = 4\nrate_period = 10\n");
    ASSERT(g != NULL);
    bool known;
    const gw_route_t *gen =
        gw_gen_route(g, AG_STR_LIT("POST"), AG_STR_LIT("/api/generate"), &known);
    const gw_route_t *msg = gw_gen_route(g, AG_STR_LIT("POST"), AG_STR_LIT("/v1/messages"), &known);
    ASSERT_EQ(gen->limit.limit, 40u);
    ASSERT_EQ(gen->limit.period_s, 60u);
    ASSERT_EQ(msg->limit.limit, 4u);
    ASSERT_EQ(msg->limit.period_s, 10u);
    ASSERT(gen->limit.lim != msg->limit.lim);
    ASSERT_STREQ(msg->limit.name, "route:/v1/messages");
    gw_gen_unref(g);
}

TEST(one_namespace_one_limiter)
{
    gw_gen_t *g = gen_of("[[unsafe.bindings]]\nname = \"A\"\ntype = \"ratelimit\"\n"
                         "namespace_id = \"7\"\nsimple = { limit = 3, period = 10 }\n"
                         "[[unsafe.bindings]]\nname = \"B\"\ntype = \"ratelimit\"\n"
                         "namespace_id = \"7\"\nsimple = { limit = 50, period = 60 }\n"
                         "[aigate]\nrate_limit_binding = \"A\"\n"
                         "[aigate.routes.\"/v1/messages\"]\nrate_limit_binding = \"B\"\n");
    ASSERT(g != NULL);
    bool known;
    const gw_route_t *gen =
        gw_gen_route(g, AG_STR_LIT("POST"), AG_STR_LIT("/api/generate"), &known);
    const gw_route_t *msg = gw_gen_route(g, AG_STR_LIT("POST"), AG_STR_LIT("/v1/messages"), &known);
    ASSERT(gen->limit.lim == msg->limit.lim);
    ASSERT(msg->limit.shared && !gen->limit.shared);
    ASSERT_EQ(msg->limit.limit, 3u); /* the namespace's first binding sets the numbers */
    gw_gen_unref(g);
}

TEST(models_are_per_route)
{
    gw_gen_t *g = gen_of("[vars]\nDEFAULT_MODEL = \"m-default\"\n[aigate]\nmodels = [\"m-a\"]\n"
                         "[aigate.routes.\"/v1/messages\"]\nmodels = [\"m-b\"]\n");
    ASSERT(g != NULL);
    bool known;
    const gw_route_t *gen =
        gw_gen_route(g, AG_STR_LIT("POST"), AG_STR_LIT("/api/generate"), &known);
    const gw_route_t *msg = gw_gen_route(g, AG_STR_LIT("POST"), AG_STR_LIT("/v1/messages"), &known);
    ASSERT(gw_route_model_allowed(gen, "m-a", 3));
    ASSERT(!gw_route_model_allowed(gen, "m-b", 3));
    ASSERT(gw_route_model_allowed(msg, "m-b", 3));
    ASSERT(!gw_route_model_allowed(msg, "m-a", 3));
    ASSERT(gw_route_model_allowed(msg, "m-default", 9));
    ASSERT(!gw_route_model_allowed(msg, "m-defaul", 8));
    gw_gen_unref(g);
}

TEST(a_table_for_no_such_route_is_refused)
{
    ag_config_t cfg;
    ASSERT_EQ(load(&cfg, "\n[aigate.routes.\"/v2/nothing\"]\ncache = false\n"), 0);
    char *diag = NULL;
    size_t len = 0;
    FILE *errs = open_memstream(&diag, &len);
    gw_gen_t *g = NULL;
    ASSERT_EQ(gw_gen_new(&cfg, errs, &g), AG_EBADCONFIG);
    fclose(errs);
    ASSERT(strstr(diag, ":2:") != NULL);
    ASSERT(strstr(diag, "aigate.routes.\"/v2/nothing\": no such AI route") != NULL);
    ASSERT(strstr(diag, "/v1/messages") != NULL);
    free(diag);
    ag_config_fini(&cfg);
}

TEST(the_upstream_key_is_resolved_not_configured)
{
    setenv("AIGATE_TEST_KEY", "sk-resolved", 1);
    gw_gen_t *g = gen_of("[aigate]\napi_key_secret = \"AIGATE_TEST_KEY\"\n");
    ASSERT(g != NULL);
    ASSERT_STREQ(g->api_key_header, "x-api-key: sk-resolved");
    ASSERT(g->generate_headers[0] == g->api_key_header);
    gw_gen_unref(g);
    unsetenv("AIGATE_TEST_KEY");
    g = gen_of("[aigate]\napi_key_secret = \"AIGATE_TEST_KEY\"\ndata_dir = \"/nonexistent/x\"\n");
    ASSERT(g != NULL && g->api_key_header == NULL);
    gw_gen_unref(g);
}

TEST(requests_finish_on_the_generation_they_took)
{
    ag_gateway_t gw;
    memset(&gw, 0, sizeof(gw));
    pthread_mutex_init(&gw.gen_lock, NULL);
    gw_gen_t *first = gen_of("[aigate]\nrate_limit = 1\n");
    gw_gen_t *second = gen_after(first, "[aigate]\nrate_limit = 2\n");
    ASSERT(first && second && first->number == 1 && second->number == 2);
    atomic_store(&gw.current, first);
    gw_worker_t w;
    memset(&w, 0, sizeof(w));
    w.gw = &gw;

    gw_gen_ref_t *a = gw_gen_acquire(&w);
    gw_gen_ref_t *b = gw_gen_acquire(&w);
    ASSERT(a == b && a->gen == first && a->users == 2);
    ASSERT_EQ(atomic_load(&first->refs), 2u); /* current + this worker: not one per request */

    gw_gen_publish(&gw, second);
    ASSERT_EQ(atomic_load(&first->refs), 1u); /* only the worker's hold is left */
    gw_gen_ref_t *c = gw_gen_acquire(&w);
    ASSERT(c->gen == second && c != a);
    ASSERT(w.old_gens == a); /* still used by two requests */
    /* A flight call of an old request holds the old generation too. */
    gw_gen_ref_t *held = gw_gen_hold(&w, first);
    ASSERT(held == a && a->users == 3);
    gw_gen_release(a);
    gw_gen_release(b);
    ASSERT(w.old_gens == a && a->users == 1);
    gw_gen_release(held); /* the last user: the hold and the generation go */
    ASSERT(w.old_gens == NULL);
    ASSERT_EQ(atomic_load(&second->refs), 2u);
    gw_gen_release(c);
    gw_gen_worker_done(&w);
    ASSERT_EQ(atomic_load(&second->refs), 1u);
    gw_gen_unref(atomic_load(&gw.current));
    pthread_mutex_destroy(&gw.gen_lock);
}

TEST(a_reload_keeps_the_limiters_whose_numbers_it_leaves_alone)
{
    gw_gen_t *a = gen_of("[aigate]\nrate_limit = 2\n"
                         "[aigate.routes.\"/v1/messages\"]\nrate_limit = 3\n");
    ASSERT(a != NULL);
    bool known;
    const gw_route_t *ga = gw_gen_route(a, AG_STR_LIT("POST"), AG_STR_LIT("/api/generate"), &known);
    const gw_route_t *ma = gw_gen_route(a, AG_STR_LIT("POST"), AG_STR_LIT("/v1/messages"), &known);
    ag_limit_result_t r;
    ag_limiter_check(ga->limit.lim, "c", 1, 1000000, &r);
    ag_limiter_check(ga->limit.lim, "c", 1, 1000000, &r);
    ASSERT(r.allowed && r.remaining == 0);
    /* /api/generate keeps 2 per minute, /v1/messages changes: only the first carries over. */
    gw_gen_t *b = gen_after(a, "[aigate]\nrate_limit = 2\ncache = false\n"
                               "[aigate.routes.\"/v1/messages\"]\nrate_limit = 4\n");
    ASSERT(b != NULL && b->number == a->number + 1);
    const gw_route_t *gb = gw_gen_route(b, AG_STR_LIT("POST"), AG_STR_LIT("/api/generate"), &known);
    const gw_route_t *mb = gw_gen_route(b, AG_STR_LIT("POST"), AG_STR_LIT("/v1/messages"), &known);
    ASSERT(gb->limit.lim == ga->limit.lim);
    ASSERT(mb->limit.lim != ma->limit.lim);
    ASSERT_EQ(mb->limit.limit, 4u);
    /* The old generation goes; its shared limiter stays, with the client's count. */
    gw_gen_unref(a);
    ag_limiter_check(gb->limit.lim, "c", 1, 1000001, &r);
    ASSERT(!r.allowed);
    gw_gen_t *c = gen_after(b, "[aigate]\nrate_limit = 5\n");
    ASSERT(c != NULL);
    const gw_route_t *gc = gw_gen_route(c, AG_STR_LIT("POST"), AG_STR_LIT("/api/generate"), &known);
    ASSERT(gc->limit.lim != gb->limit.lim);
    ag_limiter_check(gc->limit.lim, "c", 1, 1000002, &r);
    ASSERT(r.allowed && r.limit == 5);
    gw_gen_unref(b);
    gw_gen_unref(c);
}

AG_TESTS(
    AG_TEST_ENTRY(the_table_holds_every_route_once) AG_TEST_ENTRY(lookup_by_method_and_path)
        AG_TEST_ENTRY(each_route_gets_its_merged_limit) AG_TEST_ENTRY(one_namespace_one_limiter)
            AG_TEST_ENTRY(models_are_per_route) AG_TEST_ENTRY(a_table_for_no_such_route_is_refused)
                AG_TEST_ENTRY(the_upstream_key_is_resolved_not_configured)
                    AG_TEST_ENTRY(requests_finish_on_the_generation_they_took)
                        AG_TEST_ENTRY(a_reload_keeps_the_limiters_whose_numbers_it_leaves_alone))
