# gateway: the router, the route table and one file per route, the streaming relay, request
# coalescing, the cache, the per-request steps, and config generations.
ag_layer(DIR gateway
  SOURCES src/gateway/gateway.c src/gateway/generation.c src/gateway/router.c
          src/gateway/routes.c src/gateway/route_generate.c src/gateway/route_messages.c
          src/gateway/relay.c src/gateway/flight.c src/gateway/cache.c src/gateway/steps.c
          src/gateway/answer.c src/gateway/client_ip.c src/gateway/upcall.c
          src/gateway/message.c src/gateway/access.c src/gateway/route_openai.c
          src/gateway/keys_sync.c
  USES util config limit store obs cron upstream http
  LINK PkgConfig::CRYPTO PkgConfig::JANSSON PkgConfig::UV Threads::Threads m)

# The gateway's JSON contract, its route table and generations: unit tests and a fuzz target.
ag_unit_test(test_gateway tests/unit/test_gateway.c)
target_link_libraries(test_gateway ag_gateway)
ag_unit_test(test_routes tests/unit/test_routes.c)
target_link_libraries(test_routes ag_gateway)
ag_fuzz_target(fuzz_json fuzz/fuzz_json.c)
target_link_libraries(fuzz_json ag_gateway)
# gateway/message.c: a Message and its stream made from each other exactly (the cache serves
# both kinds of client from one entry); over the fake upstream's recorded streams.
ag_unit_test(test_message tests/unit/test_message.c)
target_link_libraries(test_message ag_gateway PkgConfig::JANSSON)
target_compile_definitions(test_message PRIVATE
                           AG_MESSAGE_STREAMS="${CMAKE_SOURCE_DIR}/tests/unit/data/openai")
# Who the client is: the forwarded chain and the identity it is counted by.
ag_unit_test(test_client_ip tests/unit/test_client_ip.c)
target_link_libraries(test_client_ip ag_gateway)
ag_fuzz_target(fuzz_client_ip fuzz/fuzz_client_ip.c)
target_link_libraries(fuzz_client_ip ag_gateway)
