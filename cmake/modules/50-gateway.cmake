# The gateway: HTTP server, upstream client, config, routes, and the binary.
add_library(ag_core STATIC
  src/http/server.c src/upstream/client.c src/config/config.c src/gateway/gateway.c
  src/gateway/answer.c src/gateway/cache.c src/gateway/stream.c
  src/gateway/client_ip.c)
target_link_libraries(ag_core PUBLIC ag_sse)
target_link_libraries(ag_core PUBLIC ag_http_parser ag_jtok ag_toml ag_usage_log ag_store ag_limit ag_util PkgConfig::UV PkgConfig::CURL
  PkgConfig::JANSSON PkgConfig::CRYPTO Threads::Threads m)
add_executable(aigate src/main.c)
target_link_libraries(aigate ag_core ag_cli)

# The gateway's JSON contract: unit tests and a fuzz target over its statics.
ag_unit_test(test_gateway tests/unit/test_gateway.c)
target_link_libraries(test_gateway ag_core)
ag_fuzz_target(fuzz_json fuzz/fuzz_json.c)
target_link_libraries(fuzz_json ag_core)
