# limit: the in-process GCRA rate limiter. upstream/sse: the event-stream
# parser and the Anthropic stream accumulator.
add_library(ag_limit STATIC src/limit/limiter.c)
target_link_libraries(ag_limit PUBLIC ag_util Threads::Threads)

add_library(ag_sse STATIC src/upstream/sse.c)
target_link_libraries(ag_sse PUBLIC ag_util PkgConfig::JANSSON)

ag_unit_test(test_limiter tests/unit/test_limiter.c)
target_link_libraries(test_limiter ag_limit)

ag_unit_test(test_sse tests/unit/test_sse.c)
target_link_libraries(test_sse ag_sse)

ag_fuzz_target(fuzz_sse fuzz/fuzz_sse.c)
target_link_libraries(fuzz_sse ag_sse)
