# The layer above util, whose directories use nothing but util (obs: util and store):
#   limit: the in-process GCRA rate limiter; budgets and per-key rates by reservation
#          (budget.c, its spend and reservations in LMDB under data_dir/budget);
#   store: KV (front end, LMDB and Redis back ends), object store (front end, directory back
#          end, S3 back end over libcurl with our SigV4 signer), secrets and their resolution, the usage log, client API keys (keys.c);
#   obs: request records, the access log, analytics over the usage log (stats.c, so obs uses
#        store too; metrics and tail to come);
#   cron: periodic jobs; the cron-expression parser and next-run calculator;
#   upstream: the SSE parser, Anthropic's stream accumulator and the HTTP client;
#   tls: TLS engines over memory BIOs (below).
if(NOT TARGET PkgConfig::LMDB)
  message(FATAL_ERROR "ag_store needs LMDB: install liblmdb-dev (pkg-config lmdb)")
endif()
ag_layer(DIR limit SOURCES src/limit/limiter.c src/limit/budget.c USES util
  LINK PkgConfig::LMDB Threads::Threads m)

ag_layer(DIR store
  SOURCES src/store/kv.c src/store/kv_handle.c src/store/kv_lmdb.c src/store/kv_redis.c
          src/store/objstore.c
          src/store/objstore_info.c src/store/objstore_fs.c
          src/store/secrets.c src/store/secrets_resolve.c src/store/usage_log.c
          src/store/lmdb_util.c src/store/keys.c src/store/usage_log_days.c
          src/store/usage_log_spool.c
          src/store/resp.c src/store/redis.c src/store/redis_gcra.c src/store/redis_budget.c
          src/store/sigv4.c src/store/objstore_s3.c src/store/objstore_s3_xml.c
          src/store/objstore_open.c
  USES util
  LINK PkgConfig::UV PkgConfig::LMDB PkgConfig::CRYPTO PkgConfig::JANSSON PkgConfig::ZLIB
       Threads::Threads m)

ag_layer(DIR obs SOURCES src/obs/obs.c src/obs/access_log.c src/obs/metrics.c src/obs/series.c
                        src/obs/tail.c src/obs/stats.c
  USES util store LINK PkgConfig::UV PkgConfig::ZLIB Threads::Threads)
ag_layer(DIR cron SOURCES src/cron/periodic.c src/cron/template.c src/cron/cron.c
                         src/cron/schedule.c
  USES util LINK PkgConfig::UV)
# tls: OpenSSL 3 over memory BIOs on a libuv loop, for the server's listeners (http/) and
# the native client's https:// upstreams (upstream/h1_client.c).
ag_layer(DIR tls SOURCES src/tls/tls.c USES util
  LINK PkgConfig::UV PkgConfig::SSL PkgConfig::CRYPTO Threads::Threads)
ag_layer(DIR upstream SOURCES src/upstream/sse.c src/upstream/client.c src/upstream/retry.c
                             src/upstream/rates.c src/upstream/call.c src/upstream/h1_parse.c
                             src/upstream/h1_client.c
  USES util tls
  LINK PkgConfig::UV PkgConfig::JANSSON)

ag_unit_test(test_limiter tests/unit/test_limiter.c)
target_link_libraries(test_limiter ag_limit)
ag_unit_test(test_budget tests/unit/test_budget.c)
target_link_libraries(test_budget ag_limit)
ag_unit_test(test_keys tests/unit/test_keys.c)
target_link_libraries(test_keys ag_store)
ag_fuzz_target(fuzz_keys fuzz/fuzz_keys.c)
target_link_libraries(fuzz_keys ag_store)
ag_unit_test(test_resp tests/unit/test_resp.c)
target_link_libraries(test_resp ag_store)
# test_redis starts its own redis-server (Debian's package) on a free port.
ag_unit_test(test_redis tests/unit/test_redis.c)
target_link_libraries(test_redis ag_store PkgConfig::UV)
ag_fuzz_target(fuzz_resp fuzz/fuzz_resp.c)
target_link_libraries(fuzz_resp ag_store)
# The S3 answers objstore_s3_xml.c reads (ListObjectsV2 pages, <Error>).
ag_fuzz_target(fuzz_s3_xml fuzz/fuzz_s3_xml.c)
target_link_libraries(fuzz_s3_xml ag_store)
ag_unit_test(test_kv tests/unit/test_kv.c)
target_link_libraries(test_kv ag_store)
# The KV store's Redis backend, against its own redis-server on a free port.
ag_unit_test(test_kv_redis tests/unit/test_kv_redis.c)
target_link_libraries(test_kv_redis ag_store)
ag_unit_test(test_objstore tests/unit/test_objstore.c)
target_link_libraries(test_objstore ag_store)
ag_unit_test(test_usage_log tests/unit/test_usage_log.c)
target_link_libraries(test_usage_log ag_store PkgConfig::JANSSON)
# SigV4: ours against the table of tests/unit/data/sigv4/cases.json; sigv4_reference has
# botocore (python3-botocore) sign the same table and give the same values.
ag_unit_test(test_sigv4 tests/unit/test_sigv4.c)
target_link_libraries(test_sigv4 ag_store PkgConfig::JANSSON)
target_compile_definitions(test_sigv4 PRIVATE
  AG_SIGV4_CASES="${CMAKE_SOURCE_DIR}/tests/unit/data/sigv4/cases.json")
find_program(AG_PYTHON3 python3)
if(AG_PYTHON3)
  add_test(NAME sigv4_reference COMMAND ${AG_PYTHON3}
    ${CMAKE_SOURCE_DIR}/tests/tools/sigv4_reference.py --check
    ${CMAKE_SOURCE_DIR}/tests/unit/data/sigv4/cases.json)
  set_tests_properties(sigv4_reference PROPERTIES LABELS unit TIMEOUT 120)
endif()
ag_unit_test(test_secrets tests/unit/test_secrets.c)
target_link_libraries(test_secrets ag_store)
ag_unit_test(test_periodic tests/unit/test_periodic.c)
target_link_libraries(test_periodic ag_cron)
ag_unit_test(test_template tests/unit/test_template.c)
target_link_libraries(test_template ag_cron)
ag_fuzz_target(fuzz_template fuzz/fuzz_template.c)
target_link_libraries(fuzz_template ag_cron)
ag_unit_test(test_schedule tests/unit/test_schedule.c)
target_link_libraries(test_schedule ag_cron)
ag_unit_test(test_cron tests/unit/test_cron.c)
target_link_libraries(test_cron ag_cron)
ag_fuzz_target(fuzz_cron fuzz/fuzz_cron.c)
target_link_libraries(fuzz_cron ag_cron)
# tests/unit/cron_next.c: next run times for tests/integration/m_cron_oracle.test.js, which
# compares them with croner's (CRON_NEXT_BIN, cmake/modules/90-integration.cmake); not a test.
add_executable(cron_next tests/unit/cron_next.c)
target_include_directories(cron_next PRIVATE ${CMAKE_SOURCE_DIR}/src)
target_link_libraries(cron_next ag_cron)
ag_unit_test(test_sse tests/unit/test_sse.c)
target_link_libraries(test_sse ag_upstream)
ag_fuzz_target(fuzz_sse fuzz/fuzz_sse.c)
target_link_libraries(fuzz_sse ag_upstream)
ag_unit_test(test_h1_parse tests/unit/test_h1_parse.c)
target_link_libraries(test_h1_parse ag_upstream)
ag_fuzz_target(fuzz_h1_response fuzz/fuzz_h1_response.c)
target_link_libraries(fuzz_h1_response ag_upstream)
ag_unit_test(test_retry tests/unit/test_retry.c)
target_link_libraries(test_retry ag_upstream)
ag_fuzz_target(fuzz_retry fuzz/fuzz_retry.c)
target_link_libraries(fuzz_retry ag_upstream)
ag_unit_test(test_stats tests/unit/test_stats.c)
target_link_libraries(test_stats ag_obs PkgConfig::JANSSON)
# bench/stats_gen.c: synthetic usage logs through the real writer, for bench/stats_bench.sh
# (not a test).
add_executable(stats_gen bench/stats_gen.c)
target_include_directories(stats_gen PRIVATE ${CMAKE_SOURCE_DIR}/src)
target_link_libraries(stats_gen ag_store)
