# http parser: the strict HTTP/1.1 request-head parser and chunked decoder
# (src/http/parser.c), its unit tests and its two libFuzzer targets.
add_library(ag_http_parser STATIC src/http/parser.c)
target_link_libraries(ag_http_parser PUBLIC ag_util)

ag_unit_test(test_http_parser tests/unit/test_http_parser.c)
target_link_libraries(test_http_parser ag_http_parser)

ag_fuzz_target(fuzz_http fuzz/fuzz_http.c)
target_link_libraries(fuzz_http ag_http_parser)
ag_fuzz_target(fuzz_chunked fuzz/fuzz_chunked.c)
target_link_libraries(fuzz_chunked ag_http_parser)
