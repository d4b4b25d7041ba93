# http: the strict HTTP/1.1 request-head parser and chunked decoder (unit tests, two fuzz
# targets) and the server, with TLS from tls/. It knows requests and records, not
# the gateway's policy.
ag_layer(DIR http SOURCES src/http/parser.c src/http/addr.c src/http/server.c
  USES util obs tls LINK PkgConfig::UV PkgConfig::SSL PkgConfig::CRYPTO Threads::Threads)

ag_unit_test(test_http_parser tests/unit/test_http_parser.c)
target_link_libraries(test_http_parser ag_http)
ag_fuzz_target(fuzz_http fuzz/fuzz_http.c)
target_link_libraries(fuzz_http ag_http)
ag_fuzz_target(fuzz_chunked fuzz/fuzz_chunked.c)
target_link_libraries(fuzz_chunked ag_http)
