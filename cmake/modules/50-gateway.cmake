# The gateway: HTTP server, upstream client, config, routes, and the binary.
add_library(ag_core STATIC
  src/http/server.c src/upstream/client.c src/config/config.c src/gateway/gateway.c
  src/gateway/client_ip.c)
target_link_libraries(ag_core PUBLIC ag_sse)
target_link_libraries(ag_core PUBLIC ag_http_parser ag_toml ag_usage_log ag_store ag_limit ag_util PkgConfig::UV PkgConfig::CURL
  PkgConfig::JANSSON PkgConfig::CRYPTO Threads::Threads m)
add_executable(aigate src/main.c)
target_link_libraries(aigate ag_core ag_cli)
