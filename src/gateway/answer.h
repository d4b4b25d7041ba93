/* SPDX-License-Identifier: MIT
 *
 * answer.h: Anthropic's answers: results shared by every request that waited
 * on one upstream call, the seed's response built from the upstream JSON, and
 * the small readers of that JSON the routes share.
 */
#ifndef AG_GATEWAY_ANSWER_H
#define AG_GATEWAY_ANSWER_H

#include <stdatomic.h>
#include <stdint.h>

#include <jansson.h>

#include "gateway/upcall.h"
#include "http/server.h"
#include "upstream/client.h"
#include "util/buf.h"
#include "util/jtok.h"

/* An answer shared by every request that waited on one upstream call. */
typedef struct shared_result {
    atomic_int refs;
    int status;
    int upstream_status; /* what the upstream answered; 0: no answer */
    uint32_t output_units;
    int64_t input_tokens, output_tokens;
    int64_t upstream_us;  /* how long the upstream call took */
    int64_t cpu_share_us; /* each waiter's share of the call's CPU time */
    gw_call_info_t call;  /* how the call was made */
    size_t len;
    char body[]; /* the full response body */
} shared_result_t;

/** Results are refcounted and shared between waiters on any thread. */
shared_result_t *ag__gw_result_new(int status, ag_str_t body, uint32_t units, int64_t in,
                                   int64_t out);
shared_result_t *ag__gw_result_error(int status, const char *msg);
void ag__gw_result_release(shared_result_t *r);
/** Sends the result (500 when NULL). May finish the request (server.h). */
void ag__gw_respond_result(ag_req_t *req, const shared_result_t *r);
/** The seed's response from an upstream answer; never NULL unless out of memory.
 *  cache_value (optional) gets the cache entry on success. */
shared_result_t *ag__gw_result_from_upstream(const char *id, const ag_upstream_response_t *resp,
                                             ag_buf_t *cache_value);
/** The seed's upstream body (model, max_tokens, messages), in the pool. */
ag_str_t ag__gw_build_upstream_body(ag_pool_t *pool, ag_str_t model, unsigned max_tokens,
                                    ag_str_t prompt);
int ag__gw_jparse(ag_str_t text, ag_jtok_t *stack, size_t nstack, ag_jtok_t **toks,
                  ag_jtok_t **heap);
int ag__gw_join_text_blocks(json_t *content, ag_buf_t *out);
void ag__gw_log_upstream_failure(const char *id, const ag_upstream_response_t *resp);
/** A stop reason safe to store and replay, else "end_turn". */
const char *ag__gw_safe_stop(const char *stop);
int64_t ag__gw_usage_int(json_t *usage, const char *name);
/** The UTF-16 length of a Messages body's last user turn's text (promptLength). */
uint32_t ag__gw_last_user_units(json_t *root);

#endif
