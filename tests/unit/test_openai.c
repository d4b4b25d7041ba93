/* SPDX-License-Identifier: MIT
 *
 * test_openai.c: the OpenAI translator (gateway/openai.c): a table of request translations
 * checked against the exact Anthropic body, every ignored field, the refusals; answers against
 * exact chat.completion JSON; the fake upstream's recorded streams (tests/unit/data/openai/)
 * replayed through the stream translator split at every byte; errors and model lists.
 */
#include "util/platform.h"

#include <string.h>

#include <jansson.h>

#include "gateway/openai.h"
#include "upstream/sse.h"
#include "util/buf.h"
#include "util/errors.h"

#include "harness.h"

/* Compares JSON texts by meaning (jansson's json_equal: same keys, values, order of arrays). */
static bool same_json(const char *got, size_t glen, const char *want)
{
    json_error_t e;
    json_t *g = json_loadb(got, glen, JSON_ALLOW_NUL, &e);
    json_t *w = json_loads(want, JSON_ALLOW_NUL, &e);
    if (!w)
        fprintf(stderr, "  bad expected JSON: %s: %s\n", e.text, want);
    bool ok = g && w && json_equal(g, w);
    if (!ok)
        fprintf(stderr, "  got:  %.*s\n  want: %s\n", (int)glen, got, want);
    json_decref(g);
    json_decref(w);
    return ok;
}

/* ---- requests --------------------------------------------------------------------- */

#define MIN_OUT                                                                                    \
    "{\"model\":\"claude-x\",\"max_tokens\":1024,\"messages\":[{\"role\":\"user\",\"content\":"    \
    "\"hi\"}]}"
#define MIN_MSGS "\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]"
#define TOOL_DEF                                                                                   \
    "\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"get_weather\",\"parameters\":"     \
    "{\"type\":\"object\",\"properties\":{\"city\":{\"type\":\"string\"}}}}}]"
#define TOOL_OUT                                                                                   \
    "\"tools\":[{\"name\":\"get_weather\",\"input_schema\":{\"type\":\"object\",\"properties\":"   \
    "{\"city\":{\"type\":\"string\"}}}}]"

typedef struct req_case {
    const char *name;
    const char *in;
    const char *want;  /* the exact Anthropic body; NULL: refused */
    const char *param; /* refused: error.param ("" for null) */
    bool stream, include_usage;
} req_case_t;

static const req_case_t req_cases[] = {
    /* ---- every mapped field ---- */
    {"minimal", "{\"model\":\"claude-x\"," MIN_MSGS "}", MIN_OUT, NULL, false, false},
    {"default_model_when_absent", "{" MIN_MSGS "}",
     "{\"model\":\"claude-default\",\"max_tokens\":1024," MIN_MSGS "}", NULL, false, false},
    {"system_and_developer_hoisted_and_joined",
     "{\"model\":\"claude-x\",\"messages\":[{\"role\":\"system\",\"content\":\"Be brief.\"},"
     "{\"role\":\"user\",\"content\":\"hi\"},{\"role\":\"developer\",\"content\":[{\"type\":"
     "\"text\",\"text\":\"No jokes.\"},{\"type\":\"text\",\"text\":\"Use English.\"}]},"
     "{\"role\":\"assistant\",\"content\":\"hello\"},{\"role\":\"system\",\"name\":\"s\","
     "\"content\":\"Last.\"},{\"role\":\"user\",\"content\":\"again\"}]}",
     "{\"model\":\"claude-x\",\"max_tokens\":1024,\"system\":\"Be brief.\\nNo jokes.\\nUse "
     "English.\\nLast.\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"},{\"role\":"
     "\"assistant\",\"content\":\"hello\"},{\"role\":\"user\",\"content\":\"again\"}]}",
     NULL, false, false},
    {"max_tokens", "{\"model\":\"claude-x\",\"max_tokens\":77," MIN_MSGS "}",
     "{\"model\":\"claude-x\",\"max_tokens\":77," MIN_MSGS "}", NULL, false, false},
    {"max_completion_tokens_wins",
     "{\"model\":\"claude-x\",\"max_tokens\":77,\"max_completion_tokens\":55," MIN_MSGS "}",
     "{\"model\":\"claude-x\",\"max_tokens\":55," MIN_MSGS "}", NULL, false, false},
    {"temperature_kept", "{\"model\":\"claude-x\",\"temperature\":0.5," MIN_MSGS "}",
     "{\"model\":\"claude-x\",\"max_tokens\":1024," MIN_MSGS ",\"temperature\":0.5}", NULL, false,
     false},
    {"temperature_capped_at_1", "{\"model\":\"claude-x\",\"temperature\":1.7," MIN_MSGS "}",
     "{\"model\":\"claude-x\",\"max_tokens\":1024," MIN_MSGS ",\"temperature\":1.0}", NULL, false,
     false},
    {"temperature_integer_2_capped", "{\"model\":\"claude-x\",\"temperature\":2," MIN_MSGS "}",
     "{\"model\":\"claude-x\",\"max_tokens\":1024," MIN_MSGS ",\"temperature\":1}", NULL, false,
     false},
    {"top_p", "{\"model\":\"claude-x\",\"top_p\":0.25," MIN_MSGS "}",
     "{\"model\":\"claude-x\",\"max_tokens\":1024," MIN_MSGS ",\"top_p\":0.25}", NULL, false,
     false},
    {"stop_string", "{\"model\":\"claude-x\",\"stop\":\"END\"," MIN_MSGS "}",
     "{\"model\":\"claude-x\",\"max_tokens\":1024," MIN_MSGS ",\"stop_sequences\":[\"END\"]}", NULL,
     false, false},
    {"stop_array_blank_entries_dropped",
     "{\"model\":\"claude-x\",\"stop\":[\"a\",\" \",\"\\n\\t\",\"b c\"]," MIN_MSGS "}",
     "{\"model\":\"claude-x\",\"max_tokens\":1024," MIN_MSGS ",\"stop_sequences\":[\"a\","
     "\"b c\"]}",
     NULL, false, false},
    {"stop_all_blank_omitted", "{\"model\":\"claude-x\",\"stop\":[\" \",\"\"]," MIN_MSGS "}",
     MIN_OUT, NULL, false, false},
    {"stream_true", "{\"model\":\"claude-x\",\"stream\":true," MIN_MSGS "}",
     "{\"model\":\"claude-x\",\"max_tokens\":1024," MIN_MSGS ",\"stream\":true}", NULL, true,
     false},
    {"stream_include_usage",
     "{\"model\":\"claude-x\",\"stream\":true,\"stream_options\":{\"include_usage\":true}," MIN_MSGS
     "}",
     "{\"model\":\"claude-x\",\"max_tokens\":1024," MIN_MSGS ",\"stream\":true}", NULL, true, true},
    {"stream_false_omitted", "{\"model\":\"claude-x\",\"stream\":false," MIN_MSGS "}", MIN_OUT,
     NULL, false, false},
    {"image_base64_data_url",
     "{\"model\":\"claude-x\",\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"text\","
     "\"text\":\"What is it?\"},{\"type\":\"image_url\",\"image_url\":{\"url\":"
     "\"data:image/png;base64,iVBORw0KGgo=\",\"detail\":\"high\"}}]}]}",
     "{\"model\":\"claude-x\",\"max_tokens\":1024,\"messages\":[{\"role\":\"user\",\"content\":"
     "[{\"type\":\"text\",\"text\":\"What is it?\"},{\"type\":\"image\",\"source\":{\"type\":"
     "\"base64\",\"media_type\":\"image/png\",\"data\":\"iVBORw0KGgo=\"}}]}]}",
     NULL, false, false},
    {"image_https_url",
     "{\"model\":\"claude-x\",\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":"
     "\"image_url\",\"image_url\":{\"url\":\"https://example.com/cat.jpg\"}}]}]}",
     "{\"model\":\"claude-x\",\"max_tokens\":1024,\"messages\":[{\"role\":\"user\",\"content\":"
     "[{\"type\":\"image\",\"source\":{\"type\":\"url\",\"url\":\"https://example.com/cat.jpg\"}}"
     "]}]}",
     NULL, false, false},
    {"audio_part_stripped_empty_text_dropped",
     "{\"model\":\"claude-x\",\"messages\":[{\"role\":\"user\",\"name\":\"bob\",\"content\":[{"
     "\"type\":\"input_audio\",\"input_audio\":{\"data\":\"AAA\",\"format\":\"wav\"}},{\"type\":"
     "\"text\",\"text\":\"\"},{\"type\":\"text\",\"text\":\"transcribe\"}]}]}",
     "{\"model\":\"claude-x\",\"max_tokens\":1024,\"messages\":[{\"role\":\"user\",\"content\":"
     "[{\"type\":\"text\",\"text\":\"transcribe\"}]}]}",
     NULL, false, false},
    {"assistant_tool_calls_become_tool_use",
     "{\"model\":\"claude-x\",\"messages\":[{\"role\":\"user\",\"content\":\"weather?\"},"
     "{\"role\":\"assistant\",\"content\":\"Checking.\",\"tool_calls\":[{\"id\":\"call_1\","
     "\"type\":\"function\",\"function\":{\"name\":\"get_weather\",\"arguments\":"
     "\"{\\\"city\\\":\\\"Paris\\\",\\\"days\\\":[1,2]}\"}}]}]}",
     "{\"model\":\"claude-x\",\"max_tokens\":1024,\"messages\":[{\"role\":\"user\",\"content\":"
     "\"weather?\"},{\"role\":\"assistant\",\"content\":[{\"type\":\"text\",\"text\":"
     "\"Checking.\"},{\"type\":\"tool_use\",\"id\":\"call_1\",\"name\":\"get_weather\",\"input\":"
     "{\"city\":\"Paris\",\"days\":[1,2]}}]}]}",
     NULL, false, false},
    {"assistant_null_content_empty_arguments",
     "{\"model\":\"claude-x\",\"messages\":[{\"role\":\"user\",\"content\":\"go\"},{\"role\":"
     "\"assistant\",\"content\":null,\"tool_calls\":[{\"id\":\"c1\",\"type\":\"function\","
     "\"function\":{\"name\":\"a\",\"arguments\":\"\"}},{\"id\":\"c2\",\"type\":\"function\","
     "\"function\":{\"name\":\"b\",\"arguments\":\"{}\"}}]}]}",
     "{\"model\":\"claude-x\",\"max_tokens\":1024,\"messages\":[{\"role\":\"user\",\"content\":"
     "\"go\"},{\"role\":\"assistant\",\"content\":[{\"type\":\"tool_use\",\"id\":\"c1\",\"name\":"
     "\"a\",\"input\":{}},{\"type\":\"tool_use\",\"id\":\"c2\",\"name\":\"b\",\"input\":{}}]}]}",
     NULL, false, false},
    {"assistant_parts_refusal_dropped",
     "{\"model\":\"claude-x\",\"messages\":[{\"role\":\"user\",\"content\":\"q\"},{\"role\":"
     "\"assistant\",\"content\":[{\"type\":\"text\",\"text\":\"a\"},{\"type\":\"refusal\","
     "\"refusal\":\"no\"}]}]}",
     "{\"model\":\"claude-x\",\"max_tokens\":1024,\"messages\":[{\"role\":\"user\",\"content\":"
     "\"q\"},{\"role\":\"assistant\",\"content\":[{\"type\":\"text\",\"text\":\"a\"}]}]}",
     NULL, false, false},
    {"consecutive_tool_results_merged",
     "{\"model\":\"claude-x\",\"messages\":[{\"role\":\"user\",\"content\":\"go\"},{\"role\":"
     "\"assistant\",\"tool_calls\":[{\"id\":\"c1\",\"type\":\"function\",\"function\":{\"name\":"
     "\"a\",\"arguments\":\"{}\"}},{\"id\":\"c2\",\"type\":\"function\",\"function\":{\"name\":"
     "\"b\",\"arguments\":\"{}\"}}]},{\"role\":\"tool\",\"tool_call_id\":\"c1\",\"content\":"
     "\"r1\"},{\"role\":\"system\",\"content\":\"mid\"},{\"role\":\"tool\",\"tool_call_id\":"
     "\"c2\",\"content\":[{\"type\":\"text\",\"text\":\"r2\"}]},{\"role\":\"user\",\"content\":"
     "\"thanks\"}]}",
     "{\"model\":\"claude-x\",\"max_tokens\":1024,\"system\":\"mid\",\"messages\":[{\"role\":"
     "\"user\",\"content\":\"go\"},{\"role\":\"assistant\",\"content\":[{\"type\":\"tool_use\","
     "\"id\":\"c1\",\"name\":\"a\",\"input\":{}},{\"type\":\"tool_use\",\"id\":\"c2\",\"name\":"
     "\"b\",\"input\":{}}]},{\"role\":\"user\",\"content\":[{\"type\":\"tool_result\","
     "\"tool_use_id\":\"c1\",\"content\":\"r1\"},{\"type\":\"tool_result\",\"tool_use_id\":"
     "\"c2\",\"content\":[{\"type\":\"text\",\"text\":\"r2\"}]}]},{\"role\":\"user\","
     "\"content\":\"thanks\"}]}",
     NULL, false, false},
    {"tools_parameters_become_input_schema",
     "{\"model\":\"claude-x\",\"tools\":[{\"type\":\"function\",\"function\":{\"name\":"
     "\"get_weather\",\"description\":\"Weather\",\"strict\":true,\"parameters\":{\"type\":"
     "\"object\",\"properties\":{\"city\":{\"type\":\"string\"}},\"required\":[\"city\"]}}},"
     "{\"type\":\"function\",\"function\":{\"name\":\"now\"}}]," MIN_MSGS "}",
     "{\"model\":\"claude-x\",\"max_tokens\":1024," MIN_MSGS ",\"tools\":[{\"name\":"
     "\"get_weather\",\"description\":\"Weather\",\"input_schema\":{\"type\":\"object\","
     "\"properties\":{\"city\":{\"type\":\"string\"}},\"required\":[\"city\"]}},{\"name\":\"now\","
     "\"input_schema\":{\"type\":\"object\",\"properties\":{}}}]}",
     NULL, false, false},
    {"tool_choice_auto",
     "{\"model\":\"claude-x\"," TOOL_DEF ",\"tool_choice\":\"auto\"," MIN_MSGS "}",
     "{\"model\":\"claude-x\",\"max_tokens\":1024," MIN_MSGS "," TOOL_OUT
     ",\"tool_choice\":{\"type\":\"auto\"}}",
     NULL, false, false},
    {"tool_choice_required_is_any",
     "{\"model\":\"claude-x\"," TOOL_DEF ",\"tool_choice\":\"required\"," MIN_MSGS "}",
     "{\"model\":\"claude-x\",\"max_tokens\":1024," MIN_MSGS "," TOOL_OUT
     ",\"tool_choice\":{\"type\":\"any\"}}",
     NULL, false, false},
    {"tool_choice_none",
     "{\"model\":\"claude-x\"," TOOL_DEF ",\"tool_choice\":\"none\"," MIN_MSGS "}",
     "{\"model\":\"claude-x\",\"max_tokens\":1024," MIN_MSGS "," TOOL_OUT
     ",\"tool_choice\":{\"type\":\"none\"}}",
     NULL, false, false},
    {"tool_choice_named_function",
     "{\"model\":\"claude-x\"," TOOL_DEF ",\"tool_choice\":{\"type\":\"function\",\"function\":"
     "{\"name\":\"get_weather\"}}," MIN_MSGS "}",
     "{\"model\":\"claude-x\",\"max_tokens\":1024," MIN_MSGS "," TOOL_OUT
     ",\"tool_choice\":{\"type\":\"tool\",\"name\":\"get_weather\"}}",
     NULL, false, false},
    {"parallel_tool_calls_false_alone",
     "{\"model\":\"claude-x\"," TOOL_DEF ",\"parallel_tool_calls\":false," MIN_MSGS "}",
     "{\"model\":\"claude-x\",\"max_tokens\":1024," MIN_MSGS "," TOOL_OUT
     ",\"tool_choice\":{\"type\":\"auto\",\"disable_parallel_tool_use\":true}}",
     NULL, false, false},
    {"parallel_tool_calls_false_with_required",
     "{\"model\":\"claude-x\"," TOOL_DEF
     ",\"tool_choice\":\"required\",\"parallel_tool_calls\":false," MIN_MSGS "}",
     "{\"model\":\"claude-x\",\"max_tokens\":1024," MIN_MSGS "," TOOL_OUT
     ",\"tool_choice\":{\"type\":\"any\",\"disable_parallel_tool_use\":true}}",
     NULL, false, false},
    {"parallel_tool_calls_false_with_none",
     "{\"model\":\"claude-x\"," TOOL_DEF
     ",\"tool_choice\":\"none\",\"parallel_tool_calls\":false," MIN_MSGS "}",
     "{\"model\":\"claude-x\",\"max_tokens\":1024," MIN_MSGS "," TOOL_OUT
     ",\"tool_choice\":{\"type\":\"none\"}}",
     NULL, false, false},
    {"parallel_tool_calls_true_is_default",
     "{\"model\":\"claude-x\"," TOOL_DEF ",\"parallel_tool_calls\":true," MIN_MSGS "}",
     "{\"model\":\"claude-x\",\"max_tokens\":1024," MIN_MSGS "," TOOL_OUT "}", NULL, false, false},
    {"parallel_tool_calls_without_tools_ignored",
     "{\"model\":\"claude-x\",\"parallel_tool_calls\":false," MIN_MSGS "}", MIN_OUT, NULL, false,
     false},
    {"n_1_accepted", "{\"model\":\"claude-x\",\"n\":1," MIN_MSGS "}", MIN_OUT, NULL, false, false},
    {"nulls_are_absent",
     "{\"model\":\"claude-x\",\"n\":null,\"temperature\":null,\"top_p\":null,\"stop\":null,"
     "\"stream\":null,\"stream_options\":null,\"tools\":null,\"tool_choice\":null,"
     "\"max_tokens\":null," MIN_MSGS "}",
     MIN_OUT, NULL, false, false},
    {"thinking_passed_on",
     "{\"model\":\"claude-x\",\"thinking\":{\"type\":\"enabled\",\"budget_tokens\":2048},"
     "\"max_tokens\":4096," MIN_MSGS "}",
     "{\"model\":\"claude-x\",\"max_tokens\":4096," MIN_MSGS
     ",\"thinking\":{\"type\":\"enabled\",\"budget_tokens\":2048}}",
     NULL, false, false},
    {"everything_at_once",
     "{\"model\":\"claude-x\",\"max_completion_tokens\":300,\"temperature\":0.25,\"top_p\":0.5,"
     "\"stop\":[\"X\"],\"stream\":true,\"stream_options\":{\"include_usage\":false},\"seed\":1,"
     "\"user\":\"u\"," TOOL_DEF ",\"tool_choice\":\"auto\",\"messages\":[{\"role\":\"developer\","
     "\"content\":\"D\"},{\"role\":\"user\",\"content\":\"hi\"}]}",
     "{\"model\":\"claude-x\",\"max_tokens\":300,\"system\":\"D\"," MIN_MSGS
     ",\"temperature\":0.25,\"top_p\":0.5,\"stop_sequences\":[\"X\"],\"stream\":true," TOOL_OUT
     ",\"tool_choice\":{\"type\":\"auto\"}}",
     NULL, true, false},

    /* ---- refused: invalid values and combinations ---- */
    {"not_json", "{\"model\":", NULL, "", false, false},
    {"not_an_object", "[1,2]", NULL, "", false, false},
    {"model_not_a_string", "{\"model\":7," MIN_MSGS "}", NULL, "model", false, false},
    {"model_empty", "{\"model\":\"\"," MIN_MSGS "}", NULL, "model", false, false},
    {"messages_missing", "{\"model\":\"claude-x\"}", NULL, "messages", false, false},
    {"messages_empty", "{\"model\":\"claude-x\",\"messages\":[]}", NULL, "messages", false, false},
    {"only_system_messages",
     "{\"model\":\"claude-x\",\"messages\":[{\"role\":\"system\",\"content\":\"s\"}]}", NULL,
     "messages", false, false},
    {"n_2", "{\"model\":\"claude-x\",\"n\":2," MIN_MSGS "}", NULL, "n", false, false},
    {"n_0", "{\"model\":\"claude-x\",\"n\":0," MIN_MSGS "}", NULL, "n", false, false},
    {"temperature_above_2", "{\"model\":\"claude-x\",\"temperature\":2.5," MIN_MSGS "}", NULL,
     "temperature", false, false},
    {"temperature_negative", "{\"model\":\"claude-x\",\"temperature\":-0.1," MIN_MSGS "}", NULL,
     "temperature", false, false},
    {"temperature_string", "{\"model\":\"claude-x\",\"temperature\":\"hot\"," MIN_MSGS "}", NULL,
     "temperature", false, false},
    {"top_p_above_1", "{\"model\":\"claude-x\",\"top_p\":1.5," MIN_MSGS "}", NULL, "top_p", false,
     false},
    {"max_tokens_zero", "{\"model\":\"claude-x\",\"max_tokens\":0," MIN_MSGS "}", NULL,
     "max_tokens", false, false},
    {"max_tokens_string", "{\"model\":\"claude-x\",\"max_tokens\":\"9\"," MIN_MSGS "}", NULL,
     "max_tokens", false, false},
    {"max_completion_tokens_negative",
     "{\"model\":\"claude-x\",\"max_completion_tokens\":-1," MIN_MSGS "}", NULL,
     "max_completion_tokens", false, false},
    {"stream_not_boolean", "{\"model\":\"claude-x\",\"stream\":\"yes\"," MIN_MSGS "}", NULL,
     "stream", false, false},
    {"stream_options_without_stream",
     "{\"model\":\"claude-x\",\"stream_options\":{\"include_usage\":true}," MIN_MSGS "}", NULL,
     "stream_options", false, false},
    {"stream_options_with_stream_false",
     "{\"model\":\"claude-x\",\"stream\":false,\"stream_options\":{}," MIN_MSGS "}", NULL,
     "stream_options", false, false},
    {"unknown_role",
     "{\"model\":\"claude-x\",\"messages\":[{\"role\":\"robot\",\"content\":\"x\"}]}", NULL,
     "messages[0].role", false, false},
    {"function_role_deprecated",
     "{\"model\":\"claude-x\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"},{\"role\":"
     "\"function\",\"name\":\"f\",\"content\":\"r\"}]}",
     NULL, "messages[1]", false, false},
    {"functions_deprecated",
     "{\"model\":\"claude-x\",\"functions\":[{\"name\":\"f\"}]," MIN_MSGS "}", NULL, "functions",
     false, false},
    {"user_content_missing", "{\"model\":\"claude-x\",\"messages\":[{\"role\":\"user\"}]}", NULL,
     "messages[0].content", false, false},
    {"user_only_audio",
     "{\"model\":\"claude-x\",\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":"
     "\"input_audio\",\"input_audio\":{}}]}]}",
     NULL, "messages[0].content", false, false},
    {"image_ftp_url",
     "{\"model\":\"claude-x\",\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"text\","
     "\"text\":\"x\"},{\"type\":\"image_url\",\"image_url\":{\"url\":\"ftp://h/x.png\"}}]}]}",
     NULL, "messages[0].content[1].image_url.url", false, false},
    {"image_data_url_not_base64",
     "{\"model\":\"claude-x\",\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":"
     "\"image_url\",\"image_url\":{\"url\":\"data:image/png,abc\"}}]}]}",
     NULL, "messages[0].content[0].image_url.url", false, false},
    {"image_data_url_not_an_image",
     "{\"model\":\"claude-x\",\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":"
     "\"image_url\",\"image_url\":{\"url\":\"data:text/plain;base64,aGk=\"}}]}]}",
     NULL, "messages[0].content[0].image_url.url", false, false},
    {"image_url_not_object",
     "{\"model\":\"claude-x\",\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":"
     "\"image_url\",\"image_url\":\"https://x/y.png\"}]}]}",
     NULL, "messages[0].content[0].image_url", false, false},
    {"unknown_part_type",
     "{\"model\":\"claude-x\",\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"file\","
     "\"file\":{}}]}]}",
     NULL, "messages[0].content[0].type", false, false},
    {"system_with_image_part",
     "{\"model\":\"claude-x\",\"messages\":[{\"role\":\"system\",\"content\":[{\"type\":"
     "\"image_url\",\"image_url\":{\"url\":\"https://x/y.png\"}}]},{\"role\":\"user\","
     "\"content\":\"x\"}]}",
     NULL, "messages[0].content[0]", false, false},
    {"tool_message_without_id",
     "{\"model\":\"claude-x\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"},{\"role\":"
     "\"tool\",\"content\":\"r\"}]}",
     NULL, "messages[1].tool_call_id", false, false},
    {"tool_call_arguments_not_json",
     "{\"model\":\"claude-x\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"},{\"role\":"
     "\"assistant\",\"tool_calls\":[{\"id\":\"c\",\"type\":\"function\",\"function\":{\"name\":"
     "\"f\",\"arguments\":\"{oops\"}}]}]}",
     NULL, "messages[1].tool_calls[0].function.arguments", false, false},
    {"tool_call_arguments_array",
     "{\"model\":\"claude-x\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"},{\"role\":"
     "\"assistant\",\"tool_calls\":[{\"id\":\"c\",\"type\":\"function\",\"function\":{\"name\":"
     "\"f\",\"arguments\":\"[1]\"}}]}]}",
     NULL, "messages[1].tool_calls[0].function.arguments", false, false},
    {"tool_call_without_id",
     "{\"model\":\"claude-x\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"},{\"role\":"
     "\"assistant\",\"tool_calls\":[{\"type\":\"function\",\"function\":{\"name\":\"f\"}}]}]}",
     NULL, "messages[1].tool_calls[0]", false, false},
    {"assistant_without_content_or_calls",
     "{\"model\":\"claude-x\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"},{\"role\":"
     "\"assistant\"}]}",
     NULL, "messages[1].content", false, false},
    {"tool_type_not_function",
     "{\"model\":\"claude-x\",\"tools\":[{\"type\":\"custom\",\"custom\":{\"name\":\"f\"}}]"
     "," MIN_MSGS "}",
     NULL, "tools[0]", false, false},
    {"tool_without_name",
     "{\"model\":\"claude-x\",\"tools\":[{\"type\":\"function\",\"function\":{}}]," MIN_MSGS "}",
     NULL, "tools[0].function.name", false, false},
    {"tool_choice_without_tools", "{\"model\":\"claude-x\",\"tool_choice\":\"auto\"," MIN_MSGS "}",
     NULL, "tool_choice", false, false},
    {"tool_choice_unknown_string",
     "{\"model\":\"claude-x\"," TOOL_DEF ",\"tool_choice\":\"sometimes\"," MIN_MSGS "}", NULL,
     "tool_choice", false, false},
    {"parallel_tool_calls_not_boolean",
     "{\"model\":\"claude-x\"," TOOL_DEF ",\"parallel_tool_calls\":\"no\"," MIN_MSGS "}", NULL,
     "parallel_tool_calls", false, false},
    {"stop_entry_not_string", "{\"model\":\"claude-x\",\"stop\":[\"a\",3]," MIN_MSGS "}", NULL,
     "stop[1]", false, false},
    {"thinking_not_object", "{\"model\":\"claude-x\",\"thinking\":true," MIN_MSGS "}", NULL,
     "thinking", false, false},
};

TEST(request_translation_table)
{
    ASSERT(AG_ARRAY_LEN(req_cases) >= 25);
    for (size_t i = 0; i < AG_ARRAY_LEN(req_cases); i++) {
        const req_case_t *c = &req_cases[i];
        ag_buf_t out;
        ag_buf_init(&out, 0);
        gw_openai_request_t info;
        memset(&info, 0xAA, sizeof(info));
        gw_openai_error_t err;
        memset(&err, 0, sizeof(err));
        int rc = gw_openai_request_to_anthropic(c->in, strlen(c->in), "claude-default", 1024, &out,
                                                &info, &err);
        if (c->want) {
            ASSERT_MSG_(rc == 0, "%s: refused (%d): %s [%s]", c->name, rc, err.message, err.param);
            ASSERT_MSG_(same_json(out.data, out.len, c->want), "%s: wrong upstream body", c->name);
            ASSERT_MSG_(info.stream == c->stream && info.include_usage == c->include_usage,
                        "%s: stream %d/%d include_usage %d/%d", c->name, info.stream, c->stream,
                        info.include_usage, c->include_usage);
            json_t *w = json_loads(c->want, 0, NULL);
            ASSERT_EQ(info.max_tokens, json_integer_value(json_object_get(w, "max_tokens")));
            ASSERT_STREQ(info.model, json_string_value(json_object_get(w, "model")));
            ASSERT_EQ(info.has_tools, json_object_get(w, "tools") != NULL);
            json_decref(w);
        } else {
            ASSERT_MSG_(rc == AG_EINVALID, "%s: accepted (rc %d): %.*s", c->name, rc, (int)out.len,
                        out.data ? out.data : "");
            ASSERT_EQ(out.len, 0);
            ASSERT_EQ(err.status, 400);
            ASSERT_STREQ(err.type, "invalid_request_error");
            ASSERT_MSG_(strcmp(err.param, c->param) == 0, "%s: param \"%s\", want \"%s\"", c->name,
                        err.param, c->param);
            ASSERT_MSG_(err.message[0] != '\0', "%s: no message", c->name);
        }
        ag_buf_fini(&out);
    }
}

/* Every field Anthropic's compatibility layer lists as ignored, and fields it does not know,
 * is accepted and never reaches the upstream. */
TEST(ignored_fields_never_reach_the_upstream)
{
    static const char *const ignored[] = {
        "\"logprobs\":true",
        "\"top_logprobs\":3",
        "\"metadata\":{\"k\":\"v\"}",
        "\"response_format\":{\"type\":\"json_object\"}",
        "\"prediction\":{\"type\":\"content\",\"content\":\"x\"}",
        "\"presence_penalty\":0.5",
        "\"frequency_penalty\":-0.5",
        "\"seed\":42",
        "\"service_tier\":\"default\"",
        "\"audio\":{\"voice\":\"alloy\",\"format\":\"mp3\"}",
        "\"logit_bias\":{\"50256\":-100}",
        "\"store\":true",
        "\"user\":\"user-1234\"",
        "\"modalities\":[\"text\"]",
        "\"reasoning_effort\":\"high\"",
        "\"web_search_options\":{}",
        "\"verbosity\":\"low\"",
        "\"prompt_cache_key\":\"k\"",
        "\"safety_identifier\":\"s\"",
        "\"an_unknown_field\":{\"deep\":[1,2,3]}",
    };
    for (size_t i = 0; i < AG_ARRAY_LEN(ignored); i++) {
        char in[512];
        snprintf(in, sizeof(in), "{\"model\":\"claude-x\",%s," MIN_MSGS "}", ignored[i]);
        ag_buf_t out;
        ag_buf_init(&out, 0);
        gw_openai_error_t err;
        int rc = gw_openai_request_to_anthropic(in, strlen(in), NULL, 1024, &out, NULL, &err);
        ASSERT_MSG_(rc == 0, "%s refused: %s", ignored[i], err.message);
        ASSERT_MSG_(same_json(out.data, out.len, MIN_OUT), "%s leaked", ignored[i]);
        ag_buf_fini(&out);
    }
}

TEST(request_needs_model_and_max_tokens_without_defaults)
{
    static const char in[] = "{" MIN_MSGS "}";
    ag_buf_t out;
    ag_buf_init(&out, 0);
    gw_openai_error_t err;
    ASSERT_EQ(gw_openai_request_to_anthropic(in, sizeof(in) - 1, NULL, 1024, &out, NULL, &err),
              AG_EINVALID);
    ASSERT_STREQ(err.param, "model");
    static const char in2[] = "{\"model\":\"m\"," MIN_MSGS "}";
    ASSERT_EQ(gw_openai_request_to_anthropic(in2, sizeof(in2) - 1, NULL, 0, &out, NULL, &err),
              AG_EINVALID);
    ASSERT_STREQ(err.param, "max_tokens");
    ASSERT_EQ(out.len, 0);
    /* The output is appended: what the buffer held stays. */
    ag_buf_append_cstr(&out, "X");
    ASSERT_EQ(gw_openai_request_to_anthropic(in2, sizeof(in2) - 1, NULL, 5, &out, NULL, &err), 0);
    ASSERT(out.data[0] == 'X');
    ASSERT(same_json(out.data + 1, out.len - 1, "{\"model\":\"m\",\"max_tokens\":5," MIN_MSGS "}"));
    ag_buf_fini(&out);
}

TEST(request_output_is_deterministic_and_keeps_unicode)
{
    static const char in[] = "{\"model\":\"claude-x\",\"messages\":[{\"role\":\"user\",\"content\":"
                             "\"caf\xC3\xA9 \\ud83d\\ude00 \\u0000 end\"}],\"temperature\":0.7}";
    ag_buf_t a, b;
    ag_buf_init(&a, 0);
    ag_buf_init(&b, 0);
    gw_openai_error_t err;
    ASSERT_EQ(gw_openai_request_to_anthropic(in, sizeof(in) - 1, NULL, 9, &a, NULL, &err), 0);
    ASSERT_EQ(gw_openai_request_to_anthropic(in, sizeof(in) - 1, NULL, 9, &b, NULL, &err), 0);
    ASSERT(a.len == b.len && memcmp(a.data, b.data, a.len) == 0);
    ASSERT(same_json(a.data, a.len,
                     "{\"model\":\"claude-x\",\"max_tokens\":9,\"messages\":[{\"role\":\"user\","
                     "\"content\":\"caf\xC3\xA9 \xF0\x9F\x98\x80 \\u0000 end\"}],"
                     "\"temperature\":0.7}"));
    /* Keys in one fixed order: model first, then max_tokens. */
    ASSERT(a.len > 20 && memcmp(a.data, "{\"model\":\"claude-x\",\"max_tokens\":9,", 35) == 0);
    ag_buf_fini(&a);
    ag_buf_fini(&b);
}

/* ---- answers ---------------------------------------------------------------------- */

typedef struct resp_case {
    const char *name;
    const char *in;
    const char *want;
} resp_case_t;

#define CHAT_HEAD(id) "{\"id\":\"" id "\",\"object\":\"chat.completion\",\"created\":1700000000,"
#define USAGE(p, c, t, cached)                                                                     \
    "\"usage\":{\"prompt_tokens\":" #p ",\"completion_tokens\":" #c ",\"total_tokens\":" #t        \
    ",\"prompt_tokens_details\":{\"cached_tokens\":" #cached "}}"

static const resp_case_t resp_cases[] = {
    {"text_end_turn_with_cache_tokens",
     "{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-x\","
     "\"content\":[{\"type\":\"text\",\"text\":\"Hello!\"}],\"stop_reason\":\"end_turn\","
     "\"stop_sequence\":null,\"usage\":{\"input_tokens\":10,\"cache_creation_input_tokens\":5,"
     "\"cache_read_input_tokens\":20,\"output_tokens\":7}}",
     CHAT_HEAD("msg_1") "\"model\":\"claude-x\",\"choices\":[{\"index\":0,\"message\":{\"role\":"
                        "\"assistant\",\"content\":\"Hello!\",\"refusal\":null},\"logprobs\":null,"
                        "\"finish_reason\":\"stop\"}]," USAGE(35, 7, 42, 20) "}"},
    {"text_and_tool_use_blocks",
     "{\"id\":\"msg_2\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-x\","
     "\"content\":[{\"type\":\"thinking\",\"thinking\":\"hm\",\"signature\":\"s\"},{\"type\":"
     "\"text\",\"text\":\"Let me \"},{\"type\":\"tool_use\",\"id\":\"toolu_1\",\"name\":"
     "\"get_weather\",\"input\":{\"city\":\"Paris\",\"n\":[1,2.5,\"\\u00e9\"]}},{\"type\":\"text\","
     "\"text\":\"check.\"},{\"type\":\"tool_use\",\"id\":\"toolu_2\",\"name\":\"now\",\"input\":"
     "{}}],\"stop_reason\":\"tool_use\",\"usage\":{\"input_tokens\":3,\"output_tokens\":4}}",
     CHAT_HEAD("msg_2") "\"model\":\"claude-x\",\"choices\":[{\"index\":0,\"message\":{\"role\":"
                        "\"assistant\",\"content\":\"Let me check.\",\"refusal\":null,"
                        "\"tool_calls\":[{\"id\":\"toolu_1\",\"type\":\"function\",\"function\":{"
                        "\"name\":\"get_weather\",\"arguments\":\"{\\\"city\\\":\\\"Paris\\\","
                        "\\\"n\\\":[1,2.5,\\\"\xC3\xA9\\\"]}\"}},{\"id\":\"toolu_2\",\"type\":"
                        "\"function\",\"function\":{\"name\":\"now\",\"arguments\":\"{}\"}}]},"
                        "\"logprobs\":null,\"finish_reason\":\"tool_calls\"}]," USAGE(3, 4, 7,
                                                                                      0) "}"},
    {"only_tool_use_content_null",
     "{\"id\":\"msg_3\",\"type\":\"message\",\"model\":\"claude-x\",\"content\":[{\"type\":"
     "\"tool_use\",\"id\":\"t\",\"name\":\"f\",\"input\":{\"a\":1}}],\"stop_reason\":"
     "\"tool_use\",\"usage\":{\"input_tokens\":1,\"output_tokens\":1}}",
     CHAT_HEAD("msg_3") "\"model\":\"claude-x\",\"choices\":[{\"index\":0,\"message\":{\"role\":"
                        "\"assistant\",\"content\":null,\"refusal\":null,\"tool_calls\":[{\"id\":"
                        "\"t\",\"type\":\"function\",\"function\":{\"name\":\"f\",\"arguments\":"
                        "\"{\\\"a\\\":1}\"}}]},\"logprobs\":null,\"finish_reason\":\"tool_calls\"}"
                        "]," USAGE(1, 1, 2, 0) "}"},
    {"max_tokens_is_length",
     "{\"id\":\"m\",\"type\":\"message\",\"model\":\"c\",\"content\":[{\"type\":\"text\",\"text\":"
     "\"a b\"}],\"stop_reason\":\"max_tokens\",\"usage\":{\"input_tokens\":2,\"output_tokens\":2}}",
     CHAT_HEAD("m") "\"model\":\"c\",\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\","
                    "\"content\":\"a b\",\"refusal\":null},\"logprobs\":null,\"finish_reason\":"
                    "\"length\"}]," USAGE(2, 2, 4, 0) "}"},
    {"stop_sequence_is_stop",
     "{\"id\":\"m\",\"type\":\"message\",\"model\":\"c\",\"content\":[{\"type\":\"text\",\"text\":"
     "\"a\"}],\"stop_reason\":\"stop_sequence\",\"stop_sequence\":\"X\",\"usage\":{"
     "\"input_tokens\":2,\"output_tokens\":1}}",
     CHAT_HEAD("m") "\"model\":\"c\",\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\","
                    "\"content\":\"a\",\"refusal\":null},\"logprobs\":null,\"finish_reason\":"
                    "\"stop\"}]," USAGE(2, 1, 3, 0) "}"},
    {"refusal_is_content_filter_no_model_uses_fallback",
     "{\"id\":\"m\",\"type\":\"message\",\"content\":[],\"stop_reason\":\"refusal\",\"usage\":{"
     "\"input_tokens\":2,\"output_tokens\":0}}",
     CHAT_HEAD("m") "\"model\":\"asked-model\",\"choices\":[{\"index\":0,\"message\":{\"role\":"
                    "\"assistant\",\"content\":null,\"refusal\":null},\"logprobs\":null,"
                    "\"finish_reason\":\"content_filter\"}]," USAGE(2, 0, 2, 0) "}"},
    {"context_window_is_length_missing_usage_is_zero",
     "{\"id\":\"m\",\"type\":\"message\",\"model\":\"c\",\"content\":[{\"type\":\"text\",\"text\":"
     "\"\"}],\"stop_reason\":\"model_context_window_exceeded\"}",
     CHAT_HEAD("m") "\"model\":\"c\",\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\","
                    "\"content\":\"\",\"refusal\":null},\"logprobs\":null,\"finish_reason\":"
                    "\"length\"}]," USAGE(0, 0, 0, 0) "}"},
    {"pause_turn_is_stop",
     "{\"id\":\"m\",\"type\":\"message\",\"model\":\"c\",\"content\":[{\"type\":\"text\",\"text\":"
     "\"x\"}],\"stop_reason\":\"pause_turn\",\"usage\":{\"input_tokens\":1,\"output_tokens\":1}}",
     CHAT_HEAD("m") "\"model\":\"c\",\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\","
                    "\"content\":\"x\",\"refusal\":null},\"logprobs\":null,\"finish_reason\":"
                    "\"stop\"}]," USAGE(1, 1, 2, 0) "}"},
};

TEST(response_translation_table)
{
    for (size_t i = 0; i < AG_ARRAY_LEN(resp_cases); i++) {
        const resp_case_t *c = &resp_cases[i];
        ag_buf_t out;
        ag_buf_init(&out, 0);
        int rc = gw_openai_response_from_anthropic(c->in, strlen(c->in), 1700000000, "asked-model",
                                                   &out);
        ASSERT_MSG_(rc == 0, "%s: rc %d", c->name, rc);
        ASSERT_MSG_(same_json(out.data, out.len, c->want), "%s", c->name);
        ag_buf_fini(&out);
    }
}

TEST(response_that_is_not_a_message_is_refused)
{
    static const char *const bad[] = {
        "",
        "not json",
        "[]",
        "{\"type\":\"error\",\"error\":{\"type\":\"api_error\"}}",
        "{\"id\":\"m\",\"content\":\"text\"}",
    };
    for (size_t i = 0; i < AG_ARRAY_LEN(bad); i++) {
        ag_buf_t out;
        ag_buf_init(&out, 0);
        ASSERT_EQ(gw_openai_response_from_anthropic(bad[i], strlen(bad[i]), 1, NULL, &out),
                  AG_EPROTO);
        ASSERT_EQ(out.len, 0);
        ag_buf_fini(&out);
    }
}

TEST(finish_reasons)
{
    ASSERT_STREQ(gw_openai_finish_reason("end_turn"), "stop");
    ASSERT_STREQ(gw_openai_finish_reason("stop_sequence"), "stop");
    ASSERT_STREQ(gw_openai_finish_reason("pause_turn"), "stop");
    ASSERT_STREQ(gw_openai_finish_reason("max_tokens"), "length");
    ASSERT_STREQ(gw_openai_finish_reason("model_context_window_exceeded"), "length");
    ASSERT_STREQ(gw_openai_finish_reason("tool_use"), "tool_calls");
    ASSERT_STREQ(gw_openai_finish_reason("refusal"), "content_filter");
    ASSERT_STREQ(gw_openai_finish_reason("something_new"), "stop");
    ASSERT_STREQ(gw_openai_finish_reason(NULL), "stop");
}

TEST(text_answers_from_the_cache)
{
    gw_openai_text_answer_t a = {.id = "msg_c",
                                 .model = "claude-x",
                                 .text = "Hi \"you\"",
                                 .text_len = 8,
                                 .stop_reason = "max_tokens",
                                 .input_tokens = 4,
                                 .output_tokens = 2,
                                 .cache_read_tokens = 1};
    ag_buf_t out;
    ag_buf_init(&out, 0);
    ASSERT_EQ(gw_openai_completion_from_text(&a, 1700000000, &out), 0);
    ASSERT(same_json(out.data, out.len,
                     CHAT_HEAD("msg_c") "\"model\":\"claude-x\",\"choices\":[{\"index\":0,"
                                        "\"message\":{\"role\":\"assistant\",\"content\":\"Hi "
                                        "\\\"you\\\"\",\"refusal\":null},\"logprobs\":null,"
                                        "\"finish_reason\":\"length\"}]," USAGE(5, 2, 7, 1) "}"));
    ag_buf_reset(&out);
    ASSERT_EQ(gw_openai_stream_from_text(&a, 1700000000, true, &out), 0);
#define CHUNK_HEAD                                                                                 \
    "data: {\"id\":\"msg_c\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,"         \
    "\"model\":\"claude-x\","
    ASSERT_MEMEQ(out.data, out.len,
                 CHUNK_HEAD
                 "\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\","
                 "\"content\":\"\"},\"logprobs\":null,\"finish_reason\":null}]}\n\n" CHUNK_HEAD
                 "\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi "
                 "\\\"you\\\"\"},\"logprobs\":null,\"finish_reason\":null}]}\n\n" CHUNK_HEAD
                 "\"choices\":[{\"index\":0,\"delta\":{},\"logprobs\":null,"
                 "\"finish_reason\":\"length\"}]}\n\n" CHUNK_HEAD
                 "\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":"
                 "2,\"total_tokens\":7,\"prompt_tokens_details\":{\"cached_tokens\":1}}"
                 "}\n\n"
                 "data: [DONE]\n\n");
    ag_buf_reset(&out);
    ASSERT_EQ(gw_openai_stream_from_text(&a, 1700000000, false, &out), 0);
    ASSERT(out.len > 14 && memcmp(out.data + out.len - 14, "data: [DONE]\n\n", 14) == 0);
    ASSERT(strstr(ag_buf_cstr(&out), "\"usage\"") == NULL);
    ag_buf_fini(&out);
}

/* ---- errors ----------------------------------------------------------------------- */

TEST(error_body_shape)
{
    ag_buf_t out;
    ag_buf_init(&out, 0);
    ASSERT_EQ(gw_openai_error_body(&out, "bad \"n\"", "invalid_request_error", "n", NULL), 0);
    ASSERT_MEMEQ(out.data, out.len,
                 "{\"error\":{\"message\":\"bad \\\"n\\\"\",\"type\":\"invalid_request_error\","
                 "\"param\":\"n\",\"code\":null}}");
    ag_buf_reset(&out);
    ASSERT_EQ(gw_openai_error_body(&out, "m", "t", "", "c"), 0);
    ASSERT_MEMEQ(out.data, out.len,
                 "{\"error\":{\"message\":\"m\",\"type\":\"t\",\"param\":null,\"code\":\"c\"}}");
    ag_buf_fini(&out);
}

TEST(error_mapping)
{
    static const struct {
        const char *in;
        int status, want_status;
        const char *type, *code;
    } m[] = {
        {"invalid_request_error", 400, 400, "invalid_request_error", NULL},
        {"authentication_error", 401, 401, "invalid_request_error", "invalid_api_key"},
        {"billing_error", 402, 402, "insufficient_quota", "insufficient_quota"},
        {"permission_error", 403, 403, "invalid_request_error", "permission_denied"},
        {"not_found_error", 404, 404, "invalid_request_error", "not_found"},
        {"request_too_large", 413, 413, "invalid_request_error", "request_too_large"},
        {"rate_limit_error", 429, 429, "rate_limit_error", "rate_limit_exceeded"},
        {"api_error", 500, 500, "server_error", NULL},
        {"api_error", 502, 502, "server_error", NULL},
        {"timeout_error", 504, 504, "server_error", "timeout"},
        {"overloaded_error", 529, 503, "server_error", "overloaded"},
        {"brand_new_error", 418, 418, "invalid_request_error", NULL},
        {NULL, 503, 503, "server_error", NULL},
    };
    for (size_t i = 0; i < AG_ARRAY_LEN(m); i++) {
        int st;
        const char *type, *code;
        gw_openai_map_error(m[i].in, m[i].status, &st, &type, &code);
        ASSERT_EQ(st, m[i].want_status);
        ASSERT_STREQ(type, m[i].type);
        ASSERT_MSG_((code == NULL) == (m[i].code == NULL) && (!code || !strcmp(code, m[i].code)),
                    "%s: code %s", m[i].in ? m[i].in : "(null)", code ? code : "(null)");
    }
}

TEST(upstream_errors_translated)
{
    ag_buf_t out;
    ag_buf_init(&out, 0);
    int st = 0;
    static const char body[] =
        "{\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"},"
        "\"request_id\":\"req_1\"}";
    ASSERT_EQ(gw_openai_error_from_anthropic(&out, 529, body, sizeof(body) - 1, &st), 0);
    ASSERT_EQ(st, 503);
    ASSERT(same_json(out.data, out.len,
                     "{\"error\":{\"message\":\"Overloaded\",\"type\":\"server_error\",\"param\":"
                     "null,\"code\":\"overloaded\"}}"));
    ag_buf_reset(&out);
    ASSERT_EQ(gw_openai_error_from_anthropic(&out, 502, "<html>", 6, &st), 0);
    ASSERT_EQ(st, 502);
    ASSERT(same_json(out.data, out.len,
                     "{\"error\":{\"message\":\"Upstream error\",\"type\":\"server_error\","
                     "\"param\":null,\"code\":null}}"));
    ag_buf_reset(&out);
    ASSERT_EQ(gw_openai_error_from_type(&out, 429, "rate_limit_error", "Rate limit exceeded", &st),
              0);
    ASSERT_EQ(st, 429);
    ASSERT(
        same_json(out.data, out.len,
                  "{\"error\":{\"message\":\"Rate limit exceeded\",\"type\":\"rate_limit_error\","
                  "\"param\":null,\"code\":\"rate_limit_exceeded\"}}"));
    ag_buf_fini(&out);
}

/* ---- models ----------------------------------------------------------------------- */

TEST(model_lists)
{
    static const char *const ids[] = {"claude-a", "claude-\"b\""};
    ag_buf_t out;
    ag_buf_init(&out, 0);
    ASSERT_EQ(gw_openai_models_body(&out, ids, 2, 1700000000), 0);
    ASSERT_MEMEQ(out.data, out.len,
                 "{\"object\":\"list\",\"data\":[{\"id\":\"claude-a\",\"object\":\"model\","
                 "\"created\":1700000000,\"owned_by\":\"anthropic\"},{\"id\":\"claude-\\\"b\\\"\","
                 "\"object\":\"model\",\"created\":1700000000,\"owned_by\":\"anthropic\"}]}");
    ag_buf_reset(&out);
    ASSERT_EQ(gw_anthropic_models_body(&out, ids, 2, "2025-01-01T00:00:00Z"), 0);
    ASSERT_MEMEQ(out.data, out.len,
                 "{\"data\":[{\"type\":\"model\",\"id\":\"claude-a\",\"display_name\":\"claude-a\","
                 "\"created_at\":\"2025-01-01T00:00:00Z\"},{\"type\":\"model\",\"id\":"
                 "\"claude-\\\"b\\\"\",\"display_name\":\"claude-\\\"b\\\"\",\"created_at\":"
                 "\"2025-01-01T00:00:00Z\"}],\"has_more\":false,\"first_id\":\"claude-a\","
                 "\"last_id\":\"claude-\\\"b\\\"\"}");
    ag_buf_reset(&out);
    ASSERT_EQ(gw_openai_models_body(&out, NULL, 0, 1), 0);
    ASSERT_MEMEQ(out.data, out.len, "{\"object\":\"list\",\"data\":[]}");
    ag_buf_reset(&out);
    ASSERT_EQ(gw_anthropic_models_body(&out, NULL, 0, "x"), 0);
    ASSERT_MEMEQ(out.data, out.len,
                 "{\"data\":[],\"has_more\":false,\"first_id\":null,\"last_id\":null}");
    ag_buf_fini(&out);
}

/* ---- streams ---------------------------------------------------------------------- */

/* What an Anthropic stream carries, read with the SSE parser: the text deltas in order, each
 * tool_use block's id, name and arguments, how it ended. */
typedef struct expect {
    json_t *texts;                 /* array of the non-empty text_delta texts */
    json_t *tool_ids, *tool_names; /* arrays, one per tool_use block */
    ag_buf_t args[8];
    size_t ntools;
    int cur_tool;
    char stop[40];
    bool complete, error;
    int64_t in, out, cache_read, cache_creation;
} expect_t;

static int expect_cb(void *ctx, const ag_sse_event_t *ev)
{
    expect_t *x = ctx;
    json_t *root = json_loadb(ev->data.ptr, ev->data.len, 0, NULL);
    json_t *type = json_object_get(root, "type");
    char name[64];
    snprintf(name, sizeof(name), "%.*s", (int)ev->event.len, ev->event.ptr);
    if (!strcmp(name, "message") && json_is_string(type))
        snprintf(name, sizeof(name), "%s", json_string_value(type));
    json_t *usage = NULL;
    if (!strcmp(name, "message_start")) {
        usage = json_object_get(json_object_get(root, "message"), "usage");
    } else if (!strcmp(name, "content_block_start")) {
        json_t *b = json_object_get(root, "content_block");
        x->cur_tool = -1;
        if (!strcmp(json_string_value(json_object_get(b, "type")), "tool_use")) {
            x->cur_tool = (int)x->ntools++;
            json_array_append(x->tool_ids, json_object_get(b, "id"));
            json_array_append(x->tool_names, json_object_get(b, "name"));
            ag_buf_init(&x->args[x->cur_tool], 0);
        }
    } else if (!strcmp(name, "content_block_delta")) {
        json_t *d = json_object_get(root, "delta");
        const char *dt = json_string_value(json_object_get(d, "type"));
        json_t *text = json_object_get(d, "text");
        json_t *pj = json_object_get(d, "partial_json");
        if (!strcmp(dt, "text_delta") && json_string_length(text))
            json_array_append(x->texts, text);
        else if (!strcmp(dt, "input_json_delta") && x->cur_tool >= 0)
            ag_buf_append(&x->args[x->cur_tool], json_string_value(pj), json_string_length(pj));
    } else if (!strcmp(name, "message_delta")) {
        json_t *s = json_object_get(json_object_get(root, "delta"), "stop_reason");
        if (json_is_string(s))
            snprintf(x->stop, sizeof(x->stop), "%s", json_string_value(s));
        usage = json_object_get(root, "usage");
    } else if (!strcmp(name, "message_stop")) {
        x->complete = true;
    } else if (!strcmp(name, "error")) {
        x->error = true;
    }
    if (usage) {
        json_t *v;
        if ((v = json_object_get(usage, "input_tokens")))
            x->in = json_integer_value(v);
        if ((v = json_object_get(usage, "output_tokens")))
            x->out = json_integer_value(v);
        if ((v = json_object_get(usage, "cache_read_input_tokens")))
            x->cache_read = json_integer_value(v);
        if ((v = json_object_get(usage, "cache_creation_input_tokens")))
            x->cache_creation = json_integer_value(v);
    }
    json_decref(root);
    return 0;
}

static void expect_read(expect_t *x, const char *sse, size_t len)
{
    memset(x, 0, sizeof(*x));
    x->texts = json_array();
    x->tool_ids = json_array();
    x->tool_names = json_array();
    x->cur_tool = -1;
    ag_sse_parser_t p;
    ag_sse_parser_init(&p, 0, expect_cb, x);
    ag_sse_parser_feed(&p, sse, len);
    ag_sse_parser_fini(&p);
}

static void expect_fini(expect_t *x)
{
    json_decref(x->texts);
    json_decref(x->tool_ids);
    json_decref(x->tool_names);
    for (size_t i = 0; i < x->ntools; i++)
        ag_buf_fini(&x->args[i]);
}

static bool jstr_eq(const json_t *v, const char *s)
{
    return json_is_string(v) && strcmp(json_string_value(v), s) == 0;
}

/* Checks a translated stream against what the Anthropic stream carried. Returns the number of
 * failed checks (0: all good); prints the first failure. */
static int check_openai_stream(const char *what, const char *s, size_t len, const expect_t *x,
                               bool include_usage)
{
#define CHECK(cond, ...)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "  %s: ", what);                                                       \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fputc('\n', stderr);                                                                   \
            fails++;                                                                               \
            goto done;                                                                             \
        }                                                                                          \
    } while (0)
    int fails = 0;
    json_t *texts = json_array();
    ag_buf_t args[8];
    for (size_t i = 0; i < 8; i++)
        ag_buf_init(&args[i], 0);
    json_t *first_id = NULL, *chunk = NULL;
    size_t ntools = 0, nchunks = 0;
    const char *finish = NULL;
    bool done_seen = false, usage_seen = false, error_seen = false;
    char finish_buf[40] = "";
    size_t off = 0;
    while (off < len) {
        const char *end = memmem(s + off, len - off, "\n\n", 2);
        CHECK(end, "an unterminated line at %zu", off);
        CHECK(end - (s + off) > 6 && memcmp(s + off, "data: ", 6) == 0, "a line without data:");
        const char *d = s + off + 6;
        size_t dlen = (size_t)(end - d);
        off = (size_t)(end - s) + 2;
        CHECK(!done_seen && !error_seen, "a line after the end");
        if (dlen == 6 && memcmp(d, "[DONE]", 6) == 0) {
            done_seen = true;
            continue;
        }
        json_decref(chunk);
        chunk = json_loadb(d, dlen, 0, NULL);
        CHECK(json_is_object(chunk), "a line that is not a JSON object: %.*s", (int)dlen, d);
        if (json_object_get(chunk, "error")) {
            json_t *e = json_object_get(chunk, "error");
            CHECK(json_is_string(json_object_get(e, "message")) &&
                      json_is_string(json_object_get(e, "type")),
                  "an error without message and type");
            error_seen = true;
            continue;
        }
        CHECK(jstr_eq(json_object_get(chunk, "object"), "chat.completion.chunk"), "object");
        CHECK(json_integer_value(json_object_get(chunk, "created")) == 1700000000, "created");
        if (!first_id)
            first_id = json_incref(json_object_get(chunk, "id"));
        CHECK(json_equal(first_id, json_object_get(chunk, "id")), "the id changed");
        json_t *choices = json_object_get(chunk, "choices");
        CHECK(json_is_array(choices), "no choices");
        if (json_array_size(choices) == 0) {
            json_t *u = json_object_get(chunk, "usage");
            CHECK(include_usage && finish && !usage_seen, "a usage chunk out of place");
            CHECK(json_integer_value(json_object_get(u, "prompt_tokens")) ==
                          x->in + x->cache_read + x->cache_creation &&
                      json_integer_value(json_object_get(u, "completion_tokens")) == x->out &&
                      json_integer_value(json_object_get(u, "total_tokens")) ==
                          x->in + x->cache_read + x->cache_creation + x->out,
                  "usage numbers");
            usage_seen = true;
            continue;
        }
        CHECK(json_array_size(choices) == 1, "more than one choice");
        json_t *c0 = json_array_get(choices, 0);
        json_t *delta = json_object_get(c0, "delta");
        CHECK(json_integer_value(json_object_get(c0, "index")) == 0, "choice index");
        CHECK(json_is_object(delta), "no delta");
        CHECK(!finish, "a chunk after the finish chunk");
        json_t *fr = json_object_get(c0, "finish_reason");
        if (nchunks++ == 0)
            CHECK(jstr_eq(json_object_get(delta, "role"), "assistant") &&
                      jstr_eq(json_object_get(delta, "content"), ""),
                  "the first chunk is not the role chunk");
        else
            CHECK(!json_object_get(delta, "role"), "role again");
        json_t *content = json_object_get(delta, "content");
        if (nchunks > 1 && json_is_string(content))
            json_array_append(texts, content);
        json_t *calls = json_object_get(delta, "tool_calls");
        if (calls) {
            CHECK(json_array_size(calls) == 1, "one tool call per chunk");
            json_t *call = json_array_get(calls, 0);
            json_int_t k = json_integer_value(json_object_get(call, "index"));
            json_t *fn = json_object_get(call, "function");
            if (json_object_get(call, "id")) {
                CHECK(k == (json_int_t)ntools, "tool call index %lld, want %zu", (long long)k,
                      ntools);
                CHECK(ntools < x->ntools, "more tool calls than tool_use blocks");
                CHECK(json_equal(json_object_get(call, "id"), json_array_get(x->tool_ids, k)),
                      "tool call id");
                CHECK(jstr_eq(json_object_get(call, "type"), "function"), "tool call type");
                CHECK(json_equal(json_object_get(fn, "name"), json_array_get(x->tool_names, k)),
                      "tool call name");
                CHECK(jstr_eq(json_object_get(fn, "arguments"), ""), "first arguments not \"\"");
                ntools++;
            } else {
                CHECK(k >= 0 && (size_t)k < ntools, "arguments for an unopened tool call");
                json_t *a = json_object_get(fn, "arguments");
                CHECK(json_is_string(a), "arguments not a string");
                ag_buf_append(&args[k], json_string_value(a), json_string_length(a));
            }
        }
        if (!json_is_null(fr)) {
            CHECK(json_is_string(fr), "finish_reason");
            snprintf(finish_buf, sizeof(finish_buf), "%s", json_string_value(fr));
            finish = finish_buf;
            CHECK(json_object_size(delta) == 0, "the finish chunk carries a delta");
        }
    }
    CHECK(json_equal(texts, x->texts), "the text deltas differ from the upstream's");
    CHECK(ntools == x->ntools, "%zu tool calls, want %zu", ntools, x->ntools);
    for (size_t k = 0; k < ntools; k++) {
        CHECK(args[k].len == x->args[k].len &&
                  (args[k].len == 0 || !memcmp(args[k].data, x->args[k].data, args[k].len)),
              "tool call %zu's arguments differ", k);
        json_t *parsed = json_loadb(args[k].data, args[k].len, 0, NULL);
        bool obj = json_is_object(parsed);
        json_decref(parsed);
        CHECK(obj, "tool call %zu's arguments are not a JSON object", k);
    }
    if (x->complete) {
        CHECK(finish && !strcmp(finish, gw_openai_finish_reason(x->stop[0] ? x->stop : NULL)),
              "finish_reason %s for %s", finish ? finish : "(none)", x->stop);
        CHECK(done_seen && !error_seen, "no [DONE]");
        CHECK(usage_seen == include_usage, "usage chunk %d, want %d", usage_seen, include_usage);
    } else {
        CHECK(error_seen && !done_seen && !finish, "an unfinished stream must end in an error");
    }
done:
    json_decref(texts);
    json_decref(first_id);
    json_decref(chunk);
    for (size_t i = 0; i < 8; i++)
        ag_buf_fini(&args[i]);
    return fails;
#undef CHECK
}

/* Translates sse in pieces: cut at `a` and `b` (a <= b <= len), or one byte at a time when
 * bytewise; then finish(). */
static int translate(const char *sse, size_t len, size_t a, size_t b, bool bytewise,
                     bool include_usage, ag_buf_t *out)
{
    gw_openai_stream_t s;
    gw_openai_stream_init(&s, 1700000000, include_usage, "asked-model");
    int rc = 0;
    if (bytewise) {
        for (size_t i = 0; i < len && rc == 0; i++)
            rc = gw_openai_stream_feed(&s, sse + i, 1, out);
    } else {
        rc = gw_openai_stream_feed(&s, sse, a, out);
        if (rc == 0)
            rc = gw_openai_stream_feed(&s, sse + a, b - a, out);
        if (rc == 0)
            rc = gw_openai_stream_feed(&s, sse + b, len - b, out);
    }
    if (rc == 0)
        rc = gw_openai_stream_finish(&s, NULL, out);
    gw_openai_stream_fini(&s);
    return rc;
}

static char *read_file(const char *name, size_t *len)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/%s", AG_OPENAI_STREAMS, name);
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    ag_buf_t b;
    ag_buf_init(&b, 0);
    char tmp[4096];
    size_t n;
    while ((n = fread(tmp, 1, sizeof(tmp), f)) > 0)
        ag_buf_append(&b, tmp, n);
    fclose(f);
    *len = b.len;
    return b.data;
}

/* Two tool calls after a text block, from the SDKs' fixture format: tool call indices 0 and 1
 * come from content blocks 1 and 2. CRLF line ends, a comment, an unknown event. */
static const char two_tools_stream[] =
    "event: message_start\r\n"
    "data: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_two\",\"type\":\"message\","
    "\"role\":\"assistant\",\"model\":\"claude-sonnet-4\",\"content\":[],\"stop_reason\":null,"
    "\"usage\":{\"input_tokens\":50,\"cache_read_input_tokens\":7,\"output_tokens\":1}}}\r\n\r\n"
    "event: content_block_start\r\n"
    "data: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\","
    "\"text\":\"\"}}\r\n\r\n"
    ": keepalive\r\n\r\n"
    "event: content_block_delta\r\n"
    "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\","
    "\"text\":\"Checking both.\"}}\r\n\r\n"
    "event: content_block_delta\r\n"
    "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\","
    "\"text\":\"!\"}}\r\n\r\n"
    "event: content_block_stop\r\n"
    "data: {\"type\":\"content_block_stop\",\"index\":0}\r\n\r\n"
    "event: content_block_start\r\n"
    "data: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"tool_use\","
    "\"id\":\"toolu_A\",\"name\":\"get_weather\",\"input\":{}}}\r\n\r\n"
    "event: content_block_delta\r\n"
    "data: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\","
    "\"partial_json\":\"\"}}\r\n\r\n"
    "event: content_block_delta\r\n"
    "data: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\","
    "\"partial_json\":\"{\\\"city\\\": \\\"Pa\"}}\r\n\r\n"
    "event: something_new\r\n"
    "data: {\"type\":\"something_new\"}\r\n\r\n"
    "event: content_block_delta\r\n"
    "data: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\","
    "\"partial_json\":\"ris\\\"}\"}}\r\n\r\n"
    "event: content_block_stop\r\n"
    "data: {\"type\":\"content_block_stop\",\"index\":1}\r\n\r\n"
    "event: content_block_start\r\n"
    "data: {\"type\":\"content_block_start\",\"index\":2,\"content_block\":{\"type\":\"tool_use\","
    "\"id\":\"toolu_B\",\"name\":\"get_time\",\"input\":{}}}\r\n\r\n"
    "event: ping\r\n"
    "data: {\"type\": \"ping\"}\r\n\r\n"
    "event: content_block_delta\r\n"
    "data: {\"type\":\"content_block_delta\",\"index\":2,\"delta\":{\"type\":\"input_json_delta\","
    "\"partial_json\":\"{\\\"tz\\\":\\\"\\\\u00e9\\\"}\"}}\r\n\r\n"
    "event: content_block_stop\r\n"
    "data: {\"type\":\"content_block_stop\",\"index\":2}\r\n\r\n"
    "event: message_delta\r\n"
    "data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\"},\"usage\":{"
    "\"output_tokens\":40}}\r\n\r\n"
    "event: message_stop\r\n"
    "data: {\"type\":\"message_stop\"}\r\n\r\n";

/* Replays one stream through the translator cut at every byte (and at sampled pairs of
 * places, and a byte at a time): every run writes the same bytes, and those bytes are a
 * correct OpenAI stream of the same text deltas, tool calls and ending. */
static int replay(const char *what, const char *sse, size_t len)
{
    int fails = 0;
    expect_t x;
    expect_read(&x, sse, len);
    for (int iu = 0; iu < 2; iu++) {
        ag_buf_t whole, part;
        ag_buf_init(&whole, 0);
        ag_buf_init(&part, 0);
        if (translate(sse, len, len, len, false, iu, &whole) != 0) {
            fprintf(stderr, "  %s: translation failed\n", what);
            fails++;
        }
        fails += check_openai_stream(what, whole.data, whole.len, &x, iu);
        for (size_t a = 0; a <= len && !fails; a++) {
            ag_buf_reset(&part);
            translate(sse, len, a, len, false, iu, &part);
            if (part.len != whole.len || memcmp(part.data, whole.data, whole.len) != 0) {
                fprintf(stderr, "  %s: cut at byte %zu gives other bytes\n", what, a);
                fails++;
            }
        }
        size_t step = len / 29 + 1; /* ~450 pairs of cuts at odd places */
        for (size_t a = 0; a <= len && !fails; a += step) {
            for (size_t b = a + 1; b <= len && !fails; b += step + 3) {
                ag_buf_reset(&part);
                translate(sse, len, a, b, false, iu, &part);
                if (part.len != whole.len || memcmp(part.data, whole.data, whole.len) != 0) {
                    fprintf(stderr, "  %s: cuts at %zu and %zu give other bytes\n", what, a, b);
                    fails++;
                }
            }
        }
        ag_buf_reset(&part);
        translate(sse, len, 0, 0, true, iu, &part);
        if (!fails && (part.len != whole.len || memcmp(part.data, whole.data, whole.len) != 0)) {
            fprintf(stderr, "  %s: a byte at a time gives other bytes\n", what);
            fails++;
        }
        ag_buf_fini(&whole);
        ag_buf_fini(&part);
    }
    expect_fini(&x);
    return fails;
}

TEST(recorded_streams_replayed_at_every_cut)
{
    static const struct {
        const char *file;
        size_t min_texts, tools;
        bool complete;
        const char *stop;
    } streams[] = {
        {"text.sse", 8, 0, true, "end_turn"},
        {"tool_use.sse", 5, 1, true, "tool_use"},
        {"thinking.sse", 3, 0, true, "end_turn"},
        {"max_tokens.sse", 3, 0, true, "max_tokens"},
        {"stop_sequence.sse", 3, 0, true, "stop_sequence"},
        {"mid_error.sse", 3, 0, false, ""},
    };
    for (size_t i = 0; i < AG_ARRAY_LEN(streams); i++) {
        size_t len = 0;
        char *sse = read_file(streams[i].file, &len);
        ASSERT_MSG_(sse, "cannot read %s/%s", AG_OPENAI_STREAMS, streams[i].file);
        expect_t x;
        expect_read(&x, sse, len);
        /* The recording is what this test thinks it is (else the checks prove little). */
        ASSERT_MSG_(json_array_size(x.texts) >= streams[i].min_texts &&
                        x.ntools == streams[i].tools && x.complete == streams[i].complete &&
                        !strcmp(x.stop, streams[i].stop) && x.error == !streams[i].complete,
                    "%s: %zu texts, %zu tools, complete %d, stop %s", streams[i].file,
                    json_array_size(x.texts), x.ntools, x.complete, x.stop);
        expect_fini(&x);
        int fails = replay(streams[i].file, sse, len);
        free(sse);
        ASSERT_MSG_(fails == 0, "%s: %d failures", streams[i].file, fails);
    }
    int fails = replay("two_tools", two_tools_stream, sizeof(two_tools_stream) - 1);
    ASSERT_EQ(fails, 0);
}

TEST(stream_chunks_exact)
{
    ag_buf_t out;
    ag_buf_init(&out, 0);
    gw_openai_stream_t s;
    gw_openai_stream_init(&s, 1700000000, true, "asked-model");
    ASSERT_EQ(gw_openai_stream_feed(&s, two_tools_stream, sizeof(two_tools_stream) - 1, &out), 0);
    ASSERT(gw_openai_stream_ended(&s) && !gw_openai_stream_errored(&s));
#define TWO_HEAD                                                                                   \
    "data: {\"id\":\"msg_two\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,"       \
    "\"model\":\"claude-sonnet-4\",\"choices\":[{\"index\":0,\"delta\":"
#define NOFIN ",\"logprobs\":null,\"finish_reason\":null}]}\n\n"
    ASSERT_MEMEQ(
        out.data, out.len,
        TWO_HEAD
        "{\"role\":\"assistant\",\"content\":\"\"}" NOFIN TWO_HEAD
        "{\"content\":\"Checking both.\"}" NOFIN TWO_HEAD "{\"content\":\"!\"}" NOFIN TWO_HEAD
        "{\"tool_calls\":[{\"index\":0,\"id\":\"toolu_A\",\"type\":\"function\","
        "\"function\":{\"name\":\"get_weather\",\"arguments\":\"\"}}]}" NOFIN TWO_HEAD
        "{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"{\\\"city\\\": "
        "\\\"Pa\"}}]}" NOFIN TWO_HEAD
        "{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"ris\\\"}\"}}]}" NOFIN TWO_HEAD
        "{\"tool_calls\":[{\"index\":1,\"id\":\"toolu_B\",\"type\":\"function\","
        "\"function\":{\"name\":\"get_time\",\"arguments\":\"\"}}]}" NOFIN TWO_HEAD
        "{\"tool_calls\":[{\"index\":1,\"function\":{\"arguments\":\"{\\\"tz\\\":"
        "\\\"\\\\u00e9\\\"}\"}}]}" NOFIN TWO_HEAD
        "{},\"logprobs\":null,\"finish_reason\":\"tool_calls\"}]}\n\n"
        "data: {\"id\":\"msg_two\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,"
        "\"model\":\"claude-sonnet-4\",\"choices\":[],\"usage\":{\"prompt_tokens\":57,"
        "\"completion_tokens\":40,\"total_tokens\":97,\"prompt_tokens_details\":{"
        "\"cached_tokens\":7}}}\n\n"
        "data: [DONE]\n\n");
    /* After the end: nothing more, whatever comes. */
    size_t len = out.len;
    ASSERT_EQ(gw_openai_stream_feed(&s, two_tools_stream, 200, &out), 0);
    ASSERT_EQ(gw_openai_stream_finish(&s, "late", &out), 0);
    ASSERT_EQ(out.len, len);
    gw_openai_stream_fini(&s);
    ag_buf_fini(&out);
}

TEST(stream_cut_short_ends_in_an_error_chunk)
{
    size_t len = 0;
    char *sse = read_file("text.sse", &len);
    ASSERT(sse);
    ag_buf_t out;
    ag_buf_init(&out, 0);
    gw_openai_stream_t s;
    gw_openai_stream_init(&s, 1700000000, true, NULL);
    ASSERT_EQ(gw_openai_stream_feed(&s, sse, len / 2, &out), 0);
    ASSERT(!gw_openai_stream_ended(&s));
    ASSERT_EQ(gw_openai_stream_finish(&s, "Upstream went away", &out), 0);
    ASSERT(gw_openai_stream_ended(&s) && gw_openai_stream_errored(&s));
    static const char tail[] = "data: {\"error\":{\"message\":\"Upstream went away\",\"type\":"
                               "\"server_error\",\"param\":null,\"code\":null}}\n\n";
    ASSERT(out.len > sizeof(tail) &&
           memcmp(out.data + out.len - (sizeof(tail) - 1), tail, sizeof(tail) - 1) == 0);
    ASSERT(strstr(ag_buf_cstr(&out), "[DONE]") == NULL);
    ASSERT(strstr(out.data, "finish_reason\":\"") == NULL);
    gw_openai_stream_fini(&s);
    free(sse);

    /* The upstream's own error event: mapped, and the stream is over. */
    static const char err_stream[] =
        "event: error\ndata: {\"type\": \"error\", \"error\": {\"type\": \"overloaded_error\", "
        "\"message\": \"Overloaded\"}}\n\n";
    ag_buf_reset(&out);
    gw_openai_stream_init(&s, 1, false, "m");
    ASSERT_EQ(gw_openai_stream_feed(&s, err_stream, sizeof(err_stream) - 1, &out), 0);
    ASSERT_MEMEQ(out.data, out.len,
                 "data: {\"error\":{\"message\":\"Overloaded\",\"type\":\"server_error\","
                 "\"param\":null,\"code\":\"overloaded\"}}\n\n");
    ASSERT(gw_openai_stream_errored(&s));
    gw_openai_stream_fini(&s);
    ag_buf_fini(&out);
}

TEST(stream_tolerates_odd_events)
{
    /* Unnamed events (type from the data), a delta before any start, bad JSON, an oversized
     * model name: no crash, still one role chunk first, still a proper end. */
    static const char odd[] =
        "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\","
        "\"text\":\"early\"}}\n\n"
        "event: message_start\ndata: not json\n\n"
        "event: content_block_delta\ndata: {\"delta\":{\"type\":\"input_json_delta\","
        "\"partial_json\":\"{\"}}\n\n"
        "data: {\"type\":\"message_stop\"}\n\n";
    ag_buf_t out;
    ag_buf_init(&out, 0);
    gw_openai_stream_t s;
    gw_openai_stream_init(&s, 5, false, "fallback");
    ASSERT_EQ(gw_openai_stream_feed(&s, odd, sizeof(odd) - 1, &out), 0);
    ASSERT_MEMEQ(out.data, out.len,
                 "data: {\"id\":\"\",\"object\":\"chat.completion.chunk\",\"created\":5,\"model\":"
                 "\"fallback\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\","
                 "\"content\":\"\"},\"logprobs\":null,\"finish_reason\":null}]}\n\n"
                 "data: {\"id\":\"\",\"object\":\"chat.completion.chunk\",\"created\":5,\"model\":"
                 "\"fallback\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"early\"},"
                 "\"logprobs\":null,\"finish_reason\":null}]}\n\n"
                 "data: {\"id\":\"\",\"object\":\"chat.completion.chunk\",\"created\":5,\"model\":"
                 "\"fallback\",\"choices\":[{\"index\":0,\"delta\":{},\"logprobs\":null,"
                 "\"finish_reason\":\"stop\"}]}\n\n"
                 "data: [DONE]\n\n");
    gw_openai_stream_fini(&s);
    ag_buf_fini(&out);
}

/* clang-format off */
AG_TESTS(
    AG_TEST_ENTRY(request_translation_table)
    AG_TEST_ENTRY(ignored_fields_never_reach_the_upstream)
    AG_TEST_ENTRY(request_needs_model_and_max_tokens_without_defaults)
    AG_TEST_ENTRY(request_output_is_deterministic_and_keeps_unicode)
    AG_TEST_ENTRY(response_translation_table)
    AG_TEST_ENTRY(response_that_is_not_a_message_is_refused)
    AG_TEST_ENTRY(finish_reasons)
    AG_TEST_ENTRY(text_answers_from_the_cache)
    AG_TEST_ENTRY(error_body_shape)
    AG_TEST_ENTRY(error_mapping)
    AG_TEST_ENTRY(upstream_errors_translated)
    AG_TEST_ENTRY(model_lists)
    AG_TEST_ENTRY(recorded_streams_replayed_at_every_cut)
    AG_TEST_ENTRY(stream_chunks_exact)
    AG_TEST_ENTRY(stream_cut_short_ends_in_an_error_chunk)
    AG_TEST_ENTRY(stream_tolerates_odd_events))
/* clang-format on */
