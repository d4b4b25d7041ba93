# util: arena, buffers, strings, errors, logging, time, hex, files, JSON writing
# and the strict allocation-free JSON tokenizer (jtok) of the hot paths.
ag_layer(DIR util
  SOURCES src/util/pool.c src/util/buf.c src/util/errors.c src/util/log.c src/util/json.c
          src/util/utf.c src/util/hex.c src/util/fs.c src/util/jtok.c
          src/util/hist.c src/util/window.c src/util/http_reason.c src/util/chunked.c
          src/util/curl_lazy.c src/util/brlock.c
  LINK PkgConfig::JANSSON Threads::Threads ${CMAKE_DL_LIBS})
# libcurl is loaded on first use (curl_lazy.c), never linked: its headers only.
get_target_property(AG_CURL_INCLUDES PkgConfig::CURL INTERFACE_INCLUDE_DIRECTORIES)
if(AG_CURL_INCLUDES)
  target_include_directories(ag_util SYSTEM PUBLIC ${AG_CURL_INCLUDES})
endif()

ag_unit_test(test_util tests/unit/test_util.c)
target_link_libraries(test_util ag_util)

# jtok: unit tests (with a differential check against jansson), its fuzz target, and a
# micro-benchmark (not a test: prints ns per parse for jtok and jansson).
ag_unit_test(test_jtok tests/unit/test_jtok.c)
target_link_libraries(test_jtok ag_util PkgConfig::JANSSON)
target_compile_definitions(test_jtok PRIVATE
                           AG_JTOK_CORPUS="${CMAKE_SOURCE_DIR}/fuzz/corpus/fuzz_jtok")
ag_fuzz_target(fuzz_jtok fuzz/fuzz_jtok.c)
target_link_libraries(fuzz_jtok ag_util PkgConfig::JANSSON)
add_executable(jtok_bench bench/jtok_bench.c)
target_include_directories(jtok_bench PRIVATE ${CMAKE_SOURCE_DIR}/src)
target_link_libraries(jtok_bench ag_util PkgConfig::JANSSON)
